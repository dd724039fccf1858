//! The `Exec` request: run one static program in a fresh sandbox (a development request, no
//! derivation). Everything the host sends is checked here, as safe code, before the agent
//! acts on it: the argument lists, the limits it asks for (capped by what the agent can afford),
//! and the names of the files to place in the sandbox.
//!
//! Payload (all integers little-endian; see docs/channel.md):
//!
//! ```text
//! argv    [u32 n]([u32 len][UTF-8])*
//! envp    [u32 n]([u32 len][UTF-8])*
//! -- optional from here: an older loader stops after envp --
//! limits  [u64 memory bytes][u64 processes][u64 CPU ticks][u64 file-system bytes][u64 log bytes]
//!         (0 = the default)
//! files   [u32 n]([u32 flags][u32 len][UTF-8 guest name])*   flags: bit 0 = executable
//! ```
//!
//! The executable follows as a bulk transfer, then one bulk transfer per file, in order.
use alloc::string::String;
use alloc::vec::Vec;

use crate::proto;
use crate::sandbox::abi::Errno;
use crate::sandbox::fs::{Fs, Ino, NAME_MAX, PATH_MAX, ROOT};
use crate::sandbox::process::Limits;

/// Most files one request may place.
pub const MAX_FILES: usize = 4096;
/// Where the executable is placed (read-only, like a store path).
pub const PROGRAM_DIR: &[u8] = b"/nix/store/exec";
pub const PROGRAM: &[u8] = b"/nix/store/exec/program";

/// Limits a request asks for; 0 means the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub memory: u64,
    pub processes: u64,
    pub cpu_ticks: u64,
    pub fs_bytes: u64,
    pub log_bytes: u64,
}

/// A file to place in the sandbox: its absolute guest path (checked) and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub path: Vec<u8>,
    pub executable: bool,
}

/// A decoded, checked `Exec` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub envp: Vec<String>,
    pub limits: Requested,
    pub files: Vec<FileSpec>,
}

/// The payload for an `Exec` request (the loader's side of [`decode`]).
pub fn encode(argv: &[&str], envp: &[&str], limits: &Requested, files: &[(&str, bool)]) -> Vec<u8> {
    let mut p = Vec::new();
    proto::encode_strings(&mut p, argv);
    proto::encode_strings(&mut p, envp);
    for v in [limits.memory, limits.processes, limits.cpu_ticks, limits.fs_bytes, limits.log_bytes] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (name, executable) in files {
        p.extend_from_slice(&u32::from(*executable).to_le_bytes());
        p.extend_from_slice(&(name.len() as u32).to_le_bytes());
        p.extend_from_slice(name.as_bytes());
    }
    p
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if p.len() < n {
        return Err("Exec: payload ends early");
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

fn u32_at(p: &mut &[u8]) -> Result<u32, &'static str> {
    Ok(u32::from_le_bytes(take(p, 4)?.try_into().expect("4 bytes")))
}

fn u64_at(p: &mut &[u8]) -> Result<u64, &'static str> {
    Ok(u64::from_le_bytes(take(p, 8)?.try_into().expect("8 bytes")))
}

/// A refused `Exec` payload: why, and how many bulk transfers follow it in the request stream
/// (the program's, and one per file when the count could be read), to be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub why: &'static str,
    pub transfers: usize,
}

/// Decodes and checks an `Exec` payload: every length, every name, no trailing bytes.
pub fn decode(payload: &[u8]) -> Result<ExecRequest, Refused> {
    let mut transfers = 1;
    decode_inner(payload, &mut transfers).map_err(|why| Refused { why, transfers })
}

fn decode_inner(payload: &[u8], transfers: &mut usize) -> Result<ExecRequest, &'static str> {
    let (argv, rest) = proto::decode_strings(payload).ok_or("Exec: malformed argv")?;
    let (envp, mut p) = proto::decode_strings(rest).ok_or("Exec: malformed envp")?;
    let mut req = ExecRequest { argv, envp, limits: Requested::default(), files: Vec::new() };
    if p.is_empty() {
        return Ok(req);
    }
    req.limits = Requested { memory: u64_at(&mut p)?, processes: u64_at(&mut p)?, cpu_ticks: u64_at(&mut p)?, fs_bytes: u64_at(&mut p)?, log_bytes: u64_at(&mut p)? };
    let n = u32_at(&mut p)? as usize;
    if n > MAX_FILES {
        return Err("Exec: too many files");
    }
    *transfers += n;
    for _ in 0..n {
        let flags = u32_at(&mut p)?;
        if flags & !1 != 0 {
            return Err("Exec: unknown file flags");
        }
        let len = u32_at(&mut p)? as usize;
        let path = guest_path(take(&mut p, len)?)?;
        if req.files.iter().any(|f| f.path == path) {
            return Err("Exec: a file name appears twice");
        }
        req.files.push(FileSpec { path, executable: flags & 1 != 0 });
    }
    if !p.is_empty() {
        return Err("Exec: trailing bytes after the file list");
    }
    Ok(req)
}

/// Checks a guest file name and makes it absolute: a relative name is placed under `/build`;
/// an absolute one must lie under `/build` or `/tmp`. Refused: empty names, NUL bytes, empty,
/// `.` or `..` components (so no name can leave those places), components over `NAME_MAX`,
/// results of `PATH_MAX` or more.
pub fn guest_path(name: &[u8]) -> Result<Vec<u8>, &'static str> {
    if name.is_empty() {
        return Err("Exec: empty file name");
    }
    if name.contains(&0) {
        return Err("Exec: NUL in a file name");
    }
    let relative = name[0] != b'/';
    let body = if relative { name } else { &name[1..] };
    let comps: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
    for c in &comps {
        match *c {
            b"" => return Err("Exec: empty component in a file name"),
            b"." | b".." => return Err("Exec: '.' or '..' in a file name"),
            c if c.len() > NAME_MAX => return Err("Exec: file name component too long"),
            _ => {}
        }
    }
    if !relative && (comps.len() < 2 || (comps[0] != b"build" && comps[0] != b"tmp")) {
        return Err("Exec: absolute file names must lie under /build or /tmp");
    }
    let mut path = if relative { b"/build/".to_vec() } else { Vec::new() };
    path.extend_from_slice(name);
    if path.len() >= PATH_MAX {
        return Err("Exec: file name too long");
    }
    Ok(path)
}

/// Creates the builder's file `path` (from [`guest_path`]) of `size` zero bytes, with the
/// directories above it (mode 0755), ready to be filled with `Fs::write_at`. The file is the
/// builder's: mode 0644, or 0755 when executable. Its size counts against the file-system
/// limit at once (`ENOSPC` before any byte is received).
pub fn create_file(fs: &mut Fs, path: &[u8], size: u64, executable: bool) -> Result<Ino, Errno> {
    let split = path.iter().rposition(|&b| b == b'/').ok_or(Errno::EINVAL)?;
    let (dir, name) = (&path[..split], &path[split + 1..]);
    let mut d = ROOT;
    for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        d = match fs.lookup(d, c) {
            Ok(i) if fs.get(i)?.is_dir() => i,
            Ok(_) => return Err(Errno::ENOTDIR),
            Err(_) => fs.mkdir(d, c, 0o755)?,
        };
    }
    let f = fs.create(d, name, if executable { 0o755 } else { 0o644 })?;
    fs.truncate(f, size)?;
    Ok(f)
}

/// What the agent grants a request, and the file system it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub limits: Limits,
    pub fs_bytes: u64,
    pub fs_inodes: usize,
}

/// Defaults (1 GiB of memory, 64 processes, 60 s of CPU, 1 GiB of files, 100 000 inodes).
pub const DEFAULT: Requested = Requested { memory: 1 << 30, processes: 64, cpu_ticks: 60 * 100, fs_bytes: 1 << 30, log_bytes: u64::MAX };
/// Hard caps, whatever is asked.
pub const MAX_PROCESSES: u64 = 1024;
pub const MAX_CPU_TICKS: u64 = 24 * 3600 * 100;
pub const MAX_INODES: usize = 100_000;
/// Heap kept back for the agent itself (descriptor tables, buffers, frames), never granted.
pub const HEAP_RESERVE: u64 = 48 << 20;
/// The most kernel memory one process holds outside the memory limit: its descriptor table
/// (1024 entries and their open file descriptions) and signal state.
pub const PROCESS_KERNEL_BYTES: u64 = 128 << 10;
/// Response stream kept back for what follows the builder's output (status, errors, answers).
pub const LOG_RESERVE: u64 = 1 << 20;

/// Grants a request's limits (defaults where it asked for 0), capped by what the agent can
/// afford so that no builder can exhaust the agent's own memory or the response stream:
/// of the heap beyond [`HEAP_RESERVE`], half may become user memory (pages, page tables, pipe
/// buffers) and a quarter the file system (contents, inodes and names; a file's buffer may
/// grow to twice its size); the log fits in the response stream's `log_room`, less
/// [`LOG_RESERVE`]; processes are capped so that their kernel state (descriptor tables, at most
/// [`PROCESS_KERNEL_BYTES`] each) fits in half the reserve.
pub fn grant(req: &Requested, heap_free: u64, log_room: u64) -> Grant {
    let pick = |v: u64, d: u64| if v == 0 { d } else { v };
    let budget = heap_free.saturating_sub(HEAP_RESERVE);
    let memory = pick(req.memory, DEFAULT.memory).min(budget / 2);
    let fs_bytes = pick(req.fs_bytes, DEFAULT.fs_bytes).min(budget / 4);
    let processes = pick(req.processes, DEFAULT.processes).min(MAX_PROCESSES).min(HEAP_RESERVE / 2 / PROCESS_KERNEL_BYTES) as usize;
    let cpu_ticks = pick(req.cpu_ticks, DEFAULT.cpu_ticks).min(MAX_CPU_TICKS);
    let log_bytes = pick(req.log_bytes, DEFAULT.log_bytes).min(log_room.saturating_sub(LOG_RESERVE));
    // Inodes and names are charged to the file-system bytes (`fs::INODE_BYTES`).
    let fs_inodes = MAX_INODES;
    Grant { limits: Limits { memory, processes, cpu_ticks, log_bytes }, fs_bytes, fs_inodes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fs::Kind;

    #[test]
    fn round_trip_and_old_payloads() {
        let lim = Requested { memory: 1, processes: 2, cpu_ticks: 3, fs_bytes: 4, log_bytes: 5 };
        let p = encode(&["prog", "a"], &["X=1"], &lim, &[("in.txt", false), ("/tmp/tool", true)]);
        let r = decode(&p).unwrap();
        assert_eq!(r.argv, ["prog", "a"]);
        assert_eq!(r.envp, ["X=1"]);
        assert_eq!(r.limits, lim);
        assert_eq!(r.files, [FileSpec { path: b"/build/in.txt".to_vec(), executable: false }, FileSpec { path: b"/tmp/tool".to_vec(), executable: true }]);
        // Every truncation is refused, never read past, except exactly argv + envp (an older
        // loader's payload).
        let mut prefix = Vec::new();
        proto::encode_strings(&mut prefix, &["prog", "a"]);
        proto::encode_strings(&mut prefix, &["X=1"]);
        for n in 0..p.len() {
            assert_eq!(decode(&p[..n]).is_ok(), n == prefix.len(), "{n}");
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(Refused { why: "Exec: trailing bytes after the file list", transfers: 3 }));
        // An older loader's payload: defaults, no files.
        let mut old = Vec::new();
        proto::encode_strings(&mut old, &["prog"]);
        proto::encode_strings(&mut old, &[]);
        let r = decode(&old).unwrap();
        assert_eq!((r.limits, r.files.len()), (Requested::default(), 0));
    }

    #[test]
    fn hostile_file_lists_are_refused() {
        let lim = Requested::default();
        assert!(decode(&encode(&["p"], &[], &lim, &[("a", false), ("a", true)])).is_err());
        assert!(decode(&encode(&["p"], &[], &lim, &[("a", false), ("/build/a", true)])).is_err());
        let mut p = encode(&["p"], &[], &lim, &[("a", false)]);
        let flags_at = p.len() - 1 - 4 - 4;
        p[flags_at] = 2;
        assert_eq!(decode(&p), Err(Refused { why: "Exec: unknown file flags", transfers: 2 }));
        // A count far beyond the payload, and one beyond MAX_FILES.
        let mut p = encode(&["p"], &[], &lim, &[]);
        let n_at = p.len() - 4;
        p[n_at..].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode(&p), Err(Refused { why: "Exec: payload ends early", transfers: 1001 }));
        p[n_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&p), Err(Refused { why: "Exec: too many files", transfers: 1 }));
        // A name length beyond the payload.
        let mut p = encode(&["p"], &[], &lim, &[("abc", false)]);
        let len_at = p.len() - 3 - 4;
        p[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&p), Err(Refused { why: "Exec: payload ends early", transfers: 2 }));
        // Not even argv: the program's transfer is still skipped.
        assert_eq!(decode(&[1, 2]), Err(Refused { why: "Exec: malformed argv", transfers: 1 }));
    }

    #[test]
    fn guest_names() {
        assert_eq!(guest_path(b"x").unwrap(), b"/build/x");
        assert_eq!(guest_path(b"sub/dir/x.sh").unwrap(), b"/build/sub/dir/x.sh");
        assert_eq!(guest_path(b"/build/x").unwrap(), b"/build/x");
        assert_eq!(guest_path(b"/tmp/a/b").unwrap(), b"/tmp/a/b");
        assert_eq!(guest_path(b"..x").unwrap(), b"/build/..x");
        for bad in [
            &b""[..],
            b"..",
            b"../x",
            b"a/../../x",
            b"a/..",
            b"./x",
            b"a//b",
            b"a/",
            b"/",
            b"/build",
            b"/tmp/",
            b"/build/../etc/passwd",
            b"/etc/passwd",
            b"/nix/store/x",
            b"/buildx/y",
            b"a\0b",
        ] {
            assert!(guest_path(bad).is_err(), "{:?}", core::str::from_utf8(bad));
        }
        assert!(guest_path(&[b'n'; 255]).is_ok());
        assert!(guest_path(&[b'n'; 256]).is_err());
        let deep: Vec<u8> = (0..1363).flat_map(|_| *b"ab/").chain(*b"c").collect();
        assert!(deep.len() < PATH_MAX && guest_path(&deep).is_err(), "with /build/ it reaches PATH_MAX");
    }

    #[test]
    fn files_are_the_builders_and_count_against_the_limit() {
        let mut fs = Fs::nix_sandbox(1 << 20, 1000).unwrap();
        let f = create_file(&mut fs, b"/build/a/b/tool", 10, true).unwrap();
        fs.write_at(f, 0, b"0123456789").unwrap();
        let n = fs.get(f).unwrap();
        assert_eq!((n.perm, n.size(), n.readonly), (0o755, 10, false));
        let d = fs.resolve(ROOT, b"/build/a", true).unwrap();
        assert_eq!(fs.get(d).unwrap().perm, 0o755);
        let g = create_file(&mut fs, b"/tmp/data", 3, false).unwrap();
        assert_eq!(fs.get(g).unwrap().perm, 0o644);
        assert!(matches!(&fs.get(g).unwrap().kind, Kind::File(d) if d == &[0, 0, 0]));
        // Names that collide, and sizes over the limit, are refused before any byte arrives.
        assert_eq!(create_file(&mut fs, b"/build/a/b/tool", 1, false), Err(Errno::EEXIST));
        assert_eq!(create_file(&mut fs, b"/build/a/b/tool/x", 1, false), Err(Errno::ENOTDIR));
        assert_eq!(create_file(&mut fs, b"/build/big", 2 << 20, false), Err(Errno::ENOSPC));
    }

    #[test]
    fn grants_are_capped_by_what_the_agent_can_afford() {
        // The defaults, where the heap allows them.
        let heap = 8u64 << 30;
        let room = 1u64 << 30;
        let g = grant(&Requested::default(), heap, room);
        assert_eq!((g.limits.memory, g.fs_bytes), (DEFAULT.memory, DEFAULT.fs_bytes));
        assert_eq!((g.limits.processes, g.limits.cpu_ticks), (64, 6000));
        assert_eq!(g.limits.log_bytes, room - LOG_RESERVE);
        assert_eq!(g.fs_inodes, MAX_INODES);
        // A 512 MiB guest cannot afford them.
        let g = grant(&Requested::default(), 500 << 20, room);
        assert_eq!((g.limits.memory, g.fs_bytes), (((500 << 20) - HEAP_RESERVE) / 2, ((500 << 20) - HEAP_RESERVE) / 4));
        // Small limits are granted as asked.
        let small = Requested { memory: 16 << 20, processes: 4, cpu_ticks: 10, fs_bytes: 1 << 20, log_bytes: 4096 };
        let g = grant(&small, heap, room);
        assert_eq!((g.limits.memory, g.limits.processes, g.limits.cpu_ticks, g.fs_bytes, g.limits.log_bytes), (16 << 20, 4, 10, 1 << 20, 4096));
        // Large ones are capped; user memory + twice the files never reach into the reserve.
        let huge = Requested { memory: u64::MAX, processes: u64::MAX, cpu_ticks: u64::MAX, fs_bytes: u64::MAX, log_bytes: u64::MAX };
        for heap in [0, 1 << 20, 100 << 20, 512 << 20, 16 << 30] {
            let g = grant(&huge, heap, 0);
            assert!(g.limits.memory + 2 * g.fs_bytes <= heap.saturating_sub(HEAP_RESERVE), "{heap}");
            assert_eq!((g.limits.cpu_ticks, g.limits.log_bytes), (MAX_CPU_TICKS, 0));
            assert!(g.limits.processes as u64 * PROCESS_KERNEL_BYTES <= HEAP_RESERVE / 2 && g.limits.processes <= MAX_PROCESSES as usize);
        }
    }
}
