//! Raw (0): every pixel in the client's format, row by row.

use super::{EncodeParams, Encoder};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::{enc, write_rect_header};

pub struct RawEncoder;

impl Encoder for RawEncoder {
    fn encoding(&self) -> i32 {
        enc::RAW
    }

    fn encode(&mut self, frame: &Frame, rect: Rect, p: &EncodeParams, out: &mut Vec<u8>) -> usize {
        write_rect_header(rect, enc::RAW, out);
        out.reserve(rect.area() * p.pf.bytes_per_pixel());
        let native = p.pf.is_native_value() && !p.pf.big_endian;
        for y in rect.y..rect.y + rect.h {
            let row = frame.row(y, rect.x, rect.w);
            if native {
                for &px in row {
                    out.extend_from_slice(&px.to_le_bytes());
                }
            } else {
                for &px in row {
                    p.pf.write_pixel(p.pf.from_native(px), out);
                }
            }
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use crate::rfb::messages::enc;

    #[test]
    fn lossless_round_trips() {
        testutil::lossless_suite(enc::RAW);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::RAW, &testutil::params(pf));
        }
    }
}
