//! `measurement-tool verify-report snp|tdx`: raw hardware evidence, for reviewers and tests.
//! Exit status 0 only when the signature, the chain to the pinned vendor root and every policy
//! check hold; otherwise the message names the failed check, what it expected and what it found.
use anyhow::{bail, Context};
use measurement_tool::evidence::{policy::Policy, snp, tdx, Rejection};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(clap::Subcommand)]
enum Kind {
    /// An SEV-SNP attestation report (raw 1184 bytes, or hex).
    Snp {
        report: PathBuf,
        /// The VCEK (or VLEK) certificate, DER (from AMD KDS).
        #[arg(long)]
        vcek: PathBuf,
        /// ASK and ARK, PEM (AMD KDS `cert_chain`); the ARK must be AMD's pinned root.
        #[arg(long)]
        chain: Option<PathBuf>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// A TDX DCAP quote (v4 or v5).
    Tdx {
        quote: PathBuf,
        /// Collateral JSON (PCK CRL and chains, TCB info, QE identity; from Intel PCS or a PCCS).
        #[arg(long)]
        collateral: PathBuf,
        /// Check the collateral's validity at this time (Unix seconds) instead of now.
        #[arg(long)]
        now: Option<u64>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Accept only these launch measurements (hex; repeatable).
    #[arg(long = "expected-measurement")]
    expected_measurement: Vec<String>,
    /// Require this REPORT_DATA (hex, 64 bytes).
    #[arg(long)]
    report_data: Option<String>,
    /// Accept guests that allow debugging (their memory is not confidential).
    #[arg(long)]
    allow_debug: bool,
    /// A TOML policy file (flags given here override it).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl PolicyArgs {
    pub fn json(&self) -> bool {
        self.json
    }

    pub fn load(&self) -> anyhow::Result<Policy> {
        let mut p = match &self.policy {
            Some(f) => Policy::from_toml(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
                .with_context(|| format!("parsing policy {}", f.display()))?,
            None => Policy::default(),
        };
        if !self.expected_measurement.is_empty() {
            p.expected_measurements = self.expected_measurement.clone();
        }
        if self.report_data.is_some() {
            p.report_data = self.report_data.clone();
        }
        p.allow_debug |= self.allow_debug;
        Ok(p)
    }
}

/// Reads binary evidence, accepting a hex dump too.
pub fn read_evidence(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let t: String = text.split_whitespace().collect();
    if !t.is_empty() && t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(hex::decode(t)?);
    }
    Ok(bytes)
}

fn fail(r: Rejection, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::json!({"verified": false, "check": r.check, "expected": r.expected, "actual": r.actual}));
    }
    bail!("REJECTED: {r}")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.kind {
        Kind::Snp { report, vcek, chain, policy } => {
            let p = policy.load()?;
            let raw = read_evidence(&report)?;
            let vcek = std::fs::read(&vcek).with_context(|| format!("reading {}", vcek.display()))?;
            let chain = match chain {
                Some(c) => match snp::parse_cert_chain(&std::fs::read(&c).with_context(|| format!("reading {}", c.display()))?) {
                    Ok(chain) => Some(chain),
                    Err(r) => return fail(r, policy.json),
                },
                None => None,
            };
            let v = match snp::verify(&raw, &vcek, chain.as_ref()) {
                Ok(v) => v,
                Err(r) => return fail(r, policy.json),
            };
            if let Err(r) = snp::check_policy(&v, &p) {
                return fail(r, policy.json);
            }
            let r = &v.report;
            if policy.json {
                println!("{}", serde_json::json!({
                    "verified": true, "kind": "sev-snp", "generation": v.generation.name(), "version": r.version,
                    "measurement": hex::encode(r.measurement), "report_data": hex::encode(r.report_data),
                    "policy": format!("{:#x}", r.policy), "vmpl": r.vmpl,
                    "tcb": {"fmc": v.tcb.fmc, "bootloader": v.tcb.bootloader, "tee": v.tcb.tee, "snp": v.tcb.snp, "microcode": v.tcb.microcode},
                    "chip_id": hex::encode(r.chip_id),
                }));
            } else {
                println!("SEV-SNP report verified: AMD {} chain, report v{}", v.generation.name(), r.version);
                println!("  measurement  {}", hex::encode(r.measurement));
                println!("  report data  {}", hex::encode(r.report_data));
                println!("  policy {:#x}, VMPL {}, TCB {:?}", r.policy, r.vmpl, v.tcb);
            }
        }
        Kind::Tdx { quote, collateral, now, policy } => {
            let p = policy.load()?;
            let raw = read_evidence(&quote)?;
            let coll = match tdx::parse_collateral(&std::fs::read(&collateral).with_context(|| format!("reading {}", collateral.display()))?) {
                Ok(c) => c,
                Err(r) => return fail(r, policy.json),
            };
            let now = now.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
            let v = match tdx::verify(&raw, &coll, now) {
                Ok(v) => v,
                Err(r) => return fail(r, policy.json),
            };
            if let Err(r) = tdx::check_policy(&v, &p) {
                return fail(r, policy.json);
            }
            if policy.json {
                println!("{}", serde_json::json!({
                    "verified": true, "kind": "tdx", "tcb_status": v.status, "advisory_ids": v.advisory_ids,
                    "mrtd": hex::encode(v.mr_td), "rtmrs": v.rt_mr.iter().map(hex::encode).collect::<Vec<_>>(),
                    "report_data": hex::encode(v.report_data), "td_attributes": format!("{:#x}", v.td_attributes),
                }));
            } else {
                println!("TDX quote verified: Intel chain, TCB status {}", v.status);
                println!("  MRTD         {}", hex::encode(v.mr_td));
                println!("  report data  {}", hex::encode(v.report_data));
                println!("  attributes   {:#x}", v.td_attributes);
            }
        }
    }
    Ok(())
}
