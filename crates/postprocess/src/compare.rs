//! Agreement between a predicted and a reference label map, per label: overlap
//! (Dice, Jaccard), volumes, and surface distances in mm (HD, HD95, ASSD).
//!
//! Surface distances follow MedPy's definitions, so numbers are comparable with
//! published ones: a mask's surface is the mask minus its 6-connected erosion
//! (voxels on the volume's faces count as surface); each surface voxel's distance to
//! the other surface comes from an exact Euclidean distance transform with the
//! voxel spacing; HD95 is numpy's (linear) 95th percentile of both directed sets
//! together, ASSD the mean of the two directed means.

use rayon::prelude::*;
use serde::Serialize;
use voxseg_volume::LabelMap;

use crate::cleanup::{bounding_boxes, BoundingBox};
use crate::measure::describe;
use crate::Error;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub label: u16,
    /// 2 |P ∩ R| / (|P| + |R|).
    pub dice: f64,
    /// |P ∩ R| / |P ∪ R|.
    pub jaccard: f64,
    pub volume_pred_ml: f64,
    pub volume_ref_ml: f64,
    /// pred - ref.
    pub volume_diff_ml: f64,
    /// 100 (pred - ref) / ref; `None` when the reference is empty.
    pub volume_diff_percent: Option<f64>,
    /// Surface distances; `None` when either side is empty.
    pub hd_mm: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub assd_mm: Option<f64>,
}

/// Compares `labels` (every label in either map, ascending, when empty).
pub fn compare(pred: &LabelMap, reference: &LabelMap, labels: &[u16]) -> Result<Vec<Agreement>, Error> {
    if !pred.grid().matches(reference.grid(), 1e-4) {
        return Err(Error::GridMismatch { labels: describe(pred.grid()), other: describe(reference.grid()) });
    }
    let (pb, rb) = (bounding_boxes(pred), bounding_boxes(reference));
    let labels: Vec<u16> = if labels.is_empty() {
        (1..pb.len().max(rb.len()))
            .filter(|&l| pb.get(l).copied().flatten().is_some() || rb.get(l).copied().flatten().is_some())
            .map(|l| l as u16)
            .collect()
    } else {
        labels.to_vec()
    };
    let voxel_ml = pred.grid().voxel_volume_mm3() / 1000.0;
    let spacing = pred.grid().spacing();
    Ok(labels
        .iter()
        .map(|&label| {
            let get = |b: &[Option<BoundingBox>]| b.get(label as usize).copied().flatten();
            agreement(pred, reference, label, union(get(&pb), get(&rb)), voxel_ml, spacing)
        })
        .collect())
}

fn union(a: Option<BoundingBox>, b: Option<BoundingBox>) -> Option<BoundingBox> {
    match (a, b) {
        (Some((l1, h1)), Some((l2, h2))) => {
            Some((std::array::from_fn(|i| l1[i].min(l2[i])), std::array::from_fn(|i| h1[i].max(h2[i]))))
        }
        (a, b) => a.or(b),
    }
}

fn agreement(
    pred: &LabelMap,
    reference: &LabelMap,
    label: u16,
    bbox: Option<BoundingBox>,
    voxel_ml: f64,
    spacing: [f64; 3],
) -> Agreement {
    let empty = Agreement {
        label,
        dice: 0.0,
        jaccard: 0.0,
        volume_pred_ml: 0.0,
        volume_ref_ml: 0.0,
        volume_diff_ml: 0.0,
        volume_diff_percent: None,
        hd_mm: None,
        hd95_mm: None,
        assd_mm: None,
    };
    let Some((lo, hi)) = bbox else { return empty };
    let shape = pred.shape();
    let sub: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a] + 1);
    let cut = |m: &LabelMap| -> Vec<bool> {
        let mut out = Vec::with_capacity(sub.iter().product());
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                let base = shape[0] * (j + shape[1] * k);
                out.extend(m.data()[base + lo[0]..=base + hi[0]].iter().map(|&v| v == label));
            }
        }
        out
    };
    let (p, r) = (cut(pred), cut(reference));
    let np = p.iter().filter(|&&v| v).count() as f64;
    let nr = r.iter().filter(|&&v| v).count() as f64;
    let both = p.iter().zip(&r).filter(|(&a, &b)| a && b).count() as f64;
    // The box is the union of both masks' boxes, so voxels outside it are outside
    // both masks: surfaces and distances computed inside it are exact. Voxels on the
    // volume's faces are surface either way, as with MedPy's zero border.
    let (sp, sr) = (surface(&p, sub), surface(&r, sub));
    let (dists, assd) = if np > 0.0 && nr > 0.0 {
        let a = directed(&sp, &sr, sub, spacing);
        let b = directed(&sr, &sp, sub, spacing);
        let mean = |d: &[f64]| d.iter().sum::<f64>() / d.len() as f64;
        let assd = (mean(&a) + mean(&b)) / 2.0;
        let mut all = a;
        all.extend(b);
        all.sort_by(f64::total_cmp);
        (Some(all), Some(assd))
    } else {
        (None, None)
    };
    Agreement {
        dice: 2.0 * both / (np + nr),
        jaccard: both / (np + nr - both),
        volume_pred_ml: np * voxel_ml,
        volume_ref_ml: nr * voxel_ml,
        volume_diff_ml: (np - nr) * voxel_ml,
        volume_diff_percent: (nr > 0.0).then(|| 100.0 * (np - nr) / nr),
        hd_mm: dists.as_ref().map(|d| d[d.len() - 1]),
        hd95_mm: dists.as_ref().map(|d| percentile(d, 95.0)),
        assd_mm: assd,
        ..empty
    }
}

/// numpy's default (linear) percentile of sorted, non-empty values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Mask voxels with a 6-neighbour outside the mask (or outside the box).
fn surface(mask: &[bool], [nx, ny, nz]: [usize; 3]) -> Vec<bool> {
    let at = |i: usize, j: usize, k: usize| mask[i + nx * (j + ny * k)];
    let mut out = vec![false; mask.len()];
    out.par_chunks_mut(nx).enumerate().for_each(|(r, row)| {
        let (j, k) = (r % ny, r / ny);
        for (i, o) in row.iter_mut().enumerate() {
            *o = at(i, j, k)
                && (i == 0
                    || j == 0
                    || k == 0
                    || i + 1 == nx
                    || j + 1 == ny
                    || k + 1 == nz
                    || !at(i - 1, j, k)
                    || !at(i + 1, j, k)
                    || !at(i, j - 1, k)
                    || !at(i, j + 1, k)
                    || !at(i, j, k - 1)
                    || !at(i, j, k + 1));
        }
    });
    out
}

/// Distance in mm from each `from` voxel to the nearest `to` voxel.
fn directed(from: &[bool], to: &[bool], shape: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let d2 = crate::distance::squared_edt(to, shape, spacing);
    from.iter().zip(&d2).filter(|(&f, _)| f).map(|(_, &d)| d.sqrt()).collect()
}
