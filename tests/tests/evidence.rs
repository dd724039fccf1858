//! Real published SEV-SNP and TDX evidence (tests/vectors/README.md), accepted with the right
//! policy; and a tamper suite generated from it, each variant rejected for the right reason.
use measurement_tool::evidence::policy::Policy;
use measurement_tool::evidence::{snp, tdx, Rejection};
use std::path::PathBuf;
use std::process::Command;

fn vector(p: &str) -> Vec<u8> {
    std::fs::read(integration_tests::root().join("tests/vectors").join(p)).unwrap()
}

fn milan_report() -> Vec<u8> {
    hex::decode(String::from_utf8(vector("snp/report_milan.hex")).unwrap().trim()).unwrap()
}

fn check(r: Result<snp::Verified, Rejection>, want: &str) {
    match r {
        Err(e) => assert_eq!(e.check, want, "{e}"),
        Ok(_) => panic!("accepted; expected rejection by {want}"),
    }
}

#[test]
fn real_milan_report_verifies_against_the_pinned_chain() {
    let v = snp::verify(&milan_report(), &vector("snp/vcek_milan.der"), None).unwrap();
    assert_eq!(v.generation, snp::Generation::Milan);
    // With AMD's cert_chain file too (its ARK is the pinned one).
    let chain = snp::parse_cert_chain(&vector("snp/cert_chain_milan")).unwrap();
    snp::verify(&milan_report(), &vector("snp/vcek_milan.der"), Some(&chain)).unwrap();
    // And the report's own measurement is accepted when expected.
    let p = Policy { expected_measurements: vec![hex::encode(v.report.measurement)], report_data: Some(hex::encode(v.report.report_data)), ..Policy::default() };
    snp::check_policy(&v, &p).unwrap();
}

#[test]
fn turin_vcek_chains_to_the_pinned_turin_root() {
    use measurement_tool::evidence::sev::certs::snp::{Certificate, Chain, Verifiable};
    let vcek = Certificate::from_der(&vector("snp/vcek_turin.der")).unwrap();
    let chain = snp::parse_cert_chain(&vector("snp/cert_chain_turin")).unwrap();
    assert!(chain.ark == snp::Generation::Turin.pinned().ark, "AMD's Turin cert_chain carries the pinned ARK");
    assert!((&Chain { ca: snp::Generation::Turin.pinned(), vek: vcek.clone() }).verify().is_ok());
    assert!((&Chain { ca: snp::Generation::Milan.pinned(), vek: vcek }).verify().is_err());
}

#[test]
fn snp_tamper_suite() {
    let vcek = vector("snp/vcek_milan.der");
    let flip = |off: usize| {
        let mut r = milan_report();
        r[off] ^= 0x01;
        r
    };
    for (name, off) in [
        ("measurement", 0x90),
        ("report data", 0x50),
        ("policy", 0x08),
        ("reported TCB", 0x180),
        ("chip id", 0x1A0),
        ("host data", 0xC0),
        ("a reserved byte", 0x1F8),
        ("signature r", 0x2A0),
        ("signature s", 0x2E8),
    ] {
        let r = snp::verify(&flip(off), &vcek, None);
        assert!(r.is_err(), "{name}: accepted");
        check(r, "signature");
    }
    // Bytes outside the signed part but inside the signature fields' padding.
    let mut high = milan_report();
    high[0x2A0 + 60] = 1;
    check(snp::verify(&high, &vcek, None), "signature");
    // Truncated, or not a version in use.
    check(snp::verify(&milan_report()[..0x49F], &vcek, None), "report length");
    let mut v9 = milan_report();
    v9[0] = 9;
    check(snp::verify(&v9, &vcek, None), "report version");
    // Another chip's VCEK (a Turin one): its chain is fine, its key did not sign this report.
    check(snp::verify(&milan_report(), &vector("snp/vcek_turin.der"), None), "signature");
    // The wrong generation's ARK supplied by the host.
    let turin = snp::parse_cert_chain(&vector("snp/cert_chain_turin")).unwrap();
    check(snp::verify(&milan_report(), &vcek, Some(&turin)), "certificate chain");
    // A forged root: AMD's Milan ASK presented as its own ARK is refused.
    let milan = snp::Generation::Milan.pinned();
    let forged = measurement_tool::evidence::sev::certs::snp::ca::Chain { ark: milan.ask.clone(), ask: milan.ask };
    check(snp::verify(&milan_report(), &vcek, Some(&forged)), "certificate chain");
    // Garbage instead of a certificate.
    check(snp::verify(&milan_report(), b"not a certificate", None), "VCEK");
}

#[test]
fn snp_policy_failures_name_the_field() {
    let v = snp::verify(&milan_report(), &vector("snp/vcek_milan.der"), None).unwrap();
    let reject = |v: &snp::Verified, p: &Policy| snp::check_policy(v, p).unwrap_err().check;
    assert_eq!(reject(&v, &Policy { expected_measurements: vec!["00".repeat(48)], ..Policy::default() }), "measurement");
    assert_eq!(reject(&v, &Policy { report_data: Some("11".repeat(64)), ..Policy::default() }), "report data");
    let min = measurement_tool::evidence::policy::MinTcb { snp: v.tcb.snp + 1, ..Default::default() };
    assert_eq!(reject(&v, &Policy { min_tcb: Some(min), ..Policy::default() }), "TCB snp");
    assert_eq!(reject(&v, &Policy { allowed_policy_bits: Some(0), ..Policy::default() }), "guest policy bits");
    // Reports of a debuggable guest, and of a guest at VMPL 1 (fields as the parser yields them).
    let mut debug = v.clone();
    debug.report.policy |= snp::POLICY_DEBUG;
    assert_eq!(reject(&debug, &Policy::default()), "debug policy");
    assert!(snp::check_policy(&debug, &Policy { allow_debug: true, ..Policy::default() }).is_ok());
    let mut vmpl1 = v.clone();
    vmpl1.report.vmpl = 1;
    assert_eq!(reject(&vmpl1, &Policy::default()), "VMPL");
    // A TOML policy file.
    let p = Policy::from_toml(&format!("expected_measurements = [\"{}\"]\nmin_tcb = {{ snp = 8 }}\n", hex::encode(v.report.measurement))).unwrap();
    snp::check_policy(&v, &p).unwrap();
    assert!(Policy::from_toml("unknown_key = 1").is_err());
}

fn within(collateral: &[u8]) -> u64 {
    integration_tests::collateral_midpoint(collateral)
}

#[test]
fn real_tdx_quote_verifies_and_tampering_is_rejected() {
    let quote = vector("tdx/tdx_quote");
    let coll_json = vector("tdx/tdx_quote_collateral.json");
    let coll = tdx::parse_collateral(&coll_json).unwrap();
    let now = within(&coll_json);
    let v = tdx::verify(&quote, &coll, now).unwrap();
    let p = Policy { expected_measurements: vec![hex::encode(v.mr_td)], report_data: Some(hex::encode(v.report_data)), ..Policy::default() };
    tdx::check_policy(&v, &p).unwrap();
    // Tampered quote bytes (v4 layout: 48-byte header, 584-byte TD report body, then the
    // signature data): MRTD, REPORTDATA, TEE TCB SVN, the quote signature, the attestation key.
    for off in [48 + 136, 48 + 520, 48 + 8, 636, 700] {
        let mut q = quote.clone();
        q[off] ^= 1;
        assert_eq!(tdx::verify(&q, &coll, now).unwrap_err().check, "quote verification", "offset {off}");
    }
    assert_eq!(tdx::verify(&quote[..quote.len() / 2], &coll, now).unwrap_err().check, "quote length");
    // Collateral that has expired, or that belongs to another quote.
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if today > now + 400 * 86400 {
        assert_eq!(tdx::verify(&quote, &coll, today).unwrap_err().check, "quote verification");
    }
    assert!(tdx::parse_collateral(b"{}").is_err());
    let mut bad = coll.clone();
    bad.tcb_info = bad.tcb_info.replacen("\"tcbLevels\"", "\"tcbLevelz\"", 1);
    assert_eq!(tdx::verify(&quote, &bad, now).unwrap_err().check, "quote verification");
    // Policy: MRTD, report data, debug attribute, TCB status.
    let reject = |v: &tdx::Verified, p: &Policy| tdx::check_policy(v, p).unwrap_err().check;
    assert_eq!(reject(&v, &Policy { expected_measurements: vec!["00".repeat(48)], ..Policy::default() }), "MRTD");
    assert_eq!(reject(&v, &Policy { report_data: Some("11".repeat(64)), ..Policy::default() }), "report data");
    let mut debug = v.clone();
    debug.td_attributes |= tdx::TD_DEBUG;
    assert_eq!(reject(&debug, &Policy::default()), "TD attributes");
    let mut old = v.clone();
    old.status = "OutOfDate".into();
    assert_eq!(reject(&old, &Policy::default()), "TCB status");
}

#[test]
fn an_out_of_date_platform_is_rejected() {
    // dcap-qvl's "outdated" sample: the platform's TCB matches no level the collateral accepts.
    let quote = vector("tdx/tdx_quote_outdated");
    let coll_json = vector("tdx/tdx_quote_outdated_collateral.json");
    let coll = tdx::parse_collateral(&coll_json).unwrap();
    let e = match tdx::verify(&quote, &coll, within(&coll_json)) {
        Ok(v) => tdx::check_policy(&v, &Policy::default()).unwrap_err(),
        Err(e) => e,
    };
    assert!(e.check == "quote verification" || e.check == "TCB status", "{e}");
    assert!(e.actual.contains("TCB") || e.check == "TCB status", "{e}");
}

fn tool() -> Command {
    let mut c = Command::new(integration_tests::bin("measurement-tool"));
    c.env("RUST_BACKTRACE", "0");
    c
}

fn path(p: &str) -> PathBuf {
    integration_tests::root().join("tests/vectors").join(p)
}

#[test]
fn verify_report_cli_exit_status_and_messages() {
    let ok = tool().args(["verify-report", "snp"]).arg(path("snp/report_milan.hex")).arg("--vcek").arg(path("snp/vcek_milan.der")).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = tool()
        .args(["verify-report", "snp"])
        .arg(path("snp/report_milan.hex"))
        .arg("--vcek")
        .arg(path("snp/vcek_milan.der"))
        .args(["--expected-measurement", &"ab".repeat(48)])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("measurement: expected abab"), "{msg}");
    let coll = vector("tdx/tdx_quote_collateral.json");
    let ok = tool()
        .args(["verify-report", "tdx"])
        .arg(path("tdx/tdx_quote"))
        .arg("--collateral")
        .arg(path("tdx/tdx_quote_collateral.json"))
        .args(["--now", &within(&coll).to_string(), "--json"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let j: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["mrtd"].as_str().unwrap().len(), 96);
}

#[test]
fn unsigned_bytes_cannot_be_changed_and_more_real_evidence_verifies() {
    // Reserved bytes after the signature are not signed: any change must still be refused.
    let vcek = vector("snp/vcek_milan.der");
    let mut r = milan_report();
    r[0x400] = 1;
    check(snp::verify(&r, &vcek, None), "report");
    // A real v5 report (GCP, Milan) with its VCEK in PEM.
    let gcp_text: String = String::from_utf8(vector("snp/report_gcp_milan_v5.hex")).unwrap().split_whitespace().collect();
    let gcp = hex::decode(gcp_text).unwrap();
    let v = snp::verify(&gcp, &vector("snp/vcek_gcp_milan.pem"), None).unwrap();
    assert_eq!((v.report.version, v.generation), (5, snp::Generation::Milan));
    // TDX: a real v5 quote; trailing zero padding is fine, trailing garbage is not.
    let q5 = vector("tdx/tdx_quote_td15ex");
    let c5 = vector("tdx/tdx_quote_td15ex_collateral.json");
    let coll5 = tdx::parse_collateral(&c5).unwrap();
    tdx::verify(&q5, &coll5, within(&c5)).unwrap();
    let quote = vector("tdx/tdx_quote");
    let c4 = vector("tdx/tdx_quote_collateral.json");
    let coll = tdx::parse_collateral(&c4).unwrap();
    let mut padded = quote.clone();
    padded.extend_from_slice(&[0; 16]);
    tdx::verify(&padded, &coll, within(&c4)).unwrap();
    let mut garbage = quote.clone();
    garbage.push(1);
    assert_eq!(tdx::verify(&garbage, &coll, within(&c4)).unwrap_err().check, "quote length");
}
