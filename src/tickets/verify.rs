//! `sessions verify` on either backend (moved out of mod.rs so that
//! mod.rs's own items depend on no submodule).

use super::chain::{ChainKey, VerifyReport};
use super::pg;
use super::store::Journal;
use super::target::DbTarget;
use super::{JournalError, Result};

/// Checks a journal without changing anything (`sessions verify`): an
/// sqlite file as [`Journal::verify_file`] does, or the team database in
/// one read-only snapshot (nothing created, migrated or recovered).
pub fn verify_target(target: &DbTarget, key: Option<&ChainKey>) -> Result<VerifyReport> {
    match target {
        DbTarget::Sqlite(path) => Journal::verify_file(path, key),
        DbTarget::Postgres(url) => {
            let pg = pg::Pg::new(url)?;
            match pg.schema_version()? {
                0 => Err(JournalError::NoJournal(pg.shown().into())),
                v if v == pg::SCHEMA_VERSION => pg.verify(key),
                v => Err(JournalError::Invalid(format!(
                    "{} has schema version {v}; this ticketvnc verifies version {}",
                    pg.shown(),
                    pg::SCHEMA_VERSION
                ))),
            }
        }
    }
}
