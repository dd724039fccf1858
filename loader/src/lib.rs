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
