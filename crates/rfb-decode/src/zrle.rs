//! rfbproto.rst, "ZRLE Encoding": the inflated data of one rectangle, 64x64
//! tiles left to right, top to bottom, each starting with a subencoding
//! byte (top bit: run-length encoded; low seven bits: palette size).

use crate::decoder::DecodeStats;
use crate::reader::Reader;
use crate::{ClientFramebuffer, DecodeError};

/// Tile side.
const TILE: usize = 64;

/// A run length: one plus the sum of its bytes, every byte but the last
/// being 255. Longer than `max` (what is left of the tile) is an error.
fn read_run_len(r: &mut Reader, max: usize) -> Result<usize, DecodeError> {
    let mut len = 1usize;
    loop {
        let b = r.u8()? as usize;
        len += b;
        if len > max {
            return Err(DecodeError::Invalid("ZRLE run longer than its tile"));
        }
        if b != 255 {
            return Ok(len);
        }
    }
}

pub(crate) fn decode(
    buf: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
    stats: &mut DecodeStats,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    let stride = fb.width as usize;
    let mut r = Reader::new(buf);
    let mut tile = [0u32; TILE * TILE];
    let mut palette = [0u32; 127];
    for ty in (0..h).step_by(TILE) {
        let th = (h - ty).min(TILE);
        for tx in (0..w).step_by(TILE) {
            let tw = (w - tx).min(TILE);
            let n = tw * th;
            let sub = r.u8()?;
            *stats.zrle_tiles.entry(sub).or_default() += 1;
            match sub {
                // Raw: width*height CPIXELs.
                0 => {
                    for p in tile.iter_mut().take(n) {
                        *p = r.cpixel(&pf)?;
                    }
                }
                // Solid tile: one CPIXEL.
                1 => {
                    let v = r.cpixel(&pf)?;
                    tile[..n].fill(v);
                }
                // Packed palette: 1, 2 or 4 bits an index, rows padded to
                // a byte, most significant bits first.
                2..=16 => {
                    let k = sub as usize;
                    for c in palette.iter_mut().take(k) {
                        *c = r.cpixel(&pf)?;
                    }
                    let bits = match k {
                        2 => 1,
                        3..=4 => 2,
                        _ => 4,
                    };
                    let rb = (tw * bits).div_ceil(8);
                    for row in 0..th {
                        let bytes = r.take(rb)?;
                        for col in 0..tw {
                            let bit = col * bits;
                            let i = ((bytes[bit / 8] >> (8 - bits - bit % 8)) as usize)
                                & ((1 << bits) - 1);
                            if i >= k {
                                return Err(DecodeError::Invalid("ZRLE palette index"));
                            }
                            tile[row * tw + col] = palette[i];
                        }
                    }
                }
                // "17 to 127: unused (no advantage over palette RLE)";
                // 129: unused.
                17..=127 | 129 => return Err(DecodeError::Invalid("ZRLE subencoding")),
                // Plain RLE: CPIXEL then run length, until the tile is full.
                128 => {
                    let mut i = 0;
                    while i < n {
                        let v = r.cpixel(&pf)?;
                        let len = read_run_len(&mut r, n - i)?;
                        tile[i..i + len].fill(v);
                        i += len;
                    }
                }
                // Palette RLE: palette of sub-128 CPIXELs, then indices; a
                // set top bit means a run length follows.
                _ => {
                    let k = sub as usize - 128;
                    for c in palette.iter_mut().take(k) {
                        *c = r.cpixel(&pf)?;
                    }
                    let mut i = 0;
                    while i < n {
                        let b = r.u8()?;
                        let idx = (b & 127) as usize;
                        if idx >= k {
                            return Err(DecodeError::Invalid("ZRLE palette index"));
                        }
                        let len = if b & 128 != 0 {
                            read_run_len(&mut r, n - i)?
                        } else {
                            1
                        };
                        tile[i..i + len].fill(palette[idx]);
                        i += len;
                    }
                }
            }
            for row in 0..th {
                let d = (y + ty + row) * stride + x + tx;
                fb.pixels[d..d + tw].copy_from_slice(&tile[row * tw..row * tw + tw]);
            }
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("trailing ZRLE data"));
    }
    Ok(())
}
