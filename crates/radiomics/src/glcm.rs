//! Gray Level Co-occurrence Matrix (pyradiomics' `glcm.py`, matrix of
//! `calculate_glcm`): one matrix per direction (13 for distance 1), symmetrised,
//! normalised, features per direction and their NaN-ignoring mean.

use crate::discretise::Discrete;
use crate::linalg::symmetric_eigenvalues;
use crate::texture::{angles, each_masked, each_neighbour, Grid};
use crate::{nanmean, Roi, EPS};

pub(crate) const NAMES: &[&str] = &[
    "Autocorrelation",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "Id",
    "Idm",
    "Idmn",
    "Idn",
    "Imc1",
    "Imc2",
    "InverseVariance",
    "JointAverage",
    "JointEnergy",
    "JointEntropy",
    "MCC",
    "MaximumProbability",
    "SumAverage",
    "SumEntropy",
    "SumSquares",
];

/// Per-direction co-occurrence counts over the present gray levels, `[a][i * n + j]`.
fn matrices(roi: &Roi, disc: &Discrete, distances: &[usize]) -> Vec<Vec<f64>> {
    let dirs = angles(roi.shape, distances, false);
    let rows = disc.rows();
    let n = disc.levels.len();
    let grid = Grid { shape: roi.shape };
    let offsets = grid.offsets(&dirs);
    let reach = distances.iter().copied().max().unwrap_or(1);
    let mut p = vec![vec![0.0; n * n]; dirs.len()];
    each_masked(roi.shape, &roi.mask, |i, z, y, x| {
        let gi = rows[disc.gl[i] as usize];
        each_neighbour(&grid, &dirs, &offsets, reach, (i, z, y, x), |a, j| {
            if roi.mask[j] {
                p[a][gi * n + rows[disc.gl[j] as usize]] += 1.0;
            }
        });
    });
    p
}

pub(crate) fn features(roi: &Roi, disc: &Discrete, distances: &[usize], symmetric: bool) -> Vec<(&'static str, f64)> {
    let n = disc.levels.len();
    let mut mats = matrices(roi, disc, distances);
    if symmetric {
        for p in &mut mats {
            for i in 0..n {
                for j in (i + 1)..n {
                    let s = p[i * n + j] + p[j * n + i];
                    p[i * n + j] = s;
                    p[j * n + i] = s;
                }
                p[i * n + i] *= 2.0;
            }
        }
    }
    if mats.len() > 1 {
        mats.retain(|p| p.iter().sum::<f64>() != 0.0);
    }
    let g: Vec<f64> = disc.levels.iter().map(|&l| l as f64).collect();
    let ng = disc.ng as usize;
    let per_angle: Vec<[f64; 24]> = mats
        .iter_mut()
        .map(|p| {
            let total: f64 = p.iter().sum();
            let total = if total == 0.0 { f64::NAN } else { total };
            p.iter_mut().for_each(|v| *v /= total);
            one_angle(p, &g, ng)
        })
        .collect();
    let mut out = Vec::with_capacity(NAMES.len());
    for (k, &name) in NAMES.iter().enumerate() {
        let column: Vec<f64> = per_angle.iter().map(|f| f[k]).collect();
        let v = if name == "JointAverage" {
            // pyradiomics takes a plain mean here.
            column.iter().sum::<f64>() / column.len() as f64
        } else if name == "MCC" && n < 2 {
            1.0 // flat region
        } else {
            nanmean(&column)
        };
        out.push((name, v));
    }
    out
}

/// The features of one normalised matrix, in `NAMES` order.
fn one_angle(p: &[f64], g: &[f64], ng: usize) -> [f64; 24] {
    let n = g.len();
    let at = |i: usize, j: usize| p[i * n + j];
    let px: Vec<f64> = (0..n).map(|i| (0..n).map(|j| at(i, j)).sum()).collect();
    let py: Vec<f64> = (0..n).map(|j| (0..n).map(|i| at(i, j)).sum()).collect();
    let mut ux = 0.0;
    let mut uy = 0.0;
    for i in 0..n {
        for j in 0..n {
            ux += g[i] * at(i, j);
            uy += g[j] * at(i, j);
        }
    }
    // p_{x+y}(k), k = 2..=2 Ng, and p_{x-y}(k), k = 0..Ng.
    let mut padd = vec![0.0; 2 * ng.max(1) - 1];
    let mut psub = vec![0.0; ng.max(1)];
    let (mut ac, mut cp, mut cs, mut ct, mut contrast) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sigx2, mut sigy2, mut corm) = (0.0, 0.0, 0.0);
    let (mut energy, mut hxy, mut hxy1, mut hxy2, mut maxp, mut ss) = (0.0, 0.0, 0.0, 0.0, 0.0f64, 0.0);
    for i in 0..n {
        for j in 0..n {
            let v = at(i, j);
            let (gi, gj) = (g[i], g[j]);
            padd[(gi + gj) as usize - 2] += v;
            psub[(gi - gj).abs() as usize] += v;
            ac += v * gi * gj;
            let s = gi + gj - ux - uy;
            cp += v * s.powi(4);
            cs += v * s.powi(3);
            ct += v * s.powi(2);
            contrast += v * (gi - gj).abs().powi(2);
            sigx2 += v * (gi - ux).powi(2);
            sigy2 += v * (gj - uy).powi(2);
            corm += v * (gi - ux) * (gj - uy);
            energy += v * v;
            hxy += v * (v + EPS).log2();
            let pxy = px[i] * py[j];
            hxy1 += v * (pxy + EPS).log2();
            hxy2 += pxy * (pxy + EPS).log2();
            maxp = maxp.max(v);
            ss += v * (gi - ux).powi(2);
        }
    }
    let (hxy, hxy1, hxy2) = (-hxy, -hxy1, -hxy2);
    let (sigx, sigy) = (sigx2.sqrt(), sigy2.sqrt());
    let correlation = if sigx * sigy == 0.0 { 1.0 } else { corm / (sigx * sigy + EPS) };
    let (mut davg, mut dent, mut idm, mut idmn, mut id, mut idn, mut inv) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let ngf = ng as f64;
    for (k, &v) in psub.iter().enumerate() {
        let kf = k as f64;
        davg += kf * v;
        dent += v * (v + EPS).log2();
        idm += v / (1.0 + kf * kf);
        idmn += v / (1.0 + (kf * kf) / (ngf * ngf));
        id += v / (1.0 + kf);
        idn += v / (1.0 + kf / ngf);
        if k > 0 {
            inv += v / (kf * kf);
        }
    }
    let dvar: f64 = psub.iter().enumerate().map(|(k, &v)| v * (k as f64 - davg).powi(2)).sum();
    let (mut savg, mut sent) = (0.0, 0.0);
    for (k, &v) in padd.iter().enumerate() {
        savg += (k + 2) as f64 * v;
        sent += v * (v + EPS).log2();
    }
    let hx = -px.iter().map(|v| v * (v + EPS).log2()).sum::<f64>();
    let hy = -py.iter().map(|v| v * (v + EPS).log2()).sum::<f64>();
    let div = hx.max(hy);
    let imc1 = if div != 0.0 { (hxy - hxy1) / div } else { 0.0 };
    let imc2 = if hxy2 == hxy { 0.0 } else { (1.0 - std::f64::consts::E.powf(-2.0 * (hxy2 - hxy))).sqrt() };
    [
        ac,
        cp,
        cs,
        ct,
        contrast,
        correlation,
        davg,
        -dent,
        dvar,
        id,
        idm,
        idmn,
        idn,
        imc1,
        imc2,
        inv,
        ux,
        energy,
        hxy,
        mcc(p, &px, &py),
        maxp,
        savg,
        -sent,
        ss,
    ]
}

/// Maximal Correlation Coefficient: sqrt of the second largest eigenvalue of
/// Q(i, j) = sum_k p(i, k) p(j, k) / (px(i) py(k) + eps). Q = D^-1 S with S symmetric
/// and D = diag(px), so its eigenvalues are those of D^-1/2 S D^-1/2 (rows with
/// px = 0 are zero rows of Q and add zero eigenvalues).
fn mcc(p: &[f64], px: &[f64], py: &[f64]) -> f64 {
    let n = px.len();
    if n < 2 {
        return 1.0;
    }
    let live: Vec<usize> = (0..n).filter(|&i| px[i] != 0.0).collect();
    let m = live.len();
    let mut s = vec![0.0; m * m];
    for (a, &i) in live.iter().enumerate() {
        for (b, &j) in live.iter().enumerate().skip(a) {
            let mut q = 0.0;
            for k in 0..n {
                q += p[i * n + k] * p[j * n + k] / (px[i] * py[k] + EPS);
            }
            // Q(i, j) * sqrt(px(i) / px(j)) is symmetric.
            let v = q * (px[i] / px[j]).sqrt();
            s[a * m + b] = v;
            s[b * m + a] = v;
        }
    }
    let mut eig = symmetric_eigenvalues(&mut s, m);
    eig.extend(std::iter::repeat_n(0.0, n - m));
    eig.sort_by(f64::total_cmp);
    eig[n - 2].sqrt()
}
