//! The xdg-desktop-portal screen source (issue 16): KDE, and any desktop
//! whose portal backend offers ScreenCast (xdg-desktop-portal-kde,
//! -gnome, -wlr). Through the `ashpd` crate, on the session bus:
//!
//! - with a RemoteDesktop portal: `RemoteDesktop.CreateSession`,
//!   `SelectDevices(keyboard | pointer, persist_mode 2, restore_token)`,
//!   `ScreenCast.SelectSources(monitor, cursor mode)`, `RemoteDesktop.Start`
//!   (the dialog), then input through the same session;
//! - without one (xdg-desktop-portal-wlr offers ScreenCast only):
//!   `ScreenCast.CreateSession`, `SelectSources(monitor, cursor mode,
//!   persist_mode 2, restore_token)`, `ScreenCast.Start`; no input.
//!
//! Then `OpenPipeWireRemote` gives a PipeWire connection that shows only the
//! granted node, and [`super::pipewire`] (the consumer the GNOME source
//! uses) reads frames and cursor metadata from it.
//!
//! The restore token the portal returns is kept in a 0600 file beside the
//! journal and offered at the next start, so the customer answers the
//! dialog once. The portal ignores a token it does not know (revoked,
//! expired, another machine) and shows the dialog again.
//!
//! ashpd is async: it runs on a thread of its own with a current-thread
//! tokio runtime (never on the server's runtime), which also carries the
//! input calls ([`PortalCall`]) and notices the portal closing the session.

use super::pipewire::PwStream;
use super::wayland_ping::MaybePing;
use super::{Capture, CaptureError, CursorShape, ScreenSource};
use crate::framebuffer::Frame;
use ashpd::desktop::remote_desktop::{
    Axis, DeviceType, KeyState, RemoteDesktop, SelectDevicesOptions,
};
use ashpd::desktop::screencast::{CursorMode, Screencast, SelectSourcesOptions, SourceType};
use ashpd::desktop::{PersistMode, ResponseError, Session};
use ashpd::enumflags2::BitFlags;
use futures_util::StreamExt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, info, warn};

/// The restore token's file, in the journal's directory.
pub const TOKEN_FILE: &str = "portal-restore-token";
/// The longest token kept (xdg-desktop-portal's are UUIDs, 36 bytes).
const MAX_TOKEN: usize = 256;
/// How long the customer has to answer the dialog.
pub const DIALOG_WAIT: Duration = Duration::from_secs(180);
/// How often a quiet stream checks that the portal session is still open.
const ALIVE_CHECK: Duration = Duration::from_secs(2);
/// Input calls waiting for the portal thread.
const CALLS: usize = 1024;

#[derive(Debug, Error)]
pub enum PortalError {
    #[error("cannot reach the session bus: {0}")]
    Bus(String),
    #[error(
        "no xdg-desktop-portal ScreenCast on the session bus ({0}): install xdg-desktop-portal \
         and the desktop's backend (xdg-desktop-portal-kde, -gnome or -wlr)"
    )]
    NoPortal(String),
    /// The customer said no (or closed the dialog).
    #[error("the customer cancelled the screen-sharing dialog: nothing is shared")]
    Cancelled,
    #[error("the portal refused {0}: {1}")]
    Refused(&'static str, String),
    #[error("the screen-sharing dialog was not answered within {0:?}")]
    NoAnswer(Duration),
    #[error("the portal granted no monitor stream")]
    NoStream,
    #[error("{0}")]
    PipeWire(String),
    #[error("cannot start a thread: {0}")]
    Thread(String),
}

/// One input event for the RemoteDesktop portal (see
/// [`crate::input::portal`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PortalCall {
    /// `NotifyPointerMotionAbsolute` on the stream, in its logical
    /// coordinates.
    Motion { x: f64, y: f64 },
    /// `NotifyPointerButton` with an evdev code.
    Button { code: i32, down: bool },
    /// `NotifyPointerAxisDiscrete`: `horizontal` or vertical, steps.
    Axis { horizontal: bool, steps: i32 },
    /// `NotifyKeyboardKeysym`.
    Keysym { keysym: u32, down: bool },
}

/// What the customer granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    pub keyboard: bool,
    pub pointer: bool,
}

/// Where the restore token is kept: beside the sqlite journal `journal`
/// when it is a file there, else in the default journal's directory.
pub fn token_path(journal: &Path) -> Option<PathBuf> {
    if journal.is_file() {
        if let Some(dir) = journal.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            return Some(dir.join(TOKEN_FILE));
        }
    }
    crate::tickets::default_db_path()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(TOKEN_FILE)))
}

/// The kept token, if it looks like one (printable ASCII, bounded).
pub fn read_token(path: &Path) -> Option<String> {
    use std::io::Read;
    // Bounded: whatever the file holds, no more than a token is read.
    let mut t = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TOKEN as u64 + 2)
        .read_to_string(&mut t)
        .ok()?;
    let t = t.trim();
    (!t.is_empty() && t.len() <= MAX_TOKEN && t.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| t.to_owned())
}

/// Keep `token` in `path`, mode 0600 from the start (a new file renamed
/// over the old one).
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(std::io::Error::other(
            "the portal's restore token is malformed",
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The choices made before the dialog.
#[derive(Clone, Debug)]
pub struct PortalOptions {
    /// Where the restore token is kept (`None`: not kept, the dialog every time).
    pub token_file: Option<PathBuf>,
    /// Ask for keyboard and pointer too (RemoteDesktop), when the portal has it.
    pub want_input: bool,
}

/// An open portal session: its stream, and the thread that owns it.
pub struct PortalSession {
    pub node_id: u32,
    /// The stream's size in the compositor's logical coordinates (input
    /// positions are given in these), when the portal says.
    pub logical_size: Option<(u32, u32)>,
    pub granted: Granted,
    remote: Mutex<Option<OwnedFd>>,
    calls: Option<tokio::sync::mpsc::Sender<PortalCall>>,
    closed: Arc<AtomicBool>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for PortalSession {
    fn drop(&mut self) {
        if let Some(s) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.send(());
        }
        self.calls = None;
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// What the portal thread reports once the dialog is answered.
struct Opened {
    node_id: u32,
    logical_size: Option<(u32, u32)>,
    granted: Granted,
    remote: OwnedFd,
}

enum AnySession {
    Remote(RemoteDesktop, Session<RemoteDesktop>),
    Cast(Session<Screencast>),
}

/// How long closing a session may take (a hung portal must not hold up
/// the server's exit).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl AnySession {
    async fn close(&self) {
        let close = async {
            match self {
                AnySession::Remote(_, s) => s.close().await,
                AnySession::Cast(s) => s.close().await,
            }
        };
        let r = tokio::time::timeout(CLOSE_WAIT, close)
            .await
            .unwrap_or(Ok(()));
        if let Err(e) = r {
            debug!(error = %e, "portal: closing the session");
        }
    }
}

fn refused(what: &'static str) -> impl Fn(ashpd::Error) -> PortalError {
    move |e| match e {
        ashpd::Error::Response(ResponseError::Cancelled) => PortalError::Cancelled,
        e => PortalError::Refused(what, e.to_string()),
    }
}

impl PortalSession {
    /// Ask the portal for one monitor (and input when `opts.want_input`),
    /// waiting for the customer's answer (at most [`DIALOG_WAIT`]).
    pub fn open(opts: PortalOptions) -> Result<Arc<PortalSession>, PortalError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Opened, PortalError>>();
        let (calls_tx, calls_rx) = tokio::sync::mpsc::channel::<PortalCall>(CALLS);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let closed = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        let thread = std::thread::Builder::new()
            .name("portal".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(PortalError::Thread(e.to_string())));
                        return;
                    }
                };
                rt.block_on(portal_thread(opts, ready_tx, calls_rx, stop_rx, c));
            })
            .map_err(|e| PortalError::Thread(e.to_string()))?;
        let opened = match ready_rx.recv_timeout(DIALOG_WAIT + Duration::from_secs(30)) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = stop_tx.send(());
                return Err(PortalError::NoAnswer(DIALOG_WAIT));
            }
        };
        let input = opened.granted.keyboard || opened.granted.pointer;
        Ok(Arc::new(PortalSession {
            node_id: opened.node_id,
            logical_size: opened.logical_size,
            granted: opened.granted,
            remote: Mutex::new(Some(opened.remote)),
            calls: input.then_some(calls_tx),
            closed,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Whether the portal closed the session (the customer stopped sharing,
    /// or the portal went away).
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Hand an input event to the portal thread (waits while
    /// [`CALLS`] are queued). `false`: no input was granted, or the session
    /// is gone.
    pub fn call(&self, c: PortalCall) -> bool {
        match &self.calls {
            Some(tx) => tx.blocking_send(c).is_ok(),
            None => false,
        }
    }

    /// The PipeWire connection (once).
    fn take_remote(&self) -> Option<OwnedFd> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

async fn portal_thread(
    opts: PortalOptions,
    ready: std::sync::mpsc::Sender<Result<Opened, PortalError>>,
    mut calls: tokio::sync::mpsc::Receiver<PortalCall>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    closed: Arc<AtomicBool>,
) {
    let opened = tokio::time::timeout(DIALOG_WAIT, open_session(&opts)).await;
    let (session, opened) = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(PortalError::NoAnswer(DIALOG_WAIT)));
            return;
        }
    };
    let node_id = opened.node_id;
    let mut closed_signal = match &session {
        AnySession::Remote(_, s) => s.receive_closed().await.map(|s| s.boxed()),
        AnySession::Cast(s) => s.receive_closed().await.map(|s| s.boxed()),
    }
    .ok();
    if ready.send(Ok(opened)).is_err() {
        session.close().await;
        return;
    }
    // Input calls until we stop (the session is dropped). A sink that is
    // gone (or none: view-only) does not end the session.
    let mut failing = false;
    let mut calls_open = true;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            c = calls.recv(), if calls_open => {
                let Some(c) = c else {
                    calls_open = false;
                    continue;
                };
                if let AnySession::Remote(rd, s) = &session {
                    match notify(rd, s, node_id, c).await {
                        Ok(()) => failing = false,
                        Err(e) => {
                            if !failing {
                                warn!(error = %e, "portal input: the portal refused an event");
                            }
                            failing = true;
                        }
                    }
                }
            }
            _ = async {
                match &mut closed_signal {
                    Some(s) => { s.next().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                warn!("the portal closed the screen-sharing session (the customer stopped sharing)");
                closed.store(true, Ordering::SeqCst);
                closed_signal = None;
            }
        }
    }
    if !closed.load(Ordering::SeqCst) {
        session.close().await;
        info!("portal screen-sharing session closed");
    }
}

async fn notify(
    rd: &RemoteDesktop,
    s: &Session<RemoteDesktop>,
    node_id: u32,
    c: PortalCall,
) -> Result<(), ashpd::Error> {
    let state = |down| {
        if down {
            KeyState::Pressed
        } else {
            KeyState::Released
        }
    };
    match c {
        PortalCall::Motion { x, y } => {
            rd.notify_pointer_motion_absolute(s, node_id, x, y, Default::default())
                .await
        }
        PortalCall::Button { code, down } => {
            rd.notify_pointer_button(s, code, state(down), Default::default())
                .await
        }
        PortalCall::Axis { horizontal, steps } => {
            let axis = if horizontal {
                Axis::Horizontal
            } else {
                Axis::Vertical
            };
            rd.notify_pointer_axis_discrete(s, axis, steps, Default::default())
                .await
        }
        PortalCall::Keysym { keysym, down } => {
            rd.notify_keyboard_keysym(s, keysym as i32, state(down), Default::default())
                .await
        }
    }
}

/// Create, select and start a session; a restore token the portal does not
/// take is dropped and the dialog asked for once more.
async fn open_session(opts: &PortalOptions) -> Result<(AnySession, Opened), PortalError> {
    let conn = zbus::Connection::session()
        .await
        .map_err(|e| PortalError::Bus(e.to_string()))?;
    let sc = Screencast::with_connection(conn.clone())
        .await
        .map_err(|e| PortalError::NoPortal(e.to_string()))?;
    let rd = if opts.want_input {
        match RemoteDesktop::with_connection(conn.clone()).await {
            Ok(rd) => Some(rd),
            Err(e) => {
                warn!(
                    reason = %e,
                    "the portal has no RemoteDesktop (xdg-desktop-portal-wlr has none): \
                     serving the screen view-only, viewers' keys and pointer are ignored"
                );
                None
            }
        }
    } else {
        None
    };
    let token = opts.token_file.as_deref().and_then(read_token);
    let cursor = match sc.available_cursor_modes().await {
        Ok(m) if m.contains(CursorMode::Metadata) => CursorMode::Metadata,
        Ok(m) if m.contains(CursorMode::Embedded) => CursorMode::Embedded,
        Ok(_) => CursorMode::Hidden,
        Err(e) => {
            debug!(error = %e, "portal: no AvailableCursorModes; asking for embedded");
            CursorMode::Embedded
        }
    };
    info!(
        screencast_version = sc.version(),
        remote_desktop_version = rd.as_ref().map(|r| r.version()),
        ?cursor,
        restore_token = token.is_some(),
        "xdg-desktop-portal: asking for a monitor"
    );
    let started = match start(&sc, rd.as_ref(), cursor, token.as_deref(), opts).await {
        Err(PortalError::Refused(what, e)) if token.is_some() => {
            warn!(
                error = %e,
                what, "the portal refused the kept restore token; asking the customer again"
            );
            if let Some(f) = &opts.token_file {
                let _ = std::fs::remove_file(f);
            }
            start(&sc, rd.as_ref(), cursor, None, opts).await
        }
        r => r,
    };
    let (started, opened) = started?;
    let session = match (started, rd) {
        (Started::Remote(s), Some(rd)) => AnySession::Remote(rd, s),
        (Started::Cast(s), _) => AnySession::Cast(s),
        (Started::Remote(s), None) => {
            // Not reached: a remote-desktop session needs the proxy.
            let _ = s.close().await;
            return Err(PortalError::NoStream);
        }
    };
    Ok((session, opened))
}

/// A started session, before it is paired with its RemoteDesktop proxy.
enum Started {
    Remote(Session<RemoteDesktop>),
    Cast(Session<Screencast>),
}

impl Started {
    async fn close(&self) {
        let r = match self {
            Started::Remote(s) => s.close().await,
            Started::Cast(s) => s.close().await,
        };
        if let Err(e) = r {
            debug!(error = %e, "portal: closing the session");
        }
    }
}

async fn start(
    sc: &Screencast,
    rd: Option<&RemoteDesktop>,
    cursor: CursorMode,
    token: Option<&str>,
    opts: &PortalOptions,
) -> Result<(Started, Opened), PortalError> {
    let sources = SelectSourcesOptions::default()
        .set_cursor_mode(cursor)
        .set_sources(BitFlags::from(SourceType::Monitor))
        .set_multiple(false);
    let (session, streams, new_token, granted) = match rd {
        // A remote-desktop session persists through SelectDevices (version
        // 2); ScreenCast.SelectSources refuses persist_mode on it.
        Some(rd) => {
            let s = rd
                .create_session(Default::default())
                .await
                .map_err(refused("RemoteDesktop.CreateSession"))?;
            let mut dev = SelectDevicesOptions::default()
                .set_devices(DeviceType::Keyboard | DeviceType::Pointer);
            if rd.version() >= 2 {
                dev = dev
                    .set_persist_mode(PersistMode::ExplicitlyRevoked)
                    .set_restore_token(token);
            }
            rd.select_devices(&s, dev)
                .await
                .and_then(|r| r.response())
                .map_err(refused("RemoteDesktop.SelectDevices"))?;
            sc.select_sources(&s, sources)
                .await
                .and_then(|r| r.response())
                .map_err(refused("ScreenCast.SelectSources"))?;
            let r = rd
                .start(&s, None, Default::default())
                .await
                .and_then(|r| r.response())
                .map_err(refused("RemoteDesktop.Start"))?;
            let d = r.devices();
            let granted = Granted {
                keyboard: d.contains(DeviceType::Keyboard),
                pointer: d.contains(DeviceType::Pointer),
            };
            let streams = r.streams().to_vec();
            let token = r.restore_token().map(str::to_owned);
            (Started::Remote(s), streams, token, granted)
        }
        None => {
            let s = sc
                .create_session(Default::default())
                .await
                .map_err(refused("ScreenCast.CreateSession"))?;
            let sources = if sc.version() >= 4 {
                sources
                    .set_persist_mode(PersistMode::ExplicitlyRevoked)
                    .set_restore_token(token)
            } else {
                sources
            };
            sc.select_sources(&s, sources)
                .await
                .and_then(|r| r.response())
                .map_err(refused("ScreenCast.SelectSources"))?;
            let r = sc
                .start(&s, None, Default::default())
                .await
                .and_then(|r| r.response())
                .map_err(refused("ScreenCast.Start"))?;
            let streams = r.streams().to_vec();
            let token = r.restore_token().map(str::to_owned);
            (Started::Cast(s), streams, token, Granted::default())
        }
    };
    let Some(stream) = streams.first() else {
        session.close().await;
        return Err(PortalError::NoStream);
    };
    let remote = match &session {
        Started::Remote(s) => sc.open_pipe_wire_remote(s, Default::default()).await,
        Started::Cast(s) => sc.open_pipe_wire_remote(s, Default::default()).await,
    };
    let remote = match remote {
        Ok(fd) => fd,
        Err(e) => {
            session.close().await;
            return Err(PortalError::Refused(
                "ScreenCast.OpenPipeWireRemote",
                e.to_string(),
            ));
        }
    };
    match (&opts.token_file, &new_token) {
        (Some(f), Some(t)) => match write_token(f, t) {
            Ok(()) => {
                info!(file = %f.display(), "portal restore token kept (the customer is not asked again)")
            }
            Err(e) => {
                warn!(file = %f.display(), error = %e, "cannot keep the portal's restore token: the customer will be asked again next time")
            }
        },
        (Some(_), None) => {
            info!("the portal gave no restore token: the customer will be asked again next time")
        }
        _ => {}
    }
    let logical_size = stream
        .size()
        .filter(|(w, h)| *w > 0 && *h > 0)
        .map(|(w, h)| (w as u32, h as u32));
    info!(
        node_id = stream.pipe_wire_node_id(),
        ?logical_size,
        keyboard = granted.keyboard,
        pointer = granted.pointer,
        "portal screen cast started"
    );
    Ok((
        session,
        Opened {
            node_id: stream.pipe_wire_node_id(),
            logical_size,
            granted,
            remote,
        },
    ))
}

/// Whether the Wayland compositor in `$WAYLAND_DISPLAY` offers
/// wlr-screencopy (a wlroots compositor, served by `--source wayland`
/// without any dialog); `false` when there is none or it cannot be reached.
pub fn compositor_has_wlr_screencopy() -> bool {
    use wayland_client::globals::{registry_queue_init, GlobalListContents};
    use wayland_client::protocol::wl_registry;
    struct Probe;
    impl wayland_client::Dispatch<wl_registry::WlRegistry, GlobalListContents> for Probe {
        fn event(
            _: &mut Probe,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &wayland_client::Connection,
            _: &wayland_client::QueueHandle<Probe>,
        ) {
        }
    }
    let Ok(conn) = wayland_client::Connection::connect_to_env() else {
        return false;
    };
    let Ok((globals, _queue)) = registry_queue_init::<Probe>(&conn) else {
        return false;
    };
    globals.contents().with_list(|l| {
        l.iter()
            .any(|g| g.interface == "zwlr_screencopy_manager_v1")
    })
}

/// Frames of the monitor the customer granted through the portal.
pub struct PortalSource {
    session: Arc<PortalSession>,
    stream: PwStream,
    frame: Option<Arc<Frame>>,
    pointer: Option<(u16, u16)>,
    /// A pointer image that came before the first picture (sent with it).
    early_cursor: Option<CursorShape>,
    last_check: Instant,
    /// The frame's size, for the input sink (pixels to logical coordinates).
    size: Arc<Mutex<Option<(u16, u16)>>>,
    /// A quiet stream from a hung compositor looks like a still screen, and
    /// the portal frontend answers on the bus all the same: the compositor's
    /// own socket tells (on a Wayland desktop).
    ping: MaybePing,
}

impl PortalSource {
    /// Read `session`'s stream through the PipeWire connection the portal
    /// opened.
    pub fn start(session: Arc<PortalSession>) -> Result<PortalSource, PortalError> {
        let remote = session
            .take_remote()
            .ok_or_else(|| PortalError::PipeWire("the portal's PipeWire remote is taken".into()))?;
        let stream =
            PwStream::connect_fd(remote, session.node_id).map_err(PortalError::PipeWire)?;
        Ok(PortalSource {
            session,
            stream,
            frame: None,
            pointer: None,
            early_cursor: None,
            last_check: Instant::now(),
            size: Arc::new(Mutex::new(None)),
            ping: MaybePing::connect(),
        })
    }

    /// The served frame's size as it changes (read by the input sink).
    pub fn frame_size(&self) -> Arc<Mutex<Option<(u16, u16)>>> {
        self.size.clone()
    }

    fn check(&mut self, ended: Option<String>) -> Result<(), CaptureError> {
        if self.session.closed() {
            return Err(CaptureError::Gone(
                "the portal closed the screen-sharing session (the customer stopped sharing, \
                 or the portal is gone)"
                    .into(),
            ));
        }
        if let Some(why) = ended {
            warn!(reason = %why, "portal screen-cast stream lost");
            return Err(CaptureError::Gone(format!(
                "the portal's screen-cast stream ended: {why}"
            )));
        }
        Ok(())
    }

    fn next_once(&mut self, wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let d = self.stream.take(wait);
        self.check(d.ended.clone())?;
        self.ping.check();
        if d.frame.is_none() && d.cursor.is_none() && d.pointer.is_none() {
            return Ok(None);
        }
        let damage = if let Some(f) = d.frame {
            let resized = self
                .frame
                .as_ref()
                .is_none_or(|old| old.width != f.width || old.height != f.height);
            if resized {
                info!(width = f.width, height = f.height, "portal screen size");
                *self.size.lock().unwrap_or_else(|e| e.into_inner()) = Some((f.width, f.height));
            }
            self.frame = Some(Arc::new(f.pixels));
            if resized {
                None
            } else {
                f.damage
            }
        } else {
            Some(Vec::new())
        };
        if let Some(p) = d.pointer {
            self.pointer = p;
        }
        let Some(frame) = self.frame.clone() else {
            if d.cursor.is_some() {
                self.early_cursor = d.cursor;
            }
            return Ok(None);
        };
        // A newer image replaces one kept from before the first picture.
        let cursor = match d.cursor {
            Some(c) => {
                self.early_cursor = None;
                Some(c)
            }
            None => self.early_cursor.take(),
        };
        Ok(Some(Capture {
            frame,
            damage,
            moves: Vec::new(),
            cursor,
            screens: None,
            pointer: self.pointer,
            leds: None,
        }))
    }
}

impl ScreenSource for PortalSource {
    fn name(&self) -> String {
        "Wayland (xdg-desktop-portal)".into()
    }

    fn idle(&mut self) -> Result<(), CaptureError> {
        self.ping.check();
        if self.last_check.elapsed() >= ALIVE_CHECK {
            self.last_check = Instant::now();
            let ended = self.stream.ended();
            self.check(ended)?;
        }
        Ok(())
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let wait = if self.frame.is_none() {
            max_wait.max(Duration::from_millis(100))
        } else {
            max_wait
        };
        let deadline = Instant::now() + wait;
        loop {
            let got = self.next_once(deadline.saturating_duration_since(Instant::now()))?;
            // Before the first picture, cursor news alone is no answer.
            if got.is_some() || self.frame.is_some() || Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_kept_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub").join(TOKEN_FILE);
        write_token(&f, "3f0c7f0e-7d1b-4e53-9d6b-1a2b3c4d5e6f").unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            read_token(&f).as_deref(),
            Some("3f0c7f0e-7d1b-4e53-9d6b-1a2b3c4d5e6f")
        );
        // A second token replaces the first.
        write_token(&f, "second").unwrap();
        assert_eq!(read_token(&f).as_deref(), Some("second"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn malformed_tokens_are_neither_kept_nor_offered() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(TOKEN_FILE);
        assert!(write_token(&f, "two words").is_err());
        assert!(write_token(&f, &"x".repeat(MAX_TOKEN + 1)).is_err());
        assert!(!f.exists());
        std::fs::write(&f, "bad\u{7}token").unwrap();
        assert_eq!(read_token(&f), None);
        std::fs::write(&f, "").unwrap();
        assert_eq!(read_token(&f), None);
        std::fs::write(&f, "x".repeat(MAX_TOKEN + 1)).unwrap();
        assert_eq!(read_token(&f), None);
        assert_eq!(read_token(&dir.path().join("absent")), None);
    }

    #[test]
    fn the_token_lives_beside_a_sqlite_journal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("journal.db");
        std::fs::write(&db, b"").unwrap();
        assert_eq!(token_path(&db), Some(dir.path().join(TOKEN_FILE)));
    }
}
