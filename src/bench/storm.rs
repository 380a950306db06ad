//! `cma bench storm`: a STARTUP storm from forged source addresses against
//! `cma run` in its own process with its default configuration. Each
//! STARTUP names a new host from a new loopback address (spread over many
//! /24s, so the per-network registration limit lets all of them in), and
//! nothing ever answers the CMA: what a spoofing attacker can make it
//! hold and send. Reported: the registrations the daemon held at most and
//! how long it took to forget them all, what one forged STARTUP drew
//! (datagrams and bytes the CMA sent to its address, measured on a sample
//! of the forged addresses that keep listening), the daemon's memory and
//! CPU, and whether a real agent joins afterwards.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::joins::{placed, started, usage, wait_for};
use crate::classify::{EncodeOptions, Message, Startup, encode};
use crate::fleet::{Fleet, FleetConfig};

/// What to send.
#[derive(Clone, Debug)]
pub struct StormBenchConfig {
    /// Forged STARTUPs.
    pub startups: usize,
    /// Source /24s they come from (round-robin).
    pub networks: usize,
    /// Spread over this many seconds.
    pub seconds: f64,
    /// Forged addresses that keep listening, to count what they draw.
    pub sample: usize,
    /// Where the daemon's temporary data directory goes.
    pub dir: PathBuf,
    /// Give up after this long, s.
    pub timeout_s: u64,
    /// The `cma` executable to run the daemon with (`None`: this one).
    pub exe: Option<PathBuf>,
}

/// What was measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StormResult {
    /// STARTUPs sent.
    pub sent: usize,
    /// Bytes of one.
    pub startup_bytes: usize,
    /// Seconds the sending took.
    pub send_s: f64,
    /// Registrations held at most (nodes in the store, sampled).
    pub peak_held: u64,
    /// From the last STARTUP sent to none held, s.
    pub drained_s: f64,
    /// Over the sample: datagrams one forged STARTUP drew, mean and most.
    pub drawn_mean: f64,
    /// The most.
    pub drawn_max: u64,
    /// Bytes one forged STARTUP drew, mean.
    pub drawn_bytes_mean: f64,
    /// The daemon's resident memory before, at most during, and after, KiB.
    pub rss_kib: (u64, u64, u64),
    /// The daemon's CPU time from the first STARTUP to drained, s.
    pub cpu_s: f64,
    /// A real agent joined (was placed) after the storm.
    pub real_joined: bool,
}

/// The forged source of STARTUP `i`: network `i % networks` (127.100.0.0/24
/// and up), a host in it.
fn source(i: usize, networks: usize) -> Ipv4Addr {
    let n = i % networks;
    let h = (i / networks) % 254 + 1;
    Ipv4Addr::new(127, 100 + (n / 256) as u8, (n % 256) as u8, h as u8)
}

/// Nodes the store holds.
fn held(db: &std::path::Path) -> Option<u64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as u64)
}

/// Runs the storm.
pub fn run(cfg: &StormBenchConfig) -> Result<StormResult, String> {
    if cfg.networks == 0 || cfg.networks > 256 * 100 {
        return Err("need 1..=25600 networks".into());
    }
    let timeout = Duration::from_secs(cfg.timeout_s);
    let (data, listen, daemon) = started("storm", &cfg.dir, cfg.exe.as_deref(), timeout)?;
    let db = crate::store::db_path(&data.0);
    let pid = daemon.pid();
    let (cpu0, rss0) = usage(pid).ok_or("no /proc figures for cma run")?;
    let mut r = StormResult {
        rss_kib: (rss0, rss0, rss0),
        ..StormResult::default()
    };
    let mut sample: Vec<(UdpSocket, u64, u64)> = Vec::new();
    let mut buf = Vec::new();
    let mut b = [0u8; 65_536];
    let mut drain = |sample: &mut Vec<(UdpSocket, u64, u64)>| {
        for (s, n, bytes) in sample.iter_mut() {
            while let Ok(k) = s.recv(&mut b) {
                *n += 1;
                *bytes += k as u64;
            }
        }
    };
    let mut last_look = Instant::now();
    let look = |r: &mut StormResult| {
        if let Some(n) = held(&db) {
            r.peak_held = r.peak_held.max(n);
        }
        if let Some((_, rss)) = usage(pid) {
            r.rss_kib.1 = r.rss_kib.1.max(rss);
        }
    };
    let start = Instant::now();
    for i in 0..cfg.startups {
        let due = Duration::from_secs_f64(cfg.seconds * i as f64 / cfg.startups as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let s = UdpSocket::bind(SocketAddr::new(source(i, cfg.networks).into(), 0))
            .map_err(|e| format!("bind {}: {e}", source(i, cfg.networks)))?;
        let at = s.local_addr().map_err(|e| e.to_string())?;
        let host = format!("storm-{i}");
        buf.clear();
        encode(
            &Message::Startup(Startup {
                hostname: &host,
                listen: at,
                wallclock_us: 1_000_000 + i as u64,
                netconfig: "{}",
                key: None,
                features: None,
            }),
            None,
            &EncodeOptions::default(),
            &mut buf,
        )
        .map_err(|e| e.to_string())?;
        r.startup_bytes = buf.len();
        s.send_to(&buf, listen).map_err(|e| format!("send: {e}"))?;
        if sample.len() < cfg.sample {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            sample.push((s, 0, 0));
        }
        if last_look.elapsed() >= Duration::from_millis(250) {
            drain(&mut sample);
            look(&mut r);
            last_look = Instant::now();
        }
    }
    r.sent = cfg.startups;
    r.send_s = start.elapsed().as_secs_f64();
    // Until the daemon holds none of them (it stored every one first).
    let sent_at = Instant::now();
    loop {
        drain(&mut sample);
        look(&mut r);
        if r.peak_held > 0 && held(&db) == Some(0) {
            break;
        }
        if sent_at.elapsed() > timeout {
            return Err(format!(
                "still {} registrations held after {} s",
                held(&db).unwrap_or(0),
                cfg.timeout_s
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    r.drained_s = sent_at.elapsed().as_secs_f64();
    drain(&mut sample);
    let (cpu1, rss1) = usage(pid).ok_or("no /proc figures for cma run")?;
    r.cpu_s = cpu1 - cpu0;
    r.rss_kib.2 = rss1;
    if !sample.is_empty() {
        r.drawn_mean = sample.iter().map(|x| x.1).sum::<u64>() as f64 / sample.len() as f64;
        r.drawn_max = sample.iter().map(|x| x.1).max().unwrap_or(0);
        r.drawn_bytes_mean = sample.iter().map(|x| x.2).sum::<u64>() as f64 / sample.len() as f64;
    }
    // A real agent afterwards.
    let mut fc = FleetConfig::new(1, listen);
    fc.name_prefix = "storm-real-".into();
    fc.shared_socket = true;
    fc.port = 0;
    let mut fleet = Fleet::new(fc).map_err(|e| format!("agent: {e}"))?;
    r.real_joined = wait_for(&mut fleet, timeout, "the real agent placed", |f| {
        Ok(placed(f) == 1)
    })
    .is_ok();
    fleet.shutdown_all();
    daemon.stop()?;
    Ok(r)
}

/// The figures, for people.
pub fn render(r: &StormResult) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    format!(
        "{} forged STARTUPs ({} B each) in {:.1} s, from addresses that never answer\n\
         registrations held at most: {} (all of them forgotten {:.1} s after the last)\n\
         one forged STARTUP drew: {:.1} datagrams, {:.0} bytes (most: {} datagrams; \
         amplification {:.1}x in bytes)\n\
         daemon memory: {:.1} MiB before, {:.1} MiB at most, {:.1} MiB after; CPU {:.1} s\n\
         a real agent joined afterwards: {}\n",
        r.sent,
        r.startup_bytes,
        r.send_s,
        r.peak_held,
        r.drained_s,
        r.drawn_mean,
        r.drawn_bytes_mean,
        r.drawn_max,
        r.drawn_bytes_mean / r.startup_bytes.max(1) as f64,
        mib(r.rss_kib.0),
        mib(r.rss_kib.1),
        mib(r.rss_kib.2),
        r.cpu_s,
        if r.real_joined { "yes" } else { "NO" }
    )
}

/// The figures as JSON.
pub fn to_json(r: &StormResult) -> serde_json::Value {
    serde_json::json!({
        "sent": r.sent,
        "startup_bytes": r.startup_bytes,
        "send_s": r.send_s,
        "peak_held": r.peak_held,
        "drained_s": r.drained_s,
        "drawn_datagrams_mean": r.drawn_mean,
        "drawn_datagrams_max": r.drawn_max,
        "drawn_bytes_mean": r.drawn_bytes_mean,
        "rss_kib": [r.rss_kib.0, r.rss_kib.1, r.rss_kib.2],
        "cpu_s": r.cpu_s,
        "real_joined": r.real_joined,
    })
}
