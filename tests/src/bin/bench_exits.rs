//! `make bench`: device exits per phase (issue 19), counted under KVM with the kernel's
//! `kvm/kvm_pio` and `kvm/kvm_mmio` tracepoints (`integration_tests::exits` states the method).
//! Each phase is its own fresh VM; a transfer's cost per MiB is its run's count less the bare
//! boot's, divided by its size. Prints a Markdown table, or why it cannot count here.
use agent::proto::Type;
use integration_tests::{dev_vm_config, exits, vm_config};
use loader::vm::Accel;

const MIB: u64 = 16;

fn main() {
    println!("## Device exits per phase (KVM tracepoints kvm_pio + kvm_mmio)\n");
    if let Some(why) = exits::unavailable() {
        println!("Not measured: cannot count VM exits here ({why}).");
        return;
    }
    let dev = dev_vm_config(Accel::Kvm);
    let count = |what: &str, req: &dyn Fn(&mut loader::vm::Request) -> Result<(), loader::vm::VmError>| {
        let (run, e) = exits::run(&dev, req).unwrap_or_else(|err| panic!("{what}: {err}"));
        run.unwrap_or_else(|err| panic!("{what}: {err}"));
        e
    };
    let boot = count("boot", &|r| r.frame(Type::Shutdown, b"").map(|_| ()));
    let ping = count("ping", &|r| {
        r.frame(Type::Ping, b"bench")?;
        r.frame(Type::Shutdown, b"").map(|_| ())
    });
    let data = vec![0x5Au8; (MIB << 20) as usize];
    let inbound = count("host → guest", &|r| r.bulk(&mut &data[..], data.len() as u64).map(|_| ()));
    let outbound = count("guest → host", &|r| r.frame(Type::BulkRequest, &(MIB << 20).to_le_bytes()).map(|_| ()));
    let per_mib = |e: &exits::Exits| (e.total() as f64 - boot.total() as f64) / MIB as f64;
    println!("| phase | device exits | port | MMIO |");
    println!("|---|---|---|---|");
    println!("| boot → Hello → Shutdown → Bye → power-off | {} | {} | {} |", boot.total(), boot.pio, boot.mmio);
    println!("| boot → Hello → Ping/Pong → power-off (budget ≤ 64) | {} | {} | {} |", ping.total(), ping.pio, ping.mmio);
    println!("| host → guest, per MiB ({MIB} MiB transfer, less the boot) | {:.2} | | |", per_mib(&inbound));
    println!("| guest → host, per MiB ({MIB} MiB transfer, less the boot) | {:.2} | | |", per_mib(&outbound));
    let drv = integration_tests::e2e::instantiate("ok.single-file");
    let out = std::env::temp_dir().join(format!("nix-agent-bench-exits-{}", std::process::id()));
    // A builder may never finish under a paravirtual KVM (PVM: ring 3 dies at its first system
    // call): then the count until the timeout is what is printed.
    let mut config = vm_config(Accel::Kvm);
    config.timeout = std::time::Duration::from_secs(60);
    // `--accel kvm` builds are refused on a PVM host before QEMU starts (docs/sandbox.md).
    let counted = (!loader::vm::kvm_is_pvm()).then(|| exits::counted(&config, |c| loader::build::build(c, &drv, &out, |_, _| {}, |_| {})));
    match counted {
        None => println!("| trivial build | not counted: a build under KVM is refused on this PVM host (docs/sandbox.md) | | |"),
        Some(Ok((Ok(_), e))) => println!("| trivial build (`echo hello > $out`, attested image) | {} | {} | {} |", e.total(), e.pio, e.mmio),
        Some(Ok((Err(err), e))) => println!(
            "| trivial build (`echo hello > $out`, attested image): did not complete under this KVM ({}) | {} until then | {} | {} |",
            err.to_string().lines().next().unwrap_or(""),
            e.total(),
            e.pio,
            e.mmio
        ),
        Some(Err(err)) => println!("| trivial build | not counted: {err} | | |"),
    }
    let _ = std::fs::remove_dir_all(&out);
    println!("\nEach run is a fresh VM under KVM. Method: a trace instance with kvm_pio and kvm_mmio, filtered to the QEMU process by TGID; an MMIO read's completion event (\"read\" after \"unsatisfied-read\") is the same exit and counted once.");
    println!("\nBoot + ping, access by access:\n");
    for a in &ping.accesses {
        println!("    {a}");
    }
}
