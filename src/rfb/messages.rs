//! The wire form of every RFB message, one module per message with its
//! decode and its encode side by side (a message that shares its body in
//! both directions, like a fence or cut text, has one module for both).
//! Client messages are decoded into [`ClientMessage`] and encoded back (by
//! tests, fuzzers and the benchmark's viewer); server messages are encoded
//! (the `write_*` names below are those modules' `encode`s) and decoded
//! into [`ServerMessage`] for tests and tools that act as a viewer.
//!
//! Decoding never consumes a partial message: it returns `Ok(None)` until
//! every byte of the message is there, and it checks each length against
//! its limit *before* waiting for the bytes.

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
    let msg = match ClientMessage::decode(&mut r, extended_pointer)? {
        Some(m) => m,
        None => return Ok(None),
    };
    Ok(Some((msg, r.used())))
}

/// Serialise client messages (used by tests, fuzzers and benchmarks that act as a client).
pub fn encode_client_message(m: &ClientMessage, out: &mut Vec<u8>) {
    m.encode(out)
}

/// `Some(v)` gives `v`; `None` (the bytes have not all arrived) returns
/// `Ok(None)` from the decoder it is used in.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// A rectangle as x, y, width, height (U16 each).
fn put_rect(r: Rect, out: &mut Vec<u8>) {
    for v in [r.x, r.y, r.w, r.h] {
        out.put_u16(v);
    }
}

fn rect(r: &mut Reader<'_>) -> Option<Rect> {
    Some(Rect::new(r.u16()?, r.u16()?, r.u16()?, r.u16()?))
}

impl ClientMessage {
    /// Decode one message from `r` (the message type first); the dispatch
    /// by type only: each message's wire form is in its module.
    fn decode(
        r: &mut Reader<'_>,
        extended_pointer: bool,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        let Some(kind) = r.u8() else { return Ok(None) };
        match kind {
            set_pixel_format::TYPE => set_pixel_format::decode(r),
            set_encodings::TYPE => set_encodings::decode(r),
            update_request::TYPE => update_request::decode(r),
            key_event::TYPE => key_event::decode(r),
            pointer_event::TYPE => pointer_event::decode(r, extended_pointer),
            cut_text::CLIENT => Ok(need!(cut_text::decode(r)?).into_client()),
            continuous_updates::TYPE => continuous_updates::decode(r),
            fence::TYPE => {
                let (flags, payload) = need!(fence::decode(r)?);
                Ok(Some(ClientMessage::Fence { flags, payload }))
            }
            set_desktop_size::TYPE => set_desktop_size::decode(r),
            qemu::TYPE => qemu::decode(r),
            other => Err(ProtocolError::UnknownMessage(other)),
        }
    }

    /// Append this message's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::SetPixelFormat(pf) => set_pixel_format::encode(pf, out),
            ClientMessage::SetEncodings(e) => set_encodings::encode(e, out),
            ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
                update_request::encode(*incremental, *rect, out)
            }
            ClientMessage::KeyEvent { down, keysym } => key_event::encode(*down, *keysym, out),
            ClientMessage::PointerEvent { buttons, x, y } => {
                pointer_event::encode(*buttons, *x, *y, out)
            }
            ClientMessage::ExtendedPointerEvent { buttons, x, y } => {
                pointer_event::encode_extended(*buttons, *x, *y, out)
            }
            ClientMessage::ClientCutText(t) => cut_text::encode(cut_text::CLIENT, t, out),
            ClientMessage::ExtendedClipboard { flags, payload } => {
                cut_text::encode_extended(cut_text::CLIENT, *flags, payload, out)
            }
            ClientMessage::EnableContinuousUpdates { enable, rect } => {
                continuous_updates::encode_enable(*enable, *rect, out)
            }
            ClientMessage::Fence { flags, payload } => fence::encode(*flags, payload, out),
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            } => set_desktop_size::encode(*width, *height, *screens, out),
            ClientMessage::QemuKeyEvent {
                down,
                keysym,
                scancode,
            } => qemu::encode_key(*down, *keysym, *scancode, out),
        }
    }
}

// ---- client-to-server messages, one module each ----

/// SetPixelFormat (0): three bytes of padding and the 16-byte format,
/// validated on decode.
pub mod set_pixel_format {
    use super::*;
    pub const TYPE: u8 = 0;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
        need!(r.skip(3));
        let pf = PixelFormat::from_bytes(&need!(r.array::<16>()));
        pf.validate()?;
        Ok(Some(ClientMessage::SetPixelFormat(pf)))
    }

    pub fn encode(pf: &PixelFormat, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, 0, 0, 0]);
        out.extend_from_slice(&pf.to_bytes());
    }
}

/// SetEncodings (2): a U16 count and that many S32 encodings. All of them
/// are read (the count bounds the bytes to 256 KiB), at most
/// [`limits::MAX_ENCODINGS_KEPT`] distinct ones kept.
pub mod set_encodings {
    use super::*;
    pub const TYPE: u8 = 2;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
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
        Ok(Some(ClientMessage::SetEncodings(kept)))
    }

    pub fn encode(encodings: &[i32], out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, 0]);
        out.put_u16(encodings.len() as u16);
        for v in encodings {
            out.put_i32(*v);
        }
    }
}

/// FramebufferUpdateRequest (3): incremental flag and a rectangle.
pub mod update_request {
    use super::*;
    pub const TYPE: u8 = 3;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
        let incremental = need!(r.u8()) != 0;
        let rect = need!(rect(r));
        Ok(Some(ClientMessage::FramebufferUpdateRequest {
            incremental,
            rect,
        }))
    }

    pub fn encode(incremental: bool, r: Rect, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, incremental as u8]);
        put_rect(r, out);
    }
}

/// KeyEvent (4): down flag, two bytes of padding, the keysym.
pub mod key_event {
    use super::*;
    pub const TYPE: u8 = 4;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
        let down = need!(r.u8()) != 0;
        need!(r.skip(2));
        let keysym = need!(r.u32());
        Ok(Some(ClientMessage::KeyEvent { down, keysym }))
    }

    pub fn encode(down: bool, keysym: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, down as u8, 0, 0]);
        out.put_u32(keysym);
    }
}

/// PointerEvent (5): the button mask and the position; with
/// ExtendedMouseButtons listed, a mask with bit 7 set is followed by one
/// more byte whose bits 0-1 are buttons 8 and 9.
pub mod pointer_event {
    use super::*;
    pub const TYPE: u8 = 5;

    pub(super) fn decode(
        r: &mut Reader<'_>,
        extended_pointer: bool,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        let buttons = need!(r.u8());
        let x = need!(r.u16());
        let y = need!(r.u16());
        if extended_pointer && buttons & 0x80 != 0 {
            // Buttons 8 and 9 in the extra byte's bits 0-1 (2-7 are
            // reserved and ignored).
            let high = need!(r.u8()) & 0x03;
            return Ok(Some(ClientMessage::ExtendedPointerEvent {
                buttons: (u16::from(high) << 7) | u16::from(buttons & 0x7f),
                x,
                y,
            }));
        }
        Ok(Some(ClientMessage::PointerEvent { buttons, x, y }))
    }

    pub fn encode(buttons: u8, x: u16, y: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, buttons]);
        out.put_u16(x);
        out.put_u16(y);
    }

    /// The extended form: bits 0-6 of `buttons` with the marker bit, then
    /// bits 7-8 in the extra byte.
    pub fn encode_extended(buttons: u16, x: u16, y: u16, out: &mut Vec<u8>) {
        encode((buttons & 0x7f) as u8 | 0x80, x, y, out);
        out.push((buttons >> 7) as u8 & 0x03);
    }
}

/// ClientCutText (6) and ServerCutText (3): the same body both ways.
/// Three bytes of padding and a U32 length; a length with the top bit set
/// is an Extended Clipboard message of abs(length) bytes, flags first.
/// Either length is checked against [`limits::MAX_CUT_TEXT`] before the
/// text is waited for.
pub mod cut_text {
    use super::*;
    pub const CLIENT: u8 = 6;
    pub const SERVER: u8 = 3;

    /// A decoded cut-text body.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum CutText {
        /// Latin-1 text.
        Latin1(Vec<u8>),
        /// Extended Clipboard: flags and what follows them.
        Extended { flags: u32, payload: Vec<u8> },
    }

    impl CutText {
        pub(super) fn into_client(self) -> Option<ClientMessage> {
            Some(match self {
                CutText::Latin1(t) => ClientMessage::ClientCutText(t),
                CutText::Extended { flags, payload } => {
                    ClientMessage::ExtendedClipboard { flags, payload }
                }
            })
        }
    }

    /// The body after the message type.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<CutText>, ProtocolError> {
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
            return Ok(Some(CutText::Extended { flags, payload }));
        }
        // Checked before waiting for the text: a huge length closes at once.
        if len > limits::MAX_CUT_TEXT {
            return Err(ProtocolError::LimitExceeded {
                what: "cut text length",
                got: len as u64,
                limit: limits::MAX_CUT_TEXT as u64,
            });
        }
        Ok(Some(CutText::Latin1(need!(r.take(len as usize)).to_vec())))
    }

    /// Latin-1 text; `kind` is [`CLIENT`] or [`SERVER`].
    pub fn encode(kind: u8, text: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.put_u32(text.len() as u32);
        out.extend_from_slice(text);
    }

    /// Extended Clipboard: the negative length, the flags, the payload.
    pub fn encode_extended(kind: u8, flags: u32, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&[kind, 0, 0, 0]);
        let n = 4 + payload.len() as i32;
        out.put_u32((-n) as u32);
        out.put_u32(flags);
        out.extend_from_slice(payload);
    }

    /// ServerCutText with Latin-1 bytes.
    pub fn encode_server(text: &[u8], out: &mut Vec<u8>) {
        encode(SERVER, text, out)
    }

    /// ServerCutText in the Extended Clipboard format (a negative length).
    pub fn encode_server_extended(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
        encode_extended(SERVER, flags, payload, out)
    }
}

/// EnableContinuousUpdates (150, client) and EndOfContinuousUpdates (150,
/// server: the type byte alone).
pub mod continuous_updates {
    use super::*;
    pub const TYPE: u8 = 150;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
        let enable = need!(r.u8()) != 0;
        let rect = need!(rect(r));
        Ok(Some(ClientMessage::EnableContinuousUpdates {
            enable,
            rect,
        }))
    }

    pub fn encode_enable(enable: bool, r: Rect, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, enable as u8]);
        put_rect(r, out);
    }

    /// EndOfContinuousUpdates.
    pub fn encode_end(out: &mut Vec<u8>) {
        out.push(TYPE);
    }
}

/// ClientFence and ServerFence (248): the same body both ways. Three bytes
/// of padding, U32 flags, a U8 length and at most
/// [`limits::MAX_FENCE_PAYLOAD`] bytes of payload.
pub mod fence {
    use super::*;
    pub const TYPE: u8 = 248;

    pub const BLOCK_BEFORE: u32 = 1 << 0;
    pub const BLOCK_AFTER: u32 = 1 << 1;
    pub const SYNC_NEXT: u32 = 1 << 2;
    pub const REQUEST: u32 = 1 << 31;
    /// The synchronisation bits this server understands; a response
    /// clears every other bit.
    pub const UNDERSTOOD: u32 = BLOCK_BEFORE | BLOCK_AFTER | SYNC_NEXT;

    /// The body after the type: flags (unknown bits included) and payload.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<(u32, Vec<u8>)>, ProtocolError> {
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
        Ok(Some((flags, payload)))
    }

    /// A fence (either direction); `payload` is cut to
    /// [`limits::MAX_FENCE_PAYLOAD`] bytes.
    pub fn encode(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
        let payload = &payload[..payload.len().min(limits::MAX_FENCE_PAYLOAD)];
        out.extend_from_slice(&[TYPE, 0, 0, 0]);
        out.put_u32(flags);
        out.push(payload.len() as u8);
        out.extend_from_slice(payload);
    }
}

/// SetDesktopSize (251): width, height, a screen count (at most
/// [`limits::MAX_SCREENS`], checked before the screens are waited for)
/// and 16 bytes per screen, which are skipped.
pub mod set_desktop_size {
    use super::*;
    pub const TYPE: u8 = 251;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
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
        Ok(Some(ClientMessage::SetDesktopSize {
            width,
            height,
            screens,
        }))
    }

    /// `screens` screens, each the whole desktop, ids 0, 1, ...
    pub fn encode(width: u16, height: u16, screens: u8, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, 0]);
        out.put_u16(width);
        out.put_u16(height);
        out.extend_from_slice(&[screens, 0]);
        for i in 0..screens {
            out.put_u32(i as u32);
            out.extend_from_slice(&[0; 4]);
            out.put_u16(width);
            out.put_u16(height);
            out.put_u32(0);
        }
    }
}

/// QEMU client messages (255); only the Extended Key Event (subtype 0)
/// is known, any other subtype closes the connection.
pub mod qemu {
    use super::*;
    pub const TYPE: u8 = 255;
    pub const EXTENDED_KEY_EVENT: u8 = 0;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ClientMessage>, ProtocolError> {
        let subtype = need!(r.u8());
        if subtype != EXTENDED_KEY_EVENT {
            return Err(ProtocolError::UnknownMessage(TYPE));
        }
        let down = need!(r.u16()) != 0;
        let keysym = need!(r.u32());
        let code = need!(r.u32());
        Ok(Some(ClientMessage::QemuKeyEvent {
            down,
            keysym,
            scancode: u8::try_from(code).ok().filter(|&c| c != 0),
        }))
    }

    pub fn encode_key(down: bool, keysym: u32, scancode: Option<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, EXTENDED_KEY_EVENT]);
        out.put_u16(down as u16);
        out.put_u32(keysym);
        out.put_u32(scancode.unwrap_or(0) as u32);
    }
}

// ---- server-to-client messages ----

/// A decoded server message (for tests and tools acting as a viewer; the
/// server only encodes). A FramebufferUpdate is its header: its
/// rectangles follow, each a [`rect_header`] and its encoding's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    FramebufferUpdate {
        nrects: u16,
    },
    /// Each colour as sent: 16-bit red, green, blue.
    SetColourMapEntries {
        first: u16,
        colours: Vec<[u16; 3]>,
    },
    Bell,
    /// Latin-1 text (at most [`limits::MAX_CUT_TEXT`] bytes).
    ServerCutText(Vec<u8>),
    /// ServerCutText in the Extended Clipboard format.
    ExtendedClipboard {
        flags: u32,
        payload: Vec<u8>,
    },
    EndOfContinuousUpdates,
    /// ServerFence: flags and a payload of at most
    /// [`limits::MAX_FENCE_PAYLOAD`] bytes.
    Fence {
        flags: u32,
        payload: Vec<u8>,
    },
}

/// Decode one server message from the front of `buf`, with the same
/// limits as the client messages; `Ok(None)`: need more bytes.
pub fn decode_server_message(buf: &[u8]) -> Result<Option<(ServerMessage, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    let Some(kind) = r.u8() else { return Ok(None) };
    let msg = match kind {
        update_header::TYPE => need!(update_header::decode(&mut r)?),
        colour_map::TYPE => need!(colour_map::decode(&mut r)?),
        bell::TYPE => ServerMessage::Bell,
        cut_text::SERVER => match need!(cut_text::decode(&mut r)?) {
            cut_text::CutText::Latin1(t) => ServerMessage::ServerCutText(t),
            cut_text::CutText::Extended { flags, payload } => {
                ServerMessage::ExtendedClipboard { flags, payload }
            }
        },
        continuous_updates::TYPE => ServerMessage::EndOfContinuousUpdates,
        fence::TYPE => {
            let (flags, payload) = need!(fence::decode(&mut r)?);
            ServerMessage::Fence { flags, payload }
        }
        other => return Err(ProtocolError::UnknownMessage(other)),
    };
    Ok(Some((msg, r.used())))
}

/// FramebufferUpdate (0): padding and the number of rectangles that follow
/// (0xFFFF: up to a LastRect rectangle).
pub mod update_header {
    use super::*;
    pub const TYPE: u8 = 0;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ServerMessage>, ProtocolError> {
        need!(r.skip(1));
        let nrects = need!(r.u16());
        Ok(Some(ServerMessage::FramebufferUpdate { nrects }))
    }

    /// Header of a FramebufferUpdate with `nrects` rectangles (0xFFFF with
    /// LastRect); written by [`crate::rfb::UpdateBuf`] only.
    pub(in crate::rfb) fn encode(nrects: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, 0]);
        out.put_u16(nrects);
    }
}

/// A rectangle header inside a FramebufferUpdate: position, size, encoding.
pub mod rect_header {
    use super::*;

    /// Decode one rectangle header from the front of `buf`: the rectangle,
    /// its encoding and the header's length (12), or `None` until all 12
    /// bytes are there.
    pub fn decode(buf: &[u8]) -> Option<(Rect, i32, usize)> {
        let mut r = Reader::new(buf);
        let rect = rect(&mut r)?;
        let encoding = r.i32()?;
        Some((rect, encoding, r.used()))
    }

    /// A rectangle header: position, size, encoding; written by
    /// [`crate::rfb::UpdateBuf`] only.
    pub(in crate::rfb) fn encode(r: Rect, encoding: i32, out: &mut Vec<u8>) {
        put_rect(r, out);
        out.put_i32(encoding);
    }
}

/// SetColourMapEntries (1): padding, the first index, a U16 count and
/// 16-bit red, green, blue per colour (at most 65535 colours: bounded by
/// the count's width).
pub mod colour_map {
    use super::*;
    pub const TYPE: u8 = 1;

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Option<ServerMessage>, ProtocolError> {
        need!(r.skip(1));
        let first = need!(r.u16());
        let count = need!(r.u16()) as usize;
        let bytes = need!(r.take(count * 6));
        let colours = bytes
            .chunks_exact(6)
            .map(|c| {
                [
                    u16::from_be_bytes([c[0], c[1]]),
                    u16::from_be_bytes([c[2], c[3]]),
                    u16::from_be_bytes([c[4], c[5]]),
                ]
            })
            .collect();
        Ok(Some(ServerMessage::SetColourMapEntries { first, colours }))
    }

    /// SetColourMapEntries with native colours (each 8-bit channel widened to 16).
    pub fn encode(first: u16, colours: &[u32], out: &mut Vec<u8>) {
        out.extend_from_slice(&[TYPE, 0]);
        out.put_u16(first);
        out.put_u16(colours.len() as u16);
        for &c in colours {
            for ch in [(c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff] {
                out.put_u16((ch * 257) as u16);
            }
        }
    }
}

/// Bell (2): the type byte alone.
pub mod bell {
    pub const TYPE: u8 = 2;

    pub fn encode(out: &mut Vec<u8>) {
        out.push(TYPE);
    }
}

/// ServerInit: size, native pixel format, name (cut to
/// [`limits::MAX_DESKTOP_NAME`] bytes at a character boundary).
pub mod server_init {
    use super::*;

    pub fn encode(width: u16, height: u16, pf: &PixelFormat, name: &str, out: &mut Vec<u8>) {
        out.put_u16(width);
        out.put_u16(height);
        out.extend_from_slice(&pf.to_bytes());
        let name = truncate_utf8(name, limits::MAX_DESKTOP_NAME);
        out.put_u32(name.len() as u32);
        out.extend_from_slice(name.as_bytes());
    }
}

// The names the server, the session and the encoders use.
pub use bell::encode as write_bell;
pub use colour_map::encode as write_colour_map;
pub use continuous_updates::encode_end as write_end_of_continuous_updates;
pub use cut_text::encode_server as write_server_cut_text;
pub use cut_text::encode_server_extended as write_server_ext_clipboard;
pub use fence::encode as write_server_fence;
pub use server_init::encode as write_server_init;

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
            ClientMessage::ExtendedClipboard {
                flags: 1 << 24 | 1,
                payload: vec![0, 0, 0, 5],
            },
            ClientMessage::ExtendedClipboard {
                flags: 0,
                payload: Vec::new(),
            },
            ClientMessage::ClientCutText(Vec::new()),
        ]
    }

    /// Each server message with what a viewer decodes from it.
    fn all_server_messages() -> Vec<(Vec<u8>, ServerMessage)> {
        let one = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = Vec::new();
            f(&mut b);
            b
        };
        vec![
            (
                one(&|b| update_header::encode(3, b)),
                ServerMessage::FramebufferUpdate { nrects: 3 },
            ),
            (
                one(&|b| update_header::encode(0xFFFF, b)),
                ServerMessage::FramebufferUpdate { nrects: 0xFFFF },
            ),
            (
                one(&|b| write_colour_map(7, &[0x00ff_8001, 0], b)),
                ServerMessage::SetColourMapEntries {
                    first: 7,
                    colours: vec![[0xffff, 0x8080, 0x0101], [0, 0, 0]],
                },
            ),
            (one(&|b| write_bell(b)), ServerMessage::Bell),
            (
                one(&|b| write_server_cut_text(b"caf\xe9", b)),
                ServerMessage::ServerCutText(b"caf\xe9".to_vec()),
            ),
            (
                one(&|b| write_server_ext_clipboard(1 << 28 | 1, &[1, 2, 3], b)),
                ServerMessage::ExtendedClipboard {
                    flags: 1 << 28 | 1,
                    payload: vec![1, 2, 3],
                },
            ),
            (
                one(&|b| write_end_of_continuous_updates(b)),
                ServerMessage::EndOfContinuousUpdates,
            ),
            (
                one(&|b| write_server_fence(fence::REQUEST | fence::BLOCK_BEFORE, &[9], b)),
                ServerMessage::Fence {
                    flags: fence::REQUEST | fence::BLOCK_BEFORE,
                    payload: vec![9],
                },
            ),
            (
                // A fence payload is cut to the limit when sent.
                one(&|b| write_server_fence(0, &[1; 100], b)),
                ServerMessage::Fence {
                    flags: 0,
                    payload: vec![1; limits::MAX_FENCE_PAYLOAD],
                },
            ),
        ]
    }

    #[test]
    fn every_server_message_round_trips_and_never_decodes_partially() {
        for (b, m) in all_server_messages() {
            for cut in 0..b.len() {
                assert_eq!(
                    decode_server_message(&b[..cut]),
                    Ok(None),
                    "{m:?} cut {cut}"
                );
            }
            assert_eq!(decode_server_message(&b), Ok(Some((m, b.len()))));
        }
    }

    #[test]
    fn server_messages_keep_the_client_limits() {
        let mut b = vec![3, 0, 0, 0];
        b.extend_from_slice(&(limits::MAX_CUT_TEXT + 1).to_be_bytes());
        assert!(matches!(
            decode_server_message(&b),
            Err(ProtocolError::LimitExceeded {
                what: "cut text length",
                ..
            })
        ));
        assert!(matches!(
            decode_server_message(&[248, 0, 0, 0, 0, 0, 0, 0, 65]),
            Err(ProtocolError::LimitExceeded {
                what: "fence payload length",
                ..
            })
        ));
        assert_eq!(
            decode_server_message(&[4]),
            Err(ProtocolError::UnknownMessage(4))
        );
    }

    #[test]
    fn rect_headers_round_trip() {
        for (r, e) in [
            (Rect::new(1, 2, 3, 4), enc::RAW),
            (Rect::new(0xffff, 0, 0xffff, 1), enc::EXTENDED_CLIPBOARD),
            (Rect::default(), enc::LAST_RECT),
        ] {
            let mut b = Vec::new();
            rect_header::encode(r, e, &mut b);
            assert_eq!(b.len(), 12);
            assert_eq!(rect_header::decode(&b[..11]), None);
            assert_eq!(rect_header::decode(&b), Some((r, e, 12)));
        }
    }

    #[test]
    fn client_and_server_share_one_body_per_direction_pair() {
        // A ServerFence and a ClientFence differ in nothing: one module.
        let mut server = Vec::new();
        write_server_fence(fence::REQUEST, &[1, 2], &mut server);
        let mut client = Vec::new();
        encode_client_message(
            &ClientMessage::Fence {
                flags: fence::REQUEST,
                payload: vec![1, 2],
            },
            &mut client,
        );
        assert_eq!(server, client);
        // Cut text differs only in its type byte.
        let mut server = Vec::new();
        write_server_cut_text(b"x", &mut server);
        let mut client = Vec::new();
        encode_client_message(&ClientMessage::ClientCutText(b"x".to_vec()), &mut client);
        assert_eq!((server[0], client[0]), (cut_text::SERVER, cut_text::CLIENT));
        assert_eq!(server[1..], client[1..]);
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
