//! Nix base-32 (`libutil/hash.cc`: `printHash32`, `parseHash32`): the alphabet omits e, o, u, t,
//! and digits are read from the most significant 5-bit group of the little-endian bytes.
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Encoded length of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut s = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let lo = bytes[i] >> j;
        let hi = if i + 1 < bytes.len() && j > 3 { bytes[i + 1] << (8 - j) } else { 0 };
        s.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    s
}

/// Which bytes are nix32 digits (a table: the reference scanner asks for every byte).
const IS_DIGIT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `c` is a nix32 digit.
pub fn is_digit(c: u8) -> bool {
    IS_DIGIT[c as usize]
}

/// Decodes `s` into `size` bytes; `None` on a bad digit, a wrong length, or set bits beyond
/// `size` bytes.
pub fn decode(s: &str, size: usize) -> Option<Vec<u8>> {
    if s.len() != encoded_len(size) {
        return None;
    }
    let mut out = vec![0u8; size];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u8;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= digit << j;
        let carry = if j > 3 { digit >> (8 - j) } else { 0 };
        if i + 1 < size {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for n in [0usize, 1, 5, 16, 20, 32, 64] {
            let bytes: Vec<u8> = (0..n as u32).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(n));
            assert_eq!(decode(&s, n).as_deref(), Some(bytes.as_slice()));
        }
        assert_eq!(decode("e0000000000000000000000000000000", 20), None);
        assert!(decode(&"z".repeat(32), 20).is_some(), "32 digits are exactly 160 bits");
        assert_eq!(decode(&"z".repeat(52), 32), None, "bits beyond 256");
    }
}
