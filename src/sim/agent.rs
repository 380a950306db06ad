//! The agent model: a nanoprobe's heartbeats, reports and receiving side
//! (sessions, in-order delivery, ACKs), its switch's LLDP, and what a CMA
//! instruction does to it.

use super::*;

impl Sim {
    pub(super) fn start(&mut self, a: u32) {
        let inc = 1_700_000_000_000_000 + self.now * 1000 + u64::from(a);
        let ag = &mut self.agents[a as usize];
        if ag.alive {
            return;
        }
        *ag = Agent {
            alive: true,
            incarnation: inc,
            out: agent_outbound(inc as u32),
            ..Agent::new(ag.addr, ag.switch)
        };
        self.send_to_cma(a, Pkt::Startup);
        self.at(self.now + STARTUP_RESEND_MS, Ev::StartupResend(a, inc));
    }

    /// SWDISCOVER with the switch's LLDP frame (a nanoprobe reports its
    /// switch once the CMA asked it to listen on its NIC).
    pub(super) fn discover_switch(&mut self, a: u32) {
        let sw = self.agents[a as usize].switch;
        let mac = [2, 0, 0, (sw >> 8) as u8, sw as u8, (a % 251) as u8];
        let frame = lldp_frame(mac, &format!("sw-{sw}"), &format!("p{a}"), "edge");
        self.agent_report(a, AgentMsg::SwDiscover(frame));
    }

    pub(super) fn stop_agent(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        if !ag.alive {
            return;
        }
        ag.alive = false;
        ag.out = agent_outbound(0);
        let sends: Vec<u32> = ag.send.iter().map(|x| x.0).collect();
        let expects: Vec<u32> = ag.expect.iter().map(|x| x.0).collect();
        for p in expects {
            self.watchers[p as usize].retain(|w| *w != a);
        }
        let watchers = self.watchers[a as usize].clone();
        for w in watchers {
            self.refresh(w, a);
        }
        let _ = sends;
    }

    /// Re-evaluates everything about a switch's agents after a partition
    /// change.
    pub(super) fn refresh_switch(&mut self, sw: u32) {
        let members: Vec<u32> = (0..self.agents.len() as u32)
            .filter(|i| self.agents[*i as usize].switch == sw)
            .collect();
        for x in members {
            let watchers = self.watchers[x as usize].clone();
            for w in watchers {
                self.refresh(w, x);
            }
            let expects: Vec<u32> = self.agents[x as usize].expect.iter().map(|e| e.0).collect();
            for b in expects {
                self.refresh(x, b);
            }
        }
    }

    pub(super) fn delivering(&self, b: u32, a: u32) -> bool {
        let bb = &self.agents[b as usize];
        bb.alive && !bb.paused && count(&bb.send, a) > 0 && self.path_ok(b, a)
    }

    pub(super) fn is_martian(&self, a: u32, b: u32) -> bool {
        self.agents[a as usize].alive
            && self.delivering(b, a)
            && count(&self.agents[a as usize].expect, b) == 0
    }

    /// Re-evaluates agent `a`'s view of peer `b`'s heartbeats.
    pub(super) fn refresh(&mut self, a: u32, b: u32) {
        if !self.agents[a as usize].alive {
            return;
        }
        let d = self.delivering(b, a);
        let now = self.now;
        let hb = self.cfg.heartbeat_ms;
        let expects = count(&self.agents[a as usize].expect, b) > 0;
        if !expects {
            if d {
                let t = now + self.rng.below(hb) + 1;
                self.at(t, Ev::Martian { a, peer: b });
            }
            return;
        }
        let ag = &mut self.agents[a as usize];
        let i = match ag.watch.iter().position(|w| w.peer == b) {
            Some(i) => i,
            None => {
                ag.watch.push(Watch {
                    peer: b,
                    silent_since: None,
                    token: 0,
                    reported: false,
                });
                ag.watch.len() - 1
            }
        };
        let w = &mut ag.watch[i];
        if d {
            if w.silent_since.take().is_some() && w.reported {
                w.reported = false;
                let p = self.agents[b as usize].addr;
                self.agent_report(a, AgentMsg::HbBackAlive(p));
            }
        } else if w.silent_since.is_none() {
            w.silent_since = Some(now);
            w.token += 1;
            let token = w.token;
            // The last heartbeat came up to one interval before; the agent
            // notices on its own tick, up to one interval after.
            let t = now + self.cfg.dead_ms - self.rng.below(hb) + self.rng.below(hb);
            self.at(t, Ev::EdgeCheck { a, peer: b, token });
        }
    }

    pub(super) fn send_to_cma(&mut self, a: u32, pkt: Pkt) {
        self.report.agents_sent += 1;
        if !self.cma_ok(a) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let inc = self.agents[a as usize].incarnation;
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let t = self.now + self.delay();
            self.at(
                t,
                Ev::AtCma {
                    from: a,
                    inc,
                    pkt: pkt.clone(),
                },
            );
        }
    }

    pub(super) fn agent_report(&mut self, a: u32, msg: AgentMsg) {
        self.agents[a as usize].out.push(msg);
        self.agent_pump(a);
    }

    /// Whatever the agent's sending half has to send now (a report never
    /// sent while the window allows, the oldest again when its timer ran
    /// out) goes out, and its timer's next deadline is scheduled. A frozen
    /// agent sends nothing; it is pumped again when it wakes.
    pub(super) fn agent_pump(&mut self, a: u32) {
        let now = self.now;
        let ag = &mut self.agents[a as usize];
        if ag.paused {
            return;
        }
        let mut again = 0;
        let sends: Vec<Pkt> = ag
            .out
            .poll_transmit(now)
            .into_iter()
            .map(|t| {
                again += u64::from(t.retransmit);
                Pkt::Seq {
                    seq: t.reqid.request,
                    msg: t.item.clone(),
                }
            })
            .collect();
        let next = ag.out.next_timeout_ms();
        if let Some(t) = next
            && ag.retx_at != t
        {
            ag.retx_at = t;
            self.at(t, Ev::AgentRetx(a));
        }
        self.report.agent_retransmits += again;
        for pkt in sends {
            self.send_to_cma(a, pkt);
        }
    }

    pub(super) fn ack_agent(&mut self, to: u32, inc: u64, seq: u64) {
        self.report.cma_sent += 1;
        self.count_fault_phase();
        if !self.cma_ok(to) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let t = self.now + self.delay();
        self.at(t, Ev::AckAtAgent { to, inc, seq });
    }

    pub(super) fn at_agent(&mut self, to: u32, inc: u64, reqid: ReqId, instr: Instruction) {
        let ag = &mut self.agents[to as usize];
        if !ag.alive || ag.incarnation != inc || ag.paused {
            return;
        }
        // A nanoprobe's receiving side: the first session it sees is
        // adopted at any request id; an older one is dropped; a newer one
        // starts afresh at request 1 (fsqueue.c).
        let request = reqid.request;
        if ag.cma_session == 0 {
            ag.cma_session = reqid.session;
        } else if reqid.session < ag.cma_session {
            return;
        } else if reqid.session > ag.cma_session {
            ag.cma_session = reqid.session;
            ag.cma_in = Some(0);
        }
        match ag.cma_in {
            Some(last) if request <= last => {
                // A duplicate: ACK again, do not obey again.
                self.agent_ack(to, last);
                return;
            }
            Some(last) if request != last + 1 => return,
            _ => {}
        }
        ag.cma_in = Some(request);
        let was_ready = ag.configured && ag.acked_startup;
        let ring = matches!(
            instr,
            Instruction::Heartbeat { .. } | Instruction::Half { .. } | Instruction::StopSending(_)
        );
        let lost = ring && self.cfg.instr_loss > 0.0 && self.rng.chance(self.cfg.instr_loss);
        if lost {
            self.report.instructions_lost += 1;
        }
        match &instr {
            // ACKed below, never carried out.
            _ if lost => {}
            Instruction::SetConfig(_) => ag.configured = true,
            Instruction::AckStartup => ag.acked_startup = true,
            Instruction::Heartbeat { start, peers } => {
                self.change_heartbeats(to, peers, (true, true), *start);
            }
            Instruction::StopSending(peers) => {
                self.change_heartbeats(to, peers, (true, false), false);
            }
            Instruction::Half { send, start, peers } => {
                self.change_heartbeats(to, peers, (*send, !*send), *start);
            }
            // A nanoprobe hears its switch's next LLDP frame (every few
            // seconds) once it listens on the NIC.
            Instruction::SwitchDiscovery(nics) if nics.iter().any(|n| n == "eth0") => {
                let inc = ag.incarnation;
                let t = self.now + 1 + self.rng.below(LLDP_PERIOD_MS);
                self.at(t, Ev::Lldp(to, inc));
            }
            Instruction::SwitchDiscovery(_)
            | Instruction::Probe
            | Instruction::StateRequest
            | Instruction::ConnShut => {}
        }
        let ag = &self.agents[to as usize];
        let ready = ag.configured && ag.acked_startup;
        self.agent_ack(to, request);
        if self.cfg.state_interval_ms > 0 && ready {
            if !was_ready {
                // Its first HBSTATE at once, then every interval.
                self.agent_state(to);
                let t = self.now + self.cfg.state_interval_ms;
                self.at(t, Ev::StateTimer(to, inc));
            } else if ring || matches!(instr, Instruction::StateRequest) {
                self.agent_state(to);
            }
        }
    }

    /// Agent `to` starts (or stops) heartbeating and/or watching `peers`
    /// as a nanoprobe does (senders stack, listeners do not): `(send,
    /// expect)` say which.
    pub(super) fn change_heartbeats(
        &mut self,
        to: u32,
        peers: &[SocketAddr],
        (send, expect): (bool, bool),
        start: bool,
    ) {
        let d = if start { 1 } else { -1 };
        let mut touched = Vec::new();
        for p in peers {
            let Some(&b) = self.by_addr.get(p) else {
                continue;
            };
            let ag = &mut self.agents[to as usize];
            if send {
                bump(&mut ag.send, b, d);
            }
            if expect {
                let before = count(&ag.expect, b);
                if start && before == 0 {
                    ag.expect.push((b, 1));
                } else if !start {
                    ag.expect.retain(|x| x.0 != b);
                }
                let after = count(&ag.expect, b);
                if before == 0 && after > 0 {
                    self.watchers[b as usize].push(to);
                } else if before > 0 && after == 0 {
                    self.watchers[b as usize].retain(|w| *w != to);
                    self.agents[to as usize].watch.retain(|w| w.peer != b);
                }
            }
            touched.push(b);
        }
        for b in touched {
            if expect {
                self.refresh(to, b);
            }
            self.refresh(b, to);
        }
    }

    /// Queues an HBSTATE with the agent's state as it is now.
    pub(super) fn agent_state(&mut self, a: u32) {
        let ag = &self.agents[a as usize];
        let mut expect: Vec<(SocketAddr, bool)> = ag
            .expect
            .iter()
            .map(|&(b, _)| {
                let dead = ag.watch.iter().any(|w| w.peer == b && w.reported);
                (self.agents[b as usize].addr, dead)
            })
            .collect();
        expect.sort_unstable();
        let mut send: Vec<SocketAddr> = ag
            .send
            .iter()
            .map(|&(b, _)| self.agents[b as usize].addr)
            .collect();
        send.sort_unstable();
        let msg = AgentMsg::HbState {
            wallclock_us: ag.incarnation,
            applied: ag.cma_in.map(|r| (ag.cma_session, r)),
            expect,
            send,
        };
        self.agent_report(a, msg);
    }

    /// The agent forgets whom it heartbeats and watches (no STARTUP).
    pub(super) fn wipe(&mut self, a: u32) {
        if !self.agents[a as usize].alive {
            return;
        }
        self.report.wipes += 1;
        let ag = &mut self.agents[a as usize];
        let sends: Vec<u32> = ag.send.drain(..).map(|x| x.0).collect();
        let expects: Vec<u32> = ag.expect.drain(..).map(|x| x.0).collect();
        ag.watch.clear();
        for b in expects {
            self.watchers[b as usize].retain(|w| *w != a);
            self.refresh(a, b);
        }
        for b in sends {
            self.refresh(b, a);
        }
    }

    pub(super) fn agent_ack(&mut self, a: u32, request: u64) {
        let session = self.agents[a as usize].cma_session;
        self.send_to_cma(
            a,
            Pkt::Ack(ReqId {
                session,
                request,
                queue: 0,
            }),
        );
    }
}
