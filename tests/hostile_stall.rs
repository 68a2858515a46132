//! Bug class 7, third case: a viewer that requests updates but never reads.
//!
//! In its own test binary because it measures the resident memory of the
//! process (server and clients), which other tests running in parallel
//! would disturb.

mod support_raw;

use anyhow::{ensure, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support_raw::*;
use ticketvnc::rfb::messages::enc;

/// Resident set size of this process in bytes (Linux).
fn rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_viewer_that_never_reads_is_dropped_and_memory_stays_bounded() -> Result<()> {
    const W: u16 = 800;
    const H: u16 = 600;
    let frame_bytes = W as u64 * H as u64 * 4;
    let stall = Duration::from_secs(5);
    let srv = TestServer::start(ServerOpts {
        width: W,
        height: H,
        write_stall_timeout: stall,
        ..ServerOpts::default()
    })
    .await?;
    let w = srv.watcher().await?;
    // Let the watcher's frame cache and the allocator reach a steady state:
    // three one-second windows in a row that do not raise the peak.
    let mut baseline = 0;
    let mut stable = 0;
    for i in 0..30 {
        let mut window_peak = 0;
        for _ in 0..50 {
            window_peak = window_peak.max(rss_bytes()?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        note(&format!(
            "warm-up window {i}: peak RSS {} KiB",
            window_peak / 1024
        ));
        if baseline > 0 && window_peak <= baseline + (1 << 20) {
            stable += 1;
            if stable == 3 {
                break;
            }
        } else {
            stable = 0;
        }
        baseline = baseline.max(window_peak);
    }
    w.wait_for_more(2).await?;

    // Sample memory until told to stop.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(r) = rss_bytes() {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The stalling viewer: asks for a full picture every 10 ms, reads nothing.
    let mut c = srv.client().await?;
    let peer = c.stream.local_addr()?;
    c.set_encodings(&[enc::RAW]).await?;
    let during_start = w.updates();
    let stalled = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut requests = 0u64;
        while tokio::time::Instant::now() < deadline {
            if c.request_full(false).await.is_err() {
                break;
            }
            requests += 1;
            if log_lines_for(c.stream.local_addr()?)
                .iter()
                .any(|l| l.contains("session ended"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>((c, requests))
    });
    let line = session_end_log(peer).await?;
    ensure!(line.contains("viewer stalled"), "log: {line}");
    let during = w.updates() - during_start;
    ensure!(
        during >= 2,
        "the well-behaved viewer got {during} updates while the other stalled"
    );
    let (mut c, requests) = stalled.await??;
    // Keep measuring a little after the drop, then compare.
    w.wait_for_more(5).await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let grew = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    // What was queued for the stalled viewer can now be read; it is no more
    // than the socket buffers held when the server gave up.
    let (got, end) = read_to_close(&mut c.stream, WAIT).await;
    ensure!(end != End::Open, "the stalled connection is still open");
    note(&format!(
        "stalled viewer: {requests} requests sent, {} bytes were waiting for it, \
         dropped ({end:?}); the good viewer got {during} updates meanwhile; \
         peak memory growth {} KiB (a frame is {} KiB)",
        got.len(),
        grew / 1024,
        frame_bytes / 1024
    ));
    // A server that queued a frame per capture for the stalled viewer would
    // grow by up to 30 frames a second for the 5 s it waits; the bounded one
    // holds a shadow frame and one update (the rest is this process's own
    // noise: the verifying viewer's frame cache and the allocator).
    ensure!(
        grew < 24 * frame_bytes,
        "memory grew by {} KiB while a viewer stalled",
        grew / 1024
    );
    ensure!(
        (got.len() as u64) < 32 * frame_bytes,
        "{} bytes were queued for a viewer that never read",
        got.len()
    );
    let n = w.finish().await?;
    note(&format!("well-behaved viewer: {n} verified updates"));
    srv.stop().await
}
