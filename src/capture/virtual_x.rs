//! `serve --virtual WxH`: a private Xvfb (with -noreset) on a free display,
//! optionally running a session command in it; both are stopped on drop.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum VirtualError {
    #[error("cannot start Xvfb (is the xvfb package installed?): {0}")]
    Spawn(std::io::Error),
    #[error("Xvfb did not report a display: {0}")]
    NoDisplay(String),
    #[error("cannot start session command {cmd:?}: {source}")]
    Session { cmd: String, source: std::io::Error },
}

pub struct VirtualDisplay {
    pub display: String,
    xvfb: Child,
    session: Option<Child>,
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
        let mut xvfb = Command::new("Xvfb")
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
        info!(display = %name, width, height, pid = xvfb.id(), "started private Xvfb");
        let mut v = VirtualDisplay {
            display: name,
            xvfb,
            session: None,
        };
        if let Some(cmd) = session {
            // Its own process group, so that everything the command starts
            // (also in the background, also what does not use X) can be
            // stopped with it.
            let child = Command::new("sh")
                .args(["-c", cmd])
                .env("DISPLAY", &v.display)
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
