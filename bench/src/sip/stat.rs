//! sipp's CSV files: `-trace_stat` (one `;`-separated row every `-fd`
//! seconds, the last row written at exit) and `-trace_rtt` (one row per
//! response-time sample with `-rtt_freq 1`).
//!
//! Only the cumulative `(C)` columns of the *last* stat row are read: they
//! cover the whole run. sipp's date columns contain TABs; they are not
//! needed and never parsed. Response times in both files have sipp's 1 ms
//! clock resolution (a reply in under 1 ms is a 0).

use std::time::Duration;

/// Why a sipp CSV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// No header, or a header and no data row.
    #[error("no data row (sipp wrote only {lines} line(s))")]
    Empty {
        /// Non-empty lines found.
        lines: usize,
    },
    /// A column this benchmark needs is not in the header.
    #[error("column {0:?} is missing from the header")]
    MissingColumn(String),
    /// A value does not parse.
    #[error("column {column:?}: cannot parse {value:?}")]
    BadValue {
        /// The column.
        column: String,
        /// The text found.
        value: String,
    },
}

/// The cumulative figures of a `-trace_stat` file (its last row).
#[derive(Debug, Clone, PartialEq)]
pub struct StatSummary {
    /// `TargetRate`: the rate asked for (calls per `-rp` period).
    pub target_rate: f64,
    /// `CallRate(C)`: calls created per second over the whole run,
    /// including the hold time of the last calls (so below the rate the
    /// calls were placed at).
    pub call_rate: f64,
    /// `OutgoingCall(C)`: calls placed.
    pub outgoing_calls: u64,
    /// `SuccessfulCall(C)`.
    pub successful_calls: u64,
    /// `FailedCall(C)`.
    pub failed_calls: u64,
    /// `CurrentCall`: calls in progress when the row was written.
    pub current_calls: u64,
    /// `Retransmissions(C)`: SIP retransmissions sipp sent.
    pub retransmissions: u64,
    /// `ElapsedTime(C)` (whole seconds in sipp's format).
    pub elapsed: Duration,
    /// `ResponseTimeRepartition1_*`: the histogram of the first response
    /// time (`rtd="1"`), if the scenario defines one.
    pub repartition: Vec<RepartitionBin>,
}

/// One bin of sipp's response-time repartition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepartitionBin {
    /// Upper bound (exclusive, ms); `None` for the last, open bin (`>=`).
    pub below_ms: Option<u64>,
    /// Samples in the bin.
    pub count: u64,
}

impl StatSummary {
    /// Parses the text of a `-trace_stat` file.
    ///
    /// # Errors
    ///
    /// [`CsvError`] when there is no data row, a needed column is missing
    /// or a value does not parse.
    pub fn parse(text: &str) -> Result<Self, CsvError> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = match lines.next() {
            Some(h) => h.split(';').collect(),
            None => return Err(CsvError::Empty { lines: 0 }),
        };
        // sipp writes the file through a stdio buffer, so while it runs the
        // last line can be a partial row: take the last complete one.
        let rows: Vec<&str> = lines.collect();
        let complete = rows
            .iter()
            .rev()
            .find(|l| l.split(';').count() >= header.len())
            .or(rows.last())
            .ok_or(CsvError::Empty { lines: 1 })?;
        let row: Vec<&str> = complete.split(';').collect();
        let field = |name: &str| -> Result<&str, CsvError> {
            header
                .iter()
                .position(|h| *h == name)
                .map(|i| row.get(i).copied().unwrap_or("").trim())
                .ok_or_else(|| CsvError::MissingColumn(name.to_owned()))
        };
        let number = |name: &str| -> Result<u64, CsvError> {
            let v = field(name)?;
            v.parse().map_err(|_| bad(name, v))
        };
        let float = |name: &str| -> Result<f64, CsvError> {
            let v = field(name)?;
            v.parse().map_err(|_| bad(name, v))
        };
        let elapsed = {
            let v = field("ElapsedTime(C)")?;
            parse_clock(v).ok_or_else(|| bad("ElapsedTime(C)", v))?
        };
        let mut repartition = Vec::new();
        const PREFIX: &str = "ResponseTimeRepartition1_";
        for (i, name) in header.iter().enumerate() {
            let Some(bound) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let below_ms = if let Some(ms) = bound.strip_prefix('<') {
                Some(ms.parse().map_err(|_| bad(name, bound))?)
            } else if bound.starts_with(">=") {
                None
            } else {
                return Err(bad(name, bound));
            };
            let v = row.get(i).copied().unwrap_or("").trim();
            let count = v.parse().map_err(|_| bad(name, v))?;
            repartition.push(RepartitionBin { below_ms, count });
        }
        Ok(Self {
            target_rate: float("TargetRate")?,
            call_rate: float("CallRate(C)")?,
            outgoing_calls: number("OutgoingCall(C)")?,
            successful_calls: number("SuccessfulCall(C)")?,
            failed_calls: number("FailedCall(C)")?,
            current_calls: number("CurrentCall")?,
            retransmissions: number("Retransmissions(C)")?,
            elapsed,
            repartition,
        })
    }

    /// First responses received (`rtd 1`: the 200s to INVITEs here): the
    /// sum of the repartition bins.
    pub fn responses(&self) -> u64 {
        self.repartition.iter().map(|b| b.count).sum()
    }

    /// The upper bound (ms) of the repartition bin holding quantile `q`
    /// (0–1) of the first response time: "p99 < this". `None` without
    /// samples, or when the quantile falls in the open last bin.
    pub fn repartition_quantile_below_ms(&self, q: f64) -> Option<u64> {
        let total = self.responses();
        if total == 0 {
            return None;
        }
        let rank = rank(q, total as usize) as u64 + 1;
        let mut seen = 0;
        for bin in &self.repartition {
            seen += bin.count;
            if seen >= rank {
                return bin.below_ms;
            }
        }
        None
    }
}

/// One line of a `-trace_rtt` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttSample {
    /// `Date_ms`: when the response arrived, ms since sipp started.
    pub at_ms: f64,
    /// `response_time_ms`.
    pub response_ms: f64,
    /// `rtd_no`: which response-time counter (1 = INVITE → 200 here).
    pub rtd: u32,
}

/// Parses the text of a `-trace_rtt` file (header
/// `Date_ms;response_time_ms;rtd_no`).
///
/// # Errors
///
/// [`CsvError`] on a missing header column or a value that does not parse.
pub fn parse_rtt(text: &str) -> Result<Vec<RttSample>, CsvError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<&str> = header.split(';').map(str::trim).collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| CsvError::MissingColumn(name.to_owned()))
    };
    let (at, rt, no) = (col("Date_ms")?, col("response_time_ms")?, col("rtd_no")?);
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(';').map(str::trim).collect();
            let cell = |i: usize, name: &str| {
                let v = cells.get(i).copied().unwrap_or("");
                v.parse::<f64>().map_err(|_| bad(name, v))
            };
            let rtd = cells.get(no).copied().unwrap_or("");
            Ok(RttSample {
                at_ms: cell(at, "Date_ms")?,
                response_ms: cell(rt, "response_time_ms")?,
                rtd: rtd.parse().map_err(|_| bad("rtd_no", rtd))?,
            })
        })
        .collect()
}

/// Response-time percentiles of one counter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median (ms, nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (ms, nearest rank).
    pub p99_ms: f64,
    /// Largest sample (ms).
    pub max_ms: f64,
}

/// Nearest-rank percentiles of counter `rtd`'s samples; `None` without
/// samples.
pub fn percentiles(samples: &[RttSample], rtd: u32) -> Option<Percentiles> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.rtd == rtd)
        .map(|s| s.response_ms)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    Some(Percentiles {
        count: v.len(),
        p50_ms: v[rank(0.5, v.len())],
        p99_ms: v[rank(0.99, v.len())],
        max_ms: v[v.len() - 1],
    })
}

/// The rate (per second) at which counter `rtd` completed: samples − 1 over
/// the time between the first and the last. For `rtd` 1 (INVITE → 200)
/// this is the call rate the target actually carried, whatever sipp was
/// asked for. `None` with fewer than two samples or no time between them.
pub fn completion_rate(samples: &[RttSample], rtd: u32) -> Option<f64> {
    let (mut n, mut first, mut last) = (0usize, f64::INFINITY, f64::NEG_INFINITY);
    for s in samples.iter().filter(|s| s.rtd == rtd) {
        n += 1;
        first = first.min(s.at_ms);
        last = last.max(s.at_ms);
    }
    (n >= 2 && last > first).then(|| (n - 1) as f64 * 1000.0 / (last - first))
}

/// Index of quantile `q` among `n` sorted values (nearest rank).
fn rank(q: f64, n: usize) -> usize {
    let r = (q * n as f64).ceil() as usize;
    r.clamp(1, n) - 1
}

fn bad(column: &str, value: &str) -> CsvError {
    CsvError::BadValue {
        column: column.to_owned(),
        value: value.to_owned(),
    }
}

/// sipp's `HH:MM:SS` (elapsed) or `HH:MM:SS:uuuuuu` (response times).
fn parse_clock(v: &str) -> Option<Duration> {
    let mut parts = v.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: u64 = parts.next()?.parse().ok()?;
    let micros: u64 = match parts.next() {
        Some(u) => u.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || m >= 60 || s >= 60 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from sipp 3.6.1 (Debian `sip-tester`) with this module's
    // scenarios: 300 calls at 100 calls/s uac → uas on loopback, and 5
    // calls towards a port where nothing answers (`-recv_timeout 1000`).
    const OK_STAT: &str = include_str!("testdata/ok_stat.csv");
    const OK_RTT: &str = include_str!("testdata/ok_rtt.csv");
    const FAIL_STAT: &str = include_str!("testdata/fail_stat.csv");

    #[test]
    fn reads_the_cumulative_row_of_a_successful_run() {
        let s = StatSummary::parse(OK_STAT).unwrap();
        assert_eq!(s.target_rate, 100.0);
        assert_eq!(s.outgoing_calls, 300);
        assert_eq!(s.successful_calls, 300);
        assert_eq!(s.failed_calls, 0);
        assert_eq!(s.current_calls, 0);
        assert_eq!(s.retransmissions, 0);
        assert!(s.call_rate > 90.0 && s.call_rate < 100.0, "{}", s.call_rate);
        assert_eq!(s.elapsed, Duration::from_secs(3));
        let bounds: Vec<_> = s.repartition.iter().map(|b| b.below_ms).collect();
        assert_eq!(
            bounds,
            [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert_eq!(s.repartition.iter().map(|b| b.count).sum::<u64>(), 300);
        assert_eq!(s.repartition_quantile_below_ms(0.5), Some(1));
    }

    #[test]
    fn reads_failed_calls() {
        let s = StatSummary::parse(FAIL_STAT).unwrap();
        assert_eq!(s.outgoing_calls, 5);
        assert_eq!(s.failed_calls, 5);
        assert_eq!(s.successful_calls, 0);
        assert_eq!(s.repartition_quantile_below_ms(0.99), None);
    }

    #[test]
    fn rtt_samples_give_percentiles_and_the_carried_rate() {
        let samples = parse_rtt(OK_RTT).unwrap();
        assert_eq!(samples.len(), 600, "INVITE→200 and BYE→200 of 300 calls");
        let p = percentiles(&samples, 1).unwrap();
        assert_eq!(p.count, 300);
        assert!(p.p50_ms <= p.p99_ms && p.p99_ms <= p.max_ms);
        // The repartition in the stat file agrees with the samples.
        let stat = StatSummary::parse(OK_STAT).unwrap();
        assert!(p.p50_ms < stat.repartition_quantile_below_ms(0.5).unwrap() as f64);
        let rate = completion_rate(&samples, 1).unwrap();
        assert!((95.0..=105.0).contains(&rate), "{rate}");
        assert!(percentiles(&samples, 3).is_none());
    }

    #[test]
    fn nearest_rank() {
        let s: Vec<RttSample> = (1..=100)
            .map(|i| RttSample {
                at_ms: f64::from(i),
                response_ms: f64::from(i),
                rtd: 1,
            })
            .collect();
        let p = percentiles(&s, 1).unwrap();
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(completion_rate(&s, 1), Some(1000.0));
        assert_eq!(completion_rate(&s[..1], 1), None);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(StatSummary::parse(""), Err(CsvError::Empty { lines: 0 }));
        let header_only = OK_STAT.lines().next().unwrap();
        assert_eq!(
            StatSummary::parse(header_only),
            Err(CsvError::Empty { lines: 1 })
        );
        assert!(matches!(
            StatSummary::parse("a;b\n1;2\n"),
            Err(CsvError::MissingColumn(_))
        ));
        let mangled = OK_STAT.replace(";300;", ";three hundred;");
        assert!(matches!(
            StatSummary::parse(&mangled),
            Err(CsvError::BadValue { .. })
        ));
        // A truncated row alone is an error…
        let header = OK_STAT.lines().next().unwrap();
        assert!(StatSummary::parse(&format!("{header}\n2026;1")).is_err());
        // …but after complete rows (sipp mid-write) the last complete one
        // is read.
        let partial = format!("{OK_STAT}2026-11-25\t12:51;0;0;");
        assert_eq!(
            StatSummary::parse(&partial).unwrap(),
            StatSummary::parse(OK_STAT).unwrap()
        );
        assert_eq!(StatSummary::parse(OK_STAT).unwrap().responses(), 300);
        assert!(parse_rtt("Date_ms;response_time_ms;rtd_no\n1;x;1\n").is_err());
        assert!(parse_rtt("nothing\n").is_err());
        assert_eq!(parse_rtt(""), Ok(Vec::new()));
        assert_eq!(parse_clock("00:61:00"), None);
        assert_eq!(
            parse_clock("00:00:01:250000"),
            Some(Duration::from_millis(1250))
        );
    }
}
