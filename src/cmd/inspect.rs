use std::path::PathBuf;

use anyhow::Result;

/// Show a NIfTI file's geometry, intensity range and labels, or list the series in
/// a folder of DICOM files.
///
/// Reads `.nii` or `.nii.gz` (NIfTI-1 or -2, any byte order) with the same checks
/// `segment` applies, so a file that inspects cleanly will load. Label maps
/// (integer, unscaled, non-negative) also list each label's voxel count and
/// volume in mL (voxels x |det(affine 3x3)| / 1000).
///
/// A folder lists each series directly in it: SeriesInstanceUID (what `segment
/// --series` takes), modality, description, files and shape (columns x rows x slices).
///
/// Example: voxseg inspect ../shared/data/totalseg/example_ct.nii.gz --json
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The NIfTI file, or a folder of DICOM files.
    pub file: PathBuf,
    /// Print one JSON object (shape, spacing_mm, orientation, affine, dtype, min, max, mean, labels).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    if args.file.is_dir() {
        return list_series(args);
    }
    let info = voxseg::inspect::inspect(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let [sx, sy, sz] = info.spacing_mm;
    println!("{}", info.path);
    println!("  NIfTI-{} {}, {}", info.nifti_version, info.byte_order, info.dtype);
    println!("  shape        {} x {} x {}", info.shape[0], info.shape[1], info.shape[2]);
    println!("  spacing      {sx:.4} x {sy:.4} x {sz:.4} mm  ({:.4} mm3 per voxel)", info.voxel_volume_mm3);
    println!("  orientation  {} (affine from {})", info.orientation, info.affine_source);
    for row in &info.affine {
        println!("               [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]", row[0], row[1], row[2], row[3]);
    }
    if let Some([slope, inter]) = info.scaling {
        println!("  scaling      value x {slope} + {inter}");
    }
    println!("  values       min {} max {} mean {:.4}", info.min, info.max, info.mean);
    if let Some(labels) = &info.labels {
        println!("  labels       {} non-zero", labels.len());
        for l in labels {
            println!("    {:>5}  {:>10} voxels  {:>12.3} mL", l.label, l.voxels, l.volume_ml);
        }
    }
    Ok(())
}

fn list_series(args: InspectArgs) -> Result<()> {
    let series = voxseg::dicom::list_series(&args.file)?;
    if args.json {
        let out = serde_json::json!({ "path": args.file.display().to_string(), "series": series });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", args.file.display());
    println!("  {} DICOM series", series.len());
    for s in &series {
        let shape = s.shape.map(|[c, r, n]| format!("{c} x {r} x {n}")).unwrap_or_else(|| "-".into());
        println!("  {}  {:<8} {:>5} files  {:<16} {:?}", s.uid, s.modality, s.slices, shape, s.description);
    }
    Ok(())
}
