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

pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`.
    unsafe { asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags)) }
    value
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
