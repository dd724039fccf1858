//! Dynamically linked programs in the sandbox, as Linux runs them (issue 16): the agent maps the
//! interpreter a program names (`PT_INTERP`), no wrapper and no `LD_PRELOAD`. Each case runs a
//! program natively and under the agent (the development image) and compares stdout and status
//! byte for byte:
//! - tests/sandbox/dynamic.c, built here with the host's gcc against the host's glibc, its
//!   interpreter and RUNPATH pointed at /build/lib where the test places ld.so, libc and libm:
//!   the auxiliary vector (PIE and non-PIE), copy-on-write fork, vfork, posix_spawn, file
//!   mappings and mremap, the file clock, the system calls added for configure/make/gcc;
//! - Debian's own dynamically linked bash and GNU make (their interpreter path rewritten, as
//!   `patchelf` would), a script and a Makefile whose rebuild decisions depend on mtimes.
use integration_tests::dev_vm_config;
use integration_tests::sandbox::{busybox, host_libraries, with_interp, INTERP, LIB_DIR};
use loader::vm::Accel;
use loader::{Contents, ExecFile, ExecOptions};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// dynamic.c built three ways: for a native run, and for the sandbox as a PIE and as ET_EXEC.
struct Builds {
    native: PathBuf,
    pie: Vec<u8>,
    no_pie: Vec<u8>,
}

fn builds() -> &'static Builds {
    static B: OnceLock<Builds> = OnceLock::new();
    B.get_or_init(|| {
        let root = integration_tests::root();
        let dir = root.join(format!("target/sandbox-dynamic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = root.join("tests/sandbox/dynamic.c");
        let gcc = |out: &str, extra: &[&str]| {
            let path = dir.join(out);
            let status = Command::new("gcc").args(["-O1", "-Wall", "-o"]).arg(&path).arg(&src).args(extra).arg("-lm").status().unwrap();
            assert!(status.success(), "gcc {extra:?}");
            path
        };
        let sandboxed = ["-Wl,--dynamic-linker=/build/lib/ld.so", "-Wl,-rpath,/build/lib"];
        let native = gcc("native", &[]);
        let pie = std::fs::read(gcc("pie", &[&["-pie"][..], &sandboxed].concat())).unwrap();
        let no_pie = std::fs::read(gcc("no-pie", &[&["-no-pie"][..], &sandboxed].concat())).unwrap();
        Builds { native, pie, no_pie }
    })
}

fn libraries() -> Vec<ExecFile> {
    host_libraries(&["libc.so.6", "libm.so.6"])
}

/// Runs `argv` natively in a fresh directory with Nix's environment (stdin /dev/null).
fn native(program: &std::path::Path, argv: &[&str], tag: &str) -> (String, i32) {
    let dir = std::env::temp_dir().join(format!("sandbox-dynamic-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(program)
        .args(&argv[1..])
        .current_dir(&dir)
        .env_clear()
        .envs(loader::EXEC_ENV.iter().map(|kv| kv.split_once('=').unwrap()).filter(|(k, _)| !k.starts_with("PWD")))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
}

fn sandboxed(program: &[u8], argv: &[&str], files: Vec<ExecFile>) -> loader::ExecResult {
    let options = ExecOptions { files, ..Default::default() };
    loader::exec_with(&dev_vm_config(Accel::Auto), program, argv, &options, |_, _| {}).unwrap()
}

/// One mode of dynamic.c: the sandbox's stdout and status equal the native run's.
fn compare(mode: &str, program: &[u8]) {
    let b = builds();
    let argv = ["dynamic", mode];
    let (want, want_status) = native(&b.native, &argv, mode);
    assert_eq!(want_status, 0, "{mode}: the native run failed:\n{want}");
    assert!(!want.contains("FAILED"), "{mode}: natively:\n{want}");
    let ours = sandboxed(program, &argv, libraries());
    assert_eq!(ours.errors, vec![], "{mode}");
    let unimplemented: Vec<&String> = ours.notes.iter().filter(|n| n.contains("unimplemented")).collect();
    assert_eq!(
        (String::from_utf8_lossy(&ours.stdout).into_owned(), ours.status),
        (want, want_status),
        "{mode}: sandbox stderr:\n{}\nnotes: {:?}",
        String::from_utf8_lossy(&ours.stderr),
        ours.notes
    );
    assert_eq!(unimplemented, Vec::<&String>::new(), "{mode}: system calls the run fell back from");
}

#[test]
fn the_interpreter_a_program_names_is_loaded_with_its_auxiliary_vector() {
    compare("auxv", &builds().pie);
    compare("auxv", &builds().no_pie);
}

#[test]
fn fork_is_copy_on_write_with_linux_semantics() {
    compare("fork", &builds().pie);
}

#[test]
fn vfork_and_posix_spawn_share_the_parents_memory_until_exec() {
    compare("vfork", &builds().pie);
    compare("spawn", &builds().pie);
}

#[test]
fn file_mappings_and_mremap() {
    compare("mmap", &builds().pie);
}

#[test]
fn the_file_clock_orders_changes_and_keeps_set_times() {
    compare("clock", &builds().pie);
}

#[test]
fn system_calls_configure_make_and_gcc_need() {
    compare("calls", &builds().pie);
}

/// A script for busybox sh with Debian's bash ($1) and make ($2): shell features, a `#!`
/// script naming the dynamic bash, and make's rebuild decisions as inputs change. The
/// `sleep`s let the native run's coarse file clock move; in the sandbox they take no time and
/// every change is a tick of the file clock of its own.
const BASH_AND_MAKE: &str = r#"B=$1; M=$2
"$B" -c 'echo "bash ${BASH_VERSINFO[0]}"; for i in 1 2 3; do echo $i; done | while read x; do echo "line $x"; done; x=$(echo sub); echo "$x"; declare -A h=([k]=v); echo "${h[k]}"; (exit 3); echo "status $?"'
printf '#!%s\nwhile read l; do echo "got $l"; done\n' "$B" > gen.sh
chmod +x gen.sh
printf 'all: out.txt\nout.txt: in.txt gen.sh\n\t./gen.sh < in.txt > out.txt\n' > Makefile
echo one > in.txt
sleep 0.05
"$M" SHELL="$B"; cat out.txt
"$M" SHELL="$B"
sleep 0.05
echo two > in.txt
"$M" SHELL="$B"; cat out.txt
sleep 0.05
touch gen.sh
"$M" -q SHELL="$B"; echo "make -q after touch: $?"
"$M" SHELL="$B"
"$M" -q SHELL="$B"; echo "make -q: $?"
echo done"#;

#[test]
fn debians_dynamic_bash_and_make_run_as_on_linux() {
    let dir = std::env::temp_dir().join(format!("sandbox-dynamic-bash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let want = Command::new("/bin/busybox")
        .args(["sh", "-c", BASH_AND_MAKE, "sh", "/bin/bash", "/usr/bin/make"])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/path-not-set")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(want.status.success(), "natively: {}", String::from_utf8_lossy(&want.stderr));

    let mut files = host_libraries(&["libc.so.6", "libtinfo.so.6", "libdl.so.2"]);
    for (host, guest) in [("/bin/bash", "/build/bin/bash"), ("/usr/bin/make", "/build/bin/make")] {
        let bytes = with_interp(&std::fs::read(host).unwrap(), INTERP);
        files.push(ExecFile { guest: guest.into(), contents: Contents::Bytes(bytes), executable: true });
    }
    // The libraries bash and make need come from /build/lib: LD_LIBRARY_PATH, as a Nix
    // derivation's RUNPATH would say (the programs are Debian's, unchanged but for PT_INTERP).
    let script = format!("export LD_LIBRARY_PATH={LIB_DIR}\n{BASH_AND_MAKE}");
    let ours = sandboxed(&busybox(), &["busybox", "sh", "-c", &script, "sh", "/build/bin/bash", "/build/bin/make"], files);
    assert_eq!(ours.errors, vec![]);
    assert_eq!(
        (String::from_utf8_lossy(&ours.stdout), ours.status),
        (String::from_utf8_lossy(&want.stdout), 0),
        "sandbox stderr:\n{}\nnotes: {:?}",
        String::from_utf8_lossy(&ours.stderr),
        ours.notes
    );
}
