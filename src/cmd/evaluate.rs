use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use voxseg::dataset::Dataset;
use voxseg::evaluate::{cases, evaluate_case, shared_organs, summarise, write, CaseResult, OrganSummary};
use voxseg::segment::Model;

/// Measure how well a model package segments a labelled dataset.
///
/// Runs `segment` (the whole pipeline, on the CT's own grid) on each case and
/// compares the result with the case's label map using `compare`'s metrics: Dice,
/// HD95 and ASSD in mm, volume error. Organs are matched by name between the
/// package and dataset.json; organs a case lists as "missing" are skipped there.
///
/// --split val (the default) evaluates only the cases the package's training run
/// held out (recorded in its model.toml by `voxseg train`): the honest accuracy
/// figure. --split all evaluates every case, including those trained on, which
/// overstates accuracy: it is printed as such.
///
/// Writes OUTDIR/cases.csv (one row per case and organ; failed cases with their
/// error), OUTDIR/summary.json (per organ: mean, median and worst Dice with its
/// case, mean HD95, ASSD and absolute volume error) and OUTDIR/dice_boxplot.png.
/// Exit code 1 when a case failed (the others are still evaluated).
///
/// Example: voxseg evaluate --model models/spleen --data Task09_Spleen -o eval
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Model package: a directory with model.toml, or the name of one in ./models,
    /// $VOXSEG_MODELS, beside the binary or in ~/.local/share/voxseg/models.
    #[arg(long)]
    pub model: String,
    /// Dataset folder (holding dataset.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// val: the package's held-out cases; all: every case (includes training cases).
    #[arg(long, default_value = "val", value_parser = ["val", "all"])]
    pub split: String,
    #[command(flatten)]
    pub run_on: super::DeviceArgs,
    /// Print the summary as JSON (as summary.json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    dataset: &'a str,
    split: &'a str,
    includes_training_cases: bool,
    cases: usize,
    failed: Vec<(&'a str, &'a str)>,
    organs: &'a [OrganSummary],
}

pub fn run(args: EvaluateArgs) -> Result<ExitCode> {
    let dataset = Dataset::open(&args.data)?;
    let model = Model::load(Some(&args.model), args.run_on.apply()?)?;
    model.announce();
    let all = args.split == "all";
    let selected = cases(&model, &dataset, all)?;
    let organs = shared_organs(&model, &dataset)?;
    let bar = ProgressBar::new(selected.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} cases, {msg} [{elapsed_precise}, ETA {eta}]")?);
    let results: Vec<CaseResult> = selected
        .iter()
        .map(|case| {
            bar.set_message(case.id.clone());
            let r = evaluate_case(&model, &dataset, case, &organs);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let organs_summary = summarise(&results, &organs);
    let includes_training_cases = all && model.package.provenance.training.is_some();
    let summary = Summary {
        model: &model.package.name,
        dataset: &dataset.name,
        split: &args.split,
        includes_training_cases,
        cases: results.len(),
        failed: results.iter().filter_map(|r| r.error.as_deref().map(|e| (r.case.as_str(), e))).collect(),
        organs: &organs_summary,
    };
    let title = format!("{} on {} ({}, {} cases): Dice", summary.model, summary.dataset, summary.split, summary.cases);
    write(&args.output, &title, &results, &organs_summary)?;
    let json = serde_json::to_vec_pretty(&summary)?;
    voxseg::volume::write_atomically(&args.output.join("summary.json"), |w| w.write_all(&json))?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&json));
    } else {
        if includes_training_cases {
            eprintln!(
                "note: --split all includes the cases this model trained on: these numbers overstate its accuracy"
            );
        }
        println!(
            "{:<24} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "organ", "cases", "mean", "median", "worst", "HD95 mm", "ASSD mm"
        );
        let mm = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        for o in &organs_summary {
            println!(
                "{:<24} {:>5} {:>8.4} {:>8.4} {:>8.4} {:>9} {:>9}",
                o.name,
                o.cases,
                o.dice_mean,
                o.dice_median,
                o.dice_worst,
                mm(o.hd95_mm_mean),
                mm(o.assd_mm_mean)
            );
        }
        for (case, error) in &summary.failed {
            eprintln!("failed: {case}: {error}");
        }
    }
    Ok(if summary.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
