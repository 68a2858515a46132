//! `decode_server_message` on arbitrary bytes (what a viewer of ticketvnc
//! reads): never panics, never claims more bytes than it was given, never
//! decodes a message from a strict prefix of it, and a decoded message
//! encoded again with the server's `write_*` decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketvnc::rfb::messages::{
    decode_server_message, write_bell, write_colour_map, write_end_of_continuous_updates,
    write_server_cut_text, write_server_ext_clipboard, write_server_fence, ServerMessage,
};

/// The server's encoding of `m`, when the server can send it (a colour map
/// only of 8-bit channels widened as the server widens them).
fn encode(m: &ServerMessage) -> Option<Vec<u8>> {
    let mut b = Vec::new();
    match m {
        ServerMessage::FramebufferUpdate { nrects } => {
            let mut u = ticketvnc::rfb::UpdateBuf::new();
            u.update_header(*nrects);
            b.extend_from_slice(u.bytes());
        }
        ServerMessage::SetColourMapEntries { first, colours } => {
            let mut native = Vec::with_capacity(colours.len());
            for c in colours {
                if c.iter().any(|&v| v % 257 != 0) {
                    return None;
                }
                let [r, g, b] = c.map(|v| u32::from(v / 257));
                native.push(r << 16 | g << 8 | b);
            }
            write_colour_map(*first, &native, &mut b);
        }
        ServerMessage::Bell => write_bell(&mut b),
        ServerMessage::ServerCutText(t) => write_server_cut_text(t, &mut b),
        ServerMessage::ExtendedClipboard { flags, payload } => {
            write_server_ext_clipboard(*flags, payload, &mut b)
        }
        ServerMessage::EndOfContinuousUpdates => write_end_of_continuous_updates(&mut b),
        ServerMessage::Fence { flags, payload } => write_server_fence(*flags, payload, &mut b),
    }
    Some(b)
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, n))) = decode_server_message(rest) {
        assert!(n >= 1 && n <= rest.len(), "consumed {n} of {}", rest.len());
        let cuts = (0..n.min(24)).chain([n / 2, n - 1]);
        for cut in cuts.filter(|&c| c < n) {
            assert_eq!(
                decode_server_message(&rest[..cut]),
                Ok(None),
                "prefix of {cut} of a {n}-byte {msg:?}"
            );
        }
        if let Some(again) = encode(&msg) {
            assert_eq!(
                decode_server_message(&again),
                Ok(Some((msg.clone(), again.len()))),
                "re-encoded {msg:?}"
            );
        }
        rest = &rest[n..];
    }
});
