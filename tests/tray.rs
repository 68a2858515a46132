//! `ticketvnc tray`, headless: on a private session bus this test plays the
//! desktop's panel (the StatusNotifierWatcher), finds the tray's item,
//! reads its menu through com.canonical.dbusmenu and clicks "Get help",
//! "Pause input" and "Stop sharing" with the dbusmenu Event method, while
//! a viewer listening like `vncviewer -listen` receives the session.
//!
//! Each test runs on X11 (Xvfb) and on Wayland (headless sway, the tray as
//! the desktop's user) from one body (tests/common/desktop.rs); input is
//! observed by the desktop's probe terminal.

mod binary;
mod common;
mod repeater_support;
mod support_raw;

use common::desktop::{Desktop, DesktopUnderTest, Served};
use common::ChildGuard;
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

/// Its configuration: a session bus that lets every user in, since on
/// sway the tray runs as the desktop's user and this test (the panel) as
/// root; a stock session bus admits only the user who started it.
const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;

fn session_bus(dir: &std::path::Path) -> Bus {
    let conf = dir.join("bus.conf");
    std::fs::write(&conf, BUS_CONFIG).unwrap();
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
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

/// Sends a click of button 1 at (x, y) and waits until the server has
/// handled it (an update request behind it is answered).
async fn click_at(c: &mut RawClient, x: u16, y: u16) {
    for buttons in [1, 0] {
        c.send(&ClientMessage::PointerEvent { buttons, x, y })
            .await
            .unwrap();
    }
    c.request_full(false).await.unwrap();
    tokio::time::timeout(TIMEOUT, c.next_update())
        .await
        .expect("no update")
        .unwrap();
}

/// A tray running on its own private bus, with this test as the panel.
struct Launched {
    tray: Tray,
    child: Served,
    _bus: Bus,
}

/// Starts `ticketvnc tray` with the helpdesk settings `settings` serving
/// the desktop `desk` (as its user, on its journal), plays the panel, and
/// waits for the item.
async fn launch(desk: &DesktopUnderTest, settings: &str, ticket: &str) -> Launched {
    let bus = session_bus(desk.dir());
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
    let cfg = desk.write_file("tray.toml", settings, 0o644);
    let db = desk.db();
    let mut args = vec![
        "--db",
        db.to_str().unwrap(),
        "tray",
        "--config",
        cfg.to_str().unwrap(),
        "--ticket",
        ticket,
    ];
    let source = desk.source_args();
    args.extend(source.iter().map(String::as_str));
    let child = desk.spawn_ticketvnc(
        "tray",
        &[
            ("DBUS_SESSION_BUS_ADDRESS", &bus.address),
            ("TICKETVNC_LOG", "info"),
        ],
        &args,
    );

    // The panel sees the item.
    let deadline = Instant::now() + TIMEOUT;
    let service = loop {
        if let Some(s) = watcher.items.lock().unwrap().first().cloned() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the tray never registered: {}",
            child.log_text()
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
        child,
        _bus: bus,
    }
}

/// The async test bodies on a runtime of their own (one per test).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// How many times the journal shows the tray (the customer) changing the
/// session's rights.
fn tray_rights_changes(desk: &DesktopUnderTest, ticket: &str) -> usize {
    let (_, shown, _) = desk.cli(&["ticket", "show", ticket]);
    shown.matches("customer (tray)").count()
}

fn get_help_pause_input_and_stop_sharing(kind: Desktop) {
    block_on(get_help_pause_input_and_stop_sharing_on(kind))
}
on_each_desktop!(
    get_help_pause_input_and_stop_sharing_from_the_tray_menu,
    get_help_pause_input_and_stop_sharing
);

async fn get_help_pause_input_and_stop_sharing_on(kind: Desktop) {
    common::require_commands(&["dbus-daemon"]);
    let mut desk = DesktopUnderTest::start(kind, "tray");
    let probe = desk.probe();
    // The technician's viewer listens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings =
        format!("company = \"Example IT\"\nviewer = \"127.0.0.1:{port}\"\nretry_for = 60\n");
    let Launched {
        tray,
        child,
        _bus: _bus_kept,
    } = launch(&desk, &settings, "4711").await;
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

    assert!(
        child.log_text().contains(desk.ready_line()),
        "{}",
        child.log_text()
    );

    // Input reaches the desktop.
    click_at(&mut viewer, 100, 110).await;
    probe.wait("the first click", |_, m| {
        m.iter().filter(|e| e.code == 0 && e.press).count() == 1
    });

    // Pause input: it stops reaching the desktop...
    tray.click("Pause input").await;
    let deadline = Instant::now() + TIMEOUT;
    while !child.said("ticketvnc input paused") || tray_rights_changes(&desk, "4711") < 1 {
        assert!(Instant::now() < deadline, "no pause (journaled)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click_at(&mut viewer, 300, 310).await;

    // ...and comes back: the click after the resume arrives, and the one
    // while paused never does (input is injected in order).
    tray.click("Pause input").await;
    let deadline = Instant::now() + TIMEOUT;
    while tray_rights_changes(&desk, "4711") < 2 {
        assert!(Instant::now() < deadline, "no resume (journaled)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click_at(&mut viewer, 200, 210).await;
    probe.wait("the click after the resume", |_, m| {
        m.iter().filter(|e| e.code == 0 && e.press).count() >= 2
    });
    let presses: Vec<(u32, u32)> = probe
        .mouse()
        .iter()
        .filter(|e| e.code == 0 && e.press)
        .map(|e| (e.col, e.row))
        .collect();
    assert_eq!(
        presses.len(),
        2,
        "a click reached the desktop while input was paused: {presses:?}"
    );
    // The second is where the resumed click was: right of and below the first.
    assert!(
        presses[1].0 > presses[0].0 && presses[1].1 > presses[0].1,
        "{presses:?}"
    );

    // Stop sharing: the viewer is disconnected at once.
    tray.click("Stop sharing").await;
    let closed = tokio::time::timeout(TIMEOUT, viewer.expect_close()).await;
    assert!(closed.is_ok(), "the session did not end");
    tray.wait_status("Not sharing").await;

    // The journal has it all, against the ticket.
    let deadline = Instant::now() + TIMEOUT;
    let session = loop {
        if let Some(s) = desk
            .sessions()
            .into_iter()
            .find(|s| !s["ended_at"].is_null())
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the session did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(session["ticket"], "4711", "{session}");
    assert_eq!(session["direction"], "reverse", "{session}");
    assert_eq!(session["end_reason"], "stopped at the screen", "{session}");
    assert!(
        tray_rights_changes(&desk, "4711") >= 2,
        "pause and resume not journaled"
    );

    // SIGTERM quits in order.
    child.stop();
    let (ok, out, err) = desk.cli(&["sessions", "verify"]);
    assert!(ok, "{out}{err}");
}

/// Get help through an UltraVNC repeater: the ticket number is the ID, the
/// customer reads the code from the tray's first line, and the technician
/// gets in with it through the repeater; the session is journaled as a
/// repeater session of the ticket.
fn get_help_through_a_repeater(kind: Desktop) {
    block_on(get_help_through_a_repeater_on(kind))
}
on_each_desktop!(
    get_help_through_a_repeater_shows_the_code_the_technician_uses,
    get_help_through_a_repeater
);

async fn get_help_through_a_repeater_on(kind: Desktop) {
    common::require_commands(&["dbus-daemon"]);
    let desk = DesktopUnderTest::start(kind, "trayrep");
    let rep = repeater_support::Repeater::start(0, 0);
    let settings = format!(
        "company = \"Example IT\"\nrepeater = \"127.0.0.1:{}\"\nretry_for = 60\n",
        rep.server_port
    );
    let l = launch(&desk, &settings, "4712").await;
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
    let v = desk.sessions();
    assert!(
        v.iter()
            .any(|s| s["ticket"] == "4712" && s["direction"] == "repeater"),
        "{v:#?}"
    );
    assert!(
        l.child.log_text().contains(desk.ready_line()),
        "{}",
        l.child.log_text()
    );
    drop(l);
    rep.stop();
}
