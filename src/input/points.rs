//! Captured pixels to the OS's pointer coordinates.
//!
//! On macOS a Retina display is captured in pixels (xcap's
//! `CGWindowListCreateImage` gives the backing store, 2 pixels a point on
//! most Retina Macs) but pointer events (enigo's `CGEvent` mouse events)
//! take global display coordinates in points, with the monitor's origin
//! where the display arrangement puts it (negative left of or above the
//! main display). A viewer points in captured pixels; without this the
//! pointer landed at twice the distance from the top-left corner on a
//! Retina screen (off the screen beyond its middle). The input thread
//! (`src/input/enigo.rs`) maps every pointer position through the served
//! display's geometry.

/// Where a captured monitor lies in pointer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorGeometry {
    /// The monitor's top-left corner in pointer coordinates (points).
    pub origin: (i32, i32),
    /// Its size in pointer coordinates (points).
    pub points: (u32, u32),
    /// Its size as captured (pixels): what viewers see and point in.
    pub pixels: (u32, u32),
}

impl MonitorGeometry {
    /// The pointer position for viewer pixel (`x`, `y`): scaled by
    /// points/pixels per axis (the pixel's top-left corner, so 2x2 pixels
    /// of a Retina point all land on that point) and moved by the origin.
    /// Positions beyond the capture are clamped to its last pixel.
    pub fn to_points(&self, x: u16, y: u16) -> (i32, i32) {
        let axis = |v: u16, points: u32, pixels: u32, origin: i32| -> i32 {
            if pixels == 0 || points == 0 {
                return origin + v as i32;
            }
            let v = (v as u64).min(pixels as u64 - 1);
            origin + (v * points as u64 / pixels as u64) as i32
        };
        (
            axis(x, self.points.0, self.pixels.0, self.origin.0),
            axis(y, self.points.1, self.pixels.1, self.origin.1),
        )
    }
}

/// The served display's geometry on macOS, looked up with xcap (the same
/// choice of display as the capture's `XcapSource::open(None)`: the main
/// display, else the first) and cached for a few seconds, so a change of
/// resolution or arrangement is followed without a lookup per event.
#[cfg(target_os = "macos")]
#[derive(Default)]
pub struct DisplayCache {
    at: Option<std::time::Instant>,
    geometry: Option<MonitorGeometry>,
}

#[cfg(target_os = "macos")]
impl DisplayCache {
    const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn geometry(&mut self) -> Option<MonitorGeometry> {
        if self.at.is_none_or(|t| t.elapsed() >= Self::REFRESH) {
            self.at = Some(std::time::Instant::now());
            self.geometry = served_display();
        }
        self.geometry
    }
}

/// The main display's bounds in points (`CGDisplayBounds`) and its size in
/// pixels (points times xcap's scale factor, which is the display mode's
/// pixel width over its point width: the size `CGWindowListCreateImage`
/// captures).
#[cfg(target_os = "macos")]
fn served_display() -> Option<MonitorGeometry> {
    let all = xcap::Monitor::all().ok()?;
    let m = all
        .iter()
        .find(|m| m.is_primary().unwrap_or(false))
        .or_else(|| all.first())?;
    let (w, h) = (m.width().ok()?, m.height().ok()?);
    let scale = m.scale_factor().ok()?;
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    Some(MonitorGeometry {
        origin: (m.x().ok()?, m.y().ok()?),
        points: (w, h),
        pixels: (
            (w as f32 * scale).round() as u32,
            (h as f32 * scale).round() as u32,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retina_halves_and_the_origin_moves() {
        // A 1440x900-point Retina display captured at 2880x1800 pixels,
        // arranged left of the main display.
        let g = MonitorGeometry {
            origin: (-1440, 0),
            points: (1440, 900),
            pixels: (2880, 1800),
        };
        assert_eq!(g.to_points(0, 0), (-1440, 0));
        assert_eq!(g.to_points(1, 1), (-1440, 0));
        assert_eq!(g.to_points(2, 3), (-1439, 1));
        assert_eq!(g.to_points(2879, 1799), (-1, 899));
        // Beyond the capture: the last point, not the next display.
        assert_eq!(g.to_points(65535, 65535), (-1, 899));
    }

    #[test]
    fn non_integer_scales_and_1x() {
        // "Looks like 1680x1050" on a 2880x1800 panel (1.714 pixels a point).
        let g = MonitorGeometry {
            origin: (0, 0),
            points: (1680, 1050),
            pixels: (2880, 1800),
        };
        assert_eq!(g.to_points(2880 / 2, 1800 / 2), (840, 525));
        assert_eq!(g.to_points(2879, 1799), (1679, 1049));
        let one = MonitorGeometry {
            origin: (1920, 0),
            points: (1920, 1080),
            pixels: (1920, 1080),
        };
        assert_eq!(one.to_points(100, 200), (2020, 200));
    }
}
