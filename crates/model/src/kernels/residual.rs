//! Training's end of a residual block on the CPU, `act(h * gate + residual)`, as one
//! operation of burn's autodiff graph: one pass forward and one backward, where burn's
//! ops record a multiplication, an addition and a LeakyReLU, each a full-size pass (and
//! a mask, a comparison and a product more on the way back).
//!
//! With `g' = g act'(out)` (the slope where the sum was negative, which is where `out`
//! is): `dL/dh = g' gate`, `dL/dresidual = g'`, `dL/dgate[n, c] = Σ g' h` over the
//! channel's voxels.
//!
//! [`batch_norm_gate_add_act`] takes the block's second batch norm in as well, `h =
//! bn(y)` (batch statistics, no activation), so that `h` is never stored: one pass
//! forward, and backward one channel at a time the pass above with the batch norm's
//! sums, then `dL/dy` (see [`super::batch_norm`]'s formulas, with `dL/dh = g' gate`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

use burn::backend::tensor::FloatTensor;

use burn::nn::BatchNorm;

use super::batch_norm::{by_channel, update_running, Channel, Normalised};
use super::{autodiff, lane_sum, lane_sums2, tensor, values, vectorised, writable, Activation, Moments, Pass};

/// `act(h * gate + residual)` on the CPU's autodiff device, `gate` one factor per
/// `[n, c]` (all ones where `None`), differentiable in all three.
pub(crate) fn gate_add_act(h: Tensor<5>, gate: Option<Tensor<2>>, residual: Tensor<5>, act: Activation) -> Tensor<5> {
    let [n, c, _, _, _] = h.dims();
    let gate = gate.unwrap_or_else(|| Tensor::ones([n, c], &h.device()));
    let (h, gate, residual) = (autodiff(h), autodiff(gate), autodiff(residual));
    let (gates, _) = values::<2>(gate.primitive());
    let gates = gates.into_owned();
    let (hs, dims) = values::<5>(h.primitive());
    let voxels = dims[2] * dims[3] * dims[4];
    let (rs, _) = values::<5>(residual.primitive());
    // Written once, not zeroed first (a reused heap block would be cleared for nothing).
    let mut out = Vec::with_capacity(hs.len());
    let spare = &mut out.spare_capacity_mut()[..hs.len()];
    spare.par_chunks_mut(voxels).zip(hs.par_chunks(voxels).zip(rs.par_chunks(voxels))).enumerate().for_each(
        |(nc, (o, (h, r)))| {
            vectorised(GateAddChannel { out: o, values: h, h: |h| h, residual: r, gate: gates[nc], act });
        },
    );
    // Safety: the chunks above cover all `hs.len()` elements, each written once.
    unsafe { out.set_len(hs.len()) };
    drop((hs, rs));
    let out = tensor(out, dims);
    let output = match GateAddAct
        .prepare::<NoCheckpointing>([h.node(), gate.node(), residual.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = Saved { h: prep.checkpoint(&h), gates, out: out.clone(), slope: act.slope() };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

/// `act(bn(y) * gate + residual)`, `bn` with batch statistics (`moments`, `y`'s per
/// channel, summed by the convolution that made it) and no activation of its own, `gate`
/// one factor per `[n, c]` (all ones where `None`), on the CPU's autodiff device,
/// differentiable in `y`, `γ`, `β`, the gate and the residual; updates `bn`'s running
/// mean and variance. The block's end as [`gate_add_act`] after
/// [`super::batch_norm::batch_norm_act`] computes it, without storing `bn(y)`: a pass
/// each way over it less, and the batch norm's backward sums taken in the residual
/// end's pass.
pub(crate) fn batch_norm_gate_add_act(
    y: Tensor<5>,
    bn: &BatchNorm,
    moments: &[Moments],
    gate: Option<Tensor<2>>,
    residual: Tensor<5>,
    act: Activation,
) -> Tensor<5> {
    let [n, c, _, _, _] = y.dims();
    let gate = gate.unwrap_or_else(|| Tensor::ones([n, c], &y.device()));
    let (gamma, beta) = (autodiff(bn.gamma.val()), autodiff(bn.beta.val()));
    let (y, gate, residual) = (autodiff(y), autodiff(gate), autodiff(residual));
    let (gammas, _) = values::<1>(gamma.primitive());
    let (betas, _) = values::<1>(beta.primitive());
    let gates = values::<2>(gate.primitive()).0.into_owned();
    let stats: Vec<(f64, f64)> = moments.iter().map(|m| (m.mean(), m.variance())).collect();
    let norm = Normalised::new(&stats, &gammas, &betas, bn.epsilon, Activation::Identity);
    let (ys, dims) = values::<5>(y.primitive());
    let voxels = dims[2] * dims[3] * dims[4];
    let (rs, _) = values::<5>(residual.primitive());
    // Written once, not zeroed first (a reused heap block would be cleared for nothing).
    let mut out = Vec::with_capacity(ys.len());
    out.spare_capacity_mut()[..ys.len()]
        .par_chunks_mut(voxels)
        .zip(ys.par_chunks(voxels).zip(rs.par_chunks(voxels)))
        .enumerate()
        .for_each(|(nc, (out, (y, residual)))| {
            let k = norm.channel(nc % c);
            vectorised(GateAddChannel { out, values: y, h: |y| k.z(k.xhat(y)), residual, gate: gates[nc], act });
        });
    // Safety: the chunks above cover all `ys.len()` elements, each written once.
    unsafe { out.set_len(ys.len()) };
    drop((ys, rs));
    let out = tensor(out, dims);
    let parents = [y.node(), gamma.node(), beta.node(), gate.node(), residual.node()];
    let output = match NormGateAddAct.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let state = NormSaved { y: prep.checkpoint(&y), norm, gates, out: out.clone(), slope: act.slope() };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    update_running(bn, &stats);
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

#[derive(Debug)]
struct NormGateAddAct;

/// What the backward pass needs: `y`'s graph id, the batch norm's constants, the gates,
/// the output (whose sign gives the activation's slope; shared, not copied) and the
/// slope.
#[derive(Debug, Clone)]
struct NormSaved {
    y: NodeId,
    norm: Normalised,
    gates: Vec<f32>,
    out: FlexTensor,
    slope: f32,
}

impl Backward<Flex, 5> for NormGateAddAct {
    type State = NormSaved;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_y, node_gamma, node_beta, node_gate, node_residual] = ops.parents;
        let (mut grad, dims) = writable::<5>(grads.consume::<Flex>(&ops.node));
        let NormSaved { y, norm, gates, out, slope } = ops.state;
        let y = checkpointer.retrieve_node_output::<FlexTensor>(y);
        let (y, _) = values::<5>(&y);
        let (out, _) = values::<5>(&out);
        let [n, c, d, h, w] = dims;
        let voxels = d * h * w;
        // Item `i`'s channel `ch`.
        let item = |ch: usize, i: usize| (i * c + ch) * voxels..(i * c + ch + 1) * voxels;
        // dL/dy is written into a buffer of its own: `g'` is the residual's gradient.
        let len = if node_y.is_some() { y.len() } else { 0 };
        let mut dy = Vec::with_capacity(len);
        let dy_groups = by_channel(&mut dy.spare_capacity_mut()[..len], voxels, c);
        let count = (n * voxels) as f64;
        // Per channel, one channel at a time while it is in cache: `g'` over the output
        // gradient in place and its sums with `x̂` per item, then dL/dy.
        let sums: Vec<Vec<(f64, f64)>> = by_channel(grad.storage_mut::<f32>(), voxels, c)
            .into_par_iter()
            .zip(dy_groups.into_par_iter())
            .enumerate()
            .map(|(ch, (gs, dys))| {
                vectorised(NormGateAddGradient {
                    k: norm.channel(ch),
                    gs,
                    dys,
                    ys: (0..n).map(|i| &y[item(ch, i)]).collect(),
                    outs: (0..n).map(|i| &out[item(ch, i)]).collect(),
                    gates: (0..n).map(|i| gates[i * c + ch]).collect(),
                    slope,
                    count,
                    factor: (norm.gamma[ch] as f64 * norm.scale[ch]) as f32,
                })
            })
            .collect();
        // Safety: with a length, `dy` was cut into the channels' chunks above, every one
        // written.
        unsafe { dy.set_len(len) };
        drop((out, y));
        // Over the items, each weighted by its gate: dL/dh's sums.
        let weighted = |ch: usize, part: fn(&(f64, f64)) -> f64| {
            sums[ch].iter().enumerate().map(|(i, s)| gates[i * c + ch] as f64 * part(s)).sum::<f64>() as f32
        };
        if let Some(node) = node_y {
            grads.register::<Flex>(node.id, tensor(dy, dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor((0..c).map(|ch| weighted(ch, |s| s.1)).collect(), [c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor((0..c).map(|ch| weighted(ch, |s| s.0)).collect(), [c]));
        }
        if let Some(node) = node_gate {
            // Σ g' h with h = γ x̂ + β.
            let dgate = (0..n * c)
                .map(|nc| {
                    let (ch, (sg, sgx)) = (nc % c, sums[nc % c][nc / c]);
                    (norm.gamma[ch] as f64 * sgx + norm.beta[ch] as f64 * sg) as f32
                })
                .collect();
            grads.register::<Flex>(node.id, tensor(dgate, [n, c]));
        }
        if let Some(node) = node_residual {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// One channel of [`batch_norm_gate_add_act`]'s backward over its items: `g' = g
/// act'(out)` over `g` in place, block by block while a block is in L1, with `(Σ g', Σ
/// g' x̂)` per item (returned); then, where `dys` are given, `dL/dy = factor (gate g' -
/// Σ gate g' / N - x̂ Σ gate g' x̂ / N)` into them, `factor = γ / sqrt(var + eps)`.
struct NormGateAddGradient<'a> {
    k: Channel,
    gs: Vec<&'a mut [f32]>,
    dys: Vec<&'a mut [std::mem::MaybeUninit<f32>]>,
    ys: Vec<&'a [f32]>,
    outs: Vec<&'a [f32]>,
    gates: Vec<f32>,
    slope: f32,
    count: f64,
    factor: f32,
}

impl Pass for NormGateAddGradient<'_> {
    type Output = Vec<(f64, f64)>;

    #[inline(always)]
    fn run(self) -> Vec<(f64, f64)> {
        const BLOCK: usize = 4096;
        let NormGateAddGradient { k, mut gs, dys, ys, outs, gates, slope, count, factor } = self;
        let sums: Vec<(f64, f64)> = gs
            .iter_mut()
            .zip(ys.iter().zip(&outs))
            .map(|(g, (y, out))| {
                let blocks = g.chunks_mut(BLOCK).zip(y.chunks(BLOCK).zip(out.chunks(BLOCK)));
                blocks.fold((0.0, 0.0), |(sg, sgx), (g, (y, out))| {
                    activation_gradient(g, out, slope);
                    let (a, b) = lane_sums2(g, y, |g, y| (g, g * k.xhat(y)));
                    (sg + a, sgx + b)
                })
            })
            .collect();
        if !dys.is_empty() {
            let total = |part: fn(&(f64, f64)) -> f64| {
                sums.iter().zip(&gates).map(|(s, &gate)| gate as f64 * part(s)).sum::<f64>() / count
            };
            let (mean_g, mean_gx) = (total(|s| s.0) as f32, total(|s| s.1) as f32);
            for (((dy, g), y), &gate) in dys.into_iter().zip(&gs).zip(&ys).zip(&gates) {
                for ((dy, &g), &y) in dy.iter_mut().zip(g.iter()).zip(y.iter()) {
                    dy.write(factor * (gate * g - mean_g - k.xhat(y) * mean_gx));
                }
            }
        }
        sums
    }
}

/// The squeeze-and-excitation gate's pooling, `[n, c]` means of `h` over the volume, on
/// the CPU's autodiff device. Its backward adds `g[n, c] / voxels` to each voxel of `h`'s
/// gradient in one parallel pass, over the gradient the residual end already gave `h`
/// when there is one (burn's mean records a mean per axis, each gradient a full-size
/// tensor of ones times a broadcast, then a strided copy and an addition: a sixth of a
/// training step's single-threaded time).
pub(crate) fn channel_mean(h: Tensor<5>) -> Tensor<2> {
    let h = autodiff(h);
    let means = {
        let (values, [n, c, d, hh, w]) = values::<5>(h.primitive());
        let voxels = d * hh * w;
        let means: Vec<f32> = values.par_chunks(voxels).map(|v| (lane_sum(v, |a| a) / voxels as f64) as f32).collect();
        tensor(means, [n, c])
    };
    let output = match ChannelMean.prepare::<NoCheckpointing>([h.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(h.clone(), means),
        OpsKind::UnTracked(prep) => prep.finish(means),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

/// The pooling's node; its state is `h` itself (to find the gradient it already has).
#[derive(Debug)]
struct ChannelMean;

impl Backward<Flex, 1> for ChannelMean {
    type State = FloatTensor<Autodiff<Flex>>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_h else { return };
        let h = ops.state;
        let dims: [usize; 5] = h.primitive().layout().shape().dims();
        let voxels = dims[2] * dims[3] * dims[4];
        let (g, _) = values::<2>(&grad);
        let dh = match grads.remove::<Flex>(&h) {
            Some(earlier) => {
                let (mut dh, _) = writable::<5>(earlier);
                dh.storage_mut::<f32>().par_chunks_mut(voxels).enumerate().for_each(|(nc, dh)| {
                    let add = g[nc] / voxels as f32;
                    dh.iter_mut().for_each(|v| *v += add);
                });
                dh
            }
            None => {
                let mut dh = Vec::with_capacity(g.len() * voxels);
                dh.spare_capacity_mut()[..g.len() * voxels].par_chunks_mut(voxels).enumerate().for_each(|(nc, dh)| {
                    let value = g[nc] / voxels as f32;
                    dh.iter_mut().for_each(|v| {
                        v.write(value);
                    });
                });
                // Safety: the chunks above cover all `n c voxels` elements, each written once.
                unsafe { dh.set_len(g.len() * voxels) };
                tensor(dh, dims)
            }
        };
        grads.register::<Flex>(node.id, dh);
    }
}

#[derive(Debug)]
struct GateAddAct;

/// What the backward pass needs: `h`'s graph id, the gates, the output (whose sign
/// gives the activation's slope; shared, not copied) and the slope.
#[derive(Debug, Clone)]
struct Saved {
    h: NodeId,
    gates: Vec<f32>,
    out: FlexTensor,
    slope: f32,
}

impl Backward<Flex, 3> for GateAddAct {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_h, node_gate, node_residual] = ops.parents;
        let (mut grad, dims) = writable::<5>(grads.consume::<Flex>(&ops.node));
        let Saved { h, gates, out, slope } = ops.state;
        let h = checkpointer.retrieve_node_output::<FlexTensor>(h);
        let (out, _) = values::<5>(&out);
        let [n, c, d, hh, w] = dims;
        let voxels = d * hh * w;
        let (h, _) = values::<5>(&h);
        // Without a gate (all ones) dL/dh is g' itself, shared rather than copied.
        let gated = !gates.iter().all(|&g| g == 1.0);
        let len = if gated && node_h.is_some() { h.len() } else { 0 };
        // Written once, not zeroed first (a reused heap block would be cleared for nothing).
        let mut dh = Vec::with_capacity(len);
        let mut dh_chunks: Vec<_> = dh.spare_capacity_mut()[..len].chunks_mut(voxels).map(Some).collect();
        dh_chunks.resize_with(n * c, || None);
        let gate_gradient = node_gate.is_some();
        let sums: Vec<f32> = grad
            .storage_mut::<f32>()
            .par_chunks_mut(voxels)
            .zip(out.par_chunks(voxels).zip(h.par_chunks(voxels)))
            .zip(dh_chunks.into_par_iter())
            .enumerate()
            .map(|(nc, ((g, (o, h)), dh))| {
                vectorised(ChannelBackward { g, out: o, h, dh, gate: gates[nc], slope, gate_gradient }) as f32
            })
            .collect();
        // Safety: with a length, `dh` was cut into the chunks above, every one written.
        unsafe { dh.set_len(len) };
        drop((out, h));
        if let Some(node) = node_gate {
            grads.register::<Flex>(node.id, tensor(sums, [n, c]));
        }
        if let Some(node) = node_h {
            let dh = if gated { tensor(dh, dims) } else { grad.clone() };
            grads.register::<Flex>(node.id, dh);
        }
        if let Some(node) = node_residual {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// One item's channel of a residual end's forward, `act(h(v) gate + residual)` for each
/// of `values` into `out`: `h` the value itself ([`gate_add_act`]) or its batch norm
/// ([`batch_norm_gate_add_act`], in the batch norm's own order of operations).
struct GateAddChannel<'a, H> {
    out: &'a mut [std::mem::MaybeUninit<f32>],
    values: &'a [f32],
    h: H,
    residual: &'a [f32],
    gate: f32,
    act: Activation,
}

impl<H: Fn(f32) -> f32> Pass for GateAddChannel<'_, H> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let GateAddChannel { out, values, h, residual, gate, act } = self;
        for ((o, &v), &r) in out.iter_mut().zip(values).zip(residual) {
            o.write(act.apply(h(v) * gate + r));
        }
    }
}

/// `g act'(out)` over `g` in place: the activation's slope where `out` (the residual
/// end's output) is negative, a select so that the loop vectorises.
#[inline(always)]
fn activation_gradient(g: &mut [f32], out: &[f32], slope: f32) {
    for (g, &o) in g.iter_mut().zip(out) {
        *g = if o < 0.0 { *g * slope } else { *g };
    }
}

/// One channel of the residual end's backward, block by block while a block is in L1:
/// `g' = g act'(out)` over `g` in place (`dL/dresidual`), `g' gate` into `dh` where asked
/// (`dL/dh`); returns `Σ g' h` (the gate's gradient) where asked, else 0.
struct ChannelBackward<'a> {
    g: &'a mut [f32],
    out: &'a [f32],
    h: &'a [f32],
    dh: Option<&'a mut [std::mem::MaybeUninit<f32>]>,
    gate: f32,
    slope: f32,
    gate_gradient: bool,
}

impl Pass for ChannelBackward<'_> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        const BLOCK: usize = 4096;
        let ChannelBackward { g, out, h, mut dh, gate, slope, gate_gradient } = self;
        let mut dot = 0.0;
        for (b, (g, (out, h))) in g.chunks_mut(BLOCK).zip(out.chunks(BLOCK).zip(h.chunks(BLOCK))).enumerate() {
            activation_gradient(g, out, slope);
            if let Some(dh) = dh.as_deref_mut() {
                dh[b * BLOCK..][..g.len()].iter_mut().zip(g.iter()).for_each(|(d, &g)| {
                    d.write(g * gate);
                });
            }
            if gate_gradient {
                dot += lane_sums2(g, h, |g, h| (g * h, 0.0)).0;
            }
        }
        dot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::leaky_relu;
    use burn::tensor::Distribution;

    use super::super::floats;

    /// Equal to burn's mean over the volume: the means, and `h`'s gradient when the pooling
    /// is `h`'s only consumer and when `h` also feeds another operation (whose gradient
    /// the pooling's is added to), a batch of one and of two.
    #[test]
    fn channel_mean_equals_burns() {
        let device = Device::flex().autodiff();
        for (shape, shared) in [([1, 3, 4, 5, 6], false), ([2, 2, 3, 3, 7], true), ([1, 4, 2, 3, 5], true)] {
            let [n, c, _, _, _] = shape;
            let h = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r1 = Tensor::<2>::random([n, c], Distribution::Normal(0.0, 1.0), &device);
            let r2 = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let means =
                    if ours { channel_mean(h.clone()) } else { h.clone().mean_dims(&[2, 3, 4]).reshape([n, c]) };
                let mut loss = (means.clone() * r1.clone()).sum();
                if shared {
                    loss = loss + (h.clone() * r2.clone()).sum();
                }
                let grads = loss.backward();
                [floats(means), floats(h.grad(&grads).expect("dL/dh"))]
            };
            let (ours, burns) = (run(true), run(false));
            let case = format!("{shape:?} shared {shared}");
            super::super::assert_close(&["means", "dL/dh"], &ours, &burns, 1e-5, &case);
        }
    }

    /// Equal to burn's multiplication, addition and LeakyReLU: the output and the
    /// gradients of `h`, the gate and the residual, with and without a gate, a batch of
    /// one and of two.
    #[test]
    fn equals_burns_ops() {
        let device = Device::flex().autodiff();
        for (shape, gated, act) in [
            ([1, 3, 4, 5, 6], true, Activation::LeakyRelu(0.01)),
            ([2, 2, 3, 3, 7], true, Activation::LeakyRelu(0.2)),
            ([1, 4, 2, 3, 5], false, Activation::LeakyRelu(0.01)),
            ([1, 2, 3, 4, 5], true, Activation::Identity),
        ] {
            let [n, c, _, _, _] = shape;
            let random = |s| Tensor::<5>::random(s, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let (h, residual) = (random(shape), random(shape));
            let gate =
                gated.then(|| Tensor::<2>::random([n, c], Distribution::Uniform(0.0, 1.0), &device).require_grad());
            let r = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let out = if ours {
                    gate_add_act(h.clone(), gate.clone(), residual.clone(), act)
                } else {
                    let gated = match &gate {
                        Some(g) => h.clone() * g.clone().reshape([n, c, 1, 1, 1]),
                        None => h.clone(),
                    };
                    let sum = gated + residual.clone();
                    match act {
                        Activation::LeakyRelu(s) => leaky_relu(sum, s as f64),
                        Activation::Identity => sum,
                    }
                };
                let grads = (out.clone() * r.clone()).sum().backward();
                let dgate = gate.as_ref().map(|g| floats(g.grad(&grads).expect("dL/dgate"))).unwrap_or_default();
                [
                    floats(out),
                    floats(h.grad(&grads).expect("dL/dh")),
                    dgate,
                    floats(residual.grad(&grads).expect("dL/dr")),
                ]
            };
            let (ours, burns) = (run(true), run(false));
            let names = ["output", "dL/dh", "dL/dgate", "dL/dresidual"];
            super::super::assert_close(&names, &ours, &burns, 1e-5, &format!("{shape:?} {act:?}"));
        }
    }

    /// Equal to burn's batch norm (batch statistics), multiplication, addition and
    /// LeakyReLU: the output, the gradients of `y`, `γ`, `β`, the gate and the residual,
    /// and the running statistics, with and without a gate, a batch of one and of two.
    #[test]
    fn batch_norm_gate_add_equals_burns() {
        use burn::nn::BatchNormConfig;
        let device = Device::flex().autodiff();
        for (shape, gated, act) in [
            ([1, 3, 4, 5, 6], true, Activation::LeakyRelu(0.01)),
            ([2, 2, 3, 3, 7], true, Activation::LeakyRelu(0.2)),
            ([1, 4, 2, 3, 5], false, Activation::LeakyRelu(0.01)),
            ([2, 2, 3, 4, 5], false, Activation::Identity),
        ] {
            let [n, c, _, _, _] = shape;
            let random = |s| Tensor::<5>::random(s, Distribution::Normal(0.0, 1.0), &device);
            let (y, residual) = ((random(shape) * 3.0 + 1.0).detach().require_grad(), random(shape).require_grad());
            let gate =
                gated.then(|| Tensor::<2>::random([n, c], Distribution::Uniform(0.0, 1.0), &device).require_grad());
            let r = random(shape);
            let affine = |lo, hi| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), &device);
            let (gamma, beta) = (affine(0.5, 1.5), affine(-0.5, 0.5));
            let make_bn = || BatchNorm {
                gamma: burn::module::Param::from_tensor(gamma.clone()),
                beta: burn::module::Param::from_tensor(beta.clone()),
                ..BatchNormConfig::new(c).init(&device)
            };
            let run = |bn: &BatchNorm, ours: bool| {
                let out = if ours {
                    let primitive = autodiff(y.clone());
                    let (values, dims) = values::<5>(primitive.primitive());
                    let voxels = dims[2] * dims[3] * dims[4];
                    let moments: Vec<Moments> = (0..c)
                        .map(|ch| {
                            (0..n).fold(Moments::default(), |m, i| {
                                m.merge(Moments::of(&values[(i * c + ch) * voxels..][..voxels]))
                            })
                        })
                        .collect();
                    batch_norm_gate_add_act(y.clone(), bn, &moments, gate.clone(), residual.clone(), act)
                } else {
                    let h = bn.forward(y.clone());
                    let h = match &gate {
                        Some(g) => h * g.clone().reshape([n, c, 1, 1, 1]),
                        None => h,
                    };
                    match act {
                        Activation::LeakyRelu(s) => leaky_relu(h + residual.clone(), s as f64),
                        Activation::Identity => h + residual.clone(),
                    }
                };
                let grads = (out.clone() * r.clone()).sum().backward();
                let dgate = gate.as_ref().map(|g| floats(g.grad(&grads).expect("dL/dgate"))).unwrap_or_default();
                [
                    floats(out),
                    floats(y.grad(&grads).expect("dL/dy")),
                    floats(bn.gamma.val().grad(&grads).expect("dL/dγ")),
                    floats(bn.beta.val().grad(&grads).expect("dL/dβ")),
                    dgate,
                    floats(residual.grad(&grads).expect("dL/dr")),
                    floats(bn.running_mean.value_sync()),
                    floats(bn.running_var.value_sync()),
                ]
            };
            let (ours, burns) = (run(&make_bn(), true), run(&make_bn(), false));
            let names =
                ["output", "dL/dy", "dL/dγ", "dL/dβ", "dL/dgate", "dL/dresidual", "running mean", "running variance"];
            super::super::assert_close(&names, &ours, &burns, 1e-4, &format!("{shape:?} gated {gated} {act:?}"));
        }
    }
}
