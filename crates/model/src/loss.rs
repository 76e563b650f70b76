//! AnatomyNet's training loss: soft Dice + focal, made safe for partly annotated
//! cases by merging every class a case does not annotate into the background
//! (the "marginal" loss): the network is then never punished for finding an organ
//! the annotator did not draw, and never rewarded for hiding one.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

/// Weights and shape of the loss; `[train.loss]` in a training config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub dice_weight: f64,
    pub focal_weight: f64,
    /// Focal exponent: 0 is plain cross-entropy.
    pub focal_gamma: f64,
    /// Added to numerator and denominator of each Dice, so an organ absent from
    /// both prediction and patch scores 1, not 0/0.
    pub dice_smooth: f64,
}

impl Default for LossConfig {
    fn default() -> LossConfig {
        LossConfig { dice_weight: 1.0, focal_weight: 1.0, focal_gamma: 2.0, dice_smooth: 1.0 }
    }
}

/// Channels kept after merging: background (with every unannotated class folded
/// in), then the annotated foreground classes in order.
fn merged(x: Tensor<5>, annotated: &[bool]) -> Tensor<5> {
    let device = x.device();
    let index = |ids: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &device);
    let into_background: Vec<i64> =
        (0..annotated.len()).filter(|&c| c == 0 || !annotated[c]).map(|c| c as i64).collect();
    let kept: Vec<i64> = (1..annotated.len()).filter(|&c| annotated[c]).map(|c| c as i64).collect();
    let background = x.clone().select(1, index(into_background)).sum_dim(1);
    if kept.is_empty() {
        background
    } else {
        Tensor::cat(vec![background, x.select(1, index(kept))], 1)
    }
}

/// The loss of `logits` `[N, C, D, H, W]` against a one-hot `target` of the same
/// shape. `annotated[c]` says whether class `c` was drawn in these cases
/// (`annotated[0]`, background, is ignored). Returns a one-element tensor.
///
/// Dice is averaged over the annotated foreground classes (summed over the batch,
/// as nnU-Net's batch Dice); focal is averaged over voxels.
///
/// On the CPU's training device this is one operation with its own backward pass
/// (`kernels::segmentation_loss`); elsewhere burn's ops.
pub fn segmentation_loss(logits: Tensor<5>, target: Tensor<5>, annotated: &[bool], config: &LossConfig) -> Tensor<1> {
    let [_, classes, _, _, _] = logits.dims();
    assert_eq!(annotated.len(), classes, "one annotated flag per class");
    if crate::kernels::on_cpu_autodiff(&logits.device()) {
        return crate::kernels::segmentation_loss(logits, target, annotated, config);
    }
    in_burns_ops(logits, target, annotated, config)
}

/// [`segmentation_loss`] as burn's tensor operations (any device).
pub(crate) fn in_burns_ops(logits: Tensor<5>, target: Tensor<5>, annotated: &[bool], config: &LossConfig) -> Tensor<1> {
    let p = merged(softmax(logits, 1), annotated);
    let y = merged(target, annotated);
    let [n, k, d, h, w] = p.dims();
    let voxels = (n * d * h * w) as f64;

    // Focal: -(1 - p)^gamma log p at each voxel's true (merged) class.
    let log_p = p.clone().clamp_min(1e-7).log();
    let modulator = (p.clone().neg() + 1.0).clamp_min(0.0).powf_scalar(config.focal_gamma);
    let focal = (y.clone() * modulator * log_p).sum().neg() / voxels;

    let mut loss = focal * config.focal_weight;
    if k > 1 {
        let flat = |t: Tensor<5>| t.narrow(1, 1, k - 1).swap_dims(0, 1).reshape([k - 1, n * d * h * w]);
        let (p, y) = (flat(p), flat(y));
        let s = config.dice_smooth;
        let overlap = (p.clone() * y.clone()).sum_dim(1) * 2.0 + s;
        let size = p.sum_dim(1) + y.sum_dim(1) + s;
        let dice = (overlap / size).mean();
        loss = loss + (dice.neg() + 1.0) * config.dice_weight;
    }
    loss
}

/// `[N, C, D, H, W]` one-hot float target from labels `[N][D][H][W]` (x fastest).
pub fn one_hot(labels: &[u16], shape: [usize; 4], classes: usize, device: &Device) -> Tensor<5> {
    let [n, d, h, w] = shape;
    let per = d * h * w;
    let mut data = vec![0f32; n * classes * per];
    for (i, &l) in labels.iter().enumerate() {
        let (b, v) = (i / per, i % per);
        data[(b * classes + usize::from(l)) * per + v] = 1.0;
    }
    Tensor::from_data(TensorData::new(data, [n, classes, d, h, w]), device)
}
