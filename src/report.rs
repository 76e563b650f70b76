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
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
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
            opt(m.surface_area_mm2),
            opt(m.sphericity),
            opt(m.mean_hu),
            opt(m.std_hu),
            opt(m.min_hu),
            opt(m.max_hu),
            opt(m.median_hu),
            opt(c.map(|c| c[0])),
            opt(c.map(|c| c[1])),
            opt(c.map(|c| c[2])),
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

pub fn write_agreement_csv(out: &mut dyn Write, rows: &[AgreementReport]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
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
    ])?;
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let a = &r.agreement;
        w.write_record([
            a.label.to_string(),
            r.name.clone(),
            a.dice.to_string(),
            a.jaccard.to_string(),
            a.volume_pred_ml.to_string(),
            a.volume_ref_ml.to_string(),
            a.volume_diff_ml.to_string(),
            opt(a.volume_diff_percent),
            opt(a.hd_mm),
            opt(a.hd95_mm),
            opt(a.assd_mm),
        ])?;
    }
    w.flush()?;
    Ok(())
}
