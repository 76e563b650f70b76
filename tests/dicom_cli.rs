//! DICOM in the command line: `segment` on a folder of DICOM slices gives the labels
//! the same CT gives as NIfTI, and its RTSTRUCT / SEG pass the independent readers
//! (`scripts/check_dicom_outputs.py`); `inspect` lists series; `batch` takes DICOM
//! folders as cases. Uses the untrained demo package (fast): geometry, not anatomy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{demo, json, ok, repo, scratch, stderr, voxseg};
use serde_json::Value;
use voxseg::volume::nifti;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/dicom").join(name)
}

fn segment(ct: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = demo();
    let mut args = vec!["segment", ct.to_str().unwrap(), "-o", out.to_str().unwrap(), "--device", "cpu"];
    args.extend(["--model", &model]);
    args.extend(extra);
    voxseg(&args)
}

/// True when python3 has what `check_dicom_outputs.py` imports; under
/// VOXSEG_REQUIRE_PYTHON=1 (CI) their absence is a failure, never a skip.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pydicom, rt_utils, highdicom, nibabel, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("VOXSEG_REQUIRE_PYTHON").is_none(),
        "python3 with pydicom, rt-utils, highdicom, nibabel required (pip install pydicom rt-utils highdicom nibabel)"
    );
    ok
}

#[test]
fn dicom_series_segments_like_its_nifti_and_exports_rtstruct_and_seg() {
    let dir = scratch("same");
    let (from_nifti, from_dicom) = (dir.join("nifti"), dir.join("dicom"));
    let nii = repo().join("../shared/data/totalseg/example_ct_sm.nii.gz");
    ok(&segment(&nii, &from_nifti, &[]));
    ok(&segment(&fixture("full"), &from_dicom, &["--rtstruct", "--dicom-seg"]));
    let (a, _) = nifti::read_labels(from_nifti.join("labels.nii.gz")).unwrap();
    let (b, _) = nifti::read_labels(from_dicom.join("labels.nii.gz")).unwrap();
    // The DICOM series is stored LPS, the NIfTI RAS: compare voxel by voxel in space.
    let [nx, ny, nz] = b.shape();
    let mut same = 0usize;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = a.grid().world_to_voxel(b.grid().voxel_to_world([i as f64, j as f64, k as f64]));
                let [x, y, z] = v.map(|c| c.round() as usize);
                same += usize::from(a.at(x, y, z) == b.at(i, j, k));
            }
        }
    }
    let agreement = same as f64 / b.grid().len() as f64;
    eprintln!("NIfTI vs DICOM input: {same} of {} voxels agree ({agreement:.6})", b.grid().len());
    assert!(agreement >= 0.999, "labels agree on only {agreement}");
    // stats carry the TG-263 names.
    let stats: Value = serde_json::from_slice(&std::fs::read(from_dicom.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["structures"][0]["tg263"], "Spleen");
    let csv = std::fs::read_to_string(from_dicom.join("stats.csv")).unwrap();
    assert!(csv.starts_with("label,name,tg263,"), "{csv}");
    if !python_ready() {
        eprintln!("SKIPPED: python3 with pydicom, rt-utils, highdicom not available");
        return;
    }
    let mut check = Command::new("python3");
    check.arg(repo().join("scripts/check_dicom_outputs.py")).arg(fixture("full")).arg(from_dicom.join("labels.nii.gz"));
    check.arg("--rtstruct").arg(from_dicom.join("rtstruct.dcm")).arg("--seg").arg(from_dicom.join("seg.dcm"));
    for (id, name) in ["Spleen", "Kidney_R", "Kidney_L", "Liver"].iter().enumerate() {
        check.arg("--roi").arg(format!("{name}={}", id + 1));
    }
    let out = check.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    ok(&out);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rtstruct_needs_dicom_input_and_series_needs_a_folder() {
    let dir = scratch("usage");
    let nii = repo().join("../shared/data/totalseg/example_ct_sm.nii.gz");
    for extra in [&["--rtstruct"][..], &["--dicom-seg"], &["--series", "1.2.3"]] {
        let out = segment(&nii, &dir, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(stderr(&out).contains("DICOM"), "{extra:?}");
    }
    // Two CT series and no --series: exit 2, listing both; with --series it runs.
    let out = segment(&fixture("two_series"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--series"));
    let listed = json(&voxseg(&["inspect", fixture("two_series").to_str().unwrap(), "--json"]));
    let series = listed["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let small = series.iter().find(|s| s["slices"] == 2).unwrap();
    assert_eq!(small["modality"], "CT");
    ok(&segment(&fixture("two_series"), &dir, &["--series", small["uid"].as_str().unwrap()]));
    // A tilted series is refused as an input error.
    let out = segment(&fixture("bad_tilted"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("gantry tilt"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn batch_takes_dicom_folders_as_cases() {
    let cases = voxseg::batch::discover(&repo().join("tests/fixtures/dicom")).unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    for id in ["explicit", "j2k", "full", "bad_tilted", "two_series"] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    assert!(!ids.contains(&"bad_empty"), "a folder without DICOM files is no case");
    let dir = scratch("batch");
    let csv = dir.join("cases.csv");
    let list: Vec<String> = ["explicit", "rle", "bad_tilted", "two_series"]
        .iter()
        .map(|n| format!("{n},{}", fixture(n).display()))
        .collect();
    std::fs::write(&csv, format!("case_id,path\n{}\n", list.join("\n"))).unwrap();
    let out_dir = dir.join("out");
    let out = voxseg(&[
        "batch",
        csv.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--model",
        &demo(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows: Vec<csv::StringRecord> =
        csv::Reader::from_path(out_dir.join("volumes.csv")).unwrap().records().map(|r| r.unwrap()).collect();
    let status = |id: &str| rows.iter().find(|r| &r[0] == id).map(|r| (r[1].to_string(), r[2].to_string())).unwrap();
    assert_eq!(status("explicit").0, "ok");
    assert_eq!(status("rle").0, "ok");
    assert!(status("bad_tilted").1.contains("gantry tilt"), "{:?}", status("bad_tilted"));
    assert!(status("two_series").1.contains("--series"), "{:?}", status("two_series"));
    std::fs::remove_dir_all(dir).unwrap();
}
