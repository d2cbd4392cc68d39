//! `bench-analyze`: times `voxplane analyze` against `tshark -z rtp,streams`
//! on the same synthetic capture, in the same run.
//!
//! 1. Generates a capture with `bench::synth` (default: 1,000 calls, all
//!    concurrent, 11 s of talk each ≈ 1.1 M RTP packets) into a temporary
//!    directory, and a one-call baseline capture.
//! 2. Runs each command once on the baseline capture (for the memory
//!    baseline), then N times on the big capture, interleaved, pinned to one
//!    core with `taskset -c CORE` when available.
//! 3. Prints a markdown table: packets, file size, median wall-clock,
//!    packets/s, peak RSS, bytes per stream, and the ratios.
//!
//! Reproduce: `cargo build --release -p voxplane -p bench &&
//! target/release/bench-analyze --voxplane target/release/voxplane`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bench::harness::{CommandSpec, Report, Runner, find_program, render_markdown};
use bench::synth::{JitterModel, LossPreset, SynthConfig, write_pcap_file};
use clap::Parser;

/// Times `voxplane analyze` and `tshark -z rtp,streams` on one synthetic
/// capture and prints a markdown table.
#[derive(Parser, Debug)]
#[command(name = "bench-analyze", about)]
struct Args {
    /// The voxplane binary to measure.
    #[arg(long, default_value = "target/release/voxplane")]
    voxplane: PathBuf,
    /// The tshark binary to compare with.
    #[arg(long, default_value = "tshark")]
    tshark: PathBuf,
    /// Runs per command (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Calls in the capture.
    #[arg(long, default_value_t = 1_000)]
    calls: u32,
    /// Simultaneous calls (default: all of them).
    #[arg(long)]
    concurrent: Option<u32>,
    /// Talk time per call in seconds (each stream sends 50 packets/s).
    #[arg(long, default_value_t = 11)]
    duration_secs: u32,
    /// Seed of the capture.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Loss preset of every leg: clean, lossy or bursty.
    #[arg(long, default_value = "lossy")]
    loss: String,
    /// Core to pin the measured commands to (taskset -c).
    #[arg(long, default_value_t = 1)]
    core: u32,
    /// Do not pin to a core.
    #[arg(long)]
    no_pin: bool,
    /// Write the capture here (and keep it) instead of a temporary file.
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let loss = LossPreset::from_name(&args.loss)
        .with_context(|| format!("unknown --loss {:?} (clean, lossy, bursty)", args.loss))?;
    // Fail early, before minutes of generation, if a program is missing.
    if find_program(&args.voxplane).is_none() {
        bail!(
            "voxplane binary not found at {} (build it with `cargo build --release -p voxplane`, \
             or pass --voxplane PATH)",
            args.voxplane.display()
        );
    }
    if find_program(&args.tshark).is_none() {
        bail!(
            "tshark not found ({}); install it (Debian: tshark) or pass --tshark PATH",
            args.tshark.display()
        );
    }

    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let capture = args
        .keep
        .clone()
        .unwrap_or_else(|| dir.path().join("bench-analyze.pcap"));
    let tiny = dir.path().join("baseline.pcap");
    let duration_ms = args.duration_secs.saturating_mul(1_000);
    let config = SynthConfig {
        seed: args.seed,
        calls: args.calls,
        concurrent: args.concurrent.unwrap_or(args.calls).max(1),
        duration_ms: (duration_ms, duration_ms + 1_000),
        loss,
        jitter: JitterModel::TYPICAL,
        ..SynthConfig::default()
    };
    let started = Instant::now();
    let truth = write_pcap_file(&config, &capture)
        .with_context(|| format!("cannot write {}", capture.display()))?;
    let file_bytes = std::fs::metadata(&capture)?.len();
    eprintln!(
        "generated {} ({} frames, {} RTP packets, peak {} concurrent calls) in {:.1} s",
        capture.display(),
        truth.frames,
        truth.rtp_packets,
        truth.max_concurrent_calls,
        started.elapsed().as_secs_f64()
    );
    // The baseline is one call long enough (60 s, ~1.3 MiB) to pass a few
    // megabytes through each tool's read buffers, so the memory per stream
    // excludes fixed-size buffers, not only the program image.
    let baseline = SynthConfig {
        calls: 1,
        concurrent: 1,
        duration_ms: (60_000, 60_000),
        ..config.clone()
    };
    write_pcap_file(&baseline, &tiny).context("cannot write the baseline capture")?;

    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let runner = Runner::detect((!args.no_pin).then_some(args.core), &scratch);
    let commands = |file: &PathBuf| {
        [
            CommandSpec::new(
                "voxplane",
                &args.voxplane,
                [
                    "analyze".into(),
                    "--format".into(),
                    "json".into(),
                    file.clone().into_os_string(),
                ],
            ),
            CommandSpec::new(
                "tshark",
                &args.tshark,
                [
                    "-n".into(),
                    "-q".into(),
                    "-z".into(),
                    "rtp,streams".into(),
                    "-r".into(),
                    file.clone().into_os_string(),
                ],
            ),
        ]
    };
    let base = runner.measure_interleaved(&commands(&tiny), 1)?;
    let measured = runner.measure_interleaved(&commands(&capture), args.runs)?;

    // A measurement is only meaningful if tshark decoded the RTP: its
    // table has one row (ending in "(x.y%)" for loss) per stream.
    let tshark_rows = runner
        .last_stdout("tshark")
        .map(|out| {
            out.lines()
                .filter(|l| {
                    l.split_whitespace()
                        .any(|w| w.starts_with('(') && w.ends_with("%)"))
                })
                .count()
        })
        .unwrap_or(0);
    eprintln!(
        "tshark reported {tshark_rows} RTP streams; the capture has {}",
        truth.streams.len()
    );
    let report = Report {
        packets: truth.rtp_packets,
        frames: truth.frames,
        streams: truth.streams.len() as u64,
        calls: truth.calls.len() as u64,
        file_bytes,
        pinning: runner
            .pin
            .as_ref()
            .map_or("none".into(), |(_, c)| format!("taskset -c {c}")),
        measured,
        baseline_rss_kib: base
            .iter()
            .map(|m| (m.label.clone(), m.peak_rss_kib()))
            .collect(),
    };
    println!("{}", render_markdown(&report));
    Ok(())
}
