//! The sync thread: group commit (each sync covers everything written
//! while the previous one ran), then the ACKs of what became durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{DaemonError, err};
use super::log_thread::AckQueue;
use super::metrics::Metrics as Counters;
use super::mmsg::{self, MMSG_BATCH_MAX};
use super::send::SendSockets;
use crate::wal::Syncer;

/// Group commit on its own thread: each sync covers everything written
/// while the previous one ran; then the ACKs of what became durable go out
/// and the decider may release effects.
pub(super) struct SyncThread {
    pub(super) syncer: Syncer,
    pub(super) acks: Arc<AckQueue>,
    pub(super) send: SendSockets,
    pub(super) counters: Arc<Counters>,
    pub(super) decider: thread::Thread,
    pub(super) log_done: Arc<AtomicBool>,
    /// `wal.lazy_sync_ms`: how long records nobody waits on may wait.
    pub(super) lazy: Duration,
}

impl SyncThread {
    pub(super) fn run(mut self) -> Result<(), DaemonError> {
        let mut out = Vec::with_capacity(128 * MMSG_BATCH_MAX);
        let mut ready: Vec<super::log_thread::AckTo> = Vec::new();
        let mut counted = (0u64, 0u64);
        // Since when only lazy records (STARTUPs, TICKs) have waited.
        let mut lazy_since: Option<Instant> = None;
        let mut was_durable = self.syncer.durable_lsn();
        let mut per_peer: HashMap<SocketAddr, u32> = HashMap::new();
        loop {
            let done = self.log_done.load(Ordering::Acquire);
            let pending = self.syncer.pending();
            let urgent = self.acks.urgent_lsn.load(Ordering::Acquire) > self.syncer.durable_lsn();
            let now = Instant::now();
            let due =
                pending && (urgent || done || lazy_since.get_or_insert(now).elapsed() >= self.lazy);
            self.acks.sync_busy.store(due, Ordering::Release);
            let durable = if due {
                let d = self.syncer.sync().map_err(err("log sync"))?;
                lazy_since = None;
                // The log thread syncs too (a few records when this thread
                // is idle): both add to the counters.
                let (syncs, records, max) = self.syncer.stats();
                let c = &self.counters;
                c.syncs.fetch_add(syncs - counted.0, Ordering::Relaxed);
                c.synced_records
                    .fetch_add(records - counted.1, Ordering::Relaxed);
                c.max_batch.fetch_max(max, Ordering::Relaxed);
                counted = (syncs, records);
                d
            } else {
                self.syncer.durable_lsn()
            };
            self.acks.take_durable(durable, &mut ready);
            if !ready.is_empty() {
                // The ACKs first: the agents wait on them; the decider's
                // held effects can go a few microseconds later.
                fewest_first(&mut ready, &mut per_peer);
                self.send_acks(&mut ready, &mut out);
            }
            if durable > was_durable {
                self.decider.unpark();
                was_durable = durable;
            }
            self.acks.sync_busy.store(false, Ordering::Release);
            let all_acked = self.acks.acked_lsn.load(Ordering::Acquire) >= durable;
            if done && !self.syncer.pending() && all_acked {
                return Ok(());
            }
            if !self.syncer.pending() {
                lazy_since = None;
                thread::park_timeout(Duration::from_millis(5));
            } else if let Some(t) = lazy_since {
                // Lazy records wait: until their deadline, or an ACKed
                // record (the log thread wakes this thread for it).
                let left = self.lazy.saturating_sub(t.elapsed());
                if !left.is_zero() {
                    thread::park_timeout(left);
                }
            }
        }
    }
}

/// Orders one group commit's ACKs so that sources with fewer of them go
/// first (each source's in LSN order): a source with hundreds in one sync
/// (a flood) does not stand between another agent's single report and its
/// ACK, which would otherwise wait behind every send before it.
pub(super) fn fewest_first(
    ready: &mut [super::log_thread::AckTo],
    per_peer: &mut HashMap<SocketAddr, u32>,
) {
    if ready.len() < 3 {
        return;
    }
    per_peer.clear();
    for (p, _, _) in ready.iter() {
        *per_peer.entry(*p).or_default() += 1;
    }
    if per_peer.len() > 1 {
        // Stable: each source's ACKs keep their order.
        ready.sort_by_key(|(p, _, _)| per_peer.get(p).copied().unwrap_or(0));
    }
}

impl SyncThread {
    /// Sends the ACKs with `sendmmsg`, a batch per socket family.
    pub(super) fn send_acks(&self, ready: &mut Vec<super::log_thread::AckTo>, out: &mut Vec<u8>) {
        if self.counters.failed.load(Ordering::Acquire) != 0 {
            // A thread failed: nothing more is ACKed (see `fatal`).
            self.counters
                .acks_withheld
                .fetch_add(ready.len() as u64, Ordering::Relaxed);
            ready.clear();
            return;
        }
        for v4 in [true, false] {
            let Some(sock) = self.send.for_family(v4) else {
                return;
            };
            let fd = sock.as_raw_fd();
            let mine: Vec<&super::log_thread::AckTo> =
                ready.iter().filter(|(p, _, _)| p.is_ipv4() == v4).collect();
            for chunk in mine.chunks(MMSG_BATCH_MAX) {
                out.clear();
                let mut spans = Vec::with_capacity(chunk.len());
                let mut addrs = Vec::with_capacity(chunk.len());
                for (peer, r, key) in chunk {
                    let start = out.len();
                    if super::log_thread::encode_ack(*r, key.as_deref(), out) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ReqId;

    fn ack(port: u16, req: u64) -> super::super::log_thread::AckTo {
        (
            SocketAddr::from(([127, 0, 0, 1], port)),
            ReqId {
                session: 1,
                queue: 0,
                request: req,
            },
            None,
        )
    }

    #[test]
    fn a_lone_report_is_acked_before_a_floods_backlog() {
        let mut ready = vec![
            ack(9, 1),
            ack(9, 2),
            ack(7, 5),
            ack(9, 3),
            ack(8, 1),
            ack(8, 2),
        ];
        let mut m = HashMap::new();
        fewest_first(&mut ready, &mut m);
        let got: Vec<(u16, u64)> = ready
            .iter()
            .map(|(p, r, _)| (p.port(), r.request))
            .collect();
        assert_eq!(got, vec![(7, 5), (8, 1), (8, 2), (9, 1), (9, 2), (9, 3)]);
        // One source: its order is kept.
        let mut one = vec![ack(9, 3), ack(9, 1), ack(9, 2)];
        fewest_first(&mut one, &mut m);
        let got: Vec<u64> = one.iter().map(|(_, r, _)| r.request).collect();
        assert_eq!(got, vec![3, 1, 2]);
    }
}
