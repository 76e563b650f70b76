//! The training loss against an independent f64 implementation, its gradient
//! against finite differences, and the masking of classes a case does not annotate.

use burn::prelude::*;
use voxseg_model::{cpu, one_hot, segmentation_loss, LossConfig};

const SHAPE: [usize; 5] = [2, 3, 2, 3, 2];

/// Deterministic, varied logits in about [-2, 2].
fn logits() -> Vec<f32> {
    (0..SHAPE.iter().product::<usize>()).map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * 4.0).collect()
}

fn labels() -> Vec<u16> {
    let [n, _, d, h, w] = SHAPE;
    (0..n * d * h * w).map(|i| [0, 1, 2, 0, 2, 1, 0][i % 7]).collect()
}

/// The loss written out by hand in f64, straight from its definition.
fn reference(logits: &[f32], labels: &[u16], annotated: &[bool], c: &LossConfig) -> f64 {
    let [n, k, d, h, w] = SHAPE;
    let per = d * h * w;
    let merged = |class: usize| if class != 0 && annotated[class] { class } else { 0 };
    let kept: Vec<usize> = (1..k).filter(|&c| annotated[c]).collect();
    let (mut focal, mut overlap, mut psum, mut ysum) = (0.0, vec![0.0; k], vec![0.0; k], vec![0.0; k]);
    for b in 0..n {
        for v in 0..per {
            let z: Vec<f64> = (0..k).map(|c| f64::from(logits[(b * k + c) * per + v])).collect();
            let max = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
            let total: f64 = e.iter().sum();
            let mut q = vec![0.0; k];
            for c in 0..k {
                q[merged(c)] += e[c] / total;
            }
            let t = merged(usize::from(labels[b * per + v]));
            focal -= (1.0 - q[t]).powf(c.focal_gamma) * q[t].max(1e-7).ln();
            for &c in &kept {
                let y = f64::from(u8::from(t == c));
                overlap[c] += q[c] * y;
                psum[c] += q[c];
                ysum[c] += y;
            }
        }
    }
    let focal = focal / (n * per) as f64;
    let dice = if kept.is_empty() {
        0.0
    } else {
        let s = c.dice_smooth;
        1.0 - kept.iter().map(|&c| (2.0 * overlap[c] + s) / (psum[c] + ysum[c] + s)).sum::<f64>() / kept.len() as f64
    };
    c.focal_weight * focal + c.dice_weight * dice
}

fn loss_of(device: &Device, values: &[f32], annotated: &[bool], c: &LossConfig) -> f32 {
    let x = Tensor::<5>::from_data(TensorData::new(values.to_vec(), SHAPE), device);
    let [n, k, d, h, w] = SHAPE;
    let target = one_hot(&labels(), [n, d, h, w], k, device);
    segmentation_loss(x, target, annotated, c).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
}

#[test]
fn equals_the_definition_with_and_without_missing_classes() {
    // burn's ops (inference device) and the CPU's training operation (autodiff device).
    for device in [cpu().device, cpu().device.autodiff()] {
        let config = LossConfig { dice_weight: 0.7, focal_weight: 1.3, focal_gamma: 2.0, dice_smooth: 1.0 };
        for annotated in [[true, true, true], [true, false, true], [true, false, false]] {
            let got = loss_of(&device, &logits(), &annotated, &config);
            let want = reference(&logits(), &labels(), &annotated, &config);
            assert!((f64::from(got) - want).abs() < 1e-5, "{device:?} {annotated:?}: {got} vs {want}");
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let device = cpu().device.autodiff();
    let config = LossConfig::default();
    let annotated = [true, true, false];
    let values = logits();
    let x = Tensor::<5>::from_data(TensorData::new(values.clone(), SHAPE), &device).require_grad();
    let [n, k, d, h, w] = SHAPE;
    let target = one_hot(&labels(), [n, d, h, w], k, &device);
    let grads = segmentation_loss(x.clone(), target, &annotated, &config).backward();
    let analytic: Vec<f32> =
        x.grad(&grads).expect("a gradient").into_data().convert::<f32>().try_to_vec::<f32>().unwrap();

    let step = 1e-3;
    let mut worst = 0f64;
    for i in 0..values.len() {
        let at = |delta: f64| {
            let mut v = values.clone();
            v[i] += delta as f32;
            reference(&v, &labels(), &annotated, &config)
        };
        let numeric = (at(step) - at(-step)) / (2.0 * step);
        worst = worst.max((numeric - f64::from(analytic[i])).abs());
    }
    assert!(worst < 1e-4, "largest |analytic - numeric| = {worst}");
    assert!(analytic.iter().any(|g| g.abs() > 1e-3), "the gradient is not trivially zero");
}

#[test]
fn a_class_the_case_does_not_annotate_is_neither_punished_nor_rewarded() {
    // Moving logit mass between background and an unannotated class leaves the
    // loss unchanged; the same move on an annotated class changes it.
    let device = cpu().device;
    let config = LossConfig::default();
    let annotated = [true, true, false];
    let base = logits();
    let per = SHAPE[2] * SHAPE[3] * SHAPE[4];
    let mut swapped = base.clone();
    for b in 0..SHAPE[0] {
        for v in 0..per {
            swapped.swap(b * 3 * per + v, (b * 3 + 2) * per + v);
        }
    }
    let before = loss_of(&device, &base, &annotated, &config);
    let after = loss_of(&device, &swapped, &annotated, &config);
    assert!((before - after).abs() < 1e-6, "unannotated class 2 changed the loss: {before} -> {after}");
    let all = [true, true, true];
    let (before, after) = (loss_of(&device, &base, &all, &config), loss_of(&device, &swapped, &all, &config));
    assert!((before - after).abs() > 1e-3, "with class 2 annotated the swap must matter: {before} -> {after}");
}
