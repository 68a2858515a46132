//! A strict decoder of RFB FramebufferUpdate messages, written from the RFB
//! specification (rfbproto.rst, repository rfbproto/rfbproto) for
//! ticketvnc's tests, fuzzing and `ticketvnc bench`'s viewer.
//!
//! It decodes every encoding the server writes (Raw, CopyRect, RRE,
//! Hextile, zlib, Tight, ZRLE) and frames the pseudo-encodings it sends.
//! It depends on nothing of the server: its pixel formats, rectangles and
//! encoding numbers are its own, each taken from the section of the
//! specification named beside it, so an encoder that misreads the
//! specification does not pass its round trip by sharing the mistake.
//!
//! It is strict (it refuses what a lenient viewer would let through) and it
//! treats its input as hostile: every length and count is checked against
//! the input and the framebuffer before use, decompression is bounded, and
//! errors are returned, never panics.
//!
//! ```
//! use rfb_decode::{ClientFramebuffer, Decoder, PixelFormat};
//! // 32 bits a pixel, depth 24, little endian, true colour, 8 bits a
//! // channel at shifts 16/8/0 (the PIXEL_FORMAT bytes of ServerInit).
//! let pf = PixelFormat::from_wire(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
//!     .unwrap();
//! let mut fb = ClientFramebuffer::new(4, 4, pf);
//! let mut dec = Decoder::new();
//! // One Raw rectangle of 1x1 at (0,0).
//! let body = [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0x56, 0x34, 0x12, 0];
//! assert_eq!(dec.decode_update(&body, 1, &mut fb).unwrap(), body.len());
//! assert_eq!(fb.get(0, 0), 0x123456);
//! ```

mod decoder;
pub mod encodings;
mod framebuffer;
mod hextile;
mod inflate;
mod jpeg;
mod pixel;
mod reader;
mod tight;
mod zrle;

pub use decoder::{DecodeStats, Decoder, DEFAULT_MAX_FB_PIXELS};
pub use framebuffer::{ClientFramebuffer, Rect};
pub use pixel::PixelFormat;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("input ends inside a rectangle")]
    Truncated,
    #[error("rectangle {0:?} lies outside the framebuffer")]
    OutOfBounds(Rect),
    #[error("unsupported encoding {0}")]
    Unsupported(i32),
    #[error("invalid data: {0}")]
    Invalid(&'static str),
    #[error("zlib stream is corrupt")]
    Zlib,
    #[error("data or framebuffer larger than allowed")]
    TooLarge,
    #[error("jpeg: {0}")]
    Jpeg(String),
}
