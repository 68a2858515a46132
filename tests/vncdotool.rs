//! Real client: vncdotool (Python, in the repository's .venv). Raw, Hextile,
//! RRE and ZRLE at 32 bpp, and RGB565 in both byte orders, compared
//! pixel-exact with the test pattern (16 bpp after the same reduction).
//! tests/clients/vncdotool_capture.py records the encoding of every
//! rectangle it receives, so a silent fallback to Raw fails the test.

mod common;

use common::{assert_same_image, reduce, rgb_bytes_to_pixels, TestServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use ticketvnc::rfb::PixelFormat;

const W: u16 = 320;
const H: u16 = 240;
/// The vncdotool release these tests were written against.
const VNCDOTOOL: &str = "vncdotool==1.4.2";

static VENV: Mutex<()> = Mutex::new(());

/// The venv's python, creating the venv and installing vncdotool if needed
/// (scripts/test.sh does the same before running the tests).
fn python() -> PathBuf {
    let _g = VENV.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv");
    let py = venv.join("bin").join("python");
    let has_vncdotool = |py: &Path| {
        Command::new(py)
            .args(["-c", "import vncdotool.client"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if py.exists() && has_vncdotool(&py) {
        return py;
    }
    if !py.exists() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("run python3 (install python3 and python3-venv)");
        assert!(
            st.success(),
            "python3 -m venv failed (install python3-venv)"
        );
    }
    let st = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", VNCDOTOOL])
        .status()
        .expect("run pip");
    assert!(st.success(), "pip install {VNCDOTOOL} failed");
    assert!(has_vncdotool(&py), "vncdotool still not importable");
    py
}

struct Capture {
    pixels: Vec<u32>,
    /// (x, y, w, h, encoding) of every rectangle received.
    rects: Vec<(u16, u16, u16, u16, i32)>,
}

fn capture(
    name: &str,
    server: &TestServer,
    encoding: &str,
    rgb565: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Capture, (i32, String)> {
    let out = common::artefact_dir().join(name);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/vncdotool_capture.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--port", &server.port().to_string()])
        .args(["--encoding", encoding])
        .arg("--out")
        .arg(&out);
    if let Some(e) = rgb565 {
        cmd.args(["--rgb565", e]);
    }
    if let Some(p) = password_file {
        cmd.arg("--password-file").arg(p);
    }
    let o = cmd.output().expect("run vncdotool_capture.py");
    if !o.status.success() {
        return Err((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    let rgb = std::fs::read(out.with_extension("rgb")).expect("capture .rgb");
    let rects = std::fs::read_to_string(out.with_extension("rects"))
        .expect("capture .rects")
        .lines()
        .map(|l| {
            let v: Vec<i64> = l.split(' ').map(|t| t.parse().unwrap()).collect();
            (
                v[0] as u16,
                v[1] as u16,
                v[2] as u16,
                v[3] as u16,
                v[4] as i32,
            )
        })
        .collect();
    Ok(Capture {
        pixels: rgb_bytes_to_pixels(&rgb),
        rects,
    })
}

fn rgb565(big_endian: bool) -> PixelFormat {
    PixelFormat {
        big_endian,
        ..PixelFormat::RGB565
    }
}

fn check(name: &str, encoding: &str, number: i32, rgb565_order: Option<&str>) {
    let server = TestServer::start(W, H, None);
    let cap = capture(name, &server, encoding, rgb565_order, None)
        .unwrap_or_else(|(code, err)| panic!("{name}: vncdotool failed ({code}): {err}"));
    let (want, got): (Vec<u32>, Vec<u32>) = match rgb565_order {
        None => (server.expected(0), cap.pixels),
        Some(order) => {
            // Compare the colour values the client received: both sides
            // reduced to RGB565 the same way.
            let pf = rgb565(order == "be");
            (
                server.expected(0).iter().map(|&p| reduce(&pf, p)).collect(),
                cap.pixels.iter().map(|&p| reduce(&pf, p)).collect(),
            )
        }
    };
    assert_same_image(name, W as usize, H as usize, &want, &got);
    let real: Vec<_> = cap.rects.iter().filter(|r| r.4 >= 0).collect();
    assert!(!real.is_empty(), "{name}: no rectangles received");
    for r in real {
        assert_eq!(
            r.4, number,
            "{name}: rectangle {r:?} used encoding {} but the client announced only {encoding} \
             ({number}); the server fell back",
            r.4
        );
    }
}

#[test]
fn raw() {
    check("vncdotool-raw", "raw", 0, None);
}

#[test]
fn hextile() {
    check("vncdotool-hextile", "hextile", 5, None);
}

#[test]
fn rre() {
    check("vncdotool-rre", "rre", 2, None);
}

#[test]
fn zrle() {
    check("vncdotool-zrle", "zrle", 16, None);
}

#[test]
fn raw_rgb565_little_endian() {
    check("vncdotool-raw-565le", "raw", 0, Some("le"));
}

#[test]
fn raw_rgb565_big_endian() {
    check("vncdotool-raw-565be", "raw", 0, Some("be"));
}

#[test]
fn hextile_rgb565_little_endian() {
    check("vncdotool-hextile-565le", "hextile", 5, Some("le"));
}

#[test]
fn zrle_rgb565_big_endian() {
    check("vncdotool-zrle-565be", "zrle", 16, Some("be"));
}

#[test]
fn rre_rgb565_big_endian() {
    check("vncdotool-rre-565be", "rre", 2, Some("be"));
}

#[test]
fn password_right_and_wrong() {
    let server = TestServer::start(W, H, Some("t1cket"));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "t1cket\n").unwrap();
    std::fs::write(&bad, "t1ckex\n").unwrap();
    let cap = capture("vncdotool-pw", &server, "raw", None, Some(&good))
        .unwrap_or_else(|(c, e)| panic!("right password refused ({c}): {e}"));
    assert_same_image(
        "vncdotool-pw",
        W as usize,
        H as usize,
        &server.expected(0),
        &cap.pixels,
    );
    match capture("vncdotool-badpw", &server, "raw", None, Some(&bad)) {
        Ok(_) => panic!("a wrong password was accepted"),
        Err((code, err)) => assert_eq!(code, 2, "expected an authentication failure: {err}"),
    }
}
