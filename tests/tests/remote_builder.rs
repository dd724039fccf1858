//! The loader as a Nix 2.8 remote builder (issue 17): an unmodified `nix-build --max-jobs 0
//! --builders 'ssh://…'` in its own chroot store builds through `loader --serve --write
//! --store …` behind a real sshd (tests/src/remote.rs); the consumer checks what it got with
//! `measurement-tool verify-path`, from its store and from a `file://` binary cache.
//! Every reference is Nix's: outputs are compared with `nix-store --realise --option sandbox
//! true` of the same `.drv`, NAR hashes with `nix-store --query --hash`.
use integration_tests::e2e;
use integration_tests::remote::Remote;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn corpus() -> std::path::PathBuf {
    integration_tests::root().join("tests/e2e/corpus.nix")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn verify_path(args: &[&str]) -> Output {
    Command::new(integration_tests::bin("measurement-tool")).env("RUST_BACKTRACE", "0").arg("verify-path").args(args).output().unwrap()
}

fn hash_part(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

fn query(store: &Path, what: &str, path: &str) -> Result<String, String> {
    let o = Remote::nix_store(store, &["--query", what, path]);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

/// Every `ok` case of the corpus, built by the remote builder for an unmodified `nix-build`:
/// each output in the client's store is bit-identical (NAR hash) to Nix's own sandboxed build,
/// with the same references; `verify-path` accepts each with `--allow-unattested` and refuses
/// it without.
#[test]
fn the_corpus_builds_through_nix_build_with_the_loader_as_remote_builder() {
    let remote = Remote::start("corpus");
    let cases = e2e::cases("ok");
    let attrs: Vec<String> = cases.iter().map(|c| format!("ok.{c}")).collect();
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let out = remote.nix_build(&corpus(), &attr_refs, 2);
    assert!(out.status.success(), "nix-build through the loader failed:\n{}", text(&out));
    eprintln!("{} corpus cases built through ssh:// + loader --serve in {:.1} s", cases.len(), t.elapsed().as_secs_f64());
    let log = text(&out);
    assert!(log.contains("in a fresh agent VM"), "the builds did not run in the agent:\n{log}");

    let mut resolved = 0;
    for case in &cases {
        let drv = e2e::instantiate(&format!("ok.{case}"));
        let native = e2e::realise_natively(&drv).unwrap_or_else(|e| panic!("{case}: Nix's own build: {e}"));
        for (name, path, nix_hash) in native {
            let p = path.to_string_lossy().to_string();
            let client_hash = query(&remote.client, "--hash", &p).unwrap_or_else(|e| panic!("{case}/{name}: {p} is not in the client's store: {e}"));
            assert_eq!(client_hash, nix_hash, "{case}/{name}: the remote build differs from Nix's");
            let refs = sorted_lines(&query(&remote.client, "--references", &p).unwrap());
            assert_eq!(refs, e2e::nix_references(&p), "{case}/{name}: references");
            let ev = remote.evidence.join(format!("{}.attestation.json", hash_part(&p)));
            assert!(ev.exists(), "{case}/{name}: no evidence kept for {p}");
            let store = remote.client.to_string_lossy().to_string();
            let ok = verify_path(&[&p, "--store", &store, "--evidence", &ev.to_string_lossy(), "--allow-unattested", "--json"]);
            assert!(ok.status.success(), "{case}/{name}: verify-path refused: {}", text(&ok));
            let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
            assert_eq!((v["verified"].as_bool(), v["attested"].as_bool()), (Some(false), Some(false)), "{case}: unattested evidence is never 'verified'");
            if v["derivation_check"].as_str().unwrap().contains("resolved") {
                resolved += 1;
            }
            let strict = verify_path(&[&p, "--store", &store, "--evidence", &ev.to_string_lossy()]);
            assert!(!strict.status.success(), "{case}/{name}: unattested evidence accepted without --allow-unattested");
            assert!(text(&strict).contains("--allow-unattested"), "{}", text(&strict));
        }
    }
    // The corpus has derivations with input derivations: the build hook sent those resolved.
    assert!(resolved >= 5, "only {resolved} outputs came from resolved derivations");

}

/// Malformed connections (a wrong magic, another protocol version, an unknown command, a
/// request cut short, a path that is not a store path): a clear error each, and the next
/// connection is served (one process per connection, as sshd starts them).
#[test]
fn malformed_connections_get_clear_errors_and_the_builder_keeps_serving() {
    let remote = Remote::start("faults");
    let hello = [0x390c9debu64.to_le_bytes(), 0x207u64.to_le_bytes()].concat();
    let faults = [
        (vec![0u8; 16], "protocol mismatch"),
        ([0x390c9debu64.to_le_bytes(), 0x307u64.to_le_bytes()].concat(), "unsupported"),
        ([&hello[..], &42u64.to_le_bytes()].concat(), "unknown serve command 42"),
        // cmdBuildDerivation with a path string cut short.
        ([&hello[..], &8u64.to_le_bytes(), &100u64.to_le_bytes(), b"/nix/store"].concat(), "closed"),
        // cmdQueryValidPaths whose path list holds something that is not a store path.
        ([&hello[..], &1u64.to_le_bytes(), &0u64.to_le_bytes(), &0u64.to_le_bytes(), &1u64.to_le_bytes(), &8u64.to_le_bytes(), b"/etc/pwd"].concat(), "not a store path"),
    ];
    for (bytes, words) in faults {
        let o = ssh_serve(&remote, &bytes);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(words), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let again = remote.nix_build(&corpus(), &["ok.single-file"], 1);
    assert!(again.status.success(), "{}", text(&again));
}

/// `cmdBuildPaths` (the legacy store's `buildPaths`, which Hydra uses; the 2.8 command line
/// cannot issue it over ssh://): the `.drv` closure is in the builder's store, the loader reads
/// it there and builds, input derivations whose outputs are missing first, each in its own VM
/// with the full check; the answer is status 0, the outputs land in the builder's store with
/// their evidence.
#[test]
fn build_paths_builds_a_derivation_from_the_builder_s_store() {
    let remote = Remote::start("build-paths");
    let drv = e2e::instantiate("ok.consumes-output");
    let url = format!("ssh://root@127.0.0.1?remote-program={}&remote-store={}", remote.wrapper.display(), remote.builder.display());
    let c = nix_cmd().args(["copy", "--derivation", "--to", &url]).arg(&drv).env("NIX_SSHOPTS", remote.ssh_opts()).output().unwrap();
    assert!(c.status.success(), "{}", text(&c));
    let mut req = [0x390c9debu64.to_le_bytes(), 0x207u64.to_le_bytes(), 6u64.to_le_bytes(), 1u64.to_le_bytes()].concat();
    let s = format!("{}!out", drv.display());
    req.extend_from_slice(&(s.len() as u64).to_le_bytes());
    req.extend_from_slice(s.as_bytes());
    req.resize(req.len() + (8 - s.len() % 8) % 8, 0);
    for v in [0u64, 0, 0, 0, 0, 0] {
        req.extend_from_slice(&v.to_le_bytes());
    }
    let o = ssh_serve(&remote, &req);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    // Greeting (magic, version), then the status.
    assert_eq!(o.stdout.len(), 24, "{stderr}");
    assert_eq!(u64::from_le_bytes(o.stdout[16..24].try_into().unwrap()), 0, "{stderr}");
    let native = e2e::realise_natively(&drv).unwrap();
    let (_, path, hash) = &native[0];
    let p = path.to_string_lossy();
    assert_eq!(query(&remote.builder, "--hash", &p).unwrap(), *hash);
    assert!(remote.evidence.join(format!("{}.attestation.json", hash_part(&p))).exists());
}

/// Runs `loader --serve --write --store BUILDER` over ssh with `input` as the whole request.
fn ssh_serve(remote: &Remote, input: &[u8]) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.args(remote.ssh_opts().split(' ')).arg("root@127.0.0.1").arg(format!("{} --serve --write --store {}", remote.wrapper.display(), remote.builder.display()));
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A failing build: Nix's usual error with the builder's log on the client, nothing imported on
/// either side, no evidence kept.
#[test]
fn a_failing_remote_build_gives_nix_s_error_and_imports_nothing() {
    let remote = Remote::start("fail");
    let drv = e2e::instantiate("fail.builder-fails");
    let out = remote.nix_build(&corpus(), &["fail.builder-fails"], 1);
    assert!(!out.status.success());
    let log = text(&out);
    assert!(log.contains(&format!("builder for '{}' failed with exit code 3", drv.display())), "{log}");
    assert!(log.contains("failing"), "the builder's log is not shown: {log}");
    let json = Command::new("nix").args(["--extra-experimental-features", "nix-command", "show-derivation"]).arg(&drv).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let path = v.as_object().unwrap().values().next().unwrap()["outputs"]["out"]["path"].as_str().unwrap().to_string();
    for store in [&remote.client, &remote.builder] {
        let o = Remote::nix_store(store, &["--check-validity", &path]);
        assert!(!o.status.success(), "{path} is valid in {}", store.display());
        assert!(!store.join(path.trim_start_matches('/')).exists(), "{path} left in {}", store.display());
    }
    let kept: Vec<_> = std::fs::read_dir(&remote.evidence).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(kept.is_empty(), "evidence kept for a failed build: {kept:?}");
}

/// The agent dying mid-build (the fault-test image, which takes an exception at boot): the
/// client gets a clear error naming it, nothing is imported or kept, and the next build on the
/// same builder goes through.
#[test]
fn an_agent_that_dies_fails_the_build_cleanly_and_the_builder_keeps_serving() {
    let remote = Remote::start("agent-dies");
    let dying = remote.wrapper_with("loader-dying", &format!("LOADER_AGENT='{}'", integration_tests::fault_test_bin().display()));
    let builders = format!("ssh://root@127.0.0.1?remote-program={}&remote-store={} x86_64-linux - 1", dying.display(), remote.builder.display());
    let out = remote.nix_build_via(&corpus(), &["ok.single-file"], &builders);
    assert!(!out.status.success());
    let log = text(&out);
    assert!(log.contains("attested build of") && log.contains("CPU exception vector 6"), "{log}");
    let drv = e2e::instantiate("ok.single-file");
    let json = nix_cmd().arg("show-derivation").arg(&drv).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let path = v.as_object().unwrap().values().next().unwrap()["outputs"]["out"]["path"].as_str().unwrap().to_string();
    for store in [&remote.client, &remote.builder] {
        assert!(!Remote::nix_store(store, &["--check-validity", &path]).status.success(), "{path} valid in {}", store.display());
    }
    assert_eq!(std::fs::read_dir(&remote.evidence).map(|d| d.count()).unwrap_or(0), 0);
    let again = remote.nix_build(&corpus(), &["ok.single-file"], 1);
    assert!(again.status.success(), "{}", text(&again));
    assert!(remote.evidence.join(format!("{}.attestation.json", hash_part(&path))).exists());
}

fn nix_cmd() -> Command {
    let mut c = Command::new("nix");
    c.args(["--extra-experimental-features", "nix-command"]);
    c
}

/// The provider publishes outputs and their evidence into a `file://` cache; a clean client
/// store substitutes them (signing key trusted) and `verify-path --cache` checks them; evidence
/// for the wrong path, a tampered NAR, a narinfo whose NarHash disagrees, a tampered statement,
/// a modified store path are each refused by name.
#[test]
fn substituted_outputs_verify_against_the_cache_and_tampering_is_refused() {
    let remote = Remote::start("cache");
    let out = remote.nix_build(&corpus(), &["ok.consumes-output", "ok.single-file"], 2);
    assert!(out.status.success(), "{}", text(&out));
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let (consumer, single) = (paths.iter().find(|p| p.ends_with("-consumer")).unwrap().clone(), paths.iter().find(|p| p.ends_with("-single-file")).unwrap().clone());

    // The provider: nix copy into a signed, uncompressed file:// cache, then the evidence.
    let cache = remote.dir.join("cache");
    let (sk, pk) = (remote.dir.join("cache.sk"), remote.dir.join("cache.pk"));
    let g = Command::new("nix-store").args(["--generate-binary-cache-key", "test-cache-1"]).arg(&sk).arg(&pk).output().unwrap();
    assert!(g.status.success(), "{}", text(&g));
    let url = format!("file://{}?compression=none&secret-key={}", cache.display(), sk.display());
    let c = nix_cmd().arg("copy").arg("--store").arg(&remote.client).arg("--to").arg(&url).args(&paths).output().unwrap();
    assert!(c.status.success(), "nix copy: {}", text(&c));
    let cache_url = format!("file://{}", cache.display());
    let p = Command::new(integration_tests::bin("loader")).args(["publish", "--evidence-dir"]).arg(&remote.evidence).args(["--cache", &cache_url]).output().unwrap();
    assert!(p.status.success(), "loader publish: {}", text(&p));
    for path in &paths {
        assert!(cache.join(format!("{}.attestation.json", hash_part(path))).exists(), "no evidence published for {path}");
    }

    // The consumer: a clean store substitutes from the cache.
    let fresh = remote.dir.join("consumer");
    let trusted = std::fs::read_to_string(&pk).unwrap();
    let r = Command::new("nix-store")
        .arg("--store")
        .arg(&fresh)
        .arg("--realise")
        .args(&paths)
        .args(["--option", "substituters", &cache_url, "--option", "trusted-public-keys", trusted.trim()])
        .output()
        .unwrap();
    assert!(r.status.success(), "substituting: {}", text(&r));
    let fresh_s = fresh.to_string_lossy().to_string();
    let check = |path: &str, extra: &[&str]| {
        let mut args = vec![path, "--store", &fresh_s, "--cache", &cache_url, "--allow-unattested"];
        args.extend_from_slice(extra);
        verify_path(&args)
    };
    // A full build's statement stands alone.
    let ok = check(&single, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("the cache's narinfo and NAR"), "{}", text(&ok));
    // A resolved one needs the .drv closure: refused until the consumer instantiates it.
    let no_drv = check(&consumer, &[]);
    assert!(!no_drv.status.success(), "a resolved derivation accepted without its .drv");
    assert!(text(&no_drv).contains("nix-instantiate"), "{}", text(&no_drv));
    let i = Command::new("nix-instantiate")
        .arg("--store")
        .arg(&fresh)
        .arg(corpus())
        .args(["--argstr", "busyboxDir"])
        .arg(e2e::busybox_dir())
        .args(["-A", "ok.consumes-output"])
        .output()
        .unwrap();
    assert!(i.status.success(), "{}", text(&i));
    let ok = check(&consumer, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("re-resolved"), "{}", text(&ok));

    // Evidence for another path.
    let wrong = cache.join(format!("{}.attestation.json", hash_part(&single)));
    let e = verify_path(&[&consumer, "--store", &fresh_s, "--evidence", &wrong.to_string_lossy(), "--allow-unattested"]);
    assert!(!e.status.success() && text(&e).contains(&format!("a statement with {consumer} among its outputs")), "{}", text(&e));

    // A tampered NAR in the cache.
    let ni_path = cache.join(format!("{}.narinfo", hash_part(&single)));
    let ni = std::fs::read_to_string(&ni_path).unwrap();
    let nar_url = ni.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    let nar_file = cache.join(nar_url);
    let nar = std::fs::read(&nar_file).unwrap();
    let mut bad = nar.clone();
    let at = bad.windows(5).position(|w| w == b"hello").unwrap();
    bad[at] = b'j';
    std::fs::write(&nar_file, &bad).unwrap();
    let e = check(&single, &[]);
    assert!(!e.status.success() && text(&e).contains("cache NAR"), "{}", text(&e));
    std::fs::write(&nar_file, &nar).unwrap();

    // A narinfo whose NarHash is not the attested one (the hash of the tampered NAR).
    let bad_hash = format!("sha256:{}", agent::nix::base32::encode(&<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&bad))));
    let forged: String = ni.lines().map(|l| if l.starts_with("NarHash: ") { format!("NarHash: {bad_hash}\n") } else { format!("{l}\n") }).collect();
    std::fs::write(&ni_path, forged).unwrap();
    let e = check(&single, &[]);
    assert!(!e.status.success() && text(&e).contains("narinfo NarHash"), "{}", text(&e));
    std::fs::write(&ni_path, &ni).unwrap();

    // The statement inside the evidence altered.
    let ev_path = cache.join(format!("{}.attestation.json", hash_part(&single)));
    let good = std::fs::read_to_string(&ev_path).unwrap();
    let mut b: serde_json::Value = serde_json::from_str(&good).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let st = String::from_utf8(b64.decode(b["statement"].as_str().unwrap()).unwrap()).unwrap();
    b["statement"] = b64.encode(st.replacen("\"output\":\"out\"", "\"output\":\"dev\"", 1)).into();
    std::fs::write(&ev_path, b.to_string()).unwrap();
    let e = check(&single, &[]);
    assert!(!e.status.success() && text(&e).contains("REJECTED"), "{}", text(&e));
    std::fs::write(&ev_path, &good).unwrap();

    // The inputs the agent received, against the builder client's own store (which has them):
    // equal for the honest evidence; an unattested bundle re-made around a statement whose
    // input hash was changed (a `none` bundle's REPORT_DATA is only a checksum) is refused by the
    // input check.
    let client_s = remote.client.to_string_lossy().to_string();
    let honest = remote.evidence.join(format!("{}.attestation.json", hash_part(&consumer)));
    let o = verify_path(&[&consumer, "--store", &client_s, "--evidence", &honest.to_string_lossy(), "--allow-unattested", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["inputs_checked"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["inputs_not_in_store"].as_u64(), Some(0), "{v}");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&honest).unwrap()).unwrap();
    let mut st: serde_json::Value = serde_json::from_slice(&b64.decode(b["statement"].as_str().unwrap()).unwrap()).unwrap();
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array_mut().unwrap();
    let lib = deps.iter_mut().find(|d| d["name"].as_str().unwrap().ends_with("-dep-lib")).unwrap();
    lib["digest"]["sha256"] = "ab".repeat(32).into();
    let st = serde_json::to_vec(&st).unwrap();
    b["statement"] = b64.encode(&st).into();
    b["unsigned_report_data"] = hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&st)).into();
    let forged = remote.dir.join("forged-input.json");
    std::fs::write(&forged, b.to_string()).unwrap();
    let e = verify_path(&[&consumer, "--store", &client_s, "--evidence", &forged.to_string_lossy(), "--allow-unattested"]);
    assert!(!e.status.success() && text(&e).contains("REJECTED: input"), "{}", text(&e));

    // The path modified in the consumer's store after it was substituted.
    let file = fresh.join(single.trim_start_matches('/'));
    let _ = Command::new("chmod").arg("u+w").arg(&file).status();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    let e = check(&single, &[]);
    assert!(!e.status.success() && text(&e).contains("modified after it was registered"), "{}", text(&e));
    let mut s = String::new();
    std::fs::File::open(&file).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello\nx");
}

/// A derivation whose builder never ends (`while :; do :; done`: time does not pass in the
/// sandbox, so `sleep` would return at once): a build that is certainly under way when a test
/// injects its fault. Returns the file, its `.drv` and its output path.
fn hanging_derivation(remote: &Remote) -> (std::path::PathBuf, String, String) {
    let file = remote.dir.join("hang.nix");
    let lib = integration_tests::root().join("tests/e2e/lib.nix");
    std::fs::write(
        &file,
        format!("{{ busyboxDir }}:\nlet l = import {} {{ inherit busyboxDir; }}; in\n{{ hang = l.mk {{ name = \"hangs\"; script = \"while :; do :; done\"; }}; }}\n", lib.display()),
    )
    .unwrap();
    let i = Command::new("nix-instantiate").arg(&file).args(["--argstr", "busyboxDir"]).arg(e2e::busybox_dir()).args(["-A", "hang"]).output().unwrap();
    assert!(i.status.success(), "{}", text(&i));
    let drv = String::from_utf8_lossy(&i.stdout).trim().to_string();
    (file, drv.clone(), output_of(&drv))
}

/// The `out` path of a `.drv` (`nix show-derivation`).
fn output_of(drv: &str) -> String {
    let json = nix_cmd().arg("show-derivation").arg(drv).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    v.as_object().unwrap().values().next().unwrap()["outputs"]["out"]["path"].as_str().unwrap().to_string()
}

/// Polls `f` every 100 ms until it returns something, for at most `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(std::time::Instant::now() < end, "waited {secs} s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The QEMU of the build `client` (a `nix-build`) started; if it does not start, the client's
/// output says why.
fn wait_for_build(remote: &Remote, client: &mut std::process::Child) -> u32 {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < end {
        if let Some(pid) = remote.qemu_pids().first() {
            return *pid;
        }
        if client.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = client.kill();
    let mut log = String::new();
    let _ = client.stderr.take().unwrap().read_to_string(&mut log);
    panic!("the build's QEMU did not start; nix-build said:\n{log}");
}

/// After a fault: the output is in neither store (not valid, nothing on disk), no evidence was
/// kept, no QEMU of this builder runs, the loader's temporary directory is empty, and the next
/// build on the same builder goes through.
fn assert_nothing_kept_and_the_builder_serves_again(remote: &Remote, path: &str) {
    for store in [&remote.client, &remote.builder] {
        assert!(!Remote::nix_store(store, &["--check-validity", path]).status.success(), "{path} is valid in {}", store.display());
        assert!(!store.join(path.trim_start_matches('/')).exists(), "{path} left in {}", store.display());
    }
    let kept: Vec<_> = std::fs::read_dir(&remote.evidence).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(kept.is_empty(), "evidence kept for a build that did not finish: {kept:?}");
    wait_for(30, "the build's QEMU to be gone", || remote.qemu_pids().is_empty().then_some(()));
    wait_for(30, "the loader's temporary files to be removed", || remote.tmp_entries().is_empty().then_some(()));
    let again = remote.nix_build(&corpus(), &["ok.single-file"], 1);
    assert!(again.status.success(), "the builder does not serve after the fault: {}", text(&again));
}

/// QEMU killed (SIGKILL) while the builder runs: the client gets a clear error naming it,
/// nothing is imported on either side, no evidence is kept, nothing is left running or on disk,
/// and the builder serves the next build.
#[test]
fn qemu_killed_mid_build_fails_the_build_cleanly_and_the_builder_keeps_serving() {
    let remote = Remote::start("qemu-killed");
    let (file, _drv, path) = hanging_derivation(&remote);
    let mut client = remote.nix_build_spawn(&file, &["hang"], 1);
    let qemu = wait_for_build(&remote, &mut client);
    // Let the agent boot and take its inputs: the VM is the build, it never ends by itself.
    std::thread::sleep(std::time::Duration::from_secs(3));
    integration_tests::remote::kill9(qemu);
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "the build succeeded with its QEMU killed");
    let log = text(&out);
    assert!(log.contains("attested build of") && log.contains("QEMU") && log.contains("SIGKILL"), "no clear error: {log}");
    assert_nothing_kept_and_the_builder_serves_again(&remote, &path);
}

/// The SSH connection dropped mid-build (the client's `ssh` killed): the client fails with an
/// error, the loader sees the connection end and stops the build (its QEMU ends, nothing is
/// imported, no evidence is kept), and the builder serves the next connection.
#[test]
fn a_connection_dropped_mid_build_stops_the_build_and_the_builder_keeps_serving() {
    let remote = Remote::start("ssh-dropped");
    let (file, _drv, path) = hanging_derivation(&remote);
    let mut client = remote.nix_build_spawn(&file, &["hang"], 1);
    wait_for_build(&remote, &mut client);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let serving = remote.serve_pids();
    assert_eq!(serving.len(), 1, "one loader --serve for the one build");
    // The client's ssh: the one holding this test's client key.
    let key = remote.dir.join("client_key");
    let key = key.to_string_lossy();
    let ssh: Vec<u32> = integration_tests::remote::processes().into_iter().filter(|p| p.comm == "ssh" && p.args.iter().any(|a| *a == key)).map(|p| p.pid).collect();
    assert!(!ssh.is_empty(), "the client's ssh was not found");
    for pid in ssh {
        integration_tests::remote::kill9(pid);
    }
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "the build succeeded with its connection dropped");
    // Nix's own words for a connection that ended under it.
    assert!(text(&out).contains("unexpected end-of-file"), "{}", text(&out));
    wait_for(30, "the loader to end with its connection", || remote.serve_pids().is_empty().then_some(()));
    assert_nothing_kept_and_the_builder_serves_again(&remote, &path);
}
