//! The decider thread: reads records as they are written, decides them,
//! holds their effects until they are durable, then sends and stores
//! them; checkpoints every `store.checkpoint_ms`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::daemon::{DaemonError, err};
use super::feed::{WallClock, feed, store_effects};
use super::log_thread::LogClock;
use super::metrics::Metrics as Counters;
use super::send::{Batch, SendSockets};
use crate::decide::decider::{Decider, DeciderConfig, Effect};
use crate::store::Applied;
use crate::wal::WalReader;

pub(super) enum StoreMsg {
    Apply(Applied),
    Checkpoint(crate::decide::decider::CheckpointDelta),
}

pub(super) struct DeciderThread {
    /// Log time -> wall clock, from the RESUME records read.
    pub(super) wall: WallClock,
    /// The wall time of each `held` entry, in step with it.
    pub(super) held_wall: VecDeque<Option<u64>>,
    pub(super) decider: Decider,
    pub(super) reader: WalReader,
    pub(super) watermarks: crate::wal::Watermarks,
    /// Where instructions leave from.
    pub(super) sockets: SendSockets,
    /// Instructions released and not yet sent.
    pub(super) batch: Batch,
    pub(super) store_tx: Sender<StoreMsg>,
    pub(super) next_deadline: Arc<AtomicU64>,
    pub(super) log_done: Arc<AtomicBool>,
    pub(super) counters: Arc<Counters>,
    pub(super) checkpoint_every: Duration,
    pub(super) clock: LogClock,
    pub(super) cpu: Option<usize>,
    pub(super) spin: bool,
    /// The CMA's keys: instructions to a keyed node are encrypted to it.
    pub(super) keyring: Option<Arc<crate::crypt::Keyring>>,
    /// What the log thread classified of the records it logged as received.
    pub(super) handoff: super::feed::Handoff,
    /// To the log thread: registrations forgotten, (address, the LSN that
    /// decided it).
    pub(super) forget: Sender<(std::net::SocketAddr, u64)>,
}

impl DeciderThread {
    /// The decider thread's loop: read what was logged, decide, hold the
    /// effects until durable, send, store, checkpoint. Kept whole: one
    /// iteration is the thread's whole life, read in order.
    pub(super) fn run(mut self) -> Result<(), DaemonError> {
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
            self.release(&cfg, &e);
        }
        self.batch.send(&self.sockets, &self.counters);
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
                let handed = if r.header.meta.kind == crate::wal::RecordKind::FrameSet {
                    let h = self.handoff.take(r.header.lsn);
                    if h.is_none() {
                        self.counters.reclassified.fetch_add(1, Ordering::Relaxed);
                    }
                    h
                } else {
                    None
                };
                let Some(fed) = feed(&mut self.decider, &r, &mut effects, handed)? else {
                    continue;
                };
                self.wall.see(&fed);
                self.counters.decided.fetch_add(1, Ordering::Relaxed);
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
                for e in &list {
                    self.release(&cfg, e);
                }
                let stored = store_effects(list);
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
            if !self.batch.is_empty() {
                self.batch.send(&self.sockets, &self.counters);
                let c = self.decider.counters();
                self.counters
                    .retransmits
                    .store(c.retransmits, Ordering::Relaxed);
                self.counters.gave_up.store(c.gave_up, Ordering::Relaxed);
            }
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
                let delta = self.decider.take_checkpoint();
                if self.store_tx.send(StoreMsg::Checkpoint(delta)).is_err() {
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

    pub(super) fn publish_figures(&self, latency: &hdrhistogram::Histogram<u64>) {
        let mut by: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for n in self.decider.nodes().iter().filter(|n| !n.is_vacant()) {
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

    pub(super) fn release(&mut self, cfg: &DeciderConfig, e: &Effect) {
        match e {
            Effect::Send {
                node,
                to,
                reqid,
                instruction,
            } => {
                // A keyed node obeys only what comes under the CMA's key.
                let key = match self.decider.key_of(*node) {
                    None => None,
                    Some(id) => match self.keyring.as_ref().and_then(|r| r.peer(id)) {
                        Some(k) => Some(k),
                        None => {
                            self.counters
                                .auth_unsendable
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                    },
                };
                if let Err(e) =
                    self.batch
                        .push_instruction(*to, instruction, *reqid, cfg, key.as_deref())
                {
                    log::error!("instruction to {to} not encodable: {e}");
                }
            }
            Effect::Notice(n @ crate::decide::decider::Notice::Conflict { .. }) => {
                log::warn!("{}", describe(&self.decider, n))
            }
            Effect::Notice(n) => log::info!("{}", describe(&self.decider, n)),
            Effect::Forget { addr, lsn, .. } => {
                // Unbounded, and never waited on: registrations are
                // limited, and the log thread takes these every pass. Gone
                // only when the log thread is (the daemon is stopping).
                let _ = self.forget.send((*addr, *lsn));
            }
            Effect::Row(_)
            | Effect::Ring { .. }
            | Effect::Discovery { .. }
            | Effect::Stats { .. } => {}
        }
    }
}

/// A notice in words, with host names.
pub(super) fn describe(d: &Decider, n: &crate::decide::decider::Notice) -> String {
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
        N::GaveUp { node, tries } => format!(
            "{} never ACKed an instruction sent {tries} times: unreachable, out of the rings until it is heard from",
            name(node)
        ),
        N::Forgotten {
            hostname,
            addr,
            tries,
            ..
        } => format!(
            "{} ({addr}) never ACKed its configuration, sent {tries} times: registration forgotten (a forged or unreachable STARTUP; a real agent registers again with its next)",
            crate::text::clean(hostname)
        ),
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
