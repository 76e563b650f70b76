//! Neighbouring Gray Tone Difference Matrix (pyradiomics' `ngtdm.py`, matrix of
//! `calculate_ngtdm`): for each level, how far its voxels are from the mean of
//! their neighbours in the mask (26 at distance 1).

use crate::discretise::Discrete;
use crate::texture::{angles, each_masked, each_neighbour, Grid};
use crate::Roi;

pub(crate) const NAMES: &[&str] = &["Busyness", "Coarseness", "Complexity", "Contrast", "Strength"];

pub(crate) fn features(roi: &Roi, disc: &Discrete, distances: &[usize]) -> Vec<(&'static str, f64)> {
    let dirs = angles(roi.shape, distances, true);
    let grid = Grid { shape: roi.shape };
    let ng = disc.ng as usize;
    let (mut count, mut sdiff) = (vec![0.0f64; ng + 1], vec![0.0f64; ng + 1]);
    let offsets = grid.offsets(&dirs);
    let reach = distances.iter().copied().max().unwrap_or(1);
    each_masked(roi.shape, &roi.mask, |i, z, y, x| {
        let (mut n, mut sum) = (0.0f64, 0.0f64);
        each_neighbour(&grid, &dirs, &offsets, reach, (i, z, y, x), |_, j| {
            if roi.mask[j] {
                n += 1.0;
                sum += disc.gl[j] as f64;
            }
        });
        let g = disc.gl[i] as usize;
        let diff = if n == 0.0 { 0.0 } else { (g as f64 - sum / n).abs() };
        count[g] += 1.0;
        sdiff[g] += diff;
    });
    // Levels with voxels only.
    let levels: Vec<usize> = (1..=ng).filter(|&g| count[g] > 0.0).collect();
    let nvp: f64 = levels.iter().map(|&g| count[g]).sum();
    let p: Vec<f64> = levels.iter().map(|&g| count[g] / nvp).collect();
    let s: Vec<f64> = levels.iter().map(|&g| sdiff[g]).collect();
    let iv: Vec<f64> = levels.iter().map(|&g| g as f64).collect();
    let k = levels.len();
    let ngp = k as f64;
    let sum_s: f64 = s.iter().sum();
    let pi_si: f64 = p.iter().zip(&s).map(|(a, b)| a * b).sum();
    let coarseness = if pi_si != 0.0 { 1.0 / pi_si } else { 1e6 };
    let (mut c, mut absdiff, mut complexity, mut strength) = (0.0, 0.0, 0.0, 0.0);
    for a in 0..k {
        for b in 0..k {
            let d = iv[a] - iv[b];
            c += p[a] * p[b] * d * d;
            absdiff += (iv[a] * p[a] - iv[b] * p[b]).abs();
            let den = p[a] + p[b];
            let den = if den == 0.0 { 1.0 } else { den };
            complexity += d.abs() * (p[a] * s[a] + p[b] * s[b]) / den;
            strength += (p[a] + p[b]) * d * d;
        }
    }
    let div = ngp * (ngp - 1.0);
    let contrast = if div != 0.0 { c * sum_s / nvp / div } else { 0.0 };
    let busyness = if absdiff != 0.0 { pi_si / absdiff } else { 0.0 };
    let strength = if sum_s != 0.0 { strength / sum_s } else { 0.0 };
    vec![
        ("Busyness", busyness),
        ("Coarseness", coarseness),
        ("Complexity", complexity / nvp),
        ("Contrast", contrast),
        ("Strength", strength),
    ]
}
