//! Padding and cropping as one operation: a [`Window`] is a box of voxels placed on a
//! source grid, possibly reaching outside it. Applying it crops (inside) and pads (outside,
//! with a fill value); undoing it puts a volume on the window back onto the source grid.
//! The window's affine is the source's, translated by the box's start, so every voxel
//! keeps its physical position.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use voxseg_volume::{Grid, Image, Volume};

use crate::error::{check_size, expect_grid, Error};
use crate::slices::fill_slices;

/// A box of `grid().shape()` voxels whose voxel 0 is voxel `start` of the source grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    source: Grid,
    start: [i64; 3],
    grid: Grid,
}

impl Window {
    /// The box starting at source voxel `start` (may be negative: padding before).
    pub fn new(source: &Grid, start: [i64; 3], shape: [usize; 3]) -> Result<Window, Error> {
        check_size(shape.map(|n| n as u64))?;
        let mut affine = *source.affine();
        let origin = source.voxel_to_world(start.map(|s| s as f64));
        for (row, &o) in affine.iter_mut().zip(&origin) {
            row[3] = o;
        }
        Ok(Window { source: source.clone(), start, grid: Grid::new(shape, affine)? })
    }

    /// The grid volumes are on before the window is applied.
    pub fn source(&self) -> &Grid {
        &self.source
    }

    /// The window's own grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Source voxel index of the window's voxel 0.
    pub fn start(&self) -> [i64; 3] {
        self.start
    }

    /// Whether the window is the whole source grid, so applying it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.start == [0; 3] && self.grid.shape() == self.source.shape()
    }

    /// Crops/pads a volume on the source grid to the window; voxels outside the source get `fill`.
    pub fn apply<T: Copy + Default + Send + Sync>(&self, volume: Volume<T>, fill: T) -> Result<Volume<T>, Error> {
        expect_grid(volume.grid(), &self.source)?;
        if self.is_identity() {
            return Ok(Volume::new(self.grid.clone(), volume.into_parts().1));
        }
        let data = copy_box(volume.data(), self.source.shape(), self.start, self.grid.shape(), fill);
        Ok(Volume::new(self.grid.clone(), data))
    }

    /// The exact inverse of [`Window::apply`]: a volume on the window (e.g. predicted
    /// labels) back on the source grid, with `fill` where the window did not reach.
    pub fn undo<T: Copy + Default + Send + Sync>(&self, volume: Volume<T>, fill: T) -> Result<Volume<T>, Error> {
        expect_grid(volume.grid(), &self.grid)?;
        if self.is_identity() {
            return Ok(Volume::new(self.source.clone(), volume.into_parts().1));
        }
        let data = copy_box(volume.data(), self.grid.shape(), self.start.map(|s| -s), self.source.shape(), fill);
        Ok(Volume::new(self.source.clone(), data))
    }
}

/// The window padding `grid` up to the next multiple of `stride` voxels per axis, the
/// padding split evenly before and after (one more after when odd), so the anatomy stays centred.
pub fn pad_to_multiple(grid: &Grid, stride: [usize; 3]) -> Result<Window, Error> {
    if stride.contains(&0) {
        return Err(Error::BadStride(stride));
    }
    let n = grid.shape();
    let shape: [usize; 3] = std::array::from_fn(|a| n[a].div_ceil(stride[a]) * stride[a]);
    let start = std::array::from_fn(|a| -(((shape[a] - n[a]) / 2) as i64));
    Window::new(grid, start, shape)
}

/// Where the body is: voxels above `threshold_hu` (air is about -1000 HU, fat -100),
/// with `margin_mm` of context kept on every side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyCrop {
    pub threshold_hu: f32,
    pub margin_mm: f64,
}

/// The window cropping `image` to the bounding box of its body (see [`BodyCrop`]),
/// clamped to the image. An image with no voxel above the threshold is kept whole.
pub fn body_window(image: &Image, crop: &BodyCrop) -> Result<Window, Error> {
    let margin_ok = crop.margin_mm.is_finite() && crop.margin_mm >= 0.0;
    if !(crop.threshold_hu.is_finite() && margin_ok) {
        return Err(Error::BadCrop(format!("{crop:?}: threshold and margin must be finite, margin >= 0")));
    }
    let grid = image.grid();
    let n = grid.shape();
    let Some((lo, hi)) = body_box(image.data(), n, crop.threshold_hu) else {
        return Window::new(grid, [0; 3], n);
    };
    let spacing = grid.spacing();
    let mut start = [0i64; 3];
    let mut shape = [0usize; 3];
    for a in 0..3 {
        let margin = (crop.margin_mm / spacing[a]).ceil().min(n[a] as f64) as usize;
        let first = lo[a].saturating_sub(margin);
        let last = (hi[a] + margin).min(n[a] - 1);
        start[a] = first as i64;
        shape[a] = last - first + 1;
    }
    Window::new(grid, start, shape)
}

/// Inclusive bounding box `(min, max)` of voxels above `threshold`, or `None` if none is.
fn body_box(data: &[f32], shape: [usize; 3], threshold: f32) -> Option<([usize; 3], [usize; 3])> {
    let [nx, ny, _] = shape;
    data.par_chunks(nx * ny)
        .enumerate()
        .filter_map(|(k, slice)| {
            let mut found: Option<([usize; 3], [usize; 3])> = None;
            for (j, row) in slice.chunks_exact(nx).enumerate() {
                let Some(first) = row.iter().position(|&v| v > threshold) else { continue };
                let last = row.iter().rposition(|&v| v > threshold).unwrap_or(first);
                let (lo, hi) = found.get_or_insert(([first, j, k], [last, j, k]));
                lo[0] = lo[0].min(first);
                hi[0] = hi[0].max(last);
                hi[1] = j;
            }
            found
        })
        .reduce_with(|(lo_a, hi_a), (lo_b, hi_b)| {
            (std::array::from_fn(|a| lo_a[a].min(lo_b[a])), std::array::from_fn(|a| hi_a[a].max(hi_b[a])))
        })
}

/// `out[o] = src[o + offset]` over an `out_shape` box, `fill` where that falls outside `src`.
fn copy_box<T: Copy + Default + Send + Sync>(
    src: &[T],
    src_shape: [usize; 3],
    offset: [i64; 3],
    out_shape: [usize; 3],
    fill: T,
) -> Vec<T> {
    // Range of output indices along an axis whose source index lies inside the source.
    let inside = |a: usize| {
        let lo = (-offset[a]).clamp(0, out_shape[a] as i64) as usize;
        let hi = (src_shape[a] as i64 - offset[a]).clamp(lo as i64, out_shape[a] as i64) as usize;
        lo..hi
    };
    let (xs, ys, zs) = (inside(0), inside(1), inside(2));
    let [nx, ny, _] = src_shape;
    let src_index = |i: usize, a: usize| (i as i64 + offset[a]) as usize;
    fill_slices(
        out_shape,
        || (),
        |_, k, slice| {
            slice.fill(fill);
            if !zs.contains(&k) || xs.is_empty() {
                return;
            }
            let src_slice = &src[src_index(k, 2) * nx * ny..][..nx * ny];
            for j in ys.clone() {
                let src_row = &src_slice[src_index(j, 1) * nx..][..nx];
                let out_row = &mut slice[j * out_shape[0]..][..out_shape[0]];
                out_row[xs.clone()].copy_from_slice(&src_row[src_index(xs.start, 0)..][..xs.len()]);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(shape: [usize; 3]) -> Grid {
        Grid::new(shape, [[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
            .unwrap()
    }

    #[test]
    fn pads_evenly_and_undoes_exactly() {
        let g = grid([5, 4, 3]);
        let volume = Volume::new(g.clone(), (1..=60).collect::<Vec<u16>>());
        let window = pad_to_multiple(&g, [4, 4, 4]).unwrap();
        assert_eq!(window.grid().shape(), [8, 4, 4]);
        assert_eq!(window.start(), [-1, 0, 0]);
        let padded = window.apply(volume.clone(), 0).unwrap();
        // Source voxel (0,0,0) is now at (1,0,0), one x-step (2 mm) into the window.
        assert_eq!(*padded.at(1, 0, 0), 1);
        assert_eq!(*padded.at(0, 0, 0), 0);
        assert_eq!(padded.grid().voxel_to_world([1.0, 0.0, 0.0]), g.voxel_to_world([0.0; 3]));
        assert_eq!(window.undo(padded, 0).unwrap(), volume);
    }

    #[test]
    fn crops_to_the_body_with_a_margin() {
        let g = grid([10, 10, 10]);
        let mut image = Volume::new(g.clone(), vec![-1000f32; 1000]);
        *image.data_mut().get_mut(g.index(4, 5, 6)).unwrap() = 40.0;
        *image.data_mut().get_mut(g.index(6, 5, 7)).unwrap() = 40.0;
        let crop = BodyCrop { threshold_hu: -500.0, margin_mm: 3.0 }; // 2 voxels in x/y, 1 in z
        let window = body_window(&image, &crop).unwrap();
        assert_eq!(window.start(), [2, 3, 5]);
        assert_eq!(window.grid().shape(), [7, 5, 4]);
        let cropped = window.apply(image.clone(), -1000.0).unwrap();
        assert_eq!(*cropped.at(2, 2, 1), 40.0);
        assert_eq!(window.undo(cropped, -1000.0).unwrap(), image);
        let empty = Volume::new(g.clone(), vec![-1000f32; 1000]);
        assert!(body_window(&empty, &crop).unwrap().is_identity());
    }
}
