//! Helpers the CLI tests share: the repository, the real data, the binary, scratch
//! folders, and what a command printed.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of ../shared/data.
pub fn shared(rel: &str) -> PathBuf {
    repo().join("../shared/data").join(rel)
}

/// The untrained demo package (fast; its labels are not anatomy).
pub fn demo() -> String {
    repo().join("models/demo-untrained").display().to_string()
}

pub fn voxseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxseg")).args(args).output().unwrap()
}

/// An empty folder of its own for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxseg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command succeeded (else its stderr is the failure message).
pub fn ok(out: &Output) -> &Output {
    assert!(out.status.success(), "{}", stderr(out));
    out
}

/// The JSON a successful command printed.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&ok(out).stdout).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
