//! Leaving the VM: a clean ACPI power-off (QEMU exits 0), or a failure status through QEMU's
//! `isa-debug-exit` device at port 0xF4 (QEMU exits `(code << 1) | 1`).
use super::cpu::{outb, outl, outw};
use super::pci;

/// Why the agent stopped abnormally. The loader maps QEMU's exit status back to these.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Failure {
    /// A Rust panic in the agent.
    Panic = 0x10,
    /// The heap ran out.
    OutOfMemory = 0x11,
    /// SEV-SNP/TDX: accepting or sharing memory failed, or a #VC/#VE could not be handled.
    Platform = 0x12,
    /// A CPU exception in the agent: 0x20 + vector.
    Exception = 0x20,
}

const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Exits QEMU with a failure status. Exceptions add their vector to `Failure::Exception`.
pub fn fail_with(code: u8) -> ! {
    super::serial::dump();
    outl(DEBUG_EXIT_PORT, u32::from(code));
    super::cpu::halt_forever()
}

pub fn fail(f: Failure) -> ! {
    fail_with(f as u8)
}

/// ICH9 (q35) power management: the firmware sets PMBASE and enables ACPI I/O, then writes
/// SLP_EN with SLP_TYP = 0 (soft off) to PM1a_CNT. Two exits: PMBASE (0x40, I/O space) and
/// ACPI_CNTL (0x44: ACPI_EN, SCI on IRQ 9) in one 8-byte ECAM store, then PM1a_CNT.
pub fn shutdown() -> ! {
    const PMBASE: u16 = 0x600;
    if !pci::ecam_enabled() {
        pci::enable_ecam();
    }
    let mut lpc = pci::Function::new(31, 0);
    lpc.write64(0x40, u64::from(PMBASE) | 1 | 0x80 << 32);
    outw(PMBASE + 4, 1 << 13); // PM1a_CNT: SLP_EN, SLP_TYP = 0
    // QEMU powers off asynchronously: give it time before falling back to the debug-exit
    // device (which would report status 1).
    let start = super::cpu::rdtsc();
    while super::cpu::rdtsc().wrapping_sub(start) < 10_000_000_000 {
        core::hint::spin_loop();
    }
    outb(DEBUG_EXIT_PORT, 0);
    super::cpu::halt_forever()
}
