//! The SEV-SNP launch digest of a firmware image as QEMU launches it (AMD SEV-SNP firmware ABI
//! §8.17 `SNP_LAUNCH_UPDATE`: each page extends the digest with a PAGE_INFO structure; sev-snp-
//! measure is the independent reference the tests compare with).
//!
//! Order (QEMU `sev_snp_launch_update` / `sev_snp_launch_finish`): every page of the firmware
//! (type NORMAL, contents hashed), then the metadata sections the image declares (zero, secrets,
//! CPUID pages), then one VMSA per vCPU (type VMSA, at the fixed GPA 0xFFFFFFFFF000).
use super::footer::{self, Table};
use super::MeasureError;
use sha2::{Digest, Sha384};

pub const PAGE: usize = 4096;
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// SEV metadata section types (OVMF `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionType {
    SnpSecMem = 1,
    SnpSecrets = 2,
    Cpuid = 3,
    SvsmCaa = 4,
    KernelHashes = 0x10,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub gpa: u32,
    pub size: u32,
    pub kind: SectionType,
}

/// The SEV metadata (`ASEV`, version 1) the footer table points at. An image whose table has
/// no SEV metadata entry has no sections (QEMU then validates nothing up front; sev-snp-measure
/// agrees).
pub fn metadata(image: &[u8], table: &Table) -> Result<Vec<Section>, MeasureError> {
    if !table.contains_key(footer::SEV_METADATA_GUID) {
        return Ok(Vec::new());
    }
    let what = "SEV metadata";
    let bad = |why: String| MeasureError::BadMetadata { what, why };
    let from_end = footer::entry_u32(table, footer::SEV_METADATA_GUID, "SEV metadata")? as usize;
    let start = image.len().checked_sub(from_end).ok_or_else(|| bad(format!("offset {from_end} is outside the image")))?;
    let header = image.get(start..start + 16).ok_or_else(|| bad("truncated header".into()))?;
    if &header[0..4] != b"ASEV" {
        return Err(bad("signature is not ASEV".into()));
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let (size, version, count) = (u32_at(header, 4) as usize, u32_at(header, 8), u32_at(header, 12) as usize);
    if version != 1 {
        return Err(bad(format!("version {version}")));
    }
    if size != 16 + 12 * count {
        return Err(bad(format!("size {size} does not match {count} sections")));
    }
    let items = image.get(start + 16..start + size).ok_or_else(|| bad("truncated sections".into()))?;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let (gpa, len, kind) = (u32_at(items, 12 * i), u32_at(items, 12 * i + 4), u32_at(items, 12 * i + 8));
        let kind = match kind {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::KernelHashes,
            t => return Err(MeasureError::BadSection { index: i, gpa: gpa.into(), size: len.into(), why: format!("has unknown type {t}") }),
        };
        let err = |why: &str| MeasureError::BadSection { index: i, gpa: gpa.into(), size: len.into(), why: why.into() };
        if !(gpa as usize).is_multiple_of(PAGE) || !(len as usize).is_multiple_of(PAGE) || len == 0 {
            return Err(err("is not a whole number of pages"));
        }
        if u64::from(gpa) + u64::from(len) > 1 << 32 {
            return Err(err("runs past 4 GiB"));
        }
        if matches!(kind, SectionType::SnpSecrets | SectionType::Cpuid) && len as usize != PAGE {
            return Err(err("must be exactly one page"));
        }
        let image_gpa = (1u64 << 32) - image.len() as u64;
        if u64::from(gpa) + u64::from(len) > image_gpa {
            return Err(err("overlaps the firmware image"));
        }
        for (j, s) in sections.iter().enumerate() {
            let s: &Section = s;
            if u64::from(gpa) < u64::from(s.gpa) + u64::from(s.size) && u64::from(s.gpa) < u64::from(gpa) + u64::from(len) {
                return Err(err(&format!("overlaps section {j}")));
            }
        }
        sections.push(Section { gpa, size: len, kind });
    }
    Ok(sections)
}

/// The launch digest being built: `LD' = SHA-384(PAGE_INFO)` with PAGE_INFO = LD, contents,
/// length 0x70, page type, IMI 0, VMPL permissions 0, GPA (ABI spec table "PAGE_INFO").
pub struct Digest384([u8; 48]);

impl Digest384 {
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.0);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0 = Sha384::digest(info).into();
    }
    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE).enumerate() {
            self.update(0x01, gpa + (i * PAGE) as u64, &Sha384::digest(page).into());
        }
    }
    fn zero_pages(&mut self, gpa: u64, len: u64) {
        for off in (0..len).step_by(PAGE) {
            self.update(0x03, gpa + off, &[0; 48]);
        }
    }
}

/// vCPU types QEMU offers for SEV guests, as CPUID Fn0000_0001_EAX signatures.
pub fn vcpu_signature(ty: &str) -> Result<u32, MeasureError> {
    let sig = |family: u32, model: u32, stepping: u32| {
        let (fl, fh) = if family > 0xf { (0xf, (family - 0xf) & 0xff) } else { (family, 0) };
        (fh << 20) | (((model >> 4) & 0xf) << 16) | (fl << 8) | ((model & 0xf) << 4) | (stepping & 0xf)
    };
    Ok(match ty {
        "EPYC" | "EPYC-v1" | "EPYC-v2" | "EPYC-IBPB" | "EPYC-v3" | "EPYC-v4" => sig(23, 1, 2),
        "EPYC-Rome" | "EPYC-Rome-v1" | "EPYC-Rome-v2" | "EPYC-Rome-v3" => sig(23, 49, 0),
        "EPYC-Milan" | "EPYC-Milan-v1" | "EPYC-Milan-v2" => sig(25, 1, 1),
        "EPYC-Genoa" | "EPYC-Genoa-v1" => sig(25, 17, 0),
        "EPYC-Turin" => sig(26, 0, 0),
        other => return Err(MeasureError::UnknownVcpuType(other.into())),
    })
}

/// The VMSA (SEV-ES save area) QEMU/KVM give a vCPU at reset, starting at `eip` (real mode, CS
/// base = eip & 0xFFFF0000). Offsets are those of the save area in the AMD APM vol. 2, B.
pub fn vmsa(eip: u32, vcpu_sig: u32, guest_features: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAGE];
    let seg = |v: &mut Vec<u8>, off: usize, sel: u16, attr: u16, limit: u32, base: u64| {
        v[off..off + 2].copy_from_slice(&sel.to_le_bytes());
        v[off + 2..off + 4].copy_from_slice(&attr.to_le_bytes());
        v[off + 4..off + 8].copy_from_slice(&limit.to_le_bytes());
        v[off + 8..off + 16].copy_from_slice(&base.to_le_bytes());
    };
    let u64_at = |v: &mut Vec<u8>, off: usize, x: u64| v[off..off + 8].copy_from_slice(&x.to_le_bytes());
    seg(&mut v, 0x000, 0, 0x93, 0xffff, 0); // es
    seg(&mut v, 0x010, 0xf000, 0x9b, 0xffff, u64::from(eip & 0xffff_0000)); // cs
    seg(&mut v, 0x020, 0, 0x93, 0xffff, 0); // ss
    seg(&mut v, 0x030, 0, 0x93, 0xffff, 0); // ds
    seg(&mut v, 0x040, 0, 0x93, 0xffff, 0); // fs
    seg(&mut v, 0x050, 0, 0x93, 0xffff, 0); // gs
    seg(&mut v, 0x060, 0, 0, 0xffff, 0); // gdtr
    seg(&mut v, 0x070, 0, 0x82, 0xffff, 0); // ldtr
    seg(&mut v, 0x080, 0, 0, 0xffff, 0); // idtr
    seg(&mut v, 0x090, 0, 0x8b, 0xffff, 0); // tr
    u64_at(&mut v, 0x0D0, 0x1000); // efer: SVME (KVM)
    u64_at(&mut v, 0x148, 0x40); // cr4: MCE (KVM)
    u64_at(&mut v, 0x158, 0x10); // cr0: ET
    u64_at(&mut v, 0x160, 0x400); // dr7
    u64_at(&mut v, 0x168, 0xffff_0ff0); // dr6
    u64_at(&mut v, 0x170, 0x2); // rflags
    u64_at(&mut v, 0x178, u64::from(eip & 0xffff)); // rip
    u64_at(&mut v, 0x268, 0x0007_0406_0007_0406); // g_pat (APM vol. 2 A.3)
    u64_at(&mut v, 0x310, u64::from(vcpu_sig)); // rdx: CPUID signature
    u64_at(&mut v, 0x3B0, guest_features); // sev_features
    u64_at(&mut v, 0x3E8, 0x1); // xcr0
    v[0x408..0x40C].copy_from_slice(&0x1f80u32.to_le_bytes()); // mxcsr
    v[0x410..0x412].copy_from_slice(&0x037fu16.to_le_bytes()); // x87 fcw
    v
}

/// The launch digest of `image` with `vcpus` vCPUs.
pub fn launch_digest(image: &[u8], vcpus: u32, vcpu_sig: u32, guest_features: u64) -> Result<[u8; 48], MeasureError> {
    if image.is_empty() || !image.len().is_multiple_of(PAGE) {
        return Err(MeasureError::NotPageAligned(image.len()));
    }
    let table = footer::parse(image)?;
    let sections = metadata(image, &table)?;
    let ap_eip = footer::entry_u32(&table, footer::SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")?;
    let mut ld = Digest384([0; 48]);
    ld.normal_pages((1u64 << 32) - image.len() as u64, image);
    for s in &sections {
        match s.kind {
            SectionType::SnpSecMem | SectionType::SvsmCaa | SectionType::KernelHashes => ld.zero_pages(s.gpa.into(), s.size.into()),
            SectionType::SnpSecrets => ld.update(0x05, s.gpa.into(), &[0; 48]),
            SectionType::Cpuid => ld.update(0x06, s.gpa.into(), &[0; 48]),
        }
    }
    for i in 0..vcpus {
        let eip = if i == 0 { 0xffff_fff0 } else { ap_eip };
        ld.update(0x02, VMSA_GPA, &Sha384::digest(vmsa(eip, vcpu_sig, guest_features)).into());
    }
    Ok(ld.0)
}
