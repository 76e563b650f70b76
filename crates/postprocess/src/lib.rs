//! From a network's raw label map to organs a planner can use and numbers a
//! researcher can publish: connected components, clean-up, measurements and
//! agreement metrics, each checked against scipy / scikit-image / MedPy conventions
//! (fixtures from `scripts/make_postprocess_fixtures.py`).

mod cleanup;
mod compare;
mod components;
mod distance;
mod mc_table;
mod measure;
mod surface;

pub use cleanup::{bounding_boxes, clean, fill_holes, BoundingBox, Cleanup, CleanupReport};
pub use compare::{compare, Agreement};
pub use components::{Component, Components, Connectivity};
pub use distance::squared_edt;
pub use measure::{measure, Measurement};
pub use surface::surface_area_mm2;

/// Why two volumes cannot be used together.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("grids differ: labels are {labels}, the other image is {other}")]
    GridMismatch { labels: String, other: String },
}
