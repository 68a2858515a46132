//! Real client: TigerVNC's vncviewer under a private Xvfb. For Raw,
//! Hextile, ZRLE and Tight (lossless: -NoJPEG), at full colour and at the
//! three 8-bit low-colour levels, the viewer window is screenshotted and
//! compared with the test pattern: exact at full colour, exact after the
//! same reduction at 8 bit.
//!
//! The viewer talks to the server through a recording proxy, so each run
//! also checks what the viewer asked for (its first encoding, its pixel
//! format) and which encoding the server really answered with.

mod common;

use common::wire::{
    assert_encodings, client_requests, server_message_types, server_updates, RecordingProxy,
};
use common::{compare_images, require_commands, ChildGuard, TestServer, XvfbGuard};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ticketvnc::capture::test_pattern::PatternControl;
use ticketvnc::rfb::PixelFormat;

const W: u16 = 320;
const H: u16 = 240;
const TIMEOUT: Duration = Duration::from_secs(40);

/// The colour settings a run uses.
#[derive(Clone, Copy, Debug)]
enum Colour {
    Full,
    /// -FullColor=0 -LowColorLevel=N
    Low(u8),
}

impl Colour {
    fn args(self) -> Vec<String> {
        match self {
            Colour::Full => vec!["-FullColor=1".into()],
            Colour::Low(n) => vec!["-FullColor=0".into(), format!("-LowColorLevel={n}")],
        }
    }
    /// The pixel format TigerVNC 1.12 requests (CConn.cxx: verylowColourPF
    /// "rgb111", lowColourPF "rgb222", mediumColourPF "rgb332").
    fn requested_format(self) -> Option<PixelFormat> {
        let (depth, rmax, gmax, bmax, rs, gs, bs) = match self {
            Colour::Full => return None,
            Colour::Low(0) => (3, 1, 1, 1, 2, 1, 0),
            Colour::Low(1) => (6, 3, 3, 3, 4, 2, 0),
            Colour::Low(_) => (8, 7, 7, 3, 5, 2, 0),
        };
        Some(PixelFormat {
            bits_per_pixel: 8,
            depth,
            big_endian: false,
            true_colour: true,
            red_max: rmax,
            green_max: gmax,
            blue_max: bmax,
            red_shift: rs,
            green_shift: gs,
            blue_shift: bs,
        })
    }
    fn tag(self) -> String {
        match self {
            Colour::Full => "full".into(),
            Colour::Low(n) => format!("low{n}"),
        }
    }
}

fn run_cmd(display: &str, args: &[&str]) -> Option<Vec<u8>> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("DISPLAY", display)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

/// The viewer's top-level window (named after the desktop), if mapped.
fn find_window(display: &str) -> Option<String> {
    let out = run_cmd(
        display,
        &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
    )?;
    String::from_utf8(out)
        .ok()?
        .lines()
        .next()
        .map(|s| s.trim().to_string())
}

/// A screenshot of window `id` as `0x00RRGGBB` pixels (only if it has the
/// framebuffer's size).
fn screenshot(display: &str, id: &str) -> Option<Vec<u32>> {
    let rgb = run_cmd(display, &["import", "-window", id, "-depth", "8", "rgb:-"])?;
    (rgb.len() == W as usize * H as usize * 3).then(|| common::rgb_bytes_to_pixels(&rgb))
}

/// Poll screenshots of the viewer window until it shows test-pattern frame
/// `n` exactly (compared in the colour values of `pf`, the 8-bit format the
/// viewer asked for, if any); on timeout write diff images and panic.
fn wait_for_picture(display: &str, name: &str, n: u64, pf: Option<&PixelFormat>) {
    let reduce = |p: u32| pf.map_or(p & 0xffffff, |pf| pf.from_native(p));
    let want_values: Vec<u32> = common::expected(W, H, n)
        .iter()
        .map(|&p| reduce(p))
        .collect();
    let deadline = Instant::now() + TIMEOUT;
    let mut last: Option<Vec<u32>> = None;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let Some(id) = find_window(display) else {
            continue;
        };
        let Some(shot) = screenshot(display, &id) else {
            continue;
        };
        // The "Press F8" tip is drawn over the picture for a few seconds;
        // keep polling until the window shows exactly the expected picture.
        let values: Vec<u32> = shot.iter().map(|&p| reduce(p)).collect();
        if values == want_values {
            return;
        }
        last = Some(shot);
    }
    let show = |p: u32| pf.map_or(p, |pf| pf.to_native(pf.from_native(p)));
    let want_img: Vec<u32> = common::expected(W, H, n).iter().map(|&p| show(p)).collect();
    let got_img: Vec<u32> = last.unwrap_or_default().iter().map(|&p| show(p)).collect();
    let r = compare_images(name, W as usize, H as usize, &want_img, &got_img);
    panic!("{name}: the viewer never showed the expected picture: {r:?}");
}

/// One vncviewer run: connect through the proxy, wait until the window
/// shows the pattern, then check the wire.
/// `passwd`: a TigerVNC password file when the server asks for a password.
fn view(
    xvfb: &XvfbGuard,
    server: SocketAddr,
    encoding: &str,
    number: i32,
    colour: Colour,
    passwd: Option<&Path>,
    step: Option<&PatternControl>,
) {
    let name = format!(
        "tigervnc-{}-{}{}",
        encoding.to_lowercase(),
        colour.tag(),
        if passwd.is_some() { "-pw" } else { "" }
    );
    let display = xvfb.display_name();
    let proxy = RecordingProxy::start(server);
    let log = std::fs::File::create(common::artefact_dir().join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new("vncviewer");
    cmd.env("DISPLAY", &display)
        .arg(format!("127.0.0.1::{}", proxy.port()))
        .arg(format!("-PreferredEncoding={encoding}"))
        .args(["-AutoSelect=0", "-NoJPEG", "-Shared=1"])
        // Bare VNC security, so the recording proxy can read the stream
        // (the VeNCrypt tests are in tests/security_tls.rs).
        .arg("-SecurityTypes=VncAuth,None")
        .args(colour.args())
        .args(passwd.map(|p| format!("-passwd={}", p.display())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let viewer = ChildGuard(cmd.spawn().expect("run vncviewer (tigervnc-viewer)"));

    let pf = colour.requested_format();
    if let Some(ctl) = step {
        ctl.set_frame(0);
    }
    wait_for_picture(&display, &format!("{name}-frame0"), 0, pf.as_ref());
    if let Some(ctl) = step {
        // One frame on: the box moves (a CopyRect for a viewer that has the
        // previous frame), the frame counter changes.
        ctl.set_frame(1);
        wait_for_picture(&display, &format!("{name}-frame1"), 1, pf.as_ref());
    }
    drop(viewer);

    // What the viewer asked for (TigerVNC lists pseudo-encodings and the
    // VMware cursor (0x574d5664) first, then its preferred standard
    // encoding, then CopyRect), and what it got.
    let rec = proxy.recording(0);
    let asked =
        client_requests(&rec.c2s(), passwd.is_some()).expect("client stream frames cleanly");
    let first = asked
        .encodings
        .last()
        .and_then(|l| {
            l.iter()
                .copied()
                .find(|e| matches!(e, 0 | 2 | 4 | 5 | 6 | 7 | 15 | 16))
        })
        .expect("the viewer sent SetEncodings");
    assert_eq!(
        first, number,
        "{name}: the viewer's preferred encoding; it sent {:?}",
        asked.encodings
    );
    let used_pf = asked
        .pixel_formats
        .last()
        .copied()
        .unwrap_or(PixelFormat::NATIVE);
    match pf {
        Some(expect) => assert_eq!(used_pf, expect, "{name}: the 8-bit format requested"),
        None => assert!(
            used_pf.true_colour
                && used_pf.bits_per_pixel == 32
                && (used_pf.red_max, used_pf.green_max, used_pf.blue_max) == (255, 255, 255),
            "{name}: full colour should be 8 bits per channel, got {used_pf:?}"
        ),
    }
    let updates = server_updates(&rec.s2c(), &used_pf).expect("server stream frames cleanly");
    // TigerVNC lists ContinuousUpdates (-313) and Fence (-312): the
    // server offers both, the viewer turns continuous updates on and
    // answers the server's fences; the pictures above came that way.
    let types = server_message_types(&rec.s2c(), &used_pf).unwrap();
    assert!(
        types.contains(&248) && types.contains(&150),
        "{name}: ServerFence and EndOfContinuousUpdates sent: {types:?}"
    );
    assert!(
        asked.continuous_updates.first() == Some(&true) && asked.fences > 0,
        "{name}: the viewer enabled continuous updates ({:?}) and answered fences ({})",
        asked.continuous_updates,
        asked.fences
    );
    if step.is_some() {
        assert!(updates.len() >= 2, "{name}: expected a second update");
        assert_encodings(&updates[..1], &[number], &name);
        assert_encodings(&updates[1..], &[number, 1], &name);
        assert!(
            updates[1..].iter().flatten().any(|r| r.encoding == 1),
            "{name}: the moved box did not arrive as a CopyRect: {:?}",
            &updates[1..]
        );
    } else {
        assert_encodings(&updates, &[number], &name);
    }
}

fn all_levels(encoding: &str, number: i32) {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    let xvfb = XvfbGuard::start(640, 480);
    let server = TestServer::start(W, H, None);
    // Run every colour level even when one fails, then report them all.
    let mut failed = Vec::new();
    for colour in [Colour::Full, Colour::Low(0), Colour::Low(1), Colour::Low(2)] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            view(
                &xvfb,
                server.addr,
                encoding,
                number,
                colour,
                None,
                Some(&server.control),
            )
        }));
        if r.is_err() {
            failed.push(colour.tag());
        }
    }
    assert!(
        failed.is_empty(),
        "{encoding}: failed at colour levels {failed:?} (messages above)"
    );
}

#[test]
fn raw() {
    all_levels("Raw", 0);
}

#[test]
fn hextile() {
    all_levels("Hextile", 5);
}

#[test]
fn zrle() {
    all_levels("ZRLE", 16);
}

#[test]
fn tight() {
    all_levels("Tight", 7);
}

/// Every encoder call split between 4 threads, with the thresholds
/// lowered so that the 320x240 pattern takes the parallel paths (JPEG and
/// palette work per strip, zlib streams in pigz-style segments). The
/// setting is process-wide: the other tests of this file may run with it
/// too, which they must survive as well.
fn parallel_encoding() {
    ticketvnc::encoding::parallel::set_threads(4);
    ticketvnc::encoding::parallel::set_min_sizes(4096, 4096);
}

#[test]
fn zrle_parallel() {
    parallel_encoding();
    all_levels("ZRLE", 16);
}

#[test]
fn tight_parallel() {
    parallel_encoding();
    all_levels("Tight", 7);
}

/// Tight with JPEG (quality level 8, libjpeg-turbo), encoded in parallel:
/// the viewer shows frame 0 and then frame 1 close to the pattern (JPEG
/// is lossy: mean error per channel at most 3, and not exact, which proves
/// JPEG was used, since every other Tight kind is lossless).
#[test]
fn tight_jpeg_parallel() {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    parallel_encoding();
    let xvfb = XvfbGuard::start(640, 480);
    let server = TestServer::start(W, H, None);
    let display = xvfb.display_name();
    let log = std::fs::File::create(common::artefact_dir().join("tigervnc-jpeg.log")).unwrap();
    let mut cmd = Command::new("vncviewer");
    cmd.env("DISPLAY", &display)
        .arg(format!("127.0.0.1::{}", server.addr.port()))
        .args(["-PreferredEncoding=Tight", "-AutoSelect=0", "-Shared=1"])
        .args(["-QualityLevel=8", "-CompressLevel=1", "-FullColor=1"])
        .arg("-SecurityTypes=None")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let _viewer = ChildGuard(cmd.spawn().expect("run vncviewer (tigervnc-viewer)"));
    for n in [0u64, 1] {
        server.control.set_frame(n);
        let want = common::expected(W, H, n);
        let err = |shot: &[u32]| {
            let sum: u64 = shot
                .iter()
                .zip(&want)
                .map(|(&a, &b)| {
                    [0, 8, 16]
                        .iter()
                        .map(|s| ((a >> s) & 0xff).abs_diff((b >> s) & 0xff) as u64)
                        .sum::<u64>()
                })
                .sum();
            sum as f64 / (shot.len() * 3) as f64
        };
        let deadline = Instant::now() + TIMEOUT;
        let mut last = None;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if let Some(shot) = find_window(&display).and_then(|id| screenshot(&display, &id)) {
                // The frame counter block (8x8, top left) must show frame n;
                // JPEG keeps its flat colour within a few levels.
                let corner_ok = (0..8usize).all(|y| {
                    (0..8usize).all(|x| {
                        let (a, b) = (shot[y * W as usize + x], want[y * W as usize + x]);
                        [0, 8, 16]
                            .iter()
                            .all(|s| ((a >> s) & 0xff).abs_diff((b >> s) & 0xff) <= 24)
                    })
                });
                let e = err(&shot);
                if corner_ok && e <= 3.0 {
                    assert!(e > 0.0, "frame {n}: exact, so no JPEG was used");
                    break;
                }
                last = Some((e, shot));
            }
            if Instant::now() > deadline {
                let (e, shot) = last.unwrap_or_default();
                let _ = compare_images(
                    &format!("tigervnc-jpeg-{n}"),
                    W as usize,
                    H as usize,
                    &want,
                    &shot,
                );
                panic!("frame {n}: the viewer never showed the pattern (mean error {e:.2})");
            }
        }
    }
}

/// TigerVNC's obfuscated password file: the password (8 bytes, zero padded)
/// DES-encrypted with the fixed key every VNC implementation uses, which
/// is exactly a VNC-auth response with that key as "password".
fn tigervnc_passwd_file(path: &Path, password: &str) {
    const FIXED_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];
    let mut block = [0u8; 16];
    for (b, p) in block.iter_mut().zip(password.as_bytes().iter().take(8)) {
        *b = *p;
    }
    let out = ticketvnc::security::vnc_auth_response(
        &ticketvnc::security::VncPassword::new(&FIXED_KEY),
        &block,
    );
    std::fs::write(path, &out[..8]).unwrap();
}

/// A free TCP port in 16000-16999 (this suite's range for the binary).
fn free_port() -> u16 {
    let start = 16000 + (std::process::id() % 1000) as u16;
    (0..1000u16)
        .map(|i| 16000 + (start - 16000 + i) % 1000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 16000-16999")
}

/// The `ticketvnc` binary with `--password-file`, viewed by vncviewer with
/// the matching TigerVNC password file.
#[test]
fn binary_with_password_file() {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cr3t-pw\n").unwrap();
    let passwd = dir.path().join("passwd");
    tigervnc_passwd_file(&passwd, "s3cr3t-pw");
    let port = free_port();
    let log = std::fs::File::create(common::artefact_dir().join("binary-server.log")).unwrap();
    let server = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
            .arg("--db")
            .arg(dir.path().join("journal.db"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--password-file")
            .arg(&pw)
            .args([
                "--source",
                "test-pattern",
                "--fps",
                "0",
                "--size",
                &format!("{W}x{H}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run ticketvnc"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "ticketvnc did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let xvfb = XvfbGuard::start(640, 480);
    view(&xvfb, addr, "Raw", 0, Colour::Full, Some(&passwd), None);
    drop(server);
}

// ------------------------------------------------------------ VeNCrypt

/// `ticketvnc --db DIR/journal.db ARGS` (a CLI call); panics on failure.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(dir.join("journal.db"))
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run ticketvnc");
    assert!(
        out.status.success(),
        "ticketvnc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ticketvnc serve` on the still test pattern at W x H with `extra`
/// arguments; its certificate is generated into DIR/config.
fn serve_binary(dir: &Path, name: &str, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    use std::io::BufRead;
    let log =
        std::fs::File::create(common::artefact_dir().join(format!("{name}-server.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(dir.join("journal.db"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        // Port 0: tests running side by side never race for a port.
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--source",
            "test-pattern",
            "--fps",
            "0",
            "--size",
            &format!("{W}x{H}"),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run ticketvnc");
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let server = ChildGuard(child);
    for line in out.lines() {
        let line = line.expect("serve output");
        if let Some(a) = line.strip_prefix("ticketvnc listening on ") {
            return (server, a.trim().parse().unwrap());
        }
    }
    panic!("{name}: ticketvnc exited without listening");
}

/// vncviewer limited to one VeNCrypt subtype, trusting the certificate
/// ticketvnc generated in DIR/config.
fn tls_viewer(
    xvfb: &XvfbGuard,
    dir: &Path,
    addr: SocketAddr,
    name: &str,
    security: &str,
    extra: &[String],
    env: &[(&str, &str)],
) -> ChildGuard {
    let log = std::fs::File::create(common::artefact_dir().join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new("vncviewer");
    cmd.env("DISPLAY", xvfb.display_name())
        .envs(env.iter().copied())
        .arg(format!("127.0.0.1::{}", addr.port()))
        .arg(format!("-SecurityTypes={security}"))
        .arg(format!(
            "-X509CA={}",
            dir.join("config/ticketvnc/tls-cert.pem").display()
        ))
        .args([
            "-PreferredEncoding=ZRLE",
            "-AutoSelect=0",
            "-NoJPEG",
            "-Shared=1",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard(cmd.spawn().expect("run vncviewer (tigervnc-viewer)"))
}

/// The journal's sessions as JSON objects.
fn sessions_json(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&cli(dir, &["sessions", "--json"])).expect("sessions --json")
}

/// Wait until the journal holds a session started by `security`.
fn wait_session(dir: &Path, security: &str) -> serde_json::Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = sessions_json(dir)
            .into_iter()
            .find(|s| s["security"] == security && s["end_reason"].is_null())
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {security} session in {:#?}",
            sessions_json(dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A technician with a one-time code, over VeNCrypt X509Vnc: the screen
/// arrives pixel-exact and the session row names ticket and security.
#[test]
fn tls_x509vnc_with_a_one_time_code() {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve_binary(dir.path(), "tls-x509vnc", &[]);
    let out = cli(
        dir.path(),
        &["ticket", "open", "4711", "--title", "TLS test"],
    );
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("One-time code: "))
        .expect("a code")
        .trim()
        .to_string();
    let passwd = dir.path().join("passwd");
    tigervnc_passwd_file(&passwd, &code);
    let xvfb = XvfbGuard::start(640, 480);
    let _viewer = tls_viewer(
        &xvfb,
        dir.path(),
        addr,
        "tigervnc-tls-x509vnc",
        "X509Vnc",
        &[
            format!("-passwd={}", passwd.display()),
            "-FullColor=1".into(),
        ],
        &[],
    );
    wait_for_picture(&xvfb.display_name(), "tigervnc-tls-x509vnc", 0, None);
    let s = wait_session(dir.path(), "VeNCrypt/X509Vnc");
    assert_eq!(s["ticket"], "4711", "{s:#}");
    assert_eq!(s["consent"], "auto", "{s:#}");
}

/// A technician account over VeNCrypt X509Plain, with the person at the
/// screen asked by a consent command that grants view-only: the screen
/// arrives pixel-exact; the row names technician, security and consent.
#[test]
fn tls_x509plain_technician_with_consent() {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("anna.pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    cli(
        dir.path(),
        &[
            "tech",
            "add",
            "anna",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    // The consent command records what it was told and grants view-only.
    let seen = dir.path().join("consent.env");
    let script = dir.path().join("consent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep ^TICKETVNC_ | sort > '{}'\necho view-only\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_server, addr) = serve_binary(
        dir.path(),
        "tls-x509plain",
        &[
            "--ticket",
            "4712",
            "--consent",
            &format!("cmd:{}", script.display()),
        ],
    );
    let xvfb = XvfbGuard::start(640, 480);
    let _viewer = tls_viewer(
        &xvfb,
        dir.path(),
        addr,
        "tigervnc-tls-x509plain",
        "X509Plain",
        &["-FullColor=1".into()],
        &[
            ("VNC_USERNAME", "anna"),
            ("VNC_PASSWORD", "correct horse battery"),
        ],
    );
    wait_for_picture(&xvfb.display_name(), "tigervnc-tls-x509plain", 0, None);
    let s = wait_session(dir.path(), "VeNCrypt/X509Plain");
    assert_eq!(s["technician"], "anna", "{s:#}");
    assert_eq!(s["ticket"], "4712", "{s:#}");
    assert_eq!(s["consent"], "accepted", "{s:#}");
    assert_eq!(
        s["rights"],
        serde_json::json!({"view": true, "keys": false, "pointer": false, "clipboard": false}),
        "{s:#}"
    );
    let env = std::fs::read_to_string(&seen).expect("the consent command ran");
    for want in [
        "TICKETVNC_TECHNICIAN=anna",
        "TICKETVNC_TICKET=4712",
        "TICKETVNC_RIGHTS=view,keys,pointer,clipboard",
    ] {
        assert!(env.contains(want), "{want} not in {env}");
    }
}

/// A wrong technician password gets nothing and is journaled with the name
/// that was tried.
#[test]
fn tls_x509plain_wrong_password_is_refused() {
    require_commands(&["Xvfb", "vncviewer"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("anna.pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    cli(
        dir.path(),
        &[
            "tech",
            "add",
            "anna",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    let (_server, addr) = serve_binary(dir.path(), "tls-x509plain-wrong", &[]);
    let xvfb = XvfbGuard::start(640, 480);
    let mut viewer = tls_viewer(
        &xvfb,
        dir.path(),
        addr,
        "tigervnc-tls-x509plain-wrong",
        "X509Plain",
        &[],
        &[("VNC_USERNAME", "anna"), ("VNC_PASSWORD", "wrong horse")],
    );
    let deadline = Instant::now() + TIMEOUT;
    let failed = loop {
        if let Some(f) = sessions_json(dir.path())
            .into_iter()
            .find(|s| s["end_reason"] == "auth failed")
        {
            break f;
        }
        assert!(Instant::now() < deadline, "no failed login journaled");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(failed["technician"], "anna", "{failed:#}");
    assert_eq!(failed["security"], "VeNCrypt/X509Plain", "{failed:#}");
    assert!(
        !sessions_json(dir.path())
            .iter()
            .any(|s| s["end_reason"].is_null()),
        "a session is running after a wrong password"
    );
    let _ = viewer.0.kill();
}

// ------------------------------------------------------------ reverse

/// The customer clicks first: `ticketvnc connect` starts before the
/// technician's `vncviewer -listen`, retries, gets through, and the viewer
/// shows the screen pixel-exact; the journal says "reverse". (No VeNCrypt
/// by default here: TigerVNC 1.12 in listen mode segfaults on any TLS
/// security type, see docs/helpdesk.md.)
#[test]
fn reverse_connection_to_a_listening_viewer() {
    use std::io::BufRead;
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import", "xdpyinfo"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(common::artefact_dir().join("reverse-server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(dir.path().join("journal.db"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .args(["connect", &format!("127.0.0.1:{port}"), "--retry-for", "60"])
        .args([
            "--source",
            "test-pattern",
            "--fps",
            "0",
            "--size",
            &format!("{W}x{H}"),
            "--ticket",
            "4713",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run ticketvnc connect");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let server = ChildGuard(child);
    let mut line = String::new();
    while !line.starts_with("ticketvnc connecting to") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "connect exited early"
        );
    }
    // The viewer starts listening only now, after the first attempts failed.
    std::thread::sleep(Duration::from_secs(2));
    let xvfb = XvfbGuard::start(640, 480);
    let vlog = std::fs::File::create(common::artefact_dir().join("tigervnc-reverse.log")).unwrap();
    let _viewer = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", xvfb.display_name())
            .arg("-listen")
            .arg(port.to_string())
            .arg(format!(
                "-X509CA={}",
                dir.path().join("config/ticketvnc/tls-cert.pem").display()
            ))
            .args([
                "-PreferredEncoding=ZRLE",
                "-AutoSelect=0",
                "-NoJPEG",
                "-FullColor=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vlog)
            .spawn()
            .expect("run vncviewer -listen"),
    );
    wait_for_picture(&xvfb.display_name(), "tigervnc-reverse", 0, None);
    let deadline = Instant::now() + TIMEOUT;
    let s = loop {
        if let Some(s) = sessions_json(dir.path())
            .into_iter()
            .find(|s| s["direction"] == "reverse")
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            sessions_json(dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s["security"], "None", "{s:#}");
    assert_eq!(s["ticket"], "4713", "{s:#}");
    drop(server);
}
