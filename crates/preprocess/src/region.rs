//! A body crop that survives short and cropped scans: the bounding box of the largest
//! 6-connected region above a HU threshold (the patient, not the table or noise),
//! capped to a maximum size in mm per voxel axis.

use serde::{Deserialize, Serialize};
use voxseg_postprocess::{Components, Connectivity};
use voxseg_volume::Image;

use crate::error::Error;
use crate::window::Window;

/// Which part of an axis survives when the region is longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Cut evenly from both ends (one more voxel from the end when odd).
    Centre,
    /// Keep the low-index end (e.g. inferior in RAS).
    Low,
    /// Keep the high-index end (e.g. superior in RAS: the liver dome).
    High,
}

/// `region_crop = { threshold_hu = -500, max_mm = [489, 408, 408], keep = ["centre", "centre", "high"] }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCrop {
    /// Voxels strictly above this are body.
    pub threshold_hu: f32,
    /// Largest extent kept per voxel axis, mm (the cap in voxels is `floor(max_mm / spacing)`).
    pub max_mm: [f64; 3],
    /// Which end to keep per axis when the region is longer than the cap.
    pub keep: [Keep; 3],
}

/// The window cropping `image` to its largest 6-connected region above the threshold,
/// capped per [`RegionCrop`]. An image with no voxel above the threshold is kept whole.
pub fn region_window(image: &Image, crop: &RegionCrop) -> Result<Window, Error> {
    let ok = crop.threshold_hu.is_finite() && crop.max_mm.iter().all(|m| m.is_finite() && *m > 0.0);
    if !ok {
        return Err(Error::BadCrop(format!("{crop:?}: threshold and caps must be finite, caps > 0")));
    }
    let grid = image.grid();
    let n = grid.shape();
    let Some((lo, hi)) = largest_region_box(image.data(), n, crop.threshold_hu) else {
        return Window::new(grid, [0; 3], n);
    };
    let spacing = grid.spacing();
    let mut start = [0i64; 3];
    let mut shape = [0usize; 3];
    for a in 0..3 {
        let cap = ((crop.max_mm[a] / spacing[a] + 1e-6).floor() as usize).max(1);
        let (mut first, mut stop) = (lo[a], hi[a] + 1);
        let extra = (stop - first).saturating_sub(cap);
        match crop.keep[a] {
            Keep::Centre => {
                first += extra / 2;
                stop -= extra - extra / 2;
            }
            Keep::Low => stop -= extra,
            Keep::High => first += extra,
        }
        start[a] = first as i64;
        shape[a] = stop - first;
    }
    Window::new(grid, start, shape)
}

/// Inclusive bounding box of the largest 6-connected component of `data > threshold`
/// (ties: the component met first in buffer order), or `None` when no voxel is above.
/// The components are `voxseg-postprocess`'s, run by run.
pub fn largest_region_box(data: &[f32], shape: [usize; 3], threshold: f32) -> Option<([usize; 3], [usize; 3])> {
    let regions = Components::of(data, shape, Connectivity::Faces, |&v| u16::from(v > threshold));
    // Numbered in buffer order of their first voxel: the first of the largest wins.
    let mut largest: Option<(usize, u64)> = None;
    for (index, region) in regions.components().iter().enumerate() {
        if largest.is_none_or(|(_, voxels)| region.voxels > voxels) {
            largest = Some((index, region.voxels));
        }
    }
    largest.map(|(index, _)| regions.bounding_box(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxseg_volume::{Grid, Volume};

    fn image(shape: [usize; 3], spacing: f64, boxes: &[([usize; 3], [usize; 3])]) -> Image {
        let a = [[spacing, 0.0, 0.0, 0.0], [0.0, spacing, 0.0, 0.0], [0.0, 0.0, spacing, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let grid = Grid::new(shape, a).unwrap();
        let mut v = vec![-1000.0f32; grid.len()];
        for (lo, hi) in boxes {
            for k in lo[2]..=hi[2] {
                for j in lo[1]..=hi[1] {
                    for i in lo[0]..=hi[0] {
                        v[grid.index(i, j, k)] = 40.0;
                    }
                }
            }
        }
        Volume::new(grid, v)
    }

    #[test]
    fn picks_the_largest_region_not_the_whole_foreground() {
        // a body and a separate, smaller table below it
        let img = image([20, 16, 12], 1.0, &[([3, 4, 1], [15, 12, 10]), ([0, 0, 0], [19, 1, 11])]);
        let crop = RegionCrop { threshold_hu: -500.0, max_mm: [1000.0; 3], keep: [Keep::Centre; 3] };
        let w = region_window(&img, &crop).unwrap();
        assert_eq!(w.start(), [3, 4, 1]);
        assert_eq!(w.grid().shape(), [13, 9, 10]);
    }

    #[test]
    fn caps_cut_evenly_or_keep_one_end() {
        let img = image([20, 16, 12], 2.0, &[([2, 2, 1], [17, 13, 10])]);
        // region 16 x 12 x 10 voxels = 32 x 24 x 20 mm; caps 21 mm -> 10 voxels, 20 mm -> 10, 9.9 mm -> 4
        let crop =
            RegionCrop { threshold_hu: -500.0, max_mm: [21.0, 20.0, 9.9], keep: [Keep::Centre, Keep::Low, Keep::High] };
        let w = region_window(&img, &crop).unwrap();
        assert_eq!(w.grid().shape(), [10, 10, 4]);
        assert_eq!(w.start(), [2 + 3, 2, 1 + 6]);
    }

    #[test]
    fn empty_image_is_kept_whole() {
        let img = image([5, 4, 3], 1.0, &[]);
        let crop = RegionCrop { threshold_hu: -500.0, max_mm: [10.0; 3], keep: [Keep::Centre; 3] };
        assert!(region_window(&img, &crop).unwrap().is_identity());
    }
}
