//! DICOM in the command line: `segment` on a folder of DICOM slices gives the labels
//! the same CT gives as NIfTI, and its RTSTRUCT / SEG pass the independent readers
//! (`scripts/check_dicom_outputs.py`); `inspect` lists series; `batch` takes DICOM
//! folders as cases. Uses the untrained demo package (fast): geometry, not anatomy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{agreement_in_space, demo, json, ok, repo, scratch, stderr, voxseg};
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

fn wild(name: &str) -> PathBuf {
    repo().join("tests/fixtures/dicom_wild").join(name)
}

/// Runs `check_dicom_outputs.py` on a case's outputs with the demo package's ROIs.
fn check_outputs(series: &Path, out: &Path) {
    let mut check = Command::new("python3");
    check.arg(repo().join("scripts/check_dicom_outputs.py")).arg(series).arg(out.join("labels.nii.gz"));
    check.arg("--rtstruct").arg(out.join("rtstruct.dcm")).arg("--seg").arg(out.join("seg.dcm"));
    for (id, name) in ["Spleen", "Kidney_R", "Kidney_L", "Liver"].iter().enumerate() {
        check.arg("--roi").arg(format!("{name}={}", id + 1));
    }
    let out = check.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    ok(&out);
}

#[test]
fn dicom_series_segments_like_its_nifti_and_exports_rtstruct_and_seg() {
    let dir = scratch("same");
    let (from_nifti, from_dicom) = (dir.join("nifti"), dir.join("dicom"));
    let nii = repo().join("../shared/data/totalseg/example_ct_sm.nii.gz");
    ok(&segment(&nii, &from_nifti, &[]));
    ok(&segment(&fixture("full"), &from_dicom, &["--rtstruct", "--dicom-seg"]));
    let agreement = agreement_in_space(&from_nifti.join("labels.nii.gz"), &from_dicom.join("labels.nii.gz"));
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
    check_outputs(&fixture("full"), &from_dicom);
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

#[test]
fn anonymised_deflated_and_enhanced_series_segment_like_their_nifti() {
    let dir = scratch("wild");
    ok(&segment(&wild("crop.nii.gz"), &dir.join("nifti"), &[]));
    for name in ["blank_uids", "deflated", "multiframe"] {
        let out = segment(&wild(name), &dir.join(name), &["--rtstruct", "--dicom-seg"]);
        ok(&out);
        let share = agreement_in_space(&dir.join("nifti/labels.nii.gz"), &dir.join(name).join("labels.nii.gz"));
        assert_eq!(share, 1.0, "{name}");
        assert!(dir.join(name).join("rtstruct.dcm").is_file() && dir.join(name).join("seg.dcm").is_file());
        if name == "blank_uids" {
            // Told what was skipped and what was made up.
            let err = stderr(&out);
            assert!(err.contains("skipped 4 file(s)") && err.contains("SeriesInstanceUID is blank"), "{err}");
        }
    }
    if python_ready() {
        check_outputs(&wild("blank_uids"), &dir.join("blank_uids"));
        check_outputs(&wild("multiframe"), &dir.join("multiframe"));
    } else {
        eprintln!("SKIPPED: python3 with pydicom, rt-utils, highdicom not available");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_pacs_export_is_listed_and_its_series_chosen_by_key() {
    let listed = json(&voxseg(&["inspect", wild("pacs_export").to_str().unwrap(), "--json"]));
    assert_eq!(listed["skipped_files"], 3, "{listed}");
    let series = listed["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    for s in series {
        assert!(s["uid"].is_null() && s["key"].as_str().unwrap().starts_with("nouid-"), "{s}");
        assert_eq!(s["spacing_mm"].as_array().unwrap().len(), 3, "{s}");
    }
    let short = series.iter().find(|s| s["description"] == "short").unwrap();
    assert_eq!((short["slices"].as_u64(), short["shape"][2].as_u64()), (Some(3), Some(3)));
    let dir = scratch("pacs");
    let out = segment(&wild("pacs_export"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    for s in series {
        assert!(stderr(&out).contains(s["key"].as_str().unwrap()), "{}", stderr(&out));
    }
    assert!(stderr(&out).contains("--series"), "{}", stderr(&out));
    ok(&segment(&wild("pacs_export"), &dir, &["--series", short["key"].as_str().unwrap()]));
    let (labels, _) = nifti::read_labels(dir.join("labels.nii.gz")).unwrap();
    assert_eq!(labels.shape(), [48, 40, 3]);
    // Two stacks nothing tells apart: refused, naming the candidates.
    let out = segment(&wild("ambiguous"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("stack 2: 8 files"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn batch_writes_rtstruct_and_seg_beside_each_dicom_case_and_resumes() {
    let ids: Vec<String> =
        voxseg::batch::discover(&repo().join("tests/fixtures/dicom_wild")).unwrap().into_iter().map(|c| c.id).collect();
    // Each series folder of the DICOMDIR tree is a case; the tree's root is none.
    for id in ["blank_uids", "multiframe", "pacs_export__PT000000__ST000000__SE000000", "crop"] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
    assert!(!ids.iter().any(|i| i == "pacs_export"), "{ids:?}");
    let dir = scratch("batch-rt");
    let short = json(&voxseg(&["inspect", wild("pacs_export").to_str().unwrap(), "--json"]))["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["description"] == "short")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let csv = dir.join("cases.csv");
    let rows = [
        format!("blank,{},", wild("blank_uids").display()),
        format!("enhanced,{},", wild("multiframe").display()),
        format!("pacs_short,{},{short}", wild("pacs_export").display()),
        format!("nifti,{},", wild("crop.nii.gz").display()),
    ];
    std::fs::write(&csv, format!("case_id,path,series\n{}\n", rows.join("\n"))).unwrap();
    let out_dir = dir.join("out");
    let run = |extra: &[&str]| {
        let (csv, out) = (csv.to_str().unwrap(), out_dir.to_str().unwrap());
        let mut args = vec!["batch", csv, "-o", out, "--device", "cpu", "--model"];
        let model = demo();
        args.push(&model);
        args.extend(["--rtstruct", "--dicom-seg"]);
        args.extend(extra);
        voxseg(&args)
    };
    ok(&run(&[]));
    for case in ["blank", "enhanced", "pacs_short"] {
        for file in ["labels.nii.gz", "rtstruct.dcm", "seg.dcm"] {
            assert!(out_dir.join(case).join(file).is_file(), "{case}/{file}");
        }
    }
    // A NIfTI case has no slices to reference: labels, no DICOM objects.
    assert!(out_dir.join("nifti/labels.nii.gz").is_file() && !out_dir.join("nifti/rtstruct.dcm").exists());
    // A kill before the last row was synced: that case is redone, with its DICOM objects.
    let results = out_dir.join("volumes.csv");
    let text = std::fs::read_to_string(&results).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.last().unwrap().split(',').next().unwrap().to_string();
    std::fs::write(&results, format!("{}\n", lines[..lines.len() - 1].join("\n"))).unwrap();
    std::fs::remove_file(out_dir.join(&last).join("rtstruct.dcm")).ok();
    let kept = std::fs::metadata(out_dir.join("blank/seg.dcm")).unwrap().modified().unwrap();
    ok(&run(&["--resume"]));
    let text = std::fs::read_to_string(&results).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.lines().skip(1).all(|l| l.split(',').nth(1) == Some("ok")), "{text}");
    if last != "nifti" {
        assert!(out_dir.join(&last).join("rtstruct.dcm").is_file(), "{last} redone without its RTSTRUCT");
    }
    assert_eq!(
        std::fs::metadata(out_dir.join("blank/seg.dcm")).unwrap().modified().unwrap(),
        kept,
        "finished case redone"
    );
    if python_ready() {
        check_outputs(&wild("blank_uids"), &out_dir.join("blank"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
