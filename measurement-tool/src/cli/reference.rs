//! `measurement-tool reference IMAGE --out FILE`: the reference measurements of an agent image —
//! its SEV-SNP launch digest under each launch the verifier allows (vCPUs, vCPU type,
//! SEV_FEATURES pinned in evidence/policy.rs) and its TDX MRTD — printed and written where
//! `measurement-tool verify` finds them by default (`make agent` runs this).
use anyhow::Context;
use measurement_tool::evidence::policy::SnpLaunch;
use measurement_tool::evidence::reference::Reference;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The agent image.
    image: PathBuf,
    /// Write the measurements here (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let image = std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;
    let r = Reference::compute(&image, &SnpLaunch::default()).with_context(|| format!("measuring {}", a.image.display()))?;
    for s in &r.sev_snp {
        println!("SEV-SNP launch digest ({} vCPU, {}, SEV_FEATURES {}): {}", s.vcpus, s.vcpu_type, s.guest_features, s.launch_digest);
    }
    println!("TDX MRTD: {}", r.tdx_mrtd);
    if let Some(out) = &a.out {
        // Written whole under a temporary name and renamed: a reader never sees half a file.
        let tmp = out.with_extension("json.partial");
        std::fs::write(&tmp, r.to_json() + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        println!("written to {}", out.display());
    }
    Ok(())
}
