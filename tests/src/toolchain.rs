//! The Debian bookworm toolchain (`tests/toolchain/`): its packages fetched and checked against
//! their pins, its derivations instantiated, built by real Nix and by `loader build`, and the
//! two compared. Every expected hash comes from Nix at test time.
use loader::build::{BuildError, BuildReport};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// `tests/toolchain/fetch.sh` into `cache` with the given pin files (None: the repository's).
pub fn fetch(cache: &Path, debs: Option<&Path>, srcs: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(crate::root().join("tests/toolchain/fetch.sh"));
    cmd.arg(cache);
    if let Some(p) = debs {
        cmd.env("TOOLCHAIN_DEBS", p);
    }
    if let Some(p) = srcs {
        cmd.env("TOOLCHAIN_SRCS", p);
    }
    cmd.output().expect("running tests/toolchain/fetch.sh")
}

/// `target/toolchain`, holding exactly the pinned packages and sources (fetched once per test
/// process; a no-op when they are there and match their pins).
pub fn cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::root().join("target/toolchain");
        let out = fetch(&dir, None, None);
        assert!(out.status.success(), "fetch.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// `nix-instantiate FILE [-A ATTR]` (FILE relative to the repository) with the fetched cache;
/// returns the `.drv` path.
pub fn instantiate(file: &str, attr: Option<&str>) -> PathBuf {
    let mut cmd = Command::new("nix-instantiate");
    cmd.arg(crate::root().join(file)).args(["--argstr", "cache"]).arg(cache());
    if let Some(a) = attr {
        cmd.args(["-A", a]);
    }
    PathBuf::from(run(&mut cmd).unwrap())
}

/// The names of `tests/toolchain/cases.nix`'s derivations.
pub fn cases() -> Vec<String> {
    let json = run(Command::new("nix-instantiate")
        .args(["--eval", "--json", "--strict", "-E"])
        .arg(format!(
            "builtins.attrNames (import {} {{ cache = \"{}\"; }})",
            crate::root().join("tests/toolchain/cases.nix").display(),
            cache().display()
        )))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// A VM for toolchain builds: TCG here (docs/sandbox.md: this host's KVM cannot run builders),
/// 2 GiB (the 126 MiB toolchain is an input; the file system may use half the heap), and
/// `timeout` for the whole run.
pub fn vm_config(timeout: Duration) -> loader::vm::VmConfig {
    let mut c = loader::vm::VmConfig::new(crate::agent_bin());
    c.accel = loader::vm::Accel::Tcg;
    c.memory_mib = 2048;
    c.timeout = timeout;
    c
}

/// `loader build` of `drv` into `dir` (emptied first); the builder's log goes to stderr when
/// the build fails, with the agent's serial log.
pub fn build_in_agent(drv: &Path, dir: &Path, timeout: Duration) -> Result<BuildReport, BuildError> {
    let _ = std::fs::remove_dir_all(dir);
    let mut config = vm_config(timeout);
    let work = dir.with_extension("vm");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    config.work_dir = Some(work.clone());
    let mut log = Vec::new();
    let r = loader::build::build(&config, drv, dir, |_, b| log.extend_from_slice(b), |_| {});
    if r.is_err() {
        let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(20_000)..]).into_owned();
        eprintln!("build log (last 20 kB):\n{}", tail(&log));
        eprintln!("agent log (last 20 kB):\n{}", tail(loader::vm::work_dir_log(&work).as_bytes()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    r
}

/// The agent's build equals Nix's: the same outputs, store paths, NAR bytes (SHA-256 over the
/// NAR file the loader wrote) and references; and the evidence verifies (unattested: no TEE).
pub fn assert_same_as_nix(case: &str, report: &BuildReport, native: &[(String, PathBuf, String)]) {
    use sha2::Digest;
    assert_eq!(report.outputs.len(), native.len(), "{case}: outputs");
    for (name, path, hash) in native {
        let ours = report.outputs.iter().find(|o| o.name == *name).unwrap_or_else(|| panic!("{case}: no output {name}"));
        assert_eq!(ours.path, path.to_string_lossy(), "{case}.{name}: store path");
        let nar = std::fs::read(&ours.nar).unwrap();
        assert_eq!(<[u8; 32]>::from(sha2::Sha256::digest(&nar)), ours.nar_sha256, "{case}.{name}: NAR file");
        assert_eq!(
            format!("sha256:{}", agent::nix::base32::encode(&ours.nar_sha256)),
            *hash,
            "{case}.{name}: NAR hash differs from Nix's"
        );
        let dumped = Command::new("nix-store").arg("--dump").arg(path).output().unwrap();
        assert!(dumped.status.success());
        assert!(dumped.stdout == nar, "{case}.{name}: NAR bytes differ from nix-store --dump");
        let mut refs: Vec<String> = run(Command::new("nix-store").args(["-q", "--references"]).arg(path))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        refs.sort();
        assert_eq!(ours.references, refs, "{case}.{name}: references");
        let v = Command::new(crate::bin("measurement-tool"))
            .args(["verify"])
            .arg(&report.evidence)
            .arg("--nar")
            .arg(&ours.nar)
            .arg("--allow-unattested")
            .output()
            .unwrap();
        assert!(v.status.success(), "{case}.{name}: verify: {}", String::from_utf8_lossy(&v.stderr));
    }
}
