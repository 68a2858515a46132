//! A small RFB client for measuring how fresh updates are: security None,
//! 8-bit BGR233 pixels, Raw only, and either the classic pull model (an
//! incremental request after every update) or Fence + ContinuousUpdates
//! (answers every fence, enables continuous updates once offered). It
//! records when a watched rectangle first shows (or stops showing) pure
//! red, so a test can time a change from the screen to the viewer.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// FramebufferUpdateRequest after every update.
    Pull,
    /// Lists Fence and ContinuousUpdates and enables continuous updates.
    Continuous,
}

/// What the watched rectangle must look like.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub red: bool,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub updates: u64,
    pub bytes: u64,
    pub server_fences: u64,
    pub end_of_cu: u64,
    pub continuous_enabled: bool,
}

struct State {
    w: u16,
    h: u16,
    fb: Vec<u8>,
    watch: Option<Watch>,
    /// Per row of the watched rectangle: it shows the colour watched for.
    /// Rows are looked at again only when a rectangle covers them, so the
    /// client's cost per update stays at most the watched area (checking
    /// it whole after every rectangle made this debug-built client the
    /// bottleneck with servers that send many rectangles).
    rows_ok: Vec<bool>,
    seen: Option<Instant>,
    stats: Stats,
    error: Option<String>,
}

pub struct FlowClient {
    state: Arc<(Mutex<State>, Condvar)>,
    stream: TcpStream,
}

/// BGR233: red in bits 0-2, green 3-5, blue 6-7.
const PIXEL_FORMAT: [u8; 16] = [8, 8, 0, 1, 0, 7, 0, 7, 0, 3, 0, 3, 6, 0, 0, 0];
/// Pure red in BGR233.
const RED: u8 = 7;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

impl FlowClient {
    pub fn connect(addr: SocketAddr, mode: Mode) -> FlowClient {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "security None offered: {types:?}");
        s.write_all(&[1]).unwrap();
        let mut r = [0u8; 4];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r, [0; 4], "security result");
        s.write_all(&[1]).unwrap(); // shared
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let (w, h) = (u16_at(&init, 0), u16_at(&init, 2));
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
        let mut name = vec![0u8; name_len];
        s.read_exact(&mut name).unwrap();

        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&PIXEL_FORMAT);
        let mut encodings = vec![0i32];
        if mode == Mode::Continuous {
            encodings.extend([-312, -313]);
        }
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            out.extend_from_slice(&e.to_be_bytes());
        }
        out.extend_from_slice(&request(false, w, h));
        s.write_all(&out).unwrap();

        let state = Arc::new((
            Mutex::new(State {
                w,
                h,
                fb: vec![0; w as usize * h as usize],
                watch: None,
                rows_ok: Vec::new(),
                seen: None,
                stats: Stats::default(),
                error: None,
            }),
            Condvar::new(),
        ));
        let st = state.clone();
        let rd = s.try_clone().unwrap();
        let wr = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let r = run(BufReader::with_capacity(64 * 1024, rd), wr, mode, &st);
            let (m, cv) = &*st;
            m.lock().unwrap().error = Some(r.err().unwrap_or_else(|| "closed".into()));
            cv.notify_all();
        });
        FlowClient { state, stream: s }
    }

    pub fn size(&self) -> (u16, u16) {
        let s = self.state.0.lock().unwrap();
        (s.w, s.h)
    }

    /// Watch a rectangle; returns whether it already matches.
    pub fn watch(&self, w: Watch) -> bool {
        let mut s = self.state.0.lock().unwrap();
        s.watch = Some(w);
        s.seen = None;
        s.rows_ok = vec![false; w.h as usize];
        let (y, h) = (w.y, w.h);
        check(&mut s, y, h, Instant::now());
        s.seen.is_some()
    }

    /// When the watched rectangle matched, waiting up to `timeout`.
    pub fn wait_seen(&self, timeout: Duration) -> Result<Instant, String> {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut s = m.lock().unwrap();
        loop {
            if let Some(t) = s.seen {
                return Ok(t);
            }
            if let Some(e) = &s.error {
                return Err(format!("connection ended: {e}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("not seen within {timeout:?}: {:?}", s.stats));
            }
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Send raw bytes to the server.
    pub fn send(&self, b: &[u8]) {
        (&self.stream).write_all(b).expect("send");
    }

    /// Wait up to `timeout` until the statistics satisfy `f`.
    pub fn wait_stats(
        &self,
        timeout: Duration,
        f: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, String> {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut s = m.lock().unwrap();
        loop {
            if f(&s.stats) {
                return Ok(s.stats.clone());
            }
            if let Some(e) = &s.error {
                return Err(format!("connection ended: {e}; {:?}", s.stats));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("not within {timeout:?}: {:?}", s.stats));
            }
            s = cv
                .wait_timeout(s, (deadline - now).min(Duration::from_millis(50)))
                .unwrap()
                .0;
        }
    }

    pub fn stats(&self) -> Stats {
        self.state.0.lock().unwrap().stats.clone()
    }
}

impl Drop for FlowClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn request(incremental: bool, w: u16, h: u16) -> Vec<u8> {
    let mut b = vec![3, incremental as u8, 0, 0, 0, 0];
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b
}

/// Look again at the watched rows among `y..y + h` (the rows a rectangle
/// just wrote); `seen` once every watched row shows the colour.
fn check(s: &mut State, y: u16, h: u16, now: Instant) {
    let Some(w) = s.watch else { return };
    if s.seen.is_some() {
        return;
    }
    let (from, to) = (y.max(w.y), (y + h).min(w.y + w.h));
    for row in from..to {
        let at = row as usize * s.w as usize;
        let px = &s.fb[at + w.x as usize..at + (w.x + w.w) as usize];
        s.rows_ok[(row - w.y) as usize] = px.iter().all(|&p| (p == RED) == w.red);
    }
    if s.rows_ok.iter().all(|&ok| ok) {
        s.seen = Some(now);
    }
}

fn run(
    mut rd: impl Read,
    mut wr: TcpStream,
    mode: Mode,
    st: &Arc<(Mutex<State>, Condvar)>,
) -> Result<(), String> {
    let (m, cv) = &**st;
    let mut read = |n: usize| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n];
        rd.read_exact(&mut b).map_err(|e| e.to_string())?;
        m.lock().unwrap().stats.bytes += n as u64;
        Ok(b)
    };
    loop {
        let kind = read(1)?[0];
        match kind {
            0 => {
                let hdr = read(3)?;
                let n = u16_at(&hdr, 1);
                for _ in 0..n {
                    let r = read(12)?;
                    let (x, y, w, h) = (u16_at(&r, 0), u16_at(&r, 2), u16_at(&r, 4), u16_at(&r, 6));
                    let enc = i32::from_be_bytes(r[8..12].try_into().unwrap());
                    if enc != 0 {
                        return Err(format!("unexpected encoding {enc}"));
                    }
                    let px = read(w as usize * h as usize)?;
                    let mut s = m.lock().unwrap();
                    if x as usize + w as usize > s.w as usize
                        || y as usize + h as usize > s.h as usize
                    {
                        return Err(format!("rectangle {x},{y} {w}x{h} outside the screen"));
                    }
                    let stride = s.w as usize;
                    for row in 0..h as usize {
                        let at = (y as usize + row) * stride + x as usize;
                        s.fb[at..at + w as usize]
                            .copy_from_slice(&px[row * w as usize..(row + 1) * w as usize]);
                    }
                    check(&mut s, y, h, Instant::now());
                    if s.seen.is_some() {
                        cv.notify_all();
                    }
                }
                let (w, h) = {
                    let mut s = m.lock().unwrap();
                    s.stats.updates += 1;
                    (s.w, s.h)
                };
                if mode == Mode::Pull {
                    wr.write_all(&request(true, w, h))
                        .map_err(|e| e.to_string())?;
                }
            }
            1 => {
                let b = read(5)?;
                read(6 * u16_at(&b, 3) as usize)?;
            }
            2 => {}
            3 => {
                let b = read(7)?;
                let len = i32::from_be_bytes(b[3..7].try_into().unwrap()).unsigned_abs();
                read(len as usize)?;
            }
            150 => {
                let mut s = m.lock().unwrap();
                s.stats.end_of_cu += 1;
                if mode == Mode::Continuous && !s.stats.continuous_enabled {
                    s.stats.continuous_enabled = true;
                    let mut b = vec![150, 1, 0, 0, 0, 0];
                    b.extend_from_slice(&s.w.to_be_bytes());
                    b.extend_from_slice(&s.h.to_be_bytes());
                    wr.write_all(&b).map_err(|e| e.to_string())?;
                }
            }
            248 => {
                let b = read(8)?;
                let flags = u32::from_be_bytes(b[3..7].try_into().unwrap());
                let payload = read(b[7] as usize)?;
                m.lock().unwrap().stats.server_fences += 1;
                if flags & 0x8000_0000 != 0 {
                    // Everything before it was handled: answer at once,
                    // Request cleared, the bits we know kept.
                    let mut r = vec![248, 0, 0, 0];
                    r.extend_from_slice(&(flags & 0b111).to_be_bytes());
                    r.push(payload.len() as u8);
                    r.extend_from_slice(&payload);
                    wr.write_all(&r).map_err(|e| e.to_string())?;
                }
            }
            other => return Err(format!("unknown server message {other}")),
        }
    }
}
