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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::failure::{DeathCause, Effect as Fsm, FailureConfig, Health};
use super::idmap::pairs;
use super::outq::{Instruction, OutQueue};
use super::ring::HbInstruction;
use super::topology::{GroupKey, RingLinks, Topology};
use super::{Index, IndexHasher, NodeId};
use crate::classify::switch::parse_switch_frame;
use crate::classify::{HbState, Message, PeerStatus, ReqId, Startup};
use crate::reliable::normalize;

/// Bumped whenever a change to this module could change effects for the
/// same log (logged in the CONFIG record, so replay knows).
pub const DECIDER_VERSION: u32 = 2;

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
/// Interfaces per node asked to discover their switch, at most.
pub const NICS_MAX: usize = 16;

/// The decider's settings; part of its state (and of the CONFIG record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeciderConfig {
    /// Heartbeat interval handed to agents, ms.
    pub heartbeat_ms: u64,
    /// Late-heartbeat warning, ms.
    pub warn_ms: u64,
    /// Dead time: an agent reports a peer silent this long, ms.
    pub dead_ms: u64,
    /// The reliable layer's retransmit interval, ms.
    pub retransmit_ms: u64,
    /// Where agents reach the CMA (SETCONFIG's `cmaaddr`, `cmafail`,
    /// `cmadisc`); also the address a probe names.
    pub cma_addr: SocketAddr,
    /// The CMA's session id on every instruction.
    pub session: u32,
    /// HBSTATE interval for agents that speak it (SETCONFIG's
    /// `state_interval`), ms.
    #[serde(default = "default_state_interval_ms")]
    pub state_interval_ms: u64,
    /// STATS interval (SETCONFIG's `stats_interval`), ms; 0: never.
    #[serde(default = "default_stats_interval_ms")]
    pub stats_interval_ms: u64,
    /// The secret of the registry's index hasher ([`IndexHasher`]); 0 in
    /// logs written before it existed.
    #[serde(default)]
    pub index_key: u64,
}

fn default_stats_interval_ms() -> u64 {
    300_000
}

fn default_state_interval_ms() -> u64 {
    60_000
}

impl DeciderConfig {
    /// Defaults of WIRE.md: heartbeat 1 s, warn 5 s, dead 30 s,
    /// retransmit 2 s.
    pub fn new(cma_addr: SocketAddr, session: u32) -> DeciderConfig {
        DeciderConfig {
            heartbeat_ms: 1000,
            warn_ms: 5000,
            dead_ms: 30_000,
            retransmit_ms: 2000,
            cma_addr,
            session,
            state_interval_ms: default_state_interval_ms(),
            stats_interval_ms: default_stats_interval_ms(),
            index_key: 0,
        }
    }

    /// The failure machine's timers (rule 6).
    pub fn failure(&self) -> FailureConfig {
        FailureConfig::new(self.heartbeat_ms, self.retransmit_ms)
    }

    /// SENDEXPECTHB's RSCJSON, in whole seconds (at least 1).
    pub fn rscjson(&self) -> String {
        let s = |ms: u64| ms.div_ceil(1000).max(1);
        format!(
            "{{\"repeat\":{},\"warn\":{},\"timeout\":{}}}",
            s(self.heartbeat_ms),
            s(self.warn_ms),
            s(self.dead_ms)
        )
    }

    /// SETCONFIG's CONFIGJSON: the keys a real nanoprobe needs (exactly
    /// those a captured nanoprobe was sent).
    pub fn config_json(&self) -> String {
        let a = self.cma_addr;
        format!(
            "{{\"cmaaddr\":\"{a}\",\"cmadisc\":\"{a}\",\"cmafail\":\"{a}\",\"cmaport\":{}}}",
            a.port()
        )
    }

    /// SETCONFIG's CONFIGJSON for an agent that speaks our extensions:
    /// also the HBSTATE and STATS intervals (seconds).
    pub fn config_json_extended(&self) -> String {
        let a = self.cma_addr;
        format!(
            "{{\"cmaaddr\":\"{a}\",\"cmadisc\":\"{a}\",\"cmafail\":\"{a}\",\"cmaport\":{},\"state_interval\":{},\"stats_interval\":{}}}",
            a.port(),
            self.state_interval_ms.div_ceil(1000).max(1),
            self.stats_interval_ms.div_ceil(1000)
        )
    }
}

/// One input: a log record.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Its log sequence number.
    pub lsn: u64,
    /// Its time on the log clock, ms.
    pub time_ms: u64,
    /// What it is.
    pub event: Event<'a>,
}

/// What a record says.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// An accepted FrameSet from `from`.
    Received {
        /// Source address.
        from: SocketAddr,
        /// Its REQID (an ACK's: the one acknowledged).
        reqid: Option<ReqId>,
        /// The typed payload.
        message: Message<'a>,
    },
    /// A sequenced FrameSet that was logged (and ACKed) but whose payload
    /// did not decode: only the receiving position moves.
    Malformed {
        /// Source address.
        from: SocketAddr,
        /// Its REQID.
        reqid: ReqId,
    },
    /// The log clock advanced: deadlines may fire.
    Tick,
    /// The CMA started again (a RESUME record): ask the agents that speak
    /// HBSTATE for their state, to repair any drift.
    Resume,
}

/// What the decider asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a sequenced instruction (and retransmit it until ACKed).
    Send {
        /// The agent.
        node: NodeId,
        /// Its address.
        to: SocketAddr,
        /// (session, request id): the same on every replay.
        reqid: ReqId,
        /// What.
        instruction: Instruction,
    },
    /// Stop retransmitting to this address (the agent died, restarted or
    /// closed the connection).
    Forget {
        /// The address.
        to: SocketAddr,
    },
    /// A node's row changed.
    Row(Box<NodeRow>),
    /// A node's place in the rings changed (`None`: out of the rings).
    Ring {
        /// The node.
        node: NodeId,
        /// Where it sits now.
        links: Option<Box<RingLinks>>,
    },
    /// Discovery data to keep.
    Discovery {
        /// From whom.
        node: NodeId,
        /// The JSON.
        json: String,
    },
    /// Something to tell operators (and keep as an event).
    Notice(Notice),
    /// An agent's statistics (STATS) to keep.
    Stats {
        /// From whom.
        node: NodeId,
        /// The JSON.
        json: String,
    },
}

/// A node as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    /// Its id.
    pub id: NodeId,
    /// Host name.
    pub hostname: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Start time (WALLCLOCK, µs).
    pub incarnation: u64,
    /// Its group, when placed.
    pub group: Option<GroupKey>,
    /// Failure state.
    pub health: Health,
    /// The switch port it hangs off, when known: (chassis id, port id).
    pub switch: Option<(String, Option<String>)>,
    /// What its last HBSTATE said.
    pub state: Option<StateSummary>,
    /// Audits that found drift.
    pub drift: u64,
    /// Its last refusal (ACTIONNAK): code and reason.
    pub refused: Option<(u64, String)>,
    /// Out of the rings after repeated refusals: why.
    pub degraded: Option<String>,
    /// Another live host with its name, refused: its address.
    pub conflict: Option<SocketAddr>,
}

/// Events and verdicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// A new node joined.
    Joined(NodeId),
    /// A known node started again (new incarnation).
    Restarted(NodeId),
    /// Moved to another group (its switch became known or changed).
    Moved(NodeId),
    /// One monitor reported it.
    Suspected {
        /// The node.
        node: NodeId,
        /// Who reported it.
        reporter: NodeId,
    },
    /// Nobody confirmed; it was heard from.
    FalseAlarm {
        /// The node.
        node: NodeId,
        /// Who reported it.
        reporter: NodeId,
    },
    /// It answered the CMA after `reporter` called it dead: the fault is on
    /// the path from the reporter.
    PathFault {
        /// The node.
        node: NodeId,
        /// The reporter.
        reporter: NodeId,
    },
    /// Confirmed dead.
    Dead {
        /// The node.
        node: NodeId,
        /// How it was confirmed.
        cause: DeathCause,
    },
    /// Shut down cleanly.
    Left(NodeId),
    /// Back after death or departure.
    Rejoined(NodeId),
    /// Declared dead, yet heartbeating: placed again.
    Resurrected(NodeId),
    /// A switch (or the path to it) failed: these nodes are cut off, not
    /// dead.
    SwitchFault {
        /// The group.
        group: GroupKey,
        /// The nodes it concerns: every member now unreachable (or, for a
        /// cluster of suspicions, the suspects).
        nodes: Vec<NodeId>,
        /// Of those, the ones reported by monitors outside.
        #[serde(default)]
        reported: Vec<NodeId>,
    },
    /// A cut-off switch is reachable again (one of its members was heard):
    /// its members are probed and return to service as they answer.
    Healed {
        /// The group.
        group: GroupKey,
        /// The members that were unreachable.
        nodes: Vec<NodeId>,
    },
    /// Reported with its whole group silent: cut off, not dead.
    CutOff(NodeId),
    /// Heard from again after being cut off.
    Reconnected(NodeId),
    /// A late-heartbeat warning about a node.
    Late {
        /// The node.
        node: NodeId,
        /// Who saw it late.
        reporter: NodeId,
    },
    /// Its HBSTATE differed from its rings: these repairs were sent.
    Drift {
        /// The node.
        node: NodeId,
        /// Peers started or stopped (each a repair).
        repairs: u32,
    },
    /// Refused too often: out of the rings (still in service).
    Degraded {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// Two live hosts with one host name (a cloned machine): the node
    /// stays at `kept`, which answered the CMA; the STARTUP from `refused`
    /// is refused for as long as the node is in service.
    Conflict {
        /// The node.
        node: NodeId,
        /// Where it stays.
        kept: SocketAddr,
        /// The other host's address.
        refused: SocketAddr,
    },
    /// It refused an instruction (ACTIONNAK).
    Refused {
        /// The node.
        node: NodeId,
        /// Error code.
        code: u64,
        /// Its reason.
        reason: String,
    },
}

/// What the decider ignored, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Records handled.
    pub records: u64,
    /// FrameSets from an address that is no registered node.
    pub unknown_sender: u64,
    /// Reports about an address that is no registered node.
    pub unknown_peer: u64,
    /// Reports that did not apply in the node's state.
    pub not_applicable: u64,
    /// Repeated STARTUPs (same incarnation).
    pub duplicate_startup: u64,
    /// STARTUPs naming a listen address other than the one they came from
    /// (a process bound to an address sends from it: a forgery).
    pub startup_mismatch: u64,
    /// Martian reports about live nodes not repaired: during a ring change
    /// (transient), or within a pair's rate limit.
    pub martian_ignored: u64,
    /// Martian reports repaired (EXPECTHB to the reporter, or STOPSENDHB
    /// to the sender): the audit of agents without HBSTATE.
    #[serde(default)]
    pub martian_repairs: u64,
    /// Sequenced FrameSets whose payload did not decode.
    pub malformed: u64,
    /// SWDISCOVER frames that were no LLDP/CDP.
    pub bad_switch_frame: u64,
    /// FrameSet types the decider has no use for.
    pub unused_type: u64,
    /// ACKs for instructions never sent (or of another session).
    pub stray_ack: u64,
    /// HBSTATEs compared with the rings.
    #[serde(default)]
    pub audits: u64,
    /// HBSTATEs not compared: instructions still in flight, or of another
    /// incarnation.
    #[serde(default)]
    pub audits_deferred: u64,
    /// Audits that found drift.
    #[serde(default)]
    pub drift: u64,
    /// ACTIONNAKs received.
    #[serde(default)]
    pub naks: u64,
    /// STARTUPs naming a host in service at another address, each answered
    /// by a probe of the node where it is.
    #[serde(default)]
    pub name_contests: u64,
    /// STARTUPs refused because their host name belongs to a live node
    /// elsewhere (the first of each pair is a `Conflict` notice).
    #[serde(default)]
    pub name_conflicts: u64,
    /// Reports made across a cut (the reporter's or the node's switch was
    /// cut off within one dead time plus the window): answered by a probe,
    /// never paired into a death.
    #[serde(default)]
    pub reports_across_cut: u64,
    /// STARTUPs refused for an empty host name or one over
    /// [`HOSTNAME_MAX`] bytes.
    #[serde(default)]
    pub bad_hostname: u64,
}

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
    /// Interfaces its agent was asked to discover its switch on (this
    /// incarnation).
    #[serde(default)]
    pub nics: Vec<String>,
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

impl Node {
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
    nodes: Vec<Node>,
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
}

impl Decider {
    /// An empty decider.
    pub fn new(cfg: DeciderConfig) -> Decider {
        let key = IndexHasher(cfg.index_key);
        Decider {
            fcfg: cfg.failure(),
            cfg,
            nodes: Vec::new(),
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

    /// All nodes, by id.
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

    /// Instructions sent and not yet ACKed, to seed the transport after a
    /// restart from a checkpoint.
    pub fn unacked(&self) -> Vec<Effect> {
        let mut out = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            for (r, i) in n.out.inflight() {
                out.push(self.send_effect(id as NodeId, *r, i.clone()));
            }
        }
        out
    }

    /// Every agent's receiving position, to seed the io thread's duplicate
    /// detection (rule 2).
    pub fn inbound_positions(&self) -> Vec<(SocketAddr, u32, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.inbound.map(|(s, r)| (n.addr, s, r)))
            .collect()
    }

    /// The whole state, for a checkpoint.
    pub fn export(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("decider state always serialises")
    }

    /// A decider from [`Decider::export`]'s bytes.
    pub fn import(bytes: &[u8]) -> Result<Decider, serde_json::Error> {
        let mut d: Decider = serde_json::from_slice(bytes)?;
        let key = IndexHasher(d.cfg.index_key);
        d.by_addr = Index::with_capacity_and_hasher(d.nodes.len(), key);
        d.by_host = Index::with_capacity_and_hasher(d.nodes.len(), key);
        for (i, n) in d.nodes.iter().enumerate() {
            d.by_addr.insert(n.addr, i as NodeId);
            d.by_host.insert(n.hostname.clone(), i as NodeId);
        }
        Ok(d)
    }

    /// Handles one record, appending its effects to `out`.
    pub fn handle(&mut self, input: &Input<'_>, out: &mut Vec<Effect>) {
        self.counters.records += 1;
        self.last_lsn = input.lsn;
        self.now_ms = self.now_ms.max(input.time_ms);
        match input.event {
            Event::Tick => self.on_tick(out),
            Event::Resume => self.on_resume(),
            Event::Malformed { from, reqid } => {
                self.counters.malformed += 1;
                if let Some(&id) = self.by_addr.get(&normalize(from)) {
                    self.nodes[id as usize].inbound = Some((reqid.session, reqid.request));
                    self.heard(id, false, out);
                }
            }
            Event::Received {
                from,
                reqid,
                message,
            } => self.on_message(normalize(from), reqid, &message, out),
        }
        self.flush(out);
    }

    /// Checks the invariants of DESIGN.md over the whole state.
    pub fn check(&self) -> Result<(), String> {
        self.topo.check()?;
        for (i, n) in self.nodes.iter().enumerate() {
            let id = i as NodeId;
            let placed = self.topo.group_of(id).is_some();
            if (n.in_service() && n.degraded.is_none()) != placed {
                return Err(format!(
                    "node {id} ({}) is {:?} but placed={placed}",
                    n.hostname, n.health
                ));
            }
            if placed && !self.topo.group_of(id).is_some_and(|k| n.is_in(k)) {
                return Err(format!("node {id} is in the wrong group"));
            }
            if self.by_addr.get(&n.addr) != Some(&id) || self.by_host.get(&n.hostname) != Some(&id)
            {
                return Err(format!("node {id} is missing from an index"));
            }
        }
        if self.by_addr.len() != self.nodes.len() || self.by_host.len() != self.nodes.len() {
            return Err("indexes hold unknown nodes".into());
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        from: SocketAddr,
        reqid: Option<ReqId>,
        message: &Message<'_>,
        out: &mut Vec<Effect>,
    ) {
        if let Message::Startup(s) = message {
            self.on_startup(from, s, out);
            return;
        }
        let Some(&id) = self.by_addr.get(&from) else {
            self.counters.unknown_sender += 1;
            return;
        };
        let mut probe_answered = false;
        if let Some(r) = reqid {
            if matches!(message, Message::Ack) {
                let n = &mut self.nodes[id as usize];
                if r.session == n.out.session(self.cfg.session) && n.out.on_ack(r.request) {
                    probe_answered = n.probe_from.is_some_and(|p| r.request >= p);
                    self.mark_dirty(id);
                } else {
                    self.counters.stray_ack += 1;
                }
            } else {
                self.nodes[id as usize].inbound = Some((r.session, r.request));
            }
        }
        self.heard(id, probe_answered, out);
        match *message {
            Message::HbDead { peer } => self.on_hbdead(id, peer, out),
            Message::HbShutdown { .. } => {
                let h = self.nodes[id as usize].health;
                let e = self.nodes[id as usize].health.on_shutdown();
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
                    let e = self.nodes[d as usize].health.on_alive(false);
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
                let n = &mut self.nodes[id as usize];
                n.inbound = None;
                n.out.close();
                self.mark_dirty(id);
            }
            Message::Ack => {}
            _ => self.counters.unused_type += 1,
        }
    }

    /// A later netconfig discovery: interfaces that appeared since are
    /// asked to discover their switch too.
    fn on_netconfig(&mut self, id: NodeId, json: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        if v.get("discovertype").and_then(|t| t.as_str()) != Some("netconfig") {
            return;
        }
        let n = &mut self.nodes[id as usize];
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

    fn on_startup(&mut self, from: SocketAddr, s: &Startup<'_>, out: &mut Vec<Effect>) {
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
        if let Some(&id) = self.by_host.get(s.hostname) {
            let n = &self.nodes[id as usize];
            if n.incarnation == s.wallclock_us && n.addr == addr {
                self.counters.duplicate_startup += 1;
                if !n.out.holds(&Instruction::AckStartup) {
                    self.nodes[id as usize].out.push(Instruction::AckStartup);
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
            out.push(Effect::Forget { to: old_addr });
            self.by_addr.remove(&old_addr);
            self.claim_addr(addr, id, out);
            let n = &mut self.nodes[id as usize];
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
            n.health = Health::Up;
            n.last_heard_ms = self.now_ms;
            out.push(Effect::Notice(Notice::Restarted(id)));
            self.greet_and_place(id, maybe_started, out);
            return;
        }
        let (subnet, nics) = netconfig(addr.ip());
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node {
            hostname: s.hostname.to_string(),
            addr,
            incarnation: s.wallclock_us,
            health: Health::Up,
            subnet,
            switch: None,
            last_heard_ms: self.now_ms,
            out: OutQueue::default(),
            inbound: None,
            probe_from: None,
            stale_peers: Vec::new(),
            speaks_hbstate,
            last_state: None,
            drift: 0,
            refused: None,
            naks: 0,
            nak_retry_at: None,
            degraded: None,
            contest: None,
            conflict: None,
            nics,
            dirty: false,
        });
        self.by_host.insert(s.hostname.to_string(), id);
        self.claim_addr(addr, id, out);
        out.push(Effect::Notice(Notice::Joined(id)));
        self.greet_and_place(id, Vec::new(), out);
    }

    /// `addr` now belongs to `id`; a node that had it is gone (its host was
    /// renamed or the address reused).
    fn claim_addr(&mut self, addr: SocketAddr, id: NodeId, out: &mut Vec<Effect>) {
        if let Some(old) = self.by_addr.insert(addr, id)
            && old != id
        {
            // The old node departs; it keeps its name, not the address.
            let h = self.nodes[old as usize].health;
            let e = self.nodes[old as usize].health.on_shutdown();
            self.apply(old, h, e, out);
            // Park it on an address no agent uses (`::N`, port 0), unique
            // per id.
            let parked = SocketAddr::new(IpAddr::from((u128::from(old) + 1).to_be_bytes()), 0);
            self.nodes[old as usize].addr = parked;
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
    fn contested(&mut self, id: NodeId, addr: SocketAddr) -> bool {
        let now = self.now_ms;
        let window = self.fcfg.window_ms;
        let n = &mut self.nodes[id as usize];
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

    fn greet_and_place(&mut self, id: NodeId, undo: Vec<SocketAddr>, out: &mut Vec<Effect>) {
        let n = &mut self.nodes[id as usize];
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
        self.place(id);
        out.push(Effect::Row(Box::new(self.row(id))));
    }

    fn place(&mut self, id: NodeId) {
        if self.nodes[id as usize].degraded.is_some() {
            // Out of the rings until it starts again.
            return;
        }
        let key = self.nodes[id as usize].group_key();
        let i = self.topo.join(id, key);
        self.apply_hb(&i);
    }

    fn set_switch(&mut self, id: NodeId, sw: (String, Option<String>), out: &mut Vec<Effect>) {
        let n = &mut self.nodes[id as usize];
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

    fn on_hbdead(&mut self, reporter: NodeId, peer: SocketAddr, out: &mut Vec<Effect>) {
        let Some(&d) = self.by_addr.get(&normalize(peer)) else {
            self.counters.unknown_peer += 1;
            return;
        };
        if d == reporter {
            self.counters.not_applicable += 1;
            return;
        }
        let watching = self.watching(reporter, d);
        let now = self.now_ms;
        let late = self.across_cut(reporter, d);
        let before = self.nodes[d as usize].health;
        let h = &mut self.nodes[d as usize].health;
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
    fn across_cut(&self, reporter: NodeId, d: NodeId) -> bool {
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

    /// An agent's HBSTATE: its watched peers' states feed the failure state
    /// machine like HBDEAD, and when it had applied every instruction sent
    /// to it, what it heartbeats is compared with its rings and only the
    /// difference is repaired.
    fn on_hbstate(&mut self, id: NodeId, h: &HbState<'_>, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        let n = &mut self.nodes[id as usize];
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
            self.topo
                .peers_of(id)
                .into_iter()
                .map(|p| self.nodes[p as usize].addr)
                .collect()
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
            self.nodes[id as usize].naks = 0;
            out.push(Effect::Row(Box::new(self.row(id))));
            return;
        }
        self.counters.drift += 1;
        let n = &mut self.nodes[id as usize];
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
    fn on_nak(&mut self, id: NodeId, code: u64, reason: &str, out: &mut Vec<Effect>) {
        self.counters.naks += 1;
        let now = self.now_ms;
        let retransmit = self.cfg.retransmit_ms.max(1);
        let n = &mut self.nodes[id as usize];
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
    fn on_resume(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.speaks_hbstate && n.in_service() && !n.out.holds(&Instruction::StateRequest) {
                n.out.push(Instruction::StateRequest);
                self.mark_dirty(i as NodeId);
            }
        }
    }

    /// Does `m` watch `d`: a ring edge both ends have ACKed (rule 6)?
    fn watching(&self, m: NodeId, d: NodeId) -> bool {
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
    fn check_lone(&mut self, d: NodeId, out: &mut Vec<Effect>) {
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
            let e = self.nodes[d as usize].health.on_lone_report(&self.fcfg);
            self.apply(d, before, e, out);
        }
    }

    fn on_martian(&mut self, reporter: NodeId, peer: SocketAddr, out: &mut Vec<Effect>) {
        let Some(&m) = self.by_addr.get(&normalize(peer)) else {
            self.counters.unknown_peer += 1;
            return;
        };
        let before = self.nodes[m as usize].health;
        match before {
            Health::Dead(_) => {
                let e = self.nodes[m as usize].health.on_martian();
                self.apply(m, before, e, out);
            }
            Health::Left => {
                // It left cleanly yet heartbeats `reporter`: tell it to stop.
                let to = self.nodes[reporter as usize].addr;
                self.nodes[m as usize]
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
    fn repair_martian(&mut self, a: NodeId, b: NodeId, out: &mut Vec<Effect>) {
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
        let n = &mut self.nodes[told as usize];
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
    fn cut_group(&mut self, d: NodeId, key: GroupKey, out: &mut Vec<Effect>) {
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
            let e = self.nodes[m as usize].health.on_group_cut(reporter, now);
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
    fn heard(&mut self, id: NodeId, probe: bool, out: &mut Vec<Effect>) {
        let now = self.now_ms;
        let n = &mut self.nodes[id as usize];
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
            && let Some(key) = self.topo.group_of(id).cloned()
            && let Some(cut) = self.cut_off.remove(&key)
        {
            let horizon = self.cfg.dead_ms + self.fcfg.window_ms;
            self.healed.retain(|_, t| now <= *t + horizon);
            self.healed.insert(key.clone(), now);
            out.push(Effect::Notice(Notice::Healed {
                group: key,
                nodes: cut.clone(),
            }));
            for c in cut {
                if c != id {
                    let before = self.nodes[c as usize].health;
                    let e = self.nodes[c as usize]
                        .health
                        .on_group_heard(now, &self.fcfg);
                    self.apply(c, before, e, out);
                }
            }
        }
        let n = &mut self.nodes[id as usize];
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

    fn on_tick(&mut self, out: &mut Vec<Effect>) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > self.now_ms {
                break;
            }
            self.deadlines.pop_first();
            let n = &mut self.nodes[id as usize];
            if n.nak_retry_at == Some(t) {
                n.nak_retry_at = None;
                if n.in_service() && !n.out.holds(&Instruction::StateRequest) {
                    n.out.push(Instruction::StateRequest);
                    self.mark_dirty(id);
                }
            }
            let n = &mut self.nodes[id as usize];
            if n.health.deadline_ms(&self.fcfg) != Some(t) {
                continue;
            }
            let before = n.health;
            let e = n.health.on_tick(self.now_ms, &self.fcfg);
            self.apply(id, before, Ok(e), out);
        }
    }

    /// Carries out what a failure transition of node `d` asks.
    fn apply(
        &mut self,
        d: NodeId,
        before: Health,
        effects: Result<Vec<Fsm>, super::failure::Ignored>,
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
                            self.nodes[d as usize].health.on_defer(since, &self.fcfg)
                        } else {
                            self.nodes[d as usize].health.on_cut_off(self.now_ms)
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
                        self.nodes[d as usize].health = Health::Dead(cause);
                        let peers = self.topo.peers_of(d);
                        self.remove(d, true);
                        out.push(Effect::Forget {
                            to: self.nodes[d as usize].addr,
                        });
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
                    let stale = std::mem::take(&mut self.nodes[d as usize].stale_peers);
                    if !stale.is_empty() {
                        // Whole, not netted against the starts that follow:
                        // what it does now is unknown (rule 1).
                        self.nodes[d as usize].out.push(Instruction::Heartbeat {
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
        let n = &mut self.nodes[d as usize];
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
    fn remove(&mut self, d: NodeId, remember_peers: bool) {
        let peers: Vec<SocketAddr> = if remember_peers {
            self.topo
                .peers_of(d)
                .into_iter()
                .map(|p| self.nodes[p as usize].addr)
                .collect()
        } else {
            Vec::new()
        };
        let i = self.topo.leave(d);
        self.apply_hb(&i);
        let n = &mut self.nodes[d as usize];
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
        n.stale_peers = peers;
        n.out.reset();
    }

    fn probe(&mut self, id: NodeId) {
        let n = &mut self.nodes[id as usize];
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
    }

    /// Up to [`GROUP_SAMPLE`] other members of `d`'s group, in ring order
    /// after it.
    fn group_sample(&self, d: NodeId) -> Vec<NodeId> {
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
    fn group_silent(&self, d: NodeId, since: u64) -> bool {
        let sample = self.group_sample(d);
        !sample.is_empty()
            && sample
                .iter()
                .all(|m| self.nodes[*m as usize].last_heard_ms < since)
    }

    /// Many suspects behind one switch within one window name it.
    fn note_suspect(&mut self, d: NodeId, out: &mut Vec<Effect>) {
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

    fn apply_hb(&mut self, list: &[HbInstruction]) {
        for i in list {
            let peers: Vec<SocketAddr> = i
                .peers
                .iter()
                .map(|p| self.nodes[*p as usize].addr)
                .collect();
            self.nodes[i.to as usize].out.push_hb(i.start, &peers);
            self.mark_dirty(i.to);
        }
    }

    fn mark_dirty(&mut self, id: NodeId) {
        let n = &mut self.nodes[id as usize];
        if !n.dirty {
            n.dirty = true;
            self.dirty.push(id);
        }
    }

    fn flush(&mut self, out: &mut Vec<Effect>) {
        for node in self.topo.take_touched() {
            out.push(Effect::Ring {
                node,
                links: self.topo.links_of(node).map(Box::new),
            });
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            self.nodes[id as usize].dirty = false;
            for (r, i) in self.nodes[id as usize].out.promote() {
                out.push(self.send_effect(id, r, i));
            }
        }
        self.dirty = dirty;
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
        }
    }
}

/// The subnet (`network/prefix`) of the interface address in a netconfig
/// JSON that equals `ip`, if any.
pub fn subnet_of(netconfig: &str, ip: IpAddr) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(netconfig).ok()?;
    subnet_in(&v, ip)
}

fn subnet_in(v: &serde_json::Value, ip: IpAddr) -> Option<String> {
    for (_, iface) in v.get("data")?.as_object()? {
        let Some(addrs) = iface.get("ipaddrs").and_then(|a| a.as_object()) else {
            continue;
        };
        for cidr in addrs.keys() {
            let Some((a, p)) = cidr.split_once('/') else {
                continue;
            };
            let (Ok(a), Ok(p)) = (a.parse::<IpAddr>(), p.parse::<u8>()) else {
                continue;
            };
            if a != ip {
                continue;
            }
            return match a {
                IpAddr::V4(v4) if p <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                    let net = std::net::Ipv4Addr::from(u32::from(v4) & mask);
                    Some(format!("{net}/{p}"))
                }
                IpAddr::V6(v6) if p <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                    let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
                    Some(format!("{net}/{p}"))
                }
                _ => None,
            };
        }
    }
    None
}

/// The interfaces of a netconfig JSON that may hang off a switch: not
/// loopback (`lo`, or of type 772), carrier up (`true` or `1`, as the nanoprobe's script and ours
/// write it), a name a kernel could have given (at most 15 bytes, no `/`);
/// at most [`NICS_MAX`], sorted.
pub fn switch_nics_of(netconfig: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(netconfig)
        .map(|v| switch_nics_in(&v))
        .unwrap_or_default()
}

fn switch_nics_in(v: &serde_json::Value) -> Vec<String> {
    let Some(data) = v.get("data").and_then(|d| d.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, iface) in data {
        let carrier = match iface.get("carrier") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
            _ => false,
        };
        // ARPHRD_LOOPBACK is 772 (`type` in /sys/class/net, which both the
        // nanoprobe's netconfig and ours copy).
        let loopback = name == "lo" || iface.get("type").and_then(|t| t.as_u64()) == Some(772);
        let sane = !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'"');
        if carrier && !loopback && sane {
            out.push(name.clone());
            if out.len() == NICS_MAX {
                break;
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::switch::lldp_frame;

    const CMA: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)), 1984);

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 1984))
    }

    /// The last octet of a test address.
    fn host_of(a: SocketAddr) -> u8 {
        match a.ip() {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(_) => unreachable!("test addresses are IPv4"),
        }
    }

    /// A decider and a clock, with helpers that feed it messages.
    struct T {
        d: Decider,
        lsn: u64,
        now: u64,
        out: Vec<Effect>,
    }

    impl T {
        fn new() -> T {
            T {
                d: Decider::new(DeciderConfig::new(CMA, 7)),
                lsn: 0,
                now: 1000,
                out: Vec::new(),
            }
        }

        fn feed(&mut self, from: SocketAddr, reqid: Option<ReqId>, m: Message<'_>) -> Vec<Effect> {
            self.lsn += 1;
            self.out.clear();
            self.d.handle(
                &Input {
                    lsn: self.lsn,
                    time_ms: self.now,
                    event: Event::Received {
                        from,
                        reqid,
                        message: m,
                    },
                },
                &mut self.out,
            );
            self.d.check().unwrap();
            self.out.clone()
        }

        fn tick(&mut self, at: u64) -> Vec<Effect> {
            self.now = at;
            self.lsn += 1;
            self.out.clear();
            self.d.handle(
                &Input {
                    lsn: self.lsn,
                    time_ms: at,
                    event: Event::Tick,
                },
                &mut self.out,
            );
            self.d.check().unwrap();
            self.out.clone()
        }

        fn startup(&mut self, n: u8, wallclock: u64) -> Vec<Effect> {
            self.startup_with(n, wallclock, None)
        }

        /// STARTUP announcing `features` (ours) or none (a nanoprobe).
        fn startup_with(&mut self, n: u8, wallclock: u64, features: Option<&str>) -> Vec<Effect> {
            let host = format!("host{n}");
            let net =
                format!("{{\"data\":{{\"eth0\":{{\"ipaddrs\":{{\"10.0.0.{n}/24\":{{}}}}}}}}}}");
            self.feed(
                addr(n),
                None,
                Message::Startup(Startup {
                    hostname: &host,
                    listen: addr(n),
                    wallclock_us: wallclock,
                    netconfig: &net,
                    key: None,
                    features,
                }),
            )
        }

        /// ACKs everything in flight to every node until queues are empty.
        fn settle(&mut self) {
            for _ in 0..50 {
                let mut acks = Vec::new();
                for n in self.d.nodes() {
                    if let Some((r, _)) = n.out.inflight().last()
                        && n.in_service()
                    {
                        acks.push((n.addr, *r));
                    }
                }
                if acks.is_empty() {
                    return;
                }
                for (a, r) in acks {
                    self.ack(a, r);
                }
            }
            panic!("queues never drained");
        }

        fn ack(&mut self, from: SocketAddr, request: u64) -> Vec<Effect> {
            // The session of the instructions it ACKs: an agent's ACK
            // echoes their REQID.
            let session = self
                .d
                .node_at(from)
                .map_or(7, |i| self.d.nodes()[i as usize].out.session(7));
            let r = ReqId {
                session,
                request,
                queue: 0,
            };
            self.feed(from, Some(r), Message::Ack)
        }

        fn report(&mut self, from: u8, m: Message<'_>) -> Vec<Effect> {
            self.lsn += 1;
            let r = ReqId {
                session: 99,
                request: self.lsn,
                queue: 0,
            };
            self.feed(addr(from), Some(r), m)
        }

        fn id(&self, n: u8) -> NodeId {
            self.d.node_at(addr(n)).unwrap()
        }

        fn health(&self, n: u8) -> Health {
            self.d.node(self.id(n)).unwrap().health
        }
    }

    fn notices(e: &[Effect]) -> Vec<Notice> {
        e.iter()
            .filter_map(|e| match e {
                Effect::Notice(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn sends_to(e: &[Effect], to: SocketAddr) -> Vec<Instruction> {
        e.iter()
            .filter_map(|e| match e {
                Effect::Send {
                    to: t, instruction, ..
                } if *t == to => Some(instruction.clone()),
                _ => None,
            })
            .collect()
    }

    /// Four nodes in one subnet ring, settled.
    fn fleet(k: u8) -> T {
        let mut t = T::new();
        for n in 1..=k {
            t.startup(n, 100 + u64::from(n));
            t.settle();
        }
        t
    }

    #[test]
    fn startup_gets_config_then_ackstartup_then_its_ring() {
        let mut t = T::new();
        let e = t.startup(1, 5);
        assert_eq!(notices(&e), vec![Notice::Joined(0)]);
        // One in flight until the first ACK.
        assert_eq!(
            sends_to(&e, addr(1)),
            vec![Instruction::SetConfig(t.d.config().config_json())]
        );
        let e = t.ack(addr(1), 1);
        assert_eq!(sends_to(&e, addr(1)), vec![Instruction::AckStartup]);
        let e = t.startup(2, 6);
        assert_eq!(
            sends_to(&e, addr(1)),
            vec![Instruction::Heartbeat {
                start: true,
                peers: vec![addr(2)]
            }]
        );
        let row = e.iter().find_map(|e| match e {
            Effect::Row(r) => Some(r.clone()),
            _ => None,
        });
        assert_eq!(
            row.unwrap().group,
            Some(GroupKey::Subnet("10.0.0.0/24".into()))
        );
    }

    #[test]
    fn a_repeated_startup_is_answered_with_ackstartup_only() {
        let mut t = fleet(3);
        let e = t.startup(2, 102);
        assert!(notices(&e).is_empty());
        assert_eq!(sends_to(&e, addr(2)), vec![Instruction::AckStartup]);
        assert_eq!(
            e.iter()
                .filter(|e| matches!(e, Effect::Send { .. }))
                .count(),
            1
        );
        // Again while that one is in flight: nothing more.
        let e = t.startup(2, 102);
        assert!(e.is_empty());
        assert_eq!(t.d.counters().duplicate_startup, 2);
    }

    #[test]
    fn a_new_wallclock_is_a_restart() {
        let mut t = fleet(4);
        let id = t.id(2);
        let e = t.startup(2, 999);
        assert_eq!(notices(&e), vec![Notice::Restarted(id)]);
        assert!(e.contains(&Effect::Forget { to: addr(2) }));
        // Its old neighbours stop expecting it (the old incarnation).
        let stops: Vec<_> = [1u8, 3]
            .iter()
            .flat_map(|n| sends_to(&e, addr(*n)))
            .collect();
        assert!(stops.iter().any(
            |i| matches!(i, Instruction::Heartbeat { start: false, peers } if peers.contains(&addr(2)))
        ));
        assert_eq!(t.d.node(id).unwrap().incarnation, 999);
        t.settle();
    }

    #[test]
    fn two_monitors_confirm_a_death_and_the_ring_closes() {
        let mut t = fleet(4);
        // Ring order 1 2 3 4: node 2 is watched by 1 and 3.
        let e = t.report(1, Message::HbDead { peer: addr(2) });
        assert_eq!(
            notices(&e),
            vec![Notice::Suspected {
                node: t.id(2),
                reporter: t.id(1)
            }]
        );
        assert_eq!(sends_to(&e, addr(2)), vec![Instruction::Probe]);
        t.now += 1500;
        let e = t.report(3, Message::HbDead { peer: addr(2) });
        assert!(notices(&e).contains(&Notice::Dead {
            node: t.id(2),
            cause: DeathCause::TwoMonitors {
                first: t.id(1),
                second: t.id(3)
            }
        }));
        assert!(e.contains(&Effect::Forget { to: addr(2) }));
        assert!(!t.d.topology().adjacent(t.id(1), t.id(2)));
        assert!(t.d.topology().adjacent(t.id(1), t.id(3)));
    }

    #[test]
    fn a_probe_answer_names_a_path_fault() {
        let mut t = fleet(4);
        t.report(1, Message::HbDead { peer: addr(2) });
        let probe = t.d.node(t.id(2)).unwrap().out.inflight().last().unwrap().0;
        let e = t.ack(addr(2), probe);
        assert_eq!(
            notices(&e),
            vec![Notice::PathFault {
                node: t.id(2),
                reporter: t.id(1)
            }]
        );
        assert_eq!(t.health(2), Health::Up);
    }

    #[test]
    fn a_silent_probe_confirms_after_the_deadline() {
        let mut t = fleet(4);
        t.report(1, Message::HbDead { peer: addr(2) });
        let deadline = t.d.next_deadline_ms().unwrap();
        assert!(notices(&t.tick(deadline - 1)).is_empty());
        // Window over: disputed; then the probe deadline.
        let mut died = false;
        while let Some(at) = t.d.next_deadline_ms() {
            died |= notices(&t.tick(at))
                .iter()
                .any(|n| matches!(n, Notice::Dead { .. }));
        }
        assert!(died);
        assert!(matches!(
            t.health(2),
            Health::Dead(DeathCause::Probe { .. })
        ));
    }

    #[test]
    fn back_alive_cancels_the_suspicion() {
        let mut t = fleet(4);
        t.report(1, Message::HbDead { peer: addr(2) });
        let e = t.report(
            1,
            Message::HbBackAlive {
                peer: addr(2),
                elapsed_us: 0,
            },
        );
        assert_eq!(
            notices(&e),
            vec![Notice::FalseAlarm {
                node: t.id(2),
                reporter: t.id(1)
            }]
        );
    }

    #[test]
    fn a_report_from_a_peer_not_yet_watching_only_probes() {
        let mut t = fleet(3);
        // 4 joins; its instructions are not ACKed yet.
        t.startup(4, 104);
        t.report(1, Message::HbDead { peer: addr(4) });
        assert!(matches!(t.health(4), Health::Disputed { .. }));
        // A second such report cannot confirm.
        let e = t.report(3, Message::HbDead { peer: addr(4) });
        assert!(!notices(&e).iter().any(|n| matches!(n, Notice::Dead { .. })));
    }

    #[test]
    fn shutdown_leaves_cleanly_and_a_martian_from_it_is_told_to_stop() {
        let mut t = fleet(4);
        let e = t.report(2, Message::HbShutdown { hostname: "host2" });
        assert_eq!(notices(&e), vec![Notice::Left(t.id(2))]);
        assert_eq!(t.health(2), Health::Left);
        t.settle();
        let e = t.report(1, Message::HbMartian { peer: addr(2) });
        assert!(notices(&e).is_empty());
        assert_eq!(
            sends_to(&e, addr(2)),
            vec![Instruction::StopSending(vec![addr(1)])]
        );
        // Reports about a node that left change nothing.
        let e = t.report(3, Message::HbDead { peer: addr(2) });
        assert!(notices(&e).is_empty());
    }

    #[test]
    fn martians_between_live_nodes_are_repaired_once_per_interval() {
        // Five nodes, one group: a ring 1-2-3-4-5; 1 and 3 are no
        // neighbours.
        let mut t = fleet(5);
        assert!(!t.d.topology().adjacent(t.id(1), t.id(3)));
        // 1 hears 3: 3 has a sender too many and is told to stop.
        let e = t.report(1, Message::HbMartian { peer: addr(3) });
        assert_eq!(
            sends_to(&e, addr(3)),
            vec![Instruction::StopSending(vec![addr(1)])]
        );
        assert_eq!(
            notices(&e),
            vec![Notice::Drift {
                node: t.id(3),
                repairs: 1
            }]
        );
        t.settle();
        // Again within the rate limit: counted, not repeated.
        t.now += 10_000;
        let e = t.report(1, Message::HbMartian { peer: addr(3) });
        assert!(sends_to(&e, addr(3)).is_empty());
        // 1 should watch 2 yet hears it as a martian: it lost its listener
        // and is told EXPECTHB again.
        assert!(t.d.topology().adjacent(t.id(1), t.id(2)));
        let e = t.report(1, Message::HbMartian { peer: addr(2) });
        assert_eq!(
            sends_to(&e, addr(1)),
            vec![Instruction::Half {
                send: false,
                start: true,
                peers: vec![addr(2)]
            }]
        );
        t.settle();
        // After the interval the pair may be repaired again.
        t.now += 30_000;
        let e = t.report(1, Message::HbMartian { peer: addr(3) });
        assert_eq!(sends_to(&e, addr(3)).len(), 1);
        assert_eq!(t.d.counters().martian_repairs, 3);
        assert_eq!(t.d.node(t.id(3)).unwrap().drift, 2);
    }

    #[test]
    fn a_martian_during_a_ring_change_is_left_alone() {
        let mut t = fleet(4);
        // A join in flight: 5's instructions are not yet ACKed.
        t.startup(5, 105);
        let e = t.report(1, Message::HbMartian { peer: addr(5) });
        assert!(sends_to(&e, addr(5)).is_empty() && sends_to(&e, addr(1)).is_empty());
        assert_eq!(t.d.counters().martian_repairs, 0);
    }

    #[test]
    fn a_martian_resurrects_the_dead_and_its_old_heartbeats_are_stopped_first() {
        let mut t = fleet(4);
        t.report(1, Message::HbDead { peer: addr(2) });
        t.report(3, Message::HbDead { peer: addr(2) });
        assert!(matches!(t.health(2), Health::Dead(_)));
        t.settle();
        let e = t.report(1, Message::HbMartian { peer: addr(2) });
        assert_eq!(notices(&e), vec![Notice::Resurrected(t.id(2))]);
        let first = &sends_to(&e, addr(2))[0];
        assert!(matches!(first, Instruction::Heartbeat { start: false, .. }));
        t.settle();
        assert_eq!(t.health(2), Health::Up);
        // A martian about a live, settled node is repaired, not a
        // resurrection.
        let e = t.report(1, Message::HbMartian { peer: addr(3) });
        assert!(!notices(&e).contains(&Notice::Resurrected(t.id(3))));
        assert_eq!(t.d.counters().martian_repairs, 1);
    }

    #[test]
    fn swdiscover_moves_a_node_into_its_switch_ring() {
        let mut t = fleet(3);
        let frame = lldp_frame([2, 0, 0, 0, 0, 1], "sw-a", "p1", "edge");
        let e = t.report(
            2,
            Message::SwDiscover(crate::classify::SwDiscover {
                wallclock_us: 0,
                pktdata: &frame,
                interface: "eth0",
                hostname: "host2",
                discname: "lldp",
            }),
        );
        assert_eq!(notices(&e), vec![Notice::Moved(t.id(2))]);
        assert_eq!(
            t.d.topology().group_of(t.id(2)),
            Some(&GroupKey::Switch("sw-a".into()))
        );
        let e = t.report(
            2,
            Message::SwDiscover(crate::classify::SwDiscover {
                wallclock_us: 0,
                pktdata: b"garbage",
                interface: "eth0",
                hostname: "host2",
                discname: "lldp",
            }),
        );
        assert!(e.is_empty());
        assert_eq!(t.d.counters().bad_switch_frame, 1);
        t.settle();
    }

    /// Switch a: hosts 1..=4 (two representatives); switch b: 5..=8.
    fn two_switches() -> T {
        let mut t = T::new();
        for n in 1..=8u8 {
            t.startup(n, u64::from(n));
            t.settle();
            let sw = if n <= 4 { "sw-a" } else { "sw-b" };
            let frame = lldp_frame([2, 0, 0, 0, 0, n], sw, "p", "edge");
            t.report(
                n,
                Message::SwDiscover(crate::classify::SwDiscover {
                    wallclock_us: 0,
                    pktdata: &frame,
                    interface: "eth0",
                    hostname: "",
                    discname: "lldp",
                }),
            );
            t.settle();
        }
        t
    }

    /// A representative of switch a and its monitors outside it.
    fn rep_and_outside_monitors(t: &T) -> (u8, Vec<u8>) {
        let topo = t.d.topology();
        let rep = (1..=4u8).find(|n| topo.is_rep(t.id(*n))).unwrap();
        let monitors: Vec<u8> = topo
            .top()
            .neighbours(t.id(rep))
            .iter()
            .map(|m| host_of(t.d.node(*m).unwrap().addr))
            .filter(|h| *h > 4)
            .collect();
        (rep, monitors)
    }

    #[test]
    fn two_monitors_at_once_wait_for_the_group_before_naming_a_switch_fault() {
        // Both outside monitors report the representative within a
        // millisecond: its group was probed at the first report and could
        // not have answered yet.
        for group_answers in [true, false] {
            let mut t = two_switches();
            let (rep, monitors) = rep_and_outside_monitors(&t);
            assert_eq!(monitors.len(), 2, "a top ring of four");
            t.now += 30_000;
            t.report(monitors[0], Message::HbDead { peer: addr(rep) });
            t.report(monitors[1], Message::HbDead { peer: addr(rep) });
            assert!(
                matches!(t.health(rep), Health::Disputed { .. }),
                "{:?}",
                t.health(rep)
            );
            if group_answers {
                // The group answers its probes: the switch is up, the
                // representative is dead, by the two monitors.
                t.now += 50;
                let mut all = Vec::new();
                for n in (1..=4u8).filter(|n| *n != rep) {
                    let probe =
                        t.d.node(t.id(n))
                            .unwrap()
                            .out
                            .inflight()
                            .find(|(_, i)| *i == Instruction::Probe)
                            .map(|(r, _)| *r);
                    if let Some(r) = probe {
                        all.extend(notices(&t.ack(addr(n), r)));
                    }
                }
                let at = t.d.next_deadline_ms().unwrap();
                all.extend(notices(&t.tick(at)));
                assert!(
                    all.iter().any(|n| matches!(
                        n,
                        Notice::Dead {
                            cause: DeathCause::TwoMonitors { .. },
                            ..
                        }
                    )),
                    "{all:?}"
                );
                assert!(!all.iter().any(|n| matches!(n, Notice::SwitchFault { .. })));
            } else {
                // Silent through the window: the switch is cut off.
                let at = t.d.next_deadline_ms().unwrap();
                let all = notices(&t.tick(at));
                assert!(
                    all.iter().any(|n| matches!(n, Notice::SwitchFault { .. })),
                    "{all:?}"
                );
                assert!(!all.iter().any(|n| matches!(n, Notice::Dead { .. })));
                assert!(matches!(t.health(rep), Health::Unreachable { .. }));
            }
        }
    }

    #[test]
    fn a_representative_reported_with_its_group_silent_is_cut_off_not_dead() {
        let mut t = two_switches();
        let topo = t.d.topology();
        let rep = (1..=4u8).find(|n| topo.is_rep(t.id(*n))).unwrap();
        let monitors: Vec<SocketAddr> = topo
            .top()
            .neighbours(t.id(rep))
            .iter()
            .map(|m| t.d.node(*m).unwrap().addr)
            .filter(|a| host_of(*a) > 4)
            .collect();
        assert!(!monitors.is_empty());
        // Switch a goes dark: only outside monitors report, nobody in it
        // answers a probe.
        t.now += 30_000;
        let m0 = host_of(monitors[0]);
        t.report(m0, Message::HbDead { peer: addr(rep) });
        let mut all = Vec::new();
        for _ in 0..4 {
            if let Some(at) = t.d.next_deadline_ms() {
                all.extend(notices(&t.tick(at)));
            }
        }
        assert!(all.contains(&Notice::CutOff(t.id(rep))), "{all:?}");
        assert!(all.iter().any(|n| matches!(
            n,
            Notice::SwitchFault { group, .. } if *group == GroupKey::Switch("sw-a".into())
        )));
        assert!(!all.iter().any(|n| matches!(n, Notice::Dead { .. })));
        // Every member of switch a is unreachable, one verdict names them.
        for n in 1..=4u8 {
            assert!(
                matches!(t.health(n), Health::Unreachable { .. }),
                "host{n}: {:?}",
                t.health(n)
            );
        }
        let fault = all
            .iter()
            .find_map(|n| match n {
                Notice::SwitchFault {
                    nodes, reported, ..
                } => Some((nodes.len(), reported.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!(fault.0, 4);
        assert!(fault.1.contains(&t.id(rep)));
        // The switch comes back: a member is heard (an HBDEAD about its
        // switch-mate, queued during the cut and resent now); the switch
        // is healed, every member must answer a probe.
        let other = (1..=4u8).find(|n| *n != rep).unwrap();
        let mate = (1..=4u8).find(|n| *n != rep && *n != other).unwrap();
        t.now += 10_000;
        let e = t.report(other, Message::HbDead { peer: addr(mate) });
        assert!(
            notices(&e)
                .iter()
                .any(|n| matches!(n, Notice::Healed { nodes, .. } if nodes.len() == 4)),
            "{e:?}"
        );
        assert!(matches!(
            t.health(rep),
            Health::Unreachable {
                probe_until_ms: Some(_),
                ..
            }
        ));
        // A second switch-mate's report about the same node, also made
        // during the cut, pairs with nothing.
        let third = (1..=4u8).find(|n| ![rep, other, mate].contains(n)).unwrap();
        let e = t.report(third, Message::HbDead { peer: addr(mate) });
        assert!(!notices(&e).iter().any(|n| matches!(n, Notice::Dead { .. })));
        assert!(t.d.counters().reports_across_cut >= 1);
        // Each answers its probe: back in service, nobody ever dead.
        for n in [rep, mate] {
            let probe =
                t.d.node(t.id(n))
                    .unwrap()
                    .out
                    .inflight()
                    .find(|(_, i)| *i == Instruction::Probe)
                    .map(|(r, _)| *r)
                    .expect("probed");
            let e = t.ack(addr(n), probe);
            assert!(
                notices(&e)
                    .iter()
                    .any(|x| matches!(x, Notice::Reconnected(i) if *i == t.id(n))),
                "{e:?}"
            );
        }
        for n in 1..=8u8 {
            assert_eq!(t.health(n), Health::Up, "host{n}");
        }
        // Later reports still made across the cut, once more: a probe, no
        // verdict; answered without a path fault.
        t.now += 1000;
        let e = t.report(5, Message::HbDead { peer: addr(other) });
        assert!(notices(&e).is_empty(), "{e:?}");
        t.settle();
        assert_eq!(t.health(other), Health::Up);
        // One dead time plus the window after the heal, reports count again.
        t.now += 40_000;
        let e = t.report(other, Message::HbDead { peer: addr(mate) });
        assert!(
            notices(&e)
                .iter()
                .any(|n| matches!(n, Notice::Suspected { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn a_dead_representative_whose_group_answers_is_confirmed() {
        let mut t = T::new();
        for n in 1..=6u8 {
            t.startup(n, u64::from(n));
            t.settle();
        }
        // One subnet group: the representatives are ring members too; a
        // report from a group neighbour plus a silent probe confirms.
        let rep = (1..=6u8).find(|n| t.d.topology().is_rep(t.id(*n))).unwrap();
        let watcher = t.d.topology().peers_of(t.id(rep))[0];
        let w = host_of(t.d.node(watcher).unwrap().addr);
        t.report(w, Message::HbDead { peer: addr(rep) });
        // The sampled members answer their probes.
        for n in 1..=6u8 {
            if n != rep {
                t.report(
                    n,
                    Message::HbBackAlive {
                        peer: addr(n),
                        elapsed_us: 0,
                    },
                );
            }
        }
        let mut all = Vec::new();
        for _ in 0..4 {
            if let Some(at) = t.d.next_deadline_ms() {
                all.extend(notices(&t.tick(at)));
            }
        }
        assert!(
            all.iter().any(|n| matches!(n, Notice::Dead { .. })),
            "{all:?}"
        );
    }

    /// A nanoprobe's receiving side (fsqueue.c): the first session seen is
    /// adopted at any request id, an older one dropped, a newer one starts
    /// afresh at request 1; within a session, only the next request id is
    /// delivered (later ones wait).
    #[derive(Default)]
    struct NanoInbound {
        session: u32,
        next: u64,
    }

    impl NanoInbound {
        fn deliver(&mut self, r: ReqId) -> bool {
            if self.session == 0 {
                self.session = r.session;
                self.next = r.request;
            } else if r.session < self.session {
                return false;
            } else if r.session > self.session {
                self.session = r.session;
                self.next = 1;
            }
            if r.request != self.next {
                return false;
            }
            self.next += 1;
            true
        }
    }

    #[test]
    fn a_live_agent_declared_dead_is_moved_to_a_new_session_and_its_ring_reasserted() {
        let mut t = fleet(4);
        let mut nano = NanoInbound::default();
        for n in t.d.nodes() {
            if n.addr == addr(2) {
                // Everything it was sent so far was delivered, in order.
                for r in 1..n.out.next_request() {
                    assert!(nano.deliver(ReqId {
                        session: 7,
                        request: r,
                        queue: 0
                    }));
                }
            }
        }
        let old_peers = ring_peers(&t, t.id(2));
        // Node 2 is alive but both monitors call it dead (their heartbeats
        // from it were lost): declared dead. An instruction in flight to it
        // is dropped with its queue.
        t.report(1, Message::HbDead { peer: addr(2) });
        t.report(3, Message::HbDead { peer: addr(2) });
        assert!(matches!(t.health(2), Health::Dead(_)));
        // Its process still talks to the CMA: the verdict was wrong.
        t.now += 1000;
        let e = t.report(2, Message::HbDead { peer: addr(1) });
        assert!(notices(&e).contains(&Notice::Resurrected(t.id(2))), "{e:?}");
        let sent: Vec<(ReqId, Instruction)> = e
            .iter()
            .filter_map(|x| match x {
                Effect::Send {
                    to,
                    reqid,
                    instruction,
                    ..
                } if *to == addr(2) => Some((*reqid, instruction.clone())),
                _ => None,
            })
            .collect();
        // A new session from request 1, which the nanoprobe delivers at
        // once (it does not wait for the request ids dropped), and first
        // the STOP of whatever it heartbeated (rule 1), then its ring.
        assert_eq!(sent[0].0.session, 8);
        assert_eq!(sent[0].0.request, 1);
        assert!(nano.deliver(sent[0].0));
        match &sent[0].1 {
            Instruction::Heartbeat {
                start: false,
                peers,
            } => {
                for p in &old_peers {
                    assert!(peers.contains(p), "{p} not stopped: {peers:?}");
                }
            }
            other => panic!("{other:?}"),
        }
        t.settle();
        assert_eq!(t.health(2), Health::Up);
        assert!(!ring_peers(&t, t.id(2)).is_empty());
        // Its ACKs of the new session count; one of the old session is
        // stray.
        let stray = t.d.counters().stray_ack;
        t.feed(
            addr(2),
            Some(ReqId {
                session: 7,
                request: 1,
                queue: 0,
            }),
            Message::Ack,
        );
        assert_eq!(t.d.counters().stray_ack, stray + 1);
    }

    #[test]
    fn switch_discovery_is_asked_for_every_nic_with_carrier() {
        let mut t = T::new();
        let net = r#"{"data":{"eth0":{"carrier":true,"ipaddrs":{"10.0.0.1/24":{}}},"eth1":{"carrier":1,"ipaddrs":{}},"eth2":{"carrier":false},"lo":{"carrier":true,"ipaddrs":{"127.0.0.1/8":{}}},"lo2":{"carrier":true,"type":772}}}"#;
        let startup = |t: &mut T, wallclock: u64| {
            t.feed(
                addr(1),
                None,
                Message::Startup(Startup {
                    hostname: "host1",
                    listen: addr(1),
                    wallclock_us: wallclock,
                    netconfig: net,
                    key: None,
                    features: None,
                }),
            );
        };
        let asked = |t: &T| -> Vec<Instruction> {
            let n = t.d.node(t.id(1)).unwrap();
            n.out
                .inflight()
                .map(|x| x.1.clone())
                .filter(|i| matches!(i, Instruction::SwitchDiscovery(_)))
                .collect()
        };
        startup(&mut t, 1);
        // SETCONFIG, ACKSTARTUP, then the discovery: ACK one by one.
        for r in 1..=2 {
            t.ack(addr(1), r);
        }
        assert_eq!(
            asked(&t),
            vec![Instruction::SwitchDiscovery(vec![
                "eth0".into(),
                "eth1".into()
            ])]
        );
        t.settle();
        // A later netconfig names a new NIC: asked for that one only.
        let later = r#"{"discovertype":"netconfig","data":{"eth0":{"carrier":true},"eth3":{"carrier":true}}}"#;
        let e = t.report(
            1,
            Message::JsDiscovery {
                wallclock_us: None,
                json: later,
            },
        );
        assert_eq!(
            sends_to(&e, addr(1)),
            vec![Instruction::SwitchDiscovery(vec!["eth3".into()])]
        );
        t.settle();
        // A restart asks again.
        startup(&mut t, 2);
        t.ack(addr(1), 1);
        t.ack(addr(1), 2);
        assert_eq!(asked(&t).len(), 1);
        assert_eq!(
            switch_nics_of("not json"),
            Vec::<String>::new(),
            "garbage names no NIC"
        );
    }

    #[test]
    fn connshut_resets_the_agent_and_is_answered_sequenced() {
        let mut t = fleet(2);
        let e = t.report(1, Message::ConnShut);
        assert_eq!(sends_to(&e, addr(1)), vec![Instruction::ConnShut]);
        assert!(!e.iter().any(|x| matches!(x, Effect::Forget { .. })));
        assert_eq!(t.d.node(t.id(1)).unwrap().inbound, None);
    }

    #[test]
    fn a_startup_for_another_address_is_refused() {
        let mut t = fleet(2);
        // "host9" claims node 1's address from elsewhere.
        let e = t.feed(
            addr(9),
            None,
            Message::Startup(Startup {
                hostname: "host9",
                listen: addr(1),
                wallclock_us: 1,
                netconfig: "{}",
                key: None,
                features: None,
            }),
        );
        assert!(e.is_empty());
        assert_eq!(t.d.counters().startup_mismatch, 1);
        assert_eq!(t.health(1), Health::Up);
    }

    /// A STARTUP for host1 from addr(9) (a clone of host1 elsewhere).
    fn clone_startup(t: &mut T, wallclock: u64) -> Vec<Effect> {
        let net = "{}";
        t.feed(
            addr(9),
            None,
            Message::Startup(Startup {
                hostname: "host1",
                listen: addr(9),
                wallclock_us: wallclock,
                netconfig: net,
                key: None,
                features: None,
            }),
        )
    }

    #[test]
    fn a_clone_of_a_live_host_is_refused_once_the_host_answers() {
        let mut t = fleet(3);
        let e = clone_startup(&mut t, 99);
        // Nothing for the clone; the node where it is gets probed.
        assert!(sends_to(&e, addr(9)).is_empty());
        assert_eq!(sends_to(&e, addr(1)), vec![Instruction::Probe]);
        let probe = t.d.node(t.id(1)).unwrap().out.next_request() - 1;
        let e = t.ack(addr(1), probe);
        assert_eq!(
            notices(&e),
            vec![Notice::Conflict {
                node: t.id(1),
                kept: addr(1),
                refused: addr(9),
            }]
        );
        // Later STARTUPs of the clone change nothing, and say nothing.
        for k in 1..5 {
            t.now += 5_000 * k;
            let e = clone_startup(&mut t, 99 + k);
            assert!(e.is_empty(), "{e:?}");
        }
        let n = t.d.node(t.id(1)).unwrap();
        assert_eq!(
            (n.addr, n.health, n.conflict),
            (addr(1), Health::Up, Some(addr(9)))
        );
        assert_eq!(t.d.counters().name_conflicts, 5);
    }

    #[test]
    fn a_host_that_moved_takes_its_node_once_the_old_address_stays_silent() {
        let mut t = fleet(3);
        let id = t.id(1);
        clone_startup(&mut t, 99);
        // Within the window: still waiting.
        t.now += 1;
        assert!(clone_startup(&mut t, 99).is_empty());
        t.now += t.d.fcfg.window_ms;
        let e = clone_startup(&mut t, 99);
        assert!(notices(&e).contains(&Notice::Restarted(id)));
        assert_eq!(t.d.node(id).unwrap().addr, addr(9));
        assert!(
            matches!(sends_to(&e, addr(9))[..], [Instruction::SetConfig(_)]),
            "{e:?}"
        );
    }

    #[test]
    fn an_empty_or_overlong_host_name_is_refused_and_counted() {
        let mut t = T::new();
        for host in [String::new(), "h".repeat(HOSTNAME_MAX + 1)] {
            let e = t.feed(
                addr(1),
                None,
                Message::Startup(Startup {
                    hostname: &host,
                    listen: addr(1),
                    wallclock_us: 1,
                    netconfig: "{}",
                    key: None,
                    features: None,
                }),
            );
            assert!(e.is_empty());
        }
        assert_eq!(t.d.counters().bad_hostname, 2);
        assert!(t.d.nodes().is_empty());
    }

    #[test]
    fn unknown_senders_and_peers_are_counted() {
        let mut t = fleet(2);
        t.feed(addr(50), None, Message::HbDead { peer: addr(1) });
        t.report(1, Message::HbDead { peer: addr(60) });
        t.ack(addr(1), 10_000);
        let c = t.d.counters();
        assert_eq!((c.unknown_sender, c.unknown_peer, c.stray_ack), (1, 1, 1));
    }

    #[test]
    fn receiving_positions_are_kept_for_the_io_thread() {
        let mut t = fleet(2);
        t.report(
            1,
            Message::HbLate {
                peer: addr(2),
                elapsed_us: 5,
            },
        );
        let pos = t.d.inbound_positions();
        assert!(pos.iter().any(|(a, s, _)| *a == addr(1) && *s == 99));
    }

    #[test]
    fn export_import_round_trip() {
        let mut t = fleet(5);
        t.report(1, Message::HbDead { peer: addr(2) });
        let back = Decider::import(&t.d.export()).unwrap();
        assert!(back == t.d);
        assert!(Decider::import(b"{not json").is_err());
    }

    /// Node n's HBSTATE as its agent would send it, having applied every
    /// instruction sent to it (`applied`: the last request id).
    fn hbstate(
        t: &mut T,
        n: u8,
        send: &[SocketAddr],
        expect: &[(SocketAddr, PeerStatus)],
    ) -> Vec<Effect> {
        let id = t.id(n);
        let node = t.d.node(id).unwrap();
        let applied = ReqId {
            session: 7,
            request: node.out.next_request() - 1,
            queue: 0,
        };
        let wallclock_us = node.incarnation;
        let states: Vec<crate::classify::PeerState> = expect
            .iter()
            .map(|&(peer, status)| crate::classify::PeerState {
                peer,
                status,
                since_ms: 0,
            })
            .collect();
        t.report(
            n,
            Message::HbState(HbState {
                wallclock_us,
                applied: Some(applied),
                expect: crate::classify::PeerStates::List(&states),
                send: crate::classify::Peers::List(send),
            }),
        )
    }

    /// The distinct peers node `id` heartbeats by the rings.
    fn ring_peers(t: &T, id: NodeId) -> Vec<SocketAddr> {
        let set: BTreeSet<SocketAddr> =
            t.d.topology()
                .peers_of(id)
                .iter()
                .map(|&p| t.d.node(p).unwrap().addr)
                .collect();
        set.into_iter().collect()
    }

    fn up(list: &[SocketAddr]) -> Vec<(SocketAddr, PeerStatus)> {
        list.iter().map(|&a| (a, PeerStatus::Up)).collect()
    }

    #[test]
    fn an_hbstate_matching_the_rings_changes_nothing() {
        let mut t = fleet(4);
        let peers: Vec<SocketAddr> = ring_peers(&t, t.id(1));
        let e = hbstate(&mut t, 1, &peers, &up(&peers));
        assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
        assert_eq!(t.d.counters().audits, 1);
        assert_eq!(t.d.counters().drift, 0);
        let n = t.d.node(t.id(1)).unwrap();
        assert_eq!(n.last_state.as_ref().unwrap().sending, peers.len() as u32);
    }

    #[test]
    fn drift_is_repaired_with_exactly_the_difference() {
        let mut t = fleet(6);
        let id = t.id(1);
        let peers: Vec<SocketAddr> = ring_peers(&t, id);
        let q = peers[1];
        let stranger = (2..=6).map(addr).find(|a| !peers.contains(a)).unwrap();
        // It lost p entirely, expects q without sending to it, and
        // heartbeats a node it should not.
        let e = hbstate(
            &mut t,
            1,
            &[stranger],
            &[(q, PeerStatus::Up), (stranger, PeerStatus::Up)],
        );
        // Every ring peer but q missing, q half, the stranger extra.
        let repairs = (peers.len() + 1) as u32;
        assert_eq!(notices(&e), vec![Notice::Drift { node: id, repairs }]);
        let mut got = sends_to(&e, addr(1));
        while let Some((r, _)) = t.d.node(id).unwrap().out.inflight().last().cloned() {
            let e = t.ack(addr(1), r);
            got.extend(sends_to(&e, addr(1)));
        }
        let n = t.d.node(id).unwrap();
        assert!(n.out.settled());
        assert_eq!(n.drift, 1);
        let missing: Vec<SocketAddr> = peers.iter().copied().filter(|&p| p != q).collect();
        let mut want = vec![
            Instruction::Heartbeat {
                start: false,
                peers: vec![stranger],
            },
            Instruction::Heartbeat {
                start: true,
                peers: missing,
            },
            Instruction::Half {
                send: true,
                start: true,
                peers: vec![q],
            },
        ];
        want.sort_by_key(|i| format!("{i:?}"));
        got.sort_by_key(|i| format!("{i:?}"));
        assert_eq!(got, want);
        // The next HBSTATE, taken after the repairs, matches.
        let e = hbstate(&mut t, 1, &peers, &up(&peers));
        assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
        assert_eq!(t.d.counters().drift, 1);
    }

    #[test]
    fn an_hbstate_older_than_the_instructions_in_flight_is_not_audited() {
        let mut t = fleet(3);
        // Node 4 joins: node 1 is told about it, not yet ACKed.
        t.startup(4, 104);
        let id = t.id(1);
        let n = t.d.node(id).unwrap();
        let in_flight = !n.out.settled();
        let state = ReqId {
            session: 7,
            request: n.out.acked(),
            queue: 0,
        };
        let wallclock_us = n.incarnation;
        let e = t.report(
            1,
            Message::HbState(HbState {
                wallclock_us,
                applied: Some(state),
                expect: crate::classify::PeerStates::List(&[]),
                send: crate::classify::Peers::List(&[]),
            }),
        );
        if in_flight {
            assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
            assert_eq!(t.d.counters().audits, 0);
            assert_eq!(t.d.counters().audits_deferred, 1);
        }
        // Another incarnation's state is never audited.
        t.settle();
        let e = t.report(
            1,
            Message::HbState(HbState {
                wallclock_us: 1,
                applied: None,
                expect: crate::classify::PeerStates::List(&[]),
                send: crate::classify::Peers::List(&[]),
            }),
        );
        assert!(sends_to(&e, addr(1)).is_empty());
        assert_eq!(t.d.counters().audits, 0);
    }

    #[test]
    fn a_dead_peer_in_hbstate_counts_as_a_report() {
        let mut t = fleet(4);
        let id = t.id(1);
        let peers: Vec<SocketAddr> = ring_peers(&t, id);
        let victim = peers[0];
        let mut states = up(&peers);
        states[0].1 = PeerStatus::Dead;
        hbstate(&mut t, 1, &peers, &states);
        let v = t.d.node_at(victim).unwrap();
        assert!(
            matches!(t.d.node(v).unwrap().health, Health::Suspect { .. }),
            "{:?}",
            t.d.node(v).unwrap().health
        );
    }

    #[test]
    fn resume_asks_the_agents_that_speak_hbstate() {
        let mut t = T::new();
        t.startup_with(1, 5, Some("hbstate,actionnak,stats"));
        t.startup(2, 6);
        t.settle();
        t.lsn += 1;
        let mut out = Vec::new();
        t.d.handle(
            &Input {
                lsn: t.lsn,
                time_ms: t.now,
                event: Event::Resume,
            },
            &mut out,
        );
        assert_eq!(sends_to(&out, addr(1)), vec![Instruction::StateRequest]);
        assert!(
            sends_to(&out, addr(2)).is_empty(),
            "a real nanoprobe is never asked"
        );
    }

    #[test]
    fn a_refusal_is_kept_and_told() {
        let mut t = fleet(2);
        let id = t.id(1);
        let e = nak(&mut t, 1);
        assert!(notices(&e).contains(&Notice::Refused {
            node: id,
            code: 2,
            reason: "too many peers".into()
        }));
        assert_eq!(
            t.d.node(id).unwrap().refused,
            Some((2, "too many peers".into()))
        );
    }

    fn nak(t: &mut T, n: u8) -> Vec<Effect> {
        t.report(
            n,
            Message::ActionNak {
                instr: ReqId {
                    session: 7,
                    request: 3,
                    queue: 0,
                },
                code: 2,
                reason: "too many peers",
            },
        )
    }

    #[test]
    fn refusals_are_retried_with_backoff_then_the_node_is_degraded() {
        let mut t = T::new();
        for n in 1..=5u8 {
            t.startup_with(n, 100 + u64::from(n), Some("hbstate,actionnak"));
            t.settle();
        }
        let id = t.id(1);
        // First refusal: an HBSTATEREQ 2 retransmit intervals (4 s) later.
        nak(&mut t, 1);
        assert!(t.d.node(id).unwrap().degraded.is_none());
        let e = t.tick(t.now + 3999);
        assert!(sends_to(&e, addr(1)).is_empty());
        let e = t.tick(t.now + 1);
        assert_eq!(sends_to(&e, addr(1)), vec![Instruction::StateRequest]);
        t.settle();
        // Second: 8 s.
        nak(&mut t, 1);
        let e = t.tick(t.now + 8000);
        assert_eq!(sends_to(&e, addr(1)), vec![Instruction::StateRequest]);
        t.settle();
        // Third: degraded, out of the rings; its ring closes around it.
        let e = nak(&mut t, 1);
        assert!(
            notices(&e)
                .iter()
                .any(|n| matches!(n, Notice::Degraded { node, .. } if *node == id))
        );
        let n = t.d.node(id).unwrap();
        assert!(n.degraded.as_deref().unwrap().contains("too many peers"));
        assert_eq!(n.health, Health::Up, "still in service");
        assert!(t.d.topology().group_of(id).is_none());
        t.settle();
        for m in 2..=5u8 {
            assert!(!ring_peers(&t, t.id(m)).contains(&addr(1)));
        }
        t.d.check().unwrap();
        // An HBSTATE from it now: it should heartbeat nobody.
        let e = hbstate(&mut t, 1, &[addr(2)], &up(&[addr(2)]));
        assert!(
            sends_to(&e, addr(1))
                .iter()
                .any(|i| matches!(i, Instruction::Heartbeat { start: false, .. }))
        );
        // A restart (new STARTUP) places it again.
        t.startup_with(1, 999, Some("hbstate"));
        assert!(t.d.node(id).unwrap().degraded.is_none());
        assert!(t.d.topology().group_of(id).is_some());
    }

    #[test]
    fn subnet_of_reads_netconfig() {
        let j = r#"{"data":{"eth0":{"ipaddrs":{"192.0.2.2/24":{},"fd00::2/64":{}}}}}"#;
        assert_eq!(
            subnet_of(j, "192.0.2.2".parse().unwrap()),
            Some("192.0.2.0/24".into())
        );
        assert_eq!(
            subnet_of(j, "fd00::2".parse().unwrap()),
            Some("fd00::/64".into())
        );
        assert_eq!(subnet_of(j, "192.0.2.3".parse().unwrap()), None);
        assert_eq!(subnet_of("not json", "192.0.2.2".parse().unwrap()), None);
        let odd = r#"{"data":{"eth0":{"ipaddrs":{"192.0.2.2/99":{},"x/24":{}}}}}"#;
        assert_eq!(subnet_of(odd, "192.0.2.2".parse().unwrap()), None);
    }
}
