//! X11 screen source (x11rb, pure Rust): MIT-SHM grabs (plain GetImage when
//! SHM is unavailable), DAMAGE for change notification (polling when it is
//! missing), XFixes for the cursor image, RandR for size changes. One X
//! connection for the life of the source; never a connection per grab.

use super::shm::ShmMapping;
use super::{Capture, CaptureError, CursorShape, ScreenSource};
use crate::framebuffer::pool::FramePool;
use crate::framebuffer::{Frame, Rect};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::ReplyError;
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

/// How often the screen is compared when DAMAGE is not available.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Reading a new cursor image can fail: with the SECURITY extension (on in
/// Xorg and Xvfb) XFIXES GetCursorImage answers BadAccess for a cursor
/// whose creator has disconnected, e.g. the root cursor set by
/// `xsetroot -cursor` in a session script. Try again this often, this many
/// times, then show the plain arrow rather than a stale pointer.
const CURSOR_RETRY: Duration = Duration::from_millis(50);
const CURSOR_ATTEMPTS: u32 = 5;

/// How often the pointer position is read (QueryPointer, one round trip):
/// X reports no motion to a client that does not grab or select it on
/// every window, and x0vncserver polls the same way.
const POINTER_POLL: Duration = Duration::from_millis(25);
/// After the pointer has been still for [`POINTER_STILL`], it is read this
/// often instead (idle CPU; the first move is seen within this).
const POINTER_POLL_IDLE: Duration = Duration::from_millis(100);
const POINTER_STILL: Duration = Duration::from_secs(1);

/// How often the RandR monitors are re-read: X sends no event when a
/// monitor is defined, moved or deleted (`xrandr --setmonitor`), only for
/// size changes.
const LAYOUT_POLL: Duration = Duration::from_secs(1);
/// Grabs of a damaged area in a row that found nothing changed, after which
/// it counts as repainted with the same pixels (an application redrawing
/// unchanged content every frame)...
const REPAINTS_AFTER: u32 = 3;
/// ...and damage inside it is grabbed at most this often, until a grab
/// finds a change. Nothing is lost (the damage waits, it is not dropped);
/// the first change inside such an area reaches viewers up to this late.
const REPAINT_GRAB_EVERY: Duration = Duration::from_millis(50);

/// Where an application keeps repainting the same pixels: grabbing that
/// area at the damage's rate costs the X server's copy and a comparison
/// per frame for nothing (x11vnc avoids it by not trusting damage at all).
#[derive(Debug, Default)]
struct Repaints {
    /// The area grabbed without change, and how many times in a row.
    area: Rect,
    streak: u32,
    last_grab: Option<Instant>,
}

impl Repaints {
    /// How long damage whose bounding box is `bb` may wait before it is
    /// grabbed (`None`: grab now).
    fn wait(&self, bb: Rect, now: Instant) -> Option<Duration> {
        if self.streak < REPAINTS_AFTER || !self.area.contains(&bb) {
            return None;
        }
        let since = now.saturating_duration_since(self.last_grab?);
        (since < REPAINT_GRAB_EVERY).then(|| REPAINT_GRAB_EVERY - since)
    }

    /// Damage with bounding box `bb` was grabbed; `changed`: it found a change.
    fn grabbed(&mut self, bb: Rect, changed: bool, now: Instant) {
        self.last_grab = Some(now);
        if changed {
            self.streak = 0;
        } else if self.streak > 0 && self.area.contains(&bb) {
            self.streak += 1;
        } else {
            self.area = bb;
            self.streak = 1;
        }
    }
}

/// Resynchronisations in a row (no successful capture in between) after
/// which X errors are no longer blamed on a reconfiguration: the capture
/// gives up with [`CaptureError::Failed`].
const MAX_RESYNCS_IN_A_ROW: u32 = 20;

/// A failed request: a lost connection is fatal ([`CaptureError::Gone`]);
/// an X error answer (BadMatch for a grab outside a screen that just
/// shrank, a monitor that vanished) is [`CaptureError::Reconfigured`].
fn xerr(e: impl Into<ReplyError>) -> CaptureError {
    match e.into() {
        ReplyError::X11Error(x) => CaptureError::Reconfigured(format!(
            "X error {:?} for {}",
            x.error_kind,
            x.request_name.unwrap_or("a request")
        )),
        ReplyError::ConnectionError(c) => CaptureError::Gone(format!("X server connection: {c}")),
    }
}

/// The connection itself failed (poll on its socket).
fn lost(e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Gone(format!("X server connection: {e}"))
}

struct Shm {
    seg: shm::Seg,
    map: ShmMapping,
}

pub struct X11Source {
    conn: RustConnection,
    display: String,
    root: Window,
    width: u16,
    height: u16,
    shm: Option<Shm>,
    damage: Option<damage::Damage>,
    region: Option<xfixes::Region>,
    cursor_events: bool,
    /// The frames handed out and the one being grabbed into: buffers no
    /// viewer holds any more are reused, brought up to date by copying
    /// only what changed since (framebuffer/pool.rs).
    pool: FramePool,
    have_frame: bool,
    /// Damage seen but not yet captured (frame coordinates).
    dirty: Vec<Rect>,
    resized: bool,
    /// Grab the whole served area next time (after a resynchronisation).
    full_grab: bool,
    /// Resynchronisations since the last successful capture.
    resyncs: u32,
    /// `--monitor N`: serve only that RandR monitor.
    monitor: Option<usize>,
    /// The part of the root window served (the whole root, or one monitor).
    crop: Rect,
    /// Monitors inside the served area (frame coordinates); empty: one screen.
    screens: Vec<Rect>,
    layout_changed: bool,
    /// Where the served area starts on the root window, for input: x << 16 | y.
    origin: Arc<AtomicU32>,
    cursor_changed: bool,
    /// After a failed cursor read: when to try again, and how often it failed.
    cursor_retry_at: Option<Instant>,
    cursor_failures: u32,
    last_poll: Instant,
    last_layout_check: Instant,
    /// The pointer's hotspot in frame coordinates (`None`: off the served
    /// area or unknown), when it was last read, and whether it moved since
    /// the last capture.
    pointer: Option<(u16, u16)>,
    last_pointer_poll: Instant,
    last_pointer_move: Instant,
    pointer_moved: bool,
    /// The lock keys (rfbproto LED State bits), read with the pointer, and
    /// whether they changed since the last capture.
    leds: Option<u8>,
    leds_changed: bool,
    /// In [`ScreenSource::idle`]: damage notifications are only noted.
    idle: bool,
    /// A damage notification came while idle: fetch the damage first.
    damage_unread: bool,
    /// Read the pointer and the lock keys at the next capture, whatever
    /// the polling interval says (set while idle).
    poll_due: bool,
    repaints: Repaints,
}

impl X11Source {
    /// Connect to `display` (e.g. ":0"; `None`: $DISPLAY) and serve the
    /// whole screen, or only RandR monitor `monitor` (0-based).
    pub fn connect(
        display: Option<&str>,
        monitor: Option<usize>,
    ) -> Result<X11Source, CaptureError> {
        let (conn, screen_num) = RustConnection::connect(display).map_err(|e| {
            CaptureError::Gone(format!(
                "cannot open X display {}: {e}",
                display.unwrap_or("$DISPLAY")
            ))
        })?;
        let screen = &conn.setup().roots[screen_num];
        let root = screen.root;
        let (width, height) = (screen.width_in_pixels, screen.height_in_pixels);
        check_pixel_layout(&conn, screen)?;
        let display = display
            .map(str::to_owned)
            .or_else(|| std::env::var("DISPLAY").ok())
            .unwrap_or_default();

        let mut src = X11Source {
            conn,
            display,
            root,
            width,
            height,
            shm: None,
            damage: None,
            region: None,
            cursor_events: false,
            pool: FramePool::new(width, height),
            have_frame: false,
            dirty: Vec::new(),
            resized: false,
            full_grab: true,
            resyncs: 0,
            cursor_changed: true,
            cursor_retry_at: None,
            cursor_failures: 0,
            last_poll: Instant::now(),
            last_layout_check: Instant::now(),
            pointer: None,
            last_pointer_poll: Instant::now(),
            last_pointer_move: Instant::now(),
            pointer_moved: false,
            leds: None,
            leds_changed: false,
            idle: false,
            damage_unread: false,
            poll_due: false,
            repaints: Repaints::default(),
            monitor,
            crop: Rect::new(0, 0, width, height),
            screens: Vec::new(),
            layout_changed: true,
            origin: Arc::new(AtomicU32::new(0)),
        };
        src.setup_shm(true);
        src.setup_damage();
        src.setup_cursor();
        src.setup_randr();
        src.refresh_layout()?;
        src.pool.resize(src.crop.w, src.crop.h);
        src.conn.flush().map_err(xerr)?;
        info!(
            display = %src.display,
            width = src.crop.w,
            height = src.crop.h,
            monitors = src.screens.len().max(1),
            shm = src.shm.is_some(),
            damage = src.damage.is_some(),
            cursor = src.cursor_events,
            "X11 capture ready ({} grabs, {})",
            if src.shm.is_some() { "MIT-SHM" } else { "plain GetImage" },
            if src.damage.is_some() { "DAMAGE notifications" } else { "polling" }
        );
        Ok(src)
    }

    fn has_ext(&self, name: &'static str) -> bool {
        matches!(self.conn.extension_information(name), Ok(Some(_)))
    }

    /// (Re)create the shared-memory segment for the root window's size.
    /// `first`: at start, when a missing extension is worth a warning (not
    /// again on every resize).
    fn setup_shm(&mut self, first: bool) {
        self.shm = None;
        if !self.has_ext(shm::X11_EXTENSION_NAME) {
            if first {
                warn!("MIT-SHM not available (remote X?): using plain GetImage");
            }
            return;
        }
        let r = (|| -> Result<Shm, Box<dyn std::error::Error>> {
            let v = self.conn.shm_query_version()?.reply()?;
            if (v.major_version, v.minor_version) < (1, 2) {
                return Err("MIT-SHM older than 1.2 (no fd passing)".into());
            }
            // A band of rows, not the whole screen: grabs go through it
            // band by band (8 MB less resident at 1080p, for a few more
            // round trips on a full grab).
            let len = self.width as usize * SHM_ROWS.min(self.height) as usize * 4;
            let map = ShmMapping::new(len.max(4))?;
            let seg = self.conn.generate_id()?;
            // read_only = false: the X server must be allowed to write the image into it.
            self.conn
                .shm_attach_fd(seg, map.dup_fd()?, false)?
                .check()?;
            Ok(Shm { seg, map })
        })();
        match r {
            Ok(s) => self.shm = Some(s),
            Err(e) => warn!(error = %e, "MIT-SHM unusable: using plain GetImage"),
        }
    }

    fn setup_damage(&mut self) {
        if !self.has_ext(damage::X11_EXTENSION_NAME) || !self.has_ext(xfixes::X11_EXTENSION_NAME) {
            warn!("DAMAGE or XFIXES missing: polling the screen every {POLL_INTERVAL:?}");
            return;
        }
        let r = (|| -> Result<(damage::Damage, xfixes::Region), Box<dyn std::error::Error>> {
            self.conn.xfixes_query_version(5, 0)?.reply()?;
            self.conn.damage_query_version(1, 1)?.reply()?;
            let d = self.conn.generate_id()?;
            self.conn
                .damage_create(d, self.root, damage::ReportLevel::NON_EMPTY)?
                .check()?;
            let region = self.conn.generate_id()?;
            self.conn.xfixes_create_region(region, &[])?.check()?;
            Ok((d, region))
        })();
        match r {
            Ok((d, region)) => {
                self.damage = Some(d);
                self.region = Some(region);
            }
            Err(e) => warn!(error = %e, "DAMAGE unusable: polling"),
        }
    }

    fn setup_cursor(&mut self) {
        if !self.has_ext(xfixes::X11_EXTENSION_NAME) {
            return;
        }
        let ok = self
            .conn
            .xfixes_query_version(5, 0)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some()
            && self
                .conn
                .xfixes_select_cursor_input(self.root, xfixes::CursorNotifyMask::DISPLAY_CURSOR)
                .ok()
                .and_then(|c| c.check().ok())
                .is_some();
        self.cursor_events = ok;
    }

    fn setup_randr(&mut self) {
        if !self.has_ext(randr::X11_EXTENSION_NAME) {
            return;
        }
        let _ = self
            .conn
            .randr_query_version(1, 5)
            .ok()
            .and_then(|c| c.reply().ok());
        if let Ok(c) = self
            .conn
            .randr_select_input(self.root, randr::NotifyMask::SCREEN_CHANGE)
        {
            let _ = c.check();
        }
    }

    /// Handle one X event.
    fn on_event(&mut self, ev: Event) -> Result<(), CaptureError> {
        match ev {
            // With ReportLevel NON_EMPTY no other notify comes until the
            // damage is subtracted: while idle it stays in the X server
            // (which merges it) and is fetched at the next capture.
            Event::DamageNotify(_) if self.idle => self.damage_unread = true,
            Event::DamageNotify(_) => self.take_damage()?,
            Event::XfixesCursorNotify(_) => {
                self.cursor_changed = true;
                self.cursor_retry_at = None;
                self.cursor_failures = 0;
            }
            Event::RandrScreenChangeNotify(_) | Event::ConfigureNotify(_) => self.check_size()?,
            Event::Error(e) => debug!(?e, "X error event"),
            _ => {}
        }
        Ok(())
    }

    fn check_size(&mut self) -> Result<(), CaptureError> {
        let g = self
            .conn
            .get_geometry(self.root)
            .map_err(xerr)?
            .reply()
            .map_err(xerr)?;
        if (g.width, g.height) != (self.width, self.height) {
            info!(width = g.width, height = g.height, "X screen resized");
            self.width = g.width;
            self.height = g.height;
            if let Some(s) = self.shm.take() {
                let _ = self.conn.shm_detach(s.seg);
            }
            self.setup_shm(false);
        }
        let crop = self.crop;
        self.refresh_layout()?;
        if self.crop != crop || self.pool.size() != (self.crop.w, self.crop.h) {
            self.pool.resize(self.crop.w, self.crop.h);
            self.resized = true;
        }
        if self.resized {
            // Damage seen so far is in the old frame's coordinates; the
            // full grab that follows a resize covers everything anyway.
            self.dirty.clear();
        }
        Ok(())
    }

    /// After an X error: re-read the geometry and the monitors, forget the
    /// pending damage and grab everything next time.
    fn resync(&mut self, why: &CaptureError) -> Result<(), CaptureError> {
        self.resyncs += 1;
        if self.resyncs > MAX_RESYNCS_IN_A_ROW {
            return Err(CaptureError::Failed(format!(
                "X keeps refusing the capture after {MAX_RESYNCS_IN_A_ROW} resynchronisations: {why}"
            )));
        }
        info!(error = %why, "X screen changed under the capture; resynchronising");
        self.dirty.clear();
        self.full_grab = true;
        // A grab cut short may have written rows it never published; the
        // full grab compares with the newest frame, so they must go.
        self.pool.discard_work();
        match self.check_size() {
            Ok(()) => Ok(()),
            // Still moving: the next round tries again.
            Err(CaptureError::Reconfigured(e)) => {
                debug!(error = %e, "geometry not readable yet");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Re-read the RandR monitors: what is served and the screen layout.
    fn refresh_layout(&mut self) -> Result<(), CaptureError> {
        let root = Rect::new(0, 0, self.width, self.height);
        let monitors: Vec<Rect> = if self.has_ext(randr::X11_EXTENSION_NAME) {
            match self
                .conn
                .randr_get_monitors(self.root, true)
                .map(|c| c.reply())
            {
                Ok(Ok(r)) => r
                    .monitors
                    .iter()
                    .map(|m| {
                        Rect::new(m.x.max(0) as u16, m.y.max(0) as u16, m.width, m.height)
                            .intersect(&root)
                    })
                    .filter(|r| !r.is_empty())
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let (crop, screens) = match self.monitor {
            Some(n) => match monitors.get(n) {
                Some(m) => (*m, Vec::new()),
                None if !self.have_frame => {
                    return Err(CaptureError::Failed(format!(
                        "monitor {n} does not exist (the X screen has {} RandR monitors, numbered from 0)",
                        monitors.len()
                    )))
                }
                // Gone while serving: keep to the old area (what is on
                // the screen there now), never widen to other monitors.
                None => {
                    let mut keep = self.crop.intersect(&root);
                    if keep.is_empty() {
                        keep = Rect::new(0, 0, self.crop.w.min(root.w), self.crop.h.min(root.h));
                    }
                    if keep != self.crop {
                        warn!(monitor = n, "the served monitor is gone; serving its old area");
                    }
                    (keep, Vec::new())
                }
            },
            None if monitors.len() > 1 => (root, monitors),
            None => (root, Vec::new()),
        };
        if crop != self.crop || screens != self.screens {
            self.layout_changed = true;
        }
        self.crop = crop;
        self.screens = screens;
        self.origin
            .store((crop.x as u32) << 16 | crop.y as u32, Ordering::Relaxed);
        Ok(())
    }

    /// Where the served area starts on the X screen (`x << 16 | y`), kept up
    /// to date; input coordinates from viewers are offset by it.
    pub fn input_origin(&self) -> Arc<AtomicU32> {
        self.origin.clone()
    }

    /// Fetch and clear the damage the X server accumulated.
    fn take_damage(&mut self) -> Result<(), CaptureError> {
        self.damage_unread = false;
        if let (Some(d), Some(region)) = (self.damage, self.region) {
            self.conn
                .damage_subtract(d, x11rb::NONE, region)
                .map_err(xerr)?;
            let rects = self
                .conn
                .xfixes_fetch_region(region)
                .map_err(xerr)?
                .reply()
                .map_err(xerr)?;
            let crop = self.crop;
            for r in rects.rectangles {
                let r = Rect::new(r.x.max(0) as u16, r.y.max(0) as u16, r.width, r.height)
                    .intersect(&crop);
                if !r.is_empty() {
                    self.dirty
                        .push(Rect::new(r.x - crop.x, r.y - crop.y, r.w, r.h));
                }
            }
        }
        Ok(())
    }

    /// Drain queued events without blocking.
    fn drain_events(&mut self) -> Result<(), CaptureError> {
        while let Some(ev) = self.conn.poll_for_event().map_err(lost)? {
            self.on_event(ev)?;
        }
        Ok(())
    }

    /// Wait until the X connection has something to read, at most `d`.
    /// Returns whether it became readable.
    fn wait_readable(&self, d: Duration) -> Result<bool, CaptureError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        use std::os::fd::AsFd;
        let fd = self.conn.stream().as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as i64,
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(lost(e)),
        }
    }

    /// The served area's bounds in frame coordinates.
    fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.crop.w, self.crop.h)
    }

    /// Grab `r` of the root window into the pool's work frame, writing only
    /// the rows that differ from the newest frame: a redraw of the same
    /// pixels (damage without change) costs the comparison, no copy and no
    /// new frame. Returns the bounding box of the rows that changed (empty:
    /// none did), or `None` when there was no frame to compare with and
    /// all of `r` was written.
    fn grab(&mut self, r: Rect) -> Result<Option<Rect>, CaptureError> {
        // Never past the frame, whatever damage said.
        let r = r.intersect(&self.bounds());
        if r.is_empty() {
            return Ok(Some(Rect::default()));
        }
        super::note_grab();
        let newest = self
            .pool
            .newest()
            .filter(|n| (n.width, n.height) == (self.crop.w, self.crop.h))
            .cloned();
        let (rx, ry) = ((r.x + self.crop.x) as i16, (r.y + self.crop.y) as i16);
        let mut changed = Rect::default();
        if let Some(s) = &self.shm {
            let rows = (s.map.bytes().len() / (r.w as usize * 4)).min(r.h as usize) as u16;
            if rows == 0 {
                return Err(CaptureError::Reconfigured(
                    "the shared-memory segment is narrower than the grab".into(),
                ));
            }
            let mut y = 0;
            while y < r.h {
                let h = rows.min(r.h - y);
                self.conn
                    .shm_get_image(
                        self.root,
                        rx,
                        ry + y as i16,
                        r.w,
                        h,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        s.seg,
                        0,
                    )
                    .map_err(xerr)?
                    .reply()
                    .map_err(xerr)?;
                let band = Rect::new(r.x, r.y + y, r.w, h);
                let bytes = &s.map.bytes()[..band.area() * 4];
                let c = take_rows(&mut self.pool, newest.as_deref(), band, bytes);
                changed = changed.union(&c);
                y += h;
            }
        } else {
            let img = self
                .conn
                .get_image(ImageFormat::Z_PIXMAP, self.root, rx, ry, r.w, r.h, !0)
                .map_err(xerr)?
                .reply()
                .map_err(xerr)?;
            if img.data.len() < r.area() * 4 {
                return Err(CaptureError::Failed("short GetImage reply".into()));
            }
            changed = take_rows(&mut self.pool, newest.as_deref(), r, &img.data);
        }
        Ok(newest.is_some().then_some(changed))
    }

    /// The current pointer image; `Ok(None)` when it is unusable (empty, or
    /// fewer pixels than its size says), `Err` when the X server refused
    /// to tell. Images larger than [`MAX_CURSOR_EDGE`] (huge themed
    /// cursors) are cut to that size around the hotspot.
    ///
    /// [`MAX_CURSOR_EDGE`]: crate::rfb::limits::MAX_CURSOR_EDGE
    fn cursor_image(&self) -> Result<Option<CursorShape>, String> {
        let c = self
            .conn
            .xfixes_get_cursor_image()
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        Ok(cursor_from_image(
            c.width,
            c.height,
            c.xhot,
            c.yhot,
            &c.cursor_image,
        ))
    }

    /// Read the new cursor image if one is due. A failed read is retried
    /// (a dropped change would leave viewers with a stale pointer).
    fn take_cursor(&mut self) -> Option<CursorShape> {
        if !self.cursor_events {
            self.cursor_changed = false;
            return None;
        }
        match self.cursor_image() {
            Ok(c) => {
                self.cursor_changed = false;
                self.cursor_retry_at = None;
                self.cursor_failures = 0;
                c
            }
            Err(e) => {
                self.cursor_failures += 1;
                if self.cursor_failures >= CURSOR_ATTEMPTS {
                    debug!(error = %e, "cannot read the cursor image; showing an arrow");
                    self.cursor_changed = false;
                    self.cursor_retry_at = None;
                    self.cursor_failures = 0;
                    Some(CursorShape::arrow())
                } else {
                    debug!(error = %e, "cursor image not readable yet; retrying");
                    self.cursor_retry_at = Some(Instant::now() + CURSOR_RETRY);
                    None
                }
            }
        }
    }

    /// Read where the pointer is, if it is time to; marks a move.
    fn pointer_interval(&self) -> Duration {
        if self.last_pointer_move.elapsed() < POINTER_STILL {
            POINTER_POLL
        } else {
            POINTER_POLL_IDLE
        }
    }

    fn poll_pointer(&mut self) -> Result<(), CaptureError> {
        let due = std::mem::take(&mut self.poll_due);
        if !due && self.last_pointer_poll.elapsed() < self.pointer_interval() && self.have_frame {
            return Ok(());
        }
        self.last_pointer_poll = Instant::now();
        // Both requests go out before either reply is awaited: one round trip.
        let pointer = self.conn.query_pointer(self.root).map_err(xerr)?;
        let keyboard = self.conn.get_keyboard_control().map_err(xerr)?;
        let p = pointer.reply().map_err(xerr)?;
        let leds = Some(rfb_leds(keyboard.reply().map_err(xerr)?.led_mask));
        if leds != self.leds {
            self.leds = leds;
            self.leds_changed = true;
        }
        let crop = self.crop;
        let (x, y) = (i32::from(p.root_x), i32::from(p.root_y));
        let inside = p.same_screen
            && x >= i32::from(crop.x)
            && y >= i32::from(crop.y)
            && x < i32::from(crop.x) + i32::from(crop.w)
            && y < i32::from(crop.y) + i32::from(crop.h);
        let pos = inside.then(|| {
            (
                (x - i32::from(crop.x)) as u16,
                (y - i32::from(crop.y)) as u16,
            )
        });
        if pos != self.pointer {
            self.pointer = pos;
            self.pointer_moved = true;
            self.last_pointer_move = Instant::now();
        }
        Ok(())
    }

    fn cursor_due(&self) -> bool {
        self.cursor_changed && self.cursor_retry_at.is_none_or(|t| Instant::now() >= t)
    }
}

/// Copy a packed 32-bit ZPixmap image of `r` into the frame at `r`.
/// Rows the shared-memory segment holds (at the root window's width).
const SHM_ROWS: u16 = 64;

/// Rows of `band` (its pixels `bytes`, 4 bytes each, X's BGRX order) that
/// differ from `newest` are written into `pool`'s work frame (all of them
/// when there is no `newest`); returns their bounding box.
fn take_rows(pool: &mut FramePool, newest: Option<&Frame>, band: Rect, bytes: &[u8]) -> Rect {
    let w = band.w as usize;
    let mut rows: Option<(u16, u16)> = None;
    for (i, src) in bytes.chunks_exact(w * 4).take(band.h as usize).enumerate() {
        let y = band.y + i as u16;
        if newest.is_some_and(|n| same_row(src, n.row(y, band.x, band.w))) {
            continue;
        }
        let row = pool.work_row(y, band.x, band.w);
        copy_row(&mut row[band.x as usize..band.x as usize + w], src);
        rows = Some(rows.map_or((y, y), |(a, _)| (a, y)));
    }
    let Some((first, last)) = rows else {
        return Rect::default();
    };
    Rect::new(band.x, first, band.w, last - first + 1)
}

/// Whether X's BGRX pixels `src` show the row `old` (`0x00RRGGBB`); the
/// pad byte is ignored. Compared 16 pixels at a time, so the loop
/// vectorises and a changed row stops early.
fn same_row(src: &[u8], old: &[u32]) -> bool {
    src.len() == old.len() * 4
        && src.chunks(64).zip(old.chunks(16)).all(|(s, o)| {
            s.chunks_exact(4).zip(o).fold(0, |acc, (p, &q)| {
                acc | (u32::from_le_bytes([p[0], p[1], p[2], p[3]]) ^ q)
            }) & 0x00ff_ffff
                == 0
        })
}

/// X's BGRX pixels `src` into `dst` as `0x00RRGGBB`: a whole little-endian
/// word, then the pad byte masked (one load and one AND per pixel).
fn copy_row(dst: &mut [u32], src: &[u8]) {
    for (d, px) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = u32::from_le_bytes([px[0], px[1], px[2], px[3]]) & 0x00ff_ffff;
    }
}

/// A cursor image from XFixes (premultiplied ARGB, `w * h` pixels), cut
/// to at most [`MAX_CURSOR_EDGE`] on each side around the hotspot.
///
/// [`MAX_CURSOR_EDGE`]: crate::rfb::limits::MAX_CURSOR_EDGE
fn cursor_from_image(w: u16, h: u16, hot_x: u16, hot_y: u16, px: &[u32]) -> Option<CursorShape> {
    if w == 0 || h == 0 || px.len() < w as usize * h as usize {
        return None;
    }
    let max = crate::rfb::limits::MAX_CURSOR_EDGE;
    let (hot_x, hot_y) = (hot_x.min(w - 1), hot_y.min(h - 1));
    // The window's start on each axis: keep the hotspot inside it.
    let start = |len: u16, hot: u16| -> u16 {
        if len <= max {
            0
        } else {
            hot.saturating_sub(max / 2).min(len - max)
        }
    };
    let (x0, y0) = (start(w, hot_x), start(h, hot_y));
    let (cw, ch) = (w.min(max), h.min(max));
    let mut pixels = Vec::with_capacity(cw as usize * ch as usize);
    for y in y0..y0 + ch {
        let row = y as usize * w as usize;
        let from = row + x0 as usize;
        pixels.extend(
            px[from..from + cw as usize]
                .iter()
                .map(|&p| unpremultiply(p)),
        );
    }
    Some(CursorShape {
        width: cw,
        height: ch,
        hot_x: hot_x - x0,
        hot_y: hot_y - y0,
        pixels,
    })
}

/// XFixes gives premultiplied ARGB; viewers want straight colour.
fn unpremultiply(p: u32) -> u32 {
    let a = p >> 24;
    if a == 0 || a == 255 {
        return p;
    }
    let ch = |s: u32| (((p >> s) & 0xff) * 255 / a).min(255);
    (a << 24) | (ch(16) << 16) | (ch(8) << 8) | ch(0)
}

/// The grab path assumes a 24/32-bit little-endian TrueColor root visual with
/// red in bits 16-23, as every current X server (Xorg, Xvfb, Xwayland) has.
fn check_pixel_layout(
    conn: &RustConnection,
    screen: &x11rb::protocol::xproto::Screen,
) -> Result<(), CaptureError> {
    let setup = conn.setup();
    let bpp = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == screen.root_depth)
        .map(|f| f.bits_per_pixel);
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual);
    let ok = screen.root_depth == 24
        && bpp == Some(32)
        && setup.image_byte_order == x11rb::protocol::xproto::ImageOrder::LSB_FIRST
        && visual.is_some_and(|v| {
            v.red_mask == 0xff0000 && v.green_mask == 0xff00 && v.blue_mask == 0xff
        });
    if ok {
        Ok(())
    } else {
        Err(CaptureError::Failed(format!(
            "unsupported X screen format (depth {}, {:?} bpp); ticketvnc needs depth 24 at 32 bpp (start Xvfb with -screen 0 WxHx24)",
            screen.root_depth, bpp
        )))
    }
}

impl ScreenSource for X11Source {
    fn name(&self) -> String {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        format!("{host}{}", self.display)
    }

    fn refresh(&mut self) {
        self.poll_due = true;
    }

    fn idle(&mut self) -> Result<(), CaptureError> {
        // Events are taken in (resizes, cursor changes) without a round
        // trip; damage stays in the X server until the next capture.
        self.idle = true;
        let r = self.drain_events();
        self.idle = false;
        // The pointer and lock keys are read at once when capturing resumes.
        self.poll_due = true;
        match r {
            Err(e @ CaptureError::Reconfigured(_)) => self.resync(&e),
            r => r,
        }
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.next_until(deadline) {
                Err(e @ CaptureError::Reconfigured(_)) => self.resync(&e)?,
                Ok(Some(c)) => {
                    self.resyncs = 0;
                    return Ok(Some(c));
                }
                r => return r,
            }
        }
    }
}

impl X11Source {
    /// One attempt at [`ScreenSource::next`]: any X error ends it.
    fn next_until(&mut self, deadline: Instant) -> Result<Option<Capture>, CaptureError> {
        loop {
            self.drain_events()?;
            if self.damage_unread {
                self.take_damage()?;
            }
            if self.last_layout_check.elapsed() >= LAYOUT_POLL {
                self.last_layout_check = Instant::now();
                self.check_size()?;
            }
            let full = !self.have_frame
                || self.full_grab
                || self.resized
                || self.damage.is_none() && { self.last_poll.elapsed() >= POLL_INTERVAL };
            let cursor_due = self.cursor_due();
            self.poll_pointer()?;
            // A lock key toggled is published like a pointer move.
            let leds_changed = std::mem::take(&mut self.leds_changed);
            let pointer_moved = std::mem::take(&mut self.pointer_moved) || leds_changed;
            // One grab of the bounding box is cheaper than many small round trips.
            let bb = self.dirty.iter().fold(Rect::default(), |a, r| a.union(r));
            let repaint_wait = (!self.dirty.is_empty())
                .then(|| self.repaints.wait(bb, Instant::now()))
                .flatten();
            let grab_dirty = !self.dirty.is_empty() && repaint_wait.is_none();
            if full || grab_dirty || cursor_due || pointer_moved {
                // Where the frame differs from the last one: what the grab
                // found changed, which is all that was grabbed, not only
                // what was reported (pixels drawn after the damage was
                // fetched but before the grab are in it too, and their own
                // report comes later, when the frame already has them).
                let damage = if full {
                    self.last_poll = Instant::now();
                    let all = self.bounds();
                    let changed = self.grab(all)?;
                    // Everything is fresh: older damage is covered.
                    self.dirty.clear();
                    // No frame to compare with: unknown (the whole frame).
                    changed.map(|c| if c.is_empty() { Vec::new() } else { vec![c] })
                } else if grab_dirty {
                    self.dirty.clear();
                    let changed = self
                        .grab(bb)?
                        .unwrap_or_else(|| bb.intersect(&self.bounds()));
                    self.repaints
                        .grabbed(bb, !changed.is_empty(), Instant::now());
                    Some(if changed.is_empty() {
                        Vec::new()
                    } else {
                        vec![changed]
                    })
                } else {
                    // Damage that waits (a repainted area): the last frame.
                    Some(Vec::new())
                };
                let cursor = if cursor_due { self.take_cursor() } else { None };
                let first = !self.have_frame;
                self.have_frame = true;
                self.resized = false;
                self.full_grab = false;
                let screens =
                    std::mem::take(&mut self.layout_changed).then(|| self.screens.clone());
                // Damage without change (a redraw of the same pixels):
                // nothing to publish.
                if damage.as_ref().is_some_and(|d| d.is_empty())
                    && cursor.is_none()
                    && !pointer_moved
                    && !first
                    && screens.is_none()
                {
                    continue;
                }
                // Nothing grabbed (only the pointer moved): the last frame.
                let frame = match self.pool.newest() {
                    Some(f) if damage.as_ref().is_some_and(|d| d.is_empty()) => f.clone(),
                    _ => self.pool.publish(),
                };
                return Ok(Some(Capture {
                    frame,
                    damage,
                    moves: Vec::new(),
                    cursor,
                    screens,
                    pointer: self.pointer,
                    leds: self.leds,
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut wait = deadline - now;
            if self.damage.is_none() {
                wait = wait.min(POLL_INTERVAL);
            }
            wait = wait.min(LAYOUT_POLL.saturating_sub(self.last_layout_check.elapsed()));
            wait = wait.min(
                self.pointer_interval()
                    .saturating_sub(self.last_pointer_poll.elapsed()),
            );
            if let (true, Some(t)) = (self.cursor_changed, self.cursor_retry_at) {
                wait = wait.min(t.saturating_duration_since(now));
            }
            if let Some(w) = repaint_wait {
                wait = wait.min(w);
            }
            if self.wait_readable(wait)? {
                match self.conn.poll_for_event().map_err(lost)? {
                    Some(ev) => self.on_event(ev)?,
                    // Readable but no event: make sure the server is still
                    // there (a dead one makes this round trip fail).
                    None => {
                        self.conn
                            .get_input_focus()
                            .map_err(xerr)?
                            .reply()
                            .map_err(xerr)?;
                    }
                }
            }
        }
    }
}

/// The core keyboard LED mask (GetKeyboardControl) in rfbproto's LED State
/// order. X numbers the LEDs as a PC keyboard does and XKB's default
/// indicator map (xkeyboard-config `keycodes/evdev`, `indicator 1..3`)
/// drives them from the locks: LED 1 (bit 0) Caps Lock, LED 2 Num Lock,
/// LED 3 Scroll Lock; rfbproto wants bit 0 Scroll, bit 1 Num, bit 2 Caps.
fn rfb_leds(led_mask: u32) -> u8 {
    let caps = led_mask & 1 != 0;
    let num = led_mask & 2 != 0;
    let scroll = led_mask & 4 != 0;
    u8::from(scroll) | u8::from(num) << 1 | u8::from(caps) << 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Child, Command, Stdio};

    /// A private Xvfb on a display it picks itself, killed by PID on drop.
    struct Xvfb(Child, String);

    impl Xvfb {
        fn start(w: u16, h: u16, extra: &[&str]) -> Xvfb {
            let mut c = Command::new("Xvfb")
                .args(["-displayfd", "1", "-screen", "0", &format!("{w}x{h}x24")])
                .args(["-noreset", "-nolisten", "tcp", "-auth", "/dev/null"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run Xvfb (install the xvfb package)");
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let d = format!(":{}", line.trim());
            Xvfb(c, d)
        }
        fn xrandr_fb(&self, w: u16, h: u16) {
            let _ = Command::new("xrandr")
                .args(["-display", &self.1, "--fb", &format!("{w}x{h}")])
                .stderr(Stdio::null())
                .status();
        }
    }

    impl Drop for Xvfb {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The screen shrinks between the capture's last look at the events
    /// and its next grab (simulated by forgetting the queued events and
    /// keeping the old geometry): the grab is answered with BadMatch.
    /// Before issue 10's fix every X error was "screen source is gone" and
    /// `next` failed; now the capture resynchronises and returns a frame of
    /// the new size.
    fn stale_geometry_resyncs(extra: &[&str]) {
        let x = Xvfb::start(640, 480, extra);
        let mut src = X11Source::connect(Some(&x.1), None).expect("connect");
        let first = src
            .next(Duration::from_secs(5))
            .unwrap()
            .expect("first frame");
        assert_eq!((first.frame.width, first.frame.height), (640, 480));
        x.xrandr_fb(320, 200);
        // Wait for the resize to be visible, then drop its events unread.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let g = src.conn.get_geometry(src.root).unwrap().reply().unwrap();
            if (g.width, g.height) == (320, 200) {
                break;
            }
            assert!(Instant::now() < deadline, "Xvfb did not resize");
            std::thread::sleep(Duration::from_millis(20));
        }
        while src.conn.poll_for_event().unwrap().is_some() {}
        src.full_grab = true;
        let c = src
            .next(Duration::from_secs(5))
            .expect("an X error after a resize is not fatal")
            .expect("a frame after resynchronising");
        assert_eq!((c.frame.width, c.frame.height), (320, 200));
        assert_eq!(src.resyncs, 0, "a successful capture resets the count");
    }

    #[test]
    fn huge_cursors_are_cut_around_the_hotspot() {
        // 600x300, each pixel encoding its own coordinates.
        let (w, h) = (600u16, 300u16);
        let px: Vec<u32> = (0..h as u32)
            .flat_map(|y| (0..w as u32).map(move |x| 0xff00_0000 | (y << 10) | x))
            .collect();
        let c = cursor_from_image(w, h, 500, 290, &px).unwrap();
        assert_eq!((c.width, c.height), (256, 256));
        // The hotspot is still the pixel it was.
        let at =
            |c: &CursorShape, x: u16, y: u16| c.pixels[y as usize * c.width as usize + x as usize];
        assert_eq!(at(&c, c.hot_x, c.hot_y), 0xff00_0000 | (290 << 10) | 500);
        let small = cursor_from_image(16, 16, 40, 3, &px[..256]).unwrap();
        assert_eq!(
            (small.width, small.height, small.hot_x, small.hot_y),
            (16, 16, 15, 3)
        );
        // Fewer pixels than the size says, or empty: refused.
        assert!(cursor_from_image(16, 16, 0, 0, &px[..255]).is_none());
        assert!(cursor_from_image(0, 16, 0, 0, &px).is_none());
    }

    #[test]
    fn stale_geometry_resyncs_with_shm() {
        stale_geometry_resyncs(&[]);
    }

    #[test]
    fn stale_geometry_resyncs_without_shm() {
        stale_geometry_resyncs(&["-extension", "MIT-SHM"]);
    }

    #[test]
    fn grabbed_rows_equal_to_the_newest_frame_are_not_written() {
        let bgrx = |px: &[u32], pad: u8| -> Vec<u8> {
            px.iter()
                .flat_map(|p| {
                    let [b, g, r, _] = p.to_le_bytes();
                    [b, g, r, pad]
                })
                .collect()
        };
        // Pad bytes do not count; one pixel anywhere does.
        let row: Vec<u32> = (0..100).map(|i| i * 0x010203).collect();
        assert!(same_row(&bgrx(&row, 0xff), &row));
        let mut other = row.clone();
        other[77] ^= 0x10;
        assert!(!same_row(&bgrx(&other, 0), &row));
        assert!(!same_row(&bgrx(&row[..99], 0), &row));

        let mut pool = FramePool::new(8, 6);
        let mut first = Frame::new(8, 6);
        for (i, p) in first.pixels_mut().enumerate() {
            *p = i as u32 * 0x0101;
        }
        // No newest frame yet: everything is written.
        let band = Rect::new(0, 0, 8, 6);
        assert_eq!(
            take_rows(&mut pool, None, band, &bgrx(&first.to_pixels(), 0)),
            band
        );
        let newest = pool.publish();
        assert_eq!(*newest, first);
        // The same pixels again: nothing written, nothing to publish.
        let same = bgrx(&first.to_pixels(), 0x55);
        assert!(take_rows(&mut pool, Some(&newest), band, &same).is_empty());
        // Rows 2 and 4 change: their bounding box, and the frame has them.
        let mut next = first.clone();
        next[2 * 8 + 1] = 0xabcdef;
        next[4 * 8 + 7] = 0x123456;
        let changed = take_rows(&mut pool, Some(&newest), band, &bgrx(&next.to_pixels(), 0));
        assert_eq!(changed, Rect::new(0, 2, 8, 3));
        assert_eq!(*pool.publish(), next);
    }

    #[test]
    fn repainted_areas_are_grabbed_less_often_until_they_change() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let screen = Rect::new(0, 0, 1920, 1080);
        let mut r = Repaints::default();
        // Unchanged grabs below the streak: damage is grabbed at once.
        for i in 0..REPAINTS_AFTER {
            assert_eq!(r.wait(screen, ms(u64::from(i) * 16)), None);
            r.grabbed(screen, false, ms(u64::from(i) * 16));
        }
        // Now damage inside waits for the rest of REPAINT_GRAB_EVERY...
        let last = ms(u64::from(REPAINTS_AFTER - 1) * 16);
        let glyph = Rect::new(100, 100, 8, 16);
        assert_eq!(
            r.wait(glyph, last + Duration::from_millis(10)),
            Some(REPAINT_GRAB_EVERY - Duration::from_millis(10))
        );
        assert_eq!(r.wait(screen, last + REPAINT_GRAB_EVERY), None);
        // ...damage reaching outside the area does not.
        let beyond = Rect::new(0, 0, 1920, 1081);
        assert_eq!(r.wait(beyond, last), None);
        // A grab that finds a change ends it.
        r.grabbed(screen, true, last + REPAINT_GRAB_EVERY);
        assert_eq!(r.wait(glyph, last + REPAINT_GRAB_EVERY), None);
        // An unchanged grab of another area starts a new streak there.
        let mut r = Repaints::default();
        for i in 0..REPAINTS_AFTER {
            r.grabbed(glyph, false, ms(u64::from(i)));
        }
        r.grabbed(screen, false, ms(10));
        assert_eq!(r.wait(glyph, ms(11)), None);
    }

    #[test]
    fn core_led_mask_to_rfb_bits() {
        assert_eq!(rfb_leds(0), 0);
        assert_eq!(rfb_leds(1), 4); // Caps Lock
        assert_eq!(rfb_leds(2), 2); // Num Lock
        assert_eq!(rfb_leds(4), 1); // Scroll Lock
        assert_eq!(rfb_leds(0xffff_fff8), 0); // other LEDs ignored
    }
}
