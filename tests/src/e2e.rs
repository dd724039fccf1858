//! The end-to-end corpus (`tests/e2e/corpus.nix`) and its reference: real Nix 2.8 building the
//! same `.drv` with `--option sandbox true`. Nothing here types in an expected value: every
//! reference output hash is produced by Nix at test time.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A directory `bin/busybox` (Debian's static busybox) that the corpus puts in the store with
/// `builtins.path`. Its store path depends only on its contents.
pub fn busybox_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::root().join("target/e2e-busybox");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let dst = dir.join("bin/busybox");
        if !dst.exists() {
            std::fs::copy("/bin/busybox", &dst).expect("copying /bin/busybox (apt: busybox-static)");
        }
        dir
    })
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// `nix-instantiate` one corpus attribute (`ok.NAME` or `fail.NAME`); returns the `.drv` path.
pub fn instantiate(attr: &str) -> PathBuf {
    let corpus = crate::root().join("tests/e2e/corpus.nix");
    let dir = busybox_dir();
    PathBuf::from(
        run(Command::new("nix-instantiate")
            .arg(&corpus)
            .args(["--argstr", "busyboxDir"])
            .arg(dir)
            .args(["-A", attr]))
        .unwrap(),
    )
}

/// `nix-instantiate` the deep chain (`tests/e2e/deep.nix`): `depth` derivations, each an input
/// of the next; returns the top one's `.drv` path.
pub fn instantiate_chain(depth: usize) -> PathBuf {
    let file = crate::root().join("tests/e2e/deep.nix");
    PathBuf::from(
        run(Command::new("nix-instantiate")
            .arg(&file)
            .args(["--argstr", "busyboxDir"])
            .arg(busybox_dir())
            .args(["--arg", "depth", &depth.to_string()]))
        .unwrap(),
    )
}

/// The references Nix registered for a store path (`nix-store -q --references`), sorted.
pub fn nix_references(path: &str) -> Vec<String> {
    let mut refs: Vec<String> = run(Command::new("nix-store").args(["-q", "--references", path])).unwrap().lines().map(String::from).collect();
    refs.sort();
    refs
}

/// Names of the corpus cases under `ok` or `fail`.
pub fn cases(group: &str) -> Vec<String> {
    let corpus = crate::root().join("tests/e2e/corpus.nix");
    let json = run(Command::new("nix-instantiate")
        .args(["--eval", "--json", "--strict", "-E"])
        .arg(format!(
            "builtins.attrNames (import {} {{ busyboxDir = \"{}\"; }}).{group}",
            corpus.display(),
            busybox_dir().display()
        )))
    .unwrap();
    json.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The reference: realise `drv` with real Nix in its sandbox. Returns `(output name, path, NAR
/// sha256 as printed by nix-store -q --hash)`, or Nix's error text.
pub fn realise_natively(drv: &Path) -> Result<Vec<(String, PathBuf, String)>, String> {
    run(Command::new("nix-store")
        .args(["--realise", "--option", "sandbox", "true", "--option", "substituters", ""])
        .arg(drv))?;
    let mut outs = Vec::new();
    let json = run(Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "show-derivation"])
        .arg(drv))?;
    let json: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let drv_json = json.as_object().and_then(|m| m.values().next()).ok_or("empty show-derivation")?;
    for (name, out) in drv_json["outputs"].as_object().ok_or("no outputs")? {
        let path = out["path"].as_str().ok_or("output without path")?.to_string();
        let hash = run(Command::new("nix-store").args(["-q", "--hash"]).arg(&path))?;
        outs.push((name.clone(), PathBuf::from(path), hash));
    }
    Ok(outs)
}
