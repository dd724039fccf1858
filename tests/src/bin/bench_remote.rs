//! `make bench`: the loader as a Nix remote builder (issue 17). The same client (an unmodified
//! Nix 2.8 `nix-build` in its own chroot store) builds fresh trivial derivations (a nonce each)
//! either locally in its sandbox or through `--max-jobs 0 --builders 'ssh://…'` with the loader
//! as remote-program (tests/src/remote.rs: sshd on loopback); medians of `BENCH_RUNS` (default
//! 7), and 8 derivations requested at once (`-j8` locally against 8 remote job slots).
use integration_tests::remote::Remote;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A .nix file with `n` trivial derivations `d0`…, each with the nonce.
fn expression(dir: &std::path::Path, nonce: &str, n: usize) -> std::path::PathBuf {
    let bb = integration_tests::e2e::busybox_dir();
    let mut s = format!("let bb = builtins.path {{ path = {}; name = \"busybox\"; }}; in {{\n", bb.display());
    for i in 0..n {
        s += &format!(
            "  d{i} = derivation {{ name = \"bench-{i}\"; system = \"x86_64-linux\"; builder = \"${{bb}}/bin/busybox\"; PATH = \"${{bb}}/bin\"; nonce = \"{nonce}\"; args = [ \"sh\" \"-c\" \"echo hello > $out\" ]; }};\n"
        );
    }
    s += "}\n";
    let f = dir.join(format!("bench-{nonce}.nix"));
    std::fs::write(&f, s).unwrap();
    f
}

fn nix_build(remote: &Remote, file: &std::path::Path, n: usize, remote_jobs: Option<usize>) -> Duration {
    let mut cmd = Command::new("nix-build");
    cmd.arg("--store").arg(&remote.client).arg(file).arg("--no-out-link").args(["--option", "substituters", ""]);
    for i in 0..n {
        cmd.args(["-A", &format!("d{i}")]);
    }
    match remote_jobs {
        Some(j) => {
            cmd.args(["--max-jobs", "0", "--builders", &remote.builders(j)]).env("NIX_SSHOPTS", remote.ssh_opts());
        }
        None => {
            cmd.args(["--max-jobs", &n.to_string(), "--option", "sandbox", "true", "--builders", ""]);
        }
    }
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let d = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let remote = Remote::start("bench");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    // Warm both sides once (busybox copied to the builder, the client's store initialised).
    let warm = expression(&remote.dir, &format!("{stamp}-warm"), 1);
    nix_build(&remote, &warm, 1, Some(1));
    let (mut local, mut ours) = (Vec::new(), Vec::new());
    for i in 0..runs {
        local.push(nix_build(&remote, &expression(&remote.dir, &format!("{stamp}-{i}-local"), 1), 1, None));
        ours.push(nix_build(&remote, &expression(&remote.dir, &format!("{stamp}-{i}-remote"), 1), 1, Some(1)));
    }
    let (l, r) = (median(local), median(ours));
    let l8 = nix_build(&remote, &expression(&remote.dir, &format!("{stamp}-8-local"), 8), 8, None);
    let r8 = nix_build(&remote, &expression(&remote.dir, &format!("{stamp}-8-remote"), 8), 8, Some(8));
    println!("## nix-build through the loader as an SSH remote builder vs local sandboxed builds (TCG in the VM, medians)\n");
    println!("| what | runs | local `nix-build --option sandbox true` | `nix-build --max-jobs 0 --builders ssh://… (loader)` | ratio |");
    println!("|---|---|---|---|---|");
    println!("| one trivial derivation | {runs} | {:.2} s | {:.2} s | {:.2}× |", l.as_secs_f64(), r.as_secs_f64(), r.as_secs_f64() / l.as_secs_f64());
    println!("| 8 trivial derivations at once (-j8 / 8 remote slots) | 1 | {:.2} s | {:.2} s | {:.2}× |", l8.as_secs_f64(), r8.as_secs_f64(), r8.as_secs_f64() / l8.as_secs_f64());
}
