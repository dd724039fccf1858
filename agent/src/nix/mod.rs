//! Nix semantics, bit for bit as Nix 2.8 has them: the agent computes every hash and store path
//! in its statement itself, from bytes it holds.
//!
//! - [`base32`]: Nix's base-32 (`nix32`) encoding.
//! - [`hash`]: hash algorithms and the textual forms Nix prints and parses.
//! - [`store_path`]: store path syntax and `makeStorePath` (output, source, text, fixed-output).
//! - [`derivation`]: the ATerm `.drv` format, `hashDerivationModulo`, output and `.drv` paths.
//! - [`nar`]: NAR serialisation and a strict streaming parser.
//! - [`refs`]: scanning output bytes for references to store paths.
pub mod base32;
pub mod derivation;
pub mod hash;
pub mod nar;
pub mod refs;
pub mod store_path;
