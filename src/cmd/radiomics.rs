use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use voxseg::names::{self, Names};
use voxseg::volume::{nifti, write_atomically};
use voxseg_radiomics::{extract, Binning, Input, Params, Settings};

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

#[derive(Serialize)]
struct Structure {
    label: u16,
    name: String,
    voxels: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    features: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Output {
    ct: String,
    labels: String,
    settings: serde_json::Value,
    structures: Vec<Structure>,
}

fn settings_json(s: &Settings) -> serde_json::Value {
    let (key, value) = match s.binning {
        Binning::Width(w) => ("binWidth", serde_json::json!(w)),
        Binning::Count(c) => ("binCount", serde_json::json!(c)),
    };
    let mut m = serde_json::Map::new();
    m.insert(key.into(), value);
    m.insert("distances".into(), serde_json::json!(s.distances));
    m.insert("symmetricalGLCM".into(), serde_json::json!(s.symmetrical_glcm));
    m.insert("gldm_a".into(), serde_json::json!(s.gldm_a));
    m.insert("voxelArrayShift".into(), serde_json::json!(s.voxel_array_shift));
    m.insert("weightingNorm".into(), serde_json::Value::Null);
    m.insert("force2D".into(), serde_json::json!(false));
    serde_json::Value::Object(m)
}

/// Every feature of one structure of the label map.
fn structure(
    image: &[f32],
    labels: &[u16],
    shape: [usize; 3],
    spacing: [f64; 3],
    label: u16,
    name: String,
    settings: &Settings,
) -> Structure {
    let mask: Vec<bool> = labels.iter().map(|&l| l == label).collect();
    let voxels = mask.iter().filter(|&&m| m).count();
    let input = Input { shape, spacing, image, mask: &mask };
    let (error, values) = match extract(&input, settings) {
        Ok(values) => (None, values),
        Err(e) => (Some(e.to_string()), settings.feature_names().into_iter().map(|n| (n, f64::NAN)).collect()),
    };
    let features = values
        .into_iter()
        .map(|(k, v)| (k, serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)))
        .collect();
    Structure { label, name, voxels, error, features }
}

/// Features of `labels` (every non-zero label, or `only`) in `ct`; both must be on one grid.
fn compute(ct: &Path, labels_path: &Path, only: &[u16], names: &Names, settings: &Settings) -> Result<Output> {
    let (image, _) = nifti::read_image(ct)?;
    let (labels, _) = nifti::read_labels(labels_path)?;
    if !labels.grid().matches(image.grid(), 1e-4) {
        bail!(
            "the CT {} and the labels {} are not on the same grid (shapes {:?} and {:?}, affines {:?} and {:?}); resample one onto the other first",
            ct.display(),
            labels_path.display(),
            image.shape(),
            labels.shape(),
            image.grid().affine(),
            labels.grid().affine()
        );
    }
    let [ni, nj, nk] = image.shape();
    let [si, sj, sk] = image.grid().spacing();
    let ids: Vec<u16> = if only.is_empty() {
        labels.label_counts().iter().enumerate().skip(1).filter(|(_, c)| **c > 0).map(|(l, _)| l as u16).collect()
    } else {
        only.to_vec()
    };
    let structures = ids
        .par_iter()
        .map(|&l| {
            structure(image.data(), labels.data(), [nk, nj, ni], [sk, sj, si], l, names::name_of(names, l), settings)
        })
        .collect::<Vec<_>>();
    for s in &structures {
        if let Some(e) = &s.error {
            eprintln!("warning: label {} ({}): {e}; its features are null", s.label, s.name);
        }
    }
    Ok(Output {
        ct: ct.display().to_string(),
        labels: labels_path.display().to_string(),
        settings: settings_json(settings),
        structures,
    })
}

fn write_csv(w: &mut dyn Write, out: &Output, settings: &Settings) -> Result<()> {
    let names = settings.feature_names();
    let mut csv = csv::Writer::from_writer(w);
    let mut header = vec!["label".to_string(), "name".into(), "voxels".into()];
    header.extend(names.iter().cloned());
    csv.write_record(&header)?;
    for s in &out.structures {
        let mut row = vec![s.label.to_string(), s.name.clone(), s.voxels.to_string()];
        row.extend(names.iter().map(|n| match s.features.get(n) {
            Some(serde_json::Value::Number(x)) => x.to_string(),
            _ => String::new(),
        }));
        csv.write_record(&row)?;
    }
    csv.flush()?;
    Ok(())
}

/// A table for reading: one row per feature, one column per structure.
fn write_text(w: &mut dyn Write, out: &Output, settings: &Settings) -> Result<()> {
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
    let (settings, params_label) = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read parameter file {}", path.display()))?;
            let p = Params::from_yaml(&text).with_context(|| format!("parameter file {}", path.display()))?;
            (p.settings, p.label)
        }
        None => (Settings::default(), None),
    };
    let mut only = args.only.clone();
    if only.is_empty() {
        if let Some(l) = params_label {
            only.push(u16::try_from(l).with_context(|| format!("label {l} is not a label id 1..65535"))?);
        }
    }
    let names: Names = match &args.names {
        Some(path) => names::read(path)?,
        None => Names::new(),
    };
    let out = compute(&args.ct, &args.labels, &only, &names, &settings)?;
    let render = |w: &mut dyn Write| -> Result<()> {
        if args.json {
            serde_json::to_writer_pretty(&mut *w, &out)?;
            writeln!(w)?;
            Ok(())
        } else if args.csv {
            write_csv(w, &out, &settings)
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
