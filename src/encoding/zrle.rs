//! ZRLE (16): 64x64 tiles through one zlib stream per connection. Each tile
//! is sent in the smallest of: raw CPIXELs, solid, packed palette (2..16
//! colours), plain RLE, palette RLE (2..127 colours).

use super::{
    parallel, write_cpixels, zlib_level, Deflater, DetachedStreams, EncodeParams, Encoder, Palette,
    ScratchPool,
};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;
use crate::rfb::UpdateBuf;

const DEFAULT_LEVEL: u32 = 6;
const TILE: usize = 64;

/// A viewer's ZRLE state: its zlib stream (made at first use). The
/// buffers a call needs come from [`SCRATCH`], so a viewer holds none
/// between updates.
pub struct ZrleEncoder {
    z: Deflater,
}

impl Default for ZrleEncoder {
    fn default() -> Self {
        ZrleEncoder {
            z: Deflater::new(DEFAULT_LEVEL),
        }
    }
}

/// The buffers of one encoder call.
#[derive(Default)]
struct Scratch {
    /// Scratch of each encoding thread (the first is the caller's).
    workers: Vec<Worker>,
    outs: Vec<Vec<u8>>,
    packed: Vec<u8>,
}

/// Shared by every viewer's ZRLE encoder.
static SCRATCH: ScratchPool<Scratch> = ScratchPool::new();

/// What one thread needs to encode a run of tiles.
#[derive(Default)]
struct Worker {
    tile: Vec<u32>,
    raw: Vec<u8>,
    pal: Palette,
}

impl Worker {
    /// Append tiles `tiles` (numbered row-major over `rect`, `cols` tiles
    /// per row) to `raw`, uncompressed, translating each tile's pixels
    /// straight from the frame.
    fn encode_tiles(
        &mut self,
        frame: &Frame,
        rect: Rect,
        cols: usize,
        tiles: std::ops::Range<usize>,
        pf: &PixelFormat,
    ) {
        let (w, h) = (rect.w as usize, rect.h as usize);
        for t in tiles {
            let (tx, ty) = ((t % cols) * TILE, (t / cols) * TILE);
            let (tw, th) = ((w - tx).min(TILE), (h - ty).min(TILE));
            self.tile.clear();
            for y in ty..ty + th {
                pf.translate_into(
                    frame.row(rect.y + y as u16, rect.x + tx as u16, tw as u16),
                    &mut self.tile,
                );
            }
            encode_tile(pf, &self.tile, tw, th, &mut self.pal, &mut self.raw);
        }
    }
}

/// Bytes of a ZRLE run length `len` (>= 1): 255s, then the remainder.
#[inline]
fn run_len_bytes(len: usize) -> usize {
    (len - 1) / 255 + 1
}

fn write_run_len(len: usize, out: &mut Vec<u8>) {
    let mut l = len - 1;
    while l >= 255 {
        out.push(255);
        l -= 255;
    }
    out.push(l as u8);
}

impl Encoder for ZrleEncoder {
    fn encoding(&self) -> i32 {
        enc::ZRLE
    }

    fn encode_detached(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        streams: &mut DetachedStreams,
        out: &mut UpdateBuf,
    ) -> usize {
        // The run's deflater (empty window at its start, no zlib header):
        // its bytes continue any viewer's started stream.
        streams.ensure(1, zlib_level(p, DEFAULT_LEVEL), false);
        std::mem::swap(&mut self.z, &mut streams.z[0]);
        let n = self.encode(frame, rect, p, out);
        std::mem::swap(&mut self.z, &mut streams.z[0]);
        n
    }

    fn takes_detached(&self) -> bool {
        // Detached bytes carry no zlib header: the stream must have sent it.
        self.z.is_started()
    }

    fn detached_sent(&mut self) {
        self.z.forget_history();
    }

    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize {
        let mut s = SCRATCH.take(parallel::may_wait(rect.area()));
        self.encode_with(&mut s, frame, rect, p, out);
        1
    }
}

impl ZrleEncoder {
    fn encode_with(
        &mut self,
        sc: &mut Scratch,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) {
        let pf = &p.pf;
        let level = zlib_level(p, DEFAULT_LEVEL);
        let cols = (rect.w as usize).div_ceil(TILE);
        let ntiles = cols * (rect.h as usize).div_ceil(TILE);
        let threads = parallel::threads_for_pixels(rect.area()).min(ntiles);
        while sc.workers.len() < threads.max(1) {
            sc.workers.push(Worker::default());
        }
        sc.packed.clear();
        if threads <= 1 {
            let w = &mut sc.workers[0];
            w.raw.clear();
            w.encode_tiles(frame, rect, cols, 0..ntiles, pf);
            // Still split the compression when there is a lot of it.
            self.z
                .deflate_sync_par(level, &w.raw, &mut sc.packed, parallel::threads());
        } else {
            // Runs of tiles (in the order they are sent), one per thread,
            // then the stream in parallel segments.
            rayon::in_place_scope(|s| {
                let mut own = None;
                for (k, (tiles, w)) in parallel::ranges(ntiles, threads)
                    .into_iter()
                    .zip(sc.workers.iter_mut())
                    .enumerate()
                {
                    let job = move || {
                        w.raw.clear();
                        w.encode_tiles(frame, rect, cols, tiles, pf);
                    };
                    if k == 0 {
                        own = Some(job);
                    } else {
                        s.spawn(move |_| job());
                    }
                }
                if let Some(job) = own {
                    job();
                }
            });
            let raws: Vec<&[u8]> = sc.workers[..threads]
                .iter()
                .map(|w| w.raw.as_slice())
                .collect();
            sc.outs.resize_with(threads, Vec::new);
            for o in &mut sc.outs {
                o.clear();
            }
            self.z
                .deflate_pieces(level, &raws, &mut sc.outs[..threads], threads);
            for o in &sc.outs[..threads] {
                sc.packed.extend_from_slice(o);
            }
        }
        out.rect_header(rect, enc::ZRLE);
        out.extend_from_slice(&(sc.packed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sc.packed);
    }
}

fn encode_tile(
    pf: &PixelFormat,
    t: &[u32],
    tw: usize,
    th: usize,
    pal: &mut Palette,
    out: &mut Vec<u8>,
) {
    let cpix = pf.cpixel_size();
    let n = t.len();
    pal.clear();
    let mut pal_ok = true;
    let mut runs_cost = 0usize; // plain RLE: run-length bytes
    let mut nruns = 0usize;
    let mut pal_runs_cost = 0usize; // palette RLE: index and length bytes
    let mut i = 0;
    while i < n {
        let v = t[i];
        let mut j = i + 1;
        while j < n && t[j] == v {
            j += 1;
        }
        let len = j - i;
        nruns += 1;
        runs_cost += run_len_bytes(len);
        pal_runs_cost += if len == 1 { 1 } else { 1 + run_len_bytes(len) };
        if pal_ok && !pal.add(v, len as u32, 127) {
            pal_ok = false;
        }
        i = j;
    }
    let k = pal.len();
    if pal_ok && k == 1 {
        out.push(1);
        pf.write_cpixel(t[0], out);
        return;
    }
    let raw = n * cpix;
    let plain_rle = nruns * cpix + runs_cost;
    let (packed, pal_rle) = if pal_ok {
        let bits = match k {
            2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        let packed = if k <= 16 {
            k * cpix + th * (tw * bits).div_ceil(8)
        } else {
            usize::MAX
        };
        (packed, k * cpix + pal_runs_cost)
    } else {
        (usize::MAX, usize::MAX)
    };
    let best = raw.min(plain_rle).min(packed).min(pal_rle);
    if best == raw {
        out.push(0);
        write_cpixels(pf, t, out);
    } else if best == packed {
        out.push(k as u8);
        write_cpixels(pf, &pal.colours, out);
        let bits = match k {
            2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        for row in t.chunks_exact(tw) {
            let mut byte = 0u8;
            let mut nbits = 0;
            for &v in row {
                byte = (byte << bits) | pal.index(v) as u8;
                nbits += bits;
                if nbits == 8 {
                    out.push(byte);
                    byte = 0;
                    nbits = 0;
                }
            }
            if nbits > 0 {
                out.push(byte << (8 - nbits));
            }
        }
    } else if best == pal_rle {
        out.push(128 + k as u8);
        write_cpixels(pf, &pal.colours, out);
        for_each_run(t, |v, len| {
            let idx = pal.index(v) as u8;
            if len == 1 {
                out.push(idx);
            } else {
                out.push(idx | 128);
                write_run_len(len, out);
            }
        });
    } else {
        out.push(128);
        for_each_run(t, |v, len| {
            pf.write_cpixel(v, out);
            write_run_len(len, out);
        });
    }
}

#[inline]
fn for_each_run(t: &[u32], mut f: impl FnMut(u32, usize)) {
    let mut i = 0;
    while i < t.len() {
        let v = t[i];
        let mut j = i + 1;
        while j < t.len() && t[j] == v {
            j += 1;
        }
        f(v, j - i);
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use crate::rfb::messages::enc;
    use crate::rfb::PixelFormat;

    #[test]
    fn lossless_round_trips() {
        testutil::lossless_suite(enc::ZRLE);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::ZRLE, &testutil::params(pf));
        }
    }

    use super::super::testutil::client_pf;
    use super::super::{new_encoder, EncodeParams};
    use crate::framebuffer::Frame;
    use rfb_decode::{ClientFramebuffer, Decoder};

    /// A frame whose 64x64 tiles need each ZRLE subencoding in turn.
    fn tiles_frame() -> Frame {
        let mut f = Frame::new(64 * 6, 64);
        for y in 0..64usize {
            for x in 0..64 * 6usize {
                let (t, lx) = (x / 64, x % 64);
                let i = y * 64 + lx;
                let noise = (i as u32).wrapping_mul(2654435761) >> 8;
                f[y * 64 * 6 + x] = match t {
                    0 => 0x123456,                                                       // solid
                    1 => [0x000000, 0xffffff][(lx ^ y) & 1], // 2 colours, packed
                    2 => [0x10, 0x2000, 0x300000, 0x404040, 0x555555][(lx / 3 + y) % 5], // packed, 4 bits
                    3 => noise & 0xffffff,                                               // raw
                    4 => ((i / 40) as u32).wrapping_mul(0x010305), // many colours, long runs: plain RLE
                    _ => [0xff0000, 0x00ff00, 0x0000ff][(i / 40) % 3], // few colours, runs: palette RLE
                };
            }
        }
        f
    }

    #[test]
    fn every_subencoding_is_used_and_exact() {
        let f = tiles_frame();
        let p = testutil::params(PixelFormat::NATIVE);
        let mut e = new_encoder(enc::ZRLE);
        let mut d = Decoder::new();
        testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "tiles");
        let t = &d.stats.zrle_tiles;
        assert_eq!(t.get(&1), Some(&1), "{t:?}");
        assert_eq!(t.get(&2), Some(&1), "{t:?}");
        assert_eq!(t.get(&5), Some(&1), "{t:?}");
        assert_eq!(t.get(&0), Some(&1), "{t:?}");
        assert_eq!(t.get(&128), Some(&1), "{t:?}");
        assert_eq!(t.get(&131), Some(&1), "{t:?}");
    }

    #[test]
    fn solid_tile_wire_bytes() {
        // One 1x1 tile of 0x123456 in the BE 24/16/8 format: subencoding 1,
        // then the CPIXEL = the three most significant bytes.
        let pf = PixelFormat {
            big_endian: true,
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::NATIVE
        };
        let mut f = Frame::new(1, 1);
        f[0] = 0x123456;
        let mut out = crate::rfb::UpdateBuf::new();
        new_encoder(enc::ZRLE).encode(
            &f,
            f.bounds(),
            &EncodeParams {
                pf,
                compress_level: Some(1),
                quality_level: None,
            },
            &mut out,
        );
        assert_eq!(&out[..12], &[0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16]);
        let len = u32::from_be_bytes(out[12..16].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 16 + len);
        let mut z = flate2::Decompress::new(true);
        let mut raw = Vec::with_capacity(64);
        z.decompress_vec(&out[16..], &mut raw, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(raw, vec![1, 0x12, 0x34, 0x56]);
        let mut fb = ClientFramebuffer::new(1, 1, client_pf(&pf));
        Decoder::new().decode_update(&out, 1, &mut fb).unwrap();
        assert_eq!(fb.pixels[0], 0x1234_5600);
    }
}
