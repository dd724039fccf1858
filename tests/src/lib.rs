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
