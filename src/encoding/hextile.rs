//! Hextile (5): 16x16 tiles, left to right and top to bottom, each one raw,
//! solid, or a background with subrectangles (one foreground colour or
//! coloured). Background and foreground carry over from the previous tile
//! of the same rectangle and are only re-sent when they change. After a Raw
//! tile neither is defined any more, and after a tile with coloured
//! subrectangles the foreground is treated as undefined (decoders differ
//! on whether those colours replace it), so both are re-specified then.

use super::{find_subrects, most_common, translate_rect, EncodeParams, Encoder, Palette};
use crate::framebuffer::{Frame, Rect};
use crate::rfb::messages::enc;
use crate::rfb::UpdateBuf;

pub const RAW: u8 = 1;
pub const BACKGROUND_SPECIFIED: u8 = 2;
pub const FOREGROUND_SPECIFIED: u8 = 4;
pub const ANY_SUBRECTS: u8 = 8;
pub const SUBRECTS_COLOURED: u8 = 16;

#[derive(Default)]
pub struct HextileEncoder {
    px: Vec<u32>,
    tile: Vec<u32>,
    subrects: Vec<u8>,
    pal: Palette,
}

impl Encoder for HextileEncoder {
    fn encoding(&self) -> i32 {
        enc::HEXTILE
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
        out.rect_header(rect, enc::HEXTILE);
        let (w, h) = (rect.w as usize, rect.h as usize);
        let mut bg: Option<u32> = None;
        let mut fg: Option<u32> = None;
        for ty in (0..h).step_by(16) {
            let th = (h - ty).min(16);
            for tx in (0..w).step_by(16) {
                let tw = (w - tx).min(16);
                self.tile.clear();
                for y in ty..ty + th {
                    self.tile
                        .extend_from_slice(&self.px[y * w + tx..y * w + tx + tw]);
                }
                // Up to three distinct colours, with counts of the first two.
                let c0 = self.tile[0];
                let mut c1 = None;
                let mut n0 = 0usize;
                let mut many = false;
                for &v in &self.tile {
                    if v == c0 {
                        n0 += 1;
                    } else {
                        match c1 {
                            None => c1 = Some(v),
                            Some(c) if c == v => {}
                            Some(_) => many = true,
                        }
                    }
                }
                let Some(c1) = c1 else {
                    // Solid tile.
                    if bg == Some(c0) {
                        out.push(0);
                    } else {
                        out.push(BACKGROUND_SPECIFIED);
                        pf.write_pixel(c0, out);
                        bg = Some(c0);
                    }
                    continue;
                };
                let raw_size = tw * th * bpp;
                let tile_bg = if many {
                    most_common(&self.tile, &mut self.pal)
                } else if n0 * 2 >= self.tile.len() {
                    c0
                } else {
                    c1
                };
                let mut flags = ANY_SUBRECTS;
                let mut size = 2; // flags + count
                if bg != Some(tile_bg) {
                    flags |= BACKGROUND_SPECIFIED;
                    size += bpp;
                }
                let mono_fg = if many {
                    flags |= SUBRECTS_COLOURED;
                    None
                } else {
                    let f = if tile_bg == c0 { c1 } else { c0 };
                    if fg != Some(f) {
                        flags |= FOREGROUND_SPECIFIED;
                        size += bpp;
                    }
                    Some(f)
                };
                // Every colour but the background needs a subrectangle of
                // its own: when that alone reaches the raw size, go raw.
                let min_subrect = if many { bpp + 2 } else { 2 };
                let too_many = many && {
                    let k = self.pal.len().max(3);
                    size + (k - 1) * min_subrect >= raw_size
                };
                self.subrects.clear();
                let subrects = &mut self.subrects;
                let mut count = 0usize;
                let fits = !too_many
                    && find_subrects(&mut self.tile, tw, th, tile_bg, false, |x, y, sw, sh, c| {
                        if many {
                            pf.write_pixel(c, subrects);
                        }
                        subrects.push(((x as u8) << 4) | y as u8);
                        subrects.push((((sw - 1) as u8) << 4) | (sh - 1) as u8);
                        count += 1;
                        count <= 255 && size + subrects.len() < raw_size
                    });
                if !fits {
                    out.push(RAW);
                    for y in ty..ty + th {
                        for &v in &self.px[y * w + tx..y * w + tx + tw] {
                            pf.write_pixel(v, out);
                        }
                    }
                    bg = None;
                    fg = None;
                    continue;
                }
                out.push(flags);
                if flags & BACKGROUND_SPECIFIED != 0 {
                    pf.write_pixel(tile_bg, out);
                    bg = Some(tile_bg);
                }
                if flags & FOREGROUND_SPECIFIED != 0 {
                    pf.write_pixel(mono_fg.unwrap_or_default(), out);
                }
                fg = mono_fg;
                out.push(count as u8);
                out.extend_from_slice(&self.subrects);
            }
        }
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
        testutil::lossless_suite(enc::HEXTILE);
    }

    #[test]
    fn streams_persist_across_updates() {
        for (_, pf) in testutil::formats() {
            testutil::multi_update(enc::HEXTILE, &testutil::params(pf));
        }
    }

    use super::super::new_encoder;
    use super::{ANY_SUBRECTS, BACKGROUND_SPECIFIED, FOREGROUND_SPECIFIED, RAW, SUBRECTS_COLOURED};
    use crate::framebuffer::Frame;
    use rfb_decode::Decoder;

    #[test]
    fn tile_kinds_and_state_rules() {
        // Tiles: solid A, solid A (bg reused), noise (raw), solid A (bg
        // must be re-sent), A with a B line (fg), A with a B line (fg
        // reused), three colours (coloured), A with B line (fg re-sent).
        let mut f = Frame::new(16 * 8, 16);
        let (a, b) = (0x102030, 0xa0b0c0);
        for y in 0..16usize {
            for x in 0..128usize {
                let lx = x % 16;
                f[y * 128 + x] = match x / 16 {
                    2 => ((x * 31 + y * 17) as u32).wrapping_mul(2654435761) >> 8,
                    4 | 5 | 7 if y == 3 => b,
                    6 if y == 3 => b,
                    6 if y == 9 && lx > 4 => 0x777777,
                    _ => a,
                };
            }
        }
        let p = testutil::params(PixelFormat::NATIVE);
        let mut e = new_encoder(enc::HEXTILE);
        let mut d = Decoder::new();
        let size = testutil::roundtrip_with(e.as_mut(), &mut d, &f, f.bounds(), &p, 0, "tiles");
        let mut out = crate::rfb::UpdateBuf::new();
        e.encode(&f, f.bounds(), &p, &mut out);
        assert_eq!(out.len(), size);
        // Walk the tiles by hand.
        let mut i = 12;
        let mut flags = Vec::new();
        for _ in 0..8 {
            let fl = out[i];
            flags.push(fl);
            i += 1;
            if fl & RAW != 0 {
                i += 16 * 16 * 4;
                continue;
            }
            if fl & BACKGROUND_SPECIFIED != 0 {
                i += 4;
            }
            if fl & FOREGROUND_SPECIFIED != 0 {
                i += 4;
            }
            if fl & ANY_SUBRECTS != 0 {
                let n = out[i] as usize;
                i += 1 + n * if fl & SUBRECTS_COLOURED != 0 { 6 } else { 2 };
            }
        }
        assert_eq!(i, out.len());
        assert_eq!(
            flags,
            vec![
                BACKGROUND_SPECIFIED,
                0,
                RAW,
                BACKGROUND_SPECIFIED,
                ANY_SUBRECTS | FOREGROUND_SPECIFIED,
                ANY_SUBRECTS,
                ANY_SUBRECTS | SUBRECTS_COLOURED,
                ANY_SUBRECTS | FOREGROUND_SPECIFIED,
            ]
        );
    }

    #[test]
    fn solid_wire_bytes() {
        let mut f = Frame::new(3, 2);
        f.fill(0x00ff00);
        let mut out = crate::rfb::UpdateBuf::new();
        new_encoder(enc::HEXTILE).encode(
            &f,
            f.bounds(),
            &testutil::params(PixelFormat::RGB565),
            &mut out,
        );
        assert_eq!(
            *out,
            vec![
                0,
                0,
                0,
                0,
                0,
                3,
                0,
                2,
                0,
                0,
                0,
                5,
                BACKGROUND_SPECIFIED,
                0xe0,
                0x07
            ]
        );
    }
}
