//! The reader on the real CTs and masks in ../shared/data.

use std::path::{Path, PathBuf};

use serde_json::Value;
use voxseg_volume::nifti;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(rel)
}

#[test]
fn example_ct_matches_nibabel() {
    // nibabel 5: shape (122, 101, 112), zooms 3 mm, RAS, int32, min -1207, max 3382.
    let n = nifti::read(data("totalseg/example_ct.nii.gz")).unwrap();
    assert_eq!(n.grid.shape(), [122, 101, 112]);
    assert_eq!(n.grid.orientation(), "RAS");
    assert_eq!(n.dtype().name(), "int32");
    let want =
        [[3.0, 0.0, 0.0, -177.95632934570312], [0.0, 3.0, 0.0, 11.319000244140625], [0.0, 0.0, 3.0, 94.3017578125]];
    for (row, w) in n.grid.affine().iter().zip(want) {
        for (a, b) in row.iter().zip(w) {
            assert!((a - b).abs() < 1e-4);
        }
    }
    let ct = n.to_image().unwrap();
    let min = ct.data().iter().copied().fold(f32::INFINITY, f32::min);
    let max = ct.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((min, max), (-1207.0, 3382.0));
}

#[test]
fn spleen_mask_volume_matches_totalsegmentator() {
    let (mask, _) = nifti::read_labels(data("totalseg/example_seg_fast/spleen.nii.gz")).unwrap();
    let counts = mask.label_counts();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts[1], 9630);
    let ml = counts[1] as f64 * mask.grid().voxel_volume_mm3() / 1000.0;
    assert!((ml - 260.01).abs() < 1e-9, "{ml}");
}

#[test]
fn all_head_and_neck_masks_match_the_reference_volumes() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(data("hn_oar/volumes_reference.json")).unwrap()).unwrap();
    let entries = reference.as_array().unwrap();
    assert_eq!(entries.len(), 63);
    for e in entries {
        let rel = format!("hn_oar/{}/{}.nii.gz", e["scan"].as_str().unwrap(), e["structure"].as_str().unwrap());
        let (mask, _) = nifti::read_labels(data(&rel)).unwrap();
        let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(mask.shape().to_vec(), shape, "{rel}");
        let voxels = mask.data().iter().filter(|&&v| v != 0).count() as u64;
        assert_eq!(voxels, e["voxels"].as_u64().unwrap(), "{rel}");
        let ml = voxels as f64 * mask.grid().voxel_volume_mm3() / 1000.0;
        // The reference is rounded to 4 decimals and used the NRRD's double spacing
        // (1.01 mm); the NIfTI holds it as float32 (1.0099999904632568 mm), a relative
        // difference of 2e-8 per axis. Agree to the rounding plus that.
        let want = e["volume_ml"].as_f64().unwrap();
        assert!((ml - want).abs() <= 0.5e-4 + 1e-7 * want, "{rel}: {ml} mL vs {want} mL");
    }
}
