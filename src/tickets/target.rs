//! Where the journal lives: `--db` / `TICKETVNC_DB`.
//!
//! - `postgres://...` or `postgresql://...`: the team journal on PostgreSQL
//!   (issue 15, see docs/team.md);
//! - `sqlite:PATH`: an sqlite file, said explicitly;
//! - anything else with a URL scheme (`mysql://x`, `http://x`, `file://x`,
//!   `sqlite://x`) is an error, never a file name: before, `--db
//!   postgres://h/db` quietly created a directory tree named `postgres:`;
//! - any other value is the path of an sqlite file, as it always was.

use super::{JournalError, Result};
use std::path::{Path, PathBuf};

/// A parsed `--db` value.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://user:pass@host:port/db?sslmode=...`).
    Postgres(String),
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            DbTarget::Postgres(u) => f.debug_tuple("Postgres").field(&redact_url(u)).finish(),
        }
    }
}

impl std::fmt::Display for DbTarget {
    /// Safe to log and print: a password in the URL is replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DbTarget::Postgres(u) => f.write_str(&redact_url(u)),
        }
    }
}

impl DbTarget {
    /// Parses a `--db` value (see the module documentation).
    pub fn parse(value: &str) -> Result<DbTarget> {
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(DbTarget::Postgres(value.to_owned()));
        }
        if let Some(scheme) = url_scheme(value) {
            // `sqlite:PATH` only; `sqlite://` would be read differently by
            // every tool, so it is refused rather than guessed.
            if scheme.eq_ignore_ascii_case("sqlite") && !value[scheme.len() + 1..].starts_with("//")
            {
                let path = &value[scheme.len() + 1..];
                if path.is_empty() {
                    return Err(JournalError::Invalid(
                        "--db sqlite: needs a path (sqlite:PATH)".into(),
                    ));
                }
                return Ok(DbTarget::Sqlite(PathBuf::from(path)));
            }
            if value[scheme.len() + 1..].starts_with("//") {
                return Err(JournalError::Invalid(format!(
                    "--db {}: ticketvnc does not know the scheme {scheme:?}; \
                     use a file path, sqlite:PATH or postgres://USER@HOST/DB",
                    redact_url(value)
                )));
            }
        }
        if value.is_empty() {
            return Err(JournalError::Invalid("--db is empty".into()));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(value)))
    }

    /// `--db` as clap handed it (an OS string), or the default file.
    pub fn from_arg(db: Option<&Path>) -> Result<DbTarget> {
        match db {
            None => Ok(DbTarget::Sqlite(super::default_db_path()?)),
            Some(p) => match p.to_str() {
                Some(s) => DbTarget::parse(s),
                // Not UTF-8: no URL can be in it; a file name as before.
                None => Ok(DbTarget::Sqlite(p.to_path_buf())),
            },
        }
    }
}

/// `scheme` of `scheme:rest` when it looks like a URL scheme (RFC 3986:
/// a letter, then letters, digits, `+`, `-`, `.`), at least two characters
/// long so that a Windows drive (`C:\x`) stays a path.
fn url_scheme(value: &str) -> Option<&str> {
    let (scheme, _) = value.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

/// The URL with any password replaced by `***` (for logs and messages),
/// in the authority (`user:pass@`) and in a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_values() {
        let pg = |s: &str| DbTarget::Postgres(s.into());
        let file = |s: &str| DbTarget::Sqlite(s.into());
        assert_eq!(
            DbTarget::parse("postgres://h/db").unwrap(),
            pg("postgres://h/db")
        );
        assert_eq!(
            DbTarget::parse("PostgreSQL://u@h:5/d").unwrap(),
            pg("PostgreSQL://u@h:5/d")
        );
        assert_eq!(
            DbTarget::parse("sqlite:/tmp/j.db").unwrap(),
            file("/tmp/j.db")
        );
        assert_eq!(DbTarget::parse("sqlite:rel.db").unwrap(), file("rel.db"));
        assert_eq!(DbTarget::parse("/tmp/j.db").unwrap(), file("/tmp/j.db"));
        assert_eq!(DbTarget::parse("j.db").unwrap(), file("j.db"));
        assert_eq!(DbTarget::parse("C:\\j.db").unwrap(), file("C:\\j.db"));
        // A colon inside a plain name is still a file name.
        assert_eq!(DbTarget::parse("a:b.db").unwrap(), file("a:b.db"));
        for bad in [
            "mysql://h/db",
            "postgress://h/db",
            "file:///tmp/x",
            "sqlite:///tmp/x",
            "http://h",
            "sqlite:",
            "",
        ] {
            assert!(DbTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_never_shown() {
        for (url, shown) in [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=secret&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            (
                "postgres://u:p%40ss@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
            assert_eq!(DbTarget::parse(url).unwrap().to_string(), shown);
            assert!(!format!("{:?}", DbTarget::parse(url).unwrap()).contains("secret"));
        }
        let e = DbTarget::parse("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret") && e.contains("mysql"), "{e}");
    }
}
