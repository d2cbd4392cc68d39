//! Jitter-buffer simulations: the loss a listener would hear, as VoIPmonitor
//! reports it (F1 = fixed 50 ms, F2 = fixed 200 ms, adaptive up to 500 ms).
//!
//! # Model
//!
//! Each packet's *transit* is its arrival time minus its media time (RTP
//! timestamp converted to µs), with an arbitrary common origin. The
//! playout schedule is anchored on the fastest packet seen so far:
//! `delay = transit - min_transit`, so the first packet has delay 0 and a
//! packet that arrives earlier than the schedule predicted re-anchors it
//! (its delay becomes 0). A packet is **discarded as late** when its delay
//! exceeds the current buffer depth: it would have arrived after its
//! playout point (`anchor + media time + buffer`).
//!
//! * **Fixed** buffers keep their depth for the whole stream.
//! * The **adaptive** buffer starts at [`ADAPTIVE_START_MS`]. On a late
//!   packet (which is still discarded) it grows at once to the packet's
//!   delay plus [`ADAPTIVE_HEADROOM_MS`], capped at its maximum. On every
//!   packet played in time it shrinks by 1/4096 of the distance to
//!   `max(ADAPTIVE_START_MS, delay + headroom)`: about 80 s of time
//!   constant at 50 packets/s, so delay spikes that recur every few seconds
//!   stay absorbed (the "grow fast, shrink slowly" behaviour of common
//!   adaptive buffers).
//!
//! A delay beyond [`RESYNC_MS`] is not jitter but a timestamp
//! discontinuity (a sender that restarted its timestamps without changing
//! SSRC): the schedule is re-anchored on that packet, which is played.
//!
//! Effective loss = network loss + discards. Clock drift between sender and
//! capture point is not compensated: a sender whose clock runs slow makes
//! delays creep up over a long call, as it would fill a real fixed buffer.
//! Every call is O(1) with integer arithmetic; the state is 40 bytes.

/// Depth of the first fixed buffer (VoIPmonitor "F1"), ms.
pub const F1_MS: u32 = 50;
/// Depth of the second fixed buffer (VoIPmonitor "F2"), ms.
pub const F2_MS: u32 = 200;
/// Maximum depth of the adaptive buffer, ms.
pub const ADAPTIVE_MAX_MS: u32 = 500;
/// Initial (and minimum) depth of the adaptive buffer, ms.
pub const ADAPTIVE_START_MS: u32 = 20;
/// Margin the adaptive buffer keeps above the delay that made it grow, ms.
pub const ADAPTIVE_HEADROOM_MS: u32 = 10;

/// Delay above which the schedule is re-anchored instead of the packet
/// being discarded, ms.
pub const RESYNC_MS: u32 = 5_000;

/// One simulated jitter buffer. Feed it every non-duplicate media packet
/// in arrival order with [`JitterBuffer::handle_packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterBuffer {
    /// Current depth, µs (at most 10^7: depths are capped at 10 s).
    depth_us: i32,
    /// Maximum depth, µs (equal to `depth_us` for a fixed buffer).
    max_us: i32,
    /// Smallest transit seen, µs ([`i64::MAX`] before the first packet).
    min_transit_us: i64,
    played: u32,
    discarded: u32,
    adaptive: bool,
}

/// Whether a packet made it to playout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Playout {
    /// Played in time.
    Played,
    /// Arrived after its playout point and was dropped.
    Late,
}

impl JitterBuffer {
    /// A fixed buffer of `depth_ms`.
    pub fn fixed(depth_ms: u32) -> Self {
        let us = ms_to_us(depth_ms);
        Self {
            depth_us: us,
            max_us: us,
            adaptive: false,
            min_transit_us: i64::MAX,
            played: 0,
            discarded: 0,
        }
    }

    /// An adaptive buffer growing up to `max_ms` (see the module docs).
    pub fn adaptive(max_ms: u32) -> Self {
        let max_us = ms_to_us(max_ms);
        Self {
            depth_us: ms_to_us(ADAPTIVE_START_MS).min(max_us),
            max_us,
            adaptive: true,
            min_transit_us: i64::MAX,
            played: 0,
            discarded: 0,
        }
    }

    /// Feeds one packet whose transit time (arrival − media time, µs, any
    /// fixed origin) is `transit_us`.
    pub fn handle_packet(&mut self, transit_us: i64) -> Playout {
        if transit_us < self.min_transit_us {
            self.min_transit_us = transit_us;
        }
        let mut delay = transit_us.saturating_sub(self.min_transit_us);
        if delay > i64::from(RESYNC_MS) * 1000 {
            self.min_transit_us = transit_us;
            delay = 0;
        }
        let headroom = i64::from(ADAPTIVE_HEADROOM_MS) * 1000;
        let depth = i64::from(self.depth_us);
        let max = i64::from(self.max_us);
        if delay > depth {
            self.discarded = self.discarded.saturating_add(1);
            if self.adaptive {
                // Bounded by `max_us`, so it fits the i32 again.
                self.depth_us = delay.saturating_add(headroom).min(max) as i32;
            }
            Playout::Late
        } else {
            self.played = self.played.saturating_add(1);
            if self.adaptive {
                let floor = i64::from(ms_to_us(ADAPTIVE_START_MS)).min(max);
                let target = delay.saturating_add(headroom).max(floor);
                if target < depth {
                    // Shrink by 1/4096 of the distance, at least 1 µs.
                    self.depth_us -= ((depth - target) >> 12).max(1) as i32;
                }
            }
            Playout::Played
        }
    }

    /// Packets dropped as late so far.
    pub fn discarded(&self) -> u64 {
        u64::from(self.discarded)
    }

    /// Packets played in time so far.
    pub fn played(&self) -> u64 {
        u64::from(self.played)
    }

    /// Current depth in ms.
    pub fn depth_ms(&self) -> f64 {
        f64::from(self.depth_us) / 1000.0
    }
}

/// Depths are capped at 10 s (the configuration allows 1–10,000 ms), so
/// the µs value always fits an `i32`.
fn ms_to_us(ms: u32) -> i32 {
    (ms.min(10_000) * 1000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(jb: &mut JitterBuffer, delays_ms: &[i64]) -> Vec<Playout> {
        delays_ms
            .iter()
            .enumerate()
            .map(|(i, d)| jb.handle_packet(i as i64 * 20_000 + d * 1000 - i as i64 * 20_000))
            .collect()
    }

    #[test]
    fn fixed_drops_only_beyond_depth() {
        let mut f1 = JitterBuffer::fixed(F1_MS);
        let mut f2 = JitterBuffer::fixed(F2_MS);
        let delays = [0, 10, 49, 50, 51, 120, 0, 250, 199];
        run(&mut f1, &delays);
        run(&mut f2, &delays);
        assert_eq!(f1.discarded(), 4); // 51, 120, 250, 199
        assert_eq!(f2.discarded(), 1); // 250
        assert_eq!(f1.played() + f1.discarded(), delays.len() as u64);
    }

    #[test]
    fn early_packet_reanchors_schedule() {
        // First packet 100 ms late: everything after looks early, nothing is lost.
        let mut f1 = JitterBuffer::fixed(F1_MS);
        let out = run(&mut f1, &[100, 0, 0, 30, 0]);
        assert!(out.iter().all(|p| *p == Playout::Played));
    }

    #[test]
    fn timestamp_discontinuity_resyncs() {
        let mut f1 = JitterBuffer::fixed(F1_MS);
        assert_eq!(f1.handle_packet(0), Playout::Played);
        // Timestamps restarted 1 hour back: transit jumps by +3600 s.
        for i in 0..10 {
            assert_eq!(f1.handle_packet(3_600_000_000 + i * 1000), Playout::Played);
        }
        assert_eq!(f1.handle_packet(3_600_000_000 + 60_000), Playout::Late);
        assert_eq!(f1.discarded(), 1);
    }

    #[test]
    fn adaptive_grows_fast_shrinks_slowly() {
        let mut jb = JitterBuffer::adaptive(ADAPTIVE_MAX_MS);
        assert_eq!(jb.handle_packet(0), Playout::Played);
        assert_eq!(jb.handle_packet(80_000), Playout::Late);
        assert!((jb.depth_ms() - 90.0).abs() < 1e-9);
        // The same delay again is now absorbed.
        assert_eq!(jb.handle_packet(80_000), Playout::Played);
        for _ in 0..100 {
            let _ = jb.handle_packet(0);
        }
        let d = jb.depth_ms();
        assert!(d < 90.0 && d > 20.0, "{d}");
        for _ in 0..60_000 {
            let _ = jb.handle_packet(0);
        }
        assert!((jb.depth_ms() - 20.0).abs() < 0.01);
        // Never beyond its maximum.
        assert_eq!(jb.handle_packet(900_000), Playout::Late);
        assert!((jb.depth_ms() - 500.0).abs() < 1e-9);
    }
}
