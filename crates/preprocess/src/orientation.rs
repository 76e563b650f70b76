//! Exact reorientation: permute and flip voxel axes so they run along a target orientation
//! (RAS by default, as nibabel's `as_closest_canonical`), never interpolating.
//!
//! The affine is rewritten so every voxel keeps its physical position, and the
//! [`Reorientation`] record puts volumes on the reoriented grid (e.g. predicted labels)
//! back onto the input's own grid bit-exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use voxseg_volume::{Grid, Volume};

use crate::error::{expect_grid, Error};
use crate::slices::fill_slices;

/// Per voxel axis: the world axis it runs along (0 = x R/L, 1 = y A/P, 2 = z S/I) and
/// whether it runs against it (L, P, I). Written as nibabel's axis codes: "RAS", "LPS", "PIR".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Orientation([(usize, bool); 3]);

const CODES: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];

impl Default for Orientation {
    /// RAS+, nibabel's canonical orientation.
    fn default() -> Orientation {
        Orientation([(0, false), (1, false), (2, false)])
    }
}

impl FromStr for Orientation {
    type Err = Error;

    fn from_str(code: &str) -> Result<Orientation, Error> {
        let bad = || Error::BadOrientation(code.to_string());
        let letters: Vec<char> = code.chars().map(|c| c.to_ascii_uppercase()).collect();
        if letters.len() != 3 {
            return Err(bad());
        }
        let mut axes = [(0, false); 3];
        let mut seen = [false; 3];
        for (slot, letter) in axes.iter_mut().zip(letters) {
            let world = CODES.iter().position(|pair| pair.contains(&letter)).ok_or_else(bad)?;
            if std::mem::replace(&mut seen[world], true) {
                return Err(bad());
            }
            *slot = (world, letter == CODES[world][1]);
        }
        Ok(Orientation(axes))
    }
}

impl TryFrom<String> for Orientation {
    type Error = Error;

    fn try_from(code: String) -> Result<Orientation, Error> {
        code.parse()
    }
}

impl fmt::Display for Orientation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|&(world, flipped)| write!(f, "{}", CODES[world][flipped as usize]))
    }
}

impl From<Orientation> for String {
    fn from(o: Orientation) -> String {
        o.to_string()
    }
}

/// How a volume was reoriented; [`Reorientation::undo`] is the exact inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct Reorientation {
    source: Grid,
    target: Grid,
    /// For each target voxel axis: the source voxel axis it reads and whether reversed.
    axes: [(usize, bool); 3],
}

impl Reorientation {
    /// The input's own grid.
    pub fn source(&self) -> &Grid {
        &self.source
    }

    /// The reoriented grid.
    pub fn target(&self) -> &Grid {
        &self.target
    }

    /// Whether reorienting changed nothing (the volume was already in the target orientation).
    pub fn is_identity(&self) -> bool {
        self.axes == [(0, false), (1, false), (2, false)]
    }

    /// Puts a volume on the reoriented grid back onto the source grid, bit-exactly:
    /// the voxels are permuted back and the grid *is* the source grid (not recomputed).
    pub fn undo<T: Copy + Default + Send + Sync>(&self, volume: Volume<T>) -> Result<Volume<T>, Error> {
        expect_grid(volume.grid(), &self.target)?;
        if self.is_identity() {
            return Ok(Volume::new(self.source.clone(), volume.into_parts().1));
        }
        // Axis b of the target reads axis a of the source; so axis a of the source reads
        // axis b of the target, reversed exactly when the forward map was.
        let mut inverse = [(0, false); 3];
        for (b, &(a, flipped)) in self.axes.iter().enumerate() {
            inverse[a] = (b, flipped);
        }
        let data = permute(volume.data(), volume.shape(), inverse);
        Ok(Volume::new(self.source.clone(), data))
    }
}

/// Reorders and flips the voxel axes of `volume` so they run along `to`. Exact (a
/// permutation of voxels); the new affine places every voxel where it was. A volume
/// already in orientation `to` is returned untouched, without copying.
pub fn reorient<T: Copy + Default + Send + Sync>(
    volume: Volume<T>,
    to: Orientation,
) -> Result<(Volume<T>, Reorientation), Error> {
    let source = volume.grid().clone();
    let from = source.axis_directions();
    let mut axes = [(0, false); 3];
    for (slot, &(world, flipped)) in axes.iter_mut().zip(&to.0) {
        // Every world axis appears once in both orientations, so this always finds one.
        let a = from.iter().position(|&(w, _)| w == world).unwrap_or(0);
        *slot = (a, from[a].1 != flipped);
    }
    let shape_in = source.shape();
    let shape: [usize; 3] = std::array::from_fn(|b| shape_in[axes[b].0]);
    let a = source.affine();
    let mut affine = [[0.0; 4]; 4];
    affine[3][3] = 1.0;
    for r in 0..3 {
        affine[r][3] = a[r][3];
        for (b, &(src, flipped)) in axes.iter().enumerate() {
            affine[r][b] = if flipped { -a[r][src] } else { a[r][src] };
            if flipped {
                // Target index 0 is source index n - 1 along this axis.
                affine[r][3] += a[r][src] * (shape_in[src] - 1) as f64;
            }
        }
    }
    let record = Reorientation { target: Grid::new(shape, affine)?, source, axes };
    if record.is_identity() {
        let data = volume.into_parts().1;
        return Ok((Volume::new(record.source.clone(), data), record));
    }
    let data = permute(volume.data(), shape_in, axes);
    Ok((Volume::new(record.target.clone(), data), record))
}

/// Voxels of a `shape` volume read along permuted, possibly reversed axes: output axis
/// `b` walks input axis `axes[b].0`, backwards when `axes[b].1`.
fn permute<T: Copy + Default + Send + Sync>(data: &[T], shape: [usize; 3], axes: [(usize, bool); 3]) -> Vec<T> {
    let strides = [1, shape[0], shape[0] * shape[1]];
    let out_shape: [usize; 3] = std::array::from_fn(|b| shape[axes[b].0]);
    let mut base = 0isize;
    let step: [isize; 3] = std::array::from_fn(|b| {
        let (a, flipped) = axes[b];
        if flipped {
            base += ((shape[a] - 1) * strides[a]) as isize;
            -(strides[a] as isize)
        } else {
            strides[a] as isize
        }
    });
    fill_slices(
        out_shape,
        || (),
        |_, k, slice| {
            for (j, row) in slice.chunks_exact_mut(out_shape[0]).enumerate() {
                let start = base + j as isize * step[1] + k as isize * step[2];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = data[(start + i as isize * step[0]) as usize];
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_codes() {
        for code in ["RAS", "LPS", "PIR", "ial"] {
            assert_eq!(code.parse::<Orientation>().unwrap().to_string(), code.to_ascii_uppercase());
        }
        for bad in ["", "RA", "RAR", "RLS", "XYZ", "RASS"] {
            assert_eq!(bad.parse::<Orientation>(), Err(Error::BadOrientation(bad.into())));
        }
        assert_eq!(Orientation::default().to_string(), "RAS");
    }

    #[test]
    fn permutes_with_flips() {
        // 2x3x4 volume holding its own linear index.
        let shape = [2, 3, 4];
        let data: Vec<u32> = (0..24).collect();
        // Output axes: k reversed, i, j.
        let out = permute(&data, shape, [(2, true), (0, false), (1, false)]);
        let at = |i: usize, j: usize, k: usize| i + 2 * (j + 3 * k);
        for (o, &v) in out.iter().enumerate() {
            let (ok, oi, oj) = (o % 4, (o / 4) % 2, o / 8);
            assert_eq!(v as usize, at(oi, oj, 3 - ok));
        }
    }
}
