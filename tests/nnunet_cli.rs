//! nnU-Net v2 folders in the command line: `segment --model FOLDER` and
//! `import FOLDER` give the labels an independent numpy transcription of nnU-Net's
//! inference gives (tests/fixtures/nnunet/*_labels.nii.gz, from
//! scripts/make_nnunet_fixtures.py) on the CT's own grid, with the names of
//! dataset.json; a DICOM series gets the same labels and an RTSTRUCT. The folders hold
//! random weights: these check the engine, not anatomy.

mod common;

use std::path::{Path, PathBuf};

use common::{agreement_in_space, ok, repo, scratch, shared, stderr, voxseg};
use serde_json::Value;
use voxseg::volume::nifti;

fn folder(tag: &str) -> PathBuf {
    repo().join(match tag {
        "plain" => "tests/fixtures/nnunet/Dataset901_MiniPlain/nnUNetTrainer__nnUNetPlans__3d_fullres",
        _ => "tests/fixtures/nnunet/Dataset902_MiniResEnc/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
    })
}

/// Fraction of voxels where the labels in `out` equal nnU-Net's (numpy) labels.
fn agreement_with_reference(out: &Path, tag: &str) -> f64 {
    let (got, _) = nifti::read_labels(out.join("labels.nii.gz")).unwrap();
    let (want, _) = nifti::read_labels(repo().join(format!("tests/fixtures/nnunet/{tag}_labels.nii.gz"))).unwrap();
    assert_eq!(got.grid(), want.grid(), "labels are not on the CT's grid");
    let same = got.data().iter().zip(want.data()).filter(|(a, b)| a == b).count();
    same as f64 / got.data().len() as f64
}

fn segment(model: &Path, ct: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["segment", ct.to_str().unwrap(), "-o", out.to_str().unwrap(), "--device", "cpu"];
    args.extend(["--model", model.to_str().unwrap()]);
    args.extend(extra);
    ok(&voxseg(&args));
}

#[test]
fn a_training_folder_runs_as_nnunet_runs_it() {
    let dir = scratch("nnunet-folder");
    let ct = shared("totalseg/example_ct_sm.nii.gz");
    for tag in ["plain", "resenc"] {
        let out = dir.join(tag);
        segment(&folder(tag), &ct, &out, &[]);
        let agreement = agreement_with_reference(&out, tag);
        assert!(agreement >= 0.9999, "{tag}: labels agree with nnU-Net's on {agreement}");
        let stats: Value = serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
        let names: Vec<(&str, &str)> = stats["structures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["tg263"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("spleen", "Spleen"), ("liver", "Liver")], "{tag}");
        assert_eq!(stats["inference"], "sliding-window");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_imported_folder_gives_the_same_labels_and_a_dicom_series_an_rtstruct() {
    let dir = scratch("nnunet-import");
    let package = dir.join("mini-plain");
    let out = voxseg(&["import", folder("plain").to_str().unwrap(), "-o", package.to_str().unwrap()]);
    ok(&out);
    let toml = std::fs::read_to_string(package.join("model.toml")).unwrap();
    assert!(toml.contains("architecture = \"nnunet\"") && toml.contains("PlainConvUNet"), "{toml}");
    segment(&package, &shared("totalseg/example_ct_sm.nii.gz"), &dir.join("nifti"), &[]);
    let agreement = agreement_with_reference(&dir.join("nifti"), "plain");
    assert!(agreement >= 0.9999, "imported package: labels agree with nnU-Net's on {agreement}");

    // The same CT as DICOM slices (stored LPS): the same labels voxel by voxel in space.
    let series = repo().join("tests/fixtures/dicom/full");
    segment(&package, &series, &dir.join("dicom"), &["--rtstruct"]);
    let agreement = agreement_in_space(&dir.join("nifti/labels.nii.gz"), &dir.join("dicom/labels.nii.gz"));
    assert!(agreement >= 0.9999, "NIfTI vs DICOM input agree on {agreement}");
    assert!(dir.join("dicom/rtstruct.dcm").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn import_refuses_state_dict_options_for_a_folder_and_names_missing_folds() {
    let dir = scratch("nnunet-refuse");
    let package = dir.join("p");
    let out = voxseg(&["import", folder("plain").to_str().unwrap(), "-o", package.to_str().unwrap(), "--labels", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--labels, --spacing and --window do not apply"), "{}", stderr(&out));
    let out = voxseg(&["import", folder("plain").to_str().unwrap(), "-o", package.to_str().unwrap(), "--folds", "0,4"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("folds [\"4\"] have no checkpoint_final.pth"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}
