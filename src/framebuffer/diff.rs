//! Tile diffing: which parts of a frame differ from the previous one.

use super::{Frame, Rect, BAND_ROWS};

/// Edge of the square tiles frames are compared in (grid anchored at 0,0).
pub const TILE: u16 = 64;
const _: () = assert!(TILE <= 64, "a tile's rows are bits of a u64");

/// Rectangles (within `area`) where `new` differs from `old`.
///
/// Only tiles that touch `hint` are compared when a hint is given (the
/// capture's damage); without one, every tile in `area` is. Changed tiles
/// are merged with changed neighbours on the same tile row, and each merged
/// run is trimmed to the rows that really changed ([`trim_columns`] trims
/// the columns too). Frames of different sizes give the whole `area`.
pub fn changed_rects(old: &Frame, new: &Frame, area: Rect, hint: Option<&[Rect]>) -> Vec<Rect> {
    let area = area.intersect(&new.bounds());
    if area.is_empty() {
        return Vec::new();
    }
    if old.width != new.width || old.height != new.height {
        return vec![area];
    }
    let mut out = Vec::new();
    let mut row_hints: Vec<Rect> = Vec::new();
    let first_row = area.y / TILE;
    let last_row = ((area.bottom() - 1) / TILE as u32) as u16;
    for tr in first_row..=last_row {
        let band = Rect::new(0, tr * TILE, new.width, TILE).intersect(&area);
        // Rows in memory both frames share are equal: nothing to compare.
        if band.is_empty()
            || (band.y / BAND_ROWS..=(band.bottom() - 1) as u16 / BAND_ROWS)
                .all(|b| old.shares_row(new, b * BAND_ROWS))
        {
            continue;
        }
        // Bit i: row band.y + i may differ.
        let mut maybe: u64 = if band.h >= 64 {
            u64::MAX
        } else {
            (1 << band.h) - 1
        };
        if let Some(h) = hint {
            row_hints.clear();
            row_hints.extend(
                h.iter()
                    .map(|r| r.intersect(&band))
                    .filter(|r| !r.is_empty()),
            );
            if row_hints.is_empty() {
                continue;
            }
        } else {
            // Without a hint every tile is compared: first each row whole
            // (one long comparison instead of one per tile), then the
            // tiles only on rows that differ.
            for i in 0..band.h {
                let y = band.y + i;
                if old.shares_row(new, y)
                    || old.row(y, band.x, band.w) == new.row(y, band.x, band.w)
                {
                    maybe &= !(1 << i);
                }
            }
            if maybe == 0 {
                continue;
            }
        }
        // A run of changed tiles: x range and the changed rows' range.
        let mut run: Option<(u32, u32, u16, u16)> = None;
        let first_col = band.x / TILE;
        let last_col = ((band.right() - 1) / TILE as u32) as u16;
        for tc in first_col..=last_col {
            let tile = Rect::new(tc * TILE, band.y, TILE, band.h).intersect(&band);
            let touched =
                hint.is_none() || row_hints.iter().any(|r| !r.intersect(&tile).is_empty());
            let rows = if touched {
                changed_rows(old, new, tile, maybe)
            } else {
                None
            };
            match (rows, run.as_mut()) {
                (Some((a, b)), Some(r)) => {
                    r.1 = tile.right();
                    r.2 = r.2.min(a);
                    r.3 = r.3.max(b);
                }
                (Some((a, b)), None) => run = Some((tile.x as u32, tile.right(), a, b)),
                (None, Some(_)) => out.push(run_rect(run.take().unwrap())),
                (None, None) => {}
            }
        }
        if let Some(r) = run {
            out.push(run_rect(r));
        }
    }
    out
}

fn run_rect((x0, x1, y0, y1): (u32, u32, u16, u16)) -> Rect {
    Rect::new(x0 as u16, y0, (x1 - x0) as u16, y1 - y0 + 1)
}

/// Cut each of `rects` (from [`changed_rects`] on the same frames) to the
/// columns that really changed: a typed glyph is then its own few pixels,
/// not a 64-pixel-wide strip. Done after the search for scrolling, which
/// wants the tile-aligned runs (on trimmed ones it found fewer moves).
pub fn trim_columns(old: &Frame, new: &Frame, rects: &mut [Rect]) {
    if old.width != new.width || old.height != new.height {
        return;
    }
    for r in rects.iter_mut().filter(|r| !r.is_empty()) {
        *r = trimmed(old, new, (u32::from(r.x), r.right(), r.y, r.y + r.h - 1));
    }
}

/// A run (columns `x0..x1`, rows `y0..=y1`, its first and last rows
/// changed) cut to the columns where some row changed. Each row is scanned
/// only outside the columns already known to change, and the scan stops
/// once a change at both edges of the run is found (most of a big change).
fn trimmed(old: &Frame, new: &Frame, (x0, x1, y0, y1): (u32, u32, u16, u16)) -> Rect {
    let w = (x1 - x0) as usize;
    // Leftmost changed column so far, and one past the rightmost.
    let (mut l, mut r) = (w, 0);
    for y in y0..=y1 {
        if l == 0 && r == w {
            break;
        }
        let (o, n) = (
            old.row(y, x0 as u16, w as u16),
            new.row(y, x0 as u16, w as u16),
        );
        if let Some(i) = first_diff(&o[..l], &n[..l]) {
            l = i;
        }
        let from = r.max(l);
        if let Some(i) = last_diff(&o[from..], &n[from..]) {
            r = from + i + 1;
        }
    }
    if l >= r {
        // Not expected (the run's rows differ); keep the whole run.
        return Rect::new(x0 as u16, y0, w as u16, y1 - y0 + 1);
    }
    // On a grid of GRID columns, within the run.
    let left = ((x0 as usize + l) / GRID * GRID).max(x0 as usize);
    let right = (x0 as usize + r).next_multiple_of(GRID).min(x1 as usize);
    Rect::new(left as u16, y0, (right - left) as u16, y1 - y0 + 1)
}

/// Trimmed columns start and end on multiples of this: vncdotool (1.4.2)
/// reads ZRLE's packed palette indices without the padding that ends each
/// row of a tile (RFC 6143, 7.7.5), so a tile whose width is not a multiple
/// of 8 decodes wrong there and vncdotool stops; TigerVNC, vnc-rs and
/// crates/rfb-decode read them right. Up to 7 more columns on each side.
const GRID: usize = 8;

/// Pixels compared at once when looking for the first or last difference
/// (slices of this length compare like memcmp).
const CHUNK: usize = 16;

/// Index of the first pixel where `a` and `b` differ.
fn first_diff(a: &[u32], b: &[u32]) -> Option<usize> {
    let c = a
        .chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .position(|(x, y)| x != y)?;
    let at = c * CHUNK;
    (at..a.len()).find(|&i| a[i] != b[i])
}

/// Index of the last pixel where `a` and `b` differ.
fn last_diff(a: &[u32], b: &[u32]) -> Option<usize> {
    let c = a
        .rchunks(CHUNK)
        .zip(b.rchunks(CHUNK))
        .position(|(x, y)| x != y)?;
    let end = a.len() - c * CHUNK;
    (0..end).rev().find(|&i| a[i] != b[i])
}

/// First and last row of `t` that differ, if any; only rows whose bit
/// in `maybe` is set (bit i: row `t.y + i`) can.
#[inline]
fn changed_rows(old: &Frame, new: &Frame, t: Rect, maybe: u64) -> Option<(u16, u16)> {
    let differs = |y: u16| {
        maybe >> (y - t.y) & 1 == 1
            && !old.shares_row(new, y)
            && old.row(y, t.x, t.w) != new.row(y, t.x, t.w)
    };
    let first = (t.y..t.y + t.h).find(|&y| differs(y))?;
    let last = (first..t.y + t.h)
        .rev()
        .find(|&y| differs(y))
        .unwrap_or(first);
    Some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in bands both frames share are skipped, and only those: a
    /// change in the last band an unaligned area touches is found.
    #[test]
    fn shared_bands_are_skipped_and_the_others_compared() {
        let a = Frame::from_pixels(64, 200, (0..64 * 200).collect());
        let mut b = a.clone();
        let y = 2 * BAND_ROWS + 5;
        b.set(7, y, 1);
        assert!(b.shares_row(&a, 0) && !b.shares_row(&a, y));
        let area = Rect::new(0, 10, 64, y + 1 - 10);
        assert_eq!(
            changed_rects(&a, &b, area, None),
            vec![Rect::new(0, y, 64, 1)]
        );
        // The same pixels in a band of its own are no change either.
        let mut c = a.clone();
        c.set(7, y, a.get(7, y));
        assert!(!c.shares_row(&a, y));
        assert!(changed_rects(&a, &c, a.bounds(), None).is_empty());
    }

    #[test]
    fn finds_single_pixel_change() {
        let a = Frame::new(200, 100);
        let mut b = a.clone();
        b[150 + 99 * 200] = 1;
        let rects = changed_rects(&a, &b, a.bounds(), None);
        assert_eq!(rects, vec![Rect::new(128, 99, 64, 1)]);
        let mut trimmed = rects.clone();
        trim_columns(&a, &b, &mut trimmed);
        assert_eq!(trimmed, vec![Rect::new(144, 99, 8, 1)]);
        assert!(changed_rects(&a, &a, a.bounds(), None).is_empty());
    }

    #[test]
    fn hint_limits_the_compare_and_area_clips() {
        let a = Frame::new(300, 200);
        let mut b = a.clone();
        b[10 + 10 * 300] = 1; // tile (0,0)
        b[250 + 150 * 300] = 1; // tile (3,2)
        let all = changed_rects(&a, &b, a.bounds(), None);
        assert_eq!(all.len(), 2);
        let hinted = changed_rects(&a, &b, a.bounds(), Some(&[Rect::new(240, 140, 5, 5)]));
        assert_eq!(hinted, vec![Rect::new(192, 150, 64, 1)]);
        let clipped = changed_rects(&a, &b, Rect::new(5, 5, 20, 20), None);
        assert_eq!(clipped, vec![Rect::new(5, 10, 20, 1)]);
    }

    #[test]
    fn adjacent_tiles_merge_with_union_of_rows() {
        let a = Frame::new(256, 64);
        let mut b = a.clone();
        b[10 + 5 * 256] = 1;
        b[100 + 40 * 256] = 1;
        let mut rects = changed_rects(&a, &b, a.bounds(), None);
        assert_eq!(rects, vec![Rect::new(0, 5, 128, 36)]);
        trim_columns(&a, &b, &mut rects);
        assert_eq!(rects, vec![Rect::new(8, 5, 96, 36)]);
    }

    /// Against a brute-force check on random changes: every changed pixel
    /// is in a rectangle, and each rectangle is tight (a change in its first
    /// and last row, and in its first and last column).
    #[test]
    fn rects_cover_every_change_and_are_tight() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..200 {
            let (w, h) = (50 + rnd(300), 30 + rnd(200));
            let a = Frame::new(w as u16, h as u16);
            let mut b = a.clone();
            for _ in 0..1 + rnd(6) {
                // A small block (a glyph) or a single pixel.
                let (x, y) = (rnd(w), rnd(h));
                let (bw, bh) = (1 + rnd(12), 1 + rnd(20));
                for yy in y..(y + bh).min(h) {
                    for xx in x..(x + bw).min(w) {
                        if rnd(3) > 0 {
                            b[yy * w + xx] = 1 + round as u32;
                        }
                    }
                }
            }
            let mut rects = changed_rects(&a, &b, a.bounds(), None);
            // The same frames in memory of their own (no band shared).
            let separate = Frame::from_pixels(b.width, b.height, b.to_pixels());
            assert_eq!(rects, changed_rects(&a, &separate, a.bounds(), None));
            trim_columns(&a, &b, &mut rects);
            let differs = |x: usize, y: usize| a[y * w + x] != b[y * w + x];
            for y in 0..h {
                for x in 0..w {
                    if differs(x, y) {
                        assert!(
                            rects
                                .iter()
                                .any(|r| r.contains(&Rect::new(x as u16, y as u16, 1, 1))),
                            "round {round}: change at ({x},{y}) not covered by {rects:?}"
                        );
                    }
                }
            }
            for r in &rects {
                let (x0, y0) = (r.x as usize, r.y as usize);
                let (x1, y1) = (x0 + r.w as usize - 1, y0 + r.h as usize - 1);
                let row_has = |y: usize| (x0..=x1).any(|x| differs(x, y));
                // Columns are on the 8-pixel grid: a change within the
                // first and the last 8 columns (or the frame's edge).
                let col_has = |xs: std::ops::RangeInclusive<usize>| {
                    xs.into_iter().any(|x| (y0..=y1).any(|y| differs(x, y)))
                };
                assert!(
                    row_has(y0)
                        && row_has(y1)
                        && col_has(x0..=(x0 + GRID - 1).min(x1))
                        && col_has(x1.saturating_sub(GRID - 1).max(x0)..=x1),
                    "round {round}: {r:?} is not tight"
                );
                assert!(
                    x0 % GRID == 0 && ((x1 + 1) % GRID == 0 || x1 + 1 == w),
                    "{r:?} off the grid"
                );
            }
        }
    }
}
