//! `make bench`: busybox workloads in the sandbox against the same commands natively, in one run
//! on this machine. Prints a Markdown table of medians and ratios.
//!
//! Inputs are made inside the command (seq output, /dev/zero), so both sides hash and compress
//! the same bytes; the outputs (hashes) must agree or the run fails. The sandbox has one vCPU,
//! so the native command is also run pinned to one CPU (`taskset -c 0`), the fair comparison;
//! unpinned, busybox's pipeline stages run in parallel. Sandbox times are QEMU start to exit
//! (boot, sending busybox, the command, power-off); the agent's boot to Hello is shown apart.
//!
//! `BENCH_RUNS` (default 3) runs per measure. Under TCG every guest instruction is emulated;
//! when /dev/kvm opens, the workloads run under KVM too (`BENCH_KVM_TIMEOUT` seconds at most
//! per run, default 900: some nested KVM hosts are far slower than TCG).
use agent::exec::Requested;
use loader::vm::{self, Accel, VmConfig};
use loader::ExecOptions;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKLOADS: &[(&str, &str)] = &[
    ("`gzip -9` of 64 MiB (seq output)", "seq 9000000 | head -c 67108864 | gzip -9 | sha256sum"),
    ("`sha256sum` of 512 MiB (/dev/zero)", "head -c 536870912 /dev/zero | sha256sum"),
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The command natively, optionally pinned to CPU 0: (wall time, stdout).
fn native(script: &str, pinned: bool) -> (Duration, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("bench-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = if pinned {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", "0", "/bin/busybox"]);
        c
    } else {
        Command::new("/bin/busybox")
    };
    let start = Instant::now();
    let out = cmd.args(["sh", "-c", script]).current_dir(&dir).env_clear().env("PATH", "/path-not-set").stdin(Stdio::null()).output().unwrap();
    let t = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "native {script}: {}", String::from_utf8_lossy(&out.stderr));
    (t, out.stdout)
}

/// The command in a fresh agent: (QEMU start to exit, boot to Hello, stdout), or why not.
fn sandboxed(config: &VmConfig, busybox: &[u8], script: &str) -> Result<(Duration, Duration, Vec<u8>), String> {
    // An hour of CPU: TCG takes tens of seconds where the default limit is 60 s.
    let options = ExecOptions { limits: Requested { cpu_ticks: 3600 * 100, ..Default::default() }, ..Default::default() };
    let run = vm::run(config, |r| loader::exec_request(r, busybox, &["busybox", "sh", "-c", script], &options), |_| {}).map_err(|e| {
        let text = e.to_string();
        text.lines().next().unwrap_or_default().to_string()
    })?;
    let r = loader::ExecResult::from_frames(&run.frames);
    if r.status != 0 || !r.errors.is_empty() {
        let note = run.serial.lines().filter(|l| l.contains("sandbox:")).last().unwrap_or_default().trim_start_matches("[WARN ] sandbox: ").to_string();
        return Err(format!("status {} {:?} ({note})", r.status, r.errors));
    }
    Ok((run.timings.total, run.timings.boot_to_ready, r.stdout))
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let kvm_timeout = std::env::var("BENCH_KVM_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(900);
    let busybox = std::fs::read("/bin/busybox").expect("apt: busybox-static");
    let mut tcg = VmConfig::new(integration_tests::dev_agent_bin());
    tcg.accel = Accel::Tcg;
    tcg.memory_mib = 1024;
    tcg.response_bytes = 64 << 20;
    tcg.timeout = Duration::from_secs(1800);
    // Not on PVM: sandboxed programs cannot make system calls there (docs/sandbox.md).
    let kvm = (vm::kvm_usable() && !vm::kvm_is_pvm()).then(|| VmConfig { accel: Accel::Kvm, timeout: Duration::from_secs(kvm_timeout), ..tcg.clone() });

    let mut rows = Vec::new();
    let mut boots = Vec::new();
    let mut kvm_boots = Vec::new();
    for (name, script) in WORKLOADS {
        eprintln!("bench: {name}");
        let (mut n1, mut n, mut s) = (Vec::new(), Vec::new(), Vec::new());
        let mut want = None;
        for _ in 0..runs {
            let (t, out) = native(script, true);
            n1.push(t);
            n.push(native(script, false).0);
            want.get_or_insert(out);
            let (t, boot, out) = sandboxed(&tcg, &busybox, script).unwrap_or_else(|e| panic!("{name} under TCG: {e}"));
            assert_eq!(Some(&out), want.as_ref(), "{name}: the sandbox's output differs from native");
            s.push(t);
            boots.push(boot);
        }
        let kvm_cell = match &kvm {
            None => "/dev/kvm not usable (or PVM)".to_string(),
            Some(c) => {
                let mut k = Vec::new();
                let mut failed = None;
                for _ in 0..runs {
                    match sandboxed(c, &busybox, script) {
                        Ok((t, boot, out)) => {
                            assert_eq!(Some(&out), want.as_ref(), "{name}: the sandbox's output (KVM) differs from native");
                            k.push(t);
                            kvm_boots.push(boot);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => format!("did not finish: {e}"),
                    None => {
                        let k = median(k);
                        format!("{} ({:.1}x)", secs(k), k.as_secs_f64() / median(n1.clone()).as_secs_f64())
                    }
                }
            }
        };
        let (n1, n, s) = (median(n1), median(n), median(s));
        rows.push(format!(
            "| {name} | {} | {} | {} | {:.1}x | {kvm_cell} |",
            secs(n1),
            secs(n),
            secs(s),
            s.as_secs_f64() / n1.as_secs_f64()
        ));
    }
    println!("busybox 1.35 (Debian busybox-static) in the sandbox vs natively; medians of {runs} runs; the same output hashes on both sides\n");
    println!("| workload | native, 1 CPU | native, all CPUs | sandbox, TCG | TCG / native 1 CPU | sandbox, KVM (/ native 1 CPU) |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("\nQEMU start to the agent's Hello (included in the sandbox times): TCG median {:.0} ms", median(boots).as_secs_f64() * 1e3);
    if !kvm_boots.is_empty() {
        println!("; KVM median {:.0} ms", median(kvm_boots).as_secs_f64() * 1e3);
    }
}
