//! The agent's portable core.
//!
//! Everything here is safe, `no_std` + `alloc` Rust that runs the same on the
//! host (where it is unit-tested and fuzzed) and inside the guest. The modules
//! follow the order in which a build uses them:
//!
//! - [`proto`]: the framed protocol spoken with the (untrusted) loader.
//! - [`exec`]: the `Exec` request (one program in a fresh sandbox), checked and capped.
//! - [`nix`]: Nix semantics — ATerm derivations, store paths, NAR, hashing.
//! - [`sandbox`]: the builder's world — in-memory file system, ELF, syscalls.
//! - [`sha256`]: SHA-256, with the block function the arch layer chose at boot (SHA-NI or portable).
//! - [`aes`]: AES-256-GCM for SEV-SNP guest messages, with the block cipher the arch layer chose
//!   at boot (AES-NI or portable).
//! - [`statement`]: what the agent attests to.
//! - [`tee`]: SEV-SNP and TDX — the encodings of their guest interfaces and the attesters.
//!
//! Hardware access (`unsafe`) lives only in the firmware binary's `arch` layer.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

/// The agent's version, carried in Hello frames and in every statement.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod aes;
pub mod btree;
pub mod build;
pub mod channel;
pub mod exec;
pub mod logring;
pub mod proto;
pub mod nix;
pub mod statement;
pub mod sandbox;
pub mod sha256;
pub mod tee;
pub mod virtio;
