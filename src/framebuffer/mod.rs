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

/// Rows in each band of a [`Frame`] (the last band may have fewer).
pub const BAND_ROWS: u16 = 32;

/// One captured screen image. Immutable once published; shared as `Arc<Frame>`.
///
/// Its pixels lie in bands of [`BAND_ROWS`] rows, each behind its own
/// reference count: a clone shares every band, and writing into a band
/// (through [`Frame::row_mut`] and friends) copies that band alone when it
/// is shared. A frame captured after a small change therefore shares all
/// but a band or two with the frame before it, so a changing screen costs
/// about one frame of memory, not two, and rows in a shared band are known
/// equal without comparing them ([`Frame::shares_row`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u16,
    pub height: u16,
    /// Row-major `0x00RRGGBB` pixels, [`BAND_ROWS`] rows per band.
    bands: Vec<Arc<Vec<u32>>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bands", &self.bands.len())
            .finish()
    }
}

impl Frame {
    /// A black frame.
    pub fn new(width: u16, height: u16) -> Frame {
        let bands = (0..band_count(height))
            .map(|b| Arc::new(vec![0; band_len(width, height, b)]))
            .collect();
        Frame {
            width,
            height,
            bands,
        }
    }

    /// A frame of `pixels` (row-major, `width * height` of them).
    ///
    /// # Panics
    /// When `pixels` has another length.
    pub fn from_pixels(width: u16, height: u16, pixels: Vec<u32>) -> Frame {
        assert_eq!(
            pixels.len(),
            width as usize * height as usize,
            "pixels for a {width}x{height} frame"
        );
        let bands = match band_count(height) {
            0 => Vec::new(),
            1 => vec![Arc::new(pixels)],
            n if width == 0 => (0..n).map(|_| Arc::new(Vec::new())).collect(),
            _ => pixels
                .chunks(width as usize * BAND_ROWS as usize)
                .map(|c| Arc::new(c.to_vec()))
                .collect(),
        };
        Frame {
            width,
            height,
            bands,
        }
    }

    /// A frame whose row `y` is what `row(y, out)` appends to `out`
    /// (exactly `width` pixels), written straight into the bands.
    ///
    /// # Panics
    /// When `row` appends another number of pixels.
    pub fn from_rows(width: u16, height: u16, mut row: impl FnMut(u16, &mut Vec<u32>)) -> Frame {
        let bands = (0..band_count(height))
            .map(|b| {
                let len = band_len(width, height, b);
                let mut band = Vec::with_capacity(len);
                let first = b * BAND_ROWS as usize;
                for y in first..first + len / (width as usize).max(1) {
                    let before = band.len();
                    row(y as u16, &mut band);
                    assert_eq!(band.len() - before, width as usize, "row {y}");
                }
                band.resize(len, 0);
                Arc::new(band)
            })
            .collect();
        Frame {
            width,
            height,
            bands,
        }
    }

    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    /// The band holding row `y`, and where the row starts in it.
    #[inline]
    fn locate(&self, y: u16) -> (usize, usize) {
        let b = (y / BAND_ROWS) as usize;
        (b, (y % BAND_ROWS) as usize * self.width as usize)
    }

    #[inline]
    pub fn row(&self, y: u16, x: u16, w: u16) -> &[u32] {
        let (b, start) = self.locate(y);
        &self.bands[b][start + x as usize..start + x as usize + w as usize]
    }

    #[inline]
    pub fn get(&self, x: u16, y: u16) -> u32 {
        self.row(y, x, 1)[0]
    }

    /// Row `y`, whole, to write into (its band is copied first when shared).
    pub fn row_mut(&mut self, y: u16) -> &mut [u32] {
        let (b, start) = self.locate(y);
        let w = self.width as usize;
        &mut Arc::make_mut(&mut self.bands[b])[start..start + w]
    }

    /// Set one pixel.
    pub fn set(&mut self, x: u16, y: u16, v: u32) {
        self.row_mut(y)[x as usize] = v;
    }

    /// Every pixel set to `v`.
    pub fn fill(&mut self, v: u32) {
        for b in &mut self.bands {
            Arc::make_mut(b).fill(v);
        }
    }

    /// The pixels, row-major.
    pub fn pixels(&self) -> impl Iterator<Item = &u32> {
        self.bands.iter().flat_map(|b| b.iter())
    }

    /// The pixels, row-major, to write into (every band made unshared).
    pub fn pixels_mut(&mut self) -> impl Iterator<Item = &mut u32> {
        self.bands
            .iter_mut()
            .flat_map(|b| Arc::make_mut(b).iter_mut())
    }

    /// The pixels, row-major, as one vector (a copy).
    pub fn to_pixels(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.width as usize * self.height as usize);
        for b in &self.bands {
            v.extend_from_slice(b);
        }
        v
    }

    /// Rows `y..y + h` as one slice (rows `width` apart) when one band
    /// holds them all.
    pub fn rows(&self, y: u16, h: u16) -> Option<&[u32]> {
        if h == 0
            || (y / BAND_ROWS) != ((u32::from(y) + u32::from(h) - 1) / u32::from(BAND_ROWS)) as u16
        {
            return None;
        }
        let (b, start) = self.locate(y);
        self.bands[b].get(start..start + h as usize * self.width as usize)
    }

    /// Whether row `y` of `self` and of `other` is the same memory (so the
    /// same pixels): both come from one frame, and neither has written
    /// into that row's band since.
    #[inline]
    pub fn shares_row(&self, other: &Frame, y: u16) -> bool {
        let b = (y / BAND_ROWS) as usize;
        self.width == other.width
            && self.height == other.height
            && Arc::ptr_eq(&self.bands[b], &other.bands[b])
    }

    /// Bands, for [`pool::FramePool`].
    pub(crate) fn band_count(&self) -> usize {
        self.bands.len()
    }

    /// Whether band `b` is held by this frame alone.
    pub(crate) fn band_is_unique(&mut self, b: usize) -> bool {
        Arc::get_mut(&mut self.bands[b]).is_some()
    }

    /// Put `pixels` (the band's length) in place of band `b`.
    pub(crate) fn replace_band(&mut self, b: usize, pixels: Vec<u32>) {
        debug_assert_eq!(pixels.len(), self.bands[b].len());
        self.bands[b] = Arc::new(pixels);
    }

    /// Band `b`'s length in pixels.
    pub(crate) fn band_len(&self, b: usize) -> usize {
        self.bands[b].len()
    }

    /// The bands' buffers that only this frame held.
    pub(crate) fn into_unique_bands(self) -> impl Iterator<Item = Vec<u32>> {
        self.bands
            .into_iter()
            .filter_map(|b| Arc::try_unwrap(b).ok())
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

/// Bands of a frame `height` rows tall.
fn band_count(height: u16) -> usize {
    (height as usize).div_ceil(BAND_ROWS as usize)
}

/// Pixels in band `b` of a `width` x `height` frame.
fn band_len(width: u16, height: u16, b: usize) -> usize {
    let rows = (height as usize - b * BAND_ROWS as usize).min(BAND_ROWS as usize);
    rows * width as usize
}

/// Pixel `i` (row-major), for tests and tools that think in flat indices.
impl std::ops::Index<usize> for Frame {
    type Output = u32;
    fn index(&self, i: usize) -> &u32 {
        let w = self.width as usize;
        let y = i / w;
        &self.row(y as u16, 0, self.width)[i % w]
    }
}

/// Pixel `i` (row-major) to write (its band is copied first when shared).
impl std::ops::IndexMut<usize> for Frame {
    fn index_mut(&mut self, i: usize) -> &mut u32 {
        let w = self.width as usize;
        let y = i / w;
        &mut self.row_mut(y as u16)[i % w]
    }
}

pub type SharedFrame = Arc<Frame>;

#[cfg(test)]
mod tests {
    use super::*;
    /// Bands: every constructor gives the same frame, a write copies only
    /// its band, and `rows` gives a slice only within one band.
    #[test]
    fn bands_are_shared_until_written() {
        let (w, h) = (5u16, 2 * BAND_ROWS + 3);
        let px: Vec<u32> = (0..w as u32 * h as u32).collect();
        let a = Frame::from_pixels(w, h, px.clone());
        let b = Frame::from_rows(w, h, |y, out| {
            out.extend_from_slice(&px[y as usize * 5..][..5]);
        });
        assert_eq!(a, b);
        assert_eq!(a.to_pixels(), px);
        assert_eq!(a.get(4, BAND_ROWS + 1), (BAND_ROWS as u32 + 1) * 5 + 4);
        let mut c = a.clone();
        c.set(0, BAND_ROWS, 7);
        for y in 0..h {
            assert_eq!(c.shares_row(&a, y), y / BAND_ROWS != 1, "row {y}");
        }
        assert_eq!(a[BAND_ROWS as usize * 5], BAND_ROWS as u32 * 5);
        assert_eq!(c[BAND_ROWS as usize * 5], 7);
        assert_eq!(a.rows(1, BAND_ROWS - 1).map(<[u32]>::len), Some(5 * 31));
        assert!(a.rows(1, BAND_ROWS).is_none());
        assert!(a.rows(2 * BAND_ROWS, 3).is_some());
        assert_eq!(Frame::from_pixels(0, 40, Vec::new()), Frame::new(0, 40));
        assert_eq!(Frame::from_pixels(9, 0, Vec::new()), Frame::new(9, 0));
    }

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
