//! The statement the agent attests: an in-toto Statement v1 with an SLSA provenance v1
//! predicate, serialised by hand into one canonical byte string (fixed key order, no spaces,
//! JSON string escaping), so REPORT_DATA = SHA-512(statement bytes) binds exactly these bytes.
//!
//! ```text
//! subject                 one per output: store path, NAR SHA-256, output name, references
//! buildDefinition         the .drv path and the SHA-256 of its ATerm; every input store path
//!                         with the NAR SHA-256 the agent computed while unpacking it and the
//!                         inputs it refers to
//! runDetails              the agent's version and the attestation kind
//! ```
use crate::nix::hash::hex;
use crate::proto::AttestationKind;
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha512};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://nix-attested-build.dev/agent/v1";

/// One output of the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub path: String,
    pub nar_sha256: [u8; 32],
    /// Store paths the output refers to (found by scanning its NAR), sorted.
    pub references: Vec<String>,
}

/// One input store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: String,
    pub nar_sha256: [u8; 32],
    /// The inputs it refers to (found by scanning its NAR; every store path it mentions was
    /// sent, or the build was refused), sorted: with them a verifier can check that the inputs
    /// are a closed set.
    pub references: Vec<String>,
}

/// Everything the statement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub drv_path: String,
    /// SHA-256 of the ATerm built: the `.drv`'s (`derivationDigest`), or for a resolved
    /// derivation the resolved ATerm's (`resolvedDerivationDigest`, docs/build.md).
    pub drv_sha256: [u8; 32],
    pub resolved: bool,
    pub outputs: Vec<Output>,
    pub inputs: Vec<Input>,
    pub agent_version: String,
    pub attestation: AttestationKind,
}

pub fn attestation_name(k: AttestationKind) -> &'static str {
    match k {
        AttestationKind::None => "none",
        AttestationKind::SevSnp => "sev-snp",
        AttestationKind::Tdx => "tdx",
    }
}

/// A JSON string literal (the same escaping as the structured-attrs printer).
fn string(out: &mut String, s: &str) {
    crate::build::json::dump_string(s, out);
}

fn digest(out: &mut String, sha256: &[u8; 32]) {
    out.push_str("{\"sha256\":");
    string(out, &hex(sha256));
    out.push('}');
}

impl Statement {
    /// The exact bytes that are attested.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(1024 + 200 * (self.inputs.len() + self.outputs.len()));
        s.push_str("{\"_type\":");
        string(&mut s, STATEMENT_TYPE);
        s.push_str(",\"subject\":[");
        for (i, o) in self.outputs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            string(&mut s, &o.path);
            s.push_str(",\"digest\":");
            digest(&mut s, &o.nar_sha256);
            s.push_str(",\"annotations\":{\"output\":");
            string(&mut s, &o.name);
            s.push_str(",\"references\":[");
            for (j, r) in o.references.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                string(&mut s, r);
            }
            s.push_str("]}}");
        }
        s.push_str("],\"predicateType\":");
        string(&mut s, PREDICATE_TYPE);
        s.push_str(",\"predicate\":{\"buildDefinition\":{\"buildType\":");
        string(&mut s, BUILD_TYPE);
        s.push_str(",\"externalParameters\":{\"derivation\":");
        string(&mut s, &self.drv_path);
        s.push_str(if self.resolved { ",\"resolvedDerivationDigest\":" } else { ",\"derivationDigest\":" });
        digest(&mut s, &self.drv_sha256);
        s.push_str("},\"resolvedDependencies\":[");
        for (i, d) in self.inputs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            string(&mut s, &d.path);
            s.push_str(",\"digest\":");
            digest(&mut s, &d.nar_sha256);
            s.push_str(",\"annotations\":{\"references\":[");
            for (j, r) in d.references.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                string(&mut s, r);
            }
            s.push_str("]}}");
        }
        s.push_str("]},\"runDetails\":{\"builder\":{\"id\":");
        string(&mut s, BUILD_TYPE);
        s.push_str(",\"version\":{\"agent\":");
        string(&mut s, &self.agent_version);
        s.push_str("}},\"metadata\":{\"attestation\":");
        string(&mut s, attestation_name(self.attestation));
        s.push_str("}}}}");
        s
    }
}

/// REPORT_DATA for a statement: SHA-512 of its exact bytes.
pub fn report_data(statement_bytes: &[u8]) -> [u8; 64] {
    Sha512::digest(statement_bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn stable_bytes_and_escaping() {
        let st = Statement {
            drv_path: "/nix/store/aaaa-x.drv".into(),
            drv_sha256: [1; 32],
            resolved: false,
            outputs: vec![Output { name: "out".into(), path: "/nix/store/bbbb-x".into(), nar_sha256: [2; 32], references: vec!["/nix/store/cccc-\"y\"".into()] }],
            inputs: vec![Input { path: "/nix/store/dddd-z".into(), nar_sha256: [3; 32], references: vec!["/nix/store/dddd-z".into()] }],
            agent_version: "0.1.0".into(),
            attestation: AttestationKind::None,
        };
        let j = st.to_json();
        assert!(j.starts_with("{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{\"name\":\"/nix/store/bbbb-x\""));
        assert!(j.contains("\"references\":[\"/nix/store/cccc-\\\"y\\\"\"]"));
        assert!(j.contains(&"02".repeat(32)));
        assert!(j.contains("\"resolvedDependencies\":[{\"name\":\"/nix/store/dddd-z\",\"digest\":{\"sha256\":\"0303"));
        assert!(j.contains("},\"annotations\":{\"references\":[\"/nix/store/dddd-z\"]}}]},\"runDetails\""));
        assert!(j.ends_with("\"metadata\":{\"attestation\":\"none\"}}}}"));
        assert_eq!(j, st.clone().to_json());
        assert_eq!(report_data(j.as_bytes()).len(), 64);
        // A resolved derivation's digest is under another name: a verifier that only knows
        // `derivationDigest` finds none rather than a digest of something else.
        let r = Statement { resolved: true, ..st.clone() }.to_json();
        assert!(r.contains(&alloc::format!("\"resolvedDerivationDigest\":{{\"sha256\":\"{}\"}}", "01".repeat(32))));
        assert!(!r.contains("\"derivationDigest\""));
        let _ = "x".to_string();
    }
}
