//! Real Nix NARs through the sandbox's file system: unpack (`NarSink`) then serialise
//! (`NarSource`) gives back Nix's bytes exactly, for the store paths the builds use.
use agent::nix::nar;
use agent::sandbox::fs::{Fs, ROOT};
use integration_tests::e2e;
use std::process::Command;

#[test]
fn real_nars_round_trip_through_the_sandbox_fs() {
    let tree = e2e::realise_natively(&e2e::instantiate("ok.tree")).unwrap();
    let multi = e2e::realise_natively(&e2e::instantiate("ok.multiple-outputs")).unwrap();
    let busybox = e2e::instantiate("ok.single-file");
    let bb = String::from_utf8(Command::new("nix-store").args(["-q", "--references"]).arg(&busybox).output().unwrap().stdout).unwrap();
    let mut paths: Vec<String> = bb.lines().filter(|l| l.ends_with("-busybox")).map(String::from).collect();
    paths.extend(tree.iter().chain(&multi).map(|(_, p, _)| p.to_string_lossy().into_owned()));
    assert!(paths.len() >= 4, "{paths:?}");
    let mut fs = Fs::nix_sandbox(1 << 30, 1 << 20).unwrap();
    let store = fs.resolve(ROOT, b"/nix/store", true).unwrap();
    for p in &paths {
        let bytes = Command::new("nix-store").arg("--dump").arg(p).output().unwrap().stdout;
        let name = p.strip_prefix("/nix/store/").unwrap();
        let mut sink = fs.unpacker(store, name.as_bytes());
        nar::parse(&mut bytes.as_slice(), &mut sink, Default::default()).unwrap();
        let root = fs.resolve(ROOT, p.as_bytes(), false).unwrap();
        let mut out = Vec::new();
        nar::serialize(&fs.tree(root), &mut |b| out.extend_from_slice(b)).unwrap();
        assert!(out == bytes, "{p}: NAR differs after the round trip");
    }
}
