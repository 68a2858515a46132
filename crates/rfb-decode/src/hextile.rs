//! rfbproto.rst, "Hextile Encoding": 16x16 tiles, left to right, top to
//! bottom, each starting with a subencoding mask.

use crate::decoder::DecodeStats;
use crate::reader::Reader;
use crate::{ClientFramebuffer, DecodeError};

/// Bits of *subencoding-mask*.
const RAW: u8 = 1;
const BACKGROUND_SPECIFIED: u8 = 2;
const FOREGROUND_SPECIFIED: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;
/// Tile side.
const TILE: usize = 16;

pub(crate) fn decode(
    r: &mut Reader,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
    stats: &mut DecodeStats,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    let bpp = pf.bytes_per_pixel();
    // Carried from tile to tile as the specification allows; `None` where
    // it says a value "may not be carried over".
    let mut bg: Option<u32> = None;
    let mut fg: Option<u32> = None;
    for ty in (0..h).step_by(TILE) {
        let th = (h - ty).min(TILE);
        for tx in (0..w).step_by(TILE) {
            let tw = (w - tx).min(TILE);
            let flags = r.u8()?;
            *stats.hextile_tiles.entry(flags).or_default() += 1;
            if flags & RAW != 0 {
                // "If the Raw bit is set then the other bits are irrelevant."
                let data = r.take(tw * th * bpp)?;
                fb.put_raw(x + tx, y + ty, tw, th, data);
                // Neither background nor foreground carries over a raw tile.
                bg = None;
                fg = None;
                continue;
            }
            if flags & FOREGROUND_SPECIFIED != 0 && flags & SUBRECTS_COLOURED != 0 {
                // "If this bit is set then the SubrectsColoured bit must be zero."
                return Err(DecodeError::Invalid(
                    "Hextile ForegroundSpecified with SubrectsColoured",
                ));
            }
            if flags & BACKGROUND_SPECIFIED != 0 {
                bg = Some(r.pixel(&pf)?);
            }
            if flags & FOREGROUND_SPECIFIED != 0 {
                fg = Some(r.pixel(&pf)?);
            }
            let b = bg.ok_or(DecodeError::Invalid("Hextile background undefined"))?;
            fb.fill(x + tx, y + ty, tw, th, b);
            let coloured = flags & SUBRECTS_COLOURED != 0;
            if flags & ANY_SUBRECTS != 0 {
                let n = r.u8()?;
                for _ in 0..n {
                    let c = if coloured {
                        r.pixel(&pf)?
                    } else {
                        fg.ok_or(DecodeError::Invalid("Hextile foreground undefined"))?
                    };
                    // x-and-y-position: x in the high nibble; width-and-
                    // height: width-1 in the high nibble.
                    let xy = r.u8()? as usize;
                    let wh = r.u8()? as usize;
                    let (sx, sy, sw, sh) = (xy >> 4, xy & 15, (wh >> 4) + 1, (wh & 15) + 1);
                    if sx + sw > tw || sy + sh > th {
                        return Err(DecodeError::Invalid(
                            "Hextile subrectangle outside its tile",
                        ));
                    }
                    fb.fill(x + tx + sx, y + ty + sy, sw, sh, c);
                }
            }
            if coloured {
                // "The foreground pixel value may not be carried over if the
                // previous tile was raw or had the SubrectsColored bit set."
                fg = None;
            }
        }
    }
    Ok(())
}
