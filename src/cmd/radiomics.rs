use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use voxseg::names::{self, Names};
use voxseg::radiomics_report::{self as report, Report};
use voxseg::volume::{nifti, write_atomically};
use voxseg_radiomics::Settings;

/// Radiomics features of every structure of a label map, as pyradiomics computes them.
///
/// pyradiomics' default extractor (pyradiomics 3.0.1), on the original image:
///   shape       14 features (marching-cubes MeshVolume, SurfaceArea, Sphericity,
///               Maximum3DDiameter and the 2-D diameters, PCA axis lengths, ...)
///   firstorder  18 (Mean, Median, percentiles, Energy, Entropy, Skewness, ...)
///   glcm        24, glrlm 16, glszm 16, gldm 14, ngtdm 5 (texture)
/// 107 features per structure, named as pyradiomics names them
/// (original_firstorder_Mean, original_shape_VoxelVolume, original_glcm_Contrast, ...).
///
/// Settings are pyradiomics' defaults: binWidth 25, distances [1], symmetricalGLCM
/// true, texture matrices per direction (13 or 26) with features averaged over the
/// directions, weightingNorm none, gldm_a 0, voxelArrayShift 0, no resampling, 3-D.
/// --params reads a pyradiomics parameter YAML (setting:, featureClass:,
/// imageType: Original); keys it cannot honour are refused by name (exit 2).
///
/// Structures pyradiomics refuses (absent, a single voxel, extending in fewer than
/// minimumROIDimensions = 2 dimensions) are reported with "error" and every feature null;
/// features pyradiomics gives as NaN are null too (empty cells in CSV).
///
/// Examples:
///   voxseg radiomics ../shared/data/totalseg/example_ct_sm.nii.gz
///       ../shared/data/totalseg/example_seg_fast.nii.gz
///       --names ../shared/data/totalseg/class_map_total_v2.json --label 1 --label 5 --json
///   voxseg radiomics ct.nii.gz liver.nii.gz --params Params.yaml --csv -o liver.csv
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct RadiomicsArgs {
    /// The CT (NIfTI, HU).
    pub ct: PathBuf,
    /// Label map or binary mask on exactly the CT's grid (NIfTI).
    pub labels: PathBuf,
    /// Only these label ids (repeatable) [default: every non-zero label, or the
    /// parameter file's `label`].
    #[arg(long = "label", value_name = "N")]
    pub only: Vec<u16>,
    /// Names for label ids: JSON object {"1": "spleen", ...} or CSV `label,name`.
    #[arg(long)]
    pub names: Option<PathBuf>,
    /// Write JSON: {"ct", "labels", "settings", "structures": [{"label", "name",
    /// "voxels", "features": {...}}]}.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Write CSV: one row per structure, one column per feature.
    #[arg(long)]
    pub csv: bool,
    /// pyradiomics parameter file (YAML).
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Features of `labels` (every non-zero label, or `only`) in `ct`; both must be on one grid.
fn compute(ct: &Path, labels_path: &Path, only: &[u16], names: &Names, settings: &Settings) -> Result<Report> {
    let (image, _) = nifti::read_image(ct)?;
    let (labels, _) = nifti::read_labels(labels_path)?;
    let ids = if only.is_empty() { report::present_labels(&labels) } else { only.to_vec() };
    let (ct_name, labels_name) = (ct.display().to_string(), labels_path.display().to_string());
    let out = report::compute(&image, &labels, &ids, names, settings, &ct_name, &labels_name)?;
    for s in &out.structures {
        if let Some(e) = &s.error {
            eprintln!("warning: label {} ({}): {e}; its features are null", s.label, s.name);
        }
    }
    Ok(out)
}

/// A table for reading: one row per feature, one column per structure.
fn write_text(w: &mut dyn Write, out: &Report, settings: &Settings) -> Result<()> {
    let names = settings.feature_names();
    write!(w, "{:<56}", "feature")?;
    for s in &out.structures {
        write!(w, " {:>16}", format!("{} {}", s.label, s.name).chars().take(16).collect::<String>())?;
    }
    writeln!(w)?;
    for n in &names {
        write!(w, "{n:<56}")?;
        for s in &out.structures {
            match s.features.get(n).and_then(|v| v.as_f64()) {
                Some(x) => write!(w, " {:>16}", format!("{x:.6}"))?,
                None => write!(w, " {:>16}", "-")?,
            }
        }
        writeln!(w)?;
    }
    Ok(())
}

pub fn run(args: RadiomicsArgs) -> Result<()> {
    let report::Request { settings, label } = report::Request::read(args.params.as_deref())?;
    let mut only = args.only.clone();
    if only.is_empty() {
        only.extend(label);
    }
    let names: Names = match &args.names {
        Some(path) => names::read(path)?,
        None => Names::new(),
    };
    let out = compute(&args.ct, &args.labels, &only, &names, &settings)?;
    let render = |w: &mut dyn Write| -> Result<()> {
        if args.json {
            Ok(w.write_all(&report::to_json(&out)?)?)
        } else if args.csv {
            report::write_csv(w, &out, &settings)
        } else {
            write_text(w, &out, &settings)
        }
    };
    // Rendered whole, then written at once (standard output is line-buffered).
    let mut buf = Vec::new();
    render(&mut buf)?;
    match &args.output {
        Some(path) => {
            write_atomically(path, |w| w.write_all(&buf)).with_context(|| format!("cannot write {}", path.display()))
        }
        None => Ok(std::io::stdout().lock().write_all(&buf)?),
    }
}
