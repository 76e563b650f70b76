use std::path::PathBuf;

use voxseg_volume::GridError;

/// A problem with a DICOM folder or file: always names it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: ErrorKind) -> Error {
        Error { path: path.into(), kind }
    }
}

/// What is wrong. Every variant is an input problem except `Io` on output and `Write`.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot access: {0}")]
    Io(#[from] std::io::Error),
    #[error("no DICOM files in this folder")]
    NoDicom,
    #[error("not a readable DICOM file: {0}")]
    Unreadable(String),
    #[error("attribute {name} is missing or invalid{}", value.as_deref().map(|v| format!(" ({v:?})")).unwrap_or_default())]
    BadAttribute { name: &'static str, value: Option<String> },
    #[error("{count} CT series in this folder; choose one with --series UID: {list}")]
    SeveralSeries { count: usize, list: String },
    #[error("no series {uid} in this folder; it holds: {list}")]
    SeriesNotFound { uid: String, list: String },
    #[error("series {uid} has modality {modality}, not CT")]
    NotCt { uid: String, modality: String },
    #[error("series {uid} has {count} slice(s); a volume needs at least 2")]
    TooFewSlices { uid: String, count: usize },
    #[error("slices differ in {what}: {detail}")]
    Inconsistent { what: &'static str, detail: String },
    #[error("{a} and {b} lie at the same position ({position_mm:.3} mm along the slice normal)")]
    DuplicatePosition { a: String, b: String, position_mm: f64 },
    #[error("about {missing} slice(s) missing between {a} and {b}: a gap of {gap_mm:.3} mm where slices are {spacing_mm:.3} mm apart")]
    MissingSlices { a: String, b: String, gap_mm: f64, spacing_mm: f64, missing: usize },
    #[error("uneven slice spacing: {a} to {b} is {gap_mm:.3} mm where slices are {spacing_mm:.3} mm apart")]
    UnevenSpacing { a: String, b: String, gap_mm: f64, spacing_mm: f64 },
    #[error(
        "slices are stacked {degrees:.2} degrees off their normal (gantry tilt or a sheared stack); resample it first"
    )]
    GantryTilt { degrees: f64 },
    #[error("cannot decode pixel data in transfer syntax {uid} ({name}): {reason}")]
    Undecodable { uid: String, name: String, reason: String },
    #[error("unsupported pixel format: {0}")]
    PixelFormat(String),
    #[error("invalid geometry: {0}")]
    Geometry(#[from] GridError),
    #[error("cannot write DICOM: {0}")]
    Write(String),
}
