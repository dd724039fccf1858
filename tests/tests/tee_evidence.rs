//! The agent's attesters and `measurement-tool verify-report` agree on real evidence: the bytes
//! the agent hands on from a real MSG_REPORT_RSP or GetQuote buffer are exactly what the verifier
//! accepts, and the agent's REPORT_DATA/REPORTDATA offsets are the verifier's (and the hardware's).
//! Vectors: tests/vectors/README.md (a Milan v2 and a GCP Milan v5 SNP report with their VCEKs;
//! a v4 and a v5 TDX quote with their collateral).
use agent::tee::{snp as agent_snp, tdx as agent_tdx, TeeError};
use measurement_tool::evidence::{snp, tdx};

fn vector(p: &str) -> Vec<u8> {
    std::fs::read(integration_tests::root().join("tests/vectors").join(p)).unwrap()
}

fn hex_vector(p: &str) -> Vec<u8> {
    let text: String = String::from_utf8(vector(p)).unwrap().split_whitespace().collect();
    hex::decode(text).unwrap()
}

fn within(collateral: &[u8]) -> u64 {
    integration_tests::collateral_midpoint(collateral)
}

#[test]
fn snp_report_responses_carrying_real_reports() {
    for (report, vcek) in [
        (hex_vector("snp/report_milan.hex"), vector("snp/vcek_milan.der")),
        (hex_vector("snp/report_gcp_milan_v5.hex"), vector("snp/vcek_gcp_milan.pem")),
    ] {
        let report_data: [u8; 64] = report[0x50..0x90].try_into().unwrap();
        let vmpl = u32::from_le_bytes(report[0x30..0x34].try_into().unwrap());
        // MSG_REPORT_RSP as the PSP sends it: status 0, size 0x4A0, reserved, the report.
        let mut rsp = vec![0u8; 0x20];
        rsp[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
        rsp.extend_from_slice(&report);
        let out = agent_snp::parse_report_response(&rsp, &report_data, vmpl).unwrap();
        assert_eq!(out, report);
        let v = snp::verify(&out, &vcek, None).unwrap();
        assert_eq!(v.report.report_data, report_data);
        assert_eq!(v.report.vmpl, vmpl);
        let mut other = report_data;
        other[63] ^= 1;
        assert_eq!(agent_snp::parse_report_response(&rsp, &other, vmpl), Err(TeeError::ReportMismatch("REPORT_DATA")));
    }
}

#[test]
fn tdx_getquote_buffers_carrying_real_quotes() {
    for (quote, collateral) in [
        (vector("tdx/tdx_quote"), vector("tdx/tdx_quote_collateral.json")),
        (vector("tdx/tdx_quote_td15ex"), vector("tdx/tdx_quote_td15ex_collateral.json")),
    ] {
        let coll = tdx::parse_collateral(&collateral).unwrap();
        let v = tdx::verify(&quote, &coll, within(&collateral)).unwrap();
        // The agent finds REPORTDATA where the verifier does, in v4 and v5 quotes.
        assert_eq!(agent_tdx::quote_report_data(&quote), Some(&v.report_data[..]));
        // A GetQuote buffer as QEMU returns it: version 1, status 0, out_len, the quote.
        let mut buf = agent_tdx::quote_request(&[0; agent_tdx::TDREPORT_LEN], 0x4000.max(24 + quote.len()).next_multiple_of(0x1000));
        buf[20..24].copy_from_slice(&(quote.len() as u32).to_le_bytes());
        buf[24..24 + quote.len()].copy_from_slice(&quote);
        buf[24 + quote.len()..].fill(0);
        let out = agent_tdx::parse_quote_response(&buf).unwrap();
        assert_eq!(out, quote);
        tdx::verify(&out, &coll, within(&collateral)).unwrap();
    }
}

/// A certificate-table GUID as the table stores it (RFC 4122 byte order), from its text form.
fn guid_bytes(s: &str) -> [u8; 16] {
    hex::decode(s.replace('-', "")).unwrap().try_into().unwrap()
}

/// The DER certificates of a PEM file, in order.
fn pem_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|c| {
            let body: String = c.split("-----END CERTIFICATE-----").next().unwrap().split_whitespace().collect();
            base64::engine::general_purpose::STANDARD.decode(body).unwrap()
        })
        .collect()
}

/// An SNP Evidence frame as the agent sends it (report + the extended request's VCEK, ASK and
/// ARK), through the loader: the binding check refuses a statement the report does not sign,
/// and the bundle the loader assembles carries certificates `measurement-tool` verifies the
/// real report with.
#[test]
fn snp_evidence_frames_become_bundles_the_verifier_accepts() {
    use agent::proto::{self, AttestationKind};
    use agent::tee::snp::cert_guid;
    let report = hex_vector("snp/report_milan.hex");
    let vcek = vector("snp/vcek_milan.der");
    let chain = pem_ders(&vector("snp/cert_chain_milan"));
    assert_eq!(chain.len(), 2, "ASK, ARK");
    let certs = vec![
        (guid_bytes(cert_guid::ARK), chain[1].clone()),
        (guid_bytes(cert_guid::VCEK), vcek.clone()),
        (guid_bytes(cert_guid::ASK), chain[0].clone()),
    ];
    let payload = proto::evidence_payload(AttestationKind::SevSnp, &report, &certs);
    let ev = proto::parse_evidence(&payload).unwrap();
    let statement = br#"{"a statement":"this report does not sign"}"#;
    let tee = loader::tee::TeeConfig::default();
    let e = loader::build::evidence_bundle(statement, &ev, &tee).unwrap_err().to_string();
    assert!(e.contains("REPORT_DATA is not SHA-512 of the statement"), "{e}");

    let b = loader::build::assemble_bundle(statement, &ev, &tee).unwrap();
    assert_eq!(b.attestation, "sev-snp");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(b.report.as_ref().unwrap()).unwrap(), report);
    assert_eq!(b64.decode(b.vcek.as_ref().unwrap()).unwrap(), vcek);
    let chain = snp::parse_cert_chain(b.cert_chain.as_ref().unwrap().as_bytes()).unwrap();
    snp::verify(&report, &vcek, Some(&chain)).unwrap();
    assert_eq!(b.launch, Some(loader::build::snp_launch(&tee)));
    // Round trip through JSON, as evidence.json.
    let again: measurement_tool::evidence::bundle::Bundle = serde_json::from_str(&b.to_json()).unwrap();
    assert_eq!(again, b);

    // Without certificates from the host, the bundle has none (the verifier must be given the VCEK).
    let bare = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report, &[])).unwrap();
    let b = loader::build::assemble_bundle(statement, &bare, &tee).unwrap();
    assert_eq!((b.vcek, b.cert_chain), (None, None));
    // A report of the wrong length is refused before anything else.
    let short = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report[..0x49F], &[])).unwrap();
    assert!(loader::build::check_binding(statement, &short).unwrap_err().to_string().contains("1184 bytes"));
}

/// The same for a TDX quote: binding refused for another statement; the assembled bundle carries
/// the quote and the collateral file given to the loader, and both verify.
#[test]
fn tdx_evidence_frames_become_bundles_the_verifier_accepts() {
    use agent::proto::{self, AttestationKind};
    let quote = vector("tdx/tdx_quote");
    let collateral_path = integration_tests::root().join("tests/vectors/tdx/tdx_quote_collateral.json");
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::Tdx, &quote, &[])).unwrap();
    let statement = b"not what this quote signs";
    let mut tee = loader::tee::TeeConfig::default();
    let e = loader::build::evidence_bundle(statement, &ev, &tee).unwrap_err().to_string();
    assert!(e.contains("tdx evidence's REPORT_DATA"), "{e}");
    let b = loader::build::assemble_bundle(statement, &ev, &tee).unwrap();
    assert_eq!(b.collateral, None, "no collateral given: none in the bundle");
    tee.tdx_collateral = Some(collateral_path.clone());
    let b = loader::build::assemble_bundle(statement, &ev, &tee).unwrap();
    let coll_bytes = b.collateral.as_ref().unwrap().to_string();
    let coll = tdx::parse_collateral(coll_bytes.as_bytes()).unwrap();
    use base64::Engine;
    let q = base64::engine::general_purpose::STANDARD.decode(b.report.as_ref().unwrap()).unwrap();
    tdx::verify(&q, &coll, within(&std::fs::read(&collateral_path).unwrap())).unwrap();
}

/// The unattested path: the unsigned REPORT_DATA must be the statement's SHA-512.
#[test]
fn unattested_evidence_frames_are_checked_too() {
    use agent::proto::{self, AttestationKind};
    use sha2::Digest;
    let statement = b"{}";
    let rd = sha2::Sha512::digest(statement);
    let tee = loader::tee::TeeConfig::default();
    let ok = proto::parse_evidence(&proto::evidence_payload(AttestationKind::None, &rd, &[])).unwrap();
    let b = loader::build::evidence_bundle(statement, &ok, &tee).unwrap();
    assert_eq!(b.attestation, "none");
    let mut wrong = rd.to_vec();
    wrong[0] ^= 1;
    let bad = proto::parse_evidence(&proto::evidence_payload(AttestationKind::None, &wrong, &[])).unwrap();
    assert!(loader::build::evidence_bundle(statement, &bad, &tee).is_err());
}

/// The certificate table as a real host writes it. virtee's `sev` crate is what `snphost`
/// (the host tool that loads certificates for KVM) uses to lay the table out; its GUIDs are in
/// RFC 4122 byte order (`uuid::Uuid::as_bytes`), as in AMD's sev-guest tools (libuuid) and
/// go-sev-guest (`uuid.Parse`). A table written by it, parsed by the agent and carried in an
/// Evidence frame, must give the loader the VCEK, ASK and ARK.
#[test]
fn a_certificate_table_written_by_the_sev_crate_reaches_the_bundle() {
    use agent::proto::{self, AttestationKind};
    use measurement_tool::evidence::sev::firmware::host::{CertTableEntry, CertType};
    let report = hex_vector("snp/report_milan.hex");
    let vcek = vector("snp/vcek_milan.der");
    let chain = pem_ders(&vector("snp/cert_chain_milan"));
    let table = CertTableEntry::cert_table_to_vec_bytes(&[
        CertTableEntry::new(CertType::VCEK, vcek.clone()),
        CertTableEntry::new(CertType::ASK, chain[0].clone()),
        CertTableEntry::new(CertType::ARK, chain[1].clone()),
    ])
    .unwrap();
    let mut buf = table.clone();
    buf.resize(4 * 4096, 0);
    let certs = agent_snp::parse_cert_table(&buf).unwrap();
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[0].0[..4], [0x63, 0xda, 0x75, 0x8d], "RFC 4122 order: the first field big-endian");
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report, &certs)).unwrap();
    let b = loader::build::assemble_bundle(b"{}", &ev, &loader::tee::TeeConfig::default()).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b.vcek.as_ref().map(|v| b64.decode(v).unwrap()), Some(vcek.clone()), "the VCEK was not recognised");
    let chain = snp::parse_cert_chain(b.cert_chain.as_ref().expect("ASK and ARK recognised").as_bytes()).unwrap();
    snp::verify(&report, &vcek, Some(&chain)).unwrap();
}
