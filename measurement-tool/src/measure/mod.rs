//! Launch measurements, computed from an image without hardware:
//!
//! - [`footer`]: the OVMF-style GUID table at the end of a firmware image, read as QEMU reads it.
//! - [`snp`]: the SEV-SNP launch digest (SNP firmware ABI, `SNP_LAUNCH_UPDATE` PAGE_INFO chain).
//! - [`tdx`]: the TDX MRTD (TDX module ABI, `TDH.MEM.PAGE.ADD` / `TDH.MR.EXTEND`).
pub mod footer;
pub mod snp;
pub mod tdx;

/// Why an image cannot be measured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeasureError {
    #[error("the image is {0} bytes: not a whole number of 4 KiB pages")]
    NotPageAligned(usize),
    #[error("the image has no GUID footer table (no {0} GUID 32 bytes before its end)")]
    NoFooterTable(&'static str),
    #[error("the footer table is malformed: {0}")]
    BadFooterTable(String),
    #[error("the image has no {0} entry in its footer table")]
    MissingEntry(&'static str),
    #[error("the {what} is malformed: {why}")]
    BadMetadata { what: &'static str, why: String },
    #[error("section {index} ({gpa:#x}, {size:#x} bytes) {why}")]
    BadSection { index: usize, gpa: u64, size: u64, why: String },
    #[error("unknown vCPU type {0}")]
    UnknownVcpuType(String),
}
