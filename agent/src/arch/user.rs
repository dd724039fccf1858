//! Ring 3. The builder gets its own page tables: the agent's half of the address space (PML4
//! entries 256–511) is shared *without* the user bit, the lower half is the builder's own. The
//! agent runs it with [`run`] until it makes a system call or faults, and gets control back
//! either way ("run until event"); everything about what the event means is safe code above.
use super::gdt::{KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA};
use super::layout;
use super::memory::{self, PageTable};
use alloc::vec::Vec;
use core::arch::{asm, global_asm};
use core::ptr::{addr_of, addr_of_mut, NonNull};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The builder's registers while it is not running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub fs_base: u64,
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `syscall`: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9.
    Syscall,
    /// A CPU exception in ring 3 (`address` is CR2 for page faults).
    Fault { vector: u8, error: u64, address: u64 },
}

/// A page-table tree for one builder. Frees every page it allocated when dropped.
pub struct AddressSpace {
    pml4: u64,
    owned: Vec<NonNull<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    NotUserAddress,
}

fn table(phys: u64) -> *mut PageTable {
    layout::phys_to_virt(phys) as *mut PageTable
}

unsafe extern "C" {
    static BOOT_PML4: PageTable;
}

impl AddressSpace {
    pub fn new() -> Result<Self, MapError> {
        let mut s = AddressSpace { pml4: 0, owned: Vec::new() };
        s.pml4 = s.alloc_page()?;
        // SAFETY: BOOT_PML4 is the agent's live top-level table (only its upper half is read);
        // the new PML4 page is ours, zeroed, and mapped by the direct map.
        unsafe {
            let boot = &*addr_of!(BOOT_PML4);
            let new = &mut *table(s.pml4);
            new.0[256..].copy_from_slice(&boot.0[256..]);
        }
        Ok(s)
    }

    fn alloc_page(&mut self) -> Result<u64, MapError> {
        let (phys, virt) = memory::alloc_dma_pages(1).ok_or(MapError::OutOfMemory)?;
        self.owned.push(virt);
        Ok(phys)
    }

    /// The page-table entry for `vaddr` at the leaf level, creating tables on the way.
    fn leaf(&mut self, vaddr: u64) -> Result<*mut u64, MapError> {
        if vaddr >= 0x0000_8000_0000_0000 {
            return Err(MapError::NotUserAddress);
        }
        let mut t = self.pml4;
        for shift in [39u64, 30, 21] {
            let idx = ((vaddr >> shift) & 511) as usize;
            // SAFETY: `t` is a page-table page this address space owns, mapped by the direct map.
            let e = unsafe { &mut (*table(t)).0[idx] };
            if *e & PRESENT == 0 {
                let next = self.alloc_page()?;
                *e = next | PRESENT | WRITABLE | USER;
            }
            t = *e & ADDR_MASK;
        }
        // SAFETY: as above, for the last-level table.
        Ok(unsafe { &mut (*table(t)).0[((vaddr >> 12) & 511) as usize] as *mut u64 })
    }

    /// Maps a fresh zeroed page at `vaddr` (page aligned), or widens the permissions of the page
    /// already there (two segments may share a page); returns its bytes for filling.
    pub fn map(&mut self, vaddr: u64, writable: bool, executable: bool) -> Result<&mut [u8; 4096], MapError> {
        let pte = self.leaf(vaddr)?;
        // SAFETY: `pte` points into a table this address space owns; a present entry maps a
        // page this address space allocated.
        unsafe {
            if *pte & PRESENT != 0 {
                if writable {
                    *pte |= WRITABLE;
                }
                if executable {
                    *pte &= !NO_EXECUTE;
                }
                return Ok(&mut *(layout::phys_to_virt(*pte & ADDR_MASK) as *mut [u8; 4096]));
            }
        }
        let phys = self.alloc_page()?;
        let mut flags = PRESENT | USER;
        if writable {
            flags |= WRITABLE;
        }
        if !executable {
            flags |= NO_EXECUTE;
        }
        // SAFETY: as above; the page is ours and zeroed; the returned slice borrows `self`.
        unsafe {
            *pte = phys | flags;
            Ok(&mut *(layout::phys_to_virt(phys) as *mut [u8; 4096]))
        }
    }

    /// The direct-map address of the user page holding `vaddr`, if it is mapped for the user.
    fn user_page(&self, vaddr: u64, write: bool) -> Option<*mut u8> {
        if vaddr >= 0x0000_8000_0000_0000 {
            return None;
        }
        let mut t = self.pml4;
        for shift in [39u64, 30, 21, 12] {
            // SAFETY: walking tables this address space owns (entries 0..255 are ours).
            let e = unsafe { (*table(t)).0[((vaddr >> shift) & 511) as usize] };
            if e & PRESENT == 0 || e & USER == 0 || (write && e & WRITABLE == 0) {
                return None;
            }
            t = e & ADDR_MASK;
        }
        Some(layout::phys_to_virt(t + (vaddr & 0xFFF)) as *mut u8)
    }

    /// Copies `len` bytes from the builder's memory; `None` if any byte is not mapped for it.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        out.try_reserve_exact(len).ok()?;
        let mut a = addr;
        let end = addr.checked_add(len as u64)?;
        while a < end {
            let n = ((4096 - (a & 0xFFF)).min(end - a)) as usize;
            let p = self.user_page(a, false)?;
            // SAFETY: `p..p+n` lies within one mapped user page (n stops at the page end).
            out.extend_from_slice(unsafe { core::slice::from_raw_parts(p, n) });
            a += n as u64;
        }
        Some(out)
    }

    /// Copies bytes into the builder's memory; `None` if any byte is not writable for it.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Option<()> {
        let end = addr.checked_add(data.len() as u64)?;
        // Check everything first, so a failed write changes nothing.
        let mut a = addr;
        while a < end {
            self.user_page(a, true)?;
            a = (a & !0xFFF) + 4096;
        }
        let (mut a, mut done) = (addr, 0usize);
        while a < end {
            let n = ((4096 - (a & 0xFFF)).min(end - a)) as usize;
            let p = self.user_page(a, true)?;
            // SAFETY: checked above: `p..p+n` is a writable user page's bytes.
            unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), p, n) };
            a += n as u64;
            done += n;
        }
        Some(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // SAFETY: back on the agent's own tables before freeing the builder's.
        unsafe { asm!("mov cr3, {}", in(reg) layout::virt_to_phys(addr_of!(BOOT_PML4) as u64), options(nostack)) };
        for p in self.owned.drain(..) {
            // SAFETY: each page came from alloc_dma_pages(1) and is freed once.
            unsafe { memory::free_dma_pages(p, 1) };
        }
    }
}

// The switch. `enter_user` saves the agent's callee-saved registers and stack, then `iretq`s to
// ring 3 with the builder's registers. `syscall_entry` (LSTAR) and `fault_from_user` save the
// builder's registers and return from `enter_user` on the saved stack.
global_asm!(
    r#"
.globl agent_enter_user
agent_enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + {kernel_rsp}], rsp
    mov [rip + {current}], rdi
    push {user_data}
    push qword ptr [rdi + 128]
    push qword ptr [rdi + 136]
    push {user_code}
    push qword ptr [rdi + 120]
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    iretq

.globl agent_syscall_entry
agent_syscall_entry:
    mov [rip + {scratch}], rsp
    mov rsp, [rip + {current}]
    mov [rsp + 0], rax
    mov [rsp + 8], rbx
    mov [rsp + 16], rcx
    mov [rsp + 24], rdx
    mov [rsp + 32], rsi
    mov [rsp + 40], rdi
    mov [rsp + 48], rbp
    mov [rsp + 56], r8
    mov [rsp + 64], r9
    mov [rsp + 72], r10
    mov [rsp + 80], r11
    mov [rsp + 88], r12
    mov [rsp + 96], r13
    mov [rsp + 104], r14
    mov [rsp + 112], r15
    mov [rsp + 120], rcx
    mov [rsp + 136], r11
    mov rax, [rip + {scratch}]
    mov [rsp + 128], rax
    mov byte ptr [rip + {exit_fault}], 0

.globl agent_return_to_kernel
agent_return_to_kernel:
    mov rsp, [rip + {kernel_rsp}]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#,
    kernel_rsp = sym KERNEL_RSP,
    current = sym CURRENT,
    scratch = sym SCRATCH,
    exit_fault = sym EXIT_FAULT,
    user_data = const USER_DATA as u64,
    user_code = const USER_CODE as u64,
);

unsafe extern "C" {
    fn agent_enter_user(regs: *mut UserRegs);
    fn agent_syscall_entry();
    fn agent_return_to_kernel() -> !;
}

static mut KERNEL_RSP: u64 = 0;
static mut CURRENT: *mut UserRegs = core::ptr::null_mut();
static mut SCRATCH: u64 = 0;
static mut EXIT_FAULT: u8 = 0;
static mut FAULT: (u8, u64, u64) = (0, 0, 0);

const MSR_EFER: u32 = 0xC000_0080;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_SFMASK: u32 = 0xC000_0084;
const MSR_FS_BASE: u32 = 0xC000_0100;

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the MSRs written here (EFER.SCE, STAR, LSTAR, SFMASK, FS_BASE) configure system
    // call entry and the user's TLS base; none affects memory safety of the agent.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) }
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an architectural MSR.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Enables SYSCALL: STAR selects kernel CS/SS on entry and user CS/SS (base 0x10: SS 0x18|3,
/// CS 0x20|3) on return; SFMASK clears IF, TF, DF and AC on entry.
pub fn init() {
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | 1);
    wrmsr(MSR_STAR, (u64::from(KERNEL_DATA) << 48) | (u64::from(KERNEL_CODE) << 32));
    wrmsr(MSR_LSTAR, agent_syscall_entry as *const () as u64);
    wrmsr(MSR_SFMASK, 0x4_0700);
}

/// Runs the builder in `space` from `regs` until its next system call or fault.
pub fn run(space: &AddressSpace, regs: &mut UserRegs) -> Event {
    wrmsr(MSR_FS_BASE, regs.fs_base);
    regs.rflags = (regs.rflags & 0xCD5) | 0x2; // user-settable flags only; IF stays clear
    // SAFETY: `space` holds a valid PML4 whose upper half is the agent's own mapping (so the
    // agent keeps running after the switch); `agent_enter_user` returns here, on this stack,
    // when the builder makes a system call or faults, with its registers stored in `regs`.
    unsafe {
        asm!("mov cr3, {}", in(reg) space.pml4, options(nostack));
        agent_enter_user(regs);
        if *addr_of!(EXIT_FAULT) != 0 {
            let (vector, error, address) = *addr_of!(FAULT);
            return Event::Fault { vector, error, address };
        }
    }
    Event::Syscall
}

/// Called by the trap handler for an exception raised in ring 3: records it and returns to the
/// agent as if `enter_user` had returned.
pub fn fault_from_user(f: &super::idt::TrapFrame, cr2: u64) -> ! {
    // SAFETY: CURRENT points at the registers `run` is waiting on (a ring-3 trap can only
    // happen inside `run`); KERNEL_RSP is that call's saved stack.
    unsafe {
        let r = &mut **addr_of_mut!(CURRENT);
        *r = UserRegs {
            rax: f.rax, rbx: f.rbx, rcx: f.rcx, rdx: f.rdx, rsi: f.rsi, rdi: f.rdi, rbp: f.rbp,
            r8: f.r8, r9: f.r9, r10: f.r10, r11: f.r11, r12: f.r12, r13: f.r13, r14: f.r14, r15: f.r15,
            rip: f.rip, rsp: f.rsp, rflags: f.rflags, fs_base: r.fs_base,
        };
        *addr_of_mut!(FAULT) = (f.vector as u8, f.error_code, cr2);
        *addr_of_mut!(EXIT_FAULT) = 1;
        agent_return_to_kernel()
    }
}

impl AddressSpace {
    /// The leaf entry for a user page, if the tables down to it exist.
    fn existing_leaf(&self, vaddr: u64) -> Option<*mut u64> {
        if vaddr >= 0x0000_8000_0000_0000 {
            return None;
        }
        let mut t = self.pml4;
        for shift in [39u64, 30, 21] {
            // SAFETY: walking tables this address space owns.
            let e = unsafe { (*table(t)).0[((vaddr >> shift) & 511) as usize] };
            if e & PRESENT == 0 {
                return None;
            }
            t = e & ADDR_MASK;
        }
        // SAFETY: `t` is a last-level table this address space owns.
        Some(unsafe { &mut (*table(t)).0[((vaddr >> 12) & 511) as usize] as *mut u64 })
    }

    fn flush_tlb() {
        // SAFETY: reloading CR3 with its own value only flushes non-global TLB entries.
        unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack)) };
    }
}

/// A page-table entry with exactly the rights `prot` asks for (present and user bits kept).
fn with_rights(pte: u64, prot: agent::sandbox::syscall::Prot) -> u64 {
    (pte & !(WRITABLE | NO_EXECUTE)) | if prot.write { WRITABLE } else { 0 } | if prot.exec { 0 } else { NO_EXECUTE }
}

impl agent::sandbox::syscall::Memory for AddressSpace {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        AddressSpace::read(self, addr, len)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Option<()> {
        AddressSpace::write(self, addr, data)
    }
    fn map(&mut self, addr: u64, len: u64, prot: agent::sandbox::syscall::Prot) -> bool {
        for page in (addr..addr + len).step_by(4096) {
            match self.map(page, prot.write, prot.exec) {
                // Replacing a mapping gives fresh zero pages, as Linux does.
                Ok(bytes) => bytes.fill(0),
                Err(_) => return false,
            }
            if let Some(pte) = self.existing_leaf(page) {
                // SAFETY: a leaf entry this address space owns: set exactly the requested rights.
                unsafe {
                    *pte = with_rights(*pte, prot);
                }
            }
        }
        Self::flush_tlb();
        true
    }
    fn unmap(&mut self, addr: u64, len: u64) {
        for page in (addr..addr.saturating_add(len)).step_by(4096) {
            if let Some(pte) = self.existing_leaf(page) {
                // SAFETY: clearing a leaf entry this address space owns (the page itself stays
                // allocated, and is freed with the address space).
                unsafe { *pte = 0 };
            }
        }
        Self::flush_tlb();
    }
    fn protect(&mut self, addr: u64, len: u64, prot: agent::sandbox::syscall::Prot) {
        for page in (addr..addr.saturating_add(len)).step_by(4096) {
            if let Some(pte) = self.existing_leaf(page) {
                // SAFETY: changing the rights of a present leaf entry this address space owns.
                unsafe {
                    if *pte & PRESENT != 0 {
                        *pte = with_rights(*pte, prot);
                    }
                }
            }
        }
        Self::flush_tlb();
    }
}
