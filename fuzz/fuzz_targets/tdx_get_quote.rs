//! The `tdx_get_quote` target: see `agent_fuzz::tdx_get_quote` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::tdx_get_quote(data));
