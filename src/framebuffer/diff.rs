//! Tile diffing: which parts of a frame differ from the previous one.

use super::{Frame, Rect};

/// Edge of the square tiles frames are compared in.
pub const TILE: u16 = 64;

/// Rectangles (within `area`) where `new` differs from `old`. Both frames must
/// have the same size; otherwise the whole `area` is returned. Changed tiles
/// are merged with their changed neighbours on the same tile row, so a wide
/// change becomes one rectangle per tile row.
pub fn changed_rects(old: &Frame, new: &Frame, area: Rect) -> Vec<Rect> {
    let area = area.intersect(&new.bounds());
    if area.is_empty() {
        return Vec::new();
    }
    if old.width != new.width || old.height != new.height {
        return vec![area];
    }
    let mut out = Vec::new();
    let mut ty = area.y;
    while (ty as u32) < area.bottom() {
        let th = (TILE as u32).min(area.bottom() - ty as u32) as u16;
        let mut run: Option<Rect> = None;
        let mut tx = area.x;
        while (tx as u32) < area.right() {
            let tw = (TILE as u32).min(area.right() - tx as u32) as u16;
            let tile = Rect::new(tx, ty, tw, th);
            if tile_differs(old, new, tile) {
                run = Some(match run {
                    Some(r) => r.union(&tile),
                    None => tile,
                });
            } else if let Some(r) = run.take() {
                out.push(r);
            }
            tx += tw;
        }
        if let Some(r) = run {
            out.push(r);
        }
        ty += th;
    }
    out
}

fn tile_differs(old: &Frame, new: &Frame, t: Rect) -> bool {
    (t.y..t.y + t.h).any(|y| old.row(y, t.x, t.w) != new.row(y, t.x, t.w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_single_pixel_change() {
        let a = Frame::new(200, 100);
        let mut b = a.clone();
        b.pixels[150 + 99 * 200] = 1;
        let rects = changed_rects(&a, &b, a.bounds());
        assert_eq!(rects, vec![Rect::new(128, 64, 64, 36)]);
        assert!(changed_rects(&a, &a, a.bounds()).is_empty());
    }
}
