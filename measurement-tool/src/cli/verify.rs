//! `measurement-tool verify DIR/evidence.json`: does this evidence say what the user thinks?
//!
//! 1. the expected launch measurement: `--expected-measurement`, `--agent IMAGE` (measured with
//!    the verifier's pinned SNP launch parameters), a `--policy` file, or by default
//!    target/reference-measurements.json when run from the checkout (`make agent` writes it);
//!    SEV-SNP and TDX evidence without one is refused (`--any-measurement` accepts any code and
//!    is never reported as verified);
//! 2. the evidence ([`measurement_tool::evidence::check`]): `none` is refused unless
//!    `--allow-unattested` (and then reported as not attested); SNP reports and TDX quotes are
//!    verified as `verify-report` does under the strict policy, the SNP launch parameters the
//!    host recorded must be in the allow-list, REPORT_DATA must be SHA-512 of the statement's
//!    exact bytes, the statement must name the bundle's kind; what the bundle lacks is named
//!    with where to get it (`--vcek`, `--cert-chain`, `--collateral`);
//!    the statement's inputs and outputs must be closed under the references it records;
//! 3. the outputs: each `--nar FILE` / `--store-path PATH` must hash to a subject of the statement.
use super::verify_report::PolicyArgs;
use anyhow::{bail, Context};
use measurement_tool::evidence::bundle::{Bundle, UNATTESTED_WARNING};
use measurement_tool::evidence::check::{self, Supplied};
use measurement_tool::evidence::reference::{self, Reference};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    /// Compute the expected launch measurement from this agent image (SNP: with the verifier's
    /// pinned launch parameters, not the bundle's).
    #[arg(long, conflicts_with_all = ["expected_measurement", "any_measurement", "reference"])]
    agent: Option<PathBuf>,
    /// Read the expected measurements from this reference file (`make agent` writes
    /// target/reference-measurements.json, read by default when present in the current
    /// directory).
    #[arg(long, conflicts_with_all = ["expected_measurement", "any_measurement"])]
    reference: Option<PathBuf>,
    /// Accept evidence made without a TEE (it proves nothing about the build host; the output
    /// says "attested": false).
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

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads a reference file; when the image it describes sits next to it (the checkout's
/// target/agent.bin), the image must still be the one measured.
fn load_reference(path: &Path) -> anyhow::Result<Reference> {
    let r: Reference = serde_json::from_slice(&read(path)?).with_context(|| format!("{} is not a reference-measurements file", path.display()))?;
    if r.format != reference::FORMAT {
        bail!("{}: format {}, expected {}", path.display(), r.format, reference::FORMAT);
    }
    let image = path.with_file_name("agent.bin");
    if let Ok(bytes) = std::fs::read(&image) {
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != r.image_sha256 {
            bail!("{} describes an image with SHA-256 {}, but {} is {sha}: it is stale, run `make agent` again", path.display(), r.image_sha256, image.display());
        }
    }
    Ok(r)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.evidence).with_context(|| format!("reading {}", a.evidence.display()))?;
    let bundle: Bundle = serde_json::from_str(&text).with_context(|| format!("{} is not an evidence bundle", a.evidence.display()))?;
    let mut policy = a.policy.load()?;
    let tee = matches!(bundle.attestation.as_str(), "sev-snp" | "tdx");
    if let Some(agent) = &a.agent {
        policy.expected_measurements = check::expected_measurements(&read(agent)?, &bundle.attestation, &policy.snp_launch)
            .with_context(|| format!("measuring {}", agent.display()))?;
    } else if let Some(path) = &a.reference {
        policy.expected_measurements = load_reference(path)?.measurements(&bundle.attestation);
    } else if tee && !policy.measurement_pinned() && !policy.any_measurement {
        let default = Path::new(reference::DEFAULT_PATH);
        if default.exists() {
            policy.expected_measurements = load_reference(default)?.measurements(&bundle.attestation);
            eprintln!("expected measurement: {} (this checkout's {}, measured by `make agent`)", default.display(), reference::DEFAULT_IMAGE);
        }
    }
    let supplied = Supplied {
        vcek: a.vcek.as_deref().map(read).transpose()?,
        cert_chain: a.cert_chain.as_deref().map(read).transpose()?,
        collateral: a.collateral.as_deref().map(read).transpose()?,
        now: a.now.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()),
        allow_unattested: a.allow_unattested,
    };
    let c = check::check_bundle(&bundle, &policy, &supplied)?;
    if !c.attested {
        eprintln!("WARNING: {UNATTESTED_WARNING}");
        eprintln!("WARNING: accepted only because --allow-unattested was given; NOT verified");
    } else if !c.measurement_pinned {
        eprintln!("WARNING: the launch measurement was not checked (--any-measurement): NOT verified");
    }

    // Whether the outputs the user holds are what the statement says.
    for nar in &a.nar {
        let bytes = read(nar)?;
        let h = hex::encode(Sha256::digest(&bytes));
        let stem = nar.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        match c.subjects.iter().find(|s| s.output == stem).or_else(|| c.subjects.iter().find(|s| s.nar_sha256 == h)) {
            Some(s) if s.nar_sha256 == h => eprintln!("ok: {} matches {}", nar.display(), s.path),
            Some(s) => bail!("REJECTED: output {}: expected NAR sha256 {}, got {h} ({})", s.path, s.nar_sha256, nar.display()),
            None => bail!("REJECTED: output: expected one of the statement's subjects, got {} (sha256 {h})", nar.display()),
        }
    }
    for p in &a.store_path {
        let mut hasher = Sha256::new();
        measurement_tool::nixfs::dump(p, &mut |b| hasher.update(b)).with_context(|| format!("serialising {}", p.display()))?;
        let h = hex::encode(hasher.finalize());
        let name = p.to_string_lossy();
        match c.subjects.iter().find(|s| s.path == name) {
            Some(s) if s.nar_sha256 == h => eprintln!("ok: {name} matches the statement"),
            Some(s) => bail!("REJECTED: output {name}: expected NAR sha256 {}, got {h}", s.nar_sha256),
            None => bail!("REJECTED: output: {name} is not a subject of the statement"),
        }
    }
    let why = not_verified_because(&c);
    if a.policy.json() {
        println!("{}", serde_json::json!({
            "verified": c.verified(), "attested": c.attested, "measurement_checked": c.measurement_pinned,
            "why_not_verified": why,
            "attestation": c.attestation, "unattested": !c.attested,
            "measurement": c.measurement, "derivation": c.derivation,
            "outputs": c.subjects.iter().map(|s| serde_json::json!({"output": s.output, "path": s.path, "nar_sha256": s.nar_sha256})).collect::<Vec<_>>(),
            "outputs_checked": a.nar.len() + a.store_path.len(),
            "report_data": hex::encode(c.report_data),
        }));
    } else {
        match why {
            None => println!("verified: {} ({} attestation)", c.derivation, c.attestation),
            Some(why) => println!("NOT verified: {} ({} attestation): {why}; the statement and outputs below are consistent, nothing more", c.derivation, c.attestation),
        }
        if let Some(m) = &c.measurement {
            println!("  launch measurement {m}{}", if c.measurement_pinned { " (pinned)" } else { " (NOT checked)" });
        }
        for s in &c.subjects {
            println!("  {}: {}  nar sha256 {}", s.output, s.path, s.nar_sha256);
        }
    }
    Ok(())
}

/// Why a bundle that passed its checks is still not "verified" (`None`: it is). Shared by
/// `verify` and `verify-path` so both say the same thing.
pub(super) fn not_verified_because(c: &check::Checked) -> Option<&'static str> {
    if !c.attested {
        Some("made without a TEE (attestation none): nothing proves where or how the build ran; accepted because --allow-unattested was given")
    } else if !c.measurement_pinned {
        Some("the launch measurement was not checked (--any-measurement): nothing shows which code ran")
    } else {
        None
    }
}
