//! `voxplane bench relay` (issue #3).

/// Arguments of `voxplane bench relay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = args.json;
    anyhow::bail!("`voxplane bench relay` is not built yet (issue #3)")
}
