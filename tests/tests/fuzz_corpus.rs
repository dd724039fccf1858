//! Every fuzz target on stable Rust, in seconds: the committed corpus (`fuzz/corpus/<target>`)
//! and every regression input (`fuzz/regressions/<target>`) replayed through the same functions
//! the libFuzzer binaries call (`fuzz/src/lib.rs`), then a short deterministic mutation run
//! seeded from them. A failing input is written to `target/fuzz-failures/<target>/` and named
//! in the failure; copy it to `fuzz/regressions/<target>/` when it is fixed.
//!
//! `FUZZ_TEST_SECONDS` (default 1) sets the mutation run's time per target.
#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod glue;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

fn fuzz_dir() -> PathBuf {
    integration_tests::root().join("fuzz")
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A panic hook that records the message (and prints nothing while a target runs), so an
/// expected-to-be-rare crash is reported once with its input rather than thousands of times.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg} at {loc}"));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f` on `data`: the panic message if it panicked.
fn run(f: fn(&[u8]), data: &[u8]) -> Option<String> {
    quiet_panics();
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| f(data)));
    QUIET.with(|q| q.set(false));
    r.err().map(|_| LAST_PANIC.with(|p| p.borrow().clone()))
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<_> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// FNV-1a, for file names and seeds.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn save_failure(target: &str, data: &[u8]) -> PathBuf {
    let dir = integration_tests::root().join("target/fuzz-failures").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("crash-{:016x}", fnv(data)));
    std::fs::write(&p, data).unwrap();
    p
}

/// xorshift64*: the mutation run's only source of randomness.
#[path = "../../agent/tests/common/rng.rs"]
mod rng;
use rng::Rng;

const MAX_LEN: usize = 1 << 16;
const INTERESTING: &[u64] = &[0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1000, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 0x1_0000_0000, u64::MAX, u64::MAX / 2 + 1];

/// One to four of: flip a bit, set a byte, write an interesting little-endian value, insert
/// bytes, delete a range, duplicate a range, or splice in a piece of another input.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let i = rng.below(len);
                let n = w.min(len - i);
                data[i..i + n].copy_from_slice(&v[..n]);
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let piece = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
            6 if !others.is_empty() => {
                let o = &others[rng.below(others.len())];
                if !o.is_empty() {
                    let i = rng.below(o.len());
                    let n = 1 + rng.below((o.len() - i).min(256));
                    let at = rng.below(len + 1);
                    let cut = rng.below((len - at).min(n) + 1);
                    data.splice(at..at + cut, o[i..i + n].iter().copied());
                }
            }
            _ => {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] = data[i].wrapping_add(1 + rng.below(8) as u8);
                }
            }
        }
    }
    data.truncate(MAX_LEN);
}

fn seconds() -> f64 {
    std::env::var("FUZZ_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

/// Replays the corpus and the regressions of `name`, then mutates for `seconds()`.
fn check(name: &str) {
    let f = glue::TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no target {name}")).1;
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty: every target keeps a seeded corpus");
    let mut failures = Vec::new();
    for (p, data) in corpus.iter().chain(&regressions) {
        if let Some(msg) = run(f, data) {
            failures.push(format!("{}: {msg}", p.display()));
        }
    }
    assert!(failures.is_empty(), "{name}: inputs that fail:\n{}", failures.join("\n"));

    let inputs: Vec<Vec<u8>> = corpus.into_iter().chain(regressions).map(|(_, d)| d).collect();
    let mut rng = Rng(fnv(name.as_bytes()) | 1);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds());
    let mut n = 0u64;
    while Instant::now() < deadline {
        let mut data = inputs[rng.below(inputs.len())].clone();
        mutate(&mut rng, &mut data, &inputs);
        n += 1;
        if let Some(msg) = run(f, &data) {
            let p = save_failure(name, &data);
            panic!("{name}: mutation {n} fails: {msg}\n(input saved to {})", p.display());
        }
    }
    eprintln!("{name}: {} corpus inputs replayed, {n} mutations", inputs.len());
}

macro_rules! targets {
    ($($t:ident)*) => {
        $(#[test] fn $t() { check(stringify!($t)); })*
        /// Every target in the glue has its test here, and a libFuzzer binary.
        #[test]
        fn every_target_is_tested_and_has_a_binary() {
            let tested = [$(stringify!($t)),*];
            for (name, _) in glue::TARGETS {
                assert!(tested.contains(name), "{name} has no test here");
                assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "{name} has no fuzz_targets/{name}.rs");
            }
            assert_eq!(tested.len(), glue::TARGETS.len());
        }
    };
}

targets!(frames aterm drv_set nar nar_unpack elf syscalls snp_guest_msg tdx_get_quote evidence_frame snp_report tdx_quote bundle);

/// Writes the seeds the corpora were started from into `$FUZZ_SEEDS_DIR/<target>/` (run by
/// hand, then minimised into fuzz/corpus with `make fuzz-cmin`; see docs/fuzzing.md). The
/// derivation and NAR seeds come from real Nix (`nix-instantiate` of the e2e and conformance
/// corpora, `nix-store --dump`), the evidence seeds from tests/vectors.
#[test]
#[ignore]
fn write_seeds() {
    use agent::proto::{self, AttestationKind, Type};
    let out = PathBuf::from(std::env::var("FUZZ_SEEDS_DIR").expect("FUZZ_SEEDS_DIR"));
    let put = |t: &str, name: &str, data: &[u8]| {
        std::fs::create_dir_all(out.join(t)).unwrap();
        std::fs::write(out.join(t).join(name), data).unwrap();
    };
    let v = integration_tests::root().join("tests/vectors");
    let read = |p: &str| std::fs::read(v.join(p)).unwrap();
    let unhex = |p: &str| hex::decode(String::from_utf8(read(p)).unwrap().split_whitespace().collect::<String>()).unwrap();
    let milan = unhex("snp/report_milan.hex");
    let gcp = unhex("snp/report_gcp_milan_v5.hex");
    let vcek = read("snp/vcek_milan.der");
    let quotes = ["tdx/tdx_quote", "tdx/tdx_quote_outdated", "tdx/tdx_quote_td15ex"].map(read);

    // frames: request streams as the loader writes them.
    let bulk = |s: &mut Vec<u8>, bytes: &[u8]| {
        s.extend(proto::frame(Type::BulkBegin, &(bytes.len() as u64).to_le_bytes()));
        for c in bytes.chunks(300) {
            s.extend(proto::frame(Type::BulkData, c));
        }
    };
    let drv = std::fs::read_dir(out.join("aterm")).ok().and_then(|mut d| d.next()).map(|e| std::fs::read(e.unwrap().path()).unwrap()).unwrap_or_default();
    let mut build = Vec::new();
    let mut req = Vec::new();
    proto::encode_strings(&mut req, &["/nix/store/00000000000000000000000000000000-x.drv"]);
    proto::encode_strings(&mut req, &[]);
    proto::encode_strings(&mut req, &["/nix/store/11111111111111111111111111111111-busybox"]);
    build.extend(proto::frame(Type::Build, &req));
    bulk(&mut build, &drv);
    bulk(&mut build, b"nix-archive-1");
    build.extend(proto::frame(Type::Shutdown, &[]));
    put("frames", "build", &build);
    let mut exec = proto::frame(Type::Exec, &agent::exec::encode(&["sh", "-c", "true"], &["A=b"], &Default::default(), &[("/build/f", true)]));
    bulk(&mut exec, &glue::tiny_elf());
    bulk(&mut exec, b"contents");
    put("frames", "exec", &exec);
    let mut misc = proto::frame(Type::Ping, b"ping");
    misc.extend(proto::frame(Type::BulkRequest, &4096u64.to_le_bytes()));
    misc.extend(proto::frame(Type::Error, &[1, 0, 0, 0, b'x']));
    misc.extend(proto::frame(Type::Evidence, &proto::evidence_payload(AttestationKind::SevSnp, &milan, &[([1; 16], vcek.clone())])));
    put("frames", "misc", &misc);

    // elf.
    put("elf", "tiny", &glue::tiny_elf());

    // syscalls: (op, args) records; see glue::syscalls.
    let small = |v: u8| vec![v];
    let scratch = |i: u8| vec![96 + i];
    let raw = |v: u64| {
        let mut a = vec![0xFF];
        a.extend(v.to_le_bytes());
        a
    };
    let sc = |n: u16, args: Vec<Vec<u8>>| {
        let mut r = vec![(n & 0xFF) as u8, (n >> 8) as u8];
        for i in 0..6 {
            r.extend(args.get(i).cloned().unwrap_or_else(|| small(0)));
        }
        r
    };
    let poke = |off: u8, bytes: &[u8]| {
        let mut r = vec![0xF0, off, bytes.len() as u8];
        r.extend(bytes);
        r
    };
    let fdcwd = vec![192, (-100i8) as u8];
    let mut files = Vec::new();
    files.extend(poke(0, b"/build/f\0"));
    files.extend(sc(257, vec![fdcwd.clone(), scratch(0), raw(0o101), raw(0o644)])); // openat
    files.extend(sc(1, vec![small(3), scratch(0), small(9)])); // write
    files.extend(sc(8, vec![small(3), small(0), small(0)])); // lseek
    files.extend(sc(0, vec![small(3), scratch(2), small(9)])); // read
    files.extend(sc(5, vec![small(3), scratch(3)])); // fstat
    files.extend(sc(3, vec![small(3)])); // close
    files.extend(poke(1, b"/build/d\0"));
    files.extend(sc(258, vec![fdcwd.clone(), scratch(1), raw(0o755)])); // mkdirat
    files.extend(sc(257, vec![fdcwd.clone(), scratch(1), raw(0o200000)])); // openat O_DIRECTORY
    files.extend(sc(217, vec![small(3), scratch(4), raw(4096)])); // getdents64
    files.extend(sc(266, vec![scratch(0), fdcwd.clone(), scratch(1)])); // symlinkat
    files.extend(sc(263, vec![fdcwd.clone(), scratch(0), small(0)])); // unlinkat
    put("syscalls", "files", &files);
    let mut procs = Vec::new();
    procs.extend(sc(293, vec![scratch(0), small(0)])); // pipe2
    procs.extend(sc(57, vec![])); // fork
    procs.extend(sc(1, vec![small(4), scratch(1), small(5)])); // write to the pipe
    procs.extend(sc(0, vec![small(3), scratch(2), small(5)])); // read from it
    procs.extend(sc(61, vec![raw(u64::MAX), scratch(3), small(1)])); // wait4(-1, WNOHANG)
    procs.extend(sc(13, vec![small(17), scratch(4), small(0), small(8)])); // rt_sigaction
    procs.extend(sc(62, vec![small(2), small(17)])); // kill(2, SIGCHLD)
    procs.extend(sc(9, vec![small(0), raw(1 << 20), small(3), small(0x22), raw(u64::MAX), small(0)])); // mmap
    procs.extend(sc(12, vec![small(0)])); // brk
    procs.extend(vec![0xF8, 14, 6, 0xFF]);
    procs.extend(0x1234u64.to_le_bytes());
    procs.extend(vec![0xF9]);
    put("syscalls", "procs", &procs);

    // snp_guest_msg: an honest MSG_REPORT_RSP (REPORT_DATA and VMPL as asked), with and
    // without the extended request's certificate table.
    let mut rsp = vec![0u8; 0x20];
    rsp[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
    let mut r = milan.clone();
    r[0x50..0x90].fill(0x5a);
    r[0x30..0x34].fill(0);
    rsp.extend(&r);
    let mut plain = vec![0x00, 0];
    plain.extend(&rsp);
    put("snp_guest_msg", "report", &plain);
    let mut table = Vec::new();
    let guid: [u8; 16] = [0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd];
    table.extend(guid);
    table.extend(48u32.to_le_bytes());
    table.extend(32u32.to_le_bytes());
    table.extend([0u8; 24]);
    table.extend([0xAA; 32]);
    let mut ext = vec![0x40, (table.len() / 16) as u8];
    ext.extend(&table);
    ext.extend(&rsp);
    put("snp_guest_msg", "extended", &ext);
    let mut raw_page = vec![0x10, 0];
    raw_page.extend(vec![0u8; 0x60]);
    raw_page.extend(&rsp);
    put("snp_guest_msg", "raw", &raw_page);

    // tdx_get_quote: a SUCCESS buffer around each vector quote (REPORTDATA patched in).
    for (i, q) in quotes.iter().enumerate() {
        let mut b = vec![0x01];
        b.extend(1u64.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1024u32.to_le_bytes());
        b.extend((q.len() as u32).to_le_bytes());
        b.extend(q);
        put("tdx_get_quote", &format!("quote{i}"), &b);
    }

    // evidence_frame.
    let st = br#"{"fuzz":true}"#;
    let rd = agent::statement::report_data(st);
    put("evidence_frame", "none", &proto::evidence_payload(AttestationKind::None, &rd, &[]));
    put("evidence_frame", "snp", &proto::evidence_payload(AttestationKind::SevSnp, &milan, &[(guid, vcek.clone())]));
    put("evidence_frame", "tdx", &proto::evidence_payload(AttestationKind::Tdx, &quotes[0], &[]));

    // snp_report, tdx_quote.
    put("snp_report", "milan", &milan);
    put("snp_report", "gcp_milan_v5", &gcp);
    for (i, q) in quotes.iter().enumerate() {
        put("tdx_quote", &format!("quote{i}"), q);
    }

    // bundle.
    use measurement_tool::evidence::bundle::{Bundle, Launch};
    let launch = Launch { vcpus: 1, vcpu_type: "EPYC-v4".into(), guest_features: 1 };
    use agent::statement::{Input, Output, Statement};
    let statement = |attestation| {
        Statement {
            drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
            drv_sha256: [7; 32],
            resolved: false,
            outputs: vec![Output { name: "out".into(), path: "/nix/store/22222222222222222222222222222222-x".into(), nar_sha256: [8; 32], references: vec![] }],
            inputs: vec![Input { path: "/nix/store/11111111111111111111111111111111-in".into(), nar_sha256: [9; 32], references: vec![] }],
            agent_version: agent::VERSION.into(),
            attestation,
        }
        .to_json()
        .into_bytes()
    };
    put("bundle", "none", Bundle::unattested(&statement(AttestationKind::None)).to_json().as_bytes());
    let chain = String::from_utf8(read("snp/cert_chain_milan")).unwrap();
    put("bundle", "snp", Bundle::snp(&statement(AttestationKind::SevSnp), &milan, Some(&vcek), Some(chain), launch).to_json().as_bytes());
    let coll: serde_json::Value = serde_json::from_slice(&read("tdx/tdx_quote_collateral.json")).unwrap();
    put("bundle", "tdx", Bundle::tdx(&statement(AttestationKind::Tdx), &quotes[0], Some(coll)).to_json().as_bytes());
}
