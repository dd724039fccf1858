//! AES-256 with the CPU's AES instructions (AES-NI: `aeskeygenassist`, `aesenc`,
//! `aesenclast`): the key expansion and block encryption behind `agent::aes`, registered at boot
//! when CPUID reports them. The library keeps GCM (RustCrypto's `aes-gcm`: counter mode and
//! GHASH) and its portable block cipher (the `aes` crate's fixsliced software AES) for CPUs
//! without.
//!
//! Vector registers: the agent is built soft-float and this, with `arch/sha256.rs`, is the only
//! ring-0 code that uses the XMM registers (SSE encodings only, never VEX: CR4.OSXSAVE stays
//! clear). A builder's x87/SSE state is saved (FXSAVE) the moment it traps to the agent and
//! restored (FXRSTOR) just before it runs again (`arch::user::run`), so the agent may use them
//! freely in between; nothing here keeps a value in a vector register across calls (both
//! functions clear the registers that held round keys before returning). Interrupts are off in
//! ring 0 and no trap handler touches vector registers, so nothing interrupts this use.
//!
//! The functions are assembly (`global_asm!`): the image's target is soft-float, so LLVM gives
//! no vector registers to Rust code even under `#[target_feature]`. Self-contained (only
//! `core::arch` and the library): `agent/tests/aes_ni.rs` assembles this file into a host test
//! and checks it against the `aes` crate on random keys and blocks.
use core::arch::x86_64::__cpuid;

/// Whether this CPU has what [`expand`] and [`encrypt`] execute: CPUID.1:ECX[25] (AES) and
/// EDX[26] (SSE2: `movdqu`, `pxor`, `pshufd`, `pslldq`). Under SEV-SNP CPUID comes from the
/// PSP-checked CPUID page, in a TD from the TDX module: a host can hide these there, never
/// invent them (and a missing instruction would be a #UD, fatal, not a wrong ciphertext).
pub fn supported() -> bool {
    let l1 = __cpuid(1);
    l1.ecx & (1 << 25) != 0 && l1.edx & (1 << 26) != 0
}

// agent_aes256_expand(key: *const [u8; 32], round_keys: *mut [[u8; 16]; 15]), System V ABI.
// FIPS-197 §5.2 for Nk = 8 (the round keys in the standard's byte order, which is how AES-NI
// loads them): xmm1 and xmm3 hold the last two round keys (words w[i-8..i-5], w[i-4..i-1]);
// `aeskeygenassist` gives SubWord(RotWord(w[i-1])) ^ Rcon in lane 3 (used after an even number
// of round keys) and SubWord(w[i-1]) in lane 2 (after an odd number); xmm2 and xmm4 scratch.
//
// agent_aes256_encrypt(round_keys: *const [[u8; 16]; 15], blocks: *mut [u8; 16], count: usize),
// System V ABI: encrypts `count` blocks in place (FIPS-197 §5.1, Nr = 14), one after another;
// the fifteen round keys in xmm1..xmm15, the block in xmm0.
//
// Unaligned loads and stores (`movdqu`) only: no alignment is asked of the caller. Legacy SSE
// encodings only.
core::arch::global_asm!(
    r#"
// w[i..i+3] from w[i-8..i-5] in \prev (updated in place) and the word \t (broadcast from
// lane \lane of xmm2): w[i] = w[i-8] ^ t, w[i+j] = w[i+j-8] ^ w[i+j-1], as a prefix XOR.
.macro aes256_words prev, lane
    pshufd xmm2, xmm2, \lane
    movdqa xmm4, \prev
    pslldq xmm4, 4
    pxor \prev, xmm4
    pslldq xmm4, 4
    pxor \prev, xmm4
    pslldq xmm4, 4
    pxor \prev, xmm4
    pxor \prev, xmm2
.endm
// Round keys 2k and 2k+1 (k = 1..6), stored at \off and \off + 16.
.macro aes256_pair rcon, off
    aeskeygenassist xmm2, xmm3, \rcon
    aes256_words xmm1, 0xFF
    movdqu [rsi + \off], xmm1
    aeskeygenassist xmm2, xmm1, 0
    aes256_words xmm3, 0xAA
    movdqu [rsi + \off + 16], xmm3
.endm

.section .text.agent_aes256_expand,"ax"
.globl agent_aes256_expand
agent_aes256_expand:
    movdqu xmm1, [rdi]
    movdqu xmm3, [rdi + 16]
    movdqu [rsi], xmm1
    movdqu [rsi + 16], xmm3
    aes256_pair 0x01, 32
    aes256_pair 0x02, 64
    aes256_pair 0x04, 96
    aes256_pair 0x08, 128
    aes256_pair 0x10, 160
    aes256_pair 0x20, 192
    // Round key 14 (the fifteenth): only the first half of a pair.
    aeskeygenassist xmm2, xmm3, 0x40
    aes256_words xmm1, 0xFF
    movdqu [rsi + 224], xmm1
    pxor xmm1, xmm1
    pxor xmm2, xmm2
    pxor xmm3, xmm3
    pxor xmm4, xmm4
    ret
.purgem aes256_words
.purgem aes256_pair

.section .text.agent_aes256_encrypt,"ax"
.globl agent_aes256_encrypt
agent_aes256_encrypt:
    movdqu xmm1, [rdi]
    movdqu xmm2, [rdi + 16]
    movdqu xmm3, [rdi + 32]
    movdqu xmm4, [rdi + 48]
    movdqu xmm5, [rdi + 64]
    movdqu xmm6, [rdi + 80]
    movdqu xmm7, [rdi + 96]
    movdqu xmm8, [rdi + 112]
    movdqu xmm9, [rdi + 128]
    movdqu xmm10, [rdi + 144]
    movdqu xmm11, [rdi + 160]
    movdqu xmm12, [rdi + 176]
    movdqu xmm13, [rdi + 192]
    movdqu xmm14, [rdi + 208]
    movdqu xmm15, [rdi + 224]
    test rdx, rdx
    jz 3f
2:
    movdqu xmm0, [rsi]
    pxor xmm0, xmm1
    aesenc xmm0, xmm2
    aesenc xmm0, xmm3
    aesenc xmm0, xmm4
    aesenc xmm0, xmm5
    aesenc xmm0, xmm6
    aesenc xmm0, xmm7
    aesenc xmm0, xmm8
    aesenc xmm0, xmm9
    aesenc xmm0, xmm10
    aesenc xmm0, xmm11
    aesenc xmm0, xmm12
    aesenc xmm0, xmm13
    aesenc xmm0, xmm14
    aesenclast xmm0, xmm15
    movdqu [rsi], xmm0
    add rsi, 16
    dec rdx
    jnz 2b
3:
    pxor xmm0, xmm0
    pxor xmm1, xmm1
    pxor xmm2, xmm2
    pxor xmm3, xmm3
    pxor xmm4, xmm4
    pxor xmm5, xmm5
    pxor xmm6, xmm6
    pxor xmm7, xmm7
    pxor xmm8, xmm8
    pxor xmm9, xmm9
    pxor xmm10, xmm10
    pxor xmm11, xmm11
    pxor xmm12, xmm12
    pxor xmm13, xmm13
    pxor xmm14, xmm14
    pxor xmm15, xmm15
    ret
.text
"#
);

unsafe extern "C" {
    fn agent_aes256_expand(key: *const [u8; 32], round_keys: *mut [[u8; 16]; 15]);
    fn agent_aes256_encrypt(round_keys: *const [[u8; 16]; 15], blocks: *mut [u8; 16], count: usize);
}

/// AES-256's key expansion (FIPS-197 §5.2) into `round_keys`, with AES-NI.
///
/// # Safety
/// The CPU must have AES and SSE2 ([`supported`]) and CR4.OSFXSR must be set (rom32.s sets it
/// at boot). It overwrites xmm1..xmm4 (caller-saved in the System V ABI; ring 0 keeps nothing
/// in them, see the module comment) and leaves them zero.
pub unsafe fn expand(key: &[u8; 32], round_keys: &mut [[u8; 16]; 15]) {
    // SAFETY: the function reads the 32 bytes of `key` and writes the 240 bytes of
    // `round_keys`, nothing else in memory; the CPU requirements are the caller's.
    unsafe { agent_aes256_expand(key, round_keys) }
}

/// Encrypts each of `blocks` in place with AES-256 under the expanded `round_keys`, with AES-NI.
///
/// # Safety
/// As for [`expand`]; it overwrites xmm0..xmm15 and leaves them zero.
pub unsafe fn encrypt(round_keys: &[[u8; 16]; 15], blocks: &mut [[u8; 16]]) {
    // SAFETY: the function reads the 240 bytes of `round_keys` and reads and writes
    // `blocks.len()` 16-byte blocks from `blocks`, nothing else in memory; the CPU requirements
    // are the caller's.
    unsafe { agent_aes256_encrypt(round_keys, blocks.as_mut_ptr(), blocks.len()) }
}

/// The key expansion registered with `agent::aes`.
fn expand_ni(key: &[u8; 32], round_keys: &mut agent::aes::RoundKeys) {
    // SAFETY: registered by `init` only after `supported()` found AES and SSE2; CR4.OSFXSR is
    // set from boot (rom32.s); ring 0 keeps nothing in XMM registers.
    unsafe { expand(key, round_keys) }
}

/// The block encryption registered with `agent::aes`.
fn encrypt_ni(round_keys: &agent::aes::RoundKeys, blocks: &mut [[u8; 16]]) {
    // SAFETY: as in `expand_ni`.
    unsafe { encrypt(round_keys, blocks) }
}

/// The AES-NI backend. Private: registering it is `init`'s, after the CPUID check.
const AES_NI: agent::aes::Backend =
    agent::aes::Backend { name: "AES-NI", engine: agent::aes::Engine::RoundKeys { expand: expand_ni, encrypt: encrypt_ni } };

/// FIPS-197 Appendix C.3 (AES-256): key 00 01 .. 1f, plaintext 00 11 22 .. ff.
const FIPS197_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const FIPS197_PLAINTEXT: [u8; 16] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
const FIPS197_CIPHERTEXT: [u8; 16] = [0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60, 0x89];

/// Whether `b` gives FIPS-197's C.3 ciphertext, as the portable cipher does (the key expansion
/// and all fourteen rounds).
pub fn known_answer(b: agent::aes::Backend) -> bool {
    let portable = agent::aes::Aes256::with(agent::aes::SOFTWARE, &FIPS197_KEY).encrypt(FIPS197_PLAINTEXT);
    let candidate = agent::aes::Aes256::with(b, &FIPS197_KEY).encrypt(FIPS197_PLAINTEXT);
    portable == FIPS197_CIPHERTEXT && candidate == portable
}

/// Chooses AES-256's block cipher (the one AES-GCM of SNP guest messages uses): AES-NI when
/// CPUID reports it and it gives the portable cipher's result on FIPS-197's AES-256 example
/// (C.3); the portable one otherwise. Logs the choice.
pub fn init() {
    if !supported() {
        log::info!("aes: portable block cipher (CPUID reports no AES-NI)");
        return;
    }
    if known_answer(AES_NI) {
        agent::aes::set_backend(AES_NI);
        log::info!("aes: AES-NI block cipher (CPUID 1:ECX[25]; agrees with the portable one on FIPS-197 C.3)");
    } else {
        log::error!("aes: AES-NI disagrees with the portable block cipher: the portable one stays");
    }
}
