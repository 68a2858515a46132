//! The bounded queue between sessions and an injection thread.
//!
//! Injection can be slower than a viewer sends (a busy X server, a flood).
//! When the queue is full something must give, but never a press's
//! release: a dropped key or button release leaves it stuck on the
//! customer's machine. So, when full:
//! - pointer motion is merged into the last queued pointer event;
//! - new presses (keys and buttons) are dropped, and the caller is told,
//!   so its record of what is held stays true to what is injected;
//! - releases of what was queued as pressed are always queued.
//!
//! The overflow this allows is bounded: at most one release per key or
//! button recorded as pressed, and one pointer event between them.

use super::InputEvent;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// Keys recorded as pressed at most; further presses are dropped (no
/// keyboard holds this many keys).
pub const MAX_PRESSED_KEYS: usize = 64;

#[derive(Default)]
struct State {
    events: VecDeque<InputEvent>,
    /// Keys whose press was queued and whose release was not yet.
    pressed: Vec<u32>,
    /// Buttons held as of the last queued pointer event.
    buttons: u16,
    closed: bool,
}

/// What [`InputQueue::pop_for`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    Event(InputEvent),
    /// Nothing within the time given.
    Idle,
    /// Closed and empty.
    Closed,
}

pub struct InputQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    /// When a dropped press was last logged (at most one line in 10 s).
    warned: Mutex<Option<Instant>>,
}

impl InputQueue {
    pub fn new(capacity: usize) -> InputQueue {
        InputQueue {
            state: Mutex::default(),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            warned: Mutex::new(None),
        }
    }

    /// A press was dropped: say so, once in a while.
    fn dropped(&self) {
        let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *w = Some(Instant::now());
            warn!("input queue full; dropping new key and button presses (releases are kept)");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a key event. Returns whether it will be injected (`false`: a
    /// press dropped because the queue is full, or a release of a key that
    /// is not pressed as far as injection goes).
    pub fn key(&self, down: bool, keysym: u32) -> bool {
        self.key_event(down, keysym, InputEvent::Key { down, keysym })
    }

    /// Like [`InputQueue::key`], with the key's scan code.
    pub fn key_scancode(&self, down: bool, keysym: u32, scancode: u8) -> bool {
        let ev = InputEvent::ScanKey {
            down,
            keysym,
            scancode,
        };
        self.key_event(down, keysym, ev)
    }

    fn key_event(&self, down: bool, keysym: u32, ev: InputEvent) -> bool {
        let mut s = self.lock();
        let full = s.events.len() >= self.capacity;
        let held = s.pressed.contains(&keysym);
        let queued = if down {
            if full || (!held && s.pressed.len() >= MAX_PRESSED_KEYS) {
                false
            } else {
                if !held {
                    s.pressed.push(keysym);
                }
                true
            }
        } else if held {
            s.pressed.retain(|&k| k != keysym);
            true
        } else {
            // Nothing to let go of: harmless when there is room.
            !full
        };
        if queued {
            s.events.push_back(ev);
            self.ready.notify_one();
        } else if down {
            drop(s);
            self.dropped();
        }
        queued
    }

    /// Queue a pointer event. Returns the buttons that will be injected
    /// as held: `buttons`, minus new presses dropped because the queue is
    /// full.
    pub fn pointer(&self, buttons: u16, x: u16, y: u16) -> u16 {
        let mut s = self.lock();
        let full = s.events.len() >= self.capacity;
        let b = if full { buttons & s.buttons } else { buttons };
        let merge = full
            && b == s.buttons
            && matches!(s.events.back(), Some(InputEvent::Pointer { buttons: tb, .. }) if *tb == b);
        if merge {
            if let Some(InputEvent::Pointer { x: tx, y: ty, .. }) = s.events.back_mut() {
                (*tx, *ty) = (x, y);
            }
        } else {
            s.events.push_back(InputEvent::Pointer { buttons: b, x, y });
            self.ready.notify_one();
        }
        s.buttons = b;
        drop(s);
        if b != buttons {
            self.dropped();
        }
        b
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next event, waiting for one; `None` once closed and empty.
    pub fn pop(&self) -> Option<InputEvent> {
        let mut s = self.lock();
        loop {
            if let Some(e) = s.events.pop_front() {
                return Some(e);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next event, waiting at most `max` for one (`Pop::Idle`: none
    /// came; a sink does its own housekeeping then).
    pub fn pop_for(&self, max: std::time::Duration) -> Pop {
        let deadline = std::time::Instant::now() + max;
        let mut s = self.lock();
        loop {
            if let Some(e) = s.events.pop_front() {
                return Pop::Event(e);
            }
            if s.closed {
                return Pop::Closed;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Pop::Idle;
            }
            s = self
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Where the pointer went next, if the next event is pointer motion
    /// with `buttons` held (as the one just popped): it is taken, so a
    /// sink that fell behind sends one motion for a run of them.
    pub fn take_motion(&self, buttons: u16) -> Option<(u16, u16)> {
        let mut s = self.lock();
        match s.events.front() {
            Some(&InputEvent::Pointer { buttons: b, x, y }) if b == buttons => {
                s.events.pop_front();
                Some((x, y))
            }
            _ => None,
        }
    }

    /// The next event if there is one.
    pub fn try_pop(&self) -> Option<InputEvent> {
        self.lock().events.pop_front()
    }

    /// No more events: `pop` returns `None` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_for_says_idle_then_the_event_then_closed() {
        let q = InputQueue::new(8);
        let short = std::time::Duration::from_millis(5);
        assert_eq!(q.pop_for(short), Pop::Idle);
        assert!(q.key(true, 0x61));
        assert_eq!(
            q.pop_for(short),
            Pop::Event(InputEvent::Key {
                down: true,
                keysym: 0x61
            })
        );
        q.close();
        assert_eq!(q.pop_for(short), Pop::Closed);
    }

    /// What the X server ends up with: keys down, buttons, position.
    #[derive(Default, Debug, PartialEq)]
    struct Desktop {
        keys: Vec<u32>,
        buttons: u16,
        pos: (u16, u16),
    }

    impl Desktop {
        fn inject(&mut self, e: InputEvent) {
            match e {
                InputEvent::Key { down: true, keysym } => {
                    if !self.keys.contains(&keysym) {
                        self.keys.push(keysym)
                    }
                }
                InputEvent::Key {
                    down: false,
                    keysym,
                } => self.keys.retain(|&k| k != keysym),
                InputEvent::ScanKey { .. } => {}
                InputEvent::Pointer { buttons, x, y } => {
                    self.buttons = buttons;
                    self.pos = (x, y);
                }
                InputEvent::CutText(_) => {}
            }
        }
    }

    /// A viewer's record of what it holds, kept from the queue's answers
    /// (as the session's HeldInput is).
    #[derive(Default)]
    struct Record {
        keys: Vec<u32>,
        buttons: u16,
    }

    /// Issue 10, fault 4: a flood of typing, clicking and motion into a
    /// sink that injects one event for every seven queued (a slow X
    /// server). Before, the queue (a sync_channel with try_send) dropped
    /// whatever came when it was full, releases included: keys and
    /// buttons stayed down on the desktop while the viewer had let go,
    /// and the session's record said they were up. Now no release of an
    /// injected press is lost, the record matches the desktop at every
    /// checkpoint, the last pointer position arrives, and the queue stays
    /// within its bound.
    #[test]
    fn flood_under_a_slow_sink_leaves_nothing_stuck() {
        const CAP: usize = 32;
        let q = InputQueue::new(CAP);
        let mut desk = Desktop::default();
        let mut rec = Record::default();
        let mut sent = 0usize;
        let mut longest = 0usize;
        let mut seed = 12345u32;
        let mut rnd = move |n: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 8) % n
        };
        for round in 0..200u32 {
            // Shift held through the round, released at its end.
            for (down, keysym) in [(true, 0xffe1u32)] {
                if q.key(down, keysym) {
                    rec.keys.push(keysym);
                }
            }
            for step in 0..50u32 {
                sent += 1;
                match rnd(4) {
                    0 => {
                        let k = 0x61 + rnd(26);
                        let down = rnd(2) == 0;
                        if q.key(down, k) || !down {
                            if down {
                                if !rec.keys.contains(&k) {
                                    rec.keys.push(k);
                                }
                            } else {
                                rec.keys.retain(|&x| x != k);
                            }
                        }
                    }
                    1 => {
                        let b = rec.buttons ^ (1 << rnd(3));
                        rec.buttons = q.pointer(b, step as u16, round as u16);
                    }
                    _ => {
                        rec.buttons = q.pointer(rec.buttons, step as u16, round as u16);
                    }
                }
                longest = longest.max(q.len());
                // The slow sink.
                if sent.is_multiple_of(7) {
                    if let Some(e) = q.try_pop() {
                        desk.inject(e);
                    }
                }
            }
            // The viewer lets go of everything, then moves once more.
            for k in std::mem::take(&mut rec.keys) {
                assert!(q.key(false, k), "a release of a held key was refused");
            }
            rec.buttons = q.pointer(0, 1000, round as u16);
            assert_eq!(rec.buttons, 0);
            longest = longest.max(q.len());
            if round % 10 == 9 {
                while let Some(e) = q.try_pop() {
                    desk.inject(e);
                }
                assert_eq!(
                    desk,
                    Desktop {
                        keys: Vec::new(),
                        buttons: 0,
                        pos: (1000, round as u16)
                    },
                    "round {round}: the desktop differs from what the viewer holds"
                );
            }
        }
        assert!(
            longest <= CAP + 2 * (MAX_PRESSED_KEYS + 8) + 1,
            "the queue grew to {longest}"
        );
        assert!(longest >= CAP, "the flood never filled the queue");
    }

    /// A held key's record is true to injection: a press dropped when
    /// full is reported, and its release is then refused too (nothing to
    /// let go of), so record and desktop agree.
    #[test]
    fn dropped_press_is_reported() {
        let q = InputQueue::new(2);
        assert_eq!(q.pointer(0, 1, 1), 0);
        assert_eq!(q.pointer(0, 2, 2), 0);
        assert!(!q.key(true, 0x61), "press accepted into a full queue");
        assert!(!q.key(false, 0x61));
        // A button press when full is dropped, motion merges.
        assert_eq!(q.pointer(1, 3, 3), 0);
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.try_pop(),
            Some(InputEvent::Pointer {
                buttons: 0,
                x: 1,
                y: 1
            })
        );
        assert_eq!(
            q.try_pop(),
            Some(InputEvent::Pointer {
                buttons: 0,
                x: 3,
                y: 3
            })
        );
        assert!(q.key(true, 0x61));
        assert!(q.key(true, 0x62));
        // Full, yet both releases go in.
        assert!(q.key(false, 0x61));
        assert!(q.key(false, 0x62));
        assert_eq!(q.len(), 4);
    }

    /// A sink behind its queue takes a run of motion at once, and only
    /// motion with the same buttons: a press or a key stays in order.
    #[test]
    fn take_motion_takes_only_the_run_of_motion_that_follows() {
        let q = InputQueue::new(16);
        q.pointer(0, 1, 1);
        q.pointer(0, 2, 2);
        q.pointer(0, 3, 3);
        q.pointer(1, 4, 4);
        q.pointer(1, 5, 5);
        q.key(true, 0x61);
        q.pointer(1, 6, 6);
        assert_eq!(
            q.try_pop(),
            Some(InputEvent::Pointer {
                buttons: 0,
                x: 1,
                y: 1
            })
        );
        assert_eq!(q.take_motion(0), Some((2, 2)));
        assert_eq!(q.take_motion(0), Some((3, 3)));
        // The press of button 1 is not motion of the buttons held before.
        assert_eq!(q.take_motion(0), None);
        assert_eq!(q.len(), 4);
        q.try_pop();
        assert_eq!(q.take_motion(1), Some((5, 5)));
        // A key between two motions keeps them apart.
        assert_eq!(q.take_motion(1), None);
        assert_eq!(q.len(), 2);
    }
}
