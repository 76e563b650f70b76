//! Centre-aligned zoom and a 3x3x3 median filter: the resampling some trained models
//! were built with (e.g. the KU Leuven liver model, whose package lists
//! `zoom 1.5 mm -> median 3 -> zoom 3 mm`), as opposed to [`crate::resample_image`]'s
//! corner-kept trilinear grids.
//!
//! # Zoom conventions
//!
//! Along an axis with `n` voxels of `s` mm zoomed to `t` mm (`zoom = s / t`):
//! - the new grid has `ceil(n * zoom)` voxels of exactly `t` mm and shares its *centre*
//!   with the old one: new voxel `q` sits at old voxel coordinate
//!   `(q - (m - 1) / 2) * t / s + (n - 1) / 2`;
//! - enlarging (`zoom > 1`) interpolates linearly between the two nearest old voxels;
//!   beyond the first/last old voxel the missing neighbour counts as `fill` (0 HU);
//! - shrinking (`zoom < 1`) averages: each old voxel (a segment of length `zoom` in new
//!   voxel units) adds its value times its overlap with each new voxel; a new voxel that
//!   only partly overlaps the old field of view gets the rest from `fill`;
//! - `zoom == 1` leaves the axis untouched.
//!
//! Axes are zoomed one after the other (i, then j, then k); each step is linear, so the
//! order only affects rounding.

use rayon::prelude::*;
use voxseg_volume::{Grid, Image, Volume};

use crate::error::{check_size, Error};

/// One output voxel of a 1-D zoom: `(input index, weight)` taps.
type Taps = Vec<(usize, f64)>;

/// Number of voxels after zooming `n` by `zoom` (computed as `ceil(n / (1 / zoom))`, the
/// same floating-point steps as the reference implementation, so counts agree exactly).
fn zoomed_len(n: usize, zoom: f64) -> usize {
    if zoom == 1.0 {
        return n;
    }
    let delta = 1.0 / zoom;
    (n as f64 / delta).ceil().max(1.0) as usize
}

/// The taps of every output voxel along one axis (see the module docs).
fn axis_taps(n: usize, zoom: f64) -> Vec<Taps> {
    let m = zoomed_len(n, zoom);
    if zoom == 1.0 {
        return (0..n).map(|q| vec![(q, 1.0)]).collect();
    }
    let mut taps = vec![Vec::new(); m];
    if zoom > 1.0 {
        let delta = 1.0 / zoom;
        for (q, t) in taps.iter_mut().enumerate() {
            let c = delta * (q as f64 - 0.5 * m as f64 + 0.5) + 0.5 * n as f64 - 0.5;
            let lo = c.floor();
            let (w_lo, w_hi) = (lo + 1.0 - c, c - lo);
            if lo >= 0.0 && (lo as usize) < n {
                t.push((lo as usize, w_lo));
            }
            if lo + 1.0 >= 0.0 && ((lo + 1.0) as usize) < n {
                t.push(((lo + 1.0) as usize, w_hi));
            }
        }
    } else {
        for p in 0..n {
            let left = zoom * (p as f64 - 0.5 * n as f64) + 0.5 * m as f64;
            let right = zoom * (p as f64 + 1.0 - 0.5 * n as f64) + 0.5 * m as f64;
            let (lb, rb) = (left.floor() as usize, (right.ceil() as usize).saturating_sub(1).min(m - 1));
            if lb >= rb {
                taps[lb.min(m - 1)].push((p, zoom));
            } else {
                let c = left.ceil();
                taps[lb].push((p, c - left));
                taps[rb].push((p, right - c));
            }
        }
    }
    taps
}

/// Zooms one axis of a `[n0, n1, n2]` buffer (axis 0 fastest); `fill` enters through the
/// weight missing from each output voxel (1 - sum of its taps).
fn zoom_axis(data: &[f32], shape: [usize; 3], axis: usize, taps: &[Taps], fill: f32) -> Vec<f32> {
    let inner: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let m = taps.len();
    let outer: usize = shape[axis + 1..].iter().product();
    let fill = fill as f64;
    let missing: Vec<f64> = taps.iter().map(|t| 1.0 - t.iter().map(|&(_, w)| w).sum::<f64>()).collect();
    let mut out = vec![0f32; inner * m * outer];
    out.par_chunks_mut(inner).enumerate().for_each_init(
        || vec![0f64; inner],
        |acc, (row, dst)| {
            let (o, q) = (row / m, row % m);
            let base = o * n * inner;
            acc.iter_mut().for_each(|a| *a = fill * missing[q]);
            for &(p, w) in &taps[q] {
                let src = &data[base + p * inner..base + (p + 1) * inner];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += w * v as f64;
                }
            }
            for (d, &a) in dst.iter_mut().zip(acc.iter()) {
                *d = a as f32;
            }
        },
    );
    out
}

/// The grid [`zoom_centred`] produces: `ceil(n * s / t)` voxels of `spacing` mm per axis,
/// same axis directions, same centre.
pub fn centred_grid(grid: &Grid, spacing: [f64; 3]) -> Result<Grid, Error> {
    for (axis, &value) in spacing.iter().enumerate() {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::BadTargetSpacing { axis, value });
        }
    }
    let old = grid.spacing();
    let n = grid.shape();
    let zoom: [f64; 3] = std::array::from_fn(|a| old[a] / spacing[a]);
    let m: [usize; 3] = std::array::from_fn(|a| zoomed_len(n[a], zoom[a]));
    check_size(m.map(|v| v as u64))?;
    let ratio: [f64; 3] = std::array::from_fn(|a| if zoom[a] == 1.0 { 1.0 } else { 1.0 / zoom[a] });
    let first: [f64; 3] = std::array::from_fn(|a| (n[a] as f64 - 1.0) / 2.0 - ratio[a] * (m[a] as f64 - 1.0) / 2.0);
    let origin = grid.voxel_to_world(first);
    let a = grid.affine();
    let mut affine = *a;
    for r in 0..3 {
        for c in 0..3 {
            affine[r][c] = a[r][c] * ratio[c];
        }
        affine[r][3] = origin[r];
    }
    Ok(Grid::new(m, affine)?)
}

/// `image` zoomed to `spacing` mm with centre-aligned grids (see the module docs);
/// `fill` (HU) stands in for everything outside the image.
pub fn zoom_centred(image: &Image, spacing: [f64; 3], fill: f32) -> Result<Image, Error> {
    let grid = centred_grid(image.grid(), spacing)?;
    let old = image.grid().spacing();
    let mut shape = image.shape();
    let mut data: Option<Vec<f32>> = None;
    for axis in 0..3 {
        let zoom = old[axis] / spacing[axis];
        if zoom == 1.0 {
            continue;
        }
        let taps = axis_taps(shape[axis], zoom);
        let src = data.as_deref().unwrap_or(image.data());
        let next = zoom_axis(src, shape, axis, &taps, fill);
        shape[axis] = taps.len();
        data = Some(next);
    }
    debug_assert_eq!(shape, grid.shape());
    Ok(Volume::new(grid, data.unwrap_or_else(|| image.data().to_vec())))
}

/// 3x3x3 median filter; at the border the missing neighbours repeat the edge voxel
/// (scipy.ndimage `median_filter(size=3)` with its default `mode="reflect"`, which for a
/// 3-wide window is the same thing).
pub fn median3(image: &Image) -> Image {
    let [nx, ny, nz] = image.shape();
    let data = image.data();
    let mut out = vec![0f32; data.len()];
    let clamp = |v: usize, d: isize, n: usize| (v as isize + d).clamp(0, n as isize - 1) as usize;
    out.par_chunks_mut(nx * ny).enumerate().for_each(|(k, slice)| {
        let mut window = [0f32; 27];
        for j in 0..ny {
            for i in 0..nx {
                let mut t = 0;
                for dk in -1..=1 {
                    let kk = clamp(k, dk, nz);
                    for dj in -1..=1 {
                        let row = (kk * ny + clamp(j, dj, ny)) * nx;
                        for di in -1..=1 {
                            window[t] = data[row + clamp(i, di, nx)];
                            t += 1;
                        }
                    }
                }
                let (_, median, _) = window.select_nth_unstable_by(13, f32::total_cmp);
                slice[j * nx + i] = *median;
            }
        }
    });
    Volume::new(image.grid().clone(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eye(spacing: [f64; 3]) -> Grid {
        let a = [
            [spacing[0], 0.0, 0.0, 10.0],
            [0.0, spacing[1], 0.0, -20.0],
            [0.0, 0.0, spacing[2], 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        Grid::new([6, 5, 4], a).unwrap()
    }

    #[test]
    fn weights_of_full_voxels_sum_to_one() {
        for (n, zoom) in [(7, 2.0), (7, 0.5), (10, 0.8 / 1.5), (9, 2.5 / 1.5), (5, 0.3)] {
            let taps = axis_taps(n, zoom);
            assert_eq!(taps.len(), zoomed_len(n, zoom));
            // interior output voxels are complete averages / interpolations
            for t in &taps[1..taps.len() - 1] {
                let s: f64 = t.iter().map(|&(_, w)| w).sum();
                assert!((s - 1.0).abs() < 1e-9, "n {n} zoom {zoom}: {t:?}");
            }
        }
    }

    #[test]
    fn grid_keeps_the_centre() {
        let g = eye([0.8, 1.1, 2.5]);
        let z = centred_grid(&g, [1.5, 1.5, 1.5]).unwrap();
        let centre = |g: &Grid| g.voxel_to_world(g.shape().map(|n| (n as f64 - 1.0) / 2.0));
        let (a, b) = (centre(&g), centre(&z));
        for r in 0..3 {
            assert!((a[r] - b[r]).abs() < 1e-9, "{a:?} vs {b:?}");
        }
        assert_eq!(z.shape(), [4, 4, 7]);
        assert!(z.spacing().iter().all(|s| (s - 1.5).abs() < 1e-12));
    }

    #[test]
    fn doubling_then_halving_a_constant_is_exact_inside() {
        let g = eye([3.0, 3.0, 3.0]);
        let img = Volume::new(g, vec![100.0f32; 120]);
        let up = zoom_centred(&img, [1.5; 3], 0.0).unwrap();
        assert_eq!(up.shape(), [12, 10, 8]);
        // the outermost fine voxel blends 3/4 of the edge with 1/4 of the fill
        assert_eq!(*up.at(0, 5, 4), 75.0);
        assert_eq!(*up.at(5, 5, 4), 100.0);
        let down = zoom_centred(&up, [3.0; 3], 0.0).unwrap();
        assert_eq!(down.shape(), [6, 5, 4]);
        assert_eq!(*down.at(3, 2, 2), 100.0);
    }

    #[test]
    fn median_removes_a_spike_and_keeps_edges() {
        let g = eye([1.0; 3]);
        let mut v = vec![1.0f32; 120];
        v[g.index(2, 2, 2)] = 1000.0;
        let m = median3(&Volume::new(g, v));
        assert!(m.data().iter().all(|&x| x == 1.0));
    }
}
