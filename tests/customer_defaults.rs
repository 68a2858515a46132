//! On the customer's machine ticketvnc serves this computer's screen by
//! default; the test pattern only when asked for, never as a silent
//! stand-in for a screen it could not find.

mod binary;
mod common;
mod support_raw;

use common::XvfbGuard;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn without_a_display_serve_says_what_to_do_instead_of_serving_a_test_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary::BIN)
        .arg("--db")
        .arg(dir.path().join("j.db"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served something without a screen");
    assert!(
        err.contains("$DISPLAY is unset") && err.contains("--source test-pattern"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_serve_shows_the_screen_in_display() {
    common::require_commands(&["Xvfb", "xsetroot"]);
    let x = XvfbGuard::start(320, 200);
    let d = x.display_name();
    let st = Command::new("xsetroot")
        .args(["-solid", "#2a7f3b"])
        .env("DISPLAY", &d)
        .status()
        .unwrap();
    assert!(st.success());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    // No --source: $DISPLAY decides.
    let mut child = common::ChildGuard(
        Command::new(binary::BIN)
            .arg("--db")
            .arg(&db)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("DISPLAY", &d)
            // In a Wayland session (a developer's desktop) auto means Wayland.
            .env_remove("XDG_SESSION_TYPE")
            .env("TICKETVNC_LOG", "warn")
            .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let addr: std::net::SocketAddr = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("ticketvnc listening on ")
                .map(|a| a.trim().parse().unwrap())
        })
        .expect("serve did not listen");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = vnc::VncConnector::new(tcp)
        .set_auth_method(async { Ok(String::new()) })
        .add_encoding(vnc::VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(vnc::PixelFormat::bgra())
        .build()
        .unwrap()
        .try_start()
        .await
        .unwrap()
        .finish()
        .unwrap();
    client.input(vnc::X11Event::Refresh).await.unwrap();
    let mut size = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, client.recv_event())
            .await
            .expect("no picture")
            .unwrap();
        match ev {
            vnc::VncEvent::SetResolution(s) => size = Some((s.width, s.height)),
            vnc::VncEvent::RawImage(_, data) => {
                let green = data
                    .chunks_exact(4)
                    .filter(|p| (p[2], p[1], p[0]) == (0x2a, 0x7f, 0x3b))
                    .count();
                assert!(
                    green * 10 >= data.len() / 4 * 9,
                    "not the X screen's colour"
                );
                break;
            }
            _ => {}
        }
    }
    assert_eq!(size, Some((320, 200)), "not the X screen's size");
}

fn connect_child(dir: &std::path::Path, port: u16) -> common::ChildGuard {
    common::ChildGuard(
        Command::new(binary::BIN)
            .arg("--db")
            .arg(dir.join("j.db"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("TICKETVNC_LOG", "warn")
            .args(["connect", &format!("127.0.0.1:{port}"), "--retry-for", "60"])
            .args(["--source", "test-pattern", "--fps", "0", "--size", "64x48"])
            .args(["--ticket", "77"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn sigterm_and_wait(c: &mut common::ChildGuard) -> std::process::ExitStatus {
    let st = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = c.0.try_wait().unwrap() {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop connect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM while connected ends the session in order: the viewer is closed
/// and the journal has the end (before, the process died on the spot and
/// the session was only closed by crash recovery at the next start).
/// SIGTERM while still dialling gives up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_stops_in_order_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = connect_child(dir.path(), port);
    let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("connect never dialled")
        .unwrap();
    support_raw::handshake(&mut tcp, &support_raw::Auth::None, true)
        .await
        .unwrap();
    let mut viewer = support_raw::RawClient::after_server_init(tcp)
        .await
        .unwrap();
    // The session row is written before ServerInit; now stop.
    let st = sigterm_and_wait(&mut c);
    assert!(st.success(), "connect exited with {st}");
    tokio::time::timeout(Duration::from_secs(10), viewer.expect_close())
        .await
        .expect("the viewer was not disconnected")
        .ok();
    let (ok, out) = binary::cli(&dir.path().join("j.db"), &["sessions", "--json"]);
    assert!(ok);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 1, "{out}");
    assert_eq!(v[0]["end_reason"], "server stopped", "{out}");
    assert_eq!(v[0]["ticket"], "77", "{out}");

    // Nobody listening: SIGTERM during the retries.
    drop(listener);
    let mut c = connect_child(dir.path(), port);
    std::thread::sleep(Duration::from_millis(1500));
    let st = sigterm_and_wait(&mut c);
    assert!(st.success(), "connect exited with {st}");
    let mut out = String::new();
    use std::io::Read;
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(
        out.contains("stopped before a technician connected"),
        "{out}"
    );
}
