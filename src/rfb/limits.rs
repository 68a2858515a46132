//! Every bound the server puts on what a client may send, in one place.

/// Distinct encodings kept from one SetEncodings message (the rest are ignored).
pub const MAX_ENCODINGS_KEPT: usize = 64;
/// Largest ClientCutText accepted (bytes). Larger: the connection is closed.
pub const MAX_CUT_TEXT: u32 = 1 << 20;
/// Largest number of screens in a SetDesktopSize message (u8 on the wire, 255 max).
pub const MAX_SCREENS: usize = 16;
/// Largest Fence payload (rfbproto limits it to 64 bytes); longer closes
/// the connection.
pub const MAX_FENCE_PAYLOAD: usize = 64;
/// Fence round-trip measurements outstanding at most per viewer; an
/// update is sent without one when a viewer leaves this many unanswered.
pub const MAX_FENCE_PINGS: usize = 64;
/// Largest framebuffer edge the server will ever serve.
pub const MAX_FRAMEBUFFER_EDGE: u16 = 16384;
/// Largest message the decoder may have to buffer: a ClientCutText of
/// [`MAX_CUT_TEXT`] bytes (8-byte header), or SetEncodings with 65535
/// entries, whichever is larger.
pub const MAX_MESSAGE_BYTES: usize = {
    let cut_text = 8 + MAX_CUT_TEXT as usize;
    let set_encodings = 4 + 4 * 65535;
    if cut_text > set_encodings {
        cut_text
    } else {
        set_encodings
    }
};
/// Time a client has from TCP accept to ClientInit (seconds).
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 30;
/// Connections in the handshake at once at most (MaxStartups' hard limit;
/// random early drop starts at half of it). At the limit the oldest
/// connection of the network holding the most is closed to make room.
pub const MAX_PREAUTH_CONNECTIONS: usize = 256;
/// Connections from one network (IPv4 /24, IPv6 /48) in the handshake at
/// once; beyond it that network's own oldest connection is closed.
pub const MAX_PREAUTH_PER_NETWORK: usize = 64;
/// Above the soft limit, networks holding this many are subject to random
/// early drop.
pub const PREAUTH_FAIR_SHARE: usize = 8;
/// A viewer that does not take a pending write for this long is disconnected (seconds).
pub const WRITE_STALL_TIMEOUT_SECS: u64 = 30;
/// Desktop name length sent in ServerInit / DesktopName.
pub const MAX_DESKTOP_NAME: usize = 255;
/// Failed authentications in a row from one address before it is refused for a while.
pub const AUTH_FAILURES_BEFORE_BLOCK: u32 = 5;
/// First refusal period after too many failures (seconds); doubles per further failure.
pub const AUTH_BLOCK_BASE_SECS: u64 = 10;
/// Longest refusal period (seconds).
pub const AUTH_BLOCK_MAX_SECS: u64 = 600;
/// Longest VeNCrypt Plain user name accepted on the wire (bytes).
pub const MAX_PLAIN_USERNAME: usize = 255;
/// Longest VeNCrypt Plain password accepted on the wire (bytes).
pub const MAX_PLAIN_PASSWORD: usize = 1024;
/// Characters of a network-supplied user name kept for logs and the journal.
pub const MAX_LOGGED_USERNAME: usize = 64;
/// Refused connections (lockout, overload) told why at once, at most; more
/// are closed without a word.
pub const MAX_POLITE_REFUSALS: usize = 32;
/// Time a refused connection gets to send its version and read the reason (seconds).
pub const REFUSAL_TIMEOUT_SECS: u64 = 5;
/// Default time the person at the screen has to answer (seconds).
pub const CONSENT_TIMEOUT_SECS: u64 = 30;
/// Failed credential checks a minute across all addresses at most (the
/// global guessing budget, also the burst); a handshake without a token
/// waits for one.
pub const AUTH_FAILURES_PER_MINUTE: u32 = 60;
/// Pause before every failure result (TigerVNC waits 100 ms too).
pub const AUTH_FAILURE_DELAY_MS: u64 = 100;
/// Longest wait for a viewer to be paired through a repeater before the
/// registration is renewed.
pub const REPEATER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
/// How long a new connection is watched for a first byte before the server
/// speaks first as RFB: a browser (HTTP, WebSocket) or TLS client talks at
/// once (its request follows the TCP handshake in the same flight, so this
/// does not grow with the round-trip time), a plain RFB viewer waits for
/// the server's version string, which it thus gets this much later.
/// libvncserver (x11vnc) waits the same 100 ms
/// (`WEBSOCKETS_CLIENT_CONNECT_WAIT_MS`).
pub const SNIFF_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// Time from TCP accept until an HTTP request (page or WebSocket upgrade,
/// with its TLS handshake for `wss://`) has been read and answered.
pub const WEB_UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest HTTP request head (request line and headers) read, in bytes.
pub const HTTP_MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most headers in one HTTP request.
pub const HTTP_MAX_HEADERS: usize = 32;
/// Largest WebSocket frame (and message) a browser may send. noVNC sends
/// one frame per flush of its small send queue; the largest RFB message a
/// client may send ([`MAX_MESSAGE_BYTES`]) fits in one with room to spare.
pub const WS_MAX_FRAME_BYTES: usize = MAX_MESSAGE_BYTES + 64 * 1024;
/// Bytes of RFB output carried in one outgoing WebSocket frame at most.
pub const WS_MAX_OUT_FRAME_BYTES: usize = 256 * 1024;
/// Largest cursor edge sent to viewers or composited (pixels); larger
/// images are cut to this around the hotspot by the capture.
pub const MAX_CURSOR_EDGE: u16 = 256;
/// How long a clipboard transfer with a local application (a Wayland
/// selection read or served through a pipe) may take before it is given up.
pub const CLIPBOARD_TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
