//! Faults, each ending with "nothing partial published, the next build works" (issue 20): QEMU
//! killed at each phase of a build, a QEMU that stops (SIGSTOP) ended by the silence limit, a VM
//! paused over QMP, the total time limit, the output directory's disk filling while NARs
//! stream, and the agent's own limits hit by a builder (the error names the limit).
//! (docs/build.md, "Faults" and "Time limits".)
//!
//! The phases are found through the loader's test hook (`VmConfig::observer`: QEMU's pid, each
//! frame as it arrives, the serial log's text), and QEMU is killed from inside it, so the loader
//! is in the middle of receiving when QEMU dies.
use integration_tests::{root, vm_config};
use loader::build::{BuildError, BuildReport};
use loader::vm::{Accel, Observer, VmConfig, VmError, VmEvent};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The 16 MiB input file (fixed contents) and the `.drv` of `faults.nix`'s `attr`.
fn instantiate(attr: &str) -> PathBuf {
    let input = root().join("target/fault-input.bin");
    if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(16 << 20) {
        let bytes: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(&input, bytes).unwrap();
    }
    let out = Command::new("nix-instantiate")
        .arg(root().join("tests/e2e/faults.nix"))
        .args(["--argstr", "busyboxDir"])
        .arg(integration_tests::e2e::busybox_dir())
        .args(["--argstr", "inputFile"])
        .arg(&input)
        .args(["-A", attr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn out_dir(case: &str) -> PathBuf {
    let d = root().join(format!("target/faults-{}/{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config() -> VmConfig {
    let mut c = vm_config(Accel::Auto);
    c.memory_mib = 1024;
    c.timeout = Duration::from_secs(600);
    c
}

fn files(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn build(config: &VmConfig, drv: &Path, dir: &Path) -> Result<BuildReport, BuildError> {
    loader::build::build(config, drv, dir, |_, _| {}, |_| {})
}

/// An observer that sends `signal` to QEMU at the first event `trigger` picks; returns it and a
/// flag telling whether the signal reached a live QEMU (the loader also reads the frames
/// committed just before QEMU exited on its own, after it is gone).
fn signal_at(signal: &'static str, trigger: impl Fn(&VmEvent<'_>) -> bool + Send + Sync + 'static) -> (Observer, Arc<Mutex<bool>>) {
    let pid = Arc::new(Mutex::new(None::<u32>));
    let fired = Arc::new(Mutex::new(false));
    let f = fired.clone();
    let observer = Observer(Arc::new(move |e: &VmEvent<'_>| {
        if let VmEvent::Started { pid: p } = e {
            *pid.lock().unwrap() = Some(*p);
        }
        let mut fired = f.lock().unwrap();
        if !*fired && trigger(e) {
            let p = pid.lock().unwrap().expect("QEMU started");
            // The shell's own `kill` (procps, which has /bin/kill, is not in every install).
            let kill = format!("kill {signal} {p}");
            *fired = Command::new("sh").args(["-c", &kill]).stderr(std::process::Stdio::null()).status().unwrap().success();
        }
    }));
    (observer, fired)
}

fn is_frame(e: &VmEvent<'_>, ty: agent::proto::Type) -> bool {
    matches!(e, VmEvent::Frame(f) if f.ty == ty)
}

#[test]
fn qemu_killed_at_any_phase_publishes_nothing_and_the_next_build_works() {
    use agent::proto::Type;
    let drv = instantiate("phases");
    let dir = out_dir("killed");
    let output_started = Arc::new(Mutex::new(false));
    let o = output_started.clone();
    type Trigger = Box<dyn Fn(&VmEvent<'_>) -> bool + Send + Sync>;
    let phases: Vec<(&str, Trigger, &str)> = vec![
        // The Hello frame is committed before the agent opens the request disk.
        ("before the request is read", Box::new(|e| is_frame(e, Type::Hello)), "agent 0.1"),
        // The agent logs the request's sizes, then reads the .drv and 16 MiB of input.
        ("mid-input", Box::new(|e| matches!(e, VmEvent::Serial(s) if s.contains("input paths"))), "input paths"),
        ("while the builder runs", Box::new(|e| is_frame(e, Type::Output)), "inputs unpacked and checked"),
        (
            "mid-output",
            Box::new(move |e| {
                let mut o = o.lock().unwrap();
                *o |= is_frame(e, Type::BuildOutput);
                *o && is_frame(e, Type::BulkData)
            }),
            "inputs unpacked and checked",
        ),
    ];
    for (phase, trigger, reached) in phases {
        let (observer, fired) = signal_at("-KILL", trigger);
        let mut c = config();
        c.observer = Some(observer);
        let work = dir.with_extension("work");
        let _ = std::fs::remove_dir_all(&work);
        c.work_dir = Some(work.clone());
        let r = build(&c, &drv, &dir);
        assert!(*fired.lock().unwrap(), "{phase}: QEMU was not killed in that phase ({r:?})");
        match r {
            Err(BuildError::Vm(VmError::Qemu { status, .. })) => assert!(status.contains("SIGKILL") || status.contains("signal: 9"), "{phase}: {status}"),
            other => panic!("{phase}: expected QEMU's death to fail the build, got {other:?}"),
        }
        let serial = loader::vm::work_dir_log(&work);
        assert!(serial.contains(reached), "{phase}: the agent had not reached it:\n{serial}");
        if phase == "mid-input" {
            assert!(!serial.contains("inputs unpacked"), "{phase}: the agent had read every input:\n{serial}");
        }
        assert_eq!(files(&dir), Vec::<String>::new(), "{phase}: files left behind");
        let _ = std::fs::remove_dir_all(&work);
    }
    // After the statement, before the evidence: the agent commits both in one flush, so QEMU
    // is killed while the loader handles the Statement frame, with the evidence (and Bye) on
    // the disk already or not. Killed, it publishes nothing; if QEMU had exited on its own
    // first, the build was whole and is published. (`loader::build`'s unit tests cover an
    // answer that ends after the statement.)
    let mut killed = 0;
    for _ in 0..3 {
        let (observer, _) = signal_at("-KILL", |e| is_frame(e, Type::Statement));
        let mut c = config();
        c.observer = Some(observer);
        match build(&c, &drv, &dir) {
            Err(e) => {
                killed += 1;
                assert!(matches!(e, BuildError::Vm(VmError::Qemu { .. })), "{e:?}");
                assert_eq!(files(&dir), Vec::<String>::new(), "after the statement: files left behind");
            }
            Ok(_) => {
                // QEMU had exited (status 0, not yet reaped) when the signal came.
                assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
    eprintln!("after the statement: QEMU killed in {killed} of 3 runs");
    let report = build(&config(), &drv, &dir).expect("the next build");
    assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
    assert_eq!(report.outputs[0].nar_size, std::fs::metadata(&report.outputs[0].nar).unwrap().len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A QEMU that stops (SIGSTOP: no guest progress, no QMP answer) is ended by the silence limit,
/// with the serial log's tail, long before the total time limit.
#[test]
fn a_stopped_qemu_is_ended_by_the_silence_limit() {
    let drv = instantiate("phases");
    let dir = out_dir("stopped");
    let (observer, fired) = signal_at("-STOP", |e| is_frame(e, agent::proto::Type::Output));
    let mut c = config();
    c.observer = Some(observer);
    c.silence = Duration::from_secs(15);
    let start = Instant::now();
    let r = build(&c, &drv, &dir);
    let took = start.elapsed();
    assert!(*fired.lock().unwrap());
    match &r {
        Err(BuildError::Vm(e @ VmError::Silent { limit, tail })) => {
            assert_eq!(*limit, Duration::from_secs(15));
            assert!(tail.contains("inputs unpacked and checked"), "{tail}");
            assert!(e.to_string().starts_with("the silence limit ended the run: no sign of life for 15 s"), "{e}");
        }
        other => panic!("expected the silence limit, got {other:?}"),
    }
    // 15 s of silence, found within one liveness window (5 s) and a QMP read timeout (5 s).
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(files(&dir), Vec::<String>::new());
    build(&config(), &instantiate("small"), &dir).expect("the next build");
    assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM paused through QMP (`stop`, as a management tool or a QEMU error would) while the
/// builder runs is noticed over the loader's own QMP socket within seconds, not at a limit.
#[test]
fn a_paused_vm_is_noticed_over_qmp() {
    let drv = instantiate("phases");
    let dir = out_dir("paused");
    let socket = std::env::temp_dir().join(format!("faults-qmp-{}.sock", std::process::id()));
    let s = socket.clone();
    let mut c = config();
    // A second QMP monitor for the test (QEMU serves one client per monitor).
    c.extra_qemu_args = vec!["-qmp".into(), format!("unix:{},server=on,wait=off", socket.display())];
    let paused = Arc::new(Mutex::new(false));
    let p = paused.clone();
    c.observer = Some(Observer(Arc::new(move |e: &VmEvent<'_>| {
        let mut paused = p.lock().unwrap();
        if !*paused && is_frame(e, agent::proto::Type::Output) {
            let mut qmp = loader::qmp::Qmp::connect(&s, Instant::now() + Duration::from_secs(5)).expect("the test's QMP socket");
            qmp.execute("stop").unwrap();
            *paused = true;
        }
    })));
    let start = Instant::now();
    let r = build(&c, &drv, &dir);
    let _ = std::fs::remove_file(&socket);
    assert!(*paused.lock().unwrap());
    match r {
        Err(BuildError::Vm(VmError::Stopped { state, .. })) => assert_eq!(state, "paused"),
        other => panic!("expected the pause to be reported, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
    assert_eq!(files(&dir), Vec::<String>::new());
    build(&config(), &instantiate("small"), &dir).expect("the next build");
    assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The total time limit ends a run that is alive but too long, and says it was that limit.
#[test]
fn the_total_time_limit_says_it_ended_the_build() {
    let drv = instantiate("spin");
    let dir = out_dir("timeout");
    let mut c = config();
    c.timeout = Duration::from_secs(3);
    match build(&c, &drv, &dir) {
        Err(BuildError::Vm(e @ VmError::Timeout { given: true, .. })) => {
            assert!(e.to_string().starts_with("the total time limit ended the run: the agent did not finish within 3 s (--timeout)"), "{e}")
        }
        other => panic!("expected the total time limit, got {other:?}"),
    }
    assert_eq!(files(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The output directory on a 4 MiB tmpfs: the 16 MiB NAR cannot be written. The build fails
/// saying so, the directory is left empty, and a build that fits then works in it.
#[test]
fn a_full_output_disk_publishes_nothing_and_the_next_build_works() {
    let dir = out_dir("disk-full");
    std::fs::create_dir_all(&dir).unwrap();
    let mount = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "nix-agent-faults"]).arg(&dir).output();
    match mount {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?): {}", String::from_utf8_lossy(&o.stderr).trim());
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount: {e}");
            return;
        }
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    match build(&config(), &instantiate("phases"), &dir) {
        Err(e) => assert!(e.to_string().contains("No space left on device"), "{e}"),
        Ok(r) => panic!("a 16 MiB output written to a 4 MiB disk: {r:?}"),
    }
    assert_eq!(files(&dir), Vec::<String>::new(), "files left on the full disk");
    build(&config(), &instantiate("small"), &dir).expect("the next build");
    assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
}

/// The agent's own limits, hit by a builder: the build fails with an error that names the limit
/// (the sandbox's file system, memory across processes, the log), nothing is published, and the
/// next build works. (Processes and CPU time: `agent::sandbox` unit test
/// `every_limit_that_refuses_is_recorded_and_named`; the build's CPU limit is an hour.)
#[test]
fn the_agents_limits_are_named_in_the_error() {
    let dir = out_dir("limits");
    let mut c = config();
    c.memory_mib = 512;
    // A 64 MiB response disk: the log may use a quarter of it.
    c.response_bytes = 64 << 20;
    for (attr, words) in [
        ("files-limit", "the sandbox's limits were reached: the sandbox's file system is full"),
        ("memory-limit", "the sandbox's limits were reached: memory ("),
        // The log may use a quarter of the response stream's room when the builder starts:
        // just under 16 MiB (the frames and log lines sent before it took some).
        ("log-limit", "was killed by signal 25; the sandbox's limits were reached: log size (16"),
    ] {
        match build(&c, &instantiate(attr), &dir) {
            Err(BuildError::Refused { code, text, .. }) => {
                assert_eq!(code, agent::proto::ErrorCode::BuildFailed as u32, "{attr}: {text}");
                assert!(text.contains(words), "{attr}: {text}");
                if attr == "log-limit" {
                    let n: u64 = text.split("log size (").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
                    assert!((((64 << 20) - (1 << 20)) / 4..=(64 << 20) / 4).contains(&n), "{attr}: a log limit of {n} bytes: {text}");
                }
            }
            other => panic!("{attr}: expected the builder to fail on a limit, got {other:?}"),
        }
        assert_eq!(files(&dir), Vec::<String>::new(), "{attr}: files left behind");
    }
    build(&c, &instantiate("small"), &dir).expect("the next build");
    assert_eq!(files(&dir), vec!["evidence.json", "out.nar"]);
    let _ = std::fs::remove_dir_all(&dir);
}
