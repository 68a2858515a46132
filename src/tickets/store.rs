//! The sqlite store: opening (file modes, WAL, migrations, crash recovery),
//! sessions, events, tickets and notes.

use super::chain::{self, note_details};
use super::{format_time, hex, now_ms, schema, JournalError, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub use crate::security::{Consent, Rights};

/// How long a writer waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
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

pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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

/// The process-wide lock that marks this process's open sessions as alive.
struct OwnerLock {
    id: String,
    path: PathBuf,
    _file: File,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The journal. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Journal {
    conn: Mutex<Connection>,
    path: PathBuf,
    owner: Mutex<Option<OwnerLock>>,
    pub(crate) secret: OnceLock<[u8; 32]>,
    /// The live one-time codes, ready to check (see codes.rs).
    pub(crate) live_codes: Mutex<Option<super::codes::LiveCodes>>,
    /// DES block operations done checking codes (a test hook: the work per
    /// check must not depend on how many codes are live).
    pub(crate) des_ops: std::sync::atomic::AtomicU64,
    /// `--journal-key-file`: rows are chained with HMAC under it.
    chain_key: Option<chain::ChainKey>,
    /// The team database, for a journal on PostgreSQL (`--db
    /// postgres://...`). Every method that works there dispatches to it
    /// before touching `conn`, which is then an empty in-memory sqlite
    /// database that is never used.
    pub(crate) pg: Option<super::pg::Pg>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io_err(dir))
}

/// Opens `path` for writing, creating it with mode 0600 if missing. An
/// existing file readable by group or others is tightened to 0600.
pub(crate) fn private_file(path: &Path, create_new: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "tightening permissions to 0600");
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
    }
    Ok(f)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

impl Journal {
    /// Opens (creating if needed) the database at `path`: parent directory
    /// 0700 when created, file 0600, WAL, schema migrated, and sessions left
    /// open by a process that no longer runs are closed as "crash".
    pub fn open(path: &Path) -> Result<Journal> {
        Journal::open_with_key(path, None)
    }

    /// Like [`Journal::open`], with the chain keyed (HMAC-SHA256) under
    /// `key` from now on. A key that does not match the keyed rows already
    /// there is refused ([`JournalError::WrongKey`]); without a key, a
    /// keyed journal can be read but not written
    /// ([`JournalError::KeyRequired`]). The first keyed row of a journal
    /// is a `chain_keyed` event, written at once, so that the switch is
    /// itself on record.
    pub fn open_with_key(path: &Path, key: Option<chain::ChainKey>) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        // Create the file ourselves so sqlite never creates it with the umask's mode.
        drop(private_file(path, false)?);
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // journal_mode=WAL needs the write lock briefly; busy_timeout covers it.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "could not switch the journal to WAL mode");
        }
        // FULL: a commit survives power loss, not only a process crash.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        schema::migrate(&mut conn)?;
        if let Some(key) = &key {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match chain::head_matches_key(&tx, key)? {
                Some(true) => {}
                Some(false) => return Err(JournalError::WrongKey(path.to_path_buf())),
                None => {
                    let seq: i64 =
                        tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
                    chain::append(
                        Some(key),
                        &tx,
                        now_ms(),
                        None,
                        None,
                        "chain_keyed",
                        &json!({ "plain_rows": seq }),
                    )?;
                    tracing::info!(from = seq + 1, "journal chain keyed from now on");
                }
            }
            tx.commit()?;
        }
        let j = Journal {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            owner: Mutex::new(None),
            secret: OnceLock::new(),
            live_codes: Mutex::new(None),
            des_ops: Default::default(),
            chain_key: key,
            pg: None,
        };
        j.recover_crashed()?;
        Ok(j)
    }

    /// Opens the journal `--db` names: an sqlite file ([`Journal::open_with_key`])
    /// or the team database on PostgreSQL (migrated, crashed sessions
    /// closed, the chain key checked, as for a file).
    pub fn open_target(target: &super::DbTarget, key: Option<chain::ChainKey>) -> Result<Journal> {
        let url = match target {
            super::DbTarget::Sqlite(path) => return Journal::open_with_key(path, key),
            super::DbTarget::Postgres(url) => url,
        };
        let pg = super::pg::Pg::new(url)?;
        super::pg::off_runtime(|| {
            pg.migrate()?;
            if let Some(k) = &key {
                pg.check_key(k)?;
            }
            Ok(())
        })?;
        let j = Journal {
            conn: Mutex::new(Connection::open_in_memory()?),
            path: PathBuf::from(pg.shown()),
            owner: Mutex::new(None),
            secret: OnceLock::new(),
            live_codes: Mutex::new(None),
            des_ops: Default::default(),
            chain_key: key,
            pg: Some(pg),
        };
        j.on_pg(|pg| pg.recover_crashed(j.chain_key.as_ref()))
            .expect("on PostgreSQL")?;
        j.on_pg(super::kb_pg::reindex_if_stale)
            .expect("on PostgreSQL")?;
        Ok(j)
    }

    /// The team database, if this journal is on PostgreSQL. Its calls
    /// block: from code that may run on a tokio thread use [`Journal::on_pg`].
    pub(crate) fn pg(&self) -> Option<&super::pg::Pg> {
        self.pg.as_ref()
    }

    /// Runs `f` on the team database if this journal is on PostgreSQL
    /// (`None` otherwise). The sync client of rust-postgres drives its own
    /// small runtime and panics inside another one, and journal methods
    /// are called from tokio tasks (a one-time code check) as well as from
    /// plain threads; on a tokio thread `f` runs on a short-lived thread
    /// of its own (tens of microseconds against a network round trip).
    pub(crate) fn on_pg<T: Send>(
        &self,
        f: impl FnOnce(&super::pg::Pg) -> Result<T> + Send,
    ) -> Option<Result<T>> {
        let pg = self.pg.as_ref()?;
        Some(super::pg::off_runtime(|| f(pg)))
    }

    pub(crate) fn chain_key(&self) -> Option<&chain::ChainKey> {
        self.chain_key.as_ref()
    }

    /// Is this journal the team database (PostgreSQL)?
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// The sqlite file, or for a journal on PostgreSQL its URL without
    /// the password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one chained event inside the caller's IMMEDIATE transaction.
    pub(crate) fn append(
        &self,
        tx: &Connection,
        at: i64,
        session: Option<i64>,
        ticket: Option<&str>,
        kind: &str,
        details: &Value,
    ) -> Result<i64> {
        chain::append(
            self.chain_key.as_ref(),
            tx,
            at,
            session,
            ticket,
            kind,
            details,
        )
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live_dir(&self) -> PathBuf {
        sibling(&self.path, ".live")
    }

    /// This process's owner id, creating and locking its lock file on first use.
    fn owner_id(&self) -> Result<String> {
        let mut g = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = g.as_ref() {
            return Ok(o.id.clone());
        }
        let dir = self.live_dir();
        create_private_dir(&dir)?;
        let mut raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let id = format!("{}-{}", std::process::id(), hex(&raw));
        let path = dir.join(format!("{id}.lock"));
        let file = private_file(&path, true)?;
        file.try_lock().map_err(|e| JournalError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        *g = Some(OwnerLock {
            id: id.clone(),
            path,
            _file: file,
        });
        Ok(id)
    }

    /// Closes, as "crash", the open sessions of every owner whose lock file
    /// is not locked any more (its process is gone). Live processes hold
    /// their lock, so a CLI opening the database never closes the sessions
    /// of a running `serve`.
    fn recover_crashed(&self) -> Result<u64> {
        let owners: Vec<Option<String>> = {
            let c = self.conn();
            let mut st = c.prepare("SELECT DISTINCT owner FROM sessions WHERE ended_at IS NULL")?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            v
        };
        let own = self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|o| o.id.clone());
        let dir = self.live_dir();
        let mut closed = 0;
        for owner in owners {
            if owner.is_some() && owner == own {
                continue;
            }
            // Hold the dead owner's lock while closing its sessions.
            let mut held = None;
            if let Some(o) = &owner {
                if o.contains(['/', '\\']) || o.contains("..") {
                    continue;
                }
                let lock_path = dir.join(format!("{o}.lock"));
                match OpenOptions::new().read(true).write(true).open(&lock_path) {
                    Ok(f) => match f.try_lock() {
                        Ok(()) => held = Some((f, lock_path)),
                        Err(std::fs::TryLockError::WouldBlock) => continue, // alive
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check session owner; leaving its sessions open");
                            continue;
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check session owner; leaving its sessions open");
                        continue;
                    }
                }
            }
            closed += self.close_owner_sessions(owner.as_deref())?;
            if let Some((_f, p)) = held {
                let _ = std::fs::remove_file(p);
            }
        }
        if closed > 0 {
            tracing::warn!(
                sessions = closed,
                "closed sessions left open by a crashed process"
            );
        }
        Ok(closed)
    }

    fn close_owner_sessions(&self, owner: Option<&str>) -> Result<u64> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut st = tx.prepare(
                "SELECT id FROM sessions WHERE ended_at IS NULL AND owner IS ?1 ORDER BY id",
            )?;
            let v = st
                .query_map([owner], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            v
        };
        let now = now_ms();
        for &id in &ids {
            end_in_tx(self, &tx, id, now, "crash", SessionStats::default())?;
        }
        tx.commit()?;
        Ok(ids.len() as u64)
    }

    /// Records a starting session and commits before returning. Call it
    /// after authentication (and consent), before ServerInit; refuse the
    /// viewer if it fails. A ticket named here that does not exist yet is
    /// created (e.g. `serve --ticket ID` with a static password).
    pub fn session_started(&self, s: &SessionStart) -> Result<SessionId> {
        if let Some(t) = s.ticket.as_ref().filter(|_| self.pg.is_some()) {
            check_ticket_id(t)?;
        }
        if let Some(r) = self.on_pg(|pg| {
            let owner = pg.owner_id()?;
            pg.insert_session(self.chain_key(), s, Some(&owner), None)
        }) {
            return r;
        }
        let owner = self.owner_id()?;
        self.insert_session(s, Some(&owner), None)
    }

    /// Records a failed authentication as a session that ended at once
    /// with reason "auth failed", with an `auth_failure` event.
    pub fn auth_failed(&self, s: &SessionStart, reason: &str) -> Result<SessionId> {
        if let Some(t) = s.ticket.as_ref().filter(|_| self.pg.is_some()) {
            check_ticket_id(t)?;
        }
        if let Some(r) = self.on_pg(|pg| pg.insert_session(self.chain_key(), s, None, Some(reason)))
        {
            return r;
        }
        self.insert_session(s, None, Some(reason))
    }

    fn insert_session(
        &self,
        s: &SessionStart,
        owner: Option<&str>,
        auth_failure: Option<&str>,
    ) -> Result<SessionId> {
        if let Some(t) = &s.ticket {
            check_ticket_id(t)?;
        }
        let now = now_ms();
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(t) = &s.ticket {
            if tx.execute(
                "INSERT OR IGNORE INTO tickets (id, created_at) VALUES (?1, ?2)",
                params![t, now],
            )? == 1
            {
                self.append(
                    &tx,
                    now,
                    None,
                    Some(t),
                    "ticket_opened",
                    &json!({"title": "", "by": "session"}),
                )?;
                rebuild_kb(&tx, t)?;
            }
        }
        tx.execute(
            "INSERT INTO sessions (ticket, peer, direction, security, credential, technician,
                can_view, can_keys, can_pointer, can_clipboard, consent, started_at, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                s.ticket,
                s.peer,
                s.direction.as_str(),
                truncate(&s.security, 64),
                truncate(&s.credential, 128),
                s.technician.as_deref().map(|t| truncate(t, 128)),
                s.rights.view,
                s.rights.keys,
                s.rights.pointer,
                s.rights.clipboard,
                s.consent.as_str(),
                now,
                owner
            ],
        )?;
        let id = tx.last_insert_rowid();
        let (start, _) = session_snapshot(&tx, id)?;
        self.append(
            &tx,
            now,
            Some(id),
            s.ticket.as_deref(),
            "session_start",
            &start,
        )?;
        if let Some(reason) = auth_failure {
            let ev = Event::AuthFailure {
                reason: reason.into(),
            };
            self.append(
                &tx,
                now,
                Some(id),
                s.ticket.as_deref(),
                ev.kind(),
                &ev.details(),
            )?;
            end_in_tx(self, &tx, id, now, "auth failed", SessionStats::default())?;
        }
        tx.commit()?;
        Ok(SessionId(id))
    }

    /// Records the end of a session (reason: e.g. `EndReason::as_str()`).
    /// Ending an already-ended session is a no-op.
    pub fn session_ended(&self, id: SessionId, reason: &str, stats: SessionStats) -> Result<()> {
        if let Some(r) = self.on_pg(|pg| pg.session_ended(self.chain_key(), id, reason, stats)) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ended: Option<Option<i64>> = tx
            .query_row("SELECT ended_at FROM sessions WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()?;
        match ended {
            None => return Err(JournalError::NoSuchSession(id.0)),
            Some(Some(_)) => return Ok(()),
            Some(None) => {}
        }
        end_in_tx(self, &tx, id.0, now_ms(), &truncate(reason, 200), stats)?;
        tx.commit()?;
        Ok(())
    }

    /// Appends an event to a session.
    pub fn event(&self, id: SessionId, ev: &Event) -> Result<()> {
        if let Some(r) = self.on_pg(|pg| pg.event(self.chain_key(), id, now_ms(), ev)) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ticket: Option<Option<String>> = tx
            .query_row("SELECT ticket FROM sessions WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()?;
        let ticket = ticket.ok_or(JournalError::NoSuchSession(id.0))?;
        self.append(
            &tx,
            now_ms(),
            Some(id.0),
            ticket.as_deref(),
            ev.kind(),
            &ev.details(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Appends an event that belongs to no session (e.g. a hook delivery
    /// for a ticket-level event).
    pub fn ticket_event(&self, ticket: Option<&str>, ev: &Event) -> Result<()> {
        if let Some(r) = self.on_pg(|pg| pg.ticket_event(self.chain_key(), ticket, now_ms(), ev)) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.append(&tx, now_ms(), None, ticket, ev.kind(), &ev.details())?;
        tx.commit()?;
        Ok(())
    }

    /// The newest event's (seq, hash): the chain head. Record it outside
    /// the database (hooks deliver it) to detect truncation later.
    pub fn head(&self) -> Result<Option<(i64, String)>> {
        if let Some(r) = self.on_pg(|pg| pg.head()) {
            return r;
        }
        Ok(self
            .conn()
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Checks a journal file without changing anything: nothing is created,
    /// migrated or recovered, and a read-only copy (an archive, a 0400 file
    /// in a 0500 directory) works. A missing or empty file is
    /// [`JournalError::NoJournal`], never a fresh journal that verifies.
    ///
    /// A journal without a `-wal` file has everything in the main file and
    /// is read as immutable (sqlite creates no `-wal`/`-shm` beside it); if
    /// a writer started meanwhile (a `-wal` appeared), it is checked again
    /// through sqlite's normal locking.
    pub fn verify_file(path: &Path, key: Option<&chain::ChainKey>) -> Result<super::VerifyReport> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(JournalError::NoJournal(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::NoJournal(path.to_path_buf()))
            }
            Err(e) => return Err(io_err(path)(e)),
        }
        let wal = sibling(path, "-wal");
        if !wal.exists() {
            let r = Journal::open_read_only(path, true)?.verify_with(key)?;
            if !wal.exists() {
                return Ok(r);
            }
        }
        Journal::open_read_only(path, false)?.verify_with(key)
    }

    /// Opens without writing anything (see [`Journal::verify_file`]).
    fn open_read_only(path: &Path, immutable: bool) -> Result<Journal> {
        use rusqlite::OpenFlags;
        let mut uri = String::from("file:");
        for b in path.to_string_lossy().bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri.push_str(if immutable {
            "?mode=ro&immutable=1"
        } else {
            "?mode=ro"
        });
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    JournalError::NotAJournal(path.to_path_buf())
                }
                e => e.into(),
            })?;
        if v > schema::SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                found: v,
                known: schema::SCHEMA_VERSION,
            });
        }
        let has_events: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
            [],
            |r| r.get(0),
        )?;
        if v < 1 || !has_events {
            return Err(JournalError::NotAJournal(path.to_path_buf()));
        }
        Ok(Journal {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            owner: Mutex::new(None),
            secret: OnceLock::new(),
            live_codes: Mutex::new(None),
            des_ops: Default::default(),
            chain_key: None,
            pg: None,
        })
    }

    /// Checks the hash chain and the session, note, technician, ticket and
    /// code rows against it, with this journal's key (if opened with one).
    pub fn verify(&self) -> Result<super::VerifyReport> {
        if let Some(r) = self.on_pg(|pg| pg.verify(self.chain_key())) {
            return r;
        }
        self.verify_with(self.chain_key.as_ref())
    }

    fn verify_with(&self, key: Option<&chain::ChainKey>) -> Result<super::VerifyReport> {
        let mut c = self.conn();
        // A read transaction: one consistent snapshot even while serve writes.
        let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let r = chain::verify(&tx, key)?;
        tx.commit()?;
        Ok(r)
    }

    /// A ticket's status now (`None`: no such ticket). One indexed read.
    pub fn ticket_status(&self, id: &str) -> Result<Option<TicketStatus>> {
        if let Some(r) = self.on_pg(|pg| pg.ticket_status(id)) {
            return r;
        }
        let s: Option<String> = self
            .conn()
            .query_row("SELECT status FROM tickets WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(s.map(|s| {
            if s == "closed" {
                TicketStatus::Closed
            } else {
                TicketStatus::Open
            }
        }))
    }

    /// Tickets closed (by any process: `ticketvnc ticket close` in another
    /// terminal, the ticket system) since `cursor`, and the cursor to pass
    /// next time. Start with `None`: that returns no tickets and the
    /// current cursor, so closings from before the server started are not
    /// reported. Cheap enough to poll every second or two: two indexed
    /// reads, whatever the size of the journal.
    ///
    /// A ticket closed and reopened between two polls is still reported
    /// (closing revoked its codes); check [`Journal::ticket_status`] if
    /// that matters.
    pub fn tickets_closed_since(&self, cursor: Option<i64>) -> Result<(Vec<String>, i64)> {
        if let Some(r) = self.on_pg(|pg| pg.tickets_closed_since(cursor)) {
            return r;
        }
        let c = self.conn();
        let head: i64 =
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        let Some(after) = cursor else {
            return Ok((Vec::new(), head));
        };
        let mut st = c.prepare(
            "SELECT DISTINCT ticket FROM events
             WHERE kind = 'ticket_closed' AND seq > ?1 AND seq <= ?2 AND ticket IS NOT NULL
             ORDER BY seq",
        )?;
        let v = st
            .query_map(params![after, head], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok((v, head))
    }

    /// Creates the ticket if needed (reopening it if closed) and sets the
    /// title when one is given. Returns the ticket and whether it was created.
    pub fn open_ticket(&self, id: &str, title: Option<&str>) -> Result<(Ticket, bool)> {
        check_ticket_id(id)?;
        if let Some(t) = title {
            check_text(t)?;
        }
        if let Some(r) = self.on_pg(|pg| pg.open_ticket(self.chain_key(), id, title)) {
            let created = r?;
            let t = self
                .ticket(id)?
                .ok_or_else(|| JournalError::NoSuchTicket(id.into()))?;
            return Ok((t, created));
        }
        let now = now_ms();
        let created;
        {
            let mut c = self.conn();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<(String, String)> = tx
                .query_row(
                    "SELECT title, status FROM tickets WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            created = existing.is_none();
            match existing {
                None => {
                    tx.execute(
                        "INSERT INTO tickets (id, title, created_at) VALUES (?1, ?2, ?3)",
                        params![id, title.unwrap_or(""), now],
                    )?;
                    self.append(
                        &tx,
                        now,
                        None,
                        Some(id),
                        "ticket_opened",
                        &json!({"title": title.unwrap_or("")}),
                    )?;
                }
                Some((old_title, status)) => {
                    if status == "closed" {
                        tx.execute(
                            "UPDATE tickets SET status = 'open', closed_at = NULL WHERE id = ?1",
                            [id],
                        )?;
                        self.append(&tx, now, None, Some(id), "ticket_reopened", &json!({}))?;
                    }
                    if let Some(t) = title.filter(|t| *t != old_title) {
                        tx.execute("UPDATE tickets SET title = ?2 WHERE id = ?1", [id, t])?;
                        self.append(
                            &tx,
                            now,
                            None,
                            Some(id),
                            "ticket_retitled",
                            &json!({"title": t}),
                        )?;
                    }
                }
            }
            rebuild_kb(&tx, id)?;
            tx.commit()?;
        }
        let t = self
            .ticket(id)?
            .ok_or_else(|| JournalError::NoSuchTicket(id.into()))?;
        Ok((t, created))
    }

    /// Closes a ticket, optionally with a resolution (indexed for the
    /// knowledge base). Its unused one-time codes are revoked.
    pub fn close_ticket(&self, id: &str, resolution: Option<&str>) -> Result<Ticket> {
        if let Some(r) = resolution {
            check_text(r)?;
        }
        if let Some(r) = self.on_pg(|pg| pg.close_ticket(self.chain_key(), id, resolution)) {
            r?;
            return self
                .ticket(id)?
                .ok_or_else(|| JournalError::NoSuchTicket(id.into()));
        }
        let now = now_ms();
        {
            let mut c = self.conn();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE tickets SET status = 'closed', closed_at = ?2,
                    resolution = COALESCE(?3, resolution) WHERE id = ?1",
                params![id, now, resolution],
            )?;
            if n == 0 {
                return Err(JournalError::NoSuchTicket(id.into()));
            }
            let revoked = tx.execute(
                "UPDATE codes SET revoked_at = ?2 WHERE ticket = ?1 AND used_at IS NULL AND revoked_at IS NULL",
                params![id, now],
            )?;
            use sha2::Digest;
            self.append(
                &tx,
                now,
                None,
                Some(id),
                "ticket_closed",
                &json!({
                    "resolution_sha256": resolution.map(|r| hex(&sha2::Sha256::digest(r.as_bytes()))),
                    "codes_revoked": revoked,
                }),
            )?;
            rebuild_kb(&tx, id)?;
            tx.commit()?;
        }
        self.ticket(id)?
            .ok_or_else(|| JournalError::NoSuchTicket(id.into()))
    }

    /// Adds a note to an existing ticket (indexed for the knowledge base).
    pub fn add_note(&self, ticket: &str, text: &str, author: Option<&str>) -> Result<i64> {
        check_text(text)?;
        if text.trim().is_empty() {
            return Err(JournalError::Invalid("the note is empty".into()));
        }
        if let Some(r) = self.on_pg(|pg| pg.add_note(self.chain_key(), ticket, text, author)) {
            return r;
        }
        let now = now_ms();
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tickets WHERE id = ?1)",
            [ticket],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(JournalError::NoSuchTicket(ticket.into()));
        }
        tx.execute(
            "INSERT INTO notes (ticket, at, author, text) VALUES (?1, ?2, ?3, ?4)",
            params![ticket, now, author, text],
        )?;
        let id = tx.last_insert_rowid();
        self.append(
            &tx,
            now,
            None,
            Some(ticket),
            "note_added",
            &note_details(id, ticket, now, text),
        )?;
        rebuild_kb(&tx, ticket)?;
        tx.commit()?;
        Ok(id)
    }

    /// A ticket with its notes, or `None`.
    pub fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        if let Some(r) = self.on_pg(|pg| pg.ticket(id)) {
            return r;
        }
        let c = self.conn();
        let t = c
            .query_row(
                "SELECT id, title, status, resolution, created_at, closed_at FROM tickets WHERE id = ?1",
                [id],
                |r| {
                    Ok(Ticket {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        status: if r.get::<_, String>(2)? == "closed" {
                            TicketStatus::Closed
                        } else {
                            TicketStatus::Open
                        },
                        resolution: r.get(3)?,
                        created_at: r.get(4)?,
                        closed_at: r.get(5)?,
                        notes: Vec::new(),
                        live_codes: 0,
                    })
                },
            )
            .optional()?;
        let Some(mut t) = t else { return Ok(None) };
        let mut st =
            c.prepare("SELECT id, at, author, text FROM notes WHERE ticket = ?1 ORDER BY id")?;
        t.notes = st
            .query_map([id], |r| {
                Ok(Note {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    author: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        t.live_codes = c.query_row(
            "SELECT COUNT(*) FROM codes WHERE ticket = ?1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?2",
            params![id, now_ms()],
            |r| r.get::<_, i64>(0),
        )? as u64;
        Ok(Some(t))
    }

    /// Sessions, newest first, optionally of one ticket.
    pub fn sessions(&self, ticket: Option<&str>) -> Result<Vec<SessionRow>> {
        if let Some(r) = self.on_pg(|pg| pg.sessions(ticket)) {
            return r;
        }
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT id, ticket, peer, direction, security, credential, technician,
                    can_view, can_keys, can_pointer, can_clipboard, consent,
                    started_at, ended_at, end_reason, bytes_in, bytes_out, updates_sent
             FROM sessions WHERE ?1 IS NULL OR ticket = ?1 ORDER BY id DESC",
        )?;
        let v = st
            .query_map([ticket], |r| {
                Ok(SessionRow {
                    id: SessionId(r.get(0)?),
                    ticket: r.get(1)?,
                    peer: r.get(2)?,
                    direction: r.get(3)?,
                    security: r.get(4)?,
                    credential: r.get(5)?,
                    technician: r.get(6)?,
                    rights: Rights {
                        view: r.get(7)?,
                        keys: r.get(8)?,
                        pointer: r.get(9)?,
                        clipboard: r.get(10)?,
                    },
                    consent: r.get(11)?,
                    started_at: r.get(12)?,
                    ended_at: r.get(13)?,
                    end_reason: r.get(14)?,
                    stats: SessionStats {
                        bytes_in: r.get::<_, i64>(15)? as u64,
                        bytes_out: r.get::<_, i64>(16)? as u64,
                        updates_sent: r.get::<_, i64>(17)? as u64,
                    },
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    /// Events in order, of one session or (None) of all.
    pub fn events(&self, session: Option<SessionId>) -> Result<Vec<EventRow>> {
        if let Some(r) = self.on_pg(|pg| pg.events(session.map(|s| s.0), None)) {
            return r;
        }
        self.query_events("?1 IS NULL OR session = ?1", session.map(|s| s.0))
    }

    /// Events of one ticket (its sessions' and its own), in order.
    pub fn ticket_events(&self, ticket: &str) -> Result<Vec<EventRow>> {
        if let Some(r) = self.on_pg(|pg| pg.events(None, Some(ticket))) {
            return r;
        }
        self.query_events("ticket = ?1", Some(ticket))
    }

    fn query_events(&self, filter: &str, arg: impl rusqlite::ToSql) -> Result<Vec<EventRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT seq, at, session, ticket, kind, details FROM events WHERE {filter} ORDER BY seq"
        ))?;
        let v = st
            .query_map([arg], |r| {
                let d: String = r.get(5)?;
                Ok(EventRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    session: r.get(2)?,
                    ticket: r.get(3)?,
                    kind: r.get(4)?,
                    details: serde_json::from_str(&d).unwrap_or(Value::String(d)),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }
}

/// Ends a session inside a transaction: row update + `session_end` event.
pub(crate) fn end_in_tx(
    j: &Journal,
    tx: &Connection,
    id: i64,
    now: i64,
    reason: &str,
    stats: SessionStats,
) -> Result<()> {
    tx.execute(
        "UPDATE sessions SET ended_at = ?2, end_reason = ?3, bytes_in = ?4, bytes_out = ?5,
            updates_sent = ?6, owner = NULL WHERE id = ?1",
        params![
            id,
            now,
            reason,
            stats.bytes_in as i64,
            stats.bytes_out as i64,
            stats.updates_sent as i64
        ],
    )?;
    let ticket: Option<String> =
        tx.query_row("SELECT ticket FROM sessions WHERE id = ?1", [id], |r| {
            r.get(0)
        })?;
    let (_, end) = session_snapshot(tx, id)?;
    j.append(tx, now, Some(id), ticket.as_deref(), "session_end", &end)?;
    Ok(())
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

pub(crate) use super::kb::rebuild_kb;

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

fn check_text(t: &str) -> Result<()> {
    if t.len() > MAX_TEXT {
        return Err(JournalError::Invalid(format!(
            "text longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}
