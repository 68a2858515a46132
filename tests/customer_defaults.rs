//! On the customer's machine ticketvnc serves this computer's screen by
//! default; the test pattern only when asked for, never as a silent
//! stand-in for a screen it could not find.

mod binary;
mod common;

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
