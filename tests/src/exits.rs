//! Counting a VM's device exits: every port I/O and MMIO access the vCPU makes that leaves the
//! guest (under SEV-SNP and TDX each is a #VC/#VE round trip through the hypervisor and QEMU).
//!
//! Method: KVM's tracepoints `kvm/kvm_pio` and `kvm/kvm_mmio`, in a trace instance of our own
//! (tracefs at /sys/kernel/tracing, mounted if needed; root only), filtered to the QEMU
//! process of the run (its pid from QEMU's `-pidfile`, matched against the events' TGID). A
//! port access is one `kvm_pio` event. An MMIO write is one `kvm_mmio` "write" event; an MMIO
//! read that goes to QEMU is an "unsatisfied-read" event at the exit and a "read" event when
//! the value comes back, so a "read" right after an "unsatisfied-read" of the same address is
//! the same exit and is not counted again (a read the kernel answers itself, e.g. the local
//! APIC's, is a lone "read" and is counted).
use loader::vm::{Accel, Frame, Run, VmConfig, VmError};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";

/// The exits of one run, and each as the trace line says it.
#[derive(Debug, Default, Clone)]
pub struct Exits {
    pub pio: usize,
    pub mmio: usize,
    /// `pio_write at 0x70 size 1`, `mmio write len 8 gpa 0xb0008020`, …
    pub accesses: Vec<String>,
}

impl Exits {
    pub fn total(&self) -> usize {
        self.pio + self.mmio
    }
}

/// A trace instance recording KVM's port and MMIO events.
struct Instance(PathBuf);

impl Instance {
    fn new() -> Result<Instance, String> {
        let root = Path::new(TRACEFS);
        if !root.join("instances").exists() {
            let _ = std::process::Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]).status();
        }
        if !root.join("events/kvm/kvm_pio").exists() {
            return Err(format!("no KVM tracepoints under {TRACEFS} (tracefs not mountable here, or not root, or no kvm module)"));
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = root.join("instances").join(format!("nix-agent-exits-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::create_dir(&dir).map_err(|e| format!("creating the trace instance {}: {e}", dir.display()))?;
        let inst = Instance(dir);
        for (file, value) in [("options/record-tgid", "1"), ("buffer_size_kb", "16384"), ("events/kvm/kvm_pio/enable", "1"), ("events/kvm/kvm_mmio/enable", "1")] {
            std::fs::write(inst.0.join(file), value).map_err(|e| format!("{file}: {e}"))?;
        }
        Ok(inst)
    }

    /// The exits the process `tgid` made since the instance was created.
    fn exits(&self, tgid: u32) -> Result<Exits, String> {
        let trace = std::fs::read_to_string(self.0.join("trace")).map_err(|e| format!("reading the trace: {e}"))?;
        Ok(count(&trace, tgid))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for f in ["events/kvm/kvm_pio/enable", "events/kvm/kvm_mmio/enable"] {
            let _ = std::fs::write(self.0.join(f), "0");
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Counts the exits of process `tgid` in a trace (the `trace` file's text, with TGIDs).
pub fn count(trace: &str, tgid: u32) -> Exits {
    let mut e = Exits::default();
    let tag = format!("({tgid:>7})");
    let mut pending_read: Option<String> = None;
    for line in trace.lines() {
        if !line.contains(&tag) {
            continue;
        }
        if let Some(i) = line.find("kvm_pio: ") {
            let what = line[i + 9..].split(" count").next().unwrap_or("").trim().to_string();
            e.pio += 1;
            e.accesses.push(what);
            pending_read = None;
        } else if let Some(i) = line.find("kvm_mmio: ") {
            let what = line[i + 10..].split(" val").next().unwrap_or("").trim().to_string();
            if let Some(rest) = what.strip_prefix("mmio unsatisfied-read ") {
                pending_read = Some(rest.to_string());
            } else if let Some(rest) = what.strip_prefix("mmio read ") {
                if pending_read.take().as_deref() == Some(rest) {
                    continue; // the completion of the exit counted at "unsatisfied-read"
                }
            } else {
                pending_read = None;
            }
            e.mmio += 1;
            e.accesses.push(what);
        }
    }
    e
}

/// Why exits cannot be counted here (the tests skip with it).
pub fn unavailable() -> Option<String> {
    if !loader::vm::kvm_usable() {
        return Some("/dev/kvm is not usable".into());
    }
    Instance::new().err()
}

/// Runs `f` with `config` forced to KVM and counts the device exits of the QEMU it starts
/// (one VM: its pid is read from the `-pidfile` QEMU writes at start, by a watcher thread,
/// since QEMU removes the file when it exits).
pub fn counted<R>(config: &VmConfig, f: impl FnOnce(&VmConfig) -> R) -> Result<(R, Exits), String> {
    let inst = Instance::new()?;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pidfile = std::env::temp_dir().join(format!("nix-agent-exits-{}-{}.pid", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let _ = std::fs::remove_file(&pidfile);
    let mut c = config.clone();
    c.accel = Accel::Kvm;
    c.extra_qemu_args.extend(["-pidfile".to_string(), pidfile.display().to_string()]);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (pidfile, done) = (pidfile.clone(), done.clone());
        std::thread::spawn(move || loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                return Some(pid);
            }
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        })
    };
    let r = f(&c);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let pid = watcher.join().ok().flatten().ok_or("QEMU's pid (its -pidfile) was never readable")?;
    let _ = std::fs::remove_file(&pidfile);
    Ok((r, inst.exits(pid)?))
}

/// One VM run (as `vm::run`) under KVM, counted.
pub fn run(config: &VmConfig, build_request: impl FnOnce(&mut loader::vm::Request) -> Result<(), VmError>) -> Result<(Result<Run, VmError>, Exits), String> {
    counted(config, |c| loader::vm::run(c, build_request, |_: &Frame| {}))
}

/// Boot → Hello → Ping → Pong → Shutdown → Bye → power-off, counted.
pub fn boot_and_ping(config: &VmConfig) -> Result<Exits, String> {
    let (run, exits) = run(config, |r| {
        r.frame(agent::proto::Type::Ping, b"exits")?;
        r.frame(agent::proto::Type::Shutdown, b"")?;
        Ok(())
    })?;
    let run = run.map_err(|e| format!("the run failed: {e}"))?;
    if !run.frames.iter().any(|f| f.ty == agent::proto::Type::Pong) {
        return Err("no Pong".into());
    }
    Ok(exits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_and_its_completion_are_one_exit() {
        let trace = "\
 qemu-system-x86-19454   (  19450) [000] .....   852.1: kvm_pio: pio_write at 0x70 size 1 count 1 val 0x35
 qemu-system-x86-19454   (  19450) [000] .....   852.2: kvm_mmio: mmio unsatisfied-read len 8 gpa 0xb0008000 val 0x0
 qemu-system-x86-19454   (  19450) [000] .....   852.3: kvm_mmio: mmio read len 8 gpa 0xb0008000 val 0x1
 qemu-system-x86-19999   (  19990) [000] .....   852.4: kvm_mmio: mmio write len 2 gpa 0xc0103000 val 0x0
 qemu-system-x86-19454   (  19450) [000] .....   852.5: kvm_mmio: mmio read len 4 gpa 0xfee00390 val 0x5
 qemu-system-x86-19454   (  19450) [000] .....   852.6: kvm_mmio: mmio write len 2 gpa 0xc0103000 val 0x0
";
        let e = count(trace, 19450);
        assert_eq!((e.pio, e.mmio), (1, 3), "{:?}", e.accesses);
        assert_eq!(e.accesses[1], "mmio unsatisfied-read len 8 gpa 0xb0008000");
        assert_eq!(e.accesses[2], "mmio read len 4 gpa 0xfee00390");
    }
}

/// A trivial build (`ok.single-file` of the end-to-end corpus: `echo hello > $out`) with the
/// attested image under KVM, counted. `Ok(None)`: there is nothing to count on this host, a PVM
/// one, where `loader build --accel kvm` is refused before QEMU starts (ring 3 dies at its first
/// system call there: docs/sandbox.md). A build that does not finish within `timeout` is
/// counted up to then (the caller gets its error).
pub fn trivial_build(timeout: std::time::Duration) -> Result<Option<(Result<loader::build::BuildReport, loader::build::BuildError>, Exits)>, String> {
    if loader::vm::kvm_is_pvm() {
        return Ok(None);
    }
    let drv = crate::e2e::instantiate("ok.single-file");
    let out = std::env::temp_dir().join(format!("nix-agent-exits-build-{}", std::process::id()));
    let mut config = crate::vm_config(Accel::Kvm);
    config.timeout = timeout;
    let counted = counted(&config, |c| loader::build::build(c, &drv, &out, |_, _| {}, |_| {}));
    let _ = std::fs::remove_dir_all(&out);
    counted.map(Some)
}
