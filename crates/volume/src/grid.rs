//! The voxel grid: shape plus the 4x4 affine that maps voxel indices to RAS millimetres.
//!
//! Convention (NIfTI's): voxel `(i, j, k)` is the *centre* of a voxel, and its physical
//! position is `affine * [i, j, k, 1]`. Data is stored with `i` fastest.

use thiserror::Error;

/// Row-major 4x4 voxel -> RAS (mm) transform.
pub type Affine = [[f64; 4]; 4];

/// Why an affine cannot describe a usable grid.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GridError {
    #[error("shape {0:?} has an empty axis")]
    EmptyShape([usize; 3]),
    #[error("affine has non-finite entries (NaN or infinite spacing or origin)")]
    NonFiniteAffine,
    #[error("spacing along voxel axis {axis} is {value} mm; it must be positive")]
    BadSpacing { axis: usize, value: f64 },
    #[error("affine is singular (determinant {0:e}): voxel axes are not independent")]
    SingularAffine(f64),
}

/// Shape and voxel -> world geometry of a 3-D volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    shape: [usize; 3],
    affine: Affine,
}

impl Grid {
    /// A grid, validated: non-empty, finite, positive spacing, invertible.
    pub fn new(shape: [usize; 3], affine: Affine) -> Result<Grid, GridError> {
        if shape.contains(&0) {
            return Err(GridError::EmptyShape(shape));
        }
        if affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(GridError::NonFiniteAffine);
        }
        let grid = Grid { shape, affine };
        for (axis, &value) in grid.spacing().iter().enumerate() {
            if value <= 0.0 {
                return Err(GridError::BadSpacing { axis, value });
            }
        }
        let det = det3(&grid.linear());
        // Relative to the spacing, so sub-millimetre grids are not called singular.
        let scale: f64 = grid.spacing().iter().product();
        if det.abs() <= scale * 1e-9 {
            return Err(GridError::SingularAffine(det));
        }
        Ok(grid)
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn affine(&self) -> &Affine {
        &self.affine
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Never true for a validated grid; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Linear index of voxel `(i, j, k)` (`i` fastest).
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.shape[0] * (j + self.shape[1] * k)
    }

    /// The affine's upper-left 3x3 (rotation x zoom).
    pub fn linear(&self) -> [[f64; 3]; 3] {
        let a = &self.affine;
        [[a[0][0], a[0][1], a[0][2]], [a[1][0], a[1][1], a[1][2]], [a[2][0], a[2][1], a[2][2]]]
    }

    /// Voxel size in mm along each voxel axis: the norms of the affine's columns.
    pub fn spacing(&self) -> [f64; 3] {
        let m = self.linear();
        std::array::from_fn(|c| (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt())
    }

    /// Volume of one voxel in mm3: |det| of the affine's 3x3 (exact for oblique grids).
    pub fn voxel_volume_mm3(&self) -> f64 {
        det3(&self.linear()).abs()
    }

    /// Physical RAS position (mm) of a (possibly fractional) voxel coordinate.
    pub fn voxel_to_world(&self, v: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        std::array::from_fn(|r| a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3])
    }

    /// Voxel coordinate (fractional) of a physical RAS position.
    pub fn world_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let inv = inv3(&self.linear());
        let d: [f64; 3] = std::array::from_fn(|r| p[r] - self.affine[r][3]);
        std::array::from_fn(|r| inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2])
    }

    /// For each voxel axis: the world axis (0 = x/R, 1 = y/A, 2 = z/S) it runs closest
    /// to, and whether it runs against that world axis. Same algorithm as nibabel's
    /// `io_orientation`: the nearest orthogonal matrix, then a greedy pick of the
    /// largest entry per column, so oblique grids get the same answer as nibabel.
    pub fn axis_directions(&self) -> [(usize, bool); 3] {
        let spacing = self.spacing();
        let m = self.linear();
        let rs: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| m[r][c] / spacing[c]));
        let mut r = nearest_orthogonal(rs);
        let mut out = [(0, false); 3];
        for (in_ax, slot) in out.iter_mut().enumerate() {
            let mut best = 0;
            for row in 1..3 {
                if r[row][in_ax].abs() > r[best][in_ax].abs() {
                    best = row;
                }
            }
            *slot = (best, r[best][in_ax] < 0.0);
            r[best] = [0.0; 3];
        }
        out
    }

    /// Axis codes as nibabel's `aff2axcodes`, joined: "RAS", "LPS", "PIR", ...
    pub fn orientation(&self) -> String {
        const CODES: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        self.axis_directions().iter().map(|&(axis, flipped)| CODES[axis][flipped as usize]).collect()
    }

    /// Same shape and the same affine within `tol_mm` per entry.
    pub fn matches(&self, other: &Grid, tol_mm: f64) -> bool {
        self.shape == other.shape
            && self.affine.iter().flatten().zip(other.affine.iter().flatten()).all(|(a, b)| (a - b).abs() <= tol_mm)
    }
}

pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let d = det3(m);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2) / d, -c(0, 1, 2, 2) / d, c(0, 1, 1, 2) / d],
        [-c(1, 0, 2, 2) / d, c(0, 0, 2, 2) / d, -c(0, 0, 1, 2) / d],
        [c(1, 0, 2, 1) / d, -c(0, 0, 2, 1) / d, c(0, 0, 1, 1) / d],
    ]
}

/// Orthogonal polar factor of an invertible matrix (what nibabel gets from `U @ Vh`
/// of the SVD), by Newton's iteration X <- (X + X^-T) / 2, which converges
/// quadratically for any invertible start.
fn nearest_orthogonal(mut x: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    for _ in 0..100 {
        let inv = inv3(&x);
        let next: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| 0.5 * (x[r][c] + inv[c][r])));
        let change: f64 = next.iter().flatten().zip(x.iter().flatten()).map(|(a, b)| (a - b).abs()).sum();
        x = next;
        if change < 1e-15 {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(sx: f64, sy: f64, sz: f64) -> Affine {
        [[sx, 0.0, 0.0, 1.0], [0.0, sy, 0.0, 2.0], [0.0, 0.0, sz, 3.0], [0.0, 0.0, 0.0, 1.0]]
    }

    #[test]
    fn orientation_codes_follow_axis_signs() {
        assert_eq!(Grid::new([2, 2, 2], diag(1.0, 1.0, 1.0)).unwrap().orientation(), "RAS");
        assert_eq!(Grid::new([2, 2, 2], diag(-1.0, -1.0, 1.0)).unwrap().orientation(), "LPS");
        // Permuted: voxel i runs along -y (P), j along -z (I), k along +x (R).
        let pir = [[0.0, 0.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(Grid::new([2, 2, 2], pir).unwrap().orientation(), "PIR");
    }

    #[test]
    fn world_and_voxel_round_trip() {
        let g = Grid::new([4, 5, 6], diag(0.7, -0.8, 2.5)).unwrap();
        let w = g.voxel_to_world([1.5, 2.0, 3.25]);
        let v = g.world_to_voxel(w);
        for (a, b) in v.iter().zip([1.5, 2.0, 3.25]) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!((g.voxel_volume_mm3() - 0.7 * 0.8 * 2.5).abs() < 1e-12);
    }

    #[test]
    fn rejects_degenerate_geometry() {
        assert_eq!(Grid::new([2, 2, 2], diag(1.0, 0.0, 1.0)), Err(GridError::BadSpacing { axis: 1, value: 0.0 }));
        assert_eq!(Grid::new([2, 2, 2], diag(f64::NAN, 1.0, 1.0)), Err(GridError::NonFiniteAffine));
        let mut parallel = diag(1.0, 1.0, 1.0);
        parallel[0][1] = 1.0;
        parallel[1][1] = 0.0;
        assert!(matches!(Grid::new([2, 2, 2], parallel), Err(GridError::SingularAffine(_))));
        assert_eq!(Grid::new([0, 2, 2], diag(1.0, 1.0, 1.0)), Err(GridError::EmptyShape([0, 2, 2])));
    }
}
