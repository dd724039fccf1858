//! The TDX MRTD of a firmware image as QEMU builds a TD from it.
//!
//! Intel TDX module ABI: `TDH.MEM.PAGE.ADD` extends MRTD (SHA-384) with a 128-byte buffer
//! "MEM.PAGE.ADD" + GPA (bytes 16..24, little-endian); `TDH.MR.EXTEND` with a 128-byte buffer
//! "MR.EXTEND" + GPA followed by 256 bytes of the page. The TDVF design guide (§11) defines the
//! metadata. QEMU (`hw/i386/tdvf.c: tdvf_parse_and_check_section_entry`,
//! `target/i386/kvm/tdx.c: tdx_finalize_vm`, `tdx_init_fw_mem_region`) loads sections of the
//! four types it knows, in metadata order, each with one `KVM_TDX_INIT_MEM_REGION`; KVM
//! (`arch/x86/kvm/vmx/tdx.c: tdx_gmem_post_populate`) adds each page and, for a section with the
//! MR.EXTEND attribute, extends it in 16 chunks right after. A BFV/CFV page's contents are the
//! image's bytes from DataOffset, for all of MemoryDataSize (not zero past RawDataSize).
//!
//! Images QEMU would refuse, and the two cases where what QEMU does is not what the TDVF guide
//! or other tools assume (PAGE.AUG, which QEMU ignores and adds anyway; MR.EXTEND of a TD_HOB or
//! TempMem section, whose contents are the VMM's), are refused rather than measured.
use super::footer;
use super::MeasureError;
use sha2::{Digest, Sha384};

pub const PAGE: usize = 4096;
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
pub const ATTR_PAGE_AUG: u32 = 1 << 1;
pub const BFV: u32 = 0;
pub const CFV: u32 = 1;
pub const TD_HOB: u32 = 2;
pub const TEMP_MEM: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub data_offset: u32,
    pub raw_data_size: u32,
    pub memory_address: u64,
    pub memory_data_size: u64,
    /// `BFV`, `CFV` (bytes from the image), `TD_HOB`, `TEMP_MEM` (memory the VMM provides): the
    /// types QEMU loads. The guide's later types (PermMem, Payload, ...) are refused.
    pub kind: u32,
    pub attributes: u32,
}

/// The TDVF metadata descriptor (`TDVF`, version 1) the footer table points at.
pub fn metadata(image: &[u8]) -> Result<Vec<Section>, MeasureError> {
    let what = "TDX metadata";
    let bad = |why: String| MeasureError::BadMetadata { what, why };
    let table = footer::parse(image)?;
    let from_end = footer::entry_u32(&table, footer::TDX_METADATA_GUID, "TDX metadata")? as usize;
    let start = image.len().checked_sub(from_end).ok_or_else(|| bad(format!("offset {from_end} is outside the image")))?;
    let h = image.get(start..start + 16).ok_or_else(|| bad("truncated descriptor".into()))?;
    if &h[0..4] != b"TDVF" {
        return Err(bad("signature is not TDVF".into()));
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let (len, version, count) = (u32_at(h, 4) as usize, u32_at(h, 8), u32_at(h, 12) as usize);
    if version != 1 {
        return Err(bad(format!("version {version}")));
    }
    if len != 16 + 32 * count {
        return Err(bad(format!("length {len} does not match {count} sections")));
    }
    let items = image.get(start + 16..start + len).ok_or_else(|| bad("truncated sections".into()))?;
    let mut out: Vec<Section> = Vec::with_capacity(count);
    for i in 0..count {
        let e = &items[32 * i..32 * i + 32];
        let s = Section {
            data_offset: u32_at(e, 0),
            raw_data_size: u32_at(e, 4),
            memory_address: u64_at(e, 8),
            memory_data_size: u64_at(e, 16),
            kind: u32_at(e, 24),
            attributes: u32_at(e, 28),
        };
        let err = |why: &str| MeasureError::BadSection { index: i, gpa: s.memory_address, size: s.memory_data_size, why: why.into() };
        if !s.memory_address.is_multiple_of(PAGE as u64) || !s.memory_data_size.is_multiple_of(PAGE as u64) || s.memory_data_size == 0 {
            return Err(err("is not a whole number of pages"));
        }
        let end = s.memory_address.checked_add(s.memory_data_size).ok_or_else(|| err("runs past the top of the address space"))?;
        if u64::from(s.raw_data_size) > s.memory_data_size {
            return Err(err("has more raw data than memory"));
        }
        match s.kind {
            BFV | CFV => {
                if s.raw_data_size == 0 {
                    return Err(err("is a BFV/CFV with no raw data (QEMU refuses it)"));
                }
                // QEMU copies MemoryDataSize bytes of the image from DataOffset.
                if u64::from(s.data_offset) + s.memory_data_size > image.len() as u64 {
                    return Err(err("is loaded from bytes past the end of the image"));
                }
            }
            TD_HOB | TEMP_MEM => {
                if s.raw_data_size != 0 {
                    return Err(err("is a TD_HOB/TempMem with raw data (QEMU refuses it)"));
                }
                if s.attributes & ATTR_MR_EXTEND != 0 {
                    return Err(err("extends MRTD with memory the VMM fills, not the image"));
                }
            }
            k => return Err(err(&format!("has type {k}, which QEMU does not load"))),
        }
        if s.attributes & ATTR_PAGE_AUG != 0 {
            return Err(err("has the PAGE.AUG attribute, which QEMU ignores (it adds the pages anyway), unlike the TDVF guide"));
        }
        for (j, o) in out.iter().enumerate() {
            if s.memory_address < o.memory_address + o.memory_data_size && o.memory_address < end {
                return Err(err(&format!("overlaps section {j}")));
            }
        }
        out.push(s);
    }
    // QEMU (`tdvf_parse_metadata`, `tdx_get_hob_entry`) wants two sections or more, one a TD HOB.
    if count < 2 || !out.iter().any(|s| s.kind == TD_HOB) {
        return Err(bad(format!("{count} section(s), {} TD_HOB: QEMU wants two or more, one a TD_HOB", out.iter().filter(|s| s.kind == TD_HOB).count())));
    }
    Ok(out)
}

/// MRTD of `image`.
pub fn mrtd(image: &[u8]) -> Result<[u8; 48], MeasureError> {
    if image.is_empty() || !image.len().is_multiple_of(PAGE) {
        return Err(MeasureError::NotPageAligned(image.len()));
    }
    let sections = metadata(image)?;
    let mut h = Sha384::new();
    for s in &sections {
        for off in (0..s.memory_data_size).step_by(PAGE) {
            let gpa = s.memory_address + off;
            let mut buf = [0u8; 128];
            buf[..12].copy_from_slice(b"MEM.PAGE.ADD");
            buf[16..24].copy_from_slice(&gpa.to_le_bytes());
            h.update(buf);
            if s.attributes & ATTR_MR_EXTEND != 0 {
                // QEMU hands KVM the image from DataOffset for MemoryDataSize bytes, whatever
                // RawDataSize says, so these are the page's bytes (checked in range by metadata).
                let from = s.data_offset as usize + off as usize;
                let page = &image[from..from + PAGE];
                for (k, chunk) in page.chunks(256).enumerate() {
                    let mut buf = [0u8; 128];
                    buf[..9].copy_from_slice(b"MR.EXTEND");
                    buf[16..24].copy_from_slice(&(gpa + 256 * k as u64).to_le_bytes());
                    h.update(buf);
                    h.update(chunk);
                }
            }
        }
    }
    Ok(h.finalize().into())
}
