//! Authentication end to end with real, unmodified nanoprobes that hold
//! the CMA's public key (`#CMA#00000.pub` in their crypto.d): they join,
//! everything after their STARTUP is CRYPTCURVE25519 both ways (read back
//! from a capture with `cma decode --pcap --keys`), forged source
//! addresses (raw sockets) change nothing, and after the CMA is SIGKILLed
//! and restarted a kill is confirmed by two monitors and a clean shutdown
//! completes.
//!
//! The probes are a build of their own (target/nanoprobe-keys): the key
//! directory is compiled into the nanoprobe, and the other real-nanoprobe
//! tests need probes without the CMA's key. A second test does the
//! forgeries of the strangers issue with keys off (a trusted network):
//! sessions cannot be taken over and two forged monitors cannot kill.
//! The two take turns (one lock). Needs root; without it, or without
//! ../shared/nanoprobe, each says in one line that it was skipped.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use cma::classify::{EncodeOptions, Message, ReqId, Startup, encode};
use common::lab::{Lab, count};
use common::{forge_udp, in_netns, is_root, metric, nanoprobe_in};

const CMA_TOML: &str = "[heartbeat]\ninterval_ms = 1000\nwarn_ms = 2000\ndead_ms = 3000\n\
[reliable]\nretransmit_ms = 500\n[store]\ncheckpoint_ms = 200\n\
[metrics]\nlisten = \"127.0.0.1:9184\"\n";
const METRICS: &str = "127.0.0.1:9184";
const DEADLINE: Duration = Duration::from_secs(60);
/// Dead time 3 s + the second monitor's window 2 s, and slack.
const DEATH: Duration = Duration::from_secs(8);
const CMA: &str = "127.0.0.1:1984";

/// tcpdump on the namespace's loopback, stopped (and flushed) on drop.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &str, file: PathBuf) -> Option<Capture> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "lo", "-U", "-n"])
            .args(["--immediate-mode", "-w"])
            .arg(&file)
            .args(["udp", "port", "1984"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(file.with_extension("log")).ok()?)
            .spawn()
            .ok()?;
        // tcpdump creates the file once it listens.
        let t0 = Instant::now();
        while !file.exists() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        file.exists().then_some(Capture { child, file })
    }

    /// The FrameSets between the CMA and the probes captured so far.
    fn decode(&self, keys: &Path) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_cma"))
            .args(["decode", "--pcap"])
            .arg(&self.file)
            .arg("--keys")
            .arg(keys)
            .output()
            .expect("cma decode");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["source"]["src"] == CMA || v["source"]["dst"] == CMA)
            .collect()
    }

    /// Waits until at least `min` FrameSets between the CMA and the probes
    /// are in the file (tcpdump writes each as it comes), stops it, and
    /// returns them all.
    fn stop_and_decode(mut self, keys: &Path, min: usize) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        while self.decode(keys).len() < min && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        self.decode(keys)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every FrameSet between the CMA and a probe but STARTUP (and the
/// unsequenced, none of which pass between them) is encrypted: by the
/// CMA's key one way, the probe's the other. Returns (to probes, to CMA).
fn assert_all_encrypted(frames: &[serde_json::Value]) -> (usize, usize) {
    let (mut down, mut up) = (0, 0);
    for v in frames {
        let fstype = v["fstype"].as_u64().unwrap_or(0);
        if fstype < 16 {
            assert_eq!(v["fstype_name"], "STARTUP", "clear text: {v}");
            continue;
        }
        assert_eq!(v["verdict"], "accepted", "{v}");
        let key = v["decrypted"]["sender_key"].as_str().unwrap_or("");
        if v["source"]["src"] == CMA {
            assert_eq!(key, "#CMA#00000", "{v}");
            down += 1;
        } else {
            assert!(key.starts_with("kp") && key.contains("@@"), "{v}");
            up += 1;
        }
    }
    (down, up)
}

fn wire(m: &Message<'_>, reqid: Option<ReqId>) -> Vec<u8> {
    let mut w = Vec::new();
    encode(m, reqid, &EncodeOptions::default(), &mut w).expect("encodes");
    w
}

/// The next REQID a forger would use for `peer`'s sequenced FrameSets
/// (`acks`: for its ACKs, the CMA's session), read off the CMA's log as
/// an eavesdropper reads it off the wire.
fn next_reqid(data: &Path, peer: &str, acks: bool) -> ReqId {
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["wal", "dump", "--decode"])
        .arg(data.join("wal"))
        .output()
        .expect("cma wal dump");
    let mut best = ReqId::default();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(j) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let Some(f) = j["framesets"].get(0) else {
            continue;
        };
        if j["peer"] != peer || (f["fstype_name"] == "ACK") != acks {
            continue;
        }
        let r = &f["reqid"];
        let (Some(session), Some(request)) = (r["session"].as_u64(), r["request"].as_u64()) else {
            continue;
        };
        best = best.max(ReqId {
            session: session as u32,
            request,
            queue: 0,
        });
    }
    ReqId {
        request: best.request + 1,
        ..best
    }
}

/// Starts the CMA and three probes at 127.79.0.1-3; waits until all are
/// up in one ring.
fn start_three(lab: &mut Lab, names: [&str; 3]) {
    lab.start_cma();
    for (i, n) in names.iter().enumerate() {
        lab.start_probe(n, &format!("127.79.0.{}", i + 1));
    }
    lab.wait("three probes up", DEADLINE, |l| l.all_up(&names));
    lab.wait("their ring", DEADLINE, |l| {
        l.rings()
            .iter()
            .any(|(g, m)| g.contains("127.79.0.0/24") && m.len() == 3)
    });
}

/// The two tests take turns: each runs a CMA and probes on two cores.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn at(a: &str) -> SocketAddrV4 {
    a.parse().expect("an IPv4 address and port")
}

#[test]
fn keyed_nanoprobes_encrypt_everything_and_forged_sources_change_nothing() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    if !is_root() {
        return common::skip(
            "keyed real-nanoprobe test",
            "needs root (namespaces, raw sockets)",
        );
    }
    let np = match nanoprobe_in("nanoprobe-keys") {
        Ok(p) => p,
        Err(why) => return common::skip("keyed real-nanoprobe test", &why),
    };
    let crypto_d = np
        .parent()
        .and_then(Path::parent)
        .expect("OUT/build/nanoprobe")
        .join("share/assimilation/crypto.d");
    let mut lab = match Lab::new(np, "keys", CMA_TOML) {
        Ok(l) => l,
        Err(why) => {
            return common::skip(
                "keyed real-nanoprobe test",
                &format!("cannot make a network namespace: {why}"),
            );
        }
    };
    // The CMA's key pair; its public half into the probes' crypto.d (and
    // nothing else from earlier runs: the probes make their own keys).
    let keys = lab.data().join("keys");
    let made = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["keys", "--dir"])
        .arg(&keys)
        .arg("init")
        .output()
        .expect("cma keys init");
    assert!(made.status.success(), "{made:?}");
    let _ = std::fs::remove_dir_all(&crypto_d);
    std::fs::create_dir_all(&crypto_d).unwrap();
    std::fs::copy(keys.join("#CMA#00000.pub"), crypto_d.join("#CMA#00000.pub")).unwrap();

    let capture = Capture::start(&lab.ns, lab.dir.path().join("join.pcap"));
    if capture.is_none() {
        common::skip("the capture of the keyed test", "no tcpdump");
    }
    let names = ["kp1", "kp2", "kp3"];
    start_three(&mut lab, names);
    // Trusted on first use: each probe's key is in the CMA's directory.
    for n in names {
        let found = std::fs::read_dir(&keys)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{n}@@"))
            });
        assert!(found, "no key saved for {n}");
    }
    if let Some(c) = capture {
        let frames = c.stop_and_decode(&keys, 12);
        let (down, up) = assert_all_encrypted(&frames);
        assert!(down >= 6 && up >= 6, "to probes {down}, to the CMA {up}");
        eprintln!("joins: {down} FrameSets to the probes and {up} to the CMA, all encrypted");
    }

    // Forgeries from the probes' own addresses, in clear text (as anyone
    // can send them) through a raw socket in the namespace.
    let (a1, a2, a3) = (
        at("127.79.0.1:1984"),
        at("127.79.0.2:1984"),
        at("127.79.0.3:1984"),
    );
    let cma = at(CMA);
    // Each with the sender's own session and next request ids, as one who
    // watches the wire would forge them.
    let data = lab.data();
    let (n1, n2, n3) = (
        next_reqid(&data, "127.79.0.1:1984", false),
        next_reqid(&data, "127.79.0.2:1984", false),
        next_reqid(&data, "127.79.0.3:1984", false),
    );
    let ack1 = next_reqid(&data, "127.79.0.1:1984", true);
    let plus = |r: ReqId, k: u64| {
        Some(ReqId {
            request: r.request + k,
            ..r
        })
    };
    let kp1_key = std::fs::read_dir(&keys)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|f| f.starts_with("kp1@@") && f.ends_with(".pub"))
        .unwrap();
    let kp1_id = kp1_key.trim_end_matches(".pub").to_string();
    let kp1_pub: [u8; 32] = std::fs::read(keys.join(&kp1_key))
        .unwrap()
        .try_into()
        .unwrap();
    let (intruder_pub, _) = cma::crypt::generate_keypair();
    let intruder_id = cma::crypt::nanoprobe_key_id("intruder", &intruder_pub);
    let received = || in_netns(&lab.ns, || metric(METRICS, "cma_received_total"));
    let before = received();
    let mut sent = 0u64;
    in_netns(&lab.ns, || {
        let send = |from, w: &[u8]| forge_udp(from, cma, w).expect("a raw socket (root)");
        for k in 0..3 {
            // Both of kp1's monitors say it is dead.
            send(a2, &wire(&Message::HbDead { peer: a1.into() }, plus(n2, k)));
            send(a3, &wire(&Message::HbDead { peer: a1.into() }, plus(n3, k)));
            sent += 2;
            std::thread::sleep(Duration::from_millis(300));
        }
        send(
            a1,
            &wire(&Message::HbShutdown { hostname: "kp1" }, plus(n1, 0)),
        );
        send(a1, &wire(&Message::ConnShut, plus(n1, 1)));
        sent += 2;
        for k in 0..5 {
            send(a1, &wire(&Message::Ack, plus(ack1, k)));
            sent += 1;
        }
        let net = "{}";
        // kp1's name and key from another address, and a new host with a
        // key of its own from kp1's address.
        send(
            at("127.79.0.9:1984"),
            &wire(
                &Message::Startup(Startup {
                    hostname: "kp1",
                    listen: "127.79.0.9:1984".parse().unwrap(),
                    wallclock_us: 0xbad,
                    netconfig: net,
                    key: Some((&kp1_id, &kp1_pub)),
                    features: None,
                }),
                None,
            ),
        );
        send(
            a1,
            &wire(
                &Message::Startup(Startup {
                    hostname: "intruder",
                    listen: a1.into(),
                    wallclock_us: 0xbad,
                    netconfig: net,
                    key: Some((&intruder_id, &intruder_pub)),
                    features: None,
                }),
                None,
            ),
        );
    });
    lab.wait("the forgeries received", DEADLINE, |_| {
        received() >= before + sent + 2
    });
    // Long enough for a death (dead time + window) or a contest to act.
    std::thread::sleep(DEATH);
    let status = lab.status();
    assert_eq!(
        status.get("kp1"),
        Some(&("up".to_string(), "127.79.0.1:1984".to_string())),
        "{}",
        lab.report()
    );
    assert!(!status.contains_key("intruder"), "{}", lab.report());
    let bad: Vec<_> = lab
        .events()
        .into_iter()
        .filter(|e| ["dead", "left", "restarted", "moved", "suspected"].contains(&e.kind.as_str()))
        .collect();
    assert!(bad.is_empty(), "{bad:?}\n{}", lab.report());
    assert!(lab.all_up(&names), "{}", lab.report());
    let refused = in_netns(&lab.ns, || metric(METRICS, "cma_auth_unencrypted_total"));
    assert!(refused >= sent, "{refused} of {sent} forgeries refused");

    // The CMA is SIGKILLed and restarts: keys and bindings come back
    // from its directory and checkpoint.
    lab.kill_cma();
    lab.start_cma();
    lab.wait("the CMA back", DEADLINE, |l| {
        in_netns(&l.ns, || metric(METRICS, "cma_healthy")) == 1
    });

    // The real thing still works: a kill, confirmed by both monitors
    // (their reports encrypted), and a clean shutdown.
    let capture = Capture::start(&lab.ns, lab.dir.path().join("leave.pcap"));
    let kp2 = lab.probe("kp2");
    lab.signal(kp2, nix::sys::signal::Signal::SIGKILL);
    lab.wait("kp2 dead", DEATH + Duration::from_secs(5), |l| {
        l.status().get("kp2").is_some_and(|s| s.0 == "dead")
    });
    let death = lab
        .events()
        .into_iter()
        .find(|e| e.kind == "dead")
        .expect("a dead event");
    assert!(death.detail.contains("TwoMonitors"), "{death:?}");
    let kp3 = lab.probe("kp3");
    lab.signal(kp3, nix::sys::signal::Signal::SIGTERM);
    lab.wait("kp3 left", DEADLINE, |l| {
        l.status().get("kp3").is_some_and(|s| s.0 == "left")
    });
    let t0 = Instant::now();
    while lab.probes[kp3].child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < DEADLINE, "kp3 did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab.log(kp3);
    assert!(log.contains("Received a CONNSHUT"), "{log}");
    assert_eq!(count(&log, "A_ACKME"), 0, "{log}");
    for i in 0..lab.probes.len() {
        let log = lab.log(i);
        for bad in ["could not decrypt", "Discarded"] {
            assert_eq!(count(&log, bad), 0, "{}: {log}", lab.probes[i].name);
        }
    }
    if let Some(c) = capture {
        let frames = c.stop_and_decode(&keys, 4);
        let (down, up) = assert_all_encrypted(&frames);
        assert!(up >= 2 && down >= 2, "to probes {down}, to the CMA {up}");
        eprintln!(
            "a death and a shutdown: {down} FrameSets to the probes and {up} to the CMA, all encrypted"
        );
    }
}

#[test]
fn without_keys_forged_sources_cannot_take_sessions_kill_or_move_nodes() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    if !is_root() {
        return common::skip(
            "forged-source real-nanoprobe test",
            "needs root (namespaces, raw sockets)",
        );
    }
    let np = match common::nanoprobe() {
        Ok(p) => p,
        Err(why) => return common::skip("forged-source real-nanoprobe test", &why),
    };
    let mut lab = match Lab::new(np, "forge", CMA_TOML) {
        Ok(l) => l,
        Err(why) => {
            return common::skip(
                "forged-source real-nanoprobe test",
                &format!("cannot make a network namespace: {why}"),
            );
        }
    };
    let names = ["fp1", "fp2", "fp3"];
    start_three(&mut lab, names);
    // Sessions are pinned once a connection is open: each probe has sent
    // its first sequenced FrameSet (its OS discovery). Before that, the
    // first session seen from a registered address is adopted, whoever
    // sends it (keys close that window; see the README).
    let data = lab.data();
    lab.wait("every probe's connection open", DEADLINE, |_| {
        (1..=3).all(|i| next_reqid(&data, &format!("127.79.0.{i}:1984"), false).session != 0)
    });
    let (a1, a2, a3) = (
        at("127.79.0.1:1984"),
        at("127.79.0.2:1984"),
        at("127.79.0.3:1984"),
    );
    let cma = at(CMA);
    let received = || in_netns(&lab.ns, || metric(METRICS, "cma_received_total"));
    let before = received();
    let mut sent = 0u64;
    in_netns(&lab.ns, || {
        let send = |from, w: &[u8]| forge_udp(from, cma, w).expect("a raw socket (root)");
        let stolen = |request| {
            Some(ReqId {
                session: 0xfeed_0000,
                request,
                queue: 0,
            })
        };
        // Three HBDEADs about fp1 from each of its neighbours' addresses
        // under a new session: were it adopted, their real reports would
        // be dropped from then on and fp1 never declared dead.
        for k in 1..=3 {
            send(a2, &wire(&Message::HbDead { peer: a1.into() }, stolen(k)));
            send(a3, &wire(&Message::HbDead { peer: a1.into() }, stolen(k)));
            sent += 2;
        }
        send(
            a1,
            &wire(&Message::HbShutdown { hostname: "fp1" }, stolen(1)),
        );
        send(a1, &wire(&Message::ConnShut, stolen(2)));
        // fp1's name from another address.
        send(
            at("127.79.0.9:1984"),
            &wire(
                &Message::Startup(Startup {
                    hostname: "fp1",
                    listen: "127.79.0.9:1984".parse().unwrap(),
                    wallclock_us: 0xbad,
                    netconfig: "{}",
                    key: None,
                    features: None,
                }),
                None,
            ),
        );
        sent += 3;
    });
    lab.wait("the forgeries received", DEADLINE, |_| {
        received() >= before + sent
    });
    // Long enough for a death or a move to happen.
    std::thread::sleep(DEATH);
    let status = lab.status();
    assert_eq!(
        status.get("fp1"),
        Some(&("up".to_string(), "127.79.0.1:1984".to_string())),
        "{}",
        lab.report()
    );
    let refused = in_netns(&lab.ns, || metric(METRICS, "cma_unknown_session_total"));
    assert!(
        refused >= 8,
        "{refused} forgeries under a new session refused\n{}",
        lab.report()
    );
    // Its neighbours' real reports are still heard: killed, fp1 is dead
    // by both monitors. Meanwhile ACKs forged from its address (under a
    // session of the forger's) answer neither its probe nor anything sent
    // to it.
    let fp1 = lab.probe("fp1");
    lab.signal(fp1, nix::sys::signal::Signal::SIGKILL);
    in_netns(&lab.ns, || {
        for k in 1..=20 {
            let ack = wire(
                &Message::Ack,
                Some(ReqId {
                    session: 0xfeed_0000,
                    request: k,
                    queue: 0,
                }),
            );
            forge_udp(a1, cma, &ack).expect("a raw socket (root)");
        }
    });
    lab.wait("fp1 dead", DEATH + Duration::from_secs(5), |l| {
        l.status().get("fp1").is_some_and(|s| s.0 == "dead")
    });
    let events = lab.events();
    let death = events
        .iter()
        .find(|e| e.kind == "dead")
        .expect("a dead event");
    assert!(death.detail.contains("TwoMonitors"), "{death:?}");
    let moved: Vec<_> = events
        .iter()
        .filter(|e| ["left", "restarted", "moved"].contains(&e.kind.as_str()))
        .collect();
    assert!(moved.is_empty(), "{moved:?}");
}
