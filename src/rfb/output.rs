//! Server messages outside FramebufferUpdates go through the core:
//! [`Established::output`](super::Established::output) lends an
//! [`Output`] that writes each message, by a typed method, into the
//! driver's buffer (the session's writer buffers: no copy), after checking
//! that the viewer negotiated it: an Extended Clipboard message only to a
//! viewer that listed the Extended Clipboard pseudo-encoding, a fence only
//! to one that listed Fence (or, without it, the answer to a fence request
//! the viewer sent, one per request), EndOfContinuousUpdates only to one that
//! listed ContinuousUpdates. A refused message is not written; the core
//! remembers it ([`Established::take_refused`](super::Established::take_refused))
//! so the driver can log it: it is a bug of the driver, never the viewer's.
//!
//! ```compile_fail,E0599
//! // The handshake lends no Output: no server message before ServerInit.
//! use ticketvnc::rfb::{Handshake, SecurityType};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! let mut buf = Vec::new();
//! c.output(&mut buf).send_bell();
//! ```

use super::messages::{self, enc};
use super::update::UpdateState;

/// What the viewer's SetEncodings have listed so far (kept once listed:
/// the session keeps an extension on once it started it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub ext_clipboard: bool,
    pub fence: bool,
    pub continuous_updates: bool,
}

impl Listed {
    pub(super) fn add(&mut self, encodings: &[i32]) {
        self.ext_clipboard |= encodings.contains(&enc::EXTENDED_CLIPBOARD);
        self.fence |= encodings.contains(&enc::FENCE);
        self.continuous_updates |= encodings.contains(&enc::CONTINUOUS_UPDATES);
    }
}

/// A server message the viewer did not negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("Extended Clipboard message to a viewer that did not list the pseudo-encoding")]
    ExtendedClipboard,
    #[error("fence to a viewer that neither listed Fence nor asked with a fence of its own")]
    Fence,
    #[error("EndOfContinuousUpdates to a viewer that did not list ContinuousUpdates")]
    EndOfContinuousUpdates,
}

/// The core's record of what went out and what it refused.
#[derive(Debug)]
pub(super) struct OutputState {
    pub(super) listed: Listed,
    /// ClientFence requests not answered yet.
    pub(super) fence_requests: u64,
    pub(super) sent: u64,
    pub(super) refused: Option<Refused>,
    /// FramebufferUpdates (see [`super::update`]).
    pub(super) update: UpdateState,
}

impl OutputState {
    pub(super) fn new(width: u16, height: u16) -> OutputState {
        OutputState {
            listed: Listed::default(),
            fence_requests: 0,
            sent: 0,
            refused: None,
            update: UpdateState::new(width, height),
        }
    }
}

/// The server messages other than FramebufferUpdate, one typed method
/// each. [`Output`] is the core's; flow control and the clipboard write
/// through this trait.
pub trait ServerMessages {
    fn send_bell(&mut self);
    /// ServerCutText with Latin-1 bytes.
    fn send_cut_text(&mut self, latin1: &[u8]);
    /// ServerCutText in the Extended Clipboard format.
    fn send_ext_clipboard(&mut self, flags: u32, payload: &[u8]);
    /// ServerFence (a payload beyond the limit is cut).
    fn send_fence(&mut self, flags: u32, payload: &[u8]);
    fn send_end_of_continuous_updates(&mut self);
    /// SetColourMapEntries from index `first`, colours as `0x00RRGGBB`.
    fn send_colour_map(&mut self, first: u16, colours: &[u32]);
}

/// A borrowed writer of server messages into the driver's buffer, with the
/// core's checks. While a FramebufferUpdate is open (its last rectangle has
/// not passed [`super::Established::pass`]), nothing may go between its
/// rectangles: a message written then goes to the core's own output
/// instead, which the driver sends once the update is complete
/// ([`super::Established::take_output`]).
pub struct Output<'a> {
    pub(super) state: &'a mut OutputState,
    pub(super) buf: &'a mut Vec<u8>,
    /// The core's output, for messages written inside an update.
    pub(super) deferred: &'a mut Vec<u8>,
}

impl Output<'_> {
    /// Where the next message goes: the driver's buffer, or the core's
    /// output while an update is open.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.state.update.is_open() {
            self.deferred
        } else {
            self.buf
        }
    }

    fn allowed(&mut self, ok: bool, refused: Refused) -> bool {
        if ok {
            self.state.sent += 1;
        } else {
            self.state.refused.get_or_insert(refused);
        }
        ok
    }
}

impl ServerMessages for Output<'_> {
    fn send_bell(&mut self) {
        self.state.sent += 1;
        messages::bell::encode(self.out());
    }

    fn send_cut_text(&mut self, latin1: &[u8]) {
        self.state.sent += 1;
        messages::cut_text::encode_server(latin1, self.out());
    }

    fn send_ext_clipboard(&mut self, flags: u32, payload: &[u8]) {
        let ok = self.state.listed.ext_clipboard;
        if self.allowed(ok, Refused::ExtendedClipboard) {
            messages::cut_text::encode_server_extended(flags, payload, self.out());
        }
    }

    fn send_fence(&mut self, flags: u32, payload: &[u8]) {
        let answer = flags & messages::fence::REQUEST == 0 && self.state.fence_requests > 0;
        if answer {
            self.state.fence_requests -= 1;
        }
        let ok = self.state.listed.fence || answer;
        if self.allowed(ok, Refused::Fence) {
            messages::fence::encode(flags, payload, self.out());
        }
    }

    fn send_end_of_continuous_updates(&mut self) {
        let ok = self.state.listed.continuous_updates;
        if self.allowed(ok, Refused::EndOfContinuousUpdates) {
            messages::continuous_updates::encode_end(self.out());
        }
    }

    fn send_colour_map(&mut self, first: u16, colours: &[u32]) {
        self.state.sent += 1;
        messages::colour_map::encode(first, colours, self.out());
    }
}

/// Plain bytes, unchecked: for unit tests of the modules that write
/// through [`ServerMessages`].
#[cfg(test)]
impl ServerMessages for Vec<u8> {
    fn send_bell(&mut self) {
        messages::bell::encode(self);
    }
    fn send_cut_text(&mut self, latin1: &[u8]) {
        messages::cut_text::encode_server(latin1, self);
    }
    fn send_ext_clipboard(&mut self, flags: u32, payload: &[u8]) {
        messages::cut_text::encode_server_extended(flags, payload, self);
    }
    fn send_fence(&mut self, flags: u32, payload: &[u8]) {
        messages::fence::encode(flags, payload, self);
    }
    fn send_end_of_continuous_updates(&mut self) {
        messages::continuous_updates::encode_end(self);
    }
    fn send_colour_map(&mut self, first: u16, colours: &[u32]) {
        messages::colour_map::encode(first, colours, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfb::messages::{decode_server_message, ServerMessage};
    use crate::rfb::{ClientMessage, Established, Event, Handshake, PixelFormat, SecurityType};

    fn established() -> Established {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.take_output();
        c.receive(b"RFB 003.008\n\x01\x01").unwrap();
        let mut init = None;
        while let Some(ev) = c.poll_event().unwrap() {
            match ev {
                Event::Authenticated(due) => c.approve(due).unwrap(),
                Event::ClientInit { due, .. } => init = Some(due),
                _ => {}
            }
        }
        let init = init.expect("ClientInit");
        let mut c = c
            .server_init(init, 64, 48, &PixelFormat::NATIVE, "t")
            .unwrap();
        c.take_output();
        c
    }

    fn set_encodings(c: &mut Established, list: &[i32]) {
        let mut b = Vec::new();
        ClientMessage::SetEncodings(list.to_vec()).encode(&mut b);
        c.receive(&b).unwrap();
        assert!(matches!(
            c.poll_message(),
            Ok(Some(ClientMessage::SetEncodings(_)))
        ));
    }

    fn all(c: &mut Established) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut o = c.output(&mut buf);
        o.send_bell();
        o.send_ext_clipboard(1, &[]);
        o.send_cut_text(b"x");
        o.send_fence(2, &[3]);
        o.send_end_of_continuous_updates();
        buf
    }

    fn decode_all(mut b: &[u8]) -> Vec<ServerMessage> {
        let mut v = Vec::new();
        while let Some((m, n)) = decode_server_message(b).unwrap() {
            v.push(m);
            b = &b[n..];
        }
        assert!(b.is_empty());
        v
    }

    #[test]
    fn messages_a_viewer_did_not_negotiate_are_refused() {
        let mut c = established();
        let out = all(&mut c);
        assert_eq!(
            decode_all(&out),
            [
                ServerMessage::Bell,
                ServerMessage::ServerCutText(b"x".to_vec())
            ]
        );
        assert_eq!(c.messages_sent(), 2);
        // The first refusal is kept until taken.
        assert_eq!(c.take_refused(), Some(Refused::ExtendedClipboard));
        assert_eq!(c.take_refused(), None);
        // Fence alone: the rest is still refused.
        set_encodings(&mut c, &[enc::FENCE]);
        let out = all(&mut c);
        assert_eq!(decode_all(&out).len(), 3);
        assert_eq!(c.take_refused(), Some(Refused::ExtendedClipboard));
    }

    #[test]
    fn a_fence_request_gets_one_answer_without_fence_listed() {
        let mut c = established();
        let mut b = Vec::new();
        ClientMessage::Fence {
            flags: messages::fence::REQUEST | messages::fence::BLOCK_BEFORE,
            payload: vec![7],
        }
        .encode(&mut b);
        c.receive(&b).unwrap();
        assert!(matches!(
            c.poll_message(),
            Ok(Some(ClientMessage::Fence { .. }))
        ));
        let mut buf = Vec::new();
        let mut o = c.output(&mut buf);
        // A request of ours is still refused; one answer goes, a second not.
        o.send_fence(messages::fence::REQUEST, &[1]);
        o.send_fence(messages::fence::BLOCK_BEFORE, &[7]);
        o.send_fence(messages::fence::BLOCK_BEFORE, &[7]);
        assert_eq!(
            decode_all(&buf),
            [ServerMessage::Fence {
                flags: messages::fence::BLOCK_BEFORE,
                payload: vec![7]
            }]
        );
        assert_eq!(c.take_refused(), Some(Refused::Fence));
    }

    /// A message written while an update is open waits in the core's
    /// output until the update is complete (the driver sends that after
    /// it), never between its rectangles, and is never dropped.
    #[test]
    fn no_message_goes_inside_an_update() {
        use crate::framebuffer::Rect;
        use crate::rfb::UpdateBuf;
        let mut c = established();
        let mut b = UpdateBuf::new();
        b.update_header(2);
        b.rect_header(Rect::new(0, 0, 1, 1), enc::RAW);
        b.extend_from_slice(&[0; 4]);
        assert_eq!(c.pass(b).map(|v| v.len()), Ok(4 + 12 + 4));
        assert!(c.in_update());
        let mut buf = Vec::new();
        c.output(&mut buf).send_bell();
        c.output(&mut buf).send_cut_text(b"x");
        assert!(buf.is_empty(), "nothing between the update's rectangles");
        assert_eq!(c.take_refused(), None);
        // The update's last rectangle closes it.
        let mut b = UpdateBuf::new();
        b.rect_header(Rect::new(0, 1, 1, 1), enc::RAW);
        b.extend_from_slice(&[0; 4]);
        c.pass(b).unwrap();
        assert!(!c.in_update());
        assert_eq!(
            decode_all(&c.take_output()),
            [
                ServerMessage::Bell,
                ServerMessage::ServerCutText(b"x".to_vec())
            ]
        );
        c.output(&mut buf).send_bell();
        assert_eq!(decode_all(&buf), [ServerMessage::Bell]);
    }

    #[test]
    fn negotiated_messages_go_out_and_stay_allowed() {
        let mut c = established();
        set_encodings(
            &mut c,
            &[enc::EXTENDED_CLIPBOARD, enc::FENCE, enc::CONTINUOUS_UPDATES],
        );
        // A later SetEncodings without them: the session keeps them on.
        set_encodings(&mut c, &[enc::RAW]);
        let out = all(&mut c);
        assert_eq!(
            decode_all(&out),
            [
                ServerMessage::Bell,
                ServerMessage::ExtendedClipboard {
                    flags: 1,
                    payload: Vec::new()
                },
                ServerMessage::ServerCutText(b"x".to_vec()),
                ServerMessage::Fence {
                    flags: 2,
                    payload: vec![3]
                },
                ServerMessage::EndOfContinuousUpdates,
            ]
        );
        assert_eq!(c.messages_sent(), 5);
        assert_eq!(c.take_refused(), None);
    }
}
