//! SHA-256 in the guest: the block function follows CPUID (SHA-NI or portable) and the digest
//! does not depend on it; AES (SNP guest messages) likewise, AES-NI or portable; a builder's
//! vector registers survive the agent's use of them.
use agent::proto::Type;
use integration_tests::{dev_vm_config, root};
use loader::vm::{self, Accel};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};

/// Boots the development image on `accel` with `-cpu model`, sends `data` as a bulk transfer
/// (the agent acknowledges with its SHA-256) and returns the digest and the agent's
/// "sha256: " and "aes: " log lines.
fn guest_digest(accel: Accel, model: &str, data: &[u8]) -> ([u8; 32], String, String) {
    let mut config = dev_vm_config(accel);
    // QEMU takes the last -cpu given.
    config.extra_qemu_args = vec!["-cpu".into(), model.into()];
    let run = vm::run(&config, |r| r.bulk(&mut &data[..], data.len() as u64).map(|_| ()), |_| {}).unwrap();
    let ack = run.frames.iter().find(|f| f.ty == Type::BulkAck).unwrap_or_else(|| panic!("no BulkAck:\n{}", run.serial));
    assert_eq!(ack.payload[..8], (data.len() as u64).to_le_bytes());
    let line = |tag: &str| {
        run.serial.lines().find_map(|l| l.find(tag).map(|i| l[i..].to_string())).unwrap_or_else(|| panic!("no {tag} line:\n{}", run.serial))
    };
    (ack.payload[8..].try_into().unwrap(), line("sha256: "), line("aes: "))
}

/// `len` bytes; lengths of 64k + 17 give many whole blocks and a tail that ends mid-block.
fn data(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// Without SHA in CPUID (QEMU's qemu64 model has none) the agent takes the portable path, and
/// the digest is the host's.
#[test]
fn without_sha_ni_in_cpuid_the_portable_block_function_is_used() {
    let data = data((3 << 20) + 17);
    let (digest, line, aes) = guest_digest(Accel::Tcg, "qemu64", &data);
    assert!(line.starts_with("sha256: portable block function"), "{line}");
    assert!(aes.starts_with("aes: portable block cipher"), "{aes}");
    assert_eq!(digest[..], Sha256::digest(&data)[..]);
}

/// On a plain VM the portable path is taken even where CPUID reports SHA-NI (SHA-NI is for
/// SEV-SNP and TDX, whose ring 0 runs on the CPU; arch/mod.rs says why), and the boot does not
/// depend on the hypervisor running SSE in ring 0: here KVM (when usable) with the host's CPU
/// model. The SHA-NI block function itself is checked on the host (agent/tests/sha_ni.rs). The
/// same holds for AES-NI (agent/tests/aes_ni.rs).
#[test]
fn on_a_plain_vm_the_portable_block_function_is_used_whatever_cpuid_says() {
    // Small: this project's KVM runs a plain guest's ring 0 slowly.
    let data = data((64 << 10) + 17);
    let accel = if vm::kvm_usable() { Accel::Kvm } else { Accel::Tcg };
    let model = if accel == Accel::Kvm { "host,-arch-capabilities" } else { "max" };
    let (digest, line, aes) = guest_digest(accel, model, &data);
    assert!(line.starts_with("sha256: portable block function (a plain VM"), "{accel:?} -cpu {model}: {line}");
    assert!(aes.starts_with("aes: portable block cipher (a plain VM"), "{accel:?} -cpu {model}: {aes}");
    assert_eq!(digest[..], Sha256::digest(&data)[..]);
}

/// tests/sandbox/vectors.c fills xmm0..15, makes system calls (256 KiB of file writes, reads,
/// sched_yield, fork) and spins through timer preemptions, checking the registers after each.
/// The SYSCALL test image overwrites every XMM register after each trap from ring 3 (as its
/// SHA-NI hashing and AES-NI encryption would), so only the agent's FXSAVE/FXRSTOR around ring 3
/// keeps them. The output must equal Linux's.
#[test]
fn a_builders_vector_registers_survive_the_agent() {
    let exe = root().join(format!("target/sandbox-vectors-{}", std::process::id()));
    let status = Command::new("gcc")
        .args(["-static", "-nostdlib", "-fno-stack-protector", "-fno-pie", "-no-pie", "-O1", "-o"])
        .arg(&exe)
        .arg(root().join("tests/sandbox/vectors.c"))
        .status()
        .unwrap();
    assert!(status.success(), "gcc");
    let program = std::fs::read(&exe).unwrap();
    let dir = std::env::temp_dir().join(format!("sandbox-vectors-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let native = Command::new(&exe).current_dir(&dir).env_clear().stdin(Stdio::null()).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&exe);
    assert_eq!(native.status.code(), Some(0), "natively: {}", String::from_utf8_lossy(&native.stdout));

    let mut config = dev_vm_config(Accel::Tcg);
    config.agent = integration_tests::syscall_test_bin().0;
    let ours = loader::exec(&config, &program, &["vectors"], |_, _| {}).unwrap();
    assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&native.stdout), "notes: {:?}", ours.notes);
    assert_eq!(ours.status, 0);
}
