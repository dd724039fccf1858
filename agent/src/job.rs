//! One build, in the order the agent runs it:
//!
//! 1. **request** — the `.drv` path, input derivations and input paths, then their bytes;
//! 2. **plan** — `.drv` path and output paths recomputed from the ATerms (`agent::build::plan`);
//! 3. **store** — every input NAR unpacked into the sandbox file system as it arrives, hashed
//!    and scanned for references on the way; the input closure and fixed-output inputs checked;
//! 4. **sandbox** — the builder run as Nix's sandbox runs it (`agent::build::env`);
//! 5. **hash** — every declared output must exist; each is NAR-serialised, hashed and scanned;
//!    fixed-output hashes and Nix's output checks applied;
//! 6. **attest** — the statement, REPORT_DATA = SHA-512(statement), the evidence;
//! 7. **publish** — only now, with every check passed, the outputs, statement and evidence go
//!    out. Any failure before step 7 sends one Error frame and nothing else: no partial result.
use crate::{arch, error, run_sandbox, Reader, Writer};
use agent::build::plan::{self, FixedContent, InputInfo, Plan};
use agent::build::{checks, env};
use agent::channel::{Incoming, StreamError};
use agent::nix::nar::{self, NarSource};
use agent::nix::refs::RefScanner;
use agent::nix::hash::{Algo, Hash, Hasher};
use agent::nix::store_path::Method;
use agent::proto::{self, AttestationKind, ErrorCode, Type};
use agent::sandbox::fs::{self, Fs, Kind};
use agent::sandbox::process::{Kernel, Limits, Status};
use agent::statement::{self, Statement};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use agent::sha256::Sha256;

/// The most input derivations and input paths one request may name.
const MAX_INPUTS: usize = 100_000;
/// The largest `.drv` file accepted.
const MAX_ATERM: u64 = 64 << 20;
/// Inodes in the sandbox file system.
const MAX_INODES: usize = 1_000_000;
/// CPU time for one build: 10 ms ticks (one hour).
const CPU_TICKS: u64 = 360_000;
/// Processes one build may have at once.
const MAX_PROCESSES: usize = 256;
/// The builder's log (stdout and stderr together): past it the build ends with SIGXFSZ.
const MAX_LOG: u64 = 256 << 20;
/// `NIX_BUILD_CORES`: fixed, so the host's vCPU count cannot leak into outputs.
const BUILD_CORES: u32 = 1;

/// Why a build stopped: a protocol failure (the channel is unusable) or a refusal (sent to the
/// loader as one Error frame).
enum Stop {
    Channel(StreamError),
    Refuse(ErrorCode, String),
}

impl From<StreamError> for Stop {
    fn from(e: StreamError) -> Stop {
        Stop::Channel(e)
    }
}

fn refuse<T>(code: ErrorCode, text: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Refuse(code, text.into()))
}

/// Runs the build a `Build` frame asks for; the request stream is consumed whatever happens.
pub fn build(input: &mut Reader, out: &mut Writer, request: &[u8]) -> Result<(), StreamError> {
    match run(input, out, request) {
        Ok(()) => Ok(()),
        Err(Stop::Channel(e)) => Err(e),
        Err(Stop::Refuse(code, text)) => error(out, code, &text),
    }
}

fn run(input: &mut Reader, out: &mut Writer, request: &[u8]) -> Result<(), Stop> {
    // 1. The request.
    let lists = proto::decode_strings(request).and_then(|(a, r)| {
        let (b, r) = proto::decode_strings(r)?;
        let (c, r) = proto::decode_strings(r)?;
        // An optional fourth list: the mode, `["resolved"]` for a resolved derivation.
        let (mode, r) = if r.is_empty() { (Vec::new(), r) } else { proto::decode_strings(r)? };
        r.is_empty().then_some((a, b, c, mode))
    });
    let Some((drv, input_drv_paths, input_paths, mode)) = lists else {
        return refuse(ErrorCode::BadPayload, "Build: malformed request");
    };
    let resolved = match mode.as_slice() {
        [] => false,
        [m] if m == "resolved" => true,
        _ => return refuse(ErrorCode::BadPayload, "Build: unknown mode"),
    };
    if resolved && !input_drv_paths.is_empty() {
        return refuse(ErrorCode::BadPayload, "Build: a resolved derivation comes without input derivations");
    }
    let [drv_path] = drv.as_slice() else { return refuse(ErrorCode::BadPayload, "Build: expected one .drv path") };
    if input_drv_paths.len() > MAX_INPUTS || input_paths.len() > MAX_INPUTS {
        return refuse(ErrorCode::BadPayload, "Build: too many inputs");
    }
    log::info!("build: {drv_path}: {} input derivations, {} input paths", input_drv_paths.len(), input_paths.len());
    // The log so far reaches the loader now (two disk requests), not after the inputs: what a
    // build was asked is in agent.log even if it never gets further.
    out.flush()?;
    let aterm = receive_bytes(input, MAX_ATERM)?;
    let mut input_drvs = BTreeMap::new();
    for p in input_drv_paths {
        let bytes = receive_bytes(input, MAX_ATERM)?;
        if input_drvs.insert(p.clone(), bytes).is_some() {
            return refuse(ErrorCode::BadInput, format!("input derivation '{p}' sent twice"));
        }
    }

    // 2. The plan: nothing the loader said is believed.
    let planned = if resolved { plan::plan_resolved(drv_path, &aterm) } else { plan::plan(drv_path, &aterm, &input_drvs) };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => return refuse(ErrorCode::BadDerivation, e.to_string()),
    };
    drop(input_drvs);

    // 3. The inputs, straight into the sandbox's store.
    let heap = arch::memory::heap_bytes();
    let mut fs = match Fs::nix_sandbox(heap / 2, MAX_INODES) {
        Ok(fs) => fs,
        Err(e) => return refuse(ErrorCode::Sandbox, format!("sandbox file system: {}", e.name())),
    };
    let by_hash = match plan::check_input_paths(&plan, &input_paths) {
        Ok(m) => m,
        Err(e) => return refuse(ErrorCode::BadInput, e.to_string()),
    };
    let mut inputs = BTreeMap::new();
    let mut fixed_nar_hashes = BTreeMap::new();
    for p in &input_paths {
        // A recursive fixed-output input's NAR is also hashed with its declared algorithm.
        let algo = plan.fixed_inputs.get(p).filter(|f| f.method == Method::Recursive).map(|f| f.hash.algo);
        let (info, fixed_hash) = unpack_input(input, &mut fs, p, &by_hash, algo)?;
        inputs.insert(p.clone(), info);
        if let Some(h) = fixed_hash {
            fixed_nar_hashes.insert(p.clone(), h);
        }
    }
    if let Err(e) = plan::check_inputs(&plan, &inputs) {
        return refuse(ErrorCode::BadInput, e.to_string());
    }
    for (p, fixed) in &plan.fixed_inputs {
        let content = FixedContent { nar_hash: fixed_nar_hashes.get(p), file: single_file(&fs, p) };
        if let Err(e) = plan::check_fixed(p, fixed, content) {
            return refuse(ErrorCode::BadInput, e.to_string());
        }
    }
    log::info!("build: {} inputs unpacked and checked ({} bytes)", inputs.len(), fs.used_bytes());

    // 4. The builder, in the sandbox.
    // The log may use a quarter of the response stream's room at most: the outputs follow it.
    let log_bytes = MAX_LOG.min(out.room() / 4);
    let mut kernel = start_builder(fs, &plan, heap, log_bytes)?;
    let status = run_sandbox(&mut kernel, out)?;
    // A failed builder that ran into one of the sandbox's limits: the error names it.
    let limits = kernel.limits_reached_text().map(|t| format!("; the sandbox's limits were reached: {t}")).unwrap_or_default();
    // Where the time went (make bench reads these lines): CPU ticks of 10 ms, all processes,
    // ring 3 and the agent's share on their behalf.
    log::info!(
        "build: builder ended ({status:?}): {} ticks of CPU, {} of them the agent's",
        kernel.ticks,
        kernel.agent_ticks
    );
    match status {
        Status::Exited(0) => {}
        Status::Exited(c) => return refuse(ErrorCode::BuildFailed, format!("builder for '{drv_path}' failed with exit code {c}{limits}")),
        Status::Signaled(s) => return refuse(ErrorCode::BuildFailed, format!("builder for '{drv_path}' was killed by signal {s}{limits}")),
    }

    // 5. The outputs: exist, hashed, scanned, checked.
    let fs = &kernel.fs;
    let mut candidates: BTreeMap<String, String> = by_hash;
    for p in plan.outputs.values() {
        candidates.insert(p.hash_part().to_string(), p.to_path());
    }
    let mut outputs: BTreeMap<String, (String, checks::PathInfo)> = BTreeMap::new();
    let mut digests = BTreeMap::new();
    let mut inos = BTreeMap::new();
    for (name, path) in &plan.outputs {
        let path = path.to_path();
        let Ok(ino) = fs.resolve(fs::ROOT, path.as_bytes(), false) else {
            return refuse(ErrorCode::BadOutput, format!("builder for '{drv_path}' failed to produce output path for output '{name}' at '{path}'"));
        };
        let mut hasher = Sha256::new();
        let mut scanner = RefScanner::new(candidates.keys().map(String::as_str));
        let mut fixed_hasher = plan.fixed.as_ref().filter(|f| f.method == Method::Recursive).map(|f| Hasher::new(f.hash.algo));
        let mut size = 0u64;
        let tree = fs.tree(ino);
        if let Err(e) = nar::serialize(&tree, &mut |b| {
            hasher.update(b);
            scanner.update(b);
            if let Some(h) = &mut fixed_hasher {
                h.update(b);
            }
            size += b.len() as u64;
        }) {
            return refuse(ErrorCode::BadOutput, format!("output '{name}' cannot be serialised: {}", e.name()));
        }
        let references: BTreeSet<String> = agent::btree::set(scanner.found().filter_map(|h| candidates.get(&h).cloned()));
        let sha: [u8; 32] = hasher.finalize().into();
        if let Some(fixed) = &plan.fixed {
            let nar_hash = fixed_hasher.map(Hasher::finish);
            let content = FixedContent { nar_hash: nar_hash.as_ref(), file: single_file(fs, &path) };
            match plan::check_fixed(&path, fixed, content) {
                Ok(()) => {}
                Err(e @ plan::PlanError::FlatNotRegular(_)) => return refuse(ErrorCode::BadOutput, e.to_string()),
                Err(e) => return refuse(ErrorCode::BadOutput, format!("hash mismatch in fixed-output derivation '{drv_path}': {e}")),
            }
        }
        digests.insert(name.clone(), sha);
        inos.insert(name.clone(), ino);
        outputs.insert(name.clone(), (path, checks::PathInfo { nar_size: size, references }));
    }
    let input_infos: BTreeMap<String, checks::PathInfo> =
        agent::btree::map(inputs.iter().map(|(p, i)| (p.clone(), checks::PathInfo { nar_size: i.nar_size, references: i.references.clone() })));
    if let Err(e) = checks::check_outputs(&outputs, &input_infos, &plan.drv.env, plan.structured.as_ref()) {
        return refuse(ErrorCode::BadOutput, e.to_string());
    }

    log::info!("build: {} outputs hashed and checked ({} NAR bytes)", outputs.len(), outputs.values().map(|(_, i)| i.nar_size).sum::<u64>());

    // 6. The statement and the evidence.
    let st = Statement {
        drv_path: drv_path.clone(),
        drv_sha256: plan.drv_sha256,
        resolved: plan.resolved,
        outputs: outputs
            .iter()
            .map(|(name, (path, info))| statement::Output {
                name: name.clone(),
                path: path.clone(),
                nar_sha256: digests[name],
                references: info.references.iter().cloned().collect(),
            })
            .collect(),
        inputs: inputs
            .iter()
            .map(|(p, i)| statement::Input { path: p.clone(), nar_sha256: i.nar_sha256, references: i.references.iter().cloned().collect() })
            .collect(),
        agent_version: agent::VERSION.to_string(),
        attestation: arch::tee::kind().attestation(),
    };
    let statement_bytes = st.to_json().into_bytes();
    let report_data = statement::report_data(&statement_bytes);
    let (kind, report, certificates) = attest(&report_data)?;

    // 7. Publish: outputs, statement, evidence.
    for (name, (path, info)) in &outputs {
        let mut p = Vec::new();
        proto::encode_strings(&mut p, &[name, path]);
        out.send(Type::BuildOutput, &p)?;
        send_nar(out, &fs.tree(inos[name]), info.nar_size)?;
    }
    out.send(Type::Statement, b"")?;
    send_bytes(out, &statement_bytes)?;
    out.send(Type::Evidence, &proto::evidence_payload(kind, &report, &certificates))?;
    log::info!("memory: heap peak {} MiB of {} MiB", arch::memory::heap_peak() >> 20, arch::memory::heap_bytes() >> 20);
    out.flush()?;
    log::info!("build: {drv_path}: {} outputs published", outputs.len());
    Ok(())
}

/// The attester for the platform found at boot. Without a TEE nothing signs REPORT_DATA: the
/// evidence says `none` and carries REPORT_DATA itself, unsigned (a checksum of the statement,
/// nothing more). Inside SEV-SNP or a TD the report comes from the hardware (`arch::tee::attest`:
/// MSG_REPORT_REQ to the PSP, or TDG.MR.REPORT + GetQuote); if it cannot be had, the build is
/// refused — never published with weaker evidence than the platform it ran on.
fn attest(report_data: &[u8; 64]) -> Result<(AttestationKind, Vec<u8>, Vec<agent::tee::Certificate>), Stop> {
    match arch::tee::kind() {
        agent::tee::Kind::None => Ok((AttestationKind::None, report_data.to_vec(), Vec::new())),
        kind => match arch::tee::attest(report_data) {
            Ok(e) => Ok((kind.attestation(), e.report, e.certificates)),
            Err(e) => refuse(
                ErrorCode::Attestation,
                format!("running as {}, the hardware did not sign the statement: {e:?}", agent::statement::attestation_name(kind.attestation())),
            ),
        },
    }
}

/// The builder's process, started as Nix 2.8 starts it, in a kernel with this build's limits
/// (the file system may use half the heap, the builder's processes a quarter).
fn start_builder(fs: Fs, plan: &Plan, heap: u64, log_bytes: u64) -> Result<Kernel<arch::user::AddressSpace>, Stop> {
    let outputs: BTreeMap<String, String> = agent::btree::map(plan.outputs.iter().map(|(n, p)| (n.clone(), p.to_path())));
    let d = &plan.drv;
    let drv_env = env::DrvEnv { builder: &d.builder, args: &d.args, env: &d.env, outputs: &outputs, fixed_output: plan.fixed.is_some() };
    let setup = match env::builder_setup(&drv_env, BUILD_CORES) {
        Ok(s) => s,
        Err(e) => return refuse(ErrorCode::BadDerivation, format!("builder environment: {e:?}")),
    };
    let mut kernel = Kernel::new(fs, Limits { memory: heap / 4, processes: MAX_PROCESSES, cpu_ticks: CPU_TICKS, log_bytes });
    let Ok(space) = arch::user::AddressSpace::new() else { return refuse(ErrorCode::Sandbox, "out of memory") };
    if let Err(e) = kernel.start_builder(space, &setup) {
        return refuse(ErrorCode::BuildFailed, format!("cannot start the builder '{}': {}", setup.program, e.name()));
    }
    Ok(kernel)
}

/// The announced length of the next bulk transfer, at most `max`.
fn bulk_begin(input: &mut Reader, max: u64) -> Result<u64, Stop> {
    match input.next()? {
        Incoming::Frame(Type::BulkBegin, p) => match proto::parse_u64(&p) {
            Some(t) if t <= max => Ok(t),
            _ => refuse(ErrorCode::TransferTooLarge, "bulk transfer too large"),
        },
        Incoming::Truncated | Incoming::End => refuse(ErrorCode::Truncated, "the request ends early"),
        _ => refuse(ErrorCode::UnexpectedMessage, "expected a bulk transfer"),
    }
}

/// One bulk transfer into memory.
fn receive_bytes(input: &mut Reader, max: u64) -> Result<Vec<u8>, Stop> {
    let total = bulk_begin(input, max)?;
    let mut v = Vec::new();
    if v.try_reserve_exact(total as usize).is_err() {
        return refuse(ErrorCode::TransferTooLarge, "no memory for the transfer");
    }
    while (v.len() as u64) < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, d) if v.len() as u64 + d.len() as u64 <= total => v.extend_from_slice(&d),
            _ => return refuse(ErrorCode::Truncated, "bulk transfer ended early or ran long"),
        }
    }
    Ok(v)
}

/// A bulk transfer read as a stream, hashed and scanned as it goes.
struct BulkStream<'a> {
    input: &'a mut Reader,
    left: u64,
    chunk: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    fixed_hasher: Option<Hasher>,
    scanner: RefScanner,
    size: u64,
}

enum BulkError {
    Stream(StreamError),
    Protocol,
}

impl nar::Read for BulkStream<'_> {
    type Error = BulkError;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BulkError> {
        if self.pos == self.chunk.len() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.input.next().map_err(BulkError::Stream)? {
                Incoming::Frame(Type::BulkData, d) if !d.is_empty() && d.len() as u64 <= self.left => {
                    self.left -= d.len() as u64;
                    self.hasher.update(&d);
                    if let Some(h) = &mut self.fixed_hasher {
                        h.update(&d);
                    }
                    self.scanner.update(&d);
                    self.size += d.len() as u64;
                    self.chunk = d;
                    self.pos = 0;
                }
                _ => return Err(BulkError::Protocol),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The contents of a store path that is one regular file, and whether it is executable.
fn single_file<'f>(fs: &'f Fs, path: &str) -> Option<(&'f [u8], bool)> {
    let node = fs.resolve(fs::ROOT, path.as_bytes(), false).and_then(|i| fs.get(i)).ok()?;
    match &node.kind {
        Kind::File(bytes) => Some((bytes.as_slice(), node.perm & 0o100 != 0)),
        _ => None,
    }
}

/// Receives one input's NAR and unpacks it at its store path (read-only), hashing it and
/// scanning it on the way: for the hash parts of every input (its references), and strictly,
/// for any `/nix/store/<hash>-` that is not an input (an incomplete closure: refused). With
/// `fixed_algo`, the NAR is also hashed with that algorithm (a recursive fixed-output input).
fn unpack_input(
    input: &mut Reader,
    fs: &mut Fs,
    path: &str,
    by_hash: &BTreeMap<String, String>,
    fixed_algo: Option<Algo>,
) -> Result<(InputInfo, Option<Hash>), Stop> {
    let total = bulk_begin(input, proto::MAX_TRANSFER)?;
    let base = &path["/nix/store/".len()..];
    let Ok(store) = fs.resolve(fs::ROOT, b"/nix/store", true) else { return refuse(ErrorCode::Sandbox, "no /nix/store") };
    let mut stream = BulkStream {
        input,
        left: total,
        chunk: Vec::new(),
        pos: 0,
        hasher: Sha256::new(),
        fixed_hasher: fixed_algo.map(Hasher::new),
        scanner: RefScanner::strict(by_hash.keys().map(String::as_str)),
        size: 0,
    };
    let limits = nar::Limits { max_contents: fs.limit_bytes, ..nar::Limits::default() };
    let result = nar::parse(&mut stream, &mut fs.unpacker(store, base.as_bytes()), limits);
    let finished = stream.left == 0 && stream.pos == stream.chunk.len();
    let (hasher, fixed_hasher, scanner, size) = (stream.hasher, stream.fixed_hasher, stream.scanner, stream.size);
    match result {
        Ok(()) if finished => {}
        Ok(()) => return refuse(ErrorCode::BadInput, format!("input '{path}': bytes after the end of its NAR")),
        Err(nar::NarError::Read(BulkError::Stream(e))) => return Err(Stop::Channel(e)),
        Err(nar::NarError::Read(BulkError::Protocol)) => {
            return refuse(ErrorCode::Truncated, format!("input '{path}': the NAR transfer ended early or ran long"))
        }
        Err(nar::NarError::Sink(e)) => return refuse(ErrorCode::BadInput, format!("input '{path}': cannot unpack: {}", e.name())),
        Err(e) => return refuse(ErrorCode::BadInput, format!("input '{path}': not a valid NAR: {}", nar_error(&e))),
    }
    if let Some(reference) = scanner.unknown() {
        return refuse(ErrorCode::BadInput, plan::PlanError::IncompleteClosure { path: path.into(), reference }.to_string());
    }
    if let Ok(ino) = fs.resolve(fs::ROOT, path.as_bytes(), false) {
        fs.set_readonly(ino);
    }
    let references = agent::btree::set(scanner.found().filter_map(|h| by_hash.get(&h).cloned()));
    Ok((InputInfo { nar_sha256: hasher.finalize().into(), nar_size: size, references }, fixed_hasher.map(Hasher::finish)))
}

fn nar_error<R, S>(e: &nar::NarError<R, S>) -> &'static str {
    use nar::NarError::*;
    match e {
        Read(_) | Sink(_) => "I/O",
        UnexpectedEnd => "it ends early",
        BadMagic => "bad magic",
        Expected(t) => t,
        UnknownType => "unknown entry type",
        NonZeroPadding => "non-zero padding",
        InvalidName => "invalid entry name",
        NotSorted => "entries not sorted",
        TooLong => "a string is too long",
        TooDeep => "too deep",
        _ => "over a limit",
    }
}

/// Sends a NAR as a bulk transfer of exactly `total` bytes (its size from the hashing pass).
fn send_nar<S: NarSource>(out: &mut Writer, src: &S, total: u64) -> Result<(), StreamError> {
    out.send(Type::BulkBegin, &total.to_le_bytes())?;
    let mut buf = Vec::with_capacity(proto::MAX_PAYLOAD);
    let mut result = Ok(());
    let mut sent = 0u64;
    let _ = nar::serialize(src, &mut |mut b: &[u8]| {
        while !b.is_empty() && result.is_ok() {
            let n = b.len().min(proto::MAX_PAYLOAD - buf.len());
            buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if buf.len() == proto::MAX_PAYLOAD {
                sent += buf.len() as u64;
                result = out.send(Type::BulkData, &buf);
                buf.clear();
            }
        }
    });
    result?;
    if !buf.is_empty() {
        sent += buf.len() as u64;
        out.send(Type::BulkData, &buf)?;
    }
    // The tree cannot change between the hashing pass and this one (the builder is gone).
    debug_assert_eq!(sent, total);
    Ok(())
}

/// Sends bytes as a bulk transfer.
fn send_bytes(out: &mut Writer, bytes: &[u8]) -> Result<(), StreamError> {
    out.send(Type::BulkBegin, &(bytes.len() as u64).to_le_bytes())?;
    for chunk in bytes.chunks(proto::MAX_PAYLOAD) {
        out.send(Type::BulkData, chunk)?;
    }
    Ok(())
}
