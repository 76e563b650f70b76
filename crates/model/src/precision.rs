//! `--precision f32|f16|bf16`: the float type of the weights, and of the arithmetic
//! where the device has it.
//!
//! The weights are always read in f32 and cast once, at load. What then runs depends
//! on the device, and [`Plan`] says which:
//!
//! - **GPU (wgpu, CUDA) with the type**: weights, input and every activation are in
//!   the half type; burn's kernels run in it (its reductions, the squeeze-and-excitation
//!   and instance-norm means included, accumulate in f32). The probabilities come back
//!   as f32 for the argmax and resampling.
//! - **CPU, or a GPU without the type** (bf16 on most Vulkan drivers, lavapipe
//!   included): voxseg's CPU kernels and those GPUs compute in f32, so the weights are
//!   rounded to the half type and stored back as f32. That measures what the rounded
//!   weights change, not half-precision arithmetic, and is no faster; the plan's
//!   `compute` says `f32` and a note says why.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::package::Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("precision is f32, f16 or bf16 (got {s:?})")),
        }
    }
}

/// What a requested precision becomes on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub requested: Precision,
    /// The type the weights were rounded to.
    pub weights: Precision,
    /// The type the network's arithmetic and activations are in.
    pub compute: Precision,
    /// Set when `compute` is not what was requested, saying why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Plan {
    /// `requested` on `device`: the half type end to end where the device computes in
    /// it, else rounded weights with f32 arithmetic.
    pub fn new(requested: Precision, device: &Device) -> Plan {
        let f32_plan = |note: Option<String>| Plan { requested, weights: requested, compute: Precision::F32, note };
        if requested == Precision::F32 {
            return f32_plan(None);
        }
        if crate::kernels::on_cpu(device) {
            return f32_plan(Some(format!(
                "the CPU kernels compute in f32: weights rounded to {}, arithmetic in f32",
                requested.name()
            )));
        }
        if !device.supports_dtype(requested.dtype()) {
            return f32_plan(Some(format!(
                "this device has no {} arithmetic: weights rounded to {}, arithmetic in f32",
                requested.name(),
                requested.name()
            )));
        }
        Plan { requested, weights: requested, compute: requested, note: None }
    }
}

/// Casts every float parameter and buffer (BatchNorm's running statistics too).
struct Cast {
    weights: FloatDType,
    compute: FloatDType,
}

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (weights, compute) = (self.weights, self.compute);
        // A cast to the tensor's own type returns it unchanged.
        param.map(|t| t.cast(weights).cast(compute))
    }
}

impl Plan {
    /// `net` with its weights cast as this plan says.
    pub fn apply<M: Module>(&self, net: M) -> M {
        if self.weights == Precision::F32 {
            return net;
        }
        net.map(&mut Cast { weights: self.weights.dtype(), compute: self.compute.dtype() })
    }
}

impl Net {
    /// This network with its weights cast as `plan` says (once, at load).
    pub fn at_precision(self, plan: &Plan) -> Net {
        match self {
            Net::AnatomyNet(net) => Net::AnatomyNet(Box::new(plan.apply(*net))),
            Net::MultipathUnet(net) => Net::MultipathUnet(Box::new(plan.apply(*net))),
            Net::Nnunet(nets) => Net::Nnunet(nets.into_iter().map(|net| plan.apply(net)).collect()),
        }
    }
}
