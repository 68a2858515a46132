//! The sans-IO RFB protocol core: no sockets, no tokio. Bytes in, events out.

pub mod connection;
pub mod error;
pub mod limits;
pub mod messages;
pub mod pixel_format;
pub mod wire;

pub use connection::{Event, Secret, SecurityType, ServerConnection, VeNCryptSubtype, Version};
pub use error::ProtocolError;
pub use messages::ClientMessage;
pub use pixel_format::PixelFormat;
