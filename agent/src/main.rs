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
use agent::proto::{self, AttestationKind, ErrorCode, Type};
use agent::sandbox::abi::Errno;
use agent::sandbox::fs::{self, Fs};
use agent::sandbox::process::{Exception, Kernel, Limits, Status};
use alloc::format;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

pub(crate) type Reader = FrameReader<arch::virtio::BlkDisk>;
pub(crate) type Writer = FrameWriter<arch::virtio::BlkDisk>;

fn main() -> ! {
    log::info!("agent {} booted", agent::VERSION);
    #[cfg(feature = "fault-test")]
    arch::idt::deliberate_fault();

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
    let _ = out.send(Type::Hello, &proto::hello_payload(AttestationKind::None, agent::VERSION));
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

/// The largest executable the agent accepts.
const MAX_PROGRAM: u64 = 256 << 20;

/// Limits for `Exec` (a development request: one program, no derivation).
const EXEC_LIMITS: Limits = Limits { memory: 1 << 30, processes: 64, cpu_ticks: 60 * 100 };
const EXEC_FS_BYTES: u64 = 1 << 30;
const EXEC_FS_INODES: usize = 100_000;

/// Runs a static program in the sandbox (no derivation): the program is placed read-only at
/// `/nix/store/exec/program` in a fresh sandbox file system and started with the request's
/// argv and envp; its stdout/stderr stream back as Output frames, then its status.
fn exec(input: &mut Reader, out: &mut Writer, request: &[u8]) -> Result<(), StreamError> {
    let Some((argv, rest)) = proto::decode_strings(request) else {
        return error(out, ErrorCode::BadPayload, "Exec: malformed argv");
    };
    let Some((envp, _)) = proto::decode_strings(rest) else {
        return error(out, ErrorCode::BadPayload, "Exec: malformed envp");
    };
    // The executable follows as a bulk transfer.
    let total = match input.next()? {
        Incoming::Frame(Type::BulkBegin, p) => match proto::parse_u64(&p) {
            Some(t) if t <= MAX_PROGRAM => t,
            _ => return error(out, ErrorCode::TransferTooLarge, "Exec: program too large"),
        },
        _ => return error(out, ErrorCode::UnexpectedMessage, "Exec: expected the program as a bulk transfer"),
    };
    let mut program = Vec::new();
    if program.try_reserve_exact(total as usize).is_err() {
        return error(out, ErrorCode::TransferTooLarge, "Exec: no memory for the program");
    }
    while (program.len() as u64) < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, d) if program.len() as u64 + d.len() as u64 <= total => program.extend_from_slice(&d),
            _ => return error(out, ErrorCode::Truncated, "Exec: program transfer ended early"),
        }
    }
    let place = |fs: &mut Fs| -> Result<(), Errno> {
        let store = fs.resolve(fs::ROOT, b"/nix/store", true)?;
        let dir = fs.mkdir(store, b"exec", 0o555)?;
        let file = fs.create(dir, b"program", 0o555)?;
        fs.write_at(file, 0, &program)?;
        fs.set_readonly(dir);
        Ok(())
    };
    let mut fs = match Fs::nix_sandbox(EXEC_FS_BYTES, EXEC_FS_INODES) {
        Ok(fs) => fs,
        Err(e) => return error(out, ErrorCode::Sandbox, &format!("Exec: sandbox file system: {}", e.name())),
    };
    if let Err(e) = place(&mut fs) {
        return error(out, ErrorCode::Sandbox, &format!("Exec: cannot place the program: {}", e.name()));
    }
    drop(program);
    let mut kernel = Kernel::new(fs, EXEC_LIMITS);
    let space = match arch::user::AddressSpace::new() {
        Ok(s) => s,
        Err(_) => return error(out, ErrorCode::Sandbox, "Exec: out of memory"),
    };
    let bytes = |v: Vec<alloc::string::String>| v.into_iter().map(alloc::string::String::into_bytes).collect();
    if let Err(e) = kernel.spawn(space, b"/nix/store/exec/program", bytes(argv), bytes(envp)) {
        return error(out, ErrorCode::Sandbox, &format!("Exec: cannot start the program: {}", e.name()));
    }
    let status = run_sandbox(&mut kernel, out)?;
    out.send(Type::ExitStatus, &exit_code(status).to_le_bytes())?;
    out.flush()
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
pub(crate) fn run_sandbox(kernel: &mut Kernel<arch::user::AddressSpace>, out: &mut Writer) -> Result<Status, StreamError> {
    use arch::user::Event;
    loop {
        if let Some(status) = kernel.finished() {
            return Ok(status); // unimplemented calls were noted, once each, as they happened
        }
        let Some(pid) = kernel.current() else {
            // Cannot happen while unfinished (the kernel ends a deadlocked build itself).
            kernel.end(1, Status::Signaled(agent::sandbox::process::sig::SIGKILL));
            continue;
        };
        let Some(p) = kernel.process(pid) else { continue };
        match arch::user::run(&p.mem, &mut p.regs) {
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
