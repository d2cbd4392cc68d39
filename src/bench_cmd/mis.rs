//! `voxplane bench mis` (issue #7).

/// Arguments of `voxplane bench mis`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = args.json;
    anyhow::bail!("`voxplane bench mis` is not built yet (issue #7)")
}
