//! Training's loss on the CPU ([`crate::loss::segmentation_loss`]: softmax, the
//! marginal merge of unannotated classes, focal and soft Dice) as one operation of
//! burn's autodiff graph: one pass over the logits forward, which keeps the softmax for
//! the backward pass, one over it backward, where burn's ops record about twenty
//! full-size tensor operations each way. Both take the voxels in blocks, class by class
//! across a block, so the loops vectorise (the softmax's exponential too: [`exp`]).
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

/// Voxels per block: the per-class loops run across them.
const BLOCK: usize = 64;

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
    let target_values = target.primitive().clone();
    let (z, dims) = values::<5>(logits.primitive());
    let (y, _) = values::<5>(&target_values);
    let (sums, probabilities) = merge.sums(&z, &y, dims, config.focal_gamma);
    drop((z, y));
    let [n, _, d, h, w] = dims;
    let loss = Loss { merge, config: *config, voxels: (n * d * h * w) as f64, sums };
    let out = tensor(vec![loss.value() as f32], [1]);
    let output = match MarginalLoss.prepare::<NoCheckpointing>([logits.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((loss, tensor(probabilities, dims), target_values), out),
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

/// A block of voxels' softmax `[classes]`, merged probabilities and merged targets
/// `[groups]`, each across the block's voxels.
struct Block {
    p: Vec<[f32; BLOCK]>,
    q: Vec<[f32; BLOCK]>,
    y: Vec<[f32; BLOCK]>,
}

/// Where a block lies: item `i` of `[n][classes][voxels]`, voxels `start..start + len`.
#[derive(Clone, Copy)]
struct At {
    i: usize,
    classes: usize,
    voxels: usize,
    start: usize,
    len: usize,
}

impl At {
    /// Class `c`'s values of the block in `t` (`[n][classes][voxels]`).
    fn of(self, t: &[f32], c: usize) -> &[f32] {
        &t[(self.i * self.classes + c) * self.voxels + self.start..][..self.len]
    }

    /// The blocks of task `task` (of `voxels.div_ceil(CHUNK)` per item).
    fn blocks(task: usize, [classes, voxels]: [usize; 2]) -> impl Iterator<Item = At> {
        let per_item = voxels.div_ceil(CHUNK);
        let (i, first) = (task / per_item, task % per_item * CHUNK);
        let end = (first + CHUNK).min(voxels);
        (first..end).step_by(BLOCK).map(move |start| At { i, classes, voxels, start, len: BLOCK.min(end - start) })
    }
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

    fn block(&self, classes: usize) -> Block {
        let rows = |count: usize| vec![[0f32; BLOCK]; count];
        Block { p: rows(classes), q: rows(self.groups), y: rows(self.groups) }
    }

    /// The softmax of the logits `z` over the classes, for block `at`, into `b.p`.
    fn softmax(z: &[f32], at: At, b: &mut Block) {
        let mut max = [f32::NEG_INFINITY; BLOCK];
        for c in 0..at.classes {
            max.iter_mut().zip(at.of(z, c)).for_each(|(m, &z)| *m = m.max(z));
        }
        let mut total = [0f32; BLOCK];
        for (c, p) in b.p.iter_mut().enumerate() {
            for (((p, &z), t), &m) in p.iter_mut().zip(at.of(z, c)).zip(total.iter_mut()).zip(&max) {
                *p = exp(z - m);
                *t += *p;
            }
        }
        let inverse = total.map(|t| 1.0 / t);
        for p in b.p.iter_mut() {
            p.iter_mut().zip(&inverse).for_each(|(p, r)| *p *= r);
        }
    }

    /// `b.p`'s probabilities and the targets `y` of block `at` summed by group into
    /// `b.q` and `b.y`.
    fn merge(&self, y: &[f32], at: At, b: &mut Block) {
        b.q.iter_mut().chain(b.y.iter_mut()).for_each(|row| *row = [0.0; BLOCK]);
        for (c, p) in b.p.iter().enumerate() {
            let g = self.group[c];
            b.q[g].iter_mut().zip(p).for_each(|(q, p)| *q += p);
            b.y[g].iter_mut().zip(at.of(y, c)).for_each(|(q, y)| *q += y);
        }
    }

    /// The focal sum and the Dice sums of `z` against `y`, both `[n, classes, d, h,
    /// w]`, and the softmax of `z` (`[n, classes, d, h, w]`, for the backward pass).
    fn sums(&self, z: &[f32], y: &[f32], [n, classes, d, h, w]: [usize; 5], gamma: f64) -> (Sums, Vec<f32>) {
        let voxels = d * h * w;
        let mut probabilities = vec![0f32; z.len()];
        let out = Shared(probabilities.as_mut_ptr());
        let sums = (0..n * voxels.div_ceil(CHUNK))
            .into_par_iter()
            .map(|task| {
                let mut b = self.block(classes);
                let mut sums = Sums::zero(self.groups);
                for at in At::blocks(task, [classes, voxels]) {
                    Merge::softmax(z, at, &mut b);
                    for (c, p) in b.p.iter().enumerate() {
                        let first = (at.i * classes + c) * voxels + at.start;
                        // Safety: each task writes only its own voxels (see `Shared`).
                        p[..at.len].iter().enumerate().for_each(|(v, &p)| unsafe { out.write(first + v, p) });
                    }
                    self.merge(y, at, &mut b);
                    let mut focal = 0f32;
                    for j in 0..self.groups {
                        let (q, y) = (&b.q[j][..at.len], &b.y[j][..at.len]);
                        // One-hot targets: the focal term lives at one group a voxel.
                        for (&q, &y) in q.iter().zip(y).filter(|(_, &y)| y != 0.0) {
                            focal += y * power((1.0 - q).max(0.0), gamma as f32) * q.max(FLOOR).ln();
                        }
                        let (mut overlap, mut predicted, mut expected) = (0f32, 0f32, 0f32);
                        for (&q, &y) in q.iter().zip(y) {
                            overlap += q * y;
                            predicted += q;
                            expected += y;
                        }
                        sums.overlap[j] += overlap as f64;
                        sums.predicted[j] += predicted as f64;
                        sums.expected[j] += expected as f64;
                    }
                    sums.focal += focal as f64;
                }
                sums
            })
            .reduce(|| Sums::zero(self.groups), Sums::add);
        (sums, probabilities)
    }
}

/// What the backward pass needs besides the softmax and the targets.
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

    /// `dL/dz` of every logit, from the softmax `p` and the targets `y`, times the
    /// output gradient `scale`.
    fn logit_gradient(&self, p: &[f32], y: &[f32], [n, classes, d, h, w]: [usize; 5], scale: f32) -> Vec<f32> {
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
        let mut grad = vec![0f32; p.len()];
        let out = Shared(grad.as_mut_ptr());
        (0..n * voxels.div_ceil(CHUNK)).into_par_iter().for_each(|task| {
            let mut block = merge.block(classes);
            let mut dq = vec![[0f32; BLOCK]; k];
            for at in At::blocks(task, [classes, voxels]) {
                for (c, row) in block.p.iter_mut().enumerate() {
                    row[..at.len].copy_from_slice(at.of(p, c));
                }
                merge.merge(y, at, &mut block);
                for j in 0..k {
                    let (q, y) = (&block.q[j][..at.len], &block.y[j][..at.len]);
                    dq[j].iter_mut().zip(y).for_each(|(dq, &y)| *dq = a[j] * y + b[j]);
                    for ((dq, &q), &y) in dq[j].iter_mut().zip(q).zip(y).filter(|(_, &y)| y != 0.0) {
                        let rest = (1.0 - q).max(0.0);
                        let m = power(rest, gamma);
                        let dm = if gamma == 0.0 || 1.0 - q < 0.0 { 0.0 } else { -gamma * power(rest, gamma - 1.0) };
                        let (l, dl) = if q >= FLOOR { (q.ln(), 1.0 / q) } else { (FLOOR.ln(), 0.0) };
                        *dq += focal * y * (dm * l + m * dl);
                    }
                }
                let mut dot = [0f32; BLOCK];
                for (c, p) in block.p.iter().enumerate() {
                    let dq = &dq[merge.group[c]];
                    dot.iter_mut().zip(p).zip(dq).for_each(|((d, p), dq)| *d += p * dq);
                }
                for (c, p) in block.p.iter().enumerate() {
                    let dq = &dq[merge.group[c]];
                    let first = (at.i * classes + c) * voxels + at.start;
                    for v in 0..at.len {
                        // Safety: each task writes only its own voxels (see `Shared`).
                        unsafe { out.write(first + v, scale * p[v] * (dq[v] - dot[v])) };
                    }
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

/// `e^x` for `x <= 0` (a softmax's `z - max`) in f32 arithmetic alone, so that a loop
/// of it vectorises where `f32::exp` is a call per value: `x = n ln 2 + r`, `|r| <= ln 2
/// / 2`, `e^r` by Cephes' `expf` polynomial (within 2 ulp of `exp`), times `2^n` built in
/// the exponent bits. Below -87 (`e^x < 2^-125`, nothing beside the largest term's 1)
/// it returns `e^-87`; NaN for NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in few bits, so `n ln 2` subtracts exactly.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in plain f32 ops.
    const ROUND: f32 = 12_582_912.0;
    // A select, not `max`, so that NaN stays NaN (a diverged network's loss must be).
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let poly = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = poly * r * r + r + 1.0;
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The softmax's or the gradient's buffer, written by the tasks at disjoint voxels.
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

/// The operation's node: the loss's sums, the softmax and the targets.
#[derive(Debug)]
struct MarginalLoss;

impl Backward<Flex, 1> for MarginalLoss {
    type State = (Loss, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_logits] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_logits else { return };
        let (loss, probabilities, target) = ops.state;
        let (scale, _) = values::<1>(&grad);
        let (p, dims) = values::<5>(&probabilities);
        let (y, _) = values::<5>(&target);
        let dz = loss.logit_gradient(&p, &y, dims, scale[0]);
        grads.register::<Flex>(node.id, tensor(dz, dims));
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::super::floats;
    use super::*;
    use crate::loss::in_burns_ops;

    /// The vectorised exponential against f64's over the softmax's range, 0 to -87 and
    /// below (where it holds e^-87), and NaN kept.
    #[test]
    fn exp_within_two_ulp() {
        let worst = (0..=2_000_000)
            .map(|i| -(i as f32) * 4.5e-5)
            .chain([-0.0, -1e-30, -86.99, -87.0, -90.0, -1e4, f32::NEG_INFINITY])
            .map(|x| {
                let want = (x.max(-87.0) as f64).exp();
                ((exp(x) as f64 - want) / want).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst <= 2.0 * f32::EPSILON as f64, "worst relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan(), "NaN logits must give a NaN loss");
    }

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
