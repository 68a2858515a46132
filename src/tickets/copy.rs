//! `ticketvnc db copy`: a single-machine sqlite journal into the team
//! database, or back. The tables and the row-for-row copies (also used
//! for the snapshot that PostgreSQL verification checks with the sqlite
//! code) are in copy_tables.rs.
//!
//! Every evidence table is copied as it is, hashes included, so the copy
//! verifies exactly when the original does; the knowledge base is derived
//! data and is rebuilt on the target, not copied.

use super::copy_tables::{pg_to_sqlite, sqlite_to_pg};
use super::{DbTarget, JournalError, Result};
use std::time::{Duration, Instant};

/// What `db copy` did.
#[derive(Clone, Debug)]
pub struct CopyReport {
    /// Rows copied (all evidence tables).
    pub rows: u64,
    /// Event rows among them.
    pub events: u64,
    pub elapsed: Duration,
}

/// Copies a whole journal into an empty one (`ticketvnc db copy`). The
/// source is read in one snapshot and never changed; the target is
/// created and migrated if needed and must have no events yet. Both must
/// be at this build's schema version (run `db migrate` on an older
/// source first). sqlite to PostgreSQL and back.
pub fn copy_journal(from: &DbTarget, to: &DbTarget) -> Result<CopyReport> {
    let started = Instant::now();
    let rows;
    match (from, to) {
        (DbTarget::Sqlite(src), DbTarget::Postgres(url)) => {
            let src_conn = open_sqlite_source(src)?;
            let pg = super::pg::Pg::new(url)?;
            pg.migrate()?;
            let mut c = pg.conn()?;
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&super::pg::CHAIN_LOCK],
            )?;
            ensure_empty_pg(&mut tx, &pg)?;
            let st = src_conn.unchecked_transaction()?;
            rows = sqlite_to_pg(&st, &mut tx)?;
            // The knowledge base is derived data: built from the copy.
            super::kb_pg_index::reindex_tx(&mut tx)?;
            st.commit()?;
            tx.commit()?;
        }
        (DbTarget::Postgres(url), DbTarget::Sqlite(dst)) => {
            let pg = super::pg::Pg::new(url)?;
            check_pg_version(&pg)?;
            let j = super::Journal::open(dst)?;
            let mut conn = j.conn();
            let to = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let has: bool =
                to.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?;
            if has {
                return Err(JournalError::Invalid(format!(
                    "{} already has events: db copy only fills an empty journal",
                    dst.display()
                )));
            }
            to.execute_batch(
                "DELETE FROM ticket_lang; DELETE FROM codes; DELETE FROM notes;
                 DELETE FROM sessions; DELETE FROM technicians; DELETE FROM tickets;",
            )?;
            let mut c = pg.conn()?;
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            rows = pg_to_sqlite(&mut tx, &to)?;
            tx.commit()?;
            super::kb_index::reindex_all(&to)?;
            to.commit()?;
        }
        _ => return Err(JournalError::Invalid(
            "db copy goes from sqlite to PostgreSQL or back; for sqlite to sqlite copy the file"
                .into(),
        )),
    }
    let events = match to {
        DbTarget::Postgres(url) => super::pg::Pg::new(url)?.head()?.map_or(0, |h| h.0 as u64),
        DbTarget::Sqlite(p) => super::Journal::open(p)?.head()?.map_or(0, |h| h.0 as u64),
    };
    Ok(CopyReport {
        rows,
        events,
        elapsed: started.elapsed(),
    })
}

fn open_sqlite_source(path: &std::path::Path) -> Result<rusqlite::Connection> {
    if !path.is_file() {
        return Err(JournalError::NoJournal(path.to_path_buf()));
    }
    let c = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(super::store::BUSY_TIMEOUT)?;
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|_| JournalError::NotAJournal(path.to_path_buf()))?;
    if v != super::schema::SCHEMA_VERSION {
        return Err(JournalError::Invalid(format!(
            "{} has schema version {v}, this ticketvnc writes {}: run `ticketvnc --db {} db migrate` first",
            path.display(),
            super::schema::SCHEMA_VERSION,
            path.display()
        )));
    }
    Ok(c)
}

fn check_pg_version(pg: &super::pg::Pg) -> Result<()> {
    let v = pg.schema_version()?;
    if v != super::pg::SCHEMA_VERSION {
        return Err(JournalError::Invalid(format!(
            "{} has schema version {v}, this ticketvnc writes {}: run `db migrate` on it first",
            pg.shown(),
            super::pg::SCHEMA_VERSION
        )));
    }
    Ok(())
}

fn ensure_empty_pg(tx: &mut postgres::Transaction<'_>, pg: &super::pg::Pg) -> Result<()> {
    let used: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM tickets)
                 OR EXISTS (SELECT 1 FROM sessions) OR EXISTS (SELECT 1 FROM technicians)",
            &[],
        )?
        .get(0);
    if used {
        return Err(JournalError::Invalid(format!(
            "{} is not empty: db copy only fills an empty journal",
            pg.shown()
        )));
    }
    Ok(())
}
