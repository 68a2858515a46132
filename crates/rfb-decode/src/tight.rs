//! rfbproto.rst, "Tight Encoding": a compression-control byte (stream
//! resets in bits 0-3, the method in bits 4-7), then Fill, JPEG or Basic
//! compression with a Copy, Palette or Gradient filter.

use crate::decoder::Decoder;
use crate::inflate::inflate;
use crate::reader::Reader;
use crate::{jpeg, ClientFramebuffer, DecodeError};

/// Bits 7-4 of compression-control: 1000 FillCompression, 1001
/// JpegCompression; 1010 and 1110 (BasicCompression Without Zlib) only
/// after the client asked for them, which ticketvnc's clients never do.
const FILL: u8 = 0b1000;
const JPEG: u8 = 0b1001;
/// Bit 6 of compression-control under BasicCompression: a filter-id follows.
const READ_FILTER_ID: u8 = 0b0100;
/// filter-id values.
const FILTER_COPY: u8 = 0;
const FILTER_PALETTE: u8 = 1;
const FILTER_GRADIENT: u8 = 2;
/// "If the data size after applying the filter but before the compression
/// is less then 12, then the data is sent as is."
const MIN_TO_COMPRESS: usize = 12;
/// Widest rectangle a Tight decoder accepts. The specification leaves the
/// limit to the implementations; TightVNC's and TigerVNC's decoders
/// (`TightDecoder::TIGHT_MAX_WIDTH`) reject wider ones.
const MAX_WIDTH: usize = 2048;

pub(crate) fn decode(
    d: &mut Decoder,
    r: &mut Reader,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    if w > MAX_WIDTH {
        return Err(DecodeError::Invalid("Tight rectangle wider than 2048"));
    }
    let ctl = r.u8()?;
    // "The decoder must reset the indicated zlib streams even if the
    // compression type is FillCompression or JpegCompression."
    for (i, z) in d.tight.iter_mut().enumerate() {
        if ctl & (1 << i) != 0 {
            z.reset(true);
        }
    }
    let method = ctl >> 4;
    let kinds = &mut d.stats.tight_kinds;
    if method == FILL {
        *kinds.entry("fill").or_default() += 1;
        let v = r.tpixel(&pf)?;
        fb.fill(x, y, w, h, v);
        return Ok(());
    }
    if method == JPEG {
        *kinds.entry("jpeg").or_default() += 1;
        // "JpegCompression may only be used when bits-per-pixel is either
        // 16 or 32."
        if !pf.true_colour || pf.bits_per_pixel < 16 {
            return Err(DecodeError::Invalid("Tight JPEG in this pixel format"));
        }
        let len = r.compact_len()?;
        let data = r.take(len)?;
        return jpeg::decode(data, x, y, w, h, fb);
    }
    if method & 0b1000 != 0 {
        return Err(DecodeError::Invalid("Tight compression type"));
    }
    let stream = (method & 3) as usize;
    let filter = if method & READ_FILTER_ID != 0 {
        r.u8()?
    } else {
        FILTER_COPY
    };
    let name = match filter {
        FILTER_COPY => "full",
        FILTER_PALETTE => "palette",
        _ => "gradient",
    };
    *kinds.entry(name).or_default() += 1;
    let tpix = pf.tpixel_size();
    let mut palette = [0u32; 256];
    let mut ncol = 0;
    let want = match filter {
        FILTER_COPY => w * h * tpix,
        FILTER_GRADIENT => {
            // "The GradientFilter may only be used when bits-per-pixel is
            // either 16 or 32", and it works on colour intensities.
            if !pf.true_colour || pf.bits_per_pixel < 16 {
                return Err(DecodeError::Invalid("Tight gradient in this pixel format"));
            }
            w * h * tpix
        }
        FILTER_PALETTE => {
            // number-of-colours - 1, then the palette; 2..256 colours.
            ncol = r.u8()? as usize + 1;
            if ncol < 2 {
                return Err(DecodeError::Invalid("Tight palette of one colour"));
            }
            let k = if ncol == 2 { "mono" } else { "indexed" };
            *d.stats.tight_kinds.entry(k).or_default() += 1;
            for c in palette.iter_mut().take(ncol) {
                *c = r.tpixel(&pf)?;
            }
            if ncol == 2 {
                // 1 bit a pixel, rows padded to a byte.
                w.div_ceil(8) * h
            } else {
                w * h
            }
        }
        _ => return Err(DecodeError::Invalid("Tight filter")),
    };
    let buf = if want < MIN_TO_COMPRESS {
        r.take(want)?
    } else {
        let len = r.compact_len()?;
        let data = r.take(len)?;
        inflate(&mut d.tight[stream], data, &mut d.buf, want)?;
        if d.buf.len() != want {
            return Err(DecodeError::Invalid("Tight data has the wrong size"));
        }
        &d.buf[..]
    };
    match filter {
        FILTER_PALETTE if ncol == 2 => {
            let rb = w.div_ceil(8);
            for row in 0..h {
                for col in 0..w {
                    // Most significant bits are the leftmost pixels.
                    let bit = (buf[row * rb + col / 8] >> (7 - col % 8)) & 1;
                    fb.set(x + col, y + row, palette[bit as usize]);
                }
            }
        }
        FILTER_PALETTE => {
            for row in 0..h {
                for col in 0..w {
                    let i = buf[row * w + col] as usize;
                    if i >= ncol {
                        return Err(DecodeError::Invalid("Tight palette index"));
                    }
                    fb.set(x + col, y + row, palette[i]);
                }
            }
        }
        FILTER_COPY => {
            let mut rd = Reader::new(buf);
            for row in 0..h {
                for col in 0..w {
                    fb.set(x + col, y + row, rd.tpixel(&pf)?);
                }
            }
        }
        _ => gradient(buf, x, y, w, h, fb)?,
    }
    Ok(())
}

/// The GradientFilter's inverse: each colour component is predicted from
/// its left, upper and upper-left neighbours (zero outside the rectangle),
/// clamped to 0..=MAX, and the data is the difference modulo MAX+1.
fn gradient(
    buf: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
) -> Result<(), DecodeError> {
    let pf = fb.pf;
    let maxes = [pf.red_max as i32, pf.green_max as i32, pf.blue_max as i32];
    let shifts = [pf.red_shift, pf.green_shift, pf.blue_shift];
    let rgb = pf.tpixel_is_rgb();
    let mut rd = Reader::new(buf);
    let mut prev_row = vec![[0i32; 3]; w];
    let mut this_row = vec![[0i32; 3]; w];
    for row in 0..h {
        for col in 0..w {
            let diff = if rgb {
                let b = rd.take(3)?;
                [b[0] as i32, b[1] as i32, b[2] as i32]
            } else {
                let v = rd.pixel(&pf)?;
                std::array::from_fn(|c| ((v >> shifts[c]) as i32) & maxes[c])
            };
            let mut out = [0i32; 3];
            for c in 0..3 {
                let left = if col > 0 { this_row[col - 1][c] } else { 0 };
                let up = prev_row[col][c];
                let upleft = if col > 0 { prev_row[col - 1][c] } else { 0 };
                let pred = (left + up - upleft).clamp(0, maxes[c]);
                out[c] = (pred + diff[c]) & maxes[c];
            }
            this_row[col] = out;
            let v = (0..3).fold(0u32, |a, c| a | ((out[c] as u32) << shifts[c]));
            fb.set(x + col, y + row, v);
        }
        std::mem::swap(&mut prev_row, &mut this_row);
    }
    Ok(())
}
