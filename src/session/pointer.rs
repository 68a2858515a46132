//! The customer's pointer as one viewer sees it.
//!
//! Viewers that draw the pointer themselves only know where *they* put it.
//! When something else moves it (the customer, another viewer), this
//! viewer is told the position (PointerPos / VMware Cursor Position, where
//! it takes them) and, like TigerVNC's server, the pointer is drawn into
//! the pixels sent to it ("rendered cursor") with its local cursor shape
//! hidden, until the pointer is back where this viewer put it. Viewers
//! that take no cursor shapes at all always get the rendered cursor. The
//! published frame stays clean: only the pixels of this viewer's outgoing
//! rectangles that lie under the pointer are copied and drawn on, and the
//! pixels under an old position are resent when it moves (the viewer's
//! damage region gets both places).

use super::update::Published;
use crate::capture::CursorShape;
use crate::encoding::cursor::shape_ok;
use crate::framebuffer::{Frame, Rect};
use std::collections::VecDeque;

/// Positions of this viewer's own recent pointer events remembered: the
/// capture reports the pointer some frames behind the viewer's hand, and a
/// lagging position must not be sent back (it would fight the hand).
const OWN_POSITIONS: usize = 16;

#[derive(Default)]
pub struct PointerView {
    /// The last positions this viewer's pointer events put the pointer at.
    own: VecDeque<(u16, u16)>,
    /// The position the viewer was last told (or put the pointer at).
    pos_sent: Option<(u16, u16)>,
}

/// A pointer drawn into a viewer's picture: where, which image, and the
/// hotspot's position (a change of any of them redraws it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawn {
    pub rect: Rect,
    pub serial: u64,
    pub pos: (u16, u16),
}

impl PointerView {
    /// This viewer moved the pointer to (x, y).
    pub fn viewer_moved(&mut self, x: u16, y: u16) {
        if self.own.back() != Some(&(x, y)) {
            if self.own.len() == OWN_POSITIONS {
                self.own.pop_front();
            }
            self.own.push_back((x, y));
        }
    }

    fn is_own(&self, p: (u16, u16)) -> bool {
        self.own.contains(&p)
    }

    /// Forget what the viewer was told (it enabled a position encoding).
    pub fn reset_position(&mut self) {
        self.pos_sent = None;
    }

    /// Whether the pointer is to be drawn into this viewer's picture.
    pub fn needs_render(&self, latest: &Published, takes_shapes: bool) -> bool {
        match (latest.pointer, &latest.cursor) {
            (Some(p), Some((_, shape))) => shape_ok(shape) && (!takes_shapes || !self.is_own(p)),
            _ => false,
        }
    }

    /// The position to announce to a viewer that takes it, if it changed
    /// and was not this viewer's own doing.
    pub fn position_due(&mut self, pointer: Option<(u16, u16)>) -> Option<(u16, u16)> {
        let p = pointer?;
        if self.pos_sent == Some(p) {
            return None;
        }
        self.pos_sent = Some(p);
        (!self.is_own(p)).then_some(p)
    }
}

/// Where `shape` with its hotspot at `p` lies on a `w` x `h` frame.
pub fn cursor_rect(shape: &CursorShape, p: (u16, u16), w: u16, h: u16) -> Rect {
    let x0 = i32::from(p.0) - i32::from(shape.hot_x);
    let y0 = i32::from(p.1) - i32::from(shape.hot_y);
    let x1 = (x0 + i32::from(shape.width)).min(i32::from(w));
    let y1 = (y0 + i32::from(shape.height)).min(i32::from(h));
    let (x0, y0) = (x0.max(0), y0.max(0));
    if x1 <= x0 || y1 <= y0 {
        return Rect::default();
    }
    Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16)
}

/// Where the pointer of `latest` would be drawn; `None` when there is
/// nothing to draw (no image or position, an unusable image, off screen).
pub fn drawn(latest: &Published) -> Option<Drawn> {
    let ((serial, shape), pos) = (latest.cursor.as_ref()?, latest.pointer?);
    if !shape_ok(shape) {
        return None;
    }
    let f = &latest.frame;
    let rect = cursor_rect(shape, pos, f.width, f.height);
    (!rect.is_empty()).then_some(Drawn {
        rect,
        serial: *serial,
        pos,
    })
}

/// The pixels of `frame` in `r` (a patch `r.w` x `r.h`, at 0,0) with
/// `shape` drawn over them, its hotspot at `pos` in frame coordinates
/// (straight alpha). Only the patch is copied, never the frame.
pub fn draw(shape: &CursorShape, pos: (u16, u16), frame: &Frame, r: Rect) -> Frame {
    let mut f = Frame::new(r.w, r.h);
    let ox = i32::from(pos.0) - i32::from(shape.hot_x);
    let oy = i32::from(pos.1) - i32::from(shape.hot_y);
    for y in 0..r.h {
        let fy = r.y + y;
        let row = frame.row(fy, r.x, r.w);
        let out = f.row_mut(y);
        for (x, (o, &d)) in out.iter_mut().zip(row).enumerate() {
            let (cx, cy) = (i32::from(r.x) + x as i32 - ox, i32::from(fy) - oy);
            let inside = (0..i32::from(shape.width)).contains(&cx)
                && (0..i32::from(shape.height)).contains(&cy);
            *o = if inside {
                blend(
                    shape.pixels[cy as usize * shape.width as usize + cx as usize],
                    d,
                )
            } else {
                d
            };
        }
    }
    f
}

/// `latest` with the cursor drawn at the pointer (a whole-frame copy, for
/// tests to compare with); `None` when there is nothing to draw.
#[cfg(test)]
pub fn composite(latest: &Published) -> Option<(Published, Rect)> {
    let d = drawn(latest)?;
    let shape = &latest.cursor.as_ref()?.1;
    let mut f: Frame = (*latest.frame).clone();
    let patch = draw(shape, d.pos, &latest.frame, d.rect);
    for y in 0..d.rect.h {
        let x = d.rect.x as usize;
        f.row_mut(d.rect.y + y)[x..x + d.rect.w as usize]
            .copy_from_slice(patch.row(y, 0, d.rect.w));
    }
    let out = Published {
        seq: latest.seq,
        frame: std::sync::Arc::new(f),
        moves: latest.moves.clone(),
        cursor: latest.cursor.clone(),
        damage: latest.damage.clone(),
        screens: latest.screens.clone(),
        pointer: latest.pointer,
        leds: latest.leds,
    };
    Some((out, d.rect))
}

/// Straight-alpha `0xAARRGGBB` over native `0x00RRGGBB`.
fn blend(c: u32, d: u32) -> u32 {
    let a = c >> 24;
    match a {
        0 => d,
        255 => c & 0x00ff_ffff,
        _ => {
            let ch = |s: u32| {
                let (cs, ds) = ((c >> s) & 0xff, (d >> s) & 0xff);
                ((cs * a + ds * (255 - a) + 127) / 255) << s
            };
            ch(16) | ch(8) | ch(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_rect_clips_at_every_edge() {
        let s = CursorShape::arrow(); // 12x19, hotspot 0,0
        assert_eq!(cursor_rect(&s, (5, 6), 100, 100), Rect::new(5, 6, 12, 19));
        assert_eq!(
            cursor_rect(&s, (95, 90), 100, 100),
            Rect::new(95, 90, 5, 10)
        );
        let mut h = s.clone();
        h.hot_x = 11;
        h.hot_y = 18;
        assert_eq!(cursor_rect(&h, (3, 4), 100, 100), Rect::new(0, 0, 4, 5));
        assert!(cursor_rect(&s, (100, 5), 100, 100).is_empty());
    }

    #[test]
    fn own_positions_are_not_sent_back() {
        let mut v = PointerView::default();
        assert_eq!(v.position_due(Some((1, 2))), Some((1, 2)));
        assert_eq!(v.position_due(Some((1, 2))), None);
        v.viewer_moved(10, 10);
        v.viewer_moved(11, 10);
        // The capture lags behind the hand: neither is sent back.
        assert_eq!(v.position_due(Some((10, 10))), None);
        assert_eq!(v.position_due(Some((11, 10))), None);
        // Somebody else moves it.
        assert_eq!(v.position_due(Some((50, 60))), Some((50, 60)));
    }

    #[test]
    fn blend_is_exact_at_the_ends() {
        assert_eq!(blend(0xff12_3456, 0x00ab_cdef), 0x0012_3456);
        assert_eq!(blend(0x0012_3456, 0x00ab_cdef), 0x00ab_cdef);
        assert_eq!(blend(0x80ff_ffff, 0x0000_0000), 0x0080_8080);
    }
}
