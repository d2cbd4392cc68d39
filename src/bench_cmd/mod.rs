//! `voxplane bench …`: the benchmarks behind `docs/benchmarks.md`. Each
//! subcommand measures Voxplane and, where the issue names one, a peer in the
//! same run, prints a table (or `--json`) and never asserts a speed.

mod mis;
mod nqs;
mod relay;
mod sbus;
mod sip;

use clap::Subcommand;

/// Arguments of `voxplane bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand, Debug)]
enum Which {
    /// RTP relay capacity and latency per backend, beside rtpengine and the XDP ceiling.
    Relay(relay::Args),
    /// SBUS replication throughput and lag on three members, beside NATS JetStream.
    Sbus(sbus::Args),
    /// NQS live analysis capacity (capture, analysis, pcaps, ClickHouse rows).
    Nqs(nqs::Args),
    /// MIS recorder capacity and WAV render latency.
    Mis(mis::Args),
    /// SIP B2BUA call rate with sipp, beside Kamailio.
    Sip(Box<sip::Args>),
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.which {
        Which::Relay(a) => relay::run(a),
        Which::Sbus(a) => sbus::run(a),
        Which::Nqs(a) => nqs::run(a),
        Which::Mis(a) => mis::run(a),
        Which::Sip(a) => sip::run(a),
    }
}
