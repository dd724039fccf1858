//! The GDT, the TSS and the agent's stacks. Selectors are laid out for SYSCALL/SYSRET (STAR):
//! kernel code 0x08, kernel data 0x10, user data 0x18|3, user code 0x20|3; then the TSS, whose
//! RSP0 is the stack the CPU switches to when ring 3 traps, and whose IST entries give the
//! events that can arrive at any instant a stack of their own ([`Ist`]).
//!
//! Every stack has an unmapped guard below it (`memory::init_paging` leaves it out of the
//! kernel window): an overflow faults instead of writing what lies below, and the fault — a #PF
//! that cannot push its frame, hence a #DF — is reported from the #DF stack.
use core::arch::asm;
use core::ptr::addr_of;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const USER_DATA: u16 = 0x18 | 3;
pub const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

#[repr(C, packed(4))]
pub(super) struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

/// A stack of `SIZE` bytes with a guard of `GUARD` bytes below it (unmapped in the kernel
/// window, so an overflow faults).
#[repr(C, align(4096))]
pub struct GuardedStack<const GUARD: usize, const SIZE: usize> {
    guard: [u8; GUARD],
    stack: [u8; SIZE],
}

impl<const GUARD: usize, const SIZE: usize> GuardedStack<GUARD, SIZE> {
    pub const fn new() -> Self {
        GuardedStack { guard: [0; GUARD], stack: [0; SIZE] }
    }
    /// The first address above the stack (the initial RSP).
    pub fn top(&self) -> u64 {
        self.stack.as_ptr() as u64 + SIZE as u64
    }
    /// The guard's physical range.
    pub fn guard_phys(&self) -> core::ops::Range<u64> {
        let g = super::layout::virt_to_phys(self.guard.as_ptr() as u64);
        g..g + GUARD as u64
    }
}

/// The IST stacks (TSS.IST1..6): events that may arrive at any instant, even while another
/// handler runs, get a known-good stack. Each handler that may return moves its IST pointer down
/// by [`IST_SLICE`] while it runs (idt.rs), so the same event nested inside it (an NMI after an
/// IRET of a nested #VC, or anything a hostile SEV-SNP host injects) gets a fresh slice instead
/// of overwriting the frame in use; the guard below is a whole slice, so nesting deeper than the
/// stack holds faults into it (→ #DF) rather than landing in other memory.
#[derive(Clone, Copy)]
pub enum Ist {
    DoubleFault = 1,
    Nmi = 2,
    MachineCheck = 3,
    Debug = 4,
    /// SEV-SNP #VC.
    Vc = 5,
    /// TDX #VE.
    Ve = 6,
}

/// How far an IST pointer moves down while its handler runs: more than one handler uses
/// (`idt::exception`, with the #VC handler and its private GHCB copy inlined, reserves 6.6 KiB
/// of stack: objdump of the 2026-12-04 image).
pub const IST_SLICE: u64 = 0x4000;
const IST_STACK: usize = 4 * IST_SLICE as usize;
type IstStack = GuardedStack<{ IST_SLICE as usize }, IST_STACK>;

#[unsafe(no_mangle)]
pub(super) static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: size_of::<Tss>() as u16, // no I/O permission bitmap: ring 3 gets no ports
};
/// TSS.RSP0: every trap from ring 3 (system calls included) starts on it, switched to by the CPU.
static mut KERNEL_TRAP_STACK: GuardedStack<0x1000, 0x10000> = GuardedStack::new();
static mut IST_STACKS: [IstStack; 6] = [const { IstStack::new() }; 6];

/// Byte offset of IST`n` (1-based) in the TSS, for the entry stubs.
pub const fn tss_ist_offset(ist: Ist) -> usize {
    36 + 8 * (ist as usize - 1)
}

/// Puts every IST pointer back at the top of its stack. For the paths that leave a handler
/// without returning through its stub (back to the agent from a ring-3 event): no handler
/// is running then.
pub fn reset_ist() {
    // SAFETY: one CPU; called with interrupts off from a handler about to leave for the
    // agent's own stack, when no other handler is active.
    unsafe {
        let stacks = &*addr_of!(IST_STACKS);
        for (i, s) in stacks.iter().enumerate() {
            TSS.ist[i] = s.top();
        }
    }
}

/// Physical ranges of every stack's guard (left unmapped by `memory::init_paging`).
pub fn stack_guards() -> [core::ops::Range<u64>; 8] {
    // SAFETY: only addresses are taken.
    let (trap, ist) = unsafe { (&*addr_of!(KERNEL_TRAP_STACK), &*addr_of!(IST_STACKS)) };
    [
        super::memory::boot_stack_guard(),
        trap.guard_phys(),
        ist[0].guard_phys(),
        ist[1].guard_phys(),
        ist[2].guard_phys(),
        ist[3].guard_phys(),
        ist[4].guard_phys(),
        ist[5].guard_phys(),
    ]
}
static mut GDT: [u64; 7] = [
    0,
    0x00AF_9A00_0000_FFFF, // 0x08 kernel code, 64-bit
    0x00CF_9200_0000_FFFF, // 0x10 kernel data
    0x00CF_F200_0000_FFFF, // 0x18 user data (DPL 3)
    0x00AF_FA00_0000_FFFF, // 0x20 user code, 64-bit (DPL 3)
    0,                     // 0x28 TSS (low)
    0,                     // 0x30 TSS (high)
];

#[repr(C, packed)]
struct Descriptor {
    limit: u16,
    base: u64,
}

pub fn init() {
    // SAFETY: runs once on the only vCPU before interrupts or other users of these statics
    // exist; the GDT/TSS statics live for the whole run, as the CPU requires.
    unsafe {
        let tss = addr_of!(TSS) as u64;
        TSS.rsp[0] = (*addr_of!(KERNEL_TRAP_STACK)).top();
        reset_ist();
        let limit = size_of::<Tss>() as u64 - 1;
        GDT[5] = limit | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56);
        GDT[6] = tss >> 32;
        let desc = Descriptor { limit: (size_of::<[u64; 7]>() - 1) as u16, base: addr_of!(GDT) as u64 };
        asm!(
            "lgdt [{desc}]",
            // Reload CS with a far return, then the data segments.
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            desc = in(reg) &desc,
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) u64::from(KERNEL_DATA),
            tss = in(reg) u64::from(TSS_SELECTOR),
            tmp = out(reg) _,
        );
    }
}
