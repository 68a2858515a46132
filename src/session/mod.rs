//! One tokio task per viewer: drives the sans-IO [`Handshake`] over a
//! socket, keeps the viewer's state, paces updates, and never lets a slow
//! viewer hold up anyone else (its writes go through its own writer task,
//! and an update is only built when the previous one has left).

pub mod clipboard;
mod congestion;
pub mod consent;
mod desktop_size;
mod flow;
pub mod pointer;
mod transport;
pub mod update;

use crate::input::InputSink;
use crate::rfb::{
    limits, ApprovalDue, ClientMessage, Established, Event, Handshake, PixelFormat, ProtocolError,
    SecurityType, ServerMessages, UpdateBuf, VeNCryptSubtype, VerdictDue,
};
use crate::security::throttle::{Attempt, AuthThrottle, GuessBudget, Refusal, Token};
use crate::security::{Authenticator, Consent, Principal, Rights};
use consent::{ConsentAnswer, ConsentPolicy, ConsentRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
pub use transport::{Rewind, TlsAcceptor, Transport};
pub use update::{Published, ViewerState};

/// Why a session ended (journal-friendly names via `as_str`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    ViewerClosed,
    ServerStopped,
    AuthFailed,
    Kicked,
    /// Its ticket was closed while it ran.
    TicketClosed,
    /// The person at the screen stopped sharing (the tray's "Stop sharing").
    StoppedAtScreen,
    /// Refused before the session started: a type that was not offered,
    /// a failed TLS handshake, the local user said no, it could not be
    /// journaled. The text says which.
    Refused(String),
    HandshakeTimeout,
    Stalled,
    /// The viewer broke the protocol (typed, so callers can match on it).
    ProtocolError(ProtocolError),
    SourceGone(String),
    Io(String),
    /// A FramebufferUpdate the protocol core refused: a bug of the
    /// server, never the viewer's doing; ending the session keeps the
    /// viewer from reading a stream that lost its place.
    UpdateRefused(crate::rfb::UpdateRefused),
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::ViewerClosed => "viewer closed",
            EndReason::ServerStopped => "server stopped",
            EndReason::AuthFailed => "auth failed",
            EndReason::Kicked => "kicked",
            EndReason::TicketClosed => "ticket closed",
            EndReason::StoppedAtScreen => "stopped at the screen",
            EndReason::Refused(_) => "refused",
            EndReason::HandshakeTimeout => "handshake timeout",
            EndReason::Stalled => "viewer stalled",
            EndReason::ProtocolError(_) => "protocol error",
            EndReason::SourceGone(_) => "screen source gone",
            EndReason::Io(_) => "network error",
            EndReason::UpdateRefused(_) => "server error",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::ProtocolError(e) => write!(f, "{}: {}", self.as_str(), e),
            EndReason::UpdateRefused(e) => {
                write!(
                    f,
                    "{}: update refused by the protocol core: {}",
                    self.as_str(),
                    e
                )
            }
            EndReason::SourceGone(s) | EndReason::Io(s) | EndReason::Refused(s) => {
                write!(f, "{}: {}", self.as_str(), s)
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

/// The security types one listener offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityOffer {
    /// In order of preference; VeNCrypt only together with `vencrypt`.
    pub types: Vec<SecurityType>,
    /// VeNCrypt subtypes (all need TLS).
    pub vencrypt: Vec<VeNCryptSubtype>,
    /// What a viewer sending "RFB 003.889" (Screen Sharing.app) is offered
    /// instead of `types`; `None`: the same as everyone.
    pub mac: Option<Vec<SecurityType>>,
    /// Send "RFB 003.889" as the server's version (`--allow-apple-dh`),
    /// without which Screen Sharing.app falls back to RFB 3.3.
    pub apple_version: bool,
}

impl SecurityOffer {
    pub fn connection(&self) -> Handshake {
        let mut c = Handshake::new(&self.types).with_vencrypt(&self.vencrypt);
        if let Some(mac) = &self.mac {
            c = c.with_mac_offer(mac);
        }
        if self.apple_version {
            c = c.with_apple_version();
        }
        c
    }
    /// "VeNCrypt (X509Vnc, X509Plain), VNC" for logs and docs.
    pub fn describe(&self) -> String {
        self.types
            .iter()
            .map(|t| match t {
                SecurityType::VeNCrypt => format!(
                    "VeNCrypt ({})",
                    self.vencrypt
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                SecurityType::VncAuth => "VNC".into(),
                SecurityType::None => "None".into(),
                SecurityType::AppleDh => "Apple DH".into(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Per-session settings, shared by all sessions of a server.
pub struct SessionConfig {
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Per-source failures (counted when an attempt starts).
    pub throttle: Arc<AuthThrottle>,
    /// Failures a minute server-wide.
    pub budget: Arc<GuessBudget>,
    /// Pause before a failure result.
    pub failure_delay: Duration,
    /// The TLS identity VeNCrypt subtypes run over.
    pub tls: Option<TlsAcceptor>,
    pub desktop_name: String,
    /// Everybody may only watch (`--view-only`).
    pub view_only: bool,
    /// Draw the customer's pointer into viewers' pictures (session/pointer.rs).
    pub drawn_cursor: bool,
    /// Mac viewers (RFB 003.889) get Command and Control swapped
    /// (`--keyboard auto`, input/mac_keys.rs).
    pub mac_viewer_keyboard: bool,
    /// Resizes the desktop for SetDesktopSize (`--virtual`); `None`: refused.
    pub resizer: Option<Arc<dyn crate::capture::resize::DesktopResizer>>,
    pub consent: ConsentPolicy,
    /// The ticket for sessions whose credential names none (`--ticket`).
    pub ticket: Option<String>,
    pub handshake_timeout: Duration,
    pub write_stall_timeout: Duration,
}

/// How the viewer and the server found each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// The viewer connected to our listener.
    #[default]
    Inbound,
    /// We connected to a listening viewer.
    Reverse,
    /// We connected to a repeater that paired us with a viewer.
    Repeater,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Reverse => "reverse",
            Direction::Repeater => "repeater",
        }
    }
}

/// What the server learns about a session while it runs.
#[derive(Clone, Debug, Default)]
pub struct SessionInfo {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub direction: Direction,
    pub version: Option<&'static str>,
    pub security: Option<&'static str>,
    pub principal: Option<Principal>,
    pub shared: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub updates_sent: u64,
    /// Bands of updates sent from an encoding another viewer with the same
    /// settings made (see `encoding::shared`).
    pub bands_reused: u64,
    /// CopyRects sent (scrolling found by the capture, move hints).
    pub copy_rects: u64,
    /// What the viewer may do right now.
    pub rights: Rights,
    /// The local user's answer, once asked.
    pub consent: Consent,
    /// The journal's record of this session, once started.
    pub record: Option<i64>,
}

impl SessionInfo {
    /// The session's id as the journal has it (`ticketvnc sessions`
    /// lists it): the record id once started; without a journal, the
    /// connection number. Logs name started sessions by it (`session=`),
    /// connections before that by their number (`conn=`).
    pub fn session_id(&self) -> u64 {
        self.record.map_or(self.id, |r| r as u64)
    }
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
    /// Too many failed authentications: the address is refused for a while.
    Lockout { address: String, seconds: u64 },
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
    /// A wrong credential (already counted against the guessing budgets).
    fn auth_failed(&self, info: &SessionInfo, reason: &str);
    /// Something about the server (a lockout).
    fn notice(&self, notice: &ServerNotice);
    /// Refused for another reason (a type that was not offered, a failed
    /// TLS handshake, the local user said no): journaled, not counted as
    /// a guess.
    fn refused(&self, info: &SessionInfo, reason: &str);
    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent);
    fn session_ended(&self, info: &SessionInfo, reason: &EndReason);
}

/// Messages a server sends into a running session.
#[derive(Debug, Clone)]
pub enum Control {
    Kick,
    /// The session's ticket was closed: end it.
    TicketClosed,
    /// The person at the screen stopped sharing: end it.
    StopSharing,
    Shutdown,
    /// The desktop's clipboard text (UTF-8; Latin-1 for classic viewers).
    ServerCutText(String),
    /// Change what the viewer may do; `by` says who (journaled). Capped by
    /// the credential's and the server's limits.
    SetRights {
        rights: Rights,
        by: String,
    },
}

/// What every session of a server shares.
#[derive(Clone)]
pub struct SessionContext {
    pub cfg: Arc<SessionConfig>,
    /// What the listener this session came from offers.
    pub offer: Arc<SecurityOffer>,
    pub host: Arc<dyn SessionHost>,
    pub input: Arc<dyn InputSink>,
    /// The capture's latest frame.
    pub frames: watch::Receiver<Arc<Published>>,
    /// Whether any viewer wants a frame (the capture runs only then).
    pub demand: Arc<crate::capture::Demand>,
    /// Encodings shared by viewers with the same settings.
    pub shared: Arc<crate::encoding::shared::SharedEncodings>,
}

/// Something held while a connection is in the handshake (the server's
/// pre-auth slot); dropped once the viewer has authenticated.
pub type PreauthSlot = Box<dyn Send + Sync>;

/// How a session ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reason: EndReason,
    /// The viewer got ServerInit (the session was journaled as started).
    pub started: bool,
}

/// Run one session to its end. `preauth_permit` is released once the viewer
/// has authenticated.
pub async fn run_session<S>(
    stream: S,
    info: SessionInfo,
    ctx: SessionContext,
    control: mpsc::Receiver<Control>,
    preauth_permit: Option<PreauthSlot>,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let host = ctx.host.clone();
    let mut s = Session {
        info,
        cfg: ctx.cfg,
        offer: ctx.offer,
        ceiling: Rights::NONE,
        host: ctx.host,
        input: ctx.input,
        frames: ctx.frames,
        shared: ctx.shared,
        demand: ctx.demand.handle(),
        control,
        preauth_permit,
        started: false,
        held: HeldInput::default(),
        clipboard: Default::default(),
        desktop_clipboard: None,
        outbox: Vec::new(),
    };
    let reason = s.run(Box::new(stream)).await;
    s.held.release_all(s.input.as_ref());
    if s.started {
        let (info, r) = (s.info.clone(), reason.clone());
        let _ = tokio::task::spawn_blocking(move || host.session_ended(&info, &r)).await;
    }
    let (conn, peer) = (s.info.id, s.info.peer);
    let normal = matches!(
        reason,
        EndReason::ViewerClosed
            | EndReason::ServerStopped
            | EndReason::Kicked
            | EndReason::TicketClosed
            | EndReason::StoppedAtScreen
    );
    // Refusals and failures were logged (rate-limited) by the server.
    let logged = matches!(reason, EndReason::Refused(_) | EndReason::AuthFailed);
    // A started session is named by its journal id; before ServerInit
    // there is only the connection number.
    match (s.started, normal, logged) {
        (true, true, _) => {
            let (session, shared, copies) =
                (s.info.session_id(), s.info.bands_reused, s.info.copy_rects);
            info!(session, conn, ?peer, %reason, bands_reused = shared, copy_rects = copies, "session ended")
        }
        (true, false, _) => {
            let (session, shared, copies) =
                (s.info.session_id(), s.info.bands_reused, s.info.copy_rects);
            warn!(session, conn, ?peer, %reason, bands_reused = shared, copy_rects = copies, "session ended")
        }
        (false, _, true) => debug!(conn, ?peer, %reason, "session ended"),
        (false, true, false) => info!(conn, ?peer, %reason, "session ended"),
        (false, false, false) => warn!(conn, ?peer, %reason, "session ended"),
    }
    Outcome {
        reason,
        started: s.started,
    }
}

struct Session {
    info: SessionInfo,
    cfg: Arc<SessionConfig>,
    offer: Arc<SecurityOffer>,
    /// The most this session may ever get: the server's policy and the
    /// credential's own limit. Live rights changes stay inside it.
    ceiling: Rights,
    host: Arc<dyn SessionHost>,
    input: Arc<dyn InputSink>,
    frames: watch::Receiver<Arc<Published>>,
    shared: Arc<crate::encoding::shared::SharedEncodings>,
    /// This viewer's say in whether the screen is captured.
    demand: crate::capture::DemandHandle,
    control: mpsc::Receiver<Control>,
    preauth_permit: Option<PreauthSlot>,
    started: bool,
    held: HeldInput,
    /// The viewer's clipboard protocol (classic or Extended Clipboard).
    clipboard: clipboard::ViewerClipboard,
    /// The desktop's clipboard text last passed to this viewer (answers
    /// an Extended Clipboard request).
    desktop_clipboard: Option<String>,
    /// Replies decoded messages call for (clipboard), sent after them.
    outbox: Vec<u8>,
}

/// Keys and buttons a viewer holds down, released when it goes away so a
/// dropped connection never leaves Ctrl or a mouse button stuck.
#[derive(Default)]
struct HeldInput {
    keys: Vec<u32>,
    buttons: u16,
    pos: (u16, u16),
}

/// Held keys tracked at most (more than any keyboard can hold).
const MAX_HELD_KEYS: usize = 32;

impl HeldInput {
    /// Whether a press of `keysym` can be recorded.
    fn can_hold(&self, keysym: u32) -> bool {
        self.keys.len() < MAX_HELD_KEYS || self.keys.contains(&keysym)
    }
    fn key(&mut self, down: bool, keysym: u32) {
        if down {
            if !self.keys.contains(&keysym) && self.keys.len() < MAX_HELD_KEYS {
                self.keys.push(keysym);
            }
        } else {
            self.keys.retain(|&k| k != keysym);
        }
    }
    fn pointer(&mut self, buttons: u16, x: u16, y: u16) {
        self.buttons = buttons;
        self.pos = (x, y);
    }
    fn release_keys(&mut self, input: &dyn InputSink) {
        for k in self.keys.drain(..).rev() {
            input.key(false, k);
        }
    }
    fn release_buttons(&mut self, input: &dyn InputSink) {
        if self.buttons != 0 {
            self.buttons = input.pointer(0, self.pos.0, self.pos.1);
        }
    }
    fn release_all(&mut self, input: &dyn InputSink) {
        self.release_keys(input);
        self.release_buttons(input);
    }
}

/// Output buffers allowed in flight to the writer task.
const WRITE_QUEUE: usize = 4;
/// Pieces of an update being sent that may wait for the socket: the next
/// is encoded only when fewer are queued (back-pressure from the viewer's
/// link; the update is never held whole).
const STREAM_AHEAD: u64 = 1;
/// Emptied output buffers the writer hands back for reuse, and the
/// largest kept.
const SPARE_BUFFERS: usize = 2;
const SPARE_CAPACITY: usize = 1 << 20;

/// Extra time the handshake deadline gets while the local user is asked.
const CONSENT_GRACE: Duration = Duration::from_secs(5);

/// A pending consent question with its timeout (`None`: timed out).
type PendingConsent =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<ConsentAnswer>> + Send>>;

fn security_label(t: SecurityType, sub: Option<VeNCryptSubtype>) -> &'static str {
    match (t, sub) {
        (SecurityType::None, _) => "none",
        (SecurityType::VncAuth, _) => "vnc-auth",
        (SecurityType::VeNCrypt, Some(VeNCryptSubtype::X509None)) => "VeNCrypt/X509None",
        (SecurityType::VeNCrypt, Some(VeNCryptSubtype::X509Vnc)) => "VeNCrypt/X509Vnc",
        (SecurityType::VeNCrypt, Some(VeNCryptSubtype::X509Plain)) => "VeNCrypt/X509Plain",
        (SecurityType::VeNCrypt, None) => "VeNCrypt",
        (SecurityType::AppleDh, _) => "apple-dh",
    }
}

/// The security profile a viewer got, as the journal's session row has it:
/// the type (and subtype), "Mac viewer" for a client that sent RFB
/// 003.889 (Screen Sharing.app), and a downgrade named as one: a Mac
/// viewer on VNC authentication instead of Apple DH, or another viewer
/// that took Apple DH (password protected, session in clear) where
/// VeNCrypt (TLS) was offered.
fn profile_label(
    t: SecurityType,
    sub: Option<VeNCryptSubtype>,
    mac: bool,
    offered: &[SecurityType],
) -> &'static str {
    let apple_offered = offered.contains(&SecurityType::AppleDh);
    let tls_offered = offered.contains(&SecurityType::VeNCrypt);
    match (mac, t) {
        // Screen Sharing.app speaks no VeNCrypt: type 30 is its best.
        (true, SecurityType::AppleDh) => "apple-dh (Mac viewer)",
        (true, SecurityType::VncAuth) if apple_offered => {
            "vnc-auth (Mac viewer; downgrade: chose it over apple-dh)"
        }
        (true, SecurityType::VncAuth) => "vnc-auth (Mac viewer; downgrade: apple-dh not offered)",
        (true, SecurityType::None) => "none (Mac viewer)",
        (true, SecurityType::VeNCrypt) => match sub {
            Some(VeNCryptSubtype::X509None) => "VeNCrypt/X509None (Mac viewer)",
            Some(VeNCryptSubtype::X509Vnc) => "VeNCrypt/X509Vnc (Mac viewer)",
            Some(VeNCryptSubtype::X509Plain) => "VeNCrypt/X509Plain (Mac viewer)",
            None => "VeNCrypt (Mac viewer)",
        },
        (false, SecurityType::AppleDh) if tls_offered => {
            "apple-dh (downgrade: chose it over VeNCrypt)"
        }
        (false, _) => security_label(t, sub),
    }
}

/// How a protocol error ends a session.
fn protocol_end(e: ProtocolError) -> EndReason {
    match e {
        ProtocolError::AuthFailed => EndReason::AuthFailed,
        ProtocolError::Refused(r) => EndReason::Refused(r),
        e => EndReason::ProtocolError(e),
    }
}

impl Session {
    async fn run(&mut self, stream: Box<dyn Transport>) -> EndReason {
        let conn = self.offer.connection();
        let (stream, conn) = match self.handshake(stream, conn).await {
            Ok(s) => s,
            Err(reason) => return reason,
        };
        self.established(stream, conn).await
    }

    /// Send what the core has queued, within the handshake deadline.
    async fn flush(
        &mut self,
        stream: &mut Box<dyn Transport>,
        conn: &mut Handshake,
        deadline: tokio::time::Instant,
    ) -> Result<(), EndReason> {
        if !conn.has_output() {
            return Ok(());
        }
        self.write_handshake(stream, conn.take_output(), deadline)
            .await
    }

    /// Write handshake bytes within the handshake deadline.
    async fn write_handshake(
        &mut self,
        stream: &mut Box<dyn Transport>,
        out: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<(), EndReason> {
        self.info.bytes_out += out.len() as u64;
        match tokio::time::timeout_at(deadline, async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EndReason::Io(e.to_string())),
            Err(_) => Err(EndReason::HandshakeTimeout),
        }
    }

    /// Refuse with `reason`: journal it, send it (where the protocol can),
    /// and end the session.
    async fn refuse(
        &mut self,
        stream: &mut Box<dyn Transport>,
        conn: &mut Handshake,
        deadline: tokio::time::Instant,
        reason: &str,
    ) -> EndReason {
        let e = conn.reject(reason);
        let (host, info, r) = (self.host.clone(), self.info.clone(), reason.to_string());
        Self::blocking(move || host.refused(&info, &r)).await;
        let _ = self.flush(stream, conn, deadline).await;
        protocol_end(e)
    }

    /// The handshake, which owns the transport because VeNCrypt swaps it
    /// for TLS halfway. Returns once ServerInit is sent, with the
    /// connection of the normal phase.
    async fn handshake(
        &mut self,
        mut stream: Box<dyn Transport>,
        mut handshake: Handshake,
    ) -> Result<(Box<dyn Transport>, Established), EndReason> {
        // Borrowed until ClientInit, when `server_init` consumes it.
        let conn = &mut handshake;
        // Through a repeater the viewer may come minutes later: the
        // deadline starts when it first speaks (TCP keepalive watches the
        // line meanwhile).
        let waiting_for_viewer = self.info.direction == Direction::Repeater;
        let mut deadline = tokio::time::Instant::now()
            + if waiting_for_viewer {
                limits::REPEATER_WAIT
            } else {
                self.cfg.handshake_timeout
            };
        let mut spoke = false;
        let mut buf = vec![0u8; 4096];
        // The question to the person at the screen, and the right to let
        // the viewer in once they accept.
        let mut consent: Option<(PendingConsent, ApprovalDue)> = None;
        loop {
            loop {
                let ev = match conn.poll_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        let refused = !matches!(e, ProtocolError::AuthFailed);
                        if let Some(v) = conn.version() {
                            self.info.version = Some(v.as_str());
                        }
                        let _ = self.flush(&mut stream, conn, deadline).await;
                        if refused && self.info.version.is_some() {
                            // A type or subtype that was not offered and the
                            // like: journaled like any refusal.
                            let (host, info, r) =
                                (self.host.clone(), self.info.clone(), e.to_string());
                            Self::blocking(move || host.refused(&info, &r)).await;
                        }
                        return Err(protocol_end(e));
                    }
                };
                match ev {
                    Event::VersionAgreed(v) => {
                        self.info.version = Some(v.as_str());
                        if conn.is_mac_viewer() {
                            // Refusals before a type is chosen name it too.
                            self.info.security = Some("Mac viewer (RFB 003.889)");
                            info!(
                                conn = self.info.id,
                                "Mac viewer (RFB 003.889), served as 3.8"
                            );
                        }
                        debug!(conn = self.info.id, version = v.as_str(), "version agreed");
                    }
                    Event::SecurityChosen(t) => {
                        self.info.security =
                            Some(profile_label(t, None, conn.is_mac_viewer(), conn.offered()))
                    }
                    Event::VeNCryptChosen(sub) => {
                        self.info.security = Some(profile_label(
                            SecurityType::VeNCrypt,
                            Some(sub),
                            conn.is_mac_viewer(),
                            conn.offered(),
                        ))
                    }
                    Event::StartTls(due) => {
                        self.flush(&mut stream, conn, deadline).await?;
                        let Some(tls) = self.cfg.tls.clone() else {
                            let r = "VeNCrypt offered without a TLS identity";
                            return Err(self.refuse(&mut stream, conn, deadline, r).await);
                        };
                        let leftover = conn.take_unprocessed();
                        match transport::accept_tls(&tls, stream, leftover, deadline).await {
                            Ok(s) => stream = s,
                            Err(e) => {
                                // The plain stream is gone; the viewer saw TLS fail.
                                let reason = format!("TLS handshake failed: {e}");
                                let (host, info, r) =
                                    (self.host.clone(), self.info.clone(), reason.clone());
                                Self::blocking(move || host.refused(&info, &r)).await;
                                return Err(EndReason::Refused(reason));
                            }
                        }
                        debug!(conn = self.info.id, "TLS established");
                        if let Err(e) = conn.tls_established(due) {
                            return Err(protocol_end(e));
                        }
                    }
                    Event::VncAuthResponse {
                        challenge,
                        response,
                        due,
                    } => {
                        let budget = self.budget_for_check(&mut stream, conn, deadline).await?;
                        let checked = match self.cfg.authenticator.clone() {
                            Some(a) => Self::blocking(move || a.check_vnc(&challenge, &response))
                                .await
                                .unwrap_or(Ok(None)),
                            None => Ok(None),
                        };
                        let principal = match checked {
                            Ok(p) => p,
                            // Not checked at all (the journal is unreachable):
                            // no guess to count; the viewer is told why.
                            Err(reason) => {
                                drop(budget);
                                return Err(self
                                    .refuse(&mut stream, conn, deadline, &reason)
                                    .await);
                            }
                        };
                        self.verdict(&mut stream, conn, deadline, principal, budget, due)
                            .await?;
                    }
                    Event::PlainCredentials {
                        username,
                        exact,
                        password,
                        due,
                    } => {
                        // Name who tried (sanitised by the core), never the password.
                        self.info.principal = Some(Principal {
                            technician: Some(username.clone()),
                            credential: "technician account".into(),
                            ..Default::default()
                        });
                        let budget = self.budget_for_check(&mut stream, conn, deadline).await?;
                        let principal = match self.cfg.authenticator.clone() {
                            // A name that had to be cleaned matches no account.
                            Some(a) if exact => {
                                let user = username.clone();
                                Self::blocking(move || a.verify_plain(&user, password.expose()))
                                    .await
                                    .flatten()
                            }
                            _ => None,
                        };
                        self.verdict(&mut stream, conn, deadline, principal, budget, due)
                            .await?;
                    }
                    Event::AppleDhCredentials {
                        username,
                        exact,
                        password,
                        due,
                    } => {
                        // Name who tried (sanitised by the core), never the password.
                        self.info.principal = Some(Principal {
                            technician: (!username.is_empty()).then(|| username.clone()),
                            credential: "apple-dh".into(),
                            ..Default::default()
                        });
                        let budget = self.budget_for_check(&mut stream, conn, deadline).await?;
                        let checked = match (self.cfg.authenticator.clone(), password) {
                            (Some(a), Some(password)) => Self::blocking(move || {
                                a.check_apple_dh(&username, exact, password.expose())
                            })
                            .await
                            .unwrap_or(Ok(None)),
                            // A malformed block: a failed guess.
                            _ => Ok(None),
                        };
                        let principal = match checked {
                            Ok(p) => p,
                            Err(reason) => {
                                drop(budget);
                                return Err(self
                                    .refuse(&mut stream, conn, deadline, &reason)
                                    .await);
                            }
                        };
                        self.verdict(&mut stream, conn, deadline, principal, budget, due)
                            .await?;
                    }
                    Event::Authenticated(due) => {
                        let principal = self.info.principal.get_or_insert_with(|| Principal {
                            credential: "none".into(),
                            ..Default::default()
                        });
                        if principal.ticket.is_none() {
                            principal.ticket = self.cfg.ticket.clone();
                        }
                        let policy = if self.cfg.view_only {
                            Rights::VIEW_ONLY
                        } else {
                            Rights::FULL
                        };
                        self.ceiling =
                            policy.intersect(principal.max_rights.unwrap_or(Rights::FULL));
                        self.info.rights = self.ceiling;
                        match &self.cfg.consent {
                            ConsentPolicy::Auto => {
                                debug!(conn = self.info.id, "authenticated; approved by policy");
                                self.info.consent = Consent::Auto;
                                if let Err(e) = conn.approve(due) {
                                    return Err(protocol_end(e));
                                }
                            }
                            ConsentPolicy::Deny => {
                                self.info.consent = Consent::Rejected;
                                let r = "the person at the screen does not accept remote sessions";
                                return Err(self.refuse(&mut stream, conn, deadline, r).await);
                            }
                            ConsentPolicy::Ask { asker, timeout } => {
                                let req = ConsentRequest {
                                    session: self.info.id,
                                    peer: self.info.peer.map(|p| p.to_string()),
                                    ticket: principal.ticket.clone(),
                                    technician: principal.technician.clone(),
                                    rights: self.ceiling,
                                    timeout: Some(*timeout),
                                };
                                let q = asker.ask(req);
                                let t = *timeout;
                                let q: PendingConsent =
                                    Box::pin(async move { tokio::time::timeout(t, q).await.ok() });
                                consent = Some((q, due));
                                deadline =
                                    deadline.max(tokio::time::Instant::now() + t + CONSENT_GRACE);
                                info!(conn = self.info.id, "asking the person at the screen");
                            }
                        }
                    }
                    Event::ClientInit { shared, due } => {
                        self.info.shared = shared;
                        if self.cfg.mac_viewer_keyboard && conn.is_mac_viewer() {
                            // Every key of this viewer, releases included,
                            // goes through the swap (held keys stay true).
                            self.input = Arc::new(crate::input::mac_keys::MacKeyboard::new(
                                self.input.clone(),
                            ));
                            debug!(conn = self.info.id, "Mac viewer: Command acts as Control");
                        }
                        let (host, mut info) = (self.host.clone(), self.info.clone());
                        let (accepted, info) =
                            Self::blocking(move || (host.session_starting(&mut info), info))
                                .await
                                .ok_or_else(|| {
                                    EndReason::Refused("the session could not be started".into())
                                })?;
                        self.info = info;
                        if !accepted {
                            return Err(EndReason::Refused(
                                "the session could not be journaled".into(),
                            ));
                        }
                        self.started = true;
                        // Asked and answered: the hooks hear of it (refusals
                        // are journaled as such; "auto" is in the start row).
                        if self.info.consent == Consent::Accepted {
                            self.host.session_event(
                                &self.info,
                                &SessionEvent::Consent {
                                    consent: self.info.consent,
                                    rights: self.info.rights,
                                },
                            );
                        }
                        let f = self.frames.borrow().frame.clone();
                        let mut conn = handshake
                            .server_init(
                                due,
                                f.width,
                                f.height,
                                &PixelFormat::NATIVE,
                                &self.cfg.desktop_name,
                            )
                            .map_err(protocol_end)?;
                        let out = conn.take_output();
                        self.write_handshake(&mut stream, out, deadline).await?;
                        // In: this connection no longer counts against the pre-auth limit.
                        self.preauth_permit = None;
                        return Ok((stream, conn));
                    }
                }
            }
            self.flush(&mut stream, conn, deadline).await?;
            tokio::select! {
                r = stream.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return Err(EndReason::ProtocolError(ProtocolError::Eof("handshake"))),
                        Ok(n) => n,
                        Err(e) => return Err(EndReason::Io(e.to_string())),
                    };
                    self.info.bytes_in += n as u64;
                    tracing::trace!(conn = self.info.id, bytes = n, "handshake read");
                    if waiting_for_viewer && !spoke {
                        deadline = tokio::time::Instant::now() + self.cfg.handshake_timeout;
                    }
                    spoke = true;
                    if let Err(e) = conn.receive(&buf[..n]) {
                        return Err(protocol_end(e));
                    }
                }
                answer = async { match consent.as_mut() { Some((q, _)) => q.await, None => std::future::pending().await } } => {
                    let Some((_, due)) = consent.take() else {
                        // Only a pending question gives an answer.
                        continue;
                    };
                    match answer {
                        Some(ConsentAnswer::Accept(rights)) => {
                            self.info.consent = Consent::Accepted;
                            self.info.rights = rights.intersect(self.ceiling);
                            info!(conn = self.info.id, rights = %self.info.rights.summary(), "the person at the screen accepted");
                            if let Err(e) = conn.approve(due) {
                                return Err(protocol_end(e));
                            }
                        }
                        Some(ConsentAnswer::Reject) => {
                            self.info.consent = Consent::Rejected;
                            let r = "the person at the screen rejected the session";
                            return Err(self.refuse(&mut stream, conn, deadline, r).await);
                        }
                        None => {
                            self.info.consent = Consent::Timeout;
                            let r = "the person at the screen did not answer in time";
                            return Err(self.refuse(&mut stream, conn, deadline, r).await);
                        }
                    }
                }
                c = self.control.recv() => match c {
                    Some(Control::Kick) => return Err(EndReason::Kicked),
                    Some(Control::StopSharing) => return Err(EndReason::StoppedAtScreen),
                    Some(Control::TicketClosed) => return Err(EndReason::TicketClosed),
                    Some(Control::Shutdown) | None => return Err(EndReason::ServerStopped),
                    // Nothing to apply before the session exists.
                    Some(Control::ServerCutText(_)) | Some(Control::SetRights { .. }) => {}
                },
                _ = tokio::time::sleep_until(deadline) => return Err(EndReason::HandshakeTimeout),
            }
        }
    }

    /// Before a credential is checked: this source may not have more
    /// attempts running than failures left, and the server-wide budget must
    /// have a token (waiting for one, at most until the deadline). Without
    /// both the credential is never checked, so no guess is answered.
    async fn budget_for_check(
        &mut self,
        stream: &mut Box<dyn Transport>,
        conn: &mut Handshake,
        deadline: tokio::time::Instant,
    ) -> Result<(Attempt, Token), EndReason> {
        let ip = self
            .info
            .peer
            .map(|p| p.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        // As many checks may run at once as failures are left before the
        // source is blocked; more wait their turn (fifty viewers behind one
        // NAT all get in, twelve guessers get five guesses).
        let attempt = loop {
            match self.cfg.throttle.begin(ip) {
                Err(Refusal::Busy) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other,
            }
        };
        let attempt = match attempt {
            Ok(a) => a,
            Err(Refusal::Blocked(left)) => {
                let r = format!(
                    "too many failed authentications from this address; try again in {} s",
                    left.as_secs().max(1)
                );
                return Err(self.refuse(stream, conn, deadline, &r).await);
            }
            Err(Refusal::Busy) => {
                let r = "too many authentication attempts from this address at once";
                return Err(self.refuse(stream, conn, deadline, r).await);
            }
        };
        match self.cfg.budget.acquire(ip, deadline).await {
            Some(token) => Ok((attempt, token)),
            None => {
                drop(attempt);
                let r = "the server is refusing logins for a while after many failed attempts; \
                         try again in a minute";
                Err(self.refuse(stream, conn, deadline, r).await)
            }
        }
    }

    /// Answer a credential check: on success the core says Authenticated
    /// next; on failure the failure result goes out and the session ends.
    async fn verdict(
        &mut self,
        stream: &mut Box<dyn Transport>,
        conn: &mut Handshake,
        deadline: tokio::time::Instant,
        principal: Option<Principal>,
        (attempt, token): (Attempt, Token),
        due: VerdictDue,
    ) -> Result<(), EndReason> {
        let ok = principal.is_some();
        if ok {
            attempt.succeeded();
            token.succeeded();
            self.info.principal = principal;
        } else {
            // Counted and journaled before anything is logged or sent.
            let blocked = attempt.failed();
            token.failed();
            let (host, info) = (self.host.clone(), self.info.clone());
            Self::blocking(move || {
                host.auth_failed(&info, "authentication failed");
                if let (Some(peer), Some(d)) = (info.peer, blocked) {
                    host.notice(&ServerNotice::Lockout {
                        address: crate::security::throttle::source_key(peer.ip()).to_string(),
                        seconds: d.as_secs(),
                    });
                }
            })
            .await;
            // A fixed pause before every failure result.
            tokio::time::sleep(self.cfg.failure_delay).await;
        }
        if let Err(e) = conn.auth_verdict(due, ok) {
            let _ = self.flush(stream, conn, deadline).await;
            return Err(protocol_end(e));
        }
        Ok(())
    }

    /// The normal phase: updates out, messages in, until the end.
    async fn established(&mut self, stream: Box<dyn Transport>, conn: Established) -> EndReason {
        let (rd, wr) = tokio::io::split(stream);
        // Only the size: a frame held here would be pinned for the whole
        // session (8 MB at 1080p per viewer, and the capture's frame pool
        // could never reuse it).
        let (width, height) = {
            let latest = self.frames.borrow();
            (latest.frame.width, latest.frame.height)
        };
        let mut viewer = ViewerState::new(width, height);
        viewer.drawn_cursor = self.cfg.drawn_cursor;
        viewer.share_with(self.shared.clone());
        let mut live = Live {
            conn,
            viewer,
            writes: Writes::start(wr, self.cfg.write_stall_timeout),
            rd,
            buf: vec![0u8; 64 * 1024],
            frames_dirty: true,
            // The first update waits for a frame published after this point
            // (the capture publishes one at its next turn).
            first_frame_due: {
                self.frames.borrow_and_update();
                self.demand.joined();
                true
            },
            // Messages pipelined behind ClientInit may already be buffered.
            poll_now: true,
            flow: flow::Flow::new(self.info.session_id(), std::time::Instant::now()),
            streaming: None,
        };
        let stop = loop {
            if let Err(stop) = self.step(&mut live).await {
                break stop;
            }
        };
        let reason = match stop {
            Stop::End(r) => r,
            Stop::WriterGone => live.writes.failure().await,
        };
        if let Some((bandwidth, rtt_ms, window)) = live.flow.estimate() {
            debug!(
                session = self.info.session_id(),
                bandwidth, rtt_ms, window, "link estimate from fences"
            );
        }
        // Give queued bytes (e.g. a failure reason) a moment to leave.
        live.writes.drain(Duration::from_secs(1)).await;
        reason
    }

    /// One turn of the established loop: handle what the viewer sent, send
    /// what the core has to say, an update if one is due, else wait for
    /// the next thing to happen.
    async fn step(&mut self, live: &mut Live) -> Result<(), Stop> {
        if std::mem::take(&mut live.poll_now) {
            self.handle_messages(live).await?;
        }
        if live.streaming.is_some() {
            // 0. An update is going out: its next piece once the socket
            // has taken the ones before (nothing else may come between its
            // rectangles; replies wait until it is complete).
            if live.writes.in_flight() < STREAM_AHEAD {
                return self.pump_update(live).await;
            }
        } else {
            // 1. What the core and the handled messages have to say.
            self.send_pending(live).await?;
            // 2. An update, when one is wanted (asked for, or continuous),
            // the previous one has left, and the congestion window has room.
            if live.writes.idle()
                && (live.viewer.has_request() || live.flow.continuous())
                && live.frames_dirty
                && !live.first_frame_due
                && self.info.rights.view
                && live
                    .flow
                    .may_send(live.writes.bytes, std::time::Instant::now())
            {
                return self.send_update(live).await;
            }
        }
        // The screen is captured only while some viewer waits for a frame.
        let wants = self.info.rights.view
            && (live.viewer.has_request()
                || live.flow.continuous()
                    && live.streaming.is_none()
                    && live.writes.idle()
                    && live
                        .flow
                        .may_send(live.writes.bytes, std::time::Instant::now()));
        self.demand.set(wants);
        let wake = live.flow.wake().map(tokio::time::Instant::from_std);
        // 3. Wait.
        tokio::select! {
            _ = async { tokio::time::sleep_until(wake.unwrap()).await }, if wake.is_some() => Ok(()),
            r = live.rd.read(&mut live.buf) => self.on_read(live, r),
            r = self.frames.changed() => {
                r.map_err(|_| Stop::End(EndReason::SourceGone("capture stopped".into())))?;
                live.frames_dirty = true;
                live.first_frame_due = false;
                Ok(())
            }
            r = live.writes.done.changed() => r.map_err(|_| Stop::WriterGone),
            c = self.control.recv() => self.on_control(live, c).await,
        }
    }

    /// Everything the protocol core has to say goes out first, then the
    /// replies to the messages just handled (never inside an update).
    async fn send_pending(&mut self, live: &mut Live) -> Result<(), Stop> {
        if let Some(r) = live.conn.take_refused() {
            // A bug of the session, not the viewer's doing: logged, and the
            // message was not sent.
            warn!(session = self.info.session_id(), error = %r, "server message refused by the protocol core");
        }
        if live.conn.has_output() {
            let out = live.conn.take_output();
            self.info.bytes_out += out.len() as u64;
            live.writes.send(out).await?;
        }
        if !self.outbox.is_empty() {
            let out = std::mem::take(&mut self.outbox);
            self.info.bytes_out += out.len() as u64;
            live.writes.send(out).await?;
        }
        Ok(())
    }

    /// Every message the core has decoded.
    async fn handle_messages(&mut self, live: &mut Live) -> Result<(), Stop> {
        loop {
            match live.conn.poll_message() {
                Ok(Some(m)) => {
                    let now = std::time::Instant::now();
                    let m = match live.flow.intercept(
                        m,
                        &mut live.viewer,
                        &mut live.conn.output(&mut self.outbox),
                        now,
                    ) {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            // Continuous updates may just have been enabled.
                            live.frames_dirty |= live.flow.continuous();
                            continue;
                        }
                        Err(e) => return Err(Stop::End(EndReason::ProtocolError(e))),
                    };
                    self.handle_message(m, &mut live.viewer, &mut live.conn);
                    live.flow
                        .after_message(&mut live.conn.output(&mut self.outbox));
                    if live.viewer.has_request() {
                        live.frames_dirty = true;
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    if live.conn.has_output() && live.streaming.is_none() {
                        let _ = live.writes.send(live.conn.take_output()).await;
                    }
                    return Err(Stop::End(protocol_end(e)));
                }
            }
        }
    }

    /// Start one update from the newest frame and queue its first piece.
    async fn send_update(&mut self, live: &mut Live) -> Result<(), Stop> {
        let latest = self.frames.borrow_and_update().clone();
        let size_before = live.viewer.viewer_size();
        live.flow.before_update(&mut live.viewer);
        let Some(stream) = live.viewer.start_update(&latest) else {
            live.frames_dirty = false;
            return Ok(());
        };
        live.streaming = Some(stream);
        let size = live.viewer.viewer_size();
        if size != size_before {
            let ev = SessionEvent::Resize {
                width: size.0,
                height: size.1,
            };
            self.host.session_event(&self.info, &ev);
        }
        self.info.updates_sent = live.viewer.updates_sent;
        self.pump_update(live).await
    }

    /// Encode the next piece of the update being sent (at most about
    /// `update::CHUNK_BYTES` plus a band) into a reused buffer and queue it;
    /// pings frame the update for a viewer that takes fences.
    async fn pump_update(&mut self, live: &mut Live) -> Result<(), Stop> {
        let Some(mut stream) = live.streaming.take() else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let mut out = live.writes.buffer();
        if stream.is_fresh() {
            let pos = live.writes.bytes;
            live.flow
                .update_begins(pos, &mut live.conn.output(&mut out), now);
            if let Some(map) = stream.take_colour_map() {
                live.conn.output(&mut out).send_colour_map(0, &map);
            }
        }
        let mut buf = UpdateBuf::from_vec(out);
        let more = if stream.is_large() {
            // A big update is encoded on the blocking pool, off the
            // runtime's workers (other sessions, the capture's channel and
            // this session's timers keep running there); the stream owns
            // all it needs, and comes back with the piece.
            let (s, b, more) = tokio::task::spawn_blocking(move || {
                let more = stream.encode_next(&mut buf);
                (stream, buf, more)
            })
            .await
            // The encoder panicked (the panic hook has already logged it
            // and ends the server) or the runtime is shutting down.
            .map_err(|_| Stop::End(EndReason::ServerStopped))?;
            stream = s;
            buf = b;
            more
        } else {
            stream.encode_next(&mut buf)
        };
        // Every header checked by the core before a byte of it is sent.
        let mut out = live
            .conn
            .pass(buf)
            .map_err(|e| Stop::End(EndReason::UpdateRefused(e)))?;
        if more {
            live.streaming = Some(stream);
        } else {
            live.viewer.finish_update(&mut stream);
            // Its frame goes back to the capture's pool now, before the
            // last piece reaches the viewer (whose next request may start a
            // grab that wants the buffer).
            drop(stream);
            self.info.bands_reused = live.viewer.bands_reused;
            self.info.copy_rects = live.viewer.copy_rects;
            let end = live.writes.bytes + out.len() as u64;
            live.flow
                .update_ends(end, &mut live.conn.output(&mut out), now);
        }
        self.info.bytes_out += out.len() as u64;
        live.writes.send(out).await
    }

    /// Bytes from the viewer.
    fn on_read(&mut self, live: &mut Live, r: std::io::Result<usize>) -> Result<(), Stop> {
        let n = match r {
            Ok(0) => return Err(Stop::End(EndReason::ViewerClosed)),
            Ok(n) => n,
            // TLS viewers often just drop the connection without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Stop::End(EndReason::ViewerClosed))
            }
            Err(e) => return Err(Stop::End(EndReason::Io(e.to_string()))),
        };
        self.info.bytes_in += n as u64;
        if let Err(e) = live.conn.receive(&live.buf[..n]) {
            return Err(Stop::End(EndReason::ProtocolError(e)));
        }
        live.poll_now = true;
        Ok(())
    }

    /// A message from the server.
    async fn on_control(&mut self, live: &mut Live, c: Option<Control>) -> Result<(), Stop> {
        match c {
            Some(Control::Kick) => Err(Stop::End(EndReason::Kicked)),
            Some(Control::StopSharing) => Err(Stop::End(EndReason::StoppedAtScreen)),
            Some(Control::TicketClosed) => Err(Stop::End(EndReason::TicketClosed)),
            Some(Control::Shutdown) | None => Err(Stop::End(EndReason::ServerStopped)),
            // Only with the clipboard right: it may hold what the customer copied.
            Some(Control::ServerCutText(t)) if self.info.rights.clipboard => {
                let ev = SessionEvent::Clipboard {
                    to_viewer: true,
                    bytes: t.len(),
                };
                self.host.session_event(&self.info, &ev);
                // After the messages before it and any update going out.
                self.clipboard
                    .announce(&t, &mut live.conn.output(&mut self.outbox));
                self.desktop_clipboard = Some(t);
                Ok(())
            }
            Some(Control::ServerCutText(_)) => Ok(()),
            Some(Control::SetRights { rights, by }) => {
                self.set_rights(rights, &by);
                live.frames_dirty = true;
                live.first_frame_due = false;
                Ok(())
            }
        }
    }

    /// A live rights change: applied at once, inside the ceiling, journaled.
    fn set_rights(&mut self, wanted: Rights, by: &str) {
        let rights = wanted.intersect(self.ceiling);
        if rights == self.info.rights {
            return;
        }
        // Keys and buttons held when input is taken away are let go, so
        // "Pause input" never leaves Ctrl or a mouse button down.
        if !rights.keys {
            self.held.release_keys(self.input.as_ref());
        }
        if !rights.pointer {
            self.held.release_buttons(self.input.as_ref());
        }
        self.info.rights = rights;
        self.host.session_event(
            &self.info,
            &SessionEvent::RightsChange {
                rights,
                by: by.to_string(),
            },
        );
        info!(session = self.info.session_id(), rights = %rights.summary(), by, "rights changed");
    }

    /// Runs the host's (journal's) and the authenticator's synchronous work
    /// on the blocking pool, so a busy database never stalls other sessions.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        tokio::task::spawn_blocking(f).await.ok()
    }

    fn handle_message(&mut self, m: ClientMessage, v: &mut ViewerState, conn: &mut Established) {
        // The rights are read on every event: a change applies at once.
        let rights = self.info.rights;
        match m {
            ClientMessage::SetPixelFormat(pf) => v.set_pixel_format(pf),
            ClientMessage::SetEncodings(list) => {
                if list.contains(&crate::rfb::messages::enc::EXTENDED_CLIPBOARD) {
                    self.clipboard
                        .enable_extended(&mut conn.output(&mut self.outbox));
                }
                v.set_encodings(&list)
            }
            ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
                v.request(incremental, rect)
            }
            ClientMessage::KeyEvent { down, keysym } => {
                // The record of held keys follows what is really injected:
                // a press it could not record is not injected either (it
                // would stay down after the viewer leaves), a press the
                // sink dropped is not recorded.
                if rights.keys && (!down || self.held.can_hold(keysym)) {
                    let injected = self.input.key(down, keysym);
                    if injected || !down {
                        self.held.key(down, keysym);
                    }
                }
            }
            ClientMessage::QemuKeyEvent {
                down,
                keysym,
                scancode,
            } => {
                // Taken only from a viewer that listed the pseudo-encoding;
                // held keys recorded as for KeyEvent (a keysym of 0 is
                // recorded by its scan code).
                let id = match (keysym, scancode) {
                    (0, Some(c)) => crate::input::QEMU_KEY | u32::from(c),
                    (0, None) => return,
                    (k, _) => k,
                };
                if v.qemu_keys && !std::mem::replace(&mut v.qemu_keys_used, true) {
                    debug!(
                        session = self.info.session_id(),
                        "the viewer sends QEMU extended key events (scan codes)"
                    );
                }
                if v.qemu_keys && rights.keys && (!down || self.held.can_hold(id)) {
                    let injected = match scancode {
                        Some(c) => self.input.key_scancode(down, id, c),
                        None => self.input.key(down, id),
                    };
                    if injected || !down {
                        self.held.key(down, id);
                    }
                }
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                if rights.pointer {
                    let held = self.input.pointer(buttons.into(), x, y);
                    self.held.pointer(held, x, y);
                    v.pointer.viewer_moved(x, y);
                }
            }
            ClientMessage::ExtendedPointerEvent { buttons, x, y } => {
                if rights.pointer {
                    let held = self.input.pointer(buttons, x, y);
                    self.held.pointer(held, x, y);
                    v.pointer.viewer_moved(x, y);
                }
            }
            ClientMessage::ClientCutText(t) => {
                // Latin-1 maps byte-for-byte onto the first 256 code points.
                if rights.clipboard
                    && self
                        .input
                        .cut_text(&t.iter().map(|&b| b as char).collect::<String>())
                {
                    self.host.session_event(
                        &self.info,
                        &SessionEvent::Clipboard {
                            to_viewer: false,
                            bytes: t.len(),
                        },
                    );
                }
            }
            ClientMessage::ExtendedClipboard { flags, payload } => {
                // Without the clipboard right nothing is taken or given,
                // not even the news that there is something.
                if !rights.clipboard {
                    return;
                }
                let desktop = self.desktop_clipboard.as_deref();
                match self.clipboard.on_message(
                    flags,
                    &payload,
                    desktop,
                    &mut conn.output(&mut self.outbox),
                ) {
                    // Journaled only when the desktop has a clipboard to take it.
                    Ok(Some(text)) if self.input.cut_text(&text) => {
                        self.host.session_event(
                            &self.info,
                            &SessionEvent::Clipboard {
                                to_viewer: false,
                                bytes: text.len(),
                            },
                        );
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {}
                    Err(e) => {
                        warn!(session = self.info.session_id(), error = %e, "clipboard text from the viewer ignored")
                    }
                }
            }
            // Handled by the session's flow control before this.
            ClientMessage::Fence { .. } | ClientMessage::EnableContinuousUpdates { .. } => {}
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            } => {
                // A real screen's size is the customer's: refused (status
                // 1) unless the desktop is ticketvnc's own (--virtual).
                let may = rights.keys || rights.pointer;
                let resizer = self.cfg.resizer.as_deref().filter(|_| may);
                let status = desktop_size::answer(resizer, (width, height), screens);
                info!(
                    session = self.info.session_id(),
                    width, height, status, "desktop size requested"
                );
                v.resize_wanted = (status == 0).then_some((width, height));
                v.resize_reply_due = Some(update::ResizeReply { status });
                v.request(true, crate::framebuffer::Rect::default());
            }
        }
    }
}

/// Why the established loop stops.
enum Stop {
    End(EndReason),
    /// The writer task ended; it says why.
    WriterGone,
}

/// The established phase's state.
struct Live {
    conn: Established,
    viewer: ViewerState,
    writes: Writes,
    rd: tokio::io::ReadHalf<Box<dyn Transport>>,
    buf: Vec<u8>,
    /// A newer frame (or a new request) may give an update.
    frames_dirty: bool,
    /// No frame has been published since the viewer started: the last one
    /// may be from before it (the capture pauses without viewers).
    first_frame_due: bool,
    /// The core may hold decoded messages.
    poll_now: bool,
    /// Fences, continuous updates, congestion control.
    flow: flow::Flow,
    /// The update being sent, piece by piece.
    streaming: Option<update::UpdateStream>,
}

/// Output buffers handed to the writer task, counted: one count per
/// buffer queued, and the writer's count of buffers written.
struct Writes {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    done: watch::Receiver<u64>,
    queued: u64,
    /// Bytes queued in all (the stream position congestion control uses).
    bytes: u64,
    writer: Option<tokio::task::JoinHandle<EndReason>>,
    /// Buffers the writer has emptied, for the next pieces.
    spares: Spares,
}

type Spares = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

impl Writes {
    fn start(wr: tokio::io::WriteHalf<Box<dyn Transport>>, stall: Duration) -> Writes {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let (done_tx, done) = watch::channel(0u64);
        let spares = Spares::default();
        let writer = writer_task(wr, rx, done_tx, stall, spares.clone());
        Writes {
            tx: Some(tx),
            done,
            queued: 0,
            bytes: 0,
            writer: Some(tokio::spawn(writer)),
            spares,
        }
    }

    /// An empty buffer, reused when the writer has one to give back.
    fn buffer(&self) -> Vec<u8> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.pop().unwrap_or_default()
    }

    /// Buffers queued and not yet written.
    fn in_flight(&self) -> u64 {
        self.queued - *self.done.borrow()
    }

    /// Queue one buffer; `Err` when the writer task has ended.
    async fn send(&mut self, out: Vec<u8>) -> Result<(), Stop> {
        let tx = self.tx.as_ref().ok_or(Stop::WriterGone)?;
        self.queued += 1;
        self.bytes += out.len() as u64;
        tx.send(out).await.map_err(|_| Stop::WriterGone)
    }

    /// Everything queued has been written.
    fn idle(&self) -> bool {
        *self.done.borrow() == self.queued
    }

    /// Why the writer task ended.
    async fn failure(&mut self) -> EndReason {
        match self.writer.take() {
            Some(w) => w
                .await
                .unwrap_or_else(|e| EndReason::Io(format!("writer task: {e}"))),
            None => EndReason::Io("writer task gone".into()),
        }
    }

    /// No more output: wait at most `d` for what is queued to leave.
    async fn drain(&mut self, d: Duration) {
        self.tx = None;
        let queued = self.queued;
        let _ = tokio::time::timeout(d, async {
            let _ = self.done.wait_for(|n| *n >= queued).await;
        })
        .await;
    }
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    done: watch::Sender<u64>,
    stall: Duration,
    spares: Spares,
) -> EndReason {
    let mut n = 0u64;
    while let Some(mut buf) = rx.recv().await {
        match tokio::time::timeout(stall, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return EndReason::Io(e.to_string()),
            Err(_) => return EndReason::Stalled,
        }
        if buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            let mut s = spares.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() < SPARE_BUFFERS {
                s.push(buf);
            }
        }
        n += 1;
        done.send_replace(n);
    }
    let _ = wr.shutdown().await;
    EndReason::ViewerClosed
}
