//! The technician's commands, driven through the real binary: ticket
//! open/close/show/note, sessions (table, JSON, verify), kb search, and the
//! files' modes. On sqlite, or on PostgreSQL with
//! `TICKETVNC_TEST_DB=postgres` (common/testdb.rs; edits "with the sqlite3
//! shell" are then made by the database superuser).

#[path = "common/testdb.rs"]
mod testdb;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testdb::TestDb;
use ticketvnc::tickets::{
    ClipboardDirection, Consent, Direction, Event, Rights, SessionStart, SessionStats,
    CODE_ALPHABET, CODE_LEN,
};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
}

fn run(db: &Path, args: &[&str]) -> Output {
    let out = bin()
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .output()
        .expect("run ticketvnc");
    out
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "ticketvnc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn code_of(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("One-time code: "))
        .unwrap_or_else(|| panic!("no code in {stdout:?}"));
    line.trim().to_string()
}

fn db_in(dir: &tempfile::TempDir) -> TestDb {
    // A directory that does not exist yet: the journal creates it 0700.
    TestDb::new(dir.path().join("data").join("ticketvnc.db"))
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
#[cfg(unix)]
fn ticket_open_prints_a_fresh_code_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = ok(
        &db,
        &["ticket", "open", "4711", "--title", "Printer offline"],
    );
    assert!(
        out.contains("Ticket 4711 created: Printer offline"),
        "{out}"
    );
    let code = code_of(&out);
    assert_eq!(code.len(), CODE_LEN);
    assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");

    if !db.is_pg() {
        assert_eq!(mode(&db), 0o600, "database file mode");
        assert_eq!(
            mode(db.parent().unwrap()),
            0o700,
            "created data directory mode"
        );
        assert_eq!(mode(&db.with_extension("key")), 0o600, "key file mode");
    }

    // Opening the same ticket again: no new ticket, a different code.
    let again = ok(&db, &["ticket", "open", "4711", "--expires", "2h"]);
    assert!(
        again.contains("Ticket 4711 open: Printer offline"),
        "{again}"
    );
    assert_ne!(code_of(&again), code);

    // WAL mode, and the -wal file sqlite creates copies the database's mode.
    let j = db.open();
    j.add_note("4711", "checked the cable", None).unwrap();
    if !db.is_pg() {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        assert!(wal.exists(), "WAL mode leaves a -wal file while open");
        assert_eq!(mode(&wal), 0o600, "-wal file mode");
    }
    drop(j);

    let show = ok(&db, &["ticket", "show", "4711"]);
    assert!(show.contains("live one-time codes: 2"), "{show}");
    assert!(show.contains("checked the cable"), "{show}");
    assert!(!show.contains(&code), "show must not print codes");
}

#[test]
#[cfg(unix)]
fn an_existing_world_readable_database_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&db, &["sessions"]);
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn notes_need_an_existing_ticket_and_close_revokes_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = run(&db, &["ticket", "note", "999", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("999"));

    ok(&db, &["ticket", "open", "5"]);
    ok(&db, &["ticket", "note", "5", "several", "words", "joined"]);
    let closed = ok(
        &db,
        &["ticket", "close", "5", "--resolution", "replaced toner"],
    );
    assert!(closed.contains("Ticket 5 closed"), "{closed}");
    let show = ok(&db, &["ticket", "show", "5"]);
    assert!(show.contains("status:   closed"), "{show}");
    assert!(show.contains("live one-time codes: 0"), "{show}");
    assert!(show.contains("several words joined"), "{show}");
    assert!(show.contains("resolution: replaced toner"), "{show}");
    // Lifetimes outside 1m..7d are refused, not silently changed.
    for bad in ["30s", "8days"] {
        let out = run(&db, &["ticket", "open", "6", "--expires", bad]);
        assert!(!out.status.success(), "--expires {bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("a code is valid for"));
    }
    assert!(
        !run(&db, &["ticket", "show", "6"]).status.success(),
        "ticket created anyway"
    );
    // Reopening a closed ticket works and issues a new code.
    let re = ok(&db, &["ticket", "open", "5"]);
    code_of(&re);
    assert!(ok(&db, &["ticket", "show", "5"]).contains("status:   open"));
}

/// Two sessions recorded through the library, as `serve` will.
fn record_sessions(db: &Path) {
    let j = testdb::open(db);
    j.open_ticket("4711", Some("Printer offline")).unwrap();
    let a = j
        .session_started(&SessionStart {
            ticket: Some("4711".into()),
            peer: Some("192.0.2.7:51234".into()),
            direction: Direction::Inbound,
            security: "VNC".into(),
            credential: "one-time code #1".into(),
            technician: None,
            rights: Rights::FULL,
            consent: Consent::Accepted,
        })
        .unwrap();
    j.event(
        a,
        &Event::Resize {
            width: 1280,
            height: 800,
        },
    )
    .unwrap();
    j.event(
        a,
        &Event::Clipboard {
            direction: ClipboardDirection::FromViewer,
            bytes: 42,
            count: 1,
        },
    )
    .unwrap();
    j.session_ended(
        a,
        "viewer closed",
        SessionStats {
            bytes_in: 1000,
            bytes_out: 250_000,
            updates_sent: 77,
        },
    )
    .unwrap();
    j.auth_failed(
        &SessionStart {
            peer: Some("198.51.100.9:40000".into()),
            security: "VNC".into(),
            credential: "unknown".into(),
            rights: Rights::VIEW_ONLY,
            ..Default::default()
        },
        "wrong password or code",
    )
    .unwrap();
}

#[test]
fn sessions_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    record_sessions(&db);

    let table = ok(&db, &["sessions"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    // Newest first: the failed attempt, then the ticket's session.
    assert!(lines[1].contains("198.51.100.9:40000") && lines[1].contains("auth failed"));
    assert!(lines[2].contains("4711") && lines[2].contains("viewer closed"));
    assert!(lines[2].contains("view,keys,pointer,clipboard"));

    let json = ok(&db, &["sessions", "--ticket", "4711", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let s = &rows[0];
    assert_eq!(s["ticket"], "4711");
    assert_eq!(s["peer"], "192.0.2.7:51234");
    assert_eq!(s["security"], "VNC");
    assert_eq!(s["direction"], "inbound");
    assert_eq!(s["consent"], "accepted");
    assert_eq!(s["end_reason"], "viewer closed");
    assert_eq!(s["bytes_out"], 250_000);
    assert_eq!(s["updates_sent"], 77);

    let show = ok(&db, &["ticket", "show", "4711"]);
    assert!(show.contains("resize"), "{show}");
    assert!(show.contains("\"bytes\":42"), "{show}");
}

/// An edit outside ticketvnc (testdb::exec_sql: the file's owner with
/// sqlite, the superuser on PostgreSQL).
fn sqlite3(db: &Path, sql: &str) {
    testdb::exec_sql(db, sql);
}

fn verify_fails_naming(db: &Path, row: &str) {
    let out = run(db, &["sessions", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "verify passed a tampered journal");
    assert!(err.contains(row), "expected {row:?} in {err}");
}

fn seq_of(db: &Path, kind: &str) -> i64 {
    let j = testdb::open(db);
    j.events(None)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == kind)
        .unwrap()
        .seq
}

#[test]
fn verify_detects_an_event_edited_with_the_sqlite3_shell() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    record_sessions(&db);
    let out = ok(&db, &["sessions", "verify"]);
    assert!(out.starts_with("Journal OK:"), "{out}");
    let seq = seq_of(&db, "clipboard");
    sqlite3(
        &db,
        "UPDATE events SET details = replace(details, '42', '4200') WHERE kind = 'clipboard'",
    );
    verify_fails_naming(&db, &format!("events row seq={seq}"));
}

#[test]
fn verify_detects_an_edited_session_row_and_a_deleted_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = db_in(&dir);
    record_sessions(&first);
    // The sessions row is not chained itself, but must match its chained events.
    sqlite3(
        &first,
        "UPDATE sessions SET peer = '10.0.0.1:1' WHERE id = 1",
    );
    verify_fails_naming(&first, "sessions row id=1");

    // Three more journals (in the same cluster on PostgreSQL).
    let mut another = |n: &str| first.sibling(dir.path().join(n).join("ticketvnc.db"));
    let db = another("b");
    record_sessions(&db);
    let seq = seq_of(&db, "resize");
    sqlite3(&db, &format!("DELETE FROM events WHERE seq = {seq}"));
    verify_fails_naming(&db, &format!("events row seq={}", seq + 1));

    // Deleting a session row (the sqlite3 shell does not enforce foreign keys).
    let db = another("c");
    record_sessions(&db);
    testdb::exec_sql_past_fks(&db, "DELETE FROM sessions WHERE id = 2");
    verify_fails_naming(&db, "sessions row id=2: deleted");

    // Rewriting a note is caught too.
    let db = another("d");
    record_sessions(&db);
    ok(&db, &["ticket", "note", "4711", "restarted the spooler"]);
    sqlite3(&db, "UPDATE notes SET text = 'nothing happened'");
    verify_fails_naming(&db, "notes row id=1");
}

#[test]
fn kb_search_ranks_the_best_matching_tickets_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let open = |id: &str, title: &str| ok(&db, &["ticket", "open", id, "--title", title]);
    let note = |id: &str, text: &str| ok(&db, &["ticket", "note", id, text]);
    open("100", "Printer offline after update");
    note(
        "100",
        "Printer shows offline; restarted the spooler, printer back online",
    );
    ok(
        &db,
        &[
            "ticket",
            "close",
            "100",
            "--resolution",
            "restart print spooler service",
        ],
    );
    open("200", "Outlook asks for password");
    note("200", "mentioned the printer in passing");
    open("300", "VPN drops every hour");
    note("300", "network adapter offline when on battery");
    open("400", "New monitor");
    note("400", "nothing to do with the query");

    let out = ok(&db, &["kb", "search", "printer", "offline"]);
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(". Ticket "))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .collect();
    // 100 matches both words in title and notes; 200 and 300 one word in a note.
    assert_eq!(order.first(), Some(&"100"), "{out}");
    assert_eq!(order.len(), 3, "{out}");
    assert!(order.contains(&"200") && order.contains(&"300"), "{out}");
    assert!(!order.contains(&"400"), "{out}");
    // Highlighted snippet (not a terminal: ** markers).
    assert!(
        out.contains("**Printer**") || out.contains("**printer**"),
        "{out}"
    );

    // Stemming: "printers" finds "printer"; punctuation is harmless.
    let out = ok(&db, &["kb", "search", "printers\"*"]);
    assert!(out.contains("Ticket 100"), "{out}");
    // The resolution is indexed.
    let out = ok(&db, &["kb", "search", "spooler"]);
    assert!(out.lines().next().unwrap().contains("Ticket 100"), "{out}");
    let out = ok(&db, &["kb", "search", "zebra"]);
    assert!(out.contains("No matching tickets."), "{out}");
}

#[test]
fn a_database_from_a_newer_ticketvnc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["sessions"]);
    if db.is_pg() {
        sqlite3(&db, "UPDATE ticketvnc_schema SET version = 99");
    } else {
        sqlite3(&db, "PRAGMA user_version = 99");
    }
    let out = run(&db, &["sessions"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99"), "{err}");
}

/// `ticketvnc tech ...` with `stdin` fed to it.
fn run_stdin(db: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = bin()
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ticketvnc");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Everything stored (the files with WAL and shm; every row on PostgreSQL).
fn db_files(db: &TestDb) -> Vec<u8> {
    db.contents()
}

fn sqlite3_out(db: &Path, sql: &str) -> String {
    testdb::query_text(db, sql)
}

#[test]
fn technician_accounts_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let pw = "Zebra-Staple-4711";
    let out = run_stdin(&db, &["tech", "add", "alice"], format!("{pw}\n").as_bytes());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Technician alice added."));
    // From a file (first line only), no warning for a long password.
    let file = dir.path().join("bob.pw");
    std::fs::write(&file, "Another-Long-Secret\nignored second line\n").unwrap();
    let out = run(
        &db,
        &[
            "tech",
            "add",
            "bob",
            "--password-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");

    // A duplicate is refused, and the first password stays.
    let out = run_stdin(&db, &["tech", "add", "alice"], b"other-password\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    let j = db.open();
    assert!(j.verify_technician("alice", pw.as_bytes()));
    assert!(!j.verify_technician("alice", b"other-password"));
    assert!(j.verify_technician("bob", b"Another-Long-Secret"));
    drop(j);

    let table = ok(&db, &["tech", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("alice ") && lines[2].starts_with("bob "));
    let v: serde_json::Value = serde_json::from_str(&ok(&db, &["tech", "list", "--json"])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    assert!(ok(&db, &["tech", "remove", "alice"]).contains("Technician alice removed."));
    assert!(!run(&db, &["tech", "remove", "alice"]).status.success());
    let v: serde_json::Value = serde_json::from_str(&ok(&db, &["tech", "list", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Adding and removing are chained events; the chain still verifies.
    assert!(ok(&db, &["sessions", "verify"]).starts_with("Journal OK:"));
    let kinds = sqlite3_out(&db, "SELECT kind FROM events ORDER BY seq");
    assert_eq!(
        kinds.lines().collect::<Vec<_>>(),
        ["technician_added", "technician_added", "technician_removed"]
    );
}

#[test]
fn technician_passwords_never_come_from_argv_and_are_stored_as_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    // There is no way to give the password on the command line.
    for args in [
        &["tech", "add", "alice", "Zebra-Staple-4711"][..],
        &["tech", "add", "alice", "--password", "Zebra-Staple-4711"][..],
    ] {
        let out = run_stdin(&db, args, b"");
        assert!(!out.status.success(), "{args:?} accepted");
    }
    // An empty password (empty line or nothing at all) is refused.
    for input in [&b"\n"[..], b""] {
        let out = run_stdin(&db, &["tech", "add", "alice"], input);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("empty"),
            "{out:?}"
        );
    }
    // Bad names are refused before any password is read.
    assert!(!run_stdin(&db, &["tech", "add", "two words"], b"x\n")
        .status
        .success());
    // A short password is accepted with a warning.
    let out = run_stdin(&db, &["tech", "add", "shorty"], b"abc\n");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );

    let pw = "Zebra-Staple-4711";
    let out = run_stdin(
        &db,
        &["tech", "add", "alice"],
        format!("{pw}\r\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let hash = sqlite3_out(&db, "SELECT hash FROM technicians WHERE name = 'alice'");
    let hash = hash.trim();
    // PHC string: $argon2id$v=19$m=...,t=...,p=...$salt$hash
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 6, "{hash}");
    assert_eq!((parts[1], parts[2]), ("argon2id", "v=19"), "{hash}");
    assert!(parts[3].starts_with("m="), "{hash}");
    assert!(parts[4].len() >= 22, "salt of at least 16 bytes: {hash}");
    // The password (or the CR of the line end) is nowhere in the files, also
    // while a process holds the database open (the WAL is not checkpointed).
    let j = db.open();
    assert!(j.verify_technician("alice", pw.as_bytes()));
    let bytes = db_files(&db);
    assert!(!bytes.is_empty());
    assert!(
        !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
        "the password is in the database files"
    );
    drop(j);
    assert!(!db_files(&db).windows(pw.len()).any(|w| w == pw.as_bytes()));
}

#[test]
fn verify_detects_a_technician_inserted_with_the_sqlite3_shell() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let out = run_stdin(&db, &["tech", "add", "alice"], b"Zebra-Staple-4711\n");
    assert!(out.status.success());
    // Somebody with write access gives themselves a login (alice's hash,
    // whose password they know, under another name).
    sqlite3(
        &db,
        "INSERT INTO technicians (name, hash, created_at) SELECT 'mallory', hash, created_at FROM technicians",
    );
    verify_fails_naming(&db, "technicians row id=2");
    sqlite3(&db, "DELETE FROM technicians WHERE name = 'mallory'");
    assert!(ok(&db, &["sessions", "verify"]).starts_with("Journal OK:"));
    // Swapping alice's hash is caught too, and so is deleting her row.
    sqlite3(&db, "UPDATE technicians SET hash = hash || 'x'");
    verify_fails_naming(&db, "technicians row id=1");
    sqlite3(&db, "DELETE FROM technicians");
    verify_fails_naming(&db, "account \"alice\" deleted");
}
