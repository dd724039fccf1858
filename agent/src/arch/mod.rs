//! The arch layer: everything that touches the machine, and the only place with `unsafe`.
//!
//! The vCPU runs, in order: `reset.s` (the reset vector at 0xFFFFFFF0) → `rom16.s` (real mode to
//! protected mode) → `rom32.s` (copy the image to RAM, boot page tables, long mode) →
//! [`rust_start`] → GDT/TSS → IDT (with the #VC/#VE handlers) → platform (plain, SEV-SNP or TDX:
//! GHCB, shared alias) → serial → memory (accept RAM, shared DMA pool, heap) → secrets (SNP:
//! VMPCK0 into the key page, the secrets page wiped) → system calls → timer → `crate::main`.
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod layout;
pub mod memory;
pub mod pci;
pub mod power;
pub mod serial;
pub mod snp;
pub mod tdx;
pub mod tee;
pub mod timer;
pub mod user;
pub mod virtio;

core::arch::global_asm!(include_str!("reset.s"), options(att_syntax, raw));
core::arch::global_asm!(include_str!("rom16.s"), options(att_syntax, raw));
core::arch::global_asm!(include_str!("rom32.s"), options(att_syntax, raw));
core::arch::global_asm!(include_str!("footer.s"), options(att_syntax, raw));

/// The first Rust code: `rom32.s` jumps here in 64-bit mode, on the boot stack, in the higher half.
#[unsafe(no_mangle)]
extern "C" fn rust_start() -> ! {
    gdt::init();
    idt::init();
    // Inside SEV-SNP or a TD, port I/O traps: the platform comes before the serial port.
    tee::init();
    serial::init();
    tee::log_platform();
    memory::init();
    tee::take_secrets();
    user::init();
    timer::init();
    crate::main()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::emergency_print(format_args!("agent panic: {info}\n"));
    power::fail(power::Failure::Panic)
}
