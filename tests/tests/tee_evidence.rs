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

fn snp_launch() -> measurement_tool::evidence::bundle::Launch {
    loader::evidence::snp_launch(&loader::tee::TeeConfig::default())
}

/// An SNP Evidence frame as the agent sends it (report + the extended request's VCEK, ASK and
/// ARK), through the loader: the binding check refuses a statement the report does not sign,
/// and the bundle the loader assembles carries certificates `measurement-tool` verifies the
/// real report with.
#[test]
fn snp_evidence_frames_become_bundles_the_verifier_accepts() {
    use agent::proto::{self, AttestationKind};
    use agent::tee::snp::cert_guid;
    use loader::build::BuildError;
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
    // The binding: refused, naming the REPORT_DATA the report carries (offset 0x50).
    match loader::evidence::evidence_bundle(statement, &ev, snp_launch(), None) {
        Err(BuildError::ReportData { attestation: "sev-snp", found, expected }) => {
            assert_eq!(found, hex::encode(&report[0x50..0x90]));
            assert_eq!(expected, hex::encode(<sha2::Sha512 as sha2::Digest>::digest(statement)));
        }
        other => panic!("expected the REPORT_DATA refusal, got {other:?}"),
    }
    let e = loader::evidence::check_binding(statement, &ev).unwrap_err().to_string();
    assert!(e.contains("REPORT_DATA is not SHA-512 of the statement"), "{e}");

    // The bundle, built apart from the binding, passes the verifier's own checks.
    let a = loader::evidence::assemble_bundle(statement, &ev, snp_launch(), None).unwrap();
    assert_eq!(a.notes, Vec::<String>::new(), "nothing is missing");
    let b = a.bundle;
    assert_eq!(b.attestation, "sev-snp");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(b.report.as_ref().unwrap()).unwrap(), report);
    assert_eq!(b64.decode(b.vcek.as_ref().unwrap()).unwrap(), vcek);
    let chain = snp::parse_cert_chain(b.cert_chain.as_ref().unwrap().as_bytes()).unwrap();
    assert!(chain.ark == snp::Generation::Milan.pinned().ark && chain.ask == snp::Generation::Milan.pinned().ask, "ASK, then ARK, as KDS's cert_chain");
    snp::verify(&report, &vcek, Some(&chain)).unwrap();
    assert_eq!(b.launch, Some(snp_launch()));
    assert_eq!(b.launch.as_ref().map(|l| (l.vcpus, l.vcpu_type.as_str(), l.guest_features)), Some((1, "EPYC-v4", 1)));
    // Round trip through JSON, as evidence.json.
    let again: measurement_tool::evidence::bundle::Bundle = serde_json::from_str(&b.to_json()).unwrap();
    assert_eq!(again, b);

    // A report of the wrong length is refused before anything else.
    let short = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report[..0x49F], &[])).unwrap();
    assert!(matches!(loader::evidence::check_binding(statement, &short), Err(BuildError::BadReport { .. })));
    assert!(loader::evidence::check_binding(statement, &short).unwrap_err().to_string().contains("1184 bytes"));
}

/// A host that supplied no certificates: the bundle has none, and the note says where AMD KDS
/// serves this report's VCEK (CHIP_ID and reported TCB from the report, as the VCEK's
/// extensions certify them: bootloader 3, TEE 0, SNP 8, microcode 115).
#[test]
fn snp_evidence_without_certificates_says_where_the_vcek_is() {
    use agent::proto::{self, AttestationKind};
    let report = hex_vector("snp/report_milan.hex");
    let bare = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report, &[])).unwrap();
    let a = loader::evidence::assemble_bundle(b"{}", &bare, snp_launch(), None).unwrap();
    assert_eq!((a.bundle.vcek, a.bundle.cert_chain), (None, None));
    // A v2 report names no CPUID, so the product is left to the user (Milan or Genoa).
    let url = format!("https://kdsintf.amd.com/vcek/v1/{{Milan|Genoa}}/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115", hex::encode(&report[0x1A0..0x1E0]));
    assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
    assert!(a.notes[0].contains(&url) && a.notes[0].contains("--vcek"), "{}", a.notes[0]);
    // A v5 report names its generation (CPUID family 0x19 model 0x01: Milan).
    let v5 = hex_vector("snp/report_gcp_milan_v5.hex");
    let r = snp::Report::parse(&v5).unwrap();
    assert_eq!(
        snp::kds_vcek_url(&r).unwrap(),
        format!("https://kdsintf.amd.com/vcek/v1/Milan/{}?blSPL=04&teeSPL=00&snpSPL=27&ucodeSPL=222", hex::encode(&v5[0x1A0..0x1E0]))
    );
    snp::verify(&v5, &vector("snp/vcek_gcp_milan.pem"), None).unwrap();
    // Turin: the first 8 bytes of CHIP_ID and the FMC SPL (KDS's Turin form).
    let mut turin = r.clone();
    turin.cpuid = Some((0x1A, 0x02));
    turin.reported_tcb_raw = u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 5]);
    assert_eq!(
        snp::kds_vcek_url(&turin).unwrap(),
        format!("https://kdsintf.amd.com/vcek/v1/Turin/{}?fmcSPL=01&blSPL=02&teeSPL=03&snpSPL=04&ucodeSPL=05", hex::encode(&v5[0x1A0..0x1A8]))
    );
    // A masked CHIP_ID: KDS cannot be asked, and the note says so.
    let mut masked = report.clone();
    masked[0x1A0..0x1E0].fill(0);
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &masked, &[])).unwrap();
    let a = loader::evidence::assemble_bundle(b"{}", &ev, snp_launch(), None).unwrap();
    assert!(a.notes[0].contains("CHIP_ID is masked"), "{:?}", a.notes);
}

/// The report's SIGNING_KEY picks the certificate: a VLEK-signed report gets the host's VLEK
/// (never the VCEK, which did not sign it), no ASK/ARK chain (a VLEK chains through the ASVK),
/// and a note naming the chain to give the verifier. Entries with other GUIDs are noted.
#[test]
fn snp_vlek_reports_and_unknown_certificates() {
    use agent::proto::{self, AttestationKind};
    use agent::tee::snp::cert_guid;
    let mut report = hex_vector("snp/report_milan.hex");
    report[0x48] |= 1 << 2; // SIGNING_KEY (bits 4:2) = 1: VLEK
    let crl = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea";
    let certs = vec![
        (guid_bytes(cert_guid::VCEK), b"vcek".to_vec()),
        (guid_bytes(cert_guid::VLEK), b"vlek".to_vec()),
        (guid_bytes(cert_guid::ASK), b"ask".to_vec()),
        (guid_bytes(cert_guid::ARK), b"ark".to_vec()),
        (guid_bytes(crl), b"crl".to_vec()),
    ];
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report, &certs)).unwrap();
    let a = loader::evidence::assemble_bundle(b"{}", &ev, snp_launch(), None).unwrap();
    use base64::Engine;
    assert_eq!(a.bundle.vcek.as_deref(), Some(base64::engine::general_purpose::STANDARD.encode(b"vlek").as_str()));
    assert_eq!(a.bundle.cert_chain, None);
    assert!(a.notes.iter().any(|n| n.contains(crl) && n.contains("3 bytes")), "{:?}", a.notes);
    assert!(a.notes.iter().any(|n| n.contains("VLEK") && n.contains("https://kdsintf.amd.com/vlek/v1/{Milan|Genoa}/cert_chain")), "{:?}", a.notes);
    // The same report with only a VCEK in the table: nothing that could verify it.
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::SevSnp, &report, &certs[..1])).unwrap();
    let a = loader::evidence::assemble_bundle(b"{}", &ev, snp_launch(), None).unwrap();
    assert_eq!(a.bundle.vcek, None);
    assert!(a.notes.iter().any(|n| n.contains("signed by a VLEK") && n.contains("supplied none")), "{:?}", a.notes);
}

/// The same for a TDX quote: binding refused for another statement (REPORTDATA where dcap-qvl and
/// the agent find it: v4 header 48 bytes + TD report body offset 520); the assembled bundle
/// carries the quote and the collateral file given to the loader, and both verify.
#[test]
fn tdx_evidence_frames_become_bundles_the_verifier_accepts() {
    use agent::proto::{self, AttestationKind};
    use loader::build::BuildError;
    let quote = vector("tdx/tdx_quote");
    let collateral_path = integration_tests::root().join("tests/vectors/tdx/tdx_quote_collateral.json");
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::Tdx, &quote, &[])).unwrap();
    let statement = b"not what this quote signs";
    match loader::evidence::evidence_bundle(statement, &ev, snp_launch(), None) {
        Err(BuildError::ReportData { attestation: "tdx", found, .. }) => assert_eq!(found, hex::encode(&quote[48 + 520..48 + 584])),
        other => panic!("expected the REPORT_DATA refusal, got {other:?}"),
    }
    for q in [vector("tdx/tdx_quote"), vector("tdx/tdx_quote_td15ex")] {
        let rd = tdx::quote_report_data(&q).unwrap();
        assert_eq!(agent_tdx::quote_report_data(&q), Some(&rd[..]), "the agent's offsets are dcap-qvl's");
    }
    let a = loader::evidence::assemble_bundle(statement, &ev, snp_launch(), None).unwrap();
    assert_eq!(a.bundle.collateral, None, "no collateral given: none in the bundle");
    assert_eq!(a.bundle.launch, None, "launch parameters are SNP's");
    assert!(a.notes.len() == 1 && a.notes[0].contains("--tdx-collateral") && a.notes[0].contains("--collateral FILE"), "{:?}", a.notes);
    let collateral = loader::evidence::load_collateral(&collateral_path).unwrap();
    let a = loader::evidence::assemble_bundle(statement, &ev, snp_launch(), Some(collateral)).unwrap();
    assert!(a.notes.is_empty(), "{:?}", a.notes);
    let b = a.bundle;
    let coll_bytes = b.collateral.as_ref().unwrap().to_string();
    let coll = tdx::parse_collateral(coll_bytes.as_bytes()).unwrap();
    use base64::Engine;
    let q = base64::engine::general_purpose::STANDARD.decode(b.report.as_ref().unwrap()).unwrap();
    tdx::verify(&q, &coll, within(&std::fs::read(&collateral_path).unwrap())).unwrap();
    let again: measurement_tool::evidence::bundle::Bundle = serde_json::from_str(&b.to_json()).unwrap();
    assert_eq!(again, b);

    // A truncated quote, non-zero bytes after it, and certificates with a quote are refused.
    let n = tdx::quote_len(&quote).unwrap();
    assert!(n < quote.len(), "this vector ends in zero padding");
    for bad in [quote[..n - 1].to_vec(), [&quote[..], &[1]].concat()] {
        let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::Tdx, &bad, &[])).unwrap();
        assert!(matches!(loader::evidence::check_binding(statement, &ev), Err(BuildError::BadReport { attestation: "tdx", .. })));
    }
    let ev = proto::parse_evidence(&proto::evidence_payload(AttestationKind::Tdx, &quote, &[([1; 16], vec![2])])).unwrap();
    assert!(matches!(loader::evidence::check_binding(statement, &ev), Err(BuildError::BadReport { .. })));
}

/// `--tdx-collateral` files are checked when read: a missing file and JSON that is not dcap-qvl
/// collateral are refused, naming the file.
#[test]
fn tdx_collateral_files_are_checked() {
    use loader::build::BuildError;
    let dir = std::env::temp_dir().join(format!("tee-evidence-collateral-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_collateral = dir.join("other.json");
    std::fs::write(&not_collateral, br#"{"pck_crl": 1}"#).unwrap();
    for p in [dir.join("missing.json"), not_collateral.clone()] {
        match loader::evidence::load_collateral(&p) {
            Err(e @ BuildError::Collateral { .. }) => assert!(e.to_string().contains(&p.display().to_string()), "{e}"),
            other => panic!("{}: expected a collateral error, got {other:?}", p.display()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unattested path: the unsigned REPORT_DATA must be the statement's SHA-512.
#[test]
fn unattested_evidence_frames_are_checked_too() {
    use agent::proto::{self, AttestationKind};
    use loader::build::BuildError;
    use sha2::Digest;
    let statement = b"{}";
    let rd = sha2::Sha512::digest(statement);
    let ok = proto::parse_evidence(&proto::evidence_payload(AttestationKind::None, &rd, &[])).unwrap();
    let a = loader::evidence::evidence_bundle(statement, &ok, snp_launch(), None).unwrap();
    assert_eq!(a.bundle.attestation, "none");
    assert_eq!(a.bundle, measurement_tool::evidence::bundle::Bundle::unattested(statement));
    let mut wrong = rd.to_vec();
    wrong[0] ^= 1;
    let bad = proto::parse_evidence(&proto::evidence_payload(AttestationKind::None, &wrong, &[])).unwrap();
    assert!(matches!(loader::evidence::evidence_bundle(statement, &bad, snp_launch(), None), Err(BuildError::ReportData { attestation: "none", .. })));
    let with_cert = proto::parse_evidence(&proto::evidence_payload(AttestationKind::None, &rd, &[([0; 16], vec![1])])).unwrap();
    assert!(matches!(loader::evidence::check_binding(statement, &with_cert), Err(BuildError::BadReport { .. })));
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
    let b = loader::evidence::assemble_bundle(b"{}", &ev, snp_launch(), None).unwrap().bundle;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b.vcek.as_ref().map(|v| b64.decode(v).unwrap()), Some(vcek.clone()), "the VCEK was not recognised");
    let chain = snp::parse_cert_chain(b.cert_chain.as_ref().expect("ASK and ARK recognised").as_bytes()).unwrap();
    snp::verify(&report, &vcek, Some(&chain)).unwrap();
}
