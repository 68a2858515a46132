//! Schema and migrations. `PRAGMA user_version` is the number of migrations
//! applied; each migration runs in its own IMMEDIATE transaction together
//! with the version bump, so two processes opening an old database at once
//! cannot both apply it.

use super::{JournalError, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Migration `i` brings the schema from version `i` to `i + 1`.
/// Never edit a released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are Unix milliseconds (UTC).
    r#"
    CREATE TABLE tickets (
        id          TEXT PRIMARY KEY NOT NULL,      -- the helpdesk's ticket number
        title       TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
        resolution  TEXT,
        created_at  INTEGER NOT NULL,
        closed_at   INTEGER
    );
    CREATE TABLE sessions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        ticket        TEXT REFERENCES tickets(id),
        peer          TEXT,
        direction     TEXT NOT NULL CHECK (direction IN ('inbound', 'reverse', 'repeater')),
        security      TEXT NOT NULL,
        credential    TEXT NOT NULL,
        technician    TEXT,
        can_view      INTEGER NOT NULL,
        can_keys      INTEGER NOT NULL,
        can_pointer   INTEGER NOT NULL,
        can_clipboard INTEGER NOT NULL,
        consent       TEXT NOT NULL,
        started_at    INTEGER NOT NULL,
        ended_at      INTEGER,
        end_reason    TEXT,
        bytes_in      INTEGER NOT NULL DEFAULT 0,
        bytes_out     INTEGER NOT NULL DEFAULT 0,
        updates_sent  INTEGER NOT NULL DEFAULT 0,
        owner         TEXT                         -- process that holds it open (crash recovery)
    );
    CREATE INDEX sessions_ticket ON sessions(ticket);
    CREATE INDEX sessions_open ON sessions(owner) WHERE ended_at IS NULL;
    -- Hash-chained log: hash = SHA-256(previous hash || canonical row), see chain.rs.
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY NOT NULL,
        at       INTEGER NOT NULL,
        session  INTEGER REFERENCES sessions(id),
        ticket   TEXT,
        kind     TEXT NOT NULL,
        details  TEXT NOT NULL,                      -- JSON object
        hash     TEXT NOT NULL
    );
    CREATE INDEX events_session ON events(session);
    CREATE TABLE notes (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        ticket  TEXT NOT NULL REFERENCES tickets(id),
        at      INTEGER NOT NULL,
        author  TEXT,
        text    TEXT NOT NULL
    );
    CREATE INDEX notes_ticket ON notes(ticket);
    -- One-time codes: the code itself is never stored. It is
    -- HMAC(server secret, nonce) rendered in the code alphabet; `hash` is a
    -- keyed, salted hash of the code (see codes.rs).
    CREATE TABLE codes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        ticket      TEXT NOT NULL REFERENCES tickets(id),
        nonce       BLOB NOT NULL UNIQUE,
        salt        BLOB NOT NULL,
        hash        BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER,
        revoked_at  INTEGER
    );
    CREATE INDEX codes_live ON codes(expires_at) WHERE used_at IS NULL AND revoked_at IS NULL;
    -- Knowledge base: one row per ticket, rebuilt when its title, notes or
    -- resolution change. rowid = tickets.rowid.
    CREATE VIRTUAL TABLE kb USING fts5(
        ticket UNINDEXED, title, notes, resolution,
        tokenize = 'porter unicode61 remove_diacritics 2'
    );
    "#,
    // 2: technician accounts (VeNCrypt Plain). `hash` is an Argon2id PHC
    // string; the password itself is never stored.
    r#"
    CREATE TABLE technicians (
        name        TEXT PRIMARY KEY NOT NULL,
        hash        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    "#,
    // 3 (issue 8): a generation counter that every change to `codes` (and
    // to a ticket's status) bumps, by trigger, so `serve` can keep the live
    // codes in memory and notice any change, even one made with the sqlite3
    // shell; an index for looking events up by kind (code and ticket
    // state checks, closed-ticket polling). Event rows written from this
    // version on carry more (code_issued: a digest of the code row;
    // code_used: used_at; see chain.rs); older rows verify as before.
    r#"
    CREATE TABLE counters (
        name   TEXT PRIMARY KEY NOT NULL,
        value  INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('codes', 0);
    CREATE TRIGGER codes_changed_insert AFTER INSERT ON codes
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'codes'; END;
    CREATE TRIGGER codes_changed_update AFTER UPDATE ON codes
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'codes'; END;
    CREATE TRIGGER codes_changed_delete AFTER DELETE ON codes
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'codes'; END;
    CREATE TRIGGER tickets_changed_update AFTER UPDATE OF status ON tickets
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'codes'; END;
    CREATE TRIGGER tickets_changed_delete AFTER DELETE ON tickets
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'codes'; END;
    CREATE INDEX events_kind ON events(kind, ticket);
    "#,
    // 4 (issue 17): the knowledge base indexes the terms of the analyzer
    // (analyzer.rs: folding, German and English stems) instead of FTS5's
    // porter tokenizer; `kb_vocab` holds every folded word seen, with a
    // trigram index for compound parts and typo candidates; `ticket_lang`
    // is the language a technician set for a ticket. All of it is derived
    // or a search hint, not evidence: none of it is hash-chained. The rows
    // are filled by the reindex that `migrate` runs in the same
    // transaction; `kb_analyzer` is the analyzer version they were built
    // with (a newer analyzer reindexes on open).
    r#"
    DROP TABLE kb;
    CREATE VIRTUAL TABLE kb USING fts5(
        ticket UNINDEXED, title, notes, resolution,
        tokenize = 'unicode61 remove_diacritics 0'
    );
    CREATE TABLE kb_vocab (
        term  TEXT PRIMARY KEY NOT NULL
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE kb_vocab_tri USING fts5(term, tokenize = 'trigram');
    CREATE TABLE ticket_lang (
        ticket  TEXT PRIMARY KEY NOT NULL REFERENCES tickets(id),
        lang    TEXT NOT NULL CHECK (lang IN ('de', 'en'))
    );
    INSERT INTO counters (name, value) VALUES ('kb_analyzer', 0);
    "#,
    // 5 (issue 15): nothing on sqlite. On PostgreSQL it adds the knowledge
    // base's tsvectors in the server's German and English configurations
    // (kb_pg_index.rs); FTS5 has no such dictionaries, and both backends keep
    // one migration numbering.
    "-- nothing on sqlite",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if v > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                found: v,
                known: SCHEMA_VERSION,
            });
        }
        if v == SCHEMA_VERSION {
            break;
        }
        tx.execute_batch(MIGRATIONS[v as usize])?;
        if v + 1 == 4 {
            // Fill the new index in the same transaction: no other process
            // ever sees a version-4 journal with an empty knowledge base.
            reindex(&tx)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))?;
        tx.commit()?;
        tracing::info!(version = v + 1, "journal schema migrated");
    }
    reindex_if_stale(conn)
}

/// Rebuilds the knowledge base when it was built by another analyzer
/// version (or not at all, right after migration 4).
fn reindex_if_stale(conn: &mut Connection) -> Result<()> {
    let stale = |c: &Connection| -> Result<bool> {
        let v: Option<i64> = c
            .query_row(
                "SELECT value FROM counters WHERE name = 'kb_analyzer'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v != Some(super::analyzer::ANALYZER_VERSION))
    };
    if !stale(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if stale(&tx)? {
        reindex(&tx)?;
        tx.commit()?;
    }
    Ok(())
}

fn reindex(tx: &Connection) -> Result<()> {
    let n = super::kb_index::reindex_all(tx)?;
    tx.execute(
        "INSERT OR REPLACE INTO counters (name, value) VALUES ('kb_analyzer', ?1)",
        [super::analyzer::ANALYZER_VERSION],
    )?;
    // A new journal has nothing to reindex: say nothing then.
    if n > 0 {
        tracing::info!(tickets = n, "knowledge base reindexed");
    }
    Ok(())
}
