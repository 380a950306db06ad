//! The io thread's loop: a mio `Poll` over UDP sockets, `recvmmsg` straight
//! into ring slots until the sockets are drained, and a `Waker` to be told
//! about shutdown (and, later, outbound work).
//!
//! Sockets are made with socket2: non-blocking, `SO_RCVBUF` as configured
//! (root may exceed `rmem_max` with `SO_RCVBUFFORCE`), optional
//! `SO_REUSEPORT`, `SO_RXQ_OVFL` so that kernel drops are counted, and
//! `IPV6_V6ONLY` on IPv6 sockets so that `0.0.0.0` and `[::]` can both be
//! bound on one port. Receive time comes from a monotonic clock, read once
//! per batch. Nothing here allocates per packet.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use super::mmsg::{self, MMSG_BATCH_MAX};
use crate::ring_buffer::Producer;

/// Token of the waker.
const WAKER: Token = Token(usize::MAX);

/// How to open the io loop's sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// Addresses to bind (one socket each).
    pub listen: Vec<SocketAddr>,
    /// Receive buffer per socket, bytes.
    pub rcvbuf_bytes: usize,
    /// Set `SO_REUSEPORT` (several readers on one port).
    pub reuse_port: bool,
    /// Datagrams per `recvmmsg` (1 ..= 64).
    pub batch: usize,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1984))],
            rcvbuf_bytes: 32 << 20,
            reuse_port: false,
            batch: MMSG_BATCH_MAX,
        }
    }
}

/// Counters of the io loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams put into the ring.
    pub received: u64,
    /// Datagrams read and dropped because the ring was full.
    pub ring_full_drops: u64,
    /// Datagrams longer than a slot, cut (no spill queue, or it was full).
    pub truncated: u64,
    /// Datagrams longer than a slot, passed whole through the spill queue.
    pub spilled: u64,
    /// Kernel drops (sum over sockets of the last `SO_RXQ_OVFL` seen).
    pub kernel_drops: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub batches: u64,
    /// Poll wake-ups.
    pub wakeups: u64,
}

/// Live counters, readable from other threads (metrics, tests). Updated
/// once per `recvmmsg` batch, not per datagram.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Datagrams put into the ring.
    pub received: AtomicU64,
    /// Datagrams dropped because the ring was full.
    pub ring_full_drops: AtomicU64,
    /// Datagrams longer than a slot, cut.
    pub truncated: AtomicU64,
    /// Datagrams longer than a slot, passed whole.
    pub spilled: AtomicU64,
    /// Kernel drops seen through `SO_RXQ_OVFL`.
    pub kernel_drops: AtomicU64,
}

/// A handle that stops the loop from another thread.
#[derive(Clone)]
pub struct IoHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    counters: Arc<IoCounters>,
}

impl IoHandle {
    /// The loop's live counters.
    pub fn counters(&self) -> &IoCounters {
        &self.counters
    }

    /// Asks the loop to return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        // A failed wake only delays the stop until the next poll timeout.
        let _ = self.waker.wake();
    }
}

/// The io loop.
pub struct IoLoop {
    poll: Poll,
    sockets: Vec<UdpSocket>,
    kernel_drops: Vec<u32>,
    producer: Producer,
    stop: Arc<AtomicBool>,
    batch: usize,
    clock: Instant,
    scratch: Vec<u8>,
    /// Datagrams longer than a slot: their tails land in the area, and the
    /// whole datagram goes to the consumer through the queue, in slot order
    /// (the slot is flagged [`mmsg::SLOT_SPILLED`]).
    spill: Option<(mmsg::SpillArea, crossbeam_channel::Sender<Vec<u8>>)>,
    stats: IoStats,
    counters: Arc<IoCounters>,
}

/// The consumer's end of the spill queue: whole datagrams longer than a
/// slot, one per slot flagged [`mmsg::SLOT_SPILLED`], in slot order.
pub type SpillReceiver = crossbeam_channel::Receiver<Vec<u8>>;

/// Datagrams longer than a slot that may wait in the spill queue (at most
/// 64 KiB each: 64 MiB in all). Past it they are cut and counted.
pub const SPILL_QUEUE_MAX: usize = 1024;

/// Opens one UDP socket as configured.
pub fn open_socket(addr: SocketAddr, config: &IoConfig) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if config.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Root may go past net.core.rmem_max; others get what the kernel allows.
    let force = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::RcvBufForce,
        &config.rcvbuf_bytes,
    );
    if force.is_err() {
        socket.set_recv_buffer_size(config.rcvbuf_bytes)?;
    }
    set_rxq_ovfl(&socket)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn set_rxq_ovfl(socket: &Socket) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RxqOvfl, &1)
        .map_err(io::Error::from)
}

impl IoLoop {
    /// Binds the sockets and returns the loop and a handle to stop it.
    pub fn bind(config: &IoConfig, producer: Producer) -> io::Result<(IoLoop, IoHandle)> {
        if config.listen.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to listen on",
            ));
        }
        let poll = Poll::new()?;
        let mut sockets = Vec::with_capacity(config.listen.len());
        for (i, addr) in config.listen.iter().enumerate() {
            let std_socket = open_socket(*addr, config)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let mut s = UdpSocket::from_std(std_socket);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)?;
            sockets.push(s);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let scratch = vec![0u8; producer.slot_size()];
        let kernel_drops = vec![0; sockets.len()];
        let counters = Arc::new(IoCounters::default());
        let io = IoLoop {
            poll,
            sockets,
            kernel_drops,
            producer,
            stop: stop.clone(),
            batch: config.batch.clamp(1, MMSG_BATCH_MAX),
            clock: Instant::now(),
            scratch,
            spill: None,
            stats: IoStats::default(),
            counters: counters.clone(),
        };
        Ok((
            io,
            IoHandle {
                waker,
                stop,
                counters,
            },
        ))
    }

    /// Passes datagrams longer than a slot whole, through a queue that the
    /// consumer reads for every slot flagged [`mmsg::SLOT_SPILLED`]; without
    /// it they are cut to the slot and flagged [`mmsg::SLOT_TRUNCATED`].
    pub fn with_spill(mut self) -> (IoLoop, SpillReceiver) {
        let (tx, rx) = crossbeam_channel::bounded(SPILL_QUEUE_MAX);
        self.spill = Some((mmsg::SpillArea::default(), tx));
        (self, rx)
    }

    /// The bound addresses (port 0 resolved).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.sockets.iter().map(|s| s.local_addr()).collect()
    }

    /// Duplicates of the bound sockets, for sending from the same
    /// addresses (non-blocking, like the originals).
    pub fn send_sockets(&self) -> io::Result<Vec<std::net::UdpSocket>> {
        use std::os::fd::AsFd;
        self.sockets
            .iter()
            .map(|s| Ok(std::net::UdpSocket::from(s.as_fd().try_clone_to_owned()?)))
            .collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// The monotonic clock's origin: slot timestamps are ns since it.
    pub fn clock(&self) -> Instant {
        self.clock
    }

    /// Runs until [`IoHandle::stop`]. Returns the final counters; the ring's
    /// producer is dropped on return, which tells the consumer the end.
    pub fn run(mut self) -> io::Result<IoStats> {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::Acquire) {
            // The waker makes a long timeout safe; it only bounds how late a
            // lost wake would be noticed.
            match self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.stats.wakeups += 1;
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.drain(ev.token().0)?;
                }
            }
        }
        Ok(self.stats)
    }

    fn publish_counters(&self) {
        let c = &self.counters;
        c.received.store(self.stats.received, Ordering::Relaxed);
        c.truncated.store(self.stats.truncated, Ordering::Relaxed);
        c.spilled.store(self.stats.spilled, Ordering::Relaxed);
        c.kernel_drops
            .store(self.stats.kernel_drops, Ordering::Relaxed);
    }

    /// Reads socket `i` until it would block (edge-triggered polling needs
    /// that).
    fn drain(&mut self, i: usize) -> io::Result<()> {
        let fd = self.sockets[i].as_raw_fd();
        let slot_size = self.producer.slot_size();
        loop {
            let now_ns = self.clock.elapsed().as_nanos() as u64;
            if self.producer.free_count() == 0 {
                // Ring full: the consumer is behind. Drop and count rather
                // than stall the socket (the kernel would drop anyway, later
                // and less visibly).
                let n = mmsg::recv_discard(fd, &mut self.scratch, libc::MSG_DONTWAIT)?;
                if n == 0 {
                    return Ok(());
                }
                self.stats.ring_full_drops += n as u64;
                self.counters
                    .ring_full_drops
                    .store(self.stats.ring_full_drops, Ordering::Relaxed);
                continue;
            }
            let mut batch = self.producer.write_batch(self.batch);
            let area = self.spill.as_mut().map(|s| &mut s.0);
            let info = mmsg::recv_into(fd, &mut batch, slot_size, now_ns, area)?;
            if info.received == 0 {
                return Ok(());
            }
            for k in 0..info.received {
                let (buf, meta) = batch.slot(k);
                meta.tag = i as u32;
                if meta.flags & mmsg::SLOT_SPILLED != 0
                    && let Some((area, tx)) = &self.spill
                {
                    // Rare (a STARTUP of a host with many interfaces, a
                    // discovery FrameSet): one allocation per such datagram.
                    let len = meta.len as usize;
                    let mut whole = Vec::with_capacity(len);
                    whole.extend_from_slice(buf);
                    whole.extend_from_slice(area.tail(k, len - buf.len()));
                    if tx.try_send(whole).is_ok() {
                        self.stats.spilled += 1;
                    } else {
                        meta.flags = mmsg::SLOT_TRUNCATED;
                        meta.len = buf.len() as u32;
                    }
                }
                if meta.flags & mmsg::SLOT_TRUNCATED != 0 {
                    self.stats.truncated += 1;
                }
            }
            batch.commit(info.received);
            self.stats.received += info.received as u64;
            self.stats.batches += 1;
            if let Some(d) = info.kernel_drops {
                self.stats.kernel_drops += u64::from(d.wrapping_sub(self.kernel_drops[i]));
                self.kernel_drops[i] = d;
            }
            self.publish_counters();
        }
    }
}
