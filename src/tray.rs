//! `ticketvnc tray`: the customer's side of a helpdesk session, as a tray
//! icon (StatusNotifierItem over D-Bus on Linux, the notification area on
//! Windows).
//!
//! - **Get help** opens a ticket (or takes the number the helpdesk gave,
//!   `--ticket`), shows its number (and, through a repeater, its one-time
//!   code) and connects out to the helpdesk configured by the
//!   administrator: a repeater (the ticket number is the ID) or a
//!   technician's listening viewer.
//! - **Pause input** makes every session view-only at once and back.
//! - **Stop sharing** ends every session at once.
//!
//! While a technician is connected the icon turns red and the tooltip and
//! the first menu line say who it is; the customer always sees it.

use crate::cli::{ConsentArg, TrayArgs};
use crate::{serve, Mode};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ticketvnc::server::{SessionControl, Stopper};
use tray_icon::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

/// The helpdesk's settings, deployed by an administrator (`tray.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrayConfig {
    /// Shown in the tooltip ("Example IT helpdesk").
    pub company: Option<String>,
    /// An UltraVNC repeater, HOST:PORT; the ticket number is the ID and the
    /// technician types the ticket's one-time code.
    pub repeater: Option<String>,
    /// Or a technician's viewer in listen mode, HOST[:PORT].
    pub viewer: Option<String>,
    /// To a listening viewer: require the ticket's code (default false).
    pub require_code: Option<bool>,
    /// To a listening viewer: offer VeNCrypt (default false; see
    /// `connect --tls`). Through a repeater it is always offered first.
    pub tls: Option<bool>,
    /// The certificate and key viewers pin (the helpdesk's own); without
    /// them one is generated on this computer.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// "auto" (default: the customer asked for help) or "prompt" (ask on
    /// screen before the technician gets in).
    pub consent: Option<String>,
    /// Seconds the customer has to answer a prompt.
    pub consent_timeout: Option<u64>,
    /// Seconds to keep trying to reach the helpdesk (default 300).
    pub retry_for: Option<u64>,
    /// "mac": the helpdesk's technicians use Macs (Command and Control
    /// swapped, see `serve --keyboard`); "standard"; "auto" (default: for
    /// Screen Sharing.app viewers only).
    pub keyboard: Option<String>,
}

/// Where the settings are looked for when `--config` is not given.
fn config_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(dir) = ticketvnc::security::tls::default_config_dir() {
        v.push(dir.join("tray.toml"));
    }
    #[cfg(unix)]
    v.push(PathBuf::from("/etc/ticketvnc/tray.toml"));
    #[cfg(windows)]
    if let Some(p) = std::env::var_os("ProgramData") {
        v.push(PathBuf::from(p).join("ticketvnc").join("tray.toml"));
    }
    v
}

pub fn load_config(explicit: Option<&Path>) -> Result<(TrayConfig, PathBuf)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => config_candidates()
            .into_iter()
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no helpdesk configured: none of {} exists (ask your helpdesk for tray.toml)",
                    config_candidates()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the helpdesk settings {}", path.display()))?;
    let cfg: TrayConfig =
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    match (&cfg.repeater, &cfg.viewer) {
        (Some(_), Some(_)) => bail!("{}: set repeater or viewer, not both", path.display()),
        (None, None) => bail!(
            "{}: set repeater = \"HOST:PORT\" or viewer = \"HOST[:PORT]\"",
            path.display()
        ),
        _ => {}
    }
    Ok((cfg, path))
}

/// What the tray shares with the task that runs a "Get help" session.
#[derive(Default)]
struct Shared {
    control: Option<SessionControl>,
    stopper: Option<Stopper>,
    /// A "Get help" is under way (dialling, waiting or connected).
    active: bool,
    /// How the last one ended.
    ended: Option<String>,
}

/// What the customer is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle {
        last: Option<String>,
    },
    Waiting {
        ticket: String,
        code: Option<String>,
    },
    Connected {
        who: String,
        ticket: String,
    },
}

impl Phase {
    fn line(&self) -> String {
        match self {
            Phase::Idle { last: None } => "Not sharing".into(),
            Phase::Idle { last: Some(l) } => format!("Not sharing ({l})"),
            Phase::Waiting { ticket, code: None } => {
                format!("Waiting for the technician: ticket {ticket}")
            }
            Phase::Waiting {
                ticket,
                code: Some(c),
            } => format!("Waiting for the technician: ticket {ticket}, code {c}"),
            Phase::Connected { who, ticket } => {
                format!("{who} is connected to this screen (ticket {ticket})")
            }
        }
    }
}

/// A round icon: grey idle, amber waiting, red while someone watches.
fn icon(phase: &Phase) -> Icon {
    let (r, g, b) = match phase {
        Phase::Idle { .. } => (0x80, 0x80, 0x80),
        Phase::Waiting { .. } => (0xe0, 0xa0, 0x10),
        Phase::Connected { .. } => (0xd0, 0x20, 0x20),
    };
    const N: u32 = 32;
    let mut px = Vec::with_capacity((N * N * 4) as usize);
    for y in 0..N {
        for x in 0..N {
            let (dx, dy) = (x as i32 * 2 - N as i32 + 1, y as i32 * 2 - N as i32 + 1);
            let inside = dx * dx + dy * dy <= (N as i32 - 2).pow(2);
            px.extend_from_slice(&if inside {
                [r, g, b, 0xff]
            } else {
                [0, 0, 0, 0]
            });
        }
    }
    Icon::from_rgba(px, N, N).expect("a valid 32x32 icon")
}

/// A ticket number for a customer who has none: six digits, not in use.
fn new_ticket_number(journal: &ticketvnc::tickets::Journal) -> Result<String> {
    use rand::Rng;
    for _ in 0..100 {
        let n = rand::rngs::OsRng
            .gen_range(100_000..1_000_000u32)
            .to_string();
        if journal.ticket(&n)?.is_none() {
            return Ok(n);
        }
    }
    bail!("no free ticket number found")
}

pub fn run(rt: &tokio::runtime::Runtime, db: Option<&Path>, args: TrayArgs) -> Result<()> {
    let (cfg, cfg_path) = load_config(args.config.as_deref())?;
    tracing::info!(config = %cfg_path.display(), "helpdesk settings");
    let company = cfg.company.clone().unwrap_or_else(|| "the helpdesk".into());
    let db = db.map(Path::to_path_buf);

    let status = MenuItem::new(Phase::Idle { last: None }.line(), false, None);
    let get_help = MenuItem::new("Get help", true, None);
    let pause = CheckMenuItem::new("Pause input", true, false, None);
    let stop = MenuItem::new("Stop sharing", false, None);
    let quit = MenuItem::new("Quit", true, None);
    let menu = Menu::new();
    menu.append_items(&[
        &status,
        &PredefinedMenuItem::separator(),
        &get_help,
        &pause,
        &stop,
        &PredefinedMenuItem::separator(),
        &quit,
    ])?;
    let mut phase = Phase::Idle { last: None };
    let tray: TrayIcon = TrayIconBuilder::new()
        .with_menu(Box::new(menu))
        .with_title("ticketvnc")
        .with_tooltip(format!("ticketvnc ({company}): {}", phase.line()))
        .with_icon(icon(&phase))
        .build()
        .context(
            "no system tray on this desktop (no StatusNotifierWatcher on the session bus); \
             use `ticketvnc connect` instead",
        )?;
    say!("ticketvnc tray ready ({company})");

    let shared = Arc::new(Mutex::new(Shared::default()));
    let quit_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let q = quit_flag.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = crate::wait_terminate() => {}
            }
            q.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let mut paused = false;
    let mut waiting: Option<(String, Option<String>)> = None;
    let mut task: Option<tokio::task::JoinHandle<()>> = None;
    let mut click_get_help = args.get_help;

    loop {
        pump_messages();
        if quit_flag.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let ev = MenuEvent::receiver()
            .recv_timeout(Duration::from_millis(100))
            .ok();
        let clicked = |item: &tray_icon::menu::MenuId| ev.as_ref().is_some_and(|e| e.id == *item);
        if clicked(get_help.id()) || std::mem::take(&mut click_get_help) {
            let busy = shared.lock().unwrap().active;
            if busy {
                tracing::info!("\"Get help\" while a session is under way: ignored");
            } else {
                match start_help(rt, db.as_deref(), &args, &cfg, shared.clone(), paused) {
                    Ok((ticket, code, handle)) => {
                        say!("ticketvnc get help: ticket {ticket}");
                        waiting = Some((ticket, code));
                        task = Some(handle);
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "Get help failed");
                        shared.lock().unwrap().ended = Some(format!("could not start: {e}"));
                    }
                }
            }
        }
        if clicked(pause.id()) {
            paused = !paused;
            pause.set_checked(paused);
            if let Some(c) = &shared.lock().unwrap().control {
                c.pause_input(paused, "customer (tray)");
            }
            say!(
                "ticketvnc input {}",
                if paused { "paused" } else { "resumed" }
            );
        }
        if clicked(stop.id()) {
            stop_all(&shared);
            say!("ticketvnc stopped sharing");
        }
        if clicked(quit.id()) {
            break;
        }

        // What the customer sees.
        let now = {
            let s = shared.lock().unwrap();
            let running = s.control.as_ref().map(|c| c.running()).unwrap_or_default();
            match (&waiting, s.active, running.first()) {
                (Some((ticket, _)), true, Some(r)) => Phase::Connected {
                    who: r
                        .technician
                        .clone()
                        .or_else(|| r.peer.map(|p| format!("The technician at {}", p.ip())))
                        .unwrap_or_else(|| "A technician".into()),
                    ticket: r.ticket.clone().unwrap_or_else(|| ticket.clone()),
                },
                (Some((ticket, code)), true, None) => Phase::Waiting {
                    ticket: ticket.clone(),
                    code: code.clone(),
                },
                _ => Phase::Idle {
                    last: s.ended.clone(),
                },
            }
        };
        if now != phase {
            phase = now;
            let line = phase.line();
            say!("ticketvnc tray: {line}");
            status.set_text(&line);
            stop.set_enabled(!matches!(phase, Phase::Idle { .. }));
            get_help.set_enabled(matches!(phase, Phase::Idle { .. }));
            let _ = tray.set_tooltip(Some(format!("ticketvnc ({company}): {line}")));
            let _ = tray.set_icon(Some(icon(&phase)));
            if matches!(phase, Phase::Idle { .. }) {
                waiting = None;
            }
        }
    }
    // Quit: end sessions in order and let the journal be written.
    stop_all(&shared);
    if let Some(t) = task {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await });
    }
    drop(tray);
    Ok(())
}

/// "Stop sharing": every session ends ("stopped at the screen"), then the
/// server stops (which also stops dialling or waiting at the repeater).
fn stop_all(shared: &Mutex<Shared>) {
    let s = shared.lock().unwrap();
    if let Some(c) = &s.control {
        let n = c.stop_sharing();
        tracing::info!(sessions = n, "stop sharing");
    }
    if let Some(st) = &s.stopper {
        // Let the sessions journal their own reason before the server stops.
        let st = st.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            st.stop();
        });
    }
}

/// Opens (or takes) the ticket, issues its code when the technician will
/// need one, and starts connecting out. Returns the ticket, the code and
/// the task.
fn start_help(
    rt: &tokio::runtime::Runtime,
    db: Option<&Path>,
    args: &TrayArgs,
    cfg: &TrayConfig,
    shared: Arc<Mutex<Shared>>,
    paused: bool,
) -> Result<(String, Option<String>, tokio::task::JoinHandle<()>)> {
    let journal = crate::tickets_cli::open_journal(db)?;
    let ticket = match &args.serve.ticket {
        Some(t) => t.clone(),
        None => new_ticket_number(&journal)?,
    };
    journal.open_ticket(&ticket, Some("Get help (tray)"))?;
    let retry = Duration::from_secs(cfg.retry_for.unwrap_or(300));
    let mut serve_args = args.serve.clone();
    serve_args.ticket = Some(ticket.clone());
    if let Some(c) = cfg.consent.as_deref() {
        serve_args.consent = crate::cli::parse_consent(c).map_err(anyhow::Error::msg)?;
        if matches!(serve_args.consent, ConsentArg::Command(_)) {
            bail!("tray.toml: consent is \"auto\", \"prompt\" or \"deny\"");
        }
    }
    if let Some(t) = cfg.consent_timeout {
        serve_args.consent_timeout = t.clamp(1, 600);
    }
    match cfg.keyboard.as_deref() {
        None => {}
        Some("mac") => serve_args.keyboard = crate::cli::KeyboardKind::Mac,
        Some("standard") => serve_args.keyboard = crate::cli::KeyboardKind::Standard,
        Some("auto") => serve_args.keyboard = crate::cli::KeyboardKind::Auto,
        Some(_) => bail!("tray.toml: keyboard is \"auto\", \"standard\" or \"mac\""),
    }
    if cfg.tls_cert.is_some() {
        serve_args.tls_cert = cfg.tls_cert.clone();
        serve_args.tls_key = cfg.tls_key.clone();
    }
    let (mode, needs_code) = match (&cfg.repeater, &cfg.viewer) {
        (Some(r), _) => (
            Mode::Repeater {
                target: ticketvnc::outbound::parse_target(r, 5500)?,
                id: ticket.clone(),
                retry,
            },
            !serve_args.no_auth,
        ),
        (None, Some(v)) => {
            let require_code = cfg.require_code.unwrap_or(false);
            (
                Mode::Reverse {
                    target: ticketvnc::outbound::parse_target(
                        v,
                        ticketvnc::outbound::LISTENING_VIEWER_PORT,
                    )?,
                    require_code,
                    tls: cfg.tls.unwrap_or(false),
                    retry,
                },
                require_code,
            )
        }
        (None, None) => bail!("no helpdesk configured"),
    };
    let code = if needs_code {
        let ttl = Duration::from_secs(30 * 60);
        Some(journal.issue_code(&ticket, ttl)?.code)
    } else {
        None
    };
    drop(journal);
    {
        let mut s = shared.lock().unwrap();
        s.active = true;
        s.ended = None;
    }
    let on_start: crate::OnStart = {
        let shared = shared.clone();
        Box::new(move |h: &ticketvnc::server::ServerHandle| {
            let control = h.control();
            if paused {
                control.pause_input(true, "customer (tray)");
            }
            let mut s = shared.lock().unwrap();
            s.control = Some(control);
            s.stopper = Some(h.stopper());
        })
    };
    let db = db.map(Path::to_path_buf);
    let handle = rt.spawn(async move {
        let r = serve(db.as_deref(), serve_args, mode, Some(on_start)).await;
        let ended = match r {
            Ok(()) => "the session ended".to_string(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Get help ended");
                format!("{e}")
            }
        };
        let mut s = shared.lock().unwrap();
        s.active = false;
        s.control = None;
        s.stopper = None;
        s.ended = Some(ended);
    });
    Ok((ticket, code, handle))
}

/// Windows delivers the tray's clicks as window messages to this thread.
#[cfg(windows)]
fn pump_messages() {
    use windows_sys::Win32::UI::WindowsAndMessaging::{
        DispatchMessageW, PeekMessageW, TranslateMessage, MSG, PM_REMOVE,
    };
    // SAFETY: a zeroed MSG is a valid out-parameter; the calls only read
    // and write it, on the thread that owns the tray's window.
    unsafe {
        let mut msg: MSG = std::mem::zeroed();
        while PeekMessageW(&mut msg, std::ptr::null_mut(), 0, 0, PM_REMOVE) != 0 {
            TranslateMessage(&msg);
            DispatchMessageW(&msg);
        }
    }
}

#[cfg(not(windows))]
fn pump_messages() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_exactly_one_helpdesk_and_no_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tray.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            load_config(Some(&p)).map(|(c, _)| c)
        };
        let c = load("company = \"Example IT\"\nrepeater = \"r.example:5500\"\n").unwrap();
        assert_eq!(c.repeater.as_deref(), Some("r.example:5500"));
        assert!(load("viewer = \"a\"\nrepeater = \"b\"\n").is_err());
        assert!(load("company = \"x\"\n").is_err());
        assert!(load("viewer = \"a\"\nrepeatr = \"typo\"\n").is_err());
        assert!(load_config(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
