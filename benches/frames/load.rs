//! The recorded frames of benches/frames/ (scripts/record-bench-frames.sh),
//! decoded with the `png` crate into ticketvnc frames (`0x00RRGGBB`).
//! Shared by benches/encoders.rs and benches/diff.rs through `#[path]`.

#![allow(dead_code)] // each bench uses some of these

use std::path::PathBuf;
use ticketvnc::framebuffer::Frame;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/frames")
        .join(name)
}

/// A recorded PNG (8-bit RGB or RGBA) as a frame.
pub fn load(name: &str) -> Frame {
    let file = std::fs::File::open(path(name))
        .unwrap_or_else(|e| panic!("{name}: {e} (scripts/record-bench-frames.sh records it)"));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().expect("frame size")];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{name}: 8-bit PNG");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{name}: {other:?}, expected RGB or RGBA"),
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut f = vec![0u32; w * h];
    for y in 0..h {
        let row = &buf[y * info.line_size..][..w * channels];
        for (x, px) in row.chunks_exact(channels).enumerate() {
            f[y * w + x] = (px[0] as u32) << 16 | (px[1] as u32) << 8 | px[2] as u32;
        }
    }
    Frame::from_pixels(w as u16, h as u16, f)
}

/// The photo: photo-960x540.png scaled up 2x (bilinear) with seeded noise
/// of -4..+3 per channel, the pixel-level grain a camera picture has and a
/// scaled-up one lacks. A 1080p photo does not fit in 1 MiB as PNG.
pub fn photo() -> Frame {
    let small = load("photo-960x540.png");
    let (sw, sh) = (small.width as usize, small.height as usize);
    let (w, h) = (sw * 2, sh * 2);
    let mut f = vec![0u32; w * h];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let at =
        |x: usize, y: usize, shift: u32| (small.get(x as u16, y as u16) >> shift & 0xff) as i32;
    for y in 0..h {
        // Source coordinates of the pixel centre, in halves.
        let sy = (y as i32 * 2 - 1).max(0) as usize;
        let (y0, fy) = (sy / 4, (sy % 4) as i32);
        let y1 = (y0 + 1).min(sh - 1);
        for x in 0..w {
            let sx = (x as i32 * 2 - 1).max(0) as usize;
            let (x0, fx) = (sx / 4, (sx % 4) as i32);
            let x1 = (x0 + 1).min(sw - 1);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut p = 0u32;
            for (i, shift) in [16u32, 8, 0].into_iter().enumerate() {
                let top = at(x0, y0, shift) * (4 - fx) + at(x1, y0, shift) * fx;
                let bottom = at(x0, y1, shift) * (4 - fx) + at(x1, y1, shift) * fx;
                let v = (top * (4 - fy) + bottom * fy + 8) / 16;
                let noise = (seed >> (i * 8) & 7) as i32 - 4;
                p |= ((v + noise).clamp(0, 255) as u32) << shift;
            }
            f[y * w + x] = p;
        }
    }
    Frame::from_pixels(w as u16, h as u16, f)
}
