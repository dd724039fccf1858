//! The agent's log: a ring of lines in memory, carried to the loader in `Log` frames.
//!
//! Writing a log line to the serial port costs two VM exits per byte (an `out` and a status
//! `in`), each a #VC/#VE round trip under SEV-SNP or TDX. The agent instead appends each line to
//! this ring (no exit at all) and the channel drains it into `Log` frames with the next frame it
//! writes (docs/channel.md). When the ring is full the oldest lines go, and the next line
//! drained says how many were lost. The serial port is used only for a fatal error before the
//! channel exists, or when the loader asks for a debug log (the request disk's flag).
//!
//! A record is `[level u8][length u16 LE][text]`; the ring never splits a record's header from
//! its text in a way a reader could misparse (it copies byte by byte modulo the capacity).

/// Bytes of the agent's ring.
pub const CAPACITY: usize = 64 << 10;
/// The longest line kept (longer ones are cut, with "…" at the end).
pub const MAX_LINE: usize = 1024;

/// A ring of `N` bytes of log records.
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Index of the oldest record's first byte.
    head: usize,
    /// Bytes in use.
    len: usize,
    /// Lines dropped since the last drain.
    dropped: u64,
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogRing<N> {
    pub const fn new() -> Self {
        LogRing { buf: [0; N], head: 0, len: 0, dropped: 0 }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.dropped == 0
    }

    fn byte(&self, i: usize) -> u8 {
        self.buf[(self.head + i) % N]
    }

    /// The record at the head: (level, text length).
    fn head_record(&self) -> (u8, usize) {
        (self.byte(0), usize::from(u16::from_le_bytes([self.byte(1), self.byte(2)])))
    }

    fn drop_oldest(&mut self) {
        let (_, n) = self.head_record();
        self.head = (self.head + 3 + n) % N;
        self.len -= 3 + n;
        self.dropped += 1;
    }

    /// Appends a line (cut at [`MAX_LINE`] bytes), dropping the oldest lines to make room.
    pub fn push(&mut self, level: u8, text: &[u8]) {
        let text = &text[..text.len().min(MAX_LINE).min(N.saturating_sub(3))];
        let need = 3 + text.len();
        if need > N {
            self.dropped += 1;
            return;
        }
        while N - self.len < need {
            self.drop_oldest();
        }
        let len = text.len() as u16;
        let mut at = (self.head + self.len) % N;
        for &b in [level].iter().chain(&len.to_le_bytes()).chain(text) {
            self.buf[at] = b;
            at = (at + 1) % N;
        }
        self.len += need;
    }

    /// Hands every line, oldest first, to `f(level, text)` and empties the ring; a count of
    /// lines lost to a full ring comes first, as a warning of its own.
    pub fn drain(&mut self, mut f: impl FnMut(u8, &[u8])) {
        if self.dropped > 0 {
            let mut line = [0u8; 64];
            let n = write_lost(&mut line, self.dropped);
            f(LEVEL_WARN, &line[..n]);
            self.dropped = 0;
        }
        let mut text = [0u8; MAX_LINE];
        while self.len > 0 {
            let (level, n) = self.head_record();
            for (i, t) in text[..n].iter_mut().enumerate() {
                *t = self.byte(3 + i);
            }
            self.head = (self.head + 3 + n) % N;
            self.len -= 3 + n;
            f(level, &text[..n]);
        }
        self.head = 0;
    }

    /// Hands every line to `f` without removing it (a debug log replays the backlog).
    pub fn peek(&self, mut f: impl FnMut(u8, &[u8])) {
        let mut text = [0u8; MAX_LINE];
        let mut off = 0;
        while off < self.len {
            let level = self.byte(off);
            let n = usize::from(u16::from_le_bytes([self.byte(off + 1), self.byte(off + 2)]));
            for (i, t) in text[..n].iter_mut().enumerate() {
                *t = self.byte(off + 3 + i);
            }
            f(level, &text[..n]);
            off += 3 + n;
        }
    }
}

/// Levels as `log::Level` numbers them (Error = 1 … Trace = 5), which `Log` frames carry.
pub const LEVEL_WARN: u8 = 2;

/// The level's name as the agent's log shows it.
pub fn level_name(level: u8) -> &'static str {
    match level {
        1 => "ERROR",
        2 => "WARN",
        3 => "INFO",
        4 => "DEBUG",
        _ => "TRACE",
    }
}

fn write_lost(out: &mut [u8; 64], n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let parts: [&[u8]; 3] = [b"log: ", &digits[i..], b" lines lost (the log ring was full)"];
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    at
}

/// A `core::fmt::Write` into a fixed line buffer that cuts what does not fit (with "…").
pub struct Line {
    buf: [u8; MAX_LINE],
    len: usize,
    cut: bool,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    pub const fn new() -> Self {
        Line { buf: [0; MAX_LINE], len: 0, cut: false }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        const ELLIPSIS: &[u8] = "…".as_bytes();
        if self.cut {
            return Ok(());
        }
        let room = MAX_LINE - ELLIPSIS.len() - self.len;
        if s.len() <= room {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        // Cut on a character boundary, so the line stays UTF-8.
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.buf[self.len..self.len + end].copy_from_slice(&s.as_bytes()[..end]);
        self.len += end;
        self.buf[self.len..self.len + ELLIPSIS.len()].copy_from_slice(ELLIPSIS);
        self.len += ELLIPSIS.len();
        self.cut = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write;

    fn lines<const N: usize>(r: &mut LogRing<N>) -> Vec<(u8, String)> {
        let mut v = Vec::new();
        r.drain(|l, t| v.push((l, String::from_utf8(t.to_vec()).unwrap())));
        v
    }

    #[test]
    fn lines_come_out_in_order_and_the_ring_empties() {
        let mut r = LogRing::<256>::new();
        assert!(r.is_empty());
        r.push(3, b"one");
        r.push(1, b"two");
        let mut seen = Vec::new();
        r.peek(|l, t| seen.push((l, t.to_vec())));
        assert_eq!(seen, [(3, b"one".to_vec()), (1, b"two".to_vec())]);
        assert_eq!(lines(&mut r), [(3, "one".into()), (1, "two".into())]);
        assert!(r.is_empty());
        assert_eq!(lines(&mut r), []);
    }

    #[test]
    fn a_full_ring_drops_the_oldest_lines_and_says_how_many() {
        let mut r = LogRing::<64>::new();
        for i in 0..20 {
            r.push(3, alloc::format!("line {i:02}").as_bytes()); // 3 + 7 bytes each
        }
        let got = lines(&mut r);
        // 64 bytes hold 6 records of 10: the last 6 survive, the first 14 are reported lost.
        assert_eq!(got[0], (LEVEL_WARN, "log: 14 lines lost (the log ring was full)".into()));
        let kept: Vec<&str> = got[1..].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(kept, ["line 14", "line 15", "line 16", "line 17", "line 18", "line 19"]);
    }

    #[test]
    fn records_wrap_around_the_end_of_the_buffer() {
        let mut r = LogRing::<32>::new();
        let mut want = Vec::new();
        for i in 0..50u8 {
            let text = alloc::vec![b'a' + i % 26; usize::from(i % 7)];
            r.push(i % 5, &text);
            want.push((i % 5, String::from_utf8(text).unwrap()));
            if i % 3 == 2 {
                let got = lines(&mut r);
                let lost = got.first().is_some_and(|(_, t)| t.starts_with("log: "));
                let got = if lost { &got[1..] } else { &got[..] };
                assert_eq!(got, &want[want.len() - got.len()..]);
                want.clear();
            }
        }
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let mut l = Line::new();
        for _ in 0..MAX_LINE {
            write!(l, "é").unwrap();
        }
        let s = core::str::from_utf8(l.as_bytes()).unwrap();
        assert!(s.ends_with('…'));
        assert!(l.as_bytes().len() <= MAX_LINE);
        let mut r = LogRing::<{ 4 * MAX_LINE }>::new();
        r.push(3, &[b'x'; 5000]);
        assert_eq!(lines(&mut r)[0].1.len(), MAX_LINE);
    }
}
