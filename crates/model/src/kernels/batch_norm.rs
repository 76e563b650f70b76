//! Training's batch norm and activation on the CPU as one operation of burn's autodiff
//! graph: two passes forward (the batch statistics, then normalise + activate) and two
//! backward (the per-channel sums, then the input gradient), each pair one channel at a
//! time so the second reads what the first left in cache, where burn's batch norm
//! followed by its LeakyReLU records about ten full-size tensor operations each way.
//!
//! With `x̂ = (y - mean) / sqrt(var + eps)` (biased variance over the batch and the
//! volume, per channel), `z = γ x̂ + β` and `out = act(z)`, the output gradient `g`
//! becomes `g' = g act'(z)` and
//!
//! - `dL/dβ = Σ g'`, `dL/dγ = Σ g' x̂`,
//! - `dL/dy = γ / sqrt(var + eps) (g' - Σ g' / N - x̂ Σ g' x̂ / N)`,
//!
//! sums over the `N` values of the channel. The running statistics are updated as
//! burn's `BatchNorm` updates them in training mode.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::prelude::*;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::{autodiff, lane_sums2, on_cpu_autodiff, tensor, values, vectorised, writable, Activation, Moments, Pass};

/// Whether [`batch_norm_act`] runs `bn` on `y`: the CPU's autodiff device, a layer
/// that trains (burn's own op keeps a frozen layer in inference mode).
pub(crate) fn trains_here(y: &Tensor<5>, bn: &BatchNorm) -> bool {
    on_cpu_autodiff(&y.device()) && bn.training.is_enabled()
}

/// `act(bn(y))` with batch statistics, differentiable in `y`, `γ` and `β`; updates
/// `bn`'s running mean and variance. `moments`, one per channel, are `y`'s where the
/// convolution that made it summed them; else they are summed here first.
pub(crate) fn batch_norm_act(
    y: Tensor<5>,
    bn: &BatchNorm,
    act: Activation,
    moments: Option<Vec<Moments>>,
) -> Tensor<5> {
    let (gamma, beta, y) = (autodiff(bn.gamma.val()), autodiff(bn.beta.val()), autodiff(y));
    let (gammas, _) = values::<1>(gamma.primitive());
    let (betas, _) = values::<1>(beta.primitive());
    let (input, dims) = values::<5>(y.primitive());
    let (stats, out) = normalise(&input, dims, moments.as_deref(), &gammas, &betas, bn.epsilon, act);
    let norm = Normalised::new(&stats, &gammas, &betas, bn.epsilon, act);
    let out = tensor(out, dims);
    drop(input);
    let output =
        match BatchNormAct.prepare::<NoCheckpointing>([y.node(), gamma.node(), beta.node()]).compute_bound().stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let y = prep.checkpoint(&y);
                prep.finish((y, norm), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
    update_running(bn, &stats);
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

/// `running = running (1 - momentum) + batch momentum`, in burn's order of operations.
pub(super) fn update_running(bn: &BatchNorm, stats: &[(f64, f64)]) {
    let device = bn.gamma.val().device();
    let m = bn.momentum;
    let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Vec<f32>| {
        let channels = batch.len();
        let batch = Tensor::<1>::from_data(TensorData::new(batch, [channels]), &device);
        let running = state.value_sync().to_device(&device).mul_scalar(1.0 - m).add(batch.mul_scalar(m));
        state.update(running.detach());
    };
    update(&bn.running_mean, stats.iter().map(|s| s.0 as f32).collect());
    update(&bn.running_var, stats.iter().map(|s| s.1 as f32).collect());
}

/// `1 / sqrt(var + epsilon)`.
fn scale(var: f64, epsilon: f64) -> f64 {
    1.0 / (var + epsilon).sqrt()
}

/// Per channel, one channel at a time while it is in cache: the batch statistics (mean
/// and biased variance over the batch and the volume: `moments`, or else summed here),
/// then `act(γ x̂ + β)` into the output. Returns the statistics and the output.
fn normalise(
    values: &[f32],
    [n, c, d, h, w]: [usize; 5],
    moments: Option<&[Moments]>,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    act: Activation,
) -> (Vec<(f64, f64)>, Vec<f32>) {
    let voxels = d * h * w;
    let item = |ch: usize, i: usize| &values[(i * c + ch) * voxels..][..voxels];
    // Written once, not zeroed first (a reused heap block would be cleared for nothing).
    let mut out = Vec::with_capacity(values.len());
    let stats = by_channel(&mut out.spare_capacity_mut()[..values.len()], voxels, c)
        .into_par_iter()
        .enumerate()
        .map(|(ch, outs)| {
            let m = moments.map_or_else(
                || (0..n).map(|i| Moments::of(item(ch, i))).fold(Moments::default(), Moments::merge),
                |m| m[ch],
            );
            let (mean, var) = (m.mean(), m.variance());
            let k = Channel::new(mean, scale(var, epsilon), gamma[ch], beta[ch], act);
            vectorised(NormaliseChannel { k, act, outs, ys: (0..n).map(|i| item(ch, i)) });
            (mean, var)
        })
        .collect();
    // Safety: `by_channel` hands out every chunk of the `values.len()` elements once, and
    // each was written above.
    unsafe { out.set_len(values.len()) };
    (stats, out)
}

/// `act(γ x̂ + β)` of one channel's items `ys` into `outs`.
struct NormaliseChannel<'a, Ys> {
    k: Channel,
    act: Activation,
    outs: Vec<&'a mut [MaybeUninit<f32>]>,
    ys: Ys,
}

impl<'a, Ys: Iterator<Item = &'a [f32]>> Pass for NormaliseChannel<'a, Ys> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let NormaliseChannel { k, act, outs, ys } = self;
        for (out, y) in outs.into_iter().zip(ys) {
            out.iter_mut().zip(y).for_each(|(o, &y)| {
                o.write(act.apply(k.z(k.xhat(y))));
            });
        }
    }
}

/// `all`'s chunks of `voxels` (`[n][c]`) grouped by channel: chunk `i c + ch` at
/// `[ch][i]`, so that one task can take a channel of every item.
pub(super) fn by_channel<T>(all: &mut [T], voxels: usize, c: usize) -> Vec<Vec<&mut [T]>> {
    let mut groups: Vec<Vec<&mut [T]>> = (0..c).map(|_| Vec::new()).collect();
    for (nc, chunk) in all.chunks_mut(voxels).enumerate() {
        groups[nc % c].push(chunk);
    }
    groups
}

/// The operation's node: the graph id of `y` and what the forward pass computed.
#[derive(Debug)]
struct BatchNormAct;

/// Per channel: `mean`, `1 / sqrt(var + eps)`, `γ`, `β`; the activation after them.
#[derive(Debug, Clone)]
pub(super) struct Normalised {
    mean: Vec<f64>,
    pub(super) scale: Vec<f64>,
    pub(super) gamma: Vec<f32>,
    pub(super) beta: Vec<f32>,
    act: Activation,
}

impl Normalised {
    /// From each channel's batch `(mean, variance)`, `γ`, `β` and the layer's epsilon.
    pub(super) fn new(stats: &[(f64, f64)], gamma: &[f32], beta: &[f32], epsilon: f64, act: Activation) -> Normalised {
        Normalised {
            mean: stats.iter().map(|s| s.0).collect(),
            scale: stats.iter().map(|&(_, var)| scale(var, epsilon)).collect(),
            gamma: gamma.to_vec(),
            beta: beta.to_vec(),
            act,
        }
    }

    /// Channel `ch`'s constants in f32, for the per-voxel loops.
    pub(super) fn channel(&self, ch: usize) -> Channel {
        Channel::new(self.mean[ch], self.scale[ch], self.gamma[ch], self.beta[ch], self.act)
    }
}

/// One channel: `x̂ = a y + b`, `z = γ x̂ + β`, the activation's slope below 0.
#[derive(Clone, Copy)]
pub(super) struct Channel {
    a: f32,
    b: f32,
    gamma: f32,
    beta: f32,
    slope: f32,
}

impl Channel {
    /// From the channel's mean, `1 / sqrt(var + epsilon)`, `γ` and `β`.
    fn new(mean: f64, scale: f64, gamma: f32, beta: f32, act: Activation) -> Channel {
        Channel { a: scale as f32, b: (-mean * scale) as f32, gamma, beta, slope: act.slope() }
    }

    #[inline(always)]
    pub(super) fn xhat(self, y: f32) -> f32 {
        y * self.a + self.b
    }

    #[inline(always)]
    pub(super) fn z(self, xhat: f32) -> f32 {
        xhat * self.gamma + self.beta
    }

    /// `(g act'(z), x̂)`: the activation's slope where `z < 0` (a select, so the loop
    /// vectorises).
    #[inline(always)]
    fn local(self, g: f32, y: f32) -> (f32, f32) {
        let xhat = self.xhat(y);
        let slope = if self.z(xhat) < 0.0 { self.slope } else { 1.0 };
        (g * slope, xhat)
    }
}

/// One channel's backward over its items `gs` (the output gradient) and `ys` (the
/// input): `(Σ g', Σ g' x̂)`, and with `factor` (`γ / sqrt(var + eps)`), `dL/dy` over
/// `gs` in place.
struct ChannelGradient<'a, Ys> {
    k: Channel,
    gs: Vec<&'a mut [f32]>,
    ys: Ys,
    count: f64,
    factor: Option<f32>,
}

impl<'a, 'b, Ys: Fn() -> I, I: Iterator<Item = &'b [f32]>> Pass for ChannelGradient<'a, Ys> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run(self) -> (f64, f64) {
        let ChannelGradient { k, mut gs, ys, count, factor } = self;
        let (sg, sgx) = gs.iter().zip(ys()).fold((0.0, 0.0), |(sg, sgx), (g, y)| {
            let (a, b) = lane_sums2(g, y, |g, y| {
                let (g, xhat) = k.local(g, y);
                (g, g * xhat)
            });
            (sg + a, sgx + b)
        });
        if let Some(factor) = factor {
            let (mean_g, mean_gx) = ((sg / count) as f32, (sgx / count) as f32);
            for (dy, y) in gs.iter_mut().zip(ys()) {
                for (dy, &y) in dy.iter_mut().zip(y) {
                    let (g, xhat) = k.local(*dy, y);
                    *dy = factor * (g - mean_g - xhat * mean_gx);
                }
            }
        }
        (sg, sgx)
    }
}

impl Backward<Flex, 3> for BatchNormAct {
    type State = (NodeId, Normalised);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_y, node_gamma, node_beta] = ops.parents;
        let (mut grad, dims) = writable::<5>(grads.consume::<Flex>(&ops.node));
        let (y, norm) = ops.state;
        let y = checkpointer.retrieve_node_output::<FlexTensor>(y);
        let (y, _) = values::<5>(&y);
        let [n, c, d, h, w] = dims;
        let voxels = d * h * w;
        let count = (n * voxels) as f64;
        let item = |ch: usize, i: usize| &y[(i * c + ch) * voxels..][..voxels];
        // Per channel, one channel at a time while it is in cache: Σ g' and Σ g' x̂, then
        // dL/dy over the output gradient, in place.
        let sums: Vec<(f64, f64)> = by_channel(grad.storage_mut::<f32>(), voxels, c)
            .into_par_iter()
            .enumerate()
            .map(|(ch, gs)| {
                let factor = node_y.is_some().then(|| (norm.gamma[ch] as f64 * norm.scale[ch]) as f32);
                let ys = || (0..n).map(|i| item(ch, i));
                vectorised(ChannelGradient { k: norm.channel(ch), gs, ys, count, factor })
            })
            .collect();
        if let Some(node) = node_y {
            grads.register::<Flex>(node.id, grad);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(sums.iter().map(|s| s.1 as f32).collect(), [c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(sums.iter().map(|s| s.0 as f32).collect(), [c]));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::activation::leaky_relu;
    use burn::tensor::Distribution;

    /// Input, output gradient weights, and gradients of `L = Σ f(y) r` for `y`, `γ`, `β`.
    fn gradients(bn: &BatchNorm, y: &Tensor<5>, r: &Tensor<5>, f: impl Fn(Tensor<5>) -> Tensor<5>) -> [Vec<f32>; 4] {
        let out = f(y.clone());
        let grads = (out.clone() * r.clone()).sum().backward();
        use super::super::floats;
        [
            floats(out),
            floats(y.grad(&grads).expect("dL/dy")),
            floats(bn.gamma.val().grad(&grads).expect("dL/dγ")),
            floats(bn.beta.val().grad(&grads).expect("dL/dβ")),
        ]
    }

    /// Equal to burn's `BatchNorm` (training mode) then its LeakyReLU, or no activation:
    /// the output, the three gradients and the running statistics, for a batch of one and
    /// of two, with channels of different scales.
    #[test]
    fn equals_burns_batch_norm_and_activation() {
        let device = Device::flex().autodiff();
        for (shape, act) in [
            ([1, 3, 4, 5, 6], Activation::LeakyRelu(0.01)),
            ([2, 4, 3, 3, 7], Activation::LeakyRelu(0.2)),
            ([1, 2, 5, 4, 3], Activation::Identity),
        ] {
            let make = || {
                let bn = BatchNormConfig::new(shape[1]).with_epsilon(1e-5).init(&device);
                // Non-trivial γ and β, the same in both copies.
                let gamma = Tensor::<1>::from_data(
                    TensorData::new(vec![0.5, -1.5, 2.0, 1.0][..shape[1]].to_vec(), [shape[1]]),
                    &device,
                );
                let beta = Tensor::<1>::from_data(
                    TensorData::new(vec![0.1, 0.3, -0.2, 0.0][..shape[1]].to_vec(), [shape[1]]),
                    &device,
                );
                BatchNorm {
                    gamma: burn::module::Param::from_tensor(gamma),
                    beta: burn::module::Param::from_tensor(beta),
                    ..bn
                }
            };
            let (ours_bn, burns_bn) = (make(), make());
            let y = (Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device) * 3.0 + 1.0)
                .detach()
                .require_grad();
            let r = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let ours = gradients(&ours_bn, &y, &r, |y| batch_norm_act(y, &ours_bn, act, None));
            let burns = gradients(&burns_bn, &y, &r, |y| match act {
                Activation::LeakyRelu(s) => leaky_relu(burns_bn.forward(y), s as f64),
                Activation::Identity => burns_bn.forward(y),
            });
            let names = ["output", "dL/dy", "dL/dγ", "dL/dβ"];
            super::super::assert_close(&names, &ours, &burns, 1e-4, &format!("{shape:?} {act:?}"));
            for (ours, burns) in
                [(&ours_bn.running_mean, &burns_bn.running_mean), (&ours_bn.running_var, &burns_bn.running_var)]
            {
                let (a, b) = (super::super::floats(ours.value_sync()), super::super::floats(burns.value_sync()));
                let diff = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(diff <= 1e-5, "running statistics {shape:?}: {a:?} vs {b:?}");
            }
        }
    }
}
