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

/// The host's GCC 12 toolchain (driver, cc1, collect2, as, ld and the libraries they load),
/// Debian's binaries unchanged but for PT_INTERP, placed under a sysroot /build; GCC finds its
/// parts relative to its own path, as a Nix store path's would.
fn gcc_files() -> Vec<ExecFile> {
    let gcc = "/usr/lib/gcc/x86_64-linux-gnu/12";
    let mut files = Vec::new();
    let mut place = |host: &str, guest: &str, program: bool| {
        let bytes = std::fs::read(host).unwrap_or_else(|e| panic!("{host}: {e} (apt: gcc-12, binutils)"));
        let bytes = if program { with_interp(&bytes, INTERP) } else { bytes };
        files.push(ExecFile { guest: guest.into(), contents: Contents::Bytes(bytes), executable: true });
    };
    for (host, guest) in [
        ("/usr/bin/x86_64-linux-gnu-gcc-12", "/build/usr/bin/gcc"),
        ("/usr/bin/x86_64-linux-gnu-as", "/build/usr/bin/as"),
        ("/usr/bin/x86_64-linux-gnu-ld.bfd", "/build/usr/bin/ld"),
        (&format!("{gcc}/cc1"), "/build/usr/lib/gcc/x86_64-linux-gnu/12/cc1"),
        (&format!("{gcc}/collect2"), "/build/usr/lib/gcc/x86_64-linux-gnu/12/collect2"),
    ] {
        place(host, guest, true);
    }
    for f in ["crtbeginS.o", "crtendS.o", "libgcc.a", "libgcc_s.so", "liblto_plugin.so"] {
        place(&format!("{gcc}/{f}"), &format!("/build/usr/lib/gcc/x86_64-linux-gnu/12/{f}"), false);
    }
    for f in ["Scrt1.o", "crti.o", "crtn.o", "libc.so", "libc_nonshared.a"] {
        place(&format!("/usr/lib/x86_64-linux-gnu/{f}"), &format!("/build/usr/lib/x86_64-linux-gnu/{f}"), false);
    }
    place("/usr/include/stdc-predef.h", "/build/usr/include/stdc-predef.h", false);
    for f in ["libc.so.6", "libgcc_s.so.1"] {
        place(&format!("/lib/x86_64-linux-gnu/{f}"), &format!("/build/lib/x86_64-linux-gnu/{f}"), false);
    }
    place("/lib64/ld-linux-x86-64.so.2", "/build/lib64/ld-linux-x86-64.so.2", false);
    files.extend(host_libraries(&[
        "libc.so.6",
        "libm.so.6",
        "libisl.so.23",
        "libmpc.so.3",
        "libmpfr.so.6",
        "libgmp.so.10",
        "libz.so.1",
        "libzstd.so.1",
        "libbfd-2.40-system.so",
        "libsframe.so.0",
        "libctf.so.0",
        "libjansson.so.4",
    ]));
    files
}

const MAIN_C: &str = "int puts(const char *);\nint twice(int);\nint main(void) { puts(\"hello from gcc\"); return twice(3) - 6; }\n";
const TWICE_C: &str = "int twice(int x) { int s = 0; for (int i = 0; i < 2; i++) s += x; return s; }\n";

/// Debian's GCC 12 compiles and links a two-file C program with `-O2`, through temporary files
/// and with `-pipe` (cc1 | as through a pipe), under the agent: the executables are the bytes
/// the same GCC makes natively.
#[test]
fn debians_gcc_builds_the_same_bytes_as_natively() {
    let dir = std::env::temp_dir().join(format!("sandbox-dynamic-gcc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.c"), MAIN_C).unwrap();
    std::fs::write(dir.join("twice.c"), TWICE_C).unwrap();
    let mut want = Vec::new();
    for (out, pipe) in [("prog", ""), ("prog-pipe", "-pipe")] {
        let st = Command::new("gcc").args(["-O2", "-o", out, "main.c", "twice.c"]).args((!pipe.is_empty()).then_some(pipe)).current_dir(&dir).status().unwrap();
        assert!(st.success());
        want.push(std::fs::read(dir.join(out)).unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(want[0], want[1], "-pipe changes nothing natively");

    let mut files = gcc_files();
    files.push(ExecFile { guest: "main.c".into(), contents: Contents::Bytes(MAIN_C.into()), executable: false });
    files.push(ExecFile { guest: "twice.c".into(), contents: Contents::Bytes(TWICE_C.into()), executable: false });
    // The output's bytes go to stdout (od), its run through the sandbox's ld.so.
    let script = format!(
        "export LD_LIBRARY_PATH={LIB_DIR} PATH=/build/usr/bin\n\
         gcc --sysroot=/build -O2 -o prog main.c twice.c || exit 1\n\
         gcc --sysroot=/build -O2 -pipe -o prog-pipe main.c twice.c || exit 2\n\
         cmp prog prog-pipe || exit 3\n\
         {INTERP} --library-path {LIB_DIR} ./prog >&2 || exit 4\n\
         od -An -v -tx1 prog"
    );
    let ours = sandboxed(&busybox(), &["busybox", "sh", "-c", &script], files);
    assert_eq!((ours.status, ours.errors.clone()), (0, vec![]), "stderr:\n{}\nnotes: {:?}", String::from_utf8_lossy(&ours.stderr), ours.notes);
    assert_eq!(String::from_utf8_lossy(&ours.stderr), "hello from gcc\n");
    let bytes: Vec<u8> = String::from_utf8(ours.stdout).unwrap().split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    assert!(bytes == want[0], "the sandbox's executable differs from the native one ({} vs {} bytes)", bytes.len(), want[0].len());
    let unimplemented: Vec<&String> = ours.notes.iter().filter(|n| n.contains("unimplemented")).collect();
    assert_eq!(unimplemented, Vec::<&String>::new(), "system calls GCC fell back from");
}
