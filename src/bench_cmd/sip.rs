//! `voxplane bench sip` (issue #5): sipp UAC and UAS pinned to one CPU,
//! the target (Voxplane's B2BUA, then Kamailio as a stateful proxy) pinned
//! to another, all on loopback. For each target: the highest call rate with
//! no failed call and its INVITE → 200 response times, then the memory it
//! holds per concurrent dialog. See `bench::sip` for the method.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::sip::campaign::{self, MemoryResult, RateResult, Settings, Step};
use bench::sip::sipp::{Endpoint, Sipp};
use bench::sip::target::{Kamailio, Target, Voxplane};
use serde_json::{Value, json};

/// Arguments of `voxplane bench sip`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Highest call rate tried (calls/s).
    #[arg(long, default_value_t = 20_000)]
    max_rate: u32,
    /// First call rate tried; the search doubles it until calls fail, then
    /// bisects.
    #[arg(long, default_value_t = 500)]
    start_rate: u32,
    /// Seconds of calls at each rate (rate × this many calls).
    #[arg(long, default_value_t = 5)]
    duration_per_step: u64,
    /// Hold time of each call in the rate search (ms).
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// Concurrent dialogs held for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    dialogs: u64,
    /// Rate at which those dialogs are set up (calls/s; at most 3/4 of the
    /// rate the target carried in the rate search).
    #[arg(long, default_value_t = 2_000)]
    dialog_rate: u32,
    /// Do not measure Kamailio.
    #[arg(long)]
    skip_kamailio: bool,
    /// Do not measure Voxplane (Kamailio only, e.g. to check the harness).
    #[arg(long)]
    skip_voxplane: bool,
    /// The voxplane binary to run as `voxplane up` (default: this one).
    #[arg(long, value_name = "PATH")]
    voxplane_bin: Option<PathBuf>,
    /// The kamailio binary.
    #[arg(long, value_name = "PATH", default_value = "kamailio")]
    kamailio_bin: PathBuf,
    /// Kamailio's UDP worker processes (`children`).
    #[arg(long, default_value_t = 4)]
    kamailio_children: u32,
    /// Kamailio's shared memory (MiB, `-m`).
    #[arg(long, default_value_t = 2048)]
    kamailio_shm_mib: u32,
    /// The sipp binary.
    #[arg(long, value_name = "PATH", default_value = "sipp")]
    sipp_bin: PathBuf,
    /// CPU for sipp's UAC and UAS.
    #[arg(long, default_value_t = 0)]
    sipp_cpu: usize,
    /// CPU for the target (proxy or B2BUA) and all its processes.
    #[arg(long, default_value_t = 1)]
    target_cpu: usize,
    /// Do not pin anything (`taskset`).
    #[arg(long)]
    no_pin: bool,
    /// The sipp UAC's SIP address.
    #[arg(long, default_value = "127.0.0.1:5070")]
    uac: SocketAddr,
    /// The target's SIP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// The sipp UAS's SIP address.
    #[arg(long, default_value = "127.0.0.1:5080")]
    uas: SocketAddr,
    /// First media port sipp's UAC binds (and the three after it). Above
    /// the kernel's ephemeral range and outside `--port-range`.
    #[arg(long, default_value_t = 61_000)]
    uac_media_port: u16,
    /// First media port sipp's UAS binds (and the three after it).
    #[arg(long, default_value_t = 62_000)]
    uas_media_port: u16,
    /// Voxplane's media address (`voxplane up --media-addr`).
    #[arg(long, default_value = "127.0.0.1")]
    media_addr: IpAddr,
    /// Voxplane's media ports (`voxplane up --port-range`), `LO-HI`.
    #[arg(long, value_name = "LO-HI", value_parser = crate::dataplane_cmd::parse_range, default_value = "20000-59999")]
    port_range: RangeInclusive<u16>,
    /// Keep sipp's and the targets' files (CSV, logs, configs) here
    /// instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// Runs the benchmark. Errors (a non-zero exit) if a requested target
/// could not be measured, after printing what was.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp;
    let dir = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("voxplane-bench-sip-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let (sipp_cpu, target_cpu) = if args.no_pin {
        (None, None)
    } else {
        (Some(args.sipp_cpu), Some(args.target_cpu))
    };
    let sipp = Sipp::new(args.sipp_bin.clone(), &dir, sipp_cpu)?;
    let sipp_version = sipp
        .version()
        .context("sipp (Debian sip-tester) is needed")?;
    let settings = Settings {
        start_rate: args.start_rate,
        max_rate: args.max_rate,
        resolution: 0.1,
        step: Duration::from_secs(args.duration_per_step.max(1)),
        hold_ms: args.hold_ms,
        recv_timeout_ms: 5_000,
        dialogs: args.dialogs,
        dialog_rate: args.dialog_rate,
        uac: Endpoint {
            sip: args.uac,
            media_port: args.uac_media_port,
        },
        uas: Endpoint {
            sip: args.uas,
            media_port: args.uas_media_port,
        },
    };
    let voxplane = Voxplane {
        program: match &args.voxplane_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("locate the voxplane binary")?,
        },
        listen: args.target,
        uac: settings.uac,
        uas: settings.uas,
        media_addr: args.media_addr,
        port_range: (*args.port_range.start(), *args.port_range.end()),
        cpu: target_cpu,
    };
    let kamailio = Kamailio {
        program: args.kamailio_bin.clone(),
        modules: PathBuf::from(Kamailio::DEBIAN_MODULES),
        listen: args.target,
        next_hop: args.uas,
        children: args.kamailio_children,
        shm_mib: args.kamailio_shm_mib,
        pkg_mib: 32,
        cpu: target_cpu,
    };

    let mut targets: Vec<&dyn Target> = Vec::new();
    if !args.skip_voxplane {
        targets.push(&voxplane);
    }
    if !args.skip_kamailio {
        targets.push(&kamailio);
    }
    let mut measured = Vec::new();
    for t in targets {
        measured.push(measure(t, &sipp, &settings, &dir));
    }

    let report = report(args, &settings, &sipp_version, &measured, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(args, &report, &measured);
    }
    let failed: Vec<String> = measured
        .iter()
        .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.label)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("not measured — {}", failed.join("\n"))
    }
}

/// Everything measured about one target.
struct Measured {
    label: &'static str,
    version: Option<String>,
    rate: Option<RateResult>,
    memory: Option<MemoryResult>,
    /// Why (part of) the target could not be measured.
    error: Option<String>,
}

/// Measures one target; progress goes to stderr (also with `--json`, whose
/// document is on stdout).
fn measure(t: &dyn Target, sipp: &Sipp, s: &Settings, dir: &Path) -> Measured {
    let mut m = Measured {
        label: t.label(),
        version: t.version().ok(),
        rate: None,
        memory: None,
        error: None,
    };
    let mut progress = |step: &Step| {
        eprintln!(
            "{:>9} {:>6} calls/s: {} ({} ok, {} failed{}{})",
            m.label,
            step.rate,
            if step.passed { "pass" } else { "FAIL" },
            step.successful,
            step.failed,
            step.response_ms
                .map(|p| format!(", p50 {} ms, p99 {} ms", p.p50_ms, p.p99_ms))
                .unwrap_or_default(),
            step.note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default(),
        );
    };
    match campaign::measure_rate(t, sipp, s, dir, &mut progress) {
        Ok(r) => m.rate = Some(r),
        Err(e) => {
            m.error = Some(format!("rate search: {e}"));
            return m;
        }
    }
    eprintln!("{:>9} holding up to {} dialogs…", m.label, s.dialogs);
    let carried = m.rate.as_ref().and_then(|r| r.cps);
    match campaign::measure_memory(t, sipp, s, dir, carried) {
        Ok(r) => m.memory = Some(r),
        Err(e) => m.error = Some(format!("memory per dialog: {e}")),
    }
    m
}

fn report(
    args: &Args,
    s: &Settings,
    sipp_version: &str,
    measured: &[Measured],
    elapsed: Duration,
) -> Value {
    let find = |label: &str| measured.iter().find(|m| m.label == label);
    let cps = |m: Option<&Measured>| m.and_then(|m| m.rate.as_ref()).and_then(|r| r.cps);
    let rate_field = |m: Option<&Measured>, f: fn(&RateResult) -> Option<f64>| {
        m.and_then(|m| m.rate.as_ref()).and_then(f)
    };
    let bpd = |m: Option<&Measured>| {
        m.and_then(|m| m.memory.as_ref())
            .and_then(|r| r.bytes_per_dialog)
            .map(|b| b.round())
    };
    let (vox, kam) = (find("voxplane"), find("kamailio"));
    let ratio = match (cps(vox), cps(kam)) {
        (Some(v), Some(k)) if k > 0 => Some((f64::from(v) / f64::from(k) * 100.0).round() / 100.0),
        _ => None,
    };
    let detail = |m: Option<&Measured>| {
        m.map(|m| {
            json!({
                "version": m.version,
                "rate": m.rate,
                "memory": m.memory,
                "error": m.error,
            })
        })
    };
    json!({
        "cps": cps(vox),
        "failed_calls": vox.and_then(|m| m.rate.as_ref()).map(|r| r.failed_calls),
        "response_ms_p50": rate_field(vox, |r| r.response_ms_p50),
        "response_ms_p99": rate_field(vox, |r| r.response_ms_p99),
        "bytes_per_dialog": bpd(vox),
        "kamailio_cps": cps(kam),
        "kamailio_failed_calls": kam.and_then(|m| m.rate.as_ref()).map(|r| r.failed_calls),
        "kamailio_response_ms_p50": rate_field(kam, |r| r.response_ms_p50),
        "kamailio_response_ms_p99": rate_field(kam, |r| r.response_ms_p99),
        "kamailio_bytes_per_dialog": bpd(kam),
        "cps_ratio_to_kamailio": ratio,
        "goals": {
            "cps_per_core": 5000,
            "bytes_per_dialog": 4096,
            "cps_met": cps(vox).map(|c| c >= 5000),
            "bytes_per_dialog_met": bpd(vox).map(|b| b <= 4096.0),
        },
        "voxplane": detail(vox),
        "kamailio": detail(kam),
        "sipp_version": sipp_version,
        "kamailio_version": kam.and_then(|m| m.version.clone()),
        "machine": machine(),
        "settings": {
            "start_rate": s.start_rate,
            "max_rate": s.max_rate,
            "duration_per_step_s": s.step.as_secs(),
            "hold_ms": s.hold_ms,
            "recv_timeout_ms": s.recv_timeout_ms,
            "dialogs": s.dialogs,
            "dialog_rate": s.dialog_rate,
            "pinned": !args.no_pin,
            "sipp_cpu": args.sipp_cpu,
            "target_cpu": args.target_cpu,
            "kamailio_children": args.kamailio_children,
            "uac": s.uac.sip.to_string(),
            "target": args.target.to_string(),
            "uas": s.uas.sip.to_string(),
        },
        "duration_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
    })
}

fn print_table(args: &Args, report: &Value, measured: &[Measured]) {
    println!(
        "voxplane bench sip — {} — {}",
        report["sipp_version"].as_str().unwrap_or("sipp"),
        report["machine"]["summary"].as_str().unwrap_or("")
    );
    println!(
        "steps of {} s, calls held {} ms; UAC {} → target {} → UAS {}{}",
        args.duration_per_step,
        args.hold_ms,
        args.uac,
        args.target,
        args.uas,
        if args.no_pin {
            String::new()
        } else {
            format!(
                "; sipp on CPU {}, target on CPU {}",
                args.sipp_cpu, args.target_cpu
            )
        }
    );
    println!();
    println!(
        "{:<10} {:>12} {:>8} {:>9} {:>9} {:>12} {:>10} {:>10}",
        "target", "calls/s", "failed", "p50 ms", "p99 ms", "first fail", "dialogs", "B/dialog"
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for m in measured {
        let r = m.rate.as_ref();
        let mem = m.memory.as_ref();
        println!(
            "{:<10} {:>12} {:>8} {:>9} {:>9} {:>12} {:>10} {:>10}",
            m.label,
            dash(r.and_then(|r| r.cps).map(|c| c.to_string())),
            dash(r.map(|r| r.failed_calls.to_string())),
            dash(r.and_then(|r| r.response_ms_p50).map(|v| v.to_string())),
            dash(r.and_then(|r| r.response_ms_p99).map(|v| v.to_string())),
            dash(r.and_then(|r| r.first_failing_rate).map(|v| v.to_string())),
            dash(mem.map(|x| x.dialogs_held.to_string())),
            dash(
                mem.and_then(|x| x.bytes_per_dialog)
                    .map(|b| format!("{b:.0}"))
            ),
        );
    }
    println!();
    if let Some(ratio) = report["cps_ratio_to_kamailio"].as_f64() {
        println!("Voxplane / Kamailio call rate: {ratio:.2}×");
    }
    println!("goals: ≥ 5,000 calls/s per core, ≤ 4,096 bytes per held dialog");
    for m in measured {
        if let Some(x) = &m.memory {
            println!(
                "{} memory ({:?}, {} processes): {} KiB before, {} KiB with {} dialogs{}",
                m.label,
                x.metric,
                x.during.processes,
                match x.metric {
                    bench::sip::target::MemoryMetric::Rss => x.before.rss_kib,
                    bench::sip::target::MemoryMetric::Pss => x.before.pss_kib,
                },
                match x.metric {
                    bench::sip::target::MemoryMetric::Rss => x.during.rss_kib,
                    bench::sip::target::MemoryMetric::Pss => x.during.pss_kib,
                },
                x.dialogs_held,
                x.limited_by
                    .as_ref()
                    .map(|l| format!(" (limited by {l})"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = &m.error {
            println!("{}: NOT MEASURED: {e}", m.label);
        }
    }
}

/// The machine, for the report.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let load = read("/proc/loadavg");
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "summary": format!("{cpus} CPUs ({model}), {} GiB, Linux {kernel}, load {load}", mem_kib / (1024 * 1024)),
        "cpu_model": model,
        "cpus": cpus,
        "kernel": kernel,
        "mem_kib": mem_kib,
        "loadavg_at_start": load,
    })
}
