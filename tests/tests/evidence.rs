//! Real published SEV-SNP and TDX evidence (tests/vectors/README.md), accepted with the right
//! policy; and a tamper suite generated from it, each variant rejected for the right reason.
use measurement_tool::evidence::policy::{MinTcb, Policy};
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

/// The real Milan report with bytes edited, read back for the policy stage alone (its signature
/// no longer verifies: that check is `snp_tamper_suite`'s). Its TCB and generation are those the
/// verified original has.
fn edited_milan(edit: impl Fn(&mut Vec<u8>)) -> snp::Verified {
    let mut raw = milan_report();
    edit(&mut raw);
    let report = snp::Report::parse(&raw).unwrap();
    snp::Verified { tcb: report.reported_tcb(snp::Generation::Milan), report, generation: snp::Generation::Milan }
}

fn pinned(v: &snp::Verified) -> Policy {
    Policy { expected_measurements: vec![hex::encode(v.report.measurement)], ..Policy::default() }
}

#[test]
fn the_default_snp_policy_refuses_each_field() {
    let v = snp::verify(&milan_report(), &vector("snp/vcek_milan.der"), None).unwrap();
    let reject = |v: &snp::Verified, p: &Policy| snp::check_policy(v, p).unwrap_err().check;
    // Without a measurement the genuine report is refused, saying how to get one.
    let e = snp::check_policy(&v, &Policy::default()).unwrap_err();
    assert_eq!(e.check, "measurement");
    assert!(e.expected.contains("make agent") && e.expected.contains("measurement-tool measure"), "{e}");
    // With its own measurement the default policy accepts it: policy 0x30000, VMPL 0, no
    // migration agent, TCB (3, 0, 8, 115) = the built-in Milan floor.
    assert_eq!(v.report.policy, 0x30000);
    snp::check_policy(&v, &pinned(&v)).unwrap();
    snp::check_policy(&v, &Policy { any_measurement: true, ..Policy::default() }).unwrap();
    assert_eq!(reject(&v, &Policy { expected_measurements: vec!["00".repeat(48)], ..Policy::default() }), "measurement");
    assert_eq!(reject(&v, &Policy { report_data: Some("11".repeat(64)), ..pinned(&v) }), "report data");
    // The edited report is the original as far as the policy stage goes.
    let same = edited_milan(|_| {});
    snp::check_policy(&same, &pinned(&v)).unwrap();
    let p = pinned(&v);
    let policy_bit = |bit: u32, set: bool| edited_milan(move |r| if set { r[0x08 + bit as usize / 8] |= 1 << (bit % 8) } else { r[0x08 + bit as usize / 8] &= !(1 << (bit % 8)) });
    // Guest policy: MIGRATE_MA (18), DEBUG (19), SINGLE_SOCKET (20), bit 17 (must be one).
    assert_eq!(reject(&policy_bit(18, true), &p), "guest policy bits");
    assert_eq!(reject(&policy_bit(19, true), &p), "debug policy");
    snp::check_policy(&policy_bit(19, true), &Policy { allow_debug: true, ..p.clone() }).unwrap();
    assert_eq!(reject(&policy_bit(20, true), &p), "guest policy bits");
    assert_eq!(reject(&policy_bit(17, false), &p), "guest policy bits");
    // SMT not allowed (bit 16 clear) only restricts the guest further: allowed.
    snp::check_policy(&policy_bit(16, false), &p).unwrap();
    // The ABI version the guest asked for (bits 0..15) is not the verifier's to check.
    snp::check_policy(&policy_bit(0, true), &p).unwrap();
    // VMPL 1.
    assert_eq!(reject(&edited_milan(|r| r[0x30] = 1), &p), "VMPL");
    // A migration agent (REPORT_ID_MA not all ones).
    assert_eq!(reject(&edited_milan(|r| r[0x160..0x180].fill(0)), &p), "REPORT_ID_MA");
    // TCB below the floor, per component (REPORTED_TCB 0x180: bootloader, TEE, .., SNP, microcode).
    assert_eq!(reject(&edited_milan(|r| r[0x180] = 2), &p), "TCB bootloader");
    assert_eq!(reject(&edited_milan(|r| r[0x186] = 7), &p), "TCB snp");
    assert_eq!(reject(&edited_milan(|r| r[0x187] = 114), &p), "TCB microcode");
    // A higher TCB passes; the floor can be raised (--min-tcb), never lowered but by a file.
    snp::check_policy(&edited_milan(|r| r[0x186] = 9), &p).unwrap();
    let raised = Policy { raise_tcb: Some(MinTcb::parse("snp=9").unwrap()), ..p.clone() };
    assert_eq!(reject(&v, &raised), "TCB snp");
    let lowered = Policy { raise_tcb: Some(MinTcb::parse("snp=1").unwrap()), ..p.clone() };
    assert_eq!(reject(&edited_milan(|r| r[0x186] = 7), &lowered), "TCB snp");
    let file = Policy::from_toml(&format!("expected_measurements = [\"{}\"]\nmin_tcb = {{ bootloader = 3, snp = 7, microcode = 115 }}\n", hex::encode(v.report.measurement))).unwrap();
    snp::check_policy(&edited_milan(|r| r[0x186] = 7), &file).unwrap();
    // PLATFORM_INFO is allowed as reported (0x1 here) unless a file requires bits (BadRAM's
    // ALIAS_CHECK_COMPLETE, bit 5).
    assert_eq!(v.report.platform_info, 0x1);
    let alias = Policy::from_toml(&format!("expected_measurements = [\"{}\"]\nrequired_platform_info = \"0x20\"\n", hex::encode(v.report.measurement))).unwrap();
    assert_eq!(reject(&v, &alias), "platform info");
    // No floor is built in for Genoa or Turin: refused until one is given.
    let genoa = snp::Verified { generation: snp::Generation::Genoa, ..v.clone() };
    assert_eq!(reject(&genoa, &p), "TCB floor");
    snp::check_policy(&genoa, &Policy { raise_tcb: Some(MinTcb::parse("bootloader=3,snp=8,microcode=115").unwrap()), ..p.clone() }).unwrap();
    assert!(Policy::from_toml("unknown_key = 1").is_err());
}

/// The policy file docs/verification.md shows parses, and means what the text says: its raised
/// floor (the GCP report's TCB) and required ALIAS_CHECK_COMPLETE refuse the older Milan report
/// and accept the GCP one.
#[test]
fn the_documented_policy_file_parses_and_applies() {
    let doc = std::fs::read_to_string(integration_tests::root().join("docs/verification.md")).unwrap();
    let toml = doc.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let v = snp::verify(&milan_report(), &vector("snp/vcek_milan.der"), None).unwrap();
    let p = Policy::from_toml(&toml.replace("<96 hex digits>", &hex::encode(v.report.measurement))).unwrap();
    assert_eq!((p.allowed_policy_bits, p.required_td_attributes, p.allowed_td_attributes), (0x30000, 1 << 28, 1 << 28));
    assert_eq!(p.snp_launch, measurement_tool::evidence::policy::SnpLaunch::default());
    // The Milan report lacks ALIAS_CHECK_COMPLETE (PLATFORM_INFO 0x1), and its TCB is below.
    assert_eq!(snp::check_policy(&v, &p).unwrap_err().check, "platform info");
    assert_eq!(snp::check_policy(&v, &Policy { required_platform_info: 0, ..p.clone() }).unwrap_err().check, "TCB bootloader");
    let gcp_text: String = String::from_utf8(vector("snp/report_gcp_milan_v5.hex")).unwrap().split_whitespace().collect();
    let gcp = snp::verify(&hex::decode(gcp_text).unwrap(), &vector("snp/vcek_gcp_milan.pem"), None).unwrap();
    let p = Policy { expected_measurements: vec![hex::encode(gcp.report.measurement)], ..p };
    // The GCP report meets the raised floor and reports ALIAS_CHECK_COMPLETE (PLATFORM_INFO 0x25).
    assert_eq!(gcp.report.platform_info, 0x25);
    snp::check_policy(&gcp, &p).unwrap();
}

/// The key that signed a report certifies its TCB: checked for a VLEK exactly as for a VCEK.
#[test]
fn the_signing_keys_tcb_extensions_must_be_the_reported_tcb() {
    use measurement_tool::evidence::sev::certs::snp::Certificate;
    let vcek = Certificate::from_der(&vector("snp/vcek_milan.der")).unwrap();
    let certified = snp::certified(&vcek).unwrap();
    assert_eq!((certified.bootloader, certified.tee, certified.snp, certified.microcode), (Some(3), Some(0), Some(8), Some(115)));
    let report = snp::Report::parse(&milan_report()).unwrap();
    snp::check_certified(&report, snp::Generation::Milan, &certified).unwrap();
    for signing_key in [0, 1] {
        let mut r = report.clone();
        r.signing_key = signing_key;
        r.reported_tcb_raw ^= 1 << 48; // SNP SPL 8 -> 9
        assert_eq!(snp::check_certified(&r, snp::Generation::Milan, &certified).unwrap_err().check, "reported TCB", "signing key {signing_key}");
        let missing = snp::Certified { microcode: None, ..certified.clone() };
        assert_eq!(snp::check_certified(&report, snp::Generation::Milan, &missing).unwrap_err().check, "certified TCB");
    }
    // A report naming no signing key (7) or a reserved one is refused before any signature.
    let mut raw = milan_report();
    raw[0x48] |= 7 << 2;
    check(snp::verify(&raw, &vector("snp/vcek_milan.der"), None), "signing key");
}

/// The launch parameters a bundle records are only compared with the verifier's allow-list.
#[test]
fn host_written_launch_parameters_outside_the_allow_list_are_refused() {
    use measurement_tool::evidence::policy::{SnpLaunch, SNP_GUEST_FEATURES};
    let l = SnpLaunch::default();
    l.check(1, "EPYC-v4", SNP_GUEST_FEATURES).unwrap();
    assert_eq!(l.check(2, "EPYC-v4", 0x1).unwrap_err().check, "launch vCPUs");
    assert_eq!(l.check(1, "EPYC-Milan", 0x1).unwrap_err().check, "launch vCPU type");
    assert_eq!(l.check(1, "EPYC-v4", 0x0).unwrap_err().check, "launch SEV_FEATURES");
    assert_eq!(l.check(1, "EPYC-v4", 0x21).unwrap_err().check, "launch SEV_FEATURES");
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
    assert_eq!(v.status, "UpToDate");
    // This quote's guest (a Linux TD) extended RTMR0..2: the default policy refuses it, a policy
    // file that allows RTMRs accepts it with its MRTD.
    let p = Policy { expected_measurements: vec![hex::encode(v.mr_td)], report_data: Some(hex::encode(v.report_data)), ..Policy::default() };
    assert_eq!(tdx::check_policy(&v, &p).unwrap_err().check, "RTMR");
    let p = Policy { allow_nonzero_rtmrs: true, ..p };
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
    // Policy: MRTD, report data (the per-field suite is the next test).
    let reject = |v: &tdx::Verified, p: &Policy| tdx::check_policy(v, p).unwrap_err().check;
    assert_eq!(reject(&v, &Policy { expected_measurements: vec!["00".repeat(48)], ..Policy::default() }), "MRTD");
    assert_eq!(reject(&v, &Policy { report_data: Some("11".repeat(64)), ..p.clone() }), "report data");
    assert_eq!(reject(&v, &Policy { allow_nonzero_rtmrs: true, ..Policy::default() }), "MRTD");
}

/// A real quote's bytes edited, read back for the policy stage alone (the signature check is
/// the previous test's), with the TCB status dcap-qvl gave the original.
fn edited_quote(name: &str, edit: impl Fn(&mut Vec<u8>)) -> tdx::Verified {
    let mut q = vector(name);
    edit(&mut q);
    let mut v = tdx::parse_fields(&q).unwrap();
    v.status = "UpToDate".into();
    v
}

#[test]
fn the_default_tdx_policy_refuses_each_field() {
    // v4 quote: header 48 bytes, then the TD report body: TD_ATTRIBUTES at 120, MRTD at 136,
    // RTMR0..3 at 328 + 48 i (TDX module ABI, TDREPORT's TDINFO; DCAP quote format).
    const BODY: usize = 48;
    let zero_rtmrs = |q: &mut Vec<u8>| q[BODY + 328..BODY + 520].fill(0);
    let base = edited_quote("tdx/tdx_quote", zero_rtmrs);
    // Read as verify reads it: the same fields dcap-qvl's verification yields.
    let coll_json = vector("tdx/tdx_quote_collateral.json");
    let verified = tdx::verify(&vector("tdx/tdx_quote"), &tdx::parse_collateral(&coll_json).unwrap(), within(&coll_json)).unwrap();
    assert_eq!((base.mr_td, base.td_attributes, base.report_data), (verified.mr_td, verified.td_attributes, verified.report_data));
    assert_eq!(base.td_attributes, tdx::TD_SEPT_VE_DISABLE, "the real TD has SEPT_VE_DISABLE and nothing else");
    let p = Policy { expected_measurements: vec![hex::encode(base.mr_td)], ..Policy::default() };
    tdx::check_policy(&base, &p).unwrap();
    let e = tdx::check_policy(&base, &Policy::default()).unwrap_err();
    assert!(e.check == "MRTD" && e.expected.contains("make agent"), "{e}");
    let reject = |v: &tdx::Verified, p: &Policy| tdx::check_policy(v, p).unwrap_err().check;
    let attr = |byte: usize, mask: u8, set: bool| {
        edited_quote("tdx/tdx_quote", move |q| {
            zero_rtmrs(q);
            if set { q[BODY + 120 + byte] |= mask } else { q[BODY + 120 + byte] &= !mask }
        })
    };
    // MIGRATABLE (bit 29), no SEPT_VE_DISABLE (bit 28), DEBUG (bit 0), PKS (bit 30).
    assert_eq!(attr(3, 0x20, true).td_attributes & tdx::TD_MIGRATABLE, tdx::TD_MIGRATABLE);
    assert_eq!(reject(&attr(3, 0x20, true), &p), "TD attributes");
    assert_eq!(reject(&attr(3, 0x10, false), &p), "TD attributes");
    assert_eq!(reject(&attr(0, 0x01, true), &p), "TD attributes");
    tdx::check_policy(&attr(0, 0x01, true), &Policy { allow_debug: true, ..p.clone() }).unwrap();
    assert_eq!(reject(&attr(3, 0x40, true), &p), "TD attributes");
    // Each RTMR non-zero.
    for i in 0..4 {
        let v = edited_quote("tdx/tdx_quote", move |q| {
            zero_rtmrs(q);
            q[BODY + 328 + 48 * i + 47] = 1;
        });
        assert_eq!(reject(&v, &p), "RTMR", "RTMR{i}");
    }
    // TCB statuses other than UpToDate.
    for status in ["SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded", "OutOfDate", "Revoked"] {
        let v = tdx::Verified { status: status.into(), ..base.clone() };
        assert_eq!(reject(&v, &p), "TCB status", "{status}");
    }
    // SERVTD hash: a v5 quote with a TD 1.5 body (54-byte header + type + size, then the body:
    // the 1.0 fields, TEE_TCB_SVN2, MRSERVICETD at 584 + 16).
    const V5: usize = 54;
    let zero = |q: &mut Vec<u8>| {
        q[V5 + 328..V5 + 520].fill(0);
    };
    let td15 = edited_quote("tdx/tdx_quote_td15ex", zero);
    // A 1.5-ex body: MRSERVICETD and the initial and current SERVTD hashes, all zero here.
    assert_eq!(td15.servtd_hashes, vec![[0; 48]; 3]);
    let p15 = Policy { expected_measurements: vec![hex::encode(td15.mr_td)], ..Policy::default() };
    tdx::check_policy(&td15, &p15).unwrap();
    let servtd = edited_quote("tdx/tdx_quote_td15ex", move |q| {
        zero(q);
        q[V5 + 584 + 16] ^= 1;
    });
    assert_ne!(servtd.servtd_hashes[0], td15.servtd_hashes[0]);
    assert_eq!(reject(&servtd, &Policy { allow_servtd: false, ..p15.clone() }), "SERVTD hash");
    // The documented policy file parses; its TD attributes accept a QEMU 10.1 TD (bit 28 set).
    let doc = format!(
        "expected_measurements = [\"{}\"]\nrequired_td_attributes = \"0x10000000\"\nallowed_td_attributes = \"0x10000000\"\nallowed_tcb_statuses = [\"UpToDate\"]\n",
        hex::encode(base.mr_td)
    );
    tdx::check_policy(&base, &Policy::from_toml(&doc).unwrap()).unwrap();
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

fn milan_measurement() -> String {
    hex::encode(&milan_report()[0x90..0xC0])
}

#[test]
fn verify_report_cli_exit_status_and_messages() {
    let snp = |extra: &[&str]| tool().args(["verify-report", "snp"]).arg(path("snp/report_milan.hex")).arg("--vcek").arg(path("snp/vcek_milan.der")).args(extra).output().unwrap();
    // The genuine report, no measurement given: refused, saying how to get one.
    let o = snp(&[]);
    assert!(!o.status.success());
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(msg.contains("REJECTED: measurement: expected a pinned launch measurement") && msg.contains("make agent"), "{msg}");
    // With its own measurement: verified. (Its guest policy is 0x30000: DEBUG is clear, so
    // --allow-debug is not needed; with it the report is accepted too.)
    let m = milan_measurement();
    for extra in [&["--expected-measurement", m.as_str(), "--json"][..], &["--expected-measurement", m.as_str(), "--allow-debug", "--json"][..]] {
        let o = snp(extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!((j["verified"].as_bool(), j["policy"].as_str(), j["measurement"].as_str()), (Some(true), Some("0x30000"), Some(m.as_str())));
    }
    // Another measurement: refused, naming both.
    let o = snp(&["--expected-measurement", &"ab".repeat(48)]);
    assert!(!o.status.success());
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(msg.contains("measurement: expected abab"), "{msg}");
    // A malformed measurement is refused before anything else.
    let o = snp(&["--expected-measurement", "abc"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("96 hex digits"));
    // --any-measurement: exit 0, but a warning, and the JSON does not say verified.
    let o = snp(&["--any-measurement", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("WARNING: --any-measurement"));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["verified"].as_bool(), j["measurement_checked"].as_bool()), (Some(false), Some(false)));
    // A raised TCB floor refuses it.
    let o = snp(&["--expected-measurement", &m, "--min-tcb", "snp=9"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("REJECTED: TCB snp: expected >= 9, got 8"), "{}", String::from_utf8_lossy(&o.stderr));

    // TDX: the real quote has non-zero RTMRs (a Linux TD): refused by the default policy even
    // with its MRTD, accepted with a policy file that allows them.
    let coll = vector("tdx/tdx_quote_collateral.json");
    let now = within(&coll).to_string();
    let quote = vector("tdx/tdx_quote");
    let mrtd = hex::encode(&quote[48 + 136..48 + 184]);
    let tdx = |extra: &[&str]| {
        tool().args(["verify-report", "tdx"]).arg(path("tdx/tdx_quote")).arg("--collateral").arg(path("tdx/tdx_quote_collateral.json")).args(["--now", &now]).args(extra).output().unwrap()
    };
    let o = tdx(&[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("REJECTED: MRTD: expected a pinned launch measurement"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tdx(&["--expected-measurement", &mrtd]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("REJECTED: RTMR: expected RTMR0 zero"), "{}", String::from_utf8_lossy(&o.stderr));
    let policy = std::env::temp_dir().join(format!("verify-report-policy-{}.toml", std::process::id()));
    std::fs::write(&policy, format!("expected_measurements = [\"{mrtd}\"]\nallow_nonzero_rtmrs = true\n")).unwrap();
    let o = tdx(&["--policy", policy.to_str().unwrap(), "--json"]);
    let _ = std::fs::remove_file(&policy);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["mrtd"].as_str().unwrap(), mrtd);
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
