use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use voxseg::model::nnunet::{self, NnunetFolder};
use voxseg::model::{
    import_pytorch, save, select, AnatomyNetConfig, DeviceChoice, Label, ModelPackage, Network, Preprocess, Provenance,
};
use voxseg::preprocess::Intensity;

/// Turn trained weights into a voxseg model package: one or more nnU-Net v2 training
/// folders, or a PyTorch AnatomyNet state dict.
///
/// An nnU-Net v2 training folder (<Trainer>__<Plans>__<configuration>, holding
/// dataset.json, plans.json and fold_K/checkpoint_final.pth) carries everything
/// itself: labels from dataset.json (TG-263 names where known), the network and the
/// preprocessing from the plans, every fold's weights (--folds picks some, in every
/// folder). The package runs as nnU-Net runs it (sliding windows, no clean-up).
/// `segment --model` also takes one such folder directly, without importing it.
///
/// Several folders make one package that runs every network and combines their labels
/// into one table, as TotalSegmentator combines the five networks of its `total` task:
/// label ids in order of first appearance across the folders' dataset.json (a class
/// name in several folders keeps one id); where several networks label a voxel, the
/// folder given later wins.
///
/// A state dict (.pt/.pth from torch.save, or .safetensors) uses the AnatomyNet
/// reference implementation's keys (conv1, bn1, layer1..layer11; see DESIGN.md) and
/// needs --labels, --spacing and --window.
///
/// Every tensor's presence and shape is checked (a mismatch names the tensor, exit 2);
/// the package is OUT/model.toml + OUT/weights.bpk (burn's format).
///
/// Examples:
///   voxseg import Dataset291_TotalSegmentator_part1_organs_1559subj/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres
///            -o models/ts-organs
///   voxseg import Dataset29{1,2,3,4,5}_*/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres -o models/ts-total
///   voxseg import weights.pth -o models/my-spleen --labels spleen
///            --spacing 1.5,1.5,1.5 --window -160,240
///            --trained-on "40 portal-venous CTs, in-house" --measured-on "not measured"
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// One or more nnU-Net v2 training folders (combined in this order, later wins), or
    /// one state dict (.pt, .pth or .safetensors).
    #[arg(required = true, value_name = "FOLDER|STATE_DICT")]
    pub inputs: Vec<PathBuf>,
    /// Package directory to create.
    #[arg(short, long)]
    pub output: PathBuf,
    /// State dict: organ names for classes 1..K-1, comma-separated, in class order.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// State dict: target voxel spacing in mm the network was trained at: X,Y,Z.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub spacing: Vec<f64>,
    /// State dict: HU window MIN,MAX the network was trained with.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub window: Vec<f64>,
    /// nnU-Net folder: the folds to import, comma-separated (`0,1,2`, `all`); default
    /// every fold with a checkpoint_final.pth.
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<String>,
    /// How the window maps to network input: `unit` = [0, 1], `centered` = [-0.5, 0.5].
    #[arg(long, default_value = "unit", value_parser = ["unit", "centered"])]
    pub scale: String,
    /// Axis codes the network expects.
    #[arg(long, default_value = "RAS")]
    pub orientation: String,
    /// Package name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// What the weights were trained on (stored as provenance; be specific). Default
    /// for a state dict: "unknown (imported without provenance)"; for an nnU-Net
    /// folder: its dataset, trainer, plans and configuration.
    #[arg(long)]
    pub trained_on: Option<String>,
    /// What their accuracy was measured on, with numbers. Default: "not measured".
    #[arg(long)]
    pub measured_on: Option<String>,
}

pub fn run(args: ImportArgs) -> Result<()> {
    if args.output.join("model.toml").exists() {
        bail!("{} already holds a model package; choose a new directory", args.output.display());
    }
    let state_dict = match &args.inputs[..] {
        [one] if !nnunet::is_folder(one) => one.clone(),
        _ => return import_nnunet(args),
    };
    if args.labels.is_empty() || args.spacing.len() != 3 || args.window.len() != 2 {
        bail!(
            "{}: a state dict needs --labels, --spacing X,Y,Z and --window MIN,MAX (comma-separated); \
             an nnU-Net folder (with plans.json and dataset.json) needs none",
            state_dict.display()
        );
    }
    if !args.folds.is_empty() {
        bail!("--folds chooses folds of an nnU-Net folder; {} is a state dict", state_dict.display());
    }
    let [min_hu, max_hu] = [args.window[0], args.window[1]];
    let intensity = match args.scale.as_str() {
        "unit" => Intensity::Window { min_hu, max_hu },
        _ => Intensity::Linear { min_hu, max_hu, out_min: -0.5, out_max: 0.5 },
    };
    let network = AnatomyNetConfig::new(args.labels.len() + 1);
    let name = package_name(&args)?;
    let device = select(DeviceChoice::Cpu)?.device;
    let net = import_pytorch(&network, &state_dict, &device)?;
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    let package = ModelPackage {
        name,
        weights: "weights.bpk".into(),
        network: Network::Anatomynet(network.clone()),
        labels: args
            .labels
            .iter()
            .enumerate()
            .map(|(i, n)| Label {
                id: i as u16 + 1,
                name: n.trim().to_string(),
                tg263: None,
                qc: Default::default(),
                cleanup: Default::default(),
            })
            .collect(),
        preprocess: Preprocess {
            orientation: args.orientation,
            spacing_mm: [args.spacing[0], args.spacing[1], args.spacing[2]],
            intensity,
            stride: 2,
            region_crop: None,
            median_at_mm: None,
            segment: None,
        },
        provenance: Provenance {
            trained_on: args.trained_on.unwrap_or_else(|| "unknown (imported without provenance)".into()),
            measured_on: args.measured_on.unwrap_or_else(|| "not measured".into()),
            source: Some(format!("voxseg import {}", state_dict.display())),
            licence: None,
            training: None,
        },
        dir: args.output.clone(),
    };
    save(&net, &package.weights_path())?;
    package.write_toml(&args.output)?;
    // Prove the package loads as written.
    ModelPackage::open(&args.output)?.load(&device)?;
    eprintln!("wrote {} ({} classes: background, {})", args.output.display(), network.classes, args.labels.join(", "));
    Ok(())
}

/// `--name`, or the output directory's name.
fn package_name(args: &ImportArgs) -> Result<String> {
    Ok(match &args.name {
        Some(n) => n.clone(),
        None => args.output.file_name().context("the output needs a directory name")?.to_string_lossy().into_owned(),
    })
}

fn import_nnunet(args: ImportArgs) -> Result<()> {
    if !args.labels.is_empty() || !args.spacing.is_empty() || !args.window.is_empty() {
        bail!(
            "{} is an nnU-Net folder: its labels, spacing and intensity come from dataset.json and plans.json, \
             so --labels, --spacing and --window do not apply",
            args.inputs[0].display()
        );
    }
    let folders = match &args.inputs[..] {
        [one] => vec![NnunetFolder::open(one, &args.folds)?],
        several => NnunetFolder::open_all(several, &args.folds)?,
    };
    let device = select(DeviceChoice::Cpu)?.device;
    let nets = folders.iter().map(|f| f.load(&device)).collect::<Result<Vec<_>, _>>()?;
    let name = package_name(&args)?;
    let mut package = match &folders[..] {
        [one] => one.package(&name, "weights.bpk", &args.output),
        several => NnunetFolder::combined_package(several, &name, "weights.bpk", &args.output),
    };
    if let Some(t) = args.trained_on {
        package.provenance.trained_on = t;
    }
    if let Some(m) = args.measured_on {
        package.provenance.measured_on = m;
    }
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    if let [one] = &nets[..] {
        // One folder: its folds at the top of the file, as a single network's package reads them.
        save(one, &package.weights_path())?;
    } else {
        save(&nets, &package.weights_path())?;
    }
    package.write_toml(&args.output)?;
    // Prove the package loads as written.
    ModelPackage::open(&args.output)?.load(&device)?;
    for folder in &folders {
        let names: Vec<&str> = folder.labels.iter().map(|(_, n)| n.as_str()).collect();
        eprintln!(
            "{}: {:?}, {} fold(s), {} classes: background, {}",
            folder.dataset,
            folder.network.class,
            folder.folds.len(),
            folder.network.classes,
            names.join(", ")
        );
    }
    eprintln!("wrote {} ({} labels)", args.output.display(), package.labels.len());
    Ok(())
}
