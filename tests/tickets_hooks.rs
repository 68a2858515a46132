//! Hooks against real local receivers: an HTTP server started here (plain
//! std TcpListener) that answers 200, 500 or never, and a shell command.

#[path = "common/testdb.rs"]
mod testdb;

use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;
use ticketvnc::tickets::hooks::{HookConfig, HookDispatcher, HookEvent};
use ticketvnc::tickets::{Consent, Direction, Journal, Rights, SessionStart, SessionStats};

#[derive(Clone, Copy)]
enum Mode {
    /// 200 for every request.
    Ok,
    /// 500 for the first n requests, then 200.
    FailFirst(usize),
    /// Read the request, never answer (until the client gives up).
    Hang,
}

struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
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
    assert!(len < 1 << 20);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        headers,
        body,
    })
}

/// A tiny HTTP/1.1 receiver on 127.0.0.1; every request goes to the channel.
fn receiver(mode: Mode) -> (SocketAddr, Receiver<Request>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx): (Sender<Request>, _) = channel();
    let count = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let (tx, count) = (tx.clone(), count.clone());
            std::thread::spawn(move || {
                // Keep-alive: serve requests on this connection until it closes.
                while let Some(req) = read_request(&mut s) {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(req);
                    let status = match mode {
                        Mode::Ok => "200 OK",
                        Mode::FailFirst(k) if n < k => "500 Internal Server Error",
                        Mode::FailFirst(_) => "200 OK",
                        Mode::Hang => {
                            // Hold the connection until the client closes it.
                            let mut sink = [0u8; 64];
                            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                            return;
                        }
                    };
                    let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A scratch directory and the journal of the test (sqlite in it, or
/// PostgreSQL with `TICKETVNC_TEST_DB=postgres`: common/testdb.rs).
struct Scratch {
    dir: tempfile::TempDir,
    _db: testdb::TestDb,
}

impl Scratch {
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

fn journal() -> (Scratch, Arc<Journal>) {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    (Scratch { dir, _db: db }, j)
}

fn fast(cfg: HookConfig) -> HookConfig {
    HookConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        attempt_timeout: Duration::from_millis(300),
        ..cfg
    }
}

fn sample_start() -> SessionStart {
    SessionStart {
        ticket: Some("4711".into()),
        peer: Some("192.0.2.7:51234".into()),
        direction: Direction::Inbound,
        security: "VNC".into(),
        credential: "one-time code #1".into(),
        rights: Rights::FULL,
        ..Default::default()
    }
}

/// (attempt, outcome) of the hook_delivery events, in order.
fn outcomes(j: &Journal) -> Vec<(u64, String)> {
    j.events(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "hook_delivery")
        .map(|e| {
            (
                e.details["attempt"].as_u64().unwrap(),
                e.details["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn webhook_payload_is_signed_and_the_outcome_journaled() {
    let (_dir, j) = journal();
    let (addr, rx) = receiver(Mode::Ok);
    let secret = b"correct horse battery staple".to_vec();
    let d = HookDispatcher::start(
        fast(HookConfig {
            webhook: Some(format!("http://{addr}/hooks/vnc")),
            webhook_secret: Some(secret.clone()),
            ..Default::default()
        }),
        Some(j.clone()),
    )
    .unwrap();
    let s = sample_start();
    let id = j.session_started(&s).unwrap();
    assert!(d.dispatch(HookEvent::session_start(id, &s)));
    assert!(d.dispatch(HookEvent::session_end(
        id,
        s.ticket.clone(),
        "viewer closed",
        SessionStats {
            bytes_in: 10,
            bytes_out: 20,
            updates_sent: 3
        }
    )));
    assert!(d.shutdown(Duration::from_secs(30)), "deliveries finished");

    let reqs: Vec<Request> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.path, "/hooks/vnc");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-ticketvnc-event"], "session_start");
    // The signature, recomputed independently.
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    m.update(&r.body);
    let want: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(r.headers["x-ticketvnc-signature"], format!("sha256={want}"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["event"], "session_start");
    assert_eq!(v["ticket"], "4711");
    assert_eq!(v["session"], id.0);
    assert_eq!(v["data"]["peer"], "192.0.2.7:51234");
    assert_eq!(v["data"]["security"], "VNC");
    assert_eq!(v["delivery"], r.headers["x-ticketvnc-delivery"].as_str());
    // journal_head names a real chained row.
    let head_hash = v["journal_head"]["hash"].as_str().unwrap();
    assert!(j
        .events(None)
        .unwrap()
        .iter()
        .any(|e| e.seq == v["journal_head"]["seq"].as_i64().unwrap()));
    assert_eq!(head_hash.len(), 64);

    let v2: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(v2["event"], "session_end");
    assert_eq!(v2["data"]["end_reason"], "viewer closed");
    assert_eq!(v2["data"]["bytes_out"], 20);

    let o = outcomes(&j);
    assert_eq!(o.len(), 2, "{o:?}");
    assert!(
        o.iter().all(|(a, s)| *a == 1 && s == "delivered: HTTP 200"),
        "{o:?}"
    );
    // The deliveries are session events and the chain still verifies.
    assert_eq!(
        j.events(Some(id))
            .unwrap()
            .iter()
            .filter(|e| e.kind == "hook_delivery")
            .count(),
        2
    );
    assert!(j.verify().unwrap().broken.is_none());
}

#[test]
fn a_receiver_returning_500_is_retried_with_the_same_delivery_id() {
    let (_dir, j) = journal();
    let (addr, rx) = receiver(Mode::FailFirst(2));
    let d = HookDispatcher::start(
        fast(HookConfig {
            webhook: Some(format!("http://{addr}/")),
            ..Default::default()
        }),
        Some(j.clone()),
    )
    .unwrap();
    assert!(d.dispatch(HookEvent::auth_failure(
        None,
        Some("198.51.100.1:4000"),
        "wrong password or code"
    )));
    assert!(d.shutdown(Duration::from_secs(30)));
    let reqs: Vec<Request> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r.headers["x-ticketvnc-delivery"] == reqs[0].headers["x-ticketvnc-delivery"]));
    assert!(!reqs[0].headers.contains_key("x-ticketvnc-signature"));
    let o = outcomes(&j);
    assert_eq!(o.len(), 3, "{o:?}");
    assert_eq!(o[0].0, 1);
    assert!(o[0].1.starts_with("failed: HTTP 500; retrying"), "{o:?}");
    assert_eq!(o[1].0, 2);
    assert!(o[1].1.starts_with("failed: HTTP 500"), "{o:?}");
    assert_eq!(o[2], (3, "delivered: HTTP 200".to_string()));
}

#[test]
fn a_hanging_receiver_is_given_up_on_and_dispatch_never_blocks() {
    let (_dir, j) = journal();
    let (addr, rx) = receiver(Mode::Hang);
    let d = HookDispatcher::start(
        fast(HookConfig {
            webhook: Some(format!("http://{addr}/")),
            queue_len: 2,
            ..Default::default()
        }),
        Some(j.clone()),
    )
    .unwrap();
    let s = sample_start();
    let id = j.session_started(&s).unwrap();
    // The worker is stuck on the first delivery; consent events are never
    // refused nor dropped (queue_len bounds only auth-failure summaries),
    // and queuing them never blocks the caller.
    let accepted = (0..10)
        .filter(|_| d.dispatch(HookEvent::consent(id, s.ticket.clone(), Consent::Accepted)))
        .count();
    assert_eq!(accepted, 10);
    assert!(d.shutdown(Duration::from_secs(60)));
    assert!(rx.try_iter().count() >= 10);
    let o = outcomes(&j);
    let gave_up = o
        .iter()
        .filter(|(a, s)| *a == 3 && s.starts_with("gave up after 3 attempts"))
        .count();
    assert_eq!(gave_up, 10, "{o:?}");
    assert!(!o.iter().any(|(_, s)| s.starts_with("dropped")), "{o:?}");
}

#[test]
#[cfg(unix)]
fn hook_command_gets_env_and_json_on_stdin_and_failures_are_retried() {
    let (dir, j) = journal();
    let out = dir.path().join("env.txt");
    let body = dir.path().join("body.json");
    let cmd = format!(
        "printf '%s|%s|%s|%s\\n' \"$TICKETVNC_EVENT\" \"$TICKETVNC_TICKET\" \"$TICKETVNC_SESSION\" \"$TICKETVNC_PEER\" > '{}'; cat > '{}'",
        out.display(),
        body.display()
    );
    let d = HookDispatcher::start(
        fast(HookConfig {
            hook_cmd: Some(cmd),
            ..Default::default()
        }),
        Some(j.clone()),
    )
    .unwrap();
    let s = sample_start();
    let id = j.session_started(&s).unwrap();
    assert!(d.dispatch(HookEvent::session_start(id, &s)));
    assert!(d.shutdown(Duration::from_secs(30)));
    let env = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        env.trim(),
        format!("session_start|4711|{}|192.0.2.7:51234", id.0)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&body).unwrap()).unwrap();
    assert_eq!(v["event"], "session_start");
    assert_eq!(v["data"]["credential"], "one-time code #1");
    assert_eq!(outcomes(&j), vec![(1, "delivered: exit 0".to_string())]);

    // A failing command: retried, then given up, each attempt journaled.
    let (_dir2, j2) = journal();
    let d = HookDispatcher::start(
        fast(HookConfig {
            hook_cmd: Some("exit 3".into()),
            ..Default::default()
        }),
        Some(j2.clone()),
    )
    .unwrap();
    assert!(d.dispatch(HookEvent::auth_failure(
        None,
        None,
        "wrong password or code"
    )));
    assert!(d.shutdown(Duration::from_secs(30)));
    let o = outcomes(&j2);
    assert_eq!(o.len(), 3, "{o:?}");
    assert!(o[0].1.contains("exit status: 3"), "{o:?}");
    assert!(o[2].1.starts_with("gave up after 3 attempts"), "{o:?}");
}

/// Whether process `pid` is gone (or a zombie waiting for its parent).
#[cfg(target_os = "linux")]
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_timed_out_hook_command_is_killed_with_everything_it_started() {
    let (dir, j) = journal();
    let pidfile = dir.path().join("child.pid");
    // The command backgrounds a long sleep, records its pid, and waits.
    let cmd = format!("sleep 1000 & echo $! > '{}'; wait", pidfile.display());
    let d = HookDispatcher::start(
        HookConfig {
            hook_cmd: Some(cmd),
            max_attempts: 1,
            attempt_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        Some(j.clone()),
    )
    .unwrap();
    assert!(d.dispatch(HookEvent::auth_failure(None, None, "test")));
    assert!(d.shutdown(Duration::from_secs(30)), "worker finished");
    let o = outcomes(&j);
    assert_eq!(o.len(), 1, "{o:?}");
    assert!(o[0].1.contains("timed out"), "{o:?}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the hook ran and wrote its child's pid")
        .trim()
        .parse()
        .unwrap();
    // The kill is asynchronous: allow the kernel a moment to finish it.
    let mut ok = false;
    for _ in 0..100 {
        if gone(pid) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !ok {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    assert!(ok, "the hook's background child {pid} survived the timeout");
}
