//! One build, from request to statement: the order the agent runs a derivation in.
//!
//! - [`env`]: the builder's argv, environment and `/build` files, as Nix's sandbox makes them.
pub mod env;
pub mod json;
