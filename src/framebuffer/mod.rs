//! Frames (native `0x00RRGGBB` pixels), rectangles and damage.

pub mod diff;
pub mod history;
pub mod pool;
pub mod region;
pub mod scroll;

use std::sync::Arc;

/// An axis-aligned rectangle in framebuffer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

impl Rect {
    pub const fn new(x: u16, y: u16, w: u16, h: u16) -> Rect {
        Rect { x, y, w, h }
    }
    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }
    pub fn area(&self) -> usize {
        self.w as usize * self.h as usize
    }
    pub fn right(&self) -> u32 {
        self.x as u32 + self.w as u32
    }
    pub fn bottom(&self) -> u32 {
        self.y as u32 + self.h as u32
    }
    /// Intersection; empty (w or h 0) when they do not overlap. Safe for any
    /// u16 inputs (no overflow: edges are computed in u32).
    pub fn intersect(&self, o: &Rect) -> Rect {
        let x0 = self.x.max(o.x) as u32;
        let y0 = self.y.max(o.y) as u32;
        let x1 = self.right().min(o.right());
        let y1 = self.bottom().min(o.bottom());
        if x1 <= x0 || y1 <= y0 {
            return Rect::default();
        }
        Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16)
    }
    /// Smallest rectangle containing both (an empty one is ignored). Edges
    /// past 65535 are cut there rather than wrapping.
    pub fn union(&self, o: &Rect) -> Rect {
        if self.is_empty() {
            return *o;
        }
        if o.is_empty() {
            return *self;
        }
        let x0 = self.x.min(o.x);
        let y0 = self.y.min(o.y);
        let x1 = self.right().max(o.right());
        let y1 = self.bottom().max(o.bottom());
        let span = |lo: u16, hi: u32| (hi - lo as u32).min(u16::MAX as u32) as u16;
        Rect::new(x0, y0, span(x0, x1), span(y0, y1))
    }
    pub fn contains(&self, o: &Rect) -> bool {
        o.x >= self.x && o.y >= self.y && o.right() <= self.right() && o.bottom() <= self.bottom()
    }
}

/// One captured screen image. Immutable once published; shared as `Arc<Frame>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub width: u16,
    pub height: u16,
    /// Row-major, `width * height` pixels, `0x00RRGGBB`.
    pub pixels: Vec<u32>,
}

impl Frame {
    pub fn new(width: u16, height: u16) -> Frame {
        Frame {
            width,
            height,
            pixels: vec![0; width as usize * height as usize],
        }
    }
    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }
    #[inline]
    pub fn row(&self, y: u16, x: u16, w: u16) -> &[u32] {
        let start = y as usize * self.width as usize + x as usize;
        &self.pixels[start..start + w as usize]
    }
    #[inline]
    pub fn get(&self, x: u16, y: u16) -> u32 {
        self.pixels[y as usize * self.width as usize + x as usize]
    }
    /// Copy a rectangle's native pixels into `out` (cleared first), row-major.
    pub fn copy_rect(&self, r: Rect, out: &mut Vec<u32>) {
        out.clear();
        out.reserve(r.area());
        for y in r.y..r.y + r.h {
            out.extend_from_slice(self.row(y, r.x, r.w));
        }
    }
}

pub type SharedFrame = Arc<Frame>;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn union_saturates_instead_of_wrapping() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(100, 0, 65535, 10);
        assert_eq!(a.union(&b), Rect::new(0, 0, 65535, 10));
    }

    #[test]
    fn intersect_handles_extremes() {
        let fb = Rect::new(0, 0, 800, 600);
        assert!(fb.intersect(&Rect::new(65535, 0, 65535, 10)).is_empty());
        assert_eq!(
            fb.intersect(&Rect::new(700, 500, 65535, 65535)),
            Rect::new(700, 500, 100, 100)
        );
        assert!(fb.intersect(&Rect::new(10, 10, 0, 5)).is_empty());
    }
}
