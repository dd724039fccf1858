//! What the builder learns from the CPU itself, decided by the agent and the same on every
//! platform (docs/sandbox.md, "The CPU a builder sees").
//!
//! A builder that asks the processor directly — `cpuid`, `rdtsc`, `rdtscp` — would otherwise
//! see what the host chose: under SEV-SNP the host builds the CPUID page and may intercept
//! RDTSC, under TDX the CPUID leaves the TDX module does not virtualise go to the host, on a
//! plain VM everything is QEMU's. Two builds of one derivation could then differ by host. So
//! the arch layer makes these instructions trap from ring 3 (CR4.TSD for the time-stamp
//! counter; #VC under SEV-SNP, TDG.VP.CPUIDVE.SET under TDX, CPUID faulting on a plain VM for
//! CPUID) and the sandbox answers them here:
//!
//! - `cpuid`: from [`cpuid`], one fixed table: AuthenticAMD, family 0Fh, the x86-64-v2 feature
//!   level (SSE2 through SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF), no AVX (the agent does not
//!   enable XSAVE), no RDRAND/RDSEED, no hypervisor bit, one core, fixed cache sizes.
//! - `rdtsc` / `rdtscp`: a per-process counter, [`tsc`]: 1 s at a nominal 1 GHz (the clocks'
//!   fixed time, docs/sandbox.md "Determinism"), plus 1000 per earlier read by the same
//!   process, so it only ever advances and a loop waiting for it to move ends; its values
//!   depend on nothing but the process's own instructions. `rdtscp`'s TSC_AUX (ECX) is 0, the
//!   one CPU.
use super::process::Regs;

/// The instructions the sandbox answers for the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `0F A2`
    Cpuid,
    /// `0F 31`
    Rdtsc,
    /// `0F 01 F9`
    Rdtscp,
}

impl Insn {
    pub fn length(self) -> u64 {
        match self {
            Insn::Cpuid | Insn::Rdtsc => 2,
            Insn::Rdtscp => 3,
        }
    }
}

/// The instruction at the start of `bytes` (the bytes at the trapping RIP), if it is one of
/// [`Insn`]. No prefixes: compilers emit none on these, and a prefixed form simply keeps the
/// fault (SIGSEGV), as an unknown instruction would.
pub fn decode(bytes: &[u8]) -> Option<Insn> {
    match bytes {
        [0x0F, 0xA2, ..] => Some(Insn::Cpuid),
        [0x0F, 0x31, ..] => Some(Insn::Rdtsc),
        [0x0F, 0x01, 0xF9, ..] => Some(Insn::Rdtscp),
        _ => None,
    }
}

/// The counter's value at the process's first read: 1 s at 1 GHz.
pub const TSC_START: u64 = 1_000_000_000;
/// How far it advances per read.
pub const TSC_STEP: u64 = 1000;

/// The time-stamp counter a process reads after `reads` earlier reads.
pub fn tsc(reads: u64) -> u64 {
    TSC_START.wrapping_add(reads.wrapping_mul(TSC_STEP))
}

const fn reg(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// The highest basic and extended leaves the table answers.
pub const MAX_LEAF: u32 = 7;
pub const MAX_EXT_LEAF: u32 = 0x8000_0008;
/// "AuthenticAMD" as EBX, EDX, ECX.
pub const VENDOR: [u32; 3] = [reg(b"Auth"), reg(b"enti"), reg(b"cAMD")];
/// Family 0Fh, model 0, stepping 0 (leaf 1 and 8000_0001h EAX).
pub const SIGNATURE: u32 = 0x0000_0F00;
/// Leaf 1 ECX: SSE3 (0), SSSE3 (9), CMPXCHG16B (13), SSE4.1 (19), SSE4.2 (20), POPCNT (23).
/// Not: XSAVE/OSXSAVE/AVX (no XSAVE in the sandbox), RDRAND (30), the hypervisor bit (31).
pub const LEAF1_ECX: u32 = 1 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 23;
/// Leaf 1 EDX: FPU (0), TSC (4), CX8 (8), CMOV (15), CLFSH (19), MMX (23), FXSR (24), SSE (25),
/// SSE2 (26).
pub const LEAF1_EDX: u32 = 1 | 1 << 4 | 1 << 8 | 1 << 15 | 1 << 19 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26;
/// 8000_0001h ECX: LAHF/SAHF in 64-bit mode (0).
pub const EXT1_ECX: u32 = 1;
/// 8000_0001h EDX: the leaf-1 bits AMD mirrors (FPU, TSC, CX8, CMOV, MMX, FXSR), SYSCALL (11),
/// NX (20), long mode (29).
pub const EXT1_EDX: u32 = 1 | 1 << 4 | 1 << 8 | 1 << 11 | 1 << 15 | 1 << 20 | 1 << 23 | 1 << 24 | 1 << 29;
/// The processor name (8000_0002h..8000_0004h), 48 bytes, NUL-padded.
pub const BRAND: &[u8; 48] = b"Attested Nix build sandbox x86-64-v2\0\0\0\0\0\0\0\0\0\0\0\0";

/// CPUID(`leaf`, `subleaf`) as the builder sees it: EAX, EBX, ECX, EDX. Leaves the table does
/// not name read as zero (AMD's behaviour beyond the maximum leaf), the hypervisor range
/// (4000_0000h..) included.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let _ = subleaf; // no leaf of the table has subleaves (leaf 7 subleaf 0 is all zero too)
    match leaf {
        0 => [MAX_LEAF, VENDOR[0], VENDOR[2], VENDOR[1]],
        // EBX: CLFLUSH line 8 quadwords (64 bytes), 1 logical processor, APIC ID 0.
        1 => [SIGNATURE, 8 << 8 | 1 << 16, LEAF1_ECX, LEAF1_EDX],
        0x8000_0000 => [MAX_EXT_LEAF, VENDOR[0], VENDOR[2], VENDOR[1]],
        0x8000_0001 => [SIGNATURE, 0, EXT1_ECX, EXT1_EDX],
        0x8000_0002..=0x8000_0004 => {
            let at = (leaf - 0x8000_0002) as usize * 16;
            let r = |i: usize| u32::from_le_bytes(BRAND[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
            [r(0), r(1), r(2), r(3)]
        }
        // L1 data and instruction caches: 32 KiB, 8-way, 1 line per tag, 64-byte lines.
        0x8000_0005 => [0, 0, 32 << 24 | 8 << 16 | 1 << 8 | 64, 32 << 24 | 8 << 16 | 1 << 8 | 64],
        // L2: 512 KiB, 8-way (encoding 6), 64-byte lines; no L3 (EDX 0).
        0x8000_0006 => [0, 0, 512 << 16 | 6 << 12 | 1 << 8 | 64, 0],
        // 40 physical / 48 virtual address bits; one core (ECX 0).
        0x8000_0008 => [48 << 8 | 40, 0, 0, 0],
        _ => [0; 4],
    }
}

/// Carries out `insn` for a process: its registers as the instruction leaves them (RIP past
/// it), `tsc_reads` counting its reads of the counter.
pub fn emulate(insn: Insn, regs: &mut Regs, tsc_reads: &mut u64) {
    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RBX: usize = 3;
    match insn {
        Insn::Cpuid => {
            let r = cpuid(regs.gpr[RAX] as u32, regs.gpr[RCX] as u32);
            (regs.gpr[RAX], regs.gpr[RBX], regs.gpr[RCX], regs.gpr[RDX]) = (r[0].into(), r[1].into(), r[2].into(), r[3].into());
        }
        Insn::Rdtsc | Insn::Rdtscp => {
            let t = tsc(*tsc_reads);
            *tsc_reads += 1;
            (regs.gpr[RAX], regs.gpr[RDX]) = (t & 0xFFFF_FFFF, t >> 32);
            if insn == Insn::Rdtscp {
                regs.gpr[RCX] = 0;
            }
        }
    }
    regs.rip = regs.rip.wrapping_add(insn.length());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(insn: Insn, rax: u64, rcx: u64, reads: &mut u64) -> Regs {
        let mut r = Regs { rip: 0x40_1000, ..Default::default() };
        r.gpr[0] = rax;
        r.gpr[1] = rcx;
        r.gpr[2] = u64::MAX;
        r.gpr[3] = u64::MAX;
        emulate(insn, &mut r, reads);
        r
    }

    #[test]
    fn decodes_only_the_three_instructions() {
        assert_eq!(decode(&[0x0F, 0xA2, 0x90]), Some(Insn::Cpuid));
        assert_eq!(decode(&[0x0F, 0x31]), Some(Insn::Rdtsc));
        assert_eq!(decode(&[0x0F, 0x01, 0xF9]), Some(Insn::Rdtscp));
        assert_eq!(decode(&[0x0F, 0x01, 0xD0]), None, "xgetbv");
        assert_eq!(decode(&[0x0F, 0xC7, 0xF0]), None, "rdrand is not answered: it is hidden, see LEAF1_ECX");
        assert_eq!(decode(&[0x66, 0x0F, 0x31]), None);
        assert_eq!(decode(&[0x0F]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn the_table_reads_as_documented() {
        // The vendor string, as a program assembles it (EBX, EDX, ECX).
        let v = cpuid(0, 0);
        let mut s = [0u8; 12];
        for (i, r) in [v[1], v[3], v[2]].iter().enumerate() {
            s[4 * i..4 * i + 4].copy_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, b"AuthenticAMD");
        assert_eq!(v[0], 7);
        let l1 = cpuid(1, 0);
        // Family: base 0xF (ext family 0) = 15; model 0 (SDM/APM "CPUID Fn0000_0001_EAX").
        assert_eq!((l1[0] >> 8) & 0xF, 0xF);
        // SSE2 (EDX 26), SSE4.2 (ECX 20), POPCNT (ECX 23), CX16 (ECX 13) present.
        assert!(l1[3] & (1 << 26) != 0 && l1[2] & (1 << 20) != 0 && l1[2] & (1 << 23) != 0 && l1[2] & (1 << 13) != 0);
        // Hidden: RDRAND (ECX 30), hypervisor (ECX 31), XSAVE (ECX 26), OSXSAVE (27), AVX (28).
        for bit in [26, 27, 28, 30, 31] {
            assert_eq!(l1[2] & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        assert_eq!(l1[1] >> 24, 0, "APIC ID 0");
        // Leaf 7: no RDSEED (EBX 18), no AVX2, nothing at all.
        assert_eq!(cpuid(7, 0), [0; 4]);
        // The hypervisor leaves and anything past the maxima read as zero.
        assert_eq!(cpuid(0x4000_0000, 0), [0; 4]);
        assert_eq!(cpuid(8, 0), [0; 4]);
        assert_eq!(cpuid(0x8000_0009, 0), [0; 4]);
        assert_eq!(cpuid(0x8000_0000, 0)[0], 0x8000_0008);
        assert!(cpuid(0x8000_0001, 0)[3] & (1 << 29) != 0, "long mode");
        let mut brand = [0u8; 48];
        for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
            for (j, r) in cpuid(leaf, 0).iter().enumerate() {
                brand[16 * i + 4 * j..16 * i + 4 * j + 4].copy_from_slice(&r.to_le_bytes());
            }
        }
        assert!(brand.starts_with(b"Attested Nix build sandbox x86-64-v2\0"));
        // The same question always gets the same answer, whatever the subleaf.
        assert_eq!(cpuid(1, 0), cpuid(1, 5));
        // The register values docs/sandbox.md's table lists.
        assert_eq!(cpuid(1, 0), [0x0000_0F00, 0x0001_0800, 0x0098_2201, 0x0788_8111]);
        assert_eq!(cpuid(0x8000_0001, 0), [0x0000_0F00, 0, 1, 0x2190_8911]);
        assert_eq!(cpuid(0x8000_0008, 0), [0x3028, 0, 0, 0]);
    }

    #[test]
    fn cpuid_writes_four_registers_zero_extended() {
        let mut reads = 0;
        let r = run(Insn::Cpuid, 0xFFFF_FFFF_0000_0000, 0, &mut reads);
        assert_eq!(r.gpr[0], u64::from(MAX_LEAF));
        assert_eq!(r.gpr[3], u64::from(VENDOR[0]));
        assert_eq!(r.gpr[2], u64::from(VENDOR[1]), "RDX upper half cleared");
        assert_eq!(r.rip, 0x40_1002);
        assert_eq!(reads, 0);
    }

    #[test]
    fn the_counter_advances_per_read_and_only_then() {
        let mut reads = 0;
        let a = run(Insn::Rdtsc, 7, 7, &mut reads);
        let b = run(Insn::Rdtscp, 7, 7, &mut reads);
        let ta = a.gpr[0] | a.gpr[2] << 32;
        let tb = b.gpr[0] | b.gpr[2] << 32;
        assert_eq!((ta, tb), (TSC_START, TSC_START + TSC_STEP));
        assert_eq!(a.gpr[1], 7, "rdtsc leaves RCX");
        assert_eq!(b.gpr[1], 0, "rdtscp: TSC_AUX 0");
        assert_eq!((a.rip, b.rip), (0x40_1002, 0x40_1003));
        assert_eq!(reads, 2);
        // A process that forked carries its count on; a fresh one starts again.
        let mut fresh = 0;
        assert_eq!(run(Insn::Rdtsc, 0, 0, &mut fresh).gpr[0], TSC_START & 0xFFFF_FFFF);
        // Past 2^32 the high half is in RDX.
        let mut many = 5_000_000;
        let r = run(Insn::Rdtsc, 0, 0, &mut many);
        assert_eq!(r.gpr[0] | r.gpr[2] << 32, 6_000_000_000);
        assert_eq!(r.gpr[2], 1);
    }
}
