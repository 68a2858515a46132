//! Failed logins merged into summaries, so that a flood of guesses costs a
//! bounded number of journal rows and hook deliveries.
//!
//! Both the journal writer and the hook dispatcher keep one
//! [`AuthSummary`] per minute: the number of failures, the first and last
//! time, the first [`SUMMARY_ADDRESSES`] distinct addresses, how many
//! distinct addresses there were (counted exactly up to
//! [`TRACKED_ADDRESSES`]) and the reasons given (the first
//! [`SUMMARY_REASONS`] distinct ones, the rest as "other").

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

/// Failures are summarised per window of this length (wall clock, aligned).
pub const AUTH_WINDOW_MS: i64 = 60_000;
/// Failures per address and window that still get their own journal row.
pub const AUTH_ROWS_PER_ADDRESS: u32 = 3;
/// Failures per window, all addresses together, that get their own journal
/// row; beyond this (or beyond [`AUTH_ROWS_PER_ADDRESS`]) they are counted
/// in the window's `auth_failures` summary.
pub const AUTH_ROWS_PER_WINDOW: u32 = 64;
/// Addresses listed by name in one summary.
pub const SUMMARY_ADDRESSES: usize = 32;
/// Distinct addresses counted exactly per window (memory bound).
pub const TRACKED_ADDRESSES: usize = 4096;
/// Distinct reasons kept per summary; the rest count as "other".
pub const SUMMARY_REASONS: usize = 8;

/// The address part of "ip:port" (a viewer's port changes per attempt).
pub(crate) fn address_of(peer: Option<&str>) -> String {
    match peer {
        Some(p) => match p.parse::<std::net::SocketAddr>() {
            Ok(a) => a.ip().to_string(),
            Err(_) => super::truncate(p, 100),
        },
        None => "unknown".into(),
    }
}

/// Failed authentications of one window, added up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthSummary {
    /// `at / AUTH_WINDOW_MS` of the failures counted here.
    pub window: i64,
    pub count: u64,
    pub first: i64,
    pub last: i64,
    /// The first distinct addresses, at most [`SUMMARY_ADDRESSES`].
    pub addresses: Vec<String>,
    seen: HashSet<String>,
    /// More than [`TRACKED_ADDRESSES`] distinct addresses: `distinct` is a
    /// lower bound.
    pub distinct_capped: bool,
    /// Set by [`AuthSummary::freeze`]: the distinct count, `seen` dropped.
    frozen: Option<u64>,
    pub reasons: BTreeMap<String, u64>,
}

impl AuthSummary {
    pub fn new(window: i64) -> AuthSummary {
        AuthSummary {
            window,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Distinct addresses counted (a lower bound if `distinct_capped`).
    pub fn distinct(&self) -> u64 {
        self.frozen.unwrap_or(self.seen.len() as u64)
    }

    /// Keeps the distinct count but drops the set of addresses behind it
    /// (up to [`TRACKED_ADDRESSES`] strings), for a summary that waits in
    /// a queue. Addresses added later are checked against the listed ones
    /// only, so the count becomes a lower bound if they are not there.
    pub(crate) fn freeze(&mut self) {
        if self.frozen.is_none() {
            self.frozen = Some(self.seen.len() as u64);
            self.seen = HashSet::new();
        }
    }

    pub fn add(&mut self, address: &str, reason: &str, at: i64) {
        self.span(at, at);
        self.count += 1;
        self.note_address(address);
        self.note_reason(&super::truncate(reason, 200), 1);
    }

    fn span(&mut self, first: i64, last: i64) {
        if self.count == 0 {
            (self.first, self.last) = (first, last);
        } else {
            self.first = self.first.min(first);
            self.last = self.last.max(last);
        }
    }

    fn note_address(&mut self, address: &str) {
        if let Some(n) = &mut self.frozen {
            if !self.addresses.iter().any(|a| a == address) {
                if self.addresses.len() < SUMMARY_ADDRESSES {
                    self.addresses.push(address.to_owned());
                    *n += 1;
                } else {
                    self.distinct_capped = true;
                }
            }
            return;
        }
        if self.seen.contains(address) {
            return;
        }
        if self.seen.len() >= TRACKED_ADDRESSES {
            self.distinct_capped = true;
            return;
        }
        self.seen.insert(address.to_owned());
        if self.addresses.len() < SUMMARY_ADDRESSES {
            self.addresses.push(address.to_owned());
        }
    }

    fn note_reason(&mut self, reason: &str, n: u64) {
        let key = if self.reasons.contains_key(reason) || self.reasons.len() < SUMMARY_REASONS {
            reason
        } else {
            "other"
        };
        *self.reasons.entry(key.to_owned()).or_default() += n;
    }

    /// Adds another summary's counts (used when summaries pile up behind a
    /// slow receiver). Only the other's listed addresses are known, so the
    /// distinct count may become a lower bound.
    pub fn merge(&mut self, other: &AuthSummary) {
        if other.count == 0 {
            return;
        }
        self.span(other.first, other.last);
        self.count += other.count;
        for a in &other.addresses {
            self.note_address(a);
        }
        if other.distinct() > other.addresses.len() as u64 || other.distinct_capped {
            self.distinct_capped = true;
        }
        for (r, n) in &other.reasons {
            self.note_reason(r, *n);
        }
    }

    /// The JSON of an `auth_failures` event or hook.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "addresses": self.addresses,
            "distinct_addresses": self.distinct(),
            "distinct_addresses_capped": self.distinct_capped,
            "reasons": self.reasons,
        })
    }
}

/// Decides which failures of a window get their own journal row.
#[derive(Debug, Default)]
pub(crate) struct RowBudget {
    window: i64,
    rows: u32,
    per_address: std::collections::HashMap<String, u32>,
}

impl RowBudget {
    /// True if this failure may have its own row (and counts it).
    pub(crate) fn take(&mut self, address: &str, at: i64) -> bool {
        let w = at.div_euclid(AUTH_WINDOW_MS);
        if w != self.window {
            self.window = w;
            self.rows = 0;
            self.per_address.clear();
        }
        if self.rows >= AUTH_ROWS_PER_WINDOW {
            return false;
        }
        if !self.per_address.contains_key(address) && self.per_address.len() >= TRACKED_ADDRESSES {
            return false;
        }
        let n = self.per_address.entry(address.to_owned()).or_default();
        if *n >= AUTH_ROWS_PER_ADDRESS {
            return false;
        }
        *n += 1;
        self.rows += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_reasons_are_capped_counts_exact() {
        let mut s = AuthSummary::new(0);
        for i in 0..5000u32 {
            s.add(
                &format!("10.0.{}.{}", i / 256, i % 256),
                &format!("r{}", i % 20),
                i as i64,
            );
        }
        assert_eq!(s.count, 5000);
        assert_eq!(s.addresses.len(), SUMMARY_ADDRESSES);
        assert_eq!(s.distinct(), TRACKED_ADDRESSES as u64);
        assert!(s.distinct_capped);
        assert_eq!(s.reasons.values().sum::<u64>(), 5000);
        assert!(s.reasons.len() <= SUMMARY_REASONS + 1);
        assert_eq!((s.first, s.last), (0, 4999));
        let mut t = AuthSummary::new(0);
        t.add("192.0.2.1", "wrong", 10_000);
        t.merge(&s);
        assert_eq!(t.count, 5001);
        assert_eq!(t.reasons.values().sum::<u64>(), 5001);
        assert_eq!((t.first, t.last), (0, 10_000));
    }

    #[test]
    fn the_row_budget_is_per_address_and_per_window() {
        let mut b = RowBudget::default();
        let own: usize = (0..10).filter(|_| b.take("a", 5)).count();
        assert_eq!(own, AUTH_ROWS_PER_ADDRESS as usize);
        let own: usize = (0..1000).filter(|i| b.take(&format!("x{i}"), 6)).count();
        assert_eq!(own as u32, AUTH_ROWS_PER_WINDOW - AUTH_ROWS_PER_ADDRESS);
        // The next window starts afresh.
        assert!(b.take("a", AUTH_WINDOW_MS + 1));
    }
}
