//! The sync thread: group commit (each sync covers everything written
//! while the previous one ran), then the ACKs of what became durable.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

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
}

impl SyncThread {
    pub(super) fn run(mut self) -> Result<(), DaemonError> {
        let mut out = Vec::with_capacity(128 * MMSG_BATCH_MAX);
        let mut ready: Vec<super::log_thread::AckTo> = Vec::new();
        let mut counted = (0u64, 0u64);
        loop {
            let done = self.log_done.load(Ordering::Acquire);
            let busy = self.syncer.pending();
            self.acks.sync_busy.store(busy, Ordering::Release);
            let durable = if busy {
                let d = self.syncer.sync().map_err(err("log sync"))?;
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
                self.syncer.sync().map_err(err("log sync"))?
            };
            self.acks.take_durable(durable, &mut ready);
            if !ready.is_empty() {
                // The ACKs first: the agents wait on them; the decider's
                // held effects can go a few microseconds later.
                self.send_acks(&mut ready, &mut out);
                self.decider.unpark();
            }
            self.acks.sync_busy.store(false, Ordering::Release);
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
