//! `voxseg evaluate`: a model package run through `segment` on a dataset's cases
//! and compared with their labels (`compare`'s metrics), per case and summarised.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use voxseg_postprocess::compare;
use voxseg_volume::{write_atomically, LabelMap};

use crate::dataset::{Case, Dataset};
use crate::preview::{box_plot, quantile};
use crate::report::{agreement_fields, AgreementReport, AGREEMENT_COLUMNS};
use crate::segment::{prepare, segment, Model};

/// One evaluated case: its agreement per organ, or why it failed.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub structures: Vec<AgreementReport>,
    pub error: Option<String>,
}

/// Which cases: the package's held-out validation cases, or every case.
pub fn cases<'a>(model: &Model, dataset: &'a Dataset, all: bool) -> Result<Vec<&'a Case>> {
    if all {
        return Ok(dataset.cases.iter().collect());
    }
    let Some(record) = &model.package.provenance.training else {
        bail!(
            "model {} records no validation split (it was not made by voxseg train): use --split all",
            model.package.name
        )
    };
    record
        .val_cases
        .iter()
        .map(|id| {
            dataset
                .cases
                .iter()
                .find(|c| &c.id == id)
                .with_context(|| format!("validation case {id} is not in the dataset"))
        })
        .collect()
}

/// The organs model and dataset share, matched by name: (model id, dataset id, name).
pub fn shared_organs(model: &Model, dataset: &Dataset) -> Result<Vec<(u16, u16, String)>> {
    let shared: Vec<(u16, u16, String)> = model
        .package
        .labels
        .iter()
        .filter_map(|l| dataset.labels.iter().find(|(_, n)| *n == l.name).map(|(d, _)| (l.id, *d, l.name.clone())))
        .collect();
    if shared.is_empty() {
        bail!("model {} and dataset {} name no organ in common", model.package.name, dataset.name);
    }
    Ok(shared)
}

/// Segments one case and compares each shared organ its annotation covers.
pub fn evaluate_case(model: &Model, dataset: &Dataset, case: &Case, organs: &[(u16, u16, String)]) -> CaseResult {
    let result = (|| -> Result<Vec<AgreementReport>> {
        let prepared = prepare(&case.image, None, &model.package)?;
        let reference = dataset.check_case(case, prepared.ct.grid())?;
        let predicted = segment(model, &prepared)?.labels;
        // Both maps in the model's ids, holding only the organs compared here.
        let keep = |map: &LabelMap, id_of: &dyn Fn(&(u16, u16, String)) -> u16| {
            map.map(|&v| organs.iter().find(|o| id_of(o) == v && v != 0).map_or(0, |o| o.0))
        };
        let reference = keep(&reference, &|o| o.1);
        let predicted = keep(&predicted, &|o| o.0);
        let ids: Vec<u16> = organs.iter().filter(|o| !case.missing.contains(&o.1)).map(|o| o.0).collect();
        Ok(compare(&predicted, &reference, &ids)?
            .into_iter()
            .map(|a| AgreementReport {
                name: organs.iter().find(|o| o.0 == a.label).map(|o| o.2.clone()).unwrap_or_default(),
                agreement: a,
            })
            .collect())
    })();
    match result {
        Ok(structures) => CaseResult { case: case.id.clone(), structures, error: None },
        Err(e) => CaseResult { case: case.id.clone(), structures: Vec::new(), error: Some(format!("{e:#}")) },
    }
}

/// Per organ over the evaluated cases.
#[derive(Debug, Clone, Serialize)]
pub struct OrganSummary {
    pub name: String,
    pub cases: usize,
    pub dice_mean: f64,
    pub dice_median: f64,
    pub dice_worst: f64,
    pub worst_case: String,
    /// Over cases where both maps hold the organ.
    pub hd95_mm_mean: Option<f64>,
    pub assd_mm_mean: Option<f64>,
    /// Mean of |pred - ref| / ref, in percent.
    pub volume_abs_error_percent_mean: Option<f64>,
}

pub fn summarise(results: &[CaseResult], organs: &[(u16, u16, String)]) -> Vec<OrganSummary> {
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    organs
        .iter()
        .filter_map(|(_, _, name)| {
            let rows: Vec<(&str, &AgreementReport)> = results
                .iter()
                .flat_map(|r| r.structures.iter().filter(|s| &s.name == name).map(move |s| (r.case.as_str(), s)))
                .collect();
            let mut dice: Vec<f64> = rows.iter().map(|(_, s)| s.agreement.dice).collect();
            let (worst_case, worst) =
                rows.iter().map(|(c, s)| (*c, s.agreement.dice)).min_by(|a, b| a.1.total_cmp(&b.1))?;
            dice.sort_by(f64::total_cmp);
            let collect =
                |f: &dyn Fn(&AgreementReport) -> Option<f64>| rows.iter().filter_map(|(_, s)| f(s)).collect::<Vec<_>>();
            Some(OrganSummary {
                name: name.clone(),
                cases: rows.len(),
                dice_mean: mean(&dice).unwrap_or(0.0),
                dice_median: quantile(&dice, 0.5),
                dice_worst: worst,
                worst_case: worst_case.to_string(),
                hd95_mm_mean: mean(&collect(&|s| s.agreement.hd95_mm)),
                assd_mm_mean: mean(&collect(&|s| s.agreement.assd_mm)),
                volume_abs_error_percent_mean: mean(&collect(&|s| s.agreement.volume_diff_percent.map(f64::abs))),
            })
        })
        .collect()
}

/// `cases.csv` (one row per case and organ; failed cases with their error) and
/// `dice_boxplot.png` in `out`, each atomically.
pub fn write(out: &Path, title: &str, results: &[CaseResult], summary: &[OrganSummary]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("cases.csv");
    write_atomically(&path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["case"].iter().chain(&AGREEMENT_COLUMNS).chain(&["error"]))?;
        for r in results {
            if let Some(e) = &r.error {
                let empty = AGREEMENT_COLUMNS.map(|_| "");
                csv.write_record([r.case.as_str()].iter().chain(&empty).chain(&[e.as_str()]))?;
            }
            for s in &r.structures {
                csv.write_record([r.case.clone()].iter().chain(&agreement_fields(s)).chain(&[String::new()]))?;
            }
        }
        csv.flush()
    })
    .with_context(|| format!("cannot write {}", path.display()))?;
    let groups: Vec<(String, Vec<f64>)> = summary
        .iter()
        .map(|o| {
            let dice = results
                .iter()
                .flat_map(|r| r.structures.iter().filter(|s| s.name == o.name).map(|s| s.agreement.dice))
                .collect();
            (o.name.clone(), dice)
        })
        .collect();
    let path = out.join("dice_boxplot.png");
    box_plot(title, &groups).write_png(&path).with_context(|| format!("cannot write {}", path.display()))
}
