//! Escape and abuse: privileged instructions, the agent's memory, hostile pointers, and every
//! resource a builder can try to exhaust. Each case must end the builder with a clear status and
//! a note in the agent's log, and the agent must answer the request that follows (a Ping sent
//! after the Exec in the same request stream).
//!
//! Expected statuses come from running the same probe natively where Linux defines them
//! (faults, errno values); the resource cases are checked against the limits the test asks for.
use agent::exec::Requested;
use agent::proto::Type;
use integration_tests::sandbox::{busybox, compare, probe, probe_natively};
use integration_tests::dev_vm_config;
use loader::vm::{Accel, VmConfig};
use loader::{ExecOptions, ExecResult};

struct Outcome {
    r: ExecResult,
    serial: String,
}

impl Outcome {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.r.stdout).into_owned()
    }
    /// The value after `key ` on its own line of stdout.
    fn value(&self, key: &str) -> i64 {
        let out = self.stdout();
        let line = out.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("no {key:?} in {out:?}"));
        line[key.len() + 1..].trim().parse().unwrap()
    }
    /// The limit the agent granted, from its log line `exec: limits: …`.
    fn granted(&self, what: &str) -> u64 {
        let line = self.serial.lines().find(|l| l.contains("exec: limits:")).expect("limits logged");
        let words: Vec<&str> = line.split(|c| c == ' ' || c == ',').filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == what).unwrap_or_else(|| panic!("{what} in {line}"));
        words[at - 1].parse().unwrap()
    }
}

/// Runs `argv` of `program` with `limits`, then a Ping; checks that the agent answered the Ping
/// and refused nothing.
fn run_in(config: &VmConfig, program: &[u8], argv: &[&str], limits: Requested) -> Outcome {
    let options = ExecOptions { limits, ..Default::default() };
    let run = loader::vm::run(
        config,
        |r| {
            loader::exec_request(r, program, argv, &options)?;
            r.frame(Type::Ping, b"still there?")?;
            Ok(())
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("{argv:?}: the agent did not survive: {e}"));
    assert!(run.frames.iter().any(|f| f.ty == Type::Pong && f.payload == b"still there?"), "{argv:?}: no Pong after the Exec");
    let r = ExecResult::from_frames(&run.frames);
    assert_eq!(r.errors, vec![], "{argv:?}");
    Outcome { r, serial: run.serial }
}

fn run(program: &[u8], argv: &[&str], limits: Requested) -> Outcome {
    run_in(&dev_vm_config(Accel::Auto), program, argv, limits)
}

fn probe_run(mode: &str, limits: Requested) -> Outcome {
    run(probe(), &["probe", mode], limits)
}

#[test]
fn privileged_instructions_and_agent_memory_end_only_the_program() {
    for mode in [
        "hlt", "cli", "sti", "in", "out", "outl-dx", "wrmsr", "rdmsr", "lgdt", "lidt", "mov-cr3", "swapgs", "int3", "int-timer", "ud2",
        "kernel-read", "kernel-write", "direct-map-read", "image-write", "jump-kernel", "jump-noncanonical", "write-text", "exec-data",
    ] {
        let native = probe_natively(&[mode]);
        let want = 128 + std::os::unix::process::ExitStatusExt::signal(&native.status).unwrap_or_else(|| panic!("{mode}: no signal natively"));
        let o = probe_run(mode, Requested::default());
        assert_eq!(o.r.status, want, "{mode}");
        assert!(o.serial.contains(&format!("pid 1 killed by signal {}", want - 128)), "{mode}: no note in the log:\n{}", o.serial);
    }
    // `int $0x80` is a 32-bit system call on Linux; the sandbox offers only the 64-bit ABI, so it
    // is a #GP like any other software interrupt into the agent.
    let o = probe_run("int80", Requested::default());
    assert_eq!(o.r.status, 128 + 11);
}

#[test]
fn hostile_pointers_get_the_errno_linux_gives() {
    let native = probe_natively(&["bad-pointers"]);
    assert_eq!(native.status.code(), Some(0));
    let o = probe_run("bad-pointers", Requested::default());
    assert_eq!(o.r.status, 0);
    assert_eq!(o.stdout(), String::from_utf8_lossy(&native.stdout));
}

#[test]
fn an_infinite_loop_ends_at_the_cpu_limit() {
    let o = probe_run("spin", Requested { cpu_ticks: 20, ..Default::default() });
    assert_eq!(o.r.status, 128 + 24, "SIGXCPU");
    assert!(o.serial.contains("CPU time limit"), "{}", o.serial);
    // A shell loop, too.
    let o = run(&busybox(), &["busybox", "sh", "-c", "while :; do :; done"], Requested { cpu_ticks: 20, ..Default::default() });
    assert_eq!(o.r.status, 128 + 24);
    // A loop spending its time in the agent (each read makes the agent fill 64 MiB of the
    // process's pages; the process runs for microseconds): the agent's time is charged too, or
    // this would never end.
    let o = probe_run("zero-loop", Requested { cpu_ticks: 100, ..Default::default() });
    assert_eq!(o.r.status, 128 + 24, "{}", o.stdout());
    let note = o.serial.lines().find(|l| l.contains("CPU time limit reached after")).expect("a note");
    let note = &note[note.find("reached after").expect("the note's words")..]; // past the log prefix
    let words: Vec<&str> = note.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).collect();
    let (all, agent): (u64, u64) = (words[0].parse().unwrap(), words[1].parse().unwrap());
    assert!(agent * 2 > all, "most of the time was the agent's: {note}");
}

#[test]
fn fork_bombs_hit_the_process_limit() {
    let o = probe_run("fork-bomb", Requested { processes: 16, ..Default::default() });
    assert_eq!((o.r.status, o.value("fork: errno"), o.value("children")), (0, 11, 15), "EAGAIN once 16 processes live");
    // A shell fork bomb: ash reports that it cannot fork and the build ends (or the CPU limit
    // ends it); either way with a failure status, and the agent goes on.
    let o = run(&busybox(), &["busybox", "sh", "-c", "bomb() { bomb | bomb; }; bomb"], Requested { processes: 32, cpu_ticks: 500, ..Default::default() });
    assert_ne!(o.r.status, 0);
    let err = String::from_utf8_lossy(&o.r.stderr);
    assert!(o.r.status == 128 + 24 || err.contains("can't fork"), "{}: {err}", o.r.status);
}

#[test]
fn memory_exhaustion_gets_enomem_at_the_limit() {
    let limit = 32u64 << 20;
    let o = probe_run("eat-mmap", Requested { memory: limit, ..Default::default() });
    assert_eq!((o.r.status, o.value("mmap: errno after MiB")), (0, 12), "ENOMEM");
    let mib = o.value("MiB") as u64;
    assert!(mib < 32 && mib >= 32 - 4, "{mib} MiB mapped under a 32 MiB limit (the program and its stack hold the rest)");
    let o = probe_run("eat-brk", Requested { memory: limit, ..Default::default() });
    let mib = o.value("brk: MiB") as u64;
    assert!(mib < 32 && mib >= 32 - 4, "{mib} MiB of brk");
    // A process holding 32 MiB (and ~2 MiB of program and stack) forks copies of itself: under
    // 96 MiB one copy fits, the next fork is ENOMEM.
    let o = probe_run("fork-memory", Requested { memory: 96 << 20, ..Default::default() });
    assert_eq!((o.r.status, o.value("fork: errno"), o.value("children")), (0, 12, 1));
}

#[test]
fn with_default_limits_no_builder_can_exhaust_the_agents_memory() {
    // The test VM has 512 MiB; the defaults (1 GiB of memory, 1 GiB of files) are capped by the
    // agent's free heap. Each of these runs until the kernel refuses, and the agent answers on.
    let o = probe_run("eat-mmap", Requested::default());
    let granted = o.granted("MiB");
    assert!(granted < 512, "{granted} MiB granted on a 512 MiB guest");
    assert_eq!(o.value("mmap: errno after MiB"), 12);
    assert!(o.value("MiB") as u64 + 4 >= granted, "mapped {} of {granted} MiB", o.value("MiB"));
    // Scattered pages: their page tables count against the limit too.
    let o = probe_run("sparse-mmap", Requested::default());
    assert_eq!(o.value("sparse mmap: errno"), 12);
    // Pipe buffers in up to 64 processes, each holding as many full pipes as it has descriptors
    // for (32 MiB): far more than the limit, so writes meet ENOMEM (or forks do, first).
    let o = run(probe(), &["probe", "pipe-hog", "64"], Requested::default());
    assert_eq!(o.r.status, 0, "{}", o.stdout());
    assert!(o.value("processes") > 1);
    assert_eq!(o.value("builder met ENOMEM"), 1);
    // Files with the longest names until the file system is full, then listed.
    let o = probe_run("inode-hog", Requested::default());
    assert_eq!(o.value("create: errno"), 28, "ENOSPC");
    assert_eq!(o.value("listed"), o.value("files") + 2, "every file listed, and . and ..");
}

#[test]
fn a_two_gib_file_fills_the_file_system_limit() {
    let limit = 16u64 << 20;
    let o = probe_run("write-file", Requested { fs_bytes: limit, ..Default::default() });
    assert_eq!((o.r.status, o.value("write: errno")), (0, 28), "ENOSPC");
    assert!(o.value("bytes") as u64 <= limit);
    // dd stops at the first failed write (busybox head would read all 2 GiB first).
    let o = run(&busybox(), &["busybox", "sh", "-c", "dd if=/dev/zero of=f bs=1M count=2048 2>err; echo $?; wc -c < f; cat err"], Requested { fs_bytes: limit, ..Default::default() });
    let out = o.stdout();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    assert!(lines.next().unwrap().trim().parse::<u64>().unwrap() <= limit);
    assert!(out.contains("No space left on device"), "{out}");
}

#[test]
fn two_gib_to_stdout_end_at_the_log_limit() {
    let limit = 4u64 << 20;
    let o = probe_run("write-stdout", Requested { log_bytes: limit, ..Default::default() });
    assert_eq!(o.r.status, 128 + 25, "SIGXFSZ");
    assert_eq!(o.r.stdout.len() as u64, limit, "exactly the limit is passed on");
    assert!(o.serial.contains("log limit"), "{}", o.serial);
    let o = run(&busybox(), &["busybox", "sh", "-c", "head -c 2147483648 /dev/zero"], Requested { log_bytes: limit, ..Default::default() });
    assert_eq!((o.r.status, o.r.stdout.len() as u64), (128 + 25, limit));
    // With no log limit asked for, the response disk bounds it: the agent keeps room for the
    // status and the next answer.
    let mut config = dev_vm_config(Accel::Auto);
    config.response_bytes = 48 << 20;
    let o = run_in(&config, probe(), &["probe", "write-stdout"], Requested::default());
    assert_eq!(o.r.status, 128 + 25);
    let granted = o.granted("bytes");
    assert!(granted < 48 << 20 && granted > 40 << 20, "{granted}");
    assert_eq!(o.r.stdout.len() as u64, granted);
    // One writev of a gigabyte moves a bounded amount.
    let o = probe_run("writev-hog", Requested::default());
    assert_eq!(o.value("writev"), 1 << 20);
}

#[test]
fn dotdot_and_symlinks_cannot_leave_the_root() {
    let script = "ls /; echo --; cd ../../../../../..; pwd; ls; echo --; ls ../../../../..; echo --; \
                  ln -s ../../../../../../../.. /build/up; ls /build/up; readlink -f /build/up/../..; \
                  cat /build/../../../etc/passwd | head -1";
    let o = run(&busybox(), &["busybox", "sh", "-c", script], Requested::default());
    assert_eq!(o.r.status, 0);
    let out = o.stdout();
    let parts: Vec<&str> = out.split("--\n").collect();
    let root = parts[0];
    assert!(root.contains("build\n") && root.contains("nix\n"), "{out}");
    assert_eq!(parts[1], format!("/\n{root}"));
    let mut rest = parts[3].lines();
    let listing: Vec<&str> = rest.by_ref().take(root.lines().count()).collect();
    assert_eq!(listing.join("\n") + "\n", root);
    assert_eq!(parts[2], root);
    assert_eq!(rest.next(), Some("/"));
    assert_eq!(rest.next(), Some(std::str::from_utf8(agent::sandbox::fs::ETC_PASSWD).unwrap().lines().next().unwrap()));
}

/// Symlink loops and chains at Linux's limit (40) behave as natively.
#[test]
fn symlink_loops_end_in_eloop_as_natively() {
    compare(
        "links",
        &[
            ("two-link loop", "ln -s a b; ln -s b a; cat a; echo $?; ls a/x 2>&1; echo $?; cd a; echo $?"),
            ("self loop", "ln -s self self; cat self; echo $?; ln -s x/y x; mkdir -p x 2>/dev/null; echo $?; test -e x; echo $?"),
            ("chain of 40 and 41", "echo end > l0; i=1; while [ $i -le 41 ]; do ln -s l$((i-1)) l$i; i=$((i+1)); done; cat l40; echo $?; cat l41; echo $?"),
            ("loop through directories", "mkdir d; ln -s ../d d/up; ls d/up/up/up/up/up/up; cat d/up/up/up/missing; echo $?"),
            ("stack overflow", "sh -c 'f() { f; }; f'; echo $?"),
            ("argument too long", "x=$(head -c 200000 /dev/zero | tr '\\0' a); sh -c 'true' \"$x\"; echo $?"),
        ],
    );
}
