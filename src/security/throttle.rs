//! The guessing budget.
//!
//! Two limits together put a known ceiling on the number of guesses an
//! attacker gets answered, however many addresses it rotates through:
//!
//! - **Per source** ([`AuthThrottle`]): an IPv4 address or an IPv6 /64
//!   gets `threshold` failures in a row, counted when an attempt *starts*
//!   (so concurrent handshakes cannot overshoot); then it is refused for a
//!   time that doubles with each further failure, up to a cap. The table is
//!   bounded; when it is full (after forgetting idle sources), a new source
//!   is not tracked: nobody is evicted, so a blocked source is never
//!   forgotten early, and the newcomer is held only by the global budget.
//!   (An earlier design let newcomers share one overflow entry; a flood from
//!   more than 4096 addresses then blocked that entry and locked out every
//!   technician arriving from a new address.)
//! - **Globally** ([`GuessBudget`]): at most `per_minute` failed
//!   verifications a minute across all sources (a token bucket; a success
//!   gives its token back). Without a token a credential is not checked at
//!   all: the handshake waits for one, and waiting handshakes are served
//!   cleanest network first (the /24 or /48 with the fewest recent
//!   failures), so a technician from elsewhere gets the next token while a
//!   flood waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Sources remembered at most; beyond this, new sources are not tracked.
pub const MAX_TRACKED: usize = 4096;
/// A source with no failure for this long and no block is forgotten.
const IDLE_FORGET: Duration = Duration::from_secs(3600);

/// The key per-source limits are counted under: an IPv4 address, or the
/// /64 of an IPv6 address (one host usually owns a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The network a source belongs to, for fair shares: an IPv4 /24 or an
/// IPv6 /48.
pub fn network_key(ip: IpAddr) -> IpAddr {
    match source_key(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// Why an attempt may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Blocked for this long still.
    Blocked(Duration),
    /// As many attempts are running as failures are left before a block.
    Busy,
}

pub struct AuthThrottle {
    threshold: u32,
    base: Duration,
    cap: Duration,
    map: Mutex<HashMap<IpAddr, Entry>>,
}

impl AuthThrottle {
    /// `threshold` 0 disables the throttle.
    pub fn new(threshold: u32, base: Duration, cap: Duration) -> AuthThrottle {
        AuthThrottle {
            threshold,
            base,
            cap,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The table key for `ip`: its source key, or `None` (untracked) when
    /// the table is full even after forgetting idle and clean sources.
    fn key(map: &mut HashMap<IpAddr, Entry>, ip: IpAddr, now: Instant) -> Option<IpAddr> {
        let k = source_key(ip);
        if map.contains_key(&k) || map.len() < MAX_TRACKED {
            return Some(k);
        }
        map.retain(|_, e| {
            e.in_flight > 0
                || e.blocked_until.is_some_and(|u| u > now)
                || (e.failures > 0 && now.duration_since(e.last) < IDLE_FORGET)
        });
        (map.len() < MAX_TRACKED).then_some(k)
    }

    /// Is `ip` refused right now? Returns the time left.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let k = Self::key(&mut map, ip, now)?;
        let until = map.get(&k)?.blocked_until?;
        until.checked_duration_since(now)
    }

    /// An attempt (a credential about to be checked) starts. While the
    /// returned guard lives it counts as a failure-to-be; call
    /// [`Attempt::failed`] or [`Attempt::succeeded`] with the outcome
    /// (dropping it otherwise, e.g. the viewer left, counts as nothing).
    pub fn begin(self: &Arc<Self>, ip: IpAddr) -> Result<Attempt, Refusal> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let Some(k) = Self::key(&mut map, ip, now) else {
            return Ok(Attempt {
                throttle: self.clone(),
                key: None,
                done: false,
            });
        };
        let e = map.entry(k).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            blocked_until: None,
            last: now,
        });
        if let Some(left) = e.blocked_until.and_then(|u| u.checked_duration_since(now)) {
            return Err(Refusal::Blocked(left));
        }
        if self.threshold > 0 && e.failures + e.in_flight >= self.threshold {
            return Err(Refusal::Busy);
        }
        e.in_flight += 1;
        e.last = now;
        Ok(Attempt {
            throttle: self.clone(),
            key: Some(k),
            done: false,
        })
    }

    fn finish(&self, key: Option<IpAddr>, failed: bool) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let e = map.get_mut(&key?)?;
        e.in_flight = e.in_flight.saturating_sub(1);
        e.last = now;
        if !failed {
            e.failures = 0;
            e.blocked_until = None;
            return None;
        }
        if self.threshold == 0 {
            return None;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.threshold {
            let doublings = (e.failures - self.threshold).min(16);
            let wait = self.base.saturating_mul(1 << doublings).min(self.cap);
            e.blocked_until = Some(now + wait);
            return Some(wait);
        }
        None
    }

    /// Sources tracked (for tests and the memory bound).
    pub fn tracked(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// One running authentication attempt of a source.
pub struct Attempt {
    throttle: Arc<AuthThrottle>,
    /// `None`: the source found the table full and is not tracked.
    key: Option<IpAddr>,
    done: bool,
}

impl Attempt {
    /// The credential was wrong. Returns the block period if this failure
    /// starts (or extends) a block.
    pub fn failed(mut self) -> Option<Duration> {
        self.done = true;
        self.throttle.finish(self.key, true)
    }
    /// The credential was right: the source's failures are forgiven.
    pub fn succeeded(mut self) {
        self.done = true;
        self.throttle.finish(self.key, false);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            let mut map = self.throttle.map.lock().unwrap();
            if let Some(e) = self.key.and_then(|k| map.get_mut(&k)) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
    }
}

// ------------------------------------------------------------ global budget

/// Attempts and failures remembered per network for the "cleanest first"
/// order, decayed
/// by half every this long.
const NETWORK_DECAY: Duration = Duration::from_secs(60);
/// Networks whose failures are remembered at most (others count as clean).
const MAX_NETWORKS: usize = 4096;
/// Handshakes that may wait for a token at once. When full, a newcomer from
/// a cleaner network takes the place of the dirtiest waiter (which is
/// refused); otherwise the newcomer is refused at once. A flood thus costs
/// the server nothing but refusals, and cannot crowd out a technician.
pub const MAX_WAITERS: usize = 32;

struct Waiter {
    network: IpAddr,
    since: Instant,
    tx: oneshot::Sender<()>,
}

struct BudgetState {
    tokens: f64,
    last_refill: Instant,
    waiters: Vec<Waiter>,
    /// Recent failures per network (decayed), for the waiting order.
    network_failures: HashMap<IpAddr, (f64, Instant)>,
}

/// At most `per_minute` failed verifications a minute, server-wide.
pub struct GuessBudget {
    per_minute: u32,
    burst: f64,
    state: Mutex<BudgetState>,
}

/// The right to check one credential. Give it back with
/// [`Token::succeeded`]; a failure (or dropping it) spends it.
pub struct Token {
    budget: Option<Arc<GuessBudget>>,
    network: IpAddr,
}

impl Token {
    pub fn succeeded(mut self) {
        if let Some(b) = self.budget.take() {
            let mut st = b.state.lock().unwrap();
            st.tokens = (st.tokens + 1.0).min(b.burst);
            b.grant(&mut st);
        }
    }
    pub fn failed(mut self) {
        if let Some(b) = self.budget.take() {
            let mut st = b.state.lock().unwrap();
            let now = Instant::now();
            let e = st
                .network_failures
                .entry(self.network)
                .or_insert((0.0, now));
            e.0 = decayed(e.0, e.1, now) + 1.0;
            e.1 = now;
            forget_cleanest(&mut st.network_failures);
        }
    }
}

/// Keeps the pressure table bounded: beyond MAX_NETWORKS the cleanest half
/// is forgotten (the dirtiest are kept).
fn forget_cleanest(m: &mut HashMap<IpAddr, (f64, Instant)>) {
    if m.len() > MAX_NETWORKS {
        let now = Instant::now();
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, (s, at))| (*k, decayed(*s, *at, now)))
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (k, _) in v.iter().take(v.len() / 2) {
            m.remove(k);
        }
    }
}

fn decayed(v: f64, at: Instant, now: Instant) -> f64 {
    let halvings = now.duration_since(at).as_secs_f64() / NETWORK_DECAY.as_secs_f64();
    v * 0.5f64.powf(halvings)
}

impl GuessBudget {
    /// `per_minute` 0 disables the global budget.
    pub fn new(per_minute: u32) -> Arc<GuessBudget> {
        let burst = per_minute.max(1) as f64;
        Arc::new(GuessBudget {
            per_minute,
            burst,
            state: Mutex::new(BudgetState {
                tokens: burst,
                last_refill: Instant::now(),
                waiters: Vec::new(),
                network_failures: HashMap::new(),
            }),
        })
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn refill(&self, st: &mut BudgetState) {
        let now = Instant::now();
        let add = now.duration_since(st.last_refill).as_secs_f64() * self.per_minute as f64 / 60.0;
        st.tokens = (st.tokens + add).min(self.burst);
        st.last_refill = now;
    }

    /// Hand tokens to waiters, cleanest network first, oldest within.
    fn grant(&self, st: &mut BudgetState) {
        self.refill(st);
        let now = Instant::now();
        st.waiters.retain(|w| !w.tx.is_closed());
        while st.tokens >= 1.0 && !st.waiters.is_empty() {
            let score = |w: &Waiter| {
                st.network_failures
                    .get(&w.network)
                    .map_or(0.0, |(v, at)| decayed(*v, *at, now))
            };
            let best = (0..st.waiters.len())
                .min_by(|&a, &b| {
                    let (wa, wb) = (&st.waiters[a], &st.waiters[b]);
                    score(wa)
                        .total_cmp(&score(wb))
                        .then(wa.since.cmp(&wb.since))
                })
                .expect("not empty");
            let w = st.waiters.swap_remove(best);
            if w.tx.send(()).is_ok() {
                st.tokens -= 1.0;
            }
        }
    }

    /// Wait (at most until `deadline`) for the right to check a credential
    /// from `ip`. `None`: the budget stayed exhausted until the deadline.
    pub async fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Option<Token> {
        let network = network_key(ip);
        if self.per_minute == 0 {
            return Some(Token {
                budget: None,
                network,
            });
        }
        let rx = {
            let mut st = self.state.lock().unwrap();
            self.refill(&mut st);
            // Every attempt adds to its network's pressure (failures add
            // more): a network that tries a lot waits behind one that tries
            // little, whether or not its attempts were ever checked.
            let now = Instant::now();
            let before = st
                .network_failures
                .get(&network)
                .map_or(0.0, |(v, at)| decayed(*v, *at, now));
            st.network_failures.insert(network, (before + 1.0, now));
            forget_cleanest(&mut st.network_failures);
            if st.tokens >= 1.0 && st.waiters.is_empty() {
                st.tokens -= 1.0;
                return Some(Token {
                    budget: Some(self.clone()),
                    network,
                });
            }
            st.waiters.retain(|w| !w.tx.is_closed());
            if st.waiters.len() >= MAX_WAITERS {
                let now = Instant::now();
                let score = |n: &IpAddr| {
                    st.network_failures
                        .get(n)
                        .map_or(0.0, |(v, at)| decayed(*v, *at, now))
                };
                let mine = before;
                // The dirtiest waiter (the newest among equals).
                let worst = (0..st.waiters.len())
                    .max_by(|&a, &b| {
                        let (wa, wb) = (&st.waiters[a], &st.waiters[b]);
                        score(&wa.network)
                            .total_cmp(&score(&wb.network))
                            .then(wa.since.cmp(&wb.since))
                    })
                    .expect("not empty");
                // Only a network under less pressure takes a place.
                if score(&st.waiters[worst].network) <= mine + 1.0 {
                    return None;
                }
                // Dropping its sender refuses it.
                st.waiters.swap_remove(worst);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push(Waiter {
                network,
                since: Instant::now(),
                tx,
            });
            rx
        };
        let mut rx = rx;
        loop {
            // Tokens come back with time: look again every so often.
            let tick = tokio::time::Instant::now()
                + Duration::from_millis((60_000 / self.per_minute.max(1) as u64).clamp(50, 1000));
            tokio::select! {
                r = &mut rx => {
                    return r.ok().map(|_| Token { budget: Some(self.clone()), network });
                }
                _ = tokio::time::sleep_until(tick.min(deadline)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    let mut st = self.state.lock().unwrap();
                    self.grant(&mut st);
                }
            }
        }
    }

    /// Handshakes waiting for a token.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(threshold: u32) -> Arc<AuthThrottle> {
        Arc::new(AuthThrottle::new(
            threshold,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ))
    }

    #[test]
    fn blocks_after_threshold_and_doubles() {
        let t = t(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.begin(ip).unwrap().failed();
        t.begin(ip).unwrap().failed();
        assert!(t.blocked(ip).is_none());
        let first = t.begin(ip).unwrap().failed().unwrap();
        assert_eq!(first, Duration::from_secs(10));
        assert!(matches!(t.begin(ip), Err(Refusal::Blocked(_))));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(t.blocked(other).is_none());
    }

    #[test]
    fn concurrent_attempts_cannot_overshoot() {
        let t = t(5);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let running: Vec<_> = (0..12).filter_map(|_| t.begin(ip).ok()).collect();
        assert_eq!(running.len(), 5, "12 at once, 5 allowed");
        for a in running {
            a.failed();
        }
        assert!(t.blocked(ip).is_some());
        // An abandoned attempt (viewer left) counts as nothing.
        let t = self::t(5);
        drop(t.begin(ip).unwrap());
        assert_eq!(t.map.lock().unwrap()[&ip].failures, 0);
    }

    #[test]
    fn success_forgives() {
        let t = t(3);
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        t.begin(ip).unwrap().failed();
        t.begin(ip).unwrap().failed();
        t.begin(ip).unwrap().succeeded();
        t.begin(ip).unwrap().failed();
        t.begin(ip).unwrap().failed();
        assert!(t.blocked(ip).is_none());
    }

    #[test]
    fn ipv6_hosts_count_per_64() {
        let t = t(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        t.begin(a).unwrap().failed();
        t.begin(b).unwrap().failed();
        assert!(
            t.blocked(a).is_some(),
            "rotating inside a /64 is one source"
        );
        assert_eq!(
            network_key("10.1.2.3".parse().unwrap()),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
    }

    /// A full table forgets nobody: rotating addresses cannot make it
    /// forget a blocked source. And it locks nobody out: a technician
    /// arriving from a new address while the table is full of attackers
    /// may still try (the global budget is what holds newcomers then).
    #[test]
    fn a_full_table_is_no_amnesia_and_no_lockout() {
        let fresh = t;
        let t = fresh(5);
        let victim: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..5 {
            t.begin(victim).unwrap().failed();
        }
        assert!(t.blocked(victim).is_some());
        let mut refused = 0;
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for _ in 0..2 {
                match t.begin(ip) {
                    Ok(a) => {
                        a.failed();
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(t.tracked() <= MAX_TRACKED);
        assert!(
            t.blocked(victim).is_some(),
            "the blocked source was forgotten"
        );
        assert_eq!(refused, 0, "two failures each are below the threshold");
        let technician: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(t.blocked(technician), None);
            t.begin(technician)
                .expect("a newcomer is locked out by a full table")
                .failed();
        }
        // Clean sources that succeeded make room again.
        let clean = fresh(5);
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            clean.begin(ip).unwrap().succeeded();
        }
        let late: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..5 {
            clean.begin(late).unwrap().failed();
        }
        assert!(
            clean.blocked(late).is_some(),
            "clean entries were not reclaimed"
        );
    }

    #[tokio::test]
    async fn the_global_budget_serves_the_cleanest_network_first() {
        let b = GuessBudget::new(60);
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let dirty: IpAddr = "203.0.113.5".parse().unwrap();
        // The whole burst goes to failures from one network.
        for _ in 0..60 {
            b.acquire(dirty, far).await.unwrap().failed();
        }
        // Now a flood waits, and a technician from elsewhere comes later.
        let mut flood = Vec::new();
        for i in 0..20 {
            let b = b.clone();
            let ip: IpAddr = format!("203.0.113.{}", 10 + i).parse().unwrap();
            flood.push(tokio::spawn(
                async move { b.acquire(ip, far).await.is_some() },
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tech = b
            .acquire("192.0.2.77".parse().unwrap(), far)
            .await
            .expect("the technician gets a token");
        // The first token after the burst (one a second) went to the clean
        // network although 20 handshakes were waiting before it.
        tech.succeeded();
        assert!(
            b.waiting() >= 18,
            "the flood is still waiting: {}",
            b.waiting()
        );
        for f in flood {
            f.abort();
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_the_flood_not_the_technician() {
        let b = GuessBudget::new(60);
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let dirty: IpAddr = "203.0.113.5".parse().unwrap();
        for _ in 0..60 {
            b.acquire(dirty, far).await.unwrap().failed();
        }
        let mut flood = Vec::new();
        for _ in 0..MAX_WAITERS {
            let b = b.clone();
            flood.push(tokio::spawn(async move {
                b.acquire(dirty, far).await.is_some()
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.waiting(), MAX_WAITERS);
        // One more from the flood's network is refused at once...
        assert!(b.acquire(dirty, far).await.is_none());
        // ... a technician from elsewhere takes a flooder's place and is served.
        let tech = b.acquire("192.0.2.77".parse().unwrap(), far).await;
        assert!(tech.is_some());
        let refused = futures_count(flood).await;
        assert!(refused >= 1, "a flooder should have lost its place");
    }

    /// Aborts the waiters and counts those that had already been refused.
    async fn futures_count(v: Vec<tokio::task::JoinHandle<bool>>) -> usize {
        let mut refused = 0;
        for h in v {
            if h.is_finished() {
                if !h.await.unwrap() {
                    refused += 1;
                }
            } else {
                h.abort();
            }
        }
        refused
    }

    #[tokio::test]
    async fn no_token_until_the_deadline_means_no_check() {
        let b = GuessBudget::new(1);
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(300);
        b.acquire(ip, soon).await.unwrap().failed();
        assert!(b.acquire(ip, soon).await.is_none());
    }
}
