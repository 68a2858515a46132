//! A minimal UltraVNC repeater (mode II) for the tests, and a viewer that
//! goes through it: a server registers by sending the 250-byte, NUL-padded
//! "ID:<id>"; a viewer is greeted with "RFB 000.000\n" and answers with its
//! own 250-byte ID; equal IDs are paired and their bytes relayed.
//! `tests/repeater.rs` proves it faithful with x11vnc.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Repeater {
    pub server_port: u16,
    pub viewer_port: u16,
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
    pub fn start(server_port: u16, viewer_port: u16) -> Repeater {
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
    pub fn stop(self) {
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
pub fn viewer_stream(port: u16, id: &str, patience: Duration) -> Option<TcpStream> {
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
pub fn rfb_login(s: TcpStream, password: &str) -> Result<(), String> {
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
