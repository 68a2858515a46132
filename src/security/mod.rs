//! Security types: checking what a client proved, and who it is.

pub mod throttle;
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
}

/// Checks VNC-authentication responses. Implementations must compare in
/// constant time and must never log the challenge, response or password.
pub trait Authenticator: Send + Sync {
    /// `Some(principal)` when `response` is right for `challenge`.
    fn verify_vnc(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal>;
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
            })
    }
}
