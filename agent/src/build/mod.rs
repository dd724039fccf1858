//! One build, from request to statement: the order the agent runs a derivation in.
//!
//! - [`env`]: the builder's argv, environment and `/build` files, as Nix's sandbox makes them.
//! - [`checks`]: Nix's output checks (`allowedReferences` and friends) on what the build produced.
pub mod checks;
pub mod env;
pub mod json;
