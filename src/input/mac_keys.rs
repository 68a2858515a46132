//! `--keyboard mac`: a Mac technician's Command key acts as Control on the
//! customer's PC (Command+C copies, Command+V pastes) and Control as the
//! Super (Windows) key, so shortcuts work as the technician's hands know
//! them.

use super::{InputSink, QEMU_KEY};
use std::sync::Arc;

const CONTROL_L: u32 = 0xffe3;
const CONTROL_R: u32 = 0xffe4;
const META_L: u32 = 0xffe7;
const META_R: u32 = 0xffe8;
const SUPER_L: u32 = 0xffeb;
const SUPER_R: u32 = 0xffec;

/// Scan codes (QEMU numbering) of the same keys.
const SC_CONTROL_L: u8 = 0x1d;
const SC_CONTROL_R: u8 = 0x9d;
const SC_SUPER_L: u8 = 0xdb;
const SC_SUPER_R: u8 = 0xdc;

/// The keysym a Mac technician's key stands for. Mac viewers send Command
/// as Super or Meta.
pub fn swap_keysym(keysym: u32) -> u32 {
    match keysym {
        SUPER_L | META_L => CONTROL_L,
        SUPER_R | META_R => CONTROL_R,
        CONTROL_L => SUPER_L,
        CONTROL_R => SUPER_R,
        k if k & QEMU_KEY != 0 => QEMU_KEY | u32::from(swap_scancode((k & 0xff) as u8)),
        k => k,
    }
}

pub fn swap_scancode(code: u8) -> u8 {
    match code {
        SC_SUPER_L => SC_CONTROL_L,
        SC_SUPER_R => SC_CONTROL_R,
        SC_CONTROL_L => SC_SUPER_L,
        SC_CONTROL_R => SC_SUPER_R,
        c => c,
    }
}

/// Passes input on with Command and Control swapped. Presses and releases
/// are swapped alike, so a session's record of held keys (released when
/// it ends) stays true.
pub struct MacKeyboard {
    inner: Arc<dyn InputSink>,
}

impl MacKeyboard {
    pub fn new(inner: Arc<dyn InputSink>) -> MacKeyboard {
        MacKeyboard { inner }
    }
}

impl InputSink for MacKeyboard {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.inner.key(down, swap_keysym(keysym))
    }
    fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        self.inner
            .key_scancode(down, swap_keysym(keysym), swap_scancode(scancode))
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        self.inner.pointer(buttons, x, y)
    }
    fn cut_text(&self, text: &str) -> bool {
        self.inner.cut_text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputEvent, RecordingInput};

    #[test]
    fn command_and_control_swap_both_ways_and_nothing_else() {
        let rec = Arc::new(RecordingInput::default());
        let mac = MacKeyboard::new(rec.clone());
        mac.key(true, SUPER_L);
        mac.key(true, 0x63);
        mac.key(false, 0x63);
        mac.key(false, SUPER_L);
        mac.key(true, CONTROL_R);
        mac.key(false, CONTROL_R);
        mac.key_scancode(true, META_L, SC_SUPER_L);
        mac.key_scancode(true, QEMU_KEY | 0x1d, 0x1d);
        let k = |down, keysym| InputEvent::Key { down, keysym };
        assert_eq!(
            rec.events(),
            vec![
                k(true, CONTROL_L),
                k(true, 0x63),
                k(false, 0x63),
                k(false, CONTROL_L),
                k(true, SUPER_R),
                k(false, SUPER_R),
                InputEvent::ScanKey {
                    down: true,
                    keysym: CONTROL_L,
                    scancode: SC_CONTROL_L
                },
                InputEvent::ScanKey {
                    down: true,
                    keysym: QEMU_KEY | 0xdb,
                    scancode: SC_SUPER_L
                },
            ]
        );
    }
}
