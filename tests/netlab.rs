//! End to end with twelve real, unmodified nanoprobes behind three
//! simulated switches (`../shared/netlab`: network namespaces, one bridge
//! per switch, LLDP announced on every port) and `cma run` on the router.
//!
//! One scenario, in order:
//! 1. the probes join; the CMA asks each to discover its switch
//!    (DODISCOVER `#SWITCH` per NIC); all are grouped by switch: three rings
//!    of four and a top ring;
//! 2. switch 2 goes down for 75 s (its bridge: members cannot reach anyone,
//!    not even one another): one switch-fault verdict, its four members
//!    `unreachable`, nobody dead;
//! 3. it comes back: all up within 60 s, nobody ever dead, and no probe
//!    logs the same "unexpected heartbeats" twice afterwards;
//! 4. a probe killed inside switch 1 is confirmed dead by two monitors;
//! 5. switch 3 loses only its uplink (its members still see one another)
//!    for a dead time and more: a switch verdict, no death; healed, all up;
//! 6. a probe frozen (SIGSTOP) past the dead time is declared dead; resumed
//!    (SIGCONT, the same process with the request ids it waits for), it is
//!    back `up`, nobody logs the same "unexpected heartbeats" twice, and
//!    killed then, its monitors confirm its death: it was in its ring again.
//!
//! Needs root (namespaces), `ip`, `python3`, ../shared/netlab and the
//! nanoprobe; without them it prints one line saying it was skipped, and
//! why. The namespaces are netlab's (`swcore`, `s1h1`...; addresses in
//! 10.77.0.0/16 exist only inside them) and are removed at the end, even
//! when an assertion fails.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cma::store::db_path;
use cma::store::{EventView, Store};
use common::{is_root, nanoprobe, run};

const SWITCHES: usize = 3;
const HOSTS: usize = 4;
/// As the issue asks: a switch down for 75 s.
const CUT: Duration = Duration::from_secs(75);
/// Heartbeat 1 s, dead time 10 s, retransmit 2 s (a nanoprobe's own):
/// window max(2 s, 3 s) = 3 s.
const CMA_TOML: &str = "[heartbeat]\ninterval_ms = 1000\nwarn_ms = 5000\ndead_ms = 10000\n\
[reliable]\nretransmit_ms = 2000\n[store]\ncheckpoint_ms = 200\n[metrics]\nlisten = \"\"\n";
const DEAD_PLUS_WINDOW: Duration = Duration::from_secs(13);
/// Slack for the store (checkpoint 200 ms), our polling and a lost
/// datagram or two.
const SLACK: Duration = Duration::from_secs(8);
/// A nanoprobe repeats "unexpected heartbeats" every 10 s: watching this
/// long sees any repetition twice over.
const MARTIAN_WATCH: Duration = Duration::from_secs(22);

fn skip(why: &str) {
    common::skip("netlab tests (real nanoprobes behind switches)", why);
}

struct Probe {
    name: String,
    child: Child,
    log: PathBuf,
}

/// netlab's data centre with the CMA and the probes in it; everything is
/// killed and torn down on drop.
struct Lab {
    netlab: PathBuf,
    dir: tempfile::TempDir,
    nanoprobe: PathBuf,
    cma: Option<Child>,
    lldp: Option<Child>,
    probes: Vec<Probe>,
}

fn name(n: usize, i: usize) -> String {
    format!("s{n}h{i}")
}

fn addr(n: usize, i: usize) -> String {
    format!("10.77.{n}.{}", 10 + i)
}

impl Lab {
    fn new(netlab: PathBuf, nanoprobe: PathBuf) -> Result<Lab, String> {
        // Leftovers of an earlier run that was killed: netlab's names are
        // fixed.
        let _ = Command::new("bash")
            .arg(netlab.join("teardown.sh"))
            .args([SWITCHES.to_string(), HOSTS.to_string()])
            .stderr(Stdio::null())
            .status();
        let lab = Lab {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            netlab,
            nanoprobe,
            cma: None,
            lldp: None,
            probes: Vec::new(),
        };
        run(Command::new("bash")
            .arg(lab.netlab.join("setup.sh"))
            .args([SWITCHES.to_string(), HOSTS.to_string()]))?;
        // A clean two-way cut when only an uplink is down: the router
        // answers ARP only on the interface holding the address, and drops
        // what arrives on the wrong side.
        run(Command::new("ip").args([
            "netns",
            "exec",
            "swcore",
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.rp_filter=1",
        ]))?;
        std::fs::write(lab.dir.path().join("cma.toml"), CMA_TOML).map_err(|e| e.to_string())?;
        Ok(lab)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn swcore(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", "swcore"]).args(args)).expect("ip in swcore");
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("cma.log")).unwrap();
        self.cma = Some(
            Command::new("ip")
                .args(["netns", "exec", "swcore", env!("CARGO_BIN_EXE_cma"), "run"])
                .arg("--config")
                .arg(self.dir.path().join("cma.toml"))
                .arg("--data-dir")
                .arg(self.data())
                .args(["--listen", "10.77.0.1:1984"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cma run starts"),
        );
        let mut ports = Vec::new();
        for n in 1..=SWITCHES {
            for i in 1..=HOSTS {
                ports.push(format!("v{n}{i}:{n}:{i}"));
            }
        }
        self.lldp = Some(
            Command::new("ip")
                .args(["netns", "exec", "swcore", "python3"])
                .arg(self.netlab.join("lldp_send.py"))
                .arg("2")
                .args(&ports)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("lldp_send.py starts"),
        );
        for n in 1..=SWITCHES {
            for i in 1..=HOSTS {
                let (name, addr) = (name(n, i), addr(n, i));
                let log = self.dir.path().join(format!("{name}.log"));
                let pid = self.dir.path().join(format!("{name}.pid"));
                let child = Command::new("ip")
                    .args(["netns", "exec", &name, "unshare", "--uts", "--"])
                    .args(["sh", "-c", "hostname \"$1\" && shift && exec \"$@\"", "sh"])
                    .arg(&name)
                    .arg(&self.nanoprobe)
                    .args(["-f", "-d", "1", "-c", "10.77.0.1:1984"])
                    .args(["-b", &format!("{addr}:1984")])
                    .arg("-p")
                    .arg(&pid)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .expect("nanoprobe starts");
                self.probes.push(Probe { name, child, log });
            }
        }
    }

    fn store(&self) -> Option<Store> {
        Store::open_read_only(&db_path(&self.data())).ok()
    }

    fn status(&self) -> HashMap<String, String> {
        self.store()
            .and_then(|s| s.nodes().ok())
            .map(|v| v.into_iter().map(|n| (n.hostname, n.status)).collect())
            .unwrap_or_default()
    }

    fn events(&self) -> Vec<EventView> {
        common::events(&self.data())
    }

    fn events_of(&self, kind: &str) -> Vec<EventView> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    fn rings(&self) -> Vec<(String, Vec<String>)> {
        common::rings(&self.data())
    }

    /// Is every switch a ring of exactly its own probes?
    fn grouped_by_switch(&self) -> bool {
        let rings = self.rings();
        let switch_rings: Vec<&(String, Vec<String>)> = rings
            .iter()
            .filter(|(g, _)| g.starts_with("switch "))
            .collect();
        switch_rings.len() == SWITCHES
            && switch_rings.iter().all(|(_, m)| {
                m.len() == HOSTS && {
                    let sw = &m[0][..2];
                    m.iter().all(|h| h.starts_with(sw))
                }
            })
            && rings.iter().any(|(g, m)| g == "top" && m.len() > SWITCHES)
    }

    fn all(&self, names: &[String], status: &str) -> bool {
        let s = self.status();
        names.iter().all(|n| s.get(n).is_some_and(|x| x == status))
    }

    fn wait(&self, what: &str, limit: Duration, mut done: impl FnMut(&Lab) -> bool) -> Duration {
        let t0 = Instant::now();
        while !done(self) {
            assert!(
                t0.elapsed() < limit,
                "timed out waiting for {what}\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        t0.elapsed()
    }

    fn report(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("cma.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        format!(
            "nodes: {:?}\nrings: {:?}\ncma log (last lines first):\n{}",
            self.status(),
            self.rings(),
            tail.join("\n")
        )
    }

    fn log_len(&self) -> Vec<usize> {
        self.probes
            .iter()
            .map(|p| std::fs::metadata(&p.log).map_or(0, |m| m.len() as usize))
            .collect()
    }

    /// (probe, peer) pairs a probe called "unexpected heartbeats" more
    /// than once in its log after `from` (byte offsets per probe).
    fn repeated_martians(&self, from: &[usize]) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        for (p, start) in self.probes.iter().zip(from) {
            let log = std::fs::read(&p.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&log[(*start).min(log.len())..]).to_string();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for l in text.lines() {
                if let Some(rest) = l.split("System at address ").nth(1)
                    && let Some(peer) = rest.split(" is sending unexpected heartbeats").next()
                    && rest.contains("is sending unexpected heartbeats")
                {
                    *seen.entry(peer.to_string()).or_default() += 1;
                }
            }
            for (peer, k) in seen {
                if k > 1 {
                    out.push((p.name.clone(), peer, k));
                }
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.cma.take(), self.lldp.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &mut self.probes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = Command::new("bash")
            .arg(self.netlab.join("teardown.sh"))
            .args([SWITCHES.to_string(), HOSTS.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn real_nanoprobes_behind_switches_survive_a_switch_reboot_and_an_uplink_cut() {
    if !is_root() {
        return skip("needs root (network namespaces)");
    }
    let netlab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/netlab");
    if !netlab.join("setup.sh").is_file() {
        return skip("no ../shared/netlab beside the project");
    }
    for cmd in ["ip", "python3", "unshare"] {
        if !have(cmd) {
            return skip(&format!("no {cmd}"));
        }
    }
    let np = match nanoprobe() {
        Ok(p) => p,
        Err(why) => return skip(&why),
    };
    let mut lab = match Lab::new(netlab, np) {
        Ok(l) => l,
        Err(why) => return skip(&format!("cannot build the network: {why}")),
    };
    lab.start();
    let everyone: Vec<String> = (1..=SWITCHES)
        .flat_map(|n| (1..=HOSTS).map(move |i| name(n, i)))
        .collect();
    let switch = |n: usize| -> Vec<String> { (1..=HOSTS).map(|i| name(n, i)).collect() };

    // 1. Joined, and grouped by switch once each probe heard its switch.
    let t = lab.wait(
        "12 probes up, grouped by switch",
        Duration::from_secs(120),
        |l| l.all(&everyone, "up") && l.grouped_by_switch(),
    );
    eprintln!("netlab: 12 probes up in 3 switch rings after {t:?}");

    // 2. Switch 2 down.
    lab.swcore(&["link", "set", "br2", "down"]);
    let cut_at = Instant::now();
    let t = lab.wait(
        "a switch-fault verdict with switch 2 unreachable",
        CUT,
        |l| !l.events_of("switch_fault").is_empty() && l.all(&switch(2), "unreachable"),
    );
    eprintln!("netlab: switch 2 down: verdict, its 4 probes unreachable after {t:?}");
    let faults = lab.events_of("switch_fault");
    assert_eq!(faults.len(), 1, "{faults:?}");
    // The cut lasts 75 s: the time it is down is the scenario, not a wait
    // for something to happen.
    std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));
    assert!(lab.events_of("dead").is_empty(), "{}", lab.report());
    assert_eq!(lab.events_of("switch_fault").len(), 1);
    assert!(lab.all(&switch(2), "unreachable"), "{}", lab.report());

    // 3. Back.
    let marks = lab.log_len();
    lab.swcore(&["link", "set", "br2", "up"]);
    let t = lab.wait("all 12 up after the heal", Duration::from_secs(60), |l| {
        l.all(&everyone, "up")
    });
    eprintln!("netlab: switch 2 back: all 12 up after {t:?}");
    assert!(!lab.events_of("healed").is_empty(), "{}", lab.report());
    std::thread::sleep(MARTIAN_WATCH);
    assert!(lab.events_of("dead").is_empty(), "{}", lab.report());
    assert!(lab.all(&everyone, "up"), "{}", lab.report());
    let repeated = lab.repeated_martians(&marks);
    assert!(repeated.is_empty(), "repeated martians: {repeated:?}");

    // 4. A probe killed inside switch 1: two monitors confirm it.
    let victim = lab
        .probes
        .iter()
        .position(|p| p.name == "s1h2")
        .expect("s1h2");
    let _ = lab.probes[victim].child.kill();
    let _ = lab.probes[victim].child.wait();
    let t = lab.wait("s1h2 confirmed dead", DEAD_PLUS_WINDOW + SLACK, |l| {
        l.events_of("dead")
            .iter()
            .any(|e| e.hostname.as_deref() == Some("s1h2"))
    });
    let dead = lab.events_of("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].detail.contains("TwoMonitors"), "{dead:?}");
    eprintln!("netlab: s1h2 killed: dead by two monitors after {t:?}");

    // 5. Switch 3 loses its uplink only, for a dead time and more.
    let live: Vec<String> = everyone.iter().filter(|n| *n != "s1h2").cloned().collect();
    lab.swcore(&["link", "set", "upb3", "down"]);
    let t = lab.wait("a verdict about switch 3", Duration::from_secs(45), |l| {
        l.events_of("switch_fault").len() >= 2
    });
    eprintln!("netlab: switch 3 uplink down: verdict after {t:?}");
    std::thread::sleep(Duration::from_secs(10));
    lab.swcore(&["link", "set", "upb3", "up"]);
    let t = lab.wait(
        "all 11 up after the uplink heals",
        Duration::from_secs(60),
        |l| l.all(&live, "up"),
    );
    eprintln!("netlab: switch 3 uplink back: all 11 up after {t:?}");
    let dead = lab.events_of("dead");
    assert_eq!(
        dead.len(),
        1,
        "only s1h2 ever dead: {dead:?}\n{}",
        lab.report()
    );

    // 6. s2h3 frozen past the dead time: dead (rightly: silent to all).
    let frozen = lab
        .probes
        .iter()
        .position(|p| p.name == "s2h3")
        .expect("s2h3");
    let pid = nix::unistd::Pid::from_raw(lab.probes[frozen].child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    lab.wait(
        "s2h3 dead while frozen",
        DEAD_PLUS_WINDOW + SLACK + SLACK,
        |l| l.status().get("s2h3").is_some_and(|s| s == "dead"),
    );
    let marks = lab.log_len();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let t = lab.wait("s2h3 up after it resumed", Duration::from_secs(60), |l| {
        l.all(&live, "up")
    });
    eprintln!("netlab: s2h3 frozen, dead, resumed: up again after {t:?}");
    std::thread::sleep(MARTIAN_WATCH);
    assert!(lab.all(&live, "up"), "{}", lab.report());
    let repeated = lab.repeated_martians(&marks);
    assert!(repeated.is_empty(), "repeated martians: {repeated:?}");
    // Its monitors watch it again: killed, it is confirmed dead.
    let _ = lab.probes[frozen].child.kill();
    let _ = lab.probes[frozen].child.wait();
    let t = lab.wait("s2h3 dead again", DEAD_PLUS_WINDOW + SLACK, |l| {
        l.events_of("dead")
            .iter()
            .filter(|e| e.hostname.as_deref() == Some("s2h3"))
            .count()
            == 2
    });
    eprintln!("netlab: s2h3 killed: dead again after {t:?}");
}
