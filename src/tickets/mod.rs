//! The ticket journal: an embedded sqlite log of tickets, sessions and
//! events, one-time codes bound to tickets, and a full-text knowledge base.
//!
//! Everything lives in one database file (default
//! `$XDG_DATA_HOME/ticketvnc/ticketvnc.db`, see [`default_db_path`]) created
//! with mode 0600, in WAL mode, with the schema version in
//! `PRAGMA user_version`. Beside it: `ticketvnc.key` (the 32-byte server
//! secret that one-time codes are derived from, mode 0600) and
//! `ticketvnc.db.live/` (one lock file per running process that has open
//! sessions, used for crash recovery).
//!
//! Never stored: passwords, one-time codes, DES challenges or responses,
//! clipboard contents, keystrokes, screen images. The typed [`Event`] enum
//! is the only way to add an event, so there is no field to put them in.
//!
//! # How the server calls it
//!
//! ```no_run
//! use ticketvnc::tickets::*;
//! # fn demo() -> Result<(), JournalError> {
//! let journal = std::sync::Arc::new(Journal::open(&default_db_path()?)?);
//! // Authentication: one-time codes of the journal, plus an optional static password.
//! let auth = CodeAuthenticator::new(journal.clone(), None, None)?;
//! // SessionHost::session_starting (after ClientInit, BEFORE ServerInit):
//! let id = journal.session_started(&SessionStart {
//!     ticket: Some("4711".into()),          // Principal::ticket
//!     peer: Some("192.0.2.7:51234".into()),
//!     direction: Direction::Inbound,
//!     security: "VNC".into(),
//!     credential: "one-time code".into(),   // Principal::credential
//!     technician: None,
//!     rights: Rights::FULL,
//!     consent: Consent::NotAsked,
//! })?; // committed when this returns; refuse the viewer on Err
//! journal.event(id, &Event::Resize { width: 1280, height: 800 })?;
//! journal.session_ended(id, "viewer closed", SessionStats::default())?;
//! // SessionHost::auth_failed (no session id yet): one closed row + event.
//! journal.auth_failed(&SessionStart { ..Default::default() }, "wrong password or code")?;
//! # Ok(()) }
//! ```
//!
//! All `Journal` calls are short synchronous sqlite transactions (well
//! under a millisecond uncontended; up to the 5 s busy timeout if another
//! process holds the write lock). The server does not call them from its
//! tasks directly: [`JournalObserver`] writes a session's start in the
//! caller (tokio's blocking pool; it must be committed before ServerInit)
//! and hands everything else (events, ends, server notices) to one journal
//! writer thread that batches them, merges clipboard transfers per second
//! and never makes a session wait (see [`WRITER_QUEUE_LEN`],
//! [`CLIPBOARD_WINDOW`]).

pub mod analyzer;
mod chain;
mod codes;
mod copy;
mod copy_tables;
mod events;
mod files;
pub mod flood;
pub mod hooks;
mod kb;
mod kb_index;
mod kb_pg;
mod kb_pg_index;
mod live_codes;
#[cfg(test)]
mod module_graph;
mod notes;
mod observer;
mod pg;
mod pg_tls;
mod recovery;
mod rows;
mod schema;
mod store;
mod target;
mod technicians;
mod ticket;
mod verify;
mod writer;

pub use chain::{Broken, ChainKey, VerifyReport};
pub use codes::{
    check_code_ttl, team_key_path, CodeAuthenticator, IssuedCode, CODE_ALPHABET, CODE_LEN,
    MAX_LIVE_CODES, MAX_TTL, MIN_TTL,
};
pub use copy::{copy_journal, CopyReport};
pub use kb_index::{KbHit, KbQuery, KbSource, EXPANSION_WEIGHT, MAX_QUERY_BYTES, MAX_QUERY_WORDS};
pub use observer::JournalObserver;
pub use rows::{
    ClipboardDirection, Consent, Direction, Event, EventRow, Note, Rights, SessionId, SessionRow,
    SessionStart, SessionStats, Ticket, TicketStatus,
};
pub use store::Journal;
pub use target::{redact_url, DbTarget};
pub use technicians::{
    check_technician_name, Technician, MAX_TECHNICIAN_NAME, MAX_TECHNICIAN_PASSWORD,
};
pub use verify::verify_target;
pub use writer::{CLIPBOARD_WINDOW, QUEUE_LEN as WRITER_QUEUE_LEN};

use std::path::PathBuf;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database has schema version {found}, newer than this ticketvnc knows ({known}); upgrade ticketvnc")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("no data directory: set XDG_DATA_HOME or HOME, or pass --db PATH")]
    NoDataDir,
    #[error("key file {0} is malformed (expected 64 hex digits)")]
    BadKeyFile(PathBuf),
    #[error("ticket {0:?} does not exist")]
    NoSuchTicket(String),
    #[error("ticket {0:?} is closed")]
    TicketClosed(String),
    #[error("session {0} does not exist")]
    NoSuchSession(i64),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("technician {0:?} already exists")]
    TechnicianExists(String),
    #[error("technician {0:?} does not exist")]
    NoSuchTechnician(String),
    #[error("journal key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)")]
    KeyFileMode { path: PathBuf, mode: u32 },
    #[error("the journal chain is keyed: pass --journal-key-file to write to it")]
    KeyRequired,
    #[error("the journal key does not match the keyed rows of {0}")]
    WrongKey(PathBuf),
    #[error("no journal here: {0} is missing or empty")]
    NoJournal(PathBuf),
    #[error("{0} is not a ticketvnc journal")]
    NotAJournal(PathBuf),
    #[error("password hashing: {0}")]
    PasswordHash(String),
    /// The team database (PostgreSQL) answered with an error or could not
    /// be reached (see [`JournalError::is_unavailable`]).
    #[error("team database: {}", pg_message(.0))]
    Postgres(postgres::Error),
    #[error("{0} is not available on a PostgreSQL journal yet (issue 15)")]
    NotOnPostgres(&'static str),
    #[error("{0}")]
    CodeKey(String),
}

impl From<postgres::Error> for JournalError {
    fn from(e: postgres::Error) -> JournalError {
        JournalError::Postgres(e)
    }
}

/// rust-postgres says only "db error" or "error connecting to server";
/// the reason is in its source: say both on one line.
fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.hint() {
            Some(h) => format!("{} ({h})", db.message()),
            None => db.message().to_string(),
        };
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl JournalError {
    /// The database could not be reached or the connection broke: worth
    /// retrying later (nothing was committed), unlike an error the
    /// database itself reported.
    pub fn is_unavailable(&self) -> bool {
        match self {
            JournalError::Postgres(e) => match e.as_db_error() {
                None => true,
                // Connection exceptions (class 08), a server shutting down,
                // crashed or not yet accepting connections (57P01..57P03),
                // too many connections: the database is away for now.
                Some(db) => {
                    let c = db.code().code();
                    e.is_closed() || c.starts_with("08") || c.starts_with("57P") || c == "53300"
                }
            },
            _ => false,
        }
    }
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

pub use schema::SCHEMA_VERSION;

/// `$XDG_DATA_HOME/ticketvnc/ticketvnc.db`, else (Windows)
/// `%LOCALAPPDATA%\ticketvnc\ticketvnc.db`, else
/// `$HOME/.local/share/ticketvnc/ticketvnc.db`.
pub fn default_db_path() -> Result<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    // Windows: %LOCALAPPDATA% (see security::tls::default_config_dir).
    #[cfg(windows)]
    let xdg = xdg.or_else(|| {
        std::env::var_os("LOCALAPPDATA")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    });
    let base = match xdg {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or(JournalError::NoDataDir)?;
            home.join(".local").join("share")
        }
    };
    Ok(base.join("ticketvnc").join("ticketvnc.db"))
}

/// Current time in milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC rendering of a millisecond timestamp (seconds precision).
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|p| Some(v(p[0])? << 4 | v(p[1])?))
        .collect()
}
