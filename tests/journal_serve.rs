//! The journal through the real binary: `ticketvnc serve` with one-time
//! codes from `ticketvnc ticket open`, a real viewer (vnc-rs), session rows
//! read back with `ticketvnc sessions --json`, and a kill -9 of the server.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vnc::{PixelFormat, VncConnector, VncEncoding, VncEvent};

const BIN: &str = env!("CARGO_BIN_EXE_ticketvnc");

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &Path) -> Serve {
    let mut child = Command::new(BIN)
        .args(["--db"])
        .arg(db)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fps",
            "0",
            "--size",
            "64x48",
        ])
        .env("TICKETVNC_LOG", "warn")
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

fn cli(db: &Path, args: &[&str]) -> (bool, String) {
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

fn open_code(db: &Path, ticket: &str, extra: &[&str]) -> String {
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
async fn viewer(
    addr: SocketAddr,
    password: String,
    hold: bool,
) -> Result<Option<vnc::VncClient>, vnc::VncError> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
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

fn sessions_json(db: &Path, ticket: &str) -> Vec<serde_json::Value> {
    let (ok, out) = cli(db, &["sessions", "--ticket", ticket, "--json"]);
    assert!(ok, "sessions failed: {out}");
    if out.trim().is_empty() || out.contains("No sessions") {
        return Vec::new();
    }
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_code_sessions_are_journaled_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let s = serve(&db);
    let code = open_code(&db, "4711", &["--title", "Printer offline"]);
    assert_eq!(code.len(), 8);

    // The code gets a real viewer in once.
    viewer(s.addr, code.clone(), false)
        .await
        .expect("first use of the code");
    assert!(
        viewer(s.addr, code.clone(), false).await.is_err(),
        "code worked twice"
    );
    // A wrong code is refused and recorded as an auth failure.
    assert!(viewer(s.addr, "WRONG234".into(), false).await.is_err());
    // An expired code never works.
    let short = open_code(&db, "4712", &["--expires", "1m"]);
    let (ok, _) = cli(&db, &["ticket", "close", "4712"]);
    assert!(ok);
    assert!(
        viewer(s.addr, short, false).await.is_err(),
        "closed ticket's code worked"
    );

    wait_for("the session row to be closed", || {
        sessions_json(&db, "4711")
            .iter()
            .any(|r| r["end_reason"] == "viewer closed")
    })
    .await;
    let rows = sessions_json(&db, "4711");
    let row = rows
        .iter()
        .find(|r| r["end_reason"] == "viewer closed")
        .unwrap();
    assert_eq!(row["ticket"], "4711");
    assert_eq!(row["security"], "VNC");
    assert!(
        row["credential"]
            .as_str()
            .unwrap()
            .starts_with("one-time code"),
        "{row}"
    );
    assert!(
        row["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{row}"
    );
    assert!(row["updates_sent"].as_u64().unwrap() >= 1, "{row}");
    let (ok, all) = cli(&db, &["sessions", "--json"]);
    assert!(ok);
    assert!(all.contains("auth failed"), "no auth-failure row: {all}");

    // Neither code appears anywhere in the database files.
    let bytes = db_bytes(&db);
    for c in [&code, &"WRONG234".to_string()] {
        assert!(
            !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
            "code {c} found in the database"
        );
    }

    // Crash: a viewer is connected when the server is killed with -9.
    let code2 = open_code(&db, "4713", &[]);
    let held = viewer(s.addr, code2, true)
        .await
        .expect("viewer for crash test");
    wait_for("the open session row", || {
        sessions_json(&db, "4713")
            .iter()
            .any(|r| r["end_reason"].is_null())
    })
    .await;
    let mut s = s;
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    drop(held);
    // The next ticketvnc to open the database closes it as a crash.
    let rows = sessions_json(&db, "4713");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["end_reason"], "crash", "{rows:?}");
    let (ok, out) = cli(&db, &["sessions", "verify"]);
    assert!(ok, "verify failed after crash: {out}");
    let integrity = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3 shell");
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
}
