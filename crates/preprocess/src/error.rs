use voxseg_volume::GridError;

/// Why a preprocessing stage refused its input. Every variant names the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("orientation code {0:?} is not one letter from each of R/L, A/P, S/I (e.g. \"RAS\", \"LPS\", \"PIR\")")]
    BadOrientation(String),
    #[error("target spacing along voxel axis {axis} is {value} mm; it must be finite and positive")]
    BadTargetSpacing { axis: usize, value: f64 },
    #[error("the output grid {shape:?} would hold {voxels} voxels, over voxseg's limit of {limit} (MAX_VOXELS)")]
    TooLarge { shape: [u64; 3], voxels: u128, limit: u64 },
    #[error(
        "target voxel axis {axis} is not parallel to the source's voxel axis {axis} \
         (off-axis term {term:e} voxels); reorient both grids to the same orientation first"
    )]
    NotAxisAligned { axis: usize, term: f64 },
    #[error("volume is on grid {got}, but this step expects grid {expected}")]
    GridMismatch { expected: String, got: String },
    #[error("probability buffer holds {len} values: not a whole, positive number of channels of {voxels} voxels")]
    ChannelMismatch { len: usize, voxels: usize },
    #[error("{0} classes do not fit in a u16 label map")]
    TooManyClasses(usize),
    #[error("stride {0:?} must be positive along every axis")]
    BadStride([usize; 3]),
    #[error("invalid intensity settings: {0}")]
    BadIntensity(String),
    #[error("invalid body crop settings: {0}")]
    BadCrop(String),
    #[error("invalid output geometry: {0}")]
    Grid(#[from] GridError),
}

/// Short human description of a grid for error messages.
pub(crate) fn describe(grid: &voxseg_volume::Grid) -> String {
    let s = grid.spacing();
    format!("{:?} at {:.4}x{:.4}x{:.4} mm {}", grid.shape(), s[0], s[1], s[2], grid.orientation())
}

/// `Err(GridMismatch)` unless `got` is `expected` (shape equal, affine within 1e-6 mm).
pub(crate) fn expect_grid(got: &voxseg_volume::Grid, expected: &voxseg_volume::Grid) -> Result<(), Error> {
    if got.matches(expected, 1e-6) {
        Ok(())
    } else {
        Err(Error::GridMismatch { expected: describe(expected), got: describe(got) })
    }
}

/// `Err(TooLarge)` when a grid of `shape` would exceed `voxseg_volume::MAX_VOXELS`; checked before allocating.
pub(crate) fn check_size(shape: [u64; 3]) -> Result<(), Error> {
    let voxels = shape.iter().fold(1u128, |acc, &n| acc.saturating_mul(n as u128));
    if voxels > voxseg_volume::MAX_VOXELS as u128 {
        return Err(Error::TooLarge { shape, voxels, limit: voxseg_volume::MAX_VOXELS });
    }
    Ok(())
}
