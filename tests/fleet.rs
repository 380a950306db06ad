//! End to end: the daemon and a fleet of 50 of our agents on loopback
//! (127.77.0.1 and up, ephemeral ports), with short heartbeat timers
//! (1 s / warn 2 s / dead 3 s). One test binary with one test, so that it
//! never competes with the CPU-heavy simulation tests of the other binary.
//!
//! Phases: all join and every agent heartbeats exactly what `cma rings
//! --json` says; kill 2 -> both confirmed dead within dead time + the
//! second monitor's window and the rings repaired; a clean shutdown -> left
//! without suspicion; the daemon stopped and restarted mid-run -> the fleet
//! converges again, nothing lost, and a death after the restart is still
//! confirmed; one switch cut off -> a switch-fault verdict, no death per
//! node.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cma::config::Config;
use cma::engine::daemon::{Daemon, DaemonError, StopHandle};
use cma::fleet::{Fate, Fleet, FleetConfig};
use cma::store::Store;
use cma::store::db_path;

/// Dead time (3 s) + the second monitor's window, max(2 heartbeats,
/// retransmit + 1 s) = 2 s (DESIGN.md rule 6), + 1 s for the database
/// to show it and our 100 ms polling.
const DETECTION_BOUND: Duration = Duration::from_secs(6);
const CONVERGE: Duration = Duration::from_secs(60);

fn config(dir: &Path, listen: SocketAddr) -> Config {
    let mut c = Config::from_toml(
        "[wal]\nsegment_mib = 1\n\
         [heartbeat]\ninterval_ms = 1000\nwarn_ms = 2000\ndead_ms = 3000\n\
         [reliable]\nretransmit_ms = 500\n\
         [store]\ncheckpoint_ms = 200\n\
         [metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    c.listen = vec![listen];
    c.data_dir = dir.to_path_buf();
    c
}

struct Running {
    addr: SocketAddr,
    stop: StopHandle,
    thread: JoinHandle<Result<(), DaemonError>>,
}

fn start(dir: &Path, listen: SocketAddr) -> Running {
    let d = Daemon::start(config(dir, listen), false).expect("daemon starts");
    let addr = d.local_addrs()[0];
    let stop = d.stop_handle();
    let thread = std::thread::spawn(move || d.run());
    Running { addr, stop, thread }
}

impl Running {
    fn finish(self) {
        self.stop.stop();
        self.thread
            .join()
            .expect("daemon thread")
            .expect("clean stop");
    }
}

/// The CMA's view, from its database.
struct View {
    status: HashMap<String, String>,
    events: Vec<(String, Option<String>)>,
}

fn view(dir: &Path) -> Option<View> {
    let s = Store::open_read_only(&db_path(dir)).ok()?;
    let status = s
        .nodes()
        .ok()?
        .into_iter()
        .map(|n| (n.hostname, n.status))
        .collect();
    let events = s
        .events(0, 1_000_000)
        .ok()?
        .into_iter()
        .map(|e| (e.kind, e.hostname))
        .collect();
    Some(View { status, events })
}

/// `cma rings --json`: (group, member addresses in ring order).
fn rings(dir: &Path) -> Option<Vec<(String, Vec<SocketAddr>)>> {
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["rings", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let j: serde_json::Value = serde_json::from_str(line).ok()?;
        let members = j["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m["addr"].as_str()?.parse().ok())
            .collect();
        v.push((j["group"].as_str()?.to_string(), members));
    }
    Some(v)
}

/// Every live agent (not cut off) is in exactly one group ring and
/// heartbeats and watches exactly its ring neighbours, each instruction
/// counted once; nobody else is in a ring.
fn rings_match(fleet: &Fleet, rings: &[(String, Vec<SocketAddr>)]) -> Result<(), String> {
    let mut expected: HashMap<SocketAddr, BTreeMap<SocketAddr, u32>> = HashMap::new();
    let mut in_group: HashMap<SocketAddr, u32> = HashMap::new();
    for (group, m) in rings {
        let k = m.len();
        for (i, &a) in m.iter().enumerate() {
            if group != "top" {
                *in_group.entry(a).or_default() += 1;
            }
            let e = expected.entry(a).or_default();
            match k {
                0 | 1 => {}
                2 => *e.entry(m[1 - i]).or_default() += 1,
                _ => {
                    *e.entry(m[(i + k - 1) % k]).or_default() += 1;
                    *e.entry(m[(i + 1) % k]).or_default() += 1;
                }
            }
        }
    }
    let mut live = 0;
    for i in 0..fleet.len() {
        let addr = fleet.addr(i);
        let alive = fleet.fate(i) == Fate::Alive && !fleet.is_partitioned(fleet.switch_of(i));
        if !alive {
            if in_group.contains_key(&addr) {
                return Err(format!("{} is gone but still in a ring", fleet.hostname(i)));
            }
            continue;
        }
        live += 1;
        if in_group.get(&addr) != Some(&1) {
            return Err(format!(
                "{} is in {:?} group rings",
                fleet.hostname(i),
                in_group.get(&addr)
            ));
        }
        let a = fleet.agent(i).ok_or("a live agent has no state")?;
        let want: Vec<(SocketAddr, u32, u32)> = expected
            .get(&addr)
            .map(|e| e.iter().map(|(&p, &c)| (p, c, c)).collect())
            .unwrap_or_default();
        if a.heartbeat_counts() != want {
            return Err(format!(
                "{} heartbeats {:?}, its rings say {:?}",
                fleet.hostname(i),
                a.heartbeat_counts(),
                want
            ));
        }
    }
    if in_group.len() != live {
        return Err(format!("{} in rings, {live} live", in_group.len()));
    }
    Ok(())
}

/// Steps the fleet until `cond` holds (checked every 100 ms) or the
/// deadline passes.
fn drive(
    fleet: &mut Fleet,
    deadline: Duration,
    mut cond: impl FnMut(&Fleet) -> Result<(), String>,
) -> Result<Duration, String> {
    let begin = Instant::now();
    let mut last_check = Instant::now() - Duration::from_secs(1);
    let mut last_err = String::new();
    while begin.elapsed() < deadline {
        fleet.step(Duration::from_millis(20)).expect("fleet steps");
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            match cond(fleet) {
                Ok(()) => return Ok(begin.elapsed()),
                Err(e) => last_err = e,
            }
        }
    }
    Err(format!("not within {deadline:?}: {last_err}"))
}

fn converged(fleet: &Fleet, dir: &Path, live: usize) -> Result<(), String> {
    let v = view(dir).ok_or("no database yet")?;
    let up = v.status.values().filter(|s| *s == "up").count();
    if up != live {
        return Err(format!("{up} up, want {live}"));
    }
    let r = rings(dir).ok_or("no rings yet")?;
    rings_match(fleet, &r)
}

fn status_of(dir: &Path, host: &str) -> Option<String> {
    view(dir)?.status.get(host).cloned()
}

#[test]
fn a_fleet_of_50_through_faults_and_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cma = start(dir, "127.0.0.1:0".parse().unwrap());
    let cma_addr = cma.addr;
    let mut cfg = FleetConfig::new(50, cma_addr);
    cfg.base = "127.77.0.1".parse().unwrap();
    cfg.port = 0;
    cfg.switches = 5;
    cfg.retransmit_ms = 500;
    cfg.join_rate = 1000;
    let mut fleet = Fleet::new(cfg).unwrap();

    // 1. Everyone joins; rings per switch (each agent reports its switch
    // once the CMA asks, DODISCOVER `#SWITCH`); agents do what the rings
    // say.
    let t = drive(&mut fleet, CONVERGE, |f| {
        converged(f, dir, 50)?;
        let n = rings(dir)
            .unwrap_or_default()
            .iter()
            .filter(|(g, _)| g.starts_with("switch "))
            .count();
        (n == 5).then_some(()).ok_or(format!("{n} switch rings"))
    })
    .unwrap();
    eprintln!("50 agents in rings after {t:?}");
    let r = rings(dir).unwrap();
    let switch_rings = r.iter().filter(|(g, _)| g.starts_with("switch ")).count();
    assert_eq!(switch_rings, 5, "{r:?}");

    // 2. Kill two agents on different switches.
    let victims = [7, 33];
    for v in victims {
        fleet.kill(v);
    }
    let killed_at = Instant::now();
    let mut seen = [None; 2];
    drive(&mut fleet, Duration::from_secs(20), |f| {
        for (k, &v) in victims.iter().enumerate() {
            if seen[k].is_none() && status_of(dir, &f.hostname(v)).as_deref() == Some("dead") {
                seen[k] = Some(killed_at.elapsed());
            }
        }
        if seen.iter().all(Option::is_some) {
            Ok(())
        } else {
            Err(format!("seen dead: {seen:?}"))
        }
    })
    .unwrap();
    eprintln!("kills confirmed after {seen:?}");
    for s in seen {
        assert!(s.unwrap() <= DETECTION_BOUND, "{seen:?}");
    }
    drive(&mut fleet, CONVERGE, |f| converged(f, dir, 48)).unwrap();

    // 3. A clean shutdown: left, never suspected.
    let leaver = 20;
    fleet.shutdown(leaver);
    drive(&mut fleet, CONVERGE, |f| {
        match status_of(dir, &f.hostname(leaver)).as_deref() {
            Some("left") => Ok(()),
            s => Err(format!("leaver is {s:?}")),
        }
    })
    .unwrap();
    drive(&mut fleet, CONVERGE, |f| converged(f, dir, 47)).unwrap();
    let v = view(dir).unwrap();
    let host = fleet.hostname(leaver);
    assert!(
        !v.events
            .iter()
            .any(|(k, h)| h.as_deref() == Some(&host) && (k == "suspected" || k == "dead")),
        "{:?}",
        v.events
    );
    let events_before = v.events.len();

    // 4. The daemon stops and comes back on the same address; the fleet
    // runs on meanwhile.
    cma.finish();
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_secs(1) {
        fleet.step(Duration::from_millis(20)).unwrap();
    }
    let cma = start(dir, cma_addr);
    assert_eq!(cma.addr, cma_addr);
    drive(&mut fleet, CONVERGE, |f| converged(f, dir, 47)).unwrap();
    let v = view(dir).unwrap();
    assert!(v.events.len() >= events_before, "events lost");
    for h in victims.iter().map(|&i| fleet.hostname(i)) {
        assert_eq!(v.status.get(&h).map(String::as_str), Some("dead"));
    }
    assert_eq!(
        v.status.get(&fleet.hostname(leaver)).map(String::as_str),
        Some("left")
    );
    // A death after the restart is confirmed too.
    let late_victim = 45;
    fleet.kill(late_victim);
    let killed_at = Instant::now();
    drive(&mut fleet, Duration::from_secs(20), |f| {
        match status_of(dir, &f.hostname(late_victim)).as_deref() {
            Some("dead") => Ok(()),
            s => Err(format!("late victim is {s:?}")),
        }
    })
    .unwrap();
    let late = killed_at.elapsed();
    eprintln!("kill after the restart confirmed after {late:?}");
    assert!(late <= DETECTION_BOUND, "{late:?}");
    drive(&mut fleet, CONVERGE, |f| converged(f, dir, 46)).unwrap();

    // 5. Switch 1 (agents 10..19) is cut off: a switch fault, not ten deaths.
    let cut = 1;
    fleet.partition(cut, true);
    let t = drive(&mut fleet, CONVERGE, |_| {
        let v = view(dir).ok_or("no view")?;
        if v.events.iter().any(|(k, _)| k == "switch_fault") {
            Ok(())
        } else {
            Err("no switch fault yet".into())
        }
    })
    .unwrap();
    eprintln!("switch fault named after {t:?}");
    // Let any false death that was coming arrive.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        fleet.step(Duration::from_millis(20)).unwrap();
    }
    let v = view(dir).unwrap();
    let killed: Vec<String> = [7, 33, 45].iter().map(|&i| fleet.hostname(i)).collect();
    let dead: Vec<&String> = v
        .status
        .iter()
        .filter(|(_, s)| *s == "dead")
        .map(|(h, _)| h)
        .collect();
    assert_eq!(dead.len(), 3, "only the killed are dead: {dead:?}");
    assert!(dead.iter().all(|h| killed.contains(h)), "{dead:?}");
    let cut_hosts: Vec<String> = (0..fleet.len())
        .filter(|&i| fleet.switch_of(i) == cut)
        .map(|i| fleet.hostname(i))
        .collect();
    assert_eq!(cut_hosts.len(), 10);
    for h in &cut_hosts {
        let s = v.status.get(h).map(String::as_str);
        assert_ne!(s, Some("dead"), "{h} declared dead behind a cut switch");
    }

    // The end: everyone reachable leaves cleanly.
    fleet.partition(cut, false);
    fleet.shutdown_all();
    let end = Instant::now();
    while !fleet.all_done() && end.elapsed() < Duration::from_secs(20) {
        fleet.step(Duration::from_millis(20)).unwrap();
    }
    assert!(fleet.all_done());
    cma.finish();
}

#[test]
fn a_wiped_agent_is_repaired_after_its_next_hbstate_without_a_false_death() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut c = config(dir, "127.0.0.1:0".parse().unwrap());
    // HBSTATE every second: well inside the 3 s dead time.
    c.heartbeat.state_interval_ms = 1000;
    c.heartbeat.stats_interval_ms = 1000;
    let d = Daemon::start(c, false).expect("daemon starts");
    let cma = Running {
        addr: d.local_addrs()[0],
        stop: d.stop_handle(),
        thread: std::thread::spawn(move || d.run()),
    };
    let mut cfg = FleetConfig::new(12, cma.addr);
    cfg.base = "127.79.0.1".parse().unwrap();
    cfg.port = 0;
    cfg.switches = 2;
    cfg.retransmit_ms = 500;
    let mut fleet = Fleet::new(cfg).unwrap();
    drive(&mut fleet, CONVERGE, |f| converged(f, dir, 12)).unwrap();
    let victim = 3;
    let before = fleet.agent(victim).unwrap().heartbeat_counts();
    assert!(!before.is_empty());
    fleet.wipe(victim);
    assert!(fleet.agent(victim).unwrap().heartbeat_counts().is_empty());
    // Repaired: it heartbeats its ring peers again, each once.
    let t = drive(&mut fleet, CONVERGE, |f| {
        let now = f.agent(victim).unwrap().heartbeat_counts();
        if now == before {
            Ok(())
        } else {
            Err(format!("{now:?} != {before:?}"))
        }
    })
    .unwrap();
    eprintln!("wiped agent repaired after {t:?}");
    // Let any false suspicion that was coming arrive, then check.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        fleet.step(Duration::from_millis(20)).unwrap();
    }
    converged(&fleet, dir, 12).unwrap();
    let v = view(dir).unwrap();
    assert!(
        !v.events
            .iter()
            .any(|(k, _)| k == "dead" || k == "suspected"),
        "{:?}",
        v.events
    );
    let drift: Vec<_> = v
        .events
        .iter()
        .filter(|(k, _)| k == "drift")
        .map(|(_, h)| h.clone())
        .collect();
    assert_eq!(drift, vec![Some(fleet.hostname(victim))]);
    // `cma nodes --json` shows the drift count and the reported state.
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["nodes", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|j| j["hostname"] == fleet.hostname(victim).as_str())
        .unwrap();
    assert_eq!(row["drift"], 1, "{row}");
    assert!(
        row["state"].as_str().unwrap().starts_with("sending"),
        "{row}"
    );
    // `cma stats NODE`: its latest counters.
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["stats", &fleet.hostname(victim), "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["stats"]["heartbeats_sent"].as_u64().unwrap() > 0, "{j}");
    fleet.shutdown_all();
    let end = Instant::now();
    while !fleet.all_done() && end.elapsed() < Duration::from_secs(20) {
        fleet.step(Duration::from_millis(20)).unwrap();
    }
    cma.finish();
}

/// Kills the child on drop (a failed assertion must not leave it running).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(cma: SocketAddr, listen: &str, name: &str, switch: &str) -> Child {
    Child(
        Command::new(env!("CARGO_BIN_EXE_cma"))
            .args(["agent", "--cma", &cma.to_string(), "--listen", listen])
            .args([
                "--hostname",
                name,
                "--switch-id",
                switch,
                "--log-level",
                "warn",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cma agent starts"),
    )
}

#[test]
fn cma_agent_processes_join_heartbeat_and_leave_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cma = start(dir, "127.0.0.1:0".parse().unwrap());
    let mut a = spawn_agent(cma.addr, "127.78.0.1:0", "agent-a", "sw-x");
    let _b = spawn_agent(cma.addr, "127.78.0.2:0", "agent-b", "sw-x");
    let deadline = Instant::now() + CONVERGE;
    // Both join, in one ring, heartbeating each other (their switch is
    // known only where the host has a NIC with carrier for the CMA to ask
    // about: not assumed here).
    loop {
        let ok = view(dir).is_some_and(|v| {
            v.status.get("agent-a").map(String::as_str) == Some("up")
                && v.status.get("agent-b").map(String::as_str) == Some("up")
        }) && rings(dir)
            .is_some_and(|r| r.iter().any(|(g, m)| g != "top" && m.len() == 2));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "agents did not join");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM: HBSHUTDOWN, CONNSHUT, exit 0; the CMA says left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(s) = a.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline + CONVERGE, "agent did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    loop {
        if view(dir)
            .and_then(|v| v.status.get("agent-a").cloned())
            .as_deref()
            == Some("left")
        {
            break;
        }
        assert!(Instant::now() < deadline + CONVERGE, "agent-a not left");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = view(dir).unwrap();
    assert_eq!(v.status.get("agent-b").map(String::as_str), Some("up"));
    cma.finish();
}
