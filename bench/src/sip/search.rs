//! The call-rate search: double the rate from a start value until a step
//! fails (or the maximum passes), then bisect between the highest rate that
//! passed and the lowest that failed until they are within a resolution.
//!
//! Sans-IO: the caller runs each step and reports whether it passed.
//!
//! ```
//! use bench::sip::search::RateSearch;
//! let mut s = RateSearch::new(100, 1_000, 0.1);
//! while let Some(rate) = s.next_rate() {
//!     s.record(rate, rate <= 650); // a target that carries 650 calls/s
//! }
//! assert!(s.best().unwrap() >= 600 && s.best().unwrap() <= 650);
//! ```

/// State of one search.
#[derive(Debug, Clone)]
pub struct RateSearch {
    start: u32,
    max: u32,
    resolution: f64,
    best: Option<u32>,
    lowest_failed: Option<u32>,
}

impl RateSearch {
    /// A search from `start` calls/s up to `max`, stopping when the highest
    /// passing and the lowest failing rate are within `resolution` (a
    /// fraction of the failing rate, e.g. 0.1) of each other.
    pub fn new(start: u32, max: u32, resolution: f64) -> Self {
        let max = max.max(1);
        Self {
            start: start.clamp(1, max),
            max,
            resolution: resolution.clamp(0.001, 0.5),
            best: None,
            lowest_failed: None,
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u32> {
        let lo = self.best.unwrap_or(0);
        match self.lowest_failed {
            None => match self.best {
                None => Some(self.start),
                Some(b) if b >= self.max => None,
                Some(b) => Some(b.saturating_mul(2).min(self.max)),
            },
            Some(hi) => {
                let gap = hi.saturating_sub(lo);
                let tolerance = ((f64::from(hi) * self.resolution).ceil() as u32).max(1);
                (gap > tolerance).then(|| lo + gap / 2)
            }
        }
    }

    /// Records the outcome of a step at `rate`.
    pub fn record(&mut self, rate: u32, passed: bool) {
        if passed {
            self.best = Some(self.best.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_failed = Some(self.lowest_failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<u32> {
        self.best
    }

    /// The lowest rate that failed so far.
    pub fn lowest_failed(&self) -> Option<u32> {
        self.lowest_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u32, max: u32, capacity: u32) -> (Option<u32>, Vec<u32>) {
        let mut s = RateSearch::new(start, max, 0.1);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            assert!(tried.len() < 40, "search does not end: {tried:?}");
            tried.push(rate);
            s.record(rate, rate <= capacity);
        }
        (s.best(), tried)
    }

    #[test]
    fn doubles_then_bisects() {
        let (best, tried) = run(500, 20_000, 5_300);
        assert_eq!(&tried[..5], &[500, 1000, 2000, 4000, 8000]);
        let best = best.unwrap();
        assert!((4_800..=5_300).contains(&best), "{best} via {tried:?}");
        assert!(tried.len() <= 10, "{tried:?}");
    }

    #[test]
    fn stops_at_the_maximum_when_everything_passes() {
        assert_eq!(
            run(500, 3_000, 1_000_000),
            (Some(3_000), vec![500, 1000, 2000, 3000])
        );
    }

    #[test]
    fn searches_below_the_start_when_it_fails() {
        let (best, tried) = run(1_000, 20_000, 130);
        let best = best.unwrap();
        assert!((118..=130).contains(&best), "{best} via {tried:?}");
    }

    #[test]
    fn reports_nothing_when_no_rate_passes() {
        let (best, tried) = run(8, 100, 0);
        assert_eq!(best, None);
        assert_eq!(tried, [8, 4, 2, 1]);
    }
}
