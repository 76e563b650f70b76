use std::path::PathBuf;

/// Why a model could not be loaded, imported or run. Every variant names the file
/// (and the tensor, where one is at fault).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read the model package: {reason}", path.display())]
    Package { path: PathBuf, reason: String },
    #[error("{}: weights do not match the package's network: {}", path.display(), problems.join("; "))]
    WeightsMismatch { path: PathBuf, problems: Vec<String> },
    #[error("{}: cannot read weights: {reason}", path.display())]
    WeightsUnreadable { path: PathBuf, reason: String },
    #[error("{}: cannot write weights: {reason}", path.display())]
    WeightsUnwritable { path: PathBuf, reason: String },
    #[error("input shape {shape:?} is not usable: {reason}")]
    BadInput { shape: [usize; 3], reason: String },
    #[error("no {wanted} device: {reason}")]
    NoDevice { wanted: &'static str, reason: String },
}
