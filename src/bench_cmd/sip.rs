//! `voxplane bench sip` (issue #5).

/// Arguments of `voxplane bench sip`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = args.json;
    anyhow::bail!("`voxplane bench sip` is not built yet (issue #5)")
}
