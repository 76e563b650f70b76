//! The DeepVoxNet-style multi-pathway U-Net of the KU Leuven whole-liver model
//! (Tang et al., Eur J Nucl Med Mol Imaging 2020; pyliverlesionseg 0.3, Apache-2.0),
//! written from its description (models/liver-ct-kul/README.md), not its code.
//!
//! Levels joined by max-pooling by 3; per level a (3,3,1) and a (3,3,3) convolution,
//! each but the first preceded by parameter-free instance normalisation and
//! LeakyReLU; "linear" upsampling (repeat x3, then a 3x3x3 mean, stride 1, no
//! padding: 2 voxels lost); skips centre-cropped and put first; sigmoid head. The
//! output is 13 voxels smaller than the input on every side.
//!
//! Tensors are `[N, C, i, j, k]` with kernel axes along i, j, k as in the weights.

use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::PaddingConfig3d;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::kernels::{cat_centre_cropped, conv_bn_act, instance_norm_act, max_pool, repeat_box_mean, Activation};

#[derive(Config, Debug, PartialEq)]
pub struct MultipathUnetConfig {
    /// `[first, second]` convolution widths per level, finest first.
    #[config(default = "vec![[20, 40], [40, 80], [80, 160], [160, 160]]")]
    pub widths: Vec<[usize; 2]>,
    /// Pooling and upsampling factor.
    #[config(default = 3)]
    pub pool: usize,
    #[config(default = 0.01)]
    pub negative_slope: f64,
    /// Added to the standard deviation in instance normalisation.
    #[config(default = 1e-7)]
    pub norm_epsilon: f64,
}

#[derive(Module, Debug)]
pub struct MultipathUnet {
    pub down: Vec<Vec<Conv3d>>,
    pub up: Vec<Vec<Conv3d>>,
    pub head: Conv3d,
    pub pool: usize,
    pub slope: f64,
    pub epsilon: f64,
}

fn conv(cin: usize, cout: usize, k: [usize; 3], device: &Device) -> Conv3d {
    Conv3dConfig::new([cin, cout], k).with_padding(PaddingConfig3d::Explicit(k[0] / 2, k[1] / 2, k[2] / 2)).init(device)
}

impl MultipathUnetConfig {
    pub fn init(&self, device: &Device) -> MultipathUnet {
        let (flat, cube) = ([3, 3, 1], [3, 3, 3]);
        let last = self.widths.len() - 1;
        let mut cin = 1;
        let down = self
            .widths
            .iter()
            .enumerate()
            .map(|(l, &[a, b])| {
                let convs = vec![conv(cin, a, if l == last { cube } else { flat }, device), conv(a, b, cube, device)];
                cin = b;
                convs
            })
            .collect();
        let mut below = self.widths[last][1];
        let mut up: Vec<Vec<Conv3d>> = (0..last)
            .rev()
            .map(|l| {
                let [a, skip] = self.widths[l];
                let convs = vec![conv(skip + below, skip, cube, device), conv(skip, a, flat, device)];
                below = a;
                convs
            })
            .collect();
        up.reverse();
        MultipathUnet {
            down,
            up,
            head: conv(self.widths[0][0], 1, [1, 1, 1], device),
            pool: self.pool,
            slope: self.negative_slope,
            epsilon: self.norm_epsilon,
        }
    }
}

impl MultipathUnet {
    /// Multiply-accumulates of the convolutions in one forward pass on a
    /// `[1, 1, i, j, k]` segment (each side a multiple of pool^(levels-1)).
    pub fn macs(&self, segment: [usize; 3]) -> u64 {
        let conv = |c: &Conv3d, side: [usize; 3]| {
            c.weight.dims().iter().product::<usize>() as u64 * side.iter().product::<usize>() as u64
        };
        let mut total = 0;
        let mut side = segment;
        for (level, convs) in self.down.iter().enumerate() {
            if level > 0 {
                side = side.map(|n| n / self.pool);
            }
            total += convs.iter().map(|c| conv(c, side)).sum::<u64>();
        }
        for convs in self.up.iter().rev() {
            side = side.map(|n| n * self.pool - (self.pool - 1));
            total += convs.iter().map(|c| conv(c, side)).sum::<u64>();
        }
        total + conv(&self.head, side)
    }

    /// The float type the network computes in (f32, or half with `--precision`).
    pub fn dtype(&self) -> burn::tensor::DType {
        self.head.weight.val().dtype()
    }

    /// Voxels lost on each side between input and output.
    pub fn margin(&self) -> usize {
        // Each upsampling loses pool - 1 voxels, and earlier losses scale with it.
        (0..self.up.len()).fold(0, |lost, _| lost * self.pool + self.pool - 1) / 2
    }

    /// Instance normalisation over the whole segment per channel, then LeakyReLU.
    fn norm(&self, x: Tensor<5>) -> Tensor<5> {
        instance_norm_act(x, self.epsilon, Activation::LeakyRelu(self.slope as f32))
    }

    /// `[N, 1, i, j, k]` (each side a multiple of pool^(levels-1)) -> P(liver),
    /// `margin()` voxels smaller on every side.
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        let mut x = input;
        let mut skips = Vec::new();
        for (level, convs) in self.down.iter().enumerate() {
            if level > 0 {
                x = self.norm(max_pool(x, self.pool));
            }
            for (j, c) in convs.iter().enumerate() {
                if j > 0 {
                    x = self.norm(x);
                }
                x = conv_bn_act(x, c, None, Activation::Identity);
            }
            skips.push(x.clone());
        }
        for level in (0..self.up.len()).rev() {
            // Each voxel repeated `pool` times per axis, then a `pool`^3 mean (stride 1,
            // no padding); the skip centre-cropped to that size in front.
            x = cat_centre_cropped(skips[level].clone(), repeat_box_mean(x, self.pool));
            for c in &self.up[level] {
                x = conv_bn_act(self.norm(x), c, None, Activation::Identity);
            }
        }
        sigmoid(conv_bn_act(self.norm(x), &self.head, None, Activation::Identity))
    }
}
