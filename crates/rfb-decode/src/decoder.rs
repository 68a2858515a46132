//! The FramebufferUpdate loop: rectangle headers, pseudo-encodings, and the
//! encodings simple enough to need no file of their own (Raw, CopyRect,
//! RRE, zlib).

use crate::encodings as enc;
use crate::inflate::inflate;
use crate::reader::Reader;
use crate::{hextile, tight, zrle, ClientFramebuffer, DecodeError, Rect};
use flate2::Decompress;
use std::collections::BTreeMap;

/// Largest framebuffer a DesktopSize rectangle may resize to (by default).
pub const DEFAULT_MAX_FB_PIXELS: usize = 4096 * 4096;

/// What the decoder has seen, for tests that check which paths an encoder took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Rectangles per encoding number (pseudo-encodings included).
    pub rects: BTreeMap<i32, u32>,
    /// ZRLE tiles per subencoding byte.
    pub zrle_tiles: BTreeMap<u8, u32>,
    /// Hextile tiles per subencoding mask.
    pub hextile_tiles: BTreeMap<u8, u32>,
    /// Tight rectangles per kind: "fill", "jpeg", "full", "palette" (and
    /// of those "mono" or "indexed"), "gradient".
    pub tight_kinds: BTreeMap<&'static str, u32>,
}

/// Decodes FramebufferUpdate bodies, keeping the zlib streams of one
/// connection (zlib, ZRLE and Tight's four) between rectangles and updates.
pub struct Decoder {
    zlib: Decompress,
    zrle: Decompress,
    pub(crate) tight: [Decompress; 4],
    pub(crate) buf: Vec<u8>,
    scratch: Vec<u32>,
    /// DesktopSize rectangles larger than this many pixels are rejected.
    pub max_fb_pixels: usize,
    pub stats: DecodeStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            zlib: Decompress::new(true),
            zrle: Decompress::new(true),
            tight: std::array::from_fn(|_| Decompress::new(true)),
            buf: Vec::new(),
            scratch: Vec::new(),
            max_fb_pixels: DEFAULT_MAX_FB_PIXELS,
            stats: DecodeStats::default(),
        }
    }

    /// Decode a whole FramebufferUpdate message ("FramebufferUpdate":
    /// message-type 0, padding, number-of-rectangles, rectangles). Returns
    /// the bytes consumed.
    pub fn decode_message(
        &mut self,
        msg: &[u8],
        fb: &mut ClientFramebuffer,
    ) -> Result<usize, DecodeError> {
        let mut r = Reader::new(msg);
        if r.u8()? != 0 {
            return Err(DecodeError::Invalid("not a FramebufferUpdate"));
        }
        r.u8()?;
        let n = r.u16()?;
        Ok(4 + self.decode_update(&msg[4..], n, fb)?)
    }

    /// Decode `nrects` rectangles (headers and data) from `body` into `fb`,
    /// whose pixel format is the client's. Stops early at a LastRect
    /// rectangle. Returns the number of bytes consumed; on error `fb` may
    /// hold a partly drawn update and the zlib streams are out of step.
    pub fn decode_update(
        &mut self,
        body: &[u8],
        nrects: u16,
        fb: &mut ClientFramebuffer,
    ) -> Result<usize, DecodeError> {
        let mut r = Reader::new(body);
        for _ in 0..nrects {
            let rect = Rect::new(r.u16()?, r.u16()?, r.u16()?, r.u16()?);
            let encoding = r.u32()? as i32;
            *self.stats.rects.entry(encoding).or_default() += 1;
            match encoding {
                // "LastRect Pseudo-encoding": no more rectangles follow.
                enc::LAST_RECT => break,
                // "DesktopSize Pseudo-encoding": the header is the message.
                enc::DESKTOP_SIZE => self.resize(fb, rect.w, rect.h)?,
                // "ExtendedDesktopSize Pseudo-encoding": number-of-screens,
                // 3 bytes of padding, 16 bytes a screen.
                enc::EXTENDED_DESKTOP_SIZE => {
                    let screens = r.u8()? as usize;
                    r.take(3)?;
                    r.take(screens * 16)?;
                    self.resize(fb, rect.w, rect.h)?;
                }
                // "DesktopName Pseudo-encoding": U32 length, name.
                enc::DESKTOP_NAME => {
                    let len = r.u32()? as usize;
                    r.take(len)?;
                }
                // "Cursor Pseudo-encoding": width*height PIXELs, then a
                // bitmask of floor((width+7)/8)*height bytes.
                enc::CURSOR => {
                    let (w, h) = (rect.w as u64, rect.h as u64);
                    // u64: no overflow even where usize is 32 bits.
                    let len = w * h * fb.pf.bytes_per_pixel() as u64 + w.div_ceil(8) * h;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                    r.take(len)?;
                }
                // "X Cursor Pseudo-encoding": two RGB colours, bitmap and
                // mask, none of it when the size is 0.
                enc::X_CURSOR => {
                    let (w, h) = (rect.w as usize, rect.h as usize);
                    if w * h > 0 {
                        r.take(6 + 2 * w.div_ceil(8) * h)?;
                    }
                }
                // "Cursor With Alpha Pseudo-encoding": an encoding (S32),
                // then the shape in it as RGBA. Raw is all a server needs.
                enc::CURSOR_WITH_ALPHA => {
                    let inner = r.u32()? as i32;
                    if inner != enc::RAW {
                        return Err(DecodeError::Unsupported(inner));
                    }
                    let len = rect.w as u64 * rect.h as u64 * 4;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                    r.take(len)?;
                }
                // Positions and confirmations: the header is the message.
                enc::POINTER_POS
                | enc::VMWARE_CURSOR_POSITION
                | enc::QEMU_EXTENDED_KEY_EVENT
                | enc::EXTENDED_MOUSE_BUTTONS => {}
                // "QEMU LED State Pseudo-encoding": one U8.
                enc::LED_STATE => {
                    r.take(1)?;
                }
                // "VMware LED state Pseudo-encoding": one U32.
                enc::VMWARE_LED_STATE => {
                    r.take(4)?;
                }
                _ => {
                    fb.check(rect)?;
                    self.decode_rect(&mut r, rect, encoding, fb)?;
                }
            }
        }
        Ok(r.pos)
    }

    fn resize(&mut self, fb: &mut ClientFramebuffer, w: u16, h: u16) -> Result<(), DecodeError> {
        if w as usize * h as usize > self.max_fb_pixels {
            return Err(DecodeError::TooLarge);
        }
        *fb = ClientFramebuffer::new(w, h, fb.pf);
        Ok(())
    }

    fn decode_rect(
        &mut self,
        r: &mut Reader,
        rect: Rect,
        encoding: i32,
        fb: &mut ClientFramebuffer,
    ) -> Result<(), DecodeError> {
        let pf = fb.pf;
        let (x, y, w, h) = (
            rect.x as usize,
            rect.y as usize,
            rect.w as usize,
            rect.h as usize,
        );
        match encoding {
            // "Raw Encoding": width*height PIXELs, left to right, top to bottom.
            enc::RAW => {
                let data = r.take(w * h * pf.bytes_per_pixel())?;
                fb.put_raw(x, y, w, h, data);
            }
            // "CopyRect Encoding": src-x-position, src-y-position (U16); the
            // source is read as it was before the copy, overlap included.
            enc::COPY_RECT => {
                let (sx, sy) = (r.u16()?, r.u16()?);
                fb.check(Rect::new(sx, sy, rect.w, rect.h))?;
                let stride = fb.width as usize;
                self.scratch.clear();
                for row in 0..h {
                    let s = (sy as usize + row) * stride + sx as usize;
                    self.scratch.extend_from_slice(&fb.pixels[s..s + w]);
                }
                for (row, src) in self.scratch.chunks_exact(w.max(1)).enumerate().take(h) {
                    let d = (y + row) * stride + x;
                    fb.pixels[d..d + w].copy_from_slice(src);
                }
            }
            // "RRE Encoding": number-of-subrectangles (U32), background
            // PIXEL, then per subrectangle a PIXEL and x, y, w, h (U16).
            enc::RRE => {
                let n = r.u32()? as usize;
                let bg = r.pixel(&pf)?;
                // Check the whole count against the input before looping.
                if n.saturating_mul(pf.bytes_per_pixel() + 8) > r.remaining() {
                    return Err(DecodeError::Truncated);
                }
                fb.fill(x, y, w, h, bg);
                for _ in 0..n {
                    let c = r.pixel(&pf)?;
                    let (sx, sy, sw, sh) = (
                        r.u16()? as usize,
                        r.u16()? as usize,
                        r.u16()? as usize,
                        r.u16()? as usize,
                    );
                    if sx + sw > w || sy + sh > h {
                        return Err(DecodeError::Invalid(
                            "RRE subrectangle outside its rectangle",
                        ));
                    }
                    fb.fill(x + sx, y + sy, sw, sh, c);
                }
            }
            enc::HEXTILE => hextile::decode(r, x, y, w, h, fb, &mut self.stats)?,
            // "zlib Encoding": U32 length, then zlib data (one stream for
            // the connection) that inflates to Raw pixels.
            enc::ZLIB => {
                let len = r.u32()? as usize;
                let data = r.take(len)?;
                let want = w * h * pf.bytes_per_pixel();
                inflate(&mut self.zlib, data, &mut self.buf, want)?;
                if self.buf.len() != want {
                    return Err(DecodeError::Invalid("zlib rectangle has the wrong size"));
                }
                fb.put_raw(x, y, w, h, &self.buf);
            }
            // "ZRLE Encoding": U32 length, then zlib data (one stream for
            // the connection) holding 64x64 tiles.
            enc::ZRLE => {
                let len = r.u32()? as usize;
                let data = r.take(len)?;
                let cpix = pf.cpixel_size();
                // The most a rectangle can take: per tile a subencoding
                // byte and a 127-colour palette, per pixel a CPIXEL and a
                // run-length byte.
                let tiles = w.div_ceil(64) * h.div_ceil(64);
                let cap = tiles * (1 + 127 * cpix) + w * h * (cpix + 1);
                inflate(&mut self.zrle, data, &mut self.buf, cap)?;
                let buf = std::mem::take(&mut self.buf);
                let res = zrle::decode(&buf, x, y, w, h, fb, &mut self.stats);
                self.buf = buf;
                res?;
            }
            enc::TIGHT => tight::decode(self, r, x, y, w, h, fb)?,
            other => return Err(DecodeError::Unsupported(other)),
        }
        Ok(())
    }
}
