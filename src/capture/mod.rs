//! Screen sources: where frames come from. The session engine only sees
//! [`ScreenSource`]; X11, Windows/macOS and the synthetic test pattern plug in here.

pub mod test_pattern;

use crate::framebuffer::{Frame, Rect};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("screen source is gone: {0}")]
    Gone(String),
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

/// One capture.
#[derive(Debug)]
pub struct Capture {
    pub frame: Frame,
    /// Where the source knows the screen changed since the previous capture
    /// (`None`: unknown, compare everything).
    pub damage: Option<Vec<Rect>>,
    pub moves: Vec<MoveHint>,
}

pub trait ScreenSource: Send + 'static {
    /// A human-readable name, used as the desktop name.
    fn name(&self) -> String;
    /// Wait until the screen may have changed (at most `max_wait`), then
    /// return the current screen. `Ok(None)`: nothing changed.
    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError>;
}
