//! Network impairment models: Gilbert–Elliott packet loss and a delay model
//! with packet delay variation, spikes and optional reordering.
//!
//! All randomness comes from the caller's RNG; nothing here reads a clock.

use rand::Rng;

/// A two-state Gilbert–Elliott loss model, stepped once per packet.
///
/// The chain moves Good → Bad with probability `p` and Bad → Good with
/// probability `r` before each packet; the packet is then lost with
/// probability `loss_good` or `loss_bad` depending on the state it is in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from Good to Bad before a packet (0–1).
    pub p: f64,
    /// Probability of moving from Bad to Good before a packet (0–1).
    pub r: f64,
    /// Loss probability while in the Good state (0–1).
    pub loss_good: f64,
    /// Loss probability while in the Bad state (0–1).
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// No loss at all.
    pub const CLEAN: Self = Self {
        p: 0.0,
        r: 1.0,
        loss_good: 0.0,
        loss_bad: 0.0,
    };

    /// Independent (Bernoulli) loss with probability `rate`.
    pub fn random(rate: f64) -> Self {
        Self {
            p: 0.0,
            r: 1.0,
            loss_good: rate,
            loss_bad: 0.0,
        }
    }

    /// The long-run fraction of packets lost: with the Bad state's stationary
    /// probability `πB = p / (p + r)`, it is `πG·loss_good + πB·loss_bad`.
    /// A chain that never moves (`p + r = 0`) stays Good.
    pub fn stationary_loss(&self) -> f64 {
        let denom = self.p + self.r;
        if denom <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p / denom;
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }

    /// Mean length of a stay in the Bad state, in packets (`1 / r`), or
    /// infinity if the chain never leaves it.
    pub fn mean_burst_packets(&self) -> f64 {
        1.0 / self.r
    }

    /// Checks that every parameter is a probability.
    ///
    /// # Errors
    ///
    /// The name of the first parameter outside 0–1 (or NaN).
    pub fn validate(&self) -> Result<(), &'static str> {
        for (name, v) in [
            ("p", self.p),
            ("r", self.r),
            ("loss_good", self.loss_good),
            ("loss_bad", self.loss_bad),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(name);
            }
        }
        Ok(())
    }
}

/// The running state of one [`GilbertElliott`] chain (starts Good).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossState {
    bad: bool,
}

impl LossState {
    /// Steps the chain for one packet and returns `true` if it is lost.
    pub fn step<R: Rng + ?Sized>(&mut self, model: &GilbertElliott, rng: &mut R) -> bool {
        let flip = if self.bad { model.r } else { model.p };
        if flip > 0.0 && rng.gen_bool(flip.min(1.0)) {
            self.bad = !self.bad;
        }
        let loss = if self.bad {
            model.loss_bad
        } else {
            model.loss_good
        };
        loss > 0.0 && rng.gen_bool(loss.min(1.0))
    }

    /// True while the chain is in the Bad state.
    pub fn is_bad(&self) -> bool {
        self.bad
    }
}

/// How each leg's loss model is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum LossPreset {
    /// No loss.
    Clean,
    /// Independent random loss; each leg draws its rate uniformly from
    /// `min..=max` (fractions, e.g. 0.01–0.03).
    Lossy {
        /// Lowest per-leg loss rate (0–1).
        min: f64,
        /// Highest per-leg loss rate (0–1).
        max: f64,
    },
    /// Bursty loss: [`LossPreset::BURSTY`] on every leg.
    Bursty,
    /// The given model on every leg.
    Custom(GilbertElliott),
}

impl LossPreset {
    /// The "lossy 1–3 % random" preset.
    pub const LOSSY: Self = Self::Lossy {
        min: 0.01,
        max: 0.03,
    };

    /// The bursty model: bursts of mean length 4 packets (`r = 0.25`)
    /// entered with `p = 0.01`, 80 % loss inside a burst, none outside.
    /// Stationary loss ≈ 3.1 %.
    pub const BURSTY: GilbertElliott = GilbertElliott {
        p: 0.01,
        r: 0.25,
        loss_good: 0.0,
        loss_bad: 0.8,
    };

    /// Parses a preset name: `clean`, `lossy` or `bursty`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "clean" => Some(Self::Clean),
            "lossy" => Some(Self::LOSSY),
            "bursty" => Some(Self::Bursty),
            _ => None,
        }
    }

    /// Draws the model for one leg.
    pub fn for_leg<R: Rng + ?Sized>(&self, rng: &mut R) -> GilbertElliott {
        match *self {
            Self::Clean => GilbertElliott::CLEAN,
            Self::Lossy { min, max } => {
                let rate = if max > min {
                    rng.gen_range(min..=max)
                } else {
                    min
                };
                GilbertElliott::random(rate)
            }
            Self::Bursty => Self::BURSTY,
            Self::Custom(m) => m,
        }
    }

    /// Checks the preset's parameters.
    ///
    /// # Errors
    ///
    /// The name of the first invalid parameter.
    pub fn validate(&self) -> Result<(), &'static str> {
        match *self {
            Self::Clean | Self::Bursty => Ok(()),
            Self::Lossy { min, max } => {
                if !(0.0..=1.0).contains(&min) || !(0.0..=1.0).contains(&max) || min > max {
                    Err("loss.lossy range")
                } else {
                    Ok(())
                }
            }
            Self::Custom(m) => m.validate(),
        }
    }
}

/// One-way network delay: a per-leg base delay, random packet delay
/// variation (exponentially distributed), occasional delay spikes that drain
/// like a queue, and optionally reordering and duplication.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterModel {
    /// Per-leg base one-way delay drawn uniformly from this range (ms).
    pub base_delay_ms: (f64, f64),
    /// Mean of the exponential per-packet delay variation (ms); 0 disables.
    pub pdv_mean_ms: f64,
    /// Probability per packet that a delay spike starts.
    pub spike_probability: f64,
    /// Height of a spike drawn uniformly from this range (ms). The next
    /// packets see the spike minus the time elapsed since it began, as
    /// packets queued behind a stall do.
    pub spike_ms: (f64, f64),
    /// If false, arrival order equals send order (a FIFO path: a packet is
    /// held until the previous one has arrived). If true, a packet whose
    /// variation exceeds its successor's by more than the packet interval
    /// arrives after it.
    pub reorder: bool,
    /// Probability that a delivered packet arrives a second time (0–1).
    pub duplicate_probability: f64,
}

impl JitterModel {
    /// A constant 20 ms delay: no jitter, no reordering.
    pub const NONE: Self = Self {
        base_delay_ms: (20.0, 20.0),
        pdv_mean_ms: 0.0,
        spike_probability: 0.0,
        spike_ms: (0.0, 0.0),
        reorder: false,
        duplicate_probability: 0.0,
    };

    /// A typical managed network: 10–60 ms base, 2 ms mean variation, a
    /// 60–150 ms spike every 2,000 packets on average, FIFO.
    pub const TYPICAL: Self = Self {
        base_delay_ms: (10.0, 60.0),
        pdv_mean_ms: 2.0,
        spike_probability: 0.0005,
        spike_ms: (60.0, 150.0),
        reorder: false,
        duplicate_probability: 0.0,
    };

    /// A poor path: 8 ms mean variation with reordering and 0.1 %
    /// duplicates.
    pub const ROUGH: Self = Self {
        base_delay_ms: (20.0, 80.0),
        pdv_mean_ms: 8.0,
        spike_probability: 0.001,
        spike_ms: (80.0, 200.0),
        reorder: true,
        duplicate_probability: 0.001,
    };

    /// Checks that ranges are ordered and probabilities lie in 0–1.
    ///
    /// # Errors
    ///
    /// The name of the first invalid parameter.
    pub fn validate(&self) -> Result<(), &'static str> {
        let (lo, hi) = self.base_delay_ms;
        if !(lo >= 0.0 && hi >= lo && hi.is_finite()) {
            return Err("jitter.base_delay_ms");
        }
        if !(self.pdv_mean_ms >= 0.0 && self.pdv_mean_ms.is_finite()) {
            return Err("jitter.pdv_mean_ms");
        }
        if !(0.0..=1.0).contains(&self.spike_probability) {
            return Err("jitter.spike_probability");
        }
        let (slo, shi) = self.spike_ms;
        if !(slo >= 0.0 && shi >= slo && shi.is_finite()) {
            return Err("jitter.spike_ms");
        }
        if !(0.0..=1.0).contains(&self.duplicate_probability) {
            return Err("jitter.duplicate_probability");
        }
        Ok(())
    }
}

/// The running delay state of one leg.
#[derive(Clone, Debug)]
pub struct PathState {
    base_ns: u64,
    spike_left_ns: u64,
    last_send_ns: u64,
    last_arrival_ns: u64,
}

impl PathState {
    /// Starts a leg, drawing its base delay.
    pub fn new<R: Rng + ?Sized>(model: &JitterModel, rng: &mut R) -> Self {
        let (lo, hi) = model.base_delay_ms;
        let base = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
        Self {
            base_ns: ms_to_us_ns(base),
            spike_left_ns: 0,
            last_send_ns: 0,
            last_arrival_ns: 0,
        }
    }

    /// The base one-way delay of this leg in nanoseconds.
    pub fn base_ns(&self) -> u64 {
        self.base_ns
    }

    /// Returns the arrival time (ns, a whole number of microseconds) of a
    /// packet sent at `send_ns`. Calls must come in send order.
    pub fn arrival<R: Rng + ?Sized>(
        &mut self,
        model: &JitterModel,
        send_ns: u64,
        rng: &mut R,
    ) -> u64 {
        let elapsed = send_ns.saturating_sub(self.last_send_ns);
        self.last_send_ns = send_ns;
        self.spike_left_ns = self.spike_left_ns.saturating_sub(elapsed);
        if model.spike_probability > 0.0 && rng.gen_bool(model.spike_probability) {
            let (lo, hi) = model.spike_ms;
            let h = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
            self.spike_left_ns = self.spike_left_ns.max(ms_to_us_ns(h));
        }
        let pdv = if model.pdv_mean_ms > 0.0 {
            // Inverse-CDF sampling of an exponential distribution.
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            ms_to_us_ns(-u.ln() * model.pdv_mean_ms)
        } else {
            0
        };
        let mut at = send_ns + self.base_ns + pdv + self.spike_left_ns;
        if !model.reorder && at <= self.last_arrival_ns {
            at = self.last_arrival_ns + 1_000;
        }
        self.last_arrival_ns = self.last_arrival_ns.max(at);
        at
    }
}

/// Rounds milliseconds to whole microseconds, returned in nanoseconds (the
/// capture is written with microsecond resolution).
pub(crate) fn ms_to_us_ns(ms: f64) -> u64 {
    ((ms * 1000.0).round().max(0.0) as u64) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// Runs `n` packets through `model` and returns the observed loss rate.
    fn observed(model: &GilbertElliott, n: u64, seed: u64) -> f64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = LossState::default();
        let lost = (0..n).filter(|_| state.step(model, &mut rng)).count();
        lost as f64 / n as f64
    }

    /// Long-run loss rate of the bursty preset against its stationary rate.
    ///
    /// Tolerance: the loss indicators are correlated through the chain.
    /// With πB = p/(p+r) ≈ 0.0385, h = loss_bad = 0.8, π = h·πB ≈ 0.0308 and
    /// the chain's second eigenvalue λ = 1 − p − r = 0.74, the variance of the
    /// mean of n indicators is
    /// [π(1 − π) + 2·h²·πB(1 − πB)·λ/(1 − λ)] / n ≈ 0.165 / n,
    /// so σ ≈ 0.00041 for n = 10⁶. We allow 0.003 (≈ 7 σ): a correct chain
    /// passes for any seed, while a swapped p/r (stationary ≈ 0.77) or an
    /// ignored loss_bad (≈ 0.038) fails.
    #[test]
    fn bursty_long_run_rate_matches_stationary() {
        let m = LossPreset::BURSTY;
        let expected = m.stationary_loss();
        assert!((expected - 0.01 / 0.26 * 0.8).abs() < 1e-12);
        let got = observed(&m, 1_000_000, 0x5eed);
        assert!(
            (got - expected).abs() < 0.003,
            "observed {got}, stationary {expected}"
        );
    }

    /// Bernoulli loss: σ = sqrt(0.02 · 0.98 / 10⁶) ≈ 0.00014; tolerance
    /// 0.001 is ≈ 7 σ.
    #[test]
    fn random_loss_rate() {
        let m = GilbertElliott::random(0.02);
        let got = observed(&m, 1_000_000, 42);
        assert!((got - 0.02).abs() < 0.001, "observed {got}");
        assert_eq!(observed(&GilbertElliott::CLEAN, 10_000, 1), 0.0);
    }

    #[test]
    fn presets_parse_and_validate() {
        assert_eq!(LossPreset::from_name("bursty"), Some(LossPreset::Bursty));
        assert_eq!(LossPreset::from_name("nope"), None);
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            let m = LossPreset::LOSSY.for_leg(&mut rng);
            assert!((0.01..=0.03).contains(&m.stationary_loss()));
        }
        assert_eq!(
            GilbertElliott {
                p: 1.5,
                ..GilbertElliott::CLEAN
            }
            .validate(),
            Err("p")
        );
        assert!(JitterModel::TYPICAL.validate().is_ok());
        assert!(JitterModel::ROUGH.validate().is_ok());
    }

    #[test]
    fn fifo_path_never_reorders() {
        let mut rng = SmallRng::seed_from_u64(9);
        let model = JitterModel {
            reorder: false,
            ..JitterModel::ROUGH
        };
        let mut path = PathState::new(&model, &mut rng);
        let mut last = 0;
        for i in 0..10_000u64 {
            let at = path.arrival(&model, i * 20_000_000, &mut rng);
            assert!(at > last);
            assert!(at >= i * 20_000_000 + path.base_ns());
            assert_eq!(at % 1000, 0);
            last = at;
        }
    }

    #[test]
    fn rough_path_reorders_sometimes() {
        let mut rng = SmallRng::seed_from_u64(9);
        let model = JitterModel {
            pdv_mean_ms: 15.0,
            ..JitterModel::ROUGH
        };
        let mut path = PathState::new(&model, &mut rng);
        let arrivals: Vec<u64> = (0..10_000u64)
            .map(|i| path.arrival(&model, i * 20_000_000, &mut rng))
            .collect();
        let inversions = arrivals.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 10, "{inversions}");
    }
}
