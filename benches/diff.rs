//! Tile diffing on a 1920x1080 frame: no change (the idle case), one 64x64
//! change, and the same change with the capture's damage hint. The baseline
//! for ratios is a plain memcmp of the two frames, measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use ticketvnc::capture::test_pattern::render;
use ticketvnc::framebuffer::diff::changed_rects;
use ticketvnc::framebuffer::Rect;

fn bench(c: &mut Criterion) {
    let old = render(1920, 1080, 1);
    let same = old.clone();
    let mut changed = old.clone();
    let spot = Rect::new(640, 480, 64, 64);
    for y in spot.y..spot.y + spot.h {
        for x in spot.x..spot.x + spot.w {
            changed.pixels[y as usize * 1920 + x as usize] ^= 0x00ff_ffff;
        }
    }
    let all = old.bounds();
    let mut g = c.benchmark_group("diff_1920x1080");
    g.bench_function("memcmp_baseline", |b| {
        b.iter(|| black_box(black_box(&old.pixels) == black_box(&same.pixels)))
    });
    g.bench_function("no_change_full_compare", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&same), all, None)))
    });
    g.bench_function("change_64x64_full_compare", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&changed), all, None)))
    });
    let hint = [spot];
    g.bench_function("change_64x64_damage_hint", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&changed), all, Some(&hint))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
