//! `--source portal` end to end (issue 16): ticketvnc asks the real
//! xdg-desktop-portal (Debian 12's 1.16, D-Bus activated on a private
//! session bus) for a monitor, as it would on KDE.
//!
//! What stands behind the portal is a test backend
//! (tests/portal/test_backend.py): the desktop's own backends cannot run
//! here. xdg-desktop-portal-wlr 0.7 refuses to cast from a headless sway
//! with the pixman renderer (it requires a dmabuf format from
//! wlr-screencopy, and a GLES renderer needs a DRM render node this machine
//! lacks), and the KDE and GNOME backends show a dialog nobody can click
//! (docs/wayland.md). The backend answers the "dialog" from a file, logs
//! when it would have been shown, and logs every input call the frontend
//! passes on. The frames come from a PipeWire video source written for the
//! test (`portal_test_stream` below, this binary run again) showing a known
//! picture; ticketvnc reads it through the PipeWire connection the portal
//! opens for it (OpenPipeWireRemote), as on a desktop.
//!
//! Everything runs as an unprivileged user (`tvportal`, created when
//! missing), with its own runtime directory, session bus, PipeWire and
//! WirePlumber.

mod common;

use common::drive::{venv_python as python, Drive};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "tvportal";
const W: usize = 640;
const H: usize = 400;
const TIMEOUT: Duration = Duration::from_secs(60);
const DESKTOP: &str = "ticketvnctest";
const BACKEND: &str = "org.freedesktop.impl.portal.desktop.ticketvnctest";

/// The test stream's picture: every pixel differs from its neighbours in
/// some channel, so a shifted or scaled capture cannot pass.
fn pattern(x: usize, y: usize) -> u32 {
    let r = (x * 7 + y * 3) & 0xff;
    let g = (x ^ y) & 0xff;
    let b = (x / 5 + y / 7 + 0x40) & 0xff;
    (r << 16 | g << 8 | b) as u32
}

fn expected_picture() -> Vec<u32> {
    (0..W * H).map(|i| pattern(i % W, i / W)).collect()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::poll_until(what, TIMEOUT, f)
}

fn ensure_user() {
    if !is_root() {
        return;
    }
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("run useradd");
        assert!(st.success(), "useradd {USER} failed");
    }
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn kill_group(pgid: u32) {
    for sig in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A child in its own process group, ended (the group) on drop.
struct Group(Option<Child>);

impl Group {
    fn spawn(mut c: Command) -> Group {
        Group(Some(c.process_group(0).spawn().expect("spawn")))
    }
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    /// Wait for the child's exit (at most `timeout`).
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child().try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            kill_group(c.id());
            let _ = c.wait();
        }
    }
}

/// The private session: runtime directory, bus, PipeWire, the test
/// stream and the test backend. The portal frontend is started by the
/// bus when ticketvnc first calls it.
struct Desktop {
    rt: tempfile::TempDir,
    bus: String,
    node: u32,
    stack: Option<Group>,
    stream: Option<Group>,
    backend: Option<Group>,
    /// A compositor in the session (`WAYLAND_DISPLAY` for ticketvnc).
    compositor: Option<(Group, String)>,
}

impl Desktop {
    /// `remote_desktop`: the backend offers RemoteDesktop too (as KDE's
    /// and GNOME's do; xdg-desktop-portal-wlr's does not).
    fn start(remote_desktop: bool) -> Desktop {
        common::require_commands(&[
            "pipewire",
            "wireplumber",
            "dbus-run-session",
            "runuser",
            "/usr/libexec/xdg-desktop-portal",
            "/usr/bin/python3",
        ]);
        ensure_user();
        let rt = tempfile::Builder::new()
            .prefix("tv-portal-")
            .tempdir()
            .unwrap();
        let portals = rt.path().join("portals");
        std::fs::create_dir(&portals).unwrap();
        let interfaces = if remote_desktop {
            "org.freedesktop.impl.portal.ScreenCast;org.freedesktop.impl.portal.RemoteDesktop;"
        } else {
            "org.freedesktop.impl.portal.ScreenCast;"
        };
        std::fs::write(
            portals.join(format!("{DESKTOP}.portal")),
            format!("[portal]\nDBusName={BACKEND}\nInterfaces={interfaces}\nUseIn={DESKTOP}\n"),
        )
        .unwrap();
        let backend_script = rt.path().join("test_backend.py");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/portal/test_backend.py"),
            &backend_script,
        )
        .unwrap();
        let script = rt.path().join("stack.sh");
        std::fs::write(
            &script,
            r#"#!/bin/sh
cd "$XDG_RUNTIME_DIR"
echo "$DBUS_SESSION_BUS_ADDRESS" > bus.tmp && mv bus.tmp bus
pipewire > pipewire.log 2>&1 &
sleep 1
wireplumber > wireplumber.log 2>&1 &
wait
"#,
        )
        .unwrap();
        if is_root() {
            let uid = uid_of(USER);
            for e in walk(rt.path()) {
                std::os::unix::fs::chown(&e, Some(uid), Some(uid)).unwrap();
            }
            std::fs::set_permissions(rt.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let mut c = user_command(rt.path(), None);
        c.args(["dbus-run-session", "--", "sh"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(rt.path().join("stack.err")).unwrap());
        let stack = Group::spawn(c);
        let bus_file = rt.path().join("bus");
        let bus = poll("the session bus", || {
            std::fs::read_to_string(&bus_file)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
        let mut d = Desktop {
            rt,
            bus,
            node: 0,
            stack: Some(stack),
            stream: None,
            backend: None,
            compositor: None,
        };
        // The test stream, once PipeWire is up; it writes its node id.
        let node_file = d.path().join("node");
        let mut c = d.command();
        c.arg(format!("TICKETVNC_PORTAL_STREAM={}", node_file.display()))
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "portal_test_stream", "--ignored", "--nocapture"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.path().join("stream.log")).unwrap());
        let mut stream = Group::spawn(c);
        d.node = poll("the test stream's PipeWire node", || {
            if let Ok(Some(st)) = stream.child().try_wait() {
                panic!("the test stream exited ({st}): {}", d.log("stream.log"));
            }
            std::fs::read_to_string(&node_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        d.stream = Some(stream);
        let mut c = d.command();
        c.arg("/usr/bin/python3")
            .arg(&backend_script)
            .arg("--log")
            .arg(d.path().join("backend.log"))
            .arg("--answer")
            .arg(d.path().join("answer"))
            .args(["--node", &d.node.to_string()])
            .args(["--size", &format!("{W}x{H}")])
            .args((!remote_desktop).then_some("--no-remote-desktop"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.path().join("backend.err")).unwrap());
        let mut backend = Group::spawn(c);
        poll("the test backend on the bus", || {
            if let Ok(Some(st)) = backend.child().try_wait() {
                panic!("the test backend exited ({st}): {}", d.log("backend.err"));
            }
            d.log("backend.log").contains("\"ready\"").then_some(())
        });
        d.backend = Some(backend);
        d
    }

    fn path(&self) -> &Path {
        self.rt.path()
    }

    fn command(&self) -> Command {
        user_command(self.rt.path(), Some(&self.bus))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.rt.path().join(name)).unwrap_or_default()
    }

    /// The backend's log entries (JSON lines) as strings.
    fn backend_calls(&self) -> Vec<serde_json::Value> {
        self.log("backend.log")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How the customer answers the dialog from now on.
    fn answer(&self, a: &str) {
        let f = self.path().join("answer");
        std::fs::write(&f, a).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// A headless sway in the session, as the desktop's compositor (the
    /// test stream stays the portal's picture).
    fn start_compositor(&mut self) {
        common::require_commands(&["sway"]);
        let conf = self.path().join("sway.conf");
        std::fs::write(&conf, "output HEADLESS-1 mode 640x400\n").unwrap();
        if is_root() {
            std::os::unix::fs::chown(&conf, Some(uid_of(USER)), Some(uid_of(USER))).unwrap();
        }
        let mut c = self.command();
        c.args([
            "WLR_BACKENDS=headless",
            "WLR_LIBINPUT_NO_DEVICES=1",
            "WLR_RENDERER=pixman",
            "sway",
            "-c",
        ])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.path().join("sway.log")).unwrap());
        let mut sway = Group::spawn(c);
        let name = poll("sway's socket", || {
            if let Ok(Some(st)) = sway.child().try_wait() {
                panic!("sway exited ({st}): {}", self.log("sway.log"));
            }
            std::fs::read_dir(self.path())
                .ok()?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("wayland-") && !n.ends_with(".lock"))
        });
        self.compositor = Some((sway, name));
    }

    /// Stop (`-STOP`) or continue (`-CONT`) the compositor's process group.
    fn signal_compositor(&mut self, sig: &str) {
        let (g, _) = self.compositor.as_mut().expect("a compositor");
        let ok = Command::new("kill")
            .args([sig, "--", &format!("-{}", g.child().id())])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} the compositor");
    }

    fn token_file(&self) -> PathBuf {
        self.path().join("db").join("portal-restore-token")
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        let dir = common::artefact_dir();
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        for name in [
            "pipewire.log",
            "wireplumber.log",
            "stack.err",
            "stream.log",
            "backend.log",
            "backend.err",
            "ticketvnc.log",
            "sway.log",
        ] {
            let _ = std::fs::copy(
                self.rt.path().join(name),
                dir.join(format!("portal-{test}-{name}")),
            );
        }
        if let Some((g, _)) = self.compositor.take() {
            let _ = Command::new("kill")
                .args(["-CONT", "--", &format!("-{}", g.0.as_ref().unwrap().id())])
                .status();
            drop(g);
        }
        drop(self.backend.take());
        drop(self.stream.take());
        drop(self.stack.take());
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_owned()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// `runuser -u tvportal -- env ...` as root, plain `env ...` otherwise.
/// No compositor: `WAYLAND_DISPLAY` names a socket that is not there, as
/// on a desktop whose compositor offers no wlr-screencopy.
fn user_command(rt: &Path, bus: Option<&str>) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", "env", "-i"]);
        c
    } else {
        let mut c = Command::new("env");
        c.arg("-i");
        c
    };
    let rt = rt.display();
    c.arg(format!("XDG_RUNTIME_DIR={rt}"))
        .arg(format!("HOME={rt}"))
        .arg(format!("XDG_CONFIG_HOME={rt}/config"))
        .arg(format!("XDG_DATA_HOME={rt}/data"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg(format!("XDG_CURRENT_DESKTOP={DESKTOP}"))
        .arg(format!("XDG_DESKTOP_PORTAL_DIR={rt}/portals"))
        .arg("XDG_SESSION_TYPE=wayland")
        .arg("WAYLAND_DISPLAY=wayland-none")
        .arg("TICKETVNC_LOG=ticketvnc=debug,ticketvnc::capture::pipewire=trace,info")
        .arg("NO_COLOR=1");
    if let Some(b) = bus {
        c.arg(format!("DBUS_SESSION_BUS_ADDRESS={b}"));
    }
    c
}

struct Server {
    group: Group,
    addr: SocketAddr,
}

/// ticketvnc with `serve ARGS`; `Err(log)` when it exits before listening.
fn try_start_ticketvnc(d: &Desktop, args: &[&str]) -> Result<Server, (String, i32)> {
    let db = d.path().join("db");
    let mut c = d.command();
    if let Some((_, name)) = &d.compositor {
        c.arg(format!("WAYLAND_DISPLAY={name}"));
    }
    c.arg(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(db.join("journal.db"))
        .arg("serve")
        .args(args)
        .args(["--no-auth", "--listen", "127.0.0.1:0", "--no-drawn-cursor"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.path().join("ticketvnc.log")).unwrap());
    let mut group = Group::spawn(c);
    let out = group.child().stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            l2.lock().unwrap().push(l);
        }
    });
    let r = poll("ticketvnc to listen or exit", || {
        if let Ok(Some(st)) = group.child().try_wait() {
            return Some(Err((d.log("ticketvnc.log"), st.code().unwrap_or(-1))));
        }
        lines.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("ticketvnc listening on ")
                .map(|a| Ok(a.trim().parse().unwrap()))
        })
    });
    r.map(|addr| Server { group, addr })
}

fn start_ticketvnc(d: &Desktop, args: &[&str]) -> Server {
    match try_start_ticketvnc(d, args) {
        Ok(s) => s,
        Err((log, code)) => panic!("ticketvnc exited ({code}) before listening:\n{log}"),
    }
}

/// One full-screen capture by vncdotool (`encoding`), as 0x00RRGGBB.
fn vncdotool_capture(addr: SocketAddr, encoding: &str, dir: &Path) -> Vec<u32> {
    let prefix = dir.join(format!("portal-cap-{encoding}"));
    let st = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/vncdotool_capture.py"))
        .args(["--port", &addr.port().to_string(), "--encoding", encoding])
        .arg("--out")
        .arg(&prefix)
        .status()
        .expect("run vncdotool_capture.py");
    assert!(st.success(), "vncdotool capture failed");
    let rgb = std::fs::read(prefix.with_extension("rgb")).expect("capture written");
    common::rgb_bytes_to_pixels(&rgb)
}

/// vncdotool (`enc`) gets `expected`, exactly (retried while the first
/// frames arrive; the last capture is compared and saved on failure).
fn wait_picture(addr: SocketAddr, enc: &str, expected: &[u32], name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = vncdotool_capture(addr, enc, dir.path());
        if got == expected {
            return;
        }
        if Instant::now() >= deadline {
            common::assert_same_image(name, W, H, expected, &got);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// vnc-rs with `encoding` waits until its framebuffer equals `expected`.
fn vncrs_wait_picture(addr: SocketAddr, encoding: vnc::VncEncoding, expected: &[u32]) {
    use ticketvnc::rfb::PixelFormat as TvPixelFormat;
    use vnc::{VncConnector, VncEvent, X11Event};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client = VncConnector::<_, std::future::Ready<Result<String, vnc::VncError>>>::new(tcp)
            .allow_shared(true)
            .add_encoding(encoding)
            .build()
            .unwrap()
            .try_start()
            .await
            .unwrap()
            .finish()
            .unwrap();
        let (mut w, mut fb) = (0usize, Vec::<u32>::new());
        let mut pf: Option<TvPixelFormat> = None;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while fb != expected {
            if tokio::time::Instant::now() >= deadline {
                common::assert_same_image(
                    &format!("portal-vncrs-{encoding:?}"),
                    W,
                    H,
                    expected,
                    &fb,
                );
            }
            let ev =
                match tokio::time::timeout(Duration::from_millis(200), client.recv_event()).await {
                    Ok(ev) => ev.expect("vnc-rs connection"),
                    Err(_) => {
                        client.input(X11Event::Refresh).await.unwrap();
                        continue;
                    }
                };
            match ev {
                VncEvent::SetResolution(r) => {
                    w = r.width as usize;
                    fb = vec![0; w * r.height as usize];
                }
                VncEvent::SetPixelFormat(f) => {
                    pf = Some(TvPixelFormat {
                        bits_per_pixel: f.bits_per_pixel,
                        depth: f.depth,
                        big_endian: f.big_endian_flag != 0,
                        true_colour: f.true_color_flag != 0,
                        red_max: f.red_max,
                        green_max: f.green_max,
                        blue_max: f.blue_max,
                        red_shift: f.red_shift,
                        green_shift: f.green_shift,
                        blue_shift: f.blue_shift,
                    })
                }
                VncEvent::RawImage(r, data) => {
                    let pf = pf.as_ref().expect("pixel format before pixels");
                    let bpp = pf.bytes_per_pixel();
                    for (i, px) in data.chunks_exact(bpp).enumerate() {
                        let x = r.x as usize + i % r.width as usize;
                        let y = r.y as usize + i / r.width as usize;
                        fb[y * w + x] = pf.to_native(pf.read_pixel(px)) & 0xff_ffff;
                    }
                }
                VncEvent::Error(e) => panic!("vnc-rs: {e}"),
                _ => {}
            }
        }
    });
}

fn calls_named<'a>(calls: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    calls.iter().filter(|c| c["call"] == name).collect()
}

/// KDE's shape (ScreenCast + RemoteDesktop behind the portal): the
/// customer is asked once, the viewers get the stream pixel-exact (Raw and
/// ZRLE), and their pointer, buttons, wheel and keys reach the portal as
/// RemoteDesktop calls on the granted stream.
#[test]
fn portal_remote_desktop_picture_and_input() {
    let d = Desktop::start(true);
    let mut server = start_ticketvnc(&d, &["--source", "portal"]);
    let expected = expected_picture();
    wait_picture(server.addr, "raw", &expected, "portal-raw");
    wait_picture(server.addr, "zrle", &expected, "portal-zrle");
    vncrs_wait_picture(server.addr, vnc::VncEncoding::Zrle, &expected);
    vncrs_wait_picture(server.addr, vnc::VncEncoding::Raw, &expected);

    let calls = d.backend_calls();
    let starts = calls_named(&calls, "RemoteDesktop.Start");
    assert_eq!(starts.len(), 1, "one dialog: {calls:?}");
    assert_eq!(starts[0]["dialog"], true);
    // The monitor was asked for with the cursor embedded (the backend
    // offers hidden and embedded, not metadata).
    let select = calls_named(&calls, "ScreenCast.SelectSources");
    assert_eq!(select.len(), 1);
    assert_eq!(select[0]["cursor_mode"], 2);
    // xdg-desktop-portal 1.16's RemoteDesktop (version 1) cannot persist:
    // no persist_mode was sent (it would be refused) and no token kept.
    assert_eq!(
        calls_named(&calls, "RemoteDesktop.SelectDevices")[0]["persist_mode"],
        0
    );
    assert!(!d.token_file().exists());

    assert!(calls_named(&calls, "Session.Close").is_empty(), "{calls:?}");

    let mut drive = Drive::start(server.addr);
    drive.run(&[
        "move 321 123",
        "click 1",
        "click 3",
        "key a",
        "click 5",
        "click 4",
        "move 639 399",
    ]);
    let node = d.node as i64;
    let want: Vec<(&str, Vec<(&str, f64)>)> = vec![
        (
            "NotifyPointerMotionAbsolute",
            vec![("stream", node as f64), ("x", 321.0), ("y", 123.0)],
        ),
        (
            "NotifyPointerButton",
            vec![("button", 272.0), ("state", 1.0)],
        ),
        (
            "NotifyPointerButton",
            vec![("button", 272.0), ("state", 0.0)],
        ),
        (
            "NotifyPointerButton",
            vec![("button", 273.0), ("state", 1.0)],
        ),
        (
            "NotifyPointerButton",
            vec![("button", 273.0), ("state", 0.0)],
        ),
        (
            "NotifyKeyboardKeysym",
            vec![("keysym", 97.0), ("state", 1.0)],
        ),
        (
            "NotifyKeyboardKeysym",
            vec![("keysym", 97.0), ("state", 0.0)],
        ),
        (
            "NotifyPointerAxisDiscrete",
            vec![("axis", 0.0), ("steps", 1.0)],
        ),
        (
            "NotifyPointerAxisDiscrete",
            vec![("axis", 0.0), ("steps", -1.0)],
        ),
        (
            "NotifyPointerMotionAbsolute",
            vec![("stream", node as f64), ("x", 639.0), ("y", 399.0)],
        ),
    ];
    poll("the portal to get the pointer and keys", || {
        let calls = d.backend_calls();
        // In order, each after the previous one.
        let mut at = 0;
        for (name, fields) in &want {
            at += calls[at..].iter().position(|c| {
                c["call"] == *name && fields.iter().all(|(k, v)| c[*k].as_f64() == Some(*v))
            })? + 1;
        }
        Some(())
    });
    drive.quit();
    // The customer stops sharing (the desktop closes the session): a clear
    // line, the viewers are let go, exit non-zero.
    let pid = d.backend_calls()[0]["pid"].as_u64().expect("backend pid");
    let st = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let st = server
        .group
        .wait(TIMEOUT)
        .expect("ticketvnc stops when the portal closes the session");
    assert!(!st.success(), "exit status {st}");
    let log = d.log("ticketvnc.log");
    assert!(
        log.contains("the portal closed the screen-sharing session"),
        "no clear line in:\n{log}"
    );
}

/// xdg-desktop-portal-wlr's shape (ScreenCast only): the screen is served
/// view-only with a warning; the customer answers once: the restore token
/// is kept beside the journal (0600) and the next start, with `--source
/// auto` on this desktop that has neither Mutter nor wlr-screencopy, is
/// not asked (the portal hands the backend its restore data). A token the
/// portal does not know brings the dialog back.
#[test]
fn portal_screencast_only_is_asked_once() {
    let d = Desktop::start(false);
    let server = start_ticketvnc(&d, &["--source", "portal"]);
    let expected = expected_picture();
    wait_picture(server.addr, "raw", &expected, "portal-cast-raw");
    let log = d.log("ticketvnc.log");
    assert!(log.contains("serving the screen view-only"), "{log}");
    let calls = d.backend_calls();
    // The session stays open while ticketvnc serves (a desktop stops the
    // stream of a closed session).
    assert!(calls_named(&calls, "Session.Close").is_empty(), "{calls:?}");
    assert_eq!(calls_named(&calls, "ScreenCast.Start")[0]["dialog"], true);
    assert_eq!(
        calls_named(&calls, "ScreenCast.SelectSources")[0]["persist_mode"],
        2
    );
    let token = std::fs::read_to_string(d.token_file()).expect("restore token kept");
    assert_eq!(token.len(), 36, "a UUID: {token:?}");
    let mode = std::fs::metadata(d.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Input is ignored (no RemoteDesktop): nothing reaches the portal.
    let mut drive = Drive::start(server.addr);
    drive.run(&["move 10 10", "click 1", "key a"]);
    drive.quit();
    drop(server);

    // Second start: no dialog, the portal passed the backend its data.
    let server = start_ticketvnc(&d, &["--source", "auto"]);
    wait_picture(server.addr, "raw", &expected, "portal-cast-restored");
    let calls = d.backend_calls();
    let starts = calls_named(&calls, "ScreenCast.Start");
    assert_eq!(starts.len(), 2, "{calls:?}");
    assert_eq!(starts[1]["restored"], "monitor-0", "{calls:?}");
    assert!(starts[1].get("dialog").is_none());
    let selects = calls_named(&calls, "ScreenCast.SelectSources");
    assert_eq!(
        selects[1]["restore_data"],
        serde_json::json!(["ticketvnc-test", 1, "monitor-0"])
    );
    assert!(
        d.log("ticketvnc.log").contains("portal restore token kept"),
        "{}",
        d.log("ticketvnc.log")
    );
    assert!(calls_named(&calls, "NotifyPointerButton").is_empty());
    assert!(calls_named(&calls, "NotifyKeyboardKeysym").is_empty());
    drop(server);

    // A token the portal does not know (revoked, another machine): the
    // dialog again, and a new token.
    std::fs::write(d.token_file(), "0e6cbd8e-1111-4222-8333-444455556666").unwrap();
    let server = start_ticketvnc(&d, &["--source", "portal"]);
    wait_picture(server.addr, "raw", &expected, "portal-cast-unknown-token");
    let calls = d.backend_calls();
    let starts = calls_named(&calls, "ScreenCast.Start");
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[2]["dialog"], true, "{calls:?}");
    let token2 = std::fs::read_to_string(d.token_file()).unwrap();
    assert_eq!(token2.len(), 36);
    assert_ne!(token2, "0e6cbd8e-1111-4222-8333-444455556666");
    drop(server);
}

/// The customer cancels the dialog: a clear error and a non-zero exit,
/// before anything listens.
#[test]
fn portal_cancelled_dialog_is_a_clear_error() {
    let d = Desktop::start(true);
    d.answer("cancel");
    match try_start_ticketvnc(&d, &["--source", "portal"]) {
        Ok(_) => panic!("ticketvnc served a screen the customer refused"),
        Err((log, code)) => {
            assert_ne!(code, 0);
            assert!(
                log.contains("the customer cancelled the screen-sharing dialog"),
                "{log}"
            );
        }
    }
    assert!(!d.token_file().exists());
}

/// Numbers for docs/wayland.md: how long from start to the first frame,
/// and ticketvnc's CPU on a still screen with one viewer connected. Run by
/// hand: `cargo test --release --test wayland_portal portal_idle_cpu --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn portal_idle_cpu() {
    let d = Desktop::start(true);
    let server = start_ticketvnc(&d, &["--source", "portal"]);
    wait_picture(server.addr, "raw", &expected_picture(), "portal-idle");
    let log = d.log("ticketvnc.log");
    let at = |needle: &str| -> Option<f64> {
        let l = log.lines().find(|l| l.contains(needle))?;
        // 2026-11-30T09:56:26.696732Z: seconds within the hour.
        let i = l.find('T')?;
        let m: f64 = l.get(i + 4..i + 6)?.parse().ok()?;
        let s: f64 = l.get(i + 7..i + 16)?.parse().ok()?;
        Some(m * 60.0 + s)
    };
    if let (Some(a), Some(b), Some(c)) = (
        at("session journal"),
        at("portal screen cast started"),
        at("portal screen size"),
    ) {
        eprintln!(
            "start to portal answer {:.0} ms, answer to first frame {:.0} ms",
            (b - a) * 1000.0,
            (c - b) * 1000.0
        );
    }
    let tv =
        child_named(server.group.0.as_ref().unwrap().id(), "ticketvnc").expect("ticketvnc's pid");
    let mut drive = Drive::start(server.addr);
    drive.run(&["move 5 5"]);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(tv);
    let secs = 20;
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks(tv);
    eprintln!(
        "idle {secs} s: ticketvnc {:.2}% of a core",
        (after - before) as f64 / secs as f64
    );
    drive.quit();
}

/// A process of process group `pgid` named `name`.
fn child_named(pgid: u32, name: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-g", &pgid.to_string(), "-x", name])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// User plus system CPU time of `pid` in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The PipeWire video source the tests' backend names (run as this test
/// binary by [`Desktop::start`]): BGRx, W x H, the known picture in every
/// buffer; writes its node id to `$TICKETVNC_PORTAL_STREAM`.
#[test]
#[ignore = "run by the portal tests as their PipeWire stream"]
fn portal_test_stream() {
    let Ok(out) = std::env::var("TICKETVNC_PORTAL_STREAM") else {
        return;
    };
    stream::run(Path::new(&out));
}

mod stream {
    use super::{pattern, H, W};

    /// Buffers sent after each start of streaming.
    const FRAMES_PER_START: u32 = 10;
    use pipewire as pw;
    use pw::spa;
    use spa::pod::{Object, Pod, Property, Value};
    use std::path::Path;

    fn pod(obj: Object) -> Vec<u8> {
        spa::pod::serialize::PodSerializer::serialize(
            std::io::Cursor::new(Vec::new()),
            &Value::Object(obj),
        )
        .unwrap()
        .0
        .into_inner()
    }

    pub fn run(out: &Path) {
        pw::init();
        let mainloop = pw::main_loop::MainLoopRc::new(None).unwrap();
        let context = pw::context::ContextRc::new(&mainloop, None).unwrap();
        let core = context.connect_rc(None).unwrap();
        let stream = pw::stream::StreamBox::new(
            &core,
            "tvportal-test-stream",
            pw::properties::properties! {
                *pw::keys::MEDIA_CLASS => "Video/Source",
                *pw::keys::NODE_NAME => "tvportal-test-stream",
            },
        )
        .unwrap();
        let stride = W * 4;
        let mut picture = vec![0u8; stride * H];
        for y in 0..H {
            for x in 0..W {
                let p = pattern(x, y);
                let o = y * stride + x * 4;
                picture[o] = p as u8;
                picture[o + 1] = (p >> 8) as u8;
                picture[o + 2] = (p >> 16) as u8;
                picture[o + 3] = 0xff;
            }
        }
        let out = out.to_owned();
        let written = std::cell::Cell::new(false);
        let warned = std::cell::Cell::new(false);
        // Like a compositor, frames only when there is news: a few after
        // each consumer starts streaming, then none (a still screen).
        let sent = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let sent2 = sent.clone();
        let buffers = pod(Object {
            type_: spa::sys::SPA_TYPE_OBJECT_ParamBuffers,
            id: spa::sys::SPA_PARAM_Buffers,
            properties: vec![
                Property::new(spa::sys::SPA_PARAM_BUFFERS_buffers, Value::Int(4)),
                Property::new(spa::sys::SPA_PARAM_BUFFERS_blocks, Value::Int(1)),
                Property::new(
                    spa::sys::SPA_PARAM_BUFFERS_size,
                    Value::Int((stride * H) as i32),
                ),
                Property::new(
                    spa::sys::SPA_PARAM_BUFFERS_stride,
                    Value::Int(stride as i32),
                ),
                Property::new(
                    spa::sys::SPA_PARAM_BUFFERS_dataType,
                    Value::Int(1 << spa::sys::SPA_DATA_MemFd),
                ),
            ],
        });
        let _listener = stream
            .add_local_listener_with_user_data(())
            .state_changed(move |stream, _, _, new| {
                eprintln!("state {new:?}");
                if matches!(new, pw::stream::StreamState::Streaming) {
                    sent2.set(0);
                }
                if !written.get() && stream.node_id() != u32::MAX {
                    written.set(true);
                    let tmp = out.with_extension("tmp");
                    std::fs::write(&tmp, stream.node_id().to_string()).unwrap();
                    std::fs::rename(&tmp, &out).unwrap();
                }
            })
            .param_changed(move |stream, _, id, param| {
                if param.is_none() || id != spa::param::ParamType::Format.as_raw() {
                    return;
                }
                let mut pods = [Pod::from_bytes(&buffers).unwrap()];
                stream.update_params(&mut pods).unwrap();
            })
            .process(move |stream, _| {
                if sent.get() >= FRAMES_PER_START {
                    return;
                }
                let Some(mut buffer) = stream.dequeue_buffer() else {
                    return;
                };
                sent.set(sent.get() + 1);
                let data = &mut buffer.datas_mut()[0];
                let n = if let Some(slice) = data.data() {
                    let n = slice.len().min(picture.len());
                    slice[..n].copy_from_slice(&picture[..n]);
                    n
                } else {
                    0
                };
                if n == 0 && !warned.get() {
                    warned.set(true);
                    eprintln!("buffer without mapped memory ({:?})", data.type_());
                }
                let chunk = data.chunk_mut();
                *chunk.offset_mut() = 0;
                *chunk.stride_mut() = stride as i32;
                *chunk.size_mut() = n as u32;
            })
            .register()
            .unwrap();
        let format = pod(pw::spa::pod::object!(
            spa::utils::SpaTypes::ObjectParamFormat,
            spa::param::ParamType::EnumFormat,
            pw::spa::pod::property!(
                spa::param::format::FormatProperties::MediaType,
                Id,
                spa::param::format::MediaType::Video
            ),
            pw::spa::pod::property!(
                spa::param::format::FormatProperties::MediaSubtype,
                Id,
                spa::param::format::MediaSubtype::Raw
            ),
            pw::spa::pod::property!(
                spa::param::format::FormatProperties::VideoFormat,
                Id,
                spa::param::video::VideoFormat::BGRx
            ),
            pw::spa::pod::property!(
                spa::param::format::FormatProperties::VideoSize,
                Rectangle,
                spa::utils::Rectangle {
                    width: W as u32,
                    height: H as u32
                }
            ),
            pw::spa::pod::property!(
                spa::param::format::FormatProperties::VideoFramerate,
                Fraction,
                spa::utils::Fraction { num: 30, denom: 1 }
            ),
        ));
        let mut params = [Pod::from_bytes(&format).unwrap()];
        stream
            .connect(
                spa::utils::Direction::Output,
                None,
                pw::stream::StreamFlags::MAP_BUFFERS,
                &mut params,
            )
            .unwrap();
        mainloop.run();
    }
}

/// Issue 16, faults: behind the portal, a hung compositor leaves the
/// stream quiet (a still screen) while the portal frontend, another
/// process, answers on the bus as ever. ticketvnc asks the compositor on
/// its own socket, says within seconds that it hangs, keeps serving, and
/// says when it answers again. (The picture comes from the test stream;
/// sway stands in for the desktop's compositor.)
#[test]
fn portal_hung_compositor_is_logged_and_survived() {
    let mut d = Desktop::start(true);
    d.start_compositor();
    let server = start_ticketvnc(&d, &["--source", "portal"]);
    let expected = expected_picture();
    wait_picture(server.addr, "raw", &expected, "portal-before-hang");
    d.signal_compositor("-STOP");
    let stopped = Instant::now();
    poll("ticketvnc to notice the hang", || {
        d.log("ticketvnc.log")
            .contains("Wayland compositor stalled")
            .then_some(())
    });
    let noticed = stopped.elapsed();
    d.signal_compositor("-CONT");
    assert!(
        noticed < Duration::from_secs(15),
        "noticed after {noticed:?}"
    );
    poll("ticketvnc to see the compositor answer again", || {
        d.log("ticketvnc.log")
            .contains("the Wayland compositor answers again")
            .then_some(())
    });
    wait_picture(server.addr, "raw", &expected, "portal-after-hang");
    let mut server = server;
    assert!(
        server.group.child().try_wait().unwrap().is_none(),
        "ticketvnc still serving: {}",
        d.log("ticketvnc.log")
    );
}
