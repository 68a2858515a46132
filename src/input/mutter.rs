//! Input into a GNOME Wayland session (issue 16) through Mutter's
//! RemoteDesktop session (the one [`crate::capture::mutter`] records):
//! pointer positions relative to the screen-cast stream, evdev button
//! codes, discrete wheel steps and keysyms (Mutter maps keysyms to its
//! keymap). Calls are made on a thread of our own, fed by the bounded
//! [`InputQueue`], as on X11.

use super::queue::{InputQueue, Pop};
use super::{ClipboardTarget, InputEvent, InputSink};
use crate::capture::mutter::{SessionSlot, REMOTE_DESKTOP};
use std::sync::{mpsc, Arc};
use tracing::{debug, warn};
use zbus::blocking::Proxy;

const QUEUE: usize = 4096;
/// How soon an idle input thread moves to a reopened session.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
const SESSION_IFACE: &str = "org.gnome.Mutter.RemoteDesktop.Session";

const SHIFT_L: u32 = 0xffe1;

/// linux/input-event-codes.h
const BTN_LEFT: i32 = 0x110;
const BTN_RIGHT: i32 = 0x111;
const BTN_MIDDLE: i32 = 0x112;
const BTN_SIDE: i32 = 0x113;
const BTN_EXTRA: i32 = 0x114;

/// What a change of RFB button `n` (bit n-1) becomes.
#[derive(Debug, PartialEq, Eq)]
enum ButtonAction {
    Button(i32),
    /// `NotifyPointerAxisDiscrete(axis, steps)`: axis 0 vertical, 1
    /// horizontal; on press only.
    Scroll(u32, i32),
}

fn button_action(bit: u16) -> Option<ButtonAction> {
    Some(match bit {
        0 => ButtonAction::Button(BTN_LEFT),
        1 => ButtonAction::Button(BTN_MIDDLE),
        2 => ButtonAction::Button(BTN_RIGHT),
        3 => ButtonAction::Scroll(0, -1),
        4 => ButtonAction::Scroll(0, 1),
        5 => ButtonAction::Scroll(1, -1),
        6 => ButtonAction::Scroll(1, 1),
        7 => ButtonAction::Button(BTN_SIDE),
        8 => ButtonAction::Button(BTN_EXTRA),
        _ => return None,
    })
}

pub struct MutterInput {
    queue: Arc<InputQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
    clipboard: Option<Box<dyn ClipboardTarget>>,
}

impl Drop for MutterInput {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl MutterInput {
    /// Start the injection thread on `session`.
    pub fn start(slot: Arc<SessionSlot>) -> Result<MutterInput, String> {
        let queue = Arc::new(InputQueue::new(QUEUE));
        let rx = queue.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("mutter-input".into())
            .spawn(move || {
                let (generation, session) = slot.current();
                let proxy = match session_proxy(&session) {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut inj = Injector {
                    proxy,
                    stream: session.stream.as_str().to_owned(),
                    buttons: 0,
                    pos: None,
                    pressed: Vec::new(),
                    failing: false,
                    slot,
                    generation,
                };
                inj.warm_up();
                // A reopened session is followed within FOLLOW_EVERY, not at
                // the viewer's next event: its virtual devices are made
                // then, and a client takes a moment to bind the new
                // keyboard, so the first key typed after a reopen would be
                // lost if they were made only for it.
                loop {
                    match rx.pop_for(FOLLOW_EVERY) {
                        Pop::Event(ev) => inj.inject(ev),
                        Pop::Idle => inj.follow(),
                        Pop::Closed => break,
                    }
                }
                inj.finish();
            })
            .map_err(|e| e.to_string())?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(MutterInput {
                queue,
                thread: Some(thread),
                clipboard: None,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the input thread ended".into()),
        }
    }
}

impl MutterInput {
    /// Send viewers' clipboard text to `clipboard` (the session's, see
    /// [`super::mutter_clipboard`]).
    pub fn with_clipboard(mut self, clipboard: Box<dyn ClipboardTarget>) -> MutterInput {
        self.clipboard = Some(clipboard);
        self
    }
}

impl InputSink for MutterInput {
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

fn session_proxy(s: &crate::capture::mutter::MutterSession) -> Result<Proxy<'static>, zbus::Error> {
    Proxy::new(
        &s.conn,
        REMOTE_DESKTOP,
        s.session.to_string(),
        SESSION_IFACE,
    )
}

struct Injector {
    proxy: Proxy<'static>,
    stream: String,
    buttons: u16,
    pos: Option<(u16, u16)>,
    /// Keysyms held, released when the sink ends.
    pressed: Vec<u32>,
    /// A call failed (logged once until one succeeds again).
    failing: bool,
    /// The source reopens a lost stream as a new session: input follows.
    slot: Arc<SessionSlot>,
    generation: u64,
}

impl Injector {
    /// Move to the source's new session, if it has one. What was held in
    /// the old one went with it.
    fn follow(&mut self) {
        if self.slot.generation() == self.generation {
            return;
        }
        let (generation, session) = self.slot.current();
        self.generation = generation;
        match session_proxy(&session) {
            Ok(p) => {
                self.proxy = p;
                self.stream = session.stream.as_str().to_owned();
                self.buttons = 0;
                self.pos = None;
                self.pressed.clear();
                debug!("GNOME input: on the new remote-desktop session");
                self.warm_up();
            }
            Err(e) => warn!(error = %e, "GNOME input: cannot reach the new session"),
        }
    }

    fn call<B>(&mut self, method: &'static str, body: &B)
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        match self.proxy.call::<_, _, ()>(method, body) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    warn!(method, error = %e, "GNOME input: Mutter refused an event");
                }
                self.failing = true;
            }
        }
    }

    fn inject(&mut self, ev: InputEvent) {
        self.follow();
        match ev {
            InputEvent::Key { down, keysym } | InputEvent::ScanKey { down, keysym, .. } => {
                if keysym & super::QEMU_KEY != 0 {
                    // A scan code without a keysym: nothing Mutter can type.
                    debug!("GNOME input: key without a keysym dropped");
                    return;
                }
                if down {
                    if !self.pressed.contains(&keysym) {
                        self.pressed.push(keysym);
                    }
                } else {
                    self.pressed.retain(|k| *k != keysym);
                }
                self.call("NotifyKeyboardKeysym", &(keysym, down));
            }
            InputEvent::Pointer { buttons, x, y } => {
                if self.pos != Some((x, y)) {
                    self.pos = Some((x, y));
                    let stream = self.stream.clone();
                    self.call(
                        "NotifyPointerMotionAbsolute",
                        &(stream.as_str(), f64::from(x), f64::from(y)),
                    );
                }
                self.set_buttons(buttons);
            }
            InputEvent::CutText(_) => {}
        }
    }

    fn set_buttons(&mut self, buttons: u16) {
        let changed = buttons ^ self.buttons;
        for bit in 0..16u16 {
            if changed & (1 << bit) == 0 {
                continue;
            }
            let down = buttons & (1 << bit) != 0;
            match button_action(bit) {
                Some(ButtonAction::Button(code)) => {
                    self.call("NotifyPointerButton", &(code, down));
                }
                Some(ButtonAction::Scroll(axis, steps)) if down => {
                    self.call("NotifyPointerAxisDiscrete", &(axis, steps));
                }
                _ => {}
            }
        }
        self.buttons = buttons;
    }

    /// Mutter creates the session's virtual pointer and keyboard on their
    /// first event, and a seat that had none (a headless or virtual
    /// machine) announces them to clients only then: the first events
    /// would reach no client. So they are made now, before a viewer's
    /// first input: a motion by nothing, and a tap of Shift (which types
    /// nothing; a release alone is refused as "Invalid key event").
    fn warm_up(&mut self) {
        self.call("NotifyPointerMotionRelative", &(0.0f64, 0.0f64));
        self.call("NotifyKeyboardKeysym", &(SHIFT_L, true));
        self.call("NotifyKeyboardKeysym", &(SHIFT_L, false));
    }

    /// Let go of whatever is still held.
    fn finish(&mut self) {
        self.set_buttons(0);
        for k in std::mem::take(&mut self.pressed) {
            self.call("NotifyKeyboardKeysym", &(k, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_map_to_evdev_and_wheel_steps() {
        assert_eq!(button_action(0), Some(ButtonAction::Button(BTN_LEFT)));
        assert_eq!(button_action(1), Some(ButtonAction::Button(BTN_MIDDLE)));
        assert_eq!(button_action(2), Some(ButtonAction::Button(BTN_RIGHT)));
        assert_eq!(button_action(3), Some(ButtonAction::Scroll(0, -1)));
        assert_eq!(button_action(4), Some(ButtonAction::Scroll(0, 1)));
        assert_eq!(button_action(5), Some(ButtonAction::Scroll(1, -1)));
        assert_eq!(button_action(6), Some(ButtonAction::Scroll(1, 1)));
        assert_eq!(button_action(7), Some(ButtonAction::Button(BTN_SIDE)));
        assert_eq!(button_action(8), Some(ButtonAction::Button(BTN_EXTRA)));
        assert_eq!(button_action(9), None);
    }
}
