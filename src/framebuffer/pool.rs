//! Frame buffers a capture source reuses instead of allocating (and
//! copying) a whole frame per capture.
//!
//! A source grabs into a *work* frame that nobody else holds, then
//! publishes it as the newest frame (`Arc<Frame>`, shared by the frame
//! history and every viewer). Frames handed out before are kept as spares;
//! once no one else holds a spare (`Arc::get_mut`), it becomes the next work
//! frame. A spare is brought up to date by copying from the newest frame
//! only the rectangles published since it was the newest (its *stale*
//! list), so a capture costs the damaged rows, not the screen. That copy
//! is made row by row as late as possible: a row the grab writes
//! ([`FramePool::work_row`]) gets only its stale parts beside the written
//! span, and the rest when the frame is published, so a row that changes
//! again (scrolling, video) is written once, not twice. A spare still held
//! by a viewer is never written: a new buffer is made instead (a copy of
//! the newest frame), and the pool keeps at most [`MAX_SPARES`].

use super::{Frame, Rect};
use std::sync::Arc;

/// Frames kept besides the newest one.
pub const MAX_SPARES: usize = 2;
/// A spare's stale list longer than this is replaced by its bounding box.
const MAX_STALE: usize = 64;

struct Spare {
    frame: Arc<Frame>,
    /// Where it may differ from the newest frame.
    stale: Vec<Rect>,
}

/// See the module documentation.
#[derive(Default)]
pub struct FramePool {
    size: (u16, u16),
    newest: Option<Arc<Frame>>,
    spares: Vec<Spare>,
    /// The frame being grabbed into, and what was written into it since it
    /// equalled the newest frame.
    work: Option<Frame>,
    written: Vec<Rect>,
    /// Where the work frame still differs from the newest frame (its stale
    /// list, not copied yet), and which of its rows are already up to date.
    pending: Vec<Rect>,
    settled: Vec<bool>,
    /// Frames allocated (not reused) so far, for tests and logs.
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

    /// Frames allocated so far (a pool that reuses stops counting up).
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

    /// The frame to grab into: equal to the newest frame except where
    /// written since (see [`FramePool::written`]). Callers write into it
    /// and report what they wrote with [`FramePool::mark`].
    pub fn work(&mut self) -> &mut Frame {
        self.make_work();
        self.settle_all();
        self.work.as_mut().expect("work frame")
    }

    /// Row `y` of the work frame, to be written at `x..x + w` (by the
    /// caller, right after): the row's other stale parts are brought up to
    /// date first. Report what was written with [`FramePool::mark`].
    pub fn work_row(&mut self, y: u16, x: u16, w: u16) -> &mut [u32] {
        self.make_work();
        let work = self.work.as_mut().expect("work frame");
        let width = work.width as usize;
        let row = &mut work.pixels[y as usize * width..(y as usize + 1) * width];
        if !self.pending.is_empty() && !self.settled[y as usize] {
            self.settled[y as usize] = true;
            let newest = self
                .newest
                .as_ref()
                .expect("pending implies a newest frame");
            let (x, end) = (u32::from(x), u32::from(x) + u32::from(w));
            for r in self
                .pending
                .iter()
                .filter(|r| r.y <= y && u32::from(y) < r.bottom())
            {
                // The parts of r left and right of the written span.
                for (a, b) in [
                    (u32::from(r.x), r.right().min(x)),
                    (u32::from(r.x).max(end), r.right()),
                ] {
                    if a < b {
                        let (a, b) = (a as usize, b as usize);
                        row[a..b].copy_from_slice(newest.row(y, a as u16, (b - a) as u16));
                    }
                }
            }
        }
        row
    }

    fn make_work(&mut self) {
        if self.work.is_none() {
            let frame = self.take_spare().unwrap_or_else(|| {
                self.allocated += 1;
                tracing::debug!(
                    allocated = self.allocated,
                    spares = self.spares.len(),
                    "frame pool: no free frame, allocating one"
                );
                match &self.newest {
                    Some(n) => (**n).clone(),
                    None => Frame::new(self.size.0, self.size.1),
                }
            });
            // What was marked before it was made (a grab marks first) is
            // kept: it is what the next publish says was written.
            self.work = Some(frame);
        }
    }

    /// Bring every row of the work frame not written since it was made up
    /// to date with the newest frame.
    fn settle_all(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let (Some(work), Some(newest)) = (self.work.as_mut(), self.newest.as_ref()) {
            let width = work.width as usize;
            for r in &pending {
                for y in r.y..r.y + r.h {
                    if !self.settled[y as usize] {
                        let at = y as usize * width + r.x as usize;
                        work.pixels[at..at + r.w as usize].copy_from_slice(newest.row(y, r.x, r.w));
                    }
                }
            }
        }
        self.settled.clear();
    }

    /// `r` of the work frame is (or is about to be) written; may come
    /// before [`FramePool::work`] makes the work frame.
    pub fn mark(&mut self, r: Rect) {
        if !r.is_empty() {
            self.written.push(r);
        }
    }

    /// Forget what was written into the work frame since the last publish
    /// (a grab cut short by an error): the next work frame equals the
    /// newest frame again, so a source that writes only rows differing
    /// from the newest frame never keeps a half-written row.
    pub fn discard_work(&mut self) {
        self.work = None;
        self.written.clear();
        self.pending.clear();
        self.settled.clear();
    }

    /// Hand out the work frame as the newest frame; the one before becomes
    /// a spare. Without a work frame, the newest is handed out again.
    pub fn publish(&mut self) -> Arc<Frame> {
        self.settle_all();
        let Some(work) = self.work.take() else {
            if let Some(n) = &self.newest {
                return n.clone();
            }
            let f = Arc::new(Frame::new(self.size.0, self.size.1));
            self.allocated += 1;
            self.newest = Some(f.clone());
            return f;
        };
        let written = std::mem::take(&mut self.written);
        for s in &mut self.spares {
            s.stale.extend_from_slice(&written);
            if s.stale.len() > MAX_STALE {
                let all = s.stale.iter().fold(Rect::default(), |a, r| a.union(r));
                s.stale = vec![all];
            }
        }
        let frame = Arc::new(work);
        if let Some(old) = self.newest.replace(frame.clone()) {
            self.spares.push(Spare {
                frame: old,
                stale: written,
            });
            if self.spares.len() > MAX_SPARES {
                // The oldest goes (freed when its last holder lets go).
                self.spares.remove(0);
            }
        }
        frame
    }

    /// A spare nobody else holds; where it differs from the newest frame
    /// becomes the pending list (copied row by row later).
    fn take_spare(&mut self) -> Option<Frame> {
        let newest = self.newest.as_ref()?;
        let i = self
            .spares
            .iter_mut()
            .position(|s| Arc::get_mut(&mut s.frame).is_some())?;
        let Spare { frame, stale } = self.spares.remove(i);
        let frame = Arc::try_unwrap(frame).ok()?;
        if (frame.width, frame.height) != (newest.width, newest.height) {
            return None;
        }
        let bounds = frame.bounds();
        self.pending = stale
            .iter()
            .map(|r| r.intersect(&bounds))
            .filter(|r| !r.is_empty())
            .collect();
        self.settled.clear();
        self.settled.resize(frame.height as usize, false);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write `value` into `r` of the pool's work frame, as the X11
    /// source's grab does (marking first, then writing).
    fn grab(pool: &mut FramePool, r: Rect, value: u32) {
        pool.mark(r);
        let f = pool.work();
        for y in r.y..r.y + r.h {
            let at = y as usize * f.width as usize + r.x as usize;
            f.pixels[at..at + r.w as usize].fill(value);
        }
    }

    /// Frames built from reused buffers equal frames built by copying the
    /// whole screen each time (the model), whatever viewers hold on to;
    /// buffers are only allocated while viewers hold the spares.
    #[test]
    fn a_discarded_work_frame_comes_back_equal_to_the_newest() {
        let mut pool = FramePool::new(16, 8);
        for value in [1, 2] {
            grab(&mut pool, Rect::new(0, 0, 16, 8), value);
            pool.publish();
        }
        // Half a grab, then an error.
        grab(&mut pool, Rect::new(0, 2, 16, 3), 9);
        pool.discard_work();
        let newest = pool.newest().unwrap().clone();
        assert_eq!(*pool.work(), *newest);
    }

    /// The same through [`FramePool::work_row`], as the X11 source writes:
    /// only some rows of `r` (every `step`-th), the others left as they are.
    fn grab_rows(pool: &mut FramePool, r: Rect, value: u32, step: u16) {
        pool.mark(r);
        for y in (r.y..r.y + r.h).step_by(step as usize) {
            let row = pool.work_row(y, r.x, r.w);
            row[r.x as usize..(r.x + r.w) as usize].fill(value);
        }
    }

    #[test]
    fn reused_frames_equal_fresh_copies() {
        reused_frames_equal_fresh_copies_with(0);
    }

    /// Rows written one by one (stale parts copied late) give the same
    /// frames, whichever rows a grab writes.
    #[test]
    fn rows_written_late_equal_fresh_copies() {
        for step in 1..4 {
            reused_frames_equal_fresh_copies_with(step);
        }
    }

    /// `step` 0: whole rectangles through [`FramePool::work`]; else rows
    /// through [`FramePool::work_row`], every `step`-th.
    fn reused_frames_equal_fresh_copies_with(step: u16) {
        let (w, h) = (96u16, 64u16);
        let mut pool = FramePool::new(w, h);
        let mut model = Frame::new(w, h);
        let mut held: Vec<(Arc<Frame>, Frame)> = Vec::new();
        let mut seed = 7u32;
        let mut rand = |n: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 8) % n
        };
        for n in 0..400u32 {
            let rects = 1 + rand(3);
            for _ in 0..rects {
                let x = rand(w as u32) as u16;
                let y = rand(h as u32) as u16;
                let r = Rect::new(
                    x,
                    y,
                    1 + rand((w - x) as u32) as u16,
                    1 + rand((h - y) as u32) as u16,
                );
                if step == 0 {
                    grab(&mut pool, r, n + 1);
                } else {
                    grab_rows(&mut pool, r, n + 1, step);
                }
                for yy in (r.y..r.y + r.h).step_by(step.max(1) as usize) {
                    let at = yy as usize * w as usize + r.x as usize;
                    model.pixels[at..at + r.w as usize].fill(n + 1);
                }
            }
            let f = pool.publish();
            assert!(*f == model, "frame {n}");
            // A slow viewer holds a frame for a while now and then.
            if rand(4) == 0 {
                held.push((f.clone(), model.clone()));
            }
            if rand(3) == 0 && !held.is_empty() {
                let (f, then) = held.remove(0);
                assert!(*f == then, "a held frame was written to");
            }
        }
        for (f, then) in held {
            assert!(*f == then, "a held frame was written to");
        }
        let before = pool.allocated();
        for n in 0..50u32 {
            grab(&mut pool, Rect::new(0, 0, 4, 4), 1000 + n);
            pool.publish();
        }
        assert_eq!(pool.allocated(), before, "a free spare was not reused");
        assert!(before < 150, "{before} allocations for 400 frames");
    }

    #[test]
    fn a_held_frame_is_never_written() {
        let mut pool = FramePool::new(8, 8);
        grab(&mut pool, Rect::new(0, 0, 8, 8), 1);
        let first = pool.publish();
        let kept = first.clone();
        for n in 2..10 {
            grab(&mut pool, Rect::new(0, 0, 8, 8), n);
            pool.publish();
        }
        assert!(kept.pixels.iter().all(|&p| p == 1));
        drop(first);
        pool.resize(4, 4);
        assert_eq!(pool.work().pixels.len(), 16);
        assert_eq!(*pool.publish(), Frame::new(4, 4));
    }
}
