//! The log thread: classifies each datagram once, applies the receiving
//! half of reliable delivery, appends what it accepts to the write-ahead
//! log, appends TICKs when the decider has a deadline due, and (without a
//! sync thread) syncs and ACKs what became durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{DaemonError, StopHandle, err};
use super::inflater::{INLINE_INFLATE_MAX, Inflater, Refused};
use super::io::{IoHandle, SpillReceiver};
use super::limits::RegistrationLimiter;
use super::metrics::Metrics as Counters;
use super::mmsg::{self};
use super::send::{SendSockets, send_to};
use crate::classify::{
    Classified, EncodeOptions, FrameSetType, Message, ReqId, classify_with, encode, write_logged,
};
use crate::crypt::{Keyring, PeerKey};
use crate::reliable::{ConnKey, Inbound, Verdict, normalize};
use crate::ring_buffer::Consumer;
use crate::wal::{RecordKind, RecordMeta, Wal};

/// The highest REQID queue id that gets a connection: a nanoprobe uses
/// queue 0 only (fsprotocol.h `DEFAULT_FSP_QID`), so each registered
/// address holds at most four connections whatever it sends.
pub(super) const QUEUE_ID_MAX: u16 = 3;

/// An ACK to send: to whom, of what, and the key to encrypt it to (the
/// one the ACKed FrameSet came under).
pub(super) type AckTo = (SocketAddr, ReqId, Option<Arc<PeerKey>>);

/// Encodes an ACK of `r`, encrypted to `key` when there is one, into `out`.
pub(super) fn encode_ack(r: ReqId, key: Option<&PeerKey>, out: &mut Vec<u8>) -> bool {
    let Some(k) = key else {
        return encode(&Message::Ack, Some(r), &EncodeOptions::default(), out).is_ok();
    };
    let mut clear = Vec::with_capacity(64);
    encode(
        &Message::Ack,
        Some(r),
        &EncodeOptions::default(),
        &mut clear,
    )
    .is_ok()
        && k.seal(&clear, out).is_ok()
}

/// A delivered sequenced FrameSet whose ACK waits for its record to be
/// durable.
#[derive(Clone)]
pub(super) struct Delivered {
    pub(super) lsn: u64,
    pub(super) key: ConnKey,
    pub(super) peer: SocketAddr,
    pub(super) reqid: ReqId,
    /// A CONNSHUT: the connection is forgotten once it is ACKed (rule 2).
    pub(super) closes: bool,
    /// It came encrypted under this key: so goes its ACK.
    pub(super) sealed: Option<Arc<PeerKey>>,
}

/// Every delivered FrameSet, queued once in LSN order. Whoever syncs (the
/// sync thread, or the log thread without one) sends the ACKs of what
/// became durable and advances `acked_lsn`; the log thread then pops what
/// is at or below it and moves the receiving positions (for re-ACKs).
#[derive(Default)]
pub(super) struct AckQueue {
    pub(super) delivered: std::sync::Mutex<VecDeque<Delivered>>,
    /// Every ACK up to this LSN was sent.
    pub(super) acked_lsn: AtomicU64,
    /// The sync thread is syncing or sending ACKs: the log thread leaves
    /// the next group commit to it.
    pub(super) sync_busy: AtomicBool,
    /// The last record that must be synced at once (one an agent waits
    /// on); records after it (STARTUPs, TICKs) may wait for the next one,
    /// or `wal.lazy_sync_ms`.
    pub(super) urgent_lsn: AtomicU64,
}

impl AckQueue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivered>> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The (peer, REQID) of every ACK in (acked_lsn, durable], into
    /// `ready`; then everything up to `durable` counts as ACKed.
    /// Callers are serialised by the queue's lock: two syncing threads never
    /// take the same ACKs, and `acked_lsn` only grows.
    pub(super) fn take_durable(&self, durable: u64, ready: &mut Vec<AckTo>) {
        let q = self.lock();
        let from = self.acked_lsn.load(Ordering::Acquire);
        if durable <= from {
            return;
        }
        {
            let start = q.partition_point(|d| d.lsn <= from);
            let end = q.partition_point(|d| d.lsn <= durable);
            ready.extend(
                q.range(start..end)
                    .map(|d| (d.peer, d.reqid, d.sealed.clone())),
            );
        }
        self.acked_lsn.fetch_max(durable, Ordering::AcqRel);
        drop(q);
    }
}

/// The log clock: ms, continuing from the last record of the log, advanced
/// by this process's monotonic clock.
#[derive(Clone)]
pub(super) struct LogClock {
    pub(super) base_ms: u64,
    /// The io loop's clock origin (slot times are ns since it).
    pub(super) origin: Instant,
}

impl LogClock {
    pub(super) fn now_ms(&self) -> u64 {
        self.base_ms + self.origin.elapsed().as_millis() as u64
    }

    pub(super) fn now_ns(&self) -> u64 {
        self.base_ms * 1_000_000 + self.origin.elapsed().as_nanos() as u64
    }

    /// A slot's receive time on the log clock, ns.
    pub(super) fn slot_ns(&self, recv_ns: u64) -> u64 {
        self.base_ms * 1_000_000 + recv_ns
    }
}

pub(super) struct LogThread {
    pub(super) wal: Wal,
    /// Registered addresses: the WALLCLOCK of each one's last STARTUP and
    /// the LSN it was logged at (the decider forgets a registration as of
    /// an LSN: see `forget`).
    pub(super) incarnations: HashMap<SocketAddr, Registration>,
    /// From the decider: registrations it forgot (never ACKed their
    /// SETCONFIG), with the LSN that decided it.
    pub(super) forget: crossbeam_channel::Receiver<(SocketAddr, u64)>,
    /// Registrations per source network.
    pub(super) registrations: RegistrationLimiter,
    /// Inflated bytes per source network (`limits.inflate_*`).
    pub(super) inflation: super::limits::NetworkBuckets,
    /// Registered addresses at most (`limits.max_nodes`).
    pub(super) max_nodes: usize,
    /// Each source's share of a busy pass (`limits.fair_share`).
    pub(super) fair: super::limits::FairShare,
    /// To the decider: the classified form of what is logged as received.
    pub(super) handoff: crossbeam_channel::Sender<(u64, Vec<u8>)>,
    /// Delivered FrameSets waiting for their ACK (sent by the sync thread
    /// when there is one, else by this thread).
    pub(super) acks: Arc<AckQueue>,
    /// A sync thread syncs and sends the ACKs.
    pub(super) sync_thread: bool,
    /// STARTUPs and TICKs may wait for the sync thread's next group
    /// commit (`wal.lazy_sync_ms` > 0, with a sync thread).
    pub(super) lazy: bool,
    /// The sync thread, woken after appends.
    pub(super) syncer: Option<thread::Thread>,
    pub(super) inbound: HashMap<ConnKey, Inbound>,
    pub(super) send: SendSockets,
    pub(super) counters: Arc<Counters>,
    pub(super) next_deadline: Arc<AtomicU64>,
    pub(super) release_lsn: Arc<AtomicU64>,
    pub(super) clock: LogClock,
    pub(super) tick_ms: u64,
    pub(super) last_tick_ms: u64,
    /// Busy-poll the ring instead of parking.
    pub(super) spin: bool,
    pub(super) decider: thread::Thread,
    pub(super) out: Vec<u8>,
    /// Whole datagrams longer than a ring slot, one per slot flagged
    /// `SLOT_SPILLED`, in slot order.
    pub(super) spill: SpillReceiver,
    /// Sources already warned about a cut datagram (bounded: warned once
    /// each, up to [`TRUNCATED_WARN_MAX`] sources, counted always).
    pub(super) truncated_from: HashSet<IpAddr>,
    /// Scratch for the record being logged.
    pub(super) record: Vec<u8>,
    /// Scratch for ACKs to send.
    pub(super) ready: Vec<AckTo>,
    /// The CMA's keys: encrypted FrameSets are opened, keys in STARTUPs
    /// admitted (`None`: no key, nothing authenticated).
    pub(super) keyring: Option<Arc<Keyring>>,
    /// `auth.allow_unkeyed`.
    pub(super) allow_unkeyed: bool,
    /// Addresses that registered with a key: the key ids their sequenced
    /// FrameSets must come under (a few: a host that moved, a newcomer
    /// the decider weighs against the holder).
    pub(super) keyed: HashMap<SocketAddr, Vec<Arc<str>>>,
    /// Hosts and addresses already warned about (bounded).
    pub(super) auth_warned: HashSet<String>,
    /// Classifies large compressed FrameSets off this thread.
    pub(super) inflater: Inflater,
}

/// A registered address, as the log thread knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Registration {
    /// Its last STARTUP's WALLCLOCK.
    pub(super) wallclock_us: u64,
    /// The LSN of its last STARTUP logged (at a restart: the last LSN
    /// replayed, which every forgetting already seen precedes).
    pub(super) lsn: u64,
}

/// Records of one pass the log thread syncs itself when the sync thread
/// is idle (more go to the sync thread, and the log thread reads on).
const INLINE_SYNC_MAX: usize = 4;

/// Key ids one address may send under, at most.
const KEYS_PER_ADDR: usize = 4;

/// Sources named in a warning about cut datagrams, at most.
pub(super) const TRUNCATED_WARN_MAX: usize = 1024;

/// Datagrams a pass of the log thread takes from the ring at most.
const PASS_MAX: usize = 256;

impl LogThread {
    pub(super) fn run(
        &mut self,
        consumer: &mut Consumer,
        stop: &StopHandle,
        io: &IoHandle,
    ) -> Result<(), DaemonError> {
        let mut released = 0u64;
        loop {
            if stop.stopping() {
                io.stop();
            }
            let got = if self.spin {
                // Poll a while, never park: a wake-up costs ~40 us.
                consumer.wait(Some(Duration::ZERO))
            } else {
                consumer.wait(Some(Duration::from_millis(5)))
            };
            // What this pass appends is what it syncs and tells the
            // decider about: datagrams dropped (a flood's) wake nobody.
            let first = self.wal.next_lsn();
            if got {
                let batch = consumer.read_batch(PASS_MAX);
                let n = batch.len();
                self.fair.begin(n == PASS_MAX);
                for i in 0..n {
                    let (data, meta) = batch.get(i);
                    // A long datagram's whole bytes wait in the spill
                    // queue (sent before the slot was committed); take
                    // them even when the slot is dropped, to stay in step.
                    let whole = (meta.flags & mmsg::SLOT_SPILLED != 0)
                        .then(|| self.spill.try_recv().ok())
                        .flatten();
                    let Some(peer) = mmsg::slot_addr(meta) else {
                        continue;
                    };
                    let peer = normalize(peer);
                    if !self.fair.admit(peer) {
                        self.counters.fair_share.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if meta.flags & mmsg::SLOT_TRUNCATED != 0 {
                        self.on_truncated(peer, meta.len);
                        continue;
                    }
                    let data = whole.as_deref().unwrap_or(data);
                    let time_ns = self.clock.slot_ns(meta.recv_ns);
                    self.accept(data, peer, time_ns)?;
                }
                batch.release();
            }
            // What the inflater classified meanwhile, in order.
            while let Some(d) = self.inflater.next_done() {
                match d.result {
                    Ok(c) => self.accept_classified(c, Some(&d.datagram), d.peer, d.time_ns)?,
                    Err(e) => self.counters.dropped(e.reason),
                }
            }
            // The group commit first (the ACK waits on it), then the
            // decider, which reads records as they are written (it holds
            // their effects until they are durable).
            let n = (self.wal.next_lsn() - first) as usize;
            if n > 0 {
                if !self.urgent_since(first) {
                    // Only STARTUPs and TICKs: the sync thread takes them
                    // with the next ACKed record, or at its lazy deadline.
                    self.wake_for_lazy(first);
                } else if self.sync_thread
                    && n <= INLINE_SYNC_MAX
                    && !self.acks.sync_busy.load(Ordering::Acquire)
                {
                    // A few records and an idle sync thread: syncing here
                    // saves waking it (a cross-CPU wake-up, ~35 us on a
                    // VM, a tenth of a durable ACK).
                    self.sync_inline()?;
                } else if let Some(s) = &self.syncer {
                    s.unpark();
                }
                self.decider.unpark();
            }
            self.maybe_tick()?;
            self.publish(io);
            let now = Instant::now();
            self.wal.sync_if_due(now).map_err(err("log sync"))?;
            self.send_durable_acks();
            if n > 0 {
                // And again: its held effects can leave now.
                self.decider.unpark();
            }
            self.forget_registrations();
            let rel = self.release_lsn.load(Ordering::Acquire);
            if rel > released {
                match self.wal.release_through(rel) {
                    Ok(k) if k > 0 => log::debug!("released {k} log segments through LSN {rel}"),
                    Ok(_) => {}
                    Err(e) => log::warn!("log segments not released: {e}"),
                }
                released = rel;
            }
            if !got && consumer.is_finished() {
                if self.inflater.in_flight() == 0 {
                    break;
                }
                // The inflater's last results are logged before the end.
                thread::park_timeout(Duration::from_millis(1));
            }
        }
        self.wal.sync().map_err(err("log sync"))?;
        self.send_durable_acks();
        self.decider.unpark();
        Ok(())
    }

    /// Addresses the decider holds no node at any more (a registration
    /// that never ACKed its SETCONFIG, a STARTUP it refused, an address a
    /// node moved from): a stranger again (no registration, receiving
    /// state or keys), unless it sent a STARTUP logged after the decision
    /// (the decider reads that one next). The LSN of a registration
    /// rebuilt at a restart is the last replayed, so what was decided in
    /// the replay is not forgotten twice.
    pub(super) fn forget_registrations(&mut self) {
        while let Ok((addr, lsn)) = self.forget.try_recv() {
            if self.incarnations.get(&addr).is_some_and(|r| r.lsn <= lsn) {
                self.incarnations.remove(&addr);
                self.keyed.remove(&addr);
                for q in 0..=QUEUE_ID_MAX {
                    self.inbound.remove(&ConnKey::new(addr, q));
                }
                self.counters.forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn publish(&self, io: &IoHandle) {
        let c = &self.counters;
        let i = io.counters();
        c.received
            .store(i.received.load(Ordering::Relaxed), Ordering::Relaxed);
        c.kernel_drops
            .store(i.kernel_drops.load(Ordering::Relaxed), Ordering::Relaxed);
        c.ring_full_drops
            .store(i.ring_full_drops.load(Ordering::Relaxed), Ordering::Relaxed);
        c.spilled
            .store(i.spilled.load(Ordering::Relaxed), Ordering::Relaxed);
        if !self.sync_thread {
            let w = self.wal.stats();
            c.syncs.store(w.syncs, Ordering::Relaxed);
            c.synced_records.store(w.synced_records, Ordering::Relaxed);
            c.max_batch.store(u64::from(w.max_batch), Ordering::Relaxed);
        }
    }

    /// Appends a record that is not a FrameSet (a TICK): synced lazily
    /// when `lazy`, at once otherwise.
    pub(super) fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<u64, DaemonError> {
        let lsn = self.wal.append(meta, payload).map_err(err("log append"))?;
        self.counters.appended.fetch_add(1, Ordering::Relaxed);
        if !self.lazy {
            self.acks.urgent_lsn.store(lsn, Ordering::Release);
        }
        Ok(lsn)
    }

    /// Was a record at or after `lsn` one that must be synced at once?
    fn urgent_since(&self, lsn: u64) -> bool {
        self.acks.urgent_lsn.load(Ordering::Acquire) >= lsn
    }

    /// Lazy records from `first` on: the sync thread is woken only when
    /// nothing was waiting before them, to start its deadline; later ones
    /// join that group commit.
    fn wake_for_lazy(&self, first: u64) {
        if self.wal.durable_lsn() + 1 >= first
            && let Some(s) = &self.syncer
        {
            s.unpark();
        }
    }

    /// Checks one datagram in the order its cost rises (peek, sessions and
    /// limits, classify, keys, the receiving position) and logs it. Kept
    /// whole: each early return is a drop whose order is the defence.
    pub(super) fn accept(
        &mut self,
        data: &[u8],
        peer: SocketAddr,
        time_ns: u64,
    ) -> Result<(), DaemonError> {
        // Before classify's cost (SHA, inflation) is paid: a stranger's
        // FrameSet other than STARTUP is dropped unread, and a compressed
        // one is inflated only within its source network's budget.
        let mut large = false;
        if let Some(p) = crate::classify::peek(data) {
            if p.fstype != FrameSetType::Startup.to_wire()
                && p.fstype != FrameSetType::Heartbeat.to_wire()
                && !self.incarnations.contains_key(&peer)
            {
                self.counters.unregistered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if let Some(n) = p.inflated_size {
                if !self.inflation.take(peer.ip(), n, time_ns) {
                    self.counters
                        .inflate_limited
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                large = n > INLINE_INFLATE_MAX;
            }
        }
        // A large inflation, and whatever its source sends after it, is
        // classified by the inflater: other sources go on meanwhile.
        if large || self.inflater.has_pending(&peer) {
            return match self.inflater.submit(data, peer, time_ns) {
                Ok(()) => Ok(()),
                Err(Refused::Full) => {
                    self.counters.inflate_busy.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(Refused::Gone) => Err(DaemonError("the inflater thread is gone".into())),
            };
        }
        let opener = self
            .keyring
            .as_deref()
            .map(|k| k as &dyn crate::classify::Opener);
        match classify_with(data, opener) {
            Ok(c) => self.accept_classified(c, None, peer, time_ns),
            Err(d) => {
                log::debug!("dropped a datagram from {peer}: {:?}", d.reason);
                self.counters.dropped(d.reason);
                Ok(())
            }
        }
    }

    /// The rest of [`LogThread::accept`] once a datagram is classified
    /// (here, or by the inflater, which gives back the `datagram` too).
    /// Kept whole for the same reason.
    fn accept_classified(
        &mut self,
        c: Classified<'_>,
        datagram: Option<&[u8]>,
        peer: SocketAddr,
        time_ns: u64,
    ) -> Result<(), DaemonError> {
        self.counters.accepted(c.fstype);
        // A large inflation in clear is logged as it came (a 1.9 KB
        // datagram, not its 1.8 MB of JSON): what the log syncs, and every
        // other source's ACK waits on, stays the size of what the sender
        // sent. The decider is handed its classification (inflated once);
        // replay after a crash classifies the record again. Encrypted ones
        // are logged opened: the log never needs a key to be read.
        let as_received = datagram.filter(|_| c.compressed && c.sender_key.is_none());
        let meta = RecordMeta {
            kind: if as_received.is_some() {
                RecordKind::FrameSet
            } else {
                RecordKind::Classified
            },
            time_ns,
            peer: Some(peer),
        };
        let fstype = c.fstype;
        // Only a registered address (one that sent a STARTUP) gets a
        // connection or a record: a stranger's reports, ACKs or port and
        // queue-id sweeps cost no state and no log space.
        if fstype != FrameSetType::Startup.to_wire()
            && fstype != FrameSetType::Heartbeat.to_wire()
            && !self.incarnations.contains_key(&peer)
        {
            self.counters.unregistered.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // A keyed address speaks under one of its keys (rule 9): a forged
        // source address cannot ACK, report, reset or shut down for it,
        // nor move its receiving position.
        if fstype >= crate::classify::FIRST_SEQUENCED_TYPE
            && let Some(keys) = self.keyed.get(&peer)
            && !c
                .sender_key
                .as_ref()
                .is_some_and(|k| keys.iter().any(|x| x == k))
        {
            let c = match c.sender_key {
                None => &self.counters.auth_unencrypted,
                Some(_) => &self.counters.auth_wrong_key,
            };
            c.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // The key its ACK goes under: looked up only when one is sent.
        let keyring = c.sender_key.as_ref().and_then(|_| self.keyring.clone());
        let sealed = || match (&keyring, &c.sender_key) {
            (Some(ring), Some(k)) => ring.peer(k),
            _ => None,
        };
        match c.reqid {
            Some(r)
                if c.is_sequenced()
                    && fstype != FrameSetType::Ack.to_wire()
                    && r.queue > QUEUE_ID_MAX =>
            {
                // Nanoprobes use queue 0 only: a sweep of queue ids from a
                // registered address makes no connections.
                self.counters.queue_refused.fetch_add(1, Ordering::Relaxed);
            }
            Some(r) if c.is_sequenced() && fstype != FrameSetType::Ack.to_wire() => {
                let key = ConnKey::new(peer, r.queue);
                // A CONNSHUT is logged and ACKed like any other, then the
                // connection is forgotten (rule 2).
                let closes = fstype == FrameSetType::ConnShut.to_wire();
                match self.inbound.entry(key).or_default().on_frameset_pinned(r) {
                    Verdict::Deliver => {
                        // One the log cannot take is dropped (not ACKed).
                        if let Some(lsn) = self.log_classified(&meta, &c, as_received)? {
                            self.acks.lock().push_back(Delivered {
                                lsn,
                                key,
                                peer,
                                reqid: r,
                                closes,
                                sealed: sealed(),
                            });
                        }
                    }
                    Verdict::Duplicate { reack } => {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        if let Some(a) = reack {
                            self.send_ack(peer, a, sealed().as_deref());
                        }
                    }
                    Verdict::StaleSession | Verdict::Gap { .. } => {
                        self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::UnknownSession => {
                        // Only its own STARTUP (new WALLCLOCK) or CONNSHUT
                        // starts a sender's next session (rule 2).
                        self.counters
                            .unknown_session
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                // A STARTUP with a new WALLCLOCK is a new process: its
                // requests start afresh, whatever its session (rule 2). It
                // is a registration: limited per source network and in
                // number (see `limits`); a repeated one is not.
                if fstype == FrameSetType::Startup.to_wire()
                    && let Ok(Message::Startup(st)) = c.message()
                {
                    let known = self.incarnations.get(&peer).map(|r| r.wallclock_us);
                    let registers = known != Some(st.wallclock_us);
                    if registers {
                        if known.is_none() && self.incarnations.len() >= self.max_nodes {
                            self.counters
                                .registrations_refused
                                .fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        if !self.registrations.allow(peer.ip(), time_ns) {
                            self.counters
                                .registrations_limited
                                .fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                    }
                    // Keys after the limits: a key is trusted (and saved)
                    // only within a registration's budget.
                    if !self.admit(peer, &st, registers, time_ns) {
                        self.counters.auth_refused.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    if registers {
                        self.inbound.remove(&ConnKey::new(peer, 0));
                    }
                    // Its LSN: a forgetting decided before the decider
                    // read this STARTUP leaves the registration alone.
                    if let Some(lsn) = self.log_classified(&meta, &c, as_received)? {
                        self.incarnations.insert(
                            peer,
                            Registration {
                                wallclock_us: st.wallclock_us,
                                lsn,
                            },
                        );
                    }
                    return Ok(());
                }
                // Heartbeats are for agents, not for the CMA: counted (by
                // type), not logged.
                if fstype != FrameSetType::Heartbeat.to_wire() {
                    self.log_classified(&meta, &c, as_received)?;
                }
            }
        }
        Ok(())
    }

    /// Logs what classifying a FrameSet found: its verdict and its
    /// verified, inflated frames, so nobody downstream classifies again;
    /// or, given `as_received` (a large inflation in clear, `meta` of kind
    /// FRAMESET), the datagram itself. A record larger than the log takes
    /// (`wal.segment_mib` below 5: an encrypted FrameSet that inflates past
    /// a segment) is dropped and counted, not a failure of the daemon:
    /// `None`.
    pub(super) fn log_classified(
        &mut self,
        meta: &RecordMeta,
        c: &Classified<'_>,
        as_received: Option<&[u8]>,
    ) -> Result<Option<u64>, DaemonError> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        let payload = match as_received {
            Some(d) => d,
            None => {
                write_logged(c, &mut record);
                &record[..]
            }
        };
        if as_received.is_some() && !self.handoff.is_full() {
            // Inflated once: the decider takes this rather than classifying
            // the record again. Handed over before the record is appended,
            // so the decider cannot read the record first.
            let mut v = Vec::new();
            write_logged(c, &mut v);
            let _ = self.handoff.try_send((self.wal.next_lsn(), v));
        }
        let lsn = match self.wal.append(meta, payload) {
            Ok(lsn) => {
                self.counters.appended.fetch_add(1, Ordering::Relaxed);
                if !self.lazy || c.fstype != FrameSetType::Startup.to_wire() {
                    self.acks.urgent_lsn.store(lsn, Ordering::Release);
                }
                Some(lsn)
            }
            Err(crate::wal::WalError::TooLarge { len }) => {
                self.counters.too_large.fetch_add(1, Ordering::Relaxed);
                if let Some(peer) = meta.peer
                    && self.truncated_from.len() < TRUNCATED_WARN_MAX
                    && self.truncated_from.insert(peer.ip())
                {
                    log::warn!(
                        "a FrameSet from {peer} inflates to a {len}-byte record, more than a log segment holds: dropped (raise wal.segment_mib)"
                    );
                }
                None
            }
            Err(e) => {
                self.record = record;
                return Err(err("log append")(e));
            }
        };
        self.record = record;
        Ok(lsn)
    }

    /// A datagram cut to the slot (the spill queue was full): dropped with
    /// its own count, warned once per source. A sequenced one is resent
    /// by its agent and taken whole then.
    pub(super) fn on_truncated(&mut self, peer: SocketAddr, len: u32) {
        self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        if self.truncated_from.len() < TRUNCATED_WARN_MAX && self.truncated_from.insert(peer.ip()) {
            log::warn!(
                "a datagram from {peer} longer than a ring slot was cut to {len} bytes and dropped (the spill queue was full); raise io.slot_bytes if this repeats"
            );
        }
    }

    pub(super) fn maybe_tick(&mut self) -> Result<(), DaemonError> {
        let due = self.next_deadline.load(Ordering::Acquire);
        let now = self.clock.now_ms();
        if due != u64::MAX && now >= due && now >= self.last_tick_ms + self.tick_ms {
            let meta = RecordMeta {
                kind: RecordKind::Tick,
                time_ns: now * 1_000_000,
                peer: None,
            };
            let lsn = self.append(&meta, &[])?;
            self.last_tick_ms = now;
            // The decider will publish its next deadline after this one.
            self.next_deadline.store(u64::MAX, Ordering::Release);
            self.decider.unpark();
            if self.urgent_since(lsn) {
                if let Some(s) = &self.syncer {
                    s.unpark();
                }
            } else {
                self.wake_for_lazy(lsn);
            }
        }
        Ok(())
    }

    /// Group commit on this thread, then the ACKs of what became durable.
    fn sync_inline(&mut self) -> Result<(), DaemonError> {
        let before = self.wal.durable_lsn();
        let durable = self.wal.sync().map_err(err("log sync"))?;
        if durable > before {
            let c = &self.counters;
            c.syncs.fetch_add(1, Ordering::Relaxed);
            c.synced_records
                .fetch_add(durable - before, Ordering::Relaxed);
            c.max_batch.fetch_max(durable - before, Ordering::Relaxed);
        }
        let mut ready = std::mem::take(&mut self.ready);
        self.acks.take_durable(durable, &mut ready);
        for (peer, r, key) in &ready {
            self.send_ack(*peer, *r, key.as_deref());
        }
        ready.clear();
        self.ready = ready;
        Ok(())
    }

    /// Without a sync thread, sends the ACKs of what became durable; then
    /// moves the receiving positions past everything ACKed.
    pub(super) fn send_durable_acks(&mut self) {
        if !self.sync_thread {
            let mut ready = std::mem::take(&mut self.ready);
            self.acks.take_durable(self.wal.durable_lsn(), &mut ready);
            for (peer, r, key) in &ready {
                self.send_ack(*peer, *r, key.as_deref());
            }
            ready.clear();
            self.ready = ready;
        }
        let acked = self.acks.acked_lsn.load(Ordering::Acquire);
        let mut q = self.acks.lock();
        while q.front().is_some_and(|d| d.lsn <= acked) {
            let d = q.pop_front().expect("front exists");
            if let Some(i) = self.inbound.get_mut(&d.key) {
                i.on_durable(d.reqid);
            }
            if d.closes {
                self.inbound.remove(&d.key);
            }
        }
    }

    /// Admits a STARTUP's key (rule 9): with CMA keys, a key is trusted on
    /// first use (or only from the directory), a changed one refused; a
    /// STARTUP without one is refused unless `auth.allow_unkeyed`, and
    /// always for a host known with a key. Said once per host. A key not
    /// yet trusted costs a registration (`limits`) even in a repeated
    /// STARTUP (`registered`: this one already paid).
    fn admit(
        &mut self,
        peer: SocketAddr,
        st: &crate::classify::Startup<'_>,
        registered: bool,
        time_ns: u64,
    ) -> bool {
        let Some(ring) = self.keyring.clone() else {
            if st.key.is_some() {
                self.warn_once(st.hostname, || format!(
                    "{} ({peer}) announces a key but this CMA has none: it will not obey clear-text instructions (`cma keys init`, then install #CMA#00000.pub in its crypto.d)",
                    st.hostname
                ));
            }
            return true;
        };
        let Some((id, public)) = st.key else {
            if let Some(k) = ring.host_key(st.hostname) {
                self.warn_once(st.hostname, || format!(
                    "STARTUP for {} from {peer} without its key {k}: refused (forged, or its keys were lost: `cma keys forget {}`)",
                    st.hostname, st.hostname
                ));
                return false;
            }
            if !self.allow_unkeyed {
                self.warn_once(st.hostname, || format!(
                    "{} ({peer}) has no key: refused (install #CMA#00000.pub in its crypto.d, or set auth.allow_unkeyed)",
                    st.hostname
                ));
                return false;
            }
            return true;
        };
        if !registered
            && ring.peer(id).is_none_or(|k| k.public != *public)
            && !self.registrations.allow(peer.ip(), time_ns)
        {
            self.counters
                .registrations_limited
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match ring.admit(st.hostname, id, public) {
            crate::crypt::Admission::Trusted(k) => {
                let keys = self.keyed.entry(peer).or_default();
                if !keys.contains(&k.id) {
                    if keys.len() >= KEYS_PER_ADDR {
                        keys.remove(0);
                    }
                    keys.push(k.id.clone());
                }
                true
            }
            crate::crypt::Admission::Refused(why) => {
                self.warn_once(st.hostname, || {
                    format!("key {id} of {} ({peer}) refused: {why}", st.hostname)
                });
                false
            }
        }
    }

    fn warn_once(&mut self, host: &str, say: impl FnOnce() -> String) {
        if self.auth_warned.len() < TRUNCATED_WARN_MAX && self.auth_warned.insert(host.to_string())
        {
            log::warn!("{}", say());
        }
    }

    pub(super) fn send_ack(&mut self, peer: SocketAddr, r: ReqId, key: Option<&PeerKey>) {
        if self.counters.failed.load(Ordering::Acquire) != 0 {
            // A thread failed: nothing more is ACKed (the report might
            // never be decided); the agent keeps it and resends.
            self.counters.acks_withheld.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.out.clear();
        if encode_ack(r, key, &mut self.out) {
            send_to(&self.send, &self.out, peer, &self.counters);
            self.counters.acks_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}
