use clap::Parser;

/// Start attested Nix builds in a fresh confidential VM.
#[derive(Parser)]
#[command(name = "loader", version)]
enum Cli {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli {}
}
