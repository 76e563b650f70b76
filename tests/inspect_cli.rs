//! `voxseg inspect` as a user runs it: output, exit codes, messages.

mod common;

use common::{json, shared, stderr, voxseg};

#[test]
fn example_ct_json_agrees_with_nibabel() {
    let ct = shared("totalseg/example_ct.nii.gz");
    let v = json(&voxseg(&["inspect", ct.to_str().unwrap(), "--json"]));
    // nibabel 5: img.shape, header.get_zooms(), aff2axcodes, img.affine, get_fdata() min/max/mean.
    assert_eq!(v["shape"], serde_json::json!([122, 101, 112]));
    assert_eq!(v["spacing_mm"], serde_json::json!([3.0, 3.0, 3.0]));
    assert_eq!(v["orientation"], "RAS");
    assert_eq!(v["dtype"], "int32");
    let want = [
        [3.0, 0.0, 0.0, -177.95632934570312],
        [0.0, 3.0, 0.0, 11.319000244140625],
        [0.0, 0.0, 3.0, 94.3017578125],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (row, w) in v["affine"].as_array().unwrap().iter().zip(want) {
        for (a, b) in row.as_array().unwrap().iter().zip(w) {
            assert!((a.as_f64().unwrap() - b).abs() < 1e-4);
        }
    }
    assert_eq!(v["min"], -1207.0);
    assert_eq!(v["max"], 3382.0);
    assert!((v["mean"].as_f64().unwrap() - -360.0203852864795).abs() < 1e-6);
    assert!(v.get("labels").is_none(), "a CT with negative HU is not a label map");
}

#[test]
fn spleen_mask_lists_its_label_volume() {
    let mask = shared("totalseg/example_seg_fast/spleen.nii.gz");
    let v = json(&voxseg(&["inspect", mask.to_str().unwrap(), "--json"]));
    let labels = v["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0]["label"], 1);
    assert_eq!(labels[0]["voxels"], 9630);
    assert!((labels[0]["volume_ml"].as_f64().unwrap() - 260.01).abs() < 1e-9);
    let human = voxseg(&["inspect", mask.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("260.010 mL"));
}

#[test]
fn bad_files_exit_2_with_a_message_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("voxseg-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ct = std::fs::read(shared("totalseg/example_ct.nii.gz")).unwrap();
    let truncated = dir.join("truncated.nii.gz");
    std::fs::write(&truncated, &ct[..ct.len() / 3]).unwrap();
    let text = dir.join("notes.nii");
    std::fs::write(&text, "this is not an image\n").unwrap();
    let missing = dir.join("missing.nii.gz");
    for (path, says) in [(&truncated, "truncated"), (&text, "not a NIfTI file"), (&missing, "cannot access")] {
        let out = voxseg(&["inspect", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(path.to_str().unwrap()) && err.contains(says), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let usage = voxseg(&["inspect"]);
    assert_eq!(usage.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
