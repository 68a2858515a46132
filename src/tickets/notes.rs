//! Notes on a ticket (indexed for the knowledge base).

use super::chain::note_details;
use super::kb_index::rebuild_kb;
use super::rows::check_text;
use super::store::Journal;
use super::{now_ms, JournalError, Result};
use rusqlite::{params, TransactionBehavior};

impl Journal {
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
}
