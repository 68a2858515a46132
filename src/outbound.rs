//! Sessions the customer's side starts: a reverse connection to a viewer
//! in listen mode, or a registration with an UltraVNC repeater (mode II)
//! under an ID (the ticket number by default). The RFB session over the
//! connection is the same as over an accepted one; the server speaks first.

use crate::server::ServerHandle;
use crate::session::{Direction, Outcome};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

/// The default port of a viewer in listen mode (`vncviewer -listen`).
pub const LISTENING_VIEWER_PORT: u16 = 5500;
/// Bytes of an UltraVNC repeater ID message ("ID:<id>", NUL-padded).
pub const REPEATER_ID_LEN: usize = 250;
/// Longest repeater ID accepted.
pub const MAX_REPEATER_ID: usize = 64;
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum OutboundError {
    #[error("{target}: not a host[:port] ({detail})")]
    BadTarget { target: String, detail: String },
    #[error("repeater ID {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadId(String),
    #[error("gave up after {tries} attempts in {secs} s: {target} did not accept a connection (last error: {last})")]
    GaveUp {
        target: String,
        tries: u32,
        secs: u64,
        last: String,
    },
    #[error("repeater {target}: {source}")]
    Repeater {
        target: String,
        source: std::io::Error,
    },
    /// The server was told to stop (a signal, "Stop sharing") before a
    /// session ran.
    #[error("stopped before a technician connected")]
    Stopped,
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `host`, `host:port` or `[v6]:port`, with `default_port` when none.
pub fn parse_target(target: &str, default_port: u16) -> Result<String, OutboundError> {
    let bad = |detail: &str| OutboundError::BadTarget {
        target: target.into(),
        detail: detail.into(),
    };
    if target.is_empty() {
        return Err(bad("empty"));
    }
    if target.parse::<SocketAddr>().is_ok() {
        return Ok(target.to_string());
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?;
            Ok(target.to_string())
        }
        None => Ok(format!("{target}:{default_port}")),
        Some(_) => Err(bad("write an IPv6 address as [addr]:port")),
    }
}

/// The 250-byte message a repeater expects: "ID:<id>" padded with NULs.
pub fn repeater_id_message(id: &str) -> Result<[u8; REPEATER_ID_LEN], OutboundError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REPEATER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(OutboundError::BadId(id.into()));
    }
    let mut m = [0u8; REPEATER_ID_LEN];
    let text = format!("ID:{id}");
    m[..text.len()].copy_from_slice(text.as_bytes());
    Ok(m)
}

/// Connect to `target`, retrying with a doubling pause (1 s up to 10 s)
/// for up to `retry_for`: the customer often clicks before the technician's
/// viewer listens. TCP keepalive notices a dead line within about a minute.
/// Gives up with [`OutboundError::Stopped`] as soon as `stop` turns true.
pub async fn dial(
    target: &str,
    retry_for: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(TcpStream, SocketAddr), OutboundError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    let mut tries = 0;
    loop {
        tries += 1;
        let attempt = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target));
        let attempt = tokio::select! {
            r = attempt => r,
            _ = stopped(stop) => return Err(OutboundError::Stopped),
        };
        let last = match attempt {
            Ok(Ok(s)) => {
                let peer = s.peer_addr().map_err(|e| OutboundError::BadTarget {
                    target: target.into(),
                    detail: e.to_string(),
                })?;
                let _ = s.set_nodelay(true);
                let ka = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(30))
                    .with_interval(Duration::from_secs(10));
                let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&ka);
                return Ok((s, peer));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10 s".to_string(),
        };
        let waited = started.elapsed();
        if waited + pause > retry_for {
            return Err(OutboundError::GaveUp {
                target: target.into(),
                tries,
                secs: waited.as_secs(),
                last,
            });
        }
        info!(%target, error = %last, retry_in = pause.as_secs(), "not reachable yet; trying again");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(stop) => return Err(OutboundError::Stopped),
        }
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// A reverse connection: dial the listening viewer and run one session.
pub async fn reverse(
    handle: &ServerHandle,
    target: &str,
    retry_for: Duration,
) -> Result<Outcome, OutboundError> {
    let (s, peer) = dial(target, retry_for, &mut handle.stopping()).await?;
    info!(%peer, "connected to the technician's viewer");
    Ok(handle.run_outbound(s, peer, Direction::Reverse).await)
}

/// Register with a repeater under `id` and run the session once a viewer
/// with the same ID is paired. Whenever the repeater drops the connection
/// (or restarts) before a session started, register again; a session that
/// ran ends this. `retry_for` bounds each stretch of failed attempts.
pub async fn repeater(
    handle: &ServerHandle,
    target: &str,
    id: &str,
    retry_for: Duration,
) -> Result<Outcome, OutboundError> {
    let msg = repeater_id_message(id)?;
    let mut stop = handle.stopping();
    loop {
        let (mut s, peer) = dial(target, retry_for, &mut stop).await?;
        s.write_all(&msg)
            .await
            .map_err(|source| OutboundError::Repeater {
                target: target.into(),
                source,
            })?;
        info!(%peer, id, "registered with the repeater; waiting for the technician");
        let out = handle.run_outbound(s, peer, Direction::Repeater).await;
        if out.started {
            return Ok(out);
        }
        if *stop.borrow() {
            return Err(OutboundError::Stopped);
        }
        warn!(%peer, reason = %out.reason, "no session through the repeater; registering again");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => return Err(OutboundError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("10.0.0.5", 5500).unwrap(), "10.0.0.5:5500");
        assert_eq!(
            parse_target("helpdesk.example", 5500).unwrap(),
            "helpdesk.example:5500"
        );
        assert_eq!(parse_target("h:5600", 5500).unwrap(), "h:5600");
        assert_eq!(parse_target("[::1]:5600", 5500).unwrap(), "[::1]:5600");
        assert_eq!(parse_target("::1", 5500).unwrap(), "[::1]:5500");
        assert!(parse_target("h:port", 5500).is_err());
        assert!(parse_target("", 5500).is_err());
    }

    #[test]
    fn repeater_ids() {
        let m = repeater_id_message("4711").unwrap();
        assert_eq!(&m[..7], b"ID:4711");
        assert!(m[7..].iter().all(|&b| b == 0));
        assert!(repeater_id_message("").is_err());
        assert!(repeater_id_message("a b").is_err());
        assert!(repeater_id_message(&"9".repeat(65)).is_err());
    }
}
