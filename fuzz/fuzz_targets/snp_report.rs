//! The SEV-SNP report parser and verifier on arbitrary bytes: never panics, never accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use measurement_tool::evidence::snp;

const VCEK: &[u8] = include_bytes!("../../tests/vectors/snp/vcek_milan.der");

fuzz_target!(|data: &[u8]| {
    let _ = snp::Report::parse(data);
    if data.len() == snp::REPORT_LEN {
        assert!(snp::verify(data, VCEK, None).is_err());
    }
});
