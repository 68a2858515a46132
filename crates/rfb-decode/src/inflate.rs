//! Bounded zlib inflation for the streams that live as long as the
//! connection (zlib, ZRLE, Tight's four).

use crate::DecodeError;
use flate2::{Decompress, FlushDecompress, Status};

/// Feed all of `input` to `d`, appending its output to `out` (cleared
/// first). More than `cap` bytes of output is an error, checked before it
/// is allocated.
pub(crate) fn inflate(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
) -> Result<(), DecodeError> {
    out.clear();
    let start = d.total_in();
    loop {
        if out.len() == out.capacity() {
            if out.len() > cap {
                return Err(DecodeError::TooLarge);
            }
            // Room for at most one byte beyond the cap, to detect overflow.
            let room = (cap + 1 - out.len()).min(out.len().max(4096));
            out.reserve_exact(room);
        }
        let before = (d.total_in(), out.len());
        let consumed = (d.total_in() - start) as usize;
        let status = d
            .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .map_err(|_| DecodeError::Zlib)?;
        if out.len() > cap {
            return Err(DecodeError::TooLarge);
        }
        if status == Status::StreamEnd {
            // RFB zlib streams never end; a client could not go on.
            return Err(DecodeError::Invalid("zlib stream ended"));
        }
        let consumed = (d.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
        if (d.total_in(), out.len()) == before && out.len() < out.capacity() {
            return Err(DecodeError::Zlib);
        }
    }
}
