//! `voxseg radiomics` against pyradiomics: the committed fixture
//! (tests/fixtures/radiomics_reference.json, made by scripts/radiomics_reference.py on
//! the real CT and four organ masks), and pyradiomics itself run live on other
//! settings when python has it.

mod common;

use std::process::Command;

use common::{json, ok, repo, scratch, shared, stderr, voxseg};
use serde_json::Value;

const ORGANS: [&str; 4] = ["spleen", "liver", "kidney_left", "kidney_right"];
const TOLERANCE: f64 = 1e-6;

fn ct() -> String {
    shared("totalseg/example_ct_sm.nii.gz").display().to_string()
}

fn mask(organ: &str) -> String {
    shared(&format!("totalseg/example_seg_fast/{organ}.nii.gz")).display().to_string()
}

/// Every feature of `reference` is in `ours` and equal within TOLERANCE (relative).
fn assert_same(ours: &Value, reference: &Value, what: &str) -> usize {
    let (ours, reference) = (ours.as_object().unwrap(), reference.as_object().unwrap());
    let mut names: Vec<_> = ours.keys().collect();
    let mut theirs: Vec<_> = reference.keys().collect();
    names.sort();
    theirs.sort();
    assert_eq!(names, theirs, "{what}: feature names differ from pyradiomics'");
    let mut bad = Vec::new();
    for (name, r) in reference {
        let o = &ours[name];
        match (o.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => {
                if (a - b).abs() > TOLERANCE * b.abs().max(1e-300) && a != b {
                    bad.push(format!("{name}: voxseg {a} pyradiomics {b} (rel {:.2e})", (a - b).abs() / b.abs()));
                }
            }
            (None, None) => {}
            _ => bad.push(format!("{name}: voxseg {o} pyradiomics {r}")),
        }
    }
    assert!(bad.is_empty(), "{what}: {} of {} features differ:\n{}", bad.len(), reference.len(), bad.join("\n"));
    reference.len()
}

#[test]
fn every_feature_equals_the_pyradiomics_fixture() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/radiomics_reference.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for (organ, reference) in ORGANS.iter().zip(fixture["structures"].as_array().unwrap()) {
        assert_eq!(reference["mask"], format!("{organ}.nii.gz"));
        let out = json(&voxseg(&["radiomics", &ct(), &mask(organ), "--json"]));
        let s = &out["structures"].as_array().unwrap()[0];
        assert_eq!(s["label"], 1);
        assert_eq!(s["name"], "label_1");
        checked += assert_same(&s["features"], &reference["features"], organ);
    }
    assert_eq!(checked, 4 * 107);
}

#[test]
fn a_multi_label_map_gives_each_organ_its_own_features_with_names() {
    let names = shared("totalseg/class_map_total_v2.json").display().to_string();
    let seg = shared("totalseg/example_seg_fast.nii.gz").display().to_string();
    let dir = scratch("radiomics-multi");
    let csv_path = dir.join("r.csv");
    let csv_arg = csv_path.display().to_string();
    let args = ["radiomics", &ct(), &seg, "--label", "1", "--label", "5", "--names", &names];
    let out = json(&voxseg(&[&args[..], &["--json"]].concat()));
    let s = out["structures"].as_array().unwrap();
    assert_eq!((s[0]["name"].as_str(), s[1]["name"].as_str()), (Some("spleen"), Some("liver")));
    let single = json(&voxseg(&["radiomics", &ct(), &mask("liver"), "--json"]));
    assert_eq!(s[1]["features"], single["structures"][0]["features"]);
    // CSV: one row per structure, label, name, voxels and one column per feature.
    ok(&voxseg(&[&args[..], &["--csv", "-o", &csv_arg]].concat()));
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    assert_eq!(reader.headers().unwrap().len(), 3 + 107);
    let rows: Vec<_> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((&rows[0][1], &rows[1][1]), ("spleen", "liver"));
    let col = reader.headers().unwrap().iter().position(|h| h == "original_shape_VoxelVolume").unwrap();
    assert_eq!(rows[0][col].parse::<f64>().unwrap(), 260010.0); // 9630 voxels x 27 mm3
}

#[test]
fn bad_inputs_are_refused_with_exit_2_or_reported_as_null() {
    // Different grids: the full CT (112 slices) and a mask of the 30-slice crop.
    let full = shared("totalseg/example_ct.nii.gz").display().to_string();
    let out = voxseg(&["radiomics", &full, &mask("spleen")]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("example_ct.nii.gz") && e.contains("spleen.nii.gz") && e.contains("same grid"), "{e}");

    // A parameter file with a key that is not implemented: refused by name.
    let dir = scratch("radiomics-bad");
    let params = dir.join("p.yaml");
    std::fs::write(&params, "setting:\n  binWidth: 25\n  resampledPixelSpacing: [1, 1, 1]\n").unwrap();
    let out = voxseg(&["radiomics", &ct(), &mask("spleen"), "--params", params.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("resampledPixelSpacing"), "{}", stderr(&out));
    std::fs::write(&params, "imageType:\n  Wavelet: {}\n").unwrap();
    let out = voxseg(&["radiomics", &ct(), &mask("spleen"), "--params", params.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Wavelet"), "{}", stderr(&out));

    // An absent label and a single voxel: every feature null, with the reason.
    let out = json(&voxseg(&["radiomics", &ct(), &mask("spleen"), "--label", "7", "--json"]));
    let s = &out["structures"][0];
    assert!(s["error"].as_str().unwrap().contains("empty"));
    assert_eq!(s["features"].as_object().unwrap().len(), 107);
    assert!(s["features"].as_object().unwrap().values().all(Value::is_null));

    let (spleen, header) = voxseg::volume::nifti::read_labels(mask("spleen")).unwrap();
    let mut one = spleen.map(|_| 0u16);
    let first = spleen.data().iter().position(|&v| v == 1).unwrap();
    one.data_mut()[first] = 1;
    let path = dir.join("one.nii.gz");
    voxseg::volume::nifti::write_labels(&path, &one, &header).unwrap();
    let out = json(&voxseg(&["radiomics", &ct(), path.to_str().unwrap(), "--json"]));
    let s = &out["structures"][0];
    assert!(s["error"].as_str().unwrap().contains("single voxel"), "{s}");
    assert!(s["features"].as_object().unwrap().values().all(Value::is_null));
}

/// True when python3 can run pyradiomics; under VOXSEG_REQUIRE_PYTHON=1 (CI) its
/// absence is a failure, never a skip.
fn pyradiomics_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import radiomics, nibabel, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("VOXSEG_REQUIRE_PYTHON").is_none(),
        "python3 with pyradiomics required (see .ci/run for the install line)"
    );
    ok
}

#[test]
fn other_settings_equal_pyradiomics_run_live() {
    if !pyradiomics_ready() {
        eprintln!("skipped: python3 with pyradiomics not found");
        return;
    }
    let dir = scratch("radiomics-live");
    let cases = [
        ("bincount", "setting:\n  binCount: 16\n  distances: [1, 2]\n  symmetricalGLCM: false\n  gldm_a: 1\n"),
        (
            "width",
            "imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\n  glszm: []\n  ngtdm:\nsetting:\n  binWidth: 10\n  voxelArrayShift: 1000\n",
        ),
    ];
    for (name, yaml) in cases {
        let params = dir.join(format!("{name}.yaml"));
        std::fs::write(&params, yaml).unwrap();
        let reference = dir.join(format!("{name}.json"));
        let masks: Vec<String> = ["kidney_left", "spleen"].iter().map(|o| mask(o)).collect();
        let py = Command::new("python3")
            .arg(repo().join("scripts/radiomics_reference.py"))
            .arg(ct())
            .args(&masks)
            .args(["--params", params.to_str().unwrap(), "-o", reference.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(py.status.success(), "{}", stderr(&py));
        let reference: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
        for (m, r) in masks.iter().zip(reference["structures"].as_array().unwrap()) {
            let out = json(&voxseg(&["radiomics", &ct(), m, "--params", params.to_str().unwrap(), "--json"]));
            assert_same(&out["structures"][0]["features"], &r["features"], &format!("{name} {m}"));
        }
    }
}

#[test]
fn flat_and_perforated_masks_equal_pyradiomics_run_live() {
    if !pyradiomics_ready() {
        eprintln!("skipped: python3 with pyradiomics not found");
        return;
    }
    let dir = scratch("radiomics-shapes");
    let (spleen, header) = voxseg::volume::nifti::read_labels(mask("spleen")).unwrap();
    let (liver, _) = voxseg::volume::nifti::read_labels(mask("liver")).unwrap();
    let [ni, nj, nk] = spleen.shape();
    // One axial slice of the spleen (2-D: no direction moves along k), and the liver
    // with a lattice of holes (many small zones and short runs).
    let slices: Vec<usize> = (0..nk).filter(|&k| (0..ni * nj).any(|v| spleen.data()[k * ni * nj + v] == 1)).collect();
    let mid = slices[slices.len() / 2];
    let mut flat = spleen.clone();
    let mut holes = liver.clone();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = (k * nj + j) * ni + i;
                if k != mid {
                    flat.data_mut()[v] = 0;
                }
                if (i % 3, j % 2) == (0, 0) {
                    holes.data_mut()[v] = 0;
                }
            }
        }
    }
    let paths = [dir.join("flat.nii.gz"), dir.join("holes.nii.gz")];
    voxseg::volume::nifti::write_labels(&paths[0], &flat, &header).unwrap();
    voxseg::volume::nifti::write_labels(&paths[1], &holes, &header).unwrap();
    let reference = dir.join("reference.json");
    let py = Command::new("python3")
        .arg(repo().join("scripts/radiomics_reference.py"))
        .arg(ct())
        .args(&paths)
        .args(["-o", reference.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", stderr(&py));
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    for (p, r) in paths.iter().zip(reference["structures"].as_array().unwrap()) {
        let out = json(&voxseg(&["radiomics", &ct(), p.to_str().unwrap(), "--json"]));
        assert_same(&out["structures"][0]["features"], &r["features"], &p.display().to_string());
    }
}
