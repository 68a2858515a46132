//! The GNOME (mutter) screen source (issue 16), the path gnome-remote-desktop
//! takes: over the session bus, a RemoteDesktop session, a ScreenCast
//! session tied to it (`remote-desktop-session-id`), `RecordMonitor` of
//! the primary monitor (or `--monitor N`) with the cursor as metadata,
//! then the PipeWire stream it names (`PipeWireStreamAdded`), read by [`super::pipewire`].
//! Input goes through the same RemoteDesktop session
//! ([`crate::input::mutter`]).
//!
//! zbus's blocking API runs on threads of our own (never on a tokio
//! worker: its `block_on` cannot run inside a runtime).

use super::pipewire::PwStream;
use super::{Capture, CaptureError, CursorShape, ScreenSource};
use crate::framebuffer::Frame;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, info, warn};
use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

pub const SCREEN_CAST: &str = "org.gnome.Mutter.ScreenCast";
pub const REMOTE_DESKTOP: &str = "org.gnome.Mutter.RemoteDesktop";
const DISPLAY_CONFIG: &str = "org.gnome.Mutter.DisplayConfig";
/// `cursor-mode` of RecordMonitor: the pointer as stream metadata, not
/// drawn into frames (viewers draw it, as with XFixes on X11).
const CURSOR_METADATA: u32 = 2;
/// How long Mutter may take to name the PipeWire stream.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// How often a quiet stream checks that Mutter is still there (a screen
/// that does not change sends no frames).
const ALIVE_CHECK: Duration = Duration::from_secs(2);
/// Mutter not answering a ping on the bus for this long hangs: a stalled
/// stream cannot be told from a still screen on PipeWire's side (our
/// stream's cycles go on while Mutter is stopped), only by Mutter's silence.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// A lost stream is reopened as a new session for this long (PipeWire
/// restarting) before the source gives up...
const REOPEN_FOR: Duration = Duration::from_secs(30);
/// ...trying this often.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The session in use. A lost stream is reopened as a new session, which
/// the input sink and the clipboard follow (they compare generations).
pub struct SessionSlot {
    current: Mutex<MutterSession>,
    generation: AtomicU64,
}

impl SessionSlot {
    fn new(s: MutterSession) -> Arc<SessionSlot> {
        Arc::new(SessionSlot {
            current: Mutex::new(s),
            generation: AtomicU64::new(0),
        })
    }

    /// Bumped on every new session.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The current session and its generation.
    pub fn current(&self) -> (u64, MutterSession) {
        let s = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation(), s.clone())
    }

    fn replace(&self, new: MutterSession) {
        let mut s = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *s = new;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// A lost stream being replaced.
struct Lost {
    cause: String,
    since: Instant,
    last_try: Option<Instant>,
}

#[derive(Debug, Error)]
pub enum MutterError {
    #[error("cannot reach the session bus: {0}")]
    Bus(String),
    #[error("no GNOME screen-cast service ({SCREEN_CAST}) on the session bus: is this a GNOME Wayland session?")]
    NotRunning,
    #[error("Mutter refused {0}: {1}")]
    Call(&'static str, String),
    #[error("Mutter named no PipeWire stream within {0:?}")]
    NoStream(Duration),
    #[error("{0}")]
    PipeWire(String),
    #[error("cannot start a thread: {0}")]
    Thread(String),
    /// `--monitor N` names no monitor Mutter has.
    #[error("{0}")]
    NoMonitor(String),
}

/// Runs `f` on a thread of its own, away from any tokio runtime.
fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MutterError> {
    std::thread::Builder::new()
        .name("mutter-dbus".into())
        .spawn(f)
        .map_err(|e| MutterError::Thread(e.to_string()))?
        .join()
        .map_err(|_| MutterError::Thread("the D-Bus thread panicked".into()))
}

fn has_owner(conn: &Connection, name: &str) -> Result<bool, zbus::Error> {
    let dbus = zbus::blocking::fdo::DBusProxy::new(conn)?;
    let name = zbus::names::BusName::try_from(name.to_owned())
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    Ok(dbus.name_has_owner(name)?)
}

/// Whether the session bus has Mutter's ScreenCast service (a GNOME
/// Wayland session, or a headless mutter).
pub fn mutter_available() -> bool {
    off_runtime(|| {
        Connection::session()
            .ok()
            .and_then(|c| has_owner(&c, SCREEN_CAST).ok())
            .unwrap_or(false)
    })
    .unwrap_or(false)
}

/// One RemoteDesktop session with its screen-cast stream, shared by the
/// source and the input sink.
#[derive(Clone)]
pub struct MutterSession {
    pub(crate) conn: Connection,
    /// The RemoteDesktop session object.
    pub(crate) session: OwnedObjectPath,
    /// The ScreenCast stream object (pointer positions are relative to it).
    pub(crate) stream: OwnedObjectPath,
    pub(crate) connector: String,
    pub(crate) node_id: u32,
    closed: Arc<AtomicBool>,
    /// We asked Mutter to stop the session (its Closed signal is expected).
    stopping: Arc<AtomicBool>,
}

fn proxy<'a>(
    conn: &Connection,
    dest: &'static str,
    path: &'a str,
    iface: &'static str,
) -> Result<Proxy<'a>, MutterError> {
    Proxy::new(conn, dest, path, iface).map_err(|e| MutterError::Bus(e.to_string()))
}

type MonitorSpec = (String, String, String, String);
type Mode = (
    String,
    i32,
    i32,
    f64,
    f64,
    Vec<f64>,
    HashMap<String, OwnedValue>,
);
type Monitor = (MonitorSpec, Vec<Mode>, HashMap<String, OwnedValue>);
type Logical = (
    i32,
    i32,
    f64,
    u32,
    bool,
    Vec<MonitorSpec>,
    HashMap<String, OwnedValue>,
);
type CurrentState = (u32, Vec<Monitor>, Vec<Logical>, HashMap<String, OwnedValue>);

/// The connector to record (DisplayConfig.GetCurrentState): with
/// `monitor` N, the Nth active monitor (0-based, in the order Mutter
/// lists them, as `--monitor` counts outputs on wlroots); without, the
/// primary one.
fn choose_connector(conn: &Connection, monitor: Option<usize>) -> Result<String, MutterError> {
    let dc = proxy(
        conn,
        DISPLAY_CONFIG,
        "/org/gnome/Mutter/DisplayConfig",
        DISPLAY_CONFIG,
    )?;
    let (_, monitors, logical, _): CurrentState = dc
        .call("GetCurrentState", &())
        .map_err(|e| MutterError::Call("GetCurrentState", e.to_string()))?;
    pick_connector(&monitors, &logical, monitor)
}

/// See [`choose_connector`].
fn pick_connector(
    monitors: &[Monitor],
    logical: &[Logical],
    monitor: Option<usize>,
) -> Result<String, MutterError> {
    let Some(n) = monitor else {
        let primary = logical
            .iter()
            .find(|l| l.4)
            .or(logical.first())
            .and_then(|l| l.5.first())
            .map(|m| m.0.clone());
        return primary
            .or_else(|| monitors.first().map(|m| m.0 .0.clone()))
            .ok_or(MutterError::Call("GetCurrentState", "no monitor".into()));
    };
    // Only monitors that show part of the desktop can be recorded.
    let active: Vec<&Monitor> = monitors
        .iter()
        .filter(|m| logical.iter().any(|l| l.5.iter().any(|s| s.0 == m.0 .0)))
        .collect();
    match active.get(n) {
        Some(m) => Ok(m.0 .0.clone()),
        None => {
            let list: Vec<String> = active
                .iter()
                .map(|m| {
                    let size =
                        m.1.iter()
                            .find(|mode| {
                                mode.6
                                    .get("is-current")
                                    .and_then(|v| bool::try_from(v).ok())
                                    .unwrap_or(false)
                            })
                            .map(|mode| format!(" {}x{}", mode.1, mode.2))
                            .unwrap_or_default();
                    format!("{}{size}", m.0 .0)
                })
                .collect();
            Err(MutterError::NoMonitor(format!(
                "--monitor {n}: the compositor has {} output(s): {list:?}",
                active.len()
            )))
        }
    }
}

impl MutterSession {
    /// Create the sessions, record monitor `monitor` (see
    /// [`choose_connector`]), start, and wait for the PipeWire node.
    pub fn open(monitor: Option<usize>) -> Result<MutterSession, MutterError> {
        off_runtime(move || Self::open_blocking(monitor))?
    }

    fn open_blocking(monitor: Option<usize>) -> Result<MutterSession, MutterError> {
        let conn = Connection::session().map_err(|e| MutterError::Bus(e.to_string()))?;
        if !has_owner(&conn, SCREEN_CAST).map_err(|e| MutterError::Bus(e.to_string()))?
            || !has_owner(&conn, REMOTE_DESKTOP).map_err(|e| MutterError::Bus(e.to_string()))?
        {
            return Err(MutterError::NotRunning);
        }
        // A bad --monitor is refused before any session exists.
        let connector = choose_connector(&conn, monitor)?;
        let call =
            |what: &'static str| move |e: zbus::Error| MutterError::Call(what, e.to_string());
        let rd = proxy(
            &conn,
            REMOTE_DESKTOP,
            "/org/gnome/Mutter/RemoteDesktop",
            REMOTE_DESKTOP,
        )?;
        let session: OwnedObjectPath = rd
            .call("CreateSession", &())
            .map_err(call("RemoteDesktop.CreateSession"))?;
        let rd_path = session.to_string();
        let rd_session = proxy(
            &conn,
            REMOTE_DESKTOP,
            &rd_path,
            "org.gnome.Mutter.RemoteDesktop.Session",
        )?;
        let session_id: String = rd_session
            .get_property("SessionId")
            .map_err(call("RemoteDesktop.Session.SessionId"))?;
        let sc = proxy(
            &conn,
            SCREEN_CAST,
            "/org/gnome/Mutter/ScreenCast",
            SCREEN_CAST,
        )?;
        let mut props: HashMap<&str, Value<'_>> = HashMap::new();
        props.insert(
            "remote-desktop-session-id",
            Value::from(session_id.as_str()),
        );
        let sc_path: OwnedObjectPath = sc
            .call("CreateSession", &(props,))
            .map_err(call("ScreenCast.CreateSession"))?;
        let sc_session = proxy(
            &conn,
            SCREEN_CAST,
            sc_path.as_str(),
            "org.gnome.Mutter.ScreenCast.Session",
        )?;
        let mut rec: HashMap<&str, Value<'_>> = HashMap::new();
        rec.insert("cursor-mode", Value::from(CURSOR_METADATA));
        let stream: OwnedObjectPath = sc_session
            .call("RecordMonitor", &(connector.as_str(), rec))
            .map_err(call("ScreenCast.Session.RecordMonitor"))?;
        let stream_proxy = Proxy::new(
            &conn,
            SCREEN_CAST,
            stream.to_string(),
            "org.gnome.Mutter.ScreenCast.Stream",
        )
        .map_err(|e| MutterError::Bus(e.to_string()))?;
        // Subscribed before Start, so the signal cannot be missed.
        let added = stream_proxy
            .receive_signal("PipeWireStreamAdded")
            .map_err(|e| MutterError::Bus(e.to_string()))?;
        let closed_signal = Proxy::new(
            &conn,
            REMOTE_DESKTOP,
            session.to_string(),
            "org.gnome.Mutter.RemoteDesktop.Session",
        )
        .and_then(|p| p.receive_signal("Closed"))
        .map_err(|e| MutterError::Bus(e.to_string()))?;
        rd_session
            .call::<_, _, ()>("Start", &())
            .map_err(call("RemoteDesktop.Session.Start"))?;
        let (tx, rx) = mpsc::channel::<Option<u32>>();
        std::thread::Builder::new()
            .name("mutter-stream".into())
            .spawn(move || {
                let mut added = added;
                let node = added
                    .next()
                    .and_then(|m| m.body().deserialize::<u32>().ok());
                let _ = tx.send(node);
            })
            .map_err(|e| MutterError::Thread(e.to_string()))?;
        let node_id = match rx.recv_timeout(STREAM_WAIT) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(MutterError::Call("Start", "no stream".into())),
            Err(_) => {
                let _ = rd_session.call::<_, _, ()>("Stop", &());
                return Err(MutterError::NoStream(STREAM_WAIT));
            }
        };
        let closed = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        let st = stopping.clone();
        std::thread::Builder::new()
            .name("mutter-closed".into())
            .spawn(move || {
                let mut sig = closed_signal;
                // Ends when the signal comes or the connection closes.
                if sig.next().is_some() {
                    if st.load(Ordering::SeqCst) {
                        info!("GNOME remote-desktop session stopped");
                    } else {
                        warn!("Mutter closed the remote-desktop session");
                    }
                }
                c.store(true, Ordering::SeqCst);
            })
            .map_err(|e| MutterError::Thread(e.to_string()))?;
        info!(
            connector,
            node_id,
            session = session.as_str(),
            "GNOME remote-desktop session started"
        );
        Ok(MutterSession {
            conn,
            session,
            stream,
            connector,
            node_id,
            closed,
            stopping,
        })
    }

    /// Whether Mutter is still there and the session open.
    fn alive(&self) -> Result<(), String> {
        if self.closed.load(Ordering::SeqCst) {
            return Err("Mutter closed the remote-desktop session".into());
        }
        match has_owner(&self.conn, REMOTE_DESKTOP) {
            Ok(true) => Ok(()),
            Ok(false) => Err("Mutter left the session bus (the compositor is gone)".into()),
            Err(e) => Err(format!("the session bus is gone: {e}")),
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(p) = proxy(
            &self.conn,
            REMOTE_DESKTOP,
            self.session.as_str(),
            "org.gnome.Mutter.RemoteDesktop.Session",
        ) {
            let _ = p.call::<_, _, ()>("Stop", &());
        }
    }
}

/// Frames of one monitor (`--monitor`, or the primary one) of a GNOME
/// Wayland session.
pub struct MutterSource {
    /// `--monitor N`, kept for the sessions a lost stream is reopened as.
    monitor: Option<usize>,
    session: MutterSession,
    stream: PwStream,
    frame: Option<Arc<Frame>>,
    pointer: Option<(u16, u16)>,
    last_check: Instant,
    /// A pointer image that came before the first picture (sent with it).
    early_cursor: Option<CursorShape>,
    slot: Arc<SessionSlot>,
    lost: Option<Lost>,
    /// The next picture is sent whole (a new stream).
    whole_next: bool,
    /// Whether Mutter still answers on the bus.
    answers: Answers,
}

/// Pings Mutter on the bus, one ping at a time, each on a thread of its
/// own (a hung Mutter holds the call; the capture thread goes on).
#[derive(Default)]
struct Answers {
    /// The ping in flight: when it was sent, and its answer.
    pending: Option<(Instant, std::sync::mpsc::Receiver<()>)>,
    /// Since when Mutter has not answered (told once).
    silent_since: Option<Instant>,
}

impl Answers {
    /// Look at the ping in flight and send the next one. The stall is
    /// logged when Mutter has been silent for [`ANSWER_WITHIN`], and its
    /// end when Mutter answers again; the stream is kept (its frames come
    /// again once Mutter runs).
    fn check(&mut self, conn: &Connection) {
        if let Some((sent, rx)) = &self.pending {
            match rx.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if sent.elapsed() >= ANSWER_WITHIN && self.silent_since.is_none() {
                        self.silent_since = Some(*sent);
                        warn!(
                            waited = ?sent.elapsed(),
                            "GNOME screen-cast stream stalled: Mutter does not answer on the \
                             session bus (the compositor hangs); waiting for it"
                        );
                    }
                    return;
                }
                // Answered (or the call failed, which is an answer too).
                _ => {
                    if let Some(since) = self.silent_since.take() {
                        info!(after = ?since.elapsed(), "Mutter answers again");
                    }
                    self.pending = None;
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let conn = conn.clone();
        let spawned = std::thread::Builder::new()
            .name("gnome-ping".into())
            .spawn(move || {
                let _ = conn.call_method(
                    Some(REMOTE_DESKTOP),
                    "/org/gnome/Mutter/RemoteDesktop",
                    Some("org.freedesktop.DBus.Peer"),
                    "Ping",
                    &(),
                );
                let _ = tx.send(());
            });
        if spawned.is_ok() {
            self.pending = Some((Instant::now(), rx));
        }
    }
}

impl MutterSource {
    /// Open a session and its stream. The session is shared with
    /// [`crate::input::mutter::MutterInput::start`].
    pub fn start(monitor: Option<usize>) -> Result<(MutterSource, Arc<SessionSlot>), MutterError> {
        let (session, stream) = Self::open_stream(monitor)?;
        let slot = SessionSlot::new(session.clone());
        Ok((
            MutterSource {
                monitor,
                session,
                stream,
                frame: None,
                pointer: None,
                last_check: Instant::now(),
                early_cursor: None,
                slot: slot.clone(),
                lost: None,
                whole_next: false,
                answers: Answers::default(),
            },
            slot,
        ))
    }

    fn open_stream(monitor: Option<usize>) -> Result<(MutterSession, PwStream), MutterError> {
        let session = MutterSession::open(monitor)?;
        match PwStream::connect(session.node_id) {
            Ok(stream) => Ok((session, stream)),
            Err(e) => {
                let s = session.clone();
                let _ = off_runtime(move || s.stop());
                Err(MutterError::PipeWire(e))
            }
        }
    }

    /// The stream or the session is lost (`cause`). Mutter or the bus gone
    /// ends the source; anything else opens a new session (tried for
    /// [`REOPEN_FOR`]).
    fn lose(&mut self, cause: String) -> Result<(), CaptureError> {
        let fatal = match has_owner(&self.session.conn, REMOTE_DESKTOP) {
            Ok(true) => None,
            Ok(false) => Some("Mutter left the session bus (the compositor is gone)".to_owned()),
            Err(e) => Some(format!("the session bus is gone: {e}")),
        };
        if let Some(cause) = fatal {
            warn!(reason = %cause, "GNOME screen source lost");
            return Err(CaptureError::Gone(cause));
        }
        if self.lost.is_none() {
            warn!(reason = %cause, "GNOME screen-cast stream lost; opening a new session");
            let s = self.session.clone();
            let _ = off_runtime(move || s.stop());
            self.lost = Some(Lost {
                cause,
                since: Instant::now(),
                last_try: None,
            });
        }
        self.reopen()
    }

    /// One more try at a new session (at most every [`REOPEN_EVERY`]).
    fn reopen(&mut self) -> Result<(), CaptureError> {
        let Some(lost) = &mut self.lost else {
            return Ok(());
        };
        if lost.last_try.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return Ok(());
        }
        lost.last_try = Some(Instant::now());
        match Self::open_stream(self.monitor) {
            Ok((session, stream)) => {
                info!(
                    node_id = session.node_id,
                    session = session.session.as_str(),
                    "GNOME screen cast reopened"
                );
                self.session = session.clone();
                self.stream = stream;
                self.slot.replace(session);
                self.lost = None;
                self.whole_next = true;
                self.last_check = Instant::now();
                Ok(())
            }
            Err(e) if lost.since.elapsed() >= REOPEN_FOR => {
                let cause = format!("{}; no new session within {REOPEN_FOR:?}: {e}", lost.cause);
                warn!(reason = %cause, "GNOME screen source lost");
                Err(CaptureError::Gone(cause))
            }
            Err(e) => {
                debug!(error = %e, "GNOME screen cast not reopened yet");
                Ok(())
            }
        }
    }
}

impl Drop for MutterSource {
    fn drop(&mut self) {
        let s = self.session.clone();
        let _ = off_runtime(move || s.stop());
    }
}

impl ScreenSource for MutterSource {
    fn name(&self) -> String {
        format!("GNOME {}", self.session.connector)
    }

    /// While no viewer wants a frame: notice a lost stream or session
    /// (frames delivered meanwhile stay for the next capture).
    fn idle(&mut self) -> Result<(), CaptureError> {
        if self.lost.is_some() {
            return self.reopen();
        }
        let cause = match self.stream.ended() {
            Some(why) => Some(self.session.alive().err().unwrap_or(why)),
            None if self.last_check.elapsed() >= ALIVE_CHECK => {
                self.last_check = Instant::now();
                self.answers.check(&self.session.conn);
                self.session.alive().err()
            }
            None => None,
        };
        match cause {
            Some(cause) => self.lose(cause),
            None => Ok(()),
        }
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        // The first frame may take a moment; there is nothing to serve before.
        let wait = if self.frame.is_none() {
            max_wait.max(Duration::from_millis(100))
        } else {
            max_wait
        };
        let deadline = Instant::now() + wait;
        if self.lost.is_some() {
            self.reopen()?;
            if self.lost.is_some() {
                std::thread::sleep(wait.min(Duration::from_millis(200)));
                return Ok(None);
            }
        }
        loop {
            let got = self.next_once(deadline.saturating_duration_since(Instant::now()))?;
            // Before the first picture, cursor news alone is no answer: a
            // loaded Mutter sends the pointer's buffer first, and the
            // server's one wait for a first frame would end on it.
            if got.is_some()
                || self.frame.is_some()
                || self.lost.is_some()
                || Instant::now() >= deadline
            {
                return Ok(got);
            }
        }
    }
}

impl MutterSource {
    fn next_once(&mut self, wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let d = self.stream.take(wait);
        if let Some(why) = d.ended {
            let cause = self.session.alive().err().unwrap_or(why);
            self.lose(cause)?;
            return Ok(None);
        }
        if d.frame.is_none() && d.cursor.is_none() && d.pointer.is_none() {
            if self.last_check.elapsed() >= ALIVE_CHECK {
                self.last_check = Instant::now();
                self.answers.check(&self.session.conn);
                if let Err(cause) = self.session.alive() {
                    self.lose(cause)?;
                }
            }
            return Ok(None);
        }
        let damage = if let Some(f) = d.frame {
            let resized = self
                .frame
                .as_ref()
                .is_none_or(|old| old.width != f.width || old.height != f.height);
            if resized {
                info!(width = f.width, height = f.height, "GNOME screen size");
            }
            self.frame = Some(Arc::new(f.pixels));
            if resized || std::mem::take(&mut self.whole_next) {
                None
            } else {
                f.damage
            }
        } else {
            // Only the pointer changed.
            Some(Vec::new())
        };
        if let Some(p) = d.pointer {
            self.pointer = p;
        }
        let Some(frame) = self.frame.clone() else {
            // Cursor news before the first picture: nothing to show yet;
            // the image goes out with the first picture.
            if d.cursor.is_some() {
                self.early_cursor = d.cursor;
            }
            return Ok(None);
        };
        let cursor = cursor_to_send(d.cursor, &mut self.early_cursor);
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

/// The pointer image a capture carries: the newest one delivered, else the
/// one kept from before the first picture. A newer image drops the kept
/// one (kept, it would go out after the newer one and replace it: seen as
/// Mutter's empty pre-start image sent to viewers joining later).
fn cursor_to_send(
    delivered: Option<CursorShape>,
    early: &mut Option<CursorShape>,
) -> Option<CursorShape> {
    match delivered {
        Some(c) => {
            *early = None;
            Some(c)
        }
        None => early.take(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_pointer_image_drops_the_one_kept_from_before_the_first_picture() {
        let shape = |w: u16| CursorShape {
            width: w,
            height: 1,
            hot_x: 0,
            hot_y: 0,
            pixels: vec![0xff00_0000; w as usize],
        };
        // Before the first picture: kept.
        let mut early = Some(shape(1));
        // The first picture comes with a newer image: that one is sent,
        // and the kept one is gone for good.
        assert_eq!(cursor_to_send(Some(shape(16)), &mut early), Some(shape(16)));
        assert_eq!(cursor_to_send(None, &mut early), None);
        // No newer image: the kept one goes out once.
        let mut early = Some(shape(1));
        assert_eq!(cursor_to_send(None, &mut early), Some(shape(1)));
        assert_eq!(cursor_to_send(None, &mut early), None);
    }

    fn monitor(connector: &str, w: i32, h: i32) -> Monitor {
        let spec = (connector.into(), "MetaVendor".into(), "".into(), "".into());
        let mut current = HashMap::new();
        current.insert(
            "is-current".to_owned(),
            OwnedValue::try_from(Value::from(true)).unwrap(),
        );
        let mode = (format!("{w}x{h}"), w, h, 60.0, 1.0, vec![1.0], current);
        (spec, vec![mode], HashMap::new())
    }

    fn logical(x: i32, primary: bool, m: &Monitor) -> Logical {
        (x, 0, 1.0, 0, primary, vec![m.0.clone()], HashMap::new())
    }

    #[test]
    fn monitors_counted_from_zero_in_mutters_order() {
        let a = monitor("Meta-0", 1280, 800);
        let b = monitor("Meta-1", 800, 600);
        let off = monitor("Meta-2", 640, 480);
        let monitors = vec![a.clone(), b.clone(), off];
        // The second one is primary; Meta-2 shows nothing.
        let logical = vec![logical(0, false, &a), logical(1280, true, &b)];
        let pick = |n| pick_connector(&monitors, &logical, n);
        assert_eq!(pick(None).unwrap(), "Meta-1");
        assert_eq!(pick(Some(0)).unwrap(), "Meta-0");
        assert_eq!(pick(Some(1)).unwrap(), "Meta-1");
        match pick(Some(2)) {
            Err(MutterError::NoMonitor(m)) => assert_eq!(
                m,
                r#"--monitor 2: the compositor has 2 output(s): ["Meta-0 1280x800", "Meta-1 800x600"]"#
            ),
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
    }
}
