//! What carries a session's bytes: TCP at first, TLS after VeNCrypt's
//! subtype is agreed (later WebSocket). The protocol core never knows.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Any byte stream a session can run over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// The TLS acceptor VeNCrypt uses.
#[cfg(not(target_os = "macos"))]
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// No TLS on this platform yet (see Cargo.toml): no value can exist.
#[cfg(target_os = "macos")]
#[derive(Clone)]
pub enum TlsAcceptor {}

/// A stream that first gives back bytes already read from it (bytes the
/// protocol core received beyond the point where TLS starts).
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S, prefix: Vec<u8>) -> Rewind<S> {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Run the server side of a TLS handshake over `stream` (after `leftover`,
/// the bytes already received), within `deadline`.
#[cfg(not(target_os = "macos"))]
pub async fn accept_tls(
    tls: &TlsAcceptor,
    stream: Box<dyn Transport>,
    leftover: Vec<u8>,
    deadline: tokio::time::Instant,
) -> io::Result<Box<dyn Transport>> {
    match tokio::time::timeout_at(deadline, tls.accept(Rewind::new(stream, leftover))).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake deadline passed",
        )),
    }
}

#[cfg(target_os = "macos")]
pub async fn accept_tls(
    tls: &TlsAcceptor,
    _stream: Box<dyn Transport>,
    _leftover: Vec<u8>,
    _deadline: tokio::time::Instant,
) -> io::Result<Box<dyn Transport>> {
    match *tls {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_gives_the_prefix_first() {
        let inner: &[u8] = b" world";
        let mut r = Rewind::new(inner, b"hello".to_vec());
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
