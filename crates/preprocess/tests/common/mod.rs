//! Fixture access shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use voxseg_volume::{nifti, Grid, Image, LabelMap};

/// A file written by scripts/make_preprocess_fixtures.py.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/preprocess").join(name)
}

/// A file of the shared real data set (../shared/data from the repository root).
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(rel)
}

pub fn image(name: &str) -> Image {
    nifti::read_image(fixture(&format!("{name}.nii.gz"))).unwrap().0
}

pub fn labels(name: &str) -> LabelMap {
    nifti::read_labels(fixture(&format!("{name}.nii.gz"))).unwrap().0
}

pub fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
}

pub fn spacing(value: &serde_json::Value) -> [f64; 3] {
    std::array::from_fn(|a| value[a].as_f64().unwrap())
}

/// Same shape, affine entries within `tol` mm (fixtures store affines as float32).
pub fn assert_grid_close(got: &Grid, want: &Grid, tol: f64) {
    assert_eq!(got.shape(), want.shape());
    for (g, w) in got.affine().iter().flatten().zip(want.affine().iter().flatten()) {
        assert!((g - w).abs() <= tol, "affine {:?} vs {:?}", got.affine(), want.affine());
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
