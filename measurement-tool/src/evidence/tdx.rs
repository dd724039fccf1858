//! TDX DCAP quotes (v4, v5), verified with `dcap-qvl` against collateral supplied as a file
//! (PCK CRL and chain, TCB info, QE identity, root CA CRL: the caller fetches them from Intel
//! PCS or a PCCS; nothing here touches the network).
use super::policy::Policy;
use super::Rejection;
use dcap_qvl::quote::Report;
use dcap_qvl::QuoteCollateralV3;

/// What a verified quote established.
#[derive(Clone, Debug)]
pub struct Verified {
    /// Intel's TCB status for the platform ("UpToDate", "OutOfDate", …).
    pub status: String,
    pub advisory_ids: Vec<String>,
    pub mr_td: [u8; 48],
    pub rt_mr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    pub td_attributes: u64,
    /// The service-TD hashes of a TD 1.5 body (MRSERVICETD; the 1.5-ex body's initial and current
    /// SERVTD hashes too); none for a TD 1.0 body.
    pub servtd_hashes: Vec<[u8; 48]>,
}

pub use super::policy::{TD_DEBUG, TD_MIGRATABLE, TD_SEPT_VE_DISABLE};

pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, Rejection> {
    serde_json::from_slice(json).map_err(|e| Rejection::new("collateral", "dcap-qvl QuoteCollateralV3 JSON", e.to_string()))
}

/// The length a quote declares for itself (DCAP quote format: v4 = 48-byte header + 584-byte
/// TD report body; v5 = header + body type/size + body; then the signature data's length and
/// the signature data). Bytes after it must be zero padding.
pub fn quote_len(quote: &[u8]) -> Option<usize> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(quote.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(quote.get(o..o + 4)?.try_into().ok()?) as usize);
    let body_end = match u16_at(0)? {
        4 => 48 + 584,
        5 => 54 + u32_at(50)?,
        _ => return None,
    };
    body_end.checked_add(4)?.checked_add(u32_at(body_end)?)
}

/// The REPORTDATA of a TD quote, as the verifier reads it: the quote must be a complete v4 or v5
/// quote (then only zero padding, as [`verify`] requires) that dcap-qvl parses as a TD report
/// (TD 1.0, 1.5 or 1.5-ex body). In a v4 quote that is bytes 48 + 520 .. 48 + 584 (header, then
/// REPORTDATA at offset 520 of the TD report body); in a v5 quote the body starts at 54.
/// Nothing is verified here: see [`verify`].
pub fn quote_report_data(quote: &[u8]) -> Result<[u8; 64], Rejection> {
    match quote_len(quote) {
        Some(n) if n <= quote.len() && quote[n..].iter().all(|&b| b == 0) => {}
        _ => return Err(Rejection::new("quote length", "a complete v4 or v5 quote, then only zero padding", format!("{} bytes", quote.len()))),
    }
    let q = dcap_qvl::quote::Quote::parse(quote).map_err(|e| Rejection::new("quote", "a DCAP quote dcap-qvl parses", format!("{e:#}")))?;
    match q.report.as_td10() {
        Some(td) => Ok(td.report_data),
        None => Err(Rejection::new("quote type", "a TD quote", "an SGX enclave quote")),
    }
}

/// Verifies the quote's signatures, its PCK chain up to Intel's root (pinned in dcap-qvl), the
/// collateral's validity at `now_secs`, and the QE identity and TCB level.
pub fn verify(quote: &[u8], collateral: &QuoteCollateralV3, now_secs: u64) -> Result<Verified, Rejection> {
    match quote_len(quote) {
        Some(n) if n <= quote.len() && quote[n..].iter().all(|&b| b == 0) => {}
        Some(n) if n <= quote.len() => {
            return Err(Rejection::new("quote length", format!("{n} bytes then zero padding"), "non-zero bytes after the quote"));
        }
        _ => return Err(Rejection::new("quote length", "a complete v4 or v5 quote", format!("{} bytes", quote.len()))),
    }
    let v = dcap_qvl::verify::verify(quote, collateral, now_secs)
        .map_err(|e| Rejection::new("quote verification", "a quote Intel's chain and the collateral vouch for", format!("{e:#}")))?;
    let mut out = fields(&v.report)?;
    out.status = v.status.clone();
    out.advisory_ids = v.advisory_ids.clone();
    Ok(out)
}

/// The fields the policy reads from a quote, with no signature, chain or collateral check and
/// an empty TCB status: the policy stage's input without [`verify`] (tests edit a real quote's
/// bytes, read it with this, set a status and call [`check_policy`]).
pub fn parse_fields(quote: &[u8]) -> Result<Verified, Rejection> {
    let q = dcap_qvl::quote::Quote::parse(quote).map_err(|e| Rejection::new("quote", "a DCAP quote dcap-qvl parses", format!("{e:#}")))?;
    fields(&q.report)
}

fn fields(report: &Report) -> Result<Verified, Rejection> {
    let td = match report {
        Report::SgxEnclave(_) => return Err(Rejection::new("quote type", "a TD quote", "an SGX enclave quote")),
        r => r.as_td10().expect("TD report"),
    };
    let mut servtd_hashes = Vec::new();
    if let Some(td15) = report.as_td15() {
        servtd_hashes.push(td15.mr_service_td);
    }
    if let Some(ex) = report.as_td15_ex() {
        servtd_hashes.push(ex.init_service_td_hash);
        servtd_hashes.push(ex.cur_service_td_hash);
    }
    Ok(Verified {
        status: String::new(),
        advisory_ids: Vec::new(),
        mr_td: td.mr_td,
        rt_mr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        td_attributes: u64::from_le_bytes(td.td_attributes),
        servtd_hashes,
    })
}

/// The policy stage alone, on any quote's fields: TCB status, MRTD and report data, TD attributes
/// (SEPT_VE_DISABLE required; DEBUG only with `allow_debug`; MIGRATABLE and anything else not
/// allowed refused), RTMRs and SERVTD hashes zero.
pub fn check_policy(v: &Verified, p: &Policy) -> Result<(), Rejection> {
    if !p.allowed_tcb_statuses.contains(&v.status) {
        return Err(Rejection::new("TCB status", p.allowed_tcb_statuses.join(" or "), v.status.clone()));
    }
    p.check_measurement_and_report_data("MRTD", &v.mr_td, &v.report_data)?;
    if !p.allow_debug && v.td_attributes & TD_DEBUG != 0 {
        return Err(Rejection::new("TD attributes", "DEBUG (bit 0) clear", format!("{:#x}", v.td_attributes)));
    }
    if v.td_attributes & p.required_td_attributes != p.required_td_attributes {
        return Err(Rejection::new("TD attributes", format!("{:#x} set (SEPT_VE_DISABLE is bit 28)", p.required_td_attributes), format!("{:#x}", v.td_attributes)));
    }
    let allowed = p.allowed_td_attributes | if p.allow_debug { TD_DEBUG } else { 0 };
    let extra = v.td_attributes & !allowed;
    if extra != 0 {
        return Err(Rejection::new("TD attributes", format!("only {allowed:#x} (MIGRATABLE is bit 29)"), format!("{:#x} (refused: {extra:#x})", v.td_attributes)));
    }
    if !p.allow_nonzero_rtmrs {
        if let Some(i) = v.rt_mr.iter().position(|r| r.iter().any(|&b| b != 0)) {
            return Err(Rejection::new("RTMR", format!("RTMR{i} zero (the agent extends no RTMR)"), hex::encode(v.rt_mr[i])));
        }
    }
    if !p.allow_servtd {
        if let Some(h) = v.servtd_hashes.iter().find(|h| h.iter().any(|&b| b != 0)) {
            return Err(Rejection::new("SERVTD hash", "zero (no service TD bound)", hex::encode(h)));
        }
    }
    Ok(())
}
