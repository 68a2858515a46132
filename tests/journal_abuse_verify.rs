//! Issue 8: `sessions verify` trusts nothing. Through the real binary and
//! the sqlite3 shell: a missing or empty journal is not "OK", a read-only
//! archive copy is checked without writing beside it, and tickets and
//! one-time codes edited behind ticketvnc's back are reported (and such a
//! code is refused at login, by a real viewer over a real socket).

mod binary;
#[path = "common/testdb.rs"]
mod testdb;

use binary::{cli, open_code, serve, viewer, BIN};
use std::path::Path;
use std::process::{Command, Output};

fn run(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(format!("PRAGMA busy_timeout=5000; {sql}"))
        .output()
        .expect("sqlite3 shell");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn verify_of_a_missing_or_empty_file_says_no_journal_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.db");
    let o = run(&missing, &["sessions", "verify"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains("no journal here"), "{}", stderr(&o));
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let o = run(&empty, &["sessions", "verify"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains("no journal here"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!(listing(dir.path()), ["empty.db"]);
}

#[test]
#[cfg(unix)]
fn verify_checks_a_read_only_archive_copy_without_writing_beside_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    open_code(&db, "4711", &["--title", "Printer offline"]);
    assert!(cli(&db, &["ticket", "note", "4711", "restarted the spooler"]).0);
    assert!(cli(&db, &["ticket", "close", "4711"]).0);
    // Fold the write-ahead log in, then archive the file alone.
    sqlite3(&db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let copy = archive.join("ticketvnc-2026-11.db");
    std::fs::copy(&db, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o500)).unwrap();

    // Modes do not stop root: as root, the check runs as `nobody`, who
    // owns the archive (0500) and the copy (0400).
    let as_root = rustix::process::getuid().is_root();
    if as_root {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::chown(&archive, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
    }
    let mut verify = if as_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let o = verify
        .arg("--db")
        .arg(&copy)
        .args(["sessions", "verify"])
        .env("TICKETVNC_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert!(out.starts_with("Journal OK"), "{out}");
    // Nothing written: no -wal, -shm, .live or key file, the bytes unchanged.
    assert_eq!(listing(&archive), ["ticketvnc-2026-11.db"]);
    assert_eq!(std::fs::read(&copy).unwrap(), before);

    // An edit of the copy is still found (the chain, not the mode, decides).
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    sqlite3(
        &copy,
        "UPDATE tickets SET title = 'nothing happened' WHERE id = '4711';",
    );
    sqlite3(&copy, "PRAGMA wal_checkpoint(TRUNCATE);");
    let o = run(&copy, &["sessions", "verify"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tickets row id="), "{}", stderr(&o));
}

fn verify_names(db: &Path, what: &str) {
    let o = run(db, &["sessions", "verify"]);
    assert!(!o.status.success(), "verify passed, expected {what}");
    assert!(stderr(&o).contains(what), "{}", stderr(&o));
}

#[test]
fn tickets_reopened_or_retitled_with_the_sqlite3_shell_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // sqlite, or PostgreSQL with TICKETVNC_TEST_DB=postgres (common/testdb.rs).
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let sqlite3 = |db: &Path, sql: &str| testdb::exec_sql(db, sql);
    open_code(&db, "4711", &["--title", "Printer offline"]);
    assert!(cli(&db, &["ticket", "close", "4711", "--resolution", "spooler"]).0);
    assert!(run(&db, &["sessions", "verify"]).status.success());

    sqlite3(
        &db,
        "UPDATE tickets SET status = 'open', closed_at = NULL WHERE id = '4711';",
    );
    verify_names(&db, "tickets row id=");
    sqlite3(
        &db,
        "UPDATE tickets SET status = 'closed', closed_at = (SELECT at FROM events WHERE kind = 'ticket_closed') WHERE id = '4711';",
    );
    assert!(run(&db, &["sessions", "verify"]).status.success());
    sqlite3(
        &db,
        "UPDATE tickets SET resolution = 'blame the user' WHERE id = '4711';",
    );
    verify_names(&db, "tickets row id=");
    sqlite3(
        &db,
        "UPDATE tickets SET resolution = 'spooler' WHERE id = '4711';",
    );
    sqlite3(
        &db,
        "INSERT INTO tickets (id, title, created_at) VALUES ('9999', 'ghost', 0);",
    );
    verify_names(&db, "has no ticket_opened event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_set_back_to_unused_is_refused_at_login_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let sqlite3 = |db: &Path, sql: &str| testdb::exec_sql(db, sql);
    let s = serve(&db, 0, &[]);
    let code = open_code(&db, "4711", &[]);
    viewer(s.addr, code.clone(), false)
        .await
        .expect("first use of the code");
    assert!(run(&db, &["sessions", "verify"]).status.success());

    // Someone with write access to the file makes the code unused again.
    sqlite3(
        &db,
        "UPDATE codes SET used_at = NULL WHERE ticket = '4711';",
    );
    let changed = testdb::query_text(
        &db,
        "SELECT count(*) FROM codes WHERE ticket = '4711' AND used_at IS NULL",
    );
    assert_eq!(changed.trim(), "1");
    assert!(
        viewer(s.addr, code.clone(), false).await.is_err(),
        "a code reset with the sqlite3 shell let a viewer in"
    );
    verify_names(&db, "codes row id=");
    verify_names(&db, "marked unused but a code_used event says it was used");

    // Likewise a revoked code (its ticket was closed) made live again.
    let revoked = open_code(&db, "4712", &[]);
    assert!(cli(&db, &["ticket", "close", "4712"]).0);
    sqlite3(
        &db,
        "UPDATE codes SET revoked_at = NULL WHERE ticket = '4712';
         UPDATE tickets SET status = 'open', closed_at = NULL WHERE id = '4712';",
    );
    assert!(
        viewer(s.addr, revoked, false).await.is_err(),
        "a revoked code made live with the sqlite3 shell let a viewer in"
    );
    // A code that was never touched still works.
    let fresh = open_code(&db, "4713", &[]);
    sqlite3(
        &db,
        "UPDATE codes SET used_at = used_at WHERE ticket = '4713';",
    );
    viewer(s.addr, fresh, false)
        .await
        .expect("an untouched code works");
}

#[test]
#[cfg(unix)]
fn a_key_file_readable_by_others_is_tightened_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    open_code(&db, "4711", &[]);
    let key = dir.path().join("ticketvnc.key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&db, &["ticket", "open", "4711"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&key), 0o600);
    assert!(stderr(&o).contains("tightening"), "{}", stderr(&o));
}

fn run_keyed(db: &Path, key: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .arg("--journal-key-file")
        .arg(key)
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .output()
        .unwrap()
}

/// (seq, at, session, ticket, kind, details) of an events row.
type Row = (i64, i64, Option<i64>, Option<String>, String, String);

/// Rewrites the chain from `from` on with plain SHA-256, as someone
/// without the key would after editing a row.
fn rechain_plain(db: &Path, from: i64) {
    use sha2::{Digest, Sha256};
    let c = rusqlite::Connection::open(db).unwrap();
    let mut prev: String = c
        .query_row(
            "SELECT COALESCE((SELECT hash FROM events WHERE seq = ?1 - 1), ?2)",
            rusqlite::params![from, "0".repeat(64)],
            |r| r.get(0),
        )
        .unwrap();
    let rows: Vec<Row> = c
        .prepare("SELECT seq, at, session, ticket, kind, details FROM events WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([from], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (seq, at, session, ticket, kind, details) in rows {
        let canonical = serde_json::json!([seq, at, session, ticket, kind, details]).to_string();
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(canonical.as_bytes());
        let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        c.execute(
            "UPDATE events SET hash = ?2 WHERE seq = ?1",
            rusqlite::params![seq, hash],
        )
        .unwrap();
        prev = hash;
    }
}

#[test]
#[cfg(unix)]
fn a_keyed_chain_cannot_be_rewritten_without_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let key = dir.path().join("journal.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();

    // A key file others can read is refused, not used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run_keyed(&db, &key, &["ticket", "open", "4711"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An existing plain journal: its rows stay SHA-256, new ones are keyed.
    open_code(&db, "4711", &["--title", "Printer offline"]);
    let o = run_keyed(&db, &key, &["ticket", "note", "4711", "spooler restarted"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_keyed(&db, &key, &["sessions", "verify"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert!(out.contains("HMAC-keyed from seq 3"), "{out}");
    assert!(out.contains("chain head hmac:"), "{out}");

    // Without the key: no writing, and verify does not say OK.
    let o = run(&db, &["ticket", "note", "4711", "unkeyed"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--journal-key-file"), "{}", stderr(&o));
    verify_names(&db, "pass --journal-key-file to check it");
    // Another key is refused.
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "a5".repeat(32))).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run_keyed(&db, &other, &["ticket", "note", "4711", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));

    // Someone without the key edits the note's event and rewrites the
    // chain from there with plain SHA-256: caught with the key.
    let note = sqlite3(&db, "SELECT seq FROM events WHERE kind = 'note_added';");
    let note: i64 = note.lines().last().unwrap().trim().parse().unwrap();
    sqlite3(
        &db,
        &format!("UPDATE events SET at = at + 1 WHERE seq = {note};"),
    );
    rechain_plain(&db, note);
    let o = run_keyed(&db, &key, &["sessions", "verify"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("plain SHA-256 row after keyed rows"),
        "{}",
        stderr(&o)
    );
    // Rewriting every keyed row is caught too.
    rechain_plain(&db, 1);
    let o = run_keyed(&db, &key, &["sessions", "verify"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no row is keyed"), "{}", stderr(&o));
    // Without a key the same rewrite looks whole: that is what the key adds.
    assert!(run(&db, &["sessions", "verify"]).status.success());
}
