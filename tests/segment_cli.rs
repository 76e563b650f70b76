//! `voxseg segment` and `voxseg batch` on the real example CTs, as a user runs them.
//! Most use the untrained demo package (fast): they check geometry, bookkeeping and
//! robustness, not anatomy. One runs the built-in liver model and checks its answer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo, json, scratch, shared, stderr, voxseg};
use serde_json::Value;

#[test]
fn segment_writes_labels_on_the_ct_grid_that_measure_agrees_with() {
    let dir = scratch("one");
    let ct = shared("totalseg/example_ct.nii.gz");
    let out = voxseg(&[
        "segment",
        ct.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--preview",
        "--json",
        "--model",
        &demo(),
    ]);
    let stats = json(&out);
    assert!(stderr(&out).contains("untrained"), "the demo model must say it is untrained");
    for f in ["labels.nii.gz", "stats.json", "stats.csv", "preview.png"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let on_disk: Value = serde_json::from_slice(&std::fs::read(dir.join("stats.json")).unwrap()).unwrap();
    assert_eq!(on_disk["structures"], stats["structures"]);
    // Same grid as the CT: shape and affine.
    let labels = dir.join("labels.nii.gz");
    let a = json(&voxseg(&["inspect", labels.to_str().unwrap(), "--json"]));
    let b = json(&voxseg(&["inspect", ct.to_str().unwrap(), "--json"]));
    assert_eq!((&a["shape"], &a["affine"], &a["orientation"]), (&b["shape"], &b["affine"], &b["orientation"]));
    // voxseg measure on the written labels reproduces stats.json.
    let m = json(&voxseg(&["measure", labels.to_str().unwrap(), "--ct", ct.to_str().unwrap(), "--json"]));
    let structures = stats["structures"].as_array().unwrap();
    assert_eq!(structures.len(), 4, "one entry per organ of the model");
    for s in structures {
        let label = s["label"].as_u64().unwrap();
        let mine = m["structures"].as_array().unwrap().iter().find(|x| x["label"].as_u64() == Some(label));
        match mine {
            Some(x) => {
                for key in ["voxels", "volume_ml", "mean_hu", "touches_border", "n_components"] {
                    assert_eq!(x[key], s[key], "label {label} {key}");
                }
            }
            None => assert_eq!(s["voxels"], 0),
        }
        assert!(s["qc"]["needs_review"].is_boolean());
    }
    for key in ["read_ms", "preprocess_ms", "forward_ms", "postprocess_ms", "write_ms"] {
        assert!(stats["timings_ms"][key].as_f64().unwrap() >= 0.0, "{key}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A CSV of cases: the two example CTs and three bad files.
fn bad_batch(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(shared("totalseg/example_ct.nii.gz")).unwrap();
    std::fs::write(dir.join("truncated.nii.gz"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("notes.nii"), "not an image\n").unwrap();
    let mut flat =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti/dtype_int16.nii")).unwrap();
    for (n, d) in [2i16, 5, 4, 1, 1, 1, 1, 1].iter().enumerate() {
        flat[40 + 2 * n..42 + 2 * n].copy_from_slice(&d.to_le_bytes());
    }
    std::fs::write(dir.join("flat.nii"), flat).unwrap();
    let csv = dir.join("cases.csv");
    std::fs::write(
        &csv,
        format!(
            "case_id,path\nct,{}\nct_sm,{}\ntrunc,truncated.nii.gz\ntext,notes.nii\nflat,flat.nii\n",
            shared("totalseg/example_ct.nii.gz").display(),
            shared("totalseg/example_ct_sm.nii.gz").display()
        ),
    )
    .unwrap();
    csv
}

fn rows(csv: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(csv).unwrap().records().map(|r| r.unwrap()).collect()
}

#[test]
fn batch_records_bad_cases_and_goes_on() {
    let dir = scratch("bad");
    let csv = bad_batch(&dir);
    let out_dir = dir.join("out");
    let model = demo();
    let args = ["batch", csv.to_str().unwrap(), "-o", out_dir.to_str().unwrap(), "--device", "cpu", "--model", &model];
    let out = voxseg(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows = rows(&out_dir.join("volumes.csv"));
    assert_eq!(rows.len(), 5);
    let status = |id: &str| rows.iter().find(|r| &r[0] == id).map(|r| (r[1].to_string(), r[2].to_string())).unwrap();
    assert_eq!(status("ct").0, "ok");
    assert_eq!(status("ct_sm").0, "ok");
    for (id, why) in [("trunc", "truncated"), ("text", "not a NIfTI"), ("flat", "3-D")] {
        let (s, e) = status(id);
        assert_eq!(s, "failed");
        assert!(e.contains(why), "{id}: {e}");
    }
    assert!(out_dir.join("ct/labels.nii.gz").is_file() && out_dir.join("ct_sm/stats.json").is_file());
    // Running again without --resume would mix two runs: refused.
    let again = voxseg(&args);
    assert_eq!(again.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn killed_batch_resumes_without_duplicates() {
    let dir = scratch("kill");
    let cases: Vec<String> = (0..6)
        .map(|i| {
            let file = if i % 2 == 0 { "example_ct.nii.gz" } else { "example_ct_sm.nii.gz" };
            format!("case{i},{}", shared(&format!("totalseg/{file}")).display())
        })
        .collect();
    let csv = dir.join("cases.csv");
    std::fs::write(&csv, format!("case_id,path\n{}\n", cases.join("\n"))).unwrap();
    let out_dir = dir.join("out");
    let journal = out_dir.join("volumes.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(["batch", csv.to_str().unwrap(), "-o", out_dir.to_str().unwrap(), "--device", "cpu", "--model", &demo()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the first case is recorded, mid-way through the next.
    let start = Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no case finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rows(&journal).len();
    assert!(before < 6, "the batch finished before it could be killed");
    let out = voxseg(&[
        "batch",
        csv.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--resume",
        "--model",
        &demo(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = rows(&journal);
    let mut ids: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
    ids.sort();
    assert_eq!(ids, (0..6).map(|i| format!("case{i}")).collect::<Vec<_>>(), "exactly one row per case");
    assert!(rows.iter().all(|r| &r[1] == "ok"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The built-in model is the trained KU Leuven liver network: on the example CT its
/// liver agrees with TotalSegmentator's (itself a model output) as well as the
/// independent numpy reference of the same pipeline does (Dice 0.8666 there).
#[test]
fn built_in_liver_model_finds_the_liver() {
    let dir = scratch("liver");
    let ct = shared("totalseg/example_ct.nii.gz");
    let stats =
        json(&voxseg(&["segment", ct.to_str().unwrap(), "-o", dir.to_str().unwrap(), "--device", "cpu", "--json"]));
    assert_eq!(stats["model"], "liver-ct-kul");
    let liver = &stats["structures"][0];
    assert_eq!(liver["name"], "liver");
    let (ours, _) = voxseg::volume::nifti::read_labels(dir.join("labels.nii.gz")).unwrap();
    let (theirs, _) =
        voxseg::volume::nifti::read_labels(shared("totalseg/example_seg_fast_force_split.nii.gz")).unwrap();
    let reference = theirs.map(|&l| u16::from(l == 5));
    let a = &voxseg::postprocess::compare(&ours, &reference, &[1]).unwrap()[0];
    assert!(a.dice >= 0.86, "liver Dice vs TotalSegmentator {}", a.dice);
    let ml = liver["volume_ml"].as_f64().unwrap();
    assert!((1300.0..1500.0).contains(&ml), "{ml} mL");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--model NAME` from anywhere: found through $VOXSEG_MODELS; when it is nowhere,
/// exit 2 with every place looked in.
#[test]
fn model_names_are_found_outside_the_repository() {
    let cwd = scratch("elsewhere");
    let ct = shared("totalseg/example_ct_sm.nii.gz");
    let run = |models: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxseg"));
        cmd.current_dir(&cwd).env_remove("VOXSEG_MODELS").env("XDG_DATA_HOME", cwd.join("data"));
        if let Some(m) = models {
            cmd.env("VOXSEG_MODELS", m);
        }
        let out = cwd.join("out");
        cmd.args(["segment", ct.to_str().unwrap(), "-o", out.to_str().unwrap(), "--device", "cpu"]);
        cmd.args(["--model", "demo-untrained"]).output().unwrap()
    };
    let missing = run(None);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let err = stderr(&missing);
    for place in ["models/demo-untrained", "data/voxseg/models/demo-untrained"] {
        assert!(err.contains(place), "{place} not listed in: {err}");
    }
    let found = run(Some(&common::repo().join("models")));
    assert!(found.status.success(), "{}", stderr(&found));
    assert!(cwd.join("out/labels.nii.gz").is_file());
}

/// The output-file lists and examples of `--help` stay one entry a line.
#[test]
fn help_keeps_its_lists_verbatim() {
    let out = voxseg(&["segment", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in ["OUTDIR/labels.nii.gz", "OUTDIR/stats.json", "OUTDIR/stats.csv", "OUTDIR/seg.dcm"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(line)), "{line} not on a line of its own:\n{help}");
    }
    assert!(help.lines().any(|l| l.trim_start().starts_with("voxseg segment ct_dicom_folder/")), "{help}");
}
