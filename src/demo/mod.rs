//! `voxplane demo`: the whole platform on embedded defaults, in two parts.
//!
//! Offline: it synthesises SIP+RTP calls with realistic loss and jitter
//! ([`bench::synth`]), writes them as a pcap, analyses the capture with the
//! same pipeline as `voxplane analyze`, and prints the table, the WAVs and
//! per-call pcaps it wrote, and how the analysis compares with the
//! generator's ground truth.
//!
//! Live ([`live`]): the SIP core, relay, NQS and MIS in this process on
//! loopback, with two scripted user agents registering and calling through
//! the B2BUA.

mod live;
mod ua;

use std::fs;
use std::io::{self, Write};

use anyhow::Context;
use bench::synth::{JitterModel, LossPreset, SynthConfig};

use crate::analyze::{Options, analyze_files};
use crate::config::{Config, DemoLoss};
use crate::{DemoArgs, Format, output};

/// Runs `voxplane demo`.
pub fn run(config: &Config, args: &DemoArgs) -> anyhow::Result<()> {
    let calls = args.calls.unwrap_or(config.demo.calls).max(1);
    let seed = args.seed.unwrap_or(config.demo.seed);
    let loss = match config.demo.loss {
        DemoLoss::Clean => LossPreset::Clean,
        DemoLoss::Lossy => LossPreset::LOSSY,
        DemoLoss::Bursty => LossPreset::Bursty,
    };
    let synth = SynthConfig {
        seed,
        calls,
        concurrent: calls.min(4),
        duration_ms: (8_000, 20_000),
        loss,
        jitter: JitterModel::TYPICAL,
        ..SynthConfig::default()
    };
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let pcap = args.out.join("demo.pcap");
    let truth = bench::synth::write_pcap_file(&synth, &pcap)
        .with_context(|| format!("writing {}", pcap.display()))?;
    let outcome = analyze_files(
        std::slice::from_ref(&pcap),
        &Options {
            wav_dir: Some(args.out.join("wav")),
            split_dir: Some(args.out.join("calls")),
            progress: false,
            analyzer: crate::analyze::analyzer_config(config),
        },
    )?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "Synthesised {} calls ({} SIP messages, {} RTP and {} RTCP packets, seed {seed}) into {}\n",
        truth.calls.len(),
        truth.sip_messages,
        truth.rtp_packets,
        truth.rtcp_packets,
        pcap.display()
    )?;
    output::write(
        &mut out,
        Format::Table,
        &outcome.analyzer,
        crate::analyze::stdout_is_color(),
    )?;

    // The generator knows what the network did; the analyser only saw the
    // capture. Show both so the demo proves the numbers.
    let lost_truth: u64 = truth.streams.iter().map(|s| s.lost_in_network).sum();
    let visible: i64 = truth.streams.iter().map(|s| s.apparent_lost()).sum();
    let analyzer = &outcome.analyzer;
    let lost_seen: i64 = analyzer
        .stream_ids()
        .filter_map(|id| analyzer.stream_summary(id))
        .map(|s| s.lost)
        .sum();
    writeln!(
        out,
        "\nGround truth: the network lost {lost_truth} packets, {visible} of them between each stream's first \
         and last received packet (the only ones a capture can show); the analyser counts {lost_seen} lost."
    )?;
    writeln!(
        out,
        "Wrote {} WAV files to {} and {} per-call pcaps to {}.",
        outcome.wavs.len(),
        args.out.join("wav").display(),
        outcome.splits,
        args.out.join("calls").display()
    )?;
    writeln!(
        out,
        "Open {} in Wireshark, or run: voxplane analyze --format json {}",
        pcap.display(),
        pcap.display()
    )?;
    live::run(&args.out, seed, &mut out)
        .context("the live part of the demo (SIP core, relay, NQS, MIS)")?;
    Ok(())
}
