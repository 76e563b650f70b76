use voxseg_volume::{FileError, GridError};

/// A problem with a DICOM folder or file: always names it (the same shape as
/// voxseg-volume's NIfTI errors, with DICOM's own kinds).
pub type Error = FileError<ErrorKind>;

/// What is wrong. Every variant is an input problem except `Io` on output and `Write`.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot access: {0}")]
    Io(#[from] std::io::Error),
    #[error("no DICOM images in this folder or its subfolders ({skipped} other file(s) skipped)")]
    NoDicom { skipped: usize },
    #[error("not a readable DICOM file: {0}")]
    Unreadable(String),
    #[error("attribute {name} is missing or invalid{}", value.as_deref().map(|v| format!(" ({v:?})")).unwrap_or_default())]
    BadAttribute { name: &'static str, value: Option<String> },
    #[error(
        "{count} CT series in this folder; choose one by its UID or key (`segment --series KEY`, or a `series` column in a batch case list): {list}"
    )]
    SeveralSeries { count: usize, list: String },
    #[error("no series {key} in this folder; it holds: {list}")]
    SeriesNotFound { key: String, list: String },
    #[error("series {key} has modality {modality}, not CT")]
    NotCt { key: String, modality: String },
    #[error("series {key} has {count} slice(s); a volume needs at least 2")]
    TooFewSlices { key: String, count: usize },
    #[error(
        "{count} files without a SeriesInstanceUID (grouped as {key}) share patient, frame of reference, series number and description, size, orientation and spacing, yet repeat slice positions: two or more stacks nothing tells apart. Candidates: {candidates}. Move each stack to a folder of its own"
    )]
    Ambiguous { key: String, count: usize, candidates: String },
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
