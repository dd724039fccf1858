//! The NAR parser on arbitrary bytes: never panics, and whatever it accepts serialises back to
//! exactly the same bytes (a NAR has one canonical form).
#![no_main]
use agent::nix::nar::{Limits, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_contents: 1 << 20, ..Limits::default() };
    if let Ok(t) = Tree::from_nar(data, limits) {
        assert_eq!(t.to_nar(), data);
    }
});
