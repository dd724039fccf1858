//! `measurement-tool verify-report snp|tdx`: raw hardware evidence, for reviewers and tests.
//! Exit status 0 only when the signature, the chain to the pinned vendor root and every policy
//! check hold; otherwise the message names the failed check, what it expected and what it found.
use anyhow::{bail, Context};
use measurement_tool::evidence::policy::{MinTcb, Policy};
use measurement_tool::evidence::{snp, tdx, Rejection};
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
    /// Accept only these launch measurements (hex, 48 bytes; repeatable). One is required for
    /// SEV-SNP and TDX evidence: `make agent` prints the agent's (or `measurement-tool measure`).
    #[arg(long = "expected-measurement", value_name = "HEX")]
    expected_measurement: Vec<String>,
    /// Accept any launch measurement: the evidence then says nothing about which code ran. Prints
    /// a warning; the output never says "verified".
    #[arg(long, conflicts_with = "expected_measurement")]
    any_measurement: bool,
    /// Require this REPORT_DATA (hex, 64 bytes).
    #[arg(long)]
    report_data: Option<String>,
    /// Accept guests that allow debugging (their memory is not confidential).
    #[arg(long)]
    allow_debug: bool,
    /// SEV-SNP: raise the minimum TCB (bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]); components
    /// below the built-in floor (or the policy file's) leave it as it is.
    #[arg(long, value_name = "COMPONENTS", value_parser = MinTcb::parse)]
    min_tcb: Option<MinTcb>,
    /// A TOML policy file: the only way to relax the strict default (evidence/policy.rs).
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

    /// The policy file (or the strict default), with the flags applied.
    pub fn load(&self) -> anyhow::Result<Policy> {
        let mut p = match &self.policy {
            Some(f) => Policy::from_toml(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
                .with_context(|| format!("parsing policy {}", f.display()))?,
            None => Policy::default(),
        };
        for m in &self.expected_measurement {
            if m.len() != 96 || !m.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--expected-measurement {m}: expected 96 hex digits (a 48-byte SNP launch digest or TDX MRTD)");
            }
        }
        if !self.expected_measurement.is_empty() {
            p.expected_measurements = self.expected_measurement.clone();
        }
        if self.any_measurement {
            p.any_measurement = true;
        }
        if self.report_data.is_some() {
            p.report_data = self.report_data.clone();
        }
        p.allow_debug |= self.allow_debug;
        if let Some(t) = self.min_tcb {
            p.raise_tcb = Some(p.raise_tcb.map_or(t, |r| r.max(t)));
        }
        if p.any_measurement && !p.measurement_pinned() {
            eprintln!("WARNING: --any-measurement: any launch measurement is accepted; nothing shows which code ran, so this is not verified");
        }
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
            let pinned = p.measurement_pinned();
            if policy.json {
                println!("{}", serde_json::json!({
                    "verified": pinned, "measurement_checked": pinned, "kind": "sev-snp", "generation": v.generation.name(), "version": r.version,
                    "measurement": hex::encode(r.measurement), "report_data": hex::encode(r.report_data),
                    "policy": format!("{:#x}", r.policy), "vmpl": r.vmpl,
                    "tcb": {"fmc": v.tcb.fmc, "bootloader": v.tcb.bootloader, "tee": v.tcb.tee, "snp": v.tcb.snp, "microcode": v.tcb.microcode},
                    "chip_id": hex::encode(r.chip_id),
                }));
            } else {
                if pinned {
                    println!("SEV-SNP report verified: AMD {} chain, report v{}", v.generation.name(), r.version);
                } else {
                    println!("SEV-SNP report signed by AMD ({} chain, report v{}); NOT verified: its measurement was not checked (--any-measurement)", v.generation.name(), r.version);
                }
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
            let pinned = p.measurement_pinned();
            if policy.json {
                println!("{}", serde_json::json!({
                    "verified": pinned, "measurement_checked": pinned, "kind": "tdx", "tcb_status": v.status, "advisory_ids": v.advisory_ids,
                    "mrtd": hex::encode(v.mr_td), "rtmrs": v.rt_mr.iter().map(hex::encode).collect::<Vec<_>>(),
                    "report_data": hex::encode(v.report_data), "td_attributes": format!("{:#x}", v.td_attributes),
                }));
            } else {
                if pinned {
                    println!("TDX quote verified: Intel chain, TCB status {}", v.status);
                } else {
                    println!("TDX quote signed through Intel's chain, TCB status {}; NOT verified: its MRTD was not checked (--any-measurement)", v.status);
                }
                println!("  MRTD         {}", hex::encode(v.mr_td));
                println!("  report data  {}", hex::encode(v.report_data));
                println!("  attributes   {:#x}", v.td_attributes);
            }
        }
    }
    Ok(())
}
