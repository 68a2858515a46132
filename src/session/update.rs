//! What one viewer has and wants, and how to bring it up to date. No I/O:
//! given the newest published frame, [`ViewerState::build_update`] returns
//! the bytes of one FramebufferUpdate (or nothing yet).

use crate::capture::MoveHint;
use crate::encoding::{write_copy_rect, ClientEncodings, ConnectionEncoders, EncodeParams};
use crate::framebuffer::{diff, Frame, Rect};
use crate::rfb::messages::{enc, write_colour_map, write_rect_header, write_update_header};
use crate::rfb::PixelFormat;
use std::sync::Arc;

/// A frame as published by the capture loop.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub frame: Arc<Frame>,
    /// Moves from frame `seq - 1` to this one.
    pub moves: Vec<MoveHint>,
}

/// More rectangles than this in one update are merged into their bounding box.
const MAX_RECTS_PER_UPDATE: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// The desktop changed size and the viewer cannot be told.
    ResizeUnsupported,
}

pub struct ViewerState {
    pub pf: PixelFormat,
    pub encodings: ClientEncodings,
    encoders: ConnectionEncoders,
    /// What the viewer's framebuffer holds (`None` before the first update).
    shadow: Option<Frame>,
    shadow_seq: u64,
    /// Size the viewer believes the desktop has.
    viewer_size: (u16, u16),
    /// Region of an outstanding request, and whether all of it must be sent.
    request: Option<(Rect, bool)>,
    /// The colour map must be (re)sent before the next update.
    colour_map_due: bool,
    /// The desktop name changed and must be sent.
    pub name_due: Option<String>,
    pub updates_sent: u64,
    pub resize_reply_due: Option<ResizeReply>,
}

/// Answer owed to a SetDesktopSize request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeReply {
    pub status: u16,
}

impl ViewerState {
    pub fn new(width: u16, height: u16) -> ViewerState {
        ViewerState {
            pf: PixelFormat::NATIVE,
            encodings: ClientEncodings::default(),
            encoders: ConnectionEncoders::default(),
            shadow: None,
            shadow_seq: 0,
            viewer_size: (width, height),
            request: None,
            colour_map_due: false,
            name_due: None,
            updates_sent: 0,
            resize_reply_due: None,
        }
    }

    pub fn set_pixel_format(&mut self, pf: PixelFormat) {
        self.pf = pf;
        self.colour_map_due = !pf.true_colour;
        // Everything the viewer has is now in the wrong format for it to
        // reuse; send a full picture with the next update.
        self.shadow = None;
    }

    pub fn set_encodings(&mut self, list: &[i32]) {
        self.encodings = ClientEncodings::from_list(list);
    }

    /// A FramebufferUpdateRequest arrived.
    pub fn request(&mut self, incremental: bool, rect: Rect) {
        // Clip to the 16-bit plane first: a request such as x=100, w=65535
        // reaches past 65535, and merging it with another request would
        // wrap the merged width around u16 and silently drop area.
        let rect = rect.intersect(&Rect::new(0, 0, u16::MAX, u16::MAX));
        let (full, region) = match self.request {
            Some((r, f)) => (f || !incremental, r.union(&rect)),
            None => (!incremental, rect),
        };
        self.request = Some((region, full));
    }

    pub fn has_request(&self) -> bool {
        self.request.is_some()
    }

    /// Build one FramebufferUpdate bringing the viewer to `latest`, if a
    /// request is outstanding and there is something to send. Appends the
    /// message(s) to `out` and returns whether an update was written.
    pub fn build_update(
        &mut self,
        latest: &Published,
        out: &mut Vec<u8>,
    ) -> Result<bool, UpdateError> {
        let Some((req, full)) = self.request else {
            return Ok(false);
        };
        let frame = &*latest.frame;
        if self.colour_map_due {
            write_colour_map(0, &PixelFormat::fixed_colour_map(), out);
            self.colour_map_due = false;
        }

        let size = (frame.width, frame.height);
        let resized = size != self.viewer_size;
        if resized && !self.encodings.extended_desktop_size && !self.encodings.desktop_size {
            return Err(UpdateError::ResizeUnsupported);
        }

        let mut pseudo: Vec<u8> = Vec::new();
        let mut npseudo = 0usize;
        if resized {
            self.write_size_rect(size, 0, 0, &mut pseudo);
            npseudo += 1;
            self.viewer_size = size;
            self.shadow = None;
        } else if let Some(reply) = self.resize_reply_due.take() {
            if self.encodings.extended_desktop_size {
                self.write_size_rect(size, 1, reply.status, &mut pseudo);
                npseudo += 1;
            }
        }
        if let Some(name) = self.name_due.take() {
            if self.encodings.desktop_name {
                write_rect_header(Rect::default(), enc::DESKTOP_NAME, &mut pseudo);
                pseudo.extend_from_slice(&(name.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(name.as_bytes());
                npseudo += 1;
            }
        }

        let bounds = frame.bounds();
        // After a resize the viewer's request may be for the old size: serve
        // the whole new framebuffer instead.
        let area = if resized {
            bounds
        } else {
            req.intersect(&bounds)
        };

        let mut body: Vec<u8> = Vec::new();
        let mut nrects = 0usize;
        let rects: Vec<Rect> = match &mut self.shadow {
            Some(shadow)
                if !full && shadow.width == frame.width && shadow.height == frame.height =>
            {
                if self.encodings.copy_rect && latest.seq == self.shadow_seq + 1 {
                    for m in &latest.moves {
                        if apply_move(shadow, frame, m, area) {
                            write_copy_rect(m.dst, m.src_x, m.src_y, &mut body);
                            nrects += 1;
                        }
                    }
                }
                diff::changed_rects(shadow, frame, area)
            }
            _ => {
                if area.is_empty() {
                    Vec::new()
                } else {
                    vec![area]
                }
            }
        };
        let rects = if rects.len() > MAX_RECTS_PER_UPDATE {
            vec![rects.iter().fold(Rect::default(), |a, r| a.union(r))]
        } else {
            rects
        };

        if rects.is_empty() && nrects == 0 && npseudo == 0 && !full {
            // Nothing new for an incremental request: keep it pending.
            return Ok(false);
        }

        let params = EncodeParams {
            pf: self.pf,
            compress_level: self.encodings.compress_level,
            quality_level: self.encodings.quality_level,
        };
        let encoder = self.encoders.get(self.encodings.preferred);
        for r in &rects {
            nrects += encoder.encode(frame, *r, &params, &mut body);
        }

        let shadow = match &mut self.shadow {
            Some(s) if s.width == frame.width && s.height == frame.height => s,
            _ => {
                // Start a fresh shadow: the viewer now holds exactly what we sent.
                self.shadow = Some(Frame::new(frame.width, frame.height));
                self.shadow.as_mut().unwrap()
            }
        };
        for r in &rects {
            copy_into(shadow, frame, *r);
        }
        self.shadow_seq = latest.seq;

        let total = nrects + npseudo;
        if total > u16::MAX as usize - 1 {
            // Cannot happen with MAX_RECTS_PER_UPDATE and sane encoders; a
            // LastRect-terminated update keeps it correct regardless.
            write_update_header(0xFFFF, out);
            out.extend_from_slice(&pseudo);
            out.extend_from_slice(&body);
            write_rect_header(Rect::default(), enc::LAST_RECT, out);
        } else {
            write_update_header(total as u16, out);
            out.extend_from_slice(&pseudo);
            out.extend_from_slice(&body);
        }
        self.request = None;
        self.updates_sent += 1;
        Ok(true)
    }

    fn write_size_rect(&self, (w, h): (u16, u16), reason: u16, status: u16, out: &mut Vec<u8>) {
        if self.encodings.extended_desktop_size {
            // x = reason, y = status; one screen covering the framebuffer.
            write_rect_header(
                Rect::new(reason, status, w, h),
                enc::EXTENDED_DESKTOP_SIZE,
                out,
            );
            out.extend_from_slice(&[1, 0, 0, 0]);
            out.extend_from_slice(&0u32.to_be_bytes()); // screen id
            out.extend_from_slice(&[0, 0, 0, 0]); // x, y
            out.extend_from_slice(&w.to_be_bytes());
            out.extend_from_slice(&h.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes()); // flags
        } else {
            write_rect_header(Rect::new(0, 0, w, h), enc::DESKTOP_SIZE, out);
        }
    }
}

/// Apply a move hint to the shadow if it is true (the viewer's pixels at
/// the source equal the new frame's at the destination) and lies in `area`.
fn apply_move(shadow: &mut Frame, frame: &Frame, m: &MoveHint, area: Rect) -> bool {
    let src = Rect::new(m.src_x, m.src_y, m.dst.w, m.dst.h);
    let b = frame.bounds();
    if m.dst.is_empty() || !b.contains(&m.dst) || !b.contains(&src) || !area.contains(&m.dst) {
        return false;
    }
    let matches = (0..m.dst.h)
        .all(|y| shadow.row(src.y + y, src.x, src.w) == frame.row(m.dst.y + y, m.dst.x, m.dst.w));
    if !matches {
        return false;
    }
    let mut tmp = Vec::new();
    shadow.copy_rect(src, &mut tmp);
    let w = shadow.width as usize;
    for (i, row) in tmp.chunks_exact(m.dst.w as usize).enumerate() {
        let start = (m.dst.y as usize + i) * w + m.dst.x as usize;
        shadow.pixels[start..start + row.len()].copy_from_slice(row);
    }
    true
}

fn copy_into(shadow: &mut Frame, frame: &Frame, r: Rect) {
    let w = frame.width as usize;
    for y in r.y..r.y + r.h {
        let start = y as usize * w + r.x as usize;
        let end = start + r.w as usize;
        shadow.pixels[start..end].copy_from_slice(&frame.pixels[start..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::test_pattern::render;

    fn publish(seq: u64, f: Frame) -> Published {
        Published {
            seq,
            frame: Arc::new(f),
            moves: Vec::new(),
        }
    }

    #[test]
    fn incremental_waits_for_change() {
        let mut v = ViewerState::new(320, 240);
        let p = publish(1, render(320, 240, 0));
        let mut out = Vec::new();
        v.request(false, Rect::new(0, 0, 320, 240));
        assert!(v.build_update(&p, &mut out).unwrap());
        out.clear();
        v.request(true, Rect::new(0, 0, 320, 240));
        assert!(!v.build_update(&p, &mut out).unwrap());
        assert!(out.is_empty());
        let p2 = publish(2, render(320, 240, 1));
        assert!(v.build_update(&p2, &mut out).unwrap());
        assert!(!v.has_request());
    }

    /// Regression: two requests whose bounding box reaches past 65535 were
    /// merged with a wrapped width, so most of the requested area was
    /// never sent.
    #[test]
    fn merged_requests_reaching_past_65535_lose_no_area() {
        let mut v = ViewerState::new(320, 240);
        v.request(false, Rect::new(100, 0, 65535, 240));
        v.request(false, Rect::new(0, 0, 1, 1));
        let p = publish(1, render(320, 240, 0));
        let mut out = Vec::new();
        assert!(v.build_update(&p, &mut out).unwrap());
        // One Raw rectangle of the whole screen: header 4, rect header 12.
        assert_eq!(&out[4..12], &[0, 0, 0, 0, 1, 64, 0, 240]);
        assert_eq!(out.len(), 4 + 12 + 320 * 240 * 4);
    }

    #[test]
    fn resize_without_support_is_an_error() {
        let mut v = ViewerState::new(100, 80);
        v.request(true, Rect::new(0, 0, 100, 80));
        let p = publish(1, render(120, 80, 0));
        assert_eq!(
            v.build_update(&p, &mut Vec::new()),
            Err(UpdateError::ResizeUnsupported)
        );
    }
}
