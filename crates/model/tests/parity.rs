//! The network against onnxruntime (an independent implementation built from the
//! same state dict by scripts/anatomynet_onnx.py), wgpu against the CPU, tiles
//! against the whole volume, half precision against f32, and weight files that do
//! not match.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use voxseg_model::{
    cpu, import_pytorch, load, predict, save, select, AnatomyNetConfig, DeviceChoice, Error, Options, Plan, Precision,
    Selected,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/anatomynet").join(name)
}

fn tensor(file: &str, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let data = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (data, t.shape().to_vec())
}

/// The fixture input as `[nx, ny, nz]` (x fastest) and onnxruntime's probabilities.
fn io() -> (Vec<f32>, [usize; 3], Vec<f32>) {
    let (input, shape) = tensor("io.safetensors", "input");
    let (probs, pshape) = tensor("io.safetensors", "probabilities");
    assert_eq!(pshape[1], 5);
    (input, [shape[4], shape[3], shape[2]], probs)
}

fn config() -> AnatomyNetConfig {
    AnatomyNetConfig::new(5)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxseg-model-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cpu_matches_onnxruntime() {
    let device = cpu().device;
    let net = import_pytorch(&config(), &fixture("state_dict.safetensors"), &device).unwrap();
    let (input, shape, want) = io();
    let opts = Options { keep_probabilities: true, ..Options::default() };
    let got = predict(&net, &input, shape, &device, &opts).unwrap();
    let probs = got.probabilities.unwrap();
    let max_diff = probs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-4, "max |p_voxseg - p_onnxruntime| = {max_diff}");
    // The argmax and its probability come from the same probabilities.
    let n = shape.iter().product::<usize>();
    for v in (0..n).step_by(97) {
        let k = got.labels[v] as usize;
        assert_eq!(got.confidence[v], probs[k * n + v]);
        assert!((0..5).all(|c| probs[c * n + v] <= probs[k * n + v]));
    }
}

#[test]
fn burnpack_round_trip_and_tiles() {
    let device = cpu().device;
    let net = import_pytorch(&config(), &fixture("state_dict.safetensors"), &device).unwrap();
    let dir = scratch("roundtrip");
    let path = dir.join("weights.bpk");
    save(&net, &path).unwrap();
    let again = load(&config(), &path, &device).unwrap();
    let (input, shape, _) = io();
    let a = predict(&net, &input, shape, &device, &Options::default()).unwrap();
    let b = predict(&again, &input, shape, &device, &Options::default()).unwrap();
    assert_eq!(a.confidence, b.confidence, "weights changed on the way through burnpack");
    // Slabs (whole trunk, tail in pieces with a halo) give the whole-volume answer.
    let slabs =
        predict(&again, &input, shape, &device, &Options { max_voxels: Some(48 * 48 * 10), ..Options::default() })
            .unwrap();
    assert_eq!((slabs.mode, slabs.tiles), ("slabs", 4));
    let same = a.labels.iter().zip(&slabs.labels).filter(|(x, y)| x == y).count();
    assert!(same as f64 / a.labels.len() as f64 >= 0.9999, "slabs vs whole: {same} of {}", a.labels.len());
    let diff = a.confidence.iter().zip(&slabs.confidence).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5, "slabs vs whole: max probability difference {diff}");
    // Overlapping tiles are the last resort: each tile's squeeze-and-excitation gates
    // see only the tile, so they only approximate the whole volume. On this fixture
    // (random weights, deliberately uncertain: median max-probability 0.58) 3 tiles
    // agree on 80.7% of voxels overall and 99.57% of those predicted with p >= 0.9.
    let tiled =
        predict(&again, &input, shape, &device, &Options { tile_voxels: Some(48 * 48 * 16), ..Options::default() })
            .unwrap();
    assert_eq!((tiled.mode, tiled.tiles), ("tiles", 3));
    let confident: Vec<usize> = (0..a.labels.len()).filter(|&v| a.confidence[v] >= 0.9).collect();
    let same = confident.iter().filter(|&&v| a.labels[v] == tiled.labels[v]).count();
    assert!(
        same as f64 / confident.len() as f64 >= 0.99,
        "tiles vs whole on confident voxels: {same} of {}",
        confident.len()
    );
    // A package whose network differs from the weights names the tensor at fault.
    let err = load(&AnatomyNetConfig::new(4), &path, &device).unwrap_err();
    assert!(matches!(err, Error::WeightsMismatch { .. }), "{err}");
    assert!(err.to_string().contains("head.weight"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn state_dict_problems_name_the_tensor() {
    let bytes = std::fs::read(fixture("state_dict.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dir = scratch("badimport");
    let device = cpu().device;
    // Drop one tensor, add a stray one.
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(name, _)| name != "layer2.1.conv2.weight").collect();
    let stray = vec![0u8; 16];
    let mut all = kept.clone();
    all.push((
        "layer2.1.extra.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &stray).unwrap(),
    ));
    let path = dir.join("broken.safetensors");
    safetensors::serialize_to_file(all, None, &path).unwrap();
    let err = import_pytorch(&config(), &path, &device).unwrap_err().to_string();
    assert!(err.contains("encoder.1.1.conv2.weight") && err.contains("is missing"), "{err}");
    assert!(err.contains("extra"), "{err}");
    assert!(err.contains("broken.safetensors"), "{err}");
    let missing = import_pytorch(&config(), &dir.join("nope.pt"), &device).unwrap_err();
    assert!(matches!(missing, Error::WeightsUnreadable { .. }));
    std::fs::remove_dir_all(dir).unwrap();
}

/// wgpu's adapter, or `None` (with a notice) where there is none and CI's
/// VOXSEG_REQUIRE_WGPU=1 is not set.
fn wgpu_or_skip() -> Option<Selected> {
    match select(DeviceChoice::Gpu) {
        Ok(gpu) => {
            eprintln!("wgpu adapter: {}", gpu.name);
            Some(gpu)
        }
        Err(e) if std::env::var_os("VOXSEG_REQUIRE_WGPU").is_none() => {
            eprintln!("skipping the wgpu check: {e} (set VOXSEG_REQUIRE_WGPU=1 to require it)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A 24 x 24 x 16 crop of the fixture input (software Vulkan in CI runs about 0.3
/// GFLOP/s), with its shape.
fn crop() -> (Vec<f32>, [usize; 3]) {
    let (input, [nx, ny, _], _) = io();
    let crop = [24, 24, 16];
    let mut x = Vec::new();
    for k in 8..8 + crop[2] {
        for j in 12..12 + crop[1] {
            let row = nx * (j + ny * k);
            x.extend_from_slice(&input[row + 12..row + 12 + crop[0]]);
        }
    }
    (x, crop)
}

/// Share of voxels with the same argmax.
fn agreement(a: &[u16], b: &[u16]) -> f64 {
    a.iter().zip(b).filter(|(p, q)| p == q).count() as f64 / a.len() as f64
}

/// The fixture network at `precision` on `device`, against the same at f32: the
/// share of voxels whose argmax agrees, and the plan that ran.
fn half_agreement(precision: Precision, device: &Selected, x: &[f32], shape: [usize; 3]) -> (f64, Plan) {
    let net = import_pytorch(&config(), &fixture("state_dict.safetensors"), &device.device).unwrap();
    let plan = Plan::new(precision, &device.device);
    let full = predict(&net, x, shape, &device.device, &Options::default()).unwrap();
    let half = predict(&plan.apply(net), x, shape, &device.device, &Options::default()).unwrap();
    (agreement(&full.labels, &half.labels), plan)
}

/// The CPU kernels compute in f32: f16 and bf16 round the weights only. On the
/// random-weight fixture (deliberately uncertain: median max-probability 0.58) the
/// argmax stays on 99.76% of the 32 x 48 x 48 voxels with f16 weights and 97.99% with
/// bf16 (8 mantissa bits): bf16 misses the 99% the demo package aims for, and the
/// floors below are the measured values rounded down, so a regression shows.
#[test]
fn half_precision_weights_agree_with_f32_on_cpu() {
    let (input, shape, _) = io();
    for (precision, floor) in [(Precision::F16, 0.995), (Precision::Bf16, 0.975)] {
        let (agree, plan) = half_agreement(precision, &cpu(), &input, shape);
        assert_eq!((plan.weights, plan.compute), (precision, Precision::F32), "{plan:?}");
        assert!(plan.note.as_deref().is_some_and(|n| n.contains("f32")), "{plan:?}");
        eprintln!("CPU {precision:?} vs f32: argmax agrees on {:.3}%", agree * 100.0);
        assert!(agree >= floor, "{precision:?} vs f32 on the CPU: argmax agrees on {:.3}%", agree * 100.0);
    }
    // f32 is f32 everywhere, with nothing to say.
    let plan = Plan::new(Precision::F32, &cpu().device);
    assert_eq!((plan.compute, plan.note), (Precision::F32, None));
}

/// f16 on wgpu, in the device's own half arithmetic where it has it (lavapipe does:
/// weights, input and activations in f16), against f32 on the same device, on the
/// 24 x 24 x 16 crop: 98.52% of the argmax agrees on lavapipe (the uncertain random
/// weights again; below the 99% aim). bf16 is left out here: lavapipe's run takes
/// minutes, and where a Vulkan driver has no bf16 arithmetic it is the rounded-weights
/// path the CPU test covers.
#[test]
fn half_precision_agrees_with_f32_on_wgpu() {
    let Some(gpu) = wgpu_or_skip() else { return };
    let (x, shape) = crop();
    let (agree, plan) = half_agreement(Precision::F16, &gpu, &x, shape);
    eprintln!("wgpu f16 vs f32 ({plan:?}): argmax agrees on {:.3}%", agree * 100.0);
    assert_eq!(plan.weights, Precision::F16);
    assert_eq!(plan.compute == Precision::F16, plan.note.is_none(), "{plan:?}");
    assert!(agree >= 0.98, "f16 vs f32 on wgpu: argmax agrees on {:.3}%", agree * 100.0);
}

/// wgpu against the CPU on a crop. CI installs lavapipe and sets
/// VOXSEG_REQUIRE_WGPU=1 so this never silently skips.
#[test]
fn wgpu_agrees_with_cpu() {
    let Some(gpu) = wgpu_or_skip() else { return };
    let (x, crop) = crop();
    let cpu_device = cpu().device;
    let on_cpu = import_pytorch(&config(), &fixture("state_dict.safetensors"), &cpu_device).unwrap();
    let on_gpu = import_pytorch(&config(), &fixture("state_dict.safetensors"), &gpu.device).unwrap();
    let a = predict(&on_cpu, &x, crop, &cpu_device, &Options::default()).unwrap();
    let b = predict(&on_gpu, &x, crop, &gpu.device, &Options::default()).unwrap();
    let agreement = agreement(&a.labels, &b.labels);
    assert!(agreement >= 0.9999, "wgpu vs CPU argmax agree on {:.4}%", agreement * 100.0);
    let diff = a.confidence.iter().zip(&b.confidence).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-3, "max |p_wgpu - p_cpu| = {diff}");
}

#[test]
fn bad_shapes_are_refused() {
    let device = cpu().device;
    let net = config().init(&device);
    let err = predict(&net, &[0.0; 3 * 4 * 4], [3, 4, 4], &device, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("even"), "{err}");
    // The fixture's network has about 0.73 M parameters; MACs at 64x128x128 as counted
    // from the ONNX graph by scripts/bench_anatomynet_onnx.py.
    assert_eq!(config().macs([64, 128, 128]), 112_518_497_572);
    assert_eq!(config().macs([32, 48, 48]), 7_911_458_084);
}
