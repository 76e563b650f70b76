//! `segment`: one CT in, labels on the CT's own grid and measurements out. One
//! function per stage, so `segment`, `batch` and the tests share them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use voxseg_dicom::{CtSeries, Roi};
use voxseg_model::nnunet::{self, pipeline, NnunetEnsemble, NnunetFolder};
use voxseg_model::{
    predict, predict_multipath, select, DeviceChoice, ModelPackage, Net, Network, Options, Plan, Precision, Prediction,
    Selected,
};
use voxseg_postprocess::{clean, measure, CleanupReport, Connectivity};
use voxseg_preprocess::region::region_window;
use voxseg_preprocess::zoom::{median3, zoom_centred};
use voxseg_preprocess::{
    grid_with_spacing, pad_to_multiple, reorient, resample_argmax, resample_image, resample_nearest, Orientation,
    Reorientation, Window,
};
use voxseg_volume::nifti::{self, Header};
use voxseg_volume::{Grid, Image, LabelMap, Volume};

use crate::preview;
use crate::qc::{self, Evidence};
use crate::report::{write_structures_csv, StructureReport};

/// The package compiled into the binary, so `segment` runs with nothing installed:
/// the KU Leuven whole-liver model (models/liver-ct-kul).
const DEFAULT_TOML: &str = include_str!("../models/liver-ct-kul/model.toml");
static DEFAULT_WEIGHTS: &[u8] = include_bytes!("../models/liver-ct-kul/weights.safetensors");
pub const DEFAULT_MODEL: &str = "liver-ct-kul";

/// A loaded model on its device.
pub struct Model {
    pub package: ModelPackage,
    pub net: Net,
    pub device: Selected,
    /// The network's float type on this device (`--precision`).
    pub precision: Plan,
}

/// Where `--model NAME` is looked for, in order: NAME as a directory, then
/// `models/NAME` under the current directory, `$VOXSEG_MODELS`, the binary's folder
/// (`models/`, then `../share/voxseg/models/` as an installed layout has it), and the
/// user's data directory (`$XDG_DATA_HOME` or `~/.local/share`, then `voxseg/models/`).
fn package_candidates(spec: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("models")];
    roots.extend(std::env::var_os("VOXSEG_MODELS").map(PathBuf::from));
    if let Some(bin) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        roots.push(bin.join("models"));
        roots.push(bin.join("../share/voxseg/models"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    roots.extend(data.map(|d| d.join("voxseg/models")));
    std::iter::once(PathBuf::from(spec)).chain(roots.into_iter().map(|r| r.join(spec))).collect()
}

/// The first of [`package_candidates`] holding a `model.toml`; the error lists every
/// place looked in.
fn find_package(spec: &str) -> Result<PathBuf> {
    let candidates = package_candidates(spec);
    if let Some(dir) = candidates.iter().find(|d| d.join("model.toml").is_file()) {
        return Ok(dir.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|d| format!("  {}", d.display())).collect();
    bail!("model {spec:?}: no package (a directory with model.toml) in any of:\n{}", looked.join("\n"))
}

impl Model {
    /// `spec` is a package directory, or the name of one found by
    /// [`package_candidates`]; `None` is the package embedded in the binary.
    pub fn load(spec: Option<&str>, device: DeviceChoice) -> Result<Model> {
        if let Some(folder) = spec.map(Path::new).filter(|p| nnunet::is_folder(p)) {
            return Model::load_nnunet_folder(folder, device);
        }
        // A name that finds no package fails before any device is probed.
        let dir = spec.map(find_package).transpose()?;
        let device = select(device)?;
        let (package, net) = match dir {
            None => {
                let dir = PathBuf::from(format!("<built-in>/{DEFAULT_MODEL}"));
                let package = ModelPackage::parse(DEFAULT_TOML, &dir)?;
                let Network::MultipathUnet(config) = &package.network else {
                    bail!("the built-in package is the liver model")
                };
                let net = voxseg_model::load_multipath_bytes(config, DEFAULT_WEIGHTS.to_vec(), &dir, &device.device)?;
                (package, Net::MultipathUnet(Box::new(net)))
            }
            Some(dir) => {
                let package = ModelPackage::open(&dir)?;
                let net = package.load(&device.device)?;
                (package, net)
            }
        };
        let precision = Plan::new(Precision::F32, &device.device);
        Ok(Model { package, net, device, precision })
    }

    /// The model with its weights cast to `precision` (see [`Plan`] for what runs in it).
    pub fn at_precision(self, precision: Precision) -> Model {
        let plan = Plan::new(precision, &self.device.device);
        Model { net: self.net.at_precision(&plan), precision: plan, ..self }
    }

    /// An nnU-Net v2 training folder run as it is (every fold, weights read from its
    /// checkpoints), as `voxseg import` would package it.
    fn load_nnunet_folder(folder: &Path, device: DeviceChoice) -> Result<Model> {
        let nnunet = NnunetFolder::open(folder, &[])?;
        let device = select(device)?;
        let name = format!("{}-{}", nnunet.dataset, nnunet.configuration);
        let package = nnunet.package(&name, "(the folder's fold_*/checkpoint_final.pth)", folder);
        let net = Net::Nnunet(vec![nnunet.load(&device.device)?]);
        let precision = Plan::new(Precision::F32, &device.device);
        Ok(Model { package, net, device, precision })
    }

    /// True when the package says its weights learned nothing (the demo package).
    pub fn untrained(&self) -> bool {
        self.package.provenance.trained_on.starts_with("nothing")
    }

    /// Tells the user on stderr what they must know before trusting the output: a
    /// fallback to the CPU, or weights that learned nothing.
    pub fn announce(&self) {
        if let Some(notice) = &self.device.notice {
            eprintln!("note: {notice}");
        }
        if let Some(note) = &self.precision.note {
            eprintln!("note: {note}");
        }
        if self.untrained() {
            eprintln!(
                "warning: model {} has untrained (random) weights: its labels are not anatomy. Pass --model PKG.",
                self.package.name
            );
        }
    }
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    pub read_ms: f64,
    pub preprocess_ms: f64,
    pub upload_ms: f64,
    pub forward_ms: f64,
    pub argmax_ms: f64,
    pub download_ms: f64,
    pub postprocess_ms: f64,
    pub write_ms: f64,
}

/// A CT read and made ready for the network.
pub struct Prepared {
    pub path: PathBuf,
    pub ct: Image,
    /// The CT's NIfTI header, or a fresh one for its grid when it came from DICOM.
    pub header: Header,
    /// The source series when the CT came from DICOM (for RTSTRUCT / SEG).
    pub dicom: Option<CtSeries>,
    /// The CT on the model's grid (cropped, resampled, normalised), before padding.
    pub model_grid: Grid,
    /// How the CT was brought to the model's orientation (undone on the way back).
    pub reorientation: Reorientation,
    /// The crop of the canonical CT the model grid covers.
    pub crop: Window,
    /// Network input: the model grid padded to the stride, or the fixed segment.
    pub input: Image,
    /// Where the input's first voxel lies on the model grid.
    pub input_start: [i64; 3],
    /// nnU-Net models: each network's input on its plans' grid, and how to undo it
    /// (then `input` is the CT in the package orientation, on its own grid); empty for
    /// other models.
    pub nnunet: Vec<pipeline::Prepared>,
    pub timings: StageTimings,
}

/// Reads a CT: a NIfTI file, or a folder of DICOM slices (the series `series`, or
/// the folder's only CT series).
pub fn read_ct(path: &Path, series: Option<&str>) -> Result<(Image, Header, Option<CtSeries>)> {
    if path.is_dir() {
        let (ct, dicom) = voxseg_dicom::read_series(path, series)?;
        let header = Header::for_grid(ct.grid());
        return Ok((ct, header, Some(dicom)));
    }
    if let Some(uid) = series {
        bail!("--series {uid}: {} is a file; --series chooses a series in a folder of DICOM slices", path.display());
    }
    let (ct, header) = nifti::read_image(path)?;
    Ok((ct, header, None))
}

/// Reads and preprocesses one CT (runs on CPU threads, ahead of the device).
pub fn prepare(path: &Path, series: Option<&str>, package: &ModelPackage) -> Result<Prepared> {
    let start = Instant::now();
    let (ct, header, dicom) = read_ct(path, series)?;
    check_looks_like_ct(path, &ct)?;
    let read_ms = ms(start);
    let start = Instant::now();
    let p = &package.preprocess;
    let orientation: Orientation = p.orientation.parse().map_err(|e| anyhow::anyhow!("model orientation: {e}"))?;
    let (canonical, reorientation) = reorient(ct.clone(), orientation)?;
    let networks = package.network.nnunet_parts();
    if !networks.is_empty() {
        let crop = Window::new(canonical.grid(), [0; 3], canonical.shape())?;
        let [ni, nj, nk] = canonical.shape();
        let sp = canonical.grid().spacing();
        // nnU-Net's SimpleITK reader gives the [k, j, i] array voxseg stores.
        let nnunet = networks
            .iter()
            .map(|(n, _)| pipeline::prepare(canonical.data(), [nk, nj, ni], [sp[2], sp[1], sp[0]], &n.plan))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{}: every voxel is 0, nothing to segment", path.display()))?;
        let timings = StageTimings { read_ms, preprocess_ms: ms(start), ..StageTimings::default() };
        return Ok(Prepared {
            path: path.to_path_buf(),
            ct,
            header,
            dicom,
            model_grid: canonical.grid().clone(),
            reorientation,
            crop,
            input: canonical,
            input_start: [0; 3],
            nnunet,
            timings,
        });
    }
    let crop = match &p.region_crop {
        Some(c) => region_window(&canonical, c)?,
        None => Window::new(canonical.grid(), [0; 3], canonical.shape())?,
    };
    let cropped = crop.apply(canonical, 0.0)?;
    let resampled = match p.median_at_mm {
        // As the KU Leuven model was trained: centre-aligned zooms, 0 HU outside.
        Some(fine) => zoom_centred(&median3(&zoom_centred(&cropped, fine, 0.0)?), p.spacing_mm, 0.0)?,
        None => resample_image(&cropped, &grid_with_spacing(cropped.grid(), p.spacing_mm)?)?,
    };
    let normalised = p.intensity.apply(resampled)?;
    let model_grid = normalised.grid().clone();
    let (window, fill) = match p.segment {
        Some(size) => {
            let n = model_grid.shape();
            let start = std::array::from_fn(|a| (n[a] / 2) as i64 - (size[a] / 2) as i64);
            (Window::new(&model_grid, start, size)?, 0.0)
        }
        None => {
            let min = normalised.data().iter().copied().fold(f32::INFINITY, f32::min);
            (pad_to_multiple(&model_grid, [p.stride; 3])?, min)
        }
    };
    let input_start = window.start();
    let input = window.apply(normalised, fill)?;
    let timings = StageTimings { read_ms, preprocess_ms: ms(start), ..StageTimings::default() };
    Ok(Prepared {
        path: path.to_path_buf(),
        ct,
        header,
        dicom,
        model_grid,
        reorientation,
        crop,
        input,
        input_start,
        nnunet: vec![],
        timings,
    })
}

/// Every CT field of view holds air or fat (below -100 HU); an image without any is
/// most likely not a CT in Hounsfield units (an MR, a mask, a rescaled image).
fn check_looks_like_ct(path: &Path, ct: &Image) -> Result<()> {
    let (min, max) = ct.data().iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if min > -100.0 {
        bail!(
            "{}: values {min}..{max} do not look like CT Hounsfield units (no air or fat below -100 HU)",
            path.display()
        );
    }
    Ok(())
}

/// Everything `segment` produces for one CT.
pub struct Segmentation {
    pub labels: LabelMap,
    pub structures: Vec<StructureReport>,
    pub cleanup: Vec<CleanupReport>,
    pub timings: StageTimings,
    pub mode: &'static str,
}

/// Runs the network and brings its answer back to the CT's own grid, cleaned and measured.
pub fn segment(model: &Model, prepared: &Prepared) -> Result<Segmentation> {
    let input = &prepared.input;
    let device = &model.device.device;
    let prediction: Prediction = match &model.net {
        Net::Nnunet(nets) => return segment_nnunet(model, prepared, nets),
        Net::AnatomyNet(net) => {
            let opts = Options { keep_probabilities: true, ..Options::default() };
            predict(net, input.data(), input.shape(), device, &opts)?
        }
        Net::MultipathUnet(net) => predict_multipath(net, input.data(), input.shape(), device)?,
    };
    let mut timings = prepared.timings;
    timings.upload_ms = prediction.timings.upload_ms;
    timings.forward_ms = prediction.timings.forward_ms;
    timings.argmax_ms = prediction.timings.argmax_ms;
    timings.download_ms = prediction.timings.download_ms;

    let start = Instant::now();
    let reorientation = &prepared.reorientation;
    let probabilities = prediction.probabilities.as_deref().context("the engine returned no probabilities")?;
    // The answer on the model grid: every model-grid voxel takes the nearest voxel of
    // the network's output (which may be padded beyond it, or cover only its centre).
    let grid = &prepared.model_grid;
    let offset: [i64; 3] =
        std::array::from_fn(|a| prepared.input_start[a] + ((input.shape()[a] - prediction.shape[a]) / 2) as i64);
    let (probs, confidence) = nearest_on(grid, probabilities, &prediction.confidence, prediction.shape, offset);
    // Model grid -> crop of the canonical CT -> whole canonical CT -> the CT's own
    // grid; probabilities are resampled before the argmax (smoother, faithful edges).
    let cropped = prepared.crop.grid().clone();
    let labels = reorientation.undo(prepared.crop.undo(resample_argmax(&probs, grid, &cropped)?, 0)?)?;
    let confidence = Volume::new(grid.clone(), confidence);
    let confidence = reorientation.undo(prepared.crop.undo(resample_nearest(&confidence, &cropped)?, 0.0)?)?;
    let (structures, cleanup, labels) = measure_structures(model, prepared, labels, Some(&confidence))?;
    timings.postprocess_ms = ms(start);
    Ok(Segmentation { labels, structures, cleanup, timings, mode: prediction.mode })
}

/// An nnU-Net model: each network's sliding windows over its plans' grid, then
/// nnU-Net's way back to the CT (logits resampled, argmax), its labels written over
/// the previous networks' in the package's order (later wins), then voxseg's
/// measurements.
fn segment_nnunet(model: &Model, prepared: &Prepared, nets: &[NnunetEnsemble]) -> Result<Segmentation> {
    let networks = model.package.network.nnunet_parts();
    if networks.len() != nets.len() || networks.len() != prepared.nnunet.len() {
        bail!("the CT was not prepared for this package's {} nnU-Net network(s)", networks.len());
    }
    let mut timings = prepared.timings;
    let mut combined = vec![0u16; prepared.input.data().len()];
    for (((n, ids), net), input) in networks.iter().zip(nets).zip(&prepared.nnunet) {
        let start = Instant::now();
        let classes = n.unet.classes;
        // Logit rows go to the export as soon as they are final: neither the logits nor
        // the sums behind them are ever held for the whole CT (with nnU-Net's default
        // linear resampling of logits).
        let mut labels = pipeline::LabelStream::new(classes, input, &n.plan);
        let mut export = std::time::Duration::ZERO;
        nnunet::predict_logit_rows(
            &net.folds,
            classes,
            &input.data,
            input.shape,
            &n.window(),
            &model.device.device,
            |_, _| {},
            |rows, logits| {
                let start = Instant::now();
                labels.push(rows, logits);
                export += start.elapsed();
            },
        );
        let start_finish = Instant::now();
        let kji = labels.finish();
        pipeline::overlay(&mut combined, &kji, ids);
        export += start_finish.elapsed();
        timings.forward_ms += ms(start) - export.as_secs_f64() * 1000.0;
        timings.postprocess_ms += export.as_secs_f64() * 1000.0;
    }
    let start = Instant::now();
    let canonical = Volume::new(prepared.input.grid().clone(), combined);
    let labels = prepared.reorientation.undo(canonical)?;
    let (structures, cleanup, labels) = measure_structures(model, prepared, labels, None)?;
    timings.postprocess_ms += ms(start);
    Ok(Segmentation { labels, structures, cleanup, timings, mode: "sliding-window" })
}

/// Clean-up as the package says, then one report per organ with its QC flags;
/// `confidence` (the winning class's probability per voxel), where the engine has one.
fn measure_structures(
    model: &Model,
    prepared: &Prepared,
    mut labels: LabelMap,
    confidence: Option<&Volume<f32>>,
) -> Result<(Vec<StructureReport>, Vec<CleanupReport>, LabelMap)> {
    let package = &model.package;
    let ct = &prepared.ct;
    let rules: Vec<_> = package.labels.iter().map(|l| (l.id, l.cleanup)).collect();
    let cleanup = clean(&mut labels, Connectivity::Corners, |id| {
        rules.iter().find(|(l, _)| *l == id).map(|(_, c)| *c).unwrap_or_default()
    });
    let ids: Vec<u16> = package.labels.iter().map(|l| l.id).collect();
    let measured = measure(&labels, Some(ct), &ids, Connectivity::Corners)?;
    let structures = measured
        .into_iter()
        .zip(&package.labels)
        .map(|(m, label)| {
            let inside: Vec<f32> = confidence.map_or_else(Vec::new, |confidence| {
                labels.data().iter().zip(confidence.data()).filter(|(&l, _)| l == label.id).map(|(_, &c)| c).collect()
            });
            let evidence = Evidence {
                volume_ml: m.volume_ml,
                touches_border: m.touches_border,
                raw_component_voxels: cleanup
                    .iter()
                    .find(|r| r.label == label.id)
                    .map(|r| r.raw_component_voxels.clone())
                    .unwrap_or_default(),
                mean_confidence: (!inside.is_empty())
                    .then(|| inside.iter().map(|&c| f64::from(c)).sum::<f64>() / inside.len() as f64),
            };
            StructureReport {
                name: label.name.clone(),
                tg263: label.tg263.clone(),
                qc: Some(qc::flags(&evidence, &label.qc)),
                measurement: m,
            }
        })
        .collect();
    Ok((structures, cleanup, labels))
}

/// What `segment --json` prints and `stats.json` holds.
#[derive(Serialize)]
pub struct Stats<'a> {
    pub source: String,
    pub model: &'a str,
    pub model_trained_on: &'a str,
    pub device: String,
    pub backend: &'static str,
    /// The network's float type: requested, weights, arithmetic (`--precision`).
    pub precision: &'a Plan,
    pub inference: &'static str,
    pub spacing_mm: [f64; 3],
    pub voxel_volume_mm3: f64,
    pub structures: &'a [StructureReport],
    pub needs_review: bool,
    pub timings_ms: StageTimings,
}

pub fn stats<'a>(model: &'a Model, prepared: &Prepared, seg: &'a Segmentation) -> Stats<'a> {
    Stats {
        source: prepared.path.display().to_string(),
        model: &model.package.name,
        model_trained_on: &model.package.provenance.trained_on,
        device: model.device.name.clone(),
        backend: model.device.backend,
        precision: &model.precision,
        inference: seg.mode,
        spacing_mm: prepared.ct.grid().spacing(),
        voxel_volume_mm3: prepared.ct.grid().voxel_volume_mm3(),
        structures: &seg.structures,
        needs_review: seg.structures.iter().any(|s| s.qc.is_some_and(|q| q.needs_review)),
        timings_ms: seg.timings,
    }
}

/// Which optional files `write` adds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outputs {
    pub preview: bool,
    /// `rtstruct.dcm` (DICOM input only).
    pub rtstruct: bool,
    /// `seg.dcm` (DICOM input only).
    pub dicom_seg: bool,
}

/// The model's organs as DICOM ROIs: TG-263 names where the package has them, the
/// preview's colours.
pub fn rois(package: &ModelPackage) -> Vec<Roi> {
    package
        .labels
        .iter()
        .map(|l| Roi { id: l.id, name: l.name.clone(), tg263: l.tg263.clone(), colour: preview::colour(l.id) })
        .collect()
}

/// Writes `labels.nii.gz` (on the CT's grid and header), `stats.json`, `stats.csv`
/// and, as asked, `preview.png`, `rtstruct.dcm` and `seg.dcm` into `out`, each
/// atomically. Returns the timings with `write_ms` filled in.
pub fn write(
    out: &Path,
    model: &Model,
    prepared: &Prepared,
    seg: &Segmentation,
    outputs: Outputs,
) -> Result<StageTimings> {
    let start = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    nifti::write_labels(out.join("labels.nii.gz"), &seg.labels, &prepared.header)?;
    let mut timings = seg.timings;
    let json = serde_json::to_vec_pretty(&stats(model, prepared, seg))?;
    voxseg_volume::write_atomically(&out.join("stats.json"), |w| w.write_all(&json))
        .with_context(|| format!("cannot write {}", out.join("stats.json").display()))?;
    voxseg_volume::write_atomically(&out.join("stats.csv"), |w| {
        write_structures_csv(w, &seg.structures).map_err(std::io::Error::other)
    })
    .with_context(|| format!("cannot write {}", out.join("stats.csv").display()))?;
    if outputs.rtstruct || outputs.dicom_seg {
        let series = prepared.dicom.as_ref().with_context(|| {
            format!("{}: RTSTRUCT and DICOM-SEG need a DICOM series as input", prepared.path.display())
        })?;
        let rois = rois(&model.package);
        if outputs.rtstruct {
            voxseg_dicom::write_rtstruct(&out.join("rtstruct.dcm"), &seg.labels, &rois, series)?;
        }
        if outputs.dicom_seg {
            voxseg_dicom::write_seg(&out.join("seg.dcm"), &seg.labels, &rois, series)?;
        }
    }
    if outputs.preview {
        let organs: Vec<preview::Organ> = seg
            .structures
            .iter()
            .filter_map(|s| {
                s.measurement.centroid_ras_mm.map(|c| preview::Organ {
                    label: s.measurement.label,
                    name: s.name.clone(),
                    volume_ml: s.measurement.volume_ml,
                    centroid_mm: c,
                })
            })
            .collect();
        let warning = if model.untrained() { " - UNTRAINED DEMO, NOT ANATOMY" } else { "" };
        let title = format!("{} - {}{warning}", prepared.path.display(), model.package.name);
        preview::render(&prepared.ct, &seg.labels, &organs, &title)
            .write_png(&out.join("preview.png"))
            .with_context(|| format!("cannot write {}", out.join("preview.png").display()))?;
    }
    timings.write_ms = ms(start);
    Ok(timings)
}

/// Class probabilities (channels first) and confidence on `grid`, each voxel taking
/// the nearest voxel of an output of `shape` whose first voxel sits at `offset` on `grid`.
fn nearest_on(
    grid: &Grid,
    probs: &[f32],
    confidence: &[f32],
    shape: [usize; 3],
    offset: [i64; 3],
) -> (Vec<f32>, Vec<f32>) {
    let [gx, gy, gz] = grid.shape();
    let n_out: usize = shape.iter().product();
    let classes = probs.len() / n_out;
    let pick = |v: usize, a: usize| (v as i64 - offset[a]).clamp(0, shape[a] as i64 - 1) as usize;
    let mut p = vec![0f32; classes * gx * gy * gz];
    let mut c = vec![0f32; gx * gy * gz];
    let n_grid = gx * gy * gz;
    for z in 0..gz {
        for y in 0..gy {
            for x in 0..gx {
                let src = pick(x, 0) + shape[0] * (pick(y, 1) + shape[1] * pick(z, 2));
                let dst = x + gx * (y + gy * z);
                c[dst] = confidence[src];
                for k in 0..classes {
                    p[k * n_grid + dst] = probs[k * n_out + src];
                }
            }
        }
    }
    (p, c)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
