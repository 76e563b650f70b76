use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use voxseg::model::{
    import_pytorch, save, select, AnatomyNetConfig, DeviceChoice, Label, ModelPackage, Network, Preprocess, Provenance,
};
use voxseg::preprocess::Intensity;

/// Turn a PyTorch AnatomyNet state dict into a voxseg model package.
///
/// Reads `.pt`/`.pth` (torch.save of a state dict) or `.safetensors` whose keys are
/// the reference implementation's (conv1, bn1, layer1..layer11; see DESIGN.md),
/// maps them onto voxseg's network through an explicit key table, checks every
/// tensor's presence and shape (a mismatch names the tensor, exit 2), and writes
/// OUT/model.toml + OUT/weights.bpk (burn's format). The package then runs with
/// `voxseg segment --model OUT`.
///
/// Example: voxseg import weights.pth -o models/my-spleen --labels spleen
///            --spacing 1.5,1.5,1.5 --window -160,240
///            --trained-on "40 portal-venous CTs, in-house" --measured-on "not measured"
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// The state dict (.pt, .pth or .safetensors).
    pub state_dict: PathBuf,
    /// Package directory to create.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Organ names for classes 1..K-1, comma-separated, in class order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// Target voxel spacing in mm the network was trained at: X,Y,Z.
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true)]
    pub spacing: Vec<f64>,
    /// HU window MIN,MAX the network was trained with.
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true)]
    pub window: Vec<f64>,
    /// How the window maps to network input: `unit` = [0, 1], `centered` = [-0.5, 0.5].
    #[arg(long, default_value = "unit", value_parser = ["unit", "centered"])]
    pub scale: String,
    /// Axis codes the network expects.
    #[arg(long, default_value = "RAS")]
    pub orientation: String,
    /// Package name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// What the weights were trained on (stored as provenance; be specific).
    #[arg(long, default_value = "unknown (imported without provenance)")]
    pub trained_on: String,
    /// What their accuracy was measured on, with numbers, or "not measured".
    #[arg(long, default_value = "not measured")]
    pub measured_on: String,
}

pub fn run(args: ImportArgs) -> Result<()> {
    if args.spacing.len() != 3 || args.window.len() != 2 {
        bail!("--spacing takes X,Y,Z and --window takes MIN,MAX (comma-separated)");
    }
    let [min_hu, max_hu] = [args.window[0], args.window[1]];
    let intensity = match args.scale.as_str() {
        "unit" => Intensity::Window { min_hu, max_hu },
        _ => Intensity::Linear { min_hu, max_hu, out_min: -0.5, out_max: 0.5 },
    };
    let network = AnatomyNetConfig::new(args.labels.len() + 1);
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.output.file_name().context("the output needs a directory name")?.to_string_lossy().into_owned(),
    };
    if args.output.join("model.toml").exists() {
        bail!("{} already holds a model package; choose a new directory", args.output.display());
    }
    let device = select(DeviceChoice::Cpu)?.device;
    let net = import_pytorch(&network, &args.state_dict, &device)?;
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
            trained_on: args.trained_on,
            measured_on: args.measured_on,
            source: Some(format!("voxseg import {}", args.state_dict.display())),
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
