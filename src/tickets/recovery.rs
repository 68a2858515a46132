//! Crash recovery: each process holds a lock file while its sessions are
//! open; sessions of an owner whose lock is free again (its process is
//! gone) are closed as "crash" when a journal is opened.

use super::events::end_in_tx;
use super::files::{create_private_dir, private_file, sibling, OwnerLock};
use super::rows::SessionStats;
use super::store::Journal;
use super::{hex, now_ms, JournalError, Result};
use rusqlite::TransactionBehavior;
use std::fs::OpenOptions;
use std::path::PathBuf;

impl Journal {
    fn live_dir(&self) -> PathBuf {
        sibling(&self.path, ".live")
    }

    /// This process's owner id, creating and locking its lock file on first use.
    pub(super) fn owner_id(&self) -> Result<String> {
        let mut g = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = g.as_ref() {
            return Ok(o.id.clone());
        }
        let dir = self.live_dir();
        create_private_dir(&dir)?;
        let mut raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let id = format!("{}-{}", std::process::id(), hex(&raw));
        let path = dir.join(format!("{id}.lock"));
        let file = private_file(&path, true)?;
        file.try_lock().map_err(|e| JournalError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        *g = Some(OwnerLock {
            id: id.clone(),
            path,
            _file: file,
        });
        Ok(id)
    }

    /// Closes, as "crash", the open sessions of every owner whose lock file
    /// is not locked any more (its process is gone). Live processes hold
    /// their lock, so a CLI opening the database never closes the sessions
    /// of a running `serve`.
    pub(super) fn recover_crashed(&self) -> Result<u64> {
        let owners: Vec<Option<String>> = {
            let c = self.conn();
            let mut st = c.prepare("SELECT DISTINCT owner FROM sessions WHERE ended_at IS NULL")?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            v
        };
        let own = self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|o| o.id.clone());
        let dir = self.live_dir();
        let mut closed = 0;
        for owner in owners {
            if owner.is_some() && owner == own {
                continue;
            }
            // Hold the dead owner's lock while closing its sessions.
            let mut held = None;
            if let Some(o) = &owner {
                if o.contains(['/', '\\']) || o.contains("..") {
                    continue;
                }
                let lock_path = dir.join(format!("{o}.lock"));
                match OpenOptions::new().read(true).write(true).open(&lock_path) {
                    Ok(f) => match f.try_lock() {
                        Ok(()) => held = Some((f, lock_path)),
                        Err(std::fs::TryLockError::WouldBlock) => continue, // alive
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check session owner; leaving its sessions open");
                            continue;
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check session owner; leaving its sessions open");
                        continue;
                    }
                }
            }
            closed += self.close_owner_sessions(owner.as_deref())?;
            if let Some((_f, p)) = held {
                let _ = std::fs::remove_file(p);
            }
        }
        if closed > 0 {
            tracing::warn!(
                sessions = closed,
                "closed sessions left open by a crashed process"
            );
        }
        Ok(closed)
    }

    fn close_owner_sessions(&self, owner: Option<&str>) -> Result<u64> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut st = tx.prepare(
                "SELECT id FROM sessions WHERE ended_at IS NULL AND owner IS ?1 ORDER BY id",
            )?;
            let v = st
                .query_map([owner], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            v
        };
        let now = now_ms();
        for &id in &ids {
            end_in_tx(self, &tx, id, now, "crash", SessionStats::default())?;
        }
        tx.commit()?;
        Ok(ids.len() as u64)
    }
}
