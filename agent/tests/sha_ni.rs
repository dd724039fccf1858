//! The image's SHA-NI block function (agent/src/arch/sha256.rs, compiled here for the host)
//! against the portable one, on random states and messages. Needs a host CPU with SHA-NI
//! (/proc/cpuinfo `sha_ni`); says so and passes without checking elsewhere.
#![cfg(target_arch = "x86_64")]

#[allow(dead_code)]
#[path = "../src/arch/sha256.rs"]
mod arch_sha256;

use agent::sha256::{Sha256, SOFTWARE};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

fn host_has_sha_ni() -> bool {
    let has = std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1") && std::is_x86_feature_detected!("ssse3");
    assert_eq!(has, arch_sha256::supported(), "the image's CPUID check disagrees with std's detection");
    if !has {
        eprintln!("SKIPPED: this host's CPU has no SHA-NI (no sha_ni in /proc/cpuinfo)");
    }
    has
}

#[test]
fn sha_ni_block_function_equals_the_portable_one() {
    if !host_has_sha_ni() {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let mut state: [u32; 8] = core::array::from_fn(|_| rng.next() as u32);
        let n = (rng.next() % 5) as usize;
        let blocks: Vec<[u8; 64]> = (0..n).map(|_| core::array::from_fn(|_| rng.next() as u8)).collect();
        let mut want = state;
        (SOFTWARE.blocks)(&mut want, &blocks);
        // SAFETY: the CPU has SHA-NI (checked above); the host's Rust keeps no data in XMM
        // registers across this call that the function does not declare it clobbers.
        unsafe { arch_sha256::compress(&mut state, &blocks) };
        assert_eq!(state, want, "round {round}, {n} blocks");
    }
}

#[test]
fn whole_digests_with_sha_ni_equal_published_and_portable_ones() {
    if !host_has_sha_ni() {
        return;
    }
    fn hw(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
        // SAFETY: only called after the check above.
        unsafe { arch_sha256::compress(state, blocks) }
    }
    let b = agent::sha256::Backend { name: "SHA-NI", blocks: hw };
    let digest = |data: &[u8]| {
        let mut h = Sha256::with(b);
        h.update(data);
        h.finalize()
    };
    // FIPS 180-4 example "abc".
    assert_eq!(
        digest(b"abc"),
        [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96,
            0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
        ]
    );
    let mut rng = Rng(42);
    for len in (0..4096).step_by(37) {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut soft = Sha256::with(SOFTWARE);
        soft.update(&data);
        assert_eq!(digest(&data), soft.finalize(), "len {len}");
    }
}
