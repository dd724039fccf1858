//! Single instructions: port I/O, MSRs, control registers.
use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; callers choose ports that exist.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) }
    value
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) }
}

/// RDMSR. Callers read MSRs that exist on the platform they run on (reading has no memory
/// effects; a missing MSR would fault, which is fatal in the agent).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR only reads a register into EDX:EAX.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR. For the arch layer only, whose callers write MSRs that configure the CPU without
/// touching memory the agent uses (each call site says which and why).
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the callers' contract above: the MSRs written (EFER.SCE, STAR/LSTAR/SFMASK,
    // FS_BASE, the GHCB MSR, IA32_APIC_BASE and x2APIC registers, MISC_FEATURES_ENABLES'
    // CPUID faulting) change no memory mapping
    // or memory the agent relies on.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags)) }
}

pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Stops the vCPU for good (interrupts are off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts disabled, `hlt` just parks the vCPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// The time-stamp counter (for timings reported in logs only; never in a statement).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter and has no other effect.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

pub const CR0_WP: u64 = 1 << 16;
pub const CR4_UMIP: u64 = 1 << 11;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const EFER_NXE: u64 = 1 << 11;

/// The ring-0 protections the CPU offers (CPUID leaf 7: SMEP EBX[7], SMAP EBX[20], UMIP
/// ECX[2]). Under SEV-SNP CPUID is answered from the CPUID page the PSP checked (the host may
/// hide a feature there, never invent one); in a TD by the TDX module's virtual CPUID.
#[derive(Clone, Copy, Debug)]
pub struct Protections {
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
}

pub fn protections() -> Protections {
    if core::arch::x86_64::__cpuid(0).eax < 7 {
        return Protections { smep: false, smap: false, umip: false };
    }
    let r = core::arch::x86_64::__cpuid_count(7, 0);
    Protections { smep: r.ebx & (1 << 7) != 0, smap: r.ebx & (1 << 20) != 0, umip: r.ecx & (1 << 2) != 0 }
}

/// The CR4 the agent runs with, from the value it booted with (rom32.s: PAE, OSFXSR,
/// OSXMMEXCPT; in a TD also the TDX module's fixed bits, e.g. MCE): plus SMEP (ring 0 never
/// executes a user page), SMAP (nor reads or writes one: the agent copies user memory through
/// the direct map only) and UMIP (ring 3 cannot read the GDT/IDT/TR addresses), where the CPU
/// has them. Bits are only ever added. This is the one place the agent decides CR4.
pub fn cr4_value(boot: u64, p: Protections) -> u64 {
    let mut cr4 = boot;
    if p.smep {
        cr4 |= CR4_SMEP;
    }
    if p.smap {
        cr4 |= CR4_SMAP;
    }
    if p.umip {
        cr4 |= CR4_UMIP;
    }
    cr4
}

pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Turns on CR0.WP (ring 0 honours read-only pages: the image's .text and .rodata stay
/// unwritable even for the agent) and the CR4 bits of [`cr4_value`]. Runs once the agent is on
/// its own page tables (arch::memory::init_paging), where nothing writes a read-only page and
/// nothing in ring 0 touches a user page through a user address.
pub fn harden(p: Protections) {
    let cr0 = read_cr0() | CR0_WP;
    let cr4 = cr4_value(read_cr4(), p);
    // SAFETY: WP, SMEP, SMAP and UMIP only forbid accesses the agent does not make (see
    // above); CPUID reported each CR4 bit set here, so the write does not fault.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
}
