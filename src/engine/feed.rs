//! From log records to the decider, live and in recovery: the record's
//! classified FrameSet (or an older log's datagram, upgraded), TICK and
//! RESUME become decider inputs; the log clock's tie to the wall clock;
//! the store's share of the effects.

use super::daemon::DaemonError;
use crate::classify::{Logged, classify, write_logged};
use crate::decide::decider::{Decider, Effect, Event, Input};
use crate::decide::input::{Decided, decide_logged};
use crate::wal::{Record, RecordKind};

/// What feeding a record to the decider was.
pub(super) struct Fed {
    pub(super) lsn: u64,
    pub(super) time_ms: u64,
    /// A RESUME record's UTC wall clock (ms since the epoch) at its log
    /// time: from here on, wall = log time + (this - its log time).
    pub(super) wall_mark_ms: Option<u64>,
}

/// Wall-clock ms minus log ms, as the RESUME records of the log say: the
/// log clock is monotonic across restarts (rule 5), the wall clock is what
/// operators read.
#[derive(Clone, Copy, Default)]
pub(super) struct WallClock(pub(super) Option<i64>);

impl WallClock {
    pub(super) fn see(&mut self, fed: &Fed) {
        if let Some(w) = fed.wall_mark_ms {
            self.0 = Some(w as i64 - fed.time_ms as i64);
        }
    }

    pub(super) fn at(self, time_ms: u64) -> Option<u64> {
        self.0.and_then(|o| u64::try_from(time_ms as i64 + o).ok())
    }
}

/// Feeds one log record to the decider (`None`: a record it does not
/// take, such as CONFIG). A FrameSet is read as the log thread classified
/// it ([`Logged`]); the decider never classifies. A record this build
/// cannot read (a newer format) is an error: skipping it would decide
/// differently from the run that wrote it.
pub(super) fn feed(
    d: &mut Decider,
    r: &Record<'_>,
    out: &mut Vec<Effect>,
    handed: Option<Vec<u8>>,
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
            let mut upgraded = handed.unwrap_or_default();
            let Some(logged) = logged_of(r, &mut upgraded)? else {
                return Ok(None);
            };
            let Some(from) = h.meta.peer else {
                log::warn!("log record {lsn}: a FrameSet without its source, not decided");
                return Ok(None);
            };
            return Ok(match decide_logged(d, lsn, time_ms, from, &logged, out) {
                Decided::Skipped => None,
                _ => Some(Fed {
                    lsn,
                    time_ms,
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
        wall_mark_ms,
    }))
}

/// The classified form of a FrameSet record. One that holds the datagram
/// as received (kind FRAMESET: a large inflation in clear, or a record of
/// a cma older than classified records) is classified here, explicitly,
/// into `upgraded`, unless `upgraded` already holds its classified form
/// (the log thread hands the decider what the inflater found: inflated
/// once); if this build no longer accepts it, that is said (it was ACKed
/// when written) and the record is not decided.
pub(super) fn logged_of<'a>(
    r: &Record<'a>,
    upgraded: &'a mut Vec<u8>,
) -> Result<Option<Logged<'a>>, DaemonError> {
    let lsn = r.header.lsn;
    if r.header.meta.kind == RecordKind::Classified {
        return Logged::parse(r.payload)
            .map(Some)
            .map_err(|e| DaemonError(format!("log record {lsn}: {e}")));
    }
    if !upgraded.is_empty() {
        return Logged::parse(upgraded)
            .map(Some)
            .map_err(|e| DaemonError(format!("log record {lsn} as classified: {e}")));
    }
    match classify(r.payload) {
        Ok(c) => write_logged(&c, upgraded),
        Err(d) => {
            log::warn!(
                "log record {lsn} (a FrameSet as received) is not accepted by this cma ({d}); it is not decided"
            );
            return Ok(None);
        }
    }
    Logged::parse(upgraded)
        .map(Some)
        .map_err(|e| DaemonError(format!("log record {lsn} upgraded: {e}")))
}

/// What the log thread classified of the FRAMESET records it wrote (a
/// large inflation in clear, logged as received): handed to the decider
/// so that it does not inflate them again. The log thread hands one over
/// before it appends the record, so the decider cannot read the record
/// first. Bounded; when it is full the decider classifies the record
/// itself (the same result: the handoff saves work, it carries no
/// decision; `cma_reclassified_total` counts those).
pub(super) struct Handoff {
    rx: crossbeam_channel::Receiver<(u64, Vec<u8>)>,
    next: Option<(u64, Vec<u8>)>,
}

/// Classified FrameSets waiting in the handoff at most (each up to 4 MiB).
pub(super) const HANDOFF_MAX: usize = 4;

impl Handoff {
    pub(super) fn new() -> (crossbeam_channel::Sender<(u64, Vec<u8>)>, Handoff) {
        let (tx, rx) = crossbeam_channel::bounded(HANDOFF_MAX);
        (tx, Handoff { rx, next: None })
    }

    /// The classified form of record `lsn`, if it was handed over.
    pub(super) fn take(&mut self, lsn: u64) -> Option<Vec<u8>> {
        loop {
            let (l, v) = match self.next.take() {
                Some(x) => x,
                None => self.rx.try_recv().ok()?,
            };
            if l == lsn {
                return Some(v);
            }
            if l > lsn {
                self.next = Some((l, v));
                return None;
            }
            // Its record was never appended, or was decided without it:
            // dropped.
        }
    }
}

pub(super) fn store_effects(mut effects: Vec<Effect>) -> Vec<Effect> {
    // Moved, not copied: a discovery's JSON is copied once, from the log
    // record into its effect.
    effects.retain(|e| {
        matches!(
            e,
            Effect::Row(_)
                | Effect::Ring { .. }
                | Effect::Notice(_)
                | Effect::Discovery { .. }
                | Effect::Stats { .. }
                | Effect::Forget { .. }
        )
    });
    effects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_gives_each_record_its_own_and_skips_the_stale() {
        let (tx, mut h) = Handoff::new();
        tx.send((5, vec![5])).unwrap();
        tx.send((9, vec![9])).unwrap();
        // Record 3 was not handed over; 5 was.
        assert_eq!(h.take(3), None);
        assert_eq!(h.take(5), Some(vec![5]));
        // 7 was not; 9 waits for its record.
        assert_eq!(h.take(7), None);
        tx.send((12, vec![12])).unwrap();
        // 9 was read before its handoff came (decided without it): 9 is
        // dropped on the way to 12.
        assert_eq!(h.take(12), Some(vec![12]));
        assert_eq!(h.take(13), None);
        // Bounded: the sender sees it full.
        for i in 0..HANDOFF_MAX as u64 {
            tx.try_send((20 + i, Vec::new())).unwrap();
        }
        assert!(tx.is_full());
    }
}
