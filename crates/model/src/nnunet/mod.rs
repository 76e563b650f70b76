//! nnU-Net v2 models: training folders read as nnU-Net writes them, its two CT
//! networks, its preprocessing and its sliding-window inference, each transcribed from
//! nnunetv2 / dynamic_network_architectures and checked against an independent numpy
//! transcription (`scripts/make_nnunet_fixtures.py`).

mod folder;
mod network;
pub mod pipeline;
mod tg263;
mod window;

pub use folder::{is_folder, read_state_dict, NnunetFolder, NnunetPlan, Resampling};
pub use network::{from_state_dict, NnunetConfig, NnunetEnsemble, NnunetNet, StateDict, UnetClass};
pub use tg263::tg263_name;
pub use window::{gaussian, predict_logit_rows, steps, WindowOptions};

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use voxseg_postprocess::Cleanup;

use crate::package::{Label, ModelPackage, Network, Preprocess, Provenance};
use crate::Error;

/// `[network]` of an nnU-Net package: the U-Net, the plans inference follows, and how
/// the sliding window runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnunetNetwork {
    /// Folds whose weights the package holds, in order (`weights` has one network each).
    pub folds: Vec<String>,
    /// Tile step as a fraction of the patch (nnU-Net's default 0.5).
    #[serde(default = "half")]
    pub tile_step: f64,
    /// Test-time mirroring over the plan's `mirror_axes` (nnU-Net's default is on;
    /// TotalSegmentator runs without, and so does voxseg unless this is set).
    #[serde(default)]
    pub mirror: bool,
    pub unet: NnunetConfig,
    pub plan: NnunetPlan,
}

fn half() -> f64 {
    0.5
}

impl NnunetNetwork {
    pub fn window(&self) -> WindowOptions {
        WindowOptions {
            patch: self.plan.patch_size,
            step: self.tile_step,
            mirror_axes: if self.mirror { self.plan.mirror_axes.clone() } else { vec![] },
        }
    }
}

/// `[network]` of a package combining several nnU-Net networks into one label table,
/// as TotalSegmentator combines the five networks of its 1.5 mm `total` task: each
/// network runs on its own (its plans, preprocessing, sliding window, export), then its
/// labels are written over the combined map in order, so where several networks label
/// a voxel the later one's label stays, and no network's background erases a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnunetCombined {
    /// The networks, in the order they run (later wins).
    pub parts: Vec<NnunetPart>,
}

/// One network of a combined package and where its labels go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnunetPart {
    /// The training folder's dataset, e.g. `Dataset291_TotalSegmentator_part1_organs_1559subj`.
    pub dataset: String,
    /// The package label id of this network's class 1, 2, ... in order (dataset.json's
    /// ids): class `c` is written as `label_ids[c - 1]`.
    pub label_ids: Vec<u16>,
    pub nnunet: NnunetNetwork,
}

impl NnunetCombined {
    /// Classes of the combined label table, background included.
    pub fn classes(&self) -> usize {
        1 + self.parts.iter().flat_map(|p| p.label_ids.iter().copied()).max().unwrap_or(0) as usize
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.parts.is_empty() {
            return Err("a combined nnU-Net package needs at least one network".into());
        }
        let classes = self.classes();
        for part in &self.parts {
            let n = &part.nnunet;
            let fail = |reason: String| Err(format!("network {}: {reason}", part.dataset));
            if n.folds.is_empty() {
                return fail("needs at least one fold".into());
            }
            n.unet.validate().or_else(fail)?;
            if part.label_ids.len() + 1 != n.unet.classes {
                return fail(format!(
                    "{} label_ids for a network of {} classes (one per class but background)",
                    part.label_ids.len(),
                    n.unet.classes
                ));
            }
        }
        match (1..classes as u16).find(|id| !self.parts.iter().any(|p| p.label_ids.contains(id))) {
            Some(id) => Err(format!("label {id} comes from no network")),
            None => Ok(()),
        }
    }
}

/// The combined label table of networks whose classes 1, 2, ... are named `classes[n]`:
/// every name once, ids in order of first appearance (a name several networks share
/// keeps one id), and for each network the id of each of its classes.
pub fn label_table(classes: &[Vec<&str>]) -> (Vec<String>, Vec<Vec<u16>>) {
    let mut names: Vec<String> = Vec::new();
    let ids = classes
        .iter()
        .map(|network| {
            network
                .iter()
                .map(|&name| {
                    let at = names.iter().position(|n| n == name).unwrap_or_else(|| {
                        names.push(name.to_string());
                        names.len() - 1
                    });
                    at as u16 + 1
                })
                .collect()
        })
        .collect();
    (names, ids)
}

/// A package label from a dataset.json class name: its TG-263 name where known, no
/// clean-up (nnU-Net's output is its argmax).
fn label(id: u16, name: &str) -> Label {
    Label {
        id,
        name: name.to_string(),
        tg263: tg263_name(name).map(str::to_string),
        qc: Default::default(),
        cleanup: Cleanup::NONE,
    }
}

impl NnunetFolder {
    /// This folder's network as a package runs it (nnU-Net's defaults: step 0.5, and no
    /// mirroring, as TotalSegmentator runs).
    fn network(&self) -> NnunetNetwork {
        NnunetNetwork {
            folds: self.folds.iter().map(|f| f.0.clone()).collect(),
            tile_step: 0.5,
            mirror: false,
            unet: self.network.clone(),
            plan: self.plan.clone(),
        }
    }

    /// The `[preprocess]` this folder's plans mean (voxseg states spacings as (i, j, k)).
    fn preprocess(&self) -> Preprocess {
        // The plans' spacing is in network axis order.
        let kji = pipeline::inverse(self.plan.transpose_forward).map(|d| self.plan.spacing[d]);
        Preprocess {
            orientation: "RAS".into(),
            spacing_mm: [kji[2], kji[1], kji[0]],
            intensity: self.plan.intensity.clone(),
            stride: 2,
            region_crop: None,
            median_at_mm: None,
            segment: None,
        }
    }

    fn training(&self) -> String {
        format!("{} ({}, {}, {})", self.dataset, self.trainer, self.plans_name, self.configuration)
    }

    /// The voxseg package this folder makes (weights in `weights`, relative to `dir`):
    /// labels from dataset.json with TG-263 names where known, the plans as data, and
    /// provenance naming the folder.
    pub fn package(&self, name: &str, weights: &str, dir: &Path) -> ModelPackage {
        ModelPackage {
            name: name.to_string(),
            weights: weights.to_string(),
            network: Network::Nnunet(Box::new(self.network())),
            labels: self.labels.iter().map(|(id, name)| label(*id, name)).collect(),
            preprocess: self.preprocess(),
            provenance: Provenance {
                trained_on: format!(
                    "nnU-Net v2 training {}; see the folder's dataset.json for the data",
                    self.training()
                ),
                measured_on: "not measured by voxseg".into(),
                source: Some(format!("nnU-Net folder {}", self.path.display())),
                licence: None,
                training: None,
            },
            dir: dir.to_path_buf(),
        }
    }

    /// The package combining `folders`' networks, run in this order (later wins), into
    /// one label table ([`label_table`]). `[preprocess]` states the first network's
    /// spacing and intensity; each network runs with its own plans.
    pub fn combined_package(folders: &[NnunetFolder], name: &str, weights: &str, dir: &Path) -> ModelPackage {
        let classes: Vec<Vec<&str>> =
            folders.iter().map(|f| f.labels.iter().map(|(_, n)| n.as_str()).collect()).collect();
        let (names, ids) = label_table(&classes);
        let parts = folders
            .iter()
            .zip(ids)
            .map(|(f, label_ids)| NnunetPart { dataset: f.dataset.clone(), label_ids, nnunet: f.network() })
            .collect();
        let trainings: Vec<String> = folders.iter().map(NnunetFolder::training).collect();
        let paths: Vec<String> = folders.iter().map(|f| f.path.display().to_string()).collect();
        ModelPackage {
            name: name.to_string(),
            weights: weights.to_string(),
            network: Network::NnunetCombined(NnunetCombined { parts }),
            labels: names.iter().enumerate().map(|(i, n)| label(i as u16 + 1, n)).collect(),
            preprocess: folders[0].preprocess(),
            provenance: Provenance {
                trained_on: format!(
                    "nnU-Net v2 trainings {}; see each folder's dataset.json for the data",
                    trainings.join(", ")
                ),
                measured_on: "not measured by voxseg".into(),
                source: Some(format!("nnU-Net folders {}", paths.join(", "))),
                licence: None,
                training: None,
            },
            dir: dir.to_path_buf(),
        }
    }

    /// Every fold's network with its checkpoint's weights.
    pub fn load(&self, device: &Device) -> Result<NnunetEnsemble, Error> {
        let folds = self
            .folds
            .iter()
            .map(|(_, checkpoint)| {
                let dict = read_state_dict(checkpoint)?;
                from_state_dict(&self.network, &dict, device)
                    .map_err(|problems| Error::WeightsMismatch { path: checkpoint.clone(), problems })
            })
            .collect::<Result<_, _>>()?;
        Ok(NnunetEnsemble { folds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_ids_follow_first_appearance_and_shared_names_keep_one() {
        let (names, ids) = label_table(&[vec!["spleen", "liver"], vec!["kidney_left", "liver"], vec!["spleen"]]);
        assert_eq!(names, ["spleen", "liver", "kidney_left"]);
        assert_eq!(ids, [vec![1, 2], vec![3, 2], vec![1]]);
    }
}
