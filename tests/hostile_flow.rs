//! Hostile Fence and EnableContinuousUpdates messages over real sockets,
//! each sent split at every byte boundary, while a well-behaved viewer
//! keeps getting correct pictures (see hostile.rs for the method).

mod support_raw;

use anyhow::{ensure, Context, Result};
use support_raw::*;
use ticketvnc::rfb::limits::MAX_FENCE_PAYLOAD;
use ticketvnc::rfb::messages::enc;

const PARALLEL: usize = 24;

fn all_splits(len: usize) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(split_points(len));
    v
}

/// Run `f` over every case until the watcher got two more updates.
async fn attack<T, F, Fut>(w: &Watcher, cases: Vec<T>, f: F) -> Result<()>
where
    T: std::fmt::Debug + Clone + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let start = w.updates();
    for i in 1..=100 {
        for_each_parallel(cases.clone(), PARALLEL, f.clone())
            .await
            .with_context(|| format!("round {i}"))?;
        if w.updates() >= start + 2 {
            return Ok(());
        }
    }
    anyhow::bail!("the well-behaved viewer got fewer than 2 updates during the attack")
}

async fn closed_with(mut c: RawClient, reason: &str) -> Result<()> {
    let peer = c.stream.local_addr()?;
    let got = c.expect_close().await?;
    ensure!(got.is_empty(), "{} bytes before the close", got.len());
    let line = session_end_log(peer).await?;
    ensure!(line.contains(reason), "expected '{reason}' in: {line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_payloads_over_64_bytes_close_the_connection() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let mut cases = Vec::new();
    for len in [MAX_FENCE_PAYLOAD + 1, 200, 255] {
        // The payload itself never comes: the length alone decides.
        let m = vec![248, 0, 0, 0, 0x80, 0, 0, 0, len as u8];
        for at in all_splits(m.len()) {
            cases.push((m.clone(), at));
        }
    }
    let (addr, auth) = (srv.addr, srv.auth());
    attack(&w, cases, move |(m, at): (Vec<u8>, usize)| {
        let auth = auth.clone();
        async move {
            let mut c = RawClient::connect(addr, &auth).await?;
            send_split(&mut c.stream, &m, at).await?;
            closed_with(c, "fence payload length").await
        }
    })
    .await?;
    w.wait_for_more(2).await?;
    w.finish().await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_updates_not_offered_close_the_connection() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    // Never offered (no SetEncodings), or ContinuousUpdates listed
    // without Fence (not offered either, as in TigerVNC).
    let mut cases = Vec::new();
    let cu = [150u8, 1, 0, 0, 0, 0, 0, 64, 0, 48];
    for with in [false, true] {
        for at in all_splits(cu.len()) {
            cases.push((with, at));
        }
    }
    let (addr, auth) = (srv.addr, srv.auth());
    attack(&w, cases, move |(with, at): (bool, usize)| {
        let auth = auth.clone();
        async move {
            let mut c = RawClient::connect(addr, &auth).await?;
            if with {
                c.set_encodings(&[enc::RAW, enc::CONTINUOUS_UPDATES])
                    .await?;
            }
            send_split(&mut c.stream, &cu, at).await?;
            closed_with(c, "EnableContinuousUpdates").await
        }
    })
    .await?;
    w.wait_for_more(2).await?;
    w.finish().await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_requests_split_anywhere_are_answered_exactly() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    // Request + BlockBefore + an unknown bit, the largest payload.
    let payload: Vec<u8> = (0..MAX_FENCE_PAYLOAD as u8).collect();
    let mut m = vec![248, 0, 0, 0, 0x80, 0, 0x10, 0x01, payload.len() as u8];
    m.extend_from_slice(&payload);
    let mut want = vec![248, 0, 0, 0, 0, 0, 0, 0x01, payload.len() as u8];
    want.extend_from_slice(&payload);
    let cases: Vec<usize> = all_splits(m.len());
    let (addr, auth) = (srv.addr, srv.auth());
    attack(&w, cases, move |at: usize| {
        let (auth, m, want) = (auth.clone(), m.clone(), want.clone());
        async move {
            // No SetEncodings at all: a viewer that never listed Fence
            // gets nothing but the answer to its own fence.
            let mut c = RawClient::connect(addr, &auth).await?;
            send_split(&mut c.stream, &m, at).await?;
            let got = read_n(&mut c.stream, want.len()).await?;
            ensure!(got == want, "answer {got:?}");
            // Still served afterwards.
            c.set_encodings(&[enc::RAW]).await?;
            c.request_full(false).await?;
            c.next_update().await?;
            Ok(())
        }
    })
    .await?;
    w.wait_for_more(2).await?;
    w.finish().await?;
    srv.stop().await
}
