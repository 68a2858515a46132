//! Errors of the sans-IO protocol core. Every variant is a reason to close
//! the connection; the message says why in words an admin can act on.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("not an RFB protocol version string")]
    BadVersion,
    #[error("client chose security type {0}, which was not offered")]
    SecurityTypeNotOffered(u8),
    #[error("client chose VeNCrypt subtype {0}, which was not offered")]
    SubtypeNotOffered(u32),
    #[error("client asked for VeNCrypt {0}.{1}; only 0.2 is spoken")]
    VeNCryptVersion(u8, u8),
    #[error("refused: {0}")]
    Refused(String),
    #[error("authentication failed")]
    AuthFailed,
    #[error("invalid pixel format: {0}")]
    BadPixelFormat(&'static str),
    #[error("unknown client message type {0}")]
    UnknownMessage(u8),
    #[error("{what} of {got} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        got: u64,
        limit: u64,
    },
    #[error("message not allowed in this state: {0}")]
    UnexpectedMessage(&'static str),
    #[error("connection closed by peer during {0}")]
    Eof(&'static str),
}
