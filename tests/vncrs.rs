//! Real client: the `vnc-rs` crate (Raw, CopyRect, Tight, ZRLE; None and VNC
//! authentication) over real TCP sockets, compared pixel-exact with the test
//! pattern.
//!
//! vnc-rs hands out decoded pixels but not the encoding each rectangle came
//! in, so the client's socket is wrapped in a tap that records every byte
//! the server sent. The recorded stream is then framed message by message
//! (only lengths are parsed, nothing is decoded) to prove which encoding the
//! server really used.

mod common;

use common::wire::{assert_encodings, server_updates, WireRect};
use common::{assert_same_image, compare_images, TestServer};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use ticketvnc::rfb::PixelFormat as TvPixelFormat;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use vnc::{PixelFormat, VncClient, VncConnector, VncEncoding, VncError, VncEvent, X11Event};

const W: u16 = 320;
const H: u16 = 240;
const PASSWORD: &str = "h3lpd3sk";
const TIMEOUT: Duration = Duration::from_secs(30);

const RAW: i32 = 0;
const COPY_RECT: i32 = 1;

// ------------------------------------------------------------ the tap

/// A stream that records every byte read from it.
struct Tap {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled()[before..].to_vec();
            self.log.lock().unwrap().extend_from_slice(&new);
        }
        r
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ------------------------------------------------------ the client side

struct Viewer {
    client: VncClient,
    tap: Arc<Mutex<Vec<u8>>>,
    /// The format pixels arrive in (ticketvnc's type, for to_native).
    pf: TvPixelFormat,
    fb: Vec<u32>,
    w: usize,
    h: usize,
    copies: usize,
}

fn tv_format(pf: &PixelFormat) -> TvPixelFormat {
    TvPixelFormat {
        bits_per_pixel: pf.bits_per_pixel,
        depth: pf.depth,
        big_endian: pf.big_endian_flag != 0,
        true_colour: pf.true_color_flag != 0,
        red_max: pf.red_max,
        green_max: pf.green_max,
        blue_max: pf.blue_max,
        red_shift: pf.red_shift,
        green_shift: pf.green_shift,
        blue_shift: pf.blue_shift,
    }
}

fn rgb565(big_endian: bool) -> PixelFormat {
    let mut pf = PixelFormat::default();
    pf.bits_per_pixel = 16;
    pf.depth = 16;
    pf.big_endian_flag = big_endian as u8;
    pf.true_color_flag = 1;
    pf.red_max = 31;
    pf.green_max = 63;
    pf.blue_max = 31;
    pf.red_shift = 11;
    pf.green_shift = 5;
    pf.blue_shift = 0;
    pf
}

async fn connect(
    server: &TestServer,
    encodings: &[VncEncoding],
    password: Option<&str>,
    pf: Option<PixelFormat>,
) -> Result<Viewer, VncError> {
    let tcp = TcpStream::connect(server.addr).await?;
    let tap = Arc::new(Mutex::new(Vec::new()));
    let stream = Tap {
        inner: tcp,
        log: tap.clone(),
    };
    let mut conn = VncConnector::<Tap, std::future::Ready<Result<String, VncError>>>::new(stream)
        .allow_shared(true);
    if let Some(pw) = password {
        conn = conn.set_auth_method(std::future::ready(Ok(pw.to_string())));
    }
    for e in encodings {
        conn = conn.add_encoding(*e);
    }
    if let Some(pf) = pf {
        conn = conn.set_pixel_format(pf);
    }
    let client = conn.build()?.try_start().await?.finish()?;
    Ok(Viewer {
        client,
        tap,
        pf: pf.map(|p| tv_format(&p)).unwrap_or(TvPixelFormat::NATIVE),
        fb: Vec::new(),
        w: 0,
        h: 0,
        copies: 0,
    })
}

impl Viewer {
    fn apply(&mut self, ev: VncEvent) {
        match ev {
            VncEvent::SetResolution(s) => {
                self.w = s.width as usize;
                self.h = s.height as usize;
                self.fb = vec![0; self.w * self.h];
            }
            VncEvent::SetPixelFormat(pf) => self.pf = tv_format(&pf),
            VncEvent::RawImage(r, data) => {
                let bpp = self.pf.bytes_per_pixel();
                assert_eq!(
                    data.len(),
                    r.width as usize * r.height as usize * bpp,
                    "image data size for {r:?}"
                );
                for (i, px) in data.chunks_exact(bpp).enumerate() {
                    let x = r.x as usize + i % r.width as usize;
                    let y = r.y as usize + i / r.width as usize;
                    assert!(
                        x < self.w && y < self.h,
                        "rectangle {r:?} outside framebuffer"
                    );
                    let v = self.pf.read_pixel(px);
                    self.fb[y * self.w + x] = self.pf.to_native(v);
                }
            }
            VncEvent::Copy(dst, src) => {
                self.copies += 1;
                let mut tmp = Vec::with_capacity(src.width as usize * src.height as usize);
                for y in 0..src.height as usize {
                    let s = (src.y as usize + y) * self.w + src.x as usize;
                    tmp.extend_from_slice(&self.fb[s..s + src.width as usize]);
                }
                for (y, row) in tmp.chunks_exact(dst.width as usize).enumerate() {
                    let d = (dst.y as usize + y) * self.w + dst.x as usize;
                    self.fb[d..d + row.len()].copy_from_slice(row);
                }
            }
            VncEvent::JpegImage(r, _) => panic!("lossy JPEG rectangle {r:?} in a lossless test"),
            VncEvent::Error(e) => panic!("vnc-rs reported an error: {e}"),
            _ => {}
        }
    }

    /// Apply events until the framebuffer equals `want` (or time out and
    /// fail with a diff image named `name`). `refresh` sends an incremental
    /// request whenever the server goes quiet.
    async fn wait_for(&mut self, name: &str, want: &[u32], refresh: bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if self.w * self.h == want.len() && self.fb == want {
                return;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let r = compare_images(name, self.w, self.h, want, &self.fb);
                panic!("timed out waiting for the picture: {r:?}");
            }
            let step = Duration::from_millis(500).min(deadline - now);
            match tokio::time::timeout(step, self.client.recv_event()).await {
                Ok(Ok(ev)) => self.apply(ev),
                Ok(Err(e)) => {
                    let _ = compare_images(name, self.w, self.h, want, &self.fb);
                    panic!("{name}: connection ended: {e}");
                }
                Err(_) => {
                    if refresh {
                        self.client.input(X11Event::Refresh).await.unwrap();
                    }
                }
            }
        }
    }

    fn wire_updates(&self) -> Vec<Vec<WireRect>> {
        let log = self.tap.lock().unwrap().clone();
        server_updates(&log, &self.pf).expect("server byte stream frames cleanly")
    }
}

fn encoding_number(e: VncEncoding) -> i32 {
    e as i32
}

/// Connect with `encoding` first in the list, get the first full picture,
/// compare pixel-exact (after reducing to `pf`), and check the wire.
async fn full_picture(name: &str, encoding: VncEncoding, password: bool, pf: Option<PixelFormat>) {
    let server = TestServer::start(W, H, password.then_some(PASSWORD));
    let mut encodings = vec![encoding];
    if encoding != VncEncoding::Raw {
        encodings.push(VncEncoding::Raw);
    }
    let mut v = connect(&server, &encodings, password.then_some(PASSWORD), pf)
        .await
        .unwrap_or_else(|e| panic!("{name}: connect failed: {e}"));
    let want: Vec<u32> = match pf {
        Some(p) => {
            let p = tv_format(&p);
            server
                .expected(0)
                .iter()
                .map(|&x| common::reduce(&p, x))
                .collect()
        }
        None => server.expected(0),
    };
    v.wait_for(name, &want, false).await;
    assert_same_image(name, W as usize, H as usize, &want, &v.fb);
    let updates = v.wire_updates();
    assert_encodings(&updates, &[encoding_number(encoding)], name);
    let _ = v.client.close().await;
}

/// Tight and ZRLE with every encoder call split between 4 threads
/// (thresholds lowered so the 320x240 pattern is split too): pixel-exact.
/// The setting is process-wide, so other tests here may run with it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tight_and_zrle_parallel() {
    ticketvnc::encoding::parallel::set_threads(4);
    ticketvnc::encoding::parallel::set_min_sizes(4096, 4096);
    full_picture("vncrs-tight-parallel", VncEncoding::Tight, false, None).await;
    full_picture("vncrs-zrle-parallel", VncEncoding::Zrle, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_no_auth() {
    full_picture("vncrs-raw", VncEncoding::Raw, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_with_password() {
    full_picture("vncrs-raw-pw", VncEncoding::Raw, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tight_no_auth() {
    full_picture("vncrs-tight", VncEncoding::Tight, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tight_with_password() {
    full_picture("vncrs-tight-pw", VncEncoding::Tight, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrle_no_auth() {
    full_picture("vncrs-zrle", VncEncoding::Zrle, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrle_with_password() {
    full_picture("vncrs-zrle-pw", VncEncoding::Zrle, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_rgb565_little_endian() {
    full_picture(
        "vncrs-raw-565le",
        VncEncoding::Raw,
        false,
        Some(rgb565(false)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_rgb565_big_endian() {
    full_picture(
        "vncrs-raw-565be",
        VncEncoding::Raw,
        false,
        Some(rgb565(true)),
    )
    .await;
}

// vnc-rs decodes Tight only at 32 bpp, so 16 bpp is tested with ZRLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrle_rgb565_little_endian_with_password() {
    full_picture(
        "vncrs-zrle-565le-pw",
        VncEncoding::Zrle,
        true,
        Some(rgb565(false)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrle_rgb565_big_endian() {
    full_picture(
        "vncrs-zrle-565be",
        VncEncoding::Zrle,
        false,
        Some(rgb565(true)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_rejected() {
    let server = TestServer::start(W, H, Some(PASSWORD));
    let r = connect(&server, &[VncEncoding::Raw], Some("wrong-pw"), None).await;
    match r {
        Err(VncError::General(reason)) => {
            assert!(!reason.is_empty(), "3.8 failure carries a reason string")
        }
        Err(VncError::WrongPassword) => {}
        Err(e) => panic!("expected an authentication failure, got error {e}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    // No password at all cannot get in either.
    let r = connect(&server, &[VncEncoding::Raw], None, None).await;
    assert!(r.is_err(), "a client without a password got in");
    assert_eq!(server.viewer_count(), 0);
    // The server still serves the right password afterwards.
    let mut v = connect(&server, &[VncEncoding::Raw], Some(PASSWORD), None)
        .await
        .expect("right password after wrong ones");
    v.wait_for("vncrs-after-wrong-pw", &server.expected(0), false)
        .await;
    let _ = v.client.close().await;
}

/// Animate the pattern by exactly one frame after the first picture: the
/// moving box must arrive as a CopyRect and the rest in `encoding`.
async fn copy_rect_with(name: &str, encoding: VncEncoding) {
    let server = TestServer::start(W, H, None);
    let mut encodings = vec![VncEncoding::CopyRect, encoding];
    if encoding != VncEncoding::Raw {
        encodings.push(VncEncoding::Raw);
    }
    let mut v = connect(&server, &encodings, None, None).await.unwrap();
    v.wait_for(&format!("{name}-frame0"), &server.expected(0), false)
        .await;
    server.control.set_frame(1);
    v.client.input(X11Event::Refresh).await.unwrap();
    let want = server.expected(1);
    v.wait_for(&format!("{name}-frame1"), &want, true).await;
    assert_same_image(name, W as usize, H as usize, &want, &v.fb);
    assert!(v.copies >= 1, "{name}: no CopyRect was decoded");
    let updates = v.wire_updates();
    assert!(
        updates.len() >= 2,
        "{name}: expected at least two updates on the wire"
    );
    let later: Vec<WireRect> = updates[1..].iter().flatten().copied().collect();
    assert!(
        later.iter().any(|r| r.encoding == COPY_RECT),
        "{name}: no CopyRect rectangle on the wire after the box moved: {later:?}"
    );
    assert_encodings(&updates, &[COPY_RECT, encoding_number(encoding)], name);
    // The first (full) update must not contain a CopyRect.
    assert!(updates[0].iter().all(|r| r.encoding != COPY_RECT));
    let _ = v.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_rect_with_raw() {
    copy_rect_with("vncrs-copyrect-raw", VncEncoding::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_rect_with_tight() {
    copy_rect_with("vncrs-copyrect-tight", VncEncoding::Tight).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_rect_with_zrle() {
    copy_rect_with("vncrs-copyrect-zrle", VncEncoding::Zrle).await;
}

#[test]
fn wire_framer_sees_raw_and_copyrect() {
    // The framer itself must find what is there and refuse what is not.
    let mut b = b"RFB 003.008\n".to_vec();
    b.extend_from_slice(&[1, 1, 0, 0, 0, 0]); // None, result OK
    b.extend_from_slice(&[0, 2, 0, 1]);
    b.extend_from_slice(&TvPixelFormat::NATIVE.to_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, b'x']);
    b.extend_from_slice(&[0, 0, 0, 2]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    let u = server_updates(&b, &TvPixelFormat::NATIVE).unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].iter().map(|r| r.encoding).collect::<Vec<_>>(),
        vec![RAW, COPY_RECT]
    );
    // A truncated update is not counted.
    assert!(server_updates(&b[..b.len() - 1], &TvPixelFormat::NATIVE)
        .unwrap()
        .is_empty());
}

/// A rectangle header: x, y, w, h, encoding.
fn rect_header(x: u16, y: u16, w: u16, h: u16, enc: i32, out: &mut Vec<u8>) {
    for v in [x, y, w, h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&enc.to_be_bytes());
}

#[test]
fn wire_framer_walks_rre_hextile_tight_zrle() {
    let pf = TvPixelFormat::NATIVE;
    let mut b = b"RFB 003.008\n".to_vec();
    b.extend_from_slice(&[1, 2]); // VNC auth only
    b.extend_from_slice(&[7; 16]); // challenge
    b.extend_from_slice(&[0, 0, 0, 0, 0, 32, 0, 32]);
    b.extend_from_slice(&pf.to_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0, 0, 5]);
    // RRE: 1 subrect.
    rect_header(0, 0, 8, 8, 2, &mut b);
    b.extend_from_slice(&[0, 0, 0, 1]);
    b.extend_from_slice(&[0; 4 + 4 + 8]);
    // Hextile 20x16: two tiles, one raw (4x16), one bg + 2 coloured subrects.
    rect_header(0, 0, 20, 16, 5, &mut b);
    b.push(2 | 8 | 16);
    b.extend_from_slice(&[0; 4]);
    b.push(2);
    b.extend_from_slice(&[0; 2 * (4 + 2)]);
    b.push(1);
    b.extend_from_slice(&[0; 4 * 16 * 4]);
    // Tight fill (3-byte TPIXEL), then basic copy filter with a 2-byte
    // compact length (size 4*4*3 = 48 >= 12).
    rect_header(0, 0, 4, 4, 7, &mut b);
    b.extend_from_slice(&[0x80, 1, 2, 3]);
    rect_header(0, 0, 4, 4, 7, &mut b);
    b.push(0x00);
    b.extend_from_slice(&[0x81, 0x01]); // 129 bytes
    b.extend_from_slice(&[0; 129]);
    // ZRLE: 3 bytes of zlib data.
    rect_header(0, 0, 4, 4, 16, &mut b);
    b.extend_from_slice(&[0, 0, 0, 3, 1, 2, 3]);
    let u = server_updates(&b, &pf).unwrap();
    assert_eq!(
        u[0].iter().map(|r| r.encoding).collect::<Vec<_>>(),
        vec![2, 5, 7, 7, 16]
    );
    // One byte more or less in any payload breaks the framing: cut a byte
    // from the Hextile raw tile and the update is no longer complete or
    // the next header is garbage.
    let hextile_end = b.len() - (4 + 12 + 1 + 2 + 129) - (12 + 4) - (12 + 7);
    let mut broken = b.clone();
    broken.remove(hextile_end - 1);
    let r = server_updates(&broken, &pf);
    assert!(
        !matches!(&r, Ok(u) if u.len() == 1 && u[0].len() == 5),
        "framer accepted a corrupted stream: {r:?}"
    );
}
