//! The `aterm` target: see `agent_fuzz::aterm` (fuzz/src/lib.rs) and docs/fuzzing.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_fuzz::aterm(data));
