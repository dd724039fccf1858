//! The agent's SEV-SNP and TDX attesters against host-side models of the hardware they talk to.
//!
//! - `Psp`: the hypervisor and the AMD PSP's guest-message handling (SNP ABI "SNP_GUEST_REQUEST",
//!   "Guest Messages"; GHCB spec "SNP Guest Request"): it decrypts the request with a test VMPCK,
//!   checks every header field and the sequence number as the firmware does, and answers
//!   MSG_REPORT_RSP with an ATTESTATION_REPORT signed by a test ECDSA P-384 key. Written from the
//!   specs with its own parsing (only the AES-GCM primitive is shared), so the agent's request code
//!   must produce messages *it* accepts.
//! - `Td`: the TDX module's TDG.MR.REPORT and a VMM with a quote service behind GetQuote (GHCI
//!   "TDG.VP.VMCALL<GetQuote>"), writing a v4 quote (header + TD report body).
//!
//! Each attack a host can mount on the way back — forged tag, replayed or out-of-sequence
//! responses, wrong type, version or size, another key, errors — must be rejected, and for SNP
//! the key must be wiped so no sequence number is ever reused.
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use agent::tee::snp::{self, GuestChannel, GuestRequest, RequestOutcome, SnpAttester, Vmpck, PAGE};
use agent::tee::tdx::{self, Regs, TdxAttester};
use agent::tee::{Attester, Kind, TeeError};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

const VMPCK0: [u8; 32] = *b"test-vmpck0-not-a-real-psp-key!!";
const MEASUREMENT: [u8; 48] = [0x4D; 48];

fn test_key() -> SigningKey {
    SigningKey::from_slice(&[0x17; 48]).unwrap()
}

fn le_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// AES-256-GCM as the SNP ABI's guest messages use it: IV = msg_seqno (LE) padded to 12 bytes,
/// AAD = header bytes 0x30..0x60, 16-byte tag at 0x00.
fn psp_seal(key: &[u8; 32], page: &mut [u8; PAGE], len: usize) {
    let seqno = le_u64(page, 0x20);
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    let (head, body) = page.split_at_mut(0x60);
    let tag = Aes256Gcm::new(key.into()).encrypt_in_place_detached(Nonce::from_slice(&iv), &head[0x30..0x60], &mut body[..len]).unwrap();
    head[..16].copy_from_slice(&tag);
}

fn psp_open(key: &[u8; 32], page: &[u8; PAGE]) -> Option<Vec<u8>> {
    let len = le_u16(page, 0x36) as usize;
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&page[0x20..0x28]);
    let mut body = page.get(0x60..0x60 + len)?.to_vec();
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(Nonce::from_slice(&iv), &page[0x30..0x60], &mut body, Tag::from_slice(&page[..16]))
        .ok()?;
    Some(body)
}

/// What the (hostile) host does to a response on its way back to the guest.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    None,
    FlipTag,
    FlipCiphertext,
    /// Answers with the previous (genuine) response.
    Replay,
    /// A correctly sealed response whose sequence number is off by this much.
    SeqnoOffset(u64),
    WrongType,
    WrongVersion,
    /// A correctly sealed MSG_REPORT_RSP cut short.
    Truncated,
    ForeignKey,
    /// The report inside signs another REPORT_DATA.
    OtherReportData,
    /// BUSY for this many tries, then service.
    Busy(usize),
    HypervisorError(u32),
    /// The firmware's SNP_GUEST_REQUEST status.
    FirmwareError(u32),
    /// The extended request's buffer is too small (needs this many pages).
    CertsTooSmall(u64),
}

/// The hypervisor + PSP.
struct Psp {
    /// The firmware's message count for VMPCK0: the last sequence number it sent.
    count: u64,
    key: SigningKey,
    attack: Attack,
    /// Requests that reached the PSP, and those it accepted.
    seen: usize,
    accepted: usize,
    /// Every request page the hypervisor was handed (to check that retries repeat the bytes).
    handed: Vec<[u8; PAGE]>,
    last_response: Option<[u8; PAGE]>,
    /// (GUID, bytes) written as the extended request's certificate table.
    certificates: Vec<([u8; 16], Vec<u8>)>,
    /// Milliseconds the guest waited between tries.
    waited: Vec<u64>,
}

impl Psp {
    fn new(attack: Attack) -> Psp {
        Psp { count: 0, key: test_key(), attack, seen: 0, accepted: 0, handed: Vec::new(), last_response: None, certificates: Vec::new(), waited: Vec::new() }
    }

    /// ATTESTATION_REPORT (SNP ABI table "ATTESTATION_REPORT Structure"), version 3, signed over
    /// bytes 0x000-0x29F; r and s little-endian in 72-byte fields at 0x2A0 and 0x2E8.
    fn report(&self, report_data: &[u8], vmpl: u32) -> Vec<u8> {
        let mut r = vec![0u8; 0x4A0];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes()); // policy: SMT allowed, bit 17 reserved-1
        r[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&MEASUREMENT);
        r[0x188] = 0x19; // family: Milan
        r[0x1A0..0x1E0].fill(0xC1); // chip id
        let sig: Signature = self.key.sign(&r[..0x2A0]);
        let (rb, sb) = sig.split_bytes();
        let mut rl = rb.to_vec();
        rl.reverse();
        let mut sl = sb.to_vec();
        sl.reverse();
        r[0x2A0..0x2A0 + 48].copy_from_slice(&rl);
        r[0x2E8..0x2E8 + 48].copy_from_slice(&sl);
        r
    }

    /// The PSP's handling of one request page: Ok(response page) or a firmware status.
    fn firmware(&mut self, req: &[u8; PAGE]) -> Result<[u8; PAGE], u32> {
        const INVALID_PARAM: u32 = 0x16;
        const AUTH_FAILURE: u32 = 0x1B; // stands for the firmware's refusal; the value is the model's
        self.seen += 1;
        // Header checks (SNP ABI "Message Header Format").
        if req[0x30] != 1 || req[0x31] != 1 || le_u16(req, 0x32) != 0x60 || req[0x3C] != 0 {
            return Err(INVALID_PARAM);
        }
        if le_u64(req, 0x20) != self.count + 1 {
            return Err(INVALID_PARAM);
        }
        if req[0x34] != 5 || req[0x35] != 1 || le_u16(req, 0x36) != 0x60 {
            return Err(INVALID_PARAM);
        }
        if req[16..32].iter().any(|&b| b != 0) || req[0x28..0x30].iter().any(|&b| b != 0) {
            return Err(INVALID_PARAM);
        }
        let plain = psp_open(&VMPCK0, req).ok_or(AUTH_FAILURE)?;
        // MSG_REPORT_REQ: REPORT_DATA, VMPL (0 here), KEY_SEL, reserved.
        let vmpl = u32::from_le_bytes(plain[0x40..0x44].try_into().unwrap());
        if vmpl != 0 || plain[0x44..0x60].iter().any(|&b| b != 0) {
            return Err(INVALID_PARAM);
        }
        self.accepted += 1;
        let mut report_data = plain[..64].to_vec();
        if self.attack == Attack::OtherReportData {
            report_data[0] ^= 1;
        }
        let report = self.report(&report_data, vmpl);
        // MSG_REPORT_RSP: STATUS, REPORT_SIZE, reserved, report.
        let mut payload = vec![0u8; 0x20];
        payload[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
        payload.extend_from_slice(&report);
        let seqno = self.count + 2;
        self.count += 2;
        Ok(self.response(seqno, 6, 1, &payload, &VMPCK0))
    }

    fn response(&self, seqno: u64, msg_type: u8, version: u8, payload: &[u8], key: &[u8; 32]) -> [u8; PAGE] {
        let mut page = [0u8; PAGE];
        page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
        page[0x30] = 1;
        page[0x31] = 1;
        page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
        page[0x34] = msg_type;
        page[0x35] = version;
        page[0x36..0x38].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        page[0x60..0x60 + payload.len()].copy_from_slice(payload);
        psp_seal(key, &mut page, payload.len());
        page
    }
}

impl GuestRequest for Psp {
    fn wait_ms(&mut self, ms: u64) {
        self.waited.push(ms);
    }

    fn guest_request(&mut self, request: &[u8; PAGE], response: &mut [u8; PAGE], certs: Option<&mut [u8]>) -> RequestOutcome {
        self.handed.push(*request);
        let vmm = |e: u32| RequestOutcome { exit_info_2: u64::from(e) << 32, cert_pages_needed: 0 };
        match self.attack {
            Attack::Busy(n) if self.handed.len() <= n => return vmm(snp::VMM_ERR_BUSY),
            Attack::HypervisorError(e) => return vmm(e),
            Attack::CertsTooSmall(pages) if certs.is_some() => {
                return RequestOutcome { exit_info_2: u64::from(snp::VMM_ERR_INVALID_LEN) << 32, cert_pages_needed: pages };
            }
            _ => {}
        }
        let page = match self.firmware(request) {
            Ok(p) => p,
            Err(status) => return RequestOutcome { exit_info_2: status.into(), cert_pages_needed: 0 },
        };
        if let Attack::FirmwareError(e) = self.attack {
            return RequestOutcome { exit_info_2: e.into(), cert_pages_needed: 0 };
        }
        if let Some(buf) = certs {
            // Certificate table: entries of GUID, offset, length; then an all-zero entry.
            let mut off = 24 * (self.certificates.len() + 1);
            for (i, (guid, der)) in self.certificates.iter().enumerate() {
                buf[24 * i..24 * i + 16].copy_from_slice(guid);
                buf[24 * i + 16..24 * i + 20].copy_from_slice(&(off as u32).to_le_bytes());
                buf[24 * i + 20..24 * i + 24].copy_from_slice(&(der.len() as u32).to_le_bytes());
                buf[off..off + der.len()].copy_from_slice(der);
                off += der.len();
            }
        }
        let plain = psp_open(&VMPCK0, &page).unwrap();
        let seqno = le_u64(&page, 0x20);
        *response = match self.attack {
            Attack::FlipTag => {
                let mut p = page;
                p[3] ^= 0x40;
                p
            }
            Attack::FlipCiphertext => {
                let mut p = page;
                p[0x60 + 0x100] ^= 1;
                p
            }
            Attack::Replay => self.last_response.unwrap_or(page),
            Attack::SeqnoOffset(d) => self.response(seqno.wrapping_add(d), 6, 1, &plain, &VMPCK0),
            Attack::WrongType => self.response(seqno, 4, 1, &plain, &VMPCK0),
            Attack::WrongVersion => self.response(seqno, 6, 2, &plain, &VMPCK0),
            Attack::Truncated => self.response(seqno, 6, 1, &plain[..0x4A0], &VMPCK0),
            Attack::ForeignKey => self.response(seqno, 6, 1, &plain, &[0x42; 32]),
            _ => page,
        };
        self.last_response = Some(page);
        RequestOutcome::default()
    }
}

fn attester(psp: Psp) -> SnpAttester<Psp> {
    let mut secrets = [0u8; PAGE];
    secrets[0x20..0x40].copy_from_slice(&VMPCK0);
    let key = Vmpck::take(&mut secrets, 0).unwrap();
    SnpAttester { transport: psp, channel: GuestChannel::new(key, 0), cert_pages: 0 }
}

/// Checks a report the way `measurement-tool verify-report snp` does: ECDSA P-384 over bytes
/// 0x000-0x29F with r, s read little-endian.
fn verify_report(report: &[u8], key: &VerifyingKey) -> bool {
    let be = |o: usize| {
        let mut b: [u8; 48] = report[o..o + 48].try_into().unwrap();
        b.reverse();
        b
    };
    let Ok(sig) = Signature::from_scalars(be(0x2A0), be(0x2E8)) else { return false };
    key.verify(&report[..0x2A0], &sig).is_ok()
}

#[test]
fn snp_report_round_trip_with_increasing_sequence_numbers() {
    let mut a = attester(Psp::new(Attack::None));
    let rd1 = [0xAB; 64];
    let e = a.report(&rd1).unwrap();
    assert_eq!(e.kind, Kind::SevSnp);
    assert_eq!(e.report.len(), 0x4A0);
    assert_eq!(&e.report[0x50..0x90], &rd1[..]);
    assert_eq!(&e.report[0x90..0xC0], &MEASUREMENT[..]);
    assert!(verify_report(&e.report, test_key().verifying_key()));
    // Requests 1 and 3, responses 2 and 4 (the firmware checked each request's number).
    let e2 = a.report(&[0xCD; 64]).unwrap();
    assert_eq!(&e2.report[0x50..0x90], &[0xCD; 64][..]);
    assert_eq!((a.transport.accepted, a.transport.count), (2, 4));
    assert_eq!(a.channel.next_seqno(), 5);
    assert_eq!(le_u64(&a.transport.handed[0], 0x20), 1);
    assert_eq!(le_u64(&a.transport.handed[1], 0x20), 3);
    // The report's signature is over its bytes: one flipped bit and it no longer verifies.
    let mut tampered = e2.report.clone();
    tampered[0x90] ^= 1;
    assert!(!verify_report(&tampered, test_key().verifying_key()));
}

/// Every forgery is refused, the key is wiped, and nothing more reaches the PSP.
#[test]
fn snp_forged_replayed_and_out_of_sequence_responses_wipe_the_key() {
    for attack in [
        Attack::FlipTag,
        Attack::FlipCiphertext,
        Attack::Replay,
        Attack::SeqnoOffset(2),
        Attack::SeqnoOffset(u64::MAX), // seqno - 1
        Attack::WrongType,
        Attack::WrongVersion,
        Attack::ForeignKey,
        Attack::HypervisorError(7),
        Attack::FirmwareError(0x16),
        Attack::Busy(1000),
    ] {
        let mut a = attester(Psp::new(Attack::None));
        // One genuine exchange first, so a replay has something to replay.
        a.report(&[1; 64]).unwrap();
        a.transport.attack = attack;
        let err = a.report(&[2; 64]).unwrap_err();
        assert!(matches!(err, TeeError::BadResponse(_) | TeeError::GuestRequest { .. }), "{attack:?}: {err:?}");
        assert!(a.channel.is_wiped(), "{attack:?}: key not wiped");
        let handed = a.transport.handed.len();
        a.transport.attack = Attack::None;
        assert_eq!(a.report(&[3; 64]), Err(TeeError::KeyWiped), "{attack:?}");
        assert_eq!(a.transport.handed.len(), handed, "{attack:?}: a request was sent after the wipe");
    }
}

#[test]
fn snp_authentic_but_wrong_report_is_refused_without_wiping() {
    // A truncated but authentic response, or one whose report is for other data: the PSP said it
    // (the sequence numbers are in step), so the refusal names the problem and the key stays.
    let mut a = attester(Psp::new(Attack::Truncated));
    assert_eq!(a.report(&[1; 64]), Err(TeeError::BadResponse("MSG_REPORT_RSP size")));
    assert!(!a.channel.is_wiped());
    a.transport.attack = Attack::OtherReportData;
    assert_eq!(a.report(&[1; 64]), Err(TeeError::ReportMismatch("REPORT_DATA")));
    a.transport.attack = Attack::None;
    assert!(a.report(&[1; 64]).is_ok());
    assert_eq!(a.transport.accepted, 3);
}

#[test]
fn snp_busy_host_gets_the_same_bytes_again() {
    let mut a = attester(Psp::new(Attack::Busy(3)));
    a.report(&[5; 64]).unwrap();
    assert_eq!(a.transport.handed.len(), 4);
    assert!(a.transport.handed.windows(2).all(|w| w[0] == w[1]), "a retry must repeat the sealed message");
    assert_eq!(a.transport.accepted, 1);
    // Each retry waits 2 s first, as Linux's __handle_guest_request (SNP_REQ_RETRY_DELAY).
    assert_eq!(a.transport.waited, vec![2_000; 3]);
}

#[test]
fn snp_busy_host_is_waited_for_a_minute_then_refused() {
    // BUSY for longer than a minute of retries (Linux: SNP_REQ_MAX_RETRY_DURATION, 60 s).
    let mut a = attester(Psp::new(Attack::Busy(1_000)));
    assert!(a.report(&[5; 64]).is_err());
    assert_eq!(a.transport.waited.iter().sum::<u64>(), 60_000);
    assert_eq!(a.transport.handed.len(), 31, "the first try and 30 retries, 2 s apart");
    assert_eq!(a.transport.accepted, 0);
}

#[test]
fn snp_extended_request_returns_the_certificate_table() {
    let mut psp = Psp::new(Attack::None);
    let vcek_guid = [0x63, 0xDA, 0x75, 0x8D, 0xE6, 0x64, 0x45, 0x64, 0xAD, 0xC5, 0xF4, 0xB9, 0x3B, 0xE8, 0xAC, 0xCD];
    psp.certificates = vec![(vcek_guid, b"vcek-der".to_vec()), ([0x79; 16], b"ask".to_vec())];
    let mut a = attester(psp);
    a.cert_pages = 1;
    let e = a.report(&[6; 64]).unwrap();
    assert_eq!(e.certificates, vec![(vcek_guid, b"vcek-der".to_vec()), ([0x79; 16], b"ask".to_vec())]);
    // Too small a buffer: the same message goes again as a plain request, so its sequence
    // number is consumed and never reused; the report comes without certificates.
    a.transport.attack = Attack::CertsTooSmall(4);
    let e = a.report(&[7; 64]).unwrap();
    assert!(e.certificates.is_empty());
    let n = a.transport.handed.len();
    assert_eq!(a.transport.handed[n - 1], a.transport.handed[n - 2]);
    assert!(!a.channel.is_wiped());
    assert!(a.report(&[8; 64]).is_ok());
    assert_eq!(a.transport.accepted, 3);
}

// ---------------------------------------------------------------------------------------------
// TDX

#[derive(Clone, Copy, Debug, PartialEq)]
enum TdAttack {
    None,
    QgsUnavailable,
    OtherReportData,
    OutLenTooLong,
    WrongVersion,
    VmcallError,
    ReportTypeSgx,
}

/// The TDX module's TDG.MR.REPORT and a VMM whose quote service turns a TDREPORT into a v4
/// quote (header 48 bytes: version 4, attestation key type 2 = ECDSA P-256, TEE type 0x81; then
/// the TD report body, REPORTDATA at body offset 520; then a signature-data length of 0).
struct Td {
    attack: TdAttack,
    quotes: usize,
}

impl tdx::Hardware for Td {
    fn tdcall(&mut self, _regs: &mut Regs) {
        unreachable!("the attester only uses TDG.MR.REPORT and GetQuote")
    }

    fn mr_report(&mut self, report_data: &[u8; 64], out: &mut [u8; tdx::TDREPORT_LEN]) -> u64 {
        out.fill(0);
        out[0] = if self.attack == TdAttack::ReportTypeSgx { 0 } else { 0x81 };
        out[0x80..0xC0].copy_from_slice(report_data);
        out[0x210..0x240].copy_from_slice(&MEASUREMENT);
        0
    }

    fn get_quote(&mut self, b: &mut [u8]) -> u64 {
        if self.attack == TdAttack::VmcallError {
            return tdx::vmcall::INVALID_OPERAND;
        }
        // GHCI GetQuote buffer: version 1, status, in_len, out_len, data.
        assert_eq!(le_u64(b, 0), 1);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 1024);
        self.quotes += 1;
        let report = b[24..24 + 1024].to_vec();
        let mut quote = vec![0u8; 48 + 584 + 4];
        quote[0..2].copy_from_slice(&4u16.to_le_bytes());
        quote[2..4].copy_from_slice(&2u16.to_le_bytes());
        quote[4..8].copy_from_slice(&0x81u32.to_le_bytes());
        quote[48 + 136..48 + 184].copy_from_slice(&report[0x210..0x240]); // MRTD
        quote[48 + 520..48 + 584].copy_from_slice(&report[0x80..0xC0]);
        if self.attack == TdAttack::OtherReportData {
            quote[48 + 520] ^= 1;
        }
        let status = if self.attack == TdAttack::QgsUnavailable { tdx::quote_status::QGS_UNAVAILABLE } else { 0 };
        b[8..16].copy_from_slice(&status.to_le_bytes());
        let out_len = if self.attack == TdAttack::OutLenTooLong { b.len() as u32 } else { quote.len() as u32 };
        b[20..24].copy_from_slice(&out_len.to_le_bytes());
        b[24..24 + quote.len()].copy_from_slice(&quote);
        if self.attack == TdAttack::WrongVersion {
            b[0] = 2;
        }
        0
    }
}

#[test]
fn tdx_quote_round_trip_and_refusals() {
    let mut a = TdxAttester { hw: Td { attack: TdAttack::None, quotes: 0 }, quote_buffer: 0x4000 };
    let e = a.report(&[0x5A; 64]).unwrap();
    assert_eq!(e.kind, Kind::Tdx);
    assert_eq!(u16::from_le_bytes([e.report[0], e.report[1]]), 4);
    assert_eq!(tdx::quote_report_data(&e.report), Some(&[0x5A; 64][..]));
    assert_eq!(&e.report[48 + 136..48 + 184], &MEASUREMENT[..]);
    for (attack, want) in [
        (TdAttack::QgsUnavailable, TeeError::Quote { status: 0x8000_0000_0000_0001 }),
        (TdAttack::OtherReportData, TeeError::ReportMismatch("the quote's REPORTDATA")),
        (TdAttack::OutLenTooLong, TeeError::BadResponse("GetQuote out_len")),
        (TdAttack::WrongVersion, TeeError::BadResponse("GetQuote version")),
        (TdAttack::VmcallError, TeeError::Vmcall { subfunction: 0x10002, status: 0x8000_0000_0000_0000 }),
        (TdAttack::ReportTypeSgx, TeeError::ReportMismatch("TDREPORT type")),
    ] {
        a.hw.attack = attack;
        assert_eq!(a.report(&[0x5A; 64]), Err(want), "{attack:?}");
    }
}

/// The model itself refuses what the PSP refuses, so the round trip above means something:
/// requests sealed by the agent's own code but with a wrong sequence number, type, size, key id or
/// a changed header byte are all turned away.
#[test]
fn snp_model_refuses_malformed_requests() {
    let sealed = |seqno: u64, msg_type: u8, len: u16, vmpck: u8| {
        let mut page = [0u8; PAGE];
        snp::write_header(&mut page, seqno, msg_type, 1, len, vmpck);
        page[0x60..0x60 + 64].fill(9);
        snp::seal(&VMPCK0, &mut page).unwrap();
        page
    };
    let mut psp = Psp::new(Attack::None);
    assert!(psp.firmware(&sealed(1, 5, 0x60, 0)).is_ok());
    assert_eq!(psp.count, 2);
    assert!(psp.firmware(&sealed(1, 5, 0x60, 0)).is_err(), "replayed request");
    assert!(psp.firmware(&sealed(5, 5, 0x60, 0)).is_err(), "skipped sequence number");
    assert!(psp.firmware(&sealed(3, 3, 0x60, 0)).is_err(), "MSG_KEY_REQ");
    assert!(psp.firmware(&sealed(3, 5, 0x40, 0)).is_err(), "short MSG_REPORT_REQ");
    assert!(psp.firmware(&sealed(3, 5, 0x60, 1)).is_err(), "VMPCK1");
    let mut changed = sealed(3, 5, 0x60, 0);
    changed[0x3F] = 1; // reserved header byte, covered by the AAD
    assert!(psp.firmware(&changed).is_err(), "header changed after sealing");
    assert!(psp.firmware(&sealed(3, 5, 0x60, 0)).is_ok());
    assert_eq!(psp.accepted, 2);
}
