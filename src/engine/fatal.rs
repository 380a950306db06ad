//! A daemon that dies loudly. Any thread that returns an error or panics
//! is named in the log at once, every ACK stops (a report ACKed now might
//! never be decided or stored), the daemon stops and `run` returns the
//! failure, so the process exits non-zero. The health file in the data
//! directory says which (`cma status` reads it), and the metric
//! `cma_healthy` drops to 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::daemon::{DaemonError, StopHandle};
use super::metrics::Metrics as Counters;

/// The health file's name in the data directory.
pub const HEALTH_FILE: &str = "health.json";

/// The first failure of any thread, shared by all of them.
pub(super) struct Fatal {
    stop: StopHandle,
    counters: Arc<Counters>,
    first: Mutex<Option<String>>,
    health_file: PathBuf,
}

impl Fatal {
    pub(super) fn new(stop: StopHandle, counters: Arc<Counters>, data_dir: &Path) -> Fatal {
        Fatal {
            stop,
            counters,
            first: Mutex::new(None),
            health_file: data_dir.join(HEALTH_FILE),
        }
    }

    /// A thread failed: say so, stop ACKing, stop the daemon.
    pub(super) fn fail(&self, thread: &str, why: &str) {
        self.counters.failed.store(1, Ordering::Release);
        let reason = format!("the {thread} thread failed: {why}");
        log::error!("{reason}; no more ACKs, stopping");
        let first = {
            let mut f = self.first.lock().unwrap_or_else(|p| p.into_inner());
            f.is_none().then(|| f.insert(reason.clone()).clone())
        };
        if let Some(r) = first {
            self.write_health("failed", Some(&r));
        }
        self.stop.stop();
    }

    /// The first failure, if any.
    pub(super) fn failure(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes the health file (atomically: a reader sees the old or the
    /// new one); a failure to write it is only logged.
    pub(super) fn write_health(&self, state: &str, reason: Option<&str>) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::json!({
            "state": state,
            "pid": std::process::id(),
            "since_unix_ms": since,
            "reason": reason,
        });
        let tmp = self.health_file.with_extension("json.tmp");
        let written = std::fs::write(&tmp, format!("{body}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.health_file));
        if let Err(e) = written {
            log::warn!("{}: {e}", self.health_file.display());
        }
    }

    /// Runs a thread's body: an error or a panic is a failure of the
    /// daemon (and still returned, for `run` to report).
    pub(super) fn guard<T>(
        self: &Arc<Self>,
        thread: &'static str,
        body: impl FnOnce() -> Result<T, DaemonError>,
    ) -> Result<T, DaemonError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.fail(thread, &e.0);
                Err(e)
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                self.fail(thread, &format!("panicked: {why}"));
                Err(DaemonError(format!("{thread} thread panicked: {why}")))
            }
        }
    }
}

/// What the health file of a data directory says, for `cma status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `running`, `stopped` or `failed`.
    pub state: String,
    /// The daemon's process id.
    pub pid: u32,
    /// When the state was written (ms since the epoch).
    pub since_unix_ms: u64,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Reads the health file of `data_dir` (`None`: no daemon ever ran there).
pub fn read_health(data_dir: &Path) -> Result<Option<Health>, String> {
    let path = data_dir.join(HEALTH_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(Health {
        state: v["state"].as_str().unwrap_or("unknown").to_string(),
        pid: v["pid"].as_u64().unwrap_or(0) as u32,
        since_unix_ms: v["since_unix_ms"].as_u64().unwrap_or(0),
        reason: v["reason"].as_str().map(str::to_string),
    }))
}
