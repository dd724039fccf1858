//! Confidential VMs: the QEMU arguments that launch the agent as an SEV-SNP guest or a TD, and
//! the host checks that say, before QEMU starts, exactly what is missing.
//!
//! ```text
//! --tee none   plain q35 (default): no attestation, the evidence bundle says "UNATTESTED"
//! --tee snp    -machine …,confidential-guest-support=sev0,memory-backend=ram0
//!              -object memory-backend-memfd,id=ram0,size=…,share=true,prealloc=false
//!              -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000
//!              -cpu EPYC-v4 (the vCPU type is part of the launch measurement)
//! --tee tdx    -machine …,kernel-irqchip=split,confidential-guest-support=tdx0
//!              -object {"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{…}}
//! ```
//!
//! The forms follow QEMU's documentation (docs/system/i386/amd-memory-encryption.rst, "Launching
//! (SEV-SNP)", QEMU 9.1+; docs/system/i386/tdx.rst, QEMU 10.1+). Private memory itself comes from
//! KVM's guest_memfd, which QEMU creates for confidential guests next to the memfd backend that
//! holds shared memory (docs/system/guest-memfd.rst).
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which confidential-computing platform to launch the agent on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Tee {
    /// No TEE: a plain VM (KVM or TCG); evidence is unattested.
    #[default]
    None,
    /// AMD SEV-SNP (KVM only).
    Snp,
    /// Intel TDX (KVM only).
    Tdx,
}

impl Tee {
    pub fn name(self) -> &'static str {
        match self {
            Tee::None => "none",
            Tee::Snp => "sev-snp",
            Tee::Tdx => "tdx",
        }
    }
}

impl std::str::FromStr for Tee {
    type Err = String;
    fn from_str(s: &str) -> Result<Tee, String> {
        match s {
            "none" => Ok(Tee::None),
            "snp" | "sev-snp" => Ok(Tee::Snp),
            "tdx" => Ok(Tee::Tdx),
            other => Err(format!("unknown TEE {other:?}: expected none, snp or tdx")),
        }
    }
}

/// Where QEMU reaches the host's TDX quote-generation service (Intel's QGS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuoteSocket {
    /// QGS listening on vsock (its default: CID 2 = the host, port 4050).
    Vsock { cid: u32, port: u32 },
    /// QGS listening on a UNIX socket (e.g. /var/run/tdx-qgs/qgs.socket).
    Unix(PathBuf),
}

impl Default for QuoteSocket {
    fn default() -> Self {
        QuoteSocket::Vsock { cid: 2, port: 4050 }
    }
}

/// Launch parameters of a confidential VM. The SNP ones are part of the launch measurement
/// (`measurement-tool measure --snp --vcpu-type … --guest-features …` must be given the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeeConfig {
    pub tee: Tee,
    /// C-bit position (CPUID 0x8000_001F EBX[5:0]): 51 on Milan, Genoa and Turin.
    pub snp_cbitpos: u8,
    /// Physical address bits lost to memory encryption (CPUID 0x8000_001F EBX[11:6]): 1.
    pub snp_reduced_phys_bits: u8,
    /// SNP guest policy: 0x30000 = SMT allowed, bit 17 (reserved, must be 1); debugging and
    /// migration agents off.
    pub snp_policy: u64,
    /// The vCPU model: its CPUID signature is in the VMSA and so in the launch digest.
    pub snp_cpu: String,
    pub tdx_quote_socket: QuoteSocket,
    /// TDX collateral (dcap-qvl JSON, e.g. exported from the host's PCCS) to put in the evidence
    /// bundle: the loader has no network of its own to fetch it. `build` reads and checks it
    /// before the VM starts, and refuses it with any `tee` but `Tdx`. Without it the bundle has
    /// no collateral and `measurement-tool verify --collateral FILE` must be given it.
    pub tdx_collateral: Option<std::path::PathBuf>,
    /// Launch on a host stack older than the upstream versions the launch measurement was
    /// checked against (QEMU 9.1 / Linux 6.11 for SNP, QEMU 10.1 / Linux 6.16 for TDX), e.g. a
    /// vendor kernel with backports: the versions are recorded in evidence.json either way.
    pub allow_downstream_host: bool,
}

impl Default for TeeConfig {
    fn default() -> Self {
        TeeConfig {
            tee: Tee::None,
            snp_cbitpos: 51,
            snp_reduced_phys_bits: 1,
            snp_policy: measurement_tool::evidence::policy::SNP_ALLOWED_POLICY,
            snp_cpu: measurement_tool::evidence::policy::SNP_VCPU_TYPES[0].into(),
            tdx_quote_socket: QuoteSocket::default(),
            tdx_collateral: None,
            allow_downstream_host: false,
        }
    }
}

impl QuoteSocket {
    /// `vsock:CID:PORT` or `unix:PATH` (what `loader --tdx-qgs` takes).
    pub fn parse(s: &str) -> Result<QuoteSocket, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(QuoteSocket::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest.split_once(':').ok_or_else(|| format!("{s}: expected vsock:CID:PORT"))?;
            let num = |v: &str| v.parse::<u32>().map_err(|_| format!("{s}: {v} is not a number"));
            return Ok(QuoteSocket::Vsock { cid: num(cid)?, port: num(port)? });
        }
        Err(format!("{s}: expected vsock:CID:PORT or unix:PATH"))
    }
}

/// What a TEE adds to the QEMU command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QemuTeeArgs {
    /// Properties appended to `-machine q35,accel=kvm`.
    pub machine: Vec<String>,
    /// `-object` values, in order.
    pub objects: Vec<String>,
    /// The `-cpu` value to use instead of the default, when the TEE fixes it.
    pub cpu: Option<String>,
}

impl QemuTeeArgs {
    /// The arguments as QEMU takes them: `-object X` pairs (the machine properties and CPU are
    /// merged into the caller's `-machine`/`-cpu`).
    pub fn object_args(&self) -> Vec<String> {
        self.objects.iter().flat_map(|o| ["-object".to_string(), o.clone()]).collect()
    }

    /// The `-machine` value: `q35,accel=<accel>` plus the TEE's properties.
    pub fn machine_arg(&self, accel: &str) -> String {
        let mut m = format!("q35,accel={accel}");
        for p in &self.machine {
            m.push(',');
            m.push_str(p);
        }
        m
    }

    /// The `-cpu` value: the TEE's, else `default`.
    pub fn cpu_arg<'a>(&'a self, default: &'a str) -> &'a str {
        self.cpu.as_deref().unwrap_or(default)
    }
}

/// A TEE runs only under KVM: refuses TCG (and `auto` that resolved to TCG) with the reason.
pub fn require_kvm(tee: Tee, accel_is_kvm: bool) -> Result<(), Unavailable> {
    if tee == Tee::None || accel_is_kvm {
        return Ok(());
    }
    Err(Unavailable { tee, missing: vec![Missing("KVM: a confidential VM cannot run under TCG (use --accel kvm on a host with /dev/kvm)".into())] })
}

/// The QEMU arguments for `config.tee` with `memory_mib` of guest RAM.
pub fn qemu_args(config: &TeeConfig, memory_mib: u64) -> QemuTeeArgs {
    match config.tee {
        Tee::None => QemuTeeArgs::default(),
        Tee::Snp => QemuTeeArgs {
            machine: vec!["confidential-guest-support=sev0".into(), "memory-backend=ram0".into()],
            objects: vec![
                format!("memory-backend-memfd,id=ram0,size={memory_mib}M,share=true,prealloc=false"),
                format!(
                    "sev-snp-guest,id=sev0,cbitpos={},reduced-phys-bits={},policy={:#x}",
                    config.snp_cbitpos, config.snp_reduced_phys_bits, config.snp_policy
                ),
            ],
            cpu: Some(config.snp_cpu.clone()),
        },
        Tee::Tdx => {
            // The socket address is a QAPI struct: only the JSON form of -object can carry it.
            let socket = match &config.tdx_quote_socket {
                QuoteSocket::Vsock { cid, port } => serde_json::json!({"type": "vsock", "cid": cid.to_string(), "port": port.to_string()}),
                QuoteSocket::Unix(path) => serde_json::json!({"type": "unix", "path": path.display().to_string()}),
            };
            let object = serde_json::json!({"qom-type": "tdx-guest", "id": "tdx0", "quote-generation-socket": socket});
            QemuTeeArgs {
                machine: vec!["kernel-irqchip=split".into(), "confidential-guest-support=tdx0".into()],
                objects: vec![object.to_string()],
                cpu: Some("host".into()),
            }
        }
    }
}

/// What the host offers, read from sysfs, /dev and QEMU itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub kvm: bool,
    /// /sys/module/kvm_amd/parameters/sev_snp (None: kvm_amd not loaded).
    pub kvm_amd_sev_snp: Option<String>,
    pub dev_sev: bool,
    /// /sys/module/kvm_intel/parameters/tdx (None: kvm_intel not loaded).
    pub kvm_intel_tdx: Option<String>,
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu_version: String,
    /// The object types `qemu-system-x86_64 -object help` lists.
    pub qemu_objects: Vec<String>,
    pub kernel: String,
    /// TDX: why the quote-generation service could not be reached (None: it answered a
    /// connection, or it was not probed).
    pub quote_service: Option<String>,
}

/// The leading `MAJOR.MINOR` of a version string ("10.1.0 (Debian …)", "6.16.3-amd64").
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Connects to the quote-generation service as QEMU will: a UNIX socket, or AF_VSOCK (QGS's
/// default is the host, CID 2, port 4050; reaching it from the host itself needs the
/// `vsock_loopback` transport). Returns why it failed.
pub fn probe_quote_service(socket: &QuoteSocket) -> Result<(), String> {
    match socket {
        QuoteSocket::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop).map_err(|e| format!("{}: {e}", path.display())),
        QuoteSocket::Vsock { cid, port } => vsock_connect(*cid, *port).map_err(|e| format!("vsock {cid}:{port}: {e}")),
    }
}

/// An AF_VSOCK connect (the kernel gives up after its 2 s vsock connect timeout).
fn vsock_connect(cid: u32, port: u32) -> std::io::Result<()> {
    vsock::VsockStream::connect_with_cid_port(cid, port).map(drop)
}

/// The host stack's versions, for evidence.json.
pub fn host_stack(qemu: &Path) -> measurement_tool::evidence::bundle::HostStack {
    let f = HostFacts::read(Path::new("/"), qemu);
    measurement_tool::evidence::bundle::HostStack { qemu: f.qemu_version, kernel: f.kernel }
}

impl HostFacts {
    /// Reads the facts, with every path under `root` ("/" on a real host; a fake tree in tests).
    pub fn read(root: &Path, qemu: &Path) -> HostFacts {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok().map(|s| s.trim().to_string());
        let exists = |p: &str| root.join(p).exists();
        let run = |args: &[&str]| {
            Command::new(qemu).args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
        };
        HostFacts {
            kvm: exists("dev/kvm"),
            kvm_amd_sev_snp: read("sys/module/kvm_amd/parameters/sev_snp"),
            dev_sev: exists("dev/sev"),
            kvm_intel_tdx: read("sys/module/kvm_intel/parameters/tdx"),
            qemu_version: run(&["--version"]).lines().next().unwrap_or("").trim().to_string(),
            qemu_objects: parse_object_help(&run(&["-object", "help"])),
            kernel: read("proc/sys/kernel/osrelease").unwrap_or_default(),
            quote_service: None,
        }
    }
}

/// The object names in `-object help` output ("Available object backend types:" then one per
/// line, indented).
pub fn parse_object_help(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with(' ')).map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

fn enabled(param: &Option<String>) -> bool {
    matches!(param.as_deref(), Some("Y" | "y" | "1"))
}

/// One missing piece, worded for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing(pub String);

/// The host cannot launch the requested TEE; `missing` says every reason found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{} is not available on this host:\n{}\nsee {}", tee.name(), missing.iter().map(|m| format!("  - {}", m.0)).collect::<Vec<_>>().join("\n"), doc(*tee))]
pub struct Unavailable {
    pub tee: Tee,
    pub missing: Vec<Missing>,
}

fn doc(tee: Tee) -> &'static str {
    match tee {
        Tee::Tdx => "docs/running-on-tdx.md",
        _ => "docs/running-on-snp.md",
    }
}

/// Checks that the host can launch `config`'s TEE. `None` always can.
pub fn check(config: &TeeConfig, host: &HostFacts) -> Result<(), Unavailable> {
    let mut missing = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            missing.push(Missing(what));
        }
    };
    let qemu = if host.qemu_version.is_empty() { "QEMU (not found)".to_string() } else { host.qemu_version.clone() };
    let has_object = |o: &str| host.qemu_objects.iter().any(|x| x == o);
    match config.tee {
        Tee::None => return Ok(()),
        Tee::Snp => {
            need(host.kvm, "/dev/kvm: KVM is not available (a TEE needs KVM; TCG cannot run one)".into());
            need(
                enabled(&host.kvm_amd_sev_snp),
                match &host.kvm_amd_sev_snp {
                    None => "kvm_amd is not loaded (/sys/module/kvm_amd): an AMD EPYC (Milan or later) host with SNP host support is needed".into(),
                    Some(v) => format!(
                        "SNP is off in KVM (/sys/module/kvm_amd/parameters/sev_snp = {v}): enable SEV-SNP and SMEE in the BIOS, boot a kernel with SNP host support (Linux 6.11 or later; this host runs {}), load kvm_amd with sev_snp=1",
                        if host.kernel.is_empty() { "an unknown kernel" } else { &host.kernel }
                    ),
                },
            );
            need(host.dev_sev, "/dev/sev is missing: the ccp driver did not initialise the PSP (check dmesg for 'SEV-SNP API')".into());
            need(has_object("sev-snp-guest"), format!("{qemu} has no sev-snp-guest object: QEMU 9.1 or later is needed"));
            need(has_object("memory-backend-memfd"), format!("{qemu} has no memory-backend-memfd object"));
        }
        Tee::Tdx => {
            need(host.kvm, "/dev/kvm: KVM is not available (a TEE needs KVM; TCG cannot run one)".into());
            need(
                enabled(&host.kvm_intel_tdx),
                match &host.kvm_intel_tdx {
                    None => "kvm_intel is not loaded, or has no tdx parameter (/sys/module/kvm_intel/parameters/tdx): an Intel Xeon (4th gen or later) host with TDX host support is needed".into(),
                    Some(v) => format!(
                        "TDX is off in KVM (/sys/module/kvm_intel/parameters/tdx = {v}): enable TME-MT and TDX in the BIOS, boot a kernel with TDX host support (Linux 6.16 or later; this host runs {}), load kvm_intel with tdx=1",
                        if host.kernel.is_empty() { "an unknown kernel" } else { &host.kernel }
                    ),
                },
            );
            need(has_object("tdx-guest"), format!("{qemu} has no tdx-guest object: QEMU 10.1 or later is needed"));
            if let Some(why) = &host.quote_service {
                need(false, format!("the quote-generation service is unreachable ({why}): without it the build runs to its end and is then refused for want of a quote; start Intel's QGS (qgsd) or pass --tdx-qgs"));
            }
        }
    }
    // The launch measurement was checked against upstream QEMU and KVM: older stacks (or
    // downstream ones reporting older versions) may lay out the launch differently.
    let (min_qemu, min_kernel) = match config.tee {
        Tee::Snp => ((9, 1), (6, 11)),
        _ => ((10, 1), (6, 16)),
    };
    let older = |found: Option<(u32, u32)>, min: (u32, u32)| found.is_some_and(|v| v < min);
    if !config.allow_downstream_host {
        let q = parse_version(host.qemu_version.strip_prefix("QEMU emulator version").unwrap_or(&host.qemu_version));
        need(
            !older(q, min_qemu),
            format!("{qemu} is older than QEMU {}.{}, the upstream version this launch is measured for (pass --allow-downstream-host for a vendor build with backports; evidence.json records the version)", min_qemu.0, min_qemu.1),
        );
        need(
            !older(parse_version(&host.kernel), min_kernel),
            format!("the host kernel {} is older than Linux {}.{}, the upstream version with {} host support (pass --allow-downstream-host for a vendor kernel with backports; evidence.json records the version)", host.kernel, min_kernel.0, min_kernel.1, config.tee.name()),
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unavailable { tee: config.tee, missing })
    }
}

/// Checks the real host (`/`) with the given QEMU binary.
pub fn check_host(config: &TeeConfig, qemu: &Path) -> Result<(), Unavailable> {
    if config.tee == Tee::None {
        return Ok(());
    }
    let mut facts = HostFacts::read(Path::new("/"), qemu);
    if config.tee == Tee::Tdx {
        facts.quote_service = probe_quote_service(&config.tdx_quote_socket).err();
    }
    check(config, &facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snp() -> TeeConfig {
        TeeConfig { tee: Tee::Snp, ..Default::default() }
    }

    #[test]
    fn snp_command_line() {
        let a = qemu_args(&snp(), 2048);
        assert_eq!(a.machine, ["confidential-guest-support=sev0", "memory-backend=ram0"]);
        assert_eq!(
            a.object_args(),
            [
                "-object",
                "memory-backend-memfd,id=ram0,size=2048M,share=true,prealloc=false",
                "-object",
                "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000",
            ]
        );
        assert_eq!(a.cpu.as_deref(), Some("EPYC-v4"));
        assert_eq!(a.machine_arg("kvm"), "q35,accel=kvm,confidential-guest-support=sev0,memory-backend=ram0");
        assert_eq!(a.cpu_arg("host,-arch-capabilities"), "EPYC-v4");
        let none = qemu_args(&TeeConfig::default(), 2048);
        assert_eq!(none, QemuTeeArgs::default());
        assert_eq!((none.machine_arg("tcg"), none.cpu_arg("max")), ("q35,accel=tcg".to_string(), "max"));
        assert!(none.object_args().is_empty());
        assert!(require_kvm(Tee::Snp, false).unwrap_err().to_string().contains("cannot run under TCG"));
        assert!(require_kvm(Tee::Snp, true).is_ok() && require_kvm(Tee::None, false).is_ok());
    }

    #[test]
    fn tdx_command_line() {
        let a = qemu_args(&TeeConfig { tee: Tee::Tdx, ..Default::default() }, 2048);
        assert_eq!(a.machine, ["kernel-irqchip=split", "confidential-guest-support=tdx0"]);
        let o: serde_json::Value = serde_json::from_str(&a.objects[0]).unwrap();
        assert_eq!(
            o,
            serde_json::json!({"qom-type": "tdx-guest", "id": "tdx0", "quote-generation-socket": {"type": "vsock", "cid": "2", "port": "4050"}})
        );
        let unix = TeeConfig { tee: Tee::Tdx, tdx_quote_socket: QuoteSocket::Unix("/run/qgs.sock".into()), ..Default::default() };
        // Compared as JSON: key order depends on serde_json's features in the whole build.
        let o: serde_json::Value = serde_json::from_str(&qemu_args(&unix, 1024).objects[0]).unwrap();
        assert_eq!(o["quote-generation-socket"], serde_json::json!({"path": "/run/qgs.sock", "type": "unix"}));
    }

    #[test]
    fn tee_names_parse() {
        assert_eq!("none".parse::<Tee>(), Ok(Tee::None));
        assert_eq!("snp".parse::<Tee>(), Ok(Tee::Snp));
        assert_eq!("tdx".parse::<Tee>(), Ok(Tee::Tdx));
        assert!("sgx".parse::<Tee>().unwrap_err().contains("none, snp or tdx"));
        assert_eq!(Tee::default(), Tee::None);
    }

    #[test]
    fn object_help_parsing() {
        let out = "Available object backend types:\n  authz-list\n  memory-backend-memfd\n  sev-guest\n  sev-snp-guest\n";
        assert_eq!(parse_object_help(out), ["authz-list", "memory-backend-memfd", "sev-guest", "sev-snp-guest"]);
    }

    fn snp_host() -> HostFacts {
        HostFacts {
            kvm: true,
            kvm_amd_sev_snp: Some("Y".into()),
            dev_sev: true,
            kvm_intel_tdx: None,
            qemu_version: "QEMU emulator version 9.2.0".into(),
            qemu_objects: vec!["memory-backend-memfd".into(), "sev-guest".into(), "sev-snp-guest".into()],
            kernel: "6.12.0".into(),
            quote_service: None,
        }
    }

    #[test]
    fn snp_host_checks_name_what_is_missing() {
        assert_eq!(check(&snp(), &snp_host()), Ok(()));
        let old = HostFacts {
            kvm_amd_sev_snp: Some("N".into()),
            dev_sev: false,
            qemu_version: "QEMU emulator version 7.2.22".into(),
            qemu_objects: vec!["memory-backend-memfd".into(), "sev-guest".into()],
            ..snp_host()
        };
        let e = check(&snp(), &old).unwrap_err();
        assert_eq!(e.missing.len(), 4);
        let text = e.to_string();
        assert!(text.starts_with("sev-snp is not available on this host:"), "{text}");
        assert!(text.contains("sev_snp = N"), "{text}");
        assert!(text.contains("/dev/sev is missing"), "{text}");
        assert!(text.contains("QEMU emulator version 7.2.22 has no sev-snp-guest object: QEMU 9.1 or later"), "{text}");
        assert!(text.contains("QEMU emulator version 7.2.22 is older than QEMU 9.1"), "{text}");
        assert!(text.ends_with("see docs/running-on-snp.md"), "{text}");
        // None never needs anything.
        assert_eq!(check(&TeeConfig::default(), &HostFacts::default()), Ok(()));
    }

    #[test]
    fn tdx_host_checks() {
        let tdx = TeeConfig { tee: Tee::Tdx, ..Default::default() };
        let host = HostFacts {
            kvm: true,
            kvm_intel_tdx: Some("Y".into()),
            qemu_version: "QEMU emulator version 10.1.0".into(),
            qemu_objects: vec!["tdx-guest".into()],
            kernel: "6.16.0-rc1".into(),
            ..Default::default()
        };
        assert_eq!(check(&tdx, &host), Ok(()));
        let e = check(&tdx, &HostFacts { kvm: false, kvm_intel_tdx: None, qemu_objects: vec![], ..host.clone() }).unwrap_err();
        assert_eq!(e.missing.len(), 3);
        assert!(e.to_string().contains("kvm_intel is not loaded"));
        // The quote service is probed before anything starts.
        let unreachable = HostFacts { quote_service: Some("vsock 2:4050: Connection refused".into()), ..host.clone() };
        assert!(check(&tdx, &unreachable).unwrap_err().to_string().contains("quote-generation service is unreachable (vsock 2:4050: Connection refused)"));
        // Older stacks than the measured upstream ones are refused unless allowed (vendor
        // kernels with backports), and named.
        let downstream = HostFacts { qemu_version: "QEMU emulator version 9.0.0 (tdx-qemu)".into(), kernel: "6.8.0-1004-intel".into(), ..host.clone() };
        let e = check(&tdx, &downstream).unwrap_err().to_string();
        assert!(e.contains("is older than QEMU 10.1") && e.contains("6.8.0-1004-intel is older than Linux 6.16"), "{e}");
        assert_eq!(check(&TeeConfig { allow_downstream_host: true, ..tdx.clone() }, &downstream), Ok(()));
        // An unparseable version is not guessed at.
        assert_eq!(check(&tdx, &HostFacts { kernel: String::new(), ..host.clone() }), Ok(()));
    }

    #[test]
    fn versions_and_quote_sockets_parse() {
        assert_eq!(parse_version(" 10.1.0 (Debian 1:10.1+ds-1)"), Some((10, 1)));
        assert_eq!(parse_version("6.16.3-amd64"), Some((6, 16)));
        assert_eq!(parse_version("6"), None);
        assert!((6, 8) < (6, 16) && (9, 2) > (9, 1));
        assert_eq!(QuoteSocket::parse("vsock:2:4050"), Ok(QuoteSocket::Vsock { cid: 2, port: 4050 }));
        assert_eq!(QuoteSocket::parse("unix:/run/qgs.sock"), Ok(QuoteSocket::Unix("/run/qgs.sock".into())));
        assert!(QuoteSocket::parse("tcp:1").is_err() && QuoteSocket::parse("vsock:2").is_err());
    }

    /// The probe connects as QEMU would: a listening UNIX socket answers, a missing one and a
    /// vsock port nobody listens on do not.
    #[test]
    fn quote_service_probe_connects() {
        let path = std::env::temp_dir().join(format!("loader-qgs-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(probe_quote_service(&QuoteSocket::Unix(path.clone())), Ok(()));
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let e = probe_quote_service(&QuoteSocket::Unix(path.clone())).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(probe_quote_service(&QuoteSocket::Vsock { cid: 2, port: 4050 }).is_err(), "no QGS listens here");
    }

    #[test]
    fn host_facts_from_a_fake_root() {
        let root = std::env::temp_dir().join(format!("loader-tee-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sys/module/kvm_amd/parameters")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("sys/module/kvm_amd/parameters/sev_snp"), "Y\n").unwrap();
        std::fs::write(root.join("dev/sev"), "").unwrap();
        let f = HostFacts::read(&root, Path::new("/nonexistent/qemu"));
        assert_eq!(f.kvm_amd_sev_snp.as_deref(), Some("Y"));
        assert!(f.dev_sev && !f.kvm);
        assert_eq!(f.kvm_intel_tdx, None);
        assert!(f.qemu_objects.is_empty());
        let e = check(&snp(), &f).unwrap_err().to_string();
        assert!(e.contains("QEMU (not found) has no sev-snp-guest object"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// On this machine (no SNP/TDX host), the real check says so instead of letting QEMU fail.
    #[test]
    fn real_host_check_reports_instead_of_failing_late() {
        let qemu = Path::new("qemu-system-x86_64");
        for tee in [Tee::Snp, Tee::Tdx] {
            let config = TeeConfig { tee, ..Default::default() };
            let facts = HostFacts::read(Path::new("/"), qemu);
            match check(&config, &facts) {
                Ok(()) => eprintln!("{} looks available on this host", tee.name()),
                Err(e) => {
                    eprintln!("{e}");
                    assert!(!e.missing.is_empty() && e.to_string().contains("is not available on this host"));
                }
            }
        }
    }
}
