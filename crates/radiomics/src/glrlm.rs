//! Gray Level Run Length Matrix (pyradiomics' `glrlm.py`, matrix of
//! `calculate_glrlm`): runs of equal level along each of 13 directions (a voxel
//! outside the mask ends a run), features per direction, NaN-ignoring mean.

use crate::discretise::Discrete;
use crate::texture::{angles, Grid};
use crate::{nanmean, Roi, EPS};

pub(crate) const NAMES: &[&str] = &[
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelRunEmphasis",
    "LongRunEmphasis",
    "LongRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LowGrayLevelRunEmphasis",
    "RunEntropy",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "RunVariance",
    "ShortRunEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "ShortRunLowGrayLevelEmphasis",
];

/// Run counts of one direction, `[row * nr + (length - 1)]`.
fn matrix(roi: &Roi, disc: &Discrete, rows: &[usize], dir: &[i64; 3], nr: usize) -> Vec<f64> {
    let n = disc.levels.len();
    let grid = Grid { shape: roi.shape };
    let back = [-dir[0], -dir[1], -dir[2]];
    let offset = grid.offsets(&[*dir])[0];
    let mut p = vec![0.0; n * nr];
    let mut multi_element = false;
    let [nz, ny, nx] = roi.shape;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                // A line starts where one step back leaves the image.
                if grid.step(z, y, x, &back).is_some() {
                    continue;
                }
                // Voxels on the line: steps until the first dimension runs out, + 1.
                let mut steps = usize::MAX;
                for (d, (idx, size)) in [z, y, x].into_iter().zip(roi.shape).enumerate() {
                    steps = steps.min(match dir[d] {
                        0 => usize::MAX,
                        a if a > 0 => (size - 1 - idx) / a as usize,
                        a => idx / (-a) as usize,
                    });
                }
                let mut j = (z * ny + y) * nx + x;
                let (mut gl, mut rl, mut elements) = (0u32, 0usize, 0usize);
                for k in 0..=steps {
                    if k > 0 {
                        j = (j as isize + offset) as usize;
                    }
                    if roi.mask[j] {
                        elements += 1;
                        let g = disc.gl[j];
                        if gl == 0 {
                            gl = g;
                        } else if g == gl {
                            rl += 1;
                        } else {
                            p[rows[gl as usize] * nr + rl] += 1.0;
                            gl = g;
                            rl = 0;
                        }
                    } else if gl != 0 {
                        p[rows[gl as usize] * nr + rl] += 1.0;
                        gl = 0;
                        rl = 0;
                    }
                }
                if gl != 0 {
                    p[rows[gl as usize] * nr + rl] += 1.0;
                }
                if elements > 1 {
                    multi_element = true;
                }
            }
        }
    }
    if !multi_element {
        // The ROI is flat along this direction: pyradiomics drops it.
        for r in 0..n {
            p[r * nr] = 0.0;
        }
    }
    p
}

pub(crate) fn features(roi: &Roi, disc: &Discrete) -> Vec<(&'static str, f64)> {
    let rows = disc.rows();
    let nr = *roi.shape.iter().max().unwrap();
    let mut mats: Vec<Vec<f64>> =
        angles(roi.shape, &[1], false).iter().map(|d| matrix(roi, disc, &rows, d, nr)).collect();
    if mats.len() > 1 {
        mats.retain(|p| p.iter().sum::<f64>() != 0.0);
    }
    let ivec: Vec<f64> = disc.levels.iter().map(|&l| l as f64).collect();
    let per_angle: Vec<[f64; 16]> = mats.iter().map(|p| one_angle(p, &ivec, nr)).collect();
    (0..NAMES.len()).map(|k| (NAMES[k], nanmean(&per_angle.iter().map(|f| f[k]).collect::<Vec<_>>()))).collect()
}

fn one_angle(p: &[f64], ivec: &[f64], nr: usize) -> [f64; 16] {
    let n = ivec.len();
    let total: f64 = p.iter().sum();
    let runs = if total == 0.0 { f64::NAN } else { total };
    let pg: Vec<f64> = (0..n).map(|i| p[i * nr..(i + 1) * nr].iter().sum()).collect();
    let pr: Vec<f64> = (0..nr).map(|j| (0..n).map(|i| p[i * nr + j]).sum()).collect();
    let jv = |j: usize| (j + 1) as f64;
    let gln = pg.iter().map(|v| v * v).sum::<f64>();
    let rln = pr.iter().map(|v| v * v).sum::<f64>();
    let np: f64 = pr.iter().enumerate().map(|(j, v)| v * jv(j)).sum();
    let u_i: f64 = pg.iter().zip(ivec).map(|(v, i)| v / runs * i).sum();
    let glv: f64 = pg.iter().zip(ivec).map(|(v, i)| v / runs * (i - u_i).powi(2)).sum();
    let u_j: f64 = pr.iter().enumerate().map(|(j, v)| v / runs * jv(j)).sum();
    let rv: f64 = pr.iter().enumerate().map(|(j, v)| v / runs * (jv(j) - u_j).powi(2)).sum();
    let (mut re, mut srlgle, mut srhgle, mut lrlgle, mut lrhgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let i2 = ivec[i] * ivec[i];
        for j in 0..nr {
            let v = p[i * nr + j];
            if v == 0.0 {
                continue;
            }
            let j2 = jv(j) * jv(j);
            let q = v / runs;
            re += q * (q + EPS).log2();
            srlgle += v / (i2 * j2);
            srhgle += v * i2 / j2;
            lrlgle += v * j2 / i2;
            lrhgle += v * (j2 * i2);
        }
    }
    let hglre: f64 = pg.iter().zip(ivec).map(|(v, i)| v * i * i).sum();
    let lglre: f64 = pg.iter().zip(ivec).map(|(v, i)| v / (i * i)).sum();
    let lre: f64 = pr.iter().enumerate().map(|(j, v)| v * jv(j) * jv(j)).sum();
    let sre: f64 = pr.iter().enumerate().map(|(j, v)| v / (jv(j) * jv(j))).sum();
    [
        gln / runs,
        gln / (runs * runs),
        glv,
        hglre / runs,
        lre / runs,
        lrhgle / runs,
        lrlgle / runs,
        lglre / runs,
        -re,
        rln / runs,
        rln / (runs * runs),
        runs / np,
        rv,
        sre / runs,
        srhgle / runs,
        srlgle / runs,
    ]
}
