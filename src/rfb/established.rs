//! The normal phase of an RFB connection, after ServerInit.
//!
//! An [`Established`] comes only out of [`Handshake::server_init`]
//! (which consumes the handshake), so client messages are decoded, and
//! server messages sent, only once ServerInit has gone out; the
//! handshake's decisions (`auth_verdict`, `approve`, `server_init`) do
//! not exist here. Still sans-IO: bytes in with [`Established::receive`],
//! messages out of [`Established::poll_message`], bytes to send taken
//! with [`Established::take_output`].
//!
//! [`Handshake::server_init`]: super::Handshake::server_init
//!
//! ```compile_fail,E0599
//! // ServerInit is sent once, by the handshake: the established phase
//! // has no server_init.
//! use ticketvnc::rfb::{Established, PixelFormat};
//! fn again(mut c: Established) {
//!     let _ = c.server_init(640, 480, &PixelFormat::NATIVE, "twice");
//! }
//! ```
//!
//! ```compile_fail,E0599
//! // No client message is decoded, and no server message sent, before
//! // ServerInit: the handshake has neither.
//! use ticketvnc::rfb::{Handshake, SecurityType};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! let _ = c.poll_message();
//! c.send(&[2]);
//! ```
//!
//! ```compile_fail,E0382
//! // server_init consumes the handshake: it cannot be answered twice.
//! use ticketvnc::rfb::{Handshake, InitDue, PixelFormat, SecurityType};
//! fn twice(c: Handshake, due: InitDue, again: InitDue) {
//!     let first = c.server_init(due, 1, 1, &PixelFormat::NATIVE, "x");
//!     let second = c.server_init(again, 1, 1, &PixelFormat::NATIVE, "x");
//! }
//! ```
//!
//! ```compile_fail,E0061
//! // No ServerInit without the ClientInit event's token.
//! use ticketvnc::rfb::{Handshake, PixelFormat, SecurityType};
//! let c = Handshake::new(&[SecurityType::None]);
//! let est = c.server_init(1, 1, &PixelFormat::NATIVE, "x");
//! ```
//!
//! The legal path, for comparison (it compiles and runs):
//!
//! ```
//! use ticketvnc::rfb::{ClientMessage, Event, Handshake, PixelFormat, SecurityType};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! assert_eq!(c.take_output(), b"RFB 003.008\n");
//! // Version, security type None, ClientInit (shared), and a
//! // PointerEvent pipelined behind it.
//! c.receive(b"RFB 003.008\n\x01\x01\x05\x00\x00\x01\x00\x02").unwrap();
//! let mut init = None;
//! while let Some(ev) = c.poll_event().unwrap() {
//!     match ev {
//!         Event::Authenticated(due) => c.approve(due).unwrap(),
//!         Event::ClientInit { due, .. } => init = Some(due),
//!         _ => {}
//!     }
//! }
//! let mut c = c
//!     .server_init(init.unwrap(), 640, 480, &PixelFormat::NATIVE, "desk")
//!     .unwrap();
//! assert!(c.take_output().ends_with(b"desk"));
//! assert_eq!(
//!     c.poll_message(),
//!     Ok(Some(ClientMessage::PointerEvent { buttons: 0, x: 1, y: 2 }))
//! );
//! ```

use super::buffers::Buffers;
use super::connection::{SecurityType, VeNCryptSubtype, Version};
use super::error::ProtocolError;
use super::messages::{self, ClientMessage};
use super::output::{Listed, Output, OutputState, Refused};
use super::update::{UpdateBuf, UpdateRefused};

/// What the handshake settled, kept for the life of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub version: Version,
    pub security: SecurityType,
    /// The VeNCrypt subtype, when `security` is VeNCrypt.
    pub vencrypt: Option<VeNCryptSubtype>,
    /// The client sent "RFB 003.889" (Apple's Screen Sharing).
    pub mac_viewer: bool,
}

/// The server side of one RFB connection after ServerInit.
pub struct Established {
    io: Buffers,
    negotiated: Negotiated,
    /// The viewer listed ExtendedMouseButtons: a PointerEvent with bit 7
    /// set carries one more byte.
    extended_pointer: bool,
    /// What the viewer negotiated, what went out, what was refused.
    output: OutputState,
    closed: bool,
}

impl Established {
    /// Made by [`super::Handshake::server_init`] only, for a framebuffer
    /// of `width` x `height`.
    pub(super) fn new(io: Buffers, negotiated: Negotiated, width: u16, height: u16) -> Established {
        Established {
            io,
            negotiated,
            extended_pointer: false,
            output: OutputState::new(width, height),
            closed: false,
        }
    }

    /// What the handshake settled.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Feed received bytes. After an error (or [`Established::close`])
    /// input is ignored.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        if self.closed {
            return Ok(());
        }
        if let Err(e) = self.io.receive(data) {
            return self.fail(e);
        }
        Ok(())
    }

    /// The next complete client message, `Ok(None)` when more input is
    /// needed. A partial message is never consumed; every length is
    /// checked before its bytes are waited for. An error closes the
    /// connection.
    pub fn poll_message(&mut self) -> Result<Option<ClientMessage>, ProtocolError> {
        if self.closed {
            return Ok(None);
        }
        match messages::decode_client_message_ext(self.io.input(), self.extended_pointer) {
            Ok(Some((msg, n))) => {
                if let ClientMessage::SetEncodings(list) = &msg {
                    self.extended_pointer = list.contains(&messages::enc::EXTENDED_MOUSE_BUTTONS);
                    self.output.listed.add(list);
                    self.output.update.add_listed(list);
                }
                if let ClientMessage::Fence { flags, .. } = &msg {
                    if flags & messages::fence::REQUEST != 0 {
                        self.output.fence_requests += 1;
                    }
                }
                self.io.consume(n);
                Ok(Some(msg))
            }
            Ok(None) => Ok(None),
            Err(e) => self.fail(e),
        }
    }

    /// Bytes queued for the peer (ServerInit first, then what was sent).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.io.take_output()
    }

    pub fn has_output(&self) -> bool {
        !self.io.out.is_empty()
    }

    /// A writer of server messages (other than FramebufferUpdate) into
    /// `buf`, checked against what the viewer negotiated (see
    /// [`super::output`]).
    pub fn output<'a>(&'a mut self, buf: &'a mut Vec<u8>) -> Output<'a> {
        Output {
            state: &mut self.output,
            buf,
            deferred: &mut self.io.out,
        }
    }

    /// The bytes of `buf` (FramebufferUpdates, and anything written before
    /// them through [`Established::output`]) to send, once every header in
    /// it has passed the core's checks (see [`super::update`]). A refused
    /// buffer must not be sent: the viewer would lose its place in the
    /// stream. An update goes on from one buffer to the next; while one is
    /// open, [`Established::output`] refuses every other message.
    pub fn pass(&mut self, buf: UpdateBuf) -> Result<Vec<u8>, UpdateRefused> {
        self.output.update.check(&buf)?;
        Ok(buf.into_bytes())
    }

    /// Inside a FramebufferUpdate (its last rectangle has not passed).
    pub fn in_update(&self) -> bool {
        self.output.update.is_open()
    }

    /// The extensions the viewer has listed so far.
    pub fn listed(&self) -> Listed {
        self.output.listed
    }

    /// Server messages written through [`Established::output`].
    pub fn messages_sent(&self) -> u64 {
        self.output.sent
    }

    /// The first message [`Established::output`] refused since the last
    /// call, if any.
    pub fn take_refused(&mut self) -> Option<Refused> {
        self.output.refused.take()
    }

    /// Close from the server side: no more messages.
    pub fn close(&mut self) {
        self.closed = true;
        self.io.clear_input();
    }

    /// Closed by an error or [`Established::close`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn fail<T>(&mut self, e: ProtocolError) -> Result<T, ProtocolError> {
        self.close();
        Err(e)
    }

    /// Bytes moved by compacting the input (tests of the read offset).
    #[cfg(test)]
    pub(super) fn moved(&self) -> usize {
        self.io.moved
    }
}
