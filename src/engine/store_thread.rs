//! The store thread: applies durable effects to SQLite in batches and
//! writes checkpoints; segments below a checkpoint may then go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::daemon::{DaemonError, err};
use super::decide_thread::StoreMsg;
use super::metrics::Metrics as Counters;
use crate::store::Store;

/// How long the store gathers records before a transaction.
const PACE: Duration = Duration::from_millis(10);
/// Records in one transaction, at most.
const MAX_BATCH: usize = 16_384;

pub(super) fn store_loop(
    mut store: Store,
    rx: Receiver<StoreMsg>,
    counters: &Counters,
    release: &AtomicU64,
) -> Result<(), DaemonError> {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        // The store is derived state (recovery rebuilds it from the log),
        // never on the ACK's path: it takes what arrives within a short
        // pace and writes it in one transaction. A transaction costs far
        // more than a row, and the decider's sends meanwhile wake no one.
        let started = Instant::now();
        let mut msgs = vec![first];
        let mut connected = true;
        while connected && msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(TryRecvError::Empty) => {
                    let waited = started.elapsed();
                    if waited >= PACE {
                        break;
                    }
                    thread::sleep(PACE - waited);
                }
                Err(TryRecvError::Disconnected) => connected = false,
            }
        }
        for m in msgs {
            match m {
                StoreMsg::Apply(a) => batch.push(a),
                StoreMsg::Checkpoint(delta) => {
                    let lsn = delta.lsn;
                    let applied = store
                        .apply_and_checkpoint(&batch, &delta)
                        .map_err(err("store"))?;
                    batch.clear();
                    counters.stored_lsn.store(applied, Ordering::Release);
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
