//! Derivations (`libstore/derivations.cc` in Nix 2.8): the ATerm format, `hashDerivationModulo`,
//! and the store paths of a derivation's outputs and of the `.drv` file itself.
//!
//! The parser is strict: besides Nix's own syntax checks it requires the text to be exactly what
//! Nix prints for the parsed value ([`parse`] returns [`DrvError::NotCanonical`] otherwise), so
//! the hash the agent computes over the bytes always describes the value it acts on.
use super::hash::{Algo, Hash};
use super::store_path::{self, Method, PathError, StorePath};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

/// One output as the ATerm records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The store path ("" when masked).
    pub path: String,
    /// "" (input-addressed), or `[r:]ALGO` (fixed-output).
    pub hash_algo: String,
    /// "" or the fixed-output hash in base 16.
    pub hash: String,
}

/// A parsed derivation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Derivation {
    pub outputs: BTreeMap<String, Output>,
    /// Input derivation path → the output names used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Why a derivation was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrvError {
    /// Expected this text at this byte offset.
    Expected(&'static str, usize),
    /// The input ended inside a term.
    UnexpectedEnd,
    /// Bytes after the closing parenthesis.
    TrailingData(usize),
    /// Not UTF-8 (the agent models strings as UTF-8).
    NotUtf8,
    /// A path that is not a valid store path, at this byte offset.
    BadPath(usize, PathError),
    /// Parses, but Nix would print it differently (unsorted, duplicated, odd escapes).
    NotCanonical,
    /// Larger than the agent accepts.
    TooLarge,
    /// A fixed-output hash that does not parse.
    BadHash(String),
    /// A kind of derivation the agent does not build (content-addressed floating, impure).
    Unsupported(&'static str),
    /// An input derivation the caller could not supply.
    MissingInput(String),
    /// Input derivation bytes whose `.drv` path is not the path they were supplied for.
    InputMismatch(String),
    /// An input derivation that does not have the output asked for.
    MissingOutput { drv: String, output: String },
    /// A declared output path that differs from the one Nix computes.
    WrongOutputPath { output: String, declared: String, computed: String },
    /// An input derivation whose declared output path differs from the one Nix computes.
    WrongInputOutputPath { drv: String, output: String, declared: String, computed: String },
    /// An input derivation that is (transitively) its own input.
    Cycle(String),
    /// A computed path that is invalid (e.g. an invalid derivation name).
    Path(PathError),
}

impl From<PathError> for DrvError {
    fn from(e: PathError) -> Self {
        DrvError::Path(e)
    }
}

/// The largest `.drv` the agent parses.
pub const MAX_DRV_SIZE: usize = 64 << 20;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn expect(&mut self, lit: &'static str) -> Result<(), DrvError> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else if self.i + lit.len() > self.s.len() && lit.as_bytes().starts_with(&self.s[self.i..]) {
            Err(DrvError::UnexpectedEnd)
        } else {
            Err(DrvError::Expected(lit, self.i))
        }
    }

    /// `parseString`: `"`, then bytes with `\n`, `\r`, `\t` and `\X` -> X, until `"`.
    fn string(&mut self) -> Result<String, DrvError> {
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or(DrvError::UnexpectedEnd)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or(DrvError::UnexpectedEnd)?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|_| DrvError::NotUtf8)
    }

    fn path(&mut self) -> Result<String, DrvError> {
        let at = self.i;
        let s = self.string()?;
        StorePath::parse(&s).map_err(|e| DrvError::BadPath(at, e))?;
        Ok(s)
    }

    /// `endOfList`: `,` continues, `]` ends.
    fn end_of_list(&mut self, first: bool) -> Result<bool, DrvError> {
        match self.s.get(self.i) {
            Some(b']') => {
                self.i += 1;
                Ok(true)
            }
            Some(b',') if !first => {
                self.i += 1;
                Ok(false)
            }
            _ if first => Ok(false),
            None => Err(DrvError::UnexpectedEnd),
            _ => Err(DrvError::Expected(",", self.i)),
        }
    }

    fn strings(&mut self, paths: bool) -> Result<Vec<String>, DrvError> {
        self.expect("[")?;
        let mut v = Vec::new();
        let mut first = true;
        while !self.end_of_list(first)? {
            first = false;
            v.push(if paths { self.path()? } else { self.string()? });
        }
        Ok(v)
    }
}

/// Parses a `.drv` file's ATerm, strictly (see the module docs).
pub fn parse(text: &[u8]) -> Result<Derivation, DrvError> {
    if text.len() > MAX_DRV_SIZE {
        return Err(DrvError::TooLarge);
    }
    let mut p = Parser { s: text, i: 0 };
    let mut d = Derivation::default();
    p.expect("Derive([")?;
    let mut first = true;
    while !p.end_of_list(first)? {
        first = false;
        p.expect("(")?;
        let name = p.string()?;
        p.expect(",")?;
        let at = p.i;
        let path = p.string()?;
        if !path.is_empty() {
            StorePath::parse(&path).map_err(|e| DrvError::BadPath(at, e))?;
        }
        p.expect(",")?;
        let hash_algo = p.string()?;
        p.expect(",")?;
        let hash = p.string()?;
        p.expect(")")?;
        d.outputs.insert(name, Output { path, hash_algo, hash });
    }
    p.expect(",[")?;
    first = true;
    while !p.end_of_list(first)? {
        first = false;
        p.expect("(")?;
        let path = p.path()?;
        p.expect(",")?;
        let outs = p.strings(false)?;
        p.expect(")")?;
        d.input_drvs.insert(path, crate::btree::set(outs));
    }
    p.expect(",")?;
    d.input_srcs = crate::btree::set(p.strings(true)?);
    p.expect(",")?;
    d.platform = p.string()?;
    p.expect(",")?;
    d.builder = p.string()?;
    p.expect(",")?;
    d.args = p.strings(false)?;
    p.expect(",[")?;
    first = true;
    while !p.end_of_list(first)? {
        first = false;
        p.expect("(")?;
        let k = p.string()?;
        p.expect(",")?;
        let v = p.string()?;
        p.expect(")")?;
        d.env.insert(k, v);
    }
    p.expect(")")?;
    if p.i != text.len() {
        return Err(DrvError::TrailingData(p.i));
    }
    if print(&d).as_bytes() != text {
        return Err(DrvError::NotCanonical);
    }
    Ok(d)
}

/// `printString`: escapes `"`, `\`, newline, carriage return and tab.
fn print_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `printUnquotedString`: no escaping (paths, names, hashes).
fn print_unquoted(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

fn print_list<'a>(out: &mut String, items: impl Iterator<Item = &'a String>, quoted: bool) {
    out.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if quoted {
            print_string(out, s);
        } else {
            print_unquoted(out, s);
        }
    }
    out.push(']');
}

/// `Derivation::unparse(store, false, nullptr)`.
pub fn print(d: &Derivation) -> String {
    unparse(d, false, None)
}

/// `Derivation::unparse(store, maskOutputs, actualInputs)`.
fn unparse(d: &Derivation, mask_outputs: bool, actual_inputs: Option<&BTreeMap<String, BTreeSet<String>>>) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str("Derive([");
    for (i, (name, o)) in d.outputs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('(');
        print_unquoted(&mut s, name);
        s.push(',');
        print_unquoted(&mut s, if mask_outputs { "" } else { &o.path });
        s.push(',');
        print_unquoted(&mut s, &o.hash_algo);
        s.push(',');
        print_unquoted(&mut s, &o.hash);
        s.push(')');
    }
    s.push_str("],[");
    for (i, (path, outs)) in actual_inputs.unwrap_or(&d.input_drvs).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('(');
        print_unquoted(&mut s, path);
        s.push(',');
        print_list(&mut s, outs.iter(), false);
        s.push(')');
    }
    s.push_str("],");
    print_list(&mut s, d.input_srcs.iter(), false);
    s.push(',');
    print_unquoted(&mut s, &d.platform);
    s.push(',');
    print_string(&mut s, &d.builder);
    s.push(',');
    print_list(&mut s, d.args.iter(), true);
    s.push_str(",[");
    for (i, (k, v)) in d.env.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('(');
        print_string(&mut s, k);
        s.push(',');
        print_string(&mut s, if mask_outputs && d.outputs.contains_key(k) { "" } else { v });
        s.push(')');
    }
    s.push_str("])");
    s
}

/// A fixed-output derivation's declared content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedOutput {
    pub method: Method,
    pub hash: Hash,
}

impl FixedOutput {
    /// `printMethodAlgo`: `r:sha256` or `sha256`.
    pub fn method_algo(&self) -> String {
        let mut s = String::new();
        if self.method == Method::Recursive {
            s.push_str("r:");
        }
        s.push_str(self.hash.algo.name());
        s
    }
}

impl Derivation {
    /// The derivation's name (what `builtins.derivation` names the `.drv` and its outputs
    /// after): `env.name`, or `name` inside `__json` under structured attributes. Where the
    /// `.drv` path is known, its name part is authoritative (Nix's `Derivation::name`).
    pub fn name(&self) -> Option<String> {
        if let Some(n) = self.env.get("name") {
            return Some(n.clone());
        }
        match &crate::build::json::parse(self.env.get("__json")?) {
            Ok(crate::build::json::Json::Object(m)) => match m.get("name") {
                Some(crate::build::json::Json::String(n)) => Some(n.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// `Derivation::type()`, restricted to what the agent builds: `Some` for fixed-output (one
    /// output `out` with a hash), `None` for input-addressed.
    pub fn fixed_output(&self) -> Result<Option<FixedOutput>, DrvError> {
        let any_hash = self.outputs.values().any(|o| !o.hash_algo.is_empty() || !o.hash.is_empty());
        if !any_hash {
            return Ok(None);
        }
        let (Some(o), 1) = (self.outputs.get("out"), self.outputs.len()) else {
            return Err(DrvError::Unsupported("content-addressed derivation with several outputs"));
        };
        if o.hash.is_empty() {
            return Err(DrvError::Unsupported("floating content-addressed derivation"));
        }
        let (method, algo) = match o.hash_algo.strip_prefix("r:") {
            Some(a) => (Method::Recursive, a),
            None if o.hash_algo.contains(':') => return Err(DrvError::Unsupported("text-hashed derivation output")),
            None => (Method::Flat, o.hash_algo.as_str()),
        };
        let algo = Algo::from_name(algo).ok_or_else(|| DrvError::BadHash(o.hash_algo.clone()))?;
        let hash = Hash::parse_unprefixed(&o.hash, algo).ok_or_else(|| DrvError::BadHash(o.hash.clone()))?;
        Ok(Some(FixedOutput { method, hash }))
    }

    /// The store paths this derivation's `.drv` file refers to: its sources and input `.drv`s.
    pub fn references(&self) -> Result<BTreeSet<StorePath>, DrvError> {
        self.input_srcs
            .iter()
            .chain(self.input_drvs.keys())
            .map(|p| StorePath::parse(p).map_err(DrvError::Path))
            .try_fold(BTreeSet::new(), |mut s, p| {
                s.insert(p?);
                Ok(s)
            })
    }
}

/// The store path of a `.drv` file with these bytes (`writeDerivation`: a text path named
/// `<name>.drv` whose references are the input sources and input derivations).
pub fn drv_path(name: &str, aterm: &[u8], drv: &Derivation) -> Result<StorePath, DrvError> {
    let mut file = String::from(name);
    file.push_str(".drv");
    Ok(store_path::make_text_path(&file, &Hash::sha256(aterm), &drv.references()?)?)
}

/// Computes `hashDerivationModulo` for a derivation and its inputs, given a way to look up the
/// ATerm bytes of input derivations by path. Results are memoised per input path.
///
/// The bytes come from the host, so each input is checked before it is used: it must parse
/// (strictly), its own `.drv` path, recomputed from those bytes, must be the path it was looked
/// up by ([`DrvError::InputMismatch`] otherwise), and every output path it declares must be the
/// one Nix computes for it ([`DrvError::WrongInputOutputPath`]) — what Nix checks when it
/// writes a `.drv` (`Derivation::checkInvariants`), so the input paths the builder is given are
/// the ones the derivation really names.
///
/// The walk over the input graph is iterative (an explicit stack on the heap): the depth of the
/// graph is chosen by the host, and recursion would spend the agent's fixed boot stack on it.
pub struct Resolver<'a> {
    lookup: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// Input `.drv` path → `hashDerivationModulo(input, false)` (output name → hash).
    cache: BTreeMap<String, BTreeMap<String, Hash>>,
}

/// One input derivation on the resolver's stack: its inputs still to visit.
struct Frame {
    path: String,
    name: String,
    drv: Derivation,
    pending: Vec<String>,
}

/// The name part of a `.drv` path (`Derivation::nameFromPath`): what Nix names the outputs of
/// a derivation it read from the store after.
fn name_from_drv_path(path: &str) -> Result<String, DrvError> {
    let sp = StorePath::parse(path)?;
    sp.name().strip_suffix(".drv").map(String::from).ok_or_else(|| DrvError::InputMismatch(path.into()))
}

/// `"fixed:out:<method algo>:<hex>:<output path>"`, hashed: a fixed-output derivation's
/// `hashDerivationModulo`, which depends only on its declared content and name.
fn fixed_hash_modulo(fixed: &FixedOutput, name: &str) -> Result<(StorePath, Hash), DrvError> {
    let path = store_path::make_fixed_output_path(fixed.method, &fixed.hash, &store_path::output_path_name(name, "out"))?;
    let mut s = String::from("fixed:out:");
    s.push_str(&fixed.method_algo());
    s.push(':');
    s.push_str(&fixed.hash.to_hex());
    s.push(':');
    s.push_str(&path.to_path());
    Ok((path, Hash::sha256(s.as_bytes())))
}

impl<'a> Resolver<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<Vec<u8>>) -> Self {
        Self { lookup, cache: BTreeMap::new() }
    }

    /// An input derivation: its name (from its path) and its bytes, parsed and checked against
    /// its path.
    pub fn input(&self, path: &str) -> Result<(String, Derivation), DrvError> {
        let bytes = (self.lookup)(path).ok_or_else(|| DrvError::MissingInput(path.into()))?;
        let d = parse(&bytes)?;
        let name = name_from_drv_path(path)?;
        if drv_path(&name, &bytes, &d)? != StorePath::parse(path)? {
            return Err(DrvError::InputMismatch(path.into()));
        }
        Ok((name, d))
    }

    /// Checks every input derivation of `d`, transitively, and records its
    /// `hashDerivationModulo`: a post-order walk with an explicit stack. Inputs of a
    /// fixed-output input are not visited (its hash does not depend on them, as in Nix).
    pub fn resolve_inputs(&mut self, d: &Derivation) -> Result<(), DrvError> {
        let mut roots: Vec<String> = d.input_drvs.keys().rev().cloned().collect();
        let mut stack: Vec<Frame> = Vec::new();
        let mut on_stack: BTreeSet<String> = BTreeSet::new();
        loop {
            let next = match stack.last_mut() {
                Some(top) => match top.pending.pop() {
                    Some(p) => p,
                    None => {
                        // Every input of the top frame is resolved: resolve it.
                        let f = stack.pop().expect("a top frame");
                        on_stack.remove(&f.path);
                        let h = self.finish_input(&f)?;
                        self.cache.insert(f.path, h);
                        continue;
                    }
                },
                None => match roots.pop() {
                    Some(p) => p,
                    None => return Ok(()),
                },
            };
            if self.cache.contains_key(&next) {
                continue;
            }
            if on_stack.contains(&next) {
                // Cannot happen with honest paths (a .drv's path hashes its inputs' paths).
                return Err(DrvError::Cycle(next));
            }
            let (name, drv) = self.input(&next)?;
            let pending = if drv.fixed_output()?.is_some() { Vec::new() } else { drv.input_drvs.keys().rev().cloned().collect() };
            on_stack.insert(next.clone());
            stack.push(Frame { path: next, name, drv, pending });
        }
    }

    /// An input whose own inputs are all resolved: its `hashDerivationModulo(…, false)`, after
    /// checking the output paths it declares.
    fn finish_input(&self, f: &Frame) -> Result<BTreeMap<String, Hash>, DrvError> {
        let wrong = |output: &str, computed: &StorePath| DrvError::WrongInputOutputPath {
            drv: f.path.clone(),
            output: output.into(),
            declared: f.drv.outputs.get(output).map(|o| o.path.clone()).unwrap_or_default(),
            computed: computed.to_path(),
        };
        if let Some(fixed) = f.drv.fixed_output()? {
            let (path, h) = fixed_hash_modulo(&fixed, &f.name)?;
            if f.drv.outputs["out"].path != path.to_path() {
                return Err(wrong("out", &path));
            }
            return Ok(BTreeMap::from([(String::from("out"), h)]));
        }
        let masked = self.hash_of(&f.drv, true)?;
        for o in f.drv.outputs.keys() {
            let computed = store_path::make_output_path(o, &masked, &f.name)?;
            if f.drv.outputs[o].path != computed.to_path() {
                return Err(wrong(o, &computed));
            }
        }
        let h = self.hash_of(&f.drv, false)?;
        Ok(crate::btree::map(f.drv.outputs.keys().map(|o| (o.clone(), h.clone()))))
    }

    /// The hash of an input-addressed derivation whose inputs are all resolved: its ATerm with
    /// each input `.drv` path replaced by the hex of that input's hash modulo.
    fn hash_of(&self, d: &Derivation, mask_outputs: bool) -> Result<Hash, DrvError> {
        let mut inputs2: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, outputs) in &d.input_drvs {
            let hashes = self.cache.get(path).ok_or_else(|| DrvError::MissingInput(path.clone()))?;
            for o in outputs {
                let h = hashes.get(o).ok_or_else(|| DrvError::MissingOutput { drv: path.clone(), output: o.clone() })?;
                inputs2.entry(h.to_hex()).or_default().insert(o.clone());
            }
        }
        Ok(Hash::sha256(unparse(d, mask_outputs, Some(&inputs2)).as_bytes()))
    }

    /// `hashDerivationModulo(store, drv, maskOutputs)`: output name → hash.
    pub fn hash_modulo(&mut self, d: &Derivation, mask_outputs: bool) -> Result<BTreeMap<String, Hash>, DrvError> {
        if let Some(fixed) = d.fixed_output()? {
            let name = d.name().ok_or(DrvError::Unsupported("derivation without a name"))?;
            let (_, h) = fixed_hash_modulo(&fixed, &name)?;
            return Ok(BTreeMap::from([(String::from("out"), h)]));
        }
        self.resolve_inputs(d)?;
        let h = self.hash_of(d, mask_outputs)?;
        Ok(crate::btree::map(d.outputs.keys().map(|o| (o.clone(), h.clone()))))
    }

    /// The output paths of `d` as Nix computes them (`derivationStrictInternal` for
    /// input-addressed outputs; `makeFixedOutputPath` for fixed-output ones).
    pub fn output_paths(&mut self, d: &Derivation) -> Result<BTreeMap<String, StorePath>, DrvError> {
        let name = d.name().ok_or(DrvError::Unsupported("derivation without a name"))?;
        if let Some(fixed) = d.fixed_output()? {
            let p = store_path::make_fixed_output_path(fixed.method, &fixed.hash, &store_path::output_path_name(&name, "out"))?;
            return Ok(BTreeMap::from([(String::from("out"), p)]));
        }
        let hashes = self.hash_modulo(d, true)?;
        let mut out = BTreeMap::new();
        for (o, h) in hashes {
            let p = store_path::make_output_path(&o, &h, &name)?;
            out.insert(o, p);
        }
        Ok(out)
    }

    /// Checks that every output path the derivation declares is the one Nix computes.
    pub fn check_output_paths(&mut self, d: &Derivation) -> Result<BTreeMap<String, StorePath>, DrvError> {
        let computed = self.output_paths(d)?;
        for (o, p) in &computed {
            let declared = &d.outputs[o].path;
            if *declared != p.to_path() {
                return Err(DrvError::WrongOutputPath { output: o.clone(), declared: declared.clone(), computed: p.to_path() });
            }
        }
        Ok(computed)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    const SIMPLE: &str = r#"Derive([("out","/nix/store/bf1p72kl9f4i804w2slzxj1gjfxfzl5n-single-file","","")],[],["/nix/store/71fc7s32zl20dc955bhghy5dvalm7ndz-busybox"],"x86_64-linux","/nix/store/71fc7s32zl20dc955bhghy5dvalm7ndz-busybox/bin/busybox",["sh","-c","echo \"hi\"\n\\ \t"],[("name","single-file"),("out","/nix/store/bf1p72kl9f4i804w2slzxj1gjfxfzl5n-single-file")])"#;

    #[test]
    fn round_trips_byte_for_byte() {
        let d = parse(SIMPLE.as_bytes()).unwrap();
        assert_eq!(d.args[2], "echo \"hi\"\n\\ \t");
        assert_eq!(print(&d), SIMPLE);
    }

    #[test]
    fn each_malformation_has_its_error() {
        assert_eq!(parse(b"Derive(["), Err(DrvError::UnexpectedEnd));
        assert_eq!(parse(b"Derivx(["), Err(DrvError::Expected("Derive([", 0)));
        let trailing = alloc::format!("{SIMPLE} ");
        assert_eq!(parse(trailing.as_bytes()), Err(DrvError::TrailingData(SIMPLE.len())));
        let odd_escape = SIMPLE.replace("echo", "\\echo");
        assert_eq!(parse(odd_escape.as_bytes()), Err(DrvError::NotCanonical));
        let unsorted = SIMPLE.replace(r#"[("name","single-file"),("out","/nix/store/bf1p72kl9f4i804w2slzxj1gjfxfzl5n-single-file")]"#, r#"[("out","/nix/store/bf1p72kl9f4i804w2slzxj1gjfxfzl5n-single-file"),("name","single-file")]"#);
        assert_eq!(parse(unsorted.as_bytes()), Err(DrvError::NotCanonical));
        let bad_src = SIMPLE.replace(r#"["/nix/store/71fc7s32zl20dc955bhghy5dvalm7ndz-busybox"]"#, r#"["/tmp/x"]"#);
        assert!(matches!(parse(bad_src.as_bytes()), Err(DrvError::BadPath(_, PathError::NotInStore))));
        let bad_list = SIMPLE.replace(r#"["sh","-c""#, r#"["sh";"-c""#);
        assert!(matches!(parse(bad_list.as_bytes()), Err(DrvError::Expected(",", _))));
        assert_eq!(parse(&[b'D'; 10][..]), Err(DrvError::Expected("Derive([", 0)));
    }

    use core::cell::RefCell;

    /// A chain of `n` input-addressed derivations, each using the previous one's `out` (the
    /// shape of `tests/nix-corpus` `chain-N`, whose paths are checked against Nix there). Each
    /// output path is the one the resolver computes, so the chain is valid by construction;
    /// `corrupt` is the link whose declared output path is then replaced (its `.drv` path is
    /// still computed from the corrupted bytes). Returns the `.drv` files and the top one.
    fn chain(n: usize, corrupt: Option<usize>) -> (BTreeMap<String, Vec<u8>>, Derivation) {
        let drvs: RefCell<BTreeMap<String, Vec<u8>>> = RefCell::new(BTreeMap::new());
        let lookup = |p: &str| drvs.borrow().get(p).cloned();
        let mut r = Resolver::new(&lookup);
        let mut prev: Option<String> = None;
        let mut top = Derivation::default();
        for i in 0..n {
            let name = alloc::format!("link-{i}");
            let mut d = Derivation { platform: "x86_64-linux".into(), builder: "/bin/sh".into(), ..Derivation::default() };
            d.outputs.insert("out".into(), Output { path: String::new(), hash_algo: String::new(), hash: String::new() });
            d.env.insert("name".into(), name.clone());
            d.env.insert("out".into(), String::new());
            if let Some(p) = &prev {
                d.input_drvs.insert(p.clone(), BTreeSet::from([String::from("out")]));
            }
            // Past a corrupted link nothing resolves: those links get a dummy path.
            let mut out = match r.output_paths(&d) {
                Ok(o) => o["out"].to_path(),
                Err(_) => alloc::format!("/nix/store/{}-{name}", "0".repeat(32)),
            };
            if corrupt == Some(i) {
                out = out.replace(&out[11..15], "0000");
            }
            d.outputs.get_mut("out").unwrap().path = out.clone();
            d.env.insert("out".into(), out);
            let bytes = print(&d);
            let path = drv_path(&name, bytes.as_bytes(), &d).unwrap().to_path();
            drvs.borrow_mut().insert(path.clone(), bytes.into_bytes());
            prev = Some(path);
            top = d;
        }
        (drvs.into_inner(), top)
    }

    #[test]
    fn a_chain_deeper_than_any_stack_resolves_in_a_small_one() {
        // 5,000 links: past the old recursion's limit of 4,096, and resolved on a 64 KiB stack
        // (the agent's boot stack), which the recursive walk overflowed at ~60 links.
        let (drvs, top) = chain(5000, None);
        let declared = top.outputs["out"].path.clone();
        let t = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let lookup = |p: &str| drvs.get(p).cloned();
                Resolver::new(&lookup).check_output_paths(&top).map(|o| o["out"].to_path())
            })
            .unwrap();
        assert_eq!(t.join().unwrap(), Ok(declared));
    }

    #[test]
    fn an_input_whose_declared_output_path_is_wrong_is_refused() {
        // Link 1 declares an output path Nix would not compute; its .drv path is honest for its
        // bytes. Nix refuses to write such a .drv; the agent refuses to use it as an input.
        let (drvs, top) = chain(3, Some(1));
        let lookup = |p: &str| drvs.get(p).cloned();
        let e = Resolver::new(&lookup).output_paths(&top).unwrap_err();
        assert!(matches!(&e, DrvError::WrongInputOutputPath { output, declared, .. } if output == "out" && declared.contains("/0000")), "{e:?}");
    }
}
