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
/// A folder lists each series in it and its subfolders: its key (what `segment
/// --series` takes: the SeriesInstanceUID, or `nouid-XXXXXXXX` for files whose UID was
/// blanked), modality, description, images, shape (columns x rows x slices), voxel
/// spacing and folders; files that are not DICOM images are skipped and counted.
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
    let folder = voxseg::dicom::list_series(&args.file)?;
    if args.json {
        let out = serde_json::json!({
            "path": args.file.display().to_string(),
            "series": folder.series,
            "skipped_files": folder.skipped_files,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", args.file.display());
    println!("  {} DICOM series, {} other file(s) skipped", folder.series.len(), folder.skipped_files);
    for s in &folder.series {
        let shape = s.shape.map(|[c, r, n]| format!("{c} x {r} x {n}")).unwrap_or_else(|| "-".into());
        let spacing = s.spacing_mm.map(|[x, y, z]| format!("{x:.3} x {y:.3} x {z:.3} mm")).unwrap_or_default();
        println!(
            "  {}  {:<8} {:>5} images  {:<16} {:<24} {:?}",
            s.key, s.modality, s.slices, shape, spacing, s.description
        );
        if s.uid.is_none() {
            println!("      no SeriesInstanceUID: grouped by what its files share");
        }
        if s.folders.iter().any(|f| !f.is_empty()) {
            println!("      in {}", s.folders.join(", "));
        }
    }
    if folder.series.iter().filter(|s| s.modality == "CT").count() > 1 {
        println!("  several CT series: choose one with `segment --series KEY`");
    }
    Ok(())
}
