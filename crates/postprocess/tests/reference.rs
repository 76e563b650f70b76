//! Against scipy.ndimage, scikit-image and MedPy-convention references
//! (scripts/make_postprocess_fixtures.py) and TotalSegmentator's own statistics.

use std::collections::HashMap;

use serde_json::Value;
use voxseg_postprocess::{clean, compare, measure, Cleanup, Components, Connectivity};
use voxseg_volume::{nifti, LabelMap};

fn fixture(name: &str) -> String {
    format!("../../tests/fixtures/postprocess/{name}")
}

fn data(rel: &str) -> String {
    format!("../../../shared/data/{rel}")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn labels(path: &str) -> LabelMap {
    nifti::read_labels(path).unwrap_or_else(|e| panic!("{e}")).0
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[test]
fn components_equal_scipy_label_up_to_numbering() {
    let map = labels(&fixture("cc_labels.nii.gz"));
    let counts = &expected()["cc_counts"];
    for (n, conn) in [(6, Connectivity::Faces), (18, Connectivity::Edges), (26, Connectivity::Corners)] {
        let want = nifti::read(fixture(&format!("cc_{n}.nii.gz"))).unwrap().to_labels().unwrap();
        let cc = Components::new(map.data(), map.shape(), conn);
        for label in 1..=3u16 {
            let got = cc.components().iter().filter(|c| c.label == label).count() as u64;
            assert_eq!(got, counts[format!("{n}/{label}")].as_u64().unwrap(), "{n}-connected label {label}");
        }
        // Same partition: the map between our ids and scipy's is one-to-one.
        let (mut ours_to_theirs, mut theirs_to_ours) = (HashMap::new(), HashMap::new());
        for (&a, &b) in cc.ids().iter().zip(want.data()) {
            assert_eq!(a == 0, b == 0);
            assert_eq!(*ours_to_theirs.entry(a).or_insert(b), b, "{n}-connected: component {a} split");
            assert_eq!(*theirs_to_ours.entry(b).or_insert(a), a, "{n}-connected: components merged into {b}");
        }
        // Sizes agree with the ids they summarise.
        let ids = cc.ids();
        for (i, c) in cc.components().iter().enumerate() {
            assert_eq!(ids.iter().filter(|&&v| v == i as u32 + 1).count() as u64, c.voxels);
        }
    }
}

#[test]
fn fill_holes_matches_binary_fill_holes_rule() {
    let mut map = labels(&fixture("holes.nii.gz"));
    let want = labels(&fixture("holes_filled.nii.gz"));
    let rule = Cleanup { keep_largest: None, min_island_mm3: 0.0, fill_holes: true };
    let reports = clean(&mut map, Connectivity::Corners, |_| rule);
    assert_eq!(map.data(), want.data());
    let filled: u64 = reports.iter().map(|r| r.filled_voxels).sum();
    let diff = labels(&fixture("holes.nii.gz")).data().iter().zip(want.data()).filter(|(a, b)| a != b).count();
    assert_eq!(filled, diff as u64);
}

#[test]
fn keep_largest_and_islands() {
    let mut map = labels(&fixture("cc_labels.nii.gz"));
    let before = Components::new(map.data(), map.shape(), Connectivity::Corners);
    let mut sizes: Vec<u64> = before.components().iter().filter(|c| c.label == 1).map(|c| c.voxels).collect::<Vec<_>>();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let voxel_mm3 = map.grid().voxel_volume_mm3();
    let reports = clean(&mut map, Connectivity::Corners, |l| match l {
        1 => Cleanup { keep_largest: Some(2), min_island_mm3: 0.0, fill_holes: false },
        _ => Cleanup { keep_largest: None, min_island_mm3: 3.5 * voxel_mm3, fill_holes: false },
    });
    assert_eq!(reports[0].raw_component_voxels, sizes);
    let after = Components::new(map.data(), map.shape(), Connectivity::Corners);
    let kept: Vec<u64> = after.components().iter().filter(|c| c.label == 1).map(|c| c.voxels).collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept.iter().sum::<u64>(), sizes[0] + sizes[1]);
    assert!(after.components().iter().filter(|c| c.label > 1).all(|c| c.voxels >= 4));
    // Label 3 is mostly single voxels: they go, nothing else changes.
    assert!(after.components().iter().any(|c| c.label == 2));
}

#[test]
fn surface_area_matches_skimage_marching_cubes() {
    for e in expected()["surface_area"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap().replacen("../shared/data/", "", 1);
        let mask = labels(&data(&path));
        let m = &measure(&mask, None, &[1], Connectivity::Corners).unwrap()[0];
        let want = e["surface_area_mm2"].as_f64().unwrap();
        let got = m.surface_area_mm2.unwrap();
        assert!(close(got, want, 1e-9), "{path}: {got} vs skimage {want}");
        assert!(m.sphericity.unwrap() > 0.0 && m.sphericity.unwrap() < 1.0);
    }
}

#[test]
fn reproduces_totalsegmentator_statistics_and_numpy_hu() {
    let ct = nifti::read_image(data("totalseg/example_ct_sm.nii.gz")).unwrap().0;
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(data("totalseg/example_seg_fast/statistics.json")).unwrap())
            .unwrap();
    let hu = &expected()["hu"];
    for organ in ["spleen", "liver", "kidney_left", "kidney_right"] {
        let mask = labels(&data(&format!("totalseg/example_seg_fast/{organ}.nii.gz")));
        let m = &measure(&mask, Some(&ct), &[1], Connectivity::Corners).unwrap()[0];
        let ts = &stats[organ];
        assert!(close(m.volume_ml * 1000.0, ts["volume"].as_f64().unwrap(), 1e-9), "{organ} volume");
        if m.voxels == 0 {
            continue;
        }
        assert!((m.mean_hu.unwrap() - ts["intensity"].as_f64().unwrap()).abs() < 0.01, "{organ} mean HU");
        let want = &hu[organ];
        assert_eq!(m.voxels, want["voxels"].as_u64().unwrap());
        for key in ["mean_hu", "std_hu", "min_hu", "max_hu", "median_hu"] {
            let got = match key {
                "mean_hu" => m.mean_hu,
                "std_hu" => m.std_hu,
                "min_hu" => m.min_hu,
                "max_hu" => m.max_hu,
                _ => m.median_hu,
            }
            .unwrap();
            assert!(close(got, want[key].as_f64().unwrap(), 1e-9), "{organ} {key}: {got} vs {}", want[key]);
        }
    }
    let spleen = labels(&data("totalseg/example_seg_fast/spleen.nii.gz"));
    let m = &measure(&spleen, Some(&ct), &[1], Connectivity::Corners).unwrap()[0];
    assert_eq!(m.voxels, 9630);
    assert!((m.volume_ml - 260.01).abs() < 1e-9);
    assert!(m.touches_border, "the spleen reaches the top slice of the small CT");
    // The centroid lies inside the bounding box, in RAS mm.
    let [lo, hi] = m.bbox_ras_mm.unwrap();
    let c = m.centroid_ras_mm.unwrap();
    assert!((0..3).all(|a| lo[a] <= c[a] && c[a] <= hi[a]));
}

#[test]
fn ct_on_another_grid_is_refused() {
    let ct = nifti::read_image(data("totalseg/example_ct.nii.gz")).unwrap().0;
    let spleen = labels(&data("totalseg/example_seg_fast/spleen.nii.gz"));
    let err = measure(&spleen, Some(&ct), &[], Connectivity::Corners).unwrap_err().to_string();
    assert!(err.contains("grids differ"), "{err}");
}

fn check_agreement(got: &voxseg_postprocess::Agreement, want: &Value, what: &str) {
    let pairs = [
        ("dice", Some(got.dice)),
        ("jaccard", Some(got.jaccard)),
        ("volume_pred_ml", Some(got.volume_pred_ml)),
        ("volume_ref_ml", Some(got.volume_ref_ml)),
        ("hd_mm", got.hd_mm),
        ("hd95_mm", got.hd95_mm),
        ("assd_mm", got.assd_mm),
    ];
    for (key, value) in pairs {
        let w = want[key].as_f64().unwrap();
        let g = value.unwrap_or_else(|| panic!("{what}: {key} missing"));
        assert!(close(g, w, 1e-9), "{what}: {key} {g} vs {w}");
    }
}

#[test]
fn compare_matches_medpy_conventions() {
    let expected = expected();
    let fast = labels(&data("totalseg/example_seg_fast.nii.gz"));
    let normal = labels(&data("totalseg/example_seg.nii.gz"));
    let want = expected["compare_fast_vs_normal"].as_object().unwrap();
    let labels_wanted: Vec<u16> = want.keys().map(|k| k.parse().unwrap()).collect();
    let got = compare(&fast, &normal, &labels_wanted).unwrap();
    assert!(got.len() > 10);
    for g in &got {
        check_agreement(g, &want[&g.label.to_string()], &format!("label {}", g.label));
    }
    // Anisotropic spacing (about 1 x 1 x 2.5 mm).
    let reference = labels(&data("hn_oar/0522c0014/Parotid-Lt.nii.gz"));
    let pred = labels(&fixture("parotid_lt_dilated_shifted.nii.gz"));
    let got = compare(&pred, &reference, &[1]).unwrap();
    check_agreement(&got[0], &expected["compare_parotid"], "parotid");
    // A map against itself.
    let same = compare(&reference, &reference, &[1]).unwrap();
    assert_eq!((same[0].dice, same[0].hd_mm, same[0].assd_mm), (1.0, Some(0.0), Some(0.0)));
}

#[test]
fn head_and_neck_volumes_match_reference() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(data("hn_oar/volumes_reference.json")).unwrap()).unwrap();
    for e in reference.as_array().unwrap() {
        let rel = format!("hn_oar/{}/{}.nii.gz", e["scan"].as_str().unwrap(), e["structure"].as_str().unwrap());
        let mask = labels(&data(&rel));
        let m = &measure(&mask, None, &[1], Connectivity::Corners).unwrap()[0];
        assert_eq!(m.voxels, e["voxels"].as_u64().unwrap(), "{rel}");
        // The reference is rounded to 4 decimals and used the NRRD's double spacing;
        // NIfTI stores spacing as float32 (relative error up to 6e-8 per axis).
        let want = e["volume_ml"].as_f64().unwrap();
        assert!((m.volume_ml - want).abs() <= 0.5e-4 + 2e-7 * want, "{rel}: {} vs {want}", m.volume_ml);
    }
}
