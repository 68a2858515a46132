//! The sans-IO RFB protocol core: no sockets, no tokio. Bytes in, events out.
//!
//! A connection is a [`Handshake`] until the driver answers ClientInit
//! with [`Handshake::server_init`], which consumes it and gives the
//! [`Established`] connection of the normal phase; each phase has only
//! the methods that make sense in it.

mod buffers;
pub mod connection;
pub mod error;
pub mod established;
pub mod limits;
pub mod messages;
pub mod output;
pub mod pixel_format;
pub mod update;
pub mod wire;

pub use connection::{
    ApprovalDue, Event, Handshake, InitDue, Secret, SecurityType, TlsDue, VeNCryptSubtype,
    VerdictDue, Version,
};
pub use error::ProtocolError;
pub use established::{Established, Negotiated};
pub use messages::ClientMessage;
pub use output::{Output, Refused, ServerMessages};
pub use pixel_format::PixelFormat;
pub use update::{UpdateBuf, UpdateRefused};
