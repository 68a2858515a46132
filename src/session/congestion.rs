//! Delay-based congestion control from fence round trips, after the
//! scheme of TigerVNC's `common/rfb/Congestion.cxx` (read, not copied).
//!
//! The session counts every byte it hands to the socket (the *position*).
//! After each update it sends a ServerFence with BlockBefore set; the
//! viewer answers it only once everything before it has been received and
//! processed, so its arrival says that the stream up to the position at
//! the ping has been consumed, and how long that took (a round trip).
//!
//! From those answers the estimator keeps the link's base round-trip time
//! (the lowest seen), and a congestion window: the bytes that may be "in
//! flight" (sent but not yet known to be consumed). The window grows fast
//! while the round trips stay at the base (slow start), and is then tuned
//! like TCP Vegas: shrink when the round trip rises well above the base
//! (data is queuing in some buffer on the way), grow when the round trip
//! stays at the base even with a full window. The result keeps about one
//! round trip of data in flight, so an update is built from the newest
//! frame just when the link can take it instead of queuing behind older
//! ones in socket and router buffers.
//!
//! No I/O and no clock of its own: every call takes `now`, so the tests
//! below drive it with made-up times.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window at the start: enough to get going on a decent network; reduced
/// quickly when too high.
const INITIAL_WINDOW: u64 = 16 * 1024;
/// Never below this (a few TCP segments).
const MINIMUM_WINDOW: u64 = 4 * 1024;
/// Never above this (Linux's default maximum socket window).
const MAXIMUM_WINDOW: u64 = 4 * 1024 * 1024;
/// Round trip assumed for the bandwidth estimate before one was measured (ms).
const GUESSED_RTT_MS: u64 = 60;

/// One ping: when it was sent, the position it marks, the estimated
/// excess buffering then, and whether the window was full.
#[derive(Clone, Copy, Debug)]
struct Ping {
    at: Instant,
    pos: u64,
    extra: u64,
    congested: bool,
}

#[derive(Debug)]
pub struct Congestion {
    last_position: u64,
    /// Bytes sent faster than the window lets drain (estimated), whose
    /// extra delay must not be blamed on the window.
    extra_buffer: u64,
    /// Lowest round trip seen (ms): the wire's own latency.
    base_rtt: Option<u64>,
    /// The same, kept over idle resets for the bandwidth estimate.
    safe_base_rtt: Option<u64>,
    window: u64,
    slow_start: bool,
    /// Measurements since the last window adjustment, with the lowest
    /// round trip among them, and among those sent with a full window.
    measurements: u32,
    min_rtt: Option<u64>,
    min_congested_rtt: Option<u64>,
    last_update: Instant,
    last_sent: Instant,
    last_pong: Ping,
    last_pong_arrival: Instant,
    last_adjustment: Instant,
    pings: VecDeque<Ping>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn ms_between(a: Instant, b: Instant) -> u64 {
    ms(b.saturating_duration_since(a))
}

impl Congestion {
    pub fn new(now: Instant) -> Congestion {
        Congestion {
            last_position: 0,
            extra_buffer: 0,
            base_rtt: None,
            safe_base_rtt: None,
            window: INITIAL_WINDOW,
            slow_start: true,
            measurements: 0,
            min_rtt: None,
            min_congested_rtt: None,
            last_update: now,
            last_sent: now,
            last_pong: Ping {
                at: now,
                pos: 0,
                extra: 0,
                congested: false,
            },
            last_pong_arrival: now,
            last_adjustment: now,
            pings: VecDeque::new(),
        }
    }

    /// The congestion window (bytes).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The lowest round trip measured (ms), if any.
    pub fn base_rtt(&self) -> Option<u64> {
        self.base_rtt
    }

    /// Pings not answered yet.
    pub fn outstanding(&self) -> usize {
        self.pings.len()
    }

    /// The stream has reached `pos` bytes.
    pub fn update_position(&mut self, pos: u64, now: Instant) {
        let delta = pos.saturating_sub(self.last_position);
        if delta > 0 || self.extra_buffer > 0 {
            self.last_sent = now;
        }
        // Idle for longer than a crude retransmission timeout: what was
        // learnt about the window may be stale; measure again.
        let idle = ms_between(self.last_sent, now);
        if idle > 100 && self.base_rtt.is_some_and(|b| idle > 2 * b) {
            self.window = self.window.min(INITIAL_WINDOW);
            self.base_rtt = None;
            self.measurements = 0;
            self.last_adjustment = now;
            self.min_rtt = None;
            self.min_congested_rtt = None;
            self.slow_start = true;
        }
        // Bytes beyond what the window drains in the time elapsed are
        // overbuffering, whose delay is not the window's fault.
        if let Some(base) = self.base_rtt {
            self.extra_buffer += delta;
            let consumed = ms_between(self.last_update, now) * self.window / base;
            self.extra_buffer = self.extra_buffer.saturating_sub(consumed);
        }
        self.last_position = pos;
        self.last_update = now;
    }

    /// A ping was sent at the current position.
    pub fn sent_ping(&mut self, now: Instant) {
        let ping = Ping {
            at: now,
            pos: self.last_position,
            extra: self.extra_buffer_at(now),
            congested: self.is_congested(now),
        };
        self.pings.push_back(ping);
    }

    /// The oldest outstanding ping was answered.
    pub fn got_pong(&mut self, now: Instant) {
        let Some(ping) = self.pings.pop_front() else {
            return;
        };
        self.last_pong = ping;
        self.last_pong_arrival = now;
        let mut rtt = ms_between(ping.at, now).max(1);
        if self.base_rtt.is_none_or(|b| rtt < b) {
            self.base_rtt = Some(rtt);
            self.safe_base_rtt = Some(rtt);
        }
        let base = self.base_rtt.unwrap_or(rtt);
        // Pings from before the last adjustment measured another window.
        if ping.at < self.last_adjustment {
            return;
        }
        // Take out the delay of the overbuffering it was sent behind.
        let delay = ping.extra * base / self.window;
        rtt = if delay < rtt { rtt - delay } else { 1 };
        // Below the wire latency: the window was underestimated; count it
        // as no buffering at all.
        rtt = rtt.max(base);
        // Delay based, so every answer counts, not only those sent with a
        // full window; those tell whether the window is too small.
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        if ping.congested {
            self.min_congested_rtt = Some(self.min_congested_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        self.measurements += 1;
        self.adjust(now);
    }

    /// Bytes in flight reach the window.
    pub fn is_congested(&self, now: Instant) -> bool {
        self.in_flight(now) >= self.window
    }

    /// How long until the window is expected to have room, `None` when it
    /// cannot be estimated (no round trip measured yet: wait for an answer).
    pub fn uncongested_in(&self, now: Instant) -> Option<Duration> {
        let target = self.last_position.saturating_sub(self.window);
        if self.last_pong.pos > target {
            return Some(Duration::ZERO);
        }
        let base = self.base_rtt?;
        let mut prev = self.last_pong;
        let mut eta = 0u64;
        let elapsed = ms_between(self.last_pong_arrival, now);
        let tail = Ping {
            at: self.last_update,
            pos: self.last_position,
            extra: self.extra_buffer,
            congested: false,
        };
        // Walk the outstanding pings to the one whose answer brings the
        // acknowledged position past the target; past the last one,
        // pretend a ping was sent at the last position update.
        for cur in self.pings.iter().copied().chain(std::iter::once(tail)) {
            let mut next = ms_between(prev.at, cur.at) + cur.extra * base / self.window;
            next = next.saturating_sub(prev.extra * base / self.window);
            if cur.pos > target {
                let span = (cur.pos - prev.pos).max(1);
                eta += next * (cur.pos - target) / span;
                return Some(Duration::from_millis(eta.saturating_sub(elapsed)));
            }
            eta += next;
            prev = cur;
        }
        // The tail is at `last_position` > target unless the window is 0.
        Some(Duration::ZERO)
    }

    /// Bytes sent and not yet known (or estimated) to have arrived.
    pub fn in_flight(&self, now: Instant) -> u64 {
        if self.last_position == self.last_pong.pos {
            return 0;
        }
        let Some(base) = self.base_rtt else {
            return self
                .pings
                .front()
                .map_or(0, |p| self.last_position.saturating_sub(p.pos));
        };
        let next = self.pings.front().copied().unwrap_or(Ping {
            at: self.last_update,
            pos: self.last_position,
            extra: self.extra_buffer,
            congested: false,
        });
        // Interpolate between the last answer and the next one expected.
        let mut eta = ms_between(self.last_pong.at, next.at) + next.extra * base / self.window;
        eta = eta.saturating_sub(self.last_pong.extra * base / self.window);
        let elapsed = ms_between(self.last_pong_arrival, now);
        let acked = if eta <= elapsed {
            // Due any moment: be optimistic.
            next.pos
        } else {
            self.last_pong.pos + next.pos.saturating_sub(self.last_pong.pos) * elapsed / eta
        };
        self.last_position.saturating_sub(acked)
    }

    /// Estimated bandwidth of the link (bytes per second).
    pub fn bandwidth(&self) -> u64 {
        let rtt = self.safe_base_rtt.unwrap_or(GUESSED_RTT_MS).max(1);
        let bw = self.window * 1000 / rtt;
        // Still probing: the truth is likely between this window and the next.
        if self.slow_start {
            bw + bw / 2
        } else {
            bw
        }
    }

    fn extra_buffer_at(&self, now: Instant) -> u64 {
        let Some(base) = self.base_rtt else { return 0 };
        let consumed = ms_between(self.last_update, now) * self.window / base;
        self.extra_buffer.saturating_sub(consumed)
    }

    fn adjust(&mut self, now: Instant) {
        // A few measurements, to keep noise out.
        if self.measurements < 3 {
            return;
        }
        let (Some(base), Some(min_rtt)) = (self.base_rtt, self.min_rtt) else {
            return;
        };
        let min_congested = self.min_congested_rtt.unwrap_or(u64::MAX);
        // Aim for a window slightly too large (a few ms of queuing), as a
        // perfect one cannot be told from one too small.
        let diff = min_rtt.saturating_sub(base);
        if diff > 100 && diff > base / 2 {
            // No loss signal here: take a big spike as loss and back off.
            self.window = self.window * base / min_rtt;
            self.slow_start = false;
        }
        if self.slow_start {
            if diff > 25 {
                // The round trip grew: the window passed the link's capacity.
                self.window = self.window * base / min_rtt;
                self.slow_start = false;
            } else if min_congested.saturating_sub(base) < 25 {
                // Only grow when the whole window was used.
                self.window *= 2;
            }
        } else if diff > 50 {
            // Vegas: a bit too fast.
            self.window = self.window.saturating_sub(4096);
        } else {
            let d = min_congested.saturating_sub(base);
            if d < 5 {
                self.window += 8192;
            } else if d < 25 {
                self.window += 4096;
            }
        }
        self.window = self.window.clamp(MINIMUM_WINDOW, MAXIMUM_WINDOW);
        tracing::debug!(
            rtt_ms = min_rtt,
            congested_rtt_ms = self.min_congested_rtt,
            base_rtt_ms = base,
            window_kib = self.window / 1024,
            bandwidth_kbit = self.window * 8 / base,
            slow_start = self.slow_start,
            "congestion window adjusted"
        );
        self.measurements = 0;
        self.last_adjustment = now;
        self.min_rtt = None;
        self.min_congested_rtt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated link: `rate` bytes per ms, `one_way` ms each way, an
    /// unbounded queue before it (a bloated router buffer). The sender
    /// keeps the window full with `chunk`-byte updates, a ping after each,
    /// and the receiver answers each ping when the bytes before it arrive.
    struct Link {
        rate: u64,
        one_way: u64,
    }

    /// Run the sender for `duration` ms of simulated time; returns the
    /// estimator and the largest queue delay (ms) the last second saw.
    fn simulate(link: &Link, chunk: u64, duration: u64) -> (Congestion, u64) {
        let t0 = Instant::now();
        let at = |t: u64| t0 + Duration::from_millis(t);
        let mut c = Congestion::new(at(0));
        let mut pos = 0u64;
        // When the link finishes serialising what was sent so far.
        let mut link_free = 0u64;
        // Answers to come: (arrival time at the sender).
        let mut pongs: VecDeque<u64> = VecDeque::new();
        let mut worst_queue = 0;
        for t in 0..duration {
            while pongs.front().is_some_and(|&p| p <= t) {
                pongs.pop_front();
                c.got_pong(at(t));
            }
            c.update_position(pos, at(t));
            if !c.is_congested(at(t)) {
                pos += chunk;
                c.update_position(pos, at(t));
                c.sent_ping(at(t));
                let start = link_free.max(t);
                if t > duration.saturating_sub(1000) {
                    worst_queue = worst_queue.max(start - t);
                }
                link_free = start + chunk.div_ceil(link.rate);
                pongs.push_back(link_free + 2 * link.one_way);
            }
        }
        (c, worst_queue)
    }

    #[test]
    fn the_window_settles_near_the_bandwidth_delay_product() {
        // 4 Mbit/s = 500 bytes/ms, 100 ms each way: 100 kB per round trip.
        let link = Link {
            rate: 500,
            one_way: 100,
        };
        let (c, worst_queue) = simulate(&link, 8 * 1024, 30_000);
        let bdp = link.rate * 2 * link.one_way;
        // The wire plus one chunk's serialisation.
        let base = c.base_rtt().expect("measured");
        assert!((200..250).contains(&base), "{c:?}");
        assert!(
            c.window() >= bdp / 2 && c.window() <= bdp * 2,
            "window {} for a bandwidth-delay product of {bdp}",
            c.window()
        );
        // Never queues as much as a round trip in the router.
        assert!(worst_queue < 2 * link.one_way, "queued {worst_queue} ms");
        let bw = c.bandwidth();
        assert!(
            bw >= link.rate * 1000 / 2 && bw <= link.rate * 1000 * 2,
            "estimated {bw} B/s"
        );
    }

    #[test]
    fn a_fast_short_link_opens_the_window_wide() {
        // 100 Mbit/s, 1 ms each way: the window grows well past the start.
        let link = Link {
            rate: 12_500,
            one_way: 1,
        };
        let (c, _) = simulate(&link, 16 * 1024, 5_000);
        assert!(c.window() > INITIAL_WINDOW, "{c:?}");
    }

    #[test]
    fn without_answers_only_the_initial_window_goes_out() {
        let t0 = Instant::now();
        let mut c = Congestion::new(t0);
        let mut pos = 0;
        let mut sent = 0;
        for t in 0..1000u64 {
            let now = t0 + Duration::from_millis(t);
            c.update_position(pos, now);
            if !c.is_congested(now) {
                pos += 4096;
                c.update_position(pos, now);
                c.sent_ping(now);
                sent += 4096;
            }
        }
        assert!(sent <= INITIAL_WINDOW + 4096, "sent {sent}");
        // No round trip known: no estimate of when there is room.
        assert_eq!(c.uncongested_in(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn an_answer_frees_the_window_and_measures_the_round_trip() {
        let t0 = Instant::now();
        let ms = |t| t0 + Duration::from_millis(t);
        let mut c = Congestion::new(t0);
        // A ping, an update larger than the initial window, a ping.
        c.sent_ping(ms(0));
        c.update_position(20_000, ms(0));
        c.sent_ping(ms(0));
        assert!(c.is_congested(ms(1)));
        assert_eq!(c.uncongested_in(ms(1)), None);
        c.got_pong(ms(50));
        assert_eq!(c.base_rtt(), Some(50));
        c.update_position(20_000, ms(50));
        // The second answer is due any moment (sent at the same time).
        assert!(!c.is_congested(ms(50)));
        c.got_pong(ms(51));
        assert_eq!(c.in_flight(ms(51)), 0);
    }

    #[test]
    fn a_long_idle_period_starts_measuring_again() {
        let t0 = Instant::now();
        let ms = |t| t0 + Duration::from_millis(t);
        let mut c = Congestion::new(t0);
        c.update_position(1000, ms(0));
        c.sent_ping(ms(0));
        c.got_pong(ms(20));
        assert_eq!(c.base_rtt(), Some(20));
        c.update_position(1000, ms(5000));
        assert_eq!(c.base_rtt(), None);
        assert_eq!(c.window(), INITIAL_WINDOW);
    }

    #[test]
    fn unsolicited_answers_are_ignored() {
        let t0 = Instant::now();
        let mut c = Congestion::new(t0);
        c.got_pong(t0 + Duration::from_millis(10));
        assert_eq!(c.base_rtt(), None);
        assert_eq!(c.outstanding(), 0);
    }
}
