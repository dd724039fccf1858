//! The `drv_set` target: see `agent_fuzz::drv_set` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::drv_set(data));
