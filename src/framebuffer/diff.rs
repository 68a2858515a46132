//! Tile diffing: which parts of a frame differ from the previous one.

use super::{Frame, Rect};

/// Edge of the square tiles frames are compared in (grid anchored at 0,0).
pub const TILE: u16 = 64;

/// Rectangles (within `area`) where `new` differs from `old`.
///
/// Only tiles that touch `hint` are compared when a hint is given (the
/// capture's damage); without one, every tile in `area` is. Changed tiles
/// are merged with changed neighbours on the same tile row, and each merged
/// run is trimmed to the rows that really changed. Frames of different sizes
/// give the whole `area`.
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
        if band.is_empty() {
            continue;
        }
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
                changed_rows(old, new, tile)
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

/// First and last row of `t` that differ, if any.
#[inline]
fn changed_rows(old: &Frame, new: &Frame, t: Rect) -> Option<(u16, u16)> {
    let differs = |y: u16| old.row(y, t.x, t.w) != new.row(y, t.x, t.w);
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

    #[test]
    fn finds_single_pixel_change() {
        let a = Frame::new(200, 100);
        let mut b = a.clone();
        b.pixels[150 + 99 * 200] = 1;
        let rects = changed_rects(&a, &b, a.bounds(), None);
        assert_eq!(rects, vec![Rect::new(128, 99, 64, 1)]);
        assert!(changed_rects(&a, &a, a.bounds(), None).is_empty());
    }

    #[test]
    fn hint_limits_the_compare_and_area_clips() {
        let a = Frame::new(300, 200);
        let mut b = a.clone();
        b.pixels[10 + 10 * 300] = 1; // tile (0,0)
        b.pixels[250 + 150 * 300] = 1; // tile (3,2)
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
        b.pixels[10 + 5 * 256] = 1;
        b.pixels[100 + 40 * 256] = 1;
        assert_eq!(
            changed_rects(&a, &b, a.bounds(), None),
            vec![Rect::new(0, 5, 128, 36)]
        );
    }
}
