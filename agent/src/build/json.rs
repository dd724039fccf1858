//! Just enough JSON for `__structuredAttrs`: parse the derivation's `__json` value and print it
//! back byte for byte as Nix 2.8 does (nlohmann::json's `dump()`: compact, object keys in byte
//! order, only `"`, `\` and control characters escaped, UTF-8 passed through).
//!
//! Floating-point numbers are refused: nlohmann prints them with its own shortest-round-trip
//! algorithm, and a value we cannot reproduce exactly must fail the build loudly rather than
//! produce a `.attrs.json` that differs from Nix's.
//!
//! The text comes from the host (inside a `.drv`), so nothing here recurses on its nesting:
//! the parser, the printer and `Drop` keep their own stacks on the heap. [`MAX_DEPTH`] only
//! bounds that memory.
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// A JSON value. Objects are `BTreeMap`s: byte-ordered keys, later duplicates win — as
/// nlohmann's `std::map`-backed objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    /// nlohmann's `number_integer` (negative) and `number_unsigned` (non-negative).
    Int(i128),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

/// Why a `__json` value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Malformed JSON at this byte offset.
    Syntax(usize),
    /// A floating-point number (or an integer outside 64 bits) at this byte offset.
    UnsupportedNumber(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Nesting limit (the parser's stack is on the heap; this bounds it).
pub const MAX_DEPTH: usize = 4096;

/// `Drop` without recursion: a deeply nested value is taken apart with a work list.
impl Drop for Json {
    fn drop(&mut self) {
        let mut work: Vec<Json> = Vec::new();
        let take = |j: &mut Json, work: &mut Vec<Json>| match j {
            Json::Array(items) if !items.is_empty() => work.append(items),
            Json::Object(map) if !map.is_empty() => work.extend(core::mem::take(map).into_values()),
            _ => {}
        };
        take(self, &mut work);
        while let Some(mut j) = work.pop() {
            take(&mut j, &mut work);
            // `j` drops here with no children left.
        }
    }
}

/// A container being parsed.
enum Open {
    Array(Vec<Json>),
    /// The object so far and the key whose value is being parsed.
    Object(BTreeMap<String, Json>, String),
}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json, JsonError> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let mut stack: Vec<Open> = Vec::new();
    'value: loop {
        // One value: a scalar or an empty container completes; otherwise a container opens.
        let mut v = match p.value_start()? {
            Start::Value(v) => v,
            Start::Array => {
                stack.push(Open::Array(Vec::new()));
                if stack.len() > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                continue 'value;
            }
            Start::Object(key) => {
                stack.push(Open::Object(BTreeMap::new(), key));
                if stack.len() > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                continue 'value;
            }
        };
        // A complete value: into its container, closing containers as they end.
        loop {
            p.ws();
            match stack.last_mut() {
                None => {
                    if p.i != p.s.len() {
                        return Err(JsonError::Syntax(p.i));
                    }
                    return Ok(v);
                }
                Some(Open::Array(items)) => {
                    items.push(v);
                    if p.eat(b",") {
                        continue 'value;
                    }
                    if !p.eat(b"]") {
                        return Err(JsonError::Syntax(p.i));
                    }
                    let Some(Open::Array(items)) = stack.pop() else { unreachable!() };
                    v = Json::Array(items);
                }
                Some(Open::Object(map, key)) => {
                    map.insert(core::mem::take(key), v);
                    if p.eat(b",") {
                        *key = p.key()?;
                        continue 'value;
                    }
                    if !p.eat(b"}") {
                        return Err(JsonError::Syntax(p.i));
                    }
                    let Some(Open::Object(map, _)) = stack.pop() else { unreachable!() };
                    v = Json::Object(map);
                }
            }
        }
    }
}

/// How a value starts.
enum Start {
    /// A scalar or an empty container: complete.
    Value(Json),
    /// `[` and a first element follows.
    Array,
    /// `{` and the first key (its `:` read); its value follows.
    Object(String),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// `ws "key" ws :` — an object key and its colon.
    fn key(&mut self) -> Result<String, JsonError> {
        self.ws();
        if self.s.get(self.i) != Some(&b'"') {
            return Err(JsonError::Syntax(self.i));
        }
        let k = self.string()?;
        self.ws();
        if !self.eat(b":") {
            return Err(JsonError::Syntax(self.i));
        }
        Ok(k)
    }

    fn value_start(&mut self) -> Result<Start, JsonError> {
        self.ws();
        let start = self.i;
        Ok(Start::Value(match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if !self.eat(b"}") {
                    return Ok(Start::Object(self.key()?));
                }
                Json::Object(BTreeMap::new())
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if !self.eat(b"]") {
                    return Ok(Start::Array);
                }
                Json::Array(Vec::new())
            }
            Some(b'"') => Json::String(self.string()?),
            Some(b't') if self.eat(b"true") => Json::Bool(true),
            Some(b'f') if self.eat(b"false") => Json::Bool(false),
            Some(b'n') if self.eat(b"null") => Json::Null,
            Some(b'-' | b'0'..=b'9') => self.number(start)?,
            _ => return Err(JsonError::Syntax(start)),
        }))
    }

    fn number(&mut self, start: usize) -> Result<Json, JsonError> {
        let neg = self.eat(b"-");
        let digits = self.i;
        while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let text = &self.s[digits..self.i];
        if text.is_empty() || (text.len() > 1 && text[0] == b'0') {
            return Err(JsonError::Syntax(start));
        }
        if matches!(self.s.get(self.i), Some(b'.' | b'e' | b'E')) {
            return Err(JsonError::UnsupportedNumber(start));
        }
        let mut n: i128 = 0;
        for &d in text {
            n = n * 10 + i128::from(d - b'0');
            if n > i128::from(u64::MAX) {
                return Err(JsonError::UnsupportedNumber(start));
            }
        }
        let n = if neg { -n } else { n };
        if n < i128::from(i64::MIN) {
            return Err(JsonError::UnsupportedNumber(start));
        }
        Ok(Json::Int(n))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self.s.get(self.i..self.i + 4).ok_or(JsonError::Syntax(self.i))?;
        let h = core::str::from_utf8(h).map_err(|_| JsonError::Syntax(self.i))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| JsonError::Syntax(self.i))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let at = self.i;
            let c = *self.s.get(at).ok_or(JsonError::Syntax(at))?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = *self.s.get(self.i).ok_or(JsonError::Syntax(self.i))?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.eat(b"\\u") {
                                    return Err(JsonError::Syntax(self.i));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(JsonError::Syntax(self.i));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or(JsonError::Syntax(at))?);
                        }
                        _ => return Err(JsonError::Syntax(at)),
                    }
                }
                0..=0x1f => return Err(JsonError::Syntax(at)),
                _ => {
                    // Copy one UTF-8 sequence (the input is a &str, so it is well formed).
                    let len = match c {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let chunk = self.s.get(at..at + len).ok_or(JsonError::Syntax(at))?;
                    out.push_str(core::str::from_utf8(chunk).map_err(|_| JsonError::Syntax(at))?);
                    self.i += len;
                }
            }
        }
    }
}

/// Prints `v` as nlohmann::json's `dump()` (no indent, `ensure_ascii = false`) does, with a
/// work list rather than recursion.
pub fn dump(v: &Json, out: &mut String) {
    enum Step<'a> {
        Value(&'a Json),
        Key(&'a str),
        Text(&'static str),
    }
    let mut work = alloc::vec![Step::Value(v)];
    while let Some(step) = work.pop() {
        let v = match step {
            Step::Text(t) => {
                out.push_str(t);
                continue;
            }
            Step::Key(k) => {
                dump_string(k, out);
                out.push(':');
                continue;
            }
            Step::Value(v) => v,
        };
        match v {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => {
                use core::fmt::Write;
                let _ = write!(out, "{n}");
            }
            Json::String(s) => dump_string(s, out),
            Json::Array(items) => {
                out.push('[');
                work.push(Step::Text("]"));
                for (i, item) in items.iter().enumerate().rev() {
                    work.push(Step::Value(item));
                    if i > 0 {
                        work.push(Step::Text(","));
                    }
                }
            }
            Json::Object(map) => {
                out.push('{');
                work.push(Step::Text("}"));
                for (i, (k, item)) in map.iter().enumerate().rev() {
                    work.push(Step::Value(item));
                    work.push(Step::Key(k));
                    if i > 0 {
                        work.push(Step::Text(","));
                    }
                }
            }
        }
    }
}

/// A JSON string literal, escaped as nlohmann's `serializer::dump_escaped` with
/// `ensure_ascii = false` does (also what the statement uses).
pub fn dump_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use core::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::string::ToString;

    fn round(s: &str) -> String {
        let mut out = String::new();
        dump(&parse(s).unwrap(), &mut out);
        out
    }

    #[test]
    fn prints_compact_with_sorted_keys() {
        assert_eq!(round(r#" { "b" : [1, -2, true, null], "a": {"z":"x", "y": {}} } "#),
                   r#"{"a":{"y":{},"z":"x"},"b":[1,-2,true,null]}"#);
    }

    #[test]
    fn nesting_to_the_limit_parses_prints_and_drops_on_a_small_stack() {
        // The text is the host's: nesting must not cost stack (the agent's is 64 KiB). The
        // recursive parser allowed 128 levels at ~224 bytes each (29 KiB) in the agent.
        let text = alloc::format!("{}{}{}", "[{\"k\":".repeat(MAX_DEPTH / 2), "[]", "}]".repeat(MAX_DEPTH / 2));
        let t = std::thread::Builder::new()
            .stack_size(32 << 10)
            .spawn(move || {
                let v = parse(&text).unwrap();
                let mut out = String::new();
                dump(&v, &mut out);
                out == text
            })
            .unwrap();
        assert!(t.join().unwrap());
        // Whitespace everywhere, nested objects and arrays mixed.
        assert_eq!(round(" [ { \"a\" : [ [ ] , { } , 1 ] } , [ [ \"x\" ] ] ] "), r#"[{"a":[[],{},1]},[["x"]]]"#);
    }

    #[test]
    fn later_duplicate_keys_win() {
        assert_eq!(round(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }

    #[test]
    fn escapes_like_nlohmann() {
        assert_eq!(round(r#""q\" b\\ n\n t\t c\u0001 s\/ é \u00e9 \ud83d\ude00""#),
                   "\"q\\\" b\\\\ n\\n t\\t c\\u0001 s/ é é 😀\"");
    }

    #[test]
    fn refuses_floats_and_huge_numbers() {
        assert_eq!(parse("1.5"), Err(JsonError::UnsupportedNumber(0)));
        assert_eq!(parse("[1e3]"), Err(JsonError::UnsupportedNumber(1)));
        assert_eq!(parse("18446744073709551616"), Err(JsonError::UnsupportedNumber(0)));
        assert_eq!(round("18446744073709551615"), "18446744073709551615");
        assert_eq!(round("-9223372036854775808"), "-9223372036854775808");
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in ["", "{", "[1,]", "{\"a\"}", "01", "\"\\x\"", "\"\u{1}\"", "tru", "[1] x", "\"\\ud800\""] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(&deep), Err(JsonError::TooDeep));
        for bad in ["[1 2]", "{\"a\":1 \"b\":2}", "{\"a\" 1}", "{,}", "[,1]", "{\"a\":1,}", "]", "[}", "{]"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("[]").unwrap().to_string_lossy(), "[]");
    }

    impl Json {
        fn to_string_lossy(&self) -> String {
            let mut s = String::new();
            dump(self, &mut s);
            s.to_string()
        }
    }
}
