//! The builder's in-memory file system.
//!
//! An inode arena with directories, regular files, symlinks and the two
//! character devices a builder needs (`/dev/null`, `/dev/zero`). Path lookup
//! follows Linux `namei`: `..` at the root stays at the root (so no path can
//! leave the tree), at most [`MAX_SYMLINKS`] symlinks are followed per lookup
//! (`ELOOP` after that, as `fs/namei.c: MAXSYMLINKS`), components are at most
//! 255 bytes and whole paths at most 4096 (`ENAMETOOLONG`). Inodes under a
//! read-only place (the input store, `/etc`, `/dev`) are root's in Nix's
//! sandbox, not the builder's: writing or creating there is `EACCES`, changing
//! modes or times `EPERM`, as a real sandboxed build sees it.
//!
//! The layout Nix 2.8's sandbox gives a builder is made by [`Fs::nix_sandbox`]
//! (`local-derivation-goal.cc: LocalDerivationGoal::startBuilder`).
//!
//! Inputs arrive as NARs: [`NarUnpacker`] is a [`NarSink`] writing straight into
//! the tree; outputs leave through [`FsTree`], a [`NarSource`].

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::abi::*;
use crate::nix::nar::{NarSink, NarSource, Node};

/// `fs/namei.c: MAXSYMLINKS`.
pub const MAX_SYMLINKS: u32 = 40;
/// `NAME_MAX`.
pub const NAME_MAX: usize = 255;
/// `PATH_MAX`.
pub const PATH_MAX: usize = 4096;

/// What an inode costs the byte limit besides its contents, and each directory entry costs its
/// name's length: the metadata lives in the agent's memory like the contents do, so it is
/// charged like them (as a disk's inode tables and directory blocks take space).
pub const INODE_BYTES: u64 = 256;

/// An inode number (index into the arena; inode 1 is the root).
pub type Ino = usize;

/// The root inode.
pub const ROOT: Ino = 1;

/// A character device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Null,
    Zero,
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir { entries: BTreeMap<Vec<u8>, Ino>, parent: Ino },
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Dev(Device),
}

/// An inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits (the low 12 bits of `st_mode`).
    pub perm: u32,
    pub nlink: u32,
    /// Modification time in seconds (the sandbox clock is fixed; see `process`).
    pub mtime: i64,
    /// On a read-only mount (the input store).
    pub readonly: bool,
}

impl Inode {
    /// `st_mode`: type bits and permissions.
    pub fn mode(&self) -> u32 {
        let t = match self.kind {
            Kind::Dir { .. } => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::Dev(_) => S_IFCHR,
        };
        t | (self.perm & 0o7777)
    }
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(d) => d.len() as u64,
            Kind::Symlink(t) => t.len() as u64,
            Kind::Dir { .. } => 4096,
            Kind::Dev(_) => 0,
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

/// The contents of `/etc/passwd`, `/etc/group` and `/etc/hosts` that Nix 2.8's
/// sandbox writes (`local-derivation-goal.cc: startBuilder`), for uid 1000,
/// gid 100 and build directory `/build`.
pub const ETC_PASSWD: &[u8] = b"root:x:0:0:Nix build user:/build:/noshell\nnixbld:x:1000:100:Nix build user:/build:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n";
pub const ETC_GROUP: &[u8] = b"root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n";
pub const ETC_HOSTS: &[u8] = b"127.0.0.1 localhost\n::1 localhost\n";

/// The in-memory file system.
#[derive(Clone, Debug)]
pub struct Fs {
    nodes: Vec<Option<Inode>>,
    free: Vec<Ino>,
    /// Bytes of file and symlink contents held.
    used: u64,
    /// At most this many bytes of contents (`ENOSPC` beyond).
    pub limit_bytes: u64,
    /// At most this many inodes (`ENOSPC` beyond).
    pub limit_inodes: usize,
    live: usize,
    /// The file clock, in nanoseconds since the epoch (see [`Fs::now`]).
    clock: i64,
    /// Whether changes advance the clock: off while inputs are unpacked (store files keep
    /// the clock's start, 1 s, as Nix gives them), on once the builder runs.
    pub ticking: bool,
}

/// The file clock's start: 1970-01-01T00:00:01Z, the mtime Nix gives store files.
pub const CLOCK_START_NS: i64 = 1_000_000_000;
/// How far the clock moves per event.
pub const TICK_NS: i64 = 1_000;

/// Access a caller asks for (`R_OK`, `W_OK`, `X_OK` bits).
pub const R_OK: u32 = 4;
pub const W_OK: u32 = 2;
pub const X_OK: u32 = 1;

impl Fs {
    /// An empty tree: just `/` (mode 0755).
    pub fn new(limit_bytes: u64, limit_inodes: usize) -> Fs {
        let root = Inode { kind: Kind::Dir { entries: BTreeMap::new(), parent: ROOT }, perm: 0o755, nlink: 2, mtime: CLOCK_START_NS, readonly: false };
        Fs { nodes: alloc::vec![None, Some(root)], free: Vec::new(), used: 0, limit_bytes, limit_inodes, live: 1, clock: CLOCK_START_NS, ticking: false }
    }

    /// The tree Nix 2.8's sandbox gives a builder: `/build` (0700, the cwd),
    /// `/tmp` (1777), `/nix/store` (1775, read-only contents added by
    /// [`NarUnpacker`]), `/dev/null`, `/dev/zero`, `/etc/{passwd,group,hosts}`,
    /// `/bin` absent (Nix binds `/bin/sh` only when the derivation asks).
    pub fn nix_sandbox(limit_bytes: u64, limit_inodes: usize) -> Result<Fs, Errno> {
        let mut fs = Fs::new(limit_bytes, limit_inodes);
        let build = fs.mkdir(ROOT, b"build", 0o700)?;
        let _ = build;
        fs.mkdir(ROOT, b"tmp", 0o1777)?;
        let nix = fs.mkdir(ROOT, b"nix", 0o755)?;
        fs.mkdir(nix, b"store", 0o1775)?;
        let dev = fs.mkdir(ROOT, b"dev", 0o755)?;
        fs.mknod(dev, b"null", Device::Null)?;
        fs.mknod(dev, b"zero", Device::Zero)?;
        fs.set_readonly(dev); // root's: the builder cannot add device nodes
        let etc = fs.mkdir(ROOT, b"etc", 0o555)?;
        for (n, c) in [(&b"passwd"[..], ETC_PASSWD), (b"group", ETC_GROUP), (b"hosts", ETC_HOSTS)] {
            let f = fs.insert_node(etc, n, Kind::File(Vec::new()), 0o444)?;
            fs.write_at(f, 0, c)?;
        }
        // /etc is unwritable in Nix's sandbox (chmod 0555); mark it read-only here too.
        fs.set_readonly(etc);
        Ok(fs)
    }

    pub fn get(&self, ino: Ino) -> Result<&Inode, Errno> {
        self.nodes.get(ino).and_then(|n| n.as_ref()).ok_or(Errno::ENOENT)
    }
    fn get_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        self.nodes.get_mut(ino).and_then(|n| n.as_mut()).ok_or(Errno::ENOENT)
    }
    fn writable(&self, ino: Ino) -> Result<(), Errno> {
        if self.get(ino)?.readonly {
            Err(Errno::EACCES)
        } else {
            Ok(())
        }
    }

    /// Changing an inode's metadata needs its owner: root's inodes are `EPERM`.
    fn owned(&self, ino: Ino) -> Result<(), Errno> {
        if self.get(ino)?.readonly {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    /// Bytes of contents held.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Marks `ino` and everything below it read-only (the input store after unpacking).
    /// The deterministic clock a build sees (issue 16): a logical time that advances by
    /// [`TICK_NS`] at every event — each change to the file system and each clock read — so
    /// files changed one after the other have distinct, ordered mtimes (`make`'s rebuild logic,
    /// automake's `ls -t` check), and the time read after a change is later than the change.
    /// A time set explicitly (`utimensat`, e.g. `tar` or `touch -d`) is kept, and the clock
    /// jumps forward past it, so what changes next is newer still. Nothing depends on the
    /// host's time or the agent's speed.
    pub fn now(&mut self) -> i64 {
        if self.ticking {
            self.clock = self.clock.saturating_add(TICK_NS);
        }
        self.clock
    }

    /// Stamps `ino` (and `dir`, when a name in it changed) with the next tick.
    fn touch(&mut self, ino: Ino, dir: Option<Ino>) {
        let t = self.now();
        for i in [Some(ino), dir].into_iter().flatten() {
            if let Ok(n) = self.get_mut(i) {
                n.mtime = t;
            }
        }
    }

    /// Inodes in use.
    pub fn live_inodes(&self) -> usize {
        self.live
    }

    pub fn set_readonly(&mut self, ino: Ino) {
        let mut work = alloc::vec![ino];
        while let Some(i) = work.pop() {
            if let Ok(n) = self.get_mut(i) {
                n.readonly = true;
                if let Kind::Dir { entries, .. } = &n.kind {
                    work.extend(entries.values().copied());
                }
            }
        }
    }

    fn alloc(&mut self, node: Inode) -> Result<Ino, Errno> {
        if self.live >= self.limit_inodes {
            return Err(Errno::ENOSPC);
        }
        self.live += 1;
        if let Some(i) = self.free.pop() {
            self.nodes[i] = Some(node);
            Ok(i)
        } else {
            self.nodes.push(Some(node));
            Ok(self.nodes.len() - 1)
        }
    }

    fn check_name(name: &[u8]) -> Result<(), Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn entries(&self, dir: Ino) -> Result<&BTreeMap<Vec<u8>, Ino>, Errno> {
        match &self.get(dir)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// Looks `name` up in directory `dir` (no symlink following). `.` and `..` work.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Ino, Errno> {
        match &self.get(dir)?.kind {
            Kind::Dir { entries, parent } => match name {
                b"" | b"." => Ok(dir),
                b".." => Ok(*parent),
                _ => entries.get(name).copied().ok_or(Errno::ENOENT),
            },
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// Inserts a new node named `name` in `dir`.
    fn insert_node(&mut self, dir: Ino, name: &[u8], kind: Kind, perm: u32) -> Result<Ino, Errno> {
        Self::check_name(name)?;
        self.writable(dir)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let extra = INODE_BYTES
            + name.len() as u64
            + match &kind {
                Kind::Symlink(t) => t.len() as u64,
                Kind::File(d) => d.len() as u64,
                _ => 0,
            };
        if self.used.saturating_add(extra) > self.limit_bytes {
            return Err(Errno::ENOSPC);
        }
        let is_dir = matches!(kind, Kind::Dir { .. });
        let ino = self.alloc(Inode { kind, perm: perm & 0o7777, nlink: if is_dir { 2 } else { 1 }, mtime: 0, readonly: false })?;
        self.touch(ino, Some(dir));
        self.used += extra;
        let d = self.get_mut(dir)?;
        if is_dir {
            d.nlink += 1;
        }
        if let Kind::Dir { entries, .. } = &mut d.kind {
            entries.insert(name.to_vec(), ino);
        }
        Ok(ino)
    }

    pub fn mkdir(&mut self, dir: Ino, name: &[u8], perm: u32) -> Result<Ino, Errno> {
        self.insert_node(dir, name, Kind::Dir { entries: BTreeMap::new(), parent: dir }, perm)
    }
    pub fn create(&mut self, dir: Ino, name: &[u8], perm: u32) -> Result<Ino, Errno> {
        self.insert_node(dir, name, Kind::File(Vec::new()), perm)
    }
    pub fn symlink(&mut self, dir: Ino, name: &[u8], target: &[u8]) -> Result<Ino, Errno> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.insert_node(dir, name, Kind::Symlink(target.to_vec()), 0o777)
    }
    pub fn mknod(&mut self, dir: Ino, name: &[u8], dev: Device) -> Result<Ino, Errno> {
        self.insert_node(dir, name, Kind::Dev(dev), 0o666)
    }

    /// Hard link: `dir/name` becomes another name of `target` (not a directory).
    pub fn link(&mut self, target: Ino, dir: Ino, name: &[u8]) -> Result<(), Errno> {
        Self::check_name(name)?;
        if self.get(target)?.is_dir() {
            return Err(Errno::EPERM);
        }
        self.writable(dir)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        if self.used.saturating_add(name.len() as u64) > self.limit_bytes {
            return Err(Errno::ENOSPC);
        }
        let t = self.get_mut(target)?;
        if t.nlink >= 65000 {
            return Err(Errno::EMLINK);
        }
        t.nlink += 1;
        if let Kind::Dir { entries, .. } = &mut self.get_mut(dir)?.kind {
            entries.insert(name.to_vec(), target);
        }
        self.used += name.len() as u64;
        self.touch(target, Some(dir));
        Ok(())
    }

    fn drop_link(&mut self, ino: Ino) {
        let gone = match self.get_mut(ino) {
            Ok(n) => {
                n.nlink = n.nlink.saturating_sub(if n.is_dir() { 2 } else { 1 });
                n.nlink == 0
            }
            Err(_) => false,
        };
        // Open descriptors keep contents alive in the process layer by holding
        // the inode number; it stays allocated until `release` is called.
        let _ = gone;
    }

    /// Frees an inode whose link count is zero and which no descriptor holds.
    pub fn release(&mut self, ino: Ino) {
        if let Ok(n) = self.get(ino) {
            if n.nlink == 0 {
                self.used -= INODE_BYTES
                    + match &n.kind {
                        Kind::File(d) => d.len() as u64,
                        Kind::Symlink(t) => t.len() as u64,
                        _ => 0,
                    };
                self.nodes[ino] = None;
                self.free.push(ino);
                self.live -= 1;
            }
        }
    }

    /// `unlinkat`: removes `dir/name`; `rmdir` selects directories (`AT_REMOVEDIR`).
    /// Returns the inode, which the caller releases when no descriptor holds it.
    pub fn unlink(&mut self, dir: Ino, name: &[u8], rmdir: bool) -> Result<Ino, Errno> {
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        if name == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        self.writable(dir)?;
        let ino = self.lookup(dir, name)?;
        let n = self.get(ino)?;
        match (&n.kind, rmdir) {
            (Kind::Dir { entries, .. }, true) => {
                if !entries.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                if ino == ROOT {
                    return Err(Errno::EBUSY);
                }
            }
            (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        let was_dir = n.is_dir();
        let d = self.get_mut(dir)?;
        if was_dir {
            d.nlink -= 1;
        }
        if let Kind::Dir { entries, .. } = &mut d.kind {
            entries.remove(name);
        }
        self.used -= name.len() as u64;
        self.drop_link(ino);
        self.touch(dir, None);
        Ok(ino)
    }

    fn is_ancestor(&self, a: Ino, mut b: Ino) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.get(b).map(|n| &n.kind) {
                Ok(Kind::Dir { parent, .. }) if *parent != b => b = *parent,
                _ => return false,
            }
        }
    }

    /// `renameat2` with no flags, or `RENAME_NOREPLACE` when `noreplace`.
    /// Returns an inode that lost its last name (to be released), if any.
    pub fn rename(&mut self, odir: Ino, oname: &[u8], ndir: Ino, nname: &[u8], noreplace: bool) -> Result<Option<Ino>, Errno> {
        Self::check_name(oname)?;
        Self::check_name(nname)?;
        self.writable(odir)?;
        self.writable(ndir)?;
        let src = self.lookup(odir, oname)?;
        self.entries(ndir)?;
        let src_dir = self.get(src)?.is_dir();
        if src_dir && self.is_ancestor(src, ndir) {
            return Err(Errno::EINVAL);
        }
        let mut replaced = None;
        if let Ok(dst) = self.lookup(ndir, nname) {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                return Ok(None);
            }
            let dn = self.get(dst)?;
            // Not collapsible into a guard: an empty directory replaced by a directory must
            // match this arm (and go on), not fall through to ENOTDIR.
            #[allow(clippy::collapsible_match)]
            match (&dn.kind, src_dir) {
                (Kind::Dir { entries, .. }, true) => {
                    if !entries.is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
                (_, true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
            replaced = Some(self.unlink(ndir, nname, src_dir)?);
        }
        // The entry's name changes: so does what it is charged.
        let grow = (nname.len() as u64).saturating_sub(oname.len() as u64);
        if self.used.saturating_add(grow) > self.limit_bytes {
            return Err(Errno::ENOSPC);
        }
        self.used = self.used + nname.len() as u64 - oname.len() as u64;
        if let Kind::Dir { entries, .. } = &mut self.get_mut(odir)?.kind {
            entries.remove(oname);
        }
        if let Kind::Dir { entries, .. } = &mut self.get_mut(ndir)?.kind {
            entries.insert(nname.to_vec(), src);
        }
        if src_dir {
            self.get_mut(odir)?.nlink -= 1;
            self.get_mut(ndir)?.nlink += 1;
            if let Kind::Dir { parent, .. } = &mut self.get_mut(src)?.kind {
                *parent = ndir;
            }
        }
        self.touch(odir, Some(ndir));
        Ok(replaced)
    }

    /// Resolves `path` relative to `cwd` (absolute paths start at the root).
    /// The last component's symlink is followed when `follow`.
    pub fn resolve(&self, cwd: Ino, path: &[u8], follow: bool) -> Result<Ino, Errno> {
        let mut budget = MAX_SYMLINKS;
        let (dir, last) = self.resolve_parent_inner(cwd, path, &mut budget)?;
        self.walk_last(dir, &last, follow, &mut budget)
    }

    /// Resolves all but the last component: returns the directory and the
    /// final name (`.` for paths ending in `/` or naming the root).
    pub fn resolve_parent(&self, cwd: Ino, path: &[u8]) -> Result<(Ino, Vec<u8>), Errno> {
        let mut budget = MAX_SYMLINKS;
        self.resolve_parent_inner(cwd, path, &mut budget)
    }

    fn walk_last(&self, dir: Ino, name: &[u8], follow: bool, budget: &mut u32) -> Result<Ino, Errno> {
        let ino = self.lookup(dir, name)?;
        if follow {
            if let Kind::Symlink(t) = &self.get(ino)?.kind {
                if *budget == 0 {
                    return Err(Errno::ELOOP);
                }
                *budget -= 1;
                let (d, l) = self.resolve_parent_inner(dir, &t.clone(), budget)?;
                return self.walk_last(d, &l, true, budget);
            }
        }
        Ok(ino)
    }

    fn resolve_parent_inner(&self, cwd: Ino, path: &[u8], budget: &mut u32) -> Result<(Ino, Vec<u8>), Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut dir = if path[0] == b'/' { ROOT } else { cwd };
        if !self.get(dir)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() {
            return Ok((dir, b".".to_vec()));
        }
        let trailing_slash = path.ends_with(b"/");
        for c in &comps[..comps.len() - 1] {
            if c.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            self.check_search(dir)?;
            let next = self.walk_last(dir, c, true, budget)?;
            if !self.get(next)?.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            dir = next;
        }
        let last = comps[comps.len() - 1];
        if last.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.check_search(dir)?;
        if trailing_slash {
            // "a/b/" names the directory b: resolve it fully, report it as ".".
            let d = self.walk_last(dir, last, true, budget)?;
            if !self.get(d)?.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            return Ok((d, b".".to_vec()));
        }
        Ok((dir, last.to_vec()))
    }

    /// Search permission on a directory for the sandbox user (uid 1000, who
    /// owns everything outside the read-only store, as in Nix's sandbox).
    fn check_search(&self, dir: Ino) -> Result<(), Errno> {
        self.access(dir, X_OK)
    }

    /// `faccessat` for the builder user: owner bits apply (the builder owns
    /// every file it can see, as Nix's sandbox maps the store to the build
    /// user too); `W_OK` on a read-only (root's) place is `EACCES`.
    pub fn access(&self, ino: Ino, want: u32) -> Result<(), Errno> {
        let n = self.get(ino)?;
        let owner = (n.perm >> 6) & 7;
        // Device nodes are writable by everyone whatever the directory (/dev/null is 0666).
        if want & W_OK != 0 && n.readonly && !matches!(n.kind, Kind::Dev(_)) {
            return Err(Errno::EACCES);
        }
        if owner & want != want {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `off`.
    pub fn read_at(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match &self.get(ino)?.kind {
            Kind::File(d) => {
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(d.len());
                let n = buf.len().min(d.len() - start);
                buf[..n].copy_from_slice(&d[start..start + n]);
                Ok(n)
            }
            Kind::Dev(Device::Null) => Ok(0),
            Kind::Dev(Device::Zero) => {
                buf.fill(0);
                Ok(buf.len())
            }
            Kind::Dir { .. } => Err(Errno::EISDIR),
            Kind::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    /// Writes `data` at `off`, growing the file (zero-filled) as needed.
    pub fn write_at(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<usize, Errno> {
        self.writable(ino).or_else(|e| if matches!(self.get(ino)?.kind, Kind::Dev(_)) { Ok(()) } else { Err(e) })?;
        let (used, limit) = (self.used, self.limit_bytes);
        match &mut self.get_mut(ino)?.kind {
            Kind::File(d) => {
                let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
                let grow = end.saturating_sub(d.len() as u64);
                if used.saturating_add(grow) > limit {
                    return Err(Errno::ENOSPC);
                }
                let end = usize::try_from(end).map_err(|_| Errno::EFBIG)?;
                if d.len() < end {
                    d.try_reserve(end - d.len()).map_err(|_| Errno::ENOSPC)?;
                    d.resize(end, 0);
                }
                let off = off as usize;
                d[off..end].copy_from_slice(data);
                self.used += grow;
                if !data.is_empty() {
                    self.touch(ino, None);
                }
                Ok(data.len())
            }
            Kind::Dev(_) => Ok(data.len()),
            Kind::Dir { .. } => Err(Errno::EISDIR),
            Kind::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    /// `ftruncate`: sets the file length.
    pub fn truncate(&mut self, ino: Ino, len: u64) -> Result<(), Errno> {
        self.writable(ino)?;
        let (used, limit) = (self.used, self.limit_bytes);
        match &mut self.get_mut(ino)?.kind {
            Kind::File(d) => {
                let old = d.len() as u64;
                if len > old && used.saturating_add(len - old) > limit {
                    return Err(Errno::ENOSPC);
                }
                let l = usize::try_from(len).map_err(|_| Errno::EFBIG)?;
                if l > d.len() {
                    d.try_reserve(l - d.len()).map_err(|_| Errno::ENOSPC)?;
                }
                d.resize(l, 0);
                self.used = self.used - old + len;
                self.touch(ino, None);
                Ok(())
            }
            Kind::Dir { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn chmod(&mut self, ino: Ino, perm: u32) -> Result<(), Errno> {
        self.owned(ino)?;
        self.get_mut(ino)?.perm = perm & 0o7777;
        Ok(())
    }

    /// `utimensat`: `t` in nanoseconds, or `None` for now. The clock moves past a later `t`.
    pub fn set_mtime(&mut self, ino: Ino, t: Option<i64>) -> Result<(), Errno> {
        self.owned(ino)?;
        let t = match t {
            Some(t) => {
                if self.ticking && t > self.clock {
                    self.clock = t;
                }
                t
            }
            None => self.now(),
        };
        self.get_mut(ino)?.mtime = t;
        Ok(())
    }

    pub fn readlink(&self, ino: Ino) -> Result<&[u8], Errno> {
        match &self.get(ino)?.kind {
            Kind::Symlink(t) => Ok(t),
            _ => Err(Errno::EINVAL),
        }
    }

    /// A directory's entries from position `pos` on, `.` and `..` first (positions as
    /// `getdents64` numbers them), borrowed: listing a large directory copies nothing.
    pub fn readdir_from(&self, dir: Ino, pos: usize) -> Result<impl Iterator<Item = (&[u8], Ino)> + '_, Errno> {
        match &self.get(dir)?.kind {
            Kind::Dir { entries, parent } => {
                let dots = [(&b"."[..], dir), (&b".."[..], *parent)];
                Ok(dots.into_iter().chain(entries.iter().map(|(k, v)| (&k[..], *v))).skip(pos))
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// A directory's entries in order, with `.` and `..` first (as `getdents64`).
    pub fn readdir(&self, dir: Ino) -> Result<Vec<(Vec<u8>, Ino)>, Errno> {
        match &self.get(dir)?.kind {
            Kind::Dir { entries, parent } => {
                let mut v = alloc::vec![(b".".to_vec(), dir), (b"..".to_vec(), *parent)];
                v.extend(entries.iter().map(|(k, v)| (k.clone(), *v)));
                Ok(v)
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// The absolute path of a directory (`getcwd`).
    pub fn path_of(&self, mut dir: Ino) -> Result<Vec<u8>, Errno> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while dir != ROOT {
            let parent = match &self.get(dir)?.kind {
                Kind::Dir { parent, .. } => *parent,
                _ => return Err(Errno::ENOTDIR),
            };
            let name = self.entries(parent)?.iter().find(|(_, &v)| v == dir).map(|(k, _)| k.clone()).ok_or(Errno::ENOENT)?;
            parts.push(name);
            dir = parent;
        }
        if parts.is_empty() {
            return Ok(b"/".to_vec());
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        Ok(out)
    }

    /// Makes every directory of an absolute path (like `mkdir -p`), returning the last.
    pub fn mkdir_p(&mut self, path: &[u8], perm: u32) -> Result<Ino, Errno> {
        let mut dir = ROOT;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            dir = match self.lookup(dir, c) {
                Ok(i) if self.get(i)?.is_dir() => i,
                Ok(_) => return Err(Errno::ENOTDIR),
                Err(_) => self.mkdir(dir, c, perm)?,
            };
        }
        Ok(dir)
    }

    /// A NAR sink unpacking into a new entry `name` of directory `dir`
    /// (e.g. a store path's base name under `/nix/store`).
    pub fn unpacker(&mut self, dir: Ino, name: &[u8]) -> NarUnpacker<'_> {
        NarUnpacker { fs: self, dir, name: name.to_vec(), file: None }
    }

    /// A NAR source for the tree at `ino`.
    pub fn tree(&self, ino: Ino) -> FsTree<'_> {
        FsTree { fs: self, root: ino }
    }
}

/// Unpacks a NAR into the file system (see [`Fs::unpacker`]). Modes follow
/// Nix's canonical store permissions: 0555 directories, 0444 / 0555 files.
pub struct NarUnpacker<'a> {
    fs: &'a mut Fs,
    dir: Ino,
    name: Vec<u8>,
    file: Option<Ino>,
}

impl NarUnpacker<'_> {
    /// The parent directory and name of a NAR path.
    fn place(&self, path: &[Vec<u8>]) -> Result<(Ino, Vec<u8>), Errno> {
        let mut dir = self.dir;
        let mut name = self.name.clone();
        for c in path {
            dir = self.fs.lookup(dir, &name)?;
            name = c.clone();
        }
        Ok((dir, name))
    }
}

impl NarSink for NarUnpacker<'_> {
    type Error = Errno;
    fn create_directory(&mut self, path: &[Vec<u8>]) -> Result<(), Errno> {
        self.file = None;
        let (d, n) = self.place(path)?;
        self.fs.mkdir(d, &n, 0o555).map(|_| ())
    }
    fn create_file(&mut self, path: &[Vec<u8>], executable: bool, size: u64) -> Result<(), Errno> {
        let (d, n) = self.place(path)?;
        if self.fs.used.saturating_add(size) > self.fs.limit_bytes {
            return Err(Errno::ENOSPC);
        }
        let f = self.fs.create(d, &n, if executable { 0o555 } else { 0o444 })?;
        if let Kind::File(v) = &mut self.fs.get_mut(f)?.kind {
            v.try_reserve_exact(usize::try_from(size).map_err(|_| Errno::EFBIG)?).map_err(|_| Errno::ENOSPC)?;
        }
        self.file = Some(f);
        Ok(())
    }
    fn write_contents(&mut self, data: &[u8]) -> Result<(), Errno> {
        let f = self.file.ok_or(Errno::EINVAL)?;
        let off = self.fs.get(f)?.size();
        self.fs.write_at(f, off, data).map(|_| ())
    }
    fn create_symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), Errno> {
        self.file = None;
        let (d, n) = self.place(path)?;
        self.fs.symlink(d, &n, target).map(|_| ())
    }
}

/// A subtree of the file system as a NAR source (see [`Fs::tree`]). Files are
/// executable in the NAR when the owner's execute bit is set (Nix's
/// `dumpPath`: `S_IXUSR`); device nodes cannot be serialised (`EINVAL`).
pub struct FsTree<'a> {
    fs: &'a Fs,
    root: Ino,
}

impl NarSource for FsTree<'_> {
    type Handle = Ino;
    type Error = Errno;
    fn root(&self) -> Ino {
        self.root
    }
    fn node(&self, h: &Ino) -> Result<Node, Errno> {
        let n = self.fs.get(*h)?;
        Ok(match &n.kind {
            Kind::Dir { .. } => Node::Directory,
            Kind::File(d) => Node::Regular { executable: n.perm & 0o100 != 0, size: d.len() as u64 },
            Kind::Symlink(t) => Node::Symlink(t.clone()),
            Kind::Dev(_) => return Err(Errno::EINVAL),
        })
    }
    fn entries(&self, h: &Ino) -> Result<Vec<(Vec<u8>, Ino)>, Errno> {
        Ok(self.fs.entries(*h)?.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }
    fn contents(&self, h: &Ino, f: &mut dyn FnMut(&[u8])) -> Result<(), Errno> {
        match &self.fs.get(*h)?.kind {
            Kind::File(d) => {
                for c in d.chunks(1 << 16) {
                    f(c);
                }
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::{parse, serialize, Limits};

    fn sandbox() -> Fs {
        Fs::nix_sandbox(1 << 20, 1000).unwrap()
    }

    #[test]
    fn nix_layout() {
        let fs = sandbox();
        let p = fs.resolve(ROOT, b"/etc/passwd", true).unwrap();
        let mut buf = [0u8; 512];
        let n = fs.read_at(p, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], ETC_PASSWD);
        let t = fs.resolve(ROOT, b"/tmp", true).unwrap();
        assert_eq!(fs.get(t).unwrap().mode(), S_IFDIR | 0o1777);
        let z = fs.resolve(ROOT, b"/dev/zero", true).unwrap();
        let mut b = [7u8; 4];
        assert_eq!(fs.read_at(z, 0, &mut b), Ok(4));
        assert_eq!(b, [0; 4]);
        let nul = fs.resolve(ROOT, b"/dev/null", true).unwrap();
        assert_eq!(fs.read_at(nul, 0, &mut b), Ok(0));
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        assert_eq!(fs.path_of(b).unwrap(), b"/build");
        let mut fs = fs;
        let etc = fs.resolve(ROOT, b"/etc", true).unwrap();
        assert_eq!(fs.create(etc, b"x", 0o644), Err(Errno::EACCES));
        assert_eq!(fs.write_at(p, 0, b"x"), Err(Errno::EACCES));
    }

    #[test]
    fn dotdot_cannot_escape() {
        let mut fs = sandbox();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        assert_eq!(fs.resolve(b, b"../../../../..", true), Ok(ROOT));
        assert_eq!(fs.resolve(b, b"../../../etc/../../build", true), Ok(b));
        fs.symlink(b, b"up", b"../../../../../../..").unwrap();
        assert_eq!(fs.resolve(b, b"up", true), Ok(ROOT));
        assert_eq!(fs.resolve(b, b"up/up/../tmp", true), Err(Errno::ENOENT));
        assert_eq!(fs.resolve(b, b"up/tmp", true), fs.resolve(ROOT, b"/tmp", true));
    }

    #[test]
    fn symlink_loops_end_in_eloop() {
        let mut fs = sandbox();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        fs.symlink(b, b"a", b"b").unwrap();
        fs.symlink(b, b"b", b"a").unwrap();
        fs.symlink(b, b"self", b"self/x").unwrap();
        assert_eq!(fs.resolve(b, b"a", true), Err(Errno::ELOOP));
        assert_eq!(fs.resolve(b, b"self", true), Err(Errno::ELOOP));
        assert_eq!(fs.resolve(b, b"a/x", true), Err(Errno::ELOOP));
        // Not followed: the link itself.
        let a = fs.resolve(b, b"a", false).unwrap();
        assert_eq!(fs.readlink(a), Ok(&b"b"[..]));
        // A chain of exactly 40 resolves; 41 does not (Linux MAXSYMLINKS).
        fs.create(b, b"l0", 0o644).unwrap();
        for i in 1..=41u32 {
            let name = alloc::format!("l{i}");
            let target = alloc::format!("l{}", i - 1);
            fs.symlink(b, name.as_bytes(), target.as_bytes()).unwrap();
        }
        assert!(fs.resolve(b, b"l40", true).is_ok());
        assert_eq!(fs.resolve(b, b"l41", true), Err(Errno::ELOOP));
    }

    #[test]
    fn files_links_rename_unlink() {
        let mut fs = sandbox();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let f = fs.create(b, b"f", 0o644).unwrap();
        fs.write_at(f, 3, b"abc").unwrap();
        let mut buf = [9u8; 10];
        assert_eq!(fs.read_at(f, 0, &mut buf), Ok(6));
        assert_eq!(&buf[..6], b"\0\0\0abc");
        fs.link(f, b, b"g").unwrap();
        assert_eq!(fs.get(f).unwrap().nlink, 2);
        let d = fs.mkdir(b, b"d", 0o755).unwrap();
        assert_eq!(fs.rename(b, b"g", d, b"h", false), Ok(None));
        assert_eq!(fs.resolve(b, b"d/h", true), Ok(f));
        assert_eq!(fs.rename(b, b"d", d, b"x", false), Err(Errno::EINVAL));
        assert_eq!(fs.unlink(b, b"d", true), Err(Errno::ENOTEMPTY));
        assert_eq!(fs.unlink(b, b"d", false), Err(Errno::EISDIR));
        assert_eq!(fs.unlink(b, b"f", false), Ok(f));
        fs.release(f); // still linked as d/h: stays
        assert!(fs.get(f).is_ok());
        let before = fs.used_bytes();
        assert_eq!(fs.unlink(d, b"h", false), Ok(f));
        fs.release(f);
        assert_eq!(fs.used_bytes(), before - 6 - INODE_BYTES - 1, "contents, inode and name");
        assert_eq!(fs.unlink(b, b"d", true), Ok(d));
        assert_eq!(fs.resolve(b, b"f/", true), Err(Errno::ENOENT));
        let g = fs.create(b, b"g", 0o644).unwrap();
        let _ = g;
        assert_eq!(fs.resolve(b, b"g/", true), Err(Errno::ENOTDIR));
        assert_eq!(fs.resolve(b, b"g/x", true), Err(Errno::ENOTDIR));
        assert_eq!(fs.create(b, b"g", 0o644), Err(Errno::EEXIST));
        assert_eq!(fs.create(b, &[b'n'; 256], 0o644), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn permissions() {
        let mut fs = sandbox();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let d = fs.mkdir(b, b"d", 0o755).unwrap();
        fs.create(d, b"f", 0o600).unwrap();
        fs.chmod(d, 0o644).unwrap();
        assert_eq!(fs.resolve(b, b"d/f", true), Err(Errno::EACCES));
        fs.chmod(d, 0o755).unwrap();
        let f = fs.resolve(b, b"d/f", true).unwrap();
        assert_eq!(fs.access(f, X_OK), Err(Errno::EACCES));
        fs.chmod(f, 0o700).unwrap();
        assert_eq!(fs.access(f, X_OK | R_OK | W_OK), Ok(()));
    }

    #[test]
    fn metadata_counts_against_the_byte_limit() {
        // Found by the abuse suite's inode hog: 100 000 files with 255-byte names held ~40 MiB
        // of the agent's memory outside any limit. Inodes and names are charged now.
        let mut fs = Fs::nix_sandbox(1 << 20, 1 << 20).unwrap();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let start = fs.used_bytes();
        let name = [b'n'; 255];
        let mut n = 0u64;
        loop {
            let mut nm = name;
            let mut v = n;
            for c in nm[..8].iter_mut() {
                *c = b'a' + (v % 26) as u8;
                v /= 26;
            }
            match fs.create(b, &nm, 0o644) {
                Ok(_) => n += 1,
                Err(e) => {
                    assert_eq!(e, Errno::ENOSPC);
                    break;
                }
            }
        }
        assert_eq!(n, ((1 << 20) - start) / (INODE_BYTES + 255));
        // Renames and links are charged by name; removing gives it all back.
        let f = fs.create(ROOT, b"x", 0o644);
        assert_eq!(f, Err(Errno::ENOSPC));
        let mut fs = Fs::nix_sandbox(1 << 20, 1000).unwrap();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let start = fs.used_bytes();
        let f = fs.create(b, b"a", 0o644).unwrap();
        fs.link(f, b, b"bb").unwrap();
        fs.rename(b, b"bb", b, b"cccc", false).unwrap();
        assert_eq!(fs.used_bytes(), start + INODE_BYTES + 1 + 4);
        fs.unlink(b, b"a", false).unwrap();
        fs.unlink(b, b"cccc", false).unwrap();
        fs.release(f);
        assert_eq!(fs.used_bytes(), start);
        let names: Vec<Vec<u8>> = fs.readdir_from(ROOT, 1).unwrap().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names[..2], [b"..".to_vec(), b"build".to_vec()]);
    }

    #[test]
    fn size_limits() {
        let mut fs = Fs::nix_sandbox(8000, 20).unwrap();
        let b = fs.resolve(ROOT, b"/build", true).unwrap();
        let f = fs.create(b, b"f", 0o644).unwrap();
        assert_eq!(fs.write_at(f, 0, &[1; 8000]), Err(Errno::ENOSPC));
        assert_eq!(fs.write_at(f, u64::MAX, &[1]), Err(Errno::EFBIG));
        assert_eq!(fs.write_at(f, 1 << 40, &[1]), Err(Errno::ENOSPC));
        let mut n = 0;
        while fs.mkdir(b, alloc::format!("d{n}").as_bytes(), 0o755).is_ok() {
            n += 1;
        }
        assert!(n < 20);
    }

    fn sample_nar() -> Vec<u8> {
        // Build a tree in one Fs, serialise it, and use those bytes.
        let mut fs = Fs::new(1 << 20, 100);
        let d = fs.mkdir(ROOT, b"out", 0o755).unwrap();
        let bin = fs.mkdir(d, b"bin", 0o755).unwrap();
        let x = fs.create(bin, b"hello", 0o755).unwrap();
        fs.write_at(x, 0, b"#!/bin/sh\necho hi\n").unwrap();
        let r = fs.create(d, b"README", 0o644).unwrap();
        fs.write_at(r, 0, b"read me").unwrap();
        fs.symlink(d, b"link", b"bin/hello").unwrap();
        let mut out = Vec::new();
        serialize(&fs.tree(d), &mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    #[test]
    fn nar_round_trip_through_the_store() {
        let nar = sample_nar();
        let mut fs = sandbox();
        let store = fs.resolve(ROOT, b"/nix/store", true).unwrap();
        let mut r: &[u8] = &nar;
        parse(&mut r, &mut fs.unpacker(store, b"aaaa-x"), Limits::default()).unwrap();
        let p = fs.resolve(ROOT, b"/nix/store/aaaa-x", true).unwrap();
        fs.set_readonly(p);
        let h = fs.resolve(ROOT, b"/nix/store/aaaa-x/link", true).unwrap();
        assert_eq!(fs.get(h).unwrap().perm, 0o555);
        assert_eq!(fs.write_at(h, 0, b"x"), Err(Errno::EACCES));
        assert_eq!(fs.chmod(h, 0o777), Err(Errno::EPERM));
        let mut again = Vec::new();
        serialize(&fs.tree(p), &mut |b| again.extend_from_slice(b)).unwrap();
        assert_eq!(again, nar);
        // A second unpack of the same name is refused, not merged.
        let mut r: &[u8] = &nar;
        assert!(parse(&mut r, &mut fs.unpacker(store, b"aaaa-x"), Limits::default()).is_err());
    }
}
