//! ticketvnc on a wlroots compositor (issue 16): a headless sway run as an
//! unprivileged user (tests/common/wayland.rs), ticketvnc started in that
//! session with `--source wayland`, and real clients:
//! - vnc-rs and TigerVNC's vncviewer (screenshot under its own Xvfb) get
//!   the screen pixel-exact, compared with grim's own capture of the
//!   output (which shows a known picture through swaybg);
//! - typing through vncdotool into foot running `cat > FILE` arrives
//!   exactly, Unicode included (keysyms the keymap gains on demand);
//! - pointer motion, clicks and the wheel reach foot, which reports them
//!   as xterm SGR mouse sequences into the same `cat`;
//! - an output mode change reaches the viewer as a new desktop size;
//! - killing the compositor stops ticketvnc with a clear error;
//! - the clipboard both ways (wlr-data-control) with TigerVNC (UTF-8,
//!   Extended Clipboard) and vncdotool (Latin-1) against wl-copy and
//!   wl-paste, and not for a view-only session;
//! - the customer's pointer is in the pixels and viewers get a dot.

mod common;

use common::drive::Drive;

use common::wayland::{write_test_png, Sway, TIMEOUT};
use common::{compare_images, require_commands, ChildGuard, XvfbGuard};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ticketvnc::rfb::PixelFormat as TvPixelFormat;
use tokio::net::TcpStream;
use vnc::{VncClient, VncConnector, VncEncoding, VncError, VncEvent, X11Event};

const W: u32 = 1280;
const H: u32 = 800;

fn tools() {
    require_commands(&["sway", "swaybg", "grim", "foot", "runuser", "convert"]);
}

fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::poll_until(what, TIMEOUT, f)
}

/// Wait until `len` (the text typed into foot so far) has not changed for
/// a second: input is sent paced, so a flood arrives over seconds.
fn settle(len: impl Fn() -> usize) {
    let (mut last, mut since) = (usize::MAX, Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        let n = len();
        if n != last {
            (last, since) = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// sway showing the test picture; waits until grim sees exactly it.
fn sway_with_picture(name: &str) -> (Sway, Vec<u32>) {
    tools();
    let png = std::env::temp_dir().join(format!("ticketvnc-wl-{name}-{}.png", std::process::id()));
    let want = write_test_png(&png, W as usize, H as usize);
    let sway = Sway::start(name, W, H, Some(&png));
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(png.with_extension("ppm"));
    let mut last = None;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(g) = sway.grim() {
            if g.2 == want {
                break;
            }
            last = Some(g);
        }
        if Instant::now() >= deadline {
            let r = match &last {
                Some((w, h, px)) => compare_images(&format!("{name}-grim"), *w, *h, &want, px),
                None => Err("grim never captured".into()),
            };
            panic!("swaybg never showed the picture: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (sway, want)
}

/// `got` (what grim and the viewer agree on) is the known picture, except
/// where the compositor drew the pointer: sway's headless output has no
/// cursor plane, so once ticketvnc's virtual pointer exists the pointer is
/// part of every capture, grim's included.
fn shows_picture(name: &str, got: &[u32], want: &[u32]) {
    let w = W as usize;
    let diff: Vec<(usize, usize)> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| (i % w, i / w))
        .collect();
    let span = |f: fn(&(usize, usize)) -> usize| {
        diff.iter().map(f).max().unwrap_or(0) - diff.iter().map(f).min().unwrap_or(0)
    };
    if got.len() != want.len() || span(|p| p.0) > 32 || span(|p| p.1) > 32 {
        let r = compare_images(&format!("{name}-picture"), w, H as usize, want, got);
        panic!("{name}: the output does not show the picture: {r:?}");
    }
}

// ------------------------------------------------------------- vnc-rs

struct RsViewer {
    client: VncClient,
    pf: TvPixelFormat,
    fb: Vec<u32>,
    w: usize,
    h: usize,
}

impl RsViewer {
    async fn connect(addr: SocketAddr, encodings: &[VncEncoding]) -> Result<RsViewer, VncError> {
        let tcp = TcpStream::connect(addr).await?;
        let mut conn =
            VncConnector::<TcpStream, std::future::Ready<Result<String, VncError>>>::new(tcp)
                .allow_shared(true);
        for e in encodings {
            conn = conn.add_encoding(*e);
        }
        let client = conn.build()?.try_start().await?.finish()?;
        Ok(RsViewer {
            client,
            pf: TvPixelFormat::NATIVE,
            fb: Vec::new(),
            w: 0,
            h: 0,
        })
    }

    fn resize(&mut self, w: usize, h: usize) {
        if (w, h) != (self.w, self.h) {
            self.w = w;
            self.h = h;
            self.fb = vec![0; w * h];
        }
    }

    fn apply(&mut self, ev: VncEvent) {
        match ev {
            VncEvent::SetResolution(s) => self.resize(s.width as usize, s.height as usize),
            VncEvent::DesktopUpdate(u) => {
                if let Some(l) = u.layout {
                    self.resize(l.width as usize, l.height as usize);
                }
            }
            VncEvent::SetPixelFormat(pf) => {
                self.pf = TvPixelFormat {
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
            VncEvent::RawImage(r, data) => {
                let bpp = self.pf.bytes_per_pixel();
                assert_eq!(data.len(), r.width as usize * r.height as usize * bpp);
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
                let mut tmp = Vec::new();
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

    /// Apply events until the framebuffer is what `sway` shows (grim).
    async fn wait_same_as_screen(&mut self, sway: &Sway, name: &str) -> Vec<u32> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut last_grab: Option<(usize, usize, Vec<u32>)> = None;
        let mut next_grab = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_grab {
                next_grab = now + Duration::from_millis(300);
                last_grab = tokio::task::block_in_place(|| sway.grim()).or(last_grab);
            }
            if let Some((w, h, px)) = &last_grab {
                if (self.w, self.h) == (*w, *h) && self.fb == *px {
                    return px.clone();
                }
            }
            if now >= deadline {
                let r = match &last_grab {
                    Some((w, h, px)) if (self.w, self.h) == (*w, *h) => {
                        compare_images(name, *w, *h, px, &self.fb)
                    }
                    Some((w, h, _)) => Err(format!(
                        "viewer is {}x{}, the output {w}x{h}",
                        self.w, self.h
                    )),
                    None => Err("grim never captured".into()),
                };
                panic!("{name}: vnc-rs never showed the Wayland output: {r:?}");
            }
            match tokio::time::timeout(Duration::from_millis(300), self.client.recv_event()).await {
                Ok(Ok(ev)) => self.apply(ev),
                Ok(Err(e)) => panic!("{name}: connection ended: {e}"),
                Err(_) => self.client.input(X11Event::Refresh).await.unwrap(),
            }
        }
    }
}

// --------------------------------------------------------- TigerVNC

/// TigerVNC under its own Xvfb shows exactly what grim grabs.
fn tiger_same_as_screen(sway: &Sway, addr: SocketAddr, name: &str) {
    require_commands(&["Xvfb", "vncviewer", "xdotool", "import"]);
    let xvfb = XvfbGuard::start(W + 200, H + 200);
    let d = xvfb.display_name();
    let log = std::fs::File::create(common::artefact_dir().join(format!("{name}-vncviewer.log")))
        .unwrap();
    let _viewer = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", &d)
            .arg(format!("127.0.0.1::{}", addr.port()))
            .args([
                "-SecurityTypes=None",
                "-PreferredEncoding=ZRLE",
                "-AutoSelect=0",
                "-NoJPEG",
                "-Shared=1",
                "-FullColor=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer"),
    );
    let x = |args: &[&str]| -> Option<Vec<u8>> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("DISPLAY", &d)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        o.status.success().then_some(o.stdout)
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let win = x(&["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"])
            .and_then(|o| String::from_utf8(o).ok())
            .and_then(|s| s.lines().next().map(str::to_owned));
        if let (Some(id), Some((w, h, px))) = (win, sway.grim()) {
            // The "Press F8" tip covers the picture for a few seconds: keep
            // looking until the window is exactly the screen.
            if let Some(rgb) = x(&["import", "-window", id.trim(), "-depth", "8", "rgb:-"])
                .filter(|b| b.len() == w * h * 3)
            {
                let shot = common::rgb_bytes_to_pixels(&rgb);
                if shot == px {
                    return;
                }
                last = Some((w, h, px, shot));
            }
        }
        if Instant::now() >= deadline {
            let r = match &last {
                Some((w, h, px, shot)) => compare_images(name, *w, *h, px, shot),
                None => Err("no vncviewer window of the output's size".into()),
            };
            panic!("{name}: vncviewer never showed the Wayland output: {r:?}");
        }
    }
}

/// vnc-rs (Raw, then ZRLE and Tight) and TigerVNC get sway's output
/// pixel-exact, the same as grim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_the_sway_output_pixel_exact() {
    let (sway, want) = sway_with_picture("exact");
    let server = sway.ticketvnc("exact-ticketvnc", &["--source", "wayland"]);
    for (enc, name) in [
        (VncEncoding::Raw, "wl-exact-raw"),
        (VncEncoding::Zrle, "wl-exact-zrle"),
        (VncEncoding::Tight, "wl-exact-tight"),
    ] {
        let mut rs = RsViewer::connect(server.addr, &[enc])
            .await
            .expect("vnc-rs connects");
        let got = rs.wait_same_as_screen(&sway, name).await;
        // And grim saw the known picture: nothing was lost on either side.
        shows_picture(name, &got, &want);
    }
    tokio::task::block_in_place(|| tiger_same_as_screen(&sway, server.addr, "wl-exact-tiger"));
    assert!(server.process.alive(), "{}", server.process.log_text());
}

/// A change on the screen (a foot window opening over the picture) reaches
/// a connected viewer through copy_with_damage, and an output mode change
/// reaches it as a new desktop size with the right picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_and_output_resize_reach_the_viewer() {
    let (mut sway, want) = sway_with_picture("resize");
    let server = sway.ticketvnc("resize-ticketvnc", &["--source", "wayland"]);
    let mut rs = RsViewer::connect(
        server.addr,
        &[VncEncoding::Zrle, VncEncoding::DesktopSizePseudo],
    )
    .await
    .expect("vnc-rs connects");
    let before = rs.wait_same_as_screen(&sway, "wl-before").await;
    shows_picture("wl-before", &before, &want);
    let file = sway.dir.path().join("idle.txt");
    sway.spawn(
        "foot",
        &[
            "foot",
            "-o",
            "colors.background=102030",
            "sh",
            "-c",
            &format!("cat > {}", file.display()),
        ],
    );
    poll("foot's window", || {
        sway.swaymsg(&["-t", "get_tree"])
            .contains("\"app_id\": \"foot\"")
            .then_some(())
    });
    let changed = rs.wait_same_as_screen(&sway, "wl-foot").await;
    let differ = changed.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(
        differ > 10_000,
        "the foot window never showed ({differ} pixels changed)"
    );

    sway.swaymsg(&["output", "HEADLESS-1", "mode", "1024x768"]);
    let after = rs.wait_same_as_screen(&sway, "wl-resized").await;
    assert_eq!((rs.w, rs.h), (1024, 768));
    assert_eq!(after.len(), 1024 * 768);
    assert!(server.process.alive(), "{}", server.process.log_text());
    let log = server.process.log_text();
    assert!(log.contains("Wayland output resized"), "{log}");
}

/// In a Wayland session (WAYLAND_DISPLAY set, no DISPLAY) `serve` without
/// `--source` serves the compositor, and a viewer gets its pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_source_is_wayland_in_a_wayland_session() {
    let (sway, _) = sway_with_picture("auto");
    let server = sway.ticketvnc("auto-ticketvnc", &[]);
    let mut rs = RsViewer::connect(server.addr, &[VncEncoding::Raw])
        .await
        .expect("vnc-rs connects");
    rs.wait_same_as_screen(&sway, "wl-auto").await;
    let log = server.process.log_text();
    assert!(log.contains("Wayland capture ready"), "{log}");
}

// -------------------------------------------------------- vncdotool

/// foot running `sh -c SCRIPT` in the session, focused.
fn foot(sway: &mut Sway, script: &str) {
    sway.spawn("foot", &["foot", "sh", "-c", script]);
    poll("foot's window to be focused", || {
        let tree = sway.swaymsg(&["-t", "get_tree"]);
        // The focused node is the foot window.
        tree.split("\"focused\": true")
            .nth(1)
            .is_some_and(|rest| {
                rest.split("\"focused\"")
                    .next()
                    .unwrap_or("")
                    .contains("\"app_id\": \"foot\"")
            })
            .then_some(())
    });
}

/// Typing through vncdotool into foot: ASCII with Shift, Unicode keysyms
/// (Latin-1, the Euro sign, CJK, an emoji) that the keymap gains on the
/// fly, and Return, arrive in `cat > FILE` exactly.
#[test]
fn typing_reaches_foot_unicode_included() {
    tools();
    let mut sway = Sway::start("typing", W, H, None);
    let file = sway.dir.path().join("typed.txt");
    foot(&mut sway, &format!("cat > {}", file.display()));
    let server = sway.ticketvnc("typing-ticketvnc", &["--source", "wayland"]);
    let mut d = Drive::start(server.addr);
    d.run(&["type Hello, World! {ok} ~|", "key enter"]);
    // Raw keysyms: ü (Latin-1), € (0x20ac), 中 and 😀 (Unicode keysyms).
    let mut cmds = vec![
        "keysym 0xfc",
        "keysym 0x20ac",
        "keysym 0x1004e2d",
        "keysym 0x101f600",
    ];
    // More distinct symbols than the keymap has free keys: old ones are
    // given up and typed again later.
    let many: Vec<String> = (0..120)
        .map(|i| format!("keysym 0x{:x}", 0x1000400 + i))
        .collect();
    cmds.extend(many.iter().map(String::as_str));
    cmds.extend(["keysym 0x1004e2d", "key enter"]);
    d.run(&cmds);
    let many_text: String = (0..120)
        .map(|i| char::from_u32(0x400 + i).unwrap())
        .collect();
    let want = format!("Hello, World! {{ok}} ~|\nü€中😀{many_text}中\n");
    let got = poll("the typed text in foot", || {
        let t = std::fs::read_to_string(&file).unwrap_or_default();
        (t == want || t.len() >= want.len()).then_some(t)
    });
    assert_eq!(got, want, "{}", server.process.log_text());
}

/// Pointer motion, the three buttons and the wheel reach foot, which
/// reports them (xterm SGR any-motion tracking) to `cat`: the reported
/// cells follow the pointer on both axes and the buttons are the ones sent.
#[test]
fn pointer_reaches_foot() {
    tools();
    let mut sway = Sway::start("pointer", W, H, None);
    let file = sway.dir.path().join("mouse.txt");
    foot(
        &mut sway,
        &format!(
            "stty raw -echo; printf '\\033[?1003h\\033[?1006h'; exec cat > {}",
            file.display()
        ),
    );
    let server = sway.ticketvnc("pointer-ticketvnc", &["--source", "wayland"]);
    let mut d = Drive::start(server.addr);
    // Let foot switch tracking on before the first move.
    std::thread::sleep(Duration::from_millis(500));
    d.run(&["move 100 100", "click 1"]);
    d.run(&["move 640 400", "click 2"]);
    d.run(&["move 900 600", "click 3"]);
    d.run(&["move 1200 760", "click 4", "click 5"]);
    let events = poll("the mouse reports in foot", || {
        let t = std::fs::read_to_string(&file).unwrap_or_default();
        let ev = parse_sgr(&t);
        (ev.iter().filter(|e| e.0 == 65).count() >= 1).then_some(ev)
    });
    let at = |b: u32| -> Vec<(u32, u32)> {
        events
            .iter()
            .filter(|e| e.0 == b && e.3)
            .map(|e| (e.1, e.2))
            .collect()
    };
    let (left, middle, right) = (at(0), at(1), at(2));
    let (up, down) = (at(64), at(65));
    assert!(
        !left.is_empty() && !middle.is_empty() && !right.is_empty(),
        "{events:?}"
    );
    assert!(!up.is_empty() && !down.is_empty(), "{events:?}");
    // Cells grow with the pointer position on both axes.
    let (a, b, r, c) = (left[0], middle[0], right[0], up[0]);
    assert!(a.0 < b.0 && b.0 < r.0 && r.0 < c.0, "{events:?}");
    assert!(a.1 < b.1 && b.1 < r.1 && r.1 < c.1, "{events:?}");
    assert_eq!(up[0], down[0]);
    // The cells are where the pixels are: one cell size fits all three.
    let cw = (c.0 - a.0) as f64 / (1200.0 - 100.0);
    let ch = (c.1 - a.1) as f64 / (760.0 - 100.0);
    let expect_b = (a.0 as f64 + 540.0 * cw, a.1 as f64 + 300.0 * ch);
    assert!(
        (b.0 as f64 - expect_b.0).abs() <= 1.0 && (b.1 as f64 - expect_b.1).abs() <= 1.0,
        "middle click at {b:?}, expected near {expect_b:?}: {events:?}"
    );
    // Motion was reported between the clicks.
    assert!(events.iter().any(|e| e.0 & 32 != 0), "{events:?}");
}

/// xterm SGR mouse reports: (button code, column, row, press).
fn parse_sgr(s: &str) -> Vec<(u32, u32, u32, bool)> {
    s.split("\x1b[<")
        .skip(1)
        .filter_map(|r| {
            let end = r.find(['M', 'm'])?;
            let press = &r[end..end + 1] == "M";
            let mut f = r[..end].split(';').map(|v| v.parse::<u32>().ok());
            Some((f.next()??, f.next()??, f.next()??, press))
        })
        .collect()
}

/// Killing the compositor stops ticketvnc with a clear error and a
/// non-zero status (the session is gone), and the viewer is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compositor_death_stops_ticketvnc() {
    let (mut sway, _) = sway_with_picture("death");
    let mut server = sway.ticketvnc("death-ticketvnc", &["--source", "wayland"]);
    let mut rs = RsViewer::connect(server.addr, &[VncEncoding::Raw])
        .await
        .expect("vnc-rs connects");
    rs.wait_same_as_screen(&sway, "wl-death-before").await;
    sway.kill();
    let status = tokio::task::block_in_place(|| server.process.wait(TIMEOUT))
        .expect("ticketvnc kept running after its compositor died");
    let log = server.process.log_text();
    assert!(!status.success(), "exited successfully: {status}\n{log}");
    assert!(log.contains("the Wayland compositor is gone"), "{log}");
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match rs.client.recv_event().await {
                Err(_) | Ok(VncEvent::Error(_)) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the viewer was not disconnected");
}

/// Issue 16, faults: a compositor that hangs (SIGSTOP) looks like a still
/// screen (the pending copy is not answered). ticketvnc tells the two
/// apart by the compositor not answering on its socket, says so within
/// seconds, keeps serving, and says when it answers again. Input meanwhile
/// (enough pointer motion to fill the socket) waits for the compositor and
/// arrives in order; a flood beyond the backlog's bound loses presses, not
/// releases, so nothing is left stuck; the picture goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_compositor_is_logged_and_survived() {
    tools();
    let mut sway = Sway::start("stall", W, H, None);
    let file = sway.dir.path().join("typed.txt");
    foot(&mut sway, &format!("cat > {}", file.display()));
    let server = sway.ticketvnc("stall-ticketvnc", &["--source", "wayland"]);
    let log = || server.process.log_text();
    let typed = || std::fs::read_to_string(&file).unwrap_or_default();
    // sway's and foot's own words, for a failure after the flood.
    let (foot_log, sway_log) = (
        sway.dir.path().join("foot.log"),
        sway.dir.path().join("sway.log"),
    );
    let clients = |_: &Sway| {
        let s = std::fs::read_to_string(&sway_log).unwrap_or_default();
        format!(
            "sway (last lines):\n{}\nfoot:\n{}",
            s.lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(&foot_log).unwrap_or_default()
        )
    };
    let mut d = Drive::start(server.addr);
    d.run(&["type before", "key enter"]);
    poll("the first line in foot", || {
        (typed() == "before\n").then_some(())
    });

    sway.signal("STOP");
    let stopped = Instant::now();
    poll("ticketvnc to notice the hang", || {
        log().contains("Wayland compositor stalled").then_some(())
    });
    let noticed = stopped.elapsed();
    // The technician goes on moving the pointer and typing.
    let moves: Vec<String> = (0..3000)
        .map(|i| format!("move {} {}", 10 + i % 600, 10 + (i / 600) * 50))
        .collect();
    d.run(&moves.iter().map(String::as_str).collect::<Vec<_>>());
    d.run(&["type during", "key enter"]);
    sway.signal("CONT");
    assert!(
        noticed < Duration::from_secs(15),
        "noticed after {noticed:?}"
    );
    poll("ticketvnc to see the compositor answer again", || {
        log()
            .contains("the Wayland compositor answers again")
            .then_some(())
    });
    poll("the line typed during the hang", || {
        (typed() == "before\nduring\n").then_some(())
    });

    // A flood while it hangs: bounded, presses dropped, nothing stuck.
    sway.signal("STOP");
    // Shift held around each y: a lost release would shift "after".
    let flood: Vec<&str> = std::iter::repeat_n(["key x", "key shift-y"], 3000)
        .flatten()
        .collect();
    d.run(&flood);
    // ticketvnc keeps the flood in its queue (at most a few dozen events
    // wait in the socket) and says so while sway hangs.
    poll("ticketvnc to say presses are dropped", || {
        log().contains("presses are dropped").then_some(())
    });
    sway.signal("CONT");
    let deadline = Instant::now() + TIMEOUT;
    while !log().contains("reads its input again") {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the backlog to be read; {} characters typed\n{}\n{}",
            typed().len(),
            log(),
            clients(&sway)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The backlog is released paced (about 1000 events a second), and
    // presses are dropped while it fills the queue: the technician waits
    // until the terminal settles, then types on.
    settle(|| typed().len());
    // The flood ends its own line: a terminal keeps at most 4095
    // characters of a line (the tty's canonical mode) and drops the rest
    // but the newline, so "after" typed on the flood's line was lost
    // whenever more than about 4090 flood keys arrived.
    d.run(&["key enter", "type after", "key enter"]);
    // foot draws every key of the flood (software rendering): on a loaded
    // machine that takes longer than one poll's timeout, so wait while the
    // text keeps growing and fail only when it stops short of the line.
    let got = {
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let t = typed();
            if t.ends_with("after\n") {
                break t;
            }
            if t.len() != last {
                (last, since) = (t.len(), Instant::now());
            }
            assert!(
                since.elapsed() < TIMEOUT,
                "the text stopped growing short of the line typed after the hangs: \
                 ...{:?}\n{}\n{}",
                t.chars()
                    .skip(t.chars().count().saturating_sub(200))
                    .collect::<String>(),
                log(),
                clients(&sway)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let flooded = &got["before\nduring\n".len()..got.len() - "\nafter\n".len()];
    // 6000 keys, 4096 events kept: some presses were dropped.
    assert!(
        !flooded.is_empty() && flooded.len() < 6000,
        "{} flood keys arrived",
        flooded.len()
    );
    eprintln!("{} of 6000 flood keys arrived", flooded.len());
    assert!(
        flooded.chars().all(|c| c == 'x' || c == 'y'),
        "only the flood's keys, nothing shifted or stuck: {flooded:?}"
    );
    drop(d);
    let mut rs = RsViewer::connect(server.addr, &[VncEncoding::Raw])
        .await
        .expect("vnc-rs connects");
    rs.wait_same_as_screen(&sway, "wl-after-stall").await;
    assert!(server.process.alive(), "ticketvnc exited:\n{}", log());
    assert!(!log().contains("input is dropped"), "{}", log());
}

/// Issue 16: a viewer sending keys as fast as the network allows (a
/// script, a paste typed as keys) while the compositor runs. sway forwards
/// keys to the focused client as they come, and libwayland-server 1.21
/// disconnects a client whose 4 KiB buffer overflows: unpaced, foot was
/// disconnected or stopped taking keys in 3 of 3 runs (wayvnc: 3 of 3).
/// ticketvnc paces input (1000 events a second after a burst of 32), so
/// the terminal stays, takes what was queued, and takes the next line.
#[test]
fn a_key_flood_does_not_close_the_customers_terminal() {
    tools();
    let mut sway = Sway::start("flood", W, H, None);
    let file = sway.dir.path().join("typed.txt");
    foot(&mut sway, &format!("cat > {}", file.display()));
    let server = match std::env::var("TICKETVNC_FLOOD_BIN") {
        Ok(b) => sway.ticketvnc_bin("flood-ticketvnc", &b, &["--source", "wayland"]),
        Err(_) => sway.ticketvnc("flood-ticketvnc", &["--source", "wayland"]),
    };
    let typed = || std::fs::read_to_string(&file).unwrap_or_default();
    let foot_log = sway.dir.path().join("foot.log");
    let mut d = Drive::start(server.addr);
    d.run(&["type before", "key enter"]);
    poll("the first line in foot", || {
        (typed() == "before\n").then_some(())
    });
    let flood: Vec<&str> = std::iter::repeat_n(["key x", "key shift-y"], 3000)
        .flatten()
        .collect();
    d.run(&flood);
    // The technician waits until the terminal settles, then types on.
    settle(|| typed().len());
    d.run(&["key enter", "type after", "key enter"]);
    let got = poll("the line typed after the flood", || {
        let t = typed();
        let disconnected = std::fs::read_to_string(&foot_log)
            .unwrap_or_default()
            .contains("disconnected");
        assert!(!disconnected, "foot was disconnected by sway");
        t.ends_with("after\n").then_some(t)
    });
    let flooded = &got["before\n".len()..got.len() - "\nafter\n".len()];
    eprintln!("{} of 6000 flood keys arrived", flooded.len());
    assert!(
        !flooded.is_empty() && flooded.chars().all(|c| c == 'x' || c == 'y'),
        "only the flood's keys, nothing shifted or stuck: {flooded:?}"
    );
    assert!(server.process.alive(), "ticketvnc exited");
}

// --------------------------------------------------- wayvnc side by side

/// CPU time (user + system) of a process so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after the name: state is 0, utime 11, stime 12 (clock ticks).
    let hz = 100; // sysconf(_SC_CLK_TCK) on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One server's numbers: (median, p90 latency, CPU % while changing, CPU %
/// idle with a viewer).
fn measure(sway: &Sway, addr: SocketAddr, pid: u32, fifo: &mut std::fs::File) -> String {
    use common::flowclient::{FlowClient, Mode, Watch};
    let c = FlowClient::connect(addr, Mode::Pull);
    let (w, h) = c.size();
    assert_eq!((w as u32, h as u32), (sway.width, sway.height));
    let watch = |red| Watch {
        x: 400,
        y: 250,
        w: 480,
        h: 300,
        red,
    };
    let mut lat = Vec::new();
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    const ROUNDS: usize = 40;
    for i in 0..ROUNDS * 2 + 2 {
        let red = i % 2 == 0;
        c.watch(watch(red));
        let start = Instant::now();
        writeln!(fifo, "{}", if red { "#ff0000" } else { "#000000" }).unwrap();
        fifo.flush().unwrap();
        let seen = c.wait_seen(TIMEOUT).expect("the change reaches the viewer");
        // The first two rounds warm up.
        if i >= 2 {
            lat.push(seen.saturating_duration_since(start));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let busy_cpu = (cpu_time(pid) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let cpu1 = cpu_time(pid);
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = (cpu_time(pid) - cpu1).as_secs_f64() / t1.elapsed().as_secs_f64() * 100.0;
    let med = percentile(&mut lat, 0.5);
    let p90 = percentile(&mut lat, 0.9);
    format!(
        "{:.1} ms | {:.1} ms | {busy_cpu:.1} % | {idle_cpu:.1} % | {}",
        med.as_secs_f64() * 1000.0,
        p90.as_secs_f64() * 1000.0,
        c.stats().updates
    )
}

/// Not a test: ticketvnc and wayvnc (Debian's 0.5) on the same headless
/// sway, one at a time, with the same viewer (tests/common/flowclient.rs:
/// Raw, an incremental request after every update). A foot window turns
/// red or black on command (OSC 11 written through a FIFO); the time from
/// the command to the viewer seeing the watched rectangle change is the
/// latency (compositor + capture + encoding + loopback), and the server's
/// CPU time over the run and over 5 s idle with the viewer connected is
/// its CPU. `TICKETVNC_BENCH_BIN` picks the ticketvnc binary (e.g. a
/// release build). Run:
/// `cargo test --test wayland_sway -- --ignored --nocapture wayvnc_side_by_side`
#[test]
#[ignore]
fn wayvnc_side_by_side() {
    tools();
    require_commands(&["wayvnc", "mkfifo"]);
    let mut sway = Sway::start("bench", W, H, None);
    let fifo_path = sway.dir.path().join("colour.fifo");
    sway.run(&["mkfifo", "-m", "0600", fifo_path.to_str().unwrap()])
        .expect("mkfifo");
    let script = format!(
        "printf '\\033[?25l'; exec 3<{}; while read c <&3; do printf '\\033]11;%s\\007' \"$c\"; done",
        fifo_path.display()
    );
    foot(&mut sway, &script);
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo_path)
        .expect("open the FIFO");
    let mut rows = Vec::new();
    let bin = std::env::var("TICKETVNC_BENCH_BIN").ok();
    {
        let server = match &bin {
            Some(b) => sway.ticketvnc_bin("bench-ticketvnc", b, &["--source", "wayland"]),
            None => sway.ticketvnc("bench-ticketvnc", &["--source", "wayland"]),
        };
        let pid = server.process.pid().unwrap();
        rows.push(format!(
            "| ticketvnc (--max-fps 60, default) | {} |",
            measure(&sway, server.addr, pid, &mut fifo)
        ));
    }
    for fps in ["30", "60"] {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pid = sway.spawn(
            &format!("wayvnc-{fps}"),
            &["wayvnc", "-f", fps, "127.0.0.1", &port.to_string()],
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        poll("wayvnc to listen", || {
            std::net::TcpStream::connect(addr).ok()
        });
        let note = if fps == "30" { " (default)" } else { "" };
        rows.push(format!(
            "| wayvnc 0.5 (-f {fps}{note}) | {} |",
            measure(&sway, addr, pid, &mut fifo)
        ));
        let _ = Command::new("kill").arg(pid.to_string()).status();
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("| server | latency median | latency p90 | CPU while changing | CPU idle, viewer connected | updates |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

// ------------------------------------------------------------ clipboard

/// `wl-paste` in the session (the regular selection, or the primary one).
fn wl_paste(sway: &Sway, primary: bool) -> Option<String> {
    let mut a = vec!["wl-paste", "--no-newline"];
    if primary {
        a.push("--primary");
    }
    String::from_utf8(sway.run(&a)?).ok()
}

/// The Latin-1 bytes classic cut text carries for `s` (all of it Latin-1).
fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(c as u32).unwrap()).collect()
}

/// TigerVNC vncviewer on X display `vd` connected to `addr` (security None,
/// shared), and its window once shown; its log is `NAME-vncviewer.log`.
fn tigervnc_window(vd: &str, addr: SocketAddr, name: &str) -> (ChildGuard, String) {
    let log = std::fs::File::create(common::artefact_dir().join(format!("{name}-vncviewer.log")))
        .unwrap();
    let viewer = ChildGuard(
        Command::new("vncviewer")
            .env("DISPLAY", vd)
            .arg(format!("127.0.0.1::{}", addr.port()))
            .args(["-SecurityTypes=None", "-Shared=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run vncviewer"),
    );
    let win = poll("vncviewer's window", || {
        let o = x_run(
            vd,
            &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
        )?;
        String::from_utf8(o).ok()?.lines().next().map(str::to_owned)
    });
    (viewer, win)
}

/// `args` on the X display `display`; its stdout on success.
fn x_run(display: &str, args: &[&str]) -> Option<Vec<u8>> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("DISPLAY", display)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

/// `xclip` owning the CLIPBOARD of `display` with `text` until killed.
fn xclip_own(display: &str, text: &str) -> ChildGuard {
    let mut child = Command::new("xclip")
        .args(["-selection", "clipboard", "-quiet", "-i"])
        .env("DISPLAY", display)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run xclip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    ChildGuard(child)
}

/// UTF-8 text beyond Latin-1 (ü € 中 😀) both ways with TigerVNC (the
/// Extended Clipboard) under its own Xvfb: the technician's X CLIPBOARD
/// (xclip) reaches the Wayland selection and primary selection (wl-paste,
/// as the customer's applications see them), and text copied with wl-copy
/// in the session reaches the technician's X CLIPBOARD.
#[test]
fn clipboard_both_ways_with_tigervnc() {
    tools();
    require_commands(&[
        "wl-copy",
        "wl-paste",
        "Xvfb",
        "vncviewer",
        "xdotool",
        "xclip",
    ]);
    let mut sway = Sway::start("clip-tiger", W, H, None);
    let server = sway.ticketvnc("clip-tiger-ticketvnc", &["--source", "wayland"]);
    let xvfb = XvfbGuard::start(800, 600);
    let vd = xvfb.display_name();
    let (_viewer, win) = tigervnc_window(&vd, server.addr, "wl-clip-tiger");
    // TigerVNC takes and offers the clipboard only while its window has
    // the focus (there is no window manager to give it).
    x_run(&vd, &["xdotool", "windowfocus", &win]).expect("focus the viewer");

    // Technician to customer.
    let text = "Grüße ü € 中 😀\nzweite Zeile";
    let _tech = xclip_own(&vd, text);
    poll("the technician's text in the Wayland selection", || {
        (wl_paste(&sway, false)? == text).then_some(())
    });
    assert_eq!(
        wl_paste(&sway, true).as_deref(),
        Some(text),
        "the primary selection"
    );

    // Customer to technician.
    let back = "Kunde: 5 € — 中文 😀 ü";
    sway.spawn("wl-copy", &["wl-copy", "--foreground", "--", back]);
    poll(
        "the customer's text at the technician's X CLIPBOARD",
        || {
            let o = x_run(&vd, &["xclip", "-o", "-selection", "clipboard"])?;
            (String::from_utf8(o).ok()? == back).then_some(())
        },
    );
    assert!(server.process.alive(), "{}", server.process.log_text());
    let log = server.process.log_text();
    assert!(log.contains("Wayland clipboard connected"), "{log}");
    assert!(
        !log.contains("Grüße") && !log.contains("Kunde"),
        "clipboard contents in the log:\n{log}"
    );
}

/// Classic cut text (vncdotool, Latin-1) both ways, with rights: a
/// session the customer's consent made view-only neither gets the
/// customer's clipboard nor sets it, while a full session on the same
/// server does both; an application's text larger than the limit, or a
/// selection with no text type, is not sent, and the next text is. `wl-paste --watch` records every selection
/// the session saw.
#[test]
fn clipboard_with_vncdotool_and_view_only() {
    tools();
    require_commands(&["wl-copy", "wl-paste"]);
    let mut sway = Sway::start("clip-rights", W, H, None);
    // The consent program makes sessions view-only while a file exists.
    let flag = sway.dir.path().join("view-only-please");
    let consent = sway.dir.path().join("consent.sh");
    std::fs::write(
        &consent,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo view-only; fi\nexit 0\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &consent,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(&flag, "").unwrap();
    let watch = sway.dir.path().join("selections.txt");
    sway.spawn(
        "wl-paste-watch",
        &[
            "wl-paste",
            "--watch",
            "sh",
            "-c",
            &format!(
                "cat >> '{}'; echo '<end>' >> '{}'",
                watch.display(),
                watch.display()
            ),
        ],
    );
    let consent_arg = format!("cmd:{}", consent.display());
    let server = sway.ticketvnc(
        "clip-rights-ticketvnc",
        &["--source", "wayland", "--consent", &consent_arg],
    );
    let mut view_only = Drive::start(server.addr);
    std::fs::remove_file(&flag).unwrap();
    let mut full = Drive::start(server.addr);

    // Customer to technician: only the full session gets it.
    sway.spawn(
        "wl-copy-1",
        &["wl-copy", "--foreground", "--", "Preis: 5 € für Kaffee"],
    );
    let want = latin1("Preis: 5 EUR für Kaffee");
    poll("the customer's text at the full viewer", || {
        full.cuts().contains(&want).then_some(())
    });
    view_only.run(&["refresh"]);
    assert!(
        view_only.cuts().is_empty(),
        "a view-only session got the customer's clipboard"
    );

    // Technician to customer: the view-only session's text never becomes
    // the selection; the full session's does.
    view_only.run(&["paste view-only must not paste", "refresh"]);
    full.run(&["paste Grüße aus Köln: ä"]);
    poll("the full viewer's text in the Wayland selection", || {
        (wl_paste(&sway, false)? == "Grüße aus Köln: ä").then_some(())
    });
    let seen = poll("wl-paste --watch to see the viewer's text", || {
        let t = std::fs::read_to_string(&watch).ok()?;
        t.contains("Grüße aus Köln: ä").then_some(t)
    });
    assert!(
        !seen.contains("view-only must not paste"),
        "a view-only session set the selection: {seen}"
    );

    // More than the limit (1 MiB) from an application: not sent; the
    // next copy is.
    sway.spawn(
        "wl-copy-big",
        &[
            "sh",
            "-c",
            "head -c 1100000 /dev/zero | tr '\\0' a | exec wl-copy --foreground",
        ],
    );
    poll("the large text in the Wayland selection", || {
        (wl_paste(&sway, false)?.len() == 1_100_000).then_some(())
    });
    poll("ticketvnc to refuse the large text", || {
        server
            .process
            .log_text()
            .contains("larger than 1048576 bytes")
            .then_some(())
    });
    sway.spawn("wl-copy-2", &["wl-copy", "--foreground", "--", "klein"]);
    poll("the small text after the large one", || {
        full.cuts().contains(&b"klein".to_vec()).then_some(())
    });
    assert!(
        full.cuts().iter().all(|c| c.len() < 1_000_000),
        "the large text reached the viewer"
    );
    // A selection with no text type (an image) is not sent; the next text is.
    sway.spawn(
        "wl-copy-image",
        &[
            "wl-copy",
            "--foreground",
            "--type",
            "image/png",
            "--",
            "not a picture",
        ],
    );
    poll("the image in the Wayland selection", || {
        let t = sway.run(&["wl-paste", "--list-types"])?;
        String::from_utf8_lossy(&t)
            .contains("image/png")
            .then_some(())
    });
    sway.spawn("wl-copy-3", &["wl-copy", "--foreground", "--", "danach"]);
    poll("the text after the image", || {
        full.cuts().contains(&b"danach".to_vec()).then_some(())
    });
    assert!(
        !full.cuts().contains(&b"not a picture".to_vec()),
        "an image/png selection reached the viewer as text"
    );
    view_only.run(&["refresh"]);
    assert!(view_only.cuts().is_empty(), "{:?}", view_only.cuts());
    view_only.quit();
    full.quit();
    assert!(server.process.alive(), "{}", server.process.log_text());
}

/// Not a test: what wayvnc (Debian's 0.5) does with the clipboard, with
/// the same clients as `clipboard_with_vncdotool_and_view_only`
/// (docs/wayland.md). Run:
/// `cargo test --test wayland_sway -- --ignored --nocapture wayvnc_clipboard`
#[test]
#[ignore]
fn wayvnc_clipboard() {
    tools();
    require_commands(&["wayvnc", "wl-copy", "wl-paste"]);
    let mut sway = Sway::start("wayvnc-clip", W, H, None);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    sway.spawn("wayvnc", &["wayvnc", "127.0.0.1", &port.to_string()]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    poll("wayvnc to listen", || {
        std::net::TcpStream::connect(addr).ok()
    });
    let mut d = Drive::start(addr);
    d.run(&["paste Grüße aus Köln: ä", "refresh"]);
    let raw = |primary: bool| {
        let mut a = vec!["wl-paste", "--no-newline"];
        if primary {
            a.push("--primary");
        }
        sway.run(&a)
    };
    let in_wayland = common::poll_until("wl-paste", Duration::from_secs(10), || raw(false));
    println!("viewer -> Wayland selection (bytes): {in_wayland:x?}");
    println!("viewer -> primary selection (bytes): {:x?}", raw(true));
    sway.spawn(
        "wl-copy",
        &["wl-copy", "--foreground", "--", "Preis: 5 € für Kaffee"],
    );
    std::thread::sleep(Duration::from_secs(3));
    d.run(&["refresh"]);
    println!("Wayland selection -> viewer (bytes): {:x?}", d.cuts());
    sway.spawn(
        "wl-copy-primary",
        &["wl-copy", "--primary", "--foreground", "--", "nur primary"],
    );
    std::thread::sleep(Duration::from_secs(3));
    d.run(&["refresh"]);
    println!("after a primary selection -> viewer: {:?}", d.cuts().len());
    d.quit();
}

// --------------------------------------------------------------- cursor

/// The customer's pointer on wlroots: the compositor paints it into the
/// captured pixels (screencopy's overlay_cursor), and viewers that draw
/// the cursor themselves get a 5x5 dot (hotspot in the middle) for their
/// own mouse instead of a second arrow. The viewer moves the pointer over
/// the picture: its framebuffer then shows the compositor's pointer there,
/// exactly as grim sees the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_pointer_is_in_the_pixels_and_viewers_get_a_dot() {
    let (sway, want) = sway_with_picture("cursor");
    let server = sway.ticketvnc("cursor-ticketvnc", &["--source", "wayland"]);
    let mut rs = RsViewer::connect(server.addr, &[VncEncoding::Raw, VncEncoding::CursorPseudo])
        .await
        .expect("vnc-rs connects");
    let (px, py) = (600u16, 400u16);
    rs.client
        .input(X11Event::PointerEvent((px, py, 0).into()))
        .await
        .unwrap();
    let mut cursor = None;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // The pointer drawn by the compositor near (px, py), and the dot.
    let near = |fb: &[u32]| {
        (0..32usize).any(|dy| {
            (0..32usize).any(|dx| {
                let i = (py as usize + dy) * W as usize + px as usize + dx;
                fb[i] != want[i]
            })
        })
    };
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dot cursor ({cursor:?}) or no pointer at {px},{py} in the pixels"
        );
        if cursor.is_some() && rs.fb.len() == want.len() && near(&rs.fb) {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), rs.client.recv_event()).await {
            Ok(Ok(VncEvent::SetCursor(r, data))) => {
                let mask: Vec<bool> = data.chunks_exact(4).map(|p| p[3] != 0).collect();
                let colour: Vec<u32> = data
                    .chunks_exact(4)
                    .map(|p| u32::from_le_bytes([p[0], p[1], p[2], 0]))
                    .collect();
                cursor = Some((r.x, r.y, r.width, r.height, mask, colour));
            }
            Ok(Ok(ev)) => rs.apply(ev),
            Ok(Err(e)) => panic!("connection ended: {e}"),
            Err(_) => rs.client.input(X11Event::Refresh).await.unwrap(),
        }
    }
    let (hx, hy, cw, ch, mask, colour) = cursor.unwrap();
    assert_eq!((hx, hy, cw, ch), (2, 2, 5, 5), "the dot and its hotspot");
    assert_eq!(mask.iter().filter(|m| **m).count(), 21, "{mask:?}");
    assert_eq!(colour[12], 0xffffff, "a white centre");
    assert_eq!(colour[1], 0, "a black outline");
    // And the pixels are the compositor's: what grim sees, nothing added.
    let got = rs.wait_same_as_screen(&sway, "wl-cursor").await;
    assert!(near(&got), "grim shows no pointer at {px},{py}");
    assert!(server.process.alive(), "{}", server.process.log_text());
}

/// Not a test: what wayvnc (Debian's 0.5) sends for the cursor, without
/// and with `--render-cursor`, to the viewer of
/// `customer_pointer_is_in_the_pixels_and_viewers_get_a_dot`
/// (docs/wayland.md). Run:
/// `cargo test --test wayland_sway -- --ignored --nocapture wayvnc_cursor`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn wayvnc_cursor() {
    require_commands(&["wayvnc"]);
    let (mut sway, want) = sway_with_picture("wayvnc-cursor");
    for render in [false, true] {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut args = vec!["wayvnc"];
        if render {
            args.push("--render-cursor");
        }
        let p = port.to_string();
        args.extend_from_slice(&["127.0.0.1", &p]);
        let pid = sway.spawn(&format!("wayvnc-{render}"), &args);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        poll("wayvnc to listen", || {
            std::net::TcpStream::connect(addr).ok()
        });
        let mut rs = RsViewer::connect(addr, &[VncEncoding::Raw, VncEncoding::CursorPseudo])
            .await
            .expect("vnc-rs connects");
        rs.client
            .input(X11Event::PointerEvent((600, 400, 0).into()))
            .await
            .unwrap();
        let mut cursors = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < end {
            match tokio::time::timeout(Duration::from_millis(300), rs.client.recv_event()).await {
                Ok(Ok(VncEvent::SetCursor(r, d))) => {
                    cursors.push((r, d.chunks_exact(4).filter(|p| p[3] != 0).count()))
                }
                Ok(Ok(ev)) => rs.apply(ev),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => rs.client.input(X11Event::Refresh).await.unwrap(),
            }
        }
        let differ = rs.fb.iter().zip(&want).filter(|(a, b)| a != b).count();
        let grim = tokio::task::block_in_place(|| sway.grim()).unwrap();
        println!(
            "wayvnc render-cursor={render}: cursor messages {cursors:?}; pixels differing from \
             the picture {differ}; same as grim: {}",
            rs.fb == grim.2
        );
        let _ = Command::new("kill").arg(pid.to_string()).status();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// TigerVNC draws the cursor locally: over its window the technician's
/// own pointer is the dot ticketvnc sends (read back with XFixes on the
/// viewer's display), not an invisible or a second arrow cursor.
#[test]
fn tigervnc_shows_a_dot_for_its_own_pointer() {
    tools();
    require_commands(&["Xvfb", "vncviewer", "xdotool"]);
    let sway = Sway::start("cursor-tiger", W, H, None);
    let server = sway.ticketvnc("cursor-tiger-ticketvnc", &["--source", "wayland"]);
    let xvfb = XvfbGuard::start(W + 200, H + 200);
    let vd = xvfb.display_name();
    let (_viewer, win) = tigervnc_window(&vd, server.addr, "wl-cursor-tiger");
    let cursor = poll("TigerVNC's cursor to be the dot", || {
        // Keep the pointer over the window (it moves the customer's too).
        x_run(
            &vd,
            &["xdotool", "mousemove", "--window", &win, "300", "200"],
        )?;
        use x11rb::protocol::xfixes::ConnectionExt as _;
        let (conn, _) = x11rb::connect(Some(&vd)).ok()?;
        conn.xfixes_query_version(5, 0).ok()?.reply().ok()?;
        let c = conn.xfixes_get_cursor_image().ok()?.reply().ok()?;
        ((c.width, c.height) == (5, 5)).then_some(c)
    });
    assert_eq!((cursor.xhot, cursor.yhot), (2, 2));
    let opaque = cursor
        .cursor_image
        .iter()
        .filter(|p| *p >> 24 == 0xff)
        .count();
    assert_eq!(opaque, 21, "{:08x?}", cursor.cursor_image);
    assert_eq!(cursor.cursor_image[12], 0xffff_ffff, "a white centre");
    assert!(server.process.alive(), "{}", server.process.log_text());
}

/// An application that asks for the viewer's text and then stops reading
/// (wl-paste writing into a FIFO nobody reads) stalls nothing: the
/// customer's next copy still reaches the viewer, the hung transfer is
/// given up after its deadline (log line), and the viewer's next text is
/// served to the next application.
#[test]
fn a_stalled_paste_blocks_nothing() {
    tools();
    require_commands(&["wl-copy", "wl-paste", "mkfifo"]);
    let mut sway = Sway::start("clip-stall", W, H, None);
    let server = sway.ticketvnc("clip-stall-ticketvnc", &["--source", "wayland"]);
    let mut d = Drive::start(server.addr);
    // 600 kB: more than wl-paste, its stdout pipe and ours take in.
    let big = "x".repeat(600_000);
    d.run(&[&format!("paste {big}")]);
    poll("the viewer's large text in the Wayland selection", || {
        let t = sway.run(&["wl-paste", "--list-types"])?;
        String::from_utf8_lossy(&t)
            .contains("text/plain;charset=utf-8")
            .then_some(())
    });
    let fifo = sway.dir.path().join("stall.fifo");
    sway.run(&["mkfifo", "-m", "0600", fifo.to_str().unwrap()])
        .expect("mkfifo");
    // Our end: opened, never read (dropped at the end: wl-paste then ends).
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .expect("open the FIFO")
    };
    sway.spawn(
        "wl-paste-stalled",
        &["sh", "-c", &format!("exec wl-paste > '{}'", fifo.display())],
    );
    // The customer's copy reaches the viewer (the writes do not block).
    sway.spawn("wl-copy", &["wl-copy", "--foreground", "--", "trotzdem"]);
    poll("the customer's text during the stalled transfer", || {
        d.cuts().contains(&b"trotzdem".to_vec()).then_some(())
    });
    poll("the stalled transfer to be given up", || {
        server
            .process
            .log_text()
            .contains("did not take the clipboard text in time")
            .then_some(())
    });
    d.run(&["paste nach dem Stau"]);
    poll("the viewer's next text in the Wayland selection", || {
        (wl_paste(&sway, false)? == "nach dem Stau").then_some(())
    });
    assert!(server.process.alive(), "{}", server.process.log_text());
}
