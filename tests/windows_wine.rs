//! The Windows build of ticketvnc (`x86_64-pc-windows-gnu`, cross-built
//! here with MinGW) running under Wine, with a private Xvfb as Wine's
//! screen, driven by Linux viewers:
//!
//! - `ticketvnc.exe serve --source screen` (xcap's GDI capture) serves the
//!   Wine desktop pixel-exact to vnc-rs and TigerVNC vncviewer; the truth
//!   is `import -window root` of that Xvfb (Wine draws its windows on the
//!   X root window, so xcap's screen is the whole X screen);
//! - vncdotool's pointer moves the X pointer (`xdotool getmouselocation`),
//!   its clicks, wheel and keys reach a Windows window's message queue
//!   through enigo's SendInput (tests/windows/keylog.c writes down every
//!   WM_CHAR, WM_KEYDOWN and button message it gets);
//! - the journal: a one-time code opened with the .exe authenticates a
//!   viewer, a wrong one is refused, and `sessions` / `sessions verify`
//!   (the .exe under Wine, and the Linux build on the same file) show it.
//!
//! The .exe is built by the first test (`cargo build --target
//! x86_64-pc-windows-gnu --bin ticketvnc`, incremental after the first
//! time). Debian 12's Wine 8.0 has no `ProcessPrng`, which Rust's std
//! imports, so a stub bcryptprimitives.dll (tests/windows/processprng.c)
//! is built next to it. The Wine prefix lives in target/tmp/windows-wine
//! and is created once (about 20 s); the tests run one at a time, each
//! with its own Xvfb, and stop their wineserver at the end.
//!
//! Tests never skip: a missing wine or MinGW fails with an installation
//! hint (scripts/install-deps.sh installs them).
#![cfg(target_os = "linux")]

mod common;

use common::drive::Drive;

use common::{compare_images, require_commands, ChildGuard, XvfbGuard};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use vnc::{
    ClientKeyEvent, PixelFormat, VncClient, VncConnector, VncEncoding, VncError, VncEvent, X11Event,
};

/// X displays this suite may use (others use 60..80 and 100..120).
const X_RANGE: std::ops::Range<u32> = 140..160;
/// How long any one expected change may take (Wine starts slowly on a
/// loaded machine).
const TIMEOUT: Duration = Duration::from_secs(90);
const TARGET: &str = "x86_64-pc-windows-gnu";

// ------------------------------------------------------------- Wine setup

/// The cross-built ticketvnc.exe with its helpers, and the Wine prefix.
struct WineEnv {
    /// ticketvnc.exe, bcryptprimitives.dll, keylog.exe.
    bin: PathBuf,
    prefix: PathBuf,
}

static ENV: OnceLock<WineEnv> = OnceLock::new();
/// One Wine test at a time: they share the prefix, and Wine keeps the
/// screen's geometry per wineserver.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    root().join("target/tmp/windows-wine")
}

fn mingw_gcc(out: &Path, args: &[&str]) {
    let st = Command::new("x86_64-w64-mingw32-gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .status()
        .expect("run x86_64-w64-mingw32-gcc");
    assert!(st.success(), "building {} failed", out.display());
}

fn wine_env() -> &'static WineEnv {
    ENV.get_or_init(|| {
        require_commands(&[
            "wine",
            "wineserver",
            "wineboot",
            "x86_64-w64-mingw32-gcc",
            "Xvfb",
            "xdpyinfo",
            "import",
            "display",
            "xsetroot",
            "xdotool",
            "vncviewer",
        ]);
        let t = Instant::now();
        let mut cargo = Command::new(env!("CARGO"));
        // Without what `cargo test` sets for the test binary (the package's
        // name, version, manifest dir): build scripts (ring, cc) watch
        // these, so they would differ from a build in a shell and rebuild.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let set_by_cargo = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&&*k);
            if set_by_cargo {
                cargo.env_remove(&*k);
            }
        }
        let st = cargo
            .current_dir(root())
            .args(["build", "--target", TARGET, "--bin", "ticketvnc"])
            .status()
            .expect("run cargo");
        assert!(st.success(), "cargo build --target {TARGET} failed");
        eprintln!(
            "cross build (incremental): {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        let exe = target_dir.join(TARGET).join("debug/ticketvnc.exe");
        let bin = work_dir().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(&exe, bin.join("ticketvnc.exe")).expect("copy ticketvnc.exe");
        let src = root().join("tests/windows");
        mingw_gcc(
            &bin.join("bcryptprimitives.dll"),
            &[
                "-shared",
                "-O2",
                src.join("processprng.c").to_str().unwrap(),
                "-ladvapi32",
            ],
        );
        mingw_gcc(
            &bin.join("keylog.exe"),
            &["-O2", "-mwindows", src.join("keylog.c").to_str().unwrap()],
        );
        let prefix = work_dir().join("prefix");
        if !prefix.join("system.reg").exists() {
            let t = Instant::now();
            let st = wine_command(&prefix, None, "wineboot")
                .arg("-i")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run wineboot");
            assert!(st.success(), "wineboot -i failed");
            eprintln!("Wine prefix created in {:.1} s", t.elapsed().as_secs_f64());
            stop_wineserver(&prefix);
        }
        WineEnv { bin, prefix }
    })
}

/// `program` with the suite's Wine environment: its prefix, no debug
/// output, no Mono or Gecko installer, and `display` as the screen.
fn wine_command(prefix: &Path, display: Option<&str>, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("WINEPREFIX", prefix)
        .env("WINEARCH", "win64")
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", "mscoree=d;mshtml=d")
        // Wine passes the Unix environment on; these are not Windows paths.
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env("TICKETVNC_LOG", "info");
    match display {
        Some(d) => c.env("DISPLAY", d),
        None => c.env_remove("DISPLAY"),
    };
    c
}

/// Stop the wineserver of `prefix` (and so every Wine process of it).
fn stop_wineserver(prefix: &Path) {
    let _ = wine_command(prefix, None, "wineserver").arg("-k").status();
    let _ = wine_command(prefix, None, "wineserver").arg("-w").status();
}

/// A Unix path as Wine's Z: drive sees it.
fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// One Wine test: holds the serial lock, an Xvfb as Wine's screen and a
/// wineserver kept running (`-p`) for the test's Wine processes; stops
/// that wineserver at the end.
struct WineSession {
    env: &'static WineEnv,
    xvfb: Option<XvfbGuard>,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl WineSession {
    fn start(screen: Option<(u32, u32)>) -> WineSession {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let env = wine_env();
        let xvfb = screen.map(|(w, h)| XvfbGuard::start_in(X_RANGE, w, h));
        let s = WineSession {
            env,
            xvfb,
            dir: tempfile::tempdir().unwrap(),
            _serial: serial,
        };
        // One wineserver for all of this test's Wine processes (it would
        // otherwise start and stop with each).
        let st = s
            .command("wineserver")
            .arg("-p")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(st.map(|s| s.success()).unwrap_or(false), "wineserver -p");
        s
    }

    fn display(&self) -> String {
        self.xvfb.as_ref().expect("an Xvfb").display_name()
    }

    fn command(&self, program: &str) -> Command {
        let d = self.xvfb.as_ref().map(|x| x.display_name());
        wine_command(&self.env.prefix, d.as_deref(), program)
    }

    /// `wine BIN/exe args`.
    fn wine(&self, exe: &str) -> Command {
        let mut c = self.command("wine");
        c.arg(self.env.bin.join(exe));
        c
    }

    /// Run ticketvnc.exe to completion: (success, stdout, stderr). The
    /// output goes through files: Wine's helper processes (winedevice.exe)
    /// inherit pipes and keep them open after ticketvnc.exe has exited.
    fn ticketvnc(&self, args: &[&str]) -> (bool, String, String) {
        let (o, e) = (self.dir.path().join("out"), self.dir.path().join("err"));
        let st = self
            .wine("ticketvnc.exe")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).unwrap())
            .stderr(std::fs::File::create(&e).unwrap())
            .status()
            .expect("run wine ticketvnc.exe");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (st.success(), read(&o), read(&e))
    }
}

impl Drop for WineSession {
    fn drop(&mut self) {
        stop_wineserver(&self.env.prefix);
    }
}

/// `wine ticketvnc.exe --db DB serve ARGS --listen 127.0.0.1:0`, killed
/// (by PID) when dropped; waits for "ticketvnc listening on ADDR".
struct WinServe {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl WinServe {
    fn start(s: &WineSession, name: &str, db: &Path, args: &[&str]) -> WinServe {
        let log = common::artefact_dir().join(format!("wine-{name}-server.log"));
        let mut child = s
            .wine("ticketvnc.exe")
            .arg("--db")
            .arg(win_path(db))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run wine ticketvnc.exe serve");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                l2.lock().unwrap().push(l);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let addr = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                l.trim_end()
                    .strip_prefix("ticketvnc listening on ")
                    .map(str::to_string)
            });
            if let Some(a) = found {
                break a.parse().expect("listening address");
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "ticketvnc.exe exited ({st}) before listening:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ticketvnc.exe did not start listening:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        WinServe {
            child: Some(child),
            addr,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WinServe {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// tests/windows/keylog.c in a Wine window: what input it received.
struct KeyLog {
    _child: ChildGuard,
    path: PathBuf,
}

impl KeyLog {
    fn start(s: &WineSession, x: u32, y: u32, w: u32, h: u32) -> KeyLog {
        let path = s.dir.path().join("keylog.txt");
        let child = s
            .wine("keylog.exe")
            .arg(win_path(&path))
            .args([x, y, w, h].map(|v| v.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run wine keylog.exe");
        let k = KeyLog {
            _child: ChildGuard(child),
            path,
        };
        poll("keylog.exe to open its window", || {
            k.lines().iter().any(|l| l == "ready").then_some(())
        });
        k
    }

    /// Wait until `f` holds for the log; panic showing the log if not.
    fn wait(&self, what: &str, f: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let lines = self.lines();
            if f(&lines) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; keylog.exe got {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The text typed (WM_CHAR, UTF-16 decoded) in keylog.exe's `lines`.
fn text_of(lines: &[String]) -> String {
    let units: Vec<u16> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("char "))
        .map(|h| u16::from_str_radix(h, 16).unwrap())
        .collect();
    String::from_utf16_lossy(&units)
}

// ---------------------------------------------------------- X helpers

fn x_run(display: &str, args: &[&str]) -> Option<Vec<u8>> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::poll_until(what, TIMEOUT, f)
}

fn screen_size(display: &str) -> Option<(usize, usize)> {
    let out = String::from_utf8(x_run(display, &["xdpyinfo"])?).ok()?;
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("dimensions:"))?;
    let (w, h) = line.split_whitespace().nth(1)?.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// `import -window root` of the X screen, as `0x00RRGGBB` pixels.
#[derive(Clone)]
struct Grab {
    w: usize,
    h: usize,
    px: Vec<u32>,
}

impl Grab {
    fn at(&self, x: usize, y: usize) -> u32 {
        self.px[y * self.w + x]
    }
}

fn grab_root(display: &str) -> Option<Grab> {
    let (w, h) = screen_size(display)?;
    let rgb = x_run(
        display,
        &["import", "-window", "root", "-depth", "8", "rgb:-"],
    )?;
    (rgb.len() == w * h * 3).then(|| Grab {
        w,
        h,
        px: common::rgb_bytes_to_pixels(&rgb),
    })
}

fn mouse_location(display: &str) -> Option<(u32, u32)> {
    let out = String::from_utf8(x_run(display, &["xdotool", "getmouselocation"])?).ok()?;
    let mut x = None;
    let mut y = None;
    for part in out.split_whitespace() {
        if let Some(v) = part.strip_prefix("x:") {
            x = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("y:") {
            y = v.parse().ok();
        }
    }
    Some((x?, y?))
}

/// A deterministic 64x48 picture for the root window.
fn tile_pixel(x: usize, y: usize) -> u32 {
    let (x, y) = (x % 64, y % 48);
    (((x * 4) as u32) << 16) | (((y * 5) as u32) << 8) | ((x ^ y) as u32 & 0xff)
}

fn write_tile(path: &Path) {
    let px: Vec<u32> = (0..48)
        .flat_map(|y| (0..64).map(move |x| tile_pixel(x, y)))
        .collect();
    common::write_ppm(path, 64, 48, &px);
}

/// keylog.exe's background, RGB(0x33,0x66,0x99).
const KEYLOG_COLOUR: u32 = 0x336699;

// ------------------------------------------------------------- viewers

/// A vnc-rs viewer (Raw, 32 bpp) keeping its own framebuffer.
struct RsViewer {
    client: VncClient,
    fb: Vec<u32>,
    w: usize,
    h: usize,
}

impl RsViewer {
    async fn connect(addr: SocketAddr, password: Option<&str>) -> Result<RsViewer, VncError> {
        let tcp = TcpStream::connect(addr).await?;
        RsViewer::over(tcp, password).await
    }

    /// The viewer's side of an RFB session on a connected stream (one it
    /// dialled, or one a reverse connection brought to it).
    async fn over(tcp: TcpStream, password: Option<&str>) -> Result<RsViewer, VncError> {
        let pw = password.map(str::to_string);
        let client = VncConnector::new(tcp)
            .set_auth_method(async move { Ok(pw.unwrap_or_default()) })
            .add_encoding(VncEncoding::Raw)
            .allow_shared(true)
            .set_pixel_format(PixelFormat::bgra())
            .build()?
            .try_start()
            .await?
            .finish()?;
        Ok(RsViewer {
            client,
            fb: Vec::new(),
            w: 0,
            h: 0,
        })
    }

    fn apply(&mut self, ev: VncEvent) {
        match ev {
            VncEvent::SetResolution(s) => {
                self.w = s.width as usize;
                self.h = s.height as usize;
                self.fb = vec![0; self.w * self.h];
            }
            VncEvent::RawImage(r, data) => {
                assert_eq!(data.len(), r.width as usize * r.height as usize * 4);
                for (i, px) in data.chunks_exact(4).enumerate() {
                    let x = r.x as usize + i % r.width as usize;
                    let y = r.y as usize + i / r.width as usize;
                    assert!(x < self.w && y < self.h, "rectangle {r:?} outside");
                    // bgra: blue, green, red, unused (little-endian 0x00RRGGBB).
                    self.fb[y * self.w + x] = u32::from_le_bytes([px[0], px[1], px[2], 0]);
                }
            }
            VncEvent::Copy(dst, src) => {
                let mut tmp = Vec::with_capacity(src.width as usize * src.height as usize);
                for y in 0..src.height as usize {
                    let s = (src.y as usize + y) * self.w + src.x as usize;
                    tmp.extend_from_slice(&self.fb[s..s + src.width as usize]);
                }
                for (y, row) in tmp.chunks_exact(dst.width as usize).enumerate() {
                    let d = (dst.y as usize + y) * self.w + dst.x as usize;
                    self.fb[d..d + row.len()].copy_from_slice(row);
                }
            }
            VncEvent::Error(e) => panic!("vnc-rs reported an error: {e}"),
            _ => {}
        }
    }

    /// Take events for about `d`, asking for an update whenever it is quiet.
    async fn pump(&mut self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        loop {
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            let step = Duration::from_millis(150).min(end - now);
            match tokio::time::timeout(step, self.client.recv_event()).await {
                Ok(Ok(ev)) => self.apply(ev),
                Ok(Err(e)) => panic!("vnc-rs connection ended: {e}"),
                Err(_) => self.client.input(X11Event::Refresh).await.unwrap(),
            }
        }
    }

    /// Wait until the X screen is `ready` and this viewer shows exactly
    /// what `import` grabs from it.
    async fn wait_same_as_screen(
        &mut self,
        display: &str,
        name: &str,
        ready: impl Fn(&Grab) -> bool,
    ) -> Grab {
        let deadline = Instant::now() + TIMEOUT;
        let mut last: Option<Grab> = None;
        loop {
            let d = display.to_string();
            let g = tokio::task::spawn_blocking(move || grab_root(&d))
                .await
                .unwrap();
            if let Some(g) = g {
                if ready(&g) && (g.w, g.h) == (self.w, self.h) && g.px == self.fb {
                    return g;
                }
                last = Some(g);
            }
            if Instant::now() >= deadline {
                let Some(g) = last else {
                    panic!("{name}: could not grab {display}")
                };
                assert!(ready(&g), "{name}: the X screen never got ready");
                let r = if (g.w, g.h) == (self.w, self.h) {
                    compare_images(name, g.w, g.h, &g.px, &self.fb)
                } else {
                    Err(format!(
                        "screen is {}x{}, viewer has {}x{}",
                        g.w, g.h, self.w, self.h
                    ))
                };
                panic!("{name}: vnc-rs never showed the X screen: {r:?}");
            }
            self.pump(Duration::from_millis(300)).await;
        }
    }
}

/// TigerVNC vncviewer (security None: the server runs --no-auth).
fn start_vncviewer(viewer_display: &str, addr: SocketAddr, name: &str) -> ChildGuard {
    let log =
        std::fs::File::create(common::artefact_dir().join(format!("wine-{name}.log"))).unwrap();
    ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", viewer_display)
            .arg(format!("127.0.0.1::{}", addr.port()))
            .args([
                "-SecurityTypes=None",
                "-PreferredEncoding=ZRLE",
                "-AutoSelect=0",
                "-NoJPEG",
                "-Shared=1",
                "-FullColor=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer (tigervnc-viewer)"),
    )
}

/// Wait until the served screen is `ready` and vncviewer's window shows
/// exactly what `import` grabs from it.
fn tiger_same_as_screen(
    viewer_display: &str,
    served: &str,
    name: &str,
    ready: impl Fn(&Grab) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    let mut last: Option<(Grab, Vec<u32>)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(g) = grab_root(served).filter(|g| ready(g)) {
            let win = x_run(
                viewer_display,
                &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
            )
            .and_then(|o| String::from_utf8(o).ok())
            .and_then(|s| s.lines().next().map(str::to_string));
            if let Some(id) = win {
                let shot = x_run(
                    viewer_display,
                    &["import", "-window", id.trim(), "-depth", "8", "rgb:-"],
                );
                // The "Press F8" tip covers the picture for a few seconds.
                if let Some(rgb) = shot.filter(|b| b.len() == g.w * g.h * 3) {
                    let px = common::rgb_bytes_to_pixels(&rgb);
                    if px == g.px {
                        return;
                    }
                    last = Some((g, px));
                }
            }
        }
        if Instant::now() >= deadline {
            let r = match &last {
                Some((g, px)) => compare_images(name, g.w, g.h, &g.px, px),
                None => Err("no window of the screen's size was ever seen".into()),
            };
            panic!("{name}: vncviewer never showed the X screen: {r:?}");
        }
    }
}

// ----------------------------------------------------------------- tests

/// The Wine desktop (an image on the X root window and a Windows window
/// over it) reaches vnc-rs and TigerVNC exactly as `import` sees it, and
/// a change follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exe_serves_the_wine_screen_pixel_exact() {
    let s = WineSession::start(Some((640, 480)));
    let viewer_x = XvfbGuard::start_in(X_RANGE, 800, 600);
    let d = s.display();
    let tile = s.dir.path().join("tile.ppm");
    write_tile(&tile);
    // `display` may report an error after drawing (it cannot keep a window).
    let _ = x_run(&d, &["display", "-window", "root", tile.to_str().unwrap()]);
    let _win = KeyLog::start(&s, 360, 280, 220, 150);
    let first_ready = |g: &Grab| {
        (0..240).all(|y| (0..320).all(|x| g.at(x, y) == tile_pixel(x, y)))
            && (280..430).all(|y| (360..580).all(|x| g.at(x, y) == KEYLOG_COLOUR))
    };
    let db = s.dir.path().join("journal.db");
    let server = WinServe::start(&s, "pixels", &db, &["--source", "screen", "--no-auth"]);

    let mut rs = RsViewer::connect(server.addr, None)
        .await
        .expect("vnc-rs connects");
    rs.wait_same_as_screen(&d, "wine-vncrs-first", first_ready)
        .await;
    let vd = viewer_x.display_name();
    let _tiger = start_vncviewer(&vd, server.addr, "pixels-vncviewer");
    let (vd2, d2) = (vd.clone(), d.clone());
    tokio::task::spawn_blocking(move || {
        tiger_same_as_screen(&vd2, &d2, "wine-tigervnc-first", first_ready)
    })
    .await
    .unwrap();

    // A solid background replaces the image; the Windows window stays.
    assert!(x_run(&d, &["xsetroot", "-solid", "#2e8b57"]).is_some());
    let second_ready = |g: &Grab| {
        g.at(0, 0) == 0x2e8b57
            && g.at(639, 479) == 0x2e8b57
            && (280..430).all(|y| (360..580).all(|x| g.at(x, y) == KEYLOG_COLOUR))
    };
    rs.wait_same_as_screen(&d, "wine-vncrs-second", second_ready)
        .await;
    tokio::task::spawn_blocking(move || {
        tiger_same_as_screen(&vd, &d, "wine-tigervnc-second", second_ready)
    })
    .await
    .unwrap();
    let _ = rs.client.close().await;
    let log = server.log();
    assert!(
        !log.contains("ERROR"),
        "ticketvnc.exe logged an error:\n{log}"
    );
}

/// vncdotool's pointer moves the X pointer; its clicks, wheel and keys
/// arrive in a Windows window as the messages a real keyboard and mouse
/// would produce there.
#[test]
fn exe_input_reaches_a_windows_window_and_the_x_pointer() {
    let s = WineSession::start(Some((640, 480)));
    let d = s.display();
    let win = KeyLog::start(&s, 100, 100, 300, 200);
    let db = s.dir.path().join("journal.db");
    let server = WinServe::start(&s, "input", &db, &["--source", "screen", "--no-auth"]);
    let mut dr = Drive::start(server.addr);

    // The pointer: SendInput under Wine warps the X pointer.
    dr.run(&["move 150 160"]);
    poll("the X pointer at 150,160", || {
        (mouse_location(&d)? == (150, 160)).then_some(())
    });
    dr.run(&["move 387 290"]);
    poll("the X pointer at 387,290", || {
        (mouse_location(&d)? == (387, 290)).then_some(())
    });

    // Buttons and the wheel, in the window's client coordinates.
    dr.run(&[
        "move 150 160",
        "click 1",
        "click 3",
        "click 2",
        "click 4",
        "click 5",
    ]);
    let want = [
        "button left down 50 60",
        "button left up 50 60",
        "button right down 50 60",
        "button right up 50 60",
        "button middle down 50 60",
        "button middle up 50 60",
        "wheel 120",
        "wheel -120",
    ];
    win.wait("the clicks in keylog.exe", |lines| {
        let got: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("button") || l.starts_with("wheel"))
            .collect();
        got == want
    });

    // Characters: ASCII (upper case without Shift, as vncdotool sends it),
    // Latin-1, the Euro sign as a legacy and as a Unicode keysym, Cyrillic,
    // and Shift+A as a real viewer sends it (Shift held, the keysym "A").
    // The keysym decides the character: vncdotool's "shift-a" (Shift with
    // the keysym "a") types "a", as x0vncserver does.
    dr.run(&[
        "type Hello, World!",
        "key ä",
        "key €",
        "keysym 0x010020ac",
        "keysym 0x06c1",
        "keydown shift",
        "key A",
        "keyup shift",
    ]);
    win.wait("the typed text in keylog.exe", |lines| {
        text_of(lines) == "Hello, World!ä€€аA"
    });

    // Keys that are not characters, and a shortcut: virtual keys.
    let before = win.lines().len();
    dr.run(&["key enter", "key f5", "key left", "key ctrl-c"]);
    win.wait("Return, F5, Left and Ctrl+C in keylog.exe", |lines| {
        let new = &lines[before.min(lines.len())..];
        let downs: Vec<&str> = new.iter().filter_map(|l| l.strip_prefix("down ")).collect();
        // Ctrl (VK_CONTROL 11 as Windows reports it) then C (43); WM_CHAR
        // 0003 is what TranslateMessage makes of Ctrl+C.
        downs == ["0d", "74", "25", "11", "43"] && new.iter().any(|l| l == "char 0003")
    });
    // Every key is up again (no key left down: each down has its up).
    let lines = win.lines();
    let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("down "), count("up "), "keys left down: {lines:#?}");
    let log = server.log();
    assert!(
        !log.contains("ERROR"),
        "ticketvnc.exe logged an error:\n{log}"
    );
}

/// The journal under Windows: a one-time code opened with the .exe lets a
/// viewer in, a wrong code is refused, and the .exe (and the Linux build,
/// on the same file) list and verify what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exe_keeps_a_journal() {
    let s = WineSession::start(None);
    let db = s.dir.path().join("journal.db");
    let dbw = win_path(&db);
    let (ok, out, err) = s.ticketvnc(&["--db", &dbw, "ticket", "open", "WIN-7"]);
    assert!(ok, "ticket open under Wine failed:\n{out}\n{err}");
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("One-time code: "))
        .unwrap_or_else(|| panic!("no code in {out:?}"))
        .trim()
        .to_string();
    let server = WinServe::start(
        &s,
        "journal",
        &db,
        &["--source", "test-pattern", "--size", "64x48", "--fps", "0"],
    );

    // A wrong code is refused.
    let wrong = RsViewer::connect(server.addr, Some("nope-123")).await;
    assert!(wrong.is_err(), "a wrong code was accepted");
    // The right one gets the picture.
    let mut v = RsViewer::connect(server.addr, Some(&code))
        .await
        .expect("the one-time code is accepted");
    v.client.input(X11Event::Refresh).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !(v.w == 64 && v.fb.iter().any(|&p| p != 0)) {
        assert!(Instant::now() < deadline, "no picture through the code");
        v.pump(Duration::from_millis(300)).await;
    }
    // A key press (not logged as such, only counted by the journal, if at all).
    let _ = v
        .client
        .input(X11Event::KeyEvent(ClientKeyEvent {
            keycode: 0x61,
            down: true,
        }))
        .await;
    let _ = v.client.close().await;
    drop(v);

    // The session is in the journal with its ticket and an end, the
    // refused attempt too; the chain verifies.
    let json = poll("the session's end in the journal", || {
        let (ok, out, _) = s.ticketvnc(&["--db", &dbw, "sessions", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let rows = v.as_array()?.clone();
        let ended = rows
            .iter()
            .any(|r| r["ticket"] == "WIN-7" && !r["ended_at"].is_null());
        (ok && ended && out.contains("auth failed")).then_some(rows)
    });
    eprintln!("sessions: {}", serde_json::to_string(&json).unwrap());
    let (ok, out, err) = s.ticketvnc(&["--db", &dbw, "sessions", "verify"]);
    assert!(
        ok && out.contains("Journal OK"),
        "verify under Wine: {out}\n{err}"
    );
    drop(server);
    let linux = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(&db)
        .args(["sessions", "verify"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&linux.stdout);
    assert!(
        linux.status.success() && out.contains("Journal OK"),
        "the Linux build cannot verify the journal the Windows build wrote: {out}{}",
        String::from_utf8_lossy(&linux.stderr)
    );
}

/// The tray under Wine: `ticketvnc.exe tray --get-help` with an
/// administrator's tray.toml naming a technician's listening viewer starts
/// (its notification-area icon on Wine's desktop), connects out, and a
/// viewer on that connection gets the picture; the journal records the
/// session as a reverse one against the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exe_tray_get_help_reaches_a_listening_viewer() {
    // The tray needs a desktop for its icon: Wine's, on an Xvfb.
    let s = WineSession::start(Some((800, 600)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let conf = s.dir.path().join("tray.toml");
    std::fs::write(
        &conf,
        format!("company = \"Wine IT\"\nviewer = \"127.0.0.1:{port}\"\nretry_for = 120\n"),
    )
    .unwrap();
    let db = s.dir.path().join("journal.db");
    let dbw = win_path(&db);
    let log = common::artefact_dir().join("wine-tray.log");
    let out = s.dir.path().join("tray.out");
    let tray = ChildGuard(
        s.wine("ticketvnc.exe")
            .args([
                "--db",
                &dbw,
                "tray",
                "--config",
                &win_path(&conf),
                "--get-help",
            ])
            .args(["--source", "test-pattern", "--size", "64x48", "--fps", "0"])
            .args(["--ticket", "WIN-TRAY"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run wine ticketvnc.exe tray"),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (tcp, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("the tray did not connect out:\n{}", read_log()))
        .unwrap();
    let mut v = RsViewer::over(tcp, None).await.unwrap_or_else(|e| {
        panic!(
            "no RFB session on the tray's connection ({e}):\n{}",
            read_log()
        )
    });
    v.client.input(X11Event::Refresh).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !(v.w == 64 && v.h == 48 && v.fb.iter().any(|&p| p != 0)) {
        assert!(
            Instant::now() < deadline,
            "no picture over the tray's connection:\n{}",
            read_log()
        );
        v.pump(Duration::from_millis(300)).await;
    }
    // The icon was built (the tray stops with an error when there is no
    // notification area), with the company from tray.toml.
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        said.contains("ticketvnc tray ready (Wine IT)"),
        "the tray did not report its icon: {said:?}\n{}",
        read_log()
    );
    let _ = v.client.close().await;
    drop(v);
    let rows = poll("the tray's session in the journal", || {
        let (ok, out, _) = s.ticketvnc(&["--db", &dbw, "sessions", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let rows = v.as_array()?.clone();
        let found = rows.iter().any(|r| {
            r["ticket"] == "WIN-TRAY" && r["direction"] == "reverse" && !r["ended_at"].is_null()
        });
        (ok && found).then_some(rows)
    });
    eprintln!("sessions: {}", serde_json::to_string(&rows).unwrap());
    drop(tray);
}
