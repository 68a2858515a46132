#[cfg(target_os = "linux")]
mod bench;
mod cli;
mod panics;
mod tickets_cli;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Command, ConsentArg, KeyboardKind, ServeArgs, SourceKind};
use std::sync::Arc;
use ticketvnc::capture::test_pattern::TestPattern;
use ticketvnc::capture::ScreenSource;
use ticketvnc::input::{InputSink, NullInput, OffsetInput, PatternInput};
use ticketvnc::security::{Authenticator, VncPassword, WithViewOnlyPassword};
use ticketvnc::server::{self, ServerConfig};
use ticketvnc::session::consent::{CommandAsker, ConsentPolicy};
#[cfg(not(target_os = "macos"))]
use ticketvnc::session::ServerNotice;
use ticketvnc::session::SessionObserver;
use ticketvnc::tickets::hooks::{read_line_file, HookConfig, HookDispatcher};
use ticketvnc::tickets::{CodeAuthenticator, JournalObserver};

/// println! that cannot panic: a closed stdout must not stop the server.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[cfg(any(target_os = "linux", target_os = "windows"))]
mod tray;

fn main() -> Result<()> {
    // A log line can never fail a task: write errors (stderr closed, as in
    // `serve 2>&1 | head` or a dropped SSH session) are ignored instead of
    // being reported with eprintln!, which would panic.
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    panics::install();
    let mut cli = Cli::parse();
    // `--db` / TICKETVNC_DB: an unknown URL scheme is an error here, before
    // anything could create a file or directory named after it.
    cli.db = tickets_cli::check_db_arg(cli.db.take())?;
    // --virtual: the private display's X authority file, exported in
    // XAUTHORITY for our own X connections now, while this is the only
    // thread (changing the environment later would race with them).
    #[cfg(target_os = "linux")]
    let _xauthority = match &cli.command {
        Command::Serve(a) if a.virtual_size.is_some() => {
            Some(ticketvnc::capture::virtual_x::export_xauthority()?)
        }
        Command::Connect(c) if c.serve.virtual_size.is_some() => {
            Some(ticketvnc::capture::virtual_x::export_xauthority()?)
        }
        Command::Tray(t) if t.serve.virtual_size.is_some() => {
            Some(ticketvnc::capture::virtual_x::export_xauthority()?)
        }
        #[cfg(target_os = "linux")]
        Command::Bench(_) => Some(ticketvnc::capture::virtual_x::export_xauthority()?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tickets_cli::set_journal_key_file(cli.journal_key_file.clone());
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(cli.db.as_deref(), *args, Mode::Listen, None)),
        Command::Connect(c) => {
            let c = *c;
            let retry = std::time::Duration::from_secs(c.retry_for);
            let mode = match (c.viewer, c.repeater) {
                (Some(v), _) => Mode::Reverse {
                    target: ticketvnc::outbound::parse_target(
                        &v,
                        ticketvnc::outbound::LISTENING_VIEWER_PORT,
                    )?,
                    require_code: c.require_code,
                    tls: c.tls,
                    retry,
                },
                (None, Some(r)) => Mode::Repeater {
                    target: ticketvnc::outbound::parse_target(&r, 5500)?,
                    id: c.id.or_else(|| c.serve.ticket.clone()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--repeater needs --id or --ticket (the ticket number is the ID)"
                        )
                    })?,
                    retry,
                },
                (None, None) => bail!("give the viewer's HOST[:PORT] or --repeater HOST:PORT"),
            };
            rt.block_on(serve(cli.db.as_deref(), c.serve, mode, None))
        }
        #[cfg(any(target_os = "linux", target_os = "windows"))]
        Command::Tray(t) => tray::run(&rt, cli.db.as_deref(), *t),
        #[cfg(not(any(target_os = "linux", target_os = "windows")))]
        Command::Tray(_) => bail!("the tray is not available on this system yet"),
        Command::Ticket(c) => tickets_cli::ticket(cli.db.as_deref(), c),
        Command::Sessions(a) => tickets_cli::sessions(cli.db.as_deref(), a),
        Command::Kb(c) => tickets_cli::kb(cli.db.as_deref(), c),
        Command::Tech(c) => tickets_cli::tech(cli.db.as_deref(), c),
        Command::Db(c) => tickets_cli::db(cli.db.as_deref(), c),
        #[cfg(target_os = "linux")]
        Command::Bench(a) => bench::run(*a, std::env::args().collect::<Vec<_>>().join(" ")),
    }
}

/// `TICKETVNC_LOG` (default info), with caps no setting lifts: input
/// crates never log below warn (enigo logs every keysym at debug, which
/// would put typed passwords in the log), and rustls' per-connection
/// warnings (TigerVNC sends an IP address as SNI) and zbus' (the tray's
/// bus connection closing at exit) stay out of the way.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let user = std::env::var("TICKETVNC_LOG").unwrap_or_else(|_| "info".into());
    let capped = format!("{user},enigo=warn,rustls=error,zbus=error");
    tracing_subscriber::EnvFilter::try_new(&capped).unwrap_or_else(|e| {
        eprintln!("TICKETVNC_LOG={user:?} is not a valid filter ({e}); using info");
        tracing_subscriber::EnvFilter::new("info,enigo=warn,rustls=error,zbus=error")
    })
}

fn read_password_file(path: &std::path::Path) -> Result<VncPassword> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        bail!("password file {} has an empty first line", path.display());
    }
    if line.len() > 8 {
        tracing::warn!("VNC authentication uses only the first 8 bytes of the password");
    }
    Ok(VncPassword::new(line.as_bytes()))
}

/// How `serve` meets its viewers.
enum Mode {
    Listen,
    /// Connect to a listening viewer.
    Reverse {
        target: String,
        require_code: bool,
        /// Offer VeNCrypt to the listening viewer.
        tls: bool,
        retry: std::time::Duration,
    },
    /// Register with an UltraVNC repeater under `id`.
    Repeater {
        target: String,
        id: String,
        retry: std::time::Duration,
    },
}

/// Called with the running server before any session (the tray keeps its
/// session control and stopper).
type OnStart = Box<dyn FnOnce(&server::ServerHandle) + Send>;

async fn serve(
    db: Option<&std::path::Path>,
    mut args: ServeArgs,
    mode: Mode,
    on_start: Option<OnStart>,
) -> Result<()> {
    match &mode {
        Mode::Listen => {}
        // The customer chose where to connect: no authentication unless asked
        // for (like x11vnc and UltraVNC SC). A repeater ID can be guessed, so
        // there the ticket's code is required unless --no-auth.
        Mode::Reverse { require_code, .. } => {
            if args.password_file.is_none() && !require_code {
                args.no_auth = true;
            }
            args.listen.clear();
        }
        Mode::Repeater { .. } => args.listen.clear(),
    }
    if args.no_auth && !args.insecure {
        if let Some(a) = args.listen.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "--no-auth is refused on {a}: anyone who can reach it would get the screen. \
                 Listen on 127.0.0.1 only, or use one-time codes (ticketvnc ticket open ID)"
            );
        }
    }
    let journal = Arc::new(tickets_cli::open_journal(db)?);
    tracing::info!(db = %journal.path().display(), "session journal");
    let authenticator: Option<Arc<dyn Authenticator>> = if args.no_auth {
        None
    } else {
        let password = args
            .password_file
            .as_deref()
            .map(read_password_file)
            .transpose()?;
        if password.is_none() {
            say!(
                "viewers authenticate with one-time codes: run `ticketvnc ticket open TICKET-ID`{}",
                db.map(|p| format!(" --db {}", tickets_cli::shown_db(p)))
                    .unwrap_or_default()
            );
        }
        let codes: Arc<dyn Authenticator> = Arc::new(CodeAuthenticator::new(
            journal.clone(),
            password,
            args.ticket.clone(),
        )?);
        Some(match args.view_only_password_file.as_deref() {
            Some(p) => Arc::new(WithViewOnlyPassword {
                inner: codes,
                view_only: read_password_file(p)?,
                ticket: args.ticket.clone(),
            }),
            None => codes,
        })
    };

    // --webhook-url-file / --hook-cmd-file keep tokens out of `ps`.
    let webhook = match &args.webhook_url_file {
        Some(f) => Some(read_line_file(f, "the webhook URL")?),
        None => args.webhook.clone(),
    };
    let hook_cmd = match &args.hook_cmd_file {
        Some(f) => Some(read_line_file(f, "the hook command")?),
        None => args.hook_cmd.clone(),
    };
    let hooks = HookConfig::from_options(webhook, args.webhook_secret_file.as_deref(), hook_cmd)?
        .map(|cfg| HookDispatcher::start(cfg, Some(journal.clone())))
        .transpose()?;
    let observer = Arc::new(JournalObserver::new(journal.clone(), hooks));
    #[cfg(target_os = "linux")]
    let mut args = args;
    #[cfg(target_os = "linux")]
    let mut _virtual = match args.virtual_size {
        Some((w, h)) => {
            let v = ticketvnc::capture::virtual_x::VirtualDisplay::start_with(
                w,
                h,
                args.session.as_deref(),
                args.session_restart,
            )?;
            args.display = Some(v.display.clone());
            args.source = SourceKind::X11;
            say!("ticketvnc virtual display {}", v.display);
            say!("ticketvnc xauthority {}", v.xauthority().display());
            Some(v)
        }
        None => None,
    };
    #[cfg(not(target_os = "linux"))]
    if args.virtual_size.is_some() {
        bail!("--virtual is available on Linux only");
    }
    #[cfg(not(target_os = "linux"))]
    let mut args = args;
    args.source = resolve_source(&args)?;
    let mut origin = None;
    let mut gnome_session = None;
    let mut wayland = None;
    let mut portal = None;
    let source: Box<dyn ScreenSource> = match args.source {
        SourceKind::Auto => unreachable!("resolved above"),
        SourceKind::TestPattern => Box::new(TestPattern::new(args.size.0, args.size.1, args.fps).0),
        SourceKind::X11 => {
            let (src, o) = x11_source(args.display.as_deref(), args.monitor)?;
            origin = Some(o);
            src
        }
        SourceKind::Screen => screen_source()?,
        SourceKind::Gnome => gnome_source(&mut gnome_session, args.monitor)?,
        SourceKind::Wayland => wayland_source(&mut wayland, args.monitor)?,
        SourceKind::Portal => portal_source(&mut portal, &args, journal.path())?,
    };
    let source = panics::inject(source);
    let (clip_tx, clip_rx) = std::sync::mpsc::channel::<String>();
    // Open consent prompts, which viewers' clicks are kept off.
    let shields = ticketvnc::prompt::Shields::new();
    let input: Arc<dyn InputSink> = match args.source {
        _ if args.view_only => Arc::new(NullInput),
        SourceKind::TestPattern | SourceKind::Auto => Arc::new(PatternInput::default()),
        SourceKind::X11 => {
            let inner: Arc<dyn InputSink> = Arc::new(ticketvnc::prompt::ShieldedInput::new(
                x11_input(args.display.clone(), clip_tx)?,
                shields.clone(),
            ));
            match origin {
                Some(o) => Arc::new(OffsetInput::new(inner, o)),
                None => inner,
            }
        }
        SourceKind::Screen => screen_input()?,
        SourceKind::Gnome => gnome_input(gnome_session.take(), clip_tx)?,
        SourceKind::Wayland => wayland_input(wayland.take(), clip_tx)?,
        SourceKind::Portal => portal_input(portal.take())?,
    };
    let input: Arc<dyn InputSink> = match args.keyboard {
        KeyboardKind::Mac => Arc::new(ticketvnc::input::mac_keys::MacKeyboard::new(input)),
        KeyboardKind::Standard | KeyboardKind::Auto => input,
    };
    let mut cfg = ServerConfig::new(args.listen.clone(), authenticator);
    setup_tls(&args, observer.as_ref(), &mut cfg)?;
    cfg.insecure = args.insecure;
    cfg.allow_apple_dh = args.allow_apple_dh;
    // A Mac technician's Command is the PC's Control; on a Mac it is
    // Command already.
    cfg.mac_viewer_keyboard = args.keyboard == KeyboardKind::Auto && !cfg!(target_os = "macos");
    if args.allow_apple_dh {
        let off: Vec<String> = args
            .listen
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect();
        if !off.is_empty() {
            tracing::warn!(addresses = ?off, "--allow-apple-dh: Apple DH offered off loopback; it protects the password, not the session (pixels and keys cross the network unencrypted)");
        }
    }
    cfg.web_pages = !args.no_web;
    cfg.ticket = args.ticket.clone();
    cfg.reverse_vencrypt = matches!(mode, Mode::Reverse { tls: true, .. });
    cfg.auth_failures_per_minute = args.auth_failures_per_minute;
    // X509Plain is offered only when there is an account to log in with:
    // TigerVNC prefers it and would otherwise ask code users for a name.
    cfg.plain_accounts = !args.no_auth && !journal.technicians()?.is_empty();
    cfg.consent = match &args.consent {
        ConsentArg::Auto => ConsentPolicy::Auto,
        ConsentArg::Deny => ConsentPolicy::Deny,
        ConsentArg::Prompt => ConsentPolicy::Ask {
            asker: consent_prompt(&args, shields.clone())?,
            timeout: std::time::Duration::from_secs(args.consent_timeout),
        },
        ConsentArg::Command(program) => ConsentPolicy::Ask {
            asker: Arc::new(CommandAsker {
                program: program.clone(),
            }),
            timeout: std::time::Duration::from_secs(args.consent_timeout),
        },
    };
    cfg.desktop_name = args.name.clone();
    cfg.view_only = args.view_only;
    cfg.drawn_cursor = !args.no_drawn_cursor;
    #[cfg(target_os = "linux")]
    {
        cfg.resizer = _virtual.as_ref().and_then(|v| v.resizer());
    }
    cfg.max_fps = args.max_fps;
    cfg.observer = Some(observer.clone());
    let handle = server::start(cfg, source, input).await?;
    let clipboard = handle.clipboard();
    std::thread::Builder::new()
        .name("clipboard-out".into())
        .spawn(move || {
            while let Ok(text) = clip_rx.recv() {
                clipboard.send(&text);
            }
        })?;
    for a in handle.local_addrs() {
        tracing::info!("listening on {a}");
        say!("ticketvnc listening on {a}");
        if !args.no_web {
            tracing::info!("browser viewer at http://{a}/ (https:// too with TLS)");
        }
    }
    // A ticket closed elsewhere (`ticketvnc ticket close` in another
    // terminal, the ticket system) ends its running sessions.
    {
        let (control, journal) = (handle.control(), journal.clone());
        std::thread::Builder::new()
            .name("ticket-watch".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                for t in control.running_tickets() {
                    let closed = matches!(
                        journal.ticket(&t),
                        Ok(Some(x)) if x.status == ticketvnc::tickets::TicketStatus::Closed
                    );
                    if closed {
                        let n = control.end_ticket_sessions(&t);
                        tracing::info!(ticket = %t, sessions = n, "ticket closed; ending its sessions");
                    }
                }
            })?;
    }
    let stopper = handle.stopper();
    // --virtual --session: the end of the session command ends the server.
    // (what happened, whether that is a success)
    #[cfg(target_os = "linux")]
    let session_end = _virtual.as_mut().and_then(|v| v.take_session_end());
    #[cfg(not(target_os = "linux"))]
    let session_end: Option<tokio::sync::oneshot::Receiver<(String, bool)>> = None;
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<(String, bool)>();
    let signals = tokio::spawn(async move {
        let session_ended = async {
            match session_end {
                Some(rx) => match rx.await {
                    Ok(end) => session_outcome(end),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C".to_string(),
            _ = wait_terminate() => "SIGTERM".to_string(),
            _ = panics::wait() => "a thread panicked".to_string(),
            end = session_ended => {
                let why = end.0.clone();
                let _ = ended_tx.send(end);
                why
            }
        };
        // Stop first, then say so.
        stopper.stop();
        tracing::info!("stopping ({why})");
    });
    if let Some(f) = on_start {
        f(&handle);
    }
    // Connect out, and stop when that session is over (or when told to:
    // a signal or the tray stops the server, which ends a running session
    // in order and gives up dialling).
    match mode {
        Mode::Listen => {}
        Mode::Reverse { target, retry, .. } => {
            say!("ticketvnc connecting to {target}");
            let out = ticketvnc::outbound::reverse(&handle, &target, retry).await;
            signals.abort();
            return finish_outbound(handle, observer, out).await;
        }
        Mode::Repeater { target, id, retry } => {
            say!("ticketvnc registering with repeater {target} as ID:{id}");
            let out = ticketvnc::outbound::repeater(&handle, &target, &id, retry).await;
            signals.abort();
            return finish_outbound(handle, observer, out).await;
        }
    }
    // Returns an error (non-zero exit) when the screen source goes away.
    let result = handle.wait().await;
    // Sessions have ended: write what the journal writer still holds, then
    // let queued hooks finish.
    observer.shutdown(std::time::Duration::from_secs(5));
    result?;
    if let Some(what) = panics::first() {
        bail!("stopped because {what}");
    }
    // Sent before the stop, so it is here if that was the reason.
    if let Ok((what, ok)) = ended_rx.try_recv() {
        say!("ticketvnc stopped: {what}");
        if !ok {
            bail!("{what}");
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn session_outcome(end: ticketvnc::capture::virtual_x::SessionEnd) -> (String, bool) {
    (end.to_string(), end.success())
}

#[cfg(not(target_os = "linux"))]
fn session_outcome(end: (String, bool)) -> (String, bool) {
    end
}

/// After a reverse or repeater session: stop the server, flush the
/// journal, and say how it ended.
async fn finish_outbound(
    handle: server::ServerHandle,
    observer: Arc<JournalObserver>,
    out: Result<ticketvnc::session::Outcome, ticketvnc::outbound::OutboundError>,
) -> Result<()> {
    let stopped = handle.shutdown().await;
    observer.shutdown(std::time::Duration::from_secs(5));
    stopped?;
    let out = match out {
        Err(ticketvnc::outbound::OutboundError::Stopped) => {
            say!("ticketvnc stopped before a technician connected");
            return Ok(());
        }
        out => out?,
    };
    say!("ticketvnc session ended: {}", out.reason);
    if out.started {
        Ok(())
    } else {
        bail!("no session: {}", out.reason)
    }
}

/// VeNCrypt's certificate: the operator's files, or the generated one
/// (kept in the config directory). Its fingerprint is printed and journaled
/// so a technician can pin it.
#[cfg(not(target_os = "macos"))]
fn setup_tls(
    args: &ServeArgs,
    observer: &dyn SessionObserver,
    cfg: &mut ServerConfig,
) -> Result<()> {
    use ticketvnc::security::tls;
    let id = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => tls::load(c, k)?,
        _ => {
            let dir = tls::default_config_dir()?;
            tls::load_or_generate(&dir)
                .with_context(|| format!("the TLS certificate in {}", dir.display()))?
        }
    };
    say!(
        "TLS certificate {} (SHA-256 {})",
        id.cert_path.display(),
        id.fingerprint
    );
    observer.server_notice(&ServerNotice::TlsCertificate {
        sha256: id.fingerprint.clone(),
        generated: id.generated,
    });
    cfg.tls = Some(id.acceptor);
    Ok(())
}

/// No VeNCrypt in the macOS build yet (see Cargo.toml).
#[cfg(target_os = "macos")]
fn setup_tls(
    args: &ServeArgs,
    _observer: &dyn SessionObserver,
    _cfg: &mut ServerConfig,
) -> Result<()> {
    if args.tls_cert.is_some() {
        bail!("--tls-cert: VeNCrypt is not available in the macOS build yet");
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn x11_source(
    display: Option<&str>,
    monitor: Option<usize>,
) -> Result<(Box<dyn ScreenSource>, Arc<std::sync::atomic::AtomicU32>)> {
    if display.is_none() && std::env::var_os("DISPLAY").is_none() {
        bail!("no X display: pass --display :N (or set DISPLAY), or use --source test-pattern");
    }
    let src = ticketvnc::capture::x11::X11Source::connect(display, monitor)?;
    let origin = src.input_origin();
    Ok((Box::new(src), origin))
}

/// `--source auto` (the default): this computer's screen. On Linux that is
/// the X display in --display or $DISPLAY; without one there is nothing to
/// serve, and the test pattern is never a silent stand-in for the screen.
fn resolve_source(args: &ServeArgs) -> Result<SourceKind> {
    if args.source != SourceKind::Auto {
        return Ok(args.source);
    }
    if !cfg!(target_os = "linux") {
        return Ok(SourceKind::Screen);
    }
    let display_env = std::env::var_os("DISPLAY").filter(|d| !d.is_empty());
    let wayland_env = std::env::var_os("WAYLAND_DISPLAY").filter(|d| !d.is_empty());
    // In a Wayland session $DISPLAY is XWayland's, which shows only X
    // clients' windows: the compositor is what the customer sees.
    let wayland_session = std::env::var("XDG_SESSION_TYPE").is_ok_and(|t| t == "wayland");
    if args.display.is_none() && wayland_env.is_some() && (wayland_session || display_env.is_none())
    {
        // GNOME (Mutter) offers its own remote-desktop API and no
        // wlr-screencopy; wlroots compositors are the other way round.
        #[cfg(all(target_os = "linux", feature = "gnome"))]
        if ticketvnc::capture::mutter::mutter_available() {
            return Ok(SourceKind::Gnome);
        }
        // Neither Mutter nor wlroots (KDE, others): the desktop's portal.
        #[cfg(all(target_os = "linux", feature = "portal"))]
        if !ticketvnc::capture::portal::compositor_has_wlr_screencopy() {
            return Ok(SourceKind::Portal);
        }
        return Ok(SourceKind::Wayland);
    }
    if args.display.is_some() || display_env.is_some() {
        return Ok(SourceKind::X11);
    }
    bail!(
        "no screen to serve: $DISPLAY is unset. Use --display :0 for an X display, --virtual \
         1280x800 for a private one, or --source test-pattern for the test pattern"
    )
}

/// `--source wayland`: a wlroots compositor (docs/wayland.md).
#[cfg(target_os = "linux")]
fn wayland_source(
    shared: &mut Option<Arc<ticketvnc::capture::wayland::WaylandShared>>,
    monitor: Option<usize>,
) -> Result<Box<dyn ScreenSource>> {
    use ticketvnc::capture::wayland::{WaylandShared, WaylandSource};
    if std::env::var_os("WAYLAND_DISPLAY").is_none() {
        bail!("--source wayland: $WAYLAND_DISPLAY is unset (run ticketvnc inside the Wayland session)");
    }
    let s = WaylandShared::new(monitor);
    let src = WaylandSource::connect(s.clone())?;
    *shared = Some(s);
    Ok(Box::new(src))
}

#[cfg(target_os = "linux")]
fn wayland_input(
    shared: Option<Arc<ticketvnc::capture::wayland::WaylandShared>>,
    clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    use ticketvnc::input::wayland_clipboard::WaylandClipboard;
    let shared = shared.context("the Wayland input needs the Wayland source")?;
    let input = ticketvnc::input::wayland::WaylandInput::start(shared)?;
    // No clipboard is no reason to refuse the screen (as a missing
    // virtual pointer is not).
    Ok(Arc::new(match WaylandClipboard::start(clip) {
        Ok(c) => input.with_clipboard(Box::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "no clipboard on this compositor");
            input
        }
    }))
}

#[cfg(not(target_os = "linux"))]
fn wayland_source(
    _shared: &mut Option<()>,
    _monitor: Option<usize>,
) -> Result<Box<dyn ScreenSource>> {
    bail!("--source wayland is available on Linux only")
}

#[cfg(not(target_os = "linux"))]
fn wayland_input(
    _shared: Option<()>,
    _clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    bail!("--source wayland is available on Linux only")
}

/// `--consent prompt`: a window on the served X screen.
#[cfg(target_os = "linux")]
fn consent_prompt(
    args: &ServeArgs,
    shields: Arc<ticketvnc::prompt::Shields>,
) -> Result<Arc<dyn ticketvnc::session::consent::ConsentAsker>> {
    if args.source != SourceKind::X11 {
        bail!("--consent prompt needs an X11 screen (--source x11, --display or --virtual)");
    }
    Ok(Arc::new(ticketvnc::prompt::x11::X11Prompt::new(
        args.display.clone(),
        shields,
    )))
}

#[cfg(not(target_os = "linux"))]
fn consent_prompt(
    _args: &ServeArgs,
    _shields: Arc<ticketvnc::prompt::Shields>,
) -> Result<Arc<dyn ticketvnc::session::consent::ConsentAsker>> {
    bail!("--consent prompt is available on Linux (X11) only so far; use cmd:PROGRAM")
}

#[cfg(target_os = "linux")]
fn x11_input(
    display: Option<String>,
    clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    use ticketvnc::input::x11_clipboard::X11Clipboard;
    let clipboard = X11Clipboard::start(display.as_deref(), clip)?;
    let input = ticketvnc::input::x11::X11Input::start(display)?;
    Ok(Arc::new(input.with_clipboard(Box::new(clipboard))))
}

#[cfg(not(target_os = "linux"))]
fn x11_input(
    _display: Option<String>,
    _clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    bail!("--source x11 is available on Linux only")
}

#[cfg(not(target_os = "linux"))]
fn x11_source(
    _display: Option<&str>,
    _monitor: Option<usize>,
) -> Result<(Box<dyn ScreenSource>, Arc<std::sync::atomic::AtomicU32>)> {
    bail!("--source x11 is available on Linux only")
}

#[cfg(any(target_os = "windows", target_os = "macos"))]
fn screen_source() -> Result<Box<dyn ScreenSource>> {
    Ok(Box::new(ticketvnc::capture::xcap_source::XcapSource::open(
        None,
    )?))
}

#[cfg(any(target_os = "windows", target_os = "macos"))]
fn screen_input() -> Result<Arc<dyn InputSink>> {
    Ok(Arc::new(ticketvnc::input::enigo::EnigoInput::start(None)?))
}

#[cfg(not(any(target_os = "windows", target_os = "macos")))]
fn screen_source() -> Result<Box<dyn ScreenSource>> {
    bail!("--source screen is for Windows and macOS; on Linux use --source x11")
}

#[cfg(not(any(target_os = "windows", target_os = "macos")))]
fn screen_input() -> Result<Arc<dyn InputSink>> {
    bail!("--source screen is for Windows and macOS; on Linux use --source x11")
}

/// What `--source portal` opened: the session (shared with its input
/// sink) and the served frame's size.
#[cfg(all(target_os = "linux", feature = "portal"))]
type PortalShared = (
    Arc<ticketvnc::capture::portal::PortalSession>,
    Arc<std::sync::Mutex<Option<(u16, u16)>>>,
);
#[cfg(not(all(target_os = "linux", feature = "portal")))]
type PortalShared = ();

/// `--source portal`: the xdg-desktop-portal (docs/wayland.md). The
/// customer answers the desktop's dialog (once: the restore token is kept
/// beside the journal); a refusal ends the server with an error.
#[cfg(all(target_os = "linux", feature = "portal"))]
fn portal_source(
    shared: &mut Option<PortalShared>,
    args: &ServeArgs,
    journal: &std::path::Path,
) -> Result<Box<dyn ScreenSource>> {
    use ticketvnc::capture::portal::{token_path, PortalOptions, PortalSession, PortalSource};
    if args.monitor.is_some() {
        tracing::warn!("--monitor is not used with the portal: the customer picks the monitor in the desktop's dialog");
    }
    let token_file = token_path(journal);
    let session = PortalSession::open(PortalOptions {
        token_file,
        want_input: !args.view_only,
    })
    .context("xdg-desktop-portal screen cast")?;
    let src = PortalSource::start(session.clone()).context("xdg-desktop-portal screen cast")?;
    *shared = Some((session, src.frame_size()));
    Ok(Box::new(src))
}

#[cfg(all(target_os = "linux", feature = "portal"))]
fn portal_input(shared: Option<PortalShared>) -> Result<Arc<dyn InputSink>> {
    let (session, size) = shared.context("the portal input needs the portal source")?;
    if !session.granted.keyboard && !session.granted.pointer {
        tracing::warn!("no input through the portal (no RemoteDesktop portal, or not granted): viewers see the screen but their keys and pointer are ignored");
        return Ok(Arc::new(NullInput));
    }
    if !session.granted.keyboard || !session.granted.pointer {
        tracing::warn!(
            keyboard = session.granted.keyboard,
            pointer = session.granted.pointer,
            "the customer granted only part of the input"
        );
    }
    Ok(Arc::new(
        ticketvnc::input::portal::PortalInput::start(session, size).map_err(anyhow::Error::msg)?,
    ))
}

#[cfg(not(all(target_os = "linux", feature = "portal")))]
fn portal_source(
    _shared: &mut Option<PortalShared>,
    _args: &ServeArgs,
    _journal: &std::path::Path,
) -> Result<Box<dyn ScreenSource>> {
    bail!("--source portal is for Wayland desktops on Linux, in a build with the `portal` feature (a default one; this build was made without it)")
}

#[cfg(not(all(target_os = "linux", feature = "portal")))]
fn portal_input(_shared: Option<PortalShared>) -> Result<Arc<dyn InputSink>> {
    bail!("--source portal is for Wayland desktops on Linux, in a build with the `portal` feature (a default one; this build was made without it)")
}

/// The session `--source gnome` opened, which its input sink shares.
#[cfg(all(target_os = "linux", feature = "gnome"))]
type GnomeSession = Arc<ticketvnc::capture::mutter::SessionSlot>;
#[cfg(not(all(target_os = "linux", feature = "gnome")))]
type GnomeSession = ();

#[cfg(all(target_os = "linux", feature = "gnome"))]
fn gnome_source(
    session: &mut Option<GnomeSession>,
    monitor: Option<usize>,
) -> Result<Box<dyn ScreenSource>> {
    let (src, s) = ticketvnc::capture::mutter::MutterSource::start(monitor)?;
    *session = Some(s);
    Ok(Box::new(src))
}

#[cfg(all(target_os = "linux", feature = "gnome"))]
fn gnome_input(
    session: Option<GnomeSession>,
    clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    use ticketvnc::input::mutter_clipboard::MutterClipboard;
    let session = session.context("no GNOME session for input")?;
    // Without a clipboard (a Mutter that refuses it) the screen and input
    // are still served.
    let clipboard = MutterClipboard::start(session.clone(), clip)
        .inspect_err(|e| tracing::warn!("no clipboard: {e}"))
        .ok();
    let input =
        ticketvnc::input::mutter::MutterInput::start(session).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(match clipboard {
        Some(c) => input.with_clipboard(Box::new(c)),
        None => input,
    }))
}

#[cfg(not(all(target_os = "linux", feature = "gnome")))]
fn gnome_source(
    _session: &mut Option<GnomeSession>,
    _monitor: Option<usize>,
) -> Result<Box<dyn ScreenSource>> {
    bail!(
        "--source gnome is for GNOME Wayland sessions on Linux, in a build with the `gnome` \
         feature (a default one; this build was made without it)"
    )
}

#[cfg(not(all(target_os = "linux", feature = "gnome")))]
fn gnome_input(
    _session: Option<GnomeSession>,
    _clip: std::sync::mpsc::Sender<String>,
) -> Result<Arc<dyn InputSink>> {
    bail!(
        "--source gnome is for GNOME Wayland sessions on Linux, in a build with the `gnome` \
         feature (a default one; this build was made without it)"
    )
}

#[cfg(unix)]
async fn wait_terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn wait_terminate() {
    std::future::pending().await
}
