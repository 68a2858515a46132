//! Windows and macOS screen source on the xcap crate. These platforms give
//! no cheap damage notification through xcap, so the monitor is grabbed at a
//! steady interval and published only when it changed (the session's tile
//! diff then finds where).

use super::{Capture, CaptureError, ScreenSource};
use crate::framebuffer::Frame;
use std::time::{Duration, Instant};
use xcap::Monitor;

const INTERVAL: Duration = Duration::from_millis(33);

/// xcap's `Monitor` holds OS handles that are not `Send`, so the source keeps
/// the monitor's id and looks it up on the capture thread for each grab.
pub struct XcapSource {
    monitor_id: u32,
    name: String,
    last: Option<Frame>,
    last_grab: Option<Instant>,
}

impl XcapSource {
    /// Monitor `index` in xcap's order (`None`: the primary monitor).
    pub fn open(index: Option<usize>) -> Result<XcapSource, CaptureError> {
        let all = Monitor::all().map_err(|e| CaptureError::Gone(e.to_string()))?;
        let monitor = match index {
            Some(i) => all.into_iter().nth(i),
            None => {
                let mut all = all;
                let primary = all.iter().position(|m| m.is_primary().unwrap_or(false));
                primary
                    .map(|p| all.swap_remove(p))
                    .or_else(|| all.into_iter().next())
            }
        }
        .ok_or_else(|| CaptureError::Gone("no such monitor".into()))?;
        Ok(XcapSource {
            monitor_id: monitor
                .id()
                .map_err(|e| CaptureError::Gone(e.to_string()))?,
            name: monitor.name().unwrap_or_else(|_| "screen".into()),
            last: None,
            last_grab: None,
        })
    }

    fn grab(&self) -> Result<Frame, CaptureError> {
        super::note_grab();
        let monitor = Monitor::all()
            .map_err(|e| CaptureError::Gone(e.to_string()))?
            .into_iter()
            .find(|m| m.id().ok() == Some(self.monitor_id))
            .ok_or_else(|| CaptureError::Gone("monitor disconnected".into()))?;
        let img = monitor
            .capture_image()
            .map_err(|e| CaptureError::Failed(e.to_string()))?;
        let (w, h) = (
            img.width().min(16384) as u16,
            img.height().min(16384) as u16,
        );
        // Converted straight into the frame's bands, row after row.
        let mut pixels = img.pixels();
        Ok(Frame::from_rows(w, h, |_, out| {
            out.extend(pixels.by_ref().take(w as usize).map(|p| {
                let [r, g, b, _] = p.0;
                (r as u32) << 16 | (g as u32) << 8 | b as u32
            }));
        }))
    }
}

impl ScreenSource for XcapSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let deadline = Instant::now() + max_wait;
        loop {
            if let Some(t) = self.last_grab {
                let next = t + INTERVAL;
                let now = Instant::now();
                if next > now {
                    if next > deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(next - now);
                }
            }
            let started = Instant::now();
            let first = self.last_grab.is_none();
            self.last_grab = Some(started);
            let frame = self.grab()?;
            if first {
                tracing::info!(
                    width = frame.width,
                    height = frame.height,
                    ms = started.elapsed().as_millis() as u64,
                    "screen capture ready (xcap, grabbed every {} ms)",
                    INTERVAL.as_millis()
                );
            }
            tracing::trace!(ms = started.elapsed().as_millis() as u64, "grab");
            if self.last.as_ref() != Some(&frame) {
                self.last = Some(frame.clone());
                return Ok(Some(Capture {
                    frame: std::sync::Arc::new(frame),
                    damage: None,
                    moves: Vec::new(),
                    cursor: None,
                    screens: None,
                    pointer: None,
                    leds: None,
                }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
