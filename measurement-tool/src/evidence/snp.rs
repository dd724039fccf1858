//! SEV-SNP attestation reports (SEV-SNP firmware ABI, `ATTESTATION_REPORT` structure; VCEK
//! certificate and KDS interface spec 57230).
//!
//! Verification order, each step naming what failed: parse (length, version, signature
//! algorithm) → certificate chain (VCEK/VLEK → ASK → ARK, the ARK pinned: AMD's root for the
//! processor generation, built into the `sev` crate) → signature over the report's raw bytes
//! 0x000–0x29F → the VCEK's TCB and hardware-ID extensions against the report → policy.
use super::policy::Policy;
use super::Rejection;
use p384::ecdsa::signature::Verifier;
use sev::certs::snp::{builtin, ca, Certificate, Chain, Verifiable};
use x509_cert::der::Decode;

pub const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;

/// AMD processor generations (each has its own ARK/ASK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    Milan,
    Genoa,
    Turin,
}

impl Generation {
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// AMD's ARK and ASK for this generation, as pinned in the `sev` crate.
    pub fn pinned(self) -> ca::Chain {
        let (ark, ask) = match self {
            Generation::Milan => (builtin::milan::ark(), builtin::milan::ask()),
            Generation::Genoa => (builtin::genoa::ark(), builtin::genoa::ask()),
            Generation::Turin => (builtin::turin::ark(), builtin::turin::ask()),
        };
        ca::Chain { ark: ark.expect("pinned ARK parses"), ask: ask.expect("pinned ASK parses") }
    }

    const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];
}

/// A TCB version, decoded per generation (Turin adds FMC and moves the fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tcb {
    pub fmc: u8,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    fn decode(raw: u64, turin: bool) -> Tcb {
        let b = raw.to_le_bytes();
        if turin {
            Tcb { fmc: b[0], bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }
        } else {
            Tcb { fmc: 0, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
        }
    }
}

/// The fields of a report the verifier uses, read from the raw bytes.
#[derive(Clone, Debug)]
pub struct Report {
    pub raw: Vec<u8>,
    pub version: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    /// PLATFORM_INFO (0x40): SMT_EN, TSME_EN, ECC_EN, RAPL_DIS, CIPHERTEXT_HIDING_EN,
    /// ALIAS_CHECK_COMPLETE…
    pub platform_info: u64,
    /// REPORT_ID_MA (0x160): the migration agent's report ID, all ones when there is none.
    pub report_id_ma: [u8; 32],
    pub reported_tcb_raw: u64,
    pub chip_id: [u8; 64],
    /// CPUID family/model (reports v3 and later).
    pub cpuid: Option<(u8, u8)>,
    /// 0 = VCEK, 1 = VLEK.
    pub signing_key: u32,
}

/// Guest policy bit 16: SMT allowed.
pub const POLICY_SMT: u64 = 1 << 16;
/// Guest policy bit 17: reserved, must be one.
pub const POLICY_RESERVED_1: u64 = 1 << 17;
/// Guest policy bit 18: a migration agent may be associated with the guest.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// Guest policy bit 19: debugging allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;

impl Report {
    pub fn parse(raw: &[u8]) -> Result<Report, Rejection> {
        if raw.len() != REPORT_LEN {
            return Err(Rejection::new("report length", format!("{REPORT_LEN} bytes"), format!("{} bytes", raw.len())));
        }
        let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap());
        let version = u32_at(0x00);
        if !(2..=5).contains(&version) {
            return Err(Rejection::new("report version", "2, 3, 4 or 5", version.to_string()));
        }
        // The signature area after r and s (0x330–0x49F) is reserved and unsigned: it must be
        // zero, or two different byte strings would pass as the same report.
        if raw[0x330..REPORT_LEN].iter().any(|&b| b != 0) {
            return Err(Rejection::new("report", "zero reserved bytes after the signature", "non-zero bytes"));
        }
        let algo = u32_at(0x34);
        if algo != 1 {
            return Err(Rejection::new("signature algorithm", "1 (ECDSA P-384 with SHA-384)", algo.to_string()));
        }
        Ok(Report {
            version,
            policy: u64_at(0x08),
            vmpl: u32_at(0x30),
            report_data: raw[0x50..0x90].try_into().unwrap(),
            measurement: raw[0x90..0xC0].try_into().unwrap(),
            host_data: raw[0xC0..0xE0].try_into().unwrap(),
            platform_info: u64_at(0x40),
            report_id_ma: raw[0x160..0x180].try_into().unwrap(),
            reported_tcb_raw: u64_at(0x180),
            chip_id: raw[0x1A0..0x1E0].try_into().unwrap(),
            cpuid: (version >= 3).then(|| (raw[0x188], raw[0x189])),
            signing_key: (u32_at(0x48) >> 2) & 7,
            raw: raw.to_vec(),
        })
    }

    /// The generation the report says it comes from (v3+), if any.
    pub fn generation(&self) -> Option<Generation> {
        match self.cpuid? {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, _) => Some(Generation::Turin),
            _ => None,
        }
    }

    pub fn reported_tcb(&self, generation: Generation) -> Tcb {
        Tcb::decode(self.reported_tcb_raw, generation == Generation::Turin)
    }

    /// The ECDSA signature: r and s, 72-byte little-endian fields of which 48 bytes are used.
    fn signature(&self) -> Result<p384::ecdsa::Signature, Rejection> {
        let field = |o: usize| -> Result<[u8; 48], Rejection> {
            let le = &self.raw[o..o + 72];
            if le[48..].iter().any(|&b| b != 0) {
                return Err(Rejection::new("signature", "r and s below 2^384", "high bytes set"));
            }
            let mut be: [u8; 48] = le[..48].try_into().unwrap();
            be.reverse();
            Ok(be)
        };
        let (r, s) = (field(0x2A0)?, field(0x2E8)?);
        p384::ecdsa::Signature::from_scalars(r, s).map_err(|e| Rejection::new("signature", "valid r and s", format!("{e}")))
    }
}

/// AMD's Key Distribution Service (spec 57230, "VCEK Certificate" and "cert_chain").
pub const KDS: &str = "https://kdsintf.amd.com";

/// Where AMD KDS serves the VCEK for this report's chip and reported TCB:
/// `{KDS}/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`, where `hwid` is the
/// CHIP_ID in hex (its first 8 bytes on Turin, which also takes `fmcSPL`). The product is the
/// generation the report names (v3+); for a v2 report it is left as `{Milan|Genoa}` (Turin
/// reports are v3 or later). `None` when CHIP_ID is masked (all zero): KDS cannot be asked.
/// (The same URL as virtee's snpguest `fetch vcek` builds.)
pub fn kds_vcek_url(report: &Report) -> Option<String> {
    if report.chip_id.iter().all(|&b| b == 0) {
        return None;
    }
    let generation = report.generation();
    let product = generation.map(|g| g.name()).unwrap_or("{Milan|Genoa}");
    Some(match generation {
        Some(Generation::Turin) => {
            let t = report.reported_tcb(Generation::Turin);
            format!(
                "{KDS}/vcek/v1/{product}/{}?fmcSPL={:02}&blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
                hex::encode(&report.chip_id[..8]),
                t.fmc,
                t.bootloader,
                t.tee,
                t.snp,
                t.microcode
            )
        }
        _ => {
            let t = report.reported_tcb(Generation::Milan);
            format!(
                "{KDS}/vcek/v1/{product}/{}?blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
                hex::encode(report.chip_id),
                t.bootloader,
                t.tee,
                t.snp,
                t.microcode
            )
        }
    })
}

/// Where AMD KDS serves the chain for this report's signing key: ASK + ARK for a VCEK, ASVK + ARK
/// for a VLEK (`{KDS}/{vcek|vlek}/v1/{product}/cert_chain`).
pub fn kds_chain_url(report: &Report) -> String {
    let product = report.generation().map(|g| g.name()).unwrap_or("{Milan|Genoa}");
    let key = if report.signing_key == 1 { "vlek" } else { "vcek" };
    format!("{KDS}/{key}/v1/{product}/cert_chain")
}

/// Parses AMD KDS's `cert_chain` (PEM: the ASK, then the ARK).
pub fn parse_cert_chain(pem: &[u8]) -> Result<ca::Chain, Rejection> {
    let text = String::from_utf8_lossy(pem);
    let end = "-----END CERTIFICATE-----";
    let certs: Vec<String> = text.split_inclusive(end).filter(|c| c.contains("BEGIN CERTIFICATE")).map(|c| c.trim().to_string()).collect();
    let [ask, ark] = certs.as_slice() else {
        return Err(Rejection::new("certificate chain", "two PEM certificates (ASK, ARK)", format!("{}", certs.len())));
    };
    ca::Chain::from_pem(ark.as_bytes(), ask.as_bytes()).map_err(|e| Rejection::new("certificate chain", "ASK and ARK in PEM", e.to_string()))
}

/// What a successful verification established.
#[derive(Clone, Debug)]
pub struct Verified {
    pub report: Report,
    pub generation: Generation,
    pub tcb: Tcb,
}

/// OIDs of the VCEK extensions (spec 57230, "VCEK certificate extensions").
const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// What a VCEK or VLEK certifies: its TCB components (each `None` when the certificate lacks the
/// extension) and, for a VCEK, the chip's hardware ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Certified {
    pub fmc: Option<u8>,
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
    pub hwid: Option<Vec<u8>>,
}

/// The TCB components and hardware ID a VCEK (or VLEK) certifies.
pub fn certified(vek: &Certificate) -> Result<Certified, Rejection> {
    let der = vek.to_der().map_err(|e| Rejection::new("VCEK", "DER", e.to_string()))?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|e| Rejection::new("VCEK", "an X.509 certificate", e.to_string()))?;
    let mut c = Certified::default();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        let value = ext.extn_value.as_bytes();
        let int = || -> Result<Option<u8>, Rejection> {
            let i = x509_cert::der::asn1::Int::from_der(value).map_err(|e| Rejection::new("VCEK extension", "an INTEGER", format!("{oid}: {e}")))?;
            let b = i.as_bytes();
            match b {
                [] => Ok(Some(0)),
                [x] => Ok(Some(*x)),
                [0, x] => Ok(Some(*x)),
                _ => Err(Rejection::new("VCEK extension", "a value below 256", format!("{oid}: {b:?}"))),
            }
        };
        match oid.as_str() {
            OID_BL => c.bootloader = int()?,
            OID_TEE => c.tee = int()?,
            OID_SNP => c.snp = int()?,
            OID_UCODE => c.microcode = int()?,
            OID_FMC => c.fmc = int()?,
            OID_HWID => {
                let os = x509_cert::der::asn1::OctetString::from_der(value).map(|o| o.as_bytes().to_vec()).unwrap_or_else(|_| value.to_vec());
                c.hwid = Some(os);
            }
            _ => {}
        }
    }
    Ok(c)
}

/// The key that signed the report certifies one TCB: it must be the one the report calls
/// REPORTED_TCB, for a VCEK and for a VLEK alike (spec 57230: both carry the bootloader, TEE,
/// SNP and microcode SPL extensions, Turin's also FMC). A VCEK also certifies one chip: when it
/// names a hardware ID, it must be the report's CHIP_ID.
pub fn check_certified(report: &Report, generation: Generation, c: &Certified) -> Result<(), Rejection> {
    let key = if report.signing_key == 1 { "VLEK" } else { "VCEK" };
    let tcb = report.reported_tcb(generation);
    let need = |v: Option<u8>, name: &'static str| v.ok_or_else(|| Rejection::new("certified TCB", format!("the {key}'s {name} SPL extension"), "none"));
    let cert_tcb = Tcb {
        fmc: if generation == Generation::Turin { need(c.fmc, "FMC")? } else { 0 },
        bootloader: need(c.bootloader, "bootloader")?,
        tee: need(c.tee, "TEE")?,
        snp: need(c.snp, "SNP")?,
        microcode: need(c.microcode, "microcode")?,
    };
    if cert_tcb != tcb {
        return Err(Rejection::new("reported TCB", format!("the {key}'s TCB {cert_tcb:?}"), format!("{tcb:?}")));
    }
    if report.signing_key == 0 {
        if let Some(hwid) = &c.hwid {
            let n = hwid.len().min(64);
            if report.chip_id[..n] != hwid[..n] {
                return Err(Rejection::new("chip id", hex::encode(hwid), hex::encode(report.chip_id)));
            }
        }
    }
    Ok(())
}

/// Verifies a report's signature and chain, and the VCEK's extensions against it.
///
/// `chain`: the ASK/ARK the host supplied (optional). Whatever is supplied, the ARK must be the
/// pinned ARK of the generation: a supplied chain can only ever select, never replace, the root.
pub fn verify(raw: &[u8], vek_der: &[u8], chain: Option<&ca::Chain>) -> Result<Verified, Rejection> {
    let report = Report::parse(raw)?;
    if report.signing_key > 1 {
        return Err(Rejection::new("signing key", "0 (VCEK) or 1 (VLEK)", report.signing_key.to_string()));
    }
    let vek = if vek_der.starts_with(b"-----BEGIN") { Certificate::from_pem(vek_der) } else { Certificate::from_der(vek_der) }
        .map_err(|e| Rejection::new("VCEK", "a DER or PEM certificate", e.to_string()))?;
    // Which generations to try: the one the report names, else all.
    let candidates: Vec<Generation> = match report.generation() {
        Some(g) => vec![g],
        None => Generation::ALL.to_vec(),
    };
    let mut generation = None;
    let mut last_err = String::new();
    for g in candidates.iter().copied() {
        let pinned = g.pinned();
        let ca = match chain {
            Some(c) => {
                if c.ark != pinned.ark {
                    last_err = format!("the supplied ARK is not AMD's {} ARK", g.name());
                    continue;
                }
                c.clone()
            }
            None => pinned,
        };
        match (&Chain { ca, vek: vek.clone() }).verify() {
            Ok(_) => {
                generation = Some(g);
                break;
            }
            Err(e) => last_err = format!("{} chain: {e}", g.name()),
        }
    }
    let generation = generation.ok_or_else(|| {
        let names: Vec<&str> = candidates.iter().map(|g| g.name()).collect();
        Rejection::new("certificate chain", format!("VCEK signed by AMD's pinned {} root", names.join("/")), last_err)
    })?;
    // The signature over the raw bytes, not a re-encoding of parsed fields.
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(vek.public_key_sec1())
        .map_err(|e| Rejection::new("VCEK", "a P-384 public key", e.to_string()))?;
    let sig = report.signature()?;
    key.verify(&raw[..SIGNED_LEN], &sig)
        .map_err(|_| Rejection::new("signature", "the VCEK's signature over the report", "a signature that does not verify"))?;
    // The key certifies one TCB (and a VCEK one chip): it must be the one reported.
    check_certified(&report, generation, &certified(&vek)?)?;
    let tcb = report.reported_tcb(generation);
    Ok(Verified { report, generation, tcb })
}

/// Applies the verifier's policy to a report: the policy stage alone, callable on any parsed
/// report (the signature and chain are [`verify`]'s; tests edit a real report's fields and call
/// this on the result). Order: measurement and report data, then the guest policy, VMPL,
/// migration agent, platform info, and the TCB floor.
pub fn check_policy(v: &Verified, p: &Policy) -> Result<(), Rejection> {
    let r = &v.report;
    p.check_measurement_and_report_data("measurement", &r.measurement, &r.report_data)?;
    if !p.allow_debug && r.policy & POLICY_DEBUG != 0 {
        return Err(Rejection::new("debug policy", "debugging disallowed (policy bit 19 clear)", format!("policy {:#x}", r.policy)));
    }
    // Bits 0..15 are the minimum ABI version the guest owner asked the firmware for (enforced by
    // the PSP at launch); from 16 up, only what the policy allows. Bit 17 must be one.
    let allowed = p.allowed_policy_bits | if p.allow_debug { POLICY_DEBUG } else { 0 };
    let extra = (r.policy >> 16 << 16) & !allowed;
    if extra != 0 || r.policy & POLICY_RESERVED_1 == 0 {
        return Err(Rejection::new("guest policy bits", format!("only {allowed:#x} above the ABI version (bit 17 set)"), format!("{:#x} (refused: {extra:#x})", r.policy)));
    }
    if p.require_vmpl0 && r.vmpl != 0 {
        return Err(Rejection::new("VMPL", "0", r.vmpl.to_string()));
    }
    if p.require_no_migration_agent && r.report_id_ma != [0xFF; 32] {
        return Err(Rejection::new("REPORT_ID_MA", "all ones (no migration agent)", hex::encode(r.report_id_ma)));
    }
    if r.platform_info & p.required_platform_info != p.required_platform_info {
        return Err(Rejection::new("platform info", format!("bits {:#x} set", p.required_platform_info), format!("{:#x}", r.platform_info)));
    }
    let Some(min) = p.min_tcb_for(v.generation) else {
        return Err(Rejection::new(
            "TCB floor",
            format!("a minimum TCB for {} (none is built in: no real {} evidence to take it from; give min_tcb in a --policy file or --min-tcb)", v.generation.name(), v.generation.name()),
            format!("{:?}", v.tcb),
        ));
    };
    let t = v.tcb;
    for (name, have, want) in [
        ("TCB fmc", t.fmc, min.fmc),
        ("TCB bootloader", t.bootloader, min.bootloader),
        ("TCB tee", t.tee, min.tee),
        ("TCB snp", t.snp, min.snp),
        ("TCB microcode", t.microcode, min.microcode),
    ] {
        if have < want {
            return Err(Rejection::new(name, format!(">= {want}"), have.to_string()));
        }
    }
    Ok(())
}
