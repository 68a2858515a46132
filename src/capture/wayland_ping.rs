//! Is the Wayland compositor still running? A hung compositor looks like a
//! still screen to every capture path but GNOME's: a pending wlroots
//! `copy_with_damage` is simply not answered, and a portal's PipeWire
//! stream goes quiet while the portal frontend (another process) keeps
//! answering on the bus. What tells the two apart is the compositor not
//! answering `wl_display.sync`, which every Wayland compositor answers as
//! soon as it reads its socket.
//!
//! [`CompositorPing`] keeps one sync in flight on a connection of its own
//! (so it works beside any source, and a source's own connection is never
//! blocked by it), sends the next one [`PING_EVERY`] after the last answer,
//! logs the compositor's silence once it passes [`ANSWER_WITHIN`] and logs
//! again when it answers. Like the GNOME source's ping to Mutter, it only
//! tells: the session waits for the compositor (frames come again once it
//! runs); a compositor that is gone is noticed by the source itself.

use super::wayland::dispatch_for;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wayland_client::protocol::wl_callback;
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};

/// How long after an answer the next ping goes out.
const PING_EVERY: Duration = Duration::from_secs(2);
/// A compositor that has not answered a ping for this long hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Pong {
    answered: bool,
}

impl Dispatch<wl_callback::WlCallback, ()> for Pong {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.answered = true;
        }
    }
}

pub struct CompositorPing {
    conn: Connection,
    queue: EventQueue<Pong>,
    state: Pong,
    /// When the ping in flight was sent.
    pending: Option<Instant>,
    last_answer: Instant,
    /// Since when the compositor has not answered (told once).
    silent_since: Option<Instant>,
}

impl CompositorPing {
    /// A connection to the compositor in `$WAYLAND_DISPLAY`; `None` when
    /// there is none (an X11 desktop behind a portal) or it refuses.
    pub fn connect() -> Option<CompositorPing> {
        std::env::var_os("WAYLAND_DISPLAY")?;
        let conn = match Connection::connect_to_env() {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "no Wayland connection to ping the compositor on");
                return None;
            }
        };
        let queue = conn.new_event_queue();
        Some(CompositorPing {
            conn,
            queue,
            state: Pong::default(),
            pending: None,
            last_answer: Instant::now(),
            silent_since: None,
        })
    }

    /// Take in an answer, log a silence that passed [`ANSWER_WITHIN`] (once)
    /// or its end, and send the next ping when one is due. Never blocks.
    /// Returns `false` once the connection failed (the compositor is gone:
    /// the caller drops the ping and lets its source tell).
    pub fn check(&mut self) -> bool {
        if let Err(e) = dispatch_for(&mut self.queue, &mut self.state, Duration::ZERO) {
            debug!(error = %e, "the compositor ping's connection ended");
            return false;
        }
        if std::mem::take(&mut self.state.answered) {
            self.pending = None;
            self.last_answer = Instant::now();
            if let Some(since) = self.silent_since.take() {
                info!(after = ?since.elapsed(), "the Wayland compositor answers again");
            }
        }
        match self.pending {
            Some(sent) if sent.elapsed() >= ANSWER_WITHIN && self.silent_since.is_none() => {
                self.silent_since = Some(sent);
                warn!(
                    waited = ?sent.elapsed(),
                    "Wayland compositor stalled: it does not answer on its socket (the \
                     compositor hangs); waiting for it"
                );
            }
            Some(_) => {}
            None if self.last_answer.elapsed() >= PING_EVERY => {
                self.conn.display().sync(&self.queue.handle(), ());
                self.pending = Some(Instant::now());
                // A full socket keeps it queued for the next check.
                let _ = self.conn.flush();
            }
            None => {}
        }
        true
    }
}

/// A ping that drops itself once its connection ends.
#[derive(Default)]
pub struct MaybePing(Option<CompositorPing>);

impl MaybePing {
    pub fn connect() -> MaybePing {
        MaybePing(CompositorPing::connect())
    }

    pub fn check(&mut self) {
        if let Some(p) = &mut self.0 {
            if !p.check() {
                self.0 = None;
            }
        }
    }
}
