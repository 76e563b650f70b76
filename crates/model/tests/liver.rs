//! The KU Leuven liver network (trained weights, models/liver-ct-kul) against the
//! independent numpy reference of scripts/liver_kul.py, which reads the original
//! Keras HDF5 file: tests/fixtures/liver/ holds its input segment and output.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use voxseg_model::{cpu, load_multipath, MultipathUnetConfig};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn f32s(rel: &str) -> Vec<f32> {
    std::fs::read(repo(rel)).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn trained_liver_network_matches_numpy_reference() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("tests/fixtures/liver/meta.json")).unwrap()).unwrap();
    let shape =
        |k: &str| -> Vec<usize> { meta[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect() };
    let (ins, outs) = (shape("input_shape"), shape("output_shape"));
    let device = cpu().device;
    let net =
        load_multipath(&MultipathUnetConfig::new(), &repo("models/liver-ct-kul/weights.safetensors"), &device).unwrap();
    assert_eq!(net.margin(), (ins[0] - outs[0]) / 2);
    // C order [i, j, k] is the tensor layout [N, C, i, j, k].
    let input = Tensor::<5>::from_data(
        TensorData::new(f32s("tests/fixtures/liver/segment_in.f32"), [1, 1, ins[0], ins[1], ins[2]]),
        &device,
    );
    let got = net.forward(input);
    assert_eq!(got.dims(), [1, 1, outs[0], outs[1], outs[2]]);
    let got = got.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let want = f32s("tests/fixtures/liver/prob_out.f32");
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-4, "max |p_voxseg - p_numpy| = {max_diff}");
    let above = got.iter().filter(|&&p| p > 0.5).count();
    assert_eq!(above as u64, meta["prob_above_half"].as_u64().unwrap());
}
