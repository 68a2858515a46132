//! The journal as the server uses it: crash recovery after a real kill -9
//! of a process holding open sessions, one-time codes checked through the
//! `CodeAuthenticator` with real DES responses, and the code never reaching
//! the database file. On sqlite, or on PostgreSQL with
//! `TICKETVNC_TEST_DB=postgres` (common/testdb.rs).

#[path = "common/testdb.rs"]
mod testdb;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use testdb::TestDb;
use ticketvnc::security::{vnc_auth_response, Authenticator, VncPassword};
use ticketvnc::tickets::{
    CodeAuthenticator, DbTarget, Direction, Event, Journal, Rights, SessionId, SessionStart,
    CODE_ALPHABET,
};

/// Opens the journal again, as another process would (and as the server
/// does after a crash). On PostgreSQL the owner lock of a killed process
/// is released when its backend notices the closed connection: open until
/// `done` says recovery happened (bounded, generous).
fn reopen_until(db: &TestDb, done: impl Fn(&Journal) -> bool) -> Journal {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = db.open();
        if done(&j) || !db.is_pg() || std::time::Instant::now() > deadline {
            return j;
        }
        drop(j);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(ticket: &str, peer: &str) -> SessionStart {
    SessionStart {
        ticket: Some(ticket.into()),
        peer: Some(peer.into()),
        direction: Direction::Inbound,
        security: "VNC".into(),
        credential: "static password".into(),
        rights: Rights::FULL,
        ..Default::default()
    }
}

const CHILD_ENV: &str = "TICKETVNC_TEST_CRASH_CHILD_DB";

/// Not a test: the process the crash test kills. It opens sessions, commits
/// events, reports them and then waits to be killed.
#[test]
#[ignore = "helper process for crash_recovery_after_kill_9"]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let target = DbTarget::parse(db.to_str().unwrap()).unwrap();
    let j = Journal::open_target(&target, None).unwrap();
    let a = j.session_started(&start("4711", "192.0.2.1:1000")).unwrap();
    let b = j.session_started(&start("4712", "192.0.2.2:2000")).unwrap();
    for w in 0..20u16 {
        j.event(
            a,
            &Event::Resize {
                width: 640 + w,
                height: 480,
            },
        )
        .unwrap();
    }
    let seqs = j.events(None).unwrap().len();
    println!("READY {} {} {}", a.0, b.0, seqs);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn crash_recovery_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("ticketvnc.db"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &*db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let l = lines.next().expect("child exited before READY").unwrap();
        if let Some(r) = l.strip_prefix("READY ") {
            break r.to_string();
        }
    };
    let nums: Vec<i64> = ready.split(' ').map(|n| n.parse().unwrap()).collect();
    let (a, b, committed) = (SessionId(nums[0]), SessionId(nums[1]), nums[2] as usize);

    // Another process (here: this one) opening the journal while the
    // owner lives must not close its sessions.
    let j = db.open();
    let open: Vec<_> = j
        .sessions(None)
        .unwrap()
        .into_iter()
        .filter(|s| s.ended_at.is_none())
        .map(|s| s.id)
        .collect();
    assert_eq!(
        open.len(),
        2,
        "live sessions were closed by a second process"
    );
    drop(j);

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let j = reopen_until(&db, |j| {
        j.sessions(None)
            .unwrap()
            .iter()
            .all(|s| s.ended_at.is_some())
    });
    for id in [a, b] {
        let s = j
            .sessions(None)
            .unwrap()
            .into_iter()
            .find(|s| s.id == id)
            .unwrap();
        assert_eq!(s.end_reason.as_deref(), Some("crash"), "session {id}");
        assert!(s.ended_at.is_some());
        let evs = j.events(Some(id)).unwrap();
        assert_eq!(evs.last().unwrap().kind, "session_end");
        assert_eq!(evs.last().unwrap().details["end_reason"], "crash");
    }
    // Every event the child committed is there, plus one session_end each.
    let events = j.events(None).unwrap();
    assert_eq!(events.len(), committed + 2);
    let resizes = events.iter().filter(|e| e.kind == "resize").count();
    assert_eq!(resizes, 20);
    let report = j.verify().unwrap();
    assert!(report.broken.is_none(), "{:?}", report.broken);
    drop(j);

    if !db.is_pg() {
        let conn = rusqlite::Connection::open(&*db).unwrap();
        let ic: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ic, "ok");
    }

    // Reopening again changes nothing (recovery is idempotent) and the
    // dead process's lock file is gone (sqlite; PostgreSQL's locks die
    // with the connection).
    let j = db.open();
    assert_eq!(j.events(None).unwrap().len(), committed + 2);
    let live: PathBuf = dir.path().join("ticketvnc.db.live");
    let leftovers = std::fs::read_dir(&live).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "lock files left in {}", live.display());
}

#[test]
fn sessions_of_a_dropped_journal_in_this_process_are_recovered() {
    // The same as a crash from the journal's point of view: the owner lock
    // is released without session_ended.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("j.db"));
    let j = db.open();
    let id = j.session_started(&start("1", "127.0.0.1:5")).unwrap();
    // A second journal in the same process sees the lock held.
    assert!(db.open().sessions(None).unwrap()[0].ended_at.is_none());
    drop(j);
    let j = reopen_until(&db, |j| j.sessions(None).unwrap()[0].ended_at.is_some());
    let s = &j.sessions(None).unwrap()[0];
    assert_eq!(s.id, id);
    assert_eq!(s.end_reason.as_deref(), Some("crash"));
}

fn challenge() -> [u8; 16] {
    let mut c = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut c);
    c
}

fn respond(code: &str, ch: &[u8; 16]) -> [u8; 16] {
    vnc_auth_response(&VncPassword::new(code.as_bytes()), ch)
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn one_time_code_works_once_and_never_reaches_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    j.open_ticket("4711", Some("Printer offline")).unwrap();
    let issued = j.issue_code("4711", Duration::from_secs(1800)).unwrap();
    let code = issued.code.clone();
    assert!(
        !format!("{issued:?}").contains(&code),
        "Debug shows the code"
    );
    let auth = CodeAuthenticator::new(j.clone(), None, None).unwrap();

    // A wrong code (a valid-looking one) fails.
    let wrong: String = code
        .bytes()
        .map(|b| {
            let i = CODE_ALPHABET.iter().position(|&a| a == b).unwrap();
            CODE_ALPHABET[(i + 1) % 32] as char
        })
        .collect();
    let ch = challenge();
    assert!(auth.verify_vnc(&ch, &respond(&wrong, &ch)).is_none());
    j.auth_failed(
        &SessionStart {
            peer: Some("127.0.0.1:4000".into()),
            security: "VNC".into(),
            credential: "unknown".into(),
            ..Default::default()
        },
        "wrong password or code",
    )
    .unwrap();

    // The right one works once, bound to the ticket.
    let ch = challenge();
    let p = auth
        .verify_vnc(&ch, &respond(&code, &ch))
        .expect("the fresh code is accepted");
    assert_eq!(p.ticket.as_deref(), Some("4711"));
    assert!(
        p.credential.starts_with("one-time code"),
        "{}",
        p.credential
    );
    let ch = challenge();
    assert!(
        auth.verify_vnc(&ch, &respond(&code, &ch)).is_none(),
        "a used code must fail"
    );

    // Typed in lower case it works too (once).
    let lower = j.issue_code("4711", Duration::from_secs(600)).unwrap();
    let ch = challenge();
    assert!(auth
        .verify_vnc(&ch, &respond(&lower.code.to_lowercase(), &ch))
        .is_some());

    // An expired code fails. (Expiry set in the past directly: the CLI's
    // shortest lifetime is one minute.)
    let old = j.issue_code("4711", Duration::from_secs(60)).unwrap();
    db.exec(
        "UPDATE codes SET expires_at = expires_at - 3600000 WHERE id = $1",
        old.id,
    );
    let ch = challenge();
    assert!(auth.verify_vnc(&ch, &respond(&old.code, &ch)).is_none());

    // A closed ticket's codes stop working.
    let live = j.issue_code("4711", Duration::from_secs(600)).unwrap();
    j.close_ticket("4711", None).unwrap();
    let ch = challenge();
    assert!(auth.verify_vnc(&ch, &respond(&live.code, &ch)).is_none());

    // None of the codes is anywhere in the database, its WAL or shm
    // (upper or lower case), while the journal is open (WAL not yet
    // checkpointed)... (PostgreSQL: in no row of any table.)
    if !db.is_pg() {
        assert!(PathBuf::from(format!("{}-wal", db.display())).exists());
    }
    let all = [&code, &lower.code, &old.code, &live.code, &wrong];
    let check = || {
        let stored = db.contents();
        assert!(stored.len() > 1000, "{} bytes", stored.len());
        for c in all {
            assert!(!contains(&stored, c.as_bytes()), "code in the journal");
            assert!(!contains(&stored, c.to_lowercase().as_bytes()));
        }
    };
    check();
    drop(auth);
    drop(j);
    // ...and after the final checkpoint.
    check();
    // The journal recorded the failure and the use, without the code.
    let j = db.open();
    let kinds: Vec<String> = j
        .events(None)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"auth_failure".to_string()));
    assert_eq!(kinds.iter().filter(|k| *k == "code_used").count(), 2);
    // The expiry moved into the past above is an edit outside ticketvnc:
    // verify names that code's row (and nothing before it).
    let broken = j.verify().unwrap().broken.expect("the edited expiry");
    assert_eq!((broken.table, broken.row), ("codes", old.id), "{broken}");
}

#[test]
fn two_viewers_racing_with_one_code_only_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    j.open_ticket("7", None).unwrap();
    for round in 0..5 {
        let code = j.issue_code("7", Duration::from_secs(600)).unwrap().code;
        let barrier = Arc::new(Barrier::new(2));
        let wins: usize = (0..2)
            .map(|_| {
                let (target, code, barrier) = (db.target(), code.clone(), barrier.clone());
                // Separate connections, like two serve processes.
                std::thread::spawn(move || {
                    let j = Journal::open_target(&target, None).unwrap();
                    let auth = CodeAuthenticator::new(Arc::new(j), None, None).unwrap();
                    let ch = challenge();
                    let r = respond(&code, &ch);
                    barrier.wait();
                    auth.verify_vnc(&ch, &r).is_some() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1, "round {round}");
    }
}

#[test]
fn static_password_belongs_to_the_serve_ticket_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    let auth = CodeAuthenticator::new(
        j.clone(),
        Some(VncPassword::new(b"s3cret")),
        Some("99".into()),
    )
    .unwrap();
    for _ in 0..2 {
        let ch = challenge();
        let p = auth.verify_vnc(&ch, &respond("s3cret", &ch)).unwrap();
        assert_eq!(p.ticket.as_deref(), Some("99"));
        assert_eq!(p.credential, "static password");
    }
    let ch = challenge();
    assert!(auth.verify_vnc(&ch, &respond("s3creT", &ch)).is_none());
    // A session under a ticket nobody opened creates the ticket.
    let id = j.session_started(&start("99", "127.0.0.1:9")).unwrap();
    j.session_ended(id, "viewer closed", Default::default())
        .unwrap();
    assert!(j.ticket("99").unwrap().is_some());
    assert!(j.verify().unwrap().broken.is_none());
}

/// A technician account logs in through the authenticator (VeNCrypt Plain's
/// check), the session is recorded through the server's observer, and the
/// technician's name reaches `ticketvnc sessions --json` (the real binary).
#[test]
fn a_technician_login_is_recorded_under_the_serve_ticket() {
    use ticketvnc::session::{EndReason, SessionInfo, SessionObserver};
    use ticketvnc::tickets::JournalObserver;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    j.add_technician("alice", b"Zebra-Staple-4711").unwrap();
    let auth = CodeAuthenticator::new(j.clone(), Some(VncPassword::new(b"pw")), Some("77".into()))
        .unwrap();
    assert!(auth.verify_plain("alice", b"wrong").is_none());
    assert!(auth.verify_plain("nobody", b"Zebra-Staple-4711").is_none());
    let p = auth.verify_plain("alice", b"Zebra-Staple-4711").unwrap();
    assert_eq!(p.ticket.as_deref(), Some("77"));
    assert_eq!(p.credential, "technician account");
    assert_eq!(p.technician.as_deref(), Some("alice"));

    let obs = JournalObserver::new(j.clone(), None);
    let mut info = SessionInfo {
        peer: Some("192.0.2.7:5000".parse().unwrap()),
        security: Some("VeNCrypt X509Plain"),
        principal: Some(p),
        rights: Rights::FULL,
        ..Default::default()
    };
    info.record = Some(obs.session_starting(&info).unwrap());
    obs.session_ended(&info, &EndReason::ViewerClosed);
    obs.shutdown(Duration::from_secs(5));
    drop(j);

    let out = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(&*db)
        .args(["sessions", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &v[0];
    assert_eq!(row["technician"], "alice", "{row}");
    assert_eq!(row["credential"], "technician account", "{row}");
    assert_eq!(row["ticket"], "77", "{row}");
    assert_eq!(row["security"], "VeNCrypt X509Plain", "{row}");
    assert_eq!(row["end_reason"], "viewer closed", "{row}");
}
