//! [`Decider`]: the whole decision state of the CMA, as a pure function of
//! the log. `handle(input, &mut effects)` takes one log record (an accepted
//! FrameSet with its receive time and source, or a TICK) and appends what
//! must happen: instructions for agents, store rows, notices. No clock, no
//! I/O, no randomness; iteration never depends on hash order; so the same
//! inputs give the same effects in any process, and recovery is replay.
//!
//! It owns the node registry (identity = host name; address, incarnation
//! from STARTUP's WALLCLOCK, switch from SWDISCOVER, subnet from netconfig),
//! the switch-aware [`Topology`], one failure state machine ([`Health`]) per
//! node, and the sending side towards every agent ([`OutQueue`], rule 1) and
//! the receiving position of every agent (rule 2).
//!
//! Rooms: this file holds the types, the dispatch (`handle`) and the
//! effects plumbing; `registry.rs` STARTUP and placement; `health.rs` the
//! failure glue (reports, probes, cuts, heals, verdicts); `audit.rs`
//! HBSTATE, refusals and RESUME; `checkpoint.rs` export and import;
//! `tests.rs` the unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::failure::{DeathCause, Effect as Fsm, FailureConfig, Health};
use super::idmap::pairs;
use super::outq::{Instruction, OutQueue, Retransmit};
use super::ring::HbInstruction;
use super::topology::{GroupKey, RingLinks, Topology};
use super::{Index, IndexHasher, NodeId};
use crate::classify::switch::parse_switch_frame;
use crate::classify::{HbState, Message, PeerStatus, ReqId, Startup};
use crate::reliable::{RetransmitPolicy, normalize};

/// Bumped whenever a change to this module could change effects for the
/// same log (logged in the CONFIG record, so replay knows).
pub const DECIDER_VERSION: u32 = 3;

/// How many group members are probed before a representative is declared
/// dead (rule 6).
const GROUP_SAMPLE: usize = 3;
/// Refusals (ACTIONNAK) in a row after which a node is degraded: taken out
/// of the rings, its neighbours watched by others. Before that, each
/// refusal is retried after 2, 4, ... retransmit intervals (an HBSTATEREQ,
/// whose audit re-sends what did not take effect).
pub const NAK_RETRIES: u32 = 3;
/// Suspects in one group within one window that name a switch fault.
const SWITCH_FAULT_SUSPECTS: usize = 3;
/// A pair's martian is repaired at most once per this many heartbeat
/// intervals (a nanoprobe repeats HBMARTIAN every 10 s).
const MARTIAN_REPAIR_EVERY: u64 = 30;
/// Pairs whose last martian repair is remembered, at most.
const MARTIAN_PAIRS_MAX: usize = 4096;
/// A host name longer than this (bytes) is refused: a DNS name has at most
/// 253 characters, a Linux host name 64.
pub const HOSTNAME_MAX: usize = 255;

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Host name (its identity).
    pub hostname: String,
    /// Where it listens and is told to be heartbeated.
    pub addr: SocketAddr,
    /// STARTUP's WALLCLOCK.
    pub incarnation: u64,
    /// Failure state.
    pub health: Health,
    /// Subnet from its netconfig, when it names the address.
    pub subnet: Option<String>,
    /// Switch (chassis id, port id) from SWDISCOVER.
    pub switch: Option<(String, Option<String>)>,
    /// Last FrameSet from it, log ms.
    pub last_heard_ms: u64,
    /// The sending side towards it.
    pub out: OutQueue,
    /// Its receiving position: (session, last request id logged).
    pub inbound: Option<(u32, u64)>,
    /// An ACK of a request id at least this proves it answered after it
    /// was suspected.
    probe_from: Option<u64>,
    /// The peers it heartbeated when it was declared dead (stopped again
    /// if it turns out alive).
    stale_peers: Vec<SocketAddr>,
    /// It announced HBSTATE/HBSTATEREQ support (FEATURES in STARTUP).
    #[serde(default)]
    pub speaks_hbstate: bool,
    /// What its last HBSTATE said.
    #[serde(default)]
    pub last_state: Option<StateSummary>,
    /// Audits of it that found drift.
    #[serde(default)]
    pub drift: u64,
    /// Its last refusal (ACTIONNAK): code and reason.
    #[serde(default)]
    pub refused: Option<(u64, String)>,
    /// Refusals since its state last matched its rings.
    #[serde(default)]
    naks: u32,
    /// When to retry after a refusal (log ms).
    #[serde(default)]
    nak_retry_at: Option<u64>,
    /// Taken out of the rings after repeated refusals: why.
    #[serde(default)]
    pub degraded: Option<String>,
    /// A STARTUP with its name from another address, weighed by a probe:
    /// if it is heard from before `until_ms`, the newcomer is refused;
    /// the newcomer's next STARTUP after that moves the node.
    #[serde(default)]
    contest: Option<Contest>,
    /// The address of another live host with its name, refused while this
    /// node is in service.
    #[serde(default)]
    pub conflict: Option<SocketAddr>,
    /// Not yet in the rings: its agent has not ACKed anything of this
    /// incarnation yet (its SETCONFIG first). Until it does, it is not
    /// known to be reachable at its address nor willing: a STARTUP from a
    /// forged or unreachable address never enters a ring. (Its queue's
    /// session, and the first request id an ACK must cover.)
    #[serde(default)]
    pub unconfirmed: Option<(u32, u64)>,
    /// Interfaces its agent was asked to discover its switch on (this
    /// incarnation).
    #[serde(default)]
    pub nics: Vec<String>,
    /// The CMA gave up on it (an instruction never ACKed): nothing is sent
    /// to it until it is heard from, then its ring is said again (STOP for
    /// what it may heartbeat first, rule 1). Its rings do not change.
    #[serde(default)]
    pub gave_up: bool,
    /// Its key id (KEYID of its STARTUP): everything it sends but STARTUP
    /// must come under it, and everything sent to it is encrypted to it.
    #[serde(default)]
    pub key_id: Option<String>,
    /// In the decider's dirty list (set between a change and the end of
    /// the record's handling: never in a checkpoint).
    #[serde(skip)]
    dirty: bool,
}

/// A newcomer claiming a node's host name from another address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Contest {
    addr: SocketAddr,
    until_ms: u64,
}

/// What a node's last HBSTATE said, for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSummary {
    /// Log ms when it arrived.
    pub time_ms: u64,
    /// Peers it heartbeats.
    pub sending: u32,
    /// Peers it watches.
    pub expecting: u32,
    /// Watched peers it reports late.
    pub late: u32,
    /// Watched peers it reports dead.
    pub dead: u32,
}

/// Where a node without an address of its own is parked: `::N`, port 0
/// (no agent uses it), unique per id.
fn parked_addr(id: NodeId) -> SocketAddr {
    SocketAddr::new(IpAddr::from((u128::from(id) + 1).to_be_bytes()), 0)
}

impl Node {
    /// A node as its first STARTUP registers it: up, unplaced, nothing
    /// sent yet.
    fn new(hostname: String, addr: SocketAddr, incarnation: u64, now_ms: u64) -> Node {
        Node {
            hostname,
            addr,
            incarnation,
            health: Health::Up,
            subnet: None,
            switch: None,
            last_heard_ms: now_ms,
            out: OutQueue::default(),
            inbound: None,
            probe_from: None,
            stale_peers: Vec::new(),
            speaks_hbstate: false,
            last_state: None,
            drift: 0,
            refused: None,
            naks: 0,
            nak_retry_at: None,
            degraded: None,
            contest: None,
            conflict: None,
            unconfirmed: None,
            nics: Vec::new(),
            gave_up: false,
            key_id: None,
            dirty: false,
        }
    }

    /// The slot of a forgotten node ([`Decider::forget`]): no name, parked,
    /// out of service, in no index; the next registration takes it.
    fn vacant(id: NodeId) -> Node {
        let mut n = Node::new(String::new(), parked_addr(id), 0, 0);
        n.health = Health::Left;
        n
    }

    /// A vacant slot (no node: see [`Node::vacant`]).
    pub fn is_vacant(&self) -> bool {
        self.hostname.is_empty()
    }

    fn group_key(&self) -> GroupKey {
        match (&self.switch, &self.subnet) {
            (Some((chassis, _)), _) => GroupKey::Switch(chassis.clone()),
            (None, Some(s)) => GroupKey::Subnet(s.clone()),
            _ => GroupKey::Default,
        }
    }

    /// Is `key` the group it belongs in (without building the key)?
    fn is_in(&self, key: &GroupKey) -> bool {
        match (key, &self.switch, &self.subnet) {
            (GroupKey::Switch(k), Some((chassis, _)), _) => k == chassis,
            (GroupKey::Subnet(k), None, Some(s)) => k == s,
            (GroupKey::Default, None, None) => true,
            _ => false,
        }
    }

    fn in_service(&self) -> bool {
        !matches!(self.health, Health::Dead(_) | Health::Left)
    }
}

/// The decider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decider {
    cfg: DeciderConfig,
    fcfg: FailureConfig,
    nodes: Nodes,
    /// Indexes over `nodes` (rebuilt on import).
    #[serde(skip)]
    by_addr: Index<SocketAddr>,
    #[serde(skip)]
    by_host: Index<String>,
    topo: Topology,
    /// (deadline ms, node): may hold stale entries, checked when due.
    deadlines: BTreeSet<(u64, NodeId)>,
    /// Groups with members cut off.
    #[serde(with = "pairs")]
    cut_off: BTreeMap<GroupKey, Vec<NodeId>>,
    /// Representatives whose death two monitors agreed on while their group
    /// could not be judged yet: the second monitor, for the verdict at the
    /// window's end.
    #[serde(default, with = "pairs")]
    agreed: BTreeMap<NodeId, NodeId>,
    /// Groups that were cut off and healed: when (log ms); kept one dead
    /// time plus the window (reports made across the cut arrive then).
    #[serde(default, with = "pairs")]
    healed: BTreeMap<GroupKey, u64>,
    /// Recent suspicions per group: (when, node).
    #[serde(with = "pairs")]
    recent_suspects: BTreeMap<GroupKey, Vec<(u64, NodeId)>>,
    /// (reporter, heartbeater) -> log ms of the last martian repair
    /// (at most [`MARTIAN_PAIRS_MAX`]).
    #[serde(default, with = "pairs")]
    martian_repairs: BTreeMap<(NodeId, NodeId), u64>,
    now_ms: u64,
    last_lsn: u64,
    counters: Counters,
    /// Nodes whose queues may have instructions to promote, in the order
    /// they were touched (each node's `dirty` flag says whether it is here).
    #[serde(skip)]
    dirty: Vec<NodeId>,
    /// Groups changed since the last incremental checkpoint.
    #[serde(skip)]
    unsaved_groups: checkpoint::UnsavedGroups,
    /// Vacant slots (rebuilt on import: the vacant nodes).
    #[serde(skip)]
    free: BTreeSet<NodeId>,
}

impl Decider {
    /// An empty decider.
    pub fn new(cfg: DeciderConfig) -> Decider {
        let key = IndexHasher(cfg.index_key);
        Decider {
            fcfg: cfg.failure(),
            cfg,
            nodes: Nodes::default(),
            by_addr: Index::with_hasher(key),
            by_host: Index::with_hasher(key),
            topo: Topology::default(),
            deadlines: BTreeSet::new(),
            cut_off: BTreeMap::new(),
            recent_suspects: BTreeMap::new(),
            healed: BTreeMap::new(),
            agreed: BTreeMap::new(),
            martian_repairs: BTreeMap::new(),
            now_ms: 0,
            last_lsn: 0,
            counters: Counters::default(),
            dirty: Vec::new(),
            unsaved_groups: checkpoint::UnsavedGroups::default(),
            free: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DeciderConfig {
        &self.cfg
    }

    /// What was ignored.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The log time of the last record handled, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The LSN of the last record handled.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// The rings.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// A node.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// All nodes, by id (vacant slots among them: [`Node::is_vacant`]).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node registered at an address.
    pub fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.by_addr.get(&normalize(addr)).copied()
    }

    /// The earliest time a TICK can change anything (the io thread appends
    /// one then, and not before: rule 5).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|d| d.0)
    }

    /// Handles one record, appending its effects to `out`.
    ///
    /// Its cheap invariants (O(nodes changed)) are asserted after every
    /// record, in release builds too: a decider that broke one must stop
    /// the daemon rather than act on a corrupt state (its log is intact).
    pub fn handle(&mut self, input: &Input<'_>, out: &mut Vec<Effect>) {
        let first_effect = out.len();
        self.counters.records += 1;
        self.last_lsn = input.lsn;
        self.now_ms = self.now_ms.max(input.time_ms);
        match input.event {
            Event::Tick => self.on_tick(out),
            Event::Resume => self.on_resume(),
            Event::Malformed { from, reqid, key } => {
                self.counters.malformed += 1;
                if let Some(&id) = self.by_addr.get(&normalize(from))
                    && self.authentic(id, key)
                {
                    self.nodes.get_mut(id as usize).inbound = Some((reqid.session, reqid.request));
                    self.heard(id, false, out);
                }
            }
            Event::Received {
                from,
                reqid,
                message,
                key,
            } => self.on_message(normalize(from), reqid, &message, key, out),
        }
        self.flush(out);
        if let Err(e) = self.check_changed(&out[first_effect..]) {
            panic!("decider invariant broken at LSN {}: {e}", input.lsn);
        }
    }

    /// The invariants that cost O(1) per node changed by a record (those
    /// with a row among `effects`): the indexes cover the registry, and a
    /// changed node is placed exactly when it is in service, in its group.
    pub fn check_changed(&self, effects: &[Effect]) -> Result<(), String> {
        let live = self.nodes.len() - self.free.len();
        if self.by_addr.len() != live || self.by_host.len() != live {
            return Err("the indexes and the registry differ in size".into());
        }
        for e in effects {
            if let Effect::Row(r) = e {
                self.check_node(r.id)?;
            }
        }
        Ok(())
    }

    /// An ACK of `r` from node `id`: if it was waiting to prove itself
    /// (see [`Node::unconfirmed`]), it now has, and enters its rings.
    fn confirm(&mut self, id: NodeId, r: ReqId, out: &mut Vec<Effect>) {
        let n = self.nodes.get_mut(id as usize);
        let Some((session, first)) = n.unconfirmed else {
            return;
        };
        // A queue moved to a new session since: any ACK of it will do.
        if r.session == session && r.request < first {
            return;
        }
        n.unconfirmed = None;
        if n.in_service() {
            self.place(id);
            out.push(Effect::Row(Box::new(self.row(id))));
        }
    }

    /// One node's invariants.
    fn check_node(&self, id: NodeId) -> Result<(), String> {
        let n = self
            .nodes
            .get(id as usize)
            .ok_or_else(|| format!("a row for node {id}, which does not exist"))?;
        if n.is_vacant() != self.free.contains(&id) {
            return Err(format!(
                "node {id} is vacant={} but free={}",
                n.is_vacant(),
                self.free.contains(&id)
            ));
        }
        if n.is_vacant() {
            return match self.topo.group_of(id) {
                Some(_) => Err(format!("vacant slot {id} is placed")),
                None if self.by_addr.contains_key(&n.addr) => {
                    Err(format!("vacant slot {id} holds an address"))
                }
                None => Ok(()),
            };
        }
        let group = self.topo.group_of(id);
        let placed = group.is_some();
        if (n.in_service() && n.degraded.is_none() && n.unconfirmed.is_none()) != placed {
            return Err(format!(
                "node {id} ({}) is {:?} but placed={placed}",
                n.hostname, n.health
            ));
        }
        if group.is_some_and(|k| !n.is_in(k)) {
            return Err(format!("node {id} is in the wrong group"));
        }
        if self.by_addr.get(&n.addr) != Some(&id) || self.by_host.get(&n.hostname) != Some(&id) {
            return Err(format!("node {id} is missing from an index"));
        }
        Ok(())
    }

    /// Checks the invariants of DESIGN.md over the whole state.
    pub fn check(&self) -> Result<(), String> {
        self.topo.check()?;
        for id in 0..self.nodes.len() {
            self.check_node(id as NodeId)?;
        }
        let live = self.nodes.len() - self.free.len();
        if self.by_addr.len() != live || self.by_host.len() != live {
            return Err("indexes hold unknown nodes".into());
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        from: SocketAddr,
        reqid: Option<ReqId>,
        message: &Message<'_>,
        key: Option<&str>,
        out: &mut Vec<Effect>,
    ) {
        if let Message::Startup(s) = message {
            self.on_startup(from, s, out);
            // Refused (a name or address held by another, a key, a bad
            // name): its source holds no registration (the log thread
            // made one when it logged the STARTUP).
            if !self.by_addr.contains_key(&from)
                && self
                    .by_host
                    .get(s.hostname)
                    .is_none_or(|&id| self.nodes[id as usize].addr.ip() != from.ip())
            {
                out.push(Effect::Forget {
                    node: None,
                    addr: from,
                    lsn: self.last_lsn,
                });
            }
            return;
        }
        let Some(&id) = self.by_addr.get(&from) else {
            self.counters.unknown_sender += 1;
            return;
        };
        if !self.authentic(id, key) {
            return;
        }
        let mut probe_answered = false;
        if let Some(r) = reqid {
            if matches!(message, Message::Ack) {
                let n = self.nodes.get_mut(id as usize);
                if r.session == n.out.session(self.cfg.session)
                    && n.out.on_ack(r.request, self.now_ms)
                {
                    probe_answered = n.probe_from.is_some_and(|p| r.request >= p);
                    self.mark_dirty(id);
                    self.confirm(id, r, out);
                } else {
                    self.counters.stray_ack += 1;
                }
            } else {
                self.nodes.get_mut(id as usize).inbound = Some((r.session, r.request));
            }
        }
        self.heard(id, probe_answered, out);
        match *message {
            Message::HbDead { peer } => self.on_hbdead(id, peer, out),
            Message::HbShutdown { .. } => {
                let h = self.nodes[id as usize].health;
                let e = self.nodes.get_mut(id as usize).health.on_shutdown();
                self.apply(id, h, e, out);
            }
            Message::HbLate { peer, .. } => match self.by_addr.get(&normalize(peer)) {
                Some(&d) => out.push(Effect::Notice(Notice::Late {
                    node: d,
                    reporter: id,
                })),
                None => self.counters.unknown_peer += 1,
            },
            Message::HbBackAlive { peer, .. } => match self.by_addr.get(&normalize(peer)) {
                Some(&d) => {
                    let h = self.nodes[d as usize].health;
                    let e = self.nodes.get_mut(d as usize).health.on_alive(false);
                    self.apply(d, h, e, out);
                }
                None => self.counters.unknown_peer += 1,
            },
            Message::HbMartian { peer } => self.on_martian(id, peer, out),
            Message::HbState(ref h) => self.on_hbstate(id, h, out),
            Message::ActionNak { code, reason, .. } => self.on_nak(id, code, reason, out),
            Message::Stats { json } => out.push(Effect::Stats {
                node: id,
                json: json.to_string(),
            }),
            Message::SwDiscover(sw) => match parse_switch_frame(sw.pktdata) {
                Ok(info) => self.set_switch(id, (info.chassis_id, info.port_id), out),
                Err(_) => self.counters.bad_switch_frame += 1,
            },
            Message::JsDiscovery { json, .. } | Message::RscOpReply { json } => {
                if json.contains("\"netconfig\"") {
                    self.on_netconfig(id, json);
                }
                out.push(Effect::Discovery {
                    node: id,
                    json: json.to_string(),
                })
            }
            Message::ConnShut => {
                // Its receiving position starts afresh (rule 2); ours
                // answers with a sequenced CONNSHUT after what is in
                // flight.
                let n = self.nodes.get_mut(id as usize);
                n.inbound = None;
                n.out.close();
                self.mark_dirty(id);
            }
            Message::Ack => {}
            _ => self.counters.unused_type += 1,
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Effect>) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > self.now_ms {
                break;
            }
            self.deadlines.pop_first();
            let policy = self.cfg.retransmit_policy();
            if self.nodes[id as usize].out.retransmit_deadline(&policy) == Some(t) {
                self.retransmit(id, &policy, out);
            }
            let n = self.nodes.get_mut(id as usize);
            if n.nak_retry_at == Some(t) {
                n.nak_retry_at = None;
                if n.in_service() && !n.out.holds(&Instruction::StateRequest) {
                    n.out.push(Instruction::StateRequest);
                    self.mark_dirty(id);
                }
            }
            let n = self.nodes.get_mut(id as usize);
            if n.health.deadline_ms(&self.fcfg) != Some(t) {
                continue;
            }
            let before = n.health;
            let e = n.health.on_tick(self.now_ms, &self.fcfg);
            self.apply(id, before, Ok(e), out);
        }
    }

    fn apply_hb(&mut self, list: &[HbInstruction]) {
        for i in list {
            let peers: Vec<SocketAddr> = i
                .peers
                .iter()
                .map(|p| self.nodes[*p as usize].addr)
                .collect();
            self.nodes
                .get_mut(i.to as usize)
                .out
                .push_hb(i.start, &peers);
            self.mark_dirty(i.to);
        }
    }

    fn mark_dirty(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(id as usize);
        if !n.dirty {
            n.dirty = true;
            self.dirty.push(id);
        }
    }

    fn flush(&mut self, out: &mut Vec<Effect>) {
        for key in self.topo.take_touched_groups() {
            self.unsaved_groups.0.insert(key);
        }
        for node in self.topo.take_touched() {
            self.nodes.mark(node as usize);
            out.push(Effect::Ring {
                node,
                links: self.topo.links_of(node).map(Box::new),
            });
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        let policy = self.cfg.retransmit_policy();
        for id in dirty.drain(..) {
            let n = self.nodes.get_mut(id as usize);
            n.dirty = false;
            if n.gave_up {
                // Held until it is heard from.
                continue;
            }
            for (r, i) in n.out.promote(self.now_ms) {
                out.push(self.send_effect(id, r, i));
            }
            self.watch_retransmit(id, &policy);
        }
        self.dirty = dirty;
    }

    /// Keeps node `id`'s retransmission deadline among the deadlines.
    fn watch_retransmit(&mut self, id: NodeId, policy: &RetransmitPolicy) {
        if let Some(t) = self.nodes[id as usize].out.retransmit_deadline(policy) {
            self.deadlines.insert((t, id));
        }
    }

    /// Node `id`'s retransmission deadline came: send its oldest
    /// instruction again, or give up on it.
    fn retransmit(&mut self, id: NodeId, policy: &RetransmitPolicy, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        let tries = self.nodes[id as usize].out.tries();
        // Not yet heard to ACK anything of this incarnation: given up on
        // sooner (the waits are the same; only the give-up differs).
        let join;
        let policy = if self.nodes[id as usize].unconfirmed.is_some() {
            join = self.cfg.join_policy();
            &join
        } else {
            policy
        };
        match self
            .nodes
            .get_mut(id as usize)
            .out
            .poll_retransmit(now, policy)
        {
            Retransmit::Nothing => {}
            Retransmit::Resend(r, i) => {
                self.counters.retransmits += 1;
                out.push(self.send_effect(id, r, i));
            }
            Retransmit::GiveUp => self.give_up(id, tries, out),
        }
        self.watch_retransmit(id, policy);
    }

    /// The path to node `id` works (it was heard from) or must be tried
    /// at once (a probe): a retransmission that backed off is due now.
    fn rearm(&mut self, id: NodeId) {
        let policy = self.cfg.retransmit_policy();
        if self
            .nodes
            .get_mut(id as usize)
            .out
            .rearm(self.now_ms, &policy)
        {
            self.watch_retransmit(id, &policy);
        }
    }

    fn send_effect(&self, id: NodeId, request: u64, instruction: Instruction) -> Effect {
        Effect::Send {
            node: id,
            to: self.nodes[id as usize].addr,
            reqid: ReqId {
                session: self.nodes[id as usize].out.session(self.cfg.session),
                request,
                queue: 0,
            },
            instruction,
        }
    }

    /// May a FrameSet under `key` (`None`: in clear) speak for node `id`?
    /// A keyed node speaks only under its own key (DESIGN.md rule 9): a
    /// forged source address cannot ACK, report, shut down or reset for
    /// it. Counted when not.
    fn authentic(&mut self, id: NodeId, key: Option<&str>) -> bool {
        match &self.nodes[id as usize].key_id {
            Some(k) if key != Some(k.as_str()) => {
                self.counters.unauthenticated += 1;
                false
            }
            _ => true,
        }
    }

    /// The key id instructions to node `id` are encrypted to.
    pub fn key_of(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(id as usize)?.key_id.as_deref()
    }

    fn row(&self, id: NodeId) -> NodeRow {
        let n = &self.nodes[id as usize];
        NodeRow {
            id,
            hostname: n.hostname.clone(),
            addr: n.addr,
            incarnation: n.incarnation,
            group: self.topo.group_of(id).cloned(),
            health: n.health,
            switch: n.switch.clone(),
            state: n.last_state.clone(),
            drift: n.drift,
            refused: n.refused.clone(),
            degraded: n.degraded.clone(),
            conflict: n.conflict,
            unconfirmed: n.unconfirmed.is_some(),
            gave_up: n.gave_up,
        }
    }
}

mod audit;
mod checkpoint;
mod health;
mod nodes;
mod registry;
#[cfg(test)]
mod tests;
mod types;

pub use crate::netconfig::{NICS_MAX, subnet_of, switch_nics_of};
pub use checkpoint::{CheckpointDelta, CheckpointRows, group_row_key};
use nodes::Nodes;
pub use types::{Counters, DeciderConfig, Effect, Event, Input, NodeRow, Notice};
