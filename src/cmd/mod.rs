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
use voxseg::model::DeviceChoice;

/// Where the network runs; one definition for every subcommand that runs it.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto (a real GPU if there is one), cpu or gpu.
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
