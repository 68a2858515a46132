//! One encoding for every viewer with the same settings.
//!
//! Viewers that use the same encoding, pixel format and levels, and are
//! brought to the same frame, need the same bands encoded. Without sharing,
//! ten technicians watching one customer cost ten times the CPU of one. A
//! band is therefore encoded once, by whichever viewer gets to it first,
//! with [`Encoder::encode_detached`](super::Encoder::encode_detached)
//! (bytes that depend on nothing a connection sent before), kept here, and
//! copied to the others.
//!
//! The bands of one update form a *run*, named by a hash of the frame, the
//! settings and every band of the update: viewers whose updates are the
//! same take the whole run. The run's zlib streams ([`DetachedStreams`])
//! carry on from band to band, so only its first band starts with an empty
//! window (a window emptied at every band costs ZRLE up to a quarter more
//! bytes on a screen of text). A band's bytes may then refer back to the
//! run's earlier bands, so each band made with the run's streams carries
//! its place in the run ([`Encoded::pos`]), and a viewer takes only the
//! band whose place follows the one it took last. A band made out of that
//! order (its entry was dropped and made again after the run went on) is
//! made with streams of its own, fit for any viewer, and ends the taker's
//! part in the run; so does any band a viewer cannot take. Such a viewer
//! encodes the rest of its update alone.
//!
//! Entries are kept only while they can be used:
//! - only for settings at least two viewers have ([`Membership`]);
//! - only for the newest frame and the one before it (a viewer further
//!   behind encodes its own);
//! - an entry goes once every viewer with its settings has taken it;
//! - all of them together hold at most [`BUDGET_BYTES`].
//!
//! Raw is never shared: it costs a copy to encode, and holding it would
//! cost a whole frame of memory.

use super::{DetachedStreams, EncodeParams};
use crate::framebuffer::Rect;
use crate::rfb::messages::enc;
use crate::rfb::UpdateBuf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The most encoded bytes kept at once (about two 1080p photo frames in
/// ZRLE or Tight).
pub const BUDGET_BYTES: usize = 12 * 1024 * 1024;
/// The most entries kept at once (a 1080p frame is 17 bands per settings).
const MAX_ENTRIES: usize = 4096;
/// Entries of frames this many older than the newest are dropped.
const KEEP_FRAMES: u64 = 1;

/// Settings under which two viewers' encodings of a band are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub encoding: i32,
    pub params: EncodeParams,
}

/// One band, encoded for every viewer with its settings.
#[derive(Debug)]
pub struct Encoded {
    /// Rectangle headers and data (no update header).
    pub buf: UpdateBuf,
    /// Rectangles in `buf`.
    pub rects: usize,
    /// Its place among the bands made with the run's streams (`None`:
    /// made with streams of its own, so it follows anything).
    pub pos: Option<u64>,
}

/// Filled once, by the first viewer to reach it; the others wait for it.
pub type Slot = Arc<OnceLock<Arc<Encoded>>>;

/// The zlib streams a run's bands are compressed with, in turn, and how
/// many bands they made.
#[derive(Default)]
pub struct RunState {
    pub streams: DetachedStreams,
    pub made: u64,
}

pub type RunStreams = Arc<Mutex<RunState>>;

/// A run: frame, settings, and the hash of the update's bands.
type RunId = (u64, ShareKey, u64);

struct Entry {
    slot: Slot,
    taken: usize,
}

#[derive(Default)]
struct Inner {
    /// Viewers per settings.
    viewers: HashMap<ShareKey, usize>,
    runs: HashMap<RunId, RunStreams>,
    entries: HashMap<(RunId, Rect), Entry>,
    /// The newest frame an entry was asked for.
    newest: u64,
}

impl Inner {
    fn bytes(&self) -> usize {
        self.entries
            .values()
            .filter_map(|e| e.slot.get())
            .map(|e| e.buf.len())
            .sum()
    }
}

/// The encodings shared by the viewers of one server.
#[derive(Default)]
pub struct SharedEncodings {
    inner: Mutex<Inner>,
    encoded: AtomicU64,
    reused: AtomicU64,
}

/// How often a band was encoded for sharing, and how often such an
/// encoding was sent to a further viewer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareStats {
    pub encoded: u64,
    pub reused: u64,
}

impl SharedEncodings {
    pub fn new() -> Arc<SharedEncodings> {
        Arc::new(SharedEncodings::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many viewers have settings `key`.
    pub fn sharers(&self, key: &ShareKey) -> usize {
        self.lock().viewers.get(key).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> ShareStats {
        ShareStats {
            encoded: self.encoded.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
        }
    }

    /// Bytes held now (for tests and the log).
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes()
    }

    /// The streams of run `run` (frame, settings, bands), shared by every
    /// viewer whose update it is. `None`: the update is encoded alone (no
    /// other viewer has these settings, the frame is old, or Raw).
    pub fn run(&self, seq: u64, key: ShareKey, bands: u64) -> Option<RunStreams> {
        if key.encoding == enc::RAW {
            return None;
        }
        let mut inner = self.lock();
        if inner.viewers.get(&key).copied().unwrap_or(0) < 2 || seq + KEEP_FRAMES < inner.newest {
            return None;
        }
        if seq > inner.newest {
            inner.newest = seq;
            inner.entries.retain(|k, _| k.0 .0 + KEEP_FRAMES >= seq);
            inner.runs.retain(|k, _| k.0 + KEEP_FRAMES >= seq);
        }
        Some(inner.runs.entry((seq, key, bands)).or_default().clone())
    }

    /// The slot for band `rect` of a run: filled already, being filled, or
    /// new (the caller fills it). `None`: encode it alone (the frame is
    /// old, or the budget is spent).
    pub fn slot(&self, seq: u64, key: ShareKey, bands: u64, rect: Rect) -> Option<Slot> {
        let run = (seq, key, bands);
        let mut inner = self.lock();
        if !inner.runs.contains_key(&run) {
            return None;
        }
        if let Some(e) = inner.entries.get(&(run, rect)) {
            return Some(e.slot.clone());
        }
        if inner.entries.len() >= MAX_ENTRIES || inner.bytes() >= BUDGET_BYTES {
            return None;
        }
        let slot = Slot::default();
        inner.entries.insert(
            (run, rect),
            Entry {
                slot: slot.clone(),
                taken: 0,
            },
        );
        Some(slot)
    }

    /// A viewer sent the band `rect` of a run; `produced` if it encoded
    /// it. The entry goes once every viewer with these settings has it.
    pub fn taken(&self, seq: u64, key: ShareKey, bands: u64, rect: Rect, produced: bool) {
        let counter = if produced {
            &self.encoded
        } else {
            &self.reused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let sharers = inner.viewers.get(&key).copied().unwrap_or(0);
        let k = ((seq, key, bands), rect);
        if let Some(e) = inner.entries.get_mut(&k) {
            e.taken += 1;
            if e.taken >= sharers {
                inner.entries.remove(&k);
            }
        }
    }

    fn join(&self, key: ShareKey) {
        *self.lock().viewers.entry(key).or_insert(0) += 1;
    }

    fn leave(&self, key: ShareKey) {
        let mut inner = self.lock();
        if let Some(n) = inner.viewers.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                inner.viewers.remove(&key);
                inner.entries.retain(|k, _| k.0 .1 != key);
                inner.runs.retain(|k, _| k.1 != key);
            }
        }
    }
}

/// A viewer's place among the viewers of one [`SharedEncodings`]: counted
/// under its current settings, until it is dropped.
pub struct Membership {
    cache: Arc<SharedEncodings>,
    key: Option<ShareKey>,
}

impl Membership {
    pub fn new(cache: Arc<SharedEncodings>) -> Membership {
        Membership { cache, key: None }
    }

    /// The viewer's settings are now `key`.
    pub fn set(&mut self, key: ShareKey) {
        if self.key == Some(key) {
            return;
        }
        if let Some(old) = self.key.take() {
            self.cache.leave(old);
        }
        self.cache.join(key);
        self.key = Some(key);
    }

    pub fn cache(&self) -> &Arc<SharedEncodings> {
        &self.cache
    }

    /// Whether another viewer has the same settings.
    pub fn shared(&self) -> bool {
        self.key.is_some_and(|k| self.cache.sharers(&k) >= 2)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.cache.leave(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfb::PixelFormat;

    fn key(encoding: i32) -> ShareKey {
        ShareKey {
            encoding,
            params: EncodeParams {
                pf: PixelFormat::NATIVE,
                compress_level: None,
                quality_level: None,
            },
        }
    }

    fn fill(slot: &Slot, len: usize) {
        slot.get_or_init(|| {
            let mut buf = UpdateBuf::new();
            buf.extend_from_slice(&vec![0; len]);
            Arc::new(Encoded {
                buf,
                rects: 1,
                pos: None,
            })
        });
    }

    fn members(c: &Arc<SharedEncodings>, k: ShareKey, n: usize) -> Vec<Membership> {
        (0..n)
            .map(|_| {
                let mut m = Membership::new(c.clone());
                m.set(k);
                m
            })
            .collect()
    }

    /// The slot of band `r` of run 7 of frame `seq`.
    fn slot(c: &SharedEncodings, seq: u64, k: ShareKey, r: Rect) -> Option<Slot> {
        c.run(seq, k, 7)?;
        c.slot(seq, k, 7, r)
    }

    #[test]
    fn nothing_is_kept_for_a_viewer_alone_or_for_raw() {
        let c = SharedEncodings::new();
        let mut a = Membership::new(c.clone());
        a.set(key(enc::ZRLE));
        let r = Rect::new(0, 0, 64, 64);
        assert!(slot(&c, 1, key(enc::ZRLE), r).is_none());
        let mut b = Membership::new(c.clone());
        b.set(key(enc::ZRLE));
        assert!(a.shared() && b.shared());
        assert!(slot(&c, 1, key(enc::ZRLE), r).is_some());
        // Only bands of a run somebody started.
        assert!(c.slot(1, key(enc::ZRLE), 8, r).is_none());
        let _raw = members(&c, key(enc::RAW), 2);
        assert!(slot(&c, 1, key(enc::RAW), r).is_none());
        // Settings changed: no longer shared.
        b.set(key(enc::TIGHT));
        assert!(!a.shared());
        assert!(slot(&c, 2, key(enc::ZRLE), r).is_none());
        drop(b);
        assert_eq!(c.sharers(&key(enc::TIGHT)), 0);
    }

    #[test]
    fn an_entry_goes_once_every_sharer_took_it_or_the_frame_is_old() {
        let c = SharedEncodings::new();
        let k = key(enc::ZRLE);
        let ms = members(&c, k, 3);
        let r = Rect::new(0, 0, 64, 64);
        let s = slot(&c, 5, k, r).unwrap();
        fill(&s, 100);
        assert!(Arc::ptr_eq(&s, &slot(&c, 5, k, r).unwrap()));
        c.taken(5, k, 7, r, true);
        c.taken(5, k, 7, r, false);
        assert_eq!(c.held_bytes(), 100);
        c.taken(5, k, 7, r, false);
        assert_eq!(c.held_bytes(), 0);
        assert_eq!(
            c.stats(),
            ShareStats {
                encoded: 1,
                reused: 2
            }
        );
        // Frames: the newest and the one before are kept.
        fill(&slot(&c, 6, k, r).unwrap(), 10);
        fill(&slot(&c, 7, k, r).unwrap(), 10);
        assert_eq!(c.held_bytes(), 20);
        fill(&slot(&c, 8, k, r).unwrap(), 10);
        assert_eq!(c.held_bytes(), 20);
        assert!(slot(&c, 6, k, r).is_none(), "too old to keep");
        drop(ms);
        assert_eq!(c.held_bytes(), 0);
    }

    #[test]
    fn the_budget_bounds_what_is_held() {
        let c = SharedEncodings::new();
        let k = key(enc::TIGHT);
        let _ms = members(&c, k, 2);
        let mut y = 0;
        while let Some(s) = slot(&c, 1, k, Rect::new(0, y, 64, 1)) {
            fill(&s, 1024 * 1024);
            y += 1;
        }
        assert_eq!(c.held_bytes(), BUDGET_BYTES);
    }
}
