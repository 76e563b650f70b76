//! Gray Level Dependence Matrix (pyradiomics' `gldm.py`, matrix of
//! `calculate_gldm`): for each voxel, how many of its neighbours (26 at distance 1)
//! in the mask differ from it by at most `gldm_a`.

use crate::discretise::Discrete;
use crate::texture::{angles, each_masked, each_neighbour, Grid};
use crate::{Roi, EPS};

pub(crate) const NAMES: &[&str] = &[
    "DependenceEntropy",
    "DependenceNonUniformity",
    "DependenceNonUniformityNormalized",
    "DependenceVariance",
    "GrayLevelNonUniformity",
    "GrayLevelVariance",
    "HighGrayLevelEmphasis",
    "LargeDependenceEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LowGrayLevelEmphasis",
    "SmallDependenceEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
];

pub(crate) fn features(roi: &Roi, disc: &Discrete, distances: &[usize], alpha: i64) -> Vec<(&'static str, f64)> {
    let rows = disc.rows();
    let dirs = angles(roi.shape, distances, true);
    let grid = Grid { shape: roi.shape };
    let n = disc.levels.len();
    let nd = dirs.len() + 1;
    // p[row * nd + dependence]; dependence j counts as j + 1 in the features.
    let mut p = vec![0.0; n * nd];
    let offsets = grid.offsets(&dirs);
    let reach = distances.iter().copied().max().unwrap_or(1);
    each_masked(roi.shape, &roi.mask, |i, z, y, x| {
        let g = disc.gl[i] as i64;
        let mut dep = 0usize;
        each_neighbour(&grid, &dirs, &offsets, reach, (i, z, y, x), |_, j| {
            if roi.mask[j] && (g - disc.gl[j] as i64).abs() <= alpha {
                dep += 1;
            }
        });
        p[rows[g as usize] * nd + dep] += 1.0;
    });
    let ivec: Vec<f64> = disc.levels.iter().map(|&l| l as f64).collect();
    let pg: Vec<f64> = (0..n).map(|r| p[r * nd..(r + 1) * nd].iter().sum()).collect();
    let pd: Vec<f64> = (0..nd).map(|j| (0..n).map(|r| p[r * nd + j]).sum()).collect();
    let nz: f64 = pd.iter().sum();
    let nz = if nz == 0.0 { 1.0 } else { nz };
    let jv = |j: usize| (j + 1) as f64;
    let dn: f64 = pd.iter().map(|v| v * v).sum();
    let gln: f64 = pg.iter().map(|v| v * v).sum();
    let u_i: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / nz * i).sum();
    let glv: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / nz * (i - u_i).powi(2)).sum();
    let u_j: f64 = pd.iter().enumerate().map(|(j, v)| v / nz * jv(j)).sum();
    let dv: f64 = pd.iter().enumerate().map(|(j, v)| v / nz * (jv(j) - u_j).powi(2)).sum();
    let (mut de, mut ldhgle, mut ldlgle, mut sdhgle, mut sdlgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for r in 0..n {
        let i2 = ivec[r] * ivec[r];
        for j in 0..nd {
            let v = p[r * nd + j];
            if v == 0.0 {
                continue;
            }
            let j2 = jv(j) * jv(j);
            let q = v / nz;
            de += q * (q + EPS).log2();
            ldhgle += v * (j2 * i2);
            ldlgle += v * j2 / i2;
            sdhgle += v * i2 / j2;
            sdlgle += v / (i2 * j2);
        }
    }
    let hgle: f64 = pg.iter().zip(&ivec).map(|(v, i)| v * i * i).sum();
    let lgle: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / (i * i)).sum();
    let lde: f64 = pd.iter().enumerate().map(|(j, v)| v * jv(j) * jv(j)).sum();
    let sde: f64 = pd.iter().enumerate().map(|(j, v)| v / (jv(j) * jv(j))).sum();
    vec![
        ("DependenceEntropy", -de),
        ("DependenceNonUniformity", dn / nz),
        ("DependenceNonUniformityNormalized", dn / (nz * nz)),
        ("DependenceVariance", dv),
        ("GrayLevelNonUniformity", gln / nz),
        ("GrayLevelVariance", glv),
        ("HighGrayLevelEmphasis", hgle / nz),
        ("LargeDependenceEmphasis", lde / nz),
        ("LargeDependenceHighGrayLevelEmphasis", ldhgle / nz),
        ("LargeDependenceLowGrayLevelEmphasis", ldlgle / nz),
        ("LowGrayLevelEmphasis", lgle / nz),
        ("SmallDependenceEmphasis", sde / nz),
        ("SmallDependenceHighGrayLevelEmphasis", sdhgle / nz),
        ("SmallDependenceLowGrayLevelEmphasis", sdlgle / nz),
    ]
}
