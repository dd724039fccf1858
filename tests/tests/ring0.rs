//! Ring 0 against a hostile builder and a hostile host (issue 15, findings 1–4): the agent's own
//! protections as it reports them at boot, system calls with hostile RFLAGS, the top user page,
//! an NMI delivered at the system-call entry (QEMU's gdbstub stops the vCPU there, QMP injects
//! the NMI), and a stack overflow in the agent (a test image that recurses on purpose).
//!
//! Expected builder outputs come from running the same probe natively on Linux.
use agent::exec::Requested;
use agent::proto::Type;
use integration_tests::sandbox::{probe, probe_natively};
use integration_tests::{dev_vm_config, overflow_test_bin, syscall_test_bin, vm_config};
use loader::vm::{Accel, VmConfig, VmError};
use loader::{ExecOptions, ExecResult};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs the probe with `args`, then a Ping; the agent must answer the Ping.
fn probe_in(config: &VmConfig, args: &[&str]) -> (ExecResult, String) {
    let options = ExecOptions { limits: Requested::default(), ..Default::default() };
    let run = loader::vm::run(
        config,
        |r| {
            loader::exec_request(r, probe(), args, &options)?;
            r.frame(Type::Ping, b"still there?")?;
            Ok(())
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("{args:?}: the agent did not survive: {e}"));
    assert!(run.frames.iter().any(|f| f.ty == Type::Pong && f.payload == b"still there?"), "{args:?}: no Pong");
    let r = ExecResult::from_frames(&run.frames);
    assert_eq!(r.errors, vec![], "{args:?}");
    (r, run.serial)
}

/// The value of `{key}0x…` in `line`.
fn hex(line: &str, key: &str) -> u64 {
    let at = line.find(&format!("{key}0x")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 2;
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&digits, 16).unwrap()
}

/// The number before `what` in `line`.
fn count(line: &str, what: &str) -> u64 {
    let at = line.find(what).unwrap_or_else(|| panic!("{what} in {line}"));
    line[..at].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// The release image's ELF (the image the tests boot is this ELF, objcopied).
fn release_elf() -> std::path::PathBuf {
    integration_tests::root().join("target/x86_64-unknown-none/firmware/agent")
}

/// A symbol's address in an agent ELF.
fn symbol(elf: &Path, name: &str) -> u64 {
    let out = std::process::Command::new("nm").arg(elf).output().expect("nm (binutils)");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("{name} in {}", elf.display()));
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

/// Size in bytes of the ELF section `name` (from `readelf -S`'s wide listing).
fn section_size(name: &str) -> u64 {
    let elf = release_elf();
    let out = std::process::Command::new("readelf").args(["-SW"]).arg(&elf).output().expect("readelf (binutils)");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.split_whitespace().nth(1) == Some(name) || l.split_whitespace().nth(2) == Some(name)).expect("section");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == name).unwrap();
    u64::from_str_radix(words[at + 4], 16).unwrap()
}

#[test]
fn the_agent_reports_wx_page_tables_and_its_control_registers() {
    let config = vm_config(Accel::Tcg);
    let run = loader::vm::run(&config, |r| r.frame(Type::Ping, b"x").map(|_| ()), |_| {}).expect("boot");
    let cpu = run.serial.lines().find(|l| l.contains("cpu: cr0=")).unwrap_or_else(|| panic!("no cpu line:\n{}", run.serial));
    let (cr0, cr4, efer) = (hex(cpu, "cr0="), hex(cpu, "cr4="), hex(cpu, "efer="));
    assert_ne!(cr0 & (1 << 16), 0, "CR0.WP: {cpu}");
    // QEMU 7.2's TCG `-cpu max` has all three (the loader's CPU model under TCG).
    assert_eq!(cr4 & (1 << 20), 1 << 20, "CR4.SMEP: {cpu}");
    assert_eq!(cr4 & (1 << 21), 1 << 21, "CR4.SMAP: {cpu}");
    assert_eq!(cr4 & (1 << 11), 1 << 11, "CR4.UMIP: {cpu}");
    assert_eq!(efer & 1, 0, "EFER.SCE clear: system calls arrive as #UD: {cpu}");
    assert_ne!(efer & (1 << 11), 0, "EFER.NXE: {cpu}");

    let paging = run.serial.lines().find(|l| l.contains("paging: ")).expect("paging line");
    assert_eq!(count(paging, "W+X pages"), 0, "{paging}");
    assert_eq!(count(paging, "user pages"), 0, "{paging}");
    assert!(paging.contains("identity map absent"), "{paging}");
    // Executable: exactly the image's .text, page by page (the ELF the image was made from).
    assert_eq!(count(paging, "executable pages"), section_size(".text").div_ceil(4096), "{paging}");
    // Shared: the DMA pool (8 MiB), the ECAM window's 2 MiB at 0xB0000000, the MMIO window
    // 0xC0000000..0xFEC00000 and the local APIC's 2 MiB region; not the rest of memory
    // (docs/memory-layout.md).
    let shared_kib = (8 << 10) + (2 << 10) + ((0xFEC0_0000u64 - 0xC000_0000) >> 10) + (2 << 10);
    assert_eq!(count(paging, "KiB"), shared_kib, "{paging}");
}

#[test]
fn system_calls_with_nt_ac_id_set_work_as_on_linux() {
    let native = probe_natively(&["flags-syscall"]);
    assert_eq!(native.status.code(), Some(0));
    // Through #UD (the release image), and through SYSCALL with the TD's SFMASK.
    let mut syscall_path = vm_config(Accel::Tcg);
    syscall_path.agent = syscall_test_bin().0;
    for config in [dev_vm_config(Accel::Tcg), syscall_path] {
        let (r, serial) = probe_in(&config, &["probe", "flags-syscall"]);
        assert_eq!(r.status, 0, "{serial}");
        assert_eq!(String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&native.stdout));
    }
}

#[test]
fn a_syscall_straddling_two_pages_works_and_faults_as_on_linux() {
    let native = probe_natively(&["syscall-straddle"]);
    assert_eq!(native.status.code(), Some(0));
    let (r, _) = probe_in(&dev_vm_config(Accel::Tcg), &["probe", "syscall-straddle"]);
    assert_eq!((r.status, String::from_utf8_lossy(&r.stdout)), (0, String::from_utf8_lossy(&native.stdout)));
    // Its second byte on a non-executable page: the fetch faults before any #UD, as natively.
    let native = probe_natively(&["syscall-straddle-nx"]);
    let signal = std::os::unix::process::ExitStatusExt::signal(&native.status).expect("a signal natively");
    let (r, serial) = probe_in(&dev_vm_config(Accel::Tcg), &["probe", "syscall-straddle-nx"]);
    assert_eq!(r.status, 128 + signal, "{serial}");
}

#[test]
fn the_top_user_page_is_never_mapped() {
    let native = probe_natively(&["top-page"]);
    assert_eq!(native.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&native.stdout).contains("mmap top page -12"));
    let (r, _) = probe_in(&dev_vm_config(Accel::Tcg), &["probe", "top-page"]);
    assert_eq!(r.status, 0);
    assert_eq!(String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&native.stdout));
}

#[test]
fn a_stack_overflow_in_the_agent_is_reported_cleanly() {
    let mut config = vm_config(Accel::Tcg);
    config.agent = overflow_test_bin();
    match loader::ping(&config) {
        Err(VmError::AgentFailure { failure, serial, .. }) => {
            // The #PF at the guard page cannot push its frame on the full stack: a #DF, on its
            // own IST stack, which reports and stops.
            assert_eq!(failure, "CPU exception vector 8", "{serial}");
            assert!(serial.contains("stack-overflow-test: recursing"), "{serial}");
            assert!(serial.contains("agent exception: stack overflow (guard page at CR2 0xffffffff8"), "{serial}");
            assert!(serial.contains("vector 8 (#DF double fault)"), "{serial}");
        }
        other => panic!("expected a clean #DF report, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Events at chosen instants: QEMU's gdbstub (GDB remote serial protocol) and QMP.

struct Gdb(UnixStream);

impl Gdb {
    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        self.0.write_all(format!("${body}#{sum:02x}").as_bytes()).unwrap();
    }
    /// The next packet's body (acks and notifications skipped), acknowledged.
    fn recv(&mut self) -> String {
        let mut body = Vec::new();
        let mut byte = [0u8];
        loop {
            self.0.read_exact(&mut byte).expect("gdbstub reply");
            if byte[0] == b'$' {
                break;
            }
        }
        loop {
            self.0.read_exact(&mut byte).unwrap();
            if byte[0] == b'#' {
                break;
            }
            body.push(byte[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).unwrap();
        self.0.write_all(b"+").unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }
    fn command(&mut self, body: &str) -> String {
        self.send(body);
        self.recv()
    }
    /// Sets or clears a breakpoint; a stop notification still in flight (QEMU sends one when it
    /// stops the vCPU for an attach or an interrupt) is skipped.
    fn breakpoint(&mut self, body: &str) {
        self.send(body);
        loop {
            let r = self.recv();
            if !r.starts_with('T') && !r.starts_with('S') {
                assert_eq!(r, "OK", "{body}");
                return;
            }
        }
    }
}

fn connect(path: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no socket at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn qmp(stream: &mut UnixStream, command: &str) {
    stream.write_all(format!("{{\"execute\": \"{command}\"}}\n").as_bytes()).unwrap();
    let mut line = String::new();
    let mut byte = [0u8];
    // The answer to this command: the next line with "return" (events may come first).
    loop {
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            if line.contains("\"return\"") {
                return;
            }
            assert!(!line.contains("\"error\""), "QMP {command}: {line}");
            line.clear();
        } else {
            line.push(byte[0] as char);
        }
    }
}

/// Runs a builder making 100,000 system calls with RSP pointing into the agent's image, stops
/// the vCPU (gdbstub breakpoint) at the first instruction of the system-call entry `entry`
/// five times and has QEMU inject an NMI there each time (QMP `inject-nmi`, delivered as the
/// vCPU resumes, before that instruction); the build must complete with the right output, the
/// agent must answer the next request, and its log must count the five NMIs, each at `entry`.
fn nmi_at_system_call_entry(agent: std::path::PathBuf, elf: &Path, entry_symbol: &str, path: &str) {
    let dir = std::env::temp_dir().join(format!("ring0-nmi-{}-{entry_symbol}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (gdb_path, qmp_path) = (dir.join("gdb.sock"), dir.join("qmp.sock"));
    let mut config = vm_config(Accel::Tcg);
    config.agent = agent;
    config.extra_qemu_args = vec![
        "-gdb".into(),
        format!("unix:{},server=on,wait=off", gdb_path.display()),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp_path.display()),
    ];
    let entry = symbol(elf, entry_symbol);
    let path = path.to_string();
    let vm = std::thread::spawn(move || {
        let (r, serial) = probe_in(&config, &["probe", "syscall-loop-kernel-rsp", "100000"]);
        assert!(serial.contains(&format!("system calls via {path}")), "{serial}");
        (r, serial)
    });

    let mut gdb = Gdb(connect(&gdb_path));
    let mut monitor = connect(&qmp_path);
    let mut greeting = [0u8; 1];
    while greeting[0] != b'\n' {
        monitor.read_exact(&mut greeting).unwrap();
    }
    qmp(&mut monitor, "qmp_capabilities");
    let stop = gdb.command("?"); // attaching stopped the vCPU
    assert!(stop.starts_with('T') || stop.starts_with('S'), "{stop}");
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        gdb.breakpoint(&format!("Z1,{entry:x},1"));
        gdb.send("c");
        let stop = gdb.recv();
        assert!(stop.starts_with('T') || stop.starts_with('S'), "round {round}: {stop}");
        // Stopped at the first instruction of the system-call entry: the NMI is delivered
        // before it executes, when the vCPU resumes.
        gdb.breakpoint(&format!("z1,{entry:x},1"));
        qmp(&mut monitor, "inject-nmi");
        gdb.send("c");
        std::thread::sleep(Duration::from_millis(20));
        gdb.0.write_all(&[0x03]).unwrap(); // interrupt, to set the breakpoint again
        let stop = gdb.recv();
        assert!(stop.starts_with('T') || stop.starts_with('S'), "round {round}: {stop}");
    }
    gdb.send("D"); // detach: the vCPU runs on
    let _ = gdb.recv();
    let (r, serial) = vm.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.status, 0, "{serial}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "syscalls 100000\n");
    let lines: Vec<&str> = serial.lines().filter(|l| l.contains("nmi: ")).collect();
    assert_eq!(lines.len(), ROUNDS, "every NMI arrived and was survived:\n{serial}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(count(line, "NMI(s)") as usize, n + 1, "{line}");
        // Each interrupted the system-call entry's first instruction, in ring 0.
        assert_eq!(hex(line, "RIP "), entry, "{line}");
    }
}

#[test]
fn an_nmi_at_the_system_call_entry_leaves_the_agent_intact() {
    // EFER.SCE clear, `syscall` arrives as #UD on RSP0. The development image (Exec runs the
    // builder), whose arch layer is the attested image's: the same entry code, its own ELF.
    let dev_elf = integration_tests::root().join("target/dev/x86_64-unknown-none/firmware/agent");
    nmi_at_system_call_entry(integration_tests::dev_agent_bin(), &dev_elf, "exception_stub_6", "#UD");
}

#[test]
fn an_nmi_at_the_syscall_instruction_entry_leaves_the_agent_intact() {
    // The TD's path (SYSCALL, LSTAR): at the entry's first instruction RSP is still the
    // builder's (an address in the agent's image); the NMI must take its own IST stack.
    let (agent, elf) = syscall_test_bin();
    nmi_at_system_call_entry(agent, &elf, "agent_syscall_entry", "SYSCALL");
}
