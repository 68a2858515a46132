//! Input for wlroots compositors: `wlr-virtual-pointer-unstable-v1`
//! (absolute motion on the served output, buttons, wheel) and
//! `virtual-keyboard-unstable-v1` with a keymap ticketvnc generates
//! ([`super::wayland_keymap`]), so any keysym a viewer sends, Unicode
//! included, is typed as it is. Its own connection to the compositor, so
//! input never waits behind a screen copy.

use super::wayland_keymap::Keymap;
use super::{ClipboardTarget, InputSink};
use crate::capture::wayland::{dispatch_for, WaylandShared};
use crate::capture::CaptureError;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use wayland_client::protocol::{wl_output, wl_pointer, wl_registry, wl_seat};
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
/// Input events kept for a compositor that does not read its socket (it
/// hangs): they wait in the connection's buffer (which has no bound of its
/// own) and arrive in order once it runs again. Past this many, presses are
/// dropped (as under load; releases of what is down still go), so memory
/// stays bounded and no key is left stuck.
const MAX_BACKLOG: u32 = 4096;
/// How often a backlog is offered to the compositor again.
const BACKLOG_RETRY: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Globals {
    seat: Option<wl_seat::WlSeat>,
    pointer_manager: Option<ptr_manager::ZwlrVirtualPointerManagerV1>,
    keyboard_manager: Option<kbd_manager::ZwpVirtualKeyboardManagerV1>,
    outputs: Vec<wl_output::WlOutput>,
}

struct Inner {
    conn: Connection,
    queue: EventQueue<Globals>,
    globals: Globals,
    pointer: Option<ptr::ZwlrVirtualPointerV1>,
    keyboard: Option<kbd::ZwpVirtualKeyboardV1>,
    keymap: Keymap,
    mods: (u32, u32),
    buttons: u16,
    start: Instant,
    dead: bool,
    /// The compositor did not take what was sent at the last flush: pointer
    /// motion alone is not queued behind it (the next motion carries the
    /// position).
    backed_up: bool,
    /// Events sent since the compositor stopped reading.
    backlog: u32,
}

pub struct WaylandInput {
    inner: Arc<Mutex<Inner>>,
    shared: Arc<WaylandShared>,
    /// The selection (wlr-data-control, [`super::wayland_clipboard`]).
    clipboard: Option<Box<dyn ClipboardTarget>>,
}

impl WaylandInput {
    /// Connect to the compositor in `$WAYLAND_DISPLAY`; pointer motion maps
    /// onto output `shared.monitor` (the one the source serves).
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
        let mut inner = Inner {
            conn,
            queue,
            globals,
            pointer,
            keyboard,
            keymap: Keymap::new(),
            mods: (0, 0),
            buttons: 0,
            start: Instant::now(),
            dead: false,
            backed_up: false,
            backlog: 0,
        };
        inner.send_keymap();
        inner.sync();
        info!(
            pointer = inner.pointer.is_some(),
            keyboard = inner.keyboard.is_some(),
            "Wayland input ready (wlr-virtual-pointer, virtual-keyboard)"
        );
        let inner = Arc::new(Mutex::new(inner));
        // What waits for a compositor that stopped reading is sent once it
        // reads again, without waiting for the next event from a viewer.
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("wl-input-flush".into())
            .spawn(move || loop {
                std::thread::sleep(BACKLOG_RETRY);
                let Some(inner) = weak.upgrade() else { break };
                let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
                if g.dead {
                    break;
                }
                if g.backed_up {
                    g.flush(false);
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "Wayland input: no thread to retry sending while the compositor hangs");
        }
        Ok(WaylandInput {
            inner,
            shared,
            clipboard: None,
        })
    }

    /// Text from viewers goes to `clipboard`.
    pub fn with_clipboard(mut self, clipboard: Box<dyn ClipboardTarget>) -> WaylandInput {
        self.clipboard = Some(clipboard);
        self
    }
}

impl Inner {
    fn time(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
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

    /// Send what is queued and read what came back (the compositor's
    /// answers must not pile up unread); a dead connection is logged once.
    fn sync(&mut self) {
        self.flush(true);
    }

    /// [`Self::sync`]; `sent`: an event was queued (counted while the
    /// compositor does not read).
    fn flush(&mut self, sent: bool) {
        if self.dead {
            return;
        }
        if let Err(e) = dispatch_for(&mut self.queue, &mut self.globals, Duration::ZERO) {
            warn!(error = %e, "Wayland input: the compositor is gone; input is dropped");
            self.dead = true;
            return;
        }
        // dispatch_for keeps what the socket did not take; ask again to know.
        let backed_up = self.conn.flush().is_err();
        if backed_up {
            let before = self.backlog;
            self.backlog = before.saturating_add(u32::from(sent));
            if before < MAX_BACKLOG && self.backlog >= MAX_BACKLOG {
                warn!(
                    events = MAX_BACKLOG,
                    "Wayland input: the compositor has not read its input for {MAX_BACKLOG} \
                     events; presses are dropped until it does"
                );
            }
        } else {
            if self.backlog >= MAX_BACKLOG {
                info!("Wayland input: the compositor reads its input again");
            }
            self.backlog = 0;
        }
        self.backed_up = backed_up;
    }

    /// The compositor has not read its input for [`MAX_BACKLOG`] events.
    fn full(&self) -> bool {
        self.backed_up && self.backlog >= MAX_BACKLOG
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
}

impl InputSink for WaylandInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.keyboard.is_none() || g.dead || keysym >= super::QEMU_KEY {
            return false;
        }
        if down && g.full() {
            g.flush(false);
            return false;
        }
        let code = if down {
            match g.keymap.code_for(keysym) {
                Some((c, changed)) => {
                    if changed {
                        g.send_keymap();
                    }
                    c
                }
                None => return false,
            }
        } else {
            match g.keymap.held_code_of(keysym) {
                Some(c) => c,
                None => return false,
            }
        };
        if !g.keymap.set_held(code, down) {
            return false;
        }
        let t = g.time();
        if let Some(k) = &g.keyboard {
            k.key(t, code, u32::from(down));
        }
        g.send_mods();
        g.sync();
        true
    }

    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.dead {
            return 0;
        }
        let Some(p) = g.pointer.clone() else {
            return 0;
        };
        // Presses are dropped while the backlog is full (releases go).
        let buttons = if g.full() {
            buttons & g.buttons
        } else {
            buttons
        };
        if g.backed_up && buttons == g.buttons {
            // Motion alone waits for nothing: the compositor is not reading.
            g.flush(false);
            return buttons;
        }
        let t = g.time();
        let size = self.shared.output_size.load(Ordering::Relaxed);
        let (w, h) = ((size >> 16).max(1), (size & 0xffff).max(1));
        let (x, y) = (u32::from(x).min(w - 1), u32::from(y).min(h - 1));
        p.motion_absolute(t, x, y, w, h);
        let old = g.buttons;
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
        g.buttons = buttons;
        g.sync();
        buttons
    }

    fn cut_text(&self, text: &str) -> bool {
        self.clipboard.as_ref().map(|c| c.set_text(text)).is_some()
    }
}

impl Drop for WaylandInput {
    fn drop(&mut self) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = g.time();
        for code in g.keymap.held() {
            if let Some(k) = &g.keyboard {
                k.key(t, code, 0);
            }
        }
        let _ = g.conn.flush();
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
