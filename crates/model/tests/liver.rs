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

/// The converter's kernel-axis mapping, on a hand-made Keras layer
/// (`scripts/convert_liver_kul.py --self-test --write-fixture`): an asymmetric
/// (3, 5, 1) kernel over 2 -> 3 channels, against Keras' own 'same' convolution.
#[test]
fn converted_kernel_axes_match_keras() {
    use burn::module::Param;
    use burn::nn::conv::Conv3dConfig;
    use burn::nn::PaddingConfig3d;
    let device = cpu().device;
    let bytes = std::fs::read(repo("tests/fixtures/liver/tiny_conv.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(name).unwrap();
        (t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), t.shape().to_vec())
    };
    let (w, ws) = get("tiny.weight");
    let (b, _) = get("tiny.bias");
    assert_eq!(ws, [3, 2, 3, 5, 1]);
    let mut conv = Conv3dConfig::new([2, 3], [3, 5, 1]).with_padding(PaddingConfig3d::Explicit(1, 2, 0)).init(&device);
    conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [3, 2, 3, 5, 1]), &device));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(b, [3]), &device)));
    // Channels-last [i, j, k, c] -> [N, C, i, j, k] and back.
    let x =
        Tensor::<4>::from_data(TensorData::new(f32s("tests/fixtures/liver/tiny_conv_in.f32"), [6, 7, 4, 2]), &device)
            .permute([3, 0, 1, 2])
            .unsqueeze::<5>();
    let y = conv.forward(x).squeeze::<4>().permute([1, 2, 3, 0]);
    let got = y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let want = f32s("tests/fixtures/liver/tiny_conv_out.f32");
    assert_eq!(got.len(), want.len());
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-5, "max difference {max_diff}");
}

/// wgpu against the CPU on the smallest segment the network takes along two axes
/// (software Vulkan in CI is slow). CI sets VOXSEG_REQUIRE_WGPU=1.
#[test]
fn liver_network_on_wgpu_agrees_with_cpu() {
    let gpu = match voxseg_model::select(voxseg_model::DeviceChoice::Gpu) {
        Ok(gpu) => gpu,
        Err(e) if std::env::var_os("VOXSEG_REQUIRE_WGPU").is_none() => {
            eprintln!("skipping the wgpu check: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // 54 x 27 x 27 from the fixture's 81 x 54 x 54 segment (C order [i, j, k]).
    let full = f32s("tests/fixtures/liver/segment_in.f32");
    let mut x = Vec::new();
    for i in 13..67 {
        for j in 13..40 {
            let row = (i * 54 + j) * 54;
            x.extend_from_slice(&full[row + 13..row + 40]);
        }
    }
    let run = |device: &burn::tensor::Device| {
        let net = load_multipath(&MultipathUnetConfig::new(), &repo("models/liver-ct-kul/weights.safetensors"), device)
            .unwrap();
        let input = Tensor::<5>::from_data(TensorData::new(x.clone(), [1, 1, 54, 27, 27]), device);
        net.forward(input).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    };
    let (a, b) = (run(&cpu().device), run(&gpu.device));
    assert_eq!(a.len(), 28);
    let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-3, "max |p_wgpu - p_cpu| = {max_diff}");
    assert!(a.iter().zip(&b).all(|(p, q)| (*p > 0.5) == (*q > 0.5)), "masks differ");
}
