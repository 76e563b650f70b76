//! nnU-Net v2 folders in the command line: `segment --model FOLDER` and
//! `import FOLDER` give the labels an independent numpy transcription of nnU-Net's
//! inference gives (tests/fixtures/nnunet/*_labels.nii.gz, from
//! scripts/make_nnunet_fixtures.py) on the CT's own grid, with the names of
//! dataset.json; a DICOM series gets the same labels and an RTSTRUCT; several folders
//! imported into one package give the labels of TotalSegmentator's combination rule
//! (tests/fixtures/nnunet/combined_labels.nii.gz, numpy). The folders hold random
//! weights: these check the engine, not anatomy.

mod common;

use std::path::{Path, PathBuf};

use common::{agreement_in_space, ok, repo, scratch, shared, stderr, voxseg};
use serde_json::Value;
use voxseg::model::{ModelPackage, Network};
use voxseg::volume::nifti;

fn folder(tag: &str) -> PathBuf {
    repo().join(match tag {
        "plain" => "tests/fixtures/nnunet/Dataset901_MiniPlain/nnUNetTrainer__nnUNetPlans__3d_fullres",
        _ => "tests/fixtures/nnunet/Dataset902_MiniResEnc/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
    })
}

/// The ResidualEncoderUNet folder under another label table (renamed_dataset.json:
/// kidney_left, liver), copied into `dir` as the fixture script combines it.
fn renamed_resenc(dir: &Path) -> PathBuf {
    let copy = dir.join("Dataset903_MiniResEncRenamed/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres");
    std::fs::create_dir_all(copy.join("fold_0")).unwrap();
    for file in ["plans.json", "fold_0/checkpoint_final.pth"] {
        std::fs::copy(folder("resenc").join(file), copy.join(file)).unwrap();
    }
    std::fs::copy(repo().join("tests/fixtures/nnunet/renamed_dataset.json"), copy.join("dataset.json")).unwrap();
    copy
}

/// `(name, tg263)` of every structure in `stats.json`.
fn structure_names(out: &Path) -> Vec<(String, String)> {
    let stats: Value = serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    stats["structures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["tg263"].as_str().unwrap().to_string()))
        .collect()
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

#[test]
fn several_folders_make_one_package_combined_as_totalsegmentator_combines() {
    let dir = scratch("nnunet-combined");
    let (plain, renamed) = (folder("plain"), renamed_resenc(&dir));
    let package = dir.join("mini-combined");
    let out = voxseg(&["import", plain.to_str().unwrap(), renamed.to_str().unwrap(), "-o", package.to_str().unwrap()]);
    ok(&out);

    // One label table in order of first appearance; liver, in both folders, keeps one id.
    let read = ModelPackage::open(&package).unwrap();
    let names: Vec<&str> = read.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["spleen", "liver", "kidney_left"]);
    let Network::NnunetCombined(combined) = &read.network else { panic!("not a combined package: {:?}", read.network) };
    let parts: Vec<(&str, &[u16])> = combined.parts.iter().map(|p| (p.dataset.as_str(), &p.label_ids[..])).collect();
    assert_eq!(parts, [("Dataset901_MiniPlain", &[1, 2][..]), ("Dataset902_MiniResEnc", &[3, 2][..])]);

    // A batch of one CT through the package: TotalSegmentator's combination of the two
    // networks' labels (numpy), later folder winning, on the CT's grid.
    let csv = dir.join("cases.csv");
    let ct = shared("totalseg/example_ct_sm.nii.gz");
    std::fs::write(&csv, format!("case_id,path\nexample,{}\n", ct.display())).unwrap();
    let results = dir.join("results");
    let args = ["batch", csv.to_str().unwrap(), "-o", results.to_str().unwrap(), "--device", "cpu"];
    ok(&voxseg(&[&args[..], &["--model", package.to_str().unwrap()]].concat()));
    let case = results.join("example");
    let agreement = agreement_with_reference(&case, "combined");
    assert!(agreement >= 0.9999, "combined labels agree with the numpy combination on {agreement}");
    let want = [("spleen", "Spleen"), ("liver", "Liver"), ("kidney_left", "Kidney_L")];
    assert_eq!(structure_names(&case), want.map(|(n, t)| (n.to_string(), t.to_string())));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn folders_that_cannot_be_combined_are_named() {
    let dir = scratch("nnunet-combine-refuse");
    let (plain, renamed) = (folder("plain"), renamed_resenc(&dir));
    let package = dir.join("p");
    let import = |inputs: &[&Path], extra: &[&str]| {
        let mut args = vec!["import"];
        args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
        args.extend(["-o", package.to_str().unwrap()]);
        args.extend(extra);
        let out = voxseg(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!package.join("model.toml").exists());
        stderr(&out)
    };
    let missing = dir.join("Dataset904_Gone/nnUNetTrainer__nnUNetPlans__3d_fullres");
    let err = import(&[&plain, &missing], &[]);
    assert!(err.contains(&missing.display().to_string()) && err.contains("no such folder"), "{err}");
    let err = import(&[&plain, &renamed, &plain], &[]);
    assert!(err.contains(&plain.display().to_string()) && err.contains("given twice"), "{err}");
    // Fold 1 is in the first folder only.
    let err = import(&[&plain, &renamed], &["--folds", "1"]);
    assert!(err.contains(&renamed.display().to_string()) && err.contains("have no checkpoint_final.pth"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
