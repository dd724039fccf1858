//! Checking an evidence bundle (`evidence.json`) against a policy: what `measurement-tool
//! verify` and `loader build --import` both run, so the two cannot disagree.
//!
//! Order: the format; a pinned measurement for TEE evidence (refused up front when there is
//! none, with how to get one); what the bundle lacks to be checked (named with where to get it);
//! the SNP launch parameters the host recorded against the verifier's allow-list; the signature
//! and chain; the policy (measurement, REPORT_DATA = SHA-512 of the statement, the platform
//! checks); the statement naming the bundle's kind. `none` evidence is refused unless the caller
//! allows it, and is then reported as not attested.
use super::bundle::{Bundle, FORMAT, UNATTESTED_WARNING};
use super::policy::{Policy, SnpLaunch, HOW_TO_PIN};
use super::{snp, tdx, Rejection};
use crate::measure;
use sha2::{Digest, Sha512};

/// Why a bundle is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// A check failed.
    #[error("REJECTED: {0}")]
    Rejected(#[from] Rejection),
    /// The bundle lacks what its check needs; the text says where to get it.
    #[error("{0}")]
    Missing(String),
}

fn reject(check: &'static str, expected: impl Into<String>, actual: impl Into<String>) -> BundleError {
    BundleError::Rejected(Rejection::new(check, expected, actual))
}

/// What the caller supplies besides the bundle; each replaces the bundle's own.
#[derive(Clone, Debug, Default)]
pub struct Supplied {
    /// SNP: VCEK or VLEK, DER or PEM.
    pub vcek: Option<Vec<u8>>,
    /// SNP: ASK (or ASVK) and ARK, PEM.
    pub cert_chain: Option<Vec<u8>>,
    /// TDX: dcap-qvl collateral JSON.
    pub collateral: Option<Vec<u8>>,
    /// TDX: the time the collateral must be valid at (Unix seconds).
    pub now: u64,
    /// Accept `none` evidence (reported as not attested).
    pub allow_unattested: bool,
}

/// One subject of the statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub path: String,
    pub output: String,
    pub nar_sha256: String,
}

/// What a bundle that passed says.
#[derive(Clone, Debug)]
pub struct Checked {
    /// "none", "sev-snp" or "tdx".
    pub attestation: String,
    /// A TEE signed the statement (false for `none`).
    pub attested: bool,
    /// The launch measurement the TEE reported (hex).
    pub measurement: Option<String>,
    /// The measurement was one of the expected ones (false with `any_measurement` or `none`).
    pub measurement_pinned: bool,
    pub statement: Vec<u8>,
    pub report_data: [u8; 64],
    pub derivation: String,
    pub subjects: Vec<Subject>,
}

impl Checked {
    /// Everything holds: attested, by the expected code.
    pub fn verified(&self) -> bool {
        self.attested && self.measurement_pinned
    }
}

/// The expected launch measurements of an agent image for a kind of evidence: the SNP launch
/// digest for every allowed launch (vCPUs, vCPU type, SEV_FEATURES: the verifier's, never the
/// bundle's), or the TDX MRTD.
pub fn expected_measurements(image: &[u8], attestation: &str, launch: &SnpLaunch) -> Result<Vec<String>, measure::MeasureError> {
    match attestation {
        "sev-snp" => launch
            .combinations()
            .into_iter()
            .map(|(n, t, f)| Ok(hex::encode(measure::snp::launch_digest(image, n, measure::snp::vcpu_signature(&t)?, f)?)))
            .collect(),
        "tdx" => Ok(vec![hex::encode(measure::tdx::mrtd(image)?)]),
        _ => Ok(Vec::new()),
    }
}

fn b64(v: &str, name: &str) -> Result<Vec<u8>, BundleError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(v).map_err(|e| reject("bundle", format!("{name} in base64"), e.to_string()))
}

/// Checks `bundle` against `policy` (whose `report_data` is set here to SHA-512 of the
/// statement). The caller checks the outputs it holds against [`Checked::subjects`].
pub fn check_bundle(bundle: &Bundle, policy: &Policy, s: &Supplied) -> Result<Checked, BundleError> {
    if bundle.format != FORMAT {
        return Err(reject("format", FORMAT, bundle.format.clone()));
    }
    let statement = b64(&bundle.statement, "statement")?;
    let report_data: [u8; 64] = Sha512::digest(&statement).into();
    let mut policy = policy.clone();
    policy.report_data = Some(hex::encode(report_data));
    if matches!(bundle.attestation.as_str(), "sev-snp" | "tdx") && !policy.measurement_pinned() && !policy.any_measurement {
        return Err(reject("measurement", HOW_TO_PIN, "none given"));
    }
    let (attested, measurement) = match bundle.attestation.as_str() {
        "none" => {
            if bundle.warning.as_deref() != Some(UNATTESTED_WARNING) {
                return Err(reject("warning", "an unattested bundle carries the unattested warning", "no warning"));
            }
            if !s.allow_unattested {
                return Err(reject("attestation", "sev-snp or tdx", "none (made without a TEE; pass --allow-unattested to accept it anyway)"));
            }
            if bundle.unsigned_report_data.as_deref() != Some(hex::encode(report_data).as_str()) {
                return Err(reject("statement", "SHA-512 equal to the bundle's unsigned_report_data", "another hash (the statement or the bundle was altered)"));
            }
            (false, None)
        }
        "sev-snp" => {
            let raw = b64(bundle.report.as_deref().ok_or_else(|| reject("report", "an SNP report in an sev-snp bundle", "none"))?, "report")?;
            // What is missing is said before anything is checked, with where to get it.
            let parsed = snp::Report::parse(&raw)?;
            let vlek = parsed.signing_key == 1;
            let vcek = match (&s.vcek, &bundle.vcek) {
                (Some(v), _) => v.clone(),
                (None, Some(v)) => b64(v, "vcek")?,
                (None, None) if vlek => return Err(BundleError::Missing("the report is signed by a VLEK (a cloud provider's key) and the bundle has none: pass it as --vcek FILE".into())),
                (None, None) => {
                    return Err(BundleError::Missing(match snp::kds_vcek_url(&parsed) {
                        Some(url) => format!("the bundle has no VCEK (the host supplied no certificates with the report): fetch it from AMD KDS, {url}, and pass --vcek FILE"),
                        None => "the bundle has no VCEK (the host supplied no certificates with the report), and the report's CHIP_ID is masked, so AMD KDS cannot serve it by chip: pass it as --vcek FILE".into(),
                    }))
                }
            };
            let chain_pem = s.cert_chain.clone().or_else(|| bundle.cert_chain.as_ref().map(|p| p.as_bytes().to_vec()));
            if vlek && chain_pem.is_none() {
                return Err(BundleError::Missing(format!(
                    "the report is signed by a VLEK, which chains to AMD's root through the ASVK, not the pinned ASK: pass that chain (ASVK, ARK) as --cert-chain FILE ({})",
                    snp::kds_chain_url(&parsed)
                )));
            }
            let chain = chain_pem.as_deref().map(snp::parse_cert_chain).transpose()?;
            // The launch parameters the host recorded: compared with the allow-list, never used.
            let l = bundle.launch.as_ref().ok_or_else(|| reject("launch parameters", "recorded in an sev-snp bundle", "none"))?;
            policy.snp_launch.check(l.vcpus, &l.vcpu_type, l.guest_features)?;
            let v = snp::verify(&raw, &vcek, chain.as_ref())?;
            snp::check_policy(&v, &policy)?;
            (true, Some(hex::encode(v.report.measurement)))
        }
        "tdx" => {
            let raw = b64(bundle.report.as_deref().ok_or_else(|| reject("report", "a TDX quote in a tdx bundle", "none"))?, "report")?;
            let coll_bytes = match (&s.collateral, &bundle.collateral) {
                (Some(c), _) => c.clone(),
                (None, Some(c)) => c.to_string().into_bytes(),
                (None, None) => return Err(BundleError::Missing("the bundle has no TDX collateral (the loader has no network; it carries collateral only when given `loader build --tdx-collateral`): pass --collateral FILE (dcap-qvl JSON, e.g. from the host's PCCS or Intel PCS)".into())),
            };
            let coll = tdx::parse_collateral(&coll_bytes)?;
            let v = tdx::verify(&raw, &coll, s.now)?;
            tdx::check_policy(&v, &policy)?;
            (true, Some(hex::encode(v.mr_td)))
        }
        other => return Err(reject("attestation", "none, sev-snp or tdx", other.to_string())),
    };

    // The statement names the platform the agent found at boot; the evidence must be that one.
    let st: serde_json::Value = serde_json::from_slice(&statement).map_err(|e| reject("statement", "JSON", e.to_string()))?;
    let named = st["predicate"]["runDetails"]["metadata"]["attestation"].as_str().unwrap_or("(nothing)");
    if named != bundle.attestation {
        return Err(reject("attestation", format!("{named} (the kind the statement names)"), bundle.attestation.clone()));
    }
    // The inputs and outputs are a closed set under the references the agent recorded.
    if let Err(gap) = super::bundle::check_statement_closure(&st) {
        return Err(reject("statement", "inputs and outputs closed under their recorded references", gap));
    }
    let subjects = st["subject"]
        .as_array()
        .ok_or_else(|| reject("statement", "subjects", "none"))?
        .iter()
        .map(|s| Subject {
            path: s["name"].as_str().unwrap_or_default().to_string(),
            output: s["annotations"]["output"].as_str().unwrap_or_default().to_string(),
            nar_sha256: s["digest"]["sha256"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let derivation = st["predicate"]["buildDefinition"]["externalParameters"]["derivation"].as_str().unwrap_or_default().to_string();
    Ok(Checked {
        attestation: bundle.attestation.clone(),
        attested,
        measurement_pinned: attested && policy.measurement_pinned(),
        measurement,
        statement,
        report_data,
        derivation,
        subjects,
    })
}
