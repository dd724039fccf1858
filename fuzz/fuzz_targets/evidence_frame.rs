//! The `evidence_frame` target: see `agent_fuzz::evidence_frame` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::evidence_frame(data));
