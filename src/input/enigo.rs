//! Input injection with enigo on a dedicated thread (enigo connections are
//! not shared across threads, and injection must never block a session).

use super::queue::InputQueue;
use super::{ClipboardTarget, InputEvent, InputSink};
use enigo::{Axis, Button, Coordinate, Direction, Enigo, Mouse, Settings};
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
use enigo::{Key, Keyboard};
use std::sync::mpsc;
use std::sync::Arc;
use thiserror::Error;
use tracing::debug;

#[derive(Debug, Error)]
#[error("cannot start input injection: {0}")]
pub struct InputError(String);

/// Events queued for the injection thread; beyond it motion is merged and
/// presses are dropped, releases never (see [`InputQueue`]).
const QUEUE: usize = 4096;

pub struct EnigoInput {
    queue: Arc<InputQueue>,
    clipboard: Option<Box<dyn ClipboardTarget>>,
}

impl Drop for EnigoInput {
    fn drop(&mut self) {
        // The injection thread ends once it has injected what is queued.
        self.queue.close();
    }
}

impl EnigoInput {
    /// Start the injection thread. `x11_display`: the X display to inject
    /// into on Linux (`None`: $DISPLAY).
    pub fn start(x11_display: Option<String>) -> Result<EnigoInput, InputError> {
        let queue = Arc::new(InputQueue::new(QUEUE));
        let rx = queue.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("input".into())
            .spawn(move || {
                let settings = Settings {
                    x11_display,
                    // No artificial delay: events are injected as they arrive.
                    linux_delay: 0,
                    ..Settings::default()
                };
                let mut enigo = match Enigo::new(&settings) {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut injector = Injector::default();
                while let Some(ev) = rx.pop() {
                    injector.inject(&mut enigo, ev);
                }
            })
            .map_err(|e| InputError(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(EnigoInput {
                queue,
                clipboard: None,
            }),
            Ok(Err(e)) => Err(InputError(e)),
            Err(_) => Err(InputError("input thread ended".into())),
        }
    }

    /// Send viewers' clipboard text to `clipboard`.
    pub fn with_clipboard(mut self, clipboard: Box<dyn ClipboardTarget>) -> EnigoInput {
        self.clipboard = Some(clipboard);
        self
    }
}

impl InputSink for EnigoInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.queue.key(down, keysym)
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        self.queue.pointer(buttons, x, y)
    }
    fn cut_text(&self, text: &str) -> bool {
        self.clipboard.as_ref().map(|c| c.set_text(text)).is_some()
    }
}

#[derive(Default)]
struct Injector {
    buttons: u16,
    pos: Option<(u16, u16)>,
    /// Viewer pixels to pointer points (macOS Retina), looked up again
    /// every few seconds.
    #[cfg(target_os = "macos")]
    display: super::points::DisplayCache,
    #[cfg(target_os = "windows")]
    keys: super::windows_keys::KeyState,
    #[cfg(target_os = "macos")]
    keys: super::macos_keys::KeyState,
}

impl Injector {
    fn inject(&mut self, enigo: &mut Enigo, ev: InputEvent) {
        let r = match ev {
            // Windows takes virtual-key codes, not keysyms.
            #[cfg(target_os = "windows")]
            InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                super::windows_keys::inject(enigo, &mut self.keys, down, keysym)
            }
            // macOS takes virtual key codes (kVK_*), not keysyms.
            #[cfg(target_os = "macos")]
            InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                super::macos_keys::inject(enigo, &mut self.keys, down, keysym)
            }
            #[cfg(not(any(target_os = "windows", target_os = "macos")))]
            InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                let dir = if down {
                    Direction::Press
                } else {
                    Direction::Release
                };
                enigo.key(Key::Other(keysym), dir)
            }
            InputEvent::Pointer { buttons, x, y } => {
                tracing::trace!(buttons, x, y, "pointer");
                self.pointer(enigo, buttons, x, y)
            }
            InputEvent::CutText(_) => Ok(()),
        };
        if let Err(e) = r {
            // The keysym is not logged: it would be a keystroke.
            debug!(error = %e, "input injection failed");
        }
    }

    fn pointer(
        &mut self,
        enigo: &mut Enigo,
        buttons: u16,
        x: u16,
        y: u16,
    ) -> enigo::InputResult<()> {
        if self.pos != Some((x, y)) {
            #[cfg(target_os = "macos")]
            let (px, py) = match self.display.geometry() {
                Some(g) => g.to_points(x, y),
                None => (x as i32, y as i32),
            };
            #[cfg(not(target_os = "macos"))]
            let (px, py) = (x as i32, y as i32);
            enigo.move_mouse(px, py, Coordinate::Abs)?;
            self.pos = Some((x, y));
        }
        let changed = buttons ^ self.buttons;
        for bit in 0..9u8 {
            let mask = 1 << bit;
            if changed & mask == 0 {
                continue;
            }
            let down = buttons & mask != 0;
            let dir = if down {
                Direction::Press
            } else {
                Direction::Release
            };
            match bit {
                0 => enigo.button(Button::Left, dir)?,
                1 => enigo.button(Button::Middle, dir)?,
                2 => enigo.button(Button::Right, dir)?,
                // Wheel "buttons" scroll once per press.
                3 if down => enigo.scroll(-1, Axis::Vertical)?,
                4 if down => enigo.scroll(1, Axis::Vertical)?,
                5 if down => enigo.scroll(-1, Axis::Horizontal)?,
                6 if down => enigo.scroll(1, Axis::Horizontal)?,
                7 => enigo.button(Button::Back, dir)?,
                8 => enigo.button(Button::Forward, dir)?,
                _ => {}
            }
        }
        self.buttons = buttons;
        Ok(())
    }
}
