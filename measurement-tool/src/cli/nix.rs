//! `measurement-tool nix …`: the agent's Nix core on the host, for reviewers and tests.
use agent::nix::derivation::{self, Derivation, Resolver};
use agent::nix::hash::{Algo, Hasher};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Write the NAR serialisation of PATH to stdout (as `nix-store --dump`).
    Nar { path: PathBuf },
    /// Print the NAR hash of PATH as `sha256:<nix32>` (as `nix-store -q --hash`).
    NarHash { path: PathBuf },
    /// Print the store path of a `.drv` file (as Nix computes it when writing the derivation).
    DrvPath { drv: PathBuf },
    /// Print `NAME PATH` for each output of a `.drv`, checking the paths it declares.
    Outputs {
        drv: PathBuf,
        /// Where input derivations are read from.
        #[arg(long, default_value = "/nix/store")]
        store: PathBuf,
    },
}

fn read_drv(path: &Path) -> anyhow::Result<(Vec<u8>, Derivation)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let drv = derivation::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    Ok((bytes, drv))
}

/// The derivation's name: from a `<hash>-<name>.drv` file name, else its `name` attribute.
fn drv_name(path: &Path, drv: &Derivation) -> anyhow::Result<String> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    if let Some(base) = file.strip_suffix(".drv") {
        if let Ok(p) = agent::nix::store_path::StorePath::from_base_name(base) {
            return Ok(p.name().to_string());
        }
    }
    drv.name().context("derivation has no name")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Cmd::Nar { path } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let mut err = None;
            measurement_tool::nixfs::dump(&path, &mut |b| {
                if err.is_none() {
                    err = out.write_all(b).err();
                }
            })
            .with_context(|| format!("serialising {}", path.display()))?;
            if let Some(e) = err {
                return Err(e).context("writing the NAR");
            }
            out.flush()?;
        }
        Cmd::NarHash { path } => {
            let mut h = Hasher::new(Algo::Sha256);
            measurement_tool::nixfs::dump(&path, &mut |b| h.update(b)).with_context(|| format!("serialising {}", path.display()))?;
            println!("{}", h.finish().to_typed_nix32());
        }
        Cmd::DrvPath { drv } => {
            let (bytes, d) = read_drv(&drv)?;
            let name = drv_name(&drv, &d)?;
            let p = derivation::drv_path(&name, &bytes, &d).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("{p}");
        }
        Cmd::Outputs { drv, store } => {
            let (_, d) = read_drv(&drv)?;
            let lookup = |p: &str| -> Option<Vec<u8>> {
                let base = p.strip_prefix("/nix/store/")?;
                std::fs::read(store.join(base)).ok()
            };
            let mut r = Resolver::new(&lookup);
            let outs = r.output_paths(&d).map_err(|e| anyhow::anyhow!("{}: {e:?}", drv.display()))?;
            for (name, p) in &outs {
                if d.outputs[name].path != p.to_path() {
                    bail!("output {name}: the derivation declares {} but Nix computes {p}", d.outputs[name].path);
                }
                println!("{name} {p}");
            }
        }
    }
    Ok(())
}
