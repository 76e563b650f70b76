//! `voxseg train`: an AnatomyNet model package from a dataset in the MSD / nnU-Net
//! layout, preprocessed exactly as `segment` preprocesses (the same [`prepare`]),
//! trained on random augmented patches with Dice + focal loss and Adam, checked on
//! held-out cases after every epoch, checkpointed so a killed run resumes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use voxseg_model::{
    AnatomyNetConfig, Label, LossConfig, ModelPackage, Network, OrganDice, Preprocess, Provenance, Sample, Selected,
    Trainer, TrainingRecord,
};
use voxseg_preprocess::augment::{sample_patch, Patch};
use voxseg_preprocess::{reorient, resample_nearest, Intensity, Orientation, Window};
use voxseg_volume::write_atomically;

use crate::dataset::{split, Case, Dataset};
use crate::rng::Rng;
use crate::segment::prepare;

/// A training run's settings: `--config FILE` (TOML), every field optional.
/// `voxseg train --print-config` prints the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// AnatomyNet's shape: any `AnatomyNetConfig` field but `classes` (taken from the dataset).
    pub network: toml::Table,
    /// How CTs reach the network, at training and at inference (copied into the package).
    pub preprocess: Preprocess,
    pub schedule: Schedule,
    pub loss: LossConfig,
    pub augment: Augment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Adam's learning rate at the start; it follows a cosine down to
    /// `learning_rate * final_lr_fraction` at the last step.
    pub learning_rate: f64,
    pub final_lr_fraction: f64,
    /// Patch size in voxels of the model grid `[x, y, z]` (each a multiple of the
    /// stride); a smaller volume is used whole.
    pub patch: [usize; 3],
    /// Share of patches centred on a foreground voxel (the rest anywhere).
    pub foreground_fraction: f64,
    /// Share of cases held out for validation (overridden by `--val-cases`).
    pub val_fraction: f64,
    pub seed: u64,
}

/// Random changes to each patch. No mirroring: left and right organs keep their sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    pub enabled: bool,
    /// Largest in-plane (axial) rotation, degrees either way.
    pub rotation_deg: f64,
    pub scale: [f64; 2],
    /// Intensities become `x * (1 + a) + b`, `|a| <= intensity_scale`, `|b| <= intensity_shift`.
    pub intensity_scale: f64,
    pub intensity_shift: f64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            network: toml::Table::new(),
            preprocess: Preprocess {
                orientation: "RAS".into(),
                spacing_mm: [2.0; 3],
                intensity: Intensity::Linear { min_hu: -160.0, max_hu: 240.0, out_min: -0.5, out_max: 0.5 },
                stride: 2,
                region_crop: None,
                median_at_mm: None,
                segment: None,
            },
            schedule: Schedule::default(),
            loss: LossConfig::default(),
            augment: Augment::default(),
        }
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            epochs: 100,
            steps_per_epoch: 250,
            learning_rate: 1e-3,
            final_lr_fraction: 0.01,
            patch: [96, 96, 96],
            foreground_fraction: 0.33,
            val_fraction: 0.2,
            seed: 0,
        }
    }
}

impl Default for Augment {
    fn default() -> Augment {
        Augment { enabled: true, rotation_deg: 10.0, scale: [0.9, 1.1], intensity_scale: 0.1, intensity_shift: 0.1 }
    }
}

impl TrainConfig {
    pub fn read(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: not a training config", path.display()))
    }

    /// Every `[network]` field spelled out (AnatomyNet's defaults under the config's
    /// own), as `--print-config` shows them.
    pub fn with_network_defaults(mut self) -> Result<TrainConfig> {
        let mut table = toml::Table::try_from(self.network(2)?)?;
        table.remove("classes");
        self.network = table;
        Ok(self)
    }

    /// AnatomyNet's defaults, the config's `[network]` fields over them, and `classes`.
    pub fn network(&self, classes: usize) -> Result<AnatomyNetConfig> {
        let mut table = toml::Table::try_from(AnatomyNetConfig::new(classes))?;
        for (key, value) in &self.network {
            if key == "classes" || !table.contains_key(key) {
                bail!("[network] {key}: not a setting (the dataset sets classes; see --print-config)");
            }
            table.insert(key.clone(), value.clone());
        }
        table.try_into().context("[network]")
    }

    fn check(&self) -> Result<()> {
        let s = &self.schedule;
        let stride = self.preprocess.stride;
        if s.patch.iter().any(|&p| p == 0 || p % stride != 0) {
            bail!("[schedule] patch {:?}: each side must be a positive multiple of the stride {stride}", s.patch);
        }
        if s.epochs == 0 || s.steps_per_epoch == 0 || !(s.learning_rate.is_finite() && s.learning_rate > 0.0) {
            bail!("[schedule] epochs, steps_per_epoch and learning_rate must be positive");
        }
        if !(0.0..1.0).contains(&s.val_fraction) || !(0.0..=1.0).contains(&s.foreground_fraction) {
            bail!("[schedule] val_fraction must be in [0, 1) and foreground_fraction in [0, 1]");
        }
        Ok(())
    }
}

/// What the caller asked for, beyond the config file.
pub struct Request {
    pub data: PathBuf,
    pub output: PathBuf,
    pub config: TrainConfig,
    pub val_cases: Vec<String>,
    pub resume: bool,
}

/// One finished epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_dice: Vec<OrganDice>,
    pub seconds: f64,
}

/// `checkpoint/state.json`: the commit point of a checkpoint.
#[derive(Serialize, Deserialize)]
struct State {
    config: TrainConfig,
    train_cases: Vec<String>,
    val_cases: Vec<String>,
    history: Vec<Epoch>,
}

/// A case preprocessed for the network, as cached on disk.
struct Prepared {
    shape: [usize; 3],
    image: Vec<f32>,
    labels: Vec<u16>,
}

/// What the trainer reports as it goes.
pub trait Progress {
    fn epoch_started(&self, epoch: usize, epochs: usize, steps: usize);
    fn step(&self, loss: f64);
    fn epoch_done(&self, epoch: &Epoch);
    fn note(&self, message: &str);
}

/// Trains and writes the package into `request.output`; returns every epoch so far.
pub fn run(request: &Request, device: &Selected, progress: &dyn Progress) -> Result<Vec<Epoch>> {
    let config = &request.config;
    config.check()?;
    let dataset = Dataset::open(&request.data)?;
    let network = config.network(dataset.classes())?;
    let out = &request.output;
    let checkpoint = out.join("checkpoint");
    let resuming = request.resume && checkpoint.join("state.json").is_file();
    if !request.resume && checkpoint.exists() {
        bail!(
            "{} already holds a training run: pass --resume to continue it, or choose a new directory",
            out.display()
        );
    }
    if request.resume && !resuming {
        progress.note("nothing to resume: starting a new run");
    }
    let (train, val) = split(&dataset.cases, &request.val_cases, config.schedule.val_fraction, config.schedule.seed)?;
    let ids = |set: &[usize]| set.iter().map(|&i| dataset.cases[i].id.clone()).collect::<Vec<_>>();
    let mut package = package_for(out, &dataset, &network, config);

    let cache = out.join("cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let cached = cache_all(&dataset, &package, &cache, progress)?;

    let (mut trainer, mut history) = if resuming {
        let state: State = serde_json::from_slice(&std::fs::read(checkpoint.join("state.json"))?)
            .with_context(|| format!("{}: unreadable checkpoint state", checkpoint.display()))?;
        if state.train_cases != ids(&train) || state.val_cases != ids(&val) {
            bail!("{}: the run trained on other cases; resume it with the same dataset and split", out.display());
        }
        let mut same = state.config.clone();
        same.schedule.epochs = config.schedule.epochs;
        if &same != config {
            bail!("{}: the run used another config (only --epochs may change on --resume)", out.display());
        }
        (Trainer::resume(&network, &device.device, &checkpoint)?, state.history)
    } else {
        (Trainer::new(&network, &device.device, config.schedule.seed), Vec::new())
    };
    if !history.is_empty() {
        progress.note(&format!("resuming after epoch {}", history.len()));
    }

    let s = &config.schedule;
    let total_steps = (s.epochs * s.steps_per_epoch) as f64;
    for epoch in history.len()..s.epochs {
        let started = Instant::now();
        progress.epoch_started(epoch + 1, s.epochs, s.steps_per_epoch);
        let mut rng = Rng::fork(s.seed, epoch as u64 + 1);
        let mut loss_sum = 0.0;
        for step in 0..s.steps_per_epoch {
            let case = train[rng.below(train.len())];
            let prepared = cached[case].load()?;
            let (image, labels, shape) = draw_patch(&prepared, config, &mut rng);
            let annotated = annotated(&dataset, &dataset.cases[case]);
            let progress_frac = (epoch * s.steps_per_epoch + step) as f64 / total_steps;
            let lr = s.learning_rate
                * (s.final_lr_fraction
                    + (1.0 - s.final_lr_fraction) * 0.5 * (1.0 + (std::f64::consts::PI * progress_frac).cos()));
            let sample = Sample { image: &image, labels: &labels, shape, annotated: &annotated };
            let loss = f64::from(trainer.step(&sample, lr, &config.loss));
            if !loss.is_finite() {
                bail!("the loss became {loss} at epoch {} step {}: lower learning_rate", epoch + 1, step + 1);
            }
            loss_sum += loss;
            progress.step(loss);
        }
        let val_dice = validate(&trainer, &dataset, &val, &cached)?;
        let record = Epoch {
            epoch: epoch + 1,
            train_loss: loss_sum / s.steps_per_epoch as f64,
            val_dice,
            seconds: started.elapsed().as_secs_f64(),
        };
        progress.epoch_done(&record);
        history.push(record);
        package.provenance = provenance(&dataset, &ids(&train), &ids(&val), &history, device, s.seed);
        save(
            out,
            &checkpoint,
            &trainer,
            &package,
            &State { config: config.clone(), train_cases: ids(&train), val_cases: ids(&val), history: history.clone() },
        )?;
    }
    Ok(history)
}

fn package_for(out: &Path, dataset: &Dataset, network: &AnatomyNetConfig, config: &TrainConfig) -> ModelPackage {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trained".into());
    ModelPackage {
        name,
        weights: "weights.bpk".into(),
        network: Network::Anatomynet(network.clone()),
        labels: dataset
            .labels
            .iter()
            .map(|(id, name)| Label {
                id: *id,
                name: name.clone(),
                tg263: None,
                qc: Default::default(),
                cleanup: Default::default(),
            })
            .collect(),
        preprocess: config.preprocess.clone(),
        provenance: Provenance {
            trained_on: String::new(),
            measured_on: String::new(),
            source: None,
            licence: None,
            training: None,
        },
        dir: out.to_path_buf(),
    }
}

/// Says, in the package, what the weights learned from and how well they did on
/// held-out cases only.
fn provenance(
    dataset: &Dataset,
    train: &[String],
    val: &[String],
    history: &[Epoch],
    device: &Selected,
    seed: u64,
) -> Provenance {
    let last = history.last().expect("called after an epoch");
    let measured_on = if val.is_empty() {
        "not measured: the run held out no validation cases".to_string()
    } else {
        let dice: Vec<String> = last.val_dice.iter().map(|d| format!("{} {:.4}", d.name, d.dice)).collect();
        format!(
            "Dice on the model grid over {} held-out case(s) of {} ({}): {}",
            val.len(),
            dataset.name,
            val.join(", "),
            if dice.is_empty() { "no organ present".into() } else { dice.join(", ") }
        )
    };
    Provenance {
        trained_on: format!(
            "{} training case(s) of dataset {} ({}), {} epoch(s) of voxseg train",
            train.len(),
            dataset.name,
            dataset.dir.display(),
            history.len()
        ),
        measured_on,
        source: Some("voxseg train".into()),
        licence: None,
        training: Some(TrainingRecord {
            dataset: dataset.name.clone(),
            train_cases: train.to_vec(),
            val_cases: val.to_vec(),
            epochs: history.len(),
            seed,
            device: format!("{} ({})", device.name, device.backend),
            seconds_per_epoch: history.iter().map(|e| e.seconds).sum::<f64>() / history.len() as f64,
            final_train_loss: last.train_loss,
            val_dice: last.val_dice.clone(),
        }),
    }
}

/// Class flags for the loss: background and every class the case's annotator drew.
fn annotated(dataset: &Dataset, case: &Case) -> Vec<bool> {
    (0..dataset.classes()).map(|c| !case.missing.contains(&(c as u16))).collect()
}

/// A checkpoint, then the package: weights and model.toml written last, each
/// atomically, so a kill at any point leaves the previous epoch intact.
fn save(out: &Path, checkpoint: &Path, trainer: &Trainer, package: &ModelPackage, state: &State) -> Result<()> {
    std::fs::create_dir_all(checkpoint)?;
    // Weights and optimizer go to a fresh folder; state.json names none, so the
    // rename of the folder is the commit.
    let next = checkpoint.with_extension("next");
    if next.exists() {
        std::fs::remove_dir_all(&next)?;
    }
    std::fs::create_dir_all(&next)?;
    trainer.save(&next)?;
    let json = serde_json::to_vec_pretty(state)?;
    write_atomically(&next.join("state.json"), |w| w.write_all(&json))?;
    let old = checkpoint.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    std::fs::rename(checkpoint, &old)?;
    std::fs::rename(&next, checkpoint)?;
    std::fs::remove_dir_all(&old)?;
    voxseg_model::save(&trainer.network(), &package.weights_path())?;
    package.write_toml(out)?;
    Ok(())
}

/// A cached, preprocessed case on disk.
struct Cached {
    path: PathBuf,
}

impl Cached {
    fn load(&self) -> Result<Prepared> {
        let bytes = std::fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: damaged cache file (delete it)", self.path.display()))?;
        let image = tensors.tensor("image")?;
        let shape = image.shape();
        let shape = [shape[2], shape[1], shape[0]];
        let floats = image.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let labels =
            tensors.tensor("labels")?.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        Ok(Prepared { shape, image: floats, labels })
    }
}

/// Preprocesses every case once (reading each CT and label map checks them) and
/// keeps the result under `cache/`, keyed by the source files and the
/// preprocessing, so later epochs and resumed runs skip the work. All problems
/// are reported together, before any training.
fn cache_all(dataset: &Dataset, package: &ModelPackage, dir: &Path, progress: &dyn Progress) -> Result<Vec<Cached>> {
    let mut problems = Vec::new();
    let mut cached = Vec::new();
    for case in &dataset.cases {
        let path = dir.join(format!("{}.safetensors", case.id));
        let key = cache_key(case, &package.preprocess)?;
        let fresh = std::fs::read(&path).ok().is_some_and(|bytes| {
            safetensors::SafeTensors::read_metadata(&bytes)
                .ok()
                .and_then(|(_, m)| m.metadata().as_ref().and_then(|m| m.get("key").cloned()))
                .is_some_and(|k| k == key)
        });
        if !fresh {
            progress.note(&format!("preprocessing {}", case.id));
            if let Err(e) = cache_case(dataset, case, package, &path, &key) {
                problems.push(format!("case {}: {e:#}", case.id));
            }
        }
        cached.push(Cached { path });
    }
    if !problems.is_empty() {
        return Err(crate::dataset::DatasetError::Cases {
            dir: dataset.dir.clone(),
            problems: problems.len(),
            list: problems,
        }
        .into());
    }
    Ok(cached)
}

fn cache_key(case: &Case, preprocess: &Preprocess) -> Result<String> {
    let stamp = |p: &Path| -> Result<String> {
        let m = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        let modified = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        Ok(format!("{}:{}:{:?}", p.display(), m.len(), modified))
    };
    Ok(format!("{}|{}|{}", stamp(&case.image)?, stamp(&case.label)?, serde_json::to_string(preprocess)?))
}

/// The CT through `segment`'s own preprocessing, and its labels carried by nearest
/// neighbour onto exactly the grid of the network's input.
fn cache_case(dataset: &Dataset, case: &Case, package: &ModelPackage, path: &Path, key: &str) -> Result<()> {
    let prepared = prepare(&case.image, None, package)?;
    let labels = dataset.check_case(case, prepared.ct.grid())?;
    let orientation: Orientation =
        package.preprocess.orientation.parse().map_err(|e| anyhow::anyhow!("orientation: {e}"))?;
    let (canonical, _) = reorient(labels, orientation)?;
    // Onto the model grid (inside the CT, so nearest never clamps), then padded or
    // cut exactly as the input was, with background.
    let on_model_grid = resample_nearest(&canonical, &prepared.model_grid)?;
    let labels =
        Window::new(&prepared.model_grid, prepared.input_start, prepared.input.shape())?.apply(on_model_grid, 0)?;
    let [nx, ny, nz] = prepared.input.shape();
    let image_bytes: Vec<u8> = prepared.input.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    let label_bytes: Vec<u8> = labels.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    use safetensors::{tensor::TensorView, Dtype};
    let tensors = vec![
        ("image".to_string(), TensorView::new(Dtype::F32, vec![nz, ny, nx], &image_bytes)?),
        ("labels".to_string(), TensorView::new(Dtype::U16, vec![nz, ny, nx], &label_bytes)?),
    ];
    let metadata = std::collections::HashMap::from([("key".to_string(), key.to_string())]);
    let bytes = safetensors::serialize(tensors, Some(metadata))?;
    write_atomically(path, |w| w.write_all(&bytes)).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// One training patch: centred on a foreground voxel `foreground_fraction` of the
/// time, else anywhere; then rotated, scaled and intensity-jittered.
fn draw_patch(case: &Prepared, config: &TrainConfig, rng: &mut Rng) -> (Vec<f32>, Vec<u16>, [usize; 3]) {
    let shape = case.shape;
    let size: [usize; 3] = std::array::from_fn(|a| config.schedule.patch[a].min(shape[a]));
    let foreground: Vec<usize> = if rng.unit() < config.schedule.foreground_fraction {
        case.labels.iter().enumerate().filter(|(_, &l)| l != 0).map(|(i, _)| i).collect()
    } else {
        Vec::new()
    };
    let centre: [f64; 3] = if foreground.is_empty() {
        std::array::from_fn(|a| rng.range(0.0, shape[a] as f64 - 1.0))
    } else {
        let i = foreground[rng.below(foreground.len())];
        [(i % shape[0]) as f64, (i / shape[0] % shape[1]) as f64, (i / (shape[0] * shape[1])) as f64]
    };
    // Keep the patch inside the volume where it fits.
    let centre: [f64; 3] = std::array::from_fn(|a| {
        let half = (size[a] as f64 - 1.0) / 2.0;
        centre[a].clamp(half, shape[a] as f64 - 1.0 - half)
    });
    let aug = &config.augment;
    let (rotation, scale) = if aug.enabled {
        (rng.range(-aug.rotation_deg, aug.rotation_deg).to_radians(), rng.range(aug.scale[0], aug.scale[1]))
    } else {
        (0.0, 1.0)
    };
    let fill = case.image.iter().copied().fold(f32::INFINITY, f32::min);
    let patch = Patch { centre, size, rotation, scale };
    let (mut image, labels) = sample_patch(&case.image, &case.labels, shape, &patch, fill);
    if aug.enabled {
        let a = rng.range(-aug.intensity_scale, aug.intensity_scale) as f32;
        let b = rng.range(-aug.intensity_shift, aug.intensity_shift) as f32;
        image.iter_mut().for_each(|v| *v = *v * (1.0 + a) + b);
    }
    (image, labels, size)
}

/// Dice per organ on the held-out cases, on the model grid, averaged over the cases
/// where the organ is annotated and present in the prediction or the reference.
fn validate(trainer: &Trainer, dataset: &Dataset, val: &[usize], cached: &[Cached]) -> Result<Vec<OrganDice>> {
    let mut sums = vec![(0.0, 0usize); dataset.classes()];
    for &i in val {
        let case = cached[i].load()?;
        let predicted = trainer.predict(&case.image, case.shape)?;
        for (id, _) in &dataset.labels {
            if dataset.cases[i].missing.contains(id) {
                continue;
            }
            let (mut both, mut p, mut r) = (0usize, 0usize, 0usize);
            for (&a, &b) in predicted.iter().zip(&case.labels) {
                let (a, b) = (a == *id, b == *id);
                both += usize::from(a && b);
                p += usize::from(a);
                r += usize::from(b);
            }
            if p + r > 0 {
                let s = &mut sums[usize::from(*id)];
                s.0 += 2.0 * both as f64 / (p + r) as f64;
                s.1 += 1;
            }
        }
    }
    Ok(dataset
        .labels
        .iter()
        .filter(|(id, _)| sums[usize::from(*id)].1 > 0)
        .map(|(id, name)| {
            let (sum, n) = sums[usize::from(*id)];
            OrganDice { name: name.clone(), dice: sum / n as f64 }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_config_reads_back_as_the_defaults() {
        let printed = toml::to_string_pretty(&TrainConfig::default().with_network_defaults().unwrap()).unwrap();
        let read: TrainConfig = toml::from_str(&printed).unwrap();
        assert_eq!(read.network(3).unwrap(), AnatomyNetConfig::new(3));
        assert_eq!(read.schedule, Schedule::default());
        let bad: TrainConfig = toml::from_str("[network]\nclasses = 4\n").unwrap();
        assert!(bad.network(3).unwrap_err().to_string().contains("the dataset sets classes"));
    }
}
