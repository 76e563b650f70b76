//! Gray-level discretisation: pyradiomics' `imageoperations.getBinEdges` and
//! `binImage` (numpy `arange`, `histogram` and `digitize`), on the voxels of the mask.

use crate::{Binning, Roi, RoiError};

/// Discretised ROI: level 1.. inside the mask, 0 outside.
pub(crate) struct Discrete {
    pub gl: Vec<u32>,
    /// Levels present in the mask, ascending (pyradiomics' `grayLevels`).
    pub levels: Vec<u32>,
    /// Largest level present (pyradiomics' `Ng`).
    pub ng: u32,
}

impl Discrete {
    /// Row of each level 1..=ng among the present levels (`usize::MAX` if absent).
    pub fn rows(&self) -> Vec<usize> {
        let mut rows = vec![usize::MAX; self.ng as usize + 1];
        for (r, &l) in self.levels.iter().enumerate() {
            rows[l as usize] = r;
        }
        rows
    }
}

/// numpy's float remainder: the sign of the divisor (`npy_divmod`).
fn remainder(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        m + b
    } else {
        m
    }
}

/// Most bins a discretisation may make (a tiny binWidth over a wide range would
/// otherwise allocate without bound).
pub(crate) const MAX_BINS: usize = 1 << 20;

/// pyradiomics' `getBinEdges`; `None` when it would make more than MAX_BINS bins.
pub(crate) fn bin_edges(values: &[f64], binning: Binning) -> Option<Vec<f64>> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match binning {
        Binning::Width(w) => {
            let low = min - remainder(min, w);
            let high = max + 2.0 * w;
            // numpy.arange(low, high, w): ceil((high - low) / w) values low + k * w.
            let n = ((high - low) / w).ceil().max(0.0);
            if n > MAX_BINS as f64 {
                return None;
            }
            let n = n as usize;
            let edges: Vec<f64> = (0..n).map(|k| low + k as f64 * w).collect();
            Some(if edges.len() == 1 { vec![edges[0] - 0.5, edges[0] + 0.5] } else { edges })
        }
        Binning::Count(count) => {
            if count > MAX_BINS {
                return None;
            }
            // numpy.histogram(values, count)[1]: linspace(min, max, count + 1), then the
            // last edge + 1 so numpy.digitize puts the maximum in the last bin.
            let (mut first, mut last) = (min, max);
            if first == last {
                first -= 0.5;
                last += 0.5;
            }
            let div = count as f64;
            let step = (last - first) / div;
            let mut edges: Vec<f64> = (0..=count)
                .map(|k| if step == 0.0 { k as f64 / div * (last - first) + first } else { k as f64 * step + first })
                .collect();
            edges[count] = last;
            edges[count] += 1.0;
            Some(edges)
        }
    }
}

/// numpy.digitize(x, edges) for increasing edges: the number of edges <= x.
#[inline]
fn digitize(x: f64, edges: &[f64]) -> u32 {
    edges.partition_point(|&e| e <= x) as u32
}

pub(crate) fn discretise(roi: &Roi, binning: Binning) -> Result<Discrete, RoiError> {
    let edges = bin_edges(&roi.values, binning).ok_or(RoiError::TooManyBins { max: MAX_BINS })?;
    let gl: Vec<u32> =
        roi.image.iter().zip(&roi.mask).map(|(&v, &m)| if m { digitize(v, &edges) } else { 0 }).collect();
    let mut present = vec![false; edges.len() + 2];
    for (&g, &m) in gl.iter().zip(&roi.mask) {
        if m {
            present[g as usize] = true;
        }
    }
    let levels: Vec<u32> = (0..present.len() as u32).filter(|&l| present[l as usize]).collect();
    let ng = *levels.last().unwrap_or(&0);
    Ok(Discrete { gl, levels, ng })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from numpy: np.digitize(v, np.arange(-100, 150, 25)) and
    // np.histogram([0, 3, 10], 2)[1] with the last edge + 1.
    #[test]
    fn bin_edges_and_digitize_follow_numpy() {
        let edges = bin_edges(&[-77.0, 100.0], Binning::Width(25.0)).unwrap();
        assert_eq!(edges, (0..10).map(|k| -100.0 + 25.0 * k as f64).collect::<Vec<_>>());
        let levels: Vec<u32> = [-77.0, 100.0, -75.0, 24.9].iter().map(|&v| digitize(v, &edges)).collect();
        assert_eq!(levels, [1, 9, 2, 5]);
        let edges = bin_edges(&[0.0, 3.0, 10.0], Binning::Count(2)).unwrap();
        assert_eq!(edges, [0.0, 5.0, 11.0]);
        let levels: Vec<u32> = [0.0, 3.0, 5.0, 10.0].iter().map(|&v| digitize(v, &edges)).collect();
        assert_eq!(levels, [1, 1, 2, 2]);
        assert!(bin_edges(&[0.0, 1e9], Binning::Width(1e-3)).is_none());
    }
}
