//! The frame history all viewers share: each capture is compared with the
//! previous frame once, here, and what changed is logged by frame number.
//! Viewers keep only a damage region (what they have not been sent yet)
//! built from this log, never a copy of the screen of their own.

use super::{diff, region, Frame, Rect};
use crate::capture::MoveHint;
use std::sync::Arc;

/// What changed from frame `first - 1` to frame `last` (several captures
/// merged once the log is long).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageEntry {
    pub first: u64,
    pub last: u64,
    pub rects: Vec<Rect>,
}

/// Entries kept before the oldest are merged.
const LOG_LEN: usize = 32;
/// Rectangles a merged entry may hold before it is normalised onto the tile
/// grid (which bounds it).
const MERGED_RECTS: usize = 256;

/// Everything that changed after frame `since`, from `log` (oldest first);
/// `None` when the log does not reach back that far.
pub fn damage_since(log: &[DamageEntry], seq: u64, since: u64) -> Option<Vec<Rect>> {
    if since >= seq {
        return Some(Vec::new());
    }
    let start = log.iter().position(|e| e.last > since)?;
    if log[start].first > since + 1 {
        return None;
    }
    Some(
        log[start..]
            .iter()
            .flat_map(|e| e.rects.iter().copied())
            .collect(),
    )
}

/// The capture side of the history: the previous frame and the log.
#[derive(Default)]
pub struct FrameHistory {
    prev: Option<Arc<Frame>>,
    log: Vec<DamageEntry>,
    shared: Arc<Vec<DamageEntry>>,
}

/// What [`FrameHistory::record`] found.
pub struct Recorded {
    /// Pixels changed (or the size did).
    pub changed: bool,
    /// The source's moves that are true (the old frame's pixels at the
    /// source equal the new frame's at the destination).
    pub moves: Vec<MoveHint>,
}

impl FrameHistory {
    /// Start from the first frame (numbered `seq`).
    pub fn new(first: Arc<Frame>) -> FrameHistory {
        FrameHistory {
            prev: Some(first),
            ..FrameHistory::default()
        }
    }

    /// The log as published with the newest frame.
    pub fn log(&self) -> Arc<Vec<DamageEntry>> {
        self.shared.clone()
    }

    /// Frame `seq` was captured: compare it with the previous one (only
    /// where the source's `hint` says, when it gives one) and log what
    /// changed.
    pub fn record(
        &mut self,
        seq: u64,
        frame: &Arc<Frame>,
        hint: Option<&[Rect]>,
        moves: Vec<MoveHint>,
    ) -> Recorded {
        let (rects, moves) = match &self.prev {
            Some(p) if Arc::ptr_eq(p, frame) => (Vec::new(), Vec::new()),
            Some(p) if p.width == frame.width && p.height == frame.height => {
                let rects = diff::changed_rects(p, frame, frame.bounds(), hint);
                let moves = moves
                    .into_iter()
                    .filter(|m| true_move(p, frame, m))
                    .collect();
                (rects, moves)
            }
            _ => (vec![frame.bounds()], Vec::new()),
        };
        self.prev = Some(frame.clone());
        let changed = !rects.is_empty();
        self.push(DamageEntry {
            first: seq,
            last: seq,
            rects,
        });
        Recorded { changed, moves }
    }

    fn push(&mut self, e: DamageEntry) {
        self.log.push(e);
        if self.log.len() > LOG_LEN {
            // The two oldest become one: a viewer that far behind gets
            // their union, never a gap.
            let b = self.log.remove(1);
            let a = &mut self.log[0];
            a.last = b.last;
            a.rects.extend(b.rects);
            if a.rects.len() > MERGED_RECTS {
                let all = a.rects.iter().fold(Rect::default(), |u, r| u.union(r));
                a.rects = region::normalise(&a.rects, all);
            }
        }
        self.shared = Arc::new(self.log.clone());
    }
}

/// Whether the pixels now at `m.dst` were at the move's source in `old`.
fn true_move(old: &Frame, new: &Frame, m: &MoveHint) -> bool {
    let src = Rect::new(m.src_x, m.src_y, m.dst.w, m.dst.h);
    let b = new.bounds();
    !m.dst.is_empty()
        && b.contains(&m.dst)
        && b.contains(&src)
        && (0..m.dst.h)
            .all(|y| old.row(src.y + y, src.x, src.w) == new.row(m.dst.y + y, m.dst.x, m.dst.w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_merges_old_entries_and_never_leaves_a_gap() {
        let f = Arc::new(Frame::new(640, 480));
        let mut h = FrameHistory::new(f.clone());
        for seq in 2..200u64 {
            let mut g = (*f).clone();
            let x = (seq as usize * 3) % 640;
            g.pixels[x + 640 * (seq as usize % 480)] = seq as u32;
            let r = h.record(seq, &Arc::new(g), None, Vec::new());
            assert!(r.changed);
        }
        let log = h.log();
        assert!(log.len() <= LOG_LEN);
        // Contiguous, oldest first, back to frame 2.
        assert_eq!(log[0].first, 2);
        for w in log.windows(2) {
            assert_eq!(w[0].last + 1, w[1].first);
        }
        let all = damage_since(&log, 199, 1).unwrap();
        assert!(!all.is_empty());
        assert_eq!(damage_since(&log, 199, 199), Some(Vec::new()));
        assert_eq!(damage_since(&log, 199, 198).unwrap().len(), 1);
        assert_eq!(damage_since(&log, 199, 0), None);
    }

    #[test]
    fn the_same_frame_is_no_change_and_false_moves_are_dropped() {
        let f = Arc::new(Frame::new(64, 64));
        let mut h = FrameHistory::new(f.clone());
        assert!(!h.record(2, &f, None, Vec::new()).changed);
        let mut g = (*f).clone();
        g.pixels[0] = 7;
        let m = MoveHint {
            src_x: 10,
            src_y: 10,
            dst: Rect::new(0, 0, 4, 4),
        };
        let r = h.record(3, &Arc::new(g), None, vec![m]);
        assert!(r.changed);
        assert!(r.moves.is_empty(), "a move that is not true was kept");
    }
}
