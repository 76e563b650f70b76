//! nnU-Net's preprocessing and export around the network, on the CT as a `[k, j, i]`
//! array (the axis order nnU-Net's SimpleITK reader gives it), transcribed from
//! nnunetv2's `DefaultPreprocessor.run_case_npy` and
//! `convert_predicted_logits_to_segmentation_with_correct_shape`:
//! transpose (`transpose_forward`), crop to the bounding box of the non-zero voxels,
//! CT normalisation (in f32, as nnU-Net computes it), resampling to the configuration's
//! spacing with nnU-Net's own resampler (`resample_data_or_seg_to_shape`: skimage's
//! resize, order 3, separate order-0 z for anisotropic spacings); and back: logits
//! resampled to the cropped shape (order 1), argmax, un-cropped, transposed back.

use voxseg_preprocess::resize::{resize, Interpolation};
use voxseg_preprocess::Intensity;

use super::folder::{NnunetPlan, Resampling};

/// The network's input and how to undo each step.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Network input, row-major over `shape`.
    pub data: Vec<f32>,
    pub shape: [usize; 3],
    /// The transposed array's shape and spacing (before cropping).
    pub transposed_shape: [usize; 3],
    pub transposed_spacing: [f64; 3],
    /// The non-zero bounding box in the transposed array: start and size.
    pub crop_start: [usize; 3],
    pub crop_shape: [usize; 3],
}

/// `out[n0][n1][n2] = a[idx]` with `idx[perm[d]] = n_d`: numpy's `a.transpose(perm)`.
fn transpose<T: Copy>(a: &[T], shape: [usize; 3], perm: [usize; 3]) -> (Vec<T>, [usize; 3]) {
    let out_shape = perm.map(|p| shape[p]);
    let strides = [shape[1] * shape[2], shape[2], 1];
    let s = perm.map(|p| strides[p]);
    let mut out = Vec::with_capacity(a.len());
    for n0 in 0..out_shape[0] {
        for n1 in 0..out_shape[1] {
            let base = n0 * s[0] + n1 * s[1];
            out.extend((0..out_shape[2]).map(|n2| a[base + n2 * s[2]]));
        }
    }
    (out, out_shape)
}

/// The inverse permutation (`transpose_backward`).
pub(crate) fn inverse(perm: [usize; 3]) -> [usize; 3] {
    let mut inv = [0; 3];
    for (d, &p) in perm.iter().enumerate() {
        inv[p] = d;
    }
    inv
}

/// nnU-Net's `compute_new_shape`: `round(old_spacing / new_spacing * old_shape)`,
/// Python's round (half to even).
pub fn new_shape(shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> [usize; 3] {
    std::array::from_fn(|a| (spacing[a] / target[a] * shape[a] as f64).round_ties_even() as usize)
}

/// nnU-Net's `determine_do_sep_z_and_axis`: the axis to resample on its own (order_z),
/// if any.
fn separate_axis(force: Option<bool>, current: [f64; 3], new: [f64; 3]) -> Option<usize> {
    let anisotropic = |s: [f64; 3]| {
        let (max, min) = (s.iter().copied().fold(f64::MIN, f64::max), s.iter().copied().fold(f64::MAX, f64::min));
        max / min > 3.0
    };
    // The axes with the largest spacing; only a single one counts.
    let lowres = |s: [f64; 3]| {
        let max = s.iter().copied().fold(f64::MIN, f64::max);
        let axes: Vec<usize> = (0..3).filter(|&a| max / s[a] == 1.0).collect();
        (axes.len() == 1).then(|| axes[0])
    };
    match force {
        Some(true) => lowres(current),
        Some(false) => None,
        None if anisotropic(current) => lowres(current),
        None if anisotropic(new) => lowres(new),
        None => None,
    }
}

/// nnU-Net's `resample_data_or_seg_to_shape` for one channel (not a segmentation).
pub fn resample_to_shape(
    values: &[f32],
    shape: [usize; 3],
    to: [usize; 3],
    current: [f64; 3],
    new: [f64; 3],
    r: Resampling,
) -> Vec<f32> {
    if shape == to {
        return values.to_vec();
    }
    let order = Interpolation::from_order(r.order).expect("validated when the plans were read");
    let order_z = Interpolation::from_order(r.order_z).expect("validated when the plans were read");
    let data: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let out = match separate_axis(r.force_separate_z, current, new) {
        None => resize(&data, shape, to, [order; 3]),
        Some(axis) => {
            // Every slice across `axis` resized in plane on its own (and clipped to its
            // own range, as skimage does per call), then `axis` by itself.
            let mut mid_shape = to;
            mid_shape[axis] = shape[axis];
            let (slices, plane_shape, plane_to) = slice_shapes(shape, to, axis);
            let (per_slice, plane) = split(&data, shape, axis);
            let resized: Vec<Vec<f64>> = (0..slices)
                .map(|s| resize(&per_slice[s * plane..][..plane], plane_shape, plane_to, [order; 3]))
                .collect();
            let mid = join(&resized, mid_shape, axis);
            if shape[axis] == to[axis] {
                mid
            } else {
                resize_along(&mid, mid_shape, to, axis, order_z)
            }
        }
    };
    out.iter().map(|&v| v as f32).collect()
}

/// `axis` resized alone (nnU-Net's `map_coordinates(order_z, mode="nearest")`); the
/// other axes keep their size, so their interpolation never applies.
fn resize_along(data: &[f64], shape: [usize; 3], to: [usize; 3], axis: usize, interp: Interpolation) -> Vec<f64> {
    let mut orders = [Interpolation::Nearest; 3];
    orders[axis] = interp;
    resize(data, shape, to, orders)
}

/// For slices across `axis`: their count, and each slice's shape before and after as
/// a 3-D shape with a leading 1.
fn slice_shapes(shape: [usize; 3], to: [usize; 3], axis: usize) -> (usize, [usize; 3], [usize; 3]) {
    let plane: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    (shape[axis], [1, shape[plane[0]], shape[plane[1]]], [1, to[plane[0]], to[plane[1]]])
}

/// The permutation that puts `axis` first and keeps the other two in order.
fn axis_first(axis: usize) -> [usize; 3] {
    match axis {
        0 => [0, 1, 2],
        1 => [1, 0, 2],
        _ => [2, 0, 1],
    }
}

/// The slices across `axis`, one after the other, and the size of one.
fn split(data: &[f64], shape: [usize; 3], axis: usize) -> (Vec<f64>, usize) {
    let (moved, s) = transpose(data, shape, axis_first(axis));
    (moved, s[1] * s[2])
}

/// Resized slices (across `axis`) stacked back into an array of `shape`.
fn join(slices: &[Vec<f64>], shape: [usize; 3], axis: usize) -> Vec<f64> {
    let perm = axis_first(axis);
    let stacked: Vec<f64> = slices.iter().flatten().copied().collect();
    transpose(&stacked, perm.map(|p| shape[p]), inverse(perm)).0
}

/// From the CT (`[k, j, i]` array of HU with its spacing, same order) to the network's
/// input on the configuration's grid. `None` when the CT has no non-zero voxel.
pub fn prepare(ct: &[f32], shape: [usize; 3], spacing: [f64; 3], plan: &NnunetPlan) -> Option<Prepared> {
    let (data, transposed_shape) = transpose(ct, shape, plan.transpose_forward);
    let transposed_spacing = plan.transpose_forward.map(|p| spacing[p]);
    let (crop_start, crop_shape) = nonzero_box(&data, transposed_shape)?;
    let cropped = crop(&data, transposed_shape, crop_start, crop_shape);
    let Intensity::ZScore { mean, std, clip_min_hu, clip_max_hu } = plan.intensity else {
        unreachable!("nnU-Net plans are read with CT normalisation")
    };
    // nnU-Net's CTNormalization, in its f32 order of operations.
    let (lo, hi, mean, std) = (clip_min_hu as f32, clip_max_hu as f32, mean as f32, std as f32);
    let normalised: Vec<f32> = cropped.iter().map(|&v| (v.clamp(lo, hi) - mean) / std).collect();
    let to = new_shape(crop_shape, transposed_spacing, plan.spacing);
    let data = resample_to_shape(&normalised, crop_shape, to, transposed_spacing, plan.spacing, plan.data_resampling);
    Some(Prepared { data, shape: to, transposed_shape, transposed_spacing, crop_start, crop_shape })
}

/// The network's logits (`[classes, shape]`) back to labels on the CT's `[k, j, i]`
/// array: resampled to the cropped shape, argmax (first class on ties, as numpy),
/// zero outside the box, transposed back.
pub fn labels(logits: &[f32], classes: usize, prepared: &Prepared, plan: &NnunetPlan) -> Vec<u16> {
    let p = prepared;
    let voxels: usize = p.shape.iter().product();
    let crop_voxels: usize = p.crop_shape.iter().product();
    let mut best = vec![f32::NEG_INFINITY; crop_voxels];
    let mut label = vec![0u16; crop_voxels];
    for c in 0..classes {
        let channel = &logits[c * voxels..][..voxels];
        let back = resample_to_shape(
            channel,
            p.shape,
            p.crop_shape,
            plan.spacing,
            p.transposed_spacing,
            plan.probabilities_resampling,
        );
        for ((b, l), v) in best.iter_mut().zip(label.iter_mut()).zip(back) {
            if v > *b {
                *b = v;
                *l = c as u16;
            }
        }
    }
    let mut full = vec![0u16; p.transposed_shape.iter().product()];
    let t = p.transposed_shape;
    for z in 0..p.crop_shape[0] {
        for y in 0..p.crop_shape[1] {
            let src = &label[(z * p.crop_shape[1] + y) * p.crop_shape[2]..][..p.crop_shape[2]];
            let at = ((z + p.crop_start[0]) * t[1] + y + p.crop_start[1]) * t[2] + p.crop_start[2];
            full[at..at + p.crop_shape[2]].copy_from_slice(src);
        }
    }
    transpose(&full, t, inverse(plan.transpose_forward)).0
}

/// One network's labels written over the combined map, as TotalSegmentator combines
/// its networks (`combined[seg == c] = id` for each class): each voxel of class `c > 0`
/// becomes `ids[c - 1]`, background leaves the combined label as it was.
pub fn overlay(combined: &mut [u16], labels: &[u16], ids: &[u16]) {
    for (out, &c) in combined.iter_mut().zip(labels) {
        if c > 0 {
            *out = ids[c as usize - 1];
        }
    }
}

/// Start and size of the smallest box holding every non-zero voxel.
fn nonzero_box(data: &[f32], shape: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = shape;
    let mut hi = [0; 3];
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let row = &data[(z * shape[1] + y) * shape[2]..][..shape[2]];
            let (Some(first), Some(last)) = (row.iter().position(|&v| v != 0.0), row.iter().rposition(|&v| v != 0.0))
            else {
                continue;
            };
            for (a, (l, h)) in [(z, z), (y, y), (first, last)].into_iter().enumerate() {
                lo[a] = lo[a].min(l);
                hi[a] = hi[a].max(h + 1);
            }
        }
    }
    (lo[0] < hi[0]).then(|| (lo, std::array::from_fn(|a| hi[a] - lo[a])))
}

fn crop(data: &[f32], shape: [usize; 3], start: [usize; 3], size: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(size.iter().product());
    for z in 0..size[0] {
        for y in 0..size[1] {
            let at = ((z + start[0]) * shape[1] + y + start[1]) * shape[2] + start[2];
            out.extend_from_slice(&data[at..at + size[2]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_like_numpy() {
        // a[z][y][x] = 100 z + 10 y + x, shape (2, 3, 4); transpose (2, 0, 1) -> (4, 2, 3).
        let a: Vec<f32> =
            (0..2).flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| (100 * z + 10 * y + x) as f32))).collect();
        let (t, s) = transpose(&a, [2, 3, 4], [2, 0, 1]);
        assert_eq!(s, [4, 2, 3]);
        // t[x][z][y] = a[z][y][x]
        assert_eq!(t[(3 * 2 + 1) * 3 + 2], 123.0);
        let (back, s) = transpose(&t, s, inverse([2, 0, 1]));
        assert_eq!((back, s), (a, [2, 3, 4]));
    }

    #[test]
    fn later_labels_win_and_background_erases_nothing() {
        let mut combined = vec![0, 1, 2, 0, 1];
        overlay(&mut combined, &[0, 0, 1, 2, 2], &[3, 1]);
        assert_eq!(combined, [0, 1, 3, 1, 1]);
    }

    #[test]
    fn new_shape_rounds_half_to_even() {
        // 101 * 3 / 6 = 50.5 -> 50 (Python), 61 * ... exact values stay.
        assert_eq!(new_shape([30, 101, 122], [3.0; 3], [6.0; 3]), [15, 50, 61]);
    }
}
