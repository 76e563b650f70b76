//! Helpers the CLI tests share: the repository, the real data, the binary, scratch
//! folders, and what a command printed.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
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

/// An empty folder of its own for one test: removed when the test passes, kept (and
/// named on stderr) when it fails, so that what the commands left can be looked at.
/// Segmentations, packages and reports of a whole suite run would otherwise pile up
/// in the temporary directory run after run.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("voxseg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// See [`scratch`]; a path everywhere a `&Path` is taken.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
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

/// The share of `b`'s voxels whose label equals `a`'s at the same place. Compared voxel by
/// voxel in space, so a DICOM series stored LPS meets its NIfTI copy stored RAS.
pub fn agreement_in_space(a: &Path, b: &Path) -> f64 {
    let (a, _) = voxseg::volume::nifti::read_labels(a).unwrap();
    let (b, _) = voxseg::volume::nifti::read_labels(b).unwrap();
    let [nx, ny, nz] = b.shape();
    let mut same = 0usize;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = a.grid().world_to_voxel(b.grid().voxel_to_world([i as f64, j as f64, k as f64]));
                let [x, y, z] = v.map(|c| c.round() as usize);
                same += usize::from(a.at(x, y, z) == b.at(i, j, k));
            }
        }
    }
    let share = same as f64 / b.grid().len() as f64;
    eprintln!("NIfTI vs DICOM input: {same} of {} voxels agree ({share:.6})", b.grid().len());
    share
}
