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

pub struct VirtualDisplay {
    pub display: String,
    xvfb: Child,
    session: Option<Child>,
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
        let exported = EXPORTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
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
                &format!("{width}x{height}x24"),
                "-noreset",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
            auth,
        };
        if let Some(cmd) = session {
            // Its own process group, so that everything the command starts
            // (also in the background, also what does not use X) can be
            // stopped with it.
            let child = Command::new("sh")
                .args(["-c", cmd])
                .env("DISPLAY", &v.display)
                .env("XAUTHORITY", v.auth.path())
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|source| VirtualError::Session {
                    cmd: cmd.to_owned(),
                    source,
                })?;
            info!(pid = child.id(), "started session command");
            v.session = Some(child);
        }
        Ok(v)
    }
}

impl VirtualDisplay {
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
        use rustix::process::{kill_process, kill_process_group, test_kill_process_group};
        use rustix::process::{Pid, Signal};
        // The session's whole process group: SIGTERM so programs can exit
        // cleanly, then SIGKILL for whatever is left of the group.
        if let Some(c) = self.session.as_mut() {
            let group = Pid::from_child(c);
            let _ = kill_process_group(group, Signal::TERM);
            wait_exit(c, Duration::from_secs(2));
            if test_kill_process_group(group).is_ok() {
                let _ = kill_process_group(group, Signal::KILL);
            }
            let _ = c.kill();
            wait_exit(c, Duration::from_secs(1));
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
