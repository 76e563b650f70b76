//! `voxseg import`, `voxseg bench` and scripts/gpu_bench.sh as a user runs them.

mod common;

use common::{demo, json, ok, repo, scratch, shared, stderr, voxseg};
use serde_json::Value;

fn state_dict() -> String {
    repo().join("tests/fixtures/anatomynet/state_dict.safetensors").display().to_string()
}

#[test]
fn import_writes_a_package_that_runs() {
    let pkg = scratch("pkg");
    let out = voxseg(&[
        "import",
        &state_dict(),
        "-o",
        pkg.to_str().unwrap(),
        "--labels",
        "spleen,liver,kidney_left,kidney_right",
        "--spacing",
        "1.5,1.5,1.5",
        "--window",
        "-160,240",
        "--scale",
        "centered",
    ]);
    ok(&out);
    let toml = std::fs::read_to_string(pkg.join("model.toml")).unwrap();
    assert!(toml.contains("architecture = \"anatomynet\"") && toml.contains("name = \"kidney_right\""), "{toml}");
    let out = voxseg(&[
        "bench",
        "--shape",
        "16x24x24",
        "--device",
        "cpu",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--model",
        pkg.to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let v = json(&out);
    assert!(v["forward_ms"].as_f64().unwrap() > 0.0);
    // --threads sizes the pool the network runs on; the report says what ran.
    assert_eq!(v["threads"].as_u64(), Some(1), "{v}");
    // At least the weights and the input volume were resident (Linux reports VmHWM).
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0, "{v}");
    assert_eq!(v["shape"], serde_json::json!([16, 24, 24]));
    assert_eq!((v["backend"].as_str(), v["classes"].as_u64()), (Some("flex"), Some(5)));
    // No pool of zero threads.
    let zero = voxseg(&["bench", "--shape", "16x24x24", "--device", "cpu", "--threads", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    // Importing again over an existing package is refused.
    let again = voxseg(&[
        "import",
        &state_dict(),
        "-o",
        pkg.to_str().unwrap(),
        "--labels",
        "a,b,c,d",
        "--spacing",
        "1,1,1",
        "--window",
        "0,1",
    ]);
    assert_eq!(again.status.code(), Some(2));
    std::fs::remove_dir_all(pkg).unwrap();
}

#[test]
fn wrong_class_count_names_the_tensor() {
    let pkg = scratch("wrong");
    let out = voxseg(&[
        "import",
        &state_dict(),
        "-o",
        pkg.to_str().unwrap(),
        "--labels",
        "spleen",
        "--spacing",
        "1.5,1.5,1.5",
        "--window",
        "-160,240",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("head.weight") && err.contains("state_dict.safetensors"), "{err}");
    assert!(!pkg.join("model.toml").exists());
    let out = voxseg(&["bench", "--shape", "15x24x24"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `--device cuda` on a machine without an NVIDIA driver (or a build without the
/// `cuda` feature) is a usage error that says which, exit 2.
#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if cfg!(feature = "cuda") && std::path::Path::new("/proc/driver/nvidia").exists() {
        eprintln!("skipping: this machine has an NVIDIA driver");
        return;
    }
    let out = voxseg(&["bench", "--shape", "8x16x16", "--device", "cuda", "--repeat", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let why = if cfg!(feature = "cuda") { "no NVIDIA driver" } else { "built without CUDA" };
    assert!(err.contains("no cuda device") && err.contains(why), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `bench --json` says at which precision it ran, how (whole or the exact slabs) and
/// what it knows of device memory (nothing on the CPU: null, with the reason).
#[test]
fn bench_reports_precision_slabs_and_device_memory() {
    let args = ["bench", "--shape", "8x16x16", "--device", "cpu", "--threads", "1", "--repeat", "1", "--json"];
    let v = json(&voxseg(&[&args[..], &["--precision", "f16", "--max-voxels", "512"]].concat()));
    let p = &v["precision"];
    assert_eq!(
        (p["requested"].as_str(), p["weights"].as_str(), p["compute"].as_str()),
        (Some("f16"), Some("f16"), Some("f32")),
        "{v}"
    );
    assert!(p["note"].as_str().unwrap().contains("CPU kernels compute in f32"), "{v}");
    // 16 x 16 planes, slabs of 512 voxels: 2 planes each, 4 slabs.
    assert_eq!((v["mode"].as_str(), v["passes"].as_u64()), (Some("slabs"), Some(4)), "{v}");
    assert!(v["peak_device_mb"].is_null() && v["device_memory_note"].as_str().unwrap().contains("flex"), "{v}");
    let whole = json(&voxseg(&args));
    assert_eq!((whole["mode"].as_str(), whole["passes"].as_u64()), (Some("whole"), Some(1)), "{whole}");
    assert_eq!(whole["precision"], serde_json::json!({"requested": "f32", "weights": "f32", "compute": "f32"}));
    let bad = voxseg(&["bench", "--shape", "8x16x16", "--precision", "f64"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("f32, f16 or bf16"), "{}", stderr(&bad));
}

/// `bench --train` times AnatomyNet training steps beside the forward pass: the fastest
/// step, the mean (no faster than the fastest), their ratio to the forward pass, every
/// timing and the median of each step over the forward pass before it.
#[test]
fn bench_times_training_steps() {
    let args =
        ["bench", "--shape", "8x16x16", "--device", "cpu", "--threads", "1", "--repeat", "2", "--train", "--json"];
    let v = json(&voxseg(&args));
    let (step, mean, forward) = (
        v["train_step_ms"].as_f64().unwrap(),
        v["train_step_mean_ms"].as_f64().unwrap(),
        v["forward_ms"].as_f64().unwrap(),
    );
    assert!(step > 0.0 && mean >= step && forward > 0.0, "{v}");
    let ratio = v["train_to_forward"].as_f64().unwrap();
    assert!((ratio - step / forward).abs() <= 1e-9 * ratio, "{v}");
    // Every timing, the fastest of each as reported, and the median of the two pairs'
    // ratios (step over the forward pass before it) as their mean.
    let each = |key: &str| -> Vec<f64> { v[key].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect() };
    let (forwards, steps) = (each("forward_each_ms"), each("train_step_each_ms"));
    assert_eq!((forwards.len(), steps.len()), (2, 2), "{v}");
    assert_eq!(steps.iter().copied().fold(f64::INFINITY, f64::min), step, "{v}");
    assert_eq!(forwards.iter().copied().fold(f64::INFINITY, f64::min), forward, "{v}");
    let median = (steps[0] / forwards[0] + steps[1] / forwards[1]) / 2.0;
    assert!((v["train_to_forward_median"].as_f64().unwrap() - median).abs() <= 1e-9 * median, "{v}");
    // Without --train, no training fields.
    let plain = json(&voxseg(&args[..args.len() - 2].iter().chain(&["--json"]).copied().collect::<Vec<_>>()));
    assert!(plain.get("train_step_ms").is_none(), "{plain}");
}

/// scripts/gpu_bench.sh in its CPU mode (what runs where there is no NVIDIA GPU) on a
/// tiny shape: bench rows for the CPU and wgpu (lavapipe) in f32 and f16, PyTorch
/// skipped with a notice where it is not installed, the demo model end to end, one
/// JSON and one Markdown table.
#[test]
fn gpu_bench_script_runs_in_cpu_mode() {
    let dir = scratch("gpu-bench");
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/gpu_bench.sh"))
        .args(["--cpu", "--voxseg", env!("CARGO_BIN_EXE_voxseg"), "--out", dir.to_str().unwrap()])
        .args(["--shapes", "8x16x16", "--repeat", "1", "--model", &demo(), "--budget", "240"])
        .args(["--ct", shared("totalseg/example_ct_sm.nii.gz").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("gpu_bench.json")).unwrap()).unwrap();
    assert_eq!(report["mode"], "cpu");
    let bench = report["bench"].as_array().unwrap();
    assert_eq!(bench.len(), 4, "{report}");
    for row in bench {
        // lavapipe compiles every kernel on first use: on a loaded 2-core machine a
        // run can outlast its limit, which the script reports as a row (wgpu's
        // answers are checked in crates/model/tests); any other wgpu failure counts
        // when CI requires wgpu.
        let on_wgpu = row["device_choice"] == "gpu";
        let timed_out = row["error"] == "timed out";
        if on_wgpu && (timed_out || (row.get("error").is_some() && std::env::var_os("VOXSEG_REQUIRE_WGPU").is_none())) {
            eprintln!("wgpu row not timed: {}", row["error"]);
            continue;
        }
        assert!(row["forward_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{row}");
        assert_eq!(row["precision"]["requested"], row["precision_requested"], "{row}");
    }
    let torch = &report["torch"][0];
    assert!(torch.get("skipped").is_some() || torch.get("forward_ms").is_some(), "{report}");
    let segment = report["segment"].as_array().unwrap();
    assert_eq!(segment.len(), 2, "{report}");
    assert!(segment.iter().all(|r| r["timings_ms"]["forward_ms"].as_f64().is_some()), "{report}");
    let md = std::fs::read_to_string(dir.join("gpu_bench.md")).unwrap();
    assert!(md.contains("| voxseg flex |") && md.contains("slowest stage"), "{md}");
    std::fs::remove_dir_all(dir).unwrap();
}
