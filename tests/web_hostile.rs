//! Hostile browsers on the RFB port, over real sockets against the real
//! server: oversized request heads, too many headers, bad handshakes, a
//! client that never finishes the upgrade, a text frame and an oversized
//! frame where binary RFB is expected. Each is closed cleanly (an HTTP
//! error or a WebSocket close frame, then EOF) while a WebSocket viewer
//! and a plain RFB viewer keep getting updates. Also: the upgrade sent a
//! byte at a time, and the page served only from its fixed table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use ticketvnc::capture::test_pattern::TestPattern;
use ticketvnc::input::NullInput;
use ticketvnc::rfb::limits;
use ticketvnc::server::{self, ServerConfig};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn start() -> server::ServerHandle {
    let cfg = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], None);
    server::start(
        cfg,
        Box::new(TestPattern::new(64, 48, 30).0),
        Arc::new(NullInput),
    )
    .await
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // Generous: only so a broken server fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Read until the server closes; everything it sent.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("no clean close: {e} after {out:?}"),
        }
    }
}

fn upgrade_request() -> String {
    format!(
        "GET /websockify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: binary\r\n\r\n"
    )
}

/// Read one HTTP response head.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head: {head:?}");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask = [1u8, 2, 3, 4];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Read one server frame: (opcode, payload). Server frames are unmasked.
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

/// A WebSocket RFB viewer (no authentication) through ServerInit, asking
/// for updates: returns the stream and a byte buffer of RFB read so far.
struct WsViewer {
    s: TcpStream,
    rfb: Vec<u8>,
}

impl WsViewer {
    fn open(addr: SocketAddr) -> WsViewer {
        let mut s = connect(addr);
        s.write_all(upgrade_request().as_bytes()).unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("Sec-WebSocket-Protocol: binary"), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        let mut v = WsViewer { s, rfb: Vec::new() };
        v.need(12);
        assert_eq!(&v.rfb[..12], b"RFB 003.008\n");
        v.send(b"RFB 003.008\n");
        v.need(14); // security types: 1 count, None (1)
        assert_eq!(v.rfb[12], 1, "one security type over ws on loopback");
        assert_eq!(v.rfb[13], 1, "None");
        v.send(&[1]); // None
        v.need(18); // SecurityResult OK
        assert_eq!(&v.rfb[14..18], &[0, 0, 0, 0]);
        v.send(&[1]); // shared
        v.need(18 + 24);
        let name_len = u32::from_be_bytes(v.rfb[18 + 20..18 + 24].try_into().unwrap()) as usize;
        v.need(18 + 24 + name_len);
        v.rfb.clear();
        v
    }
    fn send(&mut self, rfb: &[u8]) {
        self.s.write_all(&frame(2, rfb)).unwrap();
    }
    fn need(&mut self, n: usize) {
        while self.rfb.len() < n {
            let (op, p) = read_frame(&mut self.s);
            assert_eq!(op, 2, "binary frames only");
            self.rfb.extend_from_slice(&p);
        }
    }
    /// Ask for a full update and read until some update bytes arrive.
    fn gets_updates(&mut self) {
        let mut req = vec![3u8, 0];
        req.extend_from_slice(&[0, 0, 0, 0, 0, 64, 0, 48]);
        self.send(&req);
        self.rfb.clear();
        self.need(4);
        assert_eq!(self.rfb[0], 0, "a FramebufferUpdate");
    }
}

/// A plain RFB viewer (no authentication) through ServerInit.
fn plain_viewer(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    let mut v = [0u8; 12];
    s.read_exact(&mut v).unwrap();
    assert_eq!(&v, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut t = [0u8; 2];
    s.read_exact(&mut t).unwrap();
    s.write_all(&[1]).unwrap();
    let mut r = [0u8; 4];
    s.read_exact(&mut r).unwrap();
    s.write_all(&[1]).unwrap();
    let mut init = [0u8; 24];
    s.read_exact(&mut init).unwrap();
    let mut name = vec![0u8; u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize];
    s.read_exact(&mut name).unwrap();
    s
}

fn plain_gets_updates(s: &mut TcpStream) {
    s.write_all(&[3, 0, 0, 0, 0, 0, 0, 64, 0, 48]).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    // Drain whatever follows; only liveness matters here.
    s.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 65536];
    while s.read(&mut sink).is_ok_and(|n| n > 0) {}
    s.set_nonblocking(false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_browsers_are_closed_and_others_keep_going() {
    let h = start().await;
    let addr = h.local_addrs()[0];
    tokio::task::spawn_blocking(move || {
        let mut good = WsViewer::open(addr);
        let mut plain = plain_viewer(addr);
        good.gets_updates();
        plain_gets_updates(&mut plain);

        let check_others = |good: &mut WsViewer, plain: &mut TcpStream| {
            good.gets_updates();
            plain_gets_updates(plain);
        };

        // A request head beyond the limit: 431, closed.
        let mut s = connect(addr);
        let big = format!(
            "GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(limits::HTTP_MAX_REQUEST_HEAD)
        );
        let _ = s.write_all(big.as_bytes());
        let r = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        check_others(&mut good, &mut plain);

        // Too many headers: 431.
        let mut s = connect(addr);
        let mut req = String::from("GET / HTTP/1.1\r\n");
        for i in 0..limits::HTTP_MAX_HEADERS + 1 {
            req.push_str(&format!("X-{i}: y\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let r = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");

        // Bad handshakes: no key, a bad key, a wrong version, junk.
        for req in [
            "GET /websockify HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            "GET /websockify HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            format!("GET /websockify HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"),
            "GET \x00\x01\x02 junk\r\n\r\n".to_string(),
        ] {
            let mut s = connect(addr);
            s.write_all(req.as_bytes()).unwrap();
            let r = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
            assert!(r.starts_with("HTTP/1.1 400"), "{req:?}: {r}");
        }
        check_others(&mut good, &mut plain);

        // Never finishing the upgrade: closed (after the upgrade deadline)
        // without an answer.
        let mut s = connect(addr);
        s.write_all(b"GET /websockify HTTP/1.1\r\nUpgrade: websocket\r\n")
            .unwrap();
        assert_eq!(read_to_close(&mut s), b"");
        // And a bare "GE" that never goes on.
        let mut s = connect(addr);
        s.write_all(b"GE").unwrap();
        assert_eq!(read_to_close(&mut s), b"");
        check_others(&mut good, &mut plain);

        // A text frame where RFB is expected: close 1003, then EOF.
        let mut bad = WsViewer::open(addr);
        bad.s.write_all(&frame(1, b"RFB please")).unwrap();
        let (op, p) = loop {
            let f = read_frame(&mut bad.s);
            if f.0 != 2 {
                break f;
            }
        };
        assert_eq!(op, 8, "a close frame");
        assert_eq!(&p[..2], &1003u16.to_be_bytes());
        read_to_close(&mut bad.s);
        check_others(&mut good, &mut plain);

        // A frame declared larger than the limit: close 1009, then EOF,
        // without the server waiting for (or buffering) the payload.
        let mut bad = WsViewer::open(addr);
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&((limits::WS_MAX_FRAME_BYTES as u64) + 1).to_be_bytes());
        hdr.extend_from_slice(&[1, 2, 3, 4]);
        bad.s.write_all(&hdr).unwrap();
        let (op, p) = loop {
            let f = read_frame(&mut bad.s);
            if f.0 != 2 {
                break f;
            }
        };
        assert_eq!(op, 8, "a close frame");
        assert_eq!(&p[..2], &1009u16.to_be_bytes());
        read_to_close(&mut bad.s);

        // An unmasked client frame is a protocol error: close 1002.
        let mut bad = WsViewer::open(addr);
        bad.s.write_all(&[0x82, 0x01, 0x00]).unwrap();
        let (op, p) = loop {
            let f = read_frame(&mut bad.s);
            if f.0 != 2 {
                break f;
            }
        };
        assert_eq!(op, 8);
        assert_eq!(&p[..2], &1002u16.to_be_bytes());
        read_to_close(&mut bad.s);
        check_others(&mut good, &mut plain);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_sent_a_byte_at_a_time_still_works() {
    let h = start().await;
    let addr = h.local_addrs()[0];
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        s.set_nodelay(true).unwrap();
        for b in upgrade_request().bytes() {
            s.write_all(&[b]).unwrap();
        }
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (op, p) = read_frame(&mut s);
        assert_eq!((op, &p[..]), (2, &b"RFB 003.008\n"[..]));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_bundled_page_is_served() {
    let h = start().await;
    let addr = h.local_addrs()[0];
    tokio::task::spawn_blocking(move || {
        let get = |path: &str| {
            let mut s = connect(addr);
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            String::from_utf8_lossy(&read_to_close(&mut s)).to_string()
        };
        for p in ["/", "/vnc.html", "/?ticket=4711", "/core/rfb.js"] {
            let r = get(p);
            assert!(r.starts_with("HTTP/1.1 200"), "{p}: {r:.200}");
            assert!(r.contains("Cache-Control: no-store"), "{p}");
        }
        assert!(get("/").contains("Content-Type: text/html; charset=utf-8"));
        assert!(get("/core/rfb.js").contains("Content-Type: text/javascript"));
        for p in [
            "/../Cargo.toml",
            "/core/../../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/core/",
            "/etc/passwd",
        ] {
            let r = get(p);
            assert!(r.starts_with("HTTP/1.1 404"), "{p}: {r:.200}");
        }
        // Not GET: not HTTP at all for this port, the RFB session answers
        // (its version string) and then closes on the junk.
        let mut s = connect(addr);
        s.write_all(b"POST / HTTP/1.1\r\n\r\n").unwrap();
        let r = read_to_close(&mut s);
        assert!(r.starts_with(b"RFB 003.008\n"), "{r:?}");
    })
    .await
    .unwrap();
}

/// `wss://` on the same port: with TLS configured a browser's TLS
/// ClientHello is told from RFB, the TLS handshake and the WebSocket
/// upgrade run on top, and RFB flows inside (a real TLS client pinning the
/// generated certificate, tokio-tungstenite as the WebSocket client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_on_the_same_port_carries_rfb() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let id = ticketvnc::security::tls::load_or_generate(dir.path()).unwrap();
    let mut cfg = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], None);
    cfg.tls = Some(id.acceptor.clone());
    let h = server::start(
        cfg,
        Box::new(TestPattern::new(64, 48, 30).0),
        Arc::new(NullInput),
    )
    .await
    .unwrap();
    let addr = h.local_addrs()[0];

    // A TLS client that trusts exactly the server's generated certificate.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&id.cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake on the RFB port");
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/websockify", tls)
        .await
        .expect("WebSocket upgrade inside TLS");
    assert_eq!(resp.status(), 101);

    // RFB inside: collect binary frames into a byte stream.
    let mut rfb: Vec<u8> = Vec::new();
    async fn need<S>(ws: &mut S, rfb: &mut Vec<u8>, n: usize)
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        while rfb.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("no frame")
                .expect("stream ended")
                .expect("frame");
            match m {
                Message::Binary(b) => rfb.extend_from_slice(&b),
                other => panic!("binary frames only: {other:?}"),
            }
        }
    }
    need(&mut ws, &mut rfb, 12).await;
    assert_eq!(&rfb[..12], b"RFB 003.008\n");
    ws.send(Message::binary(b"RFB 003.008\n".to_vec()))
        .await
        .unwrap();
    need(&mut ws, &mut rfb, 14).await;
    // TLS is on the outside: the bare type alone (None without a password).
    assert_eq!(&rfb[12..14], &[1, 1], "one security type, None");
    ws.send(Message::binary(vec![1])).await.unwrap();
    need(&mut ws, &mut rfb, 18).await;
    assert_eq!(&rfb[14..18], &[0, 0, 0, 0], "SecurityResult OK");
    ws.send(Message::binary(vec![1])).await.unwrap(); // shared
    need(&mut ws, &mut rfb, 18 + 24).await;
    assert_eq!(&rfb[18..22], &[0, 64, 0, 48], "ServerInit 64x48");
    let name_len = u32::from_be_bytes(rfb[38..42].try_into().unwrap()) as usize;
    need(&mut ws, &mut rfb, 42 + name_len).await;
    rfb.drain(..42 + name_len);
    ws.send(Message::binary(vec![3, 0, 0, 0, 0, 0, 0, 64, 0, 48]))
        .await
        .unwrap();
    need(&mut ws, &mut rfb, 4).await;
    assert_eq!(rfb[0], 0, "a FramebufferUpdate over wss");
    drop(ws);
    h.shutdown().await.unwrap();
}
