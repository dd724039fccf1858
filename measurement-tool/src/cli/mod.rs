//! One module per subcommand; each owns its clap arguments and its `run`.
pub mod digest;
pub mod nix;
pub mod measure;
pub mod verify_report;
pub mod verify;
pub mod reference;
pub mod verify_path;
