//! `serve --virtual WxH`: a private Xvfb (with -noreset) on a free display,
//! optionally running a session command in it; both are stopped on drop.
//!
//! The display only lets in clients that know its cookie: an X authority
//! file with one MIT-MAGIC-COOKIE-1 entry (16 random bytes from the OS RNG)
//! is written, mode 0600, into a private 0700 directory and given to Xvfb
//! (`-auth FILE`) and to the session command (`XAUTHORITY`). Other local
//! users (and the user's other programs, unless they are handed the file)
//! cannot connect, watch the screen or inject input.
//!
//! ticketvnc's own X connections (capture, input, clipboard) find the
//! cookie through `XAUTHORITY` too, since enigo has no way to be handed
//! one. Changing the environment while other threads run is unsound, so
//! the binary calls [`export_xauthority`] at the start of `main`, before
//! the async runtime exists; [`VirtualDisplay::start`] then uses that file.
//! Without it (a library user), `start` makes a private file that only the
//! session command is told about; see [`VirtualDisplay::xauthority`].
//! The file and its directory are removed when the last holder is dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum VirtualError {
    #[error("cannot start Xvfb (is the xvfb package installed?): {0}")]
    Spawn(std::io::Error),
    #[error("Xvfb did not report a display (is the X authority file readable?): {0}")]
    NoDisplay(String),
    #[error("cannot set the virtual display's size: {0}")]
    Size(#[from] super::resize::ResizeError),
    #[error("cannot start session command {cmd:?}: {source}")]
    Session { cmd: String, source: std::io::Error },
    #[error("cannot write the X authority file {path}: {source}")]
    Auth {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The X authority protocol Xvfb and every client use.
const COOKIE_NAME: &[u8] = b"MIT-MAGIC-COOKIE-1";
/// FamilyWild: the entry matches any address. Xvfb picks its display
/// number itself (-displayfd), so the number is not known when the file is
/// written; an empty number matches any display. The file belongs to this
/// one server, so "any" means exactly its display.
const FAMILY_WILD: u16 = 0xffff;

/// An X authority file holding one fresh cookie, in a private directory;
/// both are removed on drop.
pub struct XAuthority {
    dir: PathBuf,
    path: PathBuf,
}

impl std::fmt::Debug for XAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cookie.
        f.debug_struct("XAuthority")
            .field("path", &self.path)
            .finish()
    }
}

/// One entry of the binary Xauthority format: family (u16, big endian),
/// then address, display number, protocol name and data, each as a u16
/// big-endian length followed by the bytes.
fn xauth_entry(family: u16, address: &[u8], number: &[u8], name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = family.to_be_bytes().to_vec();
    for field in [address, number, name, data] {
        v.extend_from_slice(&(field.len() as u16).to_be_bytes());
        v.extend_from_slice(field);
    }
    v
}

impl XAuthority {
    /// A new directory (0700) under the temporary directory with an
    /// `Xauthority` file (0600) holding a random MIT-MAGIC-COOKIE-1.
    pub fn create() -> Result<XAuthority, VirtualError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let base = std::env::temp_dir();
        let mut tag = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("ticketvnc-x-{}-{tag}", std::process::id()));
        // Fails if it exists: never reuse a directory someone else made.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| VirtualError::Auth {
                path: dir.clone(),
                source,
            })?;
        let auth = XAuthority {
            path: dir.join("Xauthority"),
            dir,
        };
        let mut cookie = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cookie);
        let entry = xauth_entry(FAMILY_WILD, b"", b"", COOKIE_NAME, &cookie);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&auth.path)
            .and_then(|mut f| {
                f.write_all(&entry)?;
                f.sync_all()
            })
            .map_err(|source| VirtualError::Auth {
                path: auth.path.clone(),
                source,
            })?;
        Ok(auth)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for XAuthority {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The authority file this process exported in `XAUTHORITY`, while anyone
/// holds it.
static EXPORTED: Mutex<Option<Weak<XAuthority>>> = Mutex::new(None);

/// Creates an X authority file for the virtual display and points this
/// process's X clients at it (`XAUTHORITY`). Call it before any other
/// thread exists (at the start of `main`): changing the environment while
/// threads run is unsound. Hold the result until exit; the file is removed
/// when it and the display are dropped.
pub fn export_xauthority() -> Result<Arc<XAuthority>, VirtualError> {
    let auth = Arc::new(XAuthority::create()?);
    std::env::set_var("XAUTHORITY", auth.path());
    *EXPORTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(&auth));
    Ok(auth)
}

/// A session command that exited quickly this many times in a row is not
/// restarted again (`--session-restart`).
const MAX_QUICK_RESTARTS: u32 = 5;
/// A run shorter than this counts as a quick exit; restarts are at least
/// this far apart.
const QUICK_EXIT: Duration = Duration::from_secs(2);

/// How the session command ended for good (not restarted).
#[derive(Clone, Debug)]
pub struct SessionEnd {
    pub status: Option<std::process::ExitStatus>,
    /// Why it was not restarted, when restarting was asked for.
    pub gave_up: Option<String>,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Some(s) => write!(f, "the session command ended ({s})")?,
            None => write!(f, "the session command could not be waited for")?,
        }
        if let Some(why) = &self.gave_up {
            write!(f, "; not restarted: {why}")?;
        }
        Ok(())
    }
}

impl SessionEnd {
    /// Ended by itself with status 0 (the user logged out).
    pub fn success(&self) -> bool {
        self.gave_up.is_none() && self.status.is_some_and(|s| s.success())
    }
}

/// The session command's current process group and whether we are
/// stopping (then it is never restarted).
#[derive(Default)]
struct SessionState {
    group: Option<rustix::process::Pid>,
    stopping: bool,
}

/// Runs the session command on its own thread: waits for it (so it is
/// reaped), logs how it ended, restarts it or reports the end.
struct SessionRunner {
    state: Arc<Mutex<SessionState>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ended: Option<tokio::sync::oneshot::Receiver<SessionEnd>>,
}

pub struct VirtualDisplay {
    pub display: String,
    xvfb: Child,
    session: Option<SessionRunner>,
    /// Viewers may resize it (RandR; Xvfb started at the largest size).
    resizable: bool,
    // Dropped after the processes (fields drop in order, after Drop::drop).
    auth: Arc<XAuthority>,
}

impl VirtualDisplay {
    /// Start Xvfb at `width`x`height`x24 on a display it picks itself
    /// (-displayfd, so two servers never race for a number), then run
    /// `session` (a shell command line) in it.
    pub fn start(
        width: u16,
        height: u16,
        session: Option<&str>,
    ) -> Result<VirtualDisplay, VirtualError> {
        VirtualDisplay::start_with(width, height, session, false)
    }

    /// Like [`VirtualDisplay::start`]; with `restart` the session command
    /// is started again each time it exits (unless it keeps exiting at
    /// once).
    pub fn start_with(
        width: u16,
        height: u16,
        session: Option<&str>,
        restart: bool,
    ) -> Result<VirtualDisplay, VirtualError> {
        let exported = EXPORTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        // With the authority exported, this process can talk to the
        // display (XAUTHORITY): start Xvfb at the largest size viewers may
        // ask for (Xvfb allocates its framebuffer once; RandR sizes stay
        // within it) and set the requested size through RandR at once.
        let resizable = exported.is_some();
        let (xw, xh) = if resizable {
            let max = super::resize::VIRTUAL_MAX;
            (width.max(max.0), height.max(max.1))
        } else {
            (width, height)
        };
        let auth = match exported {
            Some(a) => a,
            None => Arc::new(XAuthority::create()?),
        };
        let mut xvfb = Command::new("Xvfb")
            .arg("-auth")
            .arg(auth.path())
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{xw}x{xh}x24"),
                "-noreset",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: Ctrl-C in the terminal goes to
            // ticketvnc alone, which then stops Xvfb in order.
            .process_group(0)
            .spawn()
            .map_err(VirtualError::Spawn)?;
        let stdout = xvfb.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.trim().parse::<u32>().is_ok() => l,
            other => {
                let _ = xvfb.kill();
                let _ = xvfb.wait();
                return Err(VirtualError::NoDisplay(format!("{other:?}")));
            }
        };
        let name = format!(":{}", line.trim());
        info!(display = %name, width, height, pid = xvfb.id(), xauthority = %auth.path().display(), "started private Xvfb");
        let mut v = VirtualDisplay {
            display: name,
            xvfb,
            session: None,
            resizable,
            auth,
        };
        if resizable && (xw, xh) != (width, height) {
            // On error `v` is dropped, which stops Xvfb.
            use super::resize::DesktopResizer as _;
            super::resize::XRandrResizer::new(&v.display).resize(width, height)?;
        }
        if let Some(cmd) = session {
            let spawn = {
                let (cmd, display, xauth) = (
                    cmd.to_owned(),
                    v.display.clone(),
                    v.auth.path().to_path_buf(),
                );
                // Its own process group, so that everything the command
                // starts (also in the background, also what does not use
                // X) can be stopped with it, and Ctrl-C does not reach it.
                move || {
                    Command::new("sh")
                        .args(["-c", &cmd])
                        .env("DISPLAY", &display)
                        .env("XAUTHORITY", &xauth)
                        .stdin(Stdio::null())
                        .process_group(0)
                        .spawn()
                        .map_err(|source| VirtualError::Session {
                            cmd: cmd.clone(),
                            source,
                        })
                }
            };
            let child = spawn()?;
            info!(pid = child.id(), "started session command");
            v.session = Some(SessionRunner::start(child, spawn, restart));
        }
        Ok(v)
    }

    /// What viewers' SetDesktopSize requests go to (`None`: this display
    /// was started without an exported X authority and cannot be resized).
    pub fn resizer(&self) -> Option<Arc<dyn super::resize::DesktopResizer>> {
        self.resizable
            .then(|| Arc::new(super::resize::XRandrResizer::new(&self.display)) as _)
    }

    /// Resolves when the session command has ended for good (it exited and
    /// is not restarted). `None` without a session command, or when
    /// already taken.
    pub fn take_session_end(&mut self) -> Option<tokio::sync::oneshot::Receiver<SessionEnd>> {
        self.session.as_mut()?.ended.take()
    }
}

impl SessionRunner {
    fn start(
        first: Child,
        spawn: impl Fn() -> Result<Child, VirtualError> + Send + 'static,
        restart: bool,
    ) -> SessionRunner {
        use rustix::process::{kill_process_group, Pid, Signal};
        let state = Arc::new(Mutex::new(SessionState {
            group: Some(Pid::from_child(&first)),
            stopping: false,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("session-command".into())
            .spawn(move || {
                let lock = || st.lock().unwrap_or_else(|e| e.into_inner());
                let mut child = first;
                let mut quick = 0u32;
                loop {
                    let started = Instant::now();
                    // Reaps it: no zombie `sh` is left behind.
                    let status = child.wait().ok();
                    let mut s = lock();
                    if s.stopping {
                        return;
                    }
                    // What it left running in its group goes with it.
                    if let Some(g) = s.group.take() {
                        let _ = kill_process_group(g, Signal::TERM);
                    }
                    let shown = status.map_or("unknown status".into(), |s| s.to_string());
                    if status.is_some_and(|s| s.success()) {
                        info!(pid = child.id(), status = %shown, "the session command exited");
                    } else {
                        warn!(pid = child.id(), status = %shown, "the session command exited");
                    }
                    if started.elapsed() < QUICK_EXIT {
                        quick += 1;
                    } else {
                        quick = 0;
                    }
                    let gave_up = if !restart {
                        None
                    } else if quick >= MAX_QUICK_RESTARTS {
                        Some(format!(
                            "it exited within {QUICK_EXIT:?} {quick} times in a row"
                        ))
                    } else {
                        drop(s);
                        // Never more than one start per QUICK_EXIT.
                        std::thread::sleep(QUICK_EXIT.saturating_sub(started.elapsed()));
                        let mut s = lock();
                        if s.stopping {
                            return;
                        }
                        match spawn() {
                            Ok(c) => {
                                info!(pid = c.id(), "restarted the session command");
                                s.group = Some(Pid::from_child(&c));
                                child = c;
                                continue;
                            }
                            Err(e) => Some(e.to_string()),
                        }
                    };
                    let _ = tx.send(SessionEnd { status, gave_up });
                    return;
                }
            })
            .expect("spawn the session command thread");
        SessionRunner {
            state,
            thread: Some(thread),
            ended: Some(rx),
        }
    }

    /// Stop the command's whole process group: SIGTERM so programs can
    /// exit cleanly, then SIGKILL for whatever is left of the group.
    fn stop(&mut self) {
        use rustix::process::{kill_process_group, test_kill_process_group, Signal};
        let group = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.stopping = true;
            s.group.take()
        };
        if let Some(g) = group {
            let _ = kill_process_group(g, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while test_kill_process_group(g).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if test_kill_process_group(g).is_ok() {
                let _ = kill_process_group(g, Signal::KILL);
            }
        }
        // The thread returns once the command has been reaped.
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl VirtualDisplay {
    /// The Xvfb process's ID (for measuring it).
    pub fn pid(&self) -> u32 {
        self.xvfb.id()
    }

    /// The X authority file clients of this display need (`XAUTHORITY`).
    pub fn xauthority(&self) -> &Path {
        self.auth.path()
    }
}

/// Wait up to `d` for `c` to exit; whether it did.
fn wait_exit(c: &mut Child, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if let Ok(Some(_)) = c.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        if let Some(s) = self.session.as_mut() {
            s.stop();
        }
        // Xvfb: SIGTERM lets it remove its lock file and socket.
        let x = &mut self.xvfb;
        if let Ok(None) = x.try_wait() {
            let _ = kill_process(Pid::from_child(x), Signal::TERM);
            if !wait_exit(x, Duration::from_secs(2)) {
                if let Err(e) = x.kill() {
                    warn!(error = %e, "cannot stop Xvfb");
                }
                wait_exit(x, Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_file_is_private_and_well_formed_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let a = XAuthority::create().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(a.path()), 0o600);
        assert_eq!(mode(a.path().parent().unwrap()), 0o700);
        let b = std::fs::read(a.path()).unwrap();
        // family, empty address, empty number, name, 16-byte cookie
        assert_eq!(&b[..2], &[0xff, 0xff]);
        assert_eq!(&b[2..6], &[0, 0, 0, 0]);
        assert_eq!(&b[6..8], &[0, 18]);
        assert_eq!(&b[8..26], COOKIE_NAME);
        assert_eq!(&b[26..28], &[0, 16]);
        assert_eq!(b.len(), 28 + 16);
        let other = XAuthority::create().unwrap();
        assert_ne!(std::fs::read(other.path()).unwrap(), b, "same cookie twice");
        let (p, d) = (
            a.path().to_path_buf(),
            a.path().parent().unwrap().to_path_buf(),
        );
        drop(a);
        assert!(!p.exists() && !d.exists());
    }
}
