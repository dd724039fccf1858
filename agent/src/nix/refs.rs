//! Reference scanning (`libstore/references.cc`: `RefScanSink`, `search`): which of a set of
//! candidate store paths appear — by their 32-character hash part — in a stream of bytes (an
//! output's NAR), including across chunk boundaries.
//!
//! For inputs the scan is also *strict* ([`RefScanner::strict`]): every `/nix/store/<32 nix32
//! digits>-` in the stream must name a candidate. In Nix an input's references are the hash
//! parts of its closure found in its bytes, so a store path an input mentions is in its closure;
//! one the host did not send means the host left part of the closure out.
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
    /// Strict mode: the last `PATTERN - 1` bytes seen, and the first store path found whose
    /// hash part is no candidate (`/nix/store/<hash>-<name>`, the name as far as it goes).
    strict: Option<Strict>,
}

struct Strict {
    tail: Vec<u8>,
    unknown: Option<Vec<u8>>,
    /// The unknown path's name continues into the next chunk.
    naming: bool,
}

const PREFIX: &[u8] = b"/nix/store/";
/// `/nix/store/` + hash part + `-`.
const PATTERN: usize = PREFIX.len() + REF_LEN + 1;
/// The longest name a store path may have.
const MAX_NAME: usize = 211;

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)
}

/// The hash part of `/nix/store/<hash>-` if `w` (the `PATTERN - 1` bytes before a `-`) is one.
fn store_hash(w: &[u8]) -> Option<[u8; REF_LEN]> {
    if w.starts_with(PREFIX) && w[PREFIX.len()..].iter().all(|&c| base32::is_digit(c)) {
        w[PREFIX.len()..].try_into().ok()
    } else {
        None
    }
}

impl RefScanner {
    /// `hash_parts`: the 32-character hash parts of the candidates.
    pub fn new<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> Self {
        let hashes: BTreeSet<[u8; REF_LEN]> = crate::btree::set(hash_parts.into_iter().filter_map(|h| h.as_bytes().try_into().ok()));
        let mut first = [false; 256];
        for h in &hashes {
            first[h[0] as usize] = true;
        }
        Self { hashes, seen: BTreeSet::new(), tail: Vec::new(), first, strict: None }
    }

    /// A scanner that also finds every `/nix/store/<hash>-` whose hash part is no candidate
    /// (see [`RefScanner::unknown`]).
    pub fn strict<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::new(hash_parts);
        s.strict = Some(Strict { tail: Vec::new(), unknown: None, naming: false });
        s
    }

    /// Strict mode: the first store path in the stream that is not a candidate, as
    /// `/nix/store/<hash>-<name>` (the name cut at 211 bytes).
    pub fn unknown(&self) -> Option<String> {
        let u = self.strict.as_ref()?.unknown.as_ref()?;
        Some(String::from_utf8_lossy(u).into_owned())
    }

    fn is_candidate(&self, h: &[u8; REF_LEN]) -> bool {
        self.hashes.contains(h) || self.seen.contains(h)
    }

    /// Strict mode's pass over one chunk: each `-` with the 43 bytes before it (from the chunk,
    /// or from the tail kept from earlier chunks).
    fn scan_store_paths(&mut self, data: &[u8]) {
        let Some(mut st) = self.strict.take() else { return };
        if st.naming {
            let u = st.unknown.as_mut().expect("naming an unknown path");
            let n = data.iter().take_while(|&&c| is_name_char(c)).count();
            let room = (PREFIX.len() + REF_LEN + 1 + MAX_NAME).saturating_sub(u.len());
            u.extend_from_slice(&data[..n.min(room)]);
            st.naming = n == data.len() && n < room;
        }
        if st.unknown.is_none() {
            let head = data.len().min(PATTERN - 1);
            let mut s = core::mem::take(&mut st.tail);
            let history = s.len();
            s.extend_from_slice(&data[..head]);
            let mut found = None;
            for j in history.max(PATTERN - 1)..s.len() {
                if s[j] == b'-' {
                    if let Some(h) = store_hash(&s[j + 1 - PATTERN..j]) {
                        if !self.is_candidate(&h) {
                            found = Some((h, j - history));
                            break;
                        }
                    }
                }
            }
            if found.is_none() {
                for j in PATTERN - 1..data.len() {
                    if data[j] == b'-' {
                        if let Some(h) = store_hash(&data[j + 1 - PATTERN..j]) {
                            if !self.is_candidate(&h) {
                                found = Some((h, j));
                                break;
                            }
                        }
                    }
                }
            }
            if let Some((h, dash)) = found {
                let mut u = PREFIX.to_vec();
                u.extend_from_slice(&h);
                u.push(b'-');
                let rest = &data[dash + 1..];
                let n = rest.iter().take_while(|&&c| is_name_char(c)).count().min(MAX_NAME);
                u.extend_from_slice(&rest[..n]);
                st.naming = n == rest.len() && n < MAX_NAME;
                st.unknown = Some(u);
            }
            // The new tail: the last PATTERN - 1 bytes of everything seen.
            if data.len() >= PATTERN - 1 {
                s.clear();
                s.extend_from_slice(&data[data.len() + 1 - PATTERN..]);
            } else {
                // s is the old tail and all of this short chunk.
                let cut = s.len().saturating_sub(PATTERN - 1);
                s.drain(..cut);
            }
            st.tail = s;
        }
        self.strict = Some(st);
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
        // Candidates first, so a path that also appears as a hash part counts as seen.
        self.update_candidates(data);
        if self.strict.is_some() {
            self.scan_store_paths(data);
        }
    }

    fn update_candidates(&mut self, data: &[u8]) {
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

    const C: &str = "0c3x7lb1wxgq9r3h0bqgn2j6fxf33cbp";

    #[test]
    fn strict_scan_names_the_first_store_path_not_sent_across_any_chunking() {
        // A mentions B by its hash part only (a reference, as Nix counts them), itself, and C,
        // which is not a candidate: C is what the host left out.
        let text = alloc::format!("#!/nix/store/{A}-sh\n {B} /nix/store//nix/store/{C}-lib-1.0/lib;/nix/store/{B}-b");
        for chunk in [1usize, 2, 5, 11, 31, 43, 44, 45, 64, 1000] {
            let mut s = RefScanner::strict([A, B]);
            for c in text.as_bytes().chunks(chunk) {
                s.update(c);
            }
            assert_eq!(s.unknown(), Some(alloc::format!("/nix/store/{C}-lib-1.0")), "chunk {chunk}");
            assert_eq!(s.found().collect::<Vec<_>>(), [B.to_string(), A.to_string()], "chunk {chunk}");
        }
        // Everything sent: nothing unknown. Not a store path: a hash without the prefix or
        // the '-', a non-nix32 character, 31 digits.
        let fine = alloc::format!("/nix/store/{A}-x {C} /nix/store/{C} /nix/store/{C}/ /nix/store/e{}-x /nix/store/{}-x", &C[1..], &C[1..]);
        for chunk in [1usize, 7, 44, 1000] {
            let mut s = RefScanner::strict([A]);
            for c in fine.as_bytes().chunks(chunk) {
                s.update(c);
            }
            assert_eq!(s.unknown(), None, "chunk {chunk}");
        }
        // Not strict: never reports.
        let mut s = RefScanner::new([A]);
        s.update(text.as_bytes());
        assert_eq!(s.unknown(), None);
    }
}
