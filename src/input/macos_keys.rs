//! Viewers send X keysyms; macOS wants virtual key codes (`kVK_*`,
//! Carbon's Events.h) or characters. enigo's `Key::Other(n)` is a keysym
//! on Linux but a `CGKeyCode` on macOS, so handing it the keysym (as the
//! Linux path did on every platform but Windows) pressed F6 for `a`
//! (keysym 0x61 = `kVK_F6`) and failed for every keysym above 0xFFFF.
//! This module maps instead, as `windows_keys` does for Windows:
//!
//! - keys that are not characters (Return, Tab, Escape, Delete, arrows,
//!   Home/End/Page, F1-F20, the keypad, the modifiers) to their virtual
//!   key codes, pressed and released as the viewer does. Control is
//!   Control, Alt is Option, Super and Meta are Command (what a Mac
//!   viewer sends for Command); `--keyboard mac` in front swaps Control
//!   and Command, so a PC technician's Ctrl+C is the Mac's Command+C;
//! - characters to text typed on the press (layout-independent: what the
//!   viewer's keyboard produced arrives whatever the customer's layout);
//! - while Control, Option or Command is held, letters, digits and space
//!   as key presses (enigo finds the key producing that character on the
//!   customer's layout), so Command+C, Command+Tab, Control+A are
//!   shortcuts.
//!
//! AltGr (ISO_Level3_Shift) and Mode_switch are not injected: the viewer
//! sends the character they select.

/// What one keysym press becomes on macOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacKey {
    /// A virtual key code (`kVK_*`), pressed and released.
    Code(u16),
    /// The key producing this character on the customer's layout, pressed
    /// and released (a shortcut under a modifier).
    Key(char),
    /// A character typed on the press (the release does nothing).
    Char(char),
    /// Nothing is injected.
    Ignore,
}

/// Keysyms (X11 keysymdef.h) of keys that have a virtual key code.
const CODE_TABLE: &[(u32, u16)] = &[
    (0xff08, 0x33), // BackSpace -> kVK_Delete
    (0xff09, 0x30), // Tab
    (0xfe20, 0x30), // ISO_Left_Tab (the viewer sends the Shift)
    (0xff0b, 0x47), // Clear -> kVK_ANSI_KeypadClear
    (0xff0d, 0x24), // Return
    (0xff1b, 0x35), // Escape
    (0xffff, 0x75), // Delete -> kVK_ForwardDelete
    (0xff50, 0x73), // Home
    (0xff51, 0x7b), // Left
    (0xff52, 0x7e), // Up
    (0xff53, 0x7c), // Right
    (0xff54, 0x7d), // Down
    (0xff55, 0x74), // Prior (Page Up)
    (0xff56, 0x79), // Next (Page Down)
    (0xff57, 0x77), // End
    (0xff63, 0x72), // Insert -> kVK_Help (where Mac keyboards had Insert)
    (0xff6a, 0x72), // Help
    (0xff8d, 0x4c), // KP_Enter
    (0xffaa, 0x43), // KP_Multiply
    (0xffab, 0x45), // KP_Add
    (0xffad, 0x4e), // KP_Subtract
    (0xffae, 0x41), // KP_Decimal
    (0xffaf, 0x4b), // KP_Divide
    (0xffbd, 0x51), // KP_Equal
    (0xffe1, 0x38), // Shift_L
    (0xffe2, 0x3c), // Shift_R
    (0xffe3, 0x3b), // Control_L
    (0xffe4, 0x3e), // Control_R
    (0xffe5, 0x39), // Caps_Lock
    (0xffe7, 0x37), // Meta_L -> Command
    (0xffe8, 0x36), // Meta_R -> right Command
    (0xffe9, 0x3a), // Alt_L -> Option
    (0xffea, 0x3d), // Alt_R -> right Option
    (0xffeb, 0x37), // Super_L -> Command
    (0xffec, 0x36), // Super_R -> right Command
    (0x0020, 0x31), // space
];

/// kVK_ANSI_Keypad0 .. 9 (not contiguous: 8 and 9 skip 0x5a).
const KEYPAD: [u16; 10] = [0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5b, 0x5c];
/// kVK_F1 .. kVK_F20.
const FKEYS: [u16; 20] = [
    0x7a, 0x78, 0x63, 0x76, 0x60, 0x61, 0x62, 0x64, 0x65, 0x6d, 0x67, 0x6f, 0x69, 0x6b, 0x71, 0x6a,
    0x40, 0x4f, 0x50, 0x5a,
];

/// Keysyms that are never injected: ISO_Level3_Shift, Mode_switch,
/// ISO_Level5_Shift (the viewer sends the character they select).
const IGNORED: &[u32] = &[0xfe03, 0xff7e, 0xfe11];

/// Modifier keysyms that make letters and digits shortcuts: Control,
/// Meta, Alt, Super (left and right).
pub fn is_command_modifier(keysym: u32) -> bool {
    matches!(keysym, 0xffe3 | 0xffe4 | 0xffe7..=0xffec)
}

/// What a press of `keysym` becomes, `command` telling whether Control,
/// Option or Command is held.
pub fn map(keysym: u32, command: bool) -> MacKey {
    if IGNORED.contains(&keysym) {
        return MacKey::Ignore;
    }
    if let Some(&(_, code)) = CODE_TABLE.iter().find(|(k, _)| *k == keysym) {
        return MacKey::Code(code);
    }
    if (0xffb0..=0xffb9).contains(&keysym) {
        return MacKey::Code(KEYPAD[(keysym - 0xffb0) as usize]);
    }
    if (0xffbe..=0xffd1).contains(&keysym) {
        return MacKey::Code(FKEYS[(keysym - 0xffbe) as usize]);
    }
    if command {
        match keysym {
            0x30..=0x39 | 0x61..=0x7a => return MacKey::Key(keysym as u8 as char),
            0x41..=0x5a => return MacKey::Key((keysym as u8 as char).to_ascii_lowercase()),
            _ => {}
        }
    }
    match xkeysym::Keysym::new(keysym).key_char() {
        Some(c) if !c.is_control() => MacKey::Char(c),
        _ => MacKey::Ignore,
    }
}

/// Remembers which keys a press injected so each release matches its
/// press (a letter pressed as a shortcut with Command held is released as
/// that key even if Command went up first).
#[derive(Default)]
pub struct KeyState {
    /// Keysyms whose press was injected as a key, with that key. Bounded:
    /// only keysyms of the tables above and letters and digits get in.
    pressed: Vec<(u32, MacKey)>,
    /// Command modifiers held (keysyms).
    command: Vec<u32>,
}

impl KeyState {
    /// What to do for one key event, and whether it is a press.
    pub fn event(&mut self, down: bool, keysym: u32) -> Option<(MacKey, bool)> {
        if is_command_modifier(keysym) {
            self.command.retain(|k| *k != keysym);
            if down {
                self.command.push(keysym);
            }
        }
        if !down {
            let i = self.pressed.iter().position(|(k, _)| *k == keysym)?;
            let (_, key) = self.pressed.swap_remove(i);
            return Some((key, false));
        }
        match map(keysym, !self.command.is_empty()) {
            key @ (MacKey::Code(_) | MacKey::Key(_)) => {
                if !self.pressed.iter().any(|(k, _)| *k == keysym) {
                    self.pressed.push((keysym, key));
                }
                Some((key, true))
            }
            MacKey::Char(c) => Some((MacKey::Char(c), true)),
            MacKey::Ignore => None,
        }
    }
}

#[cfg(target_os = "macos")]
pub(super) fn inject(
    enigo: &mut enigo::Enigo,
    state: &mut KeyState,
    down: bool,
    keysym: u32,
) -> enigo::InputResult<()> {
    use enigo::{Direction, Key, Keyboard};
    let dir = |press: bool| {
        if press {
            Direction::Press
        } else {
            Direction::Release
        }
    };
    match state.event(down, keysym) {
        Some((MacKey::Code(code), press)) => enigo.key(Key::Other(code as u32), dir(press)),
        Some((MacKey::Key(c), press)) => enigo.key(Key::Unicode(c), dir(press)),
        Some((MacKey::Char(c), _)) => {
            let mut buf = [0u8; 4];
            enigo.text(c.encode_utf8(&mut buf))
        }
        Some((MacKey::Ignore, _)) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_not_function_keys() {
        // The old path pressed kVK_F6 (0x61) for keysym `a`.
        assert_eq!(map(0x61, false), MacKey::Char('a'));
        assert_eq!(map(0x41, false), MacKey::Char('A'));
        assert_eq!(map(0xe4, false), MacKey::Char('ä'));
        assert_eq!(map(0x20ac, false), MacKey::Char('€'));
        assert_eq!(map(0x0100_20ac, false), MacKey::Char('€'));
    }

    #[test]
    fn special_keys_and_modifiers() {
        assert_eq!(map(0xff0d, false), MacKey::Code(0x24)); // Return
        assert_eq!(map(0xff08, false), MacKey::Code(0x33)); // BackSpace
        assert_eq!(map(0xff51, false), MacKey::Code(0x7b)); // Left
        assert_eq!(map(0xffbe, false), MacKey::Code(0x7a)); // F1
        assert_eq!(map(0xffd1, false), MacKey::Code(0x5a)); // F20
        assert_eq!(map(0xffd2, false), MacKey::Ignore); // F21: none on a Mac
        assert_eq!(map(0xffb8, false), MacKey::Code(0x5b)); // KP_8
        assert_eq!(map(0xffeb, false), MacKey::Code(0x37)); // Super_L: Command
        assert_eq!(map(0xffe7, false), MacKey::Code(0x37)); // Meta_L: Command
        assert_eq!(map(0xffe9, false), MacKey::Code(0x3a)); // Alt_L: Option
        assert_eq!(map(0xffe3, false), MacKey::Code(0x3b)); // Control_L
        assert_eq!(map(0x20, false), MacKey::Code(0x31));
        assert_eq!(map(0xfe03, false), MacKey::Ignore);
    }

    #[test]
    fn shortcuts_press_the_key_and_release_it() {
        let mut s = KeyState::default();
        assert_eq!(s.event(true, 0xffeb), Some((MacKey::Code(0x37), true)));
        assert_eq!(s.event(true, 0x43), Some((MacKey::Key('c'), true)));
        // Command up first, then the letter: the key still goes up.
        assert_eq!(s.event(false, 0xffeb), Some((MacKey::Code(0x37), false)));
        assert_eq!(s.event(false, 0x43), Some((MacKey::Key('c'), false)));
        // Without a modifier a letter is typed; its release does nothing.
        assert_eq!(s.event(true, 0x63), Some((MacKey::Char('c'), true)));
        assert_eq!(s.event(false, 0x63), None);
        assert_eq!(s.event(false, 0xff0d), None);
        assert!(s.pressed.is_empty() && s.command.is_empty());
    }

    #[test]
    fn held_state_stays_bounded() {
        let mut s = KeyState::default();
        s.event(true, 0xffe3);
        for k in (0..0x1_0000u32).chain(0x0100_0000..0x0100_1000) {
            let _ = s.event(true, k);
        }
        // The tables, the keypad, F1-F20, and letters (both cases) and digits.
        assert!(s.pressed.len() <= CODE_TABLE.len() + 10 + 20 + 62);
        assert!(s.command.len() <= 8);
    }
}
