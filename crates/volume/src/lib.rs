//! CT volumes with exact geometry.
//!
//! A [`Volume`] is voxels plus the [`Grid`] (shape and voxel -> RAS affine) they live
//! on; the grid travels with the voxels through every stage, so nothing downstream
//! can lose or guess geometry. [`nifti`] reads NIfTI-1/2 (`.nii`, `.nii.gz`) with
//! nibabel's rules for choosing the affine and writes label maps that keep the
//! source image's header.

mod atomic;
mod error;
mod grid;
pub mod nifti;

pub use atomic::write_atomically;
pub use error::{Error, ErrorKind, FileError};
pub use grid::{Affine, Grid, GridError};
pub use nifti::{Dtype, Header, Nifti};

/// Largest volume voxseg will allocate for: 2^30 voxels (e.g. 1024 x 1024 x 1024,
/// or a 512 x 512 x 4096 whole-body CT). Checked against the header before any
/// voxel memory is allocated.
pub const MAX_VOXELS: u64 = 1 << 30;

/// Voxels on a grid, stored with the first voxel axis fastest (NIfTI order), so
/// the buffer is also a row-major `[D, H, W]` = `[k, j, i]` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    grid: Grid,
    data: Vec<T>,
}

/// CT intensities in Hounsfield units (scaling already applied).
pub type Image = Volume<f32>;
/// Organ labels: 0 is background.
pub type LabelMap = Volume<u16>;

impl<T> Volume<T> {
    /// Pairs voxels with their grid; the lengths must agree.
    ///
    /// # Panics
    /// If `data.len()` differs from the grid's voxel count: that is a bug in the
    /// caller, never a property of input data.
    pub fn new(grid: Grid, data: Vec<T>) -> Volume<T> {
        assert_eq!(data.len(), grid.len(), "voxel buffer does not match its grid");
        Volume { grid, data }
    }

    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    pub fn shape(&self) -> [usize; 3] {
        self.grid.shape()
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_parts(self) -> (Grid, Vec<T>) {
        (self.grid, self.data)
    }

    /// Voxel `(i, j, k)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> &T {
        &self.data[self.grid.index(i, j, k)]
    }

    /// The same grid with voxels mapped one by one.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Volume<U> {
        Volume { grid: self.grid.clone(), data: self.data.iter().map(f).collect() }
    }
}

impl LabelMap {
    /// Voxel count per label value, indexed by label (length = max label + 1).
    pub fn label_counts(&self) -> Vec<u64> {
        let max = self.data.iter().copied().max().unwrap_or(0) as usize;
        let mut counts = vec![0u64; max + 1];
        for &l in &self.data {
            counts[l as usize] += 1;
        }
        counts
    }
}
