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
}

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
