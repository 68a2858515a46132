//! The knowledge-base analyzer: text in, index terms out. The same code
//! runs when a ticket is indexed and when a query is analysed, for every
//! journal backend; it knows nothing about sqlite. A backend stores the
//! terms as a space-separated string (sqlite: an FTS5 table with the
//! plain `unicode61` tokenizer; PostgreSQL: `to_tsvector('simple', ...)`),
//! so both see the same terms and rank alike.
//!
//! For each word:
//! 1. **Case and accents**: lowercase; `ä ö ü` become `a o u`, `ß` becomes
//!    `ss`, other Latin accents are dropped (`é` -> `e`).
//! 2. **Stopwords** of German and English are dropped.
//! 3. **Stemming** (Snowball, rust-stemmers) with the German stemmer, the
//!    English one, or both when the language is unknown (queries always
//!    use both).
//! 4. **Umlaut spellings**: in the stem, `ae oe ue` after a consonant or at
//!    the start become `a o u`, so `Grüße`, `Gruesse` and `grusse` all end
//!    up as `gruss`. Applied after stemming so that English endings
//!    (`continued` -> `continu`) are stemmed before they could be mistaken
//!    for an umlaut spelling.
//!
//! Compound parts and typos need the vocabulary of the index, so they are
//! resolved at query time by the backend ([`surface`] gives the folded
//! word it looks up; [`substring_key`] the part a compound must contain).

use rust_stemmers::{Algorithm, Stemmer};
use std::sync::OnceLock;

/// Bump when the terms produced for a text change: journals indexed by an
/// older analyzer are reindexed when opened.
pub const ANALYZER_VERSION: i64 = 1;

/// Words longer than this (in bytes, after folding) are not indexed
/// (hashes, base64 blobs, pasted logs).
pub const MAX_WORD: usize = 48;

/// Language of a text, as far as stemming is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    De,
    En,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }
    pub fn parse(s: &str) -> Option<Lang> {
        match s.to_ascii_lowercase().as_str() {
            "de" | "german" | "deutsch" => Some(Lang::De),
            "en" | "english" | "englisch" => Some(Lang::En),
            _ => None,
        }
    }
}

/// One word of a text: where it is, and its folded form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// Byte range in the original text.
    pub start: usize,
    pub end: usize,
    /// Lowercased, umlauts and accents folded to their base letter (no
    /// digraph folding yet): what the stemmers get.
    pub base: String,
}

/// The words of `text` (runs of letters and digits), folded.
pub fn words(text: &str) -> impl Iterator<Item = Word> + '_ {
    let mut it = text.char_indices().peekable();
    std::iter::from_fn(move || loop {
        let (start, c) = it.next()?;
        if !c.is_alphanumeric() {
            continue;
        }
        let mut end = start + c.len_utf8();
        let mut base = String::new();
        fold_char(c, &mut base);
        while let Some(&(i, c)) = it.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            it.next();
            end = i + c.len_utf8();
            if base.len() <= MAX_WORD {
                fold_char(c, &mut base);
            }
        }
        if base.len() > MAX_WORD {
            continue;
        }
        return Some(Word { start, end, base });
    })
}

/// The words of `text` plus, for words joined by hyphens (`E-Mail`,
/// `WLAN-Profil`), the joined word (`email`, `wlanprofil`) after its
/// parts, so `E-Mail` and `Email` meet. Its range covers the whole run.
pub fn index_words(text: &str) -> Vec<Word> {
    let ws: Vec<Word> = words(text).collect();
    let mut out = Vec::with_capacity(ws.len() + 4);
    let mut i = 0;
    while i < ws.len() {
        let mut j = i;
        while j + 1 < ws.len() && &text[ws[j].end..ws[j + 1].start] == "-" {
            j += 1;
        }
        out.extend(ws[i..=j].iter().cloned());
        if j > i {
            let base: String = ws[i..=j].iter().map(|w| w.base.as_str()).collect();
            if base.len() <= MAX_WORD {
                out.push(Word {
                    start: ws[i].start,
                    end: ws[j].end,
                    base,
                });
            }
        }
        i = j + 1;
    }
    out
}

/// The words of a query: like [`index_words`], but a hyphenated run is one
/// word (its parts are returned beside it, to be searched as weaker
/// alternatives).
pub fn query_words(text: &str) -> Vec<(Word, Vec<String>)> {
    let ws: Vec<Word> = words(text).collect();
    let mut out = Vec::with_capacity(ws.len());
    let mut i = 0;
    while i < ws.len() {
        let mut j = i;
        while j + 1 < ws.len() && &text[ws[j].end..ws[j + 1].start] == "-" {
            j += 1;
        }
        if j == i {
            out.push((ws[i].clone(), Vec::new()));
        } else {
            let base: String = ws[i..=j].iter().map(|w| w.base.as_str()).collect();
            let parts = ws[i..=j].iter().map(|w| w.base.clone()).collect();
            if base.len() <= MAX_WORD {
                out.push((
                    Word {
                        start: ws[i].start,
                        end: ws[j].end,
                        base,
                    },
                    parts,
                ));
            }
        }
        i = j + 1;
    }
    out
}

/// Words a helpdesk writes in several ways that stemming cannot join
/// (folded surface forms). Used at query time, as alternatives of the
/// word itself.
const SYNONYMS: &[&[&str]] = &[
    &["email", "mail", "emails", "mails"],
    &["wlan", "wifi", "wireless"],
    &["passwort", "kennwort", "password", "pass"],
    &["laptop", "notebook"],
    &["handy", "smartphone", "mobiltelefon"],
    &["mikro", "mikrofon"],
    &["pc", "rechner", "computer"],
    &["adminrechte", "administratorrechte"],
    &["2fa", "mfa", "zweifaktor"],
    &["rdp", "remotedesktop"],
    &["screenshare", "screensharing", "bildschirmfreigabe"],
];

/// The other spellings of a folded word (empty when it has none).
pub fn synonyms(surface: &str) -> impl Iterator<Item = &'static str> + '_ {
    SYNONYMS
        .iter()
        .filter(move |g| g.contains(&surface))
        .flat_map(|g| g.iter().copied())
        .filter(move |w| *w != surface)
}

fn fold_char(c: char, out: &mut String) {
    for l in c.to_lowercase() {
        match l {
            'ä' | 'à' | 'á' | 'â' | 'ã' | 'å' | 'ā' => out.push('a'),
            'ö' | 'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'ō' => out.push('o'),
            'ü' | 'ù' | 'ú' | 'û' | 'ū' => out.push('u'),
            'é' | 'è' | 'ê' | 'ë' | 'ē' => out.push('e'),
            'í' | 'ì' | 'î' | 'ï' => out.push('i'),
            'ß' => out.push_str("ss"),
            'ç' => out.push('c'),
            'ñ' => out.push('n'),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'ÿ' | 'ý' => out.push('y'),
            // Combining marks (a decomposed "u" + U+0308) vanish.
            '\u{300}'..='\u{36f}' => {}
            l => out.push(l),
        }
    }
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y')
}

/// `ae oe ue` -> `a o u` where they stand for an umlaut: at the start of
/// the word or after a consonant other than `q` (so `neue`, `Steuer`,
/// `Queue`, `Bauer` keep theirs).
pub fn fold_digraphs(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'a' | b'o' | b'u')
            && b.get(i + 1) == Some(&b'e')
            && (i == 0 || (!is_vowel(b[i - 1]) && b[i - 1] != b'q' && b[i - 1].is_ascii()))
        {
            out.push(c as char);
            i += 2;
            continue;
        }
        // Copy one whole UTF-8 character.
        let len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + len]);
        i += len;
    }
    out
}

/// The folded surface form of a word (what the vocabulary of the index
/// holds, for typo correction and compound parts).
pub fn surface(w: &Word) -> String {
    fold_digraphs(&w.base)
}

const STOP_DE: &[&str] = &[
    "aber", "alle", "allem", "allen", "aller", "alles", "als", "also", "am", "an", "auch", "auf",
    "aus", "bei", "beim", "bin", "bis", "bitte", "da", "damit", "dann", "das", "dass", "dem",
    "den", "denn", "der", "des", "dich", "die", "dies", "diese", "diesem", "diesen", "dieser",
    "doch", "dort", "du", "durch", "ein", "eine", "einem", "einen", "einer", "eines", "er", "es",
    "etwas", "euch", "fur", "habe", "haben", "hat", "hatte", "ich", "ihm", "ihn", "ihr", "ihre",
    "im", "in", "ist", "ja", "jetzt", "kann", "kein", "keine", "man", "mehr", "mein", "meine",
    "mich", "mir", "mit", "muss", "nach", "nicht", "noch", "nun", "nur", "ob", "oder", "ohne",
    "schon", "sehr", "sein", "seine", "sich", "sie", "sind", "so", "uber", "um", "und", "uns",
    "unter", "vom", "von", "vor", "war", "was", "weil", "wenn", "werden", "wie", "wieder", "wir",
    "wird", "wo", "zu", "zum", "zur",
];

const STOP_EN: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just",
    "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "some", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "to", "up", "us", "was", "we",
    "were", "what", "when", "which", "while", "who", "why", "will", "with", "would", "you", "your",
];

fn is_stop_de(base: &str) -> bool {
    STOP_DE.binary_search(&base).is_ok()
}
fn is_stop_en(base: &str) -> bool {
    STOP_EN.binary_search(&base).is_ok()
}

/// True for a word that carries no meaning for search in either language.
pub fn is_stopword(base: &str) -> bool {
    is_stop_de(base) || is_stop_en(base)
}

/// A guess from stopwords (and `ä ö ü ß`): `None` when the text is too
/// short or too mixed to tell; then both stemmers are used. Deliberately
/// simple: helpdesk notes are short, and a wrong guess only costs the
/// other language's stems.
pub fn detect(text: &str) -> Option<Lang> {
    let (mut de, mut en) = (0u32, 0u32);
    for (i, w) in words(text).enumerate() {
        if i > 400 {
            break;
        }
        let (d, e) = (is_stop_de(&w.base), is_stop_en(&w.base));
        if d && !e {
            de += 2;
        }
        if e && !d {
            en += 2;
        }
        let raw = &text[w.start..w.end];
        if raw.contains(['ä', 'ö', 'ü', 'ß', 'Ä', 'Ö', 'Ü']) {
            de += 1;
        }
    }
    if de >= 3 && de >= 2 * en {
        Some(Lang::De)
    } else if en >= 3 && en >= 2 * de {
        Some(Lang::En)
    } else {
        None
    }
}

fn stemmer(lang: Lang) -> &'static Stemmer {
    static DE: OnceLock<Stemmer> = OnceLock::new();
    static EN: OnceLock<Stemmer> = OnceLock::new();
    match lang {
        Lang::De => DE.get_or_init(|| Stemmer::create(Algorithm::German)),
        Lang::En => EN.get_or_init(|| Stemmer::create(Algorithm::English)),
    }
}

/// The index terms of one word: its stems in `langs` (deduplicated), or
/// nothing for a stopword.
pub fn word_terms(base: &str, langs: &[Lang]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(2);
    if is_stopword(base) || base.chars().nth(1).is_none() {
        return out;
    }
    for &l in langs {
        let t = fold_digraphs(&stemmer(l).stem(base));
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The stemmers for a text of language `lang` (`None`: both).
pub fn langs(lang: Option<Lang>) -> &'static [Lang] {
    match lang {
        Some(Lang::De) => &[Lang::De],
        Some(Lang::En) => &[Lang::En],
        None => &[Lang::De, Lang::En],
    }
}

/// The index terms of a text, space-separated, in text order. `lang`
/// overrides detection (a ticket's language set by the technician).
pub fn index_text(text: &str, lang: Option<Lang>) -> String {
    let l = langs(lang.or_else(|| detect(text)));
    let mut out = String::with_capacity(text.len());
    for w in index_words(text) {
        for t in word_terms(&w.base, l) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&t);
        }
    }
    out
}

/// The part a word must contain to be a compound made with it: the common
/// prefix of its folded form and its stems (`Warteschlangen` ->
/// `warteschlang`, found in `druckerwarteschlange`). `None` when shorter
/// than `min` characters: short parts match too much by accident.
pub fn substring_key(surface: &str, stems: &[String], min: usize) -> Option<String> {
    let mut n = surface.len();
    for s in stems {
        let common = surface
            .bytes()
            .zip(s.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        n = n.min(common);
    }
    while !surface.is_char_boundary(n) {
        n -= 1;
    }
    let k = &surface[..n];
    (k.chars().count() >= min).then(|| k.to_string())
}

/// Damerau-Levenshtein distance (optimal string alignment) of two short
/// strings, or `None` once it exceeds `max`.
pub fn edit_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, v) in d.iter_mut().take(w).enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        d[i * w] = i;
        let mut row_min = usize::MAX;
        for j in 1..w {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
            row_min = row_min.min(v);
        }
        if row_min > max {
            return None;
        }
    }
    let v = d[a.len() * w + b.len()];
    (v <= max).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(s: &str) -> String {
        index_text(s, None)
    }

    #[test]
    fn stopword_lists_are_sorted() {
        assert!(STOP_DE.windows(2).all(|w| w[0] < w[1]));
        assert!(STOP_EN.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn umlauts_sharp_s_and_their_spellings_meet() {
        let a = terms("Grüße");
        assert_eq!(a, terms("Gruesse"));
        assert_eq!(a, terms("grusse"));
        assert_eq!(a, terms("GRÜSSE"));
        assert_eq!(terms("Passwörter"), terms("Passwoerter"));
        assert_eq!(terms("Störung"), terms("Stoerung"));
        // Not umlauts: diphthongs and "qu" keep their e.
        assert_eq!(fold_digraphs("neue"), "neue");
        assert_eq!(fold_digraphs("queue"), "queue");
        assert_eq!(fold_digraphs("steuer"), "steuer");
        assert_eq!(fold_digraphs("ueber"), "uber");
    }

    #[test]
    fn german_and_english_inflections_share_a_stem() {
        let de = |s| index_text(s, Some(Lang::De));
        let en = |s| index_text(s, Some(Lang::En));
        assert_eq!(de("Drucker"), de("Druckers"));
        assert_eq!(de("drucken"), de("Drucker"));
        assert_eq!(de("Warteschlangen"), de("Warteschlange"));
        assert_eq!(en("printers"), en("printer"));
        assert_eq!(en("continued"), en("continues"));
        // Unknown language: both stemmers; a query for either stem matches.
        let both = terms("Drucker");
        assert!(both.split(' ').any(|t| t == "druck"), "{both}");
    }

    #[test]
    fn stopwords_vanish_and_case_is_folded() {
        let de = |s| index_text(s, Some(Lang::De));
        assert_eq!(de("Der Drucker und die"), de("DRUCKER"));
        assert_eq!(terms("the"), "");
    }

    #[test]
    fn language_is_detected_from_stopwords() {
        assert_eq!(
            detect("Der Drucker druckt nicht, ich habe ihn neu gestartet"),
            Some(Lang::De)
        );
        assert_eq!(
            detect("The printer does not print, I restarted it and it works"),
            Some(Lang::En)
        );
        assert_eq!(detect("VPN Outlook"), None);
    }

    #[test]
    fn hyphenated_words_are_also_joined() {
        assert!(terms("E-Mail").split(' ').any(|t| t == "email"));
        assert!(terms("WLAN-Profil").split(' ').any(|t| t == "wlan"));
        let q = query_words("E-Mail Drucker");
        assert_eq!(q[0].0.base, "email");
        assert_eq!(q[0].1, ["e", "mail"]);
        assert_eq!(q[1].0.base, "drucker");
        assert_eq!(synonyms("wifi").collect::<Vec<_>>(), ["wlan", "wireless"]);
    }

    #[test]
    fn words_keep_their_byte_ranges() {
        let t = "Grüße, Drucker!";
        let w: Vec<_> = words(t).collect();
        assert_eq!(&t[w[0].start..w[0].end], "Grüße");
        assert_eq!(w[0].base, "grusse");
        assert_eq!(&t[w[1].start..w[1].end], "Drucker");
        // Overlong words are skipped.
        let long = "x".repeat(MAX_WORD + 1);
        assert_eq!(words(&long).count(), 0);
    }

    #[test]
    fn substring_keys_and_edit_distance() {
        let stems = vec!["warteschlang".to_string()];
        assert_eq!(
            substring_key("warteschlangen", &stems, 5).as_deref(),
            Some("warteschlang")
        );
        assert_eq!(substring_key("lange", &["lang".into()], 5), None);
        assert_eq!(edit_distance("drucekr", "drucker", 1), Some(1));
        assert_eq!(edit_distance("drucker", "drucker", 1), Some(0));
        assert_eq!(edit_distance("druker", "drucker", 1), Some(1));
        assert_eq!(edit_distance("abc", "xyz", 1), None);
    }
}
