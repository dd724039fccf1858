//! The framed protocol between the loader and the agent.
//!
//! Every message is a frame: a 16-byte header, then the payload, zero-padded to a multiple of 8.
//!
//! ```text
//! offset 0  magic    b"NXAG"
//!        4  version  u16 LE (= VERSION)
//!        6  type     u16 LE (see `Type`)
//!        8  length   u32 LE (payload bytes, before padding; at most MAX_PAYLOAD)
//!       12  reserved u32 (must be 0)
//! ```
//!
//! The header is checked before anything is allocated; a frame that fails a check is answered
//! with an `Error` frame and the reader re-synchronises on the next 8-byte boundary, so one bad
//! frame never takes the agent down.
use alloc::string::String;
use alloc::vec::Vec;

pub const MAGIC: [u8; 4] = *b"NXAG";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
/// The largest payload one frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The largest bulk transfer (sum of a transfer's `BulkData` payloads).
pub const MAX_TRANSFER: u64 = 16 << 30;

/// Message types. Ranges are reserved per stage: 0x01xx exec (sandbox), 0x02xx build,
/// 0x03xx attestation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Type {
    /// agent → loader, first frame: `[attestation kind u8][agent version UTF-8]`.
    Hello = 0x0001,
    /// loader → agent: any bytes, echoed in `Pong`.
    Ping = 0x0002,
    /// agent → loader.
    Pong = 0x0003,
    /// agent → loader: `[level u8][text UTF-8]`.
    Log = 0x0004,
    /// either way: `[code u32][text UTF-8]`.
    Error = 0x0005,
    /// loader → agent: no more requests; the agent answers `Bye` and powers off.
    Shutdown = 0x0006,
    /// agent → loader: the last frame.
    Bye = 0x0007,
    /// either way: `[total u64]`, then `BulkData` frames carrying exactly `total` bytes.
    BulkBegin = 0x0010,
    /// either way: raw bytes of the current transfer.
    BulkData = 0x0011,
    /// agent → loader: `[total u64][sha256 32 bytes]` of a transfer it received.
    BulkAck = 0x0012,
    /// loader → agent: `[total u64]`: send back a transfer of `total` pattern bytes
    /// (`pattern_byte`), to measure and test the guest → host direction.
    BulkRequest = 0x0013,
    /// loader → agent: run a static program: argv, envp, then optionally limits and a file
    /// list (`agent::exec`), followed by a bulk transfer of the executable and one per file.
    Exec = 0x0100,
    /// agent → loader: `[fd u8][bytes]` the program wrote to stdout (1) or stderr (2).
    Output = 0x0101,
    /// agent → loader: `[status i32]`: the exit status (128 + signal when a fault ended it).
    ExitStatus = 0x0102,
    /// loader → agent: a build. Payload: three string lists (`encode_strings`): the `.drv` path;
    /// the input `.drv` paths; the input store paths. Then, as bulk transfers in that order:
    /// the `.drv` ATerm, each input derivation's ATerm, each input path's NAR.
    Build = 0x0200,
    /// agent → loader: one output, after every check passed. Payload: strings [name, store
    /// path]; its NAR follows as a bulk transfer.
    BuildOutput = 0x0201,
    /// agent → loader: the statement; its exact bytes follow as a bulk transfer.
    Statement = 0x0202,
    /// agent → loader: `[attestation kind u8][report or quote]`; for `none`, the 64 bytes of
    /// REPORT_DATA, unsigned. The last frame of a successful build.
    Evidence = 0x0300,
}

impl Type {
    pub fn from_u16(v: u16) -> Option<Self> {
        use Type::*;
        Some(match v {
            0x0001 => Hello,
            0x0002 => Ping,
            0x0003 => Pong,
            0x0004 => Log,
            0x0005 => Error,
            0x0006 => Shutdown,
            0x0007 => Bye,
            0x0010 => BulkBegin,
            0x0011 => BulkData,
            0x0012 => BulkAck,
            0x0013 => BulkRequest,
            0x0100 => Exec,
            0x0101 => Output,
            0x0102 => ExitStatus,
            0x0200 => Build,
            0x0201 => BuildOutput,
            0x0202 => Statement,
            0x0300 => Evidence,
            _ => return None,
        })
    }
}

/// Error codes carried in `Error` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    BadMagic = 1,
    BadVersion = 2,
    UnknownType = 3,
    TooLong = 4,
    Truncated = 5,
    BadPayload = 6,
    TransferTooLarge = 7,
    UnexpectedMessage = 8,
    Channel = 9,
    /// The sandbox could not be set up or could not start the program.
    Sandbox = 10,
    /// A derivation or input derivation is malformed, or its path does not match its bytes.
    BadDerivation = 11,
    /// An input is missing, unexpected, or its bytes do not match what the derivation needs.
    BadInput = 12,
    /// The builder failed: non-zero exit, killed by a signal or a limit.
    BuildFailed = 13,
    /// The builder succeeded but its outputs break a rule (missing output, Nix's output checks).
    BadOutput = 14,
    /// The attester could not produce evidence.
    Attestation = 15,
}

impl ErrorCode {
    pub fn from_u32(v: u32) -> Option<Self> {
        use ErrorCode::*;
        Some(match v {
            1 => BadMagic,
            2 => BadVersion,
            3 => UnknownType,
            4 => TooLong,
            5 => Truncated,
            6 => BadPayload,
            7 => TransferTooLarge,
            8 => UnexpectedMessage,
            9 => Channel,
            10 => Sandbox,
            11 => BadDerivation,
            12 => BadInput,
            13 => BuildFailed,
            14 => BadOutput,
            15 => Attestation,
            _ => return None,
        })
    }
}

/// Why a header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    BadMagic,
    BadVersion(u16),
    /// Unknown type with a valid length: the payload can be skipped.
    UnknownType { ty: u16, len: u32 },
    TooLong(u32),
    ReservedNonZero,
}

impl HeaderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadMagic | Self::ReservedNonZero => ErrorCode::BadMagic,
            Self::BadVersion(_) => ErrorCode::BadVersion,
            Self::UnknownType { .. } => ErrorCode::UnknownType,
            Self::TooLong(_) => ErrorCode::TooLong,
        }
    }
}

/// A decoded header: the type and the payload length (already checked against MAX_PAYLOAD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: Type,
    pub len: usize,
}

pub fn encode_header(ty: Type, len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_PAYLOAD);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(ty as u16).to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
    if h[0..4] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(HeaderError::BadVersion(version));
    }
    if h[12..16] != [0; 4] {
        return Err(HeaderError::ReservedNonZero);
    }
    let ty = u16::from_le_bytes([h[6], h[7]]);
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len as usize > MAX_PAYLOAD {
        return Err(HeaderError::TooLong(len));
    }
    match Type::from_u16(ty) {
        Some(ty) => Ok(Header { ty, len: len as usize }),
        None => Err(HeaderError::UnknownType { ty, len }),
    }
}

/// Payload bytes including padding.
pub fn padded(len: usize) -> usize {
    len.next_multiple_of(8)
}

/// Encodes a whole frame (header, payload, padding).
pub fn frame(ty: Type, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + padded(payload.len()));
    f.extend_from_slice(&encode_header(ty, payload.len()));
    f.extend_from_slice(payload);
    f.resize(HEADER_LEN + padded(payload.len()), 0);
    f
}

/// Encodes a list of strings: `[u32 n]([u32 len][bytes])*`.
pub fn encode_strings(out: &mut Vec<u8>, items: &[&str]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Decodes a list from `encode_strings`, returning it and the rest; every length is checked.
pub fn decode_strings(mut p: &[u8]) -> Option<(Vec<String>, &[u8])> {
    let n = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
    p = &p[4..];
    if n > p.len() / 4 {
        return None;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
        let s = p.get(4..4 + len)?;
        v.push(String::from_utf8(s.to_vec()).ok()?);
        p = &p[4 + len..];
    }
    Some((v, p))
}

/// Attestation kinds announced in Hello and carried in evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AttestationKind {
    /// No TEE: the evidence proves nothing about the build host.
    None = 0,
    SevSnp = 1,
    Tdx = 2,
}

pub fn hello_payload(kind: AttestationKind, version: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + version.len());
    p.push(kind as u8);
    p.extend_from_slice(version.as_bytes());
    p
}

pub fn error_payload(code: ErrorCode, text: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + text.len());
    p.extend_from_slice(&(code as u32).to_le_bytes());
    p.extend_from_slice(text.as_bytes());
    p
}

/// Most certificates an Evidence frame may carry (the SNP extended request returns 3: VCEK or
/// VLEK, ASK, ARK; the GHCB spec defines a handful more, e.g. a CRL).
pub const MAX_EVIDENCE_CERTIFICATES: usize = 16;

/// The Evidence payload: `kind u8 | u32 LE report length | report | u32 LE certificate count |
/// per certificate: GUID [16] (as in the SNP certificate table) | u32 LE length | bytes`.
/// `none`: the report is the unsigned REPORT_DATA (64 bytes), no certificates; `sev-snp`: the
/// ATTESTATION_REPORT and the host's certificates; `tdx`: the DCAP quote.
///
/// The whole payload travels in one frame: at most [`MAX_PAYLOAD`] bytes, which
/// [`parse_evidence`] checks too (the agent's SNP certificate buffer and TDX quote buffer are far
/// smaller).
pub fn evidence_payload(kind: AttestationKind, report: &[u8], certificates: &[crate::tee::Certificate]) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + report.len() + certificates.iter().map(|c| 20 + c.1.len()).sum::<usize>());
    p.push(kind as u8);
    p.extend_from_slice(&(report.len() as u32).to_le_bytes());
    p.extend_from_slice(report);
    p.extend_from_slice(&(certificates.len() as u32).to_le_bytes());
    for (guid, der) in certificates {
        p.extend_from_slice(guid);
        p.extend_from_slice(&(der.len() as u32).to_le_bytes());
        p.extend_from_slice(der);
    }
    p
}

/// An Evidence payload, parsed: every length checked against the payload, nothing left over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidencePayload {
    pub kind: AttestationKind,
    pub report: Vec<u8>,
    pub certificates: Vec<crate::tee::Certificate>,
}

/// Why an Evidence payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceError {
    /// Larger than one frame may carry.
    TooLong(usize),
    /// A length or count points past the end of the payload (`what` was being read).
    Truncated(&'static str),
    UnknownKind(u8),
    TooManyCertificates(u32),
    /// Bytes after the last certificate.
    TrailingBytes(usize),
}

impl core::fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "{n} bytes, more than one frame carries ({MAX_PAYLOAD})"),
            Self::Truncated(what) => write!(f, "it ends inside {what}"),
            Self::UnknownKind(k) => write!(f, "unknown attestation kind {k}"),
            Self::TooManyCertificates(n) => write!(f, "{n} certificates (at most {MAX_EVIDENCE_CERTIFICATES})"),
            Self::TrailingBytes(n) => write!(f, "{n} bytes after the last certificate"),
        }
    }
}

/// Parses an Evidence payload strictly (see [`evidence_payload`]).
pub fn parse_evidence(p: &[u8]) -> Result<EvidencePayload, EvidenceError> {
    fn take<'a>(p: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], EvidenceError> {
        if p.len() < n {
            return Err(EvidenceError::Truncated(what));
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    fn u32_le(p: &mut &[u8], what: &'static str) -> Result<u32, EvidenceError> {
        Ok(u32::from_le_bytes(take(p, 4, what)?.try_into().unwrap()))
    }
    if p.len() > MAX_PAYLOAD {
        return Err(EvidenceError::TooLong(p.len()));
    }
    let mut p = p;
    let kind = match take(&mut p, 1, "the kind")?[0] {
        0 => AttestationKind::None,
        1 => AttestationKind::SevSnp,
        2 => AttestationKind::Tdx,
        k => return Err(EvidenceError::UnknownKind(k)),
    };
    let n = u32_le(&mut p, "the report length")? as usize;
    let report = take(&mut p, n, "the report")?.to_vec();
    let count = u32_le(&mut p, "the certificate count")?;
    if count as usize > MAX_EVIDENCE_CERTIFICATES {
        return Err(EvidenceError::TooManyCertificates(count));
    }
    let mut certificates = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let guid: [u8; 16] = take(&mut p, 16, "a certificate's GUID")?.try_into().unwrap();
        let n = u32_le(&mut p, "a certificate's length")? as usize;
        certificates.push((guid, take(&mut p, n, "a certificate")?.to_vec()));
    }
    if !p.is_empty() {
        return Err(EvidenceError::TrailingBytes(p.len()));
    }
    Ok(EvidencePayload { kind, report, certificates })
}

/// Splits an Error payload into (code, text).
pub fn parse_error(p: &[u8]) -> Option<(u32, String)> {
    let code = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    Some((code, String::from_utf8_lossy(&p[4..]).into()))
}

/// Reads a little-endian u64 payload (BulkBegin, BulkRequest), exactly 8 bytes.
pub fn parse_u64(p: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(p.try_into().ok()?))
}

/// The bytes a `BulkRequest` answer carries: byte `i` of the transfer is `pattern_byte(i)`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trip_and_rejections() {
        use alloc::vec;
        let certs = vec![([1u8; 16], vec![0x30, 0x82, 1]), ([2u8; 16], vec![])];
        let p = evidence_payload(AttestationKind::SevSnp, &[7; 0x4A0], &certs);
        assert_eq!(p.len(), 1 + 4 + 0x4A0 + 4 + (16 + 4 + 3) + (16 + 4));
        let e = parse_evidence(&p).unwrap();
        assert_eq!((e.kind, e.report.len(), e.certificates), (AttestationKind::SevSnp, 0x4A0, certs));
        let none = evidence_payload(AttestationKind::None, &[9; 64], &[]);
        assert_eq!(&none[..5], &[0, 64, 0, 0, 0]);
        assert_eq!(parse_evidence(&none).unwrap().report, vec![9; 64]);
        let tdx = evidence_payload(AttestationKind::Tdx, &[3; 5000], &[]);
        assert_eq!(parse_evidence(&tdx).unwrap(), EvidencePayload { kind: AttestationKind::Tdx, report: vec![3; 5000], certificates: vec![] });
        // Every truncation is refused, naming where it ends.
        for cut in 0..p.len() {
            assert!(matches!(parse_evidence(&p[..cut]), Err(EvidenceError::Truncated(_))), "cut at {cut}");
        }
        assert_eq!(parse_evidence(&p[..0x4A0]), Err(EvidenceError::Truncated("the report")));
        assert_eq!(parse_evidence(&p[..5 + 0x4A0 + 2]), Err(EvidenceError::Truncated("the certificate count")));
        assert_eq!(parse_evidence(&p[..p.len() - 1]), Err(EvidenceError::Truncated("a certificate's length")));
        // Trailing bytes, unknown kinds, over-long lengths, too many certificates, oversize.
        let mut long = p.clone();
        long.extend_from_slice(&[0, 0]);
        assert_eq!(parse_evidence(&long), Err(EvidenceError::TrailingBytes(2)));
        let mut bad = none.clone();
        bad[0] = 3;
        assert_eq!(parse_evidence(&bad), Err(EvidenceError::UnknownKind(3)));
        let mut over = none.clone();
        over[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_evidence(&over), Err(EvidenceError::Truncated("the report")));
        let mut over = none.clone();
        over[1..5].copy_from_slice(&69u32.to_le_bytes()); // one past the payload's end
        assert_eq!(parse_evidence(&over), Err(EvidenceError::Truncated("the report")));
        let mut short = p.clone();
        short[1..5].copy_from_slice(&0x49Fu32.to_le_bytes());
        assert!(parse_evidence(&short).is_err(), "a report length one short shifts everything after it");
        let mut cert_over = p.clone();
        let at = 5 + 0x4A0 + 4 + 16;
        cert_over[at..at + 4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert_eq!(parse_evidence(&cert_over), Err(EvidenceError::Truncated("a certificate")));
        let mut many = evidence_payload(AttestationKind::Tdx, &[1], &[]);
        let n = many.len();
        many[n - 4..].copy_from_slice(&(MAX_EVIDENCE_CERTIFICATES as u32 + 1).to_le_bytes());
        assert_eq!(parse_evidence(&many), Err(EvidenceError::TooManyCertificates(17)));
        many[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_evidence(&many), Err(EvidenceError::TooManyCertificates(u32::MAX)));
        let sixteen: Vec<crate::tee::Certificate> = (0..16).map(|i| ([i as u8; 16], vec![i as u8; 3])).collect();
        assert_eq!(parse_evidence(&evidence_payload(AttestationKind::SevSnp, &[0; 0x4A0], &sixteen)).unwrap().certificates, sixteen);
        let big = evidence_payload(AttestationKind::Tdx, &vec![0; MAX_PAYLOAD], &[]);
        assert_eq!(parse_evidence(&big), Err(EvidenceError::TooLong(MAX_PAYLOAD + 9)));
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_header(Type::Ping, 5);
        assert_eq!(decode_header(&h), Ok(Header { ty: Type::Ping, len: 5 }));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = h;
        bad[4] = 9;
        assert_eq!(decode_header(&bad), Err(HeaderError::BadVersion(9)));
        let mut bad = h;
        bad[6] = 0x77;
        assert_eq!(decode_header(&bad), Err(HeaderError::UnknownType { ty: 0x77, len: 5 }));
        let mut bad = h;
        bad[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert_eq!(decode_header(&bad), Err(HeaderError::TooLong(MAX_PAYLOAD as u32 + 1)));
        let mut bad = h;
        bad[15] = 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::ReservedNonZero));
    }

    #[test]
    fn frames_are_padded_to_eight() {
        assert_eq!(frame(Type::Ping, b"abc").len(), 24);
        assert_eq!(frame(Type::Ping, b"").len(), 16);
        assert_eq!(frame(Type::Ping, &[1; 8]).len(), 24);
    }
}
