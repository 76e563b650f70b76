//! Exact Euclidean distance transform with anisotropic spacing (Felzenszwalb and
//! Huttenlocher's lower envelope of parabolas, one axis at a time).

use rayon::prelude::*;

/// Squared distance in mm2 from every voxel to the nearest `feature` voxel
/// (infinite when there is none). `shape` is `[nx, ny, nz]`, x fastest.
pub fn squared_edt(feature: &[bool], shape: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let [nx, ny, nz] = shape;
    let mut d: Vec<f64> = feature.iter().map(|&f| if f { 0.0 } else { f64::INFINITY }).collect();
    // Along x: contiguous rows.
    d.par_chunks_mut(nx).for_each(|row| envelope_in_place(row, spacing[0] * spacing[0], &mut Scratch::new(nx)));
    // Along y: each z-slice on its own, gathering columns.
    d.par_chunks_mut(nx * ny).for_each(|slice| {
        let mut s = Scratch::new(ny);
        let mut line = vec![0.0; ny];
        for i in 0..nx {
            for j in 0..ny {
                line[j] = slice[i + nx * j];
            }
            envelope_in_place(&mut line, spacing[1] * spacing[1], &mut s);
            for j in 0..ny {
                slice[i + nx * j] = line[j];
            }
        }
    });
    // Along z: lines across slices, split over the x*y positions.
    let plane = nx * ny;
    let columns: Vec<Vec<f64>> = (0..plane)
        .into_par_iter()
        .map_init(
            || Scratch::new(nz),
            |s, p| {
                let mut line: Vec<f64> = (0..nz).map(|k| d[p + plane * k]).collect();
                envelope_in_place(&mut line, spacing[2] * spacing[2], s);
                line
            },
        )
        .collect();
    for (p, line) in columns.into_iter().enumerate() {
        for (k, v) in line.into_iter().enumerate() {
            d[p + plane * k] = v;
        }
    }
    d
}

struct Scratch {
    v: Vec<usize>,
    z: Vec<f64>,
    out: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch { v: vec![0; n], z: vec![0.0; n + 1], out: vec![0.0; n] }
    }
}

/// `f[q] <- min_p f[p] + w (q - p)^2`, skipping infinite samples.
fn envelope_in_place(f: &mut [f64], w: f64, s: &mut Scratch) {
    let n = f.len();
    let Some(first) = f.iter().position(|v| v.is_finite()) else { return };
    let (v, z) = (&mut s.v, &mut s.z);
    let mut k = 0;
    v[0] = first;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let key = |q: usize| f[q] + w * (q * q) as f64;
    for (q, _) in f.iter().enumerate().skip(first + 1).filter(|(_, v)| v.is_finite()) {
        loop {
            let p = v[k];
            let cross = (key(q) - key(p)) / (2.0 * w * (q - p) as f64);
            if cross <= z[k] && k > 0 {
                k -= 1;
                continue;
            }
            if cross <= z[k] {
                // k == 0 and the new parabola dominates everywhere: replace it.
                v[0] = q;
                z[1] = f64::INFINITY;
                break;
            }
            k += 1;
            v[k] = q;
            z[k] = cross;
            z[k + 1] = f64::INFINITY;
            break;
        }
    }
    let mut k = 0;
    for q in 0..n {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f64 - p as f64;
        s.out[q] = w * dq * dq + f[p];
    }
    f.copy_from_slice(&s.out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all feature voxels.
    fn brute(feature: &[bool], [nx, ny, _]: [usize; 3], s: [f64; 3]) -> Vec<f64> {
        let pos = |n: usize| [n % nx, (n / nx) % ny, n / (nx * ny)];
        (0..feature.len())
            .map(|a| {
                let pa = pos(a);
                (0..feature.len())
                    .filter(|&b| feature[b])
                    .map(|b| {
                        let pb = pos(b);
                        (0..3).map(|x| ((pa[x] as f64 - pb[x] as f64) * s[x]).powi(2)).sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_with_anisotropic_spacing() {
        let shape = [7, 5, 6];
        let mut seed = 12345u64;
        let feature: Vec<bool> = (0..210)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33).is_multiple_of(13)
            })
            .collect();
        let spacing = [0.7, 1.3, 2.9];
        let got = squared_edt(&feature, shape, spacing);
        let want = brute(&feature, shape, spacing);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{g} vs {w}");
        }
        assert!(squared_edt(&[false; 8], [2, 2, 2], [1.0; 3]).iter().all(|v| v.is_infinite()));
    }
}
