//! AMD SEV-SNP guest: the GHCB protocol, page validation, and the PSP's guest messages.
//!
//! ```text
//! earliest boot   GHCB MSR protocol (one 64-bit MSR, VMGEXIT): SEV info, register the GHCB
//!                 page's GPA, page-state changes of single pages, termination
//! then            the GHCB page (shared): full NAE events (CPUID, IOIO, MSR, MMIO), page-state
//!                 change buffers of up to 253 entries, SNP_GUEST_REQUEST
//! private memory  PVALIDATE beyond the pre-validated ranges the SEV metadata declares
//! attestation     MSG_REPORT_REQ in an AES-256-GCM guest message under VMPCK0
//! ```
//!
//! Offsets and codes are from the GHCB spec (#56421 rev 2.03) and the SNP firmware ABI (#56860
//! rev 1.55); sections are cited by title (their numbers move between revisions). Cross-checked against Linux
//! (`arch/x86/include/asm/sev-common.h`, `svm.h`, `drivers/virt/coco/sev-guest`).
use super::{split, Evidence, Kind, PageSize, Range, TeeError, PAGE_4K};
use crate::aes::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Nonce, Tag};
use alloc::vec;
use alloc::vec::Vec;
use zeroize::Zeroizing;

pub const PAGE: usize = 4096;

// ---------------------------------------------------------------------------------------------
// MSRs and CPUID (APM vol. 2 "SEV_STATUS MSR", "GHCB MSR"; vol. 3 "CPUID Fn8000_001F")

/// GHCB MSR (GHCB spec "GHCB MSR Protocol": SEV_ES_GHCB, MSR 0xC001_0130).
pub const MSR_GHCB: u32 = 0xC001_0130;
/// SEV_STATUS MSR.
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;
pub const SEV_STATUS_SEV: u64 = 1 << 0;
pub const SEV_STATUS_ES: u64 = 1 << 1;
pub const SEV_STATUS_SNP: u64 = 1 << 2;

/// CPUID 0x8000_001F EBX: C-bit position (bits 5:0).
pub fn cbit_from_cpuid(ebx: u32) -> u8 {
    (ebx & 0x3F) as u8
}

// ---------------------------------------------------------------------------------------------
// GHCB MSR protocol (GHCB spec "GHCB MSR Protocol", table of GHCBInfo values)

pub const MSR_SEV_INFO_RESP: u64 = 0x001;
pub const MSR_SEV_INFO_REQ: u64 = 0x002;
pub const MSR_CPUID_REQ: u64 = 0x004;
pub const MSR_CPUID_RESP: u64 = 0x005;
pub const MSR_REG_GPA_REQ: u64 = 0x012;
pub const MSR_REG_GPA_RESP: u64 = 0x013;
pub const MSR_PSC_REQ: u64 = 0x014;
pub const MSR_PSC_RESP: u64 = 0x015;
pub const MSR_HV_FEATURES_REQ: u64 = 0x080;
pub const MSR_HV_FEATURES_RESP: u64 = 0x081;
pub const MSR_TERM_REQ: u64 = 0x100;
const INFO_MASK: u64 = 0xFFF;

/// Page-state change operations (GHCB spec "GHCB MSR Protocol": SNP Page State Change request; "SNP Page State Change").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum PageState {
    Private = 1,
    Shared = 2,
}

/// Termination reason code set 0, "general" (GHCB spec "GHCB MSR Protocol": Termination Request).
pub mod term {
    pub const SET_GENERAL: u8 = 0;
    pub const GENERAL: u8 = 0;
    pub const PROTOCOL_UNSUPPORTED: u8 = 1;
    pub const SNP_UNSUPPORTED: u8 = 2;
    /// The agent's own reason set (as Linux uses set 1 for its own reasons).
    pub const SET_AGENT: u8 = 1;
    pub const PVALIDATE: u8 = 1;
    pub const PAGE_STATE: u8 = 2;
    pub const GHCB: u8 = 3;
}

/// The SEV information response: protocol versions and C-bit position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevInfo {
    pub max_version: u16,
    pub min_version: u16,
    pub cbit: u8,
}

/// SNP needs GHCB protocol version 2 (GHCB spec "Protocol Versions": version 2 adds the SNP events).
pub const GHCB_PROTOCOL_VERSION: u16 = 2;

pub fn msr_sev_info_request() -> u64 {
    MSR_SEV_INFO_REQ
}

/// GHCBData[63:48] max version, [47:32] min version, [31:24] C-bit position.
pub fn parse_sev_info(v: u64) -> Option<SevInfo> {
    (v & INFO_MASK == MSR_SEV_INFO_RESP).then_some(SevInfo {
        max_version: (v >> 48) as u16,
        min_version: (v >> 32) as u16,
        cbit: (v >> 24) as u8,
    })
}

/// CPUID request: GHCBData[63:32] function, [31:30] register (0 EAX, 1 EBX, 2 ECX, 3 EDX).
pub fn msr_cpuid_request(function: u32, register: u8) -> u64 {
    (u64::from(function) << 32) | (u64::from(register & 3) << 30) | MSR_CPUID_REQ
}

/// GHCB GPA registration: GHCBData[63:12] the GHCB page's GFN (answered with the same GFN).
pub fn msr_register_ghcb_request(gpa: u64) -> u64 {
    (gpa & !INFO_MASK) | MSR_REG_GPA_REQ
}

/// Page-state change of one 4 KiB page: GHCBData[55:52] operation, [51:12] GFN.
pub fn msr_psc_request(gpa: u64, op: PageState) -> u64 {
    ((op as u64) << 52) | (gpa & 0x000F_FFFF_FFFF_F000) | MSR_PSC_REQ
}

/// Termination request: GHCBData[15:12] reason code set, [23:16] reason code.
pub fn msr_terminate_request(set: u8, reason: u8) -> u64 {
    (u64::from(reason) << 16) | (u64::from(set & 0xF) << 12) | MSR_TERM_REQ
}

/// The minimal hardware interface the SNP platform needs; the firmware's arch layer implements
/// it with WRMSR/VMGEXIT/RDMSR, PVALIDATE and the shared GHCB page.
pub trait Hardware {
    /// Writes `value` to the GHCB MSR, executes VMGEXIT, returns the MSR's new value.
    fn msr_exit(&mut self, value: u64) -> u64;
    /// The GPA of the (shared) GHCB page.
    fn ghcb_gpa(&self) -> u64;
    /// Copies `ghcb` into the shared GHCB page, sets the GHCB MSR to its GPA, executes VMGEXIT,
    /// and copies the page back into `ghcb` (so the caller never reads shared memory twice).
    fn ghcb_exit(&mut self, ghcb: &mut Ghcb);
    /// PVALIDATE the page at `gpa` (through its mapping) of `size`; `validate` false rescinds.
    fn pvalidate(&mut self, gpa: u64, size: PageSize, validate: bool) -> Pvalidate;
    /// RMPADJUST the 4 KiB page at `gpa` (through its mapping) with RDX = `attrs`; returns EAX.
    fn rmpadjust(&mut self, gpa: u64, attrs: u64) -> u32;
}

fn msr_call(hw: &mut impl Hardware, request: u64, response_code: u64) -> Result<u64, TeeError> {
    let response = hw.msr_exit(request);
    if response & INFO_MASK != response_code {
        return Err(TeeError::MsrProtocol { request, response });
    }
    Ok(response)
}

/// Negotiates the GHCB protocol: version 2 must be within the hypervisor's range, and the C-bit
/// the hypervisor reports must be the one CPUID reports.
pub fn negotiate(hw: &mut impl Hardware, cpuid_cbit: u8) -> Result<SevInfo, TeeError> {
    let request = msr_sev_info_request();
    let response = msr_call(hw, request, MSR_SEV_INFO_RESP)?;
    let info = parse_sev_info(response).ok_or(TeeError::MsrProtocol { request, response })?;
    if !(info.min_version..=info.max_version).contains(&GHCB_PROTOCOL_VERSION) || info.cbit != cpuid_cbit {
        return Err(TeeError::MsrProtocol { request, response });
    }
    Ok(info)
}

/// Registers the GHCB page's GPA (GHCB spec "GHCB GPA Registration": required for SNP before the first use).
pub fn register_ghcb(hw: &mut impl Hardware, gpa: u64) -> Result<(), TeeError> {
    let request = msr_register_ghcb_request(gpa);
    let response = msr_call(hw, request, MSR_REG_GPA_RESP)?;
    if response >> 12 != gpa >> 12 {
        return Err(TeeError::MsrProtocol { request, response });
    }
    Ok(())
}

/// Changes one 4 KiB page's state through the MSR protocol (before the GHCB exists).
pub fn msr_page_state_change(hw: &mut impl Hardware, gpa: u64, op: PageState) -> Result<(), TeeError> {
    let request = msr_psc_request(gpa, op);
    let response = msr_call(hw, request, MSR_PSC_RESP)?;
    match response >> 32 {
        0 => Ok(()),
        error => Err(TeeError::PageStateChange { gpa, error }),
    }
}

// ---------------------------------------------------------------------------------------------
// The checks Linux makes before it trusts an SNP launch (arch/x86/boot/compressed/sev.c
// `snp_check_features` and `enforce_vmpl0`; arch/x86/boot/startup/sev-shared.c
// `get_hv_features`), made by the agent before it touches anything else (arch/tee.rs)

/// SEV_STATUS bits (APM vol. 2 "SEV_STATUS MSR"; Linux `MSR_AMD64_SNP_*_BIT`).
pub mod status_bit {
    pub const VTOM: u64 = 1 << 3;
    pub const REFLECT_VC: u64 = 1 << 4;
    pub const RESTRICTED_INJECTION: u64 = 1 << 5;
    pub const ALTERNATE_INJECTION: u64 = 1 << 6;
    pub const DEBUG_SWAP: u64 = 1 << 7;
    pub const PREVENT_HOST_IBS: u64 = 1 << 8;
    pub const BTB_ISOLATION: u64 = 1 << 9;
    pub const VMPL_SSS: u64 = 1 << 10;
    pub const SECURE_TSC: u64 = 1 << 11;
    pub const VMGEXIT_PARAMETER: u64 = 1 << 12;
    pub const IBS_VIRTUALIZATION: u64 = 1 << 14;
    pub const VMSA_REG_PROT: u64 = 1 << 16;
    pub const SMT_PROTECTION: u64 = 1 << 17;
    pub const SECURE_AVIC: u64 = 1 << 18;
    pub const IBPB_ON_ENTRY: u64 = 1 << 23;
}

/// What the agent runs with: SEV, SEV-ES and SNP (required), and the features that ask nothing
/// of the guest and only take something from the host (DebugSwap: the hardware swaps the debug
/// registers the agent never uses; host IBS prevention, BTB isolation, IBS virtualisation, SMT
/// protection, IBPB on entry). Everything else changes what the guest must do — vTOM, Reflect-VC,
/// Restricted/Alternate Injection (#HV), VMPL supervisor shadow stacks, Secure TSC, VMGEXIT
/// parameters, VMSA register protection, Secure AVIC — or is not yet defined: a guest that
/// ignored those would run with assumptions that no longer hold, so the agent refuses them
/// (Linux refuses the ones it does not implement, `SNP_FEATURES_IMPL_REQ`; the agent's
/// allow-list also fails closed on bits defined after it was written).
pub const SEV_STATUS_ALLOWED: u64 = SEV_STATUS_SEV
    | SEV_STATUS_ES
    | SEV_STATUS_SNP
    | status_bit::DEBUG_SWAP
    | status_bit::PREVENT_HOST_IBS
    | status_bit::BTB_ISOLATION
    | status_bit::IBS_VIRTUALIZATION
    | status_bit::SMT_PROTECTION
    | status_bit::IBPB_ON_ENTRY;

/// Checks SEV_STATUS: SNP (with SEV and SEV-ES) on, nothing outside [`SEV_STATUS_ALLOWED`].
pub fn check_sev_status(status: u64) -> Result<(), TeeError> {
    let required = SEV_STATUS_SEV | SEV_STATUS_ES | SEV_STATUS_SNP;
    let unsupported = status & !SEV_STATUS_ALLOWED;
    if status & required != required || unsupported != 0 {
        return Err(TeeError::SevFeatures { status, unsupported });
    }
    Ok(())
}

/// The hypervisor's GHCB features (GHCB spec "Hypervisor Feature Support"): bit 0, SEV-SNP.
pub const HV_FEATURE_SNP: u64 = 1 << 0;

/// The hypervisor features request (GHCB MSR protocol 0x080 → 0x081, features in
/// GHCBData[63:12]; required from GHCB protocol version 2). A hypervisor that does not claim
/// SNP support is refused (Linux terminates with GHCB_SNP_UNSUPPORTED).
pub fn hv_features(hw: &mut impl Hardware) -> Result<u64, TeeError> {
    let response = msr_call(hw, MSR_HV_FEATURES_REQ, MSR_HV_FEATURES_RESP)?;
    let features = response >> 12;
    if features & HV_FEATURE_SNP == 0 {
        return Err(TeeError::MsrProtocol { request: MSR_HV_FEATURES_REQ, response });
    }
    Ok(features)
}

/// RMPADJUST's RDX for the VMPL check: target VMPL 1 (bits 7:0), no permissions (15:8), not a
/// VMSA (16) — Linux `enforce_vmpl0` uses the same value.
pub const RMPADJUST_VMPL1_NONE: u64 = 1;
/// RMPADJUST return codes (APM vol. 3 "RMPADJUST"): 0 success, 2 FAIL_PERMISSION (the target
/// VMPL is not less privileged than the current one).
pub const RMPADJUST_SUCCESS: u32 = 0;
pub const RMPADJUST_FAIL_PERMISSION: u32 = 2;

/// The agent must run at VMPL0: only VMPL0 may change VMPL1's permissions, so RMPADJUST of one
/// of its own private pages to VMPL1 succeeds exactly there. At any other VMPL a more privileged
/// layer (an SVSM or a paravisor the host chose) could read and change the agent's memory, and
/// the report's VMPL field would not be 0 — the agent refuses to start.
pub fn check_vmpl0(hw: &mut impl Hardware, private_page_gpa: u64) -> Result<(), TeeError> {
    match hw.rmpadjust(private_page_gpa, RMPADJUST_VMPL1_NONE) {
        RMPADJUST_SUCCESS => Ok(()),
        code => Err(TeeError::NotVmpl0 { code }),
    }
}

// ---------------------------------------------------------------------------------------------
// The GHCB page (GHCB spec "GHCB Layout" table; Linux `struct ghcb`)

pub mod ghcb {
    //! Byte offsets in the GHCB page.
    pub const CPL: usize = 0x0CB;
    pub const XSS: usize = 0x140;
    pub const DR7: usize = 0x160;
    pub const RAX: usize = 0x1F8;
    pub const RCX: usize = 0x308;
    pub const RDX: usize = 0x310;
    pub const RBX: usize = 0x318;
    pub const SW_EXIT_CODE: usize = 0x390;
    pub const SW_EXIT_INFO_1: usize = 0x398;
    pub const SW_EXIT_INFO_2: usize = 0x3A0;
    pub const SW_SCRATCH: usize = 0x3A8;
    pub const XCR0: usize = 0x3E8;
    pub const VALID_BITMAP: usize = 0x3F0;
    pub const SHARED_BUFFER: usize = 0x800;
    pub const SHARED_BUFFER_LEN: usize = 0x7F0;
    pub const PROTOCOL_VERSION: usize = 0xFFA;
    pub const GHCB_USAGE: usize = 0xFFC;
}

/// SW_EXITCODE values (APM vol. 2 Appendix C "SVM Intercept Exit Codes"; GHCB spec table
/// of non-automatic exits).
pub mod exit {
    pub const RDTSC: u64 = 0x6E;
    pub const CPUID: u64 = 0x72;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const NPF: u64 = 0x400;
    pub const MMIO_READ: u64 = 0x8000_0001;
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    pub const PAGE_STATE_CHANGE: u64 = 0x8000_0010;
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
    pub const TERMINATE: u64 = 0x8000_FFFE;
}

/// A GHCB page's contents, built and read in private memory.
#[derive(Clone)]
pub struct Ghcb(pub [u8; PAGE]);

impl Default for Ghcb {
    fn default() -> Self {
        Self::new()
    }
}

impl Ghcb {
    /// An empty GHCB: zero valid bitmap, protocol version 2, usage 0 (standard format).
    pub fn new() -> Ghcb {
        let mut g = Ghcb([0; PAGE]);
        g.0[ghcb::PROTOCOL_VERSION..ghcb::PROTOCOL_VERSION + 2].copy_from_slice(&GHCB_PROTOCOL_VERSION.to_le_bytes());
        g
    }

    /// Sets a quadword field and its valid bit (bit = offset / 8, GHCB spec "GHCB Layout").
    pub fn set(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        let bit = offset / 8;
        self.0[ghcb::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }

    pub fn is_valid(&self, offset: usize) -> bool {
        let bit = offset / 8;
        self.0[ghcb::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }

    pub fn get(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.0[offset..offset + 8].try_into().unwrap())
    }

    /// A field the hypervisor must have marked valid.
    pub fn get_valid(&self, offset: usize) -> Option<u64> {
        self.is_valid(offset).then(|| self.get(offset))
    }

    fn exit(&mut self, code: u64, info1: u64, info2: u64) {
        self.set(ghcb::SW_EXIT_CODE, code);
        self.set(ghcb::SW_EXIT_INFO_1, info1);
        self.set(ghcb::SW_EXIT_INFO_2, info2);
    }

    /// The hypervisor's verdict: SW_EXITINFO1[31:0] = 0 is success (GHCB spec, NAE
    /// exit results; Linux `verify_exception_info`); 1 means SW_EXITINFO2 carries an exception to inject.
    pub fn result(&self) -> Result<(), TeeError> {
        let (code, info1, info2) = (self.get(ghcb::SW_EXIT_CODE), self.get(ghcb::SW_EXIT_INFO_1), self.get(ghcb::SW_EXIT_INFO_2));
        if info1 & 0xFFFF_FFFF != 0 {
            return Err(TeeError::Ghcb { exit_code: code, info1, info2 });
        }
        Ok(())
    }

    /// CPUID NAE event (GHCB spec NAE table, "CPUID"): RAX = leaf, RCX = subleaf, XCR0 for leaf 0xD.
    pub fn cpuid(leaf: u32, subleaf: u32, xcr0: u64) -> Ghcb {
        let mut g = Ghcb::new();
        g.set(ghcb::RAX, leaf.into());
        g.set(ghcb::RCX, subleaf.into());
        if leaf == 0xD {
            g.set(ghcb::XCR0, xcr0);
        }
        g.exit(exit::CPUID, 0, 0);
        g
    }

    /// RDTSC NAE event (GHCB spec NAE table, "RDTSC"): no inputs; RAX and RDX out. Only needed
    /// when the hypervisor intercepts RDTSC (KVM does not for SEV-ES/SNP guests).
    pub fn rdtsc() -> Ghcb {
        let mut g = Ghcb::new();
        g.exit(exit::RDTSC, 0, 0);
        g
    }

    /// The CPUID result: RAX, RBX, RCX, RDX, each of which the hypervisor must mark valid.
    pub fn cpuid_result(&self) -> Option<[u32; 4]> {
        Some([
            self.get_valid(ghcb::RAX)? as u32,
            self.get_valid(ghcb::RBX)? as u32,
            self.get_valid(ghcb::RCX)? as u32,
            self.get_valid(ghcb::RDX)? as u32,
        ])
    }

    /// IOIO NAE event: SW_EXITINFO1 is the IOIO intercept's EXITINFO1 (APM vol. 2 "IOIO
    /// Intercept", figure "EXITINFO1 for IOIO Intercept"), RAX the value written — only its
    /// `size` bytes, and 0 for IN: the rest of the register is the guest's and never goes into
    /// the shared page (as Linux `vc_handle_ioio` masks it).
    pub fn io(port: u16, size: u8, write: bool, value: u32) -> Ghcb {
        let mut g = Ghcb::new();
        let mask = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        };
        g.set(ghcb::RAX, if write { u64::from(value & mask) } else { 0 });
        g.exit(exit::IOIO, ioio_exit_info(port, size, !write), 0);
        g
    }

    /// MSR NAE event: SW_EXITINFO1 = 0 RDMSR, 1 WRMSR; RCX = MSR; RAX/RDX = value.
    pub fn msr(msr: u32, write: Option<u64>) -> Ghcb {
        let mut g = Ghcb::new();
        g.set(ghcb::RCX, msr.into());
        if let Some(v) = write {
            g.set(ghcb::RAX, v & 0xFFFF_FFFF);
            g.set(ghcb::RDX, v >> 32);
        }
        g.exit(exit::MSR, write.is_some() as u64, 0);
        g
    }

    /// RDMSR's result (EDX:EAX), RAX and RDX marked valid by the hypervisor.
    pub fn msr_result(&self) -> Option<u64> {
        Some((self.get_valid(ghcb::RAX)? & 0xFFFF_FFFF) | (self.get_valid(ghcb::RDX)? << 32))
    }

    /// MMIO NAE event (GHCB spec NAE table, "MMIO Access"): SW_EXITINFO1 = GPA, SW_EXITINFO2 = length,
    /// SW_SCRATCH = GPA of the data, here the start of the GHCB's shared buffer.
    pub fn mmio(ghcb_gpa: u64, gpa: u64, data: &[u8], write: bool) -> Ghcb {
        let mut g = Ghcb::new();
        g.set(ghcb::SW_SCRATCH, ghcb_gpa + ghcb::SHARED_BUFFER as u64);
        if write {
            g.0[ghcb::SHARED_BUFFER..ghcb::SHARED_BUFFER + data.len()].copy_from_slice(data);
        }
        g.exit(if write { exit::MMIO_WRITE } else { exit::MMIO_READ }, gpa, data.len() as u64);
        g
    }

    /// SNP Guest Request (GHCB spec "SNP Guest Request"): SW_EXITINFO1 = request page GPA, SW_EXITINFO2 =
    /// response page GPA (both shared). The extended request ("SNP Extended Guest Request") adds RAX = GPA of the
    /// certificate buffer (shared) and RBX = its length in pages.
    pub fn guest_request(request_gpa: u64, response_gpa: u64, certs: Option<(u64, u64)>) -> Ghcb {
        let mut g = Ghcb::new();
        let code = match certs {
            Some((gpa, pages)) => {
                g.set(ghcb::RAX, gpa);
                g.set(ghcb::RBX, pages);
                exit::EXT_GUEST_REQUEST
            }
            None => exit::GUEST_REQUEST,
        };
        g.exit(code, request_gpa, response_gpa);
        g
    }

    /// Page State Change (GHCB spec "SNP Page State Change"): the PSC buffer lives in the shared buffer, pointed
    /// to by SW_SCRATCH.
    pub fn page_state_change(ghcb_gpa: u64, psc: &PscBuffer) -> Ghcb {
        let mut g = Ghcb::new();
        g.set(ghcb::SW_SCRATCH, ghcb_gpa + ghcb::SHARED_BUFFER as u64);
        psc.write(&mut g.0[ghcb::SHARED_BUFFER..ghcb::SHARED_BUFFER + ghcb::SHARED_BUFFER_LEN]);
        g.exit(exit::PAGE_STATE_CHANGE, 0, 0);
        g
    }
}

/// EXITINFO1 of an IOIO intercept (APM vol. 2 "IOIO Intercept"): bit 0 TYPE (1 = IN), bits 4-6
/// SZ8/16/32, bits 7-9 A16/A32/A64 (the instruction's address size: 64 in the agent's 64-bit
/// code, as Linux `vc_ioio_exitinfo` and OVMF's `IoioExitInfo` set it), bits 31:16 port.
pub fn ioio_exit_info(port: u16, size: u8, is_in: bool) -> u64 {
    let sz = match size {
        1 => 1 << 4,
        2 => 1 << 5,
        _ => 1 << 6,
    };
    (u64::from(port) << 16) | (1 << 9) | sz | is_in as u64
}

// ---------------------------------------------------------------------------------------------
// Page State Change buffer (GHCB spec "SNP Page State Change", table "Page State Change Structure")

/// Header (cur_entry u16, end_entry u16, reserved u32) + 253 entries fill the shared buffer.
pub const PSC_MAX_ENTRIES: usize = 253;

/// One entry: [11:0] current page, [51:12] GFN, [55:52] operation, [56] page size (1 = 2 MiB).
pub fn psc_entry(gpa: u64, op: PageState, size: PageSize) -> u64 {
    let large = (size == PageSize::Size2M) as u64;
    (large << 56) | ((op as u64) << 52) | (gpa & 0x000F_FFFF_FFFF_F000)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PscBuffer {
    pub cur_entry: u16,
    pub end_entry: u16,
    pub entries: Vec<u64>,
}

impl PscBuffer {
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.cur_entry.to_le_bytes());
        out[2..4].copy_from_slice(&self.end_entry.to_le_bytes());
        out[4..8].fill(0);
        for (i, e) in self.entries.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&e.to_le_bytes());
        }
    }

    pub fn read(buf: &[u8], count: usize) -> PscBuffer {
        let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
        PscBuffer {
            cur_entry: u16_at(0),
            end_entry: u16_at(2),
            entries: (0..count).map(|i| u64::from_le_bytes(buf[8 + 8 * i..16 + 8 * i].try_into().unwrap())).collect(),
        }
    }
}

/// The PSC buffers for a range: its pages (2 MiB where aligned), at most 253 per buffer.
pub fn psc_buffers(range: Range, op: PageState) -> Vec<PscBuffer> {
    let entries: Vec<u64> = split(range).map(|(gpa, size)| psc_entry(gpa, op, size)).collect();
    entries
        .chunks(PSC_MAX_ENTRIES)
        .map(|c| PscBuffer { cur_entry: 0, end_entry: (c.len() - 1) as u16, entries: c.to_vec() })
        .collect()
}

/// Runs one PSC buffer to completion. The hypervisor may stop early and is called again with
/// the buffer as it left it (Linux `vmgexit_psc`): it may advance `cur_entry` and the entries'
/// `cur_page` (within a 2 MiB entry), nothing else; every call must make progress.
pub fn run_psc(hw: &mut impl Hardware, mut psc: PscBuffer) -> Result<(), TeeError> {
    const CUR_PAGE: u64 = 0xFFF;
    let end = psc.end_entry;
    let first_gpa = psc.entries.first().map_or(0, |e| e & 0x000F_FFFF_FFFF_F000);
    let refused = || TeeError::PageStateChange { gpa: first_gpa, error: u64::MAX };
    let progress = |p: &PscBuffer| (p.cur_entry, p.entries.iter().map(|e| e & CUR_PAGE).sum::<u64>());
    // At most one call per 4 KiB page, plus the last.
    let bound = psc.entries.iter().map(|e| if e >> 56 & 1 == 1 { 512 } else { 1 }).sum::<usize>() + 1;
    for _ in 0..bound {
        let mut g = Ghcb::page_state_change(hw.ghcb_gpa(), &psc);
        hw.ghcb_exit(&mut g);
        let info2 = g.get(ghcb::SW_EXIT_INFO_2);
        if info2 != 0 {
            return Err(TeeError::PageStateChange { gpa: first_gpa, error: info2 });
        }
        let back = PscBuffer::read(&g.0[ghcb::SHARED_BUFFER..], psc.entries.len());
        let same_pages = back.entries.iter().zip(&psc.entries).all(|(b, o)| b & !CUR_PAGE == o & !CUR_PAGE);
        if back.end_entry != end || back.cur_entry < psc.cur_entry || !same_pages {
            return Err(refused());
        }
        if back.cur_entry > back.end_entry {
            return Ok(());
        }
        if progress(&back) <= progress(&psc) {
            return Err(refused()); // no progress
        }
        psc = back;
    }
    Err(refused())
}

// ---------------------------------------------------------------------------------------------
// PVALIDATE (APM vol. 3 "PVALIDATE": RAX = address, ECX = size 0/1, EDX = validate; result EAX,
// rFLAGS.CF = 1 when the RMP entry was not changed)

pub const PVALIDATE_SUCCESS: u32 = 0;
pub const PVALIDATE_FAIL_INPUT: u32 = 1;
pub const PVALIDATE_FAIL_SIZEMISMATCH: u32 = 6;
/// Software-defined: EAX = 0 but rFLAGS.CF = 1 (Linux `PVALIDATE_FAIL_NOUPDATE`).
pub const PVALIDATE_FAIL_NOUPDATE: u32 = 255;

/// What PVALIDATE returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pvalidate {
    pub eax: u32,
    pub carry: bool,
}

impl Pvalidate {
    /// CF = 1 (the page was already in the requested state) counts as a failure: validating a
    /// page twice is how a host would replay an old page into the guest.
    pub fn code(self) -> u32 {
        if self.eax == PVALIDATE_SUCCESS && self.carry {
            PVALIDATE_FAIL_NOUPDATE
        } else {
            self.eax
        }
    }
}

/// ECX for PVALIDATE: 0 = 4 KiB, 1 = 2 MiB.
pub fn pvalidate_size(size: PageSize) -> u32 {
    (size == PageSize::Size2M) as u32
}

/// Validates (or rescinds) a range: 2 MiB pages where aligned; a 2 MiB page the RMP holds as
/// 4 KiB pages (FAIL_SIZEMISMATCH) is done as 512 4 KiB pages.
pub fn pvalidate_range(hw: &mut impl Hardware, range: Range, validate: bool) -> Result<(), TeeError> {
    for (gpa, size) in split(range) {
        let r = hw.pvalidate(gpa, size, validate).code();
        match (r, size) {
            (PVALIDATE_SUCCESS, _) => {}
            (PVALIDATE_FAIL_SIZEMISMATCH, PageSize::Size2M) => {
                for page in (gpa..gpa + size.bytes()).step_by(PAGE_4K as usize) {
                    match hw.pvalidate(page, PageSize::Size4K, validate).code() {
                        PVALIDATE_SUCCESS => {}
                        code => return Err(TeeError::Pvalidate { gpa: page, code }),
                    }
                }
            }
            (code, _) => return Err(TeeError::Pvalidate { gpa, code }),
        }
    }
    Ok(())
}

/// The SNP platform: memory acceptance and sharing through the GHCB (or the MSR protocol before
/// the GHCB is registered).
pub struct SnpPlatform<H: Hardware> {
    pub hw: H,
    pub cbit: u8,
    /// Whether the GHCB page is registered and shared (then PSC goes through it).
    pub ghcb_ready: bool,
}

impl<H: Hardware> SnpPlatform<H> {
    fn change_state(&mut self, range: Range, op: PageState) -> Result<(), TeeError> {
        if self.ghcb_ready {
            for psc in psc_buffers(range, op) {
                run_psc(&mut self.hw, psc)?;
            }
        } else {
            for gpa in (range.start..range.end()).step_by(PAGE_4K as usize) {
                msr_page_state_change(&mut self.hw, gpa, op)?;
            }
        }
        Ok(())
    }
}

impl<H: Hardware> super::Platform for SnpPlatform<H> {
    fn kind(&self) -> Kind {
        Kind::SevSnp
    }
    fn encryption(&self) -> super::Encryption {
        super::Encryption::CBit(self.cbit)
    }
    /// Private: page-state change to private (the RMP assigns the pages to the guest), then
    /// PVALIDATE (the order of Linux `__set_pages_state` and GHCB spec "SNP Page State Change").
    fn accept(&mut self, range: Range) -> Result<(), TeeError> {
        self.change_state(range, PageState::Private)?;
        pvalidate_range(&mut self.hw, range, true)
    }
    /// Shared: rescind validation first, then page-state change to shared; private: the reverse.
    fn set_shared(&mut self, range: Range, shared: bool) -> Result<(), TeeError> {
        if shared {
            pvalidate_range(&mut self.hw, range, false)?;
            self.change_state(range, PageState::Shared)
        } else {
            self.accept(range)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The CPUID page (SNP ABI "SNP_LAUNCH_UPDATE", page type CPUID; layout as
// Linux `struct snp_cpuid_table` and COCONUT-SVSM `SnpCpuidTable`): CPUID values the PSP checked at launch, which the #VC
// handler answers with instead of asking the (untrusted) hypervisor.

pub const CPUID_PAGE_MAX_ENTRIES: usize = 64;
const CPUID_ENTRY_LEN: usize = 0x30;

/// Leaves whose ECX selects a subleaf (the rest ignore ECX).
fn cpuid_has_subleaf(leaf: u32) -> bool {
    matches!(leaf, 0x4 | 0x7 | 0xB | 0xD | 0xF | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1D | 0x1F | 0x24 | 0x8000_001D | 0x8000_0020 | 0x8000_0026)
}

/// Looks up (leaf, subleaf) in the CPUID page: u32 count, 12 reserved bytes, then entries of
/// { u32 eax_in, u32 ecx_in, u64 xcr0_in, u64 xss_in, u32 eax, ebx, ecx, edx, u64 reserved }.
pub fn cpuid_page_lookup(page: &[u8; PAGE], leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
    let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
    let count = (u32_at(0) as usize).min(CPUID_PAGE_MAX_ENTRIES);
    (0..count).map(|i| 0x10 + i * CPUID_ENTRY_LEN).find_map(|e| {
        let matches = u32_at(e) == leaf && (!cpuid_has_subleaf(leaf) || u32_at(e + 4) == subleaf);
        matches.then(|| [u32_at(e + 0x18), u32_at(e + 0x1C), u32_at(e + 0x20), u32_at(e + 0x24)])
    })
}

// ---------------------------------------------------------------------------------------------
// The #VC handler's logic (GHCB spec "Non-Automatic Exits": the guest decodes the instruction,
// fills the GHCB, exits, and completes the instruction from the GHCB)

/// Emulates the instruction that raised `#VC` with `exit_code` (the #VC error code): RDTSC (if
/// the hypervisor intercepts it), CPUID
/// (answered from the CPUID page when there is one: those values were checked by the PSP at
/// launch; leaves missing from it read as zero, as in Linux `snp_cpuid`), IN/OUT, RDMSR/WRMSR,
/// and MMIO (NPF) at `mmio_gpa`, which the caller finds by walking its page tables. `insn` is
/// the instruction at RIP. Returns the instruction length to skip.
pub fn handle_vc(
    hw: &mut impl Hardware,
    cpuid_page: Option<&[u8; PAGE]>,
    exit_code: u64,
    insn: &[u8],
    mmio_gpa: Option<u64>,
    regs: &mut super::insn::Gprs,
) -> Result<usize, TeeError> {
    use super::insn::{decode_io, decode_mmio, decode_simple, write_reg, Reg, Simple};
    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RBX: usize = 3;
    let refuse = || TeeError::Ghcb { exit_code, info1: 0, info2: 0 };
    let low = |v: u64| v & 0xFFFF_FFFF;
    match exit_code {
        exit::CPUID => {
            if decode_simple(insn) != Ok(Simple::Cpuid) {
                return Err(refuse());
            }
            let (leaf, subleaf) = (regs[RAX] as u32, regs[RCX] as u32);
            let out = match cpuid_page {
                Some(page) => cpuid_page_lookup(page, leaf, subleaf).unwrap_or([0; 4]),
                None => {
                    let mut g = Ghcb::cpuid(leaf, subleaf, 1);
                    hw.ghcb_exit(&mut g);
                    g.result()?;
                    g.cpuid_result().ok_or_else(refuse)?
                }
            };
            (regs[RAX], regs[RBX], regs[RCX], regs[RDX]) = (out[0].into(), out[1].into(), out[2].into(), out[3].into());
            Ok(2)
        }
        exit::RDTSC => {
            if decode_simple(insn) != Ok(Simple::Rdtsc) {
                return Err(refuse());
            }
            let mut g = Ghcb::rdtsc();
            hw.ghcb_exit(&mut g);
            g.result()?;
            let (rax, rdx) = (g.get_valid(ghcb::RAX).ok_or_else(refuse)?, g.get_valid(ghcb::RDX).ok_or_else(refuse)?);
            (regs[RAX], regs[RDX]) = (low(rax), low(rdx));
            Ok(2)
        }
        exit::IOIO => {
            let io = decode_io(insn, regs[RDX]).map_err(|_| refuse())?;
            let mut g = Ghcb::io(io.port, io.size, !io.is_in, low(regs[RAX]) as u32);
            hw.ghcb_exit(&mut g);
            g.result()?;
            if io.is_in {
                let v = g.get_valid(ghcb::RAX).ok_or_else(refuse)?;
                write_reg(regs, Reg { num: 0, high_byte: false }, io.size, v);
            }
            Ok(io.len)
        }
        exit::MSR => {
            let write = match decode_simple(insn) {
                Ok(Simple::Rdmsr) => None,
                Ok(Simple::Wrmsr) => Some(low(regs[RAX]) | (low(regs[RDX]) << 32)),
                _ => return Err(refuse()),
            };
            let mut g = Ghcb::msr(regs[RCX] as u32, write);
            hw.ghcb_exit(&mut g);
            g.result()?;
            if write.is_none() {
                let v = g.msr_result().ok_or_else(refuse)?;
                (regs[RAX], regs[RDX]) = (low(v), v >> 32);
            }
            Ok(2)
        }
        exit::NPF => {
            let m = decode_mmio(insn).map_err(|_| refuse())?;
            let gpa = mmio_gpa.ok_or_else(refuse)?;
            let size = m.size as usize;
            let value = m.write_value(regs);
            let data = value.unwrap_or(0).to_le_bytes();
            let mut g = Ghcb::mmio(hw.ghcb_gpa(), gpa, &data[..size], value.is_some());
            hw.ghcb_exit(&mut g);
            g.result()?;
            if value.is_none() {
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&g.0[ghcb::SHARED_BUFFER..ghcb::SHARED_BUFFER + size]);
                m.complete_read(regs, u64::from_le_bytes(v));
            }
            Ok(m.len)
        }
        _ => Err(refuse()),
    }
}

// ---------------------------------------------------------------------------------------------
// The secrets page (SNP ABI table "Secrets Page Format"; Linux `struct snp_secrets_page`)

pub mod secrets {
    pub const VERSION: usize = 0x00;
    pub const VMPCK: [usize; 4] = [0x20, 0x40, 0x60, 0x80];
    pub const VMPCK_LEN: usize = 32;
}

/// A VMPCK, held in private memory and zeroed when dropped.
pub struct Vmpck(Zeroizing<[u8; 32]>);

/// Takes what the agent needs out of the secrets page before anything else runs, and wipes the
/// rest: VMPCK0 is copied into `keep` (the agent's key page, arch/memory.rs: outside every
/// mapping a builder's page tables share), then all four VMPCKs are zeroed in the secrets page.
/// VMPCK1–3 are the keys of less privileged VMPLs the agent never runs at; left in place they
/// would let anything that later reads agent memory talk to the PSP. An all-zero VMPCK0 was
/// never installed: `NoKey` (the page is wiped all the same).
pub fn stash_vmpck0(secrets_page: &mut [u8; PAGE], keep: &mut [u8; 32]) -> Result<(), TeeError> {
    let off = secrets::VMPCK[0];
    keep.copy_from_slice(&secrets_page[off..off + secrets::VMPCK_LEN]);
    for off in secrets::VMPCK {
        zeroize::Zeroize::zeroize(&mut secrets_page[off..off + secrets::VMPCK_LEN]);
    }
    if keep.iter().all(|&b| b == 0) {
        return Err(TeeError::NoKey);
    }
    Ok(())
}

impl Vmpck {
    pub fn from_bytes(key: [u8; 32]) -> Vmpck {
        Vmpck(Zeroizing::new(key))
    }

    /// Takes the key [`stash_vmpck0`] kept: copies it and zeroes the stash, so the key exists
    /// once, in the channel that numbers its messages. All zero: `NoKey`.
    pub fn take_stashed(stash: &mut [u8; 32]) -> Result<Vmpck, TeeError> {
        let key = Zeroizing::new(*stash);
        zeroize::Zeroize::zeroize(stash);
        if key.iter().all(|&b| b == 0) {
            return Err(TeeError::NoKey);
        }
        Ok(Vmpck(key))
    }

    /// Takes VMPCK`id` out of the secrets page: copies it and zeroes the page's copy, so the key
    /// exists once, in the channel that numbers its messages. An all-zero key was never installed
    /// (or was wiped) and is refused.
    pub fn take(secrets_page: &mut [u8; PAGE], id: u8) -> Result<Vmpck, TeeError> {
        let off = *secrets::VMPCK.get(id as usize).ok_or(TeeError::NoKey)?;
        let field = &mut secrets_page[off..off + secrets::VMPCK_LEN];
        let key = Zeroizing::new(<[u8; 32]>::try_from(&*field).unwrap());
        zeroize::Zeroize::zeroize(field);
        if key.iter().all(|&b| b == 0) {
            return Err(TeeError::NoKey);
        }
        Ok(Vmpck(key))
    }
}

// ---------------------------------------------------------------------------------------------
// Guest messages (SNP ABI "SNP_GUEST_REQUEST" and the "Guest Messages" chapter's tables:
// "Message Header Format", "Message Type Encodings"; Linux `struct snp_guest_msg_hdr`)

pub mod msg {
    //! Byte offsets in a guest message page.
    pub const AUTHTAG: usize = 0x00;
    pub const AUTHTAG_LEN: usize = 16;
    pub const SEQNO: usize = 0x20;
    pub const ALGO: usize = 0x30;
    pub const HDR_VERSION: usize = 0x31;
    pub const HDR_SIZE: usize = 0x32;
    pub const MSG_TYPE: usize = 0x34;
    pub const MSG_VERSION: usize = 0x35;
    pub const MSG_SIZE: usize = 0x36;
    pub const MSG_VMPCK: usize = 0x3C;
    pub const HEADER_LEN: usize = 0x60;
    /// The AAD is the header from ALGO to its end.
    pub const AAD: core::ops::Range<usize> = 0x30..0x60;
    pub const ALGO_AES_256_GCM: u8 = 1;
    pub const HEADER_VERSION: u8 = 1;
    pub const MAX_PAYLOAD: usize = super::PAGE - HEADER_LEN;
}

/// Message types (SNP ABI "Message Type Encodings"): a response is its request's type + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    CpuidReq = 1,
    KeyReq = 3,
    ReportReq = 5,
}

/// SW_EXITINFO2 of a guest request: [63:32] hypervisor error, [31:0] firmware status
/// (GHCB spec "SNP Guest Request"; Linux `SNP_GUEST_VMM_ERR_*`).
pub const VMM_ERR_INVALID_LEN: u32 = 1;
pub const VMM_ERR_BUSY: u32 = 2;
/// A BUSY hypervisor (the PSP is serving another guest) is asked again after
/// [`BUSY_RETRY_DELAY_MS`], for at most [`BUSY_RETRY_MAX_MS`] in all, then the channel gives up
/// (and wipes its key). Linux does the same (`__handle_guest_request`, arch/x86/coco/sev/core.c:
/// `SNP_REQ_RETRY_DELAY` 2 s, `SNP_REQ_MAX_RETRY_DURATION` 60 s): asking again at once, as the
/// agent did, burns the retries in microseconds against a PSP that is busy for milliseconds.
pub const BUSY_RETRY_DELAY_MS: u64 = 2_000;
pub const BUSY_RETRY_MAX_MS: u64 = 60_000;

/// What the hypervisor did with a guest request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOutcome {
    pub exit_info_2: u64,
    /// Extended request refused with INVALID_LEN: RBX, the certificate pages needed.
    pub cert_pages_needed: u64,
}

/// How guest messages reach the PSP: the arch layer copies `request` into the shared request
/// page, runs the GHCB exit ([`Ghcb::guest_request`]), and copies the shared response page into
/// `response` (the guest parses only its private copy). With `certs` (a multiple of 4 KiB), it
/// uses the extended request and copies the shared certificate buffer back into `certs`.
pub trait GuestRequest {
    fn guest_request(&mut self, request: &[u8; PAGE], response: &mut [u8; PAGE], certs: Option<&mut [u8]>) -> RequestOutcome;
    /// Waits about `ms` milliseconds (between BUSY retries).
    fn wait_ms(&mut self, ms: u64);
}

/// The nonce of a message: the 64-bit sequence number, little-endian, padded to 96 bits.
pub fn nonce(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Writes a message header (everything but the tag) for a payload of `len` bytes.
pub fn write_header(page: &mut [u8; PAGE], seqno: u64, msg_type: u8, msg_version: u8, len: u16, vmpck: u8) {
    page[..msg::HEADER_LEN].fill(0);
    page[msg::SEQNO..msg::SEQNO + 8].copy_from_slice(&seqno.to_le_bytes());
    page[msg::ALGO] = msg::ALGO_AES_256_GCM;
    page[msg::HDR_VERSION] = msg::HEADER_VERSION;
    page[msg::HDR_SIZE..msg::HDR_SIZE + 2].copy_from_slice(&(msg::HEADER_LEN as u16).to_le_bytes());
    page[msg::MSG_TYPE] = msg_type;
    page[msg::MSG_VERSION] = msg_version;
    page[msg::MSG_SIZE..msg::MSG_SIZE + 2].copy_from_slice(&len.to_le_bytes());
    page[msg::MSG_VMPCK] = vmpck;
}

/// Encrypts `page`'s payload in place and writes the tag: AES-256-GCM (`crate::aes`: the block
/// cipher chosen at boot), IV = [`nonce`], AAD = header bytes 0x30..0x60. The header must be
/// written first.
pub fn seal(key: &[u8; 32], page: &mut [u8; PAGE]) -> Result<(), TeeError> {
    let len = u16::from_le_bytes([page[msg::MSG_SIZE], page[msg::MSG_SIZE + 1]]) as usize;
    if len > msg::MAX_PAYLOAD {
        return Err(TeeError::BadResponse("payload larger than a page"));
    }
    let seqno = u64::from_le_bytes(page[msg::SEQNO..msg::SEQNO + 8].try_into().unwrap());
    let cipher = Aes256Gcm::new(key.into());
    let (head, body) = page.split_at_mut(msg::HEADER_LEN);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(seqno)), &head[msg::AAD], &mut body[..len])
        .map_err(|_| TeeError::BadResponse("encryption failed"))?;
    head[msg::AUTHTAG..msg::AUTHTAG + msg::AUTHTAG_LEN].copy_from_slice(&tag);
    head[msg::AUTHTAG + msg::AUTHTAG_LEN..msg::SEQNO].fill(0);
    Ok(())
}

/// Authenticates and decrypts a sealed page; returns its payload.
pub fn open(key: &[u8; 32], page: &[u8; PAGE]) -> Result<Vec<u8>, TeeError> {
    let len = u16::from_le_bytes([page[msg::MSG_SIZE], page[msg::MSG_SIZE + 1]]) as usize;
    if len > msg::MAX_PAYLOAD {
        return Err(TeeError::BadResponse("message size"));
    }
    let seqno = u64::from_le_bytes(page[msg::SEQNO..msg::SEQNO + 8].try_into().unwrap());
    let mut body = page[msg::HEADER_LEN..msg::HEADER_LEN + len].to_vec();
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce(seqno)),
            &page[msg::AAD],
            &mut body,
            Tag::from_slice(&page[msg::AUTHTAG..msg::AUTHTAG + msg::AUTHTAG_LEN]),
        )
        .map_err(|_| TeeError::BadResponse("authentication tag"))?;
    Ok(body)
}

/// The guest side of the PSP channel for one VMPCK: numbers messages, seals requests, checks and
/// opens responses. Sequence numbers strictly increase and are never reused with different
/// plaintext: any failure after a request was handed to the hypervisor wipes the key (the
/// request may or may not have reached the firmware, so its sequence number is burnt and the
/// next one cannot be known), as Linux `snp_disable_vmpck` does.
pub struct GuestChannel {
    key: Option<Vmpck>,
    vmpck_id: u8,
    /// The sequence number of the last response (0 before the first request: the first request
    /// is 1, its response 2, the next request 3).
    last: u64,
}

impl GuestChannel {
    pub fn new(key: Vmpck, vmpck_id: u8) -> GuestChannel {
        GuestChannel { key: Some(key), vmpck_id, last: 0 }
    }

    pub fn is_wiped(&self) -> bool {
        self.key.is_none()
    }

    /// The sequence number the next request will carry.
    pub fn next_seqno(&self) -> u64 {
        self.last + 1
    }

    /// Zeroes the key; every later request fails with `KeyWiped`.
    pub fn wipe(&mut self) {
        self.key = None;
    }

    fn fail<T>(&mut self, e: TeeError) -> Result<T, TeeError> {
        self.wipe();
        Err(e)
    }

    /// Sends one request and returns the response's plaintext payload. `certs`: the extended
    /// request's certificate buffer; it is left untouched (and the plain request used) when the
    /// host says the buffer is too small.
    pub fn request(
        &mut self,
        transport: &mut impl GuestRequest,
        msg_type: MsgType,
        msg_version: u8,
        payload: &[u8],
        mut certs: Option<&mut [u8]>,
    ) -> Result<Vec<u8>, TeeError> {
        let Some(key) = &self.key else { return Err(TeeError::KeyWiped) };
        if payload.len() > msg::MAX_PAYLOAD {
            return Err(TeeError::RequestTooLarge(payload.len()));
        }
        // The response carries seqno + 1: both must fit.
        let Some(seqno) = self.last.checked_add(1).filter(|s| *s < u64::MAX) else {
            return self.fail(TeeError::SequenceExhausted);
        };
        let mut request = [0u8; PAGE];
        write_header(&mut request, seqno, msg_type as u8, msg_version, payload.len() as u16, self.vmpck_id);
        request[msg::HEADER_LEN..msg::HEADER_LEN + payload.len()].copy_from_slice(payload);
        let sealed = seal(&key.0, &mut request);
        if let Err(e) = sealed {
            return self.fail(e);
        }
        let mut response = [0u8; PAGE];
        let mut waited_ms = 0;
        loop {
            // The same sealed bytes each time: a retry repeats the message, it never reuses the
            // sequence number for another plaintext.
            let outcome = transport.guest_request(&request, &mut response, certs.as_deref_mut());
            let (vmm, firmware) = ((outcome.exit_info_2 >> 32) as u32, outcome.exit_info_2 as u32);
            match (vmm, firmware) {
                (0, 0) => break,
                (VMM_ERR_BUSY, 0) if waited_ms < BUSY_RETRY_MAX_MS => {
                    transport.wait_ms(BUSY_RETRY_DELAY_MS);
                    waited_ms += BUSY_RETRY_DELAY_MS;
                }
                // The certificate buffer is too small: the firmware did not see the request;
                // send the same message as a plain request so its sequence number is consumed.
                (VMM_ERR_INVALID_LEN, 0) if certs.is_some() => certs = None,
                _ => return self.fail(TeeError::GuestRequest { vmm, firmware }),
            }
        }
        match self.check_response(&response, seqno, msg_type as u8, msg_version) {
            Ok(plain) => {
                self.last = seqno + 1;
                Ok(plain)
            }
            Err(e) => self.fail(e),
        }
    }

    fn check_response(&self, r: &[u8; PAGE], seqno: u64, msg_type: u8, msg_version: u8) -> Result<Vec<u8>, TeeError> {
        let key = &self.key.as_ref().ok_or(TeeError::KeyWiped)?.0;
        let got_seqno = u64::from_le_bytes(r[msg::SEQNO..msg::SEQNO + 8].try_into().unwrap());
        if got_seqno != seqno + 1 {
            return Err(TeeError::BadResponse("sequence number is not the request's + 1"));
        }
        if r[msg::ALGO] != msg::ALGO_AES_256_GCM {
            return Err(TeeError::BadResponse("algorithm"));
        }
        if r[msg::HDR_VERSION] != msg::HEADER_VERSION || u16::from_le_bytes([r[msg::HDR_SIZE], r[msg::HDR_SIZE + 1]]) as usize != msg::HEADER_LEN {
            return Err(TeeError::BadResponse("header version or size"));
        }
        if r[msg::MSG_TYPE] != msg_type + 1 || r[msg::MSG_VERSION] != msg_version {
            return Err(TeeError::BadResponse("message type or version"));
        }
        if r[msg::MSG_VMPCK] != self.vmpck_id {
            return Err(TeeError::BadResponse("VMPCK id"));
        }
        open(key, r)
    }
}

// ---------------------------------------------------------------------------------------------
// MSG_REPORT_REQ / MSG_REPORT_RSP (SNP ABI "MSG_REPORT_REQ Message Structure", "MSG_REPORT_RSP
// Message Structure") and ATTESTATION_REPORT ("ATTESTATION_REPORT Structure")

pub const REPORT_REQ_LEN: usize = 0x60;
pub const REPORT_RSP_HEADER: usize = 0x20;
pub const REPORT_LEN: usize = 0x4A0;
pub mod report {
    //! Byte offsets in ATTESTATION_REPORT.
    pub const VERSION: usize = 0x00;
    pub const POLICY: usize = 0x08;
    pub const VMPL: usize = 0x30;
    pub const SIGNATURE_ALGO: usize = 0x34;
    pub const REPORT_DATA: usize = 0x50;
    pub const MEASUREMENT: usize = 0x90;
    pub const SIGNATURE: usize = 0x2A0;
}

/// MSG_REPORT_REQ: REPORT_DATA (0x00, 64 bytes), VMPL (0x40, u32), KEY_SEL (0x44, bits 1:0;
/// 0 = VLEK if installed, else VCEK), reserved to 0x60.
pub fn report_request(report_data: &[u8; 64], vmpl: u32) -> [u8; REPORT_REQ_LEN] {
    let mut r = [0u8; REPORT_REQ_LEN];
    r[..64].copy_from_slice(report_data);
    r[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
    r
}

/// MSG_REPORT_RSP: STATUS (0x00, u32; 0 success), REPORT_SIZE (0x04, u32), reserved to 0x20,
/// then the report. Checks that the report is for this REPORT_DATA and VMPL.
///
/// REPORT_SIZE must be 0x4A0 (the ATTESTATION_REPORT this code parses); the message may be
/// longer than 0x20 + REPORT_SIZE (firmware is free to pad the payload; Linux's
/// `get_report` reads REPORT_SIZE and copies only that much out of its 4000-byte buffer), and
/// what follows the report is ignored.
pub fn parse_report_response(rsp: &[u8], report_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, TeeError> {
    if rsp.len() < REPORT_RSP_HEADER {
        return Err(TeeError::BadResponse("MSG_REPORT_RSP shorter than its header"));
    }
    let status = u32::from_le_bytes(rsp[0..4].try_into().unwrap());
    if status != 0 {
        return Err(TeeError::FirmwareStatus(status));
    }
    let size = u32::from_le_bytes(rsp[4..8].try_into().unwrap()) as usize;
    if size != REPORT_LEN || rsp.len() < REPORT_RSP_HEADER + REPORT_LEN {
        return Err(TeeError::BadResponse("MSG_REPORT_RSP size"));
    }
    let report = &rsp[REPORT_RSP_HEADER..REPORT_RSP_HEADER + REPORT_LEN];
    if report[report::REPORT_DATA..report::REPORT_DATA + 64] != report_data[..] {
        return Err(TeeError::ReportMismatch("REPORT_DATA"));
    }
    if report[report::VMPL..report::VMPL + 4] != vmpl.to_le_bytes() {
        return Err(TeeError::ReportMismatch("VMPL"));
    }
    Ok(report.to_vec())
}

/// The extended request's certificate table (GHCB spec "SNP Extended Guest Request"): entries { GUID (16), offset
/// (u32, from the table's start), length (u32) }, ended by an all-zero entry.
pub fn parse_cert_table(buf: &[u8]) -> Result<Vec<super::Certificate>, TeeError> {
    let mut out = Vec::new();
    for entry in buf.chunks_exact(24) {
        if entry.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let guid: [u8; 16] = entry[..16].try_into().unwrap();
        let off = u32::from_le_bytes(entry[16..20].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().unwrap()) as usize;
        let cert = off.checked_add(len).and_then(|end| buf.get(off..end)).ok_or(TeeError::BadResponse("certificate table entry"))?;
        out.push((guid, cert.to_vec()));
    }
    Err(TeeError::BadResponse("certificate table has no terminating entry"))
}

/// A certificate-table GUID as text. The table holds each GUID's 16 bytes in RFC 4122 order (the
/// text's hex digits in sequence, no field byte-swapped): AMD's sev-guest tools fill it with
/// libuuid's `uuid_parse`, virtee's `sev` crate (used by `snphost`) with `uuid::Uuid::as_bytes`,
/// go-sev-guest reads it with `uuid.FromBytes`. (Not the EFI / Linux `guid_t` layout, whose first
/// three fields are little-endian.) Compare with [`cert_guid`].
pub fn guid_string(g: &[u8; 16]) -> alloc::string::String {
    let h = |r: core::ops::Range<usize>| g[r].iter().map(|b| alloc::format!("{b:02x}")).collect::<alloc::string::String>();
    alloc::format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
}

/// Certificate GUIDs (GHCB spec "SNP Extended Guest Request", table of GUIDs), as text; the
/// table holds them in RFC 4122 byte order (see [`guid_string`]).
pub mod cert_guid {
    pub const VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
    pub const VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
    pub const ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
    pub const ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
}

/// SEV-SNP attester: MSG_REPORT_REQ at VMPL 0 over the guest channel.
pub struct SnpAttester<T: GuestRequest> {
    pub transport: T,
    pub channel: GuestChannel,
    /// Pages for the extended request's certificates (0: plain request).
    pub cert_pages: usize,
}

impl<T: GuestRequest> super::Attester for SnpAttester<T> {
    fn kind(&self) -> Kind {
        Kind::SevSnp
    }
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let req = report_request(report_data, 0);
        let mut certs = vec![0u8; self.cert_pages * PAGE];
        let buf = (self.cert_pages > 0).then_some(&mut certs[..]);
        let rsp = self.channel.request(&mut self.transport, MsgType::ReportReq, 1, &req, buf)?;
        // The response authenticated, so a mismatch here is the PSP's answer, not a forgery: the
        // sequence numbers stayed in step and the key stays usable.
        let report = parse_report_response(&rsp, report_data, 0)?;
        let certificates = if certs.iter().any(|&b| b != 0) { parse_cert_table(&certs)? } else { Vec::new() };
        Ok(Evidence { kind: Kind::SevSnp, report, certificates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_protocol_encodings() {
        // GHCB spec "GHCB MSR Protocol", GHCBInfo values: 0x002 SEV info request, 0x001 its response with
        // [63:48] max, [47:32] min protocol version, [31:24] C-bit.
        assert_eq!(msr_sev_info_request(), 0x002);
        assert_eq!(parse_sev_info(0x0002_0001_3300_0001), Some(SevInfo { max_version: 2, min_version: 1, cbit: 0x33 }));
        assert_eq!(parse_sev_info(0x0002_0001_3300_0005), None);
        // 0x004 CPUID request: [63:32] function, [31:30] register.
        assert_eq!(msr_cpuid_request(0x8000_001F, 1), 0x8000_001F_4000_0004);
        // 0x012 register GHCB GPA: [63:12] GFN.
        assert_eq!(msr_register_ghcb_request(0x1234_5000), 0x1234_5012);
        // 0x014 page-state change: [55:52] operation (1 private, 2 shared), [51:12] GFN
        // (Linux GHCB_MSR_PSC_REQ_GFN).
        assert_eq!(msr_psc_request(0x000F_FFFF_FFFF_F000, PageState::Shared), 0x002F_FFFF_FFFF_F014);
        assert_eq!(msr_psc_request(0x20_0000, PageState::Private), 0x0010_0000_0020_0014);
        // 0x100 termination: [15:12] reason set, [23:16] reason (set 0 reason 2: SNP unsupported).
        assert_eq!(msr_terminate_request(term::SET_GENERAL, term::SNP_UNSUPPORTED), 0x0002_0100);
        assert_eq!(msr_terminate_request(term::SET_AGENT, term::PVALIDATE), 0x0001_1100);
        // CPUID 0x8000_001F EBX[5:0]: Milan's 0x33 (51).
        assert_eq!(cbit_from_cpuid(0x0000_0173), 51);
        assert_eq!(MSR_GHCB, 0xC001_0130);
        assert_eq!(MSR_SEV_STATUS, 0xC001_0131);
    }

    struct Msr(Vec<u64>, Vec<u64>);
    impl Hardware for Msr {
        fn msr_exit(&mut self, v: u64) -> u64 {
            self.0.push(v);
            self.1.remove(0)
        }
        fn ghcb_gpa(&self) -> u64 {
            0
        }
        fn ghcb_exit(&mut self, _: &mut Ghcb) {
            unreachable!()
        }
        fn pvalidate(&mut self, _: u64, _: PageSize, _: bool) -> Pvalidate {
            unreachable!()
        }
        fn rmpadjust(&mut self, _: u64, _: u64) -> u32 {
            unreachable!()
        }
    }

    #[test]
    fn msr_protocol_checks_responses() {
        let mut hw = Msr(vec![], vec![0x0002_0002_3300_0001]);
        assert_eq!(negotiate(&mut hw, 0x33).unwrap().cbit, 0x33);
        // A hypervisor that only speaks version 1, or reports another C-bit, is refused.
        assert!(negotiate(&mut Msr(vec![], vec![0x0001_0001_3300_0001]), 0x33).is_err());
        assert!(negotiate(&mut Msr(vec![], vec![0x0002_0002_3200_0001]), 0x33).is_err());
        let mut hw = Msr(vec![], vec![0x0000_0000_7000_0013, 0x0000_0000_7100_0013]);
        assert!(register_ghcb(&mut hw, 0x7000_0000).is_ok());
        assert!(register_ghcb(&mut hw, 0x7000_0000).is_err(), "answered with another GFN");
        let mut hw = Msr(vec![], vec![0x015, 0x0000_0001_0000_0015, 0x013]);
        assert!(msr_page_state_change(&mut hw, 0x3000, PageState::Private).is_ok());
        assert_eq!(msr_page_state_change(&mut hw, 0x3000, PageState::Private), Err(TeeError::PageStateChange { gpa: 0x3000, error: 1 }));
        assert!(msr_page_state_change(&mut hw, 0x3000, PageState::Private).is_err(), "wrong response code");
    }

    /// RMPADJUST as APM vol. 3 "RMPADJUST" defines it for the check: the instruction may only
    /// adjust a VMPL numerically greater than the caller's (FAIL_PERMISSION otherwise).
    struct Vmpl(u8, Vec<(u64, u64)>);
    impl Hardware for Vmpl {
        fn msr_exit(&mut self, _: u64) -> u64 {
            unreachable!()
        }
        fn ghcb_gpa(&self) -> u64 {
            0
        }
        fn ghcb_exit(&mut self, _: &mut Ghcb) {
            unreachable!()
        }
        fn pvalidate(&mut self, _: u64, _: PageSize, _: bool) -> Pvalidate {
            unreachable!()
        }
        fn rmpadjust(&mut self, gpa: u64, attrs: u64) -> u32 {
            self.1.push((gpa, attrs));
            let target = (attrs & 0xFF) as u8;
            if target <= self.0 { RMPADJUST_FAIL_PERMISSION } else { RMPADJUST_SUCCESS }
        }
    }

    #[test]
    fn the_agent_runs_only_at_vmpl0() {
        let mut vmpl0 = Vmpl(0, vec![]);
        assert_eq!(check_vmpl0(&mut vmpl0, 0x10_0000), Ok(()));
        // Linux enforce_vmpl0: target VMPL 1, no permissions, not a VMSA (RDX = 1).
        assert_eq!(vmpl0.1, vec![(0x10_0000, 1)]);
        for below in 1..4 {
            assert_eq!(check_vmpl0(&mut Vmpl(below, vec![]), 0x10_0000), Err(TeeError::NotVmpl0 { code: RMPADJUST_FAIL_PERMISSION }));
        }
    }

    #[test]
    fn sev_status_features_are_an_allow_list() {
        // SEV | SEV-ES | SNP: what QEMU's sev-snp-guest launches by default.
        assert_eq!(check_sev_status(0b111), Ok(()));
        // Protections that ask nothing of the guest (Linux: not in SNP_FEATURES_IMPL_REQ).
        for ok in [status_bit::DEBUG_SWAP, status_bit::PREVENT_HOST_IBS, status_bit::BTB_ISOLATION, status_bit::SMT_PROTECTION, status_bit::IBPB_ON_ENTRY] {
            assert_eq!(check_sev_status(0b111 | ok), Ok(()), "{ok:#x}");
        }
        // Features the guest must implement (Linux SNP_FEATURES_IMPL_REQ, msr-index.h bit
        // numbers) and bits not defined yet: refused, naming them.
        for bad in [
            status_bit::VTOM,
            status_bit::REFLECT_VC,
            status_bit::RESTRICTED_INJECTION,
            status_bit::ALTERNATE_INJECTION,
            status_bit::VMPL_SSS,
            status_bit::SECURE_TSC,
            status_bit::VMGEXIT_PARAMETER,
            1 << 13,
            1 << 15,
            status_bit::VMSA_REG_PROT,
            status_bit::SECURE_AVIC,
            1 << 19,
            1 << 63,
        ] {
            assert_eq!(check_sev_status(0b111 | bad), Err(TeeError::SevFeatures { status: 0b111 | bad, unsupported: bad }), "{bad:#x}");
        }
        // No SNP: refused (rom32.s already terminates SEV and SEV-ES guests).
        assert!(check_sev_status(0b011).is_err());
    }

    #[test]
    fn the_hypervisor_must_claim_snp_support() {
        // GHCB spec "Hypervisor Feature Support": request 0x080, response 0x081 with the
        // feature bitmap in [63:12]; bit 0 SEV-SNP, bit 1 AP creation.
        let mut hw = Msr(vec![], vec![(0b11 << 12) | 0x081]);
        assert_eq!(hv_features(&mut hw), Ok(0b11));
        assert_eq!(hw.0, vec![0x080]);
        assert!(hv_features(&mut Msr(vec![], vec![(0b10 << 12) | 0x081])).is_err(), "no SNP bit");
        assert!(hv_features(&mut Msr(vec![], vec![(0b11 << 12) | 0x005])).is_err(), "wrong response code");
    }

    #[test]
    fn ghcb_layout_and_valid_bitmap() {
        // GHCB spec "GHCB Layout" table (and Linux struct ghcb_save_area / struct ghcb offsets).
        assert_eq!((ghcb::RAX, ghcb::RCX, ghcb::RDX, ghcb::RBX), (0x1F8, 0x308, 0x310, 0x318));
        assert_eq!((ghcb::SW_EXIT_CODE, ghcb::SW_EXIT_INFO_1, ghcb::SW_EXIT_INFO_2, ghcb::SW_SCRATCH), (0x390, 0x398, 0x3A0, 0x3A8));
        assert_eq!((ghcb::XCR0, ghcb::VALID_BITMAP, ghcb::SHARED_BUFFER), (0x3E8, 0x3F0, 0x800));
        assert_eq!((ghcb::PROTOCOL_VERSION, ghcb::GHCB_USAGE), (0xFFA, 0xFFC));
        // The shared buffer holds exactly the PSC header and 253 entries.
        assert_eq!(8 + 8 * PSC_MAX_ENTRIES, ghcb::SHARED_BUFFER_LEN);
        let g = Ghcb::cpuid(0x8000_001F, 0, 0);
        // Valid bit = offset / 8: RAX 0x1F8 -> bit 63, RCX 0x308 -> bit 97, SW_EXIT_CODE 0x390 ->
        // bit 114, SW_EXITINFO1 -> 115, SW_EXITINFO2 -> 116.
        assert_eq!(g.0[ghcb::VALID_BITMAP + 7], 0x80);
        assert_eq!(g.0[ghcb::VALID_BITMAP + 12], 0x02);
        assert_eq!(g.0[ghcb::VALID_BITMAP + 14], 0x1C);
        assert_eq!(g.get(ghcb::SW_EXIT_CODE), 0x72);
        assert!(!g.is_valid(ghcb::XCR0), "XCR0 only for leaf 0xD");
        assert!(Ghcb::cpuid(0xD, 1, 7).is_valid(ghcb::XCR0));
        assert_eq!(u16::from_le_bytes([g.0[0xFFA], g.0[0xFFB]]), 2);
        assert_eq!(g.cpuid_result(), None, "the hypervisor did not mark RBX/RDX valid");
        let mut answered = g.clone();
        answered.set(ghcb::RBX, 0x173);
        answered.set(ghcb::RDX, 0);
        assert_eq!(answered.cpuid_result(), Some([0x8000_001F, 0x173, 0, 0]));
    }

    #[test]
    fn nae_event_encodings() {
        // IOIO EXITINFO1 (APM vol. 2 "IOIO Intercept"; Linux IOIO_* constants): OUT DX, AL to
        // 0x3F8: port << 16 | A64 (bit 9) | SZ8 (bit 4).
        assert_eq!(ioio_exit_info(0x3F8, 1, false), 0x03F8_0210);
        // IN EAX, DX from 0xCFC: port << 16 | A64 | SZ32 (bit 6) | TYPE (bit 0).
        assert_eq!(ioio_exit_info(0xCFC, 4, true), 0x0CFC_0241);
        assert_eq!(ioio_exit_info(0x71, 2, true), 0x0071_0221);
        let g = Ghcb::io(0x3F8, 1, true, 0x41);
        assert_eq!((g.get(ghcb::SW_EXIT_CODE), g.get(ghcb::SW_EXIT_INFO_1), g.get(ghcb::RAX)), (0x7B, 0x03F8_0210, 0x41));
        // MSR: EXITINFO1 0 = RDMSR, 1 = WRMSR (GHCB spec NAE table, "MSR Access"; APM vol. 2 "MSR Intercepts").
        let w = Ghcb::msr(0x2FF, Some(0x1234_5678_0000_0C06));
        assert_eq!((w.get(ghcb::SW_EXIT_CODE), w.get(ghcb::SW_EXIT_INFO_1)), (0x7C, 1));
        assert_eq!((w.get(ghcb::RCX), w.get(ghcb::RAX), w.get(ghcb::RDX)), (0x2FF, 0xC06, 0x1234_5678));
        assert_eq!(Ghcb::msr(0x10, None).get(ghcb::SW_EXIT_INFO_1), 0);
        // MMIO: exit codes 0x8000_0001/2, EXITINFO1 GPA, EXITINFO2 length, scratch in the GHCB.
        let m = Ghcb::mmio(0x7000_0000, 0xC000_1000, &[1, 2, 3, 4], true);
        assert_eq!(m.get(ghcb::SW_EXIT_CODE), 0x8000_0002);
        assert_eq!((m.get(ghcb::SW_EXIT_INFO_1), m.get(ghcb::SW_EXIT_INFO_2), m.get(ghcb::SW_SCRATCH)), (0xC000_1000, 4, 0x7000_0800));
        assert_eq!(&m.0[0x800..0x804], &[1, 2, 3, 4]);
        // Guest request 0x8000_0011 / extended 0x8000_0012 with RAX = certs GPA, RBX = pages.
        let r = Ghcb::guest_request(0x1000, 0x2000, None);
        assert_eq!((r.get(ghcb::SW_EXIT_CODE), r.get(ghcb::SW_EXIT_INFO_1), r.get(ghcb::SW_EXIT_INFO_2)), (0x8000_0011, 0x1000, 0x2000));
        let e = Ghcb::guest_request(0x1000, 0x2000, Some((0x8000, 4)));
        assert_eq!((e.get(ghcb::SW_EXIT_CODE), e.get(ghcb::RAX), e.get(ghcb::RBX)), (0x8000_0012, 0x8000, 4));
        // Exit results: SW_EXITINFO1[31:0] = 0 success, 1 = exception in SW_EXITINFO2.
        let mut answered = Ghcb::msr(0x10, None);
        assert!(answered.result().is_ok());
        answered.set(ghcb::SW_EXIT_INFO_1, 1);
        answered.set(ghcb::SW_EXIT_INFO_2, 0x8000_0B0D);
        assert!(answered.result().is_err());
    }

    #[test]
    fn psc_entries_and_buffers() {
        // GHCB spec "SNP Page State Change", table "Page State Change Structure": [11:0] cur_page, [51:12] GFN, [55:52] operation, [56] size.
        assert_eq!(psc_entry(0x20_0000, PageState::Shared, PageSize::Size2M), 0x0120_0000_0020_0000);
        assert_eq!(psc_entry(0x1000, PageState::Private, PageSize::Size4K), 0x0010_0000_0000_1000);
        // 600 4 KiB pages not 2 MiB aligned -> 253 + 253 + 94 entries.
        let bufs = psc_buffers(Range::new(0x1000, 600 * 0x1000).unwrap(), PageState::Private);
        assert_eq!(bufs.iter().map(|b| b.entries.len()).collect::<Vec<_>>(), [253, 253, 94]);
        assert_eq!((bufs[2].cur_entry, bufs[2].end_entry), (0, 93));
        let mut raw = [0u8; 0x7F0];
        bufs[0].write(&mut raw);
        assert_eq!(&raw[0..8], &[0, 0, 252, 0, 0, 0, 0, 0]);
        assert_eq!(PscBuffer::read(&raw, 253), bufs[0]);
    }

    /// A hypervisor model for page-state changes through the GHCB: handles `per_call` entries
    /// per exit; records PVALIDATEs; `size_mismatch` makes 2 MiB PVALIDATEs fail as 4 KiB RMP.
    struct PscHv {
        per_call: usize,
        exits: usize,
        states: Vec<(u64, u64, bool)>,
        validated: Vec<(u64, PageSize, bool)>,
        size_mismatch: bool,
        stall: bool,
        /// Rewrites an entry's GFN (a hostile hypervisor).
        rewrite: bool,
        /// Handles a 2 MiB entry in two halves, recording progress in cur_page.
        halves: bool,
    }
    impl Hardware for PscHv {
        fn msr_exit(&mut self, _: u64) -> u64 {
            unreachable!()
        }
        fn ghcb_gpa(&self) -> u64 {
            0x7000_0000
        }
        fn ghcb_exit(&mut self, g: &mut Ghcb) {
            self.exits += 1;
            assert_eq!(g.get(ghcb::SW_EXIT_CODE), exit::PAGE_STATE_CHANGE);
            assert_eq!(g.get(ghcb::SW_SCRATCH), 0x7000_0800);
            let buf = &mut g.0[ghcb::SHARED_BUFFER..];
            let cur = u16::from_le_bytes([buf[0], buf[1]]) as usize;
            let end = u16::from_le_bytes([buf[2], buf[3]]) as usize;
            if self.stall {
                return;
            }
            if self.rewrite {
                buf[8] ^= 0x10; // the first entry's GFN
                return;
            }
            if self.halves {
                let e = u64::from_le_bytes(buf[8 + 8 * cur..16 + 8 * cur].try_into().unwrap());
                if e >> 56 & 1 == 1 && e & 0xFFF == 0 {
                    buf[8 + 8 * cur..16 + 8 * cur].copy_from_slice(&(e | 256).to_le_bytes());
                    return;
                }
            }
            let last = (cur + self.per_call).min(end + 1);
            for i in cur..last {
                let e = u64::from_le_bytes(buf[8 + 8 * i..16 + 8 * i].try_into().unwrap());
                self.states.push((e & 0x000F_FFFF_FFFF_F000, (e >> 52) & 0xF, e >> 56 & 1 == 1));
            }
            buf[0..2].copy_from_slice(&(last as u16).to_le_bytes());
        }
        fn rmpadjust(&mut self, _: u64, _: u64) -> u32 {
            unreachable!()
        }
        fn pvalidate(&mut self, gpa: u64, size: PageSize, validate: bool) -> Pvalidate {
            self.validated.push((gpa, size, validate));
            let eax = if self.size_mismatch && size == PageSize::Size2M { PVALIDATE_FAIL_SIZEMISMATCH } else { 0 };
            Pvalidate { eax, carry: false }
        }
    }

    fn hv() -> PscHv {
        PscHv { per_call: 1000, exits: 0, states: vec![], validated: vec![], size_mismatch: false, stall: false, rewrite: false, halves: false }
    }

    #[test]
    fn accept_is_psc_then_pvalidate_and_sharing_the_reverse() {
        use crate::tee::Platform;
        let mut p = SnpPlatform { hw: PscHv { per_call: 100, ..hv() }, cbit: 51, ghcb_ready: true };
        // 1 MiB + 2 MiB: 256 4 KiB entries then one 2 MiB entry; the hypervisor does 100 per exit.
        p.accept(Range::new(0x10_0000, 0x30_0000).unwrap()).unwrap();
        assert_eq!(p.hw.states.len(), 257);
        assert_eq!(p.hw.exits, 3 + 1, "253 entries in three exits, then 4 in one");
        assert_eq!(p.hw.states[256], (0x20_0000, 1, true));
        assert!(p.hw.validated.iter().all(|v| v.2));
        assert_eq!(p.hw.validated.last(), Some(&(0x20_0000, PageSize::Size2M, true)));
        let mut p = SnpPlatform { hw: hv(), cbit: 51, ghcb_ready: true };
        p.set_shared(Range::new(0x40_0000, 0x2000).unwrap(), true).unwrap();
        assert_eq!(p.hw.validated, vec![(0x40_0000, PageSize::Size4K, false), (0x40_1000, PageSize::Size4K, false)]);
        assert_eq!(p.hw.states, vec![(0x40_0000, 2, false), (0x40_1000, 2, false)]);
        // A hypervisor that makes no progress is an error, not a loop.
        let mut p = SnpPlatform { hw: PscHv { stall: true, ..hv() }, cbit: 51, ghcb_ready: true };
        assert!(p.accept(Range::new(0, 0x1000).unwrap()).is_err());
        // Nor may it change which pages the entries name.
        let mut p = SnpPlatform { hw: PscHv { rewrite: true, ..hv() }, cbit: 51, ghcb_ready: true };
        assert!(p.accept(Range::new(0, 0x1000).unwrap()).is_err());
        // Progress inside a 2 MiB entry (cur_page) counts, and the buffer goes back as it was left.
        let mut p = SnpPlatform { hw: PscHv { halves: true, ..hv() }, cbit: 51, ghcb_ready: true };
        p.accept(Range::new(0x20_0000, 0x20_0000).unwrap()).unwrap();
        assert_eq!(p.hw.exits, 2);
        assert_eq!(p.hw.states, vec![(0x20_0000, 1, true)]);
    }

    #[test]
    fn pvalidate_falls_back_to_4k_on_size_mismatch() {
        // APM vol. 3 PVALIDATE: FAIL_SIZEMISMATCH (6) when the RMP holds the page as 4 KiB.
        let mut h = PscHv { size_mismatch: true, ..hv() };
        pvalidate_range(&mut h, Range::new(0x20_0000, 0x20_0000).unwrap(), true).unwrap();
        assert_eq!(h.validated.len(), 1 + 512);
        assert_eq!(h.validated[1], (0x20_0000, PageSize::Size4K, true));
        assert_eq!(h.validated[512], (0x3F_F000, PageSize::Size4K, true));
        // rFLAGS.CF = 1 (nothing changed) is a failure.
        assert_eq!(Pvalidate { eax: 0, carry: true }.code(), PVALIDATE_FAIL_NOUPDATE);
        assert_eq!(pvalidate_size(PageSize::Size2M), 1);
    }

    #[test]
    fn cpuid_page_lookup_matches_leaf_and_subleaf() {
        let mut page = [0u8; PAGE];
        page[0..4].copy_from_slice(&2u32.to_le_bytes());
        let entry = |page: &mut [u8; PAGE], i: usize, leaf: u32, sub: u32, regs: [u32; 4]| {
            let e = 0x10 + i * 0x30;
            page[e..e + 4].copy_from_slice(&leaf.to_le_bytes());
            page[e + 4..e + 8].copy_from_slice(&sub.to_le_bytes());
            for (k, r) in regs.iter().enumerate() {
                page[e + 0x18 + 4 * k..e + 0x1C + 4 * k].copy_from_slice(&r.to_le_bytes());
            }
        };
        entry(&mut page, 0, 0x8000_001F, 0, [0x1B19F, 0x173, 0, 0]);
        entry(&mut page, 1, 7, 1, [1, 2, 3, 4]);
        assert_eq!(cpuid_page_lookup(&page, 0x8000_001F, 99), Some([0x1B19F, 0x173, 0, 0]));
        assert_eq!(cpuid_page_lookup(&page, 7, 1), Some([1, 2, 3, 4]));
        assert_eq!(cpuid_page_lookup(&page, 7, 0), None);
        assert_eq!(cpuid_page_lookup(&page, 1, 0), None);
    }

    #[test]
    fn secrets_page_vmpck_is_taken_once() {
        // SNP ABI "Secrets Page Format": VMPCK0..3 at 0x20, 0x40, 0x60, 0x80 (Linux
        // struct snp_secrets_page).
        let mut page = [0u8; PAGE];
        page[0x20..0x40].fill(0xA5);
        page[0x40..0x60].fill(0x5A);
        let k = Vmpck::take(&mut page, 0).unwrap();
        assert_eq!(*k.0, [0xA5; 32]);
        assert!(page[0x20..0x40].iter().all(|&b| b == 0), "the page's copy is zeroed");
        assert!(page[0x40..0x60].iter().all(|&b| b == 0x5A), "other keys untouched");
        assert!(matches!(Vmpck::take(&mut page, 0), Err(TeeError::NoKey)));
        assert!(matches!(Vmpck::take(&mut page, 4), Err(TeeError::NoKey)));
    }

    #[test]
    fn every_vmpck_is_wiped_at_boot_and_vmpck0_kept_once() {
        // SNP ABI "Secrets Page Format": VMPCK0..3 at 0x20, 0x40, 0x60, 0x80, 32 bytes each.
        let mut page = [0u8; PAGE];
        for (i, off) in secrets::VMPCK.iter().enumerate() {
            page[*off..off + 32].fill(0xA0 + i as u8);
        }
        page[0x00] = 3; // the version, not a secret: left alone
        let mut stash = [0u8; 32];
        stash_vmpck0(&mut page, &mut stash).unwrap();
        assert_eq!(stash, [0xA0; 32]);
        assert!(page[0x20..0xA0].iter().all(|&b| b == 0), "VMPCK0-3 wiped");
        assert_eq!(page[0], 3);
        // The stash gives the key once.
        let k = Vmpck::take_stashed(&mut stash).unwrap();
        assert_eq!(*k.0, [0xA0; 32]);
        assert_eq!(stash, [0; 32]);
        assert!(matches!(Vmpck::take_stashed(&mut stash), Err(TeeError::NoKey)));
        // No VMPCK0 installed: NoKey, and the other keys are wiped all the same.
        let mut page = [0u8; PAGE];
        page[0x60..0x80].fill(7);
        assert_eq!(stash_vmpck0(&mut page, &mut stash), Err(TeeError::NoKey));
        assert!(page.iter().all(|&b| b == 0));
    }

    #[test]
    fn message_header_layout_and_aead() {
        // SNP ABI "Message Header Format" (Linux struct snp_guest_msg_hdr): authtag 0x00 (32),
        // msg_seqno 0x20, algo 0x30, hdr_version 0x31, hdr_sz 0x32, msg_type 0x34,
        // msg_version 0x35, msg_sz 0x36, msg_vmpck 0x3C, header 0x60 bytes; AAD 0x30..0x60.
        let mut page = [0u8; PAGE];
        write_header(&mut page, 1, MsgType::ReportReq as u8, 1, 0x60, 0);
        assert_eq!(&page[0x20..0x28], &1u64.to_le_bytes());
        assert_eq!(&page[0x30..0x38], &[1, 1, 0x60, 0, 5, 1, 0x60, 0]);
        assert_eq!(page[0x3C], 0);
        assert_eq!(msg::AAD.len(), 48);
        assert_eq!(nonce(0x0102), [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        page[0x60..0xC0].fill(0x77);
        let key = [9u8; 32];
        seal(&key, &mut page).unwrap();
        assert_ne!(&page[0x60..0xC0], &[0x77; 0x60][..]);
        assert_eq!(open(&key, &page).unwrap(), vec![0x77; 0x60]);
        // The AAD covers the header: changing msg_type breaks the tag.
        let mut forged = page;
        forged[0x34] = 6;
        assert!(open(&key, &forged).is_err());
        assert!(open(&[8u8; 32], &page).is_err());
    }

    #[test]
    fn report_request_and_response_layouts() {
        // SNP ABI "MSG_REPORT_REQ": REPORT_DATA 0x00, VMPL 0x40, KEY_SEL 0x44, 0x60 bytes.
        let r = report_request(&[3; 64], 0);
        assert_eq!(r.len(), 0x60);
        assert_eq!(&r[..64], &[3; 64]);
        assert!(r[0x40..].iter().all(|&b| b == 0));
        // "MSG_REPORT_RSP": STATUS 0x00, REPORT_SIZE 0x04, report at 0x20; the report's
        // REPORT_DATA at 0x50 and VMPL at 0x30 ("ATTESTATION_REPORT Structure").
        let mut rsp = vec![0u8; 0x20 + 0x4A0];
        rsp[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
        rsp[0x20 + 0x50..0x20 + 0x90].fill(3);
        assert_eq!(parse_report_response(&rsp, &[3; 64], 0).unwrap().len(), 0x4A0);
        assert_eq!(parse_report_response(&rsp, &[4; 64], 0), Err(TeeError::ReportMismatch("REPORT_DATA")));
        assert_eq!(parse_report_response(&rsp, &[3; 64], 1), Err(TeeError::ReportMismatch("VMPL")));
        // A response longer than header + report (padded by the firmware) is taken; the bytes
        // after REPORT_SIZE are not part of the report. Shorter, or another REPORT_SIZE, is not.
        let mut padded = rsp.clone();
        padded.resize(0x20 + 0x4A0 + 0x40, 0xEE);
        assert_eq!(parse_report_response(&padded, &[3; 64], 0).unwrap(), rsp[0x20..].to_vec());
        assert_eq!(parse_report_response(&rsp[..0x20 + 0x49F], &[3; 64], 0), Err(TeeError::BadResponse("MSG_REPORT_RSP size")));
        padded[4..8].copy_from_slice(&0x4E0u32.to_le_bytes());
        assert_eq!(parse_report_response(&padded, &[3; 64], 0), Err(TeeError::BadResponse("MSG_REPORT_RSP size")));
        rsp[0..4].copy_from_slice(&0x16u32.to_le_bytes());
        assert_eq!(parse_report_response(&rsp, &[3; 64], 0), Err(TeeError::FirmwareStatus(0x16)));
    }

    #[test]
    fn certificate_guids_as_text() {
        // The VCEK GUID as a host writes it into the table: RFC 4122 byte order (the sev crate's
        // Uuid::as_bytes, libuuid's uuid_parse), e.g. go-sev-guest's and veraison's byte arrays.
        let vcek = [0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd];
        assert_eq!(guid_string(&vcek), cert_guid::VCEK);
        let ark = [0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae];
        assert_eq!(guid_string(&ark), cert_guid::ARK);
        // The EFI / guid_t layout of the same GUID is another GUID.
        let swapped = [0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd];
        assert_ne!(guid_string(&swapped), cert_guid::VCEK);
    }

    #[test]
    fn certificate_table() {
        let mut buf = vec![0u8; 0x1000];
        buf[..16].copy_from_slice(&[0x8D; 16]);
        buf[16..20].copy_from_slice(&0x100u32.to_le_bytes());
        buf[20..24].copy_from_slice(&3u32.to_le_bytes());
        buf[0x100..0x103].copy_from_slice(b"DER");
        let t = parse_cert_table(&buf).unwrap();
        assert_eq!(t, vec![([0x8D; 16], b"DER".to_vec())]);
        buf[16..20].copy_from_slice(&0xFFFu32.to_le_bytes());
        assert!(parse_cert_table(&buf).is_err(), "entry runs past the buffer");
        assert!(parse_cert_table(&[1u8; 48]).is_err(), "no terminator");
    }

    /// A hypervisor model for NAE events: answers CPUID, port reads, MSRs and MMIO reads, and
    /// records what the guest asked.
    #[derive(Default)]
    struct Nae {
        seen: Vec<(u64, u64, u64)>,
        mark_valid: bool,
    }
    impl Hardware for Nae {
        fn msr_exit(&mut self, _: u64) -> u64 {
            unreachable!()
        }
        fn ghcb_gpa(&self) -> u64 {
            0x7000_0000
        }
        fn ghcb_exit(&mut self, g: &mut Ghcb) {
            let (code, info1, info2) = (g.get(ghcb::SW_EXIT_CODE), g.get(ghcb::SW_EXIT_INFO_1), g.get(ghcb::SW_EXIT_INFO_2));
            self.seen.push((code, info1, if code == exit::IOIO || code == exit::MSR { g.get(ghcb::RAX) } else { info2 }));
            let mut out = Ghcb::new();
            out.0[ghcb::SHARED_BUFFER..ghcb::SHARED_BUFFER + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
            if self.mark_valid {
                for (off, v) in [(ghcb::RAX, 0xFFFF_FFFF_0000_0041u64), (ghcb::RBX, 2), (ghcb::RCX, 3), (ghcb::RDX, 0x4)] {
                    out.set(off, v);
                }
            }
            out.set(ghcb::SW_EXIT_INFO_1, 0);
            *g = out;
        }
        fn pvalidate(&mut self, _: u64, _: PageSize, _: bool) -> Pvalidate {
            unreachable!()
        }
        fn rmpadjust(&mut self, _: u64, _: u64) -> u32 {
            unreachable!()
        }
    }

    #[test]
    fn vc_handler_emulates_through_the_ghcb() {
        let mut hv = Nae { mark_valid: true, ..Default::default() };
        let mut g = [0u64; 16];
        // OUT DX, AL: IOIO EXITINFO1 for port 0x3F8, 8-bit; RAX carries the byte.
        (g[0], g[2]) = (0x41, 0x3F8);
        assert_eq!(handle_vc(&mut hv, None, exit::IOIO, &[0xEE], None, &mut g), Ok(1));
        assert_eq!(hv.seen[0], (0x7B, 0x03F8_0210, 0x41));
        // IN AL, 0x71 merges AL only, and hands the host none of RAX (issue 15, finding 8:
        // the GHCB is shared; Linux vc_handle_ioio sends 0 for IN).
        g[0] = 0xAAAA_BBBB_CCCC_DDDD;
        assert_eq!(handle_vc(&mut hv, None, exit::IOIO, &[0xE4, 0x71], None, &mut g), Ok(2));
        assert_eq!(g[0], 0xAAAA_BBBB_CCCC_DD41);
        assert_eq!(hv.seen[1].2, 0, "IN: RAX not shared");
        // OUT DX, AL with RAX full of secrets: only AL goes out.
        (g[0], g[2]) = (0x1234_5678_9ABC_DE42, 0x3F8);
        assert_eq!(handle_vc(&mut hv, None, exit::IOIO, &[0xEE], None, &mut g), Ok(1));
        assert_eq!(hv.seen[2].2, 0x42, "OUT AL: one byte");
        // RDMSR: EAX, EDX from the GHCB's RAX, RDX (low halves).
        g[1] = 0xC001_0131;
        assert_eq!(handle_vc(&mut hv, None, exit::MSR, &[0x0F, 0x32], None, &mut g), Ok(2));
        assert_eq!((g[0], g[2]), (0x41, 4));
        // RDTSC (when intercepted): EDX:EAX from the GHCB's RDX, RAX, upper halves cleared.
        (g[0], g[2]) = (u64::MAX, u64::MAX);
        assert_eq!(handle_vc(&mut hv, None, exit::RDTSC, &[0x0F, 0x31], None, &mut g), Ok(2));
        assert_eq!((g[0], g[2]), (0x41, 4));
        assert_eq!(hv.seen.last().map(|s| s.0), Some(0x6E));
        assert!(handle_vc(&mut hv, None, exit::RDTSC, &[0x0F, 0xA2], None, &mut g).is_err(), "the instruction must be RDTSC");
        // CPUID from the CPUID page, never the hypervisor, when there is a page.
        let mut page = [0u8; PAGE];
        page[0..4].copy_from_slice(&1u32.to_le_bytes());
        page[0x10..0x14].copy_from_slice(&0x8000_001Fu32.to_le_bytes());
        page[0x2C..0x30].copy_from_slice(&0x173u32.to_le_bytes());
        let exits = hv.seen.len();
        (g[0], g[1]) = (0x8000_001F, 0);
        assert_eq!(handle_vc(&mut hv, Some(&page), exit::CPUID, &[0x0F, 0xA2], None, &mut g), Ok(2));
        assert_eq!((g[0], g[3], g[1], g[2]), (0, 0x173, 0, 0));
        assert_eq!(hv.seen.len(), exits);
        g[0] = 7;
        handle_vc(&mut hv, Some(&page), exit::CPUID, &[0x0F, 0xA2], None, &mut g).unwrap();
        assert_eq!(&g[..4], &[0; 4], "a leaf missing from the page reads as zero");
        // MMIO read: mov eax, [rdi] at GPA 0xC000_0000: data from the shared buffer, zero-extended.
        g[0] = u64::MAX;
        assert_eq!(handle_vc(&mut hv, None, exit::NPF, &[0x8B, 0x07], Some(0xC000_0000), &mut g), Ok(2));
        assert_eq!(g[0], 0x5566_7788);
        assert_eq!(hv.seen.last(), Some(&(0x8000_0001, 0xC000_0000, 4)));
        // A hypervisor that leaves RAX invalid after IN is refused; so are unknown exits.
        let mut lazy = Nae::default();
        assert!(handle_vc(&mut lazy, None, exit::IOIO, &[0xEC], None, &mut g).is_err());
        assert!(handle_vc(&mut lazy, None, 0x6F, &[0xF4], None, &mut g).is_err());
        assert!(handle_vc(&mut lazy, None, exit::NPF, &[0x8B, 0x07], None, &mut g).is_err(), "no GPA");
    }

    struct NeverCalled;
    impl GuestRequest for NeverCalled {
        fn guest_request(&mut self, _: &[u8; PAGE], _: &mut [u8; PAGE], _: Option<&mut [u8]>) -> RequestOutcome {
            panic!("no request may be sent")
        }
        fn wait_ms(&mut self, _: u64) {
            panic!("no request may be sent")
        }
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        // The last response used u64::MAX - 1: the next request would need u64::MAX and its
        // response u64::MAX + 1. The channel refuses and wipes the key instead of wrapping.
        let mut c = GuestChannel { key: Some(Vmpck::from_bytes([1; 32])), vmpck_id: 0, last: u64::MAX - 1 };
        assert_eq!(c.request(&mut NeverCalled, MsgType::ReportReq, 1, &[0; 0x60], None), Err(TeeError::SequenceExhausted));
        assert!(c.is_wiped());
        assert_eq!(c.request(&mut NeverCalled, MsgType::ReportReq, 1, &[0; 0x60], None), Err(TeeError::KeyWiped));
        // An oversized payload is refused before a sequence number is spent.
        let mut c = GuestChannel::new(Vmpck::from_bytes([1; 32]), 0);
        assert!(c.request(&mut NeverCalled, MsgType::ReportReq, 1, &[0; PAGE], None).is_err());
        assert!(!c.is_wiped());
        assert_eq!(c.next_seqno(), 1);
    }
}
