//! Which X keycode, and which Shift / AltGr state, types a keysym on the
//! customer's keyboard layout (the core keyboard mapping as the X server
//! reports it), whatever the viewer's own layout.
//!
//! A viewer sends keysyms (the character its layout made of a key) along
//! with the modifiers its user holds. On another layout the same
//! character sits elsewhere: `/` is Shift+7 on a German layout, a plain key
//! on a US one; `@` is AltGr+Q on a German layout, Shift+2 on a US one. So
//! for a keysym this finds a key and level that produce it, and the
//! modifier changes needed from the server's current state: Shift or the
//! level-three key (AltGr) pressed or let go around that one key, as x11vnc
//! does. A keysym on no key gets a spare keycode (one with no symbols)
//! bound to it, as x11vnc -xkb and TigerVNC's x0vncserver do.
//!
//! Pure: no X connection here (see `x11.rs`), so the choices are unit
//! tested against real layouts' mappings.

/// No symbol in a keymap column.
pub const NO_SYMBOL: u32 = 0;
/// Core modifier bits (state masks and modifier-map rows).
pub const SHIFT: usize = 0;
pub const LOCK: usize = 1;
pub const CONTROL: usize = 2;

const XK_ISO_LEVEL3_SHIFT: u32 = 0xfe03;
const XK_NUM_LOCK: u32 = 0xff7f;
const XK_SHIFT_L: u32 = 0xffe1;
const XK_SHIFT_R: u32 = 0xffe2;

/// Keymap columns (core mapping of an XKB keyboard, group 1): level 1, 2,
/// 3 (AltGr) and 4 (Shift+AltGr).
const LEVEL_COLUMNS: [usize; 4] = [0, 1, 4, 5];

/// The server's core keyboard mapping and modifier map.
#[derive(Clone, Debug, Default)]
pub struct Keymap {
    min_keycode: u8,
    per: usize,
    syms: Vec<u32>,
    /// Keycodes in each of the eight modifiers (Shift, Lock, Control,
    /// Mod1..Mod5).
    modmap: [Vec<u8>; 8],
}

/// What injecting a key press takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The key to press (and later release).
    pub keycode: u8,
    /// Modifier keys held now that must be let go of before the key and
    /// pressed again after it.
    pub lift: Vec<u8>,
    /// Modifier keys to press before the key and let go of after it.
    pub add: Vec<u8>,
}

/// The answer for a keysym.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Key(Plan),
    /// On no key (or on none reachable): bind it to a spare keycode.
    Unmapped,
}

impl Keymap {
    /// From GetKeyboardMapping (keysyms of keycodes `min_keycode..`,
    /// `per` a keycode) and GetModifierMapping (8 rows of equal length).
    pub fn new(min_keycode: u8, per: u8, syms: Vec<u32>, modifier_keycodes: &[u8]) -> Keymap {
        let per = (per as usize).max(1);
        let row = modifier_keycodes.len() / 8;
        let mut modmap: [Vec<u8>; 8] = Default::default();
        if row > 0 {
            for (i, m) in modmap.iter_mut().enumerate() {
                *m = modifier_keycodes[i * row..(i + 1) * row]
                    .iter()
                    .copied()
                    .filter(|&k| k != 0)
                    .collect();
            }
        }
        Keymap {
            min_keycode: min_keycode.max(8),
            per,
            syms,
            modmap,
        }
    }

    fn keycodes(&self) -> impl Iterator<Item = u8> + '_ {
        let n = self.syms.len() / self.per;
        (0..n).filter_map(move |i| u8::try_from(self.min_keycode as usize + i).ok())
    }

    /// The keysym in `col` of `keycode` (NoSymbol outside the map).
    pub fn sym(&self, keycode: u8, col: usize) -> u32 {
        if col >= self.per || keycode < self.min_keycode {
            return NO_SYMBOL;
        }
        let i = (keycode - self.min_keycode) as usize * self.per + col;
        self.syms.get(i).copied().unwrap_or(NO_SYMBOL)
    }

    /// Keysyms a keycode holds (its row).
    pub fn per_keycode(&self) -> u8 {
        self.per as u8
    }

    /// The row to bind a keysym to a spare keycode with: a letter as its
    /// lower and upper case (Shift and Caps Lock work as on any letter
    /// key), anything else alone (one level, whatever the modifiers).
    pub fn binding_row(&self, keysym: u32) -> Vec<u32> {
        let mut row = vec![NO_SYMBOL; self.per];
        let pair = keysym_char(keysym).and_then(|c| {
            let lower = single(c.to_lowercase())?;
            let upper = single(c.to_uppercase())?;
            (lower != upper).then(|| (char_keysym(lower), char_keysym(upper)))
        });
        match pair {
            Some((l, u)) if self.per >= 2 => {
                row[0] = l;
                row[1] = u;
            }
            _ => row[0] = keysym,
        }
        row
    }

    /// Set `keycode`'s row (after binding it).
    pub fn set_row(&mut self, keycode: u8, new: &[u32]) {
        if keycode < self.min_keycode || new.len() != self.per {
            return;
        }
        let i = (keycode - self.min_keycode) as usize * self.per;
        if let Some(row) = self.syms.get_mut(i..i + self.per) {
            row.copy_from_slice(new);
        }
    }

    /// Keycodes without any symbol, highest first (free to bind).
    pub fn spare_keycodes(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self
            .keycodes()
            .filter(|&k| (0..self.per).all(|c| self.sym(k, c) == NO_SYMBOL))
            .collect();
        v.reverse();
        v
    }

    /// The modifier (0..8) `keycode` belongs to.
    fn modifier_of(&self, keycode: u8) -> Option<usize> {
        self.modmap.iter().position(|m| m.contains(&keycode))
    }

    /// The first keycode whose level 1 is `keysym` and that is in a
    /// modifier row, with that modifier.
    fn modifier_key(&self, keysym: u32) -> Option<(u8, usize)> {
        self.keycodes()
            .filter(|&k| self.sym(k, 0) == keysym)
            .find_map(|k| self.modifier_of(k).map(|m| (k, m)))
    }

    /// The modifier that selects level 3 (AltGr), and a key for it.
    fn level3(&self) -> Option<(u8, usize)> {
        self.modifier_key(XK_ISO_LEVEL3_SHIFT)
            .filter(|&(_, m)| m != SHIFT && m != LOCK && m != CONTROL)
    }

    fn shift_key(&self) -> Option<u8> {
        self.modifier_key(XK_SHIFT_L)
            .or_else(|| self.modifier_key(XK_SHIFT_R))
            .filter(|&(_, m)| m == SHIFT)
            .map(|(k, _)| k)
            .or_else(|| self.modmap[SHIFT].first().copied())
    }

    /// The key for a keysym pressed as it is, whatever the modifiers:
    /// modifiers, function, cursor and editing keys (Shift+Tab, Shift+Left
    /// and Ctrl+Return mean what they say), preferring level 1.
    fn plain_key(&self, keysym: u32) -> Option<u8> {
        (0..self.per.min(6)).find_map(|c| self.keycodes().find(|&k| self.sym(k, c) == keysym))
    }

    /// How to type `keysym` given the core modifier `state` and the keys
    /// now `down` (QueryKeymap's bit vector).
    pub fn lookup(&self, keysym: u32, state: u16, down: &[u8; 32]) -> Lookup {
        self.lookup_in(keysym, state, down, None)
    }

    /// Like [`Keymap::lookup`], on `keycode` only (the key a scan code
    /// names): `None` when that key does not type `keysym`.
    pub fn lookup_on(&self, keycode: u8, keysym: u32, state: u16, down: &[u8; 32]) -> Option<Plan> {
        match self.lookup_in(keysym, state, down, Some(keycode)) {
            Lookup::Key(p) => Some(p),
            Lookup::Unmapped => None,
        }
    }

    fn lookup_in(&self, keysym: u32, state: u16, down: &[u8; 32], only: Option<u8>) -> Lookup {
        if keysym == NO_SYMBOL {
            return Lookup::Unmapped;
        }
        if !adjusts_level(keysym) {
            let key = match only {
                Some(k) => (0..self.per.min(6))
                    .any(|c| self.sym(k, c) == keysym)
                    .then_some(k),
                None => self.plain_key(keysym),
            };
            return match key {
                Some(k) => Lookup::Key(Plan {
                    keycode: k,
                    lift: Vec::new(),
                    add: Vec::new(),
                }),
                None => Lookup::Unmapped,
            };
        }
        let has = |m: usize| state & (1 << m) != 0;
        let level3 = self.level3();
        let num_lock = self.modifier_key(XK_NUM_LOCK).map(|(_, m)| m);
        let shift_on = has(SHIFT);
        let l3_on = level3.is_some_and(|(_, m)| has(m));
        let is_down = |k: u8| down[k as usize / 8] & (1 << (k % 8)) != 0;

        let mut best: Option<Candidate> = None;
        for k in self.keycodes().filter(|&k| only.is_none_or(|o| o == k)) {
            for (level, &col) in LEVEL_COLUMNS.iter().enumerate() {
                if col >= self.per || self.sym(k, col) != keysym {
                    continue;
                }
                let want_l3 = level >= 2;
                let want_shift_level = level % 2 == 1;
                // Caps Lock shifts letters at levels 1-2; Num Lock the keypad.
                let toggled = if level < 2 && is_alphabetic(self.sym(k, 0), self.sym(k, 1)) {
                    has(LOCK)
                } else if is_keypad(keysym) {
                    num_lock.is_some_and(&has)
                } else {
                    false
                };
                let other = |c: usize| self.sym(k, c);
                // Shift does not matter when the other level of this key's
                // shift pair is empty or the same symbol.
                let pair = if want_shift_level { col - 1 } else { col + 1 };
                let shift = if other(pair) == NO_SYMBOL || other(pair) == keysym {
                    None
                } else {
                    Some(want_shift_level != toggled)
                };
                // AltGr does not matter when the key has no level 3.
                let empty_or_same = |c: usize| other(c) == NO_SYMBOL || other(c) == keysym;
                let l3 = if !want_l3 && empty_or_same(4) && empty_or_same(5) {
                    None
                } else {
                    Some(want_l3)
                };
                if l3 == Some(true) && level3.is_none() {
                    continue;
                }
                if shift == Some(true) && !shift_on && self.shift_key().is_none() {
                    continue;
                }
                let cost = u32::from(shift.is_some_and(|s| s != shift_on))
                    + u32::from(l3.is_some_and(|l| l != l3_on));
                if best.is_none_or(|b| cost < b.cost) {
                    best = Some(Candidate {
                        cost,
                        keycode: k,
                        shift,
                        l3,
                    });
                }
            }
        }
        let Some(Candidate {
            keycode, shift, l3, ..
        }) = best
        else {
            return Lookup::Unmapped;
        };
        let mut plan = Plan {
            keycode,
            lift: Vec::new(),
            add: Vec::new(),
        };
        let mut adjust = |want: Option<bool>, on: bool, m: usize, key: Option<u8>| match want {
            Some(true) if !on => plan.add.extend(key),
            Some(false) if on => plan
                .lift
                .extend(self.modmap[m].iter().copied().filter(|&k| is_down(k))),
            _ => {}
        };
        adjust(shift, shift_on, SHIFT, self.shift_key());
        if let Some((l3_key, m)) = level3 {
            adjust(l3, l3_on, m, Some(l3_key));
        }
        // A modifier on only through a lock (Shift Lock) cannot be lifted
        // by letting keys go: type it on a spare key instead.
        if shift == Some(false)
            && shift_on
            && !plan.lift.iter().any(|&k| self.modmap[SHIFT].contains(&k))
        {
            return Lookup::Unmapped;
        }
        Lookup::Key(plan)
    }
}

/// The X keycode (evdev: Linux key code + 8) of a scan code in QEMU's
/// numbering (XT set 1; 0x80 set for an 0xE0-prefixed code). `None` for
/// codes without a key here.
pub fn qnum_to_evdev(qnum: u8) -> Option<u8> {
    let linux = match qnum {
        // The main block, keypad and F-keys: XT codes are Linux key codes.
        0x01..=0x53 | 0x56..=0x58 => qnum,
        0x54 | 0xb7 => 99, // Print / SysRq (rfbproto: 0xb7 a synonym)
        0xc6 => 119,       // Pause
        0x9c => 96,        // KP_Enter
        0x9d => 97,        // Control_R
        0xb5 => 98,        // KP_Divide
        0xb8 => 100,       // Alt_R / AltGr
        0xc7 => 102,       // Home
        0xc8 => 103,       // Up
        0xc9 => 104,       // Prior
        0xcb => 105,       // Left
        0xcd => 106,       // Right
        0xcf => 107,       // End
        0xd0 => 108,       // Down
        0xd1 => 109,       // Next
        0xd2 => 110,       // Insert
        0xd3 => 111,       // Delete
        0xdb => 125,       // Super_L
        0xdc => 126,       // Super_R
        0xdd => 127,       // Menu
        _ => return None,
    };
    Some(linux + 8)
}

/// A key and level that type a keysym.
#[derive(Clone, Copy)]
struct Candidate {
    /// Modifier changes needed.
    cost: u32,
    keycode: u8,
    /// Shift wanted down or up (`None`: does not matter for this key).
    shift: Option<bool>,
    /// The level-three modifier (AltGr) wanted down or up.
    l3: Option<bool>,
}

/// Keysyms whose level is chosen to match: printable characters, dead
/// keys and the keypad. Modifiers, function, cursor and editing keys are
/// pressed as they are (Shift+Tab, Shift+Left, Ctrl+Home).
fn adjusts_level(keysym: u32) -> bool {
    !matches!(keysym, 0xfe00..=0xfe4f | 0xfe90..=0xff7f | 0xffbe..=0xffff)
}

fn is_keypad(keysym: u32) -> bool {
    matches!(keysym, 0xff80..=0xffbd)
}

/// Whether a key's levels 1 and 2 are a lower and upper case letter (Caps
/// Lock applies to it).
fn is_alphabetic(lower: u32, upper: u32) -> bool {
    match (keysym_char(lower), keysym_char(upper)) {
        (Some(l), Some(u)) => l != u && l.is_lowercase() && l.to_uppercase().eq(std::iter::once(u)),
        _ => false,
    }
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// The keysym for a character: Latin-1 as itself, the rest as Unicode.
fn char_keysym(c: char) -> u32 {
    match c as u32 {
        n @ (0x20..=0x7e | 0xa0..=0xff) => n,
        n => 0x0100_0000 + n,
    }
}

/// The character a Latin-1 or Unicode keysym stands for.
fn keysym_char(keysym: u32) -> Option<char> {
    match keysym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(keysym),
        0x0100_0100..=0x0110_ffff => char::from_u32(keysym - 0x0100_0000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few rows of real mappings (`xmodmap -pke` under Xvfb with
    /// `setxkbmap de` / `us`), 7 keysyms a keycode.
    fn map(rows: &[(u8, &[u32])]) -> Keymap {
        let per = 7usize;
        let min = 8u8;
        let mut syms = vec![0u32; (256 - min as usize) * per];
        for (k, row) in rows {
            let i = (*k - min) as usize * per;
            syms[i..i + row.len()].copy_from_slice(row);
        }
        // Shift: 50, 62; Lock: 66; Control: 37, 105; Mod1: 64; Mod2: 77;
        // Mod5: 92, 108 (ISO_Level3_Shift).
        let mut modmap = vec![0u8; 8 * 2];
        modmap[0] = 50;
        modmap[1] = 62;
        modmap[2] = 66;
        modmap[4] = 37;
        modmap[5] = 105;
        modmap[6] = 64;
        modmap[8] = 77;
        modmap[14] = 92;
        modmap[15] = 108;
        Keymap::new(min, per as u8, syms, &modmap)
    }

    const MODS: &[(u8, &[u32])] = &[
        (50, &[0xffe1]),
        (62, &[0xffe2]),
        (66, &[0xffe5]),
        (37, &[0xffe3]),
        (105, &[0xffe4]),
        (64, &[0xffe9]),
        (77, &[0xff7f]),
        (92, &[0xfe03]),
        (108, &[0xfe03]),
        (23, &[0xff09, 0xfe20, 0xff09, 0xfe20]),
        (65, &[0x20, 0, 0x20]),
    ];

    fn german() -> Keymap {
        let mut rows = MODS.to_vec();
        rows.extend_from_slice(&[
            (11, &[0x32, 0x22, 0x32, 0x22, 0xb2, 0xac4, 0xb2][..]),
            (16, &[0x37, 0x2f, 0x37, 0x2f, 0x7b, 0xac6, 0x7b]),
            (24, &[0x71, 0x51, 0x71, 0x51, 0x40, 0x7d9, 0x40]),
            (26, &[0x65, 0x45, 0x65, 0x45, 0x20ac, 0x20ac, 0x20ac]),
            (29, &[0x7a, 0x5a, 0x7a, 0x5a]),
            (52, &[0x79, 0x59, 0x79, 0x59]),
            (48, &[0xe4, 0xc4, 0xe4, 0xc4, 0xfe52, 0xfe5a, 0xfe52]),
            (94, &[0x3c, 0x3e, 0x3c, 0x3e, 0x7c, 0xfe6c, 0x7c]),
            (87, &[0xff9c, 0xffb1]),
        ]);
        map(&rows)
    }

    fn us() -> Keymap {
        let mut rows = MODS.to_vec();
        rows.extend_from_slice(&[
            (11, &[0x32, 0x40, 0x32, 0x40][..]),
            (16, &[0x37, 0x26, 0x37, 0x26]),
            (61, &[0x2f, 0x3f, 0x2f, 0x3f]),
            (21, &[0x3d, 0x2b, 0x3d, 0x2b]),
            (24, &[0x71, 0x51, 0x71, 0x51]),
            (94, &[0x3c, 0x3e, 0x3c, 0x3e, 0x7c, 0xa6, 0x7c]),
            (59, &[0x2c, 0x3c, 0x2c, 0x3c]),
        ]);
        map(&rows)
    }

    const NONE_DOWN: [u8; 32] = [0; 32];

    fn down(keys: &[u8]) -> [u8; 32] {
        let mut d = [0u8; 32];
        for &k in keys {
            d[k as usize / 8] |= 1 << (k % 8);
        }
        d
    }

    fn key(keycode: u8, lift: &[u8], add: &[u8]) -> Lookup {
        Lookup::Key(Plan {
            keycode,
            lift: lift.to_vec(),
            add: add.to_vec(),
        })
    }

    const S: u16 = 1 << SHIFT;
    const L3: u16 = 1 << 7;

    #[test]
    fn german_altgr_and_shift_from_a_us_viewer() {
        let de = german();
        // '@' with nothing held: AltGr+Q.
        assert_eq!(de.lookup(0x40, 0, &NONE_DOWN), key(24, &[], &[92]));
        // '@' from a US viewer holding Shift: Shift lifted, AltGr added.
        assert_eq!(de.lookup(0x40, S, &down(&[50])), key(24, &[50], &[92]));
        // '"' from a US viewer holding Shift: Shift+2, nothing to change.
        assert_eq!(de.lookup(0x22, S, &down(&[50])), key(11, &[], &[]));
        // '{' from a German viewer holding AltGr (right Alt, 108).
        assert_eq!(de.lookup(0x7b, L3, &down(&[108])), key(16, &[], &[]));
        // '€' with nothing held.
        assert_eq!(de.lookup(0x20ac, 0, &NONE_DOWN), key(26, &[], &[92]));
        // 'Ä' sent bare (vncdotool): Shift added.
        assert_eq!(de.lookup(0xc4, 0, &NONE_DOWN), key(48, &[], &[50]));
        // '<' from a US viewer (Shift+comma there): Shift lifted.
        assert_eq!(de.lookup(0x3c, S, &down(&[62])), key(94, &[62], &[]));
        // Not on the layout at all.
        assert_eq!(de.lookup(0xe9, 0, &NONE_DOWN), Lookup::Unmapped);
    }

    #[test]
    fn us_layout_from_a_german_viewer() {
        let us = us();
        // '/' is Shift+7 in Germany, a plain key here: Shift lifted.
        assert_eq!(us.lookup(0x2f, S, &down(&[50])), key(61, &[50], &[]));
        assert_eq!(us.lookup(0x3d, S, &down(&[50])), key(21, &[50], &[]));
        // '@' is AltGr+Q in Germany: Shift added; AltGr may stay down, a
        // key without level 3 ignores it.
        assert_eq!(us.lookup(0x40, L3, &down(&[108])), key(11, &[], &[50]));
        // '<' is on the ISO key (94) and on Shift+comma: the key needing
        // no change wins.
        assert_eq!(us.lookup(0x3c, 0, &NONE_DOWN), key(94, &[], &[]));
        assert_eq!(us.lookup(0x3c, S, &down(&[50])), key(59, &[], &[]));
        // '|' at level 3 of the ISO key.
        assert_eq!(us.lookup(0x7c, 0, &NONE_DOWN), key(94, &[], &[92]));
    }

    #[test]
    fn locks_and_keys_pressed_as_they_are() {
        let de = german();
        const LOCKED: u16 = 1 << LOCK;
        // Caps Lock on: 'Q' is the bare key, 'q' needs Shift.
        assert_eq!(de.lookup(0x51, LOCKED, &NONE_DOWN), key(24, &[], &[]));
        assert_eq!(de.lookup(0x71, LOCKED, &NONE_DOWN), key(24, &[], &[50]));
        // Num Lock (Mod2) on: KP_1 is the bare key.
        assert_eq!(de.lookup(0xffb1, 1 << 4, &NONE_DOWN), key(87, &[], &[]));
        assert_eq!(de.lookup(0xffb1, 0, &NONE_DOWN), key(87, &[], &[50]));
        // Shift+Tab and Shift+Space keep Shift; modifiers are plain keys.
        assert_eq!(de.lookup(0xff09, S, &down(&[50])), key(23, &[], &[]));
        assert_eq!(de.lookup(0x20, S, &down(&[50])), key(65, &[], &[]));
        assert_eq!(de.lookup(0xfe03, 0, &NONE_DOWN), key(92, &[], &[]));
        assert_eq!(de.lookup(0xffe1, 0, &NONE_DOWN), key(50, &[], &[]));
        // Shift on through a lock (no Shift key down): cannot be lifted.
        assert_eq!(de.lookup(0x37, S, &NONE_DOWN), Lookup::Unmapped);
    }

    #[test]
    fn scan_codes_are_used_when_their_key_types_the_keysym() {
        let de = german();
        // Q's scan code (0x10, X keycode 24) with '@' and nothing held:
        // AltGr added on that key.
        let q = qnum_to_evdev(0x10).unwrap();
        assert_eq!(q, 24);
        assert_eq!(
            de.lookup_on(q, 0x40, 0, &NONE_DOWN),
            Some(Plan {
                keycode: 24,
                lift: vec![],
                add: vec![92]
            })
        );
        // A US technician's Shift+2 for '@': the German '2' key has no '@'.
        assert_eq!(
            de.lookup_on(qnum_to_evdev(0x03).unwrap(), 0x40, S, &down(&[50])),
            None
        );
        // Extended codes: right Alt (AltGr) is X keycode 108.
        assert_eq!(qnum_to_evdev(0xb8), Some(108));
        assert_eq!(
            de.lookup_on(108, 0xfe03, 0, &NONE_DOWN).map(|p| p.keycode),
            Some(108)
        );
        assert_eq!(qnum_to_evdev(0), None);
        assert_eq!(qnum_to_evdev(0xff), None);
    }

    #[test]
    fn spare_keycodes_and_binding() {
        let mut de = german();
        let spare = de.spare_keycodes();
        assert_eq!(spare.first(), Some(&255));
        assert!(!spare.contains(&24));
        // A letter: lower and upper case, Shift for the upper.
        let row = de.binding_row(0xc9);
        assert_eq!(&row[..3], &[0xe9, 0xc9, 0]);
        de.set_row(255, &row);
        assert_eq!(de.lookup(0xe9, 0, &NONE_DOWN), key(255, &[], &[]));
        assert_eq!(de.lookup(0xc9, 0, &NONE_DOWN), key(255, &[], &[50]));
        assert_eq!(de.lookup(0xe9, S, &down(&[50])), key(255, &[50], &[]));
        assert!(!de.spare_keycodes().contains(&255));
        // Anything else: one level, whatever is held.
        let row = de.binding_row(0x1002030);
        assert_eq!(&row[..2], &[0x1002030, 0]);
        de.set_row(254, &row);
        assert_eq!(
            de.lookup(0x1002030, S | L3, &down(&[50, 92])),
            key(254, &[], &[])
        );
        let row = de.binding_row(0x10003b1);
        assert_eq!(&row[..2], &[0x10003b1, 0x1000391]);
    }
}
