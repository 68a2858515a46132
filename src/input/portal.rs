//! Input through the xdg-desktop-portal RemoteDesktop session (issue 16)
//! that [`crate::capture::portal`] opened: pointer positions on the
//! granted stream (scaled from the frame's pixels to the stream's logical
//! size when they differ), evdev button codes, discrete wheel steps, and
//! keysyms (the compositor finds them in the customer's keymap). Events
//! come from the bounded [`InputQueue`] on a thread of our own, as on X11
//! and GNOME, and are carried out on the portal's thread.

use super::queue::{InputQueue, Pop};
use super::{InputEvent, InputSink};
use crate::capture::portal::{PortalCall, PortalSession};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, warn};

const QUEUE: usize = 4096;

/// linux/input-event-codes.h
const BTN_LEFT: i32 = 0x110;
const BTN_RIGHT: i32 = 0x111;
const BTN_MIDDLE: i32 = 0x112;
const BTN_SIDE: i32 = 0x113;
const BTN_EXTRA: i32 = 0x114;

/// What a change of RFB button `bit + 1` becomes (`down`: pressed).
fn button_call(bit: u16, down: bool) -> Option<PortalCall> {
    let button = |code| Some(PortalCall::Button { code, down });
    // The wheel "buttons" step once per press.
    let wheel = |horizontal, steps| down.then_some(PortalCall::Axis { horizontal, steps });
    match bit {
        0 => button(BTN_LEFT),
        1 => button(BTN_MIDDLE),
        2 => button(BTN_RIGHT),
        3 => wheel(false, -1),
        4 => wheel(false, 1),
        5 => wheel(true, -1),
        6 => wheel(true, 1),
        7 => button(BTN_SIDE),
        8 => button(BTN_EXTRA),
        _ => None,
    }
}

/// A frame pixel to the stream's logical coordinates (the compositor's
/// scale): the pixel's centre, so a scaled position lands inside it.
fn to_logical(
    x: u16,
    y: u16,
    frame: Option<(u16, u16)>,
    logical: Option<(u32, u32)>,
) -> (f64, f64) {
    match (frame, logical) {
        (Some((fw, fh)), Some((lw, lh)))
            if fw > 0 && fh > 0 && (u32::from(fw) != lw || u32::from(fh) != lh) =>
        {
            (
                (f64::from(x) + 0.5) * f64::from(lw) / f64::from(fw),
                (f64::from(y) + 0.5) * f64::from(lh) / f64::from(fh),
            )
        }
        _ => (f64::from(x), f64::from(y)),
    }
}

pub struct PortalInput {
    queue: Arc<InputQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PortalInput {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PortalInput {
    /// Inject into `session`; `frame_size` is the served frame's size (see
    /// [`crate::capture::portal::PortalSource::frame_size`]).
    pub fn start(
        session: Arc<PortalSession>,
        frame_size: Arc<Mutex<Option<(u16, u16)>>>,
    ) -> Result<PortalInput, String> {
        let queue = Arc::new(InputQueue::new(QUEUE));
        let rx = queue.clone();
        let thread = std::thread::Builder::new()
            .name("portal-input".into())
            .spawn(move || {
                let mut inj = Injector {
                    session,
                    frame_size,
                    buttons: 0,
                    pos: None,
                    pressed: Vec::new(),
                    gone: false,
                };
                loop {
                    match rx.pop_for(Duration::from_secs(1)) {
                        Pop::Event(ev) => inj.inject(ev),
                        Pop::Idle => {}
                        Pop::Closed => break,
                    }
                }
                inj.finish();
            })
            .map_err(|e| e.to_string())?;
        Ok(PortalInput {
            queue,
            thread: Some(thread),
        })
    }
}

impl InputSink for PortalInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.queue.key(down, keysym)
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        self.queue.pointer(buttons, x, y)
    }
    /// The portal has no clipboard before xdg-desktop-portal 1.18
    /// (Debian 12 has 1.16): nothing is handed on.
    fn cut_text(&self, _text: &str) -> bool {
        false
    }
}

struct Injector {
    session: Arc<PortalSession>,
    frame_size: Arc<Mutex<Option<(u16, u16)>>>,
    buttons: u16,
    pos: Option<(u16, u16)>,
    /// Keysyms held, released when the sink ends.
    pressed: Vec<u32>,
    /// The portal thread is gone (logged once).
    gone: bool,
}

impl Injector {
    fn call(&mut self, c: PortalCall) {
        if !self.session.call(c) && !self.gone {
            self.gone = true;
            warn!("portal input: the portal session is gone; input is dropped");
        }
    }

    fn inject(&mut self, ev: InputEvent) {
        match ev {
            InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                if keysym & super::QEMU_KEY != 0 {
                    debug!("portal input: key without a keysym dropped");
                    return;
                }
                if down {
                    if !self.pressed.contains(&keysym) {
                        self.pressed.push(keysym);
                    }
                } else {
                    self.pressed.retain(|k| *k != keysym);
                }
                self.call(PortalCall::Keysym { keysym, down });
            }
            InputEvent::Pointer { buttons, x, y } => {
                if self.pos != Some((x, y)) {
                    self.pos = Some((x, y));
                    let frame = *self.frame_size.lock().unwrap_or_else(|e| e.into_inner());
                    let (x, y) = to_logical(x, y, frame, self.session.logical_size);
                    self.call(PortalCall::Motion { x, y });
                }
                self.set_buttons(buttons);
            }
            InputEvent::CutText(_) => {}
        }
    }

    fn set_buttons(&mut self, buttons: u16) {
        let changed = buttons ^ self.buttons;
        for bit in 0..16u16 {
            if changed & (1 << bit) != 0 {
                if let Some(c) = button_call(bit, buttons & (1 << bit) != 0) {
                    self.call(c);
                }
            }
        }
        self.buttons = buttons;
    }

    /// Let go of whatever is still held.
    fn finish(&mut self) {
        self.set_buttons(0);
        for keysym in std::mem::take(&mut self.pressed) {
            self.call(PortalCall::Keysym {
                keysym,
                down: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_map_to_evdev_and_wheel_steps_on_press_only() {
        let b = |code, down| Some(PortalCall::Button { code, down });
        assert_eq!(button_call(0, true), b(BTN_LEFT, true));
        assert_eq!(button_call(0, false), b(BTN_LEFT, false));
        assert_eq!(button_call(1, true), b(BTN_MIDDLE, true));
        assert_eq!(button_call(2, true), b(BTN_RIGHT, true));
        let a = |horizontal, steps| Some(PortalCall::Axis { horizontal, steps });
        assert_eq!(button_call(3, true), a(false, -1));
        assert_eq!(button_call(4, true), a(false, 1));
        assert_eq!(button_call(5, true), a(true, -1));
        assert_eq!(button_call(6, true), a(true, 1));
        assert_eq!(button_call(3, false), None);
        assert_eq!(button_call(7, true), b(BTN_SIDE, true));
        assert_eq!(button_call(8, true), b(BTN_EXTRA, true));
        assert_eq!(button_call(9, true), None);
    }

    #[test]
    fn positions_scale_to_the_logical_size_only_when_it_differs() {
        // Same size (or unknown): pixel coordinates as they are.
        assert_eq!(
            to_logical(10, 20, Some((1280, 800)), Some((1280, 800))),
            (10.0, 20.0)
        );
        assert_eq!(to_logical(10, 20, None, Some((640, 400))), (10.0, 20.0));
        assert_eq!(to_logical(10, 20, Some((1280, 800)), None), (10.0, 20.0));
        // A 2x scaled output: 2560x1600 pixels, 1280x800 logical.
        assert_eq!(
            to_logical(2559, 1599, Some((2560, 1600)), Some((1280, 800))),
            (1279.75, 799.75)
        );
        assert_eq!(
            to_logical(0, 0, Some((2560, 1600)), Some((1280, 800))),
            (0.25, 0.25)
        );
    }
}
