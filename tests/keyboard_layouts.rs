//! Typing across keyboard layouts (issue 11, item 3): what the technician
//! types appears on the customer's side character for character, whatever
//! layouts the two sides use.
//!
//! The customer: a private Xvfb with its own layout (`setxkbmap`), an xterm
//! running `cat > FILE`, focused, served by the `ticketvnc` binary. The
//! technician: TigerVNC's vncviewer on a second Xvfb with another layout;
//! `xdotool type` on that display types through the viewer's layout (a US
//! viewer sends Shift+2 for `"`, a German one AltGr+Q for `@`), so the
//! viewer sends keysyms with its own modifiers held. The file must hold
//! exactly the typed text. vncdotool sends bare keysyms (`A` without
//! Shift, `@` without AltGr), the other extreme.
//!
//! Peers on the same case (x11vnc with and without -xkb, x0vncserver) are
//! `#[ignore]`d tests that print what they produced (see docs/linux.md):
//! `cargo test --test keyboard_layouts peers -- --ignored --nocapture`.

mod common;

use common::{require_commands, ChildGuard, XvfbGuard};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Displays of this suite (other suites use other ranges).
const DISPLAYS: std::ops::Range<u32> = 140..160;
const TIMEOUT: Duration = Duration::from_secs(40);

/// Text a German keyboard types: AltGr characters, shifted symbols,
/// umlauts in both cases, the Y/Z swap, and a letter on no key (é).
const GERMAN_TEXT: &str = "Hallo @{[]}\\|~€ äöüß ÄÖÜ Zz Yy 1!\"§$%&/()=? <>µ é";
/// The same from a US keyboard: `xdotool type` of an upper-case letter
/// the layout lacks gives the lower case even on the viewer's own screen
/// (it binds the letter to a scratch key without Shift), so the text has
/// no Ä, Ö, Ü.
const US_TEXT: &str = "Hallo @{[]}\\|~€ äöüß Zz Yy 1!\"§$%&/()=? <> é `^'";

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn x(display: &str, args: &[&str]) -> Option<String> {
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

fn spawn(display: &str, args: &[&str], log: Option<PathBuf>) -> ChildGuard {
    let err = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    ChildGuard(
        Command::new(args[0])
            .args(&args[1..])
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", args[0])),
    )
}

/// An Xvfb with keyboard layout `layout`.
fn desktop(layout: &str) -> (XvfbGuard, String) {
    let xvfb = XvfbGuard::start_in(DISPLAYS, 800, 500);
    let d = xvfb.display_name();
    poll(&format!("layout {layout} on {d}"), || {
        x(&d, &["setxkbmap", layout])?;
        let q = x(&d, &["setxkbmap", "-query"])?;
        q.lines()
            .any(|l| l.starts_with("layout:") && l.trim_end().ends_with(layout))
            .then_some(())
    });
    (xvfb, d)
}

/// An xterm on `display` writing what is typed into `file`, focused.
fn typing_target(display: &str, file: &Path) -> ChildGuard {
    let cmd = format!("stty -echo raw; exec cat > '{}'", file.display());
    let xterm = spawn(
        display,
        &[
            "xterm",
            "-T",
            "target",
            "-geometry",
            "60x8+0+0",
            "-e",
            "sh",
            "-c",
            &cmd,
        ],
        None,
    );
    let win = poll("the xterm", || {
        x(
            display,
            &["xdotool", "search", "--onlyvisible", "--name", "^target$"],
        )
        .and_then(|o| o.lines().next().map(str::to_owned))
    });
    poll("xterm focus", || {
        x(display, &["xdotool", "windowfocus", "--sync", &win])?;
        file.exists().then_some(())
    });
    xterm
}

/// Wait until `file` holds `want` (or stops growing), return what it holds.
fn typed(file: &Path, want: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = (String::new(), Instant::now());
    loop {
        let now = std::fs::read(file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if now.chars().count() >= want.chars().count()
            && last.1.elapsed() > Duration::from_secs(5)
        {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    poll(&format!("a server on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

#[derive(Clone, Copy, Debug)]
enum Server {
    Ticketvnc,
    X11vnc,
    X11vncXkb,
    X0vncserver,
}

/// Serve `display` on a fresh port.
fn serve(server: Server, display: &str, name: &str, tmp: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let p = port.to_string();
    let log = common::artefact_dir().join(format!("keyboard-{name}-server.log"));
    let child = match server {
        Server::Ticketvnc => {
            let db = tmp.join("journal.db");
            let mut c = Command::new(env!("CARGO_BIN_EXE_ticketvnc"));
            c.arg("--db")
                .arg(&db)
                .env("XDG_CONFIG_HOME", tmp.join("config"))
                .env("RUST_LOG", "ticketvnc=debug")
                .args(["serve", "--source", "x11", "--display", display])
                .args(["--no-auth", "--listen", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            ChildGuard(c.spawn().expect("run ticketvnc"))
        }
        Server::X11vnc | Server::X11vncXkb => {
            let mut args = vec![
                "x11vnc",
                "-display",
                display,
                "-rfbport",
                &p,
                "-localhost",
                "-nopw",
                "-forever",
                "-shared",
                "-quiet",
            ];
            if matches!(server, Server::X11vncXkb) {
                args.push("-xkb");
            }
            spawn(display, &args, Some(log))
        }
        Server::X0vncserver => spawn(
            display,
            &[
                "x0vncserver",
                "-display",
                display,
                "-rfbport",
                &p,
                "-localhost",
                "-SecurityTypes",
                "None",
            ],
            Some(log),
        ),
    };
    wait_port(port);
    (child, port)
}

/// Type `text` through vncviewer on a `viewer_layout` display into an
/// xterm on a `served_layout` display; what the xterm got, and what the
/// same typing gives on the viewer's own display (the technician's
/// expectation).
fn through_vncviewer(
    server: Server,
    served_layout: &str,
    viewer_layout: &str,
    text: &str,
) -> (String, String) {
    require_commands(&["Xvfb", "xterm", "xdotool", "setxkbmap", "vncviewer"]);
    let name = format!("{server:?}-{served_layout}-{viewer_layout}").to_lowercase();
    let tmp = tempfile::tempdir().unwrap();
    let (_served, sd) = desktop(served_layout);
    let (_viewer_x, vd) = desktop(viewer_layout);

    // The technician's own expectation: the same typing into an xterm on
    // the viewer's display.
    let local = tmp.path().join("local.txt");
    let local_term = typing_target(&vd, &local);
    x(&vd, &["xdotool", "type", "--delay", "40", text]).expect("xdotool type");
    let local_text = typed(&local, text);
    drop(local_term);

    let out = tmp.path().join("typed.txt");
    let _target = typing_target(&sd, &out);
    let (_srv, port) = serve(server, &sd, &name, tmp.path());
    let log = common::artefact_dir().join(format!("keyboard-{name}-viewer.log"));
    let _viewer = spawn(
        &vd,
        &[
            "vncviewer",
            "-SecurityTypes",
            "None",
            "-Shared=1",
            "-geometry",
            "+0+0",
            &format!("127.0.0.1::{port}"),
        ],
        Some(log),
    );
    let win = poll("the vncviewer window", || {
        x(
            &vd,
            &["xdotool", "search", "--onlyvisible", "--name", "TigerVNC"],
        )
        .and_then(|o| o.lines().last().map(str::to_owned))
    });
    x(&vd, &["xdotool", "windowfocus", "--sync", &win]);
    // The viewer connected and the window shows the desktop.
    std::thread::sleep(Duration::from_millis(500));
    x(&vd, &["xdotool", "type", "--delay", "40", text]).expect("xdotool type");
    (typed(&out, text), local_text)
}

/// Type `text` with vncdotool (bare keysyms) into an xterm on a
/// `served_layout` display.
fn through_vncdotool(server: Server, served_layout: &str, text: &str) -> String {
    require_commands(&["Xvfb", "xterm", "xdotool", "setxkbmap"]);
    let name = format!("{server:?}-{served_layout}-vncdotool").to_lowercase();
    let tmp = tempfile::tempdir().unwrap();
    let (_served, sd) = desktop(served_layout);
    let out = tmp.path().join("typed.txt");
    let _target = typing_target(&sd, &out);
    let (_srv, port) = serve(server, &sd, &name, tmp.path());
    let vncdo = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/vncdo");
    let st = Command::new(&vncdo)
        .args(["-s", &format!("127.0.0.1::{port}"), "type", text])
        .stdin(Stdio::null())
        .status()
        .expect("run .venv/bin/vncdo (scripts/install-deps.sh --venv)");
    assert!(st.success(), "vncdo failed");
    typed(&out, text)
}

#[test]
fn us_technician_on_a_german_desktop() {
    let (got, local) = through_vncviewer(Server::Ticketvnc, "de", "us", US_TEXT);
    assert_eq!(local, US_TEXT, "xdotool on the viewer's own display");
    assert_eq!(got, US_TEXT);
}

#[test]
fn german_technician_on_a_us_desktop() {
    let (got, local) = through_vncviewer(Server::Ticketvnc, "us", "de", GERMAN_TEXT);
    assert_eq!(local, GERMAN_TEXT, "xdotool on the viewer's own display");
    assert_eq!(got, GERMAN_TEXT);
}

#[test]
fn german_technician_on_a_german_desktop() {
    let (got, _) = through_vncviewer(Server::Ticketvnc, "de", "de", GERMAN_TEXT);
    assert_eq!(got, GERMAN_TEXT);
}

#[test]
fn bare_keysyms_on_german_and_us_desktops() {
    for layout in ["de", "us"] {
        let got = through_vncdotool(Server::Ticketvnc, layout, GERMAN_TEXT);
        assert_eq!(got, GERMAN_TEXT, "vncdotool on a {layout} desktop");
    }
}

/// The same cases against x11vnc (with and without -xkb) and
/// x0vncserver; prints what each produced.
#[test]
#[ignore = "peer comparison; run by hand"]
fn peers() {
    require_commands(&["x11vnc", "x0vncserver"]);
    let mut report = Vec::new();
    for server in [
        Server::Ticketvnc,
        Server::X11vnc,
        Server::X11vncXkb,
        Server::X0vncserver,
    ] {
        for (s, v, text) in [("de", "us", US_TEXT), ("us", "de", GERMAN_TEXT)] {
            let (got, _) = through_vncviewer(server, s, v, text);
            report.push(format!(
                "{server:?} served {s}, vncviewer {v}: {}\n  typed {text}\n  got   {got}",
                if got == text { "exact" } else { "DIFFERS" }
            ));
        }
        for s in ["de", "us"] {
            let got = through_vncdotool(server, s, GERMAN_TEXT);
            report.push(format!(
                "{server:?} served {s}, vncdotool: {}\n  typed {GERMAN_TEXT}\n  got   {got}",
                if got == GERMAN_TEXT {
                    "exact"
                } else {
                    "DIFFERS"
                }
            ));
        }
    }
    println!("{}", report.join("\n"));
}
