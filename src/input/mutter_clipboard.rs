//! The GNOME clipboard, both ways, through Mutter's RemoteDesktop session
//! (the one [`crate::capture::mutter`] opened), as gnome-remote-desktop
//! does it:
//!
//! - `EnableClipboard` once; Mutter then reports every new owner of the
//!   clipboard (`SelectionOwnerChanged` with its mime types). When a
//!   Wayland (or X) application owns it with text, `SelectionRead(mime)`
//!   gives a pipe the text arrives on; at most [`MAX_GNOME_CLIPBOARD`]
//!   bytes are taken, within [`READ_TIME`], and handed to the server, which
//!   sends them to viewers (as on X11).
//! - Text from a viewer: `SetSelection` with the text mime types makes the
//!   session the owner; when an application pastes, Mutter asks with
//!   `SelectionTransfer(mime, serial)`, answered by writing the text into
//!   the pipe `SelectionWrite(serial)` gives and `SelectionWriteDone`.
//!
//! D-Bus calls and pipe reads run on a thread of their own; signals are
//! received on one more per session, ended when the session is replaced.
//! Clipboard contents are never logged.

use crate::capture::mutter::{MutterSession, SessionSlot, REMOTE_DESKTOP};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, info, warn};
use zbus::blocking::Proxy;
use zbus::zvariant::{OwnedValue, Value};

const SESSION_IFACE: &str = "org.gnome.Mutter.RemoteDesktop.Session";

/// Largest clipboard text taken from applications (bytes), as on X11.
pub const MAX_GNOME_CLIPBOARD: usize = crate::rfb::limits::MAX_CUT_TEXT as usize;
/// How long an application may take to hand over (or take) the text
/// (gnome-remote-desktop allows 4 s).
const READ_TIME: Duration = Duration::from_secs(4);
/// How often an idle clipboard looks for a new session.
const FOLLOW_CHECK: Duration = Duration::from_secs(1);

/// The text types offered for a viewer's text, and the ones read, best
/// first (UTF-8 ones; `STRING` is Latin-1).
const TEXT_TYPES: [&str; 4] = [
    "text/plain;charset=utf-8",
    "UTF8_STRING",
    "text/plain",
    "STRING",
];

#[derive(Debug, Error)]
pub enum MutterClipboardError {
    #[error("GNOME clipboard: {0}")]
    Bus(String),
}

enum Msg {
    /// SelectionOwnerChanged's options.
    Owner(HashMap<String, OwnedValue>),
    /// SelectionTransfer(mime type, serial).
    Transfer(String, u32),
    /// A viewer's text.
    Set(String),
    Quit,
}

/// The clipboard of a GNOME session (see the module comment).
pub struct MutterClipboard {
    tx: Mutex<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MutterClipboard {
    fn drop(&mut self) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Msg::Quit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl MutterClipboard {
    /// Enable the clipboard on `session`. Text applications copy arrives on
    /// `changes`.
    pub fn start(
        slot: Arc<SessionSlot>,
        changes: mpsc::Sender<String>,
    ) -> Result<MutterClipboard, MutterClipboardError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), MutterClipboardError>>();
        let sigs = tx.clone();
        // zbus's blocking calls are made off any tokio runtime.
        let thread = std::thread::Builder::new()
            .name("gnome-clipboard".into())
            .spawn(move || {
                let (generation, session) = slot.current();
                let setup = bind(&session, &sigs);
                let (proxy, watcher) = match setup {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    proxy,
                    watcher: Some(watcher),
                    ours: None,
                    changes,
                    slot,
                    generation,
                    sigs,
                }
                .run(rx);
            })
            .map_err(|e| MutterClipboardError::Bus(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                info!("GNOME clipboard enabled");
                Ok(MutterClipboard {
                    tx: Mutex::new(tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(MutterClipboardError::Bus(
                    "the clipboard thread ended".into(),
                ))
            }
        }
    }

    /// Make `text` (a viewer's) the session's clipboard.
    pub fn set_text(&self, text: &str) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Msg::Set(text.to_owned()));
    }
}

impl super::ClipboardTarget for MutterClipboard {
    fn set_text(&self, text: &str) {
        MutterClipboard::set_text(self, text)
    }
}

/// Enable the clipboard on `session`, its signals going to `sigs` (from a
/// watcher thread that ends when the returned [`Watcher`] is dropped).
fn bind(
    session: &MutterSession,
    sigs: &mpsc::Sender<Msg>,
) -> Result<(Proxy<'static>, Watcher), MutterClipboardError> {
    let err = |e: zbus::Error| MutterClipboardError::Bus(e.to_string());
    let proxy = Proxy::new(
        &session.conn,
        REMOTE_DESKTOP,
        session.session.to_string(),
        SESSION_IFACE,
    )
    .map_err(err)?;
    // Subscribed before EnableClipboard, so no signal is missed.
    let watcher = Watcher::start(&proxy, sigs.clone())?;
    let no_options: HashMap<&str, Value<'_>> = HashMap::new();
    proxy
        .call::<_, _, ()>("EnableClipboard", &(no_options,))
        .map_err(err)?;
    Ok((proxy, watcher))
}

/// The thread that forwards one session's clipboard signals to the
/// worker. A reopened stream is a new session on a new connection; the
/// old one's signals never come again, so the thread is ended here (its
/// stop channel dropped) rather than left waiting on them for good.
struct Watcher {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Watcher {
    fn start(
        proxy: &Proxy<'static>,
        sigs: mpsc::Sender<Msg>,
    ) -> Result<Watcher, MutterClipboardError> {
        let p = proxy.inner().clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("gnome-clip-sigs".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(forward(p, sigs, stop_rx, ready_tx));
                debug!("GNOME clipboard watcher ended");
            })
            .map_err(|e| MutterClipboardError::Bus(e.to_string()))?;
        let w = Watcher {
            stop: Some(stop),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(w),
            Ok(Err(e)) => Err(MutterClipboardError::Bus(e)),
            Err(_) => Err(MutterClipboardError::Bus(
                "the clipboard watcher ended".into(),
            )),
        }
    }
}

/// Forward SelectionOwnerChanged and SelectionTransfer until `stop` is
/// dropped, the worker is gone or the connection ends.
async fn forward(
    p: zbus::Proxy<'static>,
    sigs: mpsc::Sender<Msg>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    use futures_util::StreamExt;
    let subscribed = async {
        let owner = p.receive_signal("SelectionOwnerChanged").await?;
        let transfer = p.receive_signal("SelectionTransfer").await?;
        Ok::<_, zbus::Error>((owner, transfer))
    }
    .await;
    let (mut owner, mut transfer) = match subscribed {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = &mut stop => break,
            m = owner.next() => {
                let Some(m) = m else { break };
                match m.body().deserialize::<HashMap<String, OwnedValue>>() {
                    Ok(o) => Msg::Owner(o),
                    Err(e) => {
                        debug!(error = %e, "GNOME clipboard: bad owner signal");
                        continue;
                    }
                }
            }
            m = transfer.next() => {
                let Some(m) = m else { break };
                match m.body().deserialize::<(String, u32)>() {
                    Ok((mime, serial)) => Msg::Transfer(mime, serial),
                    Err(e) => {
                        debug!(error = %e, "GNOME clipboard: bad transfer signal");
                        continue;
                    }
                }
            }
        };
        if sigs.send(msg).is_err() {
            break;
        }
    }
}

struct Worker {
    proxy: Proxy<'static>,
    /// Forwards the current session's signals (replaced with it).
    watcher: Option<Watcher>,
    /// The viewer's text the session owns the clipboard with.
    ours: Option<String>,
    changes: mpsc::Sender<String>,
    /// The source reopens a lost stream as a new session: the clipboard
    /// follows.
    slot: Arc<SessionSlot>,
    generation: u64,
    sigs: mpsc::Sender<Msg>,
}

impl Worker {
    fn follow(&mut self) {
        if self.slot.generation() == self.generation {
            return;
        }
        let (generation, session) = self.slot.current();
        self.generation = generation;
        self.ours = None;
        // The old session is gone: its watcher ends first, whether or not
        // the new one can be watched.
        self.watcher = None;
        match bind(&session, &self.sigs) {
            Ok((p, w)) => {
                self.proxy = p;
                self.watcher = Some(w);
                info!("GNOME clipboard enabled on the new session");
            }
            Err(e) => warn!("GNOME clipboard: not on the new session: {e}"),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let m = match rx.recv_timeout(FOLLOW_CHECK) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.follow();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.follow();
            match m {
                Msg::Owner(o) => self.owner_changed(&o),
                Msg::Transfer(mime, serial) => self.transfer(&mime, serial),
                Msg::Set(text) => self.set(text),
                Msg::Quit => break,
            }
        }
        if self.ours.is_some() {
            let _ = self.proxy.call::<_, _, ()>("DisableClipboard", &());
        }
    }

    fn owner_changed(&mut self, o: &HashMap<String, OwnedValue>) {
        let ours = o
            .get("session-is-owner")
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(false);
        if ours {
            return;
        }
        self.ours = None;
        let types = o.get("mime-types").map(|v| strings(v)).unwrap_or_default();
        let Some(mime) = pick_text_type(&types) else {
            debug!(
                types = types.len(),
                "GNOME clipboard: new owner without text"
            );
            return;
        };
        let fd: zbus::zvariant::OwnedFd = match self.proxy.call("SelectionRead", &(mime,)) {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %e, "GNOME clipboard: Mutter refused SelectionRead");
                return;
            }
        };
        match read_bounded(OwnedFd::from(fd), MAX_GNOME_CLIPBOARD, READ_TIME) {
            Ok(bytes) => {
                let text = decode(mime, &bytes);
                debug!(bytes = bytes.len(), "GNOME clipboard: text copied");
                let _ = self.changes.send(text);
            }
            Err(e) => warn!("GNOME clipboard: text not taken: {e}"),
        }
    }

    fn transfer(&mut self, mime: &str, serial: u32) {
        let ok = match (&self.ours, TEXT_TYPES.contains(&mime)) {
            (Some(text), true) => {
                let bytes = encode(mime, text);
                match self
                    .proxy
                    .call::<_, _, zbus::zvariant::OwnedFd>("SelectionWrite", &(serial,))
                {
                    Ok(fd) => match write_bounded(OwnedFd::from(fd), &bytes, READ_TIME) {
                        Ok(()) => true,
                        Err(e) => {
                            warn!("GNOME clipboard: text not handed over: {e}");
                            false
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "GNOME clipboard: Mutter refused SelectionWrite");
                        false
                    }
                }
            }
            _ => false,
        };
        if let Err(e) = self
            .proxy
            .call::<_, _, ()>("SelectionWriteDone", &(serial, ok))
        {
            debug!(error = %e, "GNOME clipboard: SelectionWriteDone refused");
        }
    }

    fn set(&mut self, text: String) {
        let mut o: HashMap<&str, Value<'_>> = HashMap::new();
        o.insert("mime-types", Value::from(TEXT_TYPES.to_vec()));
        match self.proxy.call::<_, _, ()>("SetSelection", &(o,)) {
            Ok(()) => self.ours = Some(text),
            Err(e) => warn!(error = %e, "GNOME clipboard: Mutter refused SetSelection"),
        }
    }
}

/// A list of strings: `as`, or the `(as)` Mutter 43 wraps it in.
fn strings(v: &Value<'_>) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|s| match s {
                Value::Str(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        Value::Structure(s) => s.fields().first().map(strings).unwrap_or_default(),
        Value::Value(inner) => strings(inner),
        _ => Vec::new(),
    }
}

/// The best text type among `types`.
fn pick_text_type(types: &[String]) -> Option<&'static str> {
    TEXT_TYPES
        .iter()
        .find(|t| types.iter().any(|m| m.eq_ignore_ascii_case(t)))
        .copied()
}

/// Bytes of `mime` as text (`STRING` is Latin-1; the others UTF-8, bad
/// sequences replaced).
fn decode(mime: &str, bytes: &[u8]) -> String {
    if mime == "STRING" {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// `text` as `mime` wants it (`STRING`: Latin-1, others `?`).
fn encode(mime: &str, text: &str) -> Vec<u8> {
    if mime == "STRING" {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    } else {
        text.as_bytes().to_vec()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
enum PipeError {
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("the application took longer than {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

/// Wait until `fd` is ready for `flags`, at most until `deadline`.
fn wait(
    fd: &OwnedFd,
    flags: rustix::event::PollFlags,
    deadline: Instant,
    limit: Duration,
) -> Result<(), PipeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(PipeError::Timeout(limit));
    }
    let ts = rustix::event::Timespec::try_from(left).map_err(|e| PipeError::Io(e.to_string()))?;
    let mut fds = [rustix::event::PollFd::new(fd, flags)];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) => Err(PipeError::Timeout(limit)),
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(PipeError::Io(e.to_string())),
    }
}

fn nonblocking(fd: &OwnedFd) -> Result<(), PipeError> {
    let fl = rustix::fs::fcntl_getfl(fd).map_err(|e| PipeError::Io(e.to_string()))?;
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| PipeError::Io(e.to_string()))
}

/// Everything until end of file, at most `max` bytes within `limit`.
fn read_bounded(fd: OwnedFd, max: usize, limit: Duration) -> Result<Vec<u8>, PipeError> {
    nonblocking(&fd)?;
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match rustix::io::read(fd.as_fd(), &mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > max {
                    return Err(PipeError::TooLarge(max));
                }
                out.extend_from_slice(&chunk[..n]);
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                wait(&fd, rustix::event::PollFlags::IN, deadline, limit)?
            }
            Err(e) => return Err(PipeError::Io(e.to_string())),
        }
    }
}

/// All of `bytes` into `fd` within `limit` (closed after).
fn write_bounded(fd: OwnedFd, mut bytes: &[u8], limit: Duration) -> Result<(), PipeError> {
    nonblocking(&fd)?;
    let deadline = Instant::now() + limit;
    while !bytes.is_empty() {
        match rustix::io::write(fd.as_fd(), bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                wait(&fd, rustix::event::PollFlags::OUT, deadline, limit)?
            }
            Err(e) => return Err(PipeError::Io(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_types_are_picked_best_first() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pick_text_type(&v(&["image/png", "text/plain", "UTF8_STRING"])),
            Some("UTF8_STRING")
        );
        assert_eq!(
            pick_text_type(&v(&["text/plain;charset=UTF-8", "STRING"])),
            Some("text/plain;charset=utf-8")
        );
        assert_eq!(pick_text_type(&v(&["image/png", "text/html"])), None);
    }

    #[test]
    fn mime_type_lists_plain_and_wrapped() {
        let list = || Value::from(vec!["text/plain", "image/png"]);
        let want = vec!["text/plain".to_string(), "image/png".to_string()];
        assert_eq!(strings(&list()), want);
        let wrapped = Value::from(
            zbus::zvariant::StructureBuilder::new()
                .append_field(list())
                .build()
                .unwrap(),
        );
        assert_eq!(strings(&wrapped), want);
        assert!(strings(&Value::from(7u32)).is_empty());
    }

    #[test]
    fn latin1_and_utf8() {
        let t = "ü € 中 😀";
        assert_eq!(
            decode("text/plain;charset=utf-8", &encode("UTF8_STRING", t)),
            t
        );
        assert_eq!(encode("STRING", t), b"\xfc ? ? ?");
        assert_eq!(decode("STRING", b"\xfc"), "ü");
    }

    #[test]
    fn pipes_are_read_within_their_bounds() {
        let pipe = || {
            let (r, w) = std::io::pipe().unwrap();
            (OwnedFd::from(r), OwnedFd::from(w))
        };
        // All of it, then end of file.
        let (r, w) = pipe();
        rustix::io::write(&w, b"hello").unwrap();
        drop(w);
        assert_eq!(read_bounded(r, 5, READ_TIME).unwrap(), b"hello");
        // One byte over the bound.
        let (r, w) = pipe();
        rustix::io::write(&w, b"hello!").unwrap();
        drop(w);
        assert_eq!(read_bounded(r, 5, READ_TIME), Err(PipeError::TooLarge(5)));
        // A writer that never closes: a timeout, not a hang.
        let (r, w) = pipe();
        rustix::io::write(&w, b"he").unwrap();
        let limit = Duration::from_millis(50);
        assert_eq!(read_bounded(r, 5, limit), Err(PipeError::Timeout(limit)));
        drop(w);
        // A reader that never reads: the writer gives up.
        let (r, w) = pipe();
        let big = vec![0u8; 1 << 20];
        assert_eq!(
            write_bounded(w, &big, limit),
            Err(PipeError::Timeout(limit))
        );
        drop(r);
    }
}
