//! Encoder round trip: arbitrary pixels in an arbitrary rectangle, encoded
//! with every encoding in several client pixel formats, then decoded with the
//! strict decoder (the rfb-decode crate, written from the RFB specification): lossless encodings must give back exactly the source
//! pixels in the client's format, and nothing outside the rectangle changes.
//! Three rectangles go through the same encoder and decoder, so zlib streams
//! must persist correctly between them. Any may be encoded as a band shared
//! with other viewers (`encode_detached`, one run while they follow each
//! other), so the connection's own streams must stay right around those too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfb_decode::{ClientFramebuffer, Decoder};
use ticketvnc::encoding::{new_encoder, DetachedStreams, EncodeParams, SUPPORTED};
use ticketvnc::framebuffer::{Frame, Rect};
use ticketvnc::rfb::{PixelFormat, UpdateBuf};

const FORMATS: [PixelFormat; 4] = [
    PixelFormat::NATIVE,
    PixelFormat::RGB565,
    PixelFormat::BGR233,
    PixelFormat {
        big_endian: true,
        red_shift: 24,
        green_shift: 16,
        blue_shift: 8,
        ..PixelFormat::NATIVE
    },
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    // Header: frame size (1..=96 each way), encoding, format, level, palette size.
    let w = 1 + (data[0] % 96) as u16;
    let h = 1 + (data[1] % 96) as u16;
    let encoding = SUPPORTED[data[2] as usize % SUPPORTED.len()];
    let pf = FORMATS[data[3] as usize % FORMATS.len()];
    let level = data[4] % 10;
    // Which of the three rectangles are shared bands (bit 0: the first).
    let shared = data[4] / 10 % 8;
    // A small palette makes the palette and RLE paths likely; 0 means free colours.
    let palette = data[5] as usize % 20;
    let pixels = &data[6..];
    let mut frame = Frame::new(w, h);
    for (i, p) in frame.pixels_mut().enumerate() {
        let b = pixels.get(i % pixels.len().max(1)).copied().unwrap_or(0) as u32;
        *p = if palette > 0 {
            (b % palette as u32).wrapping_mul(0x0012_3457) & 0x00ff_ffff
        } else {
            (b.wrapping_mul(0x0101_0101) ^ (i as u32).wrapping_mul(2_654_435_761)) & 0x00ff_ffff
        };
    }
    let params = EncodeParams {
        pf,
        compress_level: Some(level),
        quality_level: None, // lossless: compare exactly
    };
    let mut enc = new_encoder(encoding);
    let mut dec = Decoder::new();
    let client_pf = rfb_decode::PixelFormat::from_wire(&pf.to_bytes()).expect("a valid format");
    let mut fb = ClientFramebuffer::new(w, h, client_pf);
    // Three rectangles: the left part, the whole frame, the left part.
    let first = Rect::new(0, 0, (w / 2).max(1), h);
    let mut run = DetachedStreams::default();
    for (k, r) in [first, frame.bounds(), first].into_iter().enumerate() {
        let before = fb.pixels.clone();
        let mut body = UpdateBuf::new();
        let n = if shared >> k & 1 == 1 && enc.takes_detached() {
            let n = enc.encode_detached(&frame, r, &params, &mut run, &mut body);
            enc.detached_sent();
            n
        } else {
            // A run goes on only from its own bands.
            run = DetachedStreams::default();
            enc.encode(&frame, r, &params, &mut body)
        };
        let mut msg = UpdateBuf::new();
        msg.update_header(n as u16);
        msg.append(&mut body);
        let used = dec
            .decode_message(&msg, &mut fb)
            .unwrap_or_else(|e| panic!("encoding {encoding} {pf:?} {r:?}: decoder said {e:?}"));
        assert_eq!(used, msg.len(), "encoding {encoding}: trailing bytes");
        for y in 0..h {
            for x in 0..w {
                let i = y as usize * w as usize + x as usize;
                let inside = x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h;
                let want = if inside {
                    pf.from_native(frame[i])
                } else {
                    before[i]
                };
                assert_eq!(fb.pixels[i], want, "encoding {encoding} {pf:?} at {x},{y}");
            }
        }
    }
});
