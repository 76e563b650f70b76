//! The liver network's resolution changes and skip joins, one pass each on the CPU:
//! burn's versions (reshape + three reductions, expand + three shifted sums, narrow +
//! cat) materialise a strided intermediate per step, a tenth of its forward pass.
//! Each function keeps burn's ops for the other devices, so the network has one path.

use burn::prelude::*;
use rayon::prelude::*;

use super::{floats, on_cpu_backend, with_floats};

/// Max over non-overlapping `f`^3 blocks (sides divisible by `f`).
pub fn max_pool(x: Tensor<5>, f: usize) -> Tensor<5> {
    let [n, c, a, b, d] = x.dims();
    let (a2, b2, d2) = (a / f, b / f, d / f);
    if !on_cpu_backend(&x) {
        let x: Tensor<8> = x.reshape([n, c, a2, f, b2, f, d2, f]);
        return x.max_dim(7).max_dim(5).max_dim(3).reshape([n, c, a2, b2, d2]);
    }
    let device = x.device();
    let mut out = vec![0f32; n * c * a2 * b2 * d2];
    with_floats(&x, |input| {
        out.par_chunks_mut(a2 * b2 * d2).zip(input.par_chunks(a * b * d)).for_each(|(dst, src)| {
            for (i, dst) in dst.chunks_mut(b2 * d2).enumerate() {
                for (j, row) in dst.chunks_mut(d2).enumerate() {
                    for (k, value) in row.iter_mut().enumerate() {
                        let mut best = f32::NEG_INFINITY;
                        for u in 0..f {
                            for v in 0..f {
                                let start = ((i * f + u) * b + j * f + v) * d + k * f;
                                best = src[start..start + f].iter().fold(best, |m, &s| m.max(s));
                            }
                        }
                        *value = best;
                    }
                }
            }
        });
    });
    Tensor::from_data(TensorData::new(out, [n, c, a2, b2, d2]), &device)
}

/// Each voxel repeated `f` times per axis, then the mean of every `f`^3 window
/// (stride 1, no padding): sides `n f - (f - 1)`. Separable: along one axis
/// `out[o] = (in[o / f] + in[(o + 1) / f] + ... + in[(o + f - 1) / f]) / f`.
pub fn repeat_box_mean(x: Tensor<5>, f: usize) -> Tensor<5> {
    let [n, c, a, b, d] = x.dims();
    let grown = |s: usize| s * f - (f - 1);
    if !on_cpu_backend(&x) {
        let x: Tensor<8> = x.reshape([n, c, a, 1, b, 1, d, 1]);
        let mut x: Tensor<5> = x.expand([n, c, a, f, b, f, d, f]).reshape([n, c, a * f, b * f, d * f]);
        for dim in 2..5 {
            let len = x.dims()[dim] - (f - 1);
            let sum = (1..f).fold(x.clone().narrow(dim, 0, len), |s, o| s + x.clone().narrow(dim, o, len));
            x = sum / f as f64;
        }
        return x;
    }
    let device = x.device();
    let (a2, b2, d2) = (grown(a), grown(b), grown(d));
    let mut out = vec![0f32; n * c * a2 * b2 * d2];
    with_floats(&x, |input| {
        out.par_chunks_mut(a2 * b2 * d2).zip(input.par_chunks(a * b * d)).for_each(|(dst, src)| {
            // Along the last axis, then the middle, then the first: each pass reads
            // whole rows (the inner extent) and writes whole rows.
            let along_d = along_axis(src, [a * b, d, 1], f);
            let along_b = along_axis(&along_d, [a, b, d2], f);
            dst.copy_from_slice(&along_axis(&along_b, [1, a, b2 * d2], f));
        });
    });
    Tensor::from_data(TensorData::new(out, [n, c, a2, b2, d2]), &device)
}

/// `values` as `[outer][len][inner]`, repeated and window-averaged along `len`.
fn along_axis(values: &[f32], [outer, len, inner]: [usize; 3], f: usize) -> Vec<f32> {
    let len2 = len * f - (f - 1);
    let mut out = vec![0f32; outer * len2 * inner];
    for (src, dst) in values.chunks(len * inner).zip(out.chunks_mut(len2 * inner)) {
        for (o, row) in dst.chunks_mut(inner).enumerate() {
            // Same order as burn's sum of shifted copies, then the division.
            row.copy_from_slice(&src[o / f * inner..][..inner]);
            for t in 1..f {
                let from = &src[(o + t) / f * inner..][..inner];
                row.iter_mut().zip(from).for_each(|(r, &s)| *r += s);
            }
            row.iter_mut().for_each(|r| *r /= f as f32);
        }
    }
    out
}

/// `cat([centre crop of skip to x's size, x], channels)`: the decoder's join.
pub fn cat_centre_cropped(skip: Tensor<5>, x: Tensor<5>) -> Tensor<5> {
    let [n, c1, a1, b1, d1] = skip.dims();
    let [_, c2, a, b, d] = x.dims();
    let offset = [(a1 - a) / 2, (b1 - b) / 2, (d1 - d) / 2];
    if !on_cpu_backend(&x) {
        let to = [a, b, d];
        let cropped = (0..3).fold(skip, |s, i| s.narrow(i + 2, offset[i], to[i]));
        return Tensor::cat(vec![cropped, x], 1);
    }
    let device = x.device();
    let volume = a * b * d;
    let mut out = vec![0f32; n * (c1 + c2) * volume];
    let x = floats(x);
    with_floats(&skip, |skip| {
        out.par_chunks_mut(volume).enumerate().for_each(|(nc, dst)| {
            let (batch, channel) = (nc / (c1 + c2), nc % (c1 + c2));
            if channel >= c1 {
                dst.copy_from_slice(&x[(batch * c2 + channel - c1) * volume..][..volume]);
                return;
            }
            let src = &skip[(batch * c1 + channel) * a1 * b1 * d1..][..a1 * b1 * d1];
            for (i, plane) in dst.chunks_mut(b * d).enumerate() {
                for (j, row) in plane.chunks_mut(d).enumerate() {
                    let start = ((i + offset[0]) * b1 + j + offset[1]) * d1 + offset[2];
                    row.copy_from_slice(&src[start..start + d]);
                }
            }
        });
    });
    Tensor::from_data(TensorData::new(out, [n, c1 + c2, a, b, d]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The CPU kernels against burn's ops on the same data (wgpu runs burn's ops; here
    /// they run on flex by going through a device the kernels do not serve: autodiff).
    #[test]
    fn equal_burns_ops() {
        let cpu = Device::flex();
        let burn_ops = cpu.clone().autodiff();
        let close = |ours: Tensor<5>, theirs: Tensor<5>, what: &str| {
            assert_eq!(ours.dims(), theirs.dims(), "{what}");
            let (a, b) = (floats(ours), floats(theirs));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(worst <= 1e-6, "{what}: max |diff| {worst}");
        };
        for shape in [[1, 2, 6, 9, 12], [2, 3, 3, 6, 9]] {
            let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &cpu);
            let on = |t: &Tensor<5>| Tensor::<5>::from_data(t.to_data(), &burn_ops);
            close(max_pool(x.clone(), 3), max_pool(on(&x), 3), "max_pool");
            close(repeat_box_mean(x.clone(), 3), repeat_box_mean(on(&x), 3), "repeat_box_mean");
            let small = Tensor::<5>::random([shape[0], 4, 2, 5, 7], Distribution::Normal(0.0, 1.0), &cpu);
            close(cat_centre_cropped(x.clone(), small.clone()), cat_centre_cropped(on(&x), on(&small)), "cat");
        }
    }
}
