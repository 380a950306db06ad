//! The agent's receiving side: datagrams from the CMA and from peers,
//! the instructions it obeys (as a real nanoprobe does, rule 8), and the
//! heartbeats and ACKs it takes in.

use super::*;

impl Agent {
    /// Handles one datagram from `from` at `now_ms`.
    pub fn on_datagram(&mut self, now_ms: u64, from: SocketAddr, datagram: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        let from = normalize(from);
        for fs in classify_all(datagram) {
            match fs {
                Ok(c) => self.on_frameset(now_ms, from, &c),
                Err(_) => self.counters.dropped += 1,
            }
        }
        self.flush(now_ms);
    }

    pub(super) fn on_frameset(&mut self, now_ms: u64, from: SocketAddr, c: &Classified<'_>) {
        let Ok(message) = c.message() else {
            // A sequenced FrameSet we cannot read is still ACKed (WIRE.md:
            // an unACKed one would block the sender's queue).
            if let Some(r) = c.reqid.filter(|_| c.is_sequenced()) {
                self.counters.ignored += 1;
                if let Some(ack) = self.sequenced(from, r) {
                    self.ack(from, ack);
                }
            } else {
                self.counters.dropped += 1;
            }
            return;
        };
        match message {
            Message::Heartbeat => return self.on_heartbeat(now_ms, from),
            Message::Ping => return self.send_message(from, &Message::Pong, None),
            Message::Ack => {
                if let Some(r) = c.reqid {
                    self.on_ack(from, r);
                }
                return;
            }
            _ => {}
        }
        if c.is_sequenced() {
            let r = c.reqid.expect("sequenced FrameSets carry a REQID");
            if !obeys(&message) {
                // As a real nanoprobe: an unknown sequenced type is never
                // ACKed (so the sender's window stays blocked on it).
                self.counters.ignored += 1;
                return;
            }
            let Some(ack) = self.sequenced(from, r) else {
                return;
            };
            self.obey(now_ms, from, Some(r), &message);
            self.ack(from, ack);
        } else if c.fstype >= 16 {
            // A type >= 16 without REQID: delivered at once, never ACKed.
            self.obey(now_ms, from, None, &message);
        } else {
            self.counters.ignored += 1;
        }
    }

    /// Reliable delivery of a sequenced FrameSet: `Some(ack)` when it is
    /// new and to be obeyed, `None` when it is a duplicate (re-ACKed here)
    /// or dropped.
    pub(super) fn sequenced(&mut self, from: SocketAddr, r: ReqId) -> Option<ReqId> {
        let key = ConnKey::new(from, r.queue);
        let i = match self.inbound.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.inbound.push((key, Inbound::default()));
                self.inbound.len() - 1
            }
        };
        let conn = &mut self.inbound[i].1;
        match conn.on_frameset(r) {
            Verdict::Deliver => {
                self.applied = Some(r);
                conn.on_durable(r).or(Some(r))
            }
            Verdict::Duplicate { reack } => {
                self.counters.duplicates += 1;
                if let Some(a) = reack {
                    self.ack(from, a);
                }
                None
            }
            Verdict::StaleSession | Verdict::UnknownSession | Verdict::Gap { .. } => {
                self.counters.dropped += 1;
                None
            }
        }
    }

    pub(super) fn obey(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        reqid: Option<ReqId>,
        m: &Message<'_>,
    ) {
        let obeyed = match *m {
            Message::SetConfig { json } => {
                self.configured = true;
                self.apply_config(json);
                self.maybe_joined();
                true
            }
            Message::AckStartup => {
                self.acked_startup = true;
                self.maybe_joined();
                true
            }
            Message::Heartbeats {
                kind,
                params,
                peers,
            } => {
                self.apply_params(&params);
                let (send, expect) = match kind {
                    FrameSetType::SendHb => (true, false),
                    FrameSetType::ExpectHb => (false, true),
                    _ => (true, true),
                };
                if let Err((code, why)) = self.start(now_ms, peers, send, expect) {
                    self.refuse(reqid, code, why);
                }
                self.state_changed = true;
                true
            }
            Message::StopHeartbeats { kind, peers } => {
                let (send, expect) = match kind {
                    FrameSetType::StopSendHb => (true, false),
                    FrameSetType::StopExpectHb => (false, true),
                    _ => (true, true),
                };
                self.stop(peers, send, expect);
                self.state_changed = true;
                true
            }
            Message::ConnShut => {
                // The CMA closes the connection: forget its positions. In
                // shutdown this is the answer we wait for.
                self.inbound.retain(|(k, _)| k.peer != from);
                if self.phase == Phase::Leaving {
                    self.phase = Phase::Done;
                }
                true
            }
            Message::HbStateReq => {
                self.state_changed = true;
                true
            }
            Message::Discover { stop: false, list } => {
                // `#SWITCH` on the NIC our (simulated) switch hangs off:
                // its LLDP frame, as a nanoprobe reports it once it
                // listens there. Other discoveries are not carried out.
                let asked = list.iter().any(|d| {
                    serde_json::from_str::<serde_json::Value>(d.json).is_ok_and(|v| {
                        v["type"] == "#SWITCH"
                            && self
                                .cfg
                                .switch
                                .as_ref()
                                .is_some_and(|sw| v["device"] == sw.interface.as_str())
                    })
                });
                if asked
                    && !self.switch_sent
                    && let Some(sw) = &self.cfg.switch
                {
                    self.switch_sent = true;
                    let frame = lldp_frame(sw.mac, &sw.chassis, &sw.port, &self.cfg.hostname);
                    self.report(Report::SwDiscover(frame));
                }
                asked
            }
            // INCRDEBUG/DECRDEBUG, other DODISCOVERs, DORSCOP...: acknowledged,
            // not carried out by this agent.
            _ => false,
        };
        if obeyed {
            self.counters.instructions += 1;
        } else {
            self.counters.ignored += 1;
        }
    }

    pub(super) fn apply_config(&mut self, json: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        let addr = |k: &str| {
            v.get(k)
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        if let Some(a) = addr("cmafail").or_else(|| addr("cmaaddr")) {
            self.fail = normalize(a);
        }
        if let Some(a) = addr("cmadisc").or_else(|| addr("cmaaddr")) {
            self.disc = normalize(a);
        }
        self.read_timers(&v);
        let secs = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|s| *s >= 0.0);
        if let Some(s) = secs("state_interval") {
            self.state_every_ms = (s * 1000.0) as u64;
        }
        if let Some(s) = secs("stats_interval") {
            self.stats_every_ms = (s * 1000.0) as u64;
        }
    }

    /// `repeat`/`warn`/`timeout` (seconds), as SETCONFIG or RSCJSON carry them.
    pub(super) fn read_timers(&mut self, v: &serde_json::Value) {
        let secs = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|s| *s > 0.0);
        if let Some(s) = secs("repeat") {
            self.repeat_ms = (s * 1000.0) as u64;
        }
        if let Some(s) = secs("warn") {
            self.warn_ms = (s * 1000.0) as u64;
        }
        if let Some(s) = secs("timeout") {
            self.timeout_ms = (s * 1000.0) as u64;
        }
        self.repeat_ms = self.repeat_ms.max(1);
    }

    pub(super) fn apply_params(&mut self, p: &HbParams<'_>) {
        if let Some(j) = p.rscjson
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(j)
        {
            self.read_timers(&v);
        }
        if let Some(s) = p.interval_s.filter(|s| *s > 0) {
            self.repeat_ms = s * 1000;
        }
        if let Some(s) = p.warntime_s.filter(|s| *s > 0) {
            self.warn_ms = s * 1000;
        }
        if let Some(s) = p.deadtime_s.filter(|s| *s > 0) {
            self.timeout_ms = s * 1000;
        }
    }

    pub(super) fn maybe_joined(&mut self) {
        if self.phase == Phase::Joining && self.configured && self.acked_startup {
            self.phase = Phase::Joined;
            if let Some(arp) = self.cfg.arp.clone() {
                self.report(Report::Discovery(arp));
            }
            // First HBSTATE at once (it tells the CMA we speak HBSTATE and
            // what state we start from), first STATS one interval on.
            self.state_changed = true;
            self.next_stats_ms = None;
            self.stats_due_from_join = true;
        }
    }

    /// Refuses (part of) an instruction with ACTIONNAK.
    pub(super) fn refuse(&mut self, reqid: Option<ReqId>, code: u64, why: String) {
        self.counters.naks += 1;
        if let Some(r) = reqid {
            self.report(Report::ActionNak(r, code, why));
        }
    }

    /// Obeys a start for each usable peer; the first refusal (a peer it
    /// cannot use, or one beyond [`MAX_PEERS`]) is returned for ACTIONNAK.
    pub(super) fn start(
        &mut self,
        now_ms: u64,
        peers: Peers<'_>,
        send: bool,
        expect: bool,
    ) -> Result<(), (u64, String)> {
        let mut refused = None;
        for p in peers.iter().map(normalize) {
            if p.ip().is_unspecified() || p.ip().is_multicast() || p.port() == 0 {
                refused.get_or_insert((nak::BAD_ADDRESS, format!("cannot heartbeat {p}")));
                continue;
            }
            if (send && !self.send.contains_key(&p) && self.send.len() >= MAX_PEERS)
                || (expect && !self.expect.contains_key(&p) && self.expect.len() >= MAX_PEERS)
            {
                refused.get_or_insert((
                    nak::LIMIT,
                    format!("more than {MAX_PEERS} peers: {p} refused"),
                ));
                continue;
            }
            if send {
                *self.send.entry(p).or_default() += 1;
                if self.next_hb_ms.is_none() {
                    self.next_hb_ms = Some(now_ms);
                }
            }
            if expect {
                // A new listener replaces the old one (a set, not a count).
                self.expect.insert(
                    p,
                    Watch {
                        last_ms: now_ms,
                        dead: false,
                        warn_ms: self.warn_ms,
                        timeout_ms: self.timeout_ms,
                    },
                );
            }
        }
        match refused {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    pub(super) fn stop(&mut self, peers: Peers<'_>, send: bool, expect: bool) {
        for p in peers.iter().map(normalize) {
            if send && let Some(c) = self.send.get_mut(&p) {
                *c -= 1;
                if *c == 0 {
                    self.send.remove(&p);
                }
            }
            if expect {
                self.expect.remove(&p);
            }
        }
        if self.send.is_empty() {
            self.next_hb_ms = None;
        }
    }

    pub(super) fn on_heartbeat(&mut self, now_ms: u64, from: SocketAddr) {
        if let Some(w) = self.expect.get_mut(&from) {
            self.counters.heartbeats_heard += 1;
            let gap = now_ms.saturating_sub(w.last_ms);
            let was_dead = w.dead;
            let late = gap > w.warn_ms;
            w.last_ms = now_ms;
            w.dead = false;
            if was_dead {
                self.report(Report::HbBackAlive(from, gap * 1000));
            } else if late {
                self.report(Report::HbLate(from, gap * 1000));
            }
            return;
        }
        if from == self.fail || from == self.disc || from == normalize(self.cfg.cma) {
            return;
        }
        let due = self
            .martians
            .get(&from)
            .is_none_or(|&t| now_ms >= t + MARTIAN_EVERY_MS);
        if due && self.phase == Phase::Joined {
            self.martians.insert(from, now_ms);
            self.report(Report::HbMartian(from));
        }
    }

    pub(super) fn on_ack(&mut self, from: SocketAddr, r: ReqId) {
        if let Some((_, o)) = self.outbound.iter_mut().find(|(a, _)| *a == from) {
            o.on_ack(r);
        }
        if self.phase == Phase::Leaving && self.outbound.iter().all(|(_, o)| o.is_empty()) {
            if self.connshut_sent {
                self.phase = Phase::Done;
            } else {
                // HBSHUTDOWN is acknowledged: the CMA has taken us out of
                // the rings; stop heartbeating and close the connection.
                self.send.clear();
                self.expect.clear();
                self.next_hb_ms = None;
                self.connshut_sent = true;
                let fail = self.fail;
                self.queue(fail, Report::ConnShut);
            }
        }
    }
}
