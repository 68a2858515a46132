//! Security, consent, journal and hook tests over a real desktop, each run
//! on X11 (Xvfb, `--source x11`) and on Wayland (headless sway,
//! `--source wayland`) from one body (issue 16: "every security, consent,
//! journal and hook test that runs on X11 runs on one Wayland source
//! too"). `tests/common/desktop.rs` gives each desktop the same parts: the
//! `serve` arguments of its source, the screen read independently (`import`
//! / `grim`), and an input probe (a terminal reporting keys and mouse into
//! a file: xterm / foot). Every test checks that the source is the
//! desktop's (its log line) and that input *does* arrive from a viewer
//! with the right, so "nothing arrived" cannot pass by accident.
//!
//! Not here, and why:
//! - `tests/consent_prompt.rs` (`--consent prompt`): the prompt is an X11
//!   window on the served display; on Wayland `serve` refuses it at start
//!   (checked in `consent_decides_who_gets_in_and_with_what` on sway).
//! - the in-process `tests/security.rs`, `tests/journal_serve.rs`,
//!   `tests/hooks_serve.rs`, `tests/tigervnc.rs` (VeNCrypt) serve the test
//!   pattern, not a desktop: the handshake, journal and hooks do not depend
//!   on the source; what does (input gated by rights and consent, the
//!   pixels a viewer gets, what reaches the log) is here.
//!
//! Run one desktop: `cargo test --test desktop_security sway`.

mod common;

use common::desktop::{Desktop, DesktopUnderTest, TIMEOUT};
use common::drive::{venv_python, Drive};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ticketvnc::security::{vnc_auth_response, VncPassword};

// ------------------------------------------------------------- helpers

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).expect("read from the server");
    b
}

/// RFB 3.8 up to the VNC-auth response with `password`; nothing read after
/// it (the SecurityResult waits for consent).
fn vnc_login(addr: SocketAddr, password: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    read_exact(&mut s, 12);
    s.write_all(b"RFB 003.008\n").unwrap();
    let n = read_exact(&mut s, 1)[0] as usize;
    assert!(n > 0, "the server refused the connection");
    let types = read_exact(&mut s, n);
    assert!(types.contains(&2), "VNC auth offered: {types:?}");
    s.write_all(&[2]).unwrap();
    let mut challenge = [0u8; 16];
    challenge.copy_from_slice(&read_exact(&mut s, 16));
    s.write_all(&vnc_auth_response(
        &VncPassword::new(password.as_bytes()),
        &challenge,
    ))
    .unwrap();
    s
}

/// KeyEvent press and release of each character of `text` (Latin-1
/// keysyms), then a pointer press and release of button 1 at `at`.
fn input_messages(text: &str, at: (u16, u16)) -> Vec<u8> {
    let mut m = Vec::new();
    for ch in text.chars() {
        for down in [1u8, 0] {
            m.extend_from_slice(&[4, down, 0, 0]);
            m.extend_from_slice(&(ch as u32).to_be_bytes());
        }
    }
    for mask in [1u8, 0] {
        m.extend_from_slice(&[5, mask]);
        m.extend_from_slice(&at.0.to_be_bytes());
        m.extend_from_slice(&at.1.to_be_bytes());
    }
    m
}

/// vncdotool (tests/clients/vncdotool_capture.py, Raw) with `password_file`:
/// the picture, or its exit status (2: authentication failed).
fn capture(addr: SocketAddr, password_file: Option<&Path>, name: &str) -> Result<Vec<u32>, i32> {
    let out = common::artefact_dir().join(name);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/vncdotool_capture.py");
    let mut c = Command::new(venv_python());
    c.arg(script)
        .args(["--port", &addr.port().to_string()])
        .args(["--encoding", "raw"])
        .arg("--out")
        .arg(&out);
    if let Some(p) = password_file {
        c.arg("--password-file").arg(p);
    }
    let o = c
        .stdin(Stdio::null())
        .output()
        .expect("run vncdotool_capture.py");
    if !o.status.success() {
        return Err(o.status.code().unwrap_or(-1));
    }
    let rgb = std::fs::read(format!("{}.rgb", out.display())).expect("capture .rgb");
    Ok(common::rgb_bytes_to_pixels(&rgb))
}

/// A viewer's picture is the desktop's screen as `import`/`grim` read it
/// (both taken until they agree: the screen may still be settling).
fn viewer_sees_the_screen(d: &DesktopUnderTest, addr: SocketAddr, pw: &Path, name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = capture(addr, Some(pw), name).expect("vncdotool gets a picture");
        let screen = d.screen().expect("read the screen");
        let r = common::compare_images(name, screen.0, screen.1, &screen.2, &got);
        if r.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every mouse report is at the cell of the (one) left press: the pointer
/// never went where a refused or view-only viewer moved it.
fn pointer_only_where_the_full_viewer_clicked(probe: &common::desktop::Probe) {
    let ev = probe.mouse();
    let click = ev
        .iter()
        .find(|m| m.code == 0 && m.press)
        .map(|m| (m.col, m.row))
        .expect("a left press");
    assert!(
        ev.iter().all(|m| (m.col, m.row) == click),
        "the pointer was elsewhere than the full viewer put it: {ev:?}"
    );
}

/// A file only the serving user reads, holding `text`; its path.
fn secret_file(d: &DesktopUnderTest, name: &str, text: &str) -> String {
    d.write_file(name, &format!("{text}\n"), 0o600)
        .to_str()
        .unwrap()
        .to_owned()
}

fn wait_rows(
    d: &DesktopUnderTest,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    common::poll_until(what, TIMEOUT, || {
        let rows = d.sessions();
        pred(&rows).then_some(rows)
    })
}

fn rights(r: &serde_json::Value) -> (bool, bool, bool, bool) {
    let f = |k: &str| r["rights"][k].as_bool().unwrap_or(false);
    (f("view"), f("keys"), f("pointer"), f("clipboard"))
}

// -------------------------------------------------------------- rights

/// A viewer with the view-only password, and any viewer of a `--view-only`
/// server, see the desktop's pixels but inject nothing: no keys, clicks or
/// clipboard reach the probe; then a viewer with the full password on the
/// same server types and clicks, and exactly its input arrives. The journal
/// rows carry the rights each session had.
fn view_only_viewers_inject_nothing(kind: Desktop) {
    let mut d = DesktopUnderTest::start(kind, "viewonly");
    let probe = d.probe();
    let pw = secret_file(&d, "pw", "fullpw");
    let vpw = secret_file(&d, "vpw", "lookpw");
    let s = d.serve(
        "viewonly",
        "info",
        &["--password-file", &pw, "--view-only-password-file", &vpw],
    );
    assert!(s.log_text().contains(d.ready_line()), "{}", s.log_text());
    // The watcher sees exactly the desktop (the probe terminal).
    viewer_sees_the_screen(&d, s.addr, Path::new(&vpw), &format!("{kind:?}-viewonly"));

    let flag = d.serve_on(
        "flag.db",
        "viewonly-flag",
        "info",
        &["--view-only", "--no-auth"],
    );
    for (addr, password) in [(s.addr, Some("lookpw")), (flag.addr, None)] {
        let mut v = match password {
            Some(p) => Drive::start_with_password(addr, p),
            None => Drive::start(addr),
        };
        // The full update request at the end is answered only after the
        // server has handled everything before it.
        v.run(&[
            "move 500 400",
            "click 2",
            "click 3",
            "key q",
            "type nope",
            "paste view-only must not paste",
            "refresh",
        ]);
        v.quit();
    }
    // Input goes through one queue: once the full viewer's input has
    // arrived, whatever the view-only viewers sent would have too.
    let mut full = Drive::start_with_password(s.addr, "fullpw");
    full.run(&["move 100 100", "click 1", "type ok", "refresh"]);
    probe.wait("the full viewer's click and `ok`", |t, m| {
        t.contains("ok") && m.iter().any(|e| e.code == 0 && e.press)
    });
    assert_eq!(probe.text(), "ok", "{}", probe.raw());
    assert_eq!(
        probe.presses(1) + probe.presses(2),
        0,
        "a view-only viewer's click arrived: {:?}",
        probe.mouse()
    );
    pointer_only_where_the_full_viewer_clicked(&probe);
    assert_ne!(
        d.clipboard().as_deref(),
        Some("view-only must not paste"),
        "a view-only viewer set the clipboard"
    );
    // The full viewer's paste does reach the desktop's clipboard (X11
    // selection or wlr-data-control), so the check above could fail.
    full.run(&["paste the full viewer pastes"]);
    common::poll_until("the full viewer's paste", TIMEOUT, || {
        (d.clipboard()? == "the full viewer pastes").then_some(())
    });
    full.quit();

    let rows = wait_rows(&d, "the three sessions, ended", |rows| {
        rows.len() >= 3 && rows.iter().all(|r| !r["end_reason"].is_null())
    });
    let viewing: Vec<_> = rows
        .iter()
        .filter(|r| rights(r) == (true, false, false, false))
        .collect();
    let full_rows: Vec<_> = rows
        .iter()
        .filter(|r| rights(r) == (true, true, true, true))
        .collect();
    // The watcher's picture, the view-only driver, the full driver.
    assert!(
        viewing.len() >= 2 && full_rows.len() == 1,
        "rights in the journal: {rows:#?}"
    );
    drop(flag);
    drop(s);
}
on_each_desktop!(view_only, view_only_viewers_inject_nothing);

// ------------------------------------------------------------- consent

/// `--consent cmd:PROGRAM` on a desktop: while the person at the screen has
/// not answered the viewer sees nothing (not even the SecurityResult) and
/// its pipelined keys and clicks are not injected; no answer (timeout) and
/// a rejection end the connection with a reason and inject nothing; "view
/// only" lets in a watcher whose input is dropped; acceptance lets in a
/// viewer whose input arrives. The journal rows say which was which.
fn consent_decides_who_gets_in_and_with_what(kind: Desktop) {
    let mut d = DesktopUnderTest::start(kind, "consent");
    let probe = d.probe();
    let answer = d.write_file("answer", "wait\n", 0o644);
    let script = d.write_file(
        "ask.sh",
        &format!(
            "#!/bin/sh\ncase \"$(cat '{}')\" in\n  accept) exit 0 ;;\n  view) echo view-only; exit 0 ;;\n  wait) exec sleep 600 ;;\n  *) exit 1 ;;\nesac\n",
            answer.display()
        ),
        0o755,
    );
    let pw = secret_file(&d, "pw", "rightpw");
    let consent = format!("cmd:{}", script.display());
    let s = d.serve(
        "consent",
        "info",
        &[
            "--password-file",
            &pw,
            "--consent",
            &consent,
            "--consent-timeout",
            "3",
        ],
    );
    assert!(s.log_text().contains(d.ready_line()), "{}", s.log_text());
    let set = |a: &str| std::fs::write(&answer, format!("{a}\n")).unwrap();

    for (a, reason) in [
        ("wait", "did not answer in time"),
        ("reject", "rejected the session"),
    ] {
        set(a);
        let mut c = vnc_login(s.addr, "rightpw");
        // ClientInit and input right behind the password, as an impatient
        // viewer would send them.
        let mut m = vec![1u8];
        m.extend(input_messages("xyz", (50, 50)));
        c.write_all(&m).unwrap();
        if a == "wait" {
            // Pending: nothing at all reaches the viewer.
            c.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            let mut b = [0u8; 1];
            match c.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                other => panic!("the viewer got {other:?} before consent"),
            }
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert_eq!(
            got.get(..4),
            Some(&[0u8, 0, 0, 1][..]),
            "{a}: expected a failed SecurityResult, got {got:?}"
        );
        let text = String::from_utf8_lossy(&got[8.min(got.len())..]).into_owned();
        assert!(text.contains(reason), "{a}: reason {text:?}");
    }

    set("view");
    let mut v = Drive::start_with_password(s.addr, "rightpw");
    v.run(&["move 300 300", "click 3", "type vw", "refresh"]);
    v.quit();
    set("accept");
    let mut full = Drive::start_with_password(s.addr, "rightpw");
    full.run(&["move 100 100", "click 1", "type ok", "refresh"]);
    probe.wait("the accepted viewer's click and `ok`", |t, m| {
        t.contains("ok") && m.iter().any(|e| e.code == 0 && e.press)
    });
    full.quit();
    assert_eq!(probe.text(), "ok", "{}", probe.raw());
    assert_eq!(
        probe.presses(2),
        0,
        "a refused or view-only viewer's click arrived: {:?}",
        probe.mouse()
    );
    pointer_only_where_the_full_viewer_clicked(&probe);

    let rows = wait_rows(&d, "four ended sessions", |rows| {
        rows.len() >= 4 && rows.iter().all(|r| !r["end_reason"].is_null())
    });
    let consent_of = |r: &serde_json::Value| r["consent"].as_str().unwrap_or("").to_owned();
    let mut seen: Vec<(String, (bool, bool, bool, bool))> =
        rows.iter().map(|r| (consent_of(r), rights(r))).collect();
    seen.sort();
    let want = |c: &str, r| (c.to_owned(), r);
    let mut expected = vec![
        want("timeout", rights_of(&rows, "timeout")),
        want("rejected", rights_of(&rows, "rejected")),
        want("accepted", (true, false, false, false)),
        want("accepted", (true, true, true, true)),
    ];
    expected.sort();
    assert_eq!(seen, expected, "{rows:#?}");
    drop(s);

    if kind == Desktop::Sway {
        // The prompt is an X11 window: refused at start on Wayland, with
        // the way out named.
        let (st, err) = d.serve_fails(&["--no-auth", "--consent", "prompt"]);
        assert!(!st.success(), "{err}");
        assert!(
            err.contains("--consent prompt needs an X11 screen"),
            "{err}"
        );
    }
}
on_each_desktop!(consent, consent_decides_who_gets_in_and_with_what);

/// The rights journaled on the first row with consent `c` (refused
/// sessions keep what was asked for; only the consent column matters).
fn rights_of(rows: &[serde_json::Value], c: &str) -> (bool, bool, bool, bool) {
    rows.iter()
        .find(|r| r["consent"] == c)
        .map(rights)
        .unwrap_or_default()
}

// ------------------------------------------------ journal, codes, hooks

/// A one-time code session on the desktop: its input arrives; the code
/// works once; a wrong code is refused; the journal row names the ticket,
/// the credential, the rights and how the session ended, and its history
/// the clipboard transfer (size only: there are no input counts in the
/// journal, `bytes_in` is the nearest); the hook command
/// got session_start and session_end with that data and the journal head,
/// and the hash chain verifies. The code is in no journal file.
fn code_sessions_are_journaled_and_hooked(kind: Desktop) {
    let mut d = DesktopUnderTest::start(kind, "journal");
    let probe = d.probe();
    let hooks = d.dir().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    std::fs::set_permissions(&hooks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let hook = format!(
        "cat > '{}'/\"$TICKETVNC_EVENT-$TICKETVNC_SESSION.json\"",
        hooks.display()
    );
    let s = d.serve("journal", "info", &["--hook-cmd", &hook]);
    assert!(s.log_text().contains(d.ready_line()), "{}", s.log_text());
    let code = d.open_code("4711");

    let mut v = Drive::start_with_password(s.addr, &code);
    v.run(&[
        "move 100 100",
        "click 1",
        "type hi",
        "paste clipdata",
        "refresh",
    ]);
    probe.wait("the code session's click and `hi`", |t, m| {
        t == "hi" && m.iter().any(|e| e.code == 0 && e.press)
    });
    v.quit();

    let code_file = d.write_file("code", &format!("{code}\n"), 0o600);
    assert_eq!(
        capture(s.addr, Some(&code_file), "code-twice").err(),
        Some(2),
        "the code worked twice"
    );
    let wrong = d.write_file("wrong", "WRONG234\n", 0o600);
    assert_eq!(
        capture(s.addr, Some(&wrong), "code-wrong").err(),
        Some(2),
        "a wrong code worked"
    );

    let rows = wait_rows(&d, "the code session, ended", |rows| {
        rows.iter()
            .any(|r| r["ticket"] == "4711" && r["end_reason"] == "viewer closed")
    });
    let row = rows
        .iter()
        .find(|r| r["ticket"] == "4711" && r["end_reason"] == "viewer closed")
        .unwrap();
    assert_eq!(row["security"], "VNC", "{row}");
    assert!(
        row["credential"]
            .as_str()
            .unwrap_or("")
            .starts_with("one-time code"),
        "{row}"
    );
    assert!(
        row["peer"].as_str().unwrap_or("").starts_with("127.0.0.1:"),
        "{row}"
    );
    assert_eq!(rights(row), (true, true, true, true), "{row}");
    assert_eq!(row["consent"], "auto", "{row}");
    assert!(row["updates_sent"].as_u64().unwrap_or(0) >= 1, "{row}");
    assert!(
        rows.iter()
            .filter(|r| r["end_reason"] == "auth failed")
            .count()
            >= 2,
        "the reused and the wrong code: {rows:#?}"
    );

    let id = row["id"].as_u64().unwrap();
    let read = |ev: &str| -> serde_json::Value {
        let p = hooks.join(format!("{ev}-{id}.json"));
        common::poll_until(&format!("the {ev} hook"), TIMEOUT, || {
            serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()
        })
    };
    let start = read("session_start");
    assert_eq!(start["ticket"], "4711", "{start}");
    assert_eq!(start["session"], id, "{start}");
    assert_eq!(start["data"]["peer"], row["peer"], "{start}");
    assert_eq!(start["data"]["rights"], "view,keys,pointer,clipboard");
    assert_eq!(start["data"]["consent"], "auto");
    let end = read("session_end");
    assert_eq!(end["data"]["end_reason"], "viewer closed", "{end}");
    assert_eq!(end["data"]["updates_sent"], row["updates_sent"], "{end}");
    assert!(end["journal_head"]["hash"].is_string(), "{end}");

    // The clipboard transfer is journaled by size, never its text; the
    // text itself is on the desktop's clipboard.
    let (_, shown, _) = d.cli(&["ticket", "show", "4711"]);
    assert!(
        shown.lines().any(|l| l.contains(" clipboard ")
            && l.contains(r#"{"bytes":8,"count":1,"direction":"from viewer"}"#)),
        "{shown}"
    );
    assert!(!shown.contains("clipdata"), "{shown}");
    assert_eq!(d.clipboard().as_deref(), Some("clipdata"));
    let (ok, out, err) = d.cli(&["sessions", "verify"]);
    assert!(ok, "the journal's chain does not verify: {out}{err}");
    drop(s);
    for entry in std::fs::read_dir(d.dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("journal.db") && entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
                "the code is in {name}"
            );
        }
    }
}
on_each_desktop!(journal_and_hooks, code_sessions_are_journaled_and_hooked);

// ----------------------------------------------------------------- log

/// A secret typed by a viewer reaches the desktop (the probe) but never
/// the log, even at the most verbose level. (Moved here from
/// tests/abuse.rs, which ran it on X11 only and did not check the keys
/// arrived.)
fn keystrokes_never_reach_the_log(kind: Desktop) {
    let mut d = DesktopUnderTest::start(kind, "secretlog");
    let probe = d.probe();
    let pw = secret_file(&d, "pw", "rightpw");
    let s = d.serve("secretlog", "trace", &["--password-file", &pw]);
    let mut c = vnc_login(s.addr, "rightpw");
    assert_eq!(read_exact(&mut c, 4), [0, 0, 0, 0]);
    c.write_all(&[1]).unwrap();
    let head = read_exact(&mut c, 24);
    let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
    read_exact(&mut c, name_len);
    let secret = "Qz7#kLm9";
    let mut m = input_messages(secret, (100, 100));
    // A request and its answer: the keys were handled before it.
    m.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 10, 0, 10]);
    c.write_all(&m).unwrap();
    let _ = read_exact(&mut c, 4);
    probe.wait("the secret", |t, _| t == secret);
    drop(c);
    let log = s.stop();
    assert!(log.contains("TRACE"), "the log level was not trace");
    assert!(log.contains(d.ready_line()), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("enigo") || line.contains("WARN") || line.contains("ERROR"),
            "enigo logged below warn: {line}"
        );
    }
    assert!(!log.contains(secret), "the secret is in the log");
    for ch in secret.chars() {
        let hex = format!("{:#x}", ch as u32);
        assert!(
            !log.lines().any(|l| l.contains("key") && l.contains(&hex)),
            "a keysym ({hex}) is in the log"
        );
    }
}
on_each_desktop!(secret_log, keystrokes_never_reach_the_log);

// --------------------------------------------------------------- peers

/// Not a test: what the peer on the same desktop does (x11vnc 0.9.16 on
/// X11, wayvnc 0.5 on sway), printed. Its view-only switch (`-viewonly`,
/// `--disable-input`): does a viewer's click and typing arrive? At its most
/// verbose log level (`-v`, `-L trace`): is a typed secret in its log?
/// `cargo test --test desktop_security peers -- --ignored --nocapture`
fn peers(kind: Desktop) {
    let mut d = DesktopUnderTest::start(kind, "peers");
    let probe = d.probe();
    let port = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = |name: &str, view_only: bool| {
        let p = port(()).to_string();
        let args: Vec<&str> = match (kind, view_only) {
            (Desktop::X11, v) => {
                let mut a = vec!["x11vnc", "-rfbport", &p, "-localhost", "-nopw"];
                a.extend(["-forever", "-shared", "-v"]);
                if v {
                    a.push("-viewonly");
                }
                a
            }
            (Desktop::Sway, true) => vec!["wayvnc", "-d", "-L", "trace", "127.0.0.1", &p],
            (Desktop::Sway, false) => vec!["wayvnc", "-L", "trace", "127.0.0.1", &p],
        };
        let mut s = d.spawn(name, &args);
        s.addr = format!("127.0.0.1:{p}").parse().unwrap();
        let addr = s.addr;
        common::poll_until("the peer to listen", TIMEOUT, || {
            TcpStream::connect(addr).ok()
        });
        s
    };
    let peer = match kind {
        Desktop::X11 => "x11vnc",
        Desktop::Sway => "wayvnc",
    };

    let ro = start("peer-ro", true);
    let mut v = Drive::start(ro.addr);
    v.run(&["move 300 300", "click 1", "type nope", "refresh"]);
    v.quit();
    drop(ro);
    let rw = start("peer-rw", false);
    let secret = "Qz7#kLm9";
    let mut v = Drive::start(rw.addr);
    v.run(&[
        "move 100 100",
        "click 1",
        &format!("type {secret}"),
        "refresh",
    ]);
    let deadline = Instant::now() + TIMEOUT;
    while !probe.text().contains(secret) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    v.quit();
    let log = rw.stop();
    let hex_in_log = secret
        .chars()
        .filter(|c| {
            let h = format!("{:#x}", *c as u32);
            log.lines()
                .any(|l| l.to_lowercase().contains("key") && l.contains(&h))
        })
        .count();
    println!(
        "{kind:?} {peer}: view-only viewer's input arrived: {}; full viewer's typing arrived: {}; \
         secret in its verbose log: {}; lines naming a key with one of its keysyms: {hex_in_log}; \
         log lines about keys: {}; probe: {:?}",
        probe.text().contains("nope") || probe.presses(0) > 1,
        probe.text().contains(secret),
        log.contains(secret),
        log.lines()
            .filter(|l| l.to_lowercase().contains("key"))
            .count(),
        probe.raw()
    );
}
on_each_desktop!(ignore peers_on_the_same_desktop, peers);
