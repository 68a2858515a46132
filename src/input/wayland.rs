//! Input for wlroots compositors: `wlr-virtual-pointer-unstable-v1`
//! (absolute motion on the served output, buttons, wheel) and
//! `virtual-keyboard-unstable-v1` with a keymap ticketvnc generates
//! ([`super::wayland_keymap`]), so any keysym a viewer sends, Unicode
//! included, is typed as it is. Its own connection to the compositor, so
//! input never waits behind a screen copy.

use super::queue::{InputQueue, Pop};
use super::wayland_keymap::Keymap;
use super::{ClipboardTarget, InputEvent, InputSink};
use crate::capture::wayland::{dispatch_for, WaylandShared};
use crate::capture::CaptureError;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use wayland_client::protocol::{wl_callback, wl_output, wl_pointer, wl_registry, wl_seat};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols_misc::zwp_virtual_keyboard_v1::client::{
    zwp_virtual_keyboard_manager_v1 as kbd_manager, zwp_virtual_keyboard_v1 as kbd,
};
use wayland_protocols_wlr::virtual_pointer::v1::client::{
    zwlr_virtual_pointer_manager_v1 as ptr_manager, zwlr_virtual_pointer_v1 as ptr,
};

/// linux/input-event-codes.h
const BTN_LEFT: u32 = 0x110;
const BTN_RIGHT: u32 = 0x111;
const BTN_MIDDLE: u32 = 0x112;
const BTN_SIDE: u32 = 0x113;
const BTN_EXTRA: u32 = 0x114;
/// One wheel click, in wl_pointer axis units (what libinput reports).
const WHEEL_STEP: f64 = 15.0;
/// wl_keyboard.keymap_format.xkb_v1
const KEYMAP_XKB_V1: u32 = 1;
/// Viewers' events waiting for the compositor ([`InputQueue`]: beyond
/// this, motion is merged and presses are dropped, releases never).
const QUEUE: usize = 4096;
/// Events sent before the compositor must confirm it read them (a
/// `wl_display.sync` answered): at most this many wait in the socket for a
/// compositor that hangs, the rest wait in the queue, where they are
/// bounded and merged.
const IN_FLIGHT: u32 = 32;
/// Events sent at once after a pause, then [`RATE`] a second. The
/// compositor forwards keys to the focused client as fast as they come,
/// and libwayland-server before 1.23 disconnects a client whose 4 KiB
/// buffer overflows (about 170 keys it has not read yet): a burst, such
/// as a backlog released after a hang, closed the customer's terminal.
const BURST: f64 = 32.0;
/// Events a second at most (500 typed characters; no hand types that fast).
const RATE: f64 = 1000.0;
/// How long the compositor may take to confirm before a full queue is
/// reported.
const STALL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Globals {
    seat: Option<wl_seat::WlSeat>,
    pointer_manager: Option<ptr_manager::ZwlrVirtualPointerManagerV1>,
    keyboard_manager: Option<kbd_manager::ZwpVirtualKeyboardManagerV1>,
    outputs: Vec<wl_output::WlOutput>,
    /// The last `wl_display.sync` was answered.
    synced: bool,
}

/// The injection thread's side: the connection and what it sent.
struct Pump {
    conn: Connection,
    queue: EventQueue<Globals>,
    globals: Globals,
    pointer: Option<ptr::ZwlrVirtualPointerV1>,
    keyboard: Option<kbd::ZwpVirtualKeyboardV1>,
    keymap: Keymap,
    mods: (u32, u32),
    buttons: u16,
    start: Instant,
    shared: Arc<WaylandShared>,
    events: Arc<InputQueue>,
    dead: Arc<AtomicBool>,
    /// Events sent since the compositor last confirmed it read.
    unconfirmed: u32,
    /// Token bucket of [`BURST`] and [`RATE`].
    tokens: f64,
    refilled: Instant,
}

pub struct WaylandInput {
    events: Arc<InputQueue>,
    keyboard: bool,
    pointer: bool,
    /// The connection to the compositor is gone.
    dead: Arc<AtomicBool>,
    /// The selection (wlr-data-control, [`super::wayland_clipboard`]).
    clipboard: Option<Box<dyn ClipboardTarget>>,
}

impl WaylandInput {
    /// Connect to the compositor in `$WAYLAND_DISPLAY`; pointer motion maps
    /// onto output `shared.monitor` (the one the source serves). Events
    /// are sent by a thread of their own, paced (see [`RATE`]).
    pub fn start(shared: Arc<WaylandShared>) -> Result<WaylandInput, CaptureError> {
        let conn = Connection::connect_to_env().map_err(|e| {
            CaptureError::Gone(format!("cannot connect to the Wayland compositor: {e}"))
        })?;
        let mut queue = conn.new_event_queue();
        let qh = queue.handle();
        conn.display().get_registry(&qh, ());
        let mut globals = Globals::default();
        queue
            .roundtrip(&mut globals)
            .map_err(crate::capture::wayland::gone)?;
        let output = globals.outputs.get(shared.monitor.unwrap_or(0)).cloned();
        let pointer = match (&globals.pointer_manager, &globals.seat) {
            (Some(m), seat) if m.version() >= 2 => {
                Some(m.create_virtual_pointer_with_output(seat.as_ref(), output.as_ref(), &qh, ()))
            }
            (Some(m), seat) => Some(m.create_virtual_pointer(seat.as_ref(), &qh, ())),
            (None, _) => {
                warn!(
                    "the compositor offers no wlr-virtual-pointer: viewers' pointers are ignored"
                );
                None
            }
        };
        let keyboard = match (&globals.keyboard_manager, &globals.seat) {
            (Some(m), Some(seat)) => Some(m.create_virtual_keyboard(seat, &qh, ())),
            _ => {
                warn!("the compositor offers no virtual-keyboard-unstable-v1 (or no seat): viewers' keys are ignored");
                None
            }
        };
        let events = Arc::new(InputQueue::new(QUEUE));
        let dead = Arc::new(AtomicBool::new(false));
        let mut pump = Pump {
            conn,
            queue,
            globals,
            pointer,
            keyboard,
            keymap: Keymap::new(),
            mods: (0, 0),
            buttons: 0,
            start: Instant::now(),
            shared,
            events: events.clone(),
            dead: dead.clone(),
            unconfirmed: 0,
            tokens: BURST,
            refilled: Instant::now(),
        };
        pump.send_keymap();
        pump.flush();
        info!(
            pointer = pump.pointer.is_some(),
            keyboard = pump.keyboard.is_some(),
            "Wayland input ready (wlr-virtual-pointer, virtual-keyboard)"
        );
        let input = WaylandInput {
            events,
            keyboard: pump.keyboard.is_some(),
            pointer: pump.pointer.is_some(),
            dead,
            clipboard: None,
        };
        std::thread::Builder::new()
            .name("wl-input".into())
            .spawn(move || pump.run())
            .map_err(|e| {
                CaptureError::Gone(format!("cannot start the Wayland input thread: {e}"))
            })?;
        Ok(input)
    }

    /// Text from viewers goes to `clipboard`.
    pub fn with_clipboard(mut self, clipboard: Box<dyn ClipboardTarget>) -> WaylandInput {
        self.clipboard = Some(clipboard);
        self
    }
}

impl Pump {
    fn run(mut self) {
        loop {
            let ev = match self.events.pop_for(Duration::from_secs(1)) {
                Pop::Event(ev) => ev,
                // The compositor's answers must not pile up unread.
                Pop::Idle => {
                    self.flush();
                    continue;
                }
                Pop::Closed => break,
            };
            if self.dead.load(Ordering::Relaxed) {
                continue;
            }
            self.pace();
            match ev {
                InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                    self.key(down, keysym)
                }
                InputEvent::Pointer { buttons, x, y } => {
                    // Motion queued behind it is only where the pointer went.
                    let (mut x, mut y) = (x, y);
                    while let Some(to) = self.events.take_motion(buttons) {
                        (x, y) = to;
                    }
                    self.pointer(buttons, x, y)
                }
                InputEvent::CutText(_) => {}
            }
            self.flush();
            self.unconfirmed += 1;
            if self.unconfirmed >= IN_FLIGHT {
                self.confirm();
            }
        }
        // Closed: nothing stays held on the customer's desktop.
        let t = self.time();
        for code in self.keymap.held() {
            if let Some(k) = &self.keyboard {
                k.key(t, code, 0);
            }
        }
        let _ = self.conn.flush();
    }

    fn time(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    /// Wait for a token of the bucket.
    fn pace(&mut self) {
        let now = Instant::now();
        let gained = now.duration_since(self.refilled).as_secs_f64() * RATE;
        self.tokens = (self.tokens + gained).min(BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            std::thread::sleep(Duration::from_secs_f64((1.0 - self.tokens) / RATE));
            self.tokens = 1.0;
            self.refilled = Instant::now();
        }
        self.tokens -= 1.0;
    }

    /// Wait until the compositor has read what was sent (it answers a
    /// `wl_display.sync`). A compositor that hangs is reported once the
    /// queue behind it is full, and again when it reads.
    fn confirm(&mut self) {
        self.unconfirmed = 0;
        self.globals.synced = false;
        let qh = self.queue.handle();
        self.conn.display().sync(&qh, ());
        let since = Instant::now();
        let mut reported = false;
        while !self.globals.synced {
            if let Err(e) = dispatch_for(
                &mut self.queue,
                &mut self.globals,
                Duration::from_millis(50),
            ) {
                self.gone(e);
                return;
            }
            if !reported && since.elapsed() >= STALL && self.events.len() >= QUEUE {
                reported = true;
                warn!(
                    waited_ms = since.elapsed().as_millis() as u64,
                    events = QUEUE,
                    "Wayland input: the compositor has not read its input and {QUEUE} events \
                     wait; presses are dropped until it does (releases are kept)"
                );
            }
        }
        if reported {
            info!(
                waited_ms = since.elapsed().as_millis() as u64,
                "Wayland input: the compositor reads its input again"
            );
        }
    }

    fn gone(&mut self, e: CaptureError) {
        warn!(error = %e, "Wayland input: the compositor is gone; input is dropped");
        self.dead.store(true, Ordering::Relaxed);
    }

    fn send_keymap(&mut self) {
        let Some(k) = &self.keyboard else { return };
        let text = self.keymap.text();
        let r = (|| -> std::io::Result<()> {
            let fd = rustix::fs::memfd_create("ticketvnc-keymap", rustix::fs::MemfdFlags::CLOEXEC)?;
            let mut f = std::fs::File::from(fd);
            f.write_all(text.as_bytes())?;
            f.write_all(&[0])?;
            k.keymap(KEYMAP_XKB_V1, f.as_fd(), text.len() as u32 + 1);
            Ok(())
        })();
        if let Err(e) = r {
            warn!(error = %e, "cannot hand the keymap to the compositor");
        }
    }

    /// Send what was made and read what came back.
    fn flush(&mut self) {
        if self.dead.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = dispatch_for(&mut self.queue, &mut self.globals, Duration::ZERO) {
            self.gone(e);
        }
    }

    fn send_mods(&mut self) {
        let m = self.keymap.modifiers();
        if m != self.mods {
            self.mods = m;
            if let Some(k) = &self.keyboard {
                k.modifiers(m.0, 0, m.1, 0);
            }
        }
    }

    fn key(&mut self, down: bool, keysym: u32) {
        let code = if down {
            match self.keymap.code_for(keysym) {
                Some((c, changed)) => {
                    if changed {
                        self.send_keymap();
                    }
                    c
                }
                None => return,
            }
        } else {
            match self.keymap.held_code_of(keysym) {
                Some(c) => c,
                None => return,
            }
        };
        if !self.keymap.set_held(code, down) {
            return;
        }
        let t = self.time();
        if let Some(k) = &self.keyboard {
            k.key(t, code, u32::from(down));
        }
        self.send_mods();
    }

    fn pointer(&mut self, buttons: u16, x: u16, y: u16) {
        let Some(p) = self.pointer.clone() else {
            return;
        };
        let t = self.time();
        let size = self.shared.output_size.load(Ordering::Relaxed);
        let (w, h) = ((size >> 16).max(1), (size & 0xffff).max(1));
        let (x, y) = (u32::from(x).min(w - 1), u32::from(y).min(h - 1));
        p.motion_absolute(t, x, y, w, h);
        let old = self.buttons;
        for (bit, code) in [
            (0, BTN_LEFT),
            (1, BTN_MIDDLE),
            (2, BTN_RIGHT),
            (7, BTN_SIDE),
            (8, BTN_EXTRA),
        ] {
            let (was, is) = (old >> bit & 1 != 0, buttons >> bit & 1 != 0);
            if was != is {
                let state = if is {
                    wl_pointer::ButtonState::Pressed
                } else {
                    wl_pointer::ButtonState::Released
                };
                p.button(t, code, state);
            }
        }
        // Wheels: one step per press (bits 3-6: up, down, left, right).
        for (bit, axis, dir) in [
            (3, wl_pointer::Axis::VerticalScroll, -1.0),
            (4, wl_pointer::Axis::VerticalScroll, 1.0),
            (5, wl_pointer::Axis::HorizontalScroll, -1.0),
            (6, wl_pointer::Axis::HorizontalScroll, 1.0),
        ] {
            if buttons >> bit & 1 != 0 && old >> bit & 1 == 0 {
                p.axis_source(wl_pointer::AxisSource::Wheel);
                p.axis_discrete(t, axis, dir * WHEEL_STEP, dir as i32);
            }
        }
        p.frame();
        self.buttons = buttons;
    }
}

impl InputSink for WaylandInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        if !self.keyboard || self.dead.load(Ordering::Relaxed) || keysym >= super::QEMU_KEY {
            return false;
        }
        self.events.key(down, keysym)
    }

    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        if !self.pointer || self.dead.load(Ordering::Relaxed) {
            return 0;
        }
        self.events.pointer(buttons, x, y)
    }

    fn cut_text(&self, text: &str) -> bool {
        self.clipboard.as_ref().map(|c| c.set_text(text)).is_some()
    }
}

impl Drop for WaylandInput {
    fn drop(&mut self) {
        // The thread sends what is queued, releases what is held and ends.
        self.events.close();
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for Globals {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.synced = true;
        }
    }
}

impl Dispatch<wl_registry::WlRegistry, ()> for Globals {
    fn event(
        state: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            match interface.as_str() {
                "wl_seat" if state.seat.is_none() => {
                    state.seat = Some(registry.bind(name, version.min(5), qh, ()))
                }
                "wl_output" => state.outputs.push(registry.bind(name, 1, qh, ())),
                "zwlr_virtual_pointer_manager_v1" => {
                    state.pointer_manager = Some(registry.bind(name, version.min(2), qh, ()))
                }
                "zwp_virtual_keyboard_manager_v1" => {
                    state.keyboard_manager = Some(registry.bind(name, 1, qh, ()))
                }
                _ => {}
            }
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),*) => {$(
        impl Dispatch<$t, ()> for Globals {
            fn event(_: &mut Self, _: &$t, _: <$t as Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )*};
}
ignore_events!(
    wl_seat::WlSeat,
    wl_output::WlOutput,
    ptr_manager::ZwlrVirtualPointerManagerV1,
    ptr::ZwlrVirtualPointerV1,
    kbd_manager::ZwpVirtualKeyboardManagerV1,
    kbd::ZwpVirtualKeyboardV1
);
