//! The daemon end to end on loopback: scripted agents built from the
//! encoder talk to `Daemon` threads bound to 127.0.0.1:0.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cma::classify::{
    EncodeOptions, FrameSetType, Logged, Message, ReqId, Startup, classify, encode,
};
use cma::config::Config;
use cma::engine::daemon::{Daemon, DaemonError, StopHandle};
use cma::store::Store;
use cma::wal::{RecordKind, RecordMeta, Wal, WalConfig, for_each_record};

use super::support::encoded;

const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn config(dir: &Path) -> Config {
    let mut c = Config::from_toml(
        "listen = [\"127.0.0.1:0\"]\n\
         [wal]\nsegment_mib = 1\n\
         [reliable]\nretransmit_ms = 300\n\
         [store]\ncheckpoint_ms = 200\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    c.data_dir = dir.to_path_buf();
    c
}

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) stop: StopHandle,
    pub(crate) thread: JoinHandle<Result<(), DaemonError>>,
}

fn start(dir: &Path) -> Running {
    start_with(config(dir))
}

pub(crate) fn start_with(c: Config) -> Running {
    let d = Daemon::start(c, false).expect("daemon starts");
    let addr = d.local_addrs()[0];
    let metrics = d.metrics_addr();
    let stop = d.stop_handle();
    let thread = std::thread::spawn(move || d.run());
    Running {
        addr,
        metrics,
        stop,
        thread,
    }
}

impl Running {
    pub(crate) fn finish(self) {
        self.stop.stop();
        self.thread
            .join()
            .expect("daemon thread")
            .expect("clean stop");
    }
}

/// What an agent received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    fstype: u16,
    reqid: Option<ReqId>,
    peers: Vec<SocketAddr>,
}

/// A scripted agent: a socket, a session, counted heartbeat instructions.
struct Agent {
    sock: UdpSocket,
    cma: SocketAddr,
    name: String,
    session: u32,
    next: u64,
    got: Vec<Got>,
    /// peer -> heartbeats (each SENDEXPECTHB adds, each STOP removes).
    hb: BTreeMap<SocketAddr, i32>,
    /// Obey and ACK instructions.
    obey: bool,
    last_delivered: u64,
    /// Reports not yet ACKed, oldest first, and when they were last sent.
    unacked: Vec<(ReqId, Vec<u8>)>,
    last_resend: Instant,
    /// Reports the CMA ACKed.
    acked: Vec<ReqId>,
    /// STARTUP's WALLCLOCK (the process's start).
    wallclock: u64,
}

impl Agent {
    fn new(cma: SocketAddr, name: &str) -> Agent {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Agent {
            sock,
            cma,
            name: name.into(),
            session: 1000,
            next: 1,
            got: Vec::new(),
            hb: BTreeMap::new(),
            obey: true,
            last_delivered: 0,
            unacked: Vec::new(),
            last_resend: Instant::now(),
            acked: Vec::new(),
            wallclock: 1,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn startup(&self) {
        let me = self.addr();
        let net = r#"{"data":{"lo":{"ipaddrs":{"127.0.0.1/8":{}}}}}"#;
        let m = Message::Startup(Startup {
            hostname: &self.name,
            listen: me,
            wallclock_us: self.wallclock,
            netconfig: net,
            key: None,
            features: None,
        });
        self.sock.send_to(&encoded(&m, None), self.cma).unwrap();
    }

    /// Sends a sequenced report; returns its REQID.
    fn report(&mut self, m: &Message<'_>) -> ReqId {
        let r = ReqId {
            session: self.session,
            request: self.next,
            queue: 0,
        };
        self.next += 1;
        let bytes = encoded(m, Some(r));
        self.sock.send_to(&bytes, self.cma).unwrap();
        self.unacked.push((r, bytes));
        r
    }

    fn resend(&self, m: &Message<'_>, r: ReqId) {
        self.sock.send_to(&encoded(m, Some(r)), self.cma).unwrap();
    }

    /// Reads what arrives for a while, obeying and ACKing instructions.
    fn pump(&mut self) -> usize {
        let mut buf = [0u8; 65536];
        let mut n = 0;
        while let Ok((len, _)) = self.sock.recv_from(&mut buf) {
            n += 1;
            let c = classify(&buf[..len]).expect("the CMA sends valid FrameSets");
            let m = c.message().expect("and well-formed ones");
            let mut peers = Vec::new();
            match &m {
                Message::Heartbeats { peers: p, .. } | Message::StopHeartbeats { peers: p, .. } => {
                    peers = p.iter().collect()
                }
                _ => {}
            }
            self.got.push(Got {
                fstype: c.fstype,
                reqid: c.reqid,
                peers: peers.clone(),
            });
            let Some(r) = c.reqid else { continue };
            if c.fstype == FrameSetType::Ack.to_wire() {
                // Cumulative.
                let (done, rest): (Vec<_>, Vec<_>) = self
                    .unacked
                    .drain(..)
                    .partition(|(u, _)| u.session == r.session && u.request <= r.request);
                self.acked.extend(done.into_iter().map(|d| d.0));
                self.unacked = rest;
                continue;
            }
            if !self.obey {
                continue;
            }
            // Obey once (a duplicate is only ACKed again), as a nanoprobe.
            if r.request > self.last_delivered {
                self.last_delivered = r.request;
                let d = match c.fstype {
                    t if t == FrameSetType::SendExpectHb.to_wire() => 1,
                    t if t == FrameSetType::StopSendExpectHb.to_wire() => -1,
                    _ => 0,
                };
                for p in peers {
                    *self.hb.entry(p).or_default() += d;
                }
                self.hb.retain(|_, v| *v != 0);
            }
            let ack = encoded(&Message::Ack, Some(r));
            self.sock.send_to(&ack, self.cma).unwrap();
        }
        if self.last_resend.elapsed() >= Duration::from_millis(200) {
            for (_, b) in &self.unacked {
                self.sock.send_to(b, self.cma).unwrap();
            }
            self.last_resend = Instant::now();
        }
        n
    }

    /// Reads what is already there without waiting.
    fn pump_now(&mut self) {
        self.sock.set_nonblocking(true).unwrap();
        self.pump();
        self.sock.set_nonblocking(false).unwrap();
        self.sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
    }

    fn acks_for(&self, r: ReqId) -> usize {
        self.got
            .iter()
            .filter(|g| g.fstype == FrameSetType::Ack.to_wire() && g.reqid == Some(r))
            .count()
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.hb.keys().copied().collect()
    }
}

/// Pumps every agent until `done` holds (or fails after the deadline).
fn until(agents: &mut [Agent], what: &str, mut done: impl FnMut(&[Agent]) -> bool) {
    let t0 = Instant::now();
    loop {
        for a in agents.iter_mut() {
            a.pump();
        }
        if done(agents) {
            return;
        }
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
    }
}

/// A plain HTTP/1.0 GET.
/// A counter's value from the daemon's metrics (0 when absent).
fn metric(addr: SocketAddr, name: &str) -> u64 {
    http_get(addr, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

fn sorted(mut v: Vec<SocketAddr>) -> Vec<SocketAddr> {
    v.sort();
    v
}

/// Starts agents one by one and waits until each heartbeats its ring
/// neighbours (a ring of all of them: one subnet): as many as the ring
/// gives, and each watched back (an instruction still on its way would
/// leave someone with the old ring's peers).
fn join_all(cma: SocketAddr, n: usize) -> Vec<Agent> {
    let mut agents: Vec<Agent> = Vec::new();
    for i in 0..n {
        agents.push(Agent::new(cma, &format!("agent{i}")));
        agents[i].startup();
        let k = agents.len();
        until(&mut agents, "the ring to settle", |a| {
            a.iter().all(|x| {
                let want = match k {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                };
                let peers = x.peers();
                peers.len() == want
                    && peers.iter().all(|p| {
                        a.iter()
                            .find(|y| y.addr() == *p)
                            .is_some_and(|y| y.peers().contains(&x.addr()))
                    })
            })
        });
    }
    agents
}

#[test]
fn startup_gets_config_ackstartup_and_ring_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 4);
    let first = &agents[0].got;
    assert_eq!(first[0].fstype, FrameSetType::SetConfig.to_wire());
    assert_eq!(first[1].fstype, FrameSetType::AckStartup.to_wire());
    // A ring of 4: each heartbeats exactly its two neighbours, and the
    // relation is symmetric.
    for a in &agents {
        for p in a.peers() {
            let other = agents.iter().find(|x| x.addr() == p).unwrap();
            assert!(other.peers().contains(&a.addr()));
        }
    }
    // A repeated STARTUP gets ACKSTARTUP again and changes nothing.
    let before = agents[1].peers();
    agents[1].startup();
    until(&mut agents, "a second ACKSTARTUP", |a| {
        a[1].got
            .iter()
            .filter(|g| g.fstype == FrameSetType::AckStartup.to_wire())
            .count()
            == 2
    });
    assert_eq!(agents[1].peers(), before);
    // The metrics say so too (the decider publishes twice a second).
    let t0 = Instant::now();
    loop {
        let text = http_get(d.metrics.unwrap(), "/metrics");
        if text.contains("cma_nodes{status=\"up\"} 4") {
            assert!(
                text.contains("cma_datagrams_total{type=\"STARTUP\"} 5"),
                "{text}"
            );
            assert!(text.contains("cma_drops_total{reason="));
            break;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "metrics never showed 4 nodes up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.finish();
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    let nodes = s.nodes().unwrap();
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n.status == "up"));
}

#[test]
fn with_spinning_threads_agents_join_and_the_daemon_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.decider.spin = true;
    let d = start_with(c);
    let agents = join_all(d.addr, 3);
    assert!(agents.iter().all(|a| a.peers().len() == 2));
    d.finish();
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    assert_eq!(s.nodes().unwrap().len(), 3);
}

/// Sequenced FrameSets from an agent's address under a session it did not
/// start (by STARTUP or CONNSHUT) are dropped and counted: a stranger
/// cannot take the connection over, and the agent's own reports go on.
#[test]
fn a_stranger_cannot_take_over_an_agents_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 3);
    let victim = agents[1].addr();
    let late = Message::HbLate {
        peer: victim,
        elapsed_us: 3,
    };
    let r1 = agents[0].report(&late);
    until(&mut agents, "the first ACK", |a| a[0].acks_for(r1) == 1);
    // Three HBDEADs about agent 1 from agent 0's address, a new session.
    let forged: Vec<ReqId> = (1..=3)
        .map(|request| ReqId {
            session: r1.session + 1000,
            request,
            queue: 0,
        })
        .collect();
    for r in &forged {
        agents[0].resend(&Message::HbDead { peer: victim }, *r);
    }
    let t0 = Instant::now();
    while !http_get(metrics, "/metrics").contains("cma_unknown_session_total 3") {
        assert!(
            t0.elapsed() < DEADLINE,
            "the forged FrameSets were not counted"
        );
        agents[0].pump_now();
        std::thread::sleep(Duration::from_millis(20));
    }
    let r2 = agents[0].report(&late);
    until(&mut agents, "the agent's next ACK", |a| {
        a[0].acks_for(r2) == 1
    });
    assert!(forged.iter().all(|r| agents[0].acks_for(*r) == 0));
    d.finish();
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    let about_victim: Vec<String> = s
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.hostname.as_deref() == Some(agents[1].name.as_str()))
        .map(|e| e.kind)
        .collect::<Vec<_>>();
    assert_eq!(
        about_victim,
        ["joined", "late", "late"],
        "only the agent's own reports were decided"
    );
}

/// Both monitors of a live agent report it dead in the same instant (what
/// their forged source addresses would look like to the CMA: rule 9). The
/// agent answers the probe sent at the first report, so it stays up; the
/// same reports about an agent that does not answer make it dead.
#[test]
fn two_monitors_alone_cannot_kill_an_agent_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 3);
    let victim = agents[1].addr();
    let r0 = agents[0].report(&Message::HbDead { peer: victim });
    let r2 = agents[2].report(&Message::HbDead { peer: victim });
    let db = dir.path().join("cma.sqlite");
    let kinds_about = |name: &str| -> Vec<String> {
        Store::open_read_only(&db)
            .and_then(|s| s.events(0, 1000))
            .map(|ev| {
                ev.into_iter()
                    .filter(|e| e.hostname.as_deref() == Some(name))
                    .map(|e| e.kind)
                    .collect()
            })
            .unwrap_or_default()
    };
    let name = agents[1].name.clone();
    until(&mut agents, "the probe's answer decided", |a| {
        a[0].acks_for(r0) == 1
            && a[2].acks_for(r2) == 1
            && kinds_about(&name)
                .iter()
                .any(|k| k == "path_fault" || k == "false_alarm")
    });
    // Up again (no timer of it runs), and it never was dead.
    assert!(!kinds_about(&name).iter().any(|k| k == "dead"));
    // Agent 2 stops answering (its process frozen): the same two reports
    // now make it dead.
    let frozen = agents.remove(1);
    let victim_name = frozen.name.clone();
    let r0 = agents[0].report(&Message::HbDead { peer: victim });
    let r2 = agents[1].report(&Message::HbDead { peer: victim });
    until(&mut agents, "the silent agent declared dead", |a| {
        a[0].acks_for(r0) == 1
            && a[1].acks_for(r2) == 1
            && kinds_about(&victim_name).iter().any(|k| k == "dead")
    });
    drop(frozen);
    d.finish();
}

/// Compressed FrameSets are inflated only within their source network's
/// budget (`limits.inflate_*`): past it they are dropped before inflation
/// and counted; what fit was logged and ACKed.
#[test]
fn compressed_floods_are_dropped_uninflated_past_their_networks_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.inflate_bytes_per_s = 1;
    c.limits.inflate_burst_bytes = 4 << 20;
    let d = start_with(c);
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 1);
    // 700 KB of JSON that compresses to about a kilobyte.
    let big = format!("{{\"data\":\"{}\"}}", "a".repeat(700_000));
    let m = Message::JsDiscovery {
        wallclock_us: None,
        json: &big,
    };
    assert!(encoded(&m, None).len() < 8192, "sent compressed");
    let fit: Vec<ReqId> = (0..5).map(|_| agents[0].report(&m)).collect();
    until(&mut agents, "five inflated and ACKed", |a| {
        fit.iter().all(|r| a[0].acks_for(*r) == 1)
    });
    // A sixth passes the 4 MiB budget: dropped uninflated, counted.
    let over = agents[0].report(&m);
    let t0 = Instant::now();
    loop {
        let text = http_get(metrics, "/metrics");
        let limited = text
            .lines()
            .find_map(|l| l.strip_prefix("cma_inflate_limited_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if limited >= 1 {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "the sixth was not limited");
        agents[0].pump_now();
    }
    agents[0].pump_now();
    assert_eq!(agents[0].acks_for(over), 0);
    d.finish();
}

/// A large compressed FrameSet is classified off the log thread, and what
/// its source sends right behind it follows it there: both are logged and
/// ACKed in order (none dropped as out of order, which would cost the
/// sender a retransmission), and another agent's report is ACKed too.
#[test]
fn a_large_inflation_keeps_its_sources_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.wal.segment_mib = 8;
    let d = start_with(c);
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 2);
    let late = Message::HbLate {
        peer: agents[1].addr(),
        elapsed_us: 1,
    };
    let first = agents[0].report(&late);
    until(&mut agents, "a first report ACKed", |a| {
        a[0].acks_for(first) == 1
    });
    // 3 MB of JSON, a few kilobytes on the wire.
    let big = format!("{{\"data\":\"{}\"}}", "a".repeat(3_000_000));
    let m = Message::JsDiscovery {
        wallclock_us: None,
        json: &big,
    };
    let large = agents[0].report(&m);
    let behind = agents[0].report(&late);
    let a0 = agents[0].addr();
    let other = agents[1].report(&Message::HbLate {
        peer: a0,
        elapsed_us: 1,
    });
    until(&mut agents, "all three ACKed", |a| {
        a[0].acks_for(large) >= 1 && a[0].acks_for(behind) >= 1 && a[1].acks_for(other) >= 1
    });
    let text = http_get(metrics, "/metrics");
    let count = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(count("cma_out_of_order_total "), 0, "{text}");
    assert_eq!(count("cma_inflate_busy_total "), 0);
    d.finish();
}

/// A compressed FrameSet in clear that inflates to more than a log
/// segment holds (here 1 MiB segments and 1.5 MB of JSON) is logged as it
/// came: a record the size of the datagram, ACKed, classified again by the
/// decider and stored. (An encrypted one that inflates past a segment is
/// dropped and counted: the log holds it opened.)
#[test]
fn a_large_inflation_in_clear_is_logged_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 2);
    let big = format!("{{\"data\":\"{}\"}}", "a".repeat(1_500_000));
    let r = agents[0].report(&Message::JsDiscovery {
        wallclock_us: None,
        json: &big,
    });
    let peer = agents[0].addr();
    let r1 = agents[1].report(&Message::HbLate {
        peer,
        elapsed_us: 1,
    });
    until(&mut agents, "both reports ACKed", |a| {
        a[0].acks_for(r) == 1 && a[1].acks_for(r1) == 1
    });
    let db = dir.path().join("cma.sqlite");
    let t0 = Instant::now();
    loop {
        let c = rusqlite::Connection::open(&db).unwrap();
        let stored: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM discovery WHERE length(json) = ?1",
                [big.len() as i64],
                |row| row.get(0),
            )
            .unwrap_or(0);
        if stored == 1 {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "the discovery was not stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Decided (it is stored): inflated once, the decider took the
    // inflater's classification.
    let m = http_get(metrics, "/metrics");
    assert!(m.contains("cma_too_large_total 0"));
    assert!(m.contains("cma_reclassified_total 0"), "{m}");
    d.finish();
    let mut as_received = Vec::new();
    for_each_record(&dir.path().join("wal"), 1, |rec| {
        if rec.header.meta.kind == RecordKind::FrameSet && rec.header.meta.peer == Some(peer) {
            as_received.push(rec.payload.len());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(as_received.len(), 1, "{as_received:?}");
    assert!(as_received[0] < 65_536, "{as_received:?}");
}

/// A registered address gets connections on a few queue ids only (a
/// nanoprobe uses queue 0): a sweep of queue ids makes none, draws no ACK
/// and is counted; queue 0 goes on.
#[test]
fn a_sweep_of_queue_ids_makes_no_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 2);
    let late = Message::HbLate {
        peer: agents[1].addr(),
        elapsed_us: 1,
    };
    let swept: Vec<ReqId> = (4..100u16)
        .map(|queue| ReqId {
            session: 77,
            request: 1,
            queue,
        })
        .collect();
    for r in &swept {
        agents[0].resend(&late, *r);
    }
    let t0 = Instant::now();
    while !http_get(metrics, "/metrics").contains("cma_queue_refused_total 96") {
        assert!(t0.elapsed() < DEADLINE, "the sweep was not counted");
        agents[0].pump_now();
    }
    let r = agents[0].report(&late);
    until(&mut agents, "queue 0's report ACKed", |a| {
        a[0].acks_for(r) == 1
    });
    assert!(swept.iter().all(|r| agents[0].acks_for(*r) == 0));
    d.finish();
}

/// Registrations are limited per source network and in number: a STARTUP
/// storm from one /24 registers the burst, the rest is dropped and counted;
/// past `max_nodes`, new addresses are refused.
#[test]
fn startup_storms_are_limited_per_network_and_in_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.registrations_per_s = 1;
    c.limits.registration_burst = 3;
    c.limits.max_nodes = 5;
    let d = start_with(c);
    let metrics = d.metrics.unwrap();
    let send_from = |ip: &str, name: &str| {
        let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
        let at = s.local_addr().unwrap();
        s.send_to(&startup_of(name, at), d.addr).unwrap();
        s
    };
    // Twelve from one /24 at once.
    let storm: Vec<UdpSocket> = (1..=12)
        .map(|i| send_from(&format!("127.0.77.{i}"), &format!("storm{i}")))
        .collect();
    let t0 = Instant::now();
    loop {
        let m = http_get(metrics, "/metrics");
        let limited = m
            .lines()
            .find_map(|l| l.strip_prefix("cma_registrations_limited_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // At most the burst and one refill while they arrive.
        if limited >= 8 {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "the storm was not limited:\n{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Other networks register; past five addresses, none does.
    let others: Vec<UdpSocket> = (1..=4)
        .map(|i| send_from(&format!("127.0.{}.1", 80 + i), &format!("other{i}")))
        .collect();
    let t0 = Instant::now();
    while !http_get(metrics, "/metrics").contains("cma_registrations_refused_total 2") {
        assert!(t0.elapsed() < DEADLINE, "max_nodes did not hold");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.finish();
    drop((storm, others));
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    let nodes = s.nodes().unwrap();
    assert!(nodes.len() <= 5, "{} nodes registered", nodes.len());
    assert!(
        nodes
            .iter()
            .filter(|n| n.hostname.starts_with("storm"))
            .count()
            <= 4
    );
}

/// A registration that never ACKs its SETCONFIG (a STARTUP from a forged
/// source address) is forgotten when the CMA gives up on it: its address
/// no longer counts against `max_nodes`, its slot is reused and the store
/// keeps nothing of it. Before, forged STARTUPs filled the registry for
/// good and real nodes were refused.
#[test]
fn registrations_that_never_ack_expire_and_free_their_places() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.max_nodes = 5;
    c.reliable.retransmit_ms = 1000;
    c.reliable.join_give_up_after = 3;
    let d = start_with(c);
    let metrics = d.metrics.unwrap();
    let counter = |name: &str| metric(metrics, name);
    // Five forged STARTUPs fill the registry; a sixth is refused.
    let forged: Vec<UdpSocket> = (1..=6)
        .map(|i| {
            let s = UdpSocket::bind(format!("127.0.91.{i}:0")).unwrap();
            let at = s.local_addr().unwrap();
            s.send_to(&startup_of(&format!("forged{i}"), at), d.addr)
                .unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    while counter("cma_registrations_refused_total") < 1 {
        assert!(t0.elapsed() < DEADLINE, "max_nodes did not hold");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each is sent its SETCONFIG three times, never ACKed: forgotten.
    let t0 = Instant::now();
    while counter("cma_registrations_forgotten_total") < 5 {
        assert!(
            t0.elapsed() < DEADLINE,
            "the forged registrations did not expire"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What a forged STARTUP drew (all of it arrived before the give-up).
    forged[0].set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let drawn = std::iter::from_fn(|| forged[0].recv(&mut buf).ok()).count();
    assert_eq!(drawn, 3, "the SETCONFIG, sent three times");
    // A real agent joins in their place, and is placed.
    let agents = join_all(d.addr, 2);
    assert_eq!(counter("cma_registrations_refused_total"), 1);
    d.finish();
    drop((forged, agents));
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    let mut nodes = s.nodes().unwrap();
    nodes.sort_by_key(|n| n.id);
    let names: Vec<&str> = nodes.iter().map(|n| n.hostname.as_str()).collect();
    assert_eq!(names, ["agent0", "agent1"]);
    // In the forgotten slots (the lowest first).
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [0, 1]);
}

/// STARTUPs (nobody waits on an ACK of them) are synced lazily: one after
/// another, each logged before the next is sent, they share a few group
/// commits instead of costing one each (`wal.lazy_sync_ms`), and each is
/// still answered. With `lazy_sync_ms = 0` each one is synced at once.
#[test]
fn startups_share_lazy_group_commits_and_are_answered() {
    for (lazy_ms, few) in [(1000, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.wal.lazy_sync_ms = lazy_ms;
        let d = start_with(c);
        let metrics = d.metrics.unwrap();
        let counter = |name: &str| metric(metrics, name);
        let syncs_before = counter("cma_wal_syncs_total");
        let appended_before = counter("cma_wal_appended_total");
        const N: u64 = 40;
        let socks: Vec<UdpSocket> = (1..=N)
            .map(|i| {
                let s = UdpSocket::bind(format!("127.0.93.{i}:0")).unwrap();
                let at = s.local_addr().unwrap();
                s.send_to(&startup_of(&format!("lazy{i}"), at), d.addr)
                    .unwrap();
                let t0 = Instant::now();
                while counter("cma_wal_appended_total") < appended_before + i {
                    assert!(t0.elapsed() < DEADLINE, "STARTUP {i} was not logged");
                    std::thread::sleep(Duration::from_millis(1));
                }
                s
            })
            .collect();
        // Every one is answered (its SETCONFIG waited for its sync).
        for s in &socks {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut buf = [0u8; 2048];
            assert!(s.recv(&mut buf).is_ok(), "a STARTUP was never answered");
        }
        let syncs = counter("cma_wal_syncs_total") - syncs_before;
        if few {
            assert!(syncs < N / 4, "{syncs} syncs for {N} STARTUPs");
        } else {
            assert!(syncs >= N, "{syncs} syncs for {N} STARTUPs");
        }
        d.finish();
        drop(socks);
    }
}

/// A STARTUP the decider refuses (here: it names a listen address that is
/// not its source's) leaves its source no registration: forged ones
/// cannot fill `max_nodes`.
#[test]
fn refused_startups_hold_no_registration() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.max_nodes = 3;
    let d = start_with(c);
    let metrics = d.metrics.unwrap();
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // One after another, each forgotten before the next: more than
    // max_nodes of them, and then max_nodes real agents, all registered.
    let mut forged = Vec::new();
    for i in 1..=4 {
        let s = UdpSocket::bind(format!("127.0.92.{i}:0")).unwrap();
        s.send_to(&startup_of(&format!("forged{i}"), elsewhere), d.addr)
            .unwrap();
        forged.push(s);
        let t0 = Instant::now();
        while !http_get(metrics, "/metrics")
            .contains(&format!("cma_registrations_forgotten_total {i}"))
        {
            assert!(
                t0.elapsed() < DEADLINE,
                "a refused STARTUP kept its place:\n{}",
                http_get(metrics, "/metrics")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let agents = join_all(d.addr, 3);
    assert!(http_get(metrics, "/metrics").contains("cma_registrations_refused_total 0"));
    d.finish();
    drop((forged, agents));
}

/// An address that never registered gets no connection, no record and no
/// ACK, whatever it sends (here: reports over fifty queue ids).
#[test]
fn an_unregistered_address_gets_no_connection_and_no_ack() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let metrics = d.metrics.unwrap();
    let agents = join_all(d.addr, 2);
    let stranger = UdpSocket::bind("127.0.66.1:0").unwrap();
    for queue in 0..50 {
        let r = ReqId {
            session: 1,
            request: 1,
            queue,
        };
        let m = Message::HbDead {
            peer: agents[0].addr(),
        };
        stranger.send_to(&encoded(&m, Some(r)), d.addr).unwrap();
    }
    let t0 = Instant::now();
    while !http_get(metrics, "/metrics").contains("cma_unregistered_total 50") {
        assert!(
            t0.elapsed() < DEADLINE,
            "the stranger's FrameSets were not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stranger.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "the stranger was answered"
    );
    d.finish();
    let mut from_stranger = 0;
    for_each_record(&dir.path().join("wal"), 1, |r| {
        if r.header.meta.peer == Some(stranger.local_addr().unwrap()) {
            from_stranger += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(from_stranger, 0, "a stranger's FrameSet was logged");
}

/// A store that cannot write stops the daemon loudly: `run` returns the
/// store thread's failure, the health file says so, and the metric drops.
#[test]
fn a_store_that_cannot_write_stops_the_daemon_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let metrics = d.metrics.unwrap();
    let mut agents = join_all(d.addr, 2);
    assert!(http_get(metrics, "/metrics").contains("cma_healthy 1"));
    // Another writer holds the database's write lock.
    let other = rusqlite::Connection::open(dir.path().join("cma.sqlite")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // A newcomer's row must be written: the store fails.
    let mut late = Agent::new(d.addr, "late");
    late.startup();
    let t0 = Instant::now();
    while !d.thread.is_finished() {
        assert!(t0.elapsed() < DEADLINE, "the daemon did not stop");
        late.pump_now();
        agents[0].pump_now();
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = d
        .thread
        .join()
        .unwrap()
        .expect_err("run reports the failure");
    assert!(e.0.contains("the store thread failed"), "{e}");
    let h = cma::engine::fatal::read_health(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(h.state, "failed");
    assert!(h.reason.unwrap().contains("store"));
    drop(other);
}

/// Without a sync thread (`wal.sync = "always"`), the log thread sends the
/// ACKs itself from the same queue: each report ACKed once durable, a
/// duplicate re-ACKed, and the daemon stops cleanly.
#[test]
fn with_inline_syncs_reports_are_acked_and_duplicates_re_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.wal.sync = "always".into();
    let d = start_with(c);
    let mut agents = join_all(d.addr, 3);
    let peer = agents[1].addr();
    let m = Message::HbLate {
        peer,
        elapsed_us: 7,
    };
    let r = agents[0].report(&m);
    until(&mut agents, "the ACK", |a| a[0].acks_for(r) == 1);
    agents[0].resend(&m, r);
    until(&mut agents, "the re-ACK", |a| a[0].acks_for(r) == 2);
    d.finish();
}

#[test]
fn two_monitors_report_a_death_and_the_ring_closes() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 4);
    let victim = agents[1].addr();
    let monitors: Vec<usize> = (0..4)
        .filter(|i| *i != 1 && agents[*i].peers().contains(&victim))
        .collect();
    assert_eq!(monitors.len(), 2);
    agents[1].obey = false;
    let dead = Message::HbDead { peer: victim };
    let r0 = agents[monitors[0]].report(&dead);
    // The report is ACKed once durable; a retransmission of it is ACKed
    // again and not logged twice.
    until(&mut agents, "the ACK of HBDEAD", |a| {
        a[monitors[0]].acks_for(r0) == 1
    });
    agents[monitors[0]].resend(&dead, r0);
    until(&mut agents, "the re-ACK", |a| {
        a[monitors[0]].acks_for(r0) == 2
    });
    let r1 = agents[monitors[1]].report(&dead);
    until(&mut agents, "ring repair", |a| {
        a[monitors[1]].acks_for(r1) == 1
            && monitors.iter().all(|m| !a[*m].peers().contains(&victim))
            && monitors.iter().all(|m| a[*m].peers().len() == 2)
    });
    // The survivors heartbeat each other: a ring of 3.
    for m in &monitors {
        let others: Vec<SocketAddr> = (0..4)
            .filter(|i| i != m && *i != 1)
            .map(|i| agents[i].addr())
            .collect();
        assert_eq!(sorted(agents[*m].peers()), sorted(others));
    }
    // Shown dead in the database (read while the daemon runs).
    let db = dir.path().join("cma.sqlite");
    let t0 = Instant::now();
    loop {
        let s = Store::open_read_only(&db).unwrap();
        let n = s.nodes().unwrap();
        if n.iter()
            .any(|n| n.hostname == "agent1" && n.status == "dead")
        {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "agent1 not shown dead: {n:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.finish();
    // The HBDEAD sent twice is in the log once.
    let mut seen = 0;
    let reporter = agents[monitors[0]].addr();
    for_each_record(&dir.path().join("wal"), 1, |r| {
        if r.header.meta.kind == RecordKind::Classified
            && let Ok(c) = Logged::parse(r.payload)
            && c.reqid == Some(r0)
            && r.header.meta.peer == Some(reporter)
        {
            seen += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 1);
}

#[test]
fn unacked_instructions_are_resent_with_the_same_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut a = vec![Agent::new(d.addr, "deaf")];
    a[0].obey = false;
    a[0].startup();
    until(&mut a, "SETCONFIG three times", |a| {
        a[0].got
            .iter()
            .filter(|g| g.fstype == FrameSetType::SetConfig.to_wire())
            .count()
            >= 3
    });
    let reqids: Vec<_> = a[0].got.iter().map(|g| g.reqid).collect();
    assert!(reqids.windows(2).all(|w| w[0] == w[1]), "{reqids:?}");
    d.finish();
}

/// Starts the daemon again on `dir` and checks that it knows the agents:
/// a repeated STARTUP from the first is answered with ACKSTARTUP only.
fn restart_known(dir: &Path, agents: &mut [Agent]) -> Running {
    let d = start(dir);
    for a in agents.iter_mut() {
        a.cma = d.addr;
    }
    agents[0].startup();
    until(agents, "ACKSTARTUP after restart", |a| {
        a[0].got
            .iter()
            .filter(|g| g.fstype == FrameSetType::AckStartup.to_wire())
            .count()
            == 2
    });
    d
}

#[test]
fn a_restart_recovers_state_from_the_log_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 3);
    d.finish();
    // The decider knows them: a repeated STARTUP is only re-ACKed, and a
    // report is accepted (the sender is known).
    let d = restart_known(dir.path(), &mut agents);
    let before: Vec<_> = agents.iter().map(|a| a.peers()).collect();
    let late = agents[1].addr();
    let r = agents[0].report(&Message::HbLate {
        peer: late,
        elapsed_us: 5,
    });
    until(&mut agents, "the ACK", |a| a[0].acks_for(r) == 1);
    let after: Vec<_> = agents.iter().map(|a| a.peers()).collect();
    assert_eq!(before, after, "a restart re-sent ring instructions");
    d.finish();
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    assert_eq!(s.nodes().unwrap().len(), 3);
    let joined = s
        .events(0, 1000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "joined")
        .count();
    assert_eq!(joined, 3, "events applied once");
}

/// Appends records to a stopped daemon's log, as an older cma (or a
/// newer one) would have written them.
fn append_records(data: &Path, records: &[(RecordKind, SocketAddr, Vec<u8>)]) {
    let config = WalConfig {
        segment_size: 1 << 20,
        ..WalConfig::new(data.join("wal"))
    };
    let mut time_ns = 0;
    for_each_record(&data.join("wal"), 1, |r| {
        time_ns = time_ns.max(r.header.meta.time_ns);
        Ok(())
    })
    .unwrap();
    time_ns += 1_000_000;
    let (mut wal, _) = Wal::open(config).unwrap();
    for (kind, peer, payload) in records {
        let meta = RecordMeta {
            kind: *kind,
            time_ns,
            peer: Some(*peer),
        };
        wal.append(&meta, payload).unwrap();
        time_ns += 1_000_000;
    }
    wal.sync().unwrap();
}

fn startup_of(name: &str, at: SocketAddr) -> Vec<u8> {
    let net = r#"{"data":{"lo":{"ipaddrs":{"127.0.0.1/8":{}}}}}"#;
    let m = Message::Startup(Startup {
        hostname: name,
        listen: at,
        wallclock_us: 1,
        netconfig: net,
        key: None,
        features: None,
    });
    encoded(&m, None)
}

#[test]
fn an_older_log_of_raw_datagrams_is_replayed_through_the_classifier() {
    let dir = tempfile::tempdir().unwrap();
    start(dir.path()).finish();
    // Two STARTUPs as cma wrote them before the classified record: the
    // datagram's bytes under kind FRAMESET; and one the classifier refuses.
    let a: SocketAddr = "127.0.0.1:50001".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50002".parse().unwrap();
    let mut bad = startup_of("mangled", b);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    append_records(
        dir.path(),
        &[
            (RecordKind::FrameSet, a, startup_of("old-a", a)),
            (RecordKind::FrameSet, b, bad),
            (RecordKind::FrameSet, b, startup_of("old-b", b)),
        ],
    );
    start(dir.path()).finish();
    let s = Store::open_read_only(&dir.path().join("cma.sqlite")).unwrap();
    let mut names: Vec<String> = s.nodes().unwrap().into_iter().map(|n| n.hostname).collect();
    names.sort();
    assert_eq!(names, ["old-a", "old-b"]);
}

#[test]
fn a_record_of_a_newer_format_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    start(dir.path()).finish();
    let a: SocketAddr = "127.0.0.1:50001".parse().unwrap();
    let wire = startup_of("new", a);
    let c = classify(&wire).unwrap();
    let mut record = Vec::new();
    cma::classify::write_logged(&c, &mut record);
    record[0] = cma::classify::LOGGED_VERSION + 1;
    append_records(dir.path(), &[(RecordKind::Classified, a, record)]);
    let e = Daemon::start(config(dir.path()), false)
        .err()
        .expect("refuses to start");
    assert!(e.0.contains("newer cma"), "{e}");
}

/// A file from before incremental checkpoints (the whole decider state in
/// one blob) is read, and its next checkpoint is written as rows.
#[test]
fn a_whole_state_checkpoint_is_upgraded_to_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 3);
    d.finish();
    let db = dir.path().join("cma.sqlite");
    {
        let mut s = Store::open(&db).unwrap();
        let rows = s.checkpoint_rows().unwrap().expect("rows");
        let state = cma::decide::decider::Decider::from_rows(&rows)
            .unwrap()
            .export();
        s.write_checkpoint(rows.lsn, &state).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "DELETE FROM ck_nodes; DELETE FROM ck_groups; DELETE FROM meta WHERE key = 'ck_globals';",
        )
        .unwrap();
        assert!(s.checkpoint_rows().unwrap().is_none());
    }
    // Known from the old checkpoint: a repeated STARTUP is only re-ACKed.
    let d = restart_known(dir.path(), &mut agents);
    d.finish();
    let s = Store::open_read_only(&db).unwrap();
    let rows = s.checkpoint_rows().unwrap().expect("rows written");
    assert_eq!(rows.nodes.len(), 3);
    assert!(s.checkpoint().unwrap().is_none(), "the old blob is gone");
    let back = cma::decide::decider::Decider::from_rows(&rows).unwrap();
    assert_eq!(back.nodes().len(), 3);
}

/// A `cma run` child process on loopback.
struct Child {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    fn spawn(config: &Path) -> Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cma"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cma run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on [").nth(1)
                    && let Some(t) = tx.take()
                {
                    let a: SocketAddr = rest.trim_end_matches(']').parse().unwrap();
                    let _ = t.send(a);
                }
            }
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(addr) => Child { child, addr },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not say where it listens: {e}");
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cma run exited with {status}");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL the daemon at random moments while agents report; restart it;
/// in the end every ACKed report is in the log once, its event is in the
/// store once, and every agent heartbeats what the stored rings say.
#[test]
fn sigkill_under_load_loses_nothing_acked_and_repeats_nothing() {
    for seed in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cma.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = [\"127.0.0.1:0\"]\ndata_dir = \"{}\"\nlog_level = \"info\"\n\
                 [wal]\nsegment_mib = 4\n\
                 [reliable]\nretransmit_ms = 300\n[store]\ncheckpoint_ms = 150\n\
                 [metrics]\nlisten = \"\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut d = Child::spawn(&cfg);
        let mut agents: Vec<Agent> = (0..5)
            .map(|i| Agent::new(d.addr, &format!("a{i}")))
            .collect();
        for a in &agents {
            a.startup();
        }
        for round in 0..4 {
            // Load for a random while, then SIGKILL (not in the last round).
            let until_t = Instant::now() + Duration::from_millis(100 + rand(400));
            while Instant::now() < until_t {
                for i in 0..agents.len() {
                    let peer = agents[(i + 1) % agents.len()].addr();
                    if agents[i].unacked.len() < 4 {
                        agents[i].report(&Message::HbLate {
                            peer,
                            elapsed_us: 7,
                        });
                    }
                    agents[i].pump();
                }
            }
            if round == 3 {
                break;
            }
            d.kill();
            d = Child::spawn(&cfg);
            for a in agents.iter_mut() {
                a.cma = d.addr;
                for s in 0..3 {
                    // Agents that were never configured keep asking.
                    if a.got.is_empty() && s == 0 {
                        a.startup();
                    }
                }
            }
        }
        // Settle: every report ACKed, every instruction obeyed.
        until(&mut agents, "every report ACKed", |a| {
            a.iter()
                .all(|x| x.unacked.is_empty() && x.peers().len() == 2)
        });
        d.terminate();

        // Every ACKed report is in the log exactly once.
        let data = dir.path().join("data");
        let mut logged: BTreeMap<(SocketAddr, u64), usize> = BTreeMap::new();
        let mut late_records = 0;
        for_each_record(&data.join("wal"), 1, |r| {
            if r.header.meta.kind == RecordKind::Classified
                && let Ok(c) = Logged::parse(r.payload)
                && c.fstype == FrameSetType::HbLate.to_wire()
                && let (Some(p), Some(q)) = (r.header.meta.peer, c.reqid)
            {
                *logged.entry((p, q.request)).or_default() += 1;
                late_records += 1;
            }
            Ok(())
        })
        .unwrap();
        let mut acked = 0;
        for a in &agents {
            for r in &a.acked {
                acked += 1;
                assert_eq!(
                    logged.get(&(a.addr(), r.request)),
                    Some(&1),
                    "seed {seed}: {} report {} ACKed but logged {:?} times",
                    a.name,
                    r.request,
                    logged.get(&(a.addr(), r.request))
                );
            }
        }
        assert!(acked > 20, "seed {seed}: only {acked} reports");
        // Each logged report's event is in the store once.
        let s = Store::open_read_only(&data.join("cma.sqlite")).unwrap();
        let events = s.events(0, 1_000_000).unwrap();
        let late = events.iter().filter(|e| e.kind == "late").count();
        assert_eq!(late, late_records, "seed {seed}: late events vs records");
        assert_eq!(
            events.iter().filter(|e| e.kind == "joined").count(),
            agents.len(),
            "seed {seed}"
        );
        // The agents heartbeat what the stored rings say.
        let rows = s.checkpoint_rows().unwrap().expect("a checkpoint");
        let dcd = cma::decide::decider::Decider::from_rows(&rows).unwrap();
        for a in &agents {
            let id = dcd.node_at(a.addr()).expect("known");
            // With multiplicity: a representative whose group neighbour is
            // also its top-ring neighbour heartbeats it twice.
            let mut want: BTreeMap<SocketAddr, i32> = BTreeMap::new();
            for p in dcd.topology().peers_of(id) {
                *want.entry(dcd.node(p).unwrap().addr).or_default() += 1;
            }
            assert_eq!(a.hb, want, "seed {seed}: {}", a.name);
        }
    }
}

/// A million random and mutated datagrams interleaved with valid traffic:
/// the daemon keeps running, counts the drops, and ACKs every valid report.
#[test]
fn a_million_hostile_datagrams_do_not_stop_valid_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(config(dir.path()), false).expect("daemon starts");
    let addr = d.local_addrs()[0];
    let stop = d.stop_handle();
    let counters = d.counters();
    let thread = std::thread::spawn(move || d.run());
    let mut agents = join_all(addr, 3);
    let hostile = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Valid datagrams of many types to mutate.
    let peer = agents[1].addr();
    let templates: Vec<Vec<u8>> = vec![
        encoded(
            &Message::HbDead { peer },
            Some(ReqId {
                session: 9,
                request: 3,
                queue: 0,
            }),
        ),
        encoded(
            &Message::Ack,
            Some(ReqId {
                session: 9,
                request: 3,
                queue: 0,
            }),
        ),
        encoded(&Message::HbMartian { peer }, None),
        encoded(
            &Message::JsDiscovery {
                wallclock_us: None,
                json: "{\"a\":1}",
            },
            None,
        ),
        encoded(
            &Message::Startup(Startup {
                hostname: "evil",
                listen: peer,
                wallclock_us: 5,
                netconfig: "{}",
                key: None,
                features: None,
            }),
            None,
        ),
    ];
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sent_reports = Vec::new();
    let total = 1_000_000;
    let mut buf = Vec::with_capacity(2048);
    for i in 0..total {
        buf.clear();
        let r = rand();
        if r % 3 == 0 {
            // Random bytes.
            let len = (rand() % 300) as usize;
            buf.extend((0..len).map(|_| rand() as u8));
        } else {
            // A valid datagram with a few bytes flipped, cut or extended.
            buf.extend_from_slice(&templates[(r >> 8) as usize % templates.len()]);
            match rand() % 4 {
                0 => {
                    let at = (rand() as usize) % buf.len();
                    buf[at] ^= 1 << (rand() % 8);
                }
                1 => buf.truncate((rand() as usize) % buf.len()),
                2 => buf.extend((0..rand() % 40).map(|_| rand() as u8)),
                _ => {
                    for _ in 0..4 {
                        let at = (rand() as usize) % buf.len();
                        buf[at] = rand() as u8;
                    }
                }
            }
        }
        let _ = hostile.send_to(&buf, addr);
        if i % 2000 == 0 {
            // Valid traffic in between.
            let a = (i / 2000) % agents.len();
            let p = agents[(a + 1) % agents.len()].addr();
            let rq = agents[a].report(&Message::HbLate {
                peer: p,
                elapsed_us: 1,
            });
            sent_reports.push((a, rq));
            for ag in agents.iter_mut() {
                ag.pump_now();
            }
        }
    }
    until(&mut agents, "every valid report ACKed", |a| {
        a.iter().all(|x| x.unacked.is_empty())
    });
    for (a, r) in &sent_reports {
        assert!(agents[*a].acked.contains(r));
    }
    let dropped = counters.dropped_total();
    let classified = counters.accepted_total();
    eprintln!("hostile: {dropped} dropped by classify, {classified} accepted");
    assert!(dropped > total as u64 / 2, "only {dropped} drops counted");
    stop.stop();
    thread
        .join()
        .unwrap()
        .expect("clean stop after hostile input");
}

/// One monitor reports, the node does not answer the CMA's probe: TICK
/// records (appended when the decider's deadline is due) carry time in the
/// log, and the node is declared dead by the probe.
#[test]
fn an_unanswered_probe_confirms_a_single_report_through_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 4);
    let victim = agents[2].addr();
    agents[2].obey = false;
    let monitor = (0..4)
        .find(|i| *i != 2 && agents[*i].peers().contains(&victim))
        .unwrap();
    agents[monitor].report(&Message::HbDead { peer: victim });
    let db = dir.path().join("cma.sqlite");
    let t0 = Instant::now();
    loop {
        for a in agents.iter_mut() {
            a.pump();
        }
        let s = Store::open_read_only(&db).unwrap();
        let dead = s
            .events(0, 10_000)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == "dead");
        if let Some(e) = dead {
            assert_eq!(e.hostname.as_deref(), Some("agent2"));
            assert!(e.detail.contains("Probe"), "{}", e.detail);
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "agent2 never declared dead");
    }
    d.finish();
    let mut ticks = 0;
    for_each_record(&dir.path().join("wal"), 1, |r| {
        ticks += usize::from(r.header.meta.kind == RecordKind::Tick);
        Ok(())
    })
    .unwrap();
    assert!(ticks >= 1, "no TICK record");
}

/// An agent restarts (new WALLCLOCK) and its new process numbers its
/// reports in a session *lower* than the old one (its clock went back):
/// the new STARTUP resets the receiving side, so they are still accepted.
#[test]
fn a_restarted_agent_starts_its_requests_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut agents = join_all(d.addr, 2);
    let peer = agents[1].addr();
    let late = Message::HbLate {
        peer,
        elapsed_us: 3,
    };
    let r = agents[0].report(&late);
    until(&mut agents, "the first ACK", |a| a[0].acks_for(r) == 1);
    // The new process: same address, new WALLCLOCK, session 5 < 1000.
    let a = &mut agents[0];
    a.wallclock = 2;
    a.session = 5;
    a.next = 1;
    a.last_delivered = 0;
    a.hb.clear();
    a.got.clear();
    a.startup();
    until(&mut agents, "the restart's SETCONFIG", |a| {
        a[0].got
            .iter()
            .any(|g| g.fstype == FrameSetType::SetConfig.to_wire())
    });
    let r = agents[0].report(&late);
    until(&mut agents, "the new process's first ACK", |a| {
        a[0].acks_for(r) == 1
    });
    d.finish();
}

/// Datagrams of any size up to UDP's 65,507 bytes get a verdict: a valid
/// sequenced FrameSet of that size (far past a 2 KB ring slot) is logged
/// whole and ACKed, as is a STARTUP over 2 KB; garbage of that size is a
/// counted drop; the agent's next report is still ACKed.
#[test]
fn datagrams_of_any_size_are_received_whole_or_dropped_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    // A STARTUP of ~3 KB (a host with many interfaces) joins.
    let agent = Agent::new(d.addr, "big-netconfig");
    let me = agent.addr();
    let ifaces: Vec<String> = (0..40)
        .map(|i| format!("\"eth{i}\":{{\"mtu\":1500,\"macaddr\":\"02-00-00-00-00-{i:02x}\",\"operstate\":\"up\"}}"))
        .collect();
    let net = format!("{{\"data\":{{{}}}}}", ifaces.join(","));
    let startup = encoded(
        &Message::Startup(Startup {
            hostname: "big-netconfig",
            listen: me,
            wallclock_us: 1,
            netconfig: &net,
            key: None,
            features: None,
        }),
        None,
    );
    assert!(startup.len() > 2048, "{}", startup.len());
    agent.sock.send_to(&startup, d.addr).unwrap();
    let mut agents = vec![agent];
    until(&mut agents, "the big STARTUP answered", |a| {
        a[0].got
            .iter()
            .any(|g| g.fstype == FrameSetType::AckStartup.to_wire())
    });
    // A sequenced JSDISCOVERY of exactly 65,507 bytes, not compressed.
    let plain = EncodeOptions {
        compress_above: None,
        ..EncodeOptions::default()
    };
    let big = ReqId {
        session: agents[0].session,
        request: agents[0].next,
        queue: 0,
    };
    let bytes = |pad: usize| {
        let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(pad));
        let m = Message::JsDiscovery {
            wallclock_us: None,
            json: &json,
        };
        let mut out = Vec::new();
        encode(&m, Some(big), &plain, &mut out).unwrap();
        out
    };
    let datagram = bytes(65_507 - bytes(0).len());
    assert_eq!(datagram.len(), 65_507);
    agents[0].next += 1;
    agents[0].sock.send_to(&datagram, d.addr).unwrap();
    agents[0].unacked.push((big, datagram));
    until(&mut agents, "the 65,507-byte report ACKed", |a| {
        a[0].acked.contains(&big)
    });
    // 65,507 bytes of garbage: dropped, counted.
    let junk: Vec<u8> = (0..65_507u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    agents[0].sock.send_to(&junk, d.addr).unwrap();
    let small = agents[0].report(&Message::HbLate {
        peer: "127.0.0.9:1984".parse().unwrap(),
        elapsed_us: 5,
    });
    until(&mut agents, "the next report ACKed", |a| {
        a[0].acked.contains(&small)
    });
    let m = http_get(d.metrics.unwrap(), "/metrics");
    let drops: u64 = m
        .lines()
        .filter(|l| l.starts_with("cma_drops_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(drops >= 1, "{m}");
    let spilled = m
        .lines()
        .find_map(|l| l.strip_prefix("cma_spilled_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(spilled.is_some_and(|s| s >= 2), "{m}");
    assert!(m.contains("cma_truncated_total 0"), "{m}");
    // (An ACK means the whole FrameSet was logged durably: a cut one
    // fails its SIG digest and is never ACKed.)
    d.finish();
}
