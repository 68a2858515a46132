//! The journal writer never holds up the network: a real `ticketvnc serve`
//! keeps sending a viewer updates while the sqlite3 shell holds the
//! database's write lock, and the viewer's clipboard events arrive once the
//! lock is gone. Clipboard floods become a handful of rows; consent, rights
//! changes and server notices reach the journal and the hooks. On sqlite,
//! or on PostgreSQL with `TICKETVNC_TEST_DB=postgres` (common/testdb.rs;
//! there the lock is the chain's advisory lock held by another session).

mod binary;
#[path = "common/testdb.rs"]
mod testdb;

use binary::{open_code, serve};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketvnc::security::{Consent, Principal, Rights};
use ticketvnc::session::{EndReason, ServerNotice, SessionEvent, SessionInfo, SessionObserver};
use ticketvnc::tickets::hooks::{HookConfig, HookDispatcher};
use ticketvnc::tickets::{EventRow, Journal, JournalObserver};
use vnc::{PixelFormat, VncConnector, VncEncoding, VncEvent, X11Event};

fn clipboard_rows(events: &[EventRow]) -> Vec<&EventRow> {
    events.iter().filter(|e| e.kind == "clipboard").collect()
}

fn sums(rows: &[&EventRow]) -> (u64, u64) {
    rows.iter().fold((0, 0), |(n, b), e| {
        (
            n + e.details["count"].as_u64().unwrap(),
            b + e.details["bytes"].as_u64().unwrap(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_does_not_stall_a_running_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let s = serve(&db, 10, &[]);
    let code = open_code(&db, "4711", &[]);
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let client = VncConnector::new(tcp)
        .set_auth_method(async move { Ok(code) })
        .add_encoding(VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(PixelFormat::bgra())
        .build()
        .unwrap()
        .try_start()
        .await
        .unwrap()
        .finish()
        .unwrap();
    // One update first: the session is running and journaled.
    loop {
        client.input(X11Event::Refresh).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(30), client.recv_event())
            .await
            .expect("no first update")
            .unwrap();
        if let VncEvent::RawImage(..) = ev {
            break;
        }
    }

    // Another process takes the write lock and keeps it until told.
    let lock = db.hold_write_lock();

    // For 3 s: clipboard text and update requests; updates keep coming.
    let locked_at = Instant::now();
    let mut last_update = Instant::now();
    let mut max_gap = Duration::ZERO;
    let (mut sent, mut updates) = (0u64, 0u64);
    while locked_at.elapsed() < Duration::from_secs(3) {
        client
            .input(X11Event::CopyText("x".repeat(100)))
            .await
            .unwrap();
        sent += 1;
        client.input(X11Event::Refresh).await.unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), client.recv_event())
                .await
                .expect("updates stopped while the database was locked")
                .unwrap();
            if let VncEvent::RawImage(..) = ev {
                break;
            }
        }
        updates += 1;
        max_gap = max_gap.max(last_update.elapsed());
        last_update = Instant::now();
    }
    // Nothing of it could be written yet.
    assert_eq!(
        db.query_i64("SELECT count(*) FROM events WHERE kind = 'clipboard'"),
        0
    );
    lock.release();
    println!(
        "{updates} updates and {sent} clipboard messages while locked; longest gap {max_gap:?}"
    );
    assert!(
        max_gap <= Duration::from_secs(1),
        "the session stalled for {max_gap:?} while the database was locked"
    );

    // After the lock: the clipboard sums arrive, adding up to what was sent.
    let j = db.open();
    let mut got = (0, 0);
    for _ in 0..100 {
        let events = j.events(None).unwrap();
        got = sums(&clipboard_rows(&events));
        if got.0 >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, (sent, sent * 100));
    let events = j.events(None).unwrap();
    let rows = clipboard_rows(&events);
    assert!(
        rows.len() as u64 <= 2 + locked_at.elapsed().as_secs(),
        "{} rows",
        rows.len()
    );
    assert!(rows.iter().all(|e| e.details["direction"] == "from viewer"));
    let _ = client.close().await;
    drop(s);
    assert!(j.verify().unwrap().broken.is_none());
}

fn observer_with_hook(
    dir: &std::path::Path,
    db: &testdb::TestDb,
) -> (Arc<Journal>, JournalObserver, std::path::PathBuf) {
    let j = Arc::new(db.open());
    let out = dir.join("hooks.jsonl");
    let hooks = HookDispatcher::start(
        HookConfig {
            hook_cmd: Some(format!(
                "cat >> '{}'; echo >> '{}'",
                out.display(),
                out.display()
            )),
            ..Default::default()
        },
        Some(j.clone()),
    )
    .unwrap();
    (j.clone(), JournalObserver::new(j, Some(hooks)), out)
}

fn session(obs: &JournalObserver) -> SessionInfo {
    let mut info = SessionInfo {
        peer: Some("192.0.2.7:5000".parse().unwrap()),
        security: Some("vnc-auth"),
        principal: Some(Principal {
            ticket: Some("4711".into()),
            credential: "one-time code #1".into(),
            ..Default::default()
        }),
        rights: Rights::FULL,
        consent: Consent::Accepted,
        ..Default::default()
    };
    info.record = Some(obs.session_starting(&info).unwrap());
    info
}

#[test]
fn a_clipboard_flood_becomes_a_handful_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    let obs = JournalObserver::new(j.clone(), None);
    let info = session(&obs);
    // 10,000 clipboard messages spread over about 2 s (5 per ms).
    let began = Instant::now();
    let mut total = 0u64;
    for i in 0..10_000u64 {
        let bytes = (i % 300) as usize;
        total += bytes as u64;
        obs.session_event(
            &info,
            &SessionEvent::Clipboard {
                to_viewer: false,
                bytes,
            },
        );
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let elapsed = began.elapsed();
    obs.session_ended(&info, &EndReason::ViewerClosed);
    obs.flush();
    let events = j.events(None).unwrap();
    let rows = clipboard_rows(&events);
    println!("{} rows for 10,000 messages in {elapsed:?}", rows.len());
    // One row per started second at most (plus the one cut by the end).
    assert!(
        rows.len() as u64 <= elapsed.as_secs() + 2,
        "{} rows in {elapsed:?}",
        rows.len()
    );
    assert_eq!(sums(&rows), (10_000, total));
    // The sums are written before the session's end.
    assert_eq!(events.last().unwrap().kind, "session_end");
    assert!(j.verify().unwrap().broken.is_none());
}

#[test]
fn consent_rights_notices_and_failures_reach_the_journal_and_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let (j, obs, hook_out) = observer_with_hook(dir.path(), &db);
    let info = session(&obs);
    obs.session_event(
        &info,
        &SessionEvent::Consent {
            consent: Consent::Accepted,
            rights: Rights::VIEW_ONLY,
        },
    );
    obs.session_event(
        &info,
        &SessionEvent::RightsChange {
            rights: Rights::FULL,
            by: "local user".into(),
        },
    );
    obs.server_notice(&ServerNotice::TlsCertificate {
        sha256: "ab".repeat(32),
        generated: true,
    });
    obs.server_notice(&ServerNotice::Insecure {
        addresses: vec!["0.0.0.0:5900".into()],
    });
    let failed = SessionInfo {
        peer: Some("198.51.100.9:4000".parse().unwrap()),
        security: Some("vnc-auth"),
        consent: Consent::Rejected,
        ..Default::default()
    };
    obs.auth_failed(&failed, "the local user refused the connection");
    obs.session_ended(&info, &EndReason::Kicked);
    obs.shutdown(Duration::from_secs(30));

    let events = j.events(None).unwrap();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    assert_eq!(find("consent").details["decision"], "accepted");
    assert_eq!(find("rights_change").details["by"], "local user");
    assert_eq!(find("rights_change").details["rights"]["keys"], true);
    let tls = find("tls_certificate");
    assert_eq!(
        (tls.session, tls.details["sha256"].as_str()),
        (None, Some(&*"ab".repeat(32)))
    );
    assert_eq!(find("insecure").details["addresses"][0], "0.0.0.0:5900");
    let af = find("auth_failure");
    assert_eq!(
        af.details["reason"],
        "the local user refused the connection"
    );
    let end = events
        .iter()
        .find(|e| e.kind == "session_end" && e.session == info.record)
        .unwrap();
    assert_eq!(end.details["end_reason"], "kicked");
    let rows = j.sessions(None).unwrap();
    let failed_row = rows
        .iter()
        .find(|r| r.end_reason.as_deref() == Some("auth failed"))
        .unwrap();
    assert_eq!(failed_row.consent, "rejected");
    assert!(j.verify().unwrap().broken.is_none());

    let text = std::fs::read_to_string(&hook_out).unwrap();
    let payloads: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hook = |event: &str| {
        payloads
            .iter()
            .find(|p| p["event"] == event)
            .unwrap_or_else(|| panic!("no {event} hook in {payloads:?}"))
    };
    let consent = |decision: &str| {
        payloads
            .iter()
            .find(|p| p["event"] == "consent" && p["data"]["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} consent hook in {payloads:?}"))
    };
    assert_eq!(consent("accepted")["data"]["rights"], "view");
    assert_eq!(
        hook("rights_change")["data"]["rights"],
        "view,keys,pointer,clipboard"
    );
    assert_eq!(hook("rights_change")["ticket"], "4711");
    // A refusal by the person at the screen is a consent decision (never
    // merged into an auth-failure summary).
    assert_eq!(
        consent("rejected")["data"]["reason"],
        "the local user refused the connection"
    );
    assert_eq!(consent("rejected")["session"], failed_row.id.0);
    // The session_end hook was sent after its row was committed: the
    // journal head it carries is at or after the session_end event.
    assert!(hook("session_end")["journal_head"]["seq"].as_i64().unwrap() >= end.seq);
}
