//! Radiomics reports: the features of every structure of a label map, as
//! `voxseg radiomics`, `segment --radiomics` and `batch --radiomics` write them (one
//! copy of the JSON, the wide CSV and the cohort's long CSV).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use voxseg_radiomics::{extract, Binning, Input, Params, Settings};
use voxseg_volume::{Image, LabelMap};

use voxseg_model::ModelPackage;

use crate::names::{self, Names};
use crate::segment::{Prepared, Segmentation};

/// One structure's features: every enabled feature, `null` where pyradiomics gives
/// NaN or refuses the structure (then `error` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Structure {
    pub label: u16,
    pub name: String,
    pub voxels: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub features: serde_json::Map<String, serde_json::Value>,
}

/// `radiomics.json`, and what `voxseg radiomics --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub ct: String,
    pub labels: String,
    pub settings: serde_json::Value,
    pub structures: Vec<Structure>,
}

/// What `--radiomics` asks for: the settings of a pyradiomics parameter file (or its
/// defaults) and the file's `label`, when it names one.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub settings: Settings,
    pub label: Option<u16>,
}

impl Request {
    /// Reads the parameter file `path`; `None` is pyradiomics' defaults.
    pub fn read(path: Option<&Path>) -> Result<Request> {
        let Some(path) = path else { return Ok(Request { settings: Settings::default(), label: None }) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read parameter file {}", path.display()))?;
        let p = Params::from_yaml(&text).with_context(|| format!("parameter file {}", path.display()))?;
        let label = p
            .label
            .map(|l| {
                u16::try_from(l).with_context(|| format!("{}: label {l} is not a label id 1..65535", path.display()))
            })
            .transpose()?;
        Ok(Request { settings: p.settings, label })
    }
}

/// The settings as pyradiomics spells them, for the report's `settings`.
pub fn settings_json(s: &Settings) -> serde_json::Value {
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

/// The non-zero labels present in `labels`, in increasing order.
pub fn present_labels(labels: &LabelMap) -> Vec<u16> {
    labels.label_counts().iter().enumerate().skip(1).filter(|(_, c)| **c > 0).map(|(l, _)| l as u16).collect()
}

/// Every feature of one structure of the label map (`[z, y, x]` arrays).
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

/// The features of the structures `ids` of `labels` in `ct` (HU, on the labels' grid),
/// named by `names`; `ct_name` and `labels_name` say in the report where they came from.
pub fn compute(
    ct: &Image,
    labels: &LabelMap,
    ids: &[u16],
    names: &Names,
    settings: &Settings,
    ct_name: &str,
    labels_name: &str,
) -> Result<Report> {
    if !labels.grid().matches(ct.grid(), 1e-4) {
        bail!(
            "the CT {ct_name} and the labels {labels_name} are not on the same grid (shapes {:?} and {:?}, affines {:?} and {:?}); resample one onto the other first",
            ct.shape(),
            labels.shape(),
            ct.grid().affine(),
            labels.grid().affine()
        );
    }
    // NIfTI buffers run i fastest: [z, y, x] for pyradiomics is [k, j, i].
    let [ni, nj, nk] = ct.shape();
    let [si, sj, sk] = ct.grid().spacing();
    let structures = ids
        .par_iter()
        .map(|&l| {
            structure(ct.data(), labels.data(), [nk, nj, ni], [sk, sj, si], l, names::name_of(names, l), settings)
        })
        .collect();
    Ok(Report {
        ct: ct_name.to_string(),
        labels: labels_name.to_string(),
        settings: settings_json(settings),
        structures,
    })
}

/// The wide CSV: one row per structure (label, name, voxels), one column per feature
/// of `settings`; empty cells for null features.
pub fn write_csv(w: &mut dyn Write, report: &Report, settings: &Settings) -> Result<()> {
    let names = settings.feature_names();
    let mut csv = csv::Writer::from_writer(w);
    let mut header = vec!["label".to_string(), "name".into(), "voxels".into()];
    header.extend(names.iter().cloned());
    csv.write_record(&header)?;
    for s in &report.structures {
        let mut row = vec![s.label.to_string(), s.name.clone(), s.voxels.to_string()];
        row.extend(names.iter().map(|n| cell(s.features.get(n))));
        csv.write_record(&row)?;
    }
    csv.flush()?;
    Ok(())
}

fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::Number(x)) => x.to_string(),
        _ => String::new(),
    }
}

/// The report as pretty JSON, ending with a newline.
pub fn to_json(report: &Report) -> Result<Vec<u8>> {
    let mut buf = serde_json::to_vec_pretty(report)?;
    buf.push(b'\n');
    Ok(buf)
}

/// The features of every organ of the model (or the parameter file's `label`) in the
/// CT as it was read (its own grid, in HU) with the final label map, written as
/// `radiomics.json` and `radiomics.csv` into `out` beside `labels.nii.gz`.
pub fn write_for_segmentation(
    out: &Path,
    package: &ModelPackage,
    prepared: &Prepared,
    seg: &Segmentation,
    request: &Request,
) -> Result<Report> {
    let names: Names = package.labels.iter().map(|l| (l.id, l.name.clone())).collect();
    let ids: Vec<u16> = match request.label {
        Some(l) => vec![l],
        None => package.labels.iter().map(|l| l.id).collect(),
    };
    let ct_name = prepared.path.display().to_string();
    let labels_name = out.join("labels.nii.gz").display().to_string();
    let report = compute(&prepared.ct, &seg.labels, &ids, &names, &request.settings, &ct_name, &labels_name)?;
    write_files(out, &report, &request.settings)?;
    Ok(report)
}

/// The files `segment --radiomics` writes beside stats.json.
pub const JSON_NAME: &str = "radiomics.json";
pub const CSV_NAME: &str = "radiomics.csv";

/// Writes `radiomics.json` and `radiomics.csv` into `dir`, each atomically.
pub fn write_files(dir: &Path, report: &Report, settings: &Settings) -> Result<()> {
    let json = to_json(report)?;
    let mut csv = Vec::new();
    write_csv(&mut csv, report, settings)?;
    for (name, bytes) in [(JSON_NAME, &json), (CSV_NAME, &csv)] {
        let path = dir.join(name);
        voxseg_volume::write_atomically(&path, |w| w.write_all(bytes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Reads a `radiomics.json`.
pub fn read_json(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a voxseg radiomics report", path.display()))
}

/// The columns of a batch's long-format cohort CSV.
pub const COHORT_COLUMNS: [&str; 5] = ["case_id", "label", "name", "feature", "value"];

/// The cohort CSV of a batch: `radiomics.csv`, or `radiomics-shard-I-of-N.csv` for one
/// shard of a `--shard I/N` run.
pub fn cohort_csv_name(shard: Option<(u32, u32)>) -> String {
    match shard {
        Some((i, n)) => format!("radiomics-shard-{i}-of-{n}.csv"),
        None => CSV_NAME.into(),
    }
}

/// The reports of the finished cases `ids` of a batch, read from `out/<case>/radiomics.json`;
/// an error when one is missing or was computed with other settings (a batch
/// resumed with other radiomics options than it began with).
pub fn cohort(out: &Path, ids: &[String], settings: &Settings) -> Result<Vec<(String, Report)>> {
    let want = settings_json(settings);
    ids.iter()
        .map(|id| {
            let path = out.join(id).join(JSON_NAME);
            if !path.is_file() {
                bail!(
                    "case {id} finished without --radiomics ({} is missing): resume with the options the batch began with, or use a new output folder",
                    path.display()
                );
            }
            let report = read_json(&path)?;
            if report.settings != want {
                bail!(
                    "{}: computed with the settings {}, not this run's {want}: resume with the options the batch began with, or use a new output folder",
                    path.display(),
                    report.settings
                );
            }
            Ok((id.clone(), report))
        })
        .collect()
}

/// Writes the cohort CSV `path` (atomically): one row per case, structure and
/// feature, in the order of `cases`; an empty `value` where the feature is null.
pub fn write_cohort_csv(path: &Path, cases: &[(String, Report)]) -> Result<()> {
    voxseg_volume::write_atomically(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COHORT_COLUMNS)?;
        for (case, report) in cases {
            for s in &report.structures {
                let label = s.label.to_string();
                for (feature, value) in &s.features {
                    csv.write_record([case, &label, &s.name, feature, &cell(Some(value))])?;
                }
            }
        }
        csv.flush()
    })
    .with_context(|| format!("cannot write {}", path.display()))
}
