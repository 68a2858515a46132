//! How long checking one VNC-authentication response against the one-time
//! codes takes, with 1 and with 1000 live codes (issue 8: the cost must not
//! depend on the number of live codes).
//!
//! ```sh
//! cargo run --example code_check            # debug
//! cargo run --release --example code_check  # release
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketvnc::security::Authenticator;
use ticketvnc::tickets::{CodeAuthenticator, Journal};

fn per_check(auth: &CodeAuthenticator, n: u32) -> Duration {
    let challenge = [7u8; 16];
    let wrong = [0u8; 16];
    // Warm up (loads the live codes).
    assert!(auth.verify_vnc(&challenge, &wrong).is_none());
    let t = Instant::now();
    for _ in 0..n {
        assert!(auth.verify_vnc(&challenge, &wrong).is_none());
    }
    t.elapsed() / n
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(&dir.path().join("bench.db")).unwrap());
    j.open_ticket("1", None).unwrap();
    let auth = CodeAuthenticator::new(j.clone(), None, None).unwrap();
    let n = if cfg!(debug_assertions) { 20 } else { 200 };
    j.issue_code("1", Duration::from_secs(3600)).unwrap();
    let one = per_check(&auth, n);
    for _ in 0..999 {
        j.issue_code("1", Duration::from_secs(3600)).unwrap();
    }
    let many = per_check(&auth, n);
    println!(
        "{} build: {:.0} µs per check with 1 live code, {:.0} µs with 1000 (MAX_LIVE_CODES {})",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        one.as_secs_f64() * 1e6,
        many.as_secs_f64() * 1e6,
        ticketvnc::tickets::MAX_LIVE_CODES,
    );
}
