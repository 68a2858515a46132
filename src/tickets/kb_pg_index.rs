//! Knowledge base on PostgreSQL (issue 15): the same query plan, scoring
//! and hits as on sqlite (kb_index.rs), over PostgreSQL full-text search.
//!
//! Each ticket has one `kb` row (migrations 4 and 5 in pg.rs):
//!
//! - `doc`: the terms of the [analyzer](super::analyzer) (folded, German
//!   and English stems, the same terms sqlite's FTS5 table holds) in the
//!   `simple` configuration, weighted title A, resolution B, notes C. The
//!   exact and expansion terms of a query are matched here, so both
//!   backends find the same tickets and the same coverage.
//! - `doc_de`, `doc_en` (migration 5): the raw title, resolution and notes
//!   in PostgreSQL's `german` and `english` configurations (Snowball
//!   stemmers and stopwords of the server), same weights. The query words
//!   as written are matched there too ([`DICT_WEIGHT`]): a word the
//!   analyzer and PostgreSQL's dictionaries stem alike counts more, one
//!   only a dictionary knows still finds its ticket (ranked below the
//!   analyzer's hits, since coverage is computed from the analyzer's
//!   terms).
//!
//! Ranked with `ts_rank_cd` (cover density), the weights in the order of
//! sqlite's bm25 weights. The vocabulary (`kb_vocab`) is a plain table:
//! compounds by `LIKE '%part%'` (no pg_trgm, so no extension to create),
//! typo candidates by first letter.
//!
//! Here the index inside a caller's transaction (pg.rs writes tickets and
//! notes with it) and the search backend; what runs on a whole [`Pg`]
//! (`kb search`, `kb reindex`, a ticket's language) is kb_pg.rs.
//!
//! [`Pg`]: super::pg::Pg

use super::analyzer::Lang;
use super::kb_index::{self, KbBackend, KbQuery, NoteRow, TicketRow, CANDIDATES, EXPANSION_WEIGHT};
use super::Result;
use postgres::GenericClient;
use std::collections::HashMap;

/// `ts_rank_cd` weights {D, C, B, A}: notes (C) 1, resolution (B) 3,
/// title (A) 5, as sqlite's bm25 weights, scaled to 0..1.
const RANK_WEIGHTS: [f32; 4] = [0.1, 0.2, 0.6, 1.0];
/// Weight of a match in PostgreSQL's `german`/`english` configurations,
/// relative to a match of the analyzer's exact terms.
pub const DICT_WEIGHT: f64 = 0.5;

/// A tsquery of `terms` ORed, each quoted; only letters and digits are
/// kept, so no input is ever read as tsquery syntax.
fn or_query(terms: &[&String]) -> String {
    terms
        .iter()
        .map(|t| {
            t.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(" | ")
}

pub(super) struct PgKb<'a, C: GenericClient>(pub(super) &'a mut C);

impl<C: GenericClient> KbBackend for PgKb<'_, C> {
    fn vocab_has(&mut self, term: &str) -> Result<bool> {
        Ok(self
            .0
            .query_opt("SELECT 1 FROM kb_vocab WHERE term = $1", &[&term])?
            .is_some())
    }

    fn index_has_any(&mut self, terms: &[String]) -> Result<bool> {
        let refs: Vec<&String> = terms.iter().collect();
        let q = or_query(&refs);
        if q.is_empty() {
            return Ok(false);
        }
        Ok(self
            .0
            .query_opt(
                "SELECT 1 FROM kb WHERE doc @@ to_tsquery('simple', $1) LIMIT 1",
                &[&q],
            )?
            .is_some())
    }

    fn vocab_containing(&mut self, key: &str) -> Result<Vec<String>> {
        // The key comes from the analyzer (letters and digits); escape
        // LIKE's wildcards all the same.
        let pat = format!(
            "%{}%",
            key.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        Ok(self
            .0
            .query(
                "SELECT term FROM kb_vocab WHERE term LIKE $1 ORDER BY term LIMIT 400",
                &[&pat],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn vocab_starting(&mut self, first: char, min_chars: i64) -> Result<Vec<String>> {
        Ok(self
            .0
            .query(
                "SELECT term FROM kb_vocab WHERE left(term, 1) = $1 AND length(term) >= $2::BIGINT",
                &[&first.to_string(), &min_chars],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn ranked(
        &mut self,
        exact: &[&String],
        expand: &[&String],
        words: &[String],
        q: &KbQuery,
    ) -> Result<HashMap<i64, f64>> {
        let words: Vec<&String> = words.iter().collect();
        let status = q.status.map(|s| s.as_str());
        let rows = self.0.query(
            "SELECT t.rowid,
                    (ts_rank_cd($1::float4[], kb.doc, qx)
                     + $2::float8 * ts_rank_cd($1::float4[], kb.doc, qe)
                     + $3::float8 * GREATEST(ts_rank_cd($1::float4[], kb.doc_de, qd),
                                             ts_rank_cd($1::float4[], kb.doc_en, qn)))::float8 AS r
             FROM kb JOIN tickets t ON t.id = kb.ticket,
                  to_tsquery('simple', $4) qx, to_tsquery('simple', $5) qe,
                  to_tsquery('german', $6) qd, to_tsquery('english', $6) qn
             WHERE (kb.doc @@ qx OR kb.doc @@ qe OR kb.doc_de @@ qd OR kb.doc_en @@ qn)
               AND ($7::TEXT IS NULL OR t.status = $7)
               AND ($8::BIGINT IS NULL OR t.created_at >= $8)
               AND ($9::BIGINT IS NULL OR t.created_at < $9)
               AND ($10::TEXT IS NULL
                    OR EXISTS (SELECT 1 FROM sessions s WHERE s.ticket = t.id AND s.technician = $10)
                    OR EXISTS (SELECT 1 FROM notes n WHERE n.ticket = t.id AND n.author = $10))
             ORDER BY r DESC, t.rowid LIMIT $11",
            &[
                &RANK_WEIGHTS.to_vec(),
                &EXPANSION_WEIGHT,
                &DICT_WEIGHT,
                &or_query(exact),
                &or_query(expand),
                &or_query(&words),
                &status,
                &q.since,
                &q.until,
                &q.technician,
                &(CANDIDATES as i64),
            ],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn terms_of(&mut self, rowid: i64) -> Result<String> {
        Ok(self
            .0
            .query_one(
                "SELECT kb.title || ' ' || kb.notes || ' ' || kb.resolution
                 FROM kb JOIN tickets t ON t.id = kb.ticket WHERE t.rowid = $1",
                &[&rowid],
            )?
            .get(0))
    }

    fn ticket_row(&mut self, rowid: i64) -> Result<TicketRow> {
        let r = self.0.query_one(
            "SELECT id, title, status, created_at, closed_at, resolution FROM tickets WHERE rowid = $1",
            &[&rowid],
        )?;
        Ok((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    }

    fn notes_of(&mut self, ticket: &str) -> Result<Vec<NoteRow>> {
        Ok(self
            .0
            .query(
                "SELECT id, at, author, text FROM notes WHERE ticket = $1 ORDER BY id",
                &[&ticket],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    fn lang_of(&mut self, ticket: &str) -> Result<Option<Lang>> {
        lang_of(self.0, ticket)
    }
}

fn lang_of(c: &mut impl GenericClient, ticket: &str) -> Result<Option<Lang>> {
    let l: Option<String> = c
        .query_opt("SELECT lang FROM ticket_lang WHERE ticket = $1", &[&ticket])?
        .map(|r| r.get(0));
    Ok(l.as_deref().and_then(Lang::parse))
}

/// Writes a ticket's row from its title, notes, resolution and language.
fn store(
    tx: &mut impl GenericClient,
    ticket: &str,
    title: &str,
    notes: &[String],
    resolution: &str,
    lang: Option<Lang>,
) -> Result<()> {
    let row = kb_index::kb_row(title, notes, resolution, lang);
    let raw_notes = notes.join("\n");
    tx.execute(
        "INSERT INTO kb (ticket, title, notes, resolution, doc_de, doc_en)
         VALUES ($1, $2, $3, $4,
            setweight(to_tsvector('german', $5), 'A') || setweight(to_tsvector('german', $7), 'B')
                || setweight(to_tsvector('german', $6), 'C'),
            setweight(to_tsvector('english', $5), 'A') || setweight(to_tsvector('english', $7), 'B')
                || setweight(to_tsvector('english', $6), 'C'))
         ON CONFLICT (ticket) DO UPDATE SET title = EXCLUDED.title, notes = EXCLUDED.notes,
            resolution = EXCLUDED.resolution, doc_de = EXCLUDED.doc_de, doc_en = EXCLUDED.doc_en",
        &[
            &ticket,
            &row.title,
            &row.notes,
            &row.resolution,
            &title,
            &raw_notes,
            &resolution,
        ],
    )?;
    if !row.vocab.is_empty() {
        tx.execute(
            "INSERT INTO kb_vocab (term) SELECT unnest($1::TEXT[]) ON CONFLICT DO NOTHING",
            &[&row.vocab],
        )?;
    }
    Ok(())
}

/// Rewrites one ticket's row, in the caller's transaction (the one that
/// changed the ticket or its notes).
pub(crate) fn rebuild(tx: &mut impl GenericClient, ticket: &str) -> Result<()> {
    let Some(r) = tx.query_opt(
        "SELECT title, resolution FROM tickets WHERE id = $1",
        &[&ticket],
    )?
    else {
        return Ok(());
    };
    let (title, resolution): (String, Option<String>) = (r.get(0), r.get(1));
    let notes: Vec<String> = tx
        .query(
            "SELECT text FROM notes WHERE ticket = $1 ORDER BY id",
            &[&ticket],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lang = lang_of(tx, ticket)?;
    store(
        tx,
        ticket,
        &title,
        &notes,
        &resolution.unwrap_or_default(),
        lang,
    )
}

/// Tickets written per statement by [`reindex_tx`].
const REINDEX_BATCH: usize = 500;

/// Rebuilds every row in the caller's transaction (two reads, then one
/// statement per [`REINDEX_BATCH`] tickets and one for the vocabulary)
/// and records the analyzer version. Returns the tickets.
pub(crate) fn reindex_tx(tx: &mut impl GenericClient) -> Result<usize> {
    tx.batch_execute("DELETE FROM kb; DELETE FROM kb_vocab;")?;
    let tickets = tx.query(
        "SELECT t.id, t.title, t.resolution, l.lang FROM tickets t
         LEFT JOIN ticket_lang l ON l.ticket = t.id ORDER BY t.rowid",
        &[],
    )?;
    let mut notes: HashMap<String, Vec<String>> = HashMap::new();
    for r in tx.query("SELECT ticket, text FROM notes ORDER BY id", &[])? {
        notes.entry(r.get(0)).or_default().push(r.get(1));
    }
    let mut vocab: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for chunk in tickets.chunks(REINDEX_BATCH) {
        // Columns: ticket, title, notes, resolution (terms), then the raw
        // title, notes and resolution.
        let mut cols: [Vec<String>; 7] = Default::default();
        for r in chunk {
            let id: String = r.get(0);
            let title: String = r.get(1);
            let resolution = r.get::<_, Option<String>>(2).unwrap_or_default();
            let lang: Option<String> = r.get(3);
            let ns = notes.get(&id).map_or(&[][..], |v| v.as_slice());
            let row = kb_index::kb_row(
                &title,
                ns,
                &resolution,
                lang.as_deref().and_then(Lang::parse),
            );
            for w in row.vocab {
                if seen.insert(w.clone()) {
                    vocab.push(w);
                }
            }
            let raw_notes = ns.join("\n");
            for (c, v) in cols.iter_mut().zip([
                id,
                row.title,
                row.notes,
                row.resolution,
                title,
                raw_notes,
                resolution,
            ]) {
                c.push(v);
            }
        }
        tx.execute(
            "INSERT INTO kb (ticket, title, notes, resolution, doc_de, doc_en)
             SELECT t, ti, n, r,
                setweight(to_tsvector('german', rt), 'A') || setweight(to_tsvector('german', rr), 'B')
                    || setweight(to_tsvector('german', rn), 'C'),
                setweight(to_tsvector('english', rt), 'A') || setweight(to_tsvector('english', rr), 'B')
                    || setweight(to_tsvector('english', rn), 'C')
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[])
                AS u(t, ti, n, r, rt, rn, rr)",
            &[
                &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6],
            ],
        )?;
    }
    if !vocab.is_empty() {
        tx.execute(
            "INSERT INTO kb_vocab (term) SELECT unnest($1::TEXT[]) ON CONFLICT DO NOTHING",
            &[&vocab],
        )?;
    }
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('kb_analyzer', $1)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&super::analyzer::ANALYZER_VERSION],
    )?;
    Ok(tickets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsquery_text_is_only_quoted_words() {
        let t: Vec<String> = ["druck", "a'b", "x|y&!(z)", "", "::"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let refs: Vec<&String> = t.iter().collect();
        assert_eq!(or_query(&refs), "'druck' | 'ab' | 'xyz'");
        assert_eq!(or_query(&[]), "");
    }
}
