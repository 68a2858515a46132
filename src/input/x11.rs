//! Input injection into an X display through XTest, on a dedicated thread,
//! with keysyms typed as the customer's keyboard layout needs them (see
//! [`super::x11_keymap`]): what the technician types is what appears,
//! whatever layouts the two sides use.
//!
//! Why not enigo on X11: enigo looks a keysym up in level 1 of the keymap
//! only and presses that key with whatever modifiers are held (a German
//! viewer's Shift+7 for `/` becomes `?` on a US layout), and binds every
//! other keysym to a spare keycode it reuses in turn (levels 2-4 of the
//! layout are never used; `<` with Shift held becomes `>`).

use super::queue::InputQueue;
use super::x11_keymap::{Keymap, Lookup};
use super::{ClipboardTarget, InputEvent, InputSink};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;
use thiserror::Error;
use tracing::debug;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _, Window};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

#[derive(Debug, Error)]
pub enum X11InputError {
    #[error("cannot open X display {0}: {1}")]
    Connect(String, String),
    #[error("the X server has no XTest extension (needed to inject input)")]
    NoXTest,
    #[error("X request failed: {0}")]
    Request(String),
    #[error("cannot start the input thread: {0}")]
    Thread(String),
}

fn req<E: std::fmt::Display>(e: E) -> X11InputError {
    X11InputError::Request(e.to_string())
}

/// Events queued for the injection thread (see [`InputQueue`]).
const QUEUE: usize = 4096;
/// Spare keycodes bound to keysyms at most at a time (least recently used
/// ones are rebound).
const MAX_BOUND: usize = 32;

pub struct X11Input {
    queue: Arc<InputQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
    clipboard: Option<Box<dyn ClipboardTarget>>,
}

impl Drop for X11Input {
    fn drop(&mut self) {
        // The injection thread injects what is queued, lets go of anything
        // still down and unbinds the keycodes it bound, then ends; waited
        // for, so that happens before the process exits.
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl X11Input {
    /// Connect to `display` (`None`: $DISPLAY) and start the injection
    /// thread.
    pub fn start(display: Option<String>) -> Result<X11Input, X11InputError> {
        let queue = Arc::new(InputQueue::new(QUEUE));
        let rx = queue.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), X11InputError>>();
        let thread = std::thread::Builder::new()
            .name("x11-input".into())
            .spawn(move || {
                let mut inj = match Injector::connect(display.as_deref()) {
                    Ok(i) => {
                        let _ = ready_tx.send(Ok(()));
                        i
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(ev) = rx.pop() {
                    if let Err(e) = inj.inject(ev) {
                        // The keysym is not logged: it would be a keystroke.
                        debug!(error = %e, "input injection failed");
                    }
                }
                inj.finish();
            })
            .map_err(|e| X11InputError::Thread(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(X11Input {
                queue,
                thread: Some(thread),
                clipboard: None,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(X11InputError::Thread("input thread ended".into())),
        }
    }

    /// Send viewers' clipboard text to `clipboard`.
    pub fn with_clipboard(mut self, clipboard: Box<dyn ClipboardTarget>) -> X11Input {
        self.clipboard = Some(clipboard);
        self
    }
}

impl InputSink for X11Input {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.queue.key(down, keysym)
    }
    fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        self.queue.key_scancode(down, keysym, scancode)
    }
    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        self.queue.pointer(buttons, x, y)
    }
    fn cut_text(&self, text: &str) -> bool {
        self.clipboard.as_ref().map(|c| c.set_text(text)).is_some()
    }
}

struct Injector {
    conn: RustConnection,
    root: Window,
    keymap: Keymap,
    /// Keycode pressed for each keysym held.
    pressed: Vec<(u32, u8)>,
    /// Spare keycodes bound to keysyms, most recently used first.
    bound: VecDeque<(u32, u8)>,
    buttons: u16,
    pos: Option<(u16, u16)>,
}

impl Injector {
    fn connect(display: Option<&str>) -> Result<Injector, X11InputError> {
        let (conn, screen) = RustConnection::connect(display).map_err(|e| {
            X11InputError::Connect(display.unwrap_or("$DISPLAY").to_owned(), e.to_string())
        })?;
        let root = conn.setup().roots[screen].root;
        conn.xtest_get_version(2, 2)
            .map_err(req)?
            .reply()
            .map_err(|_| X11InputError::NoXTest)?;
        let mut inj = Injector {
            conn,
            root,
            keymap: Keymap::default(),
            pressed: Vec::new(),
            bound: VecDeque::new(),
            buttons: 0,
            pos: None,
        };
        inj.reload()?;
        inj.reclaim()?;
        Ok(inj)
    }

    /// Unbind the spare keycodes a previous run bound and could not unbind
    /// (killed, or ended without dropping its input), as recorded on the
    /// root window, when they still hold what was bound; without this every
    /// run would leave up to [`MAX_BOUND`] keycodes used up.
    fn reclaim(&mut self) -> Result<(), X11InputError> {
        let atom = self.bound_atom()?;
        let prop = self
            .conn
            .get_property(false, self.root, atom, xproto::AtomEnum::CARDINAL, 0, 64)
            .map_err(req)?
            .reply()
            .map_err(req)?;
        let per = self.keymap.per_keycode();
        let mut changed = false;
        for kc in prop.value8().into_iter().flatten() {
            let row: Vec<u32> = (0..per as usize).map(|c| self.keymap.sym(kc, c)).collect();
            if row[0] != 0 && row == self.keymap.binding_row(row[0]) {
                self.conn
                    .change_keyboard_mapping(1, kc, per, &vec![0; per as usize])
                    .map_err(req)?;
                changed = true;
            }
        }
        self.record_bound()?;
        if changed {
            debug!("unbound keycodes a previous run left bound");
            self.reload()?;
        }
        Ok(())
    }

    fn bound_atom(&self) -> Result<xproto::Atom, X11InputError> {
        Ok(self
            .conn
            .intern_atom(false, b"_TICKETVNC_BOUND_KEYCODES")
            .map_err(req)?
            .reply()
            .map_err(req)?
            .atom)
    }

    /// Record the keycodes bound now on the root window (see `reclaim`).
    fn record_bound(&self) -> Result<(), X11InputError> {
        let atom = self.bound_atom()?;
        let kcs: Vec<u8> = self.bound.iter().map(|&(_, kc)| kc).collect();
        self.conn
            .change_property8(
                xproto::PropMode::REPLACE,
                self.root,
                atom,
                xproto::AtomEnum::CARDINAL,
                &kcs,
            )
            .map_err(req)?;
        Ok(())
    }

    /// Read the keyboard mapping and modifier map again (at start, and
    /// whenever the server says they changed: setxkbmap, xmodmap, our own
    /// bindings).
    fn reload(&mut self) -> Result<(), X11InputError> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let count = max.saturating_sub(min).saturating_add(1);
        let km = self
            .conn
            .get_keyboard_mapping(min, count)
            .map_err(req)?
            .reply()
            .map_err(req)?;
        let mm = self
            .conn
            .get_modifier_mapping()
            .map_err(req)?
            .reply()
            .map_err(req)?;
        self.keymap = Keymap::new(min, km.keysyms_per_keycode, km.keysyms, &mm.keycodes);
        // Forget bindings someone else has changed since.
        let keymap = &self.keymap;
        self.bound.retain(|&(sym, kc)| keymap.sym(kc, 0) == sym);
        Ok(())
    }

    /// Handle events waiting on the connection: a mapping change means
    /// reading the keymap again.
    fn poll_events(&mut self) -> Result<(), X11InputError> {
        let mut changed = false;
        while let Some(ev) = self.conn.poll_for_event().map_err(req)? {
            if let Event::MappingNotify(m) = ev {
                if m.request != xproto::Mapping::POINTER {
                    changed = true;
                }
            }
        }
        if changed {
            debug!("keyboard mapping changed; reading it again");
            self.reload()?;
        }
        Ok(())
    }

    fn fake(&self, kind: u8, detail: u8) -> Result<(), X11InputError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, 0, 0, 0)
            .map_err(req)?;
        Ok(())
    }

    fn inject(&mut self, ev: InputEvent) -> Result<(), X11InputError> {
        match ev {
            InputEvent::Key { down, keysym } => self.key(down, keysym, None)?,
            InputEvent::ScanKey {
                down,
                keysym,
                scancode,
            } => self.key(down, keysym, Some(scancode))?,
            InputEvent::Pointer { buttons, x, y } => self.pointer(buttons, x, y)?,
            InputEvent::CutText(_) => {}
        }
        self.conn.flush().map_err(req)?;
        Ok(())
    }

    fn key(&mut self, down: bool, keysym: u32, scancode: Option<u8>) -> Result<(), X11InputError> {
        if !down {
            // Let go of the key this keysym pressed (nothing if none).
            if let Some(i) = self.pressed.iter().position(|&(s, _)| s == keysym) {
                let (_, kc) = self.pressed.remove(i);
                self.fake(xproto::KEY_RELEASE_EVENT, kc)?;
            }
            return Ok(());
        }
        self.poll_events()?;
        let (state, keys) = self.modifier_state()?;
        if let Some(&(_, kc)) = self.pressed.iter().find(|&&(s, _)| s == keysym) {
            // Auto-repeat from the viewer: the key is let go of and
            // pressed again (as X's own auto-repeat does; a second press
            // of a key that is down types nothing), with the same modifier
            // changes as the first time ('@' held on a German layout
            // repeats '@', not 'q').
            self.fake(xproto::KEY_RELEASE_EVENT, kc)?;
            let plan = self.keymap.lookup_on(kc, keysym, state, &keys).unwrap_or(
                super::x11_keymap::Plan {
                    keycode: kc,
                    lift: Vec::new(),
                    add: Vec::new(),
                },
            );
            return self.press(&plan);
        }
        // The scan code's key, when it types the keysym on the customer's
        // layout (the same key the technician pressed); else the keysym's.
        let by_code = scancode
            .and_then(super::x11_keymap::qnum_to_evdev)
            .and_then(|kc| {
                if keysym & super::QEMU_KEY != 0 {
                    Some(super::x11_keymap::Plan {
                        keycode: kc,
                        lift: Vec::new(),
                        add: Vec::new(),
                    })
                } else {
                    self.keymap.lookup_on(kc, keysym, state, &keys)
                }
            });
        let found = match by_code {
            Some(p) => Lookup::Key(p),
            None if keysym & super::QEMU_KEY != 0 => return Ok(()),
            None => self.keymap.lookup(keysym, state, &keys),
        };
        let plan = match found {
            Lookup::Key(p) => p,
            Lookup::Unmapped => {
                let bound = self.bind(keysym)?;
                match (bound, self.keymap.lookup(keysym, state, &keys)) {
                    (true, Lookup::Key(p)) => p,
                    _ => {
                        debug!("no key for a keysym; key dropped");
                        return Ok(());
                    }
                }
            }
        };
        if let Some(i) = self.bound.iter().position(|&(_, kc)| kc == plan.keycode) {
            // Most recently used first.
            if let Some(b) = self.bound.remove(i) {
                self.bound.push_front(b);
            }
        }
        self.press(&plan)?;
        self.pressed.push((keysym, plan.keycode));
        Ok(())
    }

    /// The core modifier state and the keys down now.
    fn modifier_state(&self) -> Result<(u16, [u8; 32]), X11InputError> {
        let state = u16::from(
            self.conn
                .query_pointer(self.root)
                .map_err(req)?
                .reply()
                .map_err(req)?
                .mask,
        );
        let keys = self
            .conn
            .query_keymap()
            .map_err(req)?
            .reply()
            .map_err(req)?
            .keys;
        Ok((state, keys))
    }

    /// Press `plan.keycode` with the modifier changes it needs around it
    /// (the viewer's held modifiers restored right after).
    fn press(&self, plan: &super::x11_keymap::Plan) -> Result<(), X11InputError> {
        for &k in &plan.lift {
            self.fake(xproto::KEY_RELEASE_EVENT, k)?;
        }
        for &k in &plan.add {
            self.fake(xproto::KEY_PRESS_EVENT, k)?;
        }
        self.fake(xproto::KEY_PRESS_EVENT, plan.keycode)?;
        for &k in plan.add.iter().rev() {
            self.fake(xproto::KEY_RELEASE_EVENT, k)?;
        }
        for &k in plan.lift.iter().rev() {
            self.fake(xproto::KEY_PRESS_EVENT, k)?;
        }
        Ok(())
    }

    /// Bind `keysym` to a spare keycode (one without symbols, or the least
    /// recently used of those bound before and not held now).
    fn bind(&mut self, keysym: u32) -> Result<bool, X11InputError> {
        let kc = match self.keymap.spare_keycodes().first() {
            Some(&kc) if self.bound.len() < MAX_BOUND => Some(kc),
            _ => {
                let held: Vec<u8> = self.pressed.iter().map(|&(_, k)| k).collect();
                let i = self.bound.iter().rposition(|(_, k)| !held.contains(k));
                i.and_then(|i| self.bound.remove(i)).map(|(_, k)| k)
            }
        };
        let Some(kc) = kc else {
            return Ok(false);
        };
        let per = self.keymap.per_keycode();
        let row = self.keymap.binding_row(keysym);
        self.conn
            .change_keyboard_mapping(1, kc, per, &row)
            .map_err(req)?
            .check()
            .map_err(req)?;
        self.keymap.set_row(kc, &row);
        self.bound.push_front((row[0], kc));
        self.record_bound()?;
        debug!(
            keycode = kc,
            "bound a keysym missing from the layout to a spare keycode"
        );
        Ok(true)
    }

    fn pointer(&mut self, buttons: u16, x: u16, y: u16) -> Result<(), X11InputError> {
        if self.pos != Some((x, y)) {
            let (x, y) = (x.min(i16::MAX as u16) as i16, y.min(i16::MAX as u16) as i16);
            self.conn
                .xtest_fake_input(
                    xproto::MOTION_NOTIFY_EVENT,
                    0,
                    x11rb::CURRENT_TIME,
                    self.root,
                    x,
                    y,
                    0,
                )
                .map_err(req)?;
            self.pos = Some((x as u16, y as u16));
        }
        let changed = buttons ^ self.buttons;
        // RFB button n (bit n-1) is X button n: 1-3 left, middle, right,
        // 4-7 the wheels (a press and a release per step), 8 and 9 back
        // and forward.
        for bit in 0..9u8 {
            if changed & (1 << bit) == 0 {
                continue;
            }
            let kind = if buttons & (1 << bit) != 0 {
                xproto::BUTTON_PRESS_EVENT
            } else {
                xproto::BUTTON_RELEASE_EVENT
            };
            self.fake(kind, bit + 1)?;
        }
        self.buttons = buttons;
        Ok(())
    }

    /// Let go of what is still down, unbind the keycodes bound.
    fn finish(&mut self) {
        for (_, kc) in std::mem::take(&mut self.pressed).into_iter().rev() {
            let _ = self.fake(xproto::KEY_RELEASE_EVENT, kc);
        }
        let _ = self.pointer(
            0,
            self.pos.unwrap_or((0, 0)).0,
            self.pos.unwrap_or((0, 0)).1,
        );
        let per = self.keymap.per_keycode();
        for (_, kc) in std::mem::take(&mut self.bound) {
            let _ = self
                .conn
                .change_keyboard_mapping(1, kc, per, &vec![0; per as usize]);
        }
        let _ = self.record_bound();
        let _ = self.conn.flush();
    }
}
