//! The customer's lock keys on the technician's keyboard (issue 11,
//! item 6): LED State (-261, one byte) and VMware LED State (0x574d5668,
//! a U32), bits 0 Scroll Lock, 1 Num Lock, 2 Caps Lock (rfbproto).
//!
//! The `ticketvnc` binary serves a private Xvfb whose lock keys are
//! toggled with `xdotool key Caps_Lock` / `Num_Lock` (XTest, as a
//! customer's keyboard would). Raw-socket viewers check what is sent and
//! to whom; TigerVNC vncviewer on a second Xvfb shows that a real viewer
//! follows: its own display's Caps Lock (`xset q`) goes on and off with
//! the customer's.

mod common;

use common::{require_commands, ChildGuard, XvfbGuard};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// X displays this suite may use (others use lower ranges).
const X_RANGE: std::ops::Range<u32> = 200..212;
const TIMEOUT: Duration = Duration::from_secs(40);

const LED_STATE: i32 = -261;
const VMWARE_LED_STATE: i32 = 0x574d_5668;
const CAPS: u32 = 4;
const NUM: u32 = 2;

fn x_run(display: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn press(display: &str, key: &str) {
    assert!(x_run(display, &["xdotool", "key", key]).is_some());
}

/// Whether `xset q` on `display` reports the Caps Lock indicator on.
fn caps_on(display: &str) -> Option<bool> {
    let q = x_run(display, &["xset", "q"])?;
    let i = q.find("Caps Lock:")?;
    Some(q[i + 10..].trim_start().starts_with("on"))
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
        let log = common::artefact_dir().join(format!("led-{name}-server.log"));
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

struct RawViewer {
    s: TcpStream,
}

/// One rectangle of an update: its encoding and, for LED state, the state.
type Seen = (i32, Option<u32>);

impl RawViewer {
    /// RFB 3.8, security None, shared, 32 bpp native pixels, `encodings`.
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
        RawViewer { s }
    }

    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).expect("read from ticketvnc");
        b
    }

    /// Ask for the top-left 1x1 pixel.
    fn request(&mut self, incremental: bool) {
        self.s
            .write_all(&[3, incremental as u8, 0, 0, 0, 0, 0, 1, 0, 1])
            .unwrap();
    }

    /// Read one FramebufferUpdate: each rectangle's encoding, and the
    /// state of LED State rectangles.
    fn update(&mut self) -> Vec<Seen> {
        let h = self.read(4);
        assert_eq!(h[0], 0, "only FramebufferUpdates expected");
        let count = u16::from_be_bytes([h[2], h[3]]);
        let mut out = Vec::new();
        for _ in 0..count {
            let r = self.read(12);
            let (w, h) = (
                u16::from_be_bytes([r[4], r[5]]) as usize,
                u16::from_be_bytes([r[6], r[7]]) as usize,
            );
            let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            let state = match e {
                0 => {
                    self.read(w * h * 4);
                    None
                }
                LED_STATE => {
                    assert_eq!((w, h), (0, 0), "LED State rectangle");
                    Some(u32::from(self.read(1)[0]))
                }
                VMWARE_LED_STATE => {
                    assert_eq!((w, h), (0, 0), "VMware LED State rectangle");
                    let b = self.read(4);
                    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                }
                other => panic!("unexpected encoding {other}"),
            };
            out.push((e, state));
        }
        out
    }

    /// Incremental updates until one carries `encoding`; its state.
    fn next_led(&mut self, encoding: i32) -> u32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no {encoding} rectangle");
            self.request(true);
            for (e, state) in self.update() {
                assert!(
                    e == 0 || e == encoding,
                    "{e} sent to a viewer that listed {encoding}"
                );
                if e == encoding {
                    return state.unwrap();
                }
            }
        }
    }
}

fn served(name: &str) -> (XvfbGuard, String, Tvnc) {
    require_commands(&["Xvfb", "xdotool", "xset"]);
    let x = XvfbGuard::start_in(X_RANGE, 320, 240);
    let d = x.display_name();
    let tvnc = Tvnc::start(name, &d);
    (x, d, tvnc)
}

/// A viewer listing LED State learns the customer's lock keys in its
/// first update and again after each change, with the QEMU one-byte
/// format; one listing only VMware LED State gets the U32; one listing
/// neither never gets either.
#[test]
fn lock_keys_reach_viewers_that_ask() {
    let (_x, d, tvnc) = served("raw");
    // Caps Lock on before anyone connects: the first update says so.
    press(&d, "Caps_Lock");
    assert_eq!(caps_on(&d), Some(true));

    let mut plain = RawViewer::connect(tvnc.addr, &[0]);
    plain.request(false);
    assert_eq!(plain.update(), [(0, None)], "viewer without LED state");

    let mut qemu = RawViewer::connect(tvnc.addr, &[0, LED_STATE]);
    qemu.request(false);
    let first = qemu.update();
    assert!(
        first.contains(&(LED_STATE, Some(CAPS))),
        "first update: {first:?}"
    );
    // Told once: nothing more while nothing changes.
    qemu.request(false);
    assert_eq!(qemu.update(), [(0, None)], "LED state sent again");

    let mut vmware = RawViewer::connect(tvnc.addr, &[0, VMWARE_LED_STATE]);
    vmware.request(false);
    assert!(vmware.update().contains(&(VMWARE_LED_STATE, Some(CAPS))));

    // Listing both: the one-byte QEMU form only (TigerVNC's choice).
    let mut both = RawViewer::connect(tvnc.addr, &[0, VMWARE_LED_STATE, LED_STATE]);
    both.request(false);
    let u = both.update();
    assert!(u.contains(&(LED_STATE, Some(CAPS))), "{u:?}");
    assert!(!u.iter().any(|(e, _)| *e == VMWARE_LED_STATE), "{u:?}");

    // The plain viewer keeps an incremental request pending: had anything
    // been sent for the lock keys, it would answer it.
    plain.request(true);

    // Caps Lock off, then Num Lock on.
    press(&d, "Caps_Lock");
    assert_eq!(qemu.next_led(LED_STATE), 0);
    assert_eq!(vmware.next_led(VMWARE_LED_STATE), 0);
    press(&d, "Num_Lock");
    assert_eq!(qemu.next_led(LED_STATE), NUM);
    assert_eq!(vmware.next_led(VMWARE_LED_STATE), NUM);
    press(&d, "Caps_Lock");
    assert_eq!(qemu.next_led(LED_STATE), NUM | CAPS);
    press(&d, "Caps_Lock");
    press(&d, "Num_Lock");
    // Possibly in one poll or two: wait for the final state.
    let deadline = Instant::now() + TIMEOUT;
    while qemu.next_led(LED_STATE) != 0 {
        assert!(Instant::now() < deadline, "lock keys never all off");
    }

    // The plain viewer's pending request was never answered with LED
    // state: a full request now gets the pixel alone.
    plain.request(false);
    assert_eq!(plain.update(), [(0, None)], "viewer without LED state");
}

/// TigerVNC vncviewer, through a recording proxy. A version that lists
/// LED State (1.13 on; 1.12.0 has lock-key sync switched off by mistake,
/// TigerVNC commit 7ac8711d) follows the customer's Caps Lock on its own
/// display while its window has the focus (TigerVNC's rule); one that
/// does not (1.12) is sent no LED rectangle, and its stream still frames.
#[test]
fn tigervnc_caps_lock_follows_the_customer() {
    require_commands(&["vncviewer"]);
    let (_x, d, tvnc) = served("tigervnc");
    let viewer = XvfbGuard::start_in(X_RANGE, 640, 480);
    let vd = viewer.display_name();
    let log = std::fs::File::create(common::artefact_dir().join("led-tigervnc.log")).unwrap();
    let proxy = common::wire::RecordingProxy::start(tvnc.addr);
    let _tiger = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", &vd)
            .arg(format!("127.0.0.1::{}", proxy.port()))
            .args(["-SecurityTypes=None", "-Shared=1", "-Log=*:stderr:100"])
            .args(["-AutoSelect=0", "-PreferredEncoding=ZRLE", "-FullColor=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer (tigervnc-viewer)"),
    );
    // Its window, focused (no window manager on the viewer's Xvfb).
    let deadline = Instant::now() + TIMEOUT;
    let win = loop {
        let w = x_run(
            &vd,
            &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
        );
        if let Some(id) = w.and_then(|w| w.split_whitespace().next().map(str::to_string)) {
            break id;
        }
        assert!(Instant::now() < deadline, "no vncviewer window");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(x_run(&vd, &["xdotool", "windowfocus", "--sync", &win]).is_some());
    assert_eq!(caps_on(&vd), Some(false));

    let asked = common::wire::client_requests(&proxy.recording(0).c2s(), false).unwrap();
    let list = asked.encodings.last().expect("SetEncodings").clone();
    let listed = list.contains(&LED_STATE) || list.contains(&VMWARE_LED_STATE);
    let follows = |want: bool| {
        let deadline = Instant::now() + TIMEOUT;
        while caps_on(&vd) != Some(want) {
            assert!(
                Instant::now() < deadline,
                "the viewer's Caps Lock never went {}",
                if want { "on" } else { "off" }
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    press(&d, "Caps_Lock");
    assert_eq!(caps_on(&d), Some(true), "the customer's Caps Lock");
    if listed {
        // TigerVNC takes the first LED State as the server announcing
        // support (and pushes its own state); each later one it applies.
        follows(true);
        press(&d, "Caps_Lock");
        follows(false);
        assert_eq!(caps_on(&d), Some(false), "the customer's Caps Lock");
        println!("TigerVNC lists LED state and follows the customer's Caps Lock");
    } else {
        // Well beyond the 100 ms lock-key poll: nothing was sent.
        std::thread::sleep(Duration::from_secs(2));
        let asked = common::wire::client_requests(&proxy.recording(0).c2s(), false).unwrap();
        let pf = asked
            .pixel_formats
            .last()
            .copied()
            .unwrap_or(ticketvnc::rfb::PixelFormat::NATIVE);
        let updates = common::wire::server_updates(&proxy.recording(0).s2c(), &pf)
            .expect("server stream frames cleanly");
        assert!(!updates.is_empty(), "no updates recorded");
        for r in updates.iter().flatten() {
            assert!(
                r.encoding != LED_STATE && r.encoding != VMWARE_LED_STATE,
                "LED state sent to a TigerVNC that did not list it: {r:?}"
            );
        }
        assert_eq!(caps_on(&vd), Some(false), "the viewer's Caps Lock");
        println!("TigerVNC does not list LED state ({list:?}): none sent");
    }
}
