//! Zlib (6): the raw pixels of each rectangle through one zlib stream that
//! lives as long as the connection, each rectangle ended by a sync flush.

use super::{
    parallel, translate_rect, write_pixels, zlib_level, Deflater, DetachedStreams, EncodeParams,
    Encoder,
};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::UpdateBuf;

/// Default zlib level when the client sent no compression level (zlib's own default).
const DEFAULT_LEVEL: u32 = 6;
/// Rectangles are sent in bands of at most this many raw bytes so one
/// rectangle's data length always fits the 32-bit field and buffers stay small.
const MAX_BAND_BYTES: usize = 1 << 20;

pub struct ZlibEncoder {
    z: Deflater,
    px: Vec<u32>,
    raw: Vec<u8>,
    packed: Vec<u8>,
}

impl Default for ZlibEncoder {
    fn default() -> Self {
        ZlibEncoder {
            z: Deflater::new(DEFAULT_LEVEL),
            px: Vec::new(),
            raw: Vec::new(),
            packed: Vec::new(),
        }
    }
}

/// Rows in each band of `rect`.
fn band_rows(rect: Rect, p: &EncodeParams) -> u16 {
    let row_bytes = (rect.w as usize * p.pf.bytes_per_pixel()).max(1);
    (MAX_BAND_BYTES / row_bytes).clamp(1, u16::MAX as usize) as u16
}

impl Encoder for ZlibEncoder {
    fn encoding(&self) -> i32 {
        enc::ZLIB
    }

    fn encode_detached(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        streams: &mut DetachedStreams,
        out: &mut UpdateBuf,
    ) -> usize {
        // The run's deflater (empty window at its start, no zlib header):
        // its bytes continue any viewer's started stream.
        streams.ensure(1, zlib_level(p, DEFAULT_LEVEL), false);
        std::mem::swap(&mut self.z, &mut streams.z[0]);
        let n = self.encode(frame, rect, p, out);
        std::mem::swap(&mut self.z, &mut streams.z[0]);
        n
    }

    fn takes_detached(&self) -> bool {
        // Detached bytes carry no zlib header: the stream must have sent it.
        self.z.is_started()
    }

    fn detached_sent(&mut self) {
        self.z.forget_history();
    }

    fn rect_count(&self, rect: Rect, p: &EncodeParams) -> usize {
        (rect.h as usize).div_ceil(band_rows(rect, p) as usize)
    }

    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize {
        let level = zlib_level(p, DEFAULT_LEVEL);
        let band_rows = band_rows(rect, p);
        let mut n = 0;
        let mut y = rect.y;
        while y < rect.y + rect.h {
            let bh = band_rows.min(rect.y + rect.h - y);
            let band = Rect::new(rect.x, y, rect.w, bh);
            translate_rect(frame, band, &p.pf, &mut self.px);
            self.raw.clear();
            write_pixels(&p.pf, &self.px, &mut self.raw);
            self.packed.clear();
            self.z
                .deflate_sync_par(level, &self.raw, &mut self.packed, parallel::threads());
            out.rect_header(band, enc::ZLIB);
            out.extend_from_slice(&(self.packed.len() as u32).to_be_bytes());
            out.extend_from_slice(&self.packed);
            n += 1;
            y += bh;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use crate::rfb::messages::enc;

    #[test]
    fn lossless_round_trips() {
        testutil::lossless_suite(enc::ZLIB);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::ZLIB, &testutil::params(pf));
        }
    }
}
