//! A desktop under test, so one test body runs on X11 and on Wayland:
//!
//! | | `Desktop::X11` | `Desktop::Sway` |
//! |---|---|---|
//! | the screen | a private Xvfb (`:220`..) | headless sway as `ticketvnc-test` (tests/common/wayland.rs) |
//! | `serve` args | `--source x11 --display :N` | `--source wayland` (ticketvnc runs as that user in the session) |
//! | the screen read independently | `import -window root` | `grim` |
//! | input observed | xterm running a script | foot running the same script |
//! | clipboard read | `xclip -o` | `wl-paste` |
//!
//! The input probe is a terminal filling the screen that runs `stty raw
//! -echo`, switches on xterm SGR any-motion mouse reports and `cat`s
//! everything into a file: typed characters arrive as they are, clicks and
//! wheel steps as `ESC [ < b ; col ; row M/m`, on both desktops alike.
//!
//! Everything is stopped by PID when the value is dropped; nothing is
//! shared between tests.

use super::wayland::{Sway, UserProcess};
use super::{ChildGuard, XvfbGuard};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ticketvnc");
/// X displays of this fixture (other suites use 60..212).
pub const X_RANGE: std::ops::Range<u32> = 220..236;
/// How long an expected change may take (a bound for a failing test on a
/// loaded machine, not a speed claim).
pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const W: u32 = 640;
pub const H: u32 = 480;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desktop {
    X11,
    Sway,
}

/// One `#[test]` per desktop from one body: `on_each_desktop!(name, body)`
/// where `body: fn(Desktop)` makes `mod name { fn x11(); fn sway(); }`, so a
/// failure names the desktop.
#[macro_export]
macro_rules! on_each_desktop {
    (ignore $name:ident, $body:ident) => {
        mod $name {
            #[test]
            #[ignore = "peer comparison; run by hand"]
            fn x11() {
                super::$body($crate::common::desktop::Desktop::X11)
            }
            #[test]
            #[ignore = "peer comparison; run by hand"]
            fn sway() {
                super::$body($crate::common::desktop::Desktop::Sway)
            }
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn x11() {
                super::$body($crate::common::desktop::Desktop::X11)
            }
            #[test]
            fn sway() {
                super::$body($crate::common::desktop::Desktop::Sway)
            }
        }
    };
}

enum Screen {
    X11 {
        xvfb: XvfbGuard,
        dir: tempfile::TempDir,
        children: Vec<ChildGuard>,
    },
    Sway(Sway),
}

pub struct DesktopUnderTest {
    pub kind: Desktop,
    screen: Screen,
    name: String,
}

impl DesktopUnderTest {
    /// A `W`x`H` desktop of `kind`; `name` names its files.
    pub fn start(kind: Desktop, name: &str) -> DesktopUnderTest {
        let screen = match kind {
            Desktop::X11 => {
                super::require_commands(&[
                    "Xvfb", "xdpyinfo", "import", "xterm", "xdotool", "xclip",
                ]);
                Screen::X11 {
                    xvfb: XvfbGuard::start_in(X_RANGE, W, H),
                    dir: tempfile::Builder::new()
                        .prefix(&format!("ticketvnc-x11-{name}-"))
                        .tempdir()
                        .unwrap(),
                    children: Vec::new(),
                }
            }
            Desktop::Sway => {
                super::require_commands(&["sway", "grim", "foot", "wl-paste", "runuser"]);
                Screen::Sway(Sway::start(name, W, H, None))
            }
        };
        DesktopUnderTest {
            kind,
            screen,
            name: name.to_owned(),
        }
    }

    /// A directory for the test's files, writable by ticketvnc and by the
    /// programs in the session (on sway: the test user's, mode 0755).
    pub fn dir(&self) -> &Path {
        match &self.screen {
            Screen::X11 { dir, .. } => dir.path(),
            Screen::Sway(s) => s.dir.path(),
        }
    }

    /// The journal every `serve` and `cli` of this desktop uses.
    pub fn db(&self) -> PathBuf {
        self.dir().join("journal.db")
    }

    /// `serve` arguments naming this desktop's source.
    pub fn source_args(&self) -> Vec<String> {
        match &self.screen {
            Screen::X11 { xvfb, .. } => vec![
                "--source".into(),
                "x11".into(),
                "--display".into(),
                xvfb.display_name(),
            ],
            Screen::Sway(_) => vec!["--source".into(), "wayland".into()],
        }
    }

    /// What the log says once the source is this desktop's.
    pub fn ready_line(&self) -> &'static str {
        match self.kind {
            Desktop::X11 => "X11 capture ready",
            Desktop::Sway => "Wayland capture ready",
        }
    }

    /// Write a file the session's programs (on sway: the test user) can read,
    /// with `mode`.
    pub fn write_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Screen::Sway(_) = &self.screen {
            let (uid, gid) = super::wayland::test_user();
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        }
        p
    }

    fn bin(&self) -> String {
        match &self.screen {
            Screen::X11 { .. } => BIN.to_owned(),
            Screen::Sway(s) => s.runnable(BIN),
        }
    }

    /// `ticketvnc --db DB serve <source> ARGS --listen 127.0.0.1:0
    /// --no-drawn-cursor` with `TICKETVNC_LOG=log`, as the desktop's user;
    /// returns once it listens on a source of this desktop.
    pub fn serve(&self, name: &str, log: &str, args: &[&str]) -> Served {
        self.serve_on("journal.db", name, log, args)
    }

    /// [`DesktopUnderTest::serve`] with its own journal `db` in `dir()`
    /// (two servers never share one).
    pub fn serve_on(&self, db: &str, name: &str, log: &str, args: &[&str]) -> Served {
        let db = self.dir().join(db);
        let mut a: Vec<String> = vec!["--db".into(), db.to_str().unwrap().to_owned()];
        a.push("serve".into());
        a.extend(self.source_args());
        a.extend(args.iter().map(|s| s.to_string()));
        // The pixels compared are the desktop's own (import/grim), which
        // never hold ticketvnc's drawn pointer.
        a.extend(["--listen", "127.0.0.1:0", "--no-drawn-cursor"].map(String::from));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut s = self.spawn_ticketvnc(name, &[("TICKETVNC_LOG", log)], &a);
        let deadline = Instant::now() + TIMEOUT;
        s.addr = loop {
            if let Some(a) = s.stdout_value("ticketvnc listening on ") {
                break a.parse().expect("listening address");
            }
            assert!(s.alive(), "ticketvnc exited:\n{}", s.log_text());
            assert!(
                Instant::now() < deadline,
                "ticketvnc did not listen:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        s
    }

    /// `ticketvnc ARGS` (any subcommand) as the desktop's user, with `env`
    /// and `XDG_CONFIG_HOME` in `dir()`; its stdout lines are collected, its
    /// stderr is its log. Its `addr` is unset.
    pub fn spawn_ticketvnc(&self, name: &str, env: &[(&str, &str)], args: &[&str]) -> Served {
        let config = self.dir().join("config");
        let mut a: Vec<String> = vec!["env".into()];
        a.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        a.push(format!("XDG_CONFIG_HOME={}", config.display()));
        a.push(self.bin());
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.spawn(name, &a)
    }

    /// Any program `args` in the desktop's session, as its user (a peer
    /// server); stdout collected, stderr its log, stopped by PID on drop.
    pub fn spawn(&self, name: &str, a: &[&str]) -> Served {
        let name = format!("{}-{name}", self.name);
        let (proc_, stdout, log_path) = match &self.screen {
            Screen::X11 { xvfb, .. } => {
                let log_path = super::artefact_dir().join(format!("desktop-{name}.log"));
                let mut c = Command::new(a[0])
                    .args(&a[1..])
                    .env("DISPLAY", xvfb.display_name())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(std::fs::File::create(&log_path).unwrap())
                    .spawn()
                    .unwrap_or_else(|e| panic!("run {}: {e}", a[0]));
                let out = c.stdout.take().unwrap();
                (Proc::Child(Some(c)), out, log_path)
            }
            Screen::Sway(s) => {
                let mut p = s.spawn_piped(&name, a);
                let out = p.take_stdout().unwrap();
                let log = p.log.clone();
                (Proc::User(p), out, log)
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                l2.lock().unwrap().push(l);
            }
        });
        Served {
            proc_,
            addr: "127.0.0.1:1".parse().unwrap(),
            log: log_path,
            stdout: lines,
        }
    }

    /// `serve` that must fail to start: its status and log.
    pub fn serve_fails(&self, args: &[&str]) -> (ExitStatus, String) {
        let db = self.db();
        let mut a: Vec<String> = vec![self.bin(), "--db".into(), db.to_str().unwrap().into()];
        a.push("serve".into());
        a.extend(self.source_args());
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["--listen", "127.0.0.1:0"].map(String::from));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = self.command(&a).stdin(Stdio::null()).output().unwrap();
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// A command run as the desktop's user in its session.
    fn command(&self, args: &[&str]) -> Command {
        match &self.screen {
            Screen::X11 { xvfb, .. } => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]).env("DISPLAY", xvfb.display_name());
                c
            }
            Screen::Sway(s) => s.command(args),
        }
    }

    /// `ticketvnc --db DB ARGS` as the desktop's user (the journal's files
    /// stay that user's): (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let bin = self.bin();
        let db = self.db();
        let mut a = vec![bin.as_str(), "--db", db.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = self
            .command(&a)
            .env("TICKETVNC_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `ticket open TICKET`: its one-time code.
    pub fn open_code(&self, ticket: &str) -> String {
        let (ok, out, err) = self.cli(&["ticket", "open", ticket]);
        assert!(ok, "ticket open failed: {out}{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("One-time code: "))
            .expect("a code in the output")
            .trim()
            .to_owned()
    }

    /// `sessions --json` rows.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let (_, out, _) = self.cli(&["sessions", "--json"]);
        serde_json::from_str(&out).unwrap_or_default()
    }

    /// The screen read without ticketvnc: (width, height, 0x00RRGGBB).
    pub fn screen(&self) -> Option<(usize, usize, Vec<u32>)> {
        match &self.screen {
            Screen::X11 { xvfb, .. } => {
                let o = Command::new("import")
                    .args(["-window", "root", "-depth", "8", "rgb:-"])
                    .env("DISPLAY", xvfb.display_name())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                (o.status.success() && o.stdout.len() == (W * H * 3) as usize).then(|| {
                    (
                        W as usize,
                        H as usize,
                        super::rgb_bytes_to_pixels(&o.stdout),
                    )
                })
            }
            Screen::Sway(s) => s.grim(),
        }
    }

    /// The clipboard's text, if any program owns it.
    pub fn clipboard(&self) -> Option<String> {
        let args: &[&str] = match self.kind {
            Desktop::X11 => &["xclip", "-o", "-selection", "clipboard"],
            Desktop::Sway => &["wl-paste", "--no-newline"],
        };
        let mut c = self.command(args);
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Neither tool may hang a test: a bound on waiting for the owner.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let mut s = String::new();
                use std::io::Read;
                child.stdout.take()?.read_to_string(&mut s).ok()?;
                return st.success().then_some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The input probe: a terminal filling the screen, focused, reporting
    /// keys and mouse into a file (see the module documentation).
    pub fn probe(&mut self) -> Probe {
        let file = self.dir().join("probe.txt");
        let ready = self.dir().join("probe.ready");
        let script = format!(
            "stty raw -echo; printf '\\033[?1003h\\033[?1006h'; : > '{}'; exec cat > '{}'",
            ready.display(),
            file.display()
        );
        match &mut self.screen {
            Screen::X11 { xvfb, children, .. } => {
                let d = xvfb.display_name();
                let c = Command::new("xterm")
                    .args(["-u8", "-T", "probe", "-maximized", "-e", "sh", "-c"])
                    .arg(&script)
                    .env("DISPLAY", &d)
                    .env("LANG", "C.UTF-8")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run xterm");
                children.push(ChildGuard(c));
                // No window manager: the window under the pointer has the
                // focus, and the maximised xterm is under it everywhere.
                super::poll_until("the probe's xterm", TIMEOUT, || {
                    let o = Command::new("xdotool")
                        .args(["search", "--onlyvisible", "--name", "^probe$"])
                        .env("DISPLAY", &d)
                        .output()
                        .ok()?;
                    (o.status.success() && !o.stdout.is_empty()).then_some(())
                });
            }
            Screen::Sway(s) => {
                s.spawn("probe", &["foot", "sh", "-c", &script]);
                super::poll_until("the probe's foot to be focused", TIMEOUT, || {
                    let tree = s.swaymsg(&["-t", "get_tree"]);
                    tree.split("\"focused\": true")
                        .nth(1)
                        .is_some_and(|rest| {
                            rest.split("\"focused\"")
                                .next()
                                .unwrap_or("")
                                .contains("\"app_id\": \"foot\"")
                        })
                        .then_some(())
                });
            }
        }
        super::poll_until("the probe's script", TIMEOUT, || {
            ready.exists().then_some(())
        });
        // The mode switch went out before `cat` started; let the terminal
        // take it in before anything is sent.
        std::thread::sleep(Duration::from_millis(300));
        Probe { file }
    }
}

/// What the probe terminal received.
pub struct Probe {
    file: PathBuf,
}

/// One xterm SGR mouse report: button code (0 left, 1 middle, 2 right,
/// +32 motion, 64/65 wheel), cell column and row, press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mouse {
    pub code: u32,
    pub col: u32,
    pub row: u32,
    pub press: bool,
}

impl Probe {
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.file).unwrap_or_default()).into_owned()
    }

    /// The typed text: everything but the mouse reports.
    pub fn text(&self) -> String {
        let raw = self.raw();
        let mut out = String::new();
        let mut rest = raw.as_str();
        while let Some(i) = rest.find("\x1b[<") {
            out.push_str(&rest[..i]);
            let r = &rest[i + 3..];
            match r.find(['M', 'm']) {
                Some(end) => rest = &r[end + 1..],
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub fn mouse(&self) -> Vec<Mouse> {
        self.raw()
            .split("\x1b[<")
            .skip(1)
            .filter_map(|r| {
                let end = r.find(['M', 'm'])?;
                let press = &r[end..end + 1] == "M";
                let mut f = r[..end].split(';').map(|v| v.parse::<u32>().ok());
                Some(Mouse {
                    code: f.next()??,
                    col: f.next()??,
                    row: f.next()??,
                    press,
                })
            })
            .collect()
    }

    /// Presses of button code `code` (0 left, 1 middle, 2 right).
    pub fn presses(&self, code: u32) -> usize {
        self.mouse()
            .iter()
            .filter(|m| m.code == code && m.press)
            .count()
    }

    /// Wait until `pred` holds for (text, mouse reports).
    pub fn wait(&self, what: &str, pred: impl Fn(&str, &[Mouse]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if pred(&self.text(), &self.mouse()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the probe never got {what}; it got {:?}",
                self.raw()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

enum Proc {
    Child(Option<Child>),
    User(UserProcess),
}

/// ticketvnc serving a desktop; stopped (by PID) when dropped.
pub struct Served {
    proc_: Proc,
    pub addr: SocketAddr,
    log: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Served {
    pub fn stdout_value(&self, prefix: &str) -> Option<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_owned()))
    }

    /// Whether stdout had the line `line`.
    pub fn said(&self, line: &str) -> bool {
        self.stdout.lock().unwrap().iter().any(|l| l == line)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        match &mut self.proc_ {
            Proc::Child(c) => c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))),
            Proc::User(p) => p.alive(),
        }
    }

    /// SIGTERM, and wait for the exit (killed after `TIMEOUT`); the log.
    pub fn stop(mut self) -> String {
        let pid = match &self.proc_ {
            Proc::Child(c) => c.as_ref().map(|c| c.id()),
            Proc::User(p) => p.pid(),
        };
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + TIMEOUT;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Proc::User(p) = &mut self.proc_ {
            let _ = p.wait(Duration::from_secs(5));
        }
        self.log_text()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Proc::Child(Some(c)) = &mut self.proc_ {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Proc::User kills by PID in its own Drop.
    }
}
