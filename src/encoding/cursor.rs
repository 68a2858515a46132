//! Cursor pseudo-encoding (-239): the cursor image in the client's pixel
//! format followed by a 1-bit transparency mask, so viewers draw the pointer
//! locally without waiting for framebuffer updates.

use crate::capture::CursorShape;
use crate::framebuffer::Rect;
use crate::rfb::messages::{enc, write_rect_header};
use crate::rfb::PixelFormat;

/// Append a Cursor pseudo-rectangle for `shape`.
pub fn write_cursor(shape: &CursorShape, pf: &PixelFormat, out: &mut Vec<u8>) {
    let r = Rect::new(shape.hot_x, shape.hot_y, shape.width, shape.height);
    write_rect_header(r, enc::CURSOR, out);
    for &argb in &shape.pixels {
        pf.write_pixel(pf.from_native(argb & 0x00ff_ffff), out);
    }
    let row_bytes = (shape.width as usize).div_ceil(8);
    for y in 0..shape.height as usize {
        let row = &shape.pixels[y * shape.width as usize..(y + 1) * shape.width as usize];
        let mut mask = vec![0u8; row_bytes];
        for (x, &argb) in row.iter().enumerate() {
            if argb >> 24 >= 0x80 {
                mask[x / 8] |= 0x80 >> (x % 8);
            }
        }
        out.extend_from_slice(&mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let shape = CursorShape::arrow();
        let mut out = Vec::new();
        write_cursor(&shape, &PixelFormat::RGB565, &mut out);
        let n = shape.width as usize * shape.height as usize;
        let mask = (shape.width as usize).div_ceil(8) * shape.height as usize;
        assert_eq!(out.len(), 12 + n * 2 + mask);
    }
}
