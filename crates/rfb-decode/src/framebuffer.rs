//! The viewer's side: its framebuffer and the rectangles of an update.

use crate::{DecodeError, PixelFormat};

/// A rectangle header's position and size (rfbproto.rst,
/// "FramebufferUpdate": *x-position*, *y-position*, *width*, *height*, each
/// a U16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

impl Rect {
    pub fn new(x: u16, y: u16, w: u16, h: u16) -> Rect {
        Rect { x, y, w, h }
    }
    /// One past the last column (no overflow: u32).
    pub fn right(&self) -> u32 {
        self.x as u32 + self.w as u32
    }
    /// One past the last row.
    pub fn bottom(&self) -> u32 {
        self.y as u32 + self.h as u32
    }
}

/// A viewer's framebuffer: one pixel value of the client format per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFramebuffer {
    pub width: u16,
    pub height: u16,
    pub pf: PixelFormat,
    /// Row-major pixel values of the client format (for a colour-map
    /// format, the indices).
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

    /// Fill a rectangle already checked to lie inside.
    pub(crate) fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, v: u32) {
        let stride = self.width as usize;
        for row in y..y + h {
            self.pixels[row * stride + x..row * stride + x + w].fill(v);
        }
    }

    /// Set one pixel already checked to lie inside.
    pub(crate) fn set(&mut self, x: usize, y: usize, v: u32) {
        let stride = self.width as usize;
        self.pixels[y * stride + x] = v;
    }

    pub(crate) fn check(&self, r: Rect) -> Result<(), DecodeError> {
        if r.right() > self.width as u32 || r.bottom() > self.height as u32 {
            return Err(DecodeError::OutOfBounds(r));
        }
        Ok(())
    }

    /// Raw pixels (`w*h*bpp` bytes, already length-checked) into a
    /// rectangle already checked to lie inside.
    pub(crate) fn put_raw(&mut self, x: usize, y: usize, w: usize, h: usize, data: &[u8]) {
        let pf = self.pf;
        let bpp = pf.bytes_per_pixel();
        let stride = self.width as usize;
        for row in 0..h {
            let src = &data[row * w * bpp..(row + 1) * w * bpp];
            let dst = &mut self.pixels[(y + row) * stride + x..(y + row) * stride + x + w];
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
                *d = pf.read_pixel(s);
            }
        }
    }
}
