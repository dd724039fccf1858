//! The platform: a plain VM, an SEV-SNP guest or a TD — what `rom32.s` found before paging
//! (it had to: SNP's page tables need the C-bit from the first entry on), confirmed and set up
//! here, and the one place the rest of the arch layer asks about it:
//!
//! - [`init`] (before the serial port: under SNP and TDX port I/O already goes through the
//!   `#VC`/`#VE` handlers below): SNP negotiates the GHCB protocol, makes the GHCB page shared
//!   and registers it; TDX reads TDG.VP.INFO for the shared bit. Both build the shared alias
//!   of the direct map (`layout::SHARED_MAP`).
//! - [`vc`] and [`vm_exception`]: the `#VC` (SNP) and `#VE` (TDX) handlers, called from the trap
//!   entry. They emulate CPUID, port I/O, MSRs and MMIO with the portable logic in
//!   `agent::tee` and hand everything else back as a fault.
//! - [`accept`], [`set_shared`]: memory (arch/memory.rs); [`private_pte`], [`pte_phys`]: the
//!   user page tables (arch/user.rs); [`attest`]: the report for a statement (job.rs).
//!
//! The decisions and encodings are portable code (`agent/src/tee/`, unit-tested against the
//! specifications and host-side models); this file moves bytes between them and the hardware.
use super::idt::TrapFrame;
use super::layout;
use super::power::{self, Failure};
use super::snp::SnpHardware;
use super::tdx::TdxHardware;
use agent::tee::insn::{self, Gprs};
use agent::tee::snp::{self as psnp, PageState};
use agent::tee::tdx as ptdx;
use agent::tee::{Attester, Encryption, Evidence, Kind, NoTee, Platform, Probe, Range, TeeError, PAGE_4K};
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::ptr::{addr_of, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

// Written by rom32.s after it zeroes .bss: 0 plain, 1 SEV-SNP, 2 TDX; the C-bit position.
#[unsafe(no_mangle)]
static mut BOOT_PLATFORM: u32 = 0;
#[unsafe(no_mangle)]
static mut BOOT_CBIT: u32 = 0;

/// The SEV-SNP CPUID page and secrets page (arch/footer.s: the SEV metadata's sections).
const SNP_CPUID_PAGE: u64 = 0x9E000;
const SNP_SECRETS_PAGE: u64 = 0x9F000;
/// Certificate buffer of the extended guest request: VCEK + ASK + ARK take about 5 KiB.
const SNP_CERT_PAGES: usize = 4;
/// GetQuote's shared buffer: a quote with its PCK certificate chain is 5–8 KiB.
const TDX_QUOTE_BYTES: usize = 8 * 4096;

static KIND: AtomicU8 = AtomicU8::new(0);
/// `Encryption` as (tag << 8) | bit: 0 none, 1 C-bit, 2 shared bit.
static ENCRYPTION: AtomicU64 = AtomicU64::new(0);
/// Whether a #VC/#VE handler is running (a failure inside one must not trap again).
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// The GHCB page: private .bss memory, made shared by [`init`] and from then on used only
/// through the shared alias.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut GHCB_PAGE: Page = Page([0; 4096]);

/// The platform [`init`] found (`Kind::None` before it ran).
pub fn kind() -> Kind {
    match KIND.load(Ordering::Relaxed) {
        1 => Kind::SevSnp,
        2 => Kind::Tdx,
        _ => Kind::None,
    }
}

pub fn encryption() -> Encryption {
    let e = ENCRYPTION.load(Ordering::Relaxed);
    match e >> 8 {
        1 => Encryption::CBit(e as u8),
        2 => Encryption::SharedBit(e as u8),
        _ => Encryption::None,
    }
}

/// A page-table entry's address bits for private memory at `phys`.
pub fn private_pte(phys: u64) -> u64 {
    encryption().pte_address(phys, false)
}

/// The guest-physical address in a page-table entry (without flags or the C-/shared bit).
pub fn pte_phys(entry: u64) -> u64 {
    entry & 0x000F_FFFF_FFFF_F000 & !encryption().mask()
}

/// The GHCB page's physical address (the shared alias maps it under SEV-SNP).
pub fn ghcb_phys() -> u64 {
    ghcb_gpa()
}

fn ghcb_gpa() -> u64 {
    layout::virt_to_phys(addr_of!(GHCB_PAGE) as u64)
}

fn snp_hw() -> SnpHardware {
    let gpa = ghcb_gpa();
    let page = NonNull::new(layout::shared_phys_to_virt(gpa) as *mut [u8; 4096]).unwrap();
    // SAFETY: the GHCB page is made shared and registered by `init` before any GHCB exit (until
    // then only the MSR protocol is used, which does not touch the page); the handlers and the
    // platform code never overlap in using it (one CPU; no GHCB exit triggers a #VC).
    unsafe { SnpHardware::new(page, gpa, layout::phys_to_virt) }
}

fn tdx_hw() -> TdxHardware {
    TdxHardware { virt_to_phys: layout::virt_to_phys, shared_bit: match encryption() {
        Encryption::SharedBit(b) => b,
        _ => 0,
    } }
}

/// Stops the guest from a state where nothing else can be trusted to work: before the GHCB
/// exists, or when a handler failed. SNP: GHCB MSR protocol termination (reason set 1, the
/// agent's; `reason`); TDX: ReportFatalError; plain: the debug-exit port.
fn terminate(reason: u8) -> ! {
    match kind() {
        Kind::SevSnp => {
            super::snp::msr_exit(psnp::msr_terminate_request(1, reason));
        }
        Kind::Tdx => {
            let mut r = ptdx::vmcall_report_fatal_error(u16::from(reason), &reason::message(reason));
            // SAFETY: ReportFatalError takes no memory operand; the TD stops.
            unsafe { super::tdx::tdcall(&mut r) };
        }
        Kind::None => {}
    }
    power::fail(Failure::Platform)
}

/// Termination reasons (set 1).
mod reason {
    pub const PLATFORM_MISMATCH: u8 = 2;
    pub const GHCB_SETUP: u8 = 3;
    pub const TD_INFO: u8 = 4;
    pub const HANDLER: u8 = 5;
    pub const CPUID_VE: u8 = 6;
    pub const SEV_FEATURES: u8 = 7;
    pub const NOT_VMPL0: u8 = 8;
    pub const TD_CONFIGURATION: u8 = 9;

    /// The 16-byte text a TD sends with ReportFatalError (QEMU prints it).
    pub fn message(reason: u8) -> [u8; 16] {
        let text: &[u8] = match reason {
            PLATFORM_MISMATCH => b"agent: platform",
            GHCB_SETUP => b"agent: setup",
            TD_INFO => b"agent: td info",
            HANDLER => b"agent: #VE",
            CPUID_VE => b"agent: cpuid #VE",
            TD_CONFIGURATION => b"agent: td config",
            _ => b"agent: fatal",
        };
        let mut m = [0u8; 16];
        m[..text.len()].copy_from_slice(text);
        m
    }
}

/// Confirms the platform `rom32.s` found and sets it up. Runs before the serial port is usable
/// (it logs nothing; [`log_platform`] does, afterwards).
pub fn init() -> Kind {
    // SAFETY: written by rom32.s before paging; read here once, nothing writes them again.
    let (boot, cbit) = unsafe { (*addr_of!(BOOT_PLATFORM), *addr_of!(BOOT_CBIT)) };
    match boot {
        1 => {
            KIND.store(1, Ordering::Relaxed);
            // SEV_STATUS is never intercepted (no #VC); only features the agent runs with
            // (`agent::tee::snp::SEV_STATUS_ALLOWED`), else stop before anything else.
            if psnp::check_sev_status(super::cpu::rdmsr(psnp::MSR_SEV_STATUS)).is_err() {
                terminate(reason::SEV_FEATURES);
            }
            let cbit = cbit as u8;
            ENCRYPTION.store((1 << 8) | u64::from(cbit), Ordering::Relaxed);
            super::memory::init_paging(Encryption::CBit(cbit));
            if snp_init(cbit).is_err() {
                terminate(reason::GHCB_SETUP);
            }
            Kind::SevSnp
        }
        2 => {
            KIND.store(2, Ordering::Relaxed);
            // Only a TD enters at rom32_td_entry; CPUID leaf 0x21 (answered by the TDX module
            // itself, never the host) must agree.
            if agent::tee::detect(&td_probe()) != Kind::Tdx {
                terminate(reason::PLATFORM_MISMATCH);
            }
            let info = match ptdx::vp_info(&mut tdx_hw()) {
                Ok(i) => i,
                Err(_) => terminate(reason::TD_INFO),
            };
            // One vCPU, SEPT_VE_DISABLE (`agent::tee::tdx::check_td`).
            if ptdx::check_td(&info).is_err() {
                terminate(reason::TD_CONFIGURATION);
            }
            let Some(bit) = ptdx::shared_bit(info.gpaw) else { terminate(reason::TD_INFO) };
            ENCRYPTION.store((2 << 8) | u64::from(bit), Ordering::Relaxed);
            super::memory::init_paging(Encryption::SharedBit(bit));
            TD_ATTRIBUTES.store(info.attributes, Ordering::Relaxed);
            Kind::Tdx
        }
        _ => {
            super::memory::init_paging(Encryption::None);
            Kind::None
        }
    }
}

static TD_ATTRIBUTES: AtomicU64 = AtomicU64::new(0);

fn td_probe() -> Probe {
    let max_leaf = __cpuid(0).eax;
    let leaf_21 = (max_leaf >= 0x21).then(|| {
        let r = __cpuid_count(0x21, 0);
        [r.ebx, r.edx, r.ecx]
    });
    Probe { max_leaf, leaf_21, ..Default::default() }
}

/// SNP: GHCB protocol version, the hypervisor's features (SNP support), VMPL0 (RMPADJUST of
/// the still-private GHCB page), then the GHCB page — validation rescinded, made shared by the
/// MSR protocol (GHCB spec "SNP Page State Change" via MSR), cleared through the shared alias,
/// registered (GHCB spec "GHCB GPA Registration").
fn snp_init(cbit: u8) -> Result<(), TeeError> {
    let mut hw = snp_hw();
    psnp::negotiate(&mut hw, cbit)?;
    psnp::hv_features(&mut hw)?;
    let gpa = ghcb_gpa();
    if psnp::check_vmpl0(&mut hw, gpa).is_err() {
        terminate(reason::NOT_VMPL0);
    }
    psnp::pvalidate_range(&mut hw, Range::new(gpa, PAGE_4K)?, false)?;
    psnp::msr_page_state_change(&mut hw, gpa, PageState::Shared)?;
    // SAFETY: the page is now shared and mapped by the shared alias; nothing else uses it.
    unsafe { core::ptr::write_bytes(layout::shared_phys_to_virt(gpa) as *mut u8, 0, 4096) };
    psnp::register_ghcb(&mut hw, gpa)
}

/// Logs the platform (after the serial port is up).
pub fn log_platform() {
    let name = agent::statement::attestation_name(kind().attestation());
    match encryption() {
        // What a first run on hardware needs to see (docs/running-on-*.md, the checklists):
        // SEV_STATUS whole (never intercepted: no #VC), the VMPL (checked by `snp_init`), the TD's
        // attributes and vCPU count (checked by `ptdx::check_td`).
        Encryption::CBit(b) => {
            let status = super::cpu::rdmsr(psnp::MSR_SEV_STATUS);
            log::info!("platform: {name} (C-bit {b}, GHCB at {:#x}, SEV_STATUS {status:#x}, VMPL 0)", ghcb_gpa());
        }
        Encryption::SharedBit(b) => {
            let attrs = TD_ATTRIBUTES.load(Ordering::Relaxed);
            log::info!("platform: {name} (shared bit {b}, TD attributes {attrs:#x}, 1 vCPU)");
            if attrs & ptdx::ATTR_DEBUG != 0 {
                log::warn!("platform: this TD is a debug TD: its memory is not confidential");
            }
        }
        Encryption::None => log::info!("platform: {name}"),
    }
}

fn with_platform<R>(f: impl FnOnce(&mut dyn Platform) -> R) -> R {
    match kind() {
        Kind::None => f(&mut NoTee),
        Kind::SevSnp => {
            let Encryption::CBit(cbit) = encryption() else { unreachable!() };
            f(&mut psnp::SnpPlatform { hw: snp_hw(), cbit, ghcb_ready: true })
        }
        Kind::Tdx => {
            let Encryption::SharedBit(shared_bit) = encryption() else { unreachable!() };
            f(&mut ptdx::TdxPlatform { hw: tdx_hw(), shared_bit })
        }
    }
}

/// Makes CPUID in ring 3 trap to the agent (the sandbox answers it, `agent::sandbox::cpu`).
/// SEV-SNP: it always raises #VC. TDX: TDG.VP.CPUIDVE.SET (a module that refuses stops the
/// TD). A plain VM: CPUID faulting (MSR_PLATFORM_INFO bit 31 says it exists,
/// MSR_MISC_FEATURES_ENABLES bit 0 turns it on; Linux `set_cpuid_faulting`), which KVM offers
/// every guest; QEMU's TCG has none (its `helper_cpuid` never faults, and unknown MSRs read 0),
/// so there the builder sees QEMU's CPUID — on a plain VM, which attests nothing. Returns
/// whether ring-3 CPUID traps.
pub fn trap_user_cpuid() -> bool {
    const MSR_PLATFORM_INFO: u32 = 0xCE;
    const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
    const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
    const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;
    match kind() {
        Kind::SevSnp => true,
        Kind::Tdx => {
            if ptdx::trap_user_cpuid(&mut tdx_hw()).is_err() {
                terminate(reason::CPUID_VE);
            }
            true
        }
        Kind::None => {
            if super::cpu::rdmsr(MSR_PLATFORM_INFO) & PLATFORM_INFO_CPUID_FAULT == 0 {
                return false;
            }
            let v = super::cpu::rdmsr(MSR_MISC_FEATURES_ENABLES);
            super::cpu::wrmsr(MSR_MISC_FEATURES_ENABLES, v | MISC_FEATURES_CPUID_FAULT);
            true
        }
    }
}

/// Makes RAM the launch did not pre-accept private and usable.
pub fn accept(range: Range) -> Result<(), TeeError> {
    with_platform(|p| p.accept(range))
}

/// Makes `range` shared with the host (or private again). Callers use it through the shared
/// alias only.
pub fn set_shared(range: Range, shared: bool) -> Result<(), TeeError> {
    with_platform(|p| p.set_shared(range, shared))
}

/// At boot, before any builder. SEV-SNP: VMPCK0 moves from the secrets page into the key page
/// (arch/memory.rs: mapped only in the agent's own tables) and all four VMPCKs are wiped from
/// the secrets page (`agent::tee::snp::stash_vmpck0`). A TD's report comes from TDG.MR.REPORT,
/// which needs no key in memory, and a plain VM has none; the key page is set up on every
/// platform all the same, so every boot (and every test under QEMU) runs the same page tables.
pub fn take_secrets() {
    if !super::memory::init_key_page(encryption()) {
        log::error!("platform: no memory for the key page");
        power::fail(Failure::Platform);
    }
    if kind() != Kind::SevSnp {
        return;
    }
    // SAFETY: the secrets page is private memory the PSP filled at launch (SEV metadata
    // SNP_SECRETS), mapped by the direct map; only this function touches it, once, at boot.
    let secrets = unsafe { &mut *(layout::phys_to_virt(SNP_SECRETS_PAGE) as *mut [u8; 4096]) };
    let stashed = super::memory::with_key_page(|page| {
        let mut key = [0u8; 32];
        let r = psnp::stash_vmpck0(secrets, &mut key);
        page[..32].copy_from_slice(&key);
        zeroize::Zeroize::zeroize(&mut key);
        r
    });
    match stashed {
        Some(Ok(())) => log::info!("platform: VMPCK0 kept in the key page, VMPCK0-3 wiped from the secrets page"),
        // Attesting will fail with NoKey; nothing else depends on the key.
        _ => log::warn!("platform: the secrets page holds no VMPCK0; VMPCK0-3 wiped"),
    }
}

/// Has the hardware sign `report_data`: SNP MSG_REPORT_REQ with VMPCK0 (extended request, for
/// the host's certificates), TDX TDG.MR.REPORT + GetQuote. `NotConfidential` on a plain VM.
pub fn attest(report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
    match kind() {
        Kind::None => NoTee.report(report_data),
        Kind::SevSnp => {
            // VMPCK0 out of the key page (taken once: the stash is zeroed as it is read).
            let key = super::memory::with_key_page(|page| {
                let stash: &mut [u8; 32] = (&mut page[..32]).try_into().unwrap();
                psnp::Vmpck::take_stashed(stash)
            })
            .unwrap_or(Err(TeeError::NoKey))?;
            let transport = super::snp::GuestRequestPages::new(snp_hw(), SNP_CERT_PAGES).ok_or(TeeError::BadResponse("no shared memory for the guest request"))?;
            let mut a = psnp::SnpAttester { transport, channel: psnp::GuestChannel::new(key, 0), cert_pages: SNP_CERT_PAGES };
            a.report(report_data)
        }
        Kind::Tdx => ptdx::TdxAttester { hw: tdx_hw(), quote_buffer: TDX_QUOTE_BYTES }.report(report_data),
    }
}

// ---------------------------------------------------------------------------------------------
// #VC and #VE

fn gprs(f: &TrapFrame) -> Gprs {
    [f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15]
}

fn set_gprs(f: &mut TrapFrame, g: &Gprs) {
    [f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15] = *g;
}

/// The instruction bytes at the trapping RIP, in the agent's own code (private and mapped
/// whole). Ring 3's #VC/#VE never come here: they are the sandbox's (see [`vc`]).
fn instruction(f: &TrapFrame) -> [u8; 15] {
    let mut b = [0u8; 15];
    for (i, byte) in b.iter_mut().enumerate() {
        // SAFETY: the trap came from ring 0, so RIP is in the agent's image, mapped whole
        // (15 bytes past it still lie in the image: it ends in data, not at a page edge).
        *byte = unsafe { core::ptr::read_volatile((f.rip + i as u64) as *const u8) };
    }
    b
}

/// A handler that cannot go on: report and stop (once: a failure while reporting terminates).
fn handler_failed(what: &str, e: TeeError, f: &TrapFrame) -> ! {
    if IN_HANDLER.swap(true, Ordering::Relaxed) {
        terminate(reason::HANDLER);
    }
    super::serial::emergency_print(format_args!("agent: {what} at RIP {:#x} not handled: {e:?}\n", f.rip));
    terminate(reason::HANDLER)
}

/// `#VC` (vector 29; error code = the exit code). Returns false when the exception is not one
/// to emulate: then it is the faulting process's (ring 3) or fatal (ring 0).
///
/// A #VC from ring 3 (CPUID; RDTSC raises #GP first under CR4.TSD, APM vol. 2 "Instruction
/// intercepts": intercepts are checked after simple exceptions such as #GP for CPL) is never
/// answered here, nor by the host or the host-built CPUID page: it goes to the sandbox, which
/// answers from its fixed table (`agent::sandbox::cpu`), the same on every platform.
pub fn vc(f: &mut TrapFrame) -> bool {
    if kind() != Kind::SevSnp || f.cs & 3 == 3 {
        return false;
    }
    // The only MSRs whose accesses reach the host are the local APIC's (IA32_APIC_BASE and the
    // x2APIC range, arch/timer.rs); every other MSR the agent touches (EFER, FS_BASE, STAR,
    // LSTAR, SFMASK, the GHCB MSR) is the guest's own under SEV-SNP and never raises #VC. A #VC
    // naming another MSR was injected by the host, which could otherwise answer a RDMSR the
    // agent then trusts (EFER, rewritten by user::init): not emulated.
    let ecx = f.rcx & 0xFFFF_FFFF;
    if f.error_code == psnp::exit::MSR && !(ecx == 0x1B || (0x800..=0x8FF).contains(&ecx)) {
        handler_failed("#VC (an MSR the host does not answer)", TeeError::BadResponse("injected #VC"), f);
    }
    let b = instruction(f);
    let n = b.len();
    let mut g = gprs(f);
    // MMIO (a nested page fault on a page the host marked as MMIO) is only expected through
    // the shared alias: the GPA is the address's offset in it.
    let mmio_gpa = (f.error_code == psnp::exit::NPF)
        .then(|| insn::mmio_address(&b[..n], &g, f.rip).ok())
        .flatten()
        .filter(|va| (layout::SHARED_MAP..layout::SHARED_MAP + layout::DIRECT_MAP_END_PHYS).contains(va))
        .map(|va| va - layout::SHARED_MAP);
    // SAFETY: the CPUID page is private memory the PSP filled and checked at launch (SEV
    // metadata CPUID section), mapped by the direct map and never written.
    let cpuid_page = unsafe { &*(layout::phys_to_virt(SNP_CPUID_PAGE) as *const [u8; 4096]) };
    match psnp::handle_vc(&mut snp_hw(), Some(cpuid_page), f.error_code, &b[..n], mmio_gpa, &mut g) {
        Ok(len) => {
            set_gprs(f, &g);
            f.rip += len as u64;
            true
        }
        Err(e) => handler_failed("#VC", e, f),
    }
}

/// `#VE` (vector 20): TDG.VP.VEINFO.GET says why. Returns false as [`vc`] does.
pub fn vm_exception(f: &mut TrapFrame) -> bool {
    if kind() != Kind::Tdx {
        return false;
    }
    let mut hw = tdx_hw();
    let ve = match ptdx::ve_info(&mut hw) {
        Ok(ve) => ve,
        Err(e) => handler_failed("#VE", e, f),
    };
    // From ring 3 (CPUID, which TDG.VP.CPUIDVE.SET makes raise #VE for every leaf): the
    // sandbox's, after VEINFO.GET above has taken the #VE info (the next #VE needs it taken).
    if f.cs & 3 == 3 {
        return false;
    }
    const EXIT_EPT_VIOLATION: u32 = 48;
    // An EPT violation is MMIO only on a shared GPA. On a private one, the host took a page
    // away (or never gave it): nothing to emulate, and nothing safe to continue with.
    if ve.exit_reason == EXIT_EPT_VIOLATION && ve.gpa & encryption().mask() == 0 {
        handler_failed("#VE (EPT violation on private memory)", TeeError::Accept { gpa: ve.gpa, status: 0 }, f);
    }
    let b = instruction(f);
    let mut g = gprs(f);
    let window = ptdx::MmioWindow { alias_base: layout::SHARED_MAP, alias_len: layout::DIRECT_MAP_END_PHYS, shared_mask: encryption().mask() };
    match ptdx::handle_ve(&mut hw, &ve, &b, &mut g, f.rip, &window) {
        Ok(len) => {
            set_gprs(f, &g);
            f.rip += u64::from(len);
            true
        }
        Err(e) => handler_failed("#VE", e, f),
    }
}
