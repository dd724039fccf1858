//! The TDCALL instruction — the hardware half of `agent::tee::tdx::Hardware`. Register encodings
//! and checks live in the portable core (`agent/src/tee/tdx.rs`).
//!
//! Not yet used: the TD entry and the `#VE` handler are not written (docs/running-on-tdx.md).
//! Outside a TD, TDCALL raises #UD.
// Nothing calls these until the SNP/TDX boot path exists (see above).
#![allow(dead_code)]
use agent::tee::tdx::{self, Regs, TDREPORT_LEN};
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
}

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

    fn get_quote(&mut self, _buffer: &mut [u8]) -> u64 {
        // Needs a buffer mapped shared (MapGPA + the shared bit in its page-table entries) and a
        // wait for the status to leave IN_FLIGHT: not written yet (docs/running-on-tdx.md).
        tdx::vmcall::INVALID_OPERAND
    }
}
