//! Per-address back-off after failed authentication (TigerVNC calls it a
//! blacklist): after `threshold` failures in a row an address is refused at
//! accept for a time that doubles with each further failure, up to a cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; the stalest is forgotten beyond this.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
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

    /// Is `ip` refused right now? Returns the time left.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let map = self.map.lock().unwrap();
        let until = map.get(&ip)?.blocked_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Count a failure; returns the block period when this failure starts
    /// (or extends) a block.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        if self.threshold == 0 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            if let Some(stalest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
                map.remove(&stalest);
            }
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            blocked_until: None,
            last: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        if e.failures >= self.threshold {
            let doublings = (e.failures - self.threshold).min(16);
            let wait = self.base.saturating_mul(1 << doublings).min(self.cap);
            e.blocked_until = Some(now + wait);
            return Some(wait);
        }
        None
    }

    pub fn success(&self, ip: IpAddr) {
        self.map.lock().unwrap().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_threshold_and_doubles() {
        let t = AuthThrottle::new(3, Duration::from_secs(10), Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.failure(ip);
        t.failure(ip);
        assert!(t.blocked(ip).is_none());
        t.failure(ip);
        let first = t.blocked(ip).unwrap();
        assert!(first <= Duration::from_secs(10) && first > Duration::from_secs(9));
        t.failure(ip);
        assert!(t.blocked(ip).unwrap() > Duration::from_secs(19));
        t.success(ip);
        assert!(t.blocked(ip).is_none());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(t.blocked(other).is_none());
    }

    #[test]
    fn disabled_never_blocks() {
        let t = AuthThrottle::new(0, Duration::from_secs(10), Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            t.failure(ip);
        }
        assert!(t.blocked(ip).is_none());
    }
}
