//! A decoder for every encoding the server writes (Raw, CopyRect, RRE,
//! Hextile, Zlib, Tight, ZRLE) plus the pseudo-encodings it sends. It exists
//! for tests and fuzzing: it is strict (it rejects what a sloppy encoder
//! could get away with) and it treats its input as hostile — every length
//! and count is checked against the input and the framebuffer before use,
//! decompression is bounded, and errors are returned, never panics.
//!
//! ```
//! use ticketvnc::encoding::decode::{ClientFramebuffer, Decoder};
//! use ticketvnc::rfb::PixelFormat;
//! let mut fb = ClientFramebuffer::new(4, 4, PixelFormat::NATIVE);
//! let mut dec = Decoder::new();
//! // One Raw rectangle of 1x1 at (0,0).
//! let body = [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0x56, 0x34, 0x12, 0];
//! assert_eq!(dec.decode_update(&body, 1, &mut fb).unwrap(), body.len());
//! assert_eq!(fb.get(0, 0), 0x123456);
//! ```

use super::tight::{tpixel_is_rgb, tpixel_size, MAX_WIDTH as TIGHT_MAX_WIDTH, MIN_TO_COMPRESS};
use super::{hextile, tight};
use crate::framebuffer::Rect;
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;
use flate2::{Decompress, FlushDecompress, Status};

/// Largest framebuffer a DesktopSize rectangle may resize to (by default).
pub const DEFAULT_MAX_FB_PIXELS: usize = 4096 * 4096;

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

/// A viewer's framebuffer: one pixel value of the client format per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFramebuffer {
    pub width: u16,
    pub height: u16,
    pub pf: PixelFormat,
    /// Row-major pixel values (as [`PixelFormat::from_native`] gives them).
    pub pixels: Vec<u32>,
}

impl ClientFramebuffer {
    pub fn new(width: u16, height: u16, pf: PixelFormat) -> ClientFramebuffer {
        ClientFramebuffer {
            width,
            height,
            pf,
            pixels: vec![0; width as usize * height as usize],
        }
    }

    pub fn get(&self, x: u16, y: u16) -> u32 {
        self.pixels[y as usize * self.width as usize + x as usize]
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, v: u32) {
        let stride = self.width as usize;
        for row in y..y + h {
            self.pixels[row * stride + x..row * stride + x + w].fill(v);
        }
    }

    fn check(&self, r: Rect) -> Result<(), DecodeError> {
        if r.right() > self.width as u32 || r.bottom() > self.height as u32 {
            return Err(DecodeError::OutOfBounds(r));
        }
        Ok(())
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.pos < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn pixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        Ok(pf.read_pixel(self.take(pf.bytes_per_pixel())?))
    }
    fn cpixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        Ok(pf.read_cpixel(self.take(pf.cpixel_size())?))
    }
    fn tpixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        if tpixel_is_rgb(pf) {
            let b = self.take(3)?;
            Ok(((b[0] as u32) << pf.red_shift)
                | ((b[1] as u32) << pf.green_shift)
                | ((b[2] as u32) << pf.blue_shift))
        } else {
            self.pixel(pf)
        }
    }
    /// Tight's compact length (1 to 3 bytes, at most 22 bits).
    fn compact_len(&mut self) -> Result<usize, DecodeError> {
        let b0 = self.u8()? as usize;
        let mut len = b0 & 0x7f;
        if b0 & 0x80 != 0 {
            let b1 = self.u8()? as usize;
            len |= (b1 & 0x7f) << 7;
            if b1 & 0x80 != 0 {
                len |= (self.u8()? as usize) << 14;
            }
        }
        Ok(len)
    }
}

/// Feed all of `input` to `d`, appending its output to `out` (cleared
/// first). More than `cap` bytes of output is an error, checked before it
/// is allocated.
fn inflate(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
) -> Result<(), DecodeError> {
    out.clear();
    let start = d.total_in();
    loop {
        if out.len() == out.capacity() {
            if out.len() > cap {
                return Err(DecodeError::TooLarge);
            }
            // Room for at most one byte beyond the cap, to detect overflow.
            let room = (cap + 1 - out.len()).min(out.len().max(4096));
            out.reserve_exact(room);
        }
        let before = (d.total_in(), out.len());
        let consumed = (d.total_in() - start) as usize;
        let status = d
            .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .map_err(|_| DecodeError::Zlib)?;
        if out.len() > cap {
            return Err(DecodeError::TooLarge);
        }
        if status == Status::StreamEnd {
            // RFB zlib streams never end; a client could not go on.
            return Err(DecodeError::Invalid("zlib stream ended"));
        }
        let consumed = (d.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
        if (d.total_in(), out.len()) == before && out.len() < out.capacity() {
            return Err(DecodeError::Zlib);
        }
    }
}

/// What the decoder has seen, for tests that check which paths an encoder took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Rectangles per encoding number (pseudo-encodings included).
    pub rects: std::collections::BTreeMap<i32, u32>,
    /// ZRLE tiles per subencoding byte.
    pub zrle_tiles: std::collections::BTreeMap<u8, u32>,
    /// Hextile tiles per subencoding mask.
    pub hextile_tiles: std::collections::BTreeMap<u8, u32>,
    /// Tight rectangles per kind: "fill", "jpeg", "mono", "indexed", "full", "gradient".
    pub tight_kinds: std::collections::BTreeMap<&'static str, u32>,
}

/// Decodes FramebufferUpdate bodies, keeping the zlib streams of one
/// connection (Zlib, ZRLE and Tight's four) between rectangles and updates.
pub struct Decoder {
    zlib: Decompress,
    zrle: Decompress,
    tight: [Decompress; 4],
    buf: Vec<u8>,
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

    /// Decode a whole FramebufferUpdate message (type 0, padding, count,
    /// rectangles). Returns the bytes consumed.
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
                enc::LAST_RECT => break,
                enc::DESKTOP_SIZE => self.resize(fb, rect.w, rect.h)?,
                enc::EXTENDED_DESKTOP_SIZE => {
                    let screens = r.u8()? as usize;
                    r.take(3)?;
                    r.take(screens * 16)?;
                    self.resize(fb, rect.w, rect.h)?;
                }
                enc::DESKTOP_NAME => {
                    let len = r.u32()? as usize;
                    r.take(len)?;
                }
                enc::CURSOR => {
                    let (w, h) = (rect.w as usize, rect.h as usize);
                    // u64: no overflow even where usize is 32 bits.
                    let len = (w as u64 * h as u64) * fb.pf.bytes_per_pixel() as u64
                        + w.div_ceil(8) as u64 * h as u64;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                    r.take(len)?;
                }
                enc::X_CURSOR => {
                    // Two RGB colours, then the bitmap and the mask.
                    let (w, h) = (rect.w as usize, rect.h as usize);
                    if w * h > 0 {
                        r.take(6 + 2 * w.div_ceil(8) * h)?;
                    }
                }
                enc::CURSOR_WITH_ALPHA => {
                    // The shape's own encoding, then its data; the server
                    // sends Raw RGBA (4 bytes a pixel, whatever the format).
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
                enc::LED_STATE => {
                    r.take(1)?;
                }
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
            enc::RAW => {
                let data = r.take(w * h * pf.bytes_per_pixel())?;
                put_raw(fb, x, y, w, h, data);
            }
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
            enc::HEXTILE => decode_hextile(r, x, y, w, h, fb, &mut self.stats)?,
            enc::ZLIB => {
                let len = r.u32()? as usize;
                let data = r.take(len)?;
                let want = w * h * pf.bytes_per_pixel();
                inflate(&mut self.zlib, data, &mut self.buf, want)?;
                if self.buf.len() != want {
                    return Err(DecodeError::Invalid("zlib rectangle has the wrong size"));
                }
                put_raw(fb, x, y, w, h, &self.buf);
            }
            enc::ZRLE => {
                let len = r.u32()? as usize;
                let data = r.take(len)?;
                let cpix = pf.cpixel_size();
                let tiles = w.div_ceil(64) * h.div_ceil(64);
                let cap = tiles * (1 + 127 * cpix) + w * h * (cpix + 1);
                inflate(&mut self.zrle, data, &mut self.buf, cap)?;
                let buf = std::mem::take(&mut self.buf);
                let res = decode_zrle(&buf, x, y, w, h, fb, &mut self.stats);
                self.buf = buf;
                res?;
            }
            enc::TIGHT => self.decode_tight(r, x, y, w, h, fb)?,
            other => return Err(DecodeError::Unsupported(other)),
        }
        Ok(())
    }

    fn decode_tight(
        &mut self,
        r: &mut Reader,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        fb: &mut ClientFramebuffer,
    ) -> Result<(), DecodeError> {
        let pf = fb.pf;
        if w > TIGHT_MAX_WIDTH {
            return Err(DecodeError::Invalid("Tight rectangle wider than 2048"));
        }
        let ctl = r.u8()?;
        for (i, z) in self.tight.iter_mut().enumerate() {
            if ctl & (1 << i) != 0 {
                z.reset(true);
            }
        }
        let kind = ctl >> 4;
        let kinds = &mut self.stats.tight_kinds;
        if kind == tight::FILL >> 4 {
            *kinds.entry("fill").or_default() += 1;
            let v = r.tpixel(&pf)?;
            fb.fill(x, y, w, h, v);
            return Ok(());
        }
        if kind == tight::JPEG >> 4 {
            *kinds.entry("jpeg").or_default() += 1;
            let len = r.compact_len()?;
            let data = r.take(len)?;
            return decode_jpeg(data, x, y, w, h, fb);
        }
        if kind > 7 {
            return Err(DecodeError::Invalid("Tight compression type"));
        }
        let stream = (kind & 3) as usize;
        let filter = if kind & 4 != 0 {
            r.u8()?
        } else {
            tight::FILTER_COPY
        };
        let name = match filter {
            tight::FILTER_COPY => "full",
            tight::FILTER_PALETTE => "palette",
            _ => "gradient",
        };
        *kinds.entry(name).or_default() += 1;
        let tpix = tpixel_size(&pf);
        let mut palette = [0u32; 256];
        let mut ncol = 0;
        let want = match filter {
            tight::FILTER_COPY | tight::FILTER_GRADIENT => w * h * tpix,
            tight::FILTER_PALETTE => {
                ncol = r.u8()? as usize + 1;
                let k = if ncol <= 2 { "mono" } else { "indexed" };
                *self.stats.tight_kinds.entry(k).or_default() += 1;
                for c in palette.iter_mut().take(ncol) {
                    *c = r.tpixel(&pf)?;
                }
                if ncol <= 2 {
                    w.div_ceil(8) * h
                } else {
                    w * h
                }
            }
            _ => return Err(DecodeError::Invalid("Tight filter")),
        };
        let buf = if want < MIN_TO_COMPRESS {
            r.take(want)?
        } else {
            let len = r.compact_len()?;
            let data = r.take(len)?;
            inflate(&mut self.tight[stream], data, &mut self.buf, want)?;
            if self.buf.len() != want {
                return Err(DecodeError::Invalid("Tight data has the wrong size"));
            }
            &self.buf[..]
        };
        let stride = fb.width as usize;
        match filter {
            tight::FILTER_PALETTE if ncol <= 2 => {
                let rb = w.div_ceil(8);
                for row in 0..h {
                    for col in 0..w {
                        let bit = (buf[row * rb + col / 8] >> (7 - col % 8)) & 1;
                        if bit as usize >= ncol {
                            return Err(DecodeError::Invalid("Tight palette index"));
                        }
                        fb.pixels[(y + row) * stride + x + col] = palette[bit as usize];
                    }
                }
            }
            tight::FILTER_PALETTE => {
                for row in 0..h {
                    for col in 0..w {
                        let i = buf[row * w + col] as usize;
                        if i >= ncol {
                            return Err(DecodeError::Invalid("Tight palette index"));
                        }
                        fb.pixels[(y + row) * stride + x + col] = palette[i];
                    }
                }
            }
            tight::FILTER_COPY => {
                let mut rd = Reader::new(buf);
                for row in 0..h {
                    for col in 0..w {
                        fb.pixels[(y + row) * stride + x + col] = rd.tpixel(&pf)?;
                    }
                }
            }
            _ => decode_gradient(buf, x, y, w, h, fb)?,
        }
        Ok(())
    }
}

/// Raw pixels (`w*h*bpp` bytes, already length-checked) into the framebuffer.
fn put_raw(fb: &mut ClientFramebuffer, x: usize, y: usize, w: usize, h: usize, data: &[u8]) {
    let pf = fb.pf;
    let bpp = pf.bytes_per_pixel();
    let stride = fb.width as usize;
    for row in 0..h {
        let src = &data[row * w * bpp..(row + 1) * w * bpp];
        let dst = &mut fb.pixels[(y + row) * stride + x..(y + row) * stride + x + w];
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
            *d = pf.read_pixel(s);
        }
    }
}

fn decode_hextile(
    r: &mut Reader,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
    stats: &mut DecodeStats,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    let bpp = pf.bytes_per_pixel();
    let mut bg: Option<u32> = None;
    let mut fg: Option<u32> = None;
    for ty in (0..h).step_by(16) {
        let th = (h - ty).min(16);
        for tx in (0..w).step_by(16) {
            let tw = (w - tx).min(16);
            let flags = r.u8()?;
            *stats.hextile_tiles.entry(flags).or_default() += 1;
            if flags & hextile::RAW != 0 {
                let data = r.take(tw * th * bpp)?;
                put_raw(fb, x + tx, y + ty, tw, th, data);
                // Strict: nothing carries over a raw tile.
                bg = None;
                fg = None;
                continue;
            }
            if flags & hextile::BACKGROUND_SPECIFIED != 0 {
                bg = Some(r.pixel(&pf)?);
            }
            if flags & hextile::FOREGROUND_SPECIFIED != 0 {
                fg = Some(r.pixel(&pf)?);
            }
            let b = bg.ok_or(DecodeError::Invalid("Hextile background undefined"))?;
            fb.fill(x + tx, y + ty, tw, th, b);
            if flags & hextile::ANY_SUBRECTS != 0 {
                let n = r.u8()?;
                let coloured = flags & hextile::SUBRECTS_COLOURED != 0;
                for _ in 0..n {
                    let c = if coloured {
                        r.pixel(&pf)?
                    } else {
                        fg.ok_or(DecodeError::Invalid("Hextile foreground undefined"))?
                    };
                    let xy = r.u8()? as usize;
                    let wh = r.u8()? as usize;
                    let (sx, sy, sw, sh) = (xy >> 4, xy & 15, (wh >> 4) + 1, (wh & 15) + 1);
                    if sx + sw > tw || sy + sh > th {
                        return Err(DecodeError::Invalid(
                            "Hextile subrectangle outside its tile",
                        ));
                    }
                    fb.fill(x + tx + sx, y + ty + sy, sw, sh, c);
                }
                if coloured {
                    // Strict: decoders disagree on what the foreground is now.
                    fg = None;
                }
            }
        }
    }
    Ok(())
}

fn read_run_len(r: &mut Reader, max: usize) -> Result<usize, DecodeError> {
    let mut len = 1usize;
    loop {
        let b = r.u8()? as usize;
        len += b;
        if len > max {
            return Err(DecodeError::Invalid("ZRLE run longer than its tile"));
        }
        if b != 255 {
            return Ok(len);
        }
    }
}

fn decode_zrle(
    buf: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
    stats: &mut DecodeStats,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    let stride = fb.width as usize;
    let mut r = Reader::new(buf);
    let mut tile = [0u32; 64 * 64];
    let mut palette = [0u32; 128];
    for ty in (0..h).step_by(64) {
        let th = (h - ty).min(64);
        for tx in (0..w).step_by(64) {
            let tw = (w - tx).min(64);
            let n = tw * th;
            let sub = r.u8()?;
            *stats.zrle_tiles.entry(sub).or_default() += 1;
            match sub {
                0 => {
                    for p in tile.iter_mut().take(n) {
                        *p = r.cpixel(&pf)?;
                    }
                }
                1 => {
                    let v = r.cpixel(&pf)?;
                    tile[..n].fill(v);
                }
                2..=16 => {
                    let k = sub as usize;
                    for c in palette.iter_mut().take(k) {
                        *c = r.cpixel(&pf)?;
                    }
                    let bits = match k {
                        2 => 1,
                        3..=4 => 2,
                        _ => 4,
                    };
                    let rb = (tw * bits).div_ceil(8);
                    for row in 0..th {
                        let bytes = r.take(rb)?;
                        for col in 0..tw {
                            let bit = col * bits;
                            let i = ((bytes[bit / 8] >> (8 - bits - bit % 8)) as usize)
                                & ((1 << bits) - 1);
                            if i >= k {
                                return Err(DecodeError::Invalid("ZRLE palette index"));
                            }
                            tile[row * tw + col] = palette[i];
                        }
                    }
                }
                17..=127 => return Err(DecodeError::Invalid("ZRLE subencoding")),
                128 => {
                    let mut i = 0;
                    while i < n {
                        let v = r.cpixel(&pf)?;
                        let len = read_run_len(&mut r, n - i)?;
                        tile[i..i + len].fill(v);
                        i += len;
                    }
                }
                _ => {
                    let k = sub as usize - 128;
                    for c in palette.iter_mut().take(k) {
                        *c = r.cpixel(&pf)?;
                    }
                    let mut i = 0;
                    while i < n {
                        let b = r.u8()?;
                        let idx = (b & 127) as usize;
                        if idx >= k {
                            return Err(DecodeError::Invalid("ZRLE palette index"));
                        }
                        let len = if b & 128 != 0 {
                            read_run_len(&mut r, n - i)?
                        } else {
                            1
                        };
                        tile[i..i + len].fill(palette[idx]);
                        i += len;
                    }
                }
            }
            for row in 0..th {
                let d = (y + ty + row) * stride + x + tx;
                fb.pixels[d..d + tw].copy_from_slice(&tile[row * tw..row * tw + tw]);
            }
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("trailing ZRLE data"));
    }
    Ok(())
}

/// Tight's gradient filter: each colour component is predicted from its
/// left, upper and upper-left neighbours (clamped to the component range).
fn decode_gradient(
    buf: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    if !pf.true_colour {
        return Err(DecodeError::Invalid(
            "Tight gradient on a colour-map format",
        ));
    }
    let stride = fb.width as usize;
    let maxes = [pf.red_max as i32, pf.green_max as i32, pf.blue_max as i32];
    let shifts = [pf.red_shift, pf.green_shift, pf.blue_shift];
    let rgb = tpixel_is_rgb(&pf);
    let mut rd = Reader::new(buf);
    let mut prev_row = vec![[0i32; 3]; w];
    let mut this_row = vec![[0i32; 3]; w];
    for row in 0..h {
        for col in 0..w {
            let diff = if rgb {
                let b = rd.take(3)?;
                [b[0] as i32, b[1] as i32, b[2] as i32]
            } else {
                let v = rd.pixel(&pf)?;
                std::array::from_fn(|c| ((v >> shifts[c]) as i32) & maxes[c])
            };
            let mut out = [0i32; 3];
            for c in 0..3 {
                let left = if col > 0 { this_row[col - 1][c] } else { 0 };
                let up = prev_row[col][c];
                let upleft = if col > 0 { prev_row[col - 1][c] } else { 0 };
                let pred = (left + up - upleft).clamp(0, maxes[c]);
                out[c] = (pred + diff[c]) & maxes[c];
            }
            this_row[col] = out;
            fb.pixels[(y + row) * stride + x + col] =
                (0..3).fold(0u32, |a, c| a | ((out[c] as u32) << shifts[c]));
        }
        std::mem::swap(&mut prev_row, &mut this_row);
    }
    Ok(())
}

fn decode_jpeg(
    data: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
) -> Result<(), DecodeError> {
    let mut d = jpeg_decoder::Decoder::new(data);
    d.set_max_decoding_buffer_size(w * h * 4 + 4096);
    d.read_info()
        .map_err(|e| DecodeError::Jpeg(e.to_string()))?;
    let info = d
        .info()
        .ok_or(DecodeError::Invalid("JPEG without a header"))?;
    if info.width as usize != w || info.height as usize != h {
        return Err(DecodeError::Invalid("JPEG size differs from its rectangle"));
    }
    let px = d.decode().map_err(|e| DecodeError::Jpeg(e.to_string()))?;
    let stride = fb.width as usize;
    let pf = fb.pf;
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if px.len() >= w * h * 3 => {
            for (i, c) in px.chunks_exact(3).take(w * h).enumerate() {
                let native = ((c[0] as u32) << 16) | ((c[1] as u32) << 8) | c[2] as u32;
                fb.pixels[(y + i / w) * stride + x + i % w] = pf.from_native(native);
            }
        }
        jpeg_decoder::PixelFormat::L8 if px.len() >= w * h => {
            for (i, &l) in px.iter().take(w * h).enumerate() {
                let l = l as u32;
                fb.pixels[(y + i / w) * stride + x + i % w] =
                    pf.from_native((l << 16) | (l << 8) | l);
            }
        }
        _ => return Err(DecodeError::Invalid("JPEG pixel format")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::test_pattern::render;
    use crate::encoding::{new_encoder, testutil, EncodeParams};

    fn encoded(encoding: i32, pf: PixelFormat) -> (Vec<u8>, u16) {
        let f = render(40, 30, 1);
        let p = EncodeParams {
            pf,
            compress_level: Some(1),
            quality_level: if encoding == enc::TIGHT {
                Some(5)
            } else {
                None
            },
        };
        let mut e = new_encoder(encoding);
        let mut body = Vec::new();
        let mut n = e.encode(&f, f.bounds(), &p, &mut body);
        let pal = testutil::palette_frame(40, 30, 3, &pf);
        n += e.encode(&pal, Rect::new(3, 4, 20, 17), &p, &mut body);
        (body, n as u16)
    }

    const ALL: [i32; 6] = [
        enc::RAW,
        enc::RRE,
        enc::HEXTILE,
        enc::ZLIB,
        enc::TIGHT,
        enc::ZRLE,
    ];

    #[test]
    fn every_truncation_is_an_error() {
        for e in ALL {
            for pf in [PixelFormat::NATIVE, PixelFormat::BGR233] {
                let (body, n) = encoded(e, pf);
                let mut fb = ClientFramebuffer::new(40, 30, pf);
                assert_eq!(
                    Decoder::new().decode_update(&body, n, &mut fb),
                    Ok(body.len())
                );
                for cut in 0..body.len() {
                    let r = Decoder::new().decode_update(&body[..cut], n, &mut fb);
                    assert!(
                        r.is_err(),
                        "encoding {e}: cut at {cut} of {} decoded",
                        body.len()
                    );
                }
            }
        }
    }

    #[test]
    fn corrupted_input_never_panics() {
        // Deterministic xorshift so a failure is reproducible.
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for e in ALL {
            let (body, n) = encoded(e, PixelFormat::RGB565);
            for _ in 0..300 {
                let mut b = body.clone();
                for _ in 0..1 + rnd() % 4 {
                    let i = (rnd() as usize) % b.len();
                    b[i] = rnd() as u8;
                }
                let mut fb = ClientFramebuffer::new(40, 30, PixelFormat::RGB565);
                let _ = Decoder::new().decode_update(&b, n, &mut fb);
                assert_eq!(fb.pixels.len(), fb.width as usize * fb.height as usize);
            }
        }
    }

    fn header(x: u16, y: u16, w: u16, h: u16, e: i32) -> Vec<u8> {
        let mut v = Vec::new();
        for n in [x, y, w, h] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&e.to_be_bytes());
        v
    }

    #[test]
    fn hostile_lengths_and_counts_are_rejected() {
        let pf = PixelFormat::NATIVE;
        let mut fb = ClientFramebuffer::new(64, 64, pf);
        let mut dec = Decoder::new();
        // Rectangle outside the framebuffer, including u16 overflow.
        for (x, w) in [(60u16, 5u16), (65535, 65535), (0, 65)] {
            let b = header(x, 0, w, 1, enc::RAW);
            assert!(matches!(
                dec.decode_update(&b, 1, &mut fb),
                Err(DecodeError::OutOfBounds(_))
            ));
        }
        // CopyRect from outside.
        let mut b = header(0, 0, 10, 10, enc::COPY_RECT);
        b.extend_from_slice(&[0, 60, 0, 0]);
        assert!(dec.decode_update(&b, 1, &mut fb).is_err());
        // RRE with 2^32-1 subrectangles and no data.
        let mut b = header(0, 0, 8, 8, enc::RRE);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Truncated)
        );
        // RRE subrectangle outside its rectangle.
        let mut b = header(0, 0, 8, 8, enc::RRE);
        b.extend_from_slice(&[0, 0, 0, 1, 1, 2, 3, 4, 1, 2, 3, 4, 0, 7, 0, 0, 0, 2, 0, 1]);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        // Zlib/ZRLE lengths beyond the input.
        for e in [enc::ZLIB, enc::ZRLE] {
            let mut b = header(0, 0, 8, 8, e);
            b.extend_from_slice(&[0x80, 0, 0, 0, 0x78]);
            assert_eq!(
                dec.decode_update(&b, 1, &mut fb),
                Err(DecodeError::Truncated)
            );
        }
        // A zlib bomb: a few KB inflating to far more than the rectangle.
        let zeros = vec![0u8; 1 << 20];
        let mut bomb = Vec::new();
        crate::encoding::Deflater::new(9).deflate_sync(9, &zeros, &mut bomb);
        for e in [enc::ZLIB, enc::ZRLE] {
            let mut b = header(0, 0, 8, 8, e);
            b.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
            b.extend_from_slice(&bomb);
            let r = Decoder::new().decode_update(&b, 1, &mut fb);
            assert!(r.is_err(), "{e}: {r:?}");
        }
        // ZRLE run longer than its tile.
        let mut raw = vec![128u8, 1, 2, 3];
        raw.extend_from_slice(&[255; 40]);
        let mut packed = Vec::new();
        crate::encoding::Deflater::new(1).deflate_sync(1, &raw, &mut packed);
        let mut b = header(0, 0, 8, 8, enc::ZRLE);
        b.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        b.extend_from_slice(&packed);
        assert!(matches!(
            Decoder::new().decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        // Tight: too wide, compact length beyond input, bad palette index.
        let mut big = ClientFramebuffer::new(4096, 1, pf);
        let mut b = header(0, 0, 2049, 1, enc::TIGHT);
        b.extend_from_slice(&[0x80, 1, 2, 3]);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut big),
            Err(DecodeError::Invalid(_))
        ));
        let mut b = header(0, 0, 8, 8, enc::TIGHT);
        b.extend_from_slice(&[0x00, 0xff, 0xff, 0xff]);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Truncated)
        );
        let mut b = header(0, 0, 2, 1, enc::TIGHT);
        b.extend_from_slice(&[0x60, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 7]);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        let mut b = header(0, 0, 8, 8, enc::TIGHT);
        b.extend_from_slice(&[0xa0]);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        // JPEG whose header claims another size.
        let mut jpeg = Vec::new();
        assert!(crate::encoding::jpeg::JpegCompressor::default().compress(
            &crate::framebuffer::Frame::new(4, 4),
            Rect::new(0, 0, 4, 4),
            5,
            &mut jpeg
        ));
        let mut b = header(0, 0, 8, 8, enc::TIGHT);
        b.push(0x90);
        crate::encoding::tight::write_compact_len(jpeg.len(), &mut b);
        b.extend_from_slice(&jpeg);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        // DesktopSize beyond the cap; DesktopName longer than the input.
        let b = header(0, 0, 65535, 65535, enc::DESKTOP_SIZE);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::TooLarge)
        );
        let mut b = header(0, 0, 0, 0, enc::DESKTOP_NAME);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'x']);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Truncated)
        );
        // Hextile tile without a background, and a subrect leaving its tile.
        let mut b = header(0, 0, 16, 16, enc::HEXTILE);
        b.push(0);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        let mut b = header(0, 0, 4, 4, enc::HEXTILE);
        b.extend_from_slice(&[2 | 4 | 8, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0x33, 0x11]);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid(_))
        ));
        // Unknown encoding.
        let b = header(0, 0, 1, 1, 12345);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Unsupported(12345))
        );
    }

    #[test]
    fn copy_rect_handles_overlap() {
        let pf = PixelFormat::RGB565;
        let mut fb = ClientFramebuffer::new(6, 3, pf);
        for (i, p) in fb.pixels.iter_mut().enumerate() {
            *p = i as u32;
        }
        let before = fb.clone();
        // Move the 4x2 block at (0,0) one pixel right and down: overlapping.
        let mut b = header(1, 1, 4, 2, enc::COPY_RECT);
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Decoder::new().decode_update(&b, 1, &mut fb), Ok(b.len()));
        for y in 0..3u16 {
            for x in 0..6u16 {
                let want = if (1..5).contains(&x) && (1..3).contains(&y) {
                    before.get(x - 1, y - 1)
                } else {
                    before.get(x, y)
                };
                assert_eq!(fb.get(x, y), want, "({x},{y})");
            }
        }
    }

    #[test]
    fn pseudo_rects_and_last_rect() {
        let pf = PixelFormat::NATIVE;
        let mut fb = ClientFramebuffer::new(8, 8, pf);
        let mut b = header(0, 0, 20, 10, enc::DESKTOP_SIZE);
        b.extend(header(0, 0, 0, 0, enc::DESKTOP_NAME));
        b.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
        b.extend(header(1, 1, 1, 1, enc::RAW));
        b.extend_from_slice(&[1, 2, 3, 0]);
        b.extend(header(0, 0, 0, 0, enc::LAST_RECT));
        let used = Decoder::new().decode_update(&b, 0xffff, &mut fb).unwrap();
        assert_eq!(used, b.len());
        assert_eq!((fb.width, fb.height), (20, 10));
        assert_eq!(fb.get(1, 1), 0x030201);
        // Tight stream reset bits reset the decoder's streams.
        let mut msg = vec![0, 0, 0, 1];
        let f = testutil::palette_frame(20, 10, 2, &pf);
        let mut e = new_encoder(enc::TIGHT);
        let p = testutil::params(pf);
        e.encode(&f, f.bounds(), &p, &mut msg);
        let mut d = Decoder::new();
        assert_eq!(d.decode_message(&msg, &mut fb), Ok(msg.len()));
        // The same bytes again continue stream 1 and fail unless it is reset.
        let mut again = vec![0, 0, 0, 1];
        new_encoder(enc::TIGHT).encode(&f, f.bounds(), &p, &mut again);
        assert!(d.decode_message(&again, &mut fb).is_err());
        let mut d = Decoder::new();
        d.decode_message(&msg, &mut fb).unwrap();
        again[4 + 12] |= 0x02; // reset stream 1
        assert_eq!(d.decode_message(&again, &mut fb), Ok(again.len()));
    }

    #[test]
    fn pseudo_rectangles_the_server_sends_are_framed() {
        let pf = PixelFormat::NATIVE;
        let mut fb = ClientFramebuffer::new(8, 8, pf);
        let mut b = header(0, 0, 2, 2, enc::CURSOR_WITH_ALPHA);
        b.extend_from_slice(&enc::RAW.to_be_bytes());
        b.extend_from_slice(&[7; 16]);
        b.extend(header(1, 1, 2, 1, enc::X_CURSOR));
        b.extend_from_slice(&[0; 6 + 2]);
        b.extend(header(3, 4, 0, 0, enc::POINTER_POS));
        b.extend(header(3, 4, 0, 0, enc::VMWARE_CURSOR_POSITION));
        b.extend(header(0, 0, 0, 0, enc::LED_STATE));
        b.push(5);
        b.extend(header(0, 0, 0, 0, enc::VMWARE_LED_STATE));
        b.extend_from_slice(&[0, 0, 0, 5]);
        b.extend(header(0, 0, 0, 0, enc::QEMU_EXTENDED_KEY_EVENT));
        b.extend(header(0, 0, 0, 0, enc::EXTENDED_MOUSE_BUTTONS));
        b.extend(header(0, 0, 1, 1, enc::RAW));
        b.extend_from_slice(&[1, 2, 3, 0]);
        let mut d = Decoder::new();
        assert_eq!(d.decode_update(&b, 9, &mut fb), Ok(b.len()));
        assert_eq!(fb.get(0, 0), 0x030201);
        // A cut-off shape is an error, not a misread; a shape in an
        // encoding the server never uses is refused.
        assert_eq!(
            d.decode_update(&b[..20], 1, &mut fb),
            Err(DecodeError::Truncated)
        );
        let mut z = header(0, 0, 2, 2, enc::CURSOR_WITH_ALPHA);
        z.extend_from_slice(&enc::ZLIB.to_be_bytes());
        assert_eq!(
            d.decode_update(&z, 1, &mut fb),
            Err(DecodeError::Unsupported(enc::ZLIB))
        );
    }
}
