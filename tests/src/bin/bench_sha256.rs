//! `make bench`: in-guest SHA-256 throughput, portable block function vs SHA-NI, against
//! `sha256sum` on the host, as a ratio. The development image hashes a bulk transfer and logs
//! the time-stamp-counter cycles spent in SHA-256 alone (agent/src/dev.rs); under TCG and KVM
//! the guest's TSC runs at the host's rate, which is calibrated here. Prints a Markdown table.
use loader::vm::{self, Accel};
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
    let run = vm::run(&config, |r| r.bulk(&mut std::io::repeat(0x5A).take(TOTAL), TOTAL).map(|_| ()), |_| {}).ok()?;
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

    println!("in-guest SHA-256 of a 64 MiB bulk transfer (TSC cycles in the hasher, host TSC {:.0} MHz); host `sha256sum` {native_mbps:.0} MB/s (median of 5; host CPU SHA-NI: {host_sha_ni})\n", hz / 1e6);
    println!("| accelerator, -cpu | block function | MB/s | guest / sha256sum |");
    println!("|---|---|---|---|");
    let mut cases = vec![(Accel::Tcg, "qemu64"), (Accel::Tcg, "max")];
    if vm::kvm_usable() {
        cases.push((Accel::Kvm, "host,-arch-capabilities,-sha-ni"));
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
