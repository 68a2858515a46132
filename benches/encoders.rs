//! Encoder speed on 1920x1080 frames like the ones a helpdesk sees (a
//! terminal full of text, a web page, a photo): recorded real frames
//! (benches/frames/, `recorded_*` groups: an xterm under Xvfb, a page
//! rendered by chromium, a photo-like plasma fractal; see
//! scripts/record-bench-frames.sh) and the same three kinds generated
//! deterministically here; whole frames, their 64-row bands and a 64x64
//! change; native pixel format. Each encoder keeps its
//! state between iterations, as on a real connection. Output sizes are
//! printed once per case so speed can be read together with compression.
//! Whole frames run with 1 and with 2 threads per encoder call (`/t1`,
//! `/t2`), to show how parallel encoding scales.

#[path = "frames/load.rs"]
mod recorded;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use ticketvnc::encoding::parallel::{set_threads, PAR_MIN_PIXELS};
use ticketvnc::encoding::{new_encoder, DetachedStreams, EncodeParams};
use ticketvnc::framebuffer::{Frame, Rect};
use ticketvnc::rfb::messages::enc;
use ticketvnc::rfb::PixelFormat;

/// (name, encoding, compression level, quality level). Level 1 and quality
/// 8 are what `ticketvnc bench` asks every server for.
const CASES: &[(&str, i32, Option<u8>, Option<u8>)] = &[
    ("raw", enc::RAW, None, None),
    ("zlib-l1", enc::ZLIB, Some(1), None),
    ("tight-l1", enc::TIGHT, Some(1), None),
    ("tight-jpeg-q8", enc::TIGHT, Some(1), Some(8)),
    ("zrle-l1", enc::ZRLE, Some(1), None),
    ("zrle-l6", enc::ZRLE, Some(6), None),
];

const W: usize = 1920;
const H: usize = 1080;

/// xorshift64*, fixed seeds: the same frames on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An 8x16 pseudo-glyph (fixed 6x11 bit pattern per character) at (x, y).
fn glyph(px: &mut [u32], x: usize, y: usize, c: u64, fg: u32) {
    let mut r = Rng(0x9E37_79B9 + c);
    for gy in 3..14 {
        let bits = r.next();
        for gx in 1..7 {
            if bits >> gx & 1 == 1 {
                px[(y + gy) * W + x + gx] = fg;
            }
        }
    }
}

/// Lines of words in a few colours on `bg` inside (x0, y0, w, h).
fn text(
    px: &mut [u32],
    rng: &mut Rng,
    (x0, y0, w, h): (usize, usize, usize, usize),
    bg: u32,
    fgs: &[u32],
) {
    for y in y0..y0 + h {
        px[y * W + x0..y * W + x0 + w].fill(bg);
    }
    for row in 0..h / 16 {
        let len = rng.below((w / 8) as u64) as usize;
        let mut col = 0;
        while col < len {
            let fg = fgs[rng.below(fgs.len() as u64) as usize];
            let word = 2 + rng.below(8) as usize;
            for _ in 0..word.min(len - col) {
                glyph(px, x0 + col * 8, y0 + row * 16, rng.below(94), fg);
                col += 1;
            }
            col += 1;
        }
    }
}

/// Smooth gradients (a coarse grid of random colours, interpolated) plus
/// per-pixel noise of +-12 in (x0, y0, w, h).
fn photo(px: &mut [u32], rng: &mut Rng, (x0, y0, w, h): (usize, usize, usize, usize)) {
    let cell = 120;
    let gw = w / cell + 2;
    let grid: Vec<[i32; 3]> = (0..gw * (h / cell + 2))
        .map(|_| {
            let c = rng.next();
            [
                (c & 0xff) as i32,
                (c >> 8 & 0xff) as i32,
                (c >> 16 & 0xff) as i32,
            ]
        })
        .collect();
    for y in 0..h {
        let (gy, fy) = (y / cell, ((y % cell) * 256 / cell) as i32);
        for x in 0..w {
            let (gx, fx) = (x / cell, ((x % cell) * 256 / cell) as i32);
            let n = rng.next();
            let mut p = 0u32;
            for (ch, shift) in [(0usize, 16u32), (1, 8), (2, 0)] {
                let g = |i: usize, j: usize| grid[j * gw + i][ch];
                let a = g(gx, gy) * (256 - fx) + g(gx + 1, gy) * fx;
                let b = g(gx, gy + 1) * (256 - fx) + g(gx + 1, gy + 1) * fx;
                let v = (a * (256 - fy) + b * fy) >> 16;
                let noise = ((n >> (ch * 8)) & 0x1f) as i32 - 12;
                p |= ((v + noise).clamp(0, 255) as u32) << shift;
            }
            px[(y0 + y) * W + x0 + x] = p;
        }
    }
}

/// A terminal: light grey text on black, a coloured prompt now and then.
fn terminal() -> Frame {
    let mut f = vec![0u32; W * H];
    let mut rng = Rng(11);
    text(
        &mut f,
        &mut rng,
        (0, 0, W, H),
        0x000000,
        &[0xd0d0d0, 0xd0d0d0, 0x4ec94e, 0x5c8cff],
    );
    Frame::from_pixels(W as u16, H as u16, f)
}

/// A web page: a header bar, a sidebar, text columns, two pictures.
fn web_page() -> Frame {
    let mut f = vec![0u32; W * H];
    let mut rng = Rng(12);
    let px = &mut f;
    px.fill(0xf4f4f4);
    for y in 0..72 {
        px[y * W..(y + 1) * W].fill(0x1a73e8);
    }
    text(px, &mut rng, (16, 24, 900, 32), 0x1a73e8, &[0xffffff]);
    text(
        px,
        &mut rng,
        (0, 72, 280, H - 72),
        0xe8eaed,
        &[0x3c4043, 0x1a0dab],
    );
    text(
        px,
        &mut rng,
        (320, 100, 900, 400),
        0xffffff,
        &[0x202124, 0x202124, 0x1a0dab],
    );
    photo(px, &mut rng, (320, 520, 600, 400));
    text(px, &mut rng, (960, 520, 600, 500), 0xffffff, &[0x202124]);
    photo(px, &mut rng, (1300, 100, 560, 380));
    Frame::from_pixels(W as u16, H as u16, f)
}

fn photo_frame() -> Frame {
    let mut f = vec![0u32; W * H];
    photo(&mut f, &mut Rng(13), (0, 0, W, H));
    Frame::from_pixels(W as u16, H as u16, f)
}

fn bench(c: &mut Criterion) {
    let frames = [
        ("terminal", terminal()),
        ("web", web_page()),
        ("photo", photo_frame()),
        ("recorded_terminal", recorded::load("terminal.png")),
        ("recorded_web", recorded::load("web.png")),
        ("recorded_photo", recorded::photo()),
    ];
    for (frame_name, frame) in &frames {
        // A full-screen change reaches the encoder as one rectangle per
        // 64-pixel tile row (src/framebuffer/diff.rs): "rows" encodes those.
        let rows: Vec<Rect> = (0..H as u16)
            .step_by(64)
            .map(|y| Rect::new(0, y, W as u16, 64.min(H as u16 - y)))
            .collect();
        for (group_name, rects) in [
            (format!("{frame_name}_1920x1080"), vec![frame.bounds()]),
            (format!("{frame_name}_rows_1920x64"), rows),
            (
                format!("{frame_name}_change_64x64"),
                vec![Rect::new(640, 480, 64, 64)],
            ),
        ] {
            let area: usize = rects.iter().map(|r| r.area()).sum();
            let mut g = c.benchmark_group(&group_name);
            g.throughput(Throughput::Elements(area as u64));
            // Whole frames on 1 and 2 threads per encoder call; a 64x64
            // change is always encoded on the calling thread.
            let thread_counts: &[usize] = if rects[0].area() >= PAR_MIN_PIXELS {
                &[1, 2]
            } else {
                &[1]
            };
            for &(name, encoding, compress_level, quality_level) in CASES {
                for &threads in thread_counts {
                    set_threads(threads);
                    let p = EncodeParams {
                        pf: PixelFormat::NATIVE,
                        compress_level,
                        quality_level,
                    };
                    let mut e = new_encoder(encoding);
                    let mut out = ticketvnc::rfb::UpdateBuf::new();
                    for &r in &rects {
                        e.encode(frame, r, &p, &mut out);
                    }
                    let id = format!("{name}/t{threads}");
                    println!(
                        "size {group_name}/{id}: {} bytes ({:.3} of raw)",
                        out.len(),
                        out.len() as f64 / (area * 4 + 12) as f64
                    );
                    if rects.len() > 1 {
                        // The same bands as viewers with the same settings
                        // share them (src/encoding/shared.rs): one run,
                        // starting with an empty window.
                        let mut shared = ticketvnc::rfb::UpdateBuf::new();
                        let mut e = new_encoder(encoding);
                        let mut run = DetachedStreams::default();
                        for &r in &rects {
                            e.encode_detached(frame, r, &p, &mut run, &mut shared);
                        }
                        println!(
                            "size {group_name}/{id} shared: {} bytes ({:.4}x the connection's own)",
                            shared.len(),
                            shared.len() as f64 / out.len() as f64
                        );
                    }
                    g.bench_function(&id, |b| {
                        b.iter(|| {
                            out.clear();
                            for &r in &rects {
                                black_box(e.encode(black_box(frame), r, &p, &mut out));
                            }
                        })
                    });
                }
            }
            set_threads(0);
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
