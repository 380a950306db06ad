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
use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use super::io::{IoConfig, IoHandle, IoLoop, SpillReceiver};
use crate::config::Config;
use crate::decide::decider::{Decider, DeciderConfig};
use crate::reliable::{ConnKey, Inbound};
use crate::ring_buffer::{self, Consumer};
use crate::store::{Applied, DB_FILE, Store};
use crate::wal::{RecordKind, RecordMeta, SyncPolicy, Wal, WalConfig};

use super::decide_thread::{DeciderThread, StoreMsg};
use super::fatal::Fatal;
use super::feed::{WallClock, feed, store_effects};
use super::log_thread::{AckQueue, LogClock, LogThread, Registration};
use super::send::{Batch, SendSockets};
pub use super::send::{encode_instruction, switch_discovery_json};
use super::store_thread::store_loop;
use super::sync_thread::SyncThread;

/// Why the daemon could not run.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

pub(super) fn err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> DaemonError + '_ {
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
    incarnations: HashMap<SocketAddr, Registration>,
    /// The CMA's keys (`None`: unauthenticated).
    keyring: Option<Arc<crate::crypt::Keyring>>,
    /// Registered addresses with their nodes' key ids.
    keyed: HashMap<SocketAddr, Vec<Arc<str>>>,
    send: SendSockets,
    clock_base_ms: u64,
    stop: StopHandle,
    counters: Arc<Counters>,
    addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

/// The key directory's keyring; says once at start whether nodes are
/// authenticated.
fn load_keyring(config: &Config) -> Result<Option<Arc<crate::crypt::Keyring>>, DaemonError> {
    let dir = config.key_dir();
    let ring = crate::crypt::Keyring::load(&dir, config.auth.require_known_keys)
        .map_err(|e| DaemonError(format!("keys: {e}")))?;
    match &ring {
        None => log::warn!(
            "no CMA key in {}: nodes are not authenticated, anyone who can send to this port can speak for any node; the network must be trusted (`cma keys init` makes a key)",
            dir.display()
        ),
        Some(r) => log::info!(
            "authentication on: CMA key {}, {} trusted nanoprobe key(s) in {}{}",
            r.sending_key().id,
            r.trusted(),
            dir.display(),
            if config.auth.require_known_keys {
                " (known keys only)"
            } else {
                " (new hosts trusted on first use)"
            }
        ),
    }
    Ok(ring.map(Arc::new))
}

fn sync_policy(c: &Config) -> SyncPolicy {
    match c.wal.sync.as_str() {
        "always" => SyncPolicy::Always,
        "none" => SyncPolicy::None,
        _ => SyncPolicy::Batch,
    }
}

impl Daemon {
    /// Recovers state and binds the sockets; `run` then serves.
    ///
    /// Kept whole: it is the start-up sequence read top to bottom (keys,
    /// log, store, recovery, sockets), each step a few lines of wiring.
    pub fn start(config: Config, salvage: bool) -> Result<Daemon, DaemonError> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| DaemonError(format!("cannot create {}: {e}", data.display())))?;
        let mut store = Store::open(&data.join(DB_FILE)).map_err(err("store"))?;
        // The checkpoint: incremental rows, or the whole state an older
        // file kept (read once; its next checkpoint writes every row).
        let rows = store.checkpoint_rows().map_err(err("store"))?;
        let whole = match rows {
            Some(_) => None,
            None => store.checkpoint().map_err(err("store"))?,
        };
        let cp_lsn = match (&rows, &whole) {
            (Some(r), _) => r.lsn,
            (None, Some((lsn, _))) => *lsn,
            (None, None) => 0,
        };
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
        let mut decider = match (&rows, &whole) {
            (Some(r), _) => Decider::from_rows(r)
                .map_err(|e| DaemonError(format!("checkpoint does not load: {e}")))?,
            (None, Some((_, state))) => {
                let mut d = Decider::import(state)
                    .map_err(|e| DaemonError(format!("checkpoint does not load: {e}")))?;
                log::info!("a whole-state checkpoint: the next one writes it as rows");
                d.mark_all_unsaved();
                d
            }
            (None, None) => match first_config(&wal)? {
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
                    c.give_up_after = config.reliable.give_up_after;
                    c.join_give_up_after = config.reliable.join_give_up_after;
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
            let Some(fed) = feed(&mut decider, &r, &mut effects, None)? else {
                continue;
            };
            replayed += 1;
            wall.see(&fed);
            if fed.lsn > applied {
                batch.push(Applied {
                    lsn: fed.lsn,
                    time_ms: fed.time_ms,
                    wall_ms: wall.at(fed.time_ms),
                    effects: store_effects(std::mem::take(&mut effects)),
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
        let replayed = decider.last_lsn();
        let incarnations: HashMap<SocketAddr, Registration> = decider
            .nodes()
            .iter()
            .filter(|n| !n.is_vacant())
            .map(|n| {
                (
                    n.addr,
                    Registration {
                        wallclock_us: n.incarnation,
                        lsn: replayed,
                    },
                )
            })
            .collect();
        let keyring = load_keyring(&config)?;
        let keyed: HashMap<SocketAddr, Vec<Arc<str>>> = decider
            .nodes()
            .iter()
            .filter_map(|n| Some((n.addr, vec![Arc::from(n.key_id.as_deref()?)])))
            .collect();
        if keyring.is_none() && !keyed.is_empty() {
            log::warn!(
                "{} node(s) joined with keys, but this CMA has no key now: nothing can be sent to them (their instructions are counted in cma_auth_unsendable_total) until the CMA's key is back in {}",
                keyed.len(),
                config.key_dir().display()
            );
        }

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
            keyring,
            keyed,
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
    ///
    /// Kept whole: it starts the threads in the order of the pipeline and
    /// stops them in the reverse order; the two halves mirror each other.
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
            keyring,
            keyed,
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
        let fatal = Arc::new(Fatal::new(stop.clone(), counters.clone(), &config.data_dir));
        fatal.write_health("running", None);

        let guard = fatal.clone();
        let io_thread = thread::Builder::new()
            .name("cma-io".into())
            .spawn(move || guard.guard("io", || io.run().map_err(err("io"))))
            .map_err(err("spawn"))?;

        let (store_tx, store_rx) = crossbeam_channel::bounded::<StoreMsg>(16_384);
        let store_counters = counters.clone();
        let store_release = release_lsn.clone();
        let guard = fatal.clone();
        let store_thread = thread::Builder::new()
            .name("cma-store".into())
            .spawn(move || {
                guard.guard("store", || {
                    store_loop(store, store_rx, &store_counters, &store_release)
                })
            })
            .map_err(err("spawn"))?;

        let (handoff_tx, handoff) = super::feed::Handoff::new();
        let (forget_tx, forget_rx) = crossbeam_channel::unbounded();
        let dctx = DeciderThread {
            wall: WallClock(wall_offset),
            held_wall: VecDeque::new(),
            decider,
            reader,
            watermarks: watermarks.clone(),
            sockets: send.try_clone().map_err(err("sockets"))?,
            batch: Batch::default(),
            store_tx,
            next_deadline: next_deadline.clone(),
            log_done: log_done.clone(),
            counters: counters.clone(),
            checkpoint_every: Duration::from_millis(config.store.checkpoint_ms),
            clock: clock.clone(),
            cpu: usize::try_from(config.decider.cpu).ok(),
            spin: config.decider.spin,
            keyring: keyring.clone(),
            handoff,
            forget: forget_tx,
        };
        let guard = fatal.clone();
        let decider_thread = thread::Builder::new()
            .name("cma-decide".into())
            .spawn(move || guard.guard("decider", || dctx.run()))
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
                lazy: Duration::from_millis(config.wal.lazy_sync_ms),
            };
            let guard = fatal.clone();
            Some(
                thread::Builder::new()
                    .name("cma-sync".into())
                    .spawn(move || guard.guard("sync", || st.run()))
                    .map_err(err("spawn"))?,
            )
        } else {
            None
        };
        let mut consumer = consumer;
        if config.decider.spin {
            consumer.set_spin_limit(100_000);
        }
        let inflater = super::inflater::Inflater::start(keyring.clone(), thread::current())
            .map_err(err("spawn"))?;
        let mut log = LogThread {
            registrations: super::limits::RegistrationLimiter::new(
                config.limits.registrations_per_s,
                config.limits.registration_burst,
            ),
            max_nodes: config.limits.max_nodes,
            fair: super::limits::FairShare::new(config.limits.fair_share),
            handoff: handoff_tx,
            inflation: super::limits::NetworkBuckets::new(
                config.limits.inflate_bytes_per_s,
                config.limits.inflate_burst_bytes,
            ),
            acks,
            sync_thread: background,
            lazy: background && config.wal.lazy_sync_ms > 0,
            syncer: sync_thread.as_ref().map(|t| t.thread().clone()),
            incarnations,
            forget: forget_rx,
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
            keyring,
            allow_unkeyed: config.auth.allow_unkeyed,
            keyed,
            auth_warned: HashSet::new(),
            inflater,
        };
        let io_stop = io_handle;
        let stop_watch = stop.clone();
        let log_result = fatal.guard("log", || log.run(&mut consumer, &stop_watch, &io_stop));
        io_stop.stop();
        let io_result = io_thread.join();
        // The writer's final sync happened in `run`; the sync thread sends
        // the last ACKs and ends.
        log_done.store(true, Ordering::Release);
        let joined = |r: thread::Result<Result<(), DaemonError>>, name: &str| {
            r.unwrap_or_else(|_| Err(DaemonError(format!("{name} thread panicked"))))
        };
        let sync_result = match sync_thread {
            Some(t) => {
                t.thread().unpark();
                joined(t.join(), "sync")
            }
            None => Ok(()),
        };
        log.decider.unpark();
        let decide_result = joined(decider_thread.join(), "decider");
        let store_result = joined(store_thread.join(), "store");
        let io_result = io_result
            .unwrap_or_else(|_| Err(DaemonError("io thread panicked".into())))
            .map(|_| ());
        if let Some(why) = fatal.failure() {
            return Err(DaemonError(why));
        }
        log_result?;
        sync_result?;
        io_result?;
        decide_result?;
        store_result?;
        fatal.write_health("stopped", None);
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

/// Runs a daemon until `stop` is set (by a signal handler or a test).
pub fn run(config: Config, salvage: bool, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let mut d = Daemon::start(config, salvage)?;
    log::info!("listening on {:?}", d.local_addrs());
    d.stop_on(stop);
    d.run()
}

pub use crate::store::db_path;
