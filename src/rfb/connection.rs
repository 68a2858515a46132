//! The handshake phase of one RFB connection as a sans-IO state machine.
//!
//! Bytes from the network go in with [`Handshake::receive`]; typed events
//! come out of [`Handshake::poll_event`]; bytes to send accumulate and are
//! taken with [`Handshake::take_output`]. Decisions that need the outside
//! world (is this authentication response right? may this viewer in? what
//! is the framebuffer size?) are events the driver answers with
//! [`Handshake::auth_verdict`], [`Handshake::approve`] /
//! [`Handshake::reject`] and [`Handshake::server_init`]. The last consumes
//! the handshake and returns the [`Established`] connection of the normal
//! phase (`established.rs`), so nothing of the normal phase can happen
//! before ServerInit, and no handshake answer after it.
//!
//! Each answer takes the token its event carried ([`VerdictDue`],
//! [`ApprovalDue`], [`TlsDue`], [`InitDue`]): tokens are made only here,
//! handed out once with their event and consumed by the answer, so a
//! verdict without a credential, an approval before authentication, a
//! second approval with the same token or ServerInit before ClientInit
//! does not compile. (A token of another connection, or an explicit
//! clone (events are `Clone` for traces), would; the state is still
//! checked at run time, and a wrong answer closes the connection.)
//!
//! ```compile_fail,E0451
//! // No approval without the Authenticated event's token.
//! use ticketvnc::rfb::{ApprovalDue, Handshake, SecurityType};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! c.approve(ApprovalDue { _private: () });
//! ```
//!
//! ```compile_fail,E0382
//! // A token answers once.
//! use ticketvnc::rfb::{Event, Handshake, SecurityType};
//! let mut c = Handshake::new(&[SecurityType::None]);
//! if let Some(Event::Authenticated(due)) = c.poll_event().unwrap() {
//!     c.approve(due).unwrap();
//!     c.approve(due).unwrap();
//! }
//! ```
//! Nothing here touches a socket, so the same code runs under tokio, in
//! tests and in the fuzzers, and a transport (TCP, TLS, WebSocket) can be
//! swapped underneath without the core noticing.

use super::buffers::Buffers;
use super::error::ProtocolError;
use super::established::{Established, Negotiated};
use super::limits;
use super::messages;
use super::pixel_format::PixelFormat;
use super::wire::{PutExt, Reader};

/// Protocol versions the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        }
    }
}

/// Security types the server can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityType {
    None = 1,
    VncAuth = 2,
    /// VeNCrypt 0.2: a subtype is negotiated, then TLS, then the subtype's
    /// own authentication inside TLS.
    VeNCrypt = 19,
    /// Apple's Diffie-Hellman authentication (Screen Sharing.app): a user
    /// name and password encrypted under a DH-agreed key; the session
    /// itself is not encrypted (`security::apple_dh`).
    AppleDh = 30,
}

impl SecurityType {
    pub fn from_u8(v: u8) -> Option<SecurityType> {
        match v {
            1 => Some(SecurityType::None),
            2 => Some(SecurityType::VncAuth),
            19 => Some(SecurityType::VeNCrypt),
            30 => Some(SecurityType::AppleDh),
            _ => None,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            SecurityType::None => "none",
            SecurityType::VncAuth => "vnc-auth",
            SecurityType::VeNCrypt => "vencrypt",
            SecurityType::AppleDh => "apple-dh",
        }
    }
}

/// VeNCrypt subtypes the server can offer: all run inside X.509 TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VeNCryptSubtype {
    /// TLS, no further authentication.
    X509None = 260,
    /// TLS, then VNC authentication (password or one-time code).
    X509Vnc = 261,
    /// TLS, then a user name and password (technician accounts).
    X509Plain = 262,
}

impl VeNCryptSubtype {
    pub fn from_u32(v: u32) -> Option<VeNCryptSubtype> {
        match v {
            260 => Some(VeNCryptSubtype::X509None),
            261 => Some(VeNCryptSubtype::X509Vnc),
            262 => Some(VeNCryptSubtype::X509Plain),
            _ => None,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            VeNCryptSubtype::X509None => "X509None",
            VeNCryptSubtype::X509Vnc => "X509Vnc",
            VeNCryptSubtype::X509Plain => "X509Plain",
        }
    }
}

/// A password from the network. Its `Debug` never shows the bytes and
/// they are zeroed when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The right to answer a credential with [`Handshake::auth_verdict`],
/// handed out once with [`Event::VncAuthResponse`],
/// [`Event::PlainCredentials`] or [`Event::AppleDhCredentials`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "answer the credential with auth_verdict (or reject)"]
pub struct VerdictDue {
    _private: (),
}

/// The right to let an authenticated viewer in with
/// [`Handshake::approve`], handed out once with [`Event::Authenticated`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "approve (or reject) the authenticated viewer"]
pub struct ApprovalDue {
    _private: (),
}

/// The right to say TLS is up with [`Handshake::tls_established`],
/// handed out once with [`Event::StartTls`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "run TLS and answer with tls_established (or reject)"]
pub struct TlsDue {
    _private: (),
}

/// The right to send ServerInit with [`Handshake::server_init`], handed
/// out once with [`Event::ClientInit`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "answer ClientInit with server_init (or reject)"]
pub struct InitDue {
    _private: (),
}

/// What the connection wants the driver to know or decide. The events
/// that want an answer carry the token the answer takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The client sent its version; the rest of the handshake follows it.
    VersionAgreed(Version),
    /// The client chose (or, at 3.3, was given) this security type.
    SecurityChosen(SecurityType),
    /// The client chose this VeNCrypt subtype.
    VeNCryptChosen(VeNCryptSubtype),
    /// Start TLS now: send what [`Handshake::take_output`] holds,
    /// take [`Handshake::take_unprocessed`] (bytes that came after
    /// the subtype choice belong to TLS), run the TLS handshake, feed
    /// decrypted bytes from then on and call
    /// [`Handshake::tls_established`].
    StartTls(TlsDue),
    /// A VNC-authentication response arrived. The driver checks it and calls
    /// [`Handshake::auth_verdict`]; nothing else is decoded until then.
    VncAuthResponse {
        challenge: [u8; 16],
        response: [u8; 16],
        due: VerdictDue,
    },
    /// VeNCrypt Plain credentials arrived. `username` is lossily decoded,
    /// stripped of control characters and at most
    /// [`limits::MAX_LOGGED_USERNAME`] characters. The driver checks them and
    /// calls [`Handshake::auth_verdict`].
    PlainCredentials {
        username: String,
        /// The name on the wire is exactly `username` (valid UTF-8, no
        /// control characters, not cut). When false, no account can match:
        /// account names are checked against the cleaned form only for logs.
        exact: bool,
        password: Secret,
        due: VerdictDue,
    },
    /// Apple DH credentials arrived, decrypted. `username` and `exact` as
    /// for [`Event::PlainCredentials`] (an empty name is allowed: the
    /// password is then a VNC password or one-time code). `password` is
    /// `None` when the block was malformed (a field without its NUL: the
    /// keys did not agree or the client does not follow the protocol),
    /// which can only fail. The driver checks them and calls
    /// [`Handshake::auth_verdict`].
    AppleDhCredentials {
        username: String,
        exact: bool,
        password: Option<Secret>,
        due: VerdictDue,
    },
    /// The client proved who it is (or None needed no proof). The driver
    /// may now ask the local user and then calls
    /// [`Handshake::approve`] or [`Handshake::reject`];
    /// nothing else is decoded until then.
    Authenticated(ApprovalDue),
    /// Approved and ClientInit arrived. The driver decides about
    /// sharing and calls [`Handshake::server_init`].
    ClientInit { shared: bool, due: InitDue },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Version,
    SecurityChoice,
    VeNCryptVersion,
    VeNCryptSubtype,
    AwaitTls(VeNCryptSubtype),
    VncResponse { challenge: [u8; 16] },
    PlainHeader,
    PlainBody { user_len: usize, pass_len: usize },
    AppleDhResponse,
    AwaitVerdict,
    AwaitApproval,
    ClientInit,
    AwaitServerInit,
    Closed,
}

pub struct Handshake {
    state: State,
    version: Option<Version>,
    offered: Vec<SecurityType>,
    vencrypt: Vec<VeNCryptSubtype>,
    chosen: Option<SecurityType>,
    subtype: Option<VeNCryptSubtype>,
    /// Refuse every client once its version is known, with this reason.
    refusal: Option<String>,
    io: Buffers,
    pending: std::collections::VecDeque<Event>,
    challenge_source: fn() -> [u8; 16],
    /// What a viewer that sends "RFB 003.889" (Apple's Screen Sharing) is
    /// offered instead of `offered`; `None`: the same as everyone.
    mac_offer: Option<Vec<SecurityType>>,
    /// The client sent "RFB 003.889".
    mac_viewer: bool,
    /// The server's Apple DH key while type 30 runs.
    apple_key: Option<crate::security::apple_dh::ServerKey>,
    /// Random bytes for the Apple DH private exponent.
    apple_dh_source: fn() -> [u8; 32],
}

fn os_challenge() -> [u8; 16] {
    use rand::RngCore;
    let mut c = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut c);
    c
}

fn os_dh_random() -> [u8; 32] {
    use rand::RngCore;
    let mut c = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut c);
    c
}

/// The version string Apple's servers send; Screen Sharing.app answers a
/// server that sends anything else with "RFB 003.003".
pub const APPLE_VERSION: &[u8; 12] = b"RFB 003.889\n";

impl Handshake {
    /// A new connection offering `offered` (in order of preference). The
    /// server's ProtocolVersion is queued for output at once. When
    /// `offered` holds [`SecurityType::VeNCrypt`], give its subtypes with
    /// [`Handshake::with_vencrypt`].
    pub fn new(offered: &[SecurityType]) -> Handshake {
        assert!(!offered.is_empty(), "at least one security type");
        Handshake {
            state: State::Version,
            version: None,
            offered: offered.to_vec(),
            vencrypt: Vec::new(),
            chosen: None,
            subtype: None,
            refusal: None,
            io: Buffers::new(b"RFB 003.008\n".to_vec()),
            pending: Default::default(),
            challenge_source: os_challenge,
            mac_offer: None,
            mac_viewer: false,
            apple_key: None,
            apple_dh_source: os_dh_random,
        }
    }

    /// Offer `types` (in order of preference) to a viewer that sends
    /// "RFB 003.889" (Screen Sharing.app), instead of the usual list. It
    /// may hold [`SecurityType::AppleDh`]; an empty list refuses Mac
    /// viewers with a reason.
    pub fn with_mac_offer(mut self, types: &[SecurityType]) -> Self {
        self.mac_offer = Some(types.to_vec());
        self
    }

    /// Send Apple's "RFB 003.889" as the server's version (instead of
    /// 3.8), so that Screen Sharing.app answers with 003.889 rather than
    /// falling back to 3.3. Other viewers treat it as 3.8 (TigerVNC,
    /// libvncclient, vncdotool, noVNC) or 3.3 (vnc-rs). Call before
    /// taking any output.
    pub fn with_apple_version(mut self) -> Self {
        if self.io.out == b"RFB 003.008\n" {
            self.io.out = APPLE_VERSION.to_vec();
        }
        self
    }

    /// Replace the Apple DH key source (fuzzers and tests).
    pub fn with_apple_dh_source(mut self, f: fn() -> [u8; 32]) -> Self {
        self.apple_dh_source = f;
        self
    }

    /// The client sent "RFB 003.889" (Apple's Screen Sharing). Served as 3.8.
    pub fn is_mac_viewer(&self) -> bool {
        self.mac_viewer
    }

    /// The security types offered to this client (once its version is known).
    pub fn offered(&self) -> &[SecurityType] {
        &self.offered
    }

    /// The VeNCrypt subtypes offered (in order of preference). Without any,
    /// VeNCrypt is not offered even if it is in the type list.
    pub fn with_vencrypt(mut self, subtypes: &[VeNCryptSubtype]) -> Self {
        self.vencrypt = subtypes.to_vec();
        if self.vencrypt.is_empty() {
            self.offered.retain(|t| *t != SecurityType::VeNCrypt);
            assert!(!self.offered.is_empty(), "at least one security type");
        }
        self
    }

    /// A connection that answers the client's version with a refusal and
    /// `reason` (a lockout, an overloaded server), then closes.
    pub fn refusing(reason: &str) -> Handshake {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.refusal = Some(reason.to_string());
        c
    }

    /// Replace the challenge generator (fuzzers and tests need determinism).
    pub fn with_challenge_source(mut self, f: fn() -> [u8; 16]) -> Self {
        self.challenge_source = f;
        self
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }
    pub fn security_type(&self) -> Option<SecurityType> {
        self.chosen
    }
    pub fn vencrypt_subtype(&self) -> Option<VeNCryptSubtype> {
        self.subtype
    }
    /// True once authentication has passed (consent may still be pending).
    pub fn is_authenticated(&self) -> bool {
        matches!(
            self.state,
            State::AwaitApproval | State::ClientInit | State::AwaitServerInit
        )
    }
    /// True once the local user (or policy) approved: SecurityResult OK went out.
    pub fn is_approved(&self) -> bool {
        matches!(self.state, State::ClientInit | State::AwaitServerInit)
    }

    /// Bytes queued for the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.io.out)
    }
    pub fn has_output(&self) -> bool {
        !self.io.out.is_empty()
    }
    /// Received bytes not parsed yet. After [`Event::StartTls`] these are
    /// the first bytes of the TLS handshake and belong to the TLS layer.
    pub fn take_unprocessed(&mut self) -> Vec<u8> {
        self.io.take_unprocessed()
    }

    /// Feed received bytes.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Ok(());
        }
        if let Err(e) = self.io.receive(data) {
            return self.fail(e);
        }
        Ok(())
    }

    /// The next event, `Ok(None)` when more input (or a driver decision) is needed.
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            // A step may make progress without an event (a Plain header
            // read, its body still to come): keep stepping until an event
            // comes out or nothing moves.
            let before = (self.state, self.io.rpos);
            if let Err(e) = self.step() {
                return self.fail(e);
            }
            if self.pending.is_empty() && (self.state, self.io.rpos) == before {
                return Ok(None);
            }
        }
    }

    fn fail<T>(&mut self, e: ProtocolError) -> Result<T, ProtocolError> {
        // A closed connection produces nothing more, not even events queued
        // in the step that failed (the driver reads `version()` instead).
        self.pending.clear();
        self.state = State::Closed;
        self.io.clear_input();
        Err(e)
    }

    fn input(&self) -> &[u8] {
        self.io.input()
    }

    fn consume(&mut self, n: usize) {
        self.io.consume(n);
    }

    /// Does the result of the security phase go on the wire? Always at 3.8;
    /// at 3.7 for every type but None; never at 3.3 with None.
    fn sends_security_result(&self) -> bool {
        self.version == Some(Version::V3_8) || self.chosen != Some(SecurityType::None)
    }

    /// Advance the state machine by at most one step that yields events.
    fn step(&mut self) -> Result<(), ProtocolError> {
        match self.state {
            State::Version => {
                let Some(b) = Reader::new(self.input()).array::<12>() else {
                    // Fail early on the first byte that cannot be a version string.
                    if !b"RFB 000.000\n"
                        .iter()
                        .zip(self.input())
                        .all(|(tmpl, got)| prefix_ok(*tmpl, *got))
                    {
                        return Err(ProtocolError::BadVersion);
                    }
                    return Ok(());
                };
                let v = parse_version(&b)?;
                self.consume(12);
                self.version = Some(v);
                if &b == APPLE_VERSION {
                    self.mac_viewer = true;
                    if let Some(types) = self.mac_offer.take() {
                        self.offered = types;
                    }
                }
                self.pending.push_back(Event::VersionAgreed(v));
                if let Some(reason) = self.refusal.clone() {
                    self.refuse_at_version(&reason);
                    return Err(ProtocolError::Refused(reason));
                }
                if v == Version::V3_3 {
                    // The server decides: the first offered type a 3.3
                    // client can use (VeNCrypt needs a choice, so 3.7+;
                    // Apple DH is never forced on a viewer).
                    match self
                        .offered
                        .iter()
                        .copied()
                        .find(|t| matches!(t, SecurityType::None | SecurityType::VncAuth))
                    {
                        Some(t) => {
                            self.io.out.put_u32(t as u32);
                            self.enter_security(t);
                        }
                        None => {
                            let reason = "this server requires VeNCrypt (TLS); \
                                          use a viewer that speaks RFB 3.7 or later";
                            self.refuse_at_version(reason);
                            return Err(ProtocolError::Refused(reason.into()));
                        }
                    }
                } else if self.offered.is_empty() {
                    let reason = "this server has no security type for Screen Sharing.app \
                                  (it needs a password or a one-time code); \
                                  connect with a VNC viewer that speaks VeNCrypt";
                    self.refuse_at_version(reason);
                    return Err(ProtocolError::Refused(reason.into()));
                } else {
                    self.io.out.put_u8(self.offered.len() as u8);
                    for t in &self.offered {
                        self.io.out.put_u8(*t as u8);
                    }
                    self.state = State::SecurityChoice;
                }
            }
            State::SecurityChoice => {
                let Some(&choice) = self.input().first() else {
                    return Ok(());
                };
                self.consume(1);
                match SecurityType::from_u8(choice).filter(|t| self.offered.contains(t)) {
                    Some(t) => self.enter_security(t),
                    None => {
                        if self.version == Some(Version::V3_8) {
                            self.security_result_failed("security type not offered");
                        }
                        return Err(ProtocolError::SecurityTypeNotOffered(choice));
                    }
                }
            }
            State::VeNCryptVersion => {
                let Some([major, minor]) = Reader::new(self.input()).array::<2>() else {
                    return Ok(());
                };
                self.consume(2);
                if (major, minor) != (0, 2) {
                    self.io.out.put_u8(0xff);
                    return Err(ProtocolError::VeNCryptVersion(major, minor));
                }
                self.io.out.put_u8(0);
                self.io.out.put_u8(self.vencrypt.len() as u8);
                for s in &self.vencrypt {
                    self.io.out.put_u32(*s as u32);
                }
                self.state = State::VeNCryptSubtype;
            }
            State::VeNCryptSubtype => {
                let Some(choice) = Reader::new(self.input()).u32() else {
                    return Ok(());
                };
                self.consume(4);
                match VeNCryptSubtype::from_u32(choice).filter(|s| self.vencrypt.contains(s)) {
                    Some(s) => {
                        self.io.out.put_u8(1);
                        self.subtype = Some(s);
                        self.state = State::AwaitTls(s);
                        self.pending.push_back(Event::VeNCryptChosen(s));
                        self.pending
                            .push_back(Event::StartTls(TlsDue { _private: () }));
                    }
                    None => {
                        self.io.out.put_u8(0);
                        return Err(ProtocolError::SubtypeNotOffered(choice));
                    }
                }
            }
            State::VncResponse { challenge } => {
                let Some(response) = Reader::new(self.input()).array::<16>() else {
                    return Ok(());
                };
                self.consume(16);
                self.state = State::AwaitVerdict;
                self.pending.push_back(Event::VncAuthResponse {
                    challenge,
                    response,
                    due: VerdictDue { _private: () },
                });
            }
            State::PlainHeader => {
                let mut r = Reader::new(self.input());
                let (Some(user_len), Some(pass_len)) = (r.u32(), r.u32()) else {
                    return Ok(());
                };
                // Checked before waiting for (or allocating) a single byte.
                if user_len as usize > limits::MAX_PLAIN_USERNAME {
                    return Err(ProtocolError::LimitExceeded {
                        what: "VeNCrypt Plain user name",
                        got: user_len as u64,
                        limit: limits::MAX_PLAIN_USERNAME as u64,
                    });
                }
                if pass_len as usize > limits::MAX_PLAIN_PASSWORD {
                    return Err(ProtocolError::LimitExceeded {
                        what: "VeNCrypt Plain password",
                        got: pass_len as u64,
                        limit: limits::MAX_PLAIN_PASSWORD as u64,
                    });
                }
                self.consume(8);
                self.state = State::PlainBody {
                    user_len: user_len as usize,
                    pass_len: pass_len as usize,
                };
            }
            State::PlainBody { user_len, pass_len } => {
                let mut r = Reader::new(self.input());
                let (Some(user), Some(pass)) = (r.take(user_len), r.take(pass_len)) else {
                    return Ok(());
                };
                let username = clean_username(user);
                let exact = username.as_bytes() == user;
                let password = Secret::new(pass.to_vec());
                self.consume(user_len + pass_len);
                self.state = State::AwaitVerdict;
                self.pending.push_back(Event::PlainCredentials {
                    username,
                    exact,
                    password,
                    due: VerdictDue { _private: () },
                });
            }
            State::AppleDhResponse => {
                use crate::security::apple_dh::{self, RESPONSE_LEN};
                let Some(response) = Reader::new(self.input()).array::<RESPONSE_LEN>() else {
                    return Ok(());
                };
                self.consume(RESPONSE_LEN);
                let key = self
                    .apple_key
                    .take()
                    .ok_or(ProtocolError::UnexpectedMessage("Apple DH without a key"))?;
                let creds = match key.open(&response) {
                    Ok(c) => c,
                    Err(e @ apple_dh::AppleDhError::BadPublicKey) => {
                        let reason = e.to_string();
                        self.security_result_failed(&reason);
                        return Err(ProtocolError::Refused(reason));
                    }
                };
                let raw_user = creds.username.unwrap_or_default();
                let username = clean_username(&raw_user);
                let exact = username.as_bytes() == raw_user.as_slice();
                let password = creds.password.map(|p| Secret::new(p.to_vec()));
                self.state = State::AwaitVerdict;
                self.pending.push_back(Event::AppleDhCredentials {
                    username,
                    exact,
                    password,
                    due: VerdictDue { _private: () },
                });
            }
            State::AwaitTls(_)
            | State::AwaitVerdict
            | State::AwaitApproval
            | State::AwaitServerInit
            | State::Closed => {}
            State::ClientInit => {
                let Some(&shared) = self.input().first() else {
                    return Ok(());
                };
                self.consume(1);
                self.state = State::AwaitServerInit;
                self.pending.push_back(Event::ClientInit {
                    shared: shared != 0,
                    due: InitDue { _private: () },
                });
            }
        }
        Ok(())
    }

    fn enter_security(&mut self, t: SecurityType) {
        self.chosen = Some(t);
        self.pending.push_back(Event::SecurityChosen(t));
        match t {
            SecurityType::None => self.authenticated(),
            SecurityType::VncAuth => self.send_challenge(),
            SecurityType::VeNCrypt => {
                self.io.out.extend_from_slice(&[0, 2]);
                self.state = State::VeNCryptVersion;
            }
            SecurityType::AppleDh => {
                let key = crate::security::apple_dh::ServerKey::generate((self.apple_dh_source)());
                key.offer(&mut self.io.out);
                self.apple_key = Some(key);
                self.state = State::AppleDhResponse;
            }
        }
    }

    fn send_challenge(&mut self) {
        let challenge = (self.challenge_source)();
        self.io.out.extend_from_slice(&challenge);
        self.state = State::VncResponse { challenge };
    }

    fn authenticated(&mut self) {
        self.state = State::AwaitApproval;
        self.pending
            .push_back(Event::Authenticated(ApprovalDue { _private: () }));
    }

    /// Answer [`Event::StartTls`] once the TLS handshake is done: the
    /// subtype's own authentication starts inside TLS.
    pub fn tls_established(&mut self, _due: TlsDue) -> Result<(), ProtocolError> {
        let State::AwaitTls(sub) = self.state else {
            return self.fail(ProtocolError::UnexpectedMessage("TLS without StartTls"));
        };
        match sub {
            VeNCryptSubtype::X509None => self.authenticated(),
            VeNCryptSubtype::X509Vnc => self.send_challenge(),
            VeNCryptSubtype::X509Plain => self.state = State::PlainHeader,
        }
        Ok(())
    }

    fn security_result_failed(&mut self, reason: &str) {
        self.io.out.put_u32(1);
        if self.version == Some(Version::V3_8) {
            self.io.out.put_u32(reason.len() as u32);
            self.io.out.extend_from_slice(reason.as_bytes());
        }
    }

    /// No security types and a reason: the refusal every version understands.
    fn refuse_at_version(&mut self, reason: &str) {
        if self.version == Some(Version::V3_3) {
            self.io.out.put_u32(0);
        } else {
            self.io.out.put_u8(0);
        }
        self.io.out.put_u32(reason.len() as u32);
        self.io.out.extend_from_slice(reason.as_bytes());
    }

    /// Answer [`Event::VncAuthResponse`] or [`Event::PlainCredentials`]. On
    /// `true` [`Event::Authenticated`] follows; on `false` the failure result
    /// is queued and the connection is closed (the returned error says so).
    pub fn auth_verdict(&mut self, _due: VerdictDue, ok: bool) -> Result<(), ProtocolError> {
        if self.state != State::AwaitVerdict {
            return self.fail(ProtocolError::UnexpectedMessage(
                "auth verdict without a response",
            ));
        }
        if ok {
            self.authenticated();
            Ok(())
        } else {
            self.security_result_failed("authentication failed");
            self.fail(ProtocolError::AuthFailed)
        }
    }

    /// Answer [`Event::Authenticated`]: let the viewer in (SecurityResult OK).
    pub fn approve(&mut self, _due: ApprovalDue) -> Result<(), ProtocolError> {
        if self.state != State::AwaitApproval {
            return self.fail(ProtocolError::UnexpectedMessage(
                "approval before authentication",
            ));
        }
        if self.sends_security_result() {
            self.io.out.put_u32(0);
        }
        self.state = State::ClientInit;
        Ok(())
    }

    /// Refuse: after [`Event::Authenticated`] (consent said no) or instead
    /// of a verdict (the credential was not checked), the failure result
    /// carries `reason` (at 3.8) and the connection closes. Where the
    /// protocol has no result to send (None at 3.3/3.7, or before a
    /// credential) it just closes.
    pub fn reject(&mut self, reason: &str) -> ProtocolError {
        // Wherever the client waits for a SecurityResult (a credential
        // not checked, or a consent refused), the reason goes in it.
        if matches!(self.state, State::AwaitApproval | State::AwaitVerdict)
            && self.sends_security_result()
        {
            self.security_result_failed(reason);
        }
        let e = ProtocolError::Refused(reason.to_string());
        let _ = self.fail::<()>(e.clone());
        e
    }

    /// Answer [`Event::ClientInit`]: queue ServerInit and enter the
    /// normal phase. The handshake is consumed: what follows is an
    /// [`Established`] connection, which holds the ServerInit bytes (take
    /// them with [`Established::take_output`]) and any client messages
    /// that came pipelined behind ClientInit. Called at any other point
    /// the connection is closed and the error says why.
    pub fn server_init(
        mut self,
        _due: InitDue,
        width: u16,
        height: u16,
        pf: &PixelFormat,
        name: &str,
    ) -> Result<Established, ProtocolError> {
        if self.state != State::AwaitServerInit {
            return self.fail(ProtocolError::UnexpectedMessage(
                "ServerInit before ClientInit",
            ));
        }
        debug_assert!(self.pending.is_empty(), "ClientInit is the last event");
        messages::write_server_init(width, height, pf, name, &mut self.io.out);
        let version = self.version.unwrap_or(Version::V3_8);
        let security = self.chosen.unwrap_or(SecurityType::None);
        Ok(Established::new(
            self.io,
            Negotiated {
                version,
                security,
                vencrypt: self.subtype,
                mac_viewer: self.mac_viewer,
            },
            width,
            height,
        ))
    }

    /// Close from the server side (no more events).
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.io.clear_input();
    }
}

/// A user name from the network as it may reach logs and the journal:
/// lossy UTF-8, no control characters, at most MAX_LOGGED_USERNAME chars.
fn clean_username(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(limits::MAX_LOGGED_USERNAME)
        .collect()
}

/// Does byte `got` fit template byte `tmpl` ('0' stands for any digit)?
fn prefix_ok(tmpl: u8, got: u8) -> bool {
    if tmpl == b'0' {
        got.is_ascii_digit()
    } else {
        tmpl == got
    }
}

/// "RFB xxx.yyy\n": 3.3 (and 3.5, 3.4, 3.6), 3.7, 3.8; any later 3.x (Apple's
/// 3.889 included) and any 4.x+ is served as 3.8.
pub fn parse_version(b: &[u8; 12]) -> Result<Version, ProtocolError> {
    if !b"RFB 000.000\n"
        .iter()
        .zip(b.iter())
        .all(|(t, g)| prefix_ok(*t, *g))
    {
        return Err(ProtocolError::BadVersion);
    }
    let num = |s: &[u8]| s.iter().fold(0u32, |a, d| a * 10 + (d - b'0') as u32);
    let major = num(&b[4..7]);
    let minor = num(&b[8..11]);
    match (major, minor) {
        (0..=2, _) => Err(ProtocolError::BadVersion),
        (3, 0..=2) => Err(ProtocolError::BadVersion),
        (3, 3..=6) => Ok(Version::V3_3),
        (3, 7) => Ok(Version::V3_7),
        _ => Ok(Version::V3_8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfb::messages::ClientMessage;

    fn fixed() -> [u8; 16] {
        [7; 16]
    }

    fn drain(c: &mut Handshake) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(e) = c.poll_event().unwrap() {
            v.push(e);
        }
        v
    }

    // Tokens to compare events with (all tokens of a kind are equal); the
    // answers take the ones the events carried.
    const V: VerdictDue = VerdictDue { _private: () };
    const A: ApprovalDue = ApprovalDue { _private: () };
    const T: TlsDue = TlsDue { _private: () };
    const I: InitDue = InitDue { _private: () };

    fn last(ev: Vec<Event>) -> Event {
        ev.into_iter().last().expect("an event")
    }

    fn verdict_due(ev: Vec<Event>) -> VerdictDue {
        match last(ev) {
            Event::VncAuthResponse { due, .. }
            | Event::PlainCredentials { due, .. }
            | Event::AppleDhCredentials { due, .. } => due,
            e => panic!("expected a credential, got {e:?}"),
        }
    }

    fn approval_due(ev: Vec<Event>) -> ApprovalDue {
        match last(ev) {
            Event::Authenticated(due) => due,
            e => panic!("expected Authenticated, got {e:?}"),
        }
    }

    fn tls_due(ev: Vec<Event>) -> TlsDue {
        match last(ev) {
            Event::StartTls(due) => due,
            e => panic!("expected StartTls, got {e:?}"),
        }
    }

    fn init_due(ev: Vec<Event>) -> InitDue {
        match last(ev) {
            Event::ClientInit { due, .. } => due,
            e => panic!("expected ClientInit, got {e:?}"),
        }
    }

    /// Approve what `c` has authenticated and answer its ClientInit.
    fn establish(mut c: Handshake, w: u16, h: u16, name: &str) -> Established {
        let a = approval_due(drain(&mut c));
        c.approve(a).unwrap();
        let i = init_due(drain(&mut c));
        c.server_init(i, w, h, &PixelFormat::NATIVE, name).unwrap()
    }

    fn drain_messages(c: &mut Established) -> Vec<ClientMessage> {
        let mut v = Vec::new();
        while let Some(m) = c.poll_message().unwrap() {
            v.push(m);
        }
        v
    }

    #[test]
    fn versions() {
        let p = |s: &[u8; 12]| parse_version(s);
        assert_eq!(p(b"RFB 003.003\n"), Ok(Version::V3_3));
        assert_eq!(p(b"RFB 003.005\n"), Ok(Version::V3_3));
        assert_eq!(p(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(p(b"RFB 003.008\n"), Ok(Version::V3_8));
        assert_eq!(p(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert!(p(b"GET / HTTP/1").is_err());
        assert!(p(b"RFB 003.008 ").is_err());
        assert!(p(b"RFB 002.000\n").is_err());
    }

    #[test]
    fn rejects_garbage_early() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.receive(b"GE").unwrap();
        assert_eq!(c.poll_event(), Err(ProtocolError::BadVersion));
    }

    #[test]
    fn v38_vnc_auth_flow() {
        let mut c = Handshake::new(&[SecurityType::VncAuth]).with_challenge_source(fixed);
        assert_eq!(c.take_output(), b"RFB 003.008\n");
        c.receive(b"RFB 003.008\n").unwrap();
        assert_eq!(drain(&mut c), vec![Event::VersionAgreed(Version::V3_8)]);
        assert_eq!(c.take_output(), vec![1, 2]);
        c.receive(&[2]).unwrap();
        assert_eq!(
            drain(&mut c),
            vec![Event::SecurityChosen(SecurityType::VncAuth)]
        );
        assert_eq!(c.take_output(), vec![7; 16]);
        // ClientInit pipelined behind the response must wait for the verdict.
        let mut resp = vec![9; 16];
        resp.push(1);
        c.receive(&resp).unwrap();
        let ev = drain(&mut c);
        assert_eq!(
            ev,
            vec![Event::VncAuthResponse {
                challenge: [7; 16],
                response: [9; 16],
                due: V
            }]
        );
        assert!(!c.is_authenticated());
        c.auth_verdict(verdict_due(ev), true).unwrap();
        let ev = drain(&mut c);
        assert_eq!(ev, vec![Event::Authenticated(A)]);
        assert!(c.is_authenticated());
        // Nothing goes out until the local user (or policy) approves.
        assert!(!c.has_output());
        c.approve(approval_due(ev)).unwrap();
        assert_eq!(c.take_output(), vec![0, 0, 0, 0]);
        let ev = drain(&mut c);
        assert_eq!(
            ev,
            vec![Event::ClientInit {
                shared: true,
                due: I
            }]
        );
        let mut c = c
            .server_init(init_due(ev), 10, 10, &PixelFormat::NATIVE, "x")
            .unwrap();
        assert!(!c.is_closed());
        assert_eq!(c.negotiated().security, SecurityType::VncAuth);
        assert_eq!(c.negotiated().version, Version::V3_8);
        // ServerInit: the size first, the name last.
        let out = c.take_output();
        assert_eq!(&out[..4], &[0, 10, 0, 10]);
        assert!(out.ends_with(b"\x00\x00\x00\x01x"));
    }

    #[test]
    fn type_not_offered_is_refused_with_reason() {
        let mut c = Handshake::new(&[SecurityType::VncAuth]);
        c.receive(b"RFB 003.008\n\x01").unwrap();
        drain_until_err(&mut c);
        let out = c.take_output();
        assert!(out.ends_with(b"security type not offered"));
        assert!(!c.is_authenticated());
    }

    fn drain_until_err(c: &mut Handshake) -> ProtocolError {
        loop {
            match c.poll_event() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("expected an error"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn v33_gets_server_choice() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.take_output();
        c.receive(b"RFB 003.003\n\x00").unwrap();
        let ev = drain(&mut c);
        assert_eq!(ev.last(), Some(&Event::Authenticated(A)));
        c.approve(approval_due(ev)).unwrap();
        assert_eq!(
            drain(&mut c),
            vec![Event::ClientInit {
                shared: false,
                due: I
            }]
        );
        // 3.3 with None: the type, and no SecurityResult.
        assert_eq!(c.take_output(), vec![0, 0, 0, 1]);
    }

    /// Messages a viewer pipelines behind ClientInit (TigerVNC sends
    /// SetPixelFormat and SetEncodings at once) are kept by the handshake
    /// and come out of the established phase, none lost or doubled; the
    /// ExtendedMouseButtons rule is the established phase's own state.
    #[test]
    fn messages_pipelined_behind_client_init_reach_the_established_phase() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.take_output();
        let mut input = b"RFB 003.008\n\x01\x01".to_vec();
        let msgs = [
            ClientMessage::SetEncodings(vec![messages::enc::EXTENDED_MOUSE_BUTTONS]),
            // Bit 7 set, one more byte of buttons (7 bytes, not 6).
            ClientMessage::ExtendedPointerEvent {
                buttons: 1,
                x: 3,
                y: 4,
            },
        ];
        let mut body = Vec::new();
        for m in &msgs {
            messages::encode_client_message(m, &mut body);
        }
        input.extend_from_slice(&body[..body.len() - 3]);
        c.receive(&input).unwrap();
        let ev = drain(&mut c);
        assert_eq!(
            ev.last(),
            Some(&Event::Authenticated(A)),
            "ClientInit waits for approval"
        );
        c.approve(approval_due(ev)).unwrap();
        let ev = drain(&mut c);
        assert_eq!(
            ev,
            vec![Event::ClientInit {
                shared: true,
                due: I
            }]
        );
        // Nothing of the normal phase is decoded before ServerInit.
        assert_eq!(c.poll_event(), Ok(None));
        let mut c = c
            .server_init(init_due(ev), 8, 6, &PixelFormat::NATIVE, "p")
            .unwrap();
        assert_eq!(c.poll_message().unwrap().as_ref(), Some(&msgs[0]));
        assert_eq!(c.poll_message(), Ok(None), "half a PointerEvent");
        c.receive(&body[body.len() - 3..]).unwrap();
        assert_eq!(c.poll_message().unwrap().as_ref(), Some(&msgs[1]));
        assert_eq!(c.poll_message(), Ok(None));
    }

    /// server_init before ClientInit does not compile without the
    /// ClientInit event's token; with another connection's token it does,
    /// and the run-time check closes with a reason and sends nothing.
    #[test]
    fn server_init_before_client_init_is_an_error() {
        let mut other = Handshake::new(&[SecurityType::None]);
        other.receive(b"RFB 003.008\n\x01\x01").unwrap();
        let a = approval_due(drain(&mut other));
        other.approve(a).unwrap();
        let foreign = init_due(drain(&mut other));
        let mut c = Handshake::new(&[SecurityType::None]);
        c.take_output();
        c.receive(b"RFB 003.008\n\x01").unwrap();
        drain(&mut c);
        let Err(e) = c.server_init(foreign, 1, 1, &PixelFormat::NATIVE, "x") else {
            panic!("ServerInit before approval and ClientInit")
        };
        assert_eq!(
            e,
            ProtocolError::UnexpectedMessage("ServerInit before ClientInit")
        );
    }

    /// A hostile message in the normal phase closes the established
    /// connection: the error once, then silence.
    #[test]
    fn established_closes_on_a_bad_message() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.receive(b"RFB 003.008\n\x01\x00").unwrap();
        let mut c = establish(c, 8, 6, "p");
        c.take_output();
        c.receive(&[0xee, 1, 2, 3]).unwrap();
        assert_eq!(c.poll_message(), Err(ProtocolError::UnknownMessage(0xee)));
        assert!(c.is_closed());
        c.receive(&[5, 0, 0, 1, 0, 1]).unwrap();
        assert_eq!(c.poll_message(), Ok(None));
        assert!(!c.has_output());
    }

    /// Regression: the input buffer limit was smaller than the largest
    /// ClientCutText the decoder accepts, so a cut text of up to
    /// MAX_CUT_TEXT bytes closed the connection as "unprocessed input".
    #[test]
    fn cut_text_at_the_limit_fits_the_input_buffer() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.receive(b"RFB 003.008\n\x01\x01").unwrap();
        let mut c = establish(c, 10, 10, "x");
        let text = vec![b'a'; limits::MAX_CUT_TEXT as usize];
        let mut msg = Vec::new();
        messages::encode_client_message(&ClientMessage::ClientCutText(text.clone()), &mut msg);
        // As the session feeds it: 64 KiB reads, events drained after each.
        let mut events = Vec::new();
        for chunk in msg.chunks(64 * 1024) {
            c.receive(chunk).unwrap();
            events.extend(drain_messages(&mut c));
        }
        assert_eq!(events, vec![ClientMessage::ClientCutText(text)]);
    }

    /// Issue 10, fault 4: a 64 KiB read of pointer events costs a copy of
    /// at most the unfinished message at its end, not one copy of the rest
    /// of the buffer per message. With a drain after every message (the
    /// code before 134c181 brought the read offset) the same two reads
    /// move about 716 MB and this fails; kept as the regression test.
    #[test]
    fn a_64k_read_of_pointer_events_is_compacted_once() {
        let mut c = Handshake::new(&[SecurityType::None]);
        c.receive(b"RFB 003.008\n\x01\x01").unwrap();
        let mut c = establish(c, 10, 10, "x");
        let mut stream = Vec::new();
        for i in 0..2 * 64 * 1024 / 6 + 1 {
            messages::encode_client_message(
                &ClientMessage::PointerEvent {
                    buttons: 0,
                    x: i as u16,
                    y: 1,
                },
                &mut stream,
            );
        }
        let mut events = 0;
        for read in stream.chunks(64 * 1024) {
            c.receive(read).unwrap();
            events += drain_messages(&mut c).len();
        }
        assert_eq!(events, stream.len() / 6);
        // Each read leaves at most one partial message (5 bytes) to move.
        assert!(c.moved() <= 3 * 5, "moved {} bytes", c.moved());
    }

    /// A whole VeNCrypt Plain login in one read: the header is consumed
    /// without an event, and the credentials must still come out.
    #[test]
    fn vencrypt_plain_in_one_chunk() {
        let mut c =
            Handshake::new(&[SecurityType::VeNCrypt]).with_vencrypt(&[VeNCryptSubtype::X509Plain]);
        c.receive(b"RFB 003.008\n\x13\x00\x02").unwrap();
        let mut sub = 262u32.to_be_bytes().to_vec();
        sub.extend_from_slice(b"early");
        c.receive(&sub).unwrap();
        let ev = drain(&mut c);
        assert_eq!(
            ev,
            vec![
                Event::VersionAgreed(Version::V3_8),
                Event::SecurityChosen(SecurityType::VeNCrypt),
                Event::VeNCryptChosen(VeNCryptSubtype::X509Plain),
                Event::StartTls(T)
            ]
        );
        // Bytes after the subtype belong to TLS.
        assert_eq!(c.take_unprocessed(), b"early");
        let out = c.take_output();
        assert_eq!(&out[12..], &[1, 19, 0, 2, 0, 1, 0, 0, 1, 6, 1]);
        c.tls_established(tls_due(ev)).unwrap();
        let mut creds = Vec::new();
        creds.extend_from_slice(&5u32.to_be_bytes());
        creds.extend_from_slice(&3u32.to_be_bytes());
        creds.extend_from_slice(b"an\x07na");
        creds.extend_from_slice(b"pw!");
        c.receive(&creds).unwrap();
        let ev = drain(&mut c);
        assert_eq!(
            ev,
            vec![Event::PlainCredentials {
                username: "anna".into(),
                exact: false,
                password: Secret::new(b"pw!".to_vec()),
                due: V
            }]
        );
        assert!(!format!("{ev:?}").contains("pw!"), "the password in Debug");
        c.auth_verdict(verdict_due(ev), true).unwrap();
        let ev = drain(&mut c);
        assert_eq!(ev, vec![Event::Authenticated(A)]);
        c.approve(approval_due(ev)).unwrap();
        assert_eq!(c.take_output(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn plain_lengths_are_checked_before_waiting() {
        let mut c =
            Handshake::new(&[SecurityType::VeNCrypt]).with_vencrypt(&[VeNCryptSubtype::X509Plain]);
        c.receive(b"RFB 003.008\n\x13\x00\x02\x00\x00\x01\x06")
            .unwrap();
        let t = tls_due(drain(&mut c));
        c.tls_established(t).unwrap();
        c.receive(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]).unwrap();
        assert!(matches!(
            c.poll_event(),
            Err(ProtocolError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn refusing_tells_every_version_why() {
        for (v, head) in [
            (&b"RFB 003.003\n"[..], vec![0, 0, 0, 0]),
            (b"RFB 003.008\n", vec![0]),
        ] {
            let mut c = Handshake::refusing("locked out");
            c.take_output();
            c.receive(v).unwrap();
            assert!(matches!(drain_until_err(&mut c), ProtocolError::Refused(_)));
            let mut want = head;
            want.extend_from_slice(&10u32.to_be_bytes());
            want.extend_from_slice(b"locked out");
            assert_eq!(c.take_output(), want);
        }
    }

    #[test]
    fn v33_never_gets_vencrypt() {
        let mut c =
            Handshake::new(&[SecurityType::VeNCrypt]).with_vencrypt(&[VeNCryptSubtype::X509Vnc]);
        c.take_output();
        c.receive(b"RFB 003.003\n").unwrap();
        assert!(matches!(drain_until_err(&mut c), ProtocolError::Refused(_)));
        assert_eq!(&c.take_output()[..4], &[0, 0, 0, 0]);
    }

    fn dh_fixed() -> [u8; 32] {
        [5; 32]
    }

    fn mac_connection() -> Handshake {
        Handshake::new(&[SecurityType::VeNCrypt, SecurityType::VncAuth])
            .with_vencrypt(&[VeNCryptSubtype::X509Vnc])
            .with_mac_offer(&[SecurityType::AppleDh, SecurityType::VncAuth])
            .with_apple_version()
            .with_apple_dh_source(dh_fixed)
    }

    /// Screen Sharing.app: 003.889 is served as 3.8 with the Mac list, and
    /// type 30 runs to a credentials event, split at every byte boundary.
    #[test]
    fn apple_dh_flow_split_everywhere() {
        use crate::security::apple_dh::{self, test_client::client};
        let server_public = *apple_dh::ServerKey::generate(dh_fixed()).public();
        let response = client(&server_public, [8; 32], b"anna", b"pw");
        let mut input = b"RFB 003.889\n\x1e".to_vec();
        input.extend_from_slice(&response);
        input.push(1); // ClientInit pipelined: must wait for the verdict.
        for split in 0..input.len() {
            let mut c = mac_connection();
            assert_eq!(c.take_output(), b"RFB 003.889\n");
            let mut events = Vec::new();
            for part in [&input[..split], &input[split..]] {
                c.receive(part).unwrap();
                events.extend(drain(&mut c));
            }
            assert!(c.is_mac_viewer());
            assert_eq!(events.len(), 3, "split at {split}: {events:?}");
            assert_eq!(events[0], Event::VersionAgreed(Version::V3_8));
            assert_eq!(events[1], Event::SecurityChosen(SecurityType::AppleDh));
            assert_eq!(
                events[2],
                Event::AppleDhCredentials {
                    username: "anna".into(),
                    exact: true,
                    password: Some(Secret::new(b"pw".to_vec())),
                    due: V,
                }
            );
            let out = c.take_output();
            assert_eq!(&out[..3], &[2, 30, 2], "the Mac list: Apple DH, VNC");
            assert_eq!(&out[3..5], &[0, 2], "generator 2");
            assert_eq!(&out[5..7], &[1, 0], "key length 256");
            assert_eq!(&out[7..263], &apple_dh::prime_bytes());
            assert_eq!(&out[263..], &server_public);
            c.auth_verdict(verdict_due(events), true).unwrap();
            let ev = drain(&mut c);
            assert_eq!(ev, vec![Event::Authenticated(A)]);
            c.approve(approval_due(ev)).unwrap();
            assert_eq!(
                drain(&mut c),
                vec![Event::ClientInit {
                    shared: true,
                    due: I
                }]
            );
            assert_eq!(c.take_output(), vec![0, 0, 0, 0]);
        }
    }

    #[test]
    fn apple_dh_is_only_for_those_offered_it() {
        // A 3.8 viewer gets the usual list and may not pick 30.
        let mut c = mac_connection();
        c.take_output();
        c.receive(b"RFB 003.008\n\x1e").unwrap();
        assert_eq!(
            drain_until_err(&mut c),
            ProtocolError::SecurityTypeNotOffered(30)
        );
        assert!(!c.is_mac_viewer());
        assert!(c.take_output().starts_with(&[2, 19, 2, 0, 0, 0, 1]));
        // A 3.3 viewer is never put on Apple DH, even if it is first.
        let mut c = Handshake::new(&[SecurityType::AppleDh, SecurityType::VncAuth]);
        c.take_output();
        c.receive(b"RFB 003.003\n").unwrap();
        drain(&mut c);
        assert_eq!(&c.take_output()[..4], &[0, 0, 0, 2]);
        // A Mac viewer with nothing it can use is told why.
        let mut c = Handshake::new(&[SecurityType::None]).with_mac_offer(&[]);
        c.take_output();
        c.receive(b"RFB 003.889\n").unwrap();
        assert!(matches!(drain_until_err(&mut c), ProtocolError::Refused(_)));
        let out = c.take_output();
        assert_eq!(out[0], 0);
        assert!(String::from_utf8_lossy(&out).contains("Screen Sharing"));
    }

    #[test]
    fn apple_dh_bad_public_key_is_refused_with_reason() {
        let mut c = mac_connection();
        c.take_output();
        let mut input = b"RFB 003.889\n\x1e".to_vec();
        input.extend_from_slice(&[0u8; crate::security::apple_dh::RESPONSE_LEN]);
        c.receive(&input).unwrap();
        assert!(matches!(drain_until_err(&mut c), ProtocolError::Refused(_)));
        let out = c.take_output();
        assert!(
            String::from_utf8_lossy(&out).ends_with("invalid Apple DH public key from the client")
        );
        assert!(!c.is_authenticated());
    }

    #[test]
    fn apple_dh_block_without_nul_has_no_password() {
        use crate::security::apple_dh::{self, test_client::client};
        let server_public = *apple_dh::ServerKey::generate(dh_fixed()).public();
        // Encrypted for another server key: the fields decrypt to noise.
        let other = *apple_dh::ServerKey::generate([6; 32]).public();
        let mut response = client(&other, [8; 32], b"anna", b"pw");
        // Keep a valid public key, so only the block is wrong.
        response[128..].copy_from_slice(&client(&server_public, [8; 32], b"", b"")[128..]);
        let mut c = mac_connection();
        c.receive(b"RFB 003.889\n\x1e").unwrap();
        c.receive(&response).unwrap();
        let ev = drain(&mut c);
        let Some(Event::AppleDhCredentials { password, .. }) = ev.last() else {
            panic!("{ev:?}")
        };
        // Noise has a NUL in 64 bytes with probability ~22%; either way
        // it is not the password.
        assert_ne!(password.as_ref().map(|p| p.expose()), Some(&b"pw"[..]));
    }

    #[test]
    fn wrong_password_fails_with_result() {
        let mut c = Handshake::new(&[SecurityType::VncAuth]).with_challenge_source(fixed);
        c.receive(b"RFB 003.007\n\x02").unwrap();
        c.receive(&[0; 16]).unwrap();
        let v = verdict_due(drain(&mut c));
        c.take_output();
        assert_eq!(c.auth_verdict(v, false), Err(ProtocolError::AuthFailed));
        assert_eq!(c.take_output(), vec![0, 0, 0, 1]);
        assert!(!c.is_authenticated());
        assert_eq!(c.poll_event(), Ok(None));
    }
}
