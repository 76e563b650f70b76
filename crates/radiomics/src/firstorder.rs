//! First-order statistics of the intensities inside the mask (pyradiomics'
//! `firstorder.py`): numpy's population moments, linear-interpolation percentiles,
//! and the entropy / uniformity of the discretised histogram.

use crate::discretise::Discrete;
use crate::{Roi, EPS};

pub(crate) const NAMES: &[&str] = &[
    "10Percentile",
    "90Percentile",
    "Energy",
    "Entropy",
    "InterquartileRange",
    "Kurtosis",
    "Maximum",
    "Mean",
    "MeanAbsoluteDeviation",
    "Median",
    "Minimum",
    "Range",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "TotalEnergy",
    "Uniformity",
    "Variance",
];

/// numpy.percentile(sorted, q), method "linear".
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n as f64 - 1.0) * (q / 100.0);
    let prev = (virtual_index.floor() as usize).min(n - 1);
    let next = (prev + 1).min(n - 1);
    let gamma = virtual_index - prev as f64;
    let (a, b) = (sorted[prev], sorted[next]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub(crate) fn features(roi: &Roi, disc: &Discrete, shift: f64) -> Vec<(&'static str, f64)> {
    let x = &roi.values;
    let n = x.len() as f64;
    let mut sorted = x.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let mu = mean(x);
    let moment = |k: i32| x.iter().map(|v| (v - mu).powi(k)).sum::<f64>() / n;
    let (m2, m3, m4) = (moment(2), moment(3), moment(4));
    let m2_safe = if m2 == 0.0 { 1.0 } else { m2 };
    let energy: f64 = x.iter().map(|v| (v + shift) * (v + shift)).sum();
    let voxel_mm3 = roi.spacing[0] * roi.spacing[1] * roi.spacing[2];
    let p10 = percentile(&sorted, 10.0);
    let p90 = percentile(&sorted, 90.0);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    let robust: Vec<f64> = x.iter().copied().filter(|&v| v - p10 >= 0.0 && v - p90 <= 0.0).collect();
    let robust_mean = mean(&robust);
    let rmad = robust.iter().map(|v| (v - robust_mean).abs()).sum::<f64>() / robust.len() as f64;
    // Histogram of the discretised levels.
    let mut counts = vec![0u64; disc.ng as usize + 1];
    for (&g, &m) in disc.gl.iter().zip(&roi.mask) {
        if m {
            counts[g as usize] += 1;
        }
    }
    let p: Vec<f64> = counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).collect();
    let std = m2.sqrt();
    vec![
        ("10Percentile", p10),
        ("90Percentile", p90),
        ("Energy", energy),
        ("Entropy", -p.iter().map(|p| p * (p + EPS).log2()).sum::<f64>()),
        ("InterquartileRange", percentile(&sorted, 75.0) - percentile(&sorted, 25.0)),
        ("Kurtosis", m4 / (m2_safe * m2_safe)),
        ("Maximum", max),
        ("Mean", mu),
        ("MeanAbsoluteDeviation", x.iter().map(|v| (v - mu).abs()).sum::<f64>() / n),
        ("Median", median),
        ("Minimum", min),
        ("Range", max - min),
        ("RobustMeanAbsoluteDeviation", rmad),
        ("RootMeanSquared", (energy / n).sqrt()),
        ("Skewness", m3 / m2_safe.powf(1.5)),
        ("TotalEnergy", energy * voxel_mm3),
        ("Uniformity", p.iter().map(|p| p * p).sum()),
        ("Variance", std * std),
    ]
}
