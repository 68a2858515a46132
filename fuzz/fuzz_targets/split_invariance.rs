//! The same byte stream fed in different chunkings (all at once, byte by
//! byte, and two chunkings derived from the input) gives the same events,
//! the same error, the same output and the same final state.
//!
//! The VeNCrypt paths are included: the driver hands the bytes left after
//! the subtype choice back to the connection once its pretend TLS is up,
//! so how much of the stream had arrived at StartTls must not matter.
//!
//! Input: byte 0 is the mode (offer and approve/reject, see `common.rs`),
//! bytes 1 and 2 seed two chunkings, the rest is the stream.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

/// Largest read the session makes; chunks are never bigger.
const READ: usize = 64 * 1024;

fn run(mode: u8, stream: &[u8], lengths: &[usize]) -> common::Trace {
    let mut d = common::Driver::new(mode);
    let mut at = 0;
    for &n in lengths {
        d.feed(&stream[at..at + n]);
        at += n;
    }
    d.trace
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    common::plain_limit_self_test();
    let (mode, seed_a, seed_b, stream) = (data[0], data[1], data[2], &data[3..]);
    let whole: Vec<usize> = stream.chunks(READ).map(|c| c.len()).collect();
    let reference = run(mode, stream, &whole);
    let bytewise = vec![1; stream.len()];
    for lengths in [
        bytewise,
        common::chunk_lengths(seed_a, stream.len()),
        common::chunk_lengths(seed_b, stream.len()),
    ] {
        let t = run(mode, stream, &lengths);
        assert_eq!(t, reference, "chunking {lengths:?}");
    }
});
