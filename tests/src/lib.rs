//! Shared helpers for the integration tests.
use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The agent image built by `make agent` (override with `AGENT_BIN`).
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/agent.bin"));
    assert!(p.exists(), "{} is missing: run `make agent` (or `make test`) first", p.display());
    p
}

/// The development image built by `make agent-dev` (override with `AGENT_DEV_BIN`): the agent
/// plus Ping, bulk transfers and Exec, which the attested image does not serve (issue 15,
/// finding 10). The channel, sandbox and boot tests and the benchmarks use it.
pub fn dev_agent_bin() -> PathBuf {
    let p = std::env::var_os("AGENT_DEV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/agent-dev.bin"));
    assert!(p.exists(), "{} is missing: run `make agent-dev` (or `make test`) first", p.display());
    p
}

pub mod e2e;
pub mod exits;
pub mod remote;
pub mod sandbox;
pub mod toolchain;

/// The deliberately faulting test image built by `make agent-fault-test`.
pub fn fault_test_bin() -> PathBuf {
    let p = root().join("target/agent-fault-test.bin");
    assert!(p.exists(), "{} is missing: run `make test` (it builds agent-fault-test)", p.display());
    p
}

/// The test image that overflows its boot stack, built by `make agent-overflow-test`.
pub fn overflow_test_bin() -> PathBuf {
    let p = root().join("target/agent-overflow-test.bin");
    assert!(p.exists(), "{} is missing: run `make test` (it builds agent-overflow-test)", p.display());
    p
}

/// The test image that takes system calls through SYSCALL (the TD's path), built by
/// `make agent-syscall-test`, and its ELF (for symbols).
pub fn syscall_test_bin() -> (PathBuf, PathBuf) {
    let p = root().join("target/agent-syscall-test.bin");
    assert!(p.exists(), "{} is missing: run `make test` (it builds agent-syscall-test)", p.display());
    (p, root().join("target/syscall-test/x86_64-unknown-none/firmware/agent"))
}

/// [`vm_config`] with the development image: for Ping, bulk transfers and Exec.
pub fn dev_vm_config(accel: loader::vm::Accel) -> loader::vm::VmConfig {
    let mut c = vm_config(accel);
    c.agent = dev_agent_bin();
    c
}

/// A VM configuration for tests: the release image, small memory, a short timeout.
pub fn vm_config(accel: loader::vm::Accel) -> loader::vm::VmConfig {
    let mut c = loader::vm::VmConfig::new(agent_bin());
    c.accel = accel;
    c.memory_mib = 512;
    c.response_bytes = 1 << 30;
    c.timeout = std::time::Duration::from_secs(120);
    c
}

/// A workspace binary (`measurement-tool`, `loader`), built (once per test process, a no-op
/// when up to date) so a test never runs a stale one.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe_dir = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    // Test executables live in <profile>/deps, binaries in <profile>.
    let dir = if exe_dir.ends_with("deps") { exe_dir.parent().unwrap().to_path_buf() } else { exe_dir };
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let profile = if dir.ends_with("release") { vec!["--release"] } else { vec![] };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "--bin", name])
            .args(profile)
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "building {name}");
        built.push(name.to_string());
    }
    dir.join(name)
}

/// A time (Unix seconds) inside a dcap-qvl collateral's validity window: the middle of where
/// its TCB info and QE identity are both valid (as dcap-qvl's own tests pick it).
pub fn collateral_midpoint(collateral: &[u8]) -> u64 {
    let root: serde_json::Value = serde_json::from_slice(collateral).unwrap();
    let window = |field: &str| {
        let v: serde_json::Value = serde_json::from_str(root[field].as_str().unwrap()).unwrap();
        let parse = |k: &str| {
            let out = std::process::Command::new("date").args(["-d", v[k].as_str().unwrap(), "+%s"]).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().parse::<u64>().unwrap()
        };
        (parse("issueDate"), parse("nextUpdate"))
    };
    let (a, b) = window("tcb_info");
    let (c, d) = window("qe_identity");
    let (lo, hi) = (a.max(c), b.min(d));
    lo + (hi - lo) / 2
}
