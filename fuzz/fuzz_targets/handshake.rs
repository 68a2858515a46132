//! Drive `ServerConnection` with arbitrary chunks of input, answering
//! VncAuthResponse with a real DES check against a fixed password. The
//! connection must never be authenticated (nor send ServerInit) unless the
//! client chose None where it was offered or sent the right response; it
//! must only accept offered security types; it must never panic.
//!
//! Input: byte 0 picks the offered security types; the rest is a sequence
//! of (length byte, chunk) pairs.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut d = common::Driver::new(mode);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        d.feed(&tail[..len]);
        rest = &tail[len..];
        if d.closed() {
            break;
        }
    }
    if d.trace.normal {
        // ServerInit went out: the 64x48 size must follow the handshake bytes.
        assert!(d.trace.output.windows(4).any(|w| w == [0, 64, 0, 48]));
    }
});
