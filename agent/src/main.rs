//! The agent: the whole guest, and the whole launch measurement.
//!
//! Read it in the order the machine runs it:
//! 1. **boot** — `arch/reset.s` → `rom16.s` → `rom32.s` → `arch::rust_start`: long mode, paging,
//!    GDT/TSS, traps, heap. Then [`main`].
//! 2. **channel** — PCI, virtio-blk, and the framed protocol over two stream disks
//!    (`agent::channel`, `agent::proto`).
//! 3. serve the loader's request — one Build — then power off. (The development image,
//!    `--features dev`, also serves Ping, bulk transfers and Exec: `dev.rs`.)
#![no_std]
#![no_main]
// `unsafe` lives in the arch layer only: everything else in the firmware binary (main, job,
// dev) is safe code, as the whole portable library is (`#![forbid(unsafe_code)]` there).
#![deny(unsafe_code)]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
#[cfg(feature = "dev")]
mod dev;
mod job;

use agent::channel::{FrameReader, FrameWriter, InStream, Incoming, OutStream, StreamError};
use agent::proto::{self, ErrorCode, Type};
use agent::sandbox::process::{Exception, Kernel, Status};
use alloc::vec::Vec;

pub(crate) type Reader = FrameReader<arch::virtio::BlkDisk>;
pub(crate) type Writer = FrameWriter<arch::virtio::BlkDisk>;

fn main() -> ! {
    log::info!("agent {} booted{}", agent::VERSION, if cfg!(feature = "dev") { " (development image: also serves Ping, Bulk and Exec; never the attested measurement)" } else { "" });
    #[cfg(feature = "fault-test")]
    arch::idt::deliberate_fault();
    #[cfg(feature = "stack-overflow-test")]
    arch::idt::deliberate_stack_overflow();

    // Channel: the first virtio-blk disk is the request, the second receives the response.
    // Until the response stream exists, a failure can only be told on the serial port.
    let mut disks = arch::virtio::disks(2).into_iter();
    let (Some(input), Some(output)) = (disks.next(), disks.next()) else {
        log::error!("channel: need two virtio-blk disks (request, response)");
        arch::serial::dump();
        arch::power::shutdown();
    };
    let mut out = match OutStream::create(output) {
        Ok(s) => FrameWriter::new(s),
        Err(e) => {
            log::error!("channel: response disk unusable: {e:?}");
            arch::serial::dump();
            arch::power::shutdown();
        }
    };
    // The request's header says whether the loader wants a debug log on the serial port too
    // (the backlog first): asked before the first Log frame takes lines out of the ring.
    let input = InStream::open(input);
    if input.as_ref().is_ok_and(|s| s.flags() & agent::channel::FLAG_DEBUG_SERIAL != 0) {
        arch::serial::enable_debug();
    }
    // From here on the log travels in Log frames, ahead of each frame and flush.
    out.set_log(arch::serial::drain);
    // The platform found at boot (arch::tee): what the Hello frame and the evidence say.
    let _ = out.send(Type::Hello, &proto::hello_payload(arch::tee::kind().attestation(), agent::VERSION));
    let _ = out.flush();
    match input {
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
    log::info!("agent: done, powering off");
    let _ = out.send(Type::Bye, b"");
    let _ = out.flush();
    arch::power::shutdown()
}

pub(crate) fn error(out: &mut Writer, code: ErrorCode, text: &str) -> Result<(), StreamError> {
    log::warn!("request error {code:?}: {text}");
    out.send(Type::Error, &proto::error_payload(code, text))?;
    out.flush()
}

/// What the attested image answers a development request with.
#[cfg(not(feature = "dev"))]
const NOT_IN_ATTESTED_IMAGE: &str = "this is the attested image: it serves one Build and nothing else (Ping, Bulk and Exec are in the development image, make agent-dev)";

/// Answers requests until Shutdown, a Build, or the end of the request stream. The attested
/// image serves exactly one Build; the development image (`--features dev`, `make agent-dev`,
/// measured differently) also serves Ping, bulk transfers and Exec before it (`dev.rs`).
fn serve(input: &mut Reader, out: &mut Writer) -> Result<(), StreamError> {
    loop {
        match input.next()? {
            Incoming::End => return Ok(()),
            Incoming::Truncated => return error(out, ErrorCode::Truncated, "request stream ends inside a frame"),
            Incoming::Malformed(e) => error(out, e.code(), "malformed frame")?,
            Incoming::Frame(ty, payload) => match ty {
                Type::Shutdown => return Ok(()),
                // One build per VM: whatever happened, the request stream is done with.
                Type::Build => return job::build(input, out, &payload),
                #[cfg(feature = "dev")]
                Type::Ping | Type::BulkBegin | Type::BulkRequest | Type::Exec => dev::serve(ty, input, out, &payload)?,
                // The attested image has no development requests at all: the first one ends
                // the request stream, so nothing but a Build ever runs in it.
                #[cfg(not(feature = "dev"))]
                Type::Ping | Type::BulkBegin | Type::BulkRequest | Type::Exec => {
                    return error(out, ErrorCode::UnexpectedMessage, NOT_IN_ATTESTED_IMAGE);
                }
                _ => error(out, ErrorCode::UnexpectedMessage, "unexpected message type")?,
            },
        }
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
