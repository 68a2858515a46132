//! Security types: checking what a client proved, and who it is.

pub mod apple_dh;
pub mod preauth;
pub mod throttle;
#[cfg(not(target_os = "macos"))]
pub mod tls;
pub mod vnc_auth;

pub use vnc_auth::{vnc_auth_response, VncPassword};

/// Who passed authentication. `ticket` ties the session to a helpdesk ticket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// The ticket the credential belongs to, if any.
    pub ticket: Option<String>,
    /// A short description of the credential (never the secret itself),
    /// e.g. "static password" or "one-time code".
    pub credential: String,
    /// The technician account that authenticated (VeNCrypt Plain).
    pub technician: Option<String>,
    /// The most this credential allows (a view-only password allows only
    /// viewing); `None` means no limit of its own.
    pub max_rights: Option<Rights>,
}

/// What the viewer may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    pub view: bool,
    pub keys: bool,
    pub pointer: bool,
    pub clipboard: bool,
}

impl Rights {
    pub const NONE: Rights = Rights {
        view: false,
        keys: false,
        pointer: false,
        clipboard: false,
    };
    /// Both at once: what `self` and `other` allow.
    pub fn intersect(self, other: Rights) -> Rights {
        Rights {
            view: self.view && other.view,
            keys: self.keys && other.keys,
            pointer: self.pointer && other.pointer,
            clipboard: self.clipboard && other.clipboard,
        }
    }
    /// Any input at all (keys, pointer or clipboard).
    pub fn any_input(self) -> bool {
        self.keys || self.pointer || self.clipboard
    }
    pub const FULL: Rights = Rights {
        view: true,
        keys: true,
        pointer: true,
        clipboard: true,
    };
    pub const VIEW_ONLY: Rights = Rights {
        view: true,
        keys: false,
        pointer: false,
        clipboard: false,
    };
    pub fn json(self) -> serde_json::Value {
        serde_json::json!({"view": self.view, "keys": self.keys, "pointer": self.pointer, "clipboard": self.clipboard})
    }
    /// "view,keys,pointer,clipboard" style summary.
    pub fn summary(self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.view, "view"),
            (self.keys, "keys"),
            (self.pointer, "pointer"),
            (self.clipboard, "clipboard"),
        ] {
            if on {
                v.push(name);
            }
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    }
}

/// The local user's answer to "let this technician in?".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consent {
    /// No consent step configured.
    #[default]
    NotAsked,
    /// `--consent auto`: let in without asking.
    Auto,
    Accepted,
    Rejected,
    /// Nobody answered in time (counts as rejected).
    Timeout,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::NotAsked => "not asked",
            Consent::Auto => "auto",
            Consent::Accepted => "accepted",
            Consent::Rejected => "rejected",
            Consent::Timeout => "timeout",
        }
    }
}

/// Checks VNC-authentication responses. Implementations must compare in
/// constant time and must never log the challenge, response or password.
pub trait Authenticator: Send + Sync {
    /// `Some(principal)` when `response` is right for `challenge`.
    fn verify_vnc(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal>;
    /// VeNCrypt Plain: a technician account's name and password. The name
    /// has been length-limited and stripped of control characters. The
    /// default refuses everyone.
    fn verify_plain(&self, _username: &str, _password: &[u8]) -> Option<Principal> {
        None
    }
    /// [`Authenticator::verify_vnc`], or `Err(reason)` when the response
    /// could not be checked at all (the team journal is unreachable, so a
    /// one-time code can be neither looked up nor consumed). The viewer is
    /// refused with `reason`, and the attempt is not counted as a guess.
    fn check_vnc(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<Principal>, String> {
        Ok(self.verify_vnc(challenge, response))
    }
    /// Apple DH (security type 30): a user name and a password that came
    /// decrypted out of the exchange. A non-empty `username` is first
    /// checked as a technician account ([`Authenticator::verify_plain`],
    /// one Argon2id verification whether or not the name exists); if that
    /// does not match, or the name is empty, the password is checked as
    /// VNC authentication would check it (its first 8 bytes against the
    /// static passwords and the one-time codes, through
    /// [`Authenticator::check_vnc`] with a fresh random challenge), so the
    /// same credentials, rules (single use, expiry, the lower-case
    /// spelling of a code) and journal errors apply as for type 2. A name
    /// that had to be cleaned (`exact` false) matches no account.
    fn check_apple_dh(
        &self,
        username: &str,
        exact: bool,
        password: &[u8],
    ) -> Result<Option<Principal>, String> {
        if !username.is_empty() {
            let account = self.verify_plain(username, password).filter(|_| exact);
            if account.is_some() {
                return Ok(account);
            }
        }
        if password.is_empty() {
            // No VNC password or code is empty.
            return Ok(None);
        }
        let challenge: [u8; 16] = rand::random();
        let response = vnc_auth_response(&VncPassword::new(password), &challenge);
        self.check_vnc(&challenge, &response)
    }
}

/// A single static password (from `--password-file`), optionally bound to a ticket.
pub struct StaticPassword {
    pub password: VncPassword,
    pub ticket: Option<String>,
}

impl Authenticator for StaticPassword {
    fn verify_vnc(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal> {
        self.password
            .verify(challenge, response)
            .then(|| Principal {
                ticket: self.ticket.clone(),
                credential: "static password".into(),
                ..Default::default()
            })
    }
}

/// `--view-only-password-file`: whoever uses this password may only watch.
/// Every other credential is checked by `inner` first, so a password that
/// is both full and view-only grants full rights.
pub struct WithViewOnlyPassword {
    pub inner: std::sync::Arc<dyn Authenticator>,
    pub view_only: VncPassword,
    pub ticket: Option<String>,
}

impl WithViewOnlyPassword {
    fn view_only_principal(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal> {
        self.view_only
            .verify(challenge, response)
            .then(|| Principal {
                ticket: self.ticket.clone(),
                credential: "view-only password".into(),
                max_rights: Some(Rights::VIEW_ONLY),
                ..Default::default()
            })
    }
}

impl Authenticator for WithViewOnlyPassword {
    fn verify_vnc(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal> {
        if let Some(p) = self.inner.verify_vnc(challenge, response) {
            return Some(p);
        }
        self.view_only_principal(challenge, response)
    }
    fn verify_plain(&self, username: &str, password: &[u8]) -> Option<Principal> {
        self.inner.verify_plain(username, password)
    }
    fn check_vnc(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<Principal>, String> {
        match self.inner.check_vnc(challenge, response)? {
            Some(p) => Ok(Some(p)),
            None => Ok(self.view_only_principal(challenge, response)),
        }
    }
}
