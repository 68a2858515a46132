//! The servers under test, each started on the bench's display with the
//! options that make them comparable: loopback only, no authentication,
//! shared sessions, the cursor sent apart from the framebuffer (or not at
//! all), otherwise their defaults (noted in docs/benchmarks.md).

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Ticketvnc,
    X11vnc,
    X0vncserver,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Ticketvnc => "ticketvnc",
            Server::X11vnc => "x11vnc",
            Server::X0vncserver => "x0vncserver",
        }
    }

    pub fn parse(s: &str) -> Option<Server> {
        [Server::Ticketvnc, Server::X11vnc, Server::X0vncserver]
            .into_iter()
            .find(|v| v.name() == s)
    }

    fn program(self, exe: &Path) -> std::ffi::OsString {
        match self {
            Server::Ticketvnc => exe.as_os_str().to_owned(),
            Server::X11vnc => "x11vnc".into(),
            // The binary itself: the x0vncserver wrapper script would put
            // itself between the bench and the process it measures.
            Server::X0vncserver => "X0tigervnc".into(),
        }
    }

    /// Fails early when the server is not installed.
    pub fn check(self, exe: &Path) -> Result<()> {
        let ok = Command::new(self.program(exe))
            .arg(if self == Server::Ticketvnc {
                "--version"
            } else {
                "-version"
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            bail!(
                "{} is not installed (scripts/install-deps.sh installs x11vnc and tigervnc-scraping-server)",
                self.name()
            );
        }
        Ok(())
    }

    pub fn version(self, exe: &Path) -> String {
        let out = Command::new(self.program(exe))
            .arg(if self == Server::Ticketvnc {
                "--version"
            } else {
                "-version"
            })
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else {
            return String::new();
        };
        let text = [out.stdout, out.stderr].concat();
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned()
    }

    fn args(self, display: &str, port: u16, dir: &Path) -> Vec<String> {
        let port_s = port.to_string();
        let v: Vec<&str> = match self {
            Server::Ticketvnc => {
                let db = dir.join("bench.db");
                return [
                    "--db",
                    &db.to_string_lossy(),
                    "serve",
                    "--source",
                    "x11",
                    "--display",
                    display,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--no-auth",
                    "--no-web",
                ]
                .map(String::from)
                .to_vec();
            }
            // Defaults kept: XDAMAGE hints with polling (-wait 20 ms,
            // -defer 20 ms), no threads. -nocursor: the cursor is not drawn
            // into the framebuffer (the pointer sits in a corner anyway).
            Server::X11vnc => vec![
                "-display",
                display,
                "-rfbport",
                &port_s,
                "-localhost",
                "-nopw",
                "-forever",
                "-shared",
                "-nocursor",
                "-noipv6",
                "-q",
            ],
            // Defaults kept: DAMAGE, FrameRate 60, PollingCycle 30 ms,
            // CompareFB 2, MaxProcessorUsage 35, ZlibLevel -1.
            Server::X0vncserver => vec![
                "-display",
                display,
                "-rfbport",
                &port_s,
                "-interface=127.0.0.1",
                "-SecurityTypes=None",
                "-AlwaysShared=1",
            ],
        };
        v.into_iter().map(String::from).collect()
    }
}

/// A running server, stopped (SIGTERM, then SIGKILL) by its PID on drop.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

/// `taskset` (util-linux) pins a server for `--cpus`.
pub fn check_taskset() -> Result<()> {
    let ok = Command::new("taskset")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("--cpus needs taskset (Debian package util-linux)");
    }
    Ok(())
}

/// The command that starts `program`: itself, or through
/// `taskset -c 0-(N-1)`, which sets the affinity and then execs the program
/// (same PID, so the bench measures the server itself; every thread it
/// starts inherits the mask, and `available_parallelism` sees N cores).
fn command(program: std::ffi::OsString, cpus: Option<usize>) -> Command {
    match cpus {
        None => Command::new(program),
        Some(n) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(format!("0-{}", n.max(1) - 1)).arg(program);
            c
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    pub fn start(
        server: Server,
        exe: &Path,
        display: &str,
        xauthority: &Path,
        dir: &Path,
        tag: &str,
        cpus: Option<usize>,
    ) -> Result<ServerProcess> {
        let port = free_port()?;
        let log_path = dir.join(format!("{tag}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = command(server.program(exe), cpus)
            .args(server.args(display, port, dir))
            .env("DISPLAY", display)
            .env("XAUTHORITY", xauthority)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", server.name()))?;
        let pid = child.id();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut p = ServerProcess { child, pid, addr };
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{} exited at start ({st}): {log}", server.name());
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} does not listen on {addr}", server.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = Pid::from_raw(self.pid as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::command;

    #[test]
    fn pinned_servers_start_through_taskset_and_run_on_those_cores() {
        let c = command("sh".into(), Some(2));
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(
            c.get_args().collect::<Vec<_>>(),
            ["-c", "0-1", "sh"].map(std::ffi::OsStr::new)
        );
        assert_eq!(command("sh".into(), None).get_program(), "sh");
        // The process itself (taskset execs it) runs on core 0 only.
        let out = command("sh".into(), Some(1))
            .args(["-c", "grep Cpus_allowed_list /proc/self/status"])
            .output()
            .expect("run taskset");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().nth(1), Some("0"), "{text}");
    }
}
