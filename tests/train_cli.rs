//! `voxseg train` and `voxseg evaluate` end to end on the real small CT with its
//! spleen mask (TotalSegmentator's): a tiny AnatomyNet trains for a few steps on the
//! CPU, its package runs in `segment`, a killed run resumes, and bad datasets are
//! refused before any training.

mod common;

use std::path::{Path, PathBuf};

use common::{json, scratch, shared, stderr, voxseg};
use serde_json::Value;

/// A tiny network at 6 mm whose patch holds the whole small CT, without
/// augmentation: every step sees the same input, so the loss must fall.
const TINY: &str = r#"
[network]
stem_channels = 8
encoder_channels = [8, 8]
blocks_per_stage = 1
reduction = 4
fuse_reduction = 4
up_channels = 8

[preprocess]
orientation = "RAS"
spacing_mm = [6.0, 6.0, 6.0]
stride = 2
intensity = { kind = "linear", min_hu = -160.0, max_hu = 240.0, out_min = -0.5, out_max = 0.5 }

[schedule]
patch = [64, 64, 16]
learning_rate = 0.01
steps_per_epoch = 8

[augment]
enabled = false
"#;

/// `cases` spleen cases, all the small CT with its spleen mask, linked (not copied)
/// from ../shared; `extra` entries are appended to the training list verbatim.
fn dataset(dir: &Path, cases: &[&str], extra: &str) -> PathBuf {
    let data = dir.join("data");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    let mut entries = Vec::new();
    for c in cases {
        std::os::unix::fs::symlink(shared("totalseg/example_ct_sm.nii.gz"), data.join(format!("imagesTr/{c}.nii.gz")))
            .unwrap();
        std::os::unix::fs::symlink(
            shared("totalseg/example_seg_fast/spleen.nii.gz"),
            data.join(format!("labelsTr/{c}.nii.gz")),
        )
        .unwrap();
        entries.push(format!(r#"{{"image": "./imagesTr/{c}.nii.gz", "label": "./labelsTr/{c}.nii.gz"}}"#));
    }
    if !extra.is_empty() {
        entries.push(extra.to_string());
    }
    let description = format!(
        r#"{{"name": "spleen-smoke", "labels": {{"0": "background", "1": "spleen"}}, "training": [{}]}}"#,
        entries.join(", ")
    );
    std::fs::write(data.join("dataset.json"), description).unwrap();
    std::fs::write(dir.join("tiny.toml"), TINY).unwrap();
    data
}

fn train(dir: &Path, data: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let out = dir.join(out);
    let config = dir.join("tiny.toml");
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ];
    args.extend_from_slice(extra);
    voxseg(&args)
}

fn losses(run: &Value) -> Vec<f64> {
    run["epochs"].as_array().unwrap().iter().map(|e| e["train_loss"].as_f64().unwrap()).collect()
}

#[test]
fn training_lowers_the_loss_and_writes_a_package_segment_runs() {
    let dir = scratch("train-smoke");
    let data = dataset(&dir, &["a", "b"], "");
    let run = json(&train(&dir, &data, "pkg", &["--epochs", "3", "--val-cases", "b"]));
    let loss = losses(&run);
    assert!(loss[2] < 0.8 * loss[0], "the loss did not fall: {loss:?}");
    // Accuracy is reported on the held-out case only, and recorded in the package.
    let toml = std::fs::read_to_string(dir.join("pkg/model.toml")).unwrap();
    assert!(toml.contains(r#"val_cases = ["b"]"#) && toml.contains("train_cases = [\"a\"]"), "{toml}");
    assert!(run["epochs"][2]["val_dice"][0]["name"] == "spleen");

    let seg = dir.join("seg");
    let ct = shared("totalseg/example_ct_sm.nii.gz");
    let pkg = dir.join("pkg");
    let out = voxseg(&[
        "segment",
        ct.to_str().unwrap(),
        "-o",
        seg.to_str().unwrap(),
        "--model",
        pkg.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let stats = json(&out);
    assert_eq!(stats["structures"][0]["name"], "spleen");
    let labels = json(&voxseg(&["inspect", seg.join("labels.nii.gz").to_str().unwrap(), "--json"]));
    let source = json(&voxseg(&["inspect", ct.to_str().unwrap(), "--json"]));
    assert_eq!(labels["shape"], source["shape"]);

    // evaluate: the held-out case only, with the same Dice `compare` gives.
    let eval = dir.join("eval");
    let summary = json(&voxseg(&[
        "evaluate",
        "--model",
        pkg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "-o",
        eval.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]));
    assert_eq!(summary["cases"], 1);
    assert_eq!(summary["includes_training_cases"], false);
    let reference = shared("totalseg/example_seg_fast/spleen.nii.gz");
    let compared =
        json(&voxseg(&["compare", seg.join("labels.nii.gz").to_str().unwrap(), reference.to_str().unwrap(), "--json"]));
    let dice = compared["structures"][0]["dice"].as_f64().unwrap();
    assert!((summary["organs"][0]["dice_mean"].as_f64().unwrap() - dice).abs() < 1e-12, "{summary} vs {dice}");
    let csv = std::fs::read_to_string(eval.join("cases.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with("b,1,spleen,"), "{csv}");
    assert!(std::fs::metadata(eval.join("dice_boxplot.png")).unwrap().len() > 500);
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let dir = scratch("train-resume");
    let data = dataset(&dir, &["a", "b"], "");
    let straight = losses(&json(&train(&dir, &data, "straight", &["--epochs", "4"])));
    let again = json(&train(&dir, &data, "again", &["--epochs", "4"]));
    assert_eq!(losses(&again), straight, "the same seed gives the same run");

    // kill -9 once the first checkpoint is committed, wherever the run then is.
    let out = dir.join("killed");
    let config = dir.join("tiny.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(["train", "--data", data.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "--device", "cpu", "--epochs", "4"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !out.join("checkpoint/state.json").exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint after 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let refused = train(&dir, &data, "killed", &["--epochs", "4"]);
    assert_eq!(refused.status.code(), Some(2), "an existing run is never overwritten without --resume");
    let resumed = json(&train(&dir, &data, "killed", &["--epochs", "4", "--resume"]));
    assert_eq!(losses(&resumed), straight, "resumed run differs from the uninterrupted one");
}

#[test]
fn a_bad_dataset_is_refused_before_training_with_every_problem_named() {
    let dir = scratch("train-bad");
    let other_grid = shared("totalseg/example_ct.nii.gz");
    let many_labels = shared("totalseg/example_seg_fast.nii.gz");
    let data = dataset(&dir, &["good"], r#"{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/good.nii.gz"}"#);
    // A label map on another grid, and one holding ids the dataset does not declare.
    std::os::unix::fs::symlink(&other_grid, data.join("imagesTr/shifted.nii.gz")).unwrap();
    std::os::unix::fs::symlink(shared("totalseg/example_seg_fast/spleen.nii.gz"), data.join("labelsTr/shifted.nii.gz"))
        .unwrap();
    std::os::unix::fs::symlink(shared("totalseg/example_ct_sm.nii.gz"), data.join("imagesTr/multi.nii.gz")).unwrap();
    std::os::unix::fs::symlink(&many_labels, data.join("labelsTr/multi.nii.gz")).unwrap();
    let out = train(&dir, &data, "never", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("gone.nii.gz: case good: no such file"), "{}", stderr(&out));

    let text = std::fs::read_to_string(data.join("dataset.json")).unwrap().replace(
        r#", {"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/good.nii.gz"}"#,
        r#", {"image": "./imagesTr/shifted.nii.gz", "label": "./labelsTr/shifted.nii.gz"}, {"image": "./imagesTr/multi.nii.gz", "label": "./labelsTr/multi.nii.gz"}"#,
    );
    std::fs::write(data.join("dataset.json"), text).unwrap();
    let out = train(&dir, &data, "never", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains("case shifted") && err.contains("does not match its image"), "{err}");
    assert!(err.contains("case multi") && err.contains("which dataset.json does not declare"), "{err}");
    assert!(!dir.join("never/model.toml").exists(), "nothing trained");
}
