//! `cma bench joins`: a boot storm. N of our agents (a realistic netconfig
//! each) start at once against `cma run` in its own process with its
//! default configuration; reported: joins/s until every agent is placed
//! (configured and told its ring peers), the daemon's CPU per join (from
//! `/proc/PID/stat`) and its resident memory per node; then the daemon is
//! stopped and started again on the same data directory, and the same for
//! the restart that re-learns the fleet from its checkpoint and log.
//!
//! The agents run in this process on one event loop (`crate::fleet`), each
//! on its own loopback address (127.1.0.1 and up) through one shared socket;
//! the daemon and the agents share the machine's cores.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::Phase;
use crate::fleet::{Fleet, FleetConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct JoinsBenchConfig {
    /// Agents.
    pub nodes: usize,
    /// Simulated switches they hang off.
    pub switches: usize,
    /// Where the daemon's temporary data directory goes.
    pub dir: PathBuf,
    /// Give up after this long, s.
    pub timeout_s: u64,
    /// The `cma` executable to run the daemon with (`None`: this one).
    pub exe: Option<PathBuf>,
}

/// One phase's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Phase1 {
    /// Seconds until done.
    pub seconds: f64,
    /// The daemon's CPU time over the phase, s.
    pub cpu_s: f64,
    /// The daemon's resident memory at the end, KiB.
    pub rss_kib: u64,
}

/// What was measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinsResult {
    /// Agents.
    pub nodes: usize,
    /// Bytes of one agent's netconfig (STARTUP JSON).
    pub netconfig_bytes: usize,
    /// The daemon at rest before the storm.
    pub idle_rss_kib: u64,
    /// The storm: from the first STARTUP to every agent placed.
    pub storm: Phase1,
    /// The restart: from spawn to running again with every node
    /// (recovered from its checkpoint and log).
    pub restart: Phase1,
    /// The storm's daemon CPU by thread, s.
    pub storm_threads: Vec<(String, f64)>,
}

/// The daemon's CPU time (user + system), s, and resident memory, KiB.
pub(super) fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, 100 on every Linux architecture we run on.
    let hz = 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some((ticks as f64 / hz, rss))
}

/// CPU seconds of each of the daemon's threads, by name.
fn threads_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in dir.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
        *out.entry(name.trim().to_string()).or_insert(0.0) += ticks as f64 / 100.0;
    }
    out
}

/// `cma run` in its own process.
pub(super) struct Daemon {
    child: Child,
    data: PathBuf,
}

impl Daemon {
    pub(super) fn spawn(
        exe: Option<&Path>,
        data: &Path,
        listen: SocketAddr,
    ) -> Result<Daemon, String> {
        let exe = match exe {
            Some(e) => e.to_path_buf(),
            None => std::env::current_exe().map_err(|e| format!("own executable: {e}"))?,
        };
        let config = data.join("bench.toml");
        std::fs::write(&config, "log_level = \"warn\"\n[metrics]\nlisten = \"\"\n")
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let _ = std::fs::remove_file(data.join(crate::engine::fatal::HEALTH_FILE));
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cma run: {e}"))?;
        Ok(Daemon {
            child,
            data: data.to_path_buf(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn running(&mut self) -> Result<bool, String> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Err(format!("cma run exited: {s}"));
        }
        Ok(crate::engine::fatal::read_health(&self.data)?
            .is_some_and(|h| h.state == "running" && h.pid == self.pid()))
    }

    /// SIGTERM, then waits for a clean exit.
    pub(super) fn stop(mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| format!("SIGTERM: {e}"))?;
        let s = self.child.wait().map_err(|e| e.to_string())?;
        if !s.success() {
            return Err(format!("cma run stopped with {s}"));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) fn placed(f: &Fleet) -> usize {
    (0..f.len())
        .filter(|&i| {
            f.agent(i).is_some_and(|a| {
                a.phase() == Phase::Joined && (f.len() < 2 || a.sending_to().next().is_some())
            })
        })
        .count()
}

/// Steps the fleet until `done` or the timeout.
pub(super) fn wait_for(
    fleet: &mut Fleet,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&mut Fleet) -> Result<bool, String>,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if done(fleet)? {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!("timed out waiting for {what}"));
        }
        fleet
            .step(Duration::from_millis(5))
            .map_err(|e| format!("fleet: {e}"))?;
    }
}

/// A directory of ours under the measured one, removed when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cma run` started on a free loopback port with a fresh data directory
/// `cma-bench-NAME-PID` under `dir` (removed when dropped), running.
pub(super) fn started(
    name: &str,
    dir: &Path,
    exe: Option<&Path>,
    timeout: Duration,
) -> Result<(TempDir, SocketAddr, Daemon), String> {
    let data = TempDir(dir.join(format!("cma-bench-{name}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&data.0);
    std::fs::create_dir_all(&data.0).map_err(|e| format!("{}: {e}", data.0.display()))?;
    // A free port on the CMA's own loopback address.
    let listen = {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.local_addr().map_err(|e| e.to_string())?
    };
    let mut daemon = Daemon::spawn(exe, &data.0, listen)?;
    let t0 = Instant::now();
    while !daemon.running()? {
        if t0.elapsed() > timeout {
            return Err("cma run did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((data, listen, daemon))
}

/// Runs the storm, then the restart.
pub fn run(cfg: &JoinsBenchConfig) -> Result<JoinsResult, String> {
    let timeout = Duration::from_secs(cfg.timeout_s);
    let (data, listen, daemon) = started("joins", &cfg.dir, cfg.exe.as_deref(), timeout)?;
    let (_, idle_rss_kib) = usage(daemon.pid()).ok_or("no /proc figures for cma run")?;
    let mut fc = FleetConfig::new(cfg.nodes, listen);
    fc.switches = cfg.switches.max(1);
    fc.join_rate = 1_000_000;
    fc.name_prefix = "joins-".into();
    fc.server_netconfig = true;
    // One socket for all agents: 100,000 sockets would pass the open-files
    // limit, and one event source keeps the harness light.
    fc.shared_socket = true;
    fc.port = 0;
    let mut fleet = Fleet::new(fc).map_err(|e| format!("agents: {e}"))?;
    let (cpu0, _) = usage(daemon.pid()).ok_or("no /proc figures for cma run")?;
    let threads0 = threads_cpu(daemon.pid());
    let t0 = Instant::now();
    wait_for(&mut fleet, timeout, "every agent placed", |f| {
        Ok(placed(f) == f.len())
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let (cpu1, rss) = usage(daemon.pid()).ok_or("no /proc figures for cma run")?;
    let netconfig_bytes = fleet.agent(0).map_or(0, |a| a.config().netconfig.len());
    let storm_threads: Vec<(String, f64)> = threads_cpu(daemon.pid())
        .into_iter()
        .map(|(k, v)| {
            let before = threads0.get(&k).copied().unwrap_or(0.0);
            (k, v - before)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let storm = Phase1 {
        seconds,
        cpu_s: cpu1 - cpu0,
        rss_kib: rss,
    };
    // The restart: stopped cleanly (a checkpoint), started again; done once
    // every node is back in its store and it answers an agent.
    daemon.stop()?;
    let t0 = Instant::now();
    let mut daemon = Daemon::spawn(cfg.exe.as_deref(), &data.0, listen)?;
    let db = crate::store::db_path(&data.0);
    wait_for(&mut fleet, timeout, "the restarted daemon", |_| {
        if !daemon.running()? {
            return Ok(false);
        }
        Ok(crate::store::Store::open_read_only(&db)
            .and_then(|s| s.nodes())
            .is_ok_and(|n| n.len() == cfg.nodes))
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let (cpu, rss) = usage(daemon.pid()).ok_or("no /proc figures for cma run")?;
    let restart = Phase1 {
        seconds,
        cpu_s: cpu,
        rss_kib: rss,
    };
    fleet.shutdown_all();
    daemon.stop()?;
    Ok(JoinsResult {
        nodes: cfg.nodes,
        netconfig_bytes,
        idle_rss_kib,
        storm,
        restart,
        storm_threads,
    })
}

/// The table.
pub fn render(r: &JoinsResult) -> String {
    let n = r.nodes.max(1) as f64;
    let per_node = |kib: u64| (kib.saturating_sub(r.idle_rss_kib) as f64 * 1024.0 / n) as u64;
    let by_thread: Vec<String> = r
        .storm_threads
        .iter()
        .map(|(t, s)| format!("{t} {:.1}", s * 1e6 / n))
        .collect();
    format!(
        "cma bench joins: {} agents (netconfig {} B each) against cma run (defaults, own process)\n\
         storm:   all placed after {:.2} s = {:.0} joins/s; daemon CPU {:.2} s = {:.1} us per join; RSS {} KiB ({} B per node over the idle {} KiB)\n\
         \x20        us per join by thread: {}\n\
         restart: running with every node after {:.2} s; daemon CPU {:.2} s = {:.1} us per node; RSS {} KiB\n\
         targets: >= 50,000 joins/s, <= 20 us of daemon CPU per join, 100,000 agents placed in <= 5 s\n",
        r.nodes,
        r.netconfig_bytes,
        r.storm.seconds,
        n / r.storm.seconds.max(1e-9),
        r.storm.cpu_s,
        r.storm.cpu_s * 1e6 / n,
        r.storm.rss_kib,
        per_node(r.storm.rss_kib),
        r.idle_rss_kib,
        by_thread.join(", "),
        r.restart.seconds,
        r.restart.cpu_s,
        r.restart.cpu_s * 1e6 / n,
        r.restart.rss_kib,
    )
}

/// The result as JSON.
pub fn to_json(r: &JoinsResult) -> serde_json::Value {
    let n = r.nodes.max(1) as f64;
    serde_json::json!({
        "bench": "joins",
        "nodes": r.nodes,
        "netconfig_bytes": r.netconfig_bytes,
        "idle_rss_kib": r.idle_rss_kib,
        "storm": {
            "seconds": r.storm.seconds,
            "joins_per_s": n / r.storm.seconds.max(1e-9),
            "daemon_cpu_s": r.storm.cpu_s,
            "cpu_us_per_join": r.storm.cpu_s * 1e6 / n,
            "rss_kib": r.storm.rss_kib,
            "cpu_us_per_join_by_thread": r.storm_threads.iter()
                .map(|(t, s)| (t.clone(), serde_json::json!(s * 1e6 / n)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "restart": {
            "seconds": r.restart.seconds,
            "daemon_cpu_s": r.restart.cpu_s,
            "cpu_us_per_node": r.restart.cpu_s * 1e6 / n,
            "rss_kib": r.restart.rss_kib,
        },
    })
}
