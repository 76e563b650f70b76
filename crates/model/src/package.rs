//! Model packages: `models/<name>/model.toml` says everything inference needs, so no
//! number is hard-coded; the weights sit beside it in burn's own format.
//!
//! ```toml
//! name = "anatomynet-example"
//! weights = "weights.bpk"
//!
//! [network]            # "anatomynet" (AnatomyNetConfig) or "multipath-unet"
//! architecture = "anatomynet"
//! classes = 2          # and every other AnatomyNetConfig field (import writes them all)
//!
//! [[labels]]           # one per class except background (0)
//! id = 1
//! name = "spleen"
//! tg263 = "Spleen"
//!
//! [preprocess]
//! orientation = "RAS"
//! spacing_mm = [1.5, 1.5, 1.5]
//! intensity = { kind = "linear", min_hu = -160, max_hu = 240, out_min = -0.5, out_max = 0.5 }
//! stride = 2
//!
//! [provenance]
//! trained_on = "..."   # what the weights learned from
//! measured_on = "..."  # what their accuracy was measured on, with the numbers
//! ```

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
pub use voxseg_postprocess::Cleanup;
use voxseg_preprocess::region::RegionCrop;
use voxseg_preprocess::Intensity;

use crate::anatomynet::{AnatomyNet, AnatomyNetConfig};
use crate::multipath::{MultipathUnet, MultipathUnetConfig};
use crate::nnunet::{NnunetCombined, NnunetEnsemble, NnunetNetwork};
use crate::Error;

/// Which network, with its shape: `[network]` in model.toml, `architecture` inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "kebab-case")]
pub enum Network {
    Anatomynet(AnatomyNetConfig),
    /// One output: P(organ), for a single organ (label 1).
    MultipathUnet(MultipathUnetConfig),
    /// An nnU-Net v2 model (PlainConvUNet or ResidualEncoderUNet) with its plans.
    Nnunet(Box<NnunetNetwork>),
    /// Several nnU-Net v2 models, run in order, their labels combined into one table.
    NnunetCombined(NnunetCombined),
}

impl Network {
    /// Classes including background.
    pub fn classes(&self) -> usize {
        match self {
            Network::Anatomynet(c) => c.classes,
            Network::MultipathUnet(_) => 2,
            Network::Nnunet(n) => n.unet.classes,
            Network::NnunetCombined(c) => c.classes(),
        }
    }

    /// An nnU-Net package's networks in the order they run, each with the package label
    /// id of its classes 1, 2, ...; empty for other networks.
    pub fn nnunet_parts(&self) -> Vec<(&NnunetNetwork, Vec<u16>)> {
        match self {
            Network::Nnunet(n) => vec![(n, (1..n.unet.classes as u16).collect())],
            Network::NnunetCombined(c) => c.parts.iter().map(|p| (&p.nnunet, p.label_ids.clone())).collect(),
            _ => vec![],
        }
    }
}

/// A network with its weights, ready to run.
#[derive(Debug)]
pub enum Net {
    AnatomyNet(Box<AnatomyNet>),
    MultipathUnet(Box<MultipathUnet>),
    /// One ensemble of folds per network, in the order the package runs them.
    Nnunet(Vec<NnunetEnsemble>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub id: u16,
    pub name: String,
    /// AAPM TG-263 structure name, for RT structure sets.
    #[serde(default)]
    pub tg263: Option<String>,
    /// Plausibility limits for quality-control flags.
    #[serde(default)]
    pub qc: QcRules,
    /// Clean-up of the raw network output (default: keep the largest component, fill holes).
    #[serde(default)]
    pub cleanup: Cleanup,
}

/// Per-organ plausibility limits, stored in the model package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QcRules {
    /// Plausible volume in mL, `[min, max]`; outside it `volume_out_of_range` is set.
    #[serde(default)]
    pub volume_range_ml: Option<[f64; 2]>,
    /// How many separate parts the organ normally has (2 for paired organs stored
    /// as one label).
    #[serde(default = "one")]
    pub expected_components: usize,
}

fn one() -> usize {
    1
}

impl Default for QcRules {
    fn default() -> QcRules {
        QcRules { volume_range_ml: None, expected_components: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Axis codes the network expects, e.g. "RAS".
    pub orientation: String,
    pub spacing_mm: [f64; 3],
    pub intensity: Intensity,
    /// Input sides are padded to a multiple of this.
    #[serde(default = "two")]
    pub stride: usize,
    /// Crop to the body first (largest region above a HU threshold, capped in mm).
    #[serde(default)]
    pub region_crop: Option<RegionCrop>,
    /// Zoom to this spacing and apply a 3x3x3 median there before zooming to
    /// `spacing_mm` (centre-aligned zooms, as the KU Leuven model was trained).
    #[serde(default)]
    pub median_at_mm: Option<[f64; 3]>,
    /// Run one segment of exactly this many voxels, centred, instead of the whole
    /// padded volume (for networks whose normalisation depends on the input extent).
    #[serde(default)]
    pub segment: Option<[usize; 3]>,
}

fn two() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub trained_on: String,
    pub measured_on: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub licence: Option<String>,
    /// Written by `voxseg train`: how these weights were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
}

/// What `voxseg train` did, in the package it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    pub dataset: String,
    pub train_cases: Vec<String>,
    /// Held out: never trained on; the only cases accuracy is reported on.
    pub val_cases: Vec<String>,
    pub epochs: usize,
    pub seed: u64,
    pub device: String,
    pub seconds_per_epoch: f64,
    pub final_train_loss: f64,
    /// Dice per organ on the validation cases, on the model grid (empty without
    /// validation cases, or for an organ absent from all of them).
    pub val_dice: Vec<OrganDice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganDice {
    pub name: String,
    pub dice: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPackage {
    pub name: String,
    /// File name of the weights, relative to the package directory.
    pub weights: String,
    pub network: Network,
    pub labels: Vec<Label>,
    pub preprocess: Preprocess,
    pub provenance: Provenance,
    /// The package directory (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl ModelPackage {
    /// Reads and checks `dir/model.toml`.
    pub fn open(dir: &Path) -> Result<ModelPackage, Error> {
        let path = dir.join("model.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Package { path, reason: e.to_string() })?;
        ModelPackage::parse(&text, dir)
    }

    /// Parses and checks a `model.toml` text whose package lives in `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<ModelPackage, Error> {
        let fail = |reason: String| Error::Package { path: dir.join("model.toml"), reason };
        let mut package: ModelPackage = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        package.dir = dir.to_path_buf();
        package.validate().map_err(fail)?;
        Ok(package)
    }

    fn validate(&self) -> Result<(), String> {
        let ids: Vec<u16> = self.labels.iter().map(|l| l.id).collect();
        let classes = self.network.classes();
        let want: Vec<u16> = (1..classes as u16).collect();
        if ids != want {
            return Err(format!(
                "labels have ids {ids:?} but the network has {classes} classes: expected ids {want:?} (0 is background)"
            ));
        }
        let p = &self.preprocess;
        if p.spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(format!("target spacing {:?} must be positive", p.spacing_mm));
        }
        if p.stride == 0 || p.stride % 2 == 1 {
            return Err(format!("stride {} must be even (the network halves the input once)", p.stride));
        }
        p.intensity.validate().map_err(|e| e.to_string())?;
        match &self.network {
            Network::Nnunet(n) if n.folds.is_empty() => Err("an nnU-Net package needs at least one fold".into()),
            Network::Nnunet(n) => n.unet.validate(),
            Network::NnunetCombined(c) => c.validate(),
            _ => Ok(()),
        }
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.weights)
    }

    /// The network with this package's weights on `device`.
    pub fn load(&self, device: &Device) -> Result<Net, Error> {
        let path = self.weights_path();
        Ok(match &self.network {
            Network::Anatomynet(c) => Net::AnatomyNet(Box::new(crate::weights::load(c, &path, device)?)),
            Network::MultipathUnet(c) => {
                Net::MultipathUnet(Box::new(crate::weights::load_multipath(c, &path, device)?))
            }
            Network::Nnunet(n) => {
                Net::Nnunet(vec![crate::weights::load_nnunet(&n.unet, n.folds.len(), &path, device)?])
            }
            Network::NnunetCombined(c) => Net::Nnunet(crate::weights::load_nnunet_parts(c, &path, device)?),
        })
    }

    /// Writes `model.toml` (atomically) into `dir`.
    pub fn write_toml(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join("model.toml");
        let fail = |reason: String| Error::Package { path: path.clone(), reason };
        let text = toml::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        let tmp = dir.join(format!(".model.toml.tmp{}", std::process::id()));
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| fail(e.to_string()))
    }
}
