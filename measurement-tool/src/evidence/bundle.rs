//! The evidence bundle (`evidence.json`) the loader writes next to a build's outputs and
//! `measurement-tool verify` checks: the exact statement bytes, the attestation kind, the report
//! or quote, and what verifies it (certificates, collateral, the launch parameters the
//! measurement depends on).
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "nix-attested-build-evidence/v1";
/// Put in every bundle made without a TEE, where nobody can miss it.
pub const UNATTESTED_WARNING: &str =
    "UNATTESTED: made without a TEE; nothing in this bundle proves where or how the build ran";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// "none", "sev-snp" or "tdx".
    pub attestation: String,
    /// Present (and equal to `UNATTESTED_WARNING`) exactly when `attestation` is "none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The statement's exact bytes, base64.
    pub statement: String,
    /// SNP report or TDX quote, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// SNP: VCEK (DER, base64) and AMD cert_chain (PEM), when the host provided them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcek: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain: Option<String>,
    /// TDX: collateral JSON (dcap-qvl format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collateral: Option<serde_json::Value>,
    /// `none` only: SHA-512 of the statement (hex), as the agent computed it — the REPORT_DATA a
    /// TEE would have signed. Unsigned: it catches a statement altered by accident or by a tool
    /// that does not recompute it, and proves nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_report_data: Option<String>,
    /// SNP launch parameters the measurement depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    /// The host stack the loader ran on (QEMU and kernel versions), as the loader saw it:
    /// unsigned and untrusted, it only helps explain a measurement that differs (a downstream
    /// QEMU or KVM can lay out the launch differently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostStack>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostStack {
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    /// The host kernel's release (/proc/sys/kernel/osrelease).
    pub kernel: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub vcpus: u32,
    pub vcpu_type: String,
    pub guest_features: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Bundle {
    /// A bundle for a build made without a TEE.
    pub fn unattested(statement: &[u8]) -> Bundle {
        Bundle {
            format: FORMAT.into(),
            attestation: "none".into(),
            warning: Some(UNATTESTED_WARNING.into()),
            statement: b64().encode(statement),
            report: None,
            vcek: None,
            cert_chain: None,
            collateral: None,
            unsigned_report_data: Some(hex::encode(<sha2::Sha512 as sha2::Digest>::digest(statement))),
            launch: None,
            host: None,
        }
    }

    /// A bundle for an SEV-SNP report: the VCEK (or VLEK) DER and the ASK+ARK PEM chain when the
    /// host supplied them (else the verifier must be given them: AMD KDS serves both).
    pub fn snp(statement: &[u8], report: &[u8], vek_der: Option<&[u8]>, cert_chain_pem: Option<String>, launch: Launch) -> Bundle {
        Bundle {
            format: FORMAT.into(),
            attestation: "sev-snp".into(),
            warning: None,
            statement: b64().encode(statement),
            report: Some(b64().encode(report)),
            vcek: vek_der.map(|d| b64().encode(d)),
            cert_chain: cert_chain_pem,
            collateral: None,
            unsigned_report_data: None,
            launch: Some(launch),
            host: None,
        }
    }

    /// A bundle for a TDX quote, with its collateral when the caller has it.
    pub fn tdx(statement: &[u8], quote: &[u8], collateral: Option<serde_json::Value>) -> Bundle {
        Bundle {
            format: FORMAT.into(),
            attestation: "tdx".into(),
            warning: None,
            statement: b64().encode(statement),
            report: Some(b64().encode(quote)),
            vcek: None,
            cert_chain: None,
            collateral,
            unsigned_report_data: None,
            launch: None,
            host: None,
        }
    }

    /// A DER certificate as PEM.
    pub fn pem(der: &[u8]) -> String {
        let body = b64().encode(der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    pub fn statement_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        b64().decode(&self.statement)
    }

    pub fn report_bytes(&self) -> Option<Result<Vec<u8>, base64::DecodeError>> {
        self.report.as_ref().map(|r| b64().decode(r))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable")
    }
}

/// Checks that a statement's inputs and outputs form a closed set: every reference the agent
/// recorded — of each output (`subject[].annotations.references`) and of each input
/// (`resolvedDependencies[].annotations.references`) — is one of them. Fails closed: a
/// statement without input references (made before the agent recorded them) is refused too.
/// The agent refuses a build whose inputs are not closed; this catches a statement that claims
/// otherwise. Returns the first gap as the error.
pub fn check_statement_closure(st: &serde_json::Value) -> Result<(), String> {
    let subjects = st["subject"].as_array().ok_or("statement without subjects")?;
    let inputs = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().ok_or("statement without resolvedDependencies")?;
    let mut known = std::collections::BTreeSet::new();
    for e in subjects.iter().chain(inputs) {
        known.insert(e["name"].as_str().ok_or("an entry without a name")?);
    }
    for e in subjects.iter().chain(inputs) {
        let name = e["name"].as_str().unwrap_or_default();
        let refs = e["annotations"]["references"].as_array().ok_or_else(|| format!("{name}: no references recorded"))?;
        for r in refs {
            let r = r.as_str().ok_or_else(|| format!("{name}: a reference that is not a string"))?;
            if !known.contains(r) {
                return Err(format!("{name} refers to {r}, which is neither an input nor an output of the build"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(input_refs: Option<&[&str]>, output_refs: &[&str]) -> serde_json::Value {
        let mut input = serde_json::json!({ "name": "/nix/store/a-in", "digest": { "sha256": "00" } });
        if let Some(r) = input_refs {
            input["annotations"] = serde_json::json!({ "references": r });
        }
        serde_json::json!({
            "subject": [{ "name": "/nix/store/b-out", "digest": { "sha256": "00" }, "annotations": { "output": "out", "references": output_refs } }],
            "predicate": { "buildDefinition": { "resolvedDependencies": [input] } }
        })
    }

    #[test]
    fn references_must_stay_inside_the_inputs_and_outputs() {
        assert_eq!(check_statement_closure(&statement(Some(&["/nix/store/a-in"]), &["/nix/store/a-in", "/nix/store/b-out"])), Ok(()));
        let e = check_statement_closure(&statement(Some(&["/nix/store/c-missing"]), &[])).unwrap_err();
        assert_eq!(e, "/nix/store/a-in refers to /nix/store/c-missing, which is neither an input nor an output of the build");
        assert!(check_statement_closure(&statement(Some(&[]), &["/nix/store/c-missing"])).is_err());
        // Fails closed: no input references recorded.
        assert_eq!(check_statement_closure(&statement(None, &[])), Err("/nix/store/a-in: no references recorded".into()));
    }
}
