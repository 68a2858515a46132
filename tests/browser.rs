//! The technician's browser as the viewer: Debian's chromium, driven by
//! Playwright (tests/clients/novnc_browser.mjs), opens the page the real
//! `ticketvnc serve` serves on its RFB port, connects over the WebSocket
//! with a password or a ticket's one-time code, and must show exactly
//! what `import` grabs from the X screen, under noVNC's own encoding list
//! and forced to each encoding ticketvnc offers; typing and clicking in
//! the page reach X; a wrong password shows an error.

mod binary;
mod common;

use common::{require_commands, ChildGuard, XvfbGuard};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const W: u32 = 320;
const H: u32 = 200;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// playwright-core in tests/clients/node_modules (scripts/install-deps.sh).
fn node_ready() {
    require_commands(&["node", "chromium", "Xvfb", "import", "xterm", "xsetroot"]);
    let dir = root().join("tests/clients");
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new(root().join("scripts/install-deps.sh"))
            .arg("--node")
            .status()
            .expect("run scripts/install-deps.sh --node");
        assert!(st.success(), "scripts/install-deps.sh --node failed");
    }
}

struct Browser {
    _child: ChildGuard,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let mut child = Command::new("node")
            .arg(root().join("tests/clients/novnc_browser.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Browser {
            _child: ChildGuard(child),
            stdin,
            out,
        }
    }
    fn ask(&mut self, cmd: &str) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).expect("browser answer");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("browser said {line:?} to {cmd:?}: {e}"));
        assert!(v.get("failure").is_none(), "{cmd:?}: {v}");
        v
    }
    fn quit(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        self.stdin.flush().unwrap();
        let mut rest = String::new();
        // EOF once the browser is closed and node has exited.
        let _ = self.out.read_line(&mut rest);
    }
    /// The canvas as 0xRRGGBB pixels.
    fn pixels(&mut self) -> (usize, usize, Vec<u32>) {
        use base64::Engine;
        let v = self.ask("pixels");
        let rgba = base64::engine::general_purpose::STANDARD
            .decode(v["rgba"].as_str().unwrap())
            .unwrap();
        let px = rgba
            .chunks_exact(4)
            .map(|c| ((c[0] as u32) << 16) | ((c[1] as u32) << 8) | c[2] as u32)
            .collect();
        (
            v["w"].as_u64().unwrap() as usize,
            v["h"].as_u64().unwrap() as usize,
            px,
        )
    }
}

fn x_command(display: &str, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn grab(display: &str) -> Vec<u32> {
    let out = Command::new("import")
        .env("DISPLAY", display)
        .args(["-window", "root", "-depth", "8", "rgb:-"])
        .output()
        .expect("import");
    assert!(out.status.success(), "import failed");
    common::rgb_bytes_to_pixels(&out.stdout)
}

/// Poll until the canvas equals the X screen; on failure write both.
fn wait_same(b: &mut Browser, display: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = grab(display);
        let (w, h, canvas) = b.pixels();
        if (w, h) == (W as usize, H as usize) && canvas == screen {
            return;
        }
        if Instant::now() > deadline {
            common::assert_same_image(what, W as usize, H as usize, &screen, &canvas);
            panic!("{what}: canvas {w}x{h} never equalled the screen");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_file(path: &Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "typed text never reached X: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_served_novnc_page_shows_the_screen_and_drives_it() {
    node_ready();
    let x = XvfbGuard::start_in(84..92, W, H);
    let d = x.display_name();
    let dir = tempfile::tempdir().unwrap();
    let typed = dir.path().join("typed.txt");
    assert!(x_command(&d, "xsetroot")
        .args(["-solid", "#336699"])
        .status()
        .unwrap()
        .success());
    // A text window at the top left: what is typed in the browser lands
    // in the file, line by line.
    let _xterm = ChildGuard(
        x_command(&d, "xterm")
            .args(["-geometry", "30x5+0+0", "-fn", "fixed", "-e", "sh", "-c"])
            .arg(format!("cat > {}", typed.display()))
            .spawn()
            .expect("xterm"),
    );
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let db = dir.path().join("ticketvnc.db");
    let code = binary::open_code(&db, "4711", &[]);
    let serve = binary::serve(
        &db,
        30,
        &[
            "--source",
            "x11",
            "--display",
            &d,
            "--password-file",
            pw.to_str().unwrap(),
            // Compared with `import` grabs, which never show the pointer.
            "--no-drawn-cursor",
        ],
    );
    let url = format!("http://{}/?ticket=4711", serve.addr);
    let mut b = Browser::start();

    // A wrong password: an error on the page, no picture.
    assert_eq!(b.ask(&format!("open {url}"))["status"], 200);
    let r = b.ask("connect wrong");
    assert_eq!(r["error"], true, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("Authentication failed"),
        "{r}"
    );

    // The ticket's one-time code, noVNC's own encoding list.
    b.ask(&format!("open {url}"));
    let r = b.ask(&format!("connect {code}"));
    assert_eq!(r["error"], false, "{r}");
    wait_same(&mut b, &d, "browser-default");

    // Typing and clicking reach X: click into the xterm, type a line.
    b.ask("click 20 20");
    b.ask("type hello from the browser\\n");
    wait_file(&typed, "hello from the browser\n");
    wait_same(&mut b, &d, "browser-after-typing");

    // Forced to each encoding ticketvnc offers (plus DesktopSize and
    // LastRect), with the static password.
    for (name, enc) in [
        ("raw", 0),
        ("copyrect+raw", 1),
        ("rre", 2),
        ("hextile", 5),
        ("zlib", 6),
        ("tight", 7),
        ("zrle", 16),
    ] {
        let list = if enc == 1 {
            "1,0,-223,-224".to_string()
        } else {
            format!("{enc},-223,-224")
        };
        b.ask(&format!("open {url} {list}"));
        let r = b.ask("connect s3cret");
        assert_eq!(r["error"], false, "{name}: {r}");
        wait_same(&mut b, &d, &format!("browser-{name}"));
    }
    b.quit();
}
