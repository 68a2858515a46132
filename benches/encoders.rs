//! Encoder speed on a 1920x1080 test-pattern frame and on a 64x64 change,
//! native pixel format. Each encoder keeps its state between iterations, as
//! on a real connection. Output sizes are printed once per case so speed can
//! be read together with compression.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use ticketvnc::capture::test_pattern::render;
use ticketvnc::encoding::{new_encoder, EncodeParams};
use ticketvnc::framebuffer::Rect;
use ticketvnc::rfb::messages::enc;
use ticketvnc::rfb::PixelFormat;

const CASES: &[(&str, i32, Option<u8>)] = &[
    ("raw", enc::RAW, None),
    ("rre", enc::RRE, None),
    ("hextile", enc::HEXTILE, None),
    ("zlib", enc::ZLIB, None),
    ("tight", enc::TIGHT, None),
    ("tight-jpeg-q6", enc::TIGHT, Some(6)),
    ("zrle", enc::ZRLE, None),
];

fn bench(c: &mut Criterion) {
    let frame = render(1920, 1080, 1);
    for (group_name, rect) in [
        ("frame_1920x1080", frame.bounds()),
        ("change_64x64", Rect::new(640, 480, 64, 64)),
    ] {
        let mut g = c.benchmark_group(group_name);
        g.throughput(Throughput::Elements(rect.area() as u64));
        for &(name, encoding, quality) in CASES {
            let p = EncodeParams {
                pf: PixelFormat::NATIVE,
                compress_level: None,
                quality_level: quality,
            };
            let mut e = new_encoder(encoding);
            let mut out = Vec::new();
            e.encode(&frame, rect, &p, &mut out);
            println!(
                "size {group_name}/{name}: {} bytes ({:.3} of raw)",
                out.len(),
                out.len() as f64 / (rect.area() * 4 + 12) as f64
            );
            g.bench_function(name, |b| {
                b.iter(|| {
                    out.clear();
                    black_box(e.encode(black_box(&frame), rect, &p, &mut out));
                })
            });
        }
        g.finish();
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
