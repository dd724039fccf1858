//! Just enough JSON for `__structuredAttrs`: parse the derivation's `__json` value and print it
//! back byte for byte as Nix 2.8 does (nlohmann::json's `dump()`: compact, object keys in byte
//! order, only `"`, `\` and control characters escaped, UTF-8 passed through).
//!
//! Floating-point numbers are refused: nlohmann prints them with its own shortest-round-trip
//! algorithm, and a value we cannot reproduce exactly must fail the build loudly rather than
//! produce a `.attrs.json` that differs from Nix's.
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

/// Nesting limit: the input comes from the host, and recursion must stay bounded.
pub const MAX_DEPTH: usize = 128;

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json, JsonError> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Syntax(p.i));
    }
    Ok(v)
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

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.ws();
        let start = self.i;
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut map = BTreeMap::new();
                self.ws();
                if self.eat(b"}") {
                    return Ok(Json::Object(map));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(JsonError::Syntax(self.i));
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return Err(JsonError::Syntax(self.i));
                    }
                    let v = self.value(depth + 1)?;
                    map.insert(k, v);
                    self.ws();
                    if self.eat(b"}") {
                        return Ok(Json::Object(map));
                    }
                    if !self.eat(b",") {
                        return Err(JsonError::Syntax(self.i));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b"]") {
                        return Ok(Json::Array(items));
                    }
                    if !self.eat(b",") {
                        return Err(JsonError::Syntax(self.i));
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') if self.eat(b"true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat(b"false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat(b"null") => Ok(Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(start),
            _ => Err(JsonError::Syntax(start)),
        }
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

/// Prints `v` as nlohmann::json's `dump()` (no indent, `ensure_ascii = false`) does.
pub fn dump(v: &Json, out: &mut String) {
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
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_string(k, out);
                out.push(':');
                dump(item, out);
            }
            out.push('}');
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
