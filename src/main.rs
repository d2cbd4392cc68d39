//! The `voxplane` binary: command line, configuration, and the wiring of
//! roles (analyze, demo, and later the relay, SIP core, NQS, MIS and SBUS).

use clap::{Parser, Subcommand};

mod config;

/// Voxplane: carrier voice platform core.
#[derive(Parser, Debug)]
#[command(name = "voxplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the version and build information.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("voxplane {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
