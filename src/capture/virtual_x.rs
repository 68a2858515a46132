//! `serve --virtual WxH`: a private Xvfb (with -noreset) on a free display,
//! optionally running a session command in it; both are stopped on drop.

use std::io::{BufRead, BufReader};
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
            let child = Command::new("sh")
                .args(["-c", cmd])
                .env("DISPLAY", &v.display)
                .stdin(Stdio::null())
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

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        for (what, child) in [
            ("session", self.session.as_mut()),
            ("Xvfb", Some(&mut self.xvfb)),
        ] {
            let Some(c) = child else { continue };
            if let Ok(Some(_)) = c.try_wait() {
                continue;
            }
            if let Err(e) = c.kill() {
                warn!(what, error = %e, "cannot stop child");
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
