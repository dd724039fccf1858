//! Linux system calls, by number and errno as Linux defines them (x86-64 ABI). This first slice
//! serves what a static program needs to print and exit; anything else returns ENOSYS and is
//! reported once per number, so gaps are visible.
use super::fs::{self, Fs, Ino, Kind};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

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

/// An open file description (shared by duplicated descriptors, as in Linux).
#[derive(Debug)]
pub enum Open {
    /// The builder's stdout (1) or stderr (2): streamed to the loader.
    Out(u8),
    Node { ino: Ino, pos: u64, append: bool, read: bool, write: bool },
}

pub type Fd = Rc<RefCell<Open>>;

/// The process state.
pub struct Process {
    pub fs: Fs,
    pub cwd: Ino,
    pub fds: BTreeMap<i32, Fd>,
    pub umask: u32,
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

impl Process {
    /// A process in `fs`, in `/build`, with stdin on /dev/null and stdout/stderr streamed.
    pub fn new(fs: Fs) -> Process {
        let cwd = fs.resolve(fs::ROOT, b"/build", true).unwrap_or(fs::ROOT);
        let null = fs.resolve(fs::ROOT, b"/dev/null", true).unwrap_or(fs::ROOT);
        let mut fds = BTreeMap::new();
        fds.insert(0, Rc::new(RefCell::new(Open::Node { ino: null, pos: 0, append: false, read: true, write: false })));
        fds.insert(1, Rc::new(RefCell::new(Open::Out(1))));
        fds.insert(2, Rc::new(RefCell::new(Open::Out(2))));
        Process {
            fs,
            cwd,
            fds,
            umask: 0o022,
            brk_start: 0,
            brk: 0,
            mmap_next: 0,
            mapped: 0,
            max_memory: 1 << 30,
            random_counter: 0,
            output: Vec::new(),
            unimplemented: BTreeSet::new(),
            written: 0,
            max_output: 1 << 30,
        }
    }
}

/// Largest single write copied out of the builder at once.
const MAX_IO: usize = 1 << 20;

impl Process {
    fn write_fd(&mut self, mem: &dyn Memory, fd: u64, addr: u64, len: u64) -> i64 {
        let Some(f) = self.fds.get(&(fd as i32)).cloned() else { return EBADF };
        let len = (len as usize).min(MAX_IO);
        let Some(bytes) = mem.read(addr, len) else { return EFAULT };
        let mut o = f.borrow_mut();
        match &mut *o {
            Open::Out(n) => {
                if self.written + bytes.len() as u64 > self.max_output {
                    return -(fs::errno::ENOSPC);
                }
                self.written += bytes.len() as u64;
                self.output.push((*n, bytes));
                len as i64
            }
            Open::Node { ino, pos, append, write, .. } => {
                if !*write {
                    return EBADF;
                }
                if *append {
                    *pos = self.fs.size(*ino).unwrap_or(*pos);
                }
                match self.fs.write_at(*ino, *pos, &bytes) {
                    Ok(n) => {
                        *pos += n as u64;
                        n as i64
                    }
                    Err(e) => -e,
                }
            }
        }
    }

    fn read_fd(&mut self, mem: &mut dyn Memory, fd: u64, addr: u64, len: u64, at: Option<u64>) -> i64 {
        let Some(f) = self.fds.get(&(fd as i32)).cloned() else { return EBADF };
        let mut o = f.borrow_mut();
        let Open::Node { ino, pos, read: true, .. } = &mut *o else { return EBADF };
        let data = match self.fs.read_at(*ino, at.unwrap_or(*pos), (len as usize).min(MAX_IO)) {
            Ok(d) => d,
            Err(e) => return -e,
        };
        if mem.write(addr, &data).is_none() {
            return EFAULT;
        }
        if at.is_none() {
            *pos += data.len() as u64;
        }
        data.len() as i64
    }

    /// readv/writev: the iovec array, then each buffer in turn; like Linux, a short transfer
    /// ends the call, and an error after some bytes returns the bytes.
    fn vectored(&mut self, mem: &mut dyn Memory, fd: u64, iov: u64, count: u64, write: bool) -> i64 {
        if count > 1024 {
            return EINVAL;
        }
        let Some(iov) = mem.read(iov, count as usize * 16) else { return EFAULT };
        let mut total = 0i64;
        for v in iov.chunks(16) {
            let base = u64::from_le_bytes(v[..8].try_into().unwrap());
            let len = u64::from_le_bytes(v[8..].try_into().unwrap());
            let r = if write { self.write_fd(mem, fd, base, len) } else { self.read_fd(mem, fd, base, len, None) };
            if r < 0 {
                return if total > 0 { total } else { r };
            }
            total += r;
            if (r as u64) < len {
                break;
            }
        }
        total
    }

    /// A NUL-terminated path from the builder's memory, read a page piece at a time.
    fn path(mem: &dyn Memory, addr: u64) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        let mut a = addr;
        loop {
            let n = (PAGE - (a % PAGE)) as usize;
            let chunk = mem.read(a, n).ok_or(EFAULT)?;
            if let Some(end) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return if out.len() > 4096 { Err(-(fs::errno::ENAMETOOLONG)) } else { Ok(out) };
            }
            out.extend_from_slice(&chunk);
            if out.len() > 4096 {
                return Err(-(fs::errno::ENAMETOOLONG));
            }
            a += n as u64;
        }
    }

    /// The directory a `*at` call is relative to.
    fn dir_of(&self, dirfd: u64) -> Result<Ino, i64> {
        if dirfd as i32 == -100 {
            return Ok(self.cwd);
        }
        match self.fds.get(&(dirfd as i32)).map(|f| match &*f.borrow() {
            Open::Node { ino, .. } => Some(*ino),
            Open::Out(_) => None,
        }) {
            Some(Some(i)) => Ok(i),
            _ => Err(EBADF),
        }
    }

    fn lowest_free_fd(&self, from: i32) -> i32 {
        let mut n = from;
        while self.fds.contains_key(&n) {
            n += 1;
        }
        n
    }

    fn openat(&mut self, mem: &dyn Memory, dirfd: u64, path: u64, flags: u64, mode: u64) -> i64 {
        const O_ACCMODE: u64 = 3;
        const O_CREAT: u64 = 0x40;
        const O_EXCL: u64 = 0x80;
        const O_TRUNC: u64 = 0x200;
        const O_APPEND: u64 = 0x400;
        const O_DIRECTORY: u64 = 0x1_0000;
        const O_NOFOLLOW: u64 = 0x2_0000;
        let p = match Self::path(mem, path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let base = match self.dir_of(dirfd) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let (read, write) = match flags & O_ACCMODE {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let ino = match self.fs.resolve(base, &p, flags & O_NOFOLLOW == 0) {
            Ok(_) if flags & O_CREAT != 0 && flags & O_EXCL != 0 => return -(fs::errno::EEXIST),
            Ok(i) => i,
            Err(e) if e == fs::errno::ENOENT && flags & O_CREAT != 0 => {
                match self.fs.create(base, &p, Kind::File(Vec::new()), mode as u32 & !self.umask) {
                    Ok(i) => i,
                    Err(e) => return -e,
                }
            }
            Err(e) => return -e,
        };
        let is_dir = matches!(self.fs.node(ino).map(|n| &n.kind), Some(Kind::Dir(_)));
        if flags & O_DIRECTORY != 0 && !is_dir {
            return -(fs::errno::ENOTDIR);
        }
        if is_dir && write {
            return -(fs::errno::EISDIR);
        }
        if (read && !self.fs.access(ino, 4)) || (write && !self.fs.access(ino, 2)) {
            return -(fs::errno::EACCES);
        }
        if flags & O_TRUNC != 0 && write {
            if let Err(e) = self.fs.truncate(ino, 0) {
                return -e;
            }
        }
        let fd = self.lowest_free_fd(0);
        self.fds.insert(fd, Rc::new(RefCell::new(Open::Node { ino, pos: 0, append: flags & O_APPEND != 0, read, write })));
        fd as i64
    }

    /// `struct stat` (x86-64, 144 bytes). Times are fixed at 1 (Nix's store timestamp).
    fn stat_bytes(&self, ino: Ino) -> Option<Vec<u8>> {
        let n = self.fs.node(ino)?;
        let (kind, size) = match &n.kind {
            Kind::File(d) => (0o100000, d.len() as u64),
            Kind::Dir(_) => (0o040000, 4096),
            Kind::Symlink(t) => (0o120000, t.len() as u64),
            Kind::Null | Kind::Zero => (0o020000, 0),
        };
        let mut b = alloc::vec![0u8; 144];
        let put = |b: &mut Vec<u8>, o: usize, v: u64, w: usize| b[o..o + w].copy_from_slice(&v.to_le_bytes()[..w]);
        put(&mut b, 0, 1, 8); // st_dev
        put(&mut b, 8, ino as u64 + 1, 8);
        put(&mut b, 16, u64::from(n.nlink.max(1)), 8);
        put(&mut b, 24, u64::from(kind | n.mode), 4);
        put(&mut b, 28, u64::from(n.uid), 4);
        put(&mut b, 32, u64::from(n.gid), 4);
        put(&mut b, 48, size, 8);
        put(&mut b, 56, 4096, 8);
        put(&mut b, 64, size.div_ceil(512), 8);
        for t in [72, 88, 104] {
            put(&mut b, t, 1, 8);
        }
        Some(b)
    }

    fn stat_at(&mut self, mem: &mut dyn Memory, dirfd: u64, path: u64, buf: u64, flags: u64) -> i64 {
        const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
        const AT_EMPTY_PATH: u64 = 0x1000;
        let p = match Self::path(mem, path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let ino = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
            match self.fd_ino(dirfd) {
                Some(i) => i,
                None => return self.stat_out(mem, dirfd, buf),
            }
        } else {
            let base = match self.dir_of(dirfd) {
                Ok(b) => b,
                Err(e) => return e,
            };
            match self.fs.resolve(base, &p, flags & AT_SYMLINK_NOFOLLOW == 0) {
                Ok(i) => i,
                Err(e) => return -e,
            }
        };
        match self.stat_bytes(ino).and_then(|b| mem.write(buf, &b)) {
            Some(()) => 0,
            None => EFAULT,
        }
    }

    fn fd_ino(&self, fd: u64) -> Option<Ino> {
        match &*self.fds.get(&(fd as i32))?.borrow() {
            Open::Node { ino, .. } => Some(*ino),
            Open::Out(_) => None,
        }
    }

    /// fstat of stdout/stderr: a character device (a pipe to the loader, in effect).
    fn stat_out(&self, mem: &mut dyn Memory, fd: u64, buf: u64) -> i64 {
        if !self.fds.contains_key(&(fd as i32)) {
            return EBADF;
        }
        let mut b = alloc::vec![0u8; 144];
        b[24..28].copy_from_slice(&(0o010000u32 | 0o600).to_le_bytes()); // FIFO
        b[28..32].copy_from_slice(&fs::UID.to_le_bytes());
        b[32..36].copy_from_slice(&fs::GID.to_le_bytes());
        b[56..64].copy_from_slice(&4096u64.to_le_bytes());
        match mem.write(buf, &b) {
            Some(()) => 0,
            None => EFAULT,
        }
    }

    fn getdents64(&mut self, mem: &mut dyn Memory, fd: u64, buf: u64, len: u64) -> i64 {
        let Some(f) = self.fds.get(&(fd as i32)).cloned() else { return EBADF };
        let mut o = f.borrow_mut();
        let Open::Node { ino, pos, .. } = &mut *o else { return -(fs::errno::ENOTDIR) };
        let Some(node) = self.fs.node(*ino) else { return EBADF };
        let Kind::Dir(entries) = &node.kind else { return -(fs::errno::ENOTDIR) };
        let mut all: Vec<(Vec<u8>, Ino)> = alloc::vec![(b".".to_vec(), *ino), (b"..".to_vec(), node.parent)];
        all.extend(entries.iter().map(|(k, v)| (k.clone(), *v)));
        let mut out = Vec::new();
        let mut i = *pos as usize;
        while i < all.len() {
            let (name, child) = &all[i];
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            if out.len() + reclen > len as usize {
                break;
            }
            let d_type = match self.fs.node(*child).map(|n| &n.kind) {
                Some(Kind::Dir(_)) => 4,
                Some(Kind::File(_)) => 8,
                Some(Kind::Symlink(_)) => 10,
                _ => 2,
            };
            let start = out.len();
            out.resize(start + reclen, 0);
            out[start..start + 8].copy_from_slice(&(*child as u64 + 1).to_le_bytes());
            out[start + 8..start + 16].copy_from_slice(&((i + 1) as u64).to_le_bytes());
            out[start + 16..start + 18].copy_from_slice(&(reclen as u16).to_le_bytes());
            out[start + 18] = d_type;
            out[start + 19..start + 19 + name.len()].copy_from_slice(name);
            i += 1;
        }
        if out.is_empty() && i < all.len() {
            return EINVAL;
        }
        *pos = i as u64;
        match mem.write(buf, &out) {
            Some(()) => out.len() as i64,
            None => EFAULT,
        }
    }

    fn path_op(&mut self, mem: &mut dyn Memory, dirfd: u64, path: u64, op: impl FnOnce(&mut Fs, Ino, &[u8]) -> Result<(), i64>) -> i64 {
        let p = match Self::path(mem, path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        match self.dir_of(dirfd) {
            Ok(base) => match op(&mut self.fs, base, &p) {
                Ok(()) => 0,
                Err(e) => -e,
            },
            Err(e) => e,
        }
    }

    /// Serves one system call.
    pub fn syscall(&mut self, mem: &mut dyn Memory, nr: u64, a: [u64; 6]) -> Outcome {
        const CWD: u64 = -100i64 as u64;
        Outcome::Return(match nr {
            1 => self.write_fd(mem, a[0], a[1], a[2]),
            0 => self.read_fd(mem, a[0], a[1], a[2], None),
            17 => self.read_fd(mem, a[0], a[1], a[2], Some(a[3])),
            2 => self.openat(mem, CWD, a[0], a[1], a[2]),
            257 => self.openat(mem, a[0], a[1], a[2], a[3]),
            3 => match self.fds.remove(&(a[0] as i32)) {
                Some(_) => 0,
                None => EBADF,
            },
            8 => {
                // lseek
                let Some(f) = self.fds.get(&(a[0] as i32)).cloned() else { return Outcome::Return(EBADF) };
                let mut o = f.borrow_mut();
                let Open::Node { ino, pos, .. } = &mut *o else { return Outcome::Return(-29) }; // ESPIPE
                let size = self.fs.size(*ino).unwrap_or(0) as i64;
                let new = match a[2] {
                    0 => a[1] as i64,
                    1 => *pos as i64 + a[1] as i64,
                    2 => size + a[1] as i64,
                    _ => return Outcome::Return(EINVAL),
                };
                if new < 0 {
                    return Outcome::Return(EINVAL);
                }
                *pos = new as u64;
                new
            }
            5 => match self.fd_ino(a[0]) {
                Some(i) => match self.stat_bytes(i).and_then(|b| mem.write(a[1], &b)) {
                    Some(()) => 0,
                    None => EFAULT,
                },
                None => self.stat_out(mem, a[0], a[1]),
            },
            4 => self.stat_at(mem, CWD, a[0], a[1], 0),
            6 => self.stat_at(mem, CWD, a[0], a[1], 0x100),
            262 => self.stat_at(mem, a[0], a[1], a[2], a[3]),
            217 => self.getdents64(mem, a[0], a[1], a[2]),
            83 => { let m = a[1] as u32 & !self.umask; self.path_op(mem, CWD, a[0], |fs, b, p| fs.create(b, p, Kind::Dir(BTreeMap::new()), m).map(|_| ())) }
            258 => { let m = a[2] as u32 & !self.umask; self.path_op(mem, a[0], a[1], |fs, b, p| fs.create(b, p, Kind::Dir(BTreeMap::new()), m).map(|_| ())) }
            87 => self.path_op(mem, CWD, a[0], |fs, b, p| fs.remove(b, p, false)),
            84 => self.path_op(mem, CWD, a[0], |fs, b, p| fs.remove(b, p, true)),
            263 => { let dir = a[2] & 0x200 != 0; self.path_op(mem, a[0], a[1], |fs, b, p| fs.remove(b, p, dir)) }
            88 | 266 => {
                let target = match Self::path(mem, a[0]) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Return(e),
                };
                let (dirfd, path) = if nr == 88 { (CWD, a[1]) } else { (a[1], a[2]) };
                self.path_op(mem, dirfd, path, |fs, b, p| fs.create(b, p, Kind::Symlink(target), 0o777).map(|_| ()))
            }
            89 | 267 => {
                let (dirfd, path, buf, len) = if nr == 89 { (CWD, a[0], a[1], a[2]) } else { (a[0], a[1], a[2], a[3]) };
                let p = match Self::path(mem, path) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Return(e),
                };
                let base = match self.dir_of(dirfd) {
                    Ok(b) => b,
                    Err(e) => return Outcome::Return(e),
                };
                match self.fs.resolve(base, &p, false).map(|i| self.fs.node(i).map(|n| n.kind.clone())) {
                    Ok(Some(Kind::Symlink(t))) => {
                        let n = t.len().min(len as usize);
                        match mem.write(buf, &t[..n]) {
                            Some(()) => n as i64,
                            None => EFAULT,
                        }
                    }
                    Ok(_) => EINVAL,
                    Err(e) => -e,
                }
            }
            82 | 264 | 316 => {
                let (fd1, p1, fd2, p2) = if nr == 82 { (CWD, a[0], CWD, a[1]) } else { (a[0], a[1], a[2], a[3]) };
                let (from, to) = match (Self::path(mem, p1), Self::path(mem, p2)) {
                    (Ok(f), Ok(t)) => (f, t),
                    _ => return Outcome::Return(EFAULT),
                };
                match (self.dir_of(fd1), self.dir_of(fd2)) {
                    (Ok(b1), Ok(b2)) if b1 == b2 => match self.fs.rename(b1, &from, &to) {
                        Ok(()) => 0,
                        Err(e) => -e,
                    },
                    (Ok(_), Ok(_)) => EINVAL,
                    _ => EBADF,
                }
            }
            80 => {
                let p = match Self::path(mem, a[0]) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Return(e),
                };
                match self.fs.resolve(self.cwd, &p, true) {
                    Ok(i) if matches!(self.fs.node(i).map(|n| &n.kind), Some(Kind::Dir(_))) => {
                        self.cwd = i;
                        0
                    }
                    Ok(_) => -(fs::errno::ENOTDIR),
                    Err(e) => -e,
                }
            }
            79 => {
                let mut p = self.fs.path_of(self.cwd);
                p.push(0);
                if p.len() as u64 > a[1] {
                    -34 // ERANGE
                } else if mem.write(a[0], &p).is_none() {
                    EFAULT
                } else {
                    p.len() as i64
                }
            }
            32 | 33 | 292 => {
                let Some(f) = self.fds.get(&(a[0] as i32)).cloned() else { return Outcome::Return(EBADF) };
                let to = if nr == 32 { self.lowest_free_fd(0) } else { a[1] as i32 };
                if !(0..1024).contains(&to) {
                    return Outcome::Return(EBADF);
                }
                self.fds.insert(to, f);
                to as i64
            }
            72 => match a[1] {
                0 | 1030 => {
                    let Some(f) = self.fds.get(&(a[0] as i32)).cloned() else { return Outcome::Return(EBADF) };
                    let to = self.lowest_free_fd(a[2] as i32);
                    self.fds.insert(to, f);
                    to as i64
                }
                1..=4 => if self.fds.contains_key(&(a[0] as i32)) { 0 } else { EBADF },
                _ => EINVAL,
            },
            21 | 269 | 439 => {
                let (dirfd, path, m) = if nr == 21 { (CWD, a[0], a[1]) } else { (a[0], a[1], a[2]) };
                let p = match Self::path(mem, path) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Return(e),
                };
                match self.dir_of(dirfd).and_then(|b| self.fs.resolve(b, &p, true).map_err(|e| -e)) {
                    Ok(i) if self.fs.access(i, m as u32 & 7) => 0,
                    Ok(_) => -(fs::errno::EACCES),
                    Err(e) => e,
                }
            }
            90 | 268 | 91 => {
                let (ino, mode) = if nr == 91 {
                    (self.fd_ino(a[0]).ok_or(EBADF), a[1])
                } else {
                    let (dirfd, path, mode) = if nr == 90 { (CWD, a[0], a[1]) } else { (a[0], a[1], a[2]) };
                    let p = match Self::path(mem, path) {
                        Ok(p) => p,
                        Err(e) => return Outcome::Return(e),
                    };
                    (self.dir_of(dirfd).and_then(|b| self.fs.resolve(b, &p, true).map_err(|e| -e)), mode)
                };
                match ino {
                    Ok(i) => match self.fs.node_mut(i) {
                        Some(n) if n.uid == fs::UID => {
                            n.mode = mode as u32 & 0o7777;
                            0
                        }
                        Some(_) => -1, // EPERM
                        None => EBADF,
                    },
                    Err(e) => e,
                }
            }
            7 => {
                // poll: files and streams are always ready (nothing in the sandbox blocks).
                if a[1] > 1024 {
                    return Outcome::Return(EINVAL);
                }
                let Some(mut fds) = mem.read(a[0], a[1] as usize * 8) else { return Outcome::Return(EFAULT) };
                let mut ready = 0;
                for pfd in fds.chunks_mut(8) {
                    let fd = i32::from_le_bytes(pfd[..4].try_into().unwrap());
                    let events = u16::from_le_bytes([pfd[4], pfd[5]]);
                    let revents = if fd < 0 { 0 } else if self.fds.contains_key(&fd) { events & 0x5 } else { 0x20 };
                    pfd[6..8].copy_from_slice(&revents.to_le_bytes());
                    if revents != 0 {
                        ready += 1;
                    }
                }
                match mem.write(a[0], &fds) {
                    Some(()) => ready,
                    None => EFAULT,
                }
            }
            105 | 106 => {
                // setuid/setgid: only to what the builder already is.
                let own = if nr == 105 { u64::from(fs::UID) } else { u64::from(fs::GID) };
                if a[0] == own { 0 } else { -1 }
            }
            95 => {
                let old = self.umask;
                self.umask = a[0] as u32 & 0o777;
                old as i64
            }
            280 | 132 | 235 => 0, // utimensat, utime, utimes: timestamps are fixed
            77 => match self.fd_ino(a[0]) {
                Some(i) => match self.fs.truncate(i, a[1]) {
                    Ok(()) => 0,
                    Err(e) => -e,
                },
                None => EBADF,
            },
            19 => self.vectored(mem, a[0], a[1], a[2], false),
            20 => self.vectored(mem, a[0], a[1], a[2], true),
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

    fn cstr(m: &mut Mem, at: usize, s: &str) -> u64 {
        m.0[at..at + s.len()].copy_from_slice(s.as_bytes());
        m.0[at + s.len()] = 0;
        at as u64
    }

    #[test]
    fn files_through_system_calls() {
        let mut m = Mem(vec![0; 4096]);
        let mut p = Process::new(Fs::new(1 << 20));
        let path = cstr(&mut m, 0, "out.txt");
        let fd = match p.syscall(&mut m, 257, [-100i64 as u64, path, 0x241, 0o644, 0, 0]) {
            Outcome::Return(fd) => fd as u64,
            o => panic!("{o:?}"),
        };
        assert_eq!(fd, 3);
        m.0[100..105].copy_from_slice(b"hello");
        assert_eq!(p.syscall(&mut m, 1, [fd, 100, 5, 0, 0, 0]), Outcome::Return(5));
        assert_eq!(p.syscall(&mut m, 8, [fd, 0, 0, 0, 0, 0]), Outcome::Return(0));
        assert_eq!(p.syscall(&mut m, 0, [fd, 200, 100, 0, 0, 0]), Outcome::Return(-9), "opened write-only");
        assert_eq!(p.syscall(&mut m, 3, [fd, 0, 0, 0, 0, 0]), Outcome::Return(0));
        let fd = match p.syscall(&mut m, 2, [path, 0, 0, 0, 0, 0]) {
            Outcome::Return(fd) => fd as u64,
            o => panic!("{o:?}"),
        };
        assert_eq!(p.syscall(&mut m, 0, [fd, 200, 100, 0, 0, 0]), Outcome::Return(5));
        assert_eq!(&m.0[200..205], b"hello");
        // stat: a regular file of 5 bytes, owned by the builder.
        assert_eq!(p.syscall(&mut m, 4, [path, 300, 0, 0, 0, 0]), Outcome::Return(0));
        assert_eq!(u32::from_le_bytes(m.0[324..328].try_into().unwrap()) & 0o170000, 0o100000);
        assert_eq!(u64::from_le_bytes(m.0[348..356].try_into().unwrap()), 5);
        // Escapes and read-only places.
        let etc = cstr(&mut m, 500, "../../etc/passwd");
        assert_eq!(p.syscall(&mut m, 2, [etc, 1, 0, 0, 0, 0]), Outcome::Return(-13));
        let cwd = p.syscall(&mut m, 79, [600, 100, 0, 0, 0, 0]);
        assert_eq!((cwd, &m.0[600..607]), (Outcome::Return(7), b"/build\0".as_slice()));
    }

    #[test]
    fn brk_and_mmap_account_memory() {
        let mut m = Mem(vec![0; 64]);
        let mut p = Process::new(Fs::new(1 << 20));
        (p.brk_start, p.brk, p.max_memory) = (0x60_0000, 0x60_0000, 1 << 20);
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
        let mut p = Process::new(Fs::new(1 << 20));
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
