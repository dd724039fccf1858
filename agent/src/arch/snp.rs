//! SEV-SNP instructions: the GHCB MSR, VMGEXIT, PVALIDATE, and the shared GHCB page — the
//! hardware half of `agent::tee::snp::Hardware`. Everything these carry is encoded and checked in
//! the portable core (`agent/src/tee/snp.rs`).
//!
//! Used only inside an SEV-SNP guest (`arch::tee` decides): executing any of these elsewhere
//! raises #UD or #GP.
use agent::tee::snp::{self, ghcb, GuestRequest, Ghcb, Hardware, Pvalidate, RequestOutcome, MSR_GHCB, PAGE};
use agent::tee::PageSize;
use core::arch::asm;
use super::cpu::{rdmsr, wrmsr};
use core::ptr::NonNull;



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

/// RMPADJUST (F3 0F 01 FE: APM vol. 3 "RMPADJUST"): RAX = virtual address, RCX = page size
/// (0: 4 KiB), RDX = target VMPL, its permissions and the VMSA bit; EAX = result.
///
/// # Safety
/// `virt` must map a validated private 4 KiB page of the agent's; the change applies to the
/// page's permissions for a less privileged VMPL (the agent runs nothing there).
pub unsafe fn rmpadjust(virt: u64, attrs: u64) -> u32 {
    let rax: u64;
    // SAFETY: per this function's contract; RMPADJUST touches only the RMP entry of the page.
    unsafe {
        asm!(
            ".byte 0xf3, 0x0f, 0x01, 0xfe",
            inout("rax") virt => rax,
            in("rcx") 0u64,
            in("rdx") attrs,
            options(nostack),
        )
    }
    rax as u32
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

    #[inline(never)]
    fn ghcb_exit(&mut self, g: &mut Ghcb) {
        let page = self.ghcb.as_ptr() as *mut u8;
        // SAFETY: `page` is the shared GHCB page (constructor contract). The hypervisor reads
        // and writes it during VMGEXIT; the guest copies it in once before and out once after,
        // and only ever parses its private copy `g`. Plain copies suffice: VMGEXIT's asm block
        // may read and write memory, so the compiler keeps both copies on their side of it (a
        // volatile 4 KiB copy would be expanded into 4096 single-byte moves).
        unsafe { core::ptr::copy_nonoverlapping(g.0.as_ptr(), page, PAGE) };
        wrmsr(MSR_GHCB, self.ghcb_gpa);
        vmgexit();
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(page, g.0.as_mut_ptr(), PAGE) };
    }

    fn pvalidate(&mut self, gpa: u64, size: PageSize, validate: bool) -> Pvalidate {
        // SAFETY: the platform layer validates only ranges it owns and has made private (PSC
        // first), through the direct map (constructor contract).
        unsafe { pvalidate((self.phys_to_virt)(gpa), size, validate) }
    }

    fn rmpadjust(&mut self, gpa: u64, attrs: u64) -> u32 {
        // SAFETY: the platform layer adjusts only a private page of its own (the GHCB page
        // before it is shared), through the direct map (constructor contract).
        unsafe { rmpadjust((self.phys_to_virt)(gpa), attrs) }
    }
}

/// The shared pages of SNP_GUEST_REQUEST (GHCB spec "SNP Guest Request"): request, response and
/// the extended request's certificate buffer, from the shared DMA pool. The portable channel
/// builds and checks messages in private memory; these pages only carry the sealed bytes.
pub struct GuestRequestPages {
    hw: SnpHardware,
    request: (u64, NonNull<u8>),
    response: (u64, NonNull<u8>),
    certs: (u64, NonNull<u8>),
    cert_pages: usize,
}

impl GuestRequestPages {
    pub fn new(hw: SnpHardware, cert_pages: usize) -> Option<GuestRequestPages> {
        let request = super::memory::alloc_dma_pages(1)?;
        let response = super::memory::alloc_dma_pages(1)?;
        let certs = super::memory::alloc_dma_pages(cert_pages.max(1))?;
        Some(GuestRequestPages { hw, request, response, certs, cert_pages: cert_pages.max(1) })
    }
}

impl GuestRequest for GuestRequestPages {
    fn guest_request(&mut self, request: &[u8; PAGE], response: &mut [u8; PAGE], certs: Option<&mut [u8]>) -> RequestOutcome {
        let certs = certs.filter(|c| c.len().is_multiple_of(PAGE) && c.len() / PAGE <= self.cert_pages);
        // SAFETY: the three buffers are shared pages of the DMA pool owned by this value, of
        // the sizes allocated in `new` (`certs` was checked to fit).
        unsafe {
            core::ptr::copy_nonoverlapping(request.as_ptr(), self.request.1.as_ptr(), PAGE);
            core::ptr::write_bytes(self.response.1.as_ptr(), 0, PAGE);
            core::ptr::write_bytes(self.certs.1.as_ptr(), 0, self.cert_pages * PAGE);
        }
        let cert_arg = certs.as_ref().map(|c| (self.certs.0, (c.len() / PAGE) as u64));
        let mut g = Ghcb::guest_request(self.request.0, self.response.0, cert_arg);
        self.hw.ghcb_exit(&mut g);
        // SAFETY: as above; the copies are the only reads of what the host wrote (after the
        // exit, which is an opaque call: the compiler cannot move them before it).
        unsafe {
            core::ptr::copy_nonoverlapping(self.response.1.as_ptr(), response.as_mut_ptr(), PAGE);
            if let Some(c) = certs {
                core::ptr::copy_nonoverlapping(self.certs.1.as_ptr(), c.as_mut_ptr(), c.len());
            }
        }
        RequestOutcome { exit_info_2: g.get(ghcb::SW_EXIT_INFO_2), cert_pages_needed: g.get(ghcb::RBX) }
    }

    fn wait_ms(&mut self, ms: u64) {
        super::timer::spin_ms(ms)
    }
}

impl Drop for GuestRequestPages {
    fn drop(&mut self) {
        // SAFETY: each allocation from `new`, freed once.
        unsafe {
            super::memory::free_dma_pages(self.request.1, 1);
            super::memory::free_dma_pages(self.response.1, 1);
            super::memory::free_dma_pages(self.certs.1, self.cert_pages);
        }
    }
}
