//! The customer's pointer, as technicians see it (issue 11, item 1).
//!
//! The `ticketvnc` binary serves a private Xvfb with a tiled picture on
//! the root window and a known 16x16 bitmap cursor (two colours, hot spot
//! 3,5) set by a live X client. The customer's pointer is moved with
//! `xdotool` on the served display; then:
//!
//! - a raw-socket viewer with VMware Cursor Position / PointerPos learns
//!   each new position, and never its own motion back; a viewer that
//!   takes cursor shapes gets the pointer drawn into its picture (and a
//!   hidden local cursor) while the pointer is not where it put it;
//! - vncdotool (no cursor shapes) and TigerVNC vncviewer (which draws the
//!   cursor locally and ignores positions unless it grabs the mouse) show
//!   the pointer at the right place: their pictures equal an independent
//!   `import -window root` grab with the cursor bitmap drawn at the
//!   pointer, and the pixels under the old position are restored exactly.

mod common;

use common::{compare_images, require_commands, ChildGuard, XvfbGuard};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// X displays this suite may use (others use 60..80 and 100..120).
const X_RANGE: std::ops::Range<u32> = 140..160;
const TIMEOUT: Duration = Duration::from_secs(40);

const POINTER_POS: i32 = -232;
const CURSOR: i32 = -239;
const X_CURSOR: i32 = -240;
const VMWARE_CURSOR_POS: i32 = 0x574d_5666;

// ------------------------------------------------------------ X helpers

fn x_run(display: &str, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

fn move_pointer(display: &str, x: u16, y: u16) {
    let (xs, ys) = (x.to_string(), y.to_string());
    assert!(x_run(display, &["xdotool", "mousemove", "--sync", &xs, &ys]).is_some());
}

/// An independent picture of the X screen (`import`, which never contains
/// the pointer), as `0x00RRGGBB`.
fn grab_root(display: &str, w: usize, h: usize) -> Option<Vec<u32>> {
    let rgb = x_run(
        display,
        &["import", "-window", "root", "-depth", "8", "rgb:-"],
    )?;
    (rgb.len() == w * h * 3).then(|| common::rgb_bytes_to_pixels(&rgb))
}

/// A deterministic picture for the root window (no two neighbours alike,
/// so a wrongly restored pixel shows).
fn tile_pixel(x: usize, y: usize) -> u32 {
    let (x, y) = (x % 64, y % 48);
    (((x * 4) as u32) << 16) | (((y * 5) as u32) << 8) | ((x ^ y) as u32 & 0xff)
}

fn put_tile(display: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tile.ppm");
    let px: Vec<u32> = (0..48)
        .flat_map(|y| (0..64).map(move |x| tile_pixel(x, y)))
        .collect();
    common::write_ppm(&path, 64, 48, &px);
    // `display` may exit non-zero after setting the background; the grab judges.
    let _ = x_run(
        display,
        &["display", "-window", "root", path.to_str().unwrap()],
    );
}

/// The cursor bitmap: (source bit, mask bit) of pixel (x, y) of 16x16.
fn cursor_bits(x: usize, y: usize) -> (bool, bool) {
    let mask = (2..14).contains(&x) && (1..15).contains(&y) && !(x + y).is_multiple_of(5);
    (mask && (x * 3 + y) % 4 < 2, mask)
}
const FG: u32 = 0xff2010;
const BG: u32 = 0x10e0f0;
const HOT: (usize, usize) = (3, 5);

/// `screen` with the cursor drawn with its hot spot at `p`.
fn with_cursor(screen: &[u32], w: usize, h: usize, p: (u16, u16)) -> Vec<u32> {
    let mut out = screen.to_vec();
    for cy in 0..16 {
        for cx in 0..16 {
            let (src, mask) = cursor_bits(cx, cy);
            let x = p.0 as i64 + cx as i64 - HOT.0 as i64;
            let y = p.1 as i64 + cy as i64 - HOT.1 as i64;
            if mask && x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                out[y as usize * w + x as usize] = if src { FG } else { BG };
            }
        }
    }
    out
}

/// An X client that puts the bitmap cursor on the root window and stays
/// connected (with the SECURITY extension a cursor image is readable by
/// others only while its creator lives).
struct RootCursor {
    _conn: x11rb::rust_connection::RustConnection,
}

impl RootCursor {
    fn set(display: &str) -> RootCursor {
        use x11rb::connection::Connection;
        use x11rb::protocol::xproto::{
            ChangeGCAux, ChangeWindowAttributesAux, ConnectionExt as _, CoordMode, CreateGCAux,
            Point, Rectangle,
        };
        let (conn, screen) = x11rb::connect(Some(display)).expect("connect to X");
        let root = conn.setup().roots[screen].root;
        let bitmap = |bit: &dyn Fn(usize, usize) -> bool| {
            let pix = conn.generate_id().unwrap();
            conn.create_pixmap(1, pix, root, 16, 16).unwrap();
            let gc = conn.generate_id().unwrap();
            conn.create_gc(gc, pix, &CreateGCAux::new().foreground(0))
                .unwrap();
            let all = Rectangle {
                x: 0,
                y: 0,
                width: 16,
                height: 16,
            };
            conn.poly_fill_rectangle(pix, gc, &[all]).unwrap();
            conn.change_gc(gc, &ChangeGCAux::new().foreground(1))
                .unwrap();
            let points: Vec<Point> = (0..16)
                .flat_map(|y| (0..16).map(move |x| (x, y)))
                .filter(|&(x, y)| bit(x, y))
                .map(|(x, y)| Point {
                    x: x as i16,
                    y: y as i16,
                })
                .collect();
            conn.poly_point(CoordMode::ORIGIN, pix, gc, &points)
                .unwrap();
            conn.free_gc(gc).unwrap();
            pix
        };
        let source = bitmap(&|x, y| cursor_bits(x, y).0);
        let mask = bitmap(&|x, y| cursor_bits(x, y).1);
        let cursor = conn.generate_id().unwrap();
        let c16 = |c: u32| [c >> 16, c >> 8, c].map(|v| (v & 0xff) as u16 * 257);
        let ([fr, fg, fb], [br, bg, bb]) = (c16(FG), c16(BG));
        conn.create_cursor(
            cursor,
            source,
            mask,
            fr,
            fg,
            fb,
            br,
            bg,
            bb,
            HOT.0 as u16,
            HOT.1 as u16,
        )
        .unwrap();
        conn.change_window_attributes(root, &ChangeWindowAttributesAux::new().cursor(cursor))
            .unwrap();
        conn.get_input_focus()
            .unwrap()
            .reply()
            .expect("X round trip");
        RootCursor { _conn: conn }
    }
}

// ------------------------------------------------------- ticketvnc itself

struct Tvnc {
    child: Child,
    addr: SocketAddr,
    _db: tempfile::TempDir,
}

impl Tvnc {
    fn start(name: &str, display: &str) -> Tvnc {
        let db = tempfile::tempdir().unwrap();
        let log = common::artefact_dir().join(format!("cursor-{name}-server.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
            .arg("--db")
            .arg(db.path().join("journal.db"))
            .env("XDG_CONFIG_HOME", db.path().join("config"))
            .args(["serve", "--source", "x11", "--display", display])
            .args(["--no-auth", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run ticketvnc");
        let addr = common::listening_addr(&mut child, TIMEOUT);
        Tvnc {
            child,
            addr,
            _db: db,
        }
    }
}

impl Drop for Tvnc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --------------------------------------------- a raw-socket RFB viewer

/// What a minimal viewer received: its framebuffer (Raw, 32 bpp native),
/// every position told and every cursor shape (w, h).
struct RawViewer {
    s: TcpStream,
    w: usize,
    h: usize,
    fb: Vec<u32>,
    positions: Vec<(i32, u16, u16)>,
    shapes: Vec<(u16, u16)>,
    /// X Cursor shapes: (w, h, hot x, hot y, colours, bitmap, mask).
    x_cursors: Vec<XCursorRect>,
}

type XCursorRect = (u16, u16, u16, u16, Vec<u8>, Vec<u8>, Vec<u8>);

impl RawViewer {
    fn connect(addr: SocketAddr, encodings: &[i32]) -> RawViewer {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "None security offered: {types:?}");
        s.write_all(&[1]).unwrap();
        let mut res = [0u8; 4];
        s.read_exact(&mut res).unwrap();
        assert_eq!(res, [0; 4], "SecurityResult");
        s.write_all(&[1]).unwrap(); // shared
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let w = u16::from_be_bytes([init[0], init[1]]) as usize;
        let h = u16::from_be_bytes([init[2], init[3]]) as usize;
        let len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; len];
        s.read_exact(&mut name).unwrap();
        // 32 bpp, depth 24, little-endian, red at 16: the native layout.
        let mut m = vec![
            0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ];
        m.extend_from_slice(&[2, 0]);
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&m).unwrap();
        let mut v = RawViewer {
            s,
            w,
            h,
            fb: vec![0; w * h],
            positions: Vec::new(),
            shapes: Vec::new(),
            x_cursors: Vec::new(),
        };
        v.request(false);
        v
    }

    fn request(&mut self, incremental: bool) {
        let mut m = vec![3, incremental as u8, 0, 0, 0, 0];
        m.extend_from_slice(&(self.w as u16).to_be_bytes());
        m.extend_from_slice(&(self.h as u16).to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn pointer(&mut self, x: u16, y: u16) {
        let mut m = vec![5, 0];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// Read one server message (updates are applied; others skipped) and
    /// ask for the next update after each FramebufferUpdate.
    fn read_message(&mut self) {
        let t = self.read_n(1)[0];
        match t {
            0 => {
                let hdr = self.read_n(3);
                let n = u16::from_be_bytes([hdr[1], hdr[2]]);
                for _ in 0..n {
                    let r = self.read_n(12);
                    let be16 = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
                    let (x, y, w, h) = (be16(0), be16(2), be16(4), be16(6));
                    let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                    let (wu, hu) = (w as usize, h as usize);
                    match e {
                        0 => {
                            let px = self.read_n(wu * hu * 4);
                            for row in 0..hu {
                                for col in 0..wu {
                                    let i = (row * wu + col) * 4;
                                    let p = u32::from_le_bytes([px[i], px[i + 1], px[i + 2], 0]);
                                    self.fb[(y as usize + row) * self.w + x as usize + col] = p;
                                }
                            }
                        }
                        CURSOR => {
                            self.read_n(wu * hu * 4 + wu.div_ceil(8) * hu);
                            self.shapes.push((w, h));
                        }
                        POINTER_POS | VMWARE_CURSOR_POS => self.positions.push((e, x, y)),
                        X_CURSOR => {
                            let (colours, bits) = if wu * hu > 0 {
                                (self.read_n(6), wu.div_ceil(8) * hu)
                            } else {
                                (Vec::new(), 0)
                            };
                            let bitmap = self.read_n(bits);
                            let mask = self.read_n(bits);
                            self.x_cursors.push((w, h, x, y, colours, bitmap, mask));
                        }
                        -308 => {
                            let n = self.read_n(4)[0] as usize;
                            self.read_n(16 * n);
                        }
                        -307 => {
                            let l = self.read_n(4);
                            let l = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                            self.read_n(l);
                        }
                        other => panic!("unexpected encoding {other}"),
                    }
                }
                self.request(true);
            }
            2 => {}
            3 => {
                let hdr = self.read_n(7);
                let l = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]) as usize;
                self.read_n(l);
            }
            other => panic!("unexpected server message {other}"),
        }
    }

    /// Read messages until `f` holds (or fail after TIMEOUT).
    fn until(&mut self, what: &str, mut f: impl FnMut(&RawViewer) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.read_message();
        }
    }
}

fn tools() {
    require_commands(&[
        "Xvfb",
        "xdpyinfo",
        "import",
        "display",
        "xdotool",
        "vncviewer",
    ]);
}

/// A served Xvfb with the tile picture and the bitmap cursor, and
/// ticketvnc serving it.
struct Scene {
    _cursor: RootCursor,
    tvnc: Tvnc,
    xvfb: XvfbGuard,
    w: usize,
    h: usize,
    screen: Vec<u32>,
}

impl Scene {
    fn start(name: &str) -> Scene {
        tools();
        let (w, h) = (320, 240);
        let xvfb = XvfbGuard::start_in(X_RANGE, w as u32, h as u32);
        let d = xvfb.display_name();
        put_tile(&d);
        let cursor = RootCursor::set(&d);
        let screen = grab_root(&d, w, h).expect("grab the served screen");
        assert_ne!(screen[0], screen[1], "the tile is on the screen");
        let tvnc = Tvnc::start(name, &d);
        Scene {
            _cursor: cursor,
            tvnc,
            xvfb,
            w,
            h,
            screen,
        }
    }
    fn display(&self) -> String {
        self.xvfb.display_name()
    }
    fn expected(&self, p: (u16, u16)) -> Vec<u32> {
        with_cursor(&self.screen, self.w, self.h, p)
    }
}

/// The position pseudo-encodings, with the rendered cursor for a viewer
/// that takes shapes: the customer's moves are told (once each), this
/// viewer's own moves never come back to it, another viewer's do.
#[test]
fn positions_reach_viewers_and_own_motion_is_not_echoed() {
    let sc = Scene::start("positions");
    let mut a = RawViewer::connect(sc.tvnc.addr, &[0, CURSOR, VMWARE_CURSOR_POS]);
    let mut b = RawViewer::connect(sc.tvnc.addr, &[0, POINTER_POS]);

    // The customer moves the pointer.
    move_pointer(&sc.display(), 100, 80);
    let want = sc.expected((100, 80));
    a.until("A told (100, 80) and drawing it", |v| {
        v.positions.last() == Some(&(VMWARE_CURSOR_POS, 100, 80)) && v.fb == want
    });
    // While the cursor is drawn, A's own is hidden (1x1, transparent).
    assert_eq!(a.shapes.last(), Some(&(1, 1)), "shapes: {:?}", a.shapes);
    b.until("B told (100, 80) with PointerPos, cursor drawn", |v| {
        v.positions.last() == Some(&(POINTER_POS, 100, 80)) && v.fb == want
    });

    // Viewer A moves it: A is not told (it knows), the drawn cursor goes
    // and its real shape comes back; B is told and draws it there.
    a.pointer(40, 30);
    let want_b = sc.expected((40, 30));
    b.until("B told (40, 30)", |v| {
        v.positions.last() == Some(&(POINTER_POS, 40, 30)) && v.fb == want_b
    });
    a.until("A's picture without a drawn cursor, real shape back", |v| {
        v.fb == sc.screen && v.shapes.last() == Some(&(16, 16))
    });
    assert!(
        !a.positions.iter().any(|&(_, x, y)| (x, y) == (40, 30)),
        "A was sent its own motion back: {:?}",
        a.positions
    );

    // The customer again: A learns and sees it; (40,30) is restored.
    move_pointer(&sc.display(), 200, 150);
    let want = sc.expected((200, 150));
    a.until("A told (200, 150) and drawing it", |v| {
        v.positions.last() == Some(&(VMWARE_CURSOR_POS, 200, 150)) && v.fb == want
    });
    b.until("B drawing (200, 150), (40, 30) restored", |v| v.fb == want);
    let told = |v: &RawViewer| {
        v.positions
            .iter()
            .filter(|p| (p.1, p.2) == (200, 150))
            .count()
    };
    assert_eq!(told(&a), 1, "{:?}", a.positions);

    // An old viewer with X Cursor only: hidden while the pointer is not
    // its own; once it moves the pointer, the shape reduced to two
    // colours (white where light, black where dark) with its mask.
    let mut c = RawViewer::connect(sc.tvnc.addr, &[0, X_CURSOR]);
    c.until("C drawing (200, 150), hidden local cursor", |v| {
        v.fb == want && v.x_cursors.last().is_some_and(|x| (x.0, x.1) == (1, 1))
    });
    c.pointer(20, 20);
    let rows = |bit: &dyn Fn(usize, usize) -> bool| -> Vec<u8> {
        (0..16)
            .flat_map(|y| {
                let row: u16 = (0..16).fold(0, |r, x| r | (u16::from(bit(x, y)) << (15 - x)));
                row.to_be_bytes()
            })
            .collect()
    };
    // BG is light (luma 163), FG dark (97).
    let bitmap = rows(&|x, y| cursor_bits(x, y) == (false, true));
    let mask = rows(&|x, y| cursor_bits(x, y).1);
    let shape = (16, 16, 3, 5, vec![255, 255, 255, 0, 0, 0], bitmap, mask);
    c.until("C's own pointer: the X Cursor shape, nothing drawn", |v| {
        v.fb == sc.screen && v.x_cursors.last() == Some(&shape)
    });
}

// ------------------------------------------------------------ vncdotool

fn python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        py.exists(),
        "no .venv with vncdotool (scripts/install-deps.sh --venv creates it)"
    );
    py
}

/// vncdotool takes no cursor shapes: it sees the customer's pointer drawn
/// into the picture, at the right place, and after a move the pixels
/// under the old place are the screen's again.
#[test]
fn vncdotool_sees_the_customer_pointer() {
    let sc = Scene::start("vncdotool");
    move_pointer(&sc.display(), 60, 50);
    // Let the capture publish the position before vncdotool's first request.
    let mut probe = RawViewer::connect(sc.tvnc.addr, &[0, POINTER_POS]);
    probe.until("the capture saw (60, 50)", |v| {
        v.positions.last().map(|p| (p.1, p.2)) == Some((60, 50))
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/vncdotool_capture.py");
    let mut child = ChildGuard(
        Command::new(python())
            .arg(&script)
            .args(["--port", &sc.tvnc.addr.port().to_string()])
            .args(["--encoding", "raw", "--step", "--out"])
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run vncdotool"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(|l| l.ok());
    assert_eq!(ready.as_deref(), Some("READY"), "vncdotool's first capture");
    let read = |suffix: &str| {
        let b = std::fs::read(format!("{}{suffix}.rgb", out.display())).unwrap();
        common::rgb_bytes_to_pixels(&b)
    };
    let first = read("");
    compare_images(
        "cursor-vncdotool-1",
        sc.w,
        sc.h,
        &sc.expected((60, 50)),
        &first,
    )
    .expect("vncdotool shows the pointer at (60, 50)");

    move_pointer(&sc.display(), 250, 200);
    probe.until("the capture saw (250, 200)", |v| {
        v.positions.last().map(|p| (p.1, p.2)) == Some((250, 200))
    });
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "vncdotool's second capture");
    let second = read("-2");
    compare_images(
        "cursor-vncdotool-2",
        sc.w,
        sc.h,
        &sc.expected((250, 200)),
        &second,
    )
    .expect("vncdotool shows the pointer moved, the old place restored");
}

// ------------------------------------------------------------ TigerVNC

/// The vncviewer window's picture on `display`, when it is `w` x `h`.
fn tiger_shot(display: &str, w: usize, h: usize) -> Option<Vec<u32>> {
    let out = x_run(
        display,
        &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
    )?;
    let id = String::from_utf8(out)
        .ok()?
        .lines()
        .next()?
        .trim()
        .to_string();
    let rgb = x_run(display, &["import", "-window", &id, "-depth", "8", "rgb:-"])?;
    (rgb.len() == w * h * 3).then(|| common::rgb_bytes_to_pixels(&rgb))
}

fn tiger_shows(viewer: &str, name: &str, w: usize, h: usize, want: &[u32]) {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        if let Some(px) = tiger_shot(viewer, w, h) {
            if px == want {
                return;
            }
            last = Some(px);
        }
        if Instant::now() >= deadline {
            let r = match &last {
                Some(px) => compare_images(name, w, h, want, px),
                None => Err("no vncviewer window of the screen's size".into()),
            };
            panic!("{name}: vncviewer never showed the pointer there: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// TigerVNC draws the cursor locally and takes VMware Cursor Position,
/// but moves its pointer only while it grabs the mouse: the technician
/// sees the customer's pointer because it is drawn into the picture (its
/// local cursor hidden meanwhile). The viewer's own pointer is parked
/// outside its window, so it sends no motion and its local cursor is not
/// in the screenshot.
#[test]
fn tigervnc_sees_the_customer_pointer() {
    let sc = Scene::start("tigervnc");
    let viewer = XvfbGuard::start_in(X_RANGE, 800, 600);
    let vd = viewer.display_name();
    move_pointer(&vd, 790, 590);
    move_pointer(&sc.display(), 70, 90);
    let log = std::fs::File::create(common::artefact_dir().join("cursor-tigervnc.log")).unwrap();
    // Through a recording proxy, to see what TigerVNC asks for.
    let proxy = common::wire::RecordingProxy::start(sc.tvnc.addr);
    let _tiger = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", &vd)
            .arg(format!("127.0.0.1::{}", proxy.port()))
            .args([
                "-SecurityTypes=None",
                "-PreferredEncoding=Raw",
                "-AutoSelect=0",
            ])
            .args(["-NoJPEG", "-Shared=1", "-FullColor=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer (tigervnc-viewer)"),
    );
    tiger_shows(&vd, "cursor-tigervnc-1", sc.w, sc.h, &sc.expected((70, 90)));
    move_pointer(&sc.display(), 230, 120);
    tiger_shows(
        &vd,
        "cursor-tigervnc-2",
        sc.w,
        sc.h,
        &sc.expected((230, 120)),
    );

    // TigerVNC 1.12 prefers Cursor With Alpha and takes VMware positions.
    let asked = common::wire::client_requests(&proxy.recording(0).c2s(), false).unwrap();
    let list = asked.encodings.last().expect("SetEncodings").clone();
    let at = |e: i32| list.iter().position(|&x| x == e);
    assert!(
        at(-314).is_some() && at(-314) < at(CURSOR) && at(VMWARE_CURSOR_POS).is_some(),
        "TigerVNC's encodings: {list:?}"
    );

    // The technician moves into the window: the customer's pointer
    // follows their hand, the drawn cursor goes away and TigerVNC's own
    // cursor is the customer's shape (read back with XFixes on the
    // viewer's display: exact colours, mask and hot spot).
    let geo = x_run(
        &vd,
        &[
            "xdotool",
            "search",
            "--onlyvisible",
            "--name",
            "TigerVNC",
            "getwindowgeometry",
        ],
    )
    .and_then(|o| String::from_utf8(o).ok())
    .expect("vncviewer's window geometry");
    let pos = geo
        .lines()
        .find_map(|l| l.trim().strip_prefix("Position: "))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.split_once(','))
        .map(|(x, y)| (x.parse::<u16>().unwrap(), y.parse::<u16>().unwrap()))
        .expect("window position");
    // Under Xvfb without a window manager TigerVNC (FLTK) reports plain
    // motion only after a click in its window: the technician clicks.
    let (x, y) = ((pos.0 + 50).to_string(), (pos.1 + 60).to_string());
    assert!(x_run(
        &vd,
        &["xdotool", "mousemove", "--sync", &x, &y, "click", "1"]
    )
    .is_some());
    tiger_shows(&vd, "cursor-tigervnc-own", sc.w, sc.h, &sc.screen);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let img = cursor_image(&vd);
        if img.as_ref().is_some_and(|c| *c == bitmap_cursor()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TigerVNC's cursor never became the customer's: {:?}",
            img.map(|c| (c.0, c.1, c.2, c.3))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (width, height, hot x, hot y, ARGB pixels) of the cursor shown on `display`.
type CursorImage = (u16, u16, u16, u16, Vec<u32>);

fn cursor_image(display: &str) -> Option<CursorImage> {
    use x11rb::protocol::xfixes::ConnectionExt as _;
    let (conn, _) = x11rb::connect(Some(display)).ok()?;
    conn.xfixes_query_version(5, 0).ok()?.reply().ok()?;
    let c = conn.xfixes_get_cursor_image().ok()?.reply().ok()?;
    Some((c.width, c.height, c.xhot, c.yhot, c.cursor_image))
}

/// The served cursor as XFixes shows it (opaque pixels, no premultiplying
/// to undo).
fn bitmap_cursor() -> CursorImage {
    let px = (0..16)
        .flat_map(|y| (0..16).map(move |x| cursor_bits(x, y)))
        .map(|(src, mask)| match (src, mask) {
            (_, false) => 0,
            (true, true) => 0xff00_0000 | FG,
            (false, true) => 0xff00_0000 | BG,
        })
        .collect();
    (16, 16, HOT.0 as u16, HOT.1 as u16, px)
}
