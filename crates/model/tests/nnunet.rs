//! nnU-Net v2 folders against an independent numpy transcription of nnU-Net and
//! dynamic_network_architectures (scripts/make_nnunet_fixtures.py): miniature training
//! folders with random weights under nnU-Net's key names, in PyTorch's zip format, and
//! the reference outputs in tests/fixtures/nnunet/reference.safetensors.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use voxseg_model::cpu;
use voxseg_model::nnunet::{
    from_state_dict, gaussian, pipeline, predict_logit_rows, read_state_dict, steps, NnunetFolder, NnunetNet,
    Resampling, UnetClass, WindowOptions,
};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

const PLAIN: &str = "tests/fixtures/nnunet/Dataset901_MiniPlain/nnUNetTrainer__nnUNetPlans__3d_fullres";
const RESENC: &str = "tests/fixtures/nnunet/Dataset902_MiniResEnc/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres";

/// A reference array and its shape.
fn reference(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(repo("tests/fixtures/nnunet/reference.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = file.tensor(name).unwrap_or_else(|_| panic!("no reference {name}"));
    let values = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (values, t.shape().to_vec())
}

/// Largest |a - b| relative to the reference's largest magnitude (at least 1).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|v| v.abs()).fold(1.0, f32::max);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn reads_both_plans_layouts_and_the_checkpoints_metadata() {
    let plain = NnunetFolder::open(&repo(PLAIN), &[]).unwrap();
    assert_eq!(plain.network.class, UnetClass::PlainConvUNet);
    assert_eq!(plain.network.features_per_stage, [4, 8, 16]);
    assert_eq!(plain.network.kernel_sizes, [[1, 3, 3], [3, 3, 3], [3, 3, 3]]);
    assert_eq!(plain.network.strides, [[1, 1, 1], [1, 2, 2], [2, 2, 2]]);
    assert_eq!(plain.network.classes, 3);
    assert_eq!((plain.trainer.as_str(), plain.configuration.as_str()), ("nnUNetTrainer", "3d_fullres"));
    assert_eq!(plain.labels, [(1, "spleen".to_string()), (2, "liver".to_string())]);
    assert_eq!(plain.folds.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["0", "1"]);
    assert_eq!(plain.plan.mirror_axes, [0, 1, 2]);
    assert_eq!(plain.plan.patch_size, [16, 32, 32]);

    // Older layout: features from UNet_base_num_features doubling up to the maximum;
    // spacing and patch from the configuration, the rest inherited from 3d_lowres.
    let res = NnunetFolder::open(&repo(RESENC), &[]).unwrap();
    assert_eq!(res.network.class, UnetClass::ResidualEncoderUNet);
    assert_eq!(res.network.features_per_stage, [4, 8, 12]);
    assert_eq!(res.network.encoder_depth, [1, 2, 2]);
    assert_eq!(res.plan.spacing, [15.0, 4.5, 4.5]);
    assert_eq!(res.plan.patch_size, [16, 48, 48]);
    assert_eq!(res.plan.transpose_forward, [0, 2, 1]);
    assert_eq!(res.plan.mirror_axes, Vec::<usize>::new());
    assert_eq!(res.plan.data_resampling, Resampling { order: 3, order_z: 0, force_separate_z: None });

    let err = NnunetFolder::open(&repo(PLAIN), &["3".to_string()]).unwrap_err().to_string();
    assert!(err.contains("folds [\"3\"]") && err.contains("present: [\"0\", \"1\"]"), "{err}");
}

#[test]
fn both_networks_match_the_numpy_reference() {
    let device = cpu().device;
    for (folder, tag) in [(PLAIN, "plain"), (RESENC, "resenc")] {
        let f = NnunetFolder::open(&repo(folder), &[]).unwrap();
        let dict = read_state_dict(&f.folds[0].1).unwrap();
        let net = from_state_dict(&f.network, &dict, &device).unwrap();
        let (x, shape) = reference(&format!("{tag}_input"));
        let input = Tensor::<5>::from_data(TensorData::new(x, [1, 1, shape[1], shape[2], shape[3]]), &device);
        let got: Vec<f32> = net.forward(input).into_data().convert::<f32>().try_to_vec().unwrap();
        let (want, _) = reference(&format!("{tag}_logits"));
        let diff = max_rel_diff(&got, &want);
        assert!(diff <= 1e-4, "{tag}: max relative |logit difference| {diff}");
    }
}

#[test]
fn a_wrong_state_dict_is_refused_with_every_problem_named() {
    let f = NnunetFolder::open(&repo(PLAIN), &[]).unwrap();
    let mut dict = read_state_dict(&f.folds[0].1).unwrap();
    dict.remove("encoder.stages.1.0.convs.0.conv.weight");
    dict.insert("encoder.extra.weight".into(), (vec![0.0], vec![1]));
    let (v, _) = dict["decoder.transpconvs.0.bias"].clone();
    dict.insert("decoder.transpconvs.0.bias".into(), (v[..4].to_vec(), vec![4]));
    let problems = from_state_dict(&f.network, &dict, &cpu().device).unwrap_err();
    let text = problems.join("\n");
    assert!(text.contains("tensor encoder.stages.1.0.convs.0.conv.weight is missing"), "{text}");
    assert!(text.contains("tensor encoder.extra.weight is not part of the network"), "{text}");
    assert!(text.contains("tensor decoder.transpconvs.0.bias has shape [4], the network wants [8]"), "{text}");
}

#[test]
fn tiles_and_gaussian_match_nnunet() {
    let text = std::fs::read_to_string(repo("tests/fixtures/nnunet/steps.json")).unwrap();
    let cases: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let triple = |s: &str| -> [usize; 3] {
        let v: Vec<usize> = s.trim_matches(|c| c == '(' || c == ')').split(", ").map(|x| x.parse().unwrap()).collect();
        v.try_into().unwrap()
    };
    for (key, want) in &cases {
        let parts: Vec<&str> = key.split('|').collect();
        let got = steps(triple(parts[0]), triple(parts[1]), parts[2].parse().unwrap());
        let want: [Vec<usize>; 3] = serde_json::from_value(want.clone()).unwrap();
        assert_eq!(got, want, "{key}");
    }
    let (want, _) = reference("gaussian_12_20_16");
    let diff = max_rel_diff(&gaussian([12, 20, 16]), &want);
    assert!(diff <= 1e-6, "gaussian differs by {diff}");
}

#[test]
fn resampling_matches_skimage_as_nnunet_calls_it() {
    let (input, s) = reference("resize_input");
    let shape = [s[1], s[2], s[3]];
    let r = |order| Resampling { order, order_z: 0, force_separate_z: None };
    // (reference, new shape, target spacing, order): isotropic cubic, anisotropic cubic
    // with z separately (order 0), linear.
    for (name, to, spacing, order) in [
        ("resize_iso_order3", [9, 41, 23], [4.0, 2.2, 4.5], 3),
        ("resize_sepz_order3", [3, 45, 52], [12.0, 2.0, 2.0], 3),
        ("resize_iso_order1", [17, 20, 50], [2.1, 4.5, 2.1], 1),
    ] {
        let got = pipeline::resample_to_shape(&input, shape, to, [3.0; 3], spacing, r(order));
        let (want, _) = reference(name);
        let diff = max_rel_diff(&got, &want);
        assert!(diff <= 1e-5, "{name}: max relative difference {diff}");
    }
}

/// The CT as nnU-Net's SimpleITK reader gives it: `[k, j, i]` (voxseg's buffer order)
/// with the spacing in that order.
fn example_ct() -> (Vec<f32>, [usize; 3], [f64; 3]) {
    let (ct, _) = voxseg_volume::nifti::read_image(repo("../shared/data/totalseg/example_ct_sm.nii.gz")).unwrap();
    let [ni, nj, nk] = ct.shape();
    let sp = ct.grid().spacing();
    (ct.data().to_vec(), [nk, nj, ni], [sp[2], sp[1], sp[0]])
}

/// The sliding window's logits as one `[classes, d0, d1, d2]` array.
fn whole_logits(
    nets: &[NnunetNet],
    classes: usize,
    image: &[f32],
    shape: [usize; 3],
    options: &WindowOptions,
) -> Vec<f32> {
    let plane = shape[1] * shape[2];
    let mut logits = vec![0f32; classes * shape[0] * plane];
    predict_logit_rows(
        nets,
        classes,
        image,
        shape,
        options,
        &cpu().device,
        |_, _| {},
        |rows, v| {
            let n = rows.len() * plane;
            for c in 0..classes {
                logits[(c * shape[0] + rows.start) * plane..][..n].copy_from_slice(&v[c * n..][..n]);
            }
        },
    );
    logits
}

#[test]
fn whole_inference_matches_nnunet_on_a_real_ct() {
    let (ct, shape, spacing) = example_ct();
    let device = cpu().device;
    for (folder, tag) in [(PLAIN, "plain"), (RESENC, "resenc")] {
        let f = NnunetFolder::open(&repo(folder), &[]).unwrap();
        let prepared = pipeline::prepare(&ct, shape, spacing, &f.plan).unwrap();
        let (want_input, want_shape) = reference(&format!("{tag}_e2e_input"));
        assert_eq!(prepared.shape.to_vec(), want_shape, "{tag}: network grid");
        let diff = max_rel_diff(&prepared.data, &want_input);
        assert!(diff <= 1e-5, "{tag}: preprocessed input differs by {diff}");

        let nets: Vec<_> = f
            .folds
            .iter()
            .map(|(_, p)| from_state_dict(&f.network, &read_state_dict(p).unwrap(), &device).unwrap())
            .collect();
        let options = WindowOptions { patch: f.plan.patch_size, step: 0.5, mirror_axes: vec![] };
        let classes = f.network.classes;
        let logits = whole_logits(&nets, classes, &prepared.data, prepared.shape, &options);
        let (want_logits, _) = reference(&format!("{tag}_e2e_logits"));
        let diff = max_rel_diff(&logits, &want_logits);
        assert!(diff <= 1e-4, "{tag}: logits differ by {diff}");

        let labels = pipeline::labels(&logits, classes, &prepared, &f.plan);
        // Streamed: blocks of rows in order, none deeper than the patch, the same labels.
        let mut stream = pipeline::LabelStream::new(classes, &prepared, &f.plan);
        let mut blocks = Vec::new();
        predict_logit_rows(
            &nets,
            classes,
            &prepared.data,
            prepared.shape,
            &options,
            &device,
            |_, _| {},
            |rows, v| {
                blocks.push(rows.clone());
                stream.push(rows, v);
            },
        );
        assert_eq!((blocks[0].start, blocks.last().unwrap().end), (0, prepared.shape[0]), "{tag}: {blocks:?}");
        assert!(blocks.windows(2).all(|b| b[0].end == b[1].start), "{tag}: {blocks:?}");
        assert!(blocks.iter().all(|b| b.len() <= f.plan.patch_size[0]), "{tag}: {blocks:?}");
        assert_eq!(stream.finish(), labels, "{tag}: streamed labels");
        let (want, _) =
            voxseg_volume::nifti::read_labels(repo(&format!("tests/fixtures/nnunet/{tag}_labels.nii.gz"))).unwrap();
        let same = labels.iter().zip(want.data()).filter(|(a, b)| a == b).count();
        let agreement = same as f64 / labels.len() as f64;
        assert!(agreement >= 0.9999, "{tag}: labels agree on {:.5} % of voxels", 100.0 * agreement);
    }
}

/// The sliding window over an image several tiles long on every axis against a plain
/// whole-array transcription of nnU-Net's loop (every tile's logits times the Gaussian
/// summed into one array, divided by the summed weights): the streamed blocks, handed
/// on row by row of tiles (none deeper than the patch), give the same logits.
#[test]
fn streamed_sliding_window_equals_the_whole_array_loop() {
    let device = cpu().device;
    let f = NnunetFolder::open(&repo(PLAIN), &[]).unwrap();
    let nets: Vec<_> = f
        .folds
        .iter()
        .map(|(_, p)| from_state_dict(&f.network, &read_state_dict(p).unwrap(), &device).unwrap())
        .collect();
    let classes = f.network.classes;
    let patch = f.plan.patch_size;
    let shape = [2 * patch[0] + 3, patch[1] + 5, patch[2] + 1];
    let voxels: usize = shape.iter().product();
    let image: Vec<f32> = (0..voxels).map(|i| ((i * 7919) % 2003) as f32 / 1000.0 - 1.0).collect();
    let options = WindowOptions { patch, step: 0.5, mirror_axes: vec![] };

    let steps = steps(shape, patch, 0.5);
    let g = gaussian(patch);
    let (mut sum, mut weight) = (vec![0f64; classes * voxels], vec![0f64; voxels]);
    let tile_voxels: usize = patch.iter().product();
    for &z0 in &steps[0] {
        for &y0 in &steps[1] {
            for &x0 in &steps[2] {
                let mut tile = Vec::with_capacity(tile_voxels);
                for z in 0..patch[0] {
                    for y in 0..patch[1] {
                        let at = ((z0 + z) * shape[1] + y0 + y) * shape[2] + x0;
                        tile.extend_from_slice(&image[at..at + patch[2]]);
                    }
                }
                let x = Tensor::<5>::from_data(TensorData::new(tile, [1, 1, patch[0], patch[1], patch[2]]), &device);
                let mut logits = vec![0f32; classes * tile_voxels];
                for net in &nets {
                    let y: Vec<f32> = net.forward(x.clone()).into_data().convert::<f32>().try_to_vec().unwrap();
                    logits.iter_mut().zip(y).for_each(|(l, y)| *l += y / nets.len() as f32);
                }
                for t in 0..tile_voxels {
                    let (z, y, xx) = (t / (patch[1] * patch[2]), t / patch[2] % patch[1], t % patch[2]);
                    let v = ((z0 + z) * shape[1] + y0 + y) * shape[2] + x0 + xx;
                    weight[v] += g[t] as f64;
                    for c in 0..classes {
                        sum[c * voxels + v] += (logits[c * tile_voxels + t] * g[t]) as f64;
                    }
                }
            }
        }
    }
    let want: Vec<f32> = (0..classes * voxels).map(|i| (sum[i] / weight[i % voxels]) as f32).collect();

    let mut blocks = Vec::new();
    let mut got = Vec::new();
    let plane = shape[1] * shape[2];
    let mut per_class: Vec<Vec<f32>> = vec![Vec::new(); classes];
    predict_logit_rows(
        &nets,
        classes,
        &image,
        shape,
        &options,
        &device,
        |_, _| {},
        |rows, v| {
            let n = rows.len() * plane;
            per_class.iter_mut().enumerate().for_each(|(c, out)| out.extend_from_slice(&v[c * n..][..n]));
            blocks.push(rows);
        },
    );
    per_class.into_iter().for_each(|c| got.extend(c));
    assert!(blocks.len() == steps[0].len() && blocks.iter().all(|b| b.len() <= patch[0]), "{blocks:?}");
    let diff = max_rel_diff(&got, &want);
    assert!(diff <= 1e-5, "streamed logits differ from the whole-array loop by {diff}");
}

/// Both networks on wgpu against the CPU: the same argmax on >= 99.99 % of voxels.
/// CI runs it on lavapipe (VOXSEG_REQUIRE_WGPU=1), so it never silently skips there.
#[test]
fn wgpu_agrees_with_cpu() {
    use voxseg_model::{select, DeviceChoice};
    let gpu = match select(DeviceChoice::Gpu) {
        Ok(g) => g,
        Err(e) if std::env::var_os("VOXSEG_REQUIRE_WGPU").is_none() => {
            eprintln!("skipping the wgpu check: {e} (set VOXSEG_REQUIRE_WGPU=1 to require it)");
            return;
        }
        Err(e) => panic!("VOXSEG_REQUIRE_WGPU is set but there is no wgpu device: {e}"),
    };
    eprintln!("wgpu adapter: {}", gpu.name);
    let argmax = |logits: &[f32], classes: usize| -> Vec<usize> {
        let n = logits.len() / classes;
        (0..n)
            .map(|v| (0..classes).fold(0, |best, c| if logits[c * n + v] > logits[best * n + v] { c } else { best }))
            .collect()
    };
    for (folder, tag) in [(PLAIN, "plain"), (RESENC, "resenc")] {
        let f = NnunetFolder::open(&repo(folder), &[]).unwrap();
        let dict = read_state_dict(&f.folds[0].1).unwrap();
        // A small crop of the reference input: software Vulkan compiles (and autotunes)
        // a kernel per shape, so a few small shapes keep this test quick.
        let (x, shape) = reference(&format!("{tag}_input"));
        let (sy, sx) = (shape[2], shape[3]);
        let dims = [1, 1, 4, 8, 8];
        let x: Vec<f32> = (0..4)
            .flat_map(|z| (0..8).flat_map(move |y| (0..8).map(move |w| (z * sy + y) * sx + w)))
            .map(|i| x[i])
            .collect();
        let run = |device: &voxseg_model::Device| -> Vec<f32> {
            let net = from_state_dict(&f.network, &dict, device).unwrap();
            let input = Tensor::<5>::from_data(TensorData::new(x.clone(), dims), device);
            net.forward(input).into_data().convert::<f32>().try_to_vec().unwrap()
        };
        let (on_gpu, on_cpu) = (run(&gpu.device), run(&cpu().device));
        let classes = f.network.classes;
        let (a, b) = (argmax(&on_gpu, classes), argmax(&on_cpu, classes));
        let agreement = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
        assert!(agreement >= 0.9999, "{tag}: wgpu vs CPU argmax agree on {:.4} %", agreement * 100.0);
    }
}
