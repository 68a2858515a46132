//! `ticketvnc tray`, headless: on a private session bus this test plays the
//! desktop's panel (the StatusNotifierWatcher), finds the tray's item,
//! reads its menu through com.canonical.dbusmenu and clicks "Get help",
//! "Pause input" and "Stop sharing" with the dbusmenu Event method, while
//! a viewer listening like `vncviewer -listen` receives the session.

mod binary;
mod common;
mod repeater_support;
mod support_raw;

use common::{ChildGuard, XvfbGuard};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support_raw::{handshake, Auth, RawClient};
use ticketvnc::rfb::messages::ClientMessage;
use zbus::zvariant::{OwnedValue, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A private session bus (dbus-daemon), stopped by PID at the end.
struct Bus {
    _daemon: ChildGuard,
    address: String,
}

fn session_bus() -> Bus {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dbus-daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.trim().is_empty(), "dbus-daemon printed no address");
    Bus {
        _daemon: ChildGuard(child),
        address: line.trim().to_string(),
    }
}

/// The panel's side of StatusNotifierItem: items register here.
#[derive(Clone, Default)]
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(
        &self,
        service: &str,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) {
        // ksni registers its bus name (or an object path on its connection).
        let who = if service.starts_with('/') {
            hdr.sender().map(|s| s.to_string()).unwrap_or_default()
        } else {
            service.to_string()
        };
        self.items.lock().unwrap().push(who);
    }
    async fn register_status_notifier_host(&self, _service: &str) {}
    #[zbus(property)]
    async fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().unwrap().clone()
    }
    #[zbus(property)]
    async fn is_status_notifier_host_registered(&self) -> bool {
        true
    }
    #[zbus(property)]
    async fn protocol_version(&self) -> i32 {
        0
    }
}

/// One dbusmenu entry: its id and label.
fn menu_items(layout: &Value<'_>, out: &mut Vec<(i32, String, bool)>) {
    let Value::Structure(s) = layout else { return };
    let f = s.fields();
    let (Some(Value::I32(id)), Some(Value::Dict(props)), Some(Value::Array(children))) =
        (f.first(), f.get(1), f.get(2))
    else {
        return;
    };
    let props: HashMap<String, OwnedValue> = props.try_clone().unwrap().try_into().unwrap();
    if let Some(label) = props.get("label") {
        let label: String = label.try_clone().unwrap().try_into().unwrap_or_default();
        let enabled = props
            .get("enabled")
            .and_then(|v| bool::try_from(v.try_clone().unwrap()).ok())
            .unwrap_or(true);
        out.push((*id, label.replace('_', ""), enabled));
    }
    for c in children.iter() {
        let inner = match c {
            Value::Value(v) => v.as_ref(),
            other => other,
        };
        menu_items(inner, out);
    }
}

struct Tray {
    conn: zbus::Connection,
    service: String,
    menu_path: String,
}

impl Tray {
    async fn menu(&self) -> Vec<(i32, String, bool)> {
        let reply = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                self.menu_path.as_str(),
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout");
        let body = reply.body();
        type Node = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
        let (_rev, (_root, _props, children)): (u32, Node) =
            body.deserialize().expect("dbusmenu layout");
        let mut out = Vec::new();
        for c in &children {
            menu_items(c, &mut out);
        }
        out
    }

    /// Clicks the entry labelled `label`, as a panel does.
    async fn click(&self, label: &str) {
        let items = self.menu().await;
        let (id, _, enabled) = items
            .iter()
            .find(|(_, l, _)| l == label)
            .unwrap_or_else(|| panic!("no {label:?} in the menu: {items:?}"));
        assert!(enabled, "{label:?} is disabled: {items:?}");
        self.conn
            .call_method(
                Some(self.service.as_str()),
                self.menu_path.as_str(),
                Some("com.canonical.dbusmenu"),
                "Event",
                &(*id, "clicked", Value::from(0i32), 0u32),
            )
            .await
            .expect("Event");
    }

    async fn tooltip(&self) -> String {
        let p = zbus::Proxy::new(
            &self.conn,
            self.service.as_str(),
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
        )
        .await
        .unwrap();
        // (icon name, icon pixmaps, title, text)
        type ToolTip = (String, Vec<(i32, i32, Vec<u8>)>, String, String);
        let (_, _, title, text): ToolTip = p.get_property("ToolTip").await.expect("ToolTip");
        format!("{title} {text}")
    }

    /// The first menu line: what the customer is told.
    async fn status(&self) -> String {
        self.menu()
            .await
            .first()
            .map(|(_, l, _)| l.clone())
            .unwrap_or_default()
    }

    async fn wait_status(&self, want: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.status().await;
            if s.contains(want) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "status {s:?} never said {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn mouse(display: &str) -> (i32, i32) {
    let out = Command::new("xdotool")
        .args(["getmouselocation", "--shell"])
        .env("DISPLAY", display)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    (v("X="), v("Y="))
}

/// Sends a pointer event and waits until the server has handled it (an
/// update request behind it is answered).
async fn point(c: &mut RawClient, x: u16, y: u16) {
    c.send(&ClientMessage::PointerEvent { buttons: 0, x, y })
        .await
        .unwrap();
    c.request_full(false).await.unwrap();
    tokio::time::timeout(TIMEOUT, c.next_update())
        .await
        .expect("no update")
        .unwrap();
}

/// A tray running on its own private bus, with this test as the panel.
struct Launched {
    tray: Tray,
    lines: Arc<Mutex<Vec<String>>>,
    child: ChildGuard,
    _bus: Bus,
}

/// Starts `ticketvnc tray` with the helpdesk settings `settings` on X
/// display `display`, plays the panel, and waits for the item.
async fn launch(dir: &std::path::Path, display: &str, settings: &str, ticket: &str) -> Launched {
    let bus = session_bus();
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .expect("connect to the private bus");
    let watcher = Watcher::default();
    conn.object_server()
        .at("/StatusNotifierWatcher", watcher.clone())
        .await
        .unwrap();
    conn.request_name("org.kde.StatusNotifierWatcher")
        .await
        .unwrap();
    let cfg = dir.join("tray.toml");
    std::fs::write(&cfg, settings).unwrap();
    let mut child = Command::new(binary::BIN)
        .arg("--db")
        .arg(dir.join("journal.db"))
        .args(["tray", "--config"])
        .arg(&cfg)
        .args(["--display", display, "--ticket", ticket])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("TICKETVNC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the tray");
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
    }
    let child = ChildGuard(child);

    // The panel sees the item.
    let deadline = Instant::now() + TIMEOUT;
    let service = loop {
        if let Some(s) = watcher.items.lock().unwrap().first().cloned() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the tray never registered: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let item = zbus::Proxy::new(
        &conn,
        service.as_str(),
        "/StatusNotifierItem",
        "org.kde.StatusNotifierItem",
    )
    .await
    .unwrap();
    let menu_path: zbus::zvariant::OwnedObjectPath = item.get_property("Menu").await.unwrap();
    let tray = Tray {
        conn: conn.clone(),
        service,
        menu_path: menu_path.to_string(),
    };
    Launched {
        tray,
        lines,
        child,
        _bus: bus,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_help_pause_input_and_stop_sharing_from_the_tray_menu() {
    common::require_commands(&["Xvfb", "dbus-daemon", "xdotool"]);
    let x = XvfbGuard::start(640, 480);
    let d = x.display_name();
    // The technician's viewer listens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let settings =
        format!("company = \"Example IT\"\nviewer = \"127.0.0.1:{port}\"\nretry_for = 60\n");
    let Launched {
        tray,
        lines,
        child,
        _bus: _bus_kept,
    } = launch(dir.path(), &d, &settings, "4711").await;
    let labels: Vec<String> = tray.menu().await.into_iter().map(|i| i.1).collect();
    for want in [
        "Not sharing",
        "Get help",
        "Pause input",
        "Stop sharing",
        "Quit",
    ] {
        assert!(
            labels.iter().any(|l| l == want),
            "{want:?} not in {labels:?}"
        );
    }

    // Get help: the customer's computer connects out to the viewer.
    tray.click("Get help").await;
    let (tcp, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the tray never connected")
        .unwrap();
    let mut tcp = tcp;
    handshake(&mut tcp, &Auth::None, true).await.unwrap();
    let mut viewer = RawClient::after_server_init(tcp).await.unwrap();
    let status = tray.wait_status("is connected").await;
    assert!(status.contains("ticket 4711"), "{status}");
    let tip = tray.tooltip().await;
    assert!(
        tip.contains("Example IT") && tip.contains("is connected"),
        "the customer is not told: {tip}"
    );

    // Input reaches X.
    point(&mut viewer, 100, 110).await;
    let deadline = Instant::now() + TIMEOUT;
    while mouse(&d) != (100, 110) {
        assert!(Instant::now() < deadline, "input never reached X");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pause input: it stops reaching X...
    tray.click("Pause input").await;
    let deadline = Instant::now() + TIMEOUT;
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "ticketvnc input paused")
    {
        assert!(Instant::now() < deadline, "no pause");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rights change travels to the session as a control message; a
    // round trip after it shows it was applied (journaled below).
    tokio::time::sleep(Duration::from_millis(300)).await;
    point(&mut viewer, 300, 310).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mouse(&d), (100, 110), "input reached X while paused");

    // ...and comes back.
    tray.click("Pause input").await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        point(&mut viewer, 200, 210).await;
        if mouse(&d) == (200, 210) {
            break;
        }
        assert!(Instant::now() < deadline, "input never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop sharing: the viewer is disconnected at once.
    tray.click("Stop sharing").await;
    let closed = tokio::time::timeout(TIMEOUT, viewer.expect_close()).await;
    assert!(closed.is_ok(), "the session did not end");
    tray.wait_status("Not sharing").await;

    // The journal has it all, against the ticket.
    let deadline = Instant::now() + TIMEOUT;
    let session = loop {
        let (ok, out) = binary::cli(&db, &["sessions", "--json"]);
        assert!(ok);
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        if let Some(s) = v.into_iter().find(|s| !s["ended_at"].is_null()) {
            break s;
        }
        assert!(Instant::now() < deadline, "the session did not end: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(session["ticket"], "4711", "{session}");
    assert_eq!(session["direction"], "reverse", "{session}");
    assert_eq!(session["end_reason"], "stopped at the screen", "{session}");
    let (_, shown) = binary::cli(&db, &["ticket", "show", "4711"]);
    assert!(
        shown.matches("customer (tray)").count() >= 2,
        "pause and resume not journaled:\n{shown}"
    );

    // SIGTERM quits in order.
    let log = child.terminate(Duration::from_secs(15));
    drop(log);
    let (ok, out) = binary::cli(&db, &["sessions", "verify"]);
    assert!(ok, "{out}");
}

/// Get help through an UltraVNC repeater: the ticket number is the ID, the
/// customer reads the code from the tray's first line, and the technician
/// gets in with it through the repeater; the session is journaled as a
/// repeater session of the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_help_through_a_repeater_shows_the_code_the_technician_uses() {
    common::require_commands(&["Xvfb", "dbus-daemon"]);
    let x = XvfbGuard::start(320, 200);
    let d = x.display_name();
    let rep = repeater_support::Repeater::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "company = \"Example IT\"\nrepeater = \"127.0.0.1:{}\"\nretry_for = 60\n",
        rep.server_port
    );
    let l = launch(dir.path(), &d, &settings, "4712").await;
    l.tray.click("Get help").await;
    let status = l.tray.wait_status("Waiting for the technician").await;
    let code = status
        .split("code ")
        .nth(1)
        .unwrap_or_else(|| panic!("no code shown: {status}"))
        .trim()
        .to_string();
    assert!(status.contains("ticket 4712"), "{status}");

    let vport = rep.viewer_port;
    let c = code.clone();
    let logged_in = tokio::task::spawn_blocking(move || {
        // Until ticketvnc has registered, the repeater does not pair us.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = repeater_support::viewer_stream(vport, "4712", Duration::from_secs(2))
            {
                return repeater_support::rfb_login(s, &c);
            }
            assert!(
                Instant::now() < deadline,
                "the tray never registered as ID:4712"
            );
        }
    })
    .await
    .unwrap();
    logged_in.expect("the technician logs in with the code the tray showed");
    let (ok, out) = binary::cli(&dir.path().join("journal.db"), &["sessions", "--json"]);
    assert!(ok);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(
        v.iter()
            .any(|s| s["ticket"] == "4712" && s["direction"] == "repeater"),
        "{out}"
    );
    drop(l);
    rep.stop();
}
