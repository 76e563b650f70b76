//! Training patches: a crop of a volume seen through a small rotation and scaling,
//! drawn in one resampling step (trilinear for intensities, nearest for labels) so
//! the image and its labels stay voxel-aligned.

/// Where and how to cut one patch out of a `[nx, ny, nz]` volume (x fastest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patch {
    /// The patch centre in source voxel coordinates.
    pub centre: [f64; 3],
    /// Patch size in voxels.
    pub size: [usize; 3],
    /// Rotation in the plane of the first two axes (the axial plane in RAS), radians.
    /// A rotation, never a mirror: left and right organs keep their sides.
    pub rotation: f64,
    /// > 1 shows more anatomy in the patch (objects look smaller).
    pub scale: f64,
}

/// The patch's intensities and labels; outside the source they are `fill` and 0.
pub fn sample_patch(
    image: &[f32],
    labels: &[u16],
    shape: [usize; 3],
    patch: &Patch,
    fill: f32,
) -> (Vec<f32>, Vec<u16>) {
    let [nx, ny, nz] = shape;
    assert_eq!(image.len(), nx * ny * nz, "image does not match its shape");
    assert_eq!(labels.len(), image.len(), "labels do not match the image");
    let [sx, sy, sz] = patch.size;
    let (sin, cos) = patch.rotation.sin_cos();
    let half = |n: usize| (n as f64 - 1.0) / 2.0;
    let at = |x: usize, y: usize, z: usize| x + nx * (y + ny * z);
    let mut out_image = Vec::with_capacity(sx * sy * sz);
    let mut out_labels = Vec::with_capacity(sx * sy * sz);
    for z in 0..sz {
        for y in 0..sy {
            for x in 0..sx {
                let (dx, dy, dz) = (x as f64 - half(sx), y as f64 - half(sy), z as f64 - half(sz));
                let p = [
                    patch.centre[0] + patch.scale * (cos * dx - sin * dy),
                    patch.centre[1] + patch.scale * (sin * dx + cos * dy),
                    patch.centre[2] + patch.scale * dz,
                ];
                let nearest = p.map(|c| c.round());
                let inside = |c: f64, n: usize| c >= 0.0 && c <= (n - 1) as f64;
                out_labels.push(if inside(nearest[0], nx) && inside(nearest[1], ny) && inside(nearest[2], nz) {
                    labels[at(nearest[0] as usize, nearest[1] as usize, nearest[2] as usize)]
                } else {
                    0
                });
                out_image.push(if inside(p[0], nx) && inside(p[1], ny) && inside(p[2], nz) {
                    trilinear(image, shape, p, &at)
                } else {
                    fill
                });
            }
        }
    }
    (out_image, out_labels)
}

fn trilinear(image: &[f32], shape: [usize; 3], p: [f64; 3], at: &impl Fn(usize, usize, usize) -> usize) -> f32 {
    let lo: [usize; 3] = std::array::from_fn(|a| (p[a].floor() as usize).min(shape[a] - 1));
    let hi: [usize; 3] = std::array::from_fn(|a| (lo[a] + 1).min(shape[a] - 1));
    let f: [f64; 3] = std::array::from_fn(|a| p[a] - lo[a] as f64);
    let mut sum = 0.0;
    for (cz, wz) in [(lo[2], 1.0 - f[2]), (hi[2], f[2])] {
        for (cy, wy) in [(lo[1], 1.0 - f[1]), (hi[1], f[1])] {
            for (cx, wx) in [(lo[0], 1.0 - f[0]), (hi[0], f[0])] {
                sum += wx * wy * wz * f64::from(image[at(cx, cy, cz)]);
            }
        }
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(shape: [usize; 3]) -> (Vec<f32>, Vec<u16>) {
        let n = shape.iter().product();
        ((0..n).map(|i| i as f32).collect(), (0..n).map(|i| (i % 5) as u16).collect())
    }

    #[test]
    fn the_identity_patch_is_the_volume() {
        let shape = [6, 5, 4];
        let (image, labels) = volume(shape);
        let patch = Patch { centre: [2.5, 2.0, 1.5], size: shape, rotation: 0.0, scale: 1.0 };
        assert_eq!(sample_patch(&image, &labels, shape, &patch, -1.0), (image, labels));
    }

    #[test]
    fn a_quarter_turn_maps_x_onto_y_and_keeps_labels_on_their_voxels() {
        let shape = [5, 5, 1];
        let (image, labels) = volume(shape);
        let patch = Patch { centre: [2.0, 2.0, 0.0], size: shape, rotation: std::f64::consts::FRAC_PI_2, scale: 1.0 };
        let (rotated, rotated_labels) = sample_patch(&image, &labels, shape, &patch, -1.0);
        // Output (x, y) samples source (2 - (y - 2), 2 + (x - 2)) = (4 - y, x).
        for y in 0..5 {
            for x in 0..5 {
                let src = (4 - y) + 5 * x;
                assert!((rotated[x + 5 * y] - image[src]).abs() < 1e-4);
                assert_eq!(rotated_labels[x + 5 * y], labels[src]);
            }
        }
    }

    #[test]
    fn scaling_and_leaving_the_volume() {
        let shape = [8, 1, 1];
        let (image, labels) = volume(shape);
        let patch = Patch { centre: [3.5, 0.0, 0.0], size: [8, 1, 1], rotation: 0.0, scale: 2.0 };
        let (out, out_labels) = sample_patch(&image, &labels, shape, &patch, -1.0);
        // Samples x = 3.5 + 2 (i - 3.5) = -3.5, -1.5, 0.5, ..., 10.5.
        assert_eq!(out, vec![-1.0, -1.0, 0.5, 2.5, 4.5, 6.5, -1.0, -1.0]);
        // Nearest rounds half away from zero: 0.5 -> 1, 2.5 -> 3, ...
        assert_eq!(out_labels, vec![0, 0, 1, 3, 0, 2, 0, 0]);
    }
}
