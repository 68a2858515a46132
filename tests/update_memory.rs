//! Issue 12: a viewer costs the server little memory, even at 1080p in Raw
//! with a slow link, because an update is sent as it is encoded (a band at
//! a time, at most two pieces waiting for the socket) instead of being
//! built whole (8 MB per 1080p Raw frame, copied twice more) and queued.
//!
//! In its own test binary: it reads the peak resident memory (VmHWM) of a
//! `ticketvnc serve --source test-pattern` it starts, served to plain RFB
//! viewers written here over loopback (full 1080p Raw updates, read slowly
//! in 64 KiB pieces). No timing is asserted; memory does not depend on the
//! machine's load (the viewers' pace only decides how much waits, and that
//! is what is bounded).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const W: u16 = 1920;
const H: u16 = 1080;
/// Full updates each viewer asks for and reads.
const ROUNDS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(120);

struct Server {
    child: Child,
    addr: SocketAddr,
    _db: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let db = tempfile::tempdir().unwrap();
        // Another build can be measured the same way (to see the test fail
        // on one that builds updates whole).
        let bin = std::env::var("TICKETVNC_MEMORY_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ticketvnc").to_string());
        let mut child = Command::new(bin)
            .arg("--db")
            .arg(db.path().join("journal.db"))
            .env("XDG_CONFIG_HOME", db.path().join("config"))
            .args([
                "serve",
                "--source",
                "test-pattern",
                "--size",
                "1920x1080",
                "--fps",
                "0",
            ])
            .args(["--no-auth", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ticketvnc");
        let addr = common::listening_addr(&mut child, TIMEOUT);
        Server {
            child,
            addr,
            _db: db,
        }
    }

    /// The server process's peak resident memory so far, in KiB.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RAW: i32 = 0;
const TIGHT: i32 = 7;
const ZRLE: i32 = 16;

/// A plain RFB 3.8 viewer: security None, shared, the server's 32-bit
/// format, one encoding (Raw, Tight or ZRLE).
struct Viewer {
    s: TcpStream,
    encoding: i32,
}

impl Viewer {
    fn connect(addr: SocketAddr, encoding: i32) -> Viewer {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut version = [0u8; 12];
        s.read_exact(&mut version).unwrap();
        assert_eq!(&version[..4], b"RFB ");
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "security None not offered: {types:?}");
        s.write_all(&[1]).unwrap();
        let mut result = [0u8; 4];
        s.read_exact(&mut result).unwrap();
        assert_eq!(result, [0; 4], "security result");
        s.write_all(&[1]).unwrap(); // shared
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        assert_eq!(init[0..4], [W.to_be_bytes(), H.to_be_bytes()].concat()[..]);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = vec![0u8; name_len as usize];
        s.read_exact(&mut name).unwrap();
        // SetEncodings: this one only.
        let mut set = vec![2, 0, 0, 1];
        set.extend_from_slice(&encoding.to_be_bytes());
        s.write_all(&set).unwrap();
        Viewer { s, encoding }
    }

    fn request_full(&mut self) {
        let [w0, w1] = W.to_be_bytes();
        let [h0, h1] = H.to_be_bytes();
        self.s
            .write_all(&[3, 0, 0, 0, 0, 0, w0, w1, h0, h1])
            .unwrap();
    }

    /// Read `n` bytes in pieces of at most 64 KiB, pausing between them
    /// like a viewer on a slower link.
    fn read_slowly(&mut self, mut n: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(buf.len());
            self.s.read_exact(&mut buf[..k]).unwrap();
            n -= k;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Read one FramebufferUpdate (rectangles in the viewer's encoding;
    /// other messages are not expected) and return how many pixels it
    /// carried.
    fn read_update(&mut self) -> usize {
        self.read_update_with(|_| {})
    }

    /// [`Viewer::read_update`], calling `started` once the update's header
    /// has arrived (the server is then streaming it).
    fn read_update_with(&mut self, started: impl FnOnce(&mut TcpStream)) -> usize {
        let mut head = [0u8; 4];
        self.s.read_exact(&mut head).unwrap();
        started(&mut self.s);
        assert_eq!(head[0], 0, "message type {}", head[0]);
        let count = u16::from_be_bytes([head[2], head[3]]);
        let mut pixels = 0;
        for _ in 0..count {
            let mut r = [0u8; 12];
            self.s.read_exact(&mut r).unwrap();
            let w = u16::from_be_bytes([r[4], r[5]]) as usize;
            let h = u16::from_be_bytes([r[6], r[7]]) as usize;
            let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            assert_eq!(e, self.encoding, "encoding {e}");
            let n = if e == ZRLE {
                let mut len = [0u8; 4];
                self.s.read_exact(&mut len).unwrap();
                u32::from_be_bytes(len) as usize
            } else if e == TIGHT {
                self.tight_len(w, h)
            } else {
                w * h * 4
            };
            self.read_slowly(n);
            pixels += w * h;
        }
        pixels
    }

    fn byte(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.s.read_exact(&mut b).unwrap();
        b[0]
    }

    /// A Tight compact length (1-3 bytes, 7 bits each).
    fn compact_len(&mut self) -> usize {
        let mut n = 0;
        for i in 0..3 {
            let b = self.byte();
            n |= usize::from(b & if i == 2 { 0xff } else { 0x7f }) << (7 * i);
            if i < 2 && b & 0x80 == 0 {
                break;
            }
        }
        n
    }

    /// Read a Tight rectangle up to its pixel data and return the data's
    /// length (the server's format is 32-bit depth 24: TPIXELs are 3
    /// bytes; no JPEG, as the viewer sends no quality level).
    fn tight_len(&mut self, w: usize, h: usize) -> usize {
        let control = self.byte();
        match control >> 4 {
            8 => 3,
            9 => self.compact_len(),
            _ => {
                let mut row = w * 3;
                if control & 0x40 != 0 {
                    match self.byte() {
                        1 => {
                            let colours = usize::from(self.byte()) + 1;
                            let mut pal = vec![0u8; colours * 3];
                            self.s.read_exact(&mut pal).unwrap();
                            row = if colours == 2 { w.div_ceil(8) } else { w };
                        }
                        0 => {}
                        f => panic!("Tight filter {f}"),
                    }
                }
                let raw = row * h;
                if raw < 12 {
                    raw
                } else {
                    self.compact_len()
                }
            }
        }
    }

    fn full_updates(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.request_full();
            assert_eq!(self.read_update(), W as usize * H as usize);
        }
    }
}

/// x0vncserver (TigerVNC) peaks at 29 MiB with one 1080p Raw viewer and
/// 57 MiB with ten (docs/benchmarks.md); ticketvnc before streaming grew by
/// about 8 MiB per further viewer here (debug build: 8307 KiB), each
/// holding a whole update; after, about 0.4 MiB.
#[test]
fn each_further_raw_viewer_costs_little_memory() {
    further_viewers_cost_little_memory(RAW);
}

/// The same with ZRLE, whose viewers each keep a zlib stream for the whole
/// connection (issue 12 measured +2.1 MiB per further ZRLE viewer).
#[test]
fn each_further_zrle_viewer_costs_little_memory() {
    further_viewers_cost_little_memory(ZRLE);
}

/// The same with Tight, whose viewers each have four zlib streams: its
/// encoders made 4 deflaters at once (some 380 KB each, the fourth never
/// used) and kept their calls' buffers (a band's sub-rectangles) for the
/// whole connection: 3.3 MiB per further viewer here (release build);
/// now deflaters are made at first use and buffers are shared by all
/// viewers' calls (at most two sets per encoder thread lent at once).
#[test]
fn each_further_tight_viewer_costs_little_memory() {
    further_viewers_cost_little_memory(TIGHT);
}

fn further_viewers_cost_little_memory(encoding: i32) {
    let srv = Server::start();
    let mut first = Viewer::connect(srv.addr, encoding);
    first.full_updates(ROUNDS);
    let one = srv.peak_kib();
    let more = 9;
    let start = Arc::new(Barrier::new(more));
    let viewers: Vec<_> = (0..more)
        .map(|_| {
            let (addr, start) = (srv.addr, start.clone());
            std::thread::spawn(move || {
                let mut v = Viewer::connect(addr, encoding);
                // All ask at once, so their updates are in flight together.
                start.wait();
                v.full_updates(ROUNDS);
                v
            })
        })
        .collect();
    let _held: Vec<Viewer> = viewers.into_iter().map(|t| t.join().unwrap()).collect();
    let ten = srv.peak_kib();
    let per_viewer = ten.saturating_sub(one) / more as u64;
    println!(
        "encoding {encoding}: peak RSS: one viewer {} KiB, ten viewers {} KiB, {} KiB per \
         further viewer (a 1080p Raw update is {} KiB)",
        one,
        ten,
        per_viewer,
        W as u64 * H as u64 * 4 / 1024
    );
    // The goal, +1.5 MiB per viewer, far below one whole Raw update
    // (8100 KiB): what a viewer holds is one queued piece, the one being
    // encoded and two spare buffers, each at most 64 KiB plus one 256 KiB
    // band. (The screen is held still: a changing screen adds the frames
    // slow viewers still read from, shared, not copied.)
    // Tight's viewers each keep three zlib streams of their own (full
    // colour, two colours, a palette; zlib-rs's deflate state is about
    // 380 KB) besides what a Raw viewer costs: about 1.7-1.8 MiB, over the
    // issue's 1.5 MiB (docs/benchmarks.md). The bound still catches the
    // 3.3 MiB of before (four deflaters made at once and a band's buffers
    // kept by each viewer).
    let bound = if encoding == TIGHT { 2048 } else { 1536 };
    assert!(
        per_viewer < bound,
        "encoding {encoding}: {per_viewer} KiB per further viewer (one: {one} KiB, ten: {ten} KiB)"
    );
}

/// A fence request that arrives while a big update is being sent (the
/// viewer reads slowly, so the server reads its messages between the
/// update's pieces) is answered right after the update, never inside it and
/// never dropped. With FramebufferUpdates through the protocol core, the
/// core at first refused every message while an update was open: the answer
/// was lost, and this test failed waiting for it (a viewer waiting for its
/// fence would have stalled).
#[test]
fn a_fence_request_during_a_big_update_is_answered_after_it() {
    let srv = Server::start();
    let mut v = Viewer::connect(srv.addr, RAW);
    v.request_full();
    let pixels = v.read_update_with(|s| {
        // Fence request (flags: request | block before), one byte of payload.
        s.write_all(&[248, 0, 0, 0, 0x80, 0, 0, 1, 1, 42]).unwrap();
    });
    assert_eq!(pixels, W as usize * H as usize);
    let mut fence = [0u8; 10];
    v.s.read_exact(&mut fence).unwrap();
    assert_eq!(
        fence[0], 248,
        "the next message is the fence answer: {fence:?}"
    );
    assert_eq!(
        &fence[4..],
        &[0, 0, 0, 1, 1, 42],
        "flags without request, the payload"
    );
}
