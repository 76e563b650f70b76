//! RT Structure Set: one ROI per organ present, planar contours per slice.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use voxseg_volume::LabelMap;

use crate::contour::contours;
use crate::objects::{derived, source_ref, write_file, Builder, Obj};
use crate::{CtSeries, Error, ErrorKind, Roi};

/// The label map's organs as contours in patient coordinates (LPS mm), one
/// `CLOSED_PLANAR` contour per island or hole per slice, each referencing its CT
/// slice. `labels` must lie on the series' grid (as `read_series` returned it).
/// ROIs with no voxels are left out. Written atomically.
pub fn write_rtstruct(path: &Path, labels: &LabelMap, rois: &[Roi], series: &CtSeries) -> Result<(), Error> {
    check_grid(path, labels, series)?;
    let present: Vec<(usize, &Roi)> =
        rois.iter().filter(|r| labels.data().contains(&r.id)).enumerate().map(|(n, r)| (n + 1, r)).collect();
    let image_ref = |k: usize| source_ref(&series.slices[k]).build();
    let referenced_series = Builder::new()
        .str(tags::SERIES_INSTANCE_UID, VR::UI, series.series_uid.clone())
        .seq(tags::CONTOUR_IMAGE_SEQUENCE, (0..series.slices.len()).map(image_ref).collect())
        .build();
    let referenced_study = Builder::new()
        // The Study Component Management SOP class, as the standard's RT examples use.
        .str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.3.1.2.3.1")
        .str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, series.study_uid.clone())
        .seq(tags::RT_REFERENCED_SERIES_SEQUENCE, vec![referenced_series])
        .build();
    let frame = Builder::new()
        .str(tags::FRAME_OF_REFERENCE_UID, VR::UI, series.frame_of_reference_uid.clone())
        .seq(tags::RT_REFERENCED_STUDY_SEQUENCE, vec![referenced_study])
        .build();
    let structure_set_rois = present
        .iter()
        .map(|&(n, roi)| {
            Builder::new()
                .int(tags::ROI_NUMBER, n as i64)
                .str(tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, series.frame_of_reference_uid.clone())
                .str(tags::ROI_NAME, VR::LO, roi.dicom_name())
                .str(tags::ROI_DESCRIPTION, VR::ST, roi.name.clone())
                .str(tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC")
                .build()
        })
        .collect();
    let roi_contours = present
        .iter()
        .map(|&(n, roi)| {
            let colour: Vec<String> = roi.colour.iter().map(|c| c.to_string()).collect();
            Builder::new()
                .strs(tags::ROI_DISPLAY_COLOR, VR::IS, &colour)
                .seq(tags::CONTOUR_SEQUENCE, organ_contours(labels, roi.id, &image_ref))
                .int(tags::REFERENCED_ROI_NUMBER, n as i64)
                .build()
        })
        .collect();
    let observations = present
        .iter()
        .map(|&(n, _)| {
            Builder::new()
                .int(tags::OBSERVATION_NUMBER, n as i64)
                .int(tags::REFERENCED_ROI_NUMBER, n as i64)
                .str(tags::RTROI_INTERPRETED_TYPE, VR::CS, "ORGAN")
                .str(tags::ROI_INTERPRETER, VR::PN, "")
                .build()
        })
        .collect();
    let (b, (date, time)) = derived(series, uids::RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", "voxseg auto-contours");
    let obj = b
        .str(tags::STRUCTURE_SET_LABEL, VR::SH, "voxseg")
        .str(tags::STRUCTURE_SET_NAME, VR::LO, "voxseg auto-contours")
        .str(tags::STRUCTURE_SET_DATE, VR::DA, date)
        .str(tags::STRUCTURE_SET_TIME, VR::TM, time)
        .str(tags::OPERATORS_NAME, VR::PN, "")
        .str(tags::APPROVAL_STATUS, VR::CS, "UNAPPROVED")
        .seq(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, vec![frame])
        .seq(tags::STRUCTURE_SET_ROI_SEQUENCE, structure_set_rois)
        .seq(tags::ROI_CONTOUR_SEQUENCE, roi_contours)
        .seq(tags::RTROI_OBSERVATIONS_SEQUENCE, observations)
        .build();
    write_file(path, obj)
}

pub(crate) fn check_grid(path: &Path, labels: &LabelMap, series: &CtSeries) -> Result<(), Error> {
    if labels.shape()[2] != series.slices.len() {
        return Err(Error::new(
            path,
            ErrorKind::Write(format!(
                "the label map has {} slices but series {} has {}",
                labels.shape()[2],
                series.series_uid,
                series.slices.len()
            )),
        ));
    }
    Ok(())
}

/// Contour items of one organ, slice by slice, in LPS mm.
fn organ_contours(labels: &LabelMap, id: u16, image_ref: &impl Fn(usize) -> Obj) -> Vec<Obj> {
    let [nx, ny, nz] = labels.shape();
    let grid = labels.grid();
    let mut items = vec![];
    for k in 0..nz {
        let slice = &labels.data()[k * nx * ny..(k + 1) * nx * ny];
        let Some((x0, y0, x1, y1)) = bounding_box(slice, nx, id) else { continue };
        // Only the organ's box: `contours` treats everything outside it as background.
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        let mask: Vec<bool> = (0..w * h).map(|p| slice[(x0 + p % w) + nx * (y0 + p / w)] == id).collect();
        for c in contours(&mask, w, h) {
            let data: Vec<f64> = c
                .points
                .iter()
                .flat_map(|&[x, y]| {
                    let [r, a, s] = grid.voxel_to_world([x + x0 as f64, y + y0 as f64, k as f64]);
                    [-r, -a, s]
                })
                .collect();
            items.push(
                Builder::new()
                    .seq(tags::CONTOUR_IMAGE_SEQUENCE, vec![image_ref(k)])
                    .str(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR")
                    .int(tags::NUMBER_OF_CONTOUR_POINTS, c.points.len() as i64)
                    .ds(tags::CONTOUR_DATA, &data)
                    .build(),
            );
        }
    }
    items
}

/// Inclusive pixel box of `id` in one slice.
fn bounding_box(slice: &[u16], nx: usize, id: u16) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for (p, _) in slice.iter().enumerate().filter(|(_, &l)| l == id) {
        let (x, y) = (p % nx, p / nx);
        b = Some(b.map_or((x, y, x, y), |(a, c, d, e)| (a.min(x), c.min(y), d.max(x), e.max(y))));
    }
    b
}
