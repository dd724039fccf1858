//! Helpers for the sandbox suites: the static probe program, Debian's busybox, and the harness
//! that runs busybox cases in the sandbox and natively and compares them.
//!
//! The busybox harness batches cases: one `busybox sh` per group runs every case of the group
//! in a subshell, in a fresh directory of its own (`case1`, `case2`, … under the working
//! directory: /build in the sandbox, an empty temporary directory natively), and prints a marker
//! with the case's status after it. The native run has an empty environment except
//! `PATH=/path-not-set` (as the sandbox's), stdin from /dev/null and umask 022 (the script sets
//! it). Cases avoid what legitimately differs: absolute paths, owners (root natively, uid 1000 in
//! the sandbox), times, pids, directory order (they sort), and permission checks that root
//! bypasses.
use crate::dev_vm_config;
use loader::vm::Accel;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// tests/sandbox/probe.c, built once per test process (static, no libc).
pub fn probe() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let root = crate::root();
        let out = root.join(format!("target/sandbox-probe-{}", std::process::id()));
        let status = Command::new("gcc")
            .args(["-static", "-nostdlib", "-fno-stack-protector", "-fno-pie", "-no-pie", "-O1", "-o"])
            .arg(&out)
            .arg(root.join("tests/sandbox/probe.c"))
            .status()
            .unwrap();
        assert!(status.success(), "gcc");
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        bytes
    })
}

/// Runs the probe natively (stdin /dev/null, empty environment): what Linux does.
pub fn probe_natively(args: &[&str]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("sandbox-probe-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("probe");
    if !exe.exists() {
        std::fs::write(&exe, probe()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(&exe).args(args).current_dir(&dir).env_clear().stdin(Stdio::null()).output().unwrap()
}

/// Runs each case in its own directory, in a subshell, then prints its marker.
pub const DRIVER: &str = r#"umask 022
n=0
for c in "$@"; do
  n=$((n+1))
  mkdir "case$n"
  (cd "case$n" && eval "$c")
  printf '\n@@ case %d status %d @@\n' "$n" "$?"
done"#;

pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("apt: busybox-static")
}

/// Splits a driver's stdout into each case's (output, status).
fn split(out: &[u8], cases: usize) -> Vec<(String, Option<i32>)> {
    let text = String::from_utf8_lossy(out).into_owned();
    let mut rest = text.as_str();
    let mut v = Vec::new();
    for n in 1..=cases {
        let head = format!("\n@@ case {n} status ");
        match rest.find(&head) {
            Some(at) => {
                let after = &rest[at + head.len()..];
                let end = after.find(" @@\n").unwrap_or(after.len());
                v.push((rest[..at].to_string(), after[..end].parse().ok()));
                rest = after.get(end + 4..).unwrap_or("");
            }
            None => {
                v.push((std::mem::take(&mut rest.to_string()), None));
                rest = "";
            }
        }
    }
    v
}

/// Runs a group of `(name, script)` cases in the sandbox and natively, and fails listing every
/// case that differs.
pub fn compare(group: &str, cases: &[(&str, &str)]) {
    let mut argv = vec!["busybox", "sh", "-c", DRIVER, "sh"];
    argv.extend(cases.iter().map(|c| c.1));
    let ours = loader::exec(&dev_vm_config(Accel::Auto), &busybox(), &argv, |_, _| {}).unwrap();
    assert_eq!(ours.errors, vec![], "{group}");

    let dir = std::env::temp_dir().join(format!("sandbox-busybox-{group}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let native = Command::new("/bin/busybox")
        .args(&argv[1..])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/path-not-set")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(native.status.code(), Some(0), "{group}: the native driver failed: {}", String::from_utf8_lossy(&native.stderr));

    let (a, b) = (split(&ours.stdout, cases.len()), split(&native.stdout, cases.len()));
    let mut bad = Vec::new();
    for (i, (name, script)) in cases.iter().enumerate() {
        assert!(b[i].1.is_some(), "{group}/{name}: no native marker");
        if a[i] != b[i] {
            bad.push(format!(
                "--- {group}/{name}: {script}\nsandbox (status {:?}):\n{}\nnative (status {:?}):\n{}",
                a[i].1, a[i].0, b[i].1, b[i].0
            ));
        }
    }
    assert_eq!(ours.status, 0, "{group}: the sandboxed driver ended with {}; stderr:\n{}", ours.status, String::from_utf8_lossy(&ours.stderr));
    assert!(bad.is_empty(), "{} of {} cases differ; sandbox stderr:\n{}\n{}", bad.len(), cases.len(), String::from_utf8_lossy(&ours.stderr), bad.join("\n"));
}

