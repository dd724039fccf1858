//! SHA-256 (FIPS 180-4), the one implementation every SHA-256 of the agent goes through:
//! NAR hashes, store paths, the derivation's hash. Padding and buffering are here; the block
//! function (the compression of 64-byte blocks) is chosen once at boot: the portable one
//! (RustCrypto's `sha2::compress256`) unless the arch layer found SHA-NI in CPUID, checked it
//! against the portable one and registered its own ([`set_backend`], `arch/sha256.rs`).
//! Either gives the same digest: the choice changes only the speed.
use sha2::digest::generic_array::GenericArray;
use spinning_top::{const_spinlock, Spinlock};

/// Compresses whole 64-byte blocks into the state (a..h).
pub type BlockFn = fn(&mut [u32; 8], &[[u8; 64]]);

/// A block function and the name the boot log gives it.
#[derive(Clone, Copy)]
pub struct Backend {
    pub name: &'static str,
    pub blocks: BlockFn,
}

/// The portable block function.
pub const SOFTWARE: Backend = Backend { name: "portable", blocks: software };

fn software(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    for b in blocks {
        sha2::compress256(state, core::slice::from_ref(GenericArray::from_slice(b)));
    }
}

static BACKEND: Spinlock<Backend> = const_spinlock(SOFTWARE);

/// Makes `b` the block function of every hasher created from now on.
pub fn set_backend(b: Backend) {
    *BACKEND.lock() = b;
}

/// The block function in use.
pub fn backend() -> Backend {
    *BACKEND.lock()
}

/// FIPS 180-4 §5.3.3.
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// An incremental SHA-256.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    buf: [u8; 64],
    buffered: usize,
    /// Bytes hashed so far (the message length is taken modulo 2^64 bits, as FIPS 180-4 allows
    /// only shorter messages anyway).
    len: u64,
    blocks: BlockFn,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A hasher with the block function in use now.
    pub fn new() -> Self {
        Self::with(backend())
    }

    /// A hasher with a given block function.
    pub fn with(b: Backend) -> Self {
        Sha256 { state: H0, buf: [0; 64], buffered: 0, len: 0, blocks: b.blocks }
    }

    pub fn update(&mut self, data: impl AsRef<[u8]>) {
        let mut data = data.as_ref();
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let take = (64 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 64 {
                return;
            }
            (self.blocks)(&mut self.state, core::slice::from_ref(&self.buf));
            self.buffered = 0;
        }
        let (whole, rest) = data.as_chunks::<64>();
        if !whole.is_empty() {
            (self.blocks)(&mut self.state, whole);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The digest: a 1 bit, zeros to 56 mod 64 bytes, the length in bits (big-endian).
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let n = self.buffered;
        self.buf[n] = 0x80;
        self.buf[n + 1..].fill(0);
        if n + 1 > 56 {
            (self.blocks)(&mut self.state, core::slice::from_ref(&self.buf));
            self.buf = [0; 64];
        }
        self.buf[56..].copy_from_slice(&bits.to_be_bytes());
        (self.blocks)(&mut self.state, core::slice::from_ref(&self.buf));
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// The digest of `data`.
    pub fn digest(data: impl AsRef<[u8]>) -> [u8; 32] {
        let mut h = Self::new();
        h.update(data);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn hex(d: &[u8]) -> alloc::string::String {
        d.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    /// FIPS 180-4 examples (NIST's SHA256.pdf): "abc", the two-block message, and a million 'a'.
    #[test]
    fn published_vectors() {
        assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hex(&Sha256::digest(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let mut h = Sha256::new();
        for _ in 0..1000 {
            h.update([b'a'; 1000]);
        }
        assert_eq!(hex(&h.finalize()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        assert_eq!(hex(&Sha256::digest(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    /// Every length around the padding boundaries, split at every point, against RustCrypto's.
    #[test]
    fn matches_sha2_for_every_split() {
        let data: alloc::vec::Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let want: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
            for cut in [0, 1, len / 2, len.saturating_sub(1), len] {
                let mut h = Sha256::new();
                h.update(&data[..cut.min(len)]);
                h.update(&data[cut.min(len)..len]);
                assert_eq!(h.finalize(), want, "len {len} cut {cut}");
            }
        }
    }

    /// A registered block function is the one new hashers use.
    #[test]
    fn a_registered_backend_is_used() {
        fn counting(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
            state[0] = state[0].wrapping_add(blocks.len() as u32);
        }
        let b = Backend { name: "counting", blocks: counting };
        let mut h = Sha256::with(b);
        h.update([0u8; 128]);
        assert_ne!(h.finalize(), Sha256::with(SOFTWARE).finalize());
    }
}
