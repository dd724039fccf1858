//! The `snp_report` target: see `agent_fuzz::snp_report` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::snp_report(data));
