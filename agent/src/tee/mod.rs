//! Confidential-computing platforms: what differs between a plain VM, an SEV-SNP guest and a TD.
//!
//! Everything here is portable and safe: the encodings of the hardware interfaces (GHCB, guest
//! messages, TDCALL/TDVMCALL registers), the range logic of memory validation and acceptance, the
//! AES-256-GCM guest-message channel with its sequence numbers, and the parsing of what the
//! firmware answers. The few instructions that talk to the hardware (VMGEXIT, PVALIDATE, TDCALL)
//! are behind the small [`snp::Hardware`] and [`tdx::Hardware`] traits: the firmware's `arch`
//! layer implements them with `unsafe` assembly; the tests implement them with models of the PSP
//! and the TDX module (`agent/tests/tee_model.rs`).
//!
//! ```text
//! boot: rom32.s (SEV_STATUS; a TD enters in 32-bit mode) ──► Kind::{None, SevSnp, Tdx}
//!       (a TD is confirmed with detect(probe): CPUID 0x21)
//!                           │
//!       Platform  (accept private memory, make bounce buffers shared, PTE address bits)
//!       Attester  (REPORT_DATA = SHA-512(statement) ──► SNP report / TDX quote bytes)
//! ```
//!
//! Spec references used throughout (sections are cited by title: numbers move between revisions):
//! - AMD "SEV-ES Guest-Hypervisor Communication Block Standardization" (GHCB spec, #56421, rev 2.03)
//! - AMD "SEV Secure Nested Paging Firmware ABI Specification" (SNP ABI, #56860, rev 1.55)
//! - AMD64 Architecture Programmer's Manual vol. 2 (#24593) and vol. 3 (#24594)
//! - Intel TDX Module v1.5 ABI Specification (#348551) and Base Architecture (#348549)
//! - Intel TDX Guest-Hypervisor Communication Interface v1.5 (GHCI, #348552)
use crate::proto::AttestationKind;
use alloc::vec::Vec;

pub mod insn;
pub mod pool;
pub mod snp;
pub mod tdx;

pub const PAGE_4K: u64 = 0x1000;
pub const PAGE_2M: u64 = 0x20_0000;

/// The local APIC timer's input clock, in Hz, on `kind`; `crystal_hz` is CPUID.15H:ECX (the
/// core crystal clock, 0 when the leaf does not say).
///
/// - A TD: the APIC timer runs at the crystal clock the TDX module reports in CPUID.15H:ECX
///   (it virtualizes leaf 0x15; 25 MHz on current modules), and KVM's TDX vAPIC ticks at the
///   same rate: QEMU sets `KVM_CAP_X86_APIC_BUS_CYCLES_NS` to 40 ns for a TD
///   (target/i386/kvm/tdx.c, `TDX_APIC_BUS_CYCLES_NS`). 25 MHz when the leaf is silent.
/// - Otherwise (a plain VM, SEV-SNP): QEMU's and KVM's APIC bus default, 1 GHz
///   (`APIC_BUS_CYCLE_NS_DEFAULT` = 1 in KVM's lapic.h; QEMU's TCG APIC counts nanoseconds).
///
/// A timer that ticks 40 times slower than the agent assumes would make its 10 ms tick 400 ms
/// and a one-hour CPU limit forty hours.
pub fn apic_timer_hz(kind: Kind, crystal_hz: u32) -> u64 {
    match (kind, crystal_hz) {
        (Kind::Tdx, 0) => 25_000_000,
        (Kind::Tdx, hz) => u64::from(hz),
        _ => 1_000_000_000,
    }
}

/// Which platform the agent runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    None,
    SevSnp,
    Tdx,
}

impl Kind {
    pub fn attestation(self) -> AttestationKind {
        match self {
            Kind::None => AttestationKind::None,
            Kind::SevSnp => AttestationKind::SevSnp,
            Kind::Tdx => AttestationKind::Tdx,
        }
    }
}

/// What the boot code reads from the machine to tell the platforms apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// CPUID 0 EAX: the highest standard leaf (leaf 0x21 is only read when it is at least 0x21).
    pub max_leaf: u32,
    /// CPUID 0x21 subleaf 0 (EBX, EDX, ECX), when `max_leaf >= 0x21`.
    pub leaf_21: Option<[u32; 3]>,
    /// CPUID 0x8000_0000 EAX: the highest extended leaf.
    pub max_ext_leaf: u32,
    /// CPUID 0x8000_001F EAX (memory-encryption features), when `max_ext_leaf >= 0x8000_001F`.
    pub leaf_8000_001f_eax: Option<u32>,
    /// The SEV_STATUS MSR (0xC001_0131), read only when CPUID 0x8000_001F EAX bit 1 (SEV) is set:
    /// outside an SEV guest the MSR may not exist and reading it faults.
    pub sev_status: Option<u64>,
}

/// CPUID 0x8000_001F EAX bit 1: SEV supported (APM vol. 3, "CPUID Fn8000_001F").
pub const CPUID_8000_001F_SEV: u32 = 1 << 1;
/// The TDX signature in CPUID 0x21 subleaf 0, as EBX, EDX, ECX: "IntelTDX    " (TDX Module Base
/// Architecture spec, "TDX-specific CPUID leaf"; Linux `TDX_IDENT`).
pub const TDX_CPUID_SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"Inte"),
    u32::from_le_bytes(*b"lTDX"),
    u32::from_le_bytes(*b"    "),
];

/// Whether the CPUID results say the SEV_STATUS MSR may be read.
pub fn may_read_sev_status(max_ext_leaf: u32, leaf_8000_001f_eax: u32) -> bool {
    max_ext_leaf >= 0x8000_001F && leaf_8000_001f_eax & CPUID_8000_001F_SEV != 0
}

/// One image, three platforms: the platform is what the machine says, never a build option.
pub fn detect(p: &Probe) -> Kind {
    if p.max_leaf >= 0x21 && p.leaf_21 == Some(TDX_CPUID_SIGNATURE) {
        return Kind::Tdx;
    }
    if let (Some(eax), Some(status)) = (p.leaf_8000_001f_eax, p.sev_status) {
        if may_read_sev_status(p.max_ext_leaf, eax) && status & snp::SEV_STATUS_SNP != 0 {
            return Kind::SevSnp;
        }
    }
    Kind::None
}

/// A page-aligned range of guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub len: u64,
}

impl Range {
    /// A range whose start and length are multiples of 4 KiB and whose end does not overflow.
    pub fn new(start: u64, len: u64) -> Result<Range, TeeError> {
        if !start.is_multiple_of(PAGE_4K) || !len.is_multiple_of(PAGE_4K) || start.checked_add(len).is_none() {
            return Err(TeeError::Misaligned { start, len });
        }
        Ok(Range { start, len })
    }

    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Page sizes the validation/acceptance instructions take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
}

impl PageSize {
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_4K,
            PageSize::Size2M => PAGE_2M,
        }
    }
}

/// Splits a range into the fewest pages: 2 MiB pages where the address is 2 MiB-aligned and a
/// whole 2 MiB page remains, 4 KiB pages elsewhere (the strategy of Linux `pvalidate_pages` and
/// `tdx_accept_memory`, and of COCONUT-SVSM's `pvalidate_range`).
pub fn split(range: Range) -> impl Iterator<Item = (u64, PageSize)> {
    let end = range.end();
    let mut at = range.start;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let size = if at.is_multiple_of(PAGE_2M) && end - at >= PAGE_2M { PageSize::Size2M } else { PageSize::Size4K };
        let page = (at, size);
        at += size.bytes();
        Some(page)
    })
}

/// How a page's guest-physical address is written into a page-table entry: SEV-SNP marks
/// *private* pages with the C-bit, TDX marks *shared* pages with the shared bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// The C-bit's position (CPUID 0x8000_001F EBX[5:0]); set = private (encrypted).
    CBit(u8),
    /// The shared bit's position (GPAW - 1); set = shared with the host.
    SharedBit(u8),
}

impl Encryption {
    /// The address bits of a page-table entry that maps `phys` (page-aligned, below the bit).
    pub fn pte_address(self, phys: u64, shared: bool) -> u64 {
        match self {
            Encryption::None => phys,
            Encryption::CBit(bit) if !shared => phys | (1 << bit),
            Encryption::CBit(_) => phys,
            Encryption::SharedBit(bit) if shared => phys | (1 << bit),
            Encryption::SharedBit(_) => phys,
        }
    }

    /// The bit to clear from a page-table entry's address to get the guest-physical address.
    pub fn mask(self) -> u64 {
        match self {
            Encryption::None => 0,
            Encryption::CBit(bit) | Encryption::SharedBit(bit) => 1 << bit,
        }
    }
}

/// Everything that can go wrong talking to the platform. Each variant says what refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeeError {
    /// No confidential-computing platform: nothing can be attested.
    NotConfidential,
    Misaligned { start: u64, len: u64 },
    /// SEV_STATUS lacks SNP or has features the agent does not run with (`unsupported`).
    SevFeatures { status: u64, unsupported: u64 },
    /// RMPADJUST to VMPL1 failed (its return code): the agent is not at VMPL0.
    NotVmpl0 { code: u32 },
    /// The TD is not one the agent runs in: more than one vCPU, or no SEPT_VE_DISABLE.
    TdConfiguration(&'static str),
    /// A GHCB MSR-protocol exchange answered with the wrong response code or value.
    MsrProtocol { request: u64, response: u64 },
    /// The hypervisor refused a page-state change (GHCB error code).
    PageStateChange { gpa: u64, error: u64 },
    /// PVALIDATE failed (its return code, or `NO_UPDATE` when rFLAGS.CF said nothing changed).
    Pvalidate { gpa: u64, code: u32 },
    /// The hypervisor failed a GHCB exit: SW_EXITINFO1 low 32 bits (GHCB spec, NAE exit results; Linux `verify_exception_info`).
    Ghcb { exit_code: u64, info1: u64, info2: u64 },
    /// SNP_GUEST_REQUEST: the hypervisor (upper 32 bits) or the firmware (lower) returned an error.
    GuestRequest { vmm: u32, firmware: u32 },
    /// The guest-message key was wiped after an earlier failure: no more requests.
    KeyWiped,
    /// All-zero VMPCK in the secrets page: that key was never installed or was wiped.
    NoKey,
    /// The sequence numbers are used up.
    SequenceExhausted,
    /// A guest-message payload larger than a page allows (nothing was sent).
    RequestTooLarge(usize),
    /// A response that does not authenticate or does not match its request: `what` failed.
    BadResponse(&'static str),
    /// The report the firmware returned says something other than what was asked.
    ReportMismatch(&'static str),
    /// The firmware's own status in a response payload.
    FirmwareStatus(u32),
    /// A TDCALL leaf returned a non-success status in RAX.
    Tdcall { leaf: u64, status: u64 },
    /// TDG.MEM.PAGE.ACCEPT failed for this page.
    Accept { gpa: u64, status: u64 },
    /// A TDG.VP.VMCALL returned a non-success status in R10.
    Vmcall { subfunction: u64, status: u64 },
    /// GetQuote finished with a non-success status in the shared buffer's header.
    Quote { status: u64 },
}

/// A certificate the host supplied with a report: (GUID as in the table, DER bytes).
pub type Certificate = ([u8; 16], Vec<u8>);

/// Hardware-signed evidence for one REPORT_DATA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub kind: Kind,
    /// SNP: the 0x4A0-byte ATTESTATION_REPORT. TDX: the DCAP quote.
    pub report: Vec<u8>,
    /// SNP extended request: the certificate table's entries (VCEK/ASK/ARK or VLEK), if the
    /// host supplied them: (GUID, DER bytes).
    pub certificates: Vec<Certificate>,
}

/// Memory and sharing: what the rest of the agent asks of the platform.
pub trait Platform {
    fn kind(&self) -> Kind;
    /// How page-table entries mark private and shared pages.
    fn encryption(&self) -> Encryption;
    /// Makes `range` private and usable (SNP: page-state change to private, then PVALIDATE;
    /// TDX: TDG.MEM.PAGE.ACCEPT). For memory the launch did not pre-validate or add.
    fn accept(&mut self, range: Range) -> Result<(), TeeError>;
    /// Makes `range` shared with the host (virtio bounce buffers, the GHCB, GetQuote buffers)
    /// or private again. The caller changes its page-table entries (see [`Encryption`]) and
    /// flushes the TLB before it touches the range afterwards.
    fn set_shared(&mut self, range: Range, shared: bool) -> Result<(), TeeError>;
}

/// Hardware-signed reports.
pub trait Attester {
    fn kind(&self) -> Kind;
    /// Has the hardware sign `report_data` (= SHA-512 of the statement).
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Evidence, TeeError>;
}

/// The plain VM: memory is all private and usable, nothing is shared in hardware, and nothing
/// can be attested.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTee;

impl Platform for NoTee {
    fn kind(&self) -> Kind {
        Kind::None
    }
    fn encryption(&self) -> Encryption {
        Encryption::None
    }
    fn accept(&mut self, _range: Range) -> Result<(), TeeError> {
        Ok(())
    }
    fn set_shared(&mut self, _range: Range, _shared: bool) -> Result<(), TeeError> {
        Ok(())
    }
}

impl Attester for NoTee {
    fn kind(&self) -> Kind {
        Kind::None
    }
    fn report(&mut self, _report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        Err(TeeError::NotConfidential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn apic_timer_runs_at_the_crystal_clock_in_a_td() {
        // A TD: CPUID.15H:ECX as the TDX module reports it (25 MHz), or unreported.
        assert_eq!(apic_timer_hz(Kind::Tdx, 25_000_000), 25_000_000);
        assert_eq!(apic_timer_hz(Kind::Tdx, 0), 25_000_000);
        // Plain QEMU/KVM and SEV-SNP guests: the 1 GHz APIC bus default, whatever 0x15 says.
        assert_eq!(apic_timer_hz(Kind::None, 0), 1_000_000_000);
        assert_eq!(apic_timer_hz(Kind::SevSnp, 25_000_000), 1_000_000_000);
        // A 10 ms tick is then 250,000 counts in a TD, not the 10,000,000 a 1 GHz bus needs
        // (which a 25 MHz timer takes 400 ms to count down).
        assert_eq!(apic_timer_hz(Kind::Tdx, 0) / 100, 250_000);
    }

    #[test]
    fn detects_td_by_cpuid_21_signature() {
        // TDX Module Base Architecture spec, "TDX-specific CPUID leaf 0x21": EBX:EDX:ECX =
        // "IntelTDX    "; Linux arch/x86/coco/tdx/tdx.c reads it as (ebx, edx, ecx).
        assert_eq!(TDX_CPUID_SIGNATURE, [0x6574_6E49, 0x5844_546C, 0x2020_2020]);
        let td = Probe { max_leaf: 0x23, leaf_21: Some(TDX_CPUID_SIGNATURE), ..Default::default() };
        assert_eq!(detect(&td), Kind::Tdx);
        // The leaf is ignored when CPUID 0 does not reach it.
        assert_eq!(detect(&Probe { max_leaf: 0x20, ..td }), Kind::None);
        assert_eq!(detect(&Probe { leaf_21: Some([0; 3]), ..td }), Kind::None);
    }

    #[test]
    fn detects_snp_by_sev_status() {
        // APM vol. 2 "SEV_STATUS MSR": bit 0 SEV, bit 1 SEV-ES, bit 2 SNP.
        let snp = Probe {
            max_ext_leaf: 0x8000_0021,
            leaf_8000_001f_eax: Some(0x0001_B19F),
            sev_status: Some(0b111),
            ..Default::default()
        };
        assert_eq!(detect(&snp), Kind::SevSnp);
        assert_eq!(detect(&Probe { sev_status: Some(0b011), ..snp }), Kind::None, "SEV-ES only");
        assert_eq!(detect(&Probe { leaf_8000_001f_eax: Some(0), ..snp }), Kind::None, "CPUID says no SEV");
        assert_eq!(detect(&Probe::default()), Kind::None);
        assert!(!may_read_sev_status(0x8000_0008, CPUID_8000_001F_SEV));
    }

    #[test]
    fn ranges_split_into_2m_where_aligned() {
        // 4 KiB up to the first 2 MiB boundary, then 2 MiB pages, then the 4 KiB tail.
        let r = Range::new(0x1F_E000, 0x20_4000).unwrap();
        let pages: Vec<_> = split(r).collect();
        assert_eq!(
            pages,
            vec![
                (0x1F_E000, PageSize::Size4K),
                (0x1F_F000, PageSize::Size4K),
                (0x20_0000, PageSize::Size2M),
                (0x40_0000, PageSize::Size4K),
                (0x40_1000, PageSize::Size4K),
            ]
        );
        assert_eq!(pages.iter().map(|p| p.1.bytes()).sum::<u64>(), r.len);
        assert_eq!(split(Range::new(0x20_0000, 0x1F_F000).unwrap()).count(), 0x1FF);
        assert_eq!(split(Range::new(0, 0).unwrap()).count(), 0);
        assert!(Range::new(0x1001, 0x1000).is_err());
        assert!(Range::new(0, 0x800).is_err());
        assert!(Range::new(!0xFFF, 0x2000).is_err());
    }

    #[test]
    fn page_table_address_bits() {
        // SNP: C-bit 51 (CPUID 0x8000_001F EBX[5:0] = 0x33 on Milan/Genoa) set for private pages.
        let snp = Encryption::CBit(51);
        assert_eq!(snp.pte_address(0x20_0000, false), 0x0008_0000_0020_0000);
        assert_eq!(snp.pte_address(0x20_0000, true), 0x20_0000);
        // TDX: GPAW 52 -> shared bit 51; GPAW 48 -> bit 47 (TDX Base Architecture, "GPA shared bit").
        let td = Encryption::SharedBit(tdx::shared_bit(52).unwrap());
        assert_eq!(td.pte_address(0x20_0000, true), 0x0008_0000_0020_0000);
        assert_eq!(td.pte_address(0x20_0000, false), 0x20_0000);
        assert_eq!(Encryption::SharedBit(tdx::shared_bit(48).unwrap()).mask(), 0x0000_8000_0000_0000);
        assert_eq!(Encryption::None.pte_address(0x1000, true), 0x1000);
    }

    #[test]
    fn plain_vm_attests_nothing() {
        let mut p = NoTee;
        assert_eq!(Platform::kind(&p), Kind::None);
        assert!(p.accept(Range::new(0, 0x1000).unwrap()).is_ok());
        assert_eq!(p.report(&[0; 64]), Err(TeeError::NotConfidential));
        assert_eq!(Kind::Tdx.attestation(), AttestationKind::Tdx);
    }
}
