//! `measurement-tool verify` on evidence bundles: the unattested kind is refused unless allowed,
//! the statement's subjects must match the outputs, REPORT_DATA must bind the statement, and any
//! tampering is rejected.
use agent::proto::AttestationKind;
use agent::statement::{Input, Output, Statement};
use measurement_tool::evidence::bundle::Bundle;
use std::path::{Path, PathBuf};
use std::process::{Command, Output as Out};

fn tool(args: &[&str]) -> Out {
    Command::new(integration_tests::bin("measurement-tool")).env("RUST_BACKTRACE", "0").args(args).output().unwrap()
}

fn dir(test: &str) -> PathBuf {
    let d = integration_tests::root().join(format!("target/verify-bundle-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An output in the local store, its NAR, and a statement naming it.
fn fixture(d: &Path) -> (String, PathBuf, Statement) {
    let src = d.join("output-file");
    std::fs::write(&src, format!("an output {:?}\n", std::time::SystemTime::now())).unwrap();
    let out = Command::new("nix-store").arg("--add").arg(&src).output().unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let nar = Command::new("nix-store").args(["--dump", &path]).output().unwrap().stdout;
    let nar_file = d.join("out.nar");
    std::fs::write(&nar_file, &nar).unwrap();
    use sha2::Digest;
    let st = Statement {
        drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
        drv_sha256: [7; 32],
        resolved: false,
        outputs: vec![Output { name: "out".into(), path: path.clone(), nar_sha256: sha2::Sha256::digest(&nar).into(), references: vec![] }],
        inputs: vec![Input { path: "/nix/store/11111111111111111111111111111111-in".into(), nar_sha256: [9; 32], references: vec![] }],
        agent_version: agent::VERSION.into(),
        attestation: AttestationKind::None,
    };
    (path, nar_file, st)
}

fn write(d: &Path, b: &Bundle) -> String {
    let p = d.join("evidence.json");
    std::fs::write(&p, b.to_json()).unwrap();
    p.to_string_lossy().into_owned()
}

fn stderr(o: &Out) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unattested_evidence_is_refused_unless_allowed() {
    let d = dir("unattested");
    let (path, nar, st) = fixture(&d);
    let ev = write(&d, &Bundle::unattested(st.to_json().as_bytes()));
    let nar = nar.to_string_lossy().into_owned();
    let o = tool(&["verify", &ev, "--nar", &nar]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: attestation: expected sev-snp or tdx, got none"), "{}", stderr(&o));
    let o = tool(&["verify", &ev, "--nar", &nar, "--store-path", &path, "--allow-unattested", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING: UNATTESTED"), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Accepted, but never called verified: not attested, and why.
    assert_eq!((j["verified"].as_bool(), j["attested"].as_bool(), j["unattested"].as_bool()), (Some(false), Some(false), Some(true)));
    assert!(j["why_not_verified"].as_str().unwrap().contains("without a TEE"), "{j}");
    assert_eq!(j["outputs"][0]["path"], path.as_str());
    assert_eq!(j["outputs_checked"], 2);
    let o = tool(&["verify", &ev, "--nar", &nar, "--allow-unattested"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("NOT verified:") && !out.contains("\nverified"), "{out}");
}

#[test]
fn tampering_with_outputs_statement_or_bundle_is_rejected() {
    let d = dir("tamper");
    let (path, nar, st) = fixture(&d);
    let bytes = st.to_json().into_bytes();
    let nar_s = nar.to_string_lossy().into_owned();
    // One byte of the output.
    let mut data = std::fs::read(&nar).unwrap();
    let last = data.len() - 9;
    data[last] ^= 1;
    let bad_nar = d.join("out-tampered.nar");
    std::fs::write(&bad_nar, &data).unwrap();
    std::fs::copy(&bad_nar, d.join("out.nar")).unwrap();
    let ev = write(&d, &Bundle::unattested(&bytes));
    let o = tool(&["verify", &ev, "--nar", &nar_s, "--allow-unattested"]);
    assert!(stderr(&o).contains(&format!("REJECTED: output {path}: expected NAR sha256")), "{}", stderr(&o));
    std::fs::write(&nar, std::process::Command::new("nix-store").args(["--dump", &path]).output().unwrap().stdout).unwrap();
    // One byte of the statement (the subject's digest).
    let text = String::from_utf8(bytes.clone()).unwrap();
    let digest = hex::encode(st.outputs[0].nar_sha256);
    let mut flipped = digest.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let tampered = text.replace(&digest, std::str::from_utf8(&flipped).unwrap());
    let ev = write(&d, &Bundle::unattested(tampered.as_bytes()));
    let o = tool(&["verify", &ev, "--nar", &nar_s, "--allow-unattested"]);
    assert!(!o.status.success() && stderr(&o).contains("REJECTED: output"), "{}", stderr(&o));
    // The bundle: the warning removed; an unknown kind; a claimed TEE without a report.
    let mut b = Bundle::unattested(&bytes);
    b.warning = None;
    let o = tool(&["verify", &write(&d, &b), "--allow-unattested"]);
    assert!(stderr(&o).contains("REJECTED: warning"), "{}", stderr(&o));
    let mut b = Bundle::unattested(&bytes);
    b.attestation = "trust-me".into();
    let o = tool(&["verify", &write(&d, &b), "--allow-unattested"]);
    assert!(stderr(&o).contains("REJECTED: attestation"), "{}", stderr(&o));
    let mut b = Bundle::unattested(&bytes);
    b.attestation = "sev-snp".into();
    b.warning = None;
    let o = tool(&["verify", &write(&d, &b), "--expected-measurement", &"ab".repeat(48)]);
    assert!(!o.status.success() && stderr(&o).contains("REJECTED: report: expected an SNP report"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

fn milan_report() -> Vec<u8> {
    hex::decode(String::from_utf8(std::fs::read(integration_tests::root().join("tests/vectors/snp/report_milan.hex")).unwrap()).unwrap().trim()).unwrap()
}

fn milan_measurement() -> String {
    hex::encode(&milan_report()[0x90..0xC0])
}

fn launch() -> measurement_tool::evidence::bundle::Launch {
    measurement_tool::evidence::bundle::Launch { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: 1 }
}

#[test]
fn an_snp_report_must_bind_the_statement_and_have_the_expected_measurement() {
    // Real, valid hardware evidence whose REPORT_DATA is not SHA-512 of this statement.
    let d = dir("binding");
    let (_, _, st) = fixture(&d);
    let v = |p: &str| std::fs::read(integration_tests::root().join("tests/vectors/snp").join(p)).unwrap();
    let b = Bundle::snp(st.to_json().as_bytes(), &milan_report(), Some(&v("vcek_milan.der")), None, launch());
    let ev = write(&d, &b);
    // No measurement: refused up front, saying how to get one.
    let o = tool(&["verify", &ev]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: measurement: expected a pinned launch measurement") && stderr(&o).contains("make agent"), "{}", stderr(&o));
    // Another measurement (say, the agent's): refused by the measurement, whatever else holds.
    let o = tool(&["verify", &ev, "--expected-measurement", &"ab".repeat(48)]);
    assert!(stderr(&o).contains(&format!("REJECTED: measurement: expected {}, got {}", "ab".repeat(48), milan_measurement())), "{}", stderr(&o));
    // Its own measurement: on to the binding, which does not hold.
    let o = tool(&["verify", &ev, "--expected-measurement", &milan_measurement()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
    // --any-measurement does not skip the binding either.
    let o = tool(&["verify", &ev, "--any-measurement"]);
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// The SNP launch parameters the host wrote are compared with the verifier's allow-list (1 vCPU,
/// EPYC-v4, SEV_FEATURES 0x1), never used to compute the expected digest.
#[test]
fn host_written_launch_parameters_are_not_adopted() {
    let d = dir("launch");
    let (_, _, st) = fixture(&d);
    let vcek = std::fs::read(integration_tests::root().join("tests/vectors/snp/vcek_milan.der")).unwrap();
    let m = milan_measurement();
    for (l, want) in [
        (measurement_tool::evidence::bundle::Launch { vcpus: 2, ..launch() }, "REJECTED: launch vCPUs: expected [1]"),
        (measurement_tool::evidence::bundle::Launch { vcpu_type: "EPYC-Milan".into(), ..launch() }, "REJECTED: launch vCPU type"),
        (measurement_tool::evidence::bundle::Launch { guest_features: 0x0, ..launch() }, "REJECTED: launch SEV_FEATURES: expected 0x1"),
    ] {
        let ev = write(&d, &Bundle::snp(st.to_json().as_bytes(), &milan_report(), Some(&vcek), None, l));
        let o = tool(&["verify", &ev, "--expected-measurement", &m]);
        assert!(!o.status.success() && stderr(&o).contains(want), "{want}: {}", stderr(&o));
    }
    let mut b = Bundle::snp(st.to_json().as_bytes(), &milan_report(), Some(&vcek), None, launch());
    b.launch = None;
    let o = tool(&["verify", &write(&d, &b), "--expected-measurement", &m]);
    assert!(stderr(&o).contains("REJECTED: launch parameters"), "{}", stderr(&o));
    // --agent measures the image with the allow-listed parameters: this image is not the one
    // that made the report, so the measurement refuses it (the bundle's launch is irrelevant).
    let ev = write(&d, &Bundle::snp(st.to_json().as_bytes(), &milan_report(), Some(&vcek), None, launch()));
    let agent = integration_tests::agent_bin();
    let o = tool(&["verify", &ev, "--agent", agent.to_str().unwrap()]);
    let want = measurement_tool::evidence::check::expected_measurements(&std::fs::read(&agent).unwrap(), "sev-snp", &Default::default()).unwrap();
    assert_eq!(want.len(), 1);
    assert!(stderr(&o).contains(&format!("REJECTED: measurement: expected {}, got {m}", want[0])), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// Run from a checkout, verify reads target/reference-measurements.json (written by
/// `make agent`), and refuses it when target/agent.bin is no longer the image it describes.
#[test]
fn verify_reads_the_checkouts_reference_measurements() {
    use measurement_tool::evidence::reference::{Reference, SnpReference, FORMAT};
    let d = dir("reference");
    let (_, _, st) = fixture(&d);
    let vcek = std::fs::read(integration_tests::root().join("tests/vectors/snp/vcek_milan.der")).unwrap();
    let ev = write(&d, &Bundle::snp(st.to_json().as_bytes(), &milan_report(), Some(&vcek), None, launch()));
    let checkout = d.join("checkout");
    std::fs::create_dir_all(checkout.join("target")).unwrap();
    let run = || Command::new(integration_tests::bin("measurement-tool")).current_dir(&checkout).args(["verify", &ev]).output().unwrap();
    assert!(stderr(&run()).contains("REJECTED: measurement: expected a pinned"), "{}", stderr(&run()));
    let image = b"an agent image".to_vec();
    use sha2::Digest;
    let reference = Reference {
        format: FORMAT.into(),
        image_sha256: hex::encode(sha2::Sha256::digest(&image)),
        sev_snp: vec![SnpReference { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: "0x1".into(), launch_digest: milan_measurement() }],
        tdx_mrtd: "00".repeat(48),
    };
    std::fs::write(checkout.join("target/reference-measurements.json"), reference.to_json()).unwrap();
    std::fs::write(checkout.join("target/agent.bin"), &image).unwrap();
    let o = run();
    assert!(stderr(&o).contains("expected measurement: target/reference-measurements.json"), "{}", stderr(&o));
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
    std::fs::write(checkout.join("target/agent.bin"), b"a rebuilt agent").unwrap();
    let o = run();
    assert!(!o.status.success() && stderr(&o).contains("stale, run `make agent` again"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// Evidence from a host that supplied no VCEK (SNP) or collateral (TDX): verify says how to
/// supply them, and with `--vcek` / `--collateral` goes on to the real checks (here: the real
/// evidence does not sign this statement, so the binding check is what rejects it).
#[test]
fn missing_certificates_and_collateral_can_be_supplied_to_verify() {
    let d = dir("supply");
    let (_, _, st) = fixture(&d);
    let vectors = integration_tests::root().join("tests/vectors");
    let report = hex::decode(String::from_utf8(std::fs::read(vectors.join("snp/report_milan.hex")).unwrap()).unwrap().trim()).unwrap();
    let snp_bundle = Bundle::snp(st.to_json().as_bytes(), &report, None, None, measurement_tool::evidence::bundle::Launch { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: 1 });
    let snp_file = write(&d, &snp_bundle);
    let m = milan_measurement();
    let o = tool(&["verify", &snp_file, "--expected-measurement", &m]);
    assert!(!o.status.success());
    // Where AMD KDS serves this report's VCEK (its CHIP_ID; the TCB its VCEK certifies).
    let url = format!("https://kdsintf.amd.com/vcek/v1/{{Milan|Genoa}}/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115", hex::encode(&report[0x1A0..0x1E0]));
    assert!(stderr(&o).contains("--vcek FILE") && stderr(&o).contains(&url), "{}", stderr(&o));
    let vcek = vectors.join("snp/vcek_milan.der");
    let o = tool(&["verify", &snp_file, "--expected-measurement", &m, "--vcek", vcek.to_str().unwrap()]);
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
    let chain = vectors.join("snp/cert_chain_milan");
    let o = tool(&["verify", &snp_file, "--expected-measurement", &m, "--vcek", vcek.to_str().unwrap(), "--cert-chain", chain.to_str().unwrap()]);
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));

    let quote = std::fs::read(vectors.join("tdx/tdx_quote")).unwrap();
    let tdx_file = d.join("tdx.json");
    std::fs::write(&tdx_file, Bundle::tdx(st.to_json().as_bytes(), &quote, None).to_json()).unwrap();
    let mrtd = hex::encode(&quote[48 + 136..48 + 184]);
    let o = tool(&["verify", tdx_file.to_str().unwrap(), "--expected-measurement", &mrtd]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--collateral FILE") && stderr(&o).contains("--tdx-collateral"), "{}", stderr(&o));
    let coll = vectors.join("tdx/tdx_quote_collateral.json");
    let now = integration_tests::collateral_midpoint(&std::fs::read(&coll).unwrap()).to_string();
    let o = tool(&["verify", tdx_file.to_str().unwrap(), "--expected-measurement", &mrtd, "--collateral", coll.to_str().unwrap(), "--now", &now]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: report data"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// A VLEK-signed report (SIGNING_KEY = 1) chains through AMD's ASVK, which is not pinned: without
/// a chain, verify names the one to fetch instead of failing at the pinned ASK.
#[test]
fn a_vlek_signed_report_needs_its_chain() {
    let d = dir("vlek");
    let (_, _, st) = fixture(&d);
    let vectors = integration_tests::root().join("tests/vectors");
    let mut report = hex::decode(String::from_utf8(std::fs::read(vectors.join("snp/report_milan.hex")).unwrap()).unwrap().trim()).unwrap();
    report[0x48] |= 1 << 2;
    let launch = measurement_tool::evidence::bundle::Launch { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: 1 };
    let file = write(&d, &Bundle::snp(st.to_json().as_bytes(), &report, Some(&std::fs::read(vectors.join("snp/vcek_milan.der")).unwrap()), None, launch.clone()));
    let m = hex::encode(&report[0x90..0xC0]);
    let o = tool(&["verify", &file, "--expected-measurement", &m]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cert-chain FILE (https://kdsintf.amd.com/vlek/v1/{Milan|Genoa}/cert_chain)"), "{}", stderr(&o));
    let file = write(&d, &Bundle::snp(st.to_json().as_bytes(), &report, None, None, launch));
    let o = tool(&["verify", &file, "--expected-measurement", &m]);
    assert!(stderr(&o).contains("signed by a VLEK") && stderr(&o).contains("--vcek FILE"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// The statement names the platform the agent found at boot; a bundle of another kind is
/// refused even when everything else holds.
#[test]
fn the_statement_must_name_the_bundles_attestation() {
    let d = dir("kind");
    let (_, nar, mut st) = fixture(&d);
    st.attestation = AttestationKind::SevSnp;
    let ev = write(&d, &Bundle::unattested(st.to_json().as_bytes()));
    let o = tool(&["verify", &ev, "--nar", &nar.to_string_lossy(), "--allow-unattested"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: attestation: expected sev-snp (the kind the statement names), got none"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}
