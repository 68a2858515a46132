//! Screen sources: where frames come from. The session engine only sees
//! [`ScreenSource`]; X11, Windows/macOS and the synthetic test pattern plug in here.

#[cfg(all(target_os = "linux", feature = "gnome"))]
pub mod mutter;
#[cfg(all(target_os = "linux", feature = "gnome"))]
mod pipewire;
#[cfg(all(target_os = "linux", feature = "portal"))]
pub mod portal;
pub mod resize;
#[cfg(target_os = "linux")]
mod shm;
pub mod test_pattern;
#[cfg(target_os = "linux")]
pub mod virtual_x;
#[cfg(target_os = "linux")]
pub mod wayland;
#[cfg(target_os = "linux")]
pub mod wayland_ping;
#[cfg(target_os = "linux")]
pub mod x11;
#[cfg(any(target_os = "windows", target_os = "macos"))]
pub mod xcap_source;

use crate::framebuffer::{Frame, Rect};
use std::time::Duration;
use thiserror::Error;

/// Why a capture failed. Only [`CaptureError::Gone`] means the screen
/// cannot come back; a source recovers from [`CaptureError::Reconfigured`]
/// itself (it re-reads the geometry and grabs everything again), so callers
/// of [`ScreenSource::next`] normally see it only from a source that gave up.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The connection to the screen is lost (the X server died or closed us).
    #[error("screen source is gone: {0}")]
    Gone(String),
    /// The screen changed under a request (an X error such as BadMatch for
    /// a grab sized for the old screen): resynchronise and go on.
    #[error("screen reconfigured under the capture: {0}")]
    Reconfigured(String),
    /// The capture thread panicked (a bug); the server stops.
    #[error("capture thread panicked: {0}")]
    Panicked(String),
    #[error("capture failed: {0}")]
    Failed(String),
}

/// A region that moved between the previous capture and this one: the pixels
/// now at `dst` were at `src` (same size). Sessions verify before using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveHint {
    pub src_x: u16,
    pub src_y: u16,
    pub dst: Rect,
}

/// A pointer image: `width * height` pixels `0xAARRGGBB` (alpha >= 0x80 is opaque).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorShape {
    pub width: u16,
    pub height: u16,
    pub hot_x: u16,
    pub hot_y: u16,
    pub pixels: Vec<u32>,
}

impl CursorShape {
    /// A plain left-pointing arrow (black with a white outline), 12x19.
    pub fn arrow() -> CursorShape {
        const ROWS: [&str; 19] = [
            "X           ",
            "XX          ",
            "X.X         ",
            "X..X        ",
            "X...X       ",
            "X....X      ",
            "X.....X     ",
            "X......X    ",
            "X.......X   ",
            "X........X  ",
            "X.........X ",
            "X......XXXXX",
            "X...X..X    ",
            "X..XX..X    ",
            "X.X  X..X   ",
            "XX   X..X   ",
            "X     X..X  ",
            "      X..X  ",
            "       XX   ",
        ];
        let pixels = ROWS
            .iter()
            .flat_map(|r| {
                r.bytes().map(|b| match b {
                    b'X' => 0xff00_0000,
                    b'.' => 0xffff_ffff,
                    _ => 0,
                })
            })
            .collect();
        CursorShape {
            width: 12,
            height: 19,
            hot_x: 0,
            hot_y: 0,
            pixels,
        }
    }
}

/// One capture.
#[derive(Debug)]
pub struct Capture {
    /// Shared, so a capture where only the pointer moved hands on the
    /// previous frame without copying it.
    pub frame: std::sync::Arc<Frame>,
    /// Where this frame may differ from the previous capture's: every
    /// changed pixel must lie inside (`None`: unknown, compare everything).
    /// The frame history compares only there, once for all viewers, so a
    /// source must include everything it re-read, not only what it was told.
    pub damage: Option<Vec<Rect>>,
    pub moves: Vec<MoveHint>,
    /// A new pointer image, when it changed.
    pub cursor: Option<CursorShape>,
    /// The monitors within the frame (RandR), when they changed; an empty
    /// list means one screen covering the frame.
    pub screens: Option<Vec<Rect>>,
    /// Where the pointer's hotspot is now, in frame coordinates (`None`:
    /// unknown, or off the served area).
    pub pointer: Option<(u16, u16)>,
    /// The lock keys' state in rfbproto's LED State order (bit 0 Scroll
    /// Lock, bit 1 Num Lock, bit 2 Caps Lock); `None`: unknown.
    pub leds: Option<u8>,
}

pub trait ScreenSource: Send + 'static {
    /// A human-readable name, used as the desktop name.
    fn name(&self) -> String;
    /// Wait until the screen may have changed (at most `max_wait`), then
    /// return the current screen. `Ok(None)`: nothing changed.
    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError>;
    /// Called about once a second while no viewer wants a frame: take in
    /// what the screen reports (events) without grabbing anything.
    fn idle(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    /// The next capture must read everything that is polled (pointer,
    /// lock keys) at once: a viewer just joined.
    fn refresh(&mut self) {}
}

/// Grabs of screen pixels since the process started (every source counts
/// its own): logged by the capture loop, so tests and operators can see
/// that nothing is grabbed while no viewer wants a frame.
static GRABS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A source grabbed pixels from the screen.
pub fn note_grab() {
    GRABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Grabs so far (see [`note_grab`]).
pub fn grabs() -> u64 {
    GRABS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many viewers want a frame now. The capture loop calls the source
/// only while at least one does (a request pending, or continuous updates
/// and room in the congestion window): with no viewer, or only viewers
/// that are still digesting the last update, nothing is grabbed.
#[derive(Debug, Default)]
pub struct Demand {
    wanting: std::sync::Mutex<usize>,
    changed: std::sync::Condvar,
    /// Viewers that started: the capture turn after one did publishes a
    /// frame even when nothing changed, so the newcomer's first update
    /// never comes from a frame captured before it joined.
    joins: std::sync::atomic::AtomicU64,
}

impl Demand {
    /// A handle for one viewer, not wanting anything yet.
    pub fn handle(self: &std::sync::Arc<Self>) -> DemandHandle {
        DemandHandle {
            demand: self.clone(),
            on: false,
        }
    }

    /// Whether some viewer wants a frame; waits up to `timeout` for one
    /// to when none does.
    pub fn wait(&self, timeout: Duration) -> bool {
        let n = self.wanting.lock().unwrap_or_else(|e| e.into_inner());
        let (n, _) = self
            .changed
            .wait_timeout_while(n, timeout, |n| *n == 0)
            .unwrap_or_else(|e| e.into_inner());
        *n > 0
    }

    /// Viewers that started so far (see [`DemandHandle::joined`]).
    pub fn joins(&self) -> u64 {
        self.joins.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether some viewer wants a frame now.
    pub fn wanted(&self) -> bool {
        *self.wanting.lock().unwrap_or_else(|e| e.into_inner()) > 0
    }

    fn add(&self, on: bool) {
        let mut n = self.wanting.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            *n += 1;
            self.changed.notify_all();
        } else {
            *n = n.saturating_sub(1);
        }
    }
}

/// One viewer's say in [`Demand`]; withdrawn when dropped.
#[derive(Debug)]
pub struct DemandHandle {
    demand: std::sync::Arc<Demand>,
    on: bool,
}

impl DemandHandle {
    /// This viewer starts: the frame it has seen is possibly old, and it
    /// waits for the next one published (the capture publishes one at its
    /// next turn, changed or not).
    pub fn joined(&self) {
        self.demand
            .joins
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// This viewer wants a frame (or no longer does).
    pub fn set(&mut self, want: bool) {
        if want != self.on {
            self.on = want;
            self.demand.add(want);
        }
    }
}

impl Drop for DemandHandle {
    fn drop(&mut self) {
        self.set(false);
    }
}
