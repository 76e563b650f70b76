use std::path::PathBuf;

use anyhow::Result;

/// Combine the CSVs of a sharded batch into one.
///
/// Each `voxseg batch --shard I/N` run writes `volumes-shard-I-of-N.csv`; this joins
/// them, refusing files whose columns differ (another model or voxseg version) and
/// case ids that appear twice. The output is written atomically.
///
/// Example: voxseg batch-merge out/volumes-shard-*-of-4.csv -o out/volumes.csv
#[derive(clap::Args)]
pub struct BatchMergeArgs {
    /// The shard CSV files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Where to write the merged CSV.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: BatchMergeArgs) -> Result<()> {
    let summary = voxseg::batch::merge(&args.shards, &args.output)?;
    eprintln!("merged {} rows from {} files into {}", summary.rows, summary.files, args.output.display());
    Ok(())
}
