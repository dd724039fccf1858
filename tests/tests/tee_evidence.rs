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
