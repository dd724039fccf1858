//! The GUID footer table OVMF ends with, as QEMU (`hw/i386/pc_sysfw_ovmf.c`) and sev-snp-measure
//! read it: 32 bytes before the end of the image sits a footer entry (u16 total table size, then
//! the footer GUID); entries run backwards from there, each `[data][u16 size][GUID]`.
use super::MeasureError;
use std::collections::BTreeMap;

pub const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
pub const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
pub const SEV_METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
pub const TDX_METADATA_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";

/// A GUID's mixed-endian byte form (`uuid.bytes_le`, EFI_GUID in memory).
pub fn guid_bytes(guid: &str) -> [u8; 16] {
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
}

fn guid_string(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// GUID → entry data.
pub type Table = BTreeMap<String, Vec<u8>>;

const ENTRY_HEADER: usize = 18; // u16 size + GUID

/// Parses the footer table; an image without one is an error.
pub fn parse(image: &[u8]) -> Result<Table, MeasureError> {
    if image.len() < 32 + ENTRY_HEADER {
        return Err(MeasureError::NoFooterTable(FOOTER_GUID));
    }
    let footer_at = image.len() - 32 - ENTRY_HEADER;
    let footer = &image[footer_at..footer_at + ENTRY_HEADER];
    if footer[2..] != guid_bytes(FOOTER_GUID) {
        return Err(MeasureError::NoFooterTable(FOOTER_GUID));
    }
    let total = u16::from_le_bytes([footer[0], footer[1]]) as usize;
    let table_size = total.checked_sub(ENTRY_HEADER).ok_or_else(|| MeasureError::BadFooterTable("size smaller than its header".into()))?;
    let start = footer_at.checked_sub(table_size).ok_or_else(|| MeasureError::BadFooterTable("size runs past the start of the image".into()))?;
    let mut rest = &image[start..footer_at];
    let mut table = Table::new();
    while rest.len() >= ENTRY_HEADER {
        let h = &rest[rest.len() - ENTRY_HEADER..];
        let size = u16::from_le_bytes([h[0], h[1]]) as usize;
        if size < ENTRY_HEADER || size > rest.len() {
            return Err(MeasureError::BadFooterTable(format!("entry {} has size {size}", guid_string(&h[2..]))));
        }
        table.insert(guid_string(&h[2..]), rest[rest.len() - size..rest.len() - ENTRY_HEADER].to_vec());
        rest = &rest[..rest.len() - size];
    }
    if !rest.is_empty() {
        return Err(MeasureError::BadFooterTable(format!("{} stray bytes", rest.len())));
    }
    Ok(table)
}

/// Reads a u32 at the start of an entry (offsets and addresses).
pub fn entry_u32(table: &Table, guid: &str, name: &'static str) -> Result<u32, MeasureError> {
    let e = table.get(guid).ok_or(MeasureError::MissingEntry(name))?;
    let b: [u8; 4] = e.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| MeasureError::BadMetadata { what: name, why: "entry shorter than 4 bytes".into() })?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip() {
        assert_eq!(guid_string(&guid_bytes(FOOTER_GUID)), FOOTER_GUID);
    }
}
