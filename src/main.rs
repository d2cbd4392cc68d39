//! The `voxplane` binary: command line, configuration, and the wiring of
//! roles (analyze and demo today; the relay, SIP core, NQS, MIS and SBUS as
//! they land).

mod analyze;
mod bench_cmd;
mod config;
mod dataplane_cmd;
mod demo;
mod mis_cmd;
mod nqs_cmd;
mod output;
mod provision_cmd;
mod sbus_cmd;
mod up_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Voxplane: carrier voice platform core.
#[derive(Parser, Debug)]
#[command(name = "voxplane", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML); embedded defaults when absent.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Analyse pcap/pcapng captures: calls, RTP streams, loss, jitter, MOS.
    Analyze(AnalyzeArgs),
    /// Synthesise a few SIP+RTP calls, write them as a pcap and analyse them.
    Demo(DemoArgs),
    /// Run the RTP relay alone, controlled over rtpengine's ng protocol.
    Dataplane(dataplane_cmd::DataplaneArgs),
    /// Run an SBUS member, or talk to a running one (put, get, status, lag).
    Sbus(sbus_cmd::SbusArgs),
    /// Create the SBUS cluster CA and member certificates.
    Cert(sbus_cmd::CertArgs),
    /// Run the live network quality service (analysis, sinks, HTTP API).
    Nqs(nqs_cmd::NqsArgs),
    /// Bearer tokens for the NQS API.
    Token(nqs_cmd::TokenArgs),
    /// Run the recorder: metadata on TCP 1040, RTP copies on UDP 5400, WAVs
    /// and a search API.
    Mis(mis_cmd::MisArgs),
    /// Benchmarks: relay, sbus, nqs, mis, sip (each beside its peer).
    Bench(bench_cmd::BenchArgs),
    /// Run the SIP core (B2BUA) and the relay in one process.
    Up(up_cmd::UpArgs),
    #[command(flatten)]
    Provision(provision_cmd::Command),
    /// Print the version and build information.
    Version,
}

/// Output format of `analyze`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A readable table per call and stream.
    Table,
    /// One JSON document: `{"calls": [...], "streams": [...]}`.
    Json,
    /// One CSV row per stream.
    Csv,
}

/// Arguments of `voxplane analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Output format (default from the config file, else `table`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write one WAV file per G.711 leg into this directory.
    #[arg(long, value_name = "DIR")]
    wav_dir: Option<PathBuf>,
    /// Write one pcap per call (its SIP and RTP) into this directory.
    #[arg(long, value_name = "DIR")]
    split_dir: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Leave out RTP streams that no SDP announced.
    #[arg(long)]
    no_orphans: bool,
    /// Include each stream's interval samples (every `analyze.interval_secs`,
    /// 10 s by default) in the JSON output.
    #[arg(long)]
    intervals: bool,
    /// Capture files (pcap or pcapng).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Arguments of `voxplane demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to write the capture, the WAVs and the per-call pcaps.
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    out: PathBuf,
    /// Number of calls (default from the config file, else 4).
    #[arg(long)]
    calls: Option<u32>,
    /// Random seed (default from the config file, else 1).
    #[arg(long)]
    seed: Option<u64>,
}

/// Diagnostics go to stderr through `tracing`, at the configured level.
fn init_logging(level: config::LogLevel) {
    use tracing::Level;
    let level = match level {
        config::LogLevel::Error => Level::ERROR,
        config::LogLevel::Warn => Level::WARN,
        config::LogLevel::Info => Level::INFO,
        config::LogLevel::Debug => Level::DEBUG,
        config::LogLevel::Trace => Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => match config::Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("voxplane: {e}");
                return ExitCode::from(2);
            }
        },
        None => config::Config::default(),
    };
    init_logging(config.log.level);
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(&config, &args),
        Command::Demo(args) => demo::run(&config, &args),
        Command::Dataplane(args) => dataplane_cmd::run(&args),
        Command::Sbus(args) => sbus_cmd::run(&args),
        Command::Cert(args) => sbus_cmd::cert(&args),
        Command::Nqs(args) => nqs_cmd::run(&args),
        Command::Token(args) => nqs_cmd::token(&args),
        Command::Mis(args) => mis_cmd::run(&args),
        Command::Bench(args) => bench_cmd::run(&args),
        Command::Up(args) => up_cmd::run(&args),
        Command::Provision(cmd) => provision_cmd::run(&cmd),
        Command::Version => {
            println!("voxplane {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output cut short by the reader (`voxplane analyze … | head`) is not an
/// error worth reporting.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
