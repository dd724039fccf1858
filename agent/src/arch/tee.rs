//! Which platform the agent runs on, read once at boot (`agent::tee::detect`): a plain VM, an
//! SEV-SNP guest or a TD. The instructions behind it (CPUID, RDMSR) are here; the decision is in
//! the portable core.
//!
//! On a plain VM the probe is harmless: CPUID leaf 0x21 is only read when CPUID 0 says it exists,
//! and SEV_STATUS only when CPUID 0x8000_001F says SEV exists (QEMU reports that leaf as zero for
//! guests launched without SEV, and an SEV guest always has the MSR). Inside a real SNP guest or
//! TD, CPUID itself traps (`#VC`/`#VE`): the boot path for those platforms is not written yet
//! (docs/running-on-snp.md, docs/running-on-tdx.md), so on such hardware the agent does not get
//! this far.
use agent::tee::{self, Kind, Probe};
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU8, Ordering};

static KIND: AtomicU8 = AtomicU8::new(0);

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called for SEV_STATUS after CPUID reported SEV, where the MSR exists (APM vol.
    // 2 "SEV_STATUS MSR"); reading it has no side effects.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads CPUID (and SEV_STATUS when CPUID allows) into a [`Probe`].
pub fn probe() -> Probe {
    // CPUID is always available in long mode; `__cpuid` is safe on x86_64.
    let max_leaf = __cpuid(0).eax;
    let leaf_21 = (max_leaf >= 0x21).then(|| {
        let r = __cpuid_count(0x21, 0);
        [r.ebx, r.edx, r.ecx]
    });
    let max_ext_leaf = __cpuid(0x8000_0000).eax;
    let leaf_8000_001f_eax = (max_ext_leaf >= 0x8000_001F).then(|| __cpuid(0x8000_001F).eax);
    let sev_status = leaf_8000_001f_eax
        .filter(|&eax| tee::may_read_sev_status(max_ext_leaf, eax))
        .map(|_| rdmsr(tee::snp::MSR_SEV_STATUS));
    Probe { max_leaf, leaf_21, max_ext_leaf, leaf_8000_001f_eax, sev_status }
}

/// Detects the platform and remembers it for [`kind`].
pub fn init() -> Kind {
    let kind = tee::detect(&probe());
    KIND.store(kind as u8 + 1, Ordering::Relaxed);
    log::info!("platform: {}", agent::statement::attestation_name(kind.attestation()));
    kind
}

/// The platform [`init`] found (`Kind::None` before it ran): for the Hello frame and the
/// attester.
pub fn kind() -> Kind {
    match KIND.load(Ordering::Relaxed) {
        2 => Kind::SevSnp,
        3 => Kind::Tdx,
        _ => Kind::None,
    }
}
