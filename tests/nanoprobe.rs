//! End to end with real, unmodified Assimilation nanoprobes (the C client,
//! built from `../shared/nanoprobe` by its `build.sh`, or the binary named
//! by `NANOPROBE`), each under its own host name, and `cma run`, all inside
//! a network namespace this test makes (loopback only, nothing leaves it).
//!
//! One scenario, in order: six probes in two subnets join (their STARTUPs
//! are over 2 KB: the namespace has a dozen interfaces); a group of four
//! shrinks to three, a representative steps down and no survivor logs
//! "unexpected heartbeats" twice; the stepped-down representative is
//! killed and confirmed dead by two monitors within dead time + window; a
//! SIGTERMed probe is `left` and its protocol machine logs no error; the
//! CMA SIGKILLed and restarted changes nothing in the probes' logs; a
//! second live host with a probe's name gives one `conflict` event and no
//! flapping.
//!
//! Needs root (network and UTS namespaces) and the nanoprobe; without them
//! it prints one line saying it was skipped, and why.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::lab::{Lab, count};

use common::{is_root, nanoprobe};

/// Dead time 3 s + the second monitor's window max(2 heartbeats,
/// retransmit + 1 s) = 2 s (DESIGN.md rule 6).
const DEAD_PLUS_WINDOW: Duration = Duration::from_secs(5);
/// Slack for the store to show it (checkpoint 200 ms) and our polling.
const SLACK: Duration = Duration::from_secs(3);
/// Generous bound for joins, exits and restarts.
const DEADLINE: Duration = Duration::from_secs(60);
/// A nanoprobe repeats "unexpected heartbeats" (HBMARTIAN) every 10 s.
const MARTIAN_PERIOD: Duration = Duration::from_secs(12);

const CMA_TOML: &str = "[heartbeat]\ninterval_ms = 1000\nwarn_ms = 2000\ndead_ms = 3000\n\
[reliable]\nretransmit_ms = 500\n[store]\ncheckpoint_ms = 200\n[metrics]\nlisten = \"\"\n";

/// Lines a probe writes when the CMA tells it something about heartbeats,
/// or when something is wrong: none may appear after a CMA restart.
const INSTRUCTION_MARKS: [&str; 6] = [
    "hbsender_new",
    "hblistener_new",
    "hbsender_stopsend",
    "hblistener_unlisten",
    "unexpected heartbeats",
    "A_ACKME",
];

#[test]
fn real_nanoprobes_join_are_watched_leave_and_survive_a_cma_restart() {
    if !is_root() {
        return common::skip(
            "real-nanoprobe tests",
            "needs root (network and UTS namespaces)",
        );
    }
    let np = match nanoprobe() {
        Ok(p) => p,
        Err(why) => return common::skip("real-nanoprobe tests", &why),
    };
    let mut lab = match Lab::new(np, "np", CMA_TOML) {
        Ok(l) => l,
        Err(why) => {
            return common::skip(
                "real-nanoprobe tests",
                &format!("cannot make a network namespace: {why}"),
            );
        }
    };
    lab.start_cma();
    let group_a = ["np1", "np2", "np3", "np4"];
    for (i, n) in group_a.iter().enumerate() {
        lab.start_probe(n, &format!("127.79.0.{}", i + 1));
    }
    lab.start_probe("nq1", "127.79.1.1");
    lab.start_probe("nq2", "127.79.1.2");
    let everyone = ["np1", "np2", "np3", "np4", "nq1", "nq2"];
    lab.wait("six probes up", DEADLINE, |l| l.all_up(&everyone));
    lab.wait("two groups and a top ring", DEADLINE, |l| {
        let r = l.rings();
        r.iter()
            .any(|(g, m)| g.contains("127.79.0.0/24") && m.len() == 4)
            && r.iter()
                .any(|(g, m)| g.contains("127.79.1.0/24") && m.len() == 2)
            && l.top().len() == 3
    });

    // Their STARTUPs were over 2 KB, and they joined: received whole.
    let dump = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["wal", "dump", "--decode"])
        .arg(lab.data().join("wal"))
        .output()
        .expect("cma wal dump");
    let biggest = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["framesets"][0]["fstype_name"] == "STARTUP")
        .filter_map(|j| j["len"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(biggest > 2048, "largest STARTUP logged: {biggest} bytes");

    // Group A (four, two representatives) shrinks to three: kill a member
    // that is no representative; one representative steps down.
    let reps_before: Vec<String> = lab
        .top()
        .into_iter()
        .filter(|h| h.starts_with("np"))
        .collect();
    assert_eq!(reps_before.len(), 2, "{}", lab.report());
    let victim = group_a
        .iter()
        .find(|n| !reps_before.iter().any(|r| r == *n))
        .unwrap()
        .to_string();
    lab.signal(lab.probe(&victim), nix::sys::signal::Signal::SIGKILL);
    lab.wait("the first victim dead", DEADLINE, |l| {
        l.status().get(&victim).is_some_and(|s| s.0 == "dead")
    });
    lab.wait("a representative stepping down", DEADLINE, |l| {
        l.top().iter().filter(|h| h.starts_with("np")).count() == 1
    });
    let top = lab.top();
    let stepped = reps_before
        .iter()
        .find(|r| !top.contains(r))
        .unwrap()
        .clone();
    // No survivor hears heartbeats it does not expect (a sender left
    // behind by a doubled edge), however long we look.
    let t0 = Instant::now();
    while t0.elapsed() < MARTIAN_PERIOD {
        for (i, p) in lab.probes.iter().enumerate() {
            let n = count(&lab.log(i), "unexpected heartbeats");
            assert!(n < 2, "{} logged unexpected heartbeats {n} times", p.name);
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The stepped-down representative dies: both its monitors report it.
    let killed = Instant::now();
    lab.signal(lab.probe(&stepped), nix::sys::signal::Signal::SIGKILL);
    lab.wait(
        "the former representative dead",
        DEAD_PLUS_WINDOW + SLACK,
        |l| l.status().get(&stepped).is_some_and(|s| s.0 == "dead"),
    );
    let death = lab
        .events()
        .into_iter()
        .rev()
        .find(|e| e.kind == "dead" && e.hostname.as_deref() == Some(&stepped))
        .expect("a dead event");
    assert!(
        death.detail.contains("TwoMonitors"),
        "{} died by {} after {:?}",
        stepped,
        death.detail,
        killed.elapsed()
    );
    eprintln!(
        "former representative {stepped} confirmed dead by two monitors, seen {:?} after the kill",
        killed.elapsed()
    );

    // A clean shutdown: HBSHUTDOWN, CONNSHUT both ways, exit; `left`, and
    // its protocol machine complains of nothing.
    let nq2 = lab.probe("nq2");
    lab.signal(nq2, nix::sys::signal::Signal::SIGTERM);
    lab.wait("nq2 left", DEADLINE, |l| {
        l.status().get("nq2").is_some_and(|s| s.0 == "left")
    });
    let t0 = Instant::now();
    while lab.probes[nq2].child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < DEADLINE, "nq2 did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab.log(nq2);
    assert!(log.contains("Received a CONNSHUT"), "{log}");
    assert_eq!(count(&log, "A_ACKME"), 0, "{log}");

    // The CMA dies (SIGKILL) and comes back: the probes see nothing.
    let live: Vec<usize> = lab
        .probes
        .iter()
        .enumerate()
        .filter(|(_, p)| ![victim.as_str(), stepped.as_str(), "nq2"].contains(&p.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    let before: Vec<usize> = live.iter().map(|&i| lab.log(i).len()).collect();
    lab.kill_cma();
    lab.start_cma();
    let t0 = Instant::now();
    while t0.elapsed() < MARTIAN_PERIOD {
        std::thread::sleep(Duration::from_millis(500));
    }
    for (k, &i) in live.iter().enumerate() {
        let log = lab.log(i);
        let new = &log[before[k]..];
        for m in INSTRUCTION_MARKS {
            assert!(
                !new.contains(m),
                "{} logged {m:?} after the CMA restarted:\n{new}",
                lab.probes[i].name
            );
        }
    }
    let survivors: Vec<&str> = live.iter().map(|&i| lab.probes[i].name.as_str()).collect();
    lab.wait("survivors up after the restart", DEADLINE, |l| {
        l.all_up(&survivors)
    });

    // A second live host named like a live probe: one conflict, the node
    // stays where it is, no flapping.
    let twin_of = survivors
        .iter()
        .find(|n| n.starts_with("np"))
        .unwrap()
        .to_string();
    let home = lab.status()[&twin_of].1.clone();
    lab.start_probe(&twin_of, "127.79.0.9");
    lab.wait("a conflict event", DEADLINE, |l| {
        l.events().iter().any(|e| e.kind == "conflict")
    });
    let t0 = Instant::now();
    while t0.elapsed() < MARTIAN_PERIOD {
        std::thread::sleep(Duration::from_millis(500));
    }
    let events = lab.events();
    // Every event carries UTC wall-clock time, in order across the CMA's
    // restart.
    assert!(events.iter().all(|e| e.utc.is_some()), "{events:?}");
    assert!(
        events.windows(2).all(|w| w[0].wall_ms <= w[1].wall_ms),
        "{events:?}"
    );
    let conflicts = events.iter().filter(|e| e.kind == "conflict").count();
    let restarts = events
        .iter()
        .filter(|e| e.kind == "restarted" && e.hostname.as_deref() == Some(&twin_of))
        .count();
    assert_eq!(conflicts, 1, "{}", lab.report());
    assert_eq!(restarts, 0, "{}", lab.report());
    let now = lab.status()[&twin_of].clone();
    assert_eq!(now, ("up".to_string(), home), "{}", lab.report());
}
