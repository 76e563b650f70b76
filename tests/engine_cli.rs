//! `voxseg import` and `voxseg bench` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn voxseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxseg")).args(args).output().unwrap()
}

fn state_dict() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anatomynet/state_dict.safetensors").display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("voxseg-engine-{}-{name}", std::process::id()))
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
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
        "--model",
        pkg.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["forward_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["shape"], serde_json::json!([16, 24, 24]));
    assert_eq!((v["backend"].as_str(), v["classes"].as_u64()), (Some("flex"), Some(5)));
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("head.weight") && err.contains("state_dict.safetensors"), "{err}");
    assert!(!pkg.join("model.toml").exists());
    let out = voxseg(&["bench", "--shape", "15x24x24"]);
    assert_eq!(out.status.code(), Some(2));
}
