//! AnatomyNet (Zhu et al., Med Phys 2019) as in the reference PyTorch code: one
//! stride-2 stem, squeeze-and-excitation residual blocks at half resolution, a
//! decoder that concatenates skips without upsampling, one transposed convolution
//! back to full resolution joined with the input, and a softmax head.
//! Every width and count is a [`AnatomyNetConfig`] field (DESIGN.md, "The network").

use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, sigmoid, softmax};

use crate::kernels::{conv_bn_act, conv_bn_gate_add_act, conv_transpose, Activation};

/// The network's shape. The defaults are AnatomyNet's (about 0.73 M parameters).
#[derive(Config, Debug, PartialEq)]
pub struct AnatomyNetConfig {
    /// Output classes, background included.
    pub classes: usize,
    /// Channels after the stride-2 stem.
    #[config(default = 28)]
    pub stem_channels: usize,
    /// Output channels of each encoder stage.
    #[config(default = "vec![30, 32, 34]")]
    pub encoder_channels: Vec<usize>,
    /// SE-residual blocks per encoder stage.
    #[config(default = 2)]
    pub blocks_per_stage: usize,
    /// SE reduction of encoder and decoder refinement blocks.
    #[config(default = 15)]
    pub reduction: usize,
    /// SE reduction of the decoder blocks that take the concatenated skip.
    #[config(default = 16)]
    pub fuse_reduction: usize,
    /// Channels of the transposed convolution back to full resolution.
    #[config(default = 14)]
    pub up_channels: usize,
    #[config(default = 0.01)]
    pub negative_slope: f64,
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
}

fn conv3(cin: usize, cout: usize, stride: usize, bias: bool, device: &Device) -> Conv3d {
    Conv3dConfig::new([cin, cout], [3, 3, 3])
        .with_stride([stride; 3])
        .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
        .with_bias(bias)
        .init(device)
}

/// Convolution + batch norm (the stem, and residual shortcuts).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv3d,
    pub bn: BatchNorm,
}

impl ConvBn {
    pub fn forward(&self, x: Tensor<5>, act: Activation) -> Tensor<5> {
        conv_bn_act(x, &self.conv, Some(&self.bn), act)
    }
}

/// Squeeze-and-excitation: global mean -> Linear -> LeakyReLU -> Linear -> sigmoid
/// -> a factor per channel (applied with the residual add, [`conv_bn_gate_add_act`]).
#[derive(Module, Debug)]
pub struct SeGate {
    pub squeeze: Linear,
    pub excite: Linear,
    pub slope: f64,
}

impl SeGate {
    /// The per-channel factors `[n, c]` from the channel means `[n, c]`.
    pub fn of_means(&self, pooled: Tensor<2>) -> Tensor<2> {
        let hidden = leaky_relu(self.squeeze.forward(pooled), self.slope);
        sigmoid(self.excite.forward(hidden))
    }
}

/// conv3 -> BN -> LeakyReLU -> conv3 -> BN -> [SE] -> + shortcut -> LeakyReLU.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub conv1: Conv3d,
    pub bn1: BatchNorm,
    pub conv2: Conv3d,
    pub bn2: BatchNorm,
    pub se: Option<SeGate>,
    /// Present when the channel count changes.
    pub shortcut: Option<ConvBn>,
    pub slope: f64,
}

impl ResBlock {
    /// `shortcut_kernel` is 1 in SE blocks and 3 in the up block (as in the reference).
    fn new(
        cin: usize,
        cout: usize,
        reduction: Option<usize>,
        shortcut_kernel: usize,
        c: &AnatomyNetConfig,
        device: &Device,
    ) -> ResBlock {
        let bn = |ch| BatchNormConfig::new(ch).with_epsilon(c.bn_epsilon).init(device);
        let se = reduction.map(|r| {
            let hidden = (cout / r).max(1);
            SeGate {
                squeeze: LinearConfig::new(cout, hidden).init(device),
                excite: LinearConfig::new(hidden, cout).init(device),
                slope: c.negative_slope,
            }
        });
        let shortcut = (cin != cout).then(|| {
            let pad = shortcut_kernel / 2;
            ConvBn {
                conv: Conv3dConfig::new([cin, cout], [shortcut_kernel; 3])
                    .with_padding(PaddingConfig3d::Explicit(pad, pad, pad))
                    .with_bias(false)
                    .init(device),
                bn: bn(cout),
            }
        });
        ResBlock {
            conv1: conv3(cin, cout, 1, false, device),
            bn1: bn(cout),
            conv2: conv3(cout, cout, 1, false, device),
            bn2: bn(cout),
            se,
            shortcut,
            slope: c.negative_slope,
        }
    }

    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let residual = match &self.shortcut {
            Some(s) => s.forward(x.clone(), Activation::Identity),
            None => x.clone(),
        };
        let act = Activation::LeakyRelu(self.slope as f32);
        let h = conv_bn_act(x, &self.conv1, Some(&self.bn1), act);
        let gate = self.se.as_ref().map(|se| move |means| se.of_means(means));
        let gate = gate.as_ref().map(|g| g as &dyn Fn(Tensor<2>) -> Tensor<2>);
        conv_bn_gate_add_act(h, &self.conv2, &self.bn2, gate, residual, act)
    }
}

/// One decoder step: concatenate the skip, fuse (SE-res, `fuse_reduction`), refine.
#[derive(Module, Debug)]
pub struct DecoderStage {
    pub fuse: ResBlock,
    pub refine: ResBlock,
}

/// Back to full resolution: transposed conv, concatenate the input volume, residual
/// block without SE whose shortcut is a 3x3x3 conv.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub deconv: ConvTranspose3d,
    pub res: ResBlock,
}

#[derive(Module, Debug)]
pub struct AnatomyNet {
    pub stem: ConvBn,
    pub encoder: Vec<Vec<ResBlock>>,
    pub decoder: Vec<DecoderStage>,
    pub up: UpBlock,
    pub head: Conv3d,
    pub slope: f64,
}

impl AnatomyNetConfig {
    /// A network with this shape and freshly initialised weights.
    pub fn init(&self, device: &Device) -> AnatomyNet {
        let stem = ConvBn {
            conv: conv3(1, self.stem_channels, 2, false, device),
            bn: BatchNormConfig::new(self.stem_channels).with_epsilon(self.bn_epsilon).init(device),
        };
        let mut widths = vec![self.stem_channels];
        let encoder = self
            .encoder_channels
            .iter()
            .map(|&out| {
                let cin = *widths.last().unwrap();
                widths.push(out);
                (0..self.blocks_per_stage)
                    .map(|b| ResBlock::new(if b == 0 { cin } else { out }, out, Some(self.reduction), 1, self, device))
                    .collect()
            })
            .collect();
        // widths = [stem, e1, .., en]; decoder step t joins the running output with
        // the skip widths[n - 1 - t] and keeps the skip's width.
        let n = self.encoder_channels.len();
        let mut current = widths[n];
        let decoder = (0..n)
            .map(|t| {
                let skip = widths[n - 1 - t];
                let stage = DecoderStage {
                    fuse: ResBlock::new(current + skip, skip, Some(self.fuse_reduction), 1, self, device),
                    refine: ResBlock::new(skip, skip, Some(self.reduction), 1, self, device),
                };
                current = skip;
                stage
            })
            .collect();
        let up = UpBlock {
            deconv: ConvTranspose3dConfig::new([current, self.up_channels], [2, 2, 2])
                .with_stride([2, 2, 2])
                .init(device),
            res: ResBlock::new(self.up_channels + 1, self.up_channels, None, 3, self, device),
        };
        AnatomyNet {
            stem,
            encoder,
            decoder,
            up,
            head: conv3(self.up_channels, self.classes, 1, true, device),
            slope: self.negative_slope,
        }
    }

    /// Multiply-accumulates of one forward pass on a `[1, 1, d, h, w]` input
    /// (convolutions, transposed convolution and SE linears).
    pub fn macs(&self, [d, h, w]: [usize; 3]) -> u64 {
        let full = (d * h * w) as u64;
        let half = ((d / 2) * (h / 2) * (w / 2)) as u64;
        let conv = |cin: usize, cout: usize, k: u64, voxels: u64| (cin * cout) as u64 * k * voxels;
        let block = |cin: usize, cout: usize, r: Option<usize>, sk: u64, voxels: u64| {
            let se = r.map_or(0, |r| 2 * (cout * (cout / r).max(1)) as u64);
            conv(cin, cout, 27, voxels)
                + conv(cout, cout, 27, voxels)
                + se
                + if cin != cout { conv(cin, cout, sk, voxels) } else { 0 }
        };
        let mut total = conv(1, self.stem_channels, 27, half);
        let mut widths = vec![self.stem_channels];
        for &out in &self.encoder_channels {
            let cin = *widths.last().unwrap();
            for b in 0..self.blocks_per_stage {
                total += block(if b == 0 { cin } else { out }, out, Some(self.reduction), 1, half);
            }
            widths.push(out);
        }
        let n = self.encoder_channels.len();
        let mut current = widths[n];
        for t in 0..n {
            let skip = widths[n - 1 - t];
            total += block(current + skip, skip, Some(self.fuse_reduction), 1, half);
            total += block(skip, skip, Some(self.reduction), 1, half);
            current = skip;
        }
        total += conv(current, self.up_channels, 8, half);
        total += block(self.up_channels + 1, self.up_channels, None, 27, full);
        total + conv(self.up_channels, self.classes, 27, full)
    }

    /// The reference PyTorch implementation's state-dict names -> this module's
    /// paths, as (regex, replacement) applied in order to every key. BatchNorm
    /// `weight`/`bias` -> `gamma`/`beta` and Linear transposes are burn-store's
    /// PyTorch adapter; `num_batches_tracked` is not a parameter and is ignored.
    pub fn pytorch_key_table(&self) -> Vec<(String, String)> {
        let n = self.encoder_channels.len();
        let mut table =
            vec![(r"^conv1\.".to_string(), "stem.conv.".to_string()), (r"^bn1\.".into(), "stem.bn.".into())];
        for s in 0..n {
            table.push((format!(r"^layer{}\.", s + 1), format!("encoder.{s}.")));
        }
        for t in 0..n {
            table.push((format!(r"^layer{}\.", n + 1 + 2 * t), format!("decoder.{t}.fuse.")));
            table.push((format!(r"^layer{}\.0\.", n + 2 + 2 * t), format!("decoder.{t}.refine.")));
        }
        table.push((format!(r"^layer{}\.deconv1\.", 3 * n + 1), "up.deconv.".into()));
        table.push((format!(r"^layer{}\.", 3 * n + 1), "up.res.".into()));
        table.push((format!(r"^layer{}\.0\.", 3 * n + 2), "head.".into()));
        for (from, to) in [
            ("se.fc.0", "se.squeeze"),
            ("se.fc.2", "se.excite"),
            ("downsample.0", "shortcut.conv"),
            ("downsample.1", "shortcut.bn"),
        ] {
            table.push((format!(r"\.{}\.", from.replace('.', r"\.")), format!(".{to}.")));
        }
        table
    }
}

impl AnatomyNet {
    /// `[N, 1, D, H, W]` (D, H, W even) -> class probabilities `[N, K, D, H, W]`.
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        softmax(self.logits(input), 1)
    }

    /// The head's output before the softmax (what training losses take).
    pub fn logits(&self, input: Tensor<5>) -> Tensor<5> {
        let trunk = self.trunk(input.clone());
        self.tail_logits(trunk, input)
    }

    /// Everything at half resolution: stem, encoder, decoder. Its squeeze-and-
    /// excitation gates pool over the whole volume, so it must see all of it.
    pub fn trunk(&self, input: Tensor<5>) -> Tensor<5> {
        let stem = self.stem.forward(input, Activation::LeakyRelu(self.slope as f32));
        let mut skips = vec![stem.clone()];
        let mut h = stem;
        for stage in &self.encoder {
            for block in stage {
                h = block.forward(h);
            }
            skips.push(h.clone());
        }
        let n = self.encoder.len();
        for (t, stage) in self.decoder.iter().enumerate() {
            h = Tensor::cat(vec![h, skips[n - 1 - t].clone()], 1);
            h = stage.refine.forward(stage.fuse.forward(h));
        }
        h
    }

    /// Back to full resolution and the head: only local operations (a 2x2x2
    /// transposed conv, then three 3x3x3 convs), so it can run on slabs of the trunk's
    /// output with a 3-voxel halo and give exactly the whole-volume answer.
    pub fn tail_logits(&self, trunk: Tensor<5>, input: Tensor<5>) -> Tensor<5> {
        let up = Tensor::cat(vec![conv_transpose(trunk, &self.up.deconv), input], 1);
        conv_bn_act(self.up.res.forward(up), &self.head, None, Activation::Identity)
    }

    /// The float type the network computes in (f32, or half with `--precision`).
    pub fn dtype(&self) -> burn::tensor::DType {
        self.head.weight.val().dtype()
    }

    /// Full-resolution voxels a tail slab needs beyond its own on each side.
    pub const TAIL_HALO: usize = 3;
}
