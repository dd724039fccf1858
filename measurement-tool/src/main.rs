use clap::Parser;

mod cli;

/// Recompute the agent's launch measurement and verify build evidence.
#[derive(Parser)]
#[command(name = "measurement-tool", version)]
enum Cli {
    /// Print the SHA-256 and SHA-384 of an image file.
    Digest(cli::digest::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Digest(a) => cli::digest::run(a),
    }
}
