//! `measurement-tool verify DIR/evidence.json`: does this evidence say what the user thinks?
//!
//! 1. the attestation: `none` is refused unless `--allow-unattested` (and then loudly flagged);
//!    SNP reports and TDX quotes are verified as `verify-report` does, and their REPORT_DATA must
//!    be SHA-512 of the statement's exact bytes; what the bundle lacks (a VCEK, a VLEK's chain,
//!    TDX collateral) is named with where to get it, and can be given as `--vcek`,
//!    `--cert-chain`, `--collateral`; the statement must name the bundle's attestation kind;
//! 2. the launch measurement, when `--expected-measurement` or `--agent IMAGE` is given;
//! 3. the statement's inputs and outputs are closed under the references it records;
//! 4. the outputs: each `--nar FILE` / `--store-path PATH` must hash to a subject of the statement.
use super::verify_report::PolicyArgs;
use anyhow::{bail, Context};
use measurement_tool::evidence::bundle::{Bundle, FORMAT, UNATTESTED_WARNING};
use measurement_tool::evidence::{snp, tdx};
use measurement_tool::measure;
use sha2::{Digest, Sha256, Sha512};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The evidence bundle (evidence.json).
    evidence: PathBuf,
    /// An output NAR to check against the statement (repeatable).
    #[arg(long)]
    nar: Vec<PathBuf>,
    /// An output in a local store to check against the statement (repeatable).
    #[arg(long)]
    store_path: Vec<PathBuf>,
    /// Compute the expected launch measurement from this agent image.
    #[arg(long, conflicts_with = "expected_measurement")]
    agent: Option<PathBuf>,
    /// Accept evidence made without a TEE (it proves nothing about the build host).
    #[arg(long)]
    allow_unattested: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Check TDX collateral at this time (Unix seconds) instead of now.
    #[arg(long)]
    now: Option<u64>,
    /// SEV-SNP: the VCEK (or VLEK) certificate, DER or PEM, for a bundle made on a host that
    /// supplied none (AMD KDS serves it for the report's chip ID and TCB). Replaces the bundle's.
    #[arg(long)]
    vcek: Option<PathBuf>,
    /// SEV-SNP: AMD's ASK and ARK (PEM, as KDS's cert_chain). Replaces the bundle's; without
    /// either, the pinned roots for the report's processor generation are used.
    #[arg(long)]
    cert_chain: Option<PathBuf>,
    /// TDX: the quote's collateral (dcap-qvl JSON, e.g. from a PCCS), for a bundle without it.
    /// Replaces the bundle's.
    #[arg(long)]
    collateral: Option<PathBuf>,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.evidence).with_context(|| format!("reading {}", a.evidence.display()))?;
    let bundle: Bundle = serde_json::from_str(&text).with_context(|| format!("{} is not an evidence bundle", a.evidence.display()))?;
    if bundle.format != FORMAT {
        bail!("REJECTED: format: expected {FORMAT}, got {}", bundle.format);
    }
    let statement = bundle.statement_bytes().context("statement is not base64")?;
    let report_data: [u8; 64] = Sha512::digest(&statement).into();
    let mut policy = a.policy.load()?;
    policy.report_data = Some(hex::encode(report_data));
    let measurement;
    match bundle.attestation.as_str() {
        "none" => {
            if bundle.warning.as_deref() != Some(UNATTESTED_WARNING) {
                bail!("REJECTED: warning: an unattested bundle must carry the unattested warning");
            }
            if !a.allow_unattested {
                bail!("REJECTED: attestation: expected sev-snp or tdx, got none (made without a TEE; pass --allow-unattested to accept it anyway)");
            }
            if bundle.unsigned_report_data.as_deref() != Some(hex::encode(report_data).as_str()) {
                bail!("REJECTED: statement: its SHA-512 is not the bundle's unsigned_report_data (the statement or the bundle was altered)");
            }
            eprintln!("WARNING: {UNATTESTED_WARNING}");
            eprintln!("WARNING: accepted only because --allow-unattested was given");
            measurement = None;
        }
        "sev-snp" => {
            let raw = bundle.report_bytes().context("no report in an sev-snp bundle")?.context("report is not base64")?;
            // What is missing is said before anything is checked, with where to get it.
            let parsed = snp::Report::parse(&raw).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            let vlek = parsed.signing_key == 1;
            let vcek = match (&a.vcek, &bundle.vcek) {
                (Some(path), _) => read(path)?,
                (None, Some(_)) => base64_field(&bundle.vcek, "vcek")?,
                (None, None) if vlek => bail!("the report is signed by a VLEK (a cloud provider's key) and the bundle has none: pass it as --vcek FILE"),
                (None, None) => match snp::kds_vcek_url(&parsed) {
                    Some(url) => bail!("the bundle has no VCEK (the host supplied no certificates with the report): fetch it from AMD KDS, {url}, and pass --vcek FILE"),
                    None => bail!("the bundle has no VCEK (the host supplied no certificates with the report), and the report's CHIP_ID is masked, so AMD KDS cannot serve it by chip: pass it as --vcek FILE"),
                },
            };
            let chain_pem = match &a.cert_chain {
                Some(path) => Some(read(path)?),
                None => bundle.cert_chain.as_ref().map(|p| p.as_bytes().to_vec()),
            };
            if vlek && chain_pem.is_none() {
                bail!("the report is signed by a VLEK, which chains to AMD's root through the ASVK, not the pinned ASK: pass that chain (ASVK, ARK) as --cert-chain FILE ({})", snp::kds_chain_url(&parsed));
            }
            let chain = match &chain_pem {
                Some(pem) => Some(snp::parse_cert_chain(pem).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?),
                None => None,
            };
            if let Some(agent) = &a.agent {
                let image = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
                let l = bundle.launch.as_ref().context("an sev-snp bundle must record its launch parameters")?;
                let d = measure::snp::launch_digest(&image, l.vcpus, measure::snp::vcpu_signature(&l.vcpu_type)?, l.guest_features)?;
                policy.expected_measurements = vec![hex::encode(d)];
            }
            let v = snp::verify(&raw, &vcek, chain.as_ref()).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            snp::check_policy(&v, &policy).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            measurement = Some(hex::encode(v.report.measurement));
        }
        "tdx" => {
            let raw = bundle.report_bytes().context("no quote in a tdx bundle")?.context("quote is not base64")?;
            let coll_bytes = match (&a.collateral, &bundle.collateral) {
                (Some(path), _) => read(path)?,
                (None, Some(c)) => c.to_string().into_bytes(),
                (None, None) => bail!("the bundle has no TDX collateral (the loader has no network; it carries collateral only when given `loader build --tdx-collateral`): pass --collateral FILE (dcap-qvl JSON, e.g. from the host's PCCS or Intel PCS)"),
            };
            let coll = tdx::parse_collateral(&coll_bytes).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            if let Some(agent) = &a.agent {
                let image = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
                policy.expected_measurements = vec![hex::encode(measure::tdx::mrtd(&image)?)];
            }
            let now = a.now.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
            let v = tdx::verify(&raw, &coll, now).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            tdx::check_policy(&v, &policy).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
            measurement = Some(hex::encode(v.mr_td));
        }
        other => bail!("REJECTED: attestation: expected none, sev-snp or tdx, got {other}"),
    }

    // The statement: what it says, and whether the outputs the user holds are what it says.
    let st: serde_json::Value = serde_json::from_slice(&statement).context("the statement is not JSON")?;
    // The statement names the platform the agent found at boot; the evidence must be that one.
    let named = st["predicate"]["runDetails"]["metadata"]["attestation"].as_str().unwrap_or("(nothing)");
    if named != bundle.attestation {
        bail!("REJECTED: attestation: the statement says {named}, the bundle's evidence is {}", bundle.attestation);
    }
    // The inputs and outputs are a closed set under the references the agent recorded.
    if let Err(gap) = measurement_tool::evidence::bundle::check_statement_closure(&st) {
        bail!("REJECTED: statement: {gap}");
    }
    let subjects: Vec<(String, String, String)> = st["subject"]
        .as_array()
        .context("statement without subjects")?
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["annotations"]["output"].as_str().unwrap_or_default().to_string(),
                s["digest"]["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for nar in &a.nar {
        let bytes = std::fs::read(nar).with_context(|| format!("reading {}", nar.display()))?;
        let h = hex::encode(Sha256::digest(&bytes));
        let stem = nar.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        match subjects.iter().find(|(_, output, _)| output == stem).or_else(|| subjects.iter().find(|(_, _, d)| *d == h)) {
            Some((path, _, d)) if *d == h => eprintln!("ok: {} matches {path}", nar.display()),
            Some((path, _, d)) => bail!("REJECTED: output {path}: expected NAR sha256 {d}, got {h} ({})", nar.display()),
            None => bail!("REJECTED: output: expected one of the statement's subjects, got {} (sha256 {h})", nar.display()),
        }
    }
    for p in &a.store_path {
        let mut hasher = Sha256::new();
        measurement_tool::nixfs::dump(p, &mut |b| hasher.update(b)).with_context(|| format!("serialising {}", p.display()))?;
        let h = hex::encode(hasher.finalize());
        let name = p.to_string_lossy();
        match subjects.iter().find(|(path, _, _)| *path == name) {
            Some((_, _, d)) if *d == h => eprintln!("ok: {name} matches the statement"),
            Some((_, _, d)) => bail!("REJECTED: output {name}: expected NAR sha256 {d}, got {h}"),
            None => bail!("REJECTED: output: {name} is not a subject of the statement"),
        }
    }
    let drv = st["predicate"]["buildDefinition"]["externalParameters"]["derivation"].as_str().unwrap_or_default();
    if a.policy_json() {
        println!("{}", serde_json::json!({
            "verified": true, "attestation": bundle.attestation, "unattested": bundle.attestation == "none",
            "measurement": measurement, "derivation": drv,
            "outputs": subjects.iter().map(|(p, o, d)| serde_json::json!({"output": o, "path": p, "nar_sha256": d})).collect::<Vec<_>>(),
            "report_data": hex::encode(report_data),
        }));
    } else {
        println!("verified: {} ({} attestation{})", drv, bundle.attestation, if bundle.attestation == "none" { ", UNATTESTED" } else { "" });
        if let Some(m) = measurement {
            println!("  launch measurement {m}");
        }
        for (p, o, d) in &subjects {
            println!("  {o}: {p}  nar sha256 {d}");
        }
    }
    Ok(())
}

fn base64_field(v: &Option<String>, name: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let s = v.as_ref().with_context(|| format!("the bundle has no {name}"))?;
    base64::engine::general_purpose::STANDARD.decode(s).with_context(|| format!("{name} is not base64"))
}

impl Args {
    fn policy_json(&self) -> bool {
        self.policy.json()
    }
}
