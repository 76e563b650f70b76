use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use voxseg::names::{self, Names};
use voxseg::postprocess::compare;
use voxseg::report::{write_agreement_csv, AgreementReport};
use voxseg::volume::nifti;

/// Compare a predicted label map with a reference, per label.
///
/// Dice, Jaccard, volumes and their difference (mL and % of the reference), and
/// surface distances in mm with the voxel spacing respected: Hausdorff (max), HD95
/// and average symmetric surface distance (ASSD), with MedPy's definitions (surface
/// = mask minus its 6-connected erosion; exact Euclidean distance transform; HD95 =
/// 95th percentile of both directed distance sets together). Both maps must be on
/// the same grid.
///
/// Example: voxseg compare ../shared/data/totalseg/example_seg_fast.nii.gz
///            ../shared/data/totalseg/example_seg.nii.gz --json
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct CompareArgs {
    /// Predicted label map (NIfTI).
    pub pred: PathBuf,
    /// Reference label map on the same grid.
    pub reference: PathBuf,
    /// Names for label ids: JSON object {"1": "spleen", ...} or CSV `label,name`.
    #[arg(long)]
    pub names: Option<PathBuf>,
    /// Only these label ids (repeatable).
    #[arg(long = "label")]
    pub only: Vec<u16>,
    /// Print JSON: {"pred", "ref", "spacing_mm", "structures": [...]}.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV, one row per label.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Serialize)]
struct Output {
    pred: String,
    #[serde(rename = "ref")]
    reference: String,
    spacing_mm: [f64; 3],
    structures: Vec<AgreementReport>,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let (pred, _) = nifti::read_labels(&args.pred)?;
    let (reference, _) = nifti::read_labels(&args.reference)?;
    let names: Names = match &args.names {
        Some(path) => names::read(path)?,
        None => Names::new(),
    };
    let agreements = compare(&pred, &reference, &args.only)
        .with_context(|| format!("{} and {} cannot be compared", args.pred.display(), args.reference.display()))?;
    let structures: Vec<AgreementReport> = agreements
        .into_iter()
        .map(|a| AgreementReport { name: names::name_of(&names, a.label), agreement: a })
        .collect();
    if args.csv {
        return Ok(write_agreement_csv(&mut std::io::stdout().lock(), &structures)?);
    }
    let out = Output {
        pred: args.pred.display().to_string(),
        reference: args.reference.display().to_string(),
        spacing_mm: pred.grid().spacing(),
        structures,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{} vs {}", out.pred, out.reference);
    println!(
        "{:>6}  {:<24} {:>7} {:>11} {:>11} {:>9} {:>9}",
        "label", "name", "Dice", "pred mL", "ref mL", "HD95 mm", "ASSD mm"
    );
    let mm = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    for s in &out.structures {
        let a = &s.agreement;
        println!(
            "{:>6}  {:<24} {:>7.4} {:>11.3} {:>11.3} {:>9} {:>9}",
            a.label,
            s.name,
            a.dice,
            a.volume_pred_ml,
            a.volume_ref_ml,
            mm(a.hd95_mm),
            mm(a.assd_mm)
        );
    }
    Ok(())
}
