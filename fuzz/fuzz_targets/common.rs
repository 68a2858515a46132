//! A deterministic driver for `ServerConnection`, shared by the handshake
//! and split-invariance targets: it answers the connection's questions the
//! way the session does (a real DES check against a fixed password, a fixed
//! ServerInit) and records everything that happens.

#![allow(dead_code)]

use ticketvnc::rfb::{Event, PixelFormat, ProtocolError, SecurityType, ServerConnection};
use ticketvnc::security::{vnc_auth_response, VncPassword};

/// The challenge every fuzzed connection sends (determinism).
pub const CHALLENGE: [u8; 16] = [
    0x3c, 0xa1, 0x57, 0x09, 0xe2, 0x4d, 0x88, 0x16, 0x71, 0xbf, 0x02, 0x6e, 0xd5, 0x93, 0x2a, 0xc8,
];
pub const PASSWORD: &[u8] = b"fuzzpass";

pub fn challenge() -> [u8; 16] {
    CHALLENGE
}

/// The one response that authenticates (seed corpora contain it).
pub fn right_response() -> [u8; 16] {
    vnc_auth_response(&VncPassword::new(PASSWORD), &CHALLENGE)
}

/// Which security types the server offers, chosen by one input byte.
pub fn offered(mode: u8) -> &'static [SecurityType] {
    match mode % 4 {
        0 => &[SecurityType::VncAuth],
        1 => &[SecurityType::None],
        2 => &[SecurityType::VncAuth, SecurityType::None],
        _ => &[SecurityType::None, SecurityType::VncAuth],
    }
}

/// Everything observable about one run.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Trace {
    pub events: Vec<Event>,
    pub error: Option<ProtocolError>,
    pub output: Vec<u8>,
    pub authenticated: bool,
    pub normal: bool,
}

pub struct Driver {
    pub conn: ServerConnection,
    pub offered: &'static [SecurityType],
    pub password: VncPassword,
    /// A response that verified was received.
    pub right_response_seen: bool,
    pub trace: Trace,
}

impl Driver {
    pub fn new(mode: u8) -> Driver {
        let offered = offered(mode);
        let mut conn = ServerConnection::new(offered).with_challenge_source(challenge);
        let output = conn.take_output();
        Driver {
            conn,
            offered,
            password: VncPassword::new(PASSWORD),
            right_response_seen: false,
            trace: Trace {
                output,
                ..Trace::default()
            },
        }
    }

    pub fn closed(&self) -> bool {
        self.trace.error.is_some()
    }

    /// Feed one chunk and handle every event it produces, checking the
    /// authentication invariants after each step.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.closed() {
            return;
        }
        if let Err(e) = self.conn.receive(chunk) {
            self.trace.error = Some(e);
            return;
        }
        loop {
            let ev = match self.conn.poll_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    self.trace.error = Some(e);
                    break;
                }
            };
            self.trace.events.push(ev.clone());
            match ev {
                Event::SecurityChosen(t) => {
                    assert!(self.offered.contains(&t), "{t:?} was not offered");
                }
                Event::VncAuthResponse {
                    challenge,
                    response,
                } => {
                    assert_eq!(challenge, CHALLENGE);
                    assert_eq!(self.conn.security_type(), Some(SecurityType::VncAuth));
                    assert!(!self.conn.is_authenticated());
                    let ok = self.password.verify(&challenge, &response);
                    assert_eq!(ok, response == right_response());
                    self.right_response_seen |= ok;
                    if let Err(e) = self.conn.auth_verdict(ok) {
                        assert!(!ok, "a right response was refused: {e}");
                        self.trace.error = Some(e);
                    }
                }
                Event::ClientInit { .. } => {
                    assert!(self.may_be_authenticated(), "ClientInit without authentication");
                    self.conn
                        .server_init(64, 48, &PixelFormat::NATIVE, "fuzz")
                        .expect("ServerInit after ClientInit");
                }
                Event::VersionAgreed(_) | Event::Message(_) => {}
            }
            self.check();
            if self.closed() {
                break;
            }
        }
        self.check();
        self.trace.output.extend(self.conn.take_output());
        self.trace.authenticated = self.conn.is_authenticated();
        self.trace.normal = self.conn.is_normal();
    }

    /// Authenticated only through None (when offered and chosen) or the right response.
    fn may_be_authenticated(&self) -> bool {
        match self.conn.security_type() {
            Some(SecurityType::None) => self.offered.contains(&SecurityType::None),
            Some(SecurityType::VncAuth) => self.right_response_seen,
            None => false,
        }
    }

    fn check(&self) {
        if self.conn.is_authenticated() || self.conn.is_normal() {
            assert!(
                self.may_be_authenticated(),
                "authenticated without the right response (type {:?})",
                self.conn.security_type()
            );
        }
    }
}

/// Chunk lengths derived from a seed: a small xorshift, lengths 1..=max.
pub fn chunk_lengths(seed: u8, total: usize) -> Vec<usize> {
    let max = (seed as usize % 64) + 1;
    let mut x: u32 = 0x9e37_79b9 ^ (seed as u32).wrapping_mul(0x85eb_ca6b);
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % max + 1).min(left);
        out.push(n);
        left -= n;
    }
    out
}
