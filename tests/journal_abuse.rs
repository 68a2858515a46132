//! Issue 8, journal side: a flood of failed logins must neither silence the
//! hooks nor fill the disk. Real components: a real HTTP receiver on a
//! socket, the real hook dispatcher, the real journal observer and sqlite.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;
use ticketvnc::security::{Consent, Principal, Rights};
use ticketvnc::session::{SessionInfo, SessionObserver};
use ticketvnc::tickets::hooks::{HookConfig, HookDispatcher, HookEvent};
use ticketvnc::tickets::{Journal, JournalObserver, SessionStart, SessionStats};

/// Reads one HTTP request; returns its body.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).ok()? == 0 {
            return None;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

/// A healthy but slow receiver: answers 200 after `delay`, one request at
/// a time. Every payload goes to the channel in the order received.
fn slow_receiver(delay: Duration) -> (SocketAddr, Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                while let Some(body) = read_request(&mut s) {
                    let _ = tx.send(serde_json::from_slice(&body).unwrap());
                    std::thread::sleep(delay);
                    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if s.write_all(ok.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn a_login_flood_does_not_hold_up_session_hooks_and_every_failure_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(&dir.path().join("ticketvnc.db")).unwrap());
    let (addr, rx) = slow_receiver(Duration::from_millis(50));
    let hooks = HookDispatcher::start(
        HookConfig {
            webhook: Some(format!("http://{addr}/hook")),
            ..Default::default()
        },
        Some(j.clone()),
    )
    .unwrap();
    // 4,000 failures in about 2 s from 400 addresses.
    for i in 0..4000u32 {
        let peer = format!("198.51.100.{}:{}", i % 200, 40000 + i);
        hooks.dispatch(HookEvent::auth_failure(
            None,
            Some(&peer),
            "wrong password or code",
        ));
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Then a real session of another ticket starts and ends.
    let start = SessionStart {
        ticket: Some("4711".into()),
        peer: Some("192.0.2.7:51234".into()),
        security: "VNC".into(),
        credential: "one-time code #1".into(),
        rights: Rights::FULL,
        ..Default::default()
    };
    let id = j.session_started(&start).unwrap();
    hooks.dispatch(HookEvent::session_start(id, &start));
    j.session_ended(id, "viewer closed", SessionStats::default())
        .unwrap();
    hooks.dispatch(HookEvent::session_end(
        id,
        Some("4711".into()),
        "viewer closed",
        SessionStats::default(),
    ));
    assert!(
        hooks.shutdown(Duration::from_secs(60)),
        "deliveries unfinished"
    );
    let got: Vec<serde_json::Value> = rx.try_iter().collect();
    let names: Vec<&str> = got.iter().map(|p| p["event"].as_str().unwrap()).collect();
    println!("{} deliveries: {names:?}", got.len());
    let pos = |e: &str| names.iter().position(|n| *n == e);
    let (s, e) = (pos("session_start"), pos("session_end"));
    assert!(s.is_some() && e.is_some(), "session hooks lost: {names:?}");
    assert_eq!(got[s.unwrap()]["ticket"], "4711");
    // Every failure is in a summary, none on its own, and the last summary
    // came after the session's end.
    let summaries: Vec<&serde_json::Value> = got
        .iter()
        .filter(|p| p["event"] == "auth_failures")
        .collect();
    assert!(!summaries.is_empty());
    assert!(summaries.len() <= 3, "{} summaries", summaries.len());
    let total: u64 = summaries
        .iter()
        .map(|p| p["data"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4000);
    assert!(!names.contains(&"auth_failure"));
    let last_summary = names.iter().rposition(|n| *n == "auth_failures").unwrap();
    assert!(e.unwrap() < last_summary, "{names:?}");
    for p in &summaries {
        let listed = p["data"]["addresses"].as_array().unwrap();
        assert!(!listed.is_empty() && listed.len() <= 32, "{p}");
        assert!(listed.iter().all(|a| !a.as_str().unwrap().contains(':')));
    }
    assert!(j.verify().unwrap().broken.is_none());
}

/// The database's size once its write-ahead log is folded in (with the
/// sqlite3 shell): the space the rows really take.
fn db_size(db: &Path) -> u64 {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA busy_timeout=5000; PRAGMA wal_checkpoint(TRUNCATE);")
        .output()
        .expect("sqlite3 shell");
    assert!(out.status.success(), "{out:?}");
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn ten_thousand_failed_logins_cost_a_bounded_number_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let j = Arc::new(Journal::open(&db).unwrap());
    let obs = JournalObserver::new(j.clone(), None);
    let began = ticketvnc::tickets::now_ms();
    for i in 0..10_000u32 {
        let a = i % 5000;
        let info = SessionInfo {
            peer: Some(
                format!("10.{}.{}.1:{}", a / 250, a % 250, 1024 + i % 60000)
                    .parse()
                    .unwrap(),
            ),
            security: Some("vnc-auth"),
            ..Default::default()
        };
        obs.auth_failed(&info, "wrong password or code");
    }
    // One real refusal by the person at the screen is kept on its own.
    let refused = SessionInfo {
        peer: Some("10.0.0.1:999".parse().unwrap()),
        security: Some("vnc-auth"),
        consent: Consent::Rejected,
        principal: Some(Principal {
            ticket: Some("4711".into()),
            credential: "one-time code #1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    obs.auth_failed(&refused, "the local user refused the connection");
    obs.flush();
    let minutes = ((ticketvnc::tickets::now_ms() / 60_000) - (began / 60_000) + 1) as usize;
    let sessions = j.sessions(None).unwrap();
    let events = j.events(None).unwrap();
    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "auth_failures")
        .collect();
    let own = sessions
        .iter()
        .filter(|s| s.end_reason.as_deref() == Some("auth failed"))
        .count();
    println!(
        "{} session rows, {} events, {} summaries, {} bytes over {minutes} minute(s)",
        sessions.len(),
        events.len(),
        summaries.len(),
        db_size(&db)
    );
    // At most 64 failures a minute get their own row, plus the refusal.
    assert!(own <= 64 * minutes + 1, "{own} rows");
    assert!(summaries.len() <= minutes, "{} summaries", summaries.len());
    // Each own row: session_start, auth_failure, session_end; the refusal
    // also opened its ticket.
    assert!(
        events.len() <= (64 * 3 + 1) * minutes + 4,
        "{}",
        events.len()
    );
    let counted: u64 = summaries
        .iter()
        .map(|e| e.details["count"].as_u64().unwrap())
        .sum();
    assert_eq!(own as u64 - 1 + counted, 10_000);
    for s in &summaries {
        assert!(s.details["addresses"].as_array().unwrap().len() <= 32);
        assert!(s.details["distinct_addresses"].as_u64().unwrap() <= 5000);
    }
    assert!(sessions
        .iter()
        .any(|s| s.consent == "rejected" && s.ticket.as_deref() == Some("4711")));
    assert!(db_size(&db) < 256 << 10, "{} bytes", db_size(&db));
    drop(obs);
    assert!(j.verify().unwrap().broken.is_none());
}

#[test]
#[cfg(unix)]
fn a_summary_waiting_to_be_retried_steps_aside_for_a_session_event() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(&dir.path().join("ticketvnc.db")).unwrap());
    let log = dir.path().join("hook.log");
    // The ticket system refuses summaries (exit 1) and takes everything else.
    let cmd = format!(
        "echo \"$TICKETVNC_EVENT\" >> '{}'; [ \"$TICKETVNC_EVENT\" != auth_failures ]",
        log.display()
    );
    let hooks = HookDispatcher::start(
        HookConfig {
            hook_cmd: Some(cmd),
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            auth_summary_window: Duration::from_millis(20),
            ..Default::default()
        },
        Some(j.clone()),
    )
    .unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for = |n: usize| {
        for _ in 0..150 {
            if lines().lines().count() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let start = SessionStart {
        ticket: Some("4711".into()),
        security: "VNC".into(),
        credential: "one-time code #1".into(),
        rights: Rights::FULL,
        ..Default::default()
    };
    let id = j.session_started(&start).unwrap();
    // A first event, so that the worker is idle (asleep with nothing to
    // wait for) when the failure comes: it must still wake for the summary.
    hooks.dispatch(HookEvent::session_start(id, &start));
    wait_for(1);
    hooks.dispatch(HookEvent::auth_failure(
        None,
        Some("198.51.100.1:4000"),
        "wrong password or code",
    ));
    wait_for(2);
    assert_eq!(
        lines().lines().collect::<Vec<_>>(),
        ["session_start", "auth_failures"]
    );
    // The summary now waits 30 s to be retried; a session's end must not.
    hooks.dispatch(HookEvent::session_end(
        id,
        Some("4711".into()),
        "viewer closed",
        SessionStats::default(),
    ));
    wait_for(3);
    let seen = lines();
    let seen: Vec<&str> = seen.lines().collect();
    // Delivered before the summary's second attempt.
    assert!(
        seen.len() >= 3 && seen[..3] == ["session_start", "auth_failures", "session_end"],
        "{seen:?}"
    );
    hooks.shutdown(Duration::from_secs(5));
}

#[test]
fn a_ticket_closed_by_another_process_is_seen_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let j = Journal::open(&db).unwrap();
    j.open_ticket("4711", Some("Printer offline")).unwrap();
    j.open_ticket("4712", None).unwrap();
    j.close_ticket("4712", None).unwrap();
    // The server starts polling: earlier closings are not reported.
    let (none, cursor) = j.tickets_closed_since(None).unwrap();
    assert!(none.is_empty());
    let (none, same) = j.tickets_closed_since(Some(cursor)).unwrap();
    assert!(none.is_empty());
    assert_eq!(same, cursor);
    // `ticketvnc ticket close` in another terminal.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(&db)
        .args(["ticket", "close", "4711"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (closed, next) = j.tickets_closed_since(Some(cursor)).unwrap();
    assert_eq!(closed, ["4711"]);
    assert!(next > cursor);
    assert_eq!(
        j.ticket_status("4711").unwrap(),
        Some(ticketvnc::tickets::TicketStatus::Closed)
    );
    assert_eq!(j.ticket_status("nope").unwrap(), None);
    let (none, _) = j.tickets_closed_since(Some(next)).unwrap();
    assert!(none.is_empty());
}
