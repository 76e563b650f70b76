//! Array resizing as `skimage.transform.resize(image, shape, order, mode="edge",
//! anti_aliasing=False)` computes it, which is how nnU-Net resamples images (order 3)
//! and logits (order 1): `scipy.ndimage.zoom` with `grid_mode=True` (pixel centres
//! aligned, output voxel `o` samples input coordinate `(o + 0.5) * n_in / n_out - 0.5`),
//! mode "nearest" at the edges, and the output clipped to the input's range.
//!
//! Interpolation is separable, so each axis is resized on its own, in f64: for cubic
//! B-splines the input is padded by 12 edge voxels (as scipy pads for mode "nearest"),
//! prefiltered (mirror boundary), then evaluated. `nearest` is `map_coordinates` of
//! order 0 (round half up, clamped), which nnU-Net uses along the out-of-plane axis.

use rayon::prelude::*;

/// Interpolation along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Order 0.
    Nearest,
    /// Order 1.
    Linear,
    /// Order 3 (cubic B-spline).
    Cubic,
}

impl Interpolation {
    /// scipy's spline order.
    pub fn from_order(order: u32) -> Option<Interpolation> {
        match order {
            0 => Some(Interpolation::Nearest),
            1 => Some(Interpolation::Linear),
            3 => Some(Interpolation::Cubic),
            _ => None,
        }
    }
}

/// A row-major `[d0, d1, d2]` array resized to `to`, axis `a` with `interp[a]`, then
/// clipped to the input's value range (skimage's `clip=True`). Axes whose size does not
/// change are left as they are.
pub fn resize(values: &[f64], shape: [usize; 3], to: [usize; 3], interp: [Interpolation; 3]) -> Vec<f64> {
    assert_eq!(values.len(), shape.iter().product::<usize>(), "values do not fill the shape");
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let mut data = values.to_vec();
    let mut now = shape;
    for axis in 0..3 {
        if now[axis] != to[axis] {
            data = resize_axis(&data, now, axis, to[axis], interp[axis]);
            now[axis] = to[axis];
        }
    }
    if values.is_empty() {
        return data;
    }
    data.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
    data
}

/// The input rows (along the first axis) that output rows `rows` of a nearest or linear
/// resize of `n_in` rows to `n_out` read.
pub fn rows_read(
    n_in: usize,
    n_out: usize,
    rows: std::ops::Range<usize>,
    interp: Interpolation,
) -> std::ops::Range<usize> {
    assert!(interp != Interpolation::Cubic, "a cubic spline reads every row");
    if n_in == n_out || rows.is_empty() {
        return rows;
    }
    // Taps move forward with the output row.
    let lo = tap(rows.start, n_in, n_out, interp).iter().map(|&(k, _)| k).min().expect("a tap");
    let hi = tap(rows.end - 1, n_in, n_out, interp).iter().map(|&(k, _)| k).max().expect("a tap");
    lo..hi + 1
}

/// Rows `rows` (along the first axis) of [`resize`]`(values, shape, to, interp)` before
/// its final clip, from `block`: the input's rows `first..` (at least those
/// [`rows_read`] names). The first axis is resized first, then the other two in the
/// order `then`, each with the same taps and sums as `resize`, so the rows equal the
/// whole array's. Nearest and linear only: a cubic spline's prefilter runs over whole
/// lines (and their interpolation can leave the input's range, which `resize` clips).
pub fn resize_rows(
    block: &[f64],
    first: usize,
    shape: [usize; 3],
    to: [usize; 3],
    rows: std::ops::Range<usize>,
    interp: [Interpolation; 3],
    then: [usize; 2],
) -> Vec<f64> {
    let plane = shape[1] * shape[2];
    let read = rows_read(shape[0], to[0], rows.clone(), interp[0]);
    assert!(
        read.start >= first && (read.end - first) * plane <= block.len(),
        "rows {read:?} not in the block from {first}"
    );
    let mut data = if shape[0] == to[0] {
        block[(rows.start - first) * plane..(rows.end - first) * plane].to_vec()
    } else {
        let mut out = vec![0.0; rows.len() * plane];
        out.par_chunks_mut(plane).zip(rows.clone()).for_each(|(dst, o)| {
            let tap = tap(o, shape[0], to[0], interp[0]);
            for (i, v) in dst.iter_mut().enumerate() {
                *v = tap.iter().map(|&(k, w)| block[(k - first) * plane + i] * w).sum();
            }
        });
        out
    };
    let mut now = [rows.len(), shape[1], shape[2]];
    for axis in then {
        if now[axis] != to[axis] {
            data = resize_axis(&data, now, axis, to[axis], interp[axis]);
            now[axis] = to[axis];
        }
    }
    data
}

/// Output coordinate `o` in input coordinates, pixel centres aligned.
fn source(o: usize, n_in: usize, n_out: usize) -> f64 {
    (o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5
}

/// Resizes the lines along `axis` of a row-major array.
fn resize_axis(data: &[f64], shape: [usize; 3], axis: usize, n_out: usize, interp: Interpolation) -> Vec<f64> {
    let n_in = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let taps = taps(n_in, n_out, interp);
    let mut out = vec![0.0; outer * n_out * inner];
    // One outer index at a time: lines along `axis` are strided by `inner`.
    out.par_chunks_mut(n_out * inner).zip(data.par_chunks(n_in * inner)).for_each(|(dst, src)| {
        let mut line = vec![0.0; n_in];
        for i in 0..inner {
            line.iter_mut().enumerate().for_each(|(k, v)| *v = src[k * inner + i]);
            let coef;
            let values: &[f64] = match interp {
                Interpolation::Cubic => {
                    coef = cubic_coefficients(&line);
                    &coef
                }
                _ => &line,
            };
            for (o, tap) in taps.iter().enumerate() {
                dst[o * inner + i] = tap.iter().map(|&(k, w)| values[k] * w).sum();
            }
        }
    });
    out
}

/// Edge voxels added on each side before the cubic prefilter, as scipy does for mode
/// "nearest" (`_prepad_for_spline_filter`).
const PAD: usize = 12;

/// Per output voxel, the (index, weight) pairs it sums: indices into the line itself
/// (linear, nearest) or into its padded B-spline coefficients (cubic).
fn taps(n_in: usize, n_out: usize, interp: Interpolation) -> Vec<Vec<(usize, f64)>> {
    (0..n_out).map(|o| tap(o, n_in, n_out, interp)).collect()
}

/// Output voxel `o`'s (index, weight) pairs (see [`taps`]).
fn tap(o: usize, n_in: usize, n_out: usize, interp: Interpolation) -> Vec<(usize, f64)> {
    let clamp = |k: i64, n: usize| k.clamp(0, n as i64 - 1) as usize;
    let x = source(o, n_in, n_out);
    match interp {
        Interpolation::Nearest => vec![(clamp((x + 0.5).floor() as i64, n_in), 1.0)],
        Interpolation::Linear => {
            let f = x.floor();
            let t = x - f;
            let k = f as i64;
            vec![(clamp(k, n_in), 1.0 - t), (clamp(k + 1, n_in), t)]
        }
        Interpolation::Cubic => {
            let x = x + PAD as f64;
            let f = x.floor();
            let t = x - f;
            let start = f as i64 - 1;
            let w = [
                (1.0 - t).powi(3) / 6.0,
                (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
                (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t * t * t) / 6.0,
                t * t * t / 6.0,
            ];
            let n = n_in + 2 * PAD;
            (0..4).map(|j| (clamp(start + j as i64, n), w[j])).collect()
        }
    }
}

/// The cubic B-spline coefficients of `line` padded by [`PAD`] edge values on each side
/// (scipy's `spline_filter1d`, order 3, mirror boundary).
fn cubic_coefficients(line: &[f64]) -> Vec<f64> {
    let (first, last) = (line[0], line[line.len() - 1]);
    let mut c: Vec<f64> =
        std::iter::repeat_n(first, PAD).chain(line.iter().copied()).chain(std::iter::repeat_n(last, PAD)).collect();
    let n = c.len();
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    // Causal initialisation, mirror boundary (scipy's _init_causal_mirror).
    let z_n1 = z.powi(n as i32 - 1);
    let mut c0 = c[0] + z_n1 * c[n - 1];
    let mut zi = z;
    for i in 1..n - 1 {
        c0 += zi * (c[i] + z_n1 * c[n - 1 - i]);
        zi *= z;
    }
    c[0] = c0 / (1.0 - z_n1 * z_n1);
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    // Anti-causal initialisation, mirror boundary.
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_reproduces_the_samples_at_the_nodes() {
        let line: Vec<f64> = (0..9).map(|i| ((i * 7) % 5) as f64 - 1.5).collect();
        let c = cubic_coefficients(&line);
        for (k, v) in line.iter().enumerate() {
            let j = k + PAD;
            let back = (c[j - 1] + 4.0 * c[j] + c[j + 1]) / 6.0;
            assert!((back - v).abs() < 1e-12, "{k}: {back} vs {v}");
        }
    }

    #[test]
    fn linear_halving_averages_pairs() {
        let v: Vec<f64> = (0..8).map(f64::from).collect();
        let out = resize(&v, [1, 1, 8], [1, 1, 4], [Interpolation::Linear; 3]);
        assert_eq!(out, vec![0.5, 2.5, 4.5, 6.5]);
    }

    /// Rows computed block by block equal the whole resize's (which clips nothing
    /// here: linear and nearest stay in the input's range), for both axis orders.
    #[test]
    fn rows_equal_the_whole_resize() {
        let shape = [13, 5, 6];
        let v: Vec<f64> = (0..13 * 5 * 6).map(|i| ((i * 37) % 101) as f64 * 0.1 - 3.0).collect();
        use Interpolation::{Linear, Nearest};
        for (to, interp) in [
            ([29, 7, 4], [Linear; 3]),
            ([6, 5, 9], [Nearest, Linear, Linear]),
            ([13, 3, 8], [Linear; 3]),
            ([20, 5, 6], [Linear, Nearest, Nearest]),
        ] {
            let whole = resize(&v, shape, to, interp);
            let plane = to[1] * to[2];
            for chunk in [1, 4, 7] {
                let mut o = 0;
                while o < to[0] {
                    let rows = o..(o + chunk).min(to[0]);
                    let read = rows_read(shape[0], to[0], rows.clone(), interp[0]);
                    let block = &v[read.start * 30..read.end * 30];
                    let got = resize_rows(block, read.start, shape, to, rows.clone(), interp, [1, 2]);
                    assert_eq!(got, whole[rows.start * plane..rows.end * plane], "{to:?} {interp:?} rows {rows:?}");
                    o = rows.end;
                }
            }
        }
    }
}
