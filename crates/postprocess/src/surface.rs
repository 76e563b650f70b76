//! Surface area of a label by marching cubes at level 0.5 on the zero-padded mask,
//! with skimage's Lewiner triangulation, so areas equal
//! `mesh_surface_area(*marching_cubes(np.pad(mask, 1), 0.5, spacing=spacing)[:2])`.
//!
//! Every 2x2x2 cube contributes the area of its configuration's triangles, so the
//! mesh is never built: count the configurations, weigh each by its area.

use rayon::prelude::*;

use crate::mc_table::TRIANGLES;

/// Area in mm2 of each cube configuration's triangles for this voxel spacing.
fn configuration_areas(spacing: [f64; 3]) -> [f64; 256] {
    std::array::from_fn(|c| {
        TRIANGLES[c]
            .iter()
            .map(|tri| {
                let p = tri.map(|v| std::array::from_fn::<f64, 3, _>(|a| f64::from(v[a]) * 0.5 * spacing[a]));
                let u: [f64; 3] = std::array::from_fn(|a| p[1][a] - p[0][a]);
                let w: [f64; 3] = std::array::from_fn(|a| p[2][a] - p[0][a]);
                let n = [u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]];
                0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt()
            })
            .sum()
    })
}

/// Surface area in mm2 of the voxels equal to `label` inside the inclusive voxel box
/// `(lo, hi)` that holds all of them; `spacing` is the voxel size per axis in mm.
pub fn surface_area_mm2(
    data: &[u16],
    shape: [usize; 3],
    label: u16,
    (lo, hi): ([usize; 3], [usize; 3]),
    spacing: [f64; 3],
) -> f64 {
    let [nx, ny, nz] = shape;
    let inside = |i: isize, j: isize, k: isize| {
        i >= 0
            && j >= 0
            && k >= 0
            && (i as usize) < nx
            && (j as usize) < ny
            && (k as usize) < nz
            && data[i as usize + nx * (j as usize + ny * k as usize)] == label
    };
    // Cube origins run from one voxel before the box to its last voxel: the padding.
    let range = |a: usize| (lo[a] as isize - 1)..=(hi[a] as isize);
    let counts = range(2)
        .into_par_iter()
        .fold(
            || [0u64; 256],
            |mut counts, k| {
                for j in range(1) {
                    for i in range(0) {
                        let mut config = 0usize;
                        for bit in 0..8 {
                            let (di, dj, dk) = (bit & 1, bit >> 1 & 1, bit >> 2 & 1);
                            if inside(i + di, j + dj, k + dk) {
                                config |= 1 << bit;
                            }
                        }
                        counts[config] += 1;
                    }
                }
                counts
            },
        )
        .reduce(|| [0u64; 256], |a, b| std::array::from_fn(|c| a[c] + b[c]));
    let areas = configuration_areas(spacing);
    counts.iter().zip(areas).map(|(&n, a)| n as f64 * a).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_voxel_is_an_octahedron() {
        // Marching cubes at 0.5 around one voxel: 8 triangles with vertices at the
        // face-adjacent edge midpoints, each equilateral with side sqrt(0.5).
        let data = [1u16];
        let area = surface_area_mm2(&data, [1, 1, 1], 1, ([0; 3], [0; 3]), [1.0; 3]);
        let side2: f64 = 0.5;
        let expected = 8.0 * 3f64.sqrt() / 4.0 * side2;
        assert!((area - expected).abs() < 1e-12, "{area} vs {expected}");
        // Anisotropic spacing scales it; doubling all axes multiplies area by 4.
        let doubled = surface_area_mm2(&data, [1, 1, 1], 1, ([0; 3], [0; 3]), [2.0; 3]);
        assert!((doubled - 4.0 * expected).abs() < 1e-12);
    }
}
