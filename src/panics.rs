//! Any thread's panic ends the server: the panic is logged (which thread,
//! where, why), the server is stopped in order (sessions closed, journal
//! flushed, a private Xvfb stopped) and `main` returns an error, so the
//! exit status is non-zero. Should the orderly stop hang, the process exits
//! with status 101 after [`GRACE`].

use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;

/// Time the orderly stop gets after a panic.
const GRACE: Duration = Duration::from_secs(15);

/// What panicked first: "thread 'NAME' panicked at FILE:LINE: MESSAGE".
static PANICKED: OnceLock<watch::Sender<Option<String>>> = OnceLock::new();

fn channel() -> &'static watch::Sender<Option<String>> {
    PANICKED.get_or_init(|| watch::channel(None).0)
}

/// Install the hook (after tracing is set up). The default hook still runs
/// first (it prints the message and, with RUST_BACKTRACE, the backtrace).
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_string();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = ticketvnc::server::panic_message(info.payload());
        let what = format!("thread '{name}' panicked{at}: {msg}");
        tracing::error!(thread = %name, "{what}; stopping the server");
        let first = channel().send_if_modified(|v| {
            if v.is_none() {
                *v = Some(what.clone());
                true
            } else {
                false
            }
        });
        if first {
            let _ = std::thread::Builder::new()
                .name("panic-watchdog".into())
                .spawn(|| {
                    std::thread::sleep(GRACE);
                    tracing::error!("the server did not stop in time after a panic; exiting");
                    std::process::exit(101);
                });
        }
    }));
}

/// Resolves with the description of the first panic in any thread.
pub async fn wait() -> String {
    let mut rx = channel().subscribe();
    let what = match rx.wait_for(|v| v.is_some()).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    match what {
        Some(w) => w,
        None => std::future::pending().await,
    }
}

/// The first panic, if any thread panicked.
pub fn first() -> Option<String> {
    channel().borrow().clone()
}

/// Debug builds only, for tests: `TICKETVNC_TEST_PANIC=capture` makes the
/// screen source panic on its third call (a capture, or an idle turn
/// while no viewer wants a frame), on the capture thread.
#[cfg(debug_assertions)]
pub fn inject(
    source: Box<dyn ticketvnc::capture::ScreenSource>,
) -> Box<dyn ticketvnc::capture::ScreenSource> {
    use ticketvnc::capture::{Capture, CaptureError, ScreenSource};
    struct PanicOnThird(Box<dyn ScreenSource>, u32);
    impl ScreenSource for PanicOnThird {
        fn name(&self) -> String {
            self.0.name()
        }
        fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
            self.1 += 1;
            assert!(self.1 < 3, "TICKETVNC_TEST_PANIC=capture");
            self.0.next(max_wait)
        }
        fn idle(&mut self) -> Result<(), CaptureError> {
            self.1 += 1;
            assert!(self.1 < 3, "TICKETVNC_TEST_PANIC=capture");
            self.0.idle()
        }
    }
    match std::env::var("TICKETVNC_TEST_PANIC").as_deref() {
        Ok("capture") => Box::new(PanicOnThird(source, 0)),
        _ => source,
    }
}

#[cfg(not(debug_assertions))]
pub fn inject(
    source: Box<dyn ticketvnc::capture::ScreenSource>,
) -> Box<dyn ticketvnc::capture::ScreenSource> {
    source
}
