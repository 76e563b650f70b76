//! `voxseg measure` and `voxseg compare` as a user runs them.

mod common;

use common::{json, ok, scratch, shared, stderr, voxseg};

#[test]
fn spleen_measure_reproduces_totalsegmentator() {
    let v = json(&voxseg(&[
        "measure",
        shared("totalseg/example_seg_fast/spleen.nii.gz").to_str().unwrap(),
        "--ct",
        shared("totalseg/example_ct_sm.nii.gz").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["spacing_mm"], serde_json::json!([3.0, 3.0, 3.0]));
    let s = &v["structures"][0];
    assert_eq!((s["label"].as_u64(), s["name"].as_str()), (Some(1), Some("label_1")));
    assert_eq!(s["voxels"], 9630);
    assert!((s["volume_ml"].as_f64().unwrap() - 260.01).abs() < 1e-9);
    assert!((s["mean_hu"].as_f64().unwrap() - 33.05909).abs() < 0.01);
    assert_eq!(s["touches_border"], true);
    for key in ["surface_area_mm2", "sphericity", "centroid_ras_mm", "bbox_ras_mm", "median_hu"] {
        assert!(!s[key].is_null(), "{key}");
    }
}

#[test]
fn names_and_csv() {
    let dir = scratch("names");
    let names = dir.join("names.csv");
    std::fs::write(&names, "label,name\n1,spleen\n5,liver\n").unwrap();
    let out = voxseg(&[
        "measure",
        shared("totalseg/example_seg_fast.nii.gz").to_str().unwrap(),
        "--names",
        names.to_str().unwrap(),
        "--label",
        "5",
        "--label",
        "1",
        "--csv",
    ]);
    ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("label,name,tg263,voxels,volume_ml"));
    assert!(lines[1].starts_with("5,liver,") && lines[2].starts_with("1,spleen,,9630,260.01"), "{text}");
    // TotalSegmentator's JSON class map works as a names file too.
    let v = json(&voxseg(&[
        "measure",
        shared("totalseg/example_seg_fast.nii.gz").to_str().unwrap(),
        "--names",
        shared("totalseg/class_map_total_v2.json").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["structures"][0]["name"], "spleen");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mismatched_grid_and_bad_names_exit_2() {
    let out = voxseg(&[
        "measure",
        shared("totalseg/example_seg_fast/spleen.nii.gz").to_str().unwrap(),
        "--ct",
        shared("totalseg/example_ct.nii.gz").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("grids differ") && err.contains("example_ct.nii.gz"), "{err}");
    let out = voxseg(&[
        "compare",
        shared("totalseg/example_seg_fast.nii.gz").to_str().unwrap(),
        shared("totalseg/example_seg_fast_force_split.nii.gz").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("grids differ"));
    let out = voxseg(&[
        "measure",
        shared("totalseg/example_seg_fast.nii.gz").to_str().unwrap(),
        "--names",
        shared("README.md").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("label,name"));
}

#[test]
fn compare_json() {
    let v = json(&voxseg(&[
        "compare",
        shared("totalseg/example_seg_fast.nii.gz").to_str().unwrap(),
        shared("totalseg/example_seg.nii.gz").to_str().unwrap(),
        "--names",
        shared("totalseg/class_map_total_v2.json").to_str().unwrap(),
        "--json",
    ]));
    let spleen = v["structures"].as_array().unwrap().iter().find(|s| s["name"] == "spleen").unwrap();
    let dice = spleen["dice"].as_f64().unwrap();
    assert!(dice > 0.9 && dice < 1.0, "{dice}");
    assert!(spleen["hd95_mm"].as_f64().unwrap() >= 0.0);
}
