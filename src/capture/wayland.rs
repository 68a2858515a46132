//! Wayland screen source for wlroots compositors (sway, Hyprland, river,
//! labwc): `wlr-screencopy-unstable-v1` frames copied into shared memory
//! with `copy_with_damage`, so the compositor itself says what changed and
//! holds the copy back until something did (the Wayland counterpart of
//! X11's DAMAGE). Pure-Rust wire protocol (wayland-client without
//! libwayland); the one mapping of the shared buffer is [`super::shm`].
//!
//! One output is served: `--monitor N` (0-based, in the order the
//! compositor announces its outputs), else the first. An output that goes
//! away is replaced by the next one announced; a mode change arrives as a
//! new buffer size and is published like an X11 resize (a fresh frame, no
//! damage list).

use super::shm::ShmMapping;
use super::wayland_ping::MaybePing;
use super::{Capture, CaptureError, CursorShape, ScreenSource};
use crate::framebuffer::{Frame, Rect};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wayland_client::protocol::{wl_buffer, wl_output, wl_registry, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1 as frame_v1, zwlr_screencopy_manager_v1 as manager_v1,
};

/// Failed copies in a row (no frame in between) after which the capture
/// gives up: the compositor keeps refusing for a reason that does not pass.
const MAX_FAILURES_IN_A_ROW: u32 = 20;
/// The largest buffer a compositor may ask for (16384 x 16384 x 4 bytes):
/// sizes come from another process and feed an allocation.
const MAX_BUFFER_BYTES: usize = 16384 * 16384 * 4;
/// Damage rectangles kept for one frame; beyond that the frame is taken
/// whole (a compositor sends a handful).
const MAX_DAMAGE_RECTS: usize = 4096;

/// What the source and the input sink of one Wayland session share: the
/// served output's size (`w << 16 | h`, for absolute pointer motion). The
/// pointer's position is not shared: the compositor paints the pointer
/// into the frames (see [`dot_cursor`]).
#[derive(Debug)]
pub struct WaylandShared {
    pub output_size: AtomicU32,
    /// The served output's index among the compositor's outputs.
    pub monitor: Option<usize>,
}

impl WaylandShared {
    pub fn new(monitor: Option<usize>) -> Arc<WaylandShared> {
        Arc::new(WaylandShared {
            output_size: AtomicU32::new(0),
            monitor,
        })
    }
}

/// A connection error: the compositor is gone (or closed us for a
/// protocol error, which is as final).
pub(crate) fn gone(e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Gone(format!("Wayland compositor connection: {e}"))
}

/// Send what is queued, then read and dispatch events for at most
/// `timeout` (returns after the first batch).
pub(crate) fn dispatch_for<S>(
    queue: &mut EventQueue<S>,
    state: &mut S,
    timeout: Duration,
) -> Result<(), CaptureError> {
    queue.dispatch_pending(state).map_err(gone)?;
    match queue.flush() {
        Ok(()) => {}
        // The compositor is not reading (it hangs, or is busy): what is
        // queued stays queued for the next flush.
        Err(wayland_client::backend::WaylandError::Io(e))
            if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(gone(e)),
    }
    if let Some(guard) = queue.prepare_read() {
        let fd = guard.connection_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let n = match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => 0,
            Err(e) => return Err(gone(e)),
        };
        if n > 0 {
            match guard.read() {
                Ok(_) => {}
                Err(wayland_client::backend::WaylandError::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(gone(e)),
            }
        }
    }
    queue.dispatch_pending(state).map_err(gone)?;
    Ok(())
}

#[derive(Debug)]
struct OutputInfo {
    global: u32,
    output: wl_output::WlOutput,
    name: String,
    size: (i32, i32),
}

/// The buffer the compositor asked for (`buffer` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BufferSpec {
    format: wl_shm::Format,
    width: u32,
    height: u32,
    stride: u32,
}

#[derive(Debug, Default)]
enum FrameState {
    /// No copy asked for.
    #[default]
    Idle,
    /// capture_output sent; waiting for the buffer description.
    Describing,
    /// The buffer is known: copy it (wayland-client dispatch cannot send
    /// the copy itself, the shm pool lives in the source).
    ReadyToCopy,
    /// copy_with_damage sent.
    Copying,
    Ready,
    Failed,
}

#[derive(Default)]
struct State {
    shm: Option<wl_shm::WlShm>,
    manager: Option<manager_v1::ZwlrScreencopyManagerV1>,
    outputs: Vec<OutputInfo>,
    /// Registry names of outputs removed since the last look.
    removed: Vec<u32>,
    /// An output came or went since the last look.
    outputs_changed: bool,
    /// Buffer formats offered for the current frame.
    offers: Vec<BufferSpec>,
    frame_state: FrameState,
    y_invert: bool,
    damage: Vec<(u32, u32, u32, u32)>,
    /// More damage rectangles than kept: the frame is taken whole.
    damage_all: bool,
}

pub struct WaylandSource {
    /// Held for the life of the source (the queue and proxies refer to it).
    _conn: Connection,
    queue: EventQueue<State>,
    qh: QueueHandle<State>,
    state: State,
    shared: Arc<WaylandShared>,
    /// The registry name of the served output.
    served: Option<u32>,
    frame: Option<frame_v1::ZwlrScreencopyFrameV1>,
    /// The shared-memory buffer the compositor copies into, and its pool.
    buffer: Option<(
        BufferSpec,
        ShmMapping,
        wl_shm_pool::WlShmPool,
        wl_buffer::WlBuffer,
    )>,
    current: Frame,
    have_frame: bool,
    /// The next frame is published whole (first frame, resize, new output).
    full: bool,
    failures: u32,
    cursor_sent: bool,
    published: Option<Arc<Frame>>,
    /// Tells a hung compositor from a still screen (a pending copy looks
    /// the same in both).
    ping: MaybePing,
}

impl WaylandSource {
    /// Connect to the compositor in `$WAYLAND_DISPLAY` (in
    /// `$XDG_RUNTIME_DIR`) and serve output `shared.monitor`.
    pub fn connect(shared: Arc<WaylandShared>) -> Result<WaylandSource, CaptureError> {
        let conn = Connection::connect_to_env().map_err(|e| {
            CaptureError::Gone(format!(
                "cannot connect to the Wayland compositor (WAYLAND_DISPLAY={}): {e}",
                std::env::var("WAYLAND_DISPLAY").unwrap_or_default()
            ))
        })?;
        let mut queue = conn.new_event_queue();
        let qh = queue.handle();
        conn.display().get_registry(&qh, ());
        let mut state = State::default();
        // Globals, then the outputs' descriptions.
        queue.roundtrip(&mut state).map_err(gone)?;
        queue.roundtrip(&mut state).map_err(gone)?;
        if state.manager.is_none() {
            return Err(CaptureError::Failed(
                "the compositor does not offer wlr-screencopy-unstable-v1 (not a wlroots \
                 compositor? GNOME and KDE are not supported yet)"
                    .into(),
            ));
        }
        if state.shm.is_none() {
            return Err(CaptureError::Failed(
                "the compositor offers no wl_shm".into(),
            ));
        }
        let mut src = WaylandSource {
            _conn: conn,
            queue,
            qh,
            state,
            shared,
            served: None,
            frame: None,
            buffer: None,
            current: Frame::new(1, 1),
            have_frame: false,
            full: true,
            failures: 0,
            cursor_sent: false,
            published: None,
            ping: MaybePing::connect(),
        };
        src.choose_output()?;
        Ok(src)
    }

    /// Pick the output to serve (again, after it went away).
    fn choose_output(&mut self) -> Result<(), CaptureError> {
        let list: Vec<String> = self
            .state
            .outputs
            .iter()
            .map(|o| format!("{} {}x{}", o.name, o.size.0, o.size.1))
            .collect();
        let idx = self.shared.monitor.unwrap_or(0);
        match self.state.outputs.get(idx) {
            Some(o) => {
                info!(
                    output = %o.name,
                    width = o.size.0,
                    height = o.size.1,
                    outputs = ?list,
                    "Wayland capture ready (wlr-screencopy, copy_with_damage into shared memory)"
                );
                self.served = Some(o.global);
                self.full = true;
                Ok(())
            }
            // At start a wrong --monitor is the user's mistake; later the
            // output may come back (a monitor plugged in again).
            None if self.shared.monitor.is_some() && !self.have_frame => {
                Err(CaptureError::Failed(format!(
                    "--monitor {idx}: the compositor has {} output(s): {list:?}",
                    self.state.outputs.len()
                )))
            }
            None => {
                warn!(outputs = ?list, "no Wayland output {idx} to capture; waiting for one");
                self.served = None;
                Ok(())
            }
        }
    }

    fn served_output(&self) -> Option<&OutputInfo> {
        let g = self.served?;
        self.state.outputs.iter().find(|o| o.global == g)
    }

    /// Outputs removed: forget the frame in flight if it was ours.
    fn check_outputs(&mut self) -> Result<(), CaptureError> {
        let removed = std::mem::take(&mut self.state.removed);
        if self.served.is_some_and(|g| removed.contains(&g)) {
            info!("the served Wayland output was removed; resynchronising");
            self.drop_frame();
            self.served = None;
        }
        if self.served.is_none() && std::mem::take(&mut self.state.outputs_changed) {
            self.choose_output()?;
        }
        Ok(())
    }

    fn drop_frame(&mut self) {
        if let Some(f) = self.frame.take() {
            f.destroy();
        }
        self.state.frame_state = FrameState::Idle;
        self.state.offers.clear();
        self.state.damage.clear();
    }

    fn request_frame(&mut self) {
        let Some(o) = self.served_output() else {
            return;
        };
        let output = o.output.clone();
        let Some(m) = &self.state.manager else {
            return;
        };
        // The customer's pointer is painted in (overlay_cursor = 1): wlroots
        // tells no client its shape or position, and on an output with a
        // cursor plane it is in no capture otherwise. Viewers get a small
        // dot for their own pointer ([`dot_cursor`]), not a second arrow.
        self.frame = Some(m.capture_output(1, &output, &self.qh, ()));
        self.state.offers.clear();
        self.state.damage.clear();
        self.state.damage_all = false;
        self.state.y_invert = false;
        self.state.frame_state = FrameState::Describing;
    }

    /// Make the shm buffer match the compositor's request and start the copy.
    fn start_copy(&mut self) -> Result<(), CaptureError> {
        let spec = self
            .state
            .offers
            .iter()
            .copied()
            .find(|s| pixel_order(s.format).is_some())
            .ok_or_else(|| {
                CaptureError::Failed(format!(
                    "the compositor offers no 32-bit RGB shared-memory format: {:?}",
                    self.state
                        .offers
                        .iter()
                        .map(|s| s.format)
                        .collect::<Vec<_>>()
                ))
            })?;
        let len = spec.stride as usize * spec.height as usize;
        if spec.width == 0
            || spec.height == 0
            || spec.width > u32::from(crate::rfb::limits::MAX_FRAMEBUFFER_EDGE)
            || spec.height > u32::from(crate::rfb::limits::MAX_FRAMEBUFFER_EDGE)
            || (spec.stride as usize) < spec.width as usize * 4
            || len > MAX_BUFFER_BYTES
        {
            return Err(CaptureError::Failed(format!(
                "the compositor asks for an unusable buffer: {spec:?}"
            )));
        }
        if self.buffer.as_ref().map(|b| b.0) != Some(spec) {
            if let Some((_, _, pool, buf)) = self.buffer.take() {
                buf.destroy();
                pool.destroy();
            }
            let map = ShmMapping::new(len).map_err(|e| CaptureError::Failed(e.to_string()))?;
            let fd = map
                .dup_fd()
                .map_err(|e| CaptureError::Failed(e.to_string()))?;
            let shm = self.state.shm.as_ref().expect("checked at connect");
            let pool = shm.create_pool(fd.as_fd(), len as i32, &self.qh, ());
            let buf = pool.create_buffer(
                0,
                spec.width as i32,
                spec.height as i32,
                spec.stride as i32,
                spec.format,
                &self.qh,
                (),
            );
            self.buffer = Some((spec, map, pool, buf));
        }
        let (w, h) = (spec.width as u16, spec.height as u16);
        if (self.current.width, self.current.height) != (w, h) {
            if self.have_frame {
                info!(width = w, height = h, "Wayland output resized");
            }
            self.current = Frame::new(w, h);
            self.full = true;
        }
        self.shared
            .output_size
            .store(u32::from(w) << 16 | u32::from(h), Ordering::Relaxed);
        let (_, _, _, buf) = self.buffer.as_ref().expect("just made");
        self.frame
            .as_ref()
            .expect("a frame is described")
            .copy_with_damage(buf);
        self.state.frame_state = FrameState::Copying;
        Ok(())
    }

    /// The copy is done: take the damaged rows into `current`.
    fn finish_copy(&mut self) -> Option<Vec<Rect>> {
        let (spec, map, _, _) = self.buffer.as_ref().expect("copying into it");
        let (w, h) = (self.current.width, self.current.height);
        let bounds = self.current.bounds();
        let invert = self.state.y_invert;
        let damage: Vec<Rect> = self
            .state
            .damage
            .drain(..)
            .map(|(x, y, dw, dh)| {
                let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
                let (x, y, dw, dh) = (clamp(x), clamp(y), clamp(dw), clamp(dh));
                let y = if invert {
                    h.saturating_sub(y.saturating_add(dh))
                } else {
                    y
                };
                Rect::new(x, y, dw, dh).intersect(&bounds)
            })
            .filter(|r| !r.is_empty())
            .collect();
        let full = self.full || !self.have_frame || std::mem::take(&mut self.state.damage_all);
        if full {
            debug!("Wayland frame taken whole");
        }
        let rows: Vec<Rect> = if full { vec![bounds] } else { damage.clone() };
        let order = pixel_order(spec.format).expect("checked");
        let bytes = map.bytes();
        for r in &rows {
            for y in r.y..r.y + r.h {
                let src_y = if invert { h - 1 - y } else { y } as usize;
                let line = &bytes[src_y * spec.stride as usize..][..w as usize * 4];
                let dst = self.current.row_mut(y);
                for x in r.x as usize..(r.x + r.w) as usize {
                    let p = &line[x * 4..x * 4 + 4];
                    let v = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                    dst[x] = match order {
                        Order::Xrgb => v & 0x00ff_ffff,
                        Order::Xbgr => (v & 0xff) << 16 | (v & 0xff00) | (v >> 16 & 0xff),
                    };
                }
            }
        }
        self.full = false;
        self.have_frame = true;
        if full {
            None
        } else {
            Some(damage)
        }
    }

    fn next_until(&mut self, deadline: Instant) -> Result<Option<Capture>, CaptureError> {
        loop {
            self.check_outputs()?;
            self.ping.check();
            match self.state.frame_state {
                FrameState::Idle => self.request_frame(),
                FrameState::ReadyToCopy => self.start_copy()?,
                FrameState::Failed => {
                    self.drop_frame();
                    self.failures += 1;
                    if self.failures > MAX_FAILURES_IN_A_ROW {
                        return Err(CaptureError::Failed(format!(
                            "the compositor refused {MAX_FAILURES_IN_A_ROW} copies in a row"
                        )));
                    }
                    // A failed copy: the output changed or went away. Look
                    // at the outputs again and grab everything next time.
                    info!("Wayland screencopy failed; resynchronising");
                    self.queue.roundtrip(&mut self.state).map_err(gone)?;
                    self.full = true;
                    continue;
                }
                FrameState::Ready => {
                    self.failures = 0;
                    let damage = self.finish_copy();
                    self.drop_frame();
                    if let Some(c) = self.publish(damage) {
                        return Ok(Some(c));
                    }
                    continue;
                }
                FrameState::Describing | FrameState::Copying => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Pointer moves are seen within this.
            let wait = (deadline - now).min(Duration::from_millis(20));
            dispatch_for(&mut self.queue, &mut self.state, wait)?;
        }
    }

    fn publish(&mut self, damage: Option<Vec<Rect>>) -> Option<Capture> {
        let cursor = (!self.cursor_sent).then(|| {
            self.cursor_sent = true;
            dot_cursor()
        });
        let empty = damage.as_ref().is_some_and(|d| d.is_empty());
        if empty && cursor.is_none() {
            return None;
        }
        let frame = match &self.published {
            Some(f) if empty => f.clone(),
            _ => Arc::new(self.current.clone()),
        };
        self.published = Some(frame.clone());
        // The pointer is in the pixels: no position, so nothing draws a
        // second one into them (the drawn cursor) or moves a viewer's own
        // pointer to where the compositor's already is.
        let pointer = None;
        Some(Capture {
            frame,
            damage,
            moves: Vec::new(),
            cursor,
            screens: None,
            pointer,
            leds: None,
        })
    }
}

/// The pointer image viewers get: a 5x5 dot (white, black outline,
/// hotspot in the middle), as TigerVNC shows when a server has no cursor.
/// Viewers that draw the cursor locally show it where their own mouse is;
/// the customer's real pointer is part of the pixels (overlay_cursor).
pub fn dot_cursor() -> CursorShape {
    const ROWS: [&[u8; 5]; 5] = [b" XXX ", b"X...X", b"X...X", b"X...X", b" XXX "];
    let pixels = ROWS
        .iter()
        .flat_map(|r| {
            r.iter().map(|b| match b {
                b'X' => 0xff00_0000,
                b'.' => 0xffff_ffff,
                _ => 0,
            })
        })
        .collect();
    CursorShape {
        width: 5,
        height: 5,
        hot_x: 2,
        hot_y: 2,
        pixels,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Little-endian 0xXXRRGGBB (wl_shm ARGB8888 / XRGB8888).
    Xrgb,
    /// Little-endian 0xXXBBGGRR (ABGR8888 / XBGR8888).
    Xbgr,
}

fn pixel_order(f: wl_shm::Format) -> Option<Order> {
    match f {
        wl_shm::Format::Argb8888 | wl_shm::Format::Xrgb8888 => Some(Order::Xrgb),
        wl_shm::Format::Abgr8888 | wl_shm::Format::Xbgr8888 => Some(Order::Xbgr),
        _ => None,
    }
}

impl ScreenSource for WaylandSource {
    fn name(&self) -> String {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let out = self
            .served_output()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        format!("{host} {out}").trim_end().to_owned()
    }

    /// While no viewer wants a frame: take in the compositor's events
    /// (outputs coming and going) without copying anything, and notice a
    /// compositor that is gone.
    fn idle(&mut self) -> Result<(), CaptureError> {
        self.ping.check();
        let r = dispatch_for(&mut self.queue, &mut self.state, Duration::ZERO)
            .and_then(|()| self.check_outputs());
        if let Err(CaptureError::Gone(e)) = &r {
            warn!(error = %e, "the Wayland compositor is gone");
        }
        r
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let deadline = Instant::now() + max_wait;
        let r = self.next_until(deadline);
        if let Err(CaptureError::Gone(e)) = &r {
            warn!(error = %e, "the Wayland compositor is gone");
        }
        r
    }
}

impl Dispatch<wl_registry::WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        match event {
            wl_registry::Event::Global {
                name,
                interface,
                version,
            } => match interface.as_str() {
                "wl_shm" => state.shm = Some(registry.bind(name, 1, qh, ())),
                "zwlr_screencopy_manager_v1" => {
                    state.manager = Some(registry.bind(name, version.min(3), qh, ()))
                }
                "wl_output" => {
                    let output = registry.bind(name, version.min(4), qh, name);
                    state.outputs_changed = true;
                    state.outputs.push(OutputInfo {
                        global: name,
                        output,
                        name: format!("output-{}", state.outputs.len()),
                        size: (0, 0),
                    });
                }
                _ => {}
            },
            wl_registry::Event::GlobalRemove { name } => {
                if let Some(i) = state.outputs.iter().position(|o| o.global == name) {
                    let o = state.outputs.remove(i);
                    if o.output.version() >= 3 {
                        o.output.release();
                    }
                    state.removed.push(name);
                    state.outputs_changed = true;
                }
            }
            _ => {}
        }
    }
}

impl Dispatch<wl_output::WlOutput, u32> for State {
    fn event(
        state: &mut Self,
        _: &wl_output::WlOutput,
        event: wl_output::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(o) = state.outputs.iter_mut().find(|o| o.global == *global) else {
            return;
        };
        match event {
            wl_output::Event::Mode {
                flags: WEnum::Value(f),
                width,
                height,
                ..
            } if f.contains(wl_output::Mode::Current) => o.size = (width, height),
            wl_output::Event::Name { name } => o.name = name,
            _ => {}
        }
    }
}

impl Dispatch<frame_v1::ZwlrScreencopyFrameV1, ()> for State {
    fn event(
        state: &mut Self,
        frame: &frame_v1::ZwlrScreencopyFrameV1,
        event: frame_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            frame_v1::Event::Buffer {
                format: WEnum::Value(format),
                width,
                height,
                stride,
            } => {
                // A handful of formats at most (shm and dmabuf ones).
                if state.offers.len() < 16 {
                    state.offers.push(BufferSpec {
                        format,
                        width,
                        height,
                        stride,
                    });
                }
                // Before version 3 there is no buffer_done: one offer only.
                if frame.version() < 3 && matches!(state.frame_state, FrameState::Describing) {
                    state.frame_state = FrameState::ReadyToCopy;
                }
            }
            frame_v1::Event::BufferDone => {
                if matches!(state.frame_state, FrameState::Describing) {
                    state.frame_state = FrameState::ReadyToCopy;
                }
            }
            frame_v1::Event::Flags { flags } => {
                state.y_invert =
                    matches!(flags, WEnum::Value(f) if f.contains(frame_v1::Flags::YInvert));
            }
            frame_v1::Event::Damage {
                x,
                y,
                width,
                height,
            } => {
                // Bounded: a compositor sends a handful per frame.
                if state.damage.len() < MAX_DAMAGE_RECTS {
                    state.damage.push((x, y, width, height));
                } else {
                    state.damage_all = true;
                }
            }
            // Only a copy that was asked for can be ready; anything else
            // is a confused compositor: start over.
            frame_v1::Event::Ready { .. } => {
                state.frame_state = match state.frame_state {
                    FrameState::Copying => FrameState::Ready,
                    _ => FrameState::Failed,
                }
            }
            frame_v1::Event::Failed => state.frame_state = FrameState::Failed,
            _ => {}
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),*) => {$(
        impl Dispatch<$t, ()> for State {
            fn event(_: &mut Self, _: &$t, _: <$t as Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )*};
}
ignore_events!(
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    wl_buffer::WlBuffer,
    manager_v1::ZwlrScreencopyManagerV1
);
