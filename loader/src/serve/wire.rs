//! Nix 2.8's `nix-store --serve` protocol, as the legacy SSH store (`ssh://`) speaks it: the
//! wire format (`src/libutil/serialise.hh`: every integer a u64 little-endian, every string its
//! length as a u64 then its bytes padded with zeros to a multiple of 8), the commands
//! (`src/libstore/serve-protocol.hh`), the BasicDerivation a build hook sends
//! (`readDerivation`/`writeDerivation` in `src/libstore/derivations.cc`), the build settings
//! (`putBuildSettings` in `legacy-ssh-store.cc`) and the BuildResult fields the client reads.
//!
//! Everything read from the client is bounded (string lengths, list lengths) and checked
//! (padding must be zeros, strings UTF-8 where Nix parses them as paths or ATerm text); every
//! failure is a [`WireError`].
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;
/// The version Nix 2.8 speaks (major 2, minor 7), and the one the loader answers with.
pub const SERVE_PROTOCOL_VERSION: u64 = 2 << 8 | 7;
/// `exportPaths`' per-path magic ("NIXE").
pub const EXPORT_MAGIC: u64 = 0x4558_494e;
/// The NAR format's first string.
pub const NAR_MAGIC: &str = "nix-archive-1";

/// The longest string accepted: a whole `.drv`'s worth (an environment value can be that big).
pub const MAX_STRING: u64 = 64 << 20;
/// The most strings in one list.
pub const MAX_LIST: u64 = 1 << 20;
/// The deepest directory nesting accepted in a NAR on its way through.
pub const MAX_NAR_DEPTH: usize = 256;

pub fn major(v: u64) -> u64 {
    v & 0xff00
}

pub fn minor(v: u64) -> u64 {
    v & 0x00ff
}

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection (between commands this is the normal end).
    #[error("the connection was closed")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol mismatch: expected the magic {expected:#x}, got {got:#x}")]
    BadMagic { expected: u64, got: u64 },
    #[error("unsupported 'nix-store --serve' protocol version {0:#x} (this loader speaks {SERVE_PROTOCOL_VERSION:#x}, major 0x200)")]
    UnsupportedVersion(u64),
    #[error("unknown serve command {0}")]
    UnknownCommand(u64),
    #[error("{what}: length {len} is more than the {max} accepted")]
    TooLong { what: &'static str, len: u64, max: u64 },
    #[error("{0}: the padding after a string is not zeros")]
    BadPadding(&'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

fn malformed(what: &'static str, why: impl Into<String>) -> WireError {
    WireError::Malformed { what, why: why.into() }
}

/// Reads exactly `buf.len()` bytes; a stream that ends first is [`WireError::Eof`].
fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), WireError> {
    r.read_exact(buf).map_err(|e| if e.kind() == std::io::ErrorKind::UnexpectedEof { WireError::Eof } else { WireError::Io(e) })
}

pub fn read_u64(r: &mut dyn Read) -> Result<u64, WireError> {
    let mut b = [0; 8];
    read_exact(r, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A boolean as Nix writes one (0 or 1); anything else is malformed.
pub fn read_bool(r: &mut dyn Read, what: &'static str) -> Result<bool, WireError> {
    match read_u64(r)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(malformed(what, format!("{n} is not a boolean"))),
    }
}

/// A length-prefixed, zero-padded byte string of at most `max` bytes.
pub fn read_bytes(r: &mut dyn Read, what: &'static str, max: u64) -> Result<Vec<u8>, WireError> {
    let len = read_u64(r)?;
    if len > max {
        return Err(WireError::TooLong { what, len, max });
    }
    let mut v = vec![0; len as usize];
    read_exact(r, &mut v)?;
    let mut pad = [0; 8];
    let pad = &mut pad[..padding(len)];
    read_exact(r, pad)?;
    if pad.iter().any(|&b| b != 0) {
        return Err(WireError::BadPadding(what));
    }
    Ok(v)
}

pub fn read_string(r: &mut dyn Read, what: &'static str) -> Result<String, WireError> {
    String::from_utf8(read_bytes(r, what, MAX_STRING)?).map_err(|_| WireError::NotUtf8(what))
}

pub fn read_strings(r: &mut dyn Read, what: &'static str) -> Result<Vec<String>, WireError> {
    let n = read_u64(r)?;
    if n > MAX_LIST {
        return Err(WireError::TooLong { what, len: n, max: MAX_LIST });
    }
    (0..n).map(|_| read_string(r, what)).collect()
}

/// A set of store paths (Nix writes them sorted and unique; a repeated one is malformed).
pub fn read_path_set(r: &mut dyn Read, what: &'static str) -> Result<BTreeSet<String>, WireError> {
    let mut set = BTreeSet::new();
    for p in read_strings(r, what)? {
        check_store_path(&p, what)?;
        if !set.insert(p.clone()) {
            return Err(malformed(what, format!("'{p}' twice")));
        }
    }
    Ok(set)
}

fn check_store_path(p: &str, what: &'static str) -> Result<(), WireError> {
    agent::nix::store_path::StorePath::parse(p).map(|_| ()).map_err(|e| malformed(what, format!("'{p}' is not a store path: {e:?}")))
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

pub fn write_u64(w: &mut dyn Write, n: u64) -> std::io::Result<()> {
    w.write_all(&n.to_le_bytes())
}

pub fn write_bytes(w: &mut dyn Write, s: &[u8]) -> std::io::Result<()> {
    write_u64(w, s.len() as u64)?;
    w.write_all(s)?;
    w.write_all(&[0; 8][..padding(s.len() as u64)])
}

pub fn write_strings<S: AsRef<str>>(w: &mut dyn Write, v: impl IntoIterator<Item = S, IntoIter: ExactSizeIterator>) -> std::io::Result<()> {
    let it = v.into_iter();
    write_u64(w, it.len() as u64)?;
    for s in it {
        write_bytes(w, s.as_ref().as_bytes())?;
    }
    Ok(())
}

/// The serve commands (`ServeCommand`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    QueryValidPaths = 1,
    QueryPathInfos = 2,
    DumpStorePath = 3,
    ImportPaths = 4,
    ExportPaths = 5,
    BuildPaths = 6,
    QueryClosure = 7,
    BuildDerivation = 8,
    AddToStoreNar = 9,
}

impl Command {
    pub fn from_u64(n: u64) -> Result<Command, WireError> {
        use Command::*;
        Ok(match n {
            1 => QueryValidPaths,
            2 => QueryPathInfos,
            3 => DumpStorePath,
            4 => ImportPaths,
            5 => ExportPaths,
            6 => BuildPaths,
            7 => QueryClosure,
            8 => BuildDerivation,
            9 => AddToStoreNar,
            n => return Err(WireError::UnknownCommand(n)),
        })
    }
}

/// The server's half of the greeting: reads the client's magic and version (the 2.8 client
/// sends both before it reads anything). A wrong magic or another major version is refused.
pub fn read_hello(r: &mut dyn Read) -> Result<u64, WireError> {
    let magic = read_u64(r)?;
    if magic != SERVE_MAGIC_1 {
        return Err(WireError::BadMagic { expected: SERVE_MAGIC_1, got: magic });
    }
    let version = read_u64(r)?;
    if major(version) != 0x200 {
        return Err(WireError::UnsupportedVersion(version));
    }
    Ok(version)
}

/// One output of a BasicDerivation: its path, and for a fixed output its `r:sha256`-style
/// method and algorithm and its hash in hex (empty strings otherwise), as in the ATerm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrvOutput {
    pub path: String,
    pub hash_algo: String,
    pub hash: String,
}

/// What `cmdBuildDerivation` carries after the `.drv` path: a derivation without its input
/// derivations (the 2.8 build hook has replaced `inputSrcs` by the closure of the inputs when the
/// derivation had input derivations).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BasicDerivation {
    pub outputs: BTreeMap<String, DrvOutput>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl BasicDerivation {
    pub fn read(r: &mut dyn Read) -> Result<BasicDerivation, WireError> {
        let mut d = BasicDerivation::default();
        let n = read_u64(r)?;
        if n > MAX_LIST {
            return Err(WireError::TooLong { what: "derivation outputs", len: n, max: MAX_LIST });
        }
        for _ in 0..n {
            let name = read_string(r, "output name")?;
            let path = read_string(r, "output path")?;
            let hash_algo = read_string(r, "output hash algorithm")?;
            let hash = read_string(r, "output hash")?;
            if path.is_empty() {
                return Err(malformed("derivation", format!("output '{name}' has no path (floating content-addressed or deferred outputs are not supported)")));
            }
            check_store_path(&path, "output path")?;
            if d.outputs.insert(name.clone(), DrvOutput { path, hash_algo, hash }).is_some() {
                return Err(malformed("derivation", format!("output '{name}' twice")));
            }
        }
        d.input_srcs = read_path_set(r, "input sources")?;
        d.platform = read_string(r, "platform")?;
        d.builder = read_string(r, "builder")?;
        d.args = read_strings(r, "arguments")?;
        let n = read_u64(r)?;
        if n > MAX_LIST {
            return Err(WireError::TooLong { what: "environment", len: n, max: MAX_LIST });
        }
        for _ in 0..n {
            let k = read_string(r, "environment name")?;
            let v = read_string(r, "environment value")?;
            if d.env.insert(k.clone(), v).is_some() {
                return Err(malformed("derivation", format!("environment variable '{k}' twice")));
            }
        }
        Ok(d)
    }

    /// `writeDerivation`, as the client writes it.
    pub fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        write_u64(w, self.outputs.len() as u64)?;
        for (name, o) in &self.outputs {
            for s in [name, &o.path, &o.hash_algo, &o.hash] {
                write_bytes(w, s.as_bytes())?;
            }
        }
        write_strings(w, &self.input_srcs)?;
        write_bytes(w, self.platform.as_bytes())?;
        write_bytes(w, self.builder.as_bytes())?;
        write_strings(w, &self.args)?;
        write_u64(w, self.env.len() as u64)?;
        for (k, v) in &self.env {
            write_bytes(w, k.as_bytes())?;
            write_bytes(w, v.as_bytes())?;
        }
        Ok(())
    }

    /// The derivation with no input derivations: the ATerm the agent is sent.
    pub fn to_derivation(&self) -> agent::nix::derivation::Derivation {
        use agent::nix::derivation::{Derivation, Output};
        Derivation {
            outputs: self.outputs.iter().map(|(n, o)| (n.clone(), Output { path: o.path.clone(), hash_algo: o.hash_algo.clone(), hash: o.hash.clone() })).collect(),
            input_drvs: BTreeMap::new(),
            input_srcs: self.input_srcs.clone(),
            platform: self.platform.clone(),
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        }
    }
}

/// The build settings a client sends after a build command (`putBuildSettings`), for the
/// protocol minor version both sides agreed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSettings {
    pub max_silent_time: u64,
    pub build_timeout: u64,
    pub max_log_size: u64,
    pub build_repeat: u64,
    pub enforce_determinism: bool,
    pub keep_failed: bool,
}

impl BuildSettings {
    pub fn read(r: &mut dyn Read, minor: u64) -> Result<BuildSettings, WireError> {
        let mut s = BuildSettings { max_silent_time: read_u64(r)?, build_timeout: read_u64(r)?, ..Default::default() };
        if minor >= 2 {
            s.max_log_size = read_u64(r)?;
        }
        if minor >= 3 {
            s.build_repeat = read_u64(r)?;
            s.enforce_determinism = read_bool(r, "enforce-determinism")?;
        }
        if minor >= 7 {
            s.keep_failed = read_bool(r, "keep-failed")?;
        }
        Ok(s)
    }

    pub fn write(&self, w: &mut dyn Write, minor: u64) -> std::io::Result<()> {
        write_u64(w, self.max_silent_time)?;
        write_u64(w, self.build_timeout)?;
        if minor >= 2 {
            write_u64(w, self.max_log_size)?;
        }
        if minor >= 3 {
            write_u64(w, self.build_repeat)?;
            write_u64(w, self.enforce_determinism as u64)?;
        }
        if minor >= 7 {
            write_u64(w, self.keep_failed as u64)?;
        }
        Ok(())
    }
}

/// `BuildResult::Status`, the values the loader answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Built = 0,
    PermanentFailure = 3,
    InputRejected = 4,
    OutputRejected = 5,
    TransientFailure = 6,
    TimedOut = 8,
    MiscFailure = 9,
}

/// The answer to `cmdBuildDerivation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    pub status: Status,
    pub error_msg: String,
    pub times_built: u64,
    pub start_time: u64,
    pub stop_time: u64,
}

impl BuildResult {
    /// As `nix-store --serve` writes it for a client of `minor`: status and message; from minor 3
    /// timesBuilt, isNonDeterministic, startTime, stopTime; from minor 6 the realisations of
    /// content-addressed outputs (none: the loader builds input-addressed and fixed outputs, whose
    /// paths the client knows).
    pub fn write(&self, w: &mut dyn Write, minor: u64) -> std::io::Result<()> {
        write_u64(w, self.status as u64)?;
        write_bytes(w, self.error_msg.as_bytes())?;
        if minor >= 3 {
            for n in [self.times_built, 0, self.start_time, self.stop_time] {
                write_u64(w, n)?;
            }
        }
        if minor >= 6 {
            write_u64(w, 0)?;
        }
        Ok(())
    }
}

/// A reader that copies every byte it reads into `sink` (a request on its way to the real
/// `nix-store --serve`, parsed as it passes).
pub struct Tee<'a> {
    pub inner: &'a mut dyn Read,
    pub sink: &'a mut dyn Write,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Reads one NAR (through a [`Tee`], so it is forwarded as it is checked): its structure must
/// be the NAR grammar, or the stream would lose its framing.
pub fn skip_nar(r: &mut dyn Read) -> Result<(), WireError> {
    fn tok(r: &mut dyn Read, want: &str) -> Result<(), WireError> {
        let got = read_bytes(r, "NAR token", 4096)?;
        if got != want.as_bytes() {
            return Err(malformed("NAR", format!("expected '{want}', got '{}'", String::from_utf8_lossy(&got))));
        }
        Ok(())
    }
    // A file or symlink's `)`, and its entry's when it is inside a directory.
    fn close_leaf(r: &mut dyn Read, depth: usize) -> Result<(), WireError> {
        tok(r, ")")?;
        if depth > 0 {
            tok(r, ")")?;
        }
        Ok(())
    }
    tok(r, NAR_MAGIC)?;
    // An explicit stack of open directories: the depth is the client's choice.
    tok(r, "(")?;
    let mut depth = 0usize;
    loop {
        // At the start of a node's body: `type`.
        tok(r, "type")?;
        let ty = read_bytes(r, "NAR node type", 64)?;
        match &ty[..] {
            b"regular" => {
                let mut t = read_bytes(r, "NAR token", 64)?;
                if t == b"executable" {
                    tok(r, "")?;
                    t = read_bytes(r, "NAR token", 64)?;
                }
                if t != b"contents" {
                    return Err(malformed("NAR", "regular file without contents"));
                }
                let len = read_u64(r)?;
                std::io::copy(&mut r.take(len), &mut std::io::sink())?;
                let mut pad = [0; 8];
                read_exact(r, &mut pad[..padding(len)])?;
                close_leaf(r, depth)?;
            }
            b"symlink" => {
                tok(r, "target")?;
                read_bytes(r, "symlink target", 4096)?;
                close_leaf(r, depth)?;
            }
            b"directory" => {
                depth += 1;
                if depth > MAX_NAR_DEPTH {
                    return Err(WireError::TooLong { what: "NAR directory depth", len: depth as u64, max: MAX_NAR_DEPTH as u64 });
                }
                // Entries follow, or `)`.
            }
            other => return Err(malformed("NAR", format!("unknown node type '{}'", String::from_utf8_lossy(other)))),
        }
        // After a node (or a directory's opening): the next entry of the enclosing directory,
        // or the close of directories.
        loop {
            if depth == 0 {
                return Ok(());
            }
            let t = read_bytes(r, "NAR token", 64)?;
            match &t[..] {
                b"entry" => {
                    tok(r, "(")?;
                    tok(r, "name")?;
                    read_bytes(r, "NAR entry name", 4096)?;
                    tok(r, "node")?;
                    tok(r, "(")?;
                    break;
                }
                b")" => {
                    // The directory closes; it was an entry's node unless it is the root.
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                    tok(r, ")")?;
                }
                other => return Err(malformed("NAR", format!("expected 'entry' or ')', got '{}'", String::from_utf8_lossy(other)))),
            }
        }
    }
}

/// Reads an `exportPaths` stream (what `cmdImportPaths` carries): per path 1, the NAR, the
/// magic, the path, its references, its deriver, and 0 or 1 + a signature; then 0.
pub fn skip_export(r: &mut dyn Read) -> Result<(), WireError> {
    loop {
        match read_u64(r)? {
            0 => return Ok(()),
            1 => {}
            n => return Err(malformed("export stream", format!("{n} where 0 or 1 belongs"))),
        }
        skip_nar(r)?;
        let magic = read_u64(r)?;
        if magic != EXPORT_MAGIC {
            return Err(WireError::BadMagic { expected: EXPORT_MAGIC, got: magic });
        }
        check_store_path(&read_string(r, "exported path")?, "exported path")?;
        read_path_set(r, "references")?;
        read_string(r, "deriver")?;
        if read_bool(r, "signature flag")? {
            read_string(r, "signature")?;
        }
    }
}

/// Reads a whole request for a command that only moves store paths (everything but the build
/// commands), so it can be forwarded to `nix-store --serve` with its framing intact.
pub fn skip_request(cmd: Command, r: &mut dyn Read) -> Result<(), WireError> {
    match cmd {
        Command::QueryValidPaths => {
            read_bool(r, "lock")?;
            read_bool(r, "substitute")?;
            read_path_set(r, "paths")?;
        }
        Command::QueryPathInfos => {
            read_path_set(r, "paths")?;
        }
        Command::DumpStorePath => check_store_path(&read_string(r, "path")?, "path")?,
        Command::ImportPaths => skip_export(r)?,
        Command::ExportPaths => {
            read_u64(r)?;
            read_path_set(r, "paths")?;
        }
        Command::QueryClosure => {
            read_bool(r, "include outputs")?;
            read_path_set(r, "paths")?;
        }
        Command::AddToStoreNar => {
            check_store_path(&read_string(r, "path")?, "path")?;
            read_string(r, "deriver")?;
            read_string(r, "NAR hash")?;
            read_path_set(r, "references")?;
            read_u64(r)?; // registration time
            let nar_size = read_u64(r)?;
            read_bool(r, "ultimate")?;
            read_strings(r, "signatures")?;
            read_string(r, "content address")?;
            // The NAR follows, exactly narSize bytes (`SizedSource`).
            let copied = std::io::copy(&mut r.take(nar_size), &mut std::io::sink())?;
            if copied != nar_size {
                return Err(WireError::Eof);
            }
        }
        Command::BuildPaths | Command::BuildDerivation => unreachable!("build commands are served, not forwarded"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v).unwrap();
        v
    }

    #[test]
    fn integers_and_strings_are_nix_serialise() {
        // Nix's `<<` for an integer: 8 bytes little-endian; a string: length, bytes, zeros to 8.
        assert_eq!(bytes(|w| write_u64(w, 0x0102)), [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(|w| write_bytes(w, b"abc")), [3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]);
        assert_eq!(bytes(|w| write_bytes(w, b"12345678")).len(), 16);
        assert_eq!(bytes(|w| write_bytes(w, b"")), [0; 8]);
        let s = bytes(|w| write_strings(w, ["a", "bb"]));
        assert_eq!(read_strings(&mut &s[..], "x").unwrap(), ["a", "bb"]);
    }

    #[test]
    fn bad_strings_are_refused() {
        let mut s = bytes(|w| write_bytes(w, b"abc"));
        s[12] = 1;
        assert!(matches!(read_string(&mut &s[..], "x"), Err(WireError::BadPadding("x"))));
        let s = bytes(|w| write_u64(w, MAX_STRING + 1));
        assert!(matches!(read_string(&mut &s[..], "x"), Err(WireError::TooLong { len, .. }) if len == MAX_STRING + 1));
        let s = bytes(|w| write_bytes(w, &[0xff, 0xfe]));
        assert!(matches!(read_string(&mut &s[..], "x"), Err(WireError::NotUtf8("x"))));
        let s = bytes(|w| write_bytes(w, b"abcdefgh"));
        assert!(matches!(read_string(&mut &s[..12], "x"), Err(WireError::Eof)));
        let s = bytes(|w| write_u64(w, 2));
        assert!(matches!(read_bool(&mut &s[..], "b"), Err(WireError::Malformed { .. })));
        let s = bytes(|w| write_strings(w, ["not-a-store-path"]));
        assert!(matches!(read_path_set(&mut &s[..], "p"), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn the_greeting_checks_magic_and_major_version() {
        let hello = |m, v| bytes(|w| write_u64(w, m).and_then(|_| write_u64(w, v)));
        assert_eq!(read_hello(&mut &hello(SERVE_MAGIC_1, 0x207)[..]).unwrap(), 0x207);
        assert_eq!(read_hello(&mut &hello(SERVE_MAGIC_1, 0x205)[..]).unwrap(), 0x205);
        assert!(matches!(read_hello(&mut &hello(0x1234, 0x207)[..]), Err(WireError::BadMagic { got: 0x1234, .. })));
        assert!(matches!(read_hello(&mut &hello(SERVE_MAGIC_1, 0x307)[..]), Err(WireError::UnsupportedVersion(0x307))));
        assert!(matches!(read_hello(&mut &[1u8, 2][..]), Err(WireError::Eof)));
        assert!(matches!(Command::from_u64(42), Err(WireError::UnknownCommand(42))));
    }

    fn sample() -> BasicDerivation {
        let mut d = BasicDerivation { platform: "x86_64-linux".into(), builder: "/nix/store/00000000000000000000000000000000-busybox/bin/busybox".into(), ..Default::default() };
        d.outputs.insert("out".into(), DrvOutput { path: "/nix/store/11111111111111111111111111111111-x".into(), hash_algo: String::new(), hash: String::new() });
        d.input_srcs.insert("/nix/store/00000000000000000000000000000000-busybox".into());
        d.args = vec!["sh".into(), "-c".into(), "echo hi > $out".into()];
        d.env.insert("out".into(), "/nix/store/11111111111111111111111111111111-x".into());
        d
    }

    #[test]
    fn a_basic_derivation_round_trips_and_settings_follow_the_version() {
        let d = sample();
        let b = bytes(|w| d.write(w));
        assert_eq!(BasicDerivation::read(&mut &b[..]).unwrap(), d);
        for cut in [0, 8, b.len() / 2, b.len() - 1] {
            assert!(matches!(BasicDerivation::read(&mut &b[..cut]), Err(WireError::Eof)), "cut at {cut}");
        }
        let s = BuildSettings { max_silent_time: 1, build_timeout: 2, max_log_size: 3, build_repeat: 0, enforce_determinism: true, keep_failed: true };
        for (minor, len) in [(1, 16), (2, 24), (3, 40), (7, 48)] {
            let b = bytes(|w| s.write(w, minor));
            assert_eq!(b.len(), len);
            let got = BuildSettings::read(&mut &b[..], minor).unwrap();
            assert_eq!(got.build_timeout, 2);
        }
        // A floating content-addressed output (no path) is refused by name.
        let mut d = sample();
        d.outputs.get_mut("out").unwrap().path.clear();
        let b = bytes(|w| d.write(w));
        assert!(BasicDerivation::read(&mut &b[..]).unwrap_err().to_string().contains("output 'out' has no path"));
    }

    #[test]
    fn build_results_have_the_fields_of_the_minor_version() {
        let r = BuildResult { status: Status::PermanentFailure, error_msg: "builder failed".into(), times_built: 1, start_time: 5, stop_time: 6 };
        let b = bytes(|w| r.write(w, 7));
        assert_eq!(b.len(), 8 + 8 + 16 + 4 * 8 + 8);
        assert_eq!(read_u64(&mut &b[..]).unwrap(), 3);
        assert_eq!(bytes(|w| r.write(w, 2)).len(), 32);
    }

    /// NARs from the agent's serialiser (equal to `nix-store --dump`, tested in tests/) pass
    /// through whole; a cut or corrupted one is refused.
    #[test]
    fn nars_and_export_streams_keep_their_framing() {
        use agent::nix::nar::Tree;
        let mut sub = std::collections::BTreeMap::new();
        sub.insert(b"g".to_vec(), Tree::File { executable: false, contents: vec![7; 9] });
        let mut root = std::collections::BTreeMap::new();
        root.insert(b"f".to_vec(), Tree::File { executable: true, contents: b"hello".to_vec() });
        root.insert(b"l".to_vec(), Tree::Symlink(b"f".to_vec()));
        root.insert(b"d".to_vec(), Tree::Directory(sub));
        root.insert(b"e".to_vec(), Tree::Directory(Default::default()));
        let nar = Tree::Directory(root).to_nar();
        let mut stream = nar.clone();
        stream.extend_from_slice(b"after");
        let mut r = &stream[..];
        skip_nar(&mut r).unwrap();
        assert_eq!(r, b"after");
        let single = Tree::File { executable: false, contents: b"x".to_vec() }.to_nar();
        skip_nar(&mut &single[..]).unwrap();
        assert!(matches!(skip_nar(&mut &nar[..nar.len() - 8]), Err(WireError::Eof)));
        let mut bad = nar.clone();
        bad[8..8 + 13].copy_from_slice(b"nix-archive-2");
        assert!(matches!(skip_nar(&mut &bad[..]), Err(WireError::Malformed { .. })));

        let export = bytes(|w| {
            write_u64(w, 1)?;
            w.write_all(&nar)?;
            write_u64(w, EXPORT_MAGIC)?;
            write_bytes(w, b"/nix/store/11111111111111111111111111111111-x")?;
            write_strings(w, ["/nix/store/11111111111111111111111111111111-x"])?;
            write_bytes(w, b"")?;
            write_u64(w, 0)?;
            write_u64(w, 0)
        });
        let mut forwarded = Vec::new();
        skip_export(&mut Tee { inner: &mut &export[..], sink: &mut forwarded }).unwrap();
        assert_eq!(forwarded, export);
    }
}
