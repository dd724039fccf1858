//! The agent: the whole guest, and the whole launch measurement.
//!
//! Read it in the order the machine runs it:
//! 1. **boot** — `arch/reset.s` → `rom16.s` → `rom32.s` → `arch::rust_start`: long mode, paging,
//!    GDT/TSS, traps, heap. Then [`main`].
//! 2. **channel** — PCI, virtio-blk, and the framed protocol over two stream disks
//!    (`agent::channel`, `agent::proto`).
//! 3. serve the loader's requests in order, then power off.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod job;

use agent::channel::{FrameReader, FrameWriter, InStream, Incoming, OutStream, StreamError};
use agent::proto::{self, ErrorCode, Type};
use agent::sandbox::fs::{self, Fs};
use agent::sandbox::process::{Exception, Kernel, Status};
use alloc::format;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

pub(crate) type Reader = FrameReader<arch::virtio::BlkDisk>;
pub(crate) type Writer = FrameWriter<arch::virtio::BlkDisk>;

fn main() -> ! {
    log::info!("agent {} booted", agent::VERSION);
    #[cfg(feature = "fault-test")]
    arch::idt::deliberate_fault();
    #[cfg(feature = "stack-overflow-test")]
    arch::idt::deliberate_stack_overflow();

    // Channel: the first virtio-blk disk is the request, the second receives the response.
    let mut disks = arch::virtio::disks().into_iter();
    let (Some(input), Some(output)) = (disks.next(), disks.next()) else {
        log::error!("channel: need two virtio-blk disks (request, response)");
        arch::power::shutdown();
    };
    let mut out = match OutStream::create(output) {
        Ok(s) => FrameWriter::new(s),
        Err(e) => {
            log::error!("channel: response disk unusable: {e:?}");
            arch::power::shutdown();
        }
    };
    // The platform found at boot (arch::tee): what the Hello frame and the evidence say.
    let _ = out.send(Type::Hello, &proto::hello_payload(arch::tee::kind().attestation(), agent::VERSION));
    let _ = out.flush();
    match InStream::open(input) {
        Ok(s) => {
            if let Err(e) = serve(&mut FrameReader::new(s), &mut out) {
                log::error!("channel: {e:?}");
                let _ = out.send(Type::Error, &proto::error_payload(ErrorCode::Channel, "channel failure"));
            }
        }
        Err(e) => {
            let _ = out.send(Type::Error, &proto::error_payload(ErrorCode::Channel, "request disk is not a stream"));
            log::error!("channel: request disk unusable: {e:?}");
        }
    }
    let _ = out.send(Type::Bye, b"");
    let _ = out.flush();
    log::info!("agent: done, powering off");
    arch::power::shutdown()
}

pub(crate) fn error(out: &mut Writer, code: ErrorCode, text: &str) -> Result<(), StreamError> {
    log::warn!("request error {code:?}: {text}");
    out.send(Type::Error, &proto::error_payload(code, text))?;
    out.flush()
}

/// Answers requests until Shutdown or the end of the request stream.
fn serve(input: &mut Reader, out: &mut Writer) -> Result<(), StreamError> {
    loop {
        match input.next()? {
            Incoming::End => return Ok(()),
            Incoming::Truncated => return error(out, ErrorCode::Truncated, "request stream ends inside a frame"),
            Incoming::Malformed(e) => error(out, e.code(), "malformed frame")?,
            Incoming::Frame(ty, payload) => match ty {
                Type::Ping => {
                    out.send(Type::Pong, &payload)?;
                    out.flush()?;
                }
                Type::Shutdown => return Ok(()),
                Type::BulkBegin => receive_bulk(input, out, &payload)?,
                Type::BulkRequest => send_bulk(out, &payload)?,
                Type::Exec => exec(input, out, &payload)?,
                // One build per VM: whatever happened, the request stream is done with.
                Type::Build => return job::build(input, out, &payload),
                _ => error(out, ErrorCode::UnexpectedMessage, "unexpected message type")?,
            },
        }
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
    while got < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, data) if got + data.len() as u64 <= total => {
                hasher.update(&data);
                got += data.len() as u64;
            }
            Incoming::Frame(Type::BulkData, _) => return error(out, ErrorCode::BadPayload, "transfer longer than announced"),
            _ => return error(out, ErrorCode::Truncated, "transfer ended early"),
        }
    }
    log::info!("bulk in: {total} bytes in {} Mcycles", (arch::cpu::rdtsc() - start) >> 20);
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

/// Runs the sandbox until its first process (the builder) ends: each process runs in ring 3
/// until an event, which the kernel handles; output streams out as Output frames (fd byte +
/// bytes) and the kernel's notes go to the agent log as they appear.
///
/// The agent's own time on the build's behalf (everything but ring 3) is charged to the CPU
/// limit in ticks, measured with the TSC: otherwise a loop of costly calls (forking a large
/// process again and again) would run past any limit.
pub(crate) fn run_sandbox(kernel: &mut Kernel<arch::user::AddressSpace>, out: &mut Writer) -> Result<Status, StreamError> {
    use arch::user::Event;
    let per_tick = arch::timer::tsc_per_tick();
    let mut agent_cycles = 0u64;
    let mut since = arch::cpu::rdtsc();
    loop {
        let now = arch::cpu::rdtsc();
        agent_cycles += now.saturating_sub(since);
        since = now;
        if agent_cycles >= per_tick {
            kernel.charge(agent_cycles / per_tick);
            agent_cycles %= per_tick;
        }
        if let Some(status) = kernel.finished() {
            for note in kernel.notes.drain(..) {
                log::warn!("{note}");
            }
            return Ok(status); // unimplemented calls were noted, once each, as they happened
        }
        let Some(pid) = kernel.schedule() else {
            // Cannot happen while unfinished (the kernel ends a deadlocked build itself).
            kernel.end(1, Status::Signaled(agent::sandbox::process::sig::SIGKILL));
            continue;
        };
        let Some(p) = kernel.process(pid) else { continue };
        let event = arch::user::run(&p.mem, &mut p.regs);
        since = arch::cpu::rdtsc();
        match event {
            Event::Syscall => {
                kernel.syscall(pid);
            }
            Event::Fault { vector, error, address } => kernel.fault(pid, Exception { vector, error, address }),
            Event::Timer => kernel.tick(),
        }
        for (fd, bytes) in kernel.output.drain(..) {
            for chunk in bytes.chunks(proto::MAX_PAYLOAD - 1) {
                let mut frame = Vec::with_capacity(chunk.len() + 1);
                frame.push(fd);
                frame.extend_from_slice(chunk);
                out.send(Type::Output, &frame)?;
            }
        }
        for note in kernel.notes.drain(..) {
            log::warn!("{note}");
        }
    }
}
