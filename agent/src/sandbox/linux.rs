//! The Linux syscall subset, dispatched on numbers.
//!
//! [`Kernel::syscall`] takes the registers saved at a `syscall` instruction
//! (number in rax, arguments in rdi, rsi, rdx, r10, r8, r9) and answers with a
//! [`Step`]. User memory is touched only through [`Memory`]; a bad pointer is
//! `EFAULT`. Anything not listed answers `ENOSYS` and is noted once.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::abi::{nr, Errno, S_IFIFO};
use super::elf::{Prot, PAGE, USER_END};
use super::fs::{Device, Ino, Kind, PATH_MAX, R_OK, W_OK, X_OK};
use super::mem::{access_ok, user_range, Memory};
use super::process::*;
use super::signal::{Action, Delivery, Info, NSIG};

const AT_FDCWD: i64 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EMPTY_PATH: u64 = 0x1000;
/// Nanoseconds per second.
const NS: i64 = 1_000_000_000;
const UTIME_NOW: i64 = 0x3fff_ffff;
const UTIME_OMIT: i64 = 0x3fff_fffe;
const O_ACCMODE: u32 = 3;
const O_WRONLY: u32 = 1;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_NONBLOCK: u32 = 0o4000;
const O_DIRECTORY: u32 = 0o200000;
const O_NOFOLLOW: u32 = 0o400000;
const O_CLOEXEC: u32 = 0o2000000;
/// Largest transfer per read/write call (a short count, as Linux's `MAX_RW_COUNT` does).
const MAX_RW: usize = 1 << 20;
const MAX_ARGS: usize = 1 << 16;

type R = Result<i64, Errno>;

/// A syscall's answer before it becomes a [`Step`].
enum Out {
    Ret(i64),
    Block,
    Resumed,
    Ended,
}

impl From<Errno> for Out {
    fn from(e: Errno) -> Out {
        Out::Ret(e.ret())
    }
}

/// `set*id` to the builder's own id (or -1, "unchanged") succeeds; anything else is EPERM.
fn ids_ok(ids: &[u64], own: u32) -> R {
    if ids.iter().all(|&v| v as u32 == u32::MAX || v as u32 == own) {
        Ok(0)
    } else {
        Err(Errno::EPERM)
    }
}

/// Which of the in-kernel copies (`sendfile`, `splice`, `copy_file_range`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copy {
    Sendfile,
    Splice,
    FileRange,
}

/// `chown` to the builder's own ids (or -1, "unchanged") succeeds; anything else is EPERM.
fn chown_ok(uid: u64, gid: u64) -> R {
    let keep = |v: u64, own: u32| v as u32 == u32::MAX || v as u32 == own;
    if keep(uid, UID) && keep(gid, GID) {
        Ok(0)
    } else {
        Err(Errno::EPERM)
    }
}

impl<M: Memory> Kernel<M> {
    /// Handles the syscall `pid` just made with registers `regs` (already saved in the process).
    pub fn syscall(&mut self, pid: Pid) -> Step {
        let Some(p) = self.procs.get_mut(&pid) else { return Step::Ended };
        // Whatever the process was waiting in, it has come back to run a call.
        p.sig.restart = false;
        p.sig.suspend = None;
        let r = p.regs.gpr;
        let (n, a) = (r[RAX], [r[RDI], r[RSI], r[RDX], r[R10], r[R8], r[R9]]);
        let out = match self.dispatch(pid, n, a) {
            Ok(o) => o,
            Err(e) => Out::Ret(e.ret()),
        };
        // The file system's limits are the only source of ENOSPC in the sandbox.
        if matches!(out, Out::Ret(v) if v == Errno::ENOSPC.ret()) {
            self.reached(Limit::Files, Errno::ENOSPC);
        }
        match out {
            Out::Ret(v) => {
                self.pm(pid).regs.gpr[RAX] = v as u64;
                Step::Ret(v)
            }
            Out::Block => {
                // Retried when the process runs again: back over the 2-byte `syscall`
                // instruction (rax still holds the number), as Linux restarts a call.
                let p = self.pm(pid);
                p.regs.rip = p.regs.rip.wrapping_sub(2);
                p.sig.restart = true;
                self.block(pid);
                Step::Block
            }
            Out::Resumed => Step::Resumed,
            Out::Ended => Step::Ended,
        }
    }

    fn dispatch(&mut self, pid: Pid, n: u64, a: [u64; 6]) -> Result<Out, Errno> {
        let ret = |r: R| -> Result<Out, Errno> { Ok(Out::Ret(r.unwrap_or_else(|e| e.ret()))) };
        match n {
            nr::READ => self.rw(pid, a[0], a[1], a[2], None, false),
            nr::WRITE => self.rw(pid, a[0], a[1], a[2], None, true),
            nr::PREAD64 => self.rw(pid, a[0], a[1], a[2], Some(a[3]), false),
            nr::PWRITE64 => self.rw(pid, a[0], a[1], a[2], Some(a[3]), true),
            nr::READV | nr::WRITEV => self.rwv(pid, a[0], a[1], a[2], n == nr::WRITEV),
            nr::CLOSE => ret(self.close(pid, a[0])),
            nr::OPENAT => ret(self.openat(pid, a[0] as i32 as i64, a[1], a[2] as u32, a[3] as u32)),
            nr::LSEEK => ret(self.lseek(pid, a[0], a[1] as i64, a[2])),
            nr::FSTAT => ret(self.fstatat(pid, a[0] as i32 as i64, 0, a[1], AT_EMPTY_PATH)),
            nr::NEWFSTATAT => ret(self.fstatat(pid, a[0] as i32 as i64, a[1], a[2], a[3])),
            nr::STATX => ret(self.statx(pid, a[0] as i32 as i64, a[1], a[2], a[4])),
            nr::GETDENTS64 => ret(self.getdents(pid, a[0], a[1], a[2])),
            nr::MKDIRAT => ret(self.mkdirat(pid, a[0] as i32 as i64, a[1], a[2] as u32)),
            nr::UNLINKAT => ret(self.unlinkat(pid, a[0] as i32 as i64, a[1], a[2])),
            nr::RENAMEAT2 => ret(self.renameat(pid, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4])),
            nr::SYMLINKAT => ret(self.symlinkat(pid, a[0], a[1] as i32 as i64, a[2])),
            nr::READLINKAT => ret(self.readlinkat(pid, a[0] as i32 as i64, a[1], a[2], a[3])),
            nr::LINKAT => ret(self.linkat(pid, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4])),
            nr::FCHMOD => ret(self.fd_ino(pid, a[0]).and_then(|i| self.fs.chmod(i, a[1] as u32)).map(|_| 0)),
            nr::FCHMODAT => ret(self.at(pid, a[0] as i32 as i64, a[1], true).and_then(|i| self.fs.chmod(i, a[2] as u32)).map(|_| 0)),
            nr::UTIMENSAT => ret(self.utimensat(pid, a[0] as i32 as i64, a[1], a[2], a[3])),
            nr::FACCESSAT | nr::FACCESSAT2 => ret(self.faccessat(pid, a[0] as i32 as i64, a[1], a[2] as u32, if n == nr::FACCESSAT2 { a[3] } else { 0 })),
            nr::CHDIR => ret(self.chdir(pid, a[0])),
            nr::GETCWD => ret(self.getcwd(pid, a[0], a[1])),
            nr::UMASK => {
                let p = self.pm(pid);
                let old = p.umask;
                p.umask = a[0] as u32 & 0o777;
                ret(Ok(old as i64))
            }
            nr::DUP => ret(self.dup(pid, a[0], None, false)),
            nr::DUP2 => ret(if a[0] == a[1] { self.fd(pid, a[0]).map(|_| a[0] as i64) } else { self.dup(pid, a[0], Some(a[1]), false) }),
            nr::DUP3 => ret(if a[0] == a[1] || a[2] & !(O_CLOEXEC as u64) != 0 { Err(Errno::EINVAL) } else { self.dup(pid, a[0], Some(a[1]), a[2] & O_CLOEXEC as u64 != 0) }),
            nr::FCNTL => ret(self.fcntl(pid, a[0], a[1], a[2])),
            nr::IOCTL => ret(self.fd(pid, a[0]).and(Err(Errno::ENOTTY))),
            nr::PIPE2 => ret(self.pipe2(pid, a[0], a[1])),
            nr::BRK => ret(Ok(self.brk(pid, a[0]) as i64)),
            nr::MMAP => ret(self.mmap(pid, a[0], a[1], a[2], a[3], a[4], a[5])),
            nr::MUNMAP => ret(self.munmap(pid, a[0], a[1])),
            25 /* mremap */ => ret(self.mremap(pid, a[0], a[1], a[2], a[3], a[4])),
            nr::MPROTECT => ret(self.mprotect(pid, a[0], a[1], a[2])),
            nr::FORK => ret(self.fork(pid, false).map(|c| c as i64)),
            nr::VFORK => self.vfork(pid),
            nr::CLONE => self.clone(pid, a[0], a[1], a[2], a[3]),
            nr::EXECVE => self.execve(pid, a[0], a[1], a[2]),
            nr::EXIT | nr::EXIT_GROUP => {
                self.end(pid, Status::Exited(a[0] as u8));
                Ok(Out::Ended)
            }
            nr::WAIT4 => self.wait4(pid, a[0] as i32 as i64, a[1], a[2], a[3]),
            nr::KILL => self.kill(pid, a[0] as i32 as i64, a[1]),
            nr::GETPID | 186 /* gettid */ => ret(Ok(pid as i64)),
            nr::GETPPID => ret(Ok(self.p(pid).ppid as i64)),
            nr::GETUID | nr::GETEUID => ret(Ok(UID as i64)),
            nr::GETGID | nr::GETEGID => ret(Ok(GID as i64)),
            nr::UNAME => ret(self.uname(pid, a[0])),
            nr::CLOCK_GETTIME => {
                if a[0] > 11 {
                    return ret(Err(Errno::EINVAL));
                }
                let t = self.fs.now();
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&t.div_euclid(NS).to_le_bytes());
                b[8..].copy_from_slice(&t.rem_euclid(NS).to_le_bytes());
                ret(self.put(pid, a[1], &b).map(|_| 0))
            }
            nr::GETTIMEOFDAY => {
                let t = self.fs.now();
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&t.div_euclid(NS).to_le_bytes());
                b[8..].copy_from_slice(&(t.rem_euclid(NS) / 1000).to_le_bytes());
                let r = if a[0] != 0 { self.put(pid, a[0], &b) } else { Ok(()) };
                ret(r.and_then(|_| if a[1] != 0 { self.put(pid, a[1], &[0; 8]) } else { Ok(()) }).map(|_| 0))
            }
            nr::GETRANDOM => {
                let len = (a[1] as usize).min(MAX_RW);
                let mut b = alloc::vec![0u8; len];
                self.random(&mut b);
                ret(self.put(pid, a[0], &b).map(|_| len as i64))
            }
            nr::ARCH_PRCTL => ret(match a[0] {
                0x1002 => {
                    if a[1] >= USER_END {
                        Err(Errno::EPERM)
                    } else {
                        self.pm(pid).regs.fs_base = a[1];
                        Ok(0)
                    }
                }
                0x1003 => {
                    let fsb = self.p(pid).regs.fs_base;
                    self.put(pid, a[1], &fsb.to_le_bytes()).map(|_| 0)
                }
                _ => Err(Errno::EINVAL),
            }),
            nr::SET_TID_ADDRESS => ret(Ok(pid as i64)),
            nr::RT_SIGACTION => ret(self.sigaction(pid, a[0], a[1], a[2], a[3])),
            nr::RT_SIGPROCMASK => ret(self.sigprocmask(pid, a[0], a[1], a[2], a[3])),
            nr::RT_SIGPENDING => {
                let s = &self.p(pid).sig;
                let set = s.pending & s.blocked;
                ret(if a[1] != 8 { Err(Errno::EINVAL) } else { self.put(pid, a[0], &set.to_le_bytes()).map(|_| 0) })
            }
            nr::RT_SIGRETURN => Ok(match self.sigreturn(pid) {
                Delivery::Ended => Out::Ended,
                _ => Out::Resumed,
            }),
            nr::RT_SIGSUSPEND | nr::PAUSE => {
                let mask = if n == nr::PAUSE {
                    self.p(pid).sig.blocked
                } else if a[1] != 8 {
                    return ret(Err(Errno::EINVAL));
                } else {
                    self.get_u64(pid, a[0])?
                };
                Ok(match self.sigsuspend(pid, mask) {
                    None => Out::Block,
                    Some(Delivery::Ended) => Out::Ended,
                    Some(_) => Out::Resumed,
                })
            }
            nr::SIGALTSTACK => {
                // No alternate stacks: handlers run on the current stack; the old one reads
                // as disabled (SS_DISABLE).
                let mut old = [0u8; 24];
                old[8..12].copy_from_slice(&2u32.to_le_bytes());
                ret(if a[1] != 0 { self.put(pid, a[1], &old).map(|_| 0) } else { Ok(0) })
            }
            nr::PRLIMIT64 => ret(self.prlimit(pid, a[0], a[1], a[2], a[3])),
            nr::SCHED_YIELD => {
                self.pm(pid).regs.gpr[RAX] = 0;
                self.yield_now();
                Ok(Out::Ret(0))
            }
            // The pre-`*at` calls glibc still makes on x86-64 (`rename`, `link`, `mkdir`, ...),
            // as their `*at` forms relative to the working directory.
            nr::OPEN => ret(self.openat(pid, AT_FDCWD, a[0], a[1] as u32, a[2] as u32)),
            // creat(path, mode) is open(path, O_CREAT|O_WRONLY|O_TRUNC, mode) (creat(2)).
            nr::CREAT => ret(self.openat(pid, AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1] as u32)),
            nr::STAT => ret(self.fstatat(pid, AT_FDCWD, a[0], a[1], 0)),
            nr::LSTAT => ret(self.fstatat(pid, AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW)),
            nr::ACCESS => ret(self.faccessat(pid, AT_FDCWD, a[0], a[1] as u32, 0)),
            nr::PIPE => ret(self.pipe2(pid, a[0], 0)),
            nr::RENAME => ret(self.renameat(pid, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)),
            nr::RENAMEAT => ret(self.renameat(pid, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], 0)),
            nr::MKDIR => ret(self.mkdirat(pid, AT_FDCWD, a[0], a[1] as u32)),
            nr::RMDIR => ret(self.unlinkat(pid, AT_FDCWD, a[0], AT_REMOVEDIR)),
            nr::UNLINK => ret(self.unlinkat(pid, AT_FDCWD, a[0], 0)),
            nr::LINK => ret(self.linkat(pid, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)),
            nr::SYMLINK => ret(self.symlinkat(pid, a[0], AT_FDCWD, a[1])),
            nr::READLINK => ret(self.readlinkat(pid, AT_FDCWD, a[0], a[1], a[2])),
            nr::CHMOD => ret(self.at(pid, AT_FDCWD, a[0], true).and_then(|i| self.fs.chmod(i, a[1] as u32)).map(|_| 0)),
            nr::TRUNCATE => ret(self.truncate(pid, None, a[0], a[1])),
            nr::FTRUNCATE => ret(self.truncate(pid, Some(a[0]), 0, a[1])),
            nr::FSYNC | nr::FDATASYNC => ret(self.fd(pid, a[0]).map(|_| 0)),
            // Ownership: the builder owns what it creates and may "change" it to itself only.
            nr::CHOWN | nr::LCHOWN => ret(self.at(pid, AT_FDCWD, a[0], n == nr::CHOWN).and_then(|_| chown_ok(a[1], a[2]))),
            nr::FCHOWN => ret(self.fd(pid, a[0]).and_then(|_| chown_ok(a[1], a[2]))),
            nr::FCHOWNAT => ret(self.at(pid, a[0] as i32 as i64, a[1], a[4] & AT_SYMLINK_NOFOLLOW == 0).and_then(|_| chown_ok(a[2], a[3]))),
            nr::SETUID => ret(if a[0] as u32 == UID { Ok(0) } else { Err(Errno::EPERM) }),
            nr::SETGID => ret(if a[0] as u32 == GID { Ok(0) } else { Err(Errno::EPERM) }),
            nr::GETGROUPS => ret(Ok(0)),
            // One session and process group per build (the builder's); no job control.
            nr::GETPGRP | nr::GETSID => ret(Ok(1)),
            nr::GETPGID => ret(Ok(1)),
            nr::SETPGID => ret(if a[0] == 0 || a[0] == pid as u64 { Ok(0) } else { Err(Errno::EPERM) }),
            nr::SETSID => ret(Err(Errno::EPERM)),
            nr::POLL => self.poll(pid, a[0], a[1], a[2] as i32 as i64),
            // Time does not pass in the sandbox: sleeping returns at once.
            nr::NANOSLEEP | nr::CLOCK_NANOSLEEP => ret(Ok(0)),
            nr::TKILL | nr::TGKILL => {
                // Threads are processes here: tkill(tid) / tgkill(tgid, tid) signal that process.
                let (who, signal) = if n == nr::TKILL { (a[0], a[1]) } else { (a[1], a[2]) };
                self.kill(pid, who as i32 as i64, signal)
            }
            nr::SCHED_GETAFFINITY => {
                // One CPU (what `nproc` reports; NIX_BUILD_CORES says the same).
                let size = (a[1] as usize).min(128);
                if size < 8 {
                    return ret(Err(Errno::EINVAL));
                }
                let mut mask = alloc::vec![0u8; size];
                mask[0] = 1;
                ret(self.put(pid, a[2], &mask).map(|_| size as i64))
            }
            nr::PRCTL => ret(match a[0] {
                15 => Ok(0), // PR_SET_NAME: there is no /proc to show it in
                16 => self.put(pid, a[1], b"builder\0\0\0\0\0\0\0\0\0").map(|_| 0), // PR_GET_NAME
                _ => Err(Errno::EINVAL),
            }),
            nr::SET_ROBUST_LIST | nr::MADVISE | nr::FADVISE64 => ret(Ok(0)),
            // What a configure/make/gcc run asks for besides (issue 16: their ENOSYS log lines).
            201 /* time */ => {
                let t = self.fs.now().div_euclid(NS);
                ret(if a[0] != 0 { self.put(pid, a[0], &t.to_le_bytes()) } else { Ok(()) }.map(|_| t))
            }
            137 /* statfs */ => ret(self.at(pid, AT_FDCWD, a[0], true).and_then(|_| self.statfs(pid, a[1]))),
            138 /* fstatfs */ => ret(self.fd(pid, a[0]).and_then(|_| self.statfs(pid, a[1]))),
            99 /* sysinfo */ => ret(self.sysinfo(pid, a[0])),
            98 /* getrusage */ => ret(if !matches!(a[0] as i32, 0 | -1 | 1) { Err(Errno::EINVAL) } else { self.put(pid, a[1], &[0; 144]).map(|_| 0) }),
            100 /* times */ => {
                // No time passes: no CPU time used, and the tick count of the fixed clock.
                let r = if a[0] != 0 { self.put(pid, a[0], &[0; 32]) } else { Ok(()) };
                let t = self.fs.now();
                ret(r.map(|_| t / (NS / 100)))
            }
            27 /* mincore */ => ret(self.mincore(pid, a[0], a[1], a[2])),
            40 /* sendfile */ => self.copy_fds(pid, Copy::Sendfile, a[1], a[2], a[0], 0, a[3]),
            275 /* splice */ => self.copy_fds(pid, Copy::Splice, a[0], a[1], a[2], a[3], a[4]),
            326 /* copy_file_range */ => {
                if a[5] != 0 {
                    return ret(Err(Errno::EINVAL));
                }
                self.copy_fds(pid, Copy::FileRange, a[0], a[1], a[2], a[3], a[4])
            }
            // Extended attributes: none, and none can be set (EOPNOTSUPP, as a file system
            // without xattr support answers; coreutils and tar go on without them).
            188..=190 => ret(if n == 190 { self.fd(pid, a[0]).map(|_| ()) } else { self.at(pid, AT_FDCWD, a[0], n == 188).map(|_| ()) }.and(Err(Errno::EOPNOTSUPP))),
            191..=193 | 197..=199 => ret(if n == 193 || n == 199 { self.fd(pid, a[0]).map(|_| ()) } else { self.at(pid, AT_FDCWD, a[0], n == 191 || n == 197).map(|_| ()) }.and(Err(Errno::ENODATA))),
            194..=196 => ret(if n == 196 { self.fd(pid, a[0]).map(|_| 0) } else { self.at(pid, AT_FDCWD, a[0], n == 194).map(|_| 0) }),
            // glibc falls back to clone when clone3 is ENOSYS; not a gap worth a note.
            435 /* clone3 */ => ret(Err(Errno::ENOSYS)),
            // The other identity calls: the builder may "change" to its own ids only.
            113 | 117 /* setreuid, setresuid */ => ret(ids_ok(&a[..if n == 113 { 2 } else { 3 }], UID)),
            114 | 119 /* setregid, setresgid */ => ret(ids_ok(&a[..if n == 114 { 2 } else { 3 }], GID)),
            118 | 120 /* getresuid, getresgid */ => {
                let id = if n == 118 { UID } else { GID };
                ret([a[0], a[1], a[2]].iter().try_for_each(|&va| self.put(pid, va, &id.to_le_bytes())).map(|_| 0))
            }
            122 /* setfsuid */ => ret(Ok(UID as i64)),
            123 /* setfsgid */ => ret(Ok(GID as i64)),
            116 /* setgroups */ => ret(Err(Errno::EPERM)),
            81 /* fchdir */ => ret(self.fchdir(pid, a[0])),
            // No sockets in the sandbox (Nix's has only a loopback interface; nothing here
            // listens): creating one is EAFNOSUPPORT, and every socket call on a descriptor
            // is ENOTSOCK (EBADF for a closed one).
            41 | 53 /* socket, socketpair */ => ret(Err(Errno::EAFNOSUPPORT)),
            42..=52 | 54 | 55 | 288 | 299 | 307 => ret(self.fd(pid, a[0]).and(Err(Errno::ENOTSOCK))),
            // Resource limits the old way (prlimit64 is the real one).
            97 /* getrlimit */ => ret(self.prlimit(pid, 0, a[0], 0, a[1])),
            160 /* setrlimit */ => ret(self.prlimit(pid, 0, a[0], a[1], 0)),
            // Time does not pass: timers never fire.
            37 /* alarm */ => ret(Ok(0)),
            36 | 38 /* getitimer, setitimer */ => {
                let out = if n == 36 { a[1] } else { a[2] };
                ret(if out != 0 { self.put(pid, out, &[0; 32]) } else { Ok(()) }.map(|_| 0))
            }
            140 /* getpriority */ => ret(Ok(20)),
            141 /* setpriority */ => ret(Ok(0)),
            // One CPU for the sandbox: setting the affinity to it is fine.
            203 /* sched_setaffinity */ => ret(Ok(0)),
            73 /* flock */ => ret(self.fd(pid, a[0]).map(|_| 0)),
            162 /* sync */ => ret(Ok(0)),
            306 /* syncfs */ => ret(self.fd(pid, a[0]).map(|_| 0)),
            26 /* msync */ | 149..=152 /* mlock, munlock, mlockall, munlockall */ => ret(Ok(0)),
            271 /* ppoll */ => {
                // The timeout (a timespec or NULL for none) decides blocking, as poll's.
                let timeout = if a[2] == 0 { -1 } else { self.get(pid, a[2], &mut [0u8; 16]).map(|_| 0)? };
                self.poll(pid, a[0], a[1], timeout)
            }
            // glibc probes rseq and copes without it; not a gap worth a note.
            nr::RSEQ => ret(Err(Errno::ENOSYS)),
            _ => {
                self.note_unimplemented(n);
                Err(Errno::ENOSYS)
            }
        }
    }

    /// `truncate(path, len)` / `ftruncate(fd, len)`.
    fn truncate(&mut self, pid: Pid, fd: Option<u64>, va: u64, len: u64) -> R {
        if len > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        let ino = match fd {
            Some(fd) => {
                let e = self.fd(pid, fd)?;
                let o = e.ofd.borrow();
                let Object::Inode(i) = o.object else { return Err(Errno::EINVAL) };
                if o.flags & O_ACCMODE == 0 {
                    return Err(Errno::EINVAL);
                }
                i
            }
            None => {
                let i = self.at(pid, AT_FDCWD, va, true)?;
                self.fs.access(i, W_OK)?;
                i
            }
        };
        if self.fs.get(ino)?.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.fs.truncate(ino, len).map(|_| 0)
    }

    /// `poll`: regular files and the log are always ready; a pipe's read end is ready with
    /// data or without writers, its write end with room or without readers. With nothing ready
    /// and no timeout the call blocks until another process changes a pipe; with a timeout it
    /// returns 0 at once (time does not pass in the sandbox, so every timeout has expired).
    fn poll(&mut self, pid: Pid, va: u64, nfds: u64, timeout: i64) -> Result<Out, Errno> {
        const POLLIN: u16 = 1;
        const POLLOUT: u16 = 4;
        const POLLERR: u16 = 8;
        const POLLHUP: u16 = 0x10;
        const POLLNVAL: u16 = 0x20;
        if nfds > MAX_FDS as u64 {
            return Err(Errno::EINVAL);
        }
        let mut fds = alloc::vec![0u8; nfds as usize * 8];
        self.get(pid, va, &mut fds)?;
        let mut ready = 0;
        for e in fds.chunks_mut(8) {
            let fd = i32::from_le_bytes(e[0..4].try_into().expect("8-byte entry"));
            let events = u16::from_le_bytes(e[4..6].try_into().expect("8-byte entry"));
            let revents = if fd < 0 {
                0
            } else {
                match self.fd(pid, fd as u64) {
                    Err(_) => POLLNVAL,
                    Ok(entry) => match &entry.ofd.borrow().object {
                        Object::Pipe(end) => {
                            let p = end.pipe.borrow();
                            if end.write {
                                if p.readers == 0 { POLLERR } else if p.len() < PIPE_CAP { events & POLLOUT } else { 0 }
                            } else if !p.is_empty() {
                                events & POLLIN
                            } else if p.writers == 0 {
                                POLLHUP
                            } else {
                                0
                            }
                        }
                        _ => events & (POLLIN | POLLOUT),
                    },
                }
            };
            e[6..8].copy_from_slice(&revents.to_le_bytes());
            if revents != 0 {
                ready += 1;
            }
        }
        if ready == 0 && timeout < 0 {
            return Ok(Out::Block);
        }
        self.put(pid, va, &fds)?;
        Ok(Out::Ret(ready))
    }

    // ---- user memory helpers ----

    /// Copies from user memory; nothing to copy is never a fault (`copy_from_user` of 0 bytes).
    fn get(&self, pid: Pid, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if buf.is_empty() {
            return Ok(());
        }
        self.p(pid).mem.read(va, buf).map_err(Errno::from)
    }
    fn put(&mut self, pid: Pid, va: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        self.pm(pid).mem.write(va, data).map_err(Errno::from)
    }
    fn get_u64(&self, pid: Pid, va: u64) -> Result<u64, Errno> {
        let mut b = [0; 8];
        self.get(pid, va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// A NUL-terminated string of at most `max` bytes (`ENAMETOOLONG` beyond).
    fn cstr(&self, pid: Pid, va: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut b = [0u8; 64];
        let mut at = va;
        loop {
            // Read up to the page end so a string ending just before an unmapped page works.
            let n = (PAGE - at % PAGE).min(64) as usize;
            self.get(pid, at, &mut b[..n])?;
            if let Some(z) = b[..n].iter().position(|&c| c == 0) {
                out.extend_from_slice(&b[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&b[..n]);
            if out.len() >= max {
                return Err(Errno::ENAMETOOLONG);
            }
            at = at.checked_add(n as u64).ok_or(Errno::EFAULT)?;
        }
    }
    fn path(&self, pid: Pid, va: u64) -> Result<Vec<u8>, Errno> {
        self.cstr(pid, va, PATH_MAX)
    }

    // ---- descriptors ----

    fn fd(&self, pid: Pid, fd: u64) -> Result<FdEntry, Errno> {
        self.p(pid).fds.get(fd as usize).and_then(|e| e.clone()).ok_or(Errno::EBADF)
    }
    fn fd_ino(&self, pid: Pid, fd: u64) -> Result<Ino, Errno> {
        match self.fd(pid, fd)?.ofd.borrow().object {
            Object::Inode(i) => Ok(i),
            _ => Err(Errno::EINVAL),
        }
    }
    fn install(&mut self, pid: Pid, e: FdEntry, min: usize) -> R {
        let p = self.pm(pid);
        let slot = (min..MAX_FDS).find(|&i| p.fds.get(i).is_none_or(|s| s.is_none()));
        let Some(i) = slot else {
            self.put_fd(e);
            return Err(Errno::EMFILE);
        };
        if p.fds.len() <= i {
            p.fds.resize(i + 1, None);
        }
        p.fds[i] = Some(e);
        Ok(i as i64)
    }
    fn close(&mut self, pid: Pid, fd: u64) -> R {
        let e = self.pm(pid).fds.get_mut(fd as usize).and_then(|s| s.take()).ok_or(Errno::EBADF)?;
        self.put_fd(e);
        self.wake_all();
        Ok(0)
    }
    fn dup(&mut self, pid: Pid, old: u64, new: Option<u64>, cloexec: bool) -> R {
        let e = FdEntry { ofd: self.fd(pid, old)?.ofd, cloexec };
        match new {
            None => self.install(pid, e, 0),
            Some(n) => {
                let n = n as usize;
                if n >= MAX_FDS {
                    return Err(Errno::EBADF);
                }
                let p = self.pm(pid);
                if p.fds.len() <= n {
                    p.fds.resize(n + 1, None);
                }
                if let Some(old) = p.fds[n].replace(e) {
                    self.put_fd(old);
                    self.wake_all();
                }
                Ok(n as i64)
            }
        }
    }
    fn fcntl(&mut self, pid: Pid, fd: u64, cmd: u64, arg: u64) -> R {
        let e = self.fd(pid, fd)?;
        match cmd {
            0 | 1030 => self.install(pid, FdEntry { ofd: e.ofd, cloexec: cmd == 1030 }, arg as usize),
            1 => Ok(e.cloexec as i64),
            2 => {
                if let Some(Some(s)) = self.pm(pid).fds.get_mut(fd as usize) {
                    s.cloexec = arg & 1 != 0;
                }
                Ok(0)
            }
            3 => Ok(e.ofd.borrow().flags as i64),
            4 => {
                let mut o = e.ofd.borrow_mut();
                o.flags = (o.flags & !(O_APPEND | O_NONBLOCK)) | (arg as u32 & (O_APPEND | O_NONBLOCK));
                Ok(0)
            }
            _ => Err(Errno::EINVAL),
        }
    }
    fn pipe2(&mut self, pid: Pid, va: u64, flags: u64) -> R {
        if flags & !((O_CLOEXEC | O_NONBLOCK) as u64) != 0 {
            return Err(Errno::EINVAL);
        }
        let cloexec = flags & O_CLOEXEC as u64 != 0;
        let nb = flags as u32 & O_NONBLOCK;
        // Check the destination before creating anything.
        self.put(pid, va, &[0; 8])?;
        let pipe = Rc::new(RefCell::new(Pipe::new(self.pipe_memory.clone())));
        let r = self.new_fd(Object::Pipe(PipeEnd::new_end(pipe.clone(), false)), nb, cloexec);
        let w = self.new_fd(Object::Pipe(PipeEnd::new_end(pipe, true)), O_WRONLY | nb, cloexec);
        let rfd = self.install(pid, r, 0)?;
        let wfd = match self.install(pid, w, 0) {
            Ok(w) => w,
            Err(e) => {
                self.close(pid, rfd as u64)?;
                return Err(e);
            }
        };
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(rfd as i32).to_le_bytes());
        b[4..].copy_from_slice(&(wfd as i32).to_le_bytes());
        self.put(pid, va, &b)?;
        Ok(0)
    }

    // ---- I/O ----

    fn rw(&mut self, pid: Pid, fd: u64, buf: u64, len: u64, at: Option<u64>, write: bool) -> Result<Out, Errno> {
        let e = self.fd(pid, fd)?;
        let len = (len as usize).min(MAX_RW);
        if !access_ok(buf, len as u64) {
            return Err(Errno::EFAULT);
        }
        let acc = e.ofd.borrow().flags & O_ACCMODE;
        if write && acc == 0 || !write && acc == O_WRONLY {
            return Err(Errno::EBADF);
        }
        if write {
            let mut data = alloc::vec![0u8; len];
            self.get(pid, buf, &mut data)?;
            self.write_ofd(pid, &e.ofd, &data, at)
        } else {
            let mut data = alloc::vec![0u8; len];
            match self.read_ofd(&e.ofd, &mut data, at)? {
                Out::Ret(n) => {
                    self.put(pid, buf, &data[..n as usize])?;
                    Ok(Out::Ret(n))
                }
                o => Ok(o),
            }
        }
    }

    fn rwv(&mut self, pid: Pid, fd: u64, iov: u64, cnt: u64, write: bool) -> Result<Out, Errno> {
        if cnt > 1024 {
            return Err(Errno::EINVAL);
        }
        let mut total = 0i64;
        for i in 0..cnt {
            let at = iov.checked_add(16 * i).and_then(|a| a.checked_add(8)).ok_or(Errno::EFAULT)? - 8;
            let base = self.get_u64(pid, at)?;
            let len = self.get_u64(pid, at + 8)?;
            if len == 0 {
                continue;
            }
            // One call moves at most MAX_RW bytes in all (a short count, as Linux's
            // MAX_RW_COUNT), so a thousand iovecs cannot pile up a gigabyte in one call.
            let len = len.min(MAX_RW as u64 - total as u64);
            if len == 0 {
                break;
            }
            match self.rw(pid, fd, base, len, None, write) {
                Ok(Out::Ret(n)) => {
                    total += n;
                    if (n as u64) < len {
                        break;
                    }
                }
                Ok(Out::Block) if total > 0 => break,
                Ok(o) if total == 0 => return Ok(o),
                Ok(_) => break,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(Out::Ret(total))
    }

    fn read_ofd(&mut self, ofd: &OfdRef, buf: &mut [u8], at: Option<u64>) -> Result<Out, Errno> {
        let mut o = ofd.borrow_mut();
        match &o.object {
            Object::Inode(i) => {
                let i = *i;
                let off = at.unwrap_or(o.offset);
                let n = self.fs.read_at(i, off, buf)?;
                if at.is_none() {
                    o.offset += n as u64;
                }
                Ok(Out::Ret(n as i64))
            }
            Object::Pipe(end) => {
                if at.is_some() {
                    return Err(Errno::ESPIPE);
                }
                let mut p = end.pipe.borrow_mut();
                if p.is_empty() {
                    if p.writers == 0 {
                        return Ok(Out::Ret(0));
                    }
                    if o.flags & O_NONBLOCK != 0 {
                        return Err(Errno::EAGAIN);
                    }
                    return Ok(Out::Block);
                }
                let n = p.pop(buf);
                drop(p);
                drop(o);
                self.wake_all();
                Ok(Out::Ret(n as i64))
            }
            Object::Log(_) => Err(Errno::EBADF),
        }
    }

    fn write_ofd(&mut self, pid: Pid, ofd: &OfdRef, data: &[u8], at: Option<u64>) -> Result<Out, Errno> {
        let mut o = ofd.borrow_mut();
        match &o.object {
            Object::Inode(i) => {
                let i = *i;
                let off = match at {
                    Some(a) => a,
                    None if o.flags & O_APPEND != 0 => self.fs.get(i)?.size(),
                    None => o.offset,
                };
                if matches!(self.fs.get(i)?.kind, Kind::Dev(_)) {
                    return Ok(Out::Ret(data.len() as i64));
                }
                let n = self.fs.write_at(i, off, data)?;
                if at.is_none() {
                    o.offset = off + n as u64;
                }
                Ok(Out::Ret(n as i64))
            }
            Object::Pipe(end) => {
                if at.is_some() {
                    return Err(Errno::ESPIPE);
                }
                let mut p = end.pipe.borrow_mut();
                if p.readers == 0 {
                    // EPIPE, and SIGPIPE (which ends the writer unless ignored or handled).
                    drop(p);
                    drop(o);
                    self.send(pid, sig::SIGPIPE, Info::kernel());
                    return Err(Errno::EPIPE);
                }
                // A buffer to allocate must fit under the memory limit (Linux: a pipe page
                // the memory cgroup refuses is ENOMEM).
                if p.unallocated() && self.memory_used() + PIPE_CAP as u64 > self.limits.memory {
                    drop(p);
                    return Err(self.reached(Limit::Memory, Errno::ENOMEM));
                }
                let room = PIPE_CAP - p.len();
                if room == 0 || (data.len() <= 4096 && room < data.len()) {
                    if o.flags & O_NONBLOCK != 0 {
                        return Err(Errno::EAGAIN);
                    }
                    return Ok(Out::Block);
                }
                let n = p.push(&data[..room.min(data.len())]);
                drop(p);
                drop(o);
                self.wake_all();
                Ok(Out::Ret(n as i64))
            }
            Object::Log(s) => {
                let s = *s;
                drop(o);
                // What fits under the log limit goes out; past it the build ends, as Nix kills
                // a builder that exceeds `max-log-size`.
                let room = self.limits.log_bytes.saturating_sub(self.log_written);
                let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                if n > 0 {
                    match self.output.last_mut() {
                        Some((t, v)) if *t == s => v.extend_from_slice(&data[..n]),
                        _ => self.output.push((s, data[..n].to_vec())),
                    }
                    self.log_written += n as u64;
                }
                if n < data.len() {
                    self.limits_reached.insert(Limit::Log);
                    let limit = self.limits.log_bytes;
                    self.notes.push(alloc::format!("sandbox: log limit of {limit} bytes reached (pid {pid}); ending the build"));
                    self.end(1, Status::Signaled(sig::SIGXFSZ));
                    return Ok(Out::Ended);
                }
                Ok(Out::Ret(n as i64))
            }
        }
    }

    fn lseek(&mut self, pid: Pid, fd: u64, off: i64, whence: u64) -> R {
        let e = self.fd(pid, fd)?;
        let mut o = e.ofd.borrow_mut();
        let Object::Inode(i) = o.object else { return Err(Errno::ESPIPE) };
        let base = match whence {
            0 => 0,
            1 => o.offset as i64,
            2 => self.fs.get(i)?.size() as i64,
            _ => return Err(Errno::EINVAL),
        };
        let new = base.checked_add(off).filter(|&v| v >= 0).ok_or(Errno::EINVAL)?;
        o.offset = new as u64;
        Ok(new)
    }

    // ---- paths ----

    fn dir_of(&self, pid: Pid, dirfd: i64) -> Result<Ino, Errno> {
        if dirfd == AT_FDCWD {
            return Ok(self.p(pid).cwd);
        }
        if dirfd < 0 {
            return Err(Errno::EBADF);
        }
        let i = self.fd_ino(pid, dirfd as u64).map_err(|_| Errno::ENOTDIR)?;
        if !self.fs.get(i)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(i)
    }
    /// Resolves `dirfd` + user path `va`.
    fn at(&self, pid: Pid, dirfd: i64, va: u64, follow: bool) -> Result<Ino, Errno> {
        let path = self.path(pid, va)?;
        let d = self.dir_of(pid, dirfd)?;
        self.fs.resolve(d, &path, follow)
    }
    fn parent_at(&self, pid: Pid, dirfd: i64, va: u64) -> Result<(Ino, Vec<u8>), Errno> {
        let path = self.path(pid, va)?;
        let d = self.dir_of(pid, dirfd)?;
        self.fs.resolve_parent(d, &path)
    }

    fn openat(&mut self, pid: Pid, dirfd: i64, va: u64, flags: u32, mode: u32) -> R {
        let path = self.path(pid, va)?;
        let d = self.dir_of(pid, dirfd)?;
        let acc = flags & O_ACCMODE;
        if acc == 3 {
            return Err(Errno::EINVAL);
        }
        // A file this call creates is opened with the access asked for whatever its mode (as
        // Linux: `cp` makes a 0444 copy of a read-only file and then writes it).
        let mut created = false;
        let ino = if flags & O_CREAT != 0 {
            let (dir, name) = self.fs.resolve_parent(d, &path)?;
            match self.fs.resolve(dir, &name, flags & O_NOFOLLOW == 0) {
                Ok(_) if flags & O_EXCL != 0 => return Err(Errno::EEXIST),
                Ok(i) => i,
                Err(Errno::ENOENT) => {
                    if name == b"." {
                        return Err(Errno::EISDIR);
                    }
                    // A dangling symlink: create its target, as Linux does without O_EXCL.
                    let (dir, name) = match self.fs.resolve(dir, &name, false) {
                        Ok(l) => {
                            let t = self.fs.readlink(l)?.to_vec();
                            self.fs.resolve_parent(dir, &t)?
                        }
                        Err(_) => (dir, name),
                    };
                    self.fs.access(dir, W_OK | X_OK)?;
                    let umask = self.p(pid).umask;
                    created = true;
                    self.fs.create(dir, &name, mode & 0o7777 & !umask)?
                }
                Err(e) => return Err(e),
            }
        } else {
            self.fs.resolve(d, &path, flags & O_NOFOLLOW == 0)?
        };
        let node = self.fs.get(ino)?;
        match node.kind {
            Kind::Symlink(_) => return Err(Errno::ELOOP),
            Kind::Dir { .. } if acc != 0 || flags & O_CREAT != 0 => return Err(Errno::EISDIR),
            Kind::File(_) | Kind::Dev(_) if flags & O_DIRECTORY != 0 => return Err(Errno::ENOTDIR),
            _ => {}
        }
        let want = match acc {
            0 => R_OK,
            1 => W_OK,
            _ => R_OK | W_OK,
        };
        if !matches!(node.kind, Kind::Dev(_)) && !created {
            self.fs.access(ino, want)?;
        }
        if flags & O_TRUNC != 0 && acc != 0 && matches!(node.kind, Kind::File(_)) {
            self.fs.truncate(ino, 0)?;
        }
        let e = self.new_fd(Object::Inode(ino), flags & (O_ACCMODE | O_APPEND | O_NONBLOCK), flags & O_CLOEXEC != 0);
        self.install(pid, e, 0)
    }

    /// Mode, size, links, rdev, mtime (ns).
    fn stat_fields(&self, ino: Ino) -> Result<(u32, u64, u64, u32, i64), Errno> {
        let n = self.fs.get(ino)?;
        Ok((n.mode(), n.size(), n.nlink as u64, if matches!(n.kind, Kind::Dev(Device::Null)) { 0x103 } else if matches!(n.kind, Kind::Dev(Device::Zero)) { 0x105 } else { 0 }, n.mtime))
    }

    fn target(&self, pid: Pid, dirfd: i64, va: u64, flags: u64) -> Result<(Ino, u32), Errno> {
        if flags & AT_EMPTY_PATH != 0 && (va == 0 || self.path(pid, va).map(|p| p.is_empty()).unwrap_or(false)) {
            if dirfd == AT_FDCWD {
                return Ok((self.p(pid).cwd, 0));
            }
            let e = self.fd(pid, dirfd as u64)?;
            let o = e.ofd.borrow();
            return Ok(match o.object {
                Object::Inode(i) => (i, 0),
                _ => (0, S_IFIFO | 0o600),
            });
        }
        Ok((self.at(pid, dirfd, va, flags & AT_SYMLINK_NOFOLLOW == 0)?, 0))
    }

    fn fstatat(&mut self, pid: Pid, dirfd: i64, va: u64, buf: u64, flags: u64) -> R {
        let (ino, pipe_mode) = self.target(pid, dirfd, va, flags)?;
        let mut s = [0u8; 144];
        let (mode, size, nlink, rdev, mtime) = if pipe_mode != 0 { (pipe_mode, 0, 1, 0, self.fs.now()) } else { self.stat_fields(ino)? };
        s[0..8].copy_from_slice(&1u64.to_le_bytes()); // st_dev
        s[8..16].copy_from_slice(&(ino as u64).to_le_bytes());
        s[16..24].copy_from_slice(&nlink.to_le_bytes());
        s[24..28].copy_from_slice(&mode.to_le_bytes());
        s[28..32].copy_from_slice(&UID.to_le_bytes());
        s[32..36].copy_from_slice(&GID.to_le_bytes());
        s[40..48].copy_from_slice(&(rdev as u64).to_le_bytes());
        s[48..56].copy_from_slice(&size.to_le_bytes());
        s[56..64].copy_from_slice(&4096u64.to_le_bytes());
        s[64..72].copy_from_slice(&size.div_ceil(512).to_le_bytes());
        for o in [72, 88, 104] {
            s[o..o + 8].copy_from_slice(&mtime.div_euclid(NS).to_le_bytes());
            s[o + 8..o + 16].copy_from_slice(&mtime.rem_euclid(NS).to_le_bytes());
        }
        self.put(pid, buf, &s)?;
        Ok(0)
    }

    fn statx(&mut self, pid: Pid, dirfd: i64, va: u64, flags: u64, buf: u64) -> R {
        let (ino, pipe_mode) = self.target(pid, dirfd, va, flags)?;
        let (mode, size, nlink, rdev, mtime) = if pipe_mode != 0 { (pipe_mode, 0, 1, 0, self.fs.now()) } else { self.stat_fields(ino)? };
        let mut s = [0u8; 256];
        s[0..4].copy_from_slice(&0x7ffu32.to_le_bytes()); // STATX_BASIC_STATS
        s[4..8].copy_from_slice(&4096u32.to_le_bytes());
        s[16..20].copy_from_slice(&(nlink as u32).to_le_bytes());
        s[20..24].copy_from_slice(&UID.to_le_bytes());
        s[24..28].copy_from_slice(&GID.to_le_bytes());
        s[28..30].copy_from_slice(&(mode as u16).to_le_bytes());
        s[32..40].copy_from_slice(&(ino as u64).to_le_bytes());
        s[40..48].copy_from_slice(&size.to_le_bytes());
        s[48..56].copy_from_slice(&size.div_ceil(512).to_le_bytes());
        for o in [64, 96, 112] {
            s[o..o + 8].copy_from_slice(&mtime.div_euclid(NS).to_le_bytes());
            s[o + 8..o + 12].copy_from_slice(&(mtime.rem_euclid(NS) as u32).to_le_bytes());
        }
        s[128..132].copy_from_slice(&(rdev >> 8).to_le_bytes());
        s[132..136].copy_from_slice(&(rdev & 0xff).to_le_bytes());
        self.put(pid, buf, &s)?;
        Ok(0)
    }

    fn getdents(&mut self, pid: Pid, fd: u64, buf: u64, count: u64) -> R {
        let e = self.fd(pid, fd)?;
        let Object::Inode(dir) = e.ofd.borrow().object else { return Err(Errno::ENOTDIR) };
        let start = e.ofd.borrow().offset as usize;
        let mut out = Vec::new();
        let mut pos = start;
        let mut more = false;
        for (name, ino) in self.fs.readdir_from(dir, start)? {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if out.len() + reclen > (count as usize).min(MAX_RW) {
                more = true;
                break;
            }
            let t = match self.fs.get(ino).map(|n| &n.kind) {
                Ok(Kind::Dir { .. }) => 4,
                Ok(Kind::File(_)) => 8,
                Ok(Kind::Symlink(_)) => 10,
                Ok(Kind::Dev(_)) => 2,
                Err(_) => 0,
            };
            let start = out.len();
            out.extend_from_slice(&(ino as u64).to_le_bytes());
            out.extend_from_slice(&((pos + 1) as u64).to_le_bytes());
            out.extend_from_slice(&(reclen as u16).to_le_bytes());
            out.push(t);
            out.extend_from_slice(name);
            out.resize(start + reclen, 0);
            pos += 1;
        }
        if out.is_empty() && more {
            return Err(Errno::EINVAL);
        }
        self.put(pid, buf, &out)?;
        e.ofd.borrow_mut().offset = pos as u64;
        Ok(out.len() as i64)
    }

    /// The parent and last name of a path naming a directory: trailing slashes are allowed
    /// there (`mkdir -p a/b` makes `a/` first).
    fn dir_parent_at(&self, pid: Pid, dirfd: i64, va: u64) -> Result<(Ino, Vec<u8>), Errno> {
        let mut path = self.path(pid, va)?;
        while path.len() > 1 && path.ends_with(b"/") {
            path.pop();
        }
        let d = self.dir_of(pid, dirfd)?;
        self.fs.resolve_parent(d, &path)
    }
    fn mkdirat(&mut self, pid: Pid, dirfd: i64, va: u64, mode: u32) -> R {
        let (d, name) = self.dir_parent_at(pid, dirfd, va)?;
        if name == b"." || name == b".." {
            return Err(Errno::EEXIST);
        }
        self.fs.access(d, W_OK | X_OK)?;
        let umask = self.p(pid).umask;
        self.fs.mkdir(d, &name, mode & 0o7777 & !umask)?;
        Ok(0)
    }
    fn unlinkat(&mut self, pid: Pid, dirfd: i64, va: u64, flags: u64) -> R {
        if flags & !AT_REMOVEDIR != 0 {
            return Err(Errno::EINVAL);
        }
        let (d, name) = if flags & AT_REMOVEDIR != 0 { self.dir_parent_at(pid, dirfd, va)? } else { self.parent_at(pid, dirfd, va)? };
        self.fs.access(d, W_OK | X_OK)?;
        let ino = self.fs.unlink(d, &name, flags & AT_REMOVEDIR != 0)?;
        self.release_if_closed(ino);
        Ok(0)
    }
    fn renameat(&mut self, pid: Pid, od: i64, ova: u64, nd: i64, nva: u64, flags: u64) -> R {
        if flags & !1 != 0 {
            return Err(Errno::EINVAL);
        }
        let (a, an) = self.parent_at(pid, od, ova)?;
        let (b, bn) = self.parent_at(pid, nd, nva)?;
        self.fs.access(a, W_OK | X_OK)?;
        self.fs.access(b, W_OK | X_OK)?;
        if an == b"." || an == b".." || bn == b"." || bn == b".." {
            return Err(Errno::EBUSY);
        }
        if let Some(gone) = self.fs.rename(a, &an, b, &bn, flags & 1 != 0)? {
            self.release_if_closed(gone);
        }
        Ok(0)
    }
    fn symlinkat(&mut self, pid: Pid, tva: u64, dirfd: i64, va: u64) -> R {
        let target = self.path(pid, tva)?;
        let (d, name) = self.parent_at(pid, dirfd, va)?;
        self.fs.access(d, W_OK | X_OK)?;
        if name == b"." {
            return Err(Errno::EEXIST);
        }
        self.fs.symlink(d, &name, &target)?;
        Ok(0)
    }
    fn readlinkat(&mut self, pid: Pid, dirfd: i64, va: u64, buf: u64, size: u64) -> R {
        if (size as i64) <= 0 {
            return Err(Errno::EINVAL);
        }
        let t = if self.path(pid, va)? == PROC_SELF_EXE {
            self.p(pid).exe_path.clone()
        } else {
            let ino = self.at(pid, dirfd, va, false)?;
            self.fs.readlink(ino)?.to_vec()
        };
        let n = t.len().min(size as usize);
        self.put(pid, buf, &t[..n])?;
        Ok(n as i64)
    }
    fn linkat(&mut self, pid: Pid, od: i64, ova: u64, nd: i64, nva: u64, flags: u64) -> R {
        let src = self.at(pid, od, ova, flags & AT_SYMLINK_FOLLOW != 0)?;
        let (d, name) = self.parent_at(pid, nd, nva)?;
        self.fs.access(d, W_OK | X_OK)?;
        if name == b"." {
            return Err(Errno::EEXIST);
        }
        self.fs.link(src, d, &name)?;
        Ok(0)
    }
    fn utimensat(&mut self, pid: Pid, dirfd: i64, va: u64, times: u64, flags: u64) -> R {
        let ino = if va == 0 { self.fd_ino(pid, dirfd as u64)? } else { self.at(pid, dirfd, va, flags & AT_SYMLINK_NOFOLLOW == 0)? };
        // Only the mtime is kept (atime and ctime read as it); the atime is checked as Linux does.
        let t = if times == 0 {
            None
        } else {
            let mut b = [0u8; 32];
            self.get(pid, times, &mut b)?;
            let word = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
            let ok = |ns: i64| (0..NS).contains(&ns) || ns == UTIME_NOW || ns == UTIME_OMIT;
            if !ok(word(8)) || !ok(word(24)) {
                return Err(Errno::EINVAL);
            }
            match word(24) {
                UTIME_OMIT => return Ok(0),
                UTIME_NOW => None,
                ns => Some(word(16).saturating_mul(NS).saturating_add(ns)),
            }
        };
        self.fs.set_mtime(ino, t)?;
        Ok(0)
    }
    fn faccessat(&mut self, pid: Pid, dirfd: i64, va: u64, mode: u32, flags: u64) -> R {
        if mode & !7 != 0 {
            return Err(Errno::EINVAL);
        }
        let ino = self.at(pid, dirfd, va, flags & AT_SYMLINK_NOFOLLOW == 0)?;
        self.fs.access(ino, mode)?;
        Ok(0)
    }
    fn chdir(&mut self, pid: Pid, va: u64) -> R {
        let ino = self.at(pid, AT_FDCWD, va, true)?;
        if !self.fs.get(ino)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        self.fs.access(ino, X_OK)?;
        self.pm(pid).cwd = ino;
        Ok(0)
    }
    fn getcwd(&mut self, pid: Pid, buf: u64, size: u64) -> R {
        let mut p = self.fs.path_of(self.p(pid).cwd)?;
        p.push(0);
        if (size as usize) < p.len() {
            return Err(Errno::ERANGE);
        }
        self.put(pid, buf, &p)?;
        Ok(p.len() as i64)
    }

    fn fchdir(&mut self, pid: Pid, fd: u64) -> R {
        let ino = self.fd_ino(pid, fd).map_err(|_| Errno::ENOTDIR)?;
        if !self.fs.get(ino)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        self.fs.access(ino, X_OK)?;
        self.pm(pid).cwd = ino;
        Ok(0)
    }

    /// `struct statfs` of the sandbox's one file system, described as the tmpfs it is like:
    /// its byte and inode limits as the totals.
    fn statfs(&mut self, pid: Pid, buf: u64) -> R {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        let blocks = self.fs.limit_bytes / PAGE;
        let free = self.fs.limit_bytes.saturating_sub(self.fs.used_bytes()) / PAGE;
        let files = self.fs.limit_inodes as u64;
        let ffree = files.saturating_sub(self.fs.live_inodes() as u64);
        // f_type f_bsize f_blocks f_bfree f_bavail f_files f_ffree f_fsid f_namelen f_frsize f_flags
        let words = [TMPFS_MAGIC, PAGE, blocks, free, free, files, ffree, 0, 255, PAGE, 0x20 /* ST_RELATIME */];
        let mut b = [0u8; 120];
        for (i, w) in words.iter().enumerate() {
            b[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.put(pid, buf, &b)?;
        Ok(0)
    }

    /// `struct sysinfo`: uptime 1 s (the fixed clock), the memory limit as RAM, what is left
    /// of it as free, no swap, the number of processes.
    fn sysinfo(&mut self, pid: Pid, buf: u64) -> R {
        let mut b = [0u8; 112];
        let t = self.fs.now();
        b[0..8].copy_from_slice(&t.div_euclid(NS).to_le_bytes());
        b[32..40].copy_from_slice(&self.limits.memory.to_le_bytes());
        b[40..48].copy_from_slice(&self.limits.memory.saturating_sub(self.memory_used()).to_le_bytes());
        b[80..82].copy_from_slice(&(self.procs.len() as u16).to_le_bytes());
        b[104..108].copy_from_slice(&1u32.to_le_bytes());
        self.put(pid, buf, &b)?;
        Ok(0)
    }

    /// `mincore`: every mapped page is resident; an unmapped one is ENOMEM.
    fn mincore(&mut self, pid: Pid, addr: u64, len: u64, vec: u64) -> R {
        if !addr.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        if !user_range(addr, len) {
            return Err(Errno::ENOMEM);
        }
        if self.p(pid).regions.overlap(addr, addr + len) != len {
            return Err(Errno::ENOMEM);
        }
        let n = (len / PAGE) as usize;
        if n > MAX_RW {
            return Err(Errno::EINVAL);
        }
        self.put(pid, vec, &alloc::vec![1u8; n])?;
        Ok(0)
    }

    /// `sendfile(out, in, *off, count)`, `splice(in, *off_in, out, *off_out, len, flags)` and
    /// `copy_file_range(in, *off_in, out, *off_out, len, 0)`: one read and one write in the
    /// kernel, at most [`MAX_RW`] bytes, never more than the destination pipe has room for (so
    /// nothing read is lost when the write would block). An offset pointer is read and
    /// advanced instead of the descriptor's offset.
    #[allow(clippy::too_many_arguments)]
    fn copy_fds(&mut self, pid: Pid, kind: Copy, fin: u64, off_in: u64, fout: u64, off_out: u64, len: u64) -> Result<Out, Errno> {
        let (ein, eout) = (self.fd(pid, fin)?, self.fd(pid, fout)?);
        if ein.ofd.borrow().flags & O_ACCMODE == O_WRONLY || eout.ofd.borrow().flags & O_ACCMODE == 0 {
            return Err(Errno::EBADF);
        }
        let is_file = |e: &FdEntry, k: &Self| match e.ofd.borrow().object {
            Object::Inode(i) => k.fs.get(i).map(|n| matches!(n.kind, Kind::File(_))).unwrap_or(false),
            _ => false,
        };
        let is_pipe = |e: &FdEntry| matches!(e.ofd.borrow().object, Object::Pipe(_));
        if let Object::Inode(i) = eout.ofd.borrow().object {
            if self.fs.get(i)?.is_dir() {
                return Err(Errno::EISDIR);
            }
        }
        match kind {
            Copy::Sendfile if !is_file(&ein, self) => return Err(Errno::EINVAL),
            Copy::Splice if !is_pipe(&ein) && !is_pipe(&eout) => return Err(Errno::EINVAL),
            Copy::Splice if (is_pipe(&ein) && off_in != 0) || (is_pipe(&eout) && off_out != 0) => return Err(Errno::ESPIPE),
            Copy::FileRange if !is_file(&ein, self) || !is_file(&eout, self) => return Err(Errno::EINVAL),
            Copy::FileRange if eout.ofd.borrow().flags & O_APPEND != 0 => return Err(Errno::EBADF),
            _ => {}
        }
        let at_in = if off_in != 0 { Some(self.get_u64(pid, off_in)?) } else { None };
        let at_out = if off_out != 0 { Some(self.get_u64(pid, off_out)?) } else { None };
        if at_in.is_some_and(|o| o > i64::MAX as u64) || at_out.is_some_and(|o| o > i64::MAX as u64) {
            return Err(Errno::EINVAL);
        }
        let mut len = (len as usize).min(MAX_RW);
        if len == 0 {
            return Ok(Out::Ret(0));
        }
        if let Object::Pipe(end) = &eout.ofd.borrow().object {
            let p = end.pipe.borrow();
            if p.readers > 0 {
                let room = PIPE_CAP - p.len();
                if room == 0 {
                    return if eout.ofd.borrow().flags & O_NONBLOCK != 0 { Err(Errno::EAGAIN) } else { Ok(Out::Block) };
                }
                len = len.min(room);
            }
        }
        let mut buf = alloc::vec![0u8; len];
        let n = match self.read_ofd(&ein.ofd, &mut buf, at_in)? {
            Out::Ret(n) => n as usize,
            o => return Ok(o),
        };
        if n == 0 {
            return Ok(Out::Ret(0));
        }
        let w = match self.write_ofd(pid, &eout.ofd, &buf[..n], at_out)? {
            Out::Ret(w) => w,
            o => return Ok(o),
        };
        if let Some(o) = at_in {
            self.put(pid, off_in, &(o + n as u64).to_le_bytes())?;
        }
        if let Some(o) = at_out {
            self.put(pid, off_out, &(o + w as u64).to_le_bytes())?;
        }
        Ok(Out::Ret(w))
    }

    // ---- memory ----

    fn brk(&mut self, pid: Pid, want: u64) -> u64 {
        let (start, cur) = (self.p(pid).brk_start, self.p(pid).brk);
        if want < start || want > start + (1 << 40) {
            return cur;
        }
        let (Some(old_end), Some(new_end)) = (page_up(cur), page_up(want)) else { return cur };
        if new_end > old_end {
            if self.p(pid).regions.any_in(old_end, new_end) {
                return cur;
            }
            if self.map(pid, old_end, new_end - old_end, Prot { read: true, write: true, exec: false }).is_err() {
                return cur;
            }
        } else if new_end < old_end {
            self.unmap(pid, new_end, old_end - new_end);
        }
        self.pm(pid).brk = want;
        want
    }

    // The system call's six arguments, as Linux takes them.
    #[allow(clippy::too_many_arguments)]
    fn mmap(&mut self, pid: Pid, addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> R {
        const MAP_SHARED: u64 = 1;
        const MAP_PRIVATE: u64 = 2;
        const MAP_FIXED: u64 = 0x10;
        const MAP_ANONYMOUS: u64 = 0x20;
        const MAP_FIXED_NOREPLACE: u64 = 0x100000;
        let len = page_up(len).filter(|&l| l > 0 && l < USER_END).ok_or(Errno::EINVAL)?;
        if !off.is_multiple_of(PAGE) || prot & !7 != 0 {
            return Err(Errno::EINVAL);
        }
        let kind = flags & 3;
        if kind != MAP_PRIVATE && kind != MAP_SHARED {
            return Err(Errno::EINVAL);
        }
        let file = if flags & MAP_ANONYMOUS == 0 {
            let e = self.fd(pid, fd)?;
            let Object::Inode(i) = e.ofd.borrow().object else { return Err(Errno::EACCES) };
            if !matches!(self.fs.get(i)?.kind, Kind::File(_)) {
                return Err(Errno::EACCES);
            }
            if kind == MAP_SHARED && prot & 2 != 0 {
                return Err(Errno::EACCES); // shared writable file mappings are not supported
            }
            Some(i)
        } else {
            None
        };
        let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
        let va = if fixed {
            if !addr.is_multiple_of(PAGE) {
                return Err(Errno::EINVAL);
            }
            // Past the end of user memory (its last page included: elf::USER_END), Linux's
            // __get_unmapped_area says ENOMEM.
            if addr.checked_add(len).is_none_or(|end| end > USER_END) {
                return Err(Errno::ENOMEM);
            }
            if !user_range(addr, len) {
                return Err(Errno::EINVAL);
            }
            if flags & MAP_FIXED_NOREPLACE != 0 && self.p(pid).regions.any_in(addr, addr + len) {
                return Err(Errno::EEXIST);
            }
            addr
        } else {
            let next = self.p(pid).mmap_next;
            let va = next.checked_sub(len).filter(|&v| v >= self.p(pid).brk_start + (1 << 40)).ok_or(Errno::ENOMEM)?;
            va
        };
        let p = Prot { read: prot & 1 != 0 || prot != 0, write: prot & 2 != 0, exec: prot & 4 != 0 };
        self.map(pid, va, len, Prot { read: true, write: true, exec: false })?;
        if let Some(i) = file {
            // A private copy of the file's bytes, straight from the file (no intermediate buffer).
            if let Kind::File(d) = &self.fs.get(i)?.kind {
                if off < d.len() as u64 {
                    let n = (d.len() as u64 - off).min(len) as usize;
                    let mem = &mut self.procs.get_mut(&pid).ok_or(Errno::ESRCH)?.mem;
                    mem.poke(va, &d[off as usize..off as usize + n]).map_err(|_| Errno::EFAULT)?;
                }
            }
        }
        if prot == 0 {
            self.pm(pid).mem.protect(va, len, Prot { read: false, write: false, exec: false })?;
        } else {
            self.pm(pid).mem.protect(va, len, p)?;
        }
        if !fixed {
            self.pm(pid).mmap_next = va;
        }
        Ok(va as i64)
    }

    /// `mremap`: shrinks in place, grows in place when the pages after are free, else (with
    /// `MREMAP_MAYMOVE`, or to `MREMAP_FIXED`'s address) moves: new pages with the old
    /// rights, the contents copied, the old range unmapped.
    fn mremap(&mut self, pid: Pid, old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> R {
        const MAYMOVE: u64 = 1;
        const FIXED: u64 = 2;
        if !old.is_multiple_of(PAGE) || flags & !(MAYMOVE | FIXED) != 0 || (flags & FIXED != 0 && flags & MAYMOVE == 0) {
            return Err(Errno::EINVAL);
        }
        let old_len = page_up(old_len).ok_or(Errno::EINVAL)?;
        let new_len = page_up(new_len).filter(|&l| l > 0 && l < USER_END).ok_or(Errno::EINVAL)?;
        if old_len == 0 || !user_range(old, old_len) {
            return Err(Errno::EFAULT);
        }
        if self.p(pid).regions.overlap(old, old + old_len) != old_len {
            return Err(Errno::EFAULT);
        }
        let prot = self.p(pid).mem.prot_of(old).unwrap_or(Prot { read: true, write: true, exec: false });
        if flags & FIXED == 0 {
            if new_len <= old_len {
                self.unmap(pid, old + new_len, old_len - new_len);
                return Ok(old as i64);
            }
            let end = old + new_len;
            if user_range(old, new_len) && !self.p(pid).regions.any_in(old + old_len, end) {
                let rw = Prot { read: true, write: true, exec: false };
                self.map(pid, old + old_len, new_len - old_len, rw)?;
                self.pm(pid).mem.protect(old + old_len, new_len - old_len, prot)?;
                return Ok(old as i64);
            }
            if flags & MAYMOVE == 0 {
                return Err(Errno::ENOMEM);
            }
        }
        let to = if flags & FIXED != 0 {
            if !new_addr.is_multiple_of(PAGE) || !user_range(new_addr, new_len) || (new_addr < old + old_len && old < new_addr + new_len) {
                return Err(Errno::EINVAL);
            }
            new_addr
        } else {
            let next = self.p(pid).mmap_next;
            next.checked_sub(new_len).filter(|&v| v >= self.p(pid).brk_start + (1 << 40)).ok_or(Errno::ENOMEM)?
        };
        self.map(pid, to, new_len, Prot { read: true, write: true, exec: false })?;
        let mut page = alloc::vec![0u8; PAGE as usize];
        for off in (0..old_len.min(new_len)).step_by(PAGE as usize) {
            let mem = &mut self.pm(pid).mem;
            // (Pages of one range share its first page's rights; a PROT_NONE range moves as
            // zeros, its contents unreadable anyway until an mprotect.)
            if mem.read(old + off, &mut page).is_err() {
                page.fill(0);
            }
            mem.poke(to + off, &page).map_err(|_| Errno::EFAULT)?;
        }
        self.pm(pid).mem.protect(to, new_len, prot)?;
        self.unmap(pid, old, old_len);
        if flags & FIXED == 0 {
            self.pm(pid).mmap_next = to;
        }
        Ok(to as i64)
    }

    fn munmap(&mut self, pid: Pid, addr: u64, len: u64) -> R {
        let len = page_up(len).filter(|&l| l > 0).ok_or(Errno::EINVAL)?;
        if !addr.is_multiple_of(PAGE) || !user_range(addr, len) {
            return Err(Errno::EINVAL);
        }
        self.unmap(pid, addr, len);
        Ok(0)
    }

    fn mprotect(&mut self, pid: Pid, addr: u64, len: u64, prot: u64) -> R {
        if !addr.is_multiple_of(PAGE) || prot & !7 != 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        if len == 0 {
            return Ok(0);
        }
        if !user_range(addr, len) {
            return Err(Errno::ENOMEM);
        }
        let covered = self.p(pid).regions.overlap(addr, addr + len);
        if covered != len {
            return Err(Errno::ENOMEM);
        }
        let p = Prot { read: prot != 0, write: prot & 2 != 0, exec: prot & 4 != 0 };
        self.pm(pid).mem.protect(addr, len, p)?;
        Ok(0)
    }

    // ---- processes ----

    /// `clone` for new processes only (no threads): `fork` (`SIGCHLD`, with glibc's
    /// `CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID`) and `vfork`/`posix_spawn`
    /// (`CLONE_VM|CLONE_VFORK`, usually on a new stack). The child's memory is always a copy:
    /// the parent of a vfork waits until the child execs or exits, so it cannot tell.
    fn clone(&mut self, pid: Pid, flags: u64, stack: u64, ptid: u64, ctid: u64) -> Result<Out, Errno> {
        const CSIGNAL: u64 = 0xff;
        const CLONE_VM: u64 = 0x100;
        const CLONE_VFORK: u64 = 0x4000;
        const CLONE_PARENT_SETTID: u64 = 0x10_0000;
        const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
        const CLONE_CHILD_SETTID: u64 = 0x100_0000;
        let vfork = match flags & !(CSIGNAL | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID) {
            0 => false,
            f if f == CLONE_VM | CLONE_VFORK => true,
            _ => return Err(Errno::EINVAL), // threads and namespaces are not offered
        };
        let child = self.fork(pid, vfork)?;
        let c = self.pm(child);
        if stack != 0 {
            c.regs.gpr[RSP] = stack;
        }
        if flags & CLONE_CHILD_SETTID != 0 {
            let _ = c.mem.write(ctid, &child.to_le_bytes());
        }
        if flags & CLONE_PARENT_SETTID != 0 {
            let _ = self.pm(pid).mem.write(ptid, &child.to_le_bytes());
        }
        if vfork {
            let p = self.pm(pid);
            p.regs.gpr[RAX] = child as u64;
            p.state = State::VforkWait(child);
            self.park_vfork(pid);
            return Ok(Out::Resumed);
        }
        Ok(Out::Ret(child as i64))
    }

    fn vfork(&mut self, pid: Pid) -> Result<Out, Errno> {
        let child = self.fork(pid, true)?;
        let p = self.pm(pid);
        p.regs.gpr[RAX] = child as u64;
        p.state = State::VforkWait(child);
        // The parent leaves the queue until the child execs or exits; its rax already holds the result.
        self.park_vfork(pid);
        Ok(Out::Resumed)
    }

    fn execve(&mut self, pid: Pid, pva: u64, argv: u64, envp: u64) -> Result<Out, Errno> {
        /// `MAX_ARG_STRLEN`: one argument or variable, its NUL included.
        const MAX_ARG_STRLEN: usize = 32 * PAGE as usize;
        let path = self.path(pid, pva)?;
        // Linux (6.x `alloc_bprm`) opens the file before it reads argv and envp: a missing or
        // unexecutable file is ENOENT or EACCES whatever the argument pointers are.
        if path != PROC_SELF_EXE {
            let ino = self.fs.resolve(self.p(pid).cwd, &path, true)?;
            if !matches!(self.fs.get(ino)?.kind, Kind::File(_)) {
                return Err(Errno::EACCES);
            }
            self.fs.access(ino, X_OK)?;
        }
        let read_list = |k: &Self, mut va: u64| -> Result<Vec<Vec<u8>>, Errno> {
            let mut v = Vec::new();
            let mut total = 0usize;
            if va == 0 {
                return Ok(v);
            }
            loop {
                let p = k.get_u64(pid, va)?;
                if p == 0 {
                    return Ok(v);
                }
                let s = k.cstr(pid, p, MAX_ARG_STRLEN).map_err(|e| if e == Errno::ENAMETOOLONG { Errno::E2BIG } else { e })?;
                total += s.len() + 1;
                if total > super::elf::MAX_ARG_BYTES || v.len() >= MAX_ARGS {
                    return Err(Errno::E2BIG);
                }
                v.push(s);
                va = va.checked_add(8).ok_or(Errno::EFAULT)?;
            }
        };
        let args = read_list(self, argv)?;
        let env = read_list(self, envp)?;
        match self.exec(pid, &path, args, env) {
            Ok(()) => Ok(Out::Resumed),
            Err(e) => {
                // Before the point of no return the old image is intact; after it, the process cannot continue.
                if self.p(pid).regions.is_empty() {
                    self.notes.push(alloc::format!("sandbox: pid {pid}: execve failed after replacing the image ({e:?})"));
                    self.end(pid, Status::Signaled(sig::SIGSEGV));
                    return Ok(Out::Ended);
                }
                Err(e)
            }
        }
    }

    fn wait4(&mut self, pid: Pid, who: i64, status: u64, options: u64, rusage: u64) -> Result<Out, Errno> {
        const WNOHANG: u64 = 1;
        if options & !(WNOHANG | 2 | 8 | 0x4000_0000 | 0x8000_0000 | 0x2000_0000) != 0 {
            return Err(Errno::EINVAL);
        }
        let kids: Vec<(Pid, State)> = self.procs.values().filter(|c| c.ppid == pid && (who <= 0 || c.pid as i64 == who)).map(|c| (c.pid, c.state)).collect();
        if kids.is_empty() {
            return Err(Errno::ECHILD);
        }
        if let Some((k, State::Zombie(s))) = kids.iter().find(|(_, s)| matches!(s, State::Zombie(_))) {
            let k = *k;
            if status != 0 {
                self.put(pid, status, &s.wait_word().to_le_bytes())?;
            }
            if rusage != 0 {
                self.put(pid, rusage, &[0; 144])?;
            }
            self.procs.remove(&k);
            return Ok(Out::Ret(k as i64));
        }
        if options & WNOHANG != 0 {
            return Ok(Out::Ret(0));
        }
        Ok(Out::Block)
    }

    fn kill(&mut self, pid: Pid, who: i64, signal: u64) -> Result<Out, Errno> {
        if signal > u64::from(NSIG) {
            return Err(Errno::EINVAL);
        }
        if who <= 0 {
            return Err(Errno::EPERM); // no process groups in the sandbox
        }
        let who = who as Pid;
        let allowed = who == pid || self.procs.get(&who).is_some_and(|c| c.ppid == pid);
        if !self.procs.contains_key(&who) {
            return Err(Errno::ESRCH);
        }
        if !allowed {
            return Err(Errno::EPERM);
        }
        if signal != 0 {
            self.send(who, signal as u8, Info::user(pid));
        }
        // SIGKILL to itself ends the caller at once; other signals are acted on before it
        // runs again.
        if !self.procs.get(&pid).is_some_and(|p| !matches!(p.state, State::Zombie(_))) {
            return Ok(Out::Ended);
        }
        Ok(Out::Ret(0))
    }

    fn sigaction(&mut self, pid: Pid, signal: u64, act: u64, old: u64, size: u64) -> R {
        if signal == 0 || signal > u64::from(NSIG) || size != 8 {
            return Err(Errno::EINVAL);
        }
        let sig = signal as u8;
        let was = self.p(pid).sig.action(sig);
        if act != 0 {
            let mut b = [0u8; 32];
            self.get(pid, act, &mut b)?;
            self.pm(pid).sig.set_action(sig, Action::from_bytes(&b))?;
        }
        if old != 0 {
            self.put(pid, old, &was.to_bytes())?;
        }
        Ok(0)
    }

    fn sigprocmask(&mut self, pid: Pid, how: u64, set: u64, old: u64, size: u64) -> R {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let was = self.p(pid).sig.blocked;
        if set != 0 {
            let m = self.get_u64(pid, set)?;
            let new = match how {
                0 => was | m,  // SIG_BLOCK
                1 => was & !m, // SIG_UNBLOCK
                2 => m,        // SIG_SETMASK
                _ => return Err(Errno::EINVAL),
            };
            self.pm(pid).sig.set_blocked(new);
        }
        if old != 0 {
            self.put(pid, old, &was.to_le_bytes())?;
        }
        Ok(0)
    }

    fn prlimit(&mut self, pid: Pid, who: u64, res: u64, new: u64, old: u64) -> R {
        if who != 0 && who != pid as u64 {
            return Err(Errno::ESRCH);
        }
        const INF: u64 = u64::MAX;
        let cur = match res {
            3 => STACK_SIZE,               // RLIMIT_STACK
            7 => MAX_FDS as u64,           // RLIMIT_NOFILE
            6 => self.limits.processes as u64, // RLIMIT_NPROC
            9 | 2 => self.limits.memory,   // RLIMIT_AS, RLIMIT_DATA
            0..=15 => INF,
            _ => return Err(Errno::EINVAL),
        };
        if new != 0 {
            let mut b = [0u8; 16];
            self.get(pid, new, &mut b)?;
            let want_max = u64::from_le_bytes(b[8..16].try_into().expect("8"));
            if want_max > cur {
                return Err(Errno::EPERM);
            }
        }
        if old != 0 {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&cur.to_le_bytes());
            b[8..].copy_from_slice(&cur.to_le_bytes());
            self.put(pid, old, &b)?;
        }
        Ok(0)
    }

    fn uname(&mut self, pid: Pid, buf: u64) -> R {
        let mut u = [0u8; 390];
        let hostname = self.hostname;
        for (i, f) in [&b"Linux"[..], hostname, b"5.10.0", b"#1 SMP", b"x86_64", b"(none)"].iter().enumerate() {
            u[i * 65..i * 65 + f.len()].copy_from_slice(f);
        }
        self.put(pid, buf, &u)?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sandbox::abi::nr;
    use crate::sandbox::fs::{Fs, ROOT};
    use crate::sandbox::mem::MockMemory;
    use alloc::vec;

    const SCRATCH: u64 = 0x1000_0000;

    struct H {
        k: Kernel<MockMemory>,
        pid: Pid,
    }

    /// A kernel running /bin/busybox (loaded by the real exec path) with a scratch page area.
    fn boot() -> H {
        boot_with(Limits { memory: 256 << 20, processes: 8, cpu_ticks: 1000, log_bytes: 1 << 20 })
    }

    fn boot_with(limits: Limits) -> H {
        let mut fs = Fs::nix_sandbox(64 << 20, 10_000).unwrap();
        let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static) is needed");
        let store = fs.resolve(ROOT, b"/nix/store", true).unwrap();
        let d = fs.mkdir(store, b"0000-busybox", 0o755).unwrap();
        let f = fs.create(d, b"busybox", 0o555).unwrap();
        fs.write_at(f, 0, &bb).unwrap();
        fs.set_readonly(d);
        let mut k = Kernel::new(fs, limits);
        let pid = k
            .spawn(MockMemory::new(), b"/nix/store/0000-busybox/busybox", vec![b"sh".to_vec()], vec![b"HOME=/homeless-shelter".to_vec()])
            .unwrap();
        let mut h = H { k, pid };
        let rw = Prot { read: true, write: true, exec: false };
        h.k.map(pid, SCRATCH, 0x10000, rw).unwrap();
        h
    }

    impl H {
        fn step(&mut self, n: u64, a: &[u64]) -> Step {
            let mut r = [0u64; 6];
            r[..a.len()].copy_from_slice(a);
            let p = self.k.process(self.pid).unwrap();
            p.regs.gpr[RAX] = n;
            for (i, reg) in [RDI, RSI, RDX, R10, R8, R9].iter().enumerate() {
                p.regs.gpr[*reg] = r[i];
            }
            self.k.syscall(self.pid)
        }
        fn call(&mut self, n: u64, a: &[u64]) -> i64 {
            match self.step(n, a) {
                Step::Ret(v) => v,
                s => panic!("syscall {n} gave {s:?}"),
            }
        }
        fn regs(&mut self) -> &mut Regs {
            &mut self.k.process(self.pid).unwrap().regs
        }
        /// `rt_sigaction(sig, {handler, flags, restorer, mask})`.
        fn handle(&mut self, sig: u8, handler: u64, flags: u64, mask: u64) {
            let a = Action { handler, flags, restorer: RESTORER, mask };
            self.poke(SCRATCH + 0xf000, &a.to_bytes());
            assert_eq!(self.call(nr::RT_SIGACTION, &[u64::from(sig), SCRATCH + 0xf000, 0, 8]), 0);
        }
        /// A u64 of the `sigcontext` in the frame at `frame` (index in its order).
        fn frame_word(&mut self, frame: u64, i: u64) -> u64 {
            u64::from_le_bytes(self.peek(frame + 48 + 8 * i, 8).try_into().unwrap())
        }
        fn poke(&mut self, va: u64, d: &[u8]) {
            self.k.process(self.pid).unwrap().mem.write(va, d).unwrap();
        }
        fn peek(&mut self, va: u64, n: usize) -> Vec<u8> {
            let mut b = vec![0; n];
            self.k.process(self.pid).unwrap().mem.read(va, &mut b).unwrap();
            b
        }
        fn s(&mut self, va: u64, s: &str) -> u64 {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            self.poke(va, &v);
            va
        }
    }

    #[test]
    fn cpuid_and_rdtsc_traps_are_answered_by_the_table_and_the_counter() {
        use crate::sandbox::cpu;
        use crate::sandbox::process::Exception;
        let mut h = boot();
        // rdtsc; rdtsc; cpuid; rdtscp; then an ordinary privileged instruction (hlt).
        h.poke(SCRATCH, &[0x0F, 0x31, 0x0F, 0x31, 0x0F, 0xA2, 0x0F, 0x01, 0xF9, 0xF4]);
        h.regs().rip = SCRATCH;
        let gp = Exception { vector: 13, error: 0, address: 0 };
        let tsc = |h: &mut H| h.regs().gpr[RAX] | h.regs().gpr[RDX] << 32;
        h.k.fault(h.pid, gp);
        assert_eq!((tsc(&mut h), h.regs().rip), (cpu::TSC_START, SCRATCH + 2));
        h.k.fault(h.pid, gp);
        assert_eq!(tsc(&mut h), cpu::TSC_START + cpu::TSC_STEP);
        // CPUID as #VE (TDX, vector 20) and as #VC (SEV-SNP, vector 29): the same table.
        h.regs().gpr[RAX] = 1;
        h.k.fault(h.pid, Exception { vector: 20, error: 0, address: 0 });
        assert_eq!(h.regs().gpr[RCX], u64::from(cpu::LEAF1_ECX));
        assert_eq!(h.regs().rip, SCRATCH + 6);
        h.k.fault(h.pid, Exception { vector: 29, error: 0x6E, address: 0 });
        assert_eq!(tsc(&mut h), cpu::TSC_START + 2 * cpu::TSC_STEP);
        assert_eq!(h.regs().rip, SCRATCH + 9);
        // A fork carries the count on.
        let child = h.k.fork(h.pid, false).unwrap();
        assert_eq!(h.k.process(child).unwrap().tsc_reads, 3);
        // Anything else still ends the process (SIGSEGV for #GP), and a #PF is never emulated.
        h.k.fault(h.pid, gp);
        assert!(h.k.process(h.pid).map_or(true, |p| matches!(p.state, State::Zombie(_))), "hlt is not emulated");
        let mut h = boot();
        h.poke(SCRATCH, &[0x0F, 0x31]);
        h.regs().rip = SCRATCH;
        h.k.fault(h.pid, Exception { vector: 14, error: 5, address: SCRATCH });
        assert!(h.k.process(h.pid).map_or(true, |p| matches!(p.state, State::Zombie(_))));
    }

    #[test]
    fn builder_gets_nix_env_and_files() {
        use crate::build::env::{builder_setup, DrvEnv};
        use alloc::collections::BTreeMap;
        use alloc::string::{String, ToString};
        let mut fs = Fs::nix_sandbox(64 << 20, 10_000).unwrap();
        let store = fs.resolve(ROOT, b"/nix/store", true).unwrap();
        let d = fs.mkdir(store, b"b-bb", 0o755).unwrap();
        let bin = fs.mkdir(d, b"bin", 0o755).unwrap();
        let f = fs.create(bin, b"busybox", 0o555).unwrap();
        fs.write_at(f, 0, &std::fs::read("/bin/busybox").unwrap()).unwrap();
        let args = vec![String::from("sh"), String::from("-c"), String::from("true")];
        let mut env = BTreeMap::new();
        env.insert("passAsFile".to_string(), "big".to_string());
        env.insert("big".to_string(), "contents".to_string());
        let mut outputs = BTreeMap::new();
        outputs.insert("out".to_string(), "/nix/store/o-out".to_string());
        let setup = builder_setup(&DrvEnv { builder: "/nix/store/b-bb/bin/busybox", args: &args, env: &env, outputs: &outputs, fixed_output: false }, 1).unwrap();
        let mut k: Kernel<MockMemory> = Kernel::new(fs, Limits { memory: 256 << 20, processes: 8, cpu_ticks: 1000, log_bytes: 1 << 20 });
        let pid = k.start_builder(MockMemory::new(), &setup).unwrap();
        // The initial stack carries exactly the setup's argv and envp.
        let p = k.process(pid).unwrap();
        let sp = p.regs.gpr[RSP];
        let word = |va: u64| {
            let mut b = [0u8; 8];
            p.mem.read(va, &mut b).unwrap();
            u64::from_le_bytes(b)
        };
        let cstr = |va: u64| {
            let mut out = vec![];
            let mut b = [0u8; 1];
            let mut a = va;
            loop {
                p.mem.read(a, &mut b).unwrap();
                if b[0] == 0 {
                    return String::from_utf8(out).unwrap();
                }
                out.push(b[0]);
                a += 1;
            }
        };
        let argc = word(sp) as usize;
        let argv: Vec<String> = (0..argc).map(|i| cstr(word(sp + 8 + 8 * i as u64))).collect();
        assert_eq!(argv, setup.argv);
        let mut envp = vec![];
        let mut at = sp + 16 + 8 * argc as u64;
        while word(at) != 0 {
            envp.push(cstr(word(at)));
            at += 8;
        }
        assert_eq!(envp, setup.envp);
        assert!(envp.iter().any(|e| e == "HOME=/homeless-shelter"));
        for (name, contents) in &setup.files {
            let i = k.fs.resolve(ROOT, alloc::format!("/build/{name}").as_bytes(), true).unwrap();
            let mut b = vec![0; contents.len() + 1];
            assert_eq!(k.fs.read_at(i, 0, &mut b), Ok(contents.len()));
            assert_eq!(&b[..contents.len()], &contents[..]);
        }
        assert!(!setup.files.is_empty());
    }

    #[test]
    fn exec_builds_a_linux_process() {
        let mut h = boot();
        let p = h.k.process(h.pid).unwrap();
        assert_eq!(p.regs.rip, crate::sandbox::elf::parse(&std::fs::read("/bin/busybox").unwrap()).unwrap().entry);
        let sp = p.regs.gpr[RSP];
        assert_eq!(sp % 16, 0);
        let argc = h.peek(sp, 8);
        assert_eq!(argc, 1u64.to_le_bytes());
        // Text is mapped executable and not writable; the stack is not executable.
        let p = h.k.process(h.pid).unwrap();
        let t = p.mem.prot(0x401000).unwrap();
        assert!(t.exec && !t.write);
        assert!(!p.mem.prot(sp).unwrap().exec);
    }

    #[test]
    fn file_io_round_trip() {
        let mut h = boot();
        let path = h.s(SCRATCH, "out.txt");
        let fd = h.call(nr::OPENAT, &[AT_FDCWD as u64, path, (O_CREAT | O_WRONLY | O_TRUNC) as u64, 0o666]);
        assert_eq!(fd, 3);
        h.poke(SCRATCH + 0x100, b"hello world\n");
        assert_eq!(h.call(nr::WRITE, &[3, SCRATCH + 0x100, 12]), 12);
        assert_eq!(h.call(nr::READ, &[3, SCRATCH + 0x200, 12]), Errno::EBADF.ret());
        assert_eq!(h.call(nr::CLOSE, &[3]), 0);
        assert_eq!(h.call(nr::CLOSE, &[3]), Errno::EBADF.ret());
        let fd = h.call(nr::OPENAT, &[AT_FDCWD as u64, path, 0, 0]) as u64;
        assert_eq!(h.call(nr::PREAD64, &[fd, SCRATCH + 0x200, 5, 6]), 5);
        assert_eq!(h.peek(SCRATCH + 0x200, 5), b"world");
        assert_eq!(h.call(nr::LSEEK, &[fd, 0, 2]), 12);
        // fstat: mode 0644 after umask 022, size 12, uid 1000.
        assert_eq!(h.call(nr::FSTAT, &[fd, SCRATCH + 0x300]), 0);
        let st = h.peek(SCRATCH + 0x300, 144);
        assert_eq!(u32::from_le_bytes(st[24..28].try_into().unwrap()), 0o100644);
        assert_eq!(u32::from_le_bytes(st[28..32].try_into().unwrap()), 1000);
        assert_eq!(u64::from_le_bytes(st[48..56].try_into().unwrap()), 12);
        // getcwd is /build
        assert_eq!(h.call(nr::GETCWD, &[SCRATCH + 0x400, 100]), 7);
        assert_eq!(h.peek(SCRATCH + 0x400, 7), b"/build\0");
        assert_eq!(h.call(nr::GETCWD, &[SCRATCH + 0x400, 3]), Errno::ERANGE.ret());
        // writev to stdout lands in the output log.
        h.poke(SCRATCH + 0x500, b"abcdef");
        let mut iov = vec![];
        for (b, l) in [(SCRATCH + 0x500, 3u64), (SCRATCH + 0x503, 3)] {
            iov.extend_from_slice(&b.to_le_bytes());
            iov.extend_from_slice(&l.to_le_bytes());
        }
        h.poke(SCRATCH + 0x600, &iov);
        assert_eq!(h.call(nr::WRITEV, &[1, SCRATCH + 0x600, 2]), 6);
        assert_eq!(h.k.output, vec![(1u8, b"abcdef".to_vec())]);
        // ioctl is ENOTTY; the store and /etc are read-only.
        assert_eq!(h.call(nr::IOCTL, &[1, 0x5401, 0]), Errno::ENOTTY.ret());
        let p = h.s(SCRATCH + 0x700, "/nix/store/0000-busybox/busybox");
        assert_eq!(h.call(nr::OPENAT, &[AT_FDCWD as u64, p, O_WRONLY as u64, 0]), Errno::EACCES.ret());
        let p = h.s(SCRATCH + 0x700, "/etc/new");
        assert_eq!(h.call(nr::OPENAT, &[AT_FDCWD as u64, p, (O_CREAT | O_WRONLY) as u64, 0o644]), Errno::EACCES.ret());
    }

    #[test]
    fn creating_a_read_only_file_still_opens_it_for_writing() {
        let mut h = boot();
        let p = h.s(SCRATCH, "ro");
        let fd = h.call(nr::OPENAT, &[AT_FDCWD as u64, p, (O_CREAT | O_WRONLY | O_TRUNC) as u64, 0o444]);
        assert_eq!(fd, 3);
        h.poke(SCRATCH + 0x100, b"x");
        assert_eq!(h.call(nr::WRITE, &[3, SCRATCH + 0x100, 1]), 1);
        // Opening it again for writing is refused: it exists now, with mode 0444.
        assert_eq!(h.call(nr::OPENAT, &[AT_FDCWD as u64, p, (O_CREAT | O_WRONLY) as u64, 0o444]), Errno::EACCES.ret());
    }

    #[test]
    fn int_arguments_use_their_low_32_bits() {
        // glibc passes AT_FDCWD as a 32-bit int: the register holds 0xffffff9c, not -100.
        let mut h = boot();
        let p = h.s(SCRATCH, "/etc/passwd");
        assert_eq!(h.call(nr::NEWFSTATAT, &[0xffff_ff9c, p, SCRATCH + 0x100, 0]), 0);
        assert_eq!(h.call(nr::OPENAT, &[0xffff_ff9c, p, 0, 0]), 3);
    }

    #[test]
    fn bad_pointers_are_efault() {
        let mut h = boot();
        for bad in [0u64, 8, 0xffff_8000_0000_0000, 0xffff_ffff_8000_0000, 0x0000_8000_0000_0000, 0x8000_0000_0000_0000, u64::MAX, 0x2000_0000] {
            assert_eq!(h.call(nr::WRITE, &[1, bad, 16]), Errno::EFAULT.ret(), "{bad:#x}");
            if bad >= USER_END {
                assert_eq!(h.call(nr::READ, &[0, bad, 16]), Errno::EFAULT.ret(), "access_ok first, as Linux");
            }
            assert_eq!(h.call(nr::OPENAT, &[AT_FDCWD as u64, bad, 0, 0]), Errno::EFAULT.ret());
            assert_eq!(h.call(nr::FSTAT, &[0, bad]), Errno::EFAULT.ret());
            assert_eq!(h.call(nr::UNAME, &[bad]), Errno::EFAULT.ret());
            assert_eq!(h.call(nr::CLOCK_GETTIME, &[0, bad]), Errno::EFAULT.ret());
            assert_eq!(h.call(nr::PIPE2, &[bad, 0]), Errno::EFAULT.ret());
            assert_eq!(h.call(nr::EXECVE, &[bad, 0, 0]), Errno::EFAULT.ret());
        }
        // An iovec array at the very top of the address space: EFAULT, no overflow.
        assert_eq!(h.call(nr::WRITEV, &[1, u64::MAX - 8, 2]), Errno::EFAULT.ret());
        // A 2 GiB write from a 64 KiB buffer: EFAULT, nothing written.
        assert_eq!(h.call(nr::WRITE, &[1, SCRATCH, 2 << 30]), Errno::EFAULT.ret());
        // Text is read-only: the kernel does not write into it either.
        assert_eq!(h.call(nr::CLOCK_GETTIME, &[0, 0x401000]), Errno::EFAULT.ret());
        assert!(h.k.output.is_empty());
        // Unimplemented: ENOSYS, noted once.
        assert_eq!(h.call(999, &[]), Errno::ENOSYS.ret());
        assert_eq!(h.call(999, &[]), Errno::ENOSYS.ret());
        assert_eq!(h.k.notes.iter().filter(|n| n.contains("999")).count(), 1);
    }

    #[test]
    fn page_zero_is_a_user_address_and_nothing_to_copy_never_faults() {
        // Found by the abuse suite against a native run: read(/dev/null, NULL, 16) is 0 on
        // Linux (access_ok passes page 0; no byte is copied), not EFAULT.
        let mut h = boot();
        assert_eq!(h.call(nr::READ, &[0, 0, 16]), 0);
        assert_eq!(h.call(nr::READ, &[0, 8, 16]), 0);
        assert_eq!(h.call(nr::WRITE, &[1, 0, 16]), Errno::EFAULT.ret(), "a copy that happens still faults");
        assert_eq!(h.call(nr::READ, &[0, USER_END - 8, 16]), Errno::EFAULT.ret());
    }

    #[test]
    fn one_writev_moves_at_most_a_megabyte() {
        // 1024 iovecs of 1 MiB each would otherwise queue a gigabyte of output in one call.
        let mut h = boot();
        let buf = h.call(nr::MMAP, &[0, 1 << 20, 3, 0x22, u64::MAX, 0]) as u64;
        let mut iov = vec![];
        for _ in 0..1024 {
            iov.extend_from_slice(&buf.to_le_bytes());
            iov.extend_from_slice(&(1u64 << 20).to_le_bytes());
        }
        h.poke(SCRATCH, &iov);
        assert_eq!(h.call(nr::WRITEV, &[1, SCRATCH, 1024]), 1 << 20);
        assert_eq!(h.k.output.iter().map(|(_, b)| b.len()).sum::<usize>(), 1 << 20);
    }

    #[test]
    fn execve_checks_the_file_first_and_each_string_against_max_arg_strlen() {
        // Both found against native runs: Linux 6.x opens the file before reading argv, and
        // refuses any single string of 128 KiB or more (MAX_ARG_STRLEN) with E2BIG.
        let mut h = boot();
        let missing = h.s(SCRATCH, "/nonexistent");
        assert_eq!(h.call(nr::EXECVE, &[missing, 0xffff_8000_0000_0000, 0]), Errno::ENOENT.ret());
        let etc = h.s(SCRATCH, "/etc/passwd");
        assert_eq!(h.call(nr::EXECVE, &[etc, 0xffff_8000_0000_0000, 0]), Errno::EACCES.ret());
        let bb = h.s(SCRATCH, "/nix/store/0000-busybox/busybox");
        assert_eq!(h.call(nr::EXECVE, &[bb, 0xffff_8000_0000_0000, 0]), Errno::EFAULT.ret());
        let big = h.call(nr::MMAP, &[0, 1 << 18, 3, 0x22, u64::MAX, 0]) as u64;
        let mut arg = vec![b'a'; 32 * 4096];
        arg.push(0);
        h.poke(big, &arg);
        h.poke(SCRATCH + 0x100, &[big.to_le_bytes(), 0u64.to_le_bytes()].concat());
        assert_eq!(h.call(nr::EXECVE, &[bb, SCRATCH + 0x100, 0]), Errno::E2BIG.ret());
        h.poke(big + 32 * 4096 - 1, &[0]);
        assert_eq!(h.step(nr::EXECVE, &[bb, SCRATCH + 0x100, 0]), Step::Resumed, "131071 bytes and a NUL fit");
    }

    /// creat(2) is open(O_CREAT|O_WRONLY|O_TRUNC): it makes a file, truncates one that exists,
    /// and the descriptor is write-only (GNU hello's build calls it through old code paths).
    #[test]
    fn creat_creates_truncates_and_is_write_only() {
        let mut h = boot();
        let path = h.s(SCRATCH, "c.txt");
        let fd = h.call(nr::CREAT, &[path, 0o600]);
        assert_eq!(fd, 3);
        h.poke(SCRATCH + 0x100, b"twelve bytes");
        assert_eq!(h.call(nr::WRITE, &[3, SCRATCH + 0x100, 12]), 12);
        assert_eq!(h.call(nr::READ, &[3, SCRATCH + 0x200, 1]), Errno::EBADF.ret());
        assert_eq!(h.call(nr::CLOSE, &[3]), 0);
        assert_eq!(h.call(nr::STAT, &[path, SCRATCH + 0x300]), 0);
        let st = h.peek(SCRATCH + 0x300, 144);
        assert_eq!(u32::from_le_bytes(st[24..28].try_into().unwrap()), 0o100600);
        assert_eq!(i64::from_le_bytes(st[48..56].try_into().unwrap()), 12);
        assert_eq!(h.call(nr::CREAT, &[path, 0o644]), 3);
        assert_eq!(h.call(nr::STAT, &[path, SCRATCH + 0x300]), 0);
        let st = h.peek(SCRATCH + 0x300, 144);
        assert_eq!(i64::from_le_bytes(st[48..56].try_into().unwrap()), 0, "an existing file is truncated");
        assert_eq!(u32::from_le_bytes(st[24..28].try_into().unwrap()), 0o100600, "and keeps its mode");
    }

    /// The file clock (issue 16): files changed one after the other get distinct, ordered
    /// mtimes; a time set explicitly is kept and the clock jumps past it; the clocks a process
    /// reads follow the same time.
    #[test]
    fn the_file_clock_orders_changes_and_honours_set_times() {
        let mut h = boot();
        let mtime = |h: &mut H, name: &str| -> (i64, i64) {
            let p = h.s(SCRATCH + 0x800, name);
            assert_eq!(h.call(nr::STAT, &[p, SCRATCH + 0x1000]), 0);
            let b = h.peek(SCRATCH + 0x1000 + 88, 16);
            (i64::from_le_bytes(b[..8].try_into().unwrap()), i64::from_le_bytes(b[8..].try_into().unwrap()))
        };
        let create = |h: &mut H, name: &str| {
            let p = h.s(SCRATCH + 0x800, name);
            let fd = h.call(nr::OPEN, &[p, 0o101, 0o644]);
            assert!(fd >= 0);
            assert_eq!(h.call(nr::WRITE, &[fd as u64, p, 1]), 1);
            assert_eq!(h.call(nr::CLOSE, &[fd as u64]), 0);
        };
        create(&mut h, "a");
        create(&mut h, "b");
        let (a, b) = (mtime(&mut h, "a"), mtime(&mut h, "b"));
        assert!(b > a, "{a:?} {b:?}");
        assert_eq!(a.0, 1, "the clock starts at 1 s");
        // touch -d @1400000000.5 a: kept exactly, and the next change is later still.
        let mut times = [0u8; 32];
        times[0..8].copy_from_slice(&1_400_000_000i64.to_le_bytes());
        times[16..24].copy_from_slice(&1_400_000_000i64.to_le_bytes());
        times[24..32].copy_from_slice(&500_000_000i64.to_le_bytes());
        h.poke(SCRATCH + 0x2000, &times);
        let p = h.s(SCRATCH + 0x800, "a");
        assert_eq!(h.call(nr::UTIMENSAT, &[AT_FDCWD as u64, p, SCRATCH + 0x2000, 0]), 0);
        assert_eq!(mtime(&mut h, "a"), (1_400_000_000, 500_000_000));
        create(&mut h, "c");
        let c = mtime(&mut h, "c");
        assert!(c > (1_400_000_000, 500_000_000), "{c:?}");
        assert!(h.call(201, &[0]) >= 1_400_000_000, "time() follows the clock");
        // A bad nanosecond count is EINVAL, as on Linux.
        times[24..32].copy_from_slice(&NS.to_le_bytes());
        h.poke(SCRATCH + 0x2000, &times);
        assert_eq!(h.call(nr::UTIMENSAT, &[AT_FDCWD as u64, p, SCRATCH + 0x2000, 0]), Errno::EINVAL.ret());
    }

    #[test]
    fn identity_time_random() {
        let mut h = boot();
        assert_eq!(h.call(nr::GETUID, &[]), 1000);
        assert_eq!(h.call(nr::GETEGID, &[]), 100);
        assert_eq!(h.call(nr::GETPID, &[]), 1);
        assert_eq!(h.call(nr::UNAME, &[SCRATCH]), 0);
        assert_eq!(&h.peek(SCRATCH + 65, 10), b"localhost\0");
        assert_eq!(h.call(nr::CLOCK_GETTIME, &[0, SCRATCH]), 0);
        // 1 s, the file clock's start, one tick (1 us) later: the read itself is an event.
        assert_eq!(h.peek(SCRATCH, 16), [1, 0, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.call(nr::GETRANDOM, &[SCRATCH, 32, 0]), 32);
        let a = h.peek(SCRATCH, 32);
        let mut h2 = boot();
        assert_eq!(h2.call(nr::GETRANDOM, &[SCRATCH, 32, 0]), 32);
        assert_eq!(a, h2.peek(SCRATCH, 32), "deterministic");
        assert_ne!(a, vec![0; 32]);
        assert_eq!(h.call(nr::ARCH_PRCTL, &[0x1002, 0xffff_8000_0000_0000]), Errno::EPERM.ret());
        assert_eq!(h.call(nr::ARCH_PRCTL, &[0x1002, 0x5000]), 0);
        assert_eq!(h.k.process(1).unwrap().regs.fs_base, 0x5000);
    }

    #[test]
    fn memory_calls_and_limits() {
        let mut h = boot();
        let b0 = h.call(nr::BRK, &[0]) as u64;
        assert_eq!(h.call(nr::BRK, &[b0 + 0x3000]) as u64, b0 + 0x3000);
        h.poke(b0 + 0x2ff0, b"x");
        assert_eq!(h.call(nr::BRK, &[b0 + (1 << 30)]) as u64, b0 + 0x3000, "over the memory limit: unchanged");
        let m = h.call(nr::MMAP, &[0, 0x5000, 3, 0x22, u64::MAX, 0]);
        assert!(m > 0 && m as u64 % PAGE == 0);
        h.poke(m as u64 + 0x4fff, b"y");
        assert_eq!(h.call(nr::MPROTECT, &[m as u64, 0x1000, 1]), 0);
        assert_eq!(h.call(nr::CLOCK_GETTIME, &[0, m as u64]), Errno::EFAULT.ret());
        assert_eq!(h.call(nr::MUNMAP, &[m as u64, 0x5000]), 0);
        assert_eq!(h.call(nr::CLOCK_GETTIME, &[0, m as u64 + 0x1000]), Errno::EFAULT.ret());
        assert_eq!(h.call(nr::MMAP, &[0, 1 << 30, 3, 0x22, u64::MAX, 0]), Errno::ENOMEM.ret());
        // MAP_FIXED past the end of user memory, the kernel half or the top user page: ENOMEM
        // (Linux 6.x answers both so).
        assert_eq!(h.call(nr::MMAP, &[0xffff_8000_0000_0000, 0x1000, 3, 0x32, u64::MAX, 0]), Errno::ENOMEM.ret());
        assert_eq!(h.call(nr::MMAP, &[0x7fff_ffff_f000, 0x1000, 3, 0x32, u64::MAX, 0]), Errno::ENOMEM.ret());
        assert_eq!(h.call(nr::MMAP, &[0x7fff_ffff_e000, 0x2000, 3, 0x32, u64::MAX, 0]), Errno::ENOMEM.ret());
        assert_eq!(h.call(nr::MPROTECT, &[0x3000_0000, 0x1000, 7]), Errno::ENOMEM.ret());
    }

    const HANDLER: u64 = 0x40_1000;
    const RESTORER: u64 = 0x40_1100;
    const SA_RESTORER: u64 = crate::sandbox::signal::SA_RESTORER;

    #[test]
    fn signal_handlers_run_and_return() {
        let mut h = boot();
        h.handle(10, HANDLER, SA_RESTORER | 4, 1 << 11);
        let (rip, sp) = (0x40_2000, SCRATCH + 0x8000 + 5);
        h.regs().rip = rip;
        h.regs().gpr[RSP] = sp;
        h.regs().gpr[12] = 0x1234;
        h.regs().fpu.0[200] = 0x5a;
        assert_eq!(h.call(nr::KILL, &[1, 10]), 0);
        assert_eq!(h.k.schedule(), Some(1));
        let r = *h.regs();
        assert_eq!((r.rip, r.gpr[RDI]), (HANDLER, 10));
        assert_eq!(r.gpr[RSP] % 16, 8, "as after a call");
        assert!(r.gpr[RSP] + 8 <= sp - 128, "below the red zone");
        assert_eq!(h.peek(r.gpr[RSP], 8), RESTORER.to_le_bytes(), "returns to sa_restorer");
        let info = h.peek(r.gpr[RSI], 24);
        assert_eq!((info[0], info[8], info[16]), (10, 0, 1), "signo, SI_USER, from pid 1");
        assert_eq!(r.gpr[RDX], r.gpr[RSP] + 8, "the ucontext follows the return address");
        assert_eq!(h.k.process(1).unwrap().sig.blocked, 1 << 9 | 1 << 11, "the signal and sa_mask (SIGUSR2) are blocked");
        assert_eq!(r.fpu, Fpu::default(), "a handler starts with a clean FPU");
        // The handler returns: `ret` pops the restorer, which calls rt_sigreturn.
        h.regs().gpr[RSP] += 8;
        h.regs().gpr[12] = 0;
        assert_eq!(h.step(nr::RT_SIGRETURN, &[]), Step::Resumed);
        let r = *h.regs();
        assert_eq!((r.rip, r.gpr[RSP], r.gpr[RAX], r.gpr[12], r.fpu.0[200]), (rip, sp, 0, 0x1234, 0x5a));
        assert_eq!(h.k.process(1).unwrap().sig.blocked, 0);
        // A default action ends the process before it runs again.
        assert_eq!(h.call(nr::KILL, &[1, 15]), 0);
        assert_eq!(h.k.schedule(), None);
        assert_eq!(h.k.finished(), Some(Status::Signaled(15)));
    }

    #[test]
    fn a_blocked_call_fails_with_eintr_or_restarts() {
        for restart in [false, true] {
            let mut h = boot();
            let flags = SA_RESTORER | if restart { crate::sandbox::signal::SA_RESTART } else { 0 };
            h.handle(10, HANDLER, flags, 0);
            assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
            assert_eq!(h.call(nr::FORK, &[]), 2, "someone else to run");
            h.regs().rip = 0x40_2002;
            h.regs().gpr[RSP] = SCRATCH + 0x8000;
            assert_eq!(h.step(nr::READ, &[3, SCRATCH, 1]), Step::Block);
            h.k.send(1, 10, Info::user(2));
            while h.k.current() != Some(1) {
                h.k.yield_now();
            }
            assert_eq!(h.k.schedule(), Some(1));
            assert_eq!(h.regs().rip, HANDLER);
            let frame = h.regs().gpr[RSP];
            let (rax, rip) = (h.frame_word(frame, 13), h.frame_word(frame, 16));
            if restart {
                assert_eq!((rax, rip), (nr::READ, 0x40_2000), "the read runs again after the handler");
            } else {
                assert_eq!((rax as i64, rip), (Errno::EINTR.ret(), 0x40_2002), "the read fails with EINTR");
            }
        }
    }

    #[test]
    fn sigsuspend_waits_for_sigchld() {
        // busybox ash's `wait`: block everything, poll with WNOHANG, then sigsuspend with the
        // old mask until the SIGCHLD handler has run.
        let mut h = boot();
        h.handle(17, HANDLER, SA_RESTORER, 0);
        h.regs().gpr[RSP] = SCRATCH + 0x8000;
        h.poke(SCRATCH, &u64::MAX.to_le_bytes());
        h.poke(SCRATCH + 8, &0u64.to_le_bytes());
        let child = h.call(nr::FORK, &[]) as Pid;
        assert_eq!(h.call(nr::RT_SIGPROCMASK, &[2, SCRATCH, 0, 8]), 0);
        assert_eq!(h.call(nr::WAIT4, &[u64::MAX, 0, 1, 0]), 0);
        h.regs().rip = 0x40_2002;
        assert_eq!(h.step(nr::RT_SIGSUSPEND, &[SCRATCH + 8, 8]), Step::Block);
        // The child ends: SIGCHLD wakes the parent, whose sigsuspend runs the handler.
        h.pid = child;
        assert_eq!(h.step(nr::EXIT_GROUP, &[3]), Step::Ended);
        h.pid = 1;
        assert_eq!(h.k.process(1).unwrap().state, State::Runnable);
        assert_eq!(h.regs().rip, 0x40_2000, "backed over the syscall instruction");
        h.regs().rip += 2; // which runs again
        assert_eq!(h.step(nr::RT_SIGSUSPEND, &[SCRATCH + 8, 8]), Step::Resumed);
        assert_eq!(h.regs().rip, HANDLER);
        let si = h.regs().gpr[RSI];
        let info = h.peek(si, 28);
        assert_eq!((info[0], info[8], info[16], info[24]), (17, 1, child as u8, 3), "SIGCHLD, CLD_EXITED, pid, status");
        h.regs().gpr[RSP] += 8;
        assert_eq!(h.step(nr::RT_SIGRETURN, &[]), Step::Resumed);
        assert_eq!((h.regs().gpr[RAX] as i64, h.regs().rip), (Errno::EINTR.ret(), 0x40_2002));
        assert_eq!(h.k.process(1).unwrap().sig.blocked, u64::MAX & !(1 << 8 | 1 << 18), "the mask before the call");
        assert_eq!(h.call(nr::WAIT4, &[u64::MAX, 0, 1, 0]), child as i64);
    }

    #[test]
    fn exec_keeps_ignored_signals_and_resets_handlers() {
        let mut h = boot();
        h.handle(10, HANDLER, SA_RESTORER, 0);
        h.poke(SCRATCH + 0x100, &crate::sandbox::signal::SIG_IGN.to_le_bytes());
        assert_eq!(h.call(nr::RT_SIGACTION, &[13, SCRATCH + 0x100, 0, 8]), 0);
        h.k.exec(1, b"/nix/store/0000-busybox/busybox", vec![b"sh".to_vec()], vec![]).unwrap();
        let s = &h.k.process(1).unwrap().sig;
        assert!(s.ignores(13) && !s.handles(10));
        // SIGKILL and SIGSTOP cannot be caught.
        h.k.map(1, SCRATCH, 0x10000, Prot { read: true, write: true, exec: false }).unwrap();
        let a = Action { handler: HANDLER, flags: SA_RESTORER, restorer: RESTORER, mask: 0 };
        h.poke(SCRATCH, &a.to_bytes());
        assert_eq!(h.call(nr::RT_SIGACTION, &[9, SCRATCH, 0, 8]), Errno::EINVAL.ret());
        assert_eq!(h.call(nr::RT_SIGACTION, &[19, SCRATCH, 0, 8]), Errno::EINVAL.ret());
    }

    #[test]
    fn faults_reach_handlers_and_bad_frames_end_the_process() {
        // A SIGSEGV handler sees the address; a second fault inside it (SIGSEGV now blocked)
        // ends the process.
        let mut h = boot();
        h.handle(11, HANDLER, SA_RESTORER, 0);
        h.regs().gpr[RSP] = SCRATCH + 0x8000;
        h.k.fault(1, Exception { vector: 14, error: 4, address: 0x1234 });
        assert_eq!(h.regs().rip, HANDLER);
        let si = h.regs().gpr[RSI];
        assert_eq!(h.peek(si + 16, 8), 0x1234u64.to_le_bytes());
        h.k.fault(1, Exception { vector: 14, error: 4, address: 0x1234 });
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGSEGV)));
        // Handlers and frames that would make the agent's return to ring 3 fault instead:
        // a non-canonical handler, no restorer, a non-canonical or kernel return address.
        for (handler, flags) in [(0x8000_0000_0000_0000, SA_RESTORER), (0xffff_8000_0000_0000, SA_RESTORER), (HANDLER, 0)] {
            let mut h = boot();
            h.handle(10, handler, flags, 0);
            h.regs().gpr[RSP] = SCRATCH + 0x8000;
            assert_eq!(h.call(nr::KILL, &[1, 10]), 0);
            assert_eq!(h.k.schedule(), None, "{handler:#x} {flags:#x}");
            assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGSEGV)));
        }
        for rip in [0x8000_0000_0000_0000u64, 0xffff_ffff_8000_0000] {
            let mut h = boot();
            h.handle(10, HANDLER, SA_RESTORER, 0);
            h.regs().gpr[RSP] = SCRATCH + 0x8000;
            assert_eq!(h.call(nr::KILL, &[1, 10]), 0);
            h.k.schedule();
            let frame = h.regs().gpr[RSP];
            h.poke(frame + 48 + 8 * 16, &rip.to_le_bytes());
            h.regs().gpr[RSP] += 8;
            assert_eq!(h.step(nr::RT_SIGRETURN, &[]), Step::Ended);
            assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGSEGV)));
        }
        // Reserved MXCSR bits from a frame are dropped (fxrstor would fault in the agent).
        let mut h = boot();
        h.handle(10, HANDLER, SA_RESTORER, 0);
        h.regs().gpr[RSP] = SCRATCH + 0x8000;
        assert_eq!(h.call(nr::KILL, &[1, 10]), 0);
        h.k.schedule();
        let frame = h.regs().gpr[RSP];
        let fp = h.frame_word(frame, 23);
        h.poke(fp + 24, &u32::MAX.to_le_bytes());
        h.regs().gpr[RSP] += 8;
        assert_eq!(h.step(nr::RT_SIGRETURN, &[]), Step::Resumed);
        assert_eq!(u32::from_le_bytes(h.regs().fpu.0[24..28].try_into().unwrap()), 0xffbf);
    }

    #[test]
    fn the_log_limit_ends_the_build() {
        // 1 MiB of log (the harness's limit): a write that crosses it is cut there and the
        // build ends with SIGXFSZ, so a builder cannot fill the channel.
        let mut h = boot();
        h.poke(SCRATCH, &[b'x'; 0x8000]);
        for _ in 0..31 {
            assert_eq!(h.call(nr::WRITE, &[1, SCRATCH, 0x8000]), 0x8000);
        }
        assert_eq!(h.call(nr::WRITE, &[2, SCRATCH, 0x4000]), 0x4000);
        let p = h.k.process(1).unwrap();
        p.regs.gpr[RAX] = nr::WRITE;
        p.regs.gpr[RDI] = 1;
        p.regs.gpr[RSI] = SCRATCH;
        p.regs.gpr[RDX] = 0x8000;
        assert_eq!(h.k.syscall(1), Step::Ended);
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGXFSZ)));
        let logged: usize = h.k.output.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(logged, 1 << 20);
        assert!(h.k.notes.iter().any(|n| n.contains("log limit")));
    }

    #[test]
    fn page_tables_count_against_the_memory_limit() {
        // One page every GiB needs a page table, a page directory and (every 512 GiB) a PDPT
        // besides the page: the limit allows about a quarter as many such mappings.
        let limit = 16 << 20;
        let mut h = boot_with(Limits { memory: limit, processes: 8, cpu_ticks: 1000, log_bytes: 1 << 20 });
        let before = h.k.memory_used();
        let mut n = 0u64;
        loop {
            let va = 0x100_0000_0000 + (n << 30);
            let r = h.call(nr::MMAP, &[va, 0x1000, 3, 0x32, u64::MAX, 0]);
            if r < 0 {
                assert_eq!(r, Errno::ENOMEM.ret());
                break;
            }
            n += 1;
        }
        let per = (limit - before) / n;
        assert!(per >= 3 * PAGE, "{n} scattered pages fit: {per} bytes each");
        assert!(h.k.memory_used() <= limit);
    }

    #[test]
    fn pipes_fork_wait_exit() {
        let mut h = boot();
        assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
        let fds = h.peek(SCRATCH, 8);
        let (r, w) = (u32::from_le_bytes(fds[..4].try_into().unwrap()) as u64, u32::from_le_bytes(fds[4..].try_into().unwrap()) as u64);
        assert_eq!((r, w), (3, 4));
        // Reading an empty pipe with a writer blocks.
        h.k.process(1).unwrap().regs.gpr[RAX] = nr::READ;
        let child = h.call(nr::FORK, &[]) as Pid;
        assert_eq!(child, 2);
        assert_eq!(h.k.process(2).unwrap().regs.gpr[RAX], 0);
        // The child writes and exits 7.
        let parent = h.pid;
        h.pid = child;
        h.poke(SCRATCH + 0x100, b"ping");
        assert_eq!(h.call(nr::WRITE, &[w, SCRATCH + 0x100, 4]), 4);
        assert_eq!(h.call(nr::GETPPID, &[]), 1);
        assert_eq!(h.call(nr::KILL, &[1, 9]), Errno::EPERM.ret(), "a child cannot kill its parent");
        h.k.process(child).unwrap().regs.gpr[RAX] = nr::EXIT_GROUP;
        h.k.process(child).unwrap().regs.gpr[RDI] = 7;
        assert_eq!(h.k.syscall(child), Step::Ended);
        h.pid = parent;
        assert_eq!(h.call(nr::READ, &[r, SCRATCH + 0x200, 100]), 4);
        assert_eq!(h.peek(SCRATCH + 0x200, 4), b"ping");
        assert_eq!(h.call(nr::WAIT4, &[u64::MAX, SCRATCH + 0x300, 0, 0]), 2);
        assert_eq!(h.peek(SCRATCH + 0x300, 4), (7u32 << 8).to_le_bytes());
        assert_eq!(h.call(nr::WAIT4, &[u64::MAX, 0, 0, 0]), Errno::ECHILD.ret());
        // Close the writer: read sees end of file.
        assert_eq!(h.call(nr::CLOSE, &[w]), 0);
        assert_eq!(h.call(nr::READ, &[r, SCRATCH + 0x200, 100]), 0);
        // Write with no reader: SIGPIPE ends the process unless ignored.
        assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
        let fds = h.peek(SCRATCH, 8);
        let (r2, w2) = (u32::from_le_bytes(fds[..4].try_into().unwrap()) as u64, u32::from_le_bytes(fds[4..].try_into().unwrap()) as u64);
        assert_eq!(h.call(nr::CLOSE, &[r2]), 0);
        h.poke(SCRATCH + 0x400, &1u64.to_le_bytes());
        assert_eq!(h.call(nr::RT_SIGACTION, &[13, SCRATCH + 0x400, 0, 8]), 0);
        assert_eq!(h.call(nr::WRITE, &[w2, SCRATCH, 1]), Errno::EPIPE.ret());
        h.poke(SCRATCH + 0x400, &0u64.to_le_bytes());
        assert_eq!(h.call(nr::RT_SIGACTION, &[13, SCRATCH + 0x400, 0, 8]), 0);
        // EPIPE, and SIGPIPE's default action ends the writer before it runs again.
        assert_eq!(h.step(nr::WRITE, &[w2, SCRATCH, 1]), Step::Ret(Errno::EPIPE.ret()));
        assert_eq!(h.k.schedule(), None);
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGPIPE)));
    }

    /// vfork (and clone(CLONE_VM|CLONE_VFORK)): the child runs in the parent's memory, which
    /// the parent gets back — with the child's writes — when the child exits or execs.
    #[test]
    fn a_vfork_child_borrows_the_parents_memory() {
        let mut h = boot();
        h.poke(SCRATCH, b"parent");
        let parent = h.pid;
        let regions = h.k.process(parent).unwrap().regions.total();
        assert_eq!(h.step(nr::VFORK, &[]), Step::Resumed);
        let child = h.k.process(parent).unwrap().regs.gpr[RAX] as Pid;
        assert_eq!(h.k.process(parent).unwrap().state, State::VforkWait(child));
        assert_eq!(h.k.process(parent).unwrap().regions.total(), 0, "the parent holds an empty space meanwhile");
        h.pid = child;
        assert_eq!(h.peek(SCRATCH, 6), b"parent");
        h.poke(SCRATCH, b"child!");
        h.k.process(child).unwrap().regs.gpr[RAX] = nr::EXIT_GROUP;
        assert_eq!(h.k.syscall(child), Step::Ended);
        h.pid = parent;
        assert_eq!(h.k.process(parent).unwrap().state, State::Runnable);
        assert_eq!(h.k.process(parent).unwrap().regions.total(), regions);
        assert_eq!(h.peek(SCRATCH, 6), b"child!", "the child's write is the parent's");
        // posix_spawn's form: the child execs; the parent gets its memory back at that point.
        const CLONE_VM_VFORK: u64 = 0x100 | 0x4000 | 17;
        assert_eq!(h.step(nr::CLONE, &[CLONE_VM_VFORK, SCRATCH + 0x8000, 0, 0]), Step::Resumed);
        let child = h.k.process(parent).unwrap().regs.gpr[RAX] as Pid;
        h.pid = child;
        assert_eq!(h.k.process(child).unwrap().regs.gpr[RSP], SCRATCH + 0x8000, "on the stack it was given");
        h.poke(SCRATCH + 0x10, b"err=0");
        let path = h.s(SCRATCH + 0x100, "/nix/store/0000-busybox/busybox");
        assert_eq!(h.step(nr::EXECVE, &[path, 0, 0]), Step::Resumed);
        h.pid = parent;
        assert_eq!(h.k.process(parent).unwrap().state, State::Runnable);
        assert_eq!(h.peek(SCRATCH + 0x10, 5), b"err=0");
        assert!(h.k.process(child).unwrap().regions.total() > 0, "the child has its own image now");
    }

    #[test]
    fn pipe_buffers_count_against_the_memory_limit() {
        // Found by the abuse suite: 64 processes each filling 500 pipes exhausted the agent's
        // heap. A pipe's 64 KiB buffer now exists only while it holds data, and is charged.
        let limit = 16 << 20;
        let mut h = boot_with(Limits { memory: limit, processes: 8, cpu_ticks: 1000, log_bytes: 1 << 20 });
        let before = h.k.memory_used();
        let mut ends = vec![];
        let err = loop {
            assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
            let fds = h.peek(SCRATCH, 8);
            let (r, w) = (u32::from_le_bytes(fds[..4].try_into().unwrap()) as u64, u32::from_le_bytes(fds[4..].try_into().unwrap()) as u64);
            let n = h.call(nr::WRITE, &[w, SCRATCH, 1]);
            if n < 0 {
                break n;
            }
            ends.push((r, w));
        };
        assert_eq!(err, Errno::ENOMEM.ret());
        assert_eq!(ends.len() as u64, (limit - before) / PIPE_CAP as u64);
        assert!(h.k.memory_used() <= limit);
        // Draining a pipe frees its buffer; closing a full one does too.
        let (r, w) = ends[0];
        assert_eq!(h.call(nr::READ, &[r, SCRATCH, 16]), 1);
        assert_eq!(h.call(nr::WRITE, &[w, SCRATCH, 1]), 1, "room again");
        let (r1, w1) = ends[1];
        assert_eq!(h.call(nr::CLOSE, &[r1]), 0);
        assert_eq!(h.call(nr::CLOSE, &[w1]), 0);
        assert_eq!(h.k.memory_used(), before + (ends.len() as u64 - 1) * PIPE_CAP as u64);
    }

    #[test]
    fn a_writer_that_exits_wakes_a_blocked_reader() {
        // Found by the busybox suite (`find . | sort` deadlocked now and then): the last
        // writer's exit closes the pipe, and a reader already blocked on it must see EOF.
        let mut h = boot();
        assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
        let child = h.call(nr::FORK, &[]) as Pid;
        assert_eq!(h.call(nr::CLOSE, &[4]), 0, "the parent keeps only the read end");
        assert_eq!(h.step(nr::READ, &[3, SCRATCH, 1]), Step::Block);
        assert_eq!(h.k.process(1).unwrap().state, State::Blocked);
        h.pid = child;
        assert_eq!(h.step(nr::EXIT_GROUP, &[0]), Step::Ended);
        assert_eq!(h.k.process(1).unwrap().state, State::Runnable);
        h.pid = 1;
        assert_eq!(h.call(nr::READ, &[3, SCRATCH, 1]), 0, "end of file");
        // The same when the last writer goes by close-on-exec.
        let mut h = boot();
        assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0o2000000]), 0);
        let child = h.call(nr::FORK, &[]) as Pid;
        assert_eq!(h.call(nr::CLOSE, &[4]), 0);
        assert_eq!(h.step(nr::READ, &[3, SCRATCH, 1]), Step::Block);
        h.k.exec(child, b"/nix/store/0000-busybox/busybox", vec![b"sh".to_vec()], vec![]).unwrap();
        assert_eq!(h.k.process(1).unwrap().state, State::Runnable);
    }

    #[test]
    fn every_limit_that_refuses_is_recorded_and_named() {
        let fresh = || boot_with(Limits { memory: 160 << 20, processes: 4, cpu_ticks: 100, log_bytes: 100 << 10 });
        let noted = |h: &H, words: &str| h.k.notes.iter().filter(|n| n.starts_with("sandbox: limit reached: ") && n.contains(words)).count();
        // Processes: the fourth fork is refused.
        let mut h = fresh();
        while h.call(nr::FORK, &[]) >= 0 {}
        assert_eq!(h.call(nr::FORK, &[]), Errno::EAGAIN.ret());
        assert_eq!(h.k.limits_reached.iter().copied().collect::<Vec<_>>(), vec![Limit::Processes]);
        assert_eq!(noted(&h, "processes (4 alive at once)"), 1, "noted once: {:?}", h.k.notes);
        // Memory: a mapping past the limit.
        let mut h = fresh();
        assert_eq!(h.call(nr::MMAP, &[0, 161 << 20, 3, 0x22, u64::MAX, 0]), Errno::ENOMEM.ret());
        assert_eq!(noted(&h, "memory (167772160 bytes across all processes)"), 1, "{:?}", h.k.notes);
        // The file system: a file grown past its 64 MiB.
        let mut h = fresh();
        let path = h.s(SCRATCH, "/build/big");
        let fd = h.call(nr::OPEN, &[path, u64::from(O_CREAT | O_WRONLY), 0o644]);
        assert!(fd >= 0);
        assert_eq!(h.call(nr::FTRUNCATE, &[fd as u64, 100 << 20]), Errno::ENOSPC.ret());
        assert_eq!(noted(&h, "the sandbox's file system is full (67108864 bytes of files or 10000 inodes)"), 1, "{:?}", h.k.notes);
        // The log: past 100 KiB of stdout the build ends with SIGXFSZ.
        let mut h = fresh();
        assert_eq!(h.step(nr::WRITE, &[1, SCRATCH, 0x10000]), Step::Ret(0x10000));
        assert_eq!(h.step(nr::WRITE, &[1, SCRATCH, 0x10000]), Step::Ended);
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGXFSZ)));
        assert!(h.k.limits_reached.contains(&Limit::Log));
        // CPU time: charged past 100 ticks.
        let mut h = fresh();
        assert!(h.k.charge(101));
        assert!(h.k.limits_reached.contains(&Limit::CpuTime));
        assert_eq!(h.k.limits_reached_text().unwrap(), "CPU time (100 ticks of 10 ms)");
        // None reached: nothing to say.
        assert_eq!(fresh().k.limits_reached_text(), None);
    }

    #[test]
    fn fork_bomb_hits_the_process_limit() {
        let mut h = boot();
        let mut n = 0;
        loop {
            let r = h.call(nr::FORK, &[]);
            if r < 0 {
                assert_eq!(r, Errno::EAGAIN.ret());
                break;
            }
            n += 1;
        }
        assert_eq!(n, 7);
        // The builder's end takes everything with it.
        h.k.process(1).unwrap().regs.gpr[RAX] = nr::EXIT_GROUP;
        h.k.process(1).unwrap().regs.gpr[RDI] = 3;
        assert_eq!(h.k.syscall(1), Step::Ended);
        assert_eq!(h.k.finished(), Some(Status::Exited(3)));
        assert!(h.k.procs.is_empty());
        assert_eq!(h.k.memory_used(), 0);
    }

    #[test]
    fn faults_cpu_limit_and_deadlock_end_the_builder() {
        let mut h = boot();
        h.k.fault(1, Exception { vector: 13, error: 0, address: 0 });
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGSEGV)));
        assert!(h.k.notes.iter().any(|n| n.contains("exception 13")));
        let mut h = boot();
        for _ in 0..1001 {
            h.k.tick();
        }
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGXCPU)));
        // Time the agent spends on the build's behalf counts too.
        let mut h = boot();
        assert!(!h.k.charge(600));
        h.k.tick();
        assert!(h.k.charge(400));
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGXCPU)));
        let mut h = boot();
        assert_eq!(h.call(nr::PIPE2, &[SCRATCH, 0]), 0);
        h.k.process(1).unwrap().regs.gpr[RAX] = nr::READ;
        h.k.process(1).unwrap().regs.gpr[RDI] = 3;
        h.k.process(1).unwrap().regs.gpr[RSI] = SCRATCH;
        h.k.process(1).unwrap().regs.gpr[RDX] = 1;
        assert_eq!(h.k.syscall(1), Step::Block);
        assert_eq!(h.k.finished(), Some(Status::Signaled(sig::SIGKILL)));
    }

    #[test]
    fn dir_ops_and_escapes() {
        let mut h = boot();
        let d = h.s(SCRATCH, "sub");
        assert_eq!(h.call(nr::MKDIRAT, &[AT_FDCWD as u64, d, 0o777]), 0);
        let l = h.s(SCRATCH + 0x100, "sub/up");
        let t = h.s(SCRATCH + 0x200, "../../../../..");
        assert_eq!(h.call(nr::SYMLINKAT, &[t, AT_FDCWD as u64, l]), 0);
        assert_eq!(h.call(nr::CHDIR, &[l]), 0);
        assert_eq!(h.call(nr::GETCWD, &[SCRATCH + 0x300, 100]), 2);
        let p = h.s(SCRATCH + 0x400, "../../../build/sub/up/build/sub");
        assert_eq!(h.call(nr::CHDIR, &[p]), 0);
        assert_eq!(h.call(nr::GETCWD, &[SCRATCH + 0x300, 100]), 11);
        assert_eq!(h.peek(SCRATCH + 0x300, 11), b"/build/sub\0");
        let a = h.s(SCRATCH + 0x500, "a");
        let b = h.s(SCRATCH + 0x600, "b");
        assert_eq!(h.call(nr::SYMLINKAT, &[b, AT_FDCWD as u64, a]), 0);
        assert_eq!(h.call(nr::SYMLINKAT, &[a, AT_FDCWD as u64, b]), 0);
        assert_eq!(h.call(nr::OPENAT, &[AT_FDCWD as u64, a, 0, 0]), Errno::ELOOP.ret());
        assert_eq!(h.call(nr::READLINKAT, &[AT_FDCWD as u64, a, SCRATCH + 0x700, 100]), 1);
        assert_eq!(h.call(nr::RENAMEAT2, &[AT_FDCWD as u64, a, AT_FDCWD as u64, b, 1]), Errno::EEXIST.ret());
        assert_eq!(h.call(nr::RENAMEAT2, &[AT_FDCWD as u64, a, AT_FDCWD as u64, b, 0]), 0);
        // getdents64 lists ., .., b, up
        let dot = h.s(SCRATCH + 0x800, ".");
        let fd = h.call(nr::OPENAT, &[AT_FDCWD as u64, dot, O_DIRECTORY as u64, 0]) as u64;
        let n = h.call(nr::GETDENTS64, &[fd, SCRATCH + 0x1000, 4096]) as usize;
        let buf = h.peek(SCRATCH + 0x1000, n);
        let mut names = vec![];
        let mut o = 0;
        while o < n {
            let rl = u16::from_le_bytes([buf[o + 16], buf[o + 17]]) as usize;
            let nm = &buf[o + 19..o + rl];
            names.push(std::string::String::from_utf8(nm[..nm.iter().position(|&c| c == 0).unwrap()].to_vec()).unwrap());
            o += rl;
        }
        assert_eq!(names, ["." , "..", "b", "up"]);
        assert_eq!(h.call(nr::GETDENTS64, &[fd, SCRATCH + 0x1000, 4096]), 0);
        assert_eq!(h.call(nr::UNLINKAT, &[AT_FDCWD as u64, b, 0]), 0);
        let sub = h.s(SCRATCH, "/build/sub");
        assert_eq!(h.call(nr::UNLINKAT, &[AT_FDCWD as u64, sub, AT_REMOVEDIR]), Errno::ENOTEMPTY.ret());
    }
}
