//! Group commit from another thread ([`Syncer`]) and the watermarks other
//! threads read ([`Watermarks`]).

use super::*;

/// Makes the records a [`Wal`] has written durable, from another thread.
///
/// It reads the written LSN (Acquire: every record up to it is complete and
/// its segment's `written_end` covers it), msyncs what was written since
/// the last sync in every segment from where it stopped, then publishes the
/// durable LSN (which only grows). Segments before the one it stopped in
/// were synced whole by the writer when it left them. A failed sync is
/// never retried: the log refuses further appends (see [`Wal::sync`]).
pub struct Syncer {
    pub(super) shared: Arc<Shared>,
    /// (base LSN of a segment, offset synced up to in it).
    pub(super) at: (u64, usize),
    pub(super) syncs: u64,
    pub(super) synced_records: u64,
    pub(super) max_batch: u64,
}

impl Syncer {
    /// Is anything written that is not durable?
    pub fn pending(&self) -> bool {
        self.shared.written_lsn.load(Ordering::Acquire)
            > self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// LSN of the last durable record.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Syncs everything written so far; returns the durable LSN.
    pub fn sync(&mut self) -> Result<u64, WalError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(WalError::Failed);
        }
        let lsn = self.shared.written_lsn.load(Ordering::Acquire);
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        if lsn <= durable {
            return Ok(durable);
        }
        let segs: Vec<Arc<Segment>> = self.shared.segments().clone();
        for seg in segs.iter().filter(|s| s.header.base_lsn <= lsn) {
            let base = seg.header.base_lsn;
            if base < self.at.0 {
                continue;
            }
            let from = if base == self.at.0 {
                self.at.1
            } else {
                SEGMENT_HEADER_LEN
            };
            let end = seg.written_end();
            if let Err(e) = seg.flush(from, end.max(from)) {
                self.shared.failed.store(true, Ordering::Release);
                log::error!(
                    "WAL sync of {} failed: {e}; refusing further appends",
                    seg.path.display()
                );
                return Err(WalError::Failed);
            }
            self.at = (base, end.max(from));
        }
        let prev = self.shared.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
        let batch = lsn.saturating_sub(prev.max(durable));
        self.syncs += 1;
        self.synced_records += batch;
        self.max_batch = self.max_batch.max(batch);
        Ok(lsn.max(prev))
    }

    /// (syncs, records made durable, largest batch) by this syncer.
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.syncs, self.synced_records, self.max_batch)
    }
}

/// Read-only view of a log's watermarks, for other threads.
#[derive(Clone)]
pub struct Watermarks {
    pub(super) shared: Arc<Shared>,
}

impl Watermarks {
    /// LSN of the last record written.
    pub fn written_lsn(&self) -> u64 {
        self.shared.written_lsn.load(Ordering::Acquire)
    }

    /// LSN of the last durable record.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }
}
