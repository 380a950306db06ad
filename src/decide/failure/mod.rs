//! The failure state machine of one watched node D (DESIGN.md):
//!
//! ```text
//!  Up ──HBDEAD(P)──▶ Suspect{P} ──HBDEAD(Q ≠ P) before the window ends, the probe
//!   ▲   (probe D now)    │     unanswered for `answer_ms` since P's report──▶ Dead(two monitors)
//!   │                    │  (Q's report sooner: Suspect{P, agreed Q} until then)
//!   │                    ├──D heard from (HBBACKALIVE, its own traffic)──▶ Up   (false alarm)
//!   │                    ├──probe answered──────────────────────────────▶ Up   (path fault P→D)
//!   │                    └──window ends, no second report─────────────▶ Disputed{P}
//!   │                                           ├──probe answered / D heard──▶ Up (path fault P→D)
//!   │                                           ├──HBDEAD(Q ≠ P), the probe unanswered
//!   │                                           │  longer than the window──▶ Dead(probe)
//!   │                                           └──probe deadline──────────▶ Dead(probe)
//!  any ──HBSHUTDOWN from D──▶ Left         Dead/Left ──STARTUP from D──▶ Up (rejoin)
//!  Dead ──HBMARTIAN about D, or D heard──▶ Up (resurrected; a Left node stays Left)
//!
//!  Up ──HBDEAD from a peer not (yet) watching D──▶ Disputed{P} (probe only:
//!        an edge counts as watching once both ends ACKed it, rule 6)
//!  Up ──HBDEAD made across a cut──▶ Disputed{P, late} (probe only; an answer
//!        is expected, no path fault; pairs with nothing)
//!  Dead (just declared, D a switch representative whose sampled group is
//!        silent too) ──cut off──▶ Unreachable   (verdict: switch fault)
//!  Up/Suspect/Disputed ──its switch cut off──▶ Unreachable
//!  Unreachable ──D heard──▶ Up (reconnected)
//!  Unreachable ──one of its group heard (healed)──▶ Unreachable{probe until}
//!        ──D heard / probe answered──▶ Up;  ──probe deadline──▶ Dead(probe)
//! ```
//!
//! Pure: time is passed in (log time, ms), effects are returned. The window
//! for the second monitor is `max(2 heartbeat intervals, retransmit + 1 s)`
//! and probing starts at the first report (hard-won rule 6). Two monitors
//! are not enough on their own (rule 9: their source addresses may be
//! forged): a death also needs the probe, sent at the first report, to go
//! unanswered for `answer_ms` (a live agent ACKs at once), well within the
//! window, so the detection target is unchanged.

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Timers of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureConfig {
    /// How long the second monitor has to agree, ms.
    pub window_ms: u64,
    /// How long after the first report an unanswered probe means dead, ms
    /// (at least `window_ms`).
    pub probe_timeout_ms: u64,
    /// How long the probe must go unanswered before two monitors' reports
    /// make a death, ms (at most `window_ms`).
    #[serde(default = "default_answer_ms")]
    pub answer_ms: u64,
}

/// A live agent ACKs a probe within a round trip; half a second is a
/// generous allowance on a LAN.
pub const ANSWER_MS: u64 = 500;

fn default_answer_ms() -> u64 {
    ANSWER_MS
}

impl FailureConfig {
    /// The window of rule 6 for a heartbeat interval and a retransmit
    /// interval; the probe gets two retransmits more than the window.
    pub fn new(heartbeat_interval_ms: u64, retransmit_ms: u64) -> FailureConfig {
        let window_ms = (2 * heartbeat_interval_ms).max(retransmit_ms + 1000);
        FailureConfig {
            window_ms,
            probe_timeout_ms: window_ms + 2 * retransmit_ms,
            answer_ms: ANSWER_MS.min(window_ms),
        }
    }
}

/// Why a node was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeathCause {
    /// Both monitors reported it.
    TwoMonitors {
        /// The first reporter.
        first: NodeId,
        /// The one who agreed.
        second: NodeId,
    },
    /// One monitor reported it and it did not answer the CMA's probe.
    Probe {
        /// The reporter.
        reporter: NodeId,
    },
}

/// Where a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Alive as far as anyone knows.
    Up,
    /// One monitor reported it; waiting for the other, probing meanwhile.
    Suspect {
        /// The monitor that reported.
        reporter: NodeId,
        /// When (log time, ms).
        since_ms: u64,
        /// The other monitor agreed before the probe had `answer_ms` to be
        /// answered: dead then, unless it is answered.
        #[serde(default)]
        agreed: Option<NodeId>,
    },
    /// The window passed with one report only, or the report cannot be
    /// paired; the probe decides.
    Disputed {
        /// The monitor that reported.
        reporter: NodeId,
        /// When it reported.
        since_ms: u64,
        /// After this, an unanswered probe means dead.
        until_ms: u64,
        /// The report crossed a cut (its silence overlaps a time when the
        /// reporter's or the node's switch was cut off): an answer to the
        /// probe is expected and names no path fault.
        #[serde(default)]
        late: bool,
    },
    /// Confirmed dead.
    Dead(DeathCause),
    /// Reported dead together with its whole group (a switch or path
    /// fault cut it off): not declared dead; waiting to hear from it or
    /// its group.
    Unreachable {
        /// The monitor that reported first.
        reporter: NodeId,
        /// When it was cut off.
        since_ms: u64,
        /// Its switch is reachable again and it was probed: unanswered by
        /// this time, it is dead.
        #[serde(default)]
        probe_until_ms: Option<u64>,
    },
    /// Shut down cleanly.
    Left,
}

/// What a transition asks the decider to do or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Probe the node with an instruction it obeys and ACKs.
    Probe,
    /// It became suspect (event).
    Suspected {
        /// The reporter.
        reporter: NodeId,
    },
    /// A suspicion ended with the node alive: nobody confirmed it.
    FalseAlarm {
        /// Who reported it.
        reporter: NodeId,
    },
    /// The node answered the probe after one monitor called it dead: the
    /// fault is on the path from that monitor (or the monitor itself).
    PathFault {
        /// The monitor whose heartbeats did not arrive.
        reporter: NodeId,
    },
    /// Declared dead: close the ring around it.
    Died(DeathCause),
    /// Left cleanly: close the ring, no suspicion.
    Departed,
    /// Came back after death or departure: place it again.
    Rejoined,
    /// About to be declared dead, but its group was silent too: cut off
    /// (the decider names the switch fault).
    CutOff,
    /// Heard from again after being cut off.
    Reconnected,
    /// Declared dead, yet it heartbeats (a peer reported it as a martian):
    /// the verdict was wrong; place it again.
    Resurrected,
}

/// An event that does not apply in the current state (counted by the
/// caller, never an error for the fleet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ignored;

impl Health {
    /// A monitor reports the node stopped heartbeating. `reporter` must be
    /// one of its current monitors (the caller checks).
    pub fn on_hbdead(
        &mut self,
        reporter: NodeId,
        now_ms: u64,
        cfg: &FailureConfig,
    ) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Up => {
                *self = Health::Suspect {
                    reporter,
                    since_ms: now_ms,
                    agreed: None,
                };
                Ok(vec![Effect::Suspected { reporter }, Effect::Probe])
            }
            Health::Suspect {
                reporter: first,
                since_ms,
                agreed: None,
            } if first != reporter
                && now_ms <= since_ms + cfg.window_ms
                && now_ms < since_ms + cfg.answer_ms =>
            {
                // Two monitors agree, but the probe has not had its time
                // to be answered: decided then.
                *self = Health::Suspect {
                    reporter: first,
                    since_ms,
                    agreed: Some(reporter),
                };
                Ok(Vec::new())
            }
            Health::Suspect {
                reporter: first,
                since_ms,
                agreed: None,
            }
            | Health::Disputed {
                reporter: first,
                since_ms,
                late: false,
                ..
            } if first != reporter => {
                let cause = if now_ms <= since_ms + cfg.window_ms {
                    // Two monitors agree within the window.
                    DeathCause::TwoMonitors {
                        first,
                        second: reporter,
                    }
                } else {
                    // Too late to pair with the first report (it may
                    // describe another silence), but fresh: with the probe
                    // sent at the first report unanswered for longer than
                    // the window (a retransmission and a second), the
                    // probe has decided.
                    DeathCause::Probe { reporter }
                };
                *self = Health::Dead(cause);
                Ok(vec![Effect::Died(cause)])
            }
            _ => Err(Ignored),
        }
    }

    /// A peer that is not (yet) a watching monitor of the node reports it
    /// dead: no second report can confirm this one; the probe decides.
    pub fn on_unwatched_report(
        &mut self,
        reporter: NodeId,
        now_ms: u64,
        cfg: &FailureConfig,
    ) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Up => {
                *self = Health::Disputed {
                    reporter,
                    since_ms: now_ms,
                    until_ms: now_ms + cfg.probe_timeout_ms,
                    late: false,
                };
                Ok(vec![Effect::Suspected { reporter }, Effect::Probe])
            }
            _ => Err(Ignored),
        }
    }

    /// A report whose silence overlaps a cut (the reporter's or the
    /// node's switch was cut off within one dead time plus the window):
    /// evidence of the cut, not of a death. It pairs with nothing; the
    /// node is probed and dies only if it does not answer.
    pub fn on_late_report(
        &mut self,
        reporter: NodeId,
        now_ms: u64,
        cfg: &FailureConfig,
    ) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Up => {
                *self = Health::Disputed {
                    reporter,
                    since_ms: now_ms,
                    until_ms: now_ms + cfg.probe_timeout_ms,
                    late: true,
                };
                Ok(vec![Effect::Probe])
            }
            _ => Err(Ignored),
        }
    }

    /// Two monitors agreed, but the node is a switch representative whose
    /// sampled group has not answered yet and was probed less than the
    /// window ago: whether the node or its switch failed cannot be told
    /// yet. The probe sent at the first report decides at the window's end
    /// (the caller remembers the second monitor, and the group is judged
    /// then).
    pub fn on_defer(&mut self, since_ms: u64, cfg: &FailureConfig) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Dead(DeathCause::TwoMonitors { first, .. }) => {
                *self = Health::Disputed {
                    reporter: first,
                    since_ms,
                    until_ms: since_ms + cfg.window_ms,
                    late: false,
                };
                Ok(Vec::new())
            }
            _ => Err(Ignored),
        }
    }

    /// Its switch was found cut off (its representatives reported with
    /// the group silent): every member is unreachable, none dead.
    pub fn on_group_cut(&mut self, reporter: NodeId, now_ms: u64) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Up | Health::Suspect { .. } | Health::Disputed { .. } => {
                *self = Health::Unreachable {
                    reporter,
                    since_ms: now_ms,
                    probe_until_ms: None,
                };
                Ok(Vec::new())
            }
            _ => Err(Ignored),
        }
    }

    /// The node was just declared dead, but the group it belongs to has
    /// gone silent with it: it is cut off, not dead.
    pub fn on_cut_off(&mut self, now_ms: u64) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Dead(DeathCause::TwoMonitors {
                first: reporter, ..
            })
            | Health::Dead(DeathCause::Probe { reporter }) => {
                *self = Health::Unreachable {
                    reporter,
                    since_ms: now_ms,
                    probe_until_ms: None,
                };
                Ok(vec![Effect::CutOff])
            }
            _ => Err(Ignored),
        }
    }

    /// A member of the node's group was heard while the node is cut off:
    /// the switch is back, so the node must answer a probe for itself (a
    /// report about it pairs with nothing: it was made across the cut).
    pub fn on_group_heard(
        &mut self,
        now_ms: u64,
        cfg: &FailureConfig,
    ) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Unreachable {
                reporter,
                since_ms,
                probe_until_ms: None,
            } => {
                *self = Health::Unreachable {
                    reporter,
                    since_ms,
                    probe_until_ms: Some(now_ms + cfg.probe_timeout_ms),
                };
                Ok(vec![Effect::Probe])
            }
            _ => Err(Ignored),
        }
    }

    /// No other monitor of the suspect can report (each is itself
    /// suspect, dead, or not yet watching): waiting for a second report is
    /// pointless, so the probe alone decides, by the end of the window (two
    /// transmissions, `retransmit` apart, and a second to answer).
    pub fn on_lone_report(&mut self, cfg: &FailureConfig) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Suspect {
                reporter,
                since_ms,
                agreed: None,
            } => {
                *self = Health::Disputed {
                    reporter,
                    since_ms,
                    until_ms: since_ms + cfg.window_ms,
                    late: false,
                };
                Ok(Vec::new())
            }
            _ => Err(Ignored),
        }
    }

    /// Direct evidence the node lives: HBBACKALIVE about it, its own
    /// traffic, or its ACK of the CMA's probe (`probe` set).
    pub fn on_alive(&mut self, probe: bool) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Disputed { late: true, .. } => {
                // The late report's probe answered, as expected.
                *self = Health::Up;
                Ok(Vec::new())
            }
            Health::Suspect { reporter, .. } | Health::Disputed { reporter, .. } => {
                *self = Health::Up;
                Ok(vec![if probe {
                    Effect::PathFault { reporter }
                } else {
                    Effect::FalseAlarm { reporter }
                }])
            }
            Health::Unreachable { .. } => {
                *self = Health::Up;
                Ok(vec![Effect::Reconnected])
            }
            _ => Err(Ignored),
        }
    }

    /// Time passes: the window or the probe may run out.
    pub fn on_tick(&mut self, now_ms: u64, cfg: &FailureConfig) -> Vec<Effect> {
        match *self {
            Health::Suspect {
                reporter: first,
                since_ms,
                agreed: Some(second),
            } if now_ms >= since_ms + cfg.answer_ms => {
                // The probe went unanswered: the two monitors were right.
                let cause = DeathCause::TwoMonitors { first, second };
                *self = Health::Dead(cause);
                vec![Effect::Died(cause)]
            }
            Health::Suspect {
                reporter,
                since_ms,
                agreed: None,
            } if now_ms > since_ms + cfg.window_ms => {
                *self = Health::Disputed {
                    reporter,
                    since_ms,
                    until_ms: since_ms + cfg.probe_timeout_ms,
                    late: false,
                };
                // Re-check the probe deadline at once (it may be no later).
                self.on_tick(now_ms, cfg)
            }
            Health::Disputed {
                reporter, until_ms, ..
            }
            | Health::Unreachable {
                reporter,
                probe_until_ms: Some(until_ms),
                ..
            } if now_ms > until_ms => {
                let cause = DeathCause::Probe { reporter };
                *self = Health::Dead(cause);
                vec![Effect::Died(cause)]
            }
            _ => Vec::new(),
        }
    }

    /// The next time `on_tick` can change anything.
    pub fn deadline_ms(&self, cfg: &FailureConfig) -> Option<u64> {
        match *self {
            Health::Suspect {
                since_ms,
                agreed: Some(_),
                ..
            } => Some(since_ms + cfg.answer_ms),
            Health::Suspect { since_ms, .. } => Some(since_ms + cfg.window_ms + 1),
            Health::Disputed { until_ms, .. }
            | Health::Unreachable {
                probe_until_ms: Some(until_ms),
                ..
            } => Some(until_ms + 1),
            _ => None,
        }
    }

    /// The node says it is shutting down (HBSHUTDOWN).
    pub fn on_shutdown(&mut self) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Left | Health::Dead(_) => Err(Ignored),
            _ => {
                *self = Health::Left;
                Ok(vec![Effect::Departed])
            }
        }
    }

    /// A peer reports the node heartbeating it unexpectedly (HBMARTIAN
    /// about it). A dead node is alive after all; a node that left cleanly
    /// stays left (the caller tells the martian to stop); otherwise nothing
    /// changes.
    pub fn on_martian(&mut self) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Dead(_) => {
                *self = Health::Up;
                Ok(vec![Effect::Resurrected])
            }
            _ => Err(Ignored),
        }
    }

    /// The node starts (STARTUP with a new incarnation).
    pub fn on_startup(&mut self) -> Result<Vec<Effect>, Ignored> {
        match *self {
            Health::Dead(_) | Health::Left | Health::Unreachable { .. } => {
                *self = Health::Up;
                Ok(vec![Effect::Rejoined])
            }
            _ => Err(Ignored),
        }
    }
}

#[cfg(test)]
mod tests;
