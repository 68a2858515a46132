//! JPEG for Tight: libjpeg-turbo (through the `turbojpeg` crate, linked to
//! the system's libturbojpeg found with pkg-config) reads the frame's
//! `0x00RRGGBB` pixels in place, as BGRX rows (XRGB on a big-endian host)
//! with the frame's pitch: no copy (unless the rows lie in two of the
//! frame's bands) and no RGB repack. Windows and macOS
//! builds (cross-compiled here, where no libturbojpeg for the target
//! exists) keep the pure-Rust `jpeg-encoder` crate on an RGB copy of the
//! rectangle. Both use TigerVNC's quality table and subsampling.

use crate::framebuffer::{Frame, Rect};

/// JPEG quality for quality levels 0..=9 (TigerVNC's table).
pub const JPEG_QUALITY: [u8; 10] = [15, 29, 41, 42, 62, 77, 79, 86, 92, 100];

/// Chrominance subsampling for a quality level (TigerVNC's table):
/// 4:2:0 for 0..=2, 4:2:2 for 3..=5, none (4:4:4) above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsampling {
    S420,
    S422,
    S444,
}

pub fn subsampling(quality_level: u8) -> Subsampling {
    match quality_level.min(9) {
        0..=2 => Subsampling::S420,
        3..=5 => Subsampling::S422,
        _ => Subsampling::S444,
    }
}

/// One JPEG compressor (not shared between threads; each encoding thread
/// keeps its own).
#[derive(Default)]
pub struct JpegCompressor {
    #[cfg(all(target_os = "linux", feature = "turbojpeg"))]
    tj: Option<turbojpeg::Compressor>,
    /// libturbojpeg's output buffer, kept at the largest size asked for
    /// (its worst case, several times the JPEG): resizing the caller's
    /// buffer up to that each time zero-filled megabytes per frame.
    #[cfg(all(target_os = "linux", feature = "turbojpeg"))]
    scratch: Vec<u8>,
    /// A rectangle whose rows lie in two bands of the frame, copied.
    #[cfg(all(target_os = "linux", feature = "turbojpeg"))]
    rows: Vec<u32>,
    #[cfg(not(all(target_os = "linux", feature = "turbojpeg")))]
    rgb: Vec<u8>,
}

impl JpegCompressor {
    /// Compress `r` of `frame` at `quality_level` (0..=9) into `out`
    /// (cleared). False when the library fails (the caller then sends the
    /// rectangle losslessly).
    pub fn compress(
        &mut self,
        frame: &Frame,
        r: Rect,
        quality_level: u8,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        if r.w == 0
            || r.h == 0
            || r.right() > frame.width as u32
            || r.bottom() > frame.height as u32
        {
            return false;
        }
        self.compress_impl(frame, r, quality_level.min(9), out)
    }

    #[cfg(all(target_os = "linux", feature = "turbojpeg"))]
    fn compress_impl(&mut self, frame: &Frame, r: Rect, q: u8, out: &mut Vec<u8>) -> bool {
        use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};
        if self.tj.is_none() {
            match Compressor::new() {
                Ok(c) => self.tj = Some(c),
                Err(e) => {
                    tracing::warn!("libturbojpeg: cannot create a compressor: {e}");
                    return false;
                }
            }
        }
        let Some(tj) = self.tj.as_mut() else {
            return false;
        };
        tj.set_quality(JPEG_QUALITY[q as usize] as i32);
        tj.set_subsamp(match subsampling(q) {
            Subsampling::S420 => Subsamp::Sub2x2,
            Subsampling::S422 => Subsamp::Sub2x1,
            Subsampling::S444 => Subsamp::None,
        });
        // Straight from the frame when one band holds the rows, else
        // through a copy of the rectangle.
        let (pixels, stride) = match frame.rows(r.y, r.h) {
            Some(rows) => {
                let stride = frame.width as usize;
                let end = (r.h as usize - 1) * stride + r.right() as usize;
                (&rows[r.x as usize..end], stride)
            }
            None => {
                frame.copy_rect(r, &mut self.rows);
                (&self.rows[..], r.w as usize)
            }
        };
        let pixels: &[u8] = bytemuck::cast_slice(pixels);
        let image = Image {
            pixels,
            width: r.w as usize,
            pitch: stride * 4,
            height: r.h as usize,
            // 0x00RRGGBB in memory order.
            format: if cfg!(target_endian = "little") {
                PixelFormat::BGRX
            } else {
                PixelFormat::XRGB
            },
        };
        let Ok(cap) = tj.buf_len(r.w as usize, r.h as usize) else {
            return false;
        };
        if self.scratch.len() < cap {
            self.scratch.resize(cap, 0);
        }
        match tj.compress_to_slice(image, &mut self.scratch[..cap]) {
            Ok(n) => {
                out.extend_from_slice(&self.scratch[..n]);
                true
            }
            Err(e) => {
                tracing::debug!("libturbojpeg: {e}");
                out.clear();
                false
            }
        }
    }

    #[cfg(not(all(target_os = "linux", feature = "turbojpeg")))]
    fn compress_impl(&mut self, frame: &Frame, r: Rect, q: u8, out: &mut Vec<u8>) -> bool {
        use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
        self.rgb.clear();
        self.rgb.reserve(r.area() * 3);
        for y in r.y..r.y + r.h {
            for &v in frame.row(y, r.x, r.w) {
                self.rgb
                    .extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
        }
        let mut enc = Encoder::new(out, JPEG_QUALITY[q as usize]);
        enc.set_sampling_factor(match subsampling(q) {
            Subsampling::S420 => SamplingFactor::R_4_2_0,
            Subsampling::S422 => SamplingFactor::R_4_2_2,
            Subsampling::S444 => SamplingFactor::R_4_4_4,
        });
        enc.encode(&self.rgb, r.w, r.h, ColorType::Rgb).is_ok()
    }
}
