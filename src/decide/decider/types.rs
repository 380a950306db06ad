//! What the decider exchanges with the rest of the daemon: its settings,
//! its inputs and effects, the rows and notices the store keeps, and its
//! counters.

use super::*;

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
    /// The same for a node that has not ACKed its SETCONFIG yet (it is
    /// then forgotten): fewer, so a STARTUP from a forged address draws
    /// little and holds its place briefly. 0 (logs written before it
    /// existed): `give_up_after`.
    #[serde(default)]
    pub join_give_up_after: u32,
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
            join_give_up_after: 4,
        }
    }

    /// How instructions are retransmitted and when the CMA gives up.
    pub fn retransmit_policy(&self) -> RetransmitPolicy {
        RetransmitPolicy::backing_off(self.retransmit_ms, self.give_up_after)
    }

    /// The same for a node that has not ACKed its SETCONFIG yet.
    pub fn join_policy(&self) -> RetransmitPolicy {
        match self.join_give_up_after {
            0 => self.retransmit_policy(),
            n => RetransmitPolicy::backing_off(self.retransmit_ms, n),
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
        /// The sender's key id, when it arrived encrypted under it.
        key: Option<&'a str>,
    },
    /// A sequenced FrameSet that was logged (and ACKed) but whose payload
    /// did not decode: only the receiving position moves.
    Malformed {
        /// Source address.
        from: SocketAddr,
        /// Its REQID.
        reqid: ReqId,
        /// The sender's key id, when it arrived encrypted under it.
        key: Option<&'a str>,
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
    /// No node holds `addr` any more: the daemon forgets the address's
    /// registration and receiving state, unless a STARTUP from it was
    /// logged after `lsn`. A registration that never ACKed its SETCONFIG
    /// (its slot is vacant: the store drops its rows, the id is reused), a
    /// STARTUP the decider refused (its source registered nothing), or an
    /// address a node moved away from.
    Forget {
        /// The vacant slot, if a node was forgotten.
        node: Option<NodeId>,
        /// The address it registered from.
        addr: SocketAddr,
        /// The record that decided it.
        lsn: u64,
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
    /// A registration that never ACKed its SETCONFIG, sent `tries` times
    /// (a STARTUP from a forged address, or an agent that cannot be
    /// reached): forgotten, its slot vacant (see [`Effect::Forget`]).
    Forgotten {
        /// The slot it had.
        node: NodeId,
        /// Its host name.
        hostname: String,
        /// The address it registered from.
        addr: SocketAddr,
        /// Transmissions of the SETCONFIG.
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
    /// FrameSets from a keyed node not under its key (DESIGN.md rule 9).
    #[serde(default)]
    pub unauthenticated: u64,
    /// STARTUPs refused for their key: a keyed host without its key or
    /// with another, or an address a live keyed node holds.
    #[serde(default)]
    pub key_refused: u64,
    /// Reports about a keyed node from a monitor without a key.
    #[serde(default)]
    pub unkeyed_reports: u64,
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
    /// Of those, registrations forgotten (never ACKed their SETCONFIG).
    #[serde(default)]
    pub forgotten: u64,
}
