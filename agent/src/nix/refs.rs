//! Reference scanning (`libstore/references.cc`: `RefScanSink`, `search`): which of a set of
//! candidate store paths appear — by their 32-character hash part — in a stream of bytes (an
//! output's NAR), including across chunk boundaries.
use super::base32;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

const REF_LEN: usize = 32;

/// Scans a byte stream for the hash parts of candidate store paths.
pub struct RefScanner {
    /// Hash parts not seen yet.
    hashes: BTreeSet<[u8; REF_LEN]>,
    seen: BTreeSet<[u8; REF_LEN]>,
    tail: Vec<u8>,
    /// Bytes some candidate starts with.
    first: [bool; 256],
}

impl RefScanner {
    /// `hash_parts`: the 32-character hash parts of the candidates.
    pub fn new<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> Self {
        let hashes: BTreeSet<[u8; REF_LEN]> = hash_parts.into_iter().filter_map(|h| h.as_bytes().try_into().ok()).collect();
        let mut first = [false; 256];
        for h in &hashes {
            first[h[0] as usize] = true;
        }
        Self { hashes, seen: BTreeSet::new(), tail: Vec::new(), first }
    }

    /// One pass over `s`: `run` counts the nix32 digits ending at each byte; where it reaches
    /// 32 the window is a candidate, looked up only if its first byte can start a hash. Linear in
    /// `s` whatever it holds (Nix's skip loop re-checks up to 31 bytes per position on long runs
    /// of digits, as in a file of `x`s).
    fn search(s: &[u8], hashes: &mut BTreeSet<[u8; REF_LEN]>, seen: &mut BTreeSet<[u8; REF_LEN]>, first: &[bool; 256]) {
        let mut run = 0usize;
        for i in 0..s.len() {
            if !base32::is_digit(s[i]) {
                run = 0;
                continue;
            }
            run += 1;
            if run >= REF_LEN && first[s[i + 1 - REF_LEN] as usize] {
                let window: [u8; REF_LEN] = s[i + 1 - REF_LEN..=i].try_into().expect("REF_LEN bytes");
                if hashes.remove(&window) {
                    seen.insert(window);
                }
            }
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.hashes.is_empty() {
            return;
        }
        let tail_len = data.len().min(REF_LEN);
        let mut s = core::mem::take(&mut self.tail);
        s.extend_from_slice(&data[..tail_len]);
        Self::search(&s, &mut self.hashes, &mut self.seen, &self.first);
        Self::search(data, &mut self.hashes, &mut self.seen, &self.first);
        let rest = REF_LEN - tail_len;
        if rest < s.len() - tail_len {
            let old = s.len() - tail_len;
            s.drain(..old - rest);
        }
        s.truncate(s.len() - tail_len);
        s.extend_from_slice(&data[data.len() - tail_len..]);
        self.tail = s;
    }

    /// The hash parts found.
    pub fn found(&self) -> impl Iterator<Item = String> + '_ {
        self.seen.iter().map(|h| String::from_utf8_lossy(h).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const A: &str = "i7xam6944gbbbcxcgxpsmk5y54i71mfz";
    const B: &str = "71fc7s32zl20dc955bhghy5dvalm7ndz";

    #[test]
    fn finds_references_across_any_chunking() {
        let text = alloc::format!("xx/nix/store/{A}-dep\n and {B}; not {}", &A[1..]);
        for chunk in [1usize, 3, 7, 31, 32, 33, 1000] {
            let mut s = RefScanner::new([A, B, "0000000000000000000000000000000z"]);
            for c in text.as_bytes().chunks(chunk) {
                s.update(c);
            }
            let found: Vec<String> = s.found().collect();
            assert_eq!(found, [B.to_string(), A.to_string()], "chunk {chunk}");
        }
    }
}
