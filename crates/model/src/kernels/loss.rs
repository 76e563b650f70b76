//! Training's loss on the CPU ([`crate::loss::segmentation_loss`]: softmax, the
//! marginal merge of unannotated classes, focal and soft Dice) as one operation of
//! burn's autodiff graph: one pass over the logits forward, one backward, where burn's
//! ops record about twenty full-size tensor operations each way.
//!
//! Per voxel, with `p = softmax(z)`, merged probabilities `q_j = Σ_{c in j} p_c` and
//! targets `y_j` (group 0: background and every unannotated class), over `V` voxels
//! and the `k - 1` kept classes:
//!
//! - `loss = w_f F + w_d (1 - mean_j D_j)`, `F = -(1/V) Σ_v Σ_j y_j m(q_j) l(q_j)` with
//!   `m(q) = max(1 - q, 0)^γ`, `l(q) = ln max(q, 1e-7)`, and
//!   `D_j = (2 Σ_v q_j y_j + s) / (Σ_v q_j + Σ_v y_j + s)`;
//! - `dL/dq_j = -(w_f/V) y_j (m' l + m l') - w_d/(k-1) (2 y_j den_j - num_j) / den_j²`,
//!   `dL/dp_c = dL/dq_(group of c)` and `dL/dz_c = p_c (dL/dp_c - Σ_c' p_c' dL/dp_c')`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

use super::{autodiff, tensor, values};
use crate::loss::LossConfig;

/// The smallest probability whose logarithm the focal term takes (as burn's version).
const FLOOR: f32 = 1e-7;

/// Voxels per task.
const CHUNK: usize = 4096;

/// [`crate::loss::segmentation_loss`] on the CPU's autodiff device, differentiable in
/// `logits` (`target` is a constant).
pub(crate) fn segmentation_loss(
    logits: Tensor<5>,
    target: Tensor<5>,
    annotated: &[bool],
    config: &LossConfig,
) -> Tensor<1> {
    let (logits, target) = (autodiff(logits), autodiff(target));
    let merge = Merge::new(annotated);
    let logits_values = logits.primitive().clone();
    let target_values = target.primitive().clone();
    let (z, dims) = values::<5>(&logits_values);
    let (y, _) = values::<5>(&target_values);
    let sums = merge.sums(&z, &y, dims, config.focal_gamma);
    drop((z, y));
    let [n, _, d, h, w] = dims;
    let loss = Loss { merge, config: *config, voxels: (n * d * h * w) as f64, sums };
    let out = tensor(vec![loss.value() as f32], [1]);
    let output = match MarginalLoss.prepare::<NoCheckpointing>([logits.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((loss, logits_values, target_values), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

/// Which merged group each class falls in: 0 for the background and every class the
/// cases do not annotate, then the annotated classes in order.
#[derive(Debug, Clone)]
struct Merge {
    group: Vec<usize>,
    groups: usize,
}

/// One voxel's softmax, merged probabilities and merged targets.
struct Voxel {
    p: Vec<f32>,
    q: Vec<f32>,
    y: Vec<f32>,
}

/// Sums over the voxels: the focal sum `Σ y m l` and, per group, `Σ q y`, `Σ q`, `Σ y`.
#[derive(Debug, Clone)]
struct Sums {
    focal: f64,
    overlap: Vec<f64>,
    predicted: Vec<f64>,
    expected: Vec<f64>,
}

impl Sums {
    fn zero(groups: usize) -> Sums {
        Sums { focal: 0.0, overlap: vec![0.0; groups], predicted: vec![0.0; groups], expected: vec![0.0; groups] }
    }

    fn add(mut self, other: Sums) -> Sums {
        self.focal += other.focal;
        for (a, b) in [
            (&mut self.overlap, &other.overlap),
            (&mut self.predicted, &other.predicted),
            (&mut self.expected, &other.expected),
        ] {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        self
    }
}

impl Merge {
    fn new(annotated: &[bool]) -> Merge {
        let mut groups = 1;
        let group = (0..annotated.len())
            .map(|c| {
                if c == 0 || !annotated[c] {
                    0
                } else {
                    groups += 1;
                    groups - 1
                }
            })
            .collect();
        Merge { group, groups }
    }

    /// Voxel `v` of item `i` (`z`, `y` `[n][classes][voxels]`) into `at`.
    fn voxel(&self, z: &[f32], y: &[f32], [i, classes, voxels]: [usize; 3], v: usize, at: &mut Voxel) {
        let index = |c: usize| (i * classes + c) * voxels + v;
        let max = (0..classes).map(|c| z[index(c)]).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for (c, p) in at.p.iter_mut().enumerate() {
            *p = (z[index(c)] - max).exp();
            total += *p;
        }
        at.q.fill(0.0);
        at.y.fill(0.0);
        for (c, p) in at.p.iter_mut().enumerate() {
            *p /= total;
            at.q[self.group[c]] += *p;
            at.y[self.group[c]] += y[index(c)];
        }
    }

    /// The focal sum and the Dice sums of `z` against `y`, both `[n, classes, d, h, w]`.
    fn sums(&self, z: &[f32], y: &[f32], [n, classes, d, h, w]: [usize; 5], gamma: f64) -> Sums {
        let voxels = d * h * w;
        let per_item = voxels.div_ceil(CHUNK);
        (0..n * per_item)
            .into_par_iter()
            .map(|task| {
                let (i, start) = (task / per_item, task % per_item * CHUNK);
                let mut at = Voxel { p: vec![0.0; classes], q: vec![0.0; self.groups], y: vec![0.0; self.groups] };
                let mut sums = Sums::zero(self.groups);
                for v in start..(start + CHUNK).min(voxels) {
                    self.voxel(z, y, [i, classes, voxels], v, &mut at);
                    let mut focal = 0f32;
                    for j in 0..self.groups {
                        let (q, y) = (at.q[j], at.y[j]);
                        // One-hot targets: the focal term lives at one group a voxel.
                        if y != 0.0 {
                            focal += y * power((1.0 - q).max(0.0), gamma as f32) * q.max(FLOOR).ln();
                        }
                        sums.overlap[j] += (q * y) as f64;
                        sums.predicted[j] += q as f64;
                        sums.expected[j] += y as f64;
                    }
                    sums.focal += focal as f64;
                }
                sums
            })
            .reduce(|| Sums::zero(self.groups), Sums::add)
    }
}

/// What the backward pass needs besides the logits and the targets.
#[derive(Debug, Clone)]
struct Loss {
    merge: Merge,
    config: LossConfig,
    /// Voxels over the batch: the focal term's mean is over them.
    voxels: f64,
    sums: Sums,
}

impl Loss {
    /// Soft Dice's numerator and denominator for kept group `j`.
    fn dice(&self, j: usize) -> (f64, f64) {
        let s = self.config.dice_smooth;
        (2.0 * self.sums.overlap[j] + s, self.sums.predicted[j] + self.sums.expected[j] + s)
    }

    fn value(&self) -> f64 {
        let k = self.merge.groups;
        let mut loss = -self.sums.focal / self.voxels * self.config.focal_weight;
        if k > 1 {
            let dice = (1..k).map(|j| self.dice(j)).map(|(num, den)| num / den).sum::<f64>() / (k - 1) as f64;
            loss += (1.0 - dice) * self.config.dice_weight;
        }
        loss
    }

    /// `dL/dz` of every logit, times the output gradient `scale`.
    fn logit_gradient(&self, z: &[f32], y: &[f32], [n, classes, d, h, w]: [usize; 5], scale: f32) -> Vec<f32> {
        let (merge, k) = (&self.merge, self.merge.groups);
        let gamma = self.config.focal_gamma as f32;
        let focal = (-self.config.focal_weight / self.voxels) as f32;
        // The Dice term of dL/dq_j is `a_j y_j + b_j` (zero for the background group).
        let per_dice = self.config.dice_weight / (k - 1).max(1) as f64;
        let (a, b): (Vec<f32>, Vec<f32>) = (0..k)
            .map(|j| match j {
                0 => (0.0, 0.0),
                _ => {
                    let (num, den) = self.dice(j);
                    ((-per_dice * 2.0 / den) as f32, (per_dice * num / (den * den)) as f32)
                }
            })
            .unzip();
        let voxels = d * h * w;
        let mut grad = vec![0f32; z.len()];
        let per_item = voxels.div_ceil(CHUNK);
        let out = Shared(grad.as_mut_ptr());
        (0..n * per_item).into_par_iter().for_each(|task| {
            let (i, start) = (task / per_item, task % per_item * CHUNK);
            let mut at = Voxel { p: vec![0.0; classes], q: vec![0.0; k], y: vec![0.0; k] };
            let mut dq = vec![0f32; k];
            for v in start..(start + CHUNK).min(voxels) {
                merge.voxel(z, y, [i, classes, voxels], v, &mut at);
                for j in 0..k {
                    let (q, y) = (at.q[j], at.y[j]);
                    dq[j] = a[j] * y + b[j];
                    if y != 0.0 {
                        let rest = (1.0 - q).max(0.0);
                        let m = power(rest, gamma);
                        let dm = if gamma == 0.0 || 1.0 - q < 0.0 { 0.0 } else { -gamma * power(rest, gamma - 1.0) };
                        let (l, dl) = if q >= FLOOR { (q.ln(), 1.0 / q) } else { (FLOOR.ln(), 0.0) };
                        dq[j] += focal * y * (dm * l + m * dl);
                    }
                }
                let dot: f32 = at.p.iter().enumerate().map(|(c, p)| p * dq[merge.group[c]]).sum();
                for (c, p) in at.p.iter().enumerate() {
                    // Safety: each task writes only its own voxels (see `Shared`).
                    unsafe { out.write((i * classes + c) * voxels + v, scale * p * (dq[merge.group[c]] - dot)) };
                }
            }
        });
        grad
    }
}

/// `base^exponent`, by multiplications for a whole exponent (the focal loss's usual 2;
/// powf's general path took about a quarter of the loss's profile samples).
fn power(base: f32, exponent: f32) -> f32 {
    if exponent.fract() == 0.0 && exponent.abs() <= 16.0 {
        base.powi(exponent as i32)
    } else {
        base.powf(exponent)
    }
}

/// The gradient's buffer, written by the tasks at disjoint voxels.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// Safety: tasks write disjoint elements.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Safety: `at` lies in the buffer and no other task writes it.
    unsafe fn write(&self, at: usize, value: f32) {
        *self.0.add(at) = value;
    }
}

/// The operation's node: the loss's sums, the logits and the targets.
#[derive(Debug)]
struct MarginalLoss;

impl Backward<Flex, 1> for MarginalLoss {
    type State = (Loss, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_logits] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_logits else { return };
        let (loss, logits, target) = ops.state;
        let (scale, _) = values::<1>(&grad);
        let (z, dims) = values::<5>(&logits);
        let (y, _) = values::<5>(&target);
        let dz = loss.logit_gradient(&z, &y, dims, scale[0]);
        grads.register::<Flex>(node.id, tensor(dz, dims));
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::super::floats;
    use super::*;
    use crate::loss::in_burns_ops;

    /// Equal to the loss in burn's ops on the autodiff device, value and gradient: all
    /// classes annotated, some not, none (everything is background: zero loss), a focal
    /// exponent of 0 and a fractional one, a batch of two.
    #[test]
    fn equals_burns_ops() {
        let device = Device::flex().autodiff();
        let config = LossConfig { dice_weight: 0.7, focal_weight: 1.3, focal_gamma: 2.0, dice_smooth: 1.0 };
        for (shape, annotated, gamma) in [
            ([1, 4, 5, 6, 7], vec![true, true, true, true], 2.0),
            ([2, 5, 3, 4, 9], vec![true, false, true, false, true], 2.0),
            ([1, 3, 4, 4, 4], vec![true, false, false], 2.0),
            ([1, 3, 4, 5, 6], vec![true, true, true], 0.0),
            ([1, 3, 4, 5, 6], vec![true, true, false], 1.5),
        ] {
            let config = LossConfig { focal_gamma: gamma, ..config };
            let [n, classes, d, h, w] = shape;
            let logits = Tensor::<5>::random(shape, Distribution::Normal(0.0, 3.0), &device).require_grad();
            let labels: Vec<u16> = (0..n * d * h * w).map(|i| (i * 7 % 11 % classes) as u16).collect();
            let target = crate::loss::one_hot(&labels, [n, d, h, w], classes, &device);
            let run = |ours: bool| {
                let loss = if ours {
                    segmentation_loss(logits.clone(), target.clone(), &annotated, &config)
                } else {
                    in_burns_ops(logits.clone(), target.clone(), &annotated, &config)
                };
                let grads = loss.clone().backward();
                (floats(loss)[0], floats(logits.grad(&grads).expect("dL/dlogits")))
            };
            let ((ours, our_grad), (burns, burn_grad)) = (run(true), run(false));
            assert!((ours - burns).abs() <= 1e-5 * burns.abs().max(1.0), "{shape:?} {annotated:?}: {ours} vs {burns}");
            let diff = our_grad.iter().zip(&burn_grad).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            let scale = burn_grad.iter().map(|b| b.abs()).fold(0.0, f32::max);
            assert!(
                diff <= 1e-5 * scale.max(1e-3),
                "{shape:?} {annotated:?} gamma {gamma}: max |diff| {diff} (scale {scale})"
            );
        }
    }
}
