//! Tight (7), as TigerVNC speaks it: each rectangle is cut to at most 2048
//! pixels wide and 65536 pixels in area, then sent as a solid fill, a
//! two-colour bitmap, an indexed palette, JPEG (only when the client asked
//! for a quality level, the format is 16/32-bit true colour, the area is at
//! least [`JPEG_MIN_AREA`] pixels and has too many colours for a palette), or
//! full colour (lossless). Zlib streams: 0 for full
//! colour, 1 for bitmaps, 2 for indexed; they persist for the connection.
//! A stream is reset (the control byte's reset bit, a new zlib header) only
//! around an encoding shared with other viewers ([`Encoder::encode_detached`]).
//! Data shorter than 12 bytes is sent without compression, as the protocol
//! requires.

use super::jpeg::JpegCompressor;
use super::{
    parallel, translate_rect, zlib_level, Deflater, DetachedStreams, EncodeParams, Encoder,
    Palette, ScratchPool,
};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;
use crate::rfb::UpdateBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const MAX_WIDTH: usize = 2048;
pub const MAX_AREA: usize = 65536;
/// Data shorter than this is sent as is (no zlib, no length).
pub const MIN_TO_COMPRESS: usize = 12;
/// Largest value of the compact length encoding (22 bits).
pub const MAX_COMPACT_LEN: usize = (1 << 22) - 1;

pub const FILL: u8 = 0x80;
pub const JPEG: u8 = 0x90;
pub const EXPLICIT_FILTER: u8 = 0x40;
pub const FILTER_COPY: u8 = 0;
pub const FILTER_PALETTE: u8 = 1;
pub const FILTER_GRADIENT: u8 = 2;

const STREAM_FULL: usize = 0;
const STREAM_MONO: usize = 1;
const STREAM_INDEXED: usize = 2;
/// TigerVNC's default compression level.
const DEFAULT_LEVEL: u32 = 2;

/// Smaller areas are never sent as JPEG: its headers and tables (some 600
/// bytes) would outweigh what lossy coding saves.
pub const JPEG_MIN_AREA: usize = 1024;

/// A viewer's Tight state: its zlib streams (each made at first use) and
/// which must be reset. The buffers a call needs come from [`SCRATCH`], so
/// a viewer holds none between updates.
pub struct TightEncoder {
    z: [Deflater; 4],
    /// The viewer must reset stream k before its next use (the stream's
    /// deflater starts over, zlib header and all).
    reset_due: [bool; 4],
}

impl Default for TightEncoder {
    fn default() -> Self {
        TightEncoder {
            z: std::array::from_fn(|_| Deflater::new(DEFAULT_LEVEL)),
            reset_due: [false; 4],
        }
    }
}

/// The buffers of one encoder call: they grow to the largest rectangles
/// seen (a band's sub-rectangles, some 256 KiB each), so they are shared
/// by all viewers' encoders instead of kept by each.
#[derive(Default)]
struct Scratch {
    /// Scratch of each encoding thread (the first is the caller's).
    workers: Vec<Worker>,
    /// One per sub-rectangle of the current call.
    pieces: Vec<Piece>,
    /// Compressed data of each piece of one stream (parallel calls).
    outs: Vec<Vec<u8>>,
    packed: Vec<u8>,
}

/// Shared by every viewer's Tight encoder.
static SCRATCH: ScratchPool<Scratch> = ScratchPool::new();

/// What one thread needs to classify and encode sub-rectangles.
#[derive(Default)]
struct Worker {
    px: Vec<u32>,
    pal: Palette,
    jpeg: JpegCompressor,
    jpeg_buf: Vec<u8>,
}

/// One sub-rectangle, encoded up to its zlib data: `head` is everything
/// before the compact length; `data` goes through zlib stream `stream`.
#[derive(Default)]
struct Piece {
    head: Vec<u8>,
    data: Vec<u8>,
    stream: Option<usize>,
}

/// Whether TPIXELs are 3 bytes (R, G, B in that order, whatever the shifts
/// and byte order), as in the spec and TigerVNC: true colour, 32 bpp, depth
/// 24, 8 bits per channel.
pub fn tpixel_is_rgb(pf: &PixelFormat) -> bool {
    pf.true_colour
        && pf.bits_per_pixel == 32
        && pf.depth == 24
        && pf.red_max == 255
        && pf.green_max == 255
        && pf.blue_max == 255
}

/// Bytes of one TPIXEL in `pf`.
pub fn tpixel_size(pf: &PixelFormat) -> usize {
    if tpixel_is_rgb(pf) {
        3
    } else {
        pf.bytes_per_pixel()
    }
}

#[inline]
fn write_tpixel(pf: &PixelFormat, rgb: bool, v: u32, out: &mut Vec<u8>) {
    if rgb {
        out.extend_from_slice(&[
            (v >> pf.red_shift) as u8,
            (v >> pf.green_shift) as u8,
            (v >> pf.blue_shift) as u8,
        ]);
    } else {
        pf.write_pixel(v, out);
    }
}

/// The compact length: 7 bits per byte, low first, high bit = more follows.
pub fn write_compact_len(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_COMPACT_LEN);
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x4000 {
        out.extend_from_slice(&[(len as u8) | 0x80, (len >> 7) as u8]);
    } else {
        out.extend_from_slice(&[
            (len as u8) | 0x80,
            ((len >> 7) as u8) | 0x80,
            (len >> 14) as u8,
        ]);
    }
}

/// Rows of a sub-rectangle are a multiple of this where the area allows:
/// JPEG codes whole 16-row MCU rows at 4:2:0 (8 at 4:4:4), so a 1920-wide
/// band of 64 rows cut 34 + 30 made libjpeg code 72 rows (12% more), and
/// 32 + 32 makes it code 64.
const ROW_ALIGN: usize = 16;

/// Sub-rectangles of `rect` within the Tight limits, row-major.
fn split(rect: Rect) -> impl Iterator<Item = Rect> {
    let cw = (rect.w as usize).min(MAX_WIDTH);
    // At least 32 rows (65536 / 2048), so never 0.
    const { assert!(MAX_AREA / MAX_WIDTH >= ROW_ALIGN) };
    let rows = MAX_AREA / cw / ROW_ALIGN * ROW_ALIGN;
    let (x0, y0, x1, y1) = (
        rect.x as usize,
        rect.y as usize,
        rect.right() as usize,
        rect.bottom() as usize,
    );
    (y0..y1).step_by(rows).flat_map(move |y| {
        (x0..x1).step_by(cw).map(move |x| {
            Rect::new(
                x as u16,
                y as u16,
                cw.min(x1 - x) as u16,
                rows.min(y1 - y) as u16,
            )
        })
    })
}

/// Whether translating native pixels into `pf` keeps every colour apart
/// (8 bits per channel, in separate bytes of a 32-bit pixel).
fn keeps_every_colour(pf: &PixelFormat) -> bool {
    let mut shifts = [pf.red_shift, pf.green_shift, pf.blue_shift];
    shifts.sort_unstable();
    pf.true_colour
        && pf.bits_per_pixel == 32
        && (pf.red_max, pf.green_max, pf.blue_max) == (255, 255, 255)
        && shifts[2] <= 24
        && shifts[1] >= shifts[0] + 8
        && shifts[2] >= shifts[1] + 8
}

fn max_colours(area: usize, p: &EncodeParams, jpeg: bool) -> usize {
    let mut max = (area / 4).clamp(2, 256);
    if jpeg {
        let cap = if p.compress_level.is_some_and(|l| l < 2) {
            24
        } else {
            96
        };
        max = max.min(cap);
    }
    max
}

impl Worker {
    /// Encode `r` into `piece` (cleared first): a fill or JPEG rectangle
    /// completely in `head`; otherwise the control byte and palette
    /// in `head` and the pixel data in `data` for zlib stream `stream`
    /// (data shorter than [`MIN_TO_COMPRESS`] is moved to `head`: it is
    /// sent as is).
    fn classify(&mut self, frame: &Frame, r: Rect, p: &EncodeParams, piece: &mut Piece) {
        let (head, data) = (&mut piece.head, &mut piece.data);
        head.clear();
        data.clear();
        piece.stream = None;
        let pf = &p.pf;
        let rgb = tpixel_is_rgb(pf);
        let jpeg = p.quality_level.filter(|_| {
            pf.true_colour && matches!(pf.bits_per_pixel, 16 | 32) && r.area() >= JPEG_MIN_AREA
        });
        let max = max_colours(r.area(), p, jpeg.is_some());
        // A JPEG candidate whose own pixels hold more colours than a
        // palette may (a photo): JPEG straight from the frame, without
        // translating the rectangle first only to count its colours. Where
        // the translation keeps every colour apart, the count is the same.
        if let Some(q) = jpeg.filter(|_| keeps_every_colour(pf)) {
            self.pal.clear();
            let fits = (r.y..r.y + r.h).all(|y| self.pal.add_all(frame.row(y, r.x, r.w), max));
            if !fits
                && self.jpeg.compress(frame, r, q, &mut self.jpeg_buf)
                && self.jpeg_buf.len() <= MAX_COMPACT_LEN
            {
                head.push(JPEG);
                write_compact_len(self.jpeg_buf.len(), head);
                head.extend_from_slice(&self.jpeg_buf);
                return;
            }
        }
        translate_rect(frame, r, pf, &mut self.px);
        self.pal.clear();
        let fits = self.pal.add_all(&self.px, max);
        let (w, ncol) = (r.w as usize, self.pal.len());
        if fits && ncol == 1 {
            head.push(FILL);
            write_tpixel(pf, rgb, self.px[0], head);
            return;
        }
        if !fits {
            if let Some(q) = jpeg {
                if self.jpeg.compress(frame, r, q, &mut self.jpeg_buf)
                    && self.jpeg_buf.len() <= MAX_COMPACT_LEN
                {
                    head.push(JPEG);
                    write_compact_len(self.jpeg_buf.len(), head);
                    head.extend_from_slice(&self.jpeg_buf);
                    return;
                }
            }
            // Full colour, copy filter (implicit), stream 0.
            head.push((STREAM_FULL as u8) << 4);
            if rgb {
                data.reserve(self.px.len() * 3);
                for &v in &self.px {
                    write_tpixel(pf, true, v, data);
                }
            } else {
                super::write_pixels(pf, &self.px, data);
            }
            piece.stream = Some(STREAM_FULL);
        } else {
            self.pal.sort_by_count();
            let stream = if ncol == 2 {
                STREAM_MONO
            } else {
                STREAM_INDEXED
            };
            head.push(EXPLICIT_FILTER | ((stream as u8) << 4));
            head.push(FILTER_PALETTE);
            head.push((ncol - 1) as u8);
            for &c in &self.pal.colours {
                write_tpixel(pf, rgb, c, head);
            }
            if ncol == 2 {
                let c1 = self.pal.colours[1];
                for row in self.px.chunks_exact(w) {
                    for bits in row.chunks(8) {
                        let mut b = 0u8;
                        for (i, &v) in bits.iter().enumerate() {
                            if v == c1 {
                                b |= 0x80 >> i;
                            }
                        }
                        data.push(b);
                    }
                }
            } else {
                let pal = &self.pal;
                data.extend(self.px.iter().map(|&v| pal.index(v) as u8));
            }
            piece.stream = Some(stream);
        }
        if data.len() < MIN_TO_COMPRESS {
            head.extend_from_slice(data);
            data.clear();
            piece.stream = None;
        }
    }
}

impl TightEncoder {
    /// Sub-rectangles one after the other on this thread.
    fn encode_serial(
        &mut self,
        s: &mut Scratch,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize {
        let level = zlib_level(p, DEFAULT_LEVEL);
        if s.workers.is_empty() {
            s.workers.push(Worker::default());
        }
        if s.pieces.is_empty() {
            s.pieces.push(Piece::default());
        }
        let (w, piece) = (&mut s.workers[0], &mut s.pieces[0]);
        let mut n = 0;
        for r in split(rect) {
            w.classify(frame, r, p, piece);
            out.rect_header(r, enc::TIGHT);
            let control = out.len();
            out.extend_from_slice(&piece.head);
            if let Some(stream) = piece.stream {
                if std::mem::take(&mut self.reset_due[stream]) {
                    out[control] |= 1 << stream;
                }
                s.packed.clear();
                self.z[stream].deflate_sync(level, &piece.data, &mut s.packed);
                write_compact_len(s.packed.len(), out);
                out.extend_from_slice(&s.packed);
            }
            n += 1;
        }
        n
    }

    /// Sub-rectangles classified (and JPEG-compressed) on up to `threads`
    /// threads, claimed one at a time; then each zlib stream's data
    /// compressed in order, in parallel segments ([`Deflater::deflate_pieces`]).
    fn encode_parallel(
        &mut self,
        s: &mut Scratch,
        frame: &Frame,
        rects: &[Rect],
        p: &EncodeParams,
        threads: usize,
        out: &mut UpdateBuf,
    ) {
        let level = zlib_level(p, DEFAULT_LEVEL);
        while s.workers.len() < threads {
            s.workers.push(Worker::default());
        }
        while s.pieces.len() < rects.len() {
            s.pieces.push(Piece::default());
        }
        let pieces = &mut s.pieces[..rects.len()];
        // Sub-rectangles are claimed one at a time, by this thread and the
        // helpers alike: a helper the scheduler starts late (the other core
        // is busy) finds them done instead of holding this thread at the
        // join with its share.
        let threads = threads.min(rects.len()).max(1);
        let next = AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<&mut Piece>> =
            pieces.iter_mut().map(std::sync::Mutex::new).collect();
        let work = |w: &mut Worker| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (Some(slot), Some(r)) = (slots.get(i), rects.get(i)) else {
                break;
            };
            let mut piece = slot.lock().unwrap_or_else(|e| e.into_inner());
            w.classify(frame, *r, p, &mut piece);
        };
        if let Some((own, helpers)) = s.workers[..threads].split_first_mut() {
            rayon::in_place_scope(|s| {
                for w in helpers {
                    let work = &work;
                    s.spawn(move |_| work(w));
                }
                work(own);
            });
        }
        drop(slots);
        let pieces = &mut s.pieces[..rects.len()];
        for stream in [STREAM_FULL, STREAM_MONO, STREAM_INDEXED] {
            let data: Vec<&[u8]> = pieces
                .iter()
                .filter(|pc| pc.stream == Some(stream))
                .map(|pc| pc.data.as_slice())
                .collect();
            if data.is_empty() {
                continue;
            }
            s.outs.resize_with(data.len(), Vec::new);
            for o in &mut s.outs {
                o.clear();
            }
            self.z[stream].deflate_pieces(level, &data, &mut s.outs[..data.len()], threads);
            // Move the compressed bytes into the pieces' data (no longer needed raw).
            let mut outs = s.outs.iter_mut();
            for pc in pieces.iter_mut().filter(|pc| pc.stream == Some(stream)) {
                if let Some(o) = outs.next() {
                    std::mem::swap(&mut pc.data, o);
                }
            }
        }
        for (pc, r) in pieces.iter().zip(rects) {
            out.rect_header(*r, enc::TIGHT);
            let control = out.len();
            out.extend_from_slice(&pc.head);
            if let Some(stream) = pc.stream {
                if std::mem::take(&mut self.reset_due[stream]) {
                    out[control] |= 1 << stream;
                }
                write_compact_len(pc.data.len(), out);
                out.extend_from_slice(&pc.data);
            }
        }
    }
}

impl Encoder for TightEncoder {
    fn encoding(&self) -> i32 {
        enc::TIGHT
    }

    fn rect_count(&self, rect: Rect, _p: &EncodeParams) -> usize {
        split(rect).count()
    }

    fn encode_detached(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        streams: &mut DetachedStreams,
        out: &mut UpdateBuf,
    ) -> usize {
        // The run's streams: each starts afresh for the viewer at its first
        // use in the run (reset bit, zlib header, empty window), so the
        // bytes fit any viewer's streams.
        streams.ensure(4, zlib_level(p, DEFAULT_LEVEL), true);
        let swap = |me: &mut Self, s: &mut DetachedStreams| {
            for (a, b) in me.z.iter_mut().zip(s.z.iter_mut()) {
                std::mem::swap(a, b);
            }
            std::mem::swap(&mut me.reset_due, &mut s.reset_due);
        };
        swap(self, streams);
        let n = self.encode(frame, rect, p, out);
        swap(self, streams);
        n
    }

    fn detached_sent(&mut self) {
        // The viewer's streams may now hold the shared bytes: each of ours
        // starts over, with the reset bit, at its next use.
        for z in &mut self.z {
            z.restart();
        }
        self.reset_due = [true; 4];
    }

    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize {
        let threads = parallel::threads_for_pixels(rect.area());
        let mut s = SCRATCH.take(parallel::may_wait(rect.area()));
        if threads <= 1 {
            self.encode_serial(&mut s, frame, rect, p, out)
        } else {
            let rects: Vec<Rect> = split(rect).collect();
            self.encode_parallel(&mut s, frame, &rects, p, threads, out);
            rects.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::keeps_every_colour;
    use crate::rfb::messages::enc;
    use crate::rfb::PixelFormat;

    #[test]
    fn lossless_round_trips() {
        testutil::lossless_suite(enc::TIGHT);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::TIGHT, &testutil::params(pf));
        }
    }

    use super::super::{new_encoder, EncodeParams};
    use super::{write_compact_len, MAX_COMPACT_LEN};
    use crate::capture::test_pattern::render;
    use crate::framebuffer::{Frame, Rect};
    use rfb_decode::Decoder;

    #[test]
    fn compact_length_boundaries() {
        for (len, want) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16383, vec![0xff, 0x7f]),
            (16384, vec![0x80, 0x80, 0x01]),
            (MAX_COMPACT_LEN, vec![0xff, 0xff, 0xff]),
        ] {
            let mut out = Vec::new();
            write_compact_len(len, &mut out);
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn wire_bytes_fill_and_mono() {
        let mut f = Frame::new(4, 1);
        f.fill(0x123456);
        let mut out = crate::rfb::UpdateBuf::new();
        let be = PixelFormat {
            big_endian: true,
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::NATIVE
        };
        new_encoder(enc::TIGHT).encode(&f, Rect::new(0, 0, 1, 1), &testutil::params(be), &mut out);
        // TPIXEL is R, G, B whatever the byte order and shifts.
        assert_eq!(
            *out,
            vec![0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 7, 0x80, 0x12, 0x34, 0x56]
        );
        f[2] = 0xffffff;
        out.clear();
        new_encoder(enc::TIGHT).encode(
            &f,
            f.bounds(),
            &testutil::params(PixelFormat::NATIVE),
            &mut out,
        );
        // Mono, stream 1, palette filter, 2 colours (most common first), 1 data byte raw.
        assert_eq!(
            *out,
            vec![
                0,
                0,
                0,
                0,
                0,
                4,
                0,
                1,
                0,
                0,
                0,
                7,
                0x50,
                1,
                1,
                0x12,
                0x34,
                0x56,
                0xff,
                0xff,
                0xff,
                0b0010_0000
            ]
        );
    }

    #[test]
    fn sub_rectangles_are_whole_jpeg_mcu_rows() {
        let rows = |w: u16, h: u16| -> Vec<u16> {
            super::split(Rect::new(0, 0, w, h)).map(|r| r.h).collect()
        };
        // A 1080p band: 32 + 32, not 34 + 30.
        assert_eq!(rows(1920, 64), [32, 32]);
        assert_eq!(rows(2048, 40), [32, 8]);
        assert_eq!(rows(300, 300), [208, 92]);
        // Wider than Tight allows: cut in columns too.
        assert_eq!(super::split(Rect::new(0, 0, 3000, 10)).count(), 2);
        for r in super::split(Rect::new(0, 0, 1920, 1080)) {
            assert!(r.area() <= super::MAX_AREA && r.w as usize <= super::MAX_WIDTH);
        }
    }

    #[test]
    fn kinds_and_split() {
        let p = testutil::params(PixelFormat::NATIVE);
        let mut e = new_encoder(enc::TIGHT);
        let mut d = Decoder::new();
        let f = testutil::palette_frame(300, 300, 2, &PixelFormat::NATIVE);
        testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "mono");
        // 300x300 is cut into pieces of at most 65536 pixels.
        assert_eq!(d.stats.rects.get(&enc::TIGHT), Some(&2));
        let f = testutil::palette_frame(50, 50, 40, &PixelFormat::NATIVE);
        testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "indexed");
        let f = render(100, 100, 1);
        testutil::roundtrip_with(e.as_mut(), &mut d, &f, Rect::new(0, 0, 8, 8), &p, 0, "fill");
        testutil::roundtrip_with(
            e.as_mut(),
            &mut d,
            &f,
            Rect::new(0, 40, 100, 60),
            &p,
            0,
            "full",
        );
        let k = &d.stats.tight_kinds;
        for kind in ["fill", "mono", "indexed", "full"] {
            assert!(k.contains_key(kind), "{kind} missing: {k:?}");
        }
        assert!(!k.contains_key("jpeg"));
        let f = testutil::palette_frame(4100, 2, 3, &PixelFormat::NATIVE);
        let mut d = Decoder::new();
        let mut e = new_encoder(enc::TIGHT);
        testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "wide");
        assert_eq!(d.stats.rects.get(&enc::TIGHT), Some(&3));
    }

    #[test]
    fn jpeg_only_for_many_colours_and_true_colour() {
        let f = render(320, 240, 2);
        for (q, tol) in [(9u8, 48u32), (5, 255), (0, 255)] {
            for pf in [PixelFormat::NATIVE, PixelFormat::RGB565] {
                let p = EncodeParams {
                    pf,
                    compress_level: Some(6),
                    quality_level: Some(q),
                };
                let mut e = new_encoder(enc::TIGHT);
                let mut d = Decoder::new();
                let size = testutil::roundtrip_with(
                    e.as_mut(),
                    &mut d,
                    &f,
                    f.bounds(),
                    &p,
                    tol,
                    &format!("jpeg q{q} {pf:?}"),
                );
                assert!(
                    d.stats.tight_kinds.get("jpeg").is_some_and(|&n| n > 0),
                    "q{q}"
                );
                assert!(size < 320 * 240 * 3, "q{q}: {size}");
                // Few colours stay lossless even with a quality level.
                let pal = testutil::palette_frame(64, 64, 20, &pf);
                testutil::roundtrip_with(
                    e.as_mut(),
                    &mut d,
                    &pal,
                    pal.bounds(),
                    &p,
                    0,
                    "palette with quality",
                );
            }
        }
        // Not for small areas, nor for 8-bit or colour-map formats: those stay exact.
        let p = EncodeParams {
            pf: PixelFormat::NATIVE,
            compress_level: None,
            quality_level: Some(0),
        };
        let mut d = Decoder::new();
        testutil::roundtrip_with(
            new_encoder(enc::TIGHT).as_mut(),
            &mut d,
            &f,
            Rect::new(100, 100, 31, 33),
            &p,
            0,
            "small",
        );
        assert!(!d.stats.tight_kinds.contains_key("jpeg"));
        assert!(
            d.stats.tight_kinds.contains_key("full"),
            "{:?}",
            d.stats.tight_kinds
        );
        for (name, pf) in testutil::formats() {
            if pf.bits_per_pixel == 8 {
                let p = EncodeParams {
                    pf,
                    compress_level: None,
                    quality_level: Some(3),
                };
                let mut d = Decoder::new();
                testutil::roundtrip_with(
                    new_encoder(enc::TIGHT).as_mut(),
                    &mut d,
                    &f,
                    f.bounds(),
                    &p,
                    0,
                    name,
                );
                assert!(!d.stats.tight_kinds.contains_key("jpeg"), "{name}");
            }
        }
    }

    /// The shortcut to JPEG counts colours before translating only where
    /// translating keeps them apart.
    #[test]
    fn colours_are_counted_untranslated_only_where_translation_keeps_them() {
        assert!(keeps_every_colour(&PixelFormat::NATIVE));
        let bgr = PixelFormat {
            red_shift: 0,
            blue_shift: 16,
            big_endian: true,
            ..PixelFormat::NATIVE
        };
        assert!(keeps_every_colour(&bgr));
        assert!(!keeps_every_colour(&PixelFormat::RGB565));
        let overlapping = PixelFormat {
            green_shift: 4,
            ..PixelFormat::NATIVE
        };
        assert!(!keeps_every_colour(&overlapping));
        let fewer_bits = PixelFormat {
            red_max: 127,
            ..PixelFormat::NATIVE
        };
        assert!(!keeps_every_colour(&fewer_bits));
        for (name, pf) in testutil::formats() {
            if keeps_every_colour(&pf) {
                assert_eq!(pf.bits_per_pixel, 32, "{name}");
            }
        }
    }

    #[test]
    fn every_compression_level_round_trips() {
        let f = render(160, 120, 4);
        let mut e = new_encoder(enc::TIGHT);
        let mut d = Decoder::new();
        for level in (0..=9).chain([3, 0, 9]) {
            let p = EncodeParams {
                pf: PixelFormat::NATIVE,
                compress_level: Some(level),
                quality_level: None,
            };
            testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "level");
        }
    }
}
