//! Knowledge base on sqlite: the terms of the [analyzer](super::analyzer)
//! in an FTS5 table (one row per ticket: title, notes, resolution), ranked
//! by bm25 with the title weighted highest and the resolution above plain
//! notes; compound parts and typos through the vocabulary of the index.
//!
//! # How a query is answered
//! 1. Each query word (stopwords dropped, at most [`MAX_QUERY_WORDS`])
//!    gives its **exact** terms: German and English stems.
//! 2. It may also give **expansion** terms, found in `kb_vocab` (every
//!    folded word the index has seen): words that contain it
//!    (`Warteschlange` -> `Druckerwarteschlange`, through a trigram index),
//!    its parts when it is itself a compound of known words, and, when the
//!    word is unknown to the index, known words one or two edits away
//!    (`Drucekr` -> `Drucker`).
//! 3. Two FTS5 queries (exact terms; expansion terms) give bm25 scores;
//!    a ticket's raw score is exact + [`EXPANSION_WEIGHT`] x expansion.
//! 4. The displayed score (0..1) is 0.6 x coverage (the share of query
//!    words the ticket has, an expansion counting
//!    [`EXPANSION_WEIGHT`]) + 0.4 x raw score relative to the best hit;
//!    hits are ordered by it.
//! 5. Each hit shows the resolution, else its most relevant note, with the
//!    matching words marked.
//!
//! The index and the search; the `Journal` methods that use them (the
//! same on PostgreSQL, see kb_pg.rs) are in kb.rs.

use super::analyzer::{self, Lang};
use super::{Result, TicketStatus};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// Weights of (title, notes, resolution) in bm25.
const WEIGHTS: (f64, f64, f64) = (5.0, 1.0, 3.0);
/// Weight of a term found through a compound part or a typo correction,
/// relative to a term of the query itself.
pub const EXPANSION_WEIGHT: f64 = 0.6;
/// Longest query used, in bytes; the rest is ignored (not an error): a
/// pasted log must not make a search slow.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Query words used at most (after stopwords); the rest are ignored.
pub const MAX_QUERY_WORDS: usize = 24;
/// Vocabulary words added for one query word (compounds containing it).
const MAX_COMPOUNDS_PER_WORD: usize = 40;
/// A compound part must have this many characters (shorter ones, like
/// `lang`, are inside too many unrelated words).
const MIN_PART: usize = 5;
/// Tickets taken from each FTS5 query before re-ranking.
pub(crate) const CANDIDATES: usize = 200;
/// Longest excerpt shown for a hit, in characters.
const EXCERPT_CHARS: usize = 320;

/// A search: the text and its filters.
#[derive(Clone, Debug)]
pub struct KbQuery<'a> {
    pub text: &'a str,
    pub limit: usize,
    pub status: Option<TicketStatus>,
    /// Only tickets opened at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only tickets opened before this time (Unix ms).
    pub until: Option<i64>,
    /// Only tickets a technician worked on (a session or a note by them).
    pub technician: Option<&'a str>,
    /// Markers put around matching words in `title` and `excerpt`.
    pub mark: (&'a str, &'a str),
}

impl<'a> KbQuery<'a> {
    pub fn new(text: &'a str) -> KbQuery<'a> {
        KbQuery {
            text,
            limit: 10,
            status: None,
            since: None,
            until: None,
            technician: None,
            mark: ("**", "**"),
        }
    }
}

/// What a hit shows.
#[derive(Clone, Debug, PartialEq)]
pub enum KbSource {
    /// The ticket's resolution (`ticket close --resolution`).
    Resolution,
    /// The most relevant note.
    Note {
        id: i64,
        at: i64,
        author: Option<String>,
    },
    /// Neither: the ticket has only a title.
    Title,
}

/// One search result.
#[derive(Clone, Debug)]
pub struct KbHit {
    pub ticket: String,
    pub title: String,
    pub status: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    /// 0.01..=1: see the module documentation.
    pub score: f64,
    /// Title with matching words marked.
    pub title_marked: String,
    pub source: KbSource,
    /// The full resolution or note shown.
    pub text: String,
    /// Part of `text` (all of it if short) with matching words marked.
    pub excerpt: String,
    /// The words of the ticket that matched, as written there.
    pub matched: Vec<String>,
    /// The language set for the ticket (`ticket open --lang`); `None`:
    /// detected per text.
    pub lang: Option<Lang>,
}

impl KbHit {
    pub fn to_json(&self) -> serde_json::Value {
        let (source, note) = match &self.source {
            KbSource::Resolution => ("resolution", serde_json::Value::Null),
            KbSource::Note { id, at, author } => (
                "note",
                serde_json::json!({"id": id, "at": super::format_time(*at), "author": author}),
            ),
            KbSource::Title => ("title", serde_json::Value::Null),
        };
        serde_json::json!({
            "ticket": self.ticket,
            "title": self.title,
            "status": self.status,
            "created_at": super::format_time(self.created_at),
            "closed_at": self.closed_at.map(super::format_time),
            "score": (self.score * 100.0).round() / 100.0,
            "source": source,
            "note": note,
            "text": self.text,
            "excerpt": self.excerpt,
            "matched": self.matched,
            "lang": self.lang.map(Lang::as_str),
        })
    }
}

/// One query word and the terms it matches.
#[derive(Debug, Default)]
struct WordPlan {
    exact: Vec<String>,
    expand: Vec<String>,
}

/// The words of a query, bounded: at most [`MAX_QUERY_BYTES`] bytes and
/// [`MAX_QUERY_WORDS`] distinct non-stopwords; each with the parts of a
/// hyphenated word.
fn query_words(text: &str) -> Vec<(analyzer::Word, Vec<String>)> {
    let mut end = text.len().min(MAX_QUERY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        // Do not search for the first half of a word cut at the limit.
        end = text[..end]
            .rfind(|c: char| !c.is_alphanumeric())
            .unwrap_or(0);
    }
    let mut seen = HashSet::new();
    analyzer::query_words(&text[..end])
        .into_iter()
        .filter(|(w, _)| !analyzer::is_stopword(&w.base) && seen.insert(w.base.clone()))
        .take(MAX_QUERY_WORDS)
        .collect()
}

fn quote_or(terms: &[&String]) -> String {
    // Terms come from the analyzer (letters and digits only), quoted so no
    // word is ever read as FTS5 syntax (AND, NEAR, ...).
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// What the search needs from a journal backend: the vocabulary, the
/// index, and the rows of a hit. sqlite here, PostgreSQL in kb_pg_index.rs; the
/// query plan, the scoring and the hits are the same code for both.
pub(crate) trait KbBackend {
    /// Is `term` a word of the vocabulary?
    fn vocab_has(&mut self, term: &str) -> Result<bool>;
    /// Does any ticket have one of these index terms?
    fn index_has_any(&mut self, terms: &[String]) -> Result<bool>;
    /// Vocabulary words containing `key` (at most 400).
    fn vocab_containing(&mut self, key: &str) -> Result<Vec<String>>;
    /// Vocabulary words starting with `first`, at least `min_chars` long.
    fn vocab_starting(&mut self, first: char, min_chars: i64) -> Result<Vec<String>>;
    /// Raw scores (higher is better) of the tickets (by rowid) matching
    /// the exact terms or the expansion terms, filtered as `q` says, at
    /// most [`CANDIDATES`] per query. `words`: the query words as written
    /// (letters and digits), for a backend with dictionaries of its own.
    fn ranked(
        &mut self,
        exact: &[&String],
        expand: &[&String],
        words: &[String],
        q: &KbQuery,
    ) -> Result<HashMap<i64, f64>>;
    /// The index terms of a ticket (title, notes, resolution), space-separated.
    fn terms_of(&mut self, rowid: i64) -> Result<String>;
    /// id, title, status, created_at, closed_at, resolution of a ticket.
    fn ticket_row(&mut self, rowid: i64) -> Result<TicketRow>;
    /// id, at, author, text of a ticket's notes, oldest first.
    fn notes_of(&mut self, ticket: &str) -> Result<Vec<NoteRow>>;
    fn lang_of(&mut self, ticket: &str) -> Result<Option<Lang>>;
}

pub(crate) type TicketRow = (String, String, String, i64, Option<i64>, Option<String>);
pub(crate) type NoteRow = (i64, i64, Option<String>, String);

/// The sqlite backend: FTS5 (bm25) and a trigram index over the vocabulary.
pub(super) struct Sqlite<'a>(pub(super) &'a Connection);

impl KbBackend for Sqlite<'_> {
    fn vocab_has(&mut self, term: &str) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM kb_vocab WHERE term = ?1")?
            .query_row([term], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn index_has_any(&mut self, terms: &[String]) -> Result<bool> {
        if terms.is_empty() {
            return Ok(false);
        }
        let refs: Vec<&String> = terms.iter().collect();
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM kb WHERE kb MATCH ?1 LIMIT 1")?
            .query_row([quote_or(&refs)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn vocab_containing(&mut self, key: &str) -> Result<Vec<String>> {
        let mut st = self.0.prepare_cached(
            "SELECT term FROM kb_vocab_tri WHERE kb_vocab_tri MATCH ?1 LIMIT 400",
        )?;
        let found = st
            .query_map([format!("\"{key}\"")], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(found)
    }

    fn vocab_starting(&mut self, first: char, min_chars: i64) -> Result<Vec<String>> {
        let mut upper = first.to_string();
        upper.push(char::MAX);
        let mut st = self.0.prepare_cached(
            "SELECT term FROM kb_vocab WHERE term >= ?1 AND term < ?2
               AND length(term) >= ?3",
        )?;
        let rows = st
            .query_map(params![first.to_string(), upper, min_chars], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn ranked(
        &mut self,
        exact: &[&String],
        expand: &[&String],
        _words: &[String],
        q: &KbQuery,
    ) -> Result<HashMap<i64, f64>> {
        let status = q.status.map(|s| s.as_str());
        let mut raw: HashMap<i64, f64> = HashMap::new();
        for (terms, weight) in [(exact, 1.0), (expand, EXPANSION_WEIGHT)] {
            if terms.is_empty() {
                continue;
            }
            let mut st = self.0.prepare_cached(
                "SELECT kb.rowid, bm25(kb, 0.0, ?2, ?3, ?4) AS r
                 FROM kb JOIN tickets t ON t.rowid = kb.rowid
                 WHERE kb MATCH ?1
                   AND (?5 IS NULL OR t.status = ?5)
                   AND (?6 IS NULL OR t.created_at >= ?6)
                   AND (?7 IS NULL OR t.created_at < ?7)
                   AND (?8 IS NULL
                        OR EXISTS (SELECT 1 FROM sessions s WHERE s.ticket = t.id AND s.technician = ?8)
                        OR EXISTS (SELECT 1 FROM notes n WHERE n.ticket = t.id AND n.author = ?8))
                 ORDER BY r LIMIT ?9",
            )?;
            let rows = st.query_map(
                params![
                    quote_or(terms),
                    WEIGHTS.0,
                    WEIGHTS.1,
                    WEIGHTS.2,
                    status,
                    q.since,
                    q.until,
                    q.technician,
                    CANDIDATES as i64
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
            )?;
            for row in rows {
                let (id, bm) = row?;
                // bm25 is negative (lower is better); tiny when a term is in
                // most tickets, hence coverage in the displayed score.
                *raw.entry(id).or_default() += weight * (-bm).max(0.0);
            }
        }
        Ok(raw)
    }

    fn terms_of(&mut self, rowid: i64) -> Result<String> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT title || ' ' || notes || ' ' || resolution FROM kb WHERE rowid = ?1",
            )?
            .query_row([rowid], |r| r.get(0))?)
    }

    fn ticket_row(&mut self, rowid: i64) -> Result<TicketRow> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, title, status, created_at, closed_at, resolution FROM tickets WHERE rowid = ?1",
            )?
            .query_row([rowid], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?)
    }

    fn notes_of(&mut self, ticket: &str) -> Result<Vec<NoteRow>> {
        Ok(self
            .0
            .prepare_cached("SELECT id, at, author, text FROM notes WHERE ticket = ?1 ORDER BY id")?
            .query_map([ticket], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?)
    }

    fn lang_of(&mut self, ticket: &str) -> Result<Option<Lang>> {
        ticket_lang(self.0, ticket)
    }
}

const BOTH: &[Lang] = &[Lang::De, Lang::En];

/// Exact and expansion terms of each query word.
fn plan(c: &mut impl KbBackend, text: &str) -> Result<Vec<WordPlan>> {
    let mut plans = Vec::new();
    let words = query_words(text);
    for (k, (w, parts)) in words.iter().enumerate() {
        let surface = analyzer::surface(w);
        let mut exact = analyzer::word_terms(&w.base, BOTH);
        for syn in analyzer::synonyms(&surface) {
            for t in analyzer::word_terms(syn, BOTH) {
                if !exact.contains(&t) {
                    exact.push(t);
                }
            }
        }
        if exact.is_empty() {
            continue;
        }
        let mut expand: Vec<String> = Vec::new();
        let add = |word: &str, expand: &mut Vec<String>| {
            for t in analyzer::word_terms(word, BOTH) {
                if !exact.contains(&t) && !expand.contains(&t) {
                    expand.push(t);
                }
            }
        };
        for p in parts {
            add(p, &mut expand);
        }
        // Two query words written apart that the index knows as one
        // (`out box` -> `outbox`).
        if let Some((next, _)) = words.get(k + 1) {
            let joined = format!("{surface}{}", analyzer::surface(next));
            if c.vocab_has(&joined)? {
                add(&joined, &mut expand);
            }
        }
        // Compounds that contain the word.
        if let Some(key) = analyzer::substring_key(&surface, &exact, MIN_PART) {
            let mut found = c.vocab_containing(&key)?;
            found.retain(|t| *t != surface);
            found.sort_by_key(|t| (t.len(), t.clone()));
            for t in found.iter().take(MAX_COMPOUNDS_PER_WORD) {
                add(t, &mut expand);
            }
        }
        // The word is itself a compound of known words (`Druckerwarteschlange`
        // -> `drucker` + `warteschlange`, with or without a linking `s`).
        let chars: Vec<(usize, char)> = surface.char_indices().collect();
        if chars.len() > 2 * 4 {
            // A part is known as a word of the vocabulary, or by its stems
            // (`drucker` in a ticket that only says `Druckers`).
            let mut known = |p: &str| -> Result<bool> {
                Ok(c.vocab_has(p)? || c.index_has_any(&analyzer::word_terms(p, BOTH))?)
            };
            for &(i, _) in &chars[4..chars.len() - 3] {
                let (left, right) = surface.split_at(i);
                let left_ok = known(left)?
                    || (left.ends_with('s') && left.len() > 5 && known(&left[..left.len() - 1])?);
                if left_ok && known(right)? {
                    add(left.trim_end_matches('s'), &mut expand);
                    add(left, &mut expand);
                    add(right, &mut expand);
                    break;
                }
            }
        }
        // Typos: only for a word the index does not know at all.
        let n = surface.chars().count();
        if n >= 4 && !c.vocab_has(&surface)? && !c.index_has_any(&exact)? {
            let max = if n >= 8 { 2 } else { 1 };
            let first = surface.chars().next().unwrap_or('a');
            // Whole words first; else the head of a compound
            // (`Drucekr` -> `Druckerwarteschlange`).
            let mut best: Vec<(usize, String)> = Vec::new();
            let mut heads: Vec<(usize, String)> = Vec::new();
            let rows = c.vocab_starting(first, (n - max) as i64)?;
            for t in rows {
                let len = t.chars().count();
                if len <= n + max {
                    if let Some(d) = analyzer::edit_distance(&surface, &t, max) {
                        best.push((d, t));
                    }
                } else if best.is_empty() && len >= n + MIN_PART {
                    let head: String = t.chars().take(n).collect();
                    if let Some(d) = analyzer::edit_distance(&surface, &head, max) {
                        heads.push((d, t));
                    }
                }
            }
            if best.is_empty() {
                best = heads;
            }
            best.sort();
            if let Some(&(d0, _)) = best.first() {
                for (_, t) in best.iter().take_while(|(d, _)| *d == d0).take(5) {
                    add(t, &mut expand);
                }
            }
        }
        plans.push(WordPlan { exact, expand });
    }
    Ok(plans)
}

fn ticket_lang(c: &Connection, ticket: &str) -> Result<Option<Lang>> {
    let l: Option<String> = c
        .prepare_cached("SELECT lang FROM ticket_lang WHERE ticket = ?1")?
        .query_row([ticket], |r| r.get(0))
        .optional()?;
    Ok(l.as_deref().and_then(Lang::parse))
}

/// A ticket's knowledge-base row: the analyzer's terms of its title,
/// notes and resolution, and the words it adds to the vocabulary. The
/// same for both backends.
pub(crate) struct KbRow {
    pub title: String,
    pub notes: String,
    pub resolution: String,
    pub vocab: Vec<String>,
}

pub(crate) fn kb_row(title: &str, notes: &[String], resolution: &str, lang: Option<Lang>) -> KbRow {
    let mut notes_terms = String::new();
    for n in notes {
        let t = analyzer::index_text(n, lang);
        if !t.is_empty() {
            if !notes_terms.is_empty() {
                notes_terms.push(' ');
            }
            notes_terms.push_str(&t);
        }
    }
    let mut vocab = Vec::new();
    let mut seen = HashSet::new();
    for text in std::iter::once(title)
        .chain(notes.iter().map(String::as_str))
        .chain(std::iter::once(resolution))
    {
        for w in analyzer::index_words(text) {
            let s = analyzer::surface(&w);
            if s.chars().count() < 3
                || s.bytes().all(|b| b.is_ascii_digit())
                || analyzer::is_stopword(&w.base)
            {
                continue;
            }
            if seen.insert(s.clone()) {
                vocab.push(s);
            }
        }
    }
    KbRow {
        title: analyzer::index_text(title, lang),
        notes: notes_terms,
        resolution: analyzer::index_text(resolution, lang),
        vocab,
    }
}

/// Rewrites a ticket's knowledge-base row (and adds its words to the
/// vocabulary) from its title, notes and resolution.
pub(crate) fn rebuild_kb(tx: &Connection, ticket: &str) -> Result<()> {
    let row: Option<(i64, String, Option<String>)> = tx
        .prepare_cached("SELECT rowid, title, resolution FROM tickets WHERE id = ?1")?
        .query_row([ticket], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((rowid, title, resolution)) = row else {
        return Ok(());
    };
    let lang = ticket_lang(tx, ticket)?;
    let notes: Vec<String> = tx
        .prepare_cached("SELECT text FROM notes WHERE ticket = ?1 ORDER BY id")?
        .query_map([ticket], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let row = kb_row(&title, &notes, &resolution.unwrap_or_default(), lang);
    {
        let mut ins = tx.prepare_cached("INSERT OR IGNORE INTO kb_vocab (term) VALUES (?1)")?;
        let mut tri = tx.prepare_cached("INSERT INTO kb_vocab_tri (term) VALUES (?1)")?;
        for s in &row.vocab {
            if ins.execute([s])? == 1 {
                tri.execute([s])?;
            }
        }
    }
    tx.prepare_cached("DELETE FROM kb WHERE rowid = ?1")?
        .execute([rowid])?;
    tx.prepare_cached(
        "INSERT INTO kb (rowid, ticket, title, notes, resolution) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![rowid, ticket, row.title, row.notes, row.resolution])?;
    Ok(())
}

/// Rebuilds the whole knowledge base (after an analyzer change or
/// migration 4). Returns the number of tickets indexed.
pub(crate) fn reindex_all(tx: &Connection) -> Result<usize> {
    tx.execute_batch("DELETE FROM kb; DELETE FROM kb_vocab; DELETE FROM kb_vocab_tri;")?;
    let ids: Vec<String> = tx
        .prepare("SELECT id FROM tickets ORDER BY rowid")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        rebuild_kb(tx, id)?;
    }
    Ok(ids.len())
}

/// Marks the words of `text` whose terms are in `terms`; returns the
/// marked text (cut to [`EXCERPT_CHARS`] around the first match when
/// `excerpt`), the words matched, and how many there were.
fn mark(
    text: &str,
    terms: &HashSet<&str>,
    marks: (&str, &str),
    excerpt: bool,
) -> (String, Vec<String>) {
    let mut spans = Vec::new();
    for w in analyzer::index_words(text) {
        if analyzer::word_terms(&w.base, BOTH)
            .iter()
            .any(|t| terms.contains(t.as_str()))
        {
            // A joined hyphenated word replaces its marked parts.
            while spans.last().is_some_and(|&(s, _)| s >= w.start) {
                spans.pop();
            }
            spans.push((w.start, w.end));
        }
    }
    let (mut from, mut to) = (0, text.len());
    if excerpt && text.chars().count() > EXCERPT_CHARS {
        let first = spans.first().map_or(0, |s| s.0);
        let mut s = first.saturating_sub(80);
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        // Start at a word if we cut.
        if s > 0 {
            if let Some(p) = text[s..first].find(char::is_whitespace) {
                s += p + 1;
            }
        }
        from = s;
        to = text[from..]
            .char_indices()
            .nth(EXCERPT_CHARS)
            .map_or(text.len(), |(i, _)| from + i);
    }
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    let mut at = from;
    let mut matched = Vec::new();
    for &(s, e) in spans.iter().filter(|(s, e)| *s >= from && *e <= to) {
        out.push_str(&text[at..s]);
        out.push_str(marks.0);
        out.push_str(&text[s..e]);
        out.push_str(marks.1);
        at = e;
        let m = text[s..e].to_string();
        if !matched.contains(&m) {
            matched.push(m);
        }
    }
    out.push_str(&text[at..to]);
    if to < text.len() {
        out.push('…');
    }
    (out.replace(['\n', '\r'], " "), matched)
}

/// The query words as written (letters and digits only), for a backend
/// with stemming dictionaries of its own.
fn written_words(text: &str) -> Vec<String> {
    query_words(text)
        .into_iter()
        .map(|(w, _)| {
            text[w.start..w.end]
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The search itself, the same for both backends (module documentation).
pub(crate) fn search(c: &mut impl KbBackend, q: &KbQuery) -> Result<Vec<KbHit>> {
    let plans = plan(c, q.text)?;
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let exact: Vec<&String> = plans.iter().flat_map(|p| &p.exact).collect();
    let exact_set: HashSet<&str> = exact.iter().map(|s| s.as_str()).collect();
    let expand: Vec<&String> = plans
        .iter()
        .flat_map(|p| &p.expand)
        .filter(|t| !exact_set.contains(t.as_str()))
        .collect();
    let raw = c.ranked(&exact, &expand, &written_words(q.text), q)?;
    let mut cands: Vec<(i64, f64)> = raw.into_iter().collect();
    cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let limit = q.limit.clamp(1, 1000);
    cands.truncate((limit * 3).max(30));
    let best = cands.first().map_or(0.0, |c| c.1);
    // Coverage of each candidate: which query words its terms have.
    let mut scored: Vec<(i64, f64)> = Vec::with_capacity(cands.len());
    for (id, r) in cands {
        let terms = c.terms_of(id)?;
        let have: HashSet<&str> = terms.split(' ').collect();
        let cov: f64 = plans
            .iter()
            .map(|p| {
                if p.exact.iter().any(|t| have.contains(t.as_str())) {
                    1.0
                } else if p.expand.iter().any(|t| have.contains(t.as_str())) {
                    EXPANSION_WEIGHT
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            / plans.len() as f64;
        let rel = if best > 0.0 { r / best } else { 1.0 };
        scored.push((id, (0.6 * cov + 0.4 * rel).clamp(0.01, 1.0)));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(limit);
    let all_terms: HashSet<&str> = exact
        .iter()
        .chain(expand.iter())
        .map(|s| s.as_str())
        .collect();
    let mut hits = Vec::with_capacity(scored.len());
    for (rowid, score) in scored {
        hits.push(hit(c, rowid, score, &all_terms, q.mark)?);
    }
    Ok(hits)
}

/// The hit for one ticket: its resolution or most relevant note, marked.
fn hit(
    c: &mut impl KbBackend,
    rowid: i64,
    score: f64,
    terms: &HashSet<&str>,
    marks: (&str, &str),
) -> Result<KbHit> {
    let (ticket, title, status, created_at, closed_at, resolution) = c.ticket_row(rowid)?;
    let (title_marked, mut matched) = mark(&title, terms, marks, false);
    let (source, text) = match resolution.filter(|r| !r.trim().is_empty()) {
        Some(r) => (KbSource::Resolution, r),
        None => {
            let notes = c.notes_of(&ticket)?;
            // Most matching words; among equals the latest (closest to the fix).
            let best = notes
                .into_iter()
                .map(|n| {
                    let k = analyzer::index_words(&n.3)
                        .into_iter()
                        .filter(|w| {
                            analyzer::word_terms(&w.base, BOTH)
                                .iter()
                                .any(|t| terms.contains(t.as_str()))
                        })
                        .count();
                    (k, n)
                })
                .max_by_key(|(k, n)| (*k, n.0));
            match best {
                Some((_, (id, at, author, text))) => (KbSource::Note { id, at, author }, text),
                None => (KbSource::Title, String::new()),
            }
        }
    };
    let (excerpt, more) = mark(&text, terms, marks, true);
    for m in more {
        if !matched.contains(&m) {
            matched.push(m);
        }
    }
    let lang = c.lang_of(&ticket)?;
    Ok(KbHit {
        lang,
        ticket,
        title,
        status,
        created_at,
        closed_at,
        score,
        title_marked,
        source,
        text,
        excerpt,
        matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_query_text_becomes_quoted_terms() {
        let w: Vec<String> = query_words("printer \"offline* NOT x: AND (NEAR) - ")
            .into_iter()
            .map(|w| w.0.base)
            .collect();
        // "not" and "and" are English stopwords; the rest are plain words.
        assert_eq!(w, ["printer", "offline", "x", "near"]);
        let t = ["near".to_string(), "x".to_string()];
        assert_eq!(quote_or(&t.iter().collect::<Vec<_>>()), "\"near\" OR \"x\"");
        assert!(query_words("  ** -- ()\"").is_empty());
        assert!(query_words("").is_empty());
    }

    #[test]
    fn long_queries_are_cut() {
        let q = "wort ".repeat(1 << 20);
        assert_eq!(query_words(&q).len(), 1);
        let q: String = (0..5000).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_words(&q).len(), MAX_QUERY_WORDS);
        // Cut inside a multi-byte character: no panic.
        let q = "ü".repeat(MAX_QUERY_BYTES);
        let _ = query_words(&q);
    }

    #[test]
    fn marks_and_excerpts() {
        let terms: HashSet<&str> = ["druck", "druckt"].into_iter().collect();
        let (m, w) = mark("Der Drucker druckt nicht.", &terms, ("[", "]"), true);
        assert_eq!(m, "Der [Drucker] [druckt] nicht.");
        assert_eq!(w, ["Drucker", "druckt"]);
        let long = format!("{} Drucker {}", "bla ".repeat(200), "x ".repeat(400));
        let (m, _) = mark(&long, &terms, ("[", "]"), true);
        assert!(
            m.starts_with('…') && m.ends_with('…') && m.contains("[Drucker]"),
            "{m}"
        );
        // Two ellipses and one pair of marks beyond the cut.
        assert!(m.chars().count() <= EXCERPT_CHARS + 4);
    }
}
