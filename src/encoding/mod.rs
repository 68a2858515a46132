//! Encodings: one file each, all behind [`Encoder`]. An encoder call is a
//! function of (frame, rectangle, client pixel format, levels, its own zlib
//! state) and nothing else, so rectangles can later be encoded in parallel.

pub mod cursor;
pub mod raw;

use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;

/// Per-update parameters every encoder sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeParams {
    pub pf: PixelFormat,
    /// Compression level 0..=9 when the client sent one.
    pub compress_level: Option<u8>,
    /// JPEG quality 0..=9 when the client sent one (enables lossy Tight).
    pub quality_level: Option<u8>,
}

pub trait Encoder: Send {
    /// The encoding number written in rectangle headers.
    fn encoding(&self) -> i32;
    /// Append rectangles (header and data) that together cover `rect` of
    /// `frame` exactly; return how many were written. `rect` lies inside
    /// the frame and is not empty.
    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        params: &EncodeParams,
        out: &mut Vec<u8>,
    ) -> usize;
}

/// Real encodings this server implements, in the server's own order of
/// preference (used when the client lists none).
pub const SUPPORTED: &[i32] = &[enc::RAW];

/// What a client asked for in SetEncodings, interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEncodings {
    /// The first real encoding in the client's list that we implement (Raw if none).
    pub preferred: i32,
    pub copy_rect: bool,
    pub desktop_size: bool,
    pub extended_desktop_size: bool,
    pub cursor: bool,
    pub last_rect: bool,
    pub desktop_name: bool,
    pub compress_level: Option<u8>,
    pub quality_level: Option<u8>,
}

impl Default for ClientEncodings {
    fn default() -> Self {
        ClientEncodings::from_list(&[])
    }
}

impl ClientEncodings {
    pub fn from_list(list: &[i32]) -> ClientEncodings {
        let preferred = list
            .iter()
            .copied()
            .find(|e| SUPPORTED.contains(e))
            .unwrap_or(enc::RAW);
        let has = |e: i32| list.contains(&e);
        let level = |lo: i32, hi: i32| {
            list.iter()
                .find(|&&e| (lo..=hi).contains(&e))
                .map(|&e| (e - lo) as u8)
        };
        ClientEncodings {
            preferred,
            copy_rect: has(enc::COPY_RECT),
            desktop_size: has(enc::DESKTOP_SIZE),
            extended_desktop_size: has(enc::EXTENDED_DESKTOP_SIZE),
            cursor: has(enc::CURSOR),
            last_rect: has(enc::LAST_RECT),
            desktop_name: has(enc::DESKTOP_NAME),
            compress_level: level(enc::COMPRESS_LEVEL_0, enc::COMPRESS_LEVEL_9),
            quality_level: level(enc::QUALITY_LEVEL_0, enc::QUALITY_LEVEL_9),
        }
    }
}

/// A new encoder for `encoding` (one of [`SUPPORTED`]).
pub fn new_encoder(encoding: i32) -> Box<dyn Encoder> {
    match encoding {
        enc::RAW => Box::new(raw::RawEncoder),
        other => {
            debug_assert!(false, "encoding {other} is not implemented");
            Box::new(raw::RawEncoder)
        }
    }
}

/// The encoders of one connection. Each is created on first use and kept for
/// the life of the connection, because zlib streams must persist across
/// updates (and across SetEncodings changes) as the protocol requires.
#[derive(Default)]
pub struct ConnectionEncoders {
    encoders: Vec<Box<dyn Encoder>>,
}

impl ConnectionEncoders {
    pub fn get(&mut self, encoding: i32) -> &mut dyn Encoder {
        let i = match self.encoders.iter().position(|e| e.encoding() == encoding) {
            Some(i) => i,
            None => {
                self.encoders.push(new_encoder(encoding));
                self.encoders.len() - 1
            }
        };
        self.encoders[i].as_mut()
    }
}

/// CopyRect (1): the client copies `src` position's pixels to `dst`.
pub fn write_copy_rect(dst: Rect, src_x: u16, src_y: u16, out: &mut Vec<u8>) {
    crate::rfb::messages::write_rect_header(dst, enc::COPY_RECT, out);
    out.extend_from_slice(&src_x.to_be_bytes());
    out.extend_from_slice(&src_y.to_be_bytes());
}
