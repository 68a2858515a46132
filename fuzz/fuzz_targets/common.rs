//! A deterministic driver for the protocol core (a `Handshake`, then the
//! `Established` connection its `server_init` returns), shared by the handshake
//! and split-invariance targets: it answers the connection's questions the
//! way the session does (a real DES check against a fixed password, a fixed
//! Plain account, a pretend TLS layer, approval or rejection by "the person
//! at the screen", a fixed ServerInit), records everything that happens and
//! checks the security invariants after every step.
//!
//! The mode byte (byte 0 of every input) picks the server:
//! - bits 0..=3: the offer, see [`config`] (None, VNC auth, VeNCrypt with
//!   several subtype sets, a `refusing` connection);
//! - bit 7: answer `Authenticated` with `reject` instead of `approve`.
//!
//! VeNCrypt: on `StartTls` the driver takes the unprocessed bytes (those
//! after the subtype choice), calls `tls_established` and feeds them back,
//! then keeps feeding the rest of the input: the fuzzed stream is the
//! client's plain stream up to the subtype choice and its decrypted stream
//! after it, which is what the core sees under the real TLS layer.

#![allow(dead_code)]

use ticketvnc::rfb::{
    limits, ClientMessage, Established, Event, Handshake, PixelFormat, ProtocolError, SecurityType,
    VeNCryptSubtype, VerdictDue, Version,
};
use ticketvnc::security::{vnc_auth_response, VncPassword};

/// The challenge every fuzzed connection sends (determinism).
pub const CHALLENGE: [u8; 16] = [
    0x3c, 0xa1, 0x57, 0x09, 0xe2, 0x4d, 0x88, 0x16, 0x71, 0xbf, 0x02, 0x6e, 0xd5, 0x93, 0x2a, 0xc8,
];
pub const PASSWORD: &[u8] = b"fuzzpass";
/// The one VeNCrypt Plain account the driver accepts.
pub const PLAIN_USER: &str = "tech";
pub const PLAIN_PASSWORD: &[u8] = b"fuzz-secret";
/// Reason of the `refusing` connection (mode 13).
pub const REFUSAL: &str = "fuzz: locked out";
/// Reason given to `reject` (mode bit 7).
pub const REJECTION: &str = "fuzz: the person at the screen said no";
/// Mode bit that makes the driver reject instead of approve.
pub const REJECT_BIT: u8 = 0x80;

const GREETING: &[u8] = b"RFB 003.008\n";

pub fn challenge() -> [u8; 16] {
    CHALLENGE
}

/// The one response that authenticates (seed corpora contain it).
pub fn right_response() -> [u8; 16] {
    vnc_auth_response(&VncPassword::new(PASSWORD), &CHALLENGE)
}

/// The server a mode byte sets up.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Types given to `Handshake::new`.
    pub types: &'static [SecurityType],
    /// Subtypes given to `with_vencrypt` (called when `types` has VeNCrypt
    /// or this is not empty).
    pub subtypes: &'static [VeNCryptSubtype],
    /// `Handshake::refusing(REFUSAL)` instead.
    pub refusing: bool,
}

/// Which security types (and VeNCrypt subtypes) the server offers.
pub fn config(mode: u8) -> Config {
    use SecurityType::{None as No, VeNCrypt as Vc, VncAuth as Va};
    use VeNCryptSubtype::{X509None as XN, X509Plain as XP, X509Vnc as XV};
    let (types, subtypes): (&'static [SecurityType], &'static [VeNCryptSubtype]) = match mode & 0x0f
    {
        0 => (&[Va], &[]),
        1 => (&[No], &[]),
        2 => (&[Va, No], &[]),
        3 => (&[No, Va], &[]),
        4 => (&[Vc], &[XN, XV, XP]),
        5 => (&[Vc], &[XV]),
        6 => (&[Vc], &[XP]),
        7 => (&[Vc], &[XN]),
        8 => (&[Vc, Va], &[XP, XV]),
        9 => (&[Va, Vc], &[XV]),
        10 => (&[No, Vc], &[XP, XN]),
        11 => (&[Vc, No, Va], &[XV, XP]),
        // VeNCrypt without subtypes is not offered at all.
        12 => (&[Vc, Va], &[]),
        13 => {
            return Config {
                types: &[No],
                subtypes: &[],
                refusing: true,
            }
        }
        // Subtypes configured, but VeNCrypt itself not offered.
        14 => (&[Va], &[XN, XP]),
        _ => (&[Vc, Va, No], &[XP, XN, XV]),
    };
    Config {
        types,
        subtypes,
        refusing: false,
    }
}

impl Config {
    /// What the client may choose: nothing when refusing, no VeNCrypt
    /// without subtypes.
    pub fn effective(&self) -> Vec<SecurityType> {
        if self.refusing {
            return Vec::new();
        }
        self.types
            .iter()
            .copied()
            .filter(|t| *t != SecurityType::VeNCrypt || !self.subtypes.is_empty())
            .collect()
    }

    pub fn connection(&self) -> Handshake {
        if self.refusing {
            return Handshake::refusing(REFUSAL);
        }
        let mut c = Handshake::new(self.types).with_challenge_source(challenge);
        if self.types.contains(&SecurityType::VeNCrypt) || !self.subtypes.is_empty() {
            c = c.with_vencrypt(self.subtypes);
        }
        c
    }
}

/// What came out of the core: a handshake event, or (after ServerInit)
/// a client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Handshake(Event),
    Message(ClientMessage),
}

/// The connection in whichever phase it is. The core's types make the
/// phases distinct; the driver keeps one view over both so that its
/// invariants (nothing authenticated without proof, silence after an
/// error) are checked the same way before and after ServerInit.
pub enum Conn {
    Handshake(Handshake),
    Established(Established),
}

impl Conn {
    pub fn receive(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        match self {
            Conn::Handshake(c) => c.receive(data),
            Conn::Established(c) => c.receive(data),
        }
    }
    pub fn poll_event(&mut self) -> Result<Option<Ev>, ProtocolError> {
        match self {
            Conn::Handshake(c) => c.poll_event().map(|e| e.map(Ev::Handshake)),
            Conn::Established(c) => c.poll_message().map(|m| m.map(Ev::Message)),
        }
    }
    pub fn take_output(&mut self) -> Vec<u8> {
        match self {
            Conn::Handshake(c) => c.take_output(),
            Conn::Established(c) => c.take_output(),
        }
    }
    pub fn has_output(&self) -> bool {
        match self {
            Conn::Handshake(c) => c.has_output(),
            Conn::Established(c) => c.has_output(),
        }
    }
    pub fn version(&self) -> Option<Version> {
        match self {
            Conn::Handshake(c) => c.version(),
            Conn::Established(c) => Some(c.negotiated().version),
        }
    }
    pub fn security_type(&self) -> Option<SecurityType> {
        match self {
            Conn::Handshake(c) => c.security_type(),
            Conn::Established(c) => Some(c.negotiated().security),
        }
    }
    pub fn vencrypt_subtype(&self) -> Option<VeNCryptSubtype> {
        match self {
            Conn::Handshake(c) => c.vencrypt_subtype(),
            Conn::Established(c) => c.negotiated().vencrypt,
        }
    }
    pub fn is_authenticated(&self) -> bool {
        match self {
            Conn::Handshake(c) => c.is_authenticated(),
            Conn::Established(c) => !c.is_closed(),
        }
    }
    pub fn is_approved(&self) -> bool {
        match self {
            Conn::Handshake(c) => c.is_approved(),
            Conn::Established(c) => !c.is_closed(),
        }
    }
    pub fn is_normal(&self) -> bool {
        match self {
            Conn::Handshake(_) => false,
            Conn::Established(c) => !c.is_closed(),
        }
    }
    /// The handshake; the driver only asks for it on handshake events.
    pub fn handshake(&mut self) -> &mut Handshake {
        match self {
            Conn::Handshake(c) => c,
            Conn::Established(_) => panic!("a handshake event after ServerInit"),
        }
    }
}

/// Everything observable about one run (compared across chunkings).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Trace {
    pub events: Vec<Ev>,
    pub error: Option<ProtocolError>,
    pub output: Vec<u8>,
    /// Output length when StartTls came (the plain part of the stream).
    pub tls_at: Option<usize>,
    pub authenticated: bool,
    pub approved: bool,
    pub normal: bool,
}

pub struct Driver {
    pub conn: Conn,
    pub cfg: Config,
    pub offered: Vec<SecurityType>,
    reject: bool,
    password: VncPassword,
    version: Option<Version>,
    chosen: Option<SecurityType>,
    /// From VeNCryptChosen.
    subtype: Option<VeNCryptSubtype>,
    /// tls_established() was called and succeeded.
    tls: bool,
    /// The pretend-decrypted stream: everything fed after StartTls.
    after_tls: Vec<u8>,
    /// A response that verified was received.
    right_response_seen: bool,
    /// The Plain account's name and password were received.
    right_plain_seen: bool,
    credentials_seen: bool,
    authenticated_seen: bool,
    /// The driver called approve() / reject().
    approved: bool,
    rejected: bool,
    client_init_seen: bool,
    pub trace: Trace,
}

impl Driver {
    pub fn new(mode: u8) -> Driver {
        let cfg = config(mode);
        let mut conn = cfg.connection();
        let output = conn.take_output();
        assert_eq!(output, GREETING);
        Driver {
            conn: Conn::Handshake(conn),
            offered: cfg.effective(),
            cfg,
            reject: mode & REJECT_BIT != 0,
            password: VncPassword::new(PASSWORD),
            version: None,
            chosen: None,
            subtype: None,
            tls: false,
            after_tls: Vec::new(),
            right_response_seen: false,
            right_plain_seen: false,
            credentials_seen: false,
            authenticated_seen: false,
            approved: false,
            rejected: false,
            client_init_seen: false,
            trace: Trace {
                output,
                ..Trace::default()
            },
        }
    }

    pub fn closed(&self) -> bool {
        self.trace.error.is_some()
    }

    /// Take what the connection queued, record it and return it.
    fn out(&mut self) -> Vec<u8> {
        let o = self.conn.take_output();
        self.trace.output.extend_from_slice(&o);
        o
    }

    /// Feed one chunk and handle every event it produces, checking the
    /// invariants after each step. After an error the chunk is still given
    /// to the connection, which must stay silent.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.closed() {
            self.after_close(chunk);
            return;
        }
        if self.tls {
            self.after_tls.extend_from_slice(chunk);
        }
        if let Err(e) = self.conn.receive(chunk) {
            self.error(e);
        } else {
            self.drain();
        }
        if !self.closed() {
            // Ok(None) means "stuck until more input": asking again
            // without any must not make progress.
            let again = self.conn.poll_event();
            assert_eq!(again, Ok(None), "poll_event moved on after Ok(None)");
        }
        self.check();
        if !self.closed() {
            self.check_progress();
        }
        self.out();
        self.trace.authenticated = self.conn.is_authenticated();
        self.trace.approved = self.conn.is_approved();
        self.trace.normal = self.conn.is_normal();
    }

    fn drain(&mut self) {
        loop {
            let ev = match self.conn.poll_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    self.error(e);
                    break;
                }
            };
            self.trace.events.push(ev.clone());
            match ev {
                Ev::Handshake(ev) => self.handle(ev),
                Ev::Message(_) => {
                    assert!(self.client_init_seen && self.conn.is_normal());
                }
            }
            self.check();
            if self.closed() {
                break;
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        // What the step that produced this event queued.
        let delta = self.out();
        match ev {
            Event::VersionAgreed(v) => {
                assert!(self.version.is_none(), "a second VersionAgreed");
                assert_eq!(self.conn.version(), Some(v));
                self.version = Some(v);
                if self.cfg.refusing {
                    return;
                }
                if v == Version::V3_3 {
                    // The server's choice: the first type a 3.3 client can use.
                    let t = self
                        .offered
                        .iter()
                        .copied()
                        .find(|t| *t != SecurityType::VeNCrypt)
                        .expect("3.3 without a usable type must be refused");
                    assert_eq!(delta[..4], (t as u32).to_be_bytes(), "3.3 security type");
                } else {
                    let mut want = vec![self.offered.len() as u8];
                    want.extend(self.offered.iter().map(|t| *t as u8));
                    assert_eq!(delta, want, "security types sent");
                }
            }
            Event::SecurityChosen(t) => {
                assert!(self.offered.contains(&t), "{t:?} was not offered");
                assert!(self.chosen.is_none(), "a second SecurityChosen");
                assert_eq!(self.conn.security_type(), Some(t));
                let v = self.version.expect("SecurityChosen before VersionAgreed");
                if v == Version::V3_3 {
                    assert_ne!(t, SecurityType::VeNCrypt, "VeNCrypt at 3.3");
                } else {
                    let want: &[u8] = match t {
                        SecurityType::None => &[],
                        SecurityType::VncAuth => &CHALLENGE,
                        SecurityType::VeNCrypt => &[0, 2],
                        // No configuration here offers it (nor a Mac list).
                        SecurityType::AppleDh => panic!("Apple DH chosen but never offered"),
                    };
                    assert_eq!(delta, want, "answer to {t:?}");
                }
                self.chosen = Some(t);
            }
            Event::VeNCryptChosen(s) => {
                assert_eq!(self.chosen, Some(SecurityType::VeNCrypt));
                assert!(
                    self.cfg.subtypes.contains(&s),
                    "subtype {s:?} was not offered"
                );
                assert!(self.subtype.is_none(), "a second VeNCryptChosen");
                assert_eq!(self.conn.vencrypt_subtype(), Some(s));
                // VeNCrypt 0.2 accepted, the subtype list, then "accepted".
                let mut want = self.subtype_list();
                want.push(1);
                assert!(
                    self.trace.output.ends_with(&want),
                    "subtype answer: {:?}",
                    self.trace.output
                );
                self.subtype = Some(s);
            }
            Event::StartTls(due) => {
                assert!(
                    self.subtype.is_some(),
                    "StartTls before a subtype was accepted"
                );
                assert!(
                    !self.tls && self.trace.tls_at.is_none(),
                    "a second StartTls"
                );
                assert!(!self.conn.is_authenticated());
                self.trace.tls_at = Some(self.trace.output.len());
                // Bytes after the subtype choice belong to TLS; pretend the
                // handshake happened and they are the decrypted stream.
                let leftover = self.conn.handshake().take_unprocessed();
                self.conn
                    .handshake()
                    .tls_established(due)
                    .expect("tls_established right after StartTls");
                self.tls = true;
                let first = self.out();
                let want: &[u8] = match self.subtype {
                    Some(VeNCryptSubtype::X509Vnc) => &CHALLENGE,
                    _ => &[],
                };
                assert_eq!(first, want, "first bytes inside TLS");
                self.after_tls = leftover.clone();
                if let Err(e) = self.conn.receive(&leftover) {
                    self.error(e);
                }
            }
            Event::VncAuthResponse {
                challenge,
                response,
                due,
            } => {
                assert_eq!(challenge, CHALLENGE);
                let vnc = self.chosen == Some(SecurityType::VncAuth);
                let x509vnc = self.chosen == Some(SecurityType::VeNCrypt)
                    && self.subtype == Some(VeNCryptSubtype::X509Vnc)
                    && self.tls;
                assert!(vnc || x509vnc, "VncAuthResponse under {:?}", self.chosen);
                assert!(!self.conn.is_authenticated());
                let ok = self.password.verify(&challenge, &response);
                assert_eq!(ok, response == right_response());
                self.right_response_seen |= ok;
                self.verdict(due, ok);
            }
            Event::PlainCredentials {
                username,
                exact,
                password,
                due,
            } => {
                assert!(
                    self.chosen == Some(SecurityType::VeNCrypt)
                        && self.subtype == Some(VeNCryptSubtype::X509Plain)
                        && self.tls,
                    "PlainCredentials outside X509Plain after TLS"
                );
                assert!(!self.credentials_seen, "a second PlainCredentials");
                self.credentials_seen = true;
                assert!(!self.conn.is_authenticated());
                // What reaches logs and the journal is sanitised.
                assert!(
                    !username.chars().any(char::is_control),
                    "control character in {username:?}"
                );
                assert!(username.chars().count() <= limits::MAX_LOGGED_USERNAME);
                // ... and comes from the bytes on the wire.
                let (user_len, pass_len) = plain_header(&self.after_tls).expect("header");
                let body = &self.after_tls[8..];
                assert_eq!(username, clean_username(&body[..user_len]));
                // Only a name that needed no cleaning may match an account.
                assert_eq!(exact, username.as_bytes() == &body[..user_len]);
                assert_eq!(password.expose(), &body[user_len..user_len + pass_len]);
                assert_eq!(format!("{password:?}"), "Secret(<redacted>)");
                let ok = exact && username == PLAIN_USER && password.expose() == PLAIN_PASSWORD;
                self.right_plain_seen |= ok;
                self.verdict(due, ok);
            }
            Event::AppleDhCredentials { .. } => {
                panic!("Apple DH credentials but Apple DH was never offered")
            }
            Event::Authenticated(due) => {
                assert!(!self.authenticated_seen, "a second Authenticated");
                self.authenticated_seen = true;
                assert!(self.may_be_authenticated(), "Authenticated without proof");
                assert!(self.conn.is_authenticated() && !self.conn.is_approved());
                assert!(delta.is_empty(), "output before approval: {delta:?}");
                let v = self.version.expect("version");
                let result = v == Version::V3_8 || self.chosen != Some(SecurityType::None);
                if self.reject {
                    let e = self.conn.handshake().reject(REJECTION);
                    assert_eq!(e, ProtocolError::Refused(REJECTION.into()));
                    self.rejected = true;
                    let want = if result {
                        failure_result(v, REJECTION)
                    } else {
                        Vec::new()
                    };
                    assert_eq!(self.out(), want, "what reject() sends");
                    assert!(!self.conn.is_authenticated() && !self.conn.is_approved());
                    self.trace.error = Some(e);
                } else {
                    self.conn
                        .handshake()
                        .approve(due)
                        .expect("approve after Authenticated");
                    self.approved = true;
                    let want: &[u8] = if result { &[0, 0, 0, 0] } else { &[] };
                    assert_eq!(self.out(), want, "what approve() sends");
                }
            }
            Event::ClientInit { due, .. } => {
                assert!(
                    self.may_be_authenticated(),
                    "ClientInit without authentication"
                );
                assert!(
                    self.approved && !self.rejected,
                    "ClientInit without approval"
                );
                assert!(!self.client_init_seen, "a second ClientInit");
                self.client_init_seen = true;
                // server_init consumes the handshake: swap in the result.
                let placeholder = Conn::Handshake(Handshake::new(&[SecurityType::None]));
                let Conn::Handshake(h) = std::mem::replace(&mut self.conn, placeholder) else {
                    panic!("ClientInit after ServerInit");
                };
                let est = h
                    .server_init(due, 64, 48, &PixelFormat::NATIVE, "fuzz")
                    .expect("ServerInit after ClientInit");
                self.conn = Conn::Established(est);
                assert_eq!(self.out()[..4], [0, 64, 0, 48], "ServerInit");
            }
        }
    }

    /// "VeNCrypt 0.2 accepted" and the offered subtypes.
    fn subtype_list(&self) -> Vec<u8> {
        let mut o = vec![0, self.cfg.subtypes.len() as u8];
        for st in self.cfg.subtypes {
            o.extend_from_slice(&(*st as u32).to_be_bytes());
        }
        o
    }

    /// Answer a VNC response or Plain credentials.
    fn verdict(&mut self, due: VerdictDue, ok: bool) {
        let r = self.conn.handshake().auth_verdict(due, ok);
        let sent = self.out();
        match r {
            Ok(()) => {
                assert!(ok);
                assert!(sent.is_empty(), "output before Authenticated: {sent:?}");
            }
            Err(e) => {
                assert!(!ok, "a right answer was refused: {e}");
                assert_eq!(e, ProtocolError::AuthFailed);
                let v = self.version.expect("version");
                assert_eq!(sent, failure_result(v, "authentication failed"));
                assert!(!self.conn.is_authenticated());
                self.trace.error = Some(e);
            }
        }
    }

    /// The connection reported an error: check it is justified and that it
    /// queued exactly what that error sends.
    fn error(&mut self, e: ProtocolError) {
        let sent = self.out();
        let v = self.conn.version();
        let want = match &e {
            ProtocolError::BadVersion => {
                assert!(self.version.is_none());
                Vec::new()
            }
            ProtocolError::Refused(reason) => {
                // Only before a security type: reject() is handled above.
                assert!(self.chosen.is_none(), "refused after a type: {reason}");
                let v = v.expect("refused before the version");
                if self.cfg.refusing {
                    assert_eq!(reason, REFUSAL);
                } else {
                    assert_eq!(v, Version::V3_3);
                    assert!(self.offered.iter().all(|t| *t == SecurityType::VeNCrypt));
                }
                // The whole output: our version, then the refusal.
                let mut all = GREETING.to_vec();
                all.extend(refusal(v, reason));
                assert_eq!(self.trace.output, all, "refusal");
                sent.clone()
            }
            ProtocolError::SecurityTypeNotOffered(c) => {
                assert!(self.chosen.is_none());
                let t = SecurityType::from_u8(*c);
                assert!(
                    t.map_or(true, |t| !self.offered.contains(&t)),
                    "{c} was offered"
                );
                match v {
                    Some(Version::V3_8) => {
                        failure_result(Version::V3_8, "security type not offered")
                    }
                    _ => Vec::new(),
                }
            }
            ProtocolError::VeNCryptVersion(major, minor) => {
                assert_eq!(self.chosen, Some(SecurityType::VeNCrypt));
                assert_ne!((*major, *minor), (0, 2));
                vec![0xff]
            }
            ProtocolError::SubtypeNotOffered(s) => {
                assert_eq!(self.chosen, Some(SecurityType::VeNCrypt));
                assert!(self.subtype.is_none());
                let sub = VeNCryptSubtype::from_u32(*s);
                assert!(
                    sub.map_or(true, |s| !self.cfg.subtypes.contains(&s)),
                    "{s} was offered"
                );
                // The subtype list, then "refused". The list comes from a
                // step without an event, so it may be in this poll's output.
                let mut all = self.subtype_list();
                all.push(0);
                assert!(self.trace.output.ends_with(&all), "subtype refusal");
                if sent.len() > 1 {
                    all
                } else {
                    vec![0]
                }
            }
            ProtocolError::LimitExceeded { what, got, limit } if what.contains("Plain") => {
                assert!(self.tls && self.subtype == Some(VeNCryptSubtype::X509Plain));
                assert!(!self.credentials_seen);
                let (user_len, pass_len) = plain_header(&self.after_tls).expect("header");
                if user_len > limits::MAX_PLAIN_USERNAME {
                    assert_eq!(
                        (*got, *limit),
                        (user_len as u64, limits::MAX_PLAIN_USERNAME as u64)
                    );
                } else {
                    assert!(
                        pass_len > limits::MAX_PLAIN_PASSWORD,
                        "{e}: lengths {user_len}/{pass_len}"
                    );
                    assert_eq!(
                        (*got, *limit),
                        (pass_len as u64, limits::MAX_PLAIN_PASSWORD as u64)
                    );
                }
                Vec::new()
            }
            ProtocolError::LimitExceeded { .. }
            | ProtocolError::UnknownMessage(_)
            | ProtocolError::BadPixelFormat(_) => {
                // Message-level errors: only in the normal phase (or an
                // input buffer overflow, which needs megabytes).
                assert!(
                    self.client_init_seen || matches!(e, ProtocolError::LimitExceeded { .. }),
                    "{e} before the normal phase"
                );
                Vec::new()
            }
            ProtocolError::AuthFailed
            | ProtocolError::UnexpectedMessage(_)
            | ProtocolError::Eof(_) => panic!("unexpected error from the connection: {e:?}"),
        };
        assert_eq!(sent, want, "what {e:?} sent");
        assert!(!self.conn.is_authenticated() && !self.conn.is_normal());
        self.trace.error = Some(e);
    }

    /// After an error: more input is ignored, no event, no output.
    fn after_close(&mut self, chunk: &[u8]) {
        assert_eq!(self.conn.receive(chunk), Ok(()), "receive after the error");
        loop {
            match self.conn.poll_event() {
                Ok(None) => break,
                // (Finding F1, fixed: events queued in the failing step no
                // longer come out after the error.)
                other => panic!("after {:?}: poll_event gave {other:?}", self.trace.error),
            }
        }
        assert!(!self.conn.has_output(), "output after the error");
        assert!(!self.conn.is_authenticated() && !self.conn.is_normal());
    }

    /// Nothing is left waiting that could already be decided: Plain lengths
    /// above the limits fail as soon as the header is there, and complete
    /// credentials come out as an event.
    fn check_progress(&self) {
        if self.tls && self.subtype == Some(VeNCryptSubtype::X509Plain) && !self.credentials_seen {
            if let Some((user_len, pass_len)) = plain_header(&self.after_tls) {
                assert!(
                    user_len <= limits::MAX_PLAIN_USERNAME
                        && pass_len <= limits::MAX_PLAIN_PASSWORD,
                    "Plain lengths {user_len}/{pass_len} over the limits, and the connection waits"
                );
                assert!(
                    self.after_tls.len() < 8 + user_len + pass_len,
                    "complete Plain credentials ({} bytes) but no event",
                    self.after_tls.len()
                );
            }
        }
    }

    /// Authenticated only through None (offered and chosen), the right VNC
    /// response (VncAuth, or X509Vnc inside TLS), X509None inside TLS, or
    /// the right Plain account inside TLS.
    fn may_be_authenticated(&self) -> bool {
        let Some(t) = self.conn.security_type() else {
            return false;
        };
        // (Not `self.chosen`: at 3.3 the state is ahead of the events
        // still queued, SecurityChosen among them.)
        if !self.offered.contains(&t) {
            return false;
        }
        match t {
            SecurityType::None => true,
            SecurityType::VncAuth => self.right_response_seen,
            SecurityType::AppleDh => false,
            SecurityType::VeNCrypt => {
                let sub = self.conn.vencrypt_subtype();
                if !self.tls || sub.is_none() || sub != self.subtype {
                    return false;
                }
                match sub.unwrap() {
                    VeNCryptSubtype::X509None => true,
                    VeNCryptSubtype::X509Vnc => self.right_response_seen,
                    VeNCryptSubtype::X509Plain => self.right_plain_seen,
                }
            }
        }
    }

    fn check(&self) {
        let c = &self.conn;
        if c.is_authenticated() || c.is_approved() || c.is_normal() {
            assert!(
                self.may_be_authenticated(),
                "authenticated without proof (type {:?}, subtype {:?})",
                c.security_type(),
                c.vencrypt_subtype()
            );
        }
        if c.is_approved() || c.is_normal() {
            assert!(
                self.approved && !self.rejected,
                "approved without approve()"
            );
        }
        if self.rejected {
            assert!(!c.is_authenticated() && !c.is_normal() && !self.client_init_seen);
        }
        if self.tls {
            assert_eq!(self.chosen, Some(SecurityType::VeNCrypt));
        }
    }
}

/// The Plain header (user name and password lengths) at the start of the
/// decrypted stream, once its 8 bytes are there.
pub fn plain_header(s: &[u8]) -> Option<(usize, usize)> {
    let h = s.get(..8)?;
    let u = u32::from_be_bytes(h[..4].try_into().unwrap()) as usize;
    let p = u32::from_be_bytes(h[4..].try_into().unwrap()) as usize;
    Some((u, p))
}

/// The documented sanitising: lossy UTF-8, no control characters, at most
/// MAX_LOGGED_USERNAME characters.
fn clean_username(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(limits::MAX_LOGGED_USERNAME)
        .collect()
}

/// A failed SecurityResult: 1, and the reason at 3.8.
pub fn failure_result(v: Version, reason: &str) -> Vec<u8> {
    let mut o = 1u32.to_be_bytes().to_vec();
    if v == Version::V3_8 {
        o.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        o.extend_from_slice(reason.as_bytes());
    }
    o
}

/// Zero security types and a reason (a u32 zero at 3.3).
pub fn refusal(v: Version, reason: &str) -> Vec<u8> {
    let mut o = if v == Version::V3_3 {
        vec![0, 0, 0, 0]
    } else {
        vec![0]
    };
    o.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    o.extend_from_slice(reason.as_bytes());
    o
}

/// Once per process: Plain lengths above the limits fail on the header
/// alone, fed whole or a byte at a time; lengths at the limits wait.
pub fn plain_limit_self_test() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let user = limits::MAX_PLAIN_USERNAME as u32;
        let pass = limits::MAX_PLAIN_PASSWORD as u32;
        let cases = [
            (u32::MAX, u32::MAX, Some(u32::MAX)),
            (u32::MAX, 0, Some(u32::MAX)),
            (0, u32::MAX, Some(u32::MAX)),
            (0x8000_0000, 0, Some(0x8000_0000)),
            (user + 1, 0, Some(user + 1)),
            (0, pass + 1, Some(pass + 1)),
            (user, pass, None),
        ];
        for (u, p, fails_with) in cases {
            for bytewise in [false, true] {
                let mut d = Driver::new(6); // VeNCrypt, X509Plain only
                d.feed(b"RFB 003.008\n\x13\x00\x02\x00\x00\x01\x06");
                assert!(d.tls, "X509Plain handshake");
                let mut header = u.to_be_bytes().to_vec();
                header.extend_from_slice(&p.to_be_bytes());
                if bytewise {
                    for b in &header {
                        d.feed(&[*b]);
                    }
                } else {
                    d.feed(&header);
                }
                match fails_with {
                    Some(got) => assert!(
                        matches!(d.trace.error, Some(ProtocolError::LimitExceeded { got: g, .. }) if g == got as u64),
                        "lengths {u}/{p}: {:?}",
                        d.trace.error
                    ),
                    None => assert_eq!(d.trace.error, None, "lengths {u}/{p}"),
                }
            }
        }
    });
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
