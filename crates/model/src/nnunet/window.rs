//! nnU-Net's sliding-window inference (nnunetv2 `predict_sliding_window_return_logits`):
//! the image padded up to the patch where smaller (constant 0, the odd voxel after),
//! tiles placed by `compute_steps_for_sliding_window`, each tile's logits weighted by
//! a Gaussian importance map (sigma = patch / 8) and the weighted sum divided by the sum
//! of weights; several folds' logits averaged, as nnU-Net averages them (logits, not
//! probabilities). nnU-Net accumulates in f16 on the GPU; voxseg accumulates in f32.

use burn::prelude::*;

use super::network::NnunetNet;
use crate::kernels::floats;

/// Tile start positions per axis (`compute_steps_for_sliding_window`).
pub fn steps(image: [usize; 3], tile: [usize; 3], step: f64) -> [Vec<usize>; 3] {
    std::array::from_fn(|a| {
        // The image is at least the tile (padded so); one tile otherwise.
        let (n, t) = (image[a], tile[a]);
        let target = t as f64 * step;
        let max_step = n.saturating_sub(t) as f64;
        let count = (max_step / target).ceil() as usize + 1;
        let actual = if count > 1 { max_step / (count - 1) as f64 } else { 0.0 };
        // numpy's round: half to even.
        (0..count).map(|i| (actual * i as f64).round_ties_even() as usize).collect()
    })
}

/// scipy's `gaussian_filter1d` of a unit impulse at `n / 2` (sigma = n * scale,
/// truncate 4, mode constant): the 1-D factor of nnU-Net's importance map.
fn gaussian_1d(n: usize, scale: f64) -> Vec<f64> {
    let sigma = n as f64 * scale;
    let radius = (4.0 * sigma + 0.5) as i64;
    let kernel: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    let centre = (n / 2) as i64;
    (0..n as i64)
        .map(|i| {
            let d = i - centre;
            if d.abs() <= radius {
                kernel[(d + radius) as usize] / sum
            } else {
                0.0
            }
        })
        .collect()
}

/// nnU-Net's Gaussian importance map (`compute_gaussian`, sigma = tile / 8), scaled to
/// a maximum of 1, zeros replaced by the smallest non-zero value. Row-major.
pub fn gaussian(tile: [usize; 3]) -> Vec<f32> {
    let g: [Vec<f64>; 3] = std::array::from_fn(|a| gaussian_1d(tile[a], 1.0 / 8.0));
    let mut map = Vec::with_capacity(tile.iter().product());
    for a in &g[0] {
        for b in &g[1] {
            for c in &g[2] {
                map.push(a * b * c);
            }
        }
    }
    let max = map.iter().copied().fold(0.0, f64::max);
    let min_nonzero = map.iter().copied().filter(|&v| v > 0.0).fold(f64::INFINITY, f64::min);
    map.iter().map(|&v| (if v > 0.0 { v / max } else { min_nonzero / max }) as f32).collect()
}

/// How a sliding-window pass runs.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    pub patch: [usize; 3],
    /// Tile step as a fraction of the patch (nnU-Net's default 0.5).
    pub step: f64,
    /// Spatial axes (network order) to mirror over and average, all their
    /// combinations; empty: none (TotalSegmentator runs without).
    pub mirror_axes: Vec<usize>,
}

/// Logits of `image` (`[d0, d1, d2]`, row-major), averaged over `folds`, handed to
/// `sink` a block of rows (along the first axis) at a time, in order, as soon as no
/// later tile adds to them: `sink(rows, logits)` with `logits` `[classes, rows.len(), d1,
/// d2]`; `progress(done, total)` after every tile. Only one patch's depth of weighted sums is
/// held (tiles are placed row of tiles by row of tiles along the first axis), so memory
/// is bounded by the patch, not the CT's length.
#[allow(clippy::too_many_arguments)]
pub fn predict_logit_rows(
    folds: &[NnunetNet],
    classes: usize,
    image: &[f32],
    shape: [usize; 3],
    options: &WindowOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
    mut sink: impl FnMut(std::ops::Range<usize>, &[f32]),
) {
    let patch = options.patch;
    // Pad up to the patch where smaller: floor of the difference before, the rest after.
    let padded: [usize; 3] = std::array::from_fn(|a| shape[a].max(patch[a]));
    let before: [usize; 3] = std::array::from_fn(|a| (padded[a] - shape[a]) / 2);
    let mut input = vec![0.0f32; padded.iter().product()];
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let src = &image[(z * shape[1] + y) * shape[2]..][..shape[2]];
            let at = ((z + before[0]) * padded[1] + y + before[1]) * padded[2] + before[2];
            input[at..at + shape[2]].copy_from_slice(src);
        }
    }
    let steps = steps(padded, patch, options.step);
    let weight_map = gaussian(patch);
    // Sums over padded rows `first..first + patch[0]` of the padded image.
    let plane = padded[1] * padded[2];
    let window = patch[0] * plane;
    let mut sum = vec![0.0f32; classes * window];
    let mut weights = vec![0.0f32; window];
    let mut first = 0;
    let total = steps.iter().map(Vec::len).product();
    let mut done = 0;
    let mut tile = vec![0.0f32; patch.iter().product()];
    let out_plane = shape[1] * shape[2];
    // Hands padded rows `rows` (all final) to the sink, divided by the weights and cut
    // from the padding.
    let mut emit = |rows: std::ops::Range<usize>, first: usize, sum: &[f32], weights: &[f32]| {
        let in_image = |z: usize| z.clamp(before[0], before[0] + shape[0]);
        let image_rows = in_image(rows.start)..in_image(rows.end);
        if image_rows.is_empty() {
            return;
        }
        let n = image_rows.len();
        let mut out = Vec::with_capacity(classes * n * out_plane);
        for c in 0..classes {
            for zp in image_rows.clone() {
                for y in 0..shape[1] {
                    let at = ((zp - first) * padded[1] + y + before[1]) * padded[2] + before[2];
                    out.extend((0..shape[2]).map(|x| sum[c * window + at + x] / weights[at + x]));
                }
            }
        }
        sink(image_rows.start - before[0]..image_rows.end - before[0], &out);
    };
    for &z0 in &steps[0] {
        // Rows before this row of tiles are final: hand them on, slide the window (tiles
        // overlap or touch along the first axis: the step is at most the patch).
        assert!(z0 - first <= patch[0], "tile step above the patch");
        if z0 > first {
            emit(first..z0, first, &sum, &weights);
            let shift = (z0 - first) * plane;
            for c in 0..classes {
                let channel = &mut sum[c * window..][..window];
                channel.copy_within(shift.., 0);
                channel[window - shift..].fill(0.0);
            }
            weights.copy_within(shift.., 0);
            weights[window - shift..].fill(0.0);
            first = z0;
        }
        for &y0 in &steps[1] {
            for &x0 in &steps[2] {
                let start = [z0, y0, x0];
                for_each_row(patch, padded, start, |t, p| {
                    tile[t..t + patch[2]].copy_from_slice(&input[p..p + patch[2]])
                });
                let logits = tile_logits(folds, &tile, patch, &options.mirror_axes, device);
                let tile_voxels = tile.len();
                // The tile in window coordinates: its rows start at z0 - first = 0.
                for_each_row(patch, [patch[0], padded[1], padded[2]], [0, y0, x0], |t, p| {
                    for x in 0..patch[2] {
                        let g = weight_map[t + x];
                        weights[p + x] += g;
                        for c in 0..classes {
                            sum[c * window + p + x] += logits[c * tile_voxels + t + x] * g;
                        }
                    }
                });
                done += 1;
                progress(done, total);
            }
        }
    }
    emit(first..padded[0], first, &sum, &weights);
}

/// Calls `f(tile_offset, image_offset)` for every row (along the last axis) of a tile
/// of `patch` at `start` in an image of `shape`.
fn for_each_row(patch: [usize; 3], shape: [usize; 3], start: [usize; 3], mut f: impl FnMut(usize, usize)) {
    for z in 0..patch[0] {
        for y in 0..patch[1] {
            let t = (z * patch[1] + y) * patch[2];
            let p = ((start[0] + z) * shape[1] + start[1] + y) * shape[2] + start[2];
            f(t, p);
        }
    }
}

/// One tile's logits, averaged over folds and (when asked) mirrorings.
fn tile_logits(folds: &[NnunetNet], tile: &[f32], patch: [usize; 3], mirror: &[usize], device: &Device) -> Vec<f32> {
    // In the networks' own float type (--precision), logits back in f32.
    let dtype = folds[0].seg.weight.val().dtype();
    let x = Tensor::<5>::from_data(TensorData::new(tile.to_vec(), [1, 1, patch[0], patch[1], patch[2]]), device)
        .cast(dtype);
    // Every non-empty combination of the mirror axes, plus none.
    let flips: Vec<Vec<usize>> = (0..1usize << mirror.len())
        .map(|mask| mirror.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, &a)| a + 2).collect())
        .collect();
    let mut total: Option<Tensor<5>> = None;
    for net in folds {
        for axes in &flips {
            let flip = |t: Tensor<5>| axes.iter().fold(t, |t, &a| t.flip([a]));
            let y = flip(net.forward(flip(x.clone())));
            total = Some(match total {
                Some(t) => t + y,
                None => y,
            });
        }
    }
    let n = (folds.len() * flips.len()) as f32;
    floats((total.expect("at least one fold") / n).cast(burn::tensor::FloatDType::F32))
}
