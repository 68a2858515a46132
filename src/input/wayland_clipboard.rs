//! The clipboard on wlroots compositors (sway, Hyprland, river, labwc),
//! both ways, through `wlr-data-control-unstable-v1`: the protocol
//! clipboard managers use, which needs no window and no keyboard focus.
//!
//! - Text from viewers becomes the selection and the primary selection
//!   (as the X11 path owns CLIPBOARD and PRIMARY), offered as
//!   `text/plain;charset=utf-8`, `UTF8_STRING`, `TEXT`, `STRING`
//!   (Latin-1, as X's STRING) and `text/plain`.
//! - A new selection set by a Wayland application is read (the first text
//!   type it offers, in that order of preference; at most
//!   [`limits::MAX_CUT_TEXT`] bytes, as on X11) and handed to the server,
//!   which sends it to the viewers whose rights allow it. The primary
//!   selection is not sent to viewers (the X11 path reads CLIPBOARD only).
//!   The selection that was there before ticketvnc started is not sent
//!   either (X11 reports changes only).
//!
//! Our own offers carry a private marker type, so the selection we set is
//! not read back and echoed to the viewers (wayvnc does the same).
//! One thread with its own connection; every pipe is non-blocking and
//! polled next to the compositor's socket, with a deadline, so an
//! application that never writes (or never reads) costs one file
//! descriptor until the deadline, never a blocked thread.
//!
//! Clipboard contents are never logged.

use super::ClipboardTarget;
use crate::rfb::limits;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, info, warn};
use wayland_client::backend::ObjectId;
use wayland_client::protocol::{wl_registry, wl_seat};
use wayland_client::{event_created_child, Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols_wlr::data_control::v1::client::{
    zwlr_data_control_device_v1 as device_v1, zwlr_data_control_manager_v1 as manager_v1,
    zwlr_data_control_offer_v1 as offer_v1, zwlr_data_control_source_v1 as source_v1,
};

#[derive(Debug, Error)]
pub enum WaylandClipboardError {
    #[error("cannot connect to the Wayland compositor: {0}")]
    Connect(String),
    #[error("the compositor offers no wlr-data-control-unstable-v1 (or no seat)")]
    Unsupported,
    #[error("Wayland clipboard: {0}")]
    Io(String),
}

fn ioerr(e: impl std::fmt::Display) -> WaylandClipboardError {
    WaylandClipboardError::Io(e.to_string())
}

/// The text types offered and accepted, in order of preference when an
/// application offers several.
pub const TEXT_MIME_TYPES: [&str; 5] = [
    "text/plain;charset=utf-8",
    "UTF8_STRING",
    "text/plain",
    "TEXT",
    "STRING",
];

/// The one type whose bytes are Latin-1 (as X's STRING), not UTF-8.
const LATIN1_MIME: &str = "STRING";

/// How long the clipboard thread sleeps at most with nothing to do.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// The clipboard of a wlroots compositor (see the module documentation).
pub struct WaylandClipboard {
    tx: Mutex<Option<mpsc::Sender<String>>>,
    wake: Arc<OwnedFd>,
}

fn wake_up(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

impl WaylandClipboard {
    /// Connect to the compositor in `$WAYLAND_DISPLAY` and start the
    /// clipboard thread. Text copied by Wayland applications arrives on
    /// `changes` (UTF-8).
    pub fn start(changes: mpsc::Sender<String>) -> Result<WaylandClipboard, WaylandClipboardError> {
        let conn = Connection::connect_to_env()
            .map_err(|e| WaylandClipboardError::Connect(e.to_string()))?;
        let mut queue = conn.new_event_queue();
        let qh = queue.handle();
        conn.display().get_registry(&qh, ());
        let mut state = State {
            marker: format!("application/x-ticketvnc-owner-{}", std::process::id()),
            ..State::default()
        };
        queue.roundtrip(&mut state).map_err(ioerr)?;
        let (Some(manager), Some(seat)) = (state.manager.clone(), state.seat.clone()) else {
            return Err(WaylandClipboardError::Unsupported);
        };
        let device = manager.get_data_device(&seat, &qh, ());
        // The selection there already is announced now: not a change.
        queue.roundtrip(&mut state).map_err(ioerr)?;
        state.started = true;
        let (tx, rx) = mpsc::channel::<String>();
        let wake = Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(ioerr)?,
        );
        let primary = device.version() >= 2;
        let mut worker = Worker {
            _conn: conn,
            queue,
            qh,
            state,
            manager,
            device,
            primary,
        };
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("wl-clipboard".into())
            .spawn(move || {
                if let Err(e) = worker.run(rx, changes, &thread_wake) {
                    warn!(error = %e, "Wayland clipboard stopped");
                }
            })
            .map_err(ioerr)?;
        info!(
            primary_selection = primary,
            "Wayland clipboard connected (wlr-data-control)"
        );
        Ok(WaylandClipboard {
            tx: Mutex::new(Some(tx)),
            wake,
        })
    }

    /// Make `text` the selection and the primary selection.
    pub fn set_text(&self, text: &str) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(text.to_owned());
        }
        wake_up(&self.wake);
    }
}

impl ClipboardTarget for WaylandClipboard {
    fn set_text(&self, text: &str) {
        WaylandClipboard::set_text(self, text)
    }
}

impl Drop for WaylandClipboard {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        wake_up(&self.wake);
    }
}

/// An offer being announced: the best text type seen so far (an index in
/// [`TEXT_MIME_TYPES`]) and whether it is ours.
struct Announced {
    id: ObjectId,
    best: Option<usize>,
    own: bool,
}

/// Text being read from an application (the newest selection only).
struct Incoming {
    fd: OwnedFd,
    data: Vec<u8>,
    latin1: bool,
    deadline: Instant,
}

/// Text being written to an application that asked for it.
struct Outgoing {
    fd: OwnedFd,
    data: Arc<[u8]>,
    written: usize,
    deadline: Instant,
}

/// What a source of ours serves: the text as UTF-8 and as Latin-1.
struct Offered {
    utf8: Arc<[u8]>,
    latin1: Arc<[u8]>,
}

#[derive(Default)]
struct State {
    seat: Option<wl_seat::WlSeat>,
    manager: Option<manager_v1::ZwlrDataControlManagerV1>,
    marker: String,
    /// Set once the selection present at start has been seen.
    started: bool,
    announced: Vec<Announced>,
    incoming: Option<Incoming>,
    outgoing: Vec<Outgoing>,
    /// The compositor ended our data device (another seat setup).
    finished: bool,
}

struct Worker {
    _conn: Connection,
    queue: EventQueue<State>,
    qh: QueueHandle<State>,
    state: State,
    manager: manager_v1::ZwlrDataControlManagerV1,
    device: device_v1::ZwlrDataControlDeviceV1,
    primary: bool,
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let fl = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

impl Worker {
    fn run(
        &mut self,
        rx: mpsc::Receiver<String>,
        changes: mpsc::Sender<String>,
        wake: &OwnedFd,
    ) -> Result<(), WaylandClipboardError> {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(text) => self.own(&text),
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.queue
                .dispatch_pending(&mut self.state)
                .map_err(ioerr)?;
            if self.state.finished {
                return Err(ioerr("the compositor ended the data-control device"));
            }
            self.queue.flush().map_err(ioerr)?;
            let Some(guard) = self.queue.prepare_read() else {
                continue;
            };
            let now = Instant::now();
            let next_deadline = self
                .state
                .incoming
                .iter()
                .map(|i| i.deadline)
                .chain(self.state.outgoing.iter().map(|o| o.deadline))
                .min();
            let wait = next_deadline
                .map(|d| d.saturating_duration_since(now).min(IDLE_WAIT))
                .unwrap_or(IDLE_WAIT);
            let (wl_ready, in_ready, out_ready) = {
                use rustix::event::{poll, PollFd, PollFlags, Timespec};
                let conn_fd = guard.connection_fd();
                let mut fds = vec![
                    PollFd::new(&conn_fd, PollFlags::IN),
                    PollFd::new(wake, PollFlags::IN),
                ];
                if let Some(i) = &self.state.incoming {
                    fds.push(PollFd::new(&i.fd, PollFlags::IN));
                }
                for o in &self.state.outgoing {
                    fds.push(PollFd::new(&o.fd, PollFlags::OUT));
                }
                let ts = Timespec {
                    tv_sec: wait.as_secs() as i64,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                };
                match poll(&mut fds, Some(&ts)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(ioerr(e)),
                }
                let ready = |f: &PollFd| !f.revents().is_empty();
                let has_in = usize::from(self.state.incoming.is_some());
                (
                    ready(&fds[0]),
                    has_in == 1 && ready(&fds[2]),
                    fds[2 + has_in..].iter().map(ready).collect::<Vec<_>>(),
                )
            };
            if wl_ready {
                match guard.read() {
                    Ok(_) => {}
                    Err(wayland_client::backend::WaylandError::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(ioerr(format!("the compositor is gone: {e}"))),
                }
            } else {
                drop(guard);
            }
            let _ = rustix::io::read(wake, &mut [0u8; 8]);
            self.read_incoming(in_ready, &changes);
            self.write_outgoing(&out_ready);
        }
    }

    /// Offer `text` as the selection (and the primary selection).
    fn own(&mut self, text: &str) {
        let offered = Arc::new(Offered {
            utf8: Arc::from(text.as_bytes()),
            latin1: Arc::from(crate::session::clipboard::to_latin1(text)),
        });
        for primary in [false, true] {
            if primary && !self.primary {
                continue;
            }
            let source = self.manager.create_data_source(&self.qh, offered.clone());
            for m in TEXT_MIME_TYPES {
                source.offer(m.to_owned());
            }
            source.offer(self.state.marker.clone());
            if primary {
                self.device.set_primary_selection(Some(&source));
            } else {
                self.device.set_selection(Some(&source));
            }
        }
        debug!(
            bytes = text.len(),
            "viewer text now owns the Wayland selection and primary selection"
        );
    }

    fn read_incoming(&mut self, ready: bool, changes: &mpsc::Sender<String>) {
        let Some(inc) = self.state.incoming.as_mut() else {
            return;
        };
        let max = limits::MAX_CUT_TEXT as usize;
        let mut done = false;
        if ready {
            let mut buf = [0u8; 16384];
            loop {
                match rustix::io::read(&inc.fd, &mut buf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        if inc.data.len() + n > max {
                            warn!("clipboard text from a Wayland application is larger than {max} bytes; not sent to viewers");
                            self.state.incoming = None;
                            return;
                        }
                        inc.data.extend_from_slice(&buf[..n]);
                    }
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        warn!(error = %e, "cannot read the Wayland clipboard");
                        self.state.incoming = None;
                        return;
                    }
                }
            }
        }
        if done {
            let inc = self.state.incoming.take().expect("reading");
            let text = if inc.latin1 {
                inc.data.iter().map(|&b| b as char).collect()
            } else {
                String::from_utf8_lossy(&inc.data).into_owned()
            };
            debug!(bytes = text.len(), "Wayland clipboard changed");
            let _ = changes.send(text);
        } else if Instant::now() >= inc.deadline {
            warn!("a Wayland application did not hand over its clipboard text in time; not sent to viewers");
            self.state.incoming = None;
        }
    }

    fn write_outgoing(&mut self, ready: &[bool]) {
        let now = Instant::now();
        let mut i = 0;
        self.state.outgoing.retain_mut(|o| {
            let r = ready.get(i).copied().unwrap_or(false);
            i += 1;
            if r {
                loop {
                    match rustix::io::write(&o.fd, &o.data[o.written..]) {
                        Ok(n) => {
                            o.written += n;
                            if o.written == o.data.len() {
                                return false;
                            }
                        }
                        Err(rustix::io::Errno::AGAIN) => break,
                        Err(rustix::io::Errno::INTR) => {}
                        // The application closed its end (EPIPE): it wants no more.
                        Err(_) => return false,
                    }
                }
            }
            if now >= o.deadline {
                warn!("a Wayland application did not take the clipboard text in time");
                return false;
            }
            true
        });
    }
}

impl State {
    /// Start reading `offer` (the new selection) as `mime`.
    fn receive(&mut self, offer: &offer_v1::ZwlrDataControlOfferV1, mime: &str) {
        let r = (|| -> std::io::Result<OwnedFd> {
            let (reader, writer) = std::io::pipe()?;
            let reader = OwnedFd::from(reader);
            set_nonblocking(&reader)?;
            offer.receive(mime.to_owned(), writer.as_fd());
            Ok(reader)
        })();
        match r {
            Ok(fd) => {
                // A newer selection replaces one still being read.
                self.incoming = Some(Incoming {
                    fd,
                    data: Vec::new(),
                    latin1: mime == LATIN1_MIME,
                    deadline: Instant::now() + limits::CLIPBOARD_TRANSFER_TIMEOUT,
                });
            }
            Err(e) => warn!(error = %e, "cannot read the Wayland clipboard"),
        }
    }

    fn take_announced(&mut self, id: &ObjectId) -> Option<Announced> {
        let i = self.announced.iter().position(|a| &a.id == id)?;
        Some(self.announced.remove(i))
    }
}

/// Offers announced but not yet named as a selection, kept at most (the
/// compositor names each right after announcing it).
const MAX_ANNOUNCED: usize = 8;
/// Transfers to applications in progress at most; more are refused.
const MAX_OUTGOING: usize = 16;

impl Dispatch<wl_registry::WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            match interface.as_str() {
                "wl_seat" if state.seat.is_none() => {
                    state.seat = Some(registry.bind(name, version.min(2), qh, ()))
                }
                "zwlr_data_control_manager_v1" => {
                    state.manager = Some(registry.bind(name, version.min(2), qh, ()))
                }
                _ => {}
            }
        }
    }
}

impl Dispatch<device_v1::ZwlrDataControlDeviceV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &device_v1::ZwlrDataControlDeviceV1,
        event: device_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            device_v1::Event::DataOffer { id } => {
                if state.announced.len() >= MAX_ANNOUNCED {
                    state.announced.remove(0);
                }
                state.announced.push(Announced {
                    id: id.id(),
                    best: None,
                    own: false,
                });
            }
            device_v1::Event::Selection { id: Some(offer) } => {
                let a = state.take_announced(&offer.id());
                match a {
                    Some(Announced {
                        best: Some(b),
                        own: false,
                        ..
                    }) if state.started => state.receive(&offer, TEXT_MIME_TYPES[b]),
                    _ => {}
                }
                offer.destroy();
            }
            device_v1::Event::PrimarySelection { id: Some(offer) } => {
                state.take_announced(&offer.id());
                offer.destroy();
            }
            device_v1::Event::Finished => state.finished = true,
            _ => {}
        }
    }

    event_created_child!(State, device_v1::ZwlrDataControlDeviceV1, [
        device_v1::EVT_DATA_OFFER_OPCODE => (offer_v1::ZwlrDataControlOfferV1, ()),
    ]);
}

impl Dispatch<offer_v1::ZwlrDataControlOfferV1, ()> for State {
    fn event(
        state: &mut Self,
        offer: &offer_v1::ZwlrDataControlOfferV1,
        event: offer_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let offer_v1::Event::Offer { mime_type } = event else {
            return;
        };
        let id = offer.id();
        let marker = mime_type == state.marker;
        let Some(a) = state.announced.iter_mut().find(|a| a.id == id) else {
            return;
        };
        if marker {
            a.own = true;
        } else if let Some(i) = TEXT_MIME_TYPES.iter().position(|m| *m == mime_type) {
            a.best = Some(a.best.map_or(i, |b| b.min(i)));
        }
    }
}

impl Dispatch<source_v1::ZwlrDataControlSourceV1, Arc<Offered>> for State {
    fn event(
        state: &mut Self,
        source: &source_v1::ZwlrDataControlSourceV1,
        event: source_v1::Event,
        offered: &Arc<Offered>,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            source_v1::Event::Send { mime_type, fd } => {
                // The marker type and unknown types get an empty answer
                // (the descriptor is closed).
                let data = if mime_type == LATIN1_MIME {
                    offered.latin1.clone()
                } else if TEXT_MIME_TYPES.contains(&mime_type.as_str()) {
                    offered.utf8.clone()
                } else {
                    return;
                };
                if state.outgoing.len() >= MAX_OUTGOING {
                    warn!("too many Wayland clipboard transfers at once; one refused");
                    return;
                }
                if let Err(e) = set_nonblocking(&fd) {
                    warn!(error = %e, "cannot hand over the clipboard text");
                    return;
                }
                state.outgoing.push(Outgoing {
                    fd,
                    data,
                    written: 0,
                    deadline: Instant::now() + limits::CLIPBOARD_TRANSFER_TIMEOUT,
                });
            }
            source_v1::Event::Cancelled => source.destroy(),
            _ => {}
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),*) => {$(
        impl Dispatch<$t, ()> for State {
            fn event(_: &mut Self, _: &$t, _: <$t as Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )*};
}
ignore_events!(wl_seat::WlSeat, manager_v1::ZwlrDataControlManagerV1);
