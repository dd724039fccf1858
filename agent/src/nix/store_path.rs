//! Store paths (`libstore/path.cc`, `libstore/store-api.cc`): syntax, and how Nix computes them.
use super::base32;
use super::hash::{Algo, Hash};
use alloc::collections::BTreeSet;
use alloc::string::String;
use crate::sha256::Sha256;

pub const STORE_DIR: &str = "/nix/store";
/// Length of the hash part (160 bits in nix32).
pub const HASH_LEN: usize = 32;
pub const MAX_NAME_LEN: usize = 211;

/// Why a store path or name is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    NotInStore,
    TooShort,
    BadHashChar(char),
    EmptyName,
    NameTooLong,
    BadNameChar(char),
}

/// `checkName`.
pub fn check_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PathError::NameTooLong);
    }
    match name.chars().find(|&c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c))) {
        Some(c) => Err(PathError::BadNameChar(c)),
        None => Ok(()),
    }
}

/// A valid store path: `/nix/store/<hash part>-<name>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    /// `<hash part>-<name>`; ordering by it is Nix's `StorePath` ordering.
    base: String,
}

impl StorePath {
    /// Parses a full path (`parseStorePath`).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let base = path.strip_prefix(STORE_DIR).and_then(|p| p.strip_prefix('/')).ok_or(PathError::NotInStore)?;
        Self::from_base_name(base)
    }

    /// Parses `<hash part>-<name>` (`StorePath(std::string_view baseName)`).
    pub fn from_base_name(base: &str) -> Result<Self, PathError> {
        if base.len() < HASH_LEN + 1 || base.as_bytes()[HASH_LEN] != b'-' {
            return Err(PathError::TooShort);
        }
        if let Some(c) = base[..HASH_LEN].chars().find(|&c| !base32::is_digit(c as u8)) {
            return Err(PathError::BadHashChar(c));
        }
        check_name(&base[HASH_LEN + 1..])?;
        Ok(StorePath { base: base.into() })
    }

    fn from_digest(digest: &[u8; 20], name: &str) -> Result<Self, PathError> {
        check_name(name)?;
        let mut base = base32::encode(digest);
        base.push('-');
        base.push_str(name);
        Ok(StorePath { base })
    }

    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_LEN]
    }
    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }
    pub fn base_name(&self) -> &str {
        &self.base
    }
    /// `printStorePath`.
    pub fn to_path(&self) -> String {
        let mut s = String::from(STORE_DIR);
        s.push('/');
        s.push_str(&self.base);
        s
    }
}

impl core::fmt::Display for StorePath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

/// `compressHash(h, 20)`: XOR-fold a digest to 160 bits.
pub fn compress_hash(digest: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        out[i % 20] ^= b;
    }
    out
}

/// `makeStorePath(type, hash, name)`: `sha256("<type>:sha256:<hex>:/nix/store:<name>")`.
pub fn make_store_path(ty: &str, hash: &Hash, name: &str) -> Result<StorePath, PathError> {
    let mut h = Sha256::new();
    h.update(ty.as_bytes());
    h.update(b":");
    h.update(hash.to_typed_hex().as_bytes());
    h.update(b":");
    h.update(STORE_DIR.as_bytes());
    h.update(b":");
    h.update(name.as_bytes());
    StorePath::from_digest(&compress_hash(&h.finalize()), name)
}

/// `makeType`: the type string with the references stuffed in.
fn make_type(mut ty: String, references: &BTreeSet<StorePath>, self_ref: bool) -> String {
    for r in references {
        ty.push(':');
        ty.push_str(&r.to_path());
    }
    if self_ref {
        ty.push_str(":self");
    }
    ty
}

/// `outputPathName`.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    let mut s = String::from(drv_name);
    if output != "out" {
        s.push('-');
        s.push_str(output);
    }
    s
}

/// `makeOutputPath`: the path of an input-addressed output.
pub fn make_output_path(output: &str, hash: &Hash, drv_name: &str) -> Result<StorePath, PathError> {
    let mut ty = String::from("output:");
    ty.push_str(output);
    make_store_path(&ty, hash, &output_path_name(drv_name, output))
}

/// `makeTextPath`: a text file with references (e.g. a `.drv`).
pub fn make_text_path(name: &str, hash: &Hash, references: &BTreeSet<StorePath>) -> Result<StorePath, PathError> {
    make_store_path(&make_type("text".into(), references, false), hash, name)
}

/// How a fixed-output derivation's content is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The flat file's bytes.
    Flat,
    /// The NAR serialisation (`r:`).
    Recursive,
}

/// `makeFixedOutputPath` (no references, as for fixed-output derivations).
pub fn make_fixed_output_path(method: Method, hash: &Hash, name: &str) -> Result<StorePath, PathError> {
    if hash.algo == Algo::Sha256 && method == Method::Recursive {
        make_store_path(&make_type("source".into(), &BTreeSet::new(), false), hash, name)
    } else {
        let mut s = String::from("fixed:out:");
        if method == Method::Recursive {
            s.push_str("r:");
        }
        s.push_str(&hash.to_typed_hex());
        s.push(':');
        make_store_path("output:out", &Hash::sha256(s.as_bytes()), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_syntax() {
        let good = "/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-dep";
        assert_eq!(StorePath::parse(good).unwrap().to_path(), good);
        assert_eq!(StorePath::parse("/nix/store/short-x"), Err(PathError::TooShort));
        assert_eq!(StorePath::parse("/tmp/i7xam6944gbbbcxcgxpsmk5y54i71mfz-dep"), Err(PathError::NotInStore));
        assert_eq!(StorePath::parse("/nix/store/e7xam6944gbbbcxcgxpsmk5y54i71mfz-dep"), Err(PathError::BadHashChar('e')));
        assert_eq!(StorePath::parse("/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-a b"), Err(PathError::BadNameChar(' ')));
        assert_eq!(StorePath::parse("/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-"), Err(PathError::EmptyName));
        let long = alloc::format!("/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-{}", "a".repeat(212));
        assert_eq!(StorePath::parse(&long), Err(PathError::NameTooLong));
    }
}
