use anyhow::Context;
use sha2::{Digest, Sha256, Sha384};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The image (e.g. agent.bin).
    image: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;
    println!("sha256 {}", hex::encode(Sha256::digest(&bytes)));
    println!("sha384 {}", hex::encode(Sha384::digest(&bytes)));
    Ok(())
}
