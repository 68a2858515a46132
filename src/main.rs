mod cli;
mod tickets_cli;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Command, ServeArgs, SourceKind};
use std::sync::Arc;
use ticketvnc::capture::test_pattern::TestPattern;
use ticketvnc::capture::ScreenSource;
use ticketvnc::input::{InputSink, NullInput};
use ticketvnc::security::{Authenticator, StaticPassword, VncPassword};
use ticketvnc::server::{self, ServerConfig};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TICKETVNC_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Ticket(c) => tickets_cli::ticket(cli.db.as_deref(), c),
        Command::Sessions(a) => tickets_cli::sessions(cli.db.as_deref(), a),
        Command::Kb(c) => tickets_cli::kb(cli.db.as_deref(), c),
    }
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

async fn serve(args: ServeArgs) -> Result<()> {
    let authenticator: Option<Arc<dyn Authenticator>> = match (&args.password_file, args.no_auth) {
        (Some(p), _) => Some(Arc::new(StaticPassword {
            password: read_password_file(p)?,
            ticket: None,
        })),
        (None, true) => {
            if let Some(a) = args.listen.iter().find(|a| !a.ip().is_loopback()) {
                bail!(
                    "--no-auth is refused on {a}: anyone who can reach it would get the screen. \
                     Listen on 127.0.0.1 only, or use --password-file"
                );
            }
            None
        }
        (None, false) => {
            bail!("choose --password-file FILE, or --no-auth (loopback addresses only)")
        }
    };
    let source: Box<dyn ScreenSource> = match args.source {
        SourceKind::TestPattern => Box::new(TestPattern::new(args.size.0, args.size.1, args.fps).0),
        SourceKind::X11 => bail!("the X11 source is not built yet; use --source test-pattern"),
    };
    let input: Arc<dyn InputSink> = Arc::new(NullInput);
    let mut cfg = ServerConfig::new(args.listen.clone(), authenticator);
    cfg.desktop_name = args.name.clone();
    cfg.view_only = args.view_only;
    let handle = server::start(cfg, source, input).await?;
    for a in handle.local_addrs() {
        tracing::info!("listening on {a}");
        println!("ticketvnc listening on {a}");
    }
    let stopper = handle.stopper();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("stopping (Ctrl-C)"),
            _ = wait_terminate() => tracing::info!("stopping (SIGTERM)"),
        }
        stopper.stop();
    });
    // Returns an error (non-zero exit) when the screen source goes away.
    handle.wait().await?;
    Ok(())
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
