//! The UltraVNC repeater path (mode II) of `ticketvnc connect --repeater`.
//!
//! There is no repeater package, so this suite has a minimal mode-II
//! repeater: a server registers by sending the 250-byte, NUL-padded
//! "ID:<id>"; a viewer is greeted with "RFB 000.000\n" and answers with its
//! own 250-byte ID; equal IDs are paired and their bytes relayed. It is
//! proved faithful by pairing x11vnc (`-connect repeater=ID:...`) with a
//! viewer through it, then ticketvnc goes through it with the ticket
//! number as ID and the ticket's one-time code.

mod binary;
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Repeater {
    server_port: u16,
    viewer_port: u16,
    stop: Arc<AtomicBool>,
    /// Every stream it holds, so stopping it drops them all (a restart).
    streams: Arc<Mutex<Vec<TcpStream>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn read_id(s: &mut TcpStream) -> Option<String> {
    let mut m = [0u8; 250];
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.read_exact(&mut m).ok()?;
    let end = m.iter().position(|&b| b == 0).unwrap_or(250);
    let text = std::str::from_utf8(&m[..end]).ok()?;
    text.strip_prefix("ID:").map(str::to_string)
}

fn relay(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(None);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}

impl Repeater {
    /// On the given ports (0: any).
    fn start(server_port: u16, viewer_port: u16) -> Repeater {
        let sl = TcpListener::bind(("127.0.0.1", server_port)).unwrap();
        let vl = TcpListener::bind(("127.0.0.1", viewer_port)).unwrap();
        let (server_port, viewer_port) = (
            sl.local_addr().unwrap().port(),
            vl.local_addr().unwrap().port(),
        );
        sl.set_nonblocking(true).unwrap();
        vl.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let waiting: Arc<Mutex<HashMap<String, TcpStream>>> = Arc::default();
        let mut threads = Vec::new();
        for (listener, is_server) in [(sl, true), (vl, false)] {
            let (stop, streams, waiting) = (stop.clone(), streams.clone(), waiting.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    };
                    s.set_nonblocking(false).unwrap();
                    streams.lock().unwrap().push(s.try_clone().unwrap());
                    let waiting = waiting.clone();
                    std::thread::spawn(move || {
                        if !is_server && s.write_all(b"RFB 000.000\n").is_err() {
                            return;
                        }
                        let Some(id) = read_id(&mut s) else { return };
                        if is_server {
                            waiting.lock().unwrap().insert(id, s);
                            return;
                        }
                        // A viewer: pair it once its server is there.
                        let deadline = Instant::now() + WAIT;
                        while Instant::now() < deadline {
                            if let Some(server) = waiting.lock().unwrap().remove(&id) {
                                relay(server, s);
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    });
                }
            }));
        }
        Repeater {
            server_port,
            viewer_port,
            stop,
            streams,
            threads,
        }
    }

    /// Stop listening and drop every connection, as a crashed repeater.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A viewer through the repeater: the greeting, our ID, then the stream
/// carries RFB. `None` when the repeater never pairs it within `patience`.
fn viewer_stream(port: u16, id: &str, patience: Duration) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut greet = [0u8; 12];
    s.read_exact(&mut greet).unwrap();
    assert_eq!(&greet, b"RFB 000.000\n", "the repeater's greeting");
    let mut m = [0u8; 250];
    let text = format!("ID:{id}");
    m[..text.len()].copy_from_slice(text.as_bytes());
    s.write_all(&m).unwrap();
    // Paired: the server's version arrives.
    s.set_read_timeout(Some(patience)).unwrap();
    let mut peek = [0u8; 12];
    match s.peek(&mut peek) {
        Ok(n) if n > 0 => {
            s.set_read_timeout(Some(WAIT)).unwrap();
            Some(s)
        }
        _ => None,
    }
}

/// vnc-rs over a paired stream: log in with `password` and get a picture.
fn rfb_login(s: TcpStream, password: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let password = password.to_string();
    rt.block_on(async move {
        s.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(s).unwrap();
        let client = vnc::VncConnector::new(tcp)
            .set_auth_method(async move { Ok(password) })
            .add_encoding(vnc::VncEncoding::Raw)
            .allow_shared(true)
            .set_pixel_format(vnc::PixelFormat::bgra())
            .build()
            .map_err(|e| e.to_string())?
            .try_start()
            .await
            .map_err(|e| e.to_string())?
            .finish()
            .map_err(|e| e.to_string())?;
        client
            .input(vnc::X11Event::Refresh)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let ev = tokio::time::timeout(WAIT, client.recv_event())
                .await
                .map_err(|_| "no picture".to_string())?
                .map_err(|e| e.to_string())?;
            if let vnc::VncEvent::RawImage(..) = ev {
                break;
            }
        }
        let _ = client.close().await;
        Ok(())
    })
}

/// The repeater is faithful: x11vnc registers with it and a viewer with
/// the same ID gets x11vnc's screen.
#[test]
fn the_test_repeater_pairs_x11vnc() {
    common::require_commands(&["Xvfb", "x11vnc", "xdpyinfo"]);
    let xvfb = common::XvfbGuard::start(320, 240);
    let rep = Repeater::start(0, 0);
    let log = std::fs::File::create(common::artefact_dir().join("repeater-x11vnc.log")).unwrap();
    let _x11vnc = common::ChildGuard(
        Command::new("x11vnc")
            .args([
                "-display",
                &xvfb.display_name(),
                "-nopw",
                "-shared",
                "-forever",
            ])
            .arg("-connect")
            .arg(format!("repeater=ID:1234+127.0.0.1:{}", rep.server_port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run x11vnc"),
    );
    let deadline = Instant::now() + WAIT;
    let s = loop {
        if let Some(s) = viewer_stream(rep.viewer_port, "1234", Duration::from_secs(2)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "x11vnc never paired through the repeater"
        );
    };
    rfb_login(s, "").expect("x11vnc's screen through the repeater");
    rep.stop();
}

/// ticketvnc registers under the ticket number; a viewer with another ID
/// is never paired; one with the ticket's ID and code gets the screen; a
/// repeater restart is survived by registering again.
#[test]
fn ticketvnc_through_the_repeater_with_the_ticket_as_id() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let code = binary::open_code(&db, "4711", &[]);
    let rep = Repeater::start(0, 0);
    let (sport, vport) = (rep.server_port, rep.viewer_port);
    let log = std::fs::File::create(common::artefact_dir().join("repeater-ticketvnc.log")).unwrap();
    let mut child = Command::new(binary::BIN)
        .arg("--db")
        .arg(&db)
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .args(["connect", "--repeater", &format!("127.0.0.1:{sport}")])
        .args([
            "--ticket",
            "4711",
            "--source",
            "test-pattern",
            "--fps",
            "0",
            "--size",
            "64x48",
            "--retry-for",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run ticketvnc connect --repeater");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _server = common::ChildGuard(child);
    let mut line = String::new();
    while !line.contains("registering with repeater") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "connect exited early"
        );
    }
    // Another ID never pairs.
    assert!(
        viewer_stream(vport, "9999", Duration::from_secs(2)).is_none(),
        "a wrong ID was paired"
    );
    // The repeater crashes and comes back on the same ports.
    rep.stop();
    std::thread::sleep(Duration::from_millis(500));
    let rep = Repeater::start(sport, vport);
    let deadline = Instant::now() + WAIT;
    let s = loop {
        if let Some(s) = viewer_stream(vport, "4711", Duration::from_secs(2)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ticketvnc did not register again"
        );
    };
    // A repeater ID can be guessed: the ticket's code is required.
    rfb_login(s, &code).expect("the screen through the repeater with the code");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, json) = binary::cli(&db, &["sessions", "--json"]);
        let v: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
        if v.iter()
            .any(|s| s["direction"] == "repeater" && s["ticket"] == "4711")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no repeater session journaled: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rep.stop();
}
