//! The UltraVNC repeater path (mode II) of `ticketvnc connect --repeater`.
//!
//! There is no repeater package, so this suite has a minimal mode-II
//! repeater: a server registers by sending the 250-byte, NUL-padded
//! "ID:<id>"; a viewer is greeted with "RFB 000.000\n" and answers with its
//! own 250-byte ID; equal IDs are paired and their bytes relayed. It is
//! proved faithful by pairing x11vnc (`-connect repeater=ID:...`) with a
//! viewer through it, then ticketvnc goes through it with the ticket
//! number as ID and the ticket's one-time code.

mod binary;
mod common;
mod repeater_support;

use repeater_support::{rfb_login, viewer_stream, Repeater, WAIT};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repeater is faithful: x11vnc registers with it and a viewer with
/// the same ID gets x11vnc's screen.
#[test]
fn the_test_repeater_pairs_x11vnc() {
    common::require_commands(&["Xvfb", "x11vnc", "xdpyinfo"]);
    let xvfb = common::XvfbGuard::start(320, 240);
    let rep = Repeater::start(0, 0);
    let log = std::fs::File::create(common::artefact_dir().join("repeater-x11vnc.log")).unwrap();
    let _x11vnc = common::ChildGuard(
        Command::new("x11vnc")
            .args([
                "-display",
                &xvfb.display_name(),
                "-nopw",
                "-shared",
                "-forever",
            ])
            .arg("-connect")
            .arg(format!("repeater=ID:1234+127.0.0.1:{}", rep.server_port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run x11vnc"),
    );
    let deadline = Instant::now() + WAIT;
    let s = loop {
        if let Some(s) = viewer_stream(rep.viewer_port, "1234", Duration::from_secs(2)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "x11vnc never paired through the repeater"
        );
    };
    rfb_login(s, "").expect("x11vnc's screen through the repeater");
    rep.stop();
}

/// ticketvnc registers under the ticket number; a viewer with another ID
/// is never paired; one with the ticket's ID and code gets the screen; a
/// repeater restart is survived by registering again.
#[test]
fn ticketvnc_through_the_repeater_with_the_ticket_as_id() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ticketvnc.db");
    let code = binary::open_code(&db, "4711", &[]);
    let rep = Repeater::start(0, 0);
    let (sport, vport) = (rep.server_port, rep.viewer_port);
    let log = std::fs::File::create(common::artefact_dir().join("repeater-ticketvnc.log")).unwrap();
    let mut child = Command::new(binary::BIN)
        .arg("--db")
        .arg(&db)
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .args(["connect", "--repeater", &format!("127.0.0.1:{sport}")])
        .args([
            "--ticket",
            "4711",
            "--source",
            "test-pattern",
            "--fps",
            "0",
            "--size",
            "64x48",
            "--retry-for",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run ticketvnc connect --repeater");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _server = common::ChildGuard(child);
    let mut line = String::new();
    while !line.contains("registering with repeater") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "connect exited early"
        );
    }
    // Another ID never pairs.
    assert!(
        viewer_stream(vport, "9999", Duration::from_secs(2)).is_none(),
        "a wrong ID was paired"
    );
    // The repeater crashes and comes back on the same ports.
    rep.stop();
    std::thread::sleep(Duration::from_millis(500));
    let rep = Repeater::start(sport, vport);
    let deadline = Instant::now() + WAIT;
    let s = loop {
        if let Some(s) = viewer_stream(vport, "4711", Duration::from_secs(2)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ticketvnc did not register again"
        );
    };
    // A repeater ID can be guessed: the ticket's code is required.
    rfb_login(s, &code).expect("the screen through the repeater with the code");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, json) = binary::cli(&db, &["sessions", "--json"]);
        let v: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
        if v.iter()
            .any(|s| s["direction"] == "repeater" && s["ticket"] == "4711")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no repeater session journaled: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rep.stop();
}
