//! FramebufferUpdates through the core.
//!
//! An update is written into an [`UpdateBuf`]: the driver's buffer plus
//! the place of every FramebufferUpdate header and rectangle header in
//! it. Headers can be written only by its methods
//! ([`UpdateBuf::update_header`], [`UpdateBuf::rect_header`]); the pixel
//! data the encoders append after a header goes straight into the buffer
//! (no copy, no parsing). Its bytes can be taken only by
//! [`Established::pass`](super::Established::pass), which walks the
//! headers in order against what the core knows and either returns the
//! bytes to send or refuses them ([`UpdateRefused`]):
//!
//! - a FramebufferUpdate header only between updates (never inside one);
//!   its count is the number of rectangles that follow, or 0xFFFF up to
//!   a LastRect rectangle for a viewer that listed LastRect;
//! - a rectangle header only inside an update, never more than counted;
//! - its encoding Raw, or one the viewer listed in a SetEncodings (any
//!   SetEncodings so far: an update already started keeps its encodings);
//! - a pixel rectangle (and a CopyRect's source) inside the framebuffer
//!   as the viewer knows it: the size of ServerInit, changed only by a
//!   DesktopSize or ExtendedDesktopSize rectangle, which must be the last
//!   of its update (rfbproto, "Server Semantics" of both);
//! - no other server message inside an update: while one is open,
//!   [`super::Output`] writes messages to the core's own output, which the
//!   driver sends once the update is complete.
//!
//! An update may span many buffers (it is sent as it is encoded): the
//! state carries over from one `pass` to the next.
//!
//! The legal path (it compiles and runs):
//!
//! ```
//! use ticketvnc::framebuffer::Rect;
//! use ticketvnc::rfb::{Event, Handshake, PixelFormat, SecurityType, UpdateBuf, UpdateRefused};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! c.take_output();
//! c.receive(b"RFB 003.008\n\x01\x01").unwrap();
//! let mut init = None;
//! while let Some(ev) = c.poll_event().unwrap() {
//!     match ev {
//!         Event::Authenticated(due) => c.approve(due).unwrap(),
//!         Event::ClientInit { due, .. } => init = Some(due),
//!         _ => {}
//!     }
//! }
//! let mut c = c
//!     .server_init(init.unwrap(), 64, 48, &PixelFormat::NATIVE, "desk")
//!     .unwrap();
//! let mut b = UpdateBuf::new();
//! b.update_header(1);
//! b.rect_header(Rect::new(0, 0, 64, 48), 0); // Raw: every viewer takes it
//! b.extend_from_slice(&[0; 64 * 48 * 4]); // the pixels, written in place
//! let bytes = c.pass(b).unwrap();
//! assert_eq!(bytes.len(), 4 + 12 + 64 * 48 * 4);
//! // This viewer never listed ZRLE (16):
//! let mut b = UpdateBuf::new();
//! b.update_header(1);
//! b.rect_header(Rect::new(0, 0, 8, 8), 16);
//! assert_eq!(c.pass(b), Err(UpdateRefused::NotListed(16)));
//! ```
//!
//! ```compile_fail,E0603
//! // Rectangle headers are written by the core's UpdateBuf only.
//! use ticketvnc::framebuffer::Rect;
//! let mut v = Vec::new();
//! ticketvnc::rfb::messages::rect_header::encode(Rect::new(0, 0, 1, 1), 0, &mut v);
//! ```
//!
//! ```compile_fail,E0624
//! // An update's bytes leave only through Established::pass.
//! use ticketvnc::rfb::UpdateBuf;
//! let mut b = UpdateBuf::new();
//! b.update_header(0);
//! let bytes: Vec<u8> = b.into_bytes();
//! ```

use std::ops::{Deref, DerefMut};

use crate::framebuffer::Rect;

use super::messages::{enc, rect_header, update_header};

/// Where a header was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Update(usize),
    Rect(usize),
}

/// Bytes of FramebufferUpdates being written, with the place of every
/// header in them. Dereferences to the byte vector so encoders append
/// their data as to any `Vec<u8>`; `truncate` and `clear` are its own
/// (they forget the headers cut off).
#[derive(Debug, Default)]
pub struct UpdateBuf {
    bytes: Vec<u8>,
    marks: Vec<Mark>,
}

impl UpdateBuf {
    pub fn new() -> UpdateBuf {
        UpdateBuf::default()
    }

    /// A buffer that goes on from `bytes` (e.g. a reused buffer, or one a
    /// fence was written into through the core).
    pub fn from_vec(bytes: Vec<u8>) -> UpdateBuf {
        UpdateBuf {
            bytes,
            marks: Vec::new(),
        }
    }

    /// The header of a FramebufferUpdate with `nrects` rectangles (0xFFFF:
    /// up to a LastRect rectangle).
    pub fn update_header(&mut self, nrects: u16) {
        self.marks.push(Mark::Update(self.bytes.len()));
        update_header::encode(nrects, &mut self.bytes);
    }

    /// A rectangle header; the encoding's data follows it.
    pub fn rect_header(&mut self, r: Rect, encoding: i32) {
        self.marks.push(Mark::Rect(self.bytes.len()));
        rect_header::encode(r, encoding, &mut self.bytes);
    }

    /// Move everything `other` holds to the end of this buffer.
    pub fn append(&mut self, other: &mut UpdateBuf) {
        let base = self.bytes.len();
        self.marks.extend(other.marks.drain(..).map(|m| match m {
            Mark::Update(p) => Mark::Update(p + base),
            Mark::Rect(p) => Mark::Rect(p + base),
        }));
        self.bytes.append(&mut other.bytes);
    }

    /// Copy everything `other` holds to the end of this buffer (an
    /// encoding shared by several viewers is sent from one copy).
    pub fn extend_from(&mut self, other: &UpdateBuf) {
        let base = self.bytes.len();
        self.marks.extend(other.marks.iter().map(|m| match *m {
            Mark::Update(p) => Mark::Update(p + base),
            Mark::Rect(p) => Mark::Rect(p + base),
        }));
        self.bytes.extend_from_slice(&other.bytes);
    }

    /// Copy `other`'s rectangles to the end of this buffer, each moved by
    /// (`dx`, `dy`): a piece encoded from a small picture (the drawn
    /// pointer's patch at 0,0) goes where the picture lies in the frame.
    /// Rectangles that would leave the 16-bit plane are not moved (the
    /// core refuses them as outside the framebuffer).
    pub fn extend_moved(&mut self, other: &UpdateBuf, dx: u16, dy: u16) {
        let base = self.bytes.len();
        self.extend_from(other);
        for m in &other.marks {
            if let Mark::Rect(p) = *m {
                let at = base + p;
                for (i, d) in [(at, dx), (at + 2, dy)] {
                    if let Some(b) = self.bytes.get_mut(i..i + 2) {
                        let v = u16::from_be_bytes([b[0], b[1]]).checked_add(d);
                        if let Some(v) = v {
                            b.copy_from_slice(&v.to_be_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Cut the buffer to `len` bytes, with the headers from there on.
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
        self.marks.retain(|m| match *m {
            Mark::Update(p) | Mark::Rect(p) => p < len,
        });
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The bytes written so far (to read; sending them is the core's).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Rectangle headers written so far (the session checks that a
    /// pointer patch was encoded as one rectangle).
    pub fn rect_headers(&self) -> usize {
        self.marks
            .iter()
            .filter(|m| matches!(m, Mark::Rect(_)))
            .count()
    }

    /// The bytes, once the core has passed them.
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl Deref for UpdateBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl DerefMut for UpdateBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

/// A FramebufferUpdate the core would not let out: a bug of the driver
/// (or an encoder), never the viewer's doing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefused {
    #[error("a FramebufferUpdate header inside an update")]
    NestedUpdate,
    #[error("a rectangle header outside an update")]
    RectOutsideUpdate,
    #[error("a LastRect rectangle in an update whose header counted its rectangles")]
    UnexpectedLastRect,
    #[error("encoding {0} was never listed by the viewer")]
    NotListed(i32),
    #[error("rectangle {rect:?} (encoding {encoding}) outside the viewer's {width}x{height} framebuffer")]
    OutsideFramebuffer {
        rect: Rect,
        encoding: i32,
        width: u16,
        height: u16,
    },
    #[error("a rectangle after a size change in the same update")]
    AfterSizeChange,
    #[error("a header cut off (the buffer ends inside it)")]
    CutHeader,
}

/// Encodings the server may put in a rectangle header, for the record of
/// what the viewer listed (a fixed set, so a viewer cannot grow it).
const SENDABLE: &[i32] = &[
    enc::COPY_RECT,
    enc::RRE,
    enc::HEXTILE,
    enc::ZLIB,
    enc::TIGHT,
    enc::ZRLE,
    enc::DESKTOP_SIZE,
    enc::LAST_RECT,
    enc::CURSOR,
    enc::X_CURSOR,
    enc::POINTER_POS,
    enc::CURSOR_WITH_ALPHA,
    enc::VMWARE_CURSOR_POSITION,
    enc::DESKTOP_NAME,
    enc::EXTENDED_DESKTOP_SIZE,
    enc::QEMU_EXTENDED_KEY_EVENT,
    enc::EXTENDED_MOUSE_BUTTONS,
    enc::LED_STATE,
    enc::VMWARE_LED_STATE,
];

/// Encodings that carry pixels of the framebuffer at the rectangle.
const PIXELS: &[i32] = &[
    enc::RAW,
    enc::COPY_RECT,
    enc::RRE,
    enc::HEXTILE,
    enc::ZLIB,
    enc::TIGHT,
    enc::ZRLE,
];

/// The core's record of updates: what the viewer listed, the framebuffer
/// as the viewer knows it, the update open.
#[derive(Debug)]
pub(super) struct UpdateState {
    /// Bit k: `SENDABLE[k]` was listed.
    listed: u32,
    width: u16,
    height: u16,
    open: Option<Open>,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    /// Rectangles still to come; `None`: up to a LastRect.
    left: Option<u16>,
    /// A size rectangle was written: it must have been the last.
    resized: bool,
}

impl UpdateState {
    pub(super) fn new(width: u16, height: u16) -> UpdateState {
        UpdateState {
            listed: 0,
            width,
            height,
            open: None,
        }
    }

    pub(super) fn add_listed(&mut self, encodings: &[i32]) {
        for e in encodings {
            if let Some(k) = SENDABLE.iter().position(|s| s == e) {
                self.listed |= 1 << k;
            }
        }
    }

    fn is_listed(&self, encoding: i32) -> bool {
        encoding == enc::RAW
            || SENDABLE
                .iter()
                .position(|&s| s == encoding)
                .is_some_and(|k| self.listed & (1 << k) != 0)
    }

    /// Inside an update: no other server message may be written.
    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Check every header of `buf` in order; the state moves on only with
    /// headers that pass (a refused buffer must not be sent).
    pub(super) fn check(&mut self, buf: &UpdateBuf) -> Result<(), UpdateRefused> {
        let mut next = self.snapshot();
        for &m in &buf.marks {
            next.step(m, &buf.bytes)?;
        }
        *self = next;
        Ok(())
    }

    fn snapshot(&self) -> UpdateState {
        UpdateState {
            listed: self.listed,
            width: self.width,
            height: self.height,
            open: self.open,
        }
    }

    fn step(&mut self, m: Mark, bytes: &[u8]) -> Result<(), UpdateRefused> {
        match m {
            Mark::Update(p) => {
                let h = bytes.get(p..p + 4).ok_or(UpdateRefused::CutHeader)?;
                if self.open.is_some() {
                    return Err(UpdateRefused::NestedUpdate);
                }
                let n = u16::from_be_bytes([h[2], h[3]]);
                let left = if n == 0xFFFF && self.is_listed(enc::LAST_RECT) {
                    None
                } else {
                    Some(n)
                };
                if left != Some(0) {
                    self.open = Some(Open {
                        left,
                        resized: false,
                    });
                }
                Ok(())
            }
            Mark::Rect(p) => {
                let h = bytes.get(p..p + 12).ok_or(UpdateRefused::CutHeader)?;
                let (rect, encoding, _) = rect_header::decode(h).ok_or(UpdateRefused::CutHeader)?;
                let mut open = self.open.ok_or(UpdateRefused::RectOutsideUpdate)?;
                if encoding == enc::LAST_RECT {
                    if open.left.is_some() {
                        return Err(UpdateRefused::UnexpectedLastRect);
                    }
                    self.open = None;
                    return Ok(());
                }
                if !self.is_listed(encoding) {
                    return Err(UpdateRefused::NotListed(encoding));
                }
                if open.resized {
                    return Err(UpdateRefused::AfterSizeChange);
                }
                if PIXELS.contains(&encoding) {
                    self.inside(rect, encoding)?;
                    if encoding == enc::COPY_RECT {
                        let s = bytes.get(p + 12..p + 16).ok_or(UpdateRefused::CutHeader)?;
                        let from = Rect::new(
                            u16::from_be_bytes([s[0], s[1]]),
                            u16::from_be_bytes([s[2], s[3]]),
                            rect.w,
                            rect.h,
                        );
                        self.inside(from, encoding)?;
                    }
                }
                if encoding == enc::DESKTOP_SIZE || encoding == enc::EXTENDED_DESKTOP_SIZE {
                    self.width = rect.w;
                    self.height = rect.h;
                    open.resized = true;
                }
                open.left = open.left.map(|n| n - 1);
                self.open = (open.left != Some(0)).then_some(open);
                Ok(())
            }
        }
    }

    fn inside(&self, r: Rect, encoding: i32) -> Result<(), UpdateRefused> {
        if r.right() > self.width as u32 || r.bottom() > self.height as u32 {
            return Err(UpdateRefused::OutsideFramebuffer {
                rect: r,
                encoding,
                width: self.width,
                height: self.height,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(listed: &[i32]) -> UpdateState {
        let mut s = UpdateState::new(100, 50);
        s.add_listed(listed);
        s
    }

    #[test]
    fn a_counted_update_passes_and_closes() {
        let mut s = state(&[enc::ZRLE]);
        let mut b = UpdateBuf::new();
        b.update_header(2);
        b.rect_header(Rect::new(0, 0, 100, 10), enc::ZRLE);
        b.extend_from_slice(&[0; 40]); // data: not the core's business
        b.rect_header(Rect::new(0, 10, 100, 40), enc::RAW);
        assert_eq!(s.check(&b), Ok(()));
        assert!(!s.is_open());
    }

    #[test]
    fn an_update_spans_buffers() {
        let mut s = state(&[enc::ZRLE]);
        let mut a = UpdateBuf::new();
        a.update_header(2);
        a.rect_header(Rect::new(0, 0, 1, 1), enc::ZRLE);
        s.check(&a).unwrap();
        assert!(s.is_open());
        let mut b = UpdateBuf::new();
        b.rect_header(Rect::new(1, 1, 1, 1), enc::ZRLE);
        s.check(&b).unwrap();
        assert!(!s.is_open());
        // One more rectangle than counted.
        let mut c = UpdateBuf::new();
        c.rect_header(Rect::new(1, 1, 1, 1), enc::ZRLE);
        assert_eq!(s.check(&c), Err(UpdateRefused::RectOutsideUpdate));
    }

    #[test]
    fn unlisted_encodings_and_pseudo_encodings_are_refused() {
        let mut s = state(&[enc::HEXTILE]);
        for e in [
            enc::ZRLE,
            enc::DESKTOP_SIZE,
            enc::CURSOR,
            enc::LAST_RECT - 1000,
        ] {
            let mut b = UpdateBuf::new();
            b.update_header(1);
            b.rect_header(Rect::new(0, 0, 1, 1), e);
            assert_eq!(s.check(&b), Err(UpdateRefused::NotListed(e)));
            assert!(!s.is_open(), "a refused buffer leaves the state alone");
        }
    }

    #[test]
    fn pixels_stay_inside_the_framebuffer_the_viewer_knows() {
        let mut s = state(&[enc::DESKTOP_SIZE, enc::COPY_RECT]);
        let mut b = UpdateBuf::new();
        b.update_header(1);
        b.rect_header(Rect::new(90, 0, 11, 1), enc::RAW);
        assert!(matches!(
            s.check(&b),
            Err(UpdateRefused::OutsideFramebuffer { width: 100, .. })
        ));
        // A CopyRect from outside.
        let mut b = UpdateBuf::new();
        b.update_header(1);
        b.rect_header(Rect::new(0, 0, 10, 10), enc::COPY_RECT);
        b.extend_from_slice(&[0, 95, 0, 0]);
        assert!(s.check(&b).is_err());
        // The size grows with a DesktopSize rectangle, which comes last.
        let mut b = UpdateBuf::new();
        b.update_header(2);
        b.rect_header(Rect::new(0, 0, 200, 50), enc::DESKTOP_SIZE);
        b.rect_header(Rect::new(150, 0, 10, 1), enc::RAW);
        assert_eq!(s.check(&b), Err(UpdateRefused::AfterSizeChange));
        let mut b = UpdateBuf::new();
        b.update_header(1);
        b.rect_header(Rect::new(0, 0, 200, 50), enc::DESKTOP_SIZE);
        b.update_header(1);
        b.rect_header(Rect::new(150, 0, 10, 1), enc::RAW);
        assert_eq!(s.check(&b), Ok(()));
    }

    #[test]
    fn last_rect_only_when_listed_and_announced() {
        let mut s = state(&[]);
        let mut b = UpdateBuf::new();
        b.update_header(0xFFFF); // a count, without LastRect
        b.rect_header(Rect::default(), enc::LAST_RECT);
        assert_eq!(s.check(&b), Err(UpdateRefused::UnexpectedLastRect));
        let mut s = state(&[enc::LAST_RECT]);
        s.check(&b).unwrap();
        assert!(!s.is_open());
    }

    #[test]
    fn nested_and_stray_headers_are_refused() {
        let mut s = state(&[]);
        let mut b = UpdateBuf::new();
        b.update_header(2);
        b.rect_header(Rect::new(0, 0, 1, 1), enc::RAW);
        b.update_header(1);
        assert_eq!(s.check(&b), Err(UpdateRefused::NestedUpdate));
        let mut b = UpdateBuf::new();
        b.rect_header(Rect::new(0, 0, 1, 1), enc::RAW);
        assert_eq!(s.check(&b), Err(UpdateRefused::RectOutsideUpdate));
        // An empty update closes at once.
        let mut b = UpdateBuf::new();
        b.update_header(0);
        s.check(&b).unwrap();
        assert!(!s.is_open());
    }

    #[test]
    fn truncate_and_append_keep_the_marks_true() {
        let mut s = state(&[]);
        let mut a = UpdateBuf::new();
        a.extend_from_slice(&[9, 9]); // e.g. a fence before the update
        a.update_header(1);
        let mut b = UpdateBuf::new();
        b.rect_header(Rect::new(0, 0, 1, 1), enc::RAW);
        b.extend_from_slice(&[1, 2, 3, 4]);
        let keep = b.len();
        b.rect_header(Rect::new(0, 0, 1, 1), enc::RAW);
        b.truncate(keep);
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.rect_headers(), 1);
        assert_eq!(s.check(&a), Ok(()));
        assert!(!s.is_open());
    }
}
