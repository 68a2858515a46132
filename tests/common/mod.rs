//! Shared helpers for the real-client integration tests: an in-process
//! server holding the test pattern still, an Xvfb guard, and pixel
//! comparison with diff images written under target/tmp on failure.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod desktop;
pub mod drive;
pub mod flowclient;
pub mod pg;
pub mod slowlink;
pub mod wayland;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketvnc::capture::test_pattern::{self, PatternControl, TestPattern};
use ticketvnc::input::NullInput;
use ticketvnc::rfb::PixelFormat;
use ticketvnc::security::{Authenticator, StaticPassword, VncPassword};
use ticketvnc::server::{self, ServerConfig, ServerHandle};

/// A ticketvnc server in its own background tokio runtime, serving the test
/// pattern held still at frame 0 on 127.0.0.1 (an ephemeral port).
pub struct TestServer {
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub control: PatternControl,
    pub width: u16,
    pub height: u16,
}

impl TestServer {
    /// `password`: `None` serves security type None, `Some` VNC authentication.
    pub fn start(width: u16, height: u16, password: Option<&str>) -> TestServer {
        let (pattern, control) = TestPattern::new(width, height, 0);
        let authenticator: Option<Arc<dyn Authenticator>> = password.map(|p| {
            Arc::new(StaticPassword {
                password: VncPassword::new(p.as_bytes()),
                ticket: None,
            }) as Arc<dyn Authenticator>
        });
        let cfg = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], authenticator);
        // Built on a plain thread so that this also works from async tests.
        let (rt, handle) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            let handle = rt
                .block_on(server::start(cfg, Box::new(pattern), Arc::new(NullInput)))
                .expect("server starts");
            (rt, handle)
        })
        .join()
        .expect("server start thread");
        let addr = handle.local_addrs()[0];
        TestServer {
            rt: Some(rt),
            handle: Some(handle),
            addr,
            control,
            width,
            height,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn viewer_count(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.viewer_count())
    }

    /// The exact pixels of frame `n` at the server's size.
    pub fn expected(&self, n: u64) -> Vec<u32> {
        expected(self.width, self.height, n)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stopper().stop();
        }
        // May run inside an async test: never block here.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The address a spawned `ticketvnc serve` prints ("ticketvnc listening on
/// ADDR"), waiting up to `timeout`; its stdout is read (and drained) from
/// then on by a thread. Panics if the server exits first.
pub fn listening_addr(child: &mut Child, timeout: Duration) -> SocketAddr {
    let addr = Arc::new(std::sync::Mutex::new(None));
    let found = addr.clone();
    let out = child.stdout.take().expect("the server's stdout piped");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if let Some(a) = l.trim().strip_prefix("ticketvnc listening on ") {
                *found.lock().unwrap() = a.split_whitespace().next().map(str::to_string);
            }
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = addr.lock().unwrap().clone() {
            return a.parse().expect("listening address");
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("ticketvnc exited ({st}) before listening");
        }
        assert!(Instant::now() < deadline, "ticketvnc did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll until `f` returns something, or panic naming `what` after `timeout`.
pub fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pixels (`0x00RRGGBB`) of test-pattern frame `n`.
pub fn expected(w: u16, h: u16, n: u64) -> Vec<u32> {
    test_pattern::render(w, h, n).to_pixels()
}

/// Quantise a native pixel to a client format's value (keeps the top bits
/// of each channel, as the server does).
pub fn quantise(pf: &PixelFormat, native: u32) -> u32 {
    pf.from_native(native)
}

/// What a correct viewer shows for `native` when it asked for `pf`: the
/// server reduces with `from_native`, the viewer expands with `to_native`.
pub fn reduce(pf: &PixelFormat, native: u32) -> u32 {
    pf.to_native(pf.from_native(native))
}

/// Directory for debugging artefacts (diff images), under target/tmp.
pub fn artefact_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("realclients");
    std::fs::create_dir_all(&d).expect("create artefact dir");
    d
}

/// Number of pixels that differ.
pub fn count_diff(expected: &[u32], actual: &[u32]) -> usize {
    assert_eq!(expected.len(), actual.len(), "image sizes differ");
    expected
        .iter()
        .zip(actual)
        .filter(|(a, b)| (**a & 0xffffff) != (**b & 0xffffff))
        .count()
}

/// Write `0x00RRGGBB` pixels as a binary PPM (viewable with any image tool).
pub fn write_ppm(path: &Path, w: usize, h: usize, px: &[u32]) {
    let mut out = format!("P6\n{w} {h}\n255\n").into_bytes();
    for p in px.iter().take(w * h) {
        out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
    }
    std::fs::write(path, out).expect("write ppm");
}

/// Compare two images of `w`x`h`; on any difference write
/// NAME-expected.ppm, NAME-actual.ppm and NAME-diff.ppm (differing pixels
/// in red) to target/tmp/realclients and return a description.
pub fn compare_images(
    name: &str,
    w: usize,
    h: usize,
    expected: &[u32],
    actual: &[u32],
) -> Result<(), String> {
    if expected.len() != w * h || actual.len() != w * h {
        return Err(format!(
            "{name}: size mismatch: expected {} pixels, got {} (image {w}x{h})",
            expected.len(),
            actual.len()
        ));
    }
    let n = count_diff(expected, actual);
    if n == 0 {
        return Ok(());
    }
    let dir = artefact_dir();
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| (a & 0xffffff) != (b & 0xffffff))
        .unwrap();
    let diff: Vec<u32> = expected
        .iter()
        .zip(actual)
        .map(|(a, b)| {
            if (a & 0xffffff) != (b & 0xffffff) {
                0xff0000
            } else {
                (a >> 2) & 0x3f3f3f
            }
        })
        .collect();
    write_ppm(&dir.join(format!("{name}-expected.ppm")), w, h, expected);
    write_ppm(&dir.join(format!("{name}-actual.ppm")), w, h, actual);
    write_ppm(&dir.join(format!("{name}-diff.ppm")), w, h, &diff);
    Err(format!(
        "{name}: {n} of {} pixels differ; first at ({}, {}): expected {:06x}, got {:06x}; \
         images in {}",
        w * h,
        first % w,
        first / w,
        expected[first] & 0xffffff,
        actual[first] & 0xffffff,
        dir.display()
    ))
}

/// Panic unless the images are identical.
pub fn assert_same_image(name: &str, w: usize, h: usize, expected: &[u32], actual: &[u32]) {
    if let Err(e) = compare_images(name, w, h, expected, actual) {
        panic!("{e}");
    }
}

/// Read a file of packed 8-bit RGB triples into `0x00RRGGBB` pixels.
pub fn rgb_bytes_to_pixels(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(3)
        .map(|c| ((c[0] as u32) << 16) | ((c[1] as u32) << 8) | c[2] as u32)
        .collect()
}

// ---------------------------------------------------------------- Xvfb

/// Displays the viewer tests may use by default.
pub const DISPLAY_RANGE: std::ops::Range<u32> = 60..80;
static NEXT_DISPLAY: AtomicU32 = AtomicU32::new(0);

/// A private Xvfb server, killed (by PID) when dropped.
pub struct XvfbGuard {
    child: Child,
    pub display: u32,
    /// Already killed and reaped: its PID may belong to someone else now.
    reaped: bool,
}

impl XvfbGuard {
    /// Start `Xvfb :N -screen 0 WxHx24 -noreset` on a free display in the
    /// default range and wait until it accepts connections.
    pub fn start(w: u32, h: u32) -> XvfbGuard {
        XvfbGuard::start_in(DISPLAY_RANGE, w, h)
    }

    /// Like [`XvfbGuard::start`], on a free display in `range` (suites that
    /// run at the same time as others use their own range).
    pub fn start_in(range: std::ops::Range<u32>, w: u32, h: u32) -> XvfbGuard {
        XvfbGuard::start_with(range, w, h, &[])
    }

    /// Like [`XvfbGuard::start_in`], with extra Xvfb arguments (e.g.
    /// `-extension MIT-SHM` to run without an extension).
    pub fn start_with(range: std::ops::Range<u32>, w: u32, h: u32, extra: &[&str]) -> XvfbGuard {
        let span = range.end - range.start;
        // Start where the previous test in this process left off, so tests
        // running in parallel threads try different displays.
        for _ in 0..span {
            let n = range.start + NEXT_DISPLAY.fetch_add(1, Ordering::SeqCst) % span;
            if !display_is_free(n) {
                continue;
            }
            let mut child = match Command::new("Xvfb")
                .arg(format!(":{n}"))
                .args(["-screen", "0", &format!("{w}x{h}x24")])
                .args(["-noreset", "-nolisten", "tcp"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => panic!("cannot run Xvfb (install the xvfb package): {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a race for this display, or it failed
                }
                let ok = Command::new("xdpyinfo")
                    .args(["-display", &format!(":{n}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return XvfbGuard {
                    child,
                    display: n,
                    reaped: false,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no free X display in :{range:?} could be started");
    }

    pub fn display_name(&self) -> String {
        format!(":{}", self.display)
    }

    /// The Xvfb process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the X server at once (SIGKILL, as in a crash) and reap it; its
    /// stale lock file is cleaned up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
        let _ = display_is_free(self.display);
    }
}

/// Whether display `n` is free. A lock file left by a dead Xvfb (killed
/// hard, so it could not clean up) is removed; only displays of our own
/// range are ever looked at.
fn display_is_free(n: u32) -> bool {
    let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    match std::fs::read_to_string(&lock) {
        Ok(text) => {
            let alive = text
                .trim()
                .parse::<u32>()
                .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .unwrap_or(true);
            if alive {
                return false;
            }
            let _ = std::fs::remove_file(&lock);
            let _ = std::fs::remove_file(&socket);
            true
        }
        Err(_) => !socket.exists(),
    }
}

impl Drop for XvfbGuard {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SIGTERM lets Xvfb remove its lock file and socket; SIGKILL only
        // if it does not exit in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = display_is_free(self.display);
    }
}

/// A child process killed (by PID) on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    /// Ask the process to exit (SIGTERM) and wait up to `timeout`; kill it
    /// if it is still running. Returns its stderr if it was piped.
    pub fn terminate(mut self, timeout: Duration) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a command can be found on PATH.
pub fn have_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panic with an installation hint when a required tool is missing. Tests
/// never skip silently: scripts/test.sh installs everything they need.
pub fn require_commands(cmds: &[&str]) {
    let missing: Vec<&str> = cmds.iter().copied().filter(|c| !have_command(c)).collect();
    assert!(
        missing.is_empty(),
        "missing tools {missing:?}; run scripts/test.sh (as root it installs them) or see .ci/run"
    );
}
