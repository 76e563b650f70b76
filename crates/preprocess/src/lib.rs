//! The stages between a CT on disk and the tensor a network sees, and back again.
//!
//! Each stage is a plain function from data to data that carries the grid (affine)
//! along, and each returns what is needed to undo it exactly, so predicted labels land
//! on the input's own grid:
//!
//! 1. [`reorient`] to the model's orientation (axis permutation/flip, exact) ->
//!    [`Reorientation::undo`];
//! 2. [`resample_image`] onto [`grid_with_spacing`] (trilinear) -> back with
//!    [`resample_argmax`] on class probabilities, or [`resample_nearest`] on labels;
//! 3. [`Intensity::apply`]: clip to a HU window and scale (no inverse needed);
//! 4. [`body_window`] / [`pad_to_multiple`] give a [`Window`] that crops/pads ->
//!    [`Window::undo`].
//!
//! Voxel (i, j, k) is a voxel *centre* (NIfTI); see [`resample`] for how new grids are
//! placed and what happens at the border.

pub mod augment;
mod error;
mod intensity;
mod orientation;
pub mod region;
pub mod resample;
pub mod resize;
mod slices;
mod window;
pub mod zoom;

pub use error::Error;
pub use intensity::Intensity;
pub use orientation::{reorient, Orientation, Reorientation};
pub use resample::{grid_with_spacing, resample_argmax, resample_image, resample_nearest};
pub use window::{body_window, pad_to_multiple, BodyCrop, Window};
