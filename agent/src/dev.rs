//! Development requests, only in the development image (`--features dev`, built by
//! `make agent-dev` into target/agent-dev.bin; its launch measurement differs from the attested
//! image's, so no verifier that pins `agent.bin` accepts its reports). The attested image has
//! none of this code: it serves one Build (issue 15, finding 10).
//!
//! - Ping → Pong (the payload echoed, committed with the next flush): boot timings, `loader ping`.
//! - BulkBegin + BulkData → BulkAck (length, SHA-256); BulkRequest → a pattern stream: the
//!   channel's benchmarks and tests.
//! - Exec: one static program in a fresh sandbox, `loader exec` and the sandbox suites.
use crate::{arch, error, run_sandbox, Reader, Writer};
use agent::channel::{Incoming, StreamError};
use agent::proto::{self, ErrorCode, Type};
use agent::sandbox::fs::{self, Fs};
use agent::sandbox::process::{Kernel, Status};
use alloc::format;
use alloc::vec::Vec;
use agent::sha256::Sha256;

/// One development request.
pub(crate) fn serve(ty: Type, input: &mut Reader, out: &mut Writer, payload: &[u8]) -> Result<(), StreamError> {
    match ty {
        // The Pong is committed with the next flush (the next answer's, or Bye's): a Ping is
        // the boot check, and a commit of its own would cost two VM exits.
        Type::Ping => out.send(Type::Pong, payload),
        Type::BulkBegin => receive_bulk(input, out, payload),
        Type::BulkRequest => send_bulk(out, payload),
        Type::Exec => exec(input, out, payload),
        _ => error(out, ErrorCode::UnexpectedMessage, "unexpected message type"),
    }
}

/// host → guest: receive a transfer, hash it, acknowledge with its length and SHA-256.
fn receive_bulk(input: &mut Reader, out: &mut Writer, begin: &[u8]) -> Result<(), StreamError> {
    let Some(total) = proto::parse_u64(begin) else {
        return error(out, ErrorCode::BadPayload, "BulkBegin payload must be 8 bytes");
    };
    if total > proto::MAX_TRANSFER {
        return error(out, ErrorCode::TransferTooLarge, "transfer larger than MAX_TRANSFER");
    }
    let start = arch::cpu::rdtsc();
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut hashing = 0u64;
    while got < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, data) if got + data.len() as u64 <= total => {
                let t = arch::cpu::rdtsc();
                hasher.update(&data);
                hashing += arch::cpu::rdtsc() - t;
                got += data.len() as u64;
            }
            Incoming::Frame(Type::BulkData, _) => return error(out, ErrorCode::BadPayload, "transfer longer than announced"),
            _ => return error(out, ErrorCode::Truncated, "transfer ended early"),
        }
    }
    // The SHA-256 figure is what `make bench` reports as in-guest hashing throughput.
    log::info!(
        "bulk in: {total} bytes in {} Mcycles; SHA-256 ({}) {} kcycles",
        (arch::cpu::rdtsc() - start) >> 20,
        agent::sha256::backend().name,
        hashing >> 10
    );
    let mut ack = total.to_le_bytes().to_vec();
    ack.extend_from_slice(&hasher.finalize());
    out.send(Type::BulkAck, &ack)?;
    out.flush()
}

/// guest → host: send `total` pattern bytes.
fn send_bulk(out: &mut Writer, request: &[u8]) -> Result<(), StreamError> {
    let Some(total) = proto::parse_u64(request) else {
        return error(out, ErrorCode::BadPayload, "BulkRequest payload must be 8 bytes");
    };
    if total > proto::MAX_TRANSFER {
        return error(out, ErrorCode::TransferTooLarge, "transfer larger than MAX_TRANSFER");
    }
    out.send(Type::BulkBegin, &total.to_le_bytes())?;
    // One period of the pattern, MAX_PAYLOAD long, reused: chunk starts stay multiples of 251.
    let chunk_len = proto::MAX_PAYLOAD / 251 * 251;
    let chunk: Vec<u8> = (0..chunk_len as u64).map(proto::pattern_byte).collect();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk_len as u64) as usize;
        out.send(Type::BulkData, &chunk[..n])?;
        sent += n as u64;
    }
    out.flush()
}

/// Runs a static program in a fresh sandbox (no derivation; the request is checked and its
/// limits capped by `agent::exec`): the program is placed read-only at
/// `/nix/store/exec/program`, each file of the request under `/build` or `/tmp` as the
/// builder's own, then the program starts with the request's argv and envp; its stdout/stderr
/// stream back as Output frames, then its status.
fn exec(input: &mut Reader, out: &mut Writer, payload: &[u8]) -> Result<(), StreamError> {
    let req = match agent::exec::decode(payload) {
        Ok(r) => r,
        Err(refused) => {
            skip_transfers(input, refused.transfers)?;
            return error(out, ErrorCode::BadPayload, refused.why);
        }
    };
    let grant = agent::exec::grant(&req.limits, arch::memory::heap_free(), out.room());
    let l = grant.limits;
    log::info!(
        "exec: limits: {} MiB memory, {} processes, {} CPU ticks, {} MiB / {} inodes of files, {} bytes of log",
        l.memory >> 20, l.processes, l.cpu_ticks, grant.fs_bytes >> 20, grant.fs_inodes, l.log_bytes
    );
    // The program, then each file: one bulk transfer each, in order.
    let mut places = Vec::with_capacity(1 + req.files.len());
    places.push((agent::exec::PROGRAM, true));
    places.extend(req.files.iter().map(|f| (&f.path[..], f.executable)));
    let mut fs = match Fs::nix_sandbox(grant.fs_bytes, grant.fs_inodes) {
        Ok(fs) => fs,
        Err(e) => {
            skip_transfers(input, places.len())?;
            return error(out, ErrorCode::Sandbox, &format!("Exec: sandbox file system: {}", e.name()));
        }
    };
    for (i, (path, executable)) in places.iter().enumerate() {
        if let Err((code, text)) = receive_file(input, &mut fs, path, *executable)? {
            skip_transfers(input, places.len() - i - 1)?;
            return error(out, code, &text);
        }
    }
    // The program is read-only, like a store path.
    let sealed = fs.resolve(fs::ROOT, agent::exec::PROGRAM_DIR, true).and_then(|dir| {
        let program = fs.resolve(dir, b"program", true)?;
        fs.chmod(program, 0o555)?;
        fs.chmod(dir, 0o555)?;
        fs.set_readonly(dir);
        Ok(())
    });
    if let Err(e) = sealed {
        return error(out, ErrorCode::Sandbox, &format!("Exec: cannot place the program: {}", e.name()));
    }
    let mut kernel = Kernel::new(fs, grant.limits);
    let space = match arch::user::AddressSpace::new() {
        Ok(s) => s,
        Err(_) => return error(out, ErrorCode::Sandbox, "Exec: out of memory"),
    };
    let bytes = |v: Vec<alloc::string::String>| v.into_iter().map(alloc::string::String::into_bytes).collect();
    if let Err(e) = kernel.spawn(space, agent::exec::PROGRAM, bytes(req.argv), bytes(req.envp)) {
        return error(out, ErrorCode::Sandbox, &format!("Exec: cannot start the program: {}", e.name()));
    }
    let status = run_sandbox(&mut kernel, out)?;
    out.send(Type::ExitStatus, &exit_code(status).to_le_bytes())?;
    out.flush()
}

/// Receives the next bulk transfer straight into a new sandbox file at `path` (see
/// `agent::exec::create_file`: its size is charged before any byte arrives). The outer error
/// is the channel's; the inner one refuses the request, after skipping the transfer's rest.
fn receive_file(input: &mut Reader, fs: &mut Fs, path: &[u8], executable: bool) -> Result<Result<(), (ErrorCode, alloc::string::String)>, StreamError> {
    let name = alloc::string::String::from_utf8_lossy(path);
    let total = match input.next()? {
        Incoming::Frame(Type::BulkBegin, p) => match proto::parse_u64(&p) {
            Some(t) => t,
            None => return Ok(Err((ErrorCode::BadPayload, "Exec: BulkBegin payload must be 8 bytes".into()))),
        },
        other => {
            input.put_back(other);
            return Ok(Err((ErrorCode::UnexpectedMessage, format!("Exec: expected {name} as a bulk transfer"))));
        }
    };
    let file = match agent::exec::create_file(fs, path, total, executable) {
        Ok(f) => f,
        Err(e) => {
            skip_data(input, total)?;
            return Ok(Err((ErrorCode::Sandbox, format!("Exec: cannot place {name} ({total} bytes): {}", e.name()))));
        }
    };
    let mut got = 0u64;
    while got < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, d) if got + d.len() as u64 <= total => {
                if let Err(e) = fs.write_at(file, got, &d) {
                    skip_data(input, total - got - d.len() as u64)?;
                    return Ok(Err((ErrorCode::Sandbox, format!("Exec: cannot write {name}: {}", e.name()))));
                }
                got += d.len() as u64;
            }
            other => {
                input.put_back(other);
                return Ok(Err((ErrorCode::Truncated, format!("Exec: the transfer of {name} ended early"))));
            }
        }
    }
    Ok(Ok(()))
}

/// Skips up to `left` bytes of the current transfer's BulkData frames (after a refusal, so the
/// next request is read from its start); any other frame is left for the caller.
fn skip_data(input: &mut Reader, mut left: u64) -> Result<(), StreamError> {
    while left > 0 {
        match input.next()? {
            Incoming::Frame(Type::BulkData, d) if d.len() as u64 <= left => left -= d.len() as u64,
            other => {
                input.put_back(other);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Skips up to `n` whole bulk transfers (the rest of a refused request).
fn skip_transfers(input: &mut Reader, n: usize) -> Result<(), StreamError> {
    for _ in 0..n {
        match input.next()? {
            Incoming::Frame(Type::BulkBegin, p) => skip_data(input, proto::parse_u64(&p).unwrap_or(0))?,
            other => {
                input.put_back(other);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The shell's view of a status: the exit code, or 128 + the signal.
fn exit_code(status: Status) -> i32 {
    match status {
        Status::Exited(c) => i32::from(c),
        Status::Signaled(s) => 128 + i32::from(s),
    }
}

