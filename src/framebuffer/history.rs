//! The frame history all viewers share: each capture is compared with the
//! previous frame once, here, and what changed is logged by frame number.
//! Viewers keep only a damage region (what they have not been sent yet)
//! built from this log, never a copy of the screen of their own.

use super::{diff, region, scroll, Frame, Rect};
use crate::capture::MoveHint;
use std::sync::Arc;

/// What changed from frame `first - 1` to frame `last` (several captures
/// merged once the log is long).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageEntry {
    pub first: u64,
    pub last: u64,
    pub rects: Vec<Rect>,
    /// The frame's true moves from the one before (single entries only;
    /// a merged entry has none).
    pub moves: Vec<MoveHint>,
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

/// The moves that take a picture of frame `since` to frame `seq`, for a
/// viewer that missed the frames between: each row of the newest moves'
/// column range is traced back through the log (moved rows to their
/// source, rows no damage touched stay), and the rows that reach back to
/// frame `since` with the same shift become one move. Exact when each
/// entry's moves are and its damage covers every other change. Empty when
/// the log does not reach back or nothing moved.
pub fn moves_since(log: &[DamageEntry], seq: u64, since: u64) -> Vec<MoveHint> {
    if since >= seq {
        return Vec::new();
    }
    let Some(start) = log.iter().position(|e| e.last > since) else {
        return Vec::new();
    };
    let entries = &log[start..];
    if entries[0].first != since + 1 {
        return Vec::new();
    }
    if let [one] = entries {
        return one.moves.clone();
    }
    // The columns: those of the newest moves (a scroll keeps its area).
    let Some(newest) = entries.iter().rev().find_map(|e| e.moves.first()) else {
        return Vec::new();
    };
    let (x, w) = (newest.dst.x, newest.dst.w);
    let rows = entries
        .iter()
        .flat_map(|e| e.moves.iter().map(|m| m.dst.bottom()))
        .max()
        .unwrap_or(0);
    // Where each row of frame `seq` was in frame `since`.
    let traced = |y: u16| -> Option<u16> {
        let mut cur = y;
        for e in entries.iter().rev() {
            let line = Rect::new(x, cur, w, 1);
            match e.moves.iter().find(|m| m.dst.contains(&line)) {
                Some(m) => cur = m.src_y + (cur - m.dst.y),
                None if e.moves.iter().any(|m| overlaps(&m.dst, &line))
                    || e.rects.iter().any(|r| overlaps(r, &line)) =>
                {
                    return None;
                }
                None => {}
            }
        }
        Some(cur)
    };
    let mut runs: Vec<(u16, u16, i32)> = Vec::new();
    for y in 0..rows.min(u32::from(u16::MAX)) as u16 {
        let shift = traced(y).map(|from| i32::from(y) - i32::from(from));
        match (shift, runs.last_mut()) {
            (Some(0) | None, _) => {}
            (Some(s), Some(r)) if r.2 == s && r.0 + r.1 == y => r.1 += 1,
            (Some(s), _) => runs.push((y, 1, s)),
        }
    }
    runs.retain(|r| r.1 >= scroll::MIN_RUN);
    // Copied one after another: moves down bottom first, then moves up
    // top first (a session drops any whose source an earlier one wrote).
    runs.sort_by_key(|r| {
        if r.2 > 0 {
            (0, -i32::from(r.0))
        } else {
            (1, i32::from(r.0))
        }
    });
    runs.into_iter()
        .map(|(y, h, s)| MoveHint {
            src_x: x,
            src_y: (i32::from(y) - s) as u16,
            dst: Rect::new(x, y, w, h),
        })
        .collect()
}

fn overlaps(a: &Rect, b: &Rect) -> bool {
    !a.intersect(b).is_empty()
}

/// The capture side of the history: the previous frame and the log.
#[derive(Default)]
pub struct FrameHistory {
    prev: Option<Arc<Frame>>,
    log: Vec<DamageEntry>,
    shared: Arc<Vec<DamageEntry>>,
    scroll: scroll::Searches,
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
                let moves: Vec<MoveHint> = moves
                    .into_iter()
                    .filter(|m| true_move(p, frame, m))
                    .collect();
                // No source tells of scrolling: found here (exact already).
                let moves = if moves.is_empty() {
                    self.scroll.detect(p, frame, &rects)
                } else {
                    moves
                };
                let mut rects = rects;
                diff::trim_columns(p, frame, &mut rects);
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
            moves: moves.clone(),
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
            a.moves.clear();
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
            g[x + 640 * (seq as usize % 480)] = seq as u32;
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
        g[0] = 7;
        let m = MoveHint {
            src_x: 10,
            src_y: 10,
            dst: Rect::new(0, 0, 4, 4),
        };
        let r = h.record(3, &Arc::new(g), None, vec![m]);
        assert!(r.changed);
        assert!(r.moves.is_empty(), "a move that is not true was kept");
    }

    /// Rows of distinct "text" (every row differs), `h` rows from
    /// row `top` of an endless log.
    fn log_rows(w: u16, h: u16, top: u32) -> Frame {
        let mut f = Frame::new(w, h);
        for y in 0..h as usize {
            let row = (y as u32 + top).wrapping_mul(0x9e37_79b9);
            for x in 0..w as usize {
                let v = ((x as u32 / 2) ^ row).wrapping_mul(2_654_435_761);
                f[y * w as usize + x] = if v >> 30 == 0 { 0x00ff_ffff } else { 0 };
            }
        }
        f
    }

    #[test]
    fn moves_across_skipped_frames_compose_exactly() {
        // A 320x240 screen: a title bar (rows 0..16) that stays, a log
        // below that scrolls by 16, 16 and 32 rows over three frames.
        let frame = |top: u32| {
            let mut f = log_rows(320, 240, top);
            for p in f.pixels_mut().take(320 * 16) {
                *p = 0x0000_00ff;
            }
            Arc::new(f)
        };
        let first = frame(0);
        let mut h = FrameHistory::new(first.clone());
        for (seq, top) in [(2u64, 16u32), (3, 32), (4, 64)] {
            let r = h.record(seq, &frame(top), None, Vec::new());
            assert!(r.changed);
            assert!(!r.moves.is_empty(), "frame {seq}: the scroll not found");
        }
        let last = frame(64);
        let log = h.log();
        for since in 1..=3u64 {
            let moves = moves_since(&log, 4, since);
            assert!(!moves.is_empty(), "from frame {since}");
            // A viewer showing frame `since` copies them in order.
            let tops = [0u32, 16, 32];
            let mut viewer = (*frame(tops[since as usize - 1])).clone();
            for m in &moves {
                let rows: Vec<Vec<u32>> = (0..m.dst.h)
                    .map(|y| viewer.row(m.src_y + y, m.src_x, m.dst.w).to_vec())
                    .collect();
                for (y, r) in rows.iter().enumerate() {
                    let x = m.dst.x as usize;
                    viewer.row_mut(m.dst.y + y as u16)[x..x + r.len()].copy_from_slice(r);
                }
            }
            let mut copied = 0;
            for m in &moves {
                for y in m.dst.y..m.dst.y + m.dst.h {
                    assert_eq!(viewer.row(y, 0, 320), last.row(y, 0, 320), "row {y}");
                    copied += 1;
                }
            }
            // Everything below the title but the rows that came in.
            let shift = [64, 48, 32][since as usize - 1];
            assert_eq!(copied, 240 - 16 - shift, "from frame {since}: {moves:?}");
        }
        // A frame whose damage touches the log without a move breaks the
        // chain: nothing is composed across it.
        let mut g = (*frame(80)).clone();
        g[100 * 320 + 5] ^= 0xff;
        let g = Arc::new(g);
        h.record(5, &g, None, Vec::new());
        let mut g2 = (*g).clone();
        g2[100 * 320 + 5] ^= 0xff00;
        h.record(6, &Arc::new(g2), None, Vec::new());
        let moves = moves_since(&h.log(), 6, 4);
        assert!(
            moves
                .iter()
                .all(|m| !(m.dst.y..m.dst.y + m.dst.h).contains(&100)),
            "{moves:?}"
        );
    }
}
