//! SHA-256's block function with the CPU's SHA extensions (SHA-NI: `sha256rnds2`,
//! `sha256msg1`, `sha256msg2`), registered with `agent::sha256` at boot when CPUID reports them.
//! The library keeps the padding and buffering and its portable block function for CPUs without.
//!
//! Vector registers: the agent is built soft-float and this is the only ring-0 code that uses
//! the XMM registers (SSE encodings only, never VEX: CR4.OSXSAVE stays clear). A builder's
//! x87/SSE state is saved (FXSAVE) the moment it traps to the agent and restored (FXRSTOR)
//! just before it runs again (`arch::user::run`), so the agent may use them freely in between;
//! nothing here keeps a value in a vector register across calls. Interrupts are off in ring 0
//! and no trap handler touches vector registers, so nothing interrupts this function's use.
//!
//! The function is assembly (`global_asm!`): the image's target is soft-float, so LLVM gives
//! no vector registers to Rust code even under `#[target_feature]`. Self-contained (only
//! `core::arch`): `agent/tests/sha_ni.rs` assembles this file into a host test and checks it
//! against the portable block function on random inputs.
use core::arch::x86_64::{__cpuid, __cpuid_count};

/// Whether this CPU has what [`compress`] executes: CPUID.7.0:EBX[29] (SHA), CPUID.1:ECX[19]
/// (SSE4.1: `pblendw`), ECX[9] (SSSE3: `pshufb`, `palignr`) and EDX[26] (SSE2). Under SEV-SNP
/// CPUID comes from the PSP-checked CPUID page, in a TD from the TDX module: a host can hide
/// these there, never invent them (and a missing instruction would be a #UD, fatal, not a
/// wrong digest).
pub fn supported() -> bool {
    if __cpuid(0).eax < 7 {
        return false;
    }
    let l1 = __cpuid(1);
    let l7 = __cpuid_count(7, 0);
    l7.ebx & (1 << 29) != 0 && l1.ecx & (1 << 19) != 0 && l1.ecx & (1 << 9) != 0 && l1.edx & (1 << 26) != 0
}

// agent_sha256_ni(state: *mut [u32; 8], blocks: *const [u8; 64], count: usize), System V ABI.
// The instructions keep the state as ABEF (xmm1) and CDGH (xmm2), A in the highest lane;
// xmm3..xmm6 hold the message words 4i..4i+3 of the current group of four rounds (a ring of
// four); `sha256rnds2` takes W+K from xmm0 implicitly; xmm7 the byte-swap mask; xmm8/xmm9 the
// state at the block's start; xmm10 scratch. Uses only legacy SSE encodings.
core::arch::global_asm!(
    r#"
// Four rounds with message words \w: two with the low two words of W+K, two with the high
// two; after each pair the registers swap roles (the old ABEF becomes CDGH).
.macro rounds4 w, k
    movdqa xmm0, \w
    paddd xmm0, [rip + agent_sha256_k + \k]
    sha256rnds2 xmm2, xmm1
    pshufd xmm0, xmm0, 0x0E
    sha256rnds2 xmm1, xmm2
.endm
// W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time into \w0 (which held
// W[t-16..t-13]): msg1 adds s0 of \w1's words, palignr supplies W[t-7..t-4], msg2 adds s1.
.macro schedule w0, w1, w2, w3
    sha256msg1 \w0, \w1
    movdqa xmm10, \w3
    palignr xmm10, \w2, 4
    paddd \w0, xmm10
    sha256msg2 \w0, \w3
.endm

.section .text.agent_sha256_ni,"ax"
.globl agent_sha256_ni
agent_sha256_ni:
    movdqu xmm1, [rdi]
    movdqu xmm2, [rdi + 16]
    pshufd xmm1, xmm1, 0xB1
    pshufd xmm2, xmm2, 0x1B
    movdqa xmm10, xmm1
    palignr xmm1, xmm2, 8
    pblendw xmm2, xmm10, 0xF0
    movdqa xmm7, [rip + agent_sha256_bswap]
    test rdx, rdx
    jz 3f
2:
    movdqa xmm8, xmm1
    movdqa xmm9, xmm2
    movdqu xmm3, [rsi]
    pshufb xmm3, xmm7
    movdqu xmm4, [rsi + 16]
    pshufb xmm4, xmm7
    movdqu xmm5, [rsi + 32]
    pshufb xmm5, xmm7
    movdqu xmm6, [rsi + 48]
    pshufb xmm6, xmm7
    rounds4 xmm3, 0
    rounds4 xmm4, 16
    rounds4 xmm5, 32
    rounds4 xmm6, 48
    schedule xmm3, xmm4, xmm5, xmm6
    rounds4 xmm3, 64
    schedule xmm4, xmm5, xmm6, xmm3
    rounds4 xmm4, 80
    schedule xmm5, xmm6, xmm3, xmm4
    rounds4 xmm5, 96
    schedule xmm6, xmm3, xmm4, xmm5
    rounds4 xmm6, 112
    schedule xmm3, xmm4, xmm5, xmm6
    rounds4 xmm3, 128
    schedule xmm4, xmm5, xmm6, xmm3
    rounds4 xmm4, 144
    schedule xmm5, xmm6, xmm3, xmm4
    rounds4 xmm5, 160
    schedule xmm6, xmm3, xmm4, xmm5
    rounds4 xmm6, 176
    schedule xmm3, xmm4, xmm5, xmm6
    rounds4 xmm3, 192
    schedule xmm4, xmm5, xmm6, xmm3
    rounds4 xmm4, 208
    schedule xmm5, xmm6, xmm3, xmm4
    rounds4 xmm5, 224
    schedule xmm6, xmm3, xmm4, xmm5
    rounds4 xmm6, 240
    paddd xmm1, xmm8
    paddd xmm2, xmm9
    add rsi, 64
    dec rdx
    jnz 2b
3:
    pshufd xmm1, xmm1, 0x1B
    pshufd xmm2, xmm2, 0xB1
    movdqa xmm10, xmm1
    pblendw xmm1, xmm2, 0xF0
    palignr xmm2, xmm10, 8
    movdqu [rdi], xmm1
    movdqu [rdi + 16], xmm2
    ret
.purgem rounds4
.purgem schedule

.section .rodata.agent_sha256_k,"a"
.balign 16
// Byte-reverses each 32-bit lane: the message words are big-endian.
agent_sha256_bswap:
    .byte 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12
// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the first
// 64 primes.
agent_sha256_k:
    .long 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .long 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .long 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .long 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .long 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .long 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .long 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .long 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
.text
"#
);

unsafe extern "C" {
    fn agent_sha256_ni(state: *mut [u32; 8], blocks: *const [u8; 64], count: usize);
}

/// Runs SHA-256's compression function over `blocks`, updating `state` (a..h), with SHA-NI.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 ([`supported`]) and CR4.OSFXSR must be set
/// (rom32.s sets it at boot). It overwrites xmm0..xmm10 (caller-saved in the System V ABI;
/// ring 0 keeps nothing in them, see the module comment).
pub unsafe fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    // SAFETY: the function reads `blocks.len()` 64-byte blocks from `blocks` and reads and
    // writes the 32 bytes of `state`, nothing else in memory; the CPU requirements are the
    // caller's.
    unsafe { agent_sha256_ni(state, blocks.as_ptr(), blocks.len()) }
}

/// The block function registered with `agent::sha256`.
fn sha_ni(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    // SAFETY: registered by `init` only after `supported()` found SHA, SSE2, SSSE3 and SSE4.1;
    // CR4.OSFXSR is set from boot (rom32.s); ring 0 keeps nothing in XMM registers.
    unsafe { compress(state, blocks) }
}

/// Chooses SHA-256's block function: SHA-NI when CPUID reports it and it gives the portable
/// function's result on a known message (three blocks, so the message schedule and the state
/// carried between blocks are both exercised); the portable one otherwise. Logs the choice.
pub fn init() {
    use agent::sha256::{set_backend, Backend, Sha256, SOFTWARE};
    if !supported() {
        log::info!("sha256: portable block function (CPUID reports no SHA-NI)");
        return;
    }
    let hw = Backend { name: "SHA-NI", blocks: sha_ni };
    let message: [u8; 150] = core::array::from_fn(|i| (i * 31 + 7) as u8);
    let digest = |b: Backend| {
        let mut h = Sha256::with(b);
        h.update(message);
        h.finalize()
    };
    if digest(hw) == digest(SOFTWARE) {
        set_backend(hw);
        log::info!("sha256: SHA-NI block function (CPUID 7.0:EBX[29], SSSE3, SSE4.1; agrees with the portable one)");
    } else {
        log::error!("sha256: SHA-NI disagrees with the portable block function: the portable one stays");
    }
}

// The SYSCALL test image's stand-in for any ring-0 use of vector registers, on any CPU (TCG has
// no SHA-NI): all sixteen XMM registers overwritten after every trap from ring 3, so the
// sandbox tests see at once if a builder's vector state were not saved and restored
// (tests/tests/hashing.rs). Not in the development image: under PVM (docs/sandbox.md) the host's
// instruction emulator fails on it and ends the VM.
#[cfg(feature = "vector-clobber-test")]
core::arch::global_asm!(
    r#"
.section .text.agent_clobber_xmm,"ax"
.globl agent_clobber_xmm
agent_clobber_xmm:
    pcmpeqd xmm0, xmm0
    pcmpeqd xmm1, xmm1
    pcmpeqd xmm2, xmm2
    pcmpeqd xmm3, xmm3
    pcmpeqd xmm4, xmm4
    pcmpeqd xmm5, xmm5
    pcmpeqd xmm6, xmm6
    pcmpeqd xmm7, xmm7
    pcmpeqd xmm8, xmm8
    pcmpeqd xmm9, xmm9
    pcmpeqd xmm10, xmm10
    pcmpeqd xmm11, xmm11
    pcmpeqd xmm12, xmm12
    pcmpeqd xmm13, xmm13
    pcmpeqd xmm14, xmm14
    pcmpeqd xmm15, xmm15
    ret
.text
"#
);

/// Overwrites every XMM register (the SYSCALL test image only; see above).
#[cfg(feature = "vector-clobber-test")]
pub fn clobber_vector_registers() {
    unsafe extern "C" {
        fn agent_clobber_xmm();
    }
    // SAFETY: the function only writes XMM registers (caller-saved in the System V ABI; ring 0
    // keeps nothing in them) and needs only SSE2, which every x86-64 CPU has (CR4.OSFXSR is set).
    unsafe { agent_clobber_xmm() }
}
