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

use agent::channel::{FrameReader, FrameWriter, InStream, Incoming, OutStream, StreamError};
use agent::proto::{self, AttestationKind, ErrorCode, Type};
use sha2::{Digest, Sha256};

type Reader = FrameReader<arch::virtio::BlkDisk>;
type Writer = FrameWriter<arch::virtio::BlkDisk>;

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

fn error(out: &mut Writer, code: ErrorCode, text: &str) -> Result<(), StreamError> {
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
    let chunk: alloc::vec::Vec<u8> = (0..chunk_len as u64).map(proto::pattern_byte).collect();
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
/// Stack size given to a program.
const STACK_SIZE: u64 = 1 << 20;

/// Runs a static program in ring 3 (sandbox, first slice): load it, run it until it exits or
/// faults, stream its stdout/stderr as Output frames, report its status.
fn exec(input: &mut Reader, out: &mut Writer, request: &[u8]) -> Result<(), StreamError> {
    use agent::sandbox::{elf, syscall};
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
    let mut program = alloc::vec::Vec::new();
    if program.try_reserve_exact(total as usize).is_err() {
        return error(out, ErrorCode::TransferTooLarge, "Exec: no memory for the program");
    }
    while (program.len() as u64) < total {
        match input.next()? {
            Incoming::Frame(Type::BulkData, d) if program.len() as u64 + d.len() as u64 <= total => program.extend_from_slice(&d),
            _ => return error(out, ErrorCode::Truncated, "Exec: program transfer ended early"),
        }
    }
    let image = match elf::parse(&program) {
        Ok(i) => i,
        Err(e) => return error(out, ErrorCode::BadPayload, &alloc::format!("Exec: not a static x86-64 executable: {e:?}")),
    };
    let Ok(mut space) = arch::user::AddressSpace::new() else {
        return error(out, ErrorCode::Channel, "Exec: out of memory");
    };
    // Segments: map every page, copy the file bytes, leave the rest zero.
    for seg in &image.segments {
        let first = seg.vaddr & !0xFFF;
        let end = (seg.vaddr + seg.mem_size + 0xFFF) & !0xFFF;
        for page in (first..end).step_by(4096) {
            let Ok(bytes) = space.map(page, seg.writable, seg.executable) else {
                return error(out, ErrorCode::Channel, "Exec: out of memory");
            };
            let (lo, hi) = (page.max(seg.vaddr), (page + 4096).min(seg.vaddr + seg.file_size));
            if lo < hi {
                let from = (seg.file_offset + (lo - seg.vaddr)) as usize;
                bytes[(lo - page) as usize..(hi - page) as usize].copy_from_slice(&program[from..from + (hi - lo) as usize]);
            }
        }
    }
    drop(program);
    let top = elf::USER_TOP;
    for page in ((top - STACK_SIZE)..top).step_by(4096) {
        if space.map(page, true, false).is_err() {
            return error(out, ErrorCode::Channel, "Exec: out of memory");
        }
    }
    let stack = elf::initial_stack(top, &image, &argv, &envp, *b"nix-attested-rnd", 1000, 100);
    if space.write(stack.rsp, &stack.bytes).is_none() {
        return error(out, ErrorCode::BadPayload, "Exec: arguments do not fit on the stack");
    }
    let mut regs = arch::user::UserRegs { rip: image.entry, rsp: stack.rsp, rflags: 0x2, ..Default::default() };
    let brk = image.segments.iter().map(|s| s.vaddr + s.mem_size).max().unwrap_or(0).next_multiple_of(4096);
    let mut process = syscall::Process::new(agent::sandbox::fs::Fs::new(1 << 30));
    (process.brk_start, process.brk) = (brk, brk);
    let status = loop {
        match arch::user::run(&space, &mut regs) {
            arch::user::Event::Syscall => {
                let a = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
                let outcome = process.syscall(&mut space, regs.rax, a);
                for (fd, bytes) in process.output.drain(..) {
                    for chunk in bytes.chunks(proto::MAX_PAYLOAD - 1) {
                        let mut frame = alloc::vec::Vec::with_capacity(chunk.len() + 1);
                        frame.push(fd);
                        frame.extend_from_slice(chunk);
                        out.send(Type::Output, &frame)?;
                    }
                }
                match outcome {
                    syscall::Outcome::Return(v) => regs.rax = v as u64,
                    syscall::Outcome::SetFsBase(b) => {
                        regs.fs_base = b;
                        regs.rax = 0;
                    }
                    syscall::Outcome::Exit(s) => break s & 0xFF,
                }
            }
            arch::user::Event::Fault { vector, error, address } => {
                log::warn!("exec: the program faulted: vector {vector}, error {error:#x}, address {address:#x}, rip {:#x}", regs.rip);
                break syscall::fault_status(vector);
            }
        }
    };
    for nr in &process.unimplemented {
        log::warn!("exec: unimplemented system call {nr} (returned ENOSYS)");
    }
    drop(space);
    out.send(Type::ExitStatus, &status.to_le_bytes())?;
    out.flush()
}
