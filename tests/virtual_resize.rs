//! SetDesktopSize (issue 11, item 5): in `--virtual` mode the viewer may
//! resize the private Xvfb (TigerVNC with `-RemoteResize=1` resizing its
//! window: the X screen and the viewer's framebuffer follow, pixel-exact;
//! a raw viewer's request is answered with status 0 and the new size, and
//! another viewer with only DesktopSize is told the new size). On a real
//! display the request is refused with status 1 (prohibited) and the
//! screen keeps its size.

mod common;

use common::{compare_images, require_commands, ChildGuard, XvfbGuard};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// X displays this suite may use (others use 60..80, 100..120, 140..160).
const X_RANGE: std::ops::Range<u32> = 160..170;
const TIMEOUT: Duration = Duration::from_secs(40);
const DESKTOP_SIZE: i32 = -223;
const EXTENDED_DESKTOP_SIZE: i32 = -308;

/// Run an X client on `display` (with `xauth` as XAUTHORITY when given).
fn x_run(display: &str, xauth: Option<&PathBuf>, args: &[&str]) -> Option<Vec<u8>> {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).env("DISPLAY", display);
    if let Some(a) = xauth {
        c.env("XAUTHORITY", a);
    }
    let out = c.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn screen_size(display: &str, xauth: Option<&PathBuf>) -> Option<(usize, usize)> {
    let out = String::from_utf8(x_run(display, xauth, &["xdpyinfo"])?).ok()?;
    let dims = out
        .lines()
        .find(|l| l.trim_start().starts_with("dimensions:"))?
        .split_whitespace()
        .nth(1)?;
    let (w, h) = dims.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// The `ticketvnc` binary, killed when dropped; `lines` is its stdout.
struct Tvnc {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _db: tempfile::TempDir,
}

impl Tvnc {
    fn start(name: &str, args: &[&str]) -> Tvnc {
        let db = tempfile::tempdir().unwrap();
        let log = common::artefact_dir().join(format!("resize-{name}-server.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
            .arg("--db")
            .arg(db.path().join("journal.db"))
            .env("XDG_CONFIG_HOME", db.path().join("config"))
            .arg("serve")
            .args(args)
            .args(["--no-auth", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run ticketvnc");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push(l);
            }
        });
        let mut t = Tvnc {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            lines,
            _db: db,
        };
        let deadline = Instant::now() + TIMEOUT;
        t.addr = loop {
            if let Some(a) = t.value("ticketvnc listening on ") {
                break a.parse().expect("listening address");
            }
            if let Some(st) = t.child.try_wait().unwrap() {
                panic!(
                    "ticketvnc exited ({st}) before listening; see {}",
                    log.display()
                );
            }
            assert!(Instant::now() < deadline, "ticketvnc did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        t
    }

    /// The first word after `prefix` on a stdout line.
    fn value(&self, prefix: &str) -> Option<String> {
        self.lines.lock().unwrap().iter().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .and_then(|v| v.split_whitespace().next())
                .map(str::to_string)
        })
    }
}

impl Drop for Tvnc {
    fn drop(&mut self) {
        // SIGTERM, so it stops its private Xvfb too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal raw-socket viewer that records size rectangles:
/// (encoding, x = reason, y = status, w, h).
struct Raw {
    s: TcpStream,
    size: (u16, u16),
    sizes: Vec<(i32, u16, u16, u16, u16)>,
}

impl Raw {
    fn connect(addr: SocketAddr, encodings: &[i32]) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "None offered: {types:?}");
        s.write_all(&[1]).unwrap();
        let mut res = [0u8; 4];
        s.read_exact(&mut res).unwrap();
        assert_eq!(res, [0; 4]);
        s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let size = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        let len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; len];
        s.read_exact(&mut name).unwrap();
        let mut m = vec![
            0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ];
        m.extend_from_slice(&[2, 0]);
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&m).unwrap();
        let mut r = Raw {
            s,
            size,
            sizes: Vec::new(),
        };
        r.request(false);
        r
    }

    fn request(&mut self, incremental: bool) {
        let mut m = vec![3, incremental as u8, 0, 0, 0, 0];
        m.extend_from_slice(&self.size.0.to_be_bytes());
        m.extend_from_slice(&self.size.1.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn set_desktop_size(&mut self, w: u16, h: u16) {
        let mut m = vec![251, 0];
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&[1, 0]);
        m.extend_from_slice(&0u32.to_be_bytes()); // screen id
        m.extend_from_slice(&[0, 0, 0, 0]); // x, y
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes()); // flags
        self.s.write_all(&m).unwrap();
    }

    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    fn read_message(&mut self) {
        match self.read_n(1)[0] {
            0 => {
                let hdr = self.read_n(3);
                for _ in 0..u16::from_be_bytes([hdr[1], hdr[2]]) {
                    let r = self.read_n(12);
                    let be16 = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
                    let (x, y, w, h) = (be16(0), be16(2), be16(4), be16(6));
                    let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                    match e {
                        0 => {
                            self.read_n(w as usize * h as usize * 4);
                        }
                        DESKTOP_SIZE => {
                            self.sizes.push((e, x, y, w, h));
                            self.size = (w, h);
                        }
                        EXTENDED_DESKTOP_SIZE => {
                            let n = self.read_n(4)[0] as usize;
                            self.read_n(16 * n);
                            self.sizes.push((e, x, y, w, h));
                            self.size = (w, h);
                        }
                        -307 => {
                            let l = self.read_n(4);
                            let l = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                            self.read_n(l);
                        }
                        -239 => {
                            let (wu, hu) = (w as usize, h as usize);
                            self.read_n(wu * hu * 4 + wu.div_ceil(8) * hu);
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

    fn until(&mut self, what: &str, mut f: impl FnMut(&Raw) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.read_message();
        }
    }
}

/// ticketvnc with `--virtual 640x480` and where its display is.
/// (The pointer is not drawn into pictures: the comparisons are with
/// `import` grabs, which never show it; tests/cursor.rs covers it.)
fn virtual_server(name: &str) -> (Tvnc, String, PathBuf) {
    let t = Tvnc::start(name, &["--virtual", "640x480", "--no-drawn-cursor"]);
    let d = t
        .value("ticketvnc virtual display ")
        .expect("virtual display");
    let a = PathBuf::from(t.value("ticketvnc xauthority ").expect("xauthority"));
    assert_eq!(
        screen_size(&d, Some(&a)),
        Some((640, 480)),
        "the requested size"
    );
    (t, d, a)
}

/// A raw viewer resizes the virtual desktop: status 0 with the new size;
/// a viewer with only DesktopSize is told; the X screen has the size.
/// Invalid sizes get status 3 and change nothing.
#[test]
fn raw_viewer_resizes_the_virtual_desktop() {
    require_commands(&["Xvfb", "xdpyinfo"]);
    let (t, d, a) = virtual_server("raw");
    let mut asker = Raw::connect(t.addr, &[0, EXTENDED_DESKTOP_SIZE]);
    let mut other = Raw::connect(t.addr, &[0, DESKTOP_SIZE]);
    asker.until("the layout", |r| !r.sizes.is_empty());
    asker.set_desktop_size(800, 600);
    asker.until("the answer", |r| r.sizes.iter().any(|s| s.1 == 1));
    let answer = *asker.sizes.iter().find(|s| s.1 == 1).unwrap();
    assert_eq!(answer, (EXTENDED_DESKTOP_SIZE, 1, 0, 800, 600));
    assert_eq!(screen_size(&d, Some(&a)), Some((800, 600)));
    other.until("the other viewer told", |r| r.size == (800, 600));
    assert_eq!(other.sizes.last(), Some(&(DESKTOP_SIZE, 0, 0, 800, 600)));

    // Beyond what the private Xvfb can hold, and zero: status 3.
    for (w, h) in [(5000, 600), (0, 600)] {
        let before = asker.sizes.len();
        asker.set_desktop_size(w, h);
        asker.until("the answer", |r| r.sizes[before..].iter().any(|s| s.1 == 1));
        let answer = *asker.sizes[before..].iter().find(|s| s.1 == 1).unwrap();
        assert_eq!(answer, (EXTENDED_DESKTOP_SIZE, 1, 3, 800, 600), "{w}x{h}");
    }
    assert_eq!(screen_size(&d, Some(&a)), Some((800, 600)));
}

/// On a customer's real screen a viewer's request is refused with status 1
/// (administratively prohibited) and the screen keeps its size.
#[test]
fn real_display_refuses_with_status_1() {
    require_commands(&["Xvfb", "xdpyinfo"]);
    let xvfb = XvfbGuard::start_in(X_RANGE, 640, 480);
    let d = xvfb.display_name();
    let t = Tvnc::start("real", &["--source", "x11", "--display", &d]);
    let mut v = Raw::connect(t.addr, &[0, EXTENDED_DESKTOP_SIZE]);
    v.until("the layout", |r| !r.sizes.is_empty());
    v.set_desktop_size(320, 200);
    v.until("the answer", |r| r.sizes.iter().any(|s| s.1 == 1));
    let answer = *v.sizes.iter().find(|s| s.1 == 1).unwrap();
    assert_eq!(answer, (EXTENDED_DESKTOP_SIZE, 1, 1, 640, 480));
    assert_eq!(screen_size(&d, None), Some((640, 480)));
}

/// TigerVNC with -RemoteResize=1: resizing its window resizes the virtual
/// desktop, and its window shows the whole new screen exactly.
#[test]
fn tigervnc_window_resize_resizes_the_virtual_desktop() {
    require_commands(&[
        "Xvfb",
        "xdpyinfo",
        "xdotool",
        "import",
        "xsetroot",
        "vncviewer",
    ]);
    let (t, d, a) = virtual_server("tigervnc");
    // Something to compare: a checked root window.
    let dir = tempfile::tempdir().unwrap();
    let bits = dir.path().join("check.xbm");
    std::fs::write(
        &bits,
        "#define c_width 8\n#define c_height 8\nstatic unsigned char c_bits[] = {\n\
         0x0f,0x0f,0x0f,0x0f,0xf0,0xf0,0xf0,0xf1};\n",
    )
    .unwrap();
    let xs = ["xsetroot", "-fg", "#2080c0", "-bg", "#f0e010", "-bitmap"];
    let mut args = xs.to_vec();
    args.push(bits.to_str().unwrap());
    assert!(x_run(&d, Some(&a), &args).is_some());

    let viewer = XvfbGuard::start_in(X_RANGE, 1280, 1024);
    let vd = viewer.display_name();
    let log = std::fs::File::create(common::artefact_dir().join("resize-tigervnc.log")).unwrap();
    let _tiger = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", &vd)
            .arg(format!("127.0.0.1::{}", t.addr.port()))
            .args([
                "-SecurityTypes=None",
                "-RemoteResize=1",
                "-PreferredEncoding=Raw",
            ])
            .args(["-AutoSelect=0", "-NoJPEG", "-FullColor=1", "-Shared=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer"),
    );
    let win = poll("vncviewer's window", || {
        let o = x_run(
            &vd,
            None,
            &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
        )?;
        String::from_utf8(o)
            .ok()?
            .lines()
            .next()
            .map(|s| s.trim().to_string())
    });
    shows_screen(&vd, &win, &d, &a, (640, 480));
    assert!(x_run(&vd, None, &["xdotool", "windowsize", &win, "800", "600"]).is_some());
    poll("the virtual screen at 800x600", || {
        (screen_size(&d, Some(&a)) == Some((800, 600))).then_some(())
    });
    shows_screen(&vd, &win, &d, &a, (800, 600));
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The viewer window `win` shows exactly the virtual screen, of `size`.
fn shows_screen(vd: &str, win: &str, d: &str, a: &PathBuf, (w, h): (usize, usize)) {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        let want = x_run(
            d,
            Some(a),
            &["import", "-window", "root", "-depth", "8", "rgb:-"],
        )
        .filter(|b| b.len() == w * h * 3)
        .map(|b| common::rgb_bytes_to_pixels(&b));
        let got = x_run(
            vd,
            None,
            &["import", "-window", win, "-depth", "8", "rgb:-"],
        )
        .filter(|b| b.len() == w * h * 3)
        .map(|b| common::rgb_bytes_to_pixels(&b));
        if let (Some(want), Some(got)) = (want, got) {
            if want == got {
                return;
            }
            last = Some((want, got));
        }
        if Instant::now() >= deadline {
            let r = match &last {
                Some((want, got)) => compare_images("resize-tigervnc", w, h, want, got),
                None => Err(format!("never a {w}x{h} window and screen")),
            };
            panic!("vncviewer never showed the {w}x{h} virtual screen: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
