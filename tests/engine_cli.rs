//! `voxseg import` and `voxseg bench` as a user runs them.

mod common;

use common::{json, ok, repo, scratch, stderr, voxseg};

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
