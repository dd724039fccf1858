//! The arch layer: everything that touches the machine, and the only place with `unsafe`.
//!
//! The vCPU runs, in order: `reset.s` (the reset vector at 0xFFFFFFF0) → `rom16.s` (real mode to
//! protected mode) → `rom32.s` (copy the image to RAM, boot page tables, long mode) →
//! [`rust_start`] → GDT/TSS → IDT (with the #VC/#VE handlers) → platform (plain, SEV-SNP or TDX:
//! GHCB, shared alias) → the log (a ring in memory; no device) → ring-0 protections → SHA-256's
//! block function (SHA-NI or portable) → AES-256's block cipher for SNP guest messages (AES-NI
//! or portable) → memory (accept RAM, shared DMA pool, heap) → secrets (SNP: VMPCK0 into the
//! key page, the secrets page wiped) → system calls → `crate::main` (the timer when the first
//! sandboxed process runs).
pub mod aes;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod layout;
pub mod memory;
pub mod pci;
pub mod power;
pub mod serial;
pub mod sha256;
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
    // Inside SEV-SNP or a TD, port I/O traps: the platform comes before the serial port (which
    // the log only uses when asked to, or for a fatal error).
    tee::init();
    serial::init();
    tee::log_platform();
    protect();
    // SHA-NI and AES-NI inside SEV-SNP or a TD, whose ring 0 runs on the CPU itself. On a plain
    // VM (tests, development) the portable block function and cipher: some hypervisors run a
    // plain guest's ring 0 through their instruction emulator, which has no SSE/SHA/AES
    // instructions (this project's KVM, PVM, stops the VM at the first `pshufd`, and its CPUID
    // shows SHA-NI whatever -cpu says), and a plain VM's figures are not attested anyway (nor
    // does a plain VM have a VMPCK to encrypt with).
    if tee::kind() != agent::tee::Kind::None {
        sha256::init();
        aes::init();
    } else {
        log::info!("sha256: portable block function (a plain VM: SHA-NI is used inside SEV-SNP or TDX only)");
        log::info!("aes: portable block cipher (a plain VM: AES-NI is used inside SEV-SNP or TDX only)");
    }
    memory::init();
    tee::take_secrets();
    user::init();
    report_protection();
    // The timer is programmed when a sandbox first needs it (`timer::init` from user::run):
    // a boot that runs no builder makes none of its exits.
    crate::main()
}

/// Ring 0's own protections, once the agent runs on its own page tables (`memory::init_paging`,
/// from `tee::init`): CR0.WP, SMEP, SMAP, UMIP. Inside SEV-SNP or a TD, where the host could
/// hide a feature from CPUID, the agent refuses to run without all of them.
fn protect() {
    let p = cpu::protections();
    if tee::kind() != agent::tee::Kind::None && !(p.smep && p.smap && p.umip) {
        log::error!("cpu: SMEP, SMAP and UMIP are required inside a TEE, CPUID reports {p:?}");
        power::fail(power::Failure::Platform);
    }
    cpu::harden(p);
}

/// The log lines a test checks: control registers, and a walk of the live page tables.
fn report_protection() {
    let efer = cpu::rdmsr(0xC000_0080);
    let cr4 = cpu::read_cr4();
    let on = |bit: u64, name: &'static str| if cr4 & bit != 0 { name } else { "" };
    log::info!(
        "cpu: cr0={:#x} cr4={:#x} efer={:#x} (WP {}, {} {} {}, NXE {}, system calls via {})",
        cpu::read_cr0(),
        cr4,
        efer,
        cpu::read_cr0() & cpu::CR0_WP != 0,
        on(cpu::CR4_SMEP, "SMEP"),
        on(cpu::CR4_SMAP, "SMAP"),
        on(cpu::CR4_UMIP, "UMIP"),
        efer & cpu::EFER_NXE != 0,
        if efer & 1 != 0 { "SYSCALL" } else { "#UD" },
    );
    let r = memory::paging_report();
    log::info!(
        "paging: {} W+X pages, {} executable pages, {} user pages, identity map {}, shared alias {} KiB",
        r.writable_executable,
        r.executable,
        r.user,
        if r.lower_half_entries == 0 { "absent" } else { "PRESENT" },
        r.shared >> 10,
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::emergency_print(format_args!("agent panic: {info}\n"));
    power::fail(power::Failure::Panic)
}
