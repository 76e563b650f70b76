//! The reader against nibabel's reading of the same files (tests/fixtures/nifti,
//! made by scripts/make_nifti_fixtures.py).

use std::path::{Path, PathBuf};

use serde_json::Value;
use voxseg_volume::nifti;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nifti")
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn every_fixture_reads_as_nibabel_reads_it() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let json = entry.unwrap().path();
        if json.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let file = fixtures().join(r["file"].as_str().unwrap());
        let n = nifti::read(&file).unwrap_or_else(|e| panic!("{e}"));
        let name = file.display();

        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(n.grid.shape().to_vec(), shape, "{name}: shape");
        for (row, ref_row) in n.grid.affine().iter().zip(r["affine"].as_array().unwrap()) {
            for (a, b) in row.iter().zip(ref_row.as_array().unwrap()) {
                assert!(close(*a, b.as_f64().unwrap(), 1e-6), "{name}: affine {a} vs {b}");
            }
        }
        // Spacing is the geometry's (the affine's column norms); nibabel's get_zooms()
        // reports pixdim, which an sform-only file need not keep in step.
        let ref_affine: Vec<Vec<f64>> = r["affine"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
            .collect();
        for (c, a) in n.grid.spacing().iter().enumerate() {
            let b = (0..3).map(|r| ref_affine[r][c].powi(2)).sum::<f64>().sqrt();
            assert!(close(*a, b, 1e-6), "{name}: spacing {a} vs {b}");
        }
        if n.affine_source != nifti::AffineSource::Sform {
            for (a, b) in n.grid.spacing().iter().zip(r["zooms"].as_array().unwrap()) {
                assert!(close(*a, b.as_f64().unwrap(), 1e-6), "{name}: spacing {a} vs zoom {b}");
            }
        }
        assert_eq!(n.grid.orientation(), r["axcodes"].as_str().unwrap(), "{name}: orientation");
        assert_eq!(n.dtype().name(), r["dtype"].as_str().unwrap(), "{name}: dtype");
        assert_eq!(n.header.big_endian(), r["big_endian"].as_bool().unwrap(), "{name}: byte order");

        let image = n.to_image().unwrap();
        let want = r["data"].as_array().unwrap();
        assert_eq!(image.data().len(), want.len(), "{name}: voxel count");
        for (i, (a, b)) in image.data().iter().zip(want).enumerate() {
            // voxseg holds f32; nibabel's get_fdata is f64.
            assert!(close(*a as f64, b.as_f64().unwrap(), 1e-6), "{name}: voxel {i}: {a} vs {b}");
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} fixtures found");
}

#[test]
fn label_fixtures_read_as_labels_and_hold_u16_values() {
    let (labels, _) = nifti::read_labels(fixtures().join("labels_uint16.nii.gz")).unwrap();
    let counts = labels.label_counts();
    assert_eq!(counts.len(), 301);
    assert_eq!(counts[300], 1);
    assert_eq!(counts[7], 1);
    assert_eq!(counts[1], 12);
    // Signed or scaled intensities are not labels.
    let err = nifti::read_labels(fixtures().join("dtype_int16.nii")).unwrap_err();
    assert!(err.to_string().contains("not a label map"), "{err}");
}
