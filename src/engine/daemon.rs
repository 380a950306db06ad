//! `cma run`: the io loop, the log thread, the decider thread and the store
//! thread, wired as DESIGN.md draws them.
//!
//! ```text
//!  io thread ──ring──▶ log thread ──WAL (mmap)──▶ decider thread ──chan──▶ store thread
//!  recvmmsg            classify, dedupe,            Decider::handle,          SQLite batches,
//!                      append, group commit,        effects held until        checkpoint,
//!                      ACK once durable, TICKs      durable, sendmmsg,        release segments
//!                                                   retransmit every 2 s
//! ```
//!
//! Start: open the store and load the checkpoint, open the log (recovery),
//! replay every record after the checkpoint through the decider (store
//! effects of records the store has not applied are applied; nothing is
//! sent), seed the receiving positions from the decider, send what is in
//! flight again under the same (session, request id), then start reading.
//! The log clock continues from the last record, so a restart never makes
//! time jump for the decider (rule 5).
//!
//! Stop (SIGTERM/SIGINT, or [`StopHandle`]): stop reading, make everything
//! durable, ACK it, decide it, store it, checkpoint, exit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::io::{IoConfig, IoHandle, IoLoop, SpillReceiver};
use super::mmsg::{self, MMSG_BATCH_MAX};
use crate::classify::{
    Classified, Discoveries, Discovery, EncodeOptions, FrameSetType, HbParams, Logged, Message,
    Peers, ReqId, classify, encode, write_logged,
};
use crate::config::Config;
use crate::decide::decider::{Decider, DeciderConfig, Effect, Event, Input};
use crate::decide::input::{Decided, decide_logged};
use crate::decide::outq::Instruction;
use crate::reliable::{ConnKey, Inbound, Verdict, normalize};
use crate::ring_buffer::{self, Consumer};
use crate::store::{Applied, DB_FILE, Store};
use crate::wal::{Record, RecordKind, RecordMeta, SyncPolicy, Syncer, Wal, WalConfig, WalReader};
use std::os::fd::AsRawFd;

/// A delivered sequenced FrameSet whose ACK waits for its record to be
/// durable.
#[derive(Clone, Copy)]
struct Delivered {
    lsn: u64,
    key: ConnKey,
    peer: SocketAddr,
    reqid: ReqId,
    /// A CONNSHUT: the connection is forgotten once it is ACKed (rule 2).
    closes: bool,
}

/// Every delivered FrameSet, queued once in LSN order. Whoever syncs (the
/// sync thread, or the log thread without one) sends the ACKs of what
/// became durable and advances `acked_lsn`; the log thread then pops what
/// is at or below it and moves the receiving positions (for re-ACKs).
#[derive(Default)]
struct AckQueue {
    delivered: std::sync::Mutex<VecDeque<Delivered>>,
    /// Every ACK up to this LSN was sent.
    acked_lsn: AtomicU64,
}

impl AckQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivered>> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The (peer, REQID) of every ACK in (acked_lsn, durable], into
    /// `ready`; then everything up to `durable` counts as ACKed.
    fn take_durable(&self, durable: u64, ready: &mut Vec<(SocketAddr, ReqId)>) {
        let from = self.acked_lsn.load(Ordering::Acquire);
        if durable <= from {
            return;
        }
        {
            let q = self.lock();
            let start = q.partition_point(|d| d.lsn <= from);
            let end = q.partition_point(|d| d.lsn <= durable);
            ready.extend(q.range(start..end).map(|d| (d.peer, d.reqid)));
        }
        self.acked_lsn.store(durable, Ordering::Release);
    }
}

/// Why the daemon could not run.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

fn err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> DaemonError + '_ {
    move |e| DaemonError(format!("{context}: {e}"))
}

/// What the threads count (rendered as Prometheus metrics).
pub use super::metrics::Metrics as Counters;

/// Stops a running daemon.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
}

impl StopHandle {
    /// Asks the daemon to stop (it finishes durably).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Has a stop been asked for?
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A daemon that has recovered and bound its sockets.
pub struct Daemon {
    config: Config,
    io: IoLoop,
    io_handle: IoHandle,
    consumer: Consumer,
    spill: SpillReceiver,
    /// Wall-clock ms minus log ms where recovery ended.
    wall_offset: Option<i64>,
    wal: Wal,
    decider: Decider,
    store: Store,
    inbound: HashMap<ConnKey, Inbound>,
    incarnations: HashMap<SocketAddr, u64>,
    send: SendSockets,
    clock_base_ms: u64,
    stop: StopHandle,
    counters: Arc<Counters>,
    addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

fn sync_policy(c: &Config) -> SyncPolicy {
    match c.wal.sync.as_str() {
        "always" => SyncPolicy::Always,
        "none" => SyncPolicy::None,
        _ => SyncPolicy::Batch,
    }
}

/// What feeding a record to the decider was.
struct Fed {
    lsn: u64,
    time_ms: u64,
    /// The record was an agent's ACK from this address.
    ack_from: Option<SocketAddr>,
    /// A RESUME record's UTC wall clock (ms since the epoch) at its log
    /// time: from here on, wall = log time + (this - its log time).
    wall_mark_ms: Option<u64>,
}

/// Wall-clock ms minus log ms, as the RESUME records of the log say: the
/// log clock is monotonic across restarts (rule 5), the wall clock is what
/// operators read.
#[derive(Clone, Copy, Default)]
struct WallClock(Option<i64>);

impl WallClock {
    fn see(&mut self, fed: &Fed) {
        if let Some(w) = fed.wall_mark_ms {
            self.0 = Some(w as i64 - fed.time_ms as i64);
        }
    }

    fn at(self, time_ms: u64) -> Option<u64> {
        self.0.and_then(|o| u64::try_from(time_ms as i64 + o).ok())
    }
}

/// Feeds one log record to the decider (`None`: a record it does not
/// take, such as CONFIG). A FrameSet is read as the log thread classified
/// it ([`Logged`]); the decider never classifies. A record this build
/// cannot read (a newer format) is an error: skipping it would decide
/// differently from the run that wrote it.
fn feed(
    d: &mut Decider,
    r: &Record<'_>,
    out: &mut Vec<Effect>,
) -> Result<Option<Fed>, DaemonError> {
    let h = &r.header;
    let time_ms = h.meta.time_ns / 1_000_000;
    let lsn = h.lsn;
    let mut wall_mark_ms = None;
    let event = match h.meta.kind {
        RecordKind::Tick => Event::Tick,
        RecordKind::Resume => {
            if let Ok(b) = <[u8; 8]>::try_from(r.payload) {
                wall_mark_ms = Some(u64::from_be_bytes(b));
            }
            Event::Resume
        }
        RecordKind::Classified | RecordKind::FrameSet => {
            let mut upgraded = Vec::new();
            let Some(logged) = logged_of(r, &mut upgraded)? else {
                return Ok(None);
            };
            let Some(from) = h.meta.peer else {
                log::warn!("log record {lsn}: a FrameSet without its source, not decided");
                return Ok(None);
            };
            return Ok(match decide_logged(d, lsn, time_ms, from, &logged, out) {
                Decided::Skipped => None,
                decided => Some(Fed {
                    lsn,
                    time_ms,
                    ack_from: (decided == Decided::Message { ack: true }).then_some(from),
                    wall_mark_ms,
                }),
            });
        }
        _ => return Ok(None),
    };
    d.handle(
        &Input {
            lsn,
            time_ms,
            event,
        },
        out,
    );
    Ok(Some(Fed {
        lsn,
        time_ms,
        ack_from: None,
        wall_mark_ms,
    }))
}

/// The classified form of a FrameSet record. One written before the log
/// held classified records (kind FRAMESET: the datagram as received) is
/// classified here, explicitly, into `upgraded`; if this build no longer
/// accepts it, that is said (it was ACKed when written) and the record is
/// not decided.
fn logged_of<'a>(
    r: &Record<'a>,
    upgraded: &'a mut Vec<u8>,
) -> Result<Option<Logged<'a>>, DaemonError> {
    let lsn = r.header.lsn;
    if r.header.meta.kind == RecordKind::Classified {
        return Logged::parse(r.payload)
            .map(Some)
            .map_err(|e| DaemonError(format!("log record {lsn}: {e}")));
    }
    match classify(r.payload) {
        Ok(c) => write_logged(&c, upgraded),
        Err(d) => {
            log::warn!(
                "log record {lsn} (an older cma's FrameSet record) is not accepted by this cma                  ({d}); it is not decided"
            );
            return Ok(None);
        }
    }
    Logged::parse(upgraded)
        .map(Some)
        .map_err(|e| DaemonError(format!("log record {lsn} upgraded: {e}")))
}

fn store_effects(effects: &[Effect]) -> Vec<Effect> {
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Row(_)
                    | Effect::Ring { .. }
                    | Effect::Notice(_)
                    | Effect::Discovery { .. }
                    | Effect::Stats { .. }
            )
        })
        .cloned()
        .collect()
}

impl Daemon {
    /// Recovers state and binds the sockets; `run` then serves.
    pub fn start(config: Config, salvage: bool) -> Result<Daemon, DaemonError> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| DaemonError(format!("cannot create {}: {e}", data.display())))?;
        let mut store = Store::open(&data.join(DB_FILE)).map_err(err("store"))?;
        let checkpoint = store.checkpoint().map_err(err("store"))?;
        let cp_lsn = checkpoint.as_ref().map_or(0, |c| c.0);
        let wal_config = WalConfig {
            segment_size: config.wal.segment_mib << 20,
            sync: sync_policy(&config),
            salvage,
            first_lsn: cp_lsn + 1,
            ..WalConfig::new(data.join("wal"))
        };
        let (mut wal, report) = Wal::open(wal_config).map_err(|e| {
            DaemonError(format!(
                "write-ahead log in {}: {e}",
                data.join("wal").display()
            ))
        })?;
        if let Some(stop) = &report.truncated {
            log::warn!("write-ahead log: {stop:?}");
        }
        log::info!(
            "write-ahead log: {} records in {} segments (LSN {}..={})",
            report.records,
            report.segments,
            report.first_lsn,
            report.last_lsn
        );
        if report.records > 0 && report.first_lsn > cp_lsn + 1 {
            return Err(DaemonError(format!(
                "the log starts at LSN {} but the checkpoint is at {cp_lsn}: records are missing",
                report.first_lsn
            )));
        }

        let (producer, consumer) = ring_buffer::channel(config.io.ring_slots, config.io.slot_bytes);
        let io_config = IoConfig {
            listen: config.listen.clone(),
            rcvbuf_bytes: config.io.rcvbuf_bytes,
            batch: config.io.batch,
            ..IoConfig::default()
        };
        let (io, io_handle) = IoLoop::bind(&io_config, producer).map_err(err("listen"))?;
        let (io, spill) = io.with_spill();
        let send = SendSockets::new(io.send_sockets().map_err(err("sockets"))?);
        let addrs = io.local_addrs().map_err(err("sockets"))?;
        let advertised = advertised(&config, &addrs);
        let counters = Arc::new(Counters::default());
        let metrics_addr = if config.metrics.listen.is_empty() {
            None
        } else {
            let a: SocketAddr = config
                .metrics
                .listen
                .parse()
                .map_err(|e| DaemonError(format!("metrics.listen: {e}")))?;
            let (bound, _thread) = super::metrics::serve(a, counters.clone(), wal.watermarks())
                .map_err(DaemonError)?;
            log::info!("metrics on http://{bound}/metrics");
            Some(bound)
        };

        // The decider: from the checkpoint, or from the log's CONFIG
        // record, or new (with a new session, logged in a CONFIG record).
        let mut decider = match &checkpoint {
            Some((_, state)) => Decider::import(state)
                .map_err(|e| DaemonError(format!("checkpoint does not load: {e}")))?,
            None => match first_config(&wal)? {
                Some(c) => Decider::new(c),
                None => {
                    let wall_s = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let mut c = DeciderConfig::new(advertised, (wall_s / 5).max(1) as u32);
                    c.heartbeat_ms = config.heartbeat.interval_ms;
                    c.warn_ms = config.heartbeat.warn_ms;
                    c.dead_ms = config.heartbeat.dead_ms;
                    c.retransmit_ms = config.reliable.retransmit_ms;
                    c.state_interval_ms = config.heartbeat.state_interval_ms;
                    c.stats_interval_ms = config.heartbeat.stats_interval_ms;
                    c.index_key = crate::decide::random_index_key();
                    let payload = serde_json::to_vec(&c).expect("config serialises");
                    let meta = RecordMeta {
                        kind: RecordKind::Config,
                        time_ns: 0,
                        peer: None,
                    };
                    wal.append(&meta, &payload).map_err(err("log"))?;
                    wal.sync().map_err(err("log"))?;
                    Decider::new(c)
                }
            },
        };
        if decider.config().cma_addr != advertised {
            log::warn!(
                "agents were told to report to {}; the configuration now says {advertised} \
                 (changing it needs a fresh data directory)",
                decider.config().cma_addr,
            );
        }

        // Replay.
        let applied = store.applied_lsn().map_err(err("store"))?;
        let mut last_time_ms = decider.now_ms();
        let mut batch = Vec::new();
        let mut effects = Vec::new();
        let mut replayed = 0u64;
        let mut wall = WallClock(store.wall_offset_ms().map_err(err("store"))?);
        let mut reader = wal.reader(cp_lsn + 1).map_err(err("log"))?;
        while let Some(r) = reader.next() {
            let r = r.map_err(err("log"))?;
            last_time_ms = last_time_ms.max(r.header.meta.time_ns / 1_000_000);
            effects.clear();
            let Some(fed) = feed(&mut decider, &r, &mut effects)? else {
                continue;
            };
            replayed += 1;
            wall.see(&fed);
            if fed.lsn > applied {
                batch.push(Applied {
                    lsn: fed.lsn,
                    time_ms: fed.time_ms,
                    wall_ms: wall.at(fed.time_ms),
                    effects: store_effects(&effects),
                });
                if batch.len() >= 4096 {
                    store.apply(&batch).map_err(err("store"))?;
                    batch.clear();
                }
            }
        }
        drop(reader);
        store.apply(&batch).map_err(err("store"))?;
        log::info!(
            "recovered: checkpoint at LSN {cp_lsn}, {replayed} records replayed, {} nodes",
            decider.nodes().len()
        );
        {
            // A RESUME record at every start: the decider (now and on any
            // later replay) asks the agents that speak HBSTATE for their
            // state, and its payload ties the log clock to the UTC wall
            // clock for this run (events and rows carry both).
            let meta = RecordMeta {
                kind: RecordKind::Resume,
                time_ns: (last_time_ms + 1) * 1_000_000,
                peer: None,
            };
            let wall_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            wal.append(&meta, &wall_ms.to_be_bytes())
                .map_err(err("log"))?;
            wal.sync().map_err(err("log"))?;
        }

        // Receiving positions from the decider (rule 2).
        let mut inbound = HashMap::new();
        for (addr, session, last) in decider.inbound_positions() {
            inbound.insert(ConnKey::new(addr, 0), Inbound::resume(session, 0, last));
        }
        let incarnations: HashMap<SocketAddr, u64> = decider
            .nodes()
            .iter()
            .map(|n| (n.addr, n.incarnation))
            .collect();

        Ok(Daemon {
            config,
            io,
            io_handle,
            consumer,
            spill,
            wall_offset: wall.0,
            wal,
            decider,
            store,
            inbound,
            incarnations,
            send,
            clock_base_ms: last_time_ms + 1,
            stop: StopHandle {
                stop: Arc::new(AtomicBool::new(false)),
            },
            counters,
            addrs,
            metrics_addr,
        })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A handle that stops [`Daemon::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stops when `flag` is set (e.g. by a signal handler).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = StopHandle { stop: flag };
    }

    /// The counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Serves until stopped; returns once everything is durable, stored and
    /// checkpointed.
    pub fn run(self) -> Result<(), DaemonError> {
        let Daemon {
            config,
            io,
            io_handle,
            consumer,
            spill,
            wall_offset,
            wal,
            decider,
            store,
            inbound,
            incarnations,
            send,
            clock_base_ms,
            stop,
            counters,
            addrs: _,
            metrics_addr: _,
        } = self;
        let clock = LogClock {
            base_ms: clock_base_ms,
            origin: io.clock(),
        };
        let next_deadline = Arc::new(AtomicU64::new(u64::MAX));
        let release_lsn = Arc::new(AtomicU64::new(0));
        let log_done = Arc::new(AtomicBool::new(false));
        let watermarks = wal.watermarks();
        let reader = wal.reader(decider.last_lsn() + 1).map_err(err("log"))?;

        let io_thread = thread::Builder::new()
            .name("cma-io".into())
            .spawn(move || io.run())
            .map_err(err("spawn"))?;

        let (store_tx, store_rx) = crossbeam_channel::bounded::<StoreMsg>(1024);
        let store_counters = counters.clone();
        let store_release = release_lsn.clone();
        let store_thread = thread::Builder::new()
            .name("cma-store".into())
            .spawn(move || store_loop(store, store_rx, &store_counters, &store_release))
            .map_err(err("spawn"))?;

        let dctx = DeciderThread {
            wall: WallClock(wall_offset),
            held_wall: VecDeque::new(),
            decider,
            reader,
            watermarks: watermarks.clone(),
            transport: Transport::new(send.try_clone().map_err(err("sockets"))?, &config),
            store_tx,
            next_deadline: next_deadline.clone(),
            log_done: log_done.clone(),
            counters: counters.clone(),
            checkpoint_every: Duration::from_millis(config.store.checkpoint_ms),
            clock: clock.clone(),
            cpu: usize::try_from(config.decider.cpu).ok(),
            spin: config.decider.spin,
        };
        let decider_thread = thread::Builder::new()
            .name("cma-decide".into())
            .spawn(move || dctx.run())
            .map_err(err("spawn"))?;
        let decider_unpark = decider_thread.thread().clone();

        let background = matches!(sync_policy(&config), SyncPolicy::Batch);
        let acks: Arc<AckQueue> = Arc::default();
        let sync_thread = if background {
            let st = SyncThread {
                syncer: wal.syncer(),
                acks: acks.clone(),
                send: send.try_clone().map_err(err("sockets"))?,
                counters: counters.clone(),
                decider: decider_unpark.clone(),
                log_done: log_done.clone(),
            };
            Some(
                thread::Builder::new()
                    .name("cma-sync".into())
                    .spawn(move || st.run())
                    .map_err(err("spawn"))?,
            )
        } else {
            None
        };
        let mut consumer = consumer;
        if config.decider.spin {
            consumer.set_spin_limit(100_000);
        }
        let mut log = LogThread {
            acks,
            sync_thread: background,
            syncer: sync_thread.as_ref().map(|t| t.thread().clone()),
            incarnations,
            wal,
            inbound,
            send,
            counters: counters.clone(),
            next_deadline,
            release_lsn,
            clock,
            tick_ms: config.decider.tick_ms,
            last_tick_ms: 0,
            spin: config.decider.spin,
            decider: decider_unpark,
            out: Vec::with_capacity(256),
            spill,
            truncated_from: HashSet::new(),
            record: Vec::with_capacity(2048),
            ready: Vec::new(),
        };
        let io_stop = io_handle;
        let stop_watch = stop.clone();
        let log_result = log.run(&mut consumer, &stop_watch, &io_stop);
        io_stop.stop();
        let io_result = io_thread.join();
        // The writer's final sync happened in `run`; the sync thread sends
        // the last ACKs and ends.
        log_done.store(true, Ordering::Release);
        let sync_result = match sync_thread {
            Some(t) => {
                t.thread().unpark();
                t.join()
                    .map_err(|_| DaemonError("sync thread panicked".into()))?
            }
            None => Ok(()),
        };
        log.decider.unpark();
        let decide_result = decider_thread.join();
        let store_result = store_thread.join();
        log_result?;
        sync_result?;
        match io_result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(DaemonError(format!("io thread: {e}"))),
            Err(_) => return Err(DaemonError("io thread panicked".into())),
        }
        decide_result.map_err(|_| DaemonError("decider thread panicked".into()))??;
        store_result.map_err(|_| DaemonError("store thread panicked".into()))??;
        log::info!("stopped cleanly");
        Ok(())
    }
}

/// Where agents are told to report: `advertise`, or the first bound
/// address (loopback for an unspecified one, with a warning).
fn advertised(config: &Config, bound: &[SocketAddr]) -> SocketAddr {
    if let Ok(a) = config.advertise.parse() {
        return a;
    }
    let first = bound.first().copied().unwrap_or(config.listen[0]);
    if first.ip().is_unspecified() {
        log::warn!(
            "`advertise` is not set: agents are told to report to 127.0.0.1:{}; \
             set it to an address the fleet can reach",
            first.port()
        );
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), first.port())
    } else {
        first
    }
}

/// The first record of a log without a checkpoint must be its CONFIG.
fn first_config(wal: &Wal) -> Result<Option<DeciderConfig>, DaemonError> {
    let mut r = wal.reader(1).map_err(err("log"))?;
    let Some(first) = r.next() else {
        return Ok(None);
    };
    let first = first.map_err(err("log"))?;
    if first.header.meta.kind != RecordKind::Config {
        return Err(DaemonError(
            "the log has no CONFIG record and there is no checkpoint: not a cma log".into(),
        ));
    }
    serde_json::from_slice(first.payload)
        .map(Some)
        .map_err(|e| DaemonError(format!("the log's CONFIG record does not parse: {e}")))
}

/// The log clock: ms, continuing from the last record of the log, advanced
/// by this process's monotonic clock.
#[derive(Clone)]
struct LogClock {
    base_ms: u64,
    /// The io loop's clock origin (slot times are ns since it).
    origin: Instant,
}

impl LogClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.origin.elapsed().as_millis() as u64
    }

    fn now_ns(&self) -> u64 {
        self.base_ms * 1_000_000 + self.origin.elapsed().as_nanos() as u64
    }

    /// A slot's receive time on the log clock, ns.
    fn slot_ns(&self, recv_ns: u64) -> u64 {
        self.base_ms * 1_000_000 + recv_ns
    }
}

struct LogThread {
    wal: Wal,
    /// The WALLCLOCK of each agent's last STARTUP.
    incarnations: HashMap<SocketAddr, u64>,
    /// Delivered FrameSets waiting for their ACK (sent by the sync thread
    /// when there is one, else by this thread).
    acks: Arc<AckQueue>,
    /// A sync thread syncs and sends the ACKs.
    sync_thread: bool,
    /// The sync thread, woken after appends.
    syncer: Option<thread::Thread>,
    inbound: HashMap<ConnKey, Inbound>,
    send: SendSockets,
    counters: Arc<Counters>,
    next_deadline: Arc<AtomicU64>,
    release_lsn: Arc<AtomicU64>,
    clock: LogClock,
    tick_ms: u64,
    last_tick_ms: u64,
    /// Busy-poll the ring instead of parking.
    spin: bool,
    decider: thread::Thread,
    out: Vec<u8>,
    /// Whole datagrams longer than a ring slot, one per slot flagged
    /// `SLOT_SPILLED`, in slot order.
    spill: SpillReceiver,
    /// Sources already warned about a cut datagram (bounded: warned once
    /// each, up to [`TRUNCATED_WARN_MAX`] sources, counted always).
    truncated_from: HashSet<IpAddr>,
    /// Scratch for the record being logged.
    record: Vec<u8>,
    /// Scratch for ACKs to send.
    ready: Vec<(SocketAddr, ReqId)>,
}

/// Sources named in a warning about cut datagrams, at most.
const TRUNCATED_WARN_MAX: usize = 1024;

impl LogThread {
    fn run(
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
            let mut n = 0;
            if got {
                let batch = consumer.read_batch(256);
                n = batch.len();
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
                    if meta.flags & mmsg::SLOT_TRUNCATED != 0 {
                        self.on_truncated(peer, meta.len);
                        continue;
                    }
                    let data = whole.as_deref().unwrap_or(data);
                    let time_ns = self.clock.slot_ns(meta.recv_ns);
                    self.accept(data, peer, time_ns)?;
                }
                batch.release();
                // The decider reads records as they are written (it holds
                // their effects until they are durable): wake it before
                // the group commit, not after.
                if n > 0 {
                    self.decider.unpark();
                    if let Some(s) = &self.syncer {
                        s.unpark();
                    }
                }
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
                break;
            }
        }
        self.wal.sync().map_err(err("log sync"))?;
        self.send_durable_acks();
        self.decider.unpark();
        Ok(())
    }

    fn publish(&self, io: &IoHandle) {
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

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<u64, DaemonError> {
        let lsn = self.wal.append(meta, payload).map_err(err("log append"))?;
        self.counters.appended.fetch_add(1, Ordering::Relaxed);
        Ok(lsn)
    }

    fn accept(&mut self, data: &[u8], peer: SocketAddr, time_ns: u64) -> Result<(), DaemonError> {
        let c = match classify(data) {
            Ok(c) => c,
            Err(d) => {
                log::debug!("dropped a datagram from {peer}: {:?}", d.reason);
                self.counters.dropped(d.reason);
                return Ok(());
            }
        };
        self.counters.accepted(c.fstype);
        let meta = RecordMeta {
            kind: RecordKind::Classified,
            time_ns,
            peer: Some(peer),
        };
        let fstype = c.fstype;
        match c.reqid {
            Some(r) if c.is_sequenced() && fstype != FrameSetType::Ack.to_wire() => {
                let key = ConnKey::new(peer, r.queue);
                // A CONNSHUT is logged and ACKed like any other, then the
                // connection is forgotten (rule 2).
                let closes = fstype == FrameSetType::ConnShut.to_wire();
                match self.inbound.entry(key).or_default().on_frameset(r) {
                    Verdict::Deliver => {
                        let lsn = self.log_classified(&meta, &c)?;
                        self.acks.lock().push_back(Delivered {
                            lsn,
                            key,
                            peer,
                            reqid: r,
                            closes,
                        });
                    }
                    Verdict::Duplicate { reack } => {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        if let Some(a) = reack {
                            self.send_ack(peer, a);
                        }
                    }
                    Verdict::StaleSession | Verdict::Gap { .. } => {
                        self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                // A STARTUP with a new WALLCLOCK is a new process: its
                // requests start afresh, whatever its session (rule 2).
                if fstype == FrameSetType::Startup.to_wire()
                    && let Ok(Message::Startup(st)) = c.message()
                    && self.incarnations.insert(peer, st.wallclock_us) != Some(st.wallclock_us)
                {
                    self.inbound.remove(&ConnKey::new(peer, 0));
                }
                // Heartbeats are for agents, not for the CMA: counted (by
                // type), not logged.
                if fstype != FrameSetType::Heartbeat.to_wire() {
                    self.log_classified(&meta, &c)?;
                }
            }
        }
        Ok(())
    }

    /// Logs what classifying a FrameSet found: its verdict and its
    /// verified, inflated frames. Nobody downstream classifies again.
    fn log_classified(
        &mut self,
        meta: &RecordMeta,
        c: &Classified<'_>,
    ) -> Result<u64, DaemonError> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        write_logged(c, &mut record);
        let lsn = self.append(meta, &record);
        self.record = record;
        lsn
    }

    /// A datagram cut to the slot (the spill queue was full): dropped with
    /// its own count, warned once per source. A sequenced one is resent
    /// by its agent and taken whole then.
    fn on_truncated(&mut self, peer: SocketAddr, len: u32) {
        self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        if self.truncated_from.len() < TRUNCATED_WARN_MAX && self.truncated_from.insert(peer.ip()) {
            log::warn!(
                "a datagram from {peer} longer than a ring slot was cut to {len} bytes and dropped (the spill queue was full); raise io.slot_bytes if this repeats"
            );
        }
    }

    fn maybe_tick(&mut self) -> Result<(), DaemonError> {
        let due = self.next_deadline.load(Ordering::Acquire);
        let now = self.clock.now_ms();
        if due != u64::MAX && now >= due && now >= self.last_tick_ms + self.tick_ms {
            let meta = RecordMeta {
                kind: RecordKind::Tick,
                time_ns: now * 1_000_000,
                peer: None,
            };
            self.append(&meta, &[])?;
            self.last_tick_ms = now;
            // The decider will publish its next deadline after this one.
            self.next_deadline.store(u64::MAX, Ordering::Release);
            self.decider.unpark();
            if let Some(s) = &self.syncer {
                s.unpark();
            }
        }
        Ok(())
    }

    /// Without a sync thread, sends the ACKs of what became durable; then
    /// moves the receiving positions past everything ACKed.
    fn send_durable_acks(&mut self) {
        if !self.sync_thread {
            let mut ready = std::mem::take(&mut self.ready);
            self.acks.take_durable(self.wal.durable_lsn(), &mut ready);
            for &(peer, r) in &ready {
                self.send_ack(peer, r);
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

    fn send_ack(&mut self, peer: SocketAddr, r: ReqId) {
        self.out.clear();
        if encode(
            &Message::Ack,
            Some(r),
            &EncodeOptions::default(),
            &mut self.out,
        )
        .is_ok()
        {
            send_to(&self.send, &self.out, peer, &self.counters);
            self.counters.acks_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Group commit on its own thread: each sync covers everything written
/// while the previous one ran; then the ACKs of what became durable go out
/// and the decider may release effects.
struct SyncThread {
    syncer: Syncer,
    acks: Arc<AckQueue>,
    send: SendSockets,
    counters: Arc<Counters>,
    decider: thread::Thread,
    log_done: Arc<AtomicBool>,
}

impl SyncThread {
    fn run(mut self) -> Result<(), DaemonError> {
        let mut out = Vec::with_capacity(128 * MMSG_BATCH_MAX);
        let mut ready: Vec<(SocketAddr, ReqId)> = Vec::new();
        loop {
            let done = self.log_done.load(Ordering::Acquire);
            let durable = if self.syncer.pending() {
                let d = self.syncer.sync().map_err(err("log sync"))?;
                let (syncs, records, max) = self.syncer.stats();
                let c = &self.counters;
                c.syncs.store(syncs, Ordering::Relaxed);
                c.synced_records.store(records, Ordering::Relaxed);
                c.max_batch.store(max, Ordering::Relaxed);
                d
            } else {
                self.syncer.sync().map_err(err("log sync"))?
            };
            self.acks.take_durable(durable, &mut ready);
            if !ready.is_empty() {
                self.decider.unpark();
                self.send_acks(&mut ready, &mut out);
            }
            let all_acked = self.acks.acked_lsn.load(Ordering::Acquire) >= durable;
            if done && !self.syncer.pending() && all_acked {
                return Ok(());
            }
            if !self.syncer.pending() {
                thread::park_timeout(Duration::from_millis(5));
            }
        }
    }
}

impl SyncThread {
    /// Sends the ACKs with `sendmmsg`, a batch per socket family.
    fn send_acks(&self, ready: &mut Vec<(SocketAddr, ReqId)>, out: &mut Vec<u8>) {
        for v4 in [true, false] {
            let Some(sock) = self.send.for_family(v4) else {
                return;
            };
            let fd = sock.as_raw_fd();
            let mine: Vec<&(SocketAddr, ReqId)> =
                ready.iter().filter(|(p, _)| p.is_ipv4() == v4).collect();
            for chunk in mine.chunks(MMSG_BATCH_MAX) {
                out.clear();
                let mut spans = Vec::with_capacity(chunk.len());
                let mut addrs = Vec::with_capacity(chunk.len());
                for (peer, r) in chunk {
                    let start = out.len();
                    if encode(&Message::Ack, Some(*r), &EncodeOptions::default(), out).is_ok() {
                        spans.push(start..out.len());
                        let mut a = [0u8; crate::ring_buffer::SLOT_ADDR_LEN];
                        let len = mmsg::encode_sockaddr(peer, &mut a);
                        addrs.push((a, len));
                    }
                }
                let msgs: Vec<mmsg::Outgoing<'_>> = spans
                    .iter()
                    .zip(&addrs)
                    .map(|(sp, (a, len))| mmsg::Outgoing {
                        data: &out[sp.clone()],
                        addr: a,
                        addr_len: *len,
                    })
                    .collect();
                let mut sent = 0;
                while sent < msgs.len() {
                    match mmsg::send_batch(fd, &msgs[sent..]) {
                        Ok(0) | Err(_) => {
                            self.counters
                                .send_errors
                                .fetch_add((msgs.len() - sent) as u64, Ordering::Relaxed);
                            break;
                        }
                        Ok(n) => sent += n,
                    }
                }
                self.counters
                    .acks_sent
                    .fetch_add(sent as u64, Ordering::Relaxed);
            }
        }
        ready.clear();
    }
}

/// The bound sockets to send from, by address family (looked up once, not
/// per datagram).
struct SendSockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl SendSockets {
    fn new(list: Vec<UdpSocket>) -> SendSockets {
        let (mut v4, mut v6) = (None, None);
        for s in list {
            match s.local_addr() {
                Ok(a) if a.is_ipv4() => v4 = v4.or(Some(s)),
                Ok(_) => v6 = v6.or(Some(s)),
                Err(_) => {}
            }
        }
        SendSockets { v4, v6 }
    }

    fn try_clone(&self) -> std::io::Result<SendSockets> {
        let c = |s: &Option<UdpSocket>| s.as_ref().map(|s| s.try_clone()).transpose();
        Ok(SendSockets {
            v4: c(&self.v4)?,
            v6: c(&self.v6)?,
        })
    }

    /// The socket of the destination's family (else whichever there is).
    fn for_family(&self, v4: bool) -> Option<&UdpSocket> {
        let (mine, other) = if v4 {
            (&self.v4, &self.v6)
        } else {
            (&self.v6, &self.v4)
        };
        mine.as_ref().or(other.as_ref())
    }
}

/// Sends from the socket of the destination's family.
fn send_to(sockets: &SendSockets, data: &[u8], to: SocketAddr, counters: &Counters) {
    let ok = sockets
        .for_family(to.is_ipv4())
        .is_some_and(|s| s.send_to(data, to).is_ok());
    if !ok {
        counters.send_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Encodes an instruction as the FrameSet an agent obeys.
pub fn encode_instruction(
    i: &Instruction,
    reqid: ReqId,
    cfg: &DeciderConfig,
    out: &mut Vec<u8>,
) -> Result<usize, crate::classify::EncodeError> {
    let rscjson = cfg.rscjson();
    let cma = [cfg.cma_addr];
    let nics: Vec<(String, String)> = match i {
        Instruction::SwitchDiscovery(devices) => devices
            .iter()
            .map(|d| (format!("_switch_{d}"), switch_discovery_json(d)))
            .collect(),
        _ => Vec::new(),
    };
    let triples: Vec<Discovery<'_>> = nics
        .iter()
        .map(|(name, json)| Discovery {
            name,
            interval_s: 0,
            json,
        })
        .collect();
    let m = match i {
        Instruction::SetConfig(json) => Message::SetConfig { json },
        Instruction::AckStartup => Message::AckStartup,
        Instruction::Heartbeat { start: true, peers } => Message::Heartbeats {
            kind: FrameSetType::SendExpectHb,
            params: HbParams {
                rscjson: Some(&rscjson),
                ..HbParams::default()
            },
            peers: Peers::List(peers),
        },
        Instruction::Heartbeat {
            start: false,
            peers,
        } => Message::StopHeartbeats {
            kind: FrameSetType::StopSendExpectHb,
            peers: Peers::List(peers),
        },
        Instruction::Probe => Message::StopHeartbeats {
            kind: FrameSetType::StopSendHb,
            peers: Peers::List(&cma),
        },
        Instruction::StopSending(peers) => Message::StopHeartbeats {
            kind: FrameSetType::StopSendHb,
            peers: Peers::List(peers),
        },
        Instruction::Half {
            send,
            start: true,
            peers,
        } => Message::Heartbeats {
            kind: if *send {
                FrameSetType::SendHb
            } else {
                FrameSetType::ExpectHb
            },
            params: HbParams {
                rscjson: Some(&rscjson),
                ..HbParams::default()
            },
            peers: Peers::List(peers),
        },
        Instruction::Half {
            send,
            start: false,
            peers,
        } => Message::StopHeartbeats {
            kind: if *send {
                FrameSetType::StopSendHb
            } else {
                FrameSetType::StopExpectHb
            },
            peers: Peers::List(peers),
        },
        Instruction::StateRequest => Message::HbStateReq,
        Instruction::ConnShut => Message::ConnShut,
        Instruction::SwitchDiscovery(_) => Message::Discover {
            stop: false,
            list: Discoveries::List(&triples),
        },
    };
    encode(&m, Some(reqid), &EncodeOptions::default(), out)
}

/// DISCJSON of a `#SWITCH` discovery on `device`: listen for LLDP and CDP
/// there (instance `_switch_DEVICE`, as a nanoprobe names it).
pub fn switch_discovery_json(device: &str) -> String {
    serde_json::json!({
        "type": "#SWITCH",
        "instance": format!("_switch_{device}"),
        "device": device,
        "swprotocols": ["lldp", "cdp"],
    })
    .to_string()
}

/// The sending half towards agents: what is in flight per address, resent
/// (the oldest) every retransmit interval until the decider sees its ACK.
struct Transport {
    sockets: SendSockets,
    flights: HashMap<SocketAddr, Flight>,
    retransmit: Duration,
}

struct Flight {
    queue: VecDeque<(u64, Vec<u8>)>,
    last_sent: Instant,
}

impl Transport {
    fn new(sockets: SendSockets, c: &Config) -> Transport {
        Transport {
            sockets,
            flights: HashMap::new(),
            retransmit: Duration::from_millis(c.reliable.retransmit_ms),
        }
    }

    fn send(&mut self, to: SocketAddr, request: u64, bytes: Vec<u8>, counters: &Counters) {
        send_to(&self.sockets, &bytes, to, counters);
        counters.instructions_sent.fetch_add(1, Ordering::Relaxed);
        let f = self.flights.entry(to).or_insert_with(|| Flight {
            queue: VecDeque::new(),
            last_sent: Instant::now(),
        });
        if f.queue.is_empty() {
            f.last_sent = Instant::now();
        }
        f.queue.push_back((request, bytes));
    }

    fn acked(&mut self, to: SocketAddr, acked: u64) {
        if let Some(f) = self.flights.get_mut(&to) {
            while f.queue.front().is_some_and(|(r, _)| *r <= acked) {
                f.queue.pop_front();
                f.last_sent = Instant::now();
            }
            if f.queue.is_empty() {
                self.flights.remove(&to);
            }
        }
    }

    fn forget(&mut self, to: SocketAddr) {
        self.flights.remove(&to);
    }

    fn retransmit_due(&mut self, counters: &Counters) {
        let now = Instant::now();
        for (to, f) in &mut self.flights {
            if now.duration_since(f.last_sent) >= self.retransmit
                && let Some((_, bytes)) = f.queue.front()
            {
                send_to(&self.sockets, bytes, *to, counters);
                counters.retransmits.fetch_add(1, Ordering::Relaxed);
                f.last_sent = now;
            }
        }
    }
}

enum StoreMsg {
    Apply(Applied),
    Checkpoint(u64, Vec<u8>),
}

struct DeciderThread {
    /// Log time -> wall clock, from the RESUME records read.
    wall: WallClock,
    /// The wall time of each `held` entry, in step with it.
    held_wall: VecDeque<Option<u64>>,
    decider: Decider,
    reader: WalReader,
    watermarks: crate::wal::Watermarks,
    transport: Transport,
    store_tx: Sender<StoreMsg>,
    next_deadline: Arc<AtomicU64>,
    log_done: Arc<AtomicBool>,
    counters: Arc<Counters>,
    checkpoint_every: Duration,
    clock: LogClock,
    cpu: Option<usize>,
    spin: bool,
}

impl DeciderThread {
    fn run(mut self) -> Result<(), DaemonError> {
        if let Some(cpu) = self.cpu {
            let mut set = nix::sched::CpuSet::new();
            if set.set(cpu).is_ok()
                && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
            {
                log::info!("decider pinned to CPU {cpu}");
            } else {
                log::warn!("could not pin the decider to CPU {cpu}");
            }
        }
        // Sends from before the restart that were never ACKed go again,
        // with their (session, request id): agents discard duplicates.
        let cfg = self.decider.config().clone();
        for e in self.decider.unacked() {
            self.release(&cfg, e);
        }
        // (LSN, effects) decided but not yet durable.
        let mut held: VecDeque<(u64, u64, Vec<Effect>)> = VecDeque::new();
        let mut effects = Vec::new();
        let mut last_checkpoint = Instant::now();
        let mut checkpointed = self.decider.last_lsn();
        let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("histogram bounds");
        let mut last_figures = Instant::now();
        loop {
            let done = self.log_done.load(Ordering::Acquire);
            let mut worked = false;
            while let Some(r) = self.reader.next() {
                let r = r.map_err(err("log read"))?;
                let recv_ns = r.header.meta.time_ns;
                effects.clear();
                let Some(fed) = feed(&mut self.decider, &r, &mut effects)? else {
                    continue;
                };
                self.wall.see(&fed);
                self.counters.decided.fetch_add(1, Ordering::Relaxed);
                // An agent's ACK of instructions (logged like everything
                // else) ends their retransmission.
                if let Some(from) = fed.ack_from
                    && let Some(n) = self
                        .decider
                        .node_at(from)
                        .and_then(|i| self.decider.node(i))
                {
                    self.transport.acked(n.addr, n.out.acked());
                }
                let now_ns = self.clock.now_ns();
                let _ = latency.record((now_ns.saturating_sub(recv_ns) / 1000).max(1));
                held.push_back((fed.lsn, fed.time_ms, std::mem::take(&mut effects)));
                self.held_wall.push_back(self.wall.at(fed.time_ms));
                worked = true;
            }
            let durable = self.watermarks.durable_lsn();
            while held.front().is_some_and(|h| h.0 <= durable) {
                let (lsn, time_ms, list) = held.pop_front().expect("front exists");
                let wall_ms = self.held_wall.pop_front().flatten();
                let stored = store_effects(&list);
                for e in list {
                    self.release(&cfg, e);
                }
                if self
                    .store_tx
                    .send(StoreMsg::Apply(Applied {
                        lsn,
                        time_ms,
                        wall_ms,
                        effects: stored,
                    }))
                    .is_err()
                {
                    return Err(DaemonError("store thread is gone".into()));
                }
            }
            self.transport.retransmit_due(&self.counters);
            if last_figures.elapsed() >= Duration::from_millis(500) {
                self.publish_figures(&latency);
                last_figures = Instant::now();
            }
            let deadline = self.decider.next_deadline_ms().unwrap_or(u64::MAX);
            self.next_deadline.store(deadline, Ordering::Release);
            let last = self.decider.last_lsn();
            if held.is_empty()
                && last > checkpointed
                && (done || last_checkpoint.elapsed() >= self.checkpoint_every)
            {
                let state = self.decider.export();
                if self
                    .store_tx
                    .send(StoreMsg::Checkpoint(last, state))
                    .is_err()
                {
                    return Err(DaemonError("store thread is gone".into()));
                }
                checkpointed = last;
                last_checkpoint = Instant::now();
            }
            if done && held.is_empty() && self.reader.next_lsn() > self.watermarks.written_lsn() {
                break;
            }
            if !worked {
                if self.spin {
                    std::hint::spin_loop();
                } else {
                    thread::park_timeout(Duration::from_millis(20));
                }
            }
        }
        log::info!(
            "recv->decided latency (us): p50 {} p99 {} p99.9 {} max {} over {} records",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999),
            latency.max(),
            latency.len()
        );
        Ok(())
    }

    fn publish_figures(&self, latency: &hdrhistogram::Histogram<u64>) {
        let mut by: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for n in self.decider.nodes() {
            *by.entry(crate::store::status_name(&n.health)).or_default() += 1;
        }
        let topo = self.decider.topology();
        let f = super::metrics::DeciderFigures {
            nodes: by.into_iter().collect(),
            groups: topo.groups().count() as u64,
            top_ring: topo.top().len() as u64,
            latency_us: [0.5, 0.99, 0.999, 1.0]
                .iter()
                .map(|q| (*q, latency.value_at_quantile(*q)))
                .collect(),
            latency_count: latency.len(),
        };
        *self
            .counters
            .decider
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = f;
    }

    fn release(&mut self, cfg: &DeciderConfig, e: Effect) {
        match e {
            Effect::Send {
                to,
                reqid,
                instruction,
                ..
            } => {
                let mut bytes = Vec::new();
                match encode_instruction(&instruction, reqid, cfg, &mut bytes) {
                    Ok(_) => self
                        .transport
                        .send(to, reqid.request, bytes, &self.counters),
                    Err(e) => log::error!("instruction to {to} not encodable: {e}"),
                }
            }
            Effect::Forget { to } => self.transport.forget(to),
            Effect::Notice(n @ crate::decide::decider::Notice::Conflict { .. }) => {
                log::warn!("{}", describe(&self.decider, &n))
            }
            Effect::Notice(n) => log::info!("{}", describe(&self.decider, &n)),
            Effect::Row(_)
            | Effect::Ring { .. }
            | Effect::Discovery { .. }
            | Effect::Stats { .. } => {}
        }
    }
}

/// A notice in words, with host names.
fn describe(d: &Decider, n: &crate::decide::decider::Notice) -> String {
    use crate::decide::decider::Notice as N;
    let name = |id: &u32| {
        d.node(*id).map_or_else(
            || format!("node {id}"),
            |x| format!("{} ({})", crate::text::clean(&x.hostname), x.addr),
        )
    };
    match n {
        N::Joined(i) => format!("{} joined", name(i)),
        N::Restarted(i) => format!("{} restarted", name(i)),
        N::Moved(i) => format!("{} moved to its switch's ring", name(i)),
        N::Suspected { node, reporter } => {
            format!("{} suspected by {}", name(node), name(reporter))
        }
        N::FalseAlarm { node, reporter } => {
            format!(
                "{} is alive: false alarm from {}",
                name(node),
                name(reporter)
            )
        }
        N::PathFault { node, reporter } => format!(
            "path fault: {} answers the CMA but not {}",
            name(node),
            name(reporter)
        ),
        N::Dead { node, cause } => format!("{} is dead ({cause:?})", name(node)),
        N::Left(i) => format!("{} left cleanly", name(i)),
        N::Rejoined(i) => format!("{} rejoined", name(i)),
        N::Resurrected(i) => format!("{} was declared dead but heartbeats: placed again", name(i)),
        N::SwitchFault {
            group,
            nodes,
            reported,
        } => format!(
            "switch fault: {} unreachable: {} nodes, none declared dead ({} reported: {})",
            crate::text::clean(&crate::store::group_key_text(group)),
            nodes.len(),
            reported.len(),
            reported.iter().map(name).collect::<Vec<_>>().join(", ")
        ),
        N::Healed { group, nodes } => format!(
            "switch healed: {} reachable again; probing its {} unreachable nodes",
            crate::text::clean(&crate::store::group_key_text(group)),
            nodes.len()
        ),
        N::CutOff(i) => format!("{} cut off with its switch (not declared dead)", name(i)),
        N::Reconnected(i) => format!("{} reachable again", name(i)),
        N::Late { node, reporter } => {
            format!("{} late heartbeats seen by {}", name(node), name(reporter))
        }
        N::Drift { node, repairs } => format!(
            "{} heartbeats other peers than its rings say: {repairs} repairs sent",
            name(node)
        ),
        N::Refused { node, code, reason } => format!(
            "{} refused an instruction (code {code}): {}",
            name(node),
            crate::text::clean(reason)
        ),
        N::Degraded { node, reason } => format!(
            "{} degraded, taken out of the rings: {}",
            name(node),
            crate::text::clean(reason)
        ),
        N::Conflict {
            node,
            kept,
            refused,
        } => format!(
            "two live hosts are named {}: the node stays at {kept}, which answered; the STARTUP from {refused} is refused while it is up (a cloned machine?)",
            d.node(*node).map_or("?", |n| n.hostname.as_str())
        ),
    }
}

fn store_loop(
    mut store: Store,
    rx: Receiver<StoreMsg>,
    counters: &Counters,
    release: &AtomicU64,
) -> Result<(), DaemonError> {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        while msgs.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        for m in msgs {
            match m {
                StoreMsg::Apply(a) => batch.push(a),
                StoreMsg::Checkpoint(lsn, state) => {
                    let applied = store.apply(&batch).map_err(err("store"))?;
                    batch.clear();
                    counters.stored_lsn.store(applied, Ordering::Release);
                    store.write_checkpoint(lsn, &state).map_err(err("store"))?;
                    // Segments wholly below the checkpoint may go (rule 4).
                    release.store(lsn, Ordering::Release);
                }
            }
        }
        if !batch.is_empty() {
            let applied = store.apply(&batch).map_err(err("store"))?;
            batch.clear();
            counters.stored_lsn.store(applied, Ordering::Release);
        }
    }
    Ok(())
}

/// Runs a daemon until `stop` is set (by a signal handler or a test).
pub fn run(config: Config, salvage: bool, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let mut d = Daemon::start(config, salvage)?;
    log::info!("listening on {:?}", d.local_addrs());
    d.stop_on(stop);
    d.run()
}

/// The data directory's database path.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}
