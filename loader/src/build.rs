//! `loader build`: one attested build of a derivation from the local store.
//!
//! The loader gathers bytes (the `.drv`, its input derivations, the NARs of its input closure),
//! starts a fresh agent, forwards everything, streams the build log, and writes what comes back:
//! `DIR/<output>.nar` and `DIR/evidence.json`. It trusts none of it either: before anything is
//! written under its final name, the evidence must be of the kind launched (`--tee`) and named by
//! the statement, its REPORT_DATA must be SHA-512 of the statement ([`crate::evidence`]), and
//! every received NAR must hash to the digest the statement gives for it; a build the agent
//! refused, or whose answer fails a check, leaves no output behind.
use crate::store::{self, StoreError};
use crate::vm::{self, Frame, VmConfig, VmError};
use crate::evidence::Assembled;
use agent::proto::{self, Type};
use agent::statement::attestation_name;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Everything `build` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading the build from the local store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The agent refused the request or the build failed; `log` is the builder's output.
    #[error("the agent refused the build (error {code}): {text}")]
    Refused { code: u32, text: String, log: Vec<u8> },
    #[error("the agent's answer is malformed: {0}")]
    Response(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The agent's Evidence frame does not parse.
    #[error("the agent's Evidence frame is malformed: {0}")]
    Evidence(proto::EvidenceError),
    /// The evidence is of another kind than the launch asked for or the statement names.
    #[error("the agent's evidence is '{attested}', but {by} says '{expected}'")]
    AttestationMismatch { attested: &'static str, expected: &'static str, by: &'static str },
    /// A report or quote whose REPORT_DATA cannot be read.
    #[error("the {attestation} evidence is malformed: {reason}")]
    BadReport { attestation: &'static str, reason: String },
    /// The REPORT_DATA the evidence carries is not SHA-512 of the statement: it is evidence about
    /// something else.
    #[error("the {attestation} evidence's REPORT_DATA is not SHA-512 of the statement the agent sent: REPORT_DATA {found}, SHA-512 of the statement {expected}")]
    ReportData { attestation: &'static str, expected: String, found: String },
    /// The TDX collateral file given cannot be used.
    #[error("TDX collateral {}: {reason}", path.display())]
    Collateral { path: PathBuf, reason: String },
    /// A file the loader would write in the output directory is a symbolic link: it is not
    /// followed (it could point anywhere).
    #[error("{} is a symbolic link: refusing to write through it (remove it, or use a fresh --out directory)", .0.display())]
    Symlink(PathBuf),
    /// `--import`: the evidence does not pass the verifier's policy, so nothing is imported.
    #[error("not importing: the evidence does not verify: {0}")]
    NotVerified(String),
}

/// Creates `path` for writing, never through a symbolic link: a link already there is refused,
/// a regular file replaced (O_CREAT|O_EXCL does not follow links, so a link made in between
/// fails the open).
fn create_fresh(path: &Path) -> Result<std::fs::File, BuildError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(BuildError::Symlink(path.to_path_buf())),
        Ok(_) => std::fs::remove_file(path).map_err(io(format!("replacing {}", path.display())))?,
        Err(_) => {}
    }
    std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(format!("creating {}", path.display())))
}

/// Renames `from` to `to` unless `to` is a symbolic link.
fn rename_into_place(from: &Path, to: &Path) -> Result<(), BuildError> {
    if std::fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(BuildError::Symlink(to.to_path_buf()));
    }
    std::fs::rename(from, to).map_err(io(format!("renaming {}", from.display())))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// One output as received and checked.
#[derive(Debug, Clone)]
pub struct BuiltOutput {
    pub name: String,
    pub path: String,
    pub nar: PathBuf,
    pub nar_size: u64,
    pub nar_sha256: [u8; 32],
    pub references: Vec<String>,
}

/// What a successful build produced.
#[derive(Debug)]
pub struct BuildReport {
    pub drv_path: String,
    pub outputs: Vec<BuiltOutput>,
    pub statement: Vec<u8>,
    /// "none", "sev-snp" or "tdx".
    pub attestation: String,
    pub evidence: PathBuf,
    /// The bundle written to `evidence`.
    pub bundle: measurement_tool::evidence::bundle::Bundle,
    /// What the evidence lacks for offline verification (SNP certificates the host did not
    /// supply, TDX collateral not given), in words for the user.
    pub evidence_notes: Vec<String>,
    pub input_paths: usize,
    pub input_bytes: u64,
    pub timings: vm::Timings,
    pub accel: vm::Accel,
}

/// Progress events, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Output bytes received so far.
    Received(u64),
}

/// Builds `drv_path` in a fresh agent; writes the outputs and `evidence.json` into `out_dir`.
/// `on_log(fd, bytes)` streams the builder's output.
pub fn build(
    config: &VmConfig,
    drv_path: &Path,
    out_dir: &Path,
    on_log: impl FnMut(u8, &[u8]),
    on_progress: impl FnMut(Progress),
) -> Result<BuildReport, BuildError> {
    let inputs = store::gather(drv_path)?;
    build_inputs(config, &inputs, out_dir, on_log, on_progress, &store::dump)
}

/// [`build`] from inputs already gathered; `dump` gives each input path's NAR. (Embedders with
/// their own store access use this; the tests use it to play a lying host.)
pub fn build_inputs(
    config: &VmConfig,
    inputs: &store::BuildInputs,
    out_dir: &Path,
    mut on_log: impl FnMut(u8, &[u8]),
    mut on_progress: impl FnMut(Progress),
    dump: &dyn Fn(&str) -> Result<Vec<u8>, StoreError>,
) -> Result<BuildReport, BuildError> {
    // A KVM that cannot run the builder is refused before anything is written.
    vm::check_sandbox_accel(config)?;
    // The collateral is checked before the VM starts: a wrong file must not cost a build.
    let collateral = match (&config.tee.tdx_collateral, config.tee.tee) {
        (None, _) => None,
        (Some(path), crate::tee::Tee::Tdx) => Some(crate::evidence::load_collateral(path)?),
        (Some(path), other) => {
            return Err(BuildError::Collateral { path: path.clone(), reason: format!("given for a {} launch; it only goes with --tee tdx", other.name()) })
        }
    };
    std::fs::create_dir_all(out_dir).map_err(io(format!("creating {}", out_dir.display())))?;
    let mut request = Vec::new();
    let drv_paths: Vec<&str> = inputs.input_drvs.keys().map(String::as_str).collect();
    let input_paths: Vec<&str> = inputs.input_paths.iter().map(String::as_str).collect();
    proto::encode_strings(&mut request, &[&inputs.drv_path]);
    proto::encode_strings(&mut request, &drv_paths);
    proto::encode_strings(&mut request, &input_paths);
    if inputs.resolved {
        // The request's fourth list: the mode (docs/build.md, "Resolved derivations").
        proto::encode_strings(&mut request, &["resolved"]);
    }
    let mut input_bytes = 0u64;
    let mut receiver = Receiver::new(out_dir);
    let mut store_error = None;
    let run = vm::run(
        config,
        |r| {
            r.frame(Type::Build, &request)?;
            r.bulk(&mut &inputs.drv[..], inputs.drv.len() as u64)?;
            for bytes in inputs.input_drvs.values() {
                r.bulk(&mut &bytes[..], bytes.len() as u64)?;
            }
            for p in &inputs.input_paths {
                let nar = match dump(p) {
                    Ok(n) => n,
                    Err(e) => {
                        store_error = Some(e);
                        return Err(VmError::Response("cannot read an input".into()));
                    }
                };
                input_bytes += nar.len() as u64;
                r.bulk(&mut &nar[..], nar.len() as u64)?;
            }
            Ok(())
        },
        |f| {
            if f.ty == Type::Output && !f.payload.is_empty() {
                on_log(f.payload[0], &f.payload[1..]);
            }
            receiver.frame(f);
            on_progress(Progress::Received(receiver.received));
        },
    );
    if let Some(e) = store_error {
        receiver.discard();
        return Err(e.into());
    }
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            receiver.discard();
            return Err(e.into());
        }
    };
    if let Some((code, text)) = crate::errors(&run.frames).into_iter().next() {
        receiver.discard();
        return Err(BuildError::Refused { code, text, log: receiver.log });
    }
    let (outputs, statement, assembled) = receiver.finish(&inputs.drv_path, &config.tee, collateral)?;
    let crate::evidence::Assembled { mut bundle, notes: evidence_notes } = assembled;
    // The host stack's versions, to explain a measurement that differs (unsigned, like the
    // rest of what the loader adds).
    bundle.host = Some(crate::tee::host_stack(&config.qemu));
    let attestation = bundle.attestation.clone();
    let evidence = write_evidence(out_dir, &bundle)?;
    Ok(BuildReport {
        drv_path: inputs.drv_path.clone(),
        outputs,
        statement,
        attestation,
        evidence,
        bundle,
        evidence_notes,
        input_paths: inputs.input_paths.len(),
        input_bytes,
        timings: run.timings,
        accel: run.accel,
    })
}

/// Writes `out_dir/evidence.json` whole (under a temporary name, then renamed), never through a
/// symbolic link.
pub fn write_evidence(out_dir: &Path, bundle: &measurement_tool::evidence::bundle::Bundle) -> Result<PathBuf, BuildError> {
    let evidence = out_dir.join("evidence.json");
    let partial = out_dir.join("evidence.json.partial");
    if std::fs::symlink_metadata(&evidence).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(BuildError::Symlink(evidence));
    }
    let written = create_fresh(&partial)?.write_all(bundle.to_json().as_bytes()).map_err(io(format!("writing {}", partial.display())));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    rename_into_place(&partial, &evidence)?;
    Ok(evidence)
}

/// Adds checked outputs to the local Nix store (see [`store::import`] for the mechanism), after
/// verifying the evidence exactly as `measurement-tool verify` does with `policy` (which must pin
/// the measurement for SNP/TDX evidence). `none` evidence is imported only with
/// `allow_unattested`.
pub fn import(report: &BuildReport, policy: &measurement_tool::evidence::policy::Policy, allow_unattested: bool) -> Result<(), BuildError> {
    use measurement_tool::evidence::check;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let supplied = check::Supplied { now, allow_unattested, ..check::Supplied::default() };
    let checked = check::check_bundle(&report.bundle, policy, &supplied).map_err(|e| BuildError::NotVerified(e.to_string()))?;
    if checked.attested && !checked.verified() {
        return Err(BuildError::NotVerified("the launch measurement was not checked against an expected one".into()));
    }
    if checked.statement != report.statement {
        return Err(BuildError::NotVerified("the bundle's statement is not the one received".into()));
    }
    import_outputs(report, &store::Store::default())
}

/// Adds a build's outputs to `store`, re-hashing each NAR against the statement first, with
/// their references as the agent found them and the derivation as deriver. The evidence is not
/// checked against a policy here ([`import`] does that): a remote builder (`loader --serve`)
/// imports what its own agent built, with the receiver's checks (binding, digests) passed, and
/// leaves the policy to whoever consumes the outputs.
pub fn import_outputs(report: &BuildReport, store: &store::Store) -> Result<(), BuildError> {
    let nars: Vec<Vec<u8>> = report
        .outputs
        .iter()
        .map(|o| std::fs::read(&o.nar).map_err(io(format!("reading {}", o.nar.display()))))
        .collect::<Result<_, _>>()?;
    // Re-check what is about to go into the store against the statement's digests.
    for (o, nar) in report.outputs.iter().zip(&nars) {
        if <[u8; 32]>::from(Sha256::digest(nar)) != o.nar_sha256 {
            return Err(BuildError::Response(format!("{} changed on disk since the build", o.nar.display())));
        }
    }
    // Outputs that refer to each other must be imported referrers last; nix-store --import
    // checks references exist, so import in dependency order.
    let mut order: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..report.outputs.len()).collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|&i| {
            let o = &report.outputs[i];
            let ready = o.references.iter().all(|r| *r == o.path || !report.outputs.iter().any(|x| x.path == *r) || order.iter().any(|&j| report.outputs[j].path == *r));
            if ready {
                order.push(i);
            }
            !ready
        });
        if left.len() == before {
            order.append(&mut left); // a reference cycle between outputs: one stream takes them all
        }
    }
    let imports: Vec<store::Import<'_>> = order
        .iter()
        .map(|&i| store::Import { path: &report.outputs[i].path, nar: &nars[i], references: &report.outputs[i].references, deriver: &report.drv_path })
        .collect();
    store::import_into(store, &imports)?;
    Ok(())
}

/// Collects the agent's answer frame by frame: output NARs straight into `*.nar.partial` files
/// (hashed as they arrive), the statement, the evidence.
struct Receiver {
    dir: PathBuf,
    state: State,
    outputs: Vec<(String, String, PathBuf, u64, [u8; 32])>,
    statement: Option<Vec<u8>>,
    evidence: Option<Vec<u8>>,
    log: Vec<u8>,
    received: u64,
    error: Option<String>,
    /// Every `*.nar.partial` file created, so that a failure at any point (a write that fails
    /// on a full disk drops the open file with the state) removes them all.
    partials: Vec<PathBuf>,
    /// A local write that failed (a full disk): the host's fault, not a malformed answer.
    write_error: Option<(String, std::io::Error)>,
}

enum State {
    Idle,
    /// An output announced; its BulkBegin is next.
    OutputBegin { name: String, path: String },
    Output { name: String, path: String, file: std::fs::File, partial: PathBuf, left: u64, total: u64, hasher: Sha256 },
    StatementBegin,
    Statement { bytes: Vec<u8>, left: u64 },
}

impl Receiver {
    fn new(dir: &Path) -> Self {
        Receiver { dir: dir.to_path_buf(), state: State::Idle, outputs: Vec::new(), statement: None, evidence: None, log: Vec::new(), received: 0, error: None, partials: Vec::new(), write_error: None }
    }

    fn fail(&mut self, e: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(e.into());
        }
        self.state = State::Idle;
    }

    fn frame(&mut self, f: &Frame) {
        if self.error.is_some() {
            return;
        }
        match (std::mem::replace(&mut self.state, State::Idle), f.ty) {
            (_, Type::Output) => {
                if let Some((_, bytes)) = f.payload.split_first() {
                    if self.log.len() < 1 << 20 {
                        self.log.extend_from_slice(bytes);
                    }
                }
            }
            (State::Idle, Type::BuildOutput) => match proto::decode_strings(&f.payload) {
                Some((v, rest)) if v.len() == 2 && rest.is_empty() && safe_name(&v[0]) => {
                    self.state = State::OutputBegin { name: v[0].clone(), path: v[1].clone() }
                }
                _ => self.fail("malformed BuildOutput"),
            },
            (State::OutputBegin { name, path }, Type::BulkBegin) => {
                let Some(total) = proto::parse_u64(&f.payload) else { return self.fail("malformed BulkBegin") };
                let partial = self.dir.join(format!("{name}.nar.partial"));
                self.partials.push(partial.clone());
                match create_fresh(&partial) {
                    Ok(file) => self.state = State::Output { name, path, file, partial, left: total, total, hasher: Sha256::new() },
                    Err(e) => self.fail(e.to_string()),
                }
                self.end_output_if_done();
            }
            (State::Output { name, path, mut file, partial, left, total, mut hasher }, Type::BulkData) => {
                if f.payload.len() as u64 > left {
                    return self.fail("output longer than announced");
                }
                if let Err(e) = file.write_all(&f.payload) {
                    self.write_error = Some((format!("writing {}", partial.display()), e));
                    return self.fail("a local write failed");
                }
                hasher.update(&f.payload);
                self.received += f.payload.len() as u64;
                self.state = State::Output { name, path, file, partial, left: left - f.payload.len() as u64, total, hasher };
                self.end_output_if_done();
            }
            (State::Idle, Type::Statement) => self.state = State::StatementBegin,
            (State::StatementBegin, Type::BulkBegin) => match proto::parse_u64(&f.payload) {
                Some(total) if total <= 256 << 20 => {
                    self.state = State::Statement { bytes: Vec::new(), left: total };
                    self.end_statement_if_done();
                }
                _ => self.fail("malformed statement transfer"),
            },
            (State::Statement { mut bytes, left }, Type::BulkData) if f.payload.len() as u64 <= left => {
                bytes.extend_from_slice(&f.payload);
                self.state = State::Statement { bytes, left: left - f.payload.len() as u64 };
                self.end_statement_if_done();
            }
            (State::Idle, Type::Evidence) => self.evidence = Some(f.payload.clone()),
            (s, Type::Hello | Type::Log | Type::Error | Type::Bye) => self.state = s,
            (_, other) => self.fail(format!("unexpected {other:?} frame")),
        }
    }

    fn end_output_if_done(&mut self) {
        if let State::Output { left: 0, .. } = &self.state {
            if let State::Output { name, path, partial, total, hasher, .. } = std::mem::replace(&mut self.state, State::Idle) {
                self.outputs.push((name, path, partial, total, hasher.finalize().into()));
            }
        }
    }

    fn end_statement_if_done(&mut self) {
        if let State::Statement { left: 0, .. } = &self.state {
            if let State::Statement { bytes, .. } = std::mem::replace(&mut self.state, State::Idle) {
                self.statement = Some(bytes);
            }
        }
    }

    /// Removes every partial file.
    fn discard(&mut self) {
        self.state = State::Idle;
        self.outputs.clear();
        for partial in self.partials.drain(..) {
            // Only what this build created: a name we never got to create may be someone's.
            if std::fs::symlink_metadata(&partial).is_ok_and(|m| m.file_type().is_file()) {
                let _ = std::fs::remove_file(partial);
            }
        }
    }

    /// Checks every received NAR and the evidence against the statement, then gives the files
    /// their names. On any error every partial file is removed.
    fn finish(mut self, drv_path: &str, tee: &crate::tee::TeeConfig, collateral: Option<serde_json::Value>) -> Result<(Vec<BuiltOutput>, Vec<u8>, Assembled), BuildError> {
        let result = self.check(drv_path, tee, collateral);
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn check(&mut self, drv_path: &str, tee: &crate::tee::TeeConfig, collateral: Option<serde_json::Value>) -> Result<(Vec<BuiltOutput>, Vec<u8>, Assembled), BuildError> {
        if let Some((what, source)) = self.write_error.take() {
            return Err(BuildError::Io { what, source });
        }
        if let Some(e) = &self.error {
            return Err(BuildError::Response(e.clone()));
        }
        let (Some(statement), Some(evidence)) = (self.statement.clone(), self.evidence.clone()) else {
            return Err(BuildError::Response("the agent did not finish the build (no statement or evidence)".into()));
        };
        // The evidence first: nothing is renamed into place unless it is the kind asked for and
        // binds this statement.
        let evidence = proto::parse_evidence(&evidence).map_err(BuildError::Evidence)?;
        let attested = attestation_name(evidence.kind);
        if attested != tee.tee.name() {
            return Err(BuildError::AttestationMismatch { attested, expected: tee.tee.name(), by: "the launch (--tee)" });
        }
        let st: serde_json::Value = serde_json::from_slice(&statement).map_err(|e| BuildError::Response(format!("statement: {e}")))?;
        let named = st["predicate"]["runDetails"]["metadata"]["attestation"].as_str().unwrap_or("(nothing)");
        if named != attested {
            let expected = ["none", "sev-snp", "tdx"].into_iter().find(|k| *k == named).unwrap_or("(not an attestation kind)");
            return Err(BuildError::AttestationMismatch { attested, expected, by: "the statement" });
        }
        let assembled = crate::evidence::evidence_bundle(&statement, &evidence, crate::evidence::snp_launch(tee), collateral)?;
        let subjects = statement_subjects(&statement).map_err(BuildError::Response)?;
        let drv_in_statement = st["predicate"]["buildDefinition"]["externalParameters"]["derivation"].as_str();
        if drv_in_statement != Some(drv_path) {
            return Err(BuildError::Response("the statement is about another derivation".into()));
        }
        if subjects.len() != self.outputs.len() {
            return Err(BuildError::Response("the statement and the outputs received differ in number".into()));
        }
        let mut built = Vec::new();
        for (name, path, _, size, sha) in &self.outputs {
            let Some((spath, digest, refs)) = subjects.get(name) else {
                return Err(BuildError::Response(format!("output '{name}' is not in the statement")));
            };
            if spath != path || *digest != *sha {
                return Err(BuildError::Response(format!("output '{name}': the NAR received does not match the statement")));
            }
            let nar = self.dir.join(format!("{name}.nar"));
            built.push(BuiltOutput { name: name.clone(), path: path.clone(), nar: nar.clone(), nar_size: *size, nar_sha256: *sha, references: refs.clone() });
        }
        // No final name may be a symbolic link: checked for all before any rename, so a refusal
        // still leaves only partial files (removed by `finish`).
        for (name, _, _, _, _) in &self.outputs {
            let nar = self.dir.join(format!("{name}.nar"));
            if std::fs::symlink_metadata(&nar).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(BuildError::Symlink(nar));
            }
        }
        for (name, _, partial, _, _) in self.outputs.drain(..) {
            let nar = self.dir.join(format!("{name}.nar"));
            rename_into_place(&partial, &nar)?;
        }
        Ok((built, statement, assembled))
    }
}

/// Output names become file names: letters, digits and `+-._?=` only, as Nix allows.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-_?=".contains(&c))
}

/// Output name → (store path, NAR SHA-256, references) from a statement.
#[allow(clippy::type_complexity)]
fn statement_subjects(statement: &[u8]) -> Result<BTreeMap<String, (String, [u8; 32], Vec<String>)>, String> {
    let v: serde_json::Value = serde_json::from_slice(statement).map_err(|e| format!("statement: {e}"))?;
    let mut out = BTreeMap::new();
    for s in v["subject"].as_array().ok_or("statement without subjects")? {
        let path = s["name"].as_str().ok_or("subject without name")?.to_string();
        let name = s["annotations"]["output"].as_str().ok_or("subject without output name")?.to_string();
        let hex = s["digest"]["sha256"].as_str().ok_or("subject without sha256")?;
        let digest: [u8; 32] = hex::decode(hex).ok().and_then(|d| d.try_into().ok()).ok_or("bad sha256")?;
        let refs = s["annotations"]["references"].as_array().ok_or("subject without references")?.iter().filter_map(|r| r.as_str().map(String::from)).collect();
        out.insert(name, (path, digest, refs));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The receiving end of a build, frame by frame, as the agent would send it: nothing is
    //! renamed into place (and `build_inputs` writes no evidence.json) unless the evidence is of
    //! the kind launched, the kind the statement names, and binds the statement.
    use super::*;
    use agent::proto::AttestationKind;
    use agent::statement::{Output, Statement};
    use crate::tee::{Tee, TeeConfig};

    const DRV: &str = "/nix/store/00000000000000000000000000000000-x.drv";
    const NAR: &[u8] = b"a NAR, as far as the receiver is concerned";

    fn statement(kind: AttestationKind) -> Vec<u8> {
        Statement {
            drv_path: DRV.into(),
            drv_sha256: [1; 32],
            resolved: false,
            outputs: vec![Output { name: "out".into(), path: "/nix/store/11111111111111111111111111111111-x".into(), nar_sha256: Sha256::digest(NAR).into(), references: vec![] }],
            inputs: vec![],
            agent_version: agent::VERSION.into(),
            attestation: kind,
        }
        .to_json()
        .into_bytes()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("loader-receiver-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn files(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Feeds the frames of a whole successful answer: one output, the statement, `evidence`.
    fn feed(r: &mut Receiver, statement: &[u8], evidence: &[u8]) {
        let f = |ty, payload: &[u8]| Frame { ty, payload: payload.to_vec() };
        let mut names = Vec::new();
        proto::encode_strings(&mut names, &["out", "/nix/store/11111111111111111111111111111111-x"]);
        r.frame(&f(Type::BuildOutput, &names));
        r.frame(&f(Type::BulkBegin, &(NAR.len() as u64).to_le_bytes()));
        r.frame(&f(Type::BulkData, NAR));
        r.frame(&f(Type::Statement, b""));
        r.frame(&f(Type::BulkBegin, &(statement.len() as u64).to_le_bytes()));
        r.frame(&f(Type::BulkData, statement));
        r.frame(&f(Type::Evidence, evidence));
    }

    /// Feeds a whole successful answer (one output, the statement, `evidence`) and finishes.
    fn receive(d: &Path, statement: &[u8], evidence: Vec<u8>, tee: Tee) -> Result<(Vec<BuiltOutput>, Vec<u8>, Assembled), BuildError> {
        let mut r = Receiver::new(d);
        feed(&mut r, statement, &evidence);
        assert_eq!(files(d), vec!["out.nar.partial"]);
        r.finish(DRV, &TeeConfig { tee, ..TeeConfig::default() }, None)
    }

    #[test]
    fn an_answer_that_ends_after_the_statement_publishes_nothing() {
        // QEMU gone after the statement, before the evidence: the outputs and the statement
        // arrived, the evidence did not.
        let d = dir("no-evidence");
        let st = statement(AttestationKind::None);
        let mut r = Receiver::new(&d);
        feed(&mut r, &st, b"");
        r.evidence = None;
        assert_eq!(files(&d), vec!["out.nar.partial"]);
        let e = r.finish(DRV, &TeeConfig::default(), None).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("no statement or evidence"), "{e}");
        assert_eq!(files(&d), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_output_that_fails_mid_transfer_leaves_no_partial_file() {
        // The open partial file belongs to the receiver's state, which a failure drops: the
        // file must still be removed (it was left behind, e.g. on a full disk).
        let d = dir("mid-transfer");
        let f = |ty, payload: &[u8]| Frame { ty, payload: payload.to_vec() };
        let mut names = Vec::new();
        proto::encode_strings(&mut names, &["out", "/nix/store/11111111111111111111111111111111-x"]);
        let mut r = Receiver::new(&d);
        r.frame(&f(Type::BuildOutput, &names));
        r.frame(&f(Type::BulkBegin, &4u64.to_le_bytes()));
        r.frame(&f(Type::BulkData, b"12"));
        assert_eq!(files(&d), vec!["out.nar.partial"]);
        r.frame(&f(Type::BulkData, b"345")); // longer than announced: the receiver fails
        assert!(r.error.is_some());
        r.discard();
        assert_eq!(files(&d), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn milan_report() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/snp/report_milan.hex");
        hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap()
    }

    #[test]
    fn unattested_evidence_that_binds_the_statement_is_accepted() {
        let d = dir("ok");
        let st = statement(AttestationKind::None);
        let ev = proto::evidence_payload(AttestationKind::None, &agent::statement::report_data(&st), &[]);
        let (outputs, got, assembled) = receive(&d, &st, ev, Tee::None).unwrap();
        assert_eq!((outputs.len(), got, assembled.bundle.attestation.as_str()), (1, st, "none"));
        assert_eq!(files(&d), vec!["out.nar"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn evidence_that_does_not_bind_the_statement_leaves_nothing() {
        // Unsigned REPORT_DATA of another statement.
        let d = dir("none-unbound");
        let st = statement(AttestationKind::None);
        let ev = proto::evidence_payload(AttestationKind::None, &agent::statement::report_data(b"another statement"), &[]);
        assert!(matches!(receive(&d, &st, ev, Tee::None), Err(BuildError::ReportData { attestation: "none", .. })));
        assert_eq!(files(&d), Vec::<String>::new());
        // A real SNP report (tests/vectors), launched as SNP: its REPORT_DATA is not ours.
        let d = dir("snp-unbound");
        let st = statement(AttestationKind::SevSnp);
        let report = milan_report();
        let ev = proto::evidence_payload(AttestationKind::SevSnp, &report, &[]);
        match receive(&d, &st, ev, Tee::Snp) {
            Err(BuildError::ReportData { attestation: "sev-snp", found, .. }) => assert_eq!(found, hex::encode(&report[0x50..0x90])),
            other => panic!("expected the REPORT_DATA refusal, got {other:?}"),
        }
        assert_eq!(files(&d), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn evidence_of_another_kind_or_malformed_leaves_nothing() {
        let st = statement(AttestationKind::None);
        let none = proto::evidence_payload(AttestationKind::None, &agent::statement::report_data(&st), &[]);
        // Launched as SNP, attested as none: refused (the platform was not what was asked for).
        let d = dir("kind-launch");
        match receive(&d, &st, none.clone(), Tee::Snp) {
            Err(BuildError::AttestationMismatch { attested: "none", expected: "sev-snp", by }) => assert!(by.contains("--tee")),
            other => panic!("{other:?}"),
        }
        assert_eq!(files(&d), Vec::<String>::new());
        // The statement names another kind than the evidence is.
        let d = dir("kind-statement");
        let st_snp = statement(AttestationKind::SevSnp);
        let ev = proto::evidence_payload(AttestationKind::None, &agent::statement::report_data(&st_snp), &[]);
        match receive(&d, &st_snp, ev, Tee::None) {
            Err(BuildError::AttestationMismatch { attested: "none", expected: "sev-snp", by: "the statement" }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(files(&d), Vec::<String>::new());
        // Malformed payloads: truncated, trailing bytes, too many certificates.
        let mut many = proto::evidence_payload(AttestationKind::None, &[0; 64], &[]);
        let n = many.len();
        many[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        for (bad, want) in [
            (none[..none.len() - 1].to_vec(), proto::EvidenceError::Truncated("the certificate count")),
            ([&none[..], &[0]].concat(), proto::EvidenceError::TrailingBytes(1)),
            (many, proto::EvidenceError::TooManyCertificates(1000)),
        ] {
            let d = dir("malformed");
            match receive(&d, &st, bad, Tee::None) {
                Err(BuildError::Evidence(e)) => assert_eq!(e, want),
                other => panic!("{other:?}"),
            }
            assert_eq!(files(&d), Vec::<String>::new());
        }
        let _ = std::fs::remove_dir_all(dir("malformed"));
    }

    /// Symbolic links already in the output directory are never written through: not at a
    /// partial file's name, not at an output's final name, not at evidence.json; the files they
    /// point to are untouched and no output is left behind.
    #[test]
    fn the_output_directory_symlinks_are_not_followed() {
        let st = statement(AttestationKind::None);
        let ev = || proto::evidence_payload(AttestationKind::None, &agent::statement::report_data(&st), &[]);
        for link in ["out.nar.partial", "out.nar"] {
            let d = dir(&format!("symlink-{link}"));
            let victim = d.join("victim");
            std::fs::write(&victim, b"precious").unwrap();
            std::os::unix::fs::symlink(&victim, d.join(link)).unwrap();
            let mut r = Receiver::new(&d);
            feed(&mut r, &st, &ev());
            let e = r.finish(DRV, &TeeConfig::default(), None).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{link}: {e}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
            assert_eq!(files(&d), vec![link.to_string(), "victim".to_string()], "{link}");
            let _ = std::fs::remove_dir_all(&d);
        }
        let d = dir("symlink-evidence");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("evidence.json")).unwrap();
        let bundle = measurement_tool::evidence::bundle::Bundle::unattested(&st);
        assert!(matches!(write_evidence(&d, &bundle), Err(BuildError::Symlink(_))));
        std::os::unix::fs::symlink(&victim, d.join("evidence.json.partial")).unwrap();
        std::fs::remove_file(d.join("evidence.json")).unwrap();
        assert!(matches!(write_evidence(&d, &bundle), Err(BuildError::Symlink(_))));
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_file(d.join("evidence.json.partial")).unwrap();
        let written = write_evidence(&d, &bundle).unwrap();
        assert_eq!(std::fs::read_to_string(written).unwrap(), bundle.to_json());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn collateral_is_checked_before_the_vm_starts() {
        let inputs = store::BuildInputs { drv_path: DRV.into(), drv: vec![], input_drvs: BTreeMap::new(), input_paths: vec![], resolved: false };
        let out = std::env::temp_dir().join(format!("loader-receiver-{}-collateral-out", std::process::id()));
        let missing = std::env::temp_dir().join(format!("loader-receiver-{}-no-such-collateral.json", std::process::id()));
        // No agent image and no QEMU are needed: the refusal comes first, and nothing is created.
        for tee in [Tee::Tdx, Tee::None, Tee::Snp] {
            let mut config = VmConfig::new("/nonexistent/agent.bin");
            config.tee = TeeConfig { tee, tdx_collateral: Some(missing.clone()), ..TeeConfig::default() };
            let r = build_inputs(&config, &inputs, &out, |_, _| {}, |_| {}, &|_| unreachable!());
            match r {
                Err(BuildError::Collateral { path, reason }) => {
                    assert_eq!(path, missing);
                    assert_eq!(tee == Tee::Tdx, !reason.contains("only goes with --tee tdx"), "{reason}");
                }
                other => panic!("{tee:?}: {other:?}"),
            }
            assert!(!out.exists());
        }
    }
}
