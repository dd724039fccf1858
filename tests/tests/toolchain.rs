//! Real builds (issue 16): a Debian bookworm toolchain as store paths (tests/toolchain), small C
//! builds with it, and GNU hello 2.10's `./configure && make && make check && make install`,
//! each built by real Nix 2.8 in its sandbox and by `loader build` in a fresh agent under TCG,
//! the outputs bit-identical and the evidence verifying. The packages come from Debian at test
//! time, pinned by SHA-256 (docs/toolchain.md).
use integration_tests::{e2e, toolchain};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn out_dir(case: &str) -> PathBuf {
    integration_tests::root().join(format!("target/toolchain-build-{}/{case}", std::process::id()))
}

fn native(case: &str, drv: &std::path::Path) -> Vec<(String, PathBuf, String)> {
    let t = Instant::now();
    let outs = e2e::realise_natively(drv).unwrap_or_else(|e| panic!("{case}: Nix failed: {e}"));
    eprintln!("{case}: nix-store --realise (sandbox) {:.1} s", t.elapsed().as_secs_f64());
    outs
}

fn in_agent(case: &str, drv: &std::path::Path, timeout: Duration, native: &[(String, PathBuf, String)]) {
    let dir = out_dir(case);
    let t = Instant::now();
    let report = toolchain::build_in_agent(drv, &dir, timeout).unwrap_or_else(|e| panic!("{case}: loader build: {e}"));
    eprintln!("{case}: loader build (TCG) {:.1} s", t.elapsed().as_secs_f64());
    toolchain::assert_same_as_nix(case, &report, native);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_refuses_a_package_whose_hash_differs_from_its_pin() {
    let good = std::fs::read_to_string(integration_tests::root().join("tests/toolchain/debs.txt")).unwrap();
    // The smallest package's real pin, with one hex digit of its SHA-256 changed.
    let line = good.lines().find(|l| l.starts_with("libattr1 ")).expect("libattr1 pinned");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (file, sum) = (fields[2], fields[3]);
    let flipped = format!("{}{}", if sum.starts_with('0') { '1' } else { '0' }, &sum[1..]);
    let scratch = integration_tests::root().join(format!("target/toolchain-refusal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("debs")).unwrap();
    let pins = scratch.join("debs.txt");
    let no_srcs = scratch.join("srcs.txt");
    std::fs::write(&no_srcs, "").unwrap();

    // A correct pin fetches the file.
    std::fs::write(&pins, format!("{line}\n")).unwrap();
    let ok = toolchain::fetch(&scratch, Some(&pins), Some(&no_srcs));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(scratch.join("debs").join(file).exists());

    // The same bytes under a wrong pin: the cached copy is dropped, the download refused.
    std::fs::write(&pins, format!("{} {} {file} {flipped}\n", fields[0], fields[1])).unwrap();
    let bad = toolchain::fetch(&scratch, Some(&pins), Some(&no_srcs));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a mismatching package was accepted: {err}");
    assert!(err.contains(&format!("REFUSED {file}")) && err.contains(&flipped), "{err}");
    let left: Vec<_> = std::fs::read_dir(scratch.join("debs")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "refused file left where the derivations read: {left:?}");

    // A file no pin names is removed too (it would change the debs directory's store path).
    std::fs::write(&pins, "").unwrap();
    std::fs::write(scratch.join("debs/stray.deb"), b"x").unwrap();
    assert!(toolchain::fetch(&scratch, Some(&pins), Some(&no_srcs)).status.success());
    assert!(!scratch.join("debs/stray.deb").exists());
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_toolchain_builds_in_the_agent_bit_identical_to_nix() {
    let drv = toolchain::instantiate("tests/toolchain/toolchain.nix", None);
    let native = native("toolchain", &drv);
    // Natively the tree works without /lib64: the store's gcc compiles and links a program
    // that runs (the small cases below do the same inside the sandboxes).
    let tc = &native[0].1;
    for exe in ["usr/bin/gcc-12", "usr/lib/gcc/x86_64-linux-gnu/12/cc1", "bin/bash", "usr/bin/make"] {
        let interp = std::process::Command::new(tc.join("usr/bin/patchelf"))
            .arg("--print-interpreter")
            .arg(tc.join(exe))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&interp.stdout).trim(),
            tc.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").to_str().unwrap(),
            "{exe}"
        );
    }
    in_agent("toolchain", &drv, Duration::from_secs(1800), &native);
}

#[test]
fn small_c_builds_in_the_agent_are_bit_identical_to_nix() {
    let cases = toolchain::cases();
    assert!(cases.len() >= 5, "{cases:?}");
    let mut failed = Vec::new();
    for case in &cases {
        let drv = toolchain::instantiate("tests/toolchain/cases.nix", Some(case));
        let native = native(case, &drv);
        // Each case is checked on its own, so one failure names every case that fails.
        if let Err(e) = std::panic::catch_unwind(|| in_agent(case, &drv, Duration::from_secs(1200), &native)) {
            failed.push((case.clone(), e.downcast_ref::<String>().cloned().unwrap_or_default()));
        }
    }
    assert!(failed.is_empty(), "cases that differ or fail in the agent: {failed:#?}");
}

#[test]
fn gnu_hello_builds_in_the_agent_bit_identical_to_nix() {
    let drv = toolchain::instantiate("examples/gnu-hello.nix", None);
    let native = native("gnu-hello", &drv);
    let hello = native[0].1.join("bin/hello");
    let out = std::process::Command::new(&hello).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!\n");
    in_agent("gnu-hello", &drv, Duration::from_secs(2400), &native);
}
