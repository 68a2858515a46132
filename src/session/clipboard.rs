//! Clipboard text for one viewer: classic Latin-1 cut text, or the
//! Extended Clipboard pseudo-encoding (UTF-8 text, RFB community spec
//! "Extended Clipboard Pseudo-Encoding") for viewers that ask for it.
//!
//! Sans-IO: it gets the viewer's messages and the desktop's clipboard text
//! and writes what to send into a buffer; the session decides (by rights)
//! whether it may be called at all.

use crate::rfb::limits;
use crate::rfb::ServerMessages;
use std::io::Write;

/// Flag bits of an Extended Clipboard message.
pub mod flags {
    pub const TEXT: u32 = 1;
    pub const FORMATS: u32 = 0xffff;
    pub const CAPS: u32 = 1 << 24;
    pub const REQUEST: u32 = 1 << 25;
    pub const PEEK: u32 = 1 << 26;
    pub const NOTIFY: u32 = 1 << 27;
    pub const PROVIDE: u32 = 1 << 28;
}

/// Largest unsolicited text a viewer is assumed to take when it sends no
/// caps (the specification's default).
const DEFAULT_TEXT_MAX: u32 = 20 << 20;

/// What went wrong with a viewer's Extended Clipboard message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClipboardError {
    #[error("extended clipboard caps without the sizes of their formats")]
    ShortCaps,
    #[error("extended clipboard data that is not a zlib stream")]
    BadZlib,
    #[error("extended clipboard data larger than {0} bytes unpacked")]
    TooLarge(usize),
    #[error("extended clipboard data cut short")]
    Truncated,
}

/// One viewer's clipboard state.
#[derive(Debug, Clone, Default)]
pub struct ViewerClipboard {
    /// `Some` once the viewer asked for the Extended Clipboard: its caps.
    ext: Option<Caps>,
}

#[derive(Debug, Clone, Copy)]
struct Caps {
    /// Formats and actions the viewer takes.
    flags: u32,
    /// Largest text it takes unasked.
    text_max: u32,
}

impl ViewerClipboard {
    pub fn extended(&self) -> bool {
        self.ext.is_some()
    }

    /// The viewer's SetEncodings included the pseudo-encoding: our caps go
    /// out (on every such SetEncodings, as the specification asks).
    pub fn enable_extended(&mut self, out: &mut impl ServerMessages) {
        self.ext.get_or_insert(Caps {
            flags: flags::TEXT | flags::REQUEST | flags::NOTIFY | flags::PROVIDE,
            text_max: DEFAULT_TEXT_MAX,
        });
        let ours = flags::CAPS
            | flags::TEXT
            | flags::REQUEST
            | flags::PEEK
            | flags::NOTIFY
            | flags::PROVIDE;
        // Text of up to MAX_CUT_TEXT may come unasked; no other format.
        out.send_ext_clipboard(ours, &limits::MAX_CUT_TEXT.to_be_bytes());
    }

    /// The desktop's clipboard changed: tell the viewer.
    pub fn announce(&self, text: &str, out: &mut impl ServerMessages) {
        match self.ext {
            None => out.send_cut_text(&to_latin1(text)),
            Some(c) => {
                let size = text.len() as u64 + 1;
                if c.flags & flags::PROVIDE != 0 && size <= u64::from(c.text_max) {
                    provide(text, out);
                } else if c.flags & flags::NOTIFY != 0 {
                    out.send_ext_clipboard(flags::NOTIFY | flags::TEXT, &[]);
                }
            }
        }
    }

    /// An Extended Clipboard message from the viewer. `desktop` is the
    /// desktop's current clipboard text (for requests). Returns text the
    /// viewer provided, for the desktop's clipboard.
    pub fn on_message(
        &mut self,
        f: u32,
        payload: &[u8],
        desktop: Option<&str>,
        out: &mut impl ServerMessages,
    ) -> Result<Option<String>, ClipboardError> {
        let Some(caps) = self.ext.as_mut() else {
            // Not negotiated: nothing of ours to answer with.
            return Ok(None);
        };
        if f & flags::CAPS != 0 {
            let formats = (f & flags::FORMATS).count_ones() as usize;
            if payload.len() < formats * 4 {
                return Err(ClipboardError::ShortCaps);
            }
            caps.flags = f & !flags::CAPS;
            caps.text_max = if f & flags::TEXT != 0 {
                u32::from_be_bytes(payload[..4].try_into().unwrap())
            } else {
                0
            };
            return Ok(None);
        }
        if f & flags::PROVIDE != 0 {
            return provided_text(f, payload);
        }
        if f & flags::REQUEST != 0 && f & flags::TEXT != 0 {
            if let Some(t) = desktop {
                if caps.flags & flags::PROVIDE != 0 {
                    provide(t, out);
                }
            }
        } else if f & flags::PEEK != 0 {
            if caps.flags & flags::NOTIFY != 0 {
                let have = if desktop.is_some() { flags::TEXT } else { 0 };
                out.send_ext_clipboard(flags::NOTIFY | have, &[]);
            }
        } else if f & flags::NOTIFY != 0 && f & flags::TEXT != 0 && caps.flags & flags::REQUEST != 0
        {
            // The viewer has new text: ask for it.
            out.send_ext_clipboard(flags::REQUEST | flags::TEXT, &[]);
        }
        Ok(None)
    }
}

/// A provide message with `text` (CRLF line ends, NUL-terminated, in a
/// zlib stream of its own).
fn provide(text: &str, out: &mut impl ServerMessages) {
    let text = &text[..floor_char_boundary(text, limits::MAX_CUT_TEXT as usize - 1)];
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let mut data = Vec::with_capacity(crlf.len() + 5);
    data.extend_from_slice(&(crlf.len() as u32 + 1).to_be_bytes());
    data.extend_from_slice(crlf.as_bytes());
    data.push(0);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(&data);
    let packed = z.finish().unwrap_or_default();
    out.send_ext_clipboard(flags::PROVIDE | flags::TEXT, &packed);
}

/// The text of a viewer's provide message (others formats skipped).
fn provided_text(f: u32, payload: &[u8]) -> Result<Option<String>, ClipboardError> {
    // A bound on what the stream may unpack to: the text limit plus the
    // size words of every format.
    let limit = limits::MAX_CUT_TEXT as usize + 64;
    let data = inflate(payload, limit)?;
    let mut rest = &data[..];
    let mut text = None;
    for bit in 0..16 {
        if f & (1 << bit) == 0 {
            continue;
        }
        if rest.len() < 4 {
            return Err(ClipboardError::Truncated);
        }
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        rest = &rest[4..];
        if rest.len() < n {
            return Err(ClipboardError::Truncated);
        }
        if bit == 0 {
            let raw = &rest[..n];
            let raw = match raw.iter().position(|&b| b == 0) {
                Some(end) => &raw[..end],
                None => raw,
            };
            text = Some(String::from_utf8_lossy(raw).replace("\r\n", "\n"));
        }
        rest = &rest[n..];
    }
    Ok(text)
}

/// Unpacks a zlib stream of at most `limit` bytes. TigerVNC ends its
/// streams with a sync flush, not a finished stream, so running out of
/// input after whole blocks is the normal end, not an error.
fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, ClipboardError> {
    let mut z = flate2::Decompress::new(true);
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            let room = (limit + 1).saturating_sub(out.len()).max(1);
            out.reserve((out.len() / 2).max(4096).min(room));
        }
        let (in_before, out_before) = (z.total_in(), out.len());
        let status = z
            .decompress_vec(
                &input[z.total_in() as usize..],
                &mut out,
                flate2::FlushDecompress::Sync,
            )
            .map_err(|_| ClipboardError::BadZlib)?;
        if out.len() > limit {
            return Err(ClipboardError::TooLarge(limit));
        }
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        let room_left = out.len() < out.capacity();
        if z.total_in() as usize == input.len() && room_left {
            return Ok(out);
        }
        if z.total_in() == in_before && out.len() == out_before && room_left {
            // No progress with room to spare: not a zlib stream we can read.
            return Err(ClipboardError::BadZlib);
        }
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Text as Latin-1 for classic RFB cut text: characters outside Latin-1 are
/// transliterated where a common ASCII form exists, `?` otherwise, so text
/// is converted rather than dropped.
pub fn to_latin1(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let code = c as u32;
        if code <= 0xff {
            out.push(code as u8);
            continue;
        }
        let sub: &str = match c {
            '€' => "EUR",
            '‘' | '’' | '‚' | '′' => "'",
            '“' | '”' | '„' | '″' => "\"",
            '–' | '—' | '−' | '‐' => "-",
            '…' => "...",
            '•' | '·' => "*",
            '™' => "(TM)",
            '\u{2002}'..='\u{200a}' | '\u{202f}' => " ",
            '\u{200b}' | '\u{feff}' => "",
            _ => "?",
        };
        out.extend_from_slice(sub.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfb::messages::{decode_client_message, encode_client_message, ClientMessage};
    use std::io::Read;

    /// What a viewer would send: a provide message with `text`.
    fn viewer_provide(text: &str) -> (u32, Vec<u8>) {
        let mut data = Vec::new();
        data.extend_from_slice(&(text.len() as u32 + 1).to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        data.push(0);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        (flags::PROVIDE | flags::TEXT, z.finish().unwrap())
    }

    /// Decode a ServerCutText in extended form: (flags, payload).
    fn server_ext(out: &[u8]) -> (u32, Vec<u8>) {
        assert_eq!(out[0], 3);
        let n = (i32::from_be_bytes(out[4..8].try_into().unwrap())).unsigned_abs() as usize;
        assert_eq!(out.len(), 8 + n);
        (
            u32::from_be_bytes(out[8..12].try_into().unwrap()),
            out[12..].to_vec(),
        )
    }

    #[test]
    fn utf8_text_round_trips_with_crlf_and_nul() {
        let mut c = ViewerClipboard::default();
        let mut out = Vec::new();
        c.enable_extended(&mut out);
        let (f, sizes) = server_ext(&out);
        assert_eq!(f & flags::CAPS, flags::CAPS);
        assert_eq!(sizes, limits::MAX_CUT_TEXT.to_be_bytes());
        out.clear();
        let text = "Grüße € Привет 日本\nzwei";
        c.announce(text, &mut out);
        let (f, packed) = server_ext(&out);
        assert_eq!(f, flags::PROVIDE | flags::TEXT);
        // The viewer's side of the same stream format reads it back.
        assert_eq!(provided_text(f, &packed).unwrap().as_deref(), Some(text));
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&packed[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert!(raw.ends_with(b"\r\nzwei\0"), "CRLF and NUL on the wire");

        let (f, p) = viewer_provide("Привет\r\nWelt");
        let got = c.on_message(f, &p, None, &mut Vec::new()).unwrap();
        assert_eq!(got.as_deref(), Some("Привет\nWelt"));
    }

    #[test]
    fn a_sync_flushed_stream_is_read_as_tigervnc_sends_it() {
        let text = "Ελληνικά €";
        let mut data = (text.len() as u32 + 1).to_be_bytes().to_vec();
        data.extend_from_slice(text.as_bytes());
        data.push(0);
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        let mut packed = Vec::with_capacity(256);
        z.compress_vec(&data, &mut packed, flate2::FlushCompress::Sync)
            .unwrap();
        let got = provided_text(flags::PROVIDE | flags::TEXT, &packed).unwrap();
        assert_eq!(got.as_deref(), Some(text));
    }

    #[test]
    fn notify_request_and_peek_get_their_answers() {
        let mut c = ViewerClipboard::default();
        let mut out = Vec::new();
        c.enable_extended(&mut out);
        out.clear();
        // The viewer has text: we ask for it.
        c.on_message(flags::NOTIFY | flags::TEXT, &[], None, &mut out)
            .unwrap();
        assert_eq!(server_ext(&out).0, flags::REQUEST | flags::TEXT);
        out.clear();
        // It asks for ours.
        c.on_message(flags::REQUEST | flags::TEXT, &[], Some("x"), &mut out)
            .unwrap();
        assert_eq!(server_ext(&out).0, flags::PROVIDE | flags::TEXT);
        out.clear();
        c.on_message(flags::PEEK, &[], None, &mut out).unwrap();
        assert_eq!(server_ext(&out).0, flags::NOTIFY);
        // Caps that take no unsolicited text: a change is only notified.
        c.on_message(
            flags::CAPS | flags::TEXT | flags::NOTIFY | flags::REQUEST,
            &0u32.to_be_bytes(),
            None,
            &mut Vec::new(),
        )
        .unwrap();
        out.clear();
        c.announce("new", &mut out);
        assert_eq!(server_ext(&out).0, flags::NOTIFY | flags::TEXT);
    }

    #[test]
    fn hostile_provides_are_errors_not_panics() {
        let mut c = ViewerClipboard::default();
        c.enable_extended(&mut Vec::new());
        let mut out = Vec::new();
        let provide = flags::PROVIDE | flags::TEXT;
        assert_eq!(
            c.on_message(provide, b"not zlib", None, &mut out),
            Err(ClipboardError::BadZlib)
        );
        // A zlib bomb: 64 MiB of zeros packs into about 64 KiB.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&(60u32 << 20).to_be_bytes()).unwrap();
        for _ in 0..64 {
            z.write_all(&vec![0u8; 1 << 20]).unwrap();
        }
        let bomb = z.finish().unwrap();
        assert!(matches!(
            c.on_message(provide, &bomb, None, &mut out),
            Err(ClipboardError::TooLarge(_))
        ));
        // Text just inside the limit unpacks (growth stops at the limit).
        let big = "ä".repeat(limits::MAX_CUT_TEXT as usize / 2 - 8);
        let (f, p) = viewer_provide(&big);
        assert_eq!(c.on_message(f, &p, None, &mut out).unwrap(), Some(big));
        // A size word larger than the data.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&100u32.to_be_bytes()).unwrap();
        z.write_all(b"short").unwrap();
        assert_eq!(
            c.on_message(provide, &z.finish().unwrap(), None, &mut out),
            Err(ClipboardError::Truncated)
        );
        assert_eq!(
            c.on_message(flags::CAPS | flags::TEXT, &[], None, &mut out),
            Err(ClipboardError::ShortCaps)
        );
        // Without the pseudo-encoding, extended messages are not answered.
        let mut plain = ViewerClipboard::default();
        let (f, p) = viewer_provide("x");
        assert_eq!(plain.on_message(f, &p, None, &mut out), Ok(None));
    }

    #[test]
    fn the_decoder_reads_negative_lengths_as_extended_messages() {
        let m = ClientMessage::ExtendedClipboard {
            flags: flags::NOTIFY | flags::TEXT,
            payload: vec![],
        };
        let mut b = Vec::new();
        encode_client_message(&m, &mut b);
        assert_eq!(&b[4..8], &(-4i32).to_be_bytes());
        assert_eq!(decode_client_message(&b), Ok(Some((m, b.len()))));
        // Lengths that cannot hold the flags, or beyond the limit, close.
        for len in [-1i32, -3, i32::MIN, -(limits::MAX_CUT_TEXT as i32) - 1] {
            let mut b = vec![6, 0, 0, 0];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0; 8]);
            assert!(decode_client_message(&b).is_err(), "{len}");
        }
    }

    #[test]
    fn latin1_conversion_keeps_or_transliterates() {
        assert_eq!(to_latin1("Grüße"), b"Gr\xfc\xdfe");
        assert_eq!(to_latin1("5 € – “ok”"), b"5 EUR - \"ok\"");
        assert_eq!(to_latin1("日本"), b"??");
    }
}
