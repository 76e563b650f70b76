//! What the texture classes share: the directions of `_cmatrices.c`
//! (`get_angle_count` and `build_angles`, transcribed) and neighbour lookup.

/// The offsets `[dz, dy, dx]` pyradiomics uses for an image of `size`: every offset of
/// infinity norm in `distances` that fits in the image, in `build_angles`' order;
/// the first half of them when not `bidirectional` (13 for distance 1 in 3-D).
pub(crate) fn angles(size: [usize; 3], distances: &[usize], bidirectional: bool) -> Vec<[i64; 3]> {
    let size = size.map(|s| s as i64);
    // get_angle_count
    let mut na: i64 = 0;
    for &d in distances {
        let d = d as i64;
        let (mut na_d, mut na_dd) = (1i64, 1i64);
        for &s in &size {
            if d < s {
                na_d *= 2 * d + 1;
                na_dd *= 2 * d - 1;
            } else {
                na_d *= 2 * (s - 1) + 1;
                na_dd *= 2 * (s - 1) + 1;
            }
        }
        na += na_d - na_dd;
    }
    if !bidirectional {
        na /= 2;
    }
    // build_angles
    let max_distance = distances.iter().copied().max().unwrap_or(1) as i64;
    let n_offsets = 2 * max_distance + 1;
    let stride = [n_offsets * n_offsets, n_offsets, 1];
    let mut out = Vec::with_capacity(na.max(0) as usize);
    let mut new_a_idx: i64 = 0;
    let limit = n_offsets * n_offsets * n_offsets;
    while (out.len() as i64) < na && new_a_idx < limit {
        let mut a = [0i64; 3];
        let mut a_dist = 0i64;
        for d in 0..3 {
            let offset = max_distance - (new_a_idx / stride[d]) % n_offsets;
            if offset >= size[d] || offset <= -size[d] {
                a_dist = -1;
                break;
            }
            a[d] = offset;
            a_dist = a_dist.max(offset.abs());
        }
        new_a_idx += 1;
        if a_dist < 1 {
            continue;
        }
        if distances.iter().any(|&d| d as i64 == a_dist) {
            out.push(a);
        }
    }
    out
}

/// Neighbour geometry of a cropped ROI.
pub(crate) struct Grid {
    pub shape: [usize; 3],
}

impl Grid {
    /// The index of `(z, y, x) + a` when inside the image.
    #[inline]
    pub fn step(&self, z: usize, y: usize, x: usize, a: &[i64; 3]) -> Option<usize> {
        let [nz, ny, nx] = self.shape;
        let (zz, yy, xx) = (z as i64 + a[0], y as i64 + a[1], x as i64 + a[2]);
        if zz < 0 || yy < 0 || xx < 0 || zz >= nz as i64 || yy >= ny as i64 || xx >= nx as i64 {
            return None;
        }
        Some((zz as usize * ny + yy as usize) * nx + xx as usize)
    }

    /// Linear index offsets of the directions.
    pub fn offsets(&self, dirs: &[[i64; 3]]) -> Vec<isize> {
        let [_, ny, nx] = self.shape;
        dirs.iter().map(|a| ((a[0] * ny as i64 + a[1]) * nx as i64 + a[2]) as isize).collect()
    }

    /// True when every offset of infinity norm <= `r` stays inside the image.
    #[inline]
    pub fn interior(&self, z: usize, y: usize, x: usize, r: usize) -> bool {
        let [nz, ny, nx] = self.shape;
        z >= r && y >= r && x >= r && z + r < nz && y + r < ny && x + r < nx
    }
}

/// Calls `f(a, j)` for each direction `a` whose neighbour `j` of voxel `i` at
/// `(z, y, x)` is inside the image.
#[inline]
pub(crate) fn each_neighbour(
    grid: &Grid,
    dirs: &[[i64; 3]],
    offsets: &[isize],
    reach: usize,
    (i, z, y, x): (usize, usize, usize, usize),
    mut f: impl FnMut(usize, usize),
) {
    if grid.interior(z, y, x, reach) {
        for (a, &o) in offsets.iter().enumerate() {
            f(a, (i as isize + o) as usize);
        }
    } else {
        for (a, d) in dirs.iter().enumerate() {
            if let Some(j) = grid.step(z, y, x, d) {
                f(a, j);
            }
        }
    }
}

/// Calls `f(index, z, y, x)` for every voxel of the mask, in array order.
#[inline]
pub(crate) fn each_masked(shape: [usize; 3], mask: &[bool], mut f: impl FnMut(usize, usize, usize, usize)) {
    let [nz, ny, nx] = shape;
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            for x in 0..nx {
                if mask[row + x] {
                    f(row + x, z, y, x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_and_twenty_six_directions_in_pyradiomics_order() {
        let a = angles([5, 5, 5], &[1], false);
        assert_eq!(a.len(), 13);
        assert_eq!(a[0], [1, 1, 1]);
        assert_eq!(a[12], [0, 0, 1]);
        assert_eq!(angles([5, 5, 5], &[1], true).len(), 26);
        // A flat ROI: no offset moves along a dimension of size 1.
        let flat = angles([1, 5, 5], &[1], false);
        assert_eq!(flat.len(), 4);
        assert!(flat.iter().all(|a| a[0] == 0));
        assert_eq!(angles([5, 5, 5], &[2], false).len(), 49);
    }
}
