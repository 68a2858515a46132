//! Tight's JpegCompression: "The jpeg-data is a JFIF stream", decoded with
//! zune-jpeg (pure Rust, nothing shared with the server's libjpeg-turbo).
//!
//! zune-jpeg rather than `jpeg-decoder` (which the tests used before): the
//! image crate moved to zune-jpeg and `jpeg-decoder` is in maintenance
//! only; zune-jpeg is fuzzed, bounds the picture it will allocate for
//! (`set_max_width`/`set_max_height`), and is several times faster, which
//! matters to `ticketvnc bench`'s viewer that decodes every update.

use crate::{ClientFramebuffer, DecodeError};
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

pub(crate) fn decode(
    data: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut ClientFramebuffer,
) -> Result<(), DecodeError> {
    // Nothing larger than the rectangle is ever allocated.
    let opts = DecoderOptions::default()
        .set_max_width(w.max(1))
        .set_max_height(h.max(1))
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = JpegDecoder::new_with_options(std::io::Cursor::new(data), opts);
    d.decode_headers()
        .map_err(|e| DecodeError::Jpeg(e.to_string()))?;
    let (jw, jh) = d
        .dimensions()
        .ok_or(DecodeError::Invalid("JPEG without a header"))?;
    if jw != w || jh != h {
        return Err(DecodeError::Invalid("JPEG size differs from its rectangle"));
    }
    let px = d.decode().map_err(|e| DecodeError::Jpeg(e.to_string()))?;
    if px.len() != w * h * 3 {
        return Err(DecodeError::Invalid("JPEG pixel data of the wrong size"));
    }
    let pf = fb.pf;
    for (i, c) in px.chunks_exact(3).enumerate() {
        fb.set(x + i % w, y + i / w, pf.from_rgb888(c[0], c[1], c[2]));
    }
    Ok(())
}
