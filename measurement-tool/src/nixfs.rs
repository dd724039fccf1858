//! The host file system as a [`NarSource`], so `measurement-tool nix nar PATH` serialises with
//! the agent's own code (`agent::nix::nar`), exactly as `nix-store --dump` does
//! (`archive.cc: dump`): regular files, executables (owner execute bit), symlinks, directories.
use agent::nix::nar::{Node, NarSource};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct HostTree(pub PathBuf);

impl NarSource for HostTree {
    type Handle = PathBuf;
    type Error = std::io::Error;

    fn root(&self) -> PathBuf {
        self.0.clone()
    }

    fn node(&self, h: &PathBuf) -> std::io::Result<Node> {
        let m = std::fs::symlink_metadata(h)?;
        let t = m.file_type();
        Ok(if t.is_symlink() {
            Node::Symlink(std::fs::read_link(h)?.as_os_str().as_bytes().to_vec())
        } else if t.is_dir() {
            Node::Directory
        } else if t.is_file() {
            Node::Regular { executable: m.permissions().mode() & 0o100 != 0, size: m.len() }
        } else {
            return Err(std::io::Error::other(format!("{}: not a regular file, directory or symlink", h.display())));
        })
    }

    fn entries(&self, h: &PathBuf) -> std::io::Result<Vec<(Vec<u8>, PathBuf)>> {
        std::fs::read_dir(h)?
            .map(|e| e.map(|e| (e.file_name().as_bytes().to_vec(), e.path())))
            .collect()
    }

    fn contents(&self, h: &PathBuf, f: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        let mut file = std::fs::File::open(h)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            f(&buf[..n]);
        }
    }
}

/// Streams the NAR of `path` to `out`.
pub fn dump(path: &Path, out: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
    agent::nix::nar::serialize(&HostTree(path.to_path_buf()), out)
}
