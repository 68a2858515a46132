//! Technician accounts for VeNCrypt Plain (X509Plain): a name and a
//! password hashed with Argon2id (PHC string, random salt from the OS RNG).
//! The password is never stored, logged or put in an event.
//!
//! Adding and removing an account are chained events (`technician_added`
//! with the SHA-256 of the PHC string, `technician_removed`), so
//! `sessions verify` notices an account row inserted, edited or deleted
//! with the sqlite3 shell (e.g. somebody adding a login for themselves).
//!
//! [`Journal::verify_technician`] takes the same time whether or not the
//! name exists: an unknown name is checked against a dummy hash made with
//! the same parameters.

use super::rows::added_details;
use super::{now_ms, Journal, JournalError, Result};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::sync::OnceLock;

/// Longest technician name, in bytes.
pub const MAX_TECHNICIAN_NAME: usize = 64;
/// Longest accepted password, in bytes (Argon2 would take more; nobody types more).
pub const MAX_TECHNICIAN_PASSWORD: usize = 1024;

/// A technician account as listed (never the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Technician {
    pub name: String,
    pub created_at: i64,
}

/// Is `name` acceptable as a technician name (1..=64 bytes, no control
/// characters, no whitespace)?
pub fn check_technician_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TECHNICIAN_NAME {
        return Err(JournalError::Invalid(format!(
            "a technician name has 1 to {MAX_TECHNICIAN_NAME} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(JournalError::Invalid(
            "a technician name has no spaces or control characters".into(),
        ));
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // Argon2id, version 0x13, the crate's (OWASP-recommended) defaults:
    // 19 MiB, 2 passes, 1 lane.
    Argon2::default()
}

fn hash_password(password: &[u8]) -> Result<String> {
    // The salt comes from the OS RNG (getrandom).
    argon2()
        .hash_password(password)
        .map(|h: PasswordHash| h.to_string())
        .map_err(|e| JournalError::PasswordHash(e.to_string()))
}

/// The hash unknown names are checked against, so that they cost as much
/// as known ones. Its password is random and forgotten.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut pw);
        hash_password(&pw).expect("hashing a random password")
    })
}

fn check_hash(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2().verify_password(password, &h).is_ok(),
        Err(_) => {
            // A malformed row: still spend the time of a real check.
            let _ = PasswordHash::new(dummy_hash()).map(|h| argon2().verify_password(password, &h));
            false
        }
    }
}

impl Journal {
    /// Adds a technician account. Errors if the name exists, is not a valid
    /// name, or the password is empty or longer than
    /// [`MAX_TECHNICIAN_PASSWORD`].
    pub fn add_technician(&self, name: &str, password: &[u8]) -> Result<Technician> {
        check_technician_name(name)?;
        if password.is_empty() {
            return Err(JournalError::Invalid("the password is empty".into()));
        }
        if password.len() > MAX_TECHNICIAN_PASSWORD {
            return Err(JournalError::Invalid(format!(
                "a password has at most {MAX_TECHNICIAN_PASSWORD} bytes"
            )));
        }
        // Hash before taking the database lock: it takes a while.
        let phc = hash_password(password)?;
        let now = now_ms();
        if let Some(r) = self.on_pg(|pg| {
            pg.write(|tx| {
                let n = tx.execute(
                    "INSERT INTO technicians (name, hash, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&name, &phc, &now],
                )?;
                if n == 0 {
                    return Err(JournalError::TechnicianExists(name.into()));
                }
                super::pg::append(
                    self.chain_key(),
                    tx,
                    now,
                    None,
                    None,
                    "technician_added",
                    &added_details(name, now, &phc),
                )?;
                Ok(())
            })
        }) {
            r?;
            return Ok(Technician {
                name: name.into(),
                created_at: now,
            });
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM technicians WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(JournalError::TechnicianExists(name.into()));
        }
        tx.execute(
            "INSERT INTO technicians (name, hash, created_at) VALUES (?1, ?2, ?3)",
            params![name, phc, now],
        )?;
        self.append(
            &tx,
            now,
            None,
            None,
            "technician_added",
            &added_details(name, now, &phc),
        )?;
        tx.commit()?;
        Ok(Technician {
            name: name.into(),
            created_at: now,
        })
    }

    /// Removes a technician account (sessions it made stay recorded).
    pub fn remove_technician(&self, name: &str) -> Result<()> {
        let now = now_ms();
        if let Some(r) = self.on_pg(|pg| {
            pg.write(|tx| {
                if tx.execute("DELETE FROM technicians WHERE name = $1", &[&name])? == 0 {
                    return Err(JournalError::NoSuchTechnician(name.into()));
                }
                super::pg::append(
                    self.chain_key(),
                    tx,
                    now,
                    None,
                    None,
                    "technician_removed",
                    &serde_json::json!({ "name": name }),
                )?;
                Ok(())
            })
        }) {
            return r;
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM technicians WHERE name = ?1", [name])? == 0 {
            return Err(JournalError::NoSuchTechnician(name.into()));
        }
        self.append(
            &tx,
            now,
            None,
            None,
            "technician_removed",
            &serde_json::json!({ "name": name }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// All technician accounts, by name.
    pub fn technicians(&self) -> Result<Vec<Technician>> {
        if let Some(r) = self.on_pg(|pg| {
            Ok(pg
                .conn()?
                .query(
                    "SELECT name, created_at FROM technicians ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|r| Technician {
                    name: r.get(0),
                    created_at: r.get(1),
                })
                .collect())
        }) {
            return r;
        }
        let c = self.conn();
        let mut st = c.prepare("SELECT name, created_at FROM technicians ORDER BY name")?;
        let v = st
            .query_map([], |r| {
                Ok(Technician {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    /// Whether `password` is right for the account `name`. Costs one
    /// Argon2id verification whether or not the account exists; a
    /// database error counts as "no". Slow by design (tens of
    /// milliseconds): call it off the async runtime.
    pub fn verify_technician(&self, name: &str, password: &[u8]) -> bool {
        let stored: Option<String> = if let Some(r) = self.on_pg(|pg| {
            let mut c = pg.conn()?;
            Ok(
                c.query_opt("SELECT hash FROM technicians WHERE name = $1", &[&name])?
                    .map(|r| r.get(0)),
            )
        }) {
            match r {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "journal error while checking a technician account");
                    None
                }
            }
        } else {
            let c = self.conn();
            match c
                .query_row(
                    "SELECT hash FROM technicians WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
            {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "journal error while checking a technician account");
                    None
                }
            }
        }; // the database lock is released before hashing
        match stored {
            Some(phc) => check_hash(&phc, password),
            None => {
                check_hash(dummy_hash(), password);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("t.db")).unwrap();
        (dir, j)
    }

    /// Journals keep their hashes across crate upgrades: this row was
    /// written by `ticketvnc tech add` built with argon2 0.5 (commit
    /// a37b411); the crate is now argon2 0.6.
    #[test]
    fn a_hash_from_the_previous_argon2_still_verifies() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$lb1FQ3YYYGQOCVxnE6SX4A$7dQoBV0QFXMF48gOd6jEp6fjn7zIdlcgkwkwrorbb7o";
        assert!(check_hash(phc, b"Geheim-2026!"));
        assert!(!check_hash(phc, b"Geheim-2026?"));
    }

    #[test]
    fn right_password_passes_wrong_password_and_unknown_name_fail() {
        let (_d, j) = journal();
        j.add_technician("alice", b"correct horse").unwrap();
        assert!(j.verify_technician("alice", b"correct horse"));
        assert!(!j.verify_technician("alice", b"correct hors"));
        assert!(!j.verify_technician("alice", b""));
        assert!(!j.verify_technician("Alice", b"correct horse"));
        assert!(!j.verify_technician("bob", b"correct horse"));
        j.remove_technician("alice").unwrap();
        assert!(!j.verify_technician("alice", b"correct horse"));
    }

    #[test]
    fn names_and_passwords_are_checked_and_duplicates_refused() {
        let (_d, j) = journal();
        for bad in ["", "a b", "tab\there", "nl\n", "\u{7f}", &"x".repeat(65)] {
            assert!(j.add_technician(bad, b"secret").is_err(), "{bad:?}");
        }
        assert!(j.add_technician(&"x".repeat(64), b"secret").is_ok());
        assert!(j.add_technician("bob", b"").is_err());
        j.add_technician("bob", b"one").unwrap();
        assert!(matches!(
            j.add_technician("bob", b"two"),
            Err(JournalError::TechnicianExists(_))
        ));
        // The first password still holds.
        assert!(j.verify_technician("bob", b"one"));
        assert!(matches!(
            j.remove_technician("carol"),
            Err(JournalError::NoSuchTechnician(_))
        ));
        let names: Vec<_> = j
            .technicians()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["bob".to_string(), "x".repeat(64)]);
        let r = j.verify().unwrap();
        assert!(r.broken.is_none(), "{:?}", r.broken);
    }

    #[test]
    fn stored_hashes_are_salted_argon2id() {
        let (_d, j) = journal();
        j.add_technician("a", b"same password").unwrap();
        j.add_technician("b", b"same password").unwrap();
        let c = j.conn();
        let hashes: Vec<String> = c
            .prepare("SELECT hash FROM technicians ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(hashes.iter().all(|h| h.starts_with("$argon2id$v=19$")));
        assert_ne!(hashes[0], hashes[1], "same salt twice");
    }
}
