//! The on-screen consent prompt: a small window on the served screen that
//! asks the person there whether a technician may come in.
//!
//! The window itself is a platform backend ([`x11`] on Linux); what every
//! backend shares is the *shield*: while a prompt is open, pointer presses
//! from viewers that land on it are not injected, so a technician who is
//! already connected cannot click "Accept" for a second one (the person at
//! the screen answers, nobody else).

#[cfg(target_os = "linux")]
pub mod x11;

use crate::input::InputSink;
use std::sync::{Arc, Mutex};

/// A rectangle in root-window (screen) coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScreenRect {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

impl ScreenRect {
    fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x
            && y >= self.y
            && (x as i64) < self.x as i64 + self.w as i64
            && (y as i64) < self.y as i64 + self.h as i64
    }
}

/// The screen areas covered by open prompts, shared by the prompts (which
/// register themselves) and [`ShieldedInput`] (which keeps viewers' clicks
/// off them).
#[derive(Default)]
pub struct Shields {
    areas: Mutex<Vec<(u64, ScreenRect)>>,
}

impl Shields {
    pub fn new() -> Arc<Shields> {
        Arc::new(Shields::default())
    }

    /// Covers (or moves the cover of) prompt `id`.
    pub fn set(&self, id: u64, r: ScreenRect) {
        let mut a = self.areas.lock().unwrap();
        match a.iter_mut().find(|(i, _)| *i == id) {
            Some(e) => e.1 = r,
            None => a.push((id, r)),
        }
    }

    pub fn remove(&self, id: u64) {
        self.areas.lock().unwrap().retain(|(i, _)| *i != id);
    }

    pub fn covers(&self, x: i32, y: i32) -> bool {
        self.areas
            .lock()
            .unwrap()
            .iter()
            .any(|(_, r)| r.contains(x, y))
    }

    /// Prompts open now.
    pub fn open(&self) -> usize {
        self.areas.lock().unwrap().len()
    }
}

/// An input sink that passes everything on except button presses from
/// viewers on an open prompt (motion and releases still pass, so nothing
/// stays held). Wrap the sink that gets screen coordinates.
pub struct ShieldedInput {
    inner: Arc<dyn InputSink>,
    shields: Arc<Shields>,
    /// The button mask last passed on.
    buttons: Mutex<u16>,
}

impl ShieldedInput {
    pub fn new(inner: Arc<dyn InputSink>, shields: Arc<Shields>) -> ShieldedInput {
        ShieldedInput {
            inner,
            shields,
            buttons: Mutex::new(0),
        }
    }
}

impl InputSink for ShieldedInput {
    fn key(&self, down: bool, keysym: u32) -> bool {
        self.inner.key(down, keysym)
    }
    fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        self.inner.key_scancode(down, keysym, scancode)
    }

    fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        let mut last = self.buttons.lock().unwrap();
        let passed = if self.shields.covers(x.into(), y.into()) {
            // Only releases: a press on a prompt is the customer's to make.
            let held = buttons & *last;
            if held != buttons {
                tracing::warn!("a viewer clicked on a consent prompt; the click was not passed on");
            }
            held
        } else {
            buttons
        };
        // What the sink will really hold (it may drop presses under load).
        *last = self.inner.pointer(passed, x, y);
        *last
    }

    fn cut_text(&self, text: &str) -> bool {
        self.inner.cut_text(text)
    }
}

/// Text for a prompt, the same on every platform.
pub fn prompt_lines(req: &crate::session::consent::ConsentRequest) -> Vec<String> {
    let who = req.technician.as_deref().unwrap_or("A technician");
    let mut lines = vec![format!("{who} asks to connect to this screen.")];
    if let Some(t) = &req.ticket {
        lines.push(format!("Ticket: {t}"));
    }
    if let Some(p) = &req.peer {
        lines.push(format!("From: {p}"));
    }
    lines.push(format!("Wants to: {}", rights_words(req.rights)));
    lines
}

fn rights_words(r: crate::security::Rights) -> String {
    let mut w = vec!["see the screen"];
    if r.keys || r.pointer {
        w.push("use keyboard and mouse");
    }
    if r.clipboard {
        w.push("share the clipboard");
    }
    w.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputEvent, RecordingInput};

    #[test]
    fn a_click_on_a_prompt_is_not_passed_on_but_a_release_is() {
        let rec = Arc::new(RecordingInput::default());
        let shields = Shields::new();
        let s = ShieldedInput::new(rec.clone(), shields.clone());
        shields.set(
            1,
            ScreenRect {
                x: 100,
                y: 100,
                w: 50,
                h: 20,
            },
        );
        s.pointer(1, 10, 10); // press elsewhere, held
        s.pointer(1, 120, 110); // drag onto the prompt: still held
        s.pointer(0, 120, 110); // release on it
        s.pointer(1, 120, 110); // a new press on it: not passed
        s.pointer(0, 120, 110);
        shields.remove(1);
        s.pointer(1, 120, 110); // prompt gone: passes
        let buttons: Vec<u16> = rec
            .events()
            .into_iter()
            .filter_map(|e| match e {
                InputEvent::Pointer { buttons, .. } => Some(buttons),
                _ => None,
            })
            .collect();
        assert_eq!(buttons, vec![1, 1, 0, 0, 0, 1]);
    }
}
