//! voxseg's pipeline API: one function per stage, shared by the CLI and the tests.

pub mod inspect;

pub use voxseg_volume as volume;
