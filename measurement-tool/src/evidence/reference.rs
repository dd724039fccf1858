//! The reference measurements of an agent image: what `make agent` writes next to the image
//! (`target/reference-measurements.json`) and `measurement-tool verify` reads by default when
//! run from the checkout. Computed from the image's bytes with the verifier's pinned SNP launch
//! parameters (never from anything a host wrote), so it changes whenever the agent does.
use super::policy::SnpLaunch;
use crate::measure::{self, MeasureError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "nix-attested-build-reference/v1";
/// Where `make agent` writes it, relative to the checkout.
pub const DEFAULT_PATH: &str = "target/reference-measurements.json";
/// The image it describes, relative to the checkout.
pub const DEFAULT_IMAGE: &str = "target/agent.bin";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnpReference {
    pub vcpus: u32,
    pub vcpu_type: String,
    pub guest_features: String,
    pub launch_digest: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub format: String,
    /// SHA-256 of the image measured (hex).
    pub image_sha256: String,
    /// One SEV-SNP launch digest per allowed launch.
    pub sev_snp: Vec<SnpReference>,
    pub tdx_mrtd: String,
}

impl Reference {
    /// The reference measurements of `image` under the allowed SNP launches.
    pub fn compute(image: &[u8], launch: &SnpLaunch) -> Result<Reference, MeasureError> {
        let mut sev_snp = Vec::new();
        for (n, t, f) in launch.combinations() {
            let d = measure::snp::launch_digest(image, n, measure::snp::vcpu_signature(&t)?, f)?;
            sev_snp.push(SnpReference { vcpus: n, vcpu_type: t, guest_features: format!("{f:#x}"), launch_digest: hex::encode(d) });
        }
        Ok(Reference {
            format: FORMAT.into(),
            image_sha256: hex::encode(Sha256::digest(image)),
            sev_snp,
            tdx_mrtd: hex::encode(measure::tdx::mrtd(image)?),
        })
    }

    /// The expected measurements for a kind of evidence ("sev-snp", "tdx").
    pub fn measurements(&self, attestation: &str) -> Vec<String> {
        match attestation {
            "sev-snp" => self.sev_snp.iter().map(|s| s.launch_digest.clone()).collect(),
            "tdx" => vec![self.tdx_mrtd.clone()],
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable")
    }
}
