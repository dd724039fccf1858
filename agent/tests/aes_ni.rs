//! The image's AES-NI key expansion and block encryption (agent/src/arch/aes.rs, compiled here
//! for the host) against the `aes` crate, on random keys and blocks and FIPS-197's AES-256
//! example; and AES-256-GCM through `agent::aes` with it against `aes_gcm::Aes256Gcm`. Needs a
//! host CPU with AES-NI (/proc/cpuinfo `aes`); says so and passes without checking elsewhere.
#![cfg(target_arch = "x86_64")]

#[allow(dead_code)]
#[path = "../src/arch/aes.rs"]
mod arch_aes;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::cipher::BlockEncrypt;
use agent::aes::{Backend, Engine, RoundKeys};

/// The image's functions as an `agent::aes` backend, as `arch_aes::init` registers them.
const AES_NI: Backend = Backend { name: "AES-NI", engine: Engine::RoundKeys { expand: hw_expand, encrypt: hw_encrypt } };

fn hw_expand(key: &[u8; 32], keys: &mut RoundKeys) {
    // SAFETY: only used after `host_has_aes_ni()`; the host's Rust keeps no data in XMM
    // registers across the call that the function does not declare it clobbers (System V: all).
    unsafe { arch_aes::expand(key, keys) }
}

fn hw_encrypt(keys: &RoundKeys, blocks: &mut [[u8; 16]]) {
    // SAFETY: as in `hw_expand`.
    unsafe { arch_aes::encrypt(keys, blocks) }
}

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

fn host_has_aes_ni() -> bool {
    let has = std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse2");
    assert_eq!(has, arch_aes::supported(), "the image's CPUID check disagrees with std's detection");
    if !has {
        eprintln!("SKIPPED: this host's CPU has no AES-NI (no aes in /proc/cpuinfo)");
    }
    has
}

/// The `aes` crate's AES-256 of each block.
fn reference(key: &[u8; 32], blocks: &[[u8; 16]]) -> Vec<[u8; 16]> {
    let cipher = aes_gcm::aes::Aes256::new(key.into());
    blocks
        .iter()
        .map(|b| {
            let mut b = (*b).into();
            cipher.encrypt_block(&mut b);
            b.into()
        })
        .collect()
}

#[test]
fn fips197_aes256_example_with_aes_ni() {
    if !host_has_aes_ni() {
        return;
    }
    // FIPS-197 Appendix C.3.
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let plaintext: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
    let want = [0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60, 0x89];
    let mut keys = [[0u8; 16]; 15];
    let mut blocks = [plaintext];
    // SAFETY: the CPU has AES-NI (checked above); the host's Rust keeps no data in XMM registers
    // across these calls that the functions do not declare they clobber (System V: all of them).
    unsafe {
        arch_aes::expand(&key, &mut keys);
        arch_aes::encrypt(&keys, &mut blocks);
    }
    assert_eq!(blocks[0], want);
    // FIPS-197 Appendix A.3 (key 603deb10 .. 0914dff4): the last round key is w[56..60].
    let key: [u8; 32] = [
        0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61,
        0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
    ];
    // SAFETY: as above.
    unsafe { arch_aes::expand(&key, &mut keys) };
    assert_eq!(keys[14], [0xfe, 0x48, 0x90, 0xd1, 0xe6, 0x18, 0x8d, 0x0b, 0x04, 0x6d, 0xf3, 0x44, 0x70, 0x6c, 0x63, 0x1e]);
    assert!(arch_aes::known_answer(AES_NI));
}

#[test]
fn aes_ni_equals_the_aes_crate_on_random_keys_and_blocks() {
    if !host_has_aes_ni() {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..4000 {
        let key: [u8; 32] = rng.bytes();
        let n = (rng.next() % 20) as usize;
        let blocks: Vec<[u8; 16]> = (0..n).map(|_| rng.bytes()).collect();
        let mut keys = [[0u8; 16]; 15];
        let mut got = blocks.clone();
        // SAFETY: as in the test above.
        unsafe {
            arch_aes::expand(&key, &mut keys);
            arch_aes::encrypt(&keys, &mut got);
        }
        assert_eq!(got, reference(&key, &blocks), "round {round}, {n} blocks");
        // And through the library's block cipher type (single blocks).
        let a = agent::aes::Aes256::with(AES_NI, &key);
        for (b, want) in blocks.iter().zip(reference(&key, &blocks)) {
            assert_eq!(a.encrypt(*b), want, "round {round}");
        }
    }
}

#[test]
fn aes_256_gcm_with_aes_ni_equals_aes_gcm() {
    if !host_has_aes_ni() {
        return;
    }
    let mut rng = Rng(42);
    for len in (0..3000).step_by(23) {
        let key: [u8; 32] = rng.bytes();
        let nonce: [u8; 12] = rng.bytes();
        let aad: Vec<u8> = (0..rng.next() % 64).map(|_| rng.next() as u8).collect();
        let plaintext: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();

        let mut want = plaintext.clone();
        let want_tag = aes_gcm::Aes256Gcm::new(&key.into()).encrypt_in_place_detached(&nonce.into(), &aad, &mut want).unwrap();

        let hw = agent::aes::Aes256Gcm::from(agent::aes::Aes256::with(AES_NI, &key));
        let mut got = plaintext.clone();
        let tag = hw.encrypt_in_place_detached(&nonce.into(), &aad, &mut got).unwrap();
        assert_eq!((&got, tag), (&want, want_tag), "len {len}");
        hw.decrypt_in_place_detached(&nonce.into(), &aad, &mut got, &tag).unwrap();
        assert_eq!(got, plaintext, "len {len}");
        if len > 0 {
            got[len / 2] ^= 0x80;
            assert!(hw.decrypt_in_place_detached(&nonce.into(), &aad, &mut got, &tag).is_err(), "len {len}");
        }
    }
}

/// `tee::snp::seal`/`open` (which take the registered block cipher) with AES-NI registered:
/// what one backend seals the other opens, and the bytes are the portable backend's.
#[test]
fn snp_messages_with_aes_ni_registered() {
    use agent::tee::snp::{open, seal, write_header, PAGE};
    if !host_has_aes_ni() {
        return;
    }
    let key = [0x5au8; 32];
    let mut page = [0u8; PAGE];
    write_header(&mut page, 7, 5, 1, 0x60, 0);
    page[0x60..0xC0].fill(0x33);
    let mut soft = page;
    agent::aes::set_backend(agent::aes::SOFTWARE);
    seal(&key, &mut soft).unwrap();
    arch_aes::init();
    assert_eq!(agent::aes::backend().name, "AES-NI");
    seal(&key, &mut page).unwrap();
    assert_eq!(page, soft);
    assert_eq!(open(&key, &soft).unwrap(), vec![0x33; 0x60]);
    agent::aes::set_backend(agent::aes::SOFTWARE);
    assert_eq!(open(&key, &page).unwrap(), vec![0x33; 0x60]);
}
