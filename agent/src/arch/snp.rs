//! SEV-SNP instructions: the GHCB MSR, VMGEXIT, PVALIDATE, and the shared GHCB page — the
//! hardware half of `agent::tee::snp::Hardware`. Everything these carry is encoded and checked in
//! the portable core (`agent/src/tee/snp.rs`).
//!
//! Not yet used: the boot path that makes the GHCB page shared and installs the `#VC` handler is
//! not written (docs/running-on-snp.md, "What is missing"). Executing any of these outside an
//! SEV-ES/SNP guest raises #UD or #GP.
// Nothing calls these until the SNP/TDX boot path exists (see above).
#![allow(dead_code)]
use agent::tee::snp::{self, Ghcb, Pvalidate, MSR_GHCB, PAGE};
use agent::tee::PageSize;
use core::arch::asm;
use core::ptr::NonNull;

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only used for the GHCB MSR, which every SEV-ES/SNP guest has; writing it only sets
    // what the next VMGEXIT tells the hypervisor.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags)) }
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as for `wrmsr`; reading has no side effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// VMGEXIT (`rep vmmcall`, F3 0F 01 D9: APM vol. 3 "VMGEXIT").
fn vmgexit() {
    // SAFETY: VMGEXIT hands control to the hypervisor, which reads the GHCB MSR (and the GHCB
    // page, shared memory) and resumes the guest after it. `memory` is not `nomem`: the
    // hypervisor writes the shared GHCB page, which the caller reads afterwards.
    unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack)) }
}

/// One GHCB MSR-protocol exchange: write the request, VMGEXIT, read the response.
pub fn msr_exit(value: u64) -> u64 {
    wrmsr(MSR_GHCB, value);
    vmgexit();
    rdmsr(MSR_GHCB)
}

/// PVALIDATE (F2 0F 01 FF: APM vol. 3 "PVALIDATE"): RAX = virtual address, ECX = page size,
/// EDX = validate; EAX = result, rFLAGS.CF = 1 when the RMP entry was not changed.
///
/// # Safety
/// `virt` must map `gpa`-backed private memory of `size` that nothing else uses: validating a
/// page makes its contents the guest's, rescinding makes further private accesses fault.
pub unsafe fn pvalidate(virt: u64, size: PageSize, validate: bool) -> Pvalidate {
    let rax: u64;
    let carry: u8;
    // SAFETY: per this function's contract; PVALIDATE touches only the RMP entry of the page.
    unsafe {
        asm!(
            ".byte 0xf2, 0x0f, 0x01, 0xff",
            "setc {cf}",
            cf = out(reg_byte) carry,
            inout("rax") virt => rax,
            in("ecx") snp::pvalidate_size(size),
            in("edx") validate as u32,
            options(nostack),
        )
    }
    Pvalidate { eax: rax as u32, carry: carry != 0 }
}

/// The agent's SNP hardware: the GHCB MSR and a shared GHCB page.
pub struct SnpHardware {
    /// The GHCB page, mapped without the C-bit (shared).
    ghcb: NonNull<[u8; PAGE]>,
    ghcb_gpa: u64,
    /// Guest-physical to virtual, for PVALIDATE (the direct map).
    phys_to_virt: fn(u64) -> u64,
}

impl SnpHardware {
    /// # Safety
    /// `ghcb` must point to a 4 KiB page mapped shared (no C-bit), at guest-physical `ghcb_gpa`,
    /// registered with the hypervisor (`snp::register_ghcb`), used by nothing else, for as long
    /// as this value lives. `phys_to_virt` must map every GPA later validated.
    pub unsafe fn new(ghcb: NonNull<[u8; PAGE]>, ghcb_gpa: u64, phys_to_virt: fn(u64) -> u64) -> SnpHardware {
        SnpHardware { ghcb, ghcb_gpa, phys_to_virt }
    }
}

impl snp::Hardware for SnpHardware {
    fn msr_exit(&mut self, value: u64) -> u64 {
        msr_exit(value)
    }

    fn ghcb_gpa(&self) -> u64 {
        self.ghcb_gpa
    }

    fn ghcb_exit(&mut self, g: &mut Ghcb) {
        let page = self.ghcb.as_ptr();
        // SAFETY: `page` is the shared GHCB page (constructor contract). Volatile copies: the
        // hypervisor reads and writes it around VMGEXIT; the guest copies it in once before and
        // out once after, and only ever parses its private copy `g`.
        unsafe { core::ptr::write_volatile(page, g.0) };
        wrmsr(MSR_GHCB, self.ghcb_gpa);
        vmgexit();
        // SAFETY: as above.
        g.0 = unsafe { core::ptr::read_volatile(page) };
    }

    fn pvalidate(&mut self, gpa: u64, size: PageSize, validate: bool) -> Pvalidate {
        // SAFETY: the platform layer validates only ranges it owns and has made private (PSC
        // first), through the direct map (constructor contract).
        unsafe { pvalidate((self.phys_to_virt)(gpa), size, validate) }
    }
}
