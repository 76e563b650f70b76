use std::path::PathBuf;

use anyhow::Result;
use voxseg::review::{default_csvs, Cohort};

/// Write the review page of a batch: one self-contained HTML file.
///
/// Reads BATCH/volumes.csv (or, before `batch-merge`, every volumes-shard-*.csv)
/// and the case folders beside it, and writes BATCH/report.html (atomically):
///
///   the cohort     cases ok / failed / needing review; the model and its provenance
///   volumes        per organ a histogram and a box plot; cases beyond 1.5 IQR named
///   needs review   the flagged cases first, each with its preview.png (linked, lazy)
///                  and links to its labels and stats
///   all cases      a table sortable by any column, filtered by flag or status,
///                  searched by case id, with volumes, flags and failure reasons
///   flags          what each QC flag means
///
/// Nothing is fetched from the network: CSS, SVG and script are inline, previews are
/// relative links. The fragment opens a view: report.html#sort=volume_liver&dir=desc&filter=needs_review
///
/// Example: voxseg batch cts/ -o out --preview && voxseg report out
///          (the same as `voxseg batch cts/ -o out --preview --report`)
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// The output folder of `voxseg batch`.
    pub batch: PathBuf,
    /// Where to write the page [default: BATCH/report.html].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The results CSV(s) to read [default: BATCH/volumes.csv, else BATCH/volumes-shard-*.csv].
    #[arg(long)]
    pub csv: Vec<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let csvs = if args.csv.is_empty() { default_csvs(&args.batch)? } else { args.csv };
    let output = args.output.unwrap_or_else(|| args.batch.join("report.html"));
    write(&args.batch, &csvs, &output)
}

/// Reads the batch in `batch` and writes its page to `output`, saying so on stderr
/// (shared by `report`, `batch --report` and `batch-merge --report`).
pub fn write(batch: &std::path::Path, csvs: &[PathBuf], output: &std::path::Path) -> Result<()> {
    let cohort = Cohort::load(batch, csvs)?;
    voxseg::review::write(&cohort, output)?;
    eprintln!(
        "review page of {} cases ({} ok, {} need review, {} failed): {}",
        cohort.cases.len(),
        cohort.ok(),
        cohort.needing_review(),
        cohort.failed(),
        output.display()
    );
    Ok(())
}
