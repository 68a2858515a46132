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

use super::files::{create_private_dir, io_err, private_file};
use super::live_codes::{LiveCode, LiveCodes};
use super::rows::{check_ticket_id, CodeRow};
use super::{hex, now_ms, unhex, Journal, JournalError, Result};
use crate::security::{Authenticator, Principal, VncPassword};
use des::cipher::{Block, BlockCipherEncrypt, KeyInit as DesKeyInit};
use des::Des;
use hmac::{KeyInit, Mac};
use rand::RngCore;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use subtle::{ConditionallySelectable, ConstantTimeEq};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// 32 symbols without 0/O, 1/l/I; upper case only (read over the phone).
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// VNC authentication uses at most 8 password bytes.
pub const CODE_LEN: usize = 8;
/// Shortest and longest lifetime of a code.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many codes may be live at once (`issue_code` refuses
/// more). Every check costs this many slots (two DES keys, two blocks
/// each) whatever the number of live codes: about 1 ms in a release build.
pub const MAX_LIVE_CODES: usize = 1024;

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
    load_or_create_secret_at(&key_path(db))
}

fn load_or_create_secret_at(path: &Path) -> Result<[u8; 32]> {
    let path = path.to_path_buf();
    for _ in 0..3 {
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                tighten(&f, &path)?;
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

/// Where the code key of the team database is kept on this machine:
/// `TICKETVNC_CODE_KEY_FILE`, else `$XDG_DATA_HOME/ticketvnc/team-code.key`.
/// Every server and technician machine of a team needs the same file.
pub fn team_key_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TICKETVNC_CODE_KEY_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(super::default_db_path()?.with_file_name("team-code.key"))
}

/// The one-time-code secret of the team database. It never goes into the
/// database (a copy of the database must not give away the codes); the
/// database keeps a 63-bit fingerprint of it, so that a machine with
/// another key file is told at once instead of silently issuing codes
/// no server accepts. The first machine that needs a key for an empty
/// team database creates it; everyone else must be given a copy.
fn team_secret(pg: &super::pg::Pg) -> Result<[u8; 32]> {
    let path = team_key_path()?;
    let fingerprint = |k: &[u8; 32]| {
        let h = hmac(k, &[b"ticketvnc/code-key-check/v1"]);
        i64::from_be_bytes(h[..8].try_into().expect("8 bytes")) & i64::MAX
    };
    let recorded = pg.code_key_check(None)?;
    if recorded.is_some() && !path.exists() {
        return Err(JournalError::CodeKey(format!(
            "the team database's one-time codes are keyed with a key file this machine does not \
             have: copy it from a machine of the team to {} (mode 0600) or set \
             TICKETVNC_CODE_KEY_FILE",
            path.display()
        )));
    }
    let k = load_or_create_secret_at(&path)?;
    let mine = fingerprint(&k);
    match pg.code_key_check(Some(mine))? {
        Some(v) if v == mine => Ok(k),
        _ => Err(JournalError::CodeKey(format!(
            "the code key file {} does not belong to the team database {}: \
             use the team's key file",
            path.display(),
            pg.shown()
        ))),
    }
}

/// A key file readable or writable by group or others is tightened to
/// 0600 with a warning, as the database is.
fn tighten(f: &std::fs::File, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "key file readable by others: tightening permissions to 0600"
            );
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (f, path);
    Ok(())
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
        let s = match self.pg() {
            Some(_) => self.on_pg(team_secret).expect("on PostgreSQL")?,
            None => load_or_create_secret(self.path())?,
        };
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
        if self.pg().is_some() {
            let mut row = CodeRow {
                id: 0,
                ticket: ticket.into(),
                nonce: nonce.to_vec(),
                salt: salt.to_vec(),
                hash: hash.to_vec(),
                created_at: now,
                expires_at,
            };
            let row = self
                .on_pg(|pg| {
                    pg.issue_code(self.chain_key(), &mut row, MAX_LIVE_CODES as i64)?;
                    Ok(row)
                })
                .expect("on PostgreSQL")?;
            return Ok(IssuedCode {
                id: row.id,
                ticket: ticket.into(),
                code: String::from_utf8_lossy(&code).into_owned(),
                expires_at,
            });
        }
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
        let live: i64 = tx.query_row(
            "SELECT COUNT(*) FROM codes WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > ?1",
            [now],
            |r| r.get(0),
        )?;
        if live >= MAX_LIVE_CODES as i64 {
            return Err(JournalError::Invalid(format!(
                "{live} one-time codes are live, the most ticketvnc checks; \
                 close tickets or let codes expire first"
            )));
        }
        tx.execute(
            "INSERT INTO codes (ticket, nonce, salt, hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ticket, &nonce[..], &salt[..], &hash[..], now, expires_at],
        )?;
        let id = tx.last_insert_rowid();
        let row = CodeRow {
            id,
            ticket: ticket.into(),
            nonce: nonce.to_vec(),
            salt: salt.to_vec(),
            hash: hash.to_vec(),
            created_at: now,
            expires_at,
        };
        self.append(
            &tx,
            now,
            None,
            Some(ticket),
            "code_issued",
            &serde_json::json!({"code_id": id, "expires_at": expires_at, "row_sha256": row.digest()}),
        )?;
        tx.commit()?;
        Ok(IssuedCode {
            id,
            ticket: ticket.into(),
            code: String::from_utf8_lossy(&code).into_owned(),
            expires_at,
        })
    }

    /// The live codes, reloaded when the `codes` generation counter
    /// (bumped by trigger on any change to `codes` or a ticket's status)
    /// moved since the last load.
    fn live_codes(&self) -> Result<std::sync::MutexGuard<'_, Option<LiveCodes>>> {
        let generation: i64 = match self.pg() {
            Some(_) => self
                .on_pg(|pg| pg.codes_generation())
                .expect("on PostgreSQL")?,
            None => self.conn().query_row(
                "SELECT value FROM counters WHERE name = 'codes'",
                [],
                |r| r.get(0),
            )?,
        };
        let mut g = self.live_codes.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_none_or(|l| l.generation != generation) {
            *g = Some(self.load_live_codes(generation)?);
        }
        Ok(g)
    }

    fn load_live_codes(&self, generation: i64) -> Result<LiveCodes> {
        let k = code_key(&self.secret()?);
        if let Some(rows) = self.on_pg(|pg| pg.live_code_rows(MAX_LIVE_CODES as i64)) {
            let entries = rows?
                .into_iter()
                .map(|row| {
                    let code = derive_code(&k, &row.nonce);
                    let lower = code.map(|b| b.to_ascii_lowercase());
                    LiveCode {
                        row,
                        ciphers: [vnc_cipher(&code), vnc_cipher(&lower)],
                    }
                })
                .collect::<Vec<_>>();
            tracing::debug!(live = entries.len(), generation, "one-time codes loaded");
            return Ok(LiveCodes {
                generation,
                entries,
            });
        }
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT c.id, c.ticket, c.nonce, c.salt, c.hash, c.created_at, c.expires_at FROM codes c
             JOIN tickets t ON t.id = c.ticket
             WHERE c.used_at IS NULL AND c.revoked_at IS NULL AND c.expires_at > ?1
               AND t.status = 'open'
             ORDER BY c.id DESC LIMIT ?2",
        )?;
        let entries = st
            .query_map(params![now_ms(), MAX_LIVE_CODES as i64], |r| {
                let nonce: Vec<u8> = r.get(2)?;
                let code = derive_code(&k, &nonce);
                let lower = code.map(|b| b.to_ascii_lowercase());
                Ok(LiveCode {
                    row: CodeRow {
                        id: r.get(0)?,
                        ticket: r.get(1)?,
                        nonce,
                        salt: r.get(3)?,
                        hash: r.get(4)?,
                        created_at: r.get(5)?,
                        expires_at: r.get(6)?,
                    },
                    ciphers: [vnc_cipher(&code), vnc_cipher(&lower)],
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(live = entries.len(), generation, "one-time codes loaded");
        Ok(LiveCodes {
            generation,
            entries,
        })
    }

    /// Finds the live code whose DES response matches and consumes it.
    /// Returns (code id, ticket).
    ///
    /// The work does not depend on how many codes are live: every check
    /// runs [`MAX_LIVE_CODES`] slots (real codes, then a dummy key), two
    /// DES keys each (as written and in lower case), with no early exit
    /// and no branch on a match.
    fn consume_code(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<(i64, String)>> {
        let secret = self.secret()?;
        let now = now_ms();
        let (row, ops) = {
            let live = self.live_codes()?;
            let entries = live.as_ref().map(|l| &l.entries[..]).unwrap_or(&[]);
            let dummy = dummy_ciphers();
            let mut found = subtle::Choice::from(0u8);
            let mut found_idx = 0u64;
            let mut ops = 0u64;
            for i in 0..MAX_LIVE_CODES {
                let (ciphers, usable) = match entries.get(i) {
                    Some(e) => (&e.ciphers, e.row.expires_at > now),
                    None => (dummy, false),
                };
                let mut hit = subtle::Choice::from(0u8);
                for cipher in ciphers {
                    let mut out = *challenge;
                    for block in out.chunks_exact_mut(8) {
                        let block: &mut Block<Des> = block.try_into().expect("chunks of 8");
                        cipher.encrypt_block(block);
                        ops += 1;
                    }
                    hit |= out.ct_eq(response);
                }
                hit &= subtle::Choice::from(usable as u8);
                found_idx.conditional_assign(&(i as u64), hit);
                found |= hit;
            }
            let row = bool::from(found).then(|| entries[found_idx as usize].row.clone());
            (row, ops)
        };
        self.des_ops
            .fetch_add(ops, std::sync::atomic::Ordering::Relaxed);
        let Some(row) = row else { return Ok(None) };
        let code = derive_code(&code_key(&secret), &row.nonce);
        if !bool::from(code_hash(&secret, &row.salt, &code).ct_eq(row.hash.as_slice())) {
            // The key file does not belong to this database (replaced?).
            tracing::warn!(
                code_id = row.id,
                "one-time code hash mismatch: key file does not match the database"
            );
            return Ok(None);
        }
        // Exactly one of two servers racing for the code gets `true`
        // (UPDATE .. WHERE used_at IS NULL under the chain lock).
        if let Some(won) = self.on_pg(|pg| pg.use_code(self.chain_key(), &row)) {
            let won = won?;
            return Ok(won.then_some((row.id, row.ticket)));
        }
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The row must still say live, and agree with what the chain
        // recorded about it: a code set back to unused (or revoked, or
        // given a later expiry) behind ticketvnc's back is refused.
        let current: Option<CodeRow> = tx
            .query_row(
                "SELECT c.id, c.ticket, c.nonce, c.salt, c.hash, c.created_at, c.expires_at
                 FROM codes c JOIN tickets t ON t.id = c.ticket
                 WHERE c.id = ?1 AND c.used_at IS NULL AND c.revoked_at IS NULL
                   AND c.expires_at > ?2 AND t.status = 'open'",
                params![row.id, now],
                |r| {
                    Ok(CodeRow {
                        id: r.get(0)?,
                        ticket: r.get(1)?,
                        nonce: r.get(2)?,
                        salt: r.get(3)?,
                        hash: r.get(4)?,
                        created_at: r.get(5)?,
                        expires_at: r.get(6)?,
                    })
                },
            )
            .optional()?;
        let Some(current) = current.filter(|c| *c == row) else {
            return Ok(None); // another viewer was faster, or it changed
        };
        if let Some(why) = chain_disagrees(&tx, &current)? {
            tracing::warn!(
                code_id = row.id,
                ticket = %row.ticket,
                why,
                "one-time code refused: its row disagrees with the journal chain (edited outside ticketvnc?)"
            );
            return Ok(None);
        }
        let used_at = now_ms();
        tx.execute(
            "UPDATE codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![row.id, used_at],
        )?;
        self.append(
            &tx,
            used_at,
            None,
            Some(&row.ticket),
            "code_used",
            &serde_json::json!({"code_id": row.id, "used_at": used_at}),
        )?;
        tx.commit()?;
        Ok(Some((row.id, row.ticket)))
    }

    /// DES block operations done checking one-time codes so far. A test
    /// hook: the count per check is the same whatever the number of live
    /// codes.
    #[doc(hidden)]
    pub fn des_operations(&self) -> u64 {
        self.des_ops.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why the chain does not back this live code row, if it does not: its
/// `code_issued` event must exist and match the row, and there must be
/// no `code_used` event for it and no `ticket_closed` of its ticket after
/// it was issued (closing revokes every unused code).
pub(crate) fn chain_disagrees(
    c: &rusqlite::Connection,
    row: &CodeRow,
) -> Result<Option<&'static str>> {
    let issued: Option<(i64, String)> = c
        .query_row(
            "SELECT seq, details FROM events WHERE kind = 'code_issued' AND ticket = ?1
               AND json_extract(details, '$.code_id') = ?2 ORDER BY seq LIMIT 1",
            params![row.ticket, row.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, details)) = issued else {
        return Ok(Some("no code_issued event"));
    };
    let d: serde_json::Value = serde_json::from_str(&details).unwrap_or_default();
    let matches = match d["row_sha256"].as_str() {
        Some(h) => h == row.digest(),
        // Written before schema 3: only the expiry was recorded.
        None => d["expires_at"].as_i64() == Some(row.expires_at),
    };
    if !matches {
        return Ok(Some("differs from its code_issued event"));
    }
    let used: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE kind = 'code_used' AND ticket = ?1
           AND json_extract(details, '$.code_id') = ?2)",
        params![row.ticket, row.id],
        |r| r.get(0),
    )?;
    if used {
        return Ok(Some("a code_used event says it was used"));
    }
    let closed: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE kind = 'ticket_closed' AND ticket = ?1
           AND seq > ?2)",
        params![row.ticket, seq],
        |r| r.get(0),
    )?;
    if closed {
        return Ok(Some("its ticket was closed after it was issued (revoked)"));
    }
    Ok(None)
}

/// The DES cipher VNC authentication uses for `password` (8 bytes, each
/// byte's bits mirrored).
fn vnc_cipher(password: &[u8; CODE_LEN]) -> Des {
    let mut key = password.map(u8::reverse_bits);
    let cipher = <Des as DesKeyInit>::new(&key.into());
    zeroize::Zeroize::zeroize(&mut key);
    cipher
}

/// Keys no code can have (outside the alphabet): the padding slots.
fn dummy_ciphers() -> &'static [Des; 2] {
    static DUMMY: std::sync::OnceLock<[Des; 2]> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        [
            vnc_cipher(b"\0\0\0\0\0\0\0\0"),
            vnc_cipher(b"\x01\0\0\0\0\0\0\0"),
        ]
    })
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

/// What a viewer is told when its code cannot be checked.
pub const JOURNAL_UNREACHABLE: &str =
    "the session journal cannot be reached, so one-time codes cannot be checked; try again in a minute";

impl Authenticator for CodeAuthenticator {
    fn check_vnc(
        &self,
        challenge: &[u8; 16],
        response: &[u8; 16],
    ) -> Result<Option<Principal>, String> {
        if let Some(pw) = &self.password {
            if pw.verify(challenge, response) {
                return Ok(self.verify_vnc(challenge, response));
            }
        }
        match self.journal.consume_code(challenge, response) {
            Ok(Some((id, ticket))) => Ok(Some(Principal {
                ticket: Some(ticket),
                credential: format!("one-time code #{id}"),
                ..Default::default()
            })),
            Ok(None) => Ok(None),
            Err(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "team database unreachable: refusing a viewer");
                Err(JOURNAL_UNREACHABLE.into())
            }
            Err(e) => {
                tracing::error!(error = %e, "journal error while checking one-time codes");
                Ok(None)
            }
        }
    }

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

    fn respond(code: &str, challenge: &[u8; 16]) -> [u8; 16] {
        crate::security::vnc_auth_response(&VncPassword::new(code.as_bytes()), challenge)
    }

    #[test]
    fn the_cached_cipher_is_vnc_authentication() {
        let ch = *b"0123456789abcdef";
        let mut out = ch;
        let c = vnc_cipher(b"K7MX4QPN");
        for b in out.chunks_exact_mut(8) {
            c.encrypt_block(b.try_into().unwrap());
        }
        assert_eq!(out, respond("K7MX4QPN", &ch));
    }

    /// Work per check, counted in DES block operations: the same with one
    /// live code and with a thousand, for a wrong and for a right answer.
    #[test]
    fn checking_a_response_costs_the_same_whatever_the_number_of_live_codes() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("t.db")).unwrap();
        j.open_ticket("1", None).unwrap();
        let ttl = Duration::from_secs(600);
        let ch = [7u8; 16];
        let cost = |response: [u8; 16]| {
            let before = j.des_operations();
            let t = std::time::Instant::now();
            let r = j.consume_code(&ch, &response).unwrap();
            (j.des_operations() - before, t.elapsed(), r.is_some())
        };
        let first = j.issue_code("1", ttl).unwrap();
        let (one_wrong, t1, ok) = cost([0; 16]);
        assert!(!ok);
        for _ in 0..999 {
            j.issue_code("1", ttl).unwrap();
        }
        let (many_wrong, t1000, ok) = cost([0; 16]);
        assert!(!ok);
        let (many_right, _, ok) = cost(respond(&first.code, &ch));
        assert!(ok, "the oldest of 1000 live codes is accepted");
        let (_, _, again) = cost(respond(&first.code, &ch));
        assert!(!again, "used twice");
        println!("one check: {t1:?} with 1 live code, {t1000:?} with 1000");
        assert_eq!(one_wrong, (MAX_LIVE_CODES * 4) as u64);
        assert_eq!(many_wrong, one_wrong);
        assert_eq!(many_right, one_wrong);
    }
}
