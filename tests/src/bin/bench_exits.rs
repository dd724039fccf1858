//! `make bench`: device exits per phase (issue 19), counted under KVM with the kernel's
//! `kvm/kvm_pio` and `kvm/kvm_mmio` tracepoints (`integration_tests::exits` states the method).
//! Each phase is its own fresh VM; a transfer's cost per MiB is its run's count less the bare
//! boot's, divided by its size. Prints a Markdown table, or why it cannot count here.
use agent::proto::Type;
use integration_tests::{dev_vm_config, exits};
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
    let counted = exits::trivial_build(std::time::Duration::from_secs(60));
    match counted {
        Ok(None) => println!("| trivial build | not counted: a build under KVM is refused on this PVM host (docs/sandbox.md) | | |"),
        Ok(Some((Ok(_), e))) => println!("| trivial build (`echo hello > $out`, attested image) | {} | {} | {} |", e.total(), e.pio, e.mmio),
        Ok(Some((Err(err), e))) => println!(
            "| trivial build (`echo hello > $out`, attested image): did not complete under this KVM ({}) | {} until then | {} | {} |",
            err.to_string().lines().next().unwrap_or(""),
            e.total(),
            e.pio,
            e.mmio
        ),
        Err(err) => println!("| trivial build | not counted: {err} | | |"),
    }
    println!("\nEach run is a fresh VM under KVM. Method: a trace instance with kvm_pio and kvm_mmio, filtered to the QEMU process by TGID; an MMIO read's completion event (\"read\" after \"unsatisfied-read\") is the same exit and counted once.");
    println!("\nBoot + ping, access by access:\n");
    for a in &ping.accesses {
        println!("    {a}");
    }
}
