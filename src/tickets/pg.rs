//! The journal on PostgreSQL (issue 15, team mode): one database shared by
//! every ticketvnc server and technician of a helpdesk.
//!
//! Same schema (translated column by column), same migration numbering,
//! same hash chain and the same guarantees as the sqlite store:
//!
//! - Every transaction that appends to the chain first takes one
//!   transaction-level advisory lock ([`CHAIN_LOCK`]), the counterpart of
//!   sqlite's `BEGIN IMMEDIATE`: reading the head and inserting the next
//!   row are atomic across all processes on all machines.
//! - A one-time code is consumed in such a transaction with `UPDATE codes
//!   SET used_at .. WHERE id = $1 AND used_at IS NULL`, and accepted only
//!   if that changed exactly one row: of two servers racing for one code,
//!   exactly one wins.
//! - `session_started` commits before it returns (the caller sends
//!   ServerInit only after that), as on sqlite.
//! - Crash recovery across machines: each process that opens sessions
//!   holds a session-level advisory lock named by its owner id on its own
//!   connection; sessions of an owner whose lock can be taken are closed
//!   as "crash" when a journal is opened.
//!
//! Connections: the sync client of rust-postgres (`postgres` crate), in a
//! small pool of our own ([`POOL_MAX`]). A broken connection is dropped
//! and the next call connects anew, so the server reconnects by itself
//! once the database is back. No TLS yet (docs/team.md).
//!
//! Verification reads one consistent snapshot (REPEATABLE READ) into an
//! in-memory sqlite database and runs the very same checks as for a file
//! (chain.rs), so both backends verify identically by construction.

use super::chain::{self, ChainKey};
use super::pg_tls::{Connector, SslMode};
use super::rows::{CodeRow, SessionRow};
use super::{
    now_ms, truncate, EventRow, JournalError, Note, Result, Rights, SessionId, SessionStart,
    SessionStats, Ticket, TicketStatus,
};
use postgres::{Client, Config, Transaction};
use serde_json::{json, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Advisory lock key that serialises every writer of the chain.
pub(crate) const CHAIN_LOCK: i64 = 0x7469_636b_6574_0001; // "ticket" 1
/// How often a process checks that it still holds its owner lock.
const OWNER_CHECK: Duration = Duration::from_secs(1);
/// Advisory lock key for migrations.
const MIGRATE_LOCK: i64 = 0x7469_636b_6574_0002;
/// First key of the two-key advisory locks that mark live owners.
const OWNER_NS: i32 = 0x7476_6e63; // "tvnc"
/// Connections open at most per process.
pub const POOL_MAX: usize = 8;
/// How long to wait for a connection (TCP connect and startup).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Migration `i` brings the schema from version `i` to `i + 1`, as in
/// schema.rs (same numbering; the sqlite originals are the reference).
const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are Unix milliseconds (UTC). `rowid`
    // columns stand in for sqlite's implicit rowid where rows are named
    // by it (verification reports).
    r#"
    CREATE TABLE tickets (
        rowid       BIGSERIAL UNIQUE NOT NULL,
        id          TEXT PRIMARY KEY NOT NULL,
        title       TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
        resolution  TEXT,
        created_at  BIGINT NOT NULL,
        closed_at   BIGINT
    );
    CREATE TABLE sessions (
        id            BIGSERIAL PRIMARY KEY,
        ticket        TEXT REFERENCES tickets(id),
        peer          TEXT,
        direction     TEXT NOT NULL CHECK (direction IN ('inbound', 'reverse', 'repeater')),
        security      TEXT NOT NULL,
        credential    TEXT NOT NULL,
        technician    TEXT,
        can_view      BOOLEAN NOT NULL,
        can_keys      BOOLEAN NOT NULL,
        can_pointer   BOOLEAN NOT NULL,
        can_clipboard BOOLEAN NOT NULL,
        consent       TEXT NOT NULL,
        started_at    BIGINT NOT NULL,
        ended_at      BIGINT,
        end_reason    TEXT,
        bytes_in      BIGINT NOT NULL DEFAULT 0,
        bytes_out     BIGINT NOT NULL DEFAULT 0,
        updates_sent  BIGINT NOT NULL DEFAULT 0,
        owner         TEXT
    );
    CREATE INDEX sessions_ticket ON sessions(ticket);
    CREATE INDEX sessions_open ON sessions(owner) WHERE ended_at IS NULL;
    CREATE TABLE events (
        seq      BIGINT PRIMARY KEY NOT NULL,
        at       BIGINT NOT NULL,
        session  BIGINT REFERENCES sessions(id),
        ticket   TEXT,
        kind     TEXT NOT NULL,
        details  TEXT NOT NULL,
        hash     TEXT NOT NULL
    );
    CREATE INDEX events_session ON events(session);
    CREATE TABLE notes (
        id      BIGSERIAL PRIMARY KEY,
        ticket  TEXT NOT NULL REFERENCES tickets(id),
        at      BIGINT NOT NULL,
        author  TEXT,
        text    TEXT NOT NULL
    );
    CREATE INDEX notes_ticket ON notes(ticket);
    CREATE TABLE codes (
        id          BIGSERIAL PRIMARY KEY,
        ticket      TEXT NOT NULL REFERENCES tickets(id),
        nonce       BYTEA NOT NULL UNIQUE,
        salt        BYTEA NOT NULL,
        hash        BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        used_at     BIGINT,
        revoked_at  BIGINT
    );
    CREATE INDEX codes_live ON codes(expires_at) WHERE used_at IS NULL AND revoked_at IS NULL;
    "#,
    // 2: technician accounts.
    r#"
    CREATE TABLE technicians (
        rowid       BIGSERIAL UNIQUE NOT NULL,
        name        TEXT PRIMARY KEY NOT NULL,
        hash        TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );
    "#,
    // 3: the codes generation counter (bumped by trigger on any change to
    // `codes` and to a ticket's status) and the events-by-kind index.
    r#"
    CREATE TABLE counters (
        name   TEXT PRIMARY KEY NOT NULL,
        value  BIGINT NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('codes', 0);
    -- SECURITY DEFINER: roles that may change codes or tickets need no
    -- right on `counters` (docs/team.md).
    CREATE FUNCTION ticketvnc_codes_changed() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path FROM CURRENT AS $$
    BEGIN
        UPDATE counters SET value = value + 1 WHERE name = 'codes';
        RETURN NULL;
    END $$;
    CREATE TRIGGER codes_changed AFTER INSERT OR UPDATE OR DELETE ON codes
        FOR EACH STATEMENT EXECUTE FUNCTION ticketvnc_codes_changed();
    CREATE TRIGGER tickets_changed_update AFTER UPDATE OF status ON tickets
        FOR EACH STATEMENT EXECUTE FUNCTION ticketvnc_codes_changed();
    CREATE TRIGGER tickets_changed_delete AFTER DELETE ON tickets
        FOR EACH STATEMENT EXECUTE FUNCTION ticketvnc_codes_changed();
    CREATE INDEX events_kind ON events(kind, ticket);
    "#,
    // 4: the knowledge base: the analyzer's terms (analyzer.rs, the same
    // module sqlite uses) per ticket, and a tsvector over them for ranked
    // full-text search; the vocabulary; the ticket language hint.
    r#"
    CREATE TABLE kb (
        ticket      TEXT PRIMARY KEY NOT NULL REFERENCES tickets(id),
        title       TEXT NOT NULL,
        notes       TEXT NOT NULL,
        resolution  TEXT NOT NULL,
        doc         tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple', title), 'A') ||
            setweight(to_tsvector('simple', resolution), 'B') ||
            setweight(to_tsvector('simple', notes), 'C')) STORED
    );
    CREATE INDEX kb_doc ON kb USING gin (doc);
    CREATE TABLE kb_vocab (
        term  TEXT PRIMARY KEY NOT NULL
    );
    CREATE TABLE ticket_lang (
        ticket  TEXT PRIMARY KEY NOT NULL REFERENCES tickets(id),
        lang    TEXT NOT NULL CHECK (lang IN ('de', 'en'))
    );
    INSERT INTO counters (name, value) VALUES ('kb_analyzer', 0);
    "#,
    // 5: the knowledge base also in PostgreSQL's own German and English
    // configurations (kb_pg_index.rs): the raw title (A), resolution (B) and
    // notes (C) as tsvectors, filled with the analyzer's row (migrate
    // reindexes in the same transaction).
    r#"
    ALTER TABLE kb ADD COLUMN doc_de tsvector NOT NULL DEFAULT ''::tsvector,
                   ADD COLUMN doc_en tsvector NOT NULL DEFAULT ''::tsvector;
    CREATE INDEX kb_doc_de ON kb USING gin (doc_de);
    CREATE INDEX kb_doc_en ON kb USING gin (doc_en);
    "#,
];

/// The schema version this build writes (the same number as sqlite's).
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
const _: () = assert!(SCHEMA_VERSION == super::schema::SCHEMA_VERSION);

/// Runs `f` where the sync client may block: here, or on a thread of its
/// own when this thread belongs to a tokio runtime (see `Journal::on_pg`).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("journal-pg".into())
            .spawn_scoped(s, f)
            .map_err(|e| JournalError::Invalid(format!("cannot start a database thread: {e}")))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections handed out or idle.
    open: usize,
}

/// The PostgreSQL side of a [`Journal`](super::Journal).
pub(crate) struct Pg {
    config: Config,
    /// TLS or not (pg_tls.rs).
    connector: Connector,
    /// The URL without its password, for messages.
    shown: String,
    pool: Mutex<PoolState>,
    freed: Condvar,
    /// This process's owner id and the connection that holds its lock.
    owner: Arc<Mutex<Option<(String, Client)>>>,
}

/// A pooled connection; back to the pool on drop unless broken.
pub(crate) struct Conn<'a> {
    pg: &'a Pg,
    client: Option<Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}
impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut g = self.pg.pool.lock().unwrap_or_else(|e| e.into_inner());
        match self.client.take() {
            Some(c) if !c.is_closed() => g.idle.push(c),
            _ => g.open -= 1,
        }
        self.pg.freed.notify_one();
    }
}

impl Drop for Pg {
    /// The sync client closes a connection by blocking on its own runtime,
    /// which panics on a tokio thread: a journal dropped there (at the end
    /// of an async task) closes its connections on a thread of their own.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let idle = std::mem::take(&mut self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).idle);
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = std::thread::Builder::new()
            .name("journal-pg-close".into())
            .spawn(move || drop((idle, owner)))
            .map(|t| t.join());
    }
}

impl Pg {
    pub(crate) fn new(url: &str) -> Result<Pg> {
        let shown = super::redact_url(url);
        let in_url = |e: JournalError| match e {
            JournalError::Invalid(m) => JournalError::Invalid(format!("--db {shown}: {m}")),
            e => e,
        };
        let (stripped, mode, root) = super::pg_tls::split_tls_params(url).map_err(in_url)?;
        let url = stripped.as_str();
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            JournalError::Invalid(format!(
                "--db {}: not a PostgreSQL URL: {e}",
                super::redact_url(url)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("ticketvnc");
        }
        let tls_mode = match mode.or_else(|| std::env::var("PGSSLMODE").ok()) {
            Some(m) => SslMode::parse(&m).map_err(in_url)?,
            None => super::pg_tls::default_mode(&config),
        };
        let connector = Connector::new(&mut config, tls_mode, root).map_err(in_url)?;
        tracing::debug!(db = %shown, tls = tls_mode.as_str(), "team database");
        Ok(Pg {
            config,
            connector,
            shown,
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            owner: Arc::new(Mutex::new(None)),
        })
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    fn connect(&self) -> Result<Client> {
        Ok(self.connector.connect(&self.config)?)
    }

    /// A connection from the pool, connecting if none is idle.
    pub(crate) fn conn(&self) -> Result<Conn<'_>> {
        let deadline = std::time::Instant::now() + POOL_WAIT;
        let mut g = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(mut c) = g.idle.pop() {
                // A connection from before a database restart looks open
                // until used: check it (one round trip) rather than fail
                // the caller's transaction with it.
                if !c.is_closed() && c.is_valid(CONNECT_TIMEOUT).is_ok() {
                    return Ok(Conn {
                        pg: self,
                        client: Some(c),
                    });
                }
                g.open -= 1;
            }
            if g.open < POOL_MAX {
                g.open += 1;
                drop(g);
                return match self.connect() {
                    Ok(c) => Ok(Conn {
                        pg: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        let mut g = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                        g.open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(JournalError::Invalid(format!(
                    "all {POOL_MAX} connections to the team database are busy"
                )));
            }
            g = self
                .freed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs `f` in a transaction that holds the chain lock, and commits.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
        let r = f(&mut tx)?;
        tx.commit()?;
        Ok(r)
    }

    /// Applies the migrations this database lacks, one transaction each
    /// under an advisory lock (two servers starting at once apply each
    /// once).
    pub(crate) fn migrate(&self) -> Result<()> {
        // Up to date: nothing to write, so roles without DDL rights (servers,
        // technicians' tools; docs/team.md) can open the journal.
        match self.schema_version()? {
            v if v == SCHEMA_VERSION => return Ok(()),
            v if v > SCHEMA_VERSION => {
                return Err(JournalError::SchemaTooNew {
                    found: v,
                    known: SCHEMA_VERSION,
                })
            }
            _ => {}
        }
        let mut c = self.conn()?;
        loop {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS ticketvnc_schema (
                     one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                     version  BIGINT NOT NULL
                 );
                 INSERT INTO ticketvnc_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
            )?;
            let v: i64 = tx
                .query_one("SELECT version FROM ticketvnc_schema", &[])?
                .get(0);
            if v > SCHEMA_VERSION {
                return Err(JournalError::SchemaTooNew {
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
            if v == SCHEMA_VERSION {
                tx.commit()?;
                return Ok(());
            }
            tx.batch_execute(MIGRATIONS[v as usize])?;
            if v + 1 == SCHEMA_VERSION {
                // Fill the knowledge base in the same transaction: nobody
                // sees a current schema with an empty one.
                super::kb_pg_index::reindex_tx(&mut tx)?;
            }
            tx.execute("UPDATE ticketvnc_schema SET version = $1", &[&(v + 1)])?;
            tx.commit()?;
            tracing::info!(version = v + 1, "team journal schema migrated");
        }
    }

    /// The schema version of the database (0: none yet).
    pub(crate) fn schema_version(&self) -> Result<i64> {
        let mut c = self.conn()?;
        let has: bool = c
            .query_one("SELECT to_regclass('ticketvnc_schema') IS NOT NULL", &[])?
            .get(0);
        if !has {
            return Ok(0);
        }
        Ok(c.query_one("SELECT version FROM ticketvnc_schema", &[])?
            .get(0))
    }

    // ---- owners and crash recovery ----

    /// This process's owner id; its advisory lock is held on a connection
    /// of its own (taken again if that connection broke).
    pub(crate) fn owner_id(&self) -> Result<String> {
        let mut g = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        let id = match g.as_ref() {
            Some((id, c)) if !c.is_closed() => return Ok(id.clone()),
            Some((id, _)) => id.clone(),
            None => {
                let mut raw = [0u8; 8];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
                format!("pg-{}-{}", std::process::id(), super::hex(&raw))
            }
        };
        let first = g.is_none();
        let c = lock_owner(&self.connector, &self.config, &id)?;
        *g = Some((id.clone(), c));
        if first {
            self.keep_owner_lock();
        }
        Ok(id)
    }

    /// A thread that takes the owner lock again as soon as the database is
    /// back after an outage or restart (the lock died with its
    /// connection): until then, another process opening the journal would
    /// take this process's open sessions for crashed ones. It ends when
    /// the journal is dropped.
    fn keep_owner_lock(&self) {
        let owner = Arc::downgrade(&self.owner);
        let config = self.config.clone();
        let connector = self.connector.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-owner".into())
            .spawn(move || loop {
                std::thread::sleep(OWNER_CHECK);
                let Some(owner) = owner.upgrade() else { return };
                let mut g = owner.lock().unwrap_or_else(|e| e.into_inner());
                let Some((id, c)) = g.as_mut() else { continue };
                if c.is_valid(CONNECT_TIMEOUT).is_ok() {
                    continue;
                }
                match lock_owner(&connector, &config, id) {
                    Ok(fresh) => {
                        *c = fresh;
                        tracing::info!(
                            "team database back: this server's sessions are marked alive again"
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "team database still unreachable"),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the owner-lock thread");
        }
    }

    /// Closes, as "crash", the open sessions of every owner whose lock is
    /// free (its process is gone, on whatever machine).
    pub(crate) fn recover_crashed(&self, key: Option<&ChainKey>) -> Result<u64> {
        let own = self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|o| o.0.clone());
        let owners: Vec<Option<String>> = self
            .conn()?
            .query(
                "SELECT DISTINCT owner FROM sessions WHERE ended_at IS NULL",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut closed = 0;
        for owner in owners {
            if owner.is_some() && owner == own {
                continue;
            }
            let mut c = self.conn()?;
            if let Some(o) = &owner {
                let free: bool = c
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&OWNER_NS, o],
                    )?
                    .get(0);
                if !free {
                    continue; // alive
                }
            }
            let r = (|| -> Result<u64> {
                let mut tx = c.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
                let ids: Vec<i64> = tx
                    .query(
                        "SELECT id FROM sessions WHERE ended_at IS NULL
                         AND owner IS NOT DISTINCT FROM $1 ORDER BY id",
                        &[&owner],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let now = now_ms();
                for &id in &ids {
                    end_in_tx(key, &mut tx, id, now, "crash", SessionStats::default())?;
                }
                tx.commit()?;
                Ok(ids.len() as u64)
            })();
            if let Some(o) = &owner {
                c.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))",
                    &[&OWNER_NS, o],
                )?;
            }
            closed += r?;
        }
        if closed > 0 {
            tracing::warn!(
                sessions = closed,
                "closed sessions left open by a crashed process"
            );
        }
        Ok(closed)
    }

    // ---- chained writes ----

    /// When the chain is keyed, a key that does not match its head is
    /// refused; the first keyed row is a `chain_keyed` event.
    pub(crate) fn check_key(&self, key: &ChainKey) -> Result<()> {
        self.write(|tx| {
            let rows = tx.query(
                "SELECT seq, at, session, ticket, kind, details, hash FROM events
                 ORDER BY seq DESC LIMIT 2",
                &[],
            )?;
            match rows.first() {
                Some(head) if head.get::<_, String>(6).starts_with(chain::KEYED) => {
                    let prev = rows
                        .get(1)
                        .map(|r| r.get::<_, String>(6))
                        .unwrap_or_else(|| chain::GENESIS.into());
                    let ticket: Option<String> = head.get(3);
                    let h = chain::row_hash(
                        Some(key),
                        &prev,
                        head.get(0),
                        head.get(1),
                        head.get(2),
                        ticket.as_deref(),
                        &head.get::<_, String>(4),
                        &head.get::<_, String>(5),
                    );
                    if h != head.get::<_, String>(6) {
                        return Err(JournalError::WrongKey(self.shown.clone().into()));
                    }
                }
                _ => {
                    let seq: i64 = rows.first().map_or(0, |r| r.get(0));
                    append(
                        Some(key),
                        tx,
                        now_ms(),
                        None,
                        None,
                        "chain_keyed",
                        &json!({ "plain_rows": seq }),
                    )?;
                    tracing::info!(from = seq + 1, "journal chain keyed from now on");
                }
            }
            Ok(())
        })
    }

    pub(crate) fn insert_session(
        &self,
        key: Option<&ChainKey>,
        s: &SessionStart,
        owner: Option<&str>,
        auth_failure: Option<&str>,
    ) -> Result<SessionId> {
        let now = now_ms();
        self.write(|tx| insert_session_tx(key, tx, s, owner, auth_failure, now))
    }

    pub(crate) fn session_ended(
        &self,
        key: Option<&ChainKey>,
        id: SessionId,
        reason: &str,
        stats: SessionStats,
    ) -> Result<()> {
        self.write(|tx| end_if_open(key, tx, id.0, now_ms(), reason, stats))
    }

    pub(crate) fn event(
        &self,
        key: Option<&ChainKey>,
        id: SessionId,
        at: i64,
        ev: &super::Event,
    ) -> Result<()> {
        self.write(|tx| {
            let ticket = session_ticket(tx, id.0)?;
            append(
                key,
                tx,
                at,
                Some(id.0),
                ticket.as_deref(),
                ev.kind(),
                &ev.details(),
            )?;
            Ok(())
        })
    }

    pub(crate) fn ticket_event(
        &self,
        key: Option<&ChainKey>,
        ticket: Option<&str>,
        at: i64,
        ev: &super::Event,
    ) -> Result<()> {
        self.write(|tx| {
            append(key, tx, at, None, ticket, ev.kind(), &ev.details())?;
            Ok(())
        })
    }

    pub(crate) fn head(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    // ---- tickets and notes ----

    pub(crate) fn ticket_status(&self, id: &str) -> Result<Option<TicketStatus>> {
        let s: Option<String> = self
            .conn()?
            .query_opt("SELECT status FROM tickets WHERE id = $1", &[&id])?
            .map(|r| r.get(0));
        Ok(s.map(|s| status(&s)))
    }

    pub(crate) fn tickets_closed_since(&self, cursor: Option<i64>) -> Result<(Vec<String>, i64)> {
        let mut c = self.conn()?;
        let head: i64 = c
            .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM events", &[])?
            .get(0);
        let Some(after) = cursor else {
            return Ok((Vec::new(), head));
        };
        let rows = c.query(
            "SELECT ticket, MIN(seq) AS first FROM events
             WHERE kind = 'ticket_closed' AND seq > $1 AND seq <= $2 AND ticket IS NOT NULL
             GROUP BY ticket ORDER BY first",
            &[&after, &head],
        )?;
        Ok((rows.iter().map(|r| r.get(0)).collect(), head))
    }

    pub(crate) fn open_ticket(
        &self,
        key: Option<&ChainKey>,
        id: &str,
        title: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        self.write(|tx| {
            let existing =
                tx.query_opt("SELECT title, status FROM tickets WHERE id = $1", &[&id])?;
            let created = match existing {
                None => {
                    tx.execute(
                        "INSERT INTO tickets (id, title, created_at) VALUES ($1, $2, $3)",
                        &[&id, &title.unwrap_or(""), &now],
                    )?;
                    append(
                        key,
                        tx,
                        now,
                        None,
                        Some(id),
                        "ticket_opened",
                        &json!({"title": title.unwrap_or("")}),
                    )?;
                    true
                }
                Some(r) => {
                    let (old_title, st): (String, String) = (r.get(0), r.get(1));
                    if st == "closed" {
                        tx.execute(
                            "UPDATE tickets SET status = 'open', closed_at = NULL WHERE id = $1",
                            &[&id],
                        )?;
                        append(key, tx, now, None, Some(id), "ticket_reopened", &json!({}))?;
                    }
                    if let Some(t) = title.filter(|t| *t != old_title) {
                        tx.execute("UPDATE tickets SET title = $2 WHERE id = $1", &[&id, &t])?;
                        append(
                            key,
                            tx,
                            now,
                            None,
                            Some(id),
                            "ticket_retitled",
                            &json!({"title": t}),
                        )?;
                    }
                    false
                }
            };
            super::kb_pg_index::rebuild(tx, id)?;
            Ok(created)
        })
    }

    pub(crate) fn close_ticket(
        &self,
        key: Option<&ChainKey>,
        id: &str,
        resolution: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE tickets SET status = 'closed', closed_at = $2,
                    resolution = COALESCE($3, resolution) WHERE id = $1",
                &[&id, &now, &resolution],
            )?;
            if n == 0 {
                return Err(JournalError::NoSuchTicket(id.into()));
            }
            let revoked = tx.execute(
                "UPDATE codes SET revoked_at = $2 WHERE ticket = $1 AND used_at IS NULL AND revoked_at IS NULL",
                &[&id, &now],
            )?;
            use sha2::Digest;
            append(
                key,
                tx,
                now,
                None,
                Some(id),
                "ticket_closed",
                &json!({
                    "resolution_sha256": resolution.map(|r| super::hex(&sha2::Sha256::digest(r.as_bytes()))),
                    "codes_revoked": revoked,
                }),
            )?;
            super::kb_pg_index::rebuild(tx, id)?;
            Ok(())
        })
    }

    pub(crate) fn add_note(
        &self,
        key: Option<&ChainKey>,
        ticket: &str,
        text: &str,
        author: Option<&str>,
    ) -> Result<i64> {
        let now = now_ms();
        self.write(|tx| {
            let exists: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM tickets WHERE id = $1)",
                    &[&ticket],
                )?
                .get(0);
            if !exists {
                return Err(JournalError::NoSuchTicket(ticket.into()));
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO notes (ticket, at, author, text) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&ticket, &now, &author, &text],
                )?
                .get(0);
            append(
                key,
                tx,
                now,
                None,
                Some(ticket),
                "note_added",
                &chain::note_details(id, ticket, now, text),
            )?;
            super::kb_pg_index::rebuild(tx, ticket)?;
            Ok(id)
        })
    }

    pub(crate) fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        let mut c = self.conn()?;
        let Some(r) = c.query_opt(
            "SELECT id, title, status, resolution, created_at, closed_at FROM tickets WHERE id = $1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let mut t = Ticket {
            id: r.get(0),
            title: r.get(1),
            status: status(&r.get::<_, String>(2)),
            resolution: r.get(3),
            created_at: r.get(4),
            closed_at: r.get(5),
            notes: Vec::new(),
            live_codes: 0,
        };
        t.notes = c
            .query(
                "SELECT id, at, author, text FROM notes WHERE ticket = $1 ORDER BY id",
                &[&id],
            )?
            .iter()
            .map(|r| Note {
                id: r.get(0),
                at: r.get(1),
                author: r.get(2),
                text: r.get(3),
            })
            .collect();
        t.live_codes = c
            .query_one(
                "SELECT COUNT(*) FROM codes WHERE ticket = $1 AND used_at IS NULL
                 AND revoked_at IS NULL AND expires_at > $2",
                &[&id, &now_ms()],
            )?
            .get::<_, i64>(0) as u64;
        Ok(Some(t))
    }

    pub(crate) fn sessions(&self, ticket: Option<&str>) -> Result<Vec<SessionRow>> {
        let rows = self.conn()?.query(
            "SELECT id, ticket, peer, direction, security, credential, technician,
                    can_view, can_keys, can_pointer, can_clipboard, consent,
                    started_at, ended_at, end_reason, bytes_in, bytes_out, updates_sent
             FROM sessions WHERE $1::TEXT IS NULL OR ticket = $1 ORDER BY id DESC",
            &[&ticket],
        )?;
        Ok(rows
            .iter()
            .map(|r| SessionRow {
                id: SessionId(r.get(0)),
                ticket: r.get(1),
                peer: r.get(2),
                direction: r.get(3),
                security: r.get(4),
                credential: r.get(5),
                technician: r.get(6),
                rights: Rights {
                    view: r.get(7),
                    keys: r.get(8),
                    pointer: r.get(9),
                    clipboard: r.get(10),
                },
                consent: r.get(11),
                started_at: r.get(12),
                ended_at: r.get(13),
                end_reason: r.get(14),
                stats: SessionStats {
                    bytes_in: r.get::<_, i64>(15) as u64,
                    bytes_out: r.get::<_, i64>(16) as u64,
                    updates_sent: r.get::<_, i64>(17) as u64,
                },
            })
            .collect())
    }

    pub(crate) fn events(
        &self,
        session: Option<i64>,
        ticket: Option<&str>,
    ) -> Result<Vec<EventRow>> {
        let rows = self.conn()?.query(
            "SELECT seq, at, session, ticket, kind, details FROM events
             WHERE ($1::BIGINT IS NULL OR session = $1) AND ($2::TEXT IS NULL OR ticket = $2)
             ORDER BY seq",
            &[&session, &ticket],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let d: String = r.get(5);
                EventRow {
                    seq: r.get(0),
                    at: r.get(1),
                    session: r.get(2),
                    ticket: r.get(3),
                    kind: r.get(4),
                    details: serde_json::from_str(&d).unwrap_or(Value::String(d)),
                }
            })
            .collect())
    }

    // ---- one-time codes ----

    pub(crate) fn issue_code(
        &self,
        key: Option<&ChainKey>,
        row: &mut CodeRow,
        max_live: i64,
    ) -> Result<()> {
        self.write(|tx| {
            let st: Option<String> = tx
                .query_opt("SELECT status FROM tickets WHERE id = $1", &[&row.ticket])?
                .map(|r| r.get(0));
            match st.as_deref() {
                None => return Err(JournalError::NoSuchTicket(row.ticket.clone())),
                Some("closed") => return Err(JournalError::TicketClosed(row.ticket.clone())),
                _ => {}
            }
            let live: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM codes WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
                    &[&row.created_at],
                )?
                .get(0);
            if live >= max_live {
                return Err(JournalError::Invalid(format!(
                    "{live} one-time codes are live, the most ticketvnc checks; \
                     close tickets or let codes expire first"
                )));
            }
            row.id = tx
                .query_one(
                    "INSERT INTO codes (ticket, nonce, salt, hash, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &row.ticket,
                        &row.nonce,
                        &row.salt,
                        &row.hash,
                        &row.created_at,
                        &row.expires_at,
                    ],
                )?
                .get(0);
            append(
                key,
                tx,
                row.created_at,
                None,
                Some(&row.ticket),
                "code_issued",
                &json!({"code_id": row.id, "expires_at": row.expires_at, "row_sha256": row.digest()}),
            )?;
            Ok(())
        })
    }

    pub(crate) fn codes_generation(&self) -> Result<i64> {
        Ok(self
            .conn()?
            .query_one("SELECT value FROM counters WHERE name = 'codes'", &[])?
            .get(0))
    }

    /// Live code rows (newest first, at most `max`).
    pub(crate) fn live_code_rows(&self, max: i64) -> Result<Vec<CodeRow>> {
        let rows = self.conn()?.query(
            "SELECT c.id, c.ticket, c.nonce, c.salt, c.hash, c.created_at, c.expires_at FROM codes c
             JOIN tickets t ON t.id = c.ticket
             WHERE c.used_at IS NULL AND c.revoked_at IS NULL AND c.expires_at > $1
               AND t.status = 'open'
             ORDER BY c.id DESC LIMIT $2",
            &[&now_ms(), &max],
        )?;
        Ok(rows.iter().map(code_row).collect())
    }

    /// Marks the code used if it is still live, unchanged and backed by
    /// the chain. True: this caller won it.
    pub(crate) fn use_code(&self, key: Option<&ChainKey>, row: &CodeRow) -> Result<bool> {
        let now = now_ms();
        self.write(|tx| {
            let current = tx
                .query_opt(
                    "SELECT c.id, c.ticket, c.nonce, c.salt, c.hash, c.created_at, c.expires_at
                     FROM codes c JOIN tickets t ON t.id = c.ticket
                     WHERE c.id = $1 AND c.used_at IS NULL AND c.revoked_at IS NULL
                       AND c.expires_at > $2 AND t.status = 'open'
                     FOR UPDATE OF c",
                    &[&row.id, &now],
                )?
                .map(|r| code_row(&r));
            let Some(current) = current.filter(|c| c == row) else {
                return Ok(false);
            };
            if let Some(why) = chain_disagrees(tx, &current)? {
                tracing::warn!(
                    code_id = row.id,
                    ticket = %row.ticket,
                    why,
                    "one-time code refused: its row disagrees with the journal chain (edited outside ticketvnc?)"
                );
                return Ok(false);
            }
            let used_at = now_ms();
            let n = tx.execute(
                "UPDATE codes SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
                &[&row.id, &used_at],
            )?;
            if n != 1 {
                return Ok(false);
            }
            append(
                key,
                tx,
                used_at,
                None,
                Some(&row.ticket),
                "code_used",
                &json!({"code_id": row.id, "used_at": used_at}),
            )?;
            Ok(true)
        })
    }

    /// The fingerprint of the code key recorded in the database, recording
    /// `check` if none is yet. Returns the recorded one.
    pub(crate) fn code_key_check(&self, check: Option<i64>) -> Result<Option<i64>> {
        let mut c = self.conn()?;
        if let Some(v) = check {
            c.execute(
                "INSERT INTO counters (name, value) VALUES ('code_key_check', $1)
                 ON CONFLICT DO NOTHING",
                &[&v],
            )?;
        }
        Ok(c.query_opt(
            "SELECT value FROM counters WHERE name = 'code_key_check'",
            &[],
        )?
        .map(|r| r.get(0)))
    }

    // ---- verification ----

    /// Checks the chain and rows of one consistent snapshot with the same
    /// code as for an sqlite file (see the module documentation).
    pub(crate) fn verify(&self, key: Option<&ChainKey>) -> Result<super::VerifyReport> {
        let mut mem = rusqlite::Connection::open_in_memory()?;
        super::schema::migrate(&mut mem)?;
        // What is checked is what the database holds, also rows a
        // superuser edited past the foreign keys (an event whose session
        // row was deleted): verification names them, the copy must not
        // refuse them.
        mem.execute_batch("PRAGMA foreign_keys = OFF")?;
        {
            let mut c = self.conn()?;
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let to = mem.transaction()?;
            super::copy_tables::pg_to_sqlite(&mut tx, &to)?;
            to.commit()?;
            tx.commit()?;
        }
        let tx = mem.transaction()?;
        let r = chain::verify(&tx, key)?;
        tx.commit()?;
        Ok(r)
    }
}

/// A connection holding the owner lock of `id`.
fn lock_owner(connector: &Connector, config: &Config, id: &str) -> Result<Client> {
    let mut c = connector.connect(config)?;
    c.execute(
        "SELECT pg_advisory_lock($1, hashtext($2))",
        &[&OWNER_NS, &id],
    )?;
    Ok(c)
}

fn status(s: &str) -> TicketStatus {
    if s == "closed" {
        TicketStatus::Closed
    } else {
        TicketStatus::Open
    }
}

fn code_row(r: &postgres::Row) -> CodeRow {
    CodeRow {
        id: r.get(0),
        ticket: r.get(1),
        nonce: r.get(2),
        salt: r.get(3),
        hash: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
    }
}

/// Appends one chained event inside a transaction that holds the chain
/// lock (see [`Pg::write`]). Same rows and hashes as `chain::append`.
pub(crate) fn append(
    key: Option<&ChainKey>,
    tx: &mut Transaction<'_>,
    at: i64,
    session: Option<i64>,
    ticket: Option<&str>,
    kind: &str,
    details: &Value,
) -> Result<i64> {
    let last = tx.query_opt(
        "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    let (prev_seq, prev_hash): (i64, String) = match last {
        Some(r) => (r.get(0), r.get(1)),
        None => (0, chain::GENESIS.to_string()),
    };
    if key.is_none() && prev_hash.starts_with(chain::KEYED) {
        return Err(JournalError::KeyRequired);
    }
    let seq = prev_seq + 1;
    let details = details.to_string();
    let hash = chain::row_hash(key, &prev_hash, seq, at, session, ticket, kind, &details);
    tx.execute(
        "INSERT INTO events (seq, at, session, ticket, kind, details, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&seq, &at, &session, &ticket, &kind, &details, &hash],
    )?;
    Ok(seq)
}

/// Inserts a session row and its `session_start` event (and, for a failed
/// authentication, its `auth_failure` and `session_end`) in `tx`.
pub(crate) fn insert_session_tx(
    key: Option<&ChainKey>,
    tx: &mut Transaction<'_>,
    s: &SessionStart,
    owner: Option<&str>,
    auth_failure: Option<&str>,
    now: i64,
) -> Result<SessionId> {
    if let Some(t) = &s.ticket {
        let n = tx.execute(
            "INSERT INTO tickets (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[t, &now],
        )?;
        if n == 1 {
            append(
                key,
                tx,
                now,
                None,
                Some(t),
                "ticket_opened",
                &json!({"title": "", "by": "session"}),
            )?;
        }
    }
    let id: i64 = tx
        .query_one(
            "INSERT INTO sessions (ticket, peer, direction, security, credential, technician,
                can_view, can_keys, can_pointer, can_clipboard, consent, started_at, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            &[
                &s.ticket,
                &s.peer,
                &s.direction.as_str(),
                &truncate(&s.security, 64),
                &truncate(&s.credential, 128),
                &s.technician.as_deref().map(|t| truncate(t, 128)),
                &s.rights.view,
                &s.rights.keys,
                &s.rights.pointer,
                &s.rights.clipboard,
                &s.consent.as_str(),
                &now,
                &owner,
            ],
        )?
        .get(0);
    let (start, _) = session_snapshot(tx, id)?;
    append(
        key,
        tx,
        now,
        Some(id),
        s.ticket.as_deref(),
        "session_start",
        &start,
    )?;
    if let Some(reason) = auth_failure {
        let ev = super::Event::AuthFailure {
            reason: reason.into(),
        };
        append(
            key,
            tx,
            now,
            Some(id),
            s.ticket.as_deref(),
            ev.kind(),
            &ev.details(),
        )?;
        end_in_tx(key, tx, id, now, "auth failed", SessionStats::default())?;
    }
    Ok(SessionId(id))
}

/// The ticket of a session (error if there is no such session).
pub(crate) fn session_ticket(tx: &mut Transaction<'_>, id: i64) -> Result<Option<String>> {
    tx.query_opt("SELECT ticket FROM sessions WHERE id = $1", &[&id])?
        .map(|r| r.get(0))
        .ok_or(JournalError::NoSuchSession(id))
}

/// Ends a session that is still open (an ended one is left alone).
pub(crate) fn end_if_open(
    key: Option<&ChainKey>,
    tx: &mut Transaction<'_>,
    id: i64,
    at: i64,
    reason: &str,
    stats: SessionStats,
) -> Result<()> {
    let ended: Option<i64> = tx
        .query_opt("SELECT ended_at FROM sessions WHERE id = $1", &[&id])?
        .ok_or(JournalError::NoSuchSession(id))?
        .get(0);
    if ended.is_none() {
        end_in_tx(key, tx, id, at, &truncate(reason, 200), stats)?;
    }
    Ok(())
}

fn end_in_tx(
    key: Option<&ChainKey>,
    tx: &mut Transaction<'_>,
    id: i64,
    now: i64,
    reason: &str,
    stats: SessionStats,
) -> Result<()> {
    tx.execute(
        "UPDATE sessions SET ended_at = $2, end_reason = $3, bytes_in = $4, bytes_out = $5,
            updates_sent = $6, owner = NULL WHERE id = $1",
        &[
            &id,
            &now,
            &reason,
            &(stats.bytes_in as i64),
            &(stats.bytes_out as i64),
            &(stats.updates_sent as i64),
        ],
    )?;
    let ticket = session_ticket(tx, id)?;
    let (_, end) = session_snapshot(tx, id)?;
    append(
        key,
        tx,
        now,
        Some(id),
        ticket.as_deref(),
        "session_end",
        &end,
    )?;
    Ok(())
}

/// The JSON a session row must match in its `session_start` and
/// `session_end` events: the same values as `rows::session_snapshot`.
fn session_snapshot(tx: &mut Transaction<'_>, id: i64) -> Result<(Value, Value)> {
    let r = tx.query_one(
        "SELECT id, ticket, peer, direction, security, credential, technician,
                can_view, can_keys, can_pointer, can_clipboard, consent, started_at,
                ended_at, end_reason, bytes_in, bytes_out, updates_sent
         FROM sessions WHERE id = $1",
        &[&id],
    )?;
    let start = json!({
        "id": r.get::<_, i64>(0),
        "ticket": r.get::<_, Option<String>>(1),
        "peer": r.get::<_, Option<String>>(2),
        "direction": r.get::<_, String>(3),
        "security": r.get::<_, String>(4),
        "credential": r.get::<_, String>(5),
        "technician": r.get::<_, Option<String>>(6),
        "rights": {
            "view": r.get::<_, bool>(7),
            "keys": r.get::<_, bool>(8),
            "pointer": r.get::<_, bool>(9),
            "clipboard": r.get::<_, bool>(10),
        },
        "consent": r.get::<_, String>(11),
        "started_at": r.get::<_, i64>(12),
    });
    let end = json!({
        "ended_at": r.get::<_, Option<i64>>(13),
        "end_reason": r.get::<_, Option<String>>(14),
        "bytes_in": r.get::<_, i64>(15),
        "bytes_out": r.get::<_, i64>(16),
        "updates_sent": r.get::<_, i64>(17),
    });
    Ok((start, end))
}

/// `codes::chain_disagrees` on PostgreSQL (same rules).
fn chain_disagrees(tx: &mut Transaction<'_>, row: &CodeRow) -> Result<Option<&'static str>> {
    let issued = tx.query_opt(
        "SELECT seq, details FROM events WHERE kind = 'code_issued' AND ticket = $1
           AND (details::jsonb ->> 'code_id')::BIGINT = $2 ORDER BY seq LIMIT 1",
        &[&row.ticket, &row.id],
    )?;
    let Some(issued) = issued else {
        return Ok(Some("no code_issued event"));
    };
    let (seq, details): (i64, String) = (issued.get(0), issued.get(1));
    let d: Value = serde_json::from_str(&details).unwrap_or_default();
    let matches = match d["row_sha256"].as_str() {
        Some(h) => h == row.digest(),
        None => d["expires_at"].as_i64() == Some(row.expires_at),
    };
    if !matches {
        return Ok(Some("differs from its code_issued event"));
    }
    let used: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events WHERE kind = 'code_used' AND ticket = $1
               AND (details::jsonb ->> 'code_id')::BIGINT = $2)",
            &[&row.ticket, &row.id],
        )?
        .get(0);
    if used {
        return Ok(Some("a code_used event says it was used"));
    }
    let closed: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events WHERE kind = 'ticket_closed' AND ticket = $1
               AND seq > $2)",
            &[&row.ticket, &seq],
        )?
        .get(0);
    if closed {
        return Ok(Some("its ticket was closed after it was issued (revoked)"));
    }
    Ok(None)
}
