//! Verifying hardware evidence on the host (the guest never verifies anything):
//!
//! - [`snp`]: SEV-SNP attestation reports — signature by the VCEK/VLEK, the VCEK → ASK → ARK
//!   chain up to AMD's pinned roots, the VCEK's TCB extensions.
//! - [`tdx`]: TDX DCAP quotes — verified with `dcap-qvl` against collateral from files.
//! - [`policy`]: what the verifier requires of a verified report (measurement, debug, VMPL, TCB…);
//!   strict by default, relaxed only by an explicit file.
//! - [`check`]: an evidence bundle against a policy (`verify` and `loader build --import`).
//! - [`reference`]: the reference measurements `make agent` writes for an image.
/// The `sev` crate, re-exported for callers handling certificates.
pub use sev;
pub mod bundle;
pub mod check;
/// The statement's derivation against the `.drv` files a verifier holds (resolved derivations).
pub mod derivation;
pub mod policy;
pub mod reference;
pub mod snp;
pub mod tdx;

/// A failed check: which one, what was expected, what was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{check}: expected {expected}, got {actual}")]
pub struct Rejection {
    pub check: &'static str,
    pub expected: String,
    pub actual: String,
}

impl Rejection {
    pub fn new(check: &'static str, expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Rejection { check, expected: expected.into(), actual: actual.into() }
    }
}
