//! `cma bench pipeline`: the whole daemon against the machine's limit, in
//! one run.
//!
//! A generator sends real FrameSets (a mix of sequenced HBDEAD and
//! JSDISCOVERY and unsequenced STARTUP from `conns` registered agents) on a
//! fixed open-loop schedule to
//! (a) the reference: a `recvmmsg` + `sendmmsg` loop answering every
//!     datagram (DESIGN.md rule 7: sequenced traffic costs an ACK each), and
//! (b) the daemon (`cma run` threads, `batch` group commit, a fresh data
//!     directory per rate).
//! For each it searches the highest rate at which nothing is lost (every
//! datagram answered, or for the daemon: every sequenced one ACKed and
//! every one accepted, within 250 ms of the last send), then measures recv->ACK latency from the *intended*
//! send time (so a stall is not hidden) at 50 % and 90 % of the daemon's
//! zero-loss rate, with the daemon's recv->decided quantiles and group
//! commit sizes. Writes JSON and an SVG latency plot when asked.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::classify::{EncodeOptions, Message, ReqId, Startup, classify, encode};
use crate::config::Config;
use crate::engine::daemon::Daemon;
use crate::engine::mmsg::{self, MMSG_BATCH_MAX, Outgoing};
use crate::ring_buffer::{SLOT_ADDR_LEN, SlotMeta};

/// Settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Seconds per measured point.
    pub seconds: f64,
    /// Generator connections (agents).
    pub conns: usize,
    /// Search range, datagrams/s.
    pub min_rate: u64,
    /// Upper end of the search.
    pub max_rate: u64,
    /// Binary-search steps per system.
    pub steps: u32,
    /// Percent of STARTUP and JSDISCOVERY in the mix (the rest HBDEAD).
    pub startup_pct: u32,
    /// Percent of JSDISCOVERY.
    pub jsdiscovery_pct: u32,
    /// Write the JSON result here.
    pub json: Option<PathBuf>,
    /// Write an SVG latency plot here.
    pub svg: Option<PathBuf>,
    /// Run the daemon with `[decider] spin = true`.
    pub spin: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            seconds: 3.0,
            conns: 64,
            min_rate: 5_000,
            max_rate: 400_000,
            steps: 7,
            startup_pct: 5,
            jsdiscovery_pct: 5,
            json: None,
            svg: None,
            spin: false,
        }
    }
}

/// One measured point.
#[derive(Clone, Debug, Default)]
pub struct Point {
    /// Offered rate.
    pub rate: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Answered (reference) or accepted (daemon).
    pub answered: u64,
    /// Sequenced datagrams sent / ACKed.
    pub sequenced: u64,
    /// ACKs received.
    pub acked: u64,
    /// recv->ACK (or reply) latency from the intended send time, µs:
    /// p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Latency samples.
    pub samples: u64,
    /// The daemon's recv->decided, µs: p50, p99, p99.9, max.
    pub decided_us: Option<[u64; 4]>,
    /// The daemon's mean and largest group commit.
    pub batch: Option<(f64, u64)>,
    /// The whole latency distribution (percentile, µs) for plots.
    pub curve: Vec<(f64, u64)>,
    /// The generator could not keep the schedule (finished sending more
    /// than 5 % late): the rate was not offered.
    pub generator_behind: bool,
    /// CPU time of the system's own threads (the daemon's `cma-*`, or the
    /// reference loop) from the first send to the last answer, per
    /// datagram sent, ns.
    pub cpu_ns_per_datagram: f64,
    /// The same by thread name.
    pub cpu_by_thread: Vec<(String, f64)>,
}

impl Point {
    fn lossless(&self) -> bool {
        self.sent > 0
            && !self.generator_behind
            && self.answered >= self.sent
            && self.acked >= self.sequenced
    }
}

/// The run's result.
#[derive(Clone, Debug, Default)]
pub struct PipelineResult {
    /// Highest zero-loss rate of the reference.
    pub reference_rate: u64,
    /// Highest zero-loss rate of the daemon.
    pub daemon_rate: u64,
    /// Every point measured, by system.
    pub reference_points: Vec<Point>,
    /// The daemon's points.
    pub daemon_points: Vec<Point>,
    /// The daemon at 10 % (a real fleet's load), 50 % and 90 % of its
    /// zero-loss rate.
    pub at_10: Option<Point>,
    /// At 50 %.
    pub at_50: Option<Point>,
    /// At 90 %.
    pub at_90: Option<Point>,
    /// The reference at the same 10 % and 50 % rates (for CPU per datagram).
    pub reference_at: Vec<Point>,
}

/// CPU time (ns) so far of this process's threads whose name starts with
/// `prefix`, by thread name (from /proc/self/task/*/schedstat; threads
/// whose files cannot be read are left out).
fn threads_cpu_ns(prefix: &str) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let name = comm.trim_end();
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(st) = std::fs::read_to_string(dir.join("schedstat"))
            && let Some(ns) = st
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
        {
            *by_name.entry(name.to_string()).or_default() += ns;
        }
    }
    by_name
}

/// The threads whose CPU counts for a target.
fn cpu_prefix(target: Target) -> &'static str {
    match target {
        Target::Reference => "ref-loop",
        Target::Daemon => "cma-",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Reference,
    Daemon,
}

/// The generator's datagrams for connection `c`, request `r` (sequenced)
/// or a STARTUP.
struct Mix {
    peers: Vec<SocketAddr>,
    json: String,
}

impl Mix {
    fn startup(&self, c: usize, out: &mut Vec<u8>) {
        let host = format!("bench-{c}");
        let m = Message::Startup(Startup {
            hostname: &host,
            listen: self.peers[c],
            wallclock_us: 1,
            netconfig: "{}",
            key: None,
            features: None,
        });
        out.clear();
        let _ = encode(&m, None, &EncodeOptions::default(), out);
    }

    fn sequenced(&self, c: usize, r: u64, js: bool, out: &mut Vec<u8>) {
        let reqid = ReqId {
            session: c as u32 + 1,
            request: r,
            queue: 0,
        };
        out.clear();
        let peer = self.peers[(c + 1 + (r as usize % 7)) % self.peers.len()];
        let m = if js {
            Message::JsDiscovery {
                wallclock_us: None,
                json: &self.json,
            }
        } else {
            Message::HbDead { peer }
        };
        let _ = encode(&m, Some(reqid), &EncodeOptions::default(), out);
    }
}

fn bound_addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("bound socket")
}

/// The reference: answer every datagram with a 64-byte reply, batched.
fn reference_loop(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let fd = sock.as_raw_fd();
    let reply = [0u8; 64];
    let (mut producer, mut consumer) = crate::ring_buffer::channel(MMSG_BATCH_MAX * 2, 2048);
    while !stop.load(Ordering::Acquire) {
        let mut batch = producer.write_batch(MMSG_BATCH_MAX);
        let got = mmsg::recv_into(fd, &mut batch, 2048, 0, None).map_or(0, |i| i.received);
        batch.commit(got);
        if got == 0 {
            thread::sleep(Duration::from_micros(50));
            continue;
        }
        let rb = consumer.read_batch(got);
        let mut addrs: Vec<([u8; SLOT_ADDR_LEN], u32)> = Vec::with_capacity(got);
        for i in 0..rb.len() {
            let (_, meta): (&[u8], &SlotMeta) = rb.get(i);
            addrs.push((meta.addr, meta.addr_len));
        }
        rb.release();
        let msgs: Vec<Outgoing<'_>> = addrs
            .iter()
            .map(|(a, l)| Outgoing {
                data: &reply,
                addr: a,
                addr_len: *l,
            })
            .collect();
        let _ = mmsg::send_batch(fd, &msgs);
    }
}

/// Runs one point against a target listening at `to`.
///
/// Kept whole: a measured point is one timeline (bind, send at the rate,
/// collect answers, read the daemon's counters) whose phases share state.
fn point(
    target: Target,
    to: SocketAddr,
    rate: u64,
    cfg: &PipelineConfig,
    daemon: Option<&Arc<crate::engine::metrics::Metrics>>,
) -> Point {
    let conns: Vec<UdpSocket> = (0..cfg.conns)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind generator"))
        .collect();
    for s in &conns {
        let _ = socket2::SockRef::from(s).set_recv_buffer_size(4 << 20);
        let _ = socket2::SockRef::from(s).set_send_buffer_size(4 << 20);
        s.set_nonblocking(true).ok();
    }
    let mix = Arc::new(Mix {
        peers: conns.iter().map(bound_addr).collect(),
        json: format!("{{\"data\":{{\"x\":\"{}\"}}}}", "y".repeat(900)),
    });
    let mut buf = Vec::with_capacity(2048);
    // Register every agent (not timed).
    if target == Target::Daemon {
        for (c, s) in conns.iter().enumerate() {
            mix.startup(c, &mut buf);
            let _ = s.send_to(&buf, to);
        }
        thread::sleep(Duration::from_millis(300));
    }
    let registered = daemon.map_or(0, |m| m.accepted_total());
    let total = (rate as f64 * cfg.seconds) as u64;
    let per_conn = (total as usize / cfg.conns) + 2;
    // intended send time (ns since t0) of (conn, request).
    let intended: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..cfg.conns)
            .map(|_| {
                (0..per_conn + 1)
                    .map(|_| AtomicU64::new(u64::MAX))
                    .collect()
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let cpu0 = threads_cpu_ns(cpu_prefix(target));
    let t0 = Instant::now();
    let receiver = {
        let socks: Vec<UdpSocket> = conns
            .iter()
            .map(|s| s.try_clone().expect("clone"))
            .collect();
        let intended = intended.clone();
        let stop = stop.clone();
        let acked = acked.clone();
        let answered = answered.clone();
        thread::spawn(move || {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
            let mut b = [0u8; 2048];
            while !stop.load(Ordering::Acquire) {
                let mut any = false;
                for (c, s) in socks.iter().enumerate() {
                    while let Ok(n) = s.recv(&mut b) {
                        any = true;
                        let now = t0.elapsed().as_nanos() as u64;
                        answered.fetch_add(1, Ordering::Relaxed);
                        if target == Target::Reference {
                            continue;
                        }
                        let Ok(cl) = classify(&b[..n]) else { continue };
                        if cl.fstype != crate::classify::FrameSetType::Ack.to_wire() {
                            continue;
                        }
                        let Some(r) = cl.reqid else { continue };
                        if r.session != c as u32 + 1 {
                            continue;
                        }
                        // Cumulative: every request up to r is ACKed.
                        let row = &intended[c];
                        let mut k = r.request as usize;
                        while k >= 1 && k < row.len() {
                            let t = row[k].swap(u64::MAX, Ordering::AcqRel);
                            if t == u64::MAX {
                                break;
                            }
                            let _ = h.record((now.saturating_sub(t) / 1000).max(1));
                            acked.fetch_add(1, Ordering::Relaxed);
                            k -= 1;
                        }
                    }
                }
                if !any {
                    thread::sleep(Duration::from_micros(100));
                }
            }
            h
        })
    };
    // Open loop: datagram k is due at k / rate.
    let mut next_req = vec![1u64; cfg.conns];
    let mut sequenced = 0u64;
    let mut sent = 0u64;
    let mut ref_hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let ns_per = 1e9 / rate as f64;
    for k in 0..total {
        let due = (k as f64 * ns_per) as u64;
        loop {
            let now = t0.elapsed().as_nanos() as u64;
            if now >= due {
                break;
            }
            // Sleep rather than spin unless the next send is very close:
            // on two cores a spinning generator starves the daemon. Late
            // sends are measured from their intended time all the same.
            if due - now > 5_000 {
                thread::sleep(Duration::from_micros(20));
            } else {
                std::hint::spin_loop();
            }
        }
        let c = (k as usize) % cfg.conns;
        let pick = (k * 2654435761 % 100) as u32;
        if pick < cfg.startup_pct {
            mix.startup(c, &mut buf);
        } else {
            let r = next_req[c];
            if r as usize >= per_conn {
                continue;
            }
            next_req[c] += 1;
            mix.sequenced(c, r, pick < cfg.startup_pct + cfg.jsdiscovery_pct, &mut buf);
            intended[c][r as usize].store(due, Ordering::Release);
            sequenced += 1;
        }
        if conns[c].send_to(&buf, to).is_ok() {
            sent += 1;
        }
    }
    let planned = Duration::from_secs_f64(cfg.seconds);
    let generator_behind = t0.elapsed() > planned.mul_f64(1.05);
    // Grace for the last answers: a quarter of a second. Anything slower
    // is a backlog that a longer run would turn into loss, so it counts as
    // lost (buffers must not hide overload).
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_millis(250) {
        let done = match target {
            Target::Reference => answered.load(Ordering::Relaxed) >= sent,
            Target::Daemon => acked.load(Ordering::Relaxed) >= sequenced,
        };
        if done {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let cpu1 = threads_cpu_ns(cpu_prefix(target));
    let per = |ns: u64| ns as f64 / sent.max(1) as f64;
    let cpu_by_thread: Vec<(String, f64)> = cpu1
        .iter()
        .map(|(name, ns)| {
            (
                name.clone(),
                per(ns.saturating_sub(*cpu0.get(name).unwrap_or(&0))),
            )
        })
        .collect();
    stop.store(true, Ordering::Release);
    let h = receiver.join().expect("receiver");
    let hist = if target == Target::Reference {
        // The reference answers unsequenced bytes: no per-datagram match;
        // its latency is not measured.
        ref_hist.reset();
        ref_hist
    } else {
        h
    };
    let q = |h: &Histogram<u64>| {
        [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ]
    };
    let mut p = Point {
        rate,
        sent,
        sequenced: if target == Target::Daemon {
            sequenced
        } else {
            0
        },
        acked: acked.load(Ordering::Relaxed),
        latency_us: q(&hist),
        samples: hist.len(),
        curve: [50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
            .iter()
            .map(|pc| (*pc, hist.value_at_percentile(*pc)))
            .collect(),
        generator_behind,
        cpu_ns_per_datagram: cpu_by_thread.iter().map(|x| x.1).sum(),
        cpu_by_thread,
        ..Point::default()
    };
    match (target, daemon) {
        (Target::Daemon, Some(m)) => {
            // (recv->decided comes from the daemon's histogram once it
            // has published it: see `daemon_point`.)
            p.answered = m.accepted_total().saturating_sub(registered);
            let syncs = m.syncs.load(Ordering::Relaxed).max(1);
            p.batch = Some((
                m.synced_records.load(Ordering::Relaxed) as f64 / syncs as f64,
                m.max_batch.load(Ordering::Relaxed),
            ));
        }
        _ => p.answered = answered.load(Ordering::Relaxed),
    }
    p
}

fn daemon_point(rate: u64, cfg: &PipelineConfig) -> Result<Point, String> {
    let dir = tempfile_dir()?;
    let mut c = Config::from_toml(
        "listen = [\"127.0.0.1:0\"]\nlog_level = \"error\"\n[metrics]\nlisten = \"\"\n\
         [io]\nrcvbuf_bytes = 33554432\n",
    )
    .map_err(|e| e.0)?;
    c.data_dir = dir.clone();
    c.decider.spin = cfg.spin;
    let d = Daemon::start(c, false).map_err(|e| e.0)?;
    let to = d.local_addrs()[0];
    let stop = d.stop_handle();
    let metrics = d.counters();
    // The log thread is the one that runs the daemon: named like the others.
    let h = thread::Builder::new()
        .name("cma-log".into())
        .spawn(move || d.run())
        .map_err(|e| format!("spawn the daemon: {e}"))?;
    let p = point(Target::Daemon, to, rate, cfg, Some(&metrics));
    // Let the decider publish its figures once more before stopping.
    thread::sleep(Duration::from_millis(600));
    let mut p = p;
    let d = metrics
        .decider
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let get = |q: f64| {
        d.latency_us
            .iter()
            .find(|x| (x.0 - q).abs() < 1e-9)
            .map_or(0, |x| x.1)
    };
    p.decided_us = Some([get(0.5), get(0.99), get(0.999), get(1.0)]);
    stop.stop();
    let r = h.join().map_err(|_| "daemon panicked".to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    r.map_err(|e| e.0)?;
    Ok(p)
}

fn tempfile_dir() -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "cma-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

fn reference_point(rate: u64, cfg: &PipelineConfig) -> Point {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind reference");
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(32 << 20);
    sock.set_nonblocking(true).ok();
    let to = bound_addr(&sock);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = thread::Builder::new()
        .name("ref-loop".into())
        .spawn(move || reference_loop(sock, s2))
        .expect("spawn the reference loop");
    let p = point(Target::Reference, to, rate, cfg, None);
    stop.store(true, Ordering::Release);
    let _ = h.join();
    p
}

/// Binary search of the highest lossless rate.
fn search(
    cfg: &PipelineConfig,
    mut measure: impl FnMut(u64) -> Result<Point, String>,
) -> Result<(u64, Vec<Point>), String> {
    let (mut lo, mut hi) = (cfg.min_rate, cfg.max_rate);
    let mut best = 0;
    let mut points = Vec::new();
    for _ in 0..cfg.steps {
        let mid = (lo + hi) / 2;
        let p = measure(mid)?;
        let ok = p.lossless();
        points.push(p);
        if ok {
            best = mid;
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((best, points))
}

/// Runs the benchmark.
pub fn run(cfg: &PipelineConfig) -> Result<PipelineResult, String> {
    let (reference_rate, reference_points) = search(cfg, |r| Ok(reference_point(r, cfg)))?;
    let (daemon_rate, daemon_points) = search(cfg, |r| daemon_point(r, cfg))?;
    let mut res = PipelineResult {
        reference_rate,
        daemon_rate,
        reference_points,
        daemon_points,
        ..PipelineResult::default()
    };
    if daemon_rate > 0 {
        res.at_10 = Some(daemon_point(daemon_rate / 10, cfg)?);
        res.at_50 = Some(daemon_point(daemon_rate / 2, cfg)?);
        res.at_90 = Some(daemon_point(daemon_rate * 9 / 10, cfg)?);
        for rate in [daemon_rate / 10, daemon_rate / 2] {
            res.reference_at.push(reference_point(rate, cfg));
        }
    }
    Ok(res)
}

/// A table for people.
pub fn render(cfg: &PipelineConfig, r: &PipelineResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "machine: {} CPUs; generator (sender + receiver threads), the daemon's io, log, decider and store threads share them; release build; {}",
        mmsg::online_cpus(),
        if cfg.spin {
            "log and decider threads spin (decider.spin = true)"
        } else {
            "threads park when idle"
        }
    );
    let _ = writeln!(
        s,
        "mix: {}% STARTUP, {}% JSDISCOVERY (1 KiB), rest HBDEAD; {} agents; {} s per point",
        cfg.startup_pct, cfg.jsdiscovery_pct, cfg.conns, cfg.seconds
    );
    let _ = writeln!(
        s,
        "zero-loss rate: reference (recvmmsg + sendmmsg answering every datagram) {}/s, daemon (batch sync) {}/s, ratio {:.2}",
        r.reference_rate,
        r.daemon_rate,
        if r.reference_rate == 0 {
            0.0
        } else {
            r.daemon_rate as f64 / r.reference_rate as f64
        }
    );
    for (name, p) in [("10%", &r.at_10), ("50%", &r.at_50), ("90%", &r.at_90)] {
        if let Some(p) = p {
            let d = p.decided_us.unwrap_or_default();
            let b = p.batch.unwrap_or_default();
            let reference =
                r.reference_at
                    .iter()
                    .find(|x| x.rate == p.rate)
                    .map_or(String::new(), |x| {
                        format!(
                            " (reference {:.0} ns, ratio {:.1})",
                            x.cpu_ns_per_datagram,
                            p.cpu_ns_per_datagram / x.cpu_ns_per_datagram.max(1.0)
                        )
                    });
            let threads: Vec<String> = p
                .cpu_by_thread
                .iter()
                .map(|(t, ns)| format!("{t} {ns:.0}"))
                .collect();
            let _ = writeln!(
                s,
                "at {name} ({}/s): CPU per datagram {:.0} ns{reference}; by thread: {}",
                p.rate,
                p.cpu_ns_per_datagram,
                threads.join(", ")
            );
            let _ = writeln!(
                s,
                "at {name} ({}/s, {} sent, {} ACKs): recv->ACK from intended send p50 {} us p99 {} us p99.9 {} us max {} us; recv->decided p50 {} p99 {} p99.9 {} max {} us; group commit mean {:.1} max {}",
                p.rate,
                p.sent,
                p.acked,
                p.latency_us[0],
                p.latency_us[1],
                p.latency_us[2],
                p.latency_us[3],
                d[0],
                d[1],
                d[2],
                d[3],
                b.0,
                b.1
            );
        }
    }
    s
}

/// The result as JSON.
pub fn to_json(cfg: &PipelineConfig, r: &PipelineResult) -> serde_json::Value {
    let pt = |p: &Point| {
        serde_json::json!({
            "rate": p.rate, "sent": p.sent, "answered": p.answered, "generator_behind": p.generator_behind,
            "sequenced": p.sequenced, "acked": p.acked, "lossless": p.lossless(),
            "ack_latency_us": {"p50": p.latency_us[0], "p99": p.latency_us[1], "p999": p.latency_us[2], "max": p.latency_us[3], "samples": p.samples},
            "decided_us": p.decided_us.map(|d| serde_json::json!({"p50": d[0], "p99": d[1], "p999": d[2], "max": d[3]})),
            "group_commit": p.batch.map(|b| serde_json::json!({"mean": b.0, "max": b.1})),
            "curve": p.curve,
            "cpu_ns_per_datagram": p.cpu_ns_per_datagram,
            "cpu_ns_per_datagram_by_thread": p.cpu_by_thread,
        })
    };
    serde_json::json!({
        "cpus": mmsg::online_cpus(),
        "spin": cfg.spin,
        "seconds_per_point": cfg.seconds,
        "agents": cfg.conns,
        "reference_zero_loss_rate": r.reference_rate,
        "daemon_zero_loss_rate": r.daemon_rate,
        "ratio": if r.reference_rate == 0 { 0.0 } else { r.daemon_rate as f64 / r.reference_rate as f64 },
        "reference_points": r.reference_points.iter().map(pt).collect::<Vec<_>>(),
        "daemon_points": r.daemon_points.iter().map(pt).collect::<Vec<_>>(),
        "at_10": r.at_10.as_ref().map(pt),
        "at_50": r.at_50.as_ref().map(pt),
        "reference_at": r.reference_at.iter().map(pt).collect::<Vec<_>>(),
        "at_90": r.at_90.as_ref().map(pt),
    })
}

/// An SVG plot of recv->ACK latency by percentile at 50 % and 90 % load.
pub fn to_svg(r: &PipelineResult) -> String {
    use std::fmt::Write as _;
    let (w, h, m) = (640.0, 400.0, 50.0);
    let curves: Vec<(&str, &str, &Point)> = [
        ("50% load", "#1f77b4", &r.at_50),
        ("90% load", "#d62728", &r.at_90),
    ]
    .into_iter()
    .filter_map(|(n, c, p)| p.as_ref().map(|p| (n, c, p)))
    .collect();
    let max_us = curves
        .iter()
        .flat_map(|(_, _, p)| p.curve.iter().map(|x| x.1))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y = |us: u64| h - m - ((us as f64).max(1.0).ln() / max_us.max(2.0).ln()) * (h - 2.0 * m);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<text x=\"{m}\" y=\"20\">cma bench pipeline: recv-&gt;ACK latency from intended send time (log scale, us)</text>"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - m,
        w - m,
        h - m
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>",
        h - m
    );
    for (i, (name, colour, p)) in curves.iter().enumerate() {
        let n = p.curve.len().max(2) - 1;
        let pts: Vec<String> = p
            .curve
            .iter()
            .enumerate()
            .map(|(k, (pc, us))| {
                let x = m + (k as f64 / n as f64) * (w - 2.0 * m);
                let _ = pc;
                format!("{x:.1},{:.1}", y(*us))
            })
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name} ({}/s): p50 {} us, p99 {} us, max {} us</text>",
            m + 10.0,
            m + 15.0 * (i as f64 + 1.0),
            p.rate,
            p.latency_us[0],
            p.latency_us[1],
            p.latency_us[3]
        );
        for (k, (pc, _)) in p.curve.iter().enumerate() {
            if i == 0 {
                let x = m + (k as f64 / n as f64) * (w - 2.0 * m);
                let _ = writeln!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">p{pc}</text>",
                    h - m + 15.0
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
