//! vncdotool as a scripted viewer (tests/clients/vncdotool_drive.py), and
//! the repository venv's python it runs in. One copy for every test file
//! that types, clicks or reads the clipboard through a viewer nobody here
//! wrote.

use super::{poll_until, ChildGuard};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the driver may take to connect or to carry out commands (a
/// bound for a failing test on a loaded machine, not a speed claim).
const DRIVE_TIMEOUT: Duration = Duration::from_secs(90);

static VENV: Mutex<()> = Mutex::new(());

/// The repository venv's python with vncdotool (created by
/// scripts/install-deps.sh --venv when missing).
pub fn venv_python() -> PathBuf {
    let _g = VENV.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".venv/bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import vncdotool.client"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ok(&py) {
        let st = Command::new(root.join("scripts/install-deps.sh"))
            .arg("--venv")
            .status()
            .expect("run scripts/install-deps.sh --venv");
        assert!(
            st.success() && ok(&py),
            "vncdotool is not installed in .venv"
        );
    }
    py
}

/// tests/clients/vncdotool_drive.py: a vncdotool viewer taking commands.
pub struct Drive {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<String>>>,
    sent: usize,
}

impl Drive {
    /// Connect to `addr` (security None) and wait until connected.
    pub fn start(addr: SocketAddr) -> Drive {
        Drive::start_with(addr, None)
    }

    /// Connect to `addr` with VNC authentication (`password`: a password or
    /// a one-time code; given through the environment, never argv).
    pub fn start_with_password(addr: SocketAddr, password: &str) -> Drive {
        Drive::start_with(addr, Some(password))
    }

    fn start_with(addr: SocketAddr, password: Option<&str>) -> Drive {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/vncdotool_drive.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .args(["--port", &addr.port().to_string()])
            .envs(password.map(|p| ("VNCDO_PASSWORD", p)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run vncdotool_drive.py");
        let stdin = child.stdin.take();
        let out = Arc::new(Mutex::new(Vec::new()));
        let lines = out.clone();
        let so = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(so).lines() {
                let Ok(l) = l else { break };
                lines.lock().unwrap().push(l);
            }
        });
        let d = Drive {
            child: ChildGuard(child),
            stdin,
            out,
            sent: 0,
        };
        poll_until("vncdotool to connect", DRIVE_TIMEOUT, || {
            d.line_with("CONNECTED").map(|_| ())
        });
        d
    }

    /// The first output line starting with `prefix`; panics on a line
    /// saying the driver failed or lost the connection.
    pub fn line_with(&self, prefix: &str) -> Option<String> {
        let lines = self.lines();
        lines.iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// The output so far; panics if the driver failed or lost the connection.
    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        let lines = self.out.lock().unwrap();
        if let Some(bad) = lines
            .iter()
            .find(|l| l.starts_with("FAILED") || l.starts_with("LOST") || l.starts_with("ERROR"))
        {
            panic!("vncdotool: {bad}");
        }
        lines
    }

    /// Send commands and wait until the last one has been carried out.
    pub fn run(&mut self, cmds: &[&str]) {
        let stdin = self.stdin.as_mut().expect("driver running");
        for c in cmds {
            writeln!(stdin, "{c}").unwrap();
            self.sent += 1;
        }
        stdin.flush().unwrap();
        let want = format!("DONE {}", self.sent);
        poll_until(&format!("vncdotool to run {cmds:?}"), DRIVE_TIMEOUT, || {
            self.lines().contains(&want).then_some(())
        });
    }

    /// ServerCutText received so far (Latin-1 bytes).
    pub fn cuts(&self) -> Vec<Vec<u8>> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("CUT "))
            .map(|h| {
                (0..h.len() / 2)
                    .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    }

    /// Disconnect and wait (up to 10 s) for the client to exit.
    pub fn quit(mut self) {
        self.run(&["quit"]);
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
