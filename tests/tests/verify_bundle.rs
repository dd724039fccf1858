//! `measurement-tool verify` on evidence bundles: the unattested kind is refused unless allowed,
//! the statement's subjects must match the outputs, REPORT_DATA must bind the statement, and any
//! tampering is rejected.
use agent::proto::AttestationKind;
use agent::statement::{Input, Output, Statement};
use base64::Engine;
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
    assert_eq!(j["unattested"], true);
    assert_eq!(j["outputs"][0]["path"], path.as_str());
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
    let o = tool(&["verify", &write(&d, &b)]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_snp_report_must_bind_the_statement() {
    // Real, valid hardware evidence whose REPORT_DATA is not SHA-512 of this statement.
    let d = dir("binding");
    let (_, _, st) = fixture(&d);
    let v = |p: &str| std::fs::read(integration_tests::root().join("tests/vectors/snp").join(p)).unwrap();
    let report = hex::decode(String::from_utf8(v("report_milan.hex")).unwrap().trim()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut b = Bundle::unattested(st.to_json().as_bytes());
    b.attestation = "sev-snp".into();
    b.warning = None;
    b.report = Some(b64.encode(&report));
    b.vcek = Some(b64.encode(v("vcek_milan.der")));
    let o = tool(&["verify", &write(&d, &b)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
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
    let o = tool(&["verify", &snp_file]);
    assert!(!o.status.success());
    // Where AMD KDS serves this report's VCEK (its CHIP_ID; the TCB its VCEK certifies).
    let url = format!("https://kdsintf.amd.com/vcek/v1/{{Milan|Genoa}}/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115", hex::encode(&report[0x1A0..0x1E0]));
    assert!(stderr(&o).contains("--vcek FILE") && stderr(&o).contains(&url), "{}", stderr(&o));
    let vcek = vectors.join("snp/vcek_milan.der");
    let o = tool(&["verify", &snp_file, "--vcek", vcek.to_str().unwrap()]);
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));
    let chain = vectors.join("snp/cert_chain_milan");
    let o = tool(&["verify", &snp_file, "--vcek", vcek.to_str().unwrap(), "--cert-chain", chain.to_str().unwrap()]);
    assert!(stderr(&o).contains("REJECTED: report data: expected"), "{}", stderr(&o));

    let quote = std::fs::read(vectors.join("tdx/tdx_quote")).unwrap();
    let tdx_file = d.join("tdx.json");
    std::fs::write(&tdx_file, Bundle::tdx(st.to_json().as_bytes(), &quote, None).to_json()).unwrap();
    let o = tool(&["verify", tdx_file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--collateral FILE") && stderr(&o).contains("--tdx-collateral"), "{}", stderr(&o));
    let coll = vectors.join("tdx/tdx_quote_collateral.json");
    let now = integration_tests::collateral_midpoint(&std::fs::read(&coll).unwrap()).to_string();
    let o = tool(&["verify", tdx_file.to_str().unwrap(), "--collateral", coll.to_str().unwrap(), "--now", &now]);
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
    let o = tool(&["verify", &file]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cert-chain FILE (https://kdsintf.amd.com/vlek/v1/{Milan|Genoa}/cert_chain)"), "{}", stderr(&o));
    let file = write(&d, &Bundle::snp(st.to_json().as_bytes(), &report, None, None, launch));
    let o = tool(&["verify", &file]);
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
    assert!(stderr(&o).contains("REJECTED: attestation: the statement says sev-snp, the bundle's evidence is none"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}
