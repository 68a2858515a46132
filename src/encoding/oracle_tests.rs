//! The strict decoder (the `rfb-decode` crate, written from the RFB
//! specification, which knows nothing of these encoders) against what the
//! encoders write: every cut of an update is an error, corruption never
//! panics, Tight stream resets are honoured. Round trips per encoder are in
//! each encoder's tests (`testutil::roundtrip_with`).

use super::testutil::{self, client_pf};
use super::{new_encoder, EncodeParams};
use crate::capture::test_pattern::render;
use crate::framebuffer::Rect;
use crate::rfb::messages::enc;
use crate::rfb::PixelFormat;
use rfb_decode::{ClientFramebuffer, DecodeError, Decoder};

fn encoded(encoding: i32, pf: PixelFormat) -> (Vec<u8>, u16) {
    let f = render(40, 30, 1);
    let p = EncodeParams {
        pf,
        compress_level: Some(1),
        quality_level: if encoding == enc::TIGHT {
            Some(5)
        } else {
            None
        },
    };
    let mut e = new_encoder(encoding);
    let mut body = crate::rfb::UpdateBuf::new();
    let mut n = e.encode(&f, f.bounds(), &p, &mut body);
    let pal = testutil::palette_frame(40, 30, 3, &pf);
    n += e.encode(&pal, Rect::new(3, 4, 20, 17), &p, &mut body);
    (body.bytes().to_vec(), n as u16)
}

const ALL: [i32; 6] = [
    enc::RAW,
    enc::RRE,
    enc::HEXTILE,
    enc::ZLIB,
    enc::TIGHT,
    enc::ZRLE,
];

#[test]
fn every_truncation_is_an_error() {
    for e in ALL {
        for pf in [PixelFormat::NATIVE, PixelFormat::BGR233] {
            let (body, n) = encoded(e, pf);
            let mut fb = ClientFramebuffer::new(40, 30, client_pf(&pf));
            assert_eq!(
                Decoder::new().decode_update(&body, n, &mut fb),
                Ok(body.len())
            );
            for cut in 0..body.len() {
                let r = Decoder::new().decode_update(&body[..cut], n, &mut fb);
                assert!(
                    r.is_err(),
                    "encoding {e}: cut at {cut} of {} decoded",
                    body.len()
                );
            }
        }
    }
}

#[test]
fn corrupted_input_never_panics() {
    // Deterministic xorshift so a failure is reproducible.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for e in ALL {
        let (body, n) = encoded(e, PixelFormat::RGB565);
        for _ in 0..300 {
            let mut b = body.clone();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() as usize) % b.len();
                b[i] = rnd() as u8;
            }
            let mut fb = ClientFramebuffer::new(40, 30, client_pf(&PixelFormat::RGB565));
            let _ = Decoder::new().decode_update(&b, n, &mut fb);
            assert_eq!(fb.pixels.len(), fb.width as usize * fb.height as usize);
        }
    }
}

#[test]
fn tight_stream_resets_are_honoured() {
    let pf = PixelFormat::NATIVE;
    let mut fb = ClientFramebuffer::new(20, 10, client_pf(&pf));
    let mut msg = crate::rfb::UpdateBuf::from_vec(vec![0, 0, 0, 1]);
    let f = testutil::palette_frame(20, 10, 2, &pf);
    let mut e = new_encoder(enc::TIGHT);
    let p = testutil::params(pf);
    e.encode(&f, f.bounds(), &p, &mut msg);
    let mut d = Decoder::new();
    assert_eq!(d.decode_message(&msg, &mut fb), Ok(msg.len()));
    // The same bytes again continue stream 1 and fail unless it is reset.
    let mut again = crate::rfb::UpdateBuf::from_vec(vec![0, 0, 0, 1]);
    new_encoder(enc::TIGHT).encode(&f, f.bounds(), &p, &mut again);
    assert!(d.decode_message(&again, &mut fb).is_err());
    let mut d = Decoder::new();
    d.decode_message(&msg, &mut fb).unwrap();
    again[4 + 12] |= 0x02; // reset stream 1
    assert_eq!(d.decode_message(&again, &mut fb), Ok(again.len()));
}

#[test]
fn jpeg_whose_header_claims_another_size_is_refused() {
    let mut jpeg = Vec::new();
    assert!(super::jpeg::JpegCompressor::default().compress(
        &crate::framebuffer::Frame::new(4, 4),
        Rect::new(0, 0, 4, 4),
        5,
        &mut jpeg
    ));
    let mut b = Vec::new();
    for n in [0u16, 0, 8, 8] {
        b.extend_from_slice(&n.to_be_bytes());
    }
    b.extend_from_slice(&enc::TIGHT.to_be_bytes());
    b.push(0x90);
    super::tight::write_compact_len(jpeg.len(), &mut b);
    b.extend_from_slice(&jpeg);
    let mut fb = ClientFramebuffer::new(8, 8, client_pf(&PixelFormat::NATIVE));
    assert!(matches!(
        Decoder::new().decode_update(&b, 1, &mut fb),
        Err(DecodeError::Invalid(_))
    ));
    // The same JPEG in a rectangle of its size decodes.
    b[4..8].copy_from_slice(&[0, 4, 0, 4]);
    assert_eq!(Decoder::new().decode_update(&b, 1, &mut fb), Ok(b.len()));
}
