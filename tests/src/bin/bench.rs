//! `make bench`: boot-to-ready vs a null firmware, and channel throughput, measured side by side
//! in one run on the same QEMU machine type and accelerator. Prints a Markdown table.
use agent::proto::Type;
use loader::vm::{self, Accel, VmConfig};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A 64 KiB firmware whose reset vector only exits (isa-debug-exit): QEMU's own start-up cost.
fn null_firmware() -> std::path::PathBuf {
    let mut rom = vec![0u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xB0, 0x00, 0xE6, 0xF4, 0xF4]); // mov al,0; out 0xf4,al; hlt
    let p = std::env::temp_dir().join("nix-agent-null-firmware.bin");
    std::fs::write(&p, rom).unwrap();
    p
}

fn main() {
    let agent = integration_tests::dev_agent_bin();
    let accel = Accel::Auto.resolve();
    let mut config = VmConfig::new(&agent);
    config.accel = accel;
    config.memory_mib = 1024;
    // BENCH_RUNS=N: cold starts per image (default 20; 1 for a quick look at the throughput).
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(1);

    // Cold starts: the agent to its Hello frame vs the null firmware to its exit, interleaved.
    let null = null_firmware();
    let dir = std::env::temp_dir().join(format!("nix-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (req, resp, serial) = (dir.join("req.img"), dir.join("resp.img"), dir.join("serial.log"));
    std::fs::write(&req, vec![0u8; 8192]).unwrap();
    std::fs::write(&resp, vec![0u8; 8192]).unwrap();
    let (mut agent_t, mut null_t) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let r = loader::ping(&config).expect("ping");
        agent_t.push(r.timings.boot_to_ready);
        let mut c = config.clone();
        c.agent = null.clone();
        let start = Instant::now();
        let status = vm::qemu_command(&c, accel, &req, &resp, &serial).status().unwrap();
        assert_eq!(status.code(), Some(1));
        null_t.push(start.elapsed());
    }
    let (a, n) = (median(agent_t), median(null_t));

    // Throughput, 256 MiB each way.
    let total: u64 = 256 << 20;
    let mut t_ready = None;
    let mut t_ack = None;
    let run = vm::run(
        &config,
        |r| {
            let mut zeros = std::io::repeat(0x5A);
            use std::io::Read;
            r.bulk(&mut (&mut zeros).take(total), total)?;
            Ok(())
        },
        |f| {
            if f.ty == Type::Hello {
                t_ready = Some(Instant::now());
            }
            if f.ty == Type::BulkAck {
                t_ack = Some(Instant::now());
            }
        },
    )
    .expect("bulk in");
    drop(run);
    let h2g = t_ack.unwrap() - t_ready.unwrap();
    let (mut t_first, mut t_last) = (None, None);
    vm::run(&config, |r| { r.frame(Type::BulkRequest, &total.to_le_bytes())?; Ok(()) }, |f| {
        if f.ty == Type::BulkBegin {
            t_first = Some(Instant::now());
        }
        if f.ty == Type::BulkData {
            t_last = Some(Instant::now());
        }
    })
    .expect("bulk out");
    let g2h = t_last.unwrap() - t_first.unwrap();
    let mbps = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    let size = std::fs::metadata(&agent).unwrap().len();
    let _ = std::fs::remove_dir_all(&dir);

    println!("accelerator: {accel:?}, {runs} cold starts each, medians\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| null firmware: QEMU start to exit | {:.1} ms |", n.as_secs_f64() * 1e3);
    println!("| agent: QEMU start to Hello | {:.1} ms |", a.as_secs_f64() * 1e3);
    println!("| ratio agent / null (goal <= 1.2) | {:.2} |", a.as_secs_f64() / n.as_secs_f64());
    println!("| host -> guest, 256 MiB, incl. guest SHA-256 | {:.0} MB/s |", mbps(h2g));
    println!("| guest -> host, 256 MiB | {:.0} MB/s |", mbps(g2h));
    println!("| agent.bin size (goal <= 1 MiB) | {} bytes |", size);
}
