//! The keymap ticketvnc hands the Wayland compositor for its virtual
//! keyboard: every key code carries exactly one keysym, so the keysym a
//! viewer sends is typed as it is, whatever the customer's layout. Keysyms
//! not in the map (Unicode, dead keys, rare symbols) are given a key code
//! when first typed and the keymap is sent again (the least recently used
//! key that is not held makes room). Modifier state is tracked here too:
//! a virtual keyboard's keys do not move the compositor's modifier state,
//! the client sends it.

/// The first and last xkb key code used (evdev code + 8): 247 keys.
const FIRST: u32 = 9;
const LAST: u32 = 255;

/// Keysyms every keymap starts with: printable ASCII, the modifiers and the
/// keys of a PC keyboard, so ordinary typing never changes the keymap.
fn preloaded() -> Vec<u32> {
    let mut v: Vec<u32> = (0x20..=0x7e).collect();
    v.extend_from_slice(&[
        0xffe1, 0xffe2, 0xffe3, 0xffe4, 0xffe5, 0xffe7, 0xffe8, 0xffe9, 0xffea, 0xffeb, 0xffec,
        0xfe03, 0xff7f, // modifiers, ISO_Level3_Shift, Num_Lock
        0xff08, 0xff09, 0xff0d, 0xff1b, 0xffff, // BackSpace Tab Return Escape Delete
        0xff50, 0xff51, 0xff52, 0xff53, 0xff54, 0xff55, 0xff56,
        0xff57, // Home, arrows, Prior, Next, End
        0xff63, 0xff61, 0xff13, 0xff14, 0xff67, // Insert Print Pause Scroll_Lock Menu
    ]);
    v.extend(0xffbe..=0xffc9); // F1..F12
    v
}

/// The modifier a keysym drives: (real modifier bit, locks instead of
/// being held).
pub fn modifier_of(keysym: u32) -> Option<(u32, bool)> {
    // Real modifiers in xkb's fixed order: Shift Lock Control Mod1..Mod5.
    Some(match keysym {
        0xffe1 | 0xffe2 => (1 << 0, false), // Shift
        0xffe5 => (1 << 1, true),           // Caps_Lock
        0xffe3 | 0xffe4 => (1 << 2, false), // Control
        0xffe7..=0xffea => (1 << 3, false), // Meta, Alt: Mod1
        0xff7f => (1 << 4, true),           // Num_Lock: Mod2
        0xffeb..=0xffee => (1 << 6, false), // Super, Hyper: Mod4
        0xfe03 | 0xff7e => (1 << 7, false), // ISO_Level3_Shift, Mode_switch: Mod5
        _ => return None,
    })
}

fn modifier_name(bit: u32) -> &'static str {
    match bit {
        1 => "Shift",
        2 => "Lock",
        4 => "Control",
        8 => "Mod1",
        16 => "Mod2",
        64 => "Mod4",
        _ => "Mod5",
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    keysym: Option<u32>,
    held: bool,
    last_used: u64,
}

/// Key codes for keysyms, and the modifier state.
pub struct Keymap {
    slots: Vec<Slot>,
    clock: u64,
    locked: u32,
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap::new()
    }
}

impl Keymap {
    pub fn new() -> Keymap {
        let mut slots = vec![Slot::default(); (LAST - FIRST + 1) as usize];
        for (s, k) in slots.iter_mut().zip(preloaded()) {
            s.keysym = Some(k);
        }
        Keymap {
            slots,
            clock: 0,
            locked: 0,
        }
    }

    /// The evdev key code (xkb code - 8) for `keysym`, and whether the
    /// keymap changed to give it one (then send [`Keymap::text`] first).
    /// `None`: every key is held, nothing can be given up.
    pub fn code_for(&mut self, keysym: u32) -> Option<(u32, bool)> {
        self.clock += 1;
        if let Some(i) = self.slots.iter().position(|s| s.keysym == Some(keysym)) {
            self.slots[i].last_used = self.clock;
            return Some((i as u32 + FIRST - 8, false));
        }
        let i = match self.slots.iter().position(|s| s.keysym.is_none()) {
            Some(i) => i,
            None => self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.held && s.keysym.and_then(modifier_of).is_none())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)?,
        };
        self.slots[i] = Slot {
            keysym: Some(keysym),
            held: false,
            last_used: self.clock,
        };
        Some((i as u32 + FIRST - 8, true))
    }

    /// Record a press or release of the key with evdev code `code`;
    /// `false` for a release of a key that is not down.
    pub fn set_held(&mut self, code: u32, down: bool) -> bool {
        let Some(s) = self.slots.get_mut((code + 8).wrapping_sub(FIRST) as usize) else {
            return false;
        };
        if !down && !s.held {
            return false;
        }
        s.held = down;
        if down {
            if let Some((bit, true)) = s.keysym.and_then(modifier_of) {
                self.locked ^= bit;
            }
        }
        true
    }

    /// The evdev code of the held key that carries `keysym`.
    pub fn held_code_of(&self, keysym: u32) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.held && s.keysym == Some(keysym))
            .map(|i| i as u32 + FIRST - 8)
    }

    /// (depressed, locked) modifier masks.
    pub fn modifiers(&self) -> (u32, u32) {
        let depressed = self
            .slots
            .iter()
            .filter(|s| s.held)
            .filter_map(|s| s.keysym.and_then(modifier_of))
            .filter(|(_, lock)| !lock)
            .fold(0, |m, (bit, _)| m | bit);
        (depressed, self.locked)
    }

    /// Codes of the keys held now (to release them all).
    pub fn held(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.held)
            .map(|(i, _)| i as u32 + FIRST - 8)
            .collect()
    }

    /// The keymap in xkb's text format (what the compositor compiles).
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::from("xkb_keymap {\nxkb_keycodes \"ticketvnc\" {\n");
        let _ = writeln!(s, "minimum = 8;\nmaximum = {LAST};");
        for c in FIRST..=LAST {
            let _ = writeln!(s, "<K{c}> = {c};");
        }
        s.push_str("};\nxkb_types \"ticketvnc\" { include \"complete\" };\n");
        s.push_str("xkb_compatibility \"ticketvnc\" { include \"complete\" };\n");
        s.push_str("xkb_symbols \"ticketvnc\" {\n");
        let mut mods: Vec<(u32, u32)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let c = i as u32 + FIRST;
            if let Some(k) = slot.keysym {
                // Numeric keysyms (xkbcommon reads any integer >= 10 as one).
                let _ = writeln!(s, "key <K{c}> {{ [ 0x{k:x} ] }};");
                if let Some((bit, _)) = modifier_of(k) {
                    mods.push((bit, c));
                }
            }
        }
        for bit in [1, 2, 4, 8, 16, 64, 128] {
            let keys: Vec<String> = mods
                .iter()
                .filter(|(b, _)| *b == bit)
                .map(|(_, c)| format!("<K{c}>"))
                .collect();
            if !keys.is_empty() {
                let _ = writeln!(
                    s,
                    "modifier_map {} {{ {} }};",
                    modifier_name(bit),
                    keys.join(", ")
                );
            }
        }
        s.push_str("};\n};\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_preloaded_and_unicode_is_added() {
        let mut k = Keymap::new();
        let (a, changed) = k.code_for(0x61).unwrap();
        assert!(!changed);
        assert_eq!(k.code_for(0x61).unwrap(), (a, false));
        let (euro, changed) = k.code_for(0x10020ac).unwrap();
        assert!(changed);
        assert_ne!(euro, a);
        assert!(k
            .text()
            .contains(&format!("key <K{}> {{ [ 0x10020ac ] }};", euro + 8)));
        assert_eq!(k.code_for(0x10020ac).unwrap(), (euro, false));
    }

    #[test]
    fn a_full_map_gives_up_the_oldest_key_that_is_not_held() {
        let mut k = Keymap::new();
        let (held, _) = k.code_for(0x1000100).unwrap();
        assert!(k.set_held(held, true));
        let mut codes = std::collections::HashSet::new();
        for cp in 0x1000200..0x1000200 + 400 {
            let (c, _) = k.code_for(cp).unwrap();
            codes.insert(c);
            assert_ne!(c, held, "a held key was given away");
        }
        // The modifiers survive too.
        let t = k.text();
        assert!(t.contains("modifier_map Shift"));
        assert!(t.contains("modifier_map Control"));
        assert!(t.contains("[ 0x1000100 ]"));
        assert!(codes.iter().all(|&c| (1..=247).contains(&c)));
    }

    #[test]
    fn modifiers_follow_held_keys_and_locks_toggle() {
        let mut k = Keymap::new();
        let (shift, _) = k.code_for(0xffe1).unwrap();
        let (caps, _) = k.code_for(0xffe5).unwrap();
        k.set_held(shift, true);
        assert_eq!(k.modifiers(), (1, 0));
        k.set_held(caps, true);
        k.set_held(caps, false);
        assert_eq!(k.modifiers(), (1, 2));
        k.set_held(shift, false);
        assert_eq!(k.modifiers(), (0, 2));
        assert!(!k.set_held(shift, false), "a release of a key that is up");
        k.set_held(caps, true);
        assert_eq!(k.modifiers(), (0, 0));
    }
}
