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
    /// Transmissions of one instruction after which the CMA gives up on
    /// the agent (rule 9); 0 in logs written before it existed (never).
    #[serde(default)]
    pub give_up_after: u32,
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
            give_up_after: 12,
        }
    }

    /// How instructions are retransmitted and when the CMA gives up.
    pub fn retransmit_policy(&self) -> RetransmitPolicy {
        RetransmitPolicy::backing_off(self.retransmit_ms, self.give_up_after)
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
    /// Send a sequenced instruction (the decider asks again for each
    /// retransmission, and gives up after `give_up_after`).
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
    /// Registered, not yet in a ring: it has not ACKed its SETCONFIG.
    #[serde(default)]
    pub unconfirmed: bool,
    /// The CMA gave up on it (an instruction never ACKed) and has not
    /// heard from it since.
    #[serde(default)]
    pub gave_up: bool,
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
    /// Heard from again after being cut off, or after the CMA gave up on
    /// it.
    Reconnected(NodeId),
    /// It never ACKed an instruction sent `tries` times: shown unreachable,
    /// its queue dropped and nothing sent until it is heard from again (its
    /// rings unchanged: its monitors still watch it).
    GaveUp {
        /// The node.
        node: NodeId,
        /// Transmissions of the instruction it never ACKed.
        tries: u32,
    },
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
    /// Instructions sent again (not ACKed in time).
    #[serde(default)]
    pub retransmits: u64,
    /// Agents given up on (an instruction never ACKed after
    /// `give_up_after` transmissions).
    #[serde(default)]
    pub gave_up: u64,
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
            Event::Malformed { from, reqid } => {
                self.counters.malformed += 1;
                if let Some(&id) = self.by_addr.get(&normalize(from)) {
                    self.nodes.get_mut(id as usize).inbound = Some((reqid.session, reqid.request));
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
        if let Err(e) = self.check_changed(&out[first_effect..]) {
            panic!("decider invariant broken at LSN {}: {e}", input.lsn);
        }
    }

    /// The invariants that cost O(1) per node changed by a record (those
    /// with a row among `effects`): the indexes cover the registry, and a
    /// changed node is placed exactly when it is in service, in its group.
    pub fn check_changed(&self, effects: &[Effect]) -> Result<(), String> {
        if self.by_addr.len() != self.nodes.len() || self.by_host.len() != self.nodes.len() {
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

pub use crate::netconfig::{NICS_MAX, subnet_of, switch_nics_of};
pub use checkpoint::{CheckpointDelta, CheckpointRows, group_row_key};
use nodes::Nodes;
