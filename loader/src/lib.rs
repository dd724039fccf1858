//! The loader library: starts a fresh agent VM under QEMU and passes bytes.
//!
//! The loader is untrusted by design: it never interprets what it forwards beyond framing, and
//! nothing the agent attests depends on it. Hosting providers embed this crate; the `loader`
//! binary is a thin CLI over it.
//!
//! - [`vm`]: one VM, one job — request disk, QEMU, response frames.
//! - [`store`]: reading a build's inputs from the local Nix store, importing outputs.
pub mod store;
pub mod vm;
/// SEV-SNP and TDX launches: QEMU arguments and host checks (`--tee`).
pub mod tee;

use agent::proto::{self, Type};
use vm::{Frame, VmConfig, VmError};

/// What `ping` measured.
#[derive(Debug)]
pub struct PingReport {
    pub agent_version: String,
    pub attestation: u8,
    pub timings: vm::Timings,
    pub accel: vm::Accel,
}

/// Boots the agent, exchanges Hello/Ping/Pong, and shuts it down.
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
    let pong = run.frames.iter().find(|f| f.ty == Type::Pong).ok_or_else(|| VmError::Response("no Pong".into()))?;
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
    /// The exit status; 128 + signal when a fault ended the program.
    pub status: i32,
    pub errors: Vec<(u32, String)>,
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

/// Runs a static program in a fresh agent's sandbox; `on_output(fd, bytes)` streams its output.
pub fn exec(config: &VmConfig, program: &[u8], argv: &[&str], mut on_output: impl FnMut(u8, &[u8])) -> Result<ExecResult, VmError> {
    let mut request = Vec::new();
    proto::encode_strings(&mut request, argv);
    proto::encode_strings(&mut request, EXEC_ENV);
    let mut result = ExecResult { status: -1, ..Default::default() };
    let run = vm::run(
        config,
        |r| {
            r.frame(Type::Exec, &request)?;
            r.bulk(&mut &program[..], program.len() as u64)?;
            Ok(())
        },
        |f| {
            if f.ty == Type::Output && !f.payload.is_empty() {
                on_output(f.payload[0], &f.payload[1..]);
            }
        },
    )?;
    for f in &run.frames {
        match f.ty {
            Type::Output if !f.payload.is_empty() => {
                let dst = if f.payload[0] == 2 { &mut result.stderr } else { &mut result.stdout };
                dst.extend_from_slice(&f.payload[1..]);
            }
            Type::ExitStatus if f.payload.len() == 4 => result.status = i32::from_le_bytes(f.payload[..4].try_into().unwrap()),
            _ => {}
        }
    }
    result.errors = errors(&run.frames);
    Ok(result)
}
