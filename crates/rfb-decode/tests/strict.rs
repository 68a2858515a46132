//! The decoder on hand-made input: hostile lengths and counts, CopyRect
//! overlap, pseudo-rectangles. (Round trips through the server's encoders
//! live in ticketvnc, `src/encoding/oracle_tests.rs`: this crate does not
//! know the encoders.)

use flate2::{Compress, Compression, FlushCompress};
use rfb_decode::encodings as enc;
use rfb_decode::{ClientFramebuffer, DecodeError, Decoder, PixelFormat};

/// 32 bpp, depth 24, little endian, 8-bit channels at 16/8/0.
fn rgb888() -> PixelFormat {
    PixelFormat::from_wire(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).unwrap()
}

/// 16 bpp 5-6-5, little endian.
fn rgb565() -> PixelFormat {
    PixelFormat::from_wire(&[16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0]).unwrap()
}

fn header(x: u16, y: u16, w: u16, h: u16, e: i32) -> Vec<u8> {
    let mut v = Vec::new();
    for n in [x, y, w, h] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v.extend_from_slice(&e.to_be_bytes());
    v
}

/// `data` as one zlib-stream segment ended by a sync flush, as RFB servers send it.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(9), true);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    out
}

#[test]
fn hostile_lengths_and_counts_are_rejected() {
    let pf = rgb888();
    let mut fb = ClientFramebuffer::new(64, 64, pf);
    let mut dec = Decoder::new();
    // Rectangle outside the framebuffer, including u16 overflow.
    for (x, w) in [(60u16, 5u16), (65535, 65535), (0, 65)] {
        let b = header(x, 0, w, 1, enc::RAW);
        assert!(matches!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::OutOfBounds(_))
        ));
    }
    // CopyRect from outside.
    let mut b = header(0, 0, 10, 10, enc::COPY_RECT);
    b.extend_from_slice(&[0, 60, 0, 0]);
    assert!(dec.decode_update(&b, 1, &mut fb).is_err());
    // RRE with 2^32-1 subrectangles and no data.
    let mut b = header(0, 0, 8, 8, enc::RRE);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    assert_eq!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Truncated)
    );
    // RRE subrectangle outside its rectangle.
    let mut b = header(0, 0, 8, 8, enc::RRE);
    b.extend_from_slice(&[0, 0, 0, 1, 1, 2, 3, 4, 1, 2, 3, 4, 0, 7, 0, 0, 0, 2, 0, 1]);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    // zlib/ZRLE lengths beyond the input.
    for e in [enc::ZLIB, enc::ZRLE] {
        let mut b = header(0, 0, 8, 8, e);
        b.extend_from_slice(&[0x80, 0, 0, 0, 0x78]);
        assert_eq!(
            dec.decode_update(&b, 1, &mut fb),
            Err(DecodeError::Truncated)
        );
    }
    // A zlib bomb: a few KB inflating to far more than the rectangle.
    let bomb = deflate(&vec![0u8; 1 << 20]);
    for e in [enc::ZLIB, enc::ZRLE] {
        let mut b = header(0, 0, 8, 8, e);
        b.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        b.extend_from_slice(&bomb);
        let r = Decoder::new().decode_update(&b, 1, &mut fb);
        assert!(r.is_err(), "{e}: {r:?}");
    }
    // ZRLE run longer than its tile.
    let mut raw = vec![128u8, 1, 2, 3];
    raw.extend_from_slice(&[255; 40]);
    let packed = deflate(&raw);
    let mut b = header(0, 0, 8, 8, enc::ZRLE);
    b.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    b.extend_from_slice(&packed);
    assert!(matches!(
        Decoder::new().decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    // Tight: too wide, compact length beyond input, bad palette index,
    // an invalid compression type.
    let mut big = ClientFramebuffer::new(4096, 1, pf);
    let mut b = header(0, 0, 2049, 1, enc::TIGHT);
    b.extend_from_slice(&[0x80, 1, 2, 3]);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut big),
        Err(DecodeError::Invalid(_))
    ));
    let mut b = header(0, 0, 8, 8, enc::TIGHT);
    b.extend_from_slice(&[0x00, 0xff, 0xff, 0xff]);
    assert_eq!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Truncated)
    );
    // Palette of 3 colours (0x60: stream 2, filter id follows), 2x1 pixels
    // sent as is (2 bytes < 12), the second index 7 beyond the palette.
    let mut b = header(0, 0, 2, 1, enc::TIGHT);
    b.extend_from_slice(&[0x60, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 7]);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    for ctl in [0xa0, 0xb0, 0xe0, 0xf0] {
        let mut b = header(0, 0, 8, 8, enc::TIGHT);
        b.push(ctl);
        assert!(
            matches!(
                dec.decode_update(&b, 1, &mut fb),
                Err(DecodeError::Invalid(_))
            ),
            "{ctl:#x}"
        );
    }
    // JPEG data that is not a JPEG, and JPEG at 8 bits a pixel.
    let mut b = header(0, 0, 8, 8, enc::TIGHT);
    b.extend_from_slice(&[0x90, 4, 1, 2, 3, 4]);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Jpeg(_))
    ));
    let bgr233 = PixelFormat::from_wire(&[8, 8, 0, 1, 0, 7, 0, 7, 0, 3, 0, 3, 6, 0, 0, 0]).unwrap();
    let mut small = ClientFramebuffer::new(8, 8, bgr233);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut small),
        Err(DecodeError::Invalid(_))
    ));
    // DesktopSize beyond the cap; DesktopName longer than the input.
    let b = header(0, 0, 65535, 65535, enc::DESKTOP_SIZE);
    assert_eq!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::TooLarge)
    );
    let mut b = header(0, 0, 0, 0, enc::DESKTOP_NAME);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'x']);
    assert_eq!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Truncated)
    );
    // Hextile tile without a background, and a subrect leaving its tile.
    let mut b = header(0, 0, 16, 16, enc::HEXTILE);
    b.push(0);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    let mut b = header(0, 0, 4, 4, enc::HEXTILE);
    b.extend_from_slice(&[2 | 4 | 8, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0x33, 0x11]);
    assert!(matches!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    // Unknown encoding.
    let b = header(0, 0, 1, 1, 12345);
    assert_eq!(
        dec.decode_update(&b, 1, &mut fb),
        Err(DecodeError::Unsupported(12345))
    );
}

#[test]
fn hextile_follows_the_carry_over_rules() {
    let pf = rgb565();
    let mut fb = ClientFramebuffer::new(32, 16, pf);
    // ForegroundSpecified together with SubrectsColoured is forbidden.
    let mut b = header(0, 0, 16, 16, enc::HEXTILE);
    b.extend_from_slice(&[2 | 4 | 8 | 16, 1, 0, 2, 0, 0]);
    assert!(matches!(
        Decoder::new().decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    // A foreground does not carry over a tile with SubrectsColoured set,
    // even when that tile has no subrectangles.
    let mut b = header(0, 0, 32, 16, enc::HEXTILE);
    b.extend_from_slice(&[2 | 16, 1, 0]); // background, coloured, no subrects
    b.extend_from_slice(&[8, 1, 0x00, 0x00]); // one subrect in the foreground
    assert_eq!(
        Decoder::new().decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid("Hextile foreground undefined"))
    );
    // Background and foreground carried from the previous tile.
    let mut b = header(0, 0, 32, 16, enc::HEXTILE);
    b.extend_from_slice(&[2 | 4 | 8, 0x11, 0x11, 0x22, 0x22, 1, 0x00, 0x00]);
    b.extend_from_slice(&[8, 1, 0x11, 0x00]);
    assert_eq!(Decoder::new().decode_update(&b, 1, &mut fb), Ok(b.len()));
    assert_eq!(fb.get(0, 0), 0x2222);
    assert_eq!(fb.get(1, 0), 0x1111);
    assert_eq!(fb.get(17, 1), 0x2222);
    assert_eq!(fb.get(16, 0), 0x1111);
}

#[test]
fn zrle_unused_subencodings_are_refused() {
    for sub in [17u8, 127, 129] {
        let packed = deflate(&[sub, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = header(0, 0, 1, 1, enc::ZRLE);
        b.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        b.extend_from_slice(&packed);
        let mut fb = ClientFramebuffer::new(1, 1, rgb888());
        assert_eq!(
            Decoder::new().decode_update(&b, 1, &mut fb),
            Err(DecodeError::Invalid("ZRLE subencoding")),
            "{sub}"
        );
    }
    // A solid tile of one 3-byte CPIXEL decodes.
    let packed = deflate(&[1, 0x56, 0x34, 0x12]);
    let mut b = header(0, 0, 2, 2, enc::ZRLE);
    b.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    b.extend_from_slice(&packed);
    let mut fb = ClientFramebuffer::new(2, 2, rgb888());
    assert_eq!(Decoder::new().decode_update(&b, 1, &mut fb), Ok(b.len()));
    assert_eq!(fb.pixels, vec![0x123456; 4]);
}

#[test]
fn copy_rect_handles_overlap() {
    let mut fb = ClientFramebuffer::new(6, 3, rgb565());
    for (i, p) in fb.pixels.iter_mut().enumerate() {
        *p = i as u32;
    }
    let before = fb.clone();
    // Move the 4x2 block at (0,0) one pixel right and down: overlapping.
    let mut b = header(1, 1, 4, 2, enc::COPY_RECT);
    b.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(Decoder::new().decode_update(&b, 1, &mut fb), Ok(b.len()));
    for y in 0..3u16 {
        for x in 0..6u16 {
            let want = if (1..5).contains(&x) && (1..3).contains(&y) {
                before.get(x - 1, y - 1)
            } else {
                before.get(x, y)
            };
            assert_eq!(fb.get(x, y), want, "({x},{y})");
        }
    }
}

#[test]
fn pseudo_rects_and_last_rect() {
    let mut fb = ClientFramebuffer::new(8, 8, rgb888());
    let mut b = header(0, 0, 20, 10, enc::DESKTOP_SIZE);
    b.extend(header(0, 0, 0, 0, enc::DESKTOP_NAME));
    b.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
    b.extend(header(1, 1, 1, 1, enc::RAW));
    b.extend_from_slice(&[1, 2, 3, 0]);
    b.extend(header(0, 0, 0, 0, enc::LAST_RECT));
    let used = Decoder::new().decode_update(&b, 0xffff, &mut fb).unwrap();
    assert_eq!(used, b.len());
    assert_eq!((fb.width, fb.height), (20, 10));
    assert_eq!(fb.get(1, 1), 0x030201);
}

#[test]
fn pseudo_rectangles_the_server_sends_are_framed() {
    let mut fb = ClientFramebuffer::new(8, 8, rgb888());
    let mut b = header(0, 0, 2, 2, enc::CURSOR_WITH_ALPHA);
    b.extend_from_slice(&enc::RAW.to_be_bytes());
    b.extend_from_slice(&[7; 16]);
    b.extend(header(1, 1, 2, 1, enc::X_CURSOR));
    b.extend_from_slice(&[0; 6 + 2]);
    b.extend(header(3, 4, 0, 0, enc::POINTER_POS));
    b.extend(header(3, 4, 0, 0, enc::VMWARE_CURSOR_POSITION));
    b.extend(header(0, 0, 0, 0, enc::LED_STATE));
    b.push(5);
    b.extend(header(0, 0, 0, 0, enc::VMWARE_LED_STATE));
    b.extend_from_slice(&[0, 0, 0, 5]);
    b.extend(header(0, 0, 0, 0, enc::QEMU_EXTENDED_KEY_EVENT));
    b.extend(header(0, 0, 0, 0, enc::EXTENDED_MOUSE_BUTTONS));
    b.extend(header(0, 0, 1, 1, enc::RAW));
    b.extend_from_slice(&[1, 2, 3, 0]);
    let mut d = Decoder::new();
    assert_eq!(d.decode_update(&b, 9, &mut fb), Ok(b.len()));
    assert_eq!(fb.get(0, 0), 0x030201);
    // A cut-off shape is an error, not a misread; a shape in an encoding
    // the server never uses is refused.
    assert_eq!(
        d.decode_update(&b[..20], 1, &mut fb),
        Err(DecodeError::Truncated)
    );
    let mut z = header(0, 0, 2, 2, enc::CURSOR_WITH_ALPHA);
    z.extend_from_slice(&enc::ZLIB.to_be_bytes());
    assert_eq!(
        d.decode_update(&z, 1, &mut fb),
        Err(DecodeError::Unsupported(enc::ZLIB))
    );
}
