//! `cma bench recv`: in one run, a `sendmmsg` generator against (a) a bare
//! `recvmmsg` loop that discards everything and (b) our io loop + ring
//! buffer + a consumer that classifies every datagram; then the idle CPU
//! use of (b). Everything on loopback.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::classify::{DigestKind, Frame, ReqId, classify, seal};
use crate::engine::io::{IoConfig, IoLoop, open_socket};
use crate::engine::mmsg::{self, MMSG_BATCH_MAX, Outgoing, encode_sockaddr};
use crate::ring_buffer::{self, SLOT_ADDR_LEN};

/// What to run.
#[derive(Clone, Debug)]
pub struct RecvBenchConfig {
    /// Seconds the generator sends, per phase.
    pub seconds: f64,
    /// Datagrams per second offered; 0: flat out.
    pub rate: u64,
    /// Datagram size in bytes (>= 95): an HBDEAD with REQID, padded.
    pub size: usize,
    /// Seconds of idle measurement after the phases.
    pub idle_seconds: f64,
    /// Ring capacity (power of two) and slot size.
    pub ring_capacity: usize,
    /// Bytes per slot.
    pub slot_size: usize,
    /// Pin the generator to CPU 0 and the receiving threads to CPU 1.
    pub pin: bool,
    /// One datagram in this many is `large_size` bytes (0: none): longer
    /// than a slot, it takes the io loop's spill path.
    pub large_every: usize,
    /// Bytes of the large datagrams.
    pub large_size: usize,
}

impl Default for RecvBenchConfig {
    fn default() -> Self {
        RecvBenchConfig {
            seconds: 5.0,
            rate: 0,
            size: 128,
            idle_seconds: 3.0,
            ring_capacity: 16384,
            slot_size: 2048,
            pin: true,
            large_every: 0,
            large_size: 20_000,
        }
    }
}

/// One phase's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseResult {
    /// Datagrams the generator sent.
    pub sent: u64,
    /// Datagrams the receiver got.
    pub received: u64,
    /// Datagrams the consumer classified as accepted (phase b).
    pub classified: u64,
    /// UDP receive-buffer drops seen by the kernel (`/proc/net/snmp`).
    pub kernel_drops: u64,
    /// Drops because the ring was full (phase b).
    pub ring_drops: u64,
    /// Datagrams longer than a slot passed whole (phase b).
    pub spilled: u64,
    /// Datagrams longer than a slot cut (phase b: the spill queue full).
    pub truncated: u64,
    /// Seconds the generator ran.
    pub seconds: f64,
}

impl PhaseResult {
    /// Received per second of generator time.
    pub fn received_per_s(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct RecvBenchResult {
    /// (a) bare recvmmsg discard loop.
    pub bare: PhaseResult,
    /// (b) io loop + ring + classify.
    pub ours: PhaseResult,
    /// Process CPU time over wall time while (b) sat idle, percent.
    pub idle_cpu_percent: f64,
}

impl RecvBenchResult {
    /// (b)/(a) received per second.
    pub fn ratio(&self) -> f64 {
        self.ours.received_per_s() / self.bare.received_per_s()
    }
}

/// The benchmark datagram: an HBDEAD with a REQID and an IPv6 peer, padded
/// with an unknown frame (which classify skips) to `size` bytes.
pub fn bench_datagram(size: usize) -> Result<Vec<u8>, String> {
    let mut frames = Vec::new();
    Frame::ReqId(ReqId {
        session: 1,
        request: 1,
        queue: 0,
    })
    .emit(&mut frames);
    Frame::IpPort("[fd00::1:2]:1984".parse().map_err(|e| format!("{e}"))?).emit(&mut frames);
    let base = 7 + 39 + frames.len() + 5;
    if size < base + 5 && size != base {
        return Err(format!(
            "datagram size must be {base} or at least {}",
            base + 5
        ));
    }
    if size > base {
        let pad = vec![0u8; size - base - 5];
        Frame::Unknown {
            ftype: 999,
            value: &pad,
        }
        .emit(&mut frames);
    }
    Frame::End.emit(&mut frames);
    let mut out = Vec::new();
    seal(26, &frames, DigestKind::Sha256, &mut out);
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

/// Pins the calling thread to `cpu` (modulo the cores there are); a
/// failure only costs precision, so it is logged, not fatal.
pub fn pin_to(cpu: usize) {
    // Count the machine's CPUs, not this thread's: after one pin, the
    // thread's own set has a single CPU.
    let cores = mmsg::online_cpus();
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu % cores).is_ok()
        && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
    {
        log::warn!("cannot pin to CPU {cpu}: {e}");
    }
}

/// Sends `datagram` to `target` for `seconds` at `rate` (0: flat out);
/// returns how many and for how long. Runs on its own thread, pinned to
/// CPU 0 if asked (the caller stays unpinned, so that later threads inherit
/// the full CPU set).
fn generate(
    target: SocketAddr,
    datagram: &[Vec<u8>],
    config: &RecvBenchConfig,
) -> std::io::Result<(u64, f64)> {
    let datagram = datagram.to_vec();
    let (rate, seconds, pin) = (config.rate, config.seconds, config.pin);
    std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            if pin {
                pin_to(0);
            }
            generate_here(target, &datagram, rate, seconds)
        })?
        .join()
        .map_err(|_| std::io::Error::other("generator panicked"))?
}

/// Sends the datagrams of `pattern` in turn, over and over.
fn generate_here(
    target: SocketAddr,
    pattern: &[Vec<u8>],
    rate: u64,
    seconds: f64,
) -> std::io::Result<(u64, f64)> {
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.set_nonblocking(true)?;
    let fd = socket.as_raw_fd();
    let mut addr = [0u8; SLOT_ADDR_LEN];
    let addr_len = encode_sockaddr(&target, &mut addr);
    // The pattern repeated so that any window of a batch's length starting
    // inside its first copy is one slice.
    let copies = MMSG_BATCH_MAX.div_ceil(pattern.len().max(1)) + 1;
    let msgs: Vec<Outgoing<'_>> = (0..copies * pattern.len())
        .map(|i| Outgoing {
            data: &pattern[i % pattern.len()],
            addr: &addr,
            addr_len,
        })
        .collect();
    let start = Instant::now();
    let end = Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= end {
            break;
        }
        let mut n = MMSG_BATCH_MAX;
        if rate > 0 {
            // Open loop: send what the schedule says is due by now.
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            if due <= sent {
                std::hint::spin_loop();
                continue;
            }
            n = n.min((due - sent) as usize);
        }
        let at = (sent % pattern.len() as u64) as usize;
        let k = mmsg::send_batch(fd, &msgs[at..at + n])?;
        if k == 0 {
            std::thread::yield_now();
        }
        sent += k as u64;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// `RcvbufErrors` of IPv4 UDP from `/proc/net/snmp` (0 if unreadable).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Process CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

fn bare_phase(config: &RecvBenchConfig, datagram: &[Vec<u8>]) -> std::io::Result<PhaseResult> {
    let io_config = IoConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..IoConfig::default()
    };
    let socket = open_socket(io_config.listen[0], &io_config)?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let target = socket.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let pin = config.pin;
    let receiver = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("bare-recv".into())
            .spawn(move || {
                if pin {
                    pin_to(1);
                }
                let mut scratch = vec![0u8; 65536];
                let fd = socket.as_raw_fd();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += mmsg::recv_discard(fd, &mut scratch, libc::MSG_WAITFORONE).unwrap_or(0)
                        as u64;
                }
                n
            })?
    };
    let drops_before = udp_rcvbuf_errors();
    let (sent, seconds) = generate(target, datagram, config)?;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let received = receiver
        .join()
        .map_err(|_| std::io::Error::other("receiver panicked"))?;
    Ok(PhaseResult {
        sent,
        received,
        kernel_drops: udp_rcvbuf_errors().saturating_sub(drops_before),
        seconds,
        ..PhaseResult::default()
    })
}

fn our_phase(
    config: &RecvBenchConfig,
    datagram: &[Vec<u8>],
) -> std::io::Result<(PhaseResult, f64)> {
    let (producer, mut consumer) = ring_buffer::channel(config.ring_capacity, config.slot_size);
    let io_config = IoConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..IoConfig::default()
    };
    let (io, handle) = IoLoop::bind(&io_config, producer)?;
    let (io, spill) = io.with_spill();
    let target = io.local_addrs()?[0];
    let pin = config.pin;
    let io_thread = std::thread::Builder::new()
        .name("io".into())
        .spawn(move || {
            if pin {
                pin_to(1);
            }
            io.run()
        })?;
    // The consumer returns how many datagrams classified as accepted.
    let consumer_thread = std::thread::Builder::new()
        .name("classify".into())
        .spawn(move || {
            if pin {
                pin_to(1);
            }
            let mut ok = 0u64;
            while !consumer.is_finished() {
                if !consumer.wait(Some(Duration::from_millis(100))) {
                    continue;
                }
                let batch = consumer.read_batch(MMSG_BATCH_MAX);
                for i in 0..batch.len() {
                    let (data, meta) = batch.get(i);
                    // As the daemon's log thread: a long datagram whole.
                    let whole = (meta.flags & mmsg::SLOT_SPILLED != 0)
                        .then(|| spill.try_recv().ok())
                        .flatten();
                    ok += u64::from(classify(whole.as_deref().unwrap_or(data)).is_ok());
                }
                batch.release();
            }
            ok
        })?;
    let drops_before = udp_rcvbuf_errors();
    let (sent, seconds) = generate(target, datagram, config)?;
    std::thread::sleep(Duration::from_millis(100));
    let kernel_drops = udp_rcvbuf_errors().saturating_sub(drops_before);
    // Idle: nothing arrives; the threads should sleep.
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(config.idle_seconds));
    let idle_cpu_percent = 100.0 * (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    handle.stop();
    let stats = io_thread
        .join()
        .map_err(|_| std::io::Error::other("io thread panicked"))??;
    let classified = consumer_thread
        .join()
        .map_err(|_| std::io::Error::other("consumer panicked"))?;
    Ok((
        PhaseResult {
            sent,
            received: stats.received,
            classified,
            kernel_drops,
            ring_drops: stats.ring_full_drops,
            spilled: stats.spilled,
            truncated: stats.truncated,
            seconds,
        },
        idle_cpu_percent,
    ))
}

/// Runs both phases and the idle measurement.
pub fn run(config: &RecvBenchConfig) -> Result<RecvBenchResult, String> {
    let small = bench_datagram(config.size)?;
    if small.len() > config.slot_size {
        return Err(format!(
            "datagram of {} bytes exceeds the {}-byte slot",
            small.len(),
            config.slot_size
        ));
    }
    let mut datagram = vec![small];
    if config.large_every > 0 {
        if !(2049..=65_507).contains(&config.large_size) {
            return Err("large datagrams must be 2,049 to 65,507 bytes".into());
        }
        let mut pattern = vec![bench_datagram(config.large_size)?];
        pattern.extend(std::iter::repeat_n(
            datagram[0].clone(),
            config.large_every - 1,
        ));
        datagram = pattern;
    }
    let bare = bare_phase(config, &datagram).map_err(|e| format!("bare phase: {e}"))?;
    let (ours, idle_cpu_percent) =
        our_phase(config, &datagram).map_err(|e| format!("io loop phase: {e}"))?;
    Ok(RecvBenchResult {
        bare,
        ours,
        idle_cpu_percent,
    })
}

/// The report for people.
pub fn render(config: &RecvBenchConfig, r: &RecvBenchResult) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let offered = if config.rate == 0 {
        "flat out".to_string()
    } else {
        format!("{} /s", config.rate)
    };
    let mut s = format!(
        "cma bench recv: {}-byte HBDEAD FrameSets on loopback{}, offered {offered}, {:.1} s per phase\n\
         machine: {cores} cores, kernel {}, {profile} build; threads: generator + receiver (a), \
         generator + io + classify consumer (b); {}\n\n",
        config.size,
        if config.large_every > 0 {
            format!(
                " (1 in {} of {} bytes, past a {}-byte slot)",
                config.large_every, config.large_size, config.slot_size
            )
        } else {
            String::new()
        },
        config.seconds,
        kernel.trim(),
        if config.pin {
            "generator pinned to CPU 0, receiving threads to CPU 1"
        } else {
            "no thread pinned (the scheduler places all of them on 2 cores)"
        }
    );
    s += &format!(
        "{:<30} {:>12} {:>12} {:>12} {:>10} {:>12}\n",
        "phase", "sent/s", "received/s", "kernel drops", "ring drops", "classified"
    );
    for (name, p) in [
        ("(a) bare recvmmsg, discard", &r.bare),
        ("(b) io loop + ring + classify", &r.ours),
    ] {
        s += &format!(
            "{:<30} {:>12.0} {:>12.0} {:>12} {:>10} {:>12}\n",
            name,
            p.sent as f64 / p.seconds,
            p.received_per_s(),
            p.kernel_drops,
            p.ring_drops,
            if std::ptr::eq(p, &r.bare) {
                "-".to_string()
            } else {
                p.classified.to_string()
            }
        );
    }
    s += &format!("\nratio b/a (received/s): {:.3}\n", r.ratio());
    if config.large_every > 0 {
        s += &format!(
            "long datagrams in (b): {} passed whole through the spill queue, {} cut\n",
            r.ours.spilled, r.ours.truncated
        );
    }
    s += &format!(
        "idle CPU of (b) over {:.1} s with nothing arriving: {:.2}% of one core (process utime+stime / wall)\n",
        config.idle_seconds, r.idle_cpu_percent
    );
    s
}

/// The machine-readable result.
pub fn to_json(config: &RecvBenchConfig, r: &RecvBenchResult) -> serde_json::Value {
    let phase = |p: &PhaseResult| {
        json!({
            "sent": p.sent, "received": p.received, "classified": p.classified,
            "kernel_drops": p.kernel_drops, "ring_drops": p.ring_drops, "seconds": p.seconds,
            "spilled": p.spilled, "truncated": p.truncated,
            "received_per_s": p.received_per_s(),
        })
    };
    json!({
        "size": config.size, "rate": config.rate, "seconds": config.seconds,
        "large_every": config.large_every, "large_size": config.large_size,
        "bare": phase(&r.bare), "ours": phase(&r.ours), "ratio": r.ratio(),
        "idle_cpu_percent": r.idle_cpu_percent,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "pinned": config.pin,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_datagram_has_the_asked_size_and_classifies() {
        for size in [95, 100, 128, 1400] {
            let d = bench_datagram(size).unwrap();
            assert_eq!(d.len(), size);
            let c = classify(&d).unwrap();
            assert!(c.is_sequenced());
            assert_eq!(c.unknown_frames, u16::from(size > 95));
        }
        assert!(bench_datagram(97).is_err());
    }
}
