//! The agent's Nix core against real Nix 2.8, on a corpus of derivations and NAR cases. Every
//! expected value is produced by Nix (`nix-instantiate`, `nix-store`, `nix-hash`) at test time.
use agent::nix::derivation::{self, Resolver};
use agent::nix::hash::{Algo, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd)).unwrap().trim().to_string()
}

fn corpus() -> PathBuf {
    integration_tests::root().join("tests/nix-corpus/corpus.nix")
}

fn cases() -> Vec<String> {
    let json = text(Command::new("nix-instantiate").args(["--eval", "--json", "-E"]).arg(format!(
        "builtins.attrNames (import {})",
        corpus().display()
    )));
    serde_json::from_str(&json).unwrap()
}

fn tool() -> Command {
    Command::new(integration_tests::bin("measurement-tool"))
}

fn lookup(p: &str) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

#[test]
fn derivations_agree_with_nix() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in cases {
        let drv_path = text(Command::new("nix-instantiate").arg(corpus()).args(["-A", &case]));
        let bytes = std::fs::read(&drv_path).unwrap();
        // Parse and print: byte for byte.
        let d = derivation::parse(&bytes).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(derivation::print(&d).as_bytes(), &bytes[..], "{case}");
        // The .drv's own path.
        let name = d.name().unwrap();
        assert_eq!(derivation::drv_path(&name, &bytes, &d).unwrap().to_path(), drv_path, "{case}");
        // Output paths, against nix-store -q --outputs.
        let mut r = Resolver::new(&lookup);
        let ours: Vec<String> = r.check_output_paths(&d).unwrap_or_else(|e| panic!("{case}: {e:?}")).values().map(|p| p.to_path()).collect();
        let mut nix: Vec<String> = text(Command::new("nix-store").args(["-q", "--outputs", &drv_path])).lines().map(String::from).collect();
        let mut ours_sorted = ours.clone();
        ours_sorted.sort();
        nix.sort();
        assert_eq!(ours_sorted, nix, "{case}");
        // The CLI says the same.
        assert_eq!(text(tool().args(["nix", "drv-path", &drv_path])), drv_path, "{case}");
        let cli: Vec<String> = text(tool().args(["nix", "outputs", &drv_path])).lines().map(|l| l.split(' ').nth(1).unwrap().to_string()).collect();
        assert_eq!(cli, ours, "{case}");
    }
}

#[test]
fn a_tampered_output_path_is_rejected() {
    let drv_path = text(Command::new("nix-instantiate").arg(corpus()).args(["-A", "chain-2"]));
    let mut d = derivation::parse(&std::fs::read(&drv_path).unwrap()).unwrap();
    let out = d.outputs.get_mut("out").unwrap();
    out.path = out.path.replace(&out.path[11..15], "0000");
    let mut r = Resolver::new(&lookup);
    assert!(matches!(r.check_output_paths(&d), Err(derivation::DrvError::WrongOutputPath { .. })));
}

#[test]
fn input_derivations_must_match_their_paths() {
    // chain-2 depends on chain-1: supply chain-1's path with different (valid) bytes.
    let drv_path = text(Command::new("nix-instantiate").arg(corpus()).args(["-A", "chain-2"]));
    let other = text(Command::new("nix-instantiate").arg(corpus()).args(["-A", "single"]));
    let d = derivation::parse(&std::fs::read(&drv_path).unwrap()).unwrap();
    let input = d.input_drvs.keys().next().unwrap().clone();
    let swapped = |p: &str| -> Option<Vec<u8>> { std::fs::read(if p == input { other.as_str() } else { p }).ok() };
    let mut r = Resolver::new(&swapped);
    assert_eq!(r.output_paths(&d), Err(derivation::DrvError::InputMismatch(input.clone())));
    let missing = |_: &str| -> Option<Vec<u8>> { None };
    assert_eq!(Resolver::new(&missing).output_paths(&d), Err(derivation::DrvError::MissingInput(input)));
}

fn nar_tree(root: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::write(root.join("file"), b"contents\n").unwrap();
    std::fs::write(root.join("exec"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("exec"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("group-exec-only"), b"x").unwrap();
    std::fs::set_permissions(root.join("group-exec-only"), std::fs::Permissions::from_mode(0o654)).unwrap();
    symlink("file", root.join("relative-link")).unwrap();
    symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    symlink("does/not/exist", root.join("dangling-link")).unwrap();
    let mut deep = root.join("deep");
    for i in 0..100 {
        deep = deep.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"bottom").unwrap();
    std::fs::write(root.join("n".repeat(255)), b"long name").unwrap();
    std::fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..2000 {
        std::fs::write(root.join("many").join(format!("entry-{i:05}")), format!("{i}")).unwrap();
    }
    std::fs::write(root.join("unicode-ü-✓"), "ü".repeat(1000)).unwrap();
}

fn nix_hash(path: &Path) -> String {
    format!("sha256:{}", text(Command::new("nix-hash").args(["--type", "sha256", "--base32"]).arg(path)))
}

#[test]
fn nar_cases_agree_with_nix() {
    let root = integration_tests::root().join(format!("target/nar-cases-{}", std::process::id()));
    nar_tree(&root);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.push(root.clone());
    for case in &cases {
        let ours = run(tool().args(["nix", "nar"]).arg(case));
        let nix = run(Command::new("nix-store").arg("--dump").arg(case));
        assert!(ours == nix, "{}: NAR differs", case.display());
        assert_eq!(text(tool().args(["nix", "nar-hash"]).arg(case)), nix_hash(case), "{}", case.display());
        // And the agent's parser reads Nix's bytes back to the same bytes.
        let tree = agent::nix::nar::Tree::from_nar(&nix, Default::default()).unwrap();
        assert!(tree.to_nar() == nix, "{}", case.display());
    }
    // nix-store -q --hash on a path added to the store.
    let added = text(Command::new("nix-store").args(["--add"]).arg(&root));
    assert_eq!(text(tool().args(["nix", "nar-hash", &added])), text(Command::new("nix-store").args(["-q", "--hash", &added])));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_256_mib_file_hashes_as_nix_hashes_it() {
    let dir = integration_tests::root().join(format!("target/nar-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);
    assert_eq!(text(tool().args(["nix", "nar-hash"]).arg(&big)), nix_hash(&big));
    // Stream Nix's dump through the agent's parser (hashing as it goes) without holding it.
    let mut child = Command::new("nix-store").arg("--dump").arg(&big).stdout(std::process::Stdio::piped()).spawn().unwrap();
    struct Pipe(std::process::ChildStdout, Hasher);
    impl agent::nix::nar::Read for Pipe {
        type Error = std::io::Error;
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            use std::io::Read;
            let n = self.0.read(buf)?;
            self.1.update(&buf[..n]);
            Ok(n)
        }
    }
    struct Count(u64);
    impl agent::nix::nar::NarSink for Count {
        type Error = ();
        fn create_directory(&mut self, _: &[Vec<u8>]) -> Result<(), ()> { Ok(()) }
        fn create_file(&mut self, _: &[Vec<u8>], _: bool, _: u64) -> Result<(), ()> { Ok(()) }
        fn write_contents(&mut self, d: &[u8]) -> Result<(), ()> { self.0 += d.len() as u64; Ok(()) }
        fn create_symlink(&mut self, _: &[Vec<u8>], _: &[u8]) -> Result<(), ()> { Ok(()) }
    }
    let mut pipe = Pipe(child.stdout.take().unwrap(), Hasher::new(Algo::Sha256));
    let mut count = Count(0);
    agent::nix::nar::parse(&mut pipe, &mut count, Default::default()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(count.0, 256 << 20);
    assert_eq!(pipe.1.finish().to_typed_nix32(), nix_hash(&big));
    let _ = std::fs::remove_dir_all(&dir);
}
