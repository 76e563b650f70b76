//! Resampling between grids whose voxel axes are parallel: trilinear for images and
//! class probabilities, nearest for labels.
//!
//! # Conventions
//!
//! - Voxel centres (NIfTI's): voxel `(i, j, k)` is the centre of a voxel, at
//!   `affine * [i, j, k, 1]`. Each output voxel is the value interpolated at its own
//!   centre's physical position, i.e. at source voxel coordinate `S^-1 * T * q` for
//!   source and target affines `S`, `T`; so the output affine is exactly where the
//!   sample was taken.
//! - New grids ([`grid_with_spacing`]) keep the corner of the field of view: the outer
//!   corner of the first voxel stays where it was (SimpleITK/nnU-Net resizing, PyTorch's
//!   `align_corners=False`). Along an axis with ratio `r = new / old` spacing, new voxel
//!   `q` samples old coordinate `(q + 1/2) r - 1/2`, and there are `round(n / r)`
//!   (at least 1) new voxels, at exactly the requested spacing.
//! - Outside the source's voxel centres (the half voxel at each border, or beyond),
//!   samples take the nearest edge voxel (scipy.ndimage `mode="nearest"`): the border
//!   repeats real tissue instead of inventing air.
//! - Nearest neighbour rounds halves up (`floor(x + 1/2)`, as scipy's `order=0`), with
//!   a 1e-6 voxel tolerance so float noise in the affines cannot flip an exact tie.
//!
//! Interpolation is separable: per output z-slice, blend two source slices, then per
//! output row two rows of that, then gather along x, from per-axis tables computed once.
//! Slices run in parallel (rayon); exact-hit slices and rows (weight 0) are not blended.

use voxseg_volume::{Grid, Image, LabelMap, Volume};

use crate::error::{check_size, Error};
use crate::slices::fill_slices;

/// Tolerance (source voxels) for exact halfway ties in nearest-neighbour rounding.
const TIE: f64 = 1e-6;
/// Largest drift (source voxels, across the whole target) an off-axis term may cause
/// before two grids are called not parallel.
const AXIS_TOLERANCE: f64 = 1e-3;

/// The grid covering `grid`'s field of view at `spacing` mm per voxel axis, with the
/// same axis directions and the first voxel's outer corner kept in place (see the module docs).
pub fn grid_with_spacing(grid: &Grid, spacing: [f64; 3]) -> Result<Grid, Error> {
    for (axis, &value) in spacing.iter().enumerate() {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::BadTargetSpacing { axis, value });
        }
    }
    let old = grid.spacing();
    let ratio: [f64; 3] = std::array::from_fn(|a| spacing[a] / old[a]);
    let n = grid.shape();
    let counts: [f64; 3] = std::array::from_fn(|a| (n[a] as f64 / ratio[a]).round().max(1.0));
    check_size(counts.map(|c| c as u64))?;
    // Centre of the first new voxel, in old voxel coordinates: half a new voxel in from the corner.
    let first = grid.voxel_to_world(ratio.map(|r| (r - 1.0) / 2.0));
    let a = grid.affine();
    let mut affine = *a;
    for r in 0..3 {
        for c in 0..3 {
            affine[r][c] = a[r][c] * ratio[c];
        }
        affine[r][3] = first[r];
    }
    Ok(Grid::new(counts.map(|c| c as usize), affine)?)
}

/// `image` trilinearly interpolated onto `target` (voxel axes parallel to the image's).
pub fn resample_image(image: &Image, target: &Grid) -> Result<Image, Error> {
    let plan = Trilinear::new(image.grid(), target)?;
    let data = fill_slices(target.shape(), Scratch::default, |scratch, k, out| {
        plan.slice(image.data(), k, scratch, out);
    });
    Ok(Volume::new(target.clone(), data))
}

/// `volume` on `target` by nearest neighbour (for label maps: values are never mixed).
pub fn resample_nearest<T: Copy + Default + Send + Sync>(
    volume: &Volume<T>,
    target: &Grid,
) -> Result<Volume<T>, Error> {
    let lines = axis_lines(volume.grid(), target)?;
    let src = volume.shape();
    let [ix, iy, iz]: [Vec<usize>; 3] = std::array::from_fn(|a| {
        let max = (src[a] - 1) as f64;
        (0..target.shape()[a]).map(|q| (lines[a].at(q) + 0.5 + TIE).floor().clamp(0.0, max) as usize).collect()
    });
    let data = volume.data();
    let (nx, nxy) = (src[0], src[0] * src[1]);
    let out = fill_slices(
        target.shape(),
        || (),
        |_, k, slice| {
            for (row, &j) in slice.chunks_exact_mut(ix.len()).zip(&iy) {
                let src_row = &data[iz[k] * nxy + j * nx..][..nx];
                for (v, &i) in row.iter_mut().zip(&ix) {
                    *v = src_row[i];
                }
            }
        },
    );
    Ok(Volume::new(target.clone(), out))
}

/// Class labels on `target` from per-class probabilities on `grid`: each class is
/// interpolated trilinearly onto `target`, then the most probable class wins (ties to
/// the lower index). This gives smoother, more faithful edges than resampling the
/// argmax with nearest neighbour. `probabilities` is channels-first, `[class][k][j][i]`;
/// labels are class indices. Only one output slice per class is held at a time.
pub fn resample_argmax(probabilities: &[f32], grid: &Grid, target: &Grid) -> Result<LabelMap, Error> {
    let voxels = grid.len();
    let len = probabilities.len();
    if len == 0 || !len.is_multiple_of(voxels) {
        return Err(Error::ChannelMismatch { len, voxels });
    }
    let classes = len / voxels;
    if classes > u16::MAX as usize + 1 {
        return Err(Error::TooManyClasses(classes));
    }
    let plan = Trilinear::new(grid, target)?;
    let plane = target.shape()[0] * target.shape()[1];
    let init = || (Scratch::default(), vec![0f32; plane], vec![0f32; plane]);
    let labels = fill_slices(target.shape(), init, |(scratch, best, current), k, labels: &mut [u16]| {
        let mut channels = probabilities.chunks_exact(voxels);
        if let Some(first) = channels.next() {
            plan.slice(first, k, scratch, best);
        }
        for (class, channel) in channels.enumerate() {
            plan.slice(channel, k, scratch, current);
            for ((label, b), &p) in labels.iter_mut().zip(best.iter_mut()).zip(current.iter()) {
                if p > *b {
                    *b = p;
                    *label = (class + 1) as u16;
                }
            }
        }
    });
    Ok(Volume::new(target.clone(), labels))
}

/// Along one axis, target voxel `q` samples source voxel coordinate `scale * q + offset`.
#[derive(Debug, Clone, Copy)]
struct Line {
    scale: f64,
    offset: f64,
}

impl Line {
    fn at(self, q: usize) -> f64 {
        self.scale * q as f64 + self.offset
    }
}

/// Per target axis, where it samples the same source axis; refuses grids whose axes are
/// not parallel (those need reorienting first) and targets over `MAX_VOXELS`.
fn axis_lines(source: &Grid, target: &Grid) -> Result<[Line; 3], Error> {
    let shape = target.shape();
    check_size(shape.map(|n| n as u64))?;
    let origin = source.world_to_voxel(target.voxel_to_world([0.0; 3]));
    let mut lines = [Line { scale: 0.0, offset: 0.0 }; 3];
    for (b, line) in lines.iter_mut().enumerate() {
        let mut unit = [0.0; 3];
        unit[b] = 1.0;
        let end = source.world_to_voxel(target.voxel_to_world(unit));
        let step: [f64; 3] = std::array::from_fn(|a| end[a] - origin[a]);
        for a in (0..3).filter(|&a| a != b) {
            let term = step[a] * (shape[b] - 1).max(1) as f64;
            if term.abs() > AXIS_TOLERANCE {
                return Err(Error::NotAxisAligned { axis: b, term });
            }
        }
        *line = Line { scale: step[b], offset: origin[b] };
    }
    Ok(lines)
}

/// Linear interpolation between source indices `lo` and `hi` with weight `w` on `hi`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    w: f32,
}

impl Tap {
    fn new(x: f64, n: usize) -> Tap {
        let x = x.clamp(0.0, (n - 1) as f64);
        let lo = x.floor() as usize;
        Tap { lo, hi: (lo + 1).min(n - 1), w: (x - lo as f64) as f32 }
    }

    #[inline]
    fn mix(self, a: f32, b: f32) -> f32 {
        // Exact at w = 0 and for constant fields, unlike a * (1 - w) + b * w.
        a + self.w * (b - a)
    }
}

/// Precomputed trilinear sampling from one grid onto another.
struct Trilinear {
    src: [usize; 3],
    taps: [Vec<Tap>; 3],
}

/// Per-thread buffers for one blended source plane and one blended row.
#[derive(Default)]
struct Scratch {
    plane: Vec<f32>,
    row: Vec<f32>,
}

impl Trilinear {
    fn new(source: &Grid, target: &Grid) -> Result<Trilinear, Error> {
        let lines = axis_lines(source, target)?;
        let src = source.shape();
        let taps = std::array::from_fn(|a| (0..target.shape()[a]).map(|q| Tap::new(lines[a].at(q), src[a])).collect());
        Ok(Trilinear { src, taps })
    }

    /// Output z-slice `k` of `data` (a volume on the source grid) into `out`.
    fn slice(&self, data: &[f32], k: usize, scratch: &mut Scratch, out: &mut [f32]) {
        let [nx, ny, _] = self.src;
        let nxy = nx * ny;
        let tz = self.taps[2][k];
        let lower = &data[tz.lo * nxy..][..nxy];
        let plane: &[f32] = if tz.w == 0.0 {
            lower
        } else {
            let upper = &data[tz.hi * nxy..][..nxy];
            scratch.plane.clear();
            scratch.plane.extend(lower.iter().zip(upper).map(|(&a, &b)| tz.mix(a, b)));
            &scratch.plane
        };
        for (out_row, &ty) in out.chunks_exact_mut(self.taps[0].len()).zip(&self.taps[1]) {
            let lower = &plane[ty.lo * nx..][..nx];
            let row: &[f32] = if ty.w == 0.0 {
                lower
            } else {
                let upper = &plane[ty.hi * nx..][..nx];
                scratch.row.clear();
                scratch.row.extend(lower.iter().zip(upper).map(|(&a, &b)| ty.mix(a, b)));
                &scratch.row
            };
            for (v, &tx) in out_row.iter_mut().zip(&self.taps[0]) {
                *v = tx.mix(row[tx.lo], row[tx.hi]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(shape: [usize; 3], spacing: [f64; 3]) -> Grid {
        let [x, y, z] = spacing;
        Grid::new(shape, [[x, 0.0, 0.0, 10.0], [0.0, y, 0.0, -20.0], [0.0, 0.0, z, 30.0], [0.0, 0.0, 0.0, 1.0]])
            .unwrap()
    }

    #[test]
    fn new_grid_keeps_the_field_of_view_corner() {
        let g = grid([10, 20, 7], [0.7, 0.7, 5.0]);
        let h = grid_with_spacing(&g, [1.4, 0.35, 2.0]).unwrap();
        assert_eq!(h.shape(), [5, 40, 18]); // 17.5 rounds to 18
        let corner = |g: &Grid| g.voxel_to_world([-0.5; 3]);
        for (a, b) in corner(&g).iter().zip(corner(&h)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert_eq!(h.spacing(), [1.4, 0.35, 2.0]);
    }

    #[test]
    fn linear_fields_are_reproduced_inside_and_clamped_outside() {
        // f = 2i + 3j - k is trilinear, so interpolation must be exact at interior points.
        let g = grid([6, 5, 4], [1.0, 1.0, 1.0]);
        let data =
            (0..4).flat_map(|k| (0..5).flat_map(move |j| (0..6).map(move |i| (2 * i + 3 * j - k) as f32))).collect();
        let image = Volume::new(g.clone(), data);
        let h = grid_with_spacing(&g, [0.5, 0.75, 2.0]).unwrap();
        let out = resample_image(&image, &h).unwrap();
        for k in 0..h.shape()[2] {
            for j in 0..h.shape()[1] {
                for i in 0..h.shape()[0] {
                    let x = g.world_to_voxel(h.voxel_to_world([i as f64, j as f64, k as f64]));
                    let c: Vec<f64> = x.iter().zip(g.shape()).map(|(&x, n)| x.clamp(0.0, (n - 1) as f64)).collect();
                    let expected = 2.0 * c[0] + 3.0 * c[1] - c[2];
                    assert!((*out.at(i, j, k) as f64 - expected).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn nearest_rounds_ties_up() {
        let g = grid([4, 1, 1], [1.0, 1.0, 1.0]);
        let labels = Volume::new(g.clone(), vec![1u16, 2, 3, 4]);
        // 2x coarser: new voxel q samples old 2q + 1/2, a tie that rounds up.
        let coarse = resample_nearest(&labels, &grid_with_spacing(&g, [2.0, 1.0, 1.0]).unwrap()).unwrap();
        assert_eq!(coarse.data(), &[2, 4]);
    }

    #[test]
    fn argmax_takes_the_most_probable_class() {
        let g = grid([2, 1, 1], [1.0, 1.0, 1.0]);
        let probabilities = [0.2, 0.5, 0.7, 0.5, 0.1, 0.0];
        let labels = resample_argmax(&probabilities, &g, &g).unwrap();
        assert_eq!(labels.data(), &[1, 0]);
        assert!(matches!(resample_argmax(&probabilities[..5], &g, &g), Err(Error::ChannelMismatch { len: 5, .. })));
    }

    #[test]
    fn refuses_non_parallel_grids() {
        let g = grid([4, 4, 4], [1.0, 1.0, 1.0]);
        let swapped = Grid::new(
            [4, 4, 4],
            [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        );
        let image = Volume::new(g.clone(), vec![0f32; 64]);
        assert!(matches!(resample_image(&image, &swapped.unwrap()), Err(Error::NotAxisAligned { axis: 0, .. })));
    }
}
