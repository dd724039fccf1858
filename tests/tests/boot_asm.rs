//! The agent's 32-bit boot code (`agent/src/arch/reset.s`, `rom32.s`) run in an emulator with a
//! modelled SEV-SNP guest, TD and plain VM: no SNP or TDX hardware exists here, and QEMU cannot
//! start a guest as either. `tests/boot_asm/emulate.py` runs the image's own bytes in Unicorn
//! (QEMU's x86 core as a library, from PyPI, installed into a virtualenv under target/) up to
//! the instruction that turns paging on, and reports the page tables, control registers, MSR
//! writes and the platform the code recorded. The real-mode path is what every QEMU test boots.
//!
//! What is modelled (the platform's side, from the specifications):
//! - SNP: SEV_STATUS (APM vol. 2 "SEV_STATUS MSR") = SEV | SEV-ES | SNP, and a CPUID page (SNP
//!   ABI "SNP_LAUNCH_UPDATE", page type CPUID; layout as Linux `struct snp_cpuid_table`) whose
//!   leaf 0x8000_001F EBX[5:0] is the C-bit. VMGEXIT ends the run (a termination request).
//! - TDX: the TD's initial state (TDX module ABI "Initial State of the TD vCPU": 32-bit
//!   protected mode at 0xFFFFFFF0, CR0.PE/NE, CR4.MCE, EFER.LME/NXE, no guest GDT).
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const KERNEL_ELF: &str = "target/x86_64-unknown-none/firmware/agent";

fn python() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let venv = integration_tests::root().join("target/unicorn-venv");
        let py = venv.join("bin/python");
        let ready = |py: &Path| Command::new(py).args(["-c", "import unicorn"]).status().is_ok_and(|s| s.success());
        if !ready(&py) {
            let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success()
                && Command::new(venv.join("bin/pip")).args(["install", "-q", "unicorn==2.1.4"]).status().unwrap().success();
            assert!(ok && ready(&py), "installing unicorn from PyPI into {}", venv.display());
        }
        py
    })
}

fn symbols() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let elf = integration_tests::root().join(KERNEL_ELF);
        assert!(elf.exists(), "{} is missing: run `make agent` first", elf.display());
        let out = Command::new("nm").arg(&elf).output().expect("nm (binutils)");
        assert!(out.status.success());
        let path = integration_tests::root().join("target/boot_asm.nm");
        std::fs::write(&path, out.stdout).unwrap();
        path
    })
}

fn run(platform: &str, cbit: Option<u8>) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(integration_tests::root().join("tests/boot_asm/emulate.py")).arg(integration_tests::agent_bin()).arg(symbols()).arg(platform);
    if let Some(c) = cbit {
        cmd.arg(c.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "emulate.py {platform}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn wrmsrs(r: &Value) -> Vec<(u64, u64)> {
    r["events"]["wrmsr"].as_array().unwrap().iter().map(|w| (u(&w[0]), u(&w[1]))).collect()
}

/// The page tables rom32.s documents, with `high` (the C-bit, or 0) in every entry.
fn assert_page_tables(r: &Value, high: u64) {
    assert_eq!(r["error"], Value::Null);
    assert!(r["reached_paging_on"].as_bool().unwrap(), "stopped at {:#x}", u(&r["eip"]));
    let pd = r["pd"].as_array().unwrap();
    assert_eq!(pd.len(), 2048);
    for (i, e) in pd.iter().enumerate() {
        assert_eq!(u(e), ((i as u64) << 21) | 0x83 | high, "PD entry {i}: a 2 MiB page of phys {} MiB", i * 2);
    }
    let pd_phys = u(&r["pd_phys"]);
    for (i, e) in r["pdpt_low"].as_array().unwrap().iter().enumerate() {
        assert_eq!(u(e), (pd_phys + 0x1000 * i as u64) | 3 | high, "PDPT_LOW[{i}]");
    }
    assert_eq!(u(&r["pdpt_high_510"]), pd_phys | 3 | high, "PDPT_HIGH[510]: the kernel's GiB");
    let low = u(&r["pdpt_low_phys"]) | 3 | high;
    assert_eq!(u(&r["pml4"]["0"]), low, "PML4[0]: the boot identity map");
    assert_eq!(u(&r["pml4"]["256"]), low, "PML4[256]: the direct map");
    assert_eq!(u(&r["pml4"]["511"]), u(&r["pdpt_high_phys"]) | 3 | high, "PML4[511]");
    assert_eq!(u(&r["cr3"]), u(&r["pml4_phys"]));
    assert_eq!(u(&r["cr4"]) & 0x620, 0x620, "CR4.PAE | OSFXSR | OSXMMEXCPT");
    assert_eq!(u(&r["cr4"]) & 4, 4, "CR4.TSD: ring-3 RDTSC traps (issue 15, finding 7)");
    assert_eq!(u(&r["efer"]) & 0x900, 0x900, "EFER.LME | NXE");
    assert!(r["boot_stack_sample"].as_array().unwrap().iter().all(|b| u(b) == 0), ".bss zeroed");
    assert!(!r["events"]["vmgexit"].as_bool().unwrap());
}

#[test]
fn plain_vm_builds_unencrypted_tables_and_sets_the_mtrrs() {
    let r = run("plain", None);
    assert_page_tables(&r, 0);
    assert_eq!(u(&r["platform"]), 0);
    assert_eq!(u(&r["events"]["rdmsr_sev_status"]), 1, "SEV_STATUS is read once");
    assert!(wrmsrs(&r).contains(&(0x2FF, 0x806)), "MTRR default type: enabled, write-back");
}

#[test]
fn snp_guest_puts_the_cpuid_page_c_bit_in_every_entry() {
    for cbit in [51u8, 47, 32] {
        let r = run("snp", Some(cbit));
        assert_page_tables(&r, 1 << cbit);
        assert_eq!((u(&r["platform"]), u(&r["cbit"])), (1, u64::from(cbit)));
        assert!(wrmsrs(&r).iter().all(|&(msr, _)| msr != 0x2FF), "no MTRR write inside SNP (it would #VC)");
    }
}

#[test]
fn unusable_sev_configurations_terminate_before_paging() {
    // GHCB MSR protocol termination request: 0x100, reason set 1, reason code 1.
    for (platform, cbit, why) in [
        ("sev-es", None, "SEV-ES without SNP"),
        ("snp-nocpuid", None, "no leaf 0x8000001F in the CPUID page"),
        ("snp", Some(31u8), "a C-bit inside the 4 GiB the agent maps"),
        ("snp", Some(52u8), "a C-bit past 51"),
    ] {
        let r = run(platform, cbit);
        assert!(r["events"]["vmgexit"].as_bool().unwrap(), "{why}: terminates with VMGEXIT");
        assert_eq!(wrmsrs(&r).last(), Some(&(0xC001_0130, 0x1_1100)), "{why}");
        assert!(!r["reached_paging_on"].as_bool().unwrap(), "{why}");
        assert_eq!(u(&r["platform"]), 0, "{why}");
        assert_eq!(u(&r["cr3"]), 0, "{why}: no page tables loaded");
    }
}

#[test]
fn td_enters_in_protected_mode_and_touches_no_msr() {
    let r = run("tdx", None);
    assert_page_tables(&r, 0);
    assert_eq!(u(&r["platform"]), 2);
    assert_eq!(u(&r["events"]["rdmsr_sev_status"]), 0, "a TD does not probe SEV");
    // Every WRMSR would raise #VE before a handler exists: MTRRs skipped, EFER already set.
    assert_eq!(wrmsrs(&r), vec![]);
    assert_eq!(u(&r["cr4"]) & 0x40, 0x40, "CR4.MCE (fixed to 1 in a TD) kept");
}

/// Issue 15, finding 9: a TD's every vCPU enters at the reset vector; one whose VCPU_INDEX (ESI)
/// is not 0 parks at once — no image copy, no .bss zeroing, no page tables — where before it
/// re-ran the whole boot under the running agent.
#[test]
fn a_tds_second_vcpu_parks_before_touching_memory() {
    let r = run("tdx-ap", None);
    assert!(!r["reached_paging_on"].as_bool().unwrap());
    assert_eq!(u(&r["eip"]), u(&r["td_park"]), "parked: {r}");
    // RAM was filled with 0xA5 before the code ran: nothing in .bss was written.
    assert_eq!(u(&r["platform"]), 0xA5A5_A5A5, "BOOT_PLATFORM never written");
    assert_eq!(r["boot_stack_sample"], Value::from(vec![0xA5u64; 16]), ".bss untouched");
    assert_eq!(u(&r["cr3"]), 0);
    assert_eq!(wrmsrs(&r), vec![]);
}
