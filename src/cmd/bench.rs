use anyhow::{bail, Context, Result};
use serde::Serialize;
use voxseg::model::{
    device_memory_peak, predict, predict_multipath, reset_device_memory_peak, select, AnatomyNetConfig, Device,
    LossConfig, Net, Network, Options, Plan, Prediction, Sample, Timings, Trainer,
};
use voxseg::model::{Tensor, TensorData};
use voxseg::segment::Model;

/// Time the network's forward pass on one whole volume.
///
/// Runs one warm-up pass (kernel compilation, autotuning, allocation), then
/// --repeat timed passes on the same random input, each stage ended by a device
/// sync: upload, forward, argmax (on the device), download. Reports the minimum
/// per stage (`forward_ms` is the headline), the mean forward time, GFLOP/s from
/// the network's multiply-accumulate count (2 FLOP per MAC), and the device,
/// backend, shape and CPU threads, so a number can be reproduced.
///
/// With --model, that package's network: an AnatomyNet package at --shape, or the
/// liver model (multipath-unet) on the one segment its model.toml gives (--shape
/// is then ignored; the shape reported is that segment, DxHxW).
///
/// --train (AnatomyNet) also times training steps on one patch of --shape, as `voxseg
/// train` runs them: upload, forward with batch statistics, loss, backward, Adam
/// update, one warm-up step then --repeat timed, each right after a timed forward
/// pass (a machine whose speed drifts slows both alike); `train_step_ms` (minimum)
/// sits next to `forward_ms` and `train_to_forward` is their ratio;
/// `train_to_forward_median` is the median of each step over the pass before it, and
/// `train_step_each_ms` lists every step (`forward_each_ms` every pass, always). The memory peaks then
/// include the training steps.
///
/// AnatomyNet runs the whole volume in one pass; --max-voxels N runs the exact slab
/// path instead (trunk on the whole volume, full-resolution tail in z-slabs of at
/// most N voxels, the same answer), as a pass that fails to allocate would. The JSON
/// says which ran ("mode", "passes"), at which precision ("precision": requested,
/// weights, arithmetic), and the device memory: "peak_device_mb" is the most the GPU
/// allocator held at the end of any stage (null with "device_memory_note" where the
/// backend reports none, as on the CPU; "peak_rss_mb" is the process's).
///
/// Examples:
///   voxseg bench --shape 64x128x128 --device cpu --repeat 5 --json
///   voxseg bench --shape 178x512x512 --device cuda --precision f16 --json
///   voxseg bench --shape 178x512x512 --device gpu --max-voxels 8000000 --json
///   voxseg bench --model liver-ct-kul --device cpu --threads 2 --repeat 3
///   voxseg bench --shape 96x96x96 --device cpu --threads 2 --repeat 3 --train --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// Volume shape DxHxW (slices x rows x columns), each even.
    #[arg(long, default_value = "64x128x128")]
    pub shape: String,
    #[command(flatten)]
    pub run_on: super::DeviceArgs,
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
    /// AnatomyNet: run the tail in slabs of at most N full-resolution voxels (exact).
    #[arg(long, value_name = "N")]
    pub max_voxels: Option<usize>,
    /// Timed passes after the warm-up.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Output classes of the random network (ignored with --model).
    #[arg(long, default_value_t = 5)]
    pub classes: usize,
    /// Time this model package (a directory, an nnU-Net training folder: one tile
    /// through one fold, or a name looked up as `segment --model` does) instead of a
    /// randomly initialised AnatomyNet.
    #[arg(long, value_name = "PKG")]
    pub model: Option<String>,
    /// AnatomyNet: also time training steps (forward, loss, backward, Adam) on a
    /// patch of --shape.
    #[arg(long)]
    pub train: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    device: String,
    backend: &'static str,
    precision: Plan,
    shape: [usize; 3],
    /// "whole", "slabs" (AnatomyNet) or "segment" (the liver model).
    mode: &'static str,
    /// Network passes per run: 1, or the number of slabs.
    passes: usize,
    classes: usize,
    threads: usize,
    repeat: usize,
    macs: u64,
    forward_ms: f64,
    forward_mean_ms: f64,
    /// Every timed forward pass, in the order they ran, for statistics of one's own.
    forward_each_ms: Vec<f64>,
    gflops: f64,
    min_ms: Timings,
    /// Most device memory the allocator held at the end of any stage, warm-up included.
    peak_device_mb: Option<f64>,
    /// Why `peak_device_mb` is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_memory_note: Option<String>,
    /// The process's peak resident memory (Linux's VmHWM), null where unknown.
    peak_rss_mb: Option<f64>,
    /// With --train: the fastest training step, its mean, and the fastest step over
    /// `forward_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    train_step_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    train_step_mean_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    train_to_forward: Option<f64>,
    /// The median over the repeats of each step over the forward pass just before it:
    /// steadier than `train_to_forward` where the machine's speed drifts within a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    train_to_forward_median: Option<f64>,
    /// Every timed training step, in the order they ran (each after the forward pass
    /// of the same index in `forward_each_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    train_step_each_ms: Option<Vec<f64>>,
}

/// Training steps of a fresh AnatomyNet on one deterministic patch `[d, h, w]` (labels
/// cycle through the classes in blocks), as `voxseg train` runs them.
struct TrainingSteps {
    trainer: Trainer,
    image: Vec<f32>,
    labels: Vec<u16>,
    annotated: Vec<bool>,
    shape: [usize; 3],
}

impl TrainingSteps {
    /// A trainer that has taken one warm-up step.
    fn new(config: &AnatomyNetConfig, device: &Device, [d, h, w]: [usize; 3]) -> TrainingSteps {
        let mut steps = TrainingSteps {
            trainer: Trainer::new(config, device, 0),
            image: sample_input(d * h * w),
            labels: (0..d * h * w).map(|i| ((i / 4096) % config.classes) as u16).collect(),
            annotated: vec![true; config.classes],
            shape: [w, h, d],
        };
        steps.step();
        steps
    }

    /// One step's wall time in ms.
    fn step(&mut self) -> f64 {
        let sample = Sample { image: &self.image, labels: &self.labels, shape: self.shape, annotated: &self.annotated };
        let start = std::time::Instant::now();
        self.trainer.step(&sample, 1e-3, &LossConfig::default());
        start.elapsed().as_secs_f64() * 1000.0
    }
}

/// Peak resident set size of this process in MiB, from /proc (Linux only).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// A deterministic input of `n` voxels in the network's usual range.
fn sample_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5).collect()
}

/// The middle value (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len() as f64;
    values.sum::<f64>() / n
}

fn parse_shape(s: &str) -> Result<[usize; 3]> {
    let v: Vec<usize> = s.split('x').map(|p| p.trim().parse()).collect::<Result<_, _>>()?;
    match v[..] {
        [d, h, w] if [d, h, w].iter().all(|&n| n > 0 && n % 2 == 0) => Ok([d, h, w]),
        _ => bail!("--shape is DxHxW with three even sides, e.g. 64x128x128 (got {s:?})"),
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let [d, h, w] = parse_shape(&args.shape)?;
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let device = args.run_on.apply()?;
    let (selected, net, package) = match &args.model {
        Some(spec) => {
            let model = Model::load(Some(spec), device)?;
            (model.device, model.net, Some(model.package))
        }
        None => {
            let selected = select(device)?;
            let net = AnatomyNetConfig::new(args.classes).init(&selected.device);
            (selected, Net::AnatomyNet(Box::new(net)), None)
        }
    };
    let plan = Plan::new(args.precision.precision, &selected.device);
    let net = net.at_precision(&plan);
    for note in selected.notice.iter().chain(&plan.note) {
        eprintln!("note: {note}");
    }
    let on = &selected.device;
    if args.train && !matches!(net, Net::AnatomyNet(_)) {
        bail!("--train times AnatomyNet training steps; this model is not an AnatomyNet");
    }
    type Pass<'a> = Box<dyn Fn() -> Result<Prediction> + 'a>;
    let (shape, classes, macs, pass): ([usize; 3], usize, u64, Pass) = match &net {
        Net::AnatomyNet(net) => {
            let config = match package.as_ref().map(|p| &p.network) {
                Some(Network::Anatomynet(config)) => config.clone(),
                _ => AnatomyNetConfig::new(args.classes),
            };
            let x = sample_input(d * h * w);
            let opts = Options { max_voxels: args.max_voxels, ..Options::default() };
            let pass = move || Ok(predict(net, &x, [w, h, d], on, &opts)?);
            ([d, h, w], config.classes, config.macs([d, h, w]), Box::new(pass))
        }
        Net::MultipathUnet(net) => {
            let segment = package.as_ref().and_then(|p| p.preprocess.segment);
            let [i, j, k] = segment.context("the package's model.toml gives no [preprocess] segment")?;
            let x = sample_input(i * j * k);
            let pass = move || Ok(predict_multipath(net, &x, [i, j, k], on)?);
            ([k, j, i], 2, net.macs([i, j, k]), Box::new(pass))
        }
        Net::Nnunet(nets) => {
            let parts = package.as_ref().map(|p| p.network.nnunet_parts()).unwrap_or_default();
            let Some(n) = parts.first().map(|(n, _)| *n) else { bail!("the package is not an nnU-Net model") };
            if parts.len() > 1 {
                eprintln!("note: timing the first of the package's {} networks", parts.len());
            }
            // One tile through one fold: the unit every sliding-window pass repeats.
            let patch = n.plan.patch_size;
            let x = sample_input(patch.iter().product());
            let fold = &nets[0].folds[0];
            let pass = move || {
                let start = std::time::Instant::now();
                let t = Tensor::<5>::from_data(TensorData::new(x.clone(), [1, 1, patch[0], patch[1], patch[2]]), on);
                let upload_ms = start.elapsed().as_secs_f64() * 1000.0;
                let start = std::time::Instant::now();
                fold.forward(t).into_data();
                let forward_ms = start.elapsed().as_secs_f64() * 1000.0;
                Ok(Prediction {
                    shape: patch,
                    classes: n.unet.classes,
                    labels: vec![],
                    confidence: vec![],
                    probabilities: None,
                    timings: Timings { upload_ms, forward_ms, ..Timings::default() },
                    tiles: 1,
                    mode: "one tile",
                })
            };
            (patch, n.unet.classes, n.unet.macs(patch), Box::new(pass))
        }
    };
    // The package's AnatomyNet (checked above), else the random one of --classes.
    let mut training = args.train.then(|| match package.as_ref().map(|p| &p.network) {
        Some(Network::Anatomynet(config)) => TrainingSteps::new(config, on, shape),
        _ => TrainingSteps::new(&AnatomyNetConfig::new(args.classes), on, shape),
    });
    reset_device_memory_peak();
    let warm = pass()?;
    // Forward passes and training steps alternate, so that a machine whose speed drifts
    // (a shared virtual machine) slows both alike and their ratio stays fair.
    let mut steps = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..args.repeat {
        runs.push(pass()?.timings);
        steps.extend(training.as_mut().map(TrainingSteps::step));
    }
    let steps = training.is_some().then_some(steps);
    let peak_device = device_memory_peak(on);
    let min = |f: fn(&Timings) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
    let min_ms = Timings {
        upload_ms: min(|t| t.upload_ms),
        forward_ms: min(|t| t.forward_ms),
        argmax_ms: min(|t| t.argmax_ms),
        download_ms: min(|t| t.download_ms),
    };
    let train_step_ms = steps.as_ref().map(|s| s.iter().copied().fold(f64::INFINITY, f64::min));
    let forward_each: Vec<f64> = runs.iter().map(|t| t.forward_ms).collect();
    let train_to_forward_median =
        steps.as_ref().map(|s| median(s.iter().zip(&forward_each).map(|(step, forward)| step / forward).collect()));
    let report = Report {
        device: selected.name.clone(),
        backend: selected.backend,
        precision: plan,
        shape,
        mode: warm.mode,
        passes: warm.tiles,
        classes,
        threads: rayon::current_num_threads(),
        repeat: args.repeat,
        macs,
        forward_ms: min_ms.forward_ms,
        forward_mean_ms: mean(forward_each.iter().copied()),
        gflops: 2.0 * macs as f64 / (min_ms.forward_ms / 1000.0) / 1e9,
        min_ms,
        peak_device_mb: peak_device.map(|b| b as f64 / (1024.0 * 1024.0)),
        device_memory_note: peak_device
            .is_none()
            .then(|| format!("{} reports no device memory; see peak_rss_mb", selected.backend)),
        peak_rss_mb: peak_rss_mb(),
        train_step_ms,
        train_step_mean_ms: steps.as_ref().map(|s| mean(s.iter().copied())),
        train_to_forward: train_step_ms.map(|t| t / min_ms.forward_ms),
        train_to_forward_median,
        forward_each_ms: forward_each,
        train_step_each_ms: steps,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} ({}, {} arithmetic), {}x{}x{} ({}, {} pass{}), {} classes, {} threads",
            report.device,
            report.backend,
            report.precision.compute.name(),
            shape[0],
            shape[1],
            shape[2],
            report.mode,
            report.passes,
            if report.passes == 1 { "" } else { "es" },
            report.classes,
            report.threads
        );
        println!(
            "  forward {:.1} ms (min of {}, mean {:.1}) = {:.1} GFLOP/s ({:.2} GMAC)",
            report.forward_ms,
            report.repeat,
            report.forward_mean_ms,
            report.gflops,
            macs as f64 / 1e9
        );
        println!(
            "  upload {:.1} ms, argmax {:.1} ms, download {:.1} ms",
            min_ms.upload_ms, min_ms.argmax_ms, min_ms.download_ms
        );
        if let (Some(step), Some(mean), Some(ratio), Some(median)) =
            (report.train_step_ms, report.train_step_mean_ms, report.train_to_forward, report.train_to_forward_median)
        {
            println!(
                "  training step {step:.1} ms (min of {}, mean {mean:.1}) = {ratio:.2}x forward; median of each step \
                 over the pass before it {median:.2}x",
                report.repeat
            );
        }
        if let Some(mb) = report.peak_device_mb {
            println!("  peak device memory {mb:.0} MiB");
        }
        if let Some(mb) = report.peak_rss_mb {
            println!("  peak resident memory {mb:.0} MiB");
        }
    }
    Ok(())
}
