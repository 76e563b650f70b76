use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use voxseg::model::select;
use voxseg::train::{self, Epoch, Progress, Request, TrainConfig};

/// Train an AnatomyNet model package on your own labelled CTs.
///
/// DATA is a dataset in the Medical Segmentation Decathlon / nnU-Net layout:
/// dataset.json (with "labels" and, MSD-style, a "training" list of {"image",
/// "label"}) beside imagesTr/ and labelsTr/. Every case is checked and
/// preprocessed first, exactly as `segment` will preprocess at inference, and
/// cached in OUTDIR/cache/; any problem (missing file, label grid that differs
/// from its image, undeclared label id) stops the run before training, listing
/// all of them. A training entry may add "missing": ["organ", ...] for organs its
/// annotator did not draw: the loss then neither punishes nor rewards them there.
///
/// Training: random patches (a third centred on an organ), small rotations,
/// scaling and intensity jitter (never mirrored), Dice + focal loss, Adam with a
/// cosine schedule. After each epoch the held-out validation cases are segmented
/// and their Dice printed; a checkpoint (OUTDIR/checkpoint/) and the model package
/// (OUTDIR/model.toml + weights.bpk) are written, so a killed run continues with
/// --resume and `voxseg segment --model OUTDIR` works after any epoch. Only
/// held-out cases are ever reported as accuracy.
///
/// Settings come from --config FILE (TOML; `--print-config` prints every default)
/// and the flags below, which override it.
///
/// Example: voxseg train --data Task09_Spleen -o models/spleen --epochs 50 --device gpu
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Dataset folder (holding dataset.json).
    #[arg(long, required_unless_present = "print_config")]
    pub data: Option<PathBuf>,
    /// Output: the model package folder (with cache/ and checkpoint/ inside).
    #[arg(short, long, required_unless_present = "print_config")]
    pub output: Option<PathBuf>,
    /// Training config (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the default config and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub run_on: super::DeviceArgs,
    /// Epochs to train in all (default 100; may be raised on --resume).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Patches per epoch (default 250).
    #[arg(long)]
    pub steps_per_epoch: Option<usize>,
    /// Seed for initial weights, patches, augmentation and the validation split.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of cases held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Hold out exactly these case ids (comma-separated) instead.
    #[arg(long, value_delimiter = ',')]
    pub val_cases: Vec<String>,
    /// Continue the run in OUTDIR from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print every epoch as JSON at the end: [{"epoch", "train_loss", "val_dice", "seconds"}].
    #[arg(long)]
    pub json: bool,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn epoch_started(&self, epoch: usize, epochs: usize, steps: usize) {
        self.0.reset();
        self.0.set_length(steps as u64);
        self.0.set_prefix(format!("epoch {epoch}/{epochs}"));
    }

    fn step(&self, loss: f64) {
        self.0.set_message(format!("loss {loss:.4}"));
        self.0.inc(1);
    }

    fn epoch_done(&self, e: &Epoch) {
        let dice: Vec<String> = e.val_dice.iter().map(|d| format!("{} {:.4}", d.name, d.dice)).collect();
        let val = if dice.is_empty() { "no validation cases".into() } else { format!("val Dice {}", dice.join(", ")) };
        self.0.suspend(|| eprintln!("epoch {}: loss {:.4}, {val}, {:.1} s", e.epoch, e.train_loss, e.seconds));
    }

    fn note(&self, message: &str) {
        self.0.suspend(|| eprintln!("{message}"));
    }
}

#[derive(Serialize)]
struct Output<'a> {
    package: String,
    device: String,
    epochs: &'a [Epoch],
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => TrainConfig::read(path)?,
        None => TrainConfig::default(),
    };
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config.with_network_defaults()?)?);
        return Ok(());
    }
    let s = &mut config.schedule;
    s.epochs = args.epochs.unwrap_or(s.epochs);
    s.steps_per_epoch = args.steps_per_epoch.unwrap_or(s.steps_per_epoch);
    s.seed = args.seed.unwrap_or(s.seed);
    s.val_fraction = args.val_fraction.unwrap_or(s.val_fraction);
    let (Some(data), Some(output)) = (args.data, args.output) else { unreachable!("clap requires both") };
    let device = select(args.run_on.apply()?)?;
    if let Some(notice) = &device.notice {
        eprintln!("note: {notice}");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} steps, {msg} [{elapsed_precise}, ETA {eta}]")
            .expect("valid template"),
    );
    let request = Request { data, output: output.clone(), config, val_cases: args.val_cases, resume: args.resume };
    let history = train::run(&request, &device, &Bar(bar.clone()))?;
    bar.finish_and_clear();
    if args.json {
        let out = Output { package: output.display().to_string(), device: device.name.clone(), epochs: &history };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!("wrote {} (run it with: voxseg segment CT -o OUT --model {})", output.display(), output.display());
    }
    Ok(())
}
