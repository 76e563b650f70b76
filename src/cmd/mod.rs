//! One module per subcommand: its clap arguments and its `run`.

pub mod batch;
pub mod batch_merge;
pub mod bench;
pub mod compare;
pub mod evaluate;
pub mod import;
pub mod inspect;
pub mod measure;
pub mod radiomics;
pub mod report;
pub mod segment;
pub mod train;

use anyhow::{bail, Context, Result};
use voxseg::model::{DeviceChoice, Precision};

/// Where the network runs; one definition for every subcommand that runs it.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto, cpu, gpu (wgpu: Vulkan, Metal, DX12) or cuda (builds with the `cuda`
    /// feature; needs the NVIDIA driver). auto takes CUDA where built in and a driver is
    /// there, else a hardware wgpu adapter, else the CPU, and says which it passed over.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// CPU threads for the network and voxseg's own parallel stages [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl DeviceArgs {
    /// Sizes rayon's global pool, which burn's CPU backend, its GEMMs and voxseg's own
    /// stages all run on, then gives the device choice. Call once, before any work.
    pub fn apply(&self) -> Result<DeviceChoice> {
        if let Some(n) = self.threads {
            if n == 0 {
                bail!("--threads must be at least 1");
            }
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("setting the number of CPU threads")?;
        }
        Ok(self.device)
    }
}

/// The network's float type; one definition for `segment`, `batch` and `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// f32, f16 or bf16. The weights are read in f32 and cast once, at load. On a GPU
    /// that has the type (CUDA; wgpu where the driver offers it), weights, input and
    /// activations are all in it (burn's reductions accumulate in f32). On the CPU, and
    /// on a GPU without the type (bf16 on Vulkan, lavapipe included), the arithmetic
    /// stays f32 and only the weights are rounded to the type: a note says so, and it is
    /// no faster. Agreement with f32 is measured in the README.
    #[arg(long, default_value = "f32", value_name = "TYPE")]
    pub precision: Precision,
}
