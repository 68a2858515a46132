//! `decode_client_message_ext` on arbitrary bytes: never panics, never claims
//! more bytes than it was given, never decodes a message from a strict
//! prefix of it, and re-encoding a decoded message decodes to the same
//! message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketvnc::rfb::messages::{
    decode_client_message_ext, enc, encode_client_message, ClientMessage,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Decode a stream of messages the way the connection does: once a
    // SetEncodings lists ExtendedMouseButtons, PointerEvents may be extended.
    let mut ext = false;
    let decode_client_message = |b: &[u8], ext: bool| decode_client_message_ext(b, ext);
    while let Ok(Some((msg, n))) = decode_client_message(rest, ext) {
        assert!(n >= 1 && n <= rest.len(), "consumed {n} of {}", rest.len());
        // Strict prefixes are incomplete, never an error or a message
        // (a sample of cut points keeps this linear in practice).
        let cuts = (0..n.min(24)).chain([n / 2, n - 1]);
        for cut in cuts.filter(|&c| c < n) {
            assert_eq!(
                decode_client_message(&rest[..cut], ext),
                Ok(None),
                "prefix of {cut} of a {n}-byte {msg:?}"
            );
        }
        let mut again = Vec::new();
        encode_client_message(&msg, &mut again);
        assert_eq!(
            decode_client_message(&again, ext),
            Ok(Some((msg.clone(), again.len()))),
            "re-encoded {msg:?}"
        );
        if let ClientMessage::SetEncodings(list) = &msg {
            ext = list.contains(&enc::EXTENDED_MOUSE_BUTTONS);
        }
        rest = &rest[n..];
    }
});
