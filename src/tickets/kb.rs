//! The knowledge-base methods of [`Journal`]: on sqlite through the index
//! and search of kb_index.rs, on PostgreSQL through kb_pg.rs.

use super::analyzer::Lang;
use super::kb_index::{rebuild_kb, reindex_all, search, KbHit, KbQuery, Sqlite};
use super::store::Journal;
use super::{JournalError, Result};

impl Journal {
    /// Sets (or with `None` clears) the language of a ticket's texts for
    /// the knowledge base, and reindexes it. Not chained: a search hint.
    pub fn set_ticket_lang(&self, ticket: &str, lang: Option<Lang>) -> Result<()> {
        if let Some(r) = self.on_pg(|pg| super::kb_pg::set_ticket_lang(pg, ticket, lang)) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tickets WHERE id = ?1)",
            [ticket],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(JournalError::NoSuchTicket(ticket.into()));
        }
        match lang {
            Some(l) => tx.execute(
                "INSERT OR REPLACE INTO ticket_lang (ticket, lang) VALUES (?1, ?2)",
                [ticket, l.as_str()],
            )?,
            None => tx.execute("DELETE FROM ticket_lang WHERE ticket = ?1", [ticket])?,
        };
        rebuild_kb(&tx, ticket)?;
        tx.commit()?;
        Ok(())
    }

    /// Rebuilds the knowledge base from the tickets (`ticketvnc kb reindex`).
    pub fn kb_reindex(&self) -> Result<usize> {
        if let Some(r) = self.on_pg(super::kb_pg::reindex) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = reindex_all(&tx)?;
        tx.commit()?;
        Ok(n)
    }

    /// Best matching tickets for a query, at most `q.limit` (1..=1000).
    pub fn kb_search(&self, q: &KbQuery) -> Result<Vec<KbHit>> {
        if let Some(r) = self.on_pg(|pg| super::kb_pg::search(pg, q)) {
            return r;
        }
        let c = self.conn();
        search(&mut Sqlite(&c), q)
    }
}
