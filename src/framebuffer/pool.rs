//! Frame buffers a capture source reuses instead of allocating (and
//! copying) a whole frame per capture.
//!
//! A source grabs into a *work* frame that nobody else holds, then
//! publishes it as the newest frame (`Arc<Frame>`, shared by the frame
//! history and every viewer). Frames handed out before are kept as spares;
//! once no one else holds a spare (`Arc::get_mut`), it becomes the next work
//! frame. A spare is brought up to date by copying from the newest frame
//! only the rectangles published since it was the newest (its *stale*
//! list), so a capture costs the damaged rows, not the screen. A spare
//! still held by a viewer is never written: a new buffer is made instead
//! (a copy of the newest frame), and the pool keeps at most [`MAX_SPARES`].

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
        self.work.as_mut().expect("work frame")
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
    }

    /// Hand out the work frame as the newest frame; the one before becomes
    /// a spare. Without a work frame, the newest is handed out again.
    pub fn publish(&mut self) -> Arc<Frame> {
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

    /// A spare nobody else holds, brought up to date with the newest frame.
    fn take_spare(&mut self) -> Option<Frame> {
        let newest = self.newest.as_ref()?;
        let i = self
            .spares
            .iter_mut()
            .position(|s| Arc::get_mut(&mut s.frame).is_some())?;
        let Spare { frame, stale } = self.spares.remove(i);
        let mut frame = Arc::try_unwrap(frame).ok()?;
        if (frame.width, frame.height) != (newest.width, newest.height) {
            return None;
        }
        let bounds = frame.bounds();
        for r in stale {
            let r = r.intersect(&bounds);
            for y in r.y..r.y + r.h {
                let at = y as usize * frame.width as usize + r.x as usize;
                frame.pixels[at..at + r.w as usize].copy_from_slice(newest.row(y, r.x, r.w));
            }
        }
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

    #[test]
    fn reused_frames_equal_fresh_copies() {
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
                grab(&mut pool, r, n + 1);
                for yy in r.y..r.y + r.h {
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
