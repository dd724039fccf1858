//! The builder's world, as safe code: a small Linux-compatible kernel for static x86-64
//! programs (docs/sandbox.md). The arch layer runs processes in ring 3 and reports each event
//! (system call, fault, timer tick) to [`process::Kernel`]; everything a builder can observe is
//! decided here.
//!
//! In the order a build uses them:
//! - [`fs`]: the in-memory file system in Nix's sandbox layout; inputs unpack into it from NARs,
//!   outputs serialise out of it as NARs;
//! - [`elf`]: loading static executables and `#!` scripts, the initial stack;
//! - [`mem`]: user memory as the kernel sees it (the arch layer implements it with page tables);
//! - [`process`]: processes, descriptors, pipes, the scheduler and the limits;
//! - [`signal`]: dispositions, masks, and delivery to handlers (the Linux signal frame);
//! - [`linux`]: the system calls, by number;
//! - [`cpu`]: what `cpuid`, `rdtsc` and `rdtscp` answer (one fixed table, a per-process counter);
//! - [`abi`]: errno values and syscall numbers.
pub mod abi;
pub mod cpu;
pub mod elf;
pub mod fs;
pub mod linux;
pub mod mem;
pub mod process;
pub mod signal;
