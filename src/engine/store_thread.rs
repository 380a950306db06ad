//! The store thread: applies durable effects to SQLite in batches and
//! writes checkpoints; segments below a checkpoint may then go.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Receiver;

use super::daemon::{DaemonError, err};
use super::decide_thread::StoreMsg;
use super::metrics::Metrics as Counters;
use crate::store::Store;

pub(super) fn store_loop(
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
