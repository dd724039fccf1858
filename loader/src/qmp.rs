//! Watching QEMU's run state over QMP, so a VM that QEMU stopped without exiting is noticed in
//! seconds instead of at the build's timeout.
//!
//! QEMU pauses a guest, and keeps running itself, in cases a loader would otherwise wait out:
//! a KVM internal error or emulation failure (`kvm_cpu_exec` → `vm_stop(RUN_STATE_INTERNAL_ERROR)`),
//! a TD's ReportFatalError with a code QEMU refuses (`tdx_handle_report_fatal_error` returns -1
//! before the guest-panic path: the same internal-error stop), a guest panic under
//! `-action panic=pause`, an I/O error on a disk. The loader asks `query-status` about once a
//! second; a state other than `running` that lasts ([`STOPPED_GRACE`]) while QEMU has not
//! exited is a platform failure, reported with the state QEMU gives.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a non-running state may last before it counts: an orderly exit passes through
/// `shutdown`/`guest-panicked` for a moment before QEMU's process ends.
pub const STOPPED_GRACE: Duration = Duration::from_secs(2);

/// One QMP client connection (QEMU's `-qmp unix:PATH,server=on,wait=off`).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (retrying until `deadline`: QEMU creates the socket as it starts), reads the
    /// greeting and leaves capabilities negotiation.
    pub fn connect(path: &Path, deadline: Instant) -> std::io::Result<Qmp> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(std::io::Error::other("QMP: no greeting"));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> std::io::Result<serde_json::Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "QMP closed"));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// Runs a command and returns its `return` value (events that arrive first are skipped).
    pub fn execute(&mut self, command: &str) -> std::io::Result<serde_json::Value> {
        writeln!(self.writer, "{}", serde_json::json!({ "execute": command }))?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(std::io::Error::other(format!("QMP {command}: {e}")));
            }
        }
    }

    /// QEMU's run state (`query-status`): "running", "paused", "internal-error", ….
    pub fn status(&mut self) -> std::io::Result<String> {
        let r = self.execute("query-status")?;
        Ok(run_state(&r).to_string())
    }
}

/// The run state in a `query-status` return value.
pub fn run_state(r: &serde_json::Value) -> &str {
    r.get("status").and_then(|s| s.as_str()).unwrap_or("unknown")
}

/// Tracks how long QEMU has been in a state other than `running`.
#[derive(Debug, Default)]
pub struct StopWatch {
    since: Option<(Instant, String)>,
}

impl StopWatch {
    /// Records a state seen at `now`; returns the state once it has lasted [`STOPPED_GRACE`].
    pub fn observe(&mut self, state: &str, now: Instant) -> Option<String> {
        if state == "running" {
            self.since = None;
            return None;
        }
        match &self.since {
            Some((t, s)) if s == state => (now.duration_since(*t) >= STOPPED_GRACE).then(|| state.to_string()),
            _ => {
                self.since = Some((now, state.to_string()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_counts_only_once_it_lasts() {
        let t0 = Instant::now();
        let mut w = StopWatch::default();
        assert_eq!(w.observe("running", t0), None);
        assert_eq!(w.observe("internal-error", t0), None);
        assert_eq!(w.observe("internal-error", t0 + Duration::from_secs(1)), None);
        assert_eq!(w.observe("internal-error", t0 + STOPPED_GRACE), Some("internal-error".into()));
        // Running again resets it; a new state starts its own grace.
        assert_eq!(w.observe("running", t0 + Duration::from_secs(3)), None);
        assert_eq!(w.observe("paused", t0 + Duration::from_secs(4)), None);
        assert_eq!(w.observe("guest-panicked", t0 + Duration::from_secs(7)), None);
        assert_eq!(run_state(&serde_json::json!({"running": false, "singlestep": false, "status": "internal-error"})), "internal-error");
    }
}
