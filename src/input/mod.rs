//! Input sinks: where key, pointer and clipboard events from viewers go.

#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
pub mod enigo;
pub mod mac_keys;
pub mod macos_keys;
#[cfg(all(target_os = "linux", feature = "gnome"))]
pub mod mutter;
#[cfg(all(target_os = "linux", feature = "gnome"))]
pub mod mutter_clipboard;
pub mod points;
#[cfg(all(target_os = "linux", feature = "portal"))]
pub mod portal;
pub mod queue;
#[cfg(target_os = "linux")]
pub mod wayland;
#[cfg(target_os = "linux")]
pub mod wayland_clipboard;
pub mod wayland_keymap;
pub mod windows_keys;
#[cfg(target_os = "linux")]
pub mod x11;
#[cfg(target_os = "linux")]
pub mod x11_clipboard;
#[cfg(target_os = "linux")]
pub mod x11_keymap;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Where viewers' input goes. The answers say what will really be
/// injected, so a session's record of held keys and buttons (released when
/// it ends) stays true to the desktop.
pub trait InputSink: Send + Sync + 'static {
    /// Whether the event will be injected (`false`: a press dropped under
    /// load, or a release of a key that is not down).
    fn key(&self, down: bool, keysym: u32) -> bool;
    /// A key with the scan code that produced it (QEMU's numbering, see
    /// [`QEMU_KEY`] for `keysym`); sinks that cannot use it type the keysym.
    fn key_scancode(&self, down: bool, keysym: u32, _scancode: u8) -> bool {
        self.key(down, keysym)
    }
    /// The buttons that will be injected as held (`buttons`, bit n-1 for
    /// button n, minus presses dropped under load).
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16;
    /// Clipboard text from a viewer (already converted from Latin-1).
    /// Whether it was handed to the desktop's clipboard (`false`: this
    /// desktop has none, so the journal records no transfer).
    fn cut_text(&self, text: &str) -> bool;
}

/// A QEMU key event without a keysym gets this id (`QEMU_KEY | scan
/// code`) in place of one: no keysym is this high.
pub const QEMU_KEY: u32 = 0x4000_0000;

/// Where clipboard text from viewers goes (the platform clipboard).
pub trait ClipboardTarget: Send + Sync {
    fn set_text(&self, text: &str);
}

#[cfg(target_os = "linux")]
impl ClipboardTarget for x11_clipboard::X11Clipboard {
    fn set_text(&self, text: &str) {
        x11_clipboard::X11Clipboard::set_text(self, text)
    }
}

/// Moves pointer coordinates by a changing origin (`x << 16 | y`): a viewer
/// of one monitor points in that monitor's coordinates.
pub struct OffsetInput {
    inner: Arc<dyn InputSink>,
    origin: Arc<AtomicU32>,
}

impl OffsetInput {
    pub fn new(inner: Arc<dyn InputSink>, origin: Arc<AtomicU32>) -> OffsetInput {
        OffsetInput { inner, origin }
    }
}

impl InputSink for OffsetInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.inner.key(down, keysym)
    }
    fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        self.inner.key_scancode(down, keysym, scancode)
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        let o = self.origin.load(Ordering::Relaxed);
        let (ox, oy) = ((o >> 16) as u16, o as u16);
        self.inner
            .pointer(buttons, x.saturating_add(ox), y.saturating_add(oy))
    }
    fn cut_text(&self, text: &str) -> bool {
        self.inner.cut_text(text)
    }
}

/// Drops everything (the test pattern has nothing to type into).
pub struct NullInput;

impl InputSink for NullInput {
    fn key(&self, _down: bool, _keysym: u32) -> bool {
        true
    }
    fn pointer(&self, buttons: u16, _x: u16, _y: u16) -> u16 {
        buttons
    }
    fn cut_text(&self, _text: &str) -> bool {
        false
    }
}

/// The test pattern's desktop: nothing to type into, and a clipboard that
/// keeps the last text a viewer gave it (so a paste is a transfer there,
/// journaled as on a real desktop; [`NullInput`] has no clipboard).
#[derive(Default)]
pub struct PatternInput {
    clipboard: Mutex<Option<String>>,
}

impl PatternInput {
    /// The text the last paste left on this desktop's clipboard.
    pub fn clipboard(&self) -> Option<String> {
        self.clipboard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl InputSink for PatternInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        NullInput.key(down, keysym)
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        NullInput.pointer(buttons, x, y)
    }
    fn cut_text(&self, text: &str) -> bool {
        *self.clipboard.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.to_owned());
        true
    }
}

/// One input event, as recorded by [`RecordingInput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputEvent {
    Key {
        down: bool,
        keysym: u32,
    },
    /// A key with its scan code (QEMU Extended Key Event).
    ScanKey {
        down: bool,
        keysym: u32,
        scancode: u8,
    },
    /// Buttons held: bit n-1 is button n (1-3 left, middle, right; 4-7
    /// the wheels; 8, 9 back and forward).
    Pointer {
        buttons: u16,
        x: u16,
        y: u16,
    },
    CutText(String),
}

/// Keeps the events (bounded) so tests can check what reached the desktop.
#[derive(Default)]
pub struct RecordingInput {
    events: Mutex<Vec<InputEvent>>,
    /// A desktop without a clipboard: pastes are recorded, and `cut_text`
    /// says they went nowhere.
    no_clipboard: bool,
}

const MAX_RECORDED: usize = 10_000;

impl RecordingInput {
    /// Records like the default, on a desktop that has no clipboard.
    pub fn without_clipboard() -> RecordingInput {
        RecordingInput {
            no_clipboard: true,
            ..RecordingInput::default()
        }
    }
    pub fn events(&self) -> Vec<InputEvent> {
        self.events.lock().unwrap().clone()
    }
    fn push(&self, e: InputEvent) {
        let mut v = self.events.lock().unwrap();
        if v.len() < MAX_RECORDED {
            v.push(e);
        }
    }
}

impl InputSink for RecordingInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.push(InputEvent::Key { down, keysym });
        true
    }
    fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        self.push(InputEvent::ScanKey {
            down,
            keysym,
            scancode,
        });
        true
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        self.push(InputEvent::Pointer { buttons, x, y });
        buttons
    }
    fn cut_text(&self, text: &str) -> bool {
        self.push(InputEvent::CutText(text.to_owned()));
        !self.no_clipboard
    }
}
