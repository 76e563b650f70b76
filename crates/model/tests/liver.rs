//! The KU Leuven liver network (trained weights, models/liver-ct-kul) against the
//! independent numpy reference of scripts/liver_kul.py, which reads the original
//! Keras HDF5 file: tests/fixtures/liver/ holds its input segment and output.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use voxseg_model::{cpu, load_multipath, MultipathUnetConfig, Plan, Precision};

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
    let x = small_segment();
    let (a, _) = liver_at(Precision::F32, &cpu().device, &x, SMALL);
    let (b, _) = liver_at(Precision::F32, &gpu.device, &x, SMALL);
    assert_eq!(a.len(), 28);
    let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-3, "max |p_wgpu - p_cpu| = {max_diff}");
    assert!(a.iter().zip(&b).all(|(p, q)| (*p > 0.5) == (*q > 0.5)), "masks differ");
    // f16 on the same device, in its own half arithmetic where it has it (lavapipe
    // does; the instance-norm statistics stay f32): the mask is unchanged.
    let (h, plan) = liver_at(Precision::F16, &gpu.device, &x, SMALL);
    let max_diff = b.iter().zip(&h).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    eprintln!("wgpu f16 ({plan:?}) vs f32: max |diff| {max_diff}");
    assert!(b.iter().zip(&h).all(|(p, q)| (*p > 0.5) == (*q > 0.5)), "f16: masks differ");
}

/// The crop the wgpu checks run: 54 x 27 x 27 (the smallest segment the network takes
/// along two axes) from the fixture's 81 x 54 x 54 (C order [i, j, k]).
const SMALL: [usize; 3] = [54, 27, 27];

fn small_segment() -> Vec<f32> {
    let full = f32s("tests/fixtures/liver/segment_in.f32");
    let mut x = Vec::new();
    for i in 13..67 {
        for j in 13..40 {
            let row = (i * 54 + j) * 54;
            x.extend_from_slice(&full[row + 13..row + 40]);
        }
    }
    x
}

/// P(liver) of the trained network at `precision` on a `[i, j, k]` segment, and the
/// plan that ran.
fn liver_at(precision: Precision, device: &burn::tensor::Device, x: &[f32], [i, j, k]: [usize; 3]) -> (Vec<f32>, Plan) {
    let net =
        load_multipath(&MultipathUnetConfig::new(), &repo("models/liver-ct-kul/weights.safetensors"), device).unwrap();
    let plan = Plan::new(precision, device);
    let net = plan.apply(net);
    let input = Tensor::<5>::from_data(TensorData::new(x.to_vec(), [1, 1, i, j, k]), device).cast(net.dtype());
    (net.forward(input).into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), plan)
}

/// f16 and bf16 weights (the CPU computes in f32) against f32 on the fixture's real
/// 81 x 54 x 54 CT segment: the liver mask (p > 0.5) agrees on >= 99.9% of the output
/// voxels and its size within 0.5% (measured: f16 100% and +0.000%, bf16 99.977% and
/// +0.070%).
#[test]
fn half_precision_liver_agrees_with_f32_on_cpu() {
    let device = cpu().device;
    let x = f32s("tests/fixtures/liver/segment_in.f32");
    let (full, _) = liver_at(Precision::F32, &device, &x, [81, 54, 54]);
    let liver = |p: &[f32]| p.iter().filter(|&&v| v > 0.5).count();
    for precision in [Precision::F16, Precision::Bf16] {
        let (half, plan) = liver_at(precision, &device, &x, [81, 54, 54]);
        assert_eq!(plan.compute, Precision::F32);
        let same = full.iter().zip(&half).filter(|(p, q)| (**p > 0.5) == (**q > 0.5)).count();
        let agree = same as f64 / full.len() as f64;
        let volume = liver(&half) as f64 / liver(&full) as f64 - 1.0;
        eprintln!("CPU {precision:?} vs f32: mask agrees on {:.4}%, size {:+.3}%", agree * 100.0, volume * 100.0);
        assert!(agree >= 0.999, "{precision:?}: mask agrees on {:.4}%", agree * 100.0);
        assert!(volume.abs() <= 0.005, "{precision:?}: liver size differs by {:.3}%", volume * 100.0);
    }
}
