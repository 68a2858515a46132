//! Knowledge base: full-text search (sqlite FTS5, porter stemming) over
//! ticket titles, notes and resolutions, ranked by bm25 with the title
//! weighted highest and the resolution above plain notes.

use super::{Journal, Result};
use rusqlite::params;

/// Weights of (title, notes, resolution) in bm25.
const WEIGHTS: (f64, f64, f64) = (5.0, 1.0, 3.0);

/// One search result.
#[derive(Clone, Debug)]
pub struct KbHit {
    pub ticket: String,
    pub title: String,
    pub status: String,
    /// bm25 score (lower is a better match, as sqlite reports it).
    pub rank: f64,
    /// The best matching fragment, with matches between `open` and `close`.
    pub snippet: String,
}

/// Turns what a person types into a safe FTS5 query: each word becomes a
/// quoted term (so `"`, `*`, `-`, `:` and keywords like NOT mean nothing),
/// terms are ORed so partial matches are found, bm25 ranks those matching
/// more terms higher.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{w}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

impl Journal {
    /// Best matching tickets for `text`, at most `limit`.
    pub fn kb_search(
        &self,
        text: &str,
        limit: usize,
        open: &str,
        close: &str,
    ) -> Result<Vec<KbHit>> {
        let Some(q) = fts_query(text) else {
            return Ok(Vec::new());
        };
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT kb.ticket, t.title, t.status, bm25(kb, 0.0, ?2, ?3, ?4) AS r,
                    snippet(kb, -1, ?5, ?6, '…', 16)
             FROM kb JOIN tickets t ON t.rowid = kb.rowid
             WHERE kb MATCH ?1 ORDER BY r, t.created_at DESC LIMIT ?7",
        )?;
        let v = st
            .query_map(
                params![
                    q,
                    WEIGHTS.0,
                    WEIGHTS.1,
                    WEIGHTS.2,
                    open,
                    close,
                    limit.min(1000) as i64
                ],
                |r| {
                    Ok(KbHit {
                        ticket: r.get(0)?,
                        title: r.get(1)?,
                        status: r.get(2)?,
                        rank: r.get(3)?,
                        snippet: r.get::<_, String>(4)?.replace('\n', " "),
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn hostile_query_text_is_quoted() {
        assert_eq!(
            fts_query("printer \"offline* NOT x:").as_deref(),
            Some("\"printer\" OR \"offline\" OR \"NOT\" OR \"x\"")
        );
        assert_eq!(fts_query("  ** -- "), None);
    }
}
