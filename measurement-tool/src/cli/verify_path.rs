//! `measurement-tool verify-path /nix/store/…-x`: is this store path, as it is in my store, what
//! an attested build produced? For a consumer who built through a remote builder or substituted
//! the path from a binary cache (docs/consuming.md).
//!
//! 1. the path: valid in the Nix database (`nix-store --query --hash`), and the NAR hash the
//!    database records equals the one recomputed here from the path's files;
//! 2. the evidence: `--evidence FILE`, or `<hash-part>.attestation.json` in the `--cache`;
//!    checked as `measurement-tool verify` checks it (attestation, measurement, policy,
//!    REPORT_DATA binding, closure of the statement);
//! 3. the path is a subject of the statement, with the NAR hash recomputed in 1;
//! 4. with `--cache`: the cache's narinfo for the path names it, its NarHash is the attested
//!    hash, and the cache's NAR (uncompressed, or xz) hashes to it;
//! 5. the derivation (`measurement_tool::evidence::derivation`): a resolved derivation (a remote
//!    build) is re-resolved from the `.drv` closure in the store and must give the statement's
//!    digest and outputs; a full build's `.drv`, when present, must have its digest;
//! 6. every input the statement records that the store holds has the NAR hash recorded.
//!
//! Any failure: `REJECTED: <check>: expected …, got …` and a non-zero exit.
use super::verify::not_verified_because;
use super::verify_report::PolicyArgs;
use anyhow::{bail, Context};
use measurement_tool::evidence::bundle::{Bundle, UNATTESTED_WARNING};
use measurement_tool::evidence::check::{self, Supplied};
use measurement_tool::evidence::derivation::{self, DerivationCheck};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// The store path to check (`/nix/store/<hash>-<name>`).
    path: String,
    /// The Nix store holding it: a directory (a chroot store, as `nix --store DIR`) or a store
    /// URL passed to nix-store (default: the system's store).
    #[arg(long)]
    store: Option<String>,
    /// A binary cache (`file:///DIR`, as `nix copy --to` writes it) holding
    /// `<hash-part>.attestation.json` (`loader publish`) beside `<hash-part>.narinfo`.
    #[arg(long, conflicts_with = "evidence")]
    cache: Option<String>,
    /// The evidence bundle for the path (a build's evidence.json, or a `<hash-part>.attestation.json`).
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Compute the expected launch measurement from this agent image.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Accept evidence made without a TEE (reported as NOT verified).
    #[arg(long)]
    allow_unattested: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// The directory a store's paths live under on this machine.
fn store_root(store: Option<&str>) -> PathBuf {
    match store {
        Some(s) if s.starts_with('/') => PathBuf::from(s.split('?').next().unwrap_or(s)),
        Some(s) => match s.split_once('?') {
            Some(("local", q)) => q.split('&').find_map(|kv| kv.strip_prefix("root=")).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")),
            _ => PathBuf::from("/"),
        },
        None => PathBuf::from("/"),
    }
}

fn rejected(check: &str, expected: impl std::fmt::Display, got: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("REJECTED: {check}: expected {expected}, got {got}")
}

/// `sha256:<nix32|hex>` as Nix prints NAR hashes, to bytes.
fn parse_nix_hash(s: &str) -> Option<[u8; 32]> {
    use agent::nix::hash::{Algo, Hash};
    let h = Hash::parse_unprefixed(s.trim().strip_prefix("sha256:")?, Algo::Sha256)?;
    h.bytes.try_into().ok()
}

/// The fields of a narinfo (`Key: value` lines).
fn narinfo(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let sp = agent::nix::store_path::StorePath::parse(&a.path).map_err(|e| anyhow::anyhow!("{} is not a store path: {e:?}", a.path))?;
    let hash_part = sp.hash_part().to_string();
    let root = store_root(a.store.as_deref());
    let real = root.join(a.path.trim_start_matches('/'));

    // 1. The path, in the database and on disk.
    let mut q = Command::new("nix-store");
    if let Some(s) = &a.store {
        q.arg("--store").arg(s);
    }
    let out = q.args(["--query", "--hash"]).arg(&a.path).output().context("running nix-store --query --hash")?;
    if !out.status.success() {
        return Err(rejected("store path", format!("{} valid in the store", a.path), String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let db_text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let db_hash = parse_nix_hash(&db_text).with_context(|| format!("nix-store printed '{db_text}'"))?;
    let mut hasher = Sha256::new();
    measurement_tool::nixfs::dump(&real, &mut |b| hasher.update(b)).with_context(|| format!("serialising {}", real.display()))?;
    let fs_hash: [u8; 32] = hasher.finalize().into();
    if db_hash != fs_hash {
        return Err(rejected("NAR hash", format!("the path's contents to hash to what the Nix database records, sha256 {}", hex::encode(db_hash)), format!("sha256 {} (the path was modified after it was registered)", hex::encode(fs_hash))));
    }

    // 2. The evidence.
    let cache_dir = match &a.cache {
        Some(c) => Some(PathBuf::from(c.strip_prefix("file://").ok_or_else(|| anyhow::anyhow!("--cache {c}: only file:// caches are read"))?)),
        None => None,
    };
    let evidence = match (&a.evidence, &cache_dir) {
        (Some(e), _) => e.clone(),
        (None, Some(dir)) => dir.join(format!("{hash_part}.attestation.json")),
        (None, None) => bail!("give the evidence: --evidence FILE or --cache file:///DIR"),
    };
    let text = std::fs::read_to_string(&evidence).map_err(|e| rejected("evidence", format!("{} for {}", evidence.display(), a.path), e))?;
    let bundle: Bundle = serde_json::from_str(&text).with_context(|| format!("{} is not an evidence bundle", evidence.display()))?;
    let mut policy = a.policy.load()?;
    if let Some(agent) = &a.agent {
        let image = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
        policy.expected_measurements = check::expected_measurements(&image, &bundle.attestation, &policy.snp_launch).with_context(|| format!("measuring {}", agent.display()))?;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let supplied = Supplied { now, allow_unattested: a.allow_unattested, ..Supplied::default() };
    let c = check::check_bundle(&bundle, &policy, &supplied)?;

    // 3. The path is a subject, with the hash recomputed here.
    let subject = c.subjects.iter().find(|s| s.path == a.path).ok_or_else(|| {
        rejected("evidence", format!("a statement with {} among its outputs", a.path), format!("evidence for {}", c.subjects.iter().map(|s| s.path.as_str()).collect::<Vec<_>>().join(", ")))
    })?;
    if subject.nar_sha256 != hex::encode(fs_hash) {
        return Err(rejected("NAR hash", format!("the attested sha256 {}", subject.nar_sha256), format!("sha256 {} for {} in the store", hex::encode(fs_hash), a.path)));
    }

    // 4. The cache agrees.
    let mut cache_checked = false;
    if let Some(dir) = &cache_dir {
        let ni_path = dir.join(format!("{hash_part}.narinfo"));
        let ni = narinfo(&std::fs::read_to_string(&ni_path).with_context(|| format!("reading {}", ni_path.display()))?);
        if ni.get("StorePath").map(String::as_str) != Some(a.path.as_str()) {
            return Err(rejected("narinfo", format!("{} naming {}", ni_path.display(), a.path), format!("StorePath {:?}", ni.get("StorePath"))));
        }
        let nar_hash = ni.get("NarHash").and_then(|h| parse_nix_hash(h)).ok_or_else(|| anyhow::anyhow!("{}: no NarHash", ni_path.display()))?;
        if hex::encode(nar_hash) != subject.nar_sha256 {
            return Err(rejected("narinfo NarHash", format!("the attested sha256 {}", subject.nar_sha256), format!("sha256 {} in {}", hex::encode(nar_hash), ni_path.display())));
        }
        let url = ni.get("URL").ok_or_else(|| anyhow::anyhow!("{}: no URL", ni_path.display()))?;
        let file = dir.join(url);
        let nar = match ni.get("Compression").map(String::as_str).unwrap_or("bzip2") {
            "none" => std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            "xz" => {
                let out = Command::new("xz").arg("-dc").arg(&file).output().context("running xz -dc")?;
                if !out.status.success() {
                    return Err(rejected("cache NAR", format!("{} to decompress", file.display()), String::from_utf8_lossy(&out.stderr).trim().to_string()));
                }
                out.stdout
            }
            other => bail!("{}: compression {other} is not read here (use nix copy --to 'file://DIR?compression=xz' or none)", ni_path.display()),
        };
        let got = hex::encode(Sha256::digest(&nar));
        if got != subject.nar_sha256 {
            return Err(rejected("cache NAR", format!("{} to hash to the attested sha256 {}", file.display(), subject.nar_sha256), format!("sha256 {got} (the cache's NAR was altered)")));
        }
        cache_checked = true;
    }

    // 5. The derivation.
    let st: serde_json::Value = serde_json::from_slice(&c.statement).context("the statement")?;
    let read = |p: &str| std::fs::read(root.join(p.trim_start_matches('/'))).ok();
    let drv = derivation::check_derivation(&st, &read).map_err(|r| anyhow::anyhow!("REJECTED: {r}"))?;
    let drv_note = match drv {
        DerivationCheck::Full { drv_compared: true } => "the .drv in the store has the attested digest",
        DerivationCheck::Full { drv_compared: false } => "checked by the agent (the .drv is not in this store)",
        DerivationCheck::Resolved => "a resolved derivation (remote build), re-resolved from the .drv closure in the store: digest and outputs equal",
    };

    // 6. The inputs the agent received, against this store: every one this store has must have
    //    the NAR hash the agent recorded (it covers fixed-output inputs, whose declared hash the
    //    agent cannot check in a resolved build). Inputs this store lacks are counted, not checked.
    let inputs: Vec<(String, String)> = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| Some((i["name"].as_str()?.to_string(), i["digest"]["sha256"].as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let (inputs_checked, inputs_absent) = check_inputs(a.store.as_deref(), &inputs)?;

    let why = not_verified_because(&c);
    if !c.attested {
        eprintln!("WARNING: {UNATTESTED_WARNING}");
    }
    if a.policy.json() {
        println!(
            "{}",
            serde_json::json!({
                "path": a.path, "verified": c.verified(), "attested": c.attested, "why_not_verified": why,
                "attestation": c.attestation, "measurement": c.measurement, "measurement_checked": c.measurement_pinned,
                "nar_sha256": hex::encode(fs_hash), "output": subject.output, "derivation": c.derivation,
                "derivation_check": drv_note, "evidence": evidence, "cache_checked": cache_checked,
                "inputs_checked": inputs_checked, "inputs_not_in_store": inputs_absent,
            })
        );
    } else {
        match why {
            None => println!("verified: {} ({} attestation)", a.path, c.attestation),
            Some(why) => println!("NOT verified: {} ({} attestation): {why}; the path, the evidence and the cache are consistent, nothing more", a.path, c.attestation),
        }
        println!("  NAR sha256 {} (database, files and statement agree{})", hex::encode(fs_hash), if cache_checked { ", and the cache's narinfo and NAR" } else { "" });
        println!("  output '{}' of {}: {drv_note}", subject.output, c.derivation);
        println!("  inputs: {inputs_checked} of {} equal to this store's (NAR hash), {inputs_absent} not in this store", inputs.len());
        if let Some(m) = &c.measurement {
            println!("  launch measurement {m}{}", if c.measurement_pinned { " (pinned)" } else { " (NOT checked)" });
        }
    }
    Ok(())
}

/// Compares the recorded input NAR hashes with the store's, for the inputs it has; returns
/// (checked, absent).
fn check_inputs(store: Option<&str>, inputs: &[(String, String)]) -> anyhow::Result<(usize, usize)> {
    if inputs.is_empty() {
        return Ok((0, 0));
    }
    let nix_store = || {
        let mut c = Command::new("nix-store");
        if let Some(s) = store {
            c.arg("--store").arg(s);
        }
        c
    };
    let out = nix_store().args(["--check-validity", "--print-invalid"]).args(inputs.iter().map(|i| &i.0)).output().context("running nix-store --check-validity")?;
    let invalid: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let present: Vec<&(String, String)> = inputs.iter().filter(|i| !invalid.contains(&i.0)).collect();
    if present.is_empty() {
        return Ok((0, inputs.len()));
    }
    let out = nix_store().args(["--query", "--hash"]).args(present.iter().map(|i| &i.0)).output().context("running nix-store --query --hash")?;
    if !out.status.success() {
        bail!("nix-store --query --hash: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let hashes: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    if hashes.len() != present.len() {
        bail!("nix-store --query --hash printed {} hashes for {} paths", hashes.len(), present.len());
    }
    for ((path, recorded), h) in present.iter().zip(&hashes) {
        let local = parse_nix_hash(h).map(hex::encode).with_context(|| format!("nix-store printed '{h}'"))?;
        if &local != recorded {
            return Err(rejected("input", format!("{path} as this store has it, sha256 {local}"), format!("the agent received sha256 {recorded}")));
        }
    }
    Ok((present.len(), inputs.len() - present.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn store_roots_and_hashes() {
        assert_eq!(store_root(Some("/tmp/s")), Path::new("/tmp/s"));
        assert_eq!(store_root(Some("local?root=/tmp/r")), Path::new("/tmp/r"));
        assert_eq!(store_root(None), Path::new("/"));
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hex::encode(parse_nix_hash(&format!("sha256:{hex}")).unwrap()), hex);
        assert!(parse_nix_hash("md5:abc").is_none());
    }
}
