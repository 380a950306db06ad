//! From a log record to a decider input: the one way a logged FrameSet
//! reaches the decider, live in the daemon, in recovery and in the
//! simulator's replay. It reads the record the log thread wrote
//! ([`Logged`]) and never classifies.

use std::net::SocketAddr;

use super::decider::{Decider, Effect, Event, Input};
use crate::classify::{Logged, Message};

/// What became of a logged FrameSet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Decided as its message; `ack` when it was an agent's ACK.
    Message {
        /// The record was an ACK of CMA instructions.
        ack: bool,
    },
    /// Decided as a malformed sequenced FrameSet (its receiving position
    /// moves; nothing else).
    Malformed,
    /// Not an input: unsequenced and unreadable. Said in the log.
    Skipped,
}

/// Feeds the FrameSet `logged`, received from `from` and logged at `lsn`
/// and `time_ms`, to the decider.
pub fn decide_logged(
    d: &mut Decider,
    lsn: u64,
    time_ms: u64,
    from: SocketAddr,
    logged: &Logged<'_>,
    out: &mut Vec<Effect>,
) -> Decided {
    let (event, decided) = match (logged.malformed, logged.message()) {
        (None, Ok(message)) => (
            Event::Received {
                from,
                reqid: logged.reqid,
                message,
                key: logged.sender_key,
            },
            Decided::Message {
                ack: matches!(message, Message::Ack),
            },
        ),
        (malformed, parsed) => {
            if malformed.is_none()
                && let Err(e) = parsed
            {
                // Accepted when written, refused now: the record format
                // changed without a new version.
                log::warn!("log record {lsn}: accepted when written, does not parse now ({e})");
            }
            match logged.reqid {
                Some(reqid) => (
                    Event::Malformed {
                        from,
                        reqid,
                        key: logged.sender_key,
                    },
                    Decided::Malformed,
                ),
                None => return Decided::Skipped,
            }
        }
    };
    d.handle(
        &Input {
            lsn,
            time_ms,
            event,
        },
        out,
    );
    decided
}
