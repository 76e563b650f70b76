//! One module per subcommand: its clap arguments and its `run`.

pub mod batch_merge;
pub mod compare;
pub mod inspect;
pub mod measure;
