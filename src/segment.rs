//! `segment`: one CT in, labels on the CT's own grid and measurements out. One
//! function per stage, so `segment`, `batch` and the tests share them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use voxseg_model::{predict, select, AnatomyNet, DeviceChoice, ModelPackage, Options, Prediction, Selected};
use voxseg_postprocess::{clean, measure, CleanupReport, Connectivity};
use voxseg_preprocess::{
    grid_with_spacing, pad_to_multiple, reorient, resample_argmax, resample_image, resample_nearest, Orientation,
};
use voxseg_volume::nifti::{self, Header};
use voxseg_volume::{Image, LabelMap, Volume};

use crate::preview;
use crate::qc::{self, Evidence};
use crate::report::{write_structures_csv, StructureReport};

/// The package compiled into the binary, so `segment` runs with nothing installed.
const DEFAULT_TOML: &str = include_str!("../models/demo-untrained/model.toml");
/// Tensors are read in place, so the bytes need the alignment of their elements.
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);
static DEFAULT_WEIGHTS: &Aligned<[u8]> = &Aligned(*include_bytes!("../models/demo-untrained/weights.bpk"));
pub const DEFAULT_MODEL: &str = "demo-untrained";

/// A loaded model on its device.
pub struct Model {
    pub package: ModelPackage,
    pub net: AnatomyNet,
    pub device: Selected,
}

impl Model {
    /// `spec` is a package directory, or the name of one under `models/`; `None`
    /// is the package embedded in the binary.
    pub fn load(spec: Option<&str>, device: DeviceChoice) -> Result<Model> {
        let device = select(device)?;
        let (package, net) = match spec {
            None => {
                let dir = PathBuf::from(format!("<built-in>/{DEFAULT_MODEL}"));
                let package = ModelPackage::parse(DEFAULT_TOML, &dir)?;
                let net = voxseg_model::load_static(&package.network, &DEFAULT_WEIGHTS.0, &dir, &device.device)?;
                (package, net)
            }
            Some(spec) => {
                let path = Path::new(spec);
                let dir =
                    if path.join("model.toml").is_file() { path.to_path_buf() } else { Path::new("models").join(spec) };
                if !dir.join("model.toml").is_file() {
                    bail!("model {spec:?}: neither a package directory (with model.toml) nor a package in models/");
                }
                let package = ModelPackage::open(&dir)?;
                let net = package.load(&device.device)?;
                (package, net)
            }
        };
        Ok(Model { package, net, device })
    }

    /// True when the package says its weights learned nothing (the built-in demo).
    pub fn untrained(&self) -> bool {
        self.package.provenance.trained_on.starts_with("nothing")
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
    pub header: Header,
    /// Network input on the padded model grid.
    pub input: Image,
    pub timings: StageTimings,
}

/// Reads and preprocesses one CT (runs on CPU threads, ahead of the device).
pub fn prepare(path: &Path, package: &ModelPackage) -> Result<Prepared> {
    let start = Instant::now();
    let (ct, header) = nifti::read_image(path)?;
    check_looks_like_ct(path, &ct)?;
    let read_ms = ms(start);
    let start = Instant::now();
    let p = &package.preprocess;
    let orientation: Orientation = p.orientation.parse().map_err(|e| anyhow::anyhow!("model orientation: {e}"))?;
    let (canonical, _) = reorient(ct.clone(), orientation)?;
    let target = grid_with_spacing(canonical.grid(), p.spacing_mm)?;
    let resampled = p.intensity.apply(resample_image(&canonical, &target)?)?;
    let fill = resampled.data().iter().copied().fold(f32::INFINITY, f32::min);
    let window = pad_to_multiple(resampled.grid(), [p.stride; 3])?;
    let input = window.apply(resampled, fill)?;
    let timings = StageTimings { read_ms, preprocess_ms: ms(start), ..StageTimings::default() };
    Ok(Prepared { path: path.to_path_buf(), ct, header, input, timings })
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
    let opts = Options { keep_probabilities: true, ..Options::default() };
    let input = &prepared.input;
    let prediction: Prediction = predict(&model.net, input.data(), input.shape(), &model.device.device, &opts)?;
    let mut timings = prepared.timings;
    timings.upload_ms = prediction.timings.upload_ms;
    timings.forward_ms = prediction.timings.forward_ms;
    timings.argmax_ms = prediction.timings.argmax_ms;
    timings.download_ms = prediction.timings.download_ms;

    let start = Instant::now();
    let package = &model.package;
    let ct = &prepared.ct;
    let orientation: Orientation = package.preprocess.orientation.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    // The model grid (padded) -> the canonical CT grid -> the CT's own grid; the
    // probabilities are resampled before the argmax (smoother, more faithful edges).
    let (canonical_grid, reorientation) = {
        let (v, r) = reorient(Volume::new(ct.grid().clone(), vec![0u8; ct.grid().len()]), orientation)?;
        (v.grid().clone(), r)
    };
    let probabilities = prediction.probabilities.as_deref().context("the engine returned no probabilities")?;
    let labels = reorientation.undo(resample_argmax(probabilities, input.grid(), &canonical_grid)?)?;
    let confidence = Volume::new(input.grid().clone(), prediction.confidence.clone());
    let confidence = reorientation.undo(resample_nearest(&confidence, &canonical_grid)?)?;
    let mut labels = labels;
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
            let inside: Vec<f32> =
                labels.data().iter().zip(confidence.data()).filter(|(&l, _)| l == label.id).map(|(_, &c)| c).collect();
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
            StructureReport { name: label.name.clone(), qc: Some(qc::flags(&evidence, &label.qc)), measurement: m }
        })
        .collect();
    timings.postprocess_ms = ms(start);
    Ok(Segmentation { labels, structures, cleanup, timings, mode: prediction.mode })
}

/// What `segment --json` prints and `stats.json` holds.
#[derive(Serialize)]
pub struct Stats<'a> {
    pub source: String,
    pub model: &'a str,
    pub model_trained_on: &'a str,
    pub device: String,
    pub backend: &'static str,
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
        inference: seg.mode,
        spacing_mm: prepared.ct.grid().spacing(),
        voxel_volume_mm3: prepared.ct.grid().voxel_volume_mm3(),
        structures: &seg.structures,
        needs_review: seg.structures.iter().any(|s| s.qc.is_some_and(|q| q.needs_review)),
        timings_ms: seg.timings,
    }
}

/// Writes `labels.nii.gz` (on the CT's grid and header), `stats.json`, `stats.csv`
/// and optionally `preview.png` into `out`, each atomically. Returns the timings
/// with `write_ms` filled in.
pub fn write(
    out: &Path,
    model: &Model,
    prepared: &Prepared,
    seg: &Segmentation,
    with_preview: bool,
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
    if with_preview {
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

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
