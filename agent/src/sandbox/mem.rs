//! User memory as the portable code sees it.
//!
//! The arch layer implements [`Memory`] with real page tables (user pages
//! U/S, NX unless executable, the upper half never user-accessible); the host
//! tests implement it with [`MockMemory`]. Syscalls touch user memory only
//! through this trait: a non-canonical, kernel-half or unmapped address is a
//! [`Fault`], which the syscall answers with `EFAULT`.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::abi::Errno;
pub use super::elf::Prot;
use super::elf::{PAGE, USER_END};

/// A user address that cannot be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault(pub u64);

impl From<Fault> for Errno {
    fn from(_: Fault) -> Errno {
        Errno::EFAULT
    }
}

/// Whether `[va, va+len)` lies in the user half (canonical lower half, above page 0).
pub fn user_range(va: u64, len: u64) -> bool {
    va >= PAGE && va.checked_add(len).is_some_and(|e| e <= USER_END)
}

/// Linux's `access_ok`: `[va, va+len)` lies below the end of user space (page 0 included: it
/// is a user address, only unmapped). The first check of a buffer argument; the copy itself
/// then faults on unmapped pages.
pub fn access_ok(va: u64, len: u64) -> bool {
    va.checked_add(len).is_some_and(|e| e <= USER_END)
}

/// One process's user address space.
pub trait Memory: Sized {
    /// Copies user bytes at `va` into `buf`; needs readable pages.
    fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Fault>;
    /// Copies `data` to user `va`; needs writable pages (as `copy_to_user`).
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault>;
    /// Loader write: fills mapped pages whatever their protection.
    fn poke(&mut self, va: u64, data: &[u8]) -> Result<(), Fault>;
    /// Maps zero-filled pages `[va, va+len)` (page-aligned) with `prot`, replacing any mapping.
    fn map(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno>;
    /// Unmaps pages `[va, va+len)` (page-aligned); unmapped parts are ignored.
    fn unmap(&mut self, va: u64, len: u64);
    /// Changes the protection of mapped pages in `[va, va+len)`; `ENOMEM` if a page is unmapped.
    fn protect(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno>;
    /// A copy for a forked child (the arch layer shares pages copy-on-write, which changes
    /// the parent's page tables too: hence `&mut`).
    fn fork(&mut self) -> Result<Self, Errno>;
    /// The rights of the mapped page at `va` (`None` when unmapped).
    fn prot_of(&self, va: u64) -> Option<Prot>;
    /// A new, empty address space (what a `vfork` parent holds while its child borrows its own).
    fn empty(&self) -> Result<Self, Errno>;
    /// A page fault at `va` the memory layer handles itself: a write to a copy-on-write page
    /// (the page is copied, or made writable when no one else holds it). True when the access
    /// can be retried; false when it is the process's fault (a signal).
    fn resolve_fault(&mut self, va: u64, write: bool) -> bool;
    /// Drops every mapping (execve, exit).
    fn clear(&mut self);
    /// Bytes of page tables this address space holds. They are charged to the memory limit
    /// with the pages they map: scattered one-page mappings need up to three tables each.
    fn table_bytes(&self) -> u64;
}

/// A page-table-free model of user memory for host tests.
#[derive(Clone, Debug, Default)]
pub struct MockMemory {
    pages: BTreeMap<u64, (Prot, Vec<u8>)>,
}

impl MockMemory {
    pub fn new() -> MockMemory {
        MockMemory::default()
    }
    pub fn mapped_pages(&self) -> usize {
        self.pages.len()
    }
    /// Page tables as 4-level paging would need them for the mapped pages: the top table, and
    /// one table per distinct 512 GiB, 1 GiB and 2 MiB region that holds a page.
    fn tables(&self) -> u64 {
        let regions = |shift: u32| {
            let mut v: Vec<u64> = self.pages.keys().map(|k| k >> shift).collect();
            v.dedup();
            v.len() as u64
        };
        1 + regions(39) + regions(30) + regions(21)
    }
    pub fn prot(&self, va: u64) -> Option<Prot> {
        self.pages.get(&(va & !(PAGE - 1))).map(|p| p.0)
    }
    fn each(&self, va: u64, len: usize, mut f: impl FnMut(&[u8], usize)) -> Result<(), Fault> {
        if !user_range(va, len as u64) {
            return Err(Fault(va));
        }
        let mut done = 0;
        while done < len {
            let a = va + done as u64;
            let (p, d) = self.pages.get(&(a & !(PAGE - 1))).ok_or(Fault(a))?;
            if !p.read {
                return Err(Fault(a));
            }
            let o = (a % PAGE) as usize;
            let n = (PAGE as usize - o).min(len - done);
            f(&d[o..o + n], done);
            done += n;
        }
        Ok(())
    }
    fn store(&mut self, va: u64, data: &[u8], check: bool) -> Result<(), Fault> {
        if !user_range(va, data.len() as u64) {
            return Err(Fault(va));
        }
        // Check first so a faulting write changes nothing.
        let mut a = va & !(PAGE - 1);
        while a < va + data.len() as u64 {
            match self.pages.get(&a) {
                Some((p, _)) if !check || p.write => {}
                _ => return Err(Fault(a.max(va))),
            }
            a += PAGE;
        }
        let mut done = 0;
        while done < data.len() {
            let a = va + done as u64;
            let (_, d) = self.pages.get_mut(&(a & !(PAGE - 1))).ok_or(Fault(a))?;
            let o = (a % PAGE) as usize;
            let n = (PAGE as usize - o).min(data.len() - done);
            d[o..o + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

impl Memory for MockMemory {
    fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.each(va, buf.len(), |s, at| buf[at..at + s.len()].copy_from_slice(s))
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.store(va, data, true)
    }
    fn poke(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.store(va, data, false)
    }
    fn map(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        if !va.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || !user_range(va, len) {
            return Err(Errno::EINVAL);
        }
        let mut a = va;
        while a < va + len {
            self.pages.insert(a, (prot, alloc::vec![0; PAGE as usize]));
            a += PAGE;
        }
        Ok(())
    }
    fn unmap(&mut self, va: u64, len: u64) {
        let keys: Vec<u64> = self.pages.range(va..va.saturating_add(len)).map(|(k, _)| *k).collect();
        for k in keys {
            self.pages.remove(&k);
        }
    }
    fn protect(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        let mut a = va;
        while a < va.saturating_add(len) {
            if !self.pages.contains_key(&a) {
                return Err(Errno::ENOMEM);
            }
            a += PAGE;
        }
        for (_, p) in self.pages.range_mut(va..va.saturating_add(len)) {
            p.0 = prot;
        }
        Ok(())
    }
    fn fork(&mut self) -> Result<Self, Errno> {
        Ok(self.clone())
    }
    fn empty(&self) -> Result<Self, Errno> {
        Ok(MockMemory::new())
    }
    fn prot_of(&self, va: u64) -> Option<Prot> {
        self.prot(va)
    }
    fn resolve_fault(&mut self, _va: u64, _write: bool) -> bool {
        false // the mock copies at fork: nothing is ever copy-on-write
    }
    fn clear(&mut self) {
        self.pages.clear();
    }
    fn table_bytes(&self) -> u64 {
        self.tables() * PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const RW: Prot = Prot { read: true, write: true, exec: false };
    const RO: Prot = Prot { read: true, write: false, exec: false };

    #[test]
    fn the_top_user_page_is_not_user_memory() {
        // Linux's TASK_SIZE_MAX: (1 << 47) - 4096.
        assert!(user_range(0x7fff_ffff_e000, 0x1000));
        assert!(!user_range(0x7fff_ffff_f000, 1));
        assert!(!user_range(0x7fff_ffff_effe, 4));
        assert!(!access_ok(0x7fff_ffff_fffe, 2));
    }

    #[test]
    fn faults() {
        let mut m = MockMemory::new();
        m.map(0x10000, 0x2000, RW).unwrap();
        m.write(0x10ffe, b"abcd").unwrap();
        let mut b = [0; 4];
        m.read(0x10ffe, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert_eq!(m.read(0x11ffe, &mut b), Err(Fault(0x12000)));
        assert_eq!(m.read(0xffff_8000_0000_0000, &mut b), Err(Fault(0xffff_8000_0000_0000)));
        assert_eq!(m.read(0x0000_8000_0000_0000, &mut b), Err(Fault(0x0000_8000_0000_0000)));
        assert_eq!(m.read(u64::MAX - 1, &mut b), Err(Fault(u64::MAX - 1)));
        assert_eq!(m.read(0, &mut b), Err(Fault(0)));
        m.protect(0x11000, 0x1000, RO).unwrap();
        assert_eq!(m.write(0x10ffe, b"wxyz"), Err(Fault(0x11000)));
        m.read(0x10ffe, &mut b).unwrap();
        assert_eq!(&b, b"abcd", "a faulting write changes nothing");
        m.poke(0x11000, b"z").unwrap();
        assert_eq!(m.protect(0x11000, 0x2000, RO), Err(Errno::ENOMEM));
    }
}
