//! Fixed-size histograms: no allocation, one array of counters each, so a
//! stream's memory stays constant whatever its length.

use serde::Serialize;

/// Burst lengths of consecutive lost packets: 1, 2, 3, 4, 5, 6–10, 11+.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LossRunHistogram {
    /// Counts per bucket, in the order of [`LossRunHistogram::BUCKETS`].
    pub counts: [u32; 7],
}

impl LossRunHistogram {
    /// Bucket labels (run length in packets).
    pub const BUCKETS: [&'static str; 7] = ["1", "2", "3", "4", "5", "6-10", "11+"];

    /// Records one run of `len` consecutive lost packets (0 is ignored).
    pub fn record(&mut self, len: u64) {
        let idx = match len {
            0 => return,
            1..=5 => (len - 1) as usize,
            6..=10 => 5,
            _ => 6,
        };
        self.counts[idx] = self.counts[idx].saturating_add(1);
    }

    /// Total number of runs recorded.
    pub fn runs(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }
}

/// Packet delay variation in µs, bucketed 0–5, 5–10, 10–20, 20–40, 40–80,
/// 80–160 and 160+ ms (lower bound inclusive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DelayHistogram {
    /// Counts per bucket, in the order of [`DelayHistogram::BUCKETS`].
    pub counts: [u32; 7],
}

impl DelayHistogram {
    /// Bucket labels (milliseconds).
    pub const BUCKETS: [&'static str; 7] =
        ["0-5", "5-10", "10-20", "20-40", "40-80", "80-160", "160+"];
    /// Upper bounds (exclusive) of the first six buckets, in µs.
    const UPPER_US: [u64; 6] = [5_000, 10_000, 20_000, 40_000, 80_000, 160_000];

    /// Records one delay-variation sample of `us` microseconds.
    pub fn record_us(&mut self, us: u64) {
        let idx = Self::UPPER_US
            .iter()
            .position(|&b| us < b)
            .unwrap_or(Self::UPPER_US.len());
        self.counts[idx] = self.counts[idx].saturating_add(1);
    }

    /// Total number of samples recorded.
    pub fn samples(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_runs_bucket() {
        let mut h = LossRunHistogram::default();
        for len in [0, 1, 1, 2, 5, 6, 10, 11, 70_000] {
            h.record(len);
        }
        assert_eq!(h.counts, [2, 1, 0, 0, 1, 2, 2]);
        assert_eq!(h.runs(), 8);
    }

    #[test]
    fn delay_buckets_edges() {
        let mut h = DelayHistogram::default();
        for us in [0, 4_999, 5_000, 19_999, 20_000, 159_999, 160_000, u64::MAX] {
            h.record_us(us);
        }
        assert_eq!(h.counts, [2, 1, 1, 1, 0, 1, 2]);
        assert_eq!(h.samples(), 8);
    }
}
