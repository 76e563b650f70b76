use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use voxseg::batch::{discover, run_pipelined, shard, Journal};
use voxseg::qc::QcFlags;
use voxseg::radiomics_report::{self, write_for_segmentation, Request};
use voxseg::segment::{prepare, segment, write, Model, Outputs};

/// Segment and measure many CTs, resumably, one CSV row per case.
///
/// INPUT is a folder (searched recursively for .nii / .nii.gz, and for folders of
/// DICOM slices, each one case with its subfolders; the case id is the path below
/// INPUT without the extension, with '/' replaced by '__') or a CSV with the header
/// `case_id,path` or `case_id,path,series` (a path may be a folder of DICOM slices;
/// `series` picks one of several CT series in it by UID or key, as `voxseg inspect`
/// lists them). Each case's files go to OUTDIR/<case_id>/ (as `segment` writes them,
/// with rtstruct.dcm and seg.dcm for DICOM cases under --rtstruct / --dicom-seg);
/// OUTDIR/volumes.csv gets one row
/// per case: case_id, status (ok|failed), error (the reason), <organ>_ml per organ of
/// the model, the QC flags per organ, needs_review, seconds.
///
/// With --radiomics each case folder also gets radiomics.json / radiomics.csv (as
/// `segment --radiomics` writes them), and OUTDIR/radiomics.csv (with --shard:
/// radiomics-shard-I-of-N.csv) holds the cohort in long format: case_id, label, name,
/// feature, value (empty where the feature is null), assembled from the finished
/// cases' radiomics.json at the end of every run, so a resumed batch neither repeats
/// nor loses rows. A case whose features cannot be computed is recorded as failed.
///
/// A bad case (corrupt, truncated, not 3-D, not CT) is recorded as failed and the
/// batch goes on. Each row is appended and synced as its case ends, after the
/// case's files: kill the run at any moment and `--resume` skips finished cases
/// and leaves exactly one row per case. The next cases are read and preprocessed on
/// another thread while the current one runs on the device.
///
/// Exit code: 0 all ok, 1 one or more cases failed, 2 usage or setup error.
///
/// Example (a Slurm array of 4: SLURM_ARRAY_TASK_ID = 0..3):
///   voxseg batch cts/ -o out --shard $SLURM_ARRAY_TASK_ID/4
///   voxseg batch-merge out/volumes-shard-*-of-4.csv -o out/volumes.csv --report
///   voxseg batch-merge out/radiomics-shard-*-of-4.csv -o out/radiomics.csv   (with --radiomics)
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct BatchArgs {
    /// Folder of NIfTI CTs and/or DICOM series folders, or a CSV `case_id,path`.
    pub input: PathBuf,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Continue a batch that stopped: skip cases already in the CSV.
    #[arg(long)]
    pub resume: bool,
    /// Process only shard I of N (0-based), a deterministic split by case id.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Model package: a directory with model.toml, an nnU-Net v2 training folder (with
    /// plans.json, dataset.json, fold_*/checkpoint_final.pth), or the name of a package
    /// in ./models, $VOXSEG_MODELS, beside the binary or in ~/.local/share/voxseg/models.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub run_on: super::DeviceArgs,
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
    /// Also write each case's preview.png.
    #[arg(long)]
    pub preview: bool,
    /// Also write rtstruct.dcm (RT Structure Set) for each DICOM case; NIfTI cases
    /// have no slices to reference and get none.
    #[arg(long)]
    pub rtstruct: bool,
    /// Also write seg.dcm (DICOM Segmentation) for each DICOM case.
    #[arg(long)]
    pub dicom_seg: bool,
    /// Also write each case's radiomics.json / radiomics.csv and the cohort's
    /// long-format OUTDIR/radiomics.csv (see `voxseg radiomics`).
    #[arg(long)]
    pub radiomics: bool,
    /// pyradiomics parameter file (YAML) for --radiomics [default: pyradiomics' defaults].
    #[arg(long, value_name = "FILE", requires = "radiomics")]
    pub radiomics_params: Option<PathBuf>,
    /// At the end, also write OUTDIR/report.html, the review page (see `voxseg report`);
    /// with --shard, of the shards of this split found in OUTDIR.
    #[arg(long)]
    pub report: bool,
    /// Cases read and preprocessed ahead of the device.
    #[arg(long, default_value_t = 2)]
    pub ahead: usize,
}

/// The ids of the cases the results CSV records as ok, sorted.
fn ok_cases(csv: &Path) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let mut ids = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("cannot read {}", csv.display()))?;
        if &record[1] == "ok" {
            ids.push(record[0].to_string());
        }
    }
    ids.sort();
    Ok(ids)
}

fn parse_shard(s: &str) -> Result<(u32, u32)> {
    let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard is I/N with 0 <= I < N, e.g. 0/4 (got {s:?})"),
    }
}

pub fn run(args: BatchArgs) -> Result<u8> {
    let shard_of = args.shard.as_deref().map(parse_shard).transpose()?;
    let radiomics = args.radiomics.then(|| Request::read(args.radiomics_params.as_deref())).transpose()?;
    let mut cases = discover(&args.input)?;
    if let Some((i, n)) = shard_of {
        cases = shard(cases, i, n);
    }
    let model = Model::load(args.model.as_deref(), args.run_on.apply()?)?.at_precision(args.precision.precision);
    model.announce();
    let organs: Vec<String> = model.package.labels.iter().map(|l| l.name.clone()).collect();
    let mut columns: Vec<String> = ["case_id", "status", "error"].map(String::from).to_vec();
    columns.extend(organs.iter().map(|o| format!("{o}_ml")));
    for o in &organs {
        columns.extend(QcFlags::NAMES[..5].iter().map(|f| format!("{o}_{f}")));
    }
    columns.extend(["needs_review", "seconds"].map(String::from));
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    let csv = args.output.join(voxseg::batch::results_csv_name(shard_of));
    let mut journal = Journal::open(&csv, &columns, args.resume)?;
    if let Some(request) = &radiomics {
        // A batch resumed with other radiomics options is refused before any work.
        radiomics_report::cohort(&args.output, &ok_cases(&csv)?, &request.settings)?;
    }
    let pending: Vec<_> = cases.iter().filter(|c| !journal.is_done(&c.id)).cloned().collect();
    let bar = ProgressBar::new(cases.len() as u64).with_position((cases.len() - pending.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cases, {msg} [{elapsed_precise}, ETA {eta}]")
            .expect("valid template"),
    );
    let mut failed_now = 0usize;
    bar.set_message("0 failed");
    let width = columns.len();
    let started = std::cell::Cell::new(Instant::now());
    run_pipelined(
        &pending,
        args.ahead,
        |case| prepare(&case.path, case.series.as_deref(), &model.package),
        |case, prepared| {
            let outcome = prepared.and_then(|p| {
                let seg = segment(&model, &p)?;
                let dicom = p.dicom.is_some();
                let outputs = Outputs {
                    preview: args.preview,
                    rtstruct: args.rtstruct && dicom,
                    dicom_seg: args.dicom_seg && dicom,
                };
                let dir = args.output.join(&case.id);
                write(&dir, &model, &p, &seg, outputs)?;
                if let Some(request) = &radiomics {
                    write_for_segmentation(&dir, &model.package, &p, &seg, request).context("radiomics")?;
                }
                Ok(seg)
            });
            let seconds = started.replace(Instant::now()).elapsed().as_secs_f64();
            let mut row = vec![case.id.clone()];
            match outcome {
                Ok(seg) => {
                    row.extend(["ok".into(), String::new()]);
                    row.extend(seg.structures.iter().map(|s| s.measurement.volume_ml.to_string()));
                    for s in &seg.structures {
                        row.extend(s.qc.unwrap_or_default().values()[..5].iter().map(|b| b.to_string()));
                    }
                    let review = seg.structures.iter().any(|s| s.qc.is_some_and(|q| q.needs_review));
                    row.push(review.to_string());
                }
                Err(e) => {
                    row.extend(["failed".into(), format!("{e:#}")]);
                    row.resize(width - 1, String::new());
                }
            }
            row.push(format!("{seconds:.2}"));
            row
        },
        &mut journal,
        |_, row| {
            if row[1] == "failed" {
                failed_now += 1;
                bar.set_message(format!("{failed_now} failed"));
            }
            bar.inc(1);
        },
    )?;
    bar.finish();
    let ok_ids = ok_cases(&csv)?;
    let (ok, failed) = (ok_ids.len(), csv::Reader::from_path(&csv)?.records().count() - ok_ids.len());
    if let Some(request) = &radiomics {
        let cohort = args.output.join(radiomics_report::cohort_csv_name(shard_of));
        radiomics_report::write_cohort_csv(
            &cohort,
            &radiomics_report::cohort(&args.output, &ok_ids, &request.settings)?,
        )?;
        eprintln!("radiomics of {ok} cases: {}", cohort.display());
    }
    eprintln!("{ok} ok, {failed} failed: {}", csv.display());
    if args.report {
        let csvs = match shard_of {
            None => vec![csv],
            Some((_, n)) => voxseg::review::default_csvs(&args.output)?
                .into_iter()
                .filter(|p| p.to_string_lossy().ends_with(&format!("-of-{n}.csv")))
                .collect(),
        };
        super::report::write(&args.output, &csvs, &args.output.join("report.html"))?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
