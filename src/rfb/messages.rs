//! Client-to-server messages (decoded) and server-to-client messages
//! (serialised). Decoding never consumes a partial message: it returns
//! `Ok(None)` until every byte of the message is there, and it checks each
//! length against its limit *before* waiting for the bytes.

use super::error::ProtocolError;
use super::limits;
use super::pixel_format::PixelFormat;
use super::wire::{PutExt, Reader};
use crate::framebuffer::Rect;

/// Encoding numbers (RFB 7.7, 7.8).
pub mod enc {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const RRE: i32 = 2;
    pub const HEXTILE: i32 = 5;
    pub const ZLIB: i32 = 6;
    pub const TIGHT: i32 = 7;
    pub const ZRLE: i32 = 16;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const CURSOR: i32 = -239;
    /// X Cursor: two colours, a bitmap and a mask.
    pub const X_CURSOR: i32 = -240;
    /// Pointer Position (TightVNC's): the pointer's hotspot as x, y.
    pub const POINTER_POS: i32 = -232;
    /// Cursor With Alpha: RGBA, alpha pre-multiplied, in a real encoding.
    pub const CURSOR_WITH_ALPHA: i32 = -314;
    /// VMware Cursor Position: the pointer's hotspot as x, y (TigerVNC's).
    pub const VMWARE_CURSOR_POSITION: i32 = 0x574d_5666;
    pub const DESKTOP_NAME: i32 = -307;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    pub const FENCE: i32 = -312;
    pub const CONTINUOUS_UPDATES: i32 = -313;
    /// QEMU Extended Key Event: keys with their XT scan codes.
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    /// ExtendedMouseButtons: PointerEvents with back and forward.
    pub const EXTENDED_MOUSE_BUTTONS: i32 = -316;
    /// QEMU LED State: the lock keys as one byte.
    pub const LED_STATE: i32 = -261;
    /// VMware LED State: the lock keys as a U32 (same bits).
    pub const VMWARE_LED_STATE: i32 = 0x574d_5668;
    /// Extended Clipboard (UTF-8 clipboard text): 0xC0A1E5CE.
    pub const EXTENDED_CLIPBOARD: i32 = 0xC0A1_E5CEu32 as i32;
    /// Compression level 0..=9 is -256..=-247.
    pub const COMPRESS_LEVEL_0: i32 = -256;
    pub const COMPRESS_LEVEL_9: i32 = -247;
    /// JPEG quality level 0..=9 is -32..=-23.
    pub const QUALITY_LEVEL_0: i32 = -32;
    pub const QUALITY_LEVEL_9: i32 = -23;
}

/// A decoded client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    /// Encodings in the client's order of preference, de-duplicated, at most
    /// [`limits::MAX_ENCODINGS_KEPT`] kept.
    SetEncodings(Vec<i32>),
    FramebufferUpdateRequest {
        incremental: bool,
        rect: Rect,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Latin-1 text as sent (at most [`limits::MAX_CUT_TEXT`] bytes).
    ClientCutText(Vec<u8>),
    /// An Extended Clipboard message (ClientCutText with a negative
    /// length): its flags and what follows them (at most
    /// [`limits::MAX_CUT_TEXT`] bytes in all).
    ExtendedClipboard {
        flags: u32,
        payload: Vec<u8>,
    },
    /// EnableContinuousUpdates (150).
    EnableContinuousUpdates {
        enable: bool,
        rect: Rect,
    },
    /// ClientFence (248): its flags as sent (unknown bits included) and
    /// a payload of at most [`limits::MAX_FENCE_PAYLOAD`] bytes.
    Fence {
        flags: u32,
        payload: Vec<u8>,
    },
    /// An extended PointerEvent (marker bit 7 set, one more byte; only
    /// after the viewer listed ExtendedMouseButtons): bit n-1 of `buttons`
    /// is button n, 1-9 (8 back, 9 forward).
    ExtendedPointerEvent {
        buttons: u16,
        x: u16,
        y: u16,
    },
    /// QEMU Extended Key Event (255, subtype 0): a key with the scan code
    /// that produced it (QEMU's numbering: the XT scan code, 0x80 set for
    /// an 0xE0-prefixed one; `None` when 0 or beyond 0xff).
    QemuKeyEvent {
        down: bool,
        keysym: u32,
        scancode: Option<u8>,
    },
    /// SetDesktopSize (251): the server answers with ExtendedDesktopSize.
    SetDesktopSize {
        width: u16,
        height: u16,
        screens: u8,
    },
}

/// Decode one client message from the front of `buf`.
/// `Ok(Some((msg, n)))`: a whole message of `n` bytes; `Ok(None)`: need more bytes.
pub fn decode_client_message(buf: &[u8]) -> Result<Option<(ClientMessage, usize)>, ProtocolError> {
    decode_client_message_ext(buf, false)
}

/// Like [`decode_client_message`]; `extended_pointer`: the viewer listed
/// ExtendedMouseButtons, so a PointerEvent with bit 7 set has one more
/// byte.
pub fn decode_client_message_ext(
    buf: &[u8],
    extended_pointer: bool,
) -> Result<Option<(ClientMessage, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    let msg = match decode(&mut r, extended_pointer)? {
        Some(m) => m,
        None => return Ok(None),
    };
    Ok(Some((msg, r.used())))
}

fn decode(
    r: &mut Reader<'_>,
    extended_pointer: bool,
) -> Result<Option<ClientMessage>, ProtocolError> {
    let Some(kind) = r.u8() else { return Ok(None) };
    macro_rules! need {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let msg = match kind {
        0 => {
            need!(r.skip(3));
            let pf = PixelFormat::from_bytes(&need!(r.array::<16>()));
            pf.validate()?;
            ClientMessage::SetPixelFormat(pf)
        }
        2 => {
            need!(r.skip(1));
            let count = need!(r.u16()) as usize;
            let bytes = need!(r.take(count * 4));
            let mut kept: Vec<i32> = Vec::with_capacity(count.min(limits::MAX_ENCODINGS_KEPT));
            for c in bytes.chunks_exact(4) {
                let e = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                if kept.len() < limits::MAX_ENCODINGS_KEPT && !kept.contains(&e) {
                    kept.push(e);
                }
            }
            ClientMessage::SetEncodings(kept)
        }
        3 => {
            let incremental = need!(r.u8()) != 0;
            let x = need!(r.u16());
            let y = need!(r.u16());
            let w = need!(r.u16());
            let h = need!(r.u16());
            ClientMessage::FramebufferUpdateRequest {
                incremental,
                rect: Rect::new(x, y, w, h),
            }
        }
        4 => {
            let down = need!(r.u8()) != 0;
            need!(r.skip(2));
            let keysym = need!(r.u32());
            ClientMessage::KeyEvent { down, keysym }
        }
        5 => {
            let buttons = need!(r.u8());
            let x = need!(r.u16());
            let y = need!(r.u16());
            if extended_pointer && buttons & 0x80 != 0 {
                // Buttons 8 and 9 in the extra byte's bits 0-1 (2-7 are
                // reserved and ignored).
                let high = need!(r.u8()) & 0x03;
                ClientMessage::ExtendedPointerEvent {
                    buttons: (u16::from(high) << 7) | u16::from(buttons & 0x7f),
                    x,
                    y,
                }
            } else {
                ClientMessage::PointerEvent { buttons, x, y }
            }
        }
        6 => {
            need!(r.skip(3));
            let len = need!(r.u32());
            if len & 0x8000_0000 != 0 {
                // Extended Clipboard: abs(length) bytes, flags first.
                let n = (len as i32).unsigned_abs();
                if !(4..=limits::MAX_CUT_TEXT).contains(&n) {
                    return Err(ProtocolError::LimitExceeded {
                        what: "extended cut text length",
                        got: n as u64,
                        limit: limits::MAX_CUT_TEXT as u64,
                    });
                }
                let flags = need!(r.u32());
                let payload = need!(r.take(n as usize - 4)).to_vec();
                return Ok(Some(ClientMessage::ExtendedClipboard { flags, payload }));
            }
            // Checked before waiting for the text: a huge length closes at once.
            if len > limits::MAX_CUT_TEXT {
                return Err(ProtocolError::LimitExceeded {
                    what: "cut text length",
                    got: len as u64,
                    limit: limits::MAX_CUT_TEXT as u64,
                });
            }
            ClientMessage::ClientCutText(need!(r.take(len as usize)).to_vec())
        }
        150 => {
            let enable = need!(r.u8()) != 0;
            let x = need!(r.u16());
            let y = need!(r.u16());
            let w = need!(r.u16());
            let h = need!(r.u16());
            ClientMessage::EnableContinuousUpdates {
                enable,
                rect: Rect::new(x, y, w, h),
            }
        }
        248 => {
            need!(r.skip(3));
            let flags = need!(r.u32());
            let len = need!(r.u8()) as usize;
            // Checked before waiting for the payload.
            if len > limits::MAX_FENCE_PAYLOAD {
                return Err(ProtocolError::LimitExceeded {
                    what: "fence payload length",
                    got: len as u64,
                    limit: limits::MAX_FENCE_PAYLOAD as u64,
                });
            }
            let payload = need!(r.take(len)).to_vec();
            ClientMessage::Fence { flags, payload }
        }
        251 => {
            need!(r.skip(1));
            let width = need!(r.u16());
            let height = need!(r.u16());
            let screens = need!(r.u8());
            need!(r.skip(1));
            if screens as usize > limits::MAX_SCREENS {
                return Err(ProtocolError::LimitExceeded {
                    what: "screen count",
                    got: screens as u64,
                    limit: limits::MAX_SCREENS as u64,
                });
            }
            need!(r.skip(16 * screens as usize));
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            }
        }
        255 => {
            // QEMU client messages; only the extended key event is known.
            let subtype = need!(r.u8());
            if subtype != 0 {
                return Err(ProtocolError::UnknownMessage(255));
            }
            let down = need!(r.u16()) != 0;
            let keysym = need!(r.u32());
            let code = need!(r.u32());
            ClientMessage::QemuKeyEvent {
                down,
                keysym,
                scancode: u8::try_from(code).ok().filter(|&c| c != 0),
            }
        }
        other => return Err(ProtocolError::UnknownMessage(other)),
    };
    Ok(Some(msg))
}

/// Serialise client messages (used by tests, fuzzers and benchmarks that act as a client).
pub fn encode_client_message(m: &ClientMessage, out: &mut Vec<u8>) {
    match m {
        ClientMessage::SetPixelFormat(pf) => {
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&pf.to_bytes());
        }
        ClientMessage::SetEncodings(e) => {
            out.extend_from_slice(&[2, 0]);
            out.put_u16(e.len() as u16);
            for v in e {
                out.put_i32(*v);
            }
        }
        ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
            out.extend_from_slice(&[3, *incremental as u8]);
            for v in [rect.x, rect.y, rect.w, rect.h] {
                out.put_u16(v);
            }
        }
        ClientMessage::KeyEvent { down, keysym } => {
            out.extend_from_slice(&[4, *down as u8, 0, 0]);
            out.put_u32(*keysym);
        }
        ClientMessage::ExtendedPointerEvent { buttons, x, y } => {
            out.extend_from_slice(&[5, (*buttons & 0x7f) as u8 | 0x80]);
            out.put_u16(*x);
            out.put_u16(*y);
            out.push((*buttons >> 7) as u8 & 0x03);
        }
        ClientMessage::QemuKeyEvent {
            down,
            keysym,
            scancode,
        } => {
            out.extend_from_slice(&[255, 0]);
            out.put_u16(*down as u16);
            out.put_u32(*keysym);
            out.put_u32(scancode.unwrap_or(0) as u32);
        }
        ClientMessage::PointerEvent { buttons, x, y } => {
            out.extend_from_slice(&[5, *buttons]);
            out.put_u16(*x);
            out.put_u16(*y);
        }
        ClientMessage::ClientCutText(t) => {
            out.extend_from_slice(&[6, 0, 0, 0]);
            out.put_u32(t.len() as u32);
            out.extend_from_slice(t);
        }
        ClientMessage::ExtendedClipboard { flags, payload } => {
            out.extend_from_slice(&[6, 0, 0, 0]);
            write_ext_clipboard_body(*flags, payload, out);
        }
        ClientMessage::EnableContinuousUpdates { enable, rect } => {
            out.extend_from_slice(&[150, *enable as u8]);
            for v in [rect.x, rect.y, rect.w, rect.h] {
                out.put_u16(v);
            }
        }
        ClientMessage::Fence { flags, payload } => write_fence(248, *flags, payload, out),
        ClientMessage::SetDesktopSize {
            width,
            height,
            screens,
        } => {
            out.extend_from_slice(&[251, 0]);
            out.put_u16(*width);
            out.put_u16(*height);
            out.extend_from_slice(&[*screens, 0]);
            for i in 0..*screens {
                out.put_u32(i as u32);
                out.extend_from_slice(&[0; 4]);
                out.put_u16(*width);
                out.put_u16(*height);
                out.put_u32(0);
            }
        }
    }
}

// ---- server-to-client messages ----

/// Header of a FramebufferUpdate with `nrects` rectangles (0xFFFF with LastRect).
pub fn write_update_header(nrects: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0]);
    out.put_u16(nrects);
}

/// A rectangle header: position, size, encoding.
pub fn write_rect_header(r: Rect, encoding: i32, out: &mut Vec<u8>) {
    for v in [r.x, r.y, r.w, r.h] {
        out.put_u16(v);
    }
    out.put_i32(encoding);
}

/// SetColourMapEntries with native colours (each 8-bit channel widened to 16).
pub fn write_colour_map(first: u16, colours: &[u32], out: &mut Vec<u8>) {
    out.extend_from_slice(&[1, 0]);
    out.put_u16(first);
    out.put_u16(colours.len() as u16);
    for &c in colours {
        for ch in [(c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff] {
            out.put_u16((ch * 257) as u16);
        }
    }
}

pub fn write_bell(out: &mut Vec<u8>) {
    out.push(2);
}

/// Fence flag bits (rfbproto "ClientFence").
pub mod fence {
    pub const BLOCK_BEFORE: u32 = 1 << 0;
    pub const BLOCK_AFTER: u32 = 1 << 1;
    pub const SYNC_NEXT: u32 = 1 << 2;
    pub const REQUEST: u32 = 1 << 31;
    /// The synchronisation bits this server understands; a response
    /// clears every other bit.
    pub const UNDERSTOOD: u32 = BLOCK_BEFORE | BLOCK_AFTER | SYNC_NEXT;
}

/// A ClientFence (248) or ServerFence (248) body; `payload` is cut to
/// [`limits::MAX_FENCE_PAYLOAD`] bytes.
fn write_fence(kind: u8, flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(limits::MAX_FENCE_PAYLOAD)];
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.put_u32(flags);
    out.push(payload.len() as u8);
    out.extend_from_slice(payload);
}

/// ServerFence.
pub fn write_server_fence(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    write_fence(248, flags, payload, out);
}

/// EndOfContinuousUpdates.
pub fn write_end_of_continuous_updates(out: &mut Vec<u8>) {
    out.push(150);
}

/// Length (negative), flags and payload of an Extended Clipboard message.
fn write_ext_clipboard_body(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    let n = 4 + payload.len() as i32;
    out.put_u32((-n) as u32);
    out.put_u32(flags);
    out.extend_from_slice(payload);
}

/// ServerCutText in the Extended Clipboard format (a negative length).
pub fn write_server_ext_clipboard(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[3, 0, 0, 0]);
    write_ext_clipboard_body(flags, payload, out);
}

/// ServerCutText with Latin-1 bytes.
pub fn write_server_cut_text(text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[3, 0, 0, 0]);
    out.put_u32(text.len() as u32);
    out.extend_from_slice(text);
}

/// ServerInit: size, native pixel format, name.
pub fn write_server_init(width: u16, height: u16, pf: &PixelFormat, name: &str, out: &mut Vec<u8>) {
    out.put_u16(width);
    out.put_u16(height);
    out.extend_from_slice(&pf.to_bytes());
    let name = truncate_utf8(name, limits::MAX_DESKTOP_NAME);
    out.put_u32(name.len() as u32);
    out.extend_from_slice(name.as_bytes());
}

pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<ClientMessage> {
        vec![
            ClientMessage::SetPixelFormat(PixelFormat::RGB565),
            ClientMessage::SetEncodings(vec![16, 0, -239]),
            ClientMessage::FramebufferUpdateRequest {
                incremental: true,
                rect: Rect::new(1, 2, 3, 4),
            },
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0x20ac,
            },
            ClientMessage::PointerEvent {
                buttons: 5,
                x: 9,
                y: 10,
            },
            ClientMessage::ClientCutText(b"hello".to_vec()),
            ClientMessage::QemuKeyEvent {
                down: true,
                keysym: 0x40,
                scancode: Some(0x10),
            },
            ClientMessage::QemuKeyEvent {
                down: false,
                keysym: 0,
                scancode: None,
            },
            ClientMessage::SetDesktopSize {
                width: 640,
                height: 480,
                screens: 1,
            },
            ClientMessage::EnableContinuousUpdates {
                enable: true,
                rect: Rect::new(0, 0, 640, 480),
            },
            ClientMessage::Fence {
                flags: fence::REQUEST | fence::SYNC_NEXT,
                payload: vec![7; limits::MAX_FENCE_PAYLOAD],
            },
            ClientMessage::Fence {
                flags: 0,
                payload: Vec::new(),
            },
        ]
    }

    #[test]
    fn fence_payload_over_64_bytes_is_refused_before_it_arrives() {
        for len in [65u8, 200, 255] {
            let b = [248, 0, 0, 0, 0x80, 0, 0, 0, len];
            assert!(matches!(
                decode_client_message(&b),
                Err(ProtocolError::LimitExceeded { .. })
            ));
        }
    }

    #[test]
    fn every_message_round_trips_and_never_decodes_partially() {
        for m in all_messages() {
            let mut b = Vec::new();
            encode_client_message(&m, &mut b);
            for cut in 0..b.len() {
                assert_eq!(
                    decode_client_message(&b[..cut]),
                    Ok(None),
                    "{m:?} cut {cut}"
                );
            }
            assert_eq!(decode_client_message(&b), Ok(Some((m.clone(), b.len()))));
        }
    }

    #[test]
    fn huge_cut_text_is_refused_before_the_text_arrives() {
        for len in [
            0xFFFF_FFFFu32,
            0x8000_0000,
            0x7FFF_FFFF,
            limits::MAX_CUT_TEXT + 1,
        ] {
            let mut b = vec![6, 0, 0, 0];
            b.extend_from_slice(&len.to_be_bytes());
            assert!(matches!(
                decode_client_message(&b),
                Err(ProtocolError::LimitExceeded { .. })
            ));
        }
    }

    #[test]
    fn extended_pointer_events_only_once_listed() {
        // Back (button 8) held with left: marker, left, then bit 0 of the
        // extra byte.
        let m = ClientMessage::ExtendedPointerEvent {
            buttons: 0x81,
            x: 7,
            y: 8,
        };
        let mut b = Vec::new();
        encode_client_message(&m, &mut b);
        assert_eq!(b, [5, 0x81, 0, 7, 0, 8, 1]);
        for cut in 0..b.len() {
            assert_eq!(decode_client_message_ext(&b[..cut], true), Ok(None));
        }
        assert_eq!(decode_client_message_ext(&b, true), Ok(Some((m, 7))));
        // Forward (9); reserved bits ignored.
        let f = [5, 0x80, 0, 1, 0, 2, 0xfe];
        assert_eq!(
            decode_client_message_ext(&f, true),
            Ok(Some((
                ClientMessage::ExtendedPointerEvent {
                    buttons: 0x100,
                    x: 1,
                    y: 2
                },
                7
            )))
        );
        // Not listed: bit 7 is button 8 of a plain 6-byte PointerEvent.
        assert_eq!(
            decode_client_message_ext(&b, false),
            Ok(Some((
                ClientMessage::PointerEvent {
                    buttons: 0x81,
                    x: 7,
                    y: 8
                },
                6
            )))
        );
    }

    #[test]
    fn qemu_messages_are_validated() {
        // An unknown QEMU subtype closes the connection.
        assert_eq!(
            decode_client_message(&[255, 1, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]),
            Err(ProtocolError::UnknownMessage(255))
        );
        // A scan code beyond QEMU's numbering is no scan code.
        let b = [255, 0, 0, 1, 0, 0, 0, 0x61, 0xff, 0, 0, 0x1e];
        assert_eq!(
            decode_client_message(&b),
            Ok(Some((
                ClientMessage::QemuKeyEvent {
                    down: true,
                    keysym: 0x61,
                    scancode: None
                },
                12
            )))
        );
    }

    #[test]
    fn set_encodings_is_deduplicated_and_capped() {
        let mut e: Vec<i32> = (0..65535).collect();
        e.insert(1, 0);
        e.truncate(65535);
        let mut b = Vec::new();
        encode_client_message(&ClientMessage::SetEncodings(e), &mut b);
        let (m, n) = decode_client_message(&b).unwrap().unwrap();
        assert_eq!(n, b.len());
        match m {
            ClientMessage::SetEncodings(k) => {
                assert_eq!(k.len(), limits::MAX_ENCODINGS_KEPT);
                assert_eq!(k[..3], [0, 1, 2]);
            }
            _ => panic!(),
        }
    }
}
