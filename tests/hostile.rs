//! Hostile-input tests over real TCP sockets against the in-process server
//! (bug classes 1, 3, 4, 5, 6 and 7 of ENGINEERING.md).
//!
//! Every test runs a well-behaved viewer (the [`Watcher`]) that keeps
//! requesting updates and checks after each one that its framebuffer is
//! exactly a frame of the animated test pattern. For each attack the test
//! checks that the offending connection ends the way it must (an orderly
//! close, a 3.8 reason string where the protocol has one, a reason in the
//! server's log), that the watcher got updates while the attack ran and
//! after it, and that a new viewer can still connect. Each offending
//! message is also sent split at every byte boundary (one connection per
//! split point, run in parallel), with the same outcome; messages longer
//! than 128 bytes (the 65535-entry SetEncodings) are split at every
//! boundary in their first and last 40 bytes and at 32 points in between.
//!
//! The third class-7 case (a viewer that never reads) is in
//! `hostile_stall.rs`, which measures process memory and so runs alone.

mod support_raw;

use anyhow::{bail, ensure, Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support_raw::*;
use ticketvnc::capture::test_pattern::PatternControl;
use ticketvnc::framebuffer::Rect;
use ticketvnc::input::InputEvent;
use ticketvnc::rfb::limits::MAX_CUT_TEXT;
use ticketvnc::rfb::messages::enc;
use ticketvnc::rfb::{ClientMessage, PixelFormat};
use ticketvnc::security::{vnc_auth_response, VncPassword};
use tokio::io::AsyncWriteExt;

/// Connections in flight at once in the split tests.
const PARALLEL: usize = 24;

/// Run attack rounds until the watcher has received at least two verified
/// updates since the first round began; every round must pass. Proves the
/// well-behaved viewer is served *while* the attack goes on.
async fn during_attack<F, Fut>(w: &Watcher, mut round: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let start = w.updates();
    for i in 1..=100 {
        round().await.with_context(|| format!("attack round {i}"))?;
        if w.updates() >= start + 2 {
            return Ok(());
        }
    }
    bail!("the well-behaved viewer got fewer than 2 updates during 100 attack rounds")
}

/// [`during_attack`] where a round is `f` applied to every case in parallel.
async fn attack_parallel<T, F, Fut>(w: &Watcher, cases: Vec<T>, parallel: usize, f: F) -> Result<()>
where
    T: std::fmt::Debug + Clone + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    during_attack(w, || {
        let f = f.clone();
        for_each_parallel(cases.clone(), parallel, move |t| f(t))
    })
    .await
}

/// After the attack the watcher still gets updates, all its pictures were
/// correct, and a new viewer gets in and gets a picture.
async fn check_survived(srv: &TestServer, w: Watcher) -> Result<()> {
    w.wait_for_more(3).await?;
    let mut c = srv
        .client()
        .await
        .context("a new viewer after the attack")?;
    c.set_encodings(&[enc::RAW]).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    let n = w.finish().await?;
    note(&format!("well-behaved viewer: {n} verified updates"));
    Ok(())
}

/// Connect, finish the handshake and send `msg` split at `at`.
async fn offend(srv_addr: SocketAddr, auth: Auth, msg: &[u8], at: usize) -> Result<RawClient> {
    let mut c = RawClient::connect(srv_addr, &auth).await?;
    send_split(&mut c.stream, msg, at).await?;
    Ok(c)
}

/// The server must close `c` in an orderly way without sending anything,
/// and log why (`reason` is part of the log line).
async fn expect_silent_close(mut c: RawClient, reason: &str) -> Result<()> {
    let peer = c.stream.local_addr()?;
    explain(peer, silent_close(&mut c, reason).await)
}

async fn silent_close(c: &mut RawClient, reason: &str) -> Result<()> {
    let peer = c.stream.local_addr()?;
    let got = c.expect_close().await?;
    ensure!(
        got.is_empty(),
        "the server sent {} bytes before closing",
        got.len()
    );
    let line = session_end_log(peer).await?;
    ensure!(line.contains(reason), "expected '{reason}' in: {line}");
    Ok(())
}

/// Every split point, plus 0 (the message in one write).
fn all_splits(len: usize) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(split_points(len));
    v
}

// ------------------------------------------------------------- class 1

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class1_huge_cut_text_lengths_close_the_connection() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let mut cases = Vec::new();
    for len in [0xFFFF_FFFFu32, 0x8000_0000, 0x7FFF_FFFF, MAX_CUT_TEXT + 1] {
        let mut m = vec![6, 0, 0, 0];
        m.extend_from_slice(&len.to_be_bytes());
        for at in all_splits(m.len()) {
            cases.push((len, m.clone(), at));
        }
    }
    let (addr, auth) = (srv.addr, srv.auth());
    attack_parallel(&w, cases, PARALLEL, move |(_len, m, at)| {
        let auth = auth.clone();
        async move {
            let c = offend(addr, auth, &m, at).await?;
            expect_silent_close(c, "cut text length").await
        }
    })
    .await?;
    ensure!(
        !srv.input
            .events()
            .iter()
            .any(|e| matches!(e, InputEvent::CutText(_))),
        "refused cut text reached the desktop"
    );
    check_survived(&srv, w).await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class1_cut_text_shorter_than_declared_then_eof() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    // Declares 100 bytes, sends 50, then closes its sending side.
    let mut m = vec![6, 0, 0, 0];
    m.extend_from_slice(&100u32.to_be_bytes());
    m.extend_from_slice(&[b'x'; 50]);
    let (addr, auth) = (srv.addr, srv.auth());
    attack_parallel(&w, all_splits(m.len()), PARALLEL, move |at| {
        let (auth, m) = (auth.clone(), m.clone());
        async move {
            let mut c = offend(addr, auth, &m, at).await?;
            c.stream.shutdown().await?;
            expect_silent_close(c, "viewer closed").await
        }
    })
    .await?;
    ensure!(
        !srv.input
            .events()
            .iter()
            .any(|e| matches!(e, InputEvent::CutText(_))),
        "a truncated cut text reached the desktop"
    );
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// The limit itself is not off by one: exactly MAX_CUT_TEXT bytes are
/// delivered and the connection stays in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class1_cut_text_at_the_limit_is_delivered() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let text: Vec<u8> = (0..MAX_CUT_TEXT).map(|i| b'a' + (i % 26) as u8).collect();
    let mut c = srv.client().await?;
    c.send(&ClientMessage::ClientCutText(text.clone())).await?;
    c.set_encodings(&[enc::RAW]).await?;
    c.request_full(false).await?;
    c.next_update().await?;
    let got = srv.input.events();
    let expect: String = text.iter().map(|&b| b as char).collect();
    ensure!(
        got.iter()
            .any(|e| matches!(e, InputEvent::CutText(t) if *t == expect)),
        "the cut text of exactly the limit did not reach the desktop"
    );
    check_survived(&srv, w).await?;
    srv.stop().await
}

// ------------------------------------------------------------- class 3

/// After `setup` (sent split at `at`), a full request is answered with Raw
/// rectangles showing exactly one frame of the pattern.
async fn expect_correct_update(
    srv_addr: SocketAddr,
    control: &PatternControl,
    setup: &[u8],
    at: usize,
) -> Result<()> {
    let mut c = RawClient::connect(srv_addr, &Auth::None).await?;
    let peer = c.stream.local_addr()?;
    explain(peer, correct_update(&mut c, control, setup, at).await)
}

async fn correct_update(
    c: &mut RawClient,
    control: &PatternControl,
    setup: &[u8],
    at: usize,
) -> Result<()> {
    send_split(&mut c.stream, setup, at).await?;
    let lo = control.frame().saturating_sub(2);
    c.request_full(false).await?;
    let rects = c.next_update().await?;
    ensure!(
        rects.iter().all(|r| r.encoding == enc::RAW),
        "non-Raw rectangle: {rects:?}"
    );
    let hi = control.frame();
    ensure!(
        c.find_frame(lo, hi).is_some(),
        "the update is not a frame of the pattern in {lo}..={hi}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class3_set_encodings_empty_duplicate_unknown_are_accepted() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let lists: Vec<Vec<i32>> = vec![
        vec![],
        vec![enc::RAW, enc::RAW, enc::RAW],
        // Unknown numbers (real, pseudo and absurd), duplicates, and Raw last.
        vec![
            12345,
            -12345,
            i32::MAX,
            i32::MIN,
            3,
            99,
            enc::DESKTOP_SIZE,
            enc::DESKTOP_SIZE,
            12345,
            -1,
            enc::RAW,
            enc::RAW,
        ],
    ];
    let mut cases = Vec::new();
    for l in &lists {
        let m = encode(&[ClientMessage::SetEncodings(l.clone())]);
        for at in all_splits(m.len()) {
            cases.push((m.clone(), at));
        }
    }
    let (addr, control) = (srv.addr, srv.control.clone());
    attack_parallel(&w, cases, PARALLEL, move |(m, at)| {
        let control = control.clone();
        async move { expect_correct_update(addr, &control, &m, at).await }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

fn set_encodings_65535() -> Vec<u8> {
    // 65535 entries: unknown numbers, with many duplicates, Raw at the end.
    let list: Vec<i32> = (0..65535)
        .map(|i| {
            if i == 65534 {
                enc::RAW
            } else {
                1000 + (i % 300)
            }
        })
        .collect();
    encode(&[ClientMessage::SetEncodings(list)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class3_set_encodings_65535_entries_one_byte_at_a_time() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let m = set_encodings_65535();
    assert_eq!(m.len(), 4 + 4 * 65535);
    let (addr, control) = (srv.addr, srv.control.clone());
    during_attack(&w, || {
        let (m, control) = (&m, control.clone());
        async move {
            let mut c = RawClient::connect(addr, &Auth::None).await?;
            // 262144 one-byte writes with Nagle off: the server sees the
            // message in many small reads of whatever has arrived.
            for b in m {
                c.stream.write_all(std::slice::from_ref(b)).await?;
            }
            // The stream is still in sync: the next message is understood.
            let lo = control.frame().saturating_sub(2);
            c.request_full(false).await?;
            c.next_update().await?;
            let hi = control.frame();
            ensure!(c.find_frame(lo, hi).is_some(), "wrong picture");
            Ok(())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class3_set_encodings_65535_entries_split() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let m = Arc::new(set_encodings_65535());
    let (addr, control) = (srv.addr, srv.control.clone());
    let points = all_splits(m.len());
    note(&format!(
        "65535-entry SetEncodings: {} split points",
        points.len()
    ));
    attack_parallel(&w, points, 8, move |at| {
        let (control, m) = (control.clone(), m.clone());
        async move { expect_correct_update(addr, &control, &m, at).await }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

// ------------------------------------------------------------- class 4

/// Raw rectangles of `rects` cover every pixel of `region`, and those pixels
/// are frame n of the pattern for some n in lo..=hi.
/// CPU-heavy in debug builds: runs off the async workers.
fn check_region(c: &RawClient, rects: &[UpdateRect], region: Rect, lo: u64, hi: u64) -> Result<()> {
    tokio::task::block_in_place(|| check_region_now(c, rects, region, lo, hi))
}

fn check_region_now(
    c: &RawClient,
    rects: &[UpdateRect],
    region: Rect,
    lo: u64,
    hi: u64,
) -> Result<()> {
    let bounds = Rect::new(0, 0, c.width, c.height);
    for r in rects {
        ensure!(
            bounds.contains(&r.rect),
            "rectangle {:?} outside {bounds:?}",
            r.rect
        );
    }
    let region = region.intersect(&bounds);
    let w = c.width as usize;
    let mut covered = vec![false; w * c.height as usize];
    for r in rects.iter().filter(|r| r.encoding == enc::RAW) {
        for y in r.rect.y..r.rect.y + r.rect.h {
            for x in r.rect.x..r.rect.x + r.rect.w {
                covered[y as usize * w + x as usize] = true;
            }
        }
    }
    let pixels: Vec<usize> = (region.y..region.y + region.h)
        .flat_map(|y| (region.x..region.x + region.w).map(move |x| y as usize * w + x as usize))
        .collect();
    if let Some(&i) = pixels.iter().find(|&&i| !covered[i]) {
        bail!(
            "pixel ({}, {}) of requested {region:?} not sent",
            i % w,
            i / w
        );
    }
    let ok = (lo..=hi).any(|n| {
        let exp = expected_values(c.width, c.height, n, &c.pf);
        pixels.iter().all(|&i| c.fb[i] == exp[i])
    });
    ensure!(ok, "pixels of {region:?} are no frame in {lo}..={hi}");
    Ok(())
}

/// Do the Raw rectangles of an update cover all of `region` (clipped to the framebuffer)?
fn covers(rects: &[UpdateRect], region: Rect, w: u16, h: u16) -> bool {
    let region = region.intersect(&Rect::new(0, 0, w, h));
    (region.y..region.y + region.h).all(|y| {
        (region.x..region.x + region.w).all(|x| {
            rects
                .iter()
                .any(|r| r.encoding == enc::RAW && r.rect.contains(&Rect::new(x, y, 1, 1)))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class4_odd_update_requests_are_served_within_bounds() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let req = |x, y, w, h| ClientMessage::FramebufferUpdateRequest {
        incremental: false,
        rect: Rect::new(x, y, w, h),
    };
    // (requests sent together, the regions the reply must cover)
    let cases: Vec<(Vec<ClientMessage>, Vec<Rect>)> = vec![
        (vec![req(65535, 0, 1, 1)], vec![]),
        (vec![req(0, 65535, 1, 1)], vec![]),
        (vec![req(65535, 65535, 65535, 65535)], vec![]),
        (
            vec![req(0, 0, 65535, 65535)],
            vec![Rect::new(0, 0, 320, 240)],
        ),
        (
            vec![req(300, 200, 65535, 65535)],
            vec![Rect::new(300, 200, 20, 40)],
        ),
        (vec![req(0, 0, 0, 240)], vec![]),
        (vec![req(0, 0, 320, 0)], vec![]),
        (vec![req(10, 10, 0, 0)], vec![]),
        // Two requests merged by the server: the merge must not lose area.
        (
            vec![req(100, 0, 65535, 240), req(0, 0, 1, 1)],
            vec![Rect::new(100, 0, 220, 240), Rect::new(0, 0, 1, 1)],
        ),
        (
            vec![req(0, 100, 320, 65535), req(0, 0, 1, 1)],
            vec![Rect::new(0, 100, 320, 140), Rect::new(0, 0, 1, 1)],
        ),
    ];
    let mut all = Vec::new();
    for (msgs, regions) in cases {
        let m = encode(&msgs);
        for at in all_splits(m.len()) {
            all.push((m.clone(), msgs.len(), regions.clone(), at));
        }
    }
    let (addr, control) = (srv.addr, srv.control.clone());
    attack_parallel(&w, all, PARALLEL, move |(m, nreq, regions, at)| {
        let control = control.clone();
        async move {
            let mut c = RawClient::connect(addr, &Auth::None).await?;
            c.set_encodings(&[enc::RAW]).await?;
            let lo = control.frame().saturating_sub(2);
            send_split(&mut c.stream, &m, at).await?;
            // Requests split apart are answered one by one, requests that
            // arrive together may be merged: read at most one update per
            // request until every region was sent.
            let mut pending = regions.clone();
            for _ in 0..nreq {
                let rects = c.next_update().await?;
                let hi = control.frame();
                if pending.is_empty() {
                    ensure!(
                        rects.iter().all(|r| r.rect.is_empty()),
                        "pixels sent for an empty request: {rects:?}"
                    );
                }
                let mut still = Vec::new();
                for r in pending {
                    if covers(&rects, r, c.width, c.height) {
                        check_region(&c, &rects, r, lo, hi)?;
                    } else {
                        still.push(r);
                    }
                }
                pending = still;
                if pending.is_empty() && !regions.is_empty() {
                    break;
                }
            }
            ensure!(pending.is_empty(), "never sent: {pending:?}");
            // Still in sync: a normal request gets a full, correct picture.
            let lo = control.frame().saturating_sub(2);
            c.request_full(false).await?;
            c.next_update().await?;
            let hi = control.frame();
            ensure!(c.find_frame(lo, hi).is_some(), "wrong picture after");
            Ok(())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// Keep requesting incremental updates of the size the client believes in
/// until an update carries a new desktop size; return that update.
async fn until_resized(c: &mut RawClient) -> Result<Vec<UpdateRect>> {
    let old = (c.width, c.height);
    for _ in 0..1000 {
        c.request_full(true).await?;
        let rects = c.next_update().await?;
        if (c.width, c.height) != old {
            return Ok(rects);
        }
    }
    bail!("no desktop size change arrived")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class4_resize_and_requests_for_the_old_size() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let mut ext = srv.client().await?;
    ext.set_encodings(&[enc::RAW, enc::EXTENDED_DESKTOP_SIZE])
        .await?;
    let mut plain = srv.client().await?;
    plain.set_encodings(&[enc::RAW, enc::DESKTOP_SIZE]).await?;
    let mut none = srv.client().await?;
    none.set_encodings(&[enc::RAW]).await?;
    for c in [&mut ext, &mut plain, &mut none] {
        c.request_full(false).await?;
        c.next_update().await?;
    }
    // The viewer without DesktopSize keeps asking; it must stay connected
    // at its own size, every rectangle inside it (issue 10 item 7: it used
    // to be closed).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let none_stop = stop.clone();
    let none_size = (none.width, none.height);
    let none_task = tokio::spawn(async move {
        while !none_stop.load(Ordering::SeqCst) {
            none.request_full(true).await?;
            let rects = none.next_update().await?;
            ensure!(
                (none.width, none.height) == none_size,
                "the viewer without DesktopSize was told a new size"
            );
            for r in &rects {
                ensure!(
                    r.rect.x as u32 + r.rect.w as u32 <= none_size.0 as u32
                        && r.rect.y as u32 + r.rect.h as u32 <= none_size.1 as u32,
                    "a rectangle outside the viewer's framebuffer: {:?}",
                    r.rect
                );
            }
        }
        Ok::<_, anyhow::Error>(none.updates)
    });

    for (size, what) in [((400u16, 300u16), "grow"), ((200, 150), "shrink")] {
        w.wait_for_more(2).await?;
        srv.control.resize(size.0, size.1);
        for (c, pseudo) in [
            (&mut ext, enc::EXTENDED_DESKTOP_SIZE),
            (&mut plain, enc::DESKTOP_SIZE),
        ] {
            let old = Rect::new(0, 0, c.width, c.height);
            let lo = srv.control.frame().saturating_sub(2);
            let rects = until_resized(c).await.context(what)?;
            let hi = srv.control.frame();
            ensure!(
                (c.width, c.height) == size,
                "{what}: size {}x{}",
                c.width,
                c.height
            );
            ensure!(
                rects.iter().any(|r| r.encoding == pseudo),
                "{what}: no {pseudo} rectangle in {rects:?}"
            );
            // The size comes in an update without pixel data (rfbproto's
            // server semantics); the next update carries the whole new picture.
            ensure!(
                rects.iter().all(|r| r.encoding < 0),
                "{what}: pixels in the size update: {rects:?}"
            );
            let pixels = c.next_update().await?;
            let hi = hi.max(srv.control.frame());
            check_region(c, &pixels, Rect::new(0, 0, size.0, size.1), lo, hi)?;
            // A request sized for the old framebuffer, split at every byte.
            let m = encode(&[ClientMessage::FramebufferUpdateRequest {
                incremental: false,
                rect: old,
            }]);
            for at in all_splits(m.len()) {
                let lo = srv.control.frame().saturating_sub(2);
                send_split(&mut c.stream, &m, at).await?;
                // An ExtendedDesktopSize layout change goes in an update of
                // its own, followed by the pixels for the same request, so
                // this client (one read per request) can be one update
                // behind: an incremental answer to an earlier request may
                // come first. The answer to this request must follow it.
                let mut tries = 0;
                loop {
                    let rects = c.next_update().await?;
                    let hi = srv.control.frame();
                    tries += 1;
                    match check_region(c, &rects, old, lo, hi) {
                        Ok(()) => break,
                        Err(e) if tries >= 3 => {
                            return Err(e.context(format!(
                                "{what}, encoding {pseudo}, split at {at}: got {rects:?}"
                            )))
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let n = tokio::time::timeout(WAIT, none_task)
        .await
        .context("the viewer without DesktopSize stopped getting updates")???;
    note(&format!(
        "viewer without DesktopSize got {n} updates at its own size through both resizes"
    ));
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// SetDesktopSize: more screens than the limit closes the connection before
/// the screen list is read; a valid request is answered with
/// ExtendedDesktopSize "prohibited" and the desktop keeps its size. Both
/// split at every byte boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class4_set_desktop_size_is_bounded_and_prohibited() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let too_many = encode(&[ClientMessage::SetDesktopSize {
        width: 200,
        height: 100,
        screens: ticketvnc::rfb::limits::MAX_SCREENS as u8 + 1,
    }]);
    let valid = encode(&[ClientMessage::SetDesktopSize {
        width: 200,
        height: 100,
        screens: 1,
    }]);
    let mut cases = Vec::new();
    for at in all_splits(too_many.len()) {
        cases.push((false, too_many.clone(), at));
    }
    for at in all_splits(valid.len()) {
        cases.push((true, valid.clone(), at));
    }
    let (addr, auth) = (srv.addr, srv.auth());
    attack_parallel(&w, cases, PARALLEL, move |(ok, m, at)| {
        let auth = auth.clone();
        async move {
            if !ok {
                let c = offend(addr, auth, &m, at).await?;
                return expect_silent_close(c, "screen count").await;
            }
            let mut c = RawClient::connect(addr, &auth).await?;
            c.set_encodings(&[enc::RAW, enc::EXTENDED_DESKTOP_SIZE])
                .await?;
            c.request_full(false).await?;
            // The layout comes first, then the picture.
            while !c
                .next_update()
                .await?
                .iter()
                .any(|r| r.encoding == enc::RAW)
            {}
            let size = (c.width, c.height);
            send_split(&mut c.stream, &m, at).await?;
            let rects = c.next_update().await?;
            let reply = rects
                .iter()
                .find(|r| r.encoding == enc::EXTENDED_DESKTOP_SIZE)
                .with_context(|| format!("no ExtendedDesktopSize reply in {rects:?}"))?;
            // x = reason (1: this client asked), y = status (1: prohibited).
            ensure!(
                (reply.rect.x, reply.rect.y) == (1, 1),
                "reply {:?} is not 'prohibited' for this client",
                reply.rect
            );
            ensure!(
                (c.width, c.height) == size && (reply.rect.w, reply.rect.h) == size,
                "the desktop size changed to {:?}",
                reply.rect
            );
            Ok(())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

// ------------------------------------------------------------- class 5

fn bad_pixel_formats() -> Vec<(&'static str, PixelFormat)> {
    let n = PixelFormat::NATIVE;
    let rgb565 = PixelFormat::RGB565;
    vec![
        (
            "bpp 0",
            PixelFormat {
                bits_per_pixel: 0,
                ..n
            },
        ),
        (
            "bpp 24",
            PixelFormat {
                bits_per_pixel: 24,
                ..n
            },
        ),
        (
            "bpp 33",
            PixelFormat {
                bits_per_pixel: 33,
                ..n
            },
        ),
        ("depth 0", PixelFormat { depth: 0, ..n }),
        (
            "depth > bpp",
            PixelFormat {
                depth: 24,
                ..rgb565
            },
        ),
        ("depth 33 at 32", PixelFormat { depth: 33, ..n }),
        ("max 200", PixelFormat { red_max: 200, ..n }),
        ("max 0", PixelFormat { green_max: 0, ..n }),
        (
            "max 65534",
            PixelFormat {
                blue_max: 65534,
                ..n
            },
        ),
        (
            "shift beyond",
            PixelFormat {
                red_shift: 12,
                ..rgb565
            },
        ),
        (
            "shift 255",
            PixelFormat {
                blue_shift: 255,
                ..n
            },
        ),
        (
            "max 65535 at 32",
            PixelFormat {
                red_max: 65535,
                ..n
            },
        ),
        (
            "overlap",
            PixelFormat {
                green_shift: 12,
                ..n
            },
        ),
        (
            "colour map 16 bpp",
            PixelFormat {
                true_colour: false,
                ..rgb565
            },
        ),
        (
            "colour map 32 bpp",
            PixelFormat {
                true_colour: false,
                ..n
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class5_invalid_pixel_formats_close_the_connection() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let mut cases = Vec::new();
    for (name, pf) in bad_pixel_formats() {
        assert!(pf.validate().is_err(), "{name} is not invalid");
        let m = encode(&[ClientMessage::SetPixelFormat(pf)]);
        for at in all_splits(m.len()) {
            cases.push((name, m.clone(), at));
        }
    }
    let (addr, auth) = (srv.addr, srv.auth());
    attack_parallel(&w, cases, PARALLEL, move |(_name, m, at)| {
        let auth = auth.clone();
        async move {
            let c = offend(addr, auth, &m, at).await?;
            expect_silent_close(c, "invalid pixel format").await
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class5_colour_map_at_8_bpp_is_served_with_a_palette() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let pf = PixelFormat {
        true_colour: false,
        ..PixelFormat::BGR233
    };
    let m = encode(&[ClientMessage::SetPixelFormat(pf)]);
    let (addr, control) = (srv.addr, srv.control.clone());
    attack_parallel(&w, all_splits(m.len()), PARALLEL, move |at| {
        let (m, control) = (m.clone(), control.clone());
        async move {
            let mut c = RawClient::connect(addr, &Auth::None).await?;
            c.set_encodings(&[enc::RAW]).await?;
            send_split(&mut c.stream, &m, at).await?;
            c.pf = pf;
            let lo = control.frame().saturating_sub(2);
            c.request_full(false).await?;
            // The palette comes before the first update that uses it.
            match c.read_message().await? {
                Some(ServerMessage::ColourMap { first: 0, colours }) if colours.len() == 256 => {}
                other => bail!("expected SetColourMapEntries of 256 colours, got {other:?}"),
            }
            let rects = c.next_update().await?;
            let hi = control.frame();
            ensure!(rects.iter().all(|r| r.encoding == enc::RAW));
            let Some(n) = c.find_frame(lo, hi) else {
                bail!("8-bit indices are no frame in {lo}..={hi}");
            };
            // Independently of the server's mapping: every index names a
            // palette colour within one quantisation step of the real pixel.
            let frame = ticketvnc::capture::test_pattern::render(c.width, c.height, n);
            for (i, (&idx, &px)) in c.fb.iter().zip(frame.pixels()).enumerate() {
                ensure!(idx < 256, "index {idx}");
                let pal = c.colour_map[idx as usize];
                let real = [(px >> 16) & 0xff, (px >> 8) & 0xff, px & 0xff];
                for ch in 0..3 {
                    let got = (pal[ch] >> 8) as i32;
                    let step = if ch == 2 { 64 } else { 32 };
                    ensure!(
                        (got - real[ch] as i32).abs() < step,
                        "pixel {i}: index {idx} is {pal:?}, real colour {px:06x}"
                    );
                }
            }
            // Later updates keep using indices.
            c.request_full(true).await?;
            c.next_update().await?;
            ensure!(c.fb.iter().all(|&v| v < 256));
            Ok(())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

// ------------------------------------------------------------- class 6

fn security_failure(reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1];
    v.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    v
}

async fn auth_server() -> Result<TestServer> {
    TestServer::start(ServerOpts {
        password: Some(PASSWORD.to_vec()),
        handshake_timeout: Duration::from_secs(4),
        ..ServerOpts::default()
    })
    .await
}

/// Send `script` split at `at` and return what came back until the close.
async fn run_script(
    addr: SocketAddr,
    script: &[u8],
    at: usize,
) -> Result<(SocketAddr, Vec<u8>, End)> {
    let mut s = connect(addr).await?;
    let peer = s.local_addr()?;
    send_split(&mut s, script, at).await?;
    let (got, end) = read_to_close(&mut s, WAIT).await;
    Ok((peer, got, end))
}

/// The server's answer must be `prefix`, then `challenge_len` bytes of
/// challenge (if any), then `suffix`, then an orderly close; nothing else.
fn check_answer(
    got: &[u8],
    end: End,
    prefix: &[u8],
    challenge_len: usize,
    suffix: &[u8],
) -> Result<()> {
    ensure!(
        end == End::Eof,
        "expected an orderly close, got {end:?} after {got:?}"
    );
    ensure!(
        got.len() == prefix.len() + challenge_len + suffix.len()
            && got.starts_with(prefix)
            && got.ends_with(suffix),
        "server answered {got:?}; expected {prefix:?} + {challenge_len} bytes + {suffix:?}"
    );
    Ok(())
}

const V38: &[u8] = b"RFB 003.008\n";

/// (name, client bytes, expected prefix, challenge length, expected suffix)
type Script = (String, Vec<u8>, Vec<u8>, usize, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class6_auth_bypass_attempts_never_reach_server_init() -> Result<()> {
    let srv = auth_server().await?;
    let w = srv.watcher().await?;
    let offered: Vec<u8> = [V38, &[1, 2]].concat();
    let not_offered = security_failure("security type not offered");
    let auth_failed = security_failure("authentication failed");
    let fbur = encode(&[ClientMessage::FramebufferUpdateRequest {
        incremental: false,
        rect: Rect::new(0, 0, 320, 240),
    }]);
    let pointer = encode(&[ClientMessage::PointerEvent {
        buttons: 0,
        x: 1,
        y: 1,
    }]);
    // (name, client bytes, expected prefix, challenge length, expected suffix)
    let mut scripts: Vec<Script> = Vec::new();
    for t in [0u8, 1, 3, 16, 19, 30, 255] {
        scripts.push((
            format!("3.8 picks type {t}"),
            [V38, &[t]].concat(),
            offered.clone(),
            0,
            not_offered.clone(),
        ));
        // 3.7 has no reason string: the server just closes.
        scripts.push((
            format!("3.7 picks type {t}"),
            [b"RFB 003.007\n".as_slice(), &[t]].concat(),
            offered.clone(),
            0,
            vec![],
        ));
    }
    // Normal messages where the 16-byte response belongs: they are judged
    // as a response (and fail), never acted on.
    scripts.push((
        "messages instead of the response".into(),
        [V38, &[2], &fbur, &pointer].concat(),
        offered.clone(),
        16,
        auth_failed.clone(),
    ));
    scripts.push((
        "ClientInit and messages instead of the response".into(),
        [V38, &[2], &[1], &fbur, &pointer[..5]].concat(),
        offered.clone(),
        16,
        auth_failed.clone(),
    ));
    // 3.3: the server picks VNC auth; the client skips it.
    scripts.push((
        "3.3 ClientInit and messages instead of the response".into(),
        [b"RFB 003.003\n".as_slice(), &[1], &fbur, &pointer[..5]].concat(),
        [V38, &[0, 0, 0, 2]].concat(),
        16,
        vec![0, 0, 0, 1],
    ));
    // Messages before the version: not a version string.
    scripts.push((
        "ClientInit before the version".into(),
        vec![1],
        V38.to_vec(),
        0,
        vec![],
    ));
    scripts.push((
        "request before the version".into(),
        fbur.clone(),
        V38.to_vec(),
        0,
        vec![],
    ));

    let mut cases = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        for at in all_splits(s.1.len()) {
            cases.push((i, at));
        }
    }
    let scripts = Arc::new(scripts);
    let addr = srv.addr;
    attack_parallel(&w, cases, PARALLEL, move |(i, at)| {
        let scripts = scripts.clone();
        async move {
            let (name, script, prefix, clen, suffix) = &scripts[i];
            let (peer, got, end) = run_script(addr, script, at).await?;
            explain(peer, check_answer(&got, end, prefix, *clen, suffix)).context(name.clone())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// ClientInit sent where the response belongs, and nothing more: the server
/// keeps waiting for the response and closes at the handshake deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class6_client_init_before_auth_times_out() -> Result<()> {
    let srv = auth_server().await?;
    let w = srv.watcher().await?;
    let fbur = encode(&[ClientMessage::FramebufferUpdateRequest {
        incremental: false,
        rect: Rect::new(0, 0, 320, 240),
    }]);
    let scripts: Vec<Vec<u8>> = vec![
        [V38, &[2], &[1]].concat(),
        [V38, &[2], &[1], &fbur[..]].concat(),
    ];
    let mut cases = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        for at in all_splits(s.len()) {
            cases.push((i, at));
        }
    }
    let scripts = Arc::new(scripts);
    let addr = srv.addr;
    attack_parallel(&w, cases, 64, move |(i, at)| {
        let scripts = scripts.clone();
        async move {
            let mut s = connect(addr).await?;
            let peer = s.local_addr()?;
            send_split(&mut s, &scripts[i], at).await?;
            let (got, end) = read_to_close(&mut s, WAIT).await;
            check_answer(&got, end, &[V38, &[1, 2]].concat(), 16, &[])?;
            let line = session_end_log(peer).await?;
            ensure!(line.contains("handshake timeout"), "log: {line}");
            Ok(())
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// Answering the challenge twice: a wrong answer followed by the right one
/// (pipelined, split at every byte), and the right one sent again after the
/// failure was read. Neither gets anything but the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class6_answering_the_challenge_twice() -> Result<()> {
    let srv = auth_server().await?;
    let w = srv.watcher().await?;
    let resets = Arc::new(AtomicUsize::new(0));
    let expected = security_failure("authentication failed");
    let mut cases: Vec<(bool, usize)> = (0..=32).map(|at| (true, at)).collect();
    cases.push((false, 0));
    let addr = srv.addr;
    let r2 = resets.clone();
    attack_parallel(&w, cases, PARALLEL, move |(pipelined, at)| {
        let (expected, resets) = (expected.clone(), r2.clone());
        async move {
            let mut s = connect(addr).await?;
            ensure!(read_n(&mut s, 12).await? == V38);
            s.write_all(V38).await?;
            ensure!(read_n(&mut s, 2).await? == [1, 2]);
            s.write_all(&[2]).await?;
            let mut challenge = [0u8; 16];
            challenge.copy_from_slice(&read_n(&mut s, 16).await?);
            let right = vnc_auth_response(&VncPassword::new(PASSWORD), &challenge);
            let wrong = vnc_auth_response(&VncPassword::new(b"guess"), &challenge);
            if pipelined {
                send_split(&mut s, &[wrong, right].concat(), at).await?;
            } else {
                s.write_all(&wrong).await?;
                ensure!(read_n(&mut s, expected.len()).await? == expected);
                // The server has closed; this write may or may not succeed.
                let _ = s.write_all(&right).await;
            }
            let (got, end) = read_to_close(&mut s, WAIT).await;
            let got = if pipelined {
                got
            } else {
                [expected.clone(), got].concat()
            };
            ensure!(got == expected, "got {got:?} after two answers");
            match end {
                End::Eof => {}
                // Bytes that arrive after the server closed are answered
                // with a reset by TCP itself; the failure had arrived already.
                End::Reset if !pipelined || at >= 16 => {
                    resets.fetch_add(1, Ordering::Relaxed);
                }
                other => bail!("connection ended with {other:?}"),
            }
            Ok(())
        }
    })
    .await?;
    note(&format!(
        "answering twice: {} of 34 connections ended with a reset after the failure",
        resets.load(Ordering::Relaxed)
    ));
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// A None-only server refuses a client that picks VNC auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class6_type_not_offered_on_a_none_server() -> Result<()> {
    let srv = TestServer::start(ServerOpts::default()).await?;
    let w = srv.watcher().await?;
    let script = [V38, &[2]].concat();
    let addr = srv.addr;
    attack_parallel(&w, all_splits(script.len()), PARALLEL, move |at| {
        let script = script.clone();
        async move {
            let (peer, got, end) = run_script(addr, &script, at).await?;
            explain(
                peer,
                check_answer(
                    &got,
                    end,
                    &[V38, &[1, 1]].concat(),
                    0,
                    &security_failure("security type not offered"),
                ),
            )
        }
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}

// ------------------------------------------------------------- class 7

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_a_thousand_silent_sockets() -> Result<()> {
    // Two descriptors per socket (both ends live in this process).
    let limit = rlimit::increase_nofile_limit(4096)?;
    ensure!(limit >= 2200, "RLIMIT_NOFILE is only {limit}");
    let srv = TestServer::start(ServerOpts {
        handshake_timeout: Duration::from_secs(2),
        max_preauth: None, // the default pre-auth limit
        ..ServerOpts::default()
    })
    .await?;
    let w = srv.watcher().await?;
    let rss_before = rss_kib();
    let mut socks = Vec::new();
    for _ in 0..1000 {
        socks.push(connect(srv.addr).await?);
    }
    // While all of them sit there, the watcher is served.
    w.wait_for_more(3).await?;
    // A technician from another network logs in while they sit there
    // (TigerVNC and x11vnc manage this too).
    {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind("127.222.0.1:0".parse()?)?;
        let mut s = sock.connect(srv.addr).await?;
        handshake(&mut s, &srv.auth(), true).await?;
        let mut c = RawClient::after_server_init(s).await?;
        c.request_full(false).await?;
        c.next_update().await?;
    }
    // Server and sockets share this process: the growth bounds both.
    let grown = rss_kib().saturating_sub(rss_before);
    note(&format!("1000 silent sockets: RSS grew by {grown} KiB"));
    ensure!(
        grown < 32 * 1024,
        "1000 silent sockets grew memory by {grown} KiB"
    );
    let mut set = tokio::task::JoinSet::new();
    for mut s in socks {
        set.spawn(async move { read_to_close(&mut s, WAIT).await });
    }
    let (mut refused, mut timed_out) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (got, end) = r?;
        ensure!(end == End::Eof, "a silent socket ended with {end:?}");
        match got.as_slice() {
            [] => refused += 1,
            V38 => timed_out += 1,
            other => bail!("a silent socket got {other:?}"),
        }
    }
    note(&format!(
        "1000 silent sockets: {refused} closed at accept, {timed_out} at the handshake deadline"
    ));
    ensure!(timed_out > 0 && refused > 0);
    check_survived(&srv, w).await?;
    srv.stop().await
}

/// Resident memory of this process (server and clients), KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Silent sockets from one network get at most MAX_PREAUTH_PER_NETWORK
/// handshake slots; beyond that the network's own oldest sockets are
/// closed (not the newest turned away), and a viewer from another network
/// still gets in while they sit there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_one_network_cannot_take_every_handshake_slot() -> Result<()> {
    use ticketvnc::rfb::limits::MAX_PREAUTH_PER_NETWORK;
    let srv = TestServer::start(ServerOpts {
        handshake_timeout: Duration::from_secs(30),
        max_preauth: None, // the default limits
        ..ServerOpts::default()
    })
    .await?;
    let w = srv.watcher().await?;
    let attacker: SocketAddr = "127.77.77.77:0".parse()?;
    let total = MAX_PREAUTH_PER_NETWORK + 36;
    let mut socks = Vec::new();
    for _ in 0..total {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(attacker)?;
        socks.push(sock.connect(srv.addr).await?);
        // In order: age decides who is closed.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, mut s) in socks.into_iter().enumerate() {
        set.spawn(async move {
            let r = read_to_close(&mut s, Duration::from_secs(2)).await;
            (i, r, s)
        });
    }
    let (mut closed, mut waiting) = (Vec::new(), 0);
    let mut still_open = Vec::new(); // kept open until the end of the test
    while let Some(r) = set.join_next().await {
        match r? {
            (i, (got, End::Eof), _) if got == V38 => closed.push(i),
            (_, (got, End::Open), s) if got == V38 => {
                waiting += 1;
                still_open.push(s);
            }
            (_, other, _) => bail!("a silent socket from one network ended with {other:?}"),
        }
    }
    closed.sort_unstable();
    ensure!(
        waiting == MAX_PREAUTH_PER_NETWORK && closed == (0..36).collect::<Vec<_>>(),
        "{waiting} waiting in the handshake; closed: {closed:?}"
    );
    // Another network is not locked out while they wait.
    let mut c = srv.client().await?;
    c.request_full(false).await?;
    c.next_update().await?;
    check_survived(&srv, w).await?;
    drop(still_open);
    srv.stop().await
}

/// One byte of a valid handshake at a time, each well inside the timeout:
/// the deadline counts from accept, it is not extended per byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_trickled_handshake_is_cut_at_the_deadline() -> Result<()> {
    let srv = TestServer::start(ServerOpts {
        handshake_timeout: Duration::from_secs(2),
        ..ServerOpts::default()
    })
    .await?;
    let w = srv.watcher().await?;
    let scripts: Vec<(&str, Vec<u8>, Duration)> = vec![
        // The version alone would take 8.8 s.
        ("version", V38.to_vec(), Duration::from_millis(800)),
        // A complete, valid handshake that takes 3.5 s.
        (
            "whole handshake",
            [V38, &[1], &[1]].concat(),
            Duration::from_millis(250),
        ),
    ];
    let addr = srv.addr;
    attack_parallel(&w, scripts, 4, move |(name, script, gap)| async move {
        let s = connect(addr).await?;
        let peer = s.local_addr()?;
        let (mut rd, mut wr) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let r = tokio::time::timeout(
                WAIT,
                tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut got),
            )
            .await;
            (got, r)
        });
        let mut sent = 0;
        for b in &script {
            if reader.is_finished() || wr.write_all(std::slice::from_ref(b)).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(gap).await;
        }
        let (got, r) = reader.await?;
        let n = r.context("the server never closed")?;
        ensure!(n.is_ok(), "{name}: read error {n:?}");
        ensure!(
            sent < script.len(),
            "{name}: the server let all {} bytes through",
            script.len()
        );
        // Nothing past the security phase: never a ServerInit.
        ensure!(
            got == V38
                || got == [V38, &[1, 1], &[0, 0, 0, 0]].concat()
                || got == [V38, &[1, 1]].concat(),
            "{name}: server sent {got:?}"
        );
        let line = session_end_log(peer).await?;
        ensure!(line.contains("handshake timeout"), "{name}: log {line}");
        note(&format!(
            "{name}: closed after {sent} of {} bytes",
            script.len()
        ));
        Ok(())
    })
    .await?;
    check_survived(&srv, w).await?;
    srv.stop().await
}
