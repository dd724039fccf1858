//! Reference scanning against what real Nix records: build corpus cases with Nix, scan their
//! outputs' NARs with the agent's scanner (candidates: the build's input closure and its own
//! outputs, as Nix's), compare with `nix-store -q --references`.
use agent::nix::refs::RefScanner;
use integration_tests::e2e;
use std::process::Command;

fn lines(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

#[test]
fn scanned_references_equal_nix_references() {
    for case in ["references", "consumes-output", "tree", "single-file", "multiple-outputs"] {
        let drv = e2e::instantiate(&format!("ok.{case}"));
        let outputs = e2e::realise_natively(&drv).unwrap();
        // Candidates: the closure of the derivation's inputs (as Nix gives the builder), plus the
        // outputs themselves.
        let mut candidates: Vec<String> = lines(Command::new("nix-store").args(["-qR", "--include-outputs"]).arg(&drv))
            .into_iter()
            .filter(|p| !p.ends_with(".drv"))
            .collect();
        candidates.extend(outputs.iter().map(|(_, p, _)| p.to_string_lossy().into_owned()));
        for (_, path, _) in &outputs {
            let hash_of = |p: &str| p.strip_prefix("/nix/store/").unwrap()[..32].to_string();
            let parts: Vec<String> = candidates.iter().map(|c| hash_of(c)).collect();
            let mut scanner = RefScanner::new(parts.iter().map(String::as_str));
            let nar = Command::new("nix-store").arg("--dump").arg(path).output().unwrap().stdout;
            for chunk in nar.chunks(4099) {
                scanner.update(chunk);
            }
            let found: std::collections::BTreeSet<String> = scanner.found().collect();
            let mut ours: Vec<String> = candidates.iter().filter(|c| found.contains(&hash_of(c))).cloned().collect();
            ours.sort();
            ours.dedup();
            let mut nix = lines(Command::new("nix-store").args(["-q", "--references"]).arg(path));
            nix.sort();
            assert_eq!(ours, nix, "{case}: {}", path.display());
        }
    }
}
