//! The builder's file system: in memory, owned by the agent. `/nix/store` holds the inputs
//! (read-only to the builder; new entries may be created, as in Nix's chroot store), `/build`
//! is the writable working directory, plus `/tmp`, `/dev/null`, `/dev/zero` and the `/etc` files
//! Nix's sandbox writes. Path resolution cannot leave the root (`..` of `/` is `/`) and follows
//! at most 40 symlinks, as Linux.
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

pub type Ino = usize;

/// Linux errno values (positive; system calls return their negation).
pub mod errno {
    pub const ENOENT: i64 = 2;
    pub const EBADF: i64 = 9;
    pub const EACCES: i64 = 13;
    pub const EEXIST: i64 = 17;
    pub const ENOTDIR: i64 = 20;
    pub const EISDIR: i64 = 21;
    pub const EINVAL: i64 = 22;
    pub const ENOSPC: i64 = 28;
    pub const ENAMETOOLONG: i64 = 36;
    pub const ENOTEMPTY: i64 = 39;
    pub const ELOOP: i64 = 40;
}
use errno::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Ino>),
    Symlink(Vec<u8>),
    /// /dev/null, /dev/zero.
    Null,
    Zero,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The containing directory (for `..`); the root is its own parent.
    pub parent: Ino,
    pub nlink: u32,
}

/// The builder's identity (Nix: uid 1000, gid 100).
pub const UID: u32 = 1000;
pub const GID: u32 = 100;
pub const ROOT: Ino = 0;
const MAX_SYMLINKS: usize = 40;
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

pub struct Fs {
    nodes: Vec<Option<Node>>,
    /// Bytes of file contents, against `max_bytes`.
    pub used: u64,
    pub max_bytes: u64,
}

/// The files Nix 2.8's sandbox writes into `/etc` (`local-derivation-goal.cc`; seen in a real
/// sandboxed build, see tests/e2e).
pub const PASSWD: &str = "root:x:0:0:Nix build user:/build:/noshell\nnixbld:x:1000:100:Nix build user:/build:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n";
pub const GROUP: &str = "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n";
pub const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

impl Fs {
    /// The sandbox's initial tree.
    pub fn new(max_bytes: u64) -> Fs {
        let mut fs = Fs { nodes: Vec::new(), used: 0, max_bytes };
        fs.nodes.push(Some(Node { kind: Kind::Dir(BTreeMap::new()), mode: 0o755, uid: 0, gid: 0, parent: ROOT, nlink: 2 }));
        let nix = fs.add(ROOT, b"nix", Kind::Dir(BTreeMap::new()), 0o755, 0);
        // root:nixbld 1775, as Nix's chroot store: the builder may add entries, not touch inputs.
        let store = fs.add(nix, b"store", Kind::Dir(BTreeMap::new()), 0o1775, 0);
        if let Some(n) = fs.node_mut(store) {
            n.gid = GID;
        }
        fs.add(ROOT, b"build", Kind::Dir(BTreeMap::new()), 0o700, UID);
        fs.add(ROOT, b"tmp", Kind::Dir(BTreeMap::new()), 0o1777, 0);
        let dev = fs.add(ROOT, b"dev", Kind::Dir(BTreeMap::new()), 0o755, 0);
        fs.add(dev, b"null", Kind::Null, 0o666, 0);
        fs.add(dev, b"zero", Kind::Zero, 0o666, 0);
        let etc = fs.add(ROOT, b"etc", Kind::Dir(BTreeMap::new()), 0o755, 0);
        fs.add(etc, b"passwd", Kind::File(PASSWD.into()), 0o444, 0);
        fs.add(etc, b"group", Kind::File(GROUP.into()), 0o444, 0);
        fs.add(etc, b"hosts", Kind::File(HOSTS.into()), 0o444, 0);
        fs
    }

    /// Adds a node under `dir` without checks (setting up the tree).
    pub fn add(&mut self, dir: Ino, name: &[u8], kind: Kind, mode: u32, uid: u32) -> Ino {
        let ino = self.nodes.len();
        if let Kind::File(d) = &kind {
            self.used += d.len() as u64;
        }
        self.nodes.push(Some(Node { kind, mode, uid, gid: if uid == UID { GID } else { 0 }, parent: dir, nlink: 1 }));
        if let Some(Node { kind: Kind::Dir(e), .. }) = self.nodes[dir].as_mut() {
            e.insert(name.to_vec(), ino);
        }
        ino
    }

    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(ino)?.as_ref()
    }

    pub fn node_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(ino)?.as_mut()
    }

    fn may(&self, ino: Ino, bit: u32) -> bool {
        let Some(n) = self.node(ino) else { return false };
        let shift = if n.uid == UID { 6 } else if n.gid == GID { 3 } else { 0 };
        n.mode >> shift & bit != 0
    }

    /// Whether the builder may change directory `dir` (w + x), honouring the sticky bit when
    /// removing `victim`.
    fn may_write_dir(&self, dir: Ino, victim: Option<Ino>) -> bool {
        if !self.may(dir, 2) || !self.may(dir, 1) {
            return false;
        }
        match (self.node(dir), victim.and_then(|v| self.node(v))) {
            (Some(d), Some(v)) if d.mode & 0o1000 != 0 => v.uid == UID || d.uid == UID,
            _ => true,
        }
    }

    /// Resolves `path` (relative to `cwd`); `follow` says whether a final symlink is followed.
    pub fn resolve(&self, cwd: Ino, path: &[u8], follow: bool) -> Result<Ino, i64> {
        let (dir, name) = self.resolve_parent(cwd, path)?;
        if name.is_empty() {
            return Ok(dir);
        }
        self.step(dir, &name, follow, &mut 0)
    }

    /// Resolves all but the last component: (directory, last name). For "/", ".", ".." or a
    /// path ending in "/", the name is empty and the directory is the node itself.
    pub fn resolve_parent(&self, cwd: Ino, path: &[u8]) -> Result<(Ino, Vec<u8>), i64> {
        self.resolve_parent_counting(cwd, path, &mut 0)
    }

    fn resolve_parent_counting(&self, cwd: Ino, path: &[u8], links: &mut usize) -> Result<(Ino, Vec<u8>), i64> {
        if path.is_empty() {
            return Err(ENOENT);
        }
        if path.len() > MAX_PATH {
            return Err(ENAMETOOLONG);
        }
        let mut dir = if path[0] == b'/' { ROOT } else { cwd };
        let parts: Vec<&[u8]> = path.split(|&c| c == b'/').filter(|p| !p.is_empty()).collect();
        let trailing_slash = path.ends_with(b"/");
        let Some((last, init)) = parts.split_last() else { return Ok((dir, Vec::new())) };
        for p in init {
            dir = self.step(dir, p, true, links)?;
            if !matches!(self.node(dir).map(|n| &n.kind), Some(Kind::Dir(_))) {
                return Err(ENOTDIR);
            }
        }
        if trailing_slash || *last == b"." || *last == b".." {
            let d = self.step(dir, last, true, links)?;
            if !matches!(self.node(d).map(|n| &n.kind), Some(Kind::Dir(_))) {
                return Err(ENOTDIR);
            }
            return Ok((d, Vec::new()));
        }
        if last.len() > MAX_NAME {
            return Err(ENAMETOOLONG);
        }
        Ok((dir, last.to_vec()))
    }

    /// One component from directory `dir`.
    fn step(&self, dir: Ino, name: &[u8], follow: bool, links: &mut usize) -> Result<Ino, i64> {
        let node = self.node(dir).ok_or(ENOENT)?;
        let Kind::Dir(entries) = &node.kind else { return Err(ENOTDIR) };
        if !self.may(dir, 1) {
            return Err(EACCES);
        }
        let target = match name {
            b"." => dir,
            b".." => node.parent,
            _ => *entries.get(name).ok_or(ENOENT)?,
        };
        if let (true, Some(Node { kind: Kind::Symlink(to), .. })) = (follow, self.node(target)) {
            *links += 1;
            if *links > MAX_SYMLINKS {
                return Err(ELOOP);
            }
            let to = to.clone();
            let (d, n) = self.resolve_parent_counting(dir, &to, links)?;
            return if n.is_empty() { Ok(d) } else { self.step(d, &n, true, links) };
        }
        Ok(target)
    }

    /// Creates a node named by `path`; `EEXIST` if the name is taken.
    pub fn create(&mut self, cwd: Ino, path: &[u8], kind: Kind, mode: u32) -> Result<Ino, i64> {
        let (dir, name) = self.resolve_parent(cwd, path)?;
        if name.is_empty() {
            return Err(EEXIST);
        }
        let Some(Node { kind: Kind::Dir(e), .. }) = self.node(dir) else { return Err(ENOTDIR) };
        if e.contains_key(&name) {
            return Err(EEXIST);
        }
        if !self.may_write_dir(dir, None) {
            return Err(EACCES);
        }
        Ok(self.add(dir, &name, kind, mode & 0o7777, UID))
    }

    /// Removes the entry `path` (a directory only if `dir`, and only when empty).
    pub fn remove(&mut self, cwd: Ino, path: &[u8], dir: bool) -> Result<(), i64> {
        let (parent, name) = self.resolve_parent(cwd, path)?;
        if name.is_empty() {
            return Err(if dir { EINVAL } else { EISDIR });
        }
        let ino = self.step(parent, &name, false, &mut 0)?;
        match (&self.node(ino).ok_or(ENOENT)?.kind, dir) {
            (Kind::Dir(e), true) if !e.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(EISDIR),
            (k, true) if !matches!(k, Kind::Dir(_)) => return Err(ENOTDIR),
            _ => {}
        }
        if !self.may_write_dir(parent, Some(ino)) {
            return Err(EACCES);
        }
        if let Some(Node { kind: Kind::Dir(e), .. }) = self.node_mut(parent) {
            e.remove(&name);
        }
        self.unlink_node(ino);
        Ok(())
    }

    fn unlink_node(&mut self, ino: Ino) {
        let Some(n) = self.node_mut(ino) else { return };
        n.nlink = n.nlink.saturating_sub(1);
        if n.nlink == 0 {
            if let Kind::File(d) = &n.kind {
                self.used -= d.len() as u64;
            }
            self.nodes[ino] = None;
        }
    }

    /// Renames `from` to `to`, replacing a file with a file or an empty directory with a directory.
    pub fn rename(&mut self, cwd: Ino, from: &[u8], to: &[u8]) -> Result<(), i64> {
        let (fdir, fname) = self.resolve_parent(cwd, from)?;
        let (tdir, tname) = self.resolve_parent(cwd, to)?;
        if fname.is_empty() || tname.is_empty() {
            return Err(EINVAL);
        }
        let ino = self.step(fdir, &fname, false, &mut 0)?;
        // Not into itself.
        let mut d = tdir;
        loop {
            if d == ino {
                return Err(EINVAL);
            }
            if d == ROOT {
                break;
            }
            d = self.node(d).ok_or(ENOENT)?.parent;
        }
        if !self.may_write_dir(fdir, Some(ino)) || !self.may_write_dir(tdir, None) {
            return Err(EACCES);
        }
        if let Ok(existing) = self.step(tdir, &tname, false, &mut 0) {
            if existing == ino {
                return Ok(());
            }
            let is_dir = |k: Option<&Node>| matches!(k.map(|n| &n.kind), Some(Kind::Dir(_)));
            match (is_dir(self.node(ino)), is_dir(self.node(existing))) {
                (false, true) => return Err(EISDIR),
                (true, false) => return Err(ENOTDIR),
                _ => {}
            }
            if let Some(Node { kind: Kind::Dir(e), .. }) = self.node(existing) {
                if !e.is_empty() {
                    return Err(ENOTEMPTY);
                }
            }
            if let Some(Node { kind: Kind::Dir(e), .. }) = self.node_mut(tdir) {
                e.remove(&tname);
            }
            self.unlink_node(existing);
        }
        if let Some(Node { kind: Kind::Dir(e), .. }) = self.node_mut(fdir) {
            e.remove(&fname);
        }
        if let Some(Node { kind: Kind::Dir(e), .. }) = self.node_mut(tdir) {
            e.insert(tname, ino);
        }
        if let Some(n) = self.node_mut(ino) {
            n.parent = tdir;
        }
        Ok(())
    }

    /// Writes `data` at `pos` into file `ino` (extending it), within the size limit.
    pub fn write_at(&mut self, ino: Ino, pos: u64, data: &[u8]) -> Result<usize, i64> {
        let end = pos.checked_add(data.len() as u64).ok_or(EINVAL)?;
        let (used, max) = (self.used, self.max_bytes);
        match self.node_mut(ino).map(|n| &mut n.kind) {
            Some(Kind::File(d)) => {
                let grow = end.saturating_sub(d.len() as u64);
                if used + grow > max {
                    return Err(ENOSPC);
                }
                if end as usize > d.len() {
                    d.try_reserve(end as usize - d.len()).map_err(|_| ENOSPC)?;
                    d.resize(end as usize, 0);
                }
                d[pos as usize..end as usize].copy_from_slice(data);
                self.used += grow;
                Ok(data.len())
            }
            Some(Kind::Null | Kind::Zero) => Ok(data.len()),
            Some(Kind::Dir(_)) => Err(EISDIR),
            _ => Err(EBADF),
        }
    }

    /// A file's size (0 for devices), without copying it.
    pub fn size(&self, ino: Ino) -> Option<u64> {
        match &self.node(ino)?.kind {
            Kind::File(d) => Some(d.len() as u64),
            Kind::Symlink(t) => Some(t.len() as u64),
            _ => Some(0),
        }
    }

    /// Reads up to `len` bytes at `pos` from file `ino`.
    pub fn read_at(&self, ino: Ino, pos: u64, len: usize) -> Result<Vec<u8>, i64> {
        match self.node(ino).map(|n| &n.kind) {
            Some(Kind::File(d)) => {
                let start = (pos.min(d.len() as u64)) as usize;
                let end = start.saturating_add(len).min(d.len());
                Ok(d[start..end].to_vec())
            }
            Some(Kind::Null) => Ok(Vec::new()),
            Some(Kind::Zero) => Ok(vec![0; len.min(1 << 20)]),
            Some(Kind::Dir(_)) => Err(EISDIR),
            _ => Err(EBADF),
        }
    }

    pub fn truncate(&mut self, ino: Ino, len: u64) -> Result<(), i64> {
        let (used, max) = (self.used, self.max_bytes);
        match self.node_mut(ino).map(|n| &mut n.kind) {
            Some(Kind::File(d)) => {
                let old = d.len() as u64;
                if len > old && used + (len - old) > max {
                    return Err(ENOSPC);
                }
                d.resize(len as usize, 0);
                self.used = used - old + len;
                Ok(())
            }
            Some(Kind::Null | Kind::Zero) => Ok(()),
            Some(Kind::Dir(_)) => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// Whether the builder may read (4), write (2) and/or execute (1) `ino`.
    pub fn access(&self, ino: Ino, bits: u32) -> bool {
        (0..3).filter(|b| bits & (1 << b) != 0).all(|b| self.may(ino, 1 << b))
    }

    /// The absolute path of directory `ino` (getcwd).
    pub fn path_of(&self, mut ino: Ino) -> Vec<u8> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while ino != ROOT {
            let Some(n) = self.node(ino) else { break };
            let parent = n.parent;
            if let Some(Node { kind: Kind::Dir(e), .. }) = self.node(parent) {
                if let Some((name, _)) = e.iter().find(|(_, &i)| i == ino) {
                    parts.push(name.clone());
                }
            }
            ino = parent;
        }
        if parts.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_and_symlinks_are_bounded() {
        let mut fs = Fs::new(1 << 20);
        let build = fs.resolve(ROOT, b"/build", true).unwrap();
        assert_eq!(fs.resolve(build, b"../../../..", true).unwrap(), ROOT);
        assert_eq!(fs.resolve(build, b"../etc/passwd", true).map(|i| fs.read_at(i, 0, 200).unwrap()), Ok(PASSWD.as_bytes().to_vec()));
        fs.create(build, b"loop", Kind::Symlink(b"loop".to_vec()), 0o777).unwrap();
        assert_eq!(fs.resolve(build, b"loop", true), Err(ELOOP));
        fs.create(build, b"up", Kind::Symlink(b"/../../etc".to_vec()), 0o777).unwrap();
        assert_eq!(fs.resolve(build, b"up/hosts", true).map(|i| fs.read_at(i, 0, 100).unwrap()), Ok(HOSTS.as_bytes().to_vec()));
        assert_eq!(fs.path_of(build), b"/build");
        assert_eq!(fs.resolve(build, b"nothing/here", true), Err(ENOENT));
        assert_eq!(fs.resolve(build, b"../etc/passwd/x", true), Err(ENOTDIR));
    }

    #[test]
    fn files_dirs_rename_remove_and_limits() {
        let mut fs = Fs::new(0);
        let used0 = fs.used;
        fs.max_bytes = used0 + 100;
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let d = fs.create(b, b"d", Kind::Dir(BTreeMap::new()), 0o755).unwrap();
        let f = fs.create(d, b"f", Kind::File(Vec::new()), 0o644).unwrap();
        assert_eq!(fs.write_at(f, 0, b"hello"), Ok(5));
        assert_eq!(fs.write_at(f, 200, b"x"), Err(ENOSPC));
        assert_eq!(fs.create(b, b"d/f", Kind::File(Vec::new()), 0o644), Err(EEXIST));
        assert_eq!(fs.remove(b, b"d", true), Err(ENOTEMPTY));
        fs.rename(b, b"d/f", b"g").unwrap();
        assert_eq!(fs.read_at(fs.resolve(b, b"g", true).unwrap(), 0, 10), Ok(b"hello".to_vec()));
        assert_eq!(fs.rename(b, b"d", b"d/inner"), Err(EINVAL));
        fs.remove(b, b"d", true).unwrap();
        fs.remove(b, b"g", false).unwrap();
        assert_eq!(fs.used, used0);
        // /etc is not writable; the inputs' store takes new entries.
        assert_eq!(fs.create(ROOT, b"/etc/new", Kind::File(Vec::new()), 0o644), Err(EACCES));
        assert!(fs.create(ROOT, b"/nix/store/new", Kind::File(Vec::new()), 0o644).is_ok());
        assert_eq!(fs.remove(ROOT, b"/etc/passwd", false), Err(EACCES));
    }
}

/// Unpacks a NAR into the file system below `/nix/store/<name>` (see [`Fs::unpack_sink`]):
/// inputs arrive read-only and owned by root, as in Nix's store.
pub struct StoreSink<'a> {
    fs: &'a mut Fs,
    /// The store directory.
    store: Ino,
    name: Vec<u8>,
    /// The file being written.
    current: Option<Ino>,
}

impl Fs {
    /// A NAR sink that creates `/nix/store/<name>` from an archive.
    pub fn unpack_sink(&mut self, name: &[u8]) -> Result<StoreSink<'_>, i64> {
        let store = self.resolve(ROOT, b"/nix/store", true)?;
        Ok(StoreSink { fs: self, store, name: name.to_vec(), current: None })
    }

    /// The node at a NAR path below `/nix/store/<name>` (none for `[]`: the store dir itself).
    fn nar_parent(&self, store: Ino, name: &[u8], path: &[Vec<u8>]) -> Result<(Ino, Vec<u8>), i64> {
        let Some((last, init)) = path.split_last() else { return Ok((store, name.to_vec())) };
        let mut dir = match &self.node(store).ok_or(ENOENT)?.kind {
            Kind::Dir(e) => *e.get(name).ok_or(ENOENT)?,
            _ => return Err(ENOTDIR),
        };
        for p in init {
            dir = match &self.node(dir).ok_or(ENOENT)?.kind {
                Kind::Dir(e) => *e.get(p).ok_or(ENOENT)?,
                _ => return Err(ENOTDIR),
            };
        }
        Ok((dir, last.clone()))
    }
}

impl crate::nix::nar::NarSink for StoreSink<'_> {
    type Error = i64;
    fn create_directory(&mut self, path: &[Vec<u8>]) -> Result<(), i64> {
        let (dir, name) = self.fs.nar_parent(self.store, &self.name, path)?;
        self.fs.add(dir, &name, Kind::Dir(BTreeMap::new()), 0o555, 0);
        Ok(())
    }
    fn create_file(&mut self, path: &[Vec<u8>], executable: bool, size: u64) -> Result<(), i64> {
        if self.fs.used.saturating_add(size) > self.fs.max_bytes {
            return Err(ENOSPC);
        }
        let (dir, name) = self.fs.nar_parent(self.store, &self.name, path)?;
        let mut data = Vec::new();
        data.try_reserve_exact(size as usize).map_err(|_| ENOSPC)?;
        self.current = Some(self.fs.add(dir, &name, Kind::File(data), if executable { 0o555 } else { 0o444 }, 0));
        Ok(())
    }
    fn write_contents(&mut self, data: &[u8]) -> Result<(), i64> {
        let ino = self.current.ok_or(EBADF)?;
        self.fs.used += data.len() as u64;
        match self.fs.node_mut(ino).map(|n| &mut n.kind) {
            Some(Kind::File(d)) => {
                d.extend_from_slice(data);
                Ok(())
            }
            _ => Err(EBADF),
        }
    }
    fn create_symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), i64> {
        let (dir, name) = self.fs.nar_parent(self.store, &self.name, path)?;
        self.fs.add(dir, &name, Kind::Symlink(target.to_vec()), 0o777, 0);
        Ok(())
    }
}

/// Serialises a node of the file system as a NAR (an output, after the build).
pub struct Tree<'a> {
    pub fs: &'a Fs,
    pub root: Ino,
}

impl crate::nix::nar::NarSource for Tree<'_> {
    type Handle = Ino;
    type Error = i64;
    fn root(&self) -> Ino {
        self.root
    }
    fn node(&self, h: &Ino) -> Result<crate::nix::nar::Node, i64> {
        use crate::nix::nar::Node as N;
        let n = self.fs.node(*h).ok_or(ENOENT)?;
        Ok(match &n.kind {
            // Nix records only the owner's execute bit.
            Kind::File(d) => N::Regular { executable: n.mode & 0o100 != 0, size: d.len() as u64 },
            Kind::Dir(_) => N::Directory,
            Kind::Symlink(t) => N::Symlink(t.clone()),
            Kind::Null | Kind::Zero => return Err(EINVAL), // a device in an output: refused
        })
    }
    fn entries(&self, h: &Ino) -> Result<Vec<(Vec<u8>, Ino)>, i64> {
        match &self.fs.node(*h).ok_or(ENOENT)?.kind {
            Kind::Dir(e) => Ok(e.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            _ => Err(ENOTDIR),
        }
    }
    fn contents(&self, h: &Ino, f: &mut dyn FnMut(&[u8])) -> Result<(), i64> {
        match &self.fs.node(*h).ok_or(ENOENT)?.kind {
            Kind::File(d) => {
                for c in d.chunks(64 << 10) {
                    f(c);
                }
                Ok(())
            }
            _ => Err(EISDIR),
        }
    }
}

#[cfg(test)]
mod nar_tests {
    use super::*;
    use crate::nix::nar::{self, Limits};

    #[test]
    fn nar_into_and_out_of_the_file_system() {
        let mut t = BTreeMap::new();
        t.insert(b"bin".to_vec(), nar::Tree::Directory([(b"x".to_vec(), nar::Tree::File { executable: true, contents: b"#!x".to_vec() })].into_iter().collect()));
        t.insert(b"l".to_vec(), nar::Tree::Symlink(b"bin/x".to_vec()));
        t.insert(b"r".to_vec(), nar::Tree::File { executable: false, contents: b"data".to_vec() });
        let bytes = nar::Tree::Directory(t).to_nar();
        let mut fs = Fs::new(1 << 20);
        let mut sink = fs.unpack_sink(b"aaaa-in").unwrap();
        nar::parse(&mut bytes.as_slice(), &mut sink, Limits::default()).unwrap();
        let root = fs.resolve(ROOT, b"/nix/store/aaaa-in", true).unwrap();
        let mut out = Vec::new();
        nar::serialize(&Tree { fs: &fs, root }, &mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(out, bytes);
        // Inputs are read-only to the builder.
        assert_eq!(fs.create(ROOT, b"/nix/store/aaaa-in/new", Kind::File(Vec::new()), 0o644), Err(EACCES));
        let r = fs.resolve(ROOT, b"/nix/store/aaaa-in/r", true).unwrap();
        assert!(!fs.access(r, 2));
    }
}
