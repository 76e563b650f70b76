//! Training datasets in the Medical Segmentation Decathlon / nnU-Net layout:
//! `dataset.json` beside `imagesTr/` and `labelsTr/`.
//!
//! Both label conventions are read: MSD's `{"0": "background", "1": "spleen"}` and
//! nnU-Net v2's `{"background": 0, "spleen": 1}`. Cases come from MSD's `training`
//! list (`{"image", "label"}`, paths relative to the dataset folder), or, without
//! one, from nnU-Net v2's file names (`imagesTr/CASE_0000.nii.gz` with
//! `labelsTr/CASE.nii.gz`). A training entry may add `"missing": ["organ", ...]`:
//! organs that case's annotator did not draw (trained with a masked loss).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use voxseg_volume::nifti;

/// Everything wrong with a dataset, named by file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {reason}")]
    Description { path: PathBuf, reason: String },
    #[error("dataset {dir}: {problems} problem(s):\n  {}", list.join("\n  "))]
    Cases { dir: PathBuf, problems: usize, list: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub image: PathBuf,
    pub label: PathBuf,
    /// Class ids this case's annotation does not cover.
    pub missing: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub dir: PathBuf,
    /// Foreground classes `(id, name)`, ids 1..=K in order (0 is background).
    pub labels: Vec<(u16, String)>,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Description {
    #[serde(default)]
    name: Option<String>,
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    training: Option<Vec<Entry>>,
    #[serde(default)]
    file_ending: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    image: String,
    label: String,
    #[serde(default)]
    missing: Vec<Value>,
}

impl Dataset {
    /// Reads `dir/dataset.json` and checks that every listed file exists. Image
    /// contents are checked when they are read ([`Dataset::check_case`]).
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        let path = dir.join("dataset.json");
        let fail = |reason: String| DatasetError::Description { path: path.clone(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let description: Description = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let labels = parse_labels(&description.labels).map_err(fail)?;
        let name = description
            .name
            .clone()
            .unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let mut problems = Vec::new();
        let cases = match &description.training {
            Some(entries) => entries
                .iter()
                .filter_map(|e| match entry_case(dir, e, &labels) {
                    Ok(case) => Some(case),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                })
                .collect(),
            None => discover(dir, description.file_ending.as_deref().unwrap_or(".nii.gz")).map_err(fail)?,
        };
        if cases.is_empty() && problems.is_empty() {
            return Err(fail("lists no training cases".into()));
        }
        for case in &cases {
            for file in [&case.image, &case.label] {
                if !file.is_file() {
                    problems.push(format!("{}: case {}: no such file", file.display(), case.id));
                }
            }
        }
        let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        for pair in ids.windows(2).filter(|w| w[0] == w[1]) {
            problems.push(format!("case id {} appears more than once", pair[0]));
        }
        if !problems.is_empty() {
            return Err(DatasetError::Cases { dir: dir.to_path_buf(), problems: problems.len(), list: problems });
        }
        Ok(Dataset { name, dir: dir.to_path_buf(), labels, cases })
    }

    /// Classes including background.
    pub fn classes(&self) -> usize {
        self.labels.len() + 1
    }

    /// Checks what only the voxels can tell: the label map lies on the image's grid
    /// and holds only declared ids. Returns the label map on success.
    pub fn check_case(&self, case: &Case, image_grid: &voxseg_volume::Grid) -> anyhow::Result<voxseg_volume::LabelMap> {
        let (labels, _) = nifti::read_labels(&case.label)?;
        if !labels.grid().matches(image_grid, 1e-3) {
            anyhow::bail!(
                "{}: label grid {:?} does not match its image {} ({:?}, or a different affine)",
                case.label.display(),
                labels.shape(),
                case.image.display(),
                image_grid.shape()
            );
        }
        let counts = labels.label_counts();
        if let Some(bad) = (self.classes()..counts.len()).find(|&id| counts[id] > 0) {
            anyhow::bail!(
                "{}: holds label {bad}, which dataset.json does not declare (labels 0..={})",
                case.label.display(),
                self.labels.len()
            );
        }
        Ok(labels)
    }
}

/// `{"0": "background", "1": "liver"}` or `{"background": 0, "liver": 1}` -> foreground
/// classes in id order; ids must be 0..=K with 0 the background.
fn parse_labels(map: &BTreeMap<String, Value>) -> Result<Vec<(u16, String)>, String> {
    let mut pairs = Vec::new();
    for (key, value) in map {
        let pair = match (key.parse::<u16>(), value) {
            (Ok(id), Value::String(name)) => (id, name.clone()),
            (_, Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(id) => (id, key.clone()),
                None => return Err(format!("label {key:?}: id {n} is not a small whole number")),
            },
            _ => return Err(format!("labels: {key:?}: {value} is neither an id nor a name")),
        };
        pairs.push(pair);
    }
    pairs.sort();
    let ids: Vec<u16> = pairs.iter().map(|p| p.0).collect();
    let want: Vec<u16> = (0..pairs.len() as u16).collect();
    if ids != want || pairs.len() < 2 {
        return Err(format!("labels must be background 0 and organs 1..K, each once (found ids {ids:?})"));
    }
    Ok(pairs.into_iter().skip(1).collect())
}

fn case_id(label: &Path) -> String {
    let name = label.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_end_matches(".gz").trim_end_matches(".nii").to_string()
}

fn entry_case(dir: &Path, entry: &Entry, labels: &[(u16, String)]) -> Result<Case, String> {
    let label = dir.join(&entry.label);
    let id = case_id(&label);
    let missing = entry
        .missing
        .iter()
        .map(|m| {
            labels
                .iter()
                .find(|(i, n)| m.as_str() == Some(n) || m.as_u64() == Some(u64::from(*i)))
                .map(|(i, _)| *i)
                .ok_or_else(|| format!("case {id}: missing organ {m} is not one of the dataset's labels"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Case { id, image: dir.join(&entry.image), label, missing })
}

/// nnU-Net v2: every `labelsTr/CASE{ending}` with its `imagesTr/CASE_0000{ending}`.
fn discover(dir: &Path, ending: &str) -> Result<Vec<Case>, String> {
    let labels_dir = dir.join("labelsTr");
    let entries =
        std::fs::read_dir(&labels_dir).map_err(|e| format!("no training list and {}: {e}", labels_dir.display()))?;
    let mut cases: Vec<Case> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(ending)?.to_string();
            (!id.starts_with('.')).then(|| Case {
                image: dir.join("imagesTr").join(format!("{id}_0000{ending}")),
                label: e.path(),
                id,
                missing: Vec::new(),
            })
        })
        .collect();
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(cases)
}

/// Splits case indices into (training, validation): the cases named in `explicit`,
/// or a `fraction` of them picked reproducibly from `seed` (at least one when there
/// are two cases or more, and never all).
pub fn split(
    cases: &[Case],
    explicit: &[String],
    fraction: f64,
    seed: u64,
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let val: Vec<usize> = if explicit.is_empty() {
        let n = cases.len();
        let k = if n < 2 { 0 } else { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) };
        let mut order: Vec<usize> = (0..n).collect();
        crate::rng::Rng::new(seed ^ 0x5EED_5B17).shuffle(&mut order);
        let mut val = order[..k].to_vec();
        val.sort_unstable();
        val
    } else {
        explicit
            .iter()
            .map(|id| {
                cases
                    .iter()
                    .position(|c| &c.id == id)
                    .ok_or_else(|| anyhow::anyhow!("validation case {id:?} is not in the dataset"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let train: Vec<usize> = (0..cases.len()).filter(|i| !val.contains(i)).collect();
    if train.is_empty() {
        anyhow::bail!("no case is left for training once the validation cases are set aside");
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-dataset-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["imagesTr", "labelsTr"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    #[test]
    fn reads_nnunet_v2_names_and_labels() {
        let dir = folder("v2");
        for case in ["liver_002", "liver_001"] {
            std::fs::write(dir.join(format!("imagesTr/{case}_0000.nii.gz")), b"").unwrap();
            std::fs::write(dir.join(format!("labelsTr/{case}.nii.gz")), b"").unwrap();
        }
        let json = r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
                       "numTraining": 2, "file_ending": ".nii.gz"}"#;
        std::fs::write(dir.join("dataset.json"), json).unwrap();
        let d = Dataset::open(&dir).unwrap();
        assert_eq!(d.labels, vec![(1, "liver".to_string()), (2, "tumour".to_string())]);
        let ids: Vec<&str> = d.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["liver_001", "liver_002"]);
        assert_eq!(d.cases[0].image, dir.join("imagesTr/liver_001_0000.nii.gz"));
    }

    #[test]
    fn msd_missing_organs_and_label_errors() {
        let dir = folder("msd");
        std::fs::write(dir.join("imagesTr/a.nii.gz"), b"").unwrap();
        std::fs::write(dir.join("labelsTr/a.nii.gz"), b"").unwrap();
        let json = r#"{"labels": {"0": "background", "1": "liver", "2": "spleen"},
                       "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz", "missing": ["spleen"]}]}"#;
        std::fs::write(dir.join("dataset.json"), json).unwrap();
        assert_eq!(Dataset::open(&dir).unwrap().cases[0].missing, vec![2]);

        let gap = r#"{"labels": {"0": "background", "2": "spleen"}, "training": []}"#;
        std::fs::write(dir.join("dataset.json"), gap).unwrap();
        let err = Dataset::open(&dir).unwrap_err().to_string();
        assert!(err.contains("background 0 and organs 1..K"), "{err}");

        let unknown = r#"{"labels": {"0": "background", "1": "liver"},
                          "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz", "missing": ["kidney"]}]}"#;
        std::fs::write(dir.join("dataset.json"), unknown).unwrap();
        let err = Dataset::open(&dir).unwrap_err().to_string();
        assert!(err.contains("missing organ \"kidney\" is not one of the dataset's labels"), "{err}");
    }

    #[test]
    fn the_split_is_reproducible_and_never_empties_training() {
        let cases: Vec<Case> = (0..10)
            .map(|i| Case { id: format!("c{i}"), image: PathBuf::new(), label: PathBuf::new(), missing: vec![] })
            .collect();
        let (train, val) = split(&cases, &[], 0.2, 7).unwrap();
        assert_eq!((train.len(), val.len()), (8, 2));
        assert_eq!(split(&cases, &[], 0.2, 7).unwrap().1, val);
        assert_ne!(split(&cases, &[], 0.2, 8).unwrap().1, val, "another seed, another split");
        assert_eq!(split(&cases[..1], &[], 0.2, 7).unwrap(), (vec![0], vec![]));
        assert!(split(&cases[..1], &["c0".into()], 0.2, 7).is_err());
    }
}
