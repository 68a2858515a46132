//! Tamper evidence. Every `events` row carries
//! `hash = hex(SHA-256(previous row's hash (hex) || "\n" || canonical row))`
//! where the canonical row is the compact JSON array
//! `[seq, at, session, ticket, kind, details]` (details as the exact stored
//! text). The first row chains from 64 zeros. Session start and end are
//! events too (`session_start`, `session_end`, carrying every column of the
//! session row), and so are ticket opening/closing, code issuing and notes,
//! so [`verify`] also compares the `sessions` and `notes` rows with the
//! events that recorded them.
//!
//! What it cannot see: removing the newest rows (the tail) leaves a valid
//! shorter chain. Keep the head hash that `sessions verify` prints (or that
//! hooks deliver) somewhere else to detect that.

use super::store::session_snapshot;
use super::{hex, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn row_hash(
    prev: &str,
    seq: i64,
    at: i64,
    session: Option<i64>,
    ticket: Option<&str>,
    kind: &str,
    details: &str,
) -> String {
    let canonical = serde_json::json!([seq, at, session, ticket, kind, details]).to_string();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex(&h.finalize())
}

/// Appends one event inside the caller's (IMMEDIATE) transaction, so the
/// read of the previous hash and the insert are atomic across processes.
pub(crate) fn append(
    tx: &Connection,
    at: i64,
    session: Option<i64>,
    ticket: Option<&str>,
    kind: &str,
    details: &serde_json::Value,
) -> Result<i64> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
    let seq = prev_seq + 1;
    let details = details.to_string();
    let hash = row_hash(&prev_hash, seq, at, session, ticket, kind, &details);
    tx.execute(
        "INSERT INTO events (seq, at, session, ticket, kind, details, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, session, ticket, kind, details, hash],
    )?;
    Ok(seq)
}

/// The first row found broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// `events`, `sessions`, `notes` or `technicians`.
    pub table: &'static str,
    /// `events.seq`, `sessions.id`, `notes.id` or `technicians.rowid`
    /// (0 for an account whose row was deleted).
    pub row: i64,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.table == "events" { "seq" } else { "id" };
        write!(
            f,
            "{} row {}={}: {}",
            self.table, key, self.row, self.reason
        )
    }
}

/// Result of [`Journal::verify`](super::Journal::verify).
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Event rows checked.
    pub events: u64,
    /// Hash of the newest event (GENESIS when empty): record it elsewhere
    /// to detect truncation later.
    pub head: String,
    pub broken: Option<Broken>,
}

pub(crate) fn verify(conn: &Connection) -> Result<VerifyReport> {
    let mut stmt = conn
        .prepare("SELECT seq, at, session, ticket, kind, details, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    let mut prev_seq = 0i64;
    let mut count = 0u64;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let hash: String = r.get(6)?;
        count += 1;
        if seq != prev_seq + 1 {
            return Ok(VerifyReport {
                events: count,
                head: prev,
                broken: Some(Broken {
                    table: "events",
                    row: seq,
                    reason: format!(
                        "sequence jumps from {prev_seq} to {seq}: row(s) deleted or renumbered"
                    ),
                }),
            });
        }
        let details: String = r.get(5)?;
        let expect = row_hash(
            &prev,
            seq,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, Option<String>>(3)?.as_deref(),
            &r.get::<_, String>(4)?,
            &details,
        );
        if expect != hash {
            return Ok(VerifyReport {
                events: count,
                head: prev,
                broken: Some(Broken {
                    table: "events",
                    row: seq,
                    reason: "hash does not match the row's content and the previous hash (row edited, or the row before it changed)".into(),
                }),
            });
        }
        prev = hash;
        prev_seq = seq;
    }
    drop(rows);
    drop(stmt);
    let broken = match check_sessions(conn)? {
        Some(b) => Some(b),
        None => match check_notes(conn)? {
            Some(b) => Some(b),
            None => match check_technicians(conn)? {
                Some(b) => Some(b),
                None => check_deleted(conn)?,
            },
        },
    };
    Ok(VerifyReport {
        events: count,
        head: prev,
        broken,
    })
}

/// Every session row must equal what its `session_start` / `session_end`
/// events recorded (the events are chained; the row is not).
fn check_sessions(conn: &Connection) -> Result<Option<Broken>> {
    let mut stmt = conn.prepare("SELECT id, ended_at FROM sessions ORDER BY id")?;
    let ids: Vec<(i64, Option<i64>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, ended) in ids {
        let (start_row, end_row) = session_snapshot(conn, id)?;
        let bad = |reason: &str| {
            Ok(Some(Broken {
                table: "sessions",
                row: id,
                reason: reason.into(),
            }))
        };
        let ev = |kind: &str| -> Result<Option<serde_json::Value>> {
            let d: Option<String> = conn
                .query_row(
                    "SELECT details FROM events WHERE session = ?1 AND kind = ?2 ORDER BY seq LIMIT 1",
                    params![id, kind],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(d.and_then(|d| serde_json::from_str(&d).ok()))
        };
        match ev("session_start")? {
            Some(v) if v == start_row => {}
            Some(_) => return bad("differs from its session_start event (row edited)"),
            None => return bad("has no session_start event (row inserted outside ticketvnc)"),
        }
        match (ended, ev("session_end")?) {
            (None, None) => {}
            (Some(_), Some(v)) if v == end_row => {}
            (Some(_), Some(_)) => return bad("differs from its session_end event (row edited)"),
            (Some(_), None) => return bad("is ended but has no session_end event"),
            (None, Some(_)) => return bad("has a session_end event but is open (row edited)"),
        }
    }
    Ok(None)
}

fn check_notes(conn: &Connection) -> Result<Option<Broken>> {
    // Every note_added event, by note id (one pass, not one scan per note).
    let mut recorded = std::collections::HashMap::new();
    {
        let mut st = conn.prepare("SELECT details FROM events WHERE kind = 'note_added'")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let d: String = r.get(0)?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&d) {
                if let Some(id) = v["note"].as_i64() {
                    recorded.entry(id).or_insert(v);
                }
            }
        }
    }
    let mut stmt = conn.prepare("SELECT id, ticket, at, text FROM notes ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (id, ticket, at, text): (i64, String, i64, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if recorded.get(&id) != Some(&note_details(id, &ticket, at, &text)) {
            return Ok(Some(Broken {
                table: "notes",
                row: id,
                reason:
                    "differs from its note_added event (row edited or inserted outside ticketvnc)"
                        .into(),
            }));
        }
    }
    Ok(None)
}

/// Every technician account must be what its latest `technician_added`
/// event recorded (name, time, SHA-256 of the password hash), and every
/// account the chain says exists must have its row.
fn check_technicians(conn: &Connection) -> Result<Option<Broken>> {
    // name -> (seq, details of the latest technician_added, or None once removed)
    let mut state: std::collections::BTreeMap<String, (i64, Option<serde_json::Value>)> =
        Default::default();
    {
        let mut st = conn.prepare(
            "SELECT seq, kind, details FROM events
             WHERE kind IN ('technician_added', 'technician_removed') ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, kind, d): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&d) else {
                continue;
            };
            let Some(name) = v["name"].as_str().map(str::to_owned) else {
                continue;
            };
            let added = (kind == "technician_added").then_some(v);
            state.insert(name, (seq, added));
        }
    }
    let mut stmt =
        conn.prepare("SELECT rowid, name, created_at, hash FROM technicians ORDER BY rowid")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (rowid, name, at, phc): (i64, String, i64, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let expect = super::technicians::added_details(&name, at, &phc);
        match state.remove(&name) {
            Some((_, Some(v))) if v == expect => {}
            _ => {
                return Ok(Some(Broken {
                    table: "technicians",
                    row: rowid,
                    reason: format!(
                        "account {name:?} differs from its technician_added event \
                         (row edited or inserted outside ticketvnc)"
                    ),
                }))
            }
        }
    }
    if let Some((name, (seq, _))) = state.into_iter().find(|(_, (_, v))| v.is_some()) {
        return Ok(Some(Broken {
            table: "technicians",
            row: 0,
            reason: format!("account {name:?} deleted (recorded by events row seq={seq})"),
        }));
    }
    Ok(None)
}

/// A session or note recorded in the chain whose row is gone.
fn check_deleted(conn: &Connection) -> Result<Option<Broken>> {
    let gone = |sql: &str, table: &'static str| -> Result<Option<Broken>> {
        let r: Option<(i64, i64)> = conn
            .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(r.map(|(row, seq)| Broken {
            table,
            row,
            reason: format!("deleted (recorded by events row seq={seq})"),
        }))
    };
    if let Some(b) = gone(
        "SELECT e.session, e.seq FROM events e LEFT JOIN sessions s ON s.id = e.session
         WHERE e.kind = 'session_start' AND s.id IS NULL ORDER BY e.seq LIMIT 1",
        "sessions",
    )? {
        return Ok(Some(b));
    }
    gone(
        "SELECT json_extract(e.details, '$.note'), e.seq FROM events e
         LEFT JOIN notes n ON n.id = json_extract(e.details, '$.note')
         WHERE e.kind = 'note_added' AND n.id IS NULL ORDER BY e.seq LIMIT 1",
        "notes",
    )
}

/// The `note_added` event's details: the note's SHA-256, not its text.
pub(crate) fn note_details(id: i64, ticket: &str, at: i64, text: &str) -> serde_json::Value {
    serde_json::json!({
        "note": id,
        "ticket": ticket,
        "at": at,
        "sha256": hex(&Sha256::digest(text.as_bytes())),
    })
}
