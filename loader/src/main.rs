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
    /// Run a static x86-64 Linux program in a fresh agent's sandbox (ring 3), stream its output,
    /// and exit with its status.
    Exec {
        #[command(flatten)]
        vm: VmArgs,
        /// Place a host file in the sandbox before the program starts: GUEST relative (under
        /// /build) or absolute under /build or /tmp; writable by the program, executable when
        /// the host file is. Split at the last '='. Repeatable.
        #[arg(long = "file", value_name = "HOST=GUEST")]
        files: Vec<String>,
        /// Limits the agent applies (0 = its default; it caps each by what it can afford):
        /// bytes of memory across all processes.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        max_memory: u64,
        /// Processes alive at once.
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_processes: u64,
        /// CPU time in 10 ms ticks (past it the build ends with SIGXCPU).
        #[arg(long, value_name = "TICKS", default_value_t = 0)]
        max_cpu_ticks: u64,
        /// Bytes of files in the sandbox (the program and --file included).
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        max_files: u64,
        /// Bytes of stdout and stderr (past it the build ends with SIGXFSZ).
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        max_log: u64,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Build a derivation attested: `loader build /nix/store/…-x.drv --out DIR` (or a `.nix`
    /// file, instantiated first). Writes DIR/<output>.nar and DIR/evidence.json; check them with
    /// `measurement-tool verify DIR/evidence.json --nar DIR/out.nar`.
    Build {
        #[command(flatten)]
        vm: VmArgs,
        /// A `.drv` in the local store, or a `.nix` file evaluating to one derivation.
        derivation: PathBuf,
        /// Where the outputs and evidence go.
        #[arg(long, default_value = "attested-result")]
        out: PathBuf,
        /// Also add the outputs to the local Nix store at their store paths, after verifying the
        /// evidence as `measurement-tool verify` does (expected measurement: --expected-measurement,
        /// --policy, else that of the --agent image launched) and checking each NAR against the
        /// statement. `none` evidence needs --allow-unattested.
        #[arg(long)]
        import: bool,
        /// With --import: import outputs whose evidence is unattested (made without a TEE).
        #[arg(long, requires = "import")]
        allow_unattested: bool,
        /// With --import: accept only these launch measurements (hex; repeatable).
        #[arg(long = "expected-measurement", value_name = "HEX", requires = "import")]
        expected_measurement: Vec<String>,
        /// With --import: the verifier's policy file (as `measurement-tool verify --policy`).
        #[arg(long, value_name = "FILE", requires = "import")]
        policy: Option<PathBuf>,
        /// Print a machine-readable summary on stdout (the build log goes to stderr).
        #[arg(long)]
        json: bool,
        /// With --tee tdx: the quote's collateral (dcap-qvl JSON, as `measurement-tool
        /// verify-report tdx --collateral` takes, e.g. exported from the host's PCCS), checked
        /// before the VM starts and put into evidence.json so the evidence verifies offline.
        /// Without it, `measurement-tool verify --collateral FILE` must be given it later.
        #[arg(long, value_name = "FILE")]
        tdx_collateral: Option<PathBuf>,
    },
    /// Publish the evidence a remote builder kept (`loader --serve`, LOADER_EVIDENCE_DIR) into a
    /// file:// binary cache: after `nix copy --to file:///DIR PATHS`, every
    /// `<hash-part>.narinfo` whose output has evidence gets `<hash-part>.attestation.json` beside
    /// it (docs/hosting.md), which `measurement-tool verify-path --cache` reads.
    Publish {
        /// The evidence directory (default: $LOADER_EVIDENCE_DIR).
        #[arg(long)]
        evidence_dir: Option<PathBuf>,
        /// The binary cache, file:///DIR.
        #[arg(long)]
        cache: String,
    },
}

#[derive(clap::Args)]
struct VmArgs {
    /// The agent image (default: target/agent.bin, the attested image, for `build`;
    /// target/agent-dev.bin, the development image `make agent-dev` builds, for `ping` and
    /// `exec`: the attested image serves nothing but one Build).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// QEMU accelerator (auto: KVM when /dev/kvm is usable, runs at hardware speed and is not
    /// PVM, else TCG; the reason is printed when it picks TCG).
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
    /// The total time limit in seconds (default: 600 under KVM and in a TEE, 3600 under TCG,
    /// which emulates every instruction; docs/build.md, "Time limits").
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// End the run after this many seconds without a sign of life: no frame from the agent, no
    /// serial output, QEMU not computing (a paused or stopped QEMU, a hung agent); 0 = never.
    #[arg(long, value_name = "SECONDS", default_value_t = loader::vm::DEFAULT_SILENCE.as_secs())]
    silence: u64,
    /// Keep the VM's disks and logs in this directory (default: a temporary one, removed): the
    /// agent's log lines (its Log frames) in agent.log, the serial port's output in serial.log.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Ask the agent to write its log to the serial port as well, each line as it is logged
    /// (serial.log): for a crash that loses the lines not yet sent. Costs two VM exits a byte.
    #[arg(long)]
    debug_serial: bool,
    /// Launch the agent as a confidential guest: none (a plain VM, unattested evidence), snp
    /// or tdx (KVM on a host with SEV-SNP or TDX; docs/running-on-snp.md, running-on-tdx.md).
    #[arg(long, default_value = "none")]
    tee: loader::tee::Tee,
    /// With --tee tdx: where QEMU reaches the quote-generation service (probed before the VM
    /// starts): vsock:CID:PORT (QGS's default, vsock:2:4050) or unix:PATH.
    #[arg(long, value_name = "SOCKET", value_parser = loader::tee::QuoteSocket::parse)]
    tdx_qgs: Option<loader::tee::QuoteSocket>,
    /// With --tee snp: the vCPU model. Its CPUID signature is in the launch digest, so the
    /// verifier's allow-list must name it (docs/running-on-snp.md).
    #[arg(long, value_name = "MODEL")]
    snp_cpu: Option<String>,
    /// With --tee snp: the guest policy (hex). The verifier's default policy refuses anything
    /// but SMT + the reserved-1 bit (0x30000).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    snp_policy: Option<u64>,
    /// Launch a TEE on a QEMU or kernel older than the upstream versions the launch is measured
    /// for (vendor builds with backports); the versions go into evidence.json either way.
    #[arg(long)]
    allow_downstream_host: bool,
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s}: {e}"))
}

/// The images `make agent` and `make agent-dev` build.
const ATTESTED_IMAGE: &str = "target/agent.bin";
const DEV_IMAGE: &str = "target/agent-dev.bin";

impl VmArgs {
    fn agent(&self, default: &str) -> PathBuf {
        self.agent.clone().unwrap_or_else(|| PathBuf::from(default))
    }

    fn config(&self, default_agent: &str) -> VmConfig {
        let mut c = VmConfig::new(self.agent(default_agent));
        c.accel = self.accel;
        if self.accel == Accel::Auto && self.tee == loader::tee::Tee::None {
            let (accel, why) = self.accel.choose();
            if let Some(why) = why {
                eprintln!("loader: --accel auto: {why}");
            }
            c.accel = accel;
        }
        c.memory_mib = self.memory;
        if let Some(t) = self.timeout {
            c.timeout = std::time::Duration::from_secs(t.max(1));
        }
        c.silence = std::time::Duration::from_secs(self.silence);
        c.work_dir = self.work_dir.clone();
        c.debug_serial = self.debug_serial;
        c.tee.tee = self.tee;
        if let Some(q) = &self.tdx_qgs {
            c.tee.tdx_quote_socket = q.clone();
        }
        if let Some(cpu) = &self.snp_cpu {
            c.tee.snp_cpu = cpu.clone();
        }
        if let Some(p) = self.snp_policy {
            c.tee.snp_policy = p;
        }
        c.tee.allow_downstream_host = self.allow_downstream_host;
        c
    }
}

fn main() -> anyhow::Result<()> {
    // Nix's ssh:// store runs `<remote-program> --serve --write [--store URL]`: the loader's
    // remote-builder mode (docs/hosting.md), recognised before the subcommands.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--serve" || a == "--write") {
        let serve = loader::serve::ServeArgs::parse(&args)?;
        let config = loader::serve::Config::from_env(&serve)?;
        if let Err(e) = loader::serve::serve_stdio(&config) {
            eprintln!("loader --serve: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    match Cli::parse() {
        Cli::Publish { evidence_dir, cache } => {
            let evidence_dir = match evidence_dir.or_else(|| std::env::var_os("LOADER_EVIDENCE_DIR").map(PathBuf::from)) {
                Some(d) => d,
                None => anyhow::bail!("give --evidence-dir DIR (or set LOADER_EVIDENCE_DIR)"),
            };
            let dir = loader::publish::cache_dir(&cache)?;
            let r = loader::publish::publish(&evidence_dir, &dir).with_context(|| format!("publishing evidence into {cache}"))?;
            for p in &r.published {
                println!("published {p}");
            }
            for p in &r.without_evidence {
                eprintln!("note: no evidence for {p} in {} (not built by this builder)", evidence_dir.display());
            }
            for (p, why) in &r.mismatched {
                eprintln!("NOT published: {p}: {why}");
            }
            if !r.mismatched.is_empty() {
                anyhow::bail!("{} path(s) in the cache disagree with their evidence", r.mismatched.len());
            }
            Ok(())
        }
        Cli::Ping(args) => {
            let r = loader::ping(&args.config(DEV_IMAGE)).with_context(|| format!("pinging the agent {}", args.agent(DEV_IMAGE).display()))?;
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
        Cli::Exec { vm, files, max_memory, max_processes, max_cpu_ticks, max_files, max_log, command } => {
            use std::io::Write;
            let program = std::fs::read(&command[0]).with_context(|| format!("reading {}", command[0]))?;
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let mut options = loader::ExecOptions::default();
            options.limits = agent::exec::Requested { memory: max_memory, processes: max_processes, cpu_ticks: max_cpu_ticks, fs_bytes: max_files, log_bytes: max_log };
            for f in &files {
                let (host, guest) = f.rsplit_once('=').with_context(|| format!("--file {f}: expected HOST=GUEST"))?;
                options.files.push(loader::ExecFile::from_host(host.as_ref(), guest).with_context(|| format!("--file {f}"))?);
            }
            let r = loader::exec_with(&vm.config(DEV_IMAGE), &program, &argv, &options, |fd, bytes| {
                let _ = if fd == 2 { std::io::stderr().write_all(bytes) } else { std::io::stdout().write_all(bytes) };
            })
            .context("running the program in the agent")?;
            for (code, text) in &r.errors {
                eprintln!("loader: the agent refused the program (error {code}): {text}");
            }
            // Killed by a signal (a fault, a limit): say what the agent saw, not just 128 + n;
            // a failure after one of the sandbox's limits refused something: which limit.
            if r.status != 0 {
                // The notes about the program (its processes, the limits, a deadlock), not the boot's.
                let about_it = |n: &&String| n.contains("pid ") || n.contains("limit") || n.contains("deadlock");
                let notes: Vec<&String> = r.notes.iter().filter(about_it).filter(|n| r.status >= 128 || n.contains("limit reached")).collect();
                for note in &notes {
                    eprintln!("loader: {note}");
                }
                // A signal another process sent, or one the program raised: no fault to report.
                if r.status > 128 && !notes.iter().any(|n| n.contains("signal")) {
                    eprintln!("loader: the program was killed by signal {}", r.status - 128);
                }
            }
            std::io::stdout().flush()?;
            std::process::exit(if r.errors.is_empty() { r.status } else { 125 });
        }
        Cli::Build { vm, derivation, out, import, allow_unattested, expected_measurement, policy, json, tdx_collateral } => {
            if import && vm.tee == loader::tee::Tee::None && !allow_unattested {
                anyhow::bail!("--import with --tee none: the evidence will be unattested (no TEE), and unattested outputs are imported only with --allow-unattested");
            }
            let import = match import {
                false => None,
                true => Some(import_policy(&vm, policy.as_deref(), expected_measurement)?),
            };
            build(&vm, &derivation, &out, import.map(|p| (p, allow_unattested)), json, tdx_collateral)
        }
    }
}

/// The policy `--import` verifies the evidence with: the file's (or the strict default), pinned
/// to the given measurements, else to the measurements of the agent image being launched
/// (SNP: with the verifier's pinned launch parameters).
fn import_policy(vm: &VmArgs, file: Option<&std::path::Path>, expected: Vec<String>) -> anyhow::Result<measurement_tool::evidence::policy::Policy> {
    use measurement_tool::evidence::{check, policy::Policy};
    let mut p = match file {
        Some(f) => Policy::from_toml(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?).with_context(|| format!("parsing policy {}", f.display()))?,
        None => Policy::default(),
    };
    if !expected.is_empty() {
        p.expected_measurements = expected;
    }
    if !p.measurement_pinned() && vm.tee != loader::tee::Tee::None {
        let agent = vm.agent(ATTESTED_IMAGE);
        let image = std::fs::read(&agent).with_context(|| format!("reading {}", agent.display()))?;
        p.expected_measurements = check::expected_measurements(&image, vm.tee.name(), &p.snp_launch).with_context(|| format!("measuring {}", agent.display()))?;
    }
    Ok(p)
}

fn build(vm: &VmArgs, derivation: &std::path::Path, out: &std::path::Path, import: Option<(measurement_tool::evidence::policy::Policy, bool)>, json: bool, tdx_collateral: Option<PathBuf>) -> anyhow::Result<()> {
    use std::io::Write;
    if tdx_collateral.is_some() && vm.tee != loader::tee::Tee::Tdx {
        anyhow::bail!("--tdx-collateral goes with --tee tdx (this launch is --tee {})", vm.tee.name());
    }
    let mut config = vm.config(ATTESTED_IMAGE);
    config.tee.tdx_collateral = tdx_collateral;
    let drv = if derivation.extension().is_some_and(|e| e == "nix") {
        loader::store::instantiate(derivation).with_context(|| format!("instantiating {}", derivation.display()))?
    } else {
        derivation.to_path_buf()
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.set_message(format!("building {}", drv.display()));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let result = loader::build::build(
        &config,
        &drv,
        out,
        |_, bytes| bar.suspend(|| std::io::stderr().write_all(bytes).ok()).unwrap_or(()),
        |p| match p {
            loader::build::Progress::Received(n) if n > 0 => bar.set_message(format!("receiving outputs: {}", human(n))),
            _ => {}
        },
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(loader::build::BuildError::Refused { code, text, .. }) => {
            anyhow::bail!("the build of {} failed (agent error {code}): {text}\nno outputs were written", drv.display())
        }
        Err(e) => return Err(e).with_context(|| format!("building {}", drv.display())),
    };
    if let Some((policy, allow_unattested)) = &import {
        loader::build::import(&report, policy, *allow_unattested).context("importing the outputs into the local store")?;
    }
    let import = import.is_some();
    if json {
        let outputs: Vec<serde_json::Value> = report
            .outputs
            .iter()
            .map(|o| {
                serde_json::json!({
                    "name": o.name, "path": o.path, "nar": o.nar, "narSize": o.nar_size,
                    "narSha256": hex::encode(o.nar_sha256), "references": o.references,
                })
            })
            .collect();
        let v = serde_json::json!({
            "derivation": report.drv_path, "outputs": outputs, "evidence": report.evidence,
            "attestation": report.attestation, "evidenceNotes": report.evidence_notes, "imported": import,
            "inputPaths": report.input_paths, "inputBytes": report.input_bytes,
            "seconds": report.timings.total.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    eprintln!("built {} in {:.2} s ({:?}; {} inputs, {})", report.drv_path, report.timings.total.as_secs_f64(), report.accel, report.input_paths, human(report.input_bytes));
    for o in &report.outputs {
        eprintln!("  {:<8} {}\n           NAR sha256:{} ({}) -> {}", o.name, o.path, hex::encode(o.nar_sha256), human(o.nar_size), o.nar.display());
    }
    eprintln!("  evidence {} (attestation: {})", report.evidence.display(), report.attestation);
    if report.attestation == "none" {
        eprintln!("  WARNING: no TEE: this evidence proves nothing about where or how the build ran");
    }
    for note in &report.evidence_notes {
        eprintln!("  note: {note}");
    }
    if import {
        eprintln!("  imported into the local Nix store");
    }
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
