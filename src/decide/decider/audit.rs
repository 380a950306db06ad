//! The audit: HBSTATE compared with the rings (repairs exactly the
//! difference), refusals (ACTIONNAK) with backoff, and RESUME.

use super::*;

impl Decider {
    /// An agent's HBSTATE: its watched peers' states feed the failure state
    /// machine like HBDEAD, and when it had applied every instruction sent
    /// to it, what it heartbeats is compared with its rings and only the
    /// difference is repaired.
    ///
    /// Kept whole: the report half and the repair half read the same
    /// per-peer table once.
    pub(super) fn on_hbstate(&mut self, id: NodeId, h: &HbState<'_>, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        let n = self.nodes.get_mut(id as usize);
        if h.wallclock_us != n.incarnation || !n.in_service() {
            self.counters.audits_deferred += 1;
            return;
        }
        n.speaks_hbstate = true;
        let mut summary = StateSummary {
            time_ms: now,
            sending: h.send.len() as u32,
            expecting: 0,
            late: 0,
            dead: 0,
        };
        let mut dead = Vec::new();
        for p in h.expect.iter() {
            summary.expecting += 1;
            match p.status {
                PeerStatus::Late => summary.late += 1,
                PeerStatus::Dead => {
                    summary.dead += 1;
                    dead.push(p.peer);
                }
                PeerStatus::Up => {}
            }
        }
        n.last_state = Some(summary);
        // A dead peer it still watches and we think up: as an HBDEAD.
        for p in dead {
            let up = self
                .by_addr
                .get(&normalize(p))
                .is_some_and(|&d| self.nodes[d as usize].health == Health::Up);
            if up {
                self.on_hbdead(id, p, out);
            }
        }
        let n = &self.nodes[id as usize];
        let sent_through = n.out.next_request() - 1;
        let applied_all = n.out.settled()
            && h.applied.is_some_and(|r| {
                r.session == n.out.session(self.cfg.session)
                    && r.request == sent_through
                    && r.queue == 0
            });
        if !applied_all {
            // An older picture than the instructions we sent: the HBSTATE
            // that follows them will be compared.
            self.counters.audits_deferred += 1;
            out.push(Effect::Row(Box::new(self.row(id))));
            return;
        }
        self.counters.audits += 1;
        let want: BTreeSet<SocketAddr> = if self.topo.group_of(id).is_some() {
            self.ring_addrs(id).into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let send: BTreeSet<SocketAddr> = h.send.iter().map(normalize).collect();
        let expect: BTreeSet<SocketAddr> = h.expect.iter().map(|p| normalize(p.peer)).collect();
        let mut both_start = Vec::new();
        let mut both_stop = Vec::new();
        let mut half = Vec::new();
        for &p in &want {
            match (send.contains(&p), expect.contains(&p)) {
                (false, false) => both_start.push(p),
                (true, false) => half.push((false, true, p)),
                (false, true) => half.push((true, true, p)),
                (true, true) => {}
            }
        }
        for &p in send.union(&expect).filter(|p| !want.contains(p)) {
            match (send.contains(&p), expect.contains(&p)) {
                (true, true) => both_stop.push(p),
                (true, false) => half.push((true, false, p)),
                _ => half.push((false, false, p)),
            }
        }
        let repairs = (both_start.len() + both_stop.len() + half.len()) as u32;
        if repairs == 0 {
            self.nodes.get_mut(id as usize).naks = 0;
            out.push(Effect::Row(Box::new(self.row(id))));
            return;
        }
        self.counters.drift += 1;
        let n = self.nodes.get_mut(id as usize);
        n.drift += 1;
        if !both_stop.is_empty() {
            n.out.push_hb(false, &both_stop);
        }
        if !both_start.is_empty() {
            n.out.push_hb(true, &both_start);
        }
        for (send, start, p) in half {
            n.out.push(Instruction::Half {
                send,
                start,
                peers: vec![p],
            });
        }
        self.mark_dirty(id);
        out.push(Effect::Notice(Notice::Drift { node: id, repairs }));
        out.push(Effect::Row(Box::new(self.row(id))));
    }

    /// A refused instruction: retried with backoff (an HBSTATEREQ whose
    /// audit re-sends what did not take effect), then, after
    /// [`NAK_RETRIES`] refusals in a row, the node is degraded: out of the
    /// rings, so that its neighbours are watched by nodes able to.
    pub(super) fn on_nak(&mut self, id: NodeId, code: u64, reason: &str, out: &mut Vec<Effect>) {
        self.counters.naks += 1;
        let now = self.now_ms;
        let retransmit = self.cfg.retransmit_ms.max(1);
        let n = self.nodes.get_mut(id as usize);
        n.refused = Some((code, reason.to_string()));
        n.naks += 1;
        out.push(Effect::Notice(Notice::Refused {
            node: id,
            code,
            reason: reason.to_string(),
        }));
        if !n.in_service() || n.degraded.is_some() {
            out.push(Effect::Row(Box::new(self.row(id))));
            return;
        }
        if n.naks >= NAK_RETRIES {
            let why = format!("refused {} instructions in a row: {reason}", n.naks);
            n.degraded = Some(why.clone());
            n.nak_retry_at = None;
            if self.topo.group_of(id).is_some() {
                let i = self.topo.leave(id);
                self.apply_hb(&i);
            }
            out.push(Effect::Notice(Notice::Degraded {
                node: id,
                reason: why,
            }));
        } else if n.speaks_hbstate {
            let t = now + (retransmit << n.naks.min(16));
            n.nak_retry_at = Some(t);
            self.deadlines.insert((t, id));
        }
        out.push(Effect::Row(Box::new(self.row(id))));
    }

    /// The CMA restarted: every node in service that speaks HBSTATE is
    /// asked for it; audits repair what drifted while we were away.
    pub(super) fn on_resume(&mut self) {
        for i in 0..self.nodes.len() {
            let n = self.nodes.get_mut(i);
            if n.speaks_hbstate && n.in_service() && !n.out.holds(&Instruction::StateRequest) {
                n.out.push(Instruction::StateRequest);
                self.mark_dirty(i as NodeId);
            }
        }
    }
}
