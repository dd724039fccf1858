//! `measurement-tool measure`: the launch measurement of an image, without hardware.
use anyhow::Context;
use measurement_tool::evidence::policy::{SNP_GUEST_FEATURES, SNP_VCPUS, SNP_VCPU_TYPES};
use measurement_tool::measure::{snp, tdx};
use sha2::{Digest, Sha256, Sha384};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["snp", "tdx", "image_only"])))]
pub struct Args {
    /// SEV-SNP launch digest (48 bytes, hex) of IMAGE as QEMU launches it.
    #[arg(long, value_name = "IMAGE")]
    snp: Option<PathBuf>,
    /// TDX MRTD (48 bytes, hex) of IMAGE as QEMU builds the TD.
    #[arg(long, value_name = "IMAGE")]
    tdx: Option<PathBuf>,
    /// Plain SHA-256 and SHA-384 of IMAGE.
    #[arg(long, value_name = "IMAGE")]
    image_only: Option<PathBuf>,
    /// SNP: number of vCPUs (one VMSA each). Default: the verifier's pinned value (1).
    #[arg(long, default_value_t = SNP_VCPUS)]
    vcpus: u32,
    /// SNP: QEMU vCPU type (gives the CPUID signature in each VMSA). Default: the verifier's
    /// pinned one (EPYC-v4).
    #[arg(long, default_value = SNP_VCPU_TYPES[0])]
    vcpu_type: String,
    /// SNP: SEV features in each VMSA (hex; bit 0 = SNP active). Default: the verifier's pinned
    /// value (`SNP_GUEST_FEATURES`, 0x1).
    #[arg(long, value_parser = parse_hex)]
    guest_features: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = a.snp.as_ref().or(a.tdx.as_ref()).or(a.image_only.as_ref()).expect("clap group");
    let image = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ctx = || format!("measuring {}", path.display());
    let (kind, fields): (&str, Vec<(&str, String)>) = if a.snp.is_some() {
        let sig = snp::vcpu_signature(&a.vcpu_type).with_context(ctx)?;
        let guest_features = a.guest_features.unwrap_or(SNP_GUEST_FEATURES);
        let d = snp::launch_digest(&image, a.vcpus, sig, guest_features).with_context(ctx)?;
        ("snp", vec![
            ("launch_digest", hex::encode(d)),
            ("vcpus", a.vcpus.to_string()),
            ("vcpu_type", a.vcpu_type.clone()),
            ("guest_features", format!("{guest_features:#x}")),
        ])
    } else if a.tdx.is_some() {
        ("tdx", vec![("mrtd", hex::encode(tdx::mrtd(&image).with_context(ctx)?))])
    } else {
        ("image", vec![("sha256", hex::encode(Sha256::digest(&image))), ("sha384", hex::encode(Sha384::digest(&image)))])
    };
    if a.json {
        let body: Vec<String> = fields.iter().map(|(k, v)| match v.parse::<u64>() {
            Ok(n) => format!("\"{k}\":{n}"),
            Err(_) => format!("\"{k}\":\"{v}\""),
        }).collect();
        println!("{{\"kind\":\"{kind}\",\"image\":\"{}\",{}}}", path.display(), body.join(","));
    } else if fields.len() == 1 || kind != "image" && kind != "snp" {
        println!("{}", fields[0].1);
    } else if kind == "snp" {
        println!("{}", fields[0].1);
    } else {
        for (k, v) in fields {
            println!("{k} {v}");
        }
    }
    Ok(())
}
