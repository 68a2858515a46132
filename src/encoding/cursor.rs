//! Cursor shapes for viewers that draw the pointer locally: Cursor (-239,
//! the image in the client's pixel format and a 1-bit mask), Cursor With
//! Alpha (-314, RGBA with pre-multiplied alpha, sent as Raw) and X Cursor
//! (-240, two colours, a bitmap and a mask); and the pointer's position
//! (PointerPos -232, VMware Cursor Position 0x574d5666).

use crate::capture::CursorShape;
use crate::framebuffer::Rect;
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;
use crate::rfb::UpdateBuf;

/// The shape encodings, in the order a viewer's support is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    Alpha,
    Rich,
    X,
}

/// Whether `shape` is consistent and within [`MAX_CURSOR_EDGE`]; anything
/// else is never written or composited.
///
/// [`MAX_CURSOR_EDGE`]: crate::rfb::limits::MAX_CURSOR_EDGE
pub fn shape_ok(shape: &CursorShape) -> bool {
    let max = crate::rfb::limits::MAX_CURSOR_EDGE;
    shape.width <= max
        && shape.height <= max
        && shape.pixels.len() == shape.width as usize * shape.height as usize
        && (shape.width == 0 || shape.hot_x < shape.width)
        && (shape.height == 0 || shape.hot_y < shape.height)
}

/// A cursor that shows nothing (1x1, transparent): the viewer's local
/// pointer is hidden while the server draws the pointer into the picture.
/// 1x1 rather than TigerVNC's 0x0, which some decoders refuse.
pub fn hidden() -> CursorShape {
    CursorShape {
        width: 1,
        height: 1,
        hot_x: 0,
        hot_y: 0,
        pixels: vec![0],
    }
}

/// Append `shape` in the encoding `kind`. Returns false (nothing written)
/// for a shape that fails [`shape_ok`].
pub fn write_shape(
    kind: ShapeKind,
    shape: &CursorShape,
    pf: &PixelFormat,
    out: &mut UpdateBuf,
) -> bool {
    if !shape_ok(shape) {
        return false;
    }
    match kind {
        ShapeKind::Alpha => write_cursor_alpha(shape, out),
        ShapeKind::Rich => write_cursor(shape, pf, out),
        ShapeKind::X => write_x_cursor(shape, out),
    }
    true
}

/// Append a Cursor pseudo-rectangle for `shape`.
pub fn write_cursor(shape: &CursorShape, pf: &PixelFormat, out: &mut UpdateBuf) {
    let r = Rect::new(shape.hot_x, shape.hot_y, shape.width, shape.height);
    out.rect_header(r, enc::CURSOR);
    for &argb in &shape.pixels {
        pf.write_pixel(pf.from_native(argb & 0x00ff_ffff), out);
    }
    mask_bits(shape, |argb| argb >> 24 >= 0x80, out);
}

/// One bit per pixel where `bit` holds, MSB first, rows padded to whole bytes.
fn mask_bits(shape: &CursorShape, bit: impl Fn(u32) -> bool, out: &mut Vec<u8>) {
    let w = shape.width as usize;
    for row in shape
        .pixels
        .chunks_exact(w.max(1))
        .take(shape.height as usize)
    {
        let mut bytes = vec![0u8; w.div_ceil(8)];
        for (x, &argb) in row.iter().enumerate() {
            if bit(argb) {
                bytes[x / 8] |= 0x80 >> (x % 8);
            }
        }
        out.extend_from_slice(&bytes);
    }
}

/// Append a Cursor With Alpha pseudo-rectangle: Raw RGBA, alpha pre-multiplied.
pub fn write_cursor_alpha(shape: &CursorShape, out: &mut UpdateBuf) {
    let r = Rect::new(shape.hot_x, shape.hot_y, shape.width, shape.height);
    out.rect_header(r, enc::CURSOR_WITH_ALPHA);
    out.extend_from_slice(&enc::RAW.to_be_bytes());
    for &argb in &shape.pixels {
        let a = argb >> 24;
        let pre = |s: u32| (((argb >> s) & 0xff) * a / 255) as u8;
        out.extend_from_slice(&[pre(16), pre(8), pre(0), a as u8]);
    }
}

/// Append an X Cursor pseudo-rectangle: white where the image is light,
/// black where it is dark (as TigerVNC reduces it), and the mask.
pub fn write_x_cursor(shape: &CursorShape, out: &mut UpdateBuf) {
    let r = Rect::new(shape.hot_x, shape.hot_y, shape.width, shape.height);
    out.rect_header(r, enc::X_CURSOR);
    if shape.width == 0 || shape.height == 0 {
        return;
    }
    out.extend_from_slice(&[255, 255, 255, 0, 0, 0]);
    let light = |argb: u32| {
        let (r, g, b) = ((argb >> 16) & 0xff, (argb >> 8) & 0xff, argb & 0xff);
        // Rec. 601 luma, integer.
        (r * 299 + g * 587 + b * 114) / 1000 >= 0x80
    };
    mask_bits(shape, light, out);
    mask_bits(shape, |argb| argb >> 24 >= 0x80, out);
}

/// Append the pointer's position as PointerPos or VMware Cursor Position.
pub fn write_pointer_pos(encoding: i32, (x, y): (u16, u16), out: &mut UpdateBuf) {
    out.rect_header(Rect::new(x, y, 0, 0), encoding);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let shape = CursorShape::arrow();
        let mut out = crate::rfb::UpdateBuf::new();
        write_cursor(&shape, &PixelFormat::RGB565, &mut out);
        let n = shape.width as usize * shape.height as usize;
        let mask = (shape.width as usize).div_ceil(8) * shape.height as usize;
        assert_eq!(out.len(), 12 + n * 2 + mask);
    }

    fn two_by_two() -> CursorShape {
        CursorShape {
            width: 2,
            height: 2,
            hot_x: 1,
            hot_y: 0,
            // opaque white, opaque black, half-transparent red, transparent
            pixels: vec![0xffff_ffff, 0xff00_0000, 0x80ff_0000, 0x0012_3456],
        }
    }

    #[test]
    fn alpha_is_raw_rgba_premultiplied() {
        let mut out = crate::rfb::UpdateBuf::new();
        write_cursor_alpha(&two_by_two(), &mut out);
        assert_eq!(
            &out[..12],
            &[0, 1, 0, 0, 0, 2, 0, 2, 0xff, 0xff, 0xfe, 0xc6]
        );
        assert_eq!(&out[12..16], &[0, 0, 0, 0], "Raw");
        assert_eq!(
            &out[16..],
            &[255, 255, 255, 255, 0, 0, 0, 255, 128, 0, 0, 128, 0, 0, 0, 0]
        );
    }

    #[test]
    fn x_cursor_is_white_on_black_with_mask() {
        let mut out = crate::rfb::UpdateBuf::new();
        write_x_cursor(&two_by_two(), &mut out);
        assert_eq!(&out[8..12], &(-240i32).to_be_bytes());
        // Colours, then bitmap rows (light pixels) and mask rows (alpha >= 0x80).
        assert_eq!(
            &out[12..],
            &[255, 255, 255, 0, 0, 0, 0x80, 0x00, 0xc0, 0x80]
        );
    }

    #[test]
    fn oversized_or_inconsistent_shapes_are_not_written() {
        let pf = PixelFormat::NATIVE;
        let mut out = crate::rfb::UpdateBuf::new();
        let big = CursorShape {
            width: 257,
            height: 1,
            hot_x: 0,
            hot_y: 0,
            pixels: vec![0; 257],
        };
        let short = CursorShape {
            pixels: vec![0; 3],
            ..two_by_two()
        };
        for kind in [ShapeKind::Alpha, ShapeKind::Rich, ShapeKind::X] {
            assert!(!write_shape(kind, &big, &pf, &mut out));
            assert!(!write_shape(kind, &short, &pf, &mut out));
            assert!(write_shape(kind, &hidden(), &pf, &mut out));
        }
        assert!(!out.is_empty());
    }
}
