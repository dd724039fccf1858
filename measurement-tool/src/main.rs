use clap::Parser;

mod cli;

/// Recompute the agent's launch measurement and verify build evidence.
#[derive(Parser)]
#[command(name = "measurement-tool", version)]
enum Cli {
    /// Print the SHA-256 and SHA-384 of an image file.
    Digest(cli::digest::Args),
    /// Nix semantics with the agent's own code: NAR, NAR hash, .drv path, output paths.
    Nix(cli::nix::Args),
    /// Launch measurement of an image: SEV-SNP launch digest, TDX MRTD, or plain digests.
    Measure(cli::measure::Args),
    /// The reference measurements of an agent image (SNP launch digest with the pinned launch
    /// parameters, TDX MRTD), written where `verify` reads them by default.
    Reference(cli::reference::Args),
    /// Verify a build's evidence bundle: attestation, REPORT_DATA binding, outputs.
    Verify(cli::verify::Args),
    /// Verify a store path against its attested build: NAR hash in the Nix database and on disk,
    /// the evidence (--evidence FILE or --cache file:///DIR), the cache's narinfo and NAR, the
    /// derivation (docs/consuming.md).
    VerifyPath(cli::verify_path::Args),
    /// Verify raw hardware evidence: an SEV-SNP report or a TDX quote.
    VerifyReport(cli::verify_report::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Digest(a) => cli::digest::run(a),
        Cli::Nix(a) => cli::nix::run(a),
        Cli::Measure(a) => cli::measure::run(a),
        Cli::VerifyReport(a) => cli::verify_report::run(a),
        Cli::Verify(a) => cli::verify::run(a),
        Cli::VerifyPath(a) => cli::verify_path::run(a),
        Cli::Reference(a) => cli::reference::run(a),
    }
}
