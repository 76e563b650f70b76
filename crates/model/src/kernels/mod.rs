//! voxseg's own CPU kernels, where burn's CPU backend (flex: im2col + GEMM) is slow
//! for these networks' skinny 3-D convolutions.
//!
//! The networks call [`conv_bn_act`] for every "convolution, then batch norm, then
//! activation" and keep one code path:
//!
//! - on flex without autodiff (inference on the CPU) it runs [`conv3d`]'s direct
//!   convolution with the batch norm folded into the weights and the activation in
//!   the same pass;
//! - on flex with autodiff (training on the CPU) the same convolution as one operation
//!   of burn's autodiff graph with voxseg's own backward pass ([`backward`]), then
//!   batch norm with batch statistics and the activation as one more ([`batch_norm`]);
//! - everywhere else (wgpu, CPUs without a compiled tile) burn's ops, so gradients and
//!   GPU kernels are burn's own.
//!
//! This is a device dispatch in one function rather than burn's `backend_extension`
//! trait: the extension would need an implementation (or a fallback) per backend for
//! the same cases.

mod backward;
mod batch_norm;
mod conv3d;
mod loss;
mod pool;
mod residual;
mod transpose;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, DispatchDevice, Flex, GradientCheckpointingStrategy};
use burn::nn::conv::{Conv3d, ConvTranspose3d};
use burn::nn::{BatchNorm, InstanceNorm, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;
use burn::tensor::FloatDType;
use rayon::prelude::*;

pub use conv3d::{release_scratch, Activation};
pub(crate) use loss::segmentation_loss;
pub use pool::{cat_centre_cropped, max_pool, repeat_box_mean};

/// `act(bn(conv(x)))` with `bn` in inference mode (running statistics).
pub fn conv_bn_act(x: Tensor<5>, conv: &Conv3d, bn: Option<&BatchNorm>, act: Activation) -> Tensor<5> {
    if !runs_here(&x, conv) {
        // A batch norm that trains takes its statistics from the convolution's rows.
        let statistics = bn.is_some_and(|bn| batch_norm::trains_here(&x, bn));
        let (y, moments) = if trains_here(&x, conv) {
            let bias = conv.bias.as_ref().map(|b| b.val());
            backward::conv3d_tracked(x, conv.weight.val(), bias, conv.stride, statistics)
        } else {
            (conv.forward(x), None)
        };
        return match bn {
            Some(bn) if statistics => batch_norm::batch_norm_act(y, bn, act, moments),
            Some(bn) => act.on_tensor(bn.forward(y)),
            None => act.on_tensor(y),
        };
    }
    let device = x.device();
    let [n, cin, d, h, w] = x.dims();
    let folded = fold(conv, bn);
    let out = with_floats(&x, |input| conv3d::conv3d_items(input, [n, cin, d, h, w], &folded, act));
    let [sd, sh, sw] = conv.stride;
    Tensor::from_data(TensorData::new(out, [n, folded.cout, d.div_ceil(sd), h.div_ceil(sh), w.div_ceil(sw)]), &device)
}

/// A transposed convolution. On the CPU, inference or training, one whose kernel
/// equals its stride (the U-Nets' up-sampling) runs [`transpose`]'s 1x1x1 convolution
/// and depth-to-space step (training: with its own backward pass); others run burn's op.
pub fn conv_transpose(x: Tensor<5>, up: &ConvTranspose3d) -> Tensor<5> {
    let one_to_one = up.kernel_size == up.stride
        && up.padding == [0; 3]
        && up.padding_out == [0; 3]
        && up.dilation == [1; 3]
        && up.groups == 1;
    if !(one_to_one && conv3d::supported()) {
        return up.forward(x);
    }
    let device = x.device();
    let channels = up.weight.dims()[1];
    let bias = || up.bias.as_ref().map_or_else(|| Tensor::zeros([channels], &device), |b| b.val());
    if on_cpu_autodiff(&device) {
        return transpose::up_sample_tracked(x, up.weight.val(), bias(), up.kernel_size);
    }
    if !on_cpu(&device) {
        return up.forward(x);
    }
    let dims = x.dims();
    let [n, _, d, h, w] = dims;
    let [kd, kh, kw] = up.kernel_size;
    let (weights, bias) = (floats(up.weight.val()), floats(bias()));
    let out = with_floats(&x, |input| transpose::up_sample(input, dims, &weights, &bias, up.kernel_size));
    Tensor::from_data(TensorData::new(out, [n, channels, d * kd, h * kh, w * kw]), &device)
}

/// `act(h * gate + residual)`, `gate` one factor per `[n, c]` (a squeeze-and-
/// excitation gate) or none: the end of a residual block, in one pass over `h` on the
/// CPU instead of three (and, training, one operation of the autodiff graph:
/// [`residual`]).
pub fn gate_add_act(h: Tensor<5>, gate: Option<Tensor<2>>, residual: Tensor<5>, act: Activation) -> Tensor<5> {
    if on_cpu_autodiff(&h.device()) {
        return residual::gate_add_act(h, gate, residual, act);
    }
    if !on_cpu_backend(&h) {
        let [n, c, _, _, _] = h.dims();
        let h = match gate {
            Some(g) => h * g.reshape([n, c, 1, 1, 1]),
            None => h,
        };
        return act.on_tensor(h + residual);
    }
    let device = h.device();
    let dims = h.dims();
    let voxels = dims[2] * dims[3] * dims[4];
    let gate = gate.map(floats);
    let mut out = floats(h);
    with_floats(&residual, |residual| {
        out.par_chunks_mut(voxels).zip(residual.par_chunks(voxels)).enumerate().for_each(|(nc, (o, r))| {
            let g = gate.as_ref().map_or(1.0, |g| g[nc]);
            o.iter_mut().zip(r).for_each(|(o, r)| *o = act.apply(*o * g + *r));
        });
    });
    Tensor::from_data(TensorData::new(out, dims), &device)
}

/// The end of a residual block, `act(bn(conv(x)) * gate + residual)`, `gate` the
/// squeeze-and-excitation `se` of the channel means of `bn(conv(x))` `[n, c]` (none: no
/// gate).
///
/// Training one item on the CPU, the convolution and then one operation
/// ([`residual::batch_norm_gate_add_act`]) that never stores `bn(conv(x))`; and `se`
/// reads `β`: with the batch statistics of one item, each channel of the batch norm's
/// output has mean `β` whatever its input, `γ` times a mean of `x̂` that is 0, so the
/// pooling's value is `β` and its gradient reaches `β` alone (through the pooling and the
/// batch norm, a constant per channel added to `dL/dh` is taken out again by the batch
/// norm's mean). Everywhere else the three steps as they read.
pub fn conv_bn_gate_add_act(
    x: Tensor<5>,
    conv: &Conv3d,
    bn: &BatchNorm,
    se: Option<&dyn Fn(Tensor<2>) -> Tensor<2>>,
    residual: Tensor<5>,
    act: Activation,
) -> Tensor<5> {
    if x.dims()[0] == 1 && trains_here(&x, conv) && batch_norm::trains_here(&x, bn) {
        let bias = conv.bias.as_ref().map(|b| b.val());
        let (y, moments) = backward::conv3d_tracked(x, conv.weight.val(), bias, conv.stride, true);
        let moments = moments.expect("the statistics asked for");
        let gate = se.map(|se| se(bn.beta.val().unsqueeze()));
        return residual::batch_norm_gate_add_act(y, bn, &moments, gate, residual, act);
    }
    let h = conv_bn_act(x, conv, Some(bn), Activation::Identity);
    let gate = se.map(|se| se(channel_mean(h.clone())));
    gate_add_act(h, gate, residual, act)
}

/// `[n, c]`: the mean of each channel of `x` over the volume (a squeeze-and-excitation
/// gate's pooling); on the CPU's training device one operation with its own backward
/// pass ([`residual::channel_mean`]).
pub fn channel_mean(x: Tensor<5>) -> Tensor<2> {
    if on_cpu_autodiff(&x.device()) {
        return residual::channel_mean(x);
    }
    let [n, c, _, _, _] = x.dims();
    x.mean_dims(&[2, 3, 4]).reshape([n, c])
}

/// `act((x - mean) / (std + epsilon))` per `[n, c]` over the whole volume (population
/// standard deviation): the liver network's instance normalisation, in two passes over
/// `x` in place on the CPU instead of five full-size temporaries.
pub fn instance_norm_act(x: Tensor<5>, epsilon: f64, act: Activation) -> Tensor<5> {
    if !on_cpu_backend(&x) {
        // The statistics in f32 even when `x` is half (`--precision`): squared
        // activations overflow f16 past 256. A no-op cast for f32.
        let dtype = x.dtype();
        let wide = x.clone().cast(FloatDType::F32);
        let mean = wide.clone().mean_dims(&[2, 3, 4]);
        let std = (wide - mean.clone()).powi_scalar(2).mean_dims(&[2, 3, 4]).sqrt();
        return act.on_tensor((x - mean.cast(dtype)) / (std + epsilon).cast(dtype));
    }
    let device = x.device();
    let dims = x.dims();
    let mut v = floats(x);
    v.par_chunks_mut(dims[2] * dims[3] * dims[4]).for_each(|channel| {
        let moments = Moments::of(channel);
        let (mean, var) = (moments.mean(), moments.variance());
        let (mean, scale) = (mean as f32, (1.0 / (var.sqrt() + epsilon)) as f32);
        channel.iter_mut().for_each(|a| *a = act.apply((*a - mean) * scale));
    });
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// `act(gamma * (x - mean) / sqrt(var + epsilon) + beta)` per `[n, c]` over the whole
/// volume (PyTorch's `InstanceNorm3d(affine=True)`, biased variance, as nnU-Net
/// normalises), in two passes over `x` in place on the CPU.
pub fn instance_norm_affine_act(x: Tensor<5>, norm: &InstanceNorm, act: Activation) -> Tensor<5> {
    if !on_cpu_backend(&x) {
        return act.on_tensor(norm.forward(x));
    }
    let device = x.device();
    let dims = x.dims();
    let channels = dims[1];
    let ones = || vec![1.0; channels];
    let gamma = norm.gamma.as_ref().map_or_else(ones, |g| floats(g.val()));
    let beta = norm.beta.as_ref().map_or_else(|| vec![0.0; channels], |b| floats(b.val()));
    let mut v = floats(x);
    v.par_chunks_mut(dims[2] * dims[3] * dims[4]).enumerate().for_each(|(nc, channel)| {
        let c = nc % channels;
        let moments = Moments::of(channel);
        let (mean, var) = (moments.mean(), moments.variance());
        let scale = gamma[c] as f64 / (var + norm.epsilon).sqrt();
        let (scale, shift) = (scale as f32, (beta[c] as f64 - mean * scale) as f32);
        channel.iter_mut().for_each(|a| *a = act.apply(*a * scale + shift));
    });
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// An element-wise pass of training (batch norm, residual ends) over one channel, its
/// inputs as fields; [`vectorised`] runs it.
pub(crate) trait Pass {
    type Output;
    /// Marked `#[inline(always)]` in every implementation, so that it is compiled into
    /// [`vectorised`]'s AVX-512 function (a closure or a function called there is
    /// compiled on its own, without the feature, once it grows past LLVM's inlining size).
    fn run(self) -> Self::Output;
}

/// `pass.run()`, compiled for AVX-512 where the CPU has it: 16 lanes wide, not the
/// baseline's 4 (SSE2), which these passes are bound by more than by memory (README,
/// "Training on the CPU").
#[inline(always)]
pub(crate) fn vectorised<P: Pass>(pass: P) -> P::Output {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<P: Pass>(pass: P) -> P::Output {
            pass.run()
        }
        // Safety: the CPU has AVX-512F (checked above).
        return unsafe { avx512(pass) };
    }
    pass.run()
}

/// `Σ term(v)`, summed in f64 over blocks of 4096 whose sums run in 16 independent f32
/// lanes (vectorised; a single f64 sum is a serial chain of dependent adds, a sixth of
/// nnU-Net's time at 128^3 in the instance norms).
fn lane_sum(values: &[f32], term: impl Fn(f32) -> f32) -> f64 {
    values
        .chunks(4096)
        .map(|block| {
            let mut lanes = [0f32; 16];
            let whole = block.chunks_exact(16);
            let rest: f32 = whole.remainder().iter().map(|&a| term(a)).sum();
            for sixteen in whole {
                lanes.iter_mut().zip(sixteen).for_each(|(l, &a)| *l += term(a));
            }
            lanes.iter().map(|&l| l as f64).sum::<f64>() + rest as f64
        })
        .sum()
}

/// `(Σ first, Σ second)` of `term(a, b)` over pairs of `a` and `b` (equal lengths),
/// blocked and laned as [`lane_sum`]: the sums of a product, of moments, of gradients.
/// Always inlined, so that it vectorises as wide as its caller ([`vectorised`]).
#[inline(always)]
fn lane_sums2(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    a.chunks(4096).zip(b.chunks(4096)).fold((0.0, 0.0), |(first, second), (a, b)| {
        let (mut l1, mut l2) = ([0f32; 16], [0f32; 16]);
        let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
        let (mut r1, mut r2) = (0f32, 0f32);
        for (&a, &b) in a16.remainder().iter().zip(b16.remainder()) {
            let (t1, t2) = term(a, b);
            r1 += t1;
            r2 += t2;
        }
        for (a, b) in a16.zip(b16) {
            for l in 0..16 {
                let (t1, t2) = term(a[l], b[l]);
                l1[l] += t1;
                l2[l] += t2;
            }
        }
        let total = |lanes: [f32; 16], rest: f32| lanes.iter().map(|&l| l as f64).sum::<f64>() + rest as f64;
        (first + total(l1, r1), second + total(l2, r2))
    })
}

/// Count, mean and sum of squared deviations from the mean of some values. Parts summed
/// apart (a convolution's output rows, the items of a batch) merge exactly (Chan, Golub
/// and LeVeque's update), and no difference of two large sums cancels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    count: f64,
    mean: f64,
    squares: f64,
}

impl Moments {
    /// Of `values`, in blocks of [`LaneMoments`] merged in f64.
    pub(crate) fn of(values: &[f32]) -> Moments {
        values.chunks(4096).fold(Moments::default(), |all, block| {
            let mut sums = LaneMoments::new(block[0]);
            sums.add(block);
            all.merge(sums.moments())
        })
    }

    /// The moments of both parts together.
    pub(crate) fn merge(self, other: Moments) -> Moments {
        let count = self.count + other.count;
        if count == 0.0 {
            return Moments::default();
        }
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * other.count / count,
            squares: self.squares + other.squares + delta * delta * self.count * other.count / count,
        }
    }

    pub(crate) fn mean(self) -> f64 {
        self.mean
    }

    /// The biased variance (over the count, as batch norm normalises with).
    pub(crate) fn variance(self) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.squares / self.count
        }
    }
}

/// Running sums of values' deviations from a pivot (a value among them, so that the
/// squares keep their precision: the values lie within a few standard deviations of
/// it), in 16 f32 lanes: vectorised, and reduced once, in [`LaneMoments::moments`].
/// For up to a few thousand values a lane.
#[derive(Debug, Clone)]
pub(crate) struct LaneMoments {
    pivot: f32,
    count: usize,
    sum: [f32; 16],
    squares: [f32; 16],
}

impl LaneMoments {
    pub(crate) fn new(pivot: f32) -> LaneMoments {
        LaneMoments { pivot, count: 0, sum: [0.0; 16], squares: [0.0; 16] }
    }

    pub(crate) fn add(&mut self, values: &[f32]) {
        let pivot = self.pivot;
        let mut add = |lanes: &[f32]| {
            let sums = self.sum.iter_mut().zip(self.squares.iter_mut());
            for ((sum, squares), &v) in sums.zip(lanes) {
                let d = v - pivot;
                *sum += d;
                *squares += d * d;
            }
        };
        let sixteens = values.chunks_exact(16);
        add(sixteens.remainder());
        sixteens.for_each(&mut add);
        self.count += values.len();
    }

    pub(crate) fn moments(self) -> Moments {
        let count = self.count as f64;
        if self.count == 0 {
            return Moments::default();
        }
        let sum: f64 = self.sum.iter().map(|&s| s as f64).sum();
        let squares: f64 = self.squares.iter().map(|&s| s as f64).sum();
        Moments { count, mean: self.pivot as f64 + sum / count, squares: (squares - sum * sum / count).max(0.0) }
    }
}

/// Inference on the CPU backend, a convolution [`own_kernel`] runs.
fn runs_here(x: &Tensor<5>, conv: &Conv3d) -> bool {
    on_cpu_backend(x) && own_kernel(conv)
}

/// Training on the CPU backend, a convolution [`own_kernel`] runs (forward and
/// backward): at stride 1, or strided on an input that needs no gradient (AnatomyNet's
/// stem; [`backward`] computes no strided input gradient).
fn trains_here(x: &Tensor<5>, conv: &Conv3d) -> bool {
    on_cpu_autodiff(&x.device()) && (conv.stride == [1; 3] || !x.is_require_grad()) && own_kernel(conv)
}

/// A "same" convolution (padding `k / 2`, any stride) of a kernel shape
/// [`conv3d::handles`], on a CPU with a compiled tile.
fn own_kernel(conv: &Conv3d) -> bool {
    let [kd, kh, kw] = conv.kernel_size;
    conv.dilation == [1; 3]
        && conv.groups == 1
        && conv3d::handles(conv.kernel_size)
        && conv.padding == PaddingConfig3d::Explicit(kd / 2, kh / 2, kw / 2)
        && conv3d::supported()
}

/// On flex, which is the CPU without autodiff (training's device is `Autodiff`).
fn on_cpu_backend(t: &Tensor<5>) -> bool {
    on_cpu(&t.device())
}

/// Whether `device` is flex without autodiff: where voxseg's own kernels run.
pub(crate) fn on_cpu(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether `device` is the CPU's autodiff device (flex, no gradient checkpointing):
/// where the training operations ([`backward`], [`batch_norm`], [`residual`]) run.
pub(crate) fn on_cpu_autodiff(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Autodiff(inner) => {
            matches!(**inner, DispatchDevice::Flex(_))
                && inner.gradient_checkpointing_strategy() == GradientCheckpointingStrategy::Disabled
        }
        _ => false,
    }
}

/// A tensor on the CPU's autodiff device as burn-autodiff's primitive (its graph node
/// and its flex tensor), for the training operations.
fn autodiff<const D: usize>(t: Tensor<D>) -> FloatTensor<Autodiff<Flex>> {
    t.try_into_primitive::<Autodiff<Flex>>().expect("on the CPU's autodiff device")
}

/// A flex tensor's f32 values (borrowed where contiguous) and shape.
fn values<const D: usize>(t: &FlexTensor) -> (std::borrow::Cow<'_, [f32]>, [usize; D]) {
    let dims: [usize; D] = t.layout().shape().dims();
    let values = match t.as_slice::<f32>() {
        Some(v) => v.into(),
        None => t.to_contiguous().as_slice::<f32>().expect("a contiguous f32 tensor").to_vec().into(),
    };
    (values, dims)
}

/// A flex tensor whose f32 values can be overwritten in place through `storage_mut`
/// (which copies only a buffer another tensor still shares: a gradient handed to one
/// backward step is usually its own), and its shape.
fn writable<const D: usize>(t: FlexTensor) -> (FlexTensor, [usize; D]) {
    let dims: [usize; D] = t.layout().shape().dims();
    let whole = t.as_slice::<f32>().is_some_and(|v| v.len() == t.storage::<f32>().len());
    (if whole { t } else { tensor(values::<D>(&t).0.into_owned(), dims) }, dims)
}

/// A flex tensor of `values` in `shape`.
fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl Activation {
    /// The same activation in burn's ops, for the devices voxseg's kernels do not serve.
    fn on_tensor(self, y: Tensor<5>) -> Tensor<5> {
        match self {
            Activation::Identity => y,
            Activation::LeakyRelu(slope) => leaky_relu(y, slope as f64),
        }
    }
}

/// `f` of a CPU tensor's values, borrowed in place where they are contiguous f32 (a
/// tensor still used elsewhere, a residual or a skip, is read without a copy; `floats`
/// would copy it), else converted.
fn with_floats<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    match t.clone().try_into_primitive::<Flex>() {
        Ok(flex) => match flex.as_slice::<f32>() {
            Some(values) => f(values),
            None => f(&floats(Tensor::<D>::from_primitive::<Flex>(flex))),
        },
        Err(_) => f(&floats(t.clone())),
    }
}

/// A tensor's values as f32, moved out of the tensor where it is not shared.
pub(crate) fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("converted to f32")
}

/// The convolution's weights with the batch norm folded in:
/// `w' = w * g / sqrt(v + eps)`, `b' = (b - m) * g / sqrt(v + eps) + beta`.
fn fold(conv: &Conv3d, bn: Option<&BatchNorm>) -> conv3d::Conv {
    let [cout, cin, kd, kh, kw] = conv.weight.dims();
    let mut weights = floats(conv.weight.val());
    let mut bias = conv.bias.as_ref().map_or_else(|| vec![0.0; cout], |b| floats(b.val()));
    if let Some(bn) = bn {
        let gamma = floats(bn.gamma.val());
        let beta = floats(bn.beta.val());
        let mean = floats(bn.running_mean.value());
        let var = floats(bn.running_var.value());
        let per_channel = weights.len() / cout;
        for co in 0..cout {
            let scale = gamma[co] / (var[co] + bn.epsilon as f32).sqrt();
            weights[co * per_channel..][..per_channel].iter_mut().for_each(|w| *w *= scale);
            bias[co] = (bias[co] - mean[co]) * scale + beta[co];
        }
    }
    conv3d::Conv { cin, cout, kernel: [kd, kh, kw], stride: conv.stride, weights, bias }
}

/// Each of `ours` against `theirs`, named by `names`: as many, of equal lengths, the
/// largest difference within `tolerance` times the largest `|theirs|` (at least 1).
/// `case` names the case in a failure.
#[cfg(test)]
fn assert_close(names: &[&str], ours: &[Vec<f32>], theirs: &[Vec<f32>], tolerance: f32, case: &str) {
    assert_eq!((names.len(), ours.len()), (names.len(), theirs.len()), "{case}");
    for (what, (a, b)) in names.iter().zip(ours.iter().zip(theirs)) {
        assert_eq!(a.len(), b.len(), "{what} {case}");
        let diff = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let scale = b.iter().map(|b| b.abs()).fold(0.0, f32::max);
        assert!(diff <= tolerance * scale.max(1.0), "{what} {case}: max |diff| {diff} (scale {scale})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::{Conv3dConfig, ConvTranspose3dConfig};
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    /// burn's own convolution + batch norm + activation on the same device.
    fn reference(x: Tensor<5>, conv: &Conv3d, bn: Option<&BatchNorm>, act: Activation) -> Tensor<5> {
        let y = conv.forward(x);
        let y = bn.map_or(y.clone(), |bn| bn.forward(y));
        act.on_tensor(y)
    }

    fn max_abs_diff(a: Tensor<5>, b: Tensor<5>) -> (f32, f32) {
        let (a, b) = (floats(a), floats(b));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
        (diff, scale)
    }

    #[test]
    fn transposed_convolution_equals_burns() {
        let device = Device::flex();
        // (input shape, output channels, kernel = stride, bias): AnatomyNet's and
        // nnU-Net's up-sampling, an anisotropic one, odd widths, a batch of two.
        for (shape, cout, kernel, bias) in [
            ([1, 5, 3, 4, 7], 3, [2, 2, 2], true),
            ([2, 4, 2, 3, 17], 6, [1, 2, 2], false),
            ([1, 28, 4, 5, 33], 14, [2, 2, 2], true),
        ] {
            let up =
                ConvTranspose3dConfig::new([shape[1], cout], kernel).with_stride(kernel).with_bias(bias).init(&device);
            let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let ours = conv_transpose(x.clone(), &up);
            let theirs = up.forward(x);
            assert_eq!(ours.dims(), theirs.dims());
            let (diff, scale) = max_abs_diff(ours, theirs);
            assert!(diff <= 1e-5 * scale.max(1.0), "{shape:?} -> {cout} {kernel:?}: max |diff| {diff} (scale {scale})");
        }
    }

    #[test]
    fn equals_burns_convolution_batch_norm_and_activation() {
        let device = Device::flex();
        // Odd widths (not a multiple of 16), channel counts that are not a multiple
        // of the tile, 1x1x1 shortcuts, flat (3,3,1) kernels, bias, batch of two.
        // Strided ones as AnatomyNet's stem and nnU-Net's encoders (odd sides too).
        // (input shape, output channels, kernel, stride, bias, batch norm, activation)
        type Case = ([usize; 5], usize, [usize; 3], [usize; 3], bool, bool, Activation);
        let cases: [Case; 8] = [
            ([1, 3, 5, 7, 9], 5, [3, 3, 3], [1; 3], false, true, Activation::LeakyRelu(0.01)),
            ([2, 6, 4, 6, 37], 7, [3, 3, 3], [1; 3], true, false, Activation::Identity),
            ([1, 9, 3, 4, 70], 14, [1, 1, 1], [1; 3], false, true, Activation::Identity),
            ([1, 4, 5, 6, 17], 3, [3, 3, 1], [1; 3], true, true, Activation::LeakyRelu(0.2)),
            ([1, 1, 2, 3, 64], 4, [3, 3, 3], [1; 3], true, false, Activation::Identity),
            ([1, 34, 4, 5, 33], 34, [3, 3, 3], [1; 3], false, true, Activation::LeakyRelu(0.01)),
            ([2, 1, 6, 7, 33], 28, [3, 3, 3], [2; 3], false, true, Activation::LeakyRelu(0.01)),
            ([1, 5, 5, 8, 20], 6, [1, 3, 3], [1, 2, 2], true, false, Activation::Identity),
        ];
        for (shape, cout, kernel, stride, bias, with_bn, act) in cases {
            let conv = Conv3dConfig::new([shape[1], cout], kernel)
                .with_stride(stride)
                .with_padding(PaddingConfig3d::Explicit(kernel[0] / 2, kernel[1] / 2, kernel[2] / 2))
                .with_bias(bias)
                .init(&device);
            let mut bn = BatchNormConfig::new(cout).init(&device);
            // Non-trivial running statistics and affine parameters.
            let random = |lo: f64, hi: f64| Tensor::<1>::random([cout], Distribution::Uniform(lo, hi), &device);
            bn.gamma = bn.gamma.map(|_| random(0.5, 1.5));
            bn.beta = bn.beta.map(|_| random(-0.5, 0.5));
            bn.running_mean = burn::module::RunningState::new(random(-0.3, 0.3));
            bn.running_var = burn::module::RunningState::new(random(0.5, 2.0));
            let bn = with_bn.then_some(&bn);
            let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let ours = conv_bn_act(x.clone(), &conv, bn, act);
            let theirs = reference(x, &conv, bn, act);
            assert_eq!(ours.dims(), theirs.dims());
            let (diff, scale) = max_abs_diff(ours, theirs);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{shape:?} -> {cout} {kernel:?} /{stride:?}: max |diff| {diff} (scale {scale})"
            );
        }
    }

    /// Training, `conv_bn_act` equals burn's convolution, batch norm (batch statistics)
    /// and activation: outputs, every gradient and the running statistics. `x` also feeds
    /// a biased convolution without batch norm (a head), a concatenation and a product,
    /// so its gradient sums four consumers.
    #[test]
    fn training_equals_burns_convolution_batch_norm_and_activation() {
        let device = Device::flex().autodiff();
        for (shape, cout, act) in
            [([1, 3, 4, 5, 32], 5, Activation::LeakyRelu(0.01)), ([2, 4, 3, 6, 19], 3, Activation::Identity)]
        {
            let [n, cin, d, h, w] = shape;
            let same = |cout: usize, bias: bool| {
                Conv3dConfig::new([cin, cout], [3, 3, 3])
                    .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                    .with_bias(bias)
                    .init(&device)
            };
            let (conv, head) = (same(cout, false), same(2, true));
            let make_bn = || {
                let bn = BatchNormConfig::new(cout).init(&device);
                let random = |lo, hi| Tensor::<1>::random([cout], Distribution::Uniform(lo, hi), &device);
                BatchNorm {
                    gamma: burn::module::Param::from_tensor(random(0.5, 1.5)),
                    beta: burn::module::Param::from_tensor(random(-0.5, 0.5)),
                    ..bn
                }
            };
            let ours_bn = make_bn();
            let burns_bn = BatchNorm {
                gamma: burn::module::Param::from_tensor(ours_bn.gamma.val()),
                beta: burn::module::Param::from_tensor(ours_bn.beta.val()),
                ..BatchNormConfig::new(cout).init(&device)
            };
            let x = (Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device) * 2.0 + 0.5).require_grad();
            let random = |s: [usize; 5]| Tensor::<5>::random(s, Distribution::Normal(0.0, 1.0), &device);
            let (r1, r2, r3, r4) =
                (random([n, cout, d, h, w]), random([n, 2, d, h, w]), random([n, cin + 1, d, h, w]), random(shape));
            let other = random([n, 1, d, h, w]);
            let run = |bn: &BatchNorm, ours: bool| {
                let (y, top) = if ours {
                    (
                        conv_bn_act(x.clone(), &conv, Some(bn), act),
                        conv_bn_act(x.clone(), &head, None, Activation::Identity),
                    )
                } else {
                    (act.on_tensor(bn.forward(conv.forward(x.clone()))), head.forward(x.clone()))
                };
                let joined = Tensor::cat(vec![other.clone(), x.clone()], 1);
                let loss = (y.clone() * r1.clone()).sum()
                    + (top * r2.clone()).sum()
                    + (joined * r3.clone()).sum()
                    + (x.clone() * r4.clone()).sum();
                let grads = loss.backward();
                let grad = |t: Tensor<1>| floats(t.grad(&grads).expect("a gradient"));
                [
                    floats(y),
                    floats(x.grad(&grads).expect("dL/dx")),
                    floats(conv.weight.val().grad(&grads).expect("dL/dw")),
                    grad(head.bias.as_ref().expect("a bias").val()),
                    grad(bn.gamma.val()),
                    grad(bn.beta.val()),
                    floats(bn.running_mean.value_sync()),
                    floats(bn.running_var.value_sync()),
                ]
            };
            let (ours, burns) = (run(&ours_bn, true), run(&burns_bn, false));
            let names = ["output", "dL/dx", "dL/dw", "dL/dbias", "dL/dγ", "dL/dβ", "running mean", "running variance"];
            super::assert_close(&names, &ours, &burns, 1e-4, &format!("{shape:?} {act:?}"));
        }
    }

    /// Training, a residual block's end (`conv_bn_gate_add_act`) equals burn's
    /// convolution, batch norm (batch statistics), squeeze-and-excitation gate of the
    /// channel means, product, addition and LeakyReLU: the output, every gradient (the
    /// input, the weights, `γ`, `β`, the gate's layers, the residual) and the running
    /// statistics; with and without a gate, for one item (the fused operation, whose gate
    /// reads `β`) and two (the steps apart).
    #[test]
    fn training_residual_end_equals_burns() {
        use burn::nn::LinearConfig;
        use burn::tensor::activation::sigmoid;
        let device = Device::flex().autodiff();
        for (shape, cout, gated) in
            [([1, 3, 4, 5, 32], 4, true), ([1, 2, 3, 4, 20], 3, false), ([2, 3, 3, 4, 17], 4, true)]
        {
            let [n, _, d, h, w] = shape;
            let conv = Conv3dConfig::new([shape[1], cout], [3, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .with_bias(false)
                .init(&device);
            let (squeeze, excite) =
                (LinearConfig::new(cout, 2).init(&device), LinearConfig::new(2, cout).init(&device));
            let se = |means: Tensor<2>| sigmoid(excite.forward(leaky_relu(squeeze.forward(means), 0.01)));
            let random = |lo, hi| Tensor::<1>::random([cout], Distribution::Uniform(lo, hi), &device);
            let (gamma, beta) = (random(0.5, 1.5), random(-0.5, 0.5));
            let make_bn = || BatchNorm {
                gamma: burn::module::Param::from_tensor(gamma.clone()),
                beta: burn::module::Param::from_tensor(beta.clone()),
                ..BatchNormConfig::new(cout).init(&device)
            };
            let x = (Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device) * 2.0 + 0.5).require_grad();
            let residual =
                Tensor::<5>::random([n, cout, d, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<5>::random([n, cout, d, h, w], Distribution::Normal(0.0, 1.0), &device);
            let act = Activation::LeakyRelu(0.01);
            let run = |bn: &BatchNorm, ours: bool| {
                let out = if ours {
                    let gate = gated.then_some(&se as &dyn Fn(Tensor<2>) -> Tensor<2>);
                    conv_bn_gate_add_act(x.clone(), &conv, bn, gate, residual.clone(), act)
                } else {
                    let h = bn.forward(conv.forward(x.clone()));
                    let h = match gated {
                        true => h.clone() * se(h.mean_dims(&[2, 3, 4]).reshape([n, cout])).reshape([n, cout, 1, 1, 1]),
                        false => h,
                    };
                    act.on_tensor(h + residual.clone())
                };
                let grads = (out.clone() * r.clone()).sum().backward();
                let grad = |t: Tensor<1>| floats(t.grad(&grads).expect("a gradient"));
                let linear = |t: Tensor<2>| t.grad(&grads).map(floats).unwrap_or_default();
                [
                    floats(out),
                    floats(x.grad(&grads).expect("dL/dx")),
                    floats(conv.weight.val().grad(&grads).expect("dL/dw")),
                    grad(bn.gamma.val()),
                    grad(bn.beta.val()),
                    linear(squeeze.weight.val()),
                    linear(excite.weight.val()),
                    floats(residual.grad(&grads).expect("dL/dresidual")),
                    floats(bn.running_mean.value_sync()),
                    floats(bn.running_var.value_sync()),
                ]
            };
            let (ours, burns) = (run(&make_bn(), true), run(&make_bn(), false));
            let names = [
                "output",
                "dL/dx",
                "dL/dw",
                "dL/dγ",
                "dL/dβ",
                "dL/dsqueeze",
                "dL/dexcite",
                "dL/dresidual",
                "running mean",
                "running variance",
            ];
            super::assert_close(&names, &ours, &burns, 1e-4, &format!("{shape:?} gated {gated}"));
        }
    }
}
