//! The agent boots as firmware and talks to the loader: under KVM and forced TCG, with
//! malformed frames, with a deliberate fault, and reproducibly.
use agent::proto::{self, ErrorCode, Type};
use integration_tests::{agent_bin, dev_vm_config, fault_test_bin, vm_config};
use loader::vm::{self, Accel, VmError};

fn ping(accel: Accel) {
    let report = loader::ping(&dev_vm_config(accel)).unwrap_or_else(|e| panic!("ping under {accel:?}: {e}"));
    assert_eq!(report.agent_version, agent::VERSION);
    assert_eq!(report.attestation, proto::AttestationKind::None as u8);
    assert_eq!(report.accel, accel);
    assert!(report.timings.boot_to_ready <= report.timings.total);
}

#[test]
fn boot_and_ping_under_kvm() {
    if !vm::kvm_usable() {
        eprintln!("SKIPPED: /dev/kvm is not usable on this machine; the TCG test covers the boot");
        return;
    }
    ping(Accel::Kvm);
}

#[test]
fn boot_and_ping_under_tcg() {
    ping(Accel::Tcg);
}

#[test]
fn malformed_frames_get_error_frames_and_ping_still_works() {
    let mut bad_magic = proto::frame(Type::Ping, b"x");
    bad_magic[..4].copy_from_slice(b"EVIL");
    let mut too_long = proto::encode_header(Type::Ping, 0).to_vec();
    too_long[8..12].copy_from_slice(&(proto::MAX_PAYLOAD as u32 + 1).to_le_bytes());
    let mut unknown = proto::frame(Type::Ping, b"payload of an unknown type");
    unknown[6..8].copy_from_slice(&0x7777u16.to_le_bytes());
    let mut bad_version = proto::frame(Type::Ping, b"v");
    bad_version[4..6].copy_from_slice(&99u16.to_le_bytes());
    let oversized_transfer = proto::frame(Type::BulkBegin, &(proto::MAX_TRANSFER + 1).to_le_bytes());
    let mut truncated = proto::frame(Type::Ping, &[1; 64]);
    truncated.truncate(40);

    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("bad magic", bad_magic, ErrorCode::BadMagic),
        ("length over the limit", too_long, ErrorCode::TooLong),
        ("unknown type", unknown, ErrorCode::UnknownType),
        ("bad version", bad_version, ErrorCode::BadVersion),
        ("transfer over the limit", oversized_transfer, ErrorCode::TransferTooLarge),
        ("truncated payload", truncated, ErrorCode::Truncated),
    ];
    for (name, bad, code) in cases {
        let truncates = code == ErrorCode::Truncated;
        let run = vm::run(
            &dev_vm_config(Accel::Auto),
            |r| {
                r.frame(Type::Ping, b"before")?;
                r.raw(&bad)?;
                if !truncates {
                    r.frame(Type::Ping, b"after")?;
                }
                Ok(())
            },
            |_| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors = loader::errors(&run.frames);
        assert!(!errors.is_empty(), "{name}: no Error frame");
        assert_eq!(errors[0].0, code as u32, "{name}: {errors:?}");
        let pongs: Vec<&[u8]> = run.frames.iter().filter(|f| f.ty == Type::Pong).map(|f| f.payload.as_slice()).collect();
        let want: Vec<&[u8]> = if truncates { vec![b"before"] } else { vec![b"before", b"after"] };
        assert_eq!(pongs, want, "{name}");
        assert_eq!(run.frames.last().unwrap().ty, Type::Bye, "{name}");
    }
}

#[test]
fn bulk_transfers_both_ways_arrive_intact() {
    use sha2::{Digest, Sha256};
    let data: Vec<u8> = (0..(5u64 << 20) + 12345).map(|i| (i * 31 % 256) as u8).collect();
    let want_out = 3u64 << 20;
    let run = vm::run(
        &dev_vm_config(Accel::Auto),
        |r| {
            r.bulk(&mut data.as_slice(), data.len() as u64)?;
            r.frame(Type::BulkRequest, &want_out.to_le_bytes())?;
            Ok(())
        },
        |_| {},
    )
    .unwrap();
    let ack = run.frames.iter().find(|f| f.ty == Type::BulkAck).expect("BulkAck");
    assert_eq!(ack.payload[..8], (data.len() as u64).to_le_bytes());
    assert_eq!(ack.payload[8..], Sha256::digest(&data)[..]);
    let begin = run.frames.iter().position(|f| f.ty == Type::BulkBegin).expect("BulkBegin");
    assert_eq!(proto::parse_u64(&run.frames[begin].payload), Some(want_out));
    let received: Vec<u8> = run.frames[begin + 1..].iter().take_while(|f| f.ty == Type::BulkData).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(received.len() as u64, want_out);
    assert!(received.iter().enumerate().all(|(i, &b)| b == proto::pattern_byte(i as u64)));
}

/// Issue 15, finding 10: the attested image serves one Build and nothing else. Each development
/// request (Ping, BulkBegin, BulkRequest, Exec) as the first frame gets one Error
/// (UnexpectedMessage) and ends the request stream: no Pong, no BulkAck, no program runs, and
/// the Build that follows is never read. (Before, every image answered all of them.)
#[test]
fn the_attested_image_refuses_development_requests() {
    let mut exec = Vec::new();
    proto::encode_strings(&mut exec, &["probe"]);
    let requests: Vec<(&str, Type, Vec<u8>)> = vec![
        ("Ping", Type::Ping, b"hello".to_vec()),
        ("BulkBegin", Type::BulkBegin, 4u64.to_le_bytes().to_vec()),
        ("BulkRequest", Type::BulkRequest, 4u64.to_le_bytes().to_vec()),
        ("Exec", Type::Exec, exec),
    ];
    for (name, ty, payload) in requests {
        let run = vm::run(
            &vm_config(Accel::Auto),
            |r| {
                r.frame(ty, &payload)?;
                r.frame(Type::BulkData, b"data")?;
                r.frame(Type::Ping, b"again")?;
                Ok(())
            },
            |_| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let types: Vec<Type> = run.frames.iter().map(|f| f.ty).collect();
        assert_eq!(types, vec![Type::Hello, Type::Error, Type::Bye], "{name}");
        let errors = loader::errors(&run.frames);
        assert_eq!(errors[0].0, ErrorCode::UnexpectedMessage as u32, "{name}");
        assert!(errors[0].1.contains("attested image"), "{name}: {errors:?}");
    }
    // The release image has no development code at all: Exec's messages are not in it.
    let image = std::fs::read(agent_bin()).unwrap();
    let dev = std::fs::read(integration_tests::dev_agent_bin()).unwrap();
    let has = |img: &[u8], s: &[u8]| img.windows(s.len()).any(|w| w == s);
    assert!(has(&dev, b"Exec: cannot start the program"), "the development image serves Exec");
    assert!(!has(&image, b"Exec: cannot start the program"), "the attested image has Exec's code");
    assert_ne!(image, dev);
}

#[test]
fn a_fault_in_the_agent_reports_the_exception_and_exits_with_its_status() {
    let mut config = vm_config(Accel::Auto);
    config.agent = fault_test_bin();
    match loader::ping(&config) {
        Err(VmError::AgentFailure { failure, status, serial }) => {
            assert_eq!(failure, "CPU exception vector 6");
            assert_eq!(status, ((0x20 + 6) << 1) | 1);
            assert!(serial.contains("vector 6 (#UD invalid opcode)"), "{serial}");
            assert!(serial.contains("RIP 0xffffffff8"), "{serial}");
        }
        other => panic!("expected an agent failure, got {other:?}"),
    }
}

#[test]
fn the_image_is_reproducible_from_another_directory() {
    // Build the image again from a copy of the source in a different directory, with its own
    // target directory, and compare with the image `make test` built.
    let root = integration_tests::root();
    let copy = std::env::temp_dir().join(format!("agent-repro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C {root} ls-files -z --cached --others --exclude-standard | (cd {root} && xargs -0 cp --parents -t {copy}) && make -s -C {copy} agent",
            root = root.display(),
            copy = copy.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let a = std::fs::read(agent_bin()).unwrap();
    let b = std::fs::read(copy.join("target/agent.bin")).unwrap();
    let _ = std::fs::remove_dir_all(&copy);
    assert!(a == b, "agent.bin differs when built from another directory");
}

/// `--tee snp|tdx` on a host without the support: a clear error naming what is missing, before
/// anything starts (and never a silent fallback to an unattested VM).
#[test]
fn a_tee_the_host_lacks_is_refused_with_what_is_missing() {
    for tee in [loader::tee::Tee::Snp, loader::tee::Tee::Tdx] {
        let mut c = integration_tests::vm_config(loader::vm::Accel::Auto);
        c.tee.tee = tee;
        let Err(missing) = loader::tee::check_host(&c.tee, &c.qemu) else {
            continue; // this host can launch it: nothing to refuse
        };
        match loader::ping(&c) {
            Err(loader::vm::VmError::Tee(e)) => assert_eq!(e.to_string(), missing.to_string()),
            other => panic!("{tee:?}: expected the host check's refusal, got {other:?}"),
        }
    }
}

/// virtio 1.x §3.1.1 as a confidential guest needs it: the loader gives every disk the
/// properties QEMU forces for SEV-SNP and TDX (`disable-legacy=on,iommu_platform=on`), so the
/// device offers VIRTIO_F_ACCESS_PLATFORM and refuses FEATURES_OK unless the driver accepts it
/// (QEMU `virtio_validate_features`). The agent logs what it read back: FEATURES_OK must have
/// stuck (virtio 1.2 §3.1.1 step 6). (virtio-drivers alone never accepts bit 33: QEMU refused FEATURES_OK
/// and went on serving the queue, which is what hid it.)
#[test]
fn virtio_negotiates_access_platform_and_reads_the_status_back() {
    let run = vm::run(&vm_config(Accel::Tcg), |r| r.frame(Type::Shutdown, b"").map(|_| ()), |_| {}).expect("boot");
    let lines: Vec<&str> = run.serial.lines().filter(|l| l.contains("virtio-blk at") && l.contains("features offered")).collect();
    assert_eq!(lines.len(), 2, "one line per disk:\n{}", run.serial);
    for line in lines {
        let field = |name: &str| {
            let rest = &line[line.find(name).unwrap_or_else(|| panic!("{name} in {line}")) + name.len()..];
            let hex = rest.trim_start().trim_start_matches("0x");
            u64::from_str_radix(&hex[..hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len())], 16).unwrap()
        };
        let (offered, accepted) = (field("offered"), field("accepted"));
        assert_ne!(offered & (1 << 33), 0, "the device offers ACCESS_PLATFORM: {line}");
        assert_ne!(accepted & (1 << 33), 0, "the agent accepts ACCESS_PLATFORM: {line}");
        assert_ne!(accepted & (1 << 32), 0, "and VERSION_1: {line}");
        assert_eq!(field("after FEATURES_OK") & 0xB, 0xB, "ACKNOWLEDGE, DRIVER and FEATURES_OK read back: {line}");
    }
    // DRIVER_OK: the disks then served the request and took the response (the run said Bye).
}

/// QEMU can stop a VM and keep running (a KVM internal error, a TD's ReportFatalError with a
/// code QEMU refuses: both `vm_stop(RUN_STATE_INTERNAL_ERROR)`): the loader notices through QMP
/// within seconds and says so, instead of waiting for the build's timeout. A QEMU started with
/// `-S` stands in for it here (never running: `prelaunch`).
#[test]
fn a_vm_qemu_stopped_is_a_platform_failure_within_seconds() {
    let dir = tempfile_dir("paused-qemu");
    let wrapper = dir.join("qemu-paused");
    std::fs::write(&wrapper, "#!/bin/sh\nexec qemu-system-x86_64 -S \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = vm_config(Accel::Tcg);
    config.qemu = wrapper;
    config.timeout = std::time::Duration::from_secs(120);
    let start = std::time::Instant::now();
    match vm::run(&config, |r| r.frame(Type::Shutdown, b"").map(|_| ()), |_| {}) {
        Err(VmError::Stopped { state, .. }) => assert_eq!(state, "prelaunch"),
        other => panic!("expected VmError::Stopped, got {other:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "noticed in {:?}", start.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
