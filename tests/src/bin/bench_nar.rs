//! `make bench` (Nix core): NAR serialisation + SHA-256 of a 1 GiB tree with the agent's core,
//! vs `nix-store --dump | sha256sum` and vs `openssl dgst -sha256` over the same NAR bytes, in
//! one run, as ratios. Prints a Markdown table.
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let dir = integration_tests::root().join("target/bench-nar-tree");
    let files = 64;
    let size = 16 << 20;
    if !dir.join(format!("f{:02}", files - 1)).exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..files {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(dir.join(format!("f{i:02}")), data).unwrap();
        }
    }
    let total = (files * size) as f64;
    let tool = integration_tests::bin("measurement-tool");
    let time = |f: &mut dyn FnMut() -> String| {
        let start = Instant::now();
        let out = f();
        (start.elapsed().as_secs_f64(), out)
    };
    // Warm the page cache.
    let _ = Command::new("cat").arg(dir.join("f00")).stdout(Stdio::null()).status();
    let nar_file = integration_tests::root().join("target/bench-nar-tree.nar");
    let status = Command::new("sh").arg("-c").arg(format!("nix-store --dump {} > {}", dir.display(), nar_file.display())).status().unwrap();
    assert!(status.success());

    let (t_ours, ours) = time(&mut || {
        let o = Command::new(&tool).args(["nix", "nar-hash"]).arg(&dir).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    });
    let (t_nix, nix) = time(&mut || {
        let o = Command::new("sh").arg("-c").arg(format!("nix-store --dump {} | sha256sum", dir.display())).output().unwrap();
        String::from_utf8(o.stdout).unwrap().split(' ').next().unwrap().to_string()
    });
    let (t_ssl, ssl) = time(&mut || {
        let o = Command::new("openssl").args(["dgst", "-sha256", "-r"]).arg(&nar_file).output().unwrap();
        String::from_utf8(o.stdout).unwrap().split(' ').next().unwrap().to_string()
    });
    assert_eq!(nix, ssl, "the two references disagree");
    assert!(ours.starts_with("sha256:"), "{ours}");
    let _ = std::fs::remove_file(&nar_file);
    let mbps = |t: f64| total / t / 1e6;
    println!("NAR serialise + SHA-256 of a 1 GiB tree (64 x 16 MiB files), one run\n");
    println!("| pipeline | time | MB/s | ratio to ours |");
    println!("|---|---|---|---|");
    println!("| agent core (`measurement-tool nix nar-hash`) | {t_ours:.2} s | {:.0} | 1.00 |", mbps(t_ours));
    println!("| `nix-store --dump \\| sha256sum` | {t_nix:.2} s | {:.0} | {:.2} |", mbps(t_nix), t_nix / t_ours);
    println!("| `openssl dgst -sha256` (hash only, NAR from a file) | {t_ssl:.2} s | {:.0} | {:.2} |", mbps(t_ssl), t_ssl / t_ours);
    println!("\nagent core / OpenSSL throughput: {:.0}% (goal >= 80%)", 100.0 * t_ssl / t_ours);
}
