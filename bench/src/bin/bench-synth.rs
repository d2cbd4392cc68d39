//! `bench-synth`: writes a synthetic SIP + RTP capture with `bench::synth`
//! and prints its ground truth, one line per RTP stream (tab-separated).

use std::path::PathBuf;

use anyhow::Context;
use bench::synth::{DtmfConfig, JitterModel, LossPreset, SynthConfig, write_pcap_file};
use clap::Parser;

/// Writes a synthetic call capture and prints its ground truth.
#[derive(Parser, Debug)]
#[command(name = "bench-synth", about)]
struct Args {
    /// Output pcap file.
    #[arg(long, short)]
    out: PathBuf,
    /// Number of calls.
    #[arg(long, default_value_t = 10)]
    calls: u32,
    /// Maximum simultaneous calls.
    #[arg(long, default_value_t = 10)]
    concurrent: u32,
    /// Talk time per call in seconds (each call draws from N to N+1).
    #[arg(long, default_value_t = 10)]
    duration_secs: u32,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Loss preset: clean, lossy, bursty.
    #[arg(long, default_value = "lossy")]
    loss: String,
    /// Jitter preset: none, typical, rough (rough reorders and duplicates).
    #[arg(long, default_value = "typical")]
    jitter: String,
    /// Fraction of calls over IPv6 (0–1).
    #[arg(long, default_value_t = 0.1)]
    ipv6_share: f64,
    /// Fraction of calls with DTMF (0–1).
    #[arg(long, default_value_t = 0.1)]
    dtmf_share: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let loss = LossPreset::from_name(&args.loss)
        .with_context(|| format!("unknown --loss {:?} (clean, lossy, bursty)", args.loss))?;
    let jitter = match args.jitter.as_str() {
        "none" => JitterModel::NONE,
        "typical" => JitterModel::TYPICAL,
        "rough" => JitterModel::ROUGH,
        other => anyhow::bail!("unknown --jitter {other:?} (none, typical, rough)"),
    };
    let ms = args.duration_secs.saturating_mul(1_000);
    let config = SynthConfig {
        seed: args.seed,
        calls: args.calls,
        concurrent: args.concurrent,
        duration_ms: (ms, ms.saturating_add(1_000)),
        loss,
        jitter,
        ipv6_share: args.ipv6_share,
        dtmf: DtmfConfig {
            call_share: args.dtmf_share,
            ..DtmfConfig::default()
        },
        ..SynthConfig::default()
    };
    let truth = write_pcap_file(&config, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "call_id\tsrc\tdst\tssrc\tpt\tsent\tlost_in_network\treceived\tduplicates\treordered\texpected\tapparent_lost\tjitter_ms\tdtmf_events"
    );
    for s in &truth.streams {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{}",
            s.call_id,
            s.src,
            s.dst,
            s.ssrc,
            s.payload_type,
            s.sent,
            s.lost_in_network,
            s.received,
            s.duplicates,
            s.reordered,
            s.expected(),
            s.apparent_lost(),
            s.jitter_ms,
            s.dtmf_events
        );
    }
    eprintln!(
        "{}: {} calls, {} streams, {} frames ({} RTP, {} RTCP, {} SIP), {} bytes of frames, peak {} concurrent",
        args.out.display(),
        truth.calls.len(),
        truth.streams.len(),
        truth.frames,
        truth.rtp_packets,
        truth.rtcp_packets,
        truth.sip_messages,
        truth.frame_bytes,
        truth.max_concurrent_calls
    );
    Ok(())
}
