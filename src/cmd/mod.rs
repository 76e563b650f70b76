//! One module per subcommand: its clap arguments and its `run`.

pub mod batch;
pub mod batch_merge;
pub mod bench;
pub mod compare;
pub mod evaluate;
pub mod import;
pub mod inspect;
pub mod measure;
pub mod segment;
pub mod train;
