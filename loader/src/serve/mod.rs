//! `loader --serve --write [--store URL]`: the loader as a Nix 2.8 remote builder.
//!
//! Nix's legacy SSH store (`ssh://host?remote-program=loader&remote-store=URL`) runs
//! `<remote-program> --serve --write [--store URL]` on the builder host and speaks the
//! `nix-store --serve` protocol over its stdin and stdout ([`wire`]). The loader answers it as
//! `nix-store --serve --write` would, with one difference: a build runs in a fresh agent VM.
//!
//! - Commands that only move store paths (query valid paths and path infos, import, export, add
//!   a NAR, dump a path, query a closure) are parsed — so the stream keeps its framing and a
//!   malformed message is refused by name — and forwarded as they are read to a real
//!   `nix-store --serve --write [--store URL]`, whose answers go back unchanged: the builder
//!   host's own Nix store serves them.
//! - `cmdBuildDerivation` (what a build hook sends) and `cmdBuildPaths` run an attested build
//!   ([`crate::build::build_inputs`]): the outputs are checked against the statement, the
//!   evidence is kept as `LOADER_EVIDENCE_DIR/<hash-part>.attestation.json` for every output,
//!   the outputs are imported into the store, and the client gets Nix's BuildResult fields. A
//!   failed build imports nothing, keeps no evidence, and gives the client the agent's error
//!   (Nix's own words) with the builder's log on stderr, which Nix shows as the build log.
//!
//! Every connection is its own process (sshd starts one per session), and every build its own
//! VM: N builds at once are N VMs. An error in one connection ends that connection only.
pub mod wire;

use crate::build::{self, BuildError};
use crate::store::{self, BuildInputs, Store};
use crate::vm::{Accel, VmConfig};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wire::{BasicDerivation, BuildResult, BuildSettings, Status, WireError};

/// Everything serving can fail with (a build that fails is not an error: it is an answer).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the client's request: {0}")]
    Wire(#[from] WireError),
    #[error("usage: loader --serve --write [--store URL] (as Nix's ssh:// store runs its remote-program): {0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("starting {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("the builder host's nix-store --serve: {0}")]
    Child(String),
    #[error("building paths is not allowed (the loader was started without --write)")]
    ReadOnly,
}

/// The arguments Nix passes: `--serve`, `--write`, `--store URL` (any order), nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeArgs {
    pub write: bool,
    pub store: Option<String>,
}

impl ServeArgs {
    pub fn parse(args: &[String]) -> Result<ServeArgs, ServeError> {
        let mut a = ServeArgs::default();
        let mut serve = false;
        let mut it = args.iter();
        while let Some(x) = it.next() {
            match x.as_str() {
                "--serve" => serve = true,
                "--write" => a.write = true,
                "--store" => a.store = Some(it.next().ok_or_else(|| ServeError::Usage("--store needs a URL".into()))?.clone()),
                other => return Err(ServeError::Usage(format!("unexpected argument '{other}'"))),
            }
        }
        if !serve {
            return Err(ServeError::Usage("--serve missing".into()));
        }
        Ok(a)
    }
}

/// How the builder runs, from the environment (Nix cannot pass more than `--store`):
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `LOADER_EVIDENCE_DIR` | where each output's evidence is kept | none: builds are refused |
/// | `LOADER_AGENT` | the agent image | `agent.bin` beside the loader's directory (`target/agent.bin` for `target/debug/loader`) |
/// | `LOADER_ACCEL` | `auto`, `kvm` or `tcg` | `auto` |
/// | `LOADER_MEMORY_MIB` | guest memory | 2048 |
/// | `LOADER_TEE` | `none`, `snp` or `tdx` | `none` |
/// | `LOADER_WORK_DIR` | where a build's files wait until they are imported | the temporary directory |
#[derive(Clone, Debug)]
pub struct Config {
    pub vm: VmConfig,
    pub evidence_dir: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub store: Store,
    pub write: bool,
}

impl Config {
    pub fn from_env(args: &ServeArgs) -> Result<Config, ServeError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let agent = match var("LOADER_AGENT") {
            Some(a) => PathBuf::from(a),
            None => default_agent(),
        };
        let mut vm = VmConfig::new(agent);
        if let Some(a) = var("LOADER_ACCEL") {
            vm.accel = match a.as_str() {
                "auto" => Accel::Auto,
                "kvm" => Accel::Kvm,
                "tcg" => Accel::Tcg,
                other => return Err(ServeError::Config(format!("LOADER_ACCEL={other}: expected auto, kvm or tcg"))),
            };
        }
        if let Some(m) = var("LOADER_MEMORY_MIB") {
            vm.memory_mib = m.parse().map_err(|_| ServeError::Config(format!("LOADER_MEMORY_MIB={m}: not a number")))?;
        }
        if let Some(t) = var("LOADER_TEE") {
            vm.tee.tee = match t.as_str() {
                "none" => crate::tee::Tee::None,
                "snp" => crate::tee::Tee::Snp,
                "tdx" => crate::tee::Tee::Tdx,
                other => return Err(ServeError::Config(format!("LOADER_TEE={other}: expected none, snp or tdx"))),
            };
        }
        Ok(Config {
            vm,
            evidence_dir: var("LOADER_EVIDENCE_DIR").map(PathBuf::from),
            work_dir: var("LOADER_WORK_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir),
            store: Store::new(args.store.clone()),
            write: args.write,
        })
    }
}

/// `agent.bin` in the parent of the loader binary's directory (`target/agent.bin` for
/// `target/debug/loader`), else in its own directory.
fn default_agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let up = dir.parent().map(|p| p.join("agent.bin"));
    match up {
        Some(p) if p.exists() => p,
        _ => dir.join("agent.bin"),
    }
}

type Shared = Arc<Mutex<Box<dyn Write + Send>>>;

/// The real `nix-store --serve --write [--store URL]`, greeted.
struct Delegate {
    child: Child,
    to: BufWriter<ChildStdin>,
    pump: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl Delegate {
    fn start(store: &Store, write: bool, client_version: u64, out: Shared) -> Result<Delegate, ServeError> {
        let mut cmd = store.nix_store();
        cmd.arg("--serve");
        if write {
            cmd.arg("--write");
        }
        let name = format!("{cmd:?}");
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|source| ServeError::Spawn { cmd: name, source })?;
        let mut to = BufWriter::new(child.stdin.take().expect("piped"));
        let mut from = child.stdout.take().expect("piped");
        let hello = (|| {
            wire::write_u64(&mut to, wire::SERVE_MAGIC_1)?;
            wire::write_u64(&mut to, client_version)?;
            to.flush()
        })();
        hello.map_err(|e| ServeError::Child(format!("greeting it: {e}")))?;
        let magic = wire::read_u64(&mut from).map_err(|e| ServeError::Child(format!("its greeting: {e}")))?;
        if magic != wire::SERVE_MAGIC_2 {
            return Err(ServeError::Child(format!("its greeting: magic {magic:#x}")));
        }
        let version = wire::read_u64(&mut from).map_err(|e| ServeError::Child(format!("its greeting: {e}")))?;
        if wire::major(version) != 0x200 || wire::minor(version) < wire::minor(wire::SERVE_PROTOCOL_VERSION) {
            return Err(ServeError::Child(format!("it speaks protocol {version:#x}, not {:#x}", wire::SERVE_PROTOCOL_VERSION)));
        }
        // Its answers go to the client as they come: the client reads one answer before it sends
        // the next command, so they never interleave with the loader's own answers.
        let pump = std::thread::spawn(move || {
            let mut from = from;
            let mut buf = vec![0; 64 << 10];
            let mut total = 0;
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.write_all(&buf[..n])?;
                o.flush()?;
                total += n as u64;
            }
        });
        Ok(Delegate { child, to, pump: Some(pump) })
    }

    fn finish(mut self) {
        drop(self.to);
        let _ = self.child.wait();
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// Watches the connection's output (the session's stdout under sshd) for its reader going away:
/// `poll` reports an error or hang-up on a pipe or socket whose other end is closed (sshd
/// closes the session's pipes when the SSH connection drops), and the returned flag is set, which
/// cancels the build in progress ([`VmConfig::cancel`]). The client closing only its sending side
/// (an end of input) is not a hang-up: the answer to a request already sent is still wanted.
/// On anything that is not a pipe or socket (a file), poll never reports, and nothing is set.
pub fn watch_hangup(fd: impl std::os::fd::AsFd + Send + 'static) -> Arc<AtomicBool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) if n > 0 => {
                if fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)) {
                    set.store(true, Ordering::SeqCst);
                    return;
                }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    });
    flag
}

/// [`serve`] on this process's stdin and stdout (as sshd runs it), with the connection watched
/// for a hang-up ([`watch_hangup`]).
pub fn serve_stdio(config: &Config) -> Result<(), ServeError> {
    let hangup = watch_hangup(std::io::stdout());
    serve(config, std::io::stdin().lock(), std::io::stdout(), Some(hangup))
}

/// Serves one connection: `input`/`output` are the client's (stdin and stdout under sshd).
/// Returns when the client closes the connection; a malformed request ends it with an error.
/// `hangup`, once set, cancels the build in progress and those after it: its QEMU is killed,
/// nothing is imported, no evidence is kept.
pub fn serve(config: &Config, input: impl Read, output: impl Write + Send + 'static, hangup: Option<Arc<AtomicBool>>) -> Result<(), ServeError> {
    let mut config = config.clone();
    config.vm.cancel = hangup;
    let config = &config;
    let mut input = BufReader::new(input);
    let out: Shared = Arc::new(Mutex::new(Box::new(output)));
    let client_version = wire::read_hello(&mut input)?;
    let delegate = Delegate::start(&config.store, config.write, client_version, out.clone())?;
    {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        let greeting = (|| {
            wire::write_u64(&mut *o, wire::SERVE_MAGIC_2)?;
            wire::write_u64(&mut *o, wire::SERVE_PROTOCOL_VERSION)?;
            o.flush()
        })();
        greeting.map_err(WireError::Io)?;
    }
    let minor = wire::minor(client_version).min(wire::minor(wire::SERVE_PROTOCOL_VERSION));
    let mut delegate = Some(delegate);
    let result = (|| -> Result<(), ServeError> {
        let d = delegate.as_mut().expect("started");
        loop {
            let n = match wire::read_u64(&mut input) {
                Ok(n) => n,
                Err(WireError::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let cmd = wire::Command::from_u64(n)?;
            match cmd {
                wire::Command::BuildDerivation => {
                    if !config.write {
                        return Err(ServeError::ReadOnly);
                    }
                    let drv_path = wire::read_string(&mut input, "derivation path")?;
                    let drv = BasicDerivation::read(&mut input)?;
                    let settings = BuildSettings::read(&mut input, minor)?;
                    let result = build_derivation(config, &drv_path, &drv, &settings);
                    answer(&out, |w| result.write(w, minor))?;
                }
                wire::Command::BuildPaths => {
                    if !config.write {
                        return Err(ServeError::ReadOnly);
                    }
                    let paths = wire::read_strings(&mut input, "derivation paths")?;
                    let settings = BuildSettings::read(&mut input, minor)?;
                    let result = build_paths(config, &paths, &settings);
                    answer(&out, |w| {
                        wire::write_u64(w, result.status as u64)?;
                        if result.status != Status::Built {
                            wire::write_bytes(w, result.error_msg.as_bytes())?;
                        }
                        Ok(())
                    })?;
                }
                _ => {
                    wire::write_u64(&mut d.to, n).map_err(|e| ServeError::Child(e.to_string()))?;
                    wire::skip_request(cmd, &mut wire::Tee { inner: &mut input, sink: &mut d.to })?;
                    d.to.flush().map_err(|e| ServeError::Child(format!("forwarding a request: {e}")))?;
                }
            }
        }
    })();
    if let Some(d) = delegate.take() {
        d.finish();
    }
    result
}

fn answer(out: &Shared, f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), ServeError> {
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut **o).and_then(|_| o.flush()).map_err(|e| ServeError::Wire(WireError::Io(e)))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A build's answer: Built, or the status Nix would give with the message.
fn build_derivation(config: &Config, drv_path: &str, drv: &BasicDerivation, _settings: &BuildSettings) -> BuildResult {
    let start_time = now();
    let outcome = resolve(drv_path, drv).and_then(|(inputs_aterm, resolved)| {
        let input_paths = config.store.requisites(&drv.input_srcs).map_err(|e| (Status::MiscFailure, format!("the builder host cannot read the inputs: {e}")))?;
        let inputs = BuildInputs { drv_path: drv_path.to_string(), drv: inputs_aterm, input_drvs: Default::default(), input_paths, resolved };
        attested_build(config, &inputs)
    });
    let (status, error_msg) = match outcome {
        Ok(()) => (Status::Built, String::new()),
        Err((s, m)) => (s, m),
    };
    BuildResult { status, error_msg, times_built: (status == Status::Built) as u64, start_time, stop_time: now() }
}

/// The ATerm the agent is sent for a BasicDerivation, and whether it is a resolved derivation:
/// when the client's derivation had no input derivations, the BasicDerivation is the whole
/// derivation and its ATerm has exactly the `.drv` path the client names (the agent checks
/// it); otherwise the build hook replaced its input derivations by their outputs' closure, and
/// the agent builds it as a resolved derivation (docs/build.md).
pub fn resolve(drv_path: &str, drv: &BasicDerivation) -> Result<(Vec<u8>, bool), (Status, String)> {
    use agent::nix::{derivation, store_path::StorePath};
    let bad = |why: String| (Status::MiscFailure, format!("cannot build '{drv_path}': {why}"));
    let sp = StorePath::parse(drv_path).map_err(|e| bad(format!("not a store path: {e:?}")))?;
    let name = sp.name().strip_suffix(".drv").ok_or_else(|| bad("not a .drv path".into()))?;
    let d = drv.to_derivation();
    let aterm = derivation::print(&d).into_bytes();
    let computed = derivation::drv_path(name, &aterm, &d).map_err(|e| bad(format!("{e:?}")))?;
    Ok((aterm, computed.to_path() != drv_path))
}

/// `cmdBuildPaths`: `drv!outputs` paths whose `.drv` closure is in the builder host's store.
/// As Nix's `buildPaths`, input derivations whose used outputs are not valid are built first
/// (each in its own VM, dependencies before their consumers); derivations whose outputs are all
/// valid are not built again. The first failure is the answer.
fn build_paths(config: &Config, paths: &[String], _settings: &BuildSettings) -> BuildResult {
    let start_time = now();
    let outcome = paths.iter().try_for_each(|p| {
        let drv = p.split('!').next().unwrap_or(p);
        if !drv.ends_with(".drv") {
            return Err((Status::MiscFailure, format!("'{p}' is not a derivation: the loader builds derivations, it does not substitute")));
        }
        for d in build_order(&config.store, drv)? {
            let inputs = store::gather_from(&config.store, Path::new(&d)).map_err(|e| (Status::MiscFailure, format!("reading '{d}' from the builder host's store: {e}")))?;
            attested_build(config, &inputs)?;
        }
        Ok(())
    });
    let (status, error_msg) = match outcome {
        Ok(()) => (Status::Built, String::new()),
        Err((s, m)) => (s, m),
    };
    BuildResult { status, error_msg, times_built: 1, start_time, stop_time: now() }
}

/// The derivations to build for `drv`: those in its `.drv` closure with an output missing from
/// the store (the requested one always), dependencies first. An iterative post-order walk: the
/// graph's depth is the client's choice.
fn build_order(store: &Store, drv: &str) -> Result<Vec<String>, (Status, String)> {
    use agent::nix::derivation;
    let read = |p: &str| -> Result<derivation::Derivation, (Status, String)> {
        let bytes = std::fs::read(store.real_path(p)).map_err(|e| (Status::MiscFailure, format!("reading '{p}' from the builder host's store: {e}")))?;
        derivation::parse(&bytes).map_err(|e| (Status::MiscFailure, format!("'{p}' does not parse: {e:?}")))
    };
    let mut order = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    let mut stack = vec![(drv.to_string(), false)];
    while let Some((p, expanded)) = stack.pop() {
        if done.contains(&p) {
            continue;
        }
        let d = read(&p)?;
        let missing = d.outputs.values().any(|o| !store.real_path(&o.path).exists());
        if expanded {
            done.insert(p.clone());
            if missing || p == drv {
                order.push(p);
            }
            continue;
        }
        stack.push((p.clone(), true));
        if missing || p == drv {
            for dep in d.input_drvs.keys().rev() {
                if !done.contains(dep) {
                    stack.push((dep.clone(), false));
                }
            }
        }
    }
    Ok(order)
}

static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One build in a fresh VM; on success the evidence is kept and the outputs are in the store.
fn attested_build(config: &Config, inputs: &BuildInputs) -> Result<(), (Status, String)> {
    let evidence_dir = config.evidence_dir.as_ref().ok_or_else(|| {
        (Status::MiscFailure, "the builder is not configured: LOADER_EVIDENCE_DIR is not set (where every build's evidence is kept; docs/hosting.md)".to_string())
    })?;
    std::fs::create_dir_all(evidence_dir).map_err(|e| (Status::MiscFailure, format!("creating the evidence directory {}: {e}", evidence_dir.display())))?;
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_dir = config.work_dir.join(format!("loader-serve-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let result = (|| {
        let store = &config.store;
        let report = build::build_inputs(
            &config.vm,
            inputs,
            &out_dir,
            |_, bytes| {
                let _ = std::io::stderr().write_all(bytes);
            },
            |_| {},
            &|p| store.dump(p),
        )
        .map_err(|e| match e {
            // The agent's refusal carries Nix's words (`builder for '…' failed with exit code 1`).
            BuildError::Refused { text, .. } => (Status::PermanentFailure, text),
            other => (Status::MiscFailure, format!("attested build of '{}': {other}", inputs.drv_path)),
        })?;
        // The client went away after the VM finished: the build is abandoned whole.
        if config.vm.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err((Status::MiscFailure, format!("attested build of '{}': the client closed the connection; nothing kept", inputs.drv_path)));
        }
        keep_evidence(evidence_dir, &report).map_err(|e| (Status::MiscFailure, e))?;
        build::import_outputs(&report, store).map_err(|e| (Status::MiscFailure, format!("importing the outputs of '{}' into the builder host's store: {e}", inputs.drv_path)))?;
        eprintln!("loader: built {} in a fresh agent VM ({:.2} s, attestation: {})", inputs.drv_path, report.timings.total.as_secs_f64(), report.attestation);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

/// The file an output's evidence is kept in: `<hash-part>.attestation.json`.
pub fn evidence_name(output_path: &str) -> Option<String> {
    let sp = agent::nix::store_path::StorePath::parse(output_path).ok()?;
    Some(format!("{}.attestation.json", sp.hash_part()))
}

/// Copies the build's `evidence.json` to `dir/<hash-part>.attestation.json` for every output
/// (written whole under a temporary name, then renamed).
fn keep_evidence(dir: &Path, report: &build::BuildReport) -> Result<(), String> {
    let bytes = std::fs::read(&report.evidence).map_err(|e| format!("reading {}: {e}", report.evidence.display()))?;
    for o in &report.outputs {
        let name = evidence_name(&o.path).ok_or_else(|| format!("'{}' is not a store path", o.path))?;
        let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(&name)).map_err(|e| format!("keeping the evidence {}: {e}", dir.join(&name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_arguments_nix_passes_are_accepted_and_nothing_else() {
        assert_eq!(ServeArgs::parse(&args(&["--serve", "--write"])).unwrap(), ServeArgs { write: true, store: None });
        assert_eq!(ServeArgs::parse(&args(&["--serve", "--write", "--store", "/tmp/s"])).unwrap(), ServeArgs { write: true, store: Some("/tmp/s".into()) });
        assert_eq!(ServeArgs::parse(&args(&["--serve"])).unwrap(), ServeArgs { write: false, store: None });
        assert!(matches!(ServeArgs::parse(&args(&["--serve", "--store"])), Err(ServeError::Usage(_))));
        assert!(matches!(ServeArgs::parse(&args(&["--serve", "--bogus"])), Err(ServeError::Usage(_))));
        assert!(matches!(ServeArgs::parse(&args(&["--write"])), Err(ServeError::Usage(_))));
    }

    #[test]
    fn store_roots() {
        assert_eq!(Store::new(None).real_path("/nix/store/x"), PathBuf::from("/nix/store/x"));
        assert_eq!(Store::new(Some("/srv/b".into())).real_path("/nix/store/x"), PathBuf::from("/srv/b/nix/store/x"));
        assert_eq!(Store::new(Some("local?root=/srv/c".into())).real_path("/nix/store/x"), PathBuf::from("/srv/c/nix/store/x"));
        assert_eq!(Store::new(Some("daemon".into())).real_path("/nix/store/x"), PathBuf::from("/nix/store/x"));
    }

    /// A pipe whose reader closes is a hang-up; a reader that stays (even one that never reads)
    /// is not, nor is a regular file.
    #[test]
    fn a_hang_up_is_the_reader_going_away() {
        let wait = |f: &AtomicBool, ms| {
            let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            while std::time::Instant::now() < end && !f.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            f.load(Ordering::SeqCst)
        };
        let (reader, writer) = std::io::pipe().unwrap();
        let flag = watch_hangup(writer);
        assert!(!wait(&flag, 200), "a hang-up with the reader still there");
        drop(reader);
        assert!(wait(&flag, 5000), "the reader closed, no hang-up seen");
        let file = std::fs::File::create(std::env::temp_dir().join(format!("hangup-{}", std::process::id()))).unwrap();
        let flag = watch_hangup(file);
        assert!(!wait(&flag, 200), "a regular file is never hung up");
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("hangup-{}", std::process::id())));
    }

    #[test]
    fn evidence_is_named_by_hash_part() {
        assert_eq!(evidence_name("/nix/store/11111111111111111111111111111111-x").unwrap(), "11111111111111111111111111111111.attestation.json");
        assert_eq!(evidence_name("/etc/passwd"), None);
    }
}
