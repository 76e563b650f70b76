//! Whole-volume inference, with per-stage timings, and two ways to fit less memory:
//!
//! - **slabs** (exact): the half-resolution trunk runs on the whole volume (its
//!   squeeze-and-excitation gates pool over all of it), and the full-resolution tail,
//!   which holds most of the memory but only local convolutions, runs slab by slab
//!   with a halo, so the result equals the whole-volume pass;
//! - **tiles** (approximate): overlapping sub-volumes with Gaussian blending, the
//!   last resort when even the trunk does not fit. Each tile's SE gates see only
//!   that tile, so results differ from a whole-volume pass (measured in the tests).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use serde::Serialize;

use crate::anatomynet::AnatomyNet;
use crate::kernels::floats;
use crate::multipath::MultipathUnet;
use crate::Error;

/// Wall time of each stage in ms, each ended by a device sync so it is honest.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub upload_ms: f64,
    pub forward_ms: f64,
    pub argmax_ms: f64,
    pub download_ms: f64,
}

impl Timings {
    fn add(&mut self, o: Timings) {
        self.upload_ms += o.upload_ms;
        self.forward_ms += o.forward_ms;
        self.argmax_ms += o.argmax_ms;
        self.download_ms += o.download_ms;
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Largest full-resolution part (in voxels) to run in one pass: beyond it the
    /// tail runs in slabs. `None` runs the whole volume and falls back to slabs, then
    /// tiles, only if that fails (e.g. out of device memory).
    pub max_voxels: Option<usize>,
    /// Force overlapping tiles of at most this many voxels (approximate; see above).
    pub tile_voxels: Option<usize>,
    /// Also return every class probability (for resampling probabilities back to
    /// the native grid before the argmax).
    pub keep_probabilities: bool,
}

/// The network's answer on a `[nx, ny, nz]` volume (x fastest, as `Volume`).
#[derive(Debug, Clone)]
pub struct Prediction {
    pub shape: [usize; 3],
    pub classes: usize,
    /// Winning class per voxel.
    pub labels: Vec<u16>,
    /// Probability of the winning class per voxel.
    pub confidence: Vec<f32>,
    /// `[K][nz][ny][nx]` when asked for.
    pub probabilities: Option<Vec<f32>>,
    pub timings: Timings,
    /// 1 for a whole-volume pass.
    pub tiles: usize,
    /// How it ran: "whole", "slabs" or "tiles".
    pub mode: &'static str,
}

/// Runs `net` on `input` (network-ready intensities, `[nx, ny, nz]`, each side even).
pub fn predict(
    net: &AnatomyNet,
    input: &[f32],
    shape: [usize; 3],
    device: &Device,
    opts: &Options,
) -> Result<Prediction, Error> {
    let bad = |reason: &str| Error::BadInput { shape, reason: reason.into() };
    if shape.iter().any(|&n| n == 0 || n % 2 == 1) {
        return Err(bad("every side must be even and non-zero (pad to the model's stride first)"));
    }
    if input.len() != shape.iter().product::<usize>() {
        return Err(bad("voxel count does not match the shape"));
    }
    let result = run_network(net, input, shape, device, opts);
    crate::kernels::release_scratch();
    result
}

/// [`predict`] once its input is checked.
fn run_network(
    net: &AnatomyNet,
    input: &[f32],
    shape: [usize; 3],
    device: &Device,
    opts: &Options,
) -> Result<Prediction, Error> {
    let total: usize = shape.iter().product();
    let keep = opts.keep_probabilities;
    if let Some(max) = opts.tile_voxels {
        return tiled(net, input, shape, device, keep, max);
    }
    match opts.max_voxels {
        Some(max) if total > max => slabs(net, input, shape, device, keep, max),
        Some(_) => whole(net, input, shape, device, keep),
        None => {
            // A device that cannot hold the volume panics inside burn: fall back.
            let attempt = |f: &dyn Fn() -> Result<Prediction, Error>| catch_unwind(AssertUnwindSafe(f)).ok();
            attempt(&|| whole(net, input, shape, device, keep))
                .or_else(|| attempt(&|| slabs(net, input, shape, device, keep, total / 8)))
                .unwrap_or_else(|| tiled(net, input, shape, device, keep, (total / 8).max(32 * 32 * 32)))
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// `[nx, ny, nz]` voxels (x fastest) as a `[1, 1, nz, ny, nx]` tensor of the
/// network's float type on `device`, with the time it took to get there.
fn upload(input: &[f32], [nx, ny, nz]: [usize; 3], device: &Device, dtype: DType) -> (Tensor<5>, f64) {
    let start = Instant::now();
    let x = Tensor::<5>::from_data(TensorData::new(input.to_vec(), [1, 1, nz, ny, nx]), device).cast(dtype);
    sync(device);
    (x, ms(start))
}

/// Probabilities as f32 for the argmax and the download, whatever the network's type
/// (half-precision ties would otherwise pick the lower class).
fn wide(probs: Tensor<5>) -> Tensor<5> {
    probs.cast(FloatDType::F32)
}

fn class_ids<const D: usize>(t: Tensor<D, burn::tensor::Int>) -> Vec<u16> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("converted to i64")
        .into_iter()
        .map(|v| v as u16)
        .collect()
}

/// Largest device memory the allocator held at any sync since the last
/// [`reset_device_memory_peak`], in bytes; 0 when the backend reports none.
static DEVICE_PEAK: AtomicU64 = AtomicU64::new(0);

fn sync(device: &Device) {
    device.sync().expect("device failed while running the network");
    // cubecl's pools keep freed pages for reuse, so what they hold once a stage is
    // done covers that stage's temporaries; flex reports nothing.
    if let Some(usage) = device.memory_pool_usage() {
        DEVICE_PEAK.fetch_max(usage.bytes_reserved.max(usage.bytes_in_use), Ordering::Relaxed);
    }
}

/// Peak device memory (bytes reserved by the allocator, sampled after each stage's
/// sync) since the last reset; `None` on a backend that reports no memory (flex).
pub fn device_memory_peak(device: &Device) -> Option<u64> {
    device.memory_pool_usage().map(|_| DEVICE_PEAK.load(Ordering::Relaxed))
}

/// Starts a new [`device_memory_peak`] window.
pub fn reset_device_memory_peak() {
    DEVICE_PEAK.store(0, Ordering::Relaxed);
}

fn whole(
    net: &AnatomyNet,
    input: &[f32],
    [nx, ny, nz]: [usize; 3],
    device: &Device,
    keep: bool,
) -> Result<Prediction, Error> {
    let mut t = Timings::default();
    let (x, upload_ms) = upload(input, [nx, ny, nz], device, net.dtype());
    t.upload_ms = upload_ms;
    let start = Instant::now();
    let probs = wide(net.forward(x));
    sync(device);
    t.forward_ms = ms(start);
    let start = Instant::now();
    let (best, index) = probs.clone().max_dim_with_indices(1);
    sync(device);
    t.argmax_ms = ms(start);
    let start = Instant::now();
    let classes = probs.dims()[1];
    let labels = class_ids(index);
    let confidence = floats(best);
    let probabilities = keep.then(|| floats(probs));
    t.download_ms = ms(start);
    Ok(Prediction {
        shape: [nx, ny, nz],
        classes,
        labels,
        confidence,
        probabilities,
        timings: t,
        tiles: 1,
        mode: "whole",
    })
}

/// The trunk on the whole volume, the tail in z-slabs of at most `max_voxels`.
fn slabs(
    net: &AnatomyNet,
    input: &[f32],
    [nx, ny, nz]: [usize; 3],
    device: &Device,
    keep: bool,
    max_voxels: usize,
) -> Result<Prediction, Error> {
    let mut t = Timings::default();
    let (x, upload_ms) = upload(input, [nx, ny, nz], device, net.dtype());
    t.upload_ms = upload_ms;
    let start = Instant::now();
    let trunk = net.trunk(x.clone());
    sync(device);
    t.forward_ms = ms(start);
    let plane = nx * ny;
    let thick = ((max_voxels / plane) & !1).clamp(2, nz);
    // An even halo keeps slab edges on the half-resolution grid.
    let halo = AnatomyNet::TAIL_HALO.next_multiple_of(2);
    let (mut labels, mut confidence) = (vec![0u16; plane * nz], vec![0f32; plane * nz]);
    let mut probabilities: Vec<f32> = Vec::new();
    let mut classes = 0;
    let mut count = 0;
    for z0 in (0..nz).step_by(thick) {
        let z1 = (z0 + thick).min(nz);
        let (lo, hi) = (z0.min(halo), (nz - z1).min(halo));
        let start = Instant::now();
        let part = net.tail_logits(
            trunk.clone().narrow(2, (z0 - lo) / 2, (z1 + hi - z0 + lo) / 2),
            x.clone().narrow(2, z0 - lo, z1 + hi - z0 + lo),
        );
        let probs = wide(burn::tensor::activation::softmax(part.narrow(2, lo, z1 - z0), 1));
        sync(device);
        t.forward_ms += ms(start);
        let start = Instant::now();
        let (best, index) = probs.clone().max_dim_with_indices(1);
        sync(device);
        t.argmax_ms += ms(start);
        let start = Instant::now();
        classes = probs.dims()[1];
        let range = z0 * plane..z1 * plane;
        labels[range.clone()].copy_from_slice(&class_ids(index));
        confidence[range].copy_from_slice(&floats(best));
        if keep {
            let p = floats(probs);
            probabilities.resize(classes * plane * nz, 0.0);
            let n = (z1 - z0) * plane;
            for k in 0..classes {
                probabilities[k * plane * nz + z0 * plane..][..n].copy_from_slice(&p[k * n..(k + 1) * n]);
            }
        }
        t.download_ms += ms(start);
        count += 1;
    }
    Ok(Prediction {
        shape: [nx, ny, nz],
        classes,
        labels,
        confidence,
        probabilities: keep.then_some(probabilities),
        timings: t,
        tiles: count,
        mode: "slabs",
    })
}

/// Tile sides: halve the longest side (kept even) until a tile fits `max_voxels`.
fn tile_shape(shape: [usize; 3], max_voxels: usize) -> [usize; 3] {
    let mut tile = shape;
    while tile.iter().product::<usize>() > max_voxels {
        let a = (0..3).max_by_key(|&a| tile[a]).unwrap();
        if tile[a] <= 16 {
            break;
        }
        tile[a] = tile[a].div_ceil(2).next_multiple_of(2);
    }
    tile
}

/// Tile starts along one axis: half-tile steps, the last one flush with the end.
fn starts(n: usize, tile: usize) -> Vec<usize> {
    if tile >= n {
        return vec![0];
    }
    let step = (tile / 2).max(1);
    let mut s: Vec<usize> = (0..).map(|i| i * step).take_while(|&s| s + tile < n).collect();
    s.push(n - tile);
    s
}

/// Gaussian importance along one axis (sigma = side / 8, nnU-Net's choice), so
/// voxels near a tile's edge, which see less context, count less.
fn gaussian(n: usize) -> Vec<f32> {
    let sigma = n as f64 / 8.0;
    let c = (n as f64 - 1.0) / 2.0;
    (0..n).map(|i| ((-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp()).max(1e-3) as f32).collect()
}

fn tiled(
    net: &AnatomyNet,
    input: &[f32],
    shape: [usize; 3],
    device: &Device,
    keep: bool,
    max_voxels: usize,
) -> Result<Prediction, Error> {
    let [nx, ny, nz] = shape;
    let tile = tile_shape(shape, max_voxels);
    let [tx, ty, tz] = tile;
    let (wx, wy, wz) = (gaussian(tx), gaussian(ty), gaussian(tz));
    let mut sum: Vec<f32> = Vec::new();
    let mut weight = vec![0f32; nx * ny * nz];
    let mut timings = Timings::default();
    let mut classes = 0;
    let mut tiles = 0;
    let mut crop = vec![0f32; tx * ty * tz];
    for &z0 in &starts(nz, tz) {
        for &y0 in &starts(ny, ty) {
            for &x0 in &starts(nx, tx) {
                for z in 0..tz {
                    for y in 0..ty {
                        let src = x0 + nx * (y0 + y + ny * (z0 + z));
                        crop[tx * (y + ty * z)..][..tx].copy_from_slice(&input[src..src + tx]);
                    }
                }
                let part = whole(net, &crop, tile, device, true)?;
                timings.add(part.timings);
                tiles += 1;
                classes = part.classes;
                if sum.is_empty() {
                    sum = vec![0f32; classes * nx * ny * nz];
                }
                let probs = part.probabilities.expect("asked for");
                for (z, &fz) in wz.iter().enumerate() {
                    for (y, &fy) in wy.iter().enumerate() {
                        for (x, &fx) in wx.iter().enumerate() {
                            let w = fx * fy * fz;
                            let dst = x0 + x + nx * (y0 + y + ny * (z0 + z));
                            let src = x + tx * (y + ty * z);
                            weight[dst] += w;
                            for k in 0..classes {
                                sum[k * nx * ny * nz + dst] += w * probs[k * tx * ty * tz + src];
                            }
                        }
                    }
                }
            }
        }
    }
    let n = nx * ny * nz;
    for k in 0..classes {
        for (v, w) in sum[k * n..(k + 1) * n].iter_mut().zip(&weight) {
            *v /= w;
        }
    }
    let (labels, confidence): (Vec<u16>, Vec<f32>) = (0..n)
        .map(|v| {
            (0..classes).fold((0u16, f32::NEG_INFINITY), |(bk, bp), k| {
                let p = sum[k * n + v];
                if p > bp {
                    (k as u16, p)
                } else {
                    (bk, bp)
                }
            })
        })
        .unzip();
    let probabilities = keep.then_some(sum);
    Ok(Prediction { shape, classes, labels, confidence, probabilities, timings, tiles, mode: "tiles" })
}

/// Runs the single-output multi-pathway network on one segment `[nx, ny, nz]`
/// (x fastest). The answer covers the segment minus `net.margin()` voxels on each
/// side, as two classes: background `1 - p` and organ `p`.
pub fn predict_multipath(
    net: &MultipathUnet,
    input: &[f32],
    [nx, ny, nz]: [usize; 3],
    device: &Device,
) -> Result<Prediction, Error> {
    let m = net.margin();
    let f = net.pool.pow(net.down.len() as u32 - 1);
    if [nx, ny, nz].iter().any(|&n| n % f != 0 || n <= 2 * m) || input.len() != nx * ny * nz {
        return Err(Error::BadInput { shape: [nx, ny, nz], reason: format!("sides must be multiples of {f}") });
    }
    let mut t = Timings::default();
    let (x, upload_ms) = upload(input, [nx, ny, nz], device, net.dtype());
    t.upload_ms = upload_ms;
    let start = Instant::now();
    // The network's kernel axes run along i, j, k: put x first, and back after.
    let p = wide(net.forward(x.permute([0, 1, 4, 3, 2])).permute([0, 1, 4, 3, 2]));
    sync(device);
    crate::kernels::release_scratch();
    t.forward_ms = ms(start);
    let start = Instant::now();
    let p = floats(p);
    t.download_ms = ms(start);
    let labels = p.iter().map(|&v| u16::from(v > 0.5)).collect();
    let confidence = p.iter().map(|&v| v.max(1.0 - v)).collect();
    let mut probabilities: Vec<f32> = p.iter().map(|&v| 1.0 - v).collect();
    probabilities.extend_from_slice(&p);
    let shape = [nx - 2 * m, ny - 2 * m, nz - 2 * m];
    Ok(Prediction {
        shape,
        classes: 2,
        labels,
        confidence,
        probabilities: Some(probabilities),
        timings: t,
        tiles: 1,
        mode: "segment",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_and_fit() {
        assert_eq!(starts(10, 10), vec![0]);
        assert_eq!(starts(48, 24), vec![0, 12, 24]);
        assert_eq!(starts(50, 24), vec![0, 12, 24, 26]);
        let t = tile_shape([48, 48, 32], 48 * 48 * 32 / 4);
        assert!(t.iter().product::<usize>() <= 48 * 48 * 32 / 4 && t.iter().all(|&v| v % 2 == 0), "{t:?}");
    }
}
