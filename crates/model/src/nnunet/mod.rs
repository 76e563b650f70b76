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
pub use window::{gaussian, predict_logits, steps, WindowOptions};

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

impl NnunetFolder {
    /// The voxseg package this folder makes (weights in `weights`, relative to `dir`):
    /// labels from dataset.json with TG-263 names where known, the plans as data, and
    /// provenance naming the folder.
    pub fn package(&self, name: &str, weights: &str, dir: &Path) -> ModelPackage {
        // The plans' spacing is in network axis order; voxseg states spacings as (i, j, k).
        let kji = pipeline::inverse(self.plan.transpose_forward).map(|d| self.plan.spacing[d]);
        ModelPackage {
            name: name.to_string(),
            weights: weights.to_string(),
            network: Network::Nnunet(Box::new(NnunetNetwork {
                folds: self.folds.iter().map(|f| f.0.clone()).collect(),
                tile_step: 0.5,
                mirror: false,
                unet: self.network.clone(),
                plan: self.plan.clone(),
            })),
            labels: self
                .labels
                .iter()
                .map(|(id, name)| Label {
                    id: *id,
                    name: name.clone(),
                    tg263: tg263_name(name).map(str::to_string),
                    qc: Default::default(),
                    // nnU-Net's output is its argmax: no clean-up unless a package asks.
                    cleanup: Cleanup::NONE,
                })
                .collect(),
            preprocess: Preprocess {
                orientation: "RAS".into(),
                spacing_mm: [kji[2], kji[1], kji[0]],
                intensity: self.plan.intensity.clone(),
                stride: 2,
                region_crop: None,
                median_at_mm: None,
                segment: None,
            },
            provenance: Provenance {
                trained_on: format!(
                    "nnU-Net v2 training {} ({}, {}, {}); see the folder's dataset.json for the data",
                    self.dataset, self.trainer, self.plans_name, self.configuration
                ),
                measured_on: "not measured by voxseg".into(),
                source: Some(format!("nnU-Net folder {}", self.path.display())),
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
