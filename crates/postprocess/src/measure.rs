//! Per-structure measurements of a label map, optionally with the CT it came from.

use serde::Serialize;
use voxseg_volume::{Image, LabelMap};

use crate::cleanup::{bounding_boxes, BoundingBox};
use crate::components::{Components, Connectivity};
use crate::surface::surface_area_mm2;
use crate::Error;

/// What voxseg reports of one structure. Geometry and intensity fields are `None`
/// when the structure is absent (or, for intensities, when no CT was given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub label: u16,
    pub voxels: u64,
    /// voxels x |det of the affine's 3x3| / 1000.
    pub volume_ml: f64,
    pub n_components: usize,
    /// Some voxel lies on a face of the field of view: the volume may be truncated.
    pub touches_border: bool,
    /// Inclusive voxel index bounds `[[i, j, k] min, [i, j, k] max]`.
    pub bbox_voxels: Option<[[usize; 3]; 2]>,
    /// Bounds of the voxel centres in RAS mm.
    pub bbox_ras_mm: Option<[[f64; 3]; 2]>,
    pub centroid_ras_mm: Option<[f64; 3]>,
    /// Marching-cubes surface of the zero-padded mask (closed even at the border).
    pub surface_area_mm2: Option<f64>,
    /// pi^(1/3) (6 V)^(2/3) / A: 1 for a ball, smaller for anything else.
    pub sphericity: Option<f64>,
    pub mean_hu: Option<f64>,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std_hu: Option<f64>,
    pub min_hu: Option<f64>,
    pub max_hu: Option<f64>,
    pub median_hu: Option<f64>,
}

/// Measures `wanted` labels (every label present, ascending, when empty).
/// Components are counted with `connectivity`. A CT on another grid is an error.
pub fn measure(
    labels: &LabelMap,
    ct: Option<&Image>,
    wanted: &[u16],
    connectivity: Connectivity,
) -> Result<Vec<Measurement>, Error> {
    let grid = labels.grid();
    if let Some(ct) = ct {
        if !ct.grid().matches(grid, 1e-4) {
            return Err(Error::GridMismatch { labels: describe(grid), other: describe(ct.grid()) });
        }
    }
    let shape = labels.shape();
    let [nx, ny, _] = shape;
    let cc = Components::new(labels.data(), shape, connectivity);
    let boxes = bounding_boxes(labels);
    let wanted: Vec<u16> = if wanted.is_empty() {
        (1..boxes.len()).filter(|&l| boxes[l].is_some()).map(|l| l as u16).collect()
    } else {
        wanted.to_vec()
    };
    // Sums over runs: voxel counts, coordinate sums for centroids, HU values.
    let slot = |l: u16| wanted.iter().position(|&w| w == l);
    let mut coord_sums = vec![[0f64; 3]; wanted.len()];
    let mut hu: Vec<Vec<f32>> = vec![Vec::new(); wanted.len()];
    for r in 0..shape[1] * shape[2] {
        let (j, k) = (r % ny, r / ny);
        for (_, run) in cc.row_runs(r) {
            let Some(s) = slot(run.label) else { continue };
            let (a, b) = (run.start as f64, run.end as f64);
            let n = b - a;
            coord_sums[s][0] += (a + b - 1.0) * n / 2.0;
            coord_sums[s][1] += j as f64 * n;
            coord_sums[s][2] += k as f64 * n;
            if let Some(ct) = ct {
                let base = nx * r;
                hu[s].extend_from_slice(&ct.data()[base + run.start as usize..base + run.end as usize]);
            }
        }
    }
    let spacing = grid.spacing();
    let voxel_ml = grid.voxel_volume_mm3() / 1000.0;
    Ok(wanted
        .iter()
        .enumerate()
        .map(|(s, &label)| {
            let parts: Vec<_> = cc.components().iter().filter(|c| c.label == label).collect();
            let voxels: u64 = parts.iter().map(|c| c.voxels).sum();
            let bbox: Option<BoundingBox> = boxes.get(label as usize).copied().flatten();
            let volume_ml = voxels as f64 * voxel_ml;
            let area = bbox.map(|b| surface_area_mm2(labels.data(), shape, label, b, spacing));
            let stats = (ct.is_some() && voxels > 0).then(|| intensity(&mut hu[s]));
            Measurement {
                label,
                voxels,
                volume_ml,
                n_components: parts.len(),
                touches_border: parts.iter().any(|c| c.touches_border),
                bbox_voxels: bbox.map(|(lo, hi)| [lo, hi]),
                bbox_ras_mm: bbox.map(|(lo, hi)| {
                    let corners = (0..8).map(|c| {
                        let pick = |a: usize| if c >> a & 1 == 1 { hi[a] } else { lo[a] } as f64;
                        grid.voxel_to_world([pick(0), pick(1), pick(2)])
                    });
                    corners.fold([[f64::INFINITY; 3], [f64::NEG_INFINITY; 3]], |[mn, mx], p| {
                        [std::array::from_fn(|a| mn[a].min(p[a])), std::array::from_fn(|a| mx[a].max(p[a]))]
                    })
                }),
                centroid_ras_mm: (voxels > 0).then(|| grid.voxel_to_world(coord_sums[s].map(|v| v / voxels as f64))),
                surface_area_mm2: area,
                sphericity: area.map(|a| std::f64::consts::PI.cbrt() * (6.0 * volume_ml * 1000.0).powf(2.0 / 3.0) / a),
                mean_hu: stats.map(|s| s.0),
                std_hu: stats.map(|s| s.1),
                min_hu: stats.map(|s| s.2),
                max_hu: stats.map(|s| s.3),
                median_hu: stats.map(|s| s.4),
            }
        })
        .collect())
}

/// (mean, std, min, max, median) of non-empty `values`, computed in f64.
fn intensity(values: &mut [f32]) -> (f64, f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values.iter() {
        min = min.min(f64::from(v));
        max = max.max(f64::from(v));
    }
    let mid = values.len() / 2;
    let (_, &mut upper, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    let median = if values.len() % 2 == 1 {
        f64::from(upper)
    } else {
        let lower = values[..mid].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (f64::from(lower) + f64::from(upper)) / 2.0
    };
    (mean, var.sqrt(), min, max, median)
}

pub(crate) fn describe(grid: &voxseg_volume::Grid) -> String {
    let [x, y, z] = grid.shape();
    let [sx, sy, sz] = grid.spacing();
    format!("{x}x{y}x{z} voxels of {sx:.4}x{sy:.4}x{sz:.4} mm, {}, origin {:?}", grid.orientation(), {
        let a = grid.affine();
        [a[0][3], a[1][3], a[2][3]]
    })
}
