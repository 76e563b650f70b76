//! DICOM Segmentation (binary): one segment per organ present, one frame per
//! segment per slice that holds it, each frame derived from its CT slice.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use voxseg_volume::LabelMap;

use crate::objects::{derived, new_uid, source_ref, write_file, Builder, Code, Obj};
use crate::rtstruct::check_grid;
use crate::{CtSeries, Error, Roi};

const ANATOMICAL_STRUCTURE: Code = Code { value: "123037004", scheme: "SCT", meaning: "Anatomical Structure" };
/// For organs without a code below: SNOMED CT "Organ".
const ORGAN: Code = Code { value: "113343008", scheme: "SCT", meaning: "Organ" };

/// SNOMED CT codes of organs by TG-263 name (DICOM PS3.16 CID 7150 / 4031 meanings).
const ORGAN_CODES: [(&str, Code); 13] = [
    ("Liver", Code { value: "10200004", scheme: "SCT", meaning: "Liver" }),
    ("Spleen", Code { value: "78961009", scheme: "SCT", meaning: "Spleen" }),
    ("Kidney_R", Code { value: "9846003", scheme: "SCT", meaning: "Right kidney" }),
    ("Kidney_L", Code { value: "18639004", scheme: "SCT", meaning: "Left kidney" }),
    ("Pancreas", Code { value: "15776009", scheme: "SCT", meaning: "Pancreas" }),
    ("Stomach", Code { value: "69695003", scheme: "SCT", meaning: "Stomach" }),
    ("Gallbladder", Code { value: "28231008", scheme: "SCT", meaning: "Gallbladder" }),
    ("Esophagus", Code { value: "32849002", scheme: "SCT", meaning: "Esophagus" }),
    ("Heart", Code { value: "80891009", scheme: "SCT", meaning: "Heart" }),
    ("Bladder", Code { value: "89837001", scheme: "SCT", meaning: "Urinary bladder" }),
    ("SpinalCord", Code { value: "2748008", scheme: "SCT", meaning: "Spinal cord" }),
    ("Brainstem", Code { value: "15926001", scheme: "SCT", meaning: "Brainstem" }),
    ("Bone_Mandible", Code { value: "91609006", scheme: "SCT", meaning: "Mandible" }),
];

fn organ_code(roi: &Roi) -> Code {
    let name = roi.tg263.as_deref().unwrap_or(&roi.name);
    ORGAN_CODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or(ORGAN, |&(_, c)| c)
}

/// The label map as a binary DICOM Segmentation of `series`. `labels` must lie on
/// the series' grid (as `read_series` returned it). ROIs with no voxels are left
/// out; slices without an organ get no frame for it. Written atomically.
pub fn write_seg(path: &Path, labels: &LabelMap, rois: &[Roi], series: &CtSeries) -> Result<(), Error> {
    check_grid(path, labels, series)?;
    let [nx, ny, nz] = labels.shape();
    let grid = labels.grid();
    let spacing = grid.spacing();
    let a = grid.affine();
    let lps = |v: [f64; 3]| [-v[0], -v[1], v[2]];
    let direction = |c: usize| lps(std::array::from_fn(|r| a[r][c] / spacing[c]));
    let orientation: Vec<f64> = direction(0).into_iter().chain(direction(1)).collect();
    let present: Vec<(u16, &Roi)> =
        rois.iter().filter(|r| labels.data().contains(&r.id)).enumerate().map(|(n, r)| (n as u16 + 1, r)).collect();
    let dimension_org = new_uid();
    let source = |k: usize| source_ref(&series.slices[k]);

    let mut frames: Vec<Obj> = vec![];
    let mut bits = BitWriter::default();
    for &(number, roi) in &present {
        for k in 0..nz {
            let slice = &labels.data()[k * nx * ny..(k + 1) * nx * ny];
            if !slice.contains(&roi.id) {
                continue;
            }
            // Rows (j) then columns (i): the label map's own order within a slice.
            slice.iter().for_each(|&l| bits.push(l == roi.id));
            let derivation = Builder::new()
                .seq(
                    tags::SOURCE_IMAGE_SEQUENCE,
                    vec![source(k)
                        // The frame is the slice's own pixel grid: same rows, columns, place.
                        .str(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES")
                        .code(
                            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                            Code {
                                value: "121322",
                                scheme: "DCM",
                                meaning: "Source image for image processing operation",
                            },
                        )
                        .build()],
                )
                .code(tags::DERIVATION_CODE_SEQUENCE, Code { value: "113076", scheme: "DCM", meaning: "Segmentation" })
                .build();
            frames.push(
                Builder::new()
                    .seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation])
                    .seq(
                        tags::FRAME_CONTENT_SEQUENCE,
                        vec![Builder::new().u32s(tags::DIMENSION_INDEX_VALUES, &[number.into(), k as u32 + 1]).build()],
                    )
                    .seq(
                        tags::PLANE_POSITION_SEQUENCE,
                        vec![Builder::new()
                            .ds(tags::IMAGE_POSITION_PATIENT, &lps(grid.voxel_to_world([0.0, 0.0, k as f64])))
                            .build()],
                    )
                    .seq(
                        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                        vec![Builder::new().u16(tags::REFERENCED_SEGMENT_NUMBER, number).build()],
                    )
                    .build(),
            );
        }
    }
    let segments = present
        .iter()
        .map(|&(number, roi)| {
            Builder::new()
                .u16(tags::SEGMENT_NUMBER, number)
                .str(tags::SEGMENT_LABEL, VR::LO, roi.dicom_name())
                .str(tags::SEGMENT_DESCRIPTION, VR::ST, roi.name.clone())
                .str(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC")
                .str(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "voxseg")
                .code(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, ANATOMICAL_STRUCTURE)
                .code(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, organ_code(roi))
                .build()
        })
        .collect();
    let dimension = |pointer, group| {
        Builder::new()
            .str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dimension_org.clone())
            .tag_at(tags::DIMENSION_INDEX_POINTER, pointer)
            .tag_at(tags::FUNCTIONAL_GROUP_POINTER, group)
            .build()
    };
    let shared = Builder::new()
        .seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![Builder::new().ds(tags::IMAGE_ORIENTATION_PATIENT, &orientation).build()],
        )
        .seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![Builder::new()
                .ds(tags::PIXEL_SPACING, &[spacing[1], spacing[0]])
                .ds(tags::SLICE_THICKNESS, &[spacing[2]])
                .ds(tags::SPACING_BETWEEN_SLICES, &[spacing[2]])
                .build()],
        )
        .build();
    let referenced_series = Builder::new()
        .str(tags::SERIES_INSTANCE_UID, VR::UI, series.series_uid.clone())
        .seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances(series))
        .build();
    let (b, (date, time)) = derived(series, uids::SEGMENTATION_STORAGE, "SEG", "voxseg segmentation");
    let obj = b
        .str(tags::FRAME_OF_REFERENCE_UID, VR::UI, series.frame_of_reference_uid.clone())
        .str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "")
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, "voxseg")
        .str(tags::DEVICE_SERIAL_NUMBER, VR::LO, "1")
        .strs(tags::IMAGE_TYPE, VR::CS, &["DERIVED".into(), "PRIMARY".into()])
        .str(tags::CONTENT_DATE, VR::DA, date)
        .str(tags::CONTENT_TIME, VR::TM, time)
        .str(tags::CONTENT_LABEL, VR::CS, "VOXSEG")
        .str(tags::CONTENT_DESCRIPTION, VR::LO, "organs segmented by voxseg")
        .str(tags::CONTENT_CREATOR_NAME, VR::PN, "voxseg")
        .str(tags::SEGMENTATION_TYPE, VR::CS, "BINARY")
        .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00")
        .u16(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .u16(tags::ROWS, ny as u16)
        .u16(tags::COLUMNS, nx as u16)
        .u16(tags::BITS_ALLOCATED, 1)
        .u16(tags::BITS_STORED, 1)
        .u16(tags::HIGH_BIT, 0)
        .u16(tags::PIXEL_REPRESENTATION, 0)
        .int(tags::NUMBER_OF_FRAMES, frames.len() as i64)
        .seq(tags::REFERENCED_SERIES_SEQUENCE, vec![referenced_series])
        .seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![Builder::new().str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dimension_org.clone()).build()],
        )
        .seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dimension(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE),
                dimension(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE),
            ],
        )
        .seq(tags::SEGMENT_SEQUENCE, segments)
        .seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared])
        .seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames)
        .bytes(tags::PIXEL_DATA, VR::OB, bits.bytes)
        .build();
    write_file(path, obj)
}

/// Each source instance once (an enhanced CT is one instance of many frames), without
/// frame numbers: what the Common Instance Reference module lists.
fn instances(series: &CtSeries) -> Vec<Obj> {
    let mut seen = std::collections::HashSet::new();
    series
        .slices
        .iter()
        .filter(|s| seen.insert(&s.sop_instance_uid))
        .map(|s| {
            Builder::new()
                .str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, s.sop_class_uid.clone())
                .str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, s.sop_instance_uid.clone())
                .build()
        })
        .collect()
}

/// Binary SEG pixels: one bit per pixel, least significant bit first, frames
/// packed back to back with no padding between them.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    len: usize,
}

impl BitWriter {
    fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().expect("pushed above") |= 1 << (self.len % 8);
        }
        self.len += 1;
    }
}
