//! What the host sends as inputs, against a hostile host (issue 15): a deep graph of input
//! derivations, a request that leaves out part of the input closure. `loader build` in a fresh
//! agent under QEMU; every expected value comes from Nix 2.8 building the same `.drv` in its
//! sandbox. (Fixed outputs with md5/sha1 hashes and the executable flat output are corpus cases:
//! `tests/e2e/corpus.nix`, run by `e2e_build`.)
use integration_tests::e2e;
use loader::build::{BuildError, BuildReport};
use std::path::{Path, PathBuf};

fn config() -> loader::vm::VmConfig {
    let mut c = integration_tests::vm_config(loader::vm::Accel::Auto);
    c.memory_mib = 1024;
    c.timeout = std::time::Duration::from_secs(900);
    c
}

fn out_dir(case: &str) -> PathBuf {
    let d = integration_tests::root().join(format!("target/e2e-inputs-{}/{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn build_with(inputs: &loader::store::BuildInputs, dir: &Path) -> Result<BuildReport, BuildError> {
    let mut log = Vec::new();
    let r = loader::build::build_inputs(&config(), inputs, dir, |_, b| log.extend_from_slice(b), |_| {}, &|p| loader::store::dump(p));
    if r.is_err() {
        eprintln!("build log:\n{}", String::from_utf8_lossy(&log));
    }
    r
}

/// The statement's inputs: path → the references the agent recorded for it.
fn statement_inputs(report: &BuildReport) -> Vec<(String, Vec<String>)> {
    let st: serde_json::Value = serde_json::from_slice(&report.statement).unwrap();
    st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let refs = d["annotations"]["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (d["name"].as_str().unwrap().to_string(), refs)
        })
        .collect()
}

/// The build's outputs are Nix's, bit for bit: paths, NAR hashes, references; and every input's
/// recorded references are the ones Nix registered for it.
fn assert_same_as_nix(case: &str, drv: &Path, report: &BuildReport) {
    let native = e2e::realise_natively(drv).unwrap_or_else(|e| panic!("{case}: Nix failed: {e}"));
    assert_eq!(report.outputs.len(), native.len(), "{case}");
    for (name, path, hash) in &native {
        let ours = report.outputs.iter().find(|o| o.name == *name).unwrap();
        assert_eq!(ours.path, path.to_string_lossy(), "{case}.{name}: store path");
        assert_eq!(format!("sha256:{}", agent::nix::base32::encode(&ours.nar_sha256)), *hash, "{case}.{name}: NAR hash");
        assert_eq!(ours.references, e2e::nix_references(&ours.path), "{case}.{name}: references");
    }
    for (input, refs) in statement_inputs(report) {
        assert_eq!(refs, e2e::nix_references(&input), "{case}: references recorded for input {input}");
    }
}

#[test]
fn a_chain_of_1000_derivations_builds_bit_identically_to_nix() {
    // The recursive hashDerivationModulo overflowed the agent's 64 KiB boot stack into its page
    // tables at ~60 levels; the walk is now iterative. 999 input .drv files are sent.
    let drv = e2e::instantiate_chain(1000);
    e2e::realise_natively(&drv).unwrap();
    let inputs = loader::store::gather(&drv).unwrap();
    assert_eq!(inputs.input_drvs.len(), 999);
    let t = std::time::Instant::now();
    let report = build_with(&inputs, &out_dir("chain-1000")).unwrap();
    eprintln!("chain of 1000: built in {:.1} s ({} input paths, {} bytes of input NARs)", t.elapsed().as_secs_f64(), report.input_paths, report.input_bytes);
    assert_same_as_nix("chain-1000", &drv, &report);
}

#[test]
fn a_request_that_omits_a_transitive_input_is_refused_and_publishes_nothing() {
    // consumes-closure uses `references`, whose output refers to dep's out: the host must send
    // dep's out too. Honest first: the statement records each input's references (Nix's).
    let drv = e2e::instantiate("ok.consumes-closure");
    e2e::realise_natively(&drv).unwrap();
    let inputs = loader::store::gather(&drv).unwrap();
    let report = build_with(&inputs, &out_dir("closure")).unwrap();
    assert_same_as_nix("consumes-closure", &drv, &report);
    let dep = inputs.input_paths.iter().find(|p| p.ends_with("-dep")).expect("dep's out in the closure").clone();
    let referrer = inputs.input_paths.iter().find(|p| p.ends_with("-references")).unwrap().clone();
    assert!(statement_inputs(&report).iter().any(|(p, refs)| *p == referrer && refs.contains(&dep)));

    // The lying host leaves dep's out out.
    let mut lying = inputs.clone();
    lying.input_paths.retain(|p| *p != dep);
    let dir = out_dir("omitted");
    match build_with(&lying, &dir) {
        Err(BuildError::Refused { code, text, .. }) => {
            assert_eq!(code, 12, "{text}");
            assert_eq!(text, format!("input '{referrer}' refers to '{dep}', which was not sent"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "files left behind: {left:?}");
}
