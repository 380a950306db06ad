//! `cma bench ack`: how long a durable ACK takes. Closed loop, one
//! sequenced report in flight per agent, against a daemon started with its
//! default configuration in a temporary data directory; and, in the same
//! run and on the same file system, the floor a durable log can reach: a
//! one-page `msync` and a `pwrite` + `fdatasync` of a pre-written file
//! (shared/BENCH.md: ratios measured in one run).
//!
//! Under a flood (`--flood-rate`), one more reference: a bare durable-ACK
//! server (one thread: `recv`, drop what is not a small sequenced report,
//! 128 B into a mapped page, one-page `msync`, ACK), with one agent, the
//! same floods. What a flood costs it is what the machine charges any
//! server for the flood's bytes, before anything cma does.
//!
//! A third reference keeps DESIGN.md rule 3 in view: the same one-page
//! `msync` on a file pre-zeroed in 1 MiB writes (large page-cache folios,
//! a whole folio written back per msync). If a kernel makes it cheap, or
//! the log's pre-zeroing regresses, the table shows it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::classify::{EncodeOptions, FrameSetType, Message, ReqId, Startup, classify, encode};
use crate::config::Config;
use crate::engine::daemon::Daemon;

/// What to measure.
#[derive(Clone, Debug)]
pub struct AckBenchConfig {
    /// Reports per agent.
    pub reports: usize,
    /// Runs, by number of agents reporting at once.
    pub agents: Vec<usize>,
    /// Where the temporary data directory and reference files go.
    pub dir: PathBuf,
    /// Each run again under a flood of this many datagrams/s (0: none)
    /// from one source (issue: "Strangers"), once per kind.
    pub flood_rate: u64,
    /// What the floods send.
    pub flood_kinds: Vec<FloodKind>,
    /// Under a flood, switch it on and off every [`PHASE`] within one run
    /// and judge the reports sent while it was on against those sent
    /// while it was paused (same daemon, disk and moment).
    pub interleave: bool,
}

/// How long a flood stays on, then paused, under `interleave`.
pub const PHASE: Duration = Duration::from_millis(250);
/// Reports sent this soon after a switch belong to neither phase.
const SETTLE: Duration = Duration::from_millis(25);

/// A flood switched on and off within one run: odd phases are on.
struct Phases {
    phase: std::sync::atomic::AtomicU64,
    since_us: std::sync::atomic::AtomicU64,
    t0: Instant,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            phase: Default::default(),
            since_us: Default::default(),
            t0: Instant::now(),
        }
    }

    fn on(&self) -> bool {
        self.phase.load(std::sync::atomic::Ordering::Acquire) % 2 == 1
    }

    fn switch(&self) {
        use std::sync::atomic::Ordering;
        let now = self.t0.elapsed().as_micros() as u64;
        self.since_us.store(now, Ordering::Release);
        self.phase.fetch_add(1, Ordering::AcqRel);
    }

    /// The phase a report sent now belongs to (`None`: just switched).
    fn settled(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let p = self.phase.load(Ordering::Acquire);
        let since = self.since_us.load(Ordering::Acquire);
        let now = self.t0.elapsed().as_micros() as u64;
        (now.saturating_sub(since) >= SETTLE.as_micros() as u64).then_some(p)
    }

    fn current(&self) -> u64 {
        self.phase.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Switches every [`PHASE`] until `stop`.
    fn drive(self: std::sync::Arc<Self>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let mut next = Instant::now() + PHASE;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                self.switch();
                next += PHASE;
            }
            thread::sleep(Duration::from_millis(5).min(next.saturating_duration_since(now)));
        }
    }
}

/// What a flood sends, from one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    /// 1.9 KB compressed FrameSets declaring 1.8 MB inflated, from a
    /// registered address on the agents' /24.
    Bombs,
    /// 200 random bytes per datagram, from a registered address.
    Garbage,
    /// Valid sequenced reports (HBDEAD of an unknown peer) in order, from a
    /// registered address, resent from the first unACKed one after a gap
    /// (as a sender does): each one logged, ACKed and decided.
    Sequenced,
    /// STARTUPs, each from a new port of one address of another /24, each
    /// with a new WALLCLOCK: registrations.
    Startups,
}

impl FloodKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Bombs => "bombs",
            FloodKind::Garbage => "garbage",
            FloodKind::Sequenced => "sequenced",
            FloodKind::Startups => "startups",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FloodKind::Bombs => {
                "1.9 KB compressed FrameSets declaring 1.8 MB inflated, from a registered address on the agents' /24"
            }
            FloodKind::Garbage => {
                "200 random bytes each, from a registered address on the agents' /24"
            }
            FloodKind::Sequenced => {
                "valid sequenced HBDEADs in order from a registered address on the agents' /24, resent from the first unACKed after a gap (each logged and ACKed)"
            }
            FloodKind::Startups => {
                "STARTUPs from new ports of 127.0.9.1, each a registration (limited per /24)"
            }
        }
    }
}

/// What one daemon run did besides the agents' reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Datagrams the flood sent.
    pub sent: u64,
    /// Records the daemon logged (the agents' reports, the flood's that
    /// were taken, TICKs).
    pub logged: u64,
    /// Group commits.
    pub syncs: u64,
    /// Records in the largest group commit.
    pub largest_sync: u64,
    /// Under `interleave`: the reports sent while the flood was paused
    /// (the run's distribution is then those sent while it was on).
    pub calm: Option<Dist>,
}

/// A latency distribution, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dist {
    /// Samples.
    pub count: u64,
    /// Percentiles: 50, 90, 99, 99.9, and the maximum.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Dist {
    fn of(h: &Histogram<u64>) -> Dist {
        Dist {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct AckBenchResult {
    /// One-page msync of a file pre-zeroed in 4 KiB writes.
    pub msync: Dist,
    /// pwrite + fdatasync of the same record.
    pub fdatasync: Dist,
    /// One-page msync of a file pre-zeroed in 1 MiB writes.
    pub msync_large_folios: Dist,
    /// report -> ACK, per run: (agents, distribution).
    pub runs: Vec<(usize, Dist)>,
    /// The same under each flood: (kind, agents, distribution, what the
    /// flood sent and the daemon logged).
    pub flooded: Vec<(FloodKind, usize, Dist, Tally)>,
    /// The bare durable-ACK server, one agent, unflooded (`None`) and
    /// under each flood (with a flood rate only): (flood, distribution,
    /// what the flood sent).
    pub bare: Vec<(Option<FloodKind>, Dist, Tally)>,
}

/// A directory of ours under the measured one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, tag: &str) -> Result<TempDir, String> {
        let p = parent.join(format!("cma-bench-ack-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

const REF_FILE_BYTES: usize = 16 << 20;
const RECORD: usize = 128;

/// A file of `REF_FILE_BYTES` zeros written in `chunk`-byte writes, synced.
fn prewritten(path: &Path, chunk: usize) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; chunk];
    for _ in 0..REF_FILE_BYTES / chunk {
        f.write_all(&zeros)?;
    }
    f.sync_all()?;
    Ok(f)
}

/// One 128-byte record then a one-page msync, `n` times.
fn msync_reference(path: &Path, chunk: usize, n: usize) -> std::io::Result<Dist> {
    let f = prewritten(path, chunk)?;
    // SAFETY: the file is ours, created above in a directory of our own,
    // and nothing else maps or truncates it while the map lives.
    #[allow(unsafe_code)]
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f)? };
    let mut h = histogram();
    let record = [0x5au8; RECORD];
    for i in 0..n {
        let off = (i * RECORD) % (REF_FILE_BYTES - RECORD);
        let page = off & !4095;
        let t = Instant::now();
        map[off..off + RECORD].copy_from_slice(&record);
        map.flush_range(page, 4096)?;
        let _ = h.record((t.elapsed().as_micros() as u64).max(1));
        thread::sleep(Duration::from_millis(1));
    }
    drop(map);
    let _ = std::fs::remove_file(path);
    Ok(Dist::of(&h))
}

/// One 128-byte pwrite then fdatasync, `n` times.
fn fdatasync_reference(path: &Path, n: usize) -> std::io::Result<Dist> {
    let f = prewritten(path, 4096)?;
    let mut h = histogram();
    let record = [0x5au8; RECORD];
    for i in 0..n {
        let off = ((i * RECORD) % (REF_FILE_BYTES - RECORD)) as u64;
        let t = Instant::now();
        f.write_all_at(&record, off)?;
        f.sync_data()?;
        let _ = h.record((t.elapsed().as_micros() as u64).max(1));
        thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::remove_file(path);
    Ok(Dist::of(&h))
}

/// Answers every sequenced instruction with its ACK; returns the highest
/// request id of `session` the datagram ACKs, if it is an ACK of ours.
fn answer(sock: &UdpSocket, b: &[u8], session: u32, buf: &mut Vec<u8>, cma: SocketAddr) -> u64 {
    let Ok(cl) = classify(b) else { return 0 };
    let Some(r) = cl.reqid else { return 0 };
    if cl.fstype == FrameSetType::Ack.to_wire() {
        return if r.session == session { r.request } else { 0 };
    }
    // An instruction (SETCONFIG, ring, probe): ACKed as an agent does.
    buf.clear();
    if encode(&Message::Ack, Some(r), &EncodeOptions::default(), buf).is_ok() {
        let _ = sock.send_to(buf, cma);
    }
    0
}

/// One agent: registers, then sends `reports` HBLATEs one at a time,
/// each a millisecond after the previous one was ACKed. Returns their
/// latencies; under `phases`, (sent while the flood was paused, while it
/// was on), leaving out reports sent just after a switch or ACKed after
/// the next one.
fn agent(
    k: usize,
    run: usize,
    cma: SocketAddr,
    reports: usize,
    phases: Option<&Phases>,
) -> Result<[Histogram<u64>; 2], String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    let host = format!("ack-bench-{run}-{k}");
    let wallclock = 1 + k as u64;
    let mut buf = Vec::with_capacity(512);
    let mut b = [0u8; 65_536];
    let startup = Message::Startup(Startup {
        hostname: &host,
        listen: me,
        wallclock_us: wallclock,
        netconfig: "{}",
        key: None,
        features: None,
    });
    encode(&startup, None, &EncodeOptions::default(), &mut buf).map_err(|e| e.to_string())?;
    let startup_bytes = buf.clone();
    // Registered once the CMA's first instruction (SETCONFIG) arrives.
    let t0 = Instant::now();
    let _ = sock.send_to(&startup_bytes, cma);
    loop {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("{host}: no SETCONFIG in 30 s"));
        }
        match sock.recv(&mut b) {
            Ok(n) => {
                let is_instruction = classify(&b[..n])
                    .is_ok_and(|c| c.reqid.is_some() && c.fstype != FrameSetType::Ack.to_wire());
                answer(&sock, &b[..n], 0, &mut buf, cma);
                if is_instruction {
                    break;
                }
            }
            Err(_) => {
                let _ = sock.send_to(&startup_bytes, cma);
            }
        }
    }
    let session = 7_000 + k as u32;
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut h = [histogram(), histogram()];
    for request in 1..=reports as u64 {
        buf.clear();
        let r = ReqId {
            session,
            request,
            queue: 0,
        };
        encode(
            &Message::HbLate {
                peer,
                elapsed_us: 1,
            },
            Some(r),
            &EncodeOptions::default(),
            &mut buf,
        )
        .map_err(|e| e.to_string())?;
        let report = buf.clone();
        let tag = phases.map(|p| p.settled());
        let t = Instant::now();
        let _ = sock.send_to(&report, cma);
        let mut last_send = t;
        loop {
            if let Ok(n) = sock.recv(&mut b)
                && answer(&sock, &b[..n], session, &mut buf, cma) >= request
            {
                break;
            }
            if last_send.elapsed() > Duration::from_secs(2) {
                // Lost (it is UDP): sent again, as an agent does.
                let _ = sock.send_to(&report, cma);
                last_send = Instant::now();
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("{host}: report {request} not ACKed in 60 s"));
            }
        }
        let us = (t.elapsed().as_micros() as u64).max(1);
        match (tag, phases) {
            (None, _) => {
                let _ = h[0].record(us);
            }
            (Some(Some(p)), Some(ph)) if ph.current() == p => {
                let _ = h[(p % 2) as usize].record(us);
            }
            _ => {}
        }
        // The references' pace: a record every millisecond or so.
        thread::sleep(Duration::from_millis(1));
    }
    Ok(h)
}

/// Floods `cma` with `rate` datagrams a second of `kind` until `stop`
/// (registering its source first, except for STARTUPs); returns how many
/// it sent.
fn flood(
    cma: SocketAddr,
    rate: u64,
    kind: FloodKind,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    phases: Option<std::sync::Arc<Phases>>,
) -> Result<u64, String> {
    use std::sync::atomic::Ordering;
    let bind = if kind == FloodKind::Startups {
        "127.0.9.1:0"
    } else {
        "127.0.0.1:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let startup = |listen: SocketAddr, wallclock_us: u64, buf: &mut Vec<u8>| {
        buf.clear();
        let host = format!("ack-bench-flood-{}", listen.port());
        let m = Message::Startup(Startup {
            hostname: &host,
            listen,
            wallclock_us,
            netconfig: "{}",
            key: None,
            features: None,
        });
        encode(&m, None, &EncodeOptions::default(), buf).map_err(|e| e.to_string())
    };
    let mut b = [0u8; 65_536];
    if kind != FloodKind::Startups {
        startup(me, 99, &mut buf)?;
        let _ = sock.send_to(&buf, cma);
        let t0 = Instant::now();
        while sock.recv(&mut b).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err("the flood's STARTUP was never answered".into());
            }
            let _ = sock.send_to(&buf, cma);
        }
    }
    let mut bomb = Vec::new();
    if kind == FloodKind::Bombs {
        let json = format!("{{\"data\":\"{}\"}}", "a".repeat(1_800_000));
        encode(
            &Message::JsDiscovery {
                wallclock_us: None,
                json: &json,
            },
            None,
            &EncodeOptions::default(),
            &mut bomb,
        )
        .map_err(|e| e.to_string())?;
    }
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut start = Instant::now();
    let mut sent = 0u64;
    // Sent before the flood was last paused: the schedule restarts after.
    let mut base = 0u64;
    let mut paused = false;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(me.port());
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // STARTUPs come from new ports: a few sockets, rebound round-robin.
    let mut ports: Vec<UdpSocket> = Vec::new();
    // Sequenced reports go back to the first unACKed one when the ACKs
    // stop moving (a datagram dropped leaves a gap the CMA waits on), as
    // a sender does: the flood stays logged, not dropped as out of order.
    let (mut next_req, mut acked, mut moved) = (1u64, 0u64, Instant::now());
    while !stop.load(Ordering::Acquire) {
        let off = phases.as_ref().is_some_and(|p| !p.on());
        if off != paused {
            paused = off;
            start = Instant::now();
            base = sent;
        }
        let due = if paused {
            sent
        } else {
            base + (start.elapsed().as_micros() as u64 * rate) / 1_000_000
        };
        while sent < due {
            match kind {
                FloodKind::Bombs => {
                    let _ = sock.send_to(&bomb, cma);
                }
                FloodKind::Garbage => {
                    let junk: Vec<u8> = (0..25).flat_map(|_| next().to_le_bytes()).collect();
                    let _ = sock.send_to(&junk, cma);
                }
                FloodKind::Sequenced => {
                    let r = ReqId {
                        session: 77,
                        request: next_req,
                        queue: 0,
                    };
                    next_req += 1;
                    let peer = SocketAddr::from(([127, 0, 8, (sent % 250) as u8 + 1], 1984));
                    buf.clear();
                    encode(
                        &Message::HbDead { peer },
                        Some(r),
                        &EncodeOptions::default(),
                        &mut buf,
                    )
                    .map_err(|e| e.to_string())?;
                    let _ = sock.send_to(&buf, cma);
                }
                FloodKind::Startups => {
                    if ports.len() < 64 || sent.is_multiple_of(64) {
                        if ports.len() >= 64 {
                            ports.remove(0);
                        }
                        let s = UdpSocket::bind("127.0.9.1:0").map_err(|e| format!("bind: {e}"))?;
                        s.set_nonblocking(true).map_err(|e| e.to_string())?;
                        ports.push(s);
                    }
                    let s = &ports[sent as usize % ports.len()];
                    let listen = s.local_addr().map_err(|e| e.to_string())?;
                    startup(listen, 1_000 + sent, &mut buf)?;
                    let _ = s.send_to(&buf, cma);
                }
            }
            sent += 1;
        }
        // Drain what the CMA sends back (ACKs, instructions).
        while let Ok(n) = sock.recv(&mut b) {
            if let Ok(c) = classify(&b[..n])
                && c.fstype == FrameSetType::Ack.to_wire()
                && let Some(r) = c.reqid.filter(|r| r.session == 77 && r.request > acked)
            {
                acked = r.request;
                moved = Instant::now();
            }
        }
        if next_req > acked + 1 && moved.elapsed() > Duration::from_millis(20) {
            next_req = acked + 1;
            moved = Instant::now();
        }
        for s in &ports {
            while s.recv(&mut b).is_ok() {}
        }
        thread::sleep(Duration::from_micros(500));
    }
    Ok(sent)
}

/// The bare durable-ACK server, on its own thread until `stop`: answers a
/// STARTUP with one sequenced instruction (as the daemon's SETCONFIG), and
/// small sequenced reports with a group commit: what one wake-up finds
/// waiting (up to 256), a record each in a mapped page, one msync of the
/// pages written, then their ACKs. Compressed FrameSets and garbage are
/// dropped after a peek, unsequenced ones after classify (both cheaper
/// than the daemon's checks); nothing is decided or stored.
fn bare_server(
    path: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(SocketAddr, thread::JoinHandle<std::io::Result<()>>), String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
    let f = prewritten(path, 4096).map_err(|e| format!("{}: {e}", path.display()))?;
    let server = move || -> std::io::Result<()> {
        // SAFETY: as in `msync_reference`: our own file, mapped once.
        #[allow(unsafe_code)]
        let mut map = unsafe { memmap2::MmapMut::map_mut(&f)? };
        let mut b = vec![0u8; 65_536];
        let mut out = Vec::with_capacity(256);
        let mut acks: Vec<(ReqId, SocketAddr)> = Vec::new();
        let mut at = 0usize;
        let mut instructions = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let first = match sock.recv_from(&mut b) {
                Ok(x) => x,
                Err(_) => continue,
            };
            sock.set_nonblocking(true)?;
            let start = at % (REF_FILE_BYTES - 256 * RECORD);
            at = start;
            let mut got = Some(first);
            let mut taken = 0;
            while let Some((n, from)) = got.take() {
                taken += 1;
                let d = &b[..n];
                let small = crate::classify::peek(d).is_some_and(|p| p.inflated_size.is_none());
                if let Some(c) = small.then(|| classify(d).ok()).flatten() {
                    if c.fstype == FrameSetType::Startup.to_wire() {
                        instructions += 1;
                        let r = ReqId {
                            session: 1,
                            request: instructions,
                            queue: 0,
                        };
                        out.clear();
                        let m = Message::Stats { json: "{}" };
                        if encode(&m, Some(r), &EncodeOptions::default(), &mut out).is_ok() {
                            let _ = sock.send_to(&out, from);
                        }
                    } else if let Some(r) =
                        c.reqid.filter(|_| c.fstype != FrameSetType::Ack.to_wire())
                    {
                        let k = RECORD.min(n);
                        map[at..at + k].copy_from_slice(&d[..k]);
                        at += RECORD;
                        acks.push((r, from));
                    }
                }
                if taken < 256 {
                    got = sock.recv_from(&mut b).ok();
                }
            }
            sock.set_nonblocking(false)?;
            if acks.is_empty() {
                continue;
            }
            let page = start & !4095;
            map.flush_range(page, (at - page).next_multiple_of(4096))?;
            for (r, to) in acks.drain(..) {
                out.clear();
                if encode(&Message::Ack, Some(r), &EncodeOptions::default(), &mut out).is_ok() {
                    let _ = sock.send_to(&out, to);
                }
            }
        }
        Ok(())
    };
    let t = thread::Builder::new()
        .name("ack-bare".into())
        .spawn(server)
        .map_err(|e| format!("spawn: {e}"))?;
    Ok((addr, t))
}

/// `agents` closed loops against `cma` (run `run`), under `flood` if any
/// (switched on and off under `cfg.interleave`): their latencies, merged
/// (unflooded or paused, flood on), and what the flood sent.
fn load(
    cma: SocketAddr,
    agents: usize,
    run: usize,
    flood: Option<(u64, FloodKind)>,
    cfg: &AckBenchConfig,
) -> Result<([Histogram<u64>; 2], u64), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let phases = (cfg.interleave && flood.is_some()).then(|| Arc::new(Phases::new()));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let driver = phases.clone().map(|p| {
        let stop = stop_flood.clone();
        thread::spawn(move || p.drive(stop))
    });
    let flooder = flood.map(|(rate, kind)| {
        let (stop, phases) = (stop_flood.clone(), phases.clone());
        thread::spawn(move || self::flood(cma, rate, kind, stop, phases))
    });
    let reports = cfg.reports;
    let clients: Vec<_> = (0..agents)
        .map(|k| {
            let phases = phases.clone();
            thread::spawn(move || agent(k, run, cma, reports, phases.as_deref()))
        })
        .collect();
    let mut all = [histogram(), histogram()];
    let mut failure = None;
    for c in clients {
        match c.join() {
            Ok(Ok(h)) => {
                let _ = all[0].add(&h[0]);
                let _ = all[1].add(&h[1]);
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("an agent thread panicked".into()),
        }
    }
    stop_flood.store(true, Ordering::Release);
    if let Some(d) = driver {
        let _ = d.join();
    }
    let mut sent = 0;
    if let Some(f) = flooder {
        match f.join() {
            Ok(Ok(n)) => sent = n,
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("the flood thread panicked".into()),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((all, sent)),
    }
}

/// The latency to report for a run and, interleaved, the paused phase's.
fn split(h: &[Histogram<u64>; 2], interleaved: bool) -> (Dist, Option<Dist>) {
    if interleaved {
        (Dist::of(&h[1]), Some(Dist::of(&h[0])))
    } else {
        (Dist::of(&h[0]), None)
    }
}

/// One agent against the bare server, under `flood` if any.
fn bare_run(
    run: usize,
    flood: Option<(u64, FloodKind)>,
    cfg: &AckBenchConfig,
    dir: &Path,
) -> Result<(Dist, Tally), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (addr, server) = bare_server(&dir.join(format!("bare{run}")), stop.clone())?;
    let measured = load(addr, 1, 1000 + run, flood, cfg);
    stop.store(true, Ordering::Release);
    let served = server
        .join()
        .map_err(|_| "the bare server panicked".to_string())?;
    let _ = std::fs::remove_file(dir.join(format!("bare{run}")));
    served.map_err(|e| format!("bare server: {e}"))?;
    let (h, sent) = measured?;
    let (d, calm) = split(&h, cfg.interleave && flood.is_some());
    let tally = Tally {
        sent,
        calm,
        ..Tally::default()
    };
    Ok((d, tally))
}

/// One run: a daemon with its defaults, `agents` closed loops at once,
/// under a flood of `flood` (rate, kind) if any.
fn daemon_run(
    agents: usize,
    run: usize,
    flood: Option<(u64, FloodKind)>,
    cfg: &AckBenchConfig,
) -> Result<(Dist, Tally), String> {
    let data = TempDir::new(&cfg.dir, &format!("run{run}"))?;
    let mut c = Config::from_toml(
        "listen = [\"127.0.0.1:0\"]\nlog_level = \"error\"\n[metrics]\nlisten = \"\"\n",
    )
    .map_err(|e| e.0)?;
    c.data_dir = data.path().to_path_buf();
    let d = Daemon::start(c, false).map_err(|e| e.0)?;
    let cma = d.local_addrs()[0];
    let stop = d.stop_handle();
    let counters = d.counters();
    let daemon = thread::Builder::new()
        .name("cma-log".into())
        .spawn(move || d.run())
        .map_err(|e| format!("spawn the daemon: {e}"))?;
    let measured = load(cma, agents, run, flood, cfg);
    stop.stop();
    let r = daemon
        .join()
        .map_err(|_| "the daemon panicked".to_string())?;
    r.map_err(|e| e.0)?;
    let (h, sent) = measured?;
    let (d, calm) = split(&h, cfg.interleave && flood.is_some());
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let tally = Tally {
        sent,
        logged: get(&counters.appended),
        syncs: get(&counters.syncs),
        largest_sync: get(&counters.max_batch),
        calm,
    };
    Ok((d, tally))
}

/// Runs the references, then the daemon once per entry of `cfg.agents`.
pub fn run(cfg: &AckBenchConfig) -> Result<AckBenchResult, String> {
    let refs = TempDir::new(&cfg.dir, "ref")?;
    let n = cfg.reports.max(100);
    let io = |e: std::io::Error| format!("reference file in {}: {e}", cfg.dir.display());
    let msync = msync_reference(&refs.path().join("msync"), 4096, n).map_err(io)?;
    let fdatasync = fdatasync_reference(&refs.path().join("fdatasync"), n).map_err(io)?;
    let msync_large_folios = msync_reference(&refs.path().join("large"), 1 << 20, n).map_err(io)?;
    let mut runs = Vec::new();
    let mut flooded = Vec::new();
    let mut bare = Vec::new();
    if cfg.flood_rate > 0 {
        let (d, t) = bare_run(0, None, cfg, refs.path())?;
        bare.push((None, d, t));
        for (k, &kind) in cfg.flood_kinds.iter().enumerate() {
            let (d, sent) = bare_run(1 + k, Some((cfg.flood_rate, kind)), cfg, refs.path())?;
            bare.push((Some(kind), d, sent));
        }
    }
    for (i, &a) in cfg.agents.iter().enumerate() {
        let per = 1 + cfg.flood_kinds.len();
        runs.push((a, daemon_run(a, per * i, None, cfg)?.0));
        if cfg.flood_rate > 0 {
            for (k, &kind) in cfg.flood_kinds.iter().enumerate() {
                let f = Some((cfg.flood_rate, kind));
                let (d, sent) = daemon_run(a, per * i + 1 + k, f, cfg)?;
                flooded.push((kind, a, d, sent));
            }
        }
    }
    Ok(AckBenchResult {
        msync,
        fdatasync,
        msync_large_folios,
        runs,
        flooded,
        bare,
    })
}

fn row(name: &str, d: &Dist, reference: &Dist) -> String {
    format!(
        "{name:<44} {:>7} {:>7} {:>7} {:>7} {:>7}   x{:.2} / x{:.2}\n",
        d.p50,
        d.p90,
        d.p99,
        d.p999,
        d.max,
        d.p50 as f64 / reference.p50.max(1) as f64,
        d.p99 as f64 / reference.p99.max(1) as f64,
    )
}

/// RabbitMQ 3.10, durable classic queue with publisher confirms, one
/// message in flight, on the machine shared/BENCH.md describes: p50, p99.
pub const RABBITMQ_US: (u64, u64) = (590, 1000);

/// The table.
pub fn render(cfg: &AckBenchConfig, r: &AckBenchResult) -> String {
    let mut s = format!(
        "cma bench ack: {} reports per agent, one in flight each; data and reference files in {}\n\
         latency, us                                      p50     p90     p99   p99.9     max   vs msync p50 / p99\n",
        cfg.reports,
        cfg.dir.display()
    );
    let m = &r.msync;
    s += &row("reference: 128 B + one-page msync", m, m);
    s += &row("reference: 128 B pwrite + fdatasync", &r.fdatasync, m);
    s += &row(
        "  (msync, file pre-zeroed in 1 MiB writes)",
        &r.msync_large_folios,
        m,
    );
    for (a, d) in &r.runs {
        s += &row(
            &format!("cma run (defaults), {a} agent(s): report -> ACK"),
            d,
            m,
        );
    }
    let on = if cfg.interleave { " on" } else { "" };
    for (kind, a, d, t) in &r.flooded {
        if let Some(calm) = &t.calm {
            s += &row(
                &format!("  {a} agent(s), {} flood paused", kind.name()),
                calm,
                m,
            );
        }
        s += &row(
            &format!(
                "  {a} agent(s), {} flood{on} ({} sent)",
                kind.name(),
                t.sent
            ),
            d,
            m,
        );
        s += &format!(
            "    (the daemon logged {} records in {} syncs, at most {} in one)\n",
            t.logged, t.syncs, t.largest_sync
        );
    }
    let calm_bare = r.bare.iter().find(|b| b.0.is_none()).map(|b| b.1);
    for (kind, d, t) in &r.bare {
        if let (Some(k), Some(calm)) = (kind, &t.calm) {
            s += &row(
                &format!("  bare server, {} flood paused", k.name()),
                calm,
                m,
            );
        }
        let name = match kind {
            None => "reference: bare server (msync + ACK), 1 agent".to_string(),
            Some(k) => format!("  bare server, {} flood{on} ({} sent)", k.name(), t.sent),
        };
        s += &row(&name, d, m);
    }
    for kind in &cfg.flood_kinds {
        if r.flooded.iter().any(|f| f.0 == *kind) {
            s += &format!(
                "  ({} flood: {} datagrams/s of {})\n",
                kind.name(),
                cfg.flood_rate,
                kind.describe()
            );
        }
    }
    for (kind, a, d, t) in &r.flooded {
        let run = r.runs.iter().find(|(x, _)| x == a).map(|x| &x.1);
        if let Some((calm, what)) = baseline(t, run) {
            let ok = d.p99 <= 2 * calm.p99;
            s += &format!(
                "  {a} agent(s), {} flood: p99 {} us vs {} {what} (x{:.1}): goal <= 2x {}\n",
                kind.name(),
                d.p99,
                calm.p99,
                d.p99 as f64 / calm.p99.max(1) as f64,
                if ok { "met" } else { "NOT met" }
            );
        }
    }
    for (kind, d, t) in &r.bare {
        if let (Some(k), Some((calm, what))) = (kind, baseline(t, calm_bare.as_ref())) {
            s += &format!(
                "  the bare server (the machine's floor), {} flood: p99 {} us vs {} {what} (x{:.1})\n",
                k.name(),
                d.p99,
                calm.p99,
                d.p99 as f64 / calm.p99.max(1) as f64,
            );
        }
    }
    s +=
        "targets: p50 <= msync p50 + 100 us, p99 <= 2 x msync p99, and 3x better than RabbitMQ's\n";
    for (a, d) in &r.runs {
        let ok = |b: bool| if b { "met" } else { "NOT met" };
        s += &format!(
            "  {a} agent(s): p50 {} ({} <= {}), p99 {} ({} <= {}), vs RabbitMQ p50 {} / p99 {} ({} / {})\n",
            ok(d.p50 <= m.p50 + 100),
            d.p50,
            m.p50 + 100,
            ok(d.p99 <= 2 * m.p99),
            d.p99,
            2 * m.p99,
            ok(3 * d.p50 <= RABBITMQ_US.0),
            ok(3 * d.p99 <= RABBITMQ_US.1),
            RABBITMQ_US.0,
            RABBITMQ_US.1,
        );
    }
    s
}

/// What a flooded run is judged against: the reports sent while its flood
/// was paused (interleaved), else the unflooded run of the same round.
fn baseline<'a>(t: &'a Tally, unflooded: Option<&'a Dist>) -> Option<(&'a Dist, &'static str)> {
    match &t.calm {
        Some(c) => Some((c, "with it paused, same run")),
        None => unflooded.map(|u| (u, "unflooded")),
    }
}

/// Over rounds: a flooded p99 against the unflooded p99 of its own round.
#[derive(Clone, Debug)]
pub struct FloodMedian {
    /// The flood.
    pub kind: FloodKind,
    /// Agents of the run (`None`: the bare server, one agent).
    pub agents: Option<usize>,
    /// Each round's flooded p99 / unflooded p99.
    pub ratios: Vec<f64>,
    /// Their median.
    pub median: f64,
}

/// The median ratio of each (flood, agents) over `rounds`, the bare
/// server's too.
pub fn flood_medians(rounds: &[AckBenchResult]) -> Vec<FloodMedian> {
    let mut keys: Vec<(FloodKind, Option<usize>)> = Vec::new();
    if let Some(r) = rounds.first() {
        keys.extend(r.flooded.iter().map(|f| (f.0, Some(f.1))));
        keys.extend(r.bare.iter().filter_map(|b| b.0.map(|k| (k, None))));
    }
    keys.into_iter()
        .map(|(kind, agents)| {
            let mut ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|r| {
                    let (flooded, calm) = match agents {
                        Some(a) => {
                            let f = r.flooded.iter().find(|f| f.0 == kind && f.1 == a)?;
                            let run = r.runs.iter().find(|x| x.0 == a).map(|x| &x.1);
                            (f.2, *baseline(&f.3, run)?.0)
                        }
                        None => {
                            let b = r.bare.iter().find(|b| b.0 == Some(kind))?;
                            let calm = r.bare.iter().find(|b| b.0.is_none()).map(|b| &b.1);
                            (b.1, *baseline(&b.2, calm)?.0)
                        }
                    };
                    Some(flooded.p99 as f64 / calm.p99.max(1) as f64)
                })
                .collect();
            ratios.sort_by(f64::total_cmp);
            let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
            FloodMedian {
                kind,
                agents,
                ratios,
                median,
            }
        })
        .collect()
}

/// The summary of several rounds: each flood's median ratio, the goal.
pub fn render_rounds(rounds: &[AckBenchResult]) -> String {
    let interleaved = rounds
        .first()
        .and_then(|r| r.flooded.first())
        .is_some_and(|f| f.3.calm.is_some());
    let against = if interleaved {
        "p99 with the flood paused in the same run"
    } else {
        "unflooded p99 of the same round"
    };
    let mut s = format!(
        "over {} rounds, flooded p99 / {against} (median; each round):\n",
        rounds.len()
    );
    for m in flood_medians(rounds) {
        let who = match m.agents {
            Some(a) => format!("cma run, {a} agent(s)"),
            None => "bare server (the machine's floor), 1 agent".to_string(),
        };
        let each: Vec<String> = m.ratios.iter().map(|r| format!("x{r:.1}")).collect();
        let goal = match m.agents {
            Some(_) if m.median <= 2.0 => ": goal <= 2x met",
            Some(_) => ": goal <= 2x NOT met",
            None => "",
        };
        s += &format!(
            "  {who}, {} flood: x{:.1} ({}){goal}\n",
            m.kind.name(),
            m.median,
            each.join(" ")
        );
    }
    s
}

fn dist_json(d: &Dist) -> serde_json::Value {
    serde_json::json!({
        "count": d.count, "p50_us": d.p50, "p90_us": d.p90, "p99_us": d.p99,
        "p999_us": d.p999, "max_us": d.max,
    })
}

/// The result as JSON.
pub fn to_json(cfg: &AckBenchConfig, r: &AckBenchResult) -> serde_json::Value {
    serde_json::json!({
        "bench": "ack",
        "reports_per_agent": cfg.reports,
        "dir": cfg.dir.display().to_string(),
        "reference_msync": dist_json(&r.msync),
        "reference_fdatasync": dist_json(&r.fdatasync),
        "reference_msync_large_folios": dist_json(&r.msync_large_folios),
        "rabbitmq_us": {"p50": RABBITMQ_US.0, "p99": RABBITMQ_US.1},
        "runs": r.runs.iter().map(|(a, d)| {
            let mut v = dist_json(d);
            v["agents"] = serde_json::json!(a);
            v
        }).collect::<Vec<_>>(),
        "flood_rate": cfg.flood_rate,
        "interleave": cfg.interleave,
        "flooded": r.flooded.iter().map(|(kind, a, d, t)| {
            let mut v = dist_json(d);
            v["kind"] = serde_json::json!(kind.name());
            v["agents"] = serde_json::json!(a);
            v["flood_sent"] = serde_json::json!(t.sent);
            v["logged"] = serde_json::json!(t.logged);
            v["syncs"] = serde_json::json!(t.syncs);
            v["largest_sync"] = serde_json::json!(t.largest_sync);
            if let Some(c) = &t.calm {
                v["paused"] = dist_json(c);
            }
            v
        }).collect::<Vec<_>>(),
        "bare_server": r.bare.iter().map(|(kind, d, t)| {
            let mut v = dist_json(d);
            v["kind"] = serde_json::json!(kind.map(|k| k.name()));
            v["flood_sent"] = serde_json::json!(t.sent);
            if let Some(c) = &t.calm {
                v["paused"] = dist_json(c);
            }
            v
        }).collect::<Vec<_>>(),
    })
}

/// Percentiles of every series, on a log scale.
pub fn to_svg(r: &AckBenchResult) -> String {
    use std::fmt::Write as _;
    let (w, h, m) = (640.0, 400.0, 50.0);
    let mut series: Vec<(String, &str, Dist)> = vec![
        ("msync (reference)".into(), "#2ca02c", r.msync),
        ("fdatasync (reference)".into(), "#9467bd", r.fdatasync),
    ];
    let colours = ["#1f77b4", "#d62728", "#ff7f0e", "#8c564b"];
    for (i, (a, d)) in r.runs.iter().enumerate() {
        series.push((format!("cma, {a} agent(s)"), colours[i % colours.len()], *d));
    }
    let max_us = series.iter().map(|x| x.2.max).max().unwrap_or(1).max(2) as f64;
    let y = |us: u64| h - m - ((us as f64).max(1.0).ln() / max_us.ln()) * (h - 2.0 * m);
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let x = |k: usize| m + (k as f64 / 4.0) * (w - 2.0 * m);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<text x=\"{m}\" y=\"20\">cma bench ack: report -&gt; durable ACK vs the disk (log scale, us; max {max_us})</text>"
    );
    for (k, l) in labels.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{l}</text>",
            x(k),
            h - m + 15.0
        );
    }
    for (i, (name, colour, d)) in series.iter().enumerate() {
        let v = [d.p50, d.p90, d.p99, d.p999, d.max];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(k, us)| format!("{:.1},{:.1}", x(k), y(*us)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}: p50 {} us, p99 {} us</text>",
            m + 10.0,
            m + 15.0 * (i as f64 + 1.0),
            d.p50,
            d.p99
        );
    }
    s.push_str("</svg>\n");
    s
}
