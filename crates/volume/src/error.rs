use std::path::PathBuf;

use crate::GridError;

/// A problem with one file or folder: always names it. `K` says what is wrong; each
/// reader has its own (NIfTI: [`ErrorKind`]; DICOM: `voxseg_dicom::ErrorKind`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct FileError<K> {
    pub path: PathBuf,
    pub kind: K,
}

impl<K> FileError<K> {
    pub fn new(path: impl Into<PathBuf>, kind: K) -> FileError<K> {
        FileError { path: path.into(), kind }
    }
}

/// A problem with a NIfTI file.
pub type Error = FileError<ErrorKind>;

/// What is wrong with a file.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot access file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    #[error("corrupt gzip data: {0}")]
    Gzip(String),
    #[error("truncated: the {what} needs {expected} bytes but the file holds only {got}")]
    Truncated { what: &'static str, expected: u64, got: u64 },
    #[error("invalid header: {0}")]
    BadHeader(String),
    #[error("unsupported NIfTI datatype code {0} (supported: u8, i8, u16, i16, u32, i32, u64, i64, f32, f64)")]
    UnsupportedDatatype(i16),
    #[error("expected a 3-D volume, found {0}")]
    NotThreeD(String),
    #[error("{voxels} voxels is over voxseg's limit of {limit} (MAX_VOXELS)")]
    TooLarge { voxels: u128, limit: u64 },
    #[error("invalid geometry: {0}")]
    Geometry(#[from] GridError),
    #[error("{count} of {total} voxels are not finite (NaN or infinite)")]
    NonFinite { count: usize, total: usize },
    #[error("not a label map: {0}")]
    NotLabels(String),
    #[error("grid {got} does not match the template header's grid {expected}")]
    GridMismatch { expected: String, got: String },
}
