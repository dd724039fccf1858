//! Intel TDX guest (a TD): TDCALL leaves, TDG.VP.VMCALL sub-functions, #VE, reports and quotes.
//!
//! ```text
//! TDCALL (to the TDX module)   TDG.VP.INFO (GPAW → shared bit), TDG.MEM.PAGE.ACCEPT,
//!                              TDG.VP.VEINFO.GET, TDG.MR.REPORT (TDREPORT with REPORTDATA)
//! TDG.VP.VMCALL (to the VMM)   MapGPA (private ↔ shared), GetQuote (TDREPORT → quote through a
//!                              shared buffer), Instruction.CPUID/IO/RDMSR/WRMSR, #VE.RequestMMIO
//! ```
//!
//! Leaf numbers and register use are from the TDX Module v1.5 ABI spec ("TDCALL Instruction Leaf
//! Numbers Definition" table and each leaf's "Input/Output Operands" tables) and the GHCI v1.5
//! spec ("TDG.VP.VMCALL Interface" and its sub-function tables); cross-checked against Linux
//! `arch/x86/coco/tdx/`, `drivers/virt/coco/tdx-guest` and the `tdx-guest` crate.
use super::insn::{self, Gprs};
use super::{split, Evidence, Kind, PageSize, Range, TeeError, PAGE_4K};
use alloc::vec;
use alloc::vec::Vec;

/// TDCALL leaves (RAX).
pub mod leaf {
    pub const VP_VMCALL: u64 = 0;
    pub const VP_INFO: u64 = 1;
    pub const MR_RTMR_EXTEND: u64 = 2;
    pub const VP_VEINFO_GET: u64 = 3;
    pub const MR_REPORT: u64 = 4;
    pub const VP_CPUIDVE_SET: u64 = 5;
    pub const MEM_PAGE_ACCEPT: u64 = 6;
}

/// TDX module completion status (RAX after TDCALL): the class and code are the upper 32 bits,
/// the lower 32 bits name the operand (ABI spec "Function Completion Status Codes").
pub mod status {
    pub const SUCCESS: u64 = 0;
    pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
    pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
    pub const PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
    pub const PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0000;
    pub const MASK: u64 = 0xFFFF_FFFF_0000_0000;
}

/// TDG.VP.VMCALL sub-functions (R11), GHCI "TDG.VP.VMCALL sub-function" tables: the
/// instruction-emulation ones use the VMX exit-reason numbers (SDM vol. 3 Appendix C).
pub mod vmcall {
    pub const CPUID: u64 = 10;
    pub const HLT: u64 = 12;
    pub const IO: u64 = 30;
    pub const RDMSR: u64 = 31;
    pub const WRMSR: u64 = 32;
    pub const MMIO: u64 = 48;
    pub const GET_TD_VMCALL_INFO: u64 = 0x10000;
    pub const MAP_GPA: u64 = 0x10001;
    pub const GET_QUOTE: u64 = 0x10002;
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
    /// Status in R10 (GHCI "TDG.VP.VMCALL" completion codes).
    pub const SUCCESS: u64 = 0;
    pub const RETRY: u64 = 1;
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    pub const GPA_INUSE: u64 = 0x8000_0000_0000_0001;
    pub const ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;
    /// RCX for TDG.VP.VMCALL: the GPRs passed to the VMM, bit i = GPR i (RAX 0, RCX 1, … R15
    /// 15). The sub-functions used here pass only R10-R15 (the mask older Linux versions used as
    /// `TDVMCALL_EXPOSE_REGS_MASK`; newer ones expose more registers for other sub-functions).
    pub const EXPOSE_R10_R15: u64 = 0xFC00;
}

/// The registers TDCALL reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// The minimal hardware interface of a TD; the firmware's arch layer implements it with TDCALL
/// and shared buffers, the tests with a model of the TDX module and the VMM.
pub trait Hardware {
    /// Executes TDCALL with `regs` and writes back what it returns.
    fn tdcall(&mut self, regs: &mut Regs);
    /// TDG.MR.REPORT ([`mr_report_regs`]) with `report_data` and `tdreport` in private memory,
    /// aligned as the leaf requires. Returns RAX.
    fn mr_report(&mut self, report_data: &[u8; 64], tdreport: &mut [u8; TDREPORT_LEN]) -> u64;
    /// GetQuote ([`vmcall_get_quote`]): copies `buffer` into a shared buffer of the same size,
    /// calls the VMM, waits until the header's status is no longer IN_FLIGHT, and copies the
    /// buffer back. Returns the TDG.VP.VMCALL status (R10).
    fn get_quote(&mut self, buffer: &mut [u8]) -> u64;
}

// ---------------------------------------------------------------------------------------------
// TDG.VP.INFO (ABI spec "TDG.VP.INFO Leaf": RCX[5:0] GPAW, RDX ATTRIBUTES, R8[31:0] NUM_VCPUS,
// R8[63:32] MAX_VCPUS, R9[31:0] VCPU_INDEX)

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdInfo {
    pub gpaw: u8,
    pub attributes: u64,
    pub num_vcpus: u32,
    pub max_vcpus: u32,
    pub vcpu_index: u32,
}

/// TD ATTRIBUTES bit 0: DEBUG (the host can read the TD's state; a verifier refuses it).
pub const ATTR_DEBUG: u64 = 1 << 0;
/// TD ATTRIBUTES bit 28: SEPT_VE_DISABLE (no #VE on pending pages: touching unaccepted memory
/// ends the TD instead of letting a host trick the guest into accepting a page twice).
pub const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;

pub fn vp_info(hw: &mut impl Hardware) -> Result<TdInfo, TeeError> {
    let mut r = Regs { rax: leaf::VP_INFO, ..Default::default() };
    hw.tdcall(&mut r);
    if r.rax != status::SUCCESS {
        return Err(TeeError::Tdcall { leaf: leaf::VP_INFO, status: r.rax });
    }
    Ok(TdInfo {
        gpaw: (r.rcx & 0x3F) as u8,
        attributes: r.rdx,
        num_vcpus: r.r8 as u32,
        max_vcpus: (r.r8 >> 32) as u32,
        vcpu_index: r.r9 as u32,
    })
}

/// The TDs the agent runs in (checked right after TDG.VP.INFO, before anything else):
/// - one vCPU (NUM_VCPUS 1, this is VCPU_INDEX 0): the agent is single-threaded, and every
///   vCPU of a TD starts at the reset vector, so a second one would boot the image again over
///   the running agent (rom32.s parks any such vCPU; this refuses the TD outright);
/// - ATTRIBUTES.SEPT_VE_DISABLE: without it, touching a private page the host removed raises a
///   #VE the guest must not handle (Linux `tdx_early_init` refuses to run without it except in
///   a debug TD; the agent refuses always).
pub fn check_td(info: &TdInfo) -> Result<(), TeeError> {
    if info.num_vcpus != 1 || info.vcpu_index != 0 {
        return Err(TeeError::TdConfiguration("the agent runs in a TD with exactly one vCPU"));
    }
    if info.attributes & ATTR_SEPT_VE_DISABLE == 0 {
        return Err(TeeError::TdConfiguration("the TD lacks ATTRIBUTES.SEPT_VE_DISABLE"));
    }
    Ok(())
}

/// The shared bit is the GPA's top bit: GPAW 48 → bit 47, GPAW 52 → bit 51 (TDX Base
/// Architecture spec, "GPA Space": the only widths a TD has).
pub fn shared_bit(gpaw: u8) -> Option<u8> {
    matches!(gpaw, 48 | 52).then(|| gpaw - 1)
}

// ---------------------------------------------------------------------------------------------
// TDG.VP.CPUIDVE.SET (ABI spec "TDG.VP.CPUIDVE.SET Leaf": RCX bit 0 = #VE on every CPUID in
// supervisor mode, bit 1 = in user mode, the rest reserved-0; kept in TDX 1.5 for compatibility
// beside TDG.VP.WR of the TDVPS fields CPUID_SUPERVISOR_VE / CPUID_USER_VE). The TDX module's
// CPUID exit handler (intel/tdx-module src/td_dispatcher/vm_exits/td_cpuid.c) injects #VE for
// any leaf when the CPL's flag is set, before it looks at its own tables or REDUCE_VE; without
// it, ring 3 gets the module's virtualised values for most leaves and the host's (through a
// #VE the agent would forward) for the rest.

/// RCX for TDG.VP.CPUIDVE.SET: user-mode CPUID always raises #VE; the agent's own (ring 0)
/// CPUID keeps the module's answers.
pub const CPUIDVE_USER: u64 = 1 << 1;

/// Makes every ring-3 CPUID raise #VE, so the sandbox answers it from its fixed table. A module
/// that refuses leaves the builder's CPUID to the host: an error, which stops the TD.
pub fn trap_user_cpuid(hw: &mut impl Hardware) -> Result<(), TeeError> {
    let mut r = Regs { rax: leaf::VP_CPUIDVE_SET, rcx: CPUIDVE_USER, ..Default::default() };
    hw.tdcall(&mut r);
    if r.rax != status::SUCCESS {
        return Err(TeeError::Tdcall { leaf: leaf::VP_CPUIDVE_SET, status: r.rax });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TDG.MEM.PAGE.ACCEPT (ABI spec "TDG.MEM.PAGE.ACCEPT Leaf": RCX = GPA[51:12] | level[2:0],
// level 0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB)

pub fn accept_regs(gpa: u64, size: PageSize) -> Regs {
    let level = match size {
        PageSize::Size4K => 0,
        PageSize::Size2M => 1,
    };
    Regs { rax: leaf::MEM_PAGE_ACCEPT, rcx: (gpa & 0x000F_FFFF_FFFF_F000) | level, ..Default::default() }
}

/// How often TDG.MEM.PAGE.ACCEPT is retried on TDX_OPERAND_BUSY before the accept fails.
pub const ACCEPT_BUSY_RETRIES: usize = 1_000;

/// One TDG.MEM.PAGE.ACCEPT, retried while the module answers TDX_OPERAND_BUSY: the ABI spec
/// lists it among the leaf's completion statuses (the Secure EPT entry is locked by a
/// concurrent host SEAMCALL on it — KVM's `tdx_operand_busy()` paths retry their side too); it
/// is a transient state, not a refusal.
fn accept_one(hw: &mut impl Hardware, gpa: u64, size: PageSize) -> u64 {
    let mut st = status::OPERAND_BUSY;
    for _ in 0..=ACCEPT_BUSY_RETRIES {
        let mut r = accept_regs(gpa, size);
        hw.tdcall(&mut r);
        st = r.rax;
        if st & status::MASK != status::OPERAND_BUSY {
            break;
        }
    }
    st
}

/// Accepts a range: 2 MiB pages where aligned; a 2 MiB page the host mapped as 4 KiB pages
/// (PAGE_SIZE_MISMATCH) is accepted as 512 4 KiB pages (as TDVF's and Linux's accept loops).
/// A page that is already accepted is an error: the agent accepts each page once, at boot.
pub fn accept_range(hw: &mut impl Hardware, range: Range) -> Result<(), TeeError> {
    for (gpa, size) in split(range) {
        let st = accept_one(hw, gpa, size);
        if st == status::SUCCESS {
            continue;
        }
        if size == PageSize::Size2M && st & status::MASK == status::PAGE_SIZE_MISMATCH {
            for page in (gpa..gpa + size.bytes()).step_by(PAGE_4K as usize) {
                match accept_one(hw, page, PageSize::Size4K) {
                    status::SUCCESS => {}
                    st => return Err(TeeError::Accept { gpa: page, status: st }),
                }
            }
            continue;
        }
        return Err(TeeError::Accept { gpa, status: st });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TDG.VP.VMCALL (GHCI "TDG.VP.VMCALL Interface": RCX = exposed-register bitmap, R10 = 0 for the
// GHCI-standard sub-functions, R11 = sub-function, R12-R15 = arguments; on return R10 = status,
// R11 (and R12-R15 for CPUID) = results)

fn vmcall_regs(subfunction: u64, args: [u64; 4]) -> Regs {
    Regs {
        rax: leaf::VP_VMCALL,
        rcx: vmcall::EXPOSE_R10_R15,
        r10: 0,
        r11: subfunction,
        r12: args[0],
        r13: args[1],
        r14: args[2],
        r15: args[3],
        ..Default::default()
    }
}

/// Instruction.CPUID: R12 = EAX (leaf), R13 = ECX (subleaf); returns EAX..EDX in R12..R15.
pub fn vmcall_cpuid(leaf: u32, subleaf: u32) -> Regs {
    vmcall_regs(vmcall::CPUID, [leaf.into(), subleaf.into(), 0, 0])
}

/// Instruction.HLT: R12 = 1 when the TD's interrupts are blocked (RFLAGS.IF = 0), so the VMM
/// knows no interrupt will wake it.
pub fn vmcall_hlt(interrupts_blocked: bool) -> Regs {
    vmcall_regs(vmcall::HLT, [interrupts_blocked as u64, 0, 0, 0])
}

/// Instruction.IO: R12 = size (1, 2, 4), R13 = direction (0 in, 1 out), R14 = port, R15 = the
/// value written; R11 = the value read.
pub fn vmcall_io(port: u16, size: u8, write: bool, value: u32) -> Regs {
    vmcall_regs(vmcall::IO, [size.into(), write as u64, port.into(), if write { value.into() } else { 0 }])
}

/// Instruction.RDMSR: R12 = MSR; R11 = value.
pub fn vmcall_rdmsr(msr: u32) -> Regs {
    vmcall_regs(vmcall::RDMSR, [msr.into(), 0, 0, 0])
}

/// Instruction.WRMSR: R12 = MSR, R13 = value.
pub fn vmcall_wrmsr(msr: u32, value: u64) -> Regs {
    vmcall_regs(vmcall::WRMSR, [msr.into(), value, 0, 0])
}

/// #VE.RequestMMIO: R12 = size, R13 = direction (0 read, 1 write), R14 = GPA, R15 = value;
/// R11 = the value read.
pub fn vmcall_mmio(gpa: u64, size: u8, write: bool, value: u64) -> Regs {
    vmcall_regs(vmcall::MMIO, [size.into(), write as u64, gpa, if write { value } else { 0 }])
}

/// MapGPA: R12 = start GPA (with the shared bit set to map shared, clear to map private),
/// R13 = size. On RETRY, R11 = the GPA to resume from.
pub fn vmcall_map_gpa(gpa: u64, size: u64, shared_bit: Option<u8>) -> Regs {
    vmcall_regs(vmcall::MAP_GPA, [gpa | shared_bit.map_or(0, |b| 1 << b), size, 0, 0])
}

/// GetQuote: R12 = the shared buffer's GPA (shared bit set), R13 = its size.
pub fn vmcall_get_quote(shared_gpa: u64, size: u64) -> Regs {
    vmcall_regs(vmcall::GET_QUOTE, [shared_gpa, size, 0, 0])
}

/// ReportFatalError: R12 = error code, R14/R15 = up to 16 bytes of ASCII message.
///
/// GHCI "TDG.VP.VMCALL<ReportFatalError>": R12 bits 31:0 are the TD-specific error code, of
/// which bits 15:0 are reserved (0 means "panic"), bit 63 says R13 holds a GPA; the message is
/// in R14, R15, RBX, RDI, RSI, R8, R9, RDX, as far as RCX exposes them. QEMU refuses a code with
/// any of bits 15:0 set: `tdx_handle_report_fatal_error` (target/i386/kvm/tdx.c, QEMU 10.1)
/// prints "REPORT_FATAL_ERROR: invalid error code" and returns -1 *without* the guest-panic
/// path, which leaves the VM stopped in an internal-error state instead of ending it. So the
/// agent's reason goes in bits 31:16.
pub fn vmcall_report_fatal_error(reason: u16, message: &[u8; 16]) -> Regs {
    let code = u64::from(reason) << 16;
    let half = |i: usize| u64::from_le_bytes(message[i..i + 8].try_into().unwrap_or([0; 8]));
    vmcall_regs(vmcall::REPORT_FATAL_ERROR, [code, 0, half(0), half(8)])
}

/// What QEMU 10.1's `tdx_handle_report_fatal_error` does with R12 (target/i386/kvm/tdx.c):
/// `if (error_code & 0xffff) { error_report("... invalid error code ..."); return -1; }`, else
/// the guest-panic path (GUEST_PANICKED, then the `-action panic=` choice). A model for tests.
pub fn qemu_accepts_fatal_error_code(r12: u64) -> bool {
    r12 & 0xFFFF == 0
}

fn vmcall_ok(hw: &mut impl Hardware, mut r: Regs) -> Result<Regs, TeeError> {
    let subfunction = r.r11;
    hw.tdcall(&mut r);
    if r.rax != status::SUCCESS {
        return Err(TeeError::Tdcall { leaf: leaf::VP_VMCALL, status: r.rax });
    }
    if r.r10 != vmcall::SUCCESS {
        return Err(TeeError::Vmcall { subfunction, status: r.r10 });
    }
    Ok(r)
}

/// Maps a range shared or private with MapGPA. The VMM may do part and ask to resume (RETRY,
/// R11 = where): the resume point must lie inside what is left, and a VMM that makes no
/// progress three times is an error (Linux `tdx_map_gpa`).
pub fn map_gpa(hw: &mut impl Hardware, range: Range, shared: bool, shared_bit: u8) -> Result<(), TeeError> {
    let (mut start, end) = (range.start, range.end());
    let mut stalls = 0;
    while start < end {
        let mut r = vmcall_map_gpa(start, end - start, shared.then_some(shared_bit));
        hw.tdcall(&mut r);
        if r.rax != status::SUCCESS {
            return Err(TeeError::Tdcall { leaf: leaf::VP_VMCALL, status: r.rax });
        }
        match r.r10 {
            vmcall::SUCCESS => return Ok(()),
            vmcall::RETRY => {
                let resume = r.r11 & !(1 << shared_bit);
                if resume < start || resume >= end || !resume.is_multiple_of(PAGE_4K) {
                    return Err(TeeError::Vmcall { subfunction: vmcall::MAP_GPA, status: vmcall::RETRY });
                }
                stalls = if resume == start { stalls + 1 } else { 0 };
                if stalls > 3 {
                    return Err(TeeError::Vmcall { subfunction: vmcall::MAP_GPA, status: vmcall::RETRY });
                }
                start = resume;
            }
            st => return Err(TeeError::Vmcall { subfunction: vmcall::MAP_GPA, status: st }),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// #VE (ABI spec "TDG.VP.VEINFO.GET Leaf": RCX exit reason, RDX exit qualification, R8 guest
// linear address, R9 guest physical address, R10[31:0] instruction length, R10[63:32]
// instruction information)

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VeInfo {
    pub exit_reason: u32,
    pub qualification: u64,
    pub gla: u64,
    pub gpa: u64,
    pub instruction_len: u32,
    pub instruction_info: u32,
}

pub fn ve_info(hw: &mut impl Hardware) -> Result<VeInfo, TeeError> {
    let mut r = Regs { rax: leaf::VP_VEINFO_GET, ..Default::default() };
    hw.tdcall(&mut r);
    if r.rax != status::SUCCESS {
        return Err(TeeError::Tdcall { leaf: leaf::VP_VEINFO_GET, status: r.rax });
    }
    Ok(VeInfo {
        exit_reason: r.rcx as u32,
        qualification: r.rdx,
        gla: r.r8,
        gpa: r.r9,
        instruction_len: r.r10 as u32,
        instruction_info: (r.r10 >> 32) as u32,
    })
}

/// An I/O instruction's exit qualification (SDM vol. 3 "Exit Qualification for I/O
/// Instructions"): bits 2:0 size - 1, bit 3 direction (1 = IN), bit 4 string, bit 5 REP,
/// bits 31:16 port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    pub size: u8,
    pub is_in: bool,
    pub string: bool,
}

pub fn decode_io_qualification(q: u64) -> IoExit {
    IoExit { port: (q >> 16) as u16, size: (q & 7) as u8 + 1, is_in: q & (1 << 3) != 0, string: q & (1 << 4) != 0 }
}

/// Where the agent does MMIO: only through its shared alias, which maps physical address `p` at
/// virtual `alias_base + p` with the GPA's shared bit (`shared_mask`) set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioWindow {
    pub alias_base: u64,
    pub alias_len: u64,
    pub shared_mask: u64,
}

impl MmioWindow {
    /// Checks an EPT-violation #VE for the MMIO access `m` of the instruction at `rip`: the
    /// address the instruction itself computes lies in the shared alias, names the GPA the #VE
    /// reports (a shared one), and the access stays inside one page (a page-crossing access
    /// would touch two GPAs; Linux's `handle_mmio` refuses it too).
    fn check(&self, ve: &VeInfo, insn: &[u8], regs: &Gprs, rip: u64, size: u8) -> Result<(), ()> {
        let va = insn::mmio_address(insn, regs, rip).map_err(|_| ())?;
        let offset = va.checked_sub(self.alias_base).filter(|o| *o < self.alias_len).ok_or(())?;
        let private_gpa = ve.gpa & !self.shared_mask;
        if ve.gpa & self.shared_mask == 0 || offset != private_gpa {
            return Err(());
        }
        if (ve.gpa & 0xFFF) + u64::from(size) > PAGE_4K {
            return Err(());
        }
        Ok(())
    }
}

/// Handles the #VEs the agent triggers: CPUID, port I/O (IN/OUT, not string I/O), RDMSR, WRMSR
/// and MMIO to shared memory (an EPT violation on a shared GPA: the instruction at `rip`,
/// `insn`, is decoded to find the register, the size, its length and the address it touches,
/// which must lie in `window`). Updates `regs` and returns the instruction length to skip.
/// Anything else is refused.
///
/// The length to skip: VEINFO's INSTRUCTION_LENGTH is defined only for the #VEs the module
/// raises for an instruction exit (CPUID, I/O, MSRs, HLT). For an EPT violation the module does
/// not write it, and it holds whatever the last instruction exit left (the TDX module ABI spec,
/// TDG.VP.VEINFO.GET: "INSTRUCTION_LENGTH/INFORMATION ... valid only for VM exits which report
/// them"; Linux `arch/x86/coco/tdx/tdx.c` `ve_instr_len()`: "For EPT violations, instr_len is
/// not defined. For those, the kernel must decode instructions manually"). So for MMIO only
/// the decoder's length counts.
pub fn handle_ve(hw: &mut impl Hardware, ve: &VeInfo, insn: &[u8], regs: &mut Gprs, rip: u64, window: &MmioWindow) -> Result<u32, TeeError> {
    const EXIT_CPUID: u32 = 10;
    const EXIT_HLT: u32 = 12;
    const EXIT_IO: u32 = 30;
    const EXIT_RDMSR: u32 = 31;
    const EXIT_WRMSR: u32 = 32;
    const EXIT_EPT_VIOLATION: u32 = 48;
    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RBX: usize = 3;
    let low = |v: u64| v & 0xFFFF_FFFF;
    let refuse = |subfunction: u64| TeeError::Vmcall { subfunction, status: vmcall::INVALID_OPERAND };
    match ve.exit_reason {
        EXIT_CPUID => {
            let r = vmcall_ok(hw, vmcall_cpuid(regs[RAX] as u32, regs[RCX] as u32))?;
            (regs[RAX], regs[RBX], regs[RCX], regs[RDX]) = (low(r.r12), low(r.r13), low(r.r14), low(r.r15));
        }
        EXIT_HLT => {
            // The agent halts only to stop for good, with interrupts off.
            vmcall_ok(hw, vmcall_hlt(true))?;
        }
        EXIT_IO => {
            let io = decode_io_qualification(ve.qualification);
            if io.string || !matches!(io.size, 1 | 2 | 4) {
                return Err(refuse(vmcall::IO));
            }
            let mask = (1u64 << (8 * io.size)) - 1;
            let r = vmcall_ok(hw, vmcall_io(io.port, io.size, !io.is_in, (regs[RAX] & mask) as u32))?;
            if io.is_in {
                // IN writes AL/AX (keeping the rest of RAX) or EAX (zero-extending).
                insn::write_reg(regs, insn::Reg { num: 0, high_byte: false }, io.size, r.r11 & mask);
            }
        }
        EXIT_RDMSR => {
            let r = vmcall_ok(hw, vmcall_rdmsr(regs[RCX] as u32))?;
            (regs[RAX], regs[RDX]) = (low(r.r11), r.r11 >> 32);
        }
        EXIT_WRMSR => {
            vmcall_ok(hw, vmcall_wrmsr(regs[RCX] as u32, low(regs[RAX]) | (low(regs[RDX]) << 32)))?;
        }
        EXIT_EPT_VIOLATION => {
            let m = insn::decode_mmio(insn).map_err(|_| refuse(vmcall::MMIO))?;
            window.check(ve, insn, regs, rip, m.size).map_err(|_| refuse(vmcall::MMIO))?;
            match m.write_value(regs) {
                Some(v) => {
                    vmcall_ok(hw, vmcall_mmio(ve.gpa, m.size, true, v))?;
                }
                None => {
                    let r = vmcall_ok(hw, vmcall_mmio(ve.gpa, m.size, false, 0))?;
                    m.complete_read(regs, r.r11);
                }
            }
            return Ok(m.len as u32);
        }
        other => return Err(refuse(other.into())),
    }
    Ok(ve.instruction_len)
}

// ---------------------------------------------------------------------------------------------
// TDG.MR.REPORT (ABI spec "TDG.MR.REPORT Leaf": RCX = GPA of the 1024-byte, 1024-aligned
// TDREPORT_STRUCT output, RDX = GPA of the 64-byte, 64-aligned REPORTDATA, R8 = subtype 0) and
// TDREPORT_STRUCT (ABI spec "TDREPORT_STRUCT": REPORTMACSTRUCT, TEE_TCB_INFO, TDINFO_STRUCT)

pub const TDREPORT_LEN: usize = 1024;
pub mod tdreport {
    //! Byte offsets in TDREPORT_STRUCT.
    pub const REPORT_TYPE: usize = 0x00;
    pub const CPUSVN: usize = 0x10;
    pub const TEE_TCB_INFO_HASH: usize = 0x20;
    pub const TEE_INFO_HASH: usize = 0x50;
    pub const REPORT_DATA: usize = 0x80;
    pub const MAC: usize = 0xE0;
    pub const TEE_TCB_INFO: usize = 0x100;
    pub const TD_INFO: usize = 0x200;
    pub const ATTRIBUTES: usize = 0x200;
    pub const XFAM: usize = 0x208;
    pub const MRTD: usize = 0x210;
    pub const MRCONFIGID: usize = 0x240;
    pub const MROWNER: usize = 0x270;
    pub const MROWNERCONFIG: usize = 0x2A0;
    pub const RTMR: [usize; 4] = [0x2D0, 0x300, 0x330, 0x360];
    pub const SERVTD_HASH: usize = 0x390;
    /// REPORTTYPE.TYPE of a TD report.
    pub const TYPE_TDX: u8 = 0x81;
}

pub fn mr_report_regs(tdreport_gpa: u64, report_data_gpa: u64) -> Regs {
    Regs { rax: leaf::MR_REPORT, rcx: tdreport_gpa, rdx: report_data_gpa, r8: 0, ..Default::default() }
}

/// Checks a TDREPORT the module returned: a TD report, for this REPORTDATA.
pub fn check_tdreport(r: &[u8; TDREPORT_LEN], report_data: &[u8; 64]) -> Result<(), TeeError> {
    if r[tdreport::REPORT_TYPE] != tdreport::TYPE_TDX {
        return Err(TeeError::ReportMismatch("TDREPORT type"));
    }
    if r[tdreport::REPORT_DATA..tdreport::REPORT_DATA + 64] != report_data[..] {
        return Err(TeeError::ReportMismatch("REPORTDATA"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GetQuote shared buffer (GHCI "TDG.VP.VMCALL<GetQuote>", table "GetQuote shared buffer
// format": u64 version = 1, u64 status, u32 in_len, u32 out_len, then the data: TDREPORT in,
// quote out)

pub const QUOTE_HEADER_LEN: usize = 24;
pub const QUOTE_VERSION: u64 = 1;
pub mod quote_status {
    pub const SUCCESS: u64 = 0;
    pub const IN_FLIGHT: u64 = u64::MAX;
    pub const ERROR: u64 = 0x8000_0000_0000_0000;
    pub const QGS_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
}

/// The request buffer: header then the TDREPORT, `size` bytes in all (a multiple of 4 KiB).
pub fn quote_request(tdreport: &[u8; TDREPORT_LEN], size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size.max(QUOTE_HEADER_LEN + TDREPORT_LEN)];
    b[0..8].copy_from_slice(&QUOTE_VERSION.to_le_bytes());
    b[16..20].copy_from_slice(&(TDREPORT_LEN as u32).to_le_bytes());
    b[QUOTE_HEADER_LEN..QUOTE_HEADER_LEN + TDREPORT_LEN].copy_from_slice(tdreport);
    b
}

/// The quote in a returned buffer: version 1, status SUCCESS, out_len within the buffer.
pub fn parse_quote_response(b: &[u8]) -> Result<Vec<u8>, TeeError> {
    if b.len() < QUOTE_HEADER_LEN {
        return Err(TeeError::BadResponse("GetQuote buffer shorter than its header"));
    }
    let version = u64::from_le_bytes(b[0..8].try_into().unwrap());
    let st = u64::from_le_bytes(b[8..16].try_into().unwrap());
    let out_len = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
    if version != QUOTE_VERSION {
        return Err(TeeError::BadResponse("GetQuote version"));
    }
    if st != quote_status::SUCCESS {
        return Err(TeeError::Quote { status: st });
    }
    if out_len == 0 || out_len > b.len() - QUOTE_HEADER_LEN {
        return Err(TeeError::BadResponse("GetQuote out_len"));
    }
    Ok(b[QUOTE_HEADER_LEN..QUOTE_HEADER_LEN + out_len].to_vec())
}

/// REPORTDATA inside a DCAP quote: v4 = 48-byte header + TD report body (REPORTDATA at 520 of
/// the body); v5 = header, body type (u16) and size (u32), then the body (Intel TDX DCAP Quoting
/// Library API, "Quote Format"; the same offsets measurement-tool's verifier uses).
pub fn quote_report_data(quote: &[u8]) -> Option<&[u8]> {
    let version = u16::from_le_bytes(quote.get(0..2)?.try_into().ok()?);
    let body = match version {
        4 => 48,
        5 => 54,
        _ => return None,
    };
    quote.get(body + 520..body + 584)
}

/// The TDX attester: TDG.MR.REPORT, then GetQuote through the VMM (QEMU forwards it to the
/// host's quote-generation service).
pub struct TdxAttester<H: Hardware> {
    pub hw: H,
    /// Size of the GetQuote buffer (header included), a multiple of 4 KiB.
    pub quote_buffer: usize,
}

impl<H: Hardware> super::Attester for TdxAttester<H> {
    fn kind(&self) -> Kind {
        Kind::Tdx
    }
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let mut tdreport = [0u8; TDREPORT_LEN];
        let st = self.hw.mr_report(report_data, &mut tdreport);
        if st != status::SUCCESS {
            return Err(TeeError::Tdcall { leaf: leaf::MR_REPORT, status: st });
        }
        check_tdreport(&tdreport, report_data)?;
        let mut buffer = quote_request(&tdreport, self.quote_buffer);
        let st = self.hw.get_quote(&mut buffer);
        if st != vmcall::SUCCESS {
            return Err(TeeError::Vmcall { subfunction: vmcall::GET_QUOTE, status: st });
        }
        let quote = parse_quote_response(&buffer)?;
        if quote_report_data(&quote) != Some(&report_data[..]) {
            return Err(TeeError::ReportMismatch("the quote's REPORTDATA"));
        }
        Ok(Evidence { kind: Kind::Tdx, report: quote, certificates: Vec::new() })
    }
}

/// The TDX platform.
pub struct TdxPlatform<H: Hardware> {
    pub hw: H,
    pub shared_bit: u8,
}

impl<H: Hardware> super::Platform for TdxPlatform<H> {
    fn kind(&self) -> Kind {
        Kind::Tdx
    }
    fn encryption(&self) -> super::Encryption {
        super::Encryption::SharedBit(self.shared_bit)
    }
    fn accept(&mut self, range: Range) -> Result<(), TeeError> {
        accept_range(&mut self.hw, range)
    }
    /// Shared: MapGPA with the shared bit. Private: MapGPA without it, then accept the pages
    /// (the VMM gives back pending pages; Linux `tdx_enc_status_changed`).
    fn set_shared(&mut self, range: Range, shared: bool) -> Result<(), TeeError> {
        map_gpa(&mut self.hw, range, shared, self.shared_bit)?;
        if !shared {
            accept_range(&mut self.hw, range)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_numbers_and_status_codes() {
        // ABI spec table "TDCALL Instruction Leaf Numbers Definition" (also Linux
        // arch/x86/include/asm/shared/tdx.h TDG_*).
        assert_eq!((leaf::VP_VMCALL, leaf::VP_INFO, leaf::MR_RTMR_EXTEND, leaf::VP_VEINFO_GET), (0, 1, 2, 3));
        assert_eq!((leaf::MR_REPORT, leaf::VP_CPUIDVE_SET, leaf::MEM_PAGE_ACCEPT), (4, 5, 6));
        // ABI spec "Function Completion Status Codes" (Linux arch/x86/include/asm/shared/tdx_errno.h,
        // TDVF's TdxAcceptPage).
        assert_eq!(status::PAGE_ALREADY_ACCEPTED, 0x0000_0B0A_0000_0000);
        assert_eq!(status::PAGE_SIZE_MISMATCH, 0xC000_0B0B_0000_0000);
        // GHCI sub-function table: the VMX exit reasons for the instructions, 0x1000x for the rest
        // (Linux TDVMCALL_MAP_GPA 0x10001, TDVMCALL_GET_QUOTE 0x10002).
        assert_eq!((vmcall::CPUID, vmcall::HLT, vmcall::IO, vmcall::RDMSR, vmcall::WRMSR, vmcall::MMIO), (10, 12, 30, 31, 32, 48));
        assert_eq!((vmcall::MAP_GPA, vmcall::GET_QUOTE, vmcall::REPORT_FATAL_ERROR), (0x10001, 0x10002, 0x10003));
        // ReportFatalError: every reason the agent sends is a code QEMU takes down the guest-
        // panic path for (bits 15:0 clear), with the message in R14/R15 (exposed by RCX).
        for reason in [0u16, 2, 3, 4, 5, 0xFFFF] {
            let r = vmcall_report_fatal_error(reason, b"agent: handler\0\0");
            assert!(qemu_accepts_fatal_error_code(r.r12), "reason {reason}: R12 {:#x}", r.r12);
            assert_eq!(r.r12 >> 16, u64::from(reason));
            assert_eq!(r.r12 >> 32, 0, "bits 62:32 reserved, no GPA");
            assert_eq!((r.r14.to_le_bytes(), r.rcx & (3 << 14)), (*b"agent: h", 3 << 14));
        }
        // What the agent sent before: the reason in bits 15:0, which QEMU refuses.
        assert!(!qemu_accepts_fatal_error_code(5));
    }

    #[test]
    fn register_encodings() {
        // TDG.MEM.PAGE.ACCEPT: RCX = GPA | level (0 4K, 1 2M).
        assert_eq!(accept_regs(0x20_0000, PageSize::Size2M), Regs { rax: 6, rcx: 0x20_0001, ..Default::default() });
        assert_eq!(accept_regs(0x1234_5000, PageSize::Size4K).rcx, 0x1234_5000);
        // TDG.MR.REPORT: RCX TDREPORT GPA, RDX REPORTDATA GPA, R8 subtype 0.
        assert_eq!(mr_report_regs(0x40_0400, 0x40_0040), Regs { rax: 4, rcx: 0x40_0400, rdx: 0x40_0040, ..Default::default() });
        // TDG.VP.VMCALL: RAX 0, RCX = R10..R15 exposed, R10 = 0 standard, R11 sub-function.
        let c = vmcall_cpuid(0x21, 0);
        assert_eq!((c.rax, c.rcx, c.r10, c.r11, c.r12, c.r13), (0, 0xFC00, 0, 10, 0x21, 0));
        let io = vmcall_io(0x3F8, 1, true, 0x41);
        assert_eq!((io.r11, io.r12, io.r13, io.r14, io.r15), (30, 1, 1, 0x3F8, 0x41));
        let rd = vmcall_io(0xCFC, 4, false, 0xFFFF);
        assert_eq!((rd.r12, rd.r13, rd.r14, rd.r15), (4, 0, 0xCFC, 0));
        assert_eq!((vmcall_rdmsr(0x1B).r11, vmcall_rdmsr(0x1B).r12), (31, 0x1B));
        let w = vmcall_wrmsr(0x2FF, 0xC06);
        assert_eq!((w.r11, w.r12, w.r13), (32, 0x2FF, 0xC06));
        let m = vmcall_mmio(0xC000_0000, 4, true, 7);
        assert_eq!((m.r11, m.r12, m.r13, m.r14, m.r15), (48, 4, 1, 0xC000_0000, 7));
        // MapGPA: R12 = GPA with the shared bit for shared, R13 = size.
        let s = vmcall_map_gpa(0x80_0000, 0x4000, Some(51));
        assert_eq!((s.r11, s.r12, s.r13), (0x10001, 0x0008_0000_0080_0000, 0x4000));
        assert_eq!(vmcall_map_gpa(0x80_0000, 0x4000, None).r12, 0x80_0000);
        let q = vmcall_get_quote(0x0008_0000_0090_0000, 0x4000);
        assert_eq!((q.r11, q.r12, q.r13), (0x10002, 0x0008_0000_0090_0000, 0x4000));
        assert_eq!(shared_bit(52), Some(51));
        assert_eq!(shared_bit(48), Some(47));
        assert_eq!(shared_bit(50), None);
    }

    #[test]
    fn io_exit_qualification() {
        // SDM vol. 3 "Exit Qualification for I/O Instructions": IN AL, DX from 0x71 =
        // size 0, IN (bit 3), port 0x71 << 16.
        assert_eq!(decode_io_qualification(0x0071_0008), IoExit { port: 0x71, size: 1, is_in: true, string: false });
        assert_eq!(decode_io_qualification(0x0CFC_0003), IoExit { port: 0xCFC, size: 4, is_in: false, string: false });
        assert!(decode_io_qualification(0x0000_0010).string);
    }

    #[test]
    fn tdreport_and_quote_buffer_layouts() {
        // ABI spec "REPORTMACSTRUCT" / "TDINFO_STRUCT" (also the tdx-guest crate and mushroom's
        // TdReport): REPORTDATA at 0x80, MRTD at 0x210, RTMR0 at 0x2D0.
        assert_eq!((tdreport::REPORT_DATA, tdreport::MAC, tdreport::TD_INFO), (0x80, 0xE0, 0x200));
        assert_eq!((tdreport::MRTD, tdreport::RTMR[0], tdreport::SERVTD_HASH), (0x210, 0x2D0, 0x390));
        let mut r = [0u8; TDREPORT_LEN];
        r[0] = 0x81;
        r[0x80..0xC0].fill(9);
        assert!(check_tdreport(&r, &[9; 64]).is_ok());
        assert!(check_tdreport(&r, &[8; 64]).is_err());
        // GHCI GetQuote buffer (QEMU tdx_get_quote_header, Linux struct tdx_quote_buf): version
        // u64 = 1, status u64, in_len u32, out_len u32, data at 24.
        let b = quote_request(&r, 0x4000);
        assert_eq!(b.len(), 0x4000);
        assert_eq!(&b[0..24], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[24], 0x81);
        let mut done = b.clone();
        done[20..24].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(parse_quote_response(&done).unwrap(), r[..5].to_vec());
        done[8..16].copy_from_slice(&quote_status::QGS_UNAVAILABLE.to_le_bytes());
        assert_eq!(parse_quote_response(&done), Err(TeeError::Quote { status: 0x8000_0000_0000_0001 }));
        done[8..16].fill(0);
        done[20..24].copy_from_slice(&0x4000u32.to_le_bytes());
        assert!(parse_quote_response(&done).is_err(), "out_len past the buffer");
        // DCAP quote v4: REPORTDATA at 48 + 520 = 568.
        let mut quote = vec![0u8; 1000];
        quote[0] = 4;
        quote[568..632].fill(7);
        assert_eq!(quote_report_data(&quote), Some(&[7u8; 64][..]));
        quote[0] = 3;
        assert_eq!(quote_report_data(&quote), None);
    }

    /// A TDX module + VMM model for the register-only leaves: pending pages, a host that maps
    /// some 2 MiB regions as 4 KiB pages, MapGPA that stops part-way, and instruction emulation.
    #[derive(Default)]
    struct Module {
        accepted: alloc::collections::BTreeSet<u64>,
        small_regions: Vec<u64>,
        calls: Vec<Regs>,
        map_step: u64,
        mapped: Vec<(u64, u64)>,
        ports: Vec<(u16, u8, bool, u64)>,
        mmio: Vec<(u64, u8, bool, u64)>,
        msrs: alloc::collections::BTreeMap<u32, u64>,
        resume_outside: bool,
        /// ACCEPT answers TDX_OPERAND_BUSY (operand id in the low bits) this many times first.
        busy: usize,
    }

    impl Hardware for Module {
        fn tdcall(&mut self, r: &mut Regs) {
            self.calls.push(*r);
            match r.rax {
                leaf::VP_INFO => *r = Regs { rax: 0, rcx: 52, rdx: ATTR_SEPT_VE_DISABLE, r8: (4 << 32) | 1, r9: 0, ..*r },
                leaf::MEM_PAGE_ACCEPT if self.busy > 0 => {
                    self.busy -= 1;
                    r.rax = status::OPERAND_BUSY | 0x90; // operand: the Secure EPT entry
                }
                leaf::MEM_PAGE_ACCEPT => {
                    let (gpa, level) = (r.rcx & !0xFFF, r.rcx & 7);
                    let len = if level == 1 { PAGE_2M } else { PAGE_4K };
                    r.rax = if level == 1 && self.small_regions.contains(&gpa) {
                        status::PAGE_SIZE_MISMATCH
                    } else if (gpa..gpa + len).step_by(4096).any(|p| self.accepted.contains(&p)) {
                        status::PAGE_ALREADY_ACCEPTED
                    } else {
                        self.accepted.extend((gpa..gpa + len).step_by(4096));
                        status::SUCCESS
                    };
                }
                leaf::VP_VMCALL => {
                    assert_eq!((r.rcx, r.r10), (vmcall::EXPOSE_R10_R15, 0));
                    r.rax = 0;
                    r.r10 = vmcall::SUCCESS;
                    match r.r11 {
                        vmcall::MAP_GPA => {
                            let (gpa, size) = (r.r12, r.r13);
                            if self.map_step > 0 && size > self.map_step {
                                self.mapped.push((gpa, self.map_step));
                                r.r10 = vmcall::RETRY;
                                r.r11 = if self.resume_outside { gpa - PAGE_4K } else { gpa + self.map_step };
                            } else {
                                self.mapped.push((gpa, size));
                            }
                        }
                        vmcall::CPUID => (r.r12, r.r13, r.r14, r.r15) = (0xA, 0xB, 0xC, 0xFFFF_FFFF_0000_000D),
                        vmcall::IO => {
                            self.ports.push((r.r14 as u16, r.r12 as u8, r.r13 == 1, r.r15));
                            r.r11 = 0x1234_5678;
                        }
                        vmcall::RDMSR => r.r11 = *self.msrs.get(&(r.r12 as u32)).unwrap_or(&0),
                        vmcall::MMIO => {
                            self.mmio.push((r.r14, r.r12 as u8, r.r13 == 1, r.r15));
                            r.r11 = 0x1234_5678;
                        }
                        vmcall::WRMSR => {
                            self.msrs.insert(r.r12 as u32, r.r13);
                        }
                        // GHCI "TDG.VP.VMCALL<Instruction.HLT>": R12 = interrupt blocked flag.
                        vmcall::HLT if r.r12 == 1 => {}
                        _ => r.r10 = vmcall::INVALID_OPERAND,
                    }
                }
                _ => r.rax = status::OPERAND_INVALID,
            }
        }
        fn mr_report(&mut self, _: &[u8; 64], _: &mut [u8; TDREPORT_LEN]) -> u64 {
            unreachable!()
        }
        fn get_quote(&mut self, _: &mut [u8]) -> u64 {
            unreachable!()
        }
    }

    use super::super::PAGE_2M;

    #[test]
    fn vp_info_decodes_gpaw_and_vcpus() {
        let info = vp_info(&mut Module::default()).unwrap();
        assert_eq!(info, TdInfo { gpaw: 52, attributes: ATTR_SEPT_VE_DISABLE, num_vcpus: 1, max_vcpus: 4, vcpu_index: 0 });
        assert_eq!(shared_bit(info.gpaw), Some(51));
    }

    /// The TDX module's side of the startup checks, as its source behaves
    /// (intel/tdx-module): TDG.VP.INFO reports the TD's configuration;
    /// TDG.VP.CPUIDVE.SET (src/td_dispatcher/tdcall/tdg_vp_cpuidve_set.c) refuses reserved RCX
    /// bits with OPERAND_INVALID and otherwise sets TDVPS.CPUID_SUPERVISOR_VE / CPUID_USER_VE;
    /// the CPUID exit handler (src/td_dispatcher/vm_exits/td_cpuid.c) injects #VE for any leaf
    /// when the flag of the current CPL is set, and otherwise answers most leaves itself.
    struct Td {
        num_vcpus: u32,
        vcpu_index: u32,
        attributes: u64,
        /// A module without the leaf (an unknown leaf number is OPERAND_INVALID).
        no_cpuidve: bool,
        supervisor_ve: bool,
        user_ve: bool,
    }

    impl Td {
        fn new() -> Td {
            Td { num_vcpus: 1, vcpu_index: 0, attributes: ATTR_SEPT_VE_DISABLE, no_cpuidve: false, supervisor_ve: false, user_ve: false }
        }
        /// Whether CPUID(leaf) at `cpl` raises #VE (else the module answers it).
        fn cpuid_raises_ve(&self, leaf: u32, cpl: u8) -> bool {
            if (0x4000_0000..=0x4FFF_FFFF).contains(&leaf) {
                return true; // the hypervisor range always goes to the guest's #VE handler
            }
            if (cpl == 0 && self.supervisor_ve) || (cpl > 0 && self.user_ve) {
                return true;
            }
            // Without the flag, the module answers leaves 0, 1, 7, 0x8000_0000.. from its
            // tables (partly configured by the host at TDH.MNG.INIT): not the agent's table.
            false
        }
    }

    impl Hardware for Td {
        fn tdcall(&mut self, r: &mut Regs) {
            match r.rax {
                leaf::VP_INFO => {
                    *r = Regs { rax: 0, rcx: 52, rdx: self.attributes, r8: (8 << 32) | u64::from(self.num_vcpus), r9: u64::from(self.vcpu_index), ..*r }
                }
                leaf::VP_CPUIDVE_SET if !self.no_cpuidve => {
                    if r.rcx >> 2 != 0 {
                        r.rax = status::OPERAND_INVALID | 1; // operand id RCX
                    } else {
                        (self.supervisor_ve, self.user_ve) = (r.rcx & 1 != 0, r.rcx & 2 != 0);
                        r.rax = status::SUCCESS;
                    }
                }
                _ => r.rax = status::OPERAND_INVALID,
            }
        }
        fn mr_report(&mut self, _: &[u8; 64], _: &mut [u8; TDREPORT_LEN]) -> u64 {
            unreachable!()
        }
        fn get_quote(&mut self, _: &mut [u8]) -> u64 {
            unreachable!()
        }
    }

    #[test]
    fn every_user_mode_cpuid_raises_ve_once_the_agent_asks() {
        let mut td = Td::new();
        // Before: ring 3 reads the module's (and the host's) values for the common leaves.
        assert!(!td.cpuid_raises_ve(1, 3));
        trap_user_cpuid(&mut td).unwrap();
        for leaf in [0, 1, 7, 0xD, 0x21, 0x8000_0000, 0x8000_0002, 0x8000_0008, 0x4000_0000] {
            assert!(td.cpuid_raises_ve(leaf, 3), "leaf {leaf:#x} from ring 3");
        }
        // The agent's own CPUID (the TDX signature leaf 0x21 at boot) stays the module's.
        assert!(!td.cpuid_raises_ve(0x21, 0));
        assert!(!td.supervisor_ve);
        // A module that refuses the leaf leaves ring 3's CPUID to the host: an error.
        let mut old = Td { no_cpuidve: true, ..Td::new() };
        assert_eq!(trap_user_cpuid(&mut old), Err(TeeError::Tdcall { leaf: leaf::VP_CPUIDVE_SET, status: status::OPERAND_INVALID }));
        assert!(!old.user_ve);
    }

    #[test]
    fn the_agent_runs_only_in_a_one_vcpu_td_with_sept_ve_disable() {
        let info = |td: &mut Td| vp_info(td).unwrap();
        assert_eq!(check_td(&info(&mut Td::new())), Ok(()));
        // A host that starts the TD with two vCPUs: refused (and rom32.s parks vCPU 1).
        let two = info(&mut Td { num_vcpus: 2, ..Td::new() });
        assert!(matches!(check_td(&two), Err(TeeError::TdConfiguration(_))));
        let second = info(&mut Td { num_vcpus: 2, vcpu_index: 1, ..Td::new() });
        assert!(check_td(&second).is_err());
        // ATTRIBUTES without SEPT_VE_DISABLE (bit 28; Linux refuses it outside debug TDs).
        let no_sept = info(&mut Td { attributes: 0, ..Td::new() });
        assert_eq!(check_td(&no_sept), Err(TeeError::TdConfiguration("the TD lacks ATTRIBUTES.SEPT_VE_DISABLE")));
        let debug_only = info(&mut Td { attributes: ATTR_DEBUG, ..Td::new() });
        assert!(check_td(&debug_only).is_err(), "a debug TD gets no exception");
        assert_eq!(ATTR_SEPT_VE_DISABLE, 1 << 28);
    }

    #[test]
    fn accept_uses_2m_and_falls_back_on_size_mismatch() {
        use crate::tee::Platform;
        let mut p = TdxPlatform { hw: Module { small_regions: vec![0x40_0000], ..Default::default() }, shared_bit: 51 };
        p.accept(Range::new(0x20_0000, 0x40_0000).unwrap()).unwrap();
        // 2M at 0x20_0000; 2M at 0x40_0000 refused as PAGE_SIZE_MISMATCH, then 512 x 4K.
        assert_eq!(p.hw.calls.len(), 2 + 512);
        assert_eq!(p.hw.calls[0].rcx, 0x20_0001);
        assert_eq!(p.hw.calls[2].rcx, 0x40_0000);
        assert_eq!(p.hw.accepted.len(), 1024);
        // Accepting again is an error (a double accept is never expected).
        let e = p.accept(Range::new(0x20_0000, 0x1000).unwrap()).unwrap_err();
        assert_eq!(e, TeeError::Accept { gpa: 0x20_0000, status: status::PAGE_ALREADY_ACCEPTED });
    }

    #[test]
    fn accept_retries_while_the_module_is_busy() {
        use crate::tee::Platform;
        let mut p = TdxPlatform { hw: Module { busy: 5, ..Default::default() }, shared_bit: 51 };
        p.accept(Range::new(0x20_0000, 0x20_0000).unwrap()).unwrap();
        assert_eq!(p.hw.accepted.len(), 512);
        // A module busy for longer than the retries is an error naming the status.
        let mut p = TdxPlatform { hw: Module { busy: ACCEPT_BUSY_RETRIES + 1, ..Default::default() }, shared_bit: 51 };
        let e = p.accept(Range::new(0x20_0000, 0x1000).unwrap()).unwrap_err();
        assert_eq!(e, TeeError::Accept { gpa: 0x20_0000, status: status::OPERAND_BUSY | 0x90 });
    }

    #[test]
    fn map_gpa_resumes_where_the_vmm_says_and_private_means_accept() {
        use crate::tee::Platform;
        let mut p = TdxPlatform { hw: Module { map_step: 0x2000, ..Default::default() }, shared_bit: 51 };
        p.set_shared(Range::new(0x80_0000, 0x5000).unwrap(), true).unwrap();
        let shared = 1u64 << 51;
        assert_eq!(p.hw.mapped, vec![(0x80_0000 | shared, 0x2000), (0x80_2000 | shared, 0x2000), (0x80_4000 | shared, 0x1000)]);
        p.hw.mapped.clear();
        p.set_shared(Range::new(0x80_0000, 0x2000).unwrap(), false).unwrap();
        assert_eq!(p.hw.mapped, vec![(0x80_0000, 0x2000)]);
        assert!(p.hw.accepted.contains(&0x80_1000), "pages mapped private are accepted");
        // A resume point outside the range is refused.
        let mut p = TdxPlatform { hw: Module { map_step: 0x1000, resume_outside: true, ..Default::default() }, shared_bit: 51 };
        assert!(p.set_shared(Range::new(0x80_0000, 0x2000).unwrap(), true).is_err());
    }

    #[test]
    fn ve_handler_emulates_cpuid_io_msrs_and_mmio() {
        let mut m = Module::default();
        let ve = |exit_reason: u32, qualification: u64, instruction_len: u32| VeInfo { exit_reason, qualification, instruction_len, ..Default::default() };
        // CPUID: EAX..EDX from R12..R15, upper halves dropped.
        let mut g: Gprs = [0; 16];
        g[0] = 0x21;
        assert_eq!(handle_ve(&mut m, &ve(10, 0, 2), &[0x0F, 0xA2], &mut g, RIP, &WINDOW), Ok(2));
        assert_eq!(&g[..4], &[0xA, 0xC, 0xD, 0xB], "RAX, RCX, RDX, RBX");
        // HLT (exit reason 12) with interrupts off: Instruction.HLT, interrupts blocked.
        assert_eq!(handle_ve(&mut m, &ve(12, 0, 1), &[0xF4], &mut g, RIP, &WINDOW), Ok(1));
        // OUT DX, AL to 0x3F8 (qualification: size 0, OUT, port << 16).
        g[0] = 0xFFFF_FF41;
        handle_ve(&mut m, &ve(30, 0x03F8_0000, 1), &[0xEE], &mut g, RIP, &WINDOW).unwrap();
        assert_eq!(m.ports.last(), Some(&(0x3F8, 1, true, 0x41)));
        // IN AX, DX keeps RAX's upper bits; IN EAX zero-extends.
        g[0] = 0xAAAA_BBBB_CCCC_DDDD;
        handle_ve(&mut m, &ve(30, 0x0071_0009, 2), &[0x66, 0xED], &mut g, RIP, &WINDOW).unwrap();
        assert_eq!(g[0], 0xAAAA_BBBB_CCCC_5678);
        handle_ve(&mut m, &ve(30, 0x0CFC_000B, 1), &[0xED], &mut g, RIP, &WINDOW).unwrap();
        assert_eq!(g[0], 0x1234_5678);
        // WRMSR EDX:EAX then RDMSR.
        (g[0], g[2], g[1]) = (0xC06, 0x1, 0x2FF);
        handle_ve(&mut m, &ve(32, 0, 2), &[0x0F, 0x30], &mut g, RIP, &WINDOW).unwrap();
        (g[0], g[2]) = (0, 0);
        handle_ve(&mut m, &ve(31, 0, 2), &[0x0F, 0x32], &mut g, RIP, &WINDOW).unwrap();
        assert_eq!((g[0], g[2]), (0xC06, 1));
        // MMIO: mov [rsi], ecx to a shared GPA, then mov r8d, [rsp] (value from R11). The
        // addresses are the shared alias's: the instruction's own operand names the GPA.
        m.mmio.clear();
        let shared = (1 << 51) | 0xC000_0010;
        g[1] = 0xFFFF_FFFF_0000_0007;
        g[6] = WINDOW.alias_base + 0xC000_0010; // rsi
        g[4] = WINDOW.alias_base + 0xC000_0010; // rsp
        // The module leaves INSTRUCTION_LENGTH undefined for an EPT violation: here it still
        // holds the last OUT's 1 (ve_instr_len() in Linux's tdx.c); the decoded length counts.
        let v = VeInfo { exit_reason: 48, gpa: shared, instruction_len: 1, ..Default::default() };
        assert_eq!(handle_ve(&mut m, &v, &[0x89, 0x0E], &mut g, RIP, &WINDOW), Ok(2));
        assert_eq!(m.mmio, vec![(shared, 4, true, 7)]);
        g[8] = u64::MAX;
        assert_eq!(handle_ve(&mut m, &v, &[0x44, 0x8B, 0x04, 0x24], &mut g, RIP, &WINDOW), Ok(4));
        assert_eq!(g[8], 0x1234_5678);
        // Whatever stale length the field holds, the decoder's is used.
        assert_eq!(handle_ve(&mut m, &VeInfo { instruction_len: 7, ..v }, &[0x44, 0x8B, 0x04, 0x24], &mut g, RIP, &WINDOW), Ok(4));
        // Instructions the decoder does not know are refused.
        assert!(handle_ve(&mut m, &v, &[0x01, 0x00], &mut g, RIP, &WINDOW).is_err());
        assert!(handle_ve(&mut m, &ve(30, 0x10, 1), &[0x6C], &mut g, RIP, &WINDOW).is_err());
        assert!(handle_ve(&mut m, &ve(9, 0, 1), &[0xF4], &mut g, RIP, &WINDOW).is_err(), "exit reason 9 (task switch)");
    }

    const RIP: u64 = 0xFFFF_FFFF_8010_0000;
    const WINDOW: MmioWindow = MmioWindow { alias_base: 0xFFFF_8080_0000_0000, alias_len: 1 << 32, shared_mask: 1 << 51 };

    #[test]
    fn mmio_ve_must_come_from_the_shared_alias_inside_one_page() {
        let mut m = Module::default();
        let mut g: Gprs = [0; 16];
        let write = [0x89, 0x0E]; // mov [rsi], ecx: 4 bytes
        let ve = |gpa: u64| VeInfo { exit_reason: 48, gpa, ..Default::default() };
        // Through the alias, at the reported GPA: emulated.
        g[6] = WINDOW.alias_base + 0xC000_0FFC;
        assert_eq!(handle_ve(&mut m, &ve((1 << 51) | 0xC000_0FFC), &write, &mut g, RIP, &WINDOW), Ok(2));
        // Four bytes from 0xFFE cross into the next page: two GPAs, refused.
        g[6] = WINDOW.alias_base + 0xC000_0FFE;
        assert!(handle_ve(&mut m, &ve((1 << 51) | 0xC000_0FFE), &write, &mut g, RIP, &WINDOW).is_err());
        // The operand is not in the shared alias (the direct map, say): refused.
        g[6] = 0xFFFF_8000_C000_0010;
        assert!(handle_ve(&mut m, &ve((1 << 51) | 0xC000_0010), &write, &mut g, RIP, &WINDOW).is_err());
        // The operand names another page than the GPA the #VE reports: refused.
        g[6] = WINDOW.alias_base + 0xC000_1010;
        assert!(handle_ve(&mut m, &ve((1 << 51) | 0xC000_0010), &write, &mut g, RIP, &WINDOW).is_err());
        // A private GPA is never MMIO.
        g[6] = WINDOW.alias_base + 0xC000_0010;
        assert!(handle_ve(&mut m, &ve(0xC000_0010), &write, &mut g, RIP, &WINDOW).is_err());
        assert_eq!(m.mmio.len(), 1, "only the first access reached the VMM");
    }
}
