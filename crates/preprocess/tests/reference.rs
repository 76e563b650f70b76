//! Against nibabel + scipy.ndimage references (scripts/make_preprocess_fixtures.py)
//! on a real crop of the TotalSegmentator example CT and its label map.

mod common;

use common::*;
use voxseg_preprocess::{
    body_window, grid_with_spacing, reorient, resample_argmax, resample_image, resample_nearest, BodyCrop, Orientation,
};
use voxseg_volume::{nifti, Volume};

#[test]
fn reorienting_matches_nibabel_bit_exactly() {
    for kind in ["ct", "seg"] {
        let ras = as_u16(kind, "ras");
        for code in ["lps", "pir"] {
            let theirs = as_u16(kind, code);
            let (mine, _) = reorient(ras.clone(), code.parse().unwrap()).unwrap();
            assert_eq!(mine.data(), theirs.data(), "{kind} RAS -> {code}");
            assert_grid_close(mine.grid(), theirs.grid(), 1e-4);

            let (canonical, record) = reorient(theirs.clone(), Orientation::default()).unwrap();
            assert_eq!(canonical.data(), ras.data(), "{kind} {code} -> RAS");
            assert_grid_close(canonical.grid(), ras.grid(), 1e-4);
            assert_eq!(canonical.grid().orientation(), "RAS");
            // Undo restores the input exactly: voxels and the very same affine.
            assert_eq!(record.undo(canonical).unwrap(), theirs);
        }
    }
}

/// Both fixture kinds as u16 voxels, so one test covers images and labels.
fn as_u16(kind: &str, code: &str) -> Volume<u16> {
    let path = fixture(&format!("{kind}_{code}.nii.gz"));
    let n = nifti::read(path).unwrap();
    let image = n.to_image().unwrap();
    // int16 HU shifted to be non-negative: a bijection, so exactness is preserved.
    image.map(|&v| (v + 2048.0) as u16)
}

#[test]
fn trilinear_matches_scipy_order_1() {
    let ct = image("ct_ras");
    let aniso = grid_with_spacing(ct.grid(), spacing(&reference()["aniso_spacing"])).unwrap();
    let want = image("ct_aniso");
    assert_grid_close(&aniso, want.grid(), 1e-4);
    let got = resample_image(&ct, &aniso).unwrap();
    let diff = max_abs_diff(got.data(), want.data());
    assert!(diff <= 1e-3, "anisotropic: max |diff| {diff} HU");

    let coarse = grid_with_spacing(ct.grid(), spacing(&reference()["coarse_spacing"])).unwrap();
    let down = resample_image(&ct, &coarse).unwrap();
    let want = image("ct_6mm");
    assert_grid_close(down.grid(), want.grid(), 1e-4);
    let diff = max_abs_diff(down.data(), want.data());
    assert!(diff <= 1e-3, "to 6 mm: max |diff| {diff} HU");

    let back = resample_image(&down, ct.grid()).unwrap();
    assert_eq!(back.grid(), ct.grid());
    let diff = max_abs_diff(back.data(), image("ct_6mm_back").data());
    assert!(diff <= 1e-3, "back from 6 mm: max |diff| {diff} HU");
}

#[test]
fn nearest_matches_scipy_order_0() {
    let seg = labels("seg_ras");
    let aniso = grid_with_spacing(seg.grid(), spacing(&reference()["aniso_spacing"])).unwrap();
    assert_eq!(resample_nearest(&seg, &aniso).unwrap().data(), labels("seg_aniso").data());

    let coarse = grid_with_spacing(seg.grid(), spacing(&reference()["coarse_spacing"])).unwrap();
    let down = resample_nearest(&seg, &coarse).unwrap();
    assert_eq!(down.data(), labels("seg_6mm").data());
    let back = resample_nearest(&down, seg.grid()).unwrap();
    assert_eq!(back.data(), labels("seg_6mm_back").data());
}

#[test]
fn argmax_of_resampled_probabilities_matches_scipy() {
    let seg = labels("seg_ras");
    let classes: Vec<u16> =
        reference()["classes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as u16).collect();
    let coarse = grid_with_spacing(seg.grid(), spacing(&reference()["coarse_spacing"])).unwrap();
    // One-hot on the native grid, trilinear to 6 mm: the soft output a coarse network gives.
    let mut probabilities = Vec::new();
    for &class in &classes {
        let one_hot = seg.map(|&l| f32::from(l == class));
        probabilities.extend_from_slice(resample_image(&one_hot, &coarse).unwrap().data());
    }
    let back = resample_argmax(&probabilities, &coarse, seg.grid()).unwrap();
    assert_eq!(back.grid(), seg.grid());
    let got: Vec<u16> = back.data().iter().map(|&c| classes[c as usize]).collect();
    assert_eq!(got, labels("seg_argmax_back").data());
}

#[test]
fn body_box_matches_numpy() {
    let (ct, _) = nifti::read_image(data("totalseg/example_ct.nii.gz")).unwrap();
    for case in reference()["body"].as_array().unwrap() {
        let crop = BodyCrop {
            threshold_hu: case["threshold_hu"].as_f64().unwrap() as f32,
            margin_mm: case["margin_mm"].as_f64().unwrap(),
        };
        let window = body_window(&ct, &crop).unwrap();
        let start: Vec<i64> = case["start"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let shape: Vec<usize> =
            case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(window.start().to_vec(), start, "{crop:?}");
        assert_eq!(window.grid().shape().to_vec(), shape, "{crop:?}");
        // The crop's voxel 0 is the source voxel `start`, physically.
        let s = window.start().map(|v| v as f64);
        let (a, b) = (window.grid().voxel_to_world([0.0; 3]), ct.grid().voxel_to_world(s));
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9));
    }
}
