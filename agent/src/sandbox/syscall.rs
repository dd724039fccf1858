//! Linux system calls, by number and errno as Linux defines them (x86-64 ABI). This first slice
//! serves what a static program needs to print and exit; anything else returns ENOSYS and is
//! reported once per number, so gaps are visible.
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

pub const ENOSYS: i64 = -38;
pub const EFAULT: i64 = -14;
pub const EBADF: i64 = -9;
pub const EINVAL: i64 = -22;

/// The builder's memory, as the arch layer exposes it: `None` for any byte not mapped for it.
pub trait Memory {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Option<()>;
    /// Maps zeroed pages over [addr, addr + len) (page aligned), replacing what was there.
    fn map(&mut self, addr: u64, len: u64, prot: Prot) -> bool;
    /// Unmaps [addr, addr + len) (page aligned); unmapped pages are ignored.
    fn unmap(&mut self, addr: u64, len: u64);
    /// Changes the protection of the mapped pages in [addr, addr + len).
    fn protect(&mut self, addr: u64, len: u64, prot: Prot);
}

/// Page protection (PROT_READ is implied: x86-64 pages are always readable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    fn from_linux(p: u64) -> Prot {
        Prot { write: p & 2 != 0, exec: p & 4 != 0 }
    }
}

pub const PAGE: u64 = 4096;
pub const ENOMEM: i64 = -12;
pub const ENOTTY: i64 = -25;
pub const ENOENT: i64 = -2;
pub const ENODEV: i64 = -19;

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// Where anonymous mappings go (top-down would match Linux more closely; bottom-up is simpler
/// and deterministic).
pub const MMAP_BASE: u64 = 0x7000_0000_0000;
pub const MMAP_TOP: u64 = 0x7F00_0000_0000;

/// What a system call asks of the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return this value in rax and continue.
    Return(i64),
    /// The process exits with this status.
    Exit(i32),
    /// Set the FS base (arch_prctl ARCH_SET_FS), return 0.
    SetFsBase(u64),
}

/// The process state the first slice keeps.
#[derive(Default)]
pub struct Process {
    /// The program break: start (end of the highest segment) and current value.
    pub brk_start: u64,
    pub brk: u64,
    /// Next address for anonymous mappings.
    pub mmap_next: u64,
    /// Bytes of memory the program has mapped, against `max_memory`.
    pub mapped: u64,
    pub max_memory: u64,
    /// Deterministic bytes for getrandom (a counter-mode stream: reproducible builds).
    pub random_counter: u64,
    /// Bytes written to stdout/stderr, drained by the caller into Output frames.
    pub output: Vec<(u8, Vec<u8>)>,
    pub unimplemented: BTreeSet<u64>,
    /// Total bytes written, against `max_output`.
    pub written: u64,
    pub max_output: u64,
}

/// Largest single write copied out of the builder at once.
const MAX_IO: usize = 1 << 20;

impl Process {
    fn write_fd(&mut self, mem: &dyn Memory, fd: u64, addr: u64, len: u64) -> i64 {
        if fd != 1 && fd != 2 {
            return EBADF;
        }
        let len = (len as usize).min(MAX_IO);
        match mem.read(addr, len) {
            Some(bytes) => {
                self.written += bytes.len() as u64;
                self.output.push((fd as u8, bytes));
                len as i64
            }
            None => EFAULT,
        }
    }

    /// Serves one system call.
    pub fn syscall(&mut self, mem: &mut dyn Memory, nr: u64, a: [u64; 6]) -> Outcome {
        Outcome::Return(match nr {
            1 => self.write_fd(mem, a[0], a[1], a[2]),
            20 => {
                // writev(fd, iov, iovcnt)
                if a[2] > 1024 {
                    return Outcome::Return(EINVAL);
                }
                let Some(iov) = mem.read(a[1], a[2] as usize * 16) else { return Outcome::Return(EFAULT) };
                let mut total = 0i64;
                for v in iov.chunks(16) {
                    let base = u64::from_le_bytes(v[..8].try_into().unwrap());
                    let len = u64::from_le_bytes(v[8..].try_into().unwrap());
                    let r = self.write_fd(mem, a[0], base, len);
                    if r < 0 {
                        return Outcome::Return(if total > 0 { total } else { r });
                    }
                    total += r;
                }
                total
            }
            60 | 231 => return Outcome::Exit(a[0] as i32),
            12 => self.brk(mem, a[0]),
            9 => self.mmap(mem, a),
            11 => {
                // munmap
                if a[0] % PAGE != 0 || a[1] == 0 {
                    EINVAL
                } else {
                    match page_up(a[1]) {
                        Some(len) => {
                            mem.unmap(a[0], len);
                            0
                        }
                        None => EINVAL,
                    }
                }
            }
            10 => {
                // mprotect
                if a[0] % PAGE != 0 {
                    EINVAL
                } else {
                    match page_up(a[1]) {
                        Some(len) => {
                            mem.protect(a[0], len, Prot::from_linux(a[2]));
                            0
                        }
                        None => EINVAL,
                    }
                }
            }
            16 => ENOTTY,                    // ioctl: no terminals in a build
            89 | 267 => ENOENT,              // readlink(at): no /proc
            273 => 0,                        // set_robust_list
            334 => ENOSYS,                   // rseq: glibc copes
            318 => self.getrandom(mem, a[0], a[1]),
            63 => self.uname(mem, a[0]),
            302 => {
                // prlimit64(0, resource, NULL, old): report "unlimited" for what is asked
                if a[3] != 0 {
                    let inf = u64::MAX.to_le_bytes();
                    let mut v = Vec::from(inf);
                    v.extend_from_slice(&inf);
                    if mem.write(a[3], &v).is_none() {
                        return Outcome::Return(EFAULT);
                    }
                }
                0
            }
            13 | 14 => 0,                    // rt_sigaction, rt_sigprocmask: accepted, no signals yet
            158 if a[0] == 0x1002 => return Outcome::SetFsBase(a[1]), // arch_prctl(ARCH_SET_FS)
            39 | 186 => 1,                                               // getpid, gettid
            110 => 0,                                                    // getppid
            102 | 107 => 1000,                                           // getuid, geteuid
            104 | 108 => 100,                                            // getgid, getegid
            218 => 1,                                                    // set_tid_address
            _ => {
                self.unimplemented.insert(nr);
                ENOSYS
            }
        })
    }
}

impl Process {
    fn brk(&mut self, mem: &mut dyn Memory, want: u64) -> i64 {
        if want < self.brk_start || want > MMAP_BASE {
            return self.brk as i64;
        }
        let (Some(old_end), Some(new_end)) = (page_up(self.brk), page_up(want)) else { return self.brk as i64 };
        if new_end > old_end {
            let grow = new_end - old_end;
            if self.mapped + grow > self.max_memory || !mem.map(old_end, grow, Prot { write: true, exec: false }) {
                return self.brk as i64;
            }
            self.mapped += grow;
        }
        self.brk = want;
        want as i64
    }

    fn mmap(&mut self, mem: &mut dyn Memory, a: [u64; 6]) -> i64 {
        const MAP_FIXED: u64 = 0x10;
        const MAP_ANONYMOUS: u64 = 0x20;
        let (addr, len, prot, flags) = (a[0], a[1], a[2], a[3]);
        if flags & MAP_ANONYMOUS == 0 {
            return ENODEV; // no file mappings yet
        }
        let Some(len) = page_up(len).filter(|l| *l > 0) else { return EINVAL };
        if self.mapped + len > self.max_memory {
            return ENOMEM;
        }
        let at = if flags & MAP_FIXED != 0 {
            if addr % PAGE != 0 || addr.checked_add(len).is_none_or(|e| e > MMAP_TOP) || addr < 0x1_0000 {
                return EINVAL;
            }
            addr
        } else {
            let at = self.mmap_next.max(MMAP_BASE);
            match at.checked_add(len) {
                Some(end) if end <= MMAP_TOP => self.mmap_next = end,
                _ => return ENOMEM,
            }
            at
        };
        if !mem.map(at, len, Prot::from_linux(prot)) {
            return ENOMEM;
        }
        self.mapped += len;
        at as i64
    }

    fn getrandom(&mut self, mem: &mut dyn Memory, buf: u64, len: u64) -> i64 {
        use sha2::{Digest, Sha256};
        let len = len.min(1 << 16) as usize;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let block = Sha256::digest([b"nix-attested-build getrandom".as_slice(), &self.random_counter.to_le_bytes()].concat());
            self.random_counter += 1;
            out.extend_from_slice(&block[..(len - out.len()).min(32)]);
        }
        match mem.write(buf, &out) {
            Some(()) => len as i64,
            None => EFAULT,
        }
    }

    fn uname(&mut self, mem: &mut dyn Memory, buf: u64) -> i64 {
        // struct utsname: six 65-byte fields. What Nix's sandbox shows, with a fixed release.
        let mut u = [0u8; 65 * 6];
        for (i, v) in ["Linux", "localhost", "6.1.0", "#1 SMP", "x86_64", "(none)"].iter().enumerate() {
            u[65 * i..65 * i + v.len()].copy_from_slice(v.as_bytes());
        }
        match mem.write(buf, &u) {
            Some(()) => 0,
            None => EFAULT,
        }
    }
}

/// The status a fault ends the builder with: 128 + the signal Linux would deliver.
pub fn fault_status(vector: u8) -> i32 {
    128 + match vector {
        0 | 16 | 19 => 8, // SIGFPE
        6 => 4,           // SIGILL
        3 => 5,           // SIGTRAP
        _ => 11,          // SIGSEGV (#GP, #PF, #SS, …)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    struct Mem(Vec<u8>);
    impl Memory for Mem {
        fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
            self.0.get(addr as usize..(addr as usize).checked_add(len)?).map(|s| s.to_vec())
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> Option<()> {
            self.0.get_mut(addr as usize..addr as usize + data.len())?.copy_from_slice(data);
            Some(())
        }
        fn map(&mut self, _: u64, _: u64, _: Prot) -> bool {
            true
        }
        fn unmap(&mut self, _: u64, _: u64) {}
        fn protect(&mut self, _: u64, _: u64, _: Prot) {}
    }

    #[test]
    fn brk_and_mmap_account_memory() {
        let mut m = Mem(vec![0; 64]);
        let mut p = Process { brk_start: 0x60_0000, brk: 0x60_0000, max_memory: 1 << 20, ..Default::default() };
        assert_eq!(p.syscall(&mut m, 12, [0; 6]), Outcome::Return(0x60_0000));
        assert_eq!(p.syscall(&mut m, 12, [0x60_2000, 0, 0, 0, 0, 0]), Outcome::Return(0x60_2000));
        assert_eq!(p.mapped, 0x2000);
        let Outcome::Return(a) = p.syscall(&mut m, 9, [0, 0x3000, 3, 0x22, u64::MAX, 0]) else { panic!() };
        assert_eq!(a as u64, MMAP_BASE);
        assert_eq!(p.syscall(&mut m, 9, [0, 0x10_0000, 3, 0x22, u64::MAX, 0]), Outcome::Return(ENOMEM));
        assert_eq!(p.syscall(&mut m, 9, [0, 0x1000, 3, 0x02, 3, 0]), Outcome::Return(ENODEV));
        assert_eq!(p.syscall(&mut m, 12, [0x1000, 0, 0, 0, 0, 0]), Outcome::Return(0x60_2000), "below the start: unchanged");
    }

    #[test]
    fn write_writev_exit_and_gaps() {
        let mut m = Mem(b"hello world".to_vec());
        let mut p = Process::default();
        assert_eq!(p.syscall(&mut m, 1, [1, 0, 5, 0, 0, 0]), Outcome::Return(5));
        assert_eq!(p.syscall(&mut m, 1, [2, 6, 500, 0, 0, 0]), Outcome::Return(EFAULT));
        assert_eq!(p.syscall(&mut m, 1, [7, 0, 1, 0, 0, 0]), Outcome::Return(EBADF));
        assert_eq!(p.output, vec![(1, b"hello".to_vec())]);
        assert_eq!(p.syscall(&mut m, 999, [0; 6]), Outcome::Return(ENOSYS));
        assert!(p.unimplemented.contains(&999));
        assert_eq!(p.syscall(&mut m, 231, [3, 0, 0, 0, 0, 0]), Outcome::Exit(3));
        let mut iov = Vec::new();
        iov.extend_from_slice(&0u64.to_le_bytes());
        iov.extend_from_slice(&5u64.to_le_bytes());
        let mut m2 = Mem([b"hello".as_slice(), &iov].concat());
        assert_eq!(p.syscall(&mut m2, 20, [1, 5, 1, 0, 0, 0]), Outcome::Return(5));
        assert_eq!(fault_status(14), 139);
    }
}
