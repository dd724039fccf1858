//! The TDCALL instruction — the hardware half of `agent::tee::tdx::Hardware`. Register encodings
//! and checks live in the portable core (`agent/src/tee/tdx.rs`).
//!
//! Used only inside a TD (`arch::tee` decides): outside one, TDCALL raises #UD.
use agent::tee::tdx::{self, quote_status, vmcall, Regs, TDREPORT_LEN};
use core::arch::asm;

/// TDCALL (66 0F 01 CC): RAX = leaf; RCX, RDX, R8–R15 in and out (TDX module ABI, each leaf's
/// operand tables). RBX, RSI, RDI are not passed (the VMCALL bitmap never exposes them) and are
/// treated as clobbered except RBX, which the compiler reserves and the module preserves.
///
/// # Safety
/// The leaf and its operands must be valid for a TD: leaves that take GPAs (TDG.MR.REPORT) need
/// them to be private, aligned buffers the caller owns for the call's duration; MapGPA and
/// TDG.MEM.PAGE.ACCEPT change what memory is usable, which the caller must account for.
pub unsafe fn tdcall(r: &mut Regs) {
    // SAFETY: per this function's contract.
    unsafe {
        asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inout("rax") r.rax,
            inout("rcx") r.rcx,
            inout("rdx") r.rdx,
            inout("r8") r.r8,
            inout("r9") r.r9,
            inout("r10") r.r10,
            inout("r11") r.r11,
            inout("r12") r.r12,
            inout("r13") r.r13,
            inout("r14") r.r14,
            inout("r15") r.r15,
            out("rsi") _,
            out("rdi") _,
            options(nostack),
        )
    }
}

/// The TD's hardware: TDCALL, with buffers translated through the direct map.
pub struct TdxHardware {
    pub virt_to_phys: fn(u64) -> u64,
    /// GPAW - 1 (TDG.VP.INFO): set in a GPA to name the shared page.
    pub shared_bit: u8,
}

/// How long GetQuote may stay in flight: the host's quote service signs with the platform's
/// quoting enclave, normally well under a second. In TSC cycles (about a minute at 3 GHz).
const QUOTE_TIMEOUT_CYCLES: u64 = 200_000_000_000;

#[repr(C, align(1024))]
struct ReportBuf([u8; TDREPORT_LEN]);
#[repr(C, align(64))]
struct DataBuf([u8; 64]);

impl tdx::Hardware for TdxHardware {
    fn tdcall(&mut self, regs: &mut Regs) {
        // SAFETY: the portable layer builds register sets only for the leaves it implements,
        // with GPAs of ranges it owns (see `tdcall`'s contract).
        unsafe { tdcall(regs) }
    }

    fn mr_report(&mut self, report_data: &[u8; 64], tdreport: &mut [u8; TDREPORT_LEN]) -> u64 {
        // TDG.MR.REPORT wants TDREPORT 1024-aligned and REPORTDATA 64-aligned: private copies
        // with those alignments.
        let mut out = alloc::boxed::Box::new(ReportBuf([0; TDREPORT_LEN]));
        let data = alloc::boxed::Box::new(DataBuf(*report_data));
        let mut r = tdx::mr_report_regs((self.virt_to_phys)(out.0.as_mut_ptr() as u64), (self.virt_to_phys)(data.0.as_ptr() as u64));
        // SAFETY: both buffers are private heap memory owned here until the call returns, with
        // the alignments the leaf requires.
        unsafe { tdcall(&mut r) };
        tdreport.copy_from_slice(&out.0);
        r.rax
    }

    /// GHCI "TDG.VP.VMCALL<GetQuote>": the request goes into a shared buffer (from the DMA
    /// pool, already MapGPA'd shared), the VMM hands it to the quote service and, asynchronously,
    /// overwrites it with the quote; the header's status leaves IN_FLIGHT when it is done. The
    /// agent polls (it has nothing else to do) and copies the buffer back to private memory.
    fn get_quote(&mut self, buffer: &mut [u8]) -> u64 {
        let pages = buffer.len().div_ceil(4096);
        let Some((phys, shared)) = super::memory::alloc_dma_pages(pages) else { return vmcall::INVALID_OPERAND };
        let p = shared.as_ptr();
        // SAFETY: `p` is `pages` shared pages owned here until freed below; the host writes
        // them while the request is in flight, so every access is volatile.
        unsafe { core::ptr::copy_nonoverlapping(buffer.as_ptr(), p, buffer.len()) };
        let mut r = tdx::vmcall_get_quote(phys | (1 << self.shared_bit), (pages * 4096) as u64);
        // SAFETY: GetQuote's only memory operand is the shared buffer above.
        unsafe { tdcall(&mut r) };
        let mut status = r.r10;
        if r.rax == tdx::status::SUCCESS && status == vmcall::SUCCESS {
            let start = super::cpu::rdtsc();
            loop {
                // SAFETY: the status word at offset 8 of the shared buffer (see above).
                let st = unsafe { core::ptr::read_volatile(p.add(8) as *const u64) };
                if st != quote_status::IN_FLIGHT {
                    break;
                }
                if super::cpu::rdtsc().wrapping_sub(start) > QUOTE_TIMEOUT_CYCLES {
                    status = vmcall::INVALID_OPERAND;
                    break;
                }
                core::hint::spin_loop();
            }
            // SAFETY: as above; the request is no longer in flight, so the host is done writing.
            unsafe { core::ptr::copy_nonoverlapping(p, buffer.as_mut_ptr(), buffer.len()) };
        } else if r.rax != tdx::status::SUCCESS {
            status = r.rax;
        }
        // SAFETY: allocated above with the same page count.
        unsafe { super::memory::free_dma_pages(shared, pages) };
        status
    }
}
