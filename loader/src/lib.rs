//! The loader library: starts a fresh agent VM under QEMU and passes bytes.
//!
//! The loader is untrusted by design: it never interprets what it forwards beyond framing, and
//! nothing the agent attests depends on it. Hosting providers embed this crate; the `loader`
//! binary is a thin CLI over it.
//!
//! - [`vm`]: one VM, one job — request disk, QEMU, response frames.
//! - [`store`]: reading a build's inputs from the local Nix store, importing outputs.
//! - [`build`]: one attested build: request out, outputs and evidence back, checked.
pub mod build;
/// From the agent's Evidence frame to `evidence.json`: the REPORT_DATA binding and the bundle.
pub mod evidence;
pub mod store;
/// `loader --serve --write [--store URL]`: a Nix 2.8 remote builder (the `nix-store --serve` protocol).
pub mod serve;
/// `loader publish`: kept evidence into a file:// binary cache beside the narinfos.
pub mod publish;
pub mod vm;
/// Watching QEMU's run state over QMP (a VM QEMU stopped without exiting).
pub mod qmp;
/// SEV-SNP and TDX launches: QEMU arguments and host checks (`--tee`).
pub mod tee;

use agent::proto::{self, Type};
use std::path::{Path, PathBuf};
use vm::{Frame, Request, VmConfig, VmError};

/// What `ping` measured.
#[derive(Debug)]
pub struct PingReport {
    pub agent_version: String,
    pub attestation: u8,
    pub timings: vm::Timings,
    pub accel: vm::Accel,
}

/// Boots the agent, exchanges Hello/Ping/Pong, and shuts it down. Ping is a development
/// request: `config.agent` must be the development image (`make agent-dev`); the attested
/// image answers it with an error and serves nothing but one Build.
pub fn ping(config: &VmConfig) -> Result<PingReport, VmError> {
    let nonce = b"ping from the loader";
    let run = vm::run(
        config,
        |r| {
            r.frame(Type::Ping, nonce)?;
            r.frame(Type::Shutdown, b"")?;
            Ok(())
        },
        |_| {},
    )?;
    let hello = run.frames.iter().find(|f| f.ty == Type::Hello).ok_or_else(|| VmError::Response("no Hello".into()))?;
    let (attestation, version) = hello.payload.split_first().ok_or_else(|| VmError::Response("empty Hello".into()))?;
    let pong = run.frames.iter().find(|f| f.ty == Type::Pong).ok_or_else(|| match errors(&run.frames).first() {
        Some((code, text)) => VmError::Response(format!("no Pong: the agent answered error {code}: {text}")),
        None => VmError::Response("no Pong".into()),
    })?;
    if pong.payload != nonce {
        return Err(VmError::Response("Pong does not echo the Ping".into()));
    }
    Ok(PingReport {
        agent_version: String::from_utf8_lossy(version).into(),
        attestation: *attestation,
        timings: run.timings,
        accel: run.accel,
    })
}

/// The Error frames in a run, as (code, text).
pub fn errors(frames: &[Frame]) -> Vec<(u32, String)> {
    frames.iter().filter(|f| f.ty == Type::Error).filter_map(|f| proto::parse_error(&f.payload)).collect()
}

/// What `exec` observed.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit status; 128 + signal when a fault or a limit ended the program.
    pub status: i32,
    pub errors: Vec<(u32, String)>,
    /// What the agent's sandbox noted in its log (`sandbox: …` lines: the signal, exception,
    /// error code, address and rip that ended a process; limits reached; unimplemented calls).
    pub notes: Vec<String>,
}

/// The sandbox's notes in a serial log, in order.
pub fn sandbox_notes(serial: &str) -> Vec<String> {
    serial.lines().filter_map(|l| l.find("sandbox: ").map(|i| l[i..].trim_end().to_string())).collect()
}

impl ExecResult {
    /// Collects an exec's output, status and errors from a run's frames.
    pub fn from_frames(frames: &[Frame]) -> ExecResult {
        let mut result = ExecResult { status: -1, ..Default::default() };
        for f in frames {
            match f.ty {
                Type::Output if !f.payload.is_empty() => {
                    let dst = if f.payload[0] == 2 { &mut result.stderr } else { &mut result.stdout };
                    dst.extend_from_slice(&f.payload[1..]);
                }
                Type::ExitStatus if f.payload.len() == 4 => result.status = i32::from_le_bytes(f.payload[..4].try_into().unwrap()),
                _ => {}
            }
        }
        result.errors = errors(frames);
        result
    }
}

/// The environment a program gets from `exec` (the variables Nix's sandbox sets that do not
/// depend on a derivation).
pub const EXEC_ENV: &[&str] = &[
    "HOME=/homeless-shelter",
    "NIX_BUILD_CORES=1",
    "NIX_BUILD_TOP=/build",
    "NIX_LOG_FD=2",
    "NIX_STORE=/nix/store",
    "PATH=/path-not-set",
    "PWD=/build",
    "TEMP=/build",
    "TEMPDIR=/build",
    "TERM=xterm-256color",
    "TMP=/build",
    "TMPDIR=/build",
];

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum Contents {
    /// A host file, streamed into the request.
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// A file placed in the sandbox before the program starts: `guest` relative (under /build) or
/// absolute under /build or /tmp (the agent refuses anything else).
#[derive(Clone, Debug)]
pub struct ExecFile {
    pub guest: String,
    pub contents: Contents,
    pub executable: bool,
}

impl ExecFile {
    /// A host file; executable when its owner may execute it (as Nix's `dumpPath` decides).
    pub fn from_host(host: &Path, guest: &str) -> std::io::Result<ExecFile> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(host)?;
        if !meta.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a regular file", host.display())));
        }
        Ok(ExecFile { guest: guest.into(), contents: Contents::Path(host.into()), executable: meta.permissions().mode() & 0o100 != 0 })
    }
}

/// What `exec` sends besides the program: files, and limits (0 = the agent's default; the
/// agent caps every limit by what it can afford).
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub files: Vec<ExecFile>,
    pub limits: agent::exec::Requested,
}

/// Writes an Exec request: the frame, the program, then each file (see `agent::exec`).
pub fn exec_request(r: &mut Request, program: &[u8], argv: &[&str], options: &ExecOptions) -> Result<(), VmError> {
    let files: Vec<(&str, bool)> = options.files.iter().map(|f| (f.guest.as_str(), f.executable)).collect();
    r.frame(Type::Exec, &agent::exec::encode(argv, EXEC_ENV, &options.limits, &files))?;
    r.bulk(&mut &program[..], program.len() as u64)?;
    for f in &options.files {
        match &f.contents {
            Contents::Bytes(b) => r.bulk(&mut &b[..], b.len() as u64)?,
            Contents::Path(p) => {
                let what = || format!("reading {}", p.display());
                let file = std::fs::File::open(p).map_err(|source| VmError::Io { what: what(), source })?;
                let len = file.metadata().map_err(|source| VmError::Io { what: what(), source })?.len();
                r.bulk(&mut std::io::BufReader::new(file), len)?
            }
        };
    }
    Ok(())
}

/// Runs a static program in a fresh agent's sandbox; `on_output(fd, bytes)` streams its output.
/// Exec is a development request: `config.agent` must be the development image (`make agent-dev`).
pub fn exec(config: &VmConfig, program: &[u8], argv: &[&str], on_output: impl FnMut(u8, &[u8])) -> Result<ExecResult, VmError> {
    exec_with(config, program, argv, &ExecOptions::default(), on_output)
}

/// [`exec`] with files and limits.
pub fn exec_with(config: &VmConfig, program: &[u8], argv: &[&str], options: &ExecOptions, mut on_output: impl FnMut(u8, &[u8])) -> Result<ExecResult, VmError> {
    vm::check_sandbox_accel(config)?;
    let run = vm::run(config, |r| exec_request(r, program, argv, options), |f| {
        if f.ty == Type::Output && !f.payload.is_empty() {
            on_output(f.payload[0], &f.payload[1..]);
        }
    })?;
    let mut result = ExecResult::from_frames(&run.frames);
    result.notes = sandbox_notes(&run.serial);
    Ok(result)
}
