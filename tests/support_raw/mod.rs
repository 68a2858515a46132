//! A minimal raw RFB client for hostile-input tests, plus the helpers the
//! tests share: an in-process server on loopback, a well-behaved "watcher"
//! viewer that keeps requesting and verifying updates, byte-exact reading
//! until the server closes, split-point generation and log capture.
//!
//! The client speaks 3.8 with security None or VNC authentication (through
//! `ticketvnc::security::vnc_auth_response`), sends client messages with
//! `ticketvnc::rfb::messages::encode_client_message`, and decodes
//! FramebufferUpdates made of Raw rectangles (plus DesktopSize,
//! ExtendedDesktopSize, DesktopName and LastRect pseudo-rectangles) into a
//! framebuffer of pixel *values* in its own pixel format, so a test can
//! compare them exactly with `PixelFormat::from_native(render(..))`.
//!
//! Everything the server sends is treated as untrusted too: sizes are
//! checked before anything is allocated from them.

#![allow(dead_code)]

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use ticketvnc::capture::test_pattern::{render, PatternControl, TestPattern};
use ticketvnc::framebuffer::Rect;
use ticketvnc::input::{InputSink, RecordingInput};
use ticketvnc::rfb::messages::{enc, encode_client_message};
use ticketvnc::rfb::{ClientMessage, PixelFormat};
use ticketvnc::security::{vnc_auth_response, Authenticator, StaticPassword, VncPassword};
use ticketvnc::server::{self, ServerConfig, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Upper bound for any single wait in these tests. Reaching it means the
/// server failed to do something it must do (answer, or close); it is a
/// hang guard, not a performance assertion.
pub const WAIT: Duration = Duration::from_secs(20);

/// Pause between the two halves of a split message, so the server sees
/// them in separate reads.
pub const SPLIT_PAUSE: Duration = Duration::from_millis(25);

/// Largest framebuffer edge / name / cut text this client accepts from a server.
const CLIENT_MAX_EDGE: u16 = 16384;
const CLIENT_MAX_TEXT: u32 = 16 << 20;

pub const PASSWORD: &[u8] = b"s3cr3t!";

// ---------------------------------------------------------------- server

/// An in-process ticketvnc server on 127.0.0.1 with an animated test pattern.
pub struct TestServer {
    /// The server runs on its own runtime, as it does in production, so
    /// the test's own CPU work (decoding, verifying) cannot starve it.
    runtime: Option<tokio::runtime::Runtime>,
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub control: PatternControl,
    pub input: Arc<RecordingInput>,
    pub password: Option<Vec<u8>>,
    /// SHA-256 fingerprint ("AB:CD:..") of the VeNCrypt certificate, with `tls`.
    pub tls_fingerprint: Option<String>,
    _tls_dir: Option<tempfile::TempDir>,
}

pub struct ServerOpts {
    pub width: u16,
    pub height: u16,
    pub fps: u32,
    pub password: Option<Vec<u8>>,
    /// A second password that lets viewers only watch.
    pub view_only_password: Option<Vec<u8>>,
    pub handshake_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_preauth: Option<usize>,
    /// Offer VeNCrypt with a freshly generated certificate.
    pub tls: bool,
    pub consent: ticketvnc::session::consent::ConsentPolicy,
    pub observer: Option<Arc<dyn ticketvnc::session::SessionObserver>>,
    /// The server-wide guessing budget. Off by default here: the hostile
    /// suites fail hundreds of logins on purpose; the budget's own tests
    /// set it.
    pub auth_failures_per_minute: u32,
    /// Replaces the password-based authenticator.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// The desktop has no clipboard (pastes go nowhere).
    pub no_clipboard: bool,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            width: 320,
            height: 240,
            fps: 30,
            password: None,
            // The production default: tests that exercise the deadline set
            // their own; the others must not trip it on a loaded machine.
            handshake_timeout: Duration::from_secs(ticketvnc::rfb::limits::HANDSHAKE_TIMEOUT_SECS),
            write_stall_timeout: Duration::from_secs(
                ticketvnc::rfb::limits::WRITE_STALL_TIMEOUT_SECS,
            ),
            // The split tests run many handshakes at once; the pre-auth
            // limit itself is exercised by the exhaustion test.
            max_preauth: Some(512),
            view_only_password: None,
            tls: false,
            consent: ticketvnc::session::consent::ConsentPolicy::Auto,
            observer: None,
            auth_failures_per_minute: 0,
            authenticator: None,
            no_clipboard: false,
        }
    }
}

impl TestServer {
    pub async fn start(opts: ServerOpts) -> Result<TestServer> {
        init_log_capture();
        let (source, control) = TestPattern::new(opts.width, opts.height, opts.fps);
        let mut authenticator: Option<Arc<dyn Authenticator>> = opts.password.as_ref().map(|p| {
            Arc::new(StaticPassword {
                password: VncPassword::new(p),
                ticket: None,
            }) as Arc<dyn Authenticator>
        });
        if let (Some(inner), Some(vo)) = (authenticator.clone(), &opts.view_only_password) {
            authenticator = Some(Arc::new(ticketvnc::security::WithViewOnlyPassword {
                inner,
                view_only: VncPassword::new(vo),
                ticket: None,
            }));
        }
        if opts.authenticator.is_some() {
            authenticator = opts.authenticator.clone();
        }
        let mut cfg = ServerConfig::new(vec!["127.0.0.1:0".parse()?], authenticator);
        let (mut tls_fingerprint, mut tls_dir) = (None, None);
        if opts.tls {
            let dir = tempfile::tempdir()?;
            let id = ticketvnc::security::tls::load_or_generate(dir.path())?;
            tls_fingerprint = Some(id.fingerprint.clone());
            cfg.tls = Some(id.acceptor);
            tls_dir = Some(dir);
        }
        cfg.consent = opts.consent.clone();
        cfg.auth_failures_per_minute = opts.auth_failures_per_minute;
        cfg.observer = opts.observer.clone();
        cfg.handshake_timeout = opts.handshake_timeout;
        cfg.write_stall_timeout = opts.write_stall_timeout;
        if let Some(m) = opts.max_preauth {
            cfg.max_preauth = m;
        }
        let input = Arc::new(if opts.no_clipboard {
            RecordingInput::without_clipboard()
        } else {
            RecordingInput::default()
        });
        let sink: Arc<dyn InputSink> = input.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server-under-test")
            .enable_all()
            .build()?;
        let handle = runtime
            .spawn(server::start(cfg, Box::new(source), sink))
            .await??;
        let addr = handle.local_addrs()[0];
        Ok(TestServer {
            runtime: Some(runtime),
            handle: Some(handle),
            addr,
            control,
            input,
            password: opts.password,
            tls_fingerprint,
            _tls_dir: tls_dir,
        })
    }

    pub fn auth(&self) -> Auth {
        match &self.password {
            Some(p) => Auth::Password(p.clone()),
            None => Auth::None,
        }
    }

    /// A new well-behaved viewer that verifies every update.
    pub async fn watcher(&self) -> Result<Watcher> {
        Watcher::start(self.addr, self.auth(), self.control.clone()).await
    }

    pub async fn client(&self) -> Result<RawClient> {
        RawClient::connect(self.addr, &self.auth()).await
    }

    /// Stop the server; fails if it does not stop cleanly.
    pub async fn stop(mut self) -> Result<()> {
        let h = self.handle.take().expect("server running");
        tokio::time::timeout(WAIT, h.shutdown())
            .await
            .context("server did not shut down")??;
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stopper().stop();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------- raw I/O

/// Connect from a loopback address no other connection of this test binary
/// uses (127.0.0.0/8 is all loopback on Linux), so the server's log lines
/// for this peer are unambiguous even when ports are reused.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(
        127,
        1 + (n / 62500 % 250) as u8,
        1 + (n / 250 % 250) as u8,
        1 + (n % 250) as u8,
    );
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip.into(), 0))?;
    let s = tokio::time::timeout(WAIT, sock.connect(addr))
        .await
        .context("connect timed out")??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// How a connection ended from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Orderly close (FIN) from the server.
    Eof,
    /// The server reset the connection (RST).
    Reset,
    /// Nothing happened within the wait limit: the server did not close.
    Open,
}

/// Read everything the server sends until it closes (or `limit` passes).
pub async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, End::Open),
            Ok(Ok(0)) => return (got, End::Eof),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (got, End::Reset),
        }
    }
}

/// Read exactly `n` bytes.
pub async fn read_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .context("timed out reading from the server")??;
    Ok(b)
}

/// Send `bytes` in two writes split at `at` (0 or len: one write), with a
/// pause in between so the server reads the halves separately.
pub async fn send_split(s: &mut TcpStream, bytes: &[u8], at: usize) -> std::io::Result<()> {
    let at = if at >= bytes.len() { 0 } else { at };
    if at > 0 {
        s.write_all(&bytes[..at]).await?;
        s.flush().await?;
        tokio::time::sleep(SPLIT_PAUSE).await;
    }
    s.write_all(&bytes[at..]).await?;
    s.flush().await
}

/// Split points for a message of `len` bytes: every byte boundary for
/// messages up to 128 bytes; for longer ones every boundary in the first
/// and last 40 bytes plus evenly spaced ones in between.
pub fn split_points(len: usize) -> Vec<usize> {
    if len <= 128 {
        return (1..len).collect();
    }
    let mut v: Vec<usize> = (1..40).chain(len - 40..len).collect();
    let step = (len / 32).max(1);
    v.extend((40..len - 40).step_by(step));
    v.sort_unstable();
    v.dedup();
    v
}

/// Run `f(i)` for every item with at most `parallel` running at once;
/// return the first error (with the item's label).
pub async fn for_each_parallel<T, F, Fut>(items: Vec<T>, parallel: usize, f: F) -> Result<()>
where
    T: std::fmt::Debug + Clone + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        let permit = sem.clone().acquire_owned().await?;
        let f = f.clone();
        set.spawn(async move {
            let label = format!("{item:?}");
            let r = f(item).await.with_context(|| label);
            drop(permit);
            r
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub fn encode(msgs: &[ClientMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_client_message(m, &mut out);
    }
    out
}

// ---------------------------------------------------------------- client

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Password(Vec<u8>),
}

/// A server-to-client message as decoded by [`RawClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// A FramebufferUpdate (already applied to the client's framebuffer).
    Update(Vec<UpdateRect>),
    ColourMap {
        first: u16,
        colours: Vec<[u16; 3]>,
    },
    Bell,
    CutText(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateRect {
    pub rect: Rect,
    pub encoding: i32,
}

pub struct RawClient {
    pub stream: TcpStream,
    pub width: u16,
    pub height: u16,
    pub server_pf: PixelFormat,
    pub pf: PixelFormat,
    pub name: String,
    /// Pixel values in `pf`, row-major, `width * height`.
    pub fb: Vec<u32>,
    /// The colour map as last set by the server (16-bit channels).
    pub colour_map: Vec<[u16; 3]>,
    pub updates: u64,
}

impl RawClient {
    /// Connect and complete the 3.8 handshake (shared session).
    pub async fn connect(addr: SocketAddr, auth: &Auth) -> Result<RawClient> {
        let mut s = connect(addr).await?;
        let peer = s.local_addr()?;
        explain(peer, handshake(&mut s, auth, true).await)?;
        explain(peer, Self::after_server_init(s).await)
    }

    /// Read ServerInit on a stream whose handshake is done up to ClientInit.
    pub async fn after_server_init(mut s: TcpStream) -> Result<RawClient> {
        let head = read_n(&mut s, 24).await?;
        let width = u16::from_be_bytes([head[0], head[1]]);
        let height = u16::from_be_bytes([head[2], head[3]]);
        ensure!(
            width <= CLIENT_MAX_EDGE && height <= CLIENT_MAX_EDGE,
            "ServerInit size {width}x{height}"
        );
        let mut pfb = [0u8; 16];
        pfb.copy_from_slice(&head[4..20]);
        let server_pf = PixelFormat::from_bytes(&pfb);
        let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
        ensure!(name_len <= 4096, "desktop name of {name_len} bytes");
        let name = String::from_utf8_lossy(&read_n(&mut s, name_len as usize).await?).into_owned();
        Ok(RawClient {
            stream: s,
            width,
            height,
            server_pf,
            pf: server_pf,
            name,
            fb: vec![0; width as usize * height as usize],
            colour_map: vec![[0; 3]; 256],
            updates: 0,
        })
    }

    pub async fn send(&mut self, m: &ClientMessage) -> Result<()> {
        if let ClientMessage::SetPixelFormat(pf) = m {
            self.pf = *pf;
        }
        self.send_raw(&encode(std::slice::from_ref(m))).await
    }

    pub async fn send_raw(&mut self, b: &[u8]) -> Result<()> {
        self.stream.write_all(b).await?;
        Ok(())
    }

    pub async fn set_encodings(&mut self, e: &[i32]) -> Result<()> {
        self.send(&ClientMessage::SetEncodings(e.to_vec())).await
    }

    pub async fn request(&mut self, incremental: bool, rect: Rect) -> Result<()> {
        self.send(&ClientMessage::FramebufferUpdateRequest { incremental, rect })
            .await
    }

    pub async fn request_full(&mut self, incremental: bool) -> Result<()> {
        let r = Rect::new(0, 0, self.width, self.height);
        self.request(incremental, r).await
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        read_n(&mut self.stream, n).await
    }

    async fn u8(&mut self) -> Result<u8> {
        Ok(self.read_exact(1).await?[0])
    }
    async fn u16(&mut self) -> Result<u16> {
        let b = self.read_exact(2).await?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    async fn u32(&mut self) -> Result<u32> {
        let b = self.read_exact(4).await?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Read one server message; `Ok(None)` when the server closed cleanly
    /// between messages.
    pub async fn read_message(&mut self) -> Result<Option<ServerMessage>> {
        let mut t = [0u8; 1];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut t))
            .await
            .context("timed out waiting for a server message")??;
        if n == 0 {
            return Ok(None);
        }
        let m = match t[0] {
            0 => ServerMessage::Update(self.read_update().await?),
            1 => {
                let _pad = self.u8().await?;
                let first = self.u16().await?;
                let count = self.u16().await?;
                ensure!(
                    first as usize + count as usize <= 256,
                    "colour map entries {first}+{count} beyond 256"
                );
                let raw = self.read_exact(count as usize * 6).await?;
                let colours: Vec<[u16; 3]> = raw
                    .chunks_exact(6)
                    .map(|c| {
                        [
                            u16::from_be_bytes([c[0], c[1]]),
                            u16::from_be_bytes([c[2], c[3]]),
                            u16::from_be_bytes([c[4], c[5]]),
                        ]
                    })
                    .collect();
                self.colour_map[first as usize..first as usize + colours.len()]
                    .copy_from_slice(&colours);
                ServerMessage::ColourMap { first, colours }
            }
            2 => ServerMessage::Bell,
            3 => {
                self.read_exact(3).await?;
                let len = self.u32().await?;
                ensure!(len <= CLIENT_MAX_TEXT, "server cut text of {len} bytes");
                ServerMessage::CutText(self.read_exact(len as usize).await?)
            }
            other => bail!("unknown server message type {other}"),
        };
        Ok(Some(m))
    }

    /// Read messages until the next FramebufferUpdate and return its rectangles.
    pub async fn next_update(&mut self) -> Result<Vec<UpdateRect>> {
        loop {
            match self.read_message().await? {
                Some(ServerMessage::Update(r)) => return Ok(r),
                Some(_) => {}
                None => bail!("server closed the connection"),
            }
        }
    }

    async fn read_update(&mut self) -> Result<Vec<UpdateRect>> {
        let _pad = self.u8().await?;
        let n = self.u16().await?;
        let mut rects = Vec::new();
        for _ in 0..n {
            let x = self.u16().await?;
            let y = self.u16().await?;
            let w = self.u16().await?;
            let h = self.u16().await?;
            let e = self.u32().await? as i32;
            let rect = Rect::new(x, y, w, h);
            rects.push(UpdateRect { rect, encoding: e });
            match e {
                enc::RAW => {
                    ensure!(
                        rect.right() <= self.width as u32 && rect.bottom() <= self.height as u32,
                        "raw rectangle {rect:?} outside the {}x{} framebuffer",
                        self.width,
                        self.height
                    );
                    let bpp = self.pf.bytes_per_pixel();
                    ensure!(
                        matches!(bpp, 1 | 2 | 4),
                        "client pixel format {:?}",
                        self.pf
                    );
                    let data = self.read_exact(rect.area() * bpp).await?;
                    let fbw = self.width as usize;
                    for (i, px) in data.chunks_exact(bpp).enumerate() {
                        let xx = x as usize + i % w as usize;
                        let yy = y as usize + i / w as usize;
                        self.fb[yy * fbw + xx] = self.pf.read_pixel(px);
                    }
                }
                enc::DESKTOP_SIZE => self.resize(w, h)?,
                enc::EXTENDED_DESKTOP_SIZE => {
                    let screens = self.u8().await?;
                    self.read_exact(3).await?;
                    self.read_exact(16 * screens as usize).await?;
                    self.resize(w, h)?;
                }
                enc::DESKTOP_NAME => {
                    let len = self.u32().await?;
                    ensure!(len <= 4096, "desktop name of {len} bytes");
                    let b = self.read_exact(len as usize).await?;
                    self.name = String::from_utf8_lossy(&b).into_owned();
                }
                enc::LAST_RECT => break,
                other => bail!("unexpected encoding {other} in rectangle {rect:?}"),
            }
        }
        self.updates += 1;
        Ok(rects)
    }

    fn resize(&mut self, w: u16, h: u16) -> Result<()> {
        ensure!(
            w > 0 && h > 0 && w <= CLIENT_MAX_EDGE && h <= CLIENT_MAX_EDGE,
            "new desktop size {w}x{h}"
        );
        if (w, h) != (self.width, self.height) {
            self.width = w;
            self.height = h;
            self.fb = vec![0; w as usize * h as usize];
        }
        Ok(())
    }

    /// Does the framebuffer hold exactly frame `n` of the test pattern (at
    /// the current size, translated into the client's pixel format)?
    pub fn shows_frame(&self, n: u64) -> bool {
        self.matches(&expected_values(self.width, self.height, n, &self.pf))
    }

    /// The newest frame in `lo..=hi` (at most 64 tried) the framebuffer
    /// shows exactly. Runs off the async workers (rendering is CPU-heavy in
    /// debug builds and would starve other tasks).
    pub fn find_frame(&self, lo: u64, hi: u64) -> Option<u64> {
        tokio::task::block_in_place(|| (lo..=hi).rev().take(64).find(|&n| self.shows_frame(n)))
    }

    fn matches(&self, expected: &[u32]) -> bool {
        self.fb == expected
    }

    /// Read until the server closes; fails if it resets or does not close.
    pub async fn expect_close(&mut self) -> Result<Vec<u8>> {
        let (got, end) = read_to_close(&mut self.stream, WAIT).await;
        ensure!(
            end == End::Eof,
            "expected an orderly close, got {end:?} after {} bytes",
            got.len()
        );
        Ok(got)
    }
}

/// The test pattern's frame `n` as pixel values in `pf`. Rendered frames
/// are cached process-wide (the many parallel connections of a test all
/// compare against the same few frames).
pub fn expected_values(w: u16, h: u16, n: u64, pf: &PixelFormat) -> Arc<Vec<u32>> {
    type Key = (u16, u16, u64, [u8; 16]);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Vec<u32>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (w, h, n, pf.to_bytes());
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let v: Arc<Vec<u32>> = Arc::new(
        render(w, h, n)
            .pixels()
            .map(|&p| pf.from_native(p))
            .collect(),
    );
    let mut c = cache.lock().unwrap();
    // At most ~8 MiB of frames (memory tests measure this process).
    let held: usize = c.values().map(|v| v.len() * 4).sum();
    if held + v.len() * 4 > 8 << 20 && !c.is_empty() {
        // Keep the newest frames: tests only move forward in time.
        let mut ns: Vec<u64> = c.keys().map(|k| k.2).collect();
        ns.sort_unstable();
        let cut = ns[ns.len() / 2];
        c.retain(|k, _| k.2 > cut);
    }
    c.insert(key, v.clone());
    v
}

/// The client side of the 3.8 handshake up to and including ClientInit.
pub async fn handshake(s: &mut TcpStream, auth: &Auth, shared: bool) -> Result<()> {
    let v = read_n(s, 12).await?;
    ensure!(v == b"RFB 003.008\n", "server version {:?}", v);
    s.write_all(b"RFB 003.008\n").await?;
    let n = read_n(s, 1).await?[0];
    ensure!(n > 0, "server offered no security types");
    let types = read_n(s, n as usize).await?;
    match auth {
        Auth::None => {
            ensure!(types.contains(&1), "None not offered: {types:?}");
            s.write_all(&[1]).await?;
        }
        Auth::Password(p) => {
            ensure!(types.contains(&2), "VNC auth not offered: {types:?}");
            s.write_all(&[2]).await?;
            let c = read_n(s, 16).await?;
            let mut challenge = [0u8; 16];
            challenge.copy_from_slice(&c);
            let r = vnc_auth_response(&VncPassword::new(p), &challenge);
            s.write_all(&r).await?;
        }
    }
    let result = read_n(s, 4).await?;
    ensure!(result == [0, 0, 0, 0], "security result {result:?}");
    s.write_all(&[shared as u8]).await?;
    Ok(())
}

// ---------------------------------------------------------------- watcher

/// A well-behaved viewer running in its own task: it asks for updates over
/// and over (incremental after the first), applies them, and checks after
/// every update that its framebuffer is exactly some frame of the test
/// pattern. It supports DesktopSize and ExtendedDesktopSize.
pub struct Watcher {
    updates: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<u64>>,
}

impl Watcher {
    pub async fn start(addr: SocketAddr, auth: Auth, control: PatternControl) -> Result<Watcher> {
        let mut c = RawClient::connect(addr, &auth).await?;
        c.set_encodings(&[enc::RAW, enc::EXTENDED_DESKTOP_SIZE, enc::DESKTOP_SIZE])
            .await?;
        let peer = c.stream.local_addr()?;
        let updates = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let (stop, stop_rx) = watch::channel(false);
        let (u, f) = (updates.clone(), failure.clone());
        let task = tokio::spawn(async move {
            let r = explain(peer, watch_loop(c, control, u, stop_rx).await);
            if let Err(e) = &r {
                *f.lock().unwrap() = Some(format!("{e:#}"));
            }
            r
        });
        let w = Watcher {
            updates,
            failure,
            stop,
            task,
        };
        // It must be receiving before any attack starts.
        w.wait_for_more(2).await?;
        Ok(w)
    }

    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::SeqCst)
    }

    /// Wait until `more` further verified updates have arrived.
    pub async fn wait_for_more(&self, more: u64) -> Result<()> {
        let target = self.updates() + more;
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.updates() < target {
            if self.task.is_finished() {
                bail!(
                    "the watcher stopped after {} updates: {}",
                    self.updates(),
                    self.failure
                        .lock()
                        .unwrap()
                        .as_deref()
                        .unwrap_or("no error")
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the watcher received no new update (stuck at {})",
                    self.updates()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stop and return how many verified updates arrived; fails if any
    /// update was wrong or the connection broke.
    pub async fn finish(self) -> Result<u64> {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .context("watcher did not stop")??
    }
}

async fn watch_loop(
    mut c: RawClient,
    control: PatternControl,
    updates: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut last_n = 0u64;
    let mut incremental = false;
    while !*stop.borrow() {
        c.request_full(incremental).await?;
        // A size change comes in an update of its own (no pixel data); the
        // pixels follow in the next update without another request.
        loop {
            let rects = c.next_update().await?;
            let size_only = !rects.is_empty()
                && rects.iter().all(|r| {
                    r.encoding == enc::DESKTOP_SIZE || r.encoding == enc::EXTENDED_DESKTOP_SIZE
                });
            if !size_only {
                break;
            }
        }
        incremental = true;
        // The update was built from a published frame no newer than the
        // pattern's current frame number and no older than the last match.
        let hi = control.frame();
        let found = c.find_frame(last_n, hi);
        let Some(n) = found else {
            bail!(
                "after update {} the viewer's {}x{} framebuffer is no frame in {last_n}..={hi}",
                c.updates,
                c.width,
                c.height
            );
        };
        last_n = n;
        updates.fetch_add(1, Ordering::SeqCst);
    }
    Ok(updates.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------- logs

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap();
        // Bounded: a runaway log must not eat the machine's memory.
        if v.len() < 64 << 20 {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture the server's tracing output (info and above) of this test binary.
pub fn init_log_capture() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buf = log_buffer().clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(buf.clone()))
            .try_init();
    });
}

/// The captured log lines that mention `peer` (the client's local address).
pub fn log_lines_for(peer: SocketAddr) -> Vec<String> {
    let needle = format!("peer=Some({peer})");
    let v = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&v)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// Add the server's log lines about `peer` to an error, for diagnosis.
pub fn explain<T>(peer: SocketAddr, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("server log for {peer}:\n{}", log_lines_for(peer).join("\n")))
}

/// Wait until the server logged the end of `peer`'s session, and return that line.
pub async fn session_end_log(peer: SocketAddr) -> Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(l) = log_lines_for(peer)
            .into_iter()
            .find(|l| l.contains("session ended"))
        {
            return Ok(l);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!("no 'session ended' log line for {peer}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Print a note to the test output (shown with --nocapture).
pub fn note(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}
