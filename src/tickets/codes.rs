//! One-time codes bound to tickets.
//!
//! VNC authentication is DES(challenge) keyed by the password, so the server
//! must know the plaintext code to check a response; it cannot check against
//! a hash. So the code is never stored but *derived*:
//!
//! - `ticketvnc.key` beside the database holds a 32-byte server secret
//!   (mode 0600, created on first use);
//! - each `codes` row holds a random 16-byte nonce, a random 16-byte salt,
//!   the expiry, and used/revoked times;
//! - code = the first 40 bits of HMAC-SHA256(K_code, nonce) written as 8
//!   characters of [`CODE_ALPHABET`] (32 symbols, 5 bits each, no bias),
//!   with K_code = HMAC-SHA256(secret, "ticketvnc/code/v1");
//! - `hash` = HMAC-SHA256(K_hash, salt || code), K_hash =
//!   HMAC-SHA256(secret, "ticketvnc/code-hash/v1"). A plain salted SHA-256
//!   of a 40-bit code could be brute-forced from a copy of the database in
//!   minutes; keyed with the secret it cannot, and whoever has the secret
//!   can derive the codes anyway.
//!
//! Checking: re-derive the code of every live row (unused, unrevoked,
//! unexpired, of an open ticket), compute the DES response for it (as
//! written and in lower case, because people type what they hear), compare
//! in constant time without stopping at the first match, confirm the keyed
//! hash, then mark the row used with `UPDATE .. WHERE used_at IS NULL`
//! inside an IMMEDIATE transaction: exactly one of two racing viewers (in
//! any number of processes) gets `changes() == 1`.

use super::store::{check_ticket_id, create_private_dir, io_err, private_file};
use super::{chain, hex, now_ms, unhex, Journal, JournalError, Result};
use crate::security::{vnc_auth_response, Authenticator, Principal, VncPassword};
use hmac::{KeyInit, Mac};
use rand::RngCore;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use subtle::{ConditionallySelectable, ConstantTimeEq};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
/// (id, ticket, nonce, salt, hash) of a live code.
type CodeRow = (i64, String, Vec<u8>, Vec<u8>, Vec<u8>);

/// 32 symbols without 0/O, 1/l/I; upper case only (read over the phone).
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// VNC authentication uses at most 8 password bytes.
pub const CODE_LEN: usize = 8;
/// Shortest and longest lifetime of a code.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many live codes are tried per authentication (newest first).
pub const MAX_LIVE_CODES: i64 = 4096;

/// A freshly issued code. Its `Debug` never shows the code.
pub struct IssuedCode {
    pub id: i64,
    pub ticket: String,
    /// The code: show it to the technician once; it is not stored.
    pub code: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("id", &self.id)
            .field("ticket", &self.ticket)
            .field("code", &"..")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// The key codes are derived with.
fn code_key(secret: &[u8; 32]) -> [u8; 32] {
    hmac(secret, &[b"ticketvnc/code/v1"])
}

/// The code for `nonce` under `code_key(secret)`.
fn derive_code(k: &[u8; 32], nonce: &[u8]) -> [u8; CODE_LEN] {
    let mac = hmac(k, &[nonce]);
    let bits = u64::from_be_bytes([0, 0, 0, mac[0], mac[1], mac[2], mac[3], mac[4]]);
    core::array::from_fn(|i| CODE_ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize])
}

fn code_hash(secret: &[u8; 32], salt: &[u8], code: &[u8]) -> [u8; 32] {
    let k = hmac(secret, &[b"ticketvnc/code-hash/v1"]);
    hmac(&k, &[salt, code])
}

/// `ticketvnc.db` -> `ticketvnc.key` (same directory).
pub fn key_path(db: &Path) -> PathBuf {
    db.with_extension("key")
}

/// Reads the server secret, creating it (atomically, mode 0600) if missing.
fn load_or_create_secret(db: &Path) -> Result<[u8; 32]> {
    let path = key_path(db);
    for _ in 0..3 {
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let mut s = String::new();
                Read::by_ref(&mut f)
                    .take(200)
                    .read_to_string(&mut s)
                    .map_err(io_err(&path))?;
                let bytes = unhex(s.trim())
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| JournalError::BadKeyFile(path.clone()))?;
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                return Ok(k);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        {
            let mut f = private_file(&tmp, true)?;
            writeln!(f, "{}", hex(&k)).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        // hard_link fails if another process won the race: then read theirs.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(k),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(JournalError::BadKeyFile(path))
}

/// Is `ttl` an allowed code lifetime ([`MIN_TTL`]..=[`MAX_TTL`])?
pub fn check_code_ttl(ttl: Duration) -> Result<()> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Ok(());
    }
    Err(JournalError::Invalid(format!(
        "a code is valid for {} to {}, not {}",
        humantime::format_duration(MIN_TTL),
        humantime::format_duration(MAX_TTL),
        humantime::format_duration(ttl)
    )))
}

impl Journal {
    pub(crate) fn secret(&self) -> Result<[u8; 32]> {
        if let Some(s) = self.secret.get() {
            return Ok(*s);
        }
        let s = load_or_create_secret(self.path())?;
        Ok(*self.secret.get_or_init(|| s))
    }

    /// Issues a fresh one-time code for an open ticket, valid for `ttl`
    /// ([`MIN_TTL`]..=[`MAX_TTL`]) and exactly one successful
    /// authentication.
    pub fn issue_code(&self, ticket: &str, ttl: Duration) -> Result<IssuedCode> {
        check_ticket_id(ticket)?;
        check_code_ttl(ttl)?;
        let secret = self.secret()?;
        let mut nonce = [0u8; 16];
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let code = derive_code(&code_key(&secret), &nonce);
        let hash = code_hash(&secret, &salt, &code);
        let now = now_ms();
        let expires_at = now + ttl.as_millis() as i64;
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM tickets WHERE id = ?1", [ticket], |r| {
                r.get(0)
            })
            .optional()?;
        match status.as_deref() {
            None => return Err(JournalError::NoSuchTicket(ticket.into())),
            Some("closed") => return Err(JournalError::TicketClosed(ticket.into())),
            _ => {}
        }
        tx.execute(
            "INSERT INTO codes (ticket, nonce, salt, hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ticket, &nonce[..], &salt[..], &hash[..], now, expires_at],
        )?;
        let id = tx.last_insert_rowid();
        chain::append(
            &tx,
            now,
            None,
            Some(ticket),
            "code_issued",
            &serde_json::json!({"code_id": id, "expires_at": expires_at}),
        )?;
        tx.commit()?;
        Ok(IssuedCode {
            id,
            ticket: ticket.into(),
            code: String::from_utf8_lossy(&code).into_owned(),
            expires_at,
        })
    }

    /// Finds the live code whose DES response matches and consumes it.
    /// Returns (code id, ticket).
    fn consume_code(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<(i64, String)>> {
        let secret = self.secret()?;
        let now = now_ms();
        let mut c = self.conn();
        // Read phase (no write lock): find a matching row.
        let rows: Vec<CodeRow> = {
            let mut st = c.prepare(
                "SELECT c.id, c.ticket, c.nonce, c.salt, c.hash FROM codes c
                 JOIN tickets t ON t.id = c.ticket
                 WHERE c.used_at IS NULL AND c.revoked_at IS NULL AND c.expires_at > ?1
                   AND t.status = 'open'
                 ORDER BY c.id DESC LIMIT ?2",
            )?;
            let v = st
                .query_map(params![now, MAX_LIVE_CODES], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            v
        };
        // Constant time over the candidates: no early exit, no branch on a match.
        let mut found = subtle::Choice::from(0u8);
        let mut found_idx = 0u64;
        let k = code_key(&secret);
        for (i, (_, _, nonce, _, _)) in rows.iter().enumerate() {
            let code = derive_code(&k, nonce);
            let lower = code.map(|b| b.to_ascii_lowercase());
            let mut hit = subtle::Choice::from(0u8);
            for variant in [&code, &lower] {
                let expected = vnc_auth_response(&VncPassword::new(variant), challenge);
                hit |= expected.ct_eq(response);
            }
            found_idx.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Ok(None);
        }
        let (id, ticket, nonce, salt, hash) = &rows[found_idx as usize];
        let code = derive_code(&k, nonce);
        if !bool::from(code_hash(&secret, salt, &code).ct_eq(hash.as_slice())) {
            // The key file does not belong to this database (replaced?).
            tracing::warn!(
                code_id = id,
                "one-time code hash mismatch: key file does not match the database"
            );
            return Ok(None);
        }
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL
               AND revoked_at IS NULL AND expires_at > ?2",
            params![id, now_ms()],
        )?;
        if n != 1 {
            return Ok(None); // another viewer was faster
        }
        chain::append(
            &tx,
            now_ms(),
            None,
            Some(ticket),
            "code_used",
            &serde_json::json!({"code_id": id}),
        )?;
        tx.commit()?;
        Ok(Some((*id, ticket.clone())))
    }
}

/// An [`Authenticator`] backed by the journal's one-time codes, plus an
/// optional static password (`serve --password-file`) whose sessions belong
/// to an optional ticket (`serve --ticket ID`).
///
/// `verify_vnc` is synchronous and does a short sqlite read (and, on a
/// match, one small write transaction); it is called from a session's
/// tokio task. That is acceptable (once per connection, sub-millisecond
/// uncontended, bounded by the 5 s busy timeout under contention).
pub struct CodeAuthenticator {
    journal: Arc<Journal>,
    password: Option<VncPassword>,
    password_ticket: Option<String>,
}

impl CodeAuthenticator {
    /// Loads (or creates) the key file now so that problems show at startup.
    pub fn new(
        journal: Arc<Journal>,
        password: Option<VncPassword>,
        password_ticket: Option<String>,
    ) -> Result<CodeAuthenticator> {
        journal.secret()?;
        if let Some(t) = &password_ticket {
            check_ticket_id(t)?;
        }
        Ok(CodeAuthenticator {
            journal,
            password,
            password_ticket,
        })
    }
}

impl Authenticator for CodeAuthenticator {
    fn verify_vnc(&self, challenge: &[u8; 16], response: &[u8; 16]) -> Option<Principal> {
        if let Some(pw) = &self.password {
            if pw.verify(challenge, response) {
                return Some(Principal {
                    ticket: self.password_ticket.clone(),
                    credential: "static password".into(),
                    ..Default::default()
                });
            }
        }
        match self.journal.consume_code(challenge, response) {
            Ok(Some((id, ticket))) => Some(Principal {
                ticket: Some(ticket),
                credential: format!("one-time code #{id}"),
                ..Default::default()
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "journal error while checking one-time codes");
                None
            }
        }
    }

    /// A technician account (`ticketvnc tech add`). Its sessions belong to
    /// the same ticket as the static password's (`serve --ticket`). One
    /// Argon2id verification, known name or not: call it off the runtime.
    fn verify_plain(&self, username: &str, password: &[u8]) -> Option<Principal> {
        self.journal
            .verify_technician(username, password)
            .then(|| Principal {
                ticket: self.password_ticket.clone(),
                credential: "technician account".into(),
                technician: Some(username.to_owned()),
                max_rights: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_alphabet_and_differ_per_nonce() {
        let k = code_key(&[7u8; 32]);
        let a = derive_code(&k, b"nonce-a");
        let b = derive_code(&k, b"nonce-b");
        assert_ne!(a, b);
        for c in a.iter().chain(&b) {
            assert!(CODE_ALPHABET.contains(c));
        }
        for bad in b"0O1lI" {
            assert!(!CODE_ALPHABET.contains(bad));
        }
        // 32 distinct symbols: exactly 5 bits each.
        let mut s = CODE_ALPHABET.to_vec();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 32);
    }
}
