//! Security of the handshake over real sockets (issue 7): VeNCrypt with a
//! pinned certificate, clients that try to get around authentication,
//! consent of the person at the screen, rights that change live.
//!
//! Every refusal must be journaled (a recording observer stands in for the
//! journal), close the connection promptly, and leave another viewer's
//! updates untouched.

#[path = "support_raw/mod.rs"]
mod support_raw;

use anyhow::{bail, ensure, Context, Result};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support_raw::*;
use ticketvnc::capture::test_pattern::render;
use ticketvnc::input::InputEvent;
use ticketvnc::rfb::messages::{enc, encode_client_message};
use ticketvnc::rfb::{ClientMessage, PixelFormat};
use ticketvnc::security::{vnc_auth_response, Consent, Rights, VncPassword};
use ticketvnc::session::consent::{
    ConsentAnswer, ConsentAsker, ConsentFuture, ConsentPolicy, ConsentRequest,
};
use ticketvnc::session::{EndReason, SessionEvent, SessionInfo, SessionObserver};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

const V38: &[u8; 12] = b"RFB 003.008\n";

// ------------------------------------------------------------ observer

/// What the journal would have been told.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    fn push(&self, s: String) {
        self.lines.lock().unwrap().push(s);
    }
    /// Wait until a line containing `what` was recorded.
    async fn wait_for(&self, what: &str) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(what)) {
                return Ok(l);
            }
            ensure!(
                Instant::now() < deadline,
                "never journaled {what:?}; journal: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl SessionObserver for Recorder {
    fn session_starting(&self, info: &SessionInfo) -> Result<i64, String> {
        self.push(format!(
            "start security={} consent={} rights={} technician={:?} peer={}",
            info.security.unwrap_or("?"),
            info.consent.as_str(),
            info.rights.summary(),
            info.principal.as_ref().and_then(|p| p.technician.clone()),
            info.peer.map(|p| p.to_string()).unwrap_or_default()
        ));
        Ok(info.id as i64)
    }
    fn auth_failed(&self, info: &SessionInfo, reason: &str) {
        self.push(format!(
            "refused peer={} consent={} reason={reason}",
            info.peer.map(|p| p.to_string()).unwrap_or_default(),
            info.consent.as_str()
        ));
    }
    fn session_event(&self, _info: &SessionInfo, ev: &SessionEvent) {
        let s = match ev {
            SessionEvent::RightsChange { rights, by } => {
                format!("rights {} by {by}", rights.summary())
            }
            SessionEvent::Consent { consent, rights } => {
                format!("consent {} {}", consent.as_str(), rights.summary())
            }
            other => format!("{other:?}"),
        };
        self.push(s);
    }
    fn session_ended(&self, _info: &SessionInfo, reason: &EndReason) {
        self.push(format!("ended {reason}"));
    }
}

async fn server_with(opts: ServerOpts) -> Result<(TestServer, Arc<Recorder>)> {
    let rec = Arc::new(Recorder::default());
    let srv = TestServer::start(ServerOpts {
        observer: Some(rec.clone()),
        ..opts
    })
    .await?;
    Ok((srv, rec))
}

fn tls_opts() -> ServerOpts {
    ServerOpts {
        tls: true,
        password: Some(PASSWORD.to_vec()),
        ..ServerOpts::default()
    }
}

// ------------------------------------------------------------ TLS client

/// Trusts exactly one certificate, by SHA-256 fingerprint: what a
/// technician does with the fingerprint ticketvnc prints.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if ticketvnc::security::tls::fingerprint(end_entity) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_connector(fingerprint: &str) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_string(),
            provider,
        }))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn rd<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .context("timed out reading")??;
    Ok(b)
}

/// Version, security type list (checked to start with VeNCrypt), VeNCrypt
/// 0.2 and its subtype list. Returns the subtypes offered.
async fn vencrypt_prelude(s: &mut tokio::net::TcpStream) -> Result<Vec<u32>> {
    ensure!(rd(s, 12).await? == V38);
    s.write_all(V38).await?;
    let n = rd(s, 1).await?[0] as usize;
    let types = rd(s, n).await?;
    ensure!(types.first() == Some(&19), "VeNCrypt first: {types:?}");
    s.write_all(&[19]).await?;
    ensure!(rd(s, 2).await? == [0, 2], "VeNCrypt version");
    s.write_all(&[0, 2]).await?;
    ensure!(rd(s, 1).await? == [0], "version accepted");
    let n = rd(s, 1).await?[0] as usize;
    let sub = rd(s, 4 * n).await?;
    Ok(sub
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A full X509Vnc login with our own TLS client; returns the TLS stream
/// after ServerInit and the framebuffer size.
async fn x509vnc_login(
    addr: SocketAddr,
    fingerprint: &str,
    password: &[u8],
) -> Result<(impl AsyncRead + AsyncWrite + Unpin, u16, u16)> {
    let mut s = connect(addr).await?;
    let subtypes = vencrypt_prelude(&mut s).await?;
    ensure!(subtypes.contains(&261), "X509Vnc offered: {subtypes:?}");
    s.write_all(&261u32.to_be_bytes()).await?;
    ensure!(rd(&mut s, 1).await? == [1], "subtype accepted");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut t = tls_connector(fingerprint).connect(name, s).await?;
    let c = rd(&mut t, 16).await?;
    let mut challenge = [0u8; 16];
    challenge.copy_from_slice(&c);
    t.write_all(&vnc_auth_response(&VncPassword::new(password), &challenge))
        .await?;
    let result = rd(&mut t, 4).await?;
    ensure!(result == [0, 0, 0, 0], "security result {result:?}");
    t.write_all(&[1]).await?;
    let head = rd(&mut t, 24).await?;
    let (w, h) = (
        u16::from_be_bytes([head[0], head[1]]),
        u16::from_be_bytes([head[2], head[3]]),
    );
    let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
    ensure!(name_len < 4096);
    rd(&mut t, name_len).await?;
    Ok((t, w, h))
}

/// Ask for one full Raw update and return its pixels (native format, one
/// rectangle of the whole screen expected).
async fn one_raw_frame<S: AsyncRead + AsyncWrite + Unpin>(
    t: &mut S,
    w: u16,
    h: u16,
) -> Result<Vec<u32>> {
    let mut msg = Vec::new();
    encode_client_message(&ClientMessage::SetEncodings(vec![enc::RAW]), &mut msg);
    encode_client_message(
        &ClientMessage::FramebufferUpdateRequest {
            incremental: false,
            rect: ticketvnc::framebuffer::Rect::new(0, 0, w, h),
        },
        &mut msg,
    );
    t.write_all(&msg).await?;
    let head = rd(t, 4).await?;
    ensure!(head[0] == 0, "a FramebufferUpdate, got type {}", head[0]);
    let n = u16::from_be_bytes([head[2], head[3]]);
    let mut px = vec![0u32; w as usize * h as usize];
    for _ in 0..n {
        let r = rd(t, 12).await?;
        let x = u16::from_be_bytes([r[0], r[1]]) as usize;
        let y = u16::from_be_bytes([r[2], r[3]]) as usize;
        let rw = u16::from_be_bytes([r[4], r[5]]) as usize;
        let rh = u16::from_be_bytes([r[6], r[7]]) as usize;
        let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
        ensure!(e == enc::RAW, "encoding {e}");
        ensure!(x + rw <= w as usize && y + rh <= h as usize);
        let data = rd(t, rw * rh * 4).await?;
        for row in 0..rh {
            for col in 0..rw {
                let i = (row * rw + col) * 4;
                // ServerInit's format is the native one: 32-bit little-endian.
                px[(y + row) * w as usize + x + col] =
                    u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            }
        }
    }
    Ok(px)
}

// ------------------------------------------------------------ VeNCrypt

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509vnc_over_tls_is_pixel_exact_and_journaled() -> Result<()> {
    let (srv, rec) = server_with(ServerOpts {
        fps: 0,
        ..tls_opts()
    })
    .await?;
    let fp = srv.tls_fingerprint.clone().unwrap();
    let (mut t, w, h) = x509vnc_login(srv.addr, &fp, PASSWORD).await?;
    let px = one_raw_frame(&mut t, w, h).await?;
    let want: Vec<u32> = render(w, h, 0)
        .pixels()
        .map(|&p| PixelFormat::NATIVE.from_native(p))
        .collect();
    ensure!(px == want, "the frame over TLS differs from the pattern");
    let start = rec.wait_for("start").await?;
    ensure!(
        start.contains("security=VeNCrypt/X509Vnc") && start.contains("consent=auto"),
        "{start}"
    );
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_pin_gets_nothing() -> Result<()> {
    let srv = TestServer::start(tls_opts()).await?;
    let mut s = connect(srv.addr).await?;
    vencrypt_prelude(&mut s).await?;
    s.write_all(&261u32.to_be_bytes()).await?;
    ensure!(rd(&mut s, 1).await? == [1]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let wrong = "00:".repeat(31) + "00";
    ensure!(
        tls_connector(&wrong).connect(name, s).await.is_err(),
        "a client pinning another certificate must not complete TLS"
    );
    srv.stop().await
}

// ------------------------------------------------------------ bypass attempts

/// Run one hostile handshake script while a watcher keeps viewing: the
/// connection must close within a second of the offending bytes, never
/// reach ServerInit, and the refusal must be journaled with `journaled`.
async fn refused_promptly(
    srv: &TestServer,
    rec: &Recorder,
    name: &str,
    script: impl AsyncFnOnce(&mut tokio::net::TcpStream) -> Result<()>,
    journaled: &str,
) -> Result<Vec<u8>> {
    let w = srv.watcher().await?;
    let mut s = connect(srv.addr).await?;
    let peer = s.local_addr()?;
    script(&mut s)
        .await
        .with_context(|| format!("{name}: script"))?;
    let sent = Instant::now();
    let (got, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let took = sent.elapsed();
    ensure!(end != End::Open, "{name}: the server did not close");
    ensure!(
        took < Duration::from_secs(1),
        "{name}: closing took {took:?}"
    );
    let line = rec.wait_for(&format!("peer={peer}")).await?;
    ensure!(
        line.contains(journaled),
        "{name}: journaled {line:?}, expected {journaled:?}"
    );
    ensure!(
        !rec.lines()
            .iter()
            .any(|l| l.starts_with("start") && l.ends_with(&format!("peer={peer}"))),
        "{name}: a session started: {:?}",
        rec.lines()
    );
    w.wait_for_more(3).await?;
    w.finish().await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_get_around_authentication() -> Result<()> {
    let (srv, rec) = server_with(tls_opts()).await?;

    // A type that was not offered (None), at 3.8: refused with the reason.
    let got = refused_promptly(
        &srv,
        &rec,
        "type not offered",
        async |s| {
            rd(s, 12).await?;
            s.write_all(V38).await?;
            let n = rd(s, 1).await?[0] as usize;
            ensure!(!rd(s, n).await?.contains(&1), "None must not be offered");
            s.write_all(&[1]).await?;
            Ok(())
        },
        "not offered",
    )
    .await?;
    ensure!(got.ends_with(b"security type not offered"), "{got:?}");

    // A subtype that was not offered: Plain without TLS (256), X509Plain
    // without accounts (262), TLSNone (257).
    for sub in [256u32, 262, 257] {
        let got = refused_promptly(
            &srv,
            &rec,
            &format!("subtype {sub}"),
            async |s| {
                let offered = vencrypt_prelude(s).await?;
                ensure!(!offered.contains(&sub), "{sub} offered: {offered:?}");
                s.write_all(&sub.to_be_bytes()).await?;
                Ok(())
            },
            "subtype",
        )
        .await?;
        ensure!(got == [0], "subtype {sub}: the refusal byte, got {got:?}");
    }

    // ClientInit and normal messages where the VNC response belongs: they
    // are taken as a (wrong) response; nothing else is decoded.
    refused_promptly(
        &srv,
        &rec,
        "messages before auth",
        async |s| {
            rd(s, 12).await?;
            s.write_all(V38).await?;
            let n = rd(s, 1).await?[0] as usize;
            rd(s, n).await?;
            s.write_all(&[2]).await?;
            rd(s, 16).await?;
            let mut early = vec![1u8]; // ClientInit
            encode_client_message(&ClientMessage::SetEncodings(vec![0; 8]), &mut early);
            encode_client_message(
                &ClientMessage::KeyEvent {
                    down: true,
                    keysym: 0x61,
                },
                &mut early,
            );
            s.write_all(&early).await?;
            Ok(())
        },
        "authentication failed",
    )
    .await?;

    // Normal messages where the VeNCrypt version belongs.
    refused_promptly(
        &srv,
        &rec,
        "messages instead of VeNCrypt",
        async |s| {
            rd(s, 12).await?;
            s.write_all(V38).await?;
            let n = rd(s, 1).await?[0] as usize;
            rd(s, n).await?;
            s.write_all(&[19]).await?;
            rd(s, 2).await?;
            s.write_all(&[1, 3, 0, 0, 0, 0]).await?;
            Ok(())
        },
        "VeNCrypt",
    )
    .await?;

    // Answering twice: a wrong answer, then the right one. The first
    // closes the connection; the second is never read.
    refused_promptly(
        &srv,
        &rec,
        "answering twice",
        async |s| {
            rd(s, 12).await?;
            s.write_all(V38).await?;
            let n = rd(s, 1).await?[0] as usize;
            rd(s, n).await?;
            s.write_all(&[2]).await?;
            let c = rd(s, 16).await?;
            let mut challenge = [0u8; 16];
            challenge.copy_from_slice(&c);
            let mut both = vec![0u8; 16];
            both.extend_from_slice(&vnc_auth_response(&VncPassword::new(PASSWORD), &challenge));
            both.push(1);
            s.write_all(&both).await?;
            Ok(())
        },
        "authentication failed",
    )
    .await?;

    // Starting TLS with garbage instead of a ClientHello.
    refused_promptly(
        &srv,
        &rec,
        "TLS garbage",
        async |s| {
            vencrypt_prelude(s).await?;
            s.write_all(&261u32.to_be_bytes()).await?;
            ensure!(rd(s, 1).await? == [1]);
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
            Ok(())
        },
        "TLS handshake failed",
    )
    .await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_and_refusals_say_why() -> Result<()> {
    let (srv, _rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        ..ServerOpts::default()
    })
    .await?;
    let ip: std::net::IpAddr = "127.99.1.1".parse()?;
    let from = |ip| async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(ip, 0))?;
        anyhow::Ok(sock.connect(srv.addr).await?)
    };
    for _ in 0..ticketvnc::rfb::limits::AUTH_FAILURES_BEFORE_BLOCK {
        let mut s = from(ip).await?;
        rd(&mut s, 12).await?;
        s.write_all(V38).await?;
        let n = rd(&mut s, 1).await?[0] as usize;
        rd(&mut s, n).await?;
        s.write_all(&[2]).await?;
        rd(&mut s, 16).await?;
        s.write_all(&[0u8; 16]).await?;
        let (got, _) = read_to_close(&mut s, WAIT).await;
        ensure!(got.ends_with(b"authentication failed"), "{got:?}");
    }
    // Locked out: the viewer is told so (no security types and a reason).
    let mut s = from(ip).await?;
    ensure!(rd(&mut s, 12).await? == V38);
    s.write_all(V38).await?;
    let (got, end) = read_to_close(&mut s, WAIT).await;
    ensure!(end == End::Eof, "{end:?}");
    ensure!(got.first() == Some(&0), "no security types: {got:?}");
    let text = String::from_utf8_lossy(&got[5..]).into_owned();
    ensure!(text.contains("too many failed authentications"), "{text:?}");
    srv.stop().await
}

// ------------------------------------------------------------ consent

/// A consent asker the test answers by hand.
struct HandAsker {
    tx: mpsc::UnboundedSender<(ConsentRequest, oneshot::Sender<ConsentAnswer>)>,
}

impl ConsentAsker for HandAsker {
    fn ask(&self, req: ConsentRequest) -> ConsentFuture {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((req, tx));
        Box::pin(async move { rx.await.unwrap_or(ConsentAnswer::Reject) })
    }
}

type Questions = mpsc::UnboundedReceiver<(ConsentRequest, oneshot::Sender<ConsentAnswer>)>;

fn hand_consent(timeout: Duration) -> (ConsentPolicy, Questions) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        ConsentPolicy::Ask {
            asker: Arc::new(HandAsker { tx }),
            timeout,
        },
        rx,
    )
}

/// Version, VNC auth with the right password, then the SecurityResult
/// (which waits for consent). Returns the stream and the raw result.
async fn login_until_result(addr: SocketAddr) -> Result<(tokio::net::TcpStream, Vec<u8>)> {
    let mut s = connect(addr).await?;
    rd(&mut s, 12).await?;
    s.write_all(V38).await?;
    let n = rd(&mut s, 1).await?[0] as usize;
    rd(&mut s, n).await?;
    s.write_all(&[2]).await?;
    let c = rd(&mut s, 16).await?;
    let mut challenge = [0u8; 16];
    challenge.copy_from_slice(&c);
    s.write_all(&vnc_auth_response(&VncPassword::new(PASSWORD), &challenge))
        .await?;
    let (got, _) = {
        let mut r = vec![0u8; 4];
        tokio::time::timeout(WAIT, s.read_exact(&mut r)).await??;
        (r, ())
    };
    Ok((s, got))
}

/// A key event from viewer `c`.
async fn key(c: &mut RawClient, down: bool, keysym: u32) -> Result<()> {
    c.send(&ClientMessage::KeyEvent { down, keysym }).await
}

/// Wait for the next question and give `a` as its answer.
async fn answer(q: &mut Questions, a: ConsentAnswer) -> Result<ConsentRequest> {
    let (req, reply) = tokio::time::timeout(WAIT, q.recv())
        .await?
        .context("no question")?;
    ensure!(req.rights == Rights::FULL, "asked for {:?}", req.rights);
    let _ = reply.send(a);
    Ok(req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_accept_view_only_reject_timeout() -> Result<()> {
    let (policy, mut questions) = hand_consent(Duration::from_secs(2));
    let (srv, rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        consent: policy,
        ..ServerOpts::default()
    })
    .await?;

    // Accept: in with full rights, and keys reach the desktop.
    let login = tokio::spawn(login_until_result(srv.addr));
    answer(&mut questions, ConsentAnswer::Accept(Rights::FULL)).await?;
    let (mut s, result) = login.await??;
    ensure!(result == [0, 0, 0, 0], "accepted: {result:?}");
    s.write_all(&[1]).await?;
    let mut c = RawClient::after_server_init(s).await?;
    rec.wait_for("start security=vnc-auth consent=accepted rights=view,keys,pointer,clipboard")
        .await?;
    rec.wait_for("consent accepted").await?;
    key(&mut c, true, 0x61).await?;
    key(&mut c, false, 0x61).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    ensure!(
        srv.input.events().contains(&InputEvent::Key {
            down: true,
            keysym: 0x61
        }),
        "the accepted viewer's key did not arrive: {:?}",
        srv.input.events()
    );
    drop(c);

    // View-only: in, but keys never reach the desktop.
    let before = srv.input.events().len();
    let login = tokio::spawn(login_until_result(srv.addr));
    answer(&mut questions, ConsentAnswer::Accept(Rights::VIEW_ONLY)).await?;
    let (mut s, result) = login.await??;
    ensure!(result == [0, 0, 0, 0], "view-only: {result:?}");
    s.write_all(&[1]).await?;
    let mut c = RawClient::after_server_init(s).await?;
    rec.wait_for("consent=accepted rights=view technician")
        .await?;
    key(&mut c, true, 0x62).await?;
    c.send(&ClientMessage::PointerEvent {
        buttons: 1,
        x: 5,
        y: 5,
    })
    .await?;
    c.request_full(false).await?;
    c.next_update().await?;
    ensure!(
        srv.input.events().len() == before,
        "a view-only viewer's input arrived: {:?}",
        &srv.input.events()[before..]
    );
    drop(c);

    // Reject: the result carries the reason; journaled as rejected.
    let login = tokio::spawn(login_until_result(srv.addr));
    answer(&mut questions, ConsentAnswer::Reject).await?;
    let (mut s, result) = login.await??;
    ensure!(result == [0, 0, 0, 1], "rejected: {result:?}");
    let (rest, _) = read_to_close(&mut s, WAIT).await;
    ensure!(
        String::from_utf8_lossy(&rest).contains("rejected"),
        "{rest:?}"
    );
    rec.wait_for("consent=rejected reason=the person at the screen rejected")
        .await?;

    // No answer within the timeout: rejected as "timeout".
    let login = tokio::spawn(login_until_result(srv.addr));
    let (_req, _reply_never_sent) = questions.recv().await.context("no question")?;
    let (mut s, result) = login.await??;
    ensure!(result == [0, 0, 0, 1], "timed out: {result:?}");
    let (rest, _) = read_to_close(&mut s, WAIT).await;
    ensure!(
        String::from_utf8_lossy(&rest).contains("did not answer"),
        "{rest:?}"
    );
    rec.wait_for("consent=timeout").await?;
    srv.stop().await
}

/// While one viewer waits 4 s for consent, a viewer already in keeps
/// getting updates without a gap over a second, and a new viewer gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_consent_stalls_nobody() -> Result<()> {
    let (policy, mut questions) = hand_consent(Duration::from_secs(30));
    let (srv, _rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        consent: policy,
        ..ServerOpts::default()
    })
    .await?;
    // The first viewer is let in at once.
    let first = tokio::spawn(login_until_result(srv.addr));
    let (_, reply) = questions.recv().await.context("question 1")?;
    let _ = reply.send(ConsentAnswer::Accept(Rights::FULL));
    let (mut s, result) = first.await??;
    ensure!(result == [0, 0, 0, 0]);
    s.write_all(&[1]).await?;
    let mut c = RawClient::after_server_init(s).await?;
    c.set_encodings(&[enc::RAW]).await?;

    // The second waits 4 s for an answer...
    let pending = tokio::spawn(login_until_result(srv.addr));
    let (_, held_reply) = questions.recv().await.context("question 2")?;
    // ...while the first keeps viewing, and a third comes and goes.
    let started = Instant::now();
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    let mut updates = 0;
    let mut third_done = false;
    while started.elapsed() < Duration::from_secs(4) {
        c.request_full(updates > 0).await?;
        c.next_update().await?;
        updates += 1;
        worst = worst.max(last.elapsed());
        last = Instant::now();
        if !third_done && started.elapsed() > Duration::from_secs(1) {
            let third = tokio::spawn(login_until_result(srv.addr));
            let (_, r) = questions.recv().await.context("question 3")?;
            let _ = r.send(ConsentAnswer::Accept(Rights::FULL));
            let (_s, result) = third.await??;
            ensure!(result == [0, 0, 0, 0], "a new viewer got in meanwhile");
            third_done = true;
        }
    }
    ensure!(third_done);
    ensure!(
        worst < Duration::from_secs(1),
        "a gap of {worst:?} between updates while consent was pending ({updates} updates)"
    );
    let _ = held_reply.send(ConsentAnswer::Accept(Rights::FULL));
    let (_s, result) = pending.await??;
    ensure!(result == [0, 0, 0, 0]);
    srv.stop().await
}

// ------------------------------------------------------------ rights

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_change_live_and_release_held_keys() -> Result<()> {
    let (srv, rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        ..ServerOpts::default()
    })
    .await?;
    let mut c = srv.client().await?;
    c.set_encodings(&[enc::RAW]).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    let handle = srv.handle.as_ref().unwrap();
    let id = *handle.session_ids().first().context("a session")?;
    // Ctrl held down, then input is paused.
    key(&mut c, true, 0xffe3).await?;
    c.request_full(true).await?;
    let t = Instant::now();
    while !srv.input.events().contains(&InputEvent::Key {
        down: true,
        keysym: 0xffe3,
    }) {
        ensure!(t.elapsed() < WAIT, "Ctrl never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(handle.set_rights(id, Rights::VIEW_ONLY, "customer (tray)"));
    rec.wait_for("rights view by customer (tray)").await?;
    // The held Ctrl was let go when input was taken away.
    let events = srv.input.events();
    ensure!(
        events.last()
            == Some(&InputEvent::Key {
                down: false,
                keysym: 0xffe3
            }),
        "Ctrl still held: {events:?}"
    );
    let n = events.len();
    key(&mut c, true, 0x61).await?;
    c.send(&ClientMessage::ClientCutText(b"paste".to_vec()))
        .await?;
    c.request_full(false).await?;
    c.next_update().await?;
    ensure!(
        srv.input.events().len() == n,
        "input arrived while paused: {:?}",
        &srv.input.events()[n..]
    );
    // Given back: keys work again.
    ensure!(handle.set_rights(id, Rights::FULL, "customer (tray)"));
    rec.wait_for("rights view,keys,pointer,clipboard by")
        .await?;
    key(&mut c, true, 0x63).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    let t = Instant::now();
    while !srv.input.events().contains(&InputEvent::Key {
        down: true,
        keysym: 0x63,
    }) {
        ensure!(t.elapsed() < WAIT, "keys did not come back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.stop().await
}

/// Issue 10, fault 4: what a session records as held is what was
/// injected. A viewer presses 40 different keys and goes away: every key
/// that reached the desktop is released. Before, the session recorded 32
/// keys at most but injected every press, so keys 33 to 40 stayed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_key_is_released_when_the_viewer_leaves() -> Result<()> {
    let (srv, _rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        ..ServerOpts::default()
    })
    .await?;
    let mut c = srv.client().await?;
    c.set_encodings(&[enc::RAW]).await?;
    for k in 0..40u32 {
        key(&mut c, true, 0x61 + k).await?;
    }
    // Everything before this request has been handled once it is answered.
    c.request_full(false).await?;
    c.next_update().await?;
    drop(c);
    let t = Instant::now();
    loop {
        let events = srv.input.events();
        let stuck: Vec<u32> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                InputEvent::Key { down: true, keysym } => {
                    let released = events[i..].contains(&InputEvent::Key {
                        down: false,
                        keysym: *keysym,
                    });
                    (!released).then_some(*keysym)
                }
                _ => None,
            })
            .collect();
        if stuck.is_empty() && !events.is_empty() {
            break;
        }
        ensure!(
            t.elapsed() < WAIT,
            "keys left down after the viewer left: {stuck:x?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_password_only_watches() -> Result<()> {
    let (srv, rec) = server_with(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        view_only_password: Some(b"watchme".to_vec()),
        ..ServerOpts::default()
    })
    .await?;
    let mut c = RawClient::connect(srv.addr, &Auth::Password(b"watchme".to_vec())).await?;
    c.set_encodings(&[enc::RAW]).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    rec.wait_for("rights=view technician").await?;
    let handle = srv.handle.as_ref().unwrap();
    let id = *handle.session_ids().first().context("a session")?;
    // Not even a live change lifts the credential's limit.
    handle.set_rights(id, Rights::FULL, "test");
    key(&mut c, true, 0x61).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    ensure!(srv.input.events().is_empty(), "{:?}", srv.input.events());
    if rec
        .lines()
        .iter()
        .any(|l| l.starts_with("rights view,keys"))
    {
        bail!("a rights change beyond the credential was applied");
    }
    let _ = Consent::NotAsked;
    srv.stop().await
}

// ------------------------------------------------------------ owners

/// Two passwords, two tickets.
struct TwoTickets;

impl ticketvnc::security::Authenticator for TwoTickets {
    fn verify_vnc(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Option<ticketvnc::security::Principal> {
        for (pw, ticket) in [(&b"code-one"[..], "4711"), (b"code-two", "4712")] {
            if VncPassword::new(pw).verify(challenge, response) {
                return Some(ticketvnc::security::Principal {
                    ticket: Some(ticket.into()),
                    credential: "test code".into(),
                    ..Default::default()
                });
            }
        }
        None
    }
}

async fn viewer_of(addr: SocketAddr, pw: &[u8], shared: bool) -> Result<RawClient> {
    let mut s = connect(addr).await?;
    handshake(&mut s, &Auth::Password(pw.to_vec()), shared).await?;
    let mut c = RawClient::after_server_init(s).await?;
    c.set_encodings(&[enc::RAW]).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    Ok(c)
}

/// Still connected: a request is answered.
async fn alive(c: &mut RawClient) -> bool {
    c.request_full(false).await.is_ok() && c.next_update().await.is_ok()
}

/// An exclusive viewer displaces only viewers of its own ticket; closing
/// a ticket ends its running sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_access_and_closed_tickets_stay_within_a_ticket() -> Result<()> {
    let (srv, rec) = server_with(ServerOpts {
        authenticator: Some(Arc::new(TwoTickets)),
        ..ServerOpts::default()
    })
    .await?;
    let mut a = viewer_of(srv.addr, b"code-one", true).await?;
    // Ticket 4712 asks for exclusive access: 4711's viewer stays.
    let mut b = viewer_of(srv.addr, b"code-two", false).await?;
    ensure!(
        alive(&mut a).await,
        "another ticket's exclusive viewer kicked A"
    );
    // 4711 asks for exclusive access: A (same ticket) goes, B stays.
    let mut c = viewer_of(srv.addr, b"code-one", false).await?;
    rec.wait_for("ended kicked").await?;
    ensure!(
        !alive(&mut a).await,
        "A of the same ticket was not displaced"
    );
    ensure!(alive(&mut b).await, "B of another ticket was displaced");
    // Ticket 4712 is closed: B ends, C (4711) goes on.
    let handle = srv.handle.as_ref().unwrap();
    ensure!(handle.end_ticket_sessions("4712") == 1);
    rec.wait_for("ended ticket closed").await?;
    ensure!(!alive(&mut b).await, "B outlived its ticket");
    ensure!(alive(&mut c).await);
    srv.stop().await
}

/// The journal records a viewer's paste only when it reached a clipboard.
/// On a desktop without one (a compositor refusing the clipboard, a
/// platform without clipboard access) the paste reaches the input sink,
/// which says it went nowhere, and no transfer is journaled; until this
/// was fixed the journal claimed a transfer the customer never got (found
/// running the journal test on sway before it had a clipboard). The same
/// paste on a desktop with a clipboard is journaled, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paste_with_nowhere_to_go_is_not_journaled() -> Result<()> {
    for no_clipboard in [true, false] {
        let (srv, rec) = server_with(ServerOpts {
            no_clipboard,
            ..ServerOpts::default()
        })
        .await?;
        let mut c = RawClient::connect(srv.addr, &Auth::None).await?;
        c.set_encodings(&[enc::RAW]).await?;
        c.send(&ClientMessage::ClientCutText(b"dropped text".to_vec()))
            .await?;
        // Answered only after the paste before it was handled (in order).
        c.request_full(false).await?;
        c.next_update().await?;
        ensure!(
            srv.input.events() == [InputEvent::CutText("dropped text".into())],
            "{:?}",
            srv.input.events()
        );
        let journaled = rec.lines().iter().any(|l| l.starts_with("Clipboard"));
        ensure!(
            journaled != no_clipboard,
            "no_clipboard={no_clipboard}: journal {:#?}",
            rec.lines()
        );
        srv.stop().await?;
    }
    Ok(())
}
