//! The `nar_unpack` target: see `agent_fuzz::nar_unpack` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::nar_unpack(data));
