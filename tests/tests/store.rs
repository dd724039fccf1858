//! The loader's local-store access against real Nix: gathering a build's inputs, and importing
//! outputs through the `nix-store --export` stream format.
use integration_tests::e2e;
use std::process::Command;

fn nix_store(args: &[&str]) -> String {
    let out = Command::new("nix-store").args(args).output().unwrap();
    assert!(out.status.success(), "nix-store {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn gather_finds_input_derivations_and_the_input_closure() {
    let drv = e2e::instantiate("ok.consumes-output");
    // Its input derivation's outputs must be in the store: let Nix realise them.
    e2e::realise_natively(&drv).unwrap();
    let inputs = loader::store::gather(&drv).unwrap();
    assert_eq!(inputs.drv, std::fs::read(&drv).unwrap());
    // Every input derivation Nix lists, and nothing else.
    let reqs = nix_store(&["-qR", drv.to_str().unwrap()]);
    let want: Vec<&str> = reqs.lines().filter(|l| l.ends_with(".drv") && *l != drv.to_str().unwrap()).collect();
    let got: Vec<&str> = inputs.input_drvs.keys().map(String::as_str).collect();
    assert_eq!(got.len(), want.len());
    for w in want {
        assert!(inputs.input_drvs.contains_key(w), "{w}");
    }
    // The builder (busybox) and the used output (`dep.lib`, not `dep.out`) are inputs.
    assert!(inputs.input_paths.iter().any(|p| p.ends_with("-busybox")), "{:?}", inputs.input_paths);
    assert!(inputs.input_paths.iter().any(|p| p.ends_with("-dep-lib")), "{:?}", inputs.input_paths);
    assert!(!inputs.input_paths.iter().any(|p| p.ends_with("-dep")), "{:?}", inputs.input_paths);
    // Each input's NAR, made without Nix, is what `nix-store --dump` gives.
    for p in &inputs.input_paths {
        let nix = Command::new("nix-store").args(["--dump", p]).output().unwrap().stdout;
        assert!(loader::store::dump(p).unwrap() == nix, "{p}");
    }
}

#[test]
fn import_round_trips_through_nix_store_import() {
    let dir = tempdir();
    let file = dir.join("import-me");
    let unique = format!("import test {:?} {}\n", std::time::SystemTime::now(), std::process::id());
    std::fs::write(&file, &unique).unwrap();
    let path = nix_store(&["--add", file.to_str().unwrap()]);
    let hash = nix_store(&["-q", "--hash", &path]);
    let nar = loader::store::dump(&path).unwrap();
    nix_store(&["--delete", &path]);
    assert!(!std::path::Path::new(&path).exists());
    loader::store::import(&[loader::store::Import { path: &path, nar: &nar, references: &[], deriver: "" }]).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), unique);
    assert_eq!(nix_store(&["-q", "--hash", &path]), hash);
}

fn tempdir() -> std::path::PathBuf {
    let d = integration_tests::root().join(format!("target/tmp-store-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
