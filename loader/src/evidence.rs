//! From the agent's Evidence frame to `evidence.json`.
//!
//! Two steps, kept apart so each can be tested on real hardware evidence (whose REPORT_DATA no
//! statement of ours can hash to):
//!
//! 1. [`check_binding`]: the REPORT_DATA the hardware signed must be SHA-512 of the statement's
//!    exact bytes (SNP: ATTESTATION_REPORT offset 0x50; TDX: the quote's TD report body + 520;
//!    `none`: the unsigned copy). The loader runs it before any output is renamed into place.
//! 2. [`assemble_bundle`]: the bundle `measurement-tool verify` checks — the report or quote, the
//!    host's SNP certificates (VCEK or VLEK as DER, ASK + ARK as AMD's PEM cert_chain), the SNP
//!    launch parameters, the TDX collateral the user gave — and notes on what is missing and
//!    where to get it.
//!
//! Signatures and chains are not checked here: the verifier does that against pinned vendor
//! roots, and the loader (untrusted by design) adds nothing to what it proves.
use crate::build::BuildError;
use crate::tee::TeeConfig;
use agent::proto::{AttestationKind, EvidencePayload};
use agent::statement::attestation_name;
use agent::tee::snp::{cert_guid, guid_string};
use measurement_tool::evidence::bundle::{Bundle, Launch};
use measurement_tool::evidence::{snp, tdx};
use std::path::Path;

/// A bundle and, in words for the user, what it lacks for offline verification and how to
/// supply it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    pub bundle: Bundle,
    pub notes: Vec<String>,
}

/// The SNP launch parameters the loader uses (`vm::qemu_command`: one vCPU, `-cpu` from
/// `tee.snp_cpu`; QEMU/KVM SNP guests run with SEV_FEATURES = SNPActive), recorded in the bundle.
/// The verifier only compares them with its own allow-list (the same constants,
/// `measurement_tool::evidence::policy`); it never measures with them.
pub fn snp_launch(tee: &TeeConfig) -> Launch {
    use measurement_tool::evidence::policy::{SNP_GUEST_FEATURES, SNP_VCPUS};
    Launch { vcpus: SNP_VCPUS, vcpu_type: tee.snp_cpu.clone(), guest_features: SNP_GUEST_FEATURES }
}

/// Reads a TDX collateral file and checks that it is dcap-qvl collateral JSON (what
/// `measurement-tool verify-report tdx --collateral` takes), so a wrong file is refused before
/// the VM starts rather than after the build.
pub fn load_collateral(path: &Path) -> Result<serde_json::Value, BuildError> {
    let err = |reason: String| BuildError::Collateral { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    tdx::parse_collateral(&bytes).map_err(|r| err(r.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
}

/// Checks that the evidence binds the statement: the REPORT_DATA it carries is SHA-512 of the
/// statement's exact bytes. Also refuses reports of the wrong shape and certificates with
/// anything but an SNP report.
pub fn check_binding(statement: &[u8], ev: &EvidencePayload) -> Result<(), BuildError> {
    let attestation = attestation_name(ev.kind);
    let bad = |reason: String| BuildError::BadReport { attestation, reason };
    if ev.kind != AttestationKind::SevSnp && !ev.certificates.is_empty() {
        return Err(bad(format!("{} certificates came with it (only SNP reports carry certificates)", ev.certificates.len())));
    }
    let found: Vec<u8> = match ev.kind {
        AttestationKind::None => {
            if ev.report.len() != 64 {
                return Err(bad(format!("the unsigned REPORT_DATA is {} bytes, not 64", ev.report.len())));
            }
            ev.report.clone()
        }
        AttestationKind::SevSnp => {
            use agent::tee::snp::{report::REPORT_DATA, REPORT_LEN};
            if ev.report.len() != REPORT_LEN {
                return Err(bad(format!("an SNP report is {REPORT_LEN} bytes, got {}", ev.report.len())));
            }
            ev.report[REPORT_DATA..REPORT_DATA + 64].to_vec()
        }
        AttestationKind::Tdx => tdx::quote_report_data(&ev.report).map_err(|r| bad(r.to_string()))?.to_vec(),
    };
    let expected = agent::statement::report_data(statement);
    if found != expected {
        return Err(BuildError::ReportData { attestation, expected: hex::encode(expected), found: hex::encode(found) });
    }
    Ok(())
}

/// [`check_binding`], then [`assemble_bundle`].
pub fn evidence_bundle(statement: &[u8], ev: &EvidencePayload, launch: Launch, collateral: Option<serde_json::Value>) -> Result<Assembled, BuildError> {
    check_binding(statement, ev)?;
    assemble_bundle(statement, ev, launch, collateral)
}

/// The bundle for the evidence, without checking its binding (see [`check_binding`]).
///
/// SNP: the certificate the report's SIGNING_KEY field names (VCEK, or a cloud provider's
/// VLEK), found by its GUID in the host's certificate table, goes into `vcek`; for a VCEK, the
/// table's ASK and ARK become `cert_chain` (AMD KDS's PEM order: ASK, then ARK). `launch` is
/// recorded for `verify --agent`. TDX: `collateral` (from `loader build --tdx-collateral`) when
/// given. Whatever a verifier will have to be given by hand is said in the notes.
pub fn assemble_bundle(statement: &[u8], ev: &EvidencePayload, launch: Launch, collateral: Option<serde_json::Value>) -> Result<Assembled, BuildError> {
    let mut notes = Vec::new();
    let bundle = match ev.kind {
        AttestationKind::None => Bundle::unattested(statement),
        AttestationKind::SevSnp => {
            let find = |guid: &str| ev.certificates.iter().find(|(g, _)| guid_string(g) == guid).map(|(_, der)| der.as_slice());
            for (g, der) in &ev.certificates {
                let name = guid_string(g);
                if ![cert_guid::VCEK, cert_guid::VLEK, cert_guid::ASK, cert_guid::ARK].contains(&name.as_str()) {
                    notes.push(format!("the host's certificate table has an entry this loader does not use (GUID {name}, {} bytes); it is not in the bundle", der.len()));
                }
            }
            // The report says which key signed it (0 VCEK, 1 VLEK); a report the verifier
            // will refuse anyway still gets its bundle, with the VCEK if there is one.
            let report = snp::Report::parse(&ev.report).ok();
            let vlek = report.as_ref().is_some_and(|r| r.signing_key == 1);
            let (vek, chain) = if vlek {
                (find(cert_guid::VLEK), None)
            } else {
                let chain = match (find(cert_guid::ASK), find(cert_guid::ARK)) {
                    (Some(ask), Some(ark)) => Some(format!("{}{}", Bundle::pem(ask), Bundle::pem(ark))),
                    _ => None,
                };
                (find(cert_guid::VCEK), chain)
            };
            match (vek, vlek) {
                (Some(_), false) => {}
                (None, false) => notes.push(match report.as_ref().and_then(snp::kds_vcek_url) {
                    Some(url) => format!("the host supplied no VCEK with the report: fetch it from AMD KDS ({url}) and give it to `measurement-tool verify --vcek FILE`"),
                    None => "the host supplied no VCEK with the report, and the report's CHIP_ID is masked so AMD KDS cannot be asked for it: `measurement-tool verify` needs the VCEK as --vcek FILE".into(),
                }),
                (Some(_), true) => {}
                (None, true) => notes.push("the report is signed by a VLEK (a cloud provider's key) and the host supplied none: `measurement-tool verify` needs it as --vcek FILE".into()),
            }
            if vlek {
                let url = report.as_ref().map(snp::kds_chain_url).unwrap_or_default();
                notes.push(format!("the report is signed by a VLEK: `measurement-tool verify` needs its chain (ASVK, ARK; {url}) as --cert-chain FILE"));
            }
            Bundle::snp(statement, &ev.report, vek, chain, launch)
        }
        AttestationKind::Tdx => {
            if collateral.is_none() {
                notes.push("no TDX collateral was given (`loader build --tdx-collateral FILE`, dcap-qvl JSON, e.g. from the host's PCCS): `measurement-tool verify` needs it as --collateral FILE".into());
            }
            Bundle::tdx(statement, &ev.report, collateral)
        }
    };
    Ok(Assembled { bundle, notes })
}
