//! A WebSocket connection as a byte stream: the session reads and writes
//! RFB bytes; they travel in binary frames.
//!
//! - Reading gives the payloads of binary frames in order; pings are
//!   answered by tungstenite, a close frame ends the stream (EOF).
//! - A text frame, an oversized frame or a protocol error is answered with
//!   a close frame (1003, 1009, 1002) where the socket takes it at once,
//!   and the read fails: the session ends like on any broken connection.
//! - A write is complete only when its frame has been handed to the socket
//!   (the session's writer never calls `flush`, and its stall timeout must
//!   see a viewer that does not read).

use crate::rfb::limits;
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The limits every WebSocket connection runs under.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(limits::WS_MAX_FRAME_BYTES))
        .max_message_size(Some(limits::WS_MAX_FRAME_BYTES))
        .accept_unmasked_frames(false)
}

pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// Payload of the binary frame being read, and how far.
    data: tokio_tungstenite::tungstenite::Bytes,
    pos: usize,
    eof: bool,
    /// Bytes of the last write, accepted but not yet handed to the socket.
    unflushed: Option<usize>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    /// Wrap a stream whose upgrade was just answered with 101.
    pub async fn new(stream: S) -> WsTransport<S> {
        WsTransport {
            ws: WebSocketStream::from_raw_socket(stream, Role::Server, Some(config())).await,
            data: Default::default(),
            pos: 0,
            eof: false,
            unflushed: None,
        }
    }

    /// Send a close frame with `code` if the socket takes it now; never waits.
    fn close_now(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &'static str) {
        let mut ws = Pin::new(&mut self.ws);
        if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if ws.as_mut().start_send(Message::Close(Some(frame))).is_ok() {
                let _ = ws.poll_flush(cx);
            }
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.data.len() {
                let n = (this.data.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.data[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => this.eof = true,
                Some(Ok(Message::Binary(b))) => {
                    this.data = b;
                    this.pos = 0;
                }
                Some(Ok(Message::Text(_))) => {
                    this.close_now(cx, CloseCode::Unsupported, "binary frames only");
                    return Poll::Ready(Err(invalid("text frame on an RFB WebSocket")));
                }
                // A close is answered by tungstenite; the next poll ends the stream.
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => this.eof = true,
                Some(Err(WsError::Capacity(_))) => {
                    this.close_now(cx, CloseCode::Size, "frame too large");
                    return Poll::Ready(Err(invalid("WebSocket frame too large")));
                }
                Some(Err(WsError::Io(e))) => return Poll::Ready(Err(e)),
                Some(Err(_)) => {
                    this.close_now(cx, CloseCode::Protocol, "protocol error");
                    return Poll::Ready(Err(invalid("WebSocket protocol error")));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A frame accepted earlier but still in tungstenite's buffer: the
        // write that queued it completes when it is out (callers such as
        // write_all retry with the same bytes).
        if let Some(n) = this.unflushed {
            ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(to_io)?;
            this.unflushed = None;
            return Poll::Ready(Ok(n));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut ws = Pin::new(&mut this.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(limits::WS_MAX_OUT_FRAME_BYTES);
        ws.as_mut()
            .start_send(Message::Binary(buf[..n].to_vec().into()))
            .map_err(to_io)?;
        match ws.poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| n).map_err(to_io)),
            Poll::Pending => {
                this.unflushed = Some(n);
                Poll::Pending
            }
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}
