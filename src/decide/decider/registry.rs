//! The registry: STARTUP (join, restart, move, clone and name contests),
//! the netconfig and switch facts that place a node, and placing it.

use super::*;
use crate::netconfig::{subnet_in, switch_nics_in};

impl Decider {
    /// A later netconfig discovery: interfaces that appeared since are
    /// asked to discover their switch too.
    pub(super) fn on_netconfig(&mut self, id: NodeId, json: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        if v.get("discovertype").and_then(|t| t.as_str()) != Some("netconfig") {
            return;
        }
        let n = self.nodes.get_mut(id as usize);
        if !n.in_service() {
            return;
        }
        let new: Vec<String> = switch_nics_in(&v)
            .into_iter()
            .filter(|x| !n.nics.contains(x))
            .take(NICS_MAX.saturating_sub(n.nics.len()))
            .collect();
        if new.is_empty() {
            return;
        }
        n.nics.extend(new.iter().cloned());
        n.out.push(Instruction::SwitchDiscovery(new));
        self.mark_dirty(id);
    }

    /// A STARTUP: a new node, a restart, a move, or a repeat. Kept whole:
    /// the identity checks (name, address holder, key) decide which, in an
    /// order that matters, before any state changes.
    pub(super) fn on_startup(&mut self, from: SocketAddr, s: &Startup<'_>, out: &mut Vec<Effect>) {
        let addr = if s.listen.ip().is_unspecified() {
            SocketAddr::new(from.ip(), s.listen.port())
        } else {
            normalize(s.listen)
        };
        if addr.ip() != from.ip() {
            self.counters.startup_mismatch += 1;
            return;
        }
        if s.hostname.is_empty() || s.hostname.len() > HOSTNAME_MAX {
            self.counters.bad_hostname += 1;
            return;
        }
        let speaks_hbstate = s
            .features
            .is_some_and(|f| f.split(',').any(|x| x.trim() == "hbstate"));
        // Parsed only for a node that (re)starts: a repeated or refused
        // STARTUP costs no JSON parse.
        let netconfig = |ip: IpAddr| {
            let v: serde_json::Value =
                serde_json::from_str(s.netconfig).unwrap_or(serde_json::Value::Null);
            (subnet_in(&v, ip), switch_nics_in(&v))
        };
        let key_id = s.key.map(|(k, _)| k);
        // An address a live keyed node holds is not taken by another host
        // on its word: the holder is probed, and keeps it if it answers
        // (under its key) within the confirmation window.
        if let Some(&holder) = self.by_addr.get(&addr)
            && self.nodes[holder as usize].hostname != s.hostname
            && self.nodes[holder as usize].key_id.is_some()
            && self.nodes[holder as usize].in_service()
            && !self.contested(holder, addr)
        {
            self.counters.key_refused += 1;
            return;
        }
        if let Some(&id) = self.by_host.get(s.hostname) {
            let n = &self.nodes[id as usize];
            if n.key_id.is_some() && n.key_id.as_deref() != key_id {
                // A keyed host comes back only under its key.
                self.counters.key_refused += 1;
                return;
            }
            if n.incarnation == s.wallclock_us && n.addr == addr {
                self.counters.duplicate_startup += 1;
                if n.gave_up {
                    // Given up on while it waited: it is reachable now.
                    self.reach_again(id, out);
                    return;
                }
                if !n.out.holds(&Instruction::AckStartup) {
                    self.nodes
                        .get_mut(id as usize)
                        .out
                        .push(Instruction::AckStartup);
                    self.mark_dirty(id);
                }
                return;
            }
            if n.addr != addr && n.in_service() && !self.contested(id, addr) {
                return;
            }
            let n = &self.nodes[id as usize];
            // A restart: the old incarnation is gone. Close the ring behind
            // it (its peers stop expecting it), forget what was queued for
            // the old process, and place the new one afresh.
            let (subnet, nics) = netconfig(addr.ip());
            let old_addr = n.addr;
            let was_placed = self.topo.group_of(id).is_some();
            if was_placed {
                let i = self.topo.leave(id);
                self.apply_hb(&i);
            }
            self.by_addr.remove(&old_addr);
            self.claim_addr(addr, id, out);
            if old_addr != addr && !self.by_addr.contains_key(&old_addr) {
                // Moved: the old address is nobody's now.
                out.push(Effect::Forget {
                    node: None,
                    addr: old_addr,
                    lsn: self.last_lsn,
                });
            }
            let n = self.nodes.get_mut(id as usize);
            // Heartbeat starts in flight to the old process may have
            // reached the new one at the same address (it accepts any first
            // request id): stop them once more. A STOP for a peer it does
            // not heartbeat changes nothing, so this is right either way.
            let mut maybe_started = Vec::new();
            if old_addr == addr {
                for (_, i) in n.out.inflight() {
                    if let Instruction::Heartbeat { start: true, peers } = i {
                        maybe_started.extend(peers.iter().copied());
                    }
                }
            }
            n.addr = addr;
            n.incarnation = s.wallclock_us;
            n.subnet = subnet;
            n.out.reset();
            n.inbound = None;
            n.probe_from = None;
            n.stale_peers.clear();
            n.speaks_hbstate = speaks_hbstate;
            n.last_state = None;
            n.refused = None;
            n.naks = 0;
            n.nak_retry_at = None;
            n.degraded = None;
            n.contest = None;
            n.conflict = None;
            n.nics = nics;
            n.gave_up = false;
            n.key_id = key_id.map(str::to_string);
            n.health = Health::Up;
            n.last_heard_ms = self.now_ms;
            out.push(Effect::Notice(Notice::Restarted(id)));
            self.greet_and_place(id, maybe_started, out);
            return;
        }
        let (subnet, nics) = netconfig(addr.ip());
        let mut n = Node::new(s.hostname.to_string(), addr, s.wallclock_us, self.now_ms);
        n.subnet = subnet;
        n.speaks_hbstate = speaks_hbstate;
        n.nics = nics;
        n.key_id = key_id.map(str::to_string);
        // A slot a forgotten registration left is taken first (the lowest:
        // the same in every replay), so the registry is as large as what
        // is registered, not as every STARTUP ever received.
        let id = match self.free.pop_first() {
            Some(id) => {
                *self.nodes.get_mut(id as usize) = n;
                id
            }
            None => {
                self.nodes.push(n);
                (self.nodes.len() - 1) as NodeId
            }
        };
        self.by_host.insert(s.hostname.to_string(), id);
        self.claim_addr(addr, id, out);
        out.push(Effect::Notice(Notice::Joined(id)));
        self.greet_and_place(id, Vec::new(), out);
    }

    /// Node `id` never ACKed its SETCONFIG, sent `tries` times: forgotten.
    /// A STARTUP from a forged source address, or from an agent that cannot
    /// be reached, registers a node that can never answer; kept, such
    /// registrations would fill the registry (`limits.max_nodes`) and
    /// refuse real nodes. It was never placed, so no ring changes; its
    /// slot is left vacant for the next registration, its host name and
    /// address are free, and the log thread is told to forget the address
    /// (its receiving state and registration: [`Effect::Forget`]). A real
    /// agent that was only slow keeps sending its STARTUP (a nanoprobe
    /// does every 5 s until it has its configuration) and registers anew.
    pub(super) fn forget(&mut self, id: NodeId, tries: u32, out: &mut Vec<Effect>) {
        let n = &self.nodes[id as usize];
        debug_assert!(
            self.topo.group_of(id).is_none(),
            "a forgotten node was placed"
        );
        self.counters.forgotten += 1;
        out.push(Effect::Notice(Notice::Forgotten {
            node: id,
            hostname: n.hostname.clone(),
            addr: n.addr,
            tries,
        }));
        out.push(Effect::Forget {
            node: Some(id),
            addr: n.addr,
            lsn: self.last_lsn,
        });
        self.by_host.remove(&n.hostname);
        if self.by_addr.get(&n.addr) == Some(&id) {
            self.by_addr.remove(&n.addr);
        }
        *self.nodes.get_mut(id as usize) = Node::vacant(id);
        self.free.insert(id);
        // Ids are reused: nothing may still name this one.
        self.agreed.retain(|k, v| *k != id && *v != id);
        self.martian_repairs
            .retain(|(a, b), _| *a != id && *b != id);
        for list in self.recent_suspects.values_mut() {
            list.retain(|(_, x)| *x != id);
        }
        self.recent_suspects.retain(|_, l| !l.is_empty());
        for list in self.cut_off.values_mut() {
            list.retain(|x| *x != id);
        }
        self.cut_off.retain(|_, l| !l.is_empty());
    }

    /// `addr` now belongs to `id`; a node that had it is gone (its host was
    /// renamed or the address reused).
    pub(super) fn claim_addr(&mut self, addr: SocketAddr, id: NodeId, out: &mut Vec<Effect>) {
        if let Some(old) = self.by_addr.insert(addr, id)
            && old != id
        {
            // The old node departs; it keeps its name, not the address.
            let h = self.nodes[old as usize].health;
            let e = self.nodes.get_mut(old as usize).health.on_shutdown();
            self.apply(old, h, e, out);
            let parked = parked_addr(old);
            self.nodes.get_mut(old as usize).addr = parked;
            self.by_addr.insert(parked, old);
        }
    }

    /// A STARTUP names node `id`'s host from `addr` while the node is in
    /// service elsewhere (a cloned machine, or a host that moved): may the
    /// newcomer take the node? Only once the node, probed when the claim
    /// first came, stayed silent for the confirmation window; a node heard
    /// from in that time keeps its place and the newcomer is refused (see
    /// [`Decider::heard`]) for as long as the node is in service. No
    /// flapping: the node moves at most once per silence.
    pub(super) fn contested(&mut self, id: NodeId, addr: SocketAddr) -> bool {
        let now = self.now_ms;
        let window = self.fcfg.window_ms;
        let n = self.nodes.get_mut(id as usize);
        if n.conflict == Some(addr) {
            self.counters.name_conflicts += 1;
            return false;
        }
        match n.contest {
            Some(c) if c.addr == addr && now >= c.until_ms => true,
            Some(c) if c.addr == addr => false,
            _ => {
                n.contest = Some(Contest {
                    addr,
                    until_ms: now + window,
                });
                self.counters.name_contests += 1;
                self.probe(id);
                false
            }
        }
    }

    pub(super) fn greet_and_place(
        &mut self,
        id: NodeId,
        undo: Vec<SocketAddr>,
        out: &mut Vec<Effect>,
    ) {
        let n = self.nodes.get_mut(id as usize);
        // Placed once it ACKs what follows (its SETCONFIG first).
        n.unconfirmed = Some((n.out.session(self.cfg.session), n.out.next_request()));
        let json = if n.speaks_hbstate {
            self.cfg.config_json_extended()
        } else {
            self.cfg.config_json()
        };
        n.out.push(Instruction::SetConfig(json));
        n.out.push(Instruction::AckStartup);
        if !n.nics.is_empty() {
            // Its switch, as the original CMA learnt it: the agent listens
            // for LLDP/CDP on each NIC and reports with SWDISCOVER.
            n.out.push(Instruction::SwitchDiscovery(n.nics.clone()));
        }
        if !undo.is_empty() {
            // Not coalesced with the starts that follow: it must go first.
            n.out.push(Instruction::Heartbeat {
                start: false,
                peers: undo,
            });
        }
        self.mark_dirty(id);
        out.push(Effect::Row(Box::new(self.row(id))));
    }

    pub(super) fn place(&mut self, id: NodeId) {
        let n = &self.nodes[id as usize];
        if n.degraded.is_some() || n.unconfirmed.is_some() {
            // Out of the rings until it starts again, or until it ACKs.
            return;
        }
        let key = self.nodes[id as usize].group_key();
        let i = self.topo.join(id, key);
        self.apply_hb(&i);
    }

    pub(super) fn set_switch(
        &mut self,
        id: NodeId,
        sw: (String, Option<String>),
        out: &mut Vec<Effect>,
    ) {
        let n = self.nodes.get_mut(id as usize);
        if n.switch.as_ref() == Some(&sw) {
            return;
        }
        let moved = n.switch.as_ref().map(|s| &s.0) != Some(&sw.0);
        n.switch = Some(sw);
        if moved && self.topo.group_of(id).is_some() {
            self.place(id);
            out.push(Effect::Notice(Notice::Moved(id)));
        }
        out.push(Effect::Row(Box::new(self.row(id))));
    }
}
