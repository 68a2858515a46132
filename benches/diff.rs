//! Tile diffing on a 1920x1080 frame: no change (the idle case), one 64x64
//! change, and the same change with the capture's damage hint. The baseline
//! for ratios is a plain memcmp of the two frames, measured in the same run.
//! Then consecutive recorded frames (benches/frames/, an xterm under Xvfb):
//! a command typed at the prompt (one text line changes) and its output
//! scrolling the screen up three lines (nearly every row changes), and the
//! recorded web page against itself.

#[path = "frames/load.rs"]
mod recorded;

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use ticketvnc::capture::test_pattern::render;
use ticketvnc::framebuffer::diff::changed_rects;
use ticketvnc::framebuffer::{Frame, Rect};

fn bench(c: &mut Criterion) {
    let old = render(1920, 1080, 1);
    // Copies in memory of their own (as two sources' frames are): every
    // row is compared. A clone shares the bands it does not write, as the
    // X11 source's frames do; those rows are skipped.
    let deep = |f: &Frame| Frame::from_pixels(f.width, f.height, f.to_pixels());
    let same = deep(&old);
    let mut shared = old.clone();
    let spot = Rect::new(640, 480, 64, 64);
    for y in spot.y..spot.y + spot.h {
        for x in spot.x..spot.x + spot.w {
            let v = shared.get(x, y) ^ 0x00ff_ffff;
            shared.set(x, y, v);
        }
    }
    let changed = deep(&shared);
    let old_pixels = old.to_pixels();
    let same_pixels = same.to_pixels();
    let all = old.bounds();
    let mut g = c.benchmark_group("diff_1920x1080");
    g.bench_function("memcmp_baseline", |b| {
        b.iter(|| black_box(black_box(&old_pixels) == black_box(&same_pixels)))
    });
    g.bench_function("no_change_full_compare", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&same), all, None)))
    });
    g.bench_function("change_64x64_full_compare", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&changed), all, None)))
    });
    g.bench_function("change_64x64_shared_bands", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&shared), all, None)))
    });
    let hint = [spot];
    g.bench_function("change_64x64_damage_hint", |b| {
        b.iter(|| black_box(changed_rects(&old, black_box(&changed), all, Some(&hint))))
    });
    g.finish();

    let terminal = recorded::load("terminal.png");
    let typed = recorded::load("terminal-typed.png");
    let scrolled = recorded::load("terminal-scrolled.png");
    let web = recorded::load("web.png");
    let web_same = web.clone();
    let mut g = c.benchmark_group("diff_recorded_1920x1080");
    for (name, old, new) in [
        ("terminal_typed", &terminal, &typed),
        ("terminal_scrolled", &typed, &scrolled),
        ("web_no_change", &web, &web_same),
    ] {
        let rects = changed_rects(old, new, old.bounds(), None);
        let area: usize = rects.iter().map(|r| r.area()).sum();
        println!(
            "diff {name}: {} rectangles, {area} pixels ({:.1}% of the frame)",
            rects.len(),
            area as f64 * 100.0 / old.bounds().area() as f64
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(changed_rects(old, black_box(new), old.bounds(), None)))
        });
    }
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
