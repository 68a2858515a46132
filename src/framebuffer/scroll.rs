//! Scroll detection (issue 12): where the rows of a changed area moved up
//! or down between two frames (a terminal, a log or a web page scrolling),
//! they become CopyRect moves, so the viewer copies what it already has
//! and only the rows that came into view are encoded.
//!
//! X11, Wayland and the desktops' screen casts give no move hints for
//! scrolling, so the frames themselves are compared: every row of the
//! changed area's bounding box in the old frame is hashed once, a few
//! anchor rows of the new frame are looked up there and vote for a shift,
//! and the rows that hold under the winning shift are compared exactly.
//! A frame where nothing scrolled costs one pass over the old frame's
//! changed area.

use super::{Frame, Rect};
use crate::capture::MoveHint;

/// Searches in a row that found nothing, after which only every
/// [`SEARCH_EVERY`]th capture with a large changed area is searched (a video
/// or a photo show changing pixels that never scroll)...
const MISSES_BEFORE_THINNING: u32 = 3;
/// ...until a search finds a scroll again.
const SEARCH_EVERY: u32 = 4;

/// Changed areas smaller than this are not looked at (typing, a clock).
const MIN_ROWS: u16 = 32;
const MIN_COLS: u16 = 64;
/// A move covers at least this many rows: shorter runs are cheaper to
/// encode than to prove.
pub(crate) const MIN_RUN: u16 = 8;
/// Rows of the new frame looked up in the old one.
const ANCHORS: usize = 32;
/// A row found at more places than this in the old area (blank lines)
/// does not vote.
const MAX_PLACES: usize = 4;
/// Votes the winning shift needs.
const MIN_VOTES: u32 = 3;
/// Moves made per frame at most (the longest runs).
const MAX_MOVES: usize = 8;

/// The moves that turn `old` into `new` inside the areas `changed` makes
/// (rectangles that touch or lie one under the other, in overlapping
/// columns, are one area: a scrolling window's tile rows; a clock or a
/// status line elsewhere is an area of its own), each exact (the old
/// frame's rows at the source equal the new frame's at the destination)
/// and with its source inside its area. Empty when nothing scrolled, the
/// frames differ in size, or the areas are small.
pub fn detect(old: &Frame, new: &Frame, changed: &[Rect]) -> Vec<MoveHint> {
    if old.width != new.width || old.height != new.height {
        return Vec::new();
    }
    areas(changed)
        .into_iter()
        .map(|a| a.intersect(&new.bounds()))
        .filter(|a| a.h >= MIN_ROWS && a.w >= MIN_COLS)
        .flat_map(|area| match shift(old, new, area) {
            Some(dy) => runs(old, new, area, dy),
            None => Vec::new(),
        })
        .collect()
}

/// [`detect`] for a stream of captures, searching less where nothing
/// scrolls: after [`MISSES_BEFORE_THINNING`] searches in a row found
/// nothing, only every [`SEARCH_EVERY`]th capture with a large changed area
/// is searched, until one finds a scroll. A scroll that starts then is
/// found at most three captures late (those are sent as changed pixels).
#[derive(Debug, Default)]
pub struct Searches {
    misses: u32,
    skipped: u32,
}

impl Searches {
    pub fn detect(&mut self, old: &Frame, new: &Frame, changed: &[Rect]) -> Vec<MoveHint> {
        let large = areas(changed)
            .iter()
            .map(|a| a.intersect(&new.bounds()))
            .any(|a| a.h >= MIN_ROWS && a.w >= MIN_COLS);
        if !large {
            return Vec::new();
        }
        if self.misses >= MISSES_BEFORE_THINNING && self.skipped + 1 < SEARCH_EVERY {
            self.skipped += 1;
            return Vec::new();
        }
        self.skipped = 0;
        let moves = detect(old, new, changed);
        if moves.is_empty() {
            self.misses = self.misses.saturating_add(1);
        } else {
            self.misses = 0;
        }
        moves
    }
}

/// The bounding boxes of the groups of `rects` that touch (or come within
/// a row of each other) with overlapping columns.
fn areas(rects: &[Rect]) -> Vec<Rect> {
    let mut sorted = rects.to_vec();
    sorted.sort_by_key(|r| (r.y, r.x));
    let mut out: Vec<Rect> = Vec::new();
    for r in sorted.into_iter().filter(|r| !r.is_empty()) {
        let near = |a: &Rect| {
            u32::from(r.y) <= a.bottom()
                && u32::from(a.y) <= r.bottom()
                && u32::from(r.x) < a.right()
                && u32::from(a.x) < r.right()
        };
        match out.iter().position(near) {
            Some(i) => out[i] = out[i].union(&r),
            None => out.push(r),
        }
    }
    // Grown boxes may now meet each other.
    let mut merged = true;
    while merged {
        merged = false;
        'outer: for i in 0..out.len() {
            for j in i + 1..out.len() {
                let (a, b) = (out[i], out[j]);
                if u32::from(a.y) <= b.bottom()
                    && u32::from(b.y) <= a.bottom()
                    && u32::from(a.x) < b.right()
                    && u32::from(b.x) < a.right()
                {
                    out[i] = a.union(&b);
                    out.remove(j);
                    merged = true;
                    break 'outer;
                }
            }
        }
    }
    out
}

/// The vertical shift most anchor rows agree on (new row `y` was old row
/// `y - dy`), when enough do.
fn shift(old: &Frame, new: &Frame, area: Rect) -> Option<i32> {
    let mut places: Vec<(u64, u16)> = (area.y..area.y + area.h)
        .map(|y| (row_hash(old.row(y, area.x, area.w)), y))
        .collect();
    places.sort_unstable();
    let mut votes: Vec<(i32, u32)> = Vec::new();
    let step = (area.h as usize / ANCHORS).max(1);
    for y in (area.y as usize..(area.y + area.h) as usize).step_by(step) {
        let y = y as u16;
        let h = row_hash(new.row(y, area.x, area.w));
        let first = places.partition_point(|p| p.0 < h);
        let n = places[first..].iter().take_while(|p| p.0 == h).count();
        if n == 0 || n > MAX_PLACES {
            continue;
        }
        for &(_, from) in &places[first..first + n] {
            let dy = i32::from(y) - i32::from(from);
            if dy == 0 {
                continue;
            }
            match votes.iter_mut().find(|v| v.0 == dy) {
                Some(v) => v.1 += 1,
                None => votes.push((dy, 1)),
            }
        }
    }
    votes
        .into_iter()
        .filter(|v| v.1 >= MIN_VOTES)
        .max_by_key(|v| (v.1, -v.0.abs()))
        .map(|v| v.0)
}

/// The runs of rows of `area` that are old rows shifted by `dy`, as moves
/// (the longest [`MAX_MOVES`], in an order they can be copied in).
fn runs(old: &Frame, new: &Frame, area: Rect, dy: i32) -> Vec<MoveHint> {
    let mut found: Vec<(u16, u16)> = Vec::new();
    let mut start: Option<u16> = None;
    let end = area.y + area.h;
    for y in area.y..=end {
        let holds = y < end && {
            let from = i32::from(y) - dy;
            (i32::from(area.y)..i32::from(end)).contains(&from)
                && new.row(y, area.x, area.w) == old.row(from as u16, area.x, area.w)
        };
        match (holds, start) {
            (true, None) => start = Some(y),
            (false, Some(s)) => {
                if y - s >= MIN_RUN {
                    found.push((s, y - s));
                }
                start = None;
            }
            _ => {}
        }
    }
    found.sort_by_key(|r| std::cmp::Reverse(r.1));
    found.truncate(MAX_MOVES);
    // In the order a viewer can copy them one after another: no move's
    // source is a row an earlier move wrote (down: bottom run first).
    if dy > 0 {
        found.sort_by_key(|r| std::cmp::Reverse(r.0));
    } else {
        found.sort_by_key(|r| r.0);
    }
    found
        .into_iter()
        .map(|(y, h)| MoveHint {
            src_x: area.x,
            src_y: (i32::from(y) - dy) as u16,
            dst: Rect::new(area.x, y, area.w, h),
        })
        .collect()
}

/// A hash of one row of pixels (four lanes, so the multiplications do not
/// wait on each other).
fn row_hash(row: &[u32]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [0u64, 1, 2, 3];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let v = u64::from(c[2 * i]) | u64::from(c[2 * i + 1]) << 32;
            *lane = (*lane ^ v).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = lanes
        .iter()
        .fold(row.len() as u64, |h, l| (h ^ l).wrapping_mul(K));
    for &p in chunks.remainder() {
        h = (h ^ u64::from(p)).wrapping_mul(K).rotate_left(29);
    }
    h ^ h >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of "text": rows of pseudo-random glyph pixels, with blank
    /// lines between lines of text, as a terminal has.
    fn page(w: u16, h: u16, seed: u32) -> Frame {
        let mut f = Frame::new(w, h);
        for y in 0..h as usize {
            let line = (y / 16) as u32 + seed;
            if y % 16 >= 12 {
                continue; // the gap between lines: blank
            }
            for x in 0..w as usize {
                let v =
                    ((x as u32 / 3) ^ (line.wrapping_mul(7919) << 8) ^ (((y % 16) as u32) << 24))
                        .wrapping_mul(2_654_435_761);
                f[y * w as usize + x] = if v >> 29 == 0 { 0x00ff_ffff } else { 0 };
            }
        }
        f
    }

    /// `f` scrolled up by `dy` rows inside `r`; the rows that come in are
    /// from `fresh`.
    fn scrolled(f: &Frame, fresh: &Frame, r: Rect, dy: u16) -> Frame {
        let mut g = f.clone();
        for y in r.y..r.y + r.h {
            let (src, from) = if y + dy < r.y + r.h {
                (f, y + dy)
            } else {
                (fresh, y)
            };
            let s = src.row(from, r.x, r.w).to_vec();
            g.row_mut(y)[r.x as usize..r.right() as usize].copy_from_slice(&s);
        }
        g
    }

    /// Where nothing scrolls, fewer captures are searched; the first scroll
    /// found brings back a search per capture.
    #[test]
    fn searches_thin_out_where_nothing_scrolls() {
        let r = Rect::new(0, 0, 256, 192);
        let a = page(256, 192, 1);
        let mut b = Frame::new(256, 192);
        for (i, p) in b.pixels_mut().enumerate() {
            *p = (i as u32).wrapping_mul(2_654_435_761) >> 8;
        }
        let down = scrolled(&a, &page(256, 192, 1000), r, 16);
        let mut s = Searches::default();
        // Three searches that find nothing (noise replaced the page).
        for _ in 0..MISSES_BEFORE_THINNING {
            assert!(s.detect(&a, &b, &[r]).is_empty());
        }
        // Then a scroll: missed by the captures skipped, found by the next.
        let found: Vec<bool> = (0..SEARCH_EVERY)
            .map(|_| !s.detect(&a, &down, &[r]).is_empty())
            .collect();
        assert_eq!(found, [false, false, false, true]);
        // Found: every capture is searched again.
        assert!(!s.detect(&a, &down, &[r]).is_empty());
        assert!(!s.detect(&a, &down, &[r]).is_empty());
        // Small changes neither count nor are searched.
        let mut s = Searches::default();
        for _ in 0..10 {
            assert!(s.detect(&a, &b, &[Rect::new(0, 0, 8, 16)]).is_empty());
        }
        assert!(!s.detect(&a, &down, &[r]).is_empty());
    }

    /// Applies the moves to `viewer` as a viewer does (each CopyRect reads
    /// the picture as the earlier ones left it).
    fn apply(viewer: &mut Frame, moves: &[MoveHint]) {
        for m in moves {
            let mut rows = Vec::new();
            for y in 0..m.dst.h {
                rows.push(viewer.row(m.src_y + y, m.src_x, m.dst.w).to_vec());
            }
            for (y, r) in rows.into_iter().enumerate() {
                let x = m.dst.x as usize;
                viewer.row_mut(m.dst.y + y as u16)[x..x + r.len()].copy_from_slice(&r);
            }
        }
    }

    #[test]
    fn a_scrolled_page_becomes_one_exact_move() {
        let old = page(640, 480, 0);
        let fresh = page(640, 480, 1000);
        let area = Rect::new(0, 32, 640, 448);
        let new = scrolled(&old, &fresh, area, 16);
        let moves = detect(&old, &new, &[area]);
        assert_eq!(moves.len(), 1, "{moves:?}");
        let m = &moves[0];
        assert_eq!((m.src_x, m.src_y), (0, 48));
        assert_eq!(m.dst, Rect::new(0, 32, 640, 432));
        let mut viewer = old.clone();
        apply(&mut viewer, &moves);
        for y in m.dst.y..m.dst.y + m.dst.h {
            assert_eq!(viewer.row(y, 0, 640), new.row(y, 0, 640));
        }
    }

    #[test]
    fn scrolling_down_and_a_changed_column_give_exact_runs() {
        let old = page(640, 480, 7);
        let fresh = page(640, 480, 99);
        // Down by 48 rows: new row y is old row y - 48.
        let mut new = old.clone();
        for y in 48..480u16 {
            let s = old.row(y - 48, 0, 640).to_vec();
            new.row_mut(y).copy_from_slice(&s);
        }
        for y in 0..48u16 {
            let s = fresh.row(y, 0, 640).to_vec();
            new.row_mut(y).copy_from_slice(&s);
        }
        // A scroll bar thumb at the right edge, rows 200..240, changes.
        for y in 200..240 {
            new[y * 640 + 639] = 0x00ab_cdef;
        }
        let moves = detect(&old, &new, &[new.bounds()]);
        assert!(moves.len() >= 2, "{moves:?}");
        let mut viewer = old.clone();
        apply(&mut viewer, &moves);
        let mut covered = 0;
        for m in &moves {
            assert_eq!(i32::from(m.dst.y) - i32::from(m.src_y), 48);
            for y in m.dst.y..m.dst.y + m.dst.h {
                assert_eq!(viewer.row(y, 0, 640), new.row(y, 0, 640), "row {y}");
                assert!(!(200..240).contains(&y), "a changed row was copied");
                covered += 1;
            }
        }
        assert!(covered >= 380, "only {covered} rows moved");
    }

    #[test]
    fn noise_blank_screens_and_small_areas_give_no_move() {
        let mut old = Frame::new(320, 240);
        let mut new = Frame::new(320, 240);
        let mut s = 1u32;
        for (a, b) in old.pixels_mut().zip(new.pixels_mut()) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *a = s & 0xff_ffff;
            *b = s.rotate_left(7) & 0xff_ffff;
        }
        assert!(detect(&old, &new, &[old.bounds()]).is_empty());
        // Blank rows are found everywhere and vote for nothing.
        let blank = Frame::new(320, 240);
        let mut one = blank.clone();
        one[100 * 320 + 5] = 1;
        assert!(detect(&blank, &one, &[blank.bounds()]).is_empty());
        // Typing-sized changes are not looked at.
        let p = page(320, 240, 0);
        let q = scrolled(&p, &page(320, 240, 5), Rect::new(0, 0, 320, 24), 16);
        assert!(detect(&p, &q, &[Rect::new(0, 0, 320, 24)]).is_empty());
        // Frames of another size.
        assert!(detect(&p, &Frame::new(10, 10), &[Rect::new(0, 0, 10, 10)]).is_empty());
    }

    #[test]
    fn a_scroll_and_a_change_elsewhere_are_areas_of_their_own() {
        // A scrolling window's tile rows make one area; a status line at
        // the top (full width, too low to search) and a clock at the right
        // are their own.
        let window: Vec<Rect> = (0..8)
            .map(|i| Rect::new(100, 200 + i * 64, 800, 64))
            .collect();
        let mut rects = vec![Rect::new(0, 0, 1920, 16), Rect::new(1800, 1000, 100, 40)];
        rects.extend(&window);
        let mut found = areas(&rects);
        found.sort_by_key(|r| (r.y, r.x));
        assert_eq!(
            found,
            vec![
                Rect::new(0, 0, 1920, 16),
                Rect::new(100, 200, 800, 512),
                Rect::new(1800, 1000, 100, 40),
            ]
        );
        // The window scrolls: found although the status line changed too.
        let old = page(1920, 1080, 3);
        let mut new = scrolled(
            &old,
            &page(1920, 1080, 50),
            Rect::new(100, 200, 800, 512),
            16,
        );
        for p in new.pixels_mut().take(1920 * 16) {
            *p ^= 0x80;
        }
        let moves = detect(&old, &new, &rects);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].dst, Rect::new(100, 200, 800, 496));
        assert_eq!(moves[0].src_y, 216);
    }

    #[test]
    fn row_hash_tells_rows_apart() {
        let a: Vec<u32> = (0..1920).collect();
        let mut b = a.clone();
        b[1919] ^= 1;
        assert_ne!(row_hash(&a), row_hash(&b));
        b[1919] ^= 1;
        b[3] ^= 0x10000;
        assert_ne!(row_hash(&a), row_hash(&b));
        assert_eq!(row_hash(&a), row_hash(&a.clone()));
        assert_ne!(row_hash(&a[..7]), row_hash(&a[1..8]));
    }
}
