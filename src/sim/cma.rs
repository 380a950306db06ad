//! The CMA side: datagrams reaching the decider, its effects leaving as
//! datagrams, and what its notices mean for the run's figures.

use super::record::feed_live;
use super::*;

impl Sim {
    pub(super) fn at_cma(&mut self, from: u32, inc: u64, pkt: Pkt) {
        let addr = self.agents[from as usize].addr;
        match pkt {
            Pkt::Startup => {
                let msg = AgentMsg::Startup {
                    hostname: format!("h{from}"),
                    listen: addr,
                    wallclock_us: inc,
                    netconfig: format!(
                        "{{\"data\":{{\"eth0\":{{\"carrier\":true,\"ipaddrs\":{{\"{}/24\":{{}}}}}}}}}}",
                        addr.ip()
                    ),
                    hbstate: self.cfg.state_interval_ms > 0,
                };
                self.decide(Some(addr), None, Some(msg));
            }
            Pkt::Seq { seq, msg } => {
                // The io thread's receiving half: in order, duplicates
                // re-ACKed, a new incarnation starts afresh.
                let st = &mut self.cma_in[from as usize];
                if st.0 != inc {
                    *st = (inc, 0);
                }
                if seq <= st.1 {
                    let last = st.1;
                    self.ack_agent(from, inc, last);
                    return;
                }
                if seq != st.1 + 1 {
                    return;
                }
                st.1 = seq;
                let reqid = ReqId {
                    session: inc as u32,
                    request: seq,
                    queue: 0,
                };
                self.decide(Some(addr), Some(reqid), Some(msg));
                // Durable at once in the model: ACK.
                self.ack_agent(from, inc, seq);
            }
            Pkt::Ack(r) => {
                self.decide(Some(addr), Some(r), Some(AgentMsg::Ack));
                self.check_settled_agent(from);
            }
        }
    }

    pub(super) fn cma_send(&mut self, to: u32, reqid: ReqId, instr: Instruction) {
        self.report.cma_sent += 1;
        self.count_fault_phase();
        if !self.cma_ok(to) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let inc = self.agents[to as usize].incarnation;
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let t = self.now + self.delay();
            self.at(
                t,
                Ev::AtAgent {
                    to,
                    inc,
                    reqid,
                    instr: instr.clone(),
                },
            );
        }
    }

    /// One decider input; then its effects.
    pub(super) fn decide(
        &mut self,
        from: Option<SocketAddr>,
        reqid: Option<ReqId>,
        msg: Option<AgentMsg>,
    ) {
        self.lsn += 1;
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        let version = self.decider.topology().version();
        let t0 = Instant::now();
        feed_live(
            &mut self.decider,
            self.lsn,
            self.now,
            from,
            reqid,
            msg.as_ref(),
            &mut effects,
        );
        self.report.decider_ns += t0.elapsed().as_nanos();
        self.report.decisions += 1;
        if self.cfg.record_inputs {
            let rec = RecordedInput::of(self.lsn, self.now, from, reqid, msg.as_ref());
            self.report.inputs.push(rec);
        }
        for e in &effects {
            self.digest = fnv(self.digest, format!("{e:?}").as_bytes());
            match e {
                Effect::Send {
                    node,
                    reqid,
                    instruction,
                    ..
                } => {
                    // Retransmissions and give-up are the decider's.
                    let a = self.node_agent[*node as usize];
                    let key = (reqid.session, reqid.request);
                    if key > self.instr_newest[a as usize] {
                        self.instr_newest[a as usize] = key;
                        self.instr_sent_ms[a as usize] = self.now;
                    } else {
                        self.report.cma_retransmits += 1;
                    }
                    self.cma_send(a, *reqid, instruction.clone());
                }
                Effect::Notice(n) => self.notice(n),
                Effect::Row(_)
                | Effect::Ring { .. }
                | Effect::Discovery { .. }
                | Effect::Stats { .. }
                | Effect::Forget { .. } => {}
            }
        }
        self.effects = effects;
        // The decider asserts its cheap invariants on every record; the
        // whole check (O(nodes)) runs after every step of a small fleet
        // and after every ring change of a large one.
        if self.cfg.check_invariants
            && (self.cfg.nodes <= FULL_CHECK_NODES_MAX
                || self.decider.topology().version() != version)
            && let Err(e) = self.decider.check()
        {
            self.fail(format!("invariant: {e}"));
        }
        if let Some(d) = self.decider.next_deadline_ms()
            && self.tick_at.is_none_or(|t| d < t)
        {
            let d = d.max(self.now);
            self.tick_at = Some(d);
            self.at(d, Ev::Tick);
        }
    }

    pub(super) fn notice(&mut self, n: &Notice) {
        match n {
            Notice::GaveUp { .. } | Notice::Forgotten { .. } => self.report.gave_up += 1,
            Notice::Joined(id) => {
                let addr = self.decider.node(*id).expect("joined node").addr;
                let a = self.by_addr[&addr];
                // A forgotten registration's slot is reused.
                match self.node_agent.get_mut(*id as usize) {
                    Some(slot) => *slot = a,
                    None => {
                        debug_assert_eq!(self.node_agent.len(), *id as usize);
                        self.node_agent.push(a);
                    }
                }
            }
            Notice::Dead { node, .. } => {
                let a = self.node_agent[*node as usize];
                let ag = &self.agents[a as usize];
                match self.fate[a as usize] {
                    Some(Fate::Paused(t)) if ag.paused => {
                        self.report.paused_dead += 1;
                        let _ = t;
                    }
                    Some(Fate::Crashed(t)) if !ag.alive => {
                        // Were its monitors at the crash alive to report it?
                        let lone = self.crash_monitors[a as usize]
                            .iter()
                            .any(|m| !self.agents[*m as usize].alive);
                        if lone {
                            self.report.detection_lone_ms.push(self.now - t);
                        } else {
                            self.report.detection_ms.push(self.now - t);
                        }
                        self.fate[a as usize] = None;
                    }
                    _ if !ag.alive => {}
                    _ => {
                        // Alive: whatever cut it off, a live node is never
                        // dead.
                        self.report.false_dead += 1;
                        let how = if self.cma_ok(a) {
                            "reachable"
                        } else {
                            "cut off"
                        };
                        self.fail(format!("live node h{a} ({how}) declared dead"));
                    }
                }
            }
            Notice::SwitchFault { group, .. } => {
                for (i, (sw, t0, t1)) in self.partitions.iter().enumerate() {
                    if *group == GroupKey::Switch(format!("sw-{sw}"))
                        && self.now >= *t0
                        && self.now <= *t1 + 10_000
                    {
                        self.named_partitions[i] = true;
                    }
                }
            }
            Notice::PathFault { .. } => self.report.path_fault_verdicts += 1,
            _ => {}
        }
    }
}
