//! Sessions and events: a session's start (or failed authentication), its
//! events and its end, each appended to the chain in one transaction; and
//! reading them back.

use super::kb_index::rebuild_kb;
use super::rows::{
    check_ticket_id, session_snapshot, Event, EventRow, Rights, SessionId, SessionRow,
    SessionStart, SessionStats,
};
use super::store::Journal;
use super::{now_ms, truncate, JournalError, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};

impl Journal {
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
