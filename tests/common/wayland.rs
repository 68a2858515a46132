//! A headless sway for tests: run as the unprivileged user
//! `ticketvnc-test` (created when absent; sway refuses to run as root),
//! with its own XDG_RUNTIME_DIR (0700, owned by that user), the pixman
//! renderer and one output of a fixed size. Everything that talks to it
//! (grim, foot, ticketvnc, wayvnc) runs as that user with `runuser`.

use super::ChildGuard;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "ticketvnc-test";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The test user's (uid, gid), creating the user when absent.
pub fn test_user() -> (u32, u32) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("run useradd");
        assert!(
            st.success() || id("-u").is_some(),
            "cannot create the user {USER} (tests with sway need root to set it up)"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// A process started with `runuser` whose real PID (of the program, not
/// of runuser) is read from a file it writes first; killed by that PID.
pub struct UserProcess {
    runuser: Option<ChildGuard>,
    pid: Option<u32>,
    pub log: PathBuf,
}

impl UserProcess {
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn alive(&self) -> bool {
        self.pid
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
            && !self
                .pid
                .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
                .is_some_and(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
    }

    /// Send `signal` to the program (by its PID).
    pub fn signal(&self, signal: &str) {
        if let Some(p) = self.pid {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &p.to_string()])
                .status();
        }
    }

    /// Wait for runuser (and so the program) to exit; its status.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let g = self.runuser.as_mut()?;
        loop {
            if let Ok(Some(st)) = g.0.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UserProcess {
    fn drop(&mut self) {
        if self.alive() {
            self.signal("KILL");
        }
        drop(self.runuser.take());
    }
}

pub struct Sway {
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub width: u32,
    pub height: u32,
    process: UserProcess,
    /// Programs started for the test inside the session (killed first).
    extras: Vec<UserProcess>,
}

impl Sway {
    /// Start sway with one headless output of `width`x`height`, showing
    /// `background` (a PNG, centred by swaybg) when given.
    pub fn start(name: &str, width: u32, height: u32, background: Option<&Path>) -> Sway {
        let (uid, gid) = test_user();
        let dir = tempfile::Builder::new()
            .prefix(&format!("ticketvnc-wl-{name}-"))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(&runtime, Some(uid), Some(gid)).unwrap();
        let mut conf = format!(
            "output HEADLESS-1 mode {width}x{height}\ndefault_border none\n\
             focus_follows_mouse no\n"
        );
        if let Some(bg) = background {
            let copy = dir.path().join("background.png");
            std::fs::copy(bg, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
            conf += &format!(
                "exec swaybg -o HEADLESS-1 -i {} -m center\n",
                copy.display()
            );
        }
        let conf_path = dir.path().join("sway.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut s = Sway {
            runtime,
            width,
            height,
            process: UserProcess {
                runuser: None,
                pid: None,
                log: PathBuf::new(),
            },
            extras: Vec::new(),
            dir,
        };
        s.process = s.spawn_logged(
            "sway",
            &[
                "env",
                "WLR_BACKENDS=headless",
                "WLR_LIBINPUT_NO_DEVICES=1",
                "WLR_RENDERER=pixman",
                "sway",
                "-c",
                conf_path.to_str().unwrap(),
            ],
            false,
        );
        let deadline = Instant::now() + TIMEOUT;
        while !s.runtime.join("wayland-1").exists() || s.swaysock().is_none() {
            assert!(s.process.alive(), "sway exited:\n{}", s.process.log_text());
            assert!(
                Instant::now() < deadline,
                "sway did not start:\n{}",
                s.process.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn swaysock(&self) -> Option<PathBuf> {
        std::fs::read_dir(&self.runtime)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("sway-ipc."))
            })
    }

    /// `runuser -u USER -- env -i <session environment> ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", "env", "-i"])
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime.display()))
            .arg("WAYLAND_DISPLAY=wayland-1")
            .arg(format!("HOME={}", self.dir.path().display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg("LANG=C.UTF-8")
            .args(self.swaysock().map(|s| format!("SWAYSOCK={}", s.display())))
            .args(args)
            .current_dir(self.dir.path());
        c
    }

    /// Run `args` in the session, as the test user; its stdout on success.
    pub fn run(&self, args: &[&str]) -> Option<Vec<u8>> {
        let o = self.command(args).stderr(Stdio::inherit()).output().ok()?;
        o.status.success().then_some(o.stdout)
    }

    /// Start `args` in the session; its PID comes from a file the shell
    /// writes before it execs the program. `stdout`: pipe it (else it goes
    /// to the log with stderr).
    fn spawn_logged(&self, name: &str, args: &[&str], stdout: bool) -> UserProcess {
        let log = self.dir.path().join(format!("{name}.log"));
        let pidfile = self.dir.path().join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let mut shell = vec!["sh", "-c", "echo $$ > \"$0\"; exec \"$@\""];
        let pf = pidfile.to_str().unwrap().to_owned();
        shell.push(&pf);
        shell.extend_from_slice(args);
        let logf = std::fs::File::create(&log).unwrap();
        let (uid, gid) = test_user();
        chown(&log, Some(uid), Some(gid)).unwrap();
        let child = self
            .command(&shell)
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::from(logf.try_clone().unwrap())
            })
            .stderr(logf)
            .spawn()
            .expect("run runuser");
        let mut p = UserProcess {
            runuser: Some(ChildGuard(child)),
            pid: None,
            log,
        };
        let deadline = Instant::now() + TIMEOUT;
        while p.pid.is_none() {
            p.pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// Start a program in the session, stopped with the session.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> u32 {
        let p = self.spawn_logged(name, args, false);
        let pid = p.pid.unwrap();
        self.extras.push(p);
        pid
    }

    /// `swaymsg ARGS`.
    pub fn swaymsg(&self, args: &[&str]) -> String {
        let mut a = vec!["swaymsg"];
        a.extend_from_slice(args);
        String::from_utf8(self.run(&a).expect("swaymsg")).unwrap()
    }

    /// The output as grim captures it: (width, height, 0x00RRGGBB pixels).
    pub fn grim(&self) -> Option<(usize, usize, Vec<u32>)> {
        let f = self.dir.path().join("grim.ppm");
        let _ = std::fs::remove_file(&f);
        self.run(&["grim", "-t", "ppm", f.to_str().unwrap()])?;
        read_ppm(&std::fs::read(&f).ok()?)
    }

    /// Start ticketvnc in the session (`serve ARGS --no-auth --listen
    /// 127.0.0.1:0 --no-drawn-cursor`); waits until it listens.
    pub fn ticketvnc(&self, name: &str, args: &[&str]) -> Server {
        self.ticketvnc_bin(name, env!("CARGO_BIN_EXE_ticketvnc"), args)
    }

    /// [`Sway::ticketvnc`] with another binary (a release build).
    pub fn ticketvnc_bin(&self, name: &str, bin: &str, args: &[&str]) -> Server {
        // A checkout under /root (as in some CI) is out of the test user's
        // reach: then run a copy.
        let copy = self.dir.path().join("ticketvnc");
        let bin = if self.run(&["test", "-x", bin]).is_some() {
            bin.to_owned()
        } else {
            if !copy.exists() {
                std::fs::copy(bin, &copy).expect("copy the ticketvnc binary");
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            copy.to_str().unwrap().to_owned()
        };
        let mut a = vec!["env", "RUST_LOG=info", &bin, "--db", "journal.db", "serve"];
        a.extend_from_slice(args);
        // The pixels compared are the compositor's (grim's): ticketvnc must
        // not draw its own pointer into them; tests/cursor.rs covers that.
        a.extend_from_slice(&["--no-auth", "--listen", "127.0.0.1:0", "--no-drawn-cursor"]);
        let mut p = self.spawn_logged(name, &a, true);
        let out = p.runuser.as_mut().unwrap().0.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                l2.lock().unwrap().push(l);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let addr = loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix("ticketvnc listening on ").map(str::to_owned));
            if let Some(a) = found {
                break a.trim().parse().expect("listening address");
            }
            assert!(p.alive(), "ticketvnc exited:\n{}", p.log_text());
            assert!(
                Instant::now() < deadline,
                "ticketvnc did not listen:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server { process: p, addr }
    }

    pub fn alive(&self) -> bool {
        self.process.alive()
    }

    /// Send `signal` to sway (STOP: the compositor hangs; CONT: it runs).
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Stop sway now (the compositor "crashes").
    pub fn kill(&mut self) {
        for p in self.extras.drain(..) {
            drop(p);
        }
        self.process.signal("KILL");
    }
}

impl Drop for Sway {
    fn drop(&mut self) {
        for p in self.extras.drain(..) {
            drop(p);
        }
        if self.process.alive() {
            self.process.signal("TERM");
            let _ = self.process.wait(Duration::from_secs(5));
        }
    }
}

/// ticketvnc running in a sway session.
pub struct Server {
    pub process: UserProcess,
    pub addr: SocketAddr,
}

/// A binary PPM (P6, maxval 255) as 0x00RRGGBB pixels.
pub fn read_ppm(b: &[u8]) -> Option<(usize, usize, Vec<u32>)> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'#') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&b[s..i]).ok()?.to_owned());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let (w, h): (usize, usize) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    let data = b.get(i..i + w * h * 3)?;
    Some((w, h, super::rgb_bytes_to_pixels(data)))
}

/// A deterministic picture with many colours (every byte order mistake
/// shows), as a PNG made with ImageMagick from a PPM.
pub fn write_test_png(path: &Path, w: usize, h: usize) -> Vec<u32> {
    let px: Vec<u32> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as u32, (i / w) as u32);
            let r = (x * 7 + y * 3) & 0xff;
            let g = (x ^ y) & 0xff;
            let b = (x / 5 + y * 11) & 0xff;
            r << 16 | g << 8 | b
        })
        .collect();
    let ppm = path.with_extension("ppm");
    super::write_ppm(&ppm, w, h, &px);
    let st = Command::new("convert")
        .arg(&ppm)
        .arg(path)
        .status()
        .expect("run convert (imagemagick)");
    assert!(st.success());
    px
}

// ------------------------------------------ additions for tests/common/desktop.rs

impl UserProcess {
    /// The program's piped stdout (started with [`Sway::spawn_piped`]).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.runuser.as_mut()?.0.stdout.take()
    }
}

impl Sway {
    /// Start `args` in the session as the test user, its stdout piped to
    /// us (see [`UserProcess::take_stdout`]) and its stderr in its log;
    /// the caller owns (and so stops) it.
    pub fn spawn_piped(&self, name: &str, args: &[&str]) -> UserProcess {
        self.spawn_logged(name, args, true)
    }

    /// A copy of `bin` the test user can run (a checkout under /root is out
    /// of its reach), as [`Sway::ticketvnc_bin`] makes.
    pub fn runnable(&self, bin: &str) -> String {
        if self.run(&["test", "-x", bin]).is_some() {
            return bin.to_owned();
        }
        let copy = self.dir.path().join("ticketvnc");
        if !copy.exists() {
            std::fs::copy(bin, &copy).expect("copy the ticketvnc binary");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        copy.to_str().unwrap().to_owned()
    }
}
