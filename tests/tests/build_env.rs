//! The agent's builder environment (`agent::build::env`) against what real Nix 2.8 gives.
use agent::build::env::{builder_setup, hash_placeholder, DrvEnv};
use integration_tests::e2e;
use std::collections::BTreeMap;
use std::process::Command;

fn eval(expr: &str) -> String {
    let out = Command::new("nix-instantiate").args(["--eval", "--json", "-E", expr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<String>(&out.stdout).unwrap()
}

/// The derivation's fields, from `nix show-derivation`.
fn show(drv: &std::path::Path) -> serde_json::Value {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "show-derivation"])
        .arg(drv)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object().unwrap().values().next().unwrap().clone()
}

fn setup_for(drv: &serde_json::Value) -> agent::build::env::BuilderSetup {
    let env: BTreeMap<String, String> =
        drv["env"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let outputs: BTreeMap<String, String> = drv["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["path"].as_str().unwrap().to_string()))
        .collect();
    let args: Vec<String> = drv["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let fixed = drv["outputs"]["out"].get("hash").is_some();
    builder_setup(
        &DrvEnv { builder: drv["builder"].as_str().unwrap(), args: &args, env: &env, outputs: &outputs, fixed_output: fixed },
        1,
    )
    .unwrap()
}

#[test]
fn placeholders_equal_builtins_placeholder() {
    for name in ["out", "dev", "lib", "a-b_c"] {
        assert_eq!(hash_placeholder(name), eval(&format!("builtins.placeholder \"{name}\"")), "{name}");
    }
}

#[test]
fn structured_attrs_json_equals_nix() {
    // The corpus case copies Nix's own .attrs.json into its output.
    let drv = e2e::instantiate("ok.structured-attrs");
    let outs = e2e::realise_natively(&drv).unwrap();
    let nix_json = std::fs::read(outs[0].1.join(".attrs.json")).unwrap();
    let nix_sh = std::fs::read(outs[0].1.join(".attrs.sh")).unwrap();
    let setup = setup_for(&show(&drv));
    let ours = &setup.files.iter().find(|(n, _)| n == ".attrs.json").unwrap().1;
    assert_eq!(String::from_utf8_lossy(ours), String::from_utf8_lossy(&nix_json));
    let ours_sh = &setup.files.iter().find(|(n, _)| n == ".attrs.sh").unwrap().1;
    assert_eq!(String::from_utf8_lossy(ours_sh), String::from_utf8_lossy(&nix_sh));
    // Under structured attrs the derivation's attributes are not in the environment.
    assert!(!setup.envp.iter().any(|e| e.starts_with("list=")));
}

#[test]
fn pass_as_file_path_and_contents_equal_nix() {
    let drv = e2e::instantiate("ok.pass-as-file");
    let outs = e2e::realise_natively(&drv).unwrap();
    // The builder wrote the file's contents, then the value of $bigPath.
    let nix_out = std::fs::read_to_string(&outs[0].1).unwrap();
    let setup = setup_for(&show(&drv));
    let path = setup.envp.iter().find_map(|e| e.strip_prefix("bigPath=")).unwrap();
    let name = path.strip_prefix("/build/").unwrap();
    let contents = &setup.files.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(format!("{}{}\n", String::from_utf8_lossy(contents), path), nix_out);
    assert!(!setup.envp.iter().any(|e| e.starts_with("big=")));
}
