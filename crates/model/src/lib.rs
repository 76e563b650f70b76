//! The network side of voxseg: AnatomyNet as a burn `Module` with a serialisable
//! `Config`, model packages (`models/<name>/model.toml` + burnpack weights), PyTorch
//! import, device choice (wgpu, CUDA or burn's CPU backend), precision and whole-volume or tiled
//! inference.

mod anatomynet;
mod device;
mod error;
mod infer;
mod kernels;
mod loss;
mod multipath;
pub mod nnunet;
mod package;
mod precision;
mod trainer;
mod weights;

pub use anatomynet::{AnatomyNet, AnatomyNetConfig};
pub use device::{cpu, select, DeviceChoice, Selected};
pub use error::Error;
pub use infer::{
    device_memory_peak, predict, predict_multipath, reset_device_memory_peak, Options, Prediction, Timings,
};
pub use loss::{one_hot, segmentation_loss, LossConfig};
pub use multipath::{MultipathUnet, MultipathUnetConfig};
pub use package::{
    Cleanup, Label, ModelPackage, Net, Network, OrganDice, Preprocess, Provenance, QcRules, TrainingRecord,
};
pub use precision::{Plan, Precision};
pub use trainer::{Sample, Trainer};
pub use weights::{import_pytorch, load, load_multipath, load_multipath_bytes, load_nnunet, load_nnunet_parts, save};

pub use burn::tensor::{Device, Tensor, TensorData};
