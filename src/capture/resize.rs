//! Changing the desktop's size on a viewer's request (SetDesktopSize).
//! Only a desktop ticketvnc owns may be resized: the private Xvfb of
//! `--virtual`. A customer's real screen is never changed by a viewer; the
//! server then has no resizer and refuses with "prohibited".

use thiserror::Error;

/// Why a resize was not done, as ExtendedDesktopSize status codes
/// (rfbproto: 1 prohibited, 2 out of resources, 3 invalid screen layout).
#[derive(Debug, Error)]
pub enum ResizeError {
    #[error("invalid screen layout: {0}")]
    Invalid(String),
    #[error("resize failed: {0}")]
    Failed(String),
}

impl ResizeError {
    /// The status code sent to the viewer.
    pub fn status(&self) -> u16 {
        match self {
            ResizeError::Failed(_) => 2,
            ResizeError::Invalid(_) => 3,
        }
    }
}

/// Resizes the served desktop. Called from a session task: it must be
/// quick (one round trip or a few), and on success the screen has the new
/// size when it returns, so the capture will publish it.
pub trait DesktopResizer: Send + Sync {
    fn resize(&self, width: u16, height: u16) -> Result<(), ResizeError>;
}

/// Xvfb's RandR: the screen can be set to any size up to the size Xvfb was
/// started with (its framebuffer is allocated once), so `--virtual`
/// starts Xvfb at [`VIRTUAL_MAX`] (or the requested size, if larger) and
/// sets the requested size at once.
#[cfg(target_os = "linux")]
pub const VIRTUAL_MAX: (u16, u16) = (3840, 2160);

/// Resizes an X screen with RandR (`xrandr --fb` without the tool).
#[cfg(target_os = "linux")]
pub struct XRandrResizer {
    display: String,
}

#[cfg(target_os = "linux")]
impl XRandrResizer {
    /// For X display `display`; connections use `XAUTHORITY` as the
    /// capture's do.
    pub fn new(display: &str) -> XRandrResizer {
        XRandrResizer {
            display: display.to_owned(),
        }
    }
}

#[cfg(target_os = "linux")]
impl DesktopResizer for XRandrResizer {
    fn resize(&self, width: u16, height: u16) -> Result<(), ResizeError> {
        use x11rb::connection::Connection;
        use x11rb::protocol::randr::{self, ConnectionExt as _};
        use x11rb::protocol::xproto::ConnectionExt as _;
        let failed = |e: &dyn std::fmt::Display| ResizeError::Failed(e.to_string());
        let (conn, n) = x11rb::connect(Some(&self.display)).map_err(|e| failed(&e))?;
        let root = conn.setup().roots[n].root;
        conn.randr_query_version(1, 3)
            .map_err(|e| failed(&e))?
            .reply()
            .map_err(|e| failed(&e))?;
        let range = conn
            .randr_get_screen_size_range(root)
            .map_err(|e| failed(&e))?
            .reply()
            .map_err(|e| failed(&e))?;
        if width < range.min_width
            || height < range.min_height
            || width > range.max_width
            || height > range.max_height
        {
            return Err(ResizeError::Invalid(format!(
                "{width}x{height} is outside {}x{}..{}x{}",
                range.min_width, range.min_height, range.max_width, range.max_height
            )));
        }
        // A CRTC that would reach past the new size makes SetScreenSize
        // fail (BadMatch): switch it off first, as `xrandr --fb` does.
        let res = conn
            .randr_get_screen_resources_current(root)
            .map_err(|e| failed(&e))?
            .reply()
            .map_err(|e| failed(&e))?;
        for &crtc in &res.crtcs {
            let info = conn
                .randr_get_crtc_info(crtc, res.config_timestamp)
                .map_err(|e| failed(&e))?
                .reply()
                .map_err(|e| failed(&e))?;
            let right = i32::from(info.x) + i32::from(info.width);
            let bottom = i32::from(info.y) + i32::from(info.height);
            if info.mode != 0 && (right > i32::from(width) || bottom > i32::from(height)) {
                conn.randr_set_crtc_config(
                    crtc,
                    x11rb::CURRENT_TIME,
                    res.config_timestamp,
                    0,
                    0,
                    0,
                    randr::Rotation::ROTATE0,
                    &[],
                )
                .map_err(|e| failed(&e))?
                .reply()
                .map_err(|e| failed(&e))?;
            }
        }
        // Millimetres at 96 dpi.
        let mm = |px: u16| (u32::from(px) * 254 / 960).max(1);
        conn.randr_set_screen_size(root, width, height, mm(width), mm(height))
            .map_err(|e| failed(&e))?
            .check()
            .map_err(|e| failed(&e))?;
        let g = conn
            .get_geometry(root)
            .map_err(|e| failed(&e))?
            .reply()
            .map_err(|e| failed(&e))?;
        if (g.width, g.height) != (width, height) {
            return Err(ResizeError::Failed(format!(
                "the X screen is {}x{} after asking for {width}x{height}",
                g.width, g.height
            )));
        }
        conn.flush().map_err(|e| failed(&e))?;
        Ok(())
    }
}
