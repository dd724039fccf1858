//! Reading a build request out of the local Nix store.
//!
//! The loader is untrusted, so none of this is checked by anyone but the agent: the agent
//! recomputes the `.drv` path and every output path from the ATerms sent here, and hashes every
//! input NAR itself. This module only gathers bytes (with the `nix` command-line tools, which a
//! host that has a Nix store has) and, on the way back, imports finished outputs.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors reading from or writing to the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("unexpected output from {cmd}: {what}")]
    Parse { cmd: String, what: String },
    #[error("input {0} is not in the local store; realise it first (nix-store --realise)")]
    MissingInput(String),
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, StoreError> {
    let name = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| StoreError::Spawn { cmd: name.clone(), source })?;
    if !out.status.success() {
        return Err(StoreError::Failed {
            cmd: name,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn lines(bytes: Vec<u8>) -> Vec<String> {
    String::from_utf8_lossy(&bytes).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// A Nix store the loader reads from and imports into: the default one, or the one a
/// `--store URL` names (`nix-store --serve --write --store URL`, as Nix's `remote-store=` passes
/// it). Store paths are read from the file system under the store's root: `/` for the default
/// store, the directory of a chroot store (`/DIR` or `local?root=/DIR`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    pub url: Option<String>,
}

impl Store {
    pub fn new(url: Option<String>) -> Store {
        Store { url }
    }

    /// Where the store's files are on this machine.
    pub fn root(&self) -> PathBuf {
        let Some(url) = &self.url else { return PathBuf::from("/") };
        if url.starts_with('/') {
            return PathBuf::from(url.split('?').next().unwrap_or(url));
        }
        if let Some((scheme, query)) = url.split_once('?') {
            if scheme == "local" || scheme == "local://" {
                if let Some(root) = query.split('&').find_map(|kv| kv.strip_prefix("root=")) {
                    return PathBuf::from(root);
                }
            }
        }
        PathBuf::from("/")
    }

    /// The file a store path is on this machine.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.root().join(store_path.trim_start_matches('/'))
    }

    /// `nix-store [--store URL]`.
    pub fn nix_store(&self) -> Command {
        let mut c = Command::new("nix-store");
        if let Some(url) = &self.url {
            c.arg("--store").arg(url);
        }
        c
    }

    /// The closure of `roots` (`nix-store --query --requisites`).
    pub fn requisites<'a>(&self, roots: impl IntoIterator<Item = &'a String>) -> Result<Vec<String>, StoreError> {
        let roots: Vec<&String> = roots.into_iter().collect();
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        Ok(lines(run(self.nix_store().arg("--query").arg("--requisites").args(roots))?))
    }

    /// The NAR of a store path, read from the file system under the store's root (byte for byte
    /// `nix-store --dump`).
    pub fn dump(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        let mut nar = Vec::new();
        measurement_tool::nixfs::dump(&self.real_path(path), &mut |b| nar.extend_from_slice(b))
            .map_err(|source| StoreError::Io { path: path.to_string(), source })?;
        Ok(nar)
    }
}

/// Everything the agent needs to build one derivation, as raw bytes from the local store.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    /// The derivation's store path and ATerm bytes.
    pub drv_path: String,
    pub drv: Vec<u8>,
    /// Every derivation the build depends on, recursively (path → ATerm bytes): the agent needs
    /// them to recompute output paths (`hashDerivationModulo`).
    pub input_drvs: BTreeMap<String, Vec<u8>>,
    /// The store paths the builder sees: the closure of the input sources and of the used
    /// outputs of the input derivations, in topological-ish (sorted) order.
    pub input_paths: Vec<String>,
    /// The derivation is a resolved one (docs/build.md, "Resolved derivations"): its input
    /// derivations were replaced by their outputs' closure, as a Nix 2.8 build hook sends it.
    /// The `.drv` path names the original derivation; the agent cannot recompute it, and the
    /// statement says so.
    pub resolved: bool,
}

/// Gathers the build inputs of `drv_path` from the local store: the `.drv` files are read and
/// parsed here (with the agent's own ATerm parser), so the only Nix command run is one
/// `nix-store --query --requisites` for the input closure.
pub fn gather(drv_path: &Path) -> Result<BuildInputs, StoreError> {
    gather_from(&Store::default(), drv_path)
}

/// [`gather`] from the given store.
pub fn gather_from(store: &Store, drv_path: &Path) -> Result<BuildInputs, StoreError> {
    use agent::nix::derivation;
    let drv_path = drv_path.to_string_lossy().to_string();
    let read = |p: &str| std::fs::read(store.real_path(p)).map_err(|source| StoreError::Io { path: p.to_string(), source });
    let parse = |p: &str, bytes: &[u8]| {
        derivation::parse(bytes).map_err(|e| StoreError::Parse { cmd: format!("reading {p}"), what: format!("{e:?}") })
    };
    let drv = read(&drv_path)?;
    let me = parse(&drv_path, &drv)?;
    // Every derivation the build depends on, recursively.
    let mut input_drvs = BTreeMap::new();
    let mut todo: Vec<String> = me.input_drvs.keys().cloned().collect();
    while let Some(p) = todo.pop() {
        if input_drvs.contains_key(&p) {
            continue;
        }
        let bytes = read(&p)?;
        todo.extend(parse(&p, &bytes)?.input_drvs.into_keys());
        input_drvs.insert(p, bytes);
    }
    let mut roots: BTreeSet<String> = me.input_srcs.clone();
    for (dep, outs) in &me.input_drvs {
        let d = parse(dep, &input_drvs[dep])?;
        for o in outs {
            let out = d.outputs.get(o).ok_or_else(|| StoreError::Parse { cmd: format!("reading {dep}"), what: format!("no output {o}") })?;
            roots.insert(out.path.clone());
        }
    }
    for root in &roots {
        if !store.real_path(root).exists() {
            return Err(StoreError::MissingInput(root.clone()));
        }
    }
    let input_paths = store.requisites(&roots)?;
    Ok(BuildInputs { drv_path, drv, input_drvs, input_paths, resolved: false })
}

/// The NAR serialisation of a store path, byte for byte what `nix-store --dump` gives (made
/// here with the agent's serialiser over the file system, without starting Nix).
pub fn dump(path: &str) -> Result<Vec<u8>, StoreError> {
    let mut nar = Vec::new();
    measurement_tool::nixfs::dump(Path::new(path), &mut |b| nar.extend_from_slice(b))
        .map_err(|source| StoreError::Io { path: path.to_string(), source })?;
    Ok(nar)
}

/// Instantiates a `.nix` file; returns the `.drv` path.
pub fn instantiate(file: &Path) -> Result<PathBuf, StoreError> {
    let out = lines(run(Command::new("nix-instantiate").arg(file))?);
    match out.as_slice() {
        [one] => Ok(PathBuf::from(one)),
        _ => Err(StoreError::Parse { cmd: "nix-instantiate".into(), what: format!("expected one .drv, got {out:?}") }),
    }
}

/// One output to import: its store path, NAR bytes and references (store paths).
pub struct Import<'a> {
    pub path: &'a str,
    pub nar: &'a [u8],
    pub references: &'a [String],
    pub deriver: &'a str,
}

/// Adds finished outputs to the local store with `nix-store --import`.
///
/// Mechanism: the stream `nix-store --export` writes (Nix `exportPath`): per path the integer 1,
/// the NAR, the magic `NIXE`, the path, its references, its deriver and 0 (no signature); then 0.
/// Nix checks the NAR against nothing but itself here, which is why the caller must first have
/// verified the evidence: import only outputs whose NAR hashes the statement attests.
pub fn import(outputs: &[Import<'_>]) -> Result<(), StoreError> {
    import_into(&Store::default(), outputs)
}

/// [`import`] into the given store.
pub fn import_into(store: &Store, outputs: &[Import<'_>]) -> Result<(), StoreError> {
    fn int(buf: &mut Vec<u8>, n: u64) {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    fn string(buf: &mut Vec<u8>, s: &[u8]) {
        int(buf, s.len() as u64);
        buf.extend_from_slice(s);
        buf.resize(buf.len() + (8 - s.len() % 8) % 8, 0);
    }
    let mut stream = Vec::new();
    for o in outputs {
        int(&mut stream, 1);
        stream.extend_from_slice(o.nar);
        int(&mut stream, 0x4558_494e); // "NIXE"
        string(&mut stream, o.path.as_bytes());
        int(&mut stream, o.references.len() as u64);
        for r in o.references {
            string(&mut stream, r.as_bytes());
        }
        string(&mut stream, o.deriver.as_bytes());
        int(&mut stream, 0);
    }
    int(&mut stream, 0);
    let cmd = "nix-store --import".to_string();
    let mut child = store
        .nix_store()
        .arg("--import")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StoreError::Spawn { cmd: cmd.clone(), source })?;
    child.stdin.take().expect("piped").write_all(&stream).map_err(|source| StoreError::Spawn { cmd: cmd.clone(), source })?;
    let out = child.wait_with_output().map_err(|source| StoreError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        return Err(StoreError::Failed { cmd, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}
