//! `make bench`: `loader build` against `nix-store --realise --option sandbox true` of the same
//! derivations, side by side in one run, each run on a fresh derivation (a nonce in its
//! environment) so neither side finds its output already built. Prints a Markdown table of
//! medians and ratios. `BENCH_RUNS` (default 10) and `BENCH_BIG_RUNS` (default 3) set the counts.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn instantiate(script: &str, nonce: &str) -> PathBuf {
    let bb = integration_tests::e2e::busybox_dir();
    let expr = format!(
        r#"let bb = builtins.path {{ path = {}; name = "busybox"; }}; in derivation {{
             name = "bench"; system = "x86_64-linux"; builder = "${{bb}}/bin/busybox";
             PATH = "${{bb}}/bin"; nonce = "{nonce}"; args = [ "sh" "-c" {script:?} ]; }}"#,
        bb.display()
    );
    let out = Command::new("nix-instantiate").args(["-E", &expr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let big_runs: usize = std::env::var("BENCH_BIG_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut config = loader::vm::VmConfig::new(integration_tests::agent_bin());
    config.memory_mib = 1536;
    let accel = config.accel.resolve();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let cases = [
        ("trivial (`echo hello > $out`)", "echo hello > $out", runs),
        ("256 MiB output (`dd … | tr`)", "dd if=/dev/zero bs=1048576 count=256 2>/dev/null | tr '\\0' x > $out", big_runs),
    ];
    println!("## loader build vs nix-store --realise --option sandbox true ({accel:?}, medians)\n");
    println!("| derivation | runs | Nix 2.8 | loader build | ratio |");
    println!("|---|---|---|---|---|");
    for (label, script, n) in cases {
        let (mut nix, mut ours) = (Vec::new(), Vec::new());
        for i in 0..n {
            // Fresh derivations for both sides, built alternately.
            let a = instantiate(script, &format!("{stamp}-{i}-nix"));
            let t = Instant::now();
            let st = Command::new("nix-store")
                .args(["--realise", "--option", "sandbox", "true", "--option", "substituters", ""])
                .arg(&a)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            nix.push(t.elapsed());
            assert!(st.success());
            let b = instantiate(script, &format!("{stamp}-{i}-agent"));
            let dir = std::env::temp_dir().join(format!("nix-agent-bench-build-{}", std::process::id()));
            let t = Instant::now();
            loader::build::build(&config, &b, &dir, |_, _| {}, |_| {}).expect("loader build");
            ours.push(t.elapsed());
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (m_nix, m_ours) = (median(nix), median(ours));
        println!(
            "| {label} | {n} | {:.3} s | {:.3} s | {:.2}× |",
            m_nix.as_secs_f64(),
            m_ours.as_secs_f64(),
            m_ours.as_secs_f64() / m_nix.as_secs_f64()
        );
    }
}
