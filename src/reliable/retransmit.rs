//! When to send the oldest unacknowledged FrameSet again, and when to stop:
//! one timer per connection, driven by the caller's clock (sans-IO, in the
//! manner of quinn-proto's `poll_timeout`/`handle_timeout`).
//!
//! The first transmissions go `interval_ms` apart (the protocol's 2 s; the
//! CMA's probe deadlines count on it), then the wait doubles up to a cap,
//! and after `give_up_after` transmissions the caller is told to give up
//! (DESIGN.md rule 9: every retransmission a give-up). Hearing from the
//! peer proves the path works: [`RetransmitTimer::rearm`] makes a timer
//! that backed off due at once, with the short interval again.

use serde::{Deserialize, Serialize};

/// How a sending half retransmits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// The wait after each of the first `steady_tries` transmissions, ms.
    pub interval_ms: u64,
    /// Transmissions sent `interval_ms` apart before the wait doubles.
    pub steady_tries: u32,
    /// The wait grows to at most `interval_ms << max_shift`.
    pub max_shift: u32,
    /// Transmissions after which the caller gives up (0: never).
    pub give_up_after: u32,
}

impl RetransmitPolicy {
    /// The nanoprobe's own rule: every `interval_ms`, forever.
    pub fn fixed(interval_ms: u64) -> RetransmitPolicy {
        RetransmitPolicy {
            interval_ms,
            steady_tries: u32::MAX,
            max_shift: 0,
            give_up_after: 0,
        }
    }

    /// The CMA's: three transmissions `interval_ms` apart, then doubling
    /// up to 4 intervals, giving up after `give_up_after` transmissions
    /// (at 2 s and 12 tries: 74 s after the first). The cap is short
    /// because a path that heals is noticed by the next transmission.
    pub fn backing_off(interval_ms: u64, give_up_after: u32) -> RetransmitPolicy {
        RetransmitPolicy {
            interval_ms,
            steady_tries: 3,
            max_shift: 2,
            give_up_after,
        }
    }

    /// How long to wait after the `tries`-th transmission.
    pub fn wait_after(&self, tries: u32) -> u64 {
        let shift = tries.saturating_sub(self.steady_tries).min(self.max_shift);
        self.interval_ms.max(1).saturating_mul(1 << shift)
    }

    /// From the first transmission to the give-up, ms (`None`: never).
    pub fn give_up_ms(&self) -> Option<u64> {
        (self.give_up_after > 0).then(|| (1..=self.give_up_after).map(|t| self.wait_after(t)).sum())
    }
}

/// What the timer asks for at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing in flight.
    Idle,
    /// Not yet: wait until then (ms).
    Wait(u64),
    /// Send the oldest unacknowledged FrameSet again now.
    Resend,
    /// Enough: stop sending to this peer.
    GiveUp,
}

/// The retransmission timer of one connection's oldest FrameSet in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetransmitTimer {
    /// When it was last sent, ms.
    last_ms: u64,
    /// Transmissions so far (0: idle).
    tries: u32,
}

impl RetransmitTimer {
    /// A FrameSet became the oldest in flight and was sent at `now_ms`.
    pub fn start(&mut self, now_ms: u64) {
        self.last_ms = now_ms;
        self.tries = 1;
    }

    /// Nothing is in flight any more.
    pub fn stop(&mut self) {
        self.tries = 0;
    }

    /// Transmissions of the oldest FrameSet so far (0: idle).
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// When [`RetransmitTimer::handle_timeout`] will next ask for something.
    pub fn deadline_ms(&self, p: &RetransmitPolicy) -> Option<u64> {
        (self.tries > 0).then(|| self.last_ms.saturating_add(p.wait_after(self.tries)))
    }

    /// What to do at `now_ms`; counts the transmission it asks for.
    pub fn handle_timeout(&mut self, now_ms: u64, p: &RetransmitPolicy) -> Timeout {
        let Some(due) = self.deadline_ms(p) else {
            return Timeout::Idle;
        };
        if now_ms < due {
            return Timeout::Wait(due);
        }
        if p.give_up_after > 0 && self.tries >= p.give_up_after {
            self.tries = 0;
            return Timeout::GiveUp;
        }
        self.tries += 1;
        self.last_ms = now_ms;
        Timeout::Resend
    }

    /// The peer was heard from (or must be reached quickly, as for a
    /// probe): a timer that backed off is due at `now_ms` and counts its
    /// tries afresh. Returns whether it changed.
    pub fn rearm(&mut self, now_ms: u64, p: &RetransmitPolicy) -> bool {
        if self.tries <= 1 {
            return false;
        }
        if p.wait_after(self.tries) > p.wait_after(1) {
            // Backed off: due now.
            self.last_ms = now_ms.saturating_sub(p.wait_after(1));
        }
        self.tries = 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_then_doubling_then_give_up() {
        let p = RetransmitPolicy::backing_off(2000, 12);
        let mut t = RetransmitTimer::default();
        assert_eq!(t.handle_timeout(0, &p), Timeout::Idle);
        t.start(0);
        let mut sent = vec![0];
        let mut now = 0;
        loop {
            match t.handle_timeout(now, &p) {
                Timeout::Wait(at) => now = at,
                Timeout::Resend => sent.push(now),
                Timeout::GiveUp => break,
                Timeout::Idle => panic!("idle while in flight"),
            }
        }
        assert_eq!(
            sent,
            vec![
                0, 2000, 4000, 6000, 10_000, 18_000, 26_000, 34_000, 42_000, 50_000, 58_000, 66_000
            ]
        );
        assert_eq!(now, 74_000);
        assert_eq!(p.give_up_ms(), Some(74_000));
        assert_eq!(t.handle_timeout(now + 1_000_000, &p), Timeout::Idle);
    }

    #[test]
    fn the_nanoprobes_rule_never_gives_up() {
        let p = RetransmitPolicy::fixed(2000);
        let mut t = RetransmitTimer::default();
        t.start(5);
        for i in 1..1000u64 {
            assert_eq!(
                t.handle_timeout(5 + i * 2000 - 1, &p),
                Timeout::Wait(5 + i * 2000)
            );
            assert_eq!(t.handle_timeout(5 + i * 2000, &p), Timeout::Resend);
        }
        assert_eq!(p.give_up_ms(), None);
    }

    #[test]
    fn hearing_from_the_peer_ends_the_back_off() {
        let p = RetransmitPolicy::backing_off(2000, 12);
        let mut t = RetransmitTimer::default();
        t.start(0);
        assert!(!t.rearm(100, &p), "a first transmission is not backed off");
        for at in [2000, 4000, 6000, 10_000] {
            assert_eq!(t.handle_timeout(at, &p), Timeout::Resend);
        }
        // Waiting 8 s now; heard at 11 s: due at once, short waits again.
        assert_eq!(t.deadline_ms(&p), Some(18_000));
        assert!(t.rearm(11_000, &p));
        assert_eq!(t.deadline_ms(&p), Some(11_000));
        assert_eq!(t.handle_timeout(11_000, &p), Timeout::Resend);
        assert_eq!(t.deadline_ms(&p), Some(13_000));
        // Give-up counts from the rearm: eleven more transmissions.
        let mut n = 0;
        let mut now = 11_000;
        loop {
            match t.handle_timeout(now, &p) {
                Timeout::Wait(at) => now = at,
                Timeout::Resend => n += 1,
                Timeout::GiveUp => break,
                Timeout::Idle => unreachable!(),
            }
        }
        assert_eq!(n, 10);
    }
}
