//! The live one-time codes a [`Journal`](super::Journal) keeps in memory
//! (filled and checked in codes.rs; here so that store.rs can hold them
//! without depending on codes.rs).

use super::rows::CodeRow;
use des::Des;

/// Live codes kept in memory, with their DES key schedules.
pub(crate) struct LiveCodes {
    pub(super) generation: i64,
    pub(super) entries: Vec<LiveCode>,
}

pub(super) struct LiveCode {
    pub(super) row: CodeRow,
    /// The code as written and in lower case.
    pub(super) ciphers: [Des; 2],
}
