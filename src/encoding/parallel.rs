//! Encoding inside one encoder call on several threads, and the
//! connection's zlib streams compressed in parallel the way pigz does.
//!
//! A zlib stream that a viewer keeps for the whole connection is a two-byte
//! zlib header followed by raw deflate data that never ends (no final block,
//! no Adler-32 trailer: the viewer inflates each rectangle's bytes with a
//! sync flush and keeps its inflater). Deflate data ended by a sync flush
//! stops on a byte boundary, so any number of such pieces, each compressed
//! by its own raw deflater, concatenate into a valid continuation of the
//! stream, as long as no piece refers back to bytes the viewer does not
//! have at that point. [`Deflater::deflate_pieces`] therefore cuts the input
//! into one group per thread: group 0 continues the connection's own
//! deflater (whose window holds what the viewer has); every other group
//! starts a fresh raw deflater primed with the 32 KiB of input that precede
//! it (which the viewer will have inflated just before), so back-references
//! stay correct and compression hardly changes. Afterwards the connection's
//! deflater is primed with the last 32 KiB of everything sent, so its next
//! call refers only to bytes the viewer really holds.
//!
//! The other threads of a call are rayon's pool, which lives as long as the
//! process (`rayon::in_place_scope`: the calling thread does its own share
//! and waits for the rest). Spawning a thread per call cost the photo
//! cell's Tight JPEG a quarter of its frame rate on two busy cores: 17
//! bands a frame, each waiting at the join for a thread the scheduler had
//! not yet run (docs/benchmarks.md, "Encoder threads that stay").

use flate2::{Compress, Compression, FlushCompress};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deflate's window: the farthest a back-reference reaches.
const WINDOW: usize = 32 * 1024;
/// Inputs smaller than this are compressed on the calling thread: handing
/// work to another thread costs microseconds to tens of them, compressing
/// 256 KiB about a millisecond.
pub const PAR_MIN_BYTES: usize = 256 * 1024;
/// Rectangles smaller than this (in pixels) are encoded on the calling
/// thread. A full-screen change reaches the encoders as one rectangle per
/// 64-pixel tile row (1920x64 = 120 Ki pixels at 1080p), so this must be
/// below that for parallel encoding to help a changing screen.
pub const PAR_MIN_PIXELS: usize = 64 * 1024;
/// At most this many threads per encoder call.
pub const MAX_THREADS: usize = 8;

static THREADS: AtomicUsize = AtomicUsize::new(0);
static MIN_PIXELS: AtomicUsize = AtomicUsize::new(PAR_MIN_PIXELS);
static MIN_BYTES: AtomicUsize = AtomicUsize::new(PAR_MIN_BYTES);

/// Lower (or restore) the sizes above which work is split between threads,
/// so that tests can run small pictures through the parallel paths: at
/// least `pixels` per rectangle and `bytes` of zlib input, each thread
/// getting at least half of that. Not for production use.
pub fn set_min_sizes(pixels: usize, bytes: usize) {
    MIN_PIXELS.store(pixels.max(2), Ordering::Relaxed);
    MIN_BYTES.store(bytes.max(2), Ordering::Relaxed);
}

fn min_bytes() -> usize {
    MIN_BYTES.load(Ordering::Relaxed)
}

/// Threads an encoder call may use: [`set_threads`] if called, else the
/// environment variable `TICKETVNC_ENCODER_THREADS`, else the number of
/// CPUs (at most [`MAX_THREADS`]).
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::env::var("TICKETVNC_ENCODER_THREADS")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .min(MAX_THREADS);
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Fix the number of threads per encoder call (1 = no parallel encoding;
/// 0 = back to the default). For benchmarks and tests.
pub fn set_threads(n: usize) {
    THREADS.store(n.min(MAX_THREADS), Ordering::Relaxed);
}

/// Threads for a rectangle of `pixels`: 1 below [`PAR_MIN_PIXELS`] (or
/// what [`set_min_sizes`] set).
pub(crate) fn threads_for_pixels(pixels: usize) -> usize {
    let min = MIN_PIXELS.load(Ordering::Relaxed);
    if pixels < min {
        1
    } else {
        threads().min(pixels / (min / 2)).max(1)
    }
}

/// Contiguous ranges of `0..n` for `parts` workers, as even as possible.
pub(crate) fn ranges(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|k| n * k / parts..n * (k + 1) / parts)
        .collect()
}

/// A zlib stream that lives as long as the connection. Every chunk is ended
/// with a sync flush so the client can decode it without later data.
pub(crate) struct Deflater {
    /// Raw deflate; the zlib header is written by hand before the first byte.
    /// Made at first use: a deflater's state is some 380 KB (zlib-rs), and a
    /// viewer's encoder holds streams it may never use (Tight's four).
    c: Option<Compress>,
    level: u32,
    started: bool,
}

/// Raw deflaters for groups 1.. of parallel calls, shared by every stream
/// of every connection (each is reset and primed before use, so none
/// carries anything from one call to the next), with their levels: a
/// viewer's memory then holds its own stream only, and the pool holds as
/// many as calls have run at once.
static POOL: std::sync::Mutex<Vec<(u32, Compress)>> = std::sync::Mutex::new(Vec::new());
/// At most this many deflaters wait in the pool.
const POOL_MAX: usize = 2 * MAX_THREADS;

/// `n` raw deflaters at `level`, from the pool where it has them.
fn take_deflaters(level: u32, n: usize) -> Vec<Compress> {
    let mut out = Vec::with_capacity(n);
    {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        while out.len() < n {
            let Some(i) = pool.iter().position(|(l, _)| *l == level) else {
                break;
            };
            out.push(pool.swap_remove(i).1);
        }
    }
    while out.len() < n {
        out.push(raw_deflater(level));
    }
    out
}

/// Buffers an encoder call borrows and gives back: they grow to the
/// largest rectangles seen (a band's worth, hundreds of KiB), so all
/// viewers' encoders share them instead of each keeping its own. At most
/// [`scratch_max`] are lent to calls that wait for one ([`Self::take`]
/// with `wait`: calls on more than [`WAIT_ABOVE_PIXELS`], which run on the
/// blocking pool, never on the async runtime's workers), so ten viewers'
/// big updates do not hold ten sets at once (on 2 cores they would not run faster either);
/// as many wait here between calls, the rest are freed when given back.
pub(crate) struct ScratchPool<T> {
    state: std::sync::Mutex<Lent<T>>,
    given: std::sync::Condvar,
}

struct Lent<T> {
    free: Vec<T>,
    lent: usize,
}

/// Encoder calls on more pixels than this wait for scratch: the session
/// encodes updates of at most this many pixels on its own task (an async
/// runtime worker, which must not wait), bigger ones on the blocking pool.
pub(crate) const WAIT_ABOVE_PIXELS: usize = 65536;

/// Whether a call on `pixels` pixels may wait for its scratch.
pub(crate) fn may_wait(pixels: usize) -> bool {
    pixels > WAIT_ABOVE_PIXELS
}

/// Scratch sets lent at once to calls that wait: two per encoder thread.
fn scratch_max() -> usize {
    2 * threads()
}

impl<T: Default> ScratchPool<T> {
    pub(crate) const fn new() -> ScratchPool<T> {
        ScratchPool {
            state: std::sync::Mutex::new(Lent {
                free: Vec::new(),
                lent: 0,
            }),
            given: std::sync::Condvar::new(),
        }
    }

    /// A set of buffers, given back when the lease is dropped (a call that
    /// panics gives it back too); with `wait`, once fewer than
    /// [`scratch_max`] are lent (a call holds one only while it runs, so
    /// the wait is at most one call's time).
    pub(crate) fn take(&self, wait: bool) -> Lease<'_, T> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if wait {
            while s.lent >= scratch_max() {
                s = self.given.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        s.lent += 1;
        let t = s.free.pop().unwrap_or_default();
        Lease {
            pool: self,
            t: Some(t),
        }
    }

    fn give(&self, t: T) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.lent = s.lent.saturating_sub(1);
        if s.free.len() < scratch_max() {
            s.free.push(t);
        }
        drop(s);
        self.given.notify_one();
    }
}

/// Scratch lent by a [`ScratchPool`].
pub(crate) struct Lease<'a, T: Default> {
    pool: &'a ScratchPool<T>,
    t: Option<T>,
}

impl<T: Default> std::ops::Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.t.as_ref().expect("held until dropped")
    }
}

impl<T: Default> std::ops::DerefMut for Lease<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.t.as_mut().expect("held until dropped")
    }
}

impl<T: Default> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            self.pool.give(t);
        }
    }
}

/// Give deflaters back to the pool (those beyond its bound are freed).
fn give_back(level: u32, used: Vec<Compress>) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    for c in used {
        if pool.len() >= POOL_MAX {
            break;
        }
        pool.push((level, c));
    }
}

/// The zlib header (CMF 0x78: deflate with a 32 KiB window; FLG with the
/// level hint and the check bits).
fn zlib_header(level: u32) -> [u8; 2] {
    match level {
        0 | 1 => [0x78, 0x01],
        2..=5 => [0x78, 0x5e],
        6 => [0x78, 0x9c],
        _ => [0x78, 0xda],
    }
}

fn raw_deflater(level: u32) -> Compress {
    Compress::new(Compression::new(level), false)
}

/// Compress all of `input` with `c` and a sync flush at the end, appending to `out`.
fn compress_sync(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        let want = (input.len() - consumed) / 2 + 1024;
        out.reserve(want);
        let res = c.compress_vec(&input[consumed..], out, FlushCompress::Sync);
        debug_assert!(res.is_ok(), "deflate failed: {res:?}");
        if res.is_err() {
            // Cannot happen on a healthy stream with non-empty output space.
            return;
        }
        let consumed = (c.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

/// The last `WINDOW` bytes (or fewer, if there are fewer) of the
/// concatenation of `pieces`.
fn tail(pieces: &[&[u8]]) -> Vec<u8> {
    let mut parts = Vec::new();
    let mut need = WINDOW;
    for p in pieces.iter().rev() {
        if need == 0 {
            break;
        }
        let take = need.min(p.len());
        parts.push(&p[p.len() - take..]);
        need -= take;
    }
    let mut out = Vec::with_capacity(WINDOW - need);
    for p in parts.iter().rev() {
        out.extend_from_slice(p);
    }
    out
}

impl Deflater {
    pub(crate) fn new(level: u32) -> Deflater {
        let level = level.min(9);
        Deflater {
            c: None,
            level,
            started: false,
        }
    }

    /// The raw deflater, made on first use.
    fn c(&mut self) -> &mut Compress {
        let level = self.level;
        self.c.get_or_insert_with(|| raw_deflater(level))
    }

    /// A deflater from the shared pool whose output depends on nothing
    /// sent before (an empty window). With `header`, it starts a new zlib
    /// stream (Tight's reset streams); without, its bytes continue any
    /// stream that has started, provided that stream's own deflater then
    /// forgets its history ([`Self::forget_history`]). Give it back with
    /// [`Self::recycle`].
    pub(crate) fn detached(level: u32, header: bool) -> Deflater {
        let level = level.min(9);
        let mut c = take_deflaters(level, 1)
            .pop()
            .unwrap_or_else(|| raw_deflater(level));
        c.reset();
        Deflater {
            c: Some(c),
            level,
            started: !header,
        }
    }

    /// Return a [`Self::detached`] deflater to the shared pool.
    pub(crate) fn recycle(self) {
        give_back(self.level, self.c.into_iter().collect());
    }

    /// Whether the stream's zlib header has been sent.
    pub(crate) fn is_started(&self) -> bool {
        self.started
    }

    /// Bytes from another deflater went into the viewer's stream after
    /// this one's: its window no longer matches the viewer's, so it starts
    /// over with an empty one (no back-reference past this point).
    pub(crate) fn forget_history(&mut self) {
        // One never made has no history.
        if let Some(c) = &mut self.c {
            c.reset();
        }
    }

    /// Start a new zlib stream (header and all) at the next call: the
    /// viewer was told to reset its inflater (Tight's reset bits).
    pub(crate) fn restart(&mut self) {
        if let Some(c) = &mut self.c {
            c.reset();
        }
        self.started = false;
    }

    fn start(&mut self, level: u32, out: &mut Vec<u8>) {
        let level = level.min(9);
        if !self.started {
            out.extend_from_slice(&zlib_header(level));
            self.started = true;
        }
        // The previous chunk ended with a sync flush, so nothing is pending
        // and the level can change; on failure the old level stays (still a
        // valid stream).
        if level != self.level {
            match &mut self.c {
                Some(c) => {
                    if c.set_level(Compression::new(level)).is_ok() {
                        self.level = level;
                    }
                }
                // Made at this level when first used.
                None => self.level = level,
            }
        }
    }

    /// Compress `input` at `level` and append everything up to and including
    /// a sync flush to `out`.
    pub(crate) fn deflate_sync(&mut self, level: u32, input: &[u8], out: &mut Vec<u8>) {
        self.start(level, out);
        compress_sync(self.c(), input, out);
    }

    /// [`Self::deflate_sync`] on up to `threads` threads (one when `input`
    /// is smaller than [`PAR_MIN_BYTES`]).
    pub(crate) fn deflate_sync_par(
        &mut self,
        level: u32,
        input: &[u8],
        out: &mut Vec<u8>,
        threads: usize,
    ) {
        let parts = threads.min(input.len() / (min_bytes() / 2)).max(1);
        if parts <= 1 {
            return self.deflate_sync(level, input, out);
        }
        let pieces: Vec<&[u8]> = ranges(input.len(), parts)
            .into_iter()
            .map(|r| &input[r])
            .collect();
        let mut outs = vec![Vec::new(); parts];
        self.deflate_pieces(level, &pieces, &mut outs, threads);
        for o in &outs {
            out.extend_from_slice(o);
        }
    }

    /// Compress each of `pieces` in turn into `outs[i]` (appended), each
    /// ended by a sync flush, so that `outs` in order continue this stream;
    /// on up to `threads` threads when there is enough input.
    pub(crate) fn deflate_pieces(
        &mut self,
        level: u32,
        pieces: &[&[u8]],
        outs: &mut [Vec<u8>],
        threads: usize,
    ) {
        debug_assert_eq!(pieces.len(), outs.len());
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let groups = threads
            .min(pieces.len())
            .min(total / (min_bytes() / 2))
            .max(1);
        let level = level.min(9);
        let Some(first_out) = outs.first_mut() else {
            return;
        };
        self.start(level, first_out);
        if groups <= 1 {
            let c = self.c();
            for (p, o) in pieces.iter().zip(outs.iter_mut()) {
                compress_sync(c, p, o);
            }
            return;
        }
        // Cut between pieces, each group about total/groups bytes.
        let mut bounds = vec![0usize];
        let mut acc = 0usize;
        for (i, p) in pieces.iter().enumerate() {
            acc += p.len();
            let g = bounds.len();
            if g < groups && acc >= total * g / groups && i + 1 < pieces.len() {
                bounds.push(i + 1);
            }
        }
        bounds.push(pieces.len());
        let groups = bounds.len() - 1;
        let mut helpers = take_deflaters(level, groups - 1);
        let main = self.c();
        let (head_outs, mut rest_outs) = outs.split_at_mut(bounds[1]);
        rayon::in_place_scope(|s| {
            let mut pool = helpers.iter_mut();
            for g in 1..groups {
                let (mine, later) = rest_outs.split_at_mut(bounds[g + 1] - bounds[g]);
                rest_outs = later;
                let Some(c) = pool.next() else {
                    break;
                };
                let dict = tail(&pieces[..bounds[g]]);
                let group = &pieces[bounds[g]..bounds[g + 1]];
                s.spawn(move |_| {
                    c.reset();
                    // A fresh raw stream accepts a dictionary.
                    let _ = c.set_dictionary(&dict);
                    for (p, o) in group.iter().zip(mine.iter_mut()) {
                        compress_sync(c, p, o);
                    }
                });
            }
            for (p, o) in pieces[..bounds[1]].iter().zip(head_outs.iter_mut()) {
                compress_sync(main, p, o);
            }
        });
        give_back(level, helpers);
        // The viewer's window now ends with the other groups' input.
        let after_first = tail(&pieces[bounds[1]..]);
        let c = self.c();
        if c.set_dictionary(&after_first).is_err() {
            // Never expected after a sync flush; forget the history rather
            // than refer to bytes the viewer does not have.
            c.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// Scratch is reused, callers that may wait are held at the bound until
    /// one gives back, callers that may not wait never are, and a call that
    /// panics gives its scratch back.
    #[test]
    fn scratch_pool_bounds_waiting_calls_and_always_gets_scratch_back() {
        let pool: &'static ScratchPool<Vec<u8>> = Box::leak(Box::new(ScratchPool::new()));
        {
            let mut a = pool.take(true);
            a.extend_from_slice(&[1, 2, 3]);
        }
        assert_eq!(
            *pool.take(true),
            vec![1, 2, 3],
            "the set given back is lent again"
        );
        let max = scratch_max();
        let held: Vec<_> = (0..max).map(|_| pool.take(true)).collect();
        // Not waiting: lent at once, beyond the bound.
        drop(pool.take(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _s = pool.take(true);
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "a waiting call got scratch beyond the bound"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the waiting call got scratch once some came back");
        waiter.join().unwrap();
        // A panicking holder gives back: the bound is reachable again.
        let _ = std::thread::spawn(move || {
            let _s = pool.take(true);
            panic!("encoder bug");
        })
        .join();
        let again: Vec<_> = (0..max).map(|_| pool.take(true)).collect();
        assert_eq!(again.len(), max);
    }

    fn inflate_all(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * 8 + 1024);
        let start = d.total_in();
        loop {
            let used = (d.total_in() - start) as usize;
            if used == data.len() {
                break;
            }
            out.reserve(data.len() * 4 + 65536);
            d.decompress_vec(&data[used..], &mut out, FlushDecompress::Sync)
                .expect("inflate");
        }
        out
    }

    /// Text-like bytes with long repeats (so windows matter) and noise.
    fn sample(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && v.len() > 40_000 {
                let back = 1 + (x >> 8) as usize % 30_000;
                let len = (4 + (x >> 40) % 200) as usize;
                let s = v.len() - back;
                for i in 0..len {
                    let b = v[s + i];
                    v.push(b);
                }
            } else {
                v.push((x >> 24) as u8 % 16);
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn parallel_pieces_continue_one_stream() {
        for threads in [2usize, 3, 4] {
            let mut z = Deflater::new(6);
            let mut d = Decompress::new(true);
            for (k, n) in [
                (1u64, 300_000usize),
                (2, 5_000),
                (3, 1_200_000),
                (4, 600_000),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, (s, n))| (s + i as u64, n))
            {
                let input = sample(n, k);
                let pieces: Vec<&[u8]> = input.chunks(70_000).collect();
                let mut outs = vec![Vec::new(); pieces.len()];
                z.deflate_pieces(6, &pieces, &mut outs, threads);
                // Each piece inflates on its own, in order, with one inflater.
                for (p, o) in pieces.iter().zip(&outs) {
                    assert_eq!(&inflate_all(&mut d, o), p, "threads {threads}");
                }
            }
        }
    }

    #[test]
    fn parallel_costs_almost_no_bytes() {
        let input = sample(2_000_000, 9);
        let mut one = Vec::new();
        Deflater::new(6).deflate_sync(6, &input, &mut one);
        let mut two = Vec::new();
        let mut z = Deflater::new(6);
        z.deflate_sync_par(6, &input, &mut two, 2);
        assert!(
            two.len() <= one.len() + one.len() / 200,
            "{} vs {}",
            two.len(),
            one.len()
        );
        let mut d = Decompress::new(true);
        assert_eq!(inflate_all(&mut d, &two), input);
        // The stream goes on after a parallel call, with back-references
        // into what was sent in it.
        let mut more = Vec::new();
        z.deflate_sync(6, &input[1_990_000..], &mut more);
        assert!(more.len() < 1000, "{}", more.len());
        assert_eq!(inflate_all(&mut d, &more), &input[1_990_000..]);
    }

    #[test]
    fn ranges_cover_everything() {
        for n in [0usize, 1, 5, 34, 1080] {
            for parts in 1..6 {
                let r = ranges(n, parts);
                assert_eq!(r.first().map(|r| r.start), Some(0));
                assert_eq!(r.last().map(|r| r.end), Some(n));
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }
}

#[cfg(test)]
mod encoder_tests {
    //! The encoders with parallel encoding on: the same pixels reach the
    //! decoder (one decoder, its zlib streams kept across updates as a
    //! viewer keeps them), whether a call ran on one thread or several,
    //! and parallel and serial calls can follow each other on a stream.
    use super::super::{new_encoder, testutil, EncodeParams};
    use super::set_threads;
    use crate::capture::test_pattern::render;
    use crate::framebuffer::{Frame, Rect};
    use crate::rfb::messages::enc;
    use crate::rfb::PixelFormat;
    use rfb_decode::Decoder;
    use std::sync::Mutex;

    /// The thread setting is global: these tests take turns.
    static SETTING: Mutex<()> = Mutex::new(());

    /// Test pattern on top, noise (photo-like) below: every Tight kind.
    fn mixed(w: u16, h: u16, seed: u64) -> Frame {
        let mut f = render(w, h, seed);
        let mut x = 0x2545_F491u32.wrapping_add(seed as u32);
        for p in f.pixels_mut().skip((w as usize * h as usize) / 2) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *p = (*p & 0xf0f0f0) | (x & 0x0f0f0f);
        }
        f
    }

    #[test]
    fn parallel_and_serial_calls_share_streams_exactly() {
        let _turn = SETTING.lock().unwrap_or_else(|e| e.into_inner());
        set_threads(3);
        let frames = [mixed(1100, 700, 1), mixed(1100, 700, 2)];
        let full = frames[0].bounds();
        for (name, encoding, quality, tol) in [
            ("zrle", enc::ZRLE, None, 0),
            ("tight", enc::TIGHT, None, 0),
            ("tight-jpeg", enc::TIGHT, Some(7u8), 64),
            ("zlib", enc::ZLIB, None, 0),
        ] {
            for pf in [PixelFormat::NATIVE, PixelFormat::RGB565] {
                for level in [Some(1u8), Some(6), None] {
                    let p = EncodeParams {
                        pf,
                        compress_level: level,
                        quality_level: quality,
                    };
                    let what = format!("{name} {pf:?} level {level:?}");
                    let mut e = new_encoder(encoding);
                    let mut d = Decoder::new();
                    for (k, f) in frames.iter().enumerate() {
                        // Parallel (whole frame), serial (small), parallel again.
                        testutil::roundtrip_with(e.as_mut(), &mut d, f, full, &p, tol, &what);
                        let small = Rect::new(10 + k as u16, 600, 200, 90);
                        testutil::roundtrip_with(e.as_mut(), &mut d, f, small, &p, tol, &what);
                    }
                }
            }
        }
        set_threads(0);
    }

    #[test]
    fn parallel_output_is_as_small_as_serial() {
        let _turn = SETTING.lock().unwrap_or_else(|e| e.into_inner());
        let f = mixed(1280, 720, 3);
        for encoding in [enc::ZRLE, enc::TIGHT] {
            let p = testutil::params(PixelFormat::NATIVE);
            let mut sizes = Vec::new();
            for threads in [1, 2, 4] {
                // Encoders read the setting at each call: encode right after setting it.
                set_threads(threads);
                let mut out = crate::rfb::UpdateBuf::new();
                new_encoder(encoding).encode(&f, f.bounds(), &p, &mut out);
                sizes.push(out.len());
            }
            set_threads(0);
            for &s in &sizes[1..] {
                assert!(
                    s <= sizes[0] + sizes[0] / 100,
                    "encoding {encoding}: {sizes:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod stored_tests {
    //! Incompressible data costs no more than storing it, at every level a
    //! viewer can ask for (zlib-rs level 1, `deflate_quick`, would not: its
    //! static Huffman codes expand noise, hence viewer level 1 -> zlib 2).
    use super::super::{zlib_level, EncodeParams};
    use super::Deflater;
    use crate::rfb::PixelFormat;

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn noise_is_never_bigger_than_stored() {
        let data = noise(1 << 20);
        // Stored blocks cost 5 bytes per block (blocks of 16 KiB or more),
        // plus the header and the sync flush: far below 0.1 %.
        let bound = data.len() + data.len() / 1000 + 64;
        for viewer_level in 0..=9u8 {
            let p = EncodeParams {
                pf: PixelFormat::NATIVE,
                compress_level: Some(viewer_level),
                quality_level: None,
            };
            let level = zlib_level(&p, 6);
            for threads in [1, 2] {
                let mut out = Vec::new();
                Deflater::new(level).deflate_sync_par(level, &data, &mut out, threads);
                assert!(
                    out.len() <= bound,
                    "viewer level {viewer_level} (zlib {level}), {threads} threads: {} > {bound}",
                    out.len()
                );
            }
        }
    }
}
