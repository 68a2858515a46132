//! Viewers send X keysyms; Windows wants virtual-key codes or characters.
//! enigo's `Key::Other(n)` is a keysym on Linux but a virtual-key code on
//! Windows, so handing it the keysym (as the Linux path does) typed
//! keypad digits for letters. This module maps instead:
//!
//! - keys that are not characters (Return, arrows, F1-F24, modifiers,
//!   the keypad, ...) to their virtual-key code, pressed and released as
//!   the viewer does;
//! - characters to Unicode input (`KEYEVENTF_UNICODE`, `VK_PACKET`), typed on
//!   the press: what the viewer's layout produced arrives whatever the
//!   customer's layout, Shift or Caps Lock state (the way RealVNC and
//!   UltraVNC type characters they cannot find on the local layout);
//! - while Ctrl, Alt or the Windows key is held, letters, digits and space
//!   to their virtual-key code instead, so shortcuts (Ctrl+C, Alt+F4,
//!   Win+R) reach applications as key presses.
//!
//! AltGr (ISO_Level3_Shift) and Mode_switch are not injected: the viewer
//! already sends the character they select, and a Windows AltGr is Ctrl+Alt,
//! which would turn that character into a shortcut.

/// What one keysym press becomes on Windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinKey {
    /// A virtual-key code (press and release).
    Vk(u16),
    /// A character typed on the press (the release does nothing).
    Char(char),
    /// Nothing is injected.
    Ignore,
}

// Keysyms (X11 keysymdef.h) of the keys mapped to virtual keys.
const VK_TABLE: &[(u32, u16)] = &[
    (0xff08, 0x08), // BackSpace -> VK_BACK
    (0xff09, 0x09), // Tab
    (0xfe20, 0x09), // ISO_Left_Tab (Shift+Tab; the viewer sends the Shift)
    (0xff0b, 0x0c), // Clear
    (0xff0d, 0x0d), // Return
    (0xff13, 0x13), // Pause
    (0xff14, 0x91), // Scroll_Lock
    (0xff15, 0x2c), // Sys_Req -> VK_SNAPSHOT
    (0xff1b, 0x1b), // Escape
    (0xff50, 0x24), // Home
    (0xff51, 0x25), // Left
    (0xff52, 0x26), // Up
    (0xff53, 0x27), // Right
    (0xff54, 0x28), // Down
    (0xff55, 0x21), // Prior (Page Up)
    (0xff56, 0x22), // Next (Page Down)
    (0xff57, 0x23), // End
    (0xff60, 0x29), // Select
    (0xff61, 0x2c), // Print -> VK_SNAPSHOT
    (0xff62, 0x2b), // Execute
    (0xff63, 0x2d), // Insert
    (0xff67, 0x5d), // Menu -> VK_APPS
    (0xff6a, 0x2f), // Help
    (0xff6b, 0x03), // Break -> VK_CANCEL
    (0xff7f, 0x90), // Num_Lock
    (0xff80, 0x20), // KP_Space
    (0xff89, 0x09), // KP_Tab
    (0xff8d, 0x0d), // KP_Enter
    (0xff95, 0x24), // KP_Home
    (0xff96, 0x25), // KP_Left
    (0xff97, 0x26), // KP_Up
    (0xff98, 0x27), // KP_Right
    (0xff99, 0x28), // KP_Down
    (0xff9a, 0x21), // KP_Prior
    (0xff9b, 0x22), // KP_Next
    (0xff9c, 0x23), // KP_End
    (0xff9d, 0x0c), // KP_Begin -> VK_CLEAR
    (0xff9e, 0x2d), // KP_Insert
    (0xff9f, 0x2e), // KP_Delete
    (0xffaa, 0x6a), // KP_Multiply
    (0xffab, 0x6b), // KP_Add
    (0xffac, 0x6c), // KP_Separator
    (0xffad, 0x6d), // KP_Subtract
    (0xffae, 0x6e), // KP_Decimal
    (0xffaf, 0x6f), // KP_Divide
    (0xffbd, 0xbb), // KP_Equal -> VK_OEM_PLUS ('=' on US layouts)
    (0xffe1, 0xa0), // Shift_L
    (0xffe2, 0xa1), // Shift_R
    (0xffe3, 0xa2), // Control_L
    (0xffe4, 0xa3), // Control_R
    (0xffe5, 0x14), // Caps_Lock
    (0xffe7, 0x5b), // Meta_L -> VK_LWIN (Mac viewers' Command)
    (0xffe8, 0x5c), // Meta_R -> VK_RWIN
    (0xffe9, 0xa4), // Alt_L -> VK_LMENU
    (0xffea, 0xa5), // Alt_R -> VK_RMENU
    (0xffeb, 0x5b), // Super_L -> VK_LWIN
    (0xffec, 0x5c), // Super_R -> VK_RWIN
    (0xffff, 0x2e), // Delete
];

/// Keysyms that are never injected (see the module documentation).
const IGNORED: &[u32] = &[
    0xfe03, // ISO_Level3_Shift (AltGr)
    0xff7e, // Mode_switch
];

/// Modifier keysyms that make letters and digits shortcuts: Control, Meta,
/// Alt, Super (left and right).
pub fn is_command_modifier(keysym: u32) -> bool {
    matches!(keysym, 0xffe3 | 0xffe4 | 0xffe7..=0xffec)
}

/// What a press of `keysym` becomes, `command` telling whether Ctrl, Alt,
/// Meta or Super is held.
pub fn map(keysym: u32, command: bool) -> WinKey {
    if IGNORED.contains(&keysym) {
        return WinKey::Ignore;
    }
    if let Some(&(_, vk)) = VK_TABLE.iter().find(|(k, _)| *k == keysym) {
        return WinKey::Vk(vk);
    }
    // Keypad digits: VK_NUMPAD0..9.
    if (0xffb0..=0xffb9).contains(&keysym) {
        return WinKey::Vk(0x60 + (keysym - 0xffb0) as u16);
    }
    // F1..F24: VK_F1..VK_F24.
    if (0xffbe..=0xffd5).contains(&keysym) {
        return WinKey::Vk(0x70 + (keysym - 0xffbe) as u16);
    }
    if keysym == 0x20 {
        return WinKey::Vk(0x20);
    }
    if command {
        match keysym {
            0x30..=0x39 | 0x41..=0x5a => return WinKey::Vk(keysym as u16),
            0x61..=0x7a => return WinKey::Vk((keysym - 0x20) as u16),
            _ => {}
        }
    }
    match xkeysym::Keysym::new(keysym).key_char() {
        Some(c) if !c.is_control() => WinKey::Char(c),
        _ => WinKey::Ignore,
    }
}

/// Injects viewers' keys through enigo on Windows, remembering which
/// virtual keys it pressed so each release matches its press (a letter
/// pressed as a shortcut with Ctrl held is released as that key even when
/// Ctrl went up first).
#[derive(Default)]
pub struct KeyState {
    /// Keysyms whose press was injected as a virtual key, with that key.
    /// Bounded: only the keysyms mapped to virtual keys above can get in.
    pressed: Vec<(u32, u16)>,
    /// Command modifiers held (keysyms).
    command: Vec<u32>,
}

impl KeyState {
    /// What to do for one key event: the virtual key to press or release,
    /// or a character to type.
    pub fn event(&mut self, down: bool, keysym: u32) -> Option<(WinKey, bool)> {
        if is_command_modifier(keysym) {
            self.command.retain(|k| *k != keysym);
            if down {
                self.command.push(keysym);
            }
        }
        if !down {
            let i = self.pressed.iter().position(|(k, _)| *k == keysym)?;
            let (_, vk) = self.pressed.swap_remove(i);
            return Some((WinKey::Vk(vk), false));
        }
        match map(keysym, !self.command.is_empty()) {
            WinKey::Vk(vk) => {
                if !self.pressed.iter().any(|(k, _)| *k == keysym) {
                    self.pressed.push((keysym, vk));
                }
                Some((WinKey::Vk(vk), true))
            }
            WinKey::Char(c) => Some((WinKey::Char(c), true)),
            WinKey::Ignore => None,
        }
    }
}

#[cfg(target_os = "windows")]
pub(super) fn inject(
    enigo: &mut enigo::Enigo,
    state: &mut KeyState,
    down: bool,
    keysym: u32,
) -> enigo::InputResult<()> {
    use enigo::{Direction, Key, Keyboard};
    match state.event(down, keysym) {
        Some((WinKey::Vk(vk), press)) => {
            let dir = if press {
                Direction::Press
            } else {
                Direction::Release
            };
            enigo.key(Key::Other(vk as u32), dir)
        }
        Some((WinKey::Char(c), _)) => {
            let mut buf = [0u8; 4];
            enigo.text(c.encode_utf8(&mut buf))
        }
        Some((WinKey::Ignore, _)) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_are_typed_as_unicode() {
        assert_eq!(map(0x61, false), WinKey::Char('a'));
        assert_eq!(map(0x41, false), WinKey::Char('A'));
        assert_eq!(map(0x21, false), WinKey::Char('!'));
        assert_eq!(map(0xe4, false), WinKey::Char('ä'));
        assert_eq!(map(0x20ac, false), WinKey::Char('€')); // EuroSign
        assert_eq!(map(0x0100_20ac, false), WinKey::Char('€'));
        assert_eq!(map(0x06c1, false), WinKey::Char('а')); // Cyrillic_a
        assert_eq!(map(0x0100_d800, false), WinKey::Ignore); // a surrogate
    }

    #[test]
    fn special_keys_are_virtual_keys() {
        assert_eq!(map(0xff0d, false), WinKey::Vk(0x0d));
        assert_eq!(map(0xff1b, false), WinKey::Vk(0x1b));
        assert_eq!(map(0xff51, false), WinKey::Vk(0x25));
        assert_eq!(map(0xffbe, false), WinKey::Vk(0x70)); // F1
        assert_eq!(map(0xffd5, false), WinKey::Vk(0x87)); // F24
        assert_eq!(map(0xffb7, false), WinKey::Vk(0x67)); // KP_7
        assert_eq!(map(0xffe1, false), WinKey::Vk(0xa0)); // Shift_L
        assert_eq!(map(0x20, false), WinKey::Vk(0x20));
        assert_eq!(map(0xfe03, false), WinKey::Ignore);
        assert_eq!(map(0xffd6, false), WinKey::Ignore); // F25: none on Windows
    }

    #[test]
    fn shortcuts_use_virtual_keys() {
        assert_eq!(map(0x63, true), WinKey::Vk(0x43)); // Ctrl+c -> VK_C
        assert_eq!(map(0x43, true), WinKey::Vk(0x43));
        assert_eq!(map(0x35, true), WinKey::Vk(0x35));
        assert_eq!(map(0x2b, true), WinKey::Char('+'));
    }

    #[test]
    fn releases_match_presses() {
        let mut s = KeyState::default();
        assert_eq!(s.event(true, 0xffe3), Some((WinKey::Vk(0xa2), true)));
        assert_eq!(s.event(true, 0x63), Some((WinKey::Vk(0x43), true)));
        // Ctrl up first, then the letter: still VK_C that goes up.
        assert_eq!(s.event(false, 0xffe3), Some((WinKey::Vk(0xa2), false)));
        assert_eq!(s.event(false, 0x63), Some((WinKey::Vk(0x43), false)));
        // Without Ctrl the letter is a character; its release does nothing.
        assert_eq!(s.event(true, 0x63), Some((WinKey::Char('c'), true)));
        assert_eq!(s.event(false, 0x63), None);
        // A release of something never pressed does nothing.
        assert_eq!(s.event(false, 0xff0d), None);
        assert!(s.pressed.is_empty() && s.command.is_empty());
    }

    #[test]
    fn held_state_stays_bounded() {
        let mut s = KeyState::default();
        for k in (0..0x1_0000u32).chain(0x0100_0000..0x0100_1000) {
            let _ = s.event(true, k);
        }
        assert!(s.pressed.len() <= VK_TABLE.len() + 10 + 24 + 1 + 36);
        assert!(s.command.len() <= 8);
    }
}
