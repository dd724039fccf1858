//! AES-256 and AES-256-GCM, the cipher of SEV-SNP guest messages (`tee::snp::seal`/`open`,
//! under VMPCK0). GCM is RustCrypto's `aes-gcm` (counter mode and GHASH); only its block cipher
//! is this module's [`Aes256`], which runs the implementation chosen once at boot: the portable
//! one (the `aes` crate: fixsliced, constant-time software AES on the image's target) unless
//! the arch layer found AES-NI in CPUID, checked it against the portable one on FIPS-197's
//! example and registered its own ([`set_backend`], `arch/aes.rs`). Either gives the same
//! ciphertext and tag: the choice changes only the speed.
use aes::cipher::consts::{U12, U16, U32, U8};
use aes::cipher::generic_array::GenericArray;
use aes::cipher::inout::InOut;
use aes::cipher::{
    AlgorithmName, Block, BlockBackend, BlockCipher, BlockClosure, BlockEncrypt, BlockSizeUser, Key, KeyInit, KeySizeUser, ParBlocks,
    ParBlocksSizeUser,
};
use spinning_top::{const_spinlock, Spinlock};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// AES-256's fifteen round keys (FIPS-197 §5.2: w[0..60], in the standard's byte order).
pub type RoundKeys = [[u8; 16]; 15];

/// Expands a key into its round keys.
pub type ExpandFn = fn(&[u8; 32], &mut RoundKeys);
/// Encrypts blocks in place under expanded round keys.
pub type EncryptFn = fn(&RoundKeys, &mut [[u8; 16]]);

/// What runs the block cipher.
#[derive(Clone, Copy)]
pub enum Engine {
    /// The `aes` crate's `Aes256` (its own key schedule).
    Portable,
    /// A key expansion and block encryption over [`RoundKeys`] (the arch layer's AES-NI).
    RoundKeys { expand: ExpandFn, encrypt: EncryptFn },
}

/// A block cipher implementation and the name the boot log gives it.
#[derive(Clone, Copy)]
pub struct Backend {
    pub name: &'static str,
    pub engine: Engine,
}

/// The portable block cipher.
pub const SOFTWARE: Backend = Backend { name: "portable", engine: Engine::Portable };

static BACKEND: Spinlock<Backend> = const_spinlock(SOFTWARE);

/// Makes `b` the block cipher of every key set up from now on.
pub fn set_backend(b: Backend) {
    *BACKEND.lock() = b;
}

/// The block cipher in use.
pub fn backend() -> Backend {
    *BACKEND.lock()
}

/// AES-256-GCM with a 96-bit nonce and 128-bit tag over [`Aes256`] (what `aes_gcm::Aes256Gcm`
/// is over the `aes` crate's): `KeyInit::new` takes the block cipher in use.
pub type Aes256Gcm = aes_gcm::AesGcm<Aes256, U12>;

/// An AES-256 key, expanded by the backend in use when it was set up. The key schedule is
/// zeroized on drop (the portable one by the `aes` crate's own `zeroize` feature).
#[derive(Clone)]
pub struct Aes256(Schedule);

// Both variants inline (the portable one is 960 bytes): a key lives for one guest message, on the
// stack as aes-gcm's `Aes256Gcm` kept it; boxing would add a heap allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Schedule {
    Portable(aes::Aes256),
    RoundKeys { keys: RoundKeys, encrypt: EncryptFn },
}

impl Aes256 {
    /// `key` expanded by a given backend.
    pub fn with(b: Backend, key: &[u8; 32]) -> Self {
        match b.engine {
            Engine::Portable => Aes256(Schedule::Portable(aes::Aes256::new(key.into()))),
            Engine::RoundKeys { expand, encrypt } => {
                // Expanded in place, not into a temporary that would be copied in (and left).
                let mut a = Aes256(Schedule::RoundKeys { keys: [[0; 16]; 15], encrypt });
                if let Schedule::RoundKeys { keys, .. } = &mut a.0 {
                    expand(key, keys);
                }
                a
            }
        }
    }

    /// Encrypts one block.
    pub fn encrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = GenericArray::from(block);
        self.encrypt_block(&mut b);
        b.into()
    }
}

impl Drop for Aes256 {
    fn drop(&mut self) {
        if let Schedule::RoundKeys { keys, .. } = &mut self.0 {
            keys.zeroize();
        }
    }
}

impl ZeroizeOnDrop for Aes256 {}

impl KeySizeUser for Aes256 {
    type KeySize = U32;
}

impl KeyInit for Aes256 {
    /// The key expanded by the backend in use.
    fn new(key: &Key<Self>) -> Self {
        Self::with(backend(), key.as_ref())
    }
}

impl BlockSizeUser for Aes256 {
    type BlockSize = U16;
}

impl BlockCipher for Aes256 {}

impl BlockEncrypt for Aes256 {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        match &self.0 {
            Schedule::Portable(a) => a.encrypt_with_backend(f),
            Schedule::RoundKeys { keys, encrypt } => f.call(&mut RoundKeysBackend { keys, encrypt: *encrypt }),
        }
    }
}

impl AlgorithmName for Aes256 {
    fn write_alg_name(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Aes256")
    }
}

impl core::fmt::Debug for Aes256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Aes256 { .. }")
    }
}

/// `cipher`'s view of a [`Schedule::RoundKeys`]: eight blocks per call of the encrypt function
/// (counter mode's keystream), one for the rest.
struct RoundKeysBackend<'a> {
    keys: &'a RoundKeys,
    encrypt: EncryptFn,
}

impl BlockSizeUser for RoundKeysBackend<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for RoundKeysBackend<'_> {
    type ParBlocksSize = U8;
}

impl BlockBackend for RoundKeysBackend<'_> {
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let mut b: [[u8; 16]; 1] = [(*block.get_in()).into()];
        (self.encrypt)(self.keys, &mut b);
        *block.get_out() = b[0].into();
    }

    fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let mut b: [[u8; 16]; 8] = core::array::from_fn(|i| blocks.get_in()[i].into());
        (self.encrypt)(self.keys, &mut b);
        for (o, i) in blocks.get_out().iter_mut().zip(b) {
            *o = i.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{AeadInPlace, KeyInit};

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let v: alloc::vec::Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }

    /// FIPS-197 Appendix C.3: AES-256.
    #[test]
    fn fips197_aes256_example() {
        let a = Aes256::with(SOFTWARE, &unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"));
        assert_eq!(a.encrypt(unhex("00112233445566778899aabbccddeeff")), unhex::<16>("8ea2b7ca516745bfeafc49904b496089"));
    }

    /// McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)" (the NIST submission),
    /// Test Case 16: AES-256, 96-bit IV, 20 bytes of AAD, a 60-byte plaintext (not a multiple of
    /// the block size); and Test Case 13 (empty plaintext and AAD, all-zero key): the tag alone.
    #[test]
    fn gcm_spec_test_cases_13_and_16() {
        let key: [u8; 32] = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv: [u8; 12] = unhex("cafebabefacedbaddecaf888");
        let aad: [u8; 20] = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plaintext: [u8; 60] = unhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let ciphertext: [u8; 60] = unhex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let tag: [u8; 16] = unhex("76fc6ece0f4e1768cddf8853bb2d551b");
        let gcm = Aes256Gcm::new(&key.into());
        let mut buf = plaintext;
        let t = gcm.encrypt_in_place_detached(&iv.into(), &aad, &mut buf).unwrap();
        assert_eq!(buf, ciphertext);
        assert_eq!(<[u8; 16]>::from(t), tag);
        gcm.decrypt_in_place_detached(&iv.into(), &aad, &mut buf, &t).unwrap();
        assert_eq!(buf, plaintext);
        buf[0] ^= 1;
        assert!(gcm.decrypt_in_place_detached(&iv.into(), &aad, &mut buf, &t).is_err());

        let t = Aes256Gcm::new(&[0u8; 32].into()).encrypt_in_place_detached(&[0u8; 12].into(), &[], &mut []).unwrap();
        assert_eq!(<[u8; 16]>::from(t), unhex::<16>("530f8afbc74536b9a963b4f1c4cb738b"));
    }

    /// A registered backend is the one new keys use, for single blocks and counter mode's runs
    /// of eight.
    #[test]
    fn a_registered_backend_is_used() {
        // Not AES: copies the key's first half into the round keys and XORs it in.
        fn expand(key: &[u8; 32], keys: &mut RoundKeys) {
            keys[0].copy_from_slice(&key[..16]);
        }
        fn encrypt(keys: &RoundKeys, blocks: &mut [[u8; 16]]) {
            for b in blocks {
                for (x, k) in b.iter_mut().zip(keys[0]) {
                    *x ^= k;
                }
            }
        }
        let xor = Backend { name: "xor", engine: Engine::RoundKeys { expand, encrypt } };
        let key = [7u8; 32];
        assert_eq!(Aes256::with(xor, &key).encrypt([1; 16]), [6; 16]);
        let gcm = |b: Backend| {
            let mut buf = [0u8; 200];
            let tag = Aes256Gcm::from(Aes256::with(b, &key)).encrypt_in_place_detached(&[0u8; 12].into(), b"aad", &mut buf).unwrap();
            (buf, tag)
        };
        // Counter mode's keystream block i is E(nonce || i + 2) = (0..0 || i + 2) ^ 07..07, and
        // the plaintext is zero: blocks 0..8 (one run of eight) and 8..13 (the rest).
        let (ct, _) = gcm(xor);
        for (i, block) in ct.chunks(16).enumerate() {
            let mut want = [7u8; 16];
            want[12..].copy_from_slice(&(i as u32 + 2).to_be_bytes().map(|b| b ^ 7));
            assert_eq!(block, &want[..block.len()], "block {i}");
        }
        assert_ne!(gcm(xor), gcm(SOFTWARE));
        assert_eq!(gcm(SOFTWARE), {
            let mut buf = [0u8; 200];
            let tag = aes_gcm::Aes256Gcm::new(&key.into()).encrypt_in_place_detached(&[0u8; 12].into(), b"aad", &mut buf).unwrap();
            (buf, tag)
        });
    }
}
