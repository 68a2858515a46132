//! The browser on the RFB port: a connection that opens with an HTTP GET
//! is a browser, fetching the bundled noVNC page or upgrading to a
//! WebSocket that then carries RFB; anything else is a plain RFB viewer.
//!
//! Detection: an RFB viewer says nothing until the server's version string,
//! a browser (or a TLS client, for `https://`/`wss://`) speaks at once. So
//! a new connection is watched for [`limits::SNIFF_WAIT`]: silence means
//! RFB (the server then speaks first, as always); `GET ` means HTTP; a TLS
//! ClientHello (0x16) with TLS configured means HTTPS; any other bytes are
//! handed, unread, to the RFB session.
//!
//! Everything up to the WebSocket (TLS handshake, request head, answer)
//! must finish within [`limits::WEB_UPGRADE_TIMEOUT`]; the request head is
//! bounded in bytes and headers. The caller holds the connection's
//! pre-authentication slot the whole time.

pub mod ws;

use crate::rfb::limits;
use crate::session::{Rewind, SecurityOffer, TlsAcceptor, Transport};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// A bundled file: URL path, content type, bytes.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

// ASSETS: every file under web/ (the page and the vendored noVNC), listed
// by build.rs.
include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The noVNC release bundled (web/novnc/VERSION).
pub const NOVNC_VERSION: &str = include_str!("../../web/novnc/VERSION");

/// The bundled file served at `path` (query string already removed).
/// Only the fixed table: there is no file system behind it.
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = match path {
        "/" | "/vnc.html" => "/index.html",
        p => p,
    };
    ASSETS.iter().find(|a| a.path == path)
}

/// How browsers are met on a listener.
#[derive(Clone)]
pub struct WebOptions {
    /// Serve the page (`--no-web` turns it off; WebSocket stays).
    pub pages: bool,
    /// TLS for `https://` and `wss://` on the same port.
    pub tls: Option<TlsAcceptor>,
    /// What a `ws://` viewer is offered; `None`: refused (a non-loopback
    /// listener without `--insecure`: the password would cross in clear).
    pub ws_offer: Option<Arc<SecurityOffer>>,
    /// What a `wss://` viewer is offered (TLS already protects it).
    pub wss_offer: Arc<SecurityOffer>,
}

/// What a new connection turned out to be.
pub enum Accepted {
    /// A plain RFB viewer (bytes it already sent come first).
    Rfb(Box<dyn Transport>),
    /// A browser's WebSocket, carrying RFB; `secure`: over TLS.
    WebSocket {
        transport: Box<dyn Transport>,
        offer: Arc<SecurityOffer>,
        secure: bool,
    },
    /// Answered (a page, an error) or dropped: nothing more to do.
    Done,
}

const TLS_HANDSHAKE: u8 = 0x16;

/// A connection that spoke first: a browser, most likely.
pub struct Talker {
    stream: TcpStream,
    first: Vec<u8>,
    deadline: Instant,
}

/// What the first [`limits::SNIFF_WAIT`] of a connection showed.
pub enum Sniffed {
    /// Silence, or bytes that are no browser's: a plain RFB viewer (bytes
    /// it already sent come first).
    Rfb(Box<dyn Transport>),
    /// It spoke first, like a browser; see [`accept`].
    Talker(Talker),
    /// Gone already.
    Done,
}

/// Watch a new connection for [`limits::SNIFF_WAIT`]. Never longer: an
/// RFB viewer must get the server's version string without delay beyond it.
pub async fn sniff(mut stream: TcpStream, opts: &WebOptions) -> Sniffed {
    let deadline = Instant::now() + limits::WEB_UPGRADE_TIMEOUT;
    let mut first = vec![0u8; 512];
    let n = match tokio::time::timeout(limits::SNIFF_WAIT, stream.read(&mut first)).await {
        // Silence: an RFB viewer waiting for the server's version.
        Err(_) => return Sniffed::Rfb(Box::new(stream)),
        Ok(Ok(0)) | Ok(Err(_)) => return Sniffed::Done,
        Ok(Ok(n)) => n,
    };
    first.truncate(n);
    let http = b"GET ".starts_with(&first[..first.len().min(4)]);
    let tls = first[0] == TLS_HANDSHAKE && opts.tls.is_some();
    if http || tls {
        Sniffed::Talker(Talker {
            stream,
            first,
            deadline,
        })
    } else {
        Sniffed::Rfb(Box::new(Rewind::new(stream, first)))
    }
}

/// Answer or upgrade a connection that spoke first, within
/// [`limits::WEB_UPGRADE_TIMEOUT`] of its accept.
pub async fn accept(t: Talker, opts: &WebOptions) -> Accepted {
    let Talker {
        mut stream,
        mut first,
        deadline,
    } = t;
    // "GET " may come in pieces.
    while first.len() < 4 && b"GET ".starts_with(&first) {
        let mut more = [0u8; 64];
        match tokio::time::timeout_at(deadline, stream.read(&mut more)).await {
            Ok(Ok(n)) if n > 0 => first.extend_from_slice(&more[..n]),
            _ => return Accepted::Done,
        }
    }
    if first.starts_with(b"GET ") {
        return http(Box::new(Rewind::new(stream, first)), opts, false, deadline).await;
    }
    if first[0] == TLS_HANDSHAKE {
        if let Some(tls) = &opts.tls {
            let inner = Box::new(stream) as Box<dyn Transport>;
            return match accept_tls(tls, inner, first, deadline).await {
                Ok(s) => http(s, opts, true, deadline).await,
                Err(e) => {
                    debug!(error = %e, "TLS handshake on the web port failed");
                    Accepted::Done
                }
            };
        }
    }
    Accepted::Rfb(Box::new(Rewind::new(stream, first)))
}

#[cfg(not(target_os = "macos"))]
async fn accept_tls(
    tls: &TlsAcceptor,
    stream: Box<dyn Transport>,
    read: Vec<u8>,
    deadline: Instant,
) -> io::Result<Box<dyn Transport>> {
    match tokio::time::timeout_at(deadline, tls.accept(Rewind::new(stream, read))).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(target_os = "macos")]
async fn accept_tls(
    tls: &TlsAcceptor,
    _stream: Box<dyn Transport>,
    _read: Vec<u8>,
    _deadline: Instant,
) -> io::Result<Box<dyn Transport>> {
    match *tls {}
}

/// A parsed request head.
struct Request {
    path: String,
    websocket: bool,
    version_13: bool,
    key: Option<String>,
    binary: bool,
}

/// Why a request head could not be read.
enum HeadError {
    TooLarge,
    Bad,
    Gone,
}

async fn read_head(
    s: &mut Box<dyn Transport>,
    deadline: Instant,
) -> Result<(Request, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; limits::HTTP_MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut r = Request {
                    path: req.path.unwrap_or("/").to_string(),
                    websocket: false,
                    version_13: false,
                    key: None,
                    binary: false,
                };
                let (mut upgrade, mut connection) = (false, false);
                let tokens = |v: &[u8]| {
                    String::from_utf8_lossy(v)
                        .split(',')
                        .map(|t| t.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                };
                for h in req.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    match name.as_str() {
                        "upgrade" => upgrade |= tokens(h.value).iter().any(|t| t == "websocket"),
                        "connection" => {
                            connection |= tokens(h.value).iter().any(|t| t == "upgrade")
                        }
                        "sec-websocket-version" => r.version_13 = h.value == b"13",
                        "sec-websocket-key" => {
                            r.key = std::str::from_utf8(h.value)
                                .ok()
                                .map(|k| k.trim().to_string())
                        }
                        "sec-websocket-protocol" => {
                            r.binary |= tokens(h.value).iter().any(|t| t == "binary")
                        }
                        _ => {}
                    }
                }
                r.websocket = upgrade && connection;
                if req.method != Some("GET") {
                    return Err(HeadError::Bad);
                }
                return Ok((r, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Bad),
        }
        if buf.len() >= limits::HTTP_MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
        let room = (limits::HTTP_MAX_REQUEST_HEAD - buf.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, s.read(&mut chunk[..room])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(HeadError::Gone),
        }
    }
}

/// A Sec-WebSocket-Key: 16 bytes in base64.
fn valid_key(k: &str) -> bool {
    k.len() == 24
        && k.ends_with("==")
        && k[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

async fn http(
    mut s: Box<dyn Transport>,
    opts: &WebOptions,
    secure: bool,
    deadline: Instant,
) -> Accepted {
    let (req, leftover) = match read_head(&mut s, deadline).await {
        Ok(r) => r,
        Err(HeadError::TooLarge) => {
            respond(s, "431 Request Header Fields Too Large", "", b"", deadline).await;
            return Accepted::Done;
        }
        Err(HeadError::Bad) => {
            respond(s, "400 Bad Request", "", b"", deadline).await;
            return Accepted::Done;
        }
        Err(HeadError::Gone) => return Accepted::Done,
    };
    if req.websocket {
        let offer = if secure {
            Some(opts.wss_offer.clone())
        } else {
            opts.ws_offer.clone()
        };
        let Some(offer) = offer else {
            let msg = b"WebSocket without TLS is refused on this address; use https:// (wss://).\n";
            respond(
                s,
                "403 Forbidden",
                "text/plain; charset=utf-8",
                msg,
                deadline,
            )
            .await;
            return Accepted::Done;
        };
        let key = match req.key {
            Some(k) if valid_key(&k) && req.version_13 => k,
            _ => {
                respond(s, "400 Bad Request", "", b"", deadline).await;
                return Accepted::Done;
            }
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{}\r\n",
            if req.binary {
                "Sec-WebSocket-Protocol: binary\r\n"
            } else {
                ""
            }
        );
        let sent = tokio::time::timeout_at(deadline, async {
            s.write_all(head.as_bytes()).await?;
            s.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return Accepted::Done;
        }
        let stream: Box<dyn Transport> = if leftover.is_empty() {
            s
        } else {
            Box::new(Rewind::new(s, leftover))
        };
        return Accepted::WebSocket {
            transport: Box::new(ws::WsTransport::new(stream).await),
            offer,
            secure,
        };
    }
    let path = req.path.split(['?', '#']).next().unwrap_or("/");
    match asset(path).filter(|_| opts.pages) {
        Some(a) => respond(s, "200 OK", a.content_type, a.body, deadline).await,
        None => {
            respond(
                s,
                "404 Not Found",
                "text/plain; charset=utf-8",
                b"not found\n",
                deadline,
            )
            .await
        }
    }
    Accepted::Done
}

/// Send one response and close.
async fn respond(
    mut s: Box<dyn Transport>,
    status: &str,
    content_type: &str,
    body: &[u8],
    deadline: Instant,
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if content_type.starts_with("text/html") {
        // Only this origin's scripts, and its own WebSocket.
        head.push_str(
            "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; \
             img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'\r\n",
        );
    }
    head.push_str("\r\n");
    let _ = tokio::time::timeout_at(deadline, async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        s.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bundled_paths_are_served() {
        assert!(asset("/").is_some());
        assert!(asset("/vnc.html").is_some());
        assert!(asset("/core/rfb.js").is_some());
        assert_eq!(
            asset("/core/rfb.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        for p in [
            "/../Cargo.toml",
            "/core/../../Cargo.toml",
            "//etc/passwd",
            "/core/",
            "/core",
            "",
            "/index.html/",
            "/%2e%2e/Cargo.toml",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
    }

    #[test]
    fn websocket_keys() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ==\r\nX: y"));
        assert!(!valid_key(""));
    }
}
