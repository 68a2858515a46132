//! The on-screen consent prompt (`serve --consent prompt`), driven as the
//! customer would: a real X window on the served Xvfb, its buttons clicked
//! with xdotool, real vnc-rs viewers waiting on the other side.
//!
//! X11 only, not parametrised over a Wayland desktop (issue 16): the prompt
//! is an X11 window drawn on the served X display. On Wayland `serve
//! --consent prompt` is refused at start, and consent there is
//! `--consent cmd:PROGRAM`; both are tested on X11 and on sway in
//! tests/desktop_security.rs (`consent`).

mod binary;
mod common;

use common::XvfbGuard;
use std::process::Command;
use std::time::{Duration, Instant};
use vnc::{VncEvent, X11Event};

const TIMEOUT: Duration = Duration::from_secs(30);

fn xdotool(display: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("run xdotool");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The window named exactly `name`, if there is one.
fn window(display: &str, name: &str) -> Option<String> {
    xdotool(display, &["search", "--name", &format!("^{name}$")])
        .and_then(|s| s.lines().next().map(str::to_string))
        .filter(|s| !s.is_empty())
}

fn wait_window(display: &str, name: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(w) = window(display, name) {
            return w;
        }
        assert!(Instant::now() < deadline, "no {name:?} window appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_gone(display: &str, name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while window(display, name).is_some() {
        assert!(Instant::now() < deadline, "the {name:?} window stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The customer clicks the button labelled `name`.
fn click(display: &str, name: &str) {
    let w = wait_window(display, name);
    xdotool(
        display,
        &["mousemove", "--window", &w, "10", "10", "click", "1"],
    )
    .expect("click the button");
}

/// Centre of the window named `name`, in screen coordinates (xwininfo:
/// xdotool's geometry of a child window is not in screen coordinates).
fn centre(display: &str, name: &str) -> (u16, u16) {
    let w = wait_window(display, name);
    let out = Command::new("xwininfo")
        .args(["-id", &w])
        .env("DISPLAY", display)
        .output()
        .expect("run xwininfo");
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = |k: &str| -> u16 {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {info}"))
    };
    (
        v("Absolute upper-left X:") + v("Width:") / 2,
        v("Absolute upper-left Y:") + v("Height:") / 2,
    )
}

fn start(display: &str, db: &std::path::Path, timeout_secs: &str) -> binary::Serve {
    binary::serve(
        db,
        0,
        &[
            "--source",
            "x11",
            "--display",
            display,
            "--no-auth",
            "--consent",
            "prompt",
            "--consent-timeout",
            timeout_secs,
        ],
    )
}

type Viewer = tokio::task::JoinHandle<Result<Option<vnc::VncClient>, vnc::VncError>>;

fn knock(addr: std::net::SocketAddr) -> Viewer {
    tokio::spawn(binary::viewer(addr, String::new(), true))
}

async fn answered(v: Viewer) -> Result<vnc::VncClient, String> {
    match tokio::time::timeout(TIMEOUT, v).await {
        Ok(Ok(Ok(c))) => Ok(c.expect("held")),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => panic!("viewer task: {e}"),
        Err(_) => panic!("the viewer got no answer"),
    }
}

fn journal_sessions(db: &std::path::Path) -> Vec<serde_json::Value> {
    let (ok, out) = binary::cli(db, &["sessions", "--json"]);
    assert!(ok, "sessions --json failed");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("sessions JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_view_only_reject_and_timeout_by_clicking_the_prompt() {
    common::require_commands(&["Xvfb", "xdotool"]);
    let x = XvfbGuard::start(800, 600);
    let d = x.display_name();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let s = start(&d, &db, "3");

    // Accept: full rights.
    let v = knock(s.addr);
    click(&d, "Accept");
    let full = answered(v).await.expect("accepted viewer gets the screen");
    wait_gone(&d, "Accept");

    // View only.
    let v = knock(s.addr);
    click(&d, "View only");
    let view = answered(v).await.expect("view-only viewer gets the screen");

    // Reject: the viewer is told why.
    let v = knock(s.addr);
    click(&d, "Reject");
    let e = answered(v)
        .await
        .err()
        .expect("a rejected viewer stays out");
    assert!(e.contains("rejected"), "rejection reason: {e}");
    wait_gone(&d, "Reject");

    // No answer: refused after the timeout, and the prompt closes.
    let v = knock(s.addr);
    wait_window(&d, "Accept");
    let e = answered(v)
        .await
        .err()
        .expect("an unanswered viewer stays out");
    assert!(e.contains("in time"), "timeout reason: {e}");
    wait_gone(&d, "Accept");

    drop((full, view));
    // The journal has each answer with the rights it granted.
    let deadline = Instant::now() + TIMEOUT;
    let sessions = loop {
        let s = journal_sessions(&db);
        if s.iter().filter(|s| !s["ended_at"].is_null()).count() >= 4 {
            break s;
        }
        assert!(Instant::now() < deadline, "sessions did not end: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let consents: Vec<(String, String)> = sessions
        .iter()
        .map(|s| {
            (
                s["consent"].as_str().unwrap_or("?").to_string(),
                s["rights"].to_string(),
            )
        })
        .collect();
    // Every answer is journaled, refusals too, with the rights granted.
    let mut got: Vec<String> = consents
        .iter()
        .map(|(c, r)| format!("{c} keys={}", r.contains("\"keys\":true")))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "accepted keys=false",
            "accepted keys=true",
            "rejected keys=true",
            "timeout keys=true"
        ],
        "{consents:?}"
    );
}

/// Waits until the viewer shows a pixel of colour `rgb` somewhere.
async fn wait_colour(c: &vnc::VncClient, rgb: (u8, u8, u8)) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        c.input(X11Event::Refresh).await.expect("request");
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(ev) = tokio::time::timeout_at(until, c.recv_event()).await {
            if let Ok(VncEvent::RawImage(_, data)) = ev {
                if data.chunks_exact(4).any(|p| (p[2], p[1], p[0]) == rgb) {
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connected viewer never saw the screen change"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_prompt_stalls_nobody_and_only_the_customer_can_answer_it() {
    common::require_commands(&["Xvfb", "xdotool", "xsetroot", "xwininfo"]);
    let x = XvfbGuard::start(800, 600);
    let d = x.display_name();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let s = start(&d, &db, "60");

    let v = knock(s.addr);
    click(&d, "Accept");
    let first = answered(v).await.expect("first technician in");
    wait_gone(&d, "Accept");

    // A second technician knocks; the prompt is up.
    let second = knock(s.addr);
    let (ax, ay) = centre(&d, "Accept");

    // The first viewer keeps getting updates meanwhile.
    let st = Command::new("xsetroot")
        .args(["-solid", "#c81e3c"])
        .env("DISPLAY", &d)
        .status()
        .unwrap();
    assert!(st.success());
    wait_colour(&first, (0xc8, 0x1e, 0x3c)).await;

    // The first technician clicks "Accept" for the second: not passed on.
    for buttons in [0u8, 1, 0] {
        first
            .input(X11Event::PointerEvent((ax, ay, buttons).into()))
            .await
            .unwrap();
    }
    // The pointer did get there (motion passes), so the click had its chance.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let loc = xdotool(&d, &["getmouselocation", "--shell"]).unwrap_or_default();
        if loc.contains(&format!("X={ax}\n")) && loc.contains(&format!("Y={ay}\n")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pointer never arrived: {loc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a viewer's click answered the prompt"
    );
    assert!(window(&d, "Accept").is_some(), "the prompt closed");

    // The customer says no.
    click(&d, "Reject");
    let e = answered(second)
        .await
        .err()
        .expect("second technician refused");
    assert!(e.contains("rejected"), "{e}");
    drop(first);
}
