//! Tickets: status, opening and reopening, closing, reading one with its
//! notes, and the tickets closed since a cursor.

use super::kb_index::rebuild_kb;
use super::rows::{check_text, check_ticket_id, Note, Ticket, TicketStatus};
use super::store::Journal;
use super::{hex, now_ms, JournalError, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::json;

impl Journal {
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
}
