//! NAR, the Nix ARchive (`libutil/archive.cc`): a serializer and a strict streaming parser.
//!
//! ```text
//! nar       = str("nix-archive-1") node
//! node      = str("(") str("type") ( regular | symlink | directory ) str(")")
//! regular   = str("regular") [ str("executable") str("") ] str("contents") u64(size) bytes pad
//! symlink   = str("symlink") str("target") str(target)
//! directory = str("directory") { str("entry") str("(") str("name") str(name) str("node") node str(")") }
//! str(s)    = u64(len(s)) s pad      (u64 little-endian; pad = zeros to a multiple of 8)
//! ```
//!
//! The parser accepts exactly the bytes Nix writes: entries strictly sorted and unique, names
//! without `/` or NUL and not `.`, `..` or empty, zero padding, `executable` only on regular
//! files, and size and depth limits. It pulls from a [`Read`] (so input can arrive in any chunk
//! sizes), streams file contents to a [`NarSink`], and uses no recursion: the depth of a hostile
//! archive cannot exhaust the agent's stack. The serializer reads a [`NarSource`] and is
//! iterative too.
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

pub const MAGIC: &[u8] = b"nix-archive-1";

/// Limits applied while parsing (host input) and serialising (builder output).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_name: usize,
    pub max_target: usize,
    /// Total bytes of file contents.
    pub max_contents: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 1024, max_name: 255, max_target: 4095, max_contents: 64 << 30 }
    }
}

/// A source of bytes. `read` returns 0 only at the end.
pub trait Read {
    type Error;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

impl Read for &[u8] {
    type Error = core::convert::Infallible;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

/// Where a parsed archive goes. Paths are the components below the root (`[]` is the root).
pub trait NarSink {
    type Error;
    fn create_directory(&mut self, path: &[Vec<u8>]) -> Result<(), Self::Error>;
    /// Starts a regular file; its `size` bytes follow through `write_contents`.
    fn create_file(&mut self, path: &[Vec<u8>], executable: bool, size: u64) -> Result<(), Self::Error>;
    fn write_contents(&mut self, data: &[u8]) -> Result<(), Self::Error>;
    fn create_symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), Self::Error>;
}

/// Why an archive was rejected. `R` is the reader's error, `S` the sink's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NarError<R, S> {
    Read(R),
    Sink(S),
    /// The input ended inside the archive.
    UnexpectedEnd,
    BadMagic,
    /// Expected this tag.
    Expected(&'static str),
    /// A `type` other than regular, symlink, directory.
    UnknownType,
    /// Padding bytes that are not zero.
    NonZeroPadding,
    /// A name that is empty, `.`, `..`, or contains `/` or NUL.
    InvalidName,
    /// A directory entry not strictly after the previous one (unsorted or duplicate).
    NotSorted,
    /// A string longer than its limit.
    TooLong,
    /// Deeper than `Limits::max_depth`.
    TooDeep,
    /// More file contents than `Limits::max_contents`.
    TooLarge,
}

struct Parser<'r, R: Read> {
    r: &'r mut R,
    limits: Limits,
    contents: u64,
}

type Res<T, R, S> = Result<T, NarError<R, S>>;

impl<R: Read> Parser<'_, R> {
    fn fill<S>(&mut self, buf: &mut [u8]) -> Res<(), R::Error, S> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.r.read(&mut buf[got..]).map_err(NarError::Read)?;
            if n == 0 {
                return Err(NarError::UnexpectedEnd);
            }
            got += n;
        }
        Ok(())
    }

    fn u64<S>(&mut self) -> Res<u64, R::Error, S> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn padding<S>(&mut self, len: u64) -> Res<(), R::Error, S> {
        let pad = ((8 - len % 8) % 8) as usize;
        let mut b = [0u8; 8];
        self.fill(&mut b[..pad])?;
        if b[..pad].iter().any(|&x| x != 0) {
            return Err(NarError::NonZeroPadding);
        }
        Ok(())
    }

    fn string<S>(&mut self, max: usize) -> Res<Vec<u8>, R::Error, S> {
        let len = self.u64()?;
        if len > max as u64 {
            return Err(NarError::TooLong);
        }
        let mut s = vec![0u8; len as usize];
        self.fill(&mut s)?;
        self.padding(len)?;
        Ok(s)
    }

    /// Reads a tag (short string) and checks it.
    fn tag<S>(&mut self, want: &'static str) -> Res<(), R::Error, S> {
        if self.string(16)? == want.as_bytes() {
            Ok(())
        } else {
            Err(NarError::Expected(want))
        }
    }

    /// Parses `( type ...`: a leaf through its `)`, or a directory's header. Returns whether a
    /// directory was opened.
    fn open_node<K: NarSink>(&mut self, sink: &mut K, path: &[Vec<u8>]) -> Res<bool, R::Error, K::Error> {
        self.tag("(")?;
        self.tag("type")?;
        match self.string(16)?.as_slice() {
            b"regular" => {
                let mut t = self.string(16)?;
                let executable = t == b"executable";
                if executable {
                    if !self.string(0)?.is_empty() {
                        return Err(NarError::Expected(""));
                    }
                    t = self.string(16)?;
                }
                if t != b"contents" {
                    return Err(NarError::Expected("contents"));
                }
                let size = self.u64()?;
                self.contents = self.contents.saturating_add(size);
                if self.contents > self.limits.max_contents {
                    return Err(NarError::TooLarge);
                }
                sink.create_file(path, executable, size).map_err(NarError::Sink)?;
                let mut buf = vec![0u8; (size as usize).min(64 << 10)];
                let mut left = size;
                while left > 0 {
                    let n = (left as usize).min(buf.len());
                    self.fill(&mut buf[..n])?;
                    sink.write_contents(&buf[..n]).map_err(NarError::Sink)?;
                    left -= n as u64;
                }
                self.padding(size)?;
                self.tag(")")?;
                Ok(false)
            }
            b"symlink" => {
                self.tag("target")?;
                let target = self.string(self.limits.max_target)?;
                sink.create_symlink(path, &target).map_err(NarError::Sink)?;
                self.tag(")")?;
                Ok(false)
            }
            b"directory" => {
                sink.create_directory(path).map_err(NarError::Sink)?;
                Ok(true)
            }
            _ => Err(NarError::UnknownType),
        }
    }
}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0)
}

/// Parses one archive from `r` into `sink`. Stops right after the archive's last byte.
pub fn parse<R: Read, K: NarSink>(r: &mut R, sink: &mut K, limits: Limits) -> Res<(), R::Error, K::Error> {
    let mut p = Parser { r, limits, contents: 0 };
    if p.string(16).map_err(|e| match e {
        NarError::TooLong => NarError::BadMagic,
        e => e,
    })? != MAGIC
    {
        return Err(NarError::BadMagic);
    }
    let mut path: Vec<Vec<u8>> = Vec::new();
    // For each open directory, the last entry name seen.
    let mut open: Vec<Option<Vec<u8>>> = Vec::new();
    if p.open_node(sink, &path)? {
        open.push(None);
    }
    while let Some(last) = open.last_mut() {
        let tag = p.string(16)?;
        if tag == b")" {
            open.pop();
            if !open.is_empty() {
                path.pop();
                p.tag(")")?; // closes the entry
            }
            continue;
        }
        if tag != b"entry" {
            return Err(NarError::Expected("entry"));
        }
        p.tag("(")?;
        p.tag("name")?;
        let name = p.string(limits.max_name)?;
        if !valid_name(&name) {
            return Err(NarError::InvalidName);
        }
        if last.as_ref().is_some_and(|prev| name <= *prev) {
            return Err(NarError::NotSorted);
        }
        *last = Some(name.clone());
        p.tag("node")?;
        path.push(name);
        if path.len() > limits.max_depth {
            return Err(NarError::TooDeep);
        }
        if p.open_node(sink, &path)? {
            open.push(None);
        } else {
            path.pop();
            p.tag(")")?;
        }
    }
    Ok(())
}

/// A node of a tree being serialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Regular { executable: bool, size: u64 },
    Symlink(Vec<u8>),
    Directory,
}

/// A tree that can be serialised.
pub trait NarSource {
    type Handle: Clone;
    type Error;
    fn root(&self) -> Self::Handle;
    fn node(&self, h: &Self::Handle) -> Result<Node, Self::Error>;
    /// A directory's entries, in any order.
    #[allow(clippy::type_complexity)]
    fn entries(&self, h: &Self::Handle) -> Result<Vec<(Vec<u8>, Self::Handle)>, Self::Error>;
    /// Calls `f` with the file's contents, in order, in chunks.
    fn contents(&self, h: &Self::Handle, f: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error>;
}

fn put_str(out: &mut dyn FnMut(&[u8]), s: &[u8]) {
    out(&(s.len() as u64).to_le_bytes());
    out(s);
    let pad = (8 - s.len() % 8) % 8;
    out(&[0u8; 8][..pad]);
}

/// `dumpPath`: writes the NAR of `src` to `out`, without holding it.
pub fn serialize<S: NarSource>(src: &S, out: &mut dyn FnMut(&[u8])) -> Result<(), S::Error> {
    put_str(out, MAGIC);
    // Work list: Some(handle) = emit a node; None = close a directory and its entry.
    enum Step<H> {
        Node(H),
        Entry(Vec<u8>, H),
        Close { entry: bool },
    }
    let mut stack = vec![Step::Node(src.root())];
    while let Some(step) = stack.pop() {
        let h = match step {
            Step::Close { entry } => {
                put_str(out, b")");
                if entry {
                    put_str(out, b")");
                }
                continue;
            }
            Step::Entry(name, h) => {
                put_str(out, b"entry");
                put_str(out, b"(");
                put_str(out, b"name");
                put_str(out, &name);
                put_str(out, b"node");
                stack.push(Step::Close { entry: true });
                h
            }
            Step::Node(h) => {
                stack.push(Step::Close { entry: false });
                h
            }
        };
        put_str(out, b"(");
        put_str(out, b"type");
        match src.node(&h)? {
            Node::Regular { executable, size } => {
                put_str(out, b"regular");
                if executable {
                    put_str(out, b"executable");
                    put_str(out, b"");
                }
                put_str(out, b"contents");
                out(&size.to_le_bytes());
                let mut written = 0u64;
                src.contents(&h, &mut |chunk| {
                    written += chunk.len() as u64;
                    out(chunk);
                })?;
                debug_assert_eq!(written, size);
                out(&[0u8; 8][..((8 - size % 8) % 8) as usize]);
            }
            Node::Symlink(target) => {
                put_str(out, b"symlink");
                put_str(out, b"target");
                put_str(out, &target);
            }
            Node::Directory => {
                put_str(out, b"directory");
                let mut entries = src.entries(&h)?;
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                // Pushed in reverse so they pop in order; this node's Close is below them.
                for (name, child) in entries.into_iter().rev() {
                    stack.push(Step::Entry(name, child));
                }
            }
        }
    }
    Ok(())
}

/// An in-memory tree: a test double for the sandbox file system, and what the host tools use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tree {
    File { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Directory(BTreeMap<Vec<u8>, Tree>),
}

/// A [`NarSink`] that builds a [`Tree`].
#[derive(Default)]
pub struct TreeBuilder {
    pub root: Option<Tree>,
    current: Vec<Vec<u8>>,
}

impl TreeBuilder {
    fn put(&mut self, path: &[Vec<u8>], t: Tree) -> Result<(), ()> {
        let Some((last, parents)) = path.split_last() else {
            self.root = Some(t);
            return Ok(());
        };
        let mut node = self.root.as_mut().ok_or(())?;
        for p in parents {
            let Tree::Directory(m) = node else { return Err(()) };
            node = m.get_mut(p).ok_or(())?;
        }
        let Tree::Directory(m) = node else { return Err(()) };
        m.insert(last.clone(), t);
        Ok(())
    }

    fn file_mut(&mut self) -> Option<&mut Vec<u8>> {
        let mut node = self.root.as_mut()?;
        for p in &self.current {
            let Tree::Directory(m) = node else { return None };
            node = m.get_mut(p)?;
        }
        match node {
            Tree::File { contents, .. } => Some(contents),
            _ => None,
        }
    }
}

impl NarSink for TreeBuilder {
    type Error = ();
    fn create_directory(&mut self, path: &[Vec<u8>]) -> Result<(), ()> {
        self.put(path, Tree::Directory(BTreeMap::new()))
    }
    fn create_file(&mut self, path: &[Vec<u8>], executable: bool, size: u64) -> Result<(), ()> {
        self.current = path.to_vec();
        self.put(path, Tree::File { executable, contents: Vec::with_capacity(size.min(1 << 20) as usize) })
    }
    fn write_contents(&mut self, data: &[u8]) -> Result<(), ()> {
        self.file_mut().ok_or(())?.extend_from_slice(data);
        Ok(())
    }
    fn create_symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), ()> {
        self.put(path, Tree::Symlink(target.to_vec()))
    }
}

impl NarSource for Tree {
    type Handle = Vec<Vec<u8>>;
    type Error = ();
    fn root(&self) -> Self::Handle {
        Vec::new()
    }
    fn node(&self, h: &Self::Handle) -> Result<Node, ()> {
        Ok(match self.at(h).ok_or(())? {
            Tree::File { executable, contents } => Node::Regular { executable: *executable, size: contents.len() as u64 },
            Tree::Symlink(t) => Node::Symlink(t.clone()),
            Tree::Directory(_) => Node::Directory,
        })
    }
    fn entries(&self, h: &Self::Handle) -> Result<Vec<(Vec<u8>, Self::Handle)>, ()> {
        let Tree::Directory(m) = self.at(h).ok_or(())? else { return Err(()) };
        Ok(m.keys()
            .map(|k| {
                let mut c = h.clone();
                c.push(k.clone());
                (k.clone(), c)
            })
            .collect())
    }
    fn contents(&self, h: &Self::Handle, f: &mut dyn FnMut(&[u8])) -> Result<(), ()> {
        let Tree::File { contents, .. } = self.at(h).ok_or(())? else { return Err(()) };
        for chunk in contents.chunks(64 << 10) {
            f(chunk);
        }
        Ok(())
    }
}

impl Tree {
    fn at(&self, path: &[Vec<u8>]) -> Option<&Tree> {
        let mut node = self;
        for p in path {
            let Tree::Directory(m) = node else { return None };
            node = m.get(p)?;
        }
        Some(node)
    }

    /// Serialises to bytes.
    pub fn to_nar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = serialize(self, &mut |b| out.extend_from_slice(b));
        out
    }

    /// Parses bytes; the whole input must be one archive.
    pub fn from_nar(mut nar: &[u8], limits: Limits) -> Result<Tree, NarError<core::convert::Infallible, ()>> {
        let mut b = TreeBuilder::default();
        parse(&mut nar, &mut b, limits)?;
        if !nar.is_empty() {
            return Err(NarError::Expected("end of archive"));
        }
        b.root.ok_or(NarError::UnexpectedEnd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(c: &[u8], x: bool) -> Tree {
        Tree::File { executable: x, contents: c.to_vec() }
    }
    fn dir(entries: &[(&str, Tree)]) -> Tree {
        Tree::Directory(entries.iter().map(|(n, t)| (n.as_bytes().to_vec(), t.clone())).collect())
    }

    fn sample() -> Tree {
        dir(&[
            ("a", file(b"hello\n", false)),
            ("bin", dir(&[("run", file(b"#!/bin/sh\n", true))])),
            ("empty", dir(&[])),
            ("link", Tree::Symlink(b"../x".to_vec())),
            ("z", file(b"", false)),
        ])
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let nar = t.to_nar();
        assert_eq!(Tree::from_nar(&nar, Limits::default()), Ok(t));
    }

    #[test]
    fn parses_in_one_byte_chunks() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            type Error = ();
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let nar = sample().to_nar();
        let mut b = TreeBuilder::default();
        parse(&mut OneByte(&nar), &mut b, Limits::default()).unwrap();
        assert_eq!(b.root, Some(sample()));
    }

    fn replace(nar: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = nar.windows(from.len()).position(|w| w == from).unwrap();
        let mut v = nar[..i].to_vec();
        v.extend_from_slice(to);
        v.extend_from_slice(&nar[i + from.len()..]);
        v
    }

    #[test]
    fn each_malformation_has_its_error() {
        let l = Limits::default();
        let nar = sample().to_nar();
        assert_eq!(Tree::from_nar(&nar[..nar.len() - 8], l), Err(NarError::UnexpectedEnd));
        assert_eq!(Tree::from_nar(&replace(&nar, b"nix-archive-1", b"nix-archive-2"), l), Err(NarError::BadMagic));
        assert_eq!(Tree::from_nar(&replace(&nar, b"symlink", b"symlonk"), l), Err(NarError::UnknownType));
        // "bin" renamed to "a" -> duplicate; to "0" -> out of order.
        let dup = replace(&nar, b"\x03\0\0\0\0\0\0\0bin\0\0\0\0\0", b"\x01\0\0\0\0\0\0\0a\0\0\0\0\0\0\0");
        assert_eq!(Tree::from_nar(&dup, l), Err(NarError::NotSorted));
        let dot = replace(&nar, b"\x03\0\0\0\0\0\0\0bin\0\0\0\0\0", b"\x02\0\0\0\0\0\0\0..\0\0\0\0\0\0");
        assert_eq!(Tree::from_nar(&dot, l), Err(NarError::InvalidName));
        let slash = replace(&nar, b"\x03\0\0\0\0\0\0\0bin\0\0\0\0\0", b"\x03\0\0\0\0\0\0\0b/n\0\0\0\0\0");
        assert_eq!(Tree::from_nar(&slash, l), Err(NarError::InvalidName));
        let pad = replace(&nar, b"hello\n\0\0", b"hello\n\0\x01");
        assert_eq!(Tree::from_nar(&pad, l), Err(NarError::NonZeroPadding));
        let exec_link = replace(&nar, b"\x06\0\0\0\0\0\0\0target\0\0", b"\x0a\0\0\0\0\0\0\0executable\0\0\0\0\0\0");
        assert_eq!(Tree::from_nar(&exec_link, l), Err(NarError::Expected("target")));
        let mut trailing = nar.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(Tree::from_nar(&trailing, l), Err(NarError::Expected("end of archive")));
        assert_eq!(Tree::from_nar(&nar, Limits { max_depth: 1, ..l }), Err(NarError::TooDeep));
        assert_eq!(Tree::from_nar(&nar, Limits { max_contents: 5, ..l }), Err(NarError::TooLarge));
        assert_eq!(Tree::from_nar(&nar, Limits { max_name: 2, ..l }), Err(NarError::TooLong));
    }

    #[test]
    fn deep_trees_need_no_recursion() {
        let mut t = file(b"x", false);
        for _ in 0..300 {
            t = dir(&[("d", t)]);
        }
        let nar = t.to_nar();
        assert_eq!(Tree::from_nar(&nar, Limits { max_depth: 400, ..Limits::default() }).map(|x| x == t), Ok(true));
        assert_eq!(Tree::from_nar(&nar, Limits { max_depth: 200, ..Limits::default() }), Err(NarError::TooDeep));
    }
}
