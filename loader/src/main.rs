use anyhow::Context;
use clap::Parser;
use loader::vm::{Accel, VmConfig};
use std::path::PathBuf;

/// Start attested Nix builds in a fresh confidential VM.
#[derive(Parser)]
#[command(name = "loader", version)]
enum Cli {
    /// Boot the agent, exchange Hello/Ping/Pong, shut it down, print timings.
    Ping(VmArgs),
}

#[derive(clap::Args)]
struct VmArgs {
    /// The agent image.
    #[arg(long, default_value = "target/agent.bin")]
    agent: PathBuf,
    /// QEMU accelerator (auto: KVM when /dev/kvm is usable, else TCG).
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
}

impl VmArgs {
    fn config(&self) -> VmConfig {
        let mut c = VmConfig::new(&self.agent);
        c.accel = self.accel;
        c.memory_mib = self.memory;
        c
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Ping(args) => {
            let r = loader::ping(&args.config()).with_context(|| format!("pinging the agent {}", args.agent.display()))?;
            let kind = match r.attestation {
                0 => "none (no TEE)",
                1 => "sev-snp",
                2 => "tdx",
                _ => "unknown",
            };
            println!("agent {} answered Ping ({:?}, attestation: {kind})", r.agent_version, r.accel);
            println!("boot to ready: {:.1} ms", r.timings.boot_to_ready.as_secs_f64() * 1e3);
            println!("total:         {:.1} ms", r.timings.total.as_secs_f64() * 1e3);
            Ok(())
        }
    }
}
