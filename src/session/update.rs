//! What one viewer has and wants, and how to bring it up to date. No I/O:
//! given the newest published frame, [`ViewerState::start_update`] decides
//! one FramebufferUpdate (or nothing yet) and [`ViewerState::continue_update`]
//! writes it, a piece at a time, into [`UpdateBuf`]s that the protocol
//! core checks before they are sent (`Established::pass`).

use super::pointer::{self, PointerView};
use crate::capture::{CursorShape, MoveHint};
use crate::encoding::cursor::{self, ShapeKind};
use crate::encoding::shared::{Membership, RunStreams, ShareKey, SharedEncodings};
use crate::encoding::{
    write_copy_rect, ClientEncodings, ConnectionEncoders, DetachedStreams, EncodeParams,
};
use crate::framebuffer::history::{self, DamageEntry};
use crate::framebuffer::{region, Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::{PixelFormat, UpdateBuf};
use std::sync::Arc;

/// A frame as published by the capture loop.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub frame: Arc<Frame>,
    /// Moves from frame `seq - 1` to this one.
    pub moves: Vec<MoveHint>,
    /// The current pointer image and a serial that changes with it.
    pub cursor: Option<(u64, Arc<CursorShape>)>,
    /// What changed in recent frames, oldest first, computed once by the
    /// capture loop for all viewers (see [`history`]).
    pub damage: Arc<Vec<DamageEntry>>,
    /// Monitor layout inside the frame; empty: one screen covering it.
    pub screens: Arc<Vec<Rect>>,
    /// Where the pointer's hotspot is (frame coordinates), when known.
    pub pointer: Option<(u16, u16)>,
    /// The customer's lock keys (rfbproto LED State bits), when known.
    pub leds: Option<u8>,
}

impl Published {
    /// Everything that changed after frame `since`, if the log still covers it.
    pub fn damage_since(&self, since: u64) -> Option<Vec<Rect>> {
        history::damage_since(&self.damage, self.seq, since)
    }
}

/// More rectangles than this in one update are merged into their bounding box.
const MAX_RECTS_PER_UPDATE: usize = 2048;
/// Rectangles a viewer's damage region holds before it is merged onto the
/// tile grid (which leaves at most one per run of tiles per tile row).
const DIRTY_MAX: usize = 1024;
/// Raw rectangles are cut to at most this many pixels.
const RAW_MAX_PIXELS: usize = 65536;
/// Rectangles of other encodings are cut into bands of at most this many
/// pixels (see `encode_plain`).
const BAND_MAX_PIXELS: usize = 131072;
/// Most rectangles a FramebufferUpdate header can count (0xFFFF means LastRect).
const MAX_COUNTED_RECTS: usize = u16::MAX as usize - 1;

/// Encoded rectangles and how many.
#[derive(Default)]
struct Rects {
    bytes: UpdateBuf,
    count: usize,
}

/// The pseudo-rectangles of an update; a size rectangle is kept apart (it
/// goes last, in an update of its own) but counted in `rects.count`.
#[derive(Default)]
struct Pseudo {
    rects: Rects,
    size_rect: UpdateBuf,
}

/// `latest` cut or padded (black) to `size`, for a viewer that keeps its
/// size: the same damage log (rectangles past the size are cut off when
/// used), the moves that fit, one screen.
fn fit(latest: &Published, size: (u16, u16)) -> Published {
    Published {
        seq: latest.seq,
        frame: Arc::new(fit_frame(&latest.frame, size)),
        moves: latest.moves.clone(),
        cursor: latest.cursor.clone(),
        damage: latest.damage.clone(),
        screens: Arc::new(Vec::new()),
        pointer: latest.pointer,
        leds: latest.leds,
    }
}

/// `src` cut or padded (black) to `size`.
fn fit_frame(src: &Frame, size: (u16, u16)) -> Frame {
    let mut f = Frame::new(size.0, size.1);
    let w = size.0.min(src.width);
    for y in 0..size.1.min(src.height) {
        f.row_mut(y)[..w as usize].copy_from_slice(src.row(y, 0, w));
    }
    f
}

/// The rows of move `m` (as `(y, h)` runs of its destination) that may be
/// copied: none whose source row meets a rectangle of `src_blockers`,
/// whose destination row meets one of `dst_blockers` (within the move's
/// columns), or that lies outside the rows `rows` (start, end). In the
/// order a viewer can copy them one after another (moving down: bottom
/// first).
fn clean_rows(
    m: &MoveHint,
    src_blockers: &[&[Rect]],
    dst_blockers: &[Rect],
    rows: (u16, u32),
) -> Vec<(u16, u16)> {
    let (x0, x1) = (u32::from(m.dst.x), m.dst.right());
    let (top, bottom) = (i64::from(m.dst.y), i64::from(m.dst.bottom()));
    let shift = i64::from(m.dst.y) - i64::from(m.src_y);
    let meets = |r: &&Rect| u32::from(r.x) < x1 && r.right() > x0;
    // Blocked destination rows, as half-open intervals.
    let mut blocked: Vec<(i64, i64)> = vec![(top, i64::from(rows.0)), (i64::from(rows.1), bottom)];
    for r in src_blockers.iter().flat_map(|b| b.iter()).filter(meets) {
        blocked.push((i64::from(r.y) + shift, i64::from(r.bottom()) + shift));
    }
    for r in dst_blockers.iter().filter(meets) {
        blocked.push((i64::from(r.y), i64::from(r.bottom())));
    }
    blocked.sort_unstable();
    let mut free = Vec::new();
    let mut y = top;
    for (b0, b1) in blocked {
        if b1 <= y || b0 >= b1 {
            continue;
        }
        if b0 > y {
            free.push((y, b0.min(bottom)));
        }
        y = b1;
        if y >= bottom {
            break;
        }
    }
    if y < bottom {
        free.push((y, bottom));
    }
    let mut out: Vec<(u16, u16)> = free
        .into_iter()
        .filter(|(a, b)| b > a)
        .map(|(a, b)| (a as u16, (b - a) as u16))
        .collect();
    if shift > 0 {
        out.reverse();
    }
    out
}

/// Write the head of the FramebufferUpdate(s): everything before the
/// encoded rectangles. A DesktopSize/ExtendedDesktopSize rectangle goes
/// last in an update of its own, without framebuffer data (rfbproto
/// "Server Semantics"; vnc-rs rejects pixels after it, as early clients
/// did); the pixels follow in a second update, as TigerVNC's server does.
/// `body` holds the CopyRects (written here) and counts the rectangles
/// still to be encoded after them. Returns whether the update must end
/// with a LastRect rectangle (its header could not count them).
fn write_head(mut pseudo: Pseudo, mut body: Rects, out: &mut UpdateBuf) -> bool {
    let size_sent = !pseudo.size_rect.is_empty();
    if size_sent {
        out.update_header(pseudo.rects.count as u16);
        out.append(&mut pseudo.rects.bytes);
        out.append(&mut pseudo.size_rect);
        pseudo.rects = Rects::default();
    }
    let total = body.count + pseudo.rects.count;
    if total == 0 && size_sent {
        // Only the size update was due.
        false
    } else if total > MAX_COUNTED_RECTS {
        // Only for viewers that announced LastRect (see `plan`).
        out.update_header(0xFFFF);
        out.append(&mut pseudo.rects.bytes);
        out.append(&mut body.bytes);
        true
    } else {
        out.update_header(total as u16);
        out.append(&mut pseudo.rects.bytes);
        out.append(&mut body.bytes);
        false
    }
}

/// An encoded piece of output is handed on once it holds this many bytes
/// (small updates stay one write; a big one goes out band by band).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Updates of at most this many pixels are encoded on the session's own
/// task (a few hundred microseconds at most); bigger ones on the blocking
/// pool, off the async runtime's workers.
const INLINE_PIXELS: usize = RAW_MAX_PIXELS;
// Encoder calls that may wait for shared scratch never run inline.
const _: () = assert!(INLINE_PIXELS <= crate::encoding::parallel::WAIT_ABOVE_PIXELS);

/// One rectangle still to be encoded: a band of a damaged rectangle, or
/// the part under the drawn pointer (`pointer`), drawn on and encoded apart.
#[derive(Clone, Copy, Debug)]
struct Job {
    encoding: i32,
    rect: Rect,
    pointer: bool,
}

/// An update's place in the encodings shared with other viewers: the run
/// of its bands (see [`crate::encoding::shared`]).
struct Share {
    cache: Arc<SharedEncodings>,
    seq: u64,
    key: ShareKey,
    /// Hash of every band of the update: viewers with the same bands
    /// share the run.
    bands: u64,
    streams: RunStreams,
    /// The place in the run of the next band this viewer may take.
    next: u64,
}

/// A FramebufferUpdate being sent: decided, counted and headed when it
/// starts ([`ViewerState::start_update`]), then encoded a band at a time
/// into small buffers ([`ViewerState::continue_update`]) that go out
/// before the next band is encoded, so no update is ever held whole in
/// memory. It owns what it needs (the frame, the pixel format and levels,
/// the pointer image): messages handled meanwhile change the viewer's
/// state, never this update.
pub struct UpdateStream {
    /// The frame every band is encoded from: an update shows one frame.
    frame: Arc<Frame>,
    params: EncodeParams,
    cursor: Option<(Arc<CursorShape>, pointer::Drawn)>,
    /// SetColourMapEntries must go before it (the session sends it
    /// through the core when the update starts).
    colour_map: bool,
    head: UpdateBuf,
    jobs: std::collections::VecDeque<Job>,
    last_rect: bool,
    /// The viewer's encoders, lent for the update (given back by
    /// [`ViewerState::finish_update`]).
    encoders: ConnectionEncoders,
    /// Pixels the update encodes.
    pixels: usize,
    /// Rectangles the header counted for the encoded part, and written.
    planned: usize,
    written: usize,
    started: bool,
    /// Bands go through the encodings shared with viewers of the same
    /// settings; `None` once one is missed.
    share: Option<Share>,
    /// Bands sent from another viewer's encoding.
    reused: u64,
}

impl UpdateStream {
    /// No byte of it has been produced yet.
    pub fn is_fresh(&self) -> bool {
        !self.started
    }

    /// Big enough that its encoding is kept off the async runtime's
    /// worker threads (more pixels than one Raw band).
    pub fn is_large(&self) -> bool {
        self.pixels > INLINE_PIXELS
    }

    /// Encode the next bands into `out` (appended), until it holds about
    /// [`CHUNK_BYTES`] or the update is complete; returns whether more is
    /// to come. Every band comes from the frame the update started with
    /// (an update never mixes frames), held until the update is out. The
    /// stream owns all it needs (the viewer's encoders included), so it can
    /// run on another thread while the session goes on.
    pub fn encode_next(&mut self, out: &mut UpdateBuf) -> bool {
        let frame = self.frame.clone();
        if !self.started {
            self.started = true;
            out.append(&mut self.head);
        }
        let start = out.len();
        while out.len() - start < CHUNK_BYTES {
            let Some(job) = self.jobs.pop_front() else {
                break;
            };
            self.written += self.encode_job(job, &frame, out);
        }
        if !self.jobs.is_empty() {
            return true;
        }
        if self.written != self.planned {
            // A count that disagrees with what the encoders wrote would
            // desynchronise a viewer without LastRect: a bug, never input.
            tracing::error!(
                planned = self.planned,
                written = self.written,
                "rectangle count of an update was wrong"
            );
            debug_assert_eq!(self.written, self.planned, "rectangle count");
        }
        if std::mem::take(&mut self.last_rect) {
            out.rect_header(Rect::default(), enc::LAST_RECT);
        }
        false
    }

    /// One band of the frame, or the pointer's patch: from the run shared
    /// with viewers of the same settings (encoded here if this viewer is
    /// the first to reach it), else encoded for this viewer alone. A band
    /// of the run missed (the budget was spent, the frame got old) or out
    /// of this viewer's order in the run ends its part in it: later bands
    /// refer back to the ones before.
    fn encode_job(&mut self, job: Job, frame: &Frame, out: &mut UpdateBuf) -> usize {
        let slot = match &self.share {
            Some(sh) => sh.cache.slot(sh.seq, sh.key, sh.bands, job.rect),
            None => None,
        };
        let (Some(mut sh), Some(slot)) = (self.share.take(), slot) else {
            return self.encode_piece(job, frame, None, out);
        };
        let mut produced = false;
        let encoded = slot.get_or_init(|| {
            produced = true;
            let mut buf = UpdateBuf::new();
            let mut run = sh.streams.lock().unwrap_or_else(|e| e.into_inner());
            let (rects, pos) = if run.made == sh.next {
                let n = self.encode_piece(job, frame, Some(&mut run.streams), &mut buf);
                run.made += 1;
                (n, Some(sh.next))
            } else {
                // The run went on past this band (its entry was dropped
                // and is made again): streams of its own.
                let mut alone = DetachedStreams::default();
                (
                    self.encode_piece(job, frame, Some(&mut alone), &mut buf),
                    None,
                )
            };
            Arc::new(crate::encoding::shared::Encoded { buf, rects, pos })
        });
        if encoded.pos.is_some_and(|p| p != sh.next) {
            // Made for another place in the run: not for this stream.
            return self.encode_piece(job, frame, None, out);
        }
        out.extend_from(&encoded.buf);
        self.encoders.get(job.encoding).detached_sent();
        sh.cache.taken(sh.seq, sh.key, sh.bands, job.rect, produced);
        self.reused += u64::from(!produced);
        if encoded.pos.is_some() {
            if self.jobs.is_empty() {
                // The run is complete: its streams go back to the pool.
                let mut run = sh.streams.lock().unwrap_or_else(|e| e.into_inner());
                run.streams.clear();
            } else {
                sh.next += 1;
                self.share = Some(sh);
            }
        }
        encoded.rects
    }

    /// `job` encoded with the viewer's own streams, or with a shared
    /// run's (`streams`).
    fn encode_piece(
        &mut self,
        job: Job,
        frame: &Frame,
        mut streams: Option<&mut DetachedStreams>,
        out: &mut UpdateBuf,
    ) -> usize {
        let params = self.params;
        let encoder = self.encoders.get(job.encoding);
        let mut encode = |f: &Frame, r: Rect, out: &mut UpdateBuf| match streams.as_deref_mut() {
            Some(s) => encoder.encode_detached(f, r, &params, s, out),
            None => encoder.encode(f, r, &params, out),
        };
        let Some((shape, d)) = self.cursor.as_ref().filter(|_| job.pointer) else {
            return encode(frame, job.rect, out);
        };
        // The pixels under the drawn pointer, copied, drawn on and encoded
        // as a rectangle of their own.
        let inner = job.rect;
        let patch = pointer::draw(shape, d.pos, frame, inner);
        let mut piece = UpdateBuf::new();
        let n = encode(&patch, Rect::new(0, 0, inner.w, inner.h), &mut piece);
        // Encoded at 0,0 of the patch: moved to where it goes.
        out.extend_moved(&piece, inner.x, inner.y);
        n
    }

    /// The colour map the viewer needs before this update, once.
    pub fn take_colour_map(&mut self) -> Option<Vec<u32>> {
        std::mem::take(&mut self.colour_map).then(PixelFormat::fixed_colour_map)
    }
}

pub struct ViewerState {
    pub pf: PixelFormat,
    pub encodings: ClientEncodings,
    encoders: ConnectionEncoders,
    /// This viewer among those whose encodings are shared (`None`: it
    /// encodes everything alone).
    sharing: Option<Membership>,
    /// The viewer holds a picture of the current size and pixel format
    /// (false before the first update, after a resize or a new format).
    has_picture: bool,
    /// The frame the viewer's picture shows, outside `dirty`.
    seen_seq: u64,
    /// Where the viewer's picture may differ from frame `seen_seq` with
    /// the cursor drawn as `drawn` says: rectangles still to be sent (at
    /// most `DIRTY_MAX`, then merged onto the tile grid). This, not a copy of the screen, is all a
    /// viewer keeps of its picture.
    dirty: Vec<Rect>,
    /// The pointer drawn into the viewer's picture, as last decided.
    drawn: Option<pointer::Drawn>,
    /// The size of the captured screen at the last update (a viewer that
    /// keeps its size after a resize is sent its whole picture again).
    source_size: (u16, u16),
    /// Inside the call that serves a cut or padded copy of the screen.
    fitting: bool,
    /// Size the viewer believes the desktop has.
    viewer_size: (u16, u16),
    /// Region of an outstanding request, and whether all of it must be sent.
    request: Option<(Rect, bool)>,
    /// The colour map must be (re)sent before the next update.
    colour_map_due: bool,
    /// The desktop name changed and must be sent.
    pub name_due: Option<String>,
    pub updates_sent: u64,
    /// Bands sent from an encoding another viewer made.
    pub bands_reused: u64,
    /// CopyRects sent (moves the capture proved: scrolling, move hints).
    pub copy_rects: u64,
    pub resize_reply_due: Option<ResizeReply>,
    /// The size this viewer's SetDesktopSize set (answered once the
    /// capture shows it).
    pub resize_wanted: Option<(u16, u16)>,
    /// Serial of the cursor image the viewer has (0: none).
    cursor_serial: u64,
    /// The viewer just enabled ExtendedDesktopSize and should learn the layout.
    layout_due: bool,
    /// The monitor layout the viewer was last told.
    screens_sent: Arc<Vec<Rect>>,
    /// The customer's pointer as this viewer sees it (position told,
    /// cursor drawn into its picture).
    pub pointer: PointerView,
    /// Whether the pointer may be drawn into this viewer's picture.
    pub drawn_cursor: bool,
    /// The viewer listed QEMU Extended Key Event (its key messages are
    /// taken), and whether the confirming pseudo-rectangle is still owed.
    pub qemu_keys: bool,
    qemu_keys_ack_due: bool,
    /// A QEMU key event arrived (logged once).
    pub qemu_keys_used: bool,
    /// The viewer listed ExtendedMouseButtons; the confirmation is owed.
    ext_buttons: bool,
    ext_buttons_ack_due: bool,
    /// LED State (-261) or VMware LED State, if the viewer listed either,
    /// and the lock-key state it was last told (`None`: not yet).
    led_encoding: Option<i32>,
    leds_sent: Option<u8>,
}

/// `cursor_serial` of the hidden shape sent while the cursor is rendered.
const HIDDEN_CURSOR: u64 = u64::MAX;

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
            sharing: None,
            has_picture: false,
            seen_seq: 0,
            dirty: Vec::new(),
            drawn: None,
            source_size: (width, height),
            fitting: false,
            viewer_size: (width, height),
            request: None,
            colour_map_due: false,
            name_due: None,
            updates_sent: 0,
            bands_reused: 0,
            copy_rects: 0,
            resize_reply_due: None,
            resize_wanted: None,
            cursor_serial: 0,
            layout_due: false,
            screens_sent: Arc::new(Vec::new()),
            pointer: PointerView::default(),
            drawn_cursor: true,
            qemu_keys: false,
            qemu_keys_ack_due: false,
            qemu_keys_used: false,
            ext_buttons: false,
            ext_buttons_ack_due: false,
            led_encoding: None,
            leds_sent: None,
        }
    }

    /// Share encodings with the other viewers of `cache` that have the
    /// same settings.
    pub fn share_with(&mut self, cache: Arc<SharedEncodings>) {
        self.sharing = Some(Membership::new(cache));
        self.update_share_key();
    }

    /// Count the viewer under its current settings.
    fn update_share_key(&mut self) {
        let key = ShareKey {
            encoding: self.encodings.preferred,
            params: EncodeParams {
                pf: self.pf,
                compress_level: self.encodings.compress_level,
                quality_level: self.encodings.quality_level,
            },
        };
        if let Some(m) = &mut self.sharing {
            m.set(key);
        }
    }

    /// The cursor-shape encoding the viewer gets: with alpha, else the
    /// classic Cursor, else X Cursor (TigerVNC's order).
    fn shape_kind(&self) -> Option<ShapeKind> {
        let e = &self.encodings;
        if e.cursor_alpha {
            Some(ShapeKind::Alpha)
        } else if e.cursor {
            Some(ShapeKind::Rich)
        } else if e.x_cursor {
            Some(ShapeKind::X)
        } else {
            None
        }
    }

    pub fn set_pixel_format(&mut self, pf: PixelFormat) {
        self.pf = pf;
        self.colour_map_due = !pf.true_colour;
        self.cursor_serial = 0;
        // Everything the viewer has is now in the wrong format for it to
        // reuse; send a full picture with the next update.
        self.has_picture = false;
        self.update_share_key();
    }

    pub fn set_encodings(&mut self, list: &[i32]) {
        let old_kind = self.shape_kind();
        let old = std::mem::replace(&mut self.encodings, ClientEncodings::from_list(list));
        self.update_share_key();
        if self.shape_kind() != old_kind {
            self.cursor_serial = 0;
        }
        let pos = |e: &ClientEncodings| e.pointer_pos || e.vmware_cursor_pos;
        if pos(&self.encodings) && !pos(&old) {
            self.pointer.reset_position();
        }
        if self.encodings.extended_desktop_size && !old.extended_desktop_size {
            self.layout_due = true;
        }
        let qemu_keys = list.contains(&enc::QEMU_EXTENDED_KEY_EVENT);
        if qemu_keys && !self.qemu_keys {
            // Confirmed with an empty pseudo-rectangle (rfbproto); the
            // viewer then sends QEMU key events.
            self.qemu_keys_ack_due = true;
        }
        self.qemu_keys = qemu_keys;
        let ext_buttons = list.contains(&enc::EXTENDED_MOUSE_BUTTONS);
        if ext_buttons && !self.ext_buttons {
            self.ext_buttons_ack_due = true;
        }
        self.ext_buttons = ext_buttons;
        // QEMU's one byte when listed, else VMware's U32 (TigerVNC's choice).
        self.led_encoding = [enc::LED_STATE, enc::VMWARE_LED_STATE]
            .into_iter()
            .find(|e| list.contains(e));
        if self.led_encoding.is_none() {
            // Told again from scratch if it lists LED state later.
            self.leds_sent = None;
        }
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

    /// The desktop size the viewer was last told.
    pub fn viewer_size(&self) -> (u16, u16) {
        self.viewer_size
    }

    pub fn has_request(&self) -> bool {
        self.request.is_some()
    }

    /// Forget the outstanding request (continuous updates were turned off
    /// before the request made for them was served).
    pub fn cancel_request(&mut self) {
        self.request = None;
    }

    /// Build one FramebufferUpdate bringing the viewer to `latest`, if a
    /// request is outstanding and there is something to send. Appends the
    /// message(s) to `out`, unchecked, and returns whether an update was
    /// written. (Tests: a session streams it instead with
    /// [`ViewerState::start_update`] and [`ViewerState::continue_update`]
    /// through the core.)
    #[cfg(test)]
    pub fn build_update(&mut self, latest: &Published, out: &mut Vec<u8>) -> bool {
        let Some(mut s) = self.start_update(latest) else {
            return false;
        };
        if let Some(map) = s.take_colour_map() {
            crate::rfb::messages::write_colour_map(0, &map, out);
        }
        let mut buf = UpdateBuf::new();
        while self.continue_update(&mut s, &mut buf) {}
        out.extend_from_slice(buf.bytes());
        true
    }

    /// Start one FramebufferUpdate bringing the viewer to `latest`, if a
    /// request is outstanding and there is something to send: everything
    /// is decided and counted now (what is taken off the damage region, the
    /// pseudo-rectangles, the CopyRects, the bands to encode), the pixels
    /// are encoded by [`ViewerState::continue_update`].
    pub fn start_update(&mut self, latest: &Published) -> Option<UpdateStream> {
        let (req, full) = self.request?;
        let size = (latest.frame.width, latest.frame.height);
        let resized = size != self.viewer_size;
        if size != self.source_size && !self.fitting {
            // The shared damage log says only "the whole new screen"; what
            // lies beyond it in a viewer that keeps its size changes too.
            self.source_size = size;
            self.has_picture = false;
        }
        if self.encodings.extended_desktop_size && *latest.screens != *self.screens_sent {
            self.layout_due = true;
        }
        self.screens_sent = latest.screens.clone();
        if resized && !self.encodings.extended_desktop_size && !self.encodings.desktop_size {
            // A viewer that cannot be told of the new size keeps its own:
            // it sees the new screen's top-left part (black beyond it)
            // instead of being dropped or sent rectangles outside its
            // framebuffer.
            self.fitting = true;
            let sent = self.start_update(&fit(latest, self.viewer_size));
            self.fitting = false;
            return sent;
        }
        // The customer's pointer drawn into this viewer's pixels only.
        let rendering = self.drawn_cursor
            && self
                .pointer
                .needs_render(latest, self.shape_kind().is_some());
        let want = rendering.then(|| pointer::drawn(latest)).flatten();
        let frame = &*latest.frame;
        let pseudo = self.pseudo_rects(latest, resized, rendering);
        let bounds = frame.bounds();
        // After a resize the viewer's request may be for the old size: serve
        // the whole new framebuffer instead.
        let area = if resized {
            bounds
        } else {
            req.intersect(&bounds)
        };
        let mut body = Rects::default();
        let rects = self.damaged_rects(latest, area, full, want, &mut body);
        if rects.is_empty() && body.count == 0 && pseudo.rects.count == 0 && !full {
            // Nothing new for an incremental request: keep it pending.
            return None;
        }
        let cursor = want.and_then(|d| Some((latest.cursor.as_ref()?.1.clone(), d)));
        let params = EncodeParams {
            pf: self.pf,
            compress_level: self.encodings.compress_level,
            quality_level: self.encodings.quality_level,
        };
        let (jobs, planned) = self.plan(
            &rects,
            area,
            pseudo.rects.count,
            &cursor,
            &params,
            &mut body,
        );
        let pixels: usize = jobs.iter().map(|j| j.rect.area()).sum();
        let drawn = cursor.as_ref().map(|(_, d)| *d);
        let share = self.share(latest.seq, &params, &jobs, drawn, pixels);
        let mut head = UpdateBuf::new();
        let colour_map = std::mem::take(&mut self.colour_map_due);
        let last_rect = write_head(pseudo, body, &mut head);
        self.request = None;
        self.updates_sent += 1;
        Some(UpdateStream {
            frame: latest.frame.clone(),
            params,
            cursor,
            colour_map,
            head,
            jobs,
            last_rect,
            encoders: std::mem::take(&mut self.encoders),
            pixels,
            planned,
            written: 0,
            started: false,
            share,
            reused: 0,
        })
    }

    /// The run of shared encodings this update's bands take part in, if
    /// any: only for big updates, which are encoded off the async runtime
    /// (a viewer may wait there for another's band); never for a cut or
    /// padded copy of the frame (its content is not frame `seq`'s), nor
    /// before the viewer's stream can take detached bytes. A drawn
    /// pointer's patch is part of the run (the same for every viewer that
    /// draws it: frame, shape and place are the frame's).
    fn share(
        &mut self,
        seq: u64,
        params: &EncodeParams,
        jobs: &std::collections::VecDeque<Job>,
        drawn: Option<pointer::Drawn>,
        pixels: usize,
    ) -> Option<Share> {
        use std::hash::{Hash, Hasher};
        let m = self.sharing.as_ref()?;
        if pixels <= INLINE_PIXELS || self.fitting {
            return None;
        }
        let encoding = jobs.front()?.encoding;
        if !m.shared() || !self.encoders.get(encoding).takes_detached() {
            return None;
        }
        let key = ShareKey {
            encoding,
            params: *params,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for j in jobs {
            (j.encoding, j.rect, j.pointer).hash(&mut h);
        }
        drawn.map(|d| (d.rect, d.serial, d.pos)).hash(&mut h);
        let bands = h.finish();
        let cache = m.cache().clone();
        let streams = cache.run(seq, key, bands)?;
        Some(Share {
            cache,
            seq,
            key,
            bands,
            streams,
            next: 0,
        })
    }

    /// Encode the next bands of `s` into `out` (appended), until it holds
    /// about [`CHUNK_BYTES`] or the update is complete; returns whether
    /// more is to come (see [`UpdateStream::encode_next`]). When it is
    /// complete the viewer's encoders come back from the stream.
    pub fn continue_update(&mut self, s: &mut UpdateStream, out: &mut UpdateBuf) -> bool {
        let more = s.encode_next(out);
        if !more {
            self.finish_update(s);
        }
        more
    }

    /// The update `s` is complete: its encoders (and their zlib streams,
    /// which live as long as the connection) come back to the viewer.
    pub fn finish_update(&mut self, s: &mut UpdateStream) {
        self.encoders = std::mem::take(&mut s.encoders);
        self.bands_reused += std::mem::take(&mut s.reused);
    }

    /// The pseudo-rectangles due: a size or layout change (in its own
    /// update), the cursor, the desktop name.
    fn pseudo_rects(&mut self, latest: &Published, resized: bool, rendering: bool) -> Pseudo {
        let size = (latest.frame.width, latest.frame.height);
        let mut p = Pseudo::default();
        // A resize this viewer asked for is answered with the new size
        // (reason 1, status 0) once the capture shows it.
        let granted = self.resize_reply_due.is_some_and(|r| r.status == 0);
        let waiting = granted && self.resize_wanted.is_some_and(|w| w != size);
        if resized {
            let reason = if granted {
                self.resize_reply_due = None;
                self.resize_wanted = None;
                1
            } else {
                0
            };
            self.write_size_rect(size, reason, 0, &latest.screens, &mut p.size_rect);
            self.viewer_size = size;
            self.has_picture = false;
        } else if waiting {
            // The screen has not changed yet: the reply comes with it.
        } else if let Some(reply) = self.resize_reply_due.take() {
            self.resize_wanted = None;
            if self.encodings.extended_desktop_size {
                self.write_size_rect(size, 1, reply.status, &latest.screens, &mut p.size_rect);
                self.layout_due = false;
            }
        } else if self.layout_due && self.encodings.extended_desktop_size {
            self.write_size_rect(size, 0, 0, &latest.screens, &mut p.size_rect);
        }
        if !p.size_rect.is_empty() {
            p.rects.count += 1;
        }
        self.layout_due = false;
        if let Some(kind) = self.shape_kind() {
            // While the cursor is drawn into the picture the viewer's own
            // is hidden, or it would show two (TigerVNC does the same).
            let due = match &latest.cursor {
                _ if rendering => Some((HIDDEN_CURSOR, None)),
                Some((serial, shape)) => Some((*serial, Some(shape))),
                None => None,
            };
            if let Some((serial, shape)) = due.filter(|(s, _)| *s != self.cursor_serial) {
                let b = &mut p.rects.bytes;
                let shape = shape.map_or_else(|| Arc::new(cursor::hidden()), Arc::clone);
                if !cursor::write_shape(kind, &shape, &self.pf, b) {
                    cursor::write_shape(kind, &CursorShape::arrow(), &self.pf, b);
                }
                p.rects.count += 1;
                self.cursor_serial = serial;
            }
        }
        let e = &self.encodings;
        if e.vmware_cursor_pos || e.pointer_pos {
            let encoding = if e.vmware_cursor_pos {
                enc::VMWARE_CURSOR_POSITION
            } else {
                enc::POINTER_POS
            };
            let inside = latest
                .pointer
                .filter(|&(x, y)| x < latest.frame.width && y < latest.frame.height);
            if let Some(pos) = self.pointer.position_due(inside) {
                cursor::write_pointer_pos(encoding, pos, &mut p.rects.bytes);
                p.rects.count += 1;
            }
        }
        if std::mem::take(&mut self.qemu_keys_ack_due) {
            p.rects
                .bytes
                .rect_header(Rect::default(), enc::QEMU_EXTENDED_KEY_EVENT);
            p.rects.count += 1;
            tracing::debug!("QEMU Extended Key Event confirmed to the viewer");
        }
        if std::mem::take(&mut self.ext_buttons_ack_due) {
            p.rects
                .bytes
                .rect_header(Rect::default(), enc::EXTENDED_MOUSE_BUTTONS);
            p.rects.count += 1;
            tracing::debug!("ExtendedMouseButtons confirmed to the viewer");
        }
        // The customer's lock keys, on the first update and when they
        // change; the viewer sets its own to match.
        if let Some(state) = latest.leds.filter(|s| Some(*s) != self.leds_sent) {
            if let Some(encoding) = self.led_encoding {
                let b = &mut p.rects.bytes;
                b.rect_header(Rect::default(), encoding);
                if encoding == enc::LED_STATE {
                    b.push(state);
                } else {
                    b.extend_from_slice(&u32::from(state).to_be_bytes());
                }
                p.rects.count += 1;
                self.leds_sent = Some(state);
                tracing::debug!(state, encoding, "lock-key state sent to the viewer");
            }
        }
        if let Some(name) = self.name_due.take() {
            if self.encodings.desktop_name {
                let b = &mut p.rects.bytes;
                b.rect_header(Rect::default(), enc::DESKTOP_NAME);
                b.extend_from_slice(&(name.len() as u32).to_be_bytes());
                b.extend_from_slice(name.as_bytes());
                p.rects.count += 1;
            }
        }
        p
    }

    /// What the viewer must be sent in `area` to show frame `latest` with
    /// the pointer drawn as `want`: its damage region brought up to date
    /// from the shared log, verified CopyRects written to `body` at once,
    /// and the rest (inside `area`) returned to be encoded and taken off
    /// the region.
    fn damaged_rects(
        &mut self,
        latest: &Published,
        area: Rect,
        full: bool,
        want: Option<pointer::Drawn>,
        body: &mut Rects,
    ) -> Vec<Rect> {
        let bounds = latest.frame.bounds();
        if !self.has_picture {
            self.has_picture = true;
            self.dirty = vec![bounds];
        } else {
            let moved = if full || !self.encodings.copy_rect {
                Vec::new()
            } else {
                self.copy_rects(latest, area, want, body)
            };
            let damage = latest
                .damage_since(self.seen_seq)
                .unwrap_or_else(|| vec![bounds]);
            self.dirty.extend(damage);
            // Where the drawn pointer was and is now, when it changed.
            if self.drawn != want {
                self.dirty.extend(self.drawn.map(|d| d.rect));
                self.dirty.extend(want.map(|d| d.rect));
            }
            for dst in moved {
                self.dirty = region::subtract_all(&self.dirty, dst);
            }
            // Merged onto the tile grid only when long: merging covers more
            // than it was given, and doing it at every update would put
            // back what a partial request just took off (and resend it
            // forever).
            self.dirty = if self.dirty.len() > DIRTY_MAX {
                region::normalise(&self.dirty, bounds)
            } else {
                region::clip_all(&self.dirty, bounds)
            };
        }
        self.seen_seq = latest.seq;
        self.drawn = want;
        let rects = if full {
            vec![area].into_iter().filter(|r| !r.is_empty()).collect()
        } else {
            // Disjoint, and all of it inside the area taken off below.
            region::normalise(&region::clip_all(&self.dirty, area), area)
        };
        self.dirty = region::subtract_all(&self.dirty, area);
        if rects.len() > MAX_RECTS_PER_UPDATE {
            vec![rects.iter().fold(Rect::default(), |a, r| a.union(r))]
        } else {
            rects
        }
    }

    /// The capture's moves (frame `seen_seq` to `latest`, verified on the
    /// frames; composed from the log when frames were skipped, see
    /// [`history::moves_since`]) that hold for this viewer: its picture at the source is
    /// clean (not in its damage region, no pointer drawn there, not written
    /// by an earlier move), the destination is requested and has no drawn
    /// pointer. Writes them to `body`; returns their destinations.
    fn copy_rects(
        &mut self,
        latest: &Published,
        area: Rect,
        want: Option<pointer::Drawn>,
        body: &mut Rects,
    ) -> Vec<Rect> {
        let bounds = latest.frame.bounds();
        let cursors: Vec<Rect> = [self.drawn, want]
            .iter()
            .flatten()
            .map(|d| d.rect)
            .collect();
        let mut moved: Vec<Rect> = Vec::new();
        let composed;
        let moves = if latest.seq == self.seen_seq + 1 {
            &latest.moves
        } else {
            composed = history::moves_since(&latest.damage, latest.seq, self.seen_seq);
            &composed
        };
        for m in moves {
            let src = Rect::new(m.src_x, m.src_y, m.dst.w, m.dst.h);
            if m.dst.is_empty()
                || !bounds.contains(&src)
                || !bounds.contains(&m.dst)
                || m.dst.x < area.x
                || m.dst.right() > area.right()
            {
                continue;
            }
            // Rows whose source is not clean in this viewer's picture, or
            // that a drawn pointer covers, stay with the encoder; the rest
            // of the move is copied.
            let pieces = clean_rows(
                m,
                &[&self.dirty, &moved, &cursors],
                &cursors,
                (area.y, area.bottom()),
            );
            for (y, h) in pieces {
                let dst = Rect::new(m.dst.x, y, m.dst.w, h);
                let src_y = (i32::from(y) + i32::from(m.src_y) - i32::from(m.dst.y)) as u16;
                write_copy_rect(dst, m.src_x, src_y, &mut body.bytes);
                body.count += 1;
                self.copy_rects += 1;
                moved.push(dst);
            }
        }
        moved
    }

    /// The bands `rects` are encoded in with the viewer's preferred
    /// encoding (the pointer's part of each apart, where `cursor` says),
    /// and how many rectangles they make. Too many to count in the header
    /// for a viewer without LastRect: the whole area as Raw instead, and
    /// the CopyRects in `body` dropped (the area is sent whole after them
    /// anyway).
    fn plan(
        &mut self,
        rects: &[Rect],
        area: Rect,
        npseudo: usize,
        cursor: &Option<(Arc<CursorShape>, pointer::Drawn)>,
        params: &EncodeParams,
        body: &mut Rects,
    ) -> (std::collections::VecDeque<Job>, usize) {
        let preferred = self.encodings.preferred;
        let pointer = cursor.as_ref().map(|(_, d)| d.rect);
        let mut jobs = std::collections::VecDeque::new();
        let mut count = 0;
        for r in rects {
            count += self.plan_rect(preferred, *r, pointer, params, &mut jobs);
        }
        if body.count + count + npseudo > MAX_COUNTED_RECTS && !self.encodings.last_rect {
            body.bytes.clear();
            body.count = 0;
            jobs.clear();
            count = self.plan_rect(enc::RAW, area, pointer, params, &mut jobs);
        }
        body.count += count;
        (jobs, count)
    }

    /// One rectangle's jobs; where the drawn pointer lies in it, those
    /// pixels only are a job of their own. Returns the rectangles counted.
    fn plan_rect(
        &mut self,
        encoding: i32,
        r: Rect,
        pointer: Option<Rect>,
        params: &EncodeParams,
        jobs: &mut std::collections::VecDeque<Job>,
    ) -> usize {
        let Some(inner) = pointer.map(|p| p.intersect(&r)).filter(|i| !i.is_empty()) else {
            return self.plan_bands(encoding, r, params, jobs);
        };
        let mut outer = Vec::new();
        region::subtract(r, inner, &mut outer);
        let mut n = 0;
        for o in outer {
            n += self.plan_bands(encoding, o, params, jobs);
        }
        jobs.push_back(Job {
            encoding,
            rect: inner,
            pointer: true,
        });
        // At most 256x256 (MAX_CURSOR_EDGE): one band, as the patch is.
        n + self.encoders.get(encoding).rect_count(inner, params)
    }

    /// One rectangle as the encoder makes it, in bands: Raw in pieces of
    /// at most 65536 pixels, every other encoding in bands of at most
    /// [`BAND_MAX_PIXELS`] (64 rows at up to 2048 wide, so ZRLE's and
    /// Hextile's tiles stay on the same grid). An encoder's scratch buffers
    /// (which live as long as the connection) and each piece of output then
    /// stay small, whatever the screen size: this is what a viewer's memory
    /// is made of now that it keeps no copy of the screen and sends each
    /// band before encoding the next.
    fn plan_bands(
        &mut self,
        encoding: i32,
        r: Rect,
        params: &EncodeParams,
        jobs: &mut std::collections::VecDeque<Job>,
    ) -> usize {
        let max = if encoding == enc::RAW {
            RAW_MAX_PIXELS
        } else {
            BAND_MAX_PIXELS
        };
        let encoder = self.encoders.get(encoding);
        let mut rows = if r.area() <= max {
            r.h as usize
        } else {
            max / r.w as usize
        };
        if r.area() > max && encoding != enc::RAW && rows >= 64 {
            rows -= rows % 64;
        }
        let rows = rows.max(1) as u32;
        let mut n = 0;
        let mut y = u32::from(r.y);
        while y < r.bottom() {
            let h = rows.min(r.bottom() - y);
            let band = Rect::new(r.x, y as u16, r.w, h as u16);
            n += encoder.rect_count(band, params);
            jobs.push_back(Job {
                encoding,
                rect: band,
                pointer: false,
            });
            y += h;
        }
        n
    }

    fn write_size_rect(
        &self,
        (w, h): (u16, u16),
        reason: u16,
        status: u16,
        screens: &[Rect],
        out: &mut UpdateBuf,
    ) {
        if self.encodings.extended_desktop_size {
            // x = reason, y = status; then the screens (one covering the
            // framebuffer when the source reports no layout).
            out.rect_header(Rect::new(reason, status, w, h), enc::EXTENDED_DESKTOP_SIZE);
            let whole = [Rect::new(0, 0, w, h)];
            let list = if screens.is_empty() {
                &whole[..]
            } else {
                screens
            };
            let list = &list[..list.len().min(crate::rfb::limits::MAX_SCREENS)];
            out.extend_from_slice(&[list.len() as u8, 0, 0, 0]);
            for (id, r) in list.iter().enumerate() {
                out.extend_from_slice(&(id as u32).to_be_bytes());
                for v in [r.x, r.y, r.w, r.h] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend_from_slice(&0u32.to_be_bytes()); // flags
            }
        } else {
            out.rect_header(Rect::new(0, 0, w, h), enc::DESKTOP_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::test_pattern::render;

    #[test]
    fn moves_are_cut_around_what_the_viewer_cannot_copy() {
        // Up by 16 rows: destination rows 32..1064 from 48..1080.
        let up = MoveHint {
            src_x: 0,
            src_y: 48,
            dst: Rect::new(0, 32, 1920, 1032),
        };
        let all = (0u16, 1080u32);
        assert_eq!(clean_rows(&up, &[], &[], all), vec![(32, 1032)]);
        // A drawn pointer at the bottom right: its own row, and the row
        // whose source it is, are left to the encoder.
        let pointer = [Rect::new(1919, 1079, 1, 1)];
        assert_eq!(
            clean_rows(&up, &[&pointer], &pointer, all),
            vec![(32, 1031)]
        );
        let pointer = [Rect::new(500, 400, 16, 20)];
        assert_eq!(
            clean_rows(&up, &[&pointer], &pointer, all),
            vec![(32, 352), (420, 644)]
        );
        // Columns the move does not cover do not block it.
        let beside = [Rect::new(0, 400, 10, 20)];
        let narrow = MoveHint {
            src_x: 100,
            src_y: 48,
            dst: Rect::new(100, 32, 200, 100),
        };
        assert_eq!(
            clean_rows(&narrow, &[&beside], &beside, all),
            vec![(32, 100)]
        );
        // Damage the viewer has not had at the source; the request's rows.
        let dirty = [Rect::new(0, 100, 64, 8)];
        assert_eq!(
            clean_rows(&up, &[&dirty], &[], (40, 1000)),
            vec![(40, 44), (92, 908)]
        );
        // Down by 16: the lower piece first, so that the upper one's
        // source is not yet overwritten when the viewer copies it.
        let down = MoveHint {
            src_x: 0,
            src_y: 32,
            dst: Rect::new(0, 48, 1920, 1032),
        };
        let pointer = [Rect::new(0, 500, 8, 8)];
        assert_eq!(
            clean_rows(&down, &[], &pointer, all),
            vec![(508, 572), (48, 452)]
        );
    }

    fn publish(seq: u64, f: Frame) -> Published {
        Published {
            seq,
            frame: Arc::new(f),
            moves: Vec::new(),
            cursor: None,
            damage: Arc::new(Vec::new()),
            screens: Arc::new(Vec::new()),
            pointer: None,
            leds: None,
        }
    }

    /// A full 1080p update goes out in pieces of at most `CHUNK_BYTES`
    /// plus one band (never whole), decodes exactly when the pieces are
    /// joined, and is not changed by what the viewer asks meanwhile.
    #[test]
    fn big_updates_are_streamed_in_small_pieces() {
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let (w, h) = (1920u16, 1080u16);
        for e in [enc::RAW, enc::ZRLE, enc::TIGHT, enc::HEXTILE] {
            let mut v = ViewerState::new(w, h);
            v.set_encodings(&[e, enc::CURSOR]);
            v.request(false, Rect::new(0, 0, w, h));
            let p = publish(1, render(w, h, 5));
            let mut s = v.start_update(&p).expect("an update");
            // Asked meanwhile: applies to the next update only.
            v.set_pixel_format(PixelFormat::RGB565);
            v.set_encodings(&[enc::RAW]);
            let mut all = Vec::new();
            let mut pieces = 0;
            loop {
                let mut piece = UpdateBuf::new();
                let more = v.continue_update(&mut s, &mut piece);
                // A Raw band is 65536 pixels (256 KiB); others compress.
                assert!(
                    piece.len() <= CHUNK_BYTES + RAW_MAX_PIXELS * 4 + 64,
                    "{e}: piece of {} bytes",
                    piece.len()
                );
                all.extend_from_slice(&piece);
                pieces += 1;
                if !more {
                    break;
                }
            }
            assert!(pieces > 1 || e != enc::RAW, "{e}: sent whole");
            let mut fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
            let mut dec = Decoder::new();
            assert_eq!(dec.decode_message(&all, &mut fb), Ok(all.len()), "{e}");
            assert!(fb.pixels == p.frame.to_pixels(), "{e}: picture differs");
        }
    }

    #[test]
    fn incremental_waits_for_change() {
        let mut v = ViewerState::new(320, 240);
        let p = publish(1, render(320, 240, 0));
        let mut out = Vec::new();
        v.request(false, Rect::new(0, 0, 320, 240));
        assert!(v.build_update(&p, &mut out));
        out.clear();
        v.request(true, Rect::new(0, 0, 320, 240));
        assert!(!v.build_update(&p, &mut out));
        assert!(out.is_empty());
        let p2 = publish(2, render(320, 240, 1));
        assert!(v.build_update(&p2, &mut out));
        assert!(!v.has_request());
    }

    /// Found while splitting `build_update` (issue 10, item 5): the colour
    /// map was written to `out` before it was known whether an update
    /// would go out, and marked sent; an incremental request with nothing
    /// new returned `Ok(false)`, the session dropped `out`, and the viewer
    /// got palette indices without ever getting the palette.
    #[test]
    fn colour_map_is_not_lost_with_an_empty_incremental_update() {
        let mut v = ViewerState::new(64, 48);
        let p = publish(1, render(64, 48, 0));
        let mut out = Vec::new();
        v.request(false, Rect::new(0, 0, 64, 48));
        assert!(v.build_update(&p, &mut out));
        out.clear();
        let mut pf = PixelFormat::BGR233;
        pf.true_colour = false;
        v.set_pixel_format(pf);
        // The shadow is gone, so even "nothing new" would resend; make
        // the request empty to get an update with nothing in it.
        v.request(true, Rect::new(0, 0, 0, 0));
        assert!(v.has_request());
        assert!(!v.build_update(&p, &mut out));
        out.clear();
        v.request(false, Rect::new(0, 0, 64, 48));
        assert!(v.build_update(&p, &mut out));
        assert_eq!(
            out[0], 1,
            "the update did not start with SetColourMapEntries"
        );
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
        assert!(v.build_update(&p, &mut out));
        // The whole screen in Raw rectangles of at most 65536 pixels:
        // 320x204, then 320x36.
        assert_eq!(&out[4..12], &[0, 0, 0, 0, 1, 64, 0, 204]);
        assert_eq!(out.len(), 4 + 2 * 12 + 320 * 240 * 4);
    }

    #[test]
    fn the_shared_damage_log_decides_what_is_sent_and_gaps_resend_all() {
        let base = render(320, 240, 0);
        let mut v = ViewerState::new(320, 240);
        let mut out = Vec::new();
        v.request(false, Rect::new(0, 0, 320, 240));
        assert!(v.build_update(&publish(1, base.clone()), &mut out));

        // The log (computed once by the capture) says only a 4x4 square
        // changed: that square is all that is sent.
        let entry = |seq, rects| DamageEntry {
            first: seq,
            last: seq,
            rects,
            moves: Vec::new(),
        };
        let mut p = publish(2, base.clone());
        p.damage = Arc::new(vec![entry(2, vec![Rect::new(300, 200, 4, 4)])]);
        v.request(true, Rect::new(0, 0, 320, 240));
        out.clear();
        assert!(v.build_update(&p, &mut out));
        assert_eq!(out.len(), 4 + 12 + 16 * 4);
        assert_eq!(&out[4..12], &[1, 44, 0, 200, 0, 4, 0, 4]);

        // A gap in the log (frame 3 missing) means everything again.
        let mut p = publish(4, base.clone());
        p.damage = Arc::new(vec![entry(4, vec![])]);
        v.request(true, Rect::new(0, 0, 320, 240));
        out.clear();
        assert!(v.build_update(&p, &mut out));
        assert_eq!(update_encodings(&out), vec![vec![enc::RAW, enc::RAW]]);
        assert_eq!(out.len(), 4 + 2 * 12 + 320 * 240 * 4);

        // Nothing since: the request stays pending.
        let mut p = publish(5, base);
        p.damage = Arc::new(vec![entry(4, vec![]), entry(5, vec![])]);
        v.request(true, Rect::new(0, 0, 320, 240));
        out.clear();
        assert!(!v.build_update(&p, &mut out));
        assert!(v.has_request());
    }

    /// Damage outside a partial request stays owed and is sent when asked
    /// for; the part that was sent is not sent again.
    #[test]
    fn damage_outside_the_request_waits_for_it() {
        let mut v = ViewerState::new(256, 128);
        v.request(false, Rect::new(0, 0, 256, 128));
        assert!(v.build_update(&publish(1, render(256, 128, 0)), &mut Vec::new()));
        let mut p = publish(2, render(256, 128, 0));
        p.damage = Arc::new(vec![DamageEntry {
            first: 2,
            last: 2,
            rects: vec![Rect::new(0, 0, 256, 10)],
            moves: Vec::new(),
        }]);
        let mut out = Vec::new();
        v.request(true, Rect::new(0, 0, 100, 128));
        assert!(v.build_update(&p, &mut out));
        assert_eq!(&out[4..12], &[0, 0, 0, 0, 0, 100, 0, 10]);
        out.clear();
        v.request(true, Rect::new(0, 0, 100, 128));
        assert!(!v.build_update(&p, &mut out), "sent twice");
        v.cancel_request();
        v.request(true, Rect::new(0, 0, 256, 128));
        assert!(v.build_update(&p, &mut out));
        assert_eq!(&out[4..12], &[0, 100, 0, 0, 0, 156, 0, 10]);
    }

    /// Viewers served at different paces (every frame, every 3rd, every
    /// 40th: past the log's length, so they get merged entries, and one
    /// asking for the left and right halves in turn) from one shared
    /// history, with CopyRect where the capture's moves are true, all stay
    /// exact where they asked, and none keeps a copy of the screen.
    #[test]
    fn viewers_at_different_paces_stay_exact_from_one_history() {
        use crate::capture::test_pattern::box_move;
        use crate::encoding::testutil::client_pf;
        use crate::framebuffer::history::FrameHistory;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let (w, h) = (200u16, 150u16);
        let halves = [Rect::new(0, 0, 100, h), Rect::new(100, 0, 100, h)];
        let first = Arc::new(render(w, h, 0));
        let mut hist = FrameHistory::new(first.clone());
        let mut viewers: Vec<(u64, bool, ViewerState, ClientFramebuffer, Decoder)> =
            [(1u64, false), (3, false), (40, false), (1, true)]
                .into_iter()
                .map(|(pace, split)| {
                    let mut v = ViewerState::new(w, h);
                    v.set_encodings(&[enc::COPY_RECT, enc::ZRLE]);
                    v.request(false, Rect::new(0, 0, w, h));
                    let fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
                    (pace, split, v, fb, Decoder::new())
                })
                .collect();
        let mut latest = publish(1, (*first).clone());
        for n in 1..=121u64 {
            if n > 1 {
                let f = Arc::new(render(w, h, n - 1));
                let moves = box_move(w, h, n - 2, n - 1).into_iter().collect();
                let found = hist.record(n, &f, None, moves);
                latest = Published {
                    moves: found.moves,
                    damage: hist.log(),
                    frame: f,
                    ..publish(n, Frame::new(1, 1))
                };
            }
            for (pace, split, v, fb, dec) in &mut viewers {
                if (n - 1) % *pace != 0 {
                    continue;
                }
                let asked = if *split && n > 1 {
                    halves[n as usize % 2]
                } else {
                    Rect::new(0, 0, w, h)
                };
                let mut out = Vec::new();
                if v.build_update(&latest, &mut out) {
                    assert_eq!(dec.decode_message(&out, fb), Ok(out.len()));
                }
                for y in asked.y..asked.y + asked.h {
                    let at = y as usize * w as usize + asked.x as usize;
                    let span = at..at + asked.w as usize;
                    assert!(
                        fb.pixels[span] == *latest.frame.row(y, asked.x, asked.w),
                        "viewer every {pace} frames (halves: {split}), frame {n}, row {y}"
                    );
                }
                let next = if *split {
                    halves[(n as usize + 1) % 2]
                } else {
                    Rect::new(0, 0, w, h)
                };
                v.request(true, next);
            }
        }
        let copies: u32 = viewers
            .iter()
            .map(|(.., dec)| dec.stats.rects.get(&enc::COPY_RECT).copied().unwrap_or(0))
            .sum();
        assert!(copies > 0, "no CopyRect was used");
    }

    /// Rectangle encodings of each FramebufferUpdate in `out` (Raw payloads
    /// at 32 bpp; ExtendedDesktopSize with its screens; DesktopSize empty).
    fn update_encodings(out: &[u8]) -> Vec<Vec<i32>> {
        let mut i = 0;
        let mut updates = Vec::new();
        while i < out.len() {
            assert_eq!(out[i], 0, "FramebufferUpdate message type");
            let n = u16::from_be_bytes([out[i + 2], out[i + 3]]);
            i += 4;
            let mut encs = Vec::new();
            for _ in 0..n {
                let w = u16::from_be_bytes([out[i + 4], out[i + 5]]) as usize;
                let h = u16::from_be_bytes([out[i + 6], out[i + 7]]) as usize;
                let e = i32::from_be_bytes([out[i + 8], out[i + 9], out[i + 10], out[i + 11]]);
                i += 12;
                i += match e {
                    enc::RAW => w * h * 4,
                    enc::EXTENDED_DESKTOP_SIZE => 4 + 16 * out[i] as usize,
                    enc::DESKTOP_SIZE => 0,
                    other => panic!("unexpected encoding {other}"),
                };
                encs.push(e);
            }
            updates.push(encs);
        }
        assert_eq!(i, out.len());
        updates
    }

    #[test]
    fn size_rectangles_come_alone_and_last() {
        for (size_enc, list) in [
            (
                enc::EXTENDED_DESKTOP_SIZE,
                vec![enc::RAW, enc::EXTENDED_DESKTOP_SIZE],
            ),
            (enc::DESKTOP_SIZE, vec![enc::RAW, enc::DESKTOP_SIZE]),
        ] {
            let mut v = ViewerState::new(100, 80);
            v.set_encodings(&list);
            let mut out = Vec::new();
            v.request(false, Rect::new(0, 0, 100, 80));
            assert!(v.build_update(&publish(1, render(100, 80, 0)), &mut out));
            let first = update_encodings(&out);
            if size_enc == enc::EXTENDED_DESKTOP_SIZE {
                // The layout announcement, then the picture.
                assert_eq!(first, vec![vec![size_enc], vec![enc::RAW]]);
            } else {
                assert_eq!(first, vec![vec![enc::RAW]]);
            }
            // A resize: the size on its own, then the whole new picture.
            out.clear();
            v.request(true, Rect::new(0, 0, 100, 80));
            assert!(v.build_update(&publish(2, render(60, 50, 0)), &mut out));
            assert_eq!(update_encodings(&out), vec![vec![size_enc], vec![enc::RAW]]);
            assert!(!v.has_request());
        }
    }

    #[test]
    fn every_encoding_keeps_a_viewer_exact_over_many_updates() {
        use crate::encoding::testutil::client_pf;
        use crate::encoding::SUPPORTED;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let be32 = PixelFormat {
            big_endian: true,
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::NATIVE
        };
        for &e in SUPPORTED {
            for pf in [PixelFormat::NATIVE, PixelFormat::RGB565, be32] {
                let mut v = ViewerState::new(160, 120);
                v.set_pixel_format(pf);
                v.set_encodings(&[e, enc::COMPRESS_LEVEL_0 + 3]);
                let mut fb = ClientFramebuffer::new(160, 120, client_pf(&pf));
                let mut dec = Decoder::new();
                for n in 0..5u64 {
                    v.request(n > 0, Rect::new(0, 0, 160, 120));
                    let p = publish(n + 1, render(160, 120, n * 7));
                    let mut out = Vec::new();
                    assert!(v.build_update(&p, &mut out));
                    assert_eq!(dec.decode_message(&out, &mut fb), Ok(out.len()));
                    let want: Vec<u32> = p.frame.pixels().map(|&x| pf.from_native(x)).collect();
                    assert!(fb.pixels == want, "encoding {e}, {pf:?}, update {n}");
                }
                // The chosen encoding was used (RRE may send Raw where smaller).
                let used: Vec<i32> = dec.stats.rects.keys().copied().collect();
                assert!(used.contains(&e), "{e}: {used:?}");
                assert!(
                    used.iter().all(|&u| u == e || u == enc::RAW),
                    "{e}: {used:?}"
                );
            }
        }
    }

    /// Viewers with the same settings get one encoding of each band
    /// (encoded by whichever is first), mixed with bands each encodes
    /// alone (small updates, a viewer a frame behind, one that joins
    /// late), and every one of them stays exact in every encoding, the
    /// pointer drawn into their pictures (its patch shared too) included.
    #[test]
    fn viewers_with_the_same_settings_share_encodings_and_stay_exact() {
        use crate::encoding::shared::SharedEncodings;
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        // Three bands of 256, 256 and 88 rows: one run.
        let (w, h) = (512u16, 600u16);
        let whole = Rect::new(0, 0, w, h);
        for list in [
            &[enc::TIGHT][..],
            &[enc::TIGHT, enc::QUALITY_LEVEL_0 + 7],
            &[enc::ZRLE, enc::COMPRESS_LEVEL_0 + 1],
            &[enc::ZLIB],
            &[enc::HEXTILE],
            &[enc::RRE],
        ] {
            let lossy = list.len() > 1 && list[0] == enc::TIGHT;
            let cache = SharedEncodings::new();
            // (joins at frame, every how many frames, area asked for,
            // viewer, picture, decoder); the one asking for the top half
            // has other bands, so a run of its own.
            let half = Rect::new(0, 0, w, h / 2);
            type Viewer = (u64, u64, Rect, ViewerState, ClientFramebuffer, Decoder);
            let mut viewers: Vec<Viewer> = [
                (1u64, 1u64, whole),
                (1, 1, whole),
                (1, 2, whole),
                (6, 1, whole),
                (1, 1, half),
            ]
            .into_iter()
            .map(|(join, pace, area)| {
                let mut v = ViewerState::new(w, h);
                v.share_with(cache.clone());
                v.set_encodings(list);
                v.request(false, whole);
                let fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
                (join, pace, area, v, fb, Decoder::new())
            })
            .collect();
            let arrow = Arc::new(CursorShape::arrow());
            for n in 1..=12u64 {
                let latest = Published {
                    cursor: Some((1, arrow.clone())),
                    pointer: Some((100 + n as u16 * 13, 50 + n as u16 * 20)),
                    ..publish(n, render(w, h, n * 7))
                };
                let want = pointer::composite(&latest).expect("a pointer").0.frame;
                for (join, pace, area, v, fb, dec) in &mut viewers {
                    if n < *join || (n - *join) % *pace != 0 {
                        continue;
                    }
                    let asked = v.request.map_or(whole, |r| r.0);
                    let mut out = Vec::new();
                    assert!(v.build_update(&latest, &mut out), "{list:?} frame {n}");
                    assert_eq!(dec.decode_message(&out, fb), Ok(out.len()), "{list:?}");
                    for y in asked.y..asked.bottom() as u16 {
                        let at = y as usize * w as usize + asked.x as usize;
                        let span = at..at + asked.w as usize;
                        assert!(
                            lossy || fb.pixels[span] == *want.row(y, asked.x, asked.w),
                            "{list:?}: viewer joining at {join}, every {pace}, frame {n}, row {y}"
                        );
                    }
                    // Every third frame only a small part is asked for (it
                    // is encoded alone, between shared bands).
                    let next = if n % 3 == 0 {
                        Rect::new(10, 10, 100, 60)
                    } else {
                        *area
                    };
                    v.request(true, next);
                }
            }
            // The viewers asking for the whole screen share; the one asking
            // for the top half encodes its own run.
            let st = cache.stats();
            assert!(
                st.encoded > 0 && st.reused * 2 >= st.encoded,
                "{list:?}: {st:?}"
            );
            drop(viewers);
            assert_eq!(cache.held_bytes(), 0, "{list:?}");
        }
    }

    /// A `w`x`h` frame of noise (from `seed`) whose rows `rows` are
    /// copied again from row `to` on.
    fn noise_with_rows_copied(
        w: u16,
        h: u16,
        mut seed: u32,
        rows: std::ops::Range<usize>,
        to: usize,
    ) -> Frame {
        let mut px = vec![0u32; w as usize * h as usize];
        for p in &mut px {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = seed >> 8;
        }
        let wu = w as usize;
        px.copy_within(rows.start * wu..rows.end * wu, to * wu);
        Frame::from_pixels(w, h, px)
    }

    /// Two viewers with the same settings whose updates have different
    /// bands (the whole screen, its top half) are separate runs, even for
    /// the band they have in common: a run's zlib streams go on from band
    /// to band, and with the two updates interleaved band by band one run
    /// would compress a band after bytes the other viewer never got.
    #[test]
    fn updates_with_other_bands_are_runs_of_their_own() {
        use crate::encoding::shared::SharedEncodings;
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let (w, h) = (512u16, 600u16);
        // Noise (every band is well over one piece of output), except that
        // the whole screen's second band ends with the rows the top half's
        // second band starts with, within deflate's 32 KiB window: a
        // stream that went on from the one band to the other would refer
        // back to pixels the half's viewer never got (Tight's rows are
        // compressed in order; this fails when both updates are one run).
        let latest = publish(1, noise_with_rows_copied(w, h, 0x9E37_79B9, 256..277, 491));
        for e in [enc::ZRLE, enc::TIGHT] {
            let cache = SharedEncodings::new();
            let areas = [Rect::new(0, 0, w, h), Rect::new(0, 0, w, 300)];
            // Both count as sharers before either update starts.
            let mut states: Vec<ViewerState> = areas
                .iter()
                .map(|_| {
                    let mut v = ViewerState::new(w, h);
                    v.share_with(cache.clone());
                    v.set_encodings(&[e]);
                    v
                })
                .collect();
            let mut viewers: Vec<_> = areas
                .iter()
                .zip(states.drain(..))
                .map(|(&area, mut v)| {
                    // A started ZRLE stream (a viewer's first band is its own).
                    v.request(false, Rect::new(0, 0, 8, 8));
                    let fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
                    let mut dec = Decoder::new();
                    let mut out = Vec::new();
                    assert!(v.build_update(&latest, &mut out));
                    assert_eq!(dec.decode_message(&out, &mut { fb.clone() }), Ok(out.len()));
                    v.request(false, area);
                    let s = v.start_update(&latest).expect("an update");
                    (v, s, fb, dec, Vec::new(), area)
                })
                .collect();
            // One piece each in turn (a band is more than a piece here).
            let mut more = [true, true];
            while more.iter().any(|&m| m) {
                for (k, (v, s, _, _, out, _)) in viewers.iter_mut().enumerate() {
                    if more[k] {
                        let mut buf = UpdateBuf::new();
                        more[k] = v.continue_update(s, &mut buf);
                        out.extend_from_slice(buf.bytes());
                    }
                }
            }
            for (_, _, fb, dec, out, area) in &mut viewers {
                assert_eq!(dec.decode_message(out, fb), Ok(out.len()), "{e}, {area:?}");
                for y in 0..area.h as usize {
                    let row = y * w as usize..(y + 1) * w as usize;
                    assert!(
                        fb.pixels[row] == *latest.frame.row(y as u16, 0, w),
                        "{e}: row {y}"
                    );
                }
            }
            let st = cache.stats();
            assert_eq!(
                (st.encoded, st.reused),
                (5, 0),
                "{e}: two runs, 3 and 2 bands"
            );
        }
    }

    /// A band whose shared entry went (every sharer but one had taken it)
    /// and is made again after the run went on is made with streams of
    /// its own: the run's streams would refer back to bands the viewer
    /// asking for it never got. Here the second viewer changes its
    /// settings in the middle of its update (it then counts elsewhere),
    /// the first runs two bands ahead, and the second still gets an exact
    /// picture (this fails when the band is made with the run's streams
    /// and taken out of order).
    #[test]
    fn a_band_made_again_out_of_the_runs_order_stands_alone() {
        use crate::encoding::shared::SharedEncodings;
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        // Four bands: rows 0, 256, 512 and 768.
        let (w, h) = (512u16, 856u16);
        // Noise, with the third band ending in the rows the second band
        // starts with (within deflate's window; see above).
        let latest = publish(1, noise_with_rows_copied(w, h, 0x1234_5678, 256..277, 747));
        for e in [enc::ZRLE, enc::TIGHT] {
            let cache = SharedEncodings::new();
            let mut vs: Vec<ViewerState> = (0..2)
                .map(|_| {
                    let mut v = ViewerState::new(w, h);
                    v.share_with(cache.clone());
                    v.set_encodings(&[e]);
                    v
                })
                .collect();
            let mut fbs = Vec::new();
            let mut streams = Vec::new();
            for v in &mut vs {
                let mut fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
                let mut dec = Decoder::new();
                v.request(false, Rect::new(0, 0, 8, 8));
                let mut out = Vec::new();
                assert!(v.build_update(&latest, &mut out));
                assert_eq!(dec.decode_message(&out, &mut fb), Ok(out.len()));
                v.request(false, Rect::new(0, 0, w, h));
                streams.push(v.start_update(&latest).expect("an update"));
                fbs.push((fb, dec, Vec::new()));
            }
            let mut piece = |k: usize, vs: &mut Vec<ViewerState>, streams: &mut Vec<_>| {
                let mut buf = UpdateBuf::new();
                let more = vs[k].continue_update(&mut streams[k], &mut buf);
                fbs[k].2.extend_from_slice(buf.bytes());
                more
            };
            assert!(piece(0, &mut vs, &mut streams));
            assert!(piece(1, &mut vs, &mut streams));
            // The second viewer now counts under other settings.
            vs[1].set_encodings(&[enc::HEXTILE]);
            // The first takes the second and third bands (their entries
            // go at once: it is the only sharer left).
            assert!(piece(0, &mut vs, &mut streams));
            assert!(piece(0, &mut vs, &mut streams));
            while piece(1, &mut vs, &mut streams) {}
            while piece(0, &mut vs, &mut streams) {}
            for (k, (fb, dec, out)) in fbs.iter_mut().enumerate() {
                assert_eq!(
                    dec.decode_message(out, fb),
                    Ok(out.len()),
                    "{e}, viewer {k}"
                );
                assert!(fb.pixels == latest.frame.to_pixels(), "{e}: viewer {k}");
            }
        }
    }

    /// A viewer without cursor shapes gets the pointer drawn where it is,
    /// and the pixels under the old place back when it moves; the
    /// published frame is never touched.
    #[test]
    fn drawn_cursor_follows_the_pointer_and_is_erased() {
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let (w, h) = (160u16, 120u16);
        let frame = Arc::new(render(w, h, 3));
        let clean = frame.to_pixels();
        let arrow = Arc::new(CursorShape::arrow());
        let at = |seq: u64, p: (u16, u16)| Published {
            pointer: Some(p),
            leds: None,
            cursor: Some((1, arrow.clone())),
            damage: Arc::new(vec![DamageEntry {
                first: 1,
                last: seq,
                rects: vec![],
                moves: Vec::new(),
            }]),
            frame: frame.clone(),
            ..publish(seq, Frame::new(1, 1))
        };
        let mut v = ViewerState::new(w, h);
        let mut fb = ClientFramebuffer::new(w, h, client_pf(&PixelFormat::NATIVE));
        let mut dec = Decoder::new();
        for (n, p) in [(20u16, 30u16), (100, 70), (155, 115)]
            .into_iter()
            .enumerate()
        {
            v.request(n > 0, Rect::new(0, 0, w, h));
            let latest = at(n as u64 + 1, p);
            let mut out = Vec::new();
            assert!(v.build_update(&latest, &mut out), "update {n}");
            assert_eq!(dec.decode_message(&out, &mut fb), Ok(out.len()));
            let (want, _) = pointer::composite(&latest).unwrap();
            assert!(fb.pixels == want.frame.to_pixels(), "pointer at {p:?}");
            if n > 0 {
                // Only the cursor areas (tile-wide runs) were sent, not
                // the whole screen.
                assert!(
                    out.len() < w as usize * h as usize * 2,
                    "{} bytes",
                    out.len()
                );
            }
        }
        assert_eq!(frame.to_pixels(), clean, "the published frame was drawn on");
        // The pointer comes under this viewer's own hand: nothing drawn.
        // (A viewer without shapes keeps the drawn cursor: it has no other.)
        v.set_encodings(&[enc::RAW, enc::CURSOR]);
        v.pointer.viewer_moved(60, 60);
        v.request(true, Rect::new(0, 0, w, h));
        let mut out = Vec::new();
        assert!(v.build_update(&at(4, (60, 60)), &mut out));
        // The real shape comes back (a Cursor rectangle) and the body
        // restores the last drawn area.
        assert_eq!(dec.decode_message(&out, &mut fb), Ok(out.len()));
        assert!(fb.pixels == clean, "the drawn cursor was not removed");
    }

    /// A granted SetDesktopSize is answered (reason 1, status 0) with the
    /// new size once a frame has it, not before with the old one.
    #[test]
    fn a_granted_resize_is_answered_with_the_new_size() {
        let mut v = ViewerState::new(100, 80);
        v.set_encodings(&[enc::RAW, enc::EXTENDED_DESKTOP_SIZE]);
        v.request(false, Rect::new(0, 0, 100, 80));
        assert!(v.build_update(&publish(1, render(100, 80, 0)), &mut Vec::new()));
        v.resize_wanted = Some((60, 50));
        v.resize_reply_due = Some(ResizeReply { status: 0 });
        v.request(true, Rect::default());
        let mut out = Vec::new();
        assert!(!v.build_update(&publish(1, render(100, 80, 0)), &mut out));
        assert!(out.is_empty(), "answered before the screen changed");
        assert!(v.build_update(&publish(2, render(60, 50, 0)), &mut out));
        // reason 1, status 0, 60x50
        assert_eq!(
            &out[4..16],
            &[0, 1, 0, 0, 0, 60, 0, 50, 0xff, 0xff, 0xfe, 0xcc]
        );
        assert!(v.resize_reply_due.is_none());
    }

    #[test]
    fn a_viewer_without_desktop_size_keeps_its_size() {
        let mut v = ViewerState::new(100, 80);
        v.request(false, Rect::new(0, 0, 100, 80));
        assert!(v.build_update(&publish(1, render(100, 80, 0)), &mut Vec::new()));
        // Bigger and smaller screens: the updates stay inside 100x80.
        for (seq, (w, h)) in [(2u64, (120u16, 90u16)), (3, (60, 50))] {
            let mut out = Vec::new();
            v.request(false, Rect::new(0, 0, 100, 80));
            assert!(v.build_update(&publish(seq, render(w, h, seq)), &mut out));
            assert_eq!(v.viewer_size(), (100, 80));
            let encs = update_encodings(&out);
            assert!(encs.iter().flatten().all(|&e| e >= 0), "{encs:?}");
        }
    }

    /// A viewer that keeps its size is sent the padding too when the
    /// screen shrinks (the shared log only speaks of the new screen), and
    /// after that only what changes.
    #[test]
    fn a_viewer_that_keeps_its_size_sees_the_padding_and_then_rests() {
        use crate::encoding::testutil::client_pf;
        use rfb_decode::{ClientFramebuffer, Decoder};
        let mut v = ViewerState::new(100, 80);
        let mut fb = ClientFramebuffer::new(100, 80, client_pf(&PixelFormat::NATIVE));
        let mut dec = Decoder::new();
        let mut serve = |v: &mut ViewerState, p: &Published| {
            let mut out = Vec::new();
            let sent = v.build_update(p, &mut out);
            if sent {
                assert_eq!(dec.decode_message(&out, &mut fb), Ok(out.len()));
            }
            v.request(true, Rect::new(0, 0, 100, 80));
            (sent, fb.pixels.clone())
        };
        v.request(false, Rect::new(0, 0, 100, 80));
        serve(&mut v, &publish(1, render(100, 80, 0)));
        // As the capture logs it: the whole (new, smaller) screen changed.
        let mut small = publish(2, render(60, 50, 2));
        small.damage = Arc::new(vec![DamageEntry {
            first: 2,
            last: 2,
            rects: vec![Rect::new(0, 0, 60, 50)],
            moves: Vec::new(),
        }]);
        let (sent, px) = serve(&mut v, &small);
        assert!(sent);
        assert_eq!(px, fit(&small, (100, 80)).frame.to_pixels());
        let mut same = publish(3, render(60, 50, 2));
        same.damage = Arc::new(vec![
            small.damage[0].clone(),
            DamageEntry {
                first: 3,
                last: 3,
                rects: vec![],
                moves: Vec::new(),
            },
        ]);
        assert!(!serve(&mut v, &same).0, "resent with nothing new");
    }

    /// Regression (tests/led_state.rs spun at 350,000 updates): a request
    /// for one pixel inside a damaged tile was answered, the rest of the
    /// tile kept, and merging it back onto the tile grid put the pixel
    /// back, so every incremental request was answered at once, forever.
    #[test]
    fn a_one_pixel_request_inside_damage_is_answered_once() {
        let mut v = ViewerState::new(64, 64);
        v.request(false, Rect::new(0, 0, 64, 64));
        assert!(v.build_update(&publish(1, render(64, 64, 0)), &mut Vec::new()));
        let mut p = publish(2, render(64, 64, 0));
        p.damage = Arc::new(vec![DamageEntry {
            first: 2,
            last: 2,
            rects: vec![Rect::new(0, 0, 12, 19), Rect::new(30, 30, 4, 4)],
            moves: Vec::new(),
        }]);
        let mut out = Vec::new();
        v.request(true, Rect::new(0, 0, 1, 1));
        assert!(v.build_update(&p, &mut out));
        for _ in 0..3 {
            out.clear();
            v.request(true, Rect::new(0, 0, 1, 1));
            assert!(!v.build_update(&p, &mut out), "answered again");
            v.cancel_request();
        }
    }
}
