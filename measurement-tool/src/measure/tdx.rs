//! The TDX MRTD of a firmware image as QEMU builds a TD from it (Intel TDX module ABI:
//! `TDH.MEM.PAGE.ADD` extends MRTD with a 128-byte buffer "MEM.PAGE.ADD" + GPA;
//! `TDH.MR.EXTEND` with "MR.EXTEND" + GPA followed by 256 bytes of the page; TDVF design guide
//! §11 for the metadata). QEMU (`target/i386/kvm/tdx.c: tdx_finalize_vm`) adds every section
//! page by page in metadata order and extends MRTD with the page contents when the section has
//! the MR.EXTEND attribute; a BFV/CFV page's contents are the image's bytes from DataOffset,
//! for all of MemoryDataSize (not zero past RawDataSize). PAGE.AUG sections are not added at
//! build time.
use super::footer;
use super::MeasureError;
use sha2::{Digest, Sha384};

pub const PAGE: usize = 4096;
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
pub const ATTR_PAGE_AUG: u32 = 1 << 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub data_offset: u32,
    pub raw_data_size: u32,
    pub memory_address: u64,
    pub memory_data_size: u64,
    /// 0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem, 4 PermMem, 5 Payload, 6 PayloadParam.
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
        if s.memory_address % PAGE as u64 != 0 || s.memory_data_size % PAGE as u64 != 0 || s.memory_data_size == 0 {
            return Err(err("is not a whole number of pages"));
        }
        if u64::from(s.raw_data_size) > s.memory_data_size {
            return Err(err("has more raw data than memory"));
        }
        if s.data_offset as usize + s.raw_data_size as usize > image.len() {
            return Err(err("has raw data outside the image"));
        }
        if s.attributes & ATTR_MR_EXTEND != 0 && s.data_offset as u64 + s.memory_data_size > image.len() as u64 {
            return Err(err("is extended from bytes past the end of the image"));
        }
        if s.kind > 6 {
            return Err(err(&format!("has unknown type {}", s.kind)));
        }
        for (j, o) in out.iter().enumerate() {
            if s.memory_address < o.memory_address + o.memory_data_size && o.memory_address < s.memory_address + s.memory_data_size {
                return Err(err(&format!("overlaps section {j}")));
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// MRTD of `image`.
pub fn mrtd(image: &[u8]) -> Result<[u8; 48], MeasureError> {
    if image.is_empty() || image.len() % PAGE != 0 {
        return Err(MeasureError::NotPageAligned(image.len()));
    }
    let sections = metadata(image)?;
    let mut h = Sha384::new();
    for s in &sections {
        if s.attributes & ATTR_PAGE_AUG != 0 {
            continue;
        }
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
