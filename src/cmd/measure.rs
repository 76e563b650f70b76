use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use voxseg::names::{self, Names};
use voxseg::postprocess::{measure, Connectivity};
use voxseg::report::{write_structures_csv, StructureReport};
use voxseg::volume::nifti;

/// Measure every structure of a label map (or a binary mask).
///
/// For each non-zero label: voxels, volume in mL (voxels x |det(affine 3x3)| / 1000),
/// connected components, bounding box and centroid in RAS mm, marching-cubes surface
/// area and sphericity, and whether it touches a face of the field of view (then
/// its volume may be truncated). With --ct, HU statistics inside it (mean, std,
/// min, max, median); the CT must be on exactly the labels' grid.
///
/// Example: voxseg measure ../shared/data/totalseg/example_seg_fast/spleen.nii.gz
///            --ct ../shared/data/totalseg/example_ct_sm.nii.gz --json
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct MeasureArgs {
    /// Label map or binary mask (0/1 or 0/255), NIfTI.
    pub labels: PathBuf,
    /// The CT the labels belong to, for HU statistics.
    #[arg(long)]
    pub ct: Option<PathBuf>,
    /// Names for label ids: JSON object {"1": "spleen", ...} or CSV `label,name`.
    #[arg(long)]
    pub names: Option<PathBuf>,
    /// Only these label ids (repeatable); listed even when absent.
    #[arg(long = "label")]
    pub only: Vec<u16>,
    /// Voxel connectivity for counting components: 6, 18 or 26.
    #[arg(long, default_value_t = 26, value_parser = parse_connectivity)]
    pub connectivity: u32,
    /// Print JSON: {"source", "ct", "spacing_mm", "structures": [...]}.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV, one row per structure.
    #[arg(long)]
    pub csv: bool,
}

pub(crate) fn parse_connectivity(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if Connectivity::from_count(n).is_some() => Ok(n),
        _ => Err("connectivity is 6, 18 or 26".into()),
    }
}

#[derive(Serialize)]
struct Output {
    source: String,
    ct: Option<String>,
    spacing_mm: [f64; 3],
    voxel_volume_mm3: f64,
    connectivity: u32,
    structures: Vec<StructureReport>,
}

pub fn run(args: MeasureArgs) -> Result<()> {
    let (labels, _) = nifti::read_labels(&args.labels)?;
    let ct = match &args.ct {
        Some(path) => Some(nifti::read_image(path)?.0),
        None => None,
    };
    let names: Names = match &args.names {
        Some(path) => names::read(path)?,
        None => Names::new(),
    };
    let connectivity = Connectivity::from_count(args.connectivity).expect("validated by clap");
    let measured = measure(&labels, ct.as_ref(), &args.only, connectivity).with_context(|| {
        format!("{} and {} cannot be measured together", args.labels.display(), args.ct.as_ref().unwrap().display())
    })?;
    let structures: Vec<StructureReport> = measured
        .into_iter()
        .map(|m| StructureReport { name: names::name_of(&names, m.label), tg263: None, measurement: m, qc: None })
        .collect();
    if args.csv {
        return Ok(write_structures_csv(&mut std::io::stdout().lock(), &structures)?);
    }
    let out = Output {
        source: args.labels.display().to_string(),
        ct: args.ct.as_ref().map(|p| p.display().to_string()),
        spacing_mm: labels.grid().spacing(),
        voxel_volume_mm3: labels.grid().voxel_volume_mm3(),
        connectivity: args.connectivity,
        structures,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let [sx, sy, sz] = out.spacing_mm;
    println!("{}  ({sx:.4} x {sy:.4} x {sz:.4} mm)", out.source);
    println!(
        "{:>6}  {:<24} {:>10} {:>11} {:>5} {:>6} {:>9} {:>9}",
        "label", "name", "voxels", "volume mL", "parts", "border", "mean HU", "sd HU"
    );
    for s in &out.structures {
        let m = &s.measurement;
        let hu = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>6}  {:<24} {:>10} {:>11.3} {:>5} {:>6} {:>9} {:>9}",
            m.label,
            s.name,
            m.voxels,
            m.volume_ml,
            m.n_components,
            if m.touches_border { "yes" } else { "no" },
            hu(m.mean_hu),
            hu(m.std_hu)
        );
    }
    Ok(())
}
