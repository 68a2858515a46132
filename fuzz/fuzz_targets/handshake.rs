//! Drive the protocol core (a `Handshake`, then the `Established` its
//! `server_init` returns) with arbitrary chunks of input through the
//! shared driver (`common.rs`): None, VNC authentication (a real DES check
//! against a fixed password), VeNCrypt X509None/X509Vnc/X509Plain behind a
//! pretend TLS layer, a refusing server, approval or rejection after
//! authentication. The connection must never be authenticated, approved
//! or normal without the right proof; it must only accept offered types
//! and subtypes; after an error or a rejection it sends nothing more than
//! what that error sends; it must never panic.
//!
//! Input: byte 0 is the mode (offer and approve/reject, see `common.rs`);
//! the rest is a sequence of (length byte, chunk) pairs. Chunks after an
//! error still go in, and must change nothing.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::plain_limit_self_test();
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut d = common::Driver::new(mode);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        d.feed(&tail[..len]);
        rest = &tail[len..];
    }
    if d.trace.normal {
        // ServerInit went out: the 64x48 size must follow the handshake bytes.
        assert!(d.trace.output.windows(4).any(|w| w == [0, 64, 0, 48]));
    }
});
