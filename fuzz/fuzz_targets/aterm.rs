//! The ATerm parser on arbitrary bytes: never panics, and whatever it accepts prints back to
//! exactly the same bytes.
#![no_main]
use agent::nix::derivation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = derivation::parse(data) {
        assert_eq!(derivation::print(&d).as_bytes(), data);
    }
});
