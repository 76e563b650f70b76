//! `read_series` against pydicom's reading of the same files
//! (`scripts/make_dicom_fixtures.py` wrote both), and every bad series refused with
//! its own error. `dicom_wild/` holds DICOM as anonymisers and PACS exports leave it
//! (blanked UIDs, DICOMDIR trees, non-DICOM files, deflated, enhanced multi-frame).

use std::path::{Path, PathBuf};

use serde_json::Value;
use voxseg_dicom::{list_series, read_series, ErrorKind};
use voxseg_volume::{nifti, Image};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dicom")
}

fn wild() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dicom_wild")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn expected_wild() -> Value {
    serde_json::from_slice(&std::fs::read(wild().join("expected.json")).unwrap()).unwrap()
}

/// Geometry to 1e-4 mm, HU exact (sums, index-weighted sums, probes), slice order.
fn check(name: &str, image: &Image, uids: &[String], want: &Value) {
    let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(image.shape().to_vec(), shape, "{name}: shape");
    let affine = image.grid().affine();
    for r in 0..4 {
        for c in 0..4 {
            let w = want["affine"][r][c].as_f64().unwrap();
            assert!((affine[r][c] - w).abs() <= 1e-4, "{name}: affine[{r}][{c}] {} vs pydicom {w}", affine[r][c]);
        }
    }
    let (mut sum, mut weighted) = (0f64, 0f64);
    for (n, &v) in image.data().iter().enumerate() {
        sum += v as f64;
        weighted += v as f64 * ((n % 9973) + 1) as f64;
    }
    assert_eq!(sum, want["hu_sum"].as_f64().unwrap(), "{name}: HU sum");
    assert_eq!(weighted, want["hu_weighted_sum"].as_f64().unwrap(), "{name}: index-weighted HU sum");
    for probe in want["probes"].as_array().unwrap() {
        let ijk: Vec<usize> = probe["ijk"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(*image.at(ijk[0], ijk[1], ijk[2]) as f64, probe["hu"].as_f64().unwrap(), "{name}: HU at {ijk:?}");
        // pydicom's position of this voxel from its own slice's IPP, not from an affine.
        let world = image.grid().voxel_to_world([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64]);
        for (a, p) in world.iter().zip(probe["ras"].as_array().unwrap()) {
            assert!((a - p.as_f64().unwrap()).abs() <= 1e-4, "{name}: RAS of {ijk:?}: {world:?} vs {p}");
        }
    }
    let want_uids: Vec<&str> =
        want["sop_instance_uids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(uids, want_uids, "{name}: slice order");
}

#[test]
fn every_good_series_reads_as_pydicom_reads_it() {
    let want = expected();
    for name in ["full", "explicit", "implicit", "j2k", "jpeg_lossless", "rle", "shuffled", "oblique"] {
        let (image, series) = read_series(&fixtures().join(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let uids: Vec<String> = series.slices.iter().map(|s| s.sop_instance_uid.clone()).collect();
        check(name, &image, &uids, &want[name]);
        assert_eq!(series.series_uid, want[name]["series_uid"].as_str().unwrap());
    }
}

#[test]
fn dicom_voxels_equal_the_nifti_they_were_made_from() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/totalseg/example_ct_sm.nii.gz");
    let (ct, _) = nifti::read_image(dir).unwrap();
    let (dcm, _) = read_series(&fixtures().join("full"), None).unwrap();
    assert_eq!(dcm.grid().len(), ct.grid().len());
    // The DICOM series is stored LPS, the NIfTI RAS: compare voxel by voxel in space.
    let [nx, ny, nz] = dcm.shape();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = ct.grid().world_to_voxel(dcm.grid().voxel_to_world([i as f64, j as f64, k as f64]));
                let idx = v.map(|x| x.round());
                assert!(v.iter().zip(idx).all(|(a, b)| (a - b).abs() < 1e-4), "voxel centres must coincide: {v:?}");
                let [a, b, c] = idx.map(|x| x as usize);
                assert_eq!(dcm.at(i, j, k), ct.at(a, b, c), "voxel ({i}, {j}, {k})");
            }
        }
    }
}

#[test]
fn two_series_are_listed_and_chosen_by_uid() {
    let dir = fixtures().join("two_series");
    let want = &expected()["two_series"];
    let listed = list_series(&dir).unwrap().series;
    assert_eq!(listed.len(), 2);
    let err = read_series(&dir, None).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::SeveralSeries { count: 2, .. }), "{err}");
    for key in ["a", "b"] {
        let uid = want[key]["series_uid"].as_str().unwrap();
        let summary = listed.iter().find(|s| s.key == uid).unwrap();
        assert_eq!(summary.uid.as_deref(), Some(uid));
        assert_eq!(summary.modality, "CT");
        let (image, series) = read_series(&dir, Some(uid)).unwrap();
        assert_eq!(Some(image.shape()), summary.shape);
        let uids: Vec<String> = series.slices.iter().map(|s| s.sop_instance_uid.clone()).collect();
        check(key, &image, &uids, &want[key]);
    }
    let err = read_series(&dir, Some("1.2.3")).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::SeriesNotFound { .. }), "{err}");
}

#[test]
fn bad_series_are_refused_with_their_own_error() {
    type Expect = fn(&ErrorKind) -> bool;
    let cases: [(&str, Expect); 9] = [
        ("bad_tilted", |k| matches!(k, ErrorKind::GantryTilt { degrees } if (degrees - 15.0).abs() < 0.1)),
        ("bad_missing", |k| matches!(k, ErrorKind::MissingSlices { missing: 1, .. })),
        ("bad_duplicate", |k| matches!(k, ErrorKind::DuplicatePosition { .. })),
        ("bad_uneven", |k| matches!(k, ErrorKind::UnevenSpacing { .. })),
        ("bad_mr", |k| matches!(k, ErrorKind::NotCt { modality, .. } if modality == "MR")),
        ("bad_one_slice", |k| matches!(k, ErrorKind::TooFewSlices { count: 1, .. })),
        ("bad_mixed_size", |k| matches!(k, ErrorKind::Inconsistent { what: "size", .. })),
        ("bad_jpegls", |k| matches!(k, ErrorKind::Undecodable { uid, .. } if uid == "1.2.840.10008.1.2.4.80")),
        ("bad_empty", |k| matches!(k, ErrorKind::NoDicom { skipped: 1 })),
    ];
    for (name, ok) in cases {
        let err = read_series(&fixtures().join(name), None).unwrap_err();
        assert!(ok(&err.kind), "{name}: wrong error: {err}");
        // Messages name the folder or the file.
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

/// Slice references: SOP instance (the file meta's where SOPInstanceUID is blank)
/// and frame number, in slice order.
fn refs(series: &voxseg_dicom::CtSeries) -> (Vec<String>, Vec<Value>) {
    let uids = series.slices.iter().map(|s| s.sop_instance_uid.clone()).collect();
    let frames = series.slices.iter().map(|s| s.frame.map_or(Value::Null, Value::from)).collect();
    (uids, frames)
}

#[test]
fn blanked_uids_deflated_and_multiframe_read_as_pydicom_reads_them() {
    let want = expected_wild();
    for name in ["blank_uids", "deflated", "multiframe"] {
        let (image, series) = read_series(&wild().join(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (uids, frames) = refs(&series);
        check(name, &image, &uids, &want[name]);
        assert_eq!(frames, want[name]["frames"].as_array().unwrap().clone(), "{name}: frame numbers");
    }
    // Anonymised: no series, study or instance UIDs. Grouped by what the files
    // share, referenced by the file meta's instance UIDs, with derived UIDs noted.
    let dir = wild().join("blank_uids");
    let (_, series) = read_series(&dir, None).unwrap();
    assert!(series.key.starts_with("nouid-"), "{}", series.key);
    assert_eq!(series.skipped_files, want["blank_uids"]["skipped_files"].as_u64().unwrap() as usize);
    for uid in [&series.series_uid, &series.study_uid] {
        assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
    }
    assert_eq!(series.notes.len(), 3, "{:?}", series.notes);
    // Derived UIDs and keys are the same in every run (and so across RTSTRUCT and SEG).
    let (_, again) = read_series(&dir, Some(&series.key)).unwrap();
    assert_eq!((again.series_uid, again.study_uid), (series.series_uid.clone(), series.study_uid.clone()));
    let listed = list_series(&dir).unwrap();
    assert_eq!(listed.series.len(), 1);
    assert_eq!((listed.series[0].key.as_str(), listed.series[0].uid.as_ref()), (series.key.as_str(), None));
    // The enhanced CT: one file, eight frames, each referenced by its number.
    let (_, series) = read_series(&wild().join("multiframe"), None).unwrap();
    assert!(series.slices.iter().all(|s| s.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.2"));
    let summary = &list_series(&wild().join("multiframe")).unwrap().series[0];
    assert_eq!((summary.files, summary.slices, summary.shape), (1, 8, Some([48, 40, 8])));
}

#[test]
fn a_pacs_export_tree_lists_its_series_and_reads_each_by_key() {
    let dir = wild().join("pacs_export");
    let want = &expected_wild()["pacs_export"];
    let folder = list_series(&dir).unwrap();
    // README.TXT, a thumbnail and the DICOMDIR itself.
    assert_eq!(folder.skipped_files, want["skipped_files"].as_u64().unwrap() as usize);
    assert_eq!(folder.series.len(), 2, "{:?}", folder.series);
    let err = read_series(&dir, None).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::SeveralSeries { count: 2, .. }), "{err}");
    for s in &folder.series {
        assert!(err.to_string().contains(&s.key), "{err}");
    }
    for name in ["abdomen", "short"] {
        let s = folder.series.iter().find(|s| s.description == name).unwrap();
        assert!(s.uid.is_none() && s.key.starts_with("nouid-"));
        assert_eq!(s.folders.len(), 1);
        assert!(s.folders[0].starts_with("PT000000/ST000000/SE"), "{:?}", s.folders);
        let (image, series) = read_series(&dir, Some(&s.key)).unwrap();
        assert_eq!(Some(image.shape()), s.shape);
        let spacing = s.spacing_mm.unwrap();
        assert!(spacing.iter().zip(image.grid().spacing()).all(|(a, b)| (a - b).abs() < 1e-4), "{spacing:?}");
        let (uids, _) = refs(&series);
        check(name, &image, &uids, &want[name]);
    }
}

#[test]
fn stacks_nothing_tells_apart_are_refused_with_the_candidates() {
    let err = read_series(&wild().join("ambiguous"), None).unwrap_err();
    let ErrorKind::Ambiguous { count, candidates, .. } = &err.kind else { panic!("wrong error: {err}") };
    assert_eq!(*count, 16);
    assert!(candidates.contains("stack 1: 8 files") && candidates.contains("stack 2: 8 files"), "{err}");
    assert!(err.to_string().contains("a folder of its own"), "{err}");
}
