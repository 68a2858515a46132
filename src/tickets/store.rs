//! The sqlite store: the `Journal` handle, opening (file modes, WAL,
//! migrations, the chain key), appending chained events and verifying.
//! What it records lives beside it: sessions and events (events.rs),
//! tickets (ticket.rs), notes (notes.rs), crash recovery (recovery.rs);
//! row types in rows.rs, file helpers in files.rs.

use super::chain;
use super::files::{create_private_dir, io_err, private_file, sibling, OwnerLock};
use super::{now_ms, schema, JournalError, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long a writer waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The journal. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Journal {
    conn: Mutex<Connection>,
    pub(super) path: PathBuf,
    pub(super) owner: Mutex<Option<OwnerLock>>,
    pub(crate) secret: OnceLock<[u8; 32]>,
    /// The live one-time codes, ready to check (see codes.rs).
    pub(crate) live_codes: Mutex<Option<super::live_codes::LiveCodes>>,
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
}
