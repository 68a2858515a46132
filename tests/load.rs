//! Load over loopback, bounded in time: 50 authenticated viewers watch a
//! changing screen for 60 s and every one of them keeps getting updates;
//! none starves while the others are served.
//!
//! The viewers are deliberately light (they skip pixel data instead of
//! decoding it) so the measuring side is never the bottleneck; pixel
//! correctness is the other suites' job.

#[path = "support_raw/mod.rs"]
mod support_raw;

use anyhow::{ensure, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support_raw::*;
use ticketvnc::rfb::messages::{enc, encode_client_message};
use ticketvnc::rfb::ClientMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIEWERS: usize = 50;
const DURATION: Duration = Duration::from_secs(60);

/// What one viewer saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    updates: u64,
    bytes: u64,
    /// Longest wait for an update (from the request to its end).
    worst: Duration,
}

/// Log in, then request incremental updates and skip their pixels until
/// `stop`. Only Raw is asked for, so every rectangle is w*h*4 bytes.
async fn light_viewer(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Result<Seen> {
    let c = RawClient::connect(addr, &Auth::Password(PASSWORD.to_vec())).await?;
    let (w, h) = (c.width, c.height);
    let mut s = c.stream;
    let mut msg = Vec::new();
    encode_client_message(&ClientMessage::SetEncodings(vec![enc::RAW]), &mut msg);
    s.write_all(&msg).await?;
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut incremental = false;
    while !stop.load(Ordering::Relaxed) {
        let mut req = Vec::new();
        encode_client_message(
            &ClientMessage::FramebufferUpdateRequest {
                incremental,
                rect: ticketvnc::framebuffer::Rect::new(0, 0, w, h),
            },
            &mut req,
        );
        incremental = true;
        s.write_all(&req).await?;
        let asked = Instant::now();
        let mut head = [0u8; 4];
        tokio::time::timeout(WAIT, s.read_exact(&mut head))
            .await
            .context("no update within the wait limit: starved")??;
        ensure!(
            head[0] == 0,
            "expected a FramebufferUpdate, got {}",
            head[0]
        );
        let n = u16::from_be_bytes([head[2], head[3]]);
        for _ in 0..n {
            let mut r = [0u8; 12];
            s.read_exact(&mut r).await?;
            let rw = u16::from_be_bytes([r[4], r[5]]) as u64;
            let rh = u16::from_be_bytes([r[6], r[7]]) as u64;
            let e = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            ensure!(e == enc::RAW, "encoding {e}");
            let mut left = rw * rh * 4;
            seen.bytes += left + 12;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                s.read_exact(&mut buf[..k]).await?;
                left -= k as u64;
            }
        }
        seen.updates += 1;
        seen.worst = seen.worst.max(asked.elapsed());
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_viewers_for_a_minute_none_starves() -> Result<()> {
    let limit = rlimit::increase_nofile_limit(1024)?;
    ensure!(limit >= 256, "RLIMIT_NOFILE is only {limit}");
    let srv = TestServer::start(ServerOpts {
        width: 160,
        height: 120,
        fps: 10,
        password: Some(PASSWORD.to_vec()),
        ..ServerOpts::default()
    })
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..VIEWERS {
        tasks.push(tokio::spawn(light_viewer(srv.addr, stop.clone())));
    }
    let started = Instant::now();
    tokio::time::sleep(DURATION).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = seen.iter().map(|s| s.updates).sum();
    let fewest = seen.iter().map(|s| s.updates).min().unwrap_or(0);
    let most = seen.iter().map(|s| s.updates).max().unwrap_or(0);
    let worst = seen.iter().map(|s| s.worst).max().unwrap_or_default();
    let bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    note(&format!(
        "{VIEWERS} viewers for {secs:.0} s: {total} updates ({:.1}/s each on average), \
         fewest {fewest}, most {most}, longest wait {worst:?}, {:.1} MB",
        total as f64 / VIEWERS as f64 / secs,
        bytes as f64 / 1e6
    ));
    // Every viewer kept up with the screen: the pattern changes 10 times a
    // second, so a fair share is about 10 updates a second each. Starving
    // shows as a viewer far below the others.
    ensure!(
        fewest * 4 >= most && fewest as f64 >= secs,
        "a viewer starved: fewest {fewest}, most {most} updates in {secs:.0} s"
    );
    srv.stop().await
}

/// Fifty viewers behind one NAT (one address) log in at once: all get in.
/// (Per source, only as many credential checks run at once as failures
/// are left before a block; the rest wait their turn instead of being
/// turned away.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_viewers_from_one_address_all_get_in() -> Result<()> {
    rlimit::increase_nofile_limit(1024)?;
    let srv = TestServer::start(ServerOpts {
        width: 64,
        height: 48,
        fps: 0,
        password: Some(PASSWORD.to_vec()),
        max_preauth: None, // the default limits
        ..ServerOpts::default()
    })
    .await?;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind("127.55.0.1:0".parse()?)?;
            let mut s = sock.connect(addr).await?;
            handshake(&mut s, &Auth::Password(PASSWORD.to_vec()), true).await?;
            let mut c = RawClient::after_server_init(s).await?;
            c.request_full(false).await?;
            c.next_update().await?;
            anyhow::Ok(c)
        }));
    }
    let mut inside = Vec::new();
    for t in tasks {
        inside.push(
            t.await?
                .context("a viewer behind the NAT was turned away")?,
        );
    }
    ensure!(inside.len() == 50);
    srv.stop().await
}
