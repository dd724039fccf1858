//! The fuzz targets' bodies, one function per target, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`, nightly, `make fuzz`) and the stable replay test
//! (`tests/tests/fuzz_corpus.rs`, `make test`), which includes this file as a module. Each
//! function takes the bytes the host (loader, QEMU, the hypervisor) or the builder controls,
//! drives the code that parses them exactly as the agent or the verifier does, and panics only
//! on a bug: a crash, a broken round trip, or something accepted that must not be.
//!
//! Only stable Rust and the workspace's own dependencies are used here (no libFuzzer), so the
//! same inputs replay on CI's stable toolchain. `docs/fuzzing.md` describes every target.
use agent::channel::{Disk, DiskError, FrameReader, InStream, Incoming, DATA_OFFSET, SECTOR_SIZE, STREAM_MAGIC};
use agent::nix::{derivation, nar};
use agent::proto::{self, Type};
use agent::sandbox::abi::nr;
use agent::sandbox::fs::{Fs, ROOT};
use agent::sandbox::mem::MockMemory;
use agent::sandbox::process::{Kernel, Limits, Step, R10, R8, R9, RAX, RDI, RDX, RSI};
use measurement_tool::evidence::{bundle, check, policy::Policy, snp, tdx};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Every target: (name, function). The names are the directories under `fuzz/corpus/` and
/// `fuzz/regressions/` and the binaries under `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("frames", frames),
    ("aterm", aterm),
    ("drv_set", drv_set),
    ("nar", nar),
    ("nar_unpack", nar_unpack),
    ("elf", elf),
    ("syscalls", syscalls),
    ("snp_guest_msg", snp_guest_msg),
    ("tdx_get_quote", tdx_get_quote),
    ("evidence_frame", evidence_frame),
    ("snp_report", snp_report),
    ("tdx_quote", tdx_quote),
    ("bundle", bundle),
];

const VCEK_MILAN: &[u8] = include_bytes!("../../tests/vectors/snp/vcek_milan.der");
const VCEK_GCP_MILAN: &[u8] = include_bytes!("../../tests/vectors/snp/vcek_gcp_milan.pem");
const REPORT_MILAN_HEX: &str = include_str!("../../tests/vectors/snp/report_milan.hex");
const REPORT_GCP_HEX: &str = include_str!("../../tests/vectors/snp/report_gcp_milan_v5.hex");
const TDX_QUOTE: &[u8] = include_bytes!("../../tests/vectors/tdx/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("../../tests/vectors/tdx/tdx_quote_collateral.json");
/// A time inside the validity window of `TDX_COLLATERAL` (its TCB info and QE identity).
pub const TDX_COLLATERAL_NOW: u64 = 1_751_624_655;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The genuine SNP reports of tests/vectors.
pub fn genuine_snp_reports() -> &'static [Vec<u8>] {
    static R: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    R.get_or_init(|| vec![unhex(REPORT_MILAN_HEX), unhex(REPORT_GCP_HEX)])
}

// ---------------------------------------------------------------------------------------------
// frames: the request stream as the agent reads it from the virtio disk.

/// A RAM disk.
pub struct Ram(pub Vec<u8>);
impl Disk for Ram {
    fn sectors(&self) -> u64 {
        (self.0.len() / SECTOR_SIZE) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let s = usize::try_from(sector).map_err(|_| DiskError)?.checked_mul(SECTOR_SIZE).ok_or(DiskError)?;
        buf.copy_from_slice(self.0.get(s..s + buf.len()).ok_or(DiskError)?);
        Ok(())
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError)
    }
}

/// The input disk the loader writes for a request stream `data`: the stream header, then `data`.
pub fn request_disk(data: &[u8]) -> Ram {
    let mut disk = vec![0u8; (DATA_OFFSET as usize + data.len()).next_multiple_of(SECTOR_SIZE)];
    disk[..8].copy_from_slice(&STREAM_MAGIC);
    disk[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
    disk[DATA_OFFSET as usize..DATA_OFFSET as usize + data.len()].copy_from_slice(data);
    Ram(disk)
}

/// The frame reader over an arbitrary request stream, and every request payload decoded as
/// the agent decodes it (Build's three string lists, Exec, BulkBegin, Error, Evidence). Never
/// panics, always terminates; every well-formed frame re-encodes to the bytes it came from.
pub fn frames(data: &[u8]) {
    let Ok(stream) = InStream::open(request_disk(data)) else { return };
    let mut r = FrameReader::new(stream);
    for _ in 0..data.len() / 8 + 2 {
        match r.next() {
            Ok(Incoming::End) | Ok(Incoming::Truncated) | Err(_) => return,
            Ok(Incoming::Malformed(_)) => {}
            Ok(Incoming::Frame(ty, payload)) => {
                assert!(payload.len() <= proto::MAX_PAYLOAD);
                let again = proto::frame(ty, &payload);
                assert_eq!(proto::decode_header(again[..proto::HEADER_LEN].try_into().unwrap()).map(|h| h.len), Ok(payload.len()));
                request_payload(ty, &payload);
            }
        }
    }
    panic!("the reader did not terminate");
}

fn request_payload(ty: Type, p: &[u8]) {
    match ty {
        Type::Build => {
            // job.rs: three string lists, nothing after them.
            let lists = proto::decode_strings(p).and_then(|(a, r)| {
                let (b, r) = proto::decode_strings(r)?;
                let (c, r) = proto::decode_strings(r)?;
                r.is_empty().then_some((a, b, c))
            });
            if let Some((a, b, c)) = lists {
                let mut again = Vec::new();
                for l in [&a, &b, &c] {
                    proto::encode_strings(&mut again, &l.iter().map(String::as_str).collect::<Vec<_>>());
                }
                assert_eq!(again, p, "string lists re-encode to their bytes");
            }
        }
        Type::Exec => {
            let _ = agent::exec::decode(p);
        }
        Type::BulkBegin | Type::BulkRequest => {
            let _ = proto::parse_u64(p);
        }
        Type::Error => {
            let _ = proto::parse_error(p);
        }
        Type::Evidence => evidence_frame(p),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// aterm, drv_set: derivations.

/// The ATerm parser: whatever it accepts prints back to exactly the same bytes.
pub fn aterm(data: &[u8]) {
    if let Ok(d) = derivation::parse(data) {
        assert_eq!(derivation::print(&d).as_bytes(), data);
        let _ = d.fixed_output();
        let _ = d.references();
        let _ = d.name();
    }
}

/// A derivation set, as one Build request brings it: the derivation, then its input
/// derivations, separated by NUL bytes (an ATerm the agent accepts holds no NUL). Each input is
/// filed under the `.drv` path computed from its own bytes (so the fuzzer need not find SHA-256
/// preimages), and the derivation is planned under its computed path: `plan::plan` (every input
/// checked against its path, `hashDerivationModulo` over the set, the output paths) and then the
/// input-path check with the set's output paths.
pub fn drv_set(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let Some(top) = parts.next() else { return };
    let path_of = |bytes: &[u8]| -> Option<String> {
        let d = derivation::parse(bytes).ok()?;
        let name = d.name()?;
        derivation::drv_path(&name, bytes, &d).ok().map(|p| p.to_path())
    };
    let mut inputs = BTreeMap::new();
    for p in parts.take(64) {
        if let Some(path) = path_of(p) {
            inputs.insert(path, p.to_vec());
        }
    }
    let Some(top_path) = path_of(top) else { return };
    let Ok(plan) = agent::build::plan::plan(&top_path, top, &inputs) else { return };
    // What Nix computes for an input-addressed derivation is what it declares (checked by plan).
    for (o, p) in &plan.outputs {
        assert_eq!(plan.drv.outputs[o].path, p.to_path());
    }
    let mut paths: Vec<String> = plan.roots.iter().cloned().collect();
    let _ = agent::build::plan::check_input_paths(&plan, &paths);
    paths.extend(plan.outputs.values().map(|p| p.to_path()));
    assert!(agent::build::plan::check_input_paths(&plan, &paths).is_err(), "an output path offered as an input");
}

// ---------------------------------------------------------------------------------------------
// nar, nar_unpack.

fn nar_limits() -> nar::Limits {
    nar::Limits { max_contents: 1 << 20, ..nar::Limits::default() }
}

/// The NAR parser: whatever it accepts serialises back to exactly the same bytes (a NAR has one
/// canonical form).
pub fn nar(data: &[u8]) {
    if let Ok(t) = nar::Tree::from_nar(data, nar_limits()) {
        assert_eq!(t.to_nar(), data);
    }
}

/// A NAR unpacked into the sandbox file system as the agent unpacks an input (into
/// `/nix/store/<name>`, with a small file-system limit): never panics; an accepted NAR, read
/// back from the file system, is the same bytes; a refused one may leave a partial tree (the
/// agent then refuses the whole build), which must still serialise or refuse cleanly.
pub fn nar_unpack(data: &[u8]) {
    let mut fs = Fs::nix_sandbox(4 << 20, 4096).expect("sandbox fs");
    let store = fs.resolve(ROOT, b"/nix/store", true).expect("/nix/store");
    let name = b"00000000000000000000000000000000-input";
    let mut r: &[u8] = data;
    let ok = nar::parse(&mut r, &mut fs.unpacker(store, name), nar_limits()).is_ok() && r.is_empty();
    let Ok(ino) = fs.lookup(store, name) else {
        assert!(!ok, "an accepted NAR left nothing");
        return;
    };
    let mut out = Vec::new();
    let back = nar::serialize(&fs.tree(ino), &mut |b| out.extend_from_slice(b));
    if ok {
        assert!(back.is_ok());
        assert_eq!(out, data, "unpacked and serialised again");
    }
}

// ---------------------------------------------------------------------------------------------
// elf, syscalls: the sandbox kernel on the host (MockMemory for page tables).

fn kernel_limits() -> Limits {
    Limits { memory: 32 << 20, processes: 8, cpu_ticks: 1000, log_bytes: 1 << 16 }
}

/// A minimal static x86-64 executable: one RX segment at 0x400000 holding the headers.
pub fn tiny_elf() -> Vec<u8> {
    let mut f = vec![0u8; 64 + 56 + 16];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    let len = f.len() as u64;
    f[24..32].copy_from_slice(&(0x40_0000u64 + 120).to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut f[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R X
    ph[16..24].copy_from_slice(&0x40_0000u64.to_le_bytes());
    ph[32..40].copy_from_slice(&len.to_le_bytes());
    ph[40..48].copy_from_slice(&(len + 4096).to_le_bytes());
    ph[48..56].copy_from_slice(&4096u64.to_le_bytes());
    f
}

/// A kernel with `program` at /nix/store/…-p/bin/p, pid 1 started on it (the real exec path:
/// ELF parse, shebang, segment loading, initial stack).
fn kernel_with(program: &[u8]) -> (Kernel<MockMemory>, Result<agent::sandbox::process::Pid, agent::sandbox::abi::Errno>) {
    let mut fs = Fs::nix_sandbox(8 << 20, 4096).expect("sandbox fs");
    let store = fs.resolve(ROOT, b"/nix/store", true).expect("/nix/store");
    let d = fs.mkdir(store, b"00000000000000000000000000000000-p", 0o755).expect("mkdir");
    let bin = fs.mkdir(d, b"bin", 0o755).expect("mkdir");
    let f = fs.create(bin, b"p", 0o555).expect("create");
    fs.write_at(f, 0, program).expect("write");
    let mut k = Kernel::new(fs, kernel_limits());
    let pid = k.spawn(MockMemory::new(), b"/nix/store/00000000000000000000000000000000-p/bin/p", vec![b"p".to_vec()], vec![b"HOME=/homeless-shelter".to_vec()]);
    (k, pid)
}

/// ELF loading: the builder's own files are the host's input NARs, so any bytes may be
/// exec'd. Parsed, checked, loaded into a fresh address space with its stack: never panics,
/// and a loaded image's entry point lies in an executable mapping.
pub fn elf(data: &[u8]) {
    if let Ok(img) = agent::sandbox::elf::parse(data) {
        assert!(img.segments.iter().any(|s| s.prot.exec && s.vaddr <= img.entry && img.entry < s.vaddr + s.memsz));
    }
    let _ = agent::sandbox::elf::shebang(data);
    let (mut k, pid) = kernel_with(data);
    if let Ok(pid) = pid {
        let p = k.process(pid).expect("pid 1");
        let rip = p.regs.rip;
        assert!(p.mem.prot(rip).is_some_and(|pr| pr.exec), "entry {rip:#x} not executable");
    }
}

/// Arguments drawn from a few shapes: small numbers, pointers into the scratch area (where the
/// stream also writes bytes, so paths and structures reach the calls), and raw words.
const SCRATCH: u64 = 0x1000_0000;
const SCRATCH_LEN: u64 = 0x10000;

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u64(&mut self) -> u64 {
        let mut w = [0u8; 8];
        let t = self.take(8);
        w[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(w)
    }
    fn arg(&mut self) -> u64 {
        match self.u8().unwrap_or(0) {
            t @ 0..=95 => u64::from(t % 32),
            t @ 96..=191 => SCRATCH + u64::from(t - 96) * 64,
            192..=223 => (self.u8().unwrap_or(0) as i8) as i64 as u64,
            _ => self.u64(),
        }
    }
}

/// The syscall layer driven by a byte stream against the kernel the agent runs builders with:
/// each record is either a syscall (number, six arguments) made by the current process, bytes
/// written into the scratch area, a CPU exception, or a timer tick. The kernel must never panic,
/// must keep its accounting within its limits, and the run must end.
pub fn syscalls(data: &[u8]) {
    let (mut k, pid) = kernel_with(&tiny_elf());
    let pid = pid.expect("the tiny ELF starts");
    let rw = agent::sandbox::elf::Prot { read: true, write: true, exec: false };
    {
        use agent::sandbox::mem::Memory;
        let p = k.process(pid).expect("pid 1");
        p.mem.map(SCRATCH, SCRATCH_LEN, rw).expect("scratch");
        p.regions.insert(SCRATCH, SCRATCH + SCRATCH_LEN);
    }
    let mut s = Bytes(data);
    let mut steps = 0;
    while let Some(op) = s.u8() {
        steps += 1;
        if steps > 2000 || k.finished().is_some() {
            break;
        }
        let Some(cur) = k.current() else { break };
        match op {
            // Bytes into the scratch area of the current process (as the builder's own stores).
            0xF0..=0xF7 => {
                use agent::sandbox::mem::Memory;
                let off = u64::from(s.u8().unwrap_or(0)) * 64;
                let n = usize::from(s.u8().unwrap_or(0));
                let bytes = s.take(n).to_vec();
                if let Some(p) = k.process(cur) {
                    let _ = p.mem.write(SCRATCH + off, &bytes);
                }
            }
            0xF8 => {
                let vector = s.u8().unwrap_or(0) % 32;
                let error = u64::from(s.u8().unwrap_or(0));
                let address = s.arg();
                k.fault(cur, agent::sandbox::process::Exception { vector, error, address });
            }
            0xF9 => k.tick(),
            _ => {
                // Mostly the implemented range; sometimes any number.
                let n = if op < 0xE0 { u64::from(op) | (u64::from(s.u8().unwrap_or(0) & 1) << 8) } else { s.u64() };
                if n == nr::EXIT_GROUP || n == nr::EXIT {
                    // Ending the process is fine but ends the run early too often: keep it rare.
                    if s.u8().unwrap_or(0) != 0x42 {
                        continue;
                    }
                }
                let a = [s.arg(), s.arg(), s.arg(), s.arg(), s.arg(), s.arg()];
                let Some(p) = k.process(cur) else { break };
                p.regs.gpr[RAX] = n;
                for (reg, v) in [RDI, RSI, RDX, R10, R8, R9].into_iter().zip(a) {
                    p.regs.gpr[reg] = v;
                }
                match k.syscall(cur) {
                    Step::Ret(_) | Step::Block | Step::Resumed | Step::Ended => {}
                }
            }
        }
        assert!(k.procs.len() <= kernel_limits().processes + 1, "process limit");
        assert!(k.memory_used() <= kernel_limits().memory + (1 << 20), "memory limit: {}", k.memory_used());
        assert!(k.log_written <= kernel_limits().log_bytes, "log limit");
    }
}

// ---------------------------------------------------------------------------------------------
// snp_guest_msg, tdx_get_quote: what the hypervisor answers the attesters.

/// A VMPCK for the fuzzed channel (any key: the host never has the real one).
const FUZZ_VMPCK: [u8; 32] = [0x42; 32];

struct SnpHost<'a> {
    data: &'a [u8],
}

impl agent::tee::snp::GuestRequest for SnpHost<'_> {
    fn guest_request(&mut self, request: &[u8; 4096], response: &mut [u8; 4096], certs: Option<&mut [u8]>) -> agent::tee::snp::RequestOutcome {
        use agent::tee::snp::{msg, seal};
        let mut s = Bytes(self.data);
        let mode = s.u8().unwrap_or(0);
        let exit_info_2 = match mode & 0x0F {
            0 => 0,
            1 => 2u64 << 32,            // busy
            2 => 1u64 << 32,            // certificate buffer too small
            3 => u64::from(s.u8().unwrap_or(1)),
            _ => 0,
        };
        let cert_len = usize::from(s.u8().unwrap_or(0)) * 16;
        let cert_bytes = s.take(cert_len).to_vec();
        if let Some(c) = certs {
            let n = cert_bytes.len().min(c.len());
            c[..n].copy_from_slice(&cert_bytes[..n]);
        }
        let rest = s.0;
        if mode & 0x10 != 0 {
            // The whole page as the host wrote it (the PSP's authentication tag unknowable).
            let n = rest.len().min(4096);
            response[..n].copy_from_slice(&rest[..n]);
        } else {
            // A response that authenticates: the request's header answered, the body sealed
            // under the channel key, so the parsers behind the tag are reached.
            let seqno = u64::from_le_bytes(request[msg::SEQNO..msg::SEQNO + 8].try_into().unwrap()) + 1;
            let body = &rest[..rest.len().min(msg::MAX_PAYLOAD)];
            agent::tee::snp::write_header(response, seqno, request[msg::MSG_TYPE] + 1, request[msg::MSG_VERSION], body.len() as u16, request[msg::MSG_VMPCK]);
            response[msg::HEADER_LEN..msg::HEADER_LEN + body.len()].copy_from_slice(body);
            seal(&FUZZ_VMPCK, response).expect("seal");
            if mode & 0x20 != 0 {
                // One header byte changed after sealing.
                let at = usize::from(rest.first().copied().unwrap_or(0)) % msg::HEADER_LEN;
                response[at] ^= 1;
            }
        }
        self.data = &[];
        agent::tee::snp::RequestOutcome { exit_info_2, cert_pages_needed: 0 }
    }
    fn wait_ms(&mut self, _: u64) {}
}

/// The SNP guest-message response (and the extended request's certificate table) as the host
/// returns it, through the agent's attester: never panics; evidence it accepts carries the
/// REPORT_DATA asked for at VMPL 0, and a response that fails closes the channel for good.
pub fn snp_guest_msg(data: &[u8]) {
    use agent::tee::snp::{GuestChannel, SnpAttester, Vmpck};
    use agent::tee::Attester;
    let report_data = [0x5a; 64];
    let cert_pages = usize::from(data.first().is_some_and(|b| b & 0x40 != 0));
    let mut a = SnpAttester { transport: SnpHost { data }, channel: GuestChannel::new(Vmpck::from_bytes(FUZZ_VMPCK), 0), cert_pages };
    match a.report(&report_data) {
        Ok(ev) => {
            use agent::tee::snp::report;
            assert_eq!(ev.report.len(), agent::tee::snp::REPORT_LEN);
            assert_eq!(&ev.report[report::REPORT_DATA..report::REPORT_DATA + 64], &report_data[..]);
            assert_eq!(&ev.report[report::VMPL..report::VMPL + 4], &[0; 4]);
            assert!(!a.channel.is_wiped());
        }
        Err(_) => {
            // Whatever went wrong, the channel never reuses the sequence number it sent.
            assert!(a.channel.is_wiped() || a.channel.next_seqno() > 1);
        }
    }
}

struct TdxHost<'a> {
    data: &'a [u8],
    report_data: [u8; 64],
}

impl agent::tee::tdx::Hardware for TdxHost<'_> {
    fn tdcall(&mut self, _: &mut agent::tee::tdx::Regs) {}
    fn mr_report(&mut self, report_data: &[u8; 64], tdreport: &mut [u8; agent::tee::tdx::TDREPORT_LEN]) -> u64 {
        // The TDX module is trusted: an honest TDREPORT.
        use agent::tee::tdx::tdreport::{REPORT_DATA, REPORT_TYPE, TYPE_TDX};
        tdreport[REPORT_TYPE] = TYPE_TDX;
        tdreport[REPORT_DATA..REPORT_DATA + 64].copy_from_slice(report_data);
        self.report_data = *report_data;
        0
    }
    fn get_quote(&mut self, buffer: &mut [u8]) -> u64 {
        let mut s = Bytes(self.data);
        let mode = s.u8().unwrap_or(0);
        let status = if mode & 0x80 != 0 { s.u64() } else { 0 };
        let rest = s.0;
        let n = rest.len().min(buffer.len());
        buffer[..n].copy_from_slice(&rest[..n]);
        if mode & 1 != 0 {
            // Put the REPORTDATA asked for where a v4 / v5 quote has it, so the fuzzer gets past
            // the binding check without learning the hash.
            let q = agent::tee::tdx::QUOTE_HEADER_LEN;
            let body = if buffer.get(q..q + 2) == Some(&5u16.to_le_bytes()[..]) { 54 } else { 48 };
            if let Some(dst) = buffer.get_mut(q + body + 520..q + body + 584) {
                dst.copy_from_slice(&self.report_data);
            }
        }
        status
    }
}

/// The TDX GetQuote shared buffer as the VMM returns it, through the agent's attester: never
/// panics; a quote it accepts lies within the buffer and carries the REPORTDATA asked for.
pub fn tdx_get_quote(data: &[u8]) {
    use agent::tee::tdx::TdxAttester;
    use agent::tee::Attester;
    let report_data = [0xa5; 64];
    let mut a = TdxAttester { hw: TdxHost { data, report_data: [0; 64] }, quote_buffer: 2 * 4096 };
    if let Ok(ev) = a.report(&report_data) {
        assert!(ev.report.len() <= 2 * 4096 - agent::tee::tdx::QUOTE_HEADER_LEN);
        assert_eq!(agent::tee::tdx::quote_report_data(&ev.report), Some(&report_data[..]));
    }
    let _ = agent::tee::tdx::parse_quote_response(data);
}

// ---------------------------------------------------------------------------------------------
// evidence_frame, snp_report, tdx_quote, bundle: the host and the verifier.

/// The statement the fuzzed evidence is checked against.
const STATEMENT: &[u8] = b"{\"fuzz\":true}";

/// The agent's Evidence frame as the loader reads it: parsed strictly, re-encoded to the same
/// bytes, then the binding check and the bundle the loader would write.
pub fn evidence_frame(data: &[u8]) {
    let Ok(ev) = proto::parse_evidence(data) else { return };
    assert_eq!(proto::evidence_payload(ev.kind, &ev.report, &ev.certificates), data);
    let bound = loader::evidence::check_binding(STATEMENT, &ev).is_ok();
    let launch = bundle::Launch { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: 1 };
    if let Ok(a) = loader::evidence::assemble_bundle(STATEMENT, &ev, launch, None) {
        let json = a.bundle.to_json();
        let back: bundle::Bundle = serde_json::from_str(&json).expect("the loader's bundle parses");
        assert_eq!(back, a.bundle);
        if bound {
            assert_eq!(back.statement_bytes().expect("base64"), STATEMENT);
        }
    }
}

/// The SEV-SNP report parser and verifier (with the two vector VCEKs): never panics, and
/// accepts only reports whose signed bytes are a genuine report's.
pub fn snp_report(data: &[u8]) {
    if let Ok(r) = snp::Report::parse(data) {
        let _ = r.generation();
        let _ = snp::kds_vcek_url(&r);
        let _ = snp::kds_chain_url(&r);
    }
    for vcek in [VCEK_MILAN, VCEK_GCP_MILAN] {
        if let Ok(v) = snp::verify(data, vcek, None) {
            assert!(
                genuine_snp_reports().iter().any(|g| g[..0x2A0] == data[..0x2A0]),
                "a report no AMD key signed verified: {v:?}"
            );
            let p = Policy::from_toml("any_measurement = true").expect("policy");
            let _ = snp::check_policy(&v, &p);
        }
    }
}

fn tdx_collateral() -> &'static dcap_qvl::QuoteCollateralV3 {
    static C: OnceLock<dcap_qvl::QuoteCollateralV3> = OnceLock::new();
    C.get_or_init(|| tdx::parse_collateral(TDX_COLLATERAL).expect("collateral"))
}

/// A TDX DCAP quote through the verifier (dcap-qvl, with the vector's collateral at a time it
/// is valid): never panics.
pub fn tdx_quote(data: &[u8]) {
    let _ = tdx::quote_len(data);
    let _ = tdx::quote_report_data(data);
    let _ = tdx::parse_fields(data);
    if let Ok(v) = tdx::verify(data, tdx_collateral(), TDX_COLLATERAL_NOW) {
        let p = Policy::from_toml("any_measurement = true").expect("policy");
        let _ = tdx::check_policy(&v, &p);
    }
}

/// An evidence bundle (`evidence.json`) as `measurement-tool verify` checks it: JSON, then the
/// whole check with a policy that pins the Milan report's measurement and the TDX quote's
/// MRTD, and accepts the unattested kind (and the TDX vector quote's MRTD). Never panics; what passes as attested is signed by a genuine report.
pub fn bundle(data: &[u8]) {
    let Ok(b) = serde_json::from_slice::<bundle::Bundle>(data) else { return };
    let _ = b.statement_bytes();
    let _ = b.report_bytes();
    let milan = &genuine_snp_reports()[0];
    let mrtd = tdx::parse_fields(TDX_QUOTE).expect("the vector quote").mr_td;
    let policy = Policy { expected_measurements: vec![hex::encode(&milan[0x90..0xC0]), hex::encode(mrtd)], ..Policy::from_toml("").expect("policy") };
    let supplied = check::Supplied { now: TDX_COLLATERAL_NOW, allow_unattested: true, ..Default::default() };
    if let Ok(c) = check::check_bundle(&b, &policy, &supplied) {
        if c.attested {
            assert!(b.attestation == "sev-snp" || b.attestation == "tdx");
        }
    }
    if let Ok(st) = serde_json::from_slice::<serde_json::Value>(&b.statement_bytes().unwrap_or_default()) {
        let _ = bundle::check_statement_closure(&st);
    }
}
