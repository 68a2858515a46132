//! RRE (2): a background colour and single-colour subrectangles.
//!
//! The background is the most common pixel value. When the subrectangles
//! would take more bytes than the raw pixels, the rectangle is sent as Raw
//! instead (every client must accept Raw), so RRE never inflates the data
//! beyond raw size plus one header.

use super::raw::RawEncoder;
use super::{find_subrects, most_common, translate_rect, EncodeParams, Encoder, Palette};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::UpdateBuf;

#[derive(Default)]
pub struct RreEncoder {
    px: Vec<u32>,
    pal: Palette,
    subrects: Vec<u8>,
}

impl Encoder for RreEncoder {
    fn encoding(&self) -> i32 {
        enc::RRE
    }

    fn encode(
        &mut self,
        frame: &Frame,
        rect: Rect,
        p: &EncodeParams,
        out: &mut UpdateBuf,
    ) -> usize {
        let pf = &p.pf;
        let bpp = pf.bytes_per_pixel();
        translate_rect(frame, rect, pf, &mut self.px);
        let bg = most_common(&self.px, &mut self.pal);
        let raw_size = rect.area() * bpp;
        let (w, h) = (rect.w as usize, rect.h as usize);
        self.subrects.clear();
        let subrects = &mut self.subrects;
        let mut n: u32 = 0;
        let fits = find_subrects(&mut self.px, w, h, bg, true, |x, y, sw, sh, c| {
            pf.write_pixel(c, subrects);
            for v in [x, y, sw, sh] {
                subrects.extend_from_slice(&(v as u16).to_be_bytes());
            }
            n += 1;
            subrects.len() + 4 + bpp <= raw_size
        });
        if !fits {
            return RawEncoder.encode(frame, rect, p, out);
        }
        out.rect_header(rect, enc::RRE);
        out.extend_from_slice(&n.to_be_bytes());
        pf.write_pixel(bg, out);
        out.extend_from_slice(&self.subrects);
        1
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use crate::rfb::messages::enc;
    use crate::rfb::PixelFormat;

    #[test]
    fn lossless_round_trips() {
        testutil::lossless_suite(enc::RRE);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::RRE, &testutil::params(pf));
        }
    }

    use super::super::new_encoder;
    use crate::framebuffer::{Frame, Rect};
    use rfb_decode::Decoder;

    #[test]
    fn wire_bytes_and_raw_fallback() {
        let mut f = Frame::new(8, 4);
        f.fill(0x0000ff);
        f[2 * 8 + 1] = 0xff0000;
        f[2 * 8 + 2] = 0xff0000;
        let mut out = crate::rfb::UpdateBuf::new();
        new_encoder(enc::RRE).encode(
            &f,
            f.bounds(),
            &testutil::params(PixelFormat::BGR233),
            &mut out,
        );
        // bg = blue (0xc0 in BGR233), one red (0x07) subrect at (1,2) 2x1.
        assert_eq!(
            *out,
            vec![
                0, 0, 0, 0, 0, 8, 0, 4, 0, 0, 0, 2, 0, 0, 0, 1, 0xc0, 0x07, 0, 1, 0, 2, 0, 2, 0, 1
            ]
        );
        // Three pixels: RRE (14 bytes) would be larger than raw (3), so Raw.
        out.clear();
        new_encoder(enc::RRE).encode(
            &f,
            Rect::new(0, 2, 3, 1),
            &testutil::params(PixelFormat::BGR233),
            &mut out,
        );
        assert_eq!(
            *out,
            vec![0, 0, 0, 2, 0, 3, 0, 1, 0, 0, 0, 0, 0xc0, 0x07, 0x07]
        );
        // Noise: RRE would be larger than raw, so Raw is sent.
        let noise = testutil::palette_frame(40, 40, 1600, &PixelFormat::NATIVE);
        let p = testutil::params(PixelFormat::NATIVE);
        let mut d = Decoder::new();
        let size = testutil::roundtrip_with(
            new_encoder(enc::RRE).as_mut(),
            &mut d,
            &noise,
            noise.bounds(),
            &p,
            0,
            "noise",
        );
        assert_eq!(size, 12 + 40 * 40 * 4);
        assert_eq!(d.stats.rects.get(&enc::RAW), Some(&1));
    }
}
