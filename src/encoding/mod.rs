//! Encodings: one file each, all behind [`Encoder`]. An encoder call is a
//! function of (frame, rectangle, client pixel format, levels, its own zlib
//! state) and nothing else, so rectangles can later be encoded in parallel.

pub mod cursor;
pub mod hextile;
pub mod jpeg;
#[cfg(test)]
mod oracle_tests;
pub mod parallel;
pub mod raw;
pub mod rre;
pub mod shared;
pub mod tight;
pub mod zlib;
pub mod zrle;

use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::{PixelFormat, UpdateBuf};
pub(crate) use parallel::{Deflater, ScratchPool};

/// Per-update parameters every encoder sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// the frame and is not empty. Some encoders cut `rect` into several
    /// rectangles (Tight's size limits, Zlib's bands), and RRE may send a
    /// rectangle as Raw (which every client accepts) when that is smaller.
    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        params: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize;
    /// How many rectangles [`Encoder::encode`] writes for `rect`, known
    /// before encoding (a FramebufferUpdate header counts them up front
    /// while its rectangles are sent as they are encoded).
    fn rect_count(&self, _rect: Rect, _params: &EncodeParams) -> usize {
        1
    }
    /// [`Encoder::encode`], but bytes that depend on nothing this
    /// connection sent before (its own zlib streams are left as they
    /// were), so that one encoding can go to every viewer with the same
    /// settings ([`shared`]). Zlib-based encoders compress through
    /// `streams` instead, which carry on from the previous bands of the
    /// same shared run (so only the run's first band starts with an empty
    /// window). The same rectangles as `encode` writes. Encoders without
    /// state between rectangles: `encode` itself.
    fn encode_detached(
        &mut self,
        frame: &Frame,
        rect: Rect,
        params: &EncodeParams,
        _streams: &mut DetachedStreams,
        out: &mut UpdateBuf,
    ) -> usize {
        self.encode(frame, rect, params, out)
    }
    /// Whether bytes from [`Encoder::encode_detached`] may go out on this
    /// connection now (ZRLE and Zlib: only once the connection's stream
    /// has sent its zlib header).
    fn takes_detached(&self) -> bool {
        true
    }
    /// Bytes from [`Encoder::encode_detached`] went out on this
    /// connection: the connection's own streams must not refer back past them.
    fn detached_sent(&mut self) {}
}

/// Real encodings this server implements, in the server's own order of
/// preference (used when the client lists none).
pub const SUPPORTED: &[i32] = &[
    enc::TIGHT,
    enc::ZRLE,
    enc::HEXTILE,
    enc::ZLIB,
    enc::RRE,
    enc::RAW,
];

/// What a client asked for in SetEncodings, interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEncodings {
    /// The first real encoding in the client's list that we implement (Raw if none).
    pub preferred: i32,
    pub copy_rect: bool,
    pub desktop_size: bool,
    pub extended_desktop_size: bool,
    pub cursor: bool,
    pub cursor_alpha: bool,
    pub x_cursor: bool,
    /// PointerPos or VMware Cursor Position: the viewer can be told where the pointer is.
    pub pointer_pos: bool,
    pub vmware_cursor_pos: bool,
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
            cursor_alpha: has(enc::CURSOR_WITH_ALPHA),
            x_cursor: has(enc::X_CURSOR),
            pointer_pos: has(enc::POINTER_POS),
            vmware_cursor_pos: has(enc::VMWARE_CURSOR_POSITION),
            last_rect: has(enc::LAST_RECT),
            desktop_name: has(enc::DESKTOP_NAME),
            compress_level: level(enc::COMPRESS_LEVEL_0, enc::COMPRESS_LEVEL_9),
            quality_level: level(enc::QUALITY_LEVEL_0, enc::QUALITY_LEVEL_9),
        }
    }
}

/// The zlib streams of a run of bands encoded for several viewers
/// ([`Encoder::encode_detached`]): created on first use from the shared
/// pool with an empty window (Tight: each stream starts with a zlib header
/// and the viewer is told to reset it; ZRLE and Zlib: no header, the bytes
/// continue a viewer's started stream), handed back to the pool when
/// dropped or cleared.
#[derive(Default)]
pub struct DetachedStreams {
    pub(crate) z: Vec<Deflater>,
    /// Tight: stream k's next use must carry its reset bit.
    pub(crate) reset_due: [bool; 4],
}

impl DetachedStreams {
    /// `n` streams at `level`, created if there are none yet.
    pub(crate) fn ensure(&mut self, n: usize, level: u32, header: bool) {
        if self.z.is_empty() {
            self.z = (0..n).map(|_| Deflater::detached(level, header)).collect();
            self.reset_due = [header; 4];
        }
    }

    /// Give the streams back to the pool (the run is over).
    pub fn clear(&mut self) {
        for z in self.z.drain(..) {
            z.recycle();
        }
    }
}

impl Drop for DetachedStreams {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A new encoder for `encoding` (one of [`SUPPORTED`]).
pub fn new_encoder(encoding: i32) -> Box<dyn Encoder> {
    match encoding {
        enc::RAW => Box::new(raw::RawEncoder),
        enc::RRE => Box::new(rre::RreEncoder::default()),
        enc::HEXTILE => Box::new(hextile::HextileEncoder::default()),
        enc::ZLIB => Box::new(zlib::ZlibEncoder::default()),
        enc::TIGHT => Box::new(tight::TightEncoder::default()),
        enc::ZRLE => Box::new(zrle::ZrleEncoder::default()),
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
pub fn write_copy_rect(dst: Rect, src_x: u16, src_y: u16, out: &mut UpdateBuf) {
    out.rect_header(dst, enc::COPY_RECT);
    out.extend_from_slice(&src_x.to_be_bytes());
    out.extend_from_slice(&src_y.to_be_bytes());
}

/// Client pixel values of `rect` of `frame`, row-major, into `buf` (cleared).
/// Pixels are translated once per rectangle; encoders work on values.
pub(crate) fn translate_rect(frame: &Frame, rect: Rect, pf: &PixelFormat, buf: &mut Vec<u32>) {
    buf.clear();
    buf.reserve(rect.area());
    for y in rect.y..rect.y + rect.h {
        pf.translate_into(frame.row(y, rect.x, rect.w), buf);
    }
}

/// Append every pixel value as `bytes_per_pixel` bytes in the client's order.
pub(crate) fn write_pixels(pf: &PixelFormat, px: &[u32], out: &mut Vec<u8>) {
    out.reserve(px.len() * pf.bytes_per_pixel());
    match (pf.bits_per_pixel, pf.big_endian) {
        (8, _) => out.extend(px.iter().map(|&v| v as u8)),
        (16, false) => px
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as u16).to_le_bytes())),
        (16, true) => px
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as u16).to_be_bytes())),
        (_, false) => px
            .iter()
            .for_each(|&v| out.extend_from_slice(&v.to_le_bytes())),
        (_, true) => px
            .iter()
            .for_each(|&v| out.extend_from_slice(&v.to_be_bytes())),
    }
}

/// Append every pixel value as a CPIXEL (see [`PixelFormat::write_cpixel`]),
/// choosing the byte layout once for the whole slice.
pub(crate) fn write_cpixels(pf: &PixelFormat, px: &[u32], out: &mut Vec<u8>) {
    match pf.cpixel_low_bytes() {
        None => write_pixels(pf, px, out),
        Some(low) => {
            out.reserve(px.len() * 3);
            // Which three bytes of the full pixel (in wire order) to keep.
            let bytes: fn(u32) -> [u8; 4] = if pf.big_endian {
                u32::to_be_bytes
            } else {
                u32::to_le_bytes
            };
            let skip_first = low == pf.big_endian;
            for &v in px {
                let b = bytes(v);
                if skip_first {
                    out.extend_from_slice(&b[1..]);
                } else {
                    out.extend_from_slice(&b[..3]);
                }
            }
        }
    }
}

/// The zlib level for the compression level a client asked for with a
/// pseudo-encoding. Level 1 becomes zlib level 2: zlib-rs level 1 is
/// `deflate_quick` (static Huffman codes, no stored blocks), which writes
/// more bytes than it was given on photo-like pixels; level 2 (fast
/// matching, dynamic codes, stored blocks where they are smaller) costs
/// about the same CPU (`ticketvnc bench`, docs/benchmarks.md).
pub(crate) fn zlib_level(p: &EncodeParams, default: u32) -> u32 {
    match p.compress_level.map(u32::from).unwrap_or(default).min(9) {
        1 => 2,
        l => l,
    }
}

/// A small colour table (at most `max` colours, max <= 256) built with an
/// open-addressing hash keyed by pixel value. Reused between tiles without
/// clearing its table (entries are stamped with a generation).
pub(crate) struct Palette {
    keys: Box<[u32; PAL_SLOTS]>,
    idx: Box<[u16; PAL_SLOTS]>,
    stamp: Box<[u32; PAL_SLOTS]>,
    generation: u32,
    pub colours: Vec<u32>,
    pub counts: Vec<u32>,
}

const PAL_SLOTS: usize = 1024;

impl Default for Palette {
    fn default() -> Self {
        Palette {
            keys: Box::new([0; PAL_SLOTS]),
            idx: Box::new([0; PAL_SLOTS]),
            stamp: Box::new([0; PAL_SLOTS]),
            generation: 1,
            colours: Vec::with_capacity(256),
            counts: Vec::with_capacity(256),
        }
    }
}

impl Palette {
    pub(crate) fn clear(&mut self) {
        self.colours.clear();
        self.counts.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
    }

    #[inline]
    fn slot(v: u32) -> usize {
        (v.wrapping_mul(0x9E37_79B1) >> 22) as usize & (PAL_SLOTS - 1)
    }

    /// Count `n` more pixels of colour `v`. Returns false (and adds nothing)
    /// when `v` is new and the palette already holds `max` colours.
    #[inline]
    pub(crate) fn add(&mut self, v: u32, n: u32, max: usize) -> bool {
        let mut s = Self::slot(v);
        loop {
            if self.stamp[s] != self.generation {
                if self.colours.len() >= max {
                    return false;
                }
                self.stamp[s] = self.generation;
                self.keys[s] = v;
                self.idx[s] = self.colours.len() as u16;
                self.colours.push(v);
                self.counts.push(n);
                return true;
            }
            if self.keys[s] == v {
                self.counts[self.idx[s] as usize] += n;
                return true;
            }
            s = (s + 1) & (PAL_SLOTS - 1);
        }
    }

    /// Index of a colour that was added.
    #[inline]
    pub(crate) fn index(&self, v: u32) -> usize {
        let mut s = Self::slot(v);
        loop {
            if self.stamp[s] != self.generation {
                debug_assert!(false, "colour not in palette");
                return 0;
            }
            if self.keys[s] == v {
                return self.idx[s] as usize;
            }
            s = (s + 1) & (PAL_SLOTS - 1);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.colours.len()
    }

    /// Add the pixels of `px` as runs; false when more than `max` colours.
    pub(crate) fn add_all(&mut self, px: &[u32], max: usize) -> bool {
        let mut i = 0;
        while i < px.len() {
            let v = px[i];
            let mut j = i + 1;
            while j < px.len() && px[j] == v {
                j += 1;
            }
            if !self.add(v, (j - i) as u32, max) {
                return false;
            }
            i = j;
        }
        true
    }

    /// Sort colours by descending count (most common first) and reindex.
    pub(crate) fn sort_by_count(&mut self) {
        let mut order: Vec<(u32, u32)> = self
            .colours
            .iter()
            .zip(&self.counts)
            .map(|(&c, &n)| (n, c))
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let counts: Vec<u32> = order.iter().map(|o| o.0).collect();
        let colours: Vec<u32> = order.iter().map(|o| o.1).collect();
        self.clear();
        for (c, n) in colours.into_iter().zip(counts) {
            self.add(c, n, 256);
        }
    }
}

/// Cover every pixel of `work` (a `w`x`h` block, row-major) that differs
/// from `bg` with single-colour rectangles, calling `emit(x, y, w, h, colour)`
/// for each; covered pixels are overwritten with `bg`. Stops and returns
/// false as soon as `emit` returns false. With `both_ways`, each rectangle
/// is grown row-first and column-first and the larger kept (fewer, bigger
/// rectangles for twice the search); otherwise row-first only.
pub(crate) fn find_subrects(
    work: &mut [u32],
    w: usize,
    h: usize,
    bg: u32,
    both_ways: bool,
    mut emit: impl FnMut(usize, usize, usize, usize, u32) -> bool,
) -> bool {
    for y in 0..h {
        let mut x = 0;
        while x < w {
            let c = work[y * w + x];
            if c == bg {
                x += 1;
                continue;
            }
            // Horizontal first: run along the row, then grow downwards.
            let row = &work[y * w..y * w + w];
            let mut w1 = 1;
            while x + w1 < w && row[x + w1] == c {
                w1 += 1;
            }
            let mut h1 = 1;
            while y + h1 < h
                && work[(y + h1) * w + x..(y + h1) * w + x + w1]
                    .iter()
                    .all(|&p| p == c)
            {
                h1 += 1;
            }
            let (mut rw, mut rh) = (w1, h1);
            if both_ways {
                // Vertical first: run down the column, then grow rightwards.
                let mut h2 = 1;
                while y + h2 < h && work[(y + h2) * w + x] == c {
                    h2 += 1;
                }
                let mut w2 = 1;
                while x + w2 < w && (0..h2).all(|dy| work[(y + dy) * w + x + w2] == c) {
                    w2 += 1;
                }
                if w2 * h2 > w1 * h1 {
                    (rw, rh) = (w2, h2);
                }
            }
            if !emit(x, y, rw, rh, c) {
                return false;
            }
            for dy in 0..rh {
                work[(y + dy) * w + x..(y + dy) * w + x + rw].fill(bg);
            }
            x += rw;
        }
    }
    true
}

/// The most common value of `px` (ties: the first seen). `px` is not empty.
pub(crate) fn most_common(px: &[u32], pal: &mut Palette) -> u32 {
    pal.clear();
    if pal.add_all(px, 256) {
        let best = (0..pal.len()).max_by_key(|&i| (pal.counts[i], usize::MAX - i));
        return pal.colours[best.unwrap_or(0)];
    }
    // Many colours: a sample-free exact count would need a big table; the
    // background only affects size, not correctness, so take the most common
    // of the first 256 distinct colours seen.
    let best = (0..pal.len()).max_by_key(|&i| (pal.counts[i], usize::MAX - i));
    pal.colours[best.unwrap_or(0)]
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Round-trip harness shared by the encoder tests: encode with a real
    //! encoder, decode with `rfb_decode::Decoder` (written from the RFB
    //! specification, not from these encoders), compare with the source.
    use super::{new_encoder, EncodeParams, Encoder};
    use crate::capture::test_pattern::render;
    use crate::framebuffer::{Frame, Rect};
    use crate::rfb::messages::enc;
    use crate::rfb::PixelFormat;
    use rfb_decode::{ClientFramebuffer, Decoder};

    /// Value the decoder's framebuffer starts with; no decoded pixel has it.
    pub const SENTINEL: u32 = 0xFFFF_FFFF;

    /// The client formats every encoder is tested with.
    pub fn formats() -> Vec<(&'static str, PixelFormat)> {
        let rgb565_be = PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB565
        };
        let be32_high = PixelFormat {
            big_endian: true,
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::NATIVE
        };
        let colour_map = PixelFormat {
            true_colour: false,
            ..PixelFormat::BGR233
        };
        let le32_bgr = PixelFormat {
            red_shift: 0,
            green_shift: 8,
            blue_shift: 16,
            ..PixelFormat::NATIVE
        };
        vec![
            ("native", PixelFormat::NATIVE),
            ("rgb565le", PixelFormat::RGB565),
            ("rgb565be", rgb565_be),
            ("bgr233", PixelFormat::BGR233),
            ("be32-24/16/8", be32_high),
            ("le32-bgr", le32_bgr),
            ("colour-map", colour_map),
        ]
    }

    /// The decoder's own pixel format type, from the 16 bytes on the wire.
    pub fn client_pf(pf: &PixelFormat) -> rfb_decode::PixelFormat {
        rfb_decode::PixelFormat::from_wire(&pf.to_bytes()).expect("a valid client format")
    }

    pub fn params(pf: PixelFormat) -> EncodeParams {
        EncodeParams {
            pf,
            compress_level: None,
            quality_level: None,
        }
    }

    /// A `w`x`h` frame using exactly `n` colours (all distinct in `pf` when
    /// `pf` has that many values), laid out as short runs mixed with noise.
    pub fn palette_frame(w: u16, h: u16, n: usize, pf: &PixelFormat) -> Frame {
        // Native colours whose values in `pf` are all different (as far as
        // `pf` has values), each exactly representable in `pf`.
        let mut seen = std::collections::HashSet::new();
        let mut colours: Vec<u32> = Vec::with_capacity(n);
        for k in 0u32..200_000 {
            if colours.len() == n {
                break;
            }
            let v = pf.from_native(k.wrapping_mul(0x9E37_79B1) >> 8);
            if seen.insert(v) {
                colours.push(pf.to_native(v));
            }
        }
        let distinct = colours.len();
        while colours.len() < n {
            colours.push(colours[colours.len() % distinct]);
        }
        let mut f = Frame::new(w, h);
        let area = w as usize * h as usize;
        for i in 0..area {
            // The first n pixels show every colour once; then runs and jumps.
            let idx = if i < n {
                i
            } else {
                ((i / 3) * 7 + (i % 5) * (i / 11)) % n
            };
            f[i] = colours[idx];
        }
        f
    }

    /// Encode `rect` of `frame`, decode it into a fresh framebuffer and check
    /// every pixel: inside the rectangle equal to the translated source (or
    /// within `tolerance` per channel), outside untouched.
    pub fn roundtrip_with(
        enc: &mut dyn Encoder,
        dec: &mut Decoder,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        tolerance: u32,
        what: &str,
    ) -> usize {
        let mut body = crate::rfb::UpdateBuf::new();
        let n = enc.encode(frame, rect, p, &mut body);
        assert!(n >= 1 && n <= u16::MAX as usize, "{what}: {n} rects");
        let mut fb = ClientFramebuffer::new(frame.width, frame.height, client_pf(&p.pf));
        fb.pixels.fill(SENTINEL);
        let used = dec
            .decode_update(&body, n as u16, &mut fb)
            .unwrap_or_else(|e| panic!("{what}: decode failed: {e}"));
        assert_eq!(used, body.len(), "{what}: trailing bytes");
        let (mut err_sum, mut err_n) = (0u64, 0u64);
        for y in 0..frame.height {
            for x in 0..frame.width {
                let got = fb.get(x, y);
                let inside = x >= rect.x
                    && y >= rect.y
                    && (x as u32) < rect.right()
                    && (y as u32) < rect.bottom();
                if !inside {
                    assert_eq!(
                        got, SENTINEL,
                        "{what}: ({x},{y}) outside the rect was written"
                    );
                    continue;
                }
                let want = p.pf.from_native(frame.get(x, y));
                if tolerance == 0 {
                    assert_eq!(got, want, "{what}: pixel ({x},{y}) {got:#x} != {want:#x}");
                } else {
                    let (a, b) = (p.pf.to_native(got), p.pf.to_native(want));
                    for s in [0, 8, 16] {
                        let d = ((a >> s) & 0xff).abs_diff((b >> s) & 0xff);
                        assert!(d <= tolerance, "{what}: pixel ({x},{y}) {a:#x} vs {b:#x}");
                        err_sum += d as u64;
                        err_n += 1;
                    }
                }
            }
        }
        if tolerance > 0 {
            // Lossy: besides the per-pixel bound, the average error of a
            // channel must stay small (a broken decoder or colour order
            // would be far off).
            let mean = err_sum as f64 / err_n.max(1) as f64;
            eprintln!("{what}: mean channel error {mean:.2}");
            assert!(mean <= 16.0, "{what}: mean channel error {mean}");
        }
        body.len()
    }

    /// The standard suite: every format, the test pattern, palette sizes
    /// around every boundary and awkward rectangle sizes, lossless.
    pub fn lossless_suite(encoding: i32) {
        for (name, pf) in formats() {
            let p = params(pf);
            let mut enc = new_encoder(encoding);
            let mut dec = Decoder::new();
            let pattern = render(320, 240, 3);
            roundtrip_with(
                enc.as_mut(),
                &mut dec,
                &pattern,
                pattern.bounds(),
                &p,
                0,
                &format!("{name} pattern"),
            );
            roundtrip_with(
                enc.as_mut(),
                &mut dec,
                &pattern,
                Rect::new(17, 9, 131, 77),
                &p,
                0,
                &format!("{name} pattern part"),
            );
            for n in [1usize, 2, 3, 4, 5, 16, 17, 127, 128, 256, 257] {
                let f = palette_frame(70, 68, n, &pf);
                for r in [
                    Rect::new(0, 0, 70, 68),
                    Rect::new(3, 2, 64, 64),
                    Rect::new(1, 1, 65, 65),
                ] {
                    roundtrip_with(
                        enc.as_mut(),
                        &mut dec,
                        &f,
                        r,
                        &p,
                        0,
                        &format!("{name} {n} colours {r:?}"),
                    );
                }
            }
            let wide = palette_frame(2051, 5, 300, &pf);
            for r in [
                Rect::new(0, 0, 1, 1),
                Rect::new(2, 1, 15, 4),
                Rect::new(1, 0, 2049, 3),
                Rect::new(0, 0, 2051, 5),
            ] {
                roundtrip_with(
                    enc.as_mut(),
                    &mut dec,
                    &wide,
                    r,
                    &p,
                    0,
                    &format!("{name} wide {r:?}"),
                );
            }
            let tall = palette_frame(33, 40, 9, &pf);
            for r in [
                Rect::new(0, 0, 15, 17),
                Rect::new(5, 7, 16, 16),
                Rect::new(2, 3, 31, 37),
            ] {
                roundtrip_with(
                    enc.as_mut(),
                    &mut dec,
                    &tall,
                    r,
                    &p,
                    0,
                    &format!("{name} tall {r:?}"),
                );
            }
        }
    }

    /// Several updates in a row through one encoder and one decoder (zlib
    /// streams must carry over between rectangles and updates).
    pub fn multi_update(encoding: i32, p: &EncodeParams) {
        let mut enc = new_encoder(encoding);
        let mut dec = Decoder::new();
        let mut fb = ClientFramebuffer::new(200, 150, client_pf(&p.pf));
        for n in 0..6u64 {
            let frame = render(200, 150, n);
            let rects = [
                Rect::new(0, 0, 200, 150),
                Rect::new(10, 20, 60, 40),
                Rect::new(100, 90, 99, 59),
            ];
            let mut body = crate::rfb::UpdateBuf::new();
            let mut count = 0;
            for r in rects.iter().take(1 + n as usize % 3) {
                count += enc.encode(&frame, *r, p, &mut body);
            }
            if n > 0 && [enc::ZLIB, enc::ZRLE, enc::TIGHT].contains(&encoding) {
                // The data continues the streams: a decoder that has not
                // seen the earlier updates cannot read it.
                let mut fresh_fb = fb.clone();
                assert!(
                    Decoder::new()
                        .decode_update(&body, count as u16, &mut fresh_fb)
                        .is_err(),
                    "update {n} decoded without the earlier stream state"
                );
            }
            let used = dec.decode_update(&body, count as u16, &mut fb).unwrap();
            assert_eq!(used, body.len());
            for r in rects.iter().take(1 + n as usize % 3) {
                for y in r.y..r.y + r.h {
                    for x in r.x..r.x + r.w {
                        assert_eq!(
                            fb.get(x, y),
                            p.pf.from_native(frame.get(x, y)),
                            "update {n} ({x},{y})"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_preference_picks_first_supported() {
        let e = ClientEncodings::from_list(&[99, enc::ZRLE, enc::TIGHT]);
        assert_eq!(e.preferred, enc::ZRLE);
        for &x in SUPPORTED {
            assert_eq!(new_encoder(x).encoding(), x);
            assert_eq!(ClientEncodings::from_list(&[x]).preferred, x);
        }
    }

    /// The count a FramebufferUpdate header is written with before its
    /// rectangles are encoded is the count the encoders then write: Tight
    /// split by width and area, Zlib in bands by bytes per pixel, all
    /// others one rectangle.
    #[test]
    fn rect_count_is_what_encode_writes() {
        use crate::capture::test_pattern::render;
        let frame = render(4200, 140, 3);
        let rects = [
            Rect::new(0, 0, 1, 1),
            Rect::new(3, 5, 64, 64),
            Rect::new(0, 0, 2048, 32),
            Rect::new(0, 0, 2048, 33),
            Rect::new(1, 2, 2049, 3),
            Rect::new(0, 0, 4200, 140),
            Rect::new(100, 7, 4100, 129),
            Rect::new(0, 0, 300, 140),
        ];
        let mut checked = 0;
        for &e in SUPPORTED {
            for (name, pf) in testutil::formats() {
                let p = testutil::params(pf);
                let mut enc = new_encoder(e);
                for r in rects {
                    let mut out = crate::rfb::UpdateBuf::new();
                    let want = enc.rect_count(r, &p);
                    assert_eq!(
                        enc.encode(&frame, r, &p, &mut out),
                        want,
                        "{e} {name} {r:?}"
                    );
                    checked += usize::from(want > 1);
                }
            }
        }
        assert!(checked > 0, "no rectangle was split");
    }

    #[test]
    fn deflater_output_is_one_zlib_stream_with_sync_points() {
        let mut d = Deflater::new(6);
        let mut inflate = flate2::Decompress::new(true);
        for (i, level) in [6u32, 1, 9, 0, 6].into_iter().enumerate() {
            let input: Vec<u8> = (0..5000u32)
                .map(|k| (k * (i as u32 + 1) / 7) as u8)
                .collect();
            let mut packed = Vec::new();
            d.deflate_sync(level, &input, &mut packed);
            // A sync flush ends with an empty stored block.
            assert!(packed.ends_with(&[0, 0, 0xff, 0xff]), "chunk {i}");
            let mut out = Vec::with_capacity(input.len() + 10);
            inflate
                .decompress_vec(&packed, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, input, "chunk {i} at level {level}");
        }
    }

    #[test]
    fn bulk_cpixels_match_single_cpixels() {
        let mut pfs: Vec<PixelFormat> = testutil::formats().into_iter().map(|f| f.1).collect();
        for big_endian in [false, true] {
            pfs.push(PixelFormat {
                big_endian,
                red_shift: 16,
                green_shift: 12,
                blue_shift: 8,
                red_max: 15,
                green_max: 15,
                blue_max: 15,
                ..PixelFormat::NATIVE
            });
        }
        let px: Vec<u32> = (0..50u32).map(|i| i.wrapping_mul(0x9E37_79B1)).collect();
        for pf in pfs {
            let vals: Vec<u32> = px.iter().map(|&p| pf.from_native(p)).collect();
            let mut bulk = Vec::new();
            write_cpixels(&pf, &vals, &mut bulk);
            let mut single = Vec::new();
            vals.iter().for_each(|&v| pf.write_cpixel(v, &mut single));
            assert_eq!(bulk, single, "{pf:?}");
            let mut bulk = Vec::new();
            write_pixels(&pf, &vals, &mut bulk);
            let mut single = Vec::new();
            vals.iter().for_each(|&v| pf.write_pixel(v, &mut single));
            assert_eq!(bulk, single, "{pf:?}");
        }
    }

    #[test]
    fn palette_counts_and_limits() {
        let mut p = Palette::default();
        for round in 0..3 {
            p.clear();
            assert!(p.add_all(&[5, 5, 7, 5, 9, 9, 9, 9], 3));
            assert_eq!(p.len(), 3, "round {round}");
            assert!(!p.add(11, 1, 3));
            p.sort_by_count();
            assert_eq!(p.colours, vec![9, 5, 7]);
            assert_eq!(p.counts, vec![4, 3, 1]);
            assert_eq!((p.index(9), p.index(5), p.index(7)), (0, 1, 2));
        }
    }

    #[test]
    fn level_1_never_writes_more_than_stored() {
        // Photo-like noise: nothing to match, every byte a literal.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let input: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut p = testutil::params(PixelFormat::NATIVE);
        p.compress_level = Some(1);
        let level = zlib_level(&p, 6);
        let mut d = Deflater::new(level);
        let mut out = Vec::new();
        d.deflate_sync(level, &input, &mut out);
        // Stored blocks cost 5 bytes per 64 KiB, plus the zlib header and
        // the sync flush's empty block.
        assert!(
            out.len() <= input.len() + input.len() / 1000 + 16,
            "{} bytes for {} stored",
            out.len(),
            input.len()
        );
    }
}
