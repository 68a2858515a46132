//! The byte buffers both phases of a connection share: unparsed input
//! behind a read offset, and output queued for the peer. The handshake
//! hands them to the established phase, so bytes a viewer pipelined
//! behind ClientInit are neither lost nor parsed twice.

use super::error::ProtocolError;
use super::limits;

/// Largest amount of unparsed input a connection will hold: the largest
/// message plus one read.
pub(super) const MAX_INBUF: usize = limits::MAX_MESSAGE_BYTES + 64 * 1024;

pub(super) struct Buffers {
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` already consumed (dropped once per `receive`).
    pub(super) rpos: usize,
    /// Bytes moved by compacting `inbuf` (the cost the read offset bounds).
    #[cfg(test)]
    pub(super) moved: usize,
    /// Bytes queued for the peer.
    pub(super) out: Vec<u8>,
}

impl Buffers {
    pub(super) fn new(out: Vec<u8>) -> Buffers {
        Buffers {
            inbuf: Vec::new(),
            rpos: 0,
            #[cfg(test)]
            moved: 0,
            out,
        }
    }

    /// Append received bytes; the caller closes on an error.
    pub(super) fn receive(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        // Drop what was consumed once per batch, not once per message.
        if self.rpos > 0 {
            #[cfg(test)]
            {
                self.moved += self.inbuf.len() - self.rpos;
            }
            self.inbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.inbuf.len() + data.len() > MAX_INBUF {
            return Err(ProtocolError::LimitExceeded {
                what: "unprocessed input",
                got: (self.inbuf.len() + data.len()) as u64,
                limit: MAX_INBUF as u64,
            });
        }
        self.inbuf.extend_from_slice(data);
        Ok(())
    }

    /// Received bytes not consumed yet.
    pub(super) fn input(&self) -> &[u8] {
        &self.inbuf[self.rpos..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.rpos += n;
    }

    /// Everything not consumed, taken out (the TLS layer's bytes).
    pub(super) fn take_unprocessed(&mut self) -> Vec<u8> {
        let rest = self.inbuf.split_off(self.rpos);
        self.inbuf.clear();
        self.rpos = 0;
        rest
    }

    /// Forget all input (a closed connection reads nothing more).
    pub(super) fn clear_input(&mut self) {
        self.inbuf.clear();
        self.rpos = 0;
    }

    pub(super) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
