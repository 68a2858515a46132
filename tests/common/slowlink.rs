//! A TCP proxy that behaves like a slow, distant link: each direction is
//! serialised at `bytes_per_sec` and then delayed by `one_way`. What the
//! sender writes faster than the link carries waits in a queue in front
//! of it (up to [`QUEUE_CHUNKS`] chunks, as a router's buffer would hold),
//! so a server that pushes without looking at round trips sees its data
//! pile up there and arrive late.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Chunks read at most at a time (the link's granularity).
const CHUNK: usize = 4096;
/// Chunks queued in front of the link at most (4 MiB: a bloated buffer).
const QUEUE_CHUNKS: usize = 1024;

#[derive(Clone, Copy, Debug)]
pub struct LinkParams {
    pub one_way: Duration,
    pub bytes_per_sec: u64,
}

impl LinkParams {
    pub fn rtt(&self) -> Duration {
        2 * self.one_way
    }
    /// Time `bytes` take to cross the link's bottleneck.
    pub fn transfer(&self, bytes: u64) -> Duration {
        Duration::from_micros(bytes * 1_000_000 / self.bytes_per_sec)
    }
}

pub struct SlowLink {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowLink {
    pub fn start(target: SocketAddr, params: LinkParams) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                shape(client, server, params);
                shape(s2, c2, params);
            }
        });
        SlowLink { port, stop }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Carry `from` to `to` through the link model: a reader that stamps each
/// chunk with the time it leaves the bottleneck plus the delay, and a
/// writer that delivers it then.
fn shape(mut from: TcpStream, mut to: TcpStream, p: LinkParams) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    std::thread::spawn(move || {
        let mut link_free = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            let leaves = link_free.max(now) + p.transfer(n as u64);
            link_free = leaves;
            if tx.send((leaves + p.one_way, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((at, data)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
