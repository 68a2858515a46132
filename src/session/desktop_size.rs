//! SetDesktopSize: the answer a viewer gets (ExtendedDesktopSize status).

use crate::capture::resize::DesktopResizer;
use crate::rfb::limits::MAX_FRAMEBUFFER_EDGE;
use tracing::warn;

/// Status for a request of `size` with `screens` screens: 0 done, 1
/// prohibited (no resizer: a real screen, or a viewer without input
/// rights), 2 failed, 3 invalid layout. Only the framebuffer size is
/// applied; the screens inside it are not (one screen covers it).
pub fn answer(resizer: Option<&dyn DesktopResizer>, (w, h): (u16, u16), screens: u8) -> u16 {
    let Some(r) = resizer else {
        return 1;
    };
    if screens == 0 || w == 0 || h == 0 || w > MAX_FRAMEBUFFER_EDGE || h > MAX_FRAMEBUFFER_EDGE {
        return 3;
    }
    match r.resize(w, h) {
        Ok(()) => 0,
        Err(e) => {
            warn!(error = %e, "desktop size not changed");
            e.status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::resize::ResizeError;
    use std::sync::Mutex;

    struct Fake(Mutex<Vec<(u16, u16)>>);
    impl DesktopResizer for Fake {
        fn resize(&self, w: u16, h: u16) -> Result<(), ResizeError> {
            self.0.lock().unwrap().push((w, h));
            if w > 4000 {
                return Err(ResizeError::Invalid("too wide".into()));
            }
            if h == 999 {
                return Err(ResizeError::Failed("X said no".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn statuses() {
        let f = Fake(Mutex::new(Vec::new()));
        assert_eq!(answer(None, (800, 600), 1), 1);
        assert_eq!(answer(Some(&f), (800, 600), 1), 0);
        assert_eq!(answer(Some(&f), (0, 600), 1), 3);
        assert_eq!(answer(Some(&f), (800, 600), 0), 3);
        assert_eq!(answer(Some(&f), (16385, 600), 1), 3);
        assert_eq!(answer(Some(&f), (4001, 600), 1), 3);
        assert_eq!(answer(Some(&f), (800, 999), 1), 2);
        // Invalid requests never reach the desktop.
        assert_eq!(
            *f.0.lock().unwrap(),
            vec![(800, 600), (4001, 600), (800, 999)]
        );
    }
}
