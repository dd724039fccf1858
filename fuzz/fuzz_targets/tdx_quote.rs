//! The TDX quote parser on arbitrary bytes: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dcap_qvl::quote::Quote::parse(data);
});
