//! nnU-Net v2's two CT networks as dynamic_network_architectures builds them from the
//! plans: `PlainConvUNet` and `ResidualEncoderUNet` (conv -> instance norm ->
//! LeakyReLU blocks, strided convolutions down, transposed convolutions up, skips
//! concatenated after the upsampled features). Only the last segmentation layer runs:
//! the deep-supervision heads serve training.
//!
//! Tensors are `[N, C, d0, d1, d2]` in the network's own axis order (the plans'
//! `transpose_forward` applied), as are kernel sizes and strides.

use std::collections::HashMap;

use burn::module::Param;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{InstanceNorm, InstanceNormConfig, PaddingConfig3d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::{conv_bn_act, conv_transpose, gate_add_act, instance_norm_affine_act, Activation};

/// Which of dynamic_network_architectures' U-Nets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnetClass {
    PlainConvUNet,
    ResidualEncoderUNet,
}

/// The network's shape, from the plans (`architecture.arch_kwargs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnunetConfig {
    pub class: UnetClass,
    pub input_channels: usize,
    /// Output channels, background included.
    pub classes: usize,
    pub features_per_stage: Vec<usize>,
    pub kernel_sizes: Vec<[usize; 3]>,
    pub strides: Vec<[usize; 3]>,
    /// Convolutions (PlainConvUNet) or residual blocks (ResidualEncoderUNet) per
    /// encoder stage.
    pub encoder_depth: Vec<usize>,
    /// Convolutions per decoder stage (one fewer stage than the encoder).
    pub decoder_depth: Vec<usize>,
    pub conv_bias: bool,
    pub norm_epsilon: f64,
    pub negative_slope: f64,
}

impl NnunetConfig {
    /// Checks the lists agree with the number of stages.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.features_per_stage.len();
        if n < 2 {
            return Err(format!("{n} stages: a U-Net needs at least 2"));
        }
        let lists = [
            ("kernel_sizes", self.kernel_sizes.len(), n),
            ("strides", self.strides.len(), n),
            ("encoder_depth", self.encoder_depth.len(), n),
            ("decoder_depth", self.decoder_depth.len(), n - 1),
        ];
        for (name, len, want) in lists {
            if len != want {
                return Err(format!("{name} has {len} entries, the network has {n} stages (wants {want})"));
            }
        }
        if self.kernel_sizes.iter().flatten().any(|k| k % 2 == 0) {
            return Err(format!("kernel sizes {:?} must be odd", self.kernel_sizes));
        }
        if self.strides.iter().flatten().any(|&s| s == 0) || self.classes < 2 || self.input_channels == 0 {
            return Err("strides, classes and input channels must be positive".into());
        }
        Ok(())
    }

    /// Multiply-accumulates of one forward pass over `shape` (convolutions and
    /// transposed convolutions; the norms and activations are not counted).
    pub fn macs(&self, shape: [usize; 3]) -> u64 {
        let voxels = |s: [usize; 3]| s.iter().product::<usize>() as u64;
        let taps = |k: [usize; 3]| k.iter().product::<usize>() as u64;
        let f = &self.features_per_stage;
        let mut total = 0u64;
        let mut s = shape;
        let mut cin = self.input_channels;
        let mut sizes = Vec::new();
        if self.class == UnetClass::ResidualEncoderUNet {
            total += (cin * f[0]) as u64 * taps(self.kernel_sizes[0]) * voxels(s);
            cin = f[0];
        }
        for (stage, &width) in f.iter().enumerate() {
            for j in 0..self.encoder_depth[stage] {
                if j == 0 {
                    s = std::array::from_fn(|a| s[a].div_ceil(self.strides[stage][a]));
                }
                let k = taps(self.kernel_sizes[stage]);
                total += (cin * width) as u64 * k * voxels(s);
                if self.class == UnetClass::ResidualEncoderUNet {
                    total += (width * width) as u64 * k * voxels(s);
                    if cin != width {
                        total += (cin * width) as u64 * voxels(s);
                    }
                }
                cin = width;
            }
            sizes.push(s);
        }
        let n = f.len();
        for up in 1..n {
            let (below, skip) = (f[n - up], f[n - up - 1]);
            let low = sizes[n - up];
            total += (below * skip) as u64 * taps(self.strides[n - up]) * voxels(low);
            let s = sizes[n - up - 1];
            let k = taps(self.kernel_sizes[n - up - 1]);
            let mut c = 2 * skip;
            for _ in 0..self.decoder_depth[up - 1] {
                total += (c * skip) as u64 * k * voxels(s);
                c = skip;
            }
        }
        total + (f[0] * self.classes) as u64 * voxels(sizes[0])
    }

    /// The product of the strides per axis: every input side must be a multiple of it.
    pub fn total_stride(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.strides.iter().map(|s| s[a]).product())
    }
}

/// Convolution, instance norm (affine), and (where the block has one) LeakyReLU.
#[derive(Module, Debug)]
pub struct ConvNorm {
    pub conv: Conv3d,
    pub norm: InstanceNorm,
}

/// ResNet-D basic block: `act(norm(conv(act(norm(conv(x))))) + skip(x))`; the skip
/// average-pools by the block's stride and projects with a 1x1x1 convolution + norm
/// when the width changes.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub conv1: ConvNorm,
    pub conv2: ConvNorm,
    pub skip: Option<ConvNorm>,
}

#[derive(Module, Debug)]
pub struct EncoderStage {
    /// PlainConvUNet: the stage's convolutions, the first strided.
    pub convs: Vec<ConvNorm>,
    /// ResidualEncoderUNet: its residual blocks, the first strided.
    pub blocks: Vec<ResBlock>,
}

#[derive(Module, Debug)]
pub struct DecoderStage {
    pub up: ConvTranspose3d,
    pub convs: Vec<ConvNorm>,
}

#[derive(Module, Debug)]
pub struct NnunetNet {
    /// ResidualEncoderUNet's stem (one conv block at full resolution).
    pub stem: Option<ConvNorm>,
    pub encoder: Vec<EncoderStage>,
    pub decoder: Vec<DecoderStage>,
    /// The full-resolution segmentation layer (1x1x1, bias).
    pub seg: Conv3d,
    pub slope: f64,
}

/// The folds of one training folder, run together (their logits averaged).
#[derive(Module, Debug)]
pub struct NnunetEnsemble {
    pub folds: Vec<NnunetNet>,
}

fn conv(cin: usize, cout: usize, k: [usize; 3], stride: [usize; 3], bias: bool, device: &Device) -> Conv3d {
    Conv3dConfig::new([cin, cout], k)
        .with_stride(stride)
        .with_padding(PaddingConfig3d::Explicit((k[0] - 1) / 2, (k[1] - 1) / 2, (k[2] - 1) / 2))
        .with_bias(bias)
        .init(device)
}

impl NnunetConfig {
    fn conv_norm(
        &self,
        cin: usize,
        cout: usize,
        k: [usize; 3],
        stride: [usize; 3],
        bias: bool,
        device: &Device,
    ) -> ConvNorm {
        ConvNorm {
            conv: conv(cin, cout, k, stride, bias, device),
            norm: InstanceNormConfig::new(cout).with_epsilon(self.norm_epsilon).with_affine(true).init(device),
        }
    }

    /// The network with freshly initialised weights.
    pub fn init(&self, device: &Device) -> NnunetNet {
        let f = &self.features_per_stage;
        let b = self.conv_bias;
        let mut cin = self.input_channels;
        let stem = (self.class == UnetClass::ResidualEncoderUNet).then(|| {
            let stem = self.conv_norm(cin, f[0], self.kernel_sizes[0], [1; 3], b, device);
            cin = f[0];
            stem
        });
        let encoder = (0..f.len())
            .map(|s| {
                let (k, stride) = (self.kernel_sizes[s], self.strides[s]);
                let mut stage = EncoderStage { convs: vec![], blocks: vec![] };
                for j in 0..self.encoder_depth[s] {
                    let st = if j == 0 { stride } else { [1; 3] };
                    match self.class {
                        UnetClass::PlainConvUNet => stage.convs.push(self.conv_norm(cin, f[s], k, st, b, device)),
                        UnetClass::ResidualEncoderUNet => stage.blocks.push(ResBlock {
                            conv1: self.conv_norm(cin, f[s], k, st, b, device),
                            conv2: self.conv_norm(f[s], f[s], k, [1; 3], b, device),
                            skip: (cin != f[s]).then(|| self.conv_norm(cin, f[s], [1; 3], [1; 3], false, device)),
                        }),
                    }
                    cin = f[s];
                }
                stage
            })
            .collect();
        let n = f.len();
        let decoder = (1..n)
            .map(|s| {
                let (below, skip) = (f[n - s], f[n - s - 1]);
                let stride = self.strides[n - s];
                let up =
                    ConvTranspose3dConfig::new([below, skip], stride).with_stride(stride).with_bias(b).init(device);
                let mut cin = 2 * skip;
                let convs = (0..self.decoder_depth[s - 1])
                    .map(|_| {
                        let c = self.conv_norm(cin, skip, self.kernel_sizes[n - s - 1], [1; 3], b, device);
                        cin = skip;
                        c
                    })
                    .collect();
                DecoderStage { up, convs }
            })
            .collect();
        let seg = conv(f[0], self.classes, [1; 3], [1; 3], true, device);
        NnunetNet { stem, encoder, decoder, seg, slope: self.negative_slope }
    }
}

impl ConvNorm {
    fn forward(&self, x: Tensor<5>, act: Activation) -> Tensor<5> {
        let y = conv_bn_act(x, &self.conv, None, Activation::Identity);
        instance_norm_affine_act(y, &self.norm, act)
    }
}

/// Average pooling with kernel = stride (PyTorch's `AvgPool3d(s, s)`, floor mode).
fn avg_pool(x: Tensor<5>, s: [usize; 3]) -> Tensor<5> {
    let [n, c, d, h, w] = x.dims();
    let (d2, h2, w2) = (d / s[0], h / s[1], w / s[2]);
    let x = x.slice([0..n, 0..c, 0..d2 * s[0], 0..h2 * s[1], 0..w2 * s[2]]);
    let x: Tensor<8> = x.reshape([n, c, d2, s[0], h2, s[1], w2, s[2]]);
    x.mean_dim(7).mean_dim(5).mean_dim(3).reshape([n, c, d2, h2, w2])
}

impl ResBlock {
    fn forward(&self, x: Tensor<5>, act: Activation) -> Tensor<5> {
        let stride = self.conv1.conv.stride;
        let pooled = if stride == [1; 3] { x.clone() } else { avg_pool(x.clone(), stride) };
        let residual = match &self.skip {
            Some(skip) => skip.forward(pooled, Activation::Identity),
            None => pooled,
        };
        let h = self.conv2.forward(self.conv1.forward(x, act), Activation::Identity);
        gate_add_act(h, None, residual, act)
    }
}

impl NnunetNet {
    /// Logits `[N, classes, d0, d1, d2]`; every side a multiple of the total stride.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let act = Activation::LeakyRelu(self.slope as f32);
        let mut x = match &self.stem {
            Some(stem) => stem.forward(x, act),
            None => x,
        };
        let mut skips = Vec::with_capacity(self.encoder.len());
        for stage in &self.encoder {
            x = stage.convs.iter().fold(x, |x, c| c.forward(x, act));
            x = stage.blocks.iter().fold(x, |x, b| b.forward(x, act));
            skips.push(x.clone());
        }
        let mut low = skips.pop().expect("at least two stages");
        for stage in &self.decoder {
            let skip = skips.pop().expect("one skip per decoder stage");
            let up = conv_transpose(low, &stage.up);
            low = stage.convs.iter().fold(Tensor::cat(vec![up, skip], 1), |x, c| c.forward(x, act));
        }
        conv_bn_act(low, &self.seg, None, Activation::Identity)
    }
}

/// A state dict's tensors by name, as f32 with their shapes.
pub type StateDict = HashMap<String, (Vec<f32>, Vec<usize>)>;

/// Builds the network of `config` from a PyTorch state dict with
/// dynamic_network_architectures' key names. Every parameter must be there with its
/// exact shape; every tensor of the dict must be used, or be one of the known
/// duplicates (`all_modules.N`, the decoder's copy of the encoder) or a deep-supervision
/// head. The error lists every problem.
pub fn from_state_dict(config: &NnunetConfig, dict: &StateDict, device: &Device) -> Result<NnunetNet, Vec<String>> {
    let mut net = config.init(device);
    let mut used = std::collections::HashSet::new();
    let mut problems = Vec::new();
    let mut take = |name: String, shape: Vec<usize>| -> Option<TensorData> {
        match dict.get(&name) {
            None => {
                problems.push(format!("tensor {name} is missing"));
                None
            }
            Some((_, s)) if *s != shape => {
                problems.push(format!("tensor {name} has shape {s:?}, the network wants {shape:?}"));
                None
            }
            Some((v, s)) => {
                used.insert(name);
                Some(TensorData::new(v.clone(), s.clone()))
            }
        }
    };
    if let Some(stem) = net.stem.as_mut() {
        load_conv_norm(stem, "encoder.stem.convs.0.", &mut take, device);
    }
    for (s, stage) in net.encoder.iter_mut().enumerate() {
        for (j, c) in stage.convs.iter_mut().enumerate() {
            load_conv_norm(c, &format!("encoder.stages.{s}.0.convs.{j}."), &mut take, device);
        }
        for (j, b) in stage.blocks.iter_mut().enumerate() {
            let p = format!("encoder.stages.{s}.blocks.{j}.");
            load_conv_norm(&mut b.conv1, &format!("{p}conv1."), &mut take, device);
            load_conv_norm(&mut b.conv2, &format!("{p}conv2."), &mut take, device);
            if let Some(skip) = b.skip.as_mut() {
                // After the average pool when the block is strided.
                let i = usize::from(b.conv1.conv.stride != [1; 3]);
                load_conv_norm(skip, &format!("{p}skip.{i}."), &mut take, device);
            }
        }
    }
    for (s, stage) in net.decoder.iter_mut().enumerate() {
        let p = format!("decoder.transpconvs.{s}.");
        load_param(&mut stage.up.weight, format!("{p}weight"), &mut take, device);
        if let Some(bias) = stage.up.bias.as_mut() {
            load_param(bias, format!("{p}bias"), &mut take, device);
        }
        for (j, c) in stage.convs.iter_mut().enumerate() {
            load_conv_norm(c, &format!("decoder.stages.{s}.convs.{j}."), &mut take, device);
        }
    }
    let last = net.decoder.len() - 1;
    load_conv(&mut net.seg, &format!("decoder.seg_layers.{last}."), &mut take, device);
    for name in dict.keys() {
        let duplicate = name.contains(".all_modules.") || name.starts_with("decoder.encoder.");
        let deep_supervision = name.starts_with("decoder.seg_layers.");
        if !used.contains(name) && !duplicate && !deep_supervision {
            problems.push(format!("tensor {name} is not part of the network"));
        }
    }
    if problems.is_empty() {
        Ok(net)
    } else {
        problems.sort();
        Err(problems)
    }
}

fn load_param<const D: usize>(
    param: &mut Param<Tensor<D>>,
    name: String,
    take: &mut impl FnMut(String, Vec<usize>) -> Option<TensorData>,
    device: &Device,
) {
    let shape = param.dims().to_vec();
    if let Some(data) = take(name, shape) {
        *param = Param::from_tensor(Tensor::from_data(data, device));
    }
}

fn load_conv(
    conv: &mut Conv3d,
    prefix: &str,
    take: &mut impl FnMut(String, Vec<usize>) -> Option<TensorData>,
    device: &Device,
) {
    load_param(&mut conv.weight, format!("{prefix}weight"), take, device);
    if let Some(bias) = conv.bias.as_mut() {
        load_param(bias, format!("{prefix}bias"), take, device);
    }
}

fn load_conv_norm(
    c: &mut ConvNorm,
    prefix: &str,
    take: &mut impl FnMut(String, Vec<usize>) -> Option<TensorData>,
    device: &Device,
) {
    load_conv(&mut c.conv, &format!("{prefix}conv."), take, device);
    if let Some(g) = c.norm.gamma.as_mut() {
        load_param(g, format!("{prefix}norm.weight"), take, device);
    }
    if let Some(b) = c.norm.beta.as_mut() {
        load_param(b, format!("{prefix}norm.bias"), take, device);
    }
}
