//! Clean-up of a network's label map: drop small islands, keep the largest part(s),
//! fill enclosed cavities. Parameters come per label from the model package or flags.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use voxseg_volume::LabelMap;

use crate::components::{Components, Connectivity};

/// What to do with one label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Keep only the k largest components (2 for paired organs stored as one label);
    /// `None` keeps all (`keep_largest = 0` in model.toml: TOML has no null, and a
    /// missing key means the default, 1).
    #[serde(default = "keep_one", with = "zero_keeps_all")]
    pub keep_largest: Option<usize>,
    /// Drop components smaller than this many mm3.
    #[serde(default)]
    pub min_island_mm3: f64,
    /// Fill cavities enclosed by the label (see [`fill_holes`]).
    #[serde(default = "yes")]
    pub fill_holes: bool,
}

fn keep_one() -> Option<usize> {
    Some(1)
}

/// `keep_largest` in files: a count, 0 for "keep every component".
mod zero_keeps_all {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keep: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(keep.unwrap_or(0) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        Ok(Some(usize::deserialize(d)?).filter(|&k| k > 0))
    }
}

fn yes() -> bool {
    true
}

impl Default for Cleanup {
    fn default() -> Cleanup {
        Cleanup { keep_largest: Some(1), min_island_mm3: 0.0, fill_holes: true }
    }
}

impl Cleanup {
    /// Leaves the map as it is.
    pub const NONE: Cleanup = Cleanup { keep_largest: None, min_island_mm3: 0.0, fill_holes: false };
}

/// What clean-up did to one label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanupReport {
    pub label: u16,
    /// Voxel counts of the label's components before clean-up, largest first: the
    /// evidence for a "fragmented" flag.
    pub raw_component_voxels: Vec<u64>,
    pub removed_voxels: u64,
    pub filled_voxels: u64,
}

/// Cleans every non-zero label in place; returns one report per label present.
pub fn clean(
    labels: &mut LabelMap,
    connectivity: Connectivity,
    rule: impl Fn(u16) -> Cleanup + Sync,
) -> Vec<CleanupReport> {
    let shape = labels.shape();
    let voxel_mm3 = labels.grid().voxel_volume_mm3();
    let cc = Components::new(labels.data(), shape, connectivity);
    let comps = cc.components();
    let max_label = comps.iter().map(|c| c.label).max().unwrap_or(0) as usize;
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); max_label + 1];
    for (i, c) in comps.iter().enumerate() {
        by_label[c.label as usize].push(i);
    }
    let mut keep = vec![true; comps.len()];
    let mut reports = Vec::new();
    for (label, ids) in by_label.iter_mut().enumerate().filter(|(_, ids)| !ids.is_empty()) {
        let rule = rule(label as u16);
        ids.sort_by_key(|&i| std::cmp::Reverse(comps[i].voxels));
        let mut report = CleanupReport {
            label: label as u16,
            raw_component_voxels: ids.iter().map(|&i| comps[i].voxels).collect(),
            ..CleanupReport::default()
        };
        for (rank, &i) in ids.iter().enumerate() {
            let small = (comps[i].voxels as f64) * voxel_mm3 < rule.min_island_mm3;
            let beyond = rule.keep_largest.is_some_and(|k| rank >= k);
            if small || beyond {
                keep[i] = false;
                report.removed_voxels += comps[i].voxels;
            }
        }
        reports.push(report);
    }
    cc.erase(labels.data_mut(), |i| keep[i]);
    let boxes = bounding_boxes(labels);
    for report in &mut reports {
        if let (true, Some(Some(bbox))) = (rule(report.label).fill_holes, boxes.get(report.label as usize)) {
            report.filled_voxels = fill_holes_in(labels, report.label, *bbox);
        }
    }
    reports
}

/// Fills the cavities of `label`: regions not of this label, 6-connected among
/// themselves, that do not reach a face of the volume (as
/// `scipy.ndimage.binary_fill_holes`). A cavity is filled only when all its voxels
/// are background, so an organ lying inside another is never overwritten.
/// Returns the number of voxels filled.
pub fn fill_holes(labels: &mut LabelMap, label: u16) -> u64 {
    match bounding_boxes(labels).get(label as usize) {
        Some(Some(bbox)) => fill_holes_in(labels, label, *bbox),
        _ => 0,
    }
}

fn fill_holes_in(labels: &mut LabelMap, label: u16, (lo, hi): BoundingBox) -> u64 {
    let [nx, ny, nz] = labels.shape();
    // Everything outside the label's box, widened by one voxel, is connected to the
    // outside, so holes can be searched in that box alone.
    let lo = lo.map(|v| v.saturating_sub(1));
    let hi = [(hi[0] + 1).min(nx - 1), (hi[1] + 1).min(ny - 1), (hi[2] + 1).min(nz - 1)];
    let sub = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    let data = labels.data();
    let at = |i: usize, j: usize, k: usize| (lo[0] + i) + nx * ((lo[1] + j) + ny * (lo[2] + k));
    // 1: not this label and background, 2: not this label and another organ.
    let mut outside = Vec::with_capacity(sub.iter().product());
    for k in 0..sub[2] {
        for j in 0..sub[1] {
            outside.extend((0..sub[0]).map(|i| match data[at(i, j, k)] {
                l if l == label => 0u16,
                0 => 1,
                _ => 2,
            }));
        }
    }
    // Background and other organs form one region for hole finding: join them.
    let region: Vec<u16> = outside.iter().map(|&v| v.min(1)).collect();
    let cc = Components::new(&region, sub, Connectivity::Faces);
    let ids = cc.ids();
    // A box face counts as the volume's border only where the box was not widened;
    // elsewhere the region continues outside, so touching any box face means open.
    let mut fillable: Vec<bool> = cc.components().iter().map(|c| !c.touches_border).collect();
    for (id, &v) in ids.iter().zip(&outside) {
        if v == 2 && *id > 0 {
            fillable[*id as usize - 1] = false;
        }
    }
    let mut filled = 0;
    let data = labels.data_mut();
    let mut n = 0;
    for k in 0..sub[2] {
        for j in 0..sub[1] {
            for i in 0..sub[0] {
                let id = ids[n];
                n += 1;
                if id > 0 && fillable[id as usize - 1] {
                    data[at(i, j, k)] = label;
                    filled += 1;
                }
            }
        }
    }
    filled
}

/// Inclusive voxel bounds `(lo, hi)` of a label.
pub type BoundingBox = ([usize; 3], [usize; 3]);

/// The bounding box of every label, indexed by label (`None` when absent), in one
/// pass over the map.
pub fn bounding_boxes(labels: &LabelMap) -> Vec<Option<BoundingBox>> {
    let [nx, ny, _] = labels.shape();
    let merge = |mut a: Vec<Option<BoundingBox>>, b: Vec<Option<BoundingBox>>| {
        if a.len() < b.len() {
            a.resize(b.len(), None);
        }
        for (x, y) in a.iter_mut().zip(b) {
            *x = match (*x, y) {
                (Some((l1, h1)), Some((l2, h2))) => {
                    Some((std::array::from_fn(|i| l1[i].min(l2[i])), std::array::from_fn(|i| h1[i].max(h2[i]))))
                }
                (x, y) => x.or(y),
            };
        }
        a
    };
    labels
        .data()
        .par_chunks(nx * ny)
        .enumerate()
        .fold(Vec::new, |mut boxes: Vec<Option<BoundingBox>>, (k, slice)| {
            for (n, &l) in slice.iter().enumerate().filter(|(_, &l)| l != 0) {
                if boxes.len() <= l as usize {
                    boxes.resize(l as usize + 1, None);
                }
                let p = [n % nx, n / nx, k];
                let (lo, hi) = boxes[l as usize].get_or_insert((p, p));
                *lo = std::array::from_fn(|a| lo[a].min(p[a]));
                *hi = std::array::from_fn(|a| hi[a].max(p[a]));
            }
            boxes
        })
        .reduce(Vec::new, merge)
}
