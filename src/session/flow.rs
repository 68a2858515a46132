//! Fence and ContinuousUpdates for one viewer, and the congestion control
//! built on fence round trips (see [`super::congestion`]).
//!
//! - A viewer that lists the Fence pseudo-encoding (-312) gets a
//!   ServerFence at once (rfbproto: "the first time it sees" it); its
//!   ClientFence requests are answered with the bits this server does not
//!   understand cleared, SyncNext after the next message has taken effect.
//! - A viewer that lists ContinuousUpdates (-313) *and* Fence gets
//!   EndOfContinuousUpdates once, telling it the extension is there (as in
//!   TigerVNC, continuous updates are only offered together with fences:
//!   without them the server cannot see how much is in flight).
//! - In continuous mode the server sends an update whenever the screen
//!   changed in the enabled area and the congestion window has room;
//!   incremental requests are ignored, non-incremental ones honoured.
//! - With fences, every update is framed by two pings (ServerFence with
//!   Request and BlockBefore, payload `[1]`), in both modes.
//!
//! A viewer without either pseudo-encoding never sees any of this.

use super::congestion::Congestion;
use super::update::ViewerState;
use crate::framebuffer::Rect;
use crate::rfb::limits;
use crate::rfb::messages::{enc, fence, ClientMessage};
use crate::rfb::{ProtocolError, ServerMessages};
use std::time::Instant;
use tracing::debug;

/// First byte of a ping's payload (TigerVNC uses the same).
const PING: u8 = 1;
/// A ping's size on the wire: type, padding, flags, length, payload.
const PING_FENCE_BYTES: u64 = 1 + 3 + 4 + 1 + 1;
/// First byte of the fence that announces support.
const HELLO: u8 = 0;

pub struct Flow {
    /// The viewer listed Fence; it was sent a ServerFence.
    fence: bool,
    /// EndOfContinuousUpdates was sent once to announce the extension.
    cu_offered: bool,
    /// Continuous updates are on, for this area.
    continuous: Option<Rect>,
    /// The viewer's pending request is one this module made for the
    /// continuous area (it goes when continuous updates are turned off).
    injected: bool,
    /// A SyncNext fence answered after the next message.
    sync_next: Option<(u32, Vec<u8>)>,
    congestion: Congestion,
    /// When the congestion window is expected to have room again.
    wake: Option<Instant>,
    session: u64,
}

impl Flow {
    pub fn new(session: u64, now: Instant) -> Flow {
        Flow {
            fence: false,
            cu_offered: false,
            continuous: None,
            injected: false,
            sync_next: None,
            congestion: Congestion::new(now),
            wake: None,
            session,
        }
    }

    /// Continuous updates are on.
    pub fn continuous(&self) -> bool {
        self.continuous.is_some()
    }

    /// When to look again at a congested window (`None`: when something
    /// else happens, such as a fence answer).
    pub fn wake(&self) -> Option<Instant> {
        self.wake
    }

    /// Look at a message before the session handles it. Fence and
    /// EnableContinuousUpdates are handled here (`Ok(None)`); incremental
    /// requests are dropped in continuous mode; the rest is returned to be
    /// handled, after which [`Flow::after_message`] must be called.
    /// Replies go to `out`.
    pub fn intercept(
        &mut self,
        m: ClientMessage,
        viewer: &mut ViewerState,
        out: &mut impl ServerMessages,
        now: Instant,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        match m {
            ClientMessage::Fence { flags, payload } => {
                // A fence is itself the message a pending SyncNext waited for.
                self.after_message(out);
                self.on_fence(flags, payload, out, now);
                Ok(None)
            }
            ClientMessage::EnableContinuousUpdates { enable, rect } => {
                if !(self.fence && self.cu_offered) {
                    return Err(ProtocolError::UnexpectedMessage(
                        "EnableContinuousUpdates before the server offered them (the viewer did not list ContinuousUpdates and Fence)",
                    ));
                }
                self.after_message(out);
                if enable {
                    debug!(session = self.session, ?rect, "continuous updates on");
                    self.continuous = Some(rect);
                } else {
                    debug!(session = self.session, "continuous updates off");
                    self.continuous = None;
                    if std::mem::take(&mut self.injected) {
                        viewer.cancel_request();
                    }
                    // Sent even when they were already off (rfbproto).
                    out.send_end_of_continuous_updates();
                }
                Ok(None)
            }
            ClientMessage::FramebufferUpdateRequest { incremental, .. } if self.continuous() => {
                if incremental {
                    // Continuous updates cover it (rfbproto: ignored).
                    self.after_message(out);
                    return Ok(None);
                }
                // A real request now: it stays when continuous updates end.
                self.injected = false;
                Ok(Some(m))
            }
            ClientMessage::SetEncodings(ref list) => {
                if !self.fence && list.contains(&enc::FENCE) {
                    self.fence = true;
                    debug!(session = self.session, "viewer uses fences");
                    out.send_fence(fence::REQUEST, &[HELLO]);
                }
                if self.fence && !self.cu_offered && list.contains(&enc::CONTINUOUS_UPDATES) {
                    self.cu_offered = true;
                    debug!(session = self.session, "continuous updates offered");
                    out.send_end_of_continuous_updates();
                }
                Ok(Some(m))
            }
            m => Ok(Some(m)),
        }
    }

    /// The message after a SyncNext fence has taken effect: answer it now,
    /// before anything that message affects is sent.
    pub fn after_message(&mut self, out: &mut impl ServerMessages) {
        if let Some((flags, payload)) = self.sync_next.take() {
            out.send_fence(flags, &payload);
        }
    }

    fn on_fence(
        &mut self,
        flags: u32,
        payload: Vec<u8>,
        out: &mut impl ServerMessages,
        now: Instant,
    ) {
        if flags & fence::REQUEST != 0 {
            // Unknown bits are cleared in the answer, Request too. Messages
            // are handled one at a time in order, so BlockBefore and
            // BlockAfter hold by themselves.
            let flags = flags & fence::UNDERSTOOD;
            if flags & fence::SYNC_NEXT != 0 {
                self.sync_next = Some((flags, payload));
            } else {
                out.send_fence(flags, &payload);
            }
            return;
        }
        // An answer to one of ours.
        match payload.first() {
            Some(&PING) => {
                self.congestion.got_pong(now);
            }
            Some(&HELLO) => {}
            _ => debug!(
                session = self.session,
                len = payload.len(),
                "fence answer the server did not ask for ignored"
            ),
        }
    }

    /// Whether an update may be built now, the stream being at `pos`
    /// bytes: always without fences; with them, when the congestion window
    /// has room (else [`Flow::wake`] says when to look again).
    pub fn may_send(&mut self, pos: u64, now: Instant) -> bool {
        self.wake = None;
        if !self.fence {
            return true;
        }
        self.congestion.update_position(pos, now);
        if !self.congestion.is_congested(now) {
            return true;
        }
        // At least a little later: an estimate of "now" must not spin.
        self.wake = self
            .congestion
            .uncongested_in(now)
            .map(|d| now + d.max(std::time::Duration::from_millis(2)));
        false
    }

    /// Before building an update: in continuous mode, make sure the viewer
    /// has a request for the continuous area.
    pub fn before_update(&mut self, viewer: &mut ViewerState) {
        if let Some(rect) = self.continuous {
            if !viewer.has_request() {
                viewer.request(true, rect);
                self.injected = true;
            }
        }
    }

    /// An update (`update`, built with the stream at `pos` bytes) is about
    /// to go out: frame it with pings when the viewer takes fences.
    #[cfg(test)]
    pub fn wrap_update(&mut self, pos: u64, update: Vec<u8>, now: Instant) -> Vec<u8> {
        let mut out = Vec::with_capacity(update.len() + 20);
        self.update_begins(pos, &mut out, now);
        out.extend_from_slice(&update);
        let end = pos + out.len() as u64;
        self.update_ends(end, &mut out, now);
        out
    }

    /// An update starts with the stream at `pos` bytes: a ping goes
    /// before it (into `out`) when the viewer takes fences.
    pub fn update_begins(&mut self, pos: u64, out: &mut impl ServerMessages, now: Instant) {
        self.injected = false;
        if self.fence {
            self.ping(pos, out, now);
        }
    }

    /// The update ended with the stream at `end` bytes: a ping after it
    /// (appended to `out`, which ends there).
    pub fn update_ends(&mut self, end: u64, out: &mut impl ServerMessages, now: Instant) {
        if !self.fence {
            return;
        }
        let sent = self.ping(end, out, now);
        self.congestion.update_position(end + sent, now);
    }

    /// A ping, unless enough are outstanding; the bytes it took.
    fn ping(&mut self, pos: u64, out: &mut impl ServerMessages, now: Instant) -> u64 {
        if self.congestion.outstanding() >= limits::MAX_FENCE_PINGS {
            return 0;
        }
        self.congestion.update_position(pos, now);
        out.send_fence(fence::REQUEST | fence::BLOCK_BEFORE, &[PING]);
        self.congestion.sent_ping(now);
        PING_FENCE_BYTES
    }

    /// The link's estimated bandwidth (bytes/s), base round trip (ms) and
    /// congestion window (bytes), when the viewer takes fences.
    pub fn estimate(&self) -> Option<(u64, Option<u64>, u64)> {
        self.fence.then(|| {
            let c = &self.congestion;
            (c.bandwidth(), c.base_rtt(), c.window())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_with(list: &[i32]) -> (Flow, ViewerState, Vec<u8>) {
        let mut f = Flow::new(1, Instant::now());
        let mut v = ViewerState::new(64, 48);
        let mut out = Vec::new();
        let m = f
            .intercept(
                ClientMessage::SetEncodings(list.to_vec()),
                &mut v,
                &mut out,
                Instant::now(),
            )
            .unwrap();
        assert!(m.is_some());
        (f, v, out)
    }

    #[test]
    fn nothing_is_sent_to_a_viewer_without_the_pseudo_encodings() {
        let (mut f, mut v, out) = flow_with(&[enc::RAW, enc::CONTINUOUS_UPDATES]);
        assert!(
            out.is_empty(),
            "ContinuousUpdates without Fence is not offered"
        );
        assert!(f.may_send(1 << 30, Instant::now()));
        assert_eq!(f.wrap_update(0, vec![1, 2], Instant::now()), vec![1, 2]);
        let mut out = Vec::new();
        let cu = ClientMessage::EnableContinuousUpdates {
            enable: true,
            rect: Rect::new(0, 0, 64, 48),
        };
        assert!(f.intercept(cu, &mut v, &mut out, Instant::now()).is_err());
    }

    #[test]
    fn fence_and_continuous_updates_are_announced_once() {
        let (mut f, mut v, out) = flow_with(&[enc::FENCE, enc::CONTINUOUS_UPDATES]);
        assert_eq!(out, [248, 0, 0, 0, 0x80, 0, 0, 0, 1, HELLO, 150]);
        let mut again = Vec::new();
        let m = ClientMessage::SetEncodings(vec![enc::FENCE, enc::CONTINUOUS_UPDATES]);
        f.intercept(m, &mut v, &mut again, Instant::now()).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn fence_requests_are_answered_with_unknown_bits_cleared() {
        let (mut f, mut v, _) = flow_with(&[enc::FENCE]);
        let mut out = Vec::new();
        let m = ClientMessage::Fence {
            flags: fence::REQUEST | fence::BLOCK_BEFORE | 1 << 9,
            payload: vec![9, 8],
        };
        assert_eq!(f.intercept(m, &mut v, &mut out, Instant::now()), Ok(None));
        assert_eq!(out, [248, 0, 0, 0, 0, 0, 0, 1, 2, 9, 8]);
    }

    #[test]
    fn sync_next_is_answered_after_the_next_message() {
        let (mut f, mut v, _) = flow_with(&[enc::FENCE]);
        let mut out = Vec::new();
        let m = ClientMessage::Fence {
            flags: fence::REQUEST | fence::SYNC_NEXT,
            payload: vec![],
        };
        f.intercept(m, &mut v, &mut out, Instant::now()).unwrap();
        assert!(out.is_empty());
        let m = ClientMessage::SetPixelFormat(crate::rfb::PixelFormat::RGB565);
        assert!(f
            .intercept(m, &mut v, &mut out, Instant::now())
            .unwrap()
            .is_some());
        assert!(out.is_empty());
        f.after_message(&mut out);
        assert_eq!(out, [248, 0, 0, 0, 0, 0, 0, 4, 0]);
    }

    #[test]
    fn continuous_mode_ignores_incremental_requests_and_ends_with_a_message() {
        let (mut f, mut v, _) = flow_with(&[enc::FENCE, enc::CONTINUOUS_UPDATES]);
        let mut out = Vec::new();
        let on = ClientMessage::EnableContinuousUpdates {
            enable: true,
            rect: Rect::new(0, 0, 64, 48),
        };
        f.intercept(on, &mut v, &mut out, Instant::now()).unwrap();
        assert!(f.continuous());
        let inc = ClientMessage::FramebufferUpdateRequest {
            incremental: true,
            rect: Rect::new(0, 0, 1, 1),
        };
        assert_eq!(f.intercept(inc, &mut v, &mut out, Instant::now()), Ok(None));
        f.before_update(&mut v);
        assert!(v.has_request());
        let off = ClientMessage::EnableContinuousUpdates {
            enable: false,
            rect: Rect::default(),
        };
        f.intercept(off.clone(), &mut v, &mut out, Instant::now())
            .unwrap();
        assert!(
            !v.has_request(),
            "the request made for continuous mode goes"
        );
        assert_eq!(out, [150]);
        // Again while off: EndOfContinuousUpdates again.
        f.intercept(off, &mut v, &mut out, Instant::now()).unwrap();
        assert_eq!(out, [150, 150]);
    }

    #[test]
    fn updates_are_framed_by_pings_and_answers_measure_the_link() {
        let (mut f, _, _) = flow_with(&[enc::FENCE]);
        let t0 = Instant::now();
        let out = f.wrap_update(100, vec![0; 1000], t0);
        let ping = [248, 0, 0, 0, 0x80, 0, 0, 1, 1, PING];
        assert_eq!(out[..10], ping);
        assert_eq!(out[out.len() - 10..], ping);
        let mut v = ViewerState::new(8, 8);
        let mut o = Vec::new();
        for _ in 0..2 {
            let pong = ClientMessage::Fence {
                flags: fence::BLOCK_BEFORE,
                payload: vec![PING],
            };
            let later = t0 + std::time::Duration::from_millis(40);
            f.intercept(pong, &mut v, &mut o, later).unwrap();
        }
        assert!(o.is_empty());
        assert_eq!(f.estimate().unwrap().1, Some(40));
    }
}
