//! The X clipboard, both ways. Text from viewers becomes the owner of the
//! CLIPBOARD and PRIMARY selections (served to X applications as
//! UTF8_STRING, STRING and TEXT); changes of CLIPBOARD by X applications are
//! read (XFixes selection notifications) and handed to the server, which
//! sends them to viewers as ServerCutText.
//!
//! Clipboard contents are never logged.

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, info, warn};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ConnectionExt as _, CreateWindowAux, EventMask, PropMode, SelectionNotifyEvent,
    Window, WindowClass, SELECTION_NOTIFY_EVENT,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{COPY_DEPTH_FROM_PARENT, CURRENT_TIME, NONE};

#[derive(Debug, Error)]
#[error("X clipboard: {0}")]
pub struct ClipboardError(String);

fn cerr(e: impl std::fmt::Display) -> ClipboardError {
    ClipboardError(e.to_string())
}

/// Largest clipboard text taken from X applications (bytes of UTF-8).
pub const MAX_X_CLIPBOARD: u32 = crate::rfb::limits::MAX_CUT_TEXT;

pub struct X11Clipboard {
    tx: Mutex<Option<mpsc::Sender<String>>>,
    /// Wakes the clipboard thread (an eventfd it polls next to the X
    /// connection), so it sleeps until there is work instead of polling.
    wake: Arc<OwnedFd>,
}

/// How long the clipboard thread sleeps at most with nothing to do.
const IDLE_WAIT: Duration = Duration::from_secs(1);

fn wake_up(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

impl X11Clipboard {
    /// Start the clipboard thread on `display`. Text copied by X applications
    /// arrives on `changes` (already UTF-8; the server converts to Latin-1).
    pub fn start(
        display: Option<&str>,
        changes: mpsc::Sender<String>,
    ) -> Result<X11Clipboard, ClipboardError> {
        let (conn, screen) = RustConnection::connect(display).map_err(cerr)?;
        let mut state = State::new(conn, screen).map_err(cerr)?;
        let (tx, rx) = mpsc::channel::<String>();
        let wake = Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(cerr)?,
        );
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("clipboard".into())
            .spawn(move || {
                if let Err(e) = state.run(rx, changes, &thread_wake) {
                    warn!(error = %e, "clipboard thread stopped");
                }
            })
            .map_err(cerr)?;
        info!("X clipboard connected");
        Ok(X11Clipboard {
            tx: Mutex::new(Some(tx)),
            wake,
        })
    }

    /// Make `text` the X clipboard (CLIPBOARD and PRIMARY).
    pub fn set_text(&self, text: &str) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(text.to_owned());
        }
        wake_up(&self.wake);
    }
}

impl Drop for X11Clipboard {
    fn drop(&mut self) {
        // Disconnect the channel, then wake the thread so it sees that and ends.
        self.tx.lock().unwrap().take();
        wake_up(&self.wake);
    }
}

struct Atoms {
    clipboard: Atom,
    primary: Atom,
    targets: Atom,
    utf8: Atom,
    text: Atom,
    incr: Atom,
    property: Atom,
}

struct State {
    conn: RustConnection,
    win: Window,
    atoms: Atoms,
    /// Text we own the selections with.
    owned: Option<String>,
}

impl State {
    fn new(conn: RustConnection, screen: usize) -> Result<State, Box<dyn std::error::Error>> {
        let root = conn.setup().roots[screen].root;
        let win = conn.generate_id()?;
        conn.create_window(
            COPY_DEPTH_FROM_PARENT,
            win,
            root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )?;
        let atom = |name: &[u8]| -> Result<Atom, Box<dyn std::error::Error>> {
            Ok(conn.intern_atom(false, name)?.reply()?.atom)
        };
        let atoms = Atoms {
            clipboard: atom(b"CLIPBOARD")?,
            primary: AtomEnum::PRIMARY.into(),
            targets: atom(b"TARGETS")?,
            utf8: atom(b"UTF8_STRING")?,
            text: atom(b"TEXT")?,
            incr: atom(b"INCR")?,
            property: atom(b"TICKETVNC_SELECTION")?,
        };
        conn.xfixes_query_version(5, 0)?.reply()?;
        conn.xfixes_select_selection_input(
            win,
            atoms.clipboard,
            xfixes::SelectionEventMask::SET_SELECTION_OWNER,
        )?
        .check()?;
        conn.flush()?;
        Ok(State {
            conn,
            win,
            atoms,
            owned: None,
        })
    }

    fn run(
        &mut self,
        rx: mpsc::Receiver<String>,
        changes: mpsc::Sender<String>,
        wake: &OwnedFd,
    ) -> Result<(), ClipboardError> {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(text) => self.own(text)?,
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            while let Some(ev) = self.conn.poll_for_event().map_err(cerr)? {
                self.on_event(ev, &changes)?;
            }
            self.conn.flush().map_err(cerr)?;
            self.wait(wake, IDLE_WAIT)?;
        }
    }

    /// Sleep until X sends something, a viewer's text arrives (`wake`), or
    /// `d` has passed.
    fn wait(&self, wake: &OwnedFd, d: Duration) -> Result<(), ClipboardError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        use std::os::fd::AsFd;
        let fd = self.conn.stream().as_fd();
        let mut fds = [
            PollFd::new(&fd, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        let ts = Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as i64,
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(cerr(e)),
        }
        // Reset the eventfd (non-blocking; nothing to read is fine).
        let _ = rustix::io::read(wake, &mut [0u8; 8]);
        Ok(())
    }

    fn own(&mut self, text: String) -> Result<(), ClipboardError> {
        let max = self.conn.maximum_request_bytes().saturating_sub(64);
        if text.len() > max {
            warn!(
                bytes = text.len(),
                max, "clipboard text from viewer too large for one X request; not set"
            );
            return Ok(());
        }
        for sel in [self.atoms.clipboard, self.atoms.primary] {
            self.conn
                .set_selection_owner(self.win, sel, CURRENT_TIME)
                .map_err(cerr)?;
        }
        debug!(
            bytes = text.len(),
            "viewer text now owns CLIPBOARD and PRIMARY"
        );
        self.owned = Some(text);
        Ok(())
    }

    fn on_event(
        &mut self,
        ev: Event,
        changes: &mpsc::Sender<String>,
    ) -> Result<(), ClipboardError> {
        match ev {
            Event::SelectionRequest(req) => {
                let a = &self.atoms;
                let property = if req.property == NONE {
                    req.target
                } else {
                    req.property
                };
                let ok = match &self.owned {
                    Some(_) if req.target == a.targets => {
                        let list = [a.targets, a.utf8, AtomEnum::STRING.into(), a.text];
                        self.conn
                            .change_property32(
                                PropMode::REPLACE,
                                req.requestor,
                                property,
                                AtomEnum::ATOM,
                                &list,
                            )
                            .map_err(cerr)?;
                        true
                    }
                    Some(text) if req.target == a.utf8 || req.target == a.text => {
                        self.conn
                            .change_property8(
                                PropMode::REPLACE,
                                req.requestor,
                                property,
                                a.utf8,
                                text.as_bytes(),
                            )
                            .map_err(cerr)?;
                        true
                    }
                    Some(text) if req.target == u32::from(AtomEnum::STRING) => {
                        let latin1 = to_latin1(text);
                        self.conn
                            .change_property8(
                                PropMode::REPLACE,
                                req.requestor,
                                property,
                                AtomEnum::STRING,
                                &latin1,
                            )
                            .map_err(cerr)?;
                        true
                    }
                    _ => false,
                };
                let notify = SelectionNotifyEvent {
                    response_type: SELECTION_NOTIFY_EVENT,
                    sequence: 0,
                    time: req.time,
                    requestor: req.requestor,
                    selection: req.selection,
                    target: req.target,
                    property: if ok { property } else { NONE },
                };
                self.conn
                    .send_event(false, req.requestor, EventMask::NO_EVENT, notify)
                    .map_err(cerr)?;
            }
            // The text stays while we might still own PRIMARY or CLIPBOARD;
            // X only asks the current owner.
            Event::XfixesSelectionNotify(e)
                if e.owner != self.win
                    && e.owner != NONE
                    && e.selection == self.atoms.clipboard =>
            {
                self.conn
                    .convert_selection(
                        self.win,
                        self.atoms.clipboard,
                        self.atoms.utf8,
                        self.atoms.property,
                        CURRENT_TIME,
                    )
                    .map_err(cerr)?;
            }
            Event::SelectionNotify(e) => {
                if e.property == NONE || e.requestor != self.win {
                    return Ok(());
                }
                let reply = self
                    .conn
                    .get_property(
                        true,
                        self.win,
                        self.atoms.property,
                        AtomEnum::ANY,
                        0,
                        MAX_X_CLIPBOARD / 4,
                    )
                    .map_err(cerr)?
                    .reply()
                    .map_err(cerr)?;
                if reply.type_ == self.atoms.incr || reply.bytes_after > 0 {
                    warn!("clipboard text from X application is larger than {MAX_X_CLIPBOARD} bytes; not sent to viewers");
                    return Ok(());
                }
                let text = if reply.type_ == u32::from(AtomEnum::STRING) {
                    reply.value.iter().map(|&b| b as char).collect()
                } else {
                    String::from_utf8_lossy(&reply.value).into_owned()
                };
                debug!(bytes = text.len(), "X clipboard changed");
                let _ = changes.send(text);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Text as Latin-1 for RFB cut text (see [`crate::session::clipboard::to_latin1`]).
pub fn to_latin1(text: &str) -> Vec<u8> {
    crate::session::clipboard::to_latin1(text)
}
