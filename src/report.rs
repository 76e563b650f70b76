//! The per-structure report shared by `measure`, `segment` and `batch`: one schema
//! for JSON (`stats.json`) and CSV (`stats.csv`).

use std::io::Write;

use serde::Serialize;
use voxseg_postprocess::{Agreement, Measurement};

use crate::qc::QcFlags;

#[derive(Debug, Clone, Serialize)]
pub struct StructureReport {
    pub name: String,
    /// AAPM TG-263 name, when the model package gives one.
    pub tg263: Option<String>,
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Present in `segment` output (model-based plausibility checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qc: Option<QcFlags>,
}

/// Writes one CSV row per structure, flat columns (RAS mm for coordinates).
pub fn write_structures_csv(out: &mut dyn Write, rows: &[StructureReport]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header: Vec<&str> = vec![
        "label",
        "name",
        "tg263",
        "voxels",
        "volume_ml",
        "n_components",
        "touches_border",
        "surface_area_mm2",
        "sphericity",
        "mean_hu",
        "std_hu",
        "min_hu",
        "max_hu",
        "median_hu",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
    ];
    let with_qc = rows.iter().any(|r| r.qc.is_some());
    if with_qc {
        header.extend(QcFlags::NAMES);
    }
    w.write_record(&header)?;
    for r in rows {
        let m = &r.measurement;
        let c = m.centroid_ras_mm;
        let mut rec = vec![
            m.label.to_string(),
            r.name.clone(),
            r.tg263.clone().unwrap_or_default(),
            m.voxels.to_string(),
            m.volume_ml.to_string(),
            m.n_components.to_string(),
            m.touches_border.to_string(),
            optional(m.surface_area_mm2),
            optional(m.sphericity),
            optional(m.mean_hu),
            optional(m.std_hu),
            optional(m.min_hu),
            optional(m.max_hu),
            optional(m.median_hu),
            optional(c.map(|c| c[0])),
            optional(c.map(|c| c[1])),
            optional(c.map(|c| c[2])),
        ];
        if with_qc {
            rec.extend(r.qc.unwrap_or_default().values().map(|b| b.to_string()));
        }
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct AgreementReport {
    pub name: String,
    #[serde(flatten)]
    pub agreement: Agreement,
}

/// The CSV columns of one [`AgreementReport`], shared by `compare --csv` and
/// `evaluate`'s `cases.csv`.
pub const AGREEMENT_COLUMNS: [&str; 11] = [
    "label",
    "name",
    "dice",
    "jaccard",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_ml",
    "volume_diff_percent",
    "hd_mm",
    "hd95_mm",
    "assd_mm",
];

/// One row's values, in [`AGREEMENT_COLUMNS`] order (empty where undefined).
pub fn agreement_fields(r: &AgreementReport) -> [String; 11] {
    let a = &r.agreement;
    [
        a.label.to_string(),
        r.name.clone(),
        a.dice.to_string(),
        a.jaccard.to_string(),
        a.volume_pred_ml.to_string(),
        a.volume_ref_ml.to_string(),
        a.volume_diff_ml.to_string(),
        optional(a.volume_diff_percent),
        optional(a.hd_mm),
        optional(a.hd95_mm),
        optional(a.assd_mm),
    ]
}

pub fn write_agreement_csv(out: &mut dyn Write, rows: &[AgreementReport]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(AGREEMENT_COLUMNS)?;
    for r in rows {
        w.write_record(agreement_fields(r))?;
    }
    w.flush()?;
    Ok(())
}

/// An optional number as a CSV field: empty when absent.
fn optional(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}
