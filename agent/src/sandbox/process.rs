//! Processes, descriptors, address-space bookkeeping and the scheduler model.
//!
//! The arch layer drives a [`Kernel`]: it asks for the [`Kernel::current`]
//! process, runs it in ring 3 with its registers and page tables until an
//! event, and reports the event ([`Kernel::syscall`], [`Kernel::fault`],
//! [`Kernel::tick`]). Scheduling is round-robin: a timer tick or a blocking
//! syscall moves on to the next runnable process. When the first process
//! (the builder, pid 1) ends, every other process is ended too, as Nix does
//! when the builder exits, and [`Kernel::finished`] reports its status.
//!
//! Determinism (documented for users of the sandbox):
//! - the clocks are fixed at [`CLOCK_SECONDS`] (1970-01-01T00:00:01Z, the
//!   timestamp Nix gives store files) and do not advance;
//! - `AT_RANDOM` and `getrandom` come from a SplitMix64 stream with the fixed
//!   seed [`RANDOM_SEED`] — predictable, which is the point: builds must not
//!   depend on secrets;
//! - pids count up from 1; static-PIE programs load at a fixed base.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::abi::Errno;
use super::elf::{self as elf, Prot, StackSpec, PAGE};
use super::fs::{Fs, Ino, Kind, ROOT};
use super::mem::Memory;
use super::signal::{Info, Signals};

pub type Pid = u32;

/// Seconds since the epoch every clock reports.
pub const CLOCK_SECONDS: i64 = 1;
/// Seed of the deterministic random stream.
pub const RANDOM_SEED: u64 = 0x6e69_782d_6275_696c; // "nix-buil"
/// The builder's uid and gid in Nix's sandbox.
pub const UID: u32 = 1000;
pub const GID: u32 = 100;
/// Top of the user stack and its size (mapped eagerly).
pub const STACK_TOP: u64 = 0x7fff_ffff_f000;
pub const STACK_SIZE: u64 = 1 << 20;
/// `mmap` without `MAP_FIXED` places mappings downward from here.
pub const MMAP_TOP: u64 = 0x7f00_0000_0000;
/// Most open descriptors per process (`RLIMIT_NOFILE`).
pub const MAX_FDS: usize = 1024;
/// The path that names a process's own executable.
pub const PROC_SELF_EXE: &[u8] = b"/proc/self/exe";
/// Pipe capacity (Linux's default 16 pages).
pub const PIPE_CAP: usize = 65536;

/// Signals the sandbox raises (`include/uapi/asm-generic/signal.h`).
pub mod sig {
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGBUS: u8 = 7;
    pub const SIGFPE: u8 = 8;
    pub const SIGKILL: u8 = 9;
    pub const SIGSEGV: u8 = 11;
    pub const SIGPIPE: u8 = 13;
    pub const SIGXCPU: u8 = 24;
    pub const SIGXFSZ: u8 = 25;
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Exited(u8),
    Signaled(u8),
}

impl Status {
    /// The `wait4` status word (`WIFEXITED`/`WIFSIGNALED` encoding).
    pub fn wait_word(self) -> u32 {
        match self {
            Status::Exited(c) => (c as u32) << 8,
            Status::Signaled(s) => s as u32 & 0x7f,
        }
    }
}

/// Resource limits for one build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of user memory mapped across all processes.
    pub memory: u64,
    pub processes: usize,
    /// Timer ticks of CPU time across all processes.
    pub cpu_ticks: u64,
    /// Bytes of stdout and stderr together (Nix's `max-log-size`): past it the build ends
    /// with `SIGXFSZ`, so a builder cannot fill the channel.
    pub log_bytes: u64,
}

/// A limit of [`Limits`] (or of the file system) that refused something during a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// The file system's bytes or inodes (`ENOSPC`).
    Files,
    /// Memory across all processes (`ENOMEM` from the accounting).
    Memory,
    /// Processes alive at once (`EAGAIN` from fork).
    Processes,
    /// Bytes of stdout and stderr (`SIGXFSZ`).
    Log,
    /// CPU time (`SIGXCPU`).
    CpuTime,
}

/// User registers, saved at every event (hardware encoding order for `gpr`). The arch layer's
/// entry code relies on this exact layout (`repr(C)`: gpr at 0, rip 128, rflags 136, fs_base
/// 144, the FXSAVE area at 160).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub fs_base: u64,
    /// x87/SSE state (the 512-byte FXSAVE image), saved and restored at every switch.
    pub fpu: Fpu,
}

/// The FXSAVE area of one process.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fpu(pub [u8; 512]);

impl Default for Fpu {
    /// The state a new program starts with (Linux's `fpstate_init`): x87 control word 0x37F,
    /// MXCSR 0x1F80 (all exceptions masked, round to nearest).
    fn default() -> Fpu {
        let mut f = [0u8; 512];
        f[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        f[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        Fpu(f)
    }
}

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RSP: usize = 4;
pub const RSI: usize = 6;
pub const RDI: usize = 7;
pub const R8: usize = 8;
pub const R9: usize = 9;
pub const R10: usize = 10;
pub const R11: usize = 11;

/// A pipe's buffer; the end counts are kept by [`PipeEnd`] guards.
///
/// The buffer is user memory in all but name (Linux charges pipe pages to the writer's memory
/// cgroup): it is allocated, [`PIPE_CAP`] bytes at once, with the first byte written, freed when
/// the pipe empties or goes away, and counted in `held` (the kernel's total, charged to the
/// memory limit).
#[derive(Debug)]
pub struct Pipe {
    buf: VecDeque<u8>,
    pub readers: usize,
    pub writers: usize,
    held: Rc<core::cell::Cell<u64>>,
}

impl Pipe {
    pub fn new(held: Rc<core::cell::Cell<u64>>) -> Pipe {
        Pipe { buf: VecDeque::new(), readers: 0, writers: 0, held }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Whether writing needs a buffer allocated first.
    pub fn unallocated(&self) -> bool {
        self.buf.capacity() == 0
    }
    /// Appends what fits (at most `PIPE_CAP` buffered); returns how much.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(PIPE_CAP - self.buf.len());
        if n > 0 && self.unallocated() {
            self.buf = VecDeque::with_capacity(PIPE_CAP);
            self.held.set(self.held.get() + PIPE_CAP as u64);
        }
        self.buf.extend(&data[..n]);
        n
    }
    /// Takes up to `out.len()` bytes; returns how many. An emptied buffer is freed.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.buf.len());
        for (d, s) in out.iter_mut().zip(self.buf.drain(..n)) {
            *d = s;
        }
        if self.buf.is_empty() {
            self.free();
        }
        n
    }
    fn free(&mut self) {
        if !self.unallocated() {
            self.buf = VecDeque::new();
            self.held.set(self.held.get() - PIPE_CAP as u64);
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.free();
    }
}

/// One end of a pipe; dropping the last descriptor of it closes that end.
#[derive(Debug)]
pub struct PipeEnd {
    pub pipe: Rc<RefCell<Pipe>>,
    pub write: bool,
}

impl PipeEnd {
    pub fn new_end(pipe: Rc<RefCell<Pipe>>, write: bool) -> PipeEnd {
        if write {
            pipe.borrow_mut().writers += 1;
        } else {
            pipe.borrow_mut().readers += 1;
        }
        PipeEnd { pipe, write }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut p = self.pipe.borrow_mut();
        if self.write {
            p.writers -= 1;
        } else {
            p.readers -= 1;
        }
    }
}

/// What an open file description refers to.
#[derive(Debug)]
pub enum Object {
    /// A file-system inode (file, directory or device).
    Inode(Ino),
    Pipe(PipeEnd),
    /// The builder's stdout (1) or stderr (2), streamed to the loader.
    Log(u8),
}

/// An open file description (shared by `dup` and `fork`).
#[derive(Debug)]
pub struct Ofd {
    pub object: Object,
    pub offset: u64,
    /// `O_ACCMODE`, `O_APPEND`, `O_NONBLOCK` bits.
    pub flags: u32,
}

pub type OfdRef = Rc<RefCell<Ofd>>;

#[derive(Clone, Debug)]
pub struct FdEntry {
    pub ofd: OfdRef,
    pub cloexec: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Runnable,
    /// Waiting in a syscall that is retried when it is scheduled again.
    Blocked,
    /// A vfork parent, waiting for its child to exec or exit.
    VforkWait(Pid),
    Zombie(Status),
}

/// One process.
pub struct Process<M> {
    pub pid: Pid,
    pub ppid: Pid,
    pub regs: Regs,
    pub mem: M,
    pub state: State,
    pub fds: Vec<Option<FdEntry>>,
    pub cwd: Ino,
    pub umask: u32,
    pub brk_start: u64,
    pub brk: u64,
    pub mmap_next: u64,
    /// Mapped page ranges (for accounting).
    pub regions: Regions,
    /// Actions, mask, pending signals.
    pub sig: Signals,
    pub vfork_parent: Option<Pid>,
    /// A `vfork` child runs in its parent's address space (`CLONE_VM`), borrowed until it
    /// execs or ends; the parent holds an empty one meanwhile (it does not run).
    pub borrowed_vm: bool,
    /// The program it runs and its absolute path (what `/proc/self/exe` names).
    pub exe: Ino,
    pub exe_path: Vec<u8>,
    /// How often it has read the time-stamp counter (`sandbox::cpu::tsc`); a fork's child
    /// goes on from its parent's count.
    pub tsc_reads: u64,
}

impl<M: Memory> Process<M> {
    /// Memory charged to the limit: mapped pages and the page tables that map them.
    fn mapped(&self) -> u64 {
        self.regions.total() + self.mem.table_bytes()
    }
}

/// What the arch layer does after a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Return this value in rax and continue.
    Ret(i64),
    /// The process cannot continue yet; the syscall is retried later (rip/rax unchanged).
    Block,
    /// Registers were replaced (execve); resume with them.
    Resumed,
    /// The process ended.
    Ended,
}

/// A CPU exception raised by user code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    pub error: u64,
    /// CR2 for page faults.
    pub address: u64,
}

/// The sandbox kernel: file system, processes, scheduler.
pub struct Kernel<M: Memory> {
    pub fs: Fs,
    pub procs: BTreeMap<Pid, Process<M>>,
    queue: VecDeque<Pid>,
    next_pid: Pid,
    rng: u64,
    /// Builder output not yet sent: (1 = stdout, 2 = stderr, bytes).
    pub output: Vec<(u8, Vec<u8>)>,
    /// Diagnostics for the agent's log (unimplemented syscalls, faults, limits).
    pub notes: Vec<String>,
    unimplemented: BTreeSet<u64>,
    pub limits: Limits,
    /// The limits that refused something so far (each noted once when first reached).
    pub limits_reached: BTreeSet<Limit>,
    /// CPU time charged, in timer ticks: ring 3 and the agent's share.
    pub ticks: u64,
    pub agent_ticks: u64,
    /// Bytes written to stdout and stderr so far.
    pub log_written: u64,
    /// Bytes of pipe buffers allocated (see [`Pipe`]).
    pub pipe_memory: Rc<core::cell::Cell<u64>>,
    /// Open descriptions per inode, so unlinked-but-open files stay readable.
    open_count: BTreeMap<Ino, usize>,
    result: Option<Status>,
    /// `NIX_BUILD_CORES` and the like are the caller's business; this is uname's nodename.
    pub hostname: &'static [u8],
}

impl<M: Memory> Kernel<M> {
    /// A kernel over `fs` (see [`Fs::nix_sandbox`]).
    pub fn new(fs: Fs, limits: Limits) -> Kernel<M> {
        Kernel {
            fs,
            procs: BTreeMap::new(),
            queue: VecDeque::new(),
            next_pid: 1,
            rng: RANDOM_SEED,
            output: Vec::new(),
            notes: Vec::new(),
            unimplemented: BTreeSet::new(),
            limits,
            limits_reached: BTreeSet::new(),
            ticks: 0,
            agent_ticks: 0,
            log_written: 0,
            pipe_memory: Rc::new(core::cell::Cell::new(0)),
            open_count: BTreeMap::new(),
            result: None,
            hostname: b"localhost",
        }
    }

    /// The deterministic random stream (SplitMix64).
    pub fn random(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }

    /// The builder's status once pid 1 has ended.
    pub fn finished(&self) -> Option<Status> {
        self.result
    }

    /// The process to run next (the front of the run queue).
    pub fn current(&self) -> Option<Pid> {
        self.queue.front().copied()
    }

    pub fn process(&mut self, pid: Pid) -> Option<&mut Process<M>> {
        self.procs.get_mut(&pid)
    }

    pub(crate) fn p(&self, pid: Pid) -> &Process<M> {
        &self.procs[&pid]
    }
    pub(crate) fn pm(&mut self, pid: Pid) -> &mut Process<M> {
        self.procs.get_mut(&pid).expect("live pid")
    }

    /// Starts pid 1: runs `path` (resolved in the sandbox, from `/build`)
    /// with `argv` and `envp`, stdin `/dev/null`, stdout/stderr to the log.
    pub fn spawn(&mut self, mem: M, path: &[u8], argv: Vec<Vec<u8>>, envp: Vec<Vec<u8>>) -> Result<Pid, Errno> {
        let cwd = self.fs.resolve(ROOT, b"/build", true)?;
        // From here on, every change advances the file clock (`Fs::now`).
        self.fs.ticking = true;
        let pid = self.next_pid;
        self.next_pid += 1;
        let null = self.fs.resolve(ROOT, b"/dev/null", true)?;
        let fds = alloc::vec![
            Some(self.new_fd(Object::Inode(null), 0, false)),
            Some(self.new_fd(Object::Log(1), 1, false)),
            Some(self.new_fd(Object::Log(2), 1, false)),
        ];
        let proc = Process {
            pid,
            ppid: 0,
            regs: Regs::default(),
            mem,
            state: State::Runnable,
            fds,
            cwd,
            umask: 0o022,
            brk_start: 0,
            brk: 0,
            mmap_next: MMAP_TOP,
            regions: Regions::default(),
            sig: Signals::default(),
            vfork_parent: None,
            borrowed_vm: false,
            exe: ROOT,
            exe_path: Vec::new(),
            tsc_reads: 0,
        };
        self.procs.insert(pid, proc);
        if let Err(e) = self.exec(pid, path, argv, envp) {
            self.procs.remove(&pid);
            return Err(e);
        }
        self.queue.push_back(pid);
        Ok(pid)
    }

    /// Starts a derivation's builder as Nix 2.8 does (`LocalDerivationGoal::startBuilder`
    /// then `runChild`): the setup's files are written into `/build` (mode 0644, as Nix's
    /// `writeFile` under umask 022), then `program` runs with `argv` and `envp` from
    /// [`crate::build::env::builder_setup`], cwd `/build`, umask 022.
    pub fn start_builder(&mut self, mem: M, setup: &crate::build::env::BuilderSetup) -> Result<Pid, Errno> {
        let build = self.fs.resolve(ROOT, b"/build", true)?;
        for (name, contents) in &setup.files {
            let f = self.fs.create(build, name.as_bytes(), 0o644)?;
            self.fs.write_at(f, 0, contents)?;
        }
        let argv = setup.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        let envp = setup.envp.iter().map(|e| e.as_bytes().to_vec()).collect();
        self.spawn(mem, setup.program.as_bytes(), argv, envp)
    }

    pub(crate) fn new_fd(&mut self, object: Object, flags: u32, cloexec: bool) -> FdEntry {
        if let Object::Inode(i) = object {
            *self.open_count.entry(i).or_insert(0) += 1;
        }
        FdEntry { ofd: Rc::new(RefCell::new(Ofd { object, offset: 0, flags })), cloexec }
    }

    /// Drops a descriptor; the last one of an unlinked file frees it; the last one of a pipe
    /// end wakes every blocked process (a reader waiting for data sees end of file, a writer
    /// sees no reader), whether it goes by `close`, `dup2`, close-on-exec or exit.
    pub(crate) fn put_fd(&mut self, e: FdEntry) {
        if Rc::strong_count(&e.ofd) == 1 {
            let pipe = matches!(e.ofd.borrow().object, Object::Pipe(_));
            if let Object::Inode(i) = e.ofd.borrow().object {
                let c = self.open_count.entry(i).or_insert(1);
                *c -= 1;
                if *c == 0 {
                    self.open_count.remove(&i);
                    self.fs.release(i);
                }
            }
            drop(e);
            if pipe {
                self.wake_all();
            }
        }
    }

    /// Frees an inode that lost its last name, unless a descriptor holds it.
    pub(crate) fn release_if_closed(&mut self, ino: Ino) {
        if !self.open_count.contains_key(&ino) {
            self.fs.release(ino);
        }
    }

    /// Memory charged to the limit: user pages and page tables of every process, and pipe
    /// buffers.
    /// Records that `limit` refused something (a note the first time), and gives `e` back.
    pub(crate) fn reached(&mut self, limit: Limit, e: Errno) -> Errno {
        if self.limits_reached.insert(limit) {
            let what = self.describe(limit);
            self.notes.push(alloc::format!("sandbox: limit reached: {what}"));
        }
        e
    }

    /// A limit in words, with its value in this kernel.
    pub fn describe(&self, limit: Limit) -> String {
        let l = &self.limits;
        match limit {
            Limit::Files => alloc::format!("the sandbox's file system is full ({} bytes of files or {} inodes)", self.fs.limit_bytes, self.fs.limit_inodes),
            Limit::Memory => alloc::format!("memory ({} bytes across all processes)", l.memory),
            Limit::Processes => alloc::format!("processes ({} alive at once)", l.processes),
            Limit::Log => alloc::format!("log size ({} bytes of stdout and stderr)", l.log_bytes),
            Limit::CpuTime => alloc::format!("CPU time ({} ticks of 10 ms)", l.cpu_ticks),
        }
    }

    /// Every limit reached, in words (for the error that ends a build).
    pub fn limits_reached_text(&self) -> Option<String> {
        let all: Vec<String> = self.limits_reached.iter().map(|&l| self.describe(l)).collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    pub fn memory_used(&self) -> u64 {
        self.procs.values().map(|p| p.mapped()).sum::<u64>() + self.pipe_memory.get()
    }

    /// Maps `[va, va+len)` for `pid` with accounting against the memory limit.
    pub(crate) fn map(&mut self, pid: Pid, va: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        let new = len - self.p(pid).regions.overlap(va, va + len) + tables_for(len);
        if self.memory_used().saturating_add(new) > self.limits.memory {
            return Err(self.reached(Limit::Memory, Errno::ENOMEM));
        }
        self.pm(pid).mem.map(va, len, prot)?;
        let p = self.pm(pid);
        p.regions.insert(va, va + len);
        Ok(())
    }

    pub(crate) fn unmap(&mut self, pid: Pid, va: u64, len: u64) {
        let p = self.pm(pid);
        p.mem.unmap(va, len);
        p.regions.remove(va, va.saturating_add(len));
    }

    /// `execve` after the path has been read: loads the program (following
    /// up to 4 `#!` levels, as `binfmt_script`), replaces the address space,
    /// builds the stack, closes close-on-exec descriptors.
    pub fn exec(&mut self, pid: Pid, path: &[u8], mut argv: Vec<Vec<u8>>, envp: Vec<Vec<u8>>) -> Result<(), Errno> {
        let cwd = self.p(pid).cwd;
        let mut path = path.to_vec();
        let execfn = path.clone();
        let mut depth = 0;
        let (image, ino) = loop {
            // `/proc/self/exe` is the only part of /proc a builder gets: busybox re-executes
            // itself through it to run its applets.
            let ino = if path == PROC_SELF_EXE { self.p(pid).exe } else { self.fs.resolve(cwd, &path, true)? };
            let node = self.fs.get(ino)?;
            if !matches!(node.kind, Kind::File(_)) {
                return Err(Errno::EACCES);
            }
            self.fs.access(ino, super::fs::X_OK)?;
            let Kind::File(data) = &node.kind else { return Err(Errno::EACCES) };
            match elf::shebang(data) {
                None => break (elf::parse(data).map_err(|_| Errno::ENOEXEC)?, ino),
                Some(Err(_)) => return Err(Errno::ENOEXEC),
                Some(Ok((interp, arg))) => {
                    depth += 1;
                    if depth > 4 {
                        return Err(Errno::ELOOP);
                    }
                    // argv becomes: interp [arg] path argv[1..]
                    let mut nv = Vec::with_capacity(argv.len() + 2);
                    nv.push(interp.clone());
                    if let Some(a) = arg {
                        nv.push(a);
                    }
                    nv.push(path.clone());
                    nv.extend(argv.into_iter().skip(1));
                    argv = nv;
                    path = interp;
                }
            }
        };
        let absolute = if path.starts_with(b"/") {
            path.clone()
        } else {
            let mut a = self.fs.path_of(cwd)?;
            if a != b"/" {
                a.push(b'/');
            }
            a.extend_from_slice(&path);
            a
        };
        // The interpreter a dynamically linked program names (`PT_INTERP`, the dynamic loader):
        // resolved from the working directory like any path, a regular file the process may
        // execute, an ELF that names no interpreter itself (binfmt_elf's `open_exec` and
        // `load_elf_interp`).
        let interp = match &image.interp {
            None => None,
            Some(ip) => {
                let ii = self.fs.resolve(cwd, ip, true)?;
                let node = self.fs.get(ii)?;
                let Kind::File(data) = &node.kind else { return Err(Errno::EACCES) };
                self.fs.access(ii, super::fs::X_OK)?;
                Some((elf::parse_interp(data).map_err(|_| Errno::ELIBBAD)?, ii))
            }
        };
        let mut random = [0u8; 16];
        self.random(&mut random);
        let base = interp.as_ref().map_or(0, |(i, _)| i.bias);
        let spec = StackSpec { argv: &argv, envp: &envp, execfn: &execfn, random, uid: UID as u64, gid: GID as u64, hwcap: 0x178b_fbff, base };
        let (stack, sp) = elf::build_stack(STACK_TOP, &image, &spec).map_err(|_| Errno::E2BIG)?;
        if stack.len() as u64 > STACK_SIZE / 2 {
            return Err(Errno::E2BIG);
        }
        // Point of no return: from here a failure ends the process.
        // What the old image frees (nothing when it is a vfork parent's, which it keeps).
        let old: u64 = if self.p(pid).borrowed_vm { 0 } else { self.p(pid).mapped() };
        let pages = |img: &elf::Image| img.segments.iter().map(|s| s.pages().1 - s.pages().0).sum::<u64>();
        let need: u64 = pages(&image) + interp.as_ref().map_or(0, |(i, _)| pages(i)) + STACK_SIZE;
        if self.memory_used() - old + need > self.limits.memory {
            return Err(self.reached(Limit::Memory, Errno::ENOMEM));
        }
        self.return_vm(pid)?;
        {
            let p = self.pm(pid);
            p.mem.clear();
            p.regions.clear();
        }
        self.load_image(pid, &image, ino)?;
        let entry = match &interp {
            Some((i, ii)) => {
                self.load_image(pid, i, *ii)?;
                i.entry
            }
            None => image.entry,
        };
        let rw = Prot { read: true, write: true, exec: false };
        self.map(pid, STACK_TOP - STACK_SIZE, STACK_SIZE, rw)?;
        self.pm(pid).mem.poke(sp, &stack).map_err(|_| Errno::EFAULT)?;
        let mut closing = Vec::new();
        let p = self.pm(pid);
        p.regs = Regs { rip: entry, rflags: 0x202, ..Regs::default() };
        p.regs.gpr[RSP] = sp;
        if path != PROC_SELF_EXE {
            p.exe_path = absolute;
        }
        p.exe = ino;
        p.brk_start = image.brk;
        p.brk = image.brk;
        p.mmap_next = MMAP_TOP;
        p.sig.exec();
        for slot in p.fds.iter_mut() {
            if slot.as_ref().is_some_and(|e| e.cloexec) {
                closing.push(slot.take().expect("checked"));
            }
        }
        for e in closing {
            self.put_fd(e);
        }
        self.release_vfork_parent(pid);
        Ok(())
    }

    /// Maps an image's segments and fills them from the file `ino`, then gives each its rights.
    fn load_image(&mut self, pid: Pid, image: &elf::Image, ino: Ino) -> Result<(), Errno> {
        let rw = Prot { read: true, write: true, exec: false };
        for s in &image.segments {
            let (a, b) = s.pages();
            self.map(pid, a, b - a, rw)?;
        }
        // Straight from the file's bytes (no copy: a program may be as large as the file system).
        let Kind::File(file) = &self.fs.get(ino)?.kind else { return Err(Errno::EACCES) };
        let mem = &mut self.procs.get_mut(&pid).ok_or(Errno::ESRCH)?.mem;
        for s in &image.segments {
            mem.poke(s.vaddr, &file[s.offset as usize..(s.offset + s.filesz) as usize]).map_err(|_| Errno::EFAULT)?;
        }
        for s in &image.segments {
            let (a, b) = s.pages();
            self.pm(pid).mem.protect(a, b - a, s.prot)?;
        }
        Ok(())
    }

    /// A `vfork` child that execs or ends gives its parent's address space back (with the
    /// mappings it made meanwhile, as they were made in the shared space) and keeps an empty one.
    fn return_vm(&mut self, pid: Pid) -> Result<(), Errno> {
        let Some(c) = self.procs.get_mut(&pid) else { return Ok(()) };
        if !c.borrowed_vm {
            return Ok(());
        }
        c.borrowed_vm = false;
        let empty = c.mem.empty()?;
        let mem = core::mem::replace(&mut c.mem, empty);
        let regions = core::mem::take(&mut c.regions);
        let (brk_start, brk, mmap_next) = (c.brk_start, c.brk, c.mmap_next);
        match c.vfork_parent.and_then(|pp| self.procs.get_mut(&pp)) {
            Some(parent) if !matches!(parent.state, State::Zombie(_)) => {
                parent.mem = mem;
                parent.regions = regions;
                (parent.brk_start, parent.brk, parent.mmap_next) = (brk_start, brk, mmap_next);
            }
            _ => drop(mem), // the parent has gone: the space goes with the child's
        }
        Ok(())
    }

    fn release_vfork_parent(&mut self, pid: Pid) {
        if let Some(pp) = self.pm(pid).vfork_parent.take() {
            if let Some(parent) = self.procs.get_mut(&pp) {
                if parent.state == State::VforkWait(pid) {
                    parent.state = State::Runnable;
                    self.queue.push_back(pp);
                }
            }
        }
    }

    /// `fork`/`vfork`: a copy of `pid` whose syscall returns 0.
    pub fn fork(&mut self, pid: Pid, vfork: bool) -> Result<Pid, Errno> {
        let live = self.procs.values().filter(|p| !matches!(p.state, State::Zombie(_))).count();
        if live >= self.limits.processes {
            return Err(self.reached(Limit::Processes, Errno::EAGAIN));
        }
        // A vfork child borrows its parent's address space (the parent waits, as Linux's
        // CLONE_VM|CLONE_VFORK: what the child writes, e.g. posix_spawn's error report, the
        // parent sees); a fork child gets a copy-on-write copy.
        let (mem, regions) = if vfork {
            let parent = self.pm(pid);
            let empty = parent.mem.empty()?;
            (core::mem::replace(&mut parent.mem, empty), core::mem::take(&mut parent.regions))
        } else {
            if self.memory_used().saturating_add(self.p(pid).mapped()) > self.limits.memory {
                return Err(self.reached(Limit::Memory, Errno::ENOMEM));
            }
            let parent = self.pm(pid);
            (parent.mem.fork()?, parent.regions.clone())
        };
        let parent = self.p(pid);
        let child_pid = self.next_pid;
        let mut regs = parent.regs;
        regs.gpr[RAX] = 0;
        let child = Process {
            pid: child_pid,
            ppid: pid,
            regs,
            mem,
            state: State::Runnable,
            fds: parent.fds.clone(),
            cwd: parent.cwd,
            umask: parent.umask,
            brk_start: parent.brk_start,
            brk: parent.brk,
            mmap_next: parent.mmap_next,
            regions,
            sig: parent.sig.fork(),
            vfork_parent: if vfork { Some(pid) } else { None },
            borrowed_vm: vfork,
            exe: parent.exe,
            exe_path: parent.exe_path.clone(),
            tsc_reads: parent.tsc_reads,
        };
        self.next_pid += 1;
        self.procs.insert(child_pid, child);
        self.queue.push_back(child_pid);
        Ok(child_pid)
    }

    /// Ends `pid` with `status`: closes its descriptors, frees its memory,
    /// hands its children to pid 1 and wakes a waiting parent.
    pub fn end(&mut self, pid: Pid, status: Status) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if matches!(p.state, State::Zombie(_)) {
            return;
        }
        p.state = State::Zombie(status);
        let _ = self.return_vm(pid);
        let p = self.pm(pid);
        p.mem.clear();
        p.regions.clear();
        let fds: Vec<FdEntry> = p.fds.drain(..).flatten().collect();
        let ppid = p.ppid;
        for e in fds {
            self.put_fd(e);
        }
        self.release_vfork_parent(pid);
        self.queue.retain(|&q| q != pid);
        if pid == 1 {
            self.result = Some(status);
            let others: Vec<Pid> = self.procs.keys().copied().filter(|&q| q != 1).collect();
            for q in others {
                self.end(q, Status::Signaled(sig::SIGKILL));
            }
            self.procs.clear();
            self.queue.clear();
            return;
        }
        // Orphans: reap zombies now, hand the living to pid 1.
        let kids: Vec<Pid> = self.procs.values().filter(|c| c.ppid == pid).map(|c| c.pid).collect();
        for k in kids {
            if matches!(self.p(k).state, State::Zombie(_)) {
                self.procs.remove(&k);
            } else {
                self.pm(k).ppid = 1;
            }
        }
        // A parent blocked in wait4 retries; it is sent SIGCHLD.
        if let Some(parent) = self.procs.get_mut(&ppid) {
            if parent.state == State::Blocked {
                parent.state = State::Runnable;
                self.enqueue(ppid);
            }
            self.send(ppid, super::signal::SIGCHLD, Info::child(pid, status));
        } else {
            self.procs.remove(&pid);
        }
    }

    /// Puts `pid` at the back of the run queue unless it is there already.
    pub(crate) fn enqueue(&mut self, pid: Pid) {
        if !self.queue.contains(&pid) {
            self.queue.push_back(pid);
        }
    }

    /// Wakes every blocked process (pipe state changed); each retries its syscall.
    pub(crate) fn wake_all(&mut self) {
        let blocked: Vec<Pid> = self.procs.values().filter(|p| p.state == State::Blocked).map(|p| p.pid).collect();
        for b in blocked {
            self.pm(b).state = State::Runnable;
            if !self.queue.contains(&b) {
                self.queue.push_back(b);
            }
        }
    }

    /// After `pid`'s syscall blocked: park it; if nothing can run, the build is deadlocked.
    pub(crate) fn block(&mut self, pid: Pid) {
        self.pm(pid).state = State::Blocked;
        self.queue.retain(|&q| q != pid);
        if self.queue.is_empty() && self.result.is_none() {
            let mut waits = String::new();
            for p in self.procs.values() {
                let what = match p.state {
                    State::Blocked => alloc::format!("in system call {}", p.regs.gpr[RAX]),
                    State::VforkWait(c) => alloc::format!("waiting for vfork child {c}"),
                    State::Zombie(_) => String::from("ended"),
                    State::Runnable => String::from("runnable"),
                };
                waits.push_str(&alloc::format!("; pid {} (parent {}) {what}", p.pid, p.ppid));
            }
            self.notes.push(alloc::format!("sandbox: every process is blocked (deadlock); ending the build{waits}"));
            self.end(1, Status::Signaled(sig::SIGKILL));
        }
    }

    /// A timer tick while `pid` ran: charges CPU time, enforces the limit, rotates the queue.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.over_cpu_limit() {
            return;
        }
        if let Some(p) = self.queue.pop_front() {
            self.queue.push_back(p);
        }
    }

    /// Charges `n` ticks of time the agent spent on the build's behalf (system calls, page
    /// copies, output) to the CPU limit, as Linux charges system time. True when the limit has
    /// ended the build.
    pub fn charge(&mut self, n: u64) -> bool {
        self.ticks = self.ticks.saturating_add(n);
        self.agent_ticks = self.agent_ticks.saturating_add(n);
        self.over_cpu_limit()
    }

    fn over_cpu_limit(&mut self) -> bool {
        if self.ticks <= self.limits.cpu_ticks {
            return false;
        }
        if self.result.is_none() {
            self.limits_reached.insert(Limit::CpuTime);
            let (all, agent) = (self.ticks, self.agent_ticks);
            self.notes.push(alloc::format!("sandbox: CPU time limit reached after {all} ticks ({agent} of them in the agent); ending the build"));
            self.end(1, Status::Signaled(sig::SIGXCPU));
        }
        true
    }

    /// A vfork parent leaves the run queue until its child execs or exits.
    pub(crate) fn park_vfork(&mut self, pid: Pid) {
        self.queue.retain(|&q| q != pid);
    }

    /// `sched_yield`.
    pub(crate) fn yield_now(&mut self) {
        self.tick_free_rotate();
    }
    fn tick_free_rotate(&mut self) {
        if let Some(p) = self.queue.pop_front() {
            self.queue.push_back(p);
        }
    }

    /// A CPU exception in user code: the matching signal's handler runs if the process has one
    /// (and does not block it); otherwise the process ends with that signal.
    ///
    /// First, a trap the arch layer arranged on purpose: `cpuid`, `rdtsc` or `rdtscp` at RIP
    /// raising #GP (CR4.TSD, CPUID faulting), #VE (TDX) or #VC (SEV-SNP) is answered by
    /// `sandbox::cpu` and the process goes on after the instruction.
    pub fn fault(&mut self, pid: Pid, e: Exception) {
        // A write to a copy-on-write page (present, write access): the memory layer copies it
        // and the instruction runs again.
        if e.vector == 14 && e.error & 3 == 3 {
            if let Some(p) = self.procs.get_mut(&pid) {
                if p.mem.resolve_fault(e.address, true) {
                    return;
                }
            }
        }
        if matches!(e.vector, 13 | 20 | 29) && self.emulate_cpu(pid) {
            return;
        }
        let s = match e.vector {
            0 => sig::SIGFPE,  // #DE
            1 | 3 => sig::SIGTRAP,
            6 => sig::SIGILL,  // #UD
            16 | 19 => sig::SIGFPE,
            17 => sig::SIGBUS, // #AC
            _ => sig::SIGSEGV, // #GP (privileged instructions), #PF, #SS, ...
        };
        if self.fault_signal(pid, s, e.address) {
            return;
        }
        let rip = self.procs.get(&pid).map(|p| p.regs.rip).unwrap_or(0);
        self.notes.push(alloc::format!(
            "sandbox: pid {pid} killed by signal {s}: exception {} (error {:#x}, address {:#x}) at rip {rip:#x}",
            e.vector, e.error, e.address
        ));
        self.end(pid, Status::Signaled(s));
    }

    /// Answers the instruction at `pid`'s RIP if it is one `sandbox::cpu` emulates.
    fn emulate_cpu(&mut self, pid: Pid) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else { return false };
        let mut bytes = [0u8; 3];
        // The instruction is 2 or 3 bytes; its last byte may sit alone on the next page.
        let n = if p.mem.read(p.regs.rip, &mut bytes).is_ok() {
            3
        } else if p.mem.read(p.regs.rip, &mut bytes[..2]).is_ok() {
            2
        } else {
            return false;
        };
        let Some(insn) = super::cpu::decode(&bytes[..n]) else { return false };
        super::cpu::emulate(insn, &mut p.regs, &mut p.tsc_reads);
        true
    }

    pub(crate) fn note_unimplemented(&mut self, nr: u64) {
        if self.unimplemented.insert(nr) {
            self.notes.push(alloc::format!("sandbox: unimplemented syscall {nr} (ENOSYS)"));
        }
    }

    /// Syscall numbers that were asked for and answered `ENOSYS`.
    pub fn unimplemented(&self) -> impl Iterator<Item = &u64> {
        self.unimplemented.iter()
    }
}

/// The most page-table bytes a new mapping of `len` bytes can need (a table per 2 MiB, 1 GiB
/// and 512 GiB region it touches, each possibly straddling one boundary).
fn tables_for(len: u64) -> u64 {
    ((len >> 21) + (len >> 30) + (len >> 39) + 3) * PAGE
}

/// A process's mapped page ranges, start → end (disjoint), with their total kept up to date.
/// Every operation is logarithmic in the number of ranges plus the ranges it touches: a
/// builder can make tens of thousands of them, and the agent's time is not charged to its CPU
/// limit.
#[derive(Clone, Debug, Default)]
pub struct Regions {
    map: BTreeMap<u64, u64>,
    total: u64,
}

impl Regions {
    /// Bytes mapped.
    pub fn total(&self) -> u64 {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn clear(&mut self) {
        self.map.clear();
        self.total = 0;
    }
    /// The ranges that overlap `[a, b)`, last first: ranges are disjoint, so their ends are in
    /// the order of their starts, and the walk back from `b` stops at the first that ends by `a`.
    fn hits(&self, a: u64, b: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let b = b.max(a); // an empty query overlaps nothing
        self.map.range(..b).rev().map(|(&s, &e)| (s, e)).take_while(move |&(_, e)| e > a).filter(move |_| a < b)
    }
    /// Whether any of `[a, b)` is mapped.
    pub fn any_in(&self, a: u64, b: u64) -> bool {
        self.hits(a, b).next().is_some()
    }
    /// Bytes of `[a, b)` mapped.
    pub fn overlap(&self, a: u64, b: u64) -> u64 {
        self.hits(a, b).map(|(s, e)| e.min(b) - s.max(a)).sum()
    }
    /// Unmaps `[a, b)`, splitting the ranges it cuts.
    pub fn remove(&mut self, a: u64, b: u64) {
        let hit: Vec<(u64, u64)> = self.hits(a, b).collect();
        for (s, e) in hit {
            self.map.remove(&s);
            self.total -= e - s;
            if s < a {
                self.map.insert(s, a);
                self.total += a - s;
            }
            if e > b {
                self.map.insert(b, e);
                self.total += e - b;
            }
        }
    }
    /// Maps `[a, b)` (whatever of it was mapped stays counted once).
    pub fn insert(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        self.remove(a, b);
        self.map.insert(a, b);
        self.total += b - a;
    }
}

pub(crate) fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_agree_with_a_page_by_page_model() {
        // Found by the abuse suite: tens of thousands of one-page mappings made every mmap walk
        // all of them (26 s of agent time, not charged to the CPU limit). The logarithmic
        // bookkeeping must still count exactly what a page-by-page model counts.
        let mut r = Regions::default();
        let mut model = BTreeSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = (x % 64) * PAGE;
            let b = a + ((x >> 8) % 9) * PAGE;
            let (qa, qb) = (((x >> 16) % 64) * PAGE, ((x >> 16) % 64 + (x >> 24) % 9) * PAGE);
            let want = (qa..qb).step_by(PAGE as usize).filter(|p| model.contains(p)).count() as u64 * PAGE;
            assert_eq!(r.overlap(qa, qb), want);
            assert_eq!(r.any_in(qa, qb), want > 0);
            if x >> 40 & 1 == 0 {
                r.insert(a, b);
                model.extend((a..b).step_by(PAGE as usize));
            } else {
                r.remove(a, b);
                for p in (a..b).step_by(PAGE as usize) {
                    model.remove(&p);
                }
            }
            assert_eq!(r.total(), model.len() as u64 * PAGE);
            assert!(r.map.iter().zip(r.map.iter().skip(1)).all(|((_, e), (s, _))| e <= s), "disjoint");
        }
    }
}
