//! `make bench`: SHA-256 throughput against `sha256sum` on the same host, as a ratio: in the
//! guest (the development image hashes a bulk transfer and logs the time-stamp-counter cycles
//! spent in SHA-256 alone, agent/src/dev.rs; under TCG and KVM the guest's TSC runs at the
//! host's rate, calibrated here), and the agent's own hashing code run natively on the host
//! with each block function (the speed a TEE guest, whose code runs on the CPU, gets; a plain
//! VM always uses the portable one). Prints a Markdown table.
use loader::vm::{self, Accel};
use agent::sha256::{Backend, Sha256, SOFTWARE};

#[allow(dead_code, unexpected_cfgs)]
#[path = "../../../agent/src/arch/sha256.rs"]
mod arch_sha256;

fn sha_ni(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    // SAFETY: used only when `arch_sha256::supported()` (checked by the caller).
    unsafe { arch_sha256::compress(state, blocks) }
}

/// MB/s of the agent's SHA-256 with `b`, natively (median of 5 passes over 64 MiB).
fn agent_mbps(b: Backend, data: &[u8]) -> f64 {
    let mut t = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        let mut h = Sha256::with(b);
        h.update(data);
        std::hint::black_box(h.finalize());
        t.push(s.elapsed());
    }
    t.sort();
    data.len() as f64 / t[2].as_secs_f64() / 1e6
}
use std::io::Read;
use std::time::{Duration, Instant};

const TOTAL: u64 = 64 << 20;

fn host_tsc_hz() -> f64 {
    // SAFETY: RDTSC only reads a counter.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    let s = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1 - t0) as f64 / s.elapsed().as_secs_f64()
}

/// (block function, hashing cycles) for one 64 MiB transfer.
fn guest(accel: Accel, cpu: &str) -> Option<(String, u64)> {
    let mut config = integration_tests::dev_vm_config(accel);
    config.memory_mib = 1024;
    config.extra_qemu_args = vec!["-cpu".into(), cpu.into()];
    let run = vm::run(&config, |r| r.bulk(&mut std::io::repeat(0x5A).take(TOTAL), TOTAL).map(|_| ()), |_| {})
        .map_err(|e| eprintln!("{accel:?} -cpu {cpu}: {e}"))
        .ok()?;
    let line = run.serial.lines().find(|l| l.contains("bulk in: "))?;
    let after = &line[line.find("SHA-256 (")? + 9..];
    let name = after[..after.find(')')?].to_string();
    let kcycles: u64 = after[after.find(") ")? + 2..].split_whitespace().next()?.parse().ok()?;
    Some((name, kcycles << 10))
}

fn main() {
    let hz = host_tsc_hz();
    let data = std::env::temp_dir().join(format!("nix-agent-bench-sha-{}", std::process::id()));
    std::fs::write(&data, vec![0x5Au8; TOTAL as usize]).unwrap();
    let mut native = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        let st = std::process::Command::new("sha256sum").arg(&data).stdout(std::process::Stdio::null()).status().unwrap();
        assert!(st.success());
        native.push(s.elapsed());
    }
    native.sort();
    let _ = std::fs::remove_file(&data);
    let native_mbps = TOTAL as f64 / native[native.len() / 2].as_secs_f64() / 1e6;
    let host_sha_ni = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().split_whitespace().any(|w| w == "sha_ni");

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("SHA-256 of 64 MiB, wall-clock (guest: TSC cycles in the hasher, host TSC {:.0} MHz); host `sha256sum` {native_mbps:.0} MB/s (median of 5; host CPU SHA-NI: {host_sha_ni}; load average {})\n", hz / 1e6, load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("| accelerator, -cpu | block function | MB/s | guest / sha256sum |");
    println!("|---|---|---|---|");
    let buf = vec![0x5Au8; TOTAL as usize];
    let soft = agent_mbps(SOFTWARE, &buf);
    // On Linux sha2 detects SHA-NI itself: this row is the agent's buffering around sha2's own
    // best block function, not the portable one (which the TCG rows measure).
    println!("| host, natively | agent's Sha256 over sha2::compress256 (sha2's own detection) | {soft:.0} | {:.3} |", soft / native_mbps);
    if arch_sha256::supported() {
        let hw = agent_mbps(Backend { name: "SHA-NI", blocks: sha_ni }, &buf);
        println!("| host, natively | agent's SHA-NI | {hw:.0} | {:.3} |", hw / native_mbps);
    }
    let mut cases = vec![(Accel::Tcg, "qemu64"), (Accel::Tcg, "max")];
    // KVM where it runs guests at hardware speed (not this project's PVM, which emulates a
    // plain guest's ring 0); a plain VM uses the portable block function either way.
    if vm::kvm_usable() && vm::kvm_fast() {
        cases.push((Accel::Kvm, "host,-arch-capabilities"));
    }
    for (accel, cpu) in cases {
        match guest(accel, cpu) {
            Some((name, cycles)) => {
                let mbps = TOTAL as f64 / (cycles as f64 / hz) / 1e6;
                println!("| {accel:?}, {cpu} | {name} | {mbps:.0} | {:.3} |", mbps / native_mbps);
            }
            None => println!("| {accel:?}, {cpu} | (did not run) | | |"),
        }
    }
}
