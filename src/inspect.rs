//! What is in a NIfTI file: geometry, intensity range, and labels for label maps.

use std::path::Path;

use serde::Serialize;
use voxseg_volume::nifti::{self, Nifti};
use voxseg_volume::Error;

/// Label maps with more distinct values than this are summarised, not listed.
pub const MAX_LISTED_LABELS: usize = 1000;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub nifti_version: u8,
    pub byte_order: &'static str,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub orientation: String,
    /// Voxel -> RAS mm, row-major 4x4.
    pub affine: [[f64; 4]; 4],
    /// Which header field the affine came from: "sform", "qform" or "pixdim".
    pub affine_source: &'static str,
    pub voxel_volume_mm3: f64,
    pub dtype: &'static str,
    /// `[scl_slope, scl_inter]` when the file stores scaled values.
    pub scaling: Option<[f64; 2]>,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// For label maps (integer type, unscaled, no negative values): every non-zero label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<LabelCount>>,
}

#[derive(Debug, Serialize)]
pub struct LabelCount {
    pub label: u64,
    pub voxels: u64,
    pub volume_ml: f64,
}

/// Reads and summarises one file. Every problem that makes the file unusable for
/// voxseg (including non-finite voxels) is an error.
pub fn inspect(path: &Path) -> Result<Inspection, Error> {
    let file = nifti::read(path)?;
    let image = file.to_image()?;
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &v in image.data() {
        let v = v as f64;
        min = min.min(v);
        max = max.max(v);
        sum += v;
    }
    let grid = &file.grid;
    let h = &file.header;
    Ok(Inspection {
        path: path.display().to_string(),
        nifti_version: match h.version() {
            nifti::Version::Nifti1 => 1,
            nifti::Version::Nifti2 => 2,
        },
        byte_order: if h.big_endian() { "big-endian" } else { "little-endian" },
        shape: grid.shape(),
        spacing_mm: grid.spacing(),
        orientation: grid.orientation(),
        affine: *grid.affine(),
        affine_source: file.affine_source.name(),
        voxel_volume_mm3: grid.voxel_volume_mm3(),
        dtype: file.dtype().name(),
        scaling: h.scaling().ok().flatten().map(|(s, i)| [s, i]),
        min,
        max,
        mean: sum / image.data().len() as f64,
        labels: label_counts(&file, max),
    })
}

fn label_counts(file: &Nifti, max: f64) -> Option<Vec<LabelCount>> {
    if !file.is_label_like() || max > u16::MAX as f64 {
        return None;
    }
    let counts = file.to_labels().ok()?.label_counts();
    let ml_per_voxel = file.grid.voxel_volume_mm3() / 1000.0;
    let listed: Vec<LabelCount> = counts
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, &n)| n > 0)
        .map(|(label, &voxels)| LabelCount { label: label as u64, voxels, volume_ml: voxels as f64 * ml_per_voxel })
        .collect();
    (listed.len() <= MAX_LISTED_LABELS).then_some(listed)
}
