//! What a run measured and found, and its summary for people.

use super::*;

/// What a run measured and found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Crash -> confirmed dead, ms of simulated time, one per detected
    /// crash whose monitors (when it crashed) were all alive to report it.
    pub detection_ms: Vec<u64>,
    /// The same for crashes a monitor of which crashed too before it could
    /// report: one report at most, the probe decides.
    pub detection_lone_ms: Vec<u64>,
    /// Crashed nodes never declared dead.
    pub undetected: usize,
    /// Live, reachable nodes declared dead.
    pub false_dead: usize,
    /// Switch partitions injected (long enough to be seen).
    pub partitions: usize,
    /// Of them, named as a switch fault.
    pub partitions_named: usize,
    /// Agents frozen and resumed.
    pub pauses: usize,
    /// Of the frozen agents, declared dead while frozen (rightly).
    pub paused_dead: usize,
    /// Per resumed agent: the time until it had ACKed everything and
    /// matched its rings, ms.
    pub back_settle_ms: Vec<u64>,
    /// Partitions that healed, and per heal the time until every agent of
    /// the switch had ACKed everything sent to it and matched its rings,
    /// ms.
    pub heal_settle_ms: Vec<u64>,
    /// Path faults injected / named.
    pub links: usize,
    /// Path-fault verdicts.
    pub path_fault_verdicts: usize,
    /// Datagrams the CMA sent (instructions, retransmits, ACKs).
    pub cma_sent: u64,
    /// Of those, instructions sent again (the decider's retransmissions).
    pub cma_retransmits: u64,
    /// Agents the CMA gave up on (an instruction never ACKed).
    pub gave_up: u64,
    /// Datagrams agents sent the CMA.
    pub agents_sent: u64,
    /// Of those, reports sent again by the agents' sending halves (their
    /// 2 s retransmission timer ran out before the ACK came).
    pub agent_retransmits: u64,
    /// CMA datagrams sent during the fault phase (per fault: see
    /// [`SimReport::summary`]).
    pub cma_sent_faults: u64,
    /// Faults injected.
    pub faults: usize,
    /// Decider inputs handled.
    pub decisions: u64,
    /// Wall time spent inside the decider, ns.
    pub decider_ns: u128,
    /// Events the simulation processed.
    pub sim_events: u64,
    /// Invariant violations and missed expectations, with times.
    pub failures: Vec<String>,
    /// A digest of every effect, in order (for determinism tests).
    pub effects_digest: u64,
    /// Every decider input, when recorded.
    pub inputs: Vec<RecordedInput>,
    /// Ring instructions agents ACKed without carrying out.
    pub instructions_lost: u64,
    /// Agents whose heartbeat state was wiped.
    pub wipes: u64,
    /// Settled agents compared with their rings (one sender and one
    /// listener per neighbour) after an ACK.
    pub ring_checks: u64,
    /// Audits (HBSTATE compared with the rings) that found drift.
    pub drift_repaired: u64,
    /// Audit-interval samples at which some settled agent's state differed
    /// from its rings (each counted once per agent and sample).
    pub drift_samples: u64,
    /// The most consecutive samples one drift lasted.
    pub longest_drift_samples: u32,
    /// The decider at the end.
    pub decider: Option<Decider>,
}

impl SimReport {
    /// Detection-time percentile (0..=100), ms.
    pub fn detection_percentile(&self, p: f64) -> Option<u64> {
        if self.detection_ms.is_empty() {
            return None;
        }
        let mut v = self.detection_ms.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pct = |p| {
            self.detection_percentile(p)
                .map_or("-".into(), |v| format!("{:.1} s", v as f64 / 1000.0))
        };
        let _ = writeln!(
            s,
            "crashes detected {} (undetected {}), detection p50 {} p90 {} p99 {} max {}",
            self.detection_ms.len(),
            self.undetected,
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        );
        if !self.detection_lone_ms.is_empty() {
            let _ = writeln!(
                s,
                "crashes with a monitor crashed too (the probe decides) {}, max {:.1} s",
                self.detection_lone_ms.len(),
                *self.detection_lone_ms.iter().max().unwrap_or(&0) as f64 / 1000.0
            );
        }
        if !self.heal_settle_ms.is_empty() {
            let mut h = self.heal_settle_ms.clone();
            h.sort_unstable();
            let _ = writeln!(
                s,
                "switches healed {}: every agent matched its rings after p50 {} ms, max {} ms",
                h.len(),
                h[h.len() / 2],
                h[h.len() - 1]
            );
        }
        let _ = writeln!(
            s,
            "false dead {}, switch partitions named {}/{}, path-fault verdicts {} (links broken {})",
            self.false_dead,
            self.partitions_named,
            self.partitions,
            self.path_fault_verdicts,
            self.links
        );
        let _ = writeln!(
            s,
            "settled agents checked against their rings (one sender, one listener per neighbour): {}",
            self.ring_checks
        );
        let per_fault = if self.faults == 0 {
            0.0
        } else {
            self.cma_sent_faults as f64 / self.faults as f64
        };
        let _ = writeln!(
            s,
            "CMA sent {} datagrams, agents {}; {:.1} CMA datagrams per fault in the fault phase",
            self.cma_sent, self.agents_sent, per_fault
        );
        let rate = if self.decider_ns == 0 {
            0.0
        } else {
            self.decisions as f64 * 1e9 / self.decider_ns as f64
        };
        let _ = writeln!(
            s,
            "decider: {} inputs, {:.2} s of CPU, {:.0} inputs/s",
            self.decisions,
            self.decider_ns as f64 / 1e9,
            rate
        );
        for f in self.failures.iter().take(20) {
            let _ = writeln!(s, "FAILURE: {f}");
        }
        if self.instructions_lost + self.wipes + self.drift_repaired > 0 {
            let _ = writeln!(
                s,
                "audits: {} ring instructions lost, {} agents wiped, {} drifts repaired; drift seen at {} samples, longest {} samples in a row",
                self.instructions_lost,
                self.wipes,
                self.drift_repaired,
                self.drift_samples,
                self.longest_drift_samples
            );
        }
        s
    }
}
