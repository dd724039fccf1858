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

pub mod e2e;

/// The deliberately faulting test image built by `make agent-fault-test`.
pub fn fault_test_bin() -> PathBuf {
    let p = root().join("target/agent-fault-test.bin");
    assert!(p.exists(), "{} is missing: run `make test` (it builds agent-fault-test)", p.display());
    p
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
