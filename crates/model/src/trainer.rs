//! The network side of training: AnatomyNet on an autodiff device, one Adam step
//! per patch, and a checkpoint (weights + optimizer state) that a killed run
//! resumes from. Which patches, when, and what to log is the caller's business.

use std::path::Path;

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::anatomynet::{AnatomyNet, AnatomyNetConfig};
use crate::infer::{predict, Options};
use crate::loss::{one_hot, segmentation_loss, LossConfig};
use crate::Error;

pub struct Trainer {
    net: AnatomyNet,
    optim: ModuleOptimizer,
    /// The autodiff device the weights train on.
    device: Device,
    /// The same device without autodiff, for validation passes.
    plain: Device,
}

/// One patch: network-ready intensities and labels, `[nx, ny, nz]`, x fastest.
pub struct Sample<'a> {
    pub image: &'a [f32],
    pub labels: &'a [u16],
    pub shape: [usize; 3],
    /// Per class (background first): whether this case's annotation covers it.
    pub annotated: &'a [bool],
}

impl Trainer {
    /// Fresh weights, drawn reproducibly from `seed`.
    pub fn new(config: &AnatomyNetConfig, device: &Device, seed: u64) -> Trainer {
        keep_freed_memory();
        let plain = device.clone();
        let device = plain.clone().autodiff();
        device.seed(seed);
        let net = config.init(&device);
        Trainer { net, optim: optimizer(), device, plain }
    }

    /// Weights and optimizer state from a checkpoint written by [`Trainer::save`].
    pub fn resume(config: &AnatomyNetConfig, device: &Device, dir: &Path) -> Result<Trainer, Error> {
        keep_freed_memory();
        let plain = device.clone();
        let device = plain.clone().autodiff();
        let net = crate::weights::load(config, &dir.join("model.bpk"), &device)?;
        let path = dir.join("optimizer.bpk");
        let optim = optimizer()
            .load(&path)
            .map_err(|e| Error::WeightsUnreadable { path: path.clone(), reason: e.to_string() })?;
        Ok(Trainer { net, optim, device, plain })
    }

    /// Forward, loss, backward and one Adam step at learning rate `lr`; returns the loss.
    pub fn step(&mut self, sample: &Sample, lr: f64, loss: &LossConfig) -> f32 {
        let [nx, ny, nz] = sample.shape;
        let x = Tensor::<5>::from_data(TensorData::new(sample.image.to_vec(), [1, 1, nz, ny, nx]), &self.device);
        let target = one_hot(sample.labels, [1, nz, ny, nx], sample.annotated.len(), &self.device);
        let value = segmentation_loss(self.net.logits(x), target, sample.annotated, loss);
        let grads = GradientsParams::from_grads(value.backward(), &self.net);
        self.net = self.optim.step(lr, self.net.clone(), grads);
        value.into_data().convert::<f32>().try_to_vec::<f32>().expect("a float loss")[0]
    }

    /// The current network's labels on a whole volume (inference mode: batch norm
    /// uses its running statistics).
    pub fn predict(&self, input: &[f32], shape: [usize; 3]) -> Result<Vec<u16>, Error> {
        Ok(predict(&self.net.valid(), input, shape, &self.plain, &Options::default())?.labels)
    }

    /// The weights in inference form (what a model package holds).
    pub fn network(&self) -> AnatomyNet {
        self.net.valid()
    }

    /// Writes `dir/model.bpk` and `dir/optimizer.bpk`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        crate::weights::save(&self.net.valid(), &dir.join("model.bpk"))?;
        let path = dir.join("optimizer.bpk");
        let tmp = dir.join(format!(".optimizer.bpk.tmp{}", std::process::id()));
        self.optim
            .save(&tmp)
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()))
            .map_err(|reason| Error::WeightsUnwritable { path, reason })
    }
}

/// Asks glibc's allocator to keep freed memory for the next allocation instead of
/// handing it back to the kernel. A training step allocates and frees the same few
/// hundred MB of activations and gradients every step, in blocks above glibc's largest
/// mmap threshold (32 MiB), so each came back as fresh pages: a fault and a clearing per
/// 4 KiB, 8% of a step's CPU time on a 96^3 AnatomyNet patch. The process's peak memory
/// is unchanged (what is kept is what the previous step used). Other C libraries keep
/// their own behaviour.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only sets allocator parameters; both values are in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn optimizer() -> ModuleOptimizer {
    AdamConfig::new().with_epsilon(1e-8).init()
}
