//! Regions as lists of rectangles: what a viewer still has to be sent.
//!
//! A viewer's pending damage is kept as a short list of disjoint
//! rectangles on the diff's tile grid ([`normalise`]), so however many
//! captures pile up while a viewer is slow, the list stays bounded (at most
//! one rectangle per run of touched tiles on each tile row) and nothing is
//! sent twice in one update.

use super::diff::TILE;
use super::Rect;

/// `r` minus `cut`, as up to four rectangles pushed onto `out`.
pub fn subtract(r: Rect, cut: Rect, out: &mut Vec<Rect>) {
    let i = r.intersect(&cut);
    if i.is_empty() {
        if !r.is_empty() {
            out.push(r);
        }
        return;
    }
    // Above and below the cut, full width; left and right of it, its rows.
    let pieces = [
        Rect::new(r.x, r.y, r.w, i.y - r.y),
        Rect::new(
            r.x,
            i.bottom() as u16,
            r.w,
            (r.bottom() - i.bottom()) as u16,
        ),
        Rect::new(r.x, i.y, i.x - r.x, i.h),
        Rect::new(i.right() as u16, i.y, (r.right() - i.right()) as u16, i.h),
    ];
    out.extend(pieces.into_iter().filter(|p| !p.is_empty()));
}

/// Every rectangle of `rects` minus `cut`.
pub fn subtract_all(rects: &[Rect], cut: Rect) -> Vec<Rect> {
    let mut out = Vec::with_capacity(rects.len());
    for r in rects {
        subtract(*r, cut, &mut out);
    }
    out
}

/// The parts of `rects` inside `area`.
pub fn clip_all(rects: &[Rect], area: Rect) -> Vec<Rect> {
    rects
        .iter()
        .map(|r| r.intersect(&area))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Whether any rectangle of `rects` overlaps `r`.
pub fn overlaps(rects: &[Rect], r: Rect) -> bool {
    rects.iter().any(|d| !d.intersect(&r).is_empty())
}

/// Disjoint rectangles covering `rects` inside `bounds`: on each row of
/// [`TILE`]-high bands, touched tiles next to each other make one
/// rectangle from the leftmost to the rightmost touched column and from the
/// first to the last touched row. Covers at least what `rects` covered.
pub fn normalise(rects: &[Rect], bounds: Rect) -> Vec<Rect> {
    let rects = clip_all(rects, bounds);
    if rects.len() <= 1 {
        return rects;
    }
    let cols = (bounds.right() as usize).div_ceil(TILE as usize);
    let rows = (bounds.bottom() as usize).div_ceil(TILE as usize);
    // Per tile: touched x range and y range (x0, x1, y0, y1), exclusive ends.
    let mut tiles: Vec<Option<(u32, u32, u32, u32)>> = vec![None; cols * rows];
    for r in &rects {
        let (tc0, tc1) = (r.x / TILE, ((r.right() - 1) / TILE as u32) as u16);
        let (tr0, tr1) = (r.y / TILE, ((r.bottom() - 1) / TILE as u32) as u16);
        for tr in tr0..=tr1 {
            for tc in tc0..=tc1 {
                let tile = Rect::new(tc * TILE, tr * TILE, TILE, TILE);
                let i = tile.intersect(r);
                let e = (i.x as u32, i.right(), i.y as u32, i.bottom());
                let t = &mut tiles[tr as usize * cols + tc as usize];
                *t = Some(match *t {
                    None => e,
                    Some(o) => (o.0.min(e.0), o.1.max(e.1), o.2.min(e.2), o.3.max(e.3)),
                });
            }
        }
    }
    let mut out = Vec::new();
    for tr in 0..rows {
        let mut run: Option<(u32, u32, u32, u32)> = None;
        for tc in 0..cols {
            match (tiles[tr * cols + tc], run.as_mut()) {
                (Some(e), Some(r)) => {
                    r.1 = e.1;
                    r.2 = r.2.min(e.2);
                    r.3 = r.3.max(e.3);
                }
                (Some(e), None) => run = Some(e),
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

fn run_rect((x0, x1, y0, y1): (u32, u32, u32, u32)) -> Rect {
    Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(rs: &[Rect]) -> usize {
        rs.iter().map(|r| r.area()).sum()
    }

    fn covers(rs: &[Rect], x: u16, y: u16) -> bool {
        rs.iter().any(|r| r.contains(&Rect::new(x, y, 1, 1)))
    }

    #[test]
    fn subtract_leaves_the_frame_around_a_hole() {
        let mut out = Vec::new();
        subtract(Rect::new(0, 0, 10, 10), Rect::new(3, 4, 2, 2), &mut out);
        assert_eq!(area(&out), 100 - 4);
        for y in 0..10 {
            for x in 0..10 {
                let hole = (3..5).contains(&x) && (4..6).contains(&y);
                assert_eq!(covers(&out, x, y), !hole, "({x},{y})");
            }
        }
        // Disjoint and outside cases.
        assert_eq!(
            subtract_all(&[Rect::new(0, 0, 4, 4)], Rect::new(10, 10, 5, 5)),
            vec![Rect::new(0, 0, 4, 4)]
        );
        assert!(subtract_all(&[Rect::new(2, 2, 4, 4)], Rect::new(0, 0, 10, 10)).is_empty());
        // Cuts reaching the u16 edge.
        let out = subtract_all(&[Rect::new(65000, 0, 535, 10)], Rect::new(65100, 0, 435, 5));
        assert_eq!(area(&out), 535 * 10 - 435 * 5);
    }

    #[test]
    fn normalise_is_disjoint_bounded_and_covers() {
        let bounds = Rect::new(0, 0, 300, 200);
        // Many overlapping rectangles, as captures of a blinking caret pile up.
        let mut rs = Vec::new();
        for i in 0..500u16 {
            rs.push(Rect::new(10 + i % 7, 20, 2, 12));
            rs.push(Rect::new(200, 150 + i % 3, 90, 5));
        }
        rs.push(Rect::new(250, 190, 100, 100)); // partly outside
        let n = normalise(&rs, bounds);
        assert!(n.len() <= 4, "{n:?}");
        for (i, a) in n.iter().enumerate() {
            assert!(bounds.contains(a));
            for b in &n[i + 1..] {
                assert!(a.intersect(b).is_empty(), "{a:?} {b:?}");
            }
        }
        for r in &rs {
            let r = r.intersect(&bounds);
            for y in r.y..r.y + r.h {
                for x in r.x..r.x + r.w {
                    assert!(covers(&n, x, y), "({x},{y}) lost");
                }
            }
        }
        assert!(!covers(&n, 100, 100));
    }
}
