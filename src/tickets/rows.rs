//! The journal's row types: what a session, an event, a ticket and a note
//! are, their checks and their JSON forms. No SQL writes, no files.

use super::{format_time, hex, truncate, JournalError, Result};
use rusqlite::Connection;
use serde_json::{json, Value};
use sha2::Digest;

pub use crate::security::{Consent, Rights};

/// Longest accepted ticket id (helpdesk numbers are short).
pub const MAX_TICKET_ID: usize = 64;
/// Longest accepted ticket title / note / resolution, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;

/// Row id of a session in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub i64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub use crate::session::Direction;

/// Everything known about a session when it starts (before ServerInit).
#[derive(Clone, Debug, Default)]
pub struct SessionStart {
    /// From `Principal::ticket`; created in `tickets` if unknown.
    pub ticket: Option<String>,
    /// "ip:port" of the viewer (or repeater).
    pub peer: Option<String>,
    pub direction: Direction,
    /// Security type name, e.g. "VNC", "None", "VeNCrypt".
    pub security: String,
    /// From `Principal::credential` (never the secret).
    pub credential: String,
    /// Technician account, where the security type names one.
    pub technician: Option<String>,
    pub rights: Rights,
    pub consent: Consent,
}

/// Counters reported when a session ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub updates_sent: u64,
}

/// Direction of a clipboard transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipboardDirection {
    ToViewer,
    FromViewer,
}

/// Something that happened during a session. The variants hold only
/// metadata: there is deliberately no way to journal clipboard contents,
/// keystrokes, passwords, codes or challenges.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A failed authentication attempt. `reason` must not contain the secret.
    AuthFailure { reason: String },
    /// Failed authentications of one minute beyond the first few per
    /// address (see [`flood`](super::flood)), added up. Not tied to a session.
    AuthFailures(super::flood::AuthSummary),
    /// The local user's consent decision (also recorded at session start).
    Consent { decision: Consent },
    /// Rights changed during the session; `by` names who changed them.
    RightsChange { rights: Rights, by: Option<String> },
    /// The framebuffer size changed.
    Resize { width: u16, height: u16 },
    /// Clipboard transfers: direction and size only. The server merges the
    /// transfers of one session and direction within a second into one
    /// event: `count` transfers of `bytes` in total.
    Clipboard {
        direction: ClipboardDirection,
        bytes: u64,
        count: u64,
    },
    /// The TLS certificate viewers see (SHA-256 of its DER form, hex), and
    /// whether it was generated on this start. Not tied to a session.
    TlsCertificate { sha256: String, generated: bool },
    /// The server offers bare None/VNC authentication on these non-loopback
    /// addresses (`--insecure`). Not tied to a session.
    Insecure { addresses: Vec<String> },
    /// Too many failed authentications: the address is refused for a while.
    Lockout { address: String, seconds: u64 },
    /// Session events the journal writer could not keep because its queue
    /// was full (only resize events are ever dropped; clipboard transfers
    /// are merged instead). Not tied to a session.
    Dropped { resize: u64 },
    /// The outcome of one hook delivery attempt.
    HookDelivery {
        /// "webhook" or "command".
        target: String,
        /// The hook event delivered, e.g. "session_start".
        event: String,
        attempt: u32,
        /// "delivered", "failed: ...", "gave up: ...", "dropped: queue full".
        outcome: String,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AuthFailure { .. } => "auth_failure",
            Event::AuthFailures(_) => "auth_failures",
            Event::Consent { .. } => "consent",
            Event::RightsChange { .. } => "rights_change",
            Event::Resize { .. } => "resize",
            Event::Clipboard { .. } => "clipboard",
            Event::TlsCertificate { .. } => "tls_certificate",
            Event::Insecure { .. } => "insecure",
            Event::Lockout { .. } => "lockout",
            Event::Dropped { .. } => "journal_dropped",
            Event::HookDelivery { .. } => "hook_delivery",
        }
    }
    pub(crate) fn details(&self) -> Value {
        match self {
            Event::AuthFailure { reason } => json!({ "reason": truncate(reason, 200) }),
            Event::AuthFailures(s) => s.to_json(),
            Event::Consent { decision } => json!({ "decision": decision.as_str() }),
            Event::RightsChange { rights, by } => json!({ "rights": rights.json(), "by": by }),
            Event::Resize { width, height } => json!({ "width": width, "height": height }),
            Event::Clipboard {
                direction,
                bytes,
                count,
            } => json!({
                "direction": match direction {
                    ClipboardDirection::ToViewer => "to viewer",
                    ClipboardDirection::FromViewer => "from viewer",
                },
                "bytes": bytes,
                "count": count,
            }),
            Event::TlsCertificate { sha256, generated } => {
                json!({ "sha256": truncate(sha256, 128), "generated": generated })
            }
            Event::Insecure { addresses } => json!({
                "addresses": addresses.iter().take(64).map(|a| truncate(a, 100)).collect::<Vec<_>>(),
            }),
            Event::Lockout { address, seconds } => {
                json!({ "address": truncate(address, 100), "seconds": seconds })
            }
            Event::Dropped { resize } => json!({ "resize": resize }),
            Event::HookDelivery {
                target,
                event,
                attempt,
                outcome,
            } => json!({
                "target": target,
                "event": event,
                "attempt": attempt,
                "outcome": truncate(outcome, 300),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketStatus {
    Open,
    Closed,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Note {
    pub id: i64,
    pub at: i64,
    pub author: Option<String>,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Ticket {
    pub id: String,
    pub title: String,
    pub status: TicketStatus,
    pub resolution: Option<String>,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub notes: Vec<Note>,
    /// One-time codes not yet used, revoked or expired.
    pub live_codes: u64,
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: SessionId,
    pub ticket: Option<String>,
    pub peer: Option<String>,
    pub direction: String,
    pub security: String,
    pub credential: String,
    pub technician: Option<String>,
    pub rights: Rights,
    pub consent: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub stats: SessionStats,
}

impl SessionRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.0,
            "ticket": self.ticket,
            "peer": self.peer,
            "direction": self.direction,
            "security": self.security,
            "credential": self.credential,
            "technician": self.technician,
            "rights": self.rights.json(),
            "consent": self.consent,
            "started_at": format_time(self.started_at),
            "ended_at": self.ended_at.map(format_time),
            "end_reason": self.end_reason,
            "bytes_in": self.stats.bytes_in,
            "bytes_out": self.stats.bytes_out,
            "updates_sent": self.stats.updates_sent,
        })
    }
}

#[derive(Clone, Debug)]
pub struct EventRow {
    pub seq: i64,
    pub at: i64,
    pub session: Option<i64>,
    pub ticket: Option<String>,
    pub kind: String,
    pub details: Value,
}

/// The JSON a session row must match in its `session_start` and
/// `session_end` events.
pub(crate) fn session_snapshot(c: &Connection, id: i64) -> Result<(Value, Value)> {
    Ok(c.query_row(
        "SELECT id, ticket, peer, direction, security, credential, technician,
                can_view, can_keys, can_pointer, can_clipboard, consent, started_at,
                ended_at, end_reason, bytes_in, bytes_out, updates_sent
         FROM sessions WHERE id = ?1",
        [id],
        |r| {
            let start = json!({
                "id": r.get::<_, i64>(0)?,
                "ticket": r.get::<_, Option<String>>(1)?,
                "peer": r.get::<_, Option<String>>(2)?,
                "direction": r.get::<_, String>(3)?,
                "security": r.get::<_, String>(4)?,
                "credential": r.get::<_, String>(5)?,
                "technician": r.get::<_, Option<String>>(6)?,
                "rights": {
                    "view": r.get::<_, bool>(7)?,
                    "keys": r.get::<_, bool>(8)?,
                    "pointer": r.get::<_, bool>(9)?,
                    "clipboard": r.get::<_, bool>(10)?,
                },
                "consent": r.get::<_, String>(11)?,
                "started_at": r.get::<_, i64>(12)?,
            });
            let end = json!({
                "ended_at": r.get::<_, Option<i64>>(13)?,
                "end_reason": r.get::<_, Option<String>>(14)?,
                "bytes_in": r.get::<_, i64>(15)?,
                "bytes_out": r.get::<_, i64>(16)?,
                "updates_sent": r.get::<_, i64>(17)?,
            });
            Ok((start, end))
        },
    )?)
}

pub(crate) fn check_ticket_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_TICKET_ID {
        return Err(JournalError::Invalid(format!(
            "a ticket id has 1 to {MAX_TICKET_ID} bytes"
        )));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(JournalError::Invalid(
            "a ticket id has no spaces or control characters".into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_text(t: &str) -> Result<()> {
    if t.len() > MAX_TEXT {
        return Err(JournalError::Invalid(format!(
            "text longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

/// A `codes` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodeRow {
    pub id: i64,
    pub ticket: String,
    pub nonce: Vec<u8>,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl CodeRow {
    /// SHA-256 over every column fixed at issue time, as recorded in the
    /// `code_issued` event (schema 3 on).
    pub(crate) fn digest(&self) -> String {
        let v = serde_json::json!([
            self.id,
            self.ticket,
            hex(&self.nonce),
            hex(&self.salt),
            hex(&self.hash),
            self.created_at,
            self.expires_at
        ]);
        hex(&sha2::Sha256::digest(v.to_string().as_bytes()))
    }
}

/// The `technician_added` event's details.
pub(crate) fn added_details(name: &str, created_at: i64, phc: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "created_at": created_at,
        "hash_sha256": hex(&sha2::Sha256::digest(phc.as_bytes())),
    })
}
