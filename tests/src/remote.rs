//! A remote builder for tests: OpenSSH's `sshd` (Debian `openssh-server`) on a loopback port,
//! with a generated host key and an authorized key in a temporary directory (no system
//! configuration is read or touched: `-f /dev/null`, every setting on the command line), whose
//! `remote-program` is a wrapper that sets the loader's environment and runs `loader`. The client
//! is an unmodified Nix 2.8 (`nix-build`) in its own chroot store, reaching the builder with
//! `--builders 'ssh://root@127.0.0.1?remote-program=…&remote-store=…'` and `NIX_SSHOPTS`; the
//! builder side uses another chroot store (`remote-store=`), so the two sides never share a
//! store or its locks.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Remote {
    pub dir: PathBuf,
    pub port: u16,
    sshd: Child,
    /// The client's store (a chroot store: `--store DIR`).
    pub client: PathBuf,
    /// The builder's store (`remote-store=`).
    pub builder: PathBuf,
    /// `LOADER_EVIDENCE_DIR`.
    pub evidence: PathBuf,
    pub wrapper: PathBuf,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Remote {
    /// Starts sshd and prepares both stores under a fresh directory named after `name`.
    pub fn start(name: &str) -> Remote {
        let dir = std::env::temp_dir().join(format!("remote-builder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join(key)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        // sshd's privilege-separation directory (the package's tmpfiles.d makes it at boot).
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (sshd needs it; the tests run as root)");
        let evidence = dir.join("evidence");
        // The loader's temporary files (its VMs' disks, outputs waiting to be imported) go here:
        // the fault tests find a build's QEMU by it and check that nothing is left behind.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let wrapper = dir.join("loader-remote");
        let loader = crate::bin("loader");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# What a provider's remote-program looks like (docs/hosting.md).\nexport LOADER_EVIDENCE_DIR='{}' LOADER_AGENT='{}' LOADER_ACCEL=tcg LOADER_MEMORY_MIB=1536 TMPDIR='{}'\nexec '{}' \"$@\"\n",
                evidence.display(),
                crate::agent_bin().display(),
                tmp.display(),
                loader.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
            std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
            let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
            let mut sshd = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
                .args(["-o", "ListenAddress=127.0.0.1"])
                .arg("-o").arg(format!("HostKey={}", dir.join("host_key").display()))
                .arg("-o").arg(format!("AuthorizedKeysFile={}", dir.join("authorized_keys").display()))
                .arg("-o").arg(format!("PidFile={}", dir.join("sshd.pid").display()))
                .args(["-o", "StrictModes=no", "-o", "UsePAM=no", "-o", "PermitRootLogin=prohibit-password", "-o", "MaxStartups=64", "-o", "MaxSessions=64"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting /usr/sbin/sshd (apt: openssh-server)");
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let r = Remote {
                        client: dir.join("client"),
                        builder: dir.join("builder"),
                        evidence,
                        wrapper,
                        dir,
                        port,
                        sshd,
                    };
                    return r;
                }
                if let Ok(Some(_)) = sshd.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = sshd.kill();
            let _ = sshd.wait();
            last = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
        }
        panic!("sshd did not start: {last}");
    }

    /// `NIX_SSHOPTS`: the port, the client key, the generated known_hosts.
    pub fn ssh_opts(&self) -> String {
        format!(
            "-p {} -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.port,
            self.dir.join("client_key").display(),
            self.dir.join("known_hosts").display()
        )
    }

    /// The `--builders` value: this machine, x86_64-linux, `jobs` builds at once.
    pub fn builders(&self, jobs: usize) -> String {
        format!("ssh://root@127.0.0.1?remote-program={}&remote-store={} x86_64-linux - {jobs}", self.wrapper.display(), self.builder.display())
    }

    /// `nix-build` of corpus attributes in the client's store, every build on the remote builder
    /// (`--max-jobs 0`).
    pub fn nix_build(&self, file: &Path, attrs: &[&str], jobs: usize) -> Output {
        self.nix_build_via(file, attrs, &self.builders(jobs))
    }

    /// Another remote-program on the same sshd: `loader` with the wrapper's environment plus
    /// `extra` (`VAR=value` lines), for fault injection (another agent image, say).
    pub fn wrapper_with(&self, name: &str, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(&self.wrapper).unwrap();
        let w = self.dir.join(name);
        std::fs::write(&w, base.replacen("exec ", &format!("export {extra}\nexec "), 1)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    }

    /// [`Remote::nix_build`] with a `--builders` value of the caller's.
    pub fn nix_build_via(&self, file: &Path, attrs: &[&str], builders: &str) -> Output {
        self.nix_build_command(file, attrs, builders).output().unwrap()
    }

    /// [`Remote::nix_build`] started, not waited for (output piped).
    pub fn nix_build_spawn(&self, file: &Path, attrs: &[&str], jobs: usize) -> Child {
        self.nix_build_command(file, attrs, &self.builders(jobs)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn nix_build_command(&self, file: &Path, attrs: &[&str], builders: &str) -> Command {
        let mut cmd = Command::new("nix-build");
        cmd.arg("--store").arg(&self.client).arg(file).args(["--argstr", "busyboxDir"]).arg(crate::e2e::busybox_dir());
        for a in attrs {
            cmd.args(["-A", a]);
        }
        cmd.args(["--no-out-link", "--max-jobs", "0", "--option", "substituters", ""])
            .arg("--builders")
            .arg(builders)
            .env("NIX_SSHOPTS", self.ssh_opts());
        cmd
    }

    /// The `loader --serve` processes serving this builder (their command line names its store).
    pub fn serve_pids(&self) -> Vec<u32> {
        let store = self.builder.to_string_lossy();
        processes().into_iter().filter(|p| p.comm == "loader" && p.args.iter().any(|a| a == "--serve") && p.args.iter().any(|a| *a == store)).map(|p| p.pid).collect()
    }

    /// The QEMU processes this builder's loaders started (their disks are under `dir/tmp`),
    /// whoever their parent is now.
    pub fn qemu_pids(&self) -> Vec<u32> {
        let tmp = self.dir.join("tmp");
        let tmp = tmp.to_string_lossy();
        processes().into_iter().filter(|p| p.comm.starts_with("qemu-system") && p.args.iter().any(|a| a.contains(&*tmp))).map(|p| p.pid).collect()
    }

    /// What is left in the loader's temporary directory (`dir/tmp`).
    pub fn tmp_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("tmp")).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }

    /// `nix-store --store STORE ARGS…`.
    pub fn nix_store(store: &Path, args: &[&str]) -> Output {
        Command::new("nix-store").arg("--store").arg(store).args(args).output().unwrap()
    }
}

/// A process as `/proc` shows it.
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub args: Vec<String>,
}

/// Every process visible in `/proc` (those that vanish while it is read are skipped).
pub fn processes() -> Vec<Process> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let (Ok(stat), Ok(cmdline)) = (std::fs::read_to_string(e.path().join("stat")), std::fs::read(e.path().join("cmdline"))) else { continue };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c.to_string()).unwrap_or_default();
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        v.push(Process { pid, ppid, comm, args });
    }
    v
}

/// `kill -9 PID` (one process, by its id).
pub fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A fault test that failed may leave its build's QEMU running: end those (by id) only.
        for pid in self.qemu_pids() {
            kill9(pid);
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        if std::env::var_os("KEEP_REMOTE").is_none() {
            let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&self.dir).status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
