//! The receiving half of one connection.
//!
//! ```text
//!            first FrameSet (any session, request r)       deliver, expect r + 1
//!   (none) ───────────────────────────────────────────▶ Open{session, next}
//!   Open: same session, request == next                  deliver, next += 1
//!         same session, request <  next                  duplicate: re-send last ACK
//!         same session, request >  next                  gap: drop (the sender resends)
//!         lower session                                  stale: drop (replay)
//!         higher session                                 reset: expect request 1 of it
//!                                                        (pinned, the CMA's side: dropped)
//!   reset() (STARTUP with a new WALLCLOCK, CONNSHUT)  ─▶ (none)
//! ```
//! ACKs are cumulative and sent only for durable FrameSets: [`Inbound::on_durable`]
//! returns the ACK to send; a duplicate is answered with the last ACK
//! already sent, never with one for a FrameSet not yet durable.

use crate::classify::ReqId;

/// What to do with an arriving sequenced FrameSet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Next in order: log it; ACK it once durable.
    Deliver,
    /// Already delivered: send `reack` again now (`None`: nothing of this
    /// session is durable yet, its ACK will follow).
    Duplicate {
        /// The last ACK sent in this session.
        reack: Option<ReqId>,
    },
    /// From an older session of the peer: a replay, dropped.
    StaleSession,
    /// From a newer session than the open connection's, where only the
    /// sender's own reset may start one ([`Inbound::on_frameset_pinned`]):
    /// dropped, and the connection keeps its session.
    UnknownSession,
    /// Beyond the next expected request: dropped; the sender resends the
    /// oldest unacknowledged one.
    Gap {
        /// The request id we wait for.
        expected: u64,
    },
}

/// Receiving state of one connection (`None` inside until the first
/// FrameSet). Small and `Copy`, so that a checkpoint can hold millions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    open: Option<Open>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Open {
    session: u32,
    queue: u16,
    /// The request id expected next.
    next: u64,
    /// The highest request id ACKed (durable) in this session, 0 for none.
    acked: u64,
}

impl Inbound {
    /// Decides about a sequenced FrameSet carrying `r`.
    pub fn on_frameset(&mut self, r: ReqId) -> Verdict {
        let Some(o) = self.open.as_mut() else {
            // A brand-new connection: a first request id of 2 or more means
            // the sender resumes there (WIRE.md).
            self.open = Some(Open {
                session: r.session,
                queue: r.queue,
                next: r.request.saturating_add(1),
                acked: r.request.saturating_sub(1),
            });
            return Verdict::Deliver;
        };
        if r.session < o.session {
            return Verdict::StaleSession;
        }
        if r.session > o.session {
            *o = Open {
                session: r.session,
                queue: r.queue,
                next: 1,
                acked: 0,
            };
        }
        if r.request == o.next {
            o.next += 1;
            Verdict::Deliver
        } else if r.request < o.next {
            Verdict::Duplicate {
                reack: (o.acked > 0).then_some(ReqId {
                    session: o.session,
                    request: o.acked,
                    queue: o.queue,
                }),
            }
        } else {
            Verdict::Gap { expected: o.next }
        }
    }

    /// As [`Inbound::on_frameset`], for a receiver that knows when the
    /// sender restarts (the CMA: a STARTUP with a new WALLCLOCK, or a
    /// CONNSHUT, after which the caller [`Inbound::reset`]s): once open,
    /// the connection's session is pinned, and a FrameSet under a newer one
    /// is [`Verdict::UnknownSession`]. So a stranger sending from the
    /// sender's address under a session of its own cannot take the
    /// connection over and silence the real sender.
    pub fn on_frameset_pinned(&mut self, r: ReqId) -> Verdict {
        match self.open {
            Some(o) if r.session > o.session => Verdict::UnknownSession,
            _ => self.on_frameset(r),
        }
    }

    /// The FrameSet `r` (delivered earlier) is durable: returns the
    /// cumulative ACK to send, if it advances what was acknowledged.
    pub fn on_durable(&mut self, r: ReqId) -> Option<ReqId> {
        let o = self.open.as_mut()?;
        if r.session != o.session || r.request <= o.acked || r.request >= o.next {
            return None;
        }
        o.acked = r.request;
        Some(ReqId {
            session: o.session,
            request: o.acked,
            queue: o.queue,
        })
    }

    /// A connection resumed from a checkpoint: request `last` of `session`
    /// was delivered and is durable (and so was ACKed, or will be again on
    /// its duplicate).
    pub fn resume(session: u32, queue: u16, last: u64) -> Inbound {
        Inbound {
            open: Some(Open {
                session,
                queue,
                next: last.saturating_add(1),
                acked: last,
            }),
        }
    }

    /// Forgets the connection (the peer restarted or shut it).
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// The session and next expected request, for checkpoints and metrics.
    pub fn position(&self) -> Option<(u32, u64)> {
        self.open.map(|o| (o.session, o.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(session: u32, request: u64) -> ReqId {
        ReqId {
            session,
            request,
            queue: 0,
        }
    }

    #[test]
    fn in_order_then_duplicates_and_acks() {
        let mut c = Inbound::default();
        assert_eq!(c.on_frameset(r(5, 1)), Verdict::Deliver);
        assert_eq!(c.on_frameset(r(5, 1)), Verdict::Duplicate { reack: None });
        assert_eq!(c.on_durable(r(5, 1)), Some(r(5, 1)));
        assert_eq!(
            c.on_frameset(r(5, 1)),
            Verdict::Duplicate {
                reack: Some(r(5, 1))
            }
        );
        assert_eq!(c.on_frameset(r(5, 2)), Verdict::Deliver);
        // 2 is not durable yet: a duplicate gets the last ACK sent, for 1.
        assert_eq!(
            c.on_frameset(r(5, 2)),
            Verdict::Duplicate {
                reack: Some(r(5, 1))
            }
        );
        assert_eq!(c.on_durable(r(5, 2)), Some(r(5, 2)));
        // An ACK never goes backwards or beyond what was delivered.
        assert_eq!(c.on_durable(r(5, 1)), None);
        assert_eq!(c.on_durable(r(5, 3)), None);
    }

    #[test]
    fn gaps_stale_sessions_and_resets() {
        let mut c = Inbound::default();
        assert_eq!(c.on_frameset(r(5, 1)), Verdict::Deliver);
        assert_eq!(c.on_frameset(r(5, 3)), Verdict::Gap { expected: 2 });
        assert_eq!(c.on_frameset(r(4, 9)), Verdict::StaleSession);
        // A higher session resets: it must start at 1.
        assert_eq!(c.on_frameset(r(6, 2)), Verdict::Gap { expected: 1 });
        assert_eq!(c.on_frameset(r(6, 1)), Verdict::Deliver);
        assert_eq!(c.position(), Some((6, 2)));
        c.reset();
        assert_eq!(c.position(), None);
    }

    #[test]
    fn a_pinned_connection_keeps_its_session_until_reset() {
        let mut c = Inbound::default();
        assert_eq!(c.on_frameset_pinned(r(5, 1)), Verdict::Deliver);
        assert_eq!(c.on_frameset_pinned(r(9, 1)), Verdict::UnknownSession);
        assert_eq!(c.on_frameset_pinned(r(9, 2)), Verdict::UnknownSession);
        // The real sender goes on undisturbed.
        assert_eq!(c.on_frameset_pinned(r(5, 2)), Verdict::Deliver);
        assert_eq!(c.on_frameset_pinned(r(4, 1)), Verdict::StaleSession);
        // Its own reset (STARTUP, CONNSHUT) opens the next session.
        c.reset();
        assert_eq!(c.on_frameset_pinned(r(9, 1)), Verdict::Deliver);
        assert_eq!(c.position(), Some((9, 2)));
    }

    #[test]
    fn a_new_connection_resumes_where_the_sender_is() {
        let mut c = Inbound::default();
        assert_eq!(c.on_frameset(r(7, 40)), Verdict::Deliver);
        assert_eq!(c.position(), Some((7, 41)));
        assert_eq!(
            c.on_frameset(r(7, 39)),
            Verdict::Duplicate {
                reack: Some(r(7, 39))
            }
        );
        assert_eq!(c.on_durable(r(7, 40)), Some(r(7, 40)));
    }
}
