//! Gray Level Size Zone Matrix (pyradiomics' `glszm.py`, matrix of
//! `calculate_glszm`): zones of equal level connected through any of the 26
//! neighbours, counted by level and size.

use std::collections::BTreeMap;

use crate::discretise::Discrete;
use crate::texture::{angles, each_neighbour, Grid};
use crate::{Roi, EPS};

pub(crate) const NAMES: &[&str] = &[
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelZoneEmphasis",
    "LargeAreaEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LowGrayLevelZoneEmphasis",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "SmallAreaEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "ZoneEntropy",
    "ZonePercentage",
    "ZoneVariance",
];

/// (row of the level, zone size) -> number of zones.
fn zones(roi: &Roi, disc: &Discrete) -> BTreeMap<(usize, usize), f64> {
    let rows = disc.rows();
    let dirs = angles(roi.shape, &[1], true);
    let grid = Grid { shape: roi.shape };
    let offsets = grid.offsets(&dirs);
    let [_, ny, nx] = roi.shape;
    let mut todo = roi.mask.clone();
    let mut stack = Vec::new();
    let mut out = BTreeMap::new();
    for start in 0..roi.len() {
        if !todo[start] {
            continue;
        }
        let gl = disc.gl[start];
        todo[start] = false;
        stack.push(start);
        let mut size = 0usize;
        while let Some(k) = stack.pop() {
            size += 1;
            let (z, y, x) = (k / (ny * nx), (k / nx) % ny, k % nx);
            each_neighbour(&grid, &dirs, &offsets, 1, (k, z, y, x), |_, j| {
                if todo[j] && disc.gl[j] == gl {
                    todo[j] = false;
                    stack.push(j);
                }
            });
        }
        *out.entry((rows[gl as usize], size)).or_insert(0.0) += 1.0;
    }
    out
}

pub(crate) fn features(roi: &Roi, disc: &Discrete) -> Vec<(&'static str, f64)> {
    let z = zones(roi, disc);
    let n = disc.levels.len();
    let ivec: Vec<f64> = disc.levels.iter().map(|&l| l as f64).collect();
    let mut pg = vec![0.0; n];
    let mut ps: BTreeMap<usize, f64> = BTreeMap::new();
    for (&(r, s), &c) in &z {
        pg[r] += c;
        *ps.entry(s).or_insert(0.0) += c;
    }
    let nz: f64 = z.values().sum();
    let nz = if nz == 0.0 { 1.0 } else { nz };
    let np: f64 = ps.iter().map(|(&s, &c)| s as f64 * c).sum();
    let np = if np == 0.0 { 1.0 } else { np };
    let gln: f64 = pg.iter().map(|v| v * v).sum();
    let szn: f64 = ps.values().map(|v| v * v).sum();
    let u_i: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / nz * i).sum();
    let glv: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / nz * (i - u_i).powi(2)).sum();
    let u_j: f64 = ps.iter().map(|(&s, v)| v / nz * s as f64).sum();
    let zv: f64 = ps.iter().map(|(&s, v)| v / nz * (s as f64 - u_j).powi(2)).sum();
    let (mut ze, mut lahgle, mut lalgle, mut sahgle, mut salgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&(r, s), &v) in &z {
        let (i2, j2) = (ivec[r] * ivec[r], (s * s) as f64);
        let q = v / nz;
        ze += q * (q + EPS).log2();
        lahgle += v * i2 * j2;
        lalgle += v * j2 / i2;
        sahgle += v * i2 / j2;
        salgle += v / (i2 * j2);
    }
    let hgze: f64 = pg.iter().zip(&ivec).map(|(v, i)| v * i * i).sum();
    let lgze: f64 = pg.iter().zip(&ivec).map(|(v, i)| v / (i * i)).sum();
    let lae: f64 = ps.iter().map(|(&s, v)| v * (s * s) as f64).sum();
    let sae: f64 = ps.iter().map(|(&s, v)| v / (s * s) as f64).sum();
    vec![
        ("GrayLevelNonUniformity", gln / nz),
        ("GrayLevelNonUniformityNormalized", gln / (nz * nz)),
        ("GrayLevelVariance", glv),
        ("HighGrayLevelZoneEmphasis", hgze / nz),
        ("LargeAreaEmphasis", lae / nz),
        ("LargeAreaHighGrayLevelEmphasis", lahgle / nz),
        ("LargeAreaLowGrayLevelEmphasis", lalgle / nz),
        ("LowGrayLevelZoneEmphasis", lgze / nz),
        ("SizeZoneNonUniformity", szn / nz),
        ("SizeZoneNonUniformityNormalized", szn / (nz * nz)),
        ("SmallAreaEmphasis", sae / nz),
        ("SmallAreaHighGrayLevelEmphasis", sahgle / nz),
        ("SmallAreaLowGrayLevelEmphasis", salgle / nz),
        ("ZoneEntropy", -ze),
        ("ZonePercentage", nz / np),
        ("ZoneVariance", zv),
    ]
}
