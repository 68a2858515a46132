//! The journal through the real binary: `ticketvnc serve` with one-time
//! codes from `ticketvnc ticket open`, a real viewer (vnc-rs), session rows
//! read back with `ticketvnc sessions --json`, and a kill -9 of the server.

mod binary;
#[path = "common/testdb.rs"]
mod testdb;

use binary::{cli, open_code, serve, viewer};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
    // sqlite, or PostgreSQL with TICKETVNC_TEST_DB=postgres (common/testdb.rs).
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let s = serve(&db, 0, &[]);
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
    // An expired code never works: its minute is moved into the past with
    // an edit outside ticketvnc (the sqlite3 shell, the database
    // superuser) rather than waited for.
    let short = open_code(&db, "4712", &["--expires", "1m"]);
    testdb::exec_sql(
        &db,
        "UPDATE codes SET expires_at = created_at - 1 WHERE ticket = '4712'",
    );
    let aged = testdb::query_text(
        &db,
        "SELECT count(*) FROM codes WHERE ticket = '4712' AND expires_at < created_at",
    );
    assert_eq!(aged.trim(), "1");
    assert!(
        viewer(s.addr, short, false).await.is_err(),
        "expired code worked"
    );
    // A closed ticket's codes are revoked.
    let revoked = open_code(&db, "4714", &[]);
    let (ok, _) = cli(&db, &["ticket", "close", "4714"]);
    assert!(ok);
    assert!(
        viewer(s.addr, revoked, false).await.is_err(),
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

    // Neither code appears anywhere in the database files (in no row).
    let bytes = db.contents();
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
    // The next ticketvnc to open the database closes it as a crash. (On
    // PostgreSQL once the dead server's backend has noticed the closed
    // connection and dropped its owner lock.)
    if db.is_pg() {
        wait_for("the crashed session to be closed", || {
            sessions_json(&db, "4713")
                .iter()
                .all(|r| !r["end_reason"].is_null())
        })
        .await;
    }
    let rows = sessions_json(&db, "4713");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["end_reason"], "crash", "{rows:?}");
    // The crash left the chain whole; the only thing verify reports is the
    // expiry moved with the sqlite3 shell above (an edit it must see).
    let out = Command::new(binary::BIN)
        .arg("--db")
        .arg(&*db)
        .args(["sessions", "verify"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("codes row id="), "{err}");
    assert!(err.contains("\"4712\""), "{err}");
    if !db.is_pg() {
        let integrity = Command::new("sqlite3")
            .arg(&*db)
            .arg("PRAGMA integrity_check;")
            .output()
            .expect("sqlite3 shell");
        assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
    }
}

/// Issue 10, item 6: the log names a session by the journal's id, the one
/// `ticketvnc sessions` shows. Two connections that never become sessions
/// come first, so the connection counter (3) and the journal id (1) differ.
/// Before, the log said `session=3` for the journal's session 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_sessions_by_their_journal_id() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let code = open_code(&db, "4800", &[]);
    let log = dir.path().join("serve.log");
    let mut child = Command::new(binary::BIN)
        .arg("--db")
        .arg(&*db)
        .args(["serve", "--listen", "127.0.0.1:0", "--fps", "0"])
        .args(["--source", "test-pattern", "--size", "64x48"])
        .env("TICKETVNC_LOG", "info")
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", binary::config_dir(&db))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let addr: std::net::SocketAddr = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            Some(
                l.strip_prefix("ticketvnc listening on ")?
                    .trim()
                    .parse()
                    .unwrap(),
            )
        })
        .expect("listening");
    let s = binary::Serve { child, addr };
    for _ in 0..2 {
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    viewer(addr, code, false).await.expect("viewer");
    wait_for("the session row to be closed", || {
        sessions_json(&db, "4800")
            .iter()
            .any(|r| r["end_reason"] == "viewer closed")
    })
    .await;
    let id = sessions_json(&db, "4800")[0]["id"].as_i64().unwrap();
    // NO_COLOR: plain `name=value` fields.
    let text = || std::fs::read_to_string(&log).unwrap();
    // The empty connections end too, named by their connection number
    // only (`conn=`); the session's end is the one with a `session=`.
    let ended = |t: &str| {
        t.lines()
            .any(|l| l.contains("session ended") && l.contains(" session="))
    };
    wait_for("the session's end in the log", || ended(&text())).await;
    let text = text();
    let field = |line: &str, name: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    for what in ["viewer connected", "session ended"] {
        let line = text
            .lines()
            .find(|l| l.contains(what) && l.contains(" session="))
            .unwrap_or_else(|| panic!("no {what:?} line:\n{text}"));
        assert_eq!(
            field(line, "session").as_deref(),
            Some(id.to_string().as_str()),
            "{what}: journal id {id}, log line: {line}"
        );
    }
    drop(s);
}
