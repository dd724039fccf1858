//! The product's main job, end to end: `loader build` of every corpus derivation in a fresh
//! agent, compared with real Nix 2.8 building the same `.drv` in its sandbox. Every expected
//! hash comes from Nix at test time; the evidence is checked with `measurement-tool verify`,
//! and tampering with an output, the statement or the evidence must make it fail.
use base64::Engine;
use integration_tests::e2e;
use loader::build::{BuildError, BuildReport};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn config() -> loader::vm::VmConfig {
    let mut c = integration_tests::vm_config(loader::vm::Accel::Auto);
    c.memory_mib = 1536; // the 256 MiB case keeps its output in the sandbox's memory
    c.timeout = std::time::Duration::from_secs(900);
    c
}

fn out_dir(case: &str) -> PathBuf {
    let d = integration_tests::root().join(format!("target/e2e-build-{}/{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn build(drv: &Path, dir: &Path) -> Result<BuildReport, BuildError> {
    let mut log = Vec::new();
    let r = loader::build::build(&config(), drv, dir, |_, b| log.extend_from_slice(b), |_| {});
    if r.is_err() {
        eprintln!("build log:\n{}", String::from_utf8_lossy(&log));
    }
    r
}

fn verify(args: &[&str]) -> Output {
    Command::new(integration_tests::bin("measurement-tool")).env("RUST_BACKTRACE", "0").arg("verify").args(args).output().unwrap()
}

fn nix32(sha: &[u8; 32]) -> String {
    format!("sha256:{}", agent::nix::base32::encode(sha))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_ok_case_is_bit_identical_to_nix_and_its_evidence_verifies() {
    let cases = e2e::cases("ok");
    assert!(cases.len() >= 12, "{cases:?}");
    for case in cases {
        let drv = e2e::instantiate(&format!("ok.{case}"));
        let native = e2e::realise_natively(&drv).unwrap_or_else(|e| panic!("{case}: Nix failed: {e}"));
        let dir = out_dir(&case);
        let report = build(&drv, &dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(report.outputs.len(), native.len(), "{case}");
        for (name, path, hash) in &native {
            let ours = report.outputs.iter().find(|o| o.name == *name).unwrap_or_else(|| panic!("{case}: no output {name}"));
            assert_eq!(ours.path, path.to_string_lossy(), "{case}.{name}: store path");
            assert_eq!(nix32(&ours.nar_sha256), *hash, "{case}.{name}: NAR hash differs from Nix's");
            // The NAR file is what Nix would dump for that path, byte for byte.
            let nar = std::fs::read(&ours.nar).unwrap();
            let mut h = sha2::Sha256::default();
            sha2::Digest::update(&mut h, &nar);
            assert_eq!(<[u8; 32]>::from(sha2::Digest::finalize(h)), ours.nar_sha256, "{case}.{name}");
            // References: exactly the ones Nix registered.
            let nix_refs = Command::new("nix-store").args(["-q", "--references"]).arg(path).output().unwrap();
            let mut nix_refs: Vec<String> = String::from_utf8(nix_refs.stdout).unwrap().lines().map(String::from).collect();
            nix_refs.sort();
            assert_eq!(ours.references, nix_refs, "{case}.{name}: references");
            let v = verify(&[s(&report.evidence), "--nar", s(&ours.nar), "--allow-unattested"]);
            assert!(v.status.success(), "{case}.{name}: {}", String::from_utf8_lossy(&v.stderr));
        }
        // Unattested evidence is refused unless the user allows it.
        let v = verify(&[s(&report.evidence)]);
        assert!(!v.status.success(), "{case}: unattested evidence accepted without --allow-unattested");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn failing_builds_publish_nothing() {
    for (case, code, words) in [
        ("builder-fails", 13, "failed with exit code 3"),
        ("missing-output", 14, "failed to produce output path for output 'dev'"),
        ("disallowed-reference", 14, "is not allowed to refer to the following paths"),
        ("executable-flat-output", 14, "should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)"),
    ] {
        let drv = e2e::instantiate(&format!("fail.{case}"));
        match e2e::realise_natively(&drv) {
            Err(nix) => assert!(nix.contains(words), "{case}: Nix says: {nix}"),
            Ok(_) => panic!("{case}: Nix built it"),
        }
        let dir = out_dir(case);
        match build(&drv, &dir) {
            Err(BuildError::Refused { code: c, text, log }) => {
                assert_eq!(c, code, "{case}: {text}");
                assert!(text.contains(words), "{case}: {text}");
                if case == "builder-fails" {
                    assert_eq!(String::from_utf8_lossy(&log), "failing\n", "{case}: the builder's log reaches the user");
                }
            }
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{case}: files left behind: {left:?}");
    }
}

#[test]
fn tampering_with_an_output_the_statement_or_the_evidence_is_detected() {
    let drv = e2e::instantiate("ok.multiple-outputs");
    e2e::realise_natively(&drv).unwrap();
    let dir = out_dir("tamper");
    let report = build(&drv, &dir).unwrap();
    let ev = s(&report.evidence).to_string();
    let good = std::fs::read_to_string(&ev).unwrap();
    for o in &report.outputs {
        assert!(verify(&[&ev, "--nar", s(&o.nar), "--allow-unattested"]).status.success());
        let orig = std::fs::read(&o.nar).unwrap();
        for at in [0, orig.len() / 2, orig.len() - 1] {
            let mut bad = orig.clone();
            bad[at] ^= 1;
            std::fs::write(&o.nar, &bad).unwrap();
            let v = verify(&[&ev, "--nar", s(&o.nar), "--allow-unattested"]);
            assert!(!v.status.success(), "output {} byte {at} flipped and still verified", o.name);
        }
        std::fs::write(&o.nar, &orig).unwrap();
    }
    let nar = s(&report.outputs[0].nar).to_string();
    // One byte of the statement (inside the bundle), everywhere along it.
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle: serde_json::Value = serde_json::from_str(&good).unwrap();
    let statement = b64.decode(bundle["statement"].as_str().unwrap()).unwrap();
    // The host stack is recorded (to explain a measurement that differs), as QEMU reports it.
    let qemu = std::process::Command::new("qemu-system-x86_64").arg("--version").output().unwrap();
    let qemu = String::from_utf8_lossy(&qemu.stdout).lines().next().unwrap().trim().to_string();
    assert_eq!(bundle["host"]["qemu"].as_str(), Some(qemu.as_str()));
    assert_eq!(bundle["host"]["kernel"].as_str().map(str::to_string), std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string()));
    for at in (0..statement.len()).step_by(statement.len() / 16 + 1) {
        let mut st = statement.clone();
        st[at] ^= 0x20;
        let mut b = bundle.clone();
        b["statement"] = b64.encode(&st).into();
        std::fs::write(&ev, serde_json::to_string(&b).unwrap()).unwrap();
        assert!(!verify(&[&ev, "--nar", &nar, "--allow-unattested"]).status.success(), "statement byte {at} altered and still verified");
    }
    // The evidence's own fields.
    for (field, value) in [("attestation", "sev-snp"), ("warning", "fine"), ("format", "v0"), ("unsigned_report_data", "00")] {
        let mut b = bundle.clone();
        b[field] = value.into();
        std::fs::write(&ev, serde_json::to_string(&b).unwrap()).unwrap();
        assert!(!verify(&[&ev, "--nar", &nar, "--allow-unattested"]).status.success(), "{field} altered and still verified");
    }
    std::fs::write(&ev, &good).unwrap();
    assert!(verify(&[&ev, "--nar", &nar, "--allow-unattested"]).status.success());
}

#[test]
fn a_forged_derivation_or_input_is_refused() {
    // The .drv claimed under another path; and an input NAR that is not what the store holds.
    let drv = e2e::instantiate("ok.consumes-output");
    e2e::realise_natively(&drv).unwrap();
    let mut inputs = loader::store::gather(&drv).unwrap();
    let other = e2e::instantiate("ok.single-file");
    inputs.drv_path = other.to_string_lossy().into_owned();
    let r = loader::build::build_inputs(&config(), &inputs, &out_dir("forged-drv"), |_, _| {}, |_| {}, &|p| loader::store::dump(p));
    assert!(matches!(&r, Err(BuildError::Refused { code: 11, text, .. }) if text.contains("has the path")), "{r:?}");

    let inputs = loader::store::gather(&drv).unwrap();
    let victim = inputs.input_paths.iter().find(|p| p.ends_with("-dep-lib")).unwrap().clone();
    let forged = |p: &str| -> Result<Vec<u8>, loader::store::StoreError> {
        let mut nar = loader::store::dump(p)?;
        if p == victim {
            // A file's contents changed (still a valid NAR).
            let at = nar.windows(7).position(|w| w == b"dep lib").expect("the dep's file contents");
            nar[at] = b'D';
        }
        Ok(nar)
    };
    let dir = out_dir("forged-input");
    let r = build_with(&inputs, &dir, &forged);
    // The agent hashes what it received: the build goes through, but the statement records the
    // forged input's real hash, so it cannot pass for a build from the true input.
    let report = r.unwrap();
    let st: serde_json::Value = serde_json::from_slice(&report.statement).unwrap();
    let dep = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap().iter().find(|d| d["name"] == victim.as_str()).unwrap().clone();
    let true_hash = Command::new("nix-store").args(["-q", "--hash", &victim]).output().unwrap();
    let true_hash = String::from_utf8(true_hash.stdout).unwrap().trim().to_string();
    let recorded: [u8; 32] = hex::decode(dep["digest"]["sha256"].as_str().unwrap()).unwrap().try_into().unwrap();
    assert_ne!(nix32(&recorded), true_hash);
}

fn build_with(inputs: &loader::store::BuildInputs, dir: &Path, dump: &dyn Fn(&str) -> Result<Vec<u8>, loader::store::StoreError>) -> Result<BuildReport, BuildError> {
    loader::build::build_inputs(&config(), inputs, dir, |_, _| {}, |_| {}, dump)
}

#[test]
fn import_puts_the_outputs_in_the_local_store_at_their_paths() {
    // A derivation no one has built yet (a nonce), so the store cannot already hold its outputs.
    let bb = e2e::busybox_dir();
    let nonce = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let expr = format!(
        r#"let bb = builtins.path {{ path = {}; name = "busybox"; }}; in derivation {{
             name = "imported"; system = "x86_64-linux"; builder = "${{bb}}/bin/busybox";
             nonce = "{nonce}"; outputs = [ "out" "doc" ];
             args = [ "sh" "-c" "mkdir $out; echo $doc > $out/doc-path; echo manual > $doc" ]; }}"#,
        bb.display()
    );
    let out = Command::new("nix-instantiate").args(["-E", &expr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drv = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = out_dir("import");
    let report = build(&drv, &dir).unwrap();
    for o in &report.outputs {
        assert!(!Path::new(&o.path).exists(), "{} already in the store", o.path);
    }
    // Unattested evidence (no TEE here) is imported only when that is explicitly allowed; the
    // refusal leaves the store untouched.
    let policy = measurement_tool::evidence::policy::Policy::default();
    match loader::build::import(&report, &policy, false) {
        Err(loader::build::BuildError::NotVerified(why)) => assert!(why.contains("REJECTED: attestation: expected sev-snp or tdx, got none"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    for o in &report.outputs {
        assert!(!Path::new(&o.path).exists(), "{} imported without --allow-unattested", o.path);
    }
    loader::build::import(&report, &policy, true).unwrap();
    for o in &report.outputs {
        let q = |args: &[&str]| String::from_utf8(Command::new("nix-store").args(args).arg(&o.path).output().unwrap().stdout).unwrap();
        assert_eq!(q(&["-q", "--hash"]).trim(), nix32(&o.nar_sha256), "{}", o.name);
        let mut refs: Vec<String> = q(&["-q", "--references"]).lines().map(String::from).collect();
        refs.sort();
        assert_eq!(refs, o.references, "{}", o.name);
        assert_eq!(q(&["-q", "--deriver"]).trim(), drv.to_string_lossy(), "{}", o.name);
        assert!(Command::new("nix-store").args(["--verify-path"]).arg(&o.path).status().unwrap().success());
    }
}

#[test]
fn the_cli_builds_a_nix_file_and_prints_json() {
    // `loader build FILE.nix` instantiates first; `--json` is the machine-readable summary.
    let dir = out_dir("cli");
    let example = integration_tests::root().join("examples/hello.nix");
    let out = Command::new(integration_tests::bin("loader"))
        .args(["build", s(&example), "--out", s(&dir), "--json", "--memory", "1024", "--agent"])
        .arg(integration_tests::agent_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drv = Command::new("nix-instantiate").arg(&example).output().unwrap();
    assert_eq!(v["derivation"], String::from_utf8(drv.stdout).unwrap().trim());
    assert_eq!(v["attestation"], "none");
    let o = &v["outputs"][0];
    assert_eq!(o["name"], "out");
    let nar = std::fs::read(o["nar"].as_str().unwrap()).unwrap();
    assert_eq!(o["narSha256"].as_str().unwrap(), hex::encode(<[u8; 32]>::from(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&nar)))));
    let v = verify(&[v["evidence"].as_str().unwrap(), "--nar", o["nar"].as_str().unwrap(), "--allow-unattested"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// `loader build --import` without a TEE is refused before anything starts unless unattested
/// outputs are explicitly allowed into the store.
#[test]
fn import_without_a_tee_needs_allow_unattested() {
    let dir = out_dir("import-refused");
    let example = integration_tests::root().join("examples/hello.nix");
    let out = Command::new(integration_tests::bin("loader")).args(["build", s(&example), "--out", s(&dir), "--import"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--import with --tee none") && err.contains("--allow-unattested"), "{err}");
    assert!(!dir.join("evidence.json").exists());
}
