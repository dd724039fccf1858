//! Hash algorithms and their textual forms (`libutil/hash.cc`).
use super::base32;
use alloc::string::String;
use alloc::vec::Vec;
use md5::Md5;
use sha1::Sha1;
use crate::sha256::Sha256;
use sha2::{Digest, Sha512};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "md5" => Algo::Md5,
            "sha1" => Algo::Sha1,
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }
}

/// A digest with its algorithm.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hash {
    pub algo: Algo,
    pub bytes: Vec<u8>,
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Hash {
    pub fn sha256(data: &[u8]) -> Self {
        Hash { algo: Algo::Sha256, bytes: Sha256::digest(data).to_vec() }
    }

    /// `to_string(Base16, false)`.
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }
    /// `to_string(Base32, false)`.
    pub fn to_nix32(&self) -> String {
        base32::encode(&self.bytes)
    }
    /// `to_string(Base16, true)`: `sha256:<hex>`.
    pub fn to_typed_hex(&self) -> String {
        let mut s = String::from(self.algo.name());
        s.push(':');
        s.push_str(&self.to_hex());
        s
    }
    /// `to_string(Base32, true)`: `sha256:<nix32>` (what `nix-store -q --hash` prints).
    pub fn to_typed_nix32(&self) -> String {
        let mut s = String::from(self.algo.name());
        s.push(':');
        s.push_str(&self.to_nix32());
        s
    }

    /// `Hash::parseNonSRIUnprefixed`: base-16, nix32 or base-64, told apart by length.
    pub fn parse_unprefixed(s: &str, algo: Algo) -> Option<Self> {
        let size = algo.size();
        let bytes = if s.len() == size * 2 {
            unhex(s)?
        } else if s.len() == base32::encoded_len(size) {
            base32::decode(s, size)?
        } else {
            let b = base64_decode(s)?;
            if b.len() != size {
                return None;
            }
            b
        };
        Some(Hash { algo, bytes })
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let mut v = 0u32;
        let mut pad = 0;
        for &c in chunk {
            v <<= 6;
            if c == b'=' {
                pad += 1;
            } else if pad > 0 {
                return None;
            } else {
                v |= A.iter().position(|&a| a == c)? as u32;
            }
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    Some(out)
}

/// A streaming hasher for any of the algorithms.
#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    /// The digest of `data` in one call.
    pub fn digest(algo: Algo, data: &[u8]) -> Hash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }
    pub fn new(algo: Algo) -> Self {
        match algo {
            Algo::Md5 => Hasher::Md5(Md5::new()),
            Algo::Sha1 => Hasher::Sha1(Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn finish(self) -> Hash {
        match self {
            Hasher::Md5(h) => Hash { algo: Algo::Md5, bytes: h.finalize().to_vec() },
            Hasher::Sha1(h) => Hash { algo: Algo::Sha1, bytes: h.finalize().to_vec() },
            Hasher::Sha256(h) => Hash { algo: Algo::Sha256, bytes: h.finalize().to_vec() },
            Hasher::Sha512(h) => Hash { algo: Algo::Sha512, bytes: h.finalize().to_vec() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_three_encodings() {
        let h = Hash::sha256(b"abc");
        assert_eq!(Hash::parse_unprefixed(&h.to_hex(), Algo::Sha256), Some(h.clone()));
        assert_eq!(Hash::parse_unprefixed(&h.to_nix32(), Algo::Sha256), Some(h.clone()));
        // base64 of sha256("abc")
        assert_eq!(
            Hash::parse_unprefixed("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", Algo::Sha256),
            Some(h)
        );
        assert_eq!(Hash::parse_unprefixed("xyz", Algo::Sha256), None);
    }

    #[test]
    fn md5_and_sha1_as_nix_prints_them() {
        // RFC 1321 A.5 and FIPS 180 test vectors ("abc"); the nix32 forms are what
        // `nix-hash --type md5|sha1 --to-base32` prints for those hex digests.
        let md5 = Hasher::digest(Algo::Md5, b"abc");
        assert_eq!(md5.to_hex(), "900150983cd24fb0d6963f7d28e17f72");
        let sha1 = Hasher::digest(Algo::Sha1, b"abc");
        assert_eq!(sha1.to_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(md5.to_nix32(), "3jgzhjhz9zjvbb0kyj7jc500ch");
        assert_eq!(sha1.to_nix32(), "kpcd173cq987hw957sx6m0868wv3x6d9");
        assert_eq!(Algo::from_name("md5"), Some(Algo::Md5));
        assert_eq!(Hash::parse_unprefixed(&md5.to_nix32(), Algo::Md5), Some(md5.clone()));
        assert_eq!(Hash::parse_unprefixed(&md5.to_hex(), Algo::Md5), Some(md5));
    }
}
