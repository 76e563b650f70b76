//! An nnU-Net v2 training output folder, read as nnU-Net writes it:
//! `<Trainer>__<Plans>__<configuration>/` with `dataset.json`, `plans.json` and
//! `fold_K/checkpoint_final.pth` (PyTorch's zip checkpoint: the weights under
//! `network_weights`, beside optimizer state and logs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pytorch_reader::{DType, PickleValue, PytorchError, PytorchReader};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use voxseg_preprocess::Intensity;

use super::network::{NnunetConfig, StateDict, UnetClass};
use crate::Error;

/// How nnU-Net resamples (its `resampling_fn_*_kwargs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resampling {
    /// Spline order in plane (and everywhere when not resampling z separately).
    pub order: u32,
    /// Order along the out-of-plane axis when it is resampled separately.
    pub order_z: u32,
    /// `None`: separate z when a spacing is anisotropic (max / min > 3), as nnU-Net decides.
    pub force_separate_z: Option<bool>,
}

/// Everything inference needs besides the network: the configuration's plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnunetPlan {
    /// Sliding-window tile, network axis order.
    pub patch_size: [usize; 3],
    /// Target spacing in mm, network axis order.
    pub spacing: [f64; 3],
    /// Network axis `a` is axis `transpose_forward[a]` of the `[k, j, i]` array.
    pub transpose_forward: [usize; 3],
    /// nnU-Net's CTNormalization: clip to the training set's foreground 0.5/99.5
    /// percentiles, then z-score with its mean and std.
    pub intensity: Intensity,
    pub data_resampling: Resampling,
    pub probabilities_resampling: Resampling,
    /// Spatial axes (network order) mirroring may use, from the checkpoint; empty when
    /// the trainer allows none.
    #[serde(default)]
    pub mirror_axes: Vec<usize>,
}

/// One training folder, checked.
#[derive(Debug, Clone)]
pub struct NnunetFolder {
    pub path: PathBuf,
    pub dataset: String,
    pub trainer: String,
    pub plans_name: String,
    pub configuration: String,
    pub network: NnunetConfig,
    pub plan: NnunetPlan,
    /// `(id, name)` of every class but background, by id.
    pub labels: Vec<(u16, String)>,
    /// `(fold name, checkpoint)` in fold order.
    pub folds: Vec<(String, PathBuf)>,
}

/// True when `dir` looks like an nnU-Net training folder.
pub fn is_folder(dir: &Path) -> bool {
    dir.join("plans.json").is_file() && dir.join("dataset.json").is_file()
}

fn fail(path: &Path, reason: impl Into<String>) -> Error {
    Error::Package { path: path.to_path_buf(), reason: reason.into() }
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(path, format!("not valid JSON: {e}")))
}

/// A list of three from `[a, b, c]`, or a scalar meaning all three.
fn triple<T: Copy + serde::de::DeserializeOwned>(v: &Value) -> Option<[T; 3]> {
    if let Ok(x) = serde_json::from_value::<T>(v.clone()) {
        return Some([x; 3]);
    }
    serde_json::from_value::<Vec<T>>(v.clone()).ok()?.try_into().ok()
}

/// Per stage: a list of per-stage values, or one value for every stage.
fn per_stage<T: Copy + serde::de::DeserializeOwned>(v: &Value, n: usize) -> Option<Vec<T>> {
    if let Ok(x) = serde_json::from_value::<T>(v.clone()) {
        return Some(vec![x; n]);
    }
    serde_json::from_value(v.clone()).ok()
}

fn per_stage_triples(v: &Value, n: usize) -> Option<Vec<[usize; 3]>> {
    match v {
        Value::Array(items) if items.iter().all(|i| i.is_array()) => items.iter().map(triple).collect(),
        _ => triple(v).map(|t| vec![t; n]),
    }
}

impl NnunetFolder {
    /// Reads and checks the folder; `folds` picks folds by name (`0`, `all`), all
    /// present ones when empty.
    pub fn open(path: &Path, folds: &[String]) -> Result<NnunetFolder, Error> {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let parts: Vec<&str> = name.split("__").collect();
        let [trainer, plans_name, configuration] = parts[..] else {
            return Err(fail(
                path,
                format!("folder name {name:?} is not nnU-Net's <Trainer>__<Plans>__<configuration>"),
            ));
        };
        let plans_path = path.join("plans.json");
        let plans = read_json(&plans_path)?;
        let dataset_path = path.join("dataset.json");
        let dataset = read_json(&dataset_path)?;
        let labels = labels(&dataset, &dataset_path)?;
        let channels = dataset.get("channel_names").or_else(|| dataset.get("modality")).and_then(Value::as_object);
        match channels {
            Some(c) if c.len() == 1 => {}
            Some(c) => {
                return Err(fail(
                    &dataset_path,
                    format!("{} input channels; voxseg runs single-channel CT models", c.len()),
                ))
            }
            None => return Err(fail(&dataset_path, "no channel_names")),
        }
        let config = configuration_of(&plans, configuration).map_err(|r| fail(&plans_path, r))?;
        let network = network_of(&config, labels.len() + 1).map_err(|r| fail(&plans_path, r))?;
        let mut plan = plan_of(&plans, &config).map_err(|r| fail(&plans_path, r))?;
        let folds = find_folds(path, folds)?;
        // The trainer's mirroring axes live in the checkpoint (the first fold's).
        plan.mirror_axes = mirror_axes(&folds[0].1)?;
        Ok(NnunetFolder {
            path: path.to_path_buf(),
            dataset: plans.get("dataset_name").and_then(Value::as_str).unwrap_or_default().to_string(),
            trainer: trainer.to_string(),
            plans_name: plans_name.to_string(),
            configuration: configuration.to_string(),
            network,
            plan,
            labels,
            folds,
        })
    }
}

impl NnunetFolder {
    /// Several folders to combine, each read and checked with `folds`: every path must be
    /// a training folder, and none may be given twice (its labels would only overwrite
    /// themselves).
    pub fn open_all(paths: &[PathBuf], folds: &[String]) -> Result<Vec<NnunetFolder>, Error> {
        let mut seen: Vec<PathBuf> = Vec::new();
        paths
            .iter()
            .map(|path| {
                if !path.is_dir() {
                    return Err(fail(path, "no such folder"));
                }
                if !is_folder(path) {
                    return Err(fail(path, "not an nnU-Net training folder (it needs plans.json and dataset.json)"));
                }
                let canonical = path.canonicalize().map_err(|e| fail(path, e.to_string()))?;
                if seen.contains(&canonical) {
                    return Err(fail(path, "given twice: a network combined with itself only overwrites its labels"));
                }
                seen.push(canonical);
                NnunetFolder::open(path, folds)
            })
            .collect()
    }
}

/// dataset.json's `labels`: `{"background": 0, "spleen": 1, ...}`, ids 0..n-1.
fn labels(dataset: &Value, path: &Path) -> Result<Vec<(u16, String)>, Error> {
    let map = dataset.get("labels").and_then(Value::as_object).ok_or_else(|| fail(path, "no labels"))?;
    let mut labels = Vec::new();
    for (name, id) in map {
        let Some(id) = id.as_u64().and_then(|i| u16::try_from(i).ok()) else {
            return Err(fail(
                path,
                format!("label {name:?} is {id}: region-based labels (lists of ids) are not supported, only plain ids"),
            ));
        };
        labels.push((id, name.clone()));
    }
    labels.sort();
    let ids: Vec<u16> = labels.iter().map(|l| l.0).collect();
    if ids != (0..labels.len() as u16).collect::<Vec<_>>() {
        return Err(fail(path, format!("label ids {ids:?} must be 0, 1, ... without gaps")));
    }
    if labels[0].1 != "background" {
        return Err(fail(path, format!("label 0 is {:?}, nnU-Net's is \"background\"", labels[0].1)));
    }
    Ok(labels.into_iter().skip(1).collect())
}

/// The configuration with `inherits_from` resolved (parents first, children win).
fn configuration_of(plans: &Value, name: &str) -> Result<serde_json::Map<String, Value>, String> {
    let all = plans.get("configurations").and_then(Value::as_object).ok_or("no configurations")?;
    let mut chain = vec![name.to_string()];
    loop {
        let current = chain.last().expect("not empty");
        let config = all.get(current).and_then(Value::as_object).ok_or_else(|| {
            let known: Vec<&String> = all.keys().collect();
            format!("configuration {current:?} is not in the plans (they have {known:?})")
        })?;
        match config.get("inherits_from").and_then(Value::as_str) {
            Some(parent) if chain.iter().any(|c| c == parent) => {
                return Err(format!("configurations inherit in a circle: {chain:?} -> {parent}"))
            }
            Some(parent) => chain.push(parent.to_string()),
            None => break,
        }
    }
    let mut merged = serde_json::Map::new();
    for c in chain.iter().rev() {
        for (k, v) in all[c].as_object().expect("checked") {
            merged.insert(k.clone(), v.clone());
        }
    }
    Ok(merged)
}

fn get<'a>(config: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    config.get(key).ok_or_else(|| format!("the configuration has no {key}"))
}

/// The network from the 2.4+ `architecture` entry, or rebuilt from the older layout as
/// nnU-Net 2.3+ does (`UNet_class_name`, `UNet_base_num_features`, ...).
fn network_of(config: &serde_json::Map<String, Value>, classes: usize) -> Result<NnunetConfig, String> {
    let patch = get(config, "patch_size")?;
    if patch.as_array().map(Vec::len) != Some(3) {
        return Err(format!("patch size {patch}: only 3-D configurations are supported"));
    }
    let bad = |what: &str| format!("architecture: {what} is missing or malformed");
    let Some(arch) = config.get("architecture") else {
        let class = match get(config, "UNet_class_name")?.as_str() {
            Some("PlainConvUNet") => UnetClass::PlainConvUNet,
            Some("ResidualEncoderUNet") => UnetClass::ResidualEncoderUNet,
            other => {
                return Err(format!("UNet_class_name {other:?}: voxseg runs PlainConvUNet and ResidualEncoderUNet"))
            }
        };
        let n =
            per_stage::<usize>(get(config, "n_conv_per_stage_encoder")?, 0).ok_or(bad("n_conv_per_stage_encoder"))?;
        let base = get(config, "UNet_base_num_features")?.as_u64().ok_or(bad("UNet_base_num_features"))? as usize;
        let max = get(config, "unet_max_num_features")?.as_u64().ok_or(bad("unet_max_num_features"))? as usize;
        let stages = n.len();
        let network = NnunetConfig {
            class,
            input_channels: 1,
            classes,
            features_per_stage: (0..stages).map(|i| (base << i).min(max)).collect(),
            kernel_sizes: per_stage_triples(get(config, "conv_kernel_sizes")?, stages)
                .ok_or(bad("conv_kernel_sizes"))?,
            strides: per_stage_triples(get(config, "pool_op_kernel_sizes")?, stages)
                .ok_or(bad("pool_op_kernel_sizes"))?,
            encoder_depth: n,
            decoder_depth: per_stage(get(config, "n_conv_per_stage_decoder")?, stages - 1)
                .ok_or(bad("n_conv_per_stage_decoder"))?,
            conv_bias: true,
            norm_epsilon: 1e-5,
            negative_slope: 0.01,
        };
        network.validate()?;
        return Ok(network);
    };
    let class_name = arch.get("network_class_name").and_then(Value::as_str).ok_or(bad("network_class_name"))?;
    let class = match class_name.rsplit('.').next() {
        Some("PlainConvUNet") => UnetClass::PlainConvUNet,
        Some("ResidualEncoderUNet") => UnetClass::ResidualEncoderUNet,
        _ => return Err(format!("network {class_name}: voxseg runs PlainConvUNet and ResidualEncoderUNet")),
    };
    let kw = arch.get("arch_kwargs").and_then(Value::as_object).ok_or(bad("arch_kwargs"))?;
    let key = |k: &str| kw.get(k).ok_or_else(|| bad(k));
    let stages = key("n_stages")?.as_u64().ok_or(bad("n_stages"))? as usize;
    let name_of = |k: &str| kw.get(k).and_then(Value::as_str).unwrap_or("None").to_string();
    let expect = |k: &str, want: &[&str]| -> Result<(), String> {
        let got = name_of(k);
        if want.iter().any(|w| got.ends_with(w)) {
            Ok(())
        } else {
            Err(format!("architecture: {k} is {got}; voxseg runs {}", want.join(" or ")))
        }
    };
    expect("conv_op", &["Conv3d"])?;
    expect("norm_op", &["InstanceNorm3d"])?;
    expect("nonlin", &["LeakyReLU"])?;
    if kw.contains_key("block") {
        expect("block", &["BasicBlockD"])?;
    }
    for (k, ok) in [("stem_channels", Value::Null), ("bottleneck_channels", Value::Null)] {
        if kw.get(k).is_some_and(|v| *v != ok) {
            return Err(format!("architecture: {k} = {} is not supported", kw[k]));
        }
    }
    let norm = kw.get("norm_op_kwargs").and_then(Value::as_object);
    if norm.and_then(|n| n.get("affine")).and_then(Value::as_bool) == Some(false) {
        return Err("architecture: instance norm without affine parameters is not supported".into());
    }
    let depth_key = match class {
        UnetClass::PlainConvUNet => "n_conv_per_stage",
        UnetClass::ResidualEncoderUNet => "n_blocks_per_stage",
    };
    let network = NnunetConfig {
        class,
        input_channels: 1,
        classes,
        features_per_stage: per_stage(key("features_per_stage")?, stages).ok_or(bad("features_per_stage"))?,
        kernel_sizes: per_stage_triples(key("kernel_sizes")?, stages).ok_or(bad("kernel_sizes"))?,
        strides: per_stage_triples(key("strides")?, stages).ok_or(bad("strides"))?,
        encoder_depth: per_stage(key(depth_key)?, stages).ok_or(bad(depth_key))?,
        decoder_depth: per_stage(key("n_conv_per_stage_decoder")?, stages - 1)
            .ok_or(bad("n_conv_per_stage_decoder"))?,
        conv_bias: kw.get("conv_bias").and_then(Value::as_bool).unwrap_or(false),
        norm_epsilon: norm.and_then(|n| n.get("eps")).and_then(Value::as_f64).unwrap_or(1e-5),
        negative_slope: kw
            .get("nonlin_kwargs")
            .and_then(|n| n.get("negative_slope"))
            .and_then(Value::as_f64)
            .unwrap_or(0.01),
    };
    if network.features_per_stage.len() != stages {
        return Err(format!(
            "architecture: n_stages is {stages} but features_per_stage has {} entries",
            network.features_per_stage.len()
        ));
    }
    network.validate()?;
    Ok(network)
}

fn resampling(config: &serde_json::Map<String, Value>, key: &str, order: u32) -> Result<Resampling, String> {
    let kw = config.get(key).and_then(Value::as_object);
    let num = |k: &str, default: u32| kw.and_then(|m| m.get(k)).and_then(Value::as_u64).map_or(default, |v| v as u32);
    let r = Resampling {
        order: num("order", order),
        order_z: num("order_z", 0),
        force_separate_z: kw.and_then(|m| m.get("force_separate_z")).and_then(Value::as_bool),
    };
    for o in [r.order, r.order_z] {
        if voxseg_preprocess::resize::Interpolation::from_order(o).is_none() {
            return Err(format!("{key}: spline order {o} is not supported (0, 1 and 3 are)"));
        }
    }
    Ok(r)
}

fn plan_of(plans: &Value, config: &serde_json::Map<String, Value>) -> Result<NnunetPlan, String> {
    let schemes = get(config, "normalization_schemes")?;
    if schemes.as_array().map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        != Some(vec!["CTNormalization"])
    {
        return Err(format!("normalization_schemes {schemes}: voxseg runs CT models (CTNormalization)"));
    }
    let fg = plans
        .pointer("/foreground_intensity_properties_per_channel/0")
        .ok_or("no foreground_intensity_properties_per_channel for channel 0")?;
    let stat =
        |k: &str| fg.get(k).and_then(Value::as_f64).ok_or_else(|| format!("foreground intensity {k} is missing"));
    let intensity = Intensity::ZScore {
        mean: stat("mean")?,
        std: stat("std")?.max(1e-8),
        clip_min_hu: stat("percentile_00_5")?,
        clip_max_hu: stat("percentile_99_5")?,
    };
    intensity.validate().map_err(|e| e.to_string())?;
    let transpose: [usize; 3] =
        plans.get("transpose_forward").and_then(triple).ok_or("transpose_forward is missing or malformed")?;
    let mut sorted = transpose;
    sorted.sort();
    if sorted != [0, 1, 2] {
        return Err(format!("transpose_forward {transpose:?} is not a permutation of 0, 1, 2"));
    }
    let spacing: [f64; 3] = triple(get(config, "spacing")?).ok_or("spacing is malformed")?;
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(format!("spacing {spacing:?} must be positive"));
    }
    Ok(NnunetPlan {
        patch_size: triple(get(config, "patch_size")?).ok_or("patch_size is malformed")?,
        spacing,
        transpose_forward: transpose,
        intensity,
        data_resampling: resampling(config, "resampling_fn_data_kwargs", 3)?,
        probabilities_resampling: resampling(config, "resampling_fn_probabilities_kwargs", 1)?,
        mirror_axes: vec![],
    })
}

/// `fold_K/checkpoint_final.pth` (or `fold_all`), in fold order.
fn find_folds(path: &Path, wanted: &[String]) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(path)
        .map_err(|e| fail(path, e.to_string()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let fold = name.strip_prefix("fold_")?.to_string();
            let checkpoint = e.path().join("checkpoint_final.pth");
            checkpoint.is_file().then_some((fold, checkpoint))
        })
        .collect();
    found.sort_by_key(|(f, _)| (f.parse::<u32>().unwrap_or(u32::MAX), f.clone()));
    if !wanted.is_empty() {
        let missing: Vec<&String> = wanted.iter().filter(|w| !found.iter().any(|(f, _)| f == *w)).collect();
        if !missing.is_empty() {
            let have: Vec<&String> = found.iter().map(|(f, _)| f).collect();
            return Err(fail(path, format!("folds {missing:?} have no checkpoint_final.pth (present: {have:?})")));
        }
        found.retain(|(f, _)| wanted.contains(f));
    }
    if found.is_empty() {
        return Err(fail(path, "no fold_*/checkpoint_final.pth in the folder"));
    }
    Ok(found)
}

/// The checkpoint's `inference_allowed_mirroring_axes` (None: no mirroring).
fn mirror_axes(checkpoint: &Path) -> Result<Vec<usize>, Error> {
    let value = match PytorchReader::read_pickle_data(checkpoint, Some("inference_allowed_mirroring_axes")) {
        Ok(v) => v,
        // Older checkpoints lack the key; nnU-Net then mirrors over no axes.
        Err(PytorchError::KeyNotFound(_)) => return Ok(vec![]),
        Err(e) => return Err(Error::WeightsUnreadable { path: checkpoint.into(), reason: e.to_string() }),
    };
    match value {
        PickleValue::None => Ok(vec![]),
        PickleValue::List(axes) => axes
            .iter()
            .map(|a| match a {
                PickleValue::Int(i) if (0..3).contains(i) => Ok(*i as usize),
                other => Err(fail(checkpoint, format!("mirroring axis {other:?} is not 0, 1 or 2"))),
            })
            .collect(),
        other => Err(fail(checkpoint, format!("inference_allowed_mirroring_axes is {other:?}"))),
    }
}

/// The checkpoint's `network_weights` as f32, with `_orig_mod.` / `module.` prefixes
/// (torch.compile, DataParallel) removed.
pub fn read_state_dict(checkpoint: &Path) -> Result<StateDict, Error> {
    let unreadable = |reason: String| Error::WeightsUnreadable { path: checkpoint.into(), reason };
    let reader =
        PytorchReader::with_top_level_key(checkpoint, "network_weights").map_err(|e| unreadable(e.to_string()))?;
    let mut dict = HashMap::new();
    for (name, tensor) in reader.into_tensors() {
        let bytes = tensor.read().map_err(|e| unreadable(format!("tensor {name}: {e}")))?;
        let values: Vec<f32> = match tensor.dtype() {
            DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
            DType::F64 => {
                bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
            }
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| burn::tensor::f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| burn::tensor::bf16::from_le_bytes(b.try_into().expect("2 bytes")).to_f32())
                .collect(),
            other => return Err(unreadable(format!("tensor {name} is {other:?}, not a float type"))),
        };
        let name =
            name.strip_prefix("_orig_mod.").or_else(|| name.strip_prefix("module.")).unwrap_or(&name).to_string();
        dict.insert(name, (values, tensor.shape().to_vec()));
    }
    Ok(dict)
}
