//! Frame buffers a capture source reuses instead of allocating (and
//! copying) a whole frame per capture.
//!
//! A source grabs into a *work* frame that nobody else holds, then
//! publishes it as the newest frame (`Arc<Frame>`, shared by the frame
//! history and every viewer). The work frame starts as a clone of the
//! newest frame, which shares every band ([`BAND_ROWS`] rows) with it; a
//! band is replaced only when the grab writes one of its rows, so a frame
//! after a small change shares all other bands with the frame before, and
//! a changing screen costs about one frame of memory, not two.
//!
//! A replaced band gets a buffer from the *free* list (bands of frames
//! published before, once nobody holds those frames and no newer frame
//! shares the band), else a new one. Its rows are brought up to date from
//! the newest frame as late as possible: a row the grab writes
//! ([`FramePool::work_row`]) gets only its parts beside the written span,
//! and the others when the frame is published, so a row that changes again
//! (scrolling, video) is written once, not twice. A band still held by a
//! viewer or by the newest frame is never written.

use super::{Frame, BAND_ROWS};
use std::sync::Arc;

/// Frames published before the newest one that the pool keeps, to take
/// their bands back once nobody else holds them.
pub const MAX_OLD: usize = 2;

/// See the module documentation.
#[derive(Default)]
pub struct FramePool {
    size: (u16, u16),
    newest: Option<Arc<Frame>>,
    /// Published before the newest, newest last.
    old: Vec<Arc<Frame>>,
    /// The frame being grabbed into.
    work: Option<Frame>,
    /// Per row of the work frame: its band was replaced and the row not
    /// yet brought up to date with the newest frame.
    unsettled: Vec<bool>,
    /// Whether some row is unsettled.
    any_unsettled: bool,
    /// Band buffers nobody holds (their contents are stale).
    free: Vec<Vec<u32>>,
    /// Band buffers allocated (not reused) so far, for tests and logs.
    allocated: u64,
}

impl FramePool {
    /// A pool for frames of `width` x `height`.
    pub fn new(width: u16, height: u16) -> FramePool {
        FramePool {
            size: (width, height),
            ..FramePool::default()
        }
    }

    /// The size of the frames it hands out.
    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    /// Band buffers allocated so far (a pool that reuses stops counting up).
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Start over at a new size: every frame kept is dropped (viewers keep
    /// theirs as long as they hold them); the next work frame is black.
    pub fn resize(&mut self, width: u16, height: u16) {
        *self = FramePool {
            allocated: self.allocated,
            ..FramePool::new(width, height)
        };
    }

    /// The newest frame published, if any.
    pub fn newest(&self) -> Option<&Arc<Frame>> {
        self.newest.as_ref()
    }

    /// The frame to grab into, whole: equal to the newest frame except
    /// where written since. Writing into it copies each band it touches;
    /// grabs write rows through [`FramePool::work_row`] instead.
    pub fn work(&mut self) -> &mut Frame {
        self.make_work();
        self.settle_all();
        self.work.as_mut().expect("work frame")
    }

    /// Row `y` of the work frame, to be written at `x..x + w` (by the
    /// caller, right after): the row's other parts are brought up to date
    /// first.
    pub fn work_row(&mut self, y: u16, x: u16, w: u16) -> &mut [u32] {
        self.make_work();
        let b = (y / BAND_ROWS) as usize;
        let work = self.work.as_mut().expect("work frame");
        if !work.band_is_unique(b) {
            let len = work.band_len(b);
            let buf = match self.free.iter().position(|v| v.len() == len) {
                Some(i) => self.free.swap_remove(i),
                None => {
                    self.allocated += 1;
                    vec![0; len]
                }
            };
            work.replace_band(b, buf);
            let first = b * BAND_ROWS as usize;
            let rows = len / (work.width as usize).max(1);
            self.unsettled[first..first + rows].fill(true);
            self.any_unsettled = true;
        }
        let row = work.row_mut(y);
        if std::mem::take(&mut self.unsettled[y as usize]) {
            let newest = self
                .newest
                .as_ref()
                .expect("a shared band implies a newest frame");
            let (x, end) = (x as usize, x as usize + w as usize);
            let old = newest.row(y, 0, newest.width);
            row[..x].copy_from_slice(&old[..x]);
            row[end..].copy_from_slice(&old[end..]);
        }
        row
    }

    fn make_work(&mut self) {
        if self.work.is_some() {
            return;
        }
        self.reclaim();
        let frame = match &self.newest {
            Some(n) => (**n).clone(),
            None => {
                let f = Frame::new(self.size.0, self.size.1);
                self.allocated += f.band_count() as u64;
                f
            }
        };
        self.unsettled.clear();
        self.unsettled.resize(frame.height as usize, false);
        self.any_unsettled = false;
        self.work = Some(frame);
    }

    /// Take back the bands of old frames nobody else holds any more (those
    /// no newer frame shares), up to one frame's worth.
    fn reclaim(&mut self) {
        let most = self.newest.as_ref().map_or(0, |n| n.band_count());
        let mut i = 0;
        while i < self.old.len() {
            if Arc::get_mut(&mut self.old[i]).is_none() {
                i += 1;
                continue;
            }
            if let Ok(frame) = Arc::try_unwrap(self.old.remove(i)) {
                for band in frame.into_unique_bands() {
                    if self.free.len() < most {
                        self.free.push(band);
                    }
                }
            }
        }
    }

    /// Bring every unsettled row of the work frame up to date with the
    /// newest frame.
    fn settle_all(&mut self) {
        if !std::mem::take(&mut self.any_unsettled) {
            return;
        }
        if let (Some(work), Some(newest)) = (self.work.as_mut(), self.newest.as_ref()) {
            for (y, unsettled) in self.unsettled.iter_mut().enumerate() {
                if std::mem::take(unsettled) {
                    let y = y as u16;
                    work.row_mut(y)
                        .copy_from_slice(newest.row(y, 0, newest.width));
                }
            }
        }
    }

    /// Forget what was written into the work frame since the last publish
    /// (a grab cut short by an error): the next work frame equals the
    /// newest frame again, so a source that writes only rows differing
    /// from the newest frame never keeps a half-written row.
    pub fn discard_work(&mut self) {
        if let Some(work) = self.work.take() {
            let most = work.band_count();
            for band in work.into_unique_bands() {
                if self.free.len() < most {
                    self.free.push(band);
                }
            }
        }
        self.unsettled.clear();
        self.any_unsettled = false;
    }

    /// Hand out the work frame as the newest frame; the one before is kept
    /// until its bands can be taken back. Without a work frame, the newest
    /// is handed out again.
    pub fn publish(&mut self) -> Arc<Frame> {
        self.settle_all();
        let Some(work) = self.work.take() else {
            if let Some(n) = &self.newest {
                return n.clone();
            }
            let f = Arc::new(Frame::new(self.size.0, self.size.1));
            self.allocated += f.band_count() as u64;
            self.newest = Some(f.clone());
            return f;
        };
        let frame = Arc::new(work);
        if let Some(before) = self.newest.replace(frame.clone()) {
            self.old.push(before);
            if self.old.len() > MAX_OLD {
                // The oldest goes (freed when its last holder lets go).
                self.old.remove(0);
            }
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framebuffer::Rect;

    /// Write `value` into rows of `r` of the pool's work frame, as the X11
    /// source's grab does: every `step`-th row, the others left as they are.
    fn grab_rows(pool: &mut FramePool, r: Rect, value: u32, step: u16) {
        for y in (r.y..r.y + r.h).step_by(step as usize) {
            let row = pool.work_row(y, r.x, r.w);
            row[r.x as usize..(r.x + r.w) as usize].fill(value);
        }
    }

    fn grab(pool: &mut FramePool, r: Rect, value: u32) {
        grab_rows(pool, r, value, 1);
    }

    #[test]
    fn a_discarded_work_frame_comes_back_equal_to_the_newest() {
        let mut pool = FramePool::new(16, 80);
        for value in [1, 2] {
            grab(&mut pool, Rect::new(0, 0, 16, 80), value);
            pool.publish();
        }
        // Half a grab, then an error.
        grab(&mut pool, Rect::new(0, 20, 16, 30), 9);
        pool.discard_work();
        let newest = pool.newest().unwrap().clone();
        assert_eq!(*pool.work(), *newest);
        grab(&mut pool, Rect::new(3, 40, 2, 1), 5);
        let mut want = (*newest).clone();
        want.row_mut(40)[3..5].fill(5);
        assert_eq!(*pool.publish(), want);
    }

    /// Frames built from reused buffers equal frames built by copying the
    /// whole screen each time (the model), whatever viewers hold on to and
    /// whichever rows a grab writes; buffers are only allocated while
    /// viewers hold frames.
    #[test]
    fn reused_frames_equal_fresh_copies() {
        for step in 1..4 {
            reused_frames_equal_fresh_copies_with(step);
        }
    }

    fn reused_frames_equal_fresh_copies_with(step: u16) {
        // Four bands, the last of 4 rows.
        let (w, h) = (96u16, 3 * BAND_ROWS + 4);
        let mut pool = FramePool::new(w, h);
        let mut model = Frame::new(w, h);
        let mut held: Vec<(Arc<Frame>, Vec<u32>)> = Vec::new();
        let mut seed = 7u32;
        let mut rand = |n: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 8) % n
        };
        for n in 0..400u32 {
            let rects = 1 + rand(3);
            for _ in 0..rects {
                // Mostly small changes, now and then a big one.
                let big = rand(8) == 0;
                let x = rand(w as u32) as u16;
                let y = rand(h as u32) as u16;
                let (mw, mh) = if big {
                    (w - x, h - y)
                } else {
                    ((w - x).min(20), (h - y).min(6))
                };
                let r = Rect::new(x, y, 1 + rand(mw as u32) as u16, 1 + rand(mh as u32) as u16);
                grab_rows(&mut pool, r, n + 1, step);
                for yy in (r.y..r.y + r.h).step_by(step as usize) {
                    model.row_mut(yy)[r.x as usize..r.right() as usize].fill(n + 1);
                }
            }
            let f = pool.publish();
            assert!(*f == model, "frame {n}, step {step}");
            // A slow viewer holds a frame for a while now and then.
            if rand(4) == 0 {
                held.push((f.clone(), model.to_pixels()));
            }
            if rand(3) == 0 && !held.is_empty() {
                let (f, then) = held.remove(0);
                assert!(f.to_pixels() == then, "a held frame was written to");
            }
        }
        for (f, then) in held {
            assert!(f.to_pixels() == then, "a held frame was written to");
        }
        let before = pool.allocated();
        for n in 0..50u32 {
            grab(&mut pool, Rect::new(0, 0, 4, 4), 1000 + n);
            grab(&mut pool, Rect::new(0, h - 2, 4, 2), 1000 + n);
            pool.publish();
        }
        assert_eq!(pool.allocated(), before, "a free band was not reused");
        // Without reuse every frame would allocate its changed bands.
        assert!(before < 400, "{before} band allocations for 400 frames");
    }

    /// A small change shares every other band with the frame before: the
    /// memory a changing screen needs is about one frame.
    #[test]
    fn unchanged_bands_are_shared() {
        let (w, h) = (64u16, 4 * BAND_ROWS);
        let mut pool = FramePool::new(w, h);
        grab(&mut pool, Rect::new(0, 0, w, h), 1);
        let first = pool.publish();
        grab(&mut pool, Rect::new(5, BAND_ROWS + 3, 8, 2), 2);
        let second = pool.publish();
        for y in 0..h {
            let band = y / BAND_ROWS;
            assert_eq!(first.shares_row(&second, y), band != 1, "row {y}");
        }
        assert_eq!(second.get(5, BAND_ROWS + 3), 2);
        assert_eq!(first.get(5, BAND_ROWS + 3), 1);
    }

    #[test]
    fn a_held_frame_is_never_written() {
        let mut pool = FramePool::new(8, 40);
        grab(&mut pool, Rect::new(0, 0, 8, 40), 1);
        let first = pool.publish();
        let kept = first.clone();
        for n in 2..10 {
            grab(&mut pool, Rect::new(0, 0, 8, 40), n);
            pool.publish();
        }
        assert!(kept.pixels().all(|&p| p == 1));
        drop(first);
        pool.resize(4, 4);
        assert_eq!(pool.work().pixels().count(), 16);
        assert_eq!(*pool.publish(), Frame::new(4, 4));
    }
}
