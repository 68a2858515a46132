//! Command-line interface (clap).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ticketvnc",
    version,
    about = "A VNC server for helpdesks: every remote session is recorded against a ticket"
)]
pub struct Cli {
    /// The journal: an sqlite file PATH or sqlite:PATH (default:
    /// $XDG_DATA_HOME/ticketvnc/ticketvnc.db), or the team database
    /// postgres://USER@HOST/DB (docs/team.md). Any other URL scheme is an
    /// error.
    #[arg(long, global = true, value_name = "PATH|URL", env = "TICKETVNC_DB")]
    pub db: Option<PathBuf>,
    /// Key the journal's hash chain with HMAC-SHA256 under this secret
    /// (64 hex digits, e.g. `openssl rand -hex 32`; the file must be mode
    /// 0600). Once used, every command that writes or verifies the journal
    /// needs it.
    #[arg(long, global = true, value_name = "FILE")]
    pub journal_key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a screen to VNC viewers.
    #[command(after_help = "\
Examples:
  # A test pattern on localhost:5900, no password (loopback only):
  ticketvnc serve --source test-pattern --no-auth

  # The helpdesk way: viewers log in with one-time codes bound to tickets
  ticketvnc serve --source x11 --listen 0.0.0.0:5900 &
  ticketvnc ticket open 4711 --title \"Printer offline\"   # prints the code

  # Password from a file (first line), listening on all interfaces (VeNCrypt
  # TLS only there; pin the printed fingerprint or use your own certificate):
  ticketvnc serve --listen 0.0.0.0:5900 --password-file /etc/ticketvnc/password
  ticketvnc serve --listen 0.0.0.0:5900 --tls-cert cert.pem --tls-key key.pem

  # Ask the person at the screen first (exit 0 = yes):
  ticketvnc serve --source x11 --consent cmd:/usr/local/bin/ask-customer

  # A private virtual desktop with an xterm in it:
  ticketvnc serve --virtual 1280x800 --session xterm --no-auth

  # The X display :0 (DISPLAY is used when --display is not given):
  ticketvnc serve --source x11 --display :0 --password-file ~/.config/ticketvnc/password

  # Several listeners:
  ticketvnc serve --listen 127.0.0.1:5900 --listen [::1]:5900 --no-auth")]
    Serve(Box<ServeArgs>),
    /// The customer starts the session: connect out to a technician's
    /// listening viewer, or register with an UltraVNC repeater.
    #[command(after_help = "\
Examples:
  # The technician runs `vncviewer -listen`; the customer:
  ticketvnc connect helpdesk.example.com --source x11 --ticket 4711

  # Through an UltraVNC repeater, the ticket number as ID; the technician
  # connects to the repeater with ID:4711 and types the ticket's code:
  ticketvnc ticket open 4711
  ticketvnc connect --repeater repeater.example.com:5500 --ticket 4711 --source x11")]
    Connect(Box<ConnectArgs>),
    /// The customer's tray icon: "Get help" connects to the helpdesk set up
    /// in the administrator's tray.toml; "Pause input" and "Stop sharing"
    /// at any time.
    #[command(after_help = "\
The helpdesk's settings come from --config, else $XDG_CONFIG_HOME/ticketvnc/tray.toml,
else /etc/ticketvnc/tray.toml. Example (see docs/helpdesk.md for every key):

  company = \"Example IT\"
  repeater = \"repeater.example.com:5500\"   # or: viewer = \"helpdesk.example.com:5500\"
  consent = \"auto\"                         # or \"prompt\": ask before the technician gets in")]
    Tray(Box<TrayArgs>),
    /// Tickets: open (prints a one-time code), close, show, note.
    #[command(subcommand)]
    Ticket(crate::tickets_cli::TicketCmd),
    /// List recorded sessions, or `sessions verify` the tamper-evident journal.
    Sessions(crate::tickets_cli::SessionsArgs),
    /// Search the knowledge base (ticket titles, notes, resolutions).
    #[command(subcommand)]
    Kb(crate::tickets_cli::KbCmd),
    /// Technician accounts for VeNCrypt Plain: add, remove, list.
    #[command(subcommand)]
    Tech(crate::tickets_cli::TechCmd),
    /// The journal database itself: migrate, copy into the team database.
    #[command(subcommand)]
    Db(crate::tickets_cli::DbCmd),
    /// Measure ticketvnc, x11vnc and x0vncserver side by side on a private
    /// Xvfb (see docs/benchmarks.md).
    #[cfg(target_os = "linux")]
    Bench(Box<crate::bench::BenchArgs>),
}

#[derive(Args, Debug)]
pub struct TrayArgs {
    /// The helpdesk settings (TOML) an administrator deployed.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Click "Get help" at start (for a desktop shortcut "Get help now").
    #[arg(long)]
    pub get_help: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The technician's viewer in listen mode: HOST[:PORT] (port 5500 when
    /// not given).
    #[arg(value_name = "HOST[:PORT]", required_unless_present = "repeater")]
    pub viewer: Option<String>,
    /// Register with an UltraVNC repeater (mode II) at HOST:PORT instead.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "viewer")]
    pub repeater: Option<String>,
    /// The repeater ID (default: the --ticket number).
    #[arg(long, value_name = "ID", requires = "repeater")]
    pub id: Option<String>,
    /// Reverse connections offer no authentication by default (the customer
    /// chose where to connect); require the ticket's one-time code instead.
    #[arg(long)]
    pub require_code: bool,
    /// Seconds to keep trying while the viewer or repeater is not reachable.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub retry_for: u64,
    /// Offer VeNCrypt (TLS) to the listening viewer too. Off by default:
    /// TigerVNC 1.12 in listen mode crashes on any TLS security type.
    /// (Through a repeater VeNCrypt is always offered first.)
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--keyboard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyboardKind {
    /// `mac` for Mac viewers (Screen Sharing.app, RFB 003.889) when the
    /// customer's computer is not a Mac, `standard` for everyone else.
    Auto,
    /// Keys as the viewer sends them.
    Standard,
    /// Command and Control swapped (Mac technicians).
    Mac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// This computer's screen: on Linux the X display in --display or
    /// $DISPLAY, or the Wayland compositor in a Wayland session; on
    /// Windows and macOS the screen.
    Auto,
    /// A deterministic animated test pattern (no display needed; only
    /// served when asked for).
    TestPattern,
    /// The X11 display in --display or $DISPLAY.
    X11,
    /// This computer's screen (Windows and macOS, through xcap).
    Screen,
    /// A GNOME Wayland session (Mutter's ScreenCast and RemoteDesktop).
    Gnome,
    /// The Wayland compositor in $WAYLAND_DISPLAY (wlroots: sway,
    /// Hyprland, river, labwc; see docs/wayland.md).
    Wayland,
    /// The xdg-desktop-portal's ScreenCast (and RemoteDesktop when the
    /// desktop offers it): KDE and other Wayland desktops. The customer
    /// answers the desktop's dialog once (docs/wayland.md).
    Portal,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (repeatable).
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:5900"
    )]
    pub listen: Vec<SocketAddr>,
    /// What to serve (default: this computer's screen).
    #[arg(long, value_enum, default_value = "auto")]
    pub source: SourceKind,
    /// File whose first line is the VNC password (only 8 characters count).
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    pub password_file: Option<PathBuf>,
    /// Allow viewers in without a password. Refused on non-loopback
    /// addresses unless --insecure.
    #[arg(long)]
    pub no_auth: bool,
    /// File whose first line is a password that lets a viewer only watch.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    pub view_only_password_file: Option<PathBuf>,
    /// The TLS certificate chain (PEM) for VeNCrypt. Without --tls-cert and
    /// --tls-key a self-signed certificate is generated once and kept in
    /// $XDG_CONFIG_HOME/ticketvnc (its SHA-256 fingerprint is printed).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM) belonging to --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also offer bare None/VNC authentication (no encryption) on
    /// non-loopback addresses. Warned about and journaled.
    #[arg(long)]
    pub insecure: bool,
    /// Serve Screen Sharing.app (macOS) with Apple's Diffie-Hellman
    /// authentication (security type 30) on every listener: send "RFB
    /// 003.889" and offer type 30. It protects the password, not the
    /// session (no encryption); on loopback (an SSH tunnel) a viewer that
    /// sends 003.889 is offered it without this flag.
    #[arg(long, conflicts_with = "no_auth")]
    pub allow_apple_dh: bool,
    /// Do not serve the browser viewer page (noVNC) on the listeners.
    /// Browsers' WebSocket connections are still accepted, for a viewer
    /// page hosted elsewhere (the ticket system).
    #[arg(long)]
    pub no_web: bool,
    /// Ask the person at the screen before a viewer gets in: `auto` (let
    /// in), `deny` (let nobody in), `prompt` (a window on the served X
    /// screen with Accept / View only / Reject), or `cmd:PROGRAM` (exit
    /// status 0 accepts; "view-only" on its output grants only viewing).
    #[arg(long, value_name = "POLICY", default_value = "auto", value_parser = parse_consent)]
    pub consent: ConsentArg,
    /// Failed logins a minute the whole server answers at most (every
    /// address together); beyond that a login waits for its turn, cleanest
    /// network first. 0 turns this budget off.
    #[arg(long, value_name = "N", default_value_t = ticketvnc::rfb::limits::AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    /// Seconds the person at the screen has to answer; no answer rejects.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub consent_timeout: u64,
    /// The ticket that sessions authenticated with a password file or a
    /// technician account belong to. (Sessions with one-time codes belong
    /// to the code's ticket.)
    #[arg(long, value_name = "ID")]
    pub ticket: Option<String>,
    /// POST each session event as signed JSON to this URL (the ticket system's webhook).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// File whose first line is the webhook URL: like --webhook, but a
    /// token in the URL does not show in `ps`.
    #[arg(long, value_name = "FILE", conflicts_with = "webhook")]
    pub webhook_url_file: Option<PathBuf>,
    /// File whose first line is the HMAC-SHA256 key for the webhook signature
    /// (needs --webhook or --webhook-url-file).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Run this shell command for each session event (JSON on stdin, TICKETVNC_* variables).
    #[arg(long, value_name = "CMD")]
    pub hook_cmd: Option<String>,
    /// File whose first line is the hook command: like --hook-cmd, but it
    /// does not show in `ps`.
    #[arg(long, value_name = "FILE", conflicts_with = "hook_cmd")]
    pub hook_cmd_file: Option<PathBuf>,
    /// Never inject keyboard, pointer or clipboard input.
    #[arg(long)]
    pub view_only: bool,
    /// Never draw the customer's pointer into the pictures sent to viewers
    /// (x11vnc's -nocursor): viewers that draw the cursor themselves still
    /// get its shape and position, others see no pointer.
    #[arg(long)]
    pub no_drawn_cursor: bool,
    /// The technician's keyboard: `mac` swaps Command and Control, so a Mac
    /// technician's Command+C is Ctrl+C on the customer's computer (and
    /// Control is the Super/Windows key). `auto` (the default) does that
    /// for Screen Sharing.app's viewers only, unless this is a Mac.
    #[arg(long, value_enum, default_value_t = KeyboardKind::Auto)]
    pub keyboard: KeyboardKind,
    /// X display to serve with --source x11 (default: $DISPLAY).
    #[arg(long, value_name = ":N")]
    pub display: Option<String>,
    /// Serve only this RandR monitor (0-based) of the X screen, or this
    /// output (0-based, in the compositor's order) on Wayland.
    #[arg(long, value_name = "N")]
    pub monitor: Option<usize>,
    /// Start a private virtual X display (Xvfb) of this size and serve it;
    /// implies --source x11. Stopped when ticketvnc exits.
    #[arg(long = "virtual", value_name = "WxH", value_parser = parse_size, conflicts_with = "display")]
    pub virtual_size: Option<(u16, u16)>,
    /// With --virtual: a command line to run in the virtual display (e.g.
    /// xterm). When it exits, ticketvnc stops (status 0 if it exited with 0).
    #[arg(long, value_name = "CMD", requires = "virtual_size")]
    pub session: Option<String>,
    /// Start the --session command again each time it exits (not when it
    /// exits within 2 s five times in a row).
    #[arg(long, requires = "session")]
    pub session_restart: bool,
    /// Test-pattern size.
    #[arg(long, value_name = "WxH", default_value = "1024x768", value_parser = parse_size)]
    pub size: (u16, u16),
    /// Test-pattern frames per second (0 holds it still).
    #[arg(long, default_value_t = 10)]
    pub fps: u32,
    /// Screen captures per second at most (bounds CPU under constant change).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub max_fps: u32,
    /// Desktop name shown by viewers.
    #[arg(long)]
    pub name: Option<String>,
}

/// `--consent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsentArg {
    Auto,
    Deny,
    Prompt,
    Command(PathBuf),
}

pub fn parse_consent(s: &str) -> Result<ConsentArg, String> {
    match s {
        "auto" => Ok(ConsentArg::Auto),
        "deny" => Ok(ConsentArg::Deny),
        "prompt" => Ok(ConsentArg::Prompt),
        _ => match s.strip_prefix("cmd:") {
            Some(p) if !p.is_empty() => Ok(ConsentArg::Command(PathBuf::from(p))),
            _ => Err(format!(
                "expected auto, deny, prompt or cmd:PROGRAM, got {s:?}"
            )),
        },
    }
}

pub fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|&n| (1..=ticketvnc::rfb::limits::MAX_FRAMEBUFFER_EDGE).contains(&n))
            .ok_or_else(|| format!("size must be 1..=16384, got {v:?}"))
    };
    Ok((p(w)?, p(h)?))
}
