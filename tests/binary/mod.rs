//! Helpers for tests that drive the real `ticketvnc` binary: `serve` as a
//! child process, CLI calls, one-time codes, a vnc-rs viewer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vnc::{PixelFormat, VncConnector, VncEncoding, VncEvent};

pub const BIN: &str = env!("CARGO_BIN_EXE_ticketvnc");

pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ticketvnc --db DB serve` on a 64x48 test pattern at `fps` (0: still)
/// plus `extra` arguments (which may name another `--source`).
pub fn serve(db: &Path, fps: u32, extra: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args(["--db"])
        .arg(db)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fps",
            &fps.to_string(),
            "--size",
            "64x48",
        ])
        .args(if extra.contains(&"--source") {
            &[][..]
        } else {
            &["--source", "test-pattern"][..]
        })
        .args(extra)
        .env("TICKETVNC_LOG", "warn")
        // The generated TLS certificate goes beside the journal, not in $HOME.
        .env("XDG_CONFIG_HOME", config_dir(db))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ticketvnc serve");
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.expect("serve output");
        if let Some(a) = line.strip_prefix("ticketvnc listening on ") {
            return Serve {
                child,
                addr: a.trim().parse().unwrap(),
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve exited without listening");
}

/// Where `serve` keeps its generated certificate in these tests.
pub fn config_dir(db: &Path) -> std::path::PathBuf {
    // A journal URL (common/testdb.rs on PostgreSQL) is in no directory:
    // one of its own in cargo's temporary directory for tests.
    if let Some(url) = db.to_str().filter(|s| s.contains("://")) {
        let name: String = url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        return Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("ticketvnc-test-config")
            .join(name);
    }
    db.parent().unwrap_or(Path::new(".")).join("config")
}

/// The certificate `serve` generated for VeNCrypt.
pub fn tls_cert(db: &Path) -> std::path::PathBuf {
    config_dir(db).join("ticketvnc/tls-cert.pem")
}

pub fn cli(db: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub fn open_code(db: &Path, ticket: &str, extra: &[&str]) -> String {
    let mut args = vec!["ticket", "open", ticket];
    args.extend_from_slice(extra);
    let (ok, out) = cli(db, &args);
    assert!(ok, "ticket open failed: {out}");
    out.lines()
        .find_map(|l| l.strip_prefix("One-time code: "))
        .expect("a code in the output")
        .trim()
        .to_owned()
}

/// Connect, authenticate with `password`, wait for the first picture. With
/// `hold`, keep the connection open (returned) instead of closing it.
pub async fn viewer(
    addr: SocketAddr,
    password: String,
    hold: bool,
) -> Result<Option<vnc::VncClient>, vnc::VncError> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    viewer_on(tcp, password, hold).await
}

/// [`viewer`] over a connection the caller made (a chosen source address).
pub async fn viewer_on(
    tcp: tokio::net::TcpStream,
    password: String,
    hold: bool,
) -> Result<Option<vnc::VncClient>, vnc::VncError> {
    let client = VncConnector::new(tcp)
        .set_auth_method(async move { Ok(password) })
        .add_encoding(VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(PixelFormat::bgra())
        .build()?
        .try_start()
        .await?
        .finish()?;
    client
        .input(vnc::X11Event::Refresh)
        .await
        .expect("request an update");
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), client.recv_event())
            .await
            .expect("no event from the server")?;
        if let VncEvent::RawImage(..) = ev {
            break;
        }
    }
    if hold {
        return Ok(Some(client));
    }
    let _ = client.close().await;
    Ok(None)
}
