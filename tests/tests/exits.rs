//! The exit budget (issue 19): boot → Hello → Ping → power-off in at most 64 device exits
//! (port I/O and MMIO accesses that leave the guest, each a #VC/#VE round trip under SEV-SNP
//! or TDX), counted with KVM's tracepoints (`integration_tests::exits` gives the method). Where
//! KVM or tracefs is unavailable the tests say so and skip; `make bench` prints the table.
use integration_tests::{dev_vm_config, exits};
use loader::vm::Accel;

/// The budget for boot + Ping + power-off.
const BOOT_AND_PING_BUDGET: usize = 64;

fn skip() -> bool {
    match exits::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: cannot count VM exits here: {why}");
            true
        }
        None => false,
    }
}

#[test]
fn boot_and_ping_stay_within_the_exit_budget() {
    if skip() {
        return;
    }
    let e = exits::boot_and_ping(&dev_vm_config(Accel::Kvm)).expect("boot and ping under KVM");
    eprintln!("boot + ping: {} device exits ({} port, {} MMIO)", e.total(), e.pio, e.mmio);
    assert!(e.total() <= BOOT_AND_PING_BUDGET, "{} exits, over the budget of {BOOT_AND_PING_BUDGET}:\n{}", e.total(), e.accesses.join("\n"));
    // Nothing on the serial port: the log travels in Log frames.
    assert!(!e.accesses.iter().any(|a| a.contains("at 0x3f")), "serial-port accesses:\n{}", e.accesses.join("\n"));
}

/// The debug log costs exits (two a byte), but only when the loader asks for it: the same image
/// without the request flag stays within the budget above.
#[test]
fn the_debug_log_is_asked_for_by_the_request_not_built_in() {
    if skip() {
        return;
    }
    let mut c = dev_vm_config(Accel::Kvm);
    c.debug_serial = true;
    let (run, e) = exits::run(&c, |r| r.frame(agent::proto::Type::Shutdown, b"").map(|_| ())).expect("counting");
    let run = run.expect("boot with a debug log");
    assert!(run.serial.contains("[INFO ") && run.serial.contains("virtio-blk at 00:01.0"), "{}", run.serial);
    assert!(e.accesses.iter().filter(|a| a.contains("at 0x3f8")).count() > 100, "the debug log went to the serial port");
}

/// A trivial build (`echo hello > $out`) in the attested image: its count is reported (the
/// builder's system calls are #UD exceptions, not device exits; the count is the channel's).
#[test]
fn a_trivial_build_reports_its_exits() {
    if skip() {
        return;
    }
    let Some((run, e)) = exits::trivial_build(std::time::Duration::from_secs(30)).expect("counting") else {
        eprintln!("SKIPPED: a build under KVM is refused on this PVM host (docs/sandbox.md, \"KVM on a PVM host\"); the boot and ping counts above are measured");
        return;
    };
    match run {
        Ok(_) => eprintln!("trivial build: {} device exits ({} port, {} MMIO)", e.total(), e.pio, e.mmio),
        Err(err) => eprintln!("trivial build under KVM did not complete here ({}); {} device exits until then", err.to_string().lines().next().unwrap_or(""), e.total()),
    }
    assert!(e.total() > 0);
}
