//! The measuring viewer: one for every server. Pull model (the next
//! incremental FramebufferUpdateRequest leaves as soon as the last byte of
//! an update has arrived), explicit encodings and levels, and a framing
//! parser that reads only as much of each rectangle as it takes to know
//! where the update ends. Whole updates are read into one reused buffer
//! (amortised growth, no copying per read). The first viewer of a cell
//! also hands each update to a decoder thread (the project's strict
//! decoder) that keeps a framebuffer, reads the generator's marker for
//! latency and is compared with the X screen at quiescence; it never holds
//! up the pull loop.

use anyhow::{bail, ensure, Context, Result};
use rfb_decode::{ClientFramebuffer, Decoder};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use ticketvnc::rfb::messages::enc;
use ticketvnc::rfb::PixelFormat;

/// Largest single rectangle payload accepted (a 4096x4096 Raw rectangle).
const MAX_RECT_BYTES: usize = 4096 * 4096 * 4;
/// Largest whole update accepted.
const MAX_UPDATE_BYTES: usize = 256 << 20;
const MAX_RECTS: usize = 1 << 20;

/// What the client asks every server for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Raw,
    Zrle,
    TightLossless,
    TightJpeg,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Zrle => "zrle",
            Encoding::TightLossless => "tight",
            Encoding::TightJpeg => "tight-jpeg",
        }
    }
    pub fn parse(s: &str) -> Option<Encoding> {
        [
            Encoding::Raw,
            Encoding::Zrle,
            Encoding::TightLossless,
            Encoding::TightJpeg,
        ]
        .into_iter()
        .find(|e| e.name() == s)
    }
    pub fn lossless(self) -> bool {
        self != Encoding::TightJpeg
    }
    /// The SetEncodings list: the one encoding, its levels, CopyRect (every
    /// viewer lists it; a server that finds moves may use it), and the
    /// pseudo-encodings every server supports (the cursor travels apart
    /// from the framebuffer, LastRect lets servers stream Tight).
    fn list(self, compress: u8, quality: u8) -> Vec<i32> {
        let mut v = match self {
            Encoding::Raw => vec![enc::RAW],
            Encoding::Zrle => vec![enc::ZRLE, enc::COMPRESS_LEVEL_0 + compress as i32],
            Encoding::TightLossless => vec![enc::TIGHT, enc::COMPRESS_LEVEL_0 + compress as i32],
            Encoding::TightJpeg => vec![
                enc::TIGHT,
                enc::COMPRESS_LEVEL_0 + compress as i32,
                enc::QUALITY_LEVEL_0 + quality as i32,
            ],
        };
        v.extend([enc::COPY_RECT, enc::CURSOR, enc::LAST_RECT]);
        v
    }
}

/// Counters one viewer keeps (read by the cell while it runs).
#[derive(Default)]
pub struct Counters {
    pub updates: AtomicU64,
    pub bytes: AtomicU64,
    /// Size of the first update that carried pixels (not only a cursor).
    pub first_pixels_bytes: AtomicU64,
    /// This viewer thread's CPU time (ticks), refreshed after each update.
    pub cpu_ticks: AtomicU64,
}

/// One arrival: when the last byte of update `n` was read.
pub struct Arrival {
    pub at: Instant,
    pub msg: Vec<u8>,
}

pub struct Viewer {
    pub counters: Arc<Counters>,
    sock: TcpStream,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    pub width: u16,
    pub height: u16,
}

/// CPU ticks (user + system) of the calling thread.
pub fn thread_cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .unwrap_or(0)
}

/// utime + stime from a /proc/.../stat line.
pub fn stat_ticks(s: &str) -> Option<u64> {
    // The command name may contain spaces: fields count from the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl Viewer {
    /// Connect, handshake (security type None), set the pixel format and
    /// encodings, and start the pull loop on its own thread. With
    /// `decoded`, every complete update is also sent there (with its
    /// arrival time) for decoding.
    pub fn connect(
        addr: SocketAddr,
        encoding: Encoding,
        compress: u8,
        quality: u8,
        decoded: Option<mpsc::Sender<Arrival>>,
        recycle: Option<mpsc::Receiver<Vec<u8>>>,
    ) -> Result<Viewer> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "server not ready");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e).context("connect to the server"),
            }
        };
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let (width, height) = handshake(&mut s)?;
        let mut out = Vec::new();
        out.extend([0u8, 0, 0, 0]);
        out.extend(PixelFormat::NATIVE.to_bytes());
        let list = encoding.list(compress, quality);
        out.extend([2u8, 0]);
        out.extend((list.len() as u16).to_be_bytes());
        for e in list {
            out.extend(e.to_be_bytes());
        }
        request(&mut out, false, width, height);
        s.write_all(&out)?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counters.clone(), stop.clone());
        let sock = s.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("bench-viewer".into())
            .spawn(move || pull_loop(s, width, height, c, st, decoded, recycle))?;
        Ok(Viewer {
            counters,
            sock,
            stop,
            thread: Some(thread),
            width,
            height,
        })
    }

    /// Stop after the update in flight; the viewer's error, if it had one.
    pub fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("viewer thread panicked"),
            None => Ok(()),
        }
    }

    pub fn failed(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

fn request(out: &mut Vec<u8>, incremental: bool, w: u16, h: u16) {
    out.extend([3u8, incremental as u8, 0, 0, 0, 0]);
    out.extend(w.to_be_bytes());
    out.extend(h.to_be_bytes());
}

fn read_u32(s: &mut impl Read) -> Result<u32> {
    let mut b = [0; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// RFB 3.8 (or 3.7/3.3 when that is all the server speaks) with security
/// type None; returns the framebuffer size.
fn handshake(s: &mut TcpStream) -> Result<(u16, u16)> {
    let mut v = [0u8; 12];
    s.read_exact(&mut v)?;
    ensure!(&v[..4] == b"RFB ", "not an RFB server");
    let minor: u32 = std::str::from_utf8(&v[8..11])?.parse()?;
    let minor = if minor >= 8 {
        8
    } else if minor == 7 {
        7
    } else {
        3
    };
    s.write_all(format!("RFB 003.00{minor}\n").as_bytes())?;
    if minor == 3 {
        ensure!(read_u32(s)? == 1, "server wants authentication");
    } else {
        let mut n = [0u8; 1];
        s.read_exact(&mut n)?;
        ensure!(n[0] != 0, "server refused the connection");
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types)?;
        ensure!(types.contains(&1), "server does not offer None: {types:?}");
        s.write_all(&[1])?;
        if minor == 8 {
            ensure!(read_u32(s)? == 0, "security result: failed");
        }
    }
    s.write_all(&[1])?; // shared
    let mut init = [0u8; 24];
    s.read_exact(&mut init)?;
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    ensure!(name_len <= 4096, "desktop name too long");
    let mut name = vec![0u8; name_len];
    s.read_exact(&mut name)?;
    Ok((w, h))
}

/// Appends `n` bytes from `r` to `buf` (amortised growth, no re-copying of
/// what is already there beyond Vec's doubling).
fn take(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Result<usize> {
    ensure!(
        n <= MAX_RECT_BYTES && buf.len() + n <= MAX_UPDATE_BYTES,
        "update larger than allowed"
    );
    let at = buf.len();
    buf.resize(at + n, 0);
    r.read_exact(&mut buf[at..])?;
    Ok(at)
}

fn compact_len(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize> {
    let mut len = 0usize;
    for i in 0..3 {
        let at = take(r, buf, 1)?;
        let b = buf[at] as usize;
        if i == 2 {
            len |= b << 14;
            break;
        }
        len |= (b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok(len)
}

/// Reads the rest of one FramebufferUpdate (after its type byte) into
/// `buf`, which then holds the whole message.
/// Returns the number of rectangles that carried pixels.
fn read_update(r: &mut impl Read, buf: &mut Vec<u8>, fb_w: u16, fb_h: u16) -> Result<usize> {
    buf.clear();
    buf.push(0);
    let at = take(r, buf, 3)?;
    let n = u16::from_be_bytes([buf[at + 1], buf[at + 2]]) as usize;
    // 32 bits per pixel, depth 24: Tight sends 3-byte pixels.
    let (bpp, tpix) = (4usize, 3usize);
    let mut pixel_rects = 0;
    for _ in 0..n.min(MAX_RECTS) {
        let at = take(r, buf, 12)?;
        let h = &buf[at..at + 12];
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
        let (x, y, w, hh) = (be16(0), be16(2), be16(4), be16(6));
        let e = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match e {
            enc::LAST_RECT => return Ok(pixel_rects),
            enc::CURSOR => {
                ensure!(w <= 256 && hh <= 256, "cursor too large");
                take(r, buf, w * hh * bpp + w.div_ceil(8) * hh)?;
                continue;
            }
            enc::DESKTOP_SIZE => bail!("the server resized the framebuffer"),
            _ => {}
        }
        ensure!(
            x + w <= fb_w as usize && y + hh <= fb_h as usize,
            "rectangle {x},{y} {w}x{hh} outside the framebuffer"
        );
        pixel_rects += 1;
        match e {
            enc::RAW => {
                take(r, buf, w * hh * bpp)?;
            }
            enc::COPY_RECT => {
                let at = take(r, buf, 4)?;
                let (sx, sy) = (
                    u16::from_be_bytes([buf[at], buf[at + 1]]) as usize,
                    u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize,
                );
                ensure!(
                    sx + w <= fb_w as usize && sy + hh <= fb_h as usize,
                    "CopyRect source outside the framebuffer"
                );
            }
            enc::ZRLE => {
                let at = take(r, buf, 4)?;
                let len = u32::from_be_bytes(buf[at..at + 4].try_into()?) as usize;
                take(r, buf, len)?;
            }
            enc::TIGHT => {
                let at = take(r, buf, 1)?;
                let ctl = buf[at];
                match ctl >> 4 {
                    8 => {
                        take(r, buf, tpix)?;
                    }
                    9 => {
                        let len = compact_len(r, buf)?;
                        take(r, buf, len)?;
                    }
                    c if c < 8 => {
                        let mut size = w * hh * tpix;
                        if ctl & 0x40 != 0 {
                            let at = take(r, buf, 1)?;
                            match buf[at] {
                                0 | 2 => {}
                                1 => {
                                    let at = take(r, buf, 1)?;
                                    let colours = buf[at] as usize + 1;
                                    take(r, buf, colours * tpix)?;
                                    size = if colours == 2 {
                                        w.div_ceil(8) * hh
                                    } else {
                                        w * hh
                                    };
                                }
                                f => bail!("unknown Tight filter {f}"),
                            }
                        }
                        if size < 12 {
                            take(r, buf, size)?;
                        } else {
                            let len = compact_len(r, buf)?;
                            take(r, buf, len)?;
                        }
                    }
                    // 0xA (with a filter bit, 0xE): TurboVNC's NoZlib,
                    // raw data; x11vnc sends it at compression level 0.
                    // Not standard Tight: TigerVNC's viewer rejects it too.
                    c if c & 0xA == 0xA => {
                        bail!("Tight compression control {c:#x} (TurboVNC's NoZlib, not standard Tight)")
                    }
                    c => bail!("bad Tight compression control {c}"),
                }
            }
            other => bail!("unexpected encoding {other}"),
        }
    }
    Ok(pixel_rects)
}

fn pull_loop(
    s: TcpStream,
    w: u16,
    h: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    decoded: Option<mpsc::Sender<Arrival>>,
    recycle: Option<mpsc::Receiver<Vec<u8>>>,
) -> Result<()> {
    let st = stop.clone();
    match pull(s, w, h, counters, stop, decoded, recycle) {
        // Stopped in the middle of an update: the socket was shut down.
        Err(_) if st.load(Ordering::SeqCst) => Ok(()),
        r => r,
    }
}

fn pull(
    s: TcpStream,
    w: u16,
    h: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    decoded: Option<mpsc::Sender<Arrival>>,
    recycle: Option<mpsc::Receiver<Vec<u8>>>,
) -> Result<()> {
    let mut wr = s.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 18, s);
    let mut buf = Vec::new();
    let mut req = Vec::new();
    request(&mut req, true, w, h);
    loop {
        let mut t = [0u8; 1];
        if let Err(e) = r.read_exact(&mut t) {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            return Err(e).context("read from the server");
        }
        match t[0] {
            0 => {
                let pixel_rects = read_update(&mut r, &mut buf, w, h)?;
                let at = Instant::now();
                if !stop.load(Ordering::SeqCst) {
                    wr.write_all(&req)?;
                }
                if pixel_rects > 0 && counters.first_pixels_bytes.load(Ordering::Relaxed) == 0 {
                    counters
                        .first_pixels_bytes
                        .store(buf.len() as u64, Ordering::SeqCst);
                }
                counters.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
                counters.updates.fetch_add(1, Ordering::SeqCst);
                if let Some(tx) = &decoded {
                    let next = recycle
                        .as_ref()
                        .and_then(|rx| rx.try_recv().ok())
                        .unwrap_or_default();
                    let msg = std::mem::replace(&mut buf, next);
                    if tx.send(Arrival { at, msg }).is_err() {
                        bail!("decoder stopped");
                    }
                }
                counters
                    .cpu_ticks
                    .store(thread_cpu_ticks(), Ordering::Relaxed);
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
            2 => {} // Bell
            3 => {
                let mut hd = [0u8; 7];
                r.read_exact(&mut hd)?;
                let len = u32::from_be_bytes([hd[3], hd[4], hd[5], hd[6]]) as usize;
                ensure!(len <= 1 << 20, "cut text too long");
                std::io::copy(&mut (&mut r).take(len as u64), &mut std::io::sink())?;
            }
            other => bail!("unexpected server message {other}"),
        }
    }
}

/// Where the generator's marker is read (the middle of its block).
pub const MARKER_AT: (u16, u16) = (16, 16);

/// The decoding side of the first viewer: decodes every update in order,
/// reads the marker and records (arrival, marker value) when it changes.
pub struct DecodeSide {
    pub fb: Arc<Mutex<ClientFramebuffer>>,
    pub seen: Arc<Mutex<Vec<(Instant, u16)>>>,
    pub decoded: Arc<AtomicU64>,
    pub cpu_ticks: Arc<AtomicU64>,
    pub error: Arc<Mutex<Option<String>>>,
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DecodeSide {
    pub fn start(
        w: u16,
        h: u16,
        rx: mpsc::Receiver<Arrival>,
        back: mpsc::Sender<Vec<u8>>,
    ) -> DecodeSide {
        let fb = Arc::new(Mutex::new(ClientFramebuffer::new(
            w,
            h,
            rfb_decode::PixelFormat::from_wire(&PixelFormat::NATIVE.to_bytes())
                .expect("the native format is valid"),
        )));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let decoded = Arc::new(AtomicU64::new(0));
        let cpu_ticks = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        let (f, sn, d, c, e) = (
            fb.clone(),
            seen.clone(),
            decoded.clone(),
            cpu_ticks.clone(),
            error.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("bench-decode".into())
            .spawn(move || {
                // Decoding is for latency and exactness, not for pace: it
                // yields the CPU to the servers (the nice value of a Linux
                // thread is its own).
                let _ = rustix::process::setpriority_process(None, 19);
                let mut dec = Decoder::new();
                let mut last = None;
                while let Ok(a) = rx.recv() {
                    if q.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut fb = f.lock().unwrap_or_else(|p| p.into_inner());
                    match dec.decode_message(&a.msg, &mut fb) {
                        Ok(n) if n == a.msg.len() => {}
                        Ok(n) => {
                            *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                                "decoder used {n} of {} bytes of an update",
                                a.msg.len()
                            ));
                            return;
                        }
                        Err(err) => {
                            *e.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(format!("decode: {err}"));
                            return;
                        }
                    }
                    let m = super::workload::marker_value(fb.get(MARKER_AT.0, MARKER_AT.1));
                    drop(fb);
                    if last != Some(m) {
                        last = Some(m);
                        sn.lock().unwrap_or_else(|p| p.into_inner()).push((a.at, m));
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                    c.store(thread_cpu_ticks(), Ordering::Relaxed);
                    let _ = back.send(a.msg);
                }
            })
            .expect("spawn decoder thread");
        DecodeSide {
            fb,
            seen,
            decoded,
            cpu_ticks,
            error,
            quit,
            thread: Some(thread),
        }
    }

    /// Stops decoding (what is still queued is dropped).
    pub fn join(mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
