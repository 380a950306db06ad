//! The sending half of one connection: request ids in a session, a window
//! of FrameSets in flight, retransmission of the oldest unacknowledged one,
//! cumulative ACKs.
//!
//! The queue holds whatever the caller sends (`T`: encoded bytes, or an
//! instruction to encode). It is bounded by the caller: [`Outbound::len`]
//! says how deep it is; the CMA coalesces ring instructions before they
//! queue up (WIRE.md: never drop a ring instruction), which is the caller's
//! business, not this type's.

use std::collections::VecDeque;

use super::{RetransmitPolicy, RetransmitTimer, Timeout};
use crate::classify::ReqId;

/// Timers and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboundConfig {
    /// FrameSets sent and not yet acknowledged, at most (the protocol's 2).
    pub window: usize,
    /// Resend the oldest unacknowledged FrameSet after this long (2000).
    pub retransmit_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            window: 2,
            retransmit_ms: 2000,
        }
    }
}

/// One FrameSet to put on the wire now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<'a, T> {
    /// Its REQID.
    pub reqid: ReqId,
    /// What the caller queued.
    pub item: &'a T,
    /// A resend of something sent before.
    pub retransmit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry<T> {
    request: u64,
    item: T,
    /// When it was last sent (ms), `None` before the first send.
    sent_ms: Option<u64>,
}

/// Sending state of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound<T> {
    config: OutboundConfig,
    session: u32,
    queue: u16,
    next_request: u64,
    /// Some FrameSet of this session has been acknowledged.
    acked_any: bool,
    pending: VecDeque<Entry<T>>,
    /// The oldest FrameSet's retransmission (the nanoprobe's rule: every
    /// `retransmit_ms`, no back-off, no give-up).
    timer: RetransmitTimer,
}

impl<T> Outbound<T> {
    /// A connection in `session` (request ids start at 1).
    pub fn new(session: u32, queue: u16, config: OutboundConfig) -> Self {
        assert!(config.window >= 1, "a window of at least one FrameSet");
        Outbound {
            config,
            session,
            queue,
            next_request: 1,
            acked_any: false,
            pending: VecDeque::new(),
            timer: RetransmitTimer::default(),
        }
    }

    /// Queues `item` and returns the REQID it will carry.
    pub fn push(&mut self, item: T) -> ReqId {
        let request = self.next_request;
        self.next_request += 1;
        self.pending.push_back(Entry {
            request,
            item,
            sent_ms: None,
        });
        self.reqid(request)
    }

    /// FrameSets queued and not acknowledged.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waits for an ACK.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// What to send at `now_ms`: FrameSets never sent, while the window
    /// allows, and the oldest unacknowledged one again if its timer ran out.
    /// Marks them sent.
    ///
    /// Until the peer has acknowledged something of this session, only one
    /// FrameSet is in flight: a receiver that has no state for us takes a
    /// first request id of 2 or more as "resume from here" (WIRE.md), so if
    /// request 2 overtook request 1 on the network, request 1 would be
    /// treated as a duplicate and lost.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Vec<Transmit<'_, T>> {
        let mut due = Vec::new();
        let policy = self.policy();
        let window = if self.acked_any {
            self.config.window
        } else {
            1
        };
        // Only the oldest is resent (the protocol's rule, no backoff).
        if self.timer.handle_timeout(now_ms, &policy) == Timeout::Resend {
            due.push((0, true));
        }
        for (i, e) in self.pending.iter_mut().enumerate().take(window) {
            if e.sent_ms.is_none() {
                e.sent_ms = Some(now_ms);
                due.push((i, false));
            }
        }
        if self.timer.tries() == 0
            && let Some(t) = self.pending.front().and_then(|e| e.sent_ms)
        {
            self.timer.start(t);
        }
        let (session, queue) = (self.session, self.queue);
        due.into_iter()
            .map(|(i, retransmit)| {
                let e = &self.pending[i];
                Transmit {
                    reqid: ReqId {
                        session,
                        request: e.request,
                        queue,
                    },
                    item: &e.item,
                    retransmit,
                }
            })
            .collect()
    }

    /// When `poll_transmit` will next have something to resend.
    pub fn next_timeout_ms(&self) -> Option<u64> {
        self.timer.deadline_ms(&self.policy())
    }

    fn policy(&self) -> RetransmitPolicy {
        RetransmitPolicy::fixed(self.config.retransmit_ms)
    }

    /// A cumulative ACK: drops every FrameSet up to it in this session.
    /// Returns how many were acknowledged (ACKs of other sessions or
    /// duplicates acknowledge nothing).
    pub fn on_ack(&mut self, ack: ReqId) -> usize {
        if ack.session != self.session || ack.queue != self.queue {
            return 0;
        }
        let mut n = 0;
        while self
            .pending
            .front()
            .is_some_and(|e| e.request <= ack.request && e.sent_ms.is_some())
        {
            self.pending.pop_front();
            n += 1;
        }
        self.acked_any |= n > 0;
        if n > 0 {
            // The next oldest is timed from when it was sent.
            match self.pending.front().and_then(|e| e.sent_ms) {
                Some(t) => self.timer.start(t),
                None => self.timer.stop(),
            }
        }
        n
    }

    fn reqid(&self, request: u64) -> ReqId {
        ReqId {
            session: self.session,
            request,
            queue: self.queue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(t: &[Transmit<'_, &str>]) -> Vec<(u64, bool)> {
        t.iter().map(|x| (x.reqid.request, x.retransmit)).collect()
    }

    fn ack(request: u64) -> ReqId {
        ReqId {
            session: 9,
            request,
            queue: 0,
        }
    }

    #[test]
    fn window_of_two_and_cumulative_acks() {
        let mut o = Outbound::new(9, 0, OutboundConfig::default());
        for s in ["a", "b", "c", "d"] {
            o.push(s);
        }
        // One in flight until the session's first ACK.
        assert_eq!(reqs(&o.poll_transmit(0)), vec![(1, false)]);
        assert!(o.poll_transmit(10).is_empty());
        // The ACK of 1 opens the window of two.
        assert_eq!(o.on_ack(ack(1)), 1);
        assert_eq!(reqs(&o.poll_transmit(20)), vec![(2, false), (3, false)]);
        assert!(o.poll_transmit(30).is_empty());
        // A cumulative ACK of 3 covers 2 as well.
        assert_eq!(o.on_ack(ack(3)), 2);
        assert_eq!(reqs(&o.poll_transmit(40)), vec![(4, false)]);
    }

    #[test]
    fn the_oldest_is_resent_every_interval() {
        let mut o = Outbound::new(9, 0, OutboundConfig::default());
        o.push("z");
        o.poll_transmit(0);
        o.on_ack(ack(1));
        o.push("a");
        o.push("b");
        assert_eq!(reqs(&o.poll_transmit(1000)), vec![(2, false), (3, false)]);
        assert_eq!(o.next_timeout_ms(), Some(3000));
        assert!(o.poll_transmit(2999).is_empty());
        assert_eq!(reqs(&o.poll_transmit(3000)), vec![(2, true)]);
        assert_eq!(reqs(&o.poll_transmit(5000)), vec![(2, true)]);
    }

    #[test]
    fn acks_of_other_sessions_or_unsent_requests_do_nothing() {
        let mut o = Outbound::new(9, 0, OutboundConfig::default());
        o.push("a");
        assert_eq!(
            o.on_ack(ReqId {
                session: 8,
                request: 1,
                queue: 0
            }),
            0
        );
        // Not sent yet: an ACK for it cannot be real.
        assert_eq!(
            o.on_ack(ReqId {
                session: 9,
                request: 1,
                queue: 0
            }),
            0
        );
        o.poll_transmit(0);
        assert_eq!(
            o.on_ack(ReqId {
                session: 9,
                request: 1,
                queue: 1
            }),
            0
        );
        assert_eq!(
            o.on_ack(ReqId {
                session: 9,
                request: 1,
                queue: 0
            }),
            1
        );
        // A duplicate ACK (a nanoprobe ACKs a CONNSHUT twice) is harmless.
        assert_eq!(
            o.on_ack(ReqId {
                session: 9,
                request: 1,
                queue: 0
            }),
            0
        );
    }
}
