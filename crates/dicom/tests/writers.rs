//! RTSTRUCT and SEG of TotalSegmentator's organs on the example CT's DICOM series,
//! read back by independent readers (`scripts/check_dicom_outputs.py`: rt-utils,
//! pydicom, highdicom).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use voxseg_dicom::{read_series, write_rtstruct, write_seg, Roi};
use voxseg_volume::nifti::{self, Header};
use voxseg_volume::{LabelMap, Volume};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// TotalSegmentator's labels for the example CT, carried onto the DICOM series' grid
/// (same voxel centres, stored in LPS order).
fn labels_on(grid: &voxseg_volume::Grid) -> LabelMap {
    let (seg, _) = nifti::read_labels(repo().join("../shared/data/totalseg/example_seg_fast.nii.gz")).unwrap();
    let [nx, ny, nz] = grid.shape();
    let mut data = Vec::with_capacity(grid.len());
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = seg.grid().world_to_voxel(grid.voxel_to_world([i as f64, j as f64, k as f64]));
                let [a, b, c] = v.map(|x| x.round() as usize);
                data.push(*seg.at(a, b, c));
            }
        }
    }
    Volume::new(grid.clone(), data)
}

fn rois() -> Vec<Roi> {
    let roi = |id, name: &str, tg263: Option<&str>| Roi {
        id,
        name: name.into(),
        tg263: tg263.map(Into::into),
        colour: [200, (40 * id % 256) as u8, 60],
    };
    vec![
        roi(1, "spleen", Some("Spleen")),
        roi(2, "kidney_right", Some("Kidney_R")),
        roi(3, "kidney_left", Some("Kidney_L")),
        roi(5, "liver", Some("Liver")),
        // No TG-263 name: the model's name is the ROI name (and still finds its code).
        roi(6, "stomach", None),
        // No code known: the generic SNOMED CT "Organ".
        roi(8, "adrenal_gland_right", None),
        // Not in the label map: left out of both objects.
        roi(60, "absent", Some("Brainstem")),
    ]
}

/// True when python3 has what `check_dicom_outputs.py` imports; under
/// VOXSEG_REQUIRE_PYTHON=1 (CI) their absence is a failure, never a skip.
pub fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pydicom, rt_utils, highdicom, nibabel, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("VOXSEG_REQUIRE_PYTHON").is_none(),
        "python3 with pydicom, rt-utils, highdicom, nibabel required (pip install pydicom rt-utils highdicom nibabel)"
    );
    ok
}

/// Writes the RTSTRUCT, SEG and label map of TotalSegmentator's organs on the series
/// in `series_dir` and returns what `check_dicom_outputs.py` reports (`None`: no Python).
fn write_and_check(series_dir: &Path, tag: &str) -> Option<Value> {
    let (ct, series) = read_series(series_dir, None).unwrap();
    let labels = labels_on(ct.grid());
    let dir = std::env::temp_dir().join(format!("voxseg-dicom-writers-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rt, seg, nii) = (dir.join("rtstruct.dcm"), dir.join("seg.dcm"), dir.join("labels.nii.gz"));
    write_rtstruct(&rt, &labels, &rois(), &series).unwrap();
    write_seg(&seg, &labels, &rois(), &series).unwrap();
    nifti::write_labels(&nii, &labels, &Header::for_grid(ct.grid())).unwrap();
    // Nothing but the three files: temporaries were renamed away.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    if !python_ready() {
        eprintln!("SKIPPED: python3 with pydicom, rt-utils, highdicom not available");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/check_dicom_outputs.py")).arg(series_dir).arg(&nii);
    cmd.arg("--rtstruct").arg(&rt).arg("--seg").arg(&seg);
    for r in rois() {
        cmd.arg("--roi").arg(format!("{}={}", r.dicom_name(), r.id));
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tag}: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{tag}: {report}");
    std::fs::remove_dir_all(dir).unwrap();
    Some(serde_json::from_str(&report).unwrap())
}

#[test]
fn rtstruct_and_seg_read_back_by_rt_utils_pydicom_and_highdicom() {
    let Some(v) = write_and_check(&repo().join("tests/fixtures/dicom/full"), "full") else { return };
    assert_eq!(v["rtstruct"]["Liver"]["dice_even_odd"], 1.0);
    assert_eq!(v["rtstruct"]["Brainstem"]["present"], false);
    assert_eq!(v["seg"]["Liver"]["mismatched_voxels"], 0);
    assert_eq!(v["seg"]["Liver"]["type"], "Liver");
    assert_eq!(v["seg"]["stomach"]["type"], "Stomach");
    assert_eq!(v["seg"]["adrenal_gland_right"]["type"], "Organ");
    for (name, r) in v["rtstruct"].as_object().unwrap() {
        if r["present"] == true {
            assert_eq!(r["dice_rt_utils"], 1.0, "{name}");
        }
    }
}

/// Kidneys, liver, stomach and the right adrenal lie in the small fixtures' crop.
fn assert_exact(v: &Value, rt_utils: bool) {
    for name in ["Kidney_R", "Kidney_L", "Liver", "stomach", "adrenal_gland_right"] {
        let (r, s) = (&v["rtstruct"][name], &v["seg"][name]);
        assert!(r["voxels"].as_u64().unwrap() > 0, "{name} not in the crop");
        assert_eq!(r["dice_even_odd"], 1.0, "{name}");
        assert_eq!(s["mismatched_voxels"], 0, "{name}");
        if rt_utils {
            assert!(r["dice_rt_utils"].as_f64().unwrap() >= 0.95, "{name}: {r}");
        }
    }
}

#[test]
fn an_anonymised_series_gets_outputs_that_reference_its_file_meta_uids() {
    let dir = repo().join("tests/fixtures/dicom_wild/blank_uids");
    let (_, series) = read_series(&dir, None).unwrap();
    // Every slice referenced by the instance UID its file meta keeps.
    assert!(series.slices.iter().all(|s| s.sop_instance_uid.starts_with("1.2.826.0.1.3680043.8.498.")));
    if let Some(v) = write_and_check(&dir, "blank") {
        assert_exact(&v, true);
    }
}

#[test]
fn outputs_on_an_enhanced_ct_reference_its_frames() {
    let dir = repo().join("tests/fixtures/dicom_wild/multiframe");
    let (_, series) = read_series(&dir, None).unwrap();
    let frames: Vec<Option<u32>> = series.slices.iter().map(|s| s.frame).collect();
    // highdicom stored the frames head first; voxseg stacks them along the normal.
    assert_eq!(frames, (1..=8).rev().map(Some).collect::<Vec<_>>());
    // rt-utils reads single-frame series only: even-odd fill and highdicom here.
    if let Some(v) = write_and_check(&dir, "multiframe") {
        assert_exact(&v, false);
    }
}
