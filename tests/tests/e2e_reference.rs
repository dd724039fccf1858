//! The reference side of the end-to-end corpus: real Nix builds every `ok` case in its sandbox
//! and rejects every `fail` case. (The attested side, `loader build`, is compared against this.)
use integration_tests::e2e;

#[test]
fn corpus_has_enough_cases() {
    let ok = e2e::cases("ok");
    let fail = e2e::cases("fail");
    assert!(ok.len() + fail.len() >= 12, "ok={ok:?} fail={fail:?}");
}

#[test]
fn nix_builds_the_ok_cases_and_rejects_the_fail_cases() {
    for case in e2e::cases("ok") {
        if case == "big-output" {
            continue; // exercised by the attested comparison; 256 MiB twice is slow here
        }
        let drv = e2e::instantiate(&format!("ok.{case}"));
        let outs = e2e::realise_natively(&drv).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(!outs.is_empty(), "{case}");
        for (_, path, hash) in outs {
            assert!(path.exists(), "{case}: {}", path.display());
            assert!(hash.starts_with("sha256:"), "{case}: {hash}");
        }
    }
    for case in e2e::cases("fail") {
        let drv = e2e::instantiate(&format!("fail.{case}"));
        assert!(e2e::realise_natively(&drv).is_err(), "{case} unexpectedly built");
    }
}
