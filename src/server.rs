//! Listeners, the capture loop, the registry of sessions, and shutdown.

use crate::capture::{CaptureError, ScreenSource};
use crate::framebuffer::history::FrameHistory;
use crate::input::InputSink;
use crate::rfb::{limits, SecurityType};
use crate::rfb::{Handshake, VeNCryptSubtype};
use crate::security::preauth::{Admission, PreauthLimits, PreauthTable};
use crate::security::throttle::{AuthThrottle, GuessBudget};
use crate::security::Authenticator;
use crate::security::Rights;
use crate::session::consent::ConsentPolicy;
use crate::session::{
    self, Control, Direction, EndReason, Published, SecurityOffer, ServerNotice, SessionConfig,
    SessionContext, SessionEvent, SessionHost, SessionInfo, SessionObserver, TlsAcceptor,
};
use crate::web::{self, Accepted, WebOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, error, info, warn};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "{addr} is not a loopback address and VeNCrypt (TLS) is not available; \
             refusing to offer bare VNC security there without --insecure"
    )]
    NoTlsOffLoopback { addr: SocketAddr },
    #[error("the screen source produced no first frame: {0}")]
    NoFirstFrame(String),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("the server task panicked: {0}")]
    Panicked(String),
}

pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// `None`: no authentication (security type None).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    pub desktop_name: Option<String>,
    /// VeNCrypt's TLS identity; `None`: bare security types only.
    pub tls: Option<TlsAcceptor>,
    /// Offer bare None/VNC authentication on non-loopback addresses too.
    pub insecure: bool,
    /// `--allow-apple-dh`: send "RFB 003.889" and offer Apple DH (type
    /// 30) on every listener; without it only Mac viewers reaching a
    /// loopback listener are offered it.
    pub allow_apple_dh: bool,
    /// Swap Command and Control for Mac viewers (RFB 003.889) only
    /// (`--keyboard auto`, not on a Mac).
    pub mac_viewer_keyboard: bool,
    /// Technician accounts exist: offer VeNCrypt X509Plain.
    pub plain_accounts: bool,
    /// The ticket sessions belong to when their credential names none
    /// (no authentication, a static password): `--ticket`.
    pub ticket: Option<String>,
    /// Offer VeNCrypt on reverse connections too (see `outbound_offer`).
    pub reverse_vencrypt: bool,
    pub consent: ConsentPolicy,
    pub view_only: bool,
    /// Draw the customer's pointer into viewers' pictures where they need
    /// it (`--no-drawn-cursor` turns it off).
    pub drawn_cursor: bool,
    /// Viewers' SetDesktopSize goes here (`--virtual`); `None`: refused.
    pub resizer: Option<Arc<dyn crate::capture::resize::DesktopResizer>>,
    pub handshake_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_preauth: usize,
    /// Failed authentications in a row before an address is refused for a
    /// while (doubling each further failure, up to 10 minutes). 0 disables.
    pub auth_failures_before_block: u32,
    /// First block period.
    pub auth_block_base: Duration,
    /// Failed verifications a minute across all addresses at most (the
    /// global guessing budget); 0 disables it.
    pub auth_failures_per_minute: u32,
    /// Pause before a failure result is sent.
    pub auth_failure_delay: Duration,
    /// Captures per second at most; bounds CPU under constant change.
    pub max_fps: u32,
    /// Told about every session (the ticket journal).
    pub observer: Option<Arc<dyn SessionObserver>>,
    /// Serve the bundled browser viewer (noVNC) on the listeners; the
    /// WebSocket upgrade is answered either way (`--no-web` turns this off).
    pub web_pages: bool,
}

impl ServerConfig {
    /// What a connection we make offers (reverse, repeater): the customer
    /// chose where to connect, so the bare type is offered too (None
    /// without an authenticator, like x11vnc and UltraVNC SC), after
    /// VeNCrypt.
    ///
    /// To a viewer in listen mode VeNCrypt is offered only with
    /// `reverse_vencrypt`: TigerVNC 1.12 in listen mode crashes
    /// (segfault) as soon as it starts any TLS security type.
    pub fn outbound_offer(&self, direction: Direction) -> SecurityOffer {
        let mut vencrypt = Vec::new();
        let tls_ok = direction != Direction::Reverse || self.reverse_vencrypt;
        if self.tls.is_some() && tls_ok {
            vencrypt.push(if self.authenticator.is_some() {
                VeNCryptSubtype::X509Vnc
            } else {
                VeNCryptSubtype::X509None
            });
        }
        let mut types = Vec::new();
        if !vencrypt.is_empty() {
            types.push(SecurityType::VeNCrypt);
        }
        types.push(if self.authenticator.is_some() {
            SecurityType::VncAuth
        } else {
            SecurityType::None
        });
        SecurityOffer {
            types,
            vencrypt,
            ..Default::default()
        }
    }

    /// What a listener on `addr` offers. Off loopback only VeNCrypt
    /// subtypes (TLS), unless `insecure`; on loopback VeNCrypt first, then
    /// the bare type for viewers without TLS.
    pub fn offer_for(&self, addr: SocketAddr) -> Result<SecurityOffer, ServerError> {
        let auth = self.authenticator.is_some();
        let mut vencrypt = Vec::new();
        if self.tls.is_some() {
            if auth {
                vencrypt.push(VeNCryptSubtype::X509Vnc);
                if self.plain_accounts {
                    vencrypt.push(VeNCryptSubtype::X509Plain);
                }
            } else {
                vencrypt.push(VeNCryptSubtype::X509None);
            }
        }
        let bare = if auth {
            SecurityType::VncAuth
        } else {
            SecurityType::None
        };
        let mut types = Vec::new();
        if !vencrypt.is_empty() {
            types.push(SecurityType::VeNCrypt);
        }
        if addr.ip().is_loopback() || self.insecure {
            types.push(bare);
        }
        if types.is_empty() {
            return Err(ServerError::NoTlsOffLoopback { addr });
        }
        // Screen Sharing.app (RFB 003.889) speaks no VeNCrypt and cannot
        // use None at 3.889; it gets Apple DH first where that is allowed
        // (loopback, e.g. through an SSH tunnel, or `--allow-apple-dh`).
        let apple = auth && (addr.ip().is_loopback() || self.allow_apple_dh);
        let mut mac: Vec<SecurityType> =
            apple.then_some(SecurityType::AppleDh).into_iter().collect();
        mac.extend(types.iter().copied().filter(|t| *t != SecurityType::None));
        // Other viewers get it last, and only when asked for (libvncclient
        // speaks it, and picks the server's first type it knows).
        if auth && self.allow_apple_dh {
            types.push(SecurityType::AppleDh);
        }
        Ok(SecurityOffer {
            types,
            vencrypt,
            mac: Some(mac),
            apple_version: self.allow_apple_dh,
        })
    }

    /// How browsers are met on a listener on `addr`. A browser speaks
    /// no VeNCrypt X509 subtype (noVNC has none), so it gets the bare type
    /// alone: over `wss://` (TLS outside RFB) always; over `ws://` only
    /// where bare types are offered anyway (loopback, `--insecure`).
    pub fn web_for(&self, addr: SocketAddr) -> WebOptions {
        let bare = Arc::new(SecurityOffer {
            types: vec![if self.authenticator.is_some() {
                SecurityType::VncAuth
            } else {
                SecurityType::None
            }],
            vencrypt: Vec::new(),
            ..Default::default()
        });
        WebOptions {
            pages: self.web_pages,
            tls: self.tls.clone(),
            ws_offer: (addr.ip().is_loopback() || self.insecure).then(|| bare.clone()),
            wss_offer: bare,
        }
    }

    pub fn new(listen: Vec<SocketAddr>, authenticator: Option<Arc<dyn Authenticator>>) -> Self {
        ServerConfig {
            listen,
            authenticator,
            desktop_name: None,
            tls: None,
            insecure: false,
            allow_apple_dh: false,
            mac_viewer_keyboard: false,
            plain_accounts: false,
            reverse_vencrypt: false,
            ticket: None,
            consent: ConsentPolicy::Auto,
            view_only: false,
            drawn_cursor: true,
            resizer: None,
            handshake_timeout: Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS),
            write_stall_timeout: Duration::from_secs(limits::WRITE_STALL_TIMEOUT_SECS),
            max_preauth: limits::MAX_PREAUTH_CONNECTIONS,
            auth_failures_before_block: limits::AUTH_FAILURES_BEFORE_BLOCK,
            auth_block_base: Duration::from_secs(limits::AUTH_BLOCK_BASE_SECS),
            auth_failures_per_minute: limits::AUTH_FAILURES_PER_MINUTE,
            auth_failure_delay: Duration::from_millis(limits::AUTH_FAILURE_DELAY_MS),
            max_fps: 60,
            observer: None,
            web_pages: true,
        }
    }
}

/// Sessions that passed authentication, by session id (the journal's, see
/// [`SessionInfo::session_id`]).
struct Registry {
    sessions: Mutex<HashMap<u64, Running>>,
    pending: Mutex<HashMap<u64, mpsc::Sender<Control>>>,
    /// "Pause input" at the screen is on.
    input_paused: std::sync::atomic::AtomicBool,
    throttle: Arc<AuthThrottle>,
    observer: Option<Arc<dyn SessionObserver>>,
    /// Connections in the handshake.
    preauth: Arc<PreauthTable>,
    /// Keeps a flood of refusals from flooding the log.
    noisy: NoisyLog,
}

/// At most `LIMIT` refusal lines a minute; the rest are counted and told
/// as one line when the next minute's first refusal comes.
#[derive(Default)]
struct NoisyLog(Mutex<(Option<std::time::Instant>, u32, u64)>);

impl NoisyLog {
    const LIMIT: u32 = 20;
    /// Should this refusal get its own line? Logs a summary of the
    /// suppressed ones of the previous minute when a new minute starts.
    fn allow(&self) -> bool {
        let mut g = self.0.lock().unwrap();
        let now = std::time::Instant::now();
        let fresh =
            g.0.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if fresh {
            if g.2 > 0 {
                warn!(suppressed = g.2, "more logins failed or were refused in the last minute than are logged one by one");
            }
            *g = (Some(now), 0, 0);
        }
        if g.1 < Self::LIMIT {
            g.1 += 1;
            true
        } else {
            g.2 += 1;
            false
        }
    }
}

/// A session past ServerInit: its control channel and whose it is.
struct Running {
    tx: mpsc::Sender<Control>,
    /// (ticket, technician): an exclusive viewer only displaces viewers
    /// with the same pair, never another ticket's or technician's.
    owner: (Option<String>, Option<String>),
    /// The ticket, for ending sessions when it is closed.
    ticket: Option<String>,
    peer: Option<SocketAddr>,
}

/// A running session as the person at the screen is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningSession {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub ticket: Option<String>,
    pub technician: Option<String>,
}

fn owner_of(info: &SessionInfo) -> (Option<String>, Option<String>) {
    let p = info.principal.as_ref();
    (
        p.and_then(|p| p.ticket.clone()),
        p.and_then(|p| p.technician.clone()),
    )
}

impl SessionHost for Registry {
    fn session_starting(&self, info: &mut SessionInfo) -> bool {
        // Input paused at the screen: newcomers start view-only too (and get
        // their rights back, within their limits, when it resumes).
        if self.input_paused.load(Ordering::SeqCst) {
            info.rights = info.rights.intersect(Rights::VIEW_ONLY);
        }
        if let Some(o) = &self.observer {
            match o.session_starting(info) {
                Ok(record) => info.record = Some(record),
                Err(e) => {
                    error!(conn = info.id, error = %e, "cannot record the session; refusing the viewer");
                    return false;
                }
            }
        }
        let tx = self.pending.lock().unwrap().remove(&info.id);
        let mut s = self.sessions.lock().unwrap();
        let owner = owner_of(info);
        if !info.shared {
            // Exclusive access displaces only viewers of the same ticket and
            // technician: a code holder cannot kick another ticket's session.
            s.retain(|id, other| {
                if other.owner != owner {
                    return true;
                }
                let _ = other.tx.try_send(Control::Kick);
                info!(
                    session = id,
                    by = info.session_id(),
                    "disconnecting viewer: new viewer of the same ticket asked for exclusive access"
                );
                false
            });
        }
        if let Some(tx) = tx {
            s.insert(
                info.session_id(),
                Running {
                    tx,
                    ticket: owner.0.clone(),
                    owner,
                    peer: info.peer,
                },
            );
        }
        info!(
            session = info.session_id(),
            conn = info.id,
            peer = ?info.peer,
            version = info.version,
            security = info.security,
            ticket = info.principal.as_ref().and_then(|p| p.ticket.as_deref()),
            shared = info.shared,
            "viewer connected"
        );
        true
    }
    fn auth_failed(&self, info: &SessionInfo, reason: &str) {
        if let Some(o) = &self.observer {
            o.auth_failed(info, reason);
        }
        if self.noisy.allow() {
            warn!(conn = info.id, peer = ?info.peer, reason, "authentication failed");
        }
    }
    fn notice(&self, notice: &ServerNotice) {
        if let Some(o) = &self.observer {
            o.server_notice(notice);
        }
        if let ServerNotice::Lockout { address, seconds } = notice {
            warn!(%address, seconds, "too many failed authentications; address locked out");
        }
    }
    fn refused(&self, info: &SessionInfo, reason: &str) {
        if let Some(o) = &self.observer {
            o.auth_failed(info, reason);
        }
        if self.noisy.allow() {
            warn!(conn = info.id, peer = ?info.peer, reason, "viewer refused");
        }
    }
    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent) {
        if let Some(o) = &self.observer {
            o.session_event(info, ev);
        }
    }
    fn session_ended(&self, info: &SessionInfo, reason: &EndReason) {
        self.sessions.lock().unwrap().remove(&info.session_id());
        if let Some(o) = &self.observer {
            o.session_ended(info, reason);
        }
    }
}

/// A running server.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    /// For sessions over connections we make (repeater; reverse with
    /// `reverse_offer`).
    template: SessionContext,
    reverse_offer: Arc<SecurityOffer>,
    next_id: Arc<AtomicU64>,
    /// The capture thread, stopped and joined when the server ends, so it
    /// never outlives the display it reads (a private Xvfb stopped after us).
    capture: std::thread::JoinHandle<()>,
    capture_stop: Arc<AtomicBool>,
}

impl ServerHandle {
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
    /// Number of viewers past authentication.
    pub fn viewer_count(&self) -> usize {
        self.registry.sessions.lock().unwrap().len()
    }
    /// Ids of the running sessions (past ServerInit): the journal's session ids.
    pub fn session_ids(&self) -> Vec<u64> {
        self.control().session_ids()
    }
    /// See [`SessionControl::end_ticket_sessions`].
    pub fn end_ticket_sessions(&self, ticket: &str) -> usize {
        self.control().end_ticket_sessions(ticket)
    }
    /// See [`SessionControl::set_rights`].
    pub fn set_rights(&self, id: u64, rights: Rights, by: &str) -> bool {
        self.control().set_rights(id, rights, by)
    }
    /// Run one session over a connection this side made (to a listening
    /// viewer, or through a repeater): the server still speaks first.
    /// Resolves when the session ends.
    pub async fn run_outbound<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        direction: Direction,
    ) -> session::Outcome
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        self.registry.pending.lock().unwrap().insert(id, ctl_tx);
        let info = SessionInfo {
            id,
            peer: Some(peer),
            direction,
            ..Default::default()
        };
        let mut ctx = self.template.clone();
        if direction == Direction::Reverse {
            ctx.offer = self.reverse_offer.clone();
        }
        let r = session::run_session(stream, info, ctx, ctl_rx, None).await;
        self.registry.pending.lock().unwrap().remove(&id);
        r
    }
    /// A handle on the running sessions for other threads and tasks.
    pub fn control(&self) -> SessionControl {
        SessionControl(self.registry.clone())
    }
    /// Send the desktop's clipboard text to every viewer (UTF-8 to those
    /// that take the Extended Clipboard, Latin-1 to the others).
    pub fn broadcast_cut_text(&self, text: &str) {
        self.clipboard().send(text)
    }
    /// A handle that sends clipboard text to every viewer, for other threads.
    pub fn clipboard(&self) -> ClipboardBroadcast {
        ClipboardBroadcast(self.registry.clone())
    }
    /// Becomes true when the server is told to stop (for work outside the
    /// server that must stop with it, such as dialling out).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
    /// Something that can stop the server from elsewhere (a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone())
    }
    /// Stop accepting, close every session, and wait.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }
    /// Wait until the server stops by itself (the screen source went away).
    /// The capture thread is stopped and joined before this returns.
    pub async fn wait(self) -> Result<(), ServerError> {
        let r = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Panicked(e.to_string())),
        };
        self.capture_stop.store(true, Ordering::Relaxed);
        let capture = self.capture;
        // It looks at the flag at least every 100 ms (plus one grab).
        let joined = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || capture.join()),
        )
        .await;
        if joined.is_err() {
            warn!("the capture thread did not stop within 5 s");
        }
        r
    }
}

/// The running sessions, from anywhere: rights, tickets, ids.
#[derive(Clone)]
pub struct SessionControl(Arc<Registry>);

impl SessionControl {
    /// Ids of the running sessions (past ServerInit): the journal's session ids.
    pub fn session_ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.0.sessions.lock().unwrap().keys().copied().collect();
        v.sort_unstable();
        v
    }
    /// End every running session of `ticket` (it was closed). Returns how
    /// many were told to stop; each ends with reason "ticket closed".
    pub fn end_ticket_sessions(&self, ticket: &str) -> usize {
        let s = self.0.sessions.lock().unwrap();
        let mut n = 0;
        for r in s.values().filter(|r| r.ticket.as_deref() == Some(ticket)) {
            if r.tx.try_send(Control::TicketClosed).is_ok() {
                n += 1;
            }
        }
        n
    }
    /// Tickets of the running sessions.
    pub fn running_tickets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .sessions
            .lock()
            .unwrap()
            .values()
            .filter_map(|r| r.ticket.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
    /// The running sessions, oldest first.
    pub fn running(&self) -> Vec<RunningSession> {
        let mut v: Vec<RunningSession> = self
            .0
            .sessions
            .lock()
            .unwrap()
            .iter()
            .map(|(id, r)| RunningSession {
                id: *id,
                peer: r.peer,
                ticket: r.ticket.clone(),
                technician: r.owner.1.clone(),
            })
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }
    /// "Pause input" at the screen: every running session becomes view-only
    /// (held keys and buttons are let go), and so does every session that
    /// starts while paused. Resuming gives each session back what its
    /// credential and consent allowed. Each change is journaled with `by`.
    pub fn pause_input(&self, paused: bool, by: &str) {
        self.0.input_paused.store(paused, Ordering::SeqCst);
        let rights = if paused {
            Rights::VIEW_ONLY
        } else {
            Rights::FULL
        };
        for id in self.session_ids() {
            self.set_rights(id, rights, by);
        }
    }
    pub fn input_paused(&self) -> bool {
        self.0.input_paused.load(Ordering::SeqCst)
    }
    /// "Stop sharing" at the screen: end every running session now (each
    /// ends with reason "stopped at the screen"). Returns how many.
    pub fn stop_sharing(&self) -> usize {
        let s = self.0.sessions.lock().unwrap();
        s.values()
            .filter(|r| r.tx.try_send(Control::StopSharing).is_ok())
            .count()
    }
    /// Change what session `id` may do, at once; `by` is journaled with
    /// the change. False if there is no such session.
    pub fn set_rights(&self, id: u64, rights: Rights, by: &str) -> bool {
        let tx = self
            .0
            .sessions
            .lock()
            .unwrap()
            .get(&id)
            .map(|r| r.tx.clone());
        match tx {
            Some(tx) => tx
                .try_send(Control::SetRights {
                    rights,
                    by: by.to_string(),
                })
                .is_ok(),
            None => false,
        }
    }
}

#[derive(Clone)]
pub struct ClipboardBroadcast(Arc<Registry>);

impl ClipboardBroadcast {
    /// Send the desktop's clipboard text (at most MAX_CUT_TEXT bytes, cut
    /// at a character) to every viewer; each gets it in the form it takes.
    pub fn send(&self, text: &str) {
        let mut end = text.len().min(limits::MAX_CUT_TEXT as usize);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        for tx in self.0.sessions.lock().unwrap().values().map(|r| &r.tx) {
            let _ = tx.try_send(Control::ServerCutText(text.to_string()));
        }
    }
}

#[derive(Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Start listening and capturing. Returns once every listener is bound.
pub async fn start(
    cfg: ServerConfig,
    source: Box<dyn ScreenSource>,
    input: Arc<dyn InputSink>,
) -> Result<ServerHandle, ServerError> {
    // No listener is fine: `connect` only dials out.
    let offers = cfg
        .listen
        .iter()
        .map(|a| cfg.offer_for(*a).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let webs: Vec<Arc<WebOptions>> = cfg
        .listen
        .iter()
        .map(|a| Arc::new(cfg.web_for(*a)))
        .collect();
    let insecure: Vec<String> = cfg
        .listen
        .iter()
        .filter(|a| !a.ip().is_loopback() && cfg.insecure)
        .map(|a| a.to_string())
        .collect();
    if !insecure.is_empty() {
        if let Some(o) = &cfg.observer {
            o.server_notice(&ServerNotice::Insecure {
                addresses: insecure.clone(),
            });
        }
        warn!(addresses = ?insecure, "--insecure: bare VNC security offered off loopback; passwords and screen cross the network unencrypted");
    }
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in &cfg.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: *addr,
                source,
            })?;
        addrs.push(l.local_addr().map_err(|source| ServerError::Bind {
            addr: *addr,
            source,
        })?);
        listeners.push(l);
    }

    // The first frame is needed before any ServerInit can be sent.
    let (source, first) = tokio::task::spawn_blocking(move || {
        let mut source = source;
        let r = source.next(Duration::from_secs(5));
        (source, r)
    })
    .await
    .map_err(|e| ServerError::NoFirstFrame(e.to_string()))?;
    let first = first?.ok_or_else(|| ServerError::NoFirstFrame("nothing within 5 s".into()))?;
    let desktop_name = cfg.desktop_name.clone().unwrap_or_else(|| source.name());
    let (frame_tx, frame_rx) = watch::channel(Arc::new(Published {
        seq: 1,
        frame: first.frame,
        moves: Vec::new(),
        cursor: first.cursor.map(|c| (1, Arc::new(c))),
        damage: Arc::new(Vec::new()),
        screens: Arc::new(first.screens.unwrap_or_default()),
        pointer: first.pointer,
        leds: first.leds,
    }));
    let (cap_err_tx, cap_err_rx) = tokio::sync::oneshot::channel();
    let min_interval = Duration::from_secs(1) / cfg.max_fps.max(1);
    let capture_stop = Arc::new(AtomicBool::new(false));
    let stop = capture_stop.clone();
    let demand = Arc::new(crate::capture::Demand::default());
    let wanted = demand.clone();
    let capture = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            // A panic here must not look like a normal stop (the channel
            // closing): it ends the server with an error saying so.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                capture_loop(source, frame_tx, min_interval, &stop, &wanted)
            }));
            let e = match r {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    error!(error = %e, "screen source failed; stopping");
                    e
                }
                Err(p) => {
                    let msg = panic_message(p.as_ref());
                    error!(
                        thread = "capture",
                        "the capture thread panicked ({msg}); stopping"
                    );
                    CaptureError::Panicked(msg)
                }
            };
            let _ = cap_err_tx.send(e);
        })
        .expect("spawn capture thread");

    let throttle = Arc::new(AuthThrottle::new(
        cfg.auth_failures_before_block,
        cfg.auth_block_base,
        Duration::from_secs(limits::AUTH_BLOCK_MAX_SECS),
    ));
    let budget = GuessBudget::new(cfg.auth_failures_per_minute);
    let scfg = Arc::new(SessionConfig {
        throttle: throttle.clone(),
        budget,
        failure_delay: cfg.auth_failure_delay,
        authenticator: cfg.authenticator.clone(),
        tls: cfg.tls.clone(),
        desktop_name,
        view_only: cfg.view_only,
        drawn_cursor: cfg.drawn_cursor,
        mac_viewer_keyboard: cfg.mac_viewer_keyboard,
        resizer: cfg.resizer.clone(),
        consent: cfg.consent.clone(),
        ticket: cfg.ticket.clone(),
        handshake_timeout: cfg.handshake_timeout,
        write_stall_timeout: cfg.write_stall_timeout,
    });
    let registry = Arc::new(Registry {
        sessions: Mutex::default(),
        pending: Mutex::default(),
        input_paused: Default::default(),
        throttle: throttle.clone(),
        observer: cfg.observer.clone(),
        noisy: NoisyLog::default(),
        preauth: PreauthTable::new(PreauthLimits {
            hard: cfg.max_preauth.max(1),
            soft: cfg.max_preauth.max(1) / 2,
            per_network: limits::MAX_PREAUTH_PER_NETWORK.min(cfg.max_preauth.max(1)),
            fair_share: limits::PREAUTH_FAIR_SHARE,
        }),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let input: Arc<dyn InputSink> = input;

    let reg = registry.clone();
    let next_id = Arc::new(AtomicU64::new(1));
    let reverse_offer = Arc::new(cfg.outbound_offer(Direction::Reverse));
    let template = SessionContext {
        cfg: scfg,
        offer: Arc::new(cfg.outbound_offer(Direction::Repeater)),
        host: registry.clone(),
        input,
        frames: frame_rx,
        demand,
        shared: crate::encoding::shared::SharedEncodings::new(),
    };
    let ctx = template.clone();
    let ids = next_id.clone();
    let task = tokio::spawn(async move {
        let next_id = ids;
        let mut accept_tasks = tokio::task::JoinSet::new();
        for ((l, offer), web) in listeners.into_iter().zip(offers).zip(webs) {
            info!(addr = ?l.local_addr().ok(), security = %offer.describe(), "offering");
            accept_tasks.spawn(accept_loop(
                l,
                SessionContext {
                    offer,
                    ..ctx.clone()
                },
                reg.clone(),
                next_id.clone(),
                shutdown_rx.clone(),
                web,
            ));
        }
        drop(ctx);
        let mut shutdown_rx = shutdown_rx;
        let result = tokio::select! {
            _ = wait_true(&mut shutdown_rx) => Ok(()),
            e = cap_err_rx => match e {
                Ok(e) => Err(ServerError::Capture(e)),
                Err(_) => Ok(()),
            },
        };
        accept_tasks.shutdown().await;
        // Close every session (pre-auth ones too) and give them a moment.
        let all: Vec<_> = reg
            .sessions
            .lock()
            .unwrap()
            .values()
            .map(|r| r.tx.clone())
            .chain(reg.pending.lock().unwrap().values().cloned())
            .collect();
        for tx in &all {
            let _ = tx.try_send(Control::Shutdown);
        }
        for tx in all {
            let _ = tokio::time::timeout(Duration::from_secs(2), tx.closed()).await;
        }
        result
    });
    Ok(ServerHandle {
        addrs,
        shutdown: shutdown_tx,
        registry,
        task,
        template,
        reverse_offer,
        next_id,
        capture,
        capture_stop,
    })
}

async fn accept_loop(
    l: TcpListener,
    ctx: SessionContext,
    reg: Arc<Registry>,
    next_id: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
    web: Arc<WebOptions>,
) {
    let refusals = Arc::new(Semaphore::new(limits::MAX_POLITE_REFUSALS));
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = wait_true(&mut shutdown) => return,
        };
        if let Some(left) = reg.throttle.blocked(peer.ip()) {
            let reason = format!(
                "too many failed authentications from this address; try again in {} s",
                left.as_secs().max(1)
            );
            debug!(%peer, seconds_left = left.as_secs(), "refusing: too many failed authentications");
            refuse_politely(stream, reason, &refusals);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (admission, slot) = reg.preauth.admit(id, peer.ip(), rand::random::<f64>());
        match admission {
            Admission::Drop => {
                debug!(%peer, "too many connections in the handshake from this network; dropping this one");
                refuse_politely(
                    stream,
                    "the server is busy; try again shortly".into(),
                    &refusals,
                );
                continue;
            }
            Admission::Admit { evict: Some(old) } => {
                // Make room at the expense of the oldest silent connection
                // of the network holding the most.
                if let Some(tx) = reg.pending.lock().unwrap().get(&old) {
                    let _ = tx.try_send(Control::Kick);
                }
                debug!(%peer, evicted = old, "handshake slots full; closed the oldest of the busiest network");
            }
            Admission::Admit { evict: None } => {}
        }
        let _ = stream.set_nodelay(true);
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        reg.pending.lock().unwrap().insert(id, ctl_tx);
        let info = SessionInfo {
            id,
            peer: Some(peer),
            ..Default::default()
        };
        let (ctx, reg, web) = (ctx.clone(), reg.clone(), web.clone());
        tokio::spawn(async move {
            // A browser or a plain RFB viewer? Bounded in time, holding the
            // pre-authentication slot. An eviction or shutdown during the
            // short sniff waits for the session (which tells an RFB viewer
            // its version first, as before); during a browser's upgrade it
            // ends the connection.
            let mut ctl_rx = ctl_rx;
            let accepted = match web::sniff(stream, &web).await {
                web::Sniffed::Rfb(stream) => Accepted::Rfb(stream),
                web::Sniffed::Done => Accepted::Done,
                web::Sniffed::Talker(t) => tokio::select! {
                    a = web::accept(t, &web) => a,
                    _ = ctl_rx.recv() => Accepted::Done,
                },
            };
            let slot = slot.map(|s| Box::new(s) as _);
            match accepted {
                Accepted::Rfb(stream) => {
                    session::run_session(stream, info, ctx, ctl_rx, slot).await;
                }
                Accepted::WebSocket {
                    transport,
                    offer,
                    secure,
                } => {
                    info!(session = id, %peer, secure, "browser viewer: WebSocket opened");
                    let ctx = SessionContext { offer, ..ctx };
                    session::run_session(transport, info, ctx, ctl_rx, slot).await;
                }
                Accepted::Done => {}
            }
            reg.pending.lock().unwrap().remove(&id);
        });
    }
}

/// Tell a refused viewer why (the RFB refusal with a reason, which
/// viewers show), within a short deadline, on a bounded number of tasks;
/// beyond that bound the socket is just closed.
fn refuse_politely(stream: tokio::net::TcpStream, reason: String, slots: &Arc<Semaphore>) {
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        drop(stream);
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _permit = permit;
        let mut stream = stream;
        let mut conn = Handshake::refusing(&reason);
        let deadline = Duration::from_secs(limits::REFUSAL_TIMEOUT_SECS);
        let _ = tokio::time::timeout(deadline, async {
            let mut buf = [0u8; 64];
            loop {
                let out = conn.take_output();
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
                loop {
                    match conn.poll_event() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            let out = conn.take_output();
                            let _ = stream.write_all(&out).await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.receive(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
    });
}

/// How long the capture loop waits for a viewer to want a frame before
/// letting the source drain its events.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Idle waits before the pause is logged (about 2 s).
const PAUSE_LOG_AFTER: u32 = 10;

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Runs on its own thread: take frames from the source and publish them,
/// until told to stop, nobody listens, or the source fails.
fn capture_loop(
    mut source: Box<dyn ScreenSource>,
    tx: watch::Sender<Arc<Published>>,
    min_interval: Duration,
    stop: &AtomicBool,
    demand: &crate::capture::Demand,
) -> Result<(), CaptureError> {
    let mut last = std::time::Instant::now()
        .checked_sub(min_interval)
        .unwrap_or_else(std::time::Instant::now);
    let mut seq = tx.borrow().seq;
    let mut cursor = tx.borrow().cursor.clone();
    let mut screens = tx.borrow().screens.clone();
    // Damage is computed here, once per capture, for every viewer.
    let mut history = FrameHistory::new(tx.borrow().frame.clone());
    // Waits without a viewer wanting a frame; the pause is logged (with
    // the grab count, which must not move until the resume) once it has
    // lasted a while, not at every gap between one viewer's requests.
    let mut unwanted = 0u32;
    let mut paused_at: Option<u64> = None;
    let mut joins_seen = 0u64;
    loop {
        if tx.is_closed() || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !demand.wait(IDLE_WAIT) {
            source.idle()?;
            unwanted = unwanted.saturating_add(1);
            if unwanted == PAUSE_LOG_AFTER {
                let grabs = crate::capture::grabs();
                info!(grabs, "capture paused: no viewer wants a frame");
                paused_at = Some(grabs);
            }
            continue;
        }
        let resumed = std::mem::take(&mut unwanted) > 0;
        // A viewer joined since the last turn: publish whatever this turn
        // finds, and read the pointer and lock keys now.
        let joins = demand.joins();
        let fresh = resumed || joins != joins_seen;
        joins_seen = joins;
        if fresh {
            source.refresh();
        }
        if let Some(before) = paused_at.take() {
            let grabs = crate::capture::grabs();
            info!(
                grabs,
                grabs_while_paused = grabs - before,
                "capture resumed: a viewer wants a frame"
            );
        }
        // Latency first: a change is captured as soon as it is seen, but
        // never sooner than 1/max_fps after the previous capture.
        let since = last.elapsed();
        if since < min_interval {
            std::thread::sleep(min_interval - since);
        }
        match source.next(Duration::from_millis(100)) {
            Ok(Some(c)) => {
                last = std::time::Instant::now();
                seq += 1;
                if let Some(shape) = c.cursor {
                    cursor = Some((seq, Arc::new(shape)));
                }
                if let Some(layout) = c.screens {
                    screens = Arc::new(layout);
                }
                let found = history.record(seq, &c.frame, c.damage.as_deref(), c.moves);
                tx.send_replace(Arc::new(Published {
                    seq,
                    frame: c.frame,
                    moves: found.moves,
                    cursor: cursor.clone(),
                    damage: history.log(),
                    screens: screens.clone(),
                    pointer: c.pointer,
                    leds: c.leds,
                }));
            }
            Ok(None) if fresh => {
                // Nothing changed: the same frame, published again so a
                // viewer that joined knows it is current.
                let prev = tx.borrow().clone();
                seq += 1;
                history.record(seq, &prev.frame, Some(&[]), Vec::new());
                tx.send_replace(Arc::new(Published {
                    seq,
                    frame: prev.frame.clone(),
                    moves: Vec::new(),
                    cursor: prev.cursor.clone(),
                    damage: history.log(),
                    screens: prev.screens.clone(),
                    pointer: prev.pointer,
                    leds: prev.leds,
                }));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod capture_tests {
    use super::*;
    use crate::capture::Capture;
    use crate::framebuffer::Frame;
    use crate::input::NullInput;

    /// One frame, then a panic on the capture thread.
    struct PanicsAfterFirst(u32);

    impl ScreenSource for PanicsAfterFirst {
        fn name(&self) -> String {
            "panics".into()
        }
        fn next(&mut self, _max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
            self.0 += 1;
            if self.0 > 1 {
                panic!("injected capture failure");
            }
            Ok(Some(Capture {
                frame: Arc::new(Frame::new(8, 8)),
                damage: None,
                moves: Vec::new(),
                cursor: None,
                screens: None,
                pointer: None,
                leds: None,
            }))
        }
        // With no viewer the source is only asked to idle.
        fn idle(&mut self) -> Result<(), CaptureError> {
            self.next(Duration::ZERO).map(|_| ())
        }
    }

    /// Issue 10, fault 2: before, a panic in the capture thread closed the
    /// error channel unsent, which the server took for a normal stop, and
    /// `wait` returned Ok (exit status 0).
    #[tokio::test]
    async fn capture_panic_is_an_error() {
        let cfg = ServerConfig::new(Vec::new(), None);
        let handle = start(cfg, Box::new(PanicsAfterFirst(0)), Arc::new(NullInput))
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), handle.wait())
            .await
            .expect("the server ends when its capture thread panics");
        match r {
            Err(ServerError::Capture(CaptureError::Panicked(m))) => {
                assert!(m.contains("injected capture failure"), "{m}")
            }
            other => panic!("expected a capture panic error, got {other:?}"),
        }
    }
}
