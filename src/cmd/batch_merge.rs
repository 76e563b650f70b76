use std::path::PathBuf;

use anyhow::Result;

/// Combine the CSVs of a sharded batch into one.
///
/// Each `voxseg batch --shard I/N` run writes `volumes-shard-I-of-N.csv`; this joins
/// them, refusing files whose columns differ (another model or voxseg version) and
/// case ids that appear twice. `batch --radiomics --shard I/N` also writes
/// `radiomics-shard-I-of-N.csv` (long format: case_id, label, name, feature, value),
/// merged the same way, a row repeated being refused. The output is written atomically.
///
/// Examples: voxseg batch-merge out/volumes-shard-*-of-4.csv -o out/volumes.csv --report
///           voxseg batch-merge out/radiomics-shard-*-of-4.csv -o out/radiomics.csv
#[derive(clap::Args)]
// The examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct BatchMergeArgs {
    /// The shard CSV files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Where to write the merged CSV.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write report.html, the review page (see `voxseg report`), beside the
    /// merged CSV, of it and the case folders there (volumes CSVs only).
    #[arg(long)]
    pub report: bool,
}

pub fn run(args: BatchMergeArgs) -> Result<()> {
    let summary = voxseg::batch::merge(&args.shards, &args.output)?;
    eprintln!("merged {} rows from {} files into {}", summary.rows, summary.files, args.output.display());
    if args.report {
        let dir = match args.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        super::report::write(&dir, std::slice::from_ref(&args.output), &dir.join("report.html"))?;
    }
    Ok(())
}
