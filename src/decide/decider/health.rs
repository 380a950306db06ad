//! Failure glue: reports (HBDEAD, martians) into each node's failure
//! machine (`failure::Health`), probes, switch cuts and heals, and what a
//! verdict does to the rings.

use super::*;

impl Decider {
    pub(super) fn on_hbdead(&mut self, reporter: NodeId, peer: SocketAddr, out: &mut Vec<Effect>) {
        let Some(&d) = self.by_addr.get(&normalize(peer)) else {
            self.counters.unknown_peer += 1;
            return;
        };
        if d == reporter {
            self.counters.not_applicable += 1;
            return;
        }
        if self.nodes[d as usize].key_id.is_some() && self.nodes[reporter as usize].key_id.is_none()
        {
            // A keyed node's status changes only on keyed monitors' word.
            self.counters.unkeyed_reports += 1;
            return;
        }
        let watching = self.watching(reporter, d);
        let now = self.now_ms;
        let late = self.across_cut(reporter, d);
        let before = self.nodes[d as usize].health;
        let h = &mut self.nodes.get_mut(d as usize).health;
        let e = if late {
            self.counters.reports_across_cut += 1;
            h.on_late_report(reporter, now, &self.fcfg)
        } else if watching {
            h.on_hbdead(reporter, now, &self.fcfg)
        } else {
            h.on_unwatched_report(reporter, now, &self.fcfg)
        };
        self.apply(d, before, e, out);
    }

    /// Was a report by `reporter` about `d` made across a cut? A report
    /// describes one dead time of silence before it arrives; if either
    /// end's switch is cut off now, or healed less than a dead time plus
    /// the window ago, that silence is the cut's (a nanoprobe resends what
    /// it queued during the cut once it is back).
    pub(super) fn across_cut(&self, reporter: NodeId, d: NodeId) -> bool {
        if self.cut_off.is_empty() && self.healed.is_empty() {
            return false;
        }
        let horizon = self.cfg.dead_ms + self.fcfg.window_ms;
        [reporter, d].iter().any(|&x| {
            self.topo.group_of(x).is_some_and(|g| {
                self.cut_off.contains_key(g)
                    || self
                        .healed
                        .get(g)
                        .is_some_and(|t| self.now_ms <= t + horizon)
            })
        })
    }

    /// Does `m` watch `d`: a ring edge both ends have ACKed (rule 6)?
    pub(super) fn watching(&self, m: NodeId, d: NodeId) -> bool {
        self.topo.adjacent(m, d)
            && !self.nodes[m as usize]
                .out
                .unsettled_about(self.nodes[d as usize].addr)
            && !self.nodes[d as usize]
                .out
                .unsettled_about(self.nodes[m as usize].addr)
    }

    /// A suspect none of whose other monitors can report (each is itself
    /// in trouble or not yet watching) is left to its probe.
    pub(super) fn check_lone(&mut self, d: NodeId, out: &mut Vec<Effect>) {
        let Health::Suspect { reporter, .. } = self.nodes[d as usize].health else {
            return;
        };
        let can_report = self.topo.peers_of(d).into_iter().any(|m| {
            m != reporter
                && matches!(self.nodes[m as usize].health, Health::Up)
                && self.watching(m, d)
        });
        if !can_report {
            let before = self.nodes[d as usize].health;
            let e = self
                .nodes
                .get_mut(d as usize)
                .health
                .on_lone_report(&self.fcfg);
            self.apply(d, before, e, out);
        }
    }

    pub(super) fn on_martian(&mut self, reporter: NodeId, peer: SocketAddr, out: &mut Vec<Effect>) {
        let Some(&m) = self.by_addr.get(&normalize(peer)) else {
            self.counters.unknown_peer += 1;
            return;
        };
        let before = self.nodes[m as usize].health;
        match before {
            Health::Dead(_) => {
                let e = self.nodes.get_mut(m as usize).health.on_martian();
                self.apply(m, before, e, out);
            }
            Health::Left => {
                // It left cleanly yet heartbeats `reporter`: tell it to stop.
                let to = self.nodes[reporter as usize].addr;
                self.nodes
                    .get_mut(m as usize)
                    .out
                    .push(Instruction::StopSending(vec![to]));
                self.mark_dirty(m);
            }
            _ => self.repair_martian(reporter, m, out),
        }
    }

    /// The audit for agents without HBSTATE (real nanoprobes): `a` hears
    /// heartbeats from `b` that it does not expect. Checked against the
    /// rings once both ends have ACKed every instruction about the other
    /// (during a ring change a martian is transient): if `a` should watch
    /// `b`, it lost its listener and is told EXPECTHB again; if not, `b`
    /// has a sender too many and is told STOPSENDHB. At most one repair
    /// per pair per [`MARTIAN_REPAIR_EVERY`] heartbeat intervals; counted,
    /// and shown as drift of the node told. A node that speaks HBSTATE is
    /// left to its audit.
    pub(super) fn repair_martian(&mut self, a: NodeId, b: NodeId, out: &mut Vec<Effect>) {
        let (a_addr, b_addr) = (self.nodes[a as usize].addr, self.nodes[b as usize].addr);
        let settled = !self.nodes[a as usize].out.unsettled_about(b_addr)
            && !self.nodes[b as usize].out.unsettled_about(a_addr);
        if !settled || !self.nodes[a as usize].in_service() {
            self.counters.martian_ignored += 1;
            return;
        }
        let adjacent = self.topo.adjacent(a, b);
        let told = if adjacent { a } else { b };
        if self.nodes[told as usize].speaks_hbstate {
            // Its HBSTATE audit repairs it, from its own picture.
            self.counters.martian_ignored += 1;
            return;
        }
        let now = self.now_ms;
        let every = self.cfg.heartbeat_ms.max(1) * MARTIAN_REPAIR_EVERY;
        if self
            .martian_repairs
            .get(&(a, b))
            .is_some_and(|t| now < t + every)
        {
            self.counters.martian_ignored += 1;
            return;
        }
        if self.martian_repairs.len() >= MARTIAN_PAIRS_MAX {
            self.martian_repairs.retain(|_, t| now < *t + every);
        }
        if self.martian_repairs.len() >= MARTIAN_PAIRS_MAX {
            // Every slot is recent: a storm of martians. Counted, not
            // repaired; the next quiet interval frees slots.
            self.counters.martian_ignored += 1;
            return;
        }
        self.martian_repairs.insert((a, b), now);
        self.counters.martian_repairs += 1;
        let instruction = if adjacent {
            Instruction::Half {
                send: false,
                start: true,
                peers: vec![b_addr],
            }
        } else {
            Instruction::StopSending(vec![a_addr])
        };
        let n = self.nodes.get_mut(told as usize);
        n.drift += 1;
        n.out.push(instruction);
        self.mark_dirty(told);
        out.push(Effect::Notice(Notice::Drift {
            node: told,
            repairs: 1,
        }));
        out.push(Effect::Row(Box::new(self.row(told))));
    }

    /// `d` was cut off with its group silent: the switch is cut off. Every
    /// member becomes unreachable (none is declared dead; reports about
    /// them are made across the cut); one verdict names them all.
    pub(super) fn cut_group(&mut self, d: NodeId, key: GroupKey, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        let reporter = match self.nodes[d as usize].health {
            Health::Unreachable { reporter, .. } => reporter,
            _ => d,
        };
        let members = self
            .topo
            .group(&key)
            .map(|r| r.members())
            .unwrap_or_default();
        let mut nodes = vec![d];
        let mut reported = vec![d];
        for m in members {
            if m == d {
                continue;
            }
            let before = self.nodes[m as usize].health;
            let e = self
                .nodes
                .get_mut(m as usize)
                .health
                .on_group_cut(reporter, now);
            if e.is_ok() {
                nodes.push(m);
                if matches!(
                    before,
                    Health::Suspect { .. } | Health::Disputed { late: false, .. }
                ) {
                    reported.push(m);
                }
            }
            self.apply(m, before, e, out);
        }
        self.cut_off.insert(key.clone(), nodes.clone());
        out.push(Effect::Notice(Notice::SwitchFault {
            group: key,
            nodes,
            reported,
        }));
    }

    /// Direct traffic from `id`: it lives (and answered the probe when
    /// `probe`); its group is reachable.
    pub(super) fn heard(&mut self, id: NodeId, probe: bool, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        if self.nodes[id as usize].gave_up {
            self.reach_again(id, out);
        }
        self.rearm(id);
        let n = self.nodes.get_mut(id as usize);
        n.last_heard_ms = now;
        if let Some(c) = n.contest.take() {
            // The node where it is answers: the newcomer is another host
            // with the same name.
            n.conflict = Some(c.addr);
            self.counters.name_conflicts += 1;
            out.push(Effect::Notice(Notice::Conflict {
                node: id,
                kept: n.addr,
                refused: c.addr,
            }));
            out.push(Effect::Row(Box::new(self.row(id))));
        }
        // Its switch was cut off: it is back. Every member must answer a
        // probe; reports made across the cut are weighed as such.
        if !self.cut_off.is_empty()
            && let Some(cut) = self.cut_off.remove(&self.nodes[id as usize].group_key())
        {
            let key = self.nodes[id as usize].group_key();
            let horizon = self.cfg.dead_ms + self.fcfg.window_ms;
            self.healed.retain(|_, t| now <= *t + horizon);
            self.healed.insert(key.clone(), now);
            out.push(Effect::Notice(Notice::Healed {
                group: key,
                nodes: cut.clone(),
            }));
            for c in cut {
                if c != id {
                    if self.nodes[c as usize].gave_up {
                        // Its switch answers again: so may it.
                        self.reach_again(c, out);
                    }
                    let before = self.nodes[c as usize].health;
                    let e = self
                        .nodes
                        .get_mut(c as usize)
                        .health
                        .on_group_heard(now, &self.fcfg);
                    self.apply(c, before, e, out);
                }
            }
        }
        let n = self.nodes.get_mut(id as usize);
        let before = n.health;
        if matches!(
            before,
            Health::Suspect { .. } | Health::Disputed { .. } | Health::Unreachable { .. }
        ) {
            let e = n.health.on_alive(probe);
            self.apply(id, before, e, out);
        } else if matches!(before, Health::Dead(_)) {
            // Declared dead, yet its process talks to us (its incarnation:
            // a new one sends STARTUP): the verdict was wrong.
            let e = n.health.on_martian();
            self.apply(id, before, e, out);
        }
    }

    /// Carries out what a failure transition of node `d` asks.
    ///
    /// One `match` arm per transition effect of the failure machine.
    pub(super) fn apply(
        &mut self,
        d: NodeId,
        before: Health,
        effects: Result<Vec<Fsm>, crate::decide::failure::Ignored>,
        out: &mut Vec<Effect>,
    ) {
        let Ok(effects) = effects else {
            self.counters.not_applicable += 1;
            return;
        };
        for e in effects {
            match e {
                Fsm::Probe => self.probe(d),
                Fsm::Suspected { reporter } => {
                    out.push(Effect::Notice(Notice::Suspected { node: d, reporter }));
                    if self.topo.is_rep(d) {
                        for m in self.group_sample(d) {
                            self.probe(m);
                        }
                    }
                    self.note_suspect(d, out);
                    // Its monitors may be unable to report, and it may be
                    // the only other monitor of a suspect neighbour.
                    self.check_lone(d, out);
                    for p in self.topo.peers_of(d) {
                        self.check_lone(p, out);
                    }
                }
                Fsm::FalseAlarm { reporter } => {
                    out.push(Effect::Notice(Notice::FalseAlarm { node: d, reporter }))
                }
                Fsm::PathFault { reporter } => {
                    out.push(Effect::Notice(Notice::PathFault { node: d, reporter }))
                }
                Fsm::Died(cause) => {
                    let since = match before {
                        Health::Suspect { since_ms, .. } | Health::Disputed { since_ms, .. } => {
                            since_ms
                        }
                        // Probed when its switch healed.
                        Health::Unreachable {
                            probe_until_ms: Some(u),
                            ..
                        } => u.saturating_sub(self.fcfg.probe_timeout_ms),
                        _ => self.now_ms,
                    };
                    let healing = matches!(before, Health::Unreachable { .. });
                    let early = matches!(cause, DeathCause::TwoMonitors { .. })
                        && self.now_ms < since + self.fcfg.window_ms;
                    if (self.topo.is_rep(d) || healing) && self.group_silent(d, since) {
                        // Its group is silent too: cut off, unless the
                        // group was probed too recently to have answered.
                        let e = if early {
                            if let DeathCause::TwoMonitors { second, .. } = cause {
                                self.agreed.insert(d, second);
                            }
                            self.nodes
                                .get_mut(d as usize)
                                .health
                                .on_defer(since, &self.fcfg)
                        } else {
                            self.nodes
                                .get_mut(d as usize)
                                .health
                                .on_cut_off(self.now_ms)
                        };
                        self.apply(d, before, e, out);
                    } else {
                        // Two monitors had agreed while the group could not
                        // be judged: they are the cause.
                        let cause = match (cause, self.agreed.remove(&d)) {
                            (DeathCause::Probe { reporter }, Some(second))
                                if second != reporter =>
                            {
                                DeathCause::TwoMonitors {
                                    first: reporter,
                                    second,
                                }
                            }
                            (c, _) => c,
                        };
                        self.nodes.get_mut(d as usize).health = Health::Dead(cause);
                        let peers = self.topo.peers_of(d);
                        self.remove(d, true);
                        out.push(Effect::Notice(Notice::Dead { node: d, cause }));
                        // A suspect it watched has lost a monitor.
                        for p in peers {
                            self.check_lone(p, out);
                        }
                    }
                }
                Fsm::Departed => {
                    self.remove(d, false);
                    out.push(Effect::Notice(Notice::Left(d)));
                }
                Fsm::Rejoined => {
                    self.place(d);
                    out.push(Effect::Notice(Notice::Rejoined(d)));
                }
                Fsm::Resurrected => {
                    // It still heartbeats the peers it had: stop those
                    // first, then place it again (rule 1: STOP then SEND).
                    let stale = std::mem::take(&mut self.nodes.get_mut(d as usize).stale_peers);
                    if !stale.is_empty() {
                        // Whole, not netted against the starts that follow:
                        // what it does now is unknown (rule 1).
                        self.nodes
                            .get_mut(d as usize)
                            .out
                            .push(Instruction::Heartbeat {
                                start: false,
                                peers: stale,
                            });
                        self.mark_dirty(d);
                    }
                    self.place(d);
                    out.push(Effect::Notice(Notice::Resurrected(d)));
                }
                Fsm::CutOff => {
                    let key = self.nodes[d as usize].group_key();
                    out.push(Effect::Notice(Notice::CutOff(d)));
                    if let Some(cut) = self.cut_off.get_mut(&key) {
                        if !cut.contains(&d) {
                            cut.push(d);
                        }
                    } else {
                        self.cut_group(d, key, out);
                    }
                }
                Fsm::Reconnected => {
                    let key = self.nodes[d as usize].group_key();
                    if let Some(cut) = self.cut_off.get_mut(&key) {
                        cut.retain(|c| *c != d);
                        if cut.is_empty() {
                            self.cut_off.remove(&key);
                        }
                    }
                    out.push(Effect::Notice(Notice::Reconnected(d)));
                }
            }
        }
        let n = self.nodes.get_mut(d as usize);
        if !matches!(n.health, Health::Suspect { .. } | Health::Disputed { .. }) {
            n.probe_from = None;
            if !self.agreed.is_empty() {
                self.agreed.remove(&d);
            }
        }
        if let Some(t) = n.health.deadline_ms(&self.fcfg) {
            self.deadlines.insert((t, d));
        }
        if n.health != before {
            out.push(Effect::Row(Box::new(self.row(d))));
        }
    }

    /// Takes `d` out of the rings; its queue is dropped.
    pub(super) fn remove(&mut self, d: NodeId, remember_peers: bool) {
        let peers: Vec<SocketAddr> = if remember_peers {
            self.ring_addrs(d)
        } else {
            Vec::new()
        };
        let i = self.topo.leave(d);
        self.apply_hb(&i);
        let n = self.nodes.get_mut(d as usize);
        let mut peers = peers;
        if remember_peers {
            // What it was told and never ACKed may or may not have been
            // carried out (a start it may hold, a stop it may not have
            // seen): stopped too if it comes back (a stop for a peer it
            // does not heartbeat changes nothing).
            for a in n.out.unsettled_peers() {
                if !peers.contains(&a) {
                    peers.push(a);
                }
            }
        }
        if remember_peers {
            // Kept from an earlier removal (the CMA gave up on it, then it
            // died): it may still heartbeat those too.
            for a in std::mem::take(&mut n.stale_peers) {
                if !peers.contains(&a) {
                    peers.push(a);
                }
            }
        }
        n.stale_peers = peers;
        n.out.reset();
    }

    /// The addresses of the peers node `id` heartbeats in its rings.
    pub(super) fn ring_addrs(&self, id: NodeId) -> Vec<SocketAddr> {
        self.topo
            .peers_of(id)
            .into_iter()
            .map(|p| self.nodes[p as usize].addr)
            .collect()
    }

    /// Node `id` never ACKed an instruction sent `tries` times: the CMA
    /// stops sending to it. Its queue is dropped (whatever comes next is of
    /// a new session) and held, nothing is sent until it is heard from
    /// ([`Decider::reach_again`]); it is shown `unreachable`. Its place in
    /// the rings and its failure state do not change: its monitors keep
    /// watching it, and a report about it is judged as any (its probe,
    /// held, goes unanswered).
    pub(super) fn give_up(&mut self, id: NodeId, tries: u32, out: &mut Vec<Effect>) {
        self.counters.gave_up += 1;
        if self.nodes[id as usize].unconfirmed.is_some() {
            // Never reachable and consenting: not kept ([`Decider::forget`]).
            self.forget(id, tries, out);
            return;
        }
        out.push(Effect::Notice(Notice::GaveUp { node: id, tries }));
        let ring = self.ring_addrs(id);
        let n = self.nodes.get_mut(id as usize);
        if !n.in_service() {
            n.out.reset();
            return;
        }
        // What it may heartbeat: its ring, and whatever it was told and
        // never ACKed (stopped when it is reached again).
        let mut stale = std::mem::take(&mut n.stale_peers);
        for a in ring.into_iter().chain(n.out.unsettled_peers()) {
            if !stale.contains(&a) {
                stale.push(a);
            }
        }
        n.stale_peers = stale;
        n.out.reset();
        n.gave_up = true;
        out.push(Effect::Row(Box::new(self.row(id))));
    }

    /// Node `id`, given up on, was heard from (or its switch was): talk to
    /// it again. One that never ACKed its SETCONFIG is greeted afresh; one
    /// in the rings is told, in a new session, to stop every peer it may
    /// heartbeat, then to heartbeat its ring (rule 1: STOP then SEND), and
    /// probed again if it was being judged.
    pub(super) fn reach_again(&mut self, id: NodeId, out: &mut Vec<Effect>) {
        let ring = self.ring_addrs(id);
        let n = self.nodes.get_mut(id as usize);
        n.gave_up = false;
        let mut stale = std::mem::take(&mut n.stale_peers);
        // What was queued while held was relative to a state it may not
        // have: dropped, and the whole ring said again.
        n.out.reset();
        let probing = n.probe_from.take().is_some();
        out.push(Effect::Notice(Notice::Reconnected(id)));
        if n.unconfirmed.is_some() {
            self.greet_and_place(id, stale, out);
        } else {
            for a in &ring {
                if !stale.contains(a) {
                    stale.push(*a);
                }
            }
            if !stale.is_empty() {
                n.out.push(Instruction::Heartbeat {
                    start: false,
                    peers: stale,
                });
            }
            n.out.push_hb(true, &ring);
            self.mark_dirty(id);
            out.push(Effect::Row(Box::new(self.row(id))));
        }
        if probing {
            self.probe(id);
        }
    }

    pub(super) fn probe(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(id as usize);
        if !n.in_service() {
            return;
        }
        if n.probe_from.is_none() {
            n.probe_from = Some(n.out.next_request());
        }
        if !n.out.holds(&Instruction::Probe) {
            n.out.push(Instruction::Probe);
            self.mark_dirty(id);
        }
        // Its answer is due within the probe deadline (three
        // transmissions an interval apart): no back-off now.
        self.rearm(id);
    }

    /// Up to [`GROUP_SAMPLE`] other members of `d`'s group, in ring order
    /// after it.
    pub(super) fn group_sample(&self, d: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let Some(ring) = self.topo.group_of(d).and_then(|k| self.topo.group(k)) else {
            return out;
        };
        let mut at = ring.successor(d);
        while let Some(m) = at {
            if m == d || out.len() == GROUP_SAMPLE {
                break;
            }
            out.push(m);
            at = ring.successor(m);
        }
        out
    }

    /// Has no sampled member of `d`'s group been heard since `since`?
    pub(super) fn group_silent(&self, d: NodeId, since: u64) -> bool {
        let sample = self.group_sample(d);
        !sample.is_empty()
            && sample
                .iter()
                .all(|m| self.nodes[*m as usize].last_heard_ms < since)
    }

    /// Many suspects behind one switch within one window name it.
    pub(super) fn note_suspect(&mut self, d: NodeId, out: &mut Vec<Effect>) {
        let Some(key) = self.topo.group_of(d) else {
            return;
        };
        let now = self.now_ms;
        let window = self.fcfg.window_ms;
        let list = match self.recent_suspects.get_mut(key) {
            Some(l) => l,
            None => self.recent_suspects.entry(key.clone()).or_default(),
        };
        list.retain(|(t, n)| now.saturating_sub(*t) <= window && *n != d);
        list.push((now, d));
        if list.len() == SWITCH_FAULT_SUSPECTS {
            let nodes: Vec<NodeId> = list.iter().map(|x| x.1).collect();
            out.push(Effect::Notice(Notice::SwitchFault {
                group: key.clone(),
                reported: nodes.clone(),
                nodes,
            }));
        }
        // Forget groups whose suspicions all expired, now and then (the
        // map holds at most the groups with a suspect in one window).
        if self.recent_suspects.len() > 256 {
            self.recent_suspects
                .retain(|_, l| l.iter().any(|(t, _)| now.saturating_sub(*t) <= window));
        }
    }
}
