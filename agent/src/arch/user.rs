//! Ring 3. Each sandboxed process gets its own page tables: the agent's half of the address
//! space (PML4 entries 256–511) is shared *without* the user bit, the lower half is the
//! process's own. The agent runs a process with [`run`] until it makes a system call, faults or
//! is preempted by the timer, and gets control back in every case ("run until event"); what the
//! event means is decided by safe code above (`agent::sandbox`).
//!
//! [`AddressSpace`] implements `agent::sandbox::mem::Memory`, the only way the sandbox kernel
//! touches user memory. Leaf pages belong to the page tables that map them: unmapping frees
//! them, dropping the address space frees everything. `fork` shares them copy-on-write: every
//! page goes read-only in both spaces, writable ones marked [`COW`], each frame counted once
//! more (`memory::share_frame`); the first write to one — by the process (a page fault,
//! [`Memory::resolve_fault`]) or by the agent on its behalf — copies it, or just makes it
//! writable again when no other space holds it any more.
use super::gdt::{KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA};
use super::layout;
use super::memory::{self, PageTable};
use agent::sandbox::abi::Errno;
use agent::sandbox::mem::{user_range, Fault, Memory, Prot};
use agent::sandbox::process::Regs;
use alloc::vec::Vec;
use core::arch::{asm, global_asm};
use super::cpu::{rdmsr, wrmsr};
use core::ptr::{addr_of, addr_of_mut};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
/// A software bit (ignored by the MMU): "this leaf maps a page of ours". A `PROT_NONE` page
/// keeps its frame with PRESENT clear, so any access faults, as on Linux.
const MAPPED: u64 = 1 << 9;
/// A software bit: "writable, but the frame may be shared": the page is mapped read-only
/// until the first write copies it (or finds it is the last holder).
const COW: u64 = 1 << 10;
const NO_EXECUTE: u64 = 1 << 63;
/// An entry's address bits (the C-/shared bit, when there is one, lies among them).
const ADDR_BITS: u64 = 0x000F_FFFF_FFFF_F000;
const PAGE: u64 = 4096;
/// Every page a process has is private: under SEV-SNP its entries carry the C-bit
/// (`arch::tee::private_pte`), and the C-/shared bit is never part of the frame's address.
use super::tee::{private_pte, pte_phys};

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `syscall`: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9.
    Syscall,
    /// A CPU exception in ring 3 (`address` is CR2 for page faults).
    Fault { vector: u8, error: u64, address: u64 },
    /// The timer interrupted the process.
    Timer,
}

/// A page-table tree for one process.
pub struct AddressSpace {
    pml4: u64,
    /// Intermediate tables below the PML4 (freed by `clear`).
    tables: Vec<u64>,
}

fn table(phys: u64) -> *mut PageTable {
    layout::phys_to_virt(phys) as *mut PageTable
}

use memory::{alloc_frame, free_frame, frame_shared, release_frame, share_frame};

fn frame_bytes(phys: u64) -> *mut [u8; 4096] {
    layout::phys_to_virt(phys) as *mut [u8; 4096]
}

fn leaf_flags(prot: Prot) -> u64 {
    let mut f = MAPPED | USER;
    if prot.read || prot.write || prot.exec {
        f |= PRESENT;
    }
    if prot.write {
        f |= WRITABLE;
    }
    if !prot.exec {
        f |= NO_EXECUTE;
    }
    f
}

impl AddressSpace {
    pub fn new() -> Result<Self, Errno> {
        let pml4 = alloc_frame().ok_or(Errno::ENOMEM)?;
        // SAFETY: the agent's top-level table (only its upper half is read) and the new PML4
        // frame, ours and zeroed, are both under the direct map.
        unsafe {
            let kernel = &*table(memory::kernel_pml4_phys());
            (&mut *table(pml4)).0[256..].copy_from_slice(&kernel.0[256..]);
            // Never the key page (arch/memory.rs `init_key_page`).
            (&mut *table(pml4)).0[layout::KEY_SLOT] = 0;
        }
        Ok(AddressSpace { pml4, tables: Vec::new() })
    }

    /// The leaf entry for user page `va`, creating the tables down to it if `create`.
    fn leaf(&mut self, va: u64, create: bool) -> Result<Option<*mut u64>, Errno> {
        if !user_range(va, 1) {
            return Err(Errno::EFAULT);
        }
        let mut t = self.pml4;
        for shift in [39u64, 30, 21] {
            // SAFETY: `t` is a table this address space owns, mapped by the direct map; user
            // addresses index only entries 0..255 of the PML4.
            let e = unsafe { &mut (*table(t)).0[((va >> shift) & 511) as usize] };
            if *e & PRESENT == 0 {
                if !create {
                    return Ok(None);
                }
                let next = alloc_frame().ok_or(Errno::ENOMEM)?;
                self.tables.push(next);
                *e = private_pte(next) | PRESENT | WRITABLE | USER;
            }
            t = pte_phys(*e);
        }
        // SAFETY: `t` is a last-level table this address space owns.
        Ok(Some(unsafe { &mut (*table(t)).0[((va >> 12) & 511) as usize] as *mut u64 }))
    }

    /// The entry of a mapped page (ours, whatever its protection).
    fn mapped(&self, va: u64) -> Option<u64> {
        let mut t = self.pml4;
        if !user_range(va, 1) {
            return None;
        }
        for shift in [39u64, 30, 21, 12] {
            // SAFETY: walking tables this address space owns.
            let e = unsafe { (*table(t)).0[((va >> shift) & 511) as usize] };
            if shift != 12 && e & PRESENT == 0 {
                return None;
            }
            if shift == 12 {
                return (e & MAPPED != 0).then_some(e);
            }
            t = pte_phys(e);
        }
        None
    }

    /// Direct-map bytes of the page holding `va`, if its entry passes `ok`.
    fn page(&self, va: u64, ok: impl Fn(u64) -> bool) -> Result<*mut u8, Fault> {
        match self.mapped(va) {
            Some(e) if ok(e) => Ok(layout::phys_to_virt(pte_phys(e) + (va & 0xFFF)) as *mut u8),
            _ => Err(Fault(va)),
        }
    }

    /// Makes the page at `va` this space's own before a write: a frame another space holds is
    /// copied (the rights stay as they are), and a copy-on-write page becomes writable. False
    /// when there is no page or no frame for the copy.
    fn own_page(&mut self, va: u64) -> bool {
        let Ok(Some(pte)) = self.leaf(va, false) else { return false };
        // SAFETY: a leaf entry of this address space.
        let e = unsafe { *pte };
        if e & MAPPED == 0 {
            return false;
        }
        let mut frame = pte_phys(e);
        if frame_shared(frame) {
            let Some(copy) = alloc_frame() else { return false };
            // SAFETY: both frames are whole pages of RAM under the direct map; the copy is ours
            // alone.
            unsafe { memory::copy_bytes(frame_bytes(copy) as *mut u8, frame_bytes(frame) as *const u8, PAGE as usize) };
            release_frame(frame);
            frame = copy;
        }
        let mut flags = e & !ADDR_BITS;
        if flags & COW != 0 {
            flags = (flags & !COW) | WRITABLE;
        }
        // SAFETY: rewriting a leaf entry of this address space. Stale translations of it die at
        // the next entry to ring 3 (`run` reloads CR3; the agent reaches user pages only
        // through the direct map).
        unsafe { *pte = private_pte(frame) | flags };
        true
    }

    /// Copies `data` into user memory page by page, after checking every page with `ok`
    /// (a copy-on-write page is made this space's own first).
    fn store(&mut self, va: u64, data: &[u8], ok: impl Fn(u64) -> bool + Copy) -> Result<(), Fault> {
        if !user_range(va, data.len() as u64) {
            return Err(Fault(va));
        }
        let end = va + data.len() as u64;
        let mut a = va;
        while a < end {
            self.page(a, ok)?;
            a = (a & !0xFFF) + PAGE;
        }
        let mut a = va & !0xFFF;
        while a < end {
            if !self.own_page(a) {
                return Err(Fault(a.max(va)));
            }
            a += PAGE;
        }
        let (mut a, mut done) = (va, 0usize);
        while a < end {
            let n = ((PAGE - (a & 0xFFF)).min(end - a)) as usize;
            let p = self.page(a, ok)?;
            // SAFETY: `p..p+n` lies inside one page of this address space (n stops at the
            // page end), checked above.
            unsafe { memory::copy_bytes(p, data[done..].as_ptr(), n) };
            a += n as u64;
            done += n;
        }
        Ok(())
    }

    /// Calls `f(va, entry)` for every mapped leaf page.
    fn each_leaf(&self, mut f: impl FnMut(u64, *mut u64)) {
        fn walk(t: u64, level: u32, base: u64, f: &mut dyn FnMut(u64, *mut u64)) {
            let top = if level == 4 { 256 } else { 512 };
            for i in 0..top {
                // SAFETY: `t` is a table of this address space at `level`.
                let e = unsafe { &mut (*table(t)).0[i] as *mut u64 };
                let va = base | ((i as u64) << (12 + 9 * (level - 1)));
                // SAFETY: as above.
                let v = unsafe { *e };
                if level == 1 {
                    if v & MAPPED != 0 {
                        f(va, e);
                    }
                } else if v & PRESENT != 0 {
                    walk(pte_phys(v), level - 1, va, f);
                }
            }
        }
        walk(self.pml4, 4, 0, &mut f);
    }
}

impl Memory for AddressSpace {
    fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Fault> {
        if !user_range(va, buf.len() as u64) {
            return Err(Fault(va));
        }
        let end = va + buf.len() as u64;
        let (mut a, mut done) = (va, 0usize);
        while a < end {
            let n = ((PAGE - (a & 0xFFF)).min(end - a)) as usize;
            let p = self.page(a, |e| e & PRESENT != 0)?;
            // SAFETY: `p..p+n` lies inside one readable page of this address space.
            unsafe { memory::copy_bytes(buf[done..].as_mut_ptr(), p, n) };
            a += n as u64;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.store(va, data, |e| e & PRESENT != 0 && e & (WRITABLE | COW) != 0)
    }

    fn poke(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.store(va, data, |_| true)
    }

    fn map(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        if va % PAGE != 0 || len % PAGE != 0 || !user_range(va, len) {
            return Err(Errno::EINVAL);
        }
        for page in (va..va + len).step_by(PAGE as usize) {
            let Some(pte) = self.leaf(page, true)? else { return Err(Errno::ENOMEM) };
            let frame = alloc_frame().ok_or(Errno::ENOMEM)?;
            // SAFETY: a leaf entry this address space owns; the frame it held (if any) was
            // ours and nothing refers to it any more.
            unsafe {
                if *pte & MAPPED != 0 {
                    release_frame(pte_phys(*pte));
                }
                *pte = private_pte(frame) | leaf_flags(prot);
            }
        }
        Ok(())
    }

    fn unmap(&mut self, va: u64, len: u64) {
        let end = va.saturating_add(len).min(agent::sandbox::elf::USER_END);
        let mut page = va & !0xFFF;
        while page < end {
            if let Ok(Some(pte)) = self.leaf(page, false) {
                // SAFETY: clearing a leaf entry this address space owns and freeing its frame.
                unsafe {
                    if *pte & MAPPED != 0 {
                        release_frame(pte_phys(*pte));
                    }
                    *pte = 0;
                }
            }
            page += PAGE;
        }
    }

    fn protect(&mut self, va: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        let end = va.checked_add(len).ok_or(Errno::ENOMEM)?;
        for page in (va..end).step_by(PAGE as usize) {
            self.mapped(page).ok_or(Errno::ENOMEM)?;
        }
        for page in (va..end).step_by(PAGE as usize) {
            if let Ok(Some(pte)) = self.leaf(page, false) {
                // SAFETY: rewriting the rights of a mapped leaf entry this address space owns.
                unsafe {
                    let frame = pte_phys(*pte);
                    let mut flags = leaf_flags(prot);
                    // Writable but shared: copy-on-write until the first write.
                    if flags & WRITABLE != 0 && frame_shared(frame) {
                        flags = (flags & !WRITABLE) | COW;
                    }
                    *pte = private_pte(frame) | flags;
                }
            }
        }
        Ok(())
    }

    fn fork(&mut self) -> Result<Self, Errno> {
        let mut child = AddressSpace::new()?;
        let mut result = Ok(());
        self.each_leaf(|va, pte| {
            if result.is_err() {
                return;
            }
            // SAFETY: `pte` is a mapped leaf of the parent.
            let mut e = unsafe { *pte };
            let frame = pte_phys(e);
            let Ok(Some(c)) = child.leaf(va, true) else {
                result = Err(Errno::ENOMEM);
                return;
            };
            if share_frame(frame) {
                // Both map the frame read-only from now on; a writable page is copy-on-write.
                if e & WRITABLE != 0 {
                    e = (e & !WRITABLE) | COW;
                    // SAFETY: rewriting the parent's leaf entry (its stale writable
                    // translation dies at the next CR3 load, before it runs again).
                    unsafe { *pte = e };
                }
                // SAFETY: a fresh leaf entry of the child.
                unsafe { *c = e };
            } else {
                // Not countable (never happens with heap frames): a private copy, as before.
                let Some(copy) = alloc_frame() else {
                    result = Err(Errno::ENOMEM);
                    return;
                };
                // SAFETY: both frames are whole pages of RAM under the direct map; the new
                // frame is ours alone; `c` is a fresh leaf entry of the child.
                unsafe {
                    memory::copy_bytes(frame_bytes(copy) as *mut u8, frame_bytes(frame) as *const u8, PAGE as usize);
                    *c = private_pte(copy) | (e & !ADDR_BITS);
                }
            }
        });
        result.map(|_| child)
    }

    fn empty(&self) -> Result<Self, Errno> {
        AddressSpace::new()
    }

    fn prot_of(&self, va: u64) -> Option<Prot> {
        self.mapped(va & !0xFFF).map(|e| {
            let present = e & PRESENT != 0;
            Prot { read: present, write: present && e & (WRITABLE | COW) != 0, exec: present && e & NO_EXECUTE == 0 }
        })
    }

    fn resolve_fault(&mut self, va: u64, write: bool) -> bool {
        // Only a write to a present copy-on-write page is ours to resolve.
        match self.mapped(va & !0xFFF) {
            Some(e) if write && e & PRESENT != 0 && e & COW != 0 => self.own_page(va & !0xFFF),
            _ => false,
        }
    }

    fn clear(&mut self) {
        self.each_leaf(|_, pte| {
            // SAFETY: a mapped leaf entry of this address space: let go of its frame, once.
            unsafe {
                release_frame(pte_phys(*pte));
                *pte = 0;
            }
        });
        for t in self.tables.drain(..) {
            free_frame(t);
        }
        // SAFETY: the PML4 is ours; its lower half pointed only at the tables just freed.
        unsafe { (&mut *table(self.pml4)).0[..256].fill(0) };
    }

    fn table_bytes(&self) -> u64 {
        (self.tables.len() as u64 + 1) * PAGE
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // SAFETY: back on the agent's own tables before freeing these.
        unsafe { asm!("mov cr3, {}", in(reg) memory::kernel_pml4_phys(), options(nostack)) };
        self.clear();
        free_frame(self.pml4);
    }
}

// The switch. `enter_user` saves the agent's callee-saved registers and stack, then `iretq`s to
// ring 3 with the process's registers (a `Regs`: gpr[16] in hardware order at 0, rip at 128,
// rflags at 136). Every way back — a system call, a fault, the timer — is a trap taken by the
// CPU onto TSS.RSP0 (or an IST stack), never a stack the process chose: `leave_user` saves the
// process's registers from the trap frame and returns from `enter_user` on the saved stack.
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
    push qword ptr [rdi + 32]
    push qword ptr [rdi + 136]
    push {user_code}
    push qword ptr [rdi + 128]
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8, [rdi + 64]
    mov r9, [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    iretq

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
    user_data = const USER_DATA as u64,
    user_code = const USER_CODE as u64,
);

unsafe extern "C" {
    fn agent_enter_user(regs: *mut Regs);
    fn agent_syscall_entry();
    fn agent_return_to_kernel() -> !;
}

static mut KERNEL_RSP: u64 = 0;
static mut CURRENT: *mut Regs = core::ptr::null_mut();
/// How the last `enter_user` came back: 0 syscall, 1 fault, 2 timer.
static mut EXIT_KIND: u8 = 0;
static mut FAULT: (u8, u64, u64) = (0, 0, 0);

const MSR_EFER: u32 = 0xC000_0080;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_SFMASK: u32 = 0xC000_0084;
const MSR_FS_BASE: u32 = 0xC000_0100;



const EFER_SCE: u64 = 1;
/// What SYSCALL clears in RFLAGS (TD only, see `init`): Linux's mask — every arithmetic flag,
/// TF, IF, DF, IOPL, NT, RF, AC and ID — so the agent never runs with the process's NT (an
/// IRETQ with NT set is a #GP), AC (SMAP off) or IF (an interrupt on the process's stack).
const SFMASK: u64 = 0x25_7FD5;

/// How system calls reach the agent.
///
/// On a plain VM and under SEV-SNP, EFER.SCE is clear: `syscall` in ring 3 is an invalid
/// opcode, and the #UD is delivered like any trap from ring 3 — the CPU switches to TSS.RSP0
/// as part of the delivery, so there is no instant at which ring 0 runs on the process's
/// stack, whatever event the host injects (SEV-SNP without Restricted Injection lets it
/// inject any vector at any instruction). `idt::exception` completes the instruction.
///
/// In a TD, EFER is the TDX module's (0x901: SCE, LME, NXE; an EFER write raises #VE and the
/// host cannot change it), so SYSCALL stays on: `agent_syscall_entry` (idt.rs) switches to
/// RSP0 at once. A TD's host can deliver only interrupts (masked by SFMASK) and NMIs; NMI,
/// #MC and #DB run on IST stacks, so nothing lands on the process's stack there either.
pub fn init() {
    let efer = rdmsr(MSR_EFER);
    // (A test image takes the TD's path everywhere, to test it on plain QEMU.)
    if super::tee::kind() == agent::tee::Kind::Tdx || cfg!(feature = "syscall-entry-test") {
        if efer & EFER_SCE == 0 {
            wrmsr(MSR_EFER, efer | EFER_SCE); // never in a TD (its EFER has SCE)
        }
        wrmsr(MSR_STAR, (u64::from(KERNEL_DATA) << 48) | (u64::from(KERNEL_CODE) << 32));
        wrmsr(MSR_LSTAR, agent_syscall_entry as *const () as u64);
        wrmsr(MSR_SFMASK, SFMASK);
    } else if efer & EFER_SCE != 0 {
        // Written only when set (it never is after reset or in the SNP launch state).
        wrmsr(MSR_EFER, efer & !EFER_SCE);
    }
    // CPUID from ring 3 traps where the platform allows (RDTSC does everywhere: CR4.TSD).
    if super::tee::trap_user_cpuid() {
        log::info!("sandbox: ring-3 CPUID and RDTSC answered by the agent (sandbox/cpu.rs)");
    } else {
        log::warn!("sandbox: this VM cannot trap ring-3 CPUID (no CPUID faulting, e.g. TCG): builders see the host's CPUID; RDTSC is still the agent's");
    }
}

/// Whether the two bytes at the process's `rip` are `syscall` (0f 05), read through its page
/// tables (the live CR3) from a present, user, executable page: never through the pointer.
pub fn at_syscall(rip: u64) -> bool {
    let mut b = [0u8; 2];
    fetch(rip, &mut b) && b == [0x0F, 0x05]
}

/// Copies instruction bytes at user address `va` into `buf` through the live page tables (the
/// current process's), if every byte lies on a present, user-accessible, executable page. The
/// agent never dereferences a user pointer (SMAP forbids it).
pub fn fetch(va: u64, buf: &mut [u8]) -> bool {
    let cr3: u64;
    // SAFETY: reading CR3 has no effect.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    let mut done = 0;
    while done < buf.len() {
        let Some(a) = va.checked_add(done as u64) else { return false };
        if !user_range(a, 1) {
            return false;
        }
        // One walk per page: every level present and user, no large page, the leaf executable.
        let mut t = pte_phys(cr3);
        let mut e = 0;
        for shift in [39u64, 30, 21, 12] {
            // SAFETY: `t` is a table of the live address space (the agent's PML4 or one of the
            // process's tables), private RAM under the direct map.
            e = unsafe { (*table(t)).0[((a >> shift) & 511) as usize] };
            if e & (PRESENT | USER) != PRESENT | USER || (shift != 12 && e & 0x80 != 0) {
                return false;
            }
            t = pte_phys(e);
        }
        if e & NO_EXECUTE != 0 {
            return false;
        }
        let n = ((PAGE - (a & 0xFFF)) as usize).min(buf.len() - done);
        // SAFETY: `n` bytes inside one present user page of the current process, read through
        // the direct map.
        unsafe { core::ptr::copy_nonoverlapping(layout::phys_to_virt(t + (a & 0xFFF)) as *const u8, buf[done..].as_mut_ptr(), n) };
        done += n;
    }
    true
}

/// Runs the process in `space` from `regs` until its next system call, fault or timer tick.
/// The process runs with interrupts enabled (so the timer can preempt it) and IOPL 0; the
/// agent itself always runs with them disabled.
pub fn run(space: &AddressSpace, regs: &mut Regs) -> Event {
    wrmsr(MSR_FS_BASE, regs.fs_base);
    regs.rflags = (regs.rflags & 0xCD5) | 0x202; // user-settable flags, IF set
    // SAFETY: `space` holds a valid PML4 whose upper half is the agent's own mapping (so the
    // agent keeps running after the switch, and loading CR3 flushes every user translation of
    // the previous process); `agent_enter_user` returns here, on this stack, at the process's
    // next event, with its registers stored in `regs`. The FXSAVE area is 16-byte aligned
    // (`Fpu` is `align(16)`); nothing between the restore and the save touches x87/SSE state
    // (the agent is built soft-float; the trap handlers use no vector registers). Between the
    // save and the next restore the agent may use the XMM registers (SHA-NI, AES-NI:
    // arch/sha256.rs, arch/aes.rs): the process's own are in `regs.fpu`.
    unsafe {
        asm!("mov cr3, {}", in(reg) space.pml4, options(nostack));
        asm!("fxrstor64 [{}]", in(reg) regs.fpu.0.as_ptr(), options(nostack, readonly));
        agent_enter_user(regs);
        asm!("fxsave64 [{}]", in(reg) regs.fpu.0.as_mut_ptr(), options(nostack));
        #[cfg(feature = "vector-clobber-test")]
        super::sha256::clobber_vector_registers();
        log_nmis();
        match *addr_of!(EXIT_KIND) {
            1 => {
                let (vector, error, address) = *addr_of!(FAULT);
                Event::Fault { vector, error, address }
            }
            2 => Event::Timer,
            _ => Event::Syscall,
        }
    }
}

/// NMIs seen so far, logged once each.
fn log_nmis() {
    static LOGGED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let n = super::idt::NMIS.load(core::sync::atomic::Ordering::Relaxed);
    if n != LOGGED.swap(n, core::sync::atomic::Ordering::Relaxed) {
        let rip = super::idt::NMI_RIP.load(core::sync::atomic::Ordering::Relaxed);
        log::warn!("nmi: {n} NMI(s) received so far, ignored (the last at RIP {rip:#x})");
    }
}

/// Saves a ring-3 trap frame into the process's registers and returns to the agent as if
/// `enter_user` had returned.
fn leave_user(f: &super::idt::TrapFrame, kind: u8) -> ! {
    // No handler runs once the agent is back on its own stack: the IST pointers go back to the
    // top (a ring-3 #DB or #VC leaves through here, not through its stub's epilogue).
    super::gdt::reset_ist();
    // SAFETY: CURRENT points at the registers `run` is waiting on (a trap from ring 3 can only
    // happen inside `run`); KERNEL_RSP is that call's saved stack.
    unsafe {
        let r = &mut **addr_of_mut!(CURRENT);
        r.gpr = [
            f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15,
        ];
        r.rip = f.rip;
        r.rflags = f.rflags;
        *addr_of_mut!(EXIT_KIND) = kind;
        agent_return_to_kernel()
    }
}

/// Called by the trap handler for a system call (the #UD of `syscall`, completed, or the
/// TD's SYSCALL entry): rax holds the number.
pub fn syscall_from_user(f: &super::idt::TrapFrame) -> ! {
    leave_user(f, 0)
}

/// Called by the trap handler for an exception raised in ring 3.
pub fn fault_from_user(f: &super::idt::TrapFrame, cr2: u64) -> ! {
    // SAFETY: FAULT is only touched here and by `run`, on this single CPU, with interrupts off.
    unsafe { *addr_of_mut!(FAULT) = (f.vector as u8, f.error_code, cr2) };
    leave_user(f, 1)
}

/// Called by the timer interrupt handler when the tick interrupted ring 3.
pub fn timer_from_user(f: &super::idt::TrapFrame) -> ! {
    leave_user(f, 2)
}
