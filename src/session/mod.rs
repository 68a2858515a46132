//! One tokio task per viewer: drives the sans-IO [`ServerConnection`] over a
//! socket, keeps the viewer's state, paces updates, and never lets a slow
//! viewer hold up anyone else (its writes go through its own writer task,
//! and an update is only built when the previous one has left).

pub mod update;

use crate::input::InputSink;
use crate::rfb::messages::write_server_cut_text;
use crate::rfb::{
    ClientMessage, Event, PixelFormat, ProtocolError, SecurityType, ServerConnection,
};
use crate::security::{Authenticator, Consent, Principal, Rights};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
pub use update::{Published, ViewerState};

/// Why a session ended (journal-friendly names via `as_str`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    ViewerClosed,
    ServerStopped,
    AuthFailed,
    Kicked,
    /// The server would not start the session (e.g. it could not be journaled).
    Refused,
    HandshakeTimeout,
    Stalled,
    ProtocolError(String),
    SourceGone(String),
    Io(String),
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::ViewerClosed => "viewer closed",
            EndReason::ServerStopped => "server stopped",
            EndReason::AuthFailed => "auth failed",
            EndReason::Kicked => "kicked",
            EndReason::Refused => "refused",
            EndReason::HandshakeTimeout => "handshake timeout",
            EndReason::Stalled => "viewer stalled",
            EndReason::ProtocolError(_) => "protocol error",
            EndReason::SourceGone(_) => "screen source gone",
            EndReason::Io(_) => "network error",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::ProtocolError(s) | EndReason::SourceGone(s) | EndReason::Io(s) => {
                write!(f, "{}: {}", self.as_str(), s)
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

/// Per-session settings, shared by all sessions of a server.
pub struct SessionConfig {
    pub security: Vec<SecurityType>,
    pub authenticator: Option<Arc<dyn Authenticator>>,
    pub desktop_name: String,
    pub view_only: bool,
    pub handshake_timeout: Duration,
    pub write_stall_timeout: Duration,
}

/// What the server learns about a session while it runs.
#[derive(Clone, Debug, Default)]
pub struct SessionInfo {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub version: Option<&'static str>,
    pub security: Option<&'static str>,
    pub principal: Option<Principal>,
    pub shared: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub updates_sent: u64,
    /// What the viewer may do right now.
    pub rights: Rights,
    /// The local user's answer, once asked.
    pub consent: Consent,
    /// The journal's record of this session, once started.
    pub record: Option<i64>,
}

/// Things worth recording that happen during a session (metadata only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Clipboard text crossed; only the direction and size are reported.
    Clipboard { to_viewer: bool, bytes: usize },
    /// The viewer was told about a new desktop size.
    Resize { width: u16, height: u16 },
    /// The local user answered (or did not); `rights` is what was granted.
    Consent { consent: Consent, rights: Rights },
    /// Rights changed during the session; `by` says who changed them.
    RightsChange { rights: Rights, by: String },
}

/// Things worth recording about the server itself rather than one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerNotice {
    /// The TLS certificate viewers will see (SHA-256 of its DER form, hex),
    /// and whether it was generated on this start.
    TlsCertificate { sha256: String, generated: bool },
    /// `--insecure`: bare None/VNC authentication offered on these
    /// non-loopback addresses.
    Insecure { addresses: Vec<String> },
}

/// Hears about sessions: the ticket journal implements this. Calls are
/// short and synchronous.
pub trait SessionObserver: Send + Sync {
    /// After authentication and ClientInit, before ServerInit: record the
    /// start and return the record id. An error refuses the viewer, so no
    /// one sees the screen without a committed record.
    fn session_starting(&self, info: &SessionInfo) -> Result<i64, String>;
    /// Authentication failed or was refused before it could succeed
    /// (wrong password, a type that was not offered, a locked-out address,
    /// a rejected consent). `reason` is the text the viewer was sent.
    fn auth_failed(&self, info: &SessionInfo, reason: &str);
    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent);
    fn session_ended(&self, info: &SessionInfo, reason: &EndReason);
    /// Something about the server (its certificate, its policy).
    fn server_notice(&self, _notice: &ServerNotice) {}
}

/// Calls from a session to the server that owns it.
pub trait SessionHost: Send + Sync {
    /// Authentication passed and ClientInit arrived. The server may
    /// disconnect other viewers (non-shared) or refuse (returns `false`).
    /// Runs before ServerInit is sent, so a journal row can be committed first.
    fn session_starting(&self, info: &mut SessionInfo) -> bool;
    fn auth_failed(&self, info: &SessionInfo, reason: &str);
    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent);
    fn session_ended(&self, info: &SessionInfo, reason: &EndReason);
}

/// Messages a server sends into a running session.
#[derive(Debug, Clone)]
pub enum Control {
    Kick,
    Shutdown,
    ServerCutText(Vec<u8>),
}

/// What every session of a server shares.
#[derive(Clone)]
pub struct SessionContext {
    pub cfg: Arc<SessionConfig>,
    pub host: Arc<dyn SessionHost>,
    pub input: Arc<dyn InputSink>,
    /// The capture's latest frame.
    pub frames: watch::Receiver<Arc<Published>>,
}

/// Something held while a connection is in the handshake (the server's
/// pre-auth slot); dropped once the viewer has authenticated.
pub type PreauthSlot = Box<dyn Send + Sync>;

/// Run one session to its end. `preauth_permit` is released once the viewer
/// has authenticated.
pub async fn run_session<S>(
    stream: S,
    info: SessionInfo,
    ctx: SessionContext,
    control: mpsc::Receiver<Control>,
    preauth_permit: Option<PreauthSlot>,
) -> EndReason
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let host = ctx.host.clone();
    let mut s = Session {
        info,
        cfg: ctx.cfg,
        host: ctx.host,
        input: ctx.input,
        frames: ctx.frames,
        control,
        preauth_permit,
        started: false,
        held: HeldInput::default(),
    };
    let reason = s.run(stream).await;
    s.held.release_all(s.input.as_ref());
    if s.started {
        let (info, r) = (s.info.clone(), reason.clone());
        let _ = tokio::task::spawn_blocking(move || host.session_ended(&info, &r)).await;
    }
    match &reason {
        EndReason::ViewerClosed | EndReason::ServerStopped | EndReason::Kicked => {
            info!(session = s.info.id, peer = ?s.info.peer, %reason, "session ended")
        }
        _ => warn!(session = s.info.id, peer = ?s.info.peer, %reason, "session ended"),
    }
    reason
}

struct Session {
    info: SessionInfo,
    cfg: Arc<SessionConfig>,
    host: Arc<dyn SessionHost>,
    input: Arc<dyn InputSink>,
    frames: watch::Receiver<Arc<Published>>,
    control: mpsc::Receiver<Control>,
    preauth_permit: Option<PreauthSlot>,
    started: bool,
    held: HeldInput,
}

/// Keys and buttons a viewer holds down, released when it goes away so a
/// dropped connection never leaves Ctrl or a mouse button stuck.
#[derive(Default)]
struct HeldInput {
    keys: Vec<u32>,
    buttons: u8,
    pos: (u16, u16),
}

/// Held keys tracked at most (more than any keyboard can hold).
const MAX_HELD_KEYS: usize = 32;

impl HeldInput {
    fn key(&mut self, down: bool, keysym: u32) {
        if down {
            if !self.keys.contains(&keysym) && self.keys.len() < MAX_HELD_KEYS {
                self.keys.push(keysym);
            }
        } else {
            self.keys.retain(|&k| k != keysym);
        }
    }
    fn pointer(&mut self, buttons: u8, x: u16, y: u16) {
        self.buttons = buttons;
        self.pos = (x, y);
    }
    fn release_all(&mut self, input: &dyn InputSink) {
        for k in self.keys.drain(..).rev() {
            input.key(false, k);
        }
        if self.buttons != 0 {
            input.pointer(0, self.pos.0, self.pos.1);
            self.buttons = 0;
        }
    }
}

/// Output buffers allowed in flight to the writer task.
const WRITE_QUEUE: usize = 4;

impl Session {
    async fn run<S>(&mut self, stream: S) -> EndReason
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let (done_tx, mut done_rx) = watch::channel(0u64);
        let stall = self.cfg.write_stall_timeout;
        let writer = tokio::spawn(writer_task(wr, rx, done_tx, stall));
        let mut queued: u64 = 0;

        let mut conn = ServerConnection::new(&self.cfg.security);
        let handshake_deadline = tokio::time::Instant::now() + self.cfg.handshake_timeout;
        let mut viewer: Option<ViewerState> = None;
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames_dirty = true;

        let reason = 'main: loop {
            // 1. Everything the protocol core has to say goes out first.
            if conn.has_output() {
                let out = conn.take_output();
                self.info.bytes_out += out.len() as u64;
                queued += 1;
                if tx.send(out).await.is_err() {
                    break 'main writer_reason(writer).await;
                }
            }
            // 2. An update, when one is wanted and the previous one has left.
            if let Some(v) = viewer.as_mut() {
                let idle = *done_rx.borrow() == queued;
                if idle && v.has_request() && frames_dirty {
                    let latest = self.frames.borrow_and_update().clone();
                    let mut out = Vec::new();
                    let size_before = v.viewer_size();
                    match v.build_update(&latest, &mut out) {
                        Ok(true) => {
                            let size = v.viewer_size();
                            if size != size_before {
                                self.host.session_event(
                                    &self.info,
                                    &SessionEvent::Resize { width: size.0, height: size.1 },
                                );
                            }
                            self.info.updates_sent = v.updates_sent;
                            self.info.bytes_out += out.len() as u64;
                            queued += 1;
                            if tx.send(out).await.is_err() {
                                break 'main writer_reason(writer).await;
                            }
                        }
                        Ok(false) => frames_dirty = false,
                        Err(e) => {
                            break 'main EndReason::ProtocolError(format!(
                                "{e:?}: the desktop was resized and the viewer does not support DesktopSize"
                            ))
                        }
                    }
                    continue;
                }
            }

            let deadline = if conn.is_normal() {
                None
            } else {
                Some(handshake_deadline)
            };
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => break 'main if conn.is_normal() { EndReason::ViewerClosed } else {
                            EndReason::ProtocolError(ProtocolError::Eof("handshake").to_string())
                        },
                        Ok(n) => n,
                        Err(e) => break 'main EndReason::Io(e.to_string()),
                    };
                    self.info.bytes_in += n as u64;
                    if let Err(e) = conn.receive(&buf[..n]) {
                        break 'main EndReason::ProtocolError(e.to_string());
                    }
                    loop {
                        match conn.poll_event() {
                            Ok(Some(ev)) => {
                                if let Err(reason) = self.handle_event(ev, &mut conn, &mut viewer).await {
                                    // Let the failure reason reach the client.
                                    if conn.has_output() {
                                        queued += 1;
                                        queued += 1;
                                    let _ = tx.send(conn.take_output()).await;
                                    }
                                    break 'main reason;
                                }
                                if viewer.as_ref().is_some_and(|v| v.has_request()) {
                                    frames_dirty = true;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                if conn.has_output() {
                                    queued += 1;
                                    let _ = tx.send(conn.take_output()).await;
                                }
                                break 'main match e {
                                    ProtocolError::AuthFailed => EndReason::AuthFailed,
                                    e => EndReason::ProtocolError(e.to_string()),
                                };
                            }
                        }
                    }
                }
                r = self.frames.changed() => {
                    if r.is_err() {
                        break 'main EndReason::SourceGone("capture stopped".into());
                    }
                    frames_dirty = true;
                }
                r = done_rx.changed() => {
                    if r.is_err() {
                        break 'main writer_reason(writer).await;
                    }
                }
                c = self.control.recv() => match c {
                    Some(Control::Kick) => break 'main EndReason::Kicked,
                    Some(Control::Shutdown) | None => break 'main EndReason::ServerStopped,
                    Some(Control::ServerCutText(t)) => {
                        // View-only viewers get no clipboard: it may hold what the customer copied.
                        if conn.is_normal() && !self.cfg.view_only {
                            self.host.session_event(&self.info, &SessionEvent::Clipboard { to_viewer: true, bytes: t.len() });
                            let mut out = Vec::new();
                            write_server_cut_text(&t, &mut out);
                            queued += 1;
                            if tx.send(out).await.is_err() {
                                break 'main writer_reason(writer).await;
                            }
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => break 'main EndReason::HandshakeTimeout,
            }
        };
        drop(tx);
        // Give queued bytes (e.g. a failure reason) a moment to leave.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = done_rx.wait_for(|d| *d >= queued).await;
        })
        .await;
        reason
    }

    /// Runs the host's (journal's) and the authenticator's synchronous work
    /// on the blocking pool, so a busy database never stalls other sessions.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        tokio::task::spawn_blocking(f).await.ok()
    }

    async fn handle_event(
        &mut self,
        ev: Event,
        conn: &mut ServerConnection,
        viewer: &mut Option<ViewerState>,
    ) -> Result<(), EndReason> {
        match ev {
            Event::VersionAgreed(v) => {
                self.info.version = Some(v.as_str());
                debug!(
                    session = self.info.id,
                    version = v.as_str(),
                    "version agreed"
                );
            }
            Event::SecurityChosen(t) => self.info.security = Some(t.name()),
            Event::VncAuthResponse {
                challenge,
                response,
            } => {
                let principal = match self.cfg.authenticator.clone() {
                    Some(a) => Self::blocking(move || a.verify_vnc(&challenge, &response))
                        .await
                        .flatten(),
                    None => None,
                };
                let ok = principal.is_some();
                self.info.principal = principal;
                if !ok {
                    let (host, info) = (self.host.clone(), self.info.clone());
                    Self::blocking(move || host.auth_failed(&info, "authentication failed")).await;
                }
                conn.auth_verdict(ok).map_err(|e| match e {
                    ProtocolError::AuthFailed => EndReason::AuthFailed,
                    e => EndReason::ProtocolError(e.to_string()),
                })?;
            }
            Event::ClientInit { shared } => {
                self.info.shared = shared;
                if self.info.principal.is_none() {
                    self.info.principal = Some(Principal {
                        ticket: None,
                        credential: "none".into(),
                        ..Default::default()
                    });
                }
                self.info.rights = if self.cfg.view_only {
                    Rights::VIEW_ONLY
                } else {
                    Rights::FULL
                };
                let (host, mut info) = (self.host.clone(), self.info.clone());
                let (accepted, info) =
                    Self::blocking(move || (host.session_starting(&mut info), info))
                        .await
                        .ok_or_else(|| EndReason::ProtocolError("session start failed".into()))?;
                self.info = info;
                if !accepted {
                    return Err(EndReason::Refused);
                }
                self.started = true;
                let f = self.frames.borrow().frame.clone();
                conn.server_init(
                    f.width,
                    f.height,
                    &PixelFormat::NATIVE,
                    &self.cfg.desktop_name,
                )
                .map_err(|e| EndReason::ProtocolError(e.to_string()))?;
                *viewer = Some(ViewerState::new(f.width, f.height));
                // Authenticated: this connection no longer counts against the pre-auth limit.
                self.preauth_permit = None;
            }
            Event::Message(m) => {
                let v = viewer
                    .as_mut()
                    .ok_or_else(|| EndReason::ProtocolError("message before ServerInit".into()))?;
                self.handle_message(m, v);
            }
        }
        Ok(())
    }

    fn handle_message(&mut self, m: ClientMessage, v: &mut ViewerState) {
        match m {
            ClientMessage::SetPixelFormat(pf) => v.set_pixel_format(pf),
            ClientMessage::SetEncodings(list) => v.set_encodings(&list),
            ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
                v.request(incremental, rect)
            }
            ClientMessage::KeyEvent { down, keysym } => {
                if !self.cfg.view_only {
                    self.held.key(down, keysym);
                    self.input.key(down, keysym)
                }
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                if !self.cfg.view_only {
                    self.held.pointer(buttons, x, y);
                    self.input.pointer(buttons, x, y)
                }
            }
            ClientMessage::ClientCutText(t) => {
                if !self.cfg.view_only {
                    self.host.session_event(
                        &self.info,
                        &SessionEvent::Clipboard {
                            to_viewer: false,
                            bytes: t.len(),
                        },
                    );
                    // Latin-1 maps byte-for-byte onto the first 256 code points.
                    let text: String = t.iter().map(|&b| b as char).collect();
                    self.input.cut_text(&text)
                }
            }
            ClientMessage::SetDesktopSize { .. } => {
                // The desktop size is the customer's; viewers may not change it.
                v.resize_reply_due = Some(update::ResizeReply { status: 1 });
                v.request(true, crate::framebuffer::Rect::default());
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn writer_reason(writer: tokio::task::JoinHandle<EndReason>) -> EndReason {
    writer
        .await
        .unwrap_or_else(|e| EndReason::Io(format!("writer task: {e}")))
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    done: watch::Sender<u64>,
    stall: Duration,
) -> EndReason {
    let mut n = 0u64;
    while let Some(buf) = rx.recv().await {
        match tokio::time::timeout(stall, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return EndReason::Io(e.to_string()),
            Err(_) => return EndReason::Stalled,
        }
        n += 1;
        done.send_replace(n);
    }
    let _ = wr.shutdown().await;
    EndReason::ViewerClosed
}
