//! ticketvnc: a remote-desktop (RFB/VNC) server for helpdesks.
//!
//! Layers (dependencies point down only):
//! - [`server`] holds listeners, the capture loop, the session registry and shutdown;
//! - [`session`] runs one task per viewer, driving the sans-IO [`rfb`] core;
//! - [`rfb`] is the protocol state machine and messages (no I/O);
//! - [`encoding`] and [`framebuffer`] turn pixels into bytes and find damage;
//! - [`capture`] and [`input`] are screen sources and input sinks behind traits;
//! - [`security`] checks authentication; [`prompt`] asks the person at the screen;
//! - [`tickets`] is the journal: tickets, sessions, events, one-time codes, knowledge base.

pub mod capture;
pub mod encoding;
pub mod framebuffer;
pub mod input;
pub mod outbound;
pub mod prompt;
pub mod rfb;
pub mod security;
pub mod server;
pub mod session;
pub mod tickets;
pub mod web;
