//! Transposed convolutions whose kernel equals their stride (the U-Nets' up-sampling:
//! every output voxel has exactly one input voxel), on the CPU, forward and — as one
//! operation of burn's autodiff graph — backward.
//!
//! With taps `t = (a, b, c)` of a `[kd, kh, kw]` kernel, `y[co][k p + t] = Σ_ci
//! w[ci][co][t] x[ci][p] + bias[co]`. Reading `w` `[cin][cout][taps]` as `[cout taps][cin]`
//! makes the forward pass a 1x1x1 convolution to `cout x taps` channels followed by a
//! depth-to-space step ([`up_sample`]). Backward, the output gradient taken space-to-
//! depth (`dy'[(co, t)][p] = dy[co][k p + t]`) gives
//!
//! - `dL/dx = w · dy'`: a 1x1x1 convolution of `dy'` with `w` as it is stored,
//! - `dL/dw[ci][(co, t)] = Σ_p x[ci][p] dy'[(co, t)][p]`: a 1x1x1 weight gradient,
//! - `dL/dbias[co] = Σ dy[co]`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

use super::backward::weight_grad;
use super::conv3d::{conv3d_items, Activation, Conv};
use super::{autodiff, lane_sum, tensor, values};

/// `x` `[n, cin, d, h, w]` up-sampled by the transposed convolution with `weights`
/// `[cin][cout][taps]` and `bias` (`cout`), kernel = stride = `kernel`.
pub(crate) fn up_sample(
    x: &[f32],
    [n, cin, d, h, w]: [usize; 5],
    weights: &[f32],
    bias: &[f32],
    kernel: [usize; 3],
) -> Vec<f32> {
    let [kd, kh, kw] = kernel;
    let taps = kd * kh * kw;
    let cout = bias.len();
    // `[cin][cout][taps]` read as the 1x1x1 convolution's `[cout * taps][cin]`.
    let mut spread = vec![0f32; weights.len()];
    for ci in 0..cin {
        for k in 0..cout * taps {
            spread[k * cin + ci] = weights[ci * cout * taps + k];
        }
    }
    let conv =
        Conv { cin, cout: cout * taps, kernel: [1; 3], stride: [1; 3], weights: spread, bias: vec![0.0; cout * taps] };
    let taps_out = conv3d_items(x, [n, cin, d, h, w], &conv, Activation::Identity);
    let (d2, h2, w2) = (d * kd, h * kh, w * kw);
    let mut out = vec![0f32; n * cout * d2 * h2 * w2];
    // Output plane (item, co, z2) takes tap row a = z2 % kd of input plane z2 / kd.
    out.par_chunks_mut(h2 * w2).enumerate().for_each(|(plane, dst)| {
        let (item_co, z2) = (plane / d2, plane % d2);
        let co = item_co % cout;
        let (z, a) = (z2 / kd, z2 % kd);
        for (y2, row) in dst.chunks_mut(w2).enumerate() {
            let (y, b) = (y2 / kh, y2 % kh);
            for c in 0..kw {
                let tap = (a * kh + b) * kw + c;
                let src = &taps_out[((item_co * taps + tap) * d + z) * h * w + y * w..][..w];
                for (x, &value) in src.iter().enumerate() {
                    row[x * kw + c] = value + bias[co];
                }
            }
        }
    });
    out
}

/// [`up_sample`] on the CPU's autodiff device, differentiable in `x`, the weights and the
/// bias.
pub(crate) fn up_sample_tracked(x: Tensor<5>, weight: Tensor<5>, bias: Tensor<1>, kernel: [usize; 3]) -> Tensor<5> {
    let (x, weight, bias) = (autodiff(x), autodiff(weight), autodiff(bias));
    let out = {
        let (xs, dims) = values::<5>(x.primitive());
        let (ws, _) = values::<5>(weight.primitive());
        let (bs, [cout]) = values::<1>(bias.primitive());
        let [n, _, d, h, w] = dims;
        let out = up_sample(&xs, dims, &ws, &bs, kernel);
        tensor(out, [n, cout, d * kernel[0], h * kernel[1], w * kernel[2]])
    };
    let output =
        match UpSample.prepare::<NoCheckpointing>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
    Tensor::from_primitive::<Autodiff<Flex>>(output)
}

/// The operation's node; its state is the graph ids of `x` and the weights.
#[derive(Debug)]
struct UpSample;

impl Backward<Flex, 3> for UpSample {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x);
        let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight);
        let (dy, [n, cout, d2, h2, w2]) = values::<5>(&grad);
        let (weights, [cin, _, kd, kh, kw]) = values::<5>(&weight);
        let (d, h, w) = (d2 / kd, h2 / kh, w2 / kw);
        let taps = kd * kh * kw;
        // dy' `[n][cout * taps][d][h][w]`, and each of its planes' sum (for the bias's
        // gradient, summed while the plane is in cache rather than in a pass over dy).
        let mut folded = vec![0f32; dy.len()];
        let plane_sums: Vec<f64> = folded
            .par_chunks_mut(h * w)
            .enumerate()
            .map(|(plane, dst)| {
                let (item_k, z) = (plane / d, plane % d);
                let (item_co, tap) = (item_k / taps, item_k % taps);
                let (a, b, c) = (tap / (kh * kw), tap / kw % kh, tap % kw);
                let src = &dy[(item_co * d2 + z * kd + a) * h2 * w2..][..h2 * w2];
                for (y, row) in dst.chunks_mut(w).enumerate() {
                    let src = &src[(y * kh + b) * w2..][..w2];
                    for (x, value) in row.iter_mut().enumerate() {
                        *value = src[x * kw + c];
                    }
                }
                lane_sum(dst, |v| v)
            })
            .collect();
        drop(dy);
        if let Some(node) = node_bias {
            // Planes `[n][cout][taps][d]`: channel `co`'s are `taps d` in a row, per item.
            let per_channel = taps * d;
            let sums = (0..cout)
                .map(|co| {
                    (0..n)
                        .map(|i| plane_sums[(i * cout + co) * per_channel..][..per_channel].iter().sum::<f64>())
                        .sum::<f64>() as f32
                })
                .collect();
            grads.register::<Flex>(node.id, tensor(sums, [cout]));
        }
        if let Some(node) = node_x {
            let conv = Conv {
                cin: cout * taps,
                cout: cin,
                kernel: [1; 3],
                stride: [1; 3],
                weights: weights.to_vec(),
                bias: vec![0.0; cin],
            };
            let dx = conv3d_items(&folded, [n, cout * taps, d, h, w], &conv, Activation::Identity);
            grads.register::<Flex>(node.id, tensor(dx, [n, cin, d, h, w]));
        }
        if let Some(node) = node_weight {
            let (xs, _) = values::<5>(&x);
            let dw = weight_grad(&folded, &xs, [n, cout * taps, d, h, w], cin, [1; 3], [1; 3]);
            grads.register::<Flex>(node.id, tensor(dw, [cin, cout, kd, kh, kw]));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use burn::nn::conv::ConvTranspose3dConfig;
    use burn::tensor::Distribution;

    use super::super::{conv_transpose, floats};
    use super::*;

    /// Equal to burn's `ConvTranspose3d` on the autodiff device: the output and the
    /// gradients of the input, the weights and the bias (AnatomyNet's and nnU-Net's
    /// up-sampling, an anisotropic one, odd widths, a batch of two).
    #[test]
    fn gradients_equal_burns() {
        let device = Device::flex().autodiff();
        for (shape, cout, kernel) in
            [([1, 5, 3, 4, 7], 3, [2, 2, 2]), ([2, 4, 2, 3, 17], 6, [1, 2, 2]), ([1, 28, 4, 5, 16], 14, [2, 2, 2])]
        {
            let mut up = ConvTranspose3dConfig::new([shape[1], cout], kernel).with_stride(kernel).init(&device);
            let bias = up.bias.take().expect("a bias").map(|b| b.require_grad());
            up.bias = Some(bias);
            let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let [n, _, d, h, w] = shape;
            let out_shape = [n, cout, d * kernel[0], h * kernel[1], w * kernel[2]];
            let r = Tensor::<5>::random(out_shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let out = if ours { conv_transpose(x.clone(), &up) } else { up.forward(x.clone()) };
                let grads = (out.clone() * r.clone()).sum().backward();
                [
                    floats(out),
                    floats(x.grad(&grads).expect("dL/dx")),
                    floats(up.weight.val().grad(&grads).expect("dL/dw")),
                    floats(up.bias.as_ref().expect("a bias").val().grad(&grads).expect("dL/db")),
                ]
            };
            let (ours, burns) = (run(true), run(false));
            let names = ["output", "dL/dx", "dL/dw", "dL/dbias"];
            super::super::assert_close(&names, &ours, &burns, 1e-5, &format!("{shape:?} {kernel:?}"));
        }
    }
}
