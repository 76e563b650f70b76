//! voxseg's pipeline API: one function per stage, shared by the CLI and the tests.

pub mod batch;
pub mod dataset;
pub mod evaluate;
pub mod inspect;
pub mod names;
pub mod preview;
pub mod qc;
pub mod radiomics_report;
pub mod report;
pub mod review;
mod rng;
pub mod segment;
pub mod train;

pub use voxseg_dicom as dicom;
pub use voxseg_model as model;
pub use voxseg_postprocess as postprocess;
pub use voxseg_preprocess as preprocess;
pub use voxseg_volume as volume;
