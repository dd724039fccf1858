//! The preemption timer: the local APIC timer in periodic mode (and LINT1, for NMIs). It only ever fires while a
//! sandboxed process runs (the agent itself runs with interrupts disabled); each tick hands
//! control back to the sandbox kernel, which charges CPU time and rotates the run queue.
//!
//! The legacy 8259 PICs are masked first: nothing else may interrupt a process (after reset
//! QEMU's PIT would otherwise deliver IRQ 0 on vector 0, which looks like #DE).
//!
//! On a plain VM the APIC is programmed through its xAPIC registers (MMIO; QEMU 7.2's TCG has
//! no x2APIC). Inside SEV-SNP or a TD it runs in x2APIC mode, through MSRs 0x800 + register/16
//! (SDM vol. 3 "x2APIC Register Address Space"): a TD has no xAPIC at all, and an MSR exit is
//! simpler to emulate (#VC/#VE) than MMIO.
use super::cpu::outb;
use super::layout;
use super::cpu::{rdmsr, wrmsr};
use core::sync::atomic::{AtomicU32, Ordering};

/// The timer's interrupt vector.
pub const VECTOR: u8 = 0x20;
/// The APIC's spurious-interrupt vector.
pub const SPURIOUS: u8 = 0xFF;
/// Ticks per second: a 10 ms tick.
const TICKS_PER_SECOND: u64 = 100;

/// APIC timer counts per tick (divide-by-1): the timer's clock (`agent::tee::apic_timer_hz`:
/// 1 GHz on QEMU/KVM and SEV-SNP, the 25 MHz crystal in a TD) / [`TICKS_PER_SECOND`]. Set
/// once by `init`.
static COUNT_PER_TICK: AtomicU32 = AtomicU32::new(10_000_000);

fn count_per_tick() -> u32 {
    COUNT_PER_TICK.load(Ordering::Relaxed)
}

const IA32_APIC_BASE: u32 = 0x1B;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT1: u64 = 0x360;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_CURRENT_COUNT: u64 = 0x390;
const REG_DIVIDE: u64 = 0x3E0;

fn apic_base() -> u64 {
    rdmsr(IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000
}

fn x2apic() -> bool {
    super::tee::kind() != agent::tee::Kind::None
}



fn write(reg: u64, v: u32) {
    if x2apic() {
        return wrmsr(0x800 + (reg >> 4) as u32, u64::from(v));
    }
    let addr = layout::shared_phys_to_virt(apic_base() + reg) as *mut u32;
    // SAFETY: the local APIC's registers are MMIO in the 4 KiB page at IA32_APIC_BASE (below
    // 4 GiB, covered by the shared alias); these writes only configure the timer and LINT1 and signal EOI.
    unsafe { addr.write_volatile(v) }
}

/// Programs the timer once: on the first use, when the first sandbox starts (`tsc_per_tick`).
/// A boot that runs no builder (Ping, a refused request) never makes the PIC and APIC exits.
pub fn ensure() {
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !DONE.swap(true, Ordering::Relaxed) {
        init();
    }
}

fn init() {
    let hz = agent::tee::apic_timer_hz(super::tee::kind(), crystal_hz());
    COUNT_PER_TICK.store((hz / TICKS_PER_SECOND).clamp(1, u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    if x2apic() {
        // IA32_APIC_BASE: EN (bit 11) and EXTD (bit 10). A TD starts in x2APIC mode already.
        let base = rdmsr(IA32_APIC_BASE);
        if base & (3 << 10) != 3 << 10 {
            wrmsr(IA32_APIC_BASE, base | (3 << 10));
        }
    }
    outb(0x21, 0xFF); // mask every line of the master PIC
    outb(0xA1, 0xFF); // and of the slave
    write(REG_SVR, 0x100 | u32::from(SPURIOUS)); // software-enable the APIC
    write(REG_DIVIDE, 0b1011); // divide by 1
    write(REG_LVT_TIMER, (1 << 17) | u32::from(VECTOR)); // periodic
    write(REG_INITIAL_COUNT, count_per_tick());
    // LINT1 delivers NMIs, as firmware sets it up on a PC (the host can deliver an NMI either
    // way; this makes the agent's NMI handling the same whichever path it takes, and testable
    // with QEMU's `inject-nmi` under TCG, which goes through LINT1).
    write(REG_LVT_LINT1, 0b100 << 8);
    log::info!("timer: APIC at {} Hz, {} counts per 10 ms tick", hz, count_per_tick());
}

/// CPUID.15H:ECX, the core crystal clock (0 when the leaf is absent or silent).
fn crystal_hz() -> u32 {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    if __cpuid(0).eax < 0x15 {
        return 0;
    }
    __cpuid_count(0x15, 0).ecx
}

fn read(reg: u64) -> u32 {
    if x2apic() {
        return rdmsr(0x800 + (reg >> 4) as u32) as u32;
    }
    let addr = layout::shared_phys_to_virt(apic_base() + reg) as *const u32;
    // SAFETY: a read of a local APIC register (MMIO in the page at IA32_APIC_BASE, under the
    // shared alias); reading the current count has no side effect.
    unsafe { addr.read_volatile() }
}

static mut TSC_PER_TICK: u64 = 0;

/// TSC cycles per timer tick, measured once (on first use, so boot is not slowed) over 1 ms of
/// the APIC timer's count: the sandbox charges the time the agent spends on a build with it.
pub fn tsc_per_tick() -> u64 {
    ensure();
    // SAFETY: one CPU, interrupts off in the agent: nothing else touches the cache.
    let cached = unsafe { *core::ptr::addr_of!(TSC_PER_TICK) };
    if cached != 0 {
        return cached;
    }
    let per = count_per_tick();
    let span = per / 10; // 1 ms
    let c0 = read(REG_CURRENT_COUNT);
    let t0 = super::cpu::rdtsc();
    loop {
        // Periodic mode: the count runs down from count_per_tick() and reloads.
        let c = read(REG_CURRENT_COUNT);
        let gone = if c <= c0 { c0 - c } else { c0 + per - c };
        if gone >= span {
            break;
        }
    }
    let per_tick = ((super::cpu::rdtsc() - t0) * 10).max(1);
    // SAFETY: as above.
    unsafe { *core::ptr::addr_of_mut!(TSC_PER_TICK) = per_tick };
    per_tick
}

/// Busy-waits about `ms` milliseconds of guest time (measured with the TSC, calibrated against
/// the APIC timer). For the rare waits the platform asks for (an SNP guest request the PSP is
/// too busy for).
pub fn spin_ms(ms: u64) {
    let cycles = tsc_per_tick().saturating_mul(ms) / (1000 / TICKS_PER_SECOND);
    let start = super::cpu::rdtsc();
    while super::cpu::rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}
