//! The two measurements of one target:
//!
//! 1. **Rate**: for each rate the [`RateSearch`] proposes, a fresh target
//!    and UAS, then a UAC campaign of `rate × step` calls with a short hold.
//!    A step passes when sipp exits 0, `FailedCall(C)` is 0, every call
//!    succeeded, and the INVITE → 200 completions kept up with the rate
//!    (at least [`CARRIED_FRACTION`] of it). The result is the highest
//!    passing rate and its INVITE → 200 percentiles.
//! 2. **Memory**: a fresh target, N calls set up at a moderate rate and
//!    held (a long pause before BYE), the target's memory before and while
//!    they are held; bytes per dialog = delta / N.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::Error;
use super::procmem::{self, GroupMemory};
use super::search::RateSearch;
use super::sipp::{self, Campaign, Endpoint, Sipp};
use super::stat::{self, Percentiles};
use super::target::{MemoryMetric, Purpose, Target};

/// A step passes only if calls completed at this fraction of the asked
/// rate or more (a target that queues calls has not carried the rate).
pub const CARRIED_FRACTION: f64 = 0.9;

/// Dialogs for the memory measurement are set up at this fraction of the
/// rate the target carried in the rate search (at most).
pub const SETUP_FRACTION: f64 = 0.75;

/// The least receive timeout of the memory measurement's calls (ms).
pub const HOLD_RECV_TIMEOUT_MS: u64 = 30_000;

/// How to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// First rate tried (calls/s).
    pub start_rate: u32,
    /// Highest rate tried.
    pub max_rate: u32,
    /// The search stops when passing and failing rates are this close (a
    /// fraction of the failing one).
    pub resolution: f64,
    /// Calls are placed for this long at each rate.
    pub step: Duration,
    /// Hold time of each call in the rate search (ms).
    pub hold_ms: u64,
    /// A call fails when an expected message is this late (ms).
    pub recv_timeout_ms: u64,
    /// Concurrent dialogs to hold for the memory measurement.
    pub dialogs: u64,
    /// Rate at which they are set up (calls/s).
    pub dialog_rate: u32,
    /// The sipp UAC.
    pub uac: Endpoint,
    /// The sipp UAS.
    pub uas: Endpoint,
}

/// One step of the rate search.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// Rate asked of sipp (calls/s).
    pub rate: u32,
    /// Calls placed.
    pub calls: u64,
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)`.
    pub failed: u64,
    /// `Retransmissions(C)` sent by the UAC.
    pub retransmissions: u64,
    /// Rate at which INVITEs completed with a 200 (calls/s).
    pub carried_cps: Option<f64>,
    /// sipp's exit code (`None`: killed).
    pub exit_code: Option<i32>,
    /// INVITE → 200 response times.
    pub response_ms: Option<Percentiles>,
    /// Whether the step passed.
    pub passed: bool,
    /// Why it failed, or sipp's first error lines.
    pub note: Option<String>,
    /// Wall time of the step, target start to stop (s).
    pub seconds: f64,
}

/// The rate search's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RateResult {
    /// Highest rate with no failed call (calls/s); `None` if none passed.
    pub cps: Option<u32>,
    /// Failed calls at that rate (0 by construction; kept explicit).
    pub failed_calls: u64,
    /// INVITE → 200 median at that rate (ms, sipp's 1 ms resolution).
    pub response_ms_p50: Option<f64>,
    /// INVITE → 200 99th percentile at that rate (ms).
    pub response_ms_p99: Option<f64>,
    /// Lowest rate that failed, if any.
    pub first_failing_rate: Option<u32>,
    /// Every step in order.
    pub steps: Vec<Step>,
    /// Wall time of the search (s).
    pub seconds: f64,
}

/// The memory measurement's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryResult {
    /// Dialogs asked for.
    pub dialogs_requested: u64,
    /// Dialogs set up and held when memory was read.
    pub dialogs_held: u64,
    /// Why fewer than requested were attempted, if so.
    pub limited_by: Option<String>,
    /// Setup rate (calls/s).
    pub setup_rate: u32,
    /// How the target's memory was summed.
    pub metric: MemoryMetric,
    /// Target memory once started, before any call.
    pub before: GroupMemory,
    /// Target memory while the dialogs were held.
    pub during: GroupMemory,
    /// (during − before) / dialogs held, in the chosen metric (bytes).
    pub bytes_per_dialog: Option<f64>,
    /// Wall time of the measurement (s).
    pub seconds: f64,
}

/// Runs the rate search against `target`, one fresh target per step, in
/// subdirectories of `dir`. `progress` sees each step as it ends.
///
/// # Errors
///
/// When the target or sipp cannot be started, or sipp leaves no stat file.
/// A step whose calls fail is a result, not an error.
pub fn measure_rate(
    target: &dyn Target,
    sipp: &Sipp,
    settings: &Settings,
    dir: &Path,
    progress: &mut dyn FnMut(&Step),
) -> Result<RateResult, Error> {
    let started = Instant::now();
    let mut search = RateSearch::new(settings.start_rate, settings.max_rate, settings.resolution);
    let mut steps: Vec<Step> = Vec::new();
    while let Some(rate) = search.next_rate() {
        let step_dir = subdir(dir, &format!("{}-rate-{rate}", target.label()))?;
        let step = run_step(target, sipp, settings, rate, &step_dir)?;
        search.record(rate, step.passed);
        progress(&step);
        steps.push(step);
    }
    let best = search.best();
    let at_best = steps.iter().find(|s| s.passed && Some(s.rate) == best);
    Ok(RateResult {
        cps: best,
        failed_calls: at_best.map_or(0, |s| s.failed),
        response_ms_p50: at_best.and_then(|s| s.response_ms).map(|p| p.p50_ms),
        response_ms_p99: at_best.and_then(|s| s.response_ms).map(|p| p.p99_ms),
        first_failing_rate: search.lowest_failed(),
        seconds: started.elapsed().as_secs_f64(),
        steps,
    })
}

/// Holds `settings.dialogs` calls (fewer if the target says it cannot hold
/// that many) through a fresh `target` and measures its memory. They are
/// set up at `settings.dialog_rate`, or at [`SETUP_FRACTION`] of
/// `carried_cps` (the rate search's result) if that is lower.
///
/// # Errors
///
/// When a process cannot be started, a call fails while the dialogs are
/// set up, or they are not all up in time.
pub fn measure_memory(
    target: &dyn Target,
    sipp: &Sipp,
    settings: &Settings,
    dir: &Path,
    carried_cps: Option<u32>,
) -> Result<MemoryResult, Error> {
    let started = Instant::now();
    let dir = subdir(dir, &format!("{}-dialogs", target.label()))?;
    let (n, limited_by) = match target.dialog_limit() {
        Some((max, why)) if max < settings.dialogs => (max, Some(why)),
        _ => (settings.dialogs, None),
    };
    if n == 0 {
        return Err(Error::Campaign(format!(
            "{} can hold no dialog: {}",
            target.label(),
            limited_by.unwrap_or_default()
        )));
    }
    let rate = match carried_cps {
        Some(c) => settings
            .dialog_rate
            .min((f64::from(c) * SETUP_FRACTION) as u32),
        None => settings.dialog_rate,
    }
    .max(1);
    let setup = Duration::from_secs_f64(n as f64 / f64::from(rate));
    // Every call is still held well after the last one is set up and its
    // transactions have ended.
    let hold = setup + target.transaction_linger() + Duration::from_secs(60);
    let campaign = Campaign {
        rate,
        calls: n,
        limit: Some(n),
        hold_ms: hold.as_millis() as u64,
        // Tens of thousands of paused calls make sipp's own loop stall at
        // times on a busy machine; a late answer is not a lost dialog.
        recv_timeout_ms: settings.recv_timeout_ms.max(HOLD_RECV_TIMEOUT_MS),
        timeout: hold + setup + Duration::from_secs(60),
    };

    let mut tgt = target.start(&dir, Purpose::HoldDialogs)?;
    let _uas = sipp.spawn_uas(settings.uas, &dir)?;
    thread::sleep(Duration::from_secs(1));
    let pgid = tgt.pid();
    let read = |what: &str| {
        procmem::group_memory(pgid)
            .map_err(|e| Error::io(format!("{what}: memory of {}", target.label()), e))
    };
    let before = read("before")?;
    let mut uac = sipp.spawn_uac(settings.uac, target.sip_addr(), &campaign, &dir)?;

    // Wait for every call to be placed and answered.
    let deadline = Instant::now() + setup * 2 + Duration::from_secs(30);
    loop {
        thread::sleep(Duration::from_millis(500));
        if let Some(status) = tgt.try_wait() {
            return Err(Error::Campaign(format!(
                "{} exited ({status}) while holding dialogs; its log ends with:\n{}",
                target.label(),
                tgt.log_tail(15)
            )));
        }
        if let Some(status) = uac.try_wait() {
            return Err(Error::Campaign(format!(
                "sipp uac exited ({status}) before the dialogs were held; its log ends with:\n{}",
                uac.log_tail(10)
            )));
        }
        let Ok(s) = sipp::read_stat(&dir) else {
            continue;
        };
        if s.failed_calls > 0 {
            return Err(Error::Campaign(format!(
                "{} of {n} calls failed while setting up dialogs at {rate} calls/s",
                s.failed_calls
            )));
        }
        // The stat rows (one a second) carry the INVITE → 200 count; the
        // rtt file lags behind by up to a stdio buffer of samples.
        let answered = s.responses();
        if s.outgoing_calls >= n && answered >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Campaign(format!(
                "only {} of {n} calls placed and {answered} answered after {:?}",
                s.outgoing_calls,
                deadline - started
            )));
        }
    }
    // Let transactions end so what remains is dialog state.
    thread::sleep(target.transaction_linger());
    let during = read("during")?;
    let stat = sipp::read_stat(&dir)?;
    if stat.failed_calls > 0 {
        return Err(Error::Campaign(format!(
            "{} held calls failed before memory was read",
            stat.failed_calls
        )));
    }
    uac.stop();
    tgt.stop();
    let metric = target.memory_metric();
    let pick = |m: &GroupMemory| match metric {
        MemoryMetric::Rss => m.rss_kib,
        MemoryMetric::Pss => m.pss_kib,
    };
    let delta = pick(&during).saturating_sub(pick(&before));
    Ok(MemoryResult {
        dialogs_requested: settings.dialogs,
        dialogs_held: n,
        limited_by,
        setup_rate: rate,
        metric,
        before,
        during,
        bytes_per_dialog: Some(delta as f64 * 1024.0 / n as f64),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn run_step(
    target: &dyn Target,
    sipp: &Sipp,
    settings: &Settings,
    rate: u32,
    dir: &Path,
) -> Result<Step, Error> {
    let started = Instant::now();
    let calls = (u64::from(rate) * settings.step.as_millis() as u64 / 1000).max(1);
    let campaign = Campaign {
        rate,
        calls,
        limit: None,
        hold_ms: settings.hold_ms,
        recv_timeout_ms: settings.recv_timeout_ms,
        timeout: settings.step * 3
            + Duration::from_millis(settings.hold_ms)
            + Duration::from_secs(20),
    };
    let mut tgt = target.start(dir, Purpose::Rate)?;
    let mut uas = sipp.spawn_uas(settings.uas, dir)?;
    let out = sipp.run_uac(settings.uac, target.sip_addr(), &campaign, dir);
    uas.stop();
    let target_died = tgt
        .try_wait()
        .map(|s| format!("{} exited during the step ({s})", target.label()));
    tgt.stop();
    let out = out?;
    let s = &out.stat;
    let carried = stat::completion_rate(&out.rtt, 1);
    let mut why = Vec::new();
    if let Some(died) = target_died {
        why.push(died);
    }
    if out.exit_code != Some(0) {
        why.push(format!("sipp exit code {:?}", out.exit_code));
    }
    if s.failed_calls > 0 {
        why.push(format!("{} failed calls", s.failed_calls));
    }
    if s.successful_calls != calls {
        why.push(format!("{} of {calls} calls succeeded", s.successful_calls));
    }
    if let Some(c) = carried.filter(|c| *c < CARRIED_FRACTION * f64::from(rate)) {
        why.push(format!("calls completed at only {c:.0}/s"));
    }
    let passed = why.is_empty();
    if let Some(e) = out.errors.as_ref().filter(|_| !passed) {
        why.push(format!(
            "sipp errors: {}",
            e.lines().next().unwrap_or_default()
        ));
    }
    Ok(Step {
        rate,
        calls,
        successful: s.successful_calls,
        failed: s.failed_calls,
        retransmissions: s.retransmissions,
        carried_cps: carried,
        exit_code: out.exit_code,
        response_ms: stat::percentiles(&out.rtt, 1),
        passed,
        note: (!why.is_empty()).then(|| why.join("; ")),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn subdir(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    Ok(d)
}
