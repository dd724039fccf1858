//! One build, from request to statement: the order the agent runs a derivation in.
//!
//! - [`plan`]: the request checked and worked out: `.drv` and output paths recomputed, the input
//!   closure and fixed-output inputs checked.
//! - [`env`]: the builder's argv, environment and `/build` files, as Nix's sandbox makes them.
//! - [`checks`]: Nix's output checks (`allowedReferences` and friends) on what the build produced.
pub mod checks;
pub mod env;
pub mod json;
pub mod plan;
