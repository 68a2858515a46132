//! Hooks on the live server: `serve --webhook` posts signed session events
//! to the ticket system, and a receiver that never answers does not hold up
//! a viewer's updates.

mod binary;
#[path = "common/testdb.rs"]
mod testdb;

use binary::{open_code, serve};
use hmac::{Hmac, KeyInit, Mac};
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;
use vnc::{PixelFormat, VncConnector, VncEncoding, VncEvent, X11Event};

/// Accepts connections, reads one HTTP request from each, and never answers.
/// Each request (head and body) is sent to the test.
fn hanging_receiver() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read until the body announced by Content-Length is complete.
            loop {
                let n = match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let head = text[..end].to_string();
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        let _ = tx.send((head, body));
                        break;
                    }
                }
            }
            held.push(c); // never answered, never closed
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_and_a_hanging_receiver_does_not_delay_updates() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, "s3cret-shared-with-the-helpdesk\n").unwrap();
    let (port, requests) = hanging_receiver();
    let url = format!("http://127.0.0.1:{port}/hook");
    let s = serve(
        &db,
        10,
        &[
            "--webhook",
            &url,
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let code = open_code(&db, "4711", &[]);

    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let client = VncConnector::new(tcp)
        .set_auth_method(async move { Ok(code) })
        .add_encoding(VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(PixelFormat::bgra())
        .build()
        .unwrap()
        .try_start()
        .await
        .unwrap()
        .finish()
        .unwrap();

    // The session_start hook reaches the receiver, which then hangs.
    let (head, body) =
        tokio::task::spawn_blocking(move || requests.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the webhook received nothing");
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["event"], "session_start", "{payload}");
    assert_eq!(payload["ticket"], "4711", "{payload}");
    let sig = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-ticketvnc-signature")
                .then(|| v.trim().to_string())
        })
        .expect("no signature header");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret-shared-with-the-helpdesk").unwrap();
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={expected}"));
    assert!(!String::from_utf8_lossy(&body).contains("s3cret"));

    // While the receiver hangs (its delivery is still outstanding), the
    // animated screen keeps arriving: ten incremental updates with pixels.
    let mut updates = 0;
    while updates < 10 {
        client.input(X11Event::Refresh).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(30), client.recv_event())
            .await
            .expect("updates stopped while the webhook hangs")
            .unwrap();
        if let VncEvent::RawImage(..) = ev {
            updates += 1;
        }
    }
    let _ = client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_url_and_hook_command_can_come_from_files_kept_out_of_ps() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let (port, requests) = hanging_receiver();
    let url_file = dir.path().join("webhook.url");
    std::fs::write(
        &url_file,
        format!("http://127.0.0.1:{port}/hook?token=tok-5ecret-in-url\n"),
    )
    .unwrap();
    let out = dir.path().join("cmd.out");
    let cmd_file = dir.path().join("hook.cmd");
    std::fs::write(
        &cmd_file,
        format!(
            "echo \"cmd-5ecret $TICKETVNC_EVENT\" >> '{}'\n",
            out.display()
        ),
    )
    .unwrap();
    let s = serve(
        &db,
        0,
        &[
            "--webhook-url-file",
            url_file.to_str().unwrap(),
            "--hook-cmd-file",
            cmd_file.to_str().unwrap(),
        ],
    );
    // Neither secret is on the command line other users can read.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.child.id())).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("--webhook-url-file"), "{cmdline}");
    assert!(!cmdline.contains("5ecret"), "{cmdline}");

    let code = open_code(&db, "4711", &[]);
    binary::viewer(s.addr, code, false).await.unwrap();
    let (head, body) =
        tokio::task::spawn_blocking(move || requests.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the webhook from the file received nothing");
    assert!(
        head.starts_with("POST /hook?token=tok-5ecret-in-url "),
        "{head}"
    );
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["event"], "session_start");
    for _ in 0..300 {
        if std::fs::read_to_string(&out).is_ok_and(|t| t.contains("cmd-5ecret session_start")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the hook command from the file never ran");
}
