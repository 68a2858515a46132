//! The knowledge base on the team database: `kb search`, `kb reindex`,
//! `ticket open --lang` and the rebuild after an analyzer upgrade, each
//! on a [`Pg`] (the index itself is kb_pg_index.rs, which pg.rs uses
//! inside its own transactions).

use super::analyzer::Lang;
use super::kb_index::{self, KbQuery};
use super::kb_pg_index::{rebuild, reindex_tx, PgKb};
use super::pg::Pg;
use super::{JournalError, KbHit, Result};

/// `kb search` on the team database, in one read-only snapshot.
pub(crate) fn search(pg: &Pg, q: &KbQuery) -> Result<Vec<KbHit>> {
    let mut c = pg.conn()?;
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let hits = kb_index::search(&mut PgKb(&mut tx), q)?;
    tx.commit()?;
    Ok(hits)
}

/// `kb reindex` on the team database.
pub(crate) fn reindex(pg: &Pg) -> Result<usize> {
    pg.write(|tx| reindex_tx(tx))
}

/// Rebuilds the knowledge base when another analyzer version built it.
/// A role that may not write it (a server) leaves it to the next
/// technician's command or `kb reindex`, with a warning.
pub(crate) fn reindex_if_stale(pg: &Pg) -> Result<()> {
    let v: Option<i64> = pg
        .conn()?
        .query_opt("SELECT value FROM counters WHERE name = 'kb_analyzer'", &[])?
        .map(|r| r.get(0));
    if v == Some(super::analyzer::ANALYZER_VERSION) {
        return Ok(());
    }
    match pg.write(|tx| {
        let v: Option<i64> = tx
            .query_opt(
                "SELECT value FROM counters WHERE name = 'kb_analyzer' FOR UPDATE",
                &[],
            )?
            .map(|r| r.get(0));
        if v == Some(super::analyzer::ANALYZER_VERSION) {
            return Ok(0);
        }
        reindex_tx(tx)
    }) {
        Ok(n) => {
            if n > 0 {
                tracing::info!(tickets = n, "knowledge base reindexed");
            }
            Ok(())
        }
        Err(e) if !e.is_unavailable() => {
            tracing::warn!(
                "the knowledge base was built by another ticketvnc version and could not be rebuilt \
                 here ({e}); run `ticketvnc kb reindex` as the database owner or a technician"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `ticket open --lang` on the team database: not chained (a search
/// hint), the ticket's row rebuilt in the same transaction.
pub(crate) fn set_ticket_lang(pg: &Pg, ticket: &str, lang: Option<Lang>) -> Result<()> {
    pg.write(|tx| {
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tickets WHERE id = $1)",
                &[&ticket],
            )?
            .get(0);
        if !exists {
            return Err(JournalError::NoSuchTicket(ticket.into()));
        }
        match lang {
            Some(l) => tx.execute(
                "INSERT INTO ticket_lang (ticket, lang) VALUES ($1, $2)
                 ON CONFLICT (ticket) DO UPDATE SET lang = EXCLUDED.lang",
                &[&ticket, &l.as_str()],
            )?,
            None => tx.execute("DELETE FROM ticket_lang WHERE ticket = $1", &[&ticket])?,
        };
        rebuild(tx, ticket)
    })
}
