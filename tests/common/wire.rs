//! Independent framing of recorded RFB byte streams, used to prove which
//! encodings and pixel format a real client and the server really used.
//! Only lengths are parsed; nothing is decoded. Plus a recording TCP proxy
//! to put between a client program (vncviewer) and the server.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use ticketvnc::rfb::PixelFormat;

/// One rectangle header seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireRect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub encoding: i32,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn compact_len(&mut self) -> Option<usize> {
        let b0 = self.u8()? as usize;
        let mut len = b0 & 0x7f;
        if b0 & 0x80 != 0 {
            let b1 = self.u8()? as usize;
            len |= (b1 & 0x7f) << 7;
            if b1 & 0x80 != 0 {
                len |= (self.u8()? as usize) << 14;
            }
        }
        Some(len)
    }
}

/// `None`: the recording ends inside this message. `Some(Err)`: malformed.
type Step<T> = Option<Result<T, String>>;

fn skip_tight(c: &mut Cursor, r: &WireRect, tpx: usize) -> Step<()> {
    let ctrl = c.u8()?;
    match ctrl >> 4 {
        8 => {
            c.take(tpx)?;
        }
        9 => {
            let n = c.compact_len()?;
            c.take(n)?;
        }
        x if x & 8 == 0 => {
            let filter = if x & 4 != 0 { c.u8()? } else { 0 };
            let (w, h) = (r.w as usize, r.h as usize);
            let size = match filter {
                0 | 2 => w * h * tpx,
                1 => {
                    let n = c.u8()? as usize + 1;
                    c.take(n * tpx)?;
                    if n == 2 {
                        w.div_ceil(8) * h
                    } else {
                        w * h
                    }
                }
                f => return Some(Err(format!("unknown Tight filter {f} in {r:?}"))),
            };
            if size < 12 {
                c.take(size)?;
            } else {
                let n = c.compact_len()?;
                c.take(n)?;
            }
        }
        other => {
            return Some(Err(format!(
                "invalid Tight compression control {other:#x} in {r:?}"
            )))
        }
    }
    Some(Ok(()))
}

fn skip_hextile(c: &mut Cursor, r: &WireRect, bpp: usize) -> Step<()> {
    for ty in (0..r.h as usize).step_by(16) {
        for tx in (0..r.w as usize).step_by(16) {
            let tw = (r.w as usize - tx).min(16);
            let th = (r.h as usize - ty).min(16);
            let sub = c.u8()?;
            if sub & 1 != 0 {
                c.take(tw * th * bpp)?;
                continue;
            }
            if sub & 2 != 0 {
                c.take(bpp)?;
            }
            if sub & 4 != 0 {
                c.take(bpp)?;
            }
            if sub & 8 != 0 {
                let n = c.u8()? as usize;
                let each = if sub & 16 != 0 { bpp + 2 } else { 2 };
                c.take(n * each)?;
            }
        }
    }
    Some(Ok(()))
}

/// Frame the server-to-client stream of an RFB 3.8 connection (security
/// None or VNC authentication) and return the rectangle headers of every
/// complete FramebufferUpdate. `pf` is the pixel format the client used.
pub fn server_updates(bytes: &[u8], pf: &PixelFormat) -> Result<Vec<Vec<WireRect>>, String> {
    Ok(server_stream(bytes, pf)?.updates)
}

/// Every complete FramebufferUpdate's body (the bytes after the
/// rectangle count) with its rectangle count, in order: what a decoder
/// of our own can replay to see what the viewer was sent.
#[allow(dead_code)]
pub fn update_bodies(bytes: &[u8], pf: &PixelFormat) -> Result<Vec<(u16, Vec<u8>)>, String> {
    Ok(server_stream(bytes, pf)?.bodies)
}

/// How many Tight rectangles used JPEG compression (control 0x9_).
#[allow(dead_code)]
pub fn tight_jpeg_rects(bytes: &[u8], pf: &PixelFormat) -> Result<usize, String> {
    Ok(server_stream(bytes, pf)?.tight_jpeg)
}

struct Stream {
    updates: Vec<Vec<WireRect>>,
    kinds: Vec<u8>,
    bodies: Vec<(u16, Vec<u8>)>,
    tight_jpeg: usize,
}

/// The type of every server message after ServerInit, in order.
pub fn server_message_types(bytes: &[u8], pf: &PixelFormat) -> Result<Vec<u8>, String> {
    Ok(server_stream(bytes, pf)?.kinds)
}

/// The updates, and the type of every message.
fn server_stream(bytes: &[u8], pf: &PixelFormat) -> Result<Stream, String> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let short = || "recording ends inside the handshake".to_string();
    let version = c.take(12).ok_or_else(short)?;
    if version != b"RFB 003.008\n" {
        return Err(format!("unexpected server version {version:?}"));
    }
    let n = c.u8().ok_or_else(short)? as usize;
    let types = c.take(n).ok_or_else(short)?.to_vec();
    if types.contains(&2) && !types.contains(&1) {
        c.take(16).ok_or_else(short)?; // challenge
    }
    if c.u32().ok_or_else(short)? != 0 {
        return Err("security result: failed".into());
    }
    c.take(4 + 16).ok_or_else(short)?; // size and server pixel format
    let name_len = c.u32().ok_or_else(short)? as usize;
    c.take(name_len).ok_or_else(short)?;

    let bpp = pf.bytes_per_pixel();
    // Tight's TPIXEL is 3 bytes for 32 bpp, depth 24, 8 bits per channel.
    let tpx = if pf.bits_per_pixel == 32
        && pf.depth == 24
        && (pf.red_max, pf.green_max, pf.blue_max) == (255, 255, 255)
    {
        3
    } else {
        bpp
    };
    let mut updates = Vec::new();
    let mut kinds = Vec::new();
    let mut bodies = Vec::new();
    let mut tight_jpeg = 0;
    while let Some(kind) = c.u8() {
        let mut body_start = None;
        let step: Step<Option<Vec<WireRect>>> = (|| {
            match kind {
                0 => {
                    c.u8()?;
                    let n = c.u16()?;
                    body_start = Some((n, c.pos));
                    let mut rects = Vec::new();
                    for _ in 0..n {
                        let r = WireRect {
                            x: c.u16()?,
                            y: c.u16()?,
                            w: c.u16()?,
                            h: c.u16()?,
                            encoding: c.u32()? as i32,
                        };
                        let (w, h) = (r.w as usize, r.h as usize);
                        match r.encoding {
                            0 => {
                                c.take(w * h * bpp)?;
                            }
                            1 => {
                                c.take(4)?;
                            }
                            2 => {
                                let n = c.u32()? as usize;
                                c.take(bpp + n * (bpp + 8))?;
                            }
                            5 => {
                                if let Err(e) = skip_hextile(&mut c, &r, bpp)? {
                                    return Some(Err(e));
                                }
                            }
                            6 | 16 => {
                                let len = c.u32()? as usize;
                                c.take(len)?;
                            }
                            7 => {
                                if c.b.get(c.pos).is_some_and(|ctrl| ctrl >> 4 == 9) {
                                    tight_jpeg += 1;
                                }
                                if let Err(e) = skip_tight(&mut c, &r, tpx)? {
                                    return Some(Err(e));
                                }
                            }
                            // DesktopSize; the empty confirmations of QEMU
                            // Extended Key Event and ExtendedMouseButtons.
                            -223 | -258 | -316 => {}
                            -224 => {
                                rects.push(r);
                                break;
                            }
                            -239 => {
                                c.take(w * h * bpp + w.div_ceil(8) * h)?;
                            }
                            -240 => {
                                if w * h > 0 {
                                    c.take(6 + 2 * w.div_ceil(8) * h)?;
                                }
                            }
                            // Cursor With Alpha: the encoding, then (as
                            // ticketvnc sends it) Raw RGBA.
                            -314 => {
                                c.take(4 + w * h * 4)?;
                            }
                            // PointerPos, VMware Cursor Position: no data.
                            -232 | 0x574d_5666 => {}
                            // LED State: one byte; VMware LED State: a U32.
                            -261 => {
                                c.take(1)?;
                            }
                            0x574d_5668 => {
                                c.take(4)?;
                            }
                            -307 => {
                                let len = c.u32()? as usize;
                                c.take(len)?;
                            }
                            -308 => {
                                let screens = c.u8()? as usize;
                                c.take(3 + 16 * screens)?;
                            }
                            other => {
                                return Some(Err(format!(
                                    "rectangle {r:?}: encoding {other} cannot be framed here"
                                )))
                            }
                        }
                        rects.push(r);
                    }
                    Some(Ok(Some(rects)))
                }
                1 => {
                    c.u8()?;
                    c.u16()?;
                    let n = c.u16()? as usize;
                    c.take(6 * n)?;
                    Some(Ok(None))
                }
                2 => Some(Ok(None)),
                3 => {
                    c.take(3)?;
                    // A negative length is an Extended Clipboard message of
                    // abs(length) bytes.
                    let len = (c.u32()? as i32).unsigned_abs() as usize;
                    c.take(len)?;
                    Some(Ok(None))
                }
                150 => Some(Ok(None)), // EndOfContinuousUpdates
                248 => {
                    c.take(3 + 4)?;
                    let len = c.u8()? as usize;
                    c.take(len)?;
                    Some(Ok(None))
                }
                other => Some(Err(format!("unknown server message type {other}"))),
            }
        })();
        match step {
            None => break, // the recording stopped mid-message
            Some(Err(e)) => return Err(e),
            Some(Ok(Some(rects))) => {
                updates.push(rects);
                if let Some((n, start)) = body_start {
                    bodies.push((n, bytes[start..c.pos].to_vec()));
                }
            }
            Some(Ok(None)) => {}
        }
        kinds.push(kind);
    }
    Ok(Stream {
        updates,
        kinds,
        bodies,
        tight_jpeg,
    })
}

/// What a client asked for, from its side of the recording.
#[derive(Debug, Default)]
pub struct ClientRequests {
    pub pixel_formats: Vec<PixelFormat>,
    pub encodings: Vec<Vec<i32>>,
    pub update_requests: usize,
    /// EnableContinuousUpdates messages: their enable flags.
    pub continuous_updates: Vec<bool>,
    /// ClientFence messages.
    pub fences: usize,
}

/// Frame the client-to-server stream of an RFB 3.8 connection.
pub fn client_requests(bytes: &[u8], vnc_auth: bool) -> Result<ClientRequests, String> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let short = || "recording ends inside the handshake".to_string();
    c.take(12).ok_or_else(short)?;
    c.u8().ok_or_else(short)?; // security type
    if vnc_auth {
        c.take(16).ok_or_else(short)?;
    }
    c.u8().ok_or_else(short)?; // ClientInit
    let mut out = ClientRequests::default();
    while let Some(kind) = c.u8() {
        let step: Step<()> = (|| {
            match kind {
                0 => {
                    c.take(3)?;
                    let b: [u8; 16] = c.take(16)?.try_into().unwrap();
                    out.pixel_formats.push(PixelFormat::from_bytes(&b));
                }
                2 => {
                    c.u8()?;
                    let n = c.u16()? as usize;
                    let list = c.take(4 * n)?;
                    out.encodings.push(
                        list.chunks_exact(4)
                            .map(|e| i32::from_be_bytes([e[0], e[1], e[2], e[3]]))
                            .collect(),
                    );
                }
                3 => {
                    c.take(9)?;
                    out.update_requests += 1;
                }
                4 => {
                    c.take(7)?;
                }
                5 => {
                    c.take(5)?;
                }
                6 => {
                    c.take(3)?;
                    // Negative: an Extended Clipboard message.
                    let len = (c.u32()? as i32).unsigned_abs() as usize;
                    c.take(len)?;
                }
                150 => {
                    let enable = c.u8()? != 0;
                    c.take(8)?;
                    out.continuous_updates.push(enable);
                }
                255 => {
                    // QEMU Extended Key Event (subtype 0).
                    c.take(11)?;
                }
                248 => {
                    c.take(3 + 4)?;
                    let len = c.u8()? as usize;
                    c.take(len)?;
                    out.fences += 1;
                }
                251 => {
                    c.take(5)?;
                    let n = c.u8()? as usize;
                    c.take(1 + 16 * n)?;
                }
                other => return Some(Err(format!("unknown client message type {other}"))),
            }
            Some(Ok(()))
        })();
        match step {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => {}
        }
    }
    Ok(out)
}

/// Every framebuffer rectangle of every update must use one of `allowed`.
pub fn assert_encodings(updates: &[Vec<WireRect>], allowed: &[i32], what: &str) {
    assert!(!updates.is_empty(), "{what}: no complete update recorded");
    for (i, u) in updates.iter().enumerate() {
        for r in u {
            if r.encoding < 0 {
                continue; // pseudo-encodings
            }
            assert!(
                allowed.contains(&r.encoding),
                "{what}: update {i} has rectangle {r:?} in encoding {}, expected one of \
                 {allowed:?} (did the server fall back?)",
                r.encoding
            );
        }
    }
}

/// One proxied connection: what each side sent.
#[derive(Clone, Default)]
pub struct Recording {
    pub client_to_server: Arc<Mutex<Vec<u8>>>,
    pub server_to_client: Arc<Mutex<Vec<u8>>>,
}

impl Recording {
    pub fn c2s(&self) -> Vec<u8> {
        self.client_to_server.lock().unwrap().clone()
    }
    pub fn s2c(&self) -> Vec<u8> {
        self.server_to_client.lock().unwrap().clone()
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `target` and records both
/// directions of every connection.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    pub connections: Arc<Mutex<Vec<Recording>>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl RecordingProxy {
    pub fn start(target: SocketAddr) -> RecordingProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stop2) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = s else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let rec = Recording::default();
                conns.lock().unwrap().push(rec.clone());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (a, b) = (rec.client_to_server.clone(), rec.server_to_client.clone());
                std::thread::spawn(move || pump(client, server, a));
                std::thread::spawn(move || pump(s2, c2, b));
            }
        });
        RecordingProxy {
            addr,
            connections,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The recording of the `i`-th connection.
    pub fn recording(&self, i: usize) -> Recording {
        self.connections
            .lock()
            .unwrap()
            .get(i)
            .cloned()
            .unwrap_or_else(|| panic!("no proxied connection #{i}"))
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}
