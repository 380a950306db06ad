//! The checks: agents settled and matching their rings, healed switches
//! and resumed agents back within bounds, drift audits, failures.

use super::*;

impl Sim {
    /// Once an agent has ACKed every instruction sent to it, it must have
    /// exactly one sender and one listener per ring neighbour and nothing
    /// else (DESIGN.md rule 8): checked after every ring change as soon as
    /// the agent has it. Not where instructions are lost or agents wiped on
    /// purpose (the audit's tests cover those).
    pub(super) fn check_settled_agent(&mut self, a: u32) {
        if !self.cfg.check_invariants
            || self.cfg.instr_loss > 0.0
            || self.cfg.state_interval_ms > 0
            || self.cfg.faults.wipe > 0
        {
            return;
        }
        let Some(id) = self.decider.node_at(self.agents[a as usize].addr) else {
            return;
        };
        let n = &self.decider.nodes()[id as usize];
        let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
        if !n.out.settled() || !in_service || !self.agents[a as usize].alive {
            return;
        }
        self.report.ring_checks += 1;
        if let Some(p) = self.ring_mismatch(id) {
            self.fail(format!("h{a} after its last ACK: {p}"));
        }
    }

    /// How agent-of-node `id` differs from its rings (one sender and one
    /// listener per neighbour), if it does.
    pub(super) fn ring_mismatch(&self, id: u32) -> Option<String> {
        let a = self.node_agent[id as usize];
        let ag = &self.agents[a as usize];
        let topo = self.decider.topology();
        let mut want: Vec<(u32, i32)> = Vec::new();
        if topo.group_of(id).is_some() {
            for p in topo.peers_of(id) {
                want.push((self.node_agent[p as usize], 1));
            }
        }
        let mut expect = ag.expect.clone();
        let mut send = ag.send.clone();
        want.sort_unstable();
        expect.sort_unstable();
        send.sort_unstable();
        (want != expect || want != send)
            .then(|| format!("h{a} sends {send:?} and expects {expect:?}, its rings say {want:?}"))
    }

    pub(super) fn count_fault_phase(&mut self) {
        let from = self.cfg.faults_from_ms();
        if self.now >= from && self.now < from + 180_000 {
            self.report.cma_sent_faults += 1;
        }
    }

    /// What agent `a` heartbeats and watches, against its rings, as sets:
    /// `None` when they agree.
    pub(super) fn drift_of(&self, id: usize) -> Option<String> {
        let a = self.node_agent[id];
        let ag = &self.agents[a as usize];
        let topo = self.decider.topology();
        let mut want: Vec<u32> = topo
            .peers_of(id as u32)
            .into_iter()
            .map(|p| self.node_agent[p as usize])
            .collect();
        want.sort_unstable();
        want.dedup();
        let mut send: Vec<u32> = ag.send.iter().map(|x| x.0).collect();
        let mut expect: Vec<u32> = ag.expect.iter().map(|x| x.0).collect();
        send.sort_unstable();
        expect.sort_unstable();
        (send != want || expect != want)
            .then(|| format!("sends {send:?} expects {expect:?}, its rings say {want:?}"))
    }

    /// One audit-interval sample: a settled agent (nothing in flight to
    /// it) whose state differs from its rings is drifting; the same drift
    /// seen at three samples in a row has outlived one audit interval
    /// (a drift starting just after a sample is seen at the next two).
    pub(super) fn audit_sample(&mut self) {
        let mut seen = Vec::new();
        for (id, n) in self.decider.nodes().iter().enumerate() {
            if n.is_vacant() {
                continue;
            }
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if !ag.alive || !in_service || ag.leaving || !n.out.settled() {
                continue;
            }
            if let Some(d) = self.drift_of(id) {
                seen.push((a, d));
            }
        }
        self.report.drift_samples += seen.len() as u64;
        let mut next = HashMap::new();
        for (a, d) in seen {
            let streak = match self.drift_streak.get(&a) {
                Some((prev, k)) if *prev == d => k + 1,
                _ => 1,
            };
            self.report.longest_drift_samples = self.report.longest_drift_samples.max(streak);
            if streak == 3 {
                self.fail(format!(
                    "h{a} drifted for more than one audit interval: {d}"
                ));
            }
            next.insert(a, (d, streak));
        }
        self.drift_streak = next;
    }

    pub(super) fn fail(&mut self, what: String) {
        if self.report.failures.len() < 100 {
            self.report
                .failures
                .push(format!("seed {} t={} ms: {what}", self.cfg.seed, self.now));
        }
    }

    /// After a heal: once every live agent of switch `sw` that the decider
    /// keeps in service has ACKed everything and matches its rings, the
    /// time is recorded; past [`HEAL_SETTLE_MAX_MS`] it is a failure.
    pub(super) fn heal_check(&mut self, sw: u32, since: u64) {
        // Not where instructions are lost or agents wiped on purpose (the
        // audit's tests cover those).
        if self.partitioned[sw as usize] != 0
            || self.cfg.instr_loss > 0.0
            || self.cfg.state_interval_ms > 0
            || self.cfg.faults.wipe > 0
        {
            return;
        }
        let mut problem = None;
        for (id, n) in self.decider.nodes().iter().enumerate() {
            if n.is_vacant() {
                continue;
            }
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if ag.switch != sw || !ag.alive || ag.leaving || self.fate[a as usize].is_some() {
                continue;
            }
            if !in_service {
                problem = Some(format!("h{a} is {:?}", n.health));
            } else if !n.out.settled() {
                // Instructions sent after the heal (a ring change elsewhere
                // in the fleet, made late) get the same time to be ACKed.
                let sent = self.instr_sent_ms[a as usize];
                if sent > since && self.now - sent <= HEAL_SETTLE_MAX_MS {
                    problem = Some(String::new());
                } else {
                    problem = Some(format!("h{a} has instructions unACKed"));
                }
            } else if let Some(p) = self.ring_mismatch(id as u32) {
                problem = Some(p);
            }
            if problem.is_some() {
                break;
            }
        }
        match problem {
            None => self.report.heal_settle_ms.push(self.now - since),
            Some(p) if !p.is_empty() && self.now - since > HEAL_SETTLE_MAX_MS => {
                self.report.heal_settle_ms.push(self.now - since);
                self.fail(format!(
                    "switch sw-{sw} healed at {since} ms; {} ms later: {p}",
                    self.now - since
                ));
            }
            Some(_) => self.at(self.now + HEAL_CHECK_MS, Ev::HealCheck { sw, since }),
        }
    }

    /// After an agent resumed: once the decider has it in service, settled
    /// and matching its rings, the time is recorded; past
    /// [`HEAL_SETTLE_MAX_MS`] it is a failure (a wedged agent never gets
    /// there).
    pub(super) fn back_check(&mut self, a: u32, since: u64) {
        let Some(id) = self.decider.node_at(self.agents[a as usize].addr) else {
            return;
        };
        let n = &self.decider.nodes()[id as usize];
        let problem = if matches!(n.health, Health::Dead(_) | Health::Left) {
            Some(format!("still {:?}", n.health))
        } else if !n.out.settled() {
            Some("instructions unACKed".to_string())
        } else {
            self.ring_mismatch(id)
        };
        match problem {
            None => {
                self.report.back_settle_ms.push(self.now - since);
                self.fate[a as usize] = None;
            }
            Some(p) if !p.is_empty() && self.now - since > HEAL_SETTLE_MAX_MS => {
                self.report.back_settle_ms.push(self.now - since);
                self.fate[a as usize] = None;
                self.fail(format!(
                    "h{a} resumed at {since} ms; {} ms later: {p}",
                    self.now - since
                ));
            }
            Some(_) => self.at(self.now + HEAL_CHECK_MS, Ev::BackCheck { a, since }),
        }
    }

    /// Every live agent heartbeats exactly the peers its rings say, and
    /// every node the decider keeps in service is a live agent.
    pub(super) fn check_agents_match_rings(&mut self) {
        let mut problems = Vec::new();
        for (id, n) in self.decider.nodes().iter().enumerate() {
            if n.is_vacant() {
                continue;
            }
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if in_service != ag.alive {
                problems.push(format!(
                    "h{a}: decider says {:?}, agent alive={}",
                    n.health, ag.alive
                ));
                continue;
            }
            if !ag.alive {
                continue;
            }
            if let Some(p) = self.ring_mismatch(id as u32) {
                problems.push(p);
            }
        }
        for p in problems.into_iter().take(10) {
            self.fail(p);
        }
    }
}
