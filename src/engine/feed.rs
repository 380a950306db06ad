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
/// into `upgraded`; if this build no longer accepts it, that is said (it
/// was ACKed when written) and the record is not decided.
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
        )
    });
    effects
}
