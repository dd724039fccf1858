//! The `bundle` target: see `agent_fuzz::bundle` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::bundle(data));
