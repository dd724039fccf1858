//! One VM, one job: write the request disk, start QEMU, stream the response disk's frames as
//! the agent commits them, and stop QEMU on every exit path.
//!
//! The frames are parsed with the agent's own `agent::proto`, so both sides share one definition
//! of the wire format; the loader checks them as strictly as the agent does (a hostile guest is
//! not in our threat model, but a crashed one is).
use agent::channel::{DATA_OFFSET, SECTOR_SIZE, STREAM_MAGIC};
use agent::proto::{self, Type, HEADER_LEN};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which QEMU accelerator to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm is usable, runs guests at hardware speed and is not PVM; else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    /// Resolves `Auto`: KVM when it works, else TCG. "Works" means /dev/kvm opens read-write,
    /// is not PVM ([`kvm_is_pvm`]: sandboxed programs cannot make system calls under it) *and*
    /// a vCPU runs at hardware speed: some nested hosts offer a KVM that runs guest code 40x
    /// slower than TCG (see docs/channel.md). The verdict is cached for this host boot.
    pub fn resolve(self) -> Accel {
        self.choose().0
    }

    /// [`Accel::resolve`], with the reason when `Auto` does not pick KVM (for the user).
    pub fn choose(self) -> (Accel, Option<String>) {
        match self {
            Accel::Auto if !kvm_usable() => (Accel::Tcg, Some("/dev/kvm cannot be opened read-write: using TCG".into())),
            Accel::Auto if kvm_is_pvm() => (Accel::Tcg, Some("using TCG: /dev/kvm here is PVM (kvm_pvm), under which every sandboxed program dies at its first system call (docs/sandbox.md, \"KVM on a PVM host\")".into())),
            Accel::Auto if !kvm_fast() => {
                (Accel::Tcg, Some("using TCG: this host's KVM runs guest code slower than TCG (a 5 M-iteration probe took over 1 s; docs/channel.md)".into()))
            }
            Accel::Auto => (Accel::Kvm, None),
            other => (other, None),
        }
    }
}

/// Whether the host's KVM is PVM, the Pagetable-based Virtual Machine (Ant Group's `kvm_pvm`
/// module): a paravirtual hypervisor that runs guests at hardware CPL 3 without VMX or SVM.
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Why the sandbox cannot run under PVM (docs/sandbox.md, "KVM on a PVM host").
pub const PVM_EXPLANATION: &str = "/dev/kvm here is PVM (the kvm_pvm module: a paravirtual hypervisor that runs the whole guest at hardware CPL 3, no VMX/SVM). \
Under PVM the hardware's EFER.SCE is always set and its LSTAR is PVM's own switcher, so a sandboxed program's `syscall` never raises the #UD the agent relies on; \
PVM delivers it per its paravirtual ABI (to the guest's LSTAR, for a guest kernel that registered a PVM vCPU structure), which the agent is not, \
so the program faults at LSTAR in user mode (#PF, error 0x14/0x15) and dies with SIGSEGV at its first system call. Use --accel tcg (--accel auto picks it here)";

/// Environment variable that lets `exec` and `build` run under `--accel kvm` on a PVM host
/// anyway (to reproduce the fault above).
pub const ALLOW_PVM_ENV: &str = "NIX_AGENT_ALLOW_PVM";

/// Refuses to run sandboxed programs (Exec, Build) under explicitly requested KVM when that
/// KVM is PVM (`Auto` never picks it there).
pub fn check_sandbox_accel(config: &VmConfig) -> Result<(), VmError> {
    let allowed = std::env::var_os(ALLOW_PVM_ENV).is_some_and(|v| v == "1");
    if config.accel == Accel::Kvm && config.tee.tee == crate::tee::Tee::None && kvm_is_pvm() && !allowed {
        return Err(VmError::Pvm);
    }
    Ok(())
}

/// Whether /dev/kvm can be opened read-write.
pub fn kvm_usable() -> bool {
    OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Whether KVM runs a guest busy loop at hardware speed (cached per host boot).
pub fn kvm_fast() -> bool {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = std::env::temp_dir().join(format!("nix-agent-kvm-probe-{}", boot_id.trim()));
    if let Ok(v) = std::fs::read_to_string(&cache) {
        return v.trim() == "fast";
    }
    let fast = probe_kvm(Path::new("qemu-system-x86_64"));
    let _ = std::fs::write(&cache, if fast { "fast" } else { "slow" });
    fast
}

/// Runs a 64 KiB firmware whose reset vector counts down from 5,000,000 and exits: ~2 ms of guest
/// time on hardware-speed KVM, seconds on a pathological nested one. Fast = done within 1 s.
pub fn probe_kvm(qemu: &Path) -> bool {
    let mut rom = vec![0u8; 0x1_0000];
    // mov ecx, 5000000; 1: dec ecx; jnz 1b; mov al, 0; out 0xf4, al; hlt
    let code = [0x66, 0xB9, 0x40, 0x4B, 0x4C, 0x00, 0x66, 0x49, 0x75, 0xFC, 0xB0, 0x00, 0xE6, 0xF4, 0xF4];
    rom[0xFFF0..0xFFF0 + code.len()].copy_from_slice(&code);
    let path = std::env::temp_dir().join(format!("nix-agent-kvm-probe-{}.bin", std::process::id()));
    if std::fs::write(&path, &rom).is_err() {
        return false;
    }
    let start = Instant::now();
    let child = Command::new(qemu)
        .args(["-machine", "q35,accel=kvm", "-m", "64M", "-nodefaults", "-no-user-config", "-nographic"])
        .args(["-no-reboot", "-monitor", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-bios"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let fast = match child {
        Ok(child) => {
            let mut guard = QemuGuard(child);
            loop {
                match guard.0.try_wait() {
                    Ok(Some(status)) => break status.code() == Some(1) && start.elapsed() < Duration::from_secs(1),
                    Ok(None) if start.elapsed() < Duration::from_secs(1) => std::thread::sleep(Duration::from_millis(5)),
                    _ => break false,
                }
            }
        }
        Err(_) => false,
    };
    let _ = std::fs::remove_file(&path);
    fast
}

/// How to start the VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub agent: PathBuf,
    pub accel: Accel,
    pub memory_mib: u64,
    /// Size of the response disk (sparse on the host).
    pub response_bytes: u64,
    /// The total time limit of a run, from QEMU's start; `Duration::ZERO` (the default) means
    /// the accelerator's default, [`default_timeout`].
    pub timeout: Duration,
    /// The silence limit: a run that shows no sign of life for this long ends (no frame
    /// committed, no serial output, QEMU not computing: [`Liveness`]). Zero disables it.
    pub silence: Duration,
    pub qemu: PathBuf,
    /// Where the disks and the serial log go (a fresh temporary directory by default).
    pub work_dir: Option<PathBuf>,
    /// The TEE to launch the agent in (`none` by default; SNP and TDX need KVM on a host that
    /// supports them: docs/running-on-snp.md, docs/running-on-tdx.md).
    pub tee: crate::tee::TeeConfig,
    /// More QEMU arguments, appended last (tests: a gdbstub and a QMP socket, to deliver
    /// events at chosen instants).
    pub extra_qemu_args: Vec<String>,
    /// When set (by whoever holds the other end), the run stops: QEMU is killed and the run
    /// fails with [`VmError::Cancelled`] (`loader --serve`: the client closed the connection).
    pub cancel: Option<Arc<AtomicBool>>,
    /// A test hook: told when QEMU starts and of every frame and serial line as the loader
    /// sees them, so a test can stop or kill QEMU at a chosen phase of a job.
    pub observer: Option<Observer>,
    /// Ask the agent for its log on the serial port as well (the request disk's debug flag):
    /// every line as it is logged, even those a crash would otherwise lose; it costs VM exits.
    pub debug_serial: bool,
}

/// What an [`Observer`] is told, in order.
#[derive(Debug)]
pub enum VmEvent<'a> {
    /// QEMU's process started.
    Started { pid: u32 },
    /// A frame the agent committed (before the loader acts on it).
    Frame(&'a Frame),
    /// A log line of the agent (from its Log frames) or new text on the serial port.
    Serial(&'a str),
}

/// A callback on [`VmEvent`]s (see [`VmConfig::observer`]).
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<dyn Fn(&VmEvent<'_>) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// The total time limit when none is given: a run under KVM (which every TEE launch is) gets
/// 600 s, one under TCG 3600 s, because TCG emulates every guest instruction (5-40x slower
/// than hardware for a builder: docs/sandbox.md, "Performance"), so the same build takes that
/// much longer. docs/build.md, "Time limits".
pub fn default_timeout(accel: Accel, tee: crate::tee::Tee) -> Duration {
    match (accel, tee) {
        (_, crate::tee::Tee::Snp | crate::tee::Tee::Tdx) | (Accel::Kvm, _) => Duration::from_secs(600),
        _ => Duration::from_secs(3600),
    }
}

/// The default silence limit (docs/build.md, "Time limits").
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(60);

/// QEMU counts as computing over a window when it used at least this share of one CPU.
pub const BUSY_SHARE: f64 = 0.10;

/// How often QEMU's CPU use is sampled.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(5);

/// Tells a run that is alive from one that is stuck: alive while the agent commits response
/// bytes, writes to the serial log, or QEMU computes (uses at least [`BUSY_SHARE`] of a CPU
/// over a [`LIVENESS_WINDOW`]). A builder that computes for an hour without output is alive
/// (the total time limit bounds it); a QEMU that is stopped (SIGSTOP, a paused VM), or an
/// agent halted waiting for nothing, is silent.
#[derive(Debug)]
pub struct Liveness {
    last_sign: Instant,
    marks: (u64, u64),
    window: (Instant, Duration),
}

impl Liveness {
    pub fn new(now: Instant) -> Self {
        Liveness { last_sign: now, marks: (0, 0), window: (now, Duration::ZERO) }
    }

    /// Records what is seen at `now`: bytes of response and of serial log so far, and QEMU's
    /// CPU time so far (asked for once per window). Returns how long the run has been silent.
    pub fn observe(&mut self, response: u64, serial: u64, cpu: impl FnOnce() -> Duration, now: Instant) -> Duration {
        if (response, serial) != self.marks {
            self.marks = (response, serial);
            self.last_sign = now;
        }
        let (start, cpu_at_start) = self.window;
        let wall = now.saturating_duration_since(start);
        if wall >= LIVENESS_WINDOW {
            let cpu = cpu();
            if cpu.saturating_sub(cpu_at_start).as_secs_f64() >= BUSY_SHARE * wall.as_secs_f64() {
                self.last_sign = now;
            }
            self.window = (now, cpu);
        }
        now.saturating_duration_since(self.last_sign)
    }
}

/// The CPU time (user + system) a process has used, from /proc (zero if unreadable).
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces, inside parentheses): state is
    // field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The last `lines` lines of a serial log.
pub fn serial_tail(serial: &str, lines: usize) -> String {
    let all: Vec<&str> = serial.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut tail = String::new();
    if from > 0 {
        tail.push_str(&format!("[… {from} earlier lines]\n"));
    }
    tail.push_str(&all[from..].join("\n"));
    tail
}

/// How many serial lines an error carries.
const TAIL_LINES: usize = 40;

impl VmConfig {
    pub fn new(agent: impl Into<PathBuf>) -> Self {
        Self {
            agent: agent.into(),
            accel: Accel::Auto,
            memory_mib: 2048,
            response_bytes: 64 << 30,
            timeout: Duration::ZERO,
            silence: DEFAULT_SILENCE,
            qemu: PathBuf::from("qemu-system-x86_64"),
            work_dir: None,
            tee: crate::tee::TeeConfig::default(),
            extra_qemu_args: Vec::new(),
            cancel: None,
            observer: None,
            debug_serial: false,
        }
    }
}

/// Everything that can go wrong running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("starting QEMU ({qemu}): {source}")]
    Spawn { qemu: String, source: std::io::Error },
    #[error("QEMU failed ({status}): {stderr}")]
    Qemu { status: String, stderr: String },
    #[error("the agent stopped with {failure} (QEMU status {status}); the agent's log:\n{serial}")]
    AgentFailure { failure: String, status: i32, serial: String },
    #[error("cancelled {0}")]
    Cancelled(&'static str),
    /// The total time limit ended the run.
    #[error("the total time limit ended the run: the agent did not finish within {} s ({}); last lines of the agent's log:\n{tail}", limit.as_secs(), if *given { "--timeout" } else { "the default for this accelerator; raise it with --timeout" })]
    Timeout { limit: Duration, given: bool, tail: String },
    /// The silence limit ended the run.
    #[error("the silence limit ended the run: no sign of life for {} s (no frame from the agent, no serial output, QEMU not computing: stopped, paused or hung); last lines of the agent's log:\n{tail}", limit.as_secs())]
    Silent { limit: Duration, tail: String },
    #[error("malformed response from the agent: {0}")]
    Response(String),
    #[error("the agent stopped without saying Bye (QEMU status {status}): a platform failure (under SEV-SNP a termination request ends QEMU this way); the agent's log:\n{serial}")]
    NoBye { status: i32, serial: String },
    /// QEMU stopped the VM without exiting (see `qmp`): internal error, panic, I/O error.
    #[error("QEMU stopped the VM ({state}) without exiting: a platform failure; QEMU said: {stderr}; last lines of the agent's log:\n{serial}")]
    Stopped { state: String, stderr: String, serial: String },
    /// `--accel kvm` for a sandboxed program on a PVM host ([`check_sandbox_accel`]).
    #[error("--accel kvm cannot run sandboxed programs on this host: {PVM_EXPLANATION} (or set {ALLOW_PVM_ENV}=1 to see it fail)")]
    Pvm,
    /// The TEE asked for cannot be launched on this host (what is missing is listed).
    #[error(transparent)]
    Tee(#[from] crate::tee::Unavailable),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// Builds the request disk: a stream disk (see `agent::channel`) of frames.
pub struct Request {
    file: BufWriter<File>,
    path: PathBuf,
    len: u64,
    flags: u64,
}

impl Request {
    pub fn create(path: &Path) -> Result<Self, VmError> {
        let mut file = File::create(path).map_err(io(format!("creating {}", path.display())))?;
        file.seek(SeekFrom::Start(DATA_OFFSET)).map_err(io("seeking request disk"))?;
        Ok(Self { file: BufWriter::with_capacity(1 << 20, file), path: path.to_path_buf(), len: 0, flags: 0 })
    }

    /// Appends raw bytes (used by tests to send malformed frames).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<&mut Self, VmError> {
        self.file.write_all(bytes).map_err(io("writing request disk"))?;
        self.len += bytes.len() as u64;
        Ok(self)
    }

    /// Appends one frame.
    pub fn frame(&mut self, ty: Type, payload: &[u8]) -> Result<&mut Self, VmError> {
        self.raw(&proto::frame(ty, payload))
    }

    /// Appends a bulk transfer (BulkBegin + BulkData frames) read from `data`.
    pub fn bulk(&mut self, data: &mut dyn Read, total: u64) -> Result<&mut Self, VmError> {
        self.frame(Type::BulkBegin, &total.to_le_bytes())?;
        let mut buf = vec![0u8; proto::MAX_PAYLOAD];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            data.read_exact(&mut buf[..n]).map_err(io("reading bulk data"))?;
            self.frame(Type::BulkData, &buf[..n])?;
            left -= n as u64;
        }
        Ok(self)
    }

    /// Sets the header's flags (`agent::channel::FLAG_DEBUG_SERIAL`).
    pub fn set_flags(&mut self, flags: u64) {
        self.flags = flags;
    }

    /// Writes the stream header and pads the disk to whole sectors.
    pub fn finish(mut self) -> Result<PathBuf, VmError> {
        self.file.flush().map_err(io("writing request disk"))?;
        let mut file = self.file.into_inner().map_err(|e| VmError::Io { what: "flushing request disk".into(), source: e.into_error() })?;
        let end = (DATA_OFFSET + self.len).next_multiple_of(SECTOR_SIZE as u64);
        file.set_len(end.max(DATA_OFFSET + SECTOR_SIZE as u64)).map_err(io("sizing request disk"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seeking request disk"))?;
        let mut head = [0u8; 24];
        head[..8].copy_from_slice(&STREAM_MAGIC);
        head[8..16].copy_from_slice(&self.len.to_le_bytes());
        head[16..].copy_from_slice(&self.flags.to_le_bytes());
        file.write_all(&head).map_err(io("writing request disk"))?;
        Ok(self.path)
    }
}

/// A frame received from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ty: Type,
    pub payload: Vec<u8>,
}

/// Timings of one run.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// QEMU start → the agent's Hello frame is committed.
    pub boot_to_ready: Duration,
    /// QEMU start → QEMU exited.
    pub total: Duration,
}

/// The outcome of a run whose agent said Bye.
#[derive(Debug)]
pub struct Run {
    /// Every frame but `Log` (those are in `serial`).
    pub frames: Vec<Frame>,
    pub timings: Timings,
    /// The agent's log: the lines its `Log` frames carried (as `[LEVEL] text`), then whatever
    /// it wrote to the serial port (a debug log, a fatal error).
    pub serial: String,
    pub accel: Accel,
}

/// The agent's log as a kept work directory (`--work-dir`) holds it: `agent.log` (the lines of
/// its Log frames), then `serial.log` (the serial port: `--debug-serial`, a fatal error) — the
/// same text as [`Run::serial`]. Missing files read as empty.
pub fn work_dir_log(dir: &Path) -> String {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    read("agent.log") + &read("serial.log")
}

/// A `Log` frame as a line of the agent's log (`[LEVEL] text`), or None for another frame.
pub fn log_line(f: &Frame) -> Option<String> {
    if f.ty != Type::Log {
        return None;
    }
    let (level, text) = f.payload.split_first()?;
    Some(format!("[{:5}] {}", agent::logring::level_name(*level), String::from_utf8_lossy(text)))
}

/// Kills QEMU when dropped, whatever path we leave by.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the response disk incrementally.
struct ResponseReader {
    file: File,
    pos: u64,
    pending: Vec<u8>,
}

impl ResponseReader {
    /// Reads newly committed bytes and returns the complete frames among them.
    fn poll(&mut self) -> Result<Vec<Frame>, VmError> {
        let mut head = [0u8; 16];
        self.file.seek(SeekFrom::Start(0)).map_err(io("reading response disk"))?;
        self.file.read_exact(&mut head).map_err(io("reading response disk"))?;
        if head[..8] != STREAM_MAGIC {
            return Ok(Vec::new()); // not initialised by the agent yet
        }
        let committed = u64::from_le_bytes(head[8..].try_into().unwrap());
        if committed > self.pos {
            let mut new = vec![0u8; (committed - self.pos) as usize];
            self.file.seek(SeekFrom::Start(DATA_OFFSET + self.pos)).map_err(io("reading response disk"))?;
            self.file.read_exact(&mut new).map_err(io("reading response disk"))?;
            self.pending.extend_from_slice(&new);
            self.pos = committed;
        }
        let mut frames = Vec::new();
        let mut off = 0;
        while self.pending.len() - off >= HEADER_LEN {
            let h: [u8; HEADER_LEN] = self.pending[off..off + HEADER_LEN].try_into().unwrap();
            let header = proto::decode_header(&h).map_err(|e| VmError::Response(format!("{e:?} at byte {}", self.pos)))?;
            let total = HEADER_LEN + proto::padded(header.len);
            if self.pending.len() - off < total {
                break;
            }
            frames.push(Frame { ty: header.ty, payload: self.pending[off + HEADER_LEN..off + HEADER_LEN + header.len].to_vec() });
            off += total;
        }
        self.pending.drain(..off);
        Ok(frames)
    }
}

/// The text of a file from byte `from` on (lossy UTF-8).
fn read_from(path: &Path, from: u64) -> Option<String> {
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Failure codes the agent reports through isa-debug-exit (agent `arch::power::Failure`).
fn describe_failure(code: i32) -> String {
    match code {
        0x10 => "a panic".into(),
        0x11 => "out of memory".into(),
        0x12 => "a platform (SEV-SNP/TDX) failure: memory acceptance, sharing or a #VC/#VE the agent could not handle".into(),
        0x20..=0x3F => format!("CPU exception vector {}", code - 0x20),
        other => format!("failure code {other:#x}"),
    }
}

/// Properties of every virtio device: modern-only, behind the platform's DMA translation. QEMU
/// forces exactly these for a confidential guest (`disable-legacy=on,iommu_platform=on`:
/// `virtio_pci_realize` for SEV-SNP and TDX machines), so the device offers
/// VIRTIO_F_ACCESS_PLATFORM (bit 33) and refuses FEATURES_OK from a driver that does not accept
/// it. Setting them on a plain VM too makes every test negotiate as a confidential guest must.
///
/// `vectors=0`: no MSI-X (the agent polls; one capability fewer to walk, one VM exit per disk);
/// each disk at a fixed slot (`addr=`), the first two the agent's bus scan reaches.
pub const VIRTIO_PROPERTIES: &str = "disable-legacy=on,iommu_platform=on,vectors=0";

/// The QEMU command line: the fewest devices that do the job. `qmp`, when given, is the UNIX
/// socket QEMU's QMP server listens on (the loader watches the run state through it).
pub fn qemu_command(config: &VmConfig, accel: Accel, request: &Path, response: &Path, serial: &Path) -> Command {
    qemu_command_with_qmp(config, accel, request, response, serial, None)
}

/// [`qemu_command`] with a QMP socket.
pub fn qemu_command_with_qmp(config: &VmConfig, accel: Accel, request: &Path, response: &Path, serial: &Path, qmp: Option<&Path>) -> Command {
    let mut cmd = Command::new(&config.qemu);
    let (accel_arg, cpu) = match accel {
        // `arch-capabilities` is masked: some (nested) KVM hosts refuse the MSR QEMU would set.
        Accel::Kvm => ("kvm", "host,-arch-capabilities"),
        _ => ("tcg", "max"),
    };
    let tee = crate::tee::qemu_args(&config.tee, config.memory_mib);
    cmd.args(["-machine", &tee.machine_arg(accel_arg), "-cpu", tee.cpu_arg(cpu)])
        .args(tee.object_args())
        .args(["-m", &format!("{}M", config.memory_mib), "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-bios")
        .arg(&config.agent)
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=request,readonly=on", request.display()))
        .arg("-device")
        .arg(format!("virtio-blk-pci,drive=request,addr=0x1,{VIRTIO_PROPERTIES}"))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=response", response.display()))
        .arg("-device")
        .arg(format!("virtio-blk-pci,drive=response,addr=0x2,{VIRTIO_PROPERTIES}"))
        // A guest panic (a TD's ReportFatalError, an SNP guest's termination request reported
        // as a panic) ends QEMU with a failure status instead of pausing it.
        .args(["-action", "panic=exit-failure"])
        .args(&config.extra_qemu_args);
    if let Some(q) = qmp {
        cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", q.display()));
    }
    cmd
}

/// A directory removed on drop (unless the caller chose the directory).
struct WorkDir {
    path: PathBuf,
    owned: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn work_dir(config: &VmConfig) -> Result<WorkDir, VmError> {
    match &config.work_dir {
        Some(p) => {
            std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))?;
            Ok(WorkDir { path: p.clone(), owned: false })
        }
        None => {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("nix-agent-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
            Ok(WorkDir { path: p, owned: true })
        }
    }
}

/// Runs one VM: `build_request` writes the request; `on_frame` sees every response frame as the
/// agent commits it (for streaming output and progress), except the agent's `Log` frames,
/// which become the run's log (`Run::serial`, and agent.log in the work directory).
pub fn run(
    config: &VmConfig,
    build_request: impl FnOnce(&mut Request) -> Result<(), VmError>,
    mut on_frame: impl FnMut(&Frame),
) -> Result<Run, VmError> {
    let dir = work_dir(config)?;
    let request_path = dir.path.join("request.img");
    let response_path = dir.path.join("response.img");
    let serial_path = dir.path.join("serial.log");
    let log_path = dir.path.join("agent.log");
    let mut request = Request::create(&request_path)?;
    if config.debug_serial {
        request.set_flags(agent::channel::FLAG_DEBUG_SERIAL);
    }
    build_request(&mut request)?;
    request.finish()?;
    let response = File::create(&response_path).map_err(io("creating response disk"))?;
    response.set_len(DATA_OFFSET + config.response_bytes).map_err(io("sizing response disk"))?;
    // A TEE needs KVM and host support: say what is missing before starting anything.
    let accel = if config.tee.tee == crate::tee::Tee::None { config.accel.resolve() } else { Accel::Kvm };
    crate::tee::require_kvm(config.tee.tee, accel == Accel::Kvm)?;
    crate::tee::check_host(&config.tee, &config.qemu)?;

    let cancelled = || config.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst));
    if cancelled() {
        return Err(VmError::Cancelled("before QEMU started"));
    }
    let qmp_path = dir.path.join("qmp.sock");
    let stderr_path = dir.path.join("qemu.stderr");
    let stderr_file = File::create(&stderr_path).map_err(io("creating QEMU's stderr log"))?;
    let start = Instant::now();
    let child = qemu_command_with_qmp(config, accel, &request_path, &response_path, &serial_path, Some(&qmp_path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .map_err(|source| VmError::Spawn { qemu: config.qemu.display().to_string(), source })?;
    let pid = child.id();
    let mut guard = QemuGuard(child);
    let observe = |e: &VmEvent<'_>| {
        if let Some(o) = &config.observer {
            (o.0)(e)
        }
    };
    observe(&VmEvent::Started { pid });
    let timeout = if config.timeout.is_zero() { default_timeout(accel, config.tee.tee) } else { config.timeout };
    let mut liveness = Liveness::new(start);
    let mut serial_seen = 0u64;
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    // QMP is a watchdog, not a dependency: without it the timeout still ends the run.
    let mut qmp = crate::qmp::Qmp::connect(&qmp_path, start + Duration::from_secs(5)).ok();
    let mut stopped = crate::qmp::StopWatch::default();
    let mut last_status = start;
    let mut reader = ResponseReader {
        file: File::open(&response_path).map_err(io("opening response disk"))?,
        pos: 0,
        pending: Vec::new(),
    };
    let mut frames = Vec::new();
    let mut timings = Timings::default();
    // The agent's log lines (Log frames) go to agent.log in the work directory as they arrive
    // (unbuffered); the run's `serial` is that file, then the serial port's (`work_dir_log`).
    let mut log_file = File::create(&log_path).map_err(io("creating agent.log"))?;
    let serial = || work_dir_log(&dir.path);
    let mut handle = |new: Vec<Frame>, frames: &mut Vec<Frame>, timings: &mut Timings| {
        for f in new {
            if f.ty == Type::Hello && timings.boot_to_ready.is_zero() {
                timings.boot_to_ready = start.elapsed();
            }
            if let Some(line) = log_line(&f) {
                let _ = writeln!(log_file, "{line}");
                observe(&VmEvent::Serial(&line));
                continue; // the log is the run's `serial`, not one of its frames
            }
            observe(&VmEvent::Frame(&f));
            on_frame(&f);
            frames.push(f);
        }
    };
    let status: ExitStatus = loop {
        let new = reader.poll()?;
        handle(new, &mut frames, &mut timings);
        let serial_len = std::fs::metadata(&serial_path).map(|m| m.len()).unwrap_or(0);
        if config.observer.is_some() && serial_len > serial_seen {
            if let Some(text) = read_from(&serial_path, serial_seen) {
                observe(&VmEvent::Serial(&text));
            }
        }
        serial_seen = serial_len;
        if let Some(status) = guard.0.try_wait().map_err(io("waiting for QEMU"))? {
            break status;
        }
        if start.elapsed() > timeout {
            return Err(VmError::Timeout { limit: timeout, given: !config.timeout.is_zero(), tail: serial_tail(&serial(), TAIL_LINES) });
        }
        let silent = liveness.observe(reader.pos, serial_len, || cpu_time(pid), Instant::now());
        if !config.silence.is_zero() && silent >= config.silence {
            return Err(VmError::Silent { limit: config.silence, tail: serial_tail(&serial(), TAIL_LINES) });
        }
        if cancelled() {
            return Err(VmError::Cancelled("while the agent ran (QEMU stopped)"));
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            match qmp.as_mut().map(|q| q.status()) {
                Some(Ok(state)) => {
                    if let Some(state) = stopped.observe(&state, Instant::now()) {
                        if guard.0.try_wait().map_err(io("waiting for QEMU"))?.is_none() {
                            return Err(VmError::Stopped { state, stderr: stderr(), serial: serial_tail(&serial(), TAIL_LINES) });
                        }
                    }
                }
                // QEMU closing the socket is QEMU exiting: the next try_wait sees it.
                Some(Err(_)) => qmp = None,
                None => {}
            }
        }
        std::thread::sleep(Duration::from_micros(if frames.is_empty() { 200 } else { 1000 }));
    };
    timings.total = start.elapsed();
    let new = reader.poll()?;
    handle(new, &mut frames, &mut timings);
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        if code & 1 == 1 && code > 1 {
            return Err(VmError::AgentFailure { failure: describe_failure(code >> 1), status: code, serial: serial() });
        }
        return Err(VmError::Qemu { status: format!("{status}"), stderr: stderr() });
    }
    if frames.last().map(|f| f.ty) != Some(Type::Bye) {
        return Err(VmError::NoBye { status: code, serial: serial() });
    }
    Ok(Run { frames, timings, serial: serial(), accel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tee::Tee;

    #[test]
    fn the_default_time_limit_is_scaled_to_the_accelerator() {
        assert_eq!(default_timeout(Accel::Kvm, Tee::None), Duration::from_secs(600));
        assert_eq!(default_timeout(Accel::Tcg, Tee::None), Duration::from_secs(3600));
        // A TEE is always launched under KVM, whatever the accelerator asked for.
        for accel in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(default_timeout(accel, Tee::Snp), Duration::from_secs(600));
            assert_eq!(default_timeout(accel, Tee::Tdx), Duration::from_secs(600));
        }
        assert!(VmConfig::new("agent.bin").timeout.is_zero(), "no limit given: the accelerator's default");
        assert_eq!(VmConfig::new("agent.bin").silence, DEFAULT_SILENCE);
    }

    #[test]
    fn liveness_counts_output_serial_and_computing_qemu_as_signs_of_life() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let cpu = |n: u64| move || Duration::from_secs(n);
        // QEMU stopped: nothing moves, silence grows with the wall clock.
        let mut l = Liveness::new(t0);
        assert_eq!(l.observe(0, 0, cpu(0), s(30)), Duration::from_secs(30));
        assert_eq!(l.observe(0, 0, cpu(0), s(61)), Duration::from_secs(61));
        // A frame or a serial line resets it.
        assert_eq!(l.observe(100, 0, cpu(0), s(62)), Duration::ZERO);
        assert_eq!(l.observe(100, 10, cpu(0), s(70)), Duration::ZERO);
        assert_eq!(l.observe(100, 10, cpu(0), s(80)), Duration::from_secs(10));
        // A quiet builder that computes (QEMU busy) is alive; an idle QEMU (under 10 % of a
        // CPU over each window) is not.
        let mut l = Liveness::new(t0);
        for n in (5..=300).step_by(5) {
            assert_eq!(l.observe(0, 0, cpu(n / 2), s(n)), Duration::ZERO, "busy at {n} s");
        }
        let idle = Duration::from_secs(150);
        let mut silent = Duration::ZERO;
        for n in (305..=400).step_by(5) {
            silent = l.observe(0, 0, || idle + Duration::from_millis(n - 300), s(n));
        }
        assert_eq!(silent, Duration::from_secs(100));
    }

    #[test]
    fn a_serial_tail_is_the_last_lines() {
        let log: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let tail = serial_tail(&log, 3);
        assert_eq!(tail, "[… 97 earlier lines]\nline 98\nline 99\nline 100");
        assert_eq!(serial_tail("a\nb\n", 40), "a\nb");
    }

    #[test]
    fn the_cpu_time_of_a_running_process_is_read_from_proc() {
        let me = std::process::id();
        let before = cpu_time(me);
        let t = Instant::now();
        let mut x = 0u64;
        // Spin until /proc shows the time used (a loaded machine may give this thread little).
        while cpu_time(me) < before + Duration::from_millis(100) && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(cpu_time(me) >= before + Duration::from_millis(100), "{before:?} -> {:?}", cpu_time(me));
        assert_eq!(cpu_time(u32::MAX), Duration::ZERO);
    }
}
