//! nnU-Net's preprocessing and export around the network, on the CT as a `[k, j, i]`
//! array (the axis order nnU-Net's SimpleITK reader gives it), transcribed from
//! nnunetv2's `DefaultPreprocessor.run_case_npy` and
//! `convert_predicted_logits_to_segmentation_with_correct_shape`:
//! transpose (`transpose_forward`), crop to the bounding box of the non-zero voxels,
//! CT normalisation (in f32, as nnU-Net computes it), resampling to the configuration's
//! spacing with nnU-Net's own resampler (`resample_data_or_seg_to_shape`: skimage's
//! resize, order 3, separate order-0 z for anisotropic spacings); and back: logits
//! resampled to the cropped shape (order 1), argmax, un-cropped, transposed back.

use voxseg_preprocess::resize::{resize, resize_rows, rows_read, Interpolation};
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
    let mut stream = LabelStream::new(classes, prepared, plan);
    stream.push(0..prepared.shape[0], logits);
    stream.finish()
}

/// [`labels`] fed the logits a block of rows (along the first axis) at a time, as
/// [`super::predict_logit_rows`] hands them on. Where the logits are resampled with
/// nearest or linear interpolation (nnU-Net's default, order 1) each block's labels are
/// computed as soon as the rows they read have arrived, and only those rows are kept:
/// the same labels as the whole array's, in memory bounded by a few rows. A cubic
/// resampling (order 3) reads whole lines, so then every row is kept until the end.
pub struct LabelStream<'a> {
    classes: usize,
    prepared: &'a Prepared,
    plan: &'a NnunetPlan,
    /// Axis-0 interpolation and the order of the other two axes, when rows stream.
    rows: Option<([Interpolation; 3], [usize; 2])>,
    /// Logit rows `held_first..held_first + held_rows`, `[classes][held_rows][plane]`.
    held: Vec<f32>,
    held_first: usize,
    held_rows: usize,
    /// Cropped-shape rows labelled so far.
    done: usize,
    best: Vec<f32>,
    label: Vec<u16>,
}

impl<'a> LabelStream<'a> {
    pub fn new(classes: usize, prepared: &'a Prepared, plan: &'a NnunetPlan) -> LabelStream<'a> {
        let r = plan.probabilities_resampling;
        let interp = |order| Interpolation::from_order(order).expect("validated when the plans were read");
        let (order, order_z) = (interp(r.order), interp(r.order_z));
        let axis = separate_axis(r.force_separate_z, plan.spacing, prepared.transposed_spacing);
        // As `resample_to_shape` applies them: in plane then the separate axis, or all
        // three in order.
        let (interps, then) = match axis {
            None => ([order; 3], [1, 2]),
            Some(0) => ([order_z, order, order], [1, 2]),
            Some(1) => ([order, order_z, order], [2, 1]),
            Some(_) => ([order, order, order_z], [1, 2]),
        };
        let streams = !interps.contains(&Interpolation::Cubic);
        let crop_voxels: usize = prepared.crop_shape.iter().product();
        LabelStream {
            classes,
            prepared,
            plan,
            rows: streams.then_some((interps, then)),
            held: Vec::new(),
            held_first: 0,
            held_rows: 0,
            done: 0,
            best: vec![f32::NEG_INFINITY; crop_voxels],
            label: vec![0u16; crop_voxels],
        }
    }

    /// Logit rows `rows` (the next ones), `[classes][rows.len()][d1][d2]`.
    pub fn push(&mut self, rows: std::ops::Range<usize>, logits: &[f32]) {
        let plane = self.prepared.shape[1] * self.prepared.shape[2];
        assert_eq!(rows.start, self.held_first + self.held_rows, "logit rows in order");
        assert_eq!(logits.len(), self.classes * rows.len() * plane, "logit block size");
        let (old, new) = (self.held_rows * plane, rows.len() * plane);
        let mut held = Vec::with_capacity(self.classes * (old + new));
        for c in 0..self.classes {
            held.extend_from_slice(&self.held[c * old..][..old]);
            held.extend_from_slice(&logits[c * new..][..new]);
        }
        self.held = held;
        self.held_rows += rows.len();
        if self.rows.is_some() {
            self.label_ready_rows();
        }
    }

    /// Labels every cropped-shape row whose logit rows have all arrived, then drops the
    /// logit rows no later row reads.
    fn label_ready_rows(&mut self) {
        let Some((interps, then)) = self.rows else { return };
        let p = self.prepared;
        let (n_in, n_out) = (p.shape[0], p.crop_shape[0]);
        let received = self.held_first + self.held_rows;
        let mut end = self.done;
        while end < n_out && rows_read(n_in, n_out, end..end + 1, interps[0]).end <= received {
            end += 1;
        }
        if end == self.done {
            return;
        }
        let plane = p.shape[1] * p.shape[2];
        let out_plane = p.crop_shape[1] * p.crop_shape[2];
        let rows = self.done..end;
        let at = rows.start * out_plane..rows.end * out_plane;
        for c in 0..self.classes {
            let channel: Vec<f64> =
                self.held[c * self.held_rows * plane..][..self.held_rows * plane].iter().map(|&v| v as f64).collect();
            let back = resize_rows(&channel, self.held_first, p.shape, p.crop_shape, rows.clone(), interps, then);
            keep_best(&mut self.best[at.clone()], &mut self.label[at.clone()], back.into_iter().map(|v| v as f32), c);
        }
        self.done = end;
        // Rows before the first one the next cropped row reads are no longer needed.
        let keep_from = if end < n_out { rows_read(n_in, n_out, end..end + 1, interps[0]).start } else { received };
        let drop = keep_from.saturating_sub(self.held_first).min(self.held_rows);
        if drop > 0 {
            let rest = self.held_rows - drop;
            let mut held = Vec::with_capacity(self.classes * rest * plane);
            for c in 0..self.classes {
                held.extend_from_slice(&self.held[(c * self.held_rows + drop) * plane..][..rest * plane]);
            }
            self.held = held;
            self.held_first += drop;
            self.held_rows = rest;
        }
    }

    /// The labels on the CT's `[k, j, i]` array, once every logit row has been pushed.
    pub fn finish(mut self) -> Vec<u16> {
        let p = self.prepared;
        if self.rows.is_none() {
            assert_eq!((self.held_first, self.held_rows), (0, p.shape[0]), "every logit row");
            let voxels: usize = p.shape.iter().product();
            for c in 0..self.classes {
                let channel = &self.held[c * voxels..][..voxels];
                let back = resample_to_shape(
                    channel,
                    p.shape,
                    p.crop_shape,
                    self.plan.spacing,
                    p.transposed_spacing,
                    self.plan.probabilities_resampling,
                );
                keep_best(&mut self.best, &mut self.label, back.into_iter(), c);
            }
        } else {
            assert_eq!(self.done, p.crop_shape[0], "every logit row");
        }
        let mut full = vec![0u16; p.transposed_shape.iter().product()];
        let t = p.transposed_shape;
        for z in 0..p.crop_shape[0] {
            for y in 0..p.crop_shape[1] {
                let src = &self.label[(z * p.crop_shape[1] + y) * p.crop_shape[2]..][..p.crop_shape[2]];
                let at = ((z + p.crop_start[0]) * t[1] + y + p.crop_start[1]) * t[2] + p.crop_start[2];
                full[at..at + p.crop_shape[2]].copy_from_slice(src);
            }
        }
        transpose(&full, t, inverse(self.plan.transpose_forward)).0
    }
}

/// The running argmax: class `class` where its value beats the best so far (so the
/// first class wins ties, as numpy's argmax; NaN never wins).
fn keep_best(best: &mut [f32], label: &mut [u16], values: impl Iterator<Item = f32>, class: usize) {
    for ((b, l), v) in best.iter_mut().zip(label.iter_mut()).zip(values) {
        if v > *b {
            *b = v;
            *l = class as u16;
        }
    }
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

    /// Labels streamed a few logit rows at a time equal the whole array's resampling
    /// (`resample_to_shape` per class, then argmax), for every way nnU-Net resamples
    /// logits: linear in 3-D, and linear in plane with nearest along a separate axis
    /// (0, 1 or 2); both up- and down-sampling along the first axis.
    #[test]
    fn streamed_labels_equal_the_whole_resampling() {
        let classes = 4;
        for (net_shape, crop_shape, spacing, transposed_spacing, force) in [
            ([9, 6, 7], [14, 5, 9], [1.5; 3], [1.0, 1.8, 1.2], None),
            ([9, 6, 7], [5, 8, 9], [5.0, 1.0, 1.0], [8.0, 0.8, 0.8], None),
            ([8, 6, 7], [11, 6, 5], [1.0, 5.0, 1.0], [0.7, 5.0, 1.4], Some(true)),
            ([8, 6, 7], [6, 9, 10], [1.0, 1.0, 4.0], [1.3, 0.7, 3.0], Some(true)),
        ] {
            let voxels: usize = net_shape.iter().product();
            let logits: Vec<f32> = (0..classes * voxels).map(|i| ((i * 7919) % 1009) as f32 * 0.01 - 5.0).collect();
            let prepared = Prepared {
                data: Vec::new(),
                shape: net_shape,
                transposed_shape: crop_shape,
                transposed_spacing,
                crop_start: [0; 3],
                crop_shape,
            };
            let plan = test_plan(spacing, Resampling { order: 1, order_z: 0, force_separate_z: force });
            // The whole array's resampling, class by class, then each voxel's first
            // largest class.
            let crop: usize = crop_shape.iter().product();
            let back: Vec<Vec<f32>> = (0..classes)
                .map(|c| {
                    let channel = &logits[c * voxels..][..voxels];
                    let r = plan.probabilities_resampling;
                    resample_to_shape(channel, net_shape, crop_shape, spacing, transposed_spacing, r)
                })
                .collect();
            let want: Vec<u16> = (0..crop)
                .map(|v| (0..classes).fold(0, |b, c| if back[c][v] > back[b][v] { c } else { b }) as u16)
                .collect();
            let plane = net_shape[1] * net_shape[2];
            for block in [1, 2, 5] {
                let mut stream = LabelStream::new(classes, &prepared, &plan);
                let mut z = 0;
                while z < net_shape[0] {
                    let rows = z..(z + block).min(net_shape[0]);
                    let part: Vec<f32> = (0..classes)
                        .flat_map(|c| {
                            logits[(c * net_shape[0] + rows.start) * plane..(c * net_shape[0] + rows.end) * plane]
                                .to_vec()
                        })
                        .collect();
                    stream.push(rows.clone(), &part);
                    z = rows.end;
                }
                assert_eq!(stream.finish(), want, "{net_shape:?} -> {crop_shape:?} {force:?}, blocks of {block}");
            }
        }
    }

    fn test_plan(spacing: [f64; 3], probabilities_resampling: Resampling) -> NnunetPlan {
        NnunetPlan {
            patch_size: [4; 3],
            spacing,
            transpose_forward: [0, 1, 2],
            intensity: Intensity::ZScore { mean: 0.0, std: 1.0, clip_min_hu: -1000.0, clip_max_hu: 1000.0 },
            data_resampling: Resampling { order: 3, order_z: 0, force_separate_z: None },
            probabilities_resampling,
            mirror_axes: Vec::new(),
        }
    }
}
