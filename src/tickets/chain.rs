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

use super::rows::session_snapshot;
use super::{hex, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Prefix of the hash of a row chained with the journal key.
pub(crate) const KEYED: &str = "hmac:";

/// A secret key for the chain (`--journal-key-file`): rows are chained
/// with HMAC-SHA256 under it, so whoever edits the file without the key
/// cannot write hashes that verify. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    pub fn from_bytes(k: [u8; 32]) -> ChainKey {
        ChainKey(k)
    }

    /// Reads a key file: 64 hex digits on the first line (`openssl rand
    /// -hex 32`). On Unix the file must be readable and writable by its
    /// owner only (0600 or 0400); anything looser is refused, not
    /// tightened: a key others could read is not a secret any more.
    pub fn load(path: &std::path::Path) -> Result<ChainKey> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(super::files::io_err(path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = f
                .metadata()
                .map_err(super::files::io_err(path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(super::JournalError::KeyFileMode {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
        }
        let mut s = String::new();
        f.take(200)
            .read_to_string(&mut s)
            .map_err(super::files::io_err(path))?;
        let bytes = super::unhex(s.lines().next().unwrap_or("").trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| super::JournalError::BadKeyFile(path.to_path_buf()))?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Ok(ChainKey(k))
    }
}

impl Drop for ChainKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn row_hash(
    key: Option<&ChainKey>,
    prev: &str,
    seq: i64,
    at: i64,
    session: Option<i64>,
    ticket: Option<&str>,
    kind: &str,
    details: &str,
) -> String {
    let canonical = serde_json::json!([seq, at, session, ticket, kind, details]).to_string();
    match key {
        None => {
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(b"\n");
            h.update(canonical.as_bytes());
            hex(&h.finalize())
        }
        Some(k) => {
            use hmac::{KeyInit, Mac};
            let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&k.0)
                .expect("HMAC takes any key length");
            m.update(prev.as_bytes());
            m.update(b"\n");
            m.update(canonical.as_bytes());
            format!("{KEYED}{}", hex(&m.finalize().into_bytes()))
        }
    }
}

/// Appends one event inside the caller's (IMMEDIATE) transaction, so the
/// read of the previous hash and the insert are atomic across processes.
/// Once the chain is keyed, a writer without the key is refused (its
/// plain rows would look like a downgrade).
pub(crate) fn append(
    key: Option<&ChainKey>,
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
    if key.is_none() && prev_hash.starts_with(KEYED) {
        return Err(super::JournalError::KeyRequired);
    }
    let seq = prev_seq + 1;
    let details = details.to_string();
    let hash = row_hash(key, &prev_hash, seq, at, session, ticket, kind, &details);
    tx.execute(
        "INSERT INTO events (seq, at, session, ticket, kind, details, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, session, ticket, kind, details, hash],
    )?;
    Ok(seq)
}

/// (seq, at, session, ticket, kind, details, hash) of an events row.
type EventTuple = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    String,
    String,
    String,
);

/// With a key: does the newest row verify under it? (None: the chain is
/// not keyed yet.) Catches a wrong key file before anything is written.
pub(crate) fn head_matches_key(conn: &Connection, key: &ChainKey) -> Result<Option<bool>> {
    let mut st = conn.prepare(
        "SELECT seq, at, session, ticket, kind, details, hash FROM events ORDER BY seq DESC LIMIT 2",
    )?;
    let rows: Vec<EventTuple> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let Some(head) = rows.first() else {
        return Ok(None);
    };
    if !head.6.starts_with(KEYED) {
        return Ok(None);
    }
    let prev = rows.get(1).map(|r| r.6.as_str()).unwrap_or(GENESIS);
    let h = row_hash(
        Some(key),
        prev,
        head.0,
        head.1,
        head.2,
        head.3.as_deref(),
        &head.4,
        &head.5,
    );
    Ok(Some(h == head.6))
}

/// The first row found broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// `events`, `sessions`, `notes`, `technicians`, `tickets` or `codes`.
    pub table: &'static str,
    /// `events.seq`, `sessions.id`, `notes.id`, `technicians.rowid`,
    /// `tickets.rowid` or `codes.id` (0 for an account or ticket whose row
    /// was deleted).
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
    /// The first row chained with the journal key (HMAC), if any.
    pub keyed_from: Option<i64>,
    pub broken: Option<Broken>,
}

pub(crate) fn verify(conn: &Connection, key: Option<&ChainKey>) -> Result<VerifyReport> {
    let mut stmt = conn
        .prepare("SELECT seq, at, session, ticket, kind, details, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    let mut prev_seq = 0i64;
    let mut count = 0u64;
    let mut keyed_from = None;
    let report = |count, head: &str, keyed_from, row, reason: String| VerifyReport {
        events: count,
        head: head.to_owned(),
        keyed_from,
        broken: Some(Broken {
            table: "events",
            row,
            reason,
        }),
    };
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let hash: String = r.get(6)?;
        count += 1;
        if seq != prev_seq + 1 {
            return Ok(report(
                count,
                &prev,
                keyed_from,
                seq,
                format!("sequence jumps from {prev_seq} to {seq}: row(s) deleted or renumbered"),
            ));
        }
        let keyed = hash.starts_with(KEYED);
        if keyed && keyed_from.is_none() {
            keyed_from = Some(seq);
        }
        let row_key =
            match (keyed, key) {
                (false, _) if keyed_from.is_some() => {
                    return Ok(report(
                        count,
                        &prev,
                        keyed_from,
                        seq,
                        "plain SHA-256 row after keyed rows (rewritten without the key?)".into(),
                    ))
                }
                (false, _) => None,
                (true, Some(k)) => Some(k),
                (true, None) => return Ok(report(
                    count,
                    &prev,
                    keyed_from,
                    seq,
                    "the chain is keyed (HMAC) from here on: pass --journal-key-file to check it"
                        .into(),
                )),
            };
        let details: String = r.get(5)?;
        let expect = row_hash(
            row_key,
            &prev,
            seq,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, Option<String>>(3)?.as_deref(),
            &r.get::<_, String>(4)?,
            &details,
        );
        if expect != hash {
            let why = if keyed {
                "hash does not match the row's content and the previous hash under this key (row edited, the row before it changed, or another key)"
            } else {
                "hash does not match the row's content and the previous hash (row edited, or the row before it changed)"
            };
            return Ok(report(count, &prev, keyed_from, seq, why.into()));
        }
        prev = hash;
        prev_seq = seq;
    }
    if key.is_some() && keyed_from.is_none() {
        return Ok(report(
            count,
            &prev,
            None,
            0,
            "no row is keyed: this journal was never written with a key, or was rewritten without it".into(),
        ));
    }
    drop(rows);
    drop(stmt);
    let broken = match check_sessions(conn)? {
        Some(b) => Some(b),
        None => match check_notes(conn)? {
            Some(b) => Some(b),
            None => match check_technicians(conn)? {
                Some(b) => Some(b),
                None => match check_tickets(conn)? {
                    Some(b) => Some(b),
                    None => match check_codes(conn)? {
                        Some(b) => Some(b),
                        None => check_deleted(conn)?,
                    },
                },
            },
        },
    };
    Ok(VerifyReport {
        events: count,
        head: prev,
        keyed_from,
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
        let expect = super::rows::added_details(&name, at, &phc);
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

/// What the chain says a ticket row must hold.
#[derive(Debug, Default, PartialEq)]
struct TicketState {
    title: String,
    closed: bool,
    created_at: i64,
    closed_at: Option<i64>,
    resolution_sha256: Option<String>,
    seq: i64,
}

/// Every ticket row must be what its events (opened, reopened, retitled,
/// closed) leave it at: title, status, creation and closing time, and the
/// SHA-256 of the resolution; every ticket the chain opened must have its
/// row.
fn check_tickets(conn: &Connection) -> Result<Option<Broken>> {
    let mut state: std::collections::BTreeMap<String, TicketState> = Default::default();
    {
        let mut st = conn.prepare(
            "SELECT seq, at, ticket, kind, details FROM events
             WHERE kind IN ('ticket_opened', 'ticket_reopened', 'ticket_retitled', 'ticket_closed')
               AND ticket IS NOT NULL ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, at, ticket, kind, d): (i64, i64, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let v: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
            let t = state.entry(ticket).or_default();
            match kind.as_str() {
                "ticket_opened" => {
                    *t = TicketState {
                        title: v["title"].as_str().unwrap_or("").into(),
                        created_at: at,
                        seq,
                        ..Default::default()
                    }
                }
                "ticket_reopened" => {
                    t.closed = false;
                    t.closed_at = None;
                }
                "ticket_retitled" => t.title = v["title"].as_str().unwrap_or("").into(),
                _ => {
                    t.closed = true;
                    t.closed_at = Some(at);
                    if let Some(h) = v["resolution_sha256"].as_str() {
                        t.resolution_sha256 = Some(h.into());
                    }
                }
            }
        }
    }
    let mut stmt = conn.prepare(
        "SELECT rowid, id, title, status, resolution, created_at, closed_at FROM tickets ORDER BY rowid",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let rowid: i64 = r.get(0)?;
        let id: String = r.get(1)?;
        let resolution: Option<String> = r.get(4)?;
        let row = TicketState {
            title: r.get(2)?,
            closed: r.get::<_, String>(3)? == "closed",
            created_at: r.get(5)?,
            closed_at: r.get(6)?,
            resolution_sha256: resolution.map(|t| hex(&Sha256::digest(t.as_bytes()))),
            seq: 0,
        };
        let bad = |why: &str| {
            Ok(Some(Broken {
                table: "tickets",
                row: rowid,
                reason: format!("ticket {id:?} {why}"),
            }))
        };
        let Some(t) = state.remove(&id) else {
            return bad("has no ticket_opened event (row inserted outside ticketvnc)");
        };
        if t != (TicketState { seq: t.seq, ..row }) {
            return bad("differs from its events (title, status, times or resolution edited)");
        }
    }
    if let Some((id, t)) = state.into_iter().next() {
        return Ok(Some(Broken {
            table: "tickets",
            row: 0,
            reason: format!("ticket {id:?} deleted (opened by events row seq={})", t.seq),
        }));
    }
    Ok(None)
}

/// Every one-time code row must match its `code_issued` event, be marked
/// used exactly when a `code_used` event says so, and revoked exactly when
/// its ticket was closed after it was issued while it was unused; every
/// code the chain issued must have its row. A used code set back to unused
/// with the sqlite3 shell is reported here (and refused at login).
fn check_codes(conn: &Connection) -> Result<Option<Broken>> {
    use std::collections::HashMap;
    let mut issued: HashMap<i64, (i64, Option<String>, serde_json::Value)> = HashMap::new();
    let mut used: HashMap<i64, serde_json::Value> = HashMap::new();
    let mut closes: HashMap<String, Vec<i64>> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT seq, ticket, kind, details FROM events
             WHERE kind IN ('code_issued', 'code_used', 'ticket_closed') ORDER BY seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, ticket, kind, d): (i64, Option<String>, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let v: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
            match kind.as_str() {
                "ticket_closed" => closes
                    .entry(ticket.unwrap_or_default())
                    .or_default()
                    .push(seq),
                k => {
                    let Some(id) = v["code_id"].as_i64() else {
                        continue;
                    };
                    if k == "code_issued" {
                        issued.entry(id).or_insert((seq, ticket, v));
                    } else {
                        used.entry(id).or_insert(v);
                    }
                }
            }
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, ticket, nonce, salt, hash, created_at, expires_at, used_at, revoked_at
         FROM codes ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let row = super::rows::CodeRow {
            id: r.get(0)?,
            ticket: r.get(1)?,
            nonce: r.get(2)?,
            salt: r.get(3)?,
            hash: r.get(4)?,
            created_at: r.get(5)?,
            expires_at: r.get(6)?,
        };
        let (used_at, revoked_at): (Option<i64>, Option<i64>) = (r.get(7)?, r.get(8)?);
        let bad = |why: &str| {
            Ok(Some(Broken {
                table: "codes",
                row: row.id,
                reason: format!("code of ticket {:?} {why}", row.ticket),
            }))
        };
        let Some((seq, ticket, v)) = issued.remove(&row.id) else {
            return bad("has no code_issued event (row inserted outside ticketvnc)");
        };
        let same = ticket.as_deref() == Some(&row.ticket)
            && match v["row_sha256"].as_str() {
                Some(h) => h == row.digest(),
                None => v["expires_at"].as_i64() == Some(row.expires_at),
            };
        if !same {
            return bad("differs from its code_issued event (row edited)");
        }
        let use_event = used.get(&row.id);
        match (used_at, use_event) {
            (None, Some(_)) => {
                return bad("is marked unused but a code_used event says it was used (row edited)")
            }
            (Some(_), None) => return bad("is marked used but has no code_used event"),
            (Some(t), Some(e)) if e["used_at"].as_i64().is_some_and(|u| u != t) => {
                return bad("differs from its code_used event (row edited)")
            }
            _ => {}
        }
        let closed_after = closes
            .get(&row.ticket)
            .is_some_and(|v| v.iter().any(|&c| c > seq));
        let should_be_revoked = use_event.is_none() && closed_after;
        if revoked_at.is_some() != should_be_revoked {
            return bad(if should_be_revoked {
                "was revoked when its ticket was closed but is not marked revoked (row edited)"
            } else {
                "is marked revoked but no ticket_closed event revoked it (row edited)"
            });
        }
    }
    if let Some((id, (seq, _, _))) = issued.into_iter().min_by_key(|(_, (s, _, _))| *s) {
        return Ok(Some(Broken {
            table: "codes",
            row: id,
            reason: format!("deleted (recorded by events row seq={seq})"),
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

#[cfg(test)]
mod tests {
    use super::super::Journal;
    use rusqlite::params;
    use serde_json::json;

    /// Rows as ticketvnc wrote them before schema 3 (code_issued with the
    /// expiry only, code_used without its time) still verify, and such an
    /// unused code is still checked on what its event recorded.
    #[test]
    fn rows_written_before_schema_3_verify_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("old.db")).unwrap();
        {
            let mut c = j.conn();
            let tx = c.transaction().unwrap();
            tx.execute(
                "INSERT INTO tickets (id, title, created_at) VALUES ('7', 't', 1000)",
                [],
            )
            .unwrap();
            super::append(
                None,
                &tx,
                1000,
                None,
                Some("7"),
                "ticket_opened",
                &json!({"title": "t"}),
            )
            .unwrap();
            for (id, used) in [(1i64, Some(2001i64)), (2, None)] {
                tx.execute(
                    "INSERT INTO codes (id, ticket, nonce, salt, hash, created_at, expires_at, used_at)
                     VALUES (?1, '7', ?2, x'00', x'00', 1000, 9999999999999, ?3)",
                    params![id, vec![id as u8; 16], used],
                )
                .unwrap();
                super::append(
                    None,
                    &tx,
                    1000,
                    None,
                    Some("7"),
                    "code_issued",
                    &json!({"code_id": id, "expires_at": 9999999999999i64}),
                )
                .unwrap();
            }
            super::append(
                None,
                &tx,
                2000,
                None,
                Some("7"),
                "code_used",
                &json!({"code_id": 1}),
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let r = j.verify().unwrap();
        assert!(r.broken.is_none(), "{:?}", r.broken);
        let c = j.conn();
        let row = |id: i64| {
            c.query_row(
                "SELECT id, ticket, nonce, salt, hash, created_at, expires_at FROM codes WHERE id = ?1",
                [id],
                |r| {
                    Ok(super::super::rows::CodeRow {
                        id: r.get(0)?,
                        ticket: r.get(1)?,
                        nonce: r.get(2)?,
                        salt: r.get(3)?,
                        hash: r.get(4)?,
                        created_at: r.get(5)?,
                        expires_at: r.get(6)?,
                    })
                },
            )
            .unwrap()
        };
        assert_eq!(
            super::super::codes::chain_disagrees(&c, &row(2)).unwrap(),
            None
        );
        let mut later = row(2);
        later.expires_at += 1;
        assert!(super::super::codes::chain_disagrees(&c, &later)
            .unwrap()
            .is_some());
        assert!(super::super::codes::chain_disagrees(&c, &row(1))
            .unwrap()
            .is_some());
    }
}
