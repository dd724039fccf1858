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


/// A copy of a dynamically linked ELF whose `PT_INTERP` names `interp` instead (what
/// `patchelf --set-interpreter` does, for a path no longer than the old one: the string is
/// rewritten in place and NUL-padded). Debian's programs name /lib64/ld-linux-x86-64.so.2,
/// which the sandbox (like Nix's) does not have.
pub fn with_interp(elf: &[u8], interp: &str) -> Vec<u8> {
    let mut b = elf.to_vec();
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(&b, 32) as usize;
    let phnum = u16::from_le_bytes([b[56], b[57]]) as usize;
    let mut done = false;
    for i in 0..phnum {
        let o = phoff + 56 * i;
        if u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3 {
            let (off, size) = (u64_at(&b, o + 8) as usize, u64_at(&b, o + 32) as usize);
            assert!(interp.len() < size, "{interp} does not fit in PT_INTERP ({size} bytes)");
            b[off..off + size].fill(0);
            b[off..off + interp.len()].copy_from_slice(interp.as_bytes());
            done = true;
        }
    }
    assert!(done, "no PT_INTERP");
    b
}

/// Where the dynamic tests put the host's glibc in the sandbox, and the interpreter path their
/// programs name.
pub const LIB_DIR: &str = "/build/lib";
pub const INTERP: &str = "/build/lib/ld.so";

/// The host's dynamic loader and the libraries `names` (from /lib/x86_64-linux-gnu) as files
/// for [`LIB_DIR`].
pub fn host_libraries(names: &[&str]) -> Vec<loader::ExecFile> {
    let mut v = vec![loader::ExecFile::from_host(std::path::Path::new("/lib64/ld-linux-x86-64.so.2"), INTERP).unwrap()];
    for n in names {
        v.push(loader::ExecFile::from_host(&std::path::Path::new("/lib/x86_64-linux-gnu").join(n), &format!("{LIB_DIR}/{n}")).unwrap());
    }
    v
}
