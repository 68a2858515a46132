//! Who may be in the handshake (before authentication) at once.
//!
//! The limits must not be a weapon: a few hundred silent sockets must not
//! lock legitimate viewers out, and fifty legitimate viewers behind one
//! NAT must not be turned away. So, following OpenSSH's MaxStartups:
//!
//! - below `soft` connections, everyone is admitted (up to a per-network
//!   share, see below);
//! - between `soft` and `hard`, a new connection from a network that
//!   already holds more than a fair share is dropped at random, with a
//!   probability rising linearly to 1 at `hard`;
//! - at `hard`, the oldest connection of the network that holds the most
//!   is closed to make room: an attacker's own sockets go first, never a
//!   technician's from elsewhere;
//! - one network (an IPv4 /24, an IPv6 /48) holds at most `per_network`;
//!   beyond it its own oldest connection is closed.
//!
//! Authenticated viewers are not counted here at all: a connection leaves
//! the table when its viewer gets ServerInit (or goes away).

use super::throttle::network_key;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreauthLimits {
    /// Random early drop starts here.
    pub soft: usize,
    /// Never more than this many connections in the handshake.
    pub hard: usize,
    /// Never more than this many from one network.
    pub per_network: usize,
    /// Above `soft`, networks holding at least this many are subject to
    /// random early drop.
    pub fair_share: usize,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Let it in; first close the connection with this id (the oldest of
    /// the network holding the most, or of its own network), if any.
    Admit { evict: Option<u64> },
    /// Turn it away (random early drop).
    Drop,
}

#[derive(Default)]
struct Inner {
    /// Connection id (ascending = oldest first) -> its network.
    conns: BTreeMap<u64, IpAddr>,
    per_net: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) {
        if let Some(net) = self.conns.remove(&id) {
            if let Some(n) = self.per_net.get_mut(&net) {
                *n -= 1;
                if *n == 0 {
                    self.per_net.remove(&net);
                }
            }
        }
    }
    fn oldest_of(&self, net: IpAddr) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, n)| **n == net)
            .map(|(id, _)| *id)
    }
}

pub struct PreauthTable {
    limits: PreauthLimits,
    inner: Mutex<Inner>,
}

/// A connection's place in the table, given back on drop.
pub struct PreauthSlot {
    table: Arc<PreauthTable>,
    id: u64,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        self.table.inner.lock().unwrap().remove(self.id);
    }
}

impl PreauthTable {
    pub fn new(limits: PreauthLimits) -> Arc<PreauthTable> {
        Arc::new(PreauthTable {
            limits,
            inner: Mutex::default(),
        })
    }

    /// Decide about connection `id` from `ip`; `roll` is a uniform random
    /// number in [0, 1) for the early drop. On `Admit` the slot is taken
    /// (and the evicted connection, if any, no longer counts).
    pub fn admit(
        self: &Arc<Self>,
        id: u64,
        ip: IpAddr,
        roll: f64,
    ) -> (Admission, Option<PreauthSlot>) {
        let l = self.limits;
        let net = network_key(ip);
        let mut g = self.inner.lock().unwrap();
        let total = g.conns.len();
        let mine = g.per_net.get(&net).copied().unwrap_or(0);
        let mut evict = None;
        if mine >= l.per_network {
            evict = g.oldest_of(net);
        } else if total >= l.hard {
            let largest = g
                .per_net
                .iter()
                .max_by(|a, b| {
                    a.1.cmp(b.1).then_with(|| {
                        // Ties: the network whose oldest connection is oldest.
                        let oa = g.oldest_of(*a.0).unwrap_or(u64::MAX);
                        let ob = g.oldest_of(*b.0).unwrap_or(u64::MAX);
                        ob.cmp(&oa)
                    })
                })
                .map(|(n, _)| *n);
            evict = largest.and_then(|n| g.oldest_of(n));
        } else if total >= l.soft && mine >= l.fair_share {
            let p = (total - l.soft) as f64 / (l.hard - l.soft).max(1) as f64;
            if roll < p {
                return (Admission::Drop, None);
            }
        }
        if let Some(old) = evict {
            g.remove(old);
        }
        g.conns.insert(id, net);
        *g.per_net.entry(net).or_insert(0) += 1;
        (
            Admission::Admit { evict },
            Some(PreauthSlot {
                table: self.clone(),
                id,
            }),
        )
    }

    /// Connections in the handshake now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: PreauthLimits = PreauthLimits {
        soft: 8,
        hard: 16,
        per_network: 6,
        fair_share: 2,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_beyond_its_share_loses_its_own_oldest() {
        let t = PreauthTable::new(L);
        let mut slots = Vec::new();
        for id in 0..6 {
            let (a, s) = t.admit(id, ip(&format!("10.0.0.{id}")), 0.99);
            assert_eq!(a, Admission::Admit { evict: None });
            slots.push(s);
        }
        let (a, _s) = t.admit(6, ip("10.0.0.200"), 0.99);
        assert_eq!(a, Admission::Admit { evict: Some(0) });
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn at_the_hard_limit_the_largest_network_pays() {
        let t = PreauthTable::new(L);
        let mut slots = Vec::new();
        // A technician first, then an attacker fills the rest from 3 networks.
        slots.push(t.admit(100, ip("192.0.2.7"), 0.99).1);
        let mut id = 0;
        for net in ["203.0.113", "198.51.100", "198.51.101"] {
            for h in 0..5 {
                let (a, s) = t.admit(id, ip(&format!("{net}.{h}")), 0.99);
                assert!(matches!(a, Admission::Admit { .. }));
                slots.push(s);
                id += 1;
            }
        }
        assert_eq!(t.len(), 16);
        // Newcomers from other networks make room at the attacker networks'
        // expense, never the technician's (until every network is down to
        // one connection: then the oldest goes).
        for n in 0..12u64 {
            let (a, s) = t.admit(1000 + n, ip(&format!("198.18.{n}.1")), 0.99);
            match a {
                Admission::Admit { evict: Some(e) } => assert_ne!(e, 100),
                other => panic!("{other:?}"),
            }
            slots.push(s);
        }
        assert!(t.inner.lock().unwrap().conns.contains_key(&100));
    }

    #[test]
    fn random_early_drop_only_for_networks_above_their_share() {
        let t = PreauthTable::new(L);
        let mut slots = Vec::new();
        for id in 0..12 {
            let net = id % 4;
            slots.push(t.admit(id, ip(&format!("10.0.{net}.{id}")), 0.99).1);
        }
        // 12 of 16: p = 0.5. A crowded network's newcomer with a low roll is dropped ...
        assert_eq!(t.admit(50, ip("10.0.1.99"), 0.1).0, Admission::Drop);
        // ... a high roll gets in, and a fresh network always does.
        assert!(matches!(
            t.admit(51, ip("10.0.1.98"), 0.9).0,
            Admission::Admit { .. }
        ));
        assert!(matches!(
            t.admit(52, ip("10.9.9.9"), 0.0).0,
            Admission::Admit { .. }
        ));
    }

    #[test]
    fn slots_come_back() {
        let t = PreauthTable::new(L);
        let (_, s) = t.admit(1, ip("10.0.0.1"), 0.5);
        assert_eq!(t.len(), 1);
        drop(s);
        assert!(t.is_empty());
    }
}
