//! `make bench`: GNU hello 2.10 (`examples/gnu-hello.nix`, the bookworm toolchain of
//! tests/toolchain) built by `loader build` against `nix-store --realise` of the same `.drv`,
//! side by side in one run, and where the agent's time goes. Nix's side rebuilds with `--check`
//! (the same build again, its output compared with the first); the agent always builds. The
//! phases come from the agent's log lines, timestamped on the host as they appear in the serial
//! log; the builder's CPU split (ring 3 / the agent on its behalf) from the agent's tick counts.
//! `BENCH_HELLO_RUNS` (default 1) runs per side; `BENCH_HELLO_TIMEOUT` seconds (default 3600).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent's log lines that end a phase, in order, and the phase's name.
const MARKS: &[(&str, &str)] = &[
    ("booted", "boot (firmware to the agent's first line)"),
    ("input paths", "agent ready, Build frame read"),
    ("inputs unpacked and checked", "inputs: transfer, unpack, hash, scan"),
    ("builder ended", "builder (configure, make, make check, make install)"),
    ("outputs hashed and checked", "outputs: NAR, hash, reference scan"),
    ("outputs published", "statement and publishing the outputs"),
];

/// Polls `serial` until `done`, recording when each line first appears (host time).
fn watch(serial: PathBuf, start: Instant, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(Duration, String)>> {
    std::thread::spawn(move || {
        let mut seen = 0usize;
        let mut lines = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            if let Ok(text) = std::fs::read_to_string(&serial) {
                let now = start.elapsed();
                for l in text.lines().skip(seen) {
                    lines.push((now, l.to_string()));
                }
                seen = text.lines().count();
            }
            if finished {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn nix_check(drv: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new("nix-store")
        .args(["--realise", "--check", "--option", "sandbox", "true", "--option", "substituters", ""])
        .arg(drv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "nix-store --realise --check {}", drv.display());
    t.elapsed()
}

fn main() {
    use integration_tests::{e2e, toolchain};
    let runs: usize = std::env::var("BENCH_HELLO_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let timeout: u64 = std::env::var("BENCH_HELLO_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(3600);
    let drv = toolchain::instantiate("examples/gnu-hello.nix", None);
    // The toolchain and a first hello natively: --check needs the output, the agent the toolchain.
    let native = e2e::realise_natively(&drv).expect("nix-store --realise of GNU hello");
    let mut config = toolchain::vm_config(Duration::from_secs(timeout));
    // Each log line on the serial port as it is logged (the Log frames arrive in batches, at
    // the agent's flushes), so the phases below are timed when they happen. Under TCG the
    // port's exits cost nothing extra.
    config.debug_serial = true;
    let accel = config.accel.resolve();
    let work = integration_tests::root().join(format!("target/bench-toolchain-{}", std::process::id()));
    let (mut nix, mut ours) = (Vec::new(), Vec::new());
    let mut last_lines = Vec::new();
    let mut input_bytes = 0;
    for _ in 0..runs {
        nix.push(nix_check(&drv));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("vm")).unwrap();
        config.work_dir = Some(work.join("vm"));
        let done = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let watcher = watch(work.join("vm/serial.log"), start, done.clone());
        let r = loader::build::build(&config, &drv, &work.join("out"), |_, _| {}, |_| {});
        let total = start.elapsed();
        done.store(true, Ordering::SeqCst);
        let lines = watcher.join().unwrap();
        let report = r.unwrap_or_else(|e| {
            for (_, l) in lines.iter().rev().take(40).rev() {
                eprintln!("{l}");
            }
            panic!("loader build: {e}")
        });
        assert_eq!(
            format!("sha256:{}", agent::nix::base32::encode(&report.outputs[0].nar_sha256)),
            native[0].2,
            "the agent's hello differs from Nix's"
        );
        input_bytes = report.input_bytes;
        ours.push(total);
        last_lines = lines;
        last_lines.push((total, "loader: outputs received, checked and written".into()));
    }
    let (n, o) = (nix.iter().sum::<Duration>() / runs as u32, ours.iter().sum::<Duration>() / runs as u32);
    println!("## GNU hello 2.10 (configure, make, make check, make install): loader build vs nix-store --realise ({accel:?})\n");
    println!("| runs | Nix 2.8, sandboxed (`--check` rebuild) | loader build ({accel:?}, 1 vCPU) | ratio |");
    println!("|---|---|---|---|");
    println!("| {runs} | {} | {} | {:.1}× |\n", secs(n), secs(o), o.as_secs_f64() / n.as_secs_f64());
    println!("Where the agent's time went (last run; host time at which each log line appeared):\n");
    println!("| phase | ends at | takes |");
    println!("|---|---|---|");
    let mut prev = Duration::ZERO;
    for (mark, label) in MARKS {
        if let Some((t, _)) = last_lines.iter().find(|(_, l)| l.contains(mark)) {
            println!("| {label} | {} | {} |", secs(*t), secs(t.saturating_sub(prev)));
            prev = *t;
        }
    }
    let (t, _) = last_lines.last().unwrap();
    println!("| loader: outputs received, checked, written | {} | {} |\n", secs(*t), secs(t.saturating_sub(prev)));
    println!("Inputs: {:.1} MiB of NARs. The agent's own lines on the build:\n", input_bytes as f64 / (1 << 20) as f64);
    println!("```");
    for (_, l) in &last_lines {
        if l.contains("build:") || l.contains("sandbox:") || l.contains("memory") {
            println!("{l}");
        }
    }
    println!("```");
    let _ = std::fs::remove_dir_all(&work);
}
