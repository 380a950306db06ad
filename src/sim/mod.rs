//! A deterministic simulation of a fleet around the [`Decider`]: seeded,
//! on a virtual clock, entirely in memory (it never opens a socket).
//!
//! Agents behave as WIRE.md describes a nanoprobe: STARTUP every 5 s until
//! configured, heartbeat counts that each SENDEXPECTHB raises and each STOP
//! lowers (no de-duplication), in-order delivery of sequenced instructions
//! with duplicate re-ACKs, one report in flight with a 2 s retransmit (the
//! sending half `cma agent` uses, `reliable::Outbound`), and
//! HBDEAD after `dead_ms` of silence, HBBACKALIVE when heard again,
//! HBMARTIAN for unexpected heartbeats. The network between agents and the
//! CMA loses, duplicates, delays and so reorders datagrams; faults crash,
//! reboot and shut down nodes, cut a switch off, or break one direction of
//! one heartbeat path.
//!
//! Heartbeats themselves are modelled per path, not per datagram: a path
//! is either delivering or silent, and an agent reports a peer `dead_ms`
//! (plus or minus one interval of phase) after the path fell silent. Random
//! loss cannot silence a path: with 1 % loss, the chance of losing the 30
//! consecutive heartbeats of a dead time is 10^-60, so loss is applied to
//! the reports and instructions, where it matters.
//!
//! Rooms: this file holds the configuration, the event loop and the run;
//! `network.rs` the network and its faults; `agent.rs` the agent model;
//! `cma.rs` the CMA side around the decider; `checks.rs` what a run must
//! satisfy; `record.rs` the agents' messages and the recorded inputs;
//! `report.rs` what a run found.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::classify::switch::lldp_frame;
use crate::classify::{
    EncodeOptions, HbState, Logged, Message, PeerState, PeerStates, PeerStatus, Peers, ReqId,
    Startup, SwDiscover, classify, encode, write_logged,
};
use crate::decide::decider::{Decider, DeciderConfig, Effect, Event, Input, Notice};
use crate::decide::failure::Health;
use crate::decide::input::decide_logged;
use crate::decide::outq::Instruction;
use crate::decide::topology::GroupKey;
use crate::reliable::{Outbound, OutboundConfig};

/// The CMA's address inside the simulation (never used on a network).
mod agent;
mod checks;
mod cma;
mod network;
mod record;
mod report;

pub use record::{AgentMsg, RecordedInput};
pub use report::SimReport;

const CMA: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254)), 1984);
/// The reliable layer's retransmit interval.
const RETRANSMIT_MS: u64 = 2000;
/// A healed switch is checked this often until every agent settled.
const HEAL_CHECK_MS: u64 = 100;
/// Every agent of a healed switch matches its rings this long after the
/// heal at the latest: the CMA hears the switch again (a retransmit, up to
/// one interval), probes its members, and they answer; loss may cost a
/// few retransmits more.
pub const HEAL_SETTLE_MAX_MS: u64 = 5 * RETRANSMIT_MS;
/// How often a simulated switch sends LLDP.
const LLDP_PERIOD_MS: u64 = 5000;
/// Fleets up to this size get the decider's whole check after every step.
const FULL_CHECK_NODES_MAX: usize = 100;
/// STARTUP resend interval.
const STARTUP_RESEND_MS: u64 = 5000;

/// How many faults of each kind a run injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Nodes that crash for good.
    pub crash: usize,
    /// Nodes that crash and boot again 5-20 s later.
    pub reboot: usize,
    /// Nodes that shut down cleanly.
    pub shutdown: usize,
    /// Switches cut off from the rest for 45-60 s.
    pub partition: usize,
    /// Heartbeat paths broken in one direction for 40-60 s.
    pub link: usize,
    /// Agents that lose their heartbeat state (without a new STARTUP).
    pub wipe: usize,
    /// Agents frozen (SIGSTOP) for 45-60 s, then continuing with their
    /// state: declared dead meanwhile, they must be back in their rings
    /// soon after they resume.
    pub pause: usize,
}

impl Faults {
    /// Parses `crash=5,reboot=2,shutdown=1,partition=1,link=2` (any
    /// subset; `none` for none).
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        if s.trim() == "none" {
            return Ok(f);
        }
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault `{part}` is not kind=count"))?;
            let v: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("fault count `{v}` is not a number"))?;
            match k.trim() {
                "crash" => f.crash = v,
                "reboot" => f.reboot = v,
                "shutdown" => f.shutdown = v,
                "partition" => f.partition = v,
                "link" => f.link = v,
                "wipe" => f.wipe = v,
                "pause" => f.pause = v,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (crash, reboot, shutdown, partition, link, wipe, pause)"
                    ));
                }
            }
        }
        Ok(f)
    }

    fn total(&self) -> usize {
        self.crash
            + self.reboot
            + self.shutdown
            + self.partition
            + self.link
            + self.wipe
            + self.pause
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Agents.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Agents per switch.
    pub switch_size: usize,
    /// The first this many agents hang off small switches of 1, 2, ... 6
    /// agents in turn (groups of every size a ring treats specially), the
    /// rest off switches of `switch_size`.
    pub small_groups: usize,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram arrives twice.
    pub duplicate: f64,
    /// Datagram delay is uniform in 0.1 ms .. this (so datagrams reorder).
    pub max_delay_us: u64,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Dead time.
    pub dead_ms: u64,
    /// Faults to inject.
    pub faults: Faults,
    /// Check the decider's invariants after every ring change.
    pub check_invariants: bool,
    /// Keep every decider input (for replay tests).
    pub record_inputs: bool,
    /// Probability that an agent ACKs a ring instruction without carrying
    /// it out (a silently lost instruction).
    pub instr_loss: f64,
    /// Agents speak HBSTATE (ours) and send it this often, ms; 0: they
    /// behave as unmodified nanoprobes.
    pub state_interval_ms: u64,
    /// How long a partition lasts: drawn between these, ms, uniformly in
    /// the logarithm (as many of 1-10 s as of 1-10 min).
    pub partition_ms: (u64, u64),
    /// Probability that a partition takes the whole switch down (its
    /// members cannot reach one another either, as when a top-of-rack
    /// switch reboots) rather than only its uplink.
    pub switch_down: f64,
}

impl SimConfig {
    /// 1 s heartbeats, 30 s dead time, 1 % loss, 40 agents per switch.
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            switch_size: 40,
            small_groups: 63,
            loss: 0.01,
            duplicate: 0.002,
            max_delay_us: 5000,
            heartbeat_ms: 1000,
            dead_ms: 30_000,
            faults: Faults::default(),
            check_invariants: true,
            record_inputs: false,
            instr_loss: 0.0,
            state_interval_ms: 0,
            partition_ms: (45_000, 60_000),
            switch_down: 0.5,
        }
    }

    fn startup_spread_ms(&self) -> u64 {
        (self.nodes as u64 / 20).max(10_000)
    }

    fn faults_from_ms(&self) -> u64 {
        self.startup_spread_ms() + 50_000
    }

    /// When the run ends: faults happen over two minutes after the fleet
    /// settled, then everything heals and settles again.
    pub fn end_ms(&self) -> u64 {
        self.faults_from_ms() + 120_000 + 150_000
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

struct Agent {
    addr: SocketAddr,
    switch: u32,
    alive: bool,
    incarnation: u64,
    configured: bool,
    acked_startup: bool,
    leaving: bool,
    /// Frozen: it neither sends, receives nor acts (SIGSTOP).
    paused: bool,
    /// Peer agent -> heartbeat senders (a multiset, like a nanoprobe's:
    /// every start adds one) and listeners (a set: a second start replaces
    /// the listener, one stop removes it; the count is always 1).
    send: Vec<(u32, i32)>,
    expect: Vec<(u32, i32)>,
    /// Silence watch per expected peer: (peer, silent since, token,
    /// reported dead).
    watch: Vec<Watch>,
    /// Receiving side for the CMA: last request id delivered.
    cma_in: Option<u64>,
    /// The CMA's session on its receiving side (0: none yet).
    cma_session: u32,
    /// Sending side towards the CMA: the same sending half as our agent's
    /// (`reliable::Outbound`: request ids, the nanoprobe's 2 s
    /// retransmission of the oldest report, cumulative ACKs), one report in
    /// flight.
    out: Outbound<AgentMsg>,
    /// When an `AgentRetx` event is already due (none while 0).
    retx_at: u64,
}

impl Agent {
    fn new(addr: SocketAddr, switch: u32) -> Agent {
        Agent {
            addr,
            switch,
            alive: false,
            incarnation: 0,
            configured: false,
            acked_startup: false,
            leaving: false,
            paused: false,
            send: Vec::new(),
            expect: Vec::new(),
            watch: Vec::new(),
            cma_in: None,
            cma_session: 0,
            out: agent_outbound(0),
            retx_at: 0,
        }
    }
}

/// A simulated agent's sending half in session `session`.
fn agent_outbound(session: u32) -> Outbound<AgentMsg> {
    let config = OutboundConfig {
        window: 1,
        retransmit_ms: RETRANSMIT_MS,
    };
    Outbound::new(session, 0, config)
}

#[derive(Clone, Copy)]
struct Watch {
    peer: u32,
    silent_since: Option<u64>,
    token: u64,
    reported: bool,
}

fn count(v: &[(u32, i32)], p: u32) -> i32 {
    v.iter().find(|x| x.0 == p).map_or(0, |x| x.1)
}

fn bump(v: &mut Vec<(u32, i32)>, p: u32, d: i32) {
    match v.iter().position(|x| x.0 == p) {
        Some(i) => {
            v[i].1 = (v[i].1 + d).max(0);
            if v[i].1 == 0 {
                v.swap_remove(i);
            }
        }
        None if d > 0 => v.push((p, d)),
        None => {}
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Start(u32),
    /// An agent's periodic HBSTATE.
    StateTimer(u32, u64),
    /// An agent loses its heartbeat state.
    Wipe(u32),
    /// An agent told to discover its switch hears an LLDP frame.
    Lldp(u32, u64),
    /// Compare every agent with its rings (one audit interval apart).
    Audit,
    StartupResend(u32, u64),
    /// A datagram reaches the CMA.
    AtCma {
        from: u32,
        inc: u64,
        pkt: Pkt,
    },
    /// A CMA instruction reaches an agent.
    AtAgent {
        to: u32,
        inc: u64,
        reqid: ReqId,
        instr: Instruction,
    },
    /// The CMA's ACK of an agent's report reaches it.
    AckAtAgent {
        to: u32,
        inc: u64,
        seq: u64,
    },
    /// An agent's retransmission timer may be due.
    AgentRetx(u32),
    EdgeCheck {
        a: u32,
        peer: u32,
        token: u64,
    },
    Martian {
        a: u32,
        peer: u32,
    },
    Tick,
    Crash(u32),
    Shutdown(u32),
    PartitionStart(u32, u8),
    PartitionEnd(u32),
    /// Is every agent of a healed switch settled and as its rings say?
    HealCheck {
        sw: u32,
        since: u64,
    },
    /// An agent freezes for this long.
    Pause(u32, u32),
    Unpause(u32),
    /// Is an agent that resumed settled and as its rings say?
    BackCheck {
        a: u32,
        since: u64,
    },
    LinkStart(u32, u32),
    LinkEnd(u32, u32),
}

#[derive(Clone, Debug)]
enum Pkt {
    Startup,
    Seq { seq: u64, msg: AgentMsg },
    Ack(ReqId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Crashed(u64),
    Busy,
    Leaving,
    /// Frozen from this time: its death is right, its return must be
    /// seen.
    Paused(u64),
}

struct Sim {
    /// Per crashed agent: the agents that watched it when it crashed.
    crash_monitors: Vec<Vec<u32>>,
    /// Per agent: the drift seen at the last audit sample and for how many
    /// samples in a row.
    drift_streak: HashMap<u32, (String, u32)>,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    agents: Vec<Agent>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Agents expecting heartbeats from each agent.
    watchers: Vec<Vec<u32>>,
    /// Per switch: 0 connected, 1 uplink cut, 2 down (members isolated).
    partitioned: Vec<u8>,
    /// When the run ends (after the last fault healed and settled).
    end: u64,
    /// Broken one-way heartbeat paths (from, to).
    broken: Vec<(u32, u32)>,
    decider: Decider,
    lsn: u64,
    tick_at: Option<u64>,
    /// The CMA's receiving side per agent: (incarnation, last seq).
    cma_in: Vec<(u64, u64)>,
    node_agent: Vec<u32>,
    fate: Vec<Option<Fate>>,
    /// Partitions in force: (switch, start, end).
    partitions: Vec<(u32, u64, u64)>,
    links: Vec<(u32, u32, u64, u64)>,
    named_partitions: Vec<bool>,
    report: SimReport,
    effects: Vec<Effect>,
    digest: u64,
    /// When the CMA last sent each agent a new instruction (by agent).
    instr_sent_ms: Vec<u64>,
    /// The newest (session, request id) sent to each agent: a send of it
    /// or below is a retransmission.
    instr_newest: Vec<(u32, u64)>,
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg);
    sim.schedule_faults();
    sim.run();
    sim.finish()
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let n = cfg.nodes;
        let layout = switch_layout(n, cfg.small_groups, cfg.switch_size);
        let switches = layout.last().map_or(0, |l| l.0 as usize + 1);
        let mut dcfg = DeciderConfig::new(CMA, 1);
        dcfg.heartbeat_ms = cfg.heartbeat_ms;
        dcfg.dead_ms = cfg.dead_ms;
        dcfg.retransmit_ms = RETRANSMIT_MS;
        let mut s = Sim {
            crash_monitors: vec![Vec::new(); n],
            drift_streak: HashMap::new(),
            rng: Rng(cfg.seed ^ 0x5eed_5eed_5eed_5eed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            agents: Vec::with_capacity(n),
            by_addr: HashMap::with_capacity(n),
            watchers: vec![Vec::new(); n],
            partitioned: vec![0; switches],
            end: cfg.end_ms(),
            broken: Vec::new(),
            decider: Decider::new(dcfg),
            lsn: 0,
            tick_at: None,
            cma_in: vec![(0, 0); n],
            node_agent: Vec::with_capacity(n),
            fate: vec![None; n],
            partitions: Vec::new(),
            links: Vec::new(),
            named_partitions: Vec::new(),
            report: SimReport::default(),
            effects: Vec::new(),
            digest: DIGEST_SEED,
            instr_sent_ms: vec![0; cfg.nodes],
            instr_newest: vec![(0, 0); cfg.nodes],
            cfg,
        };
        for (i, (sw, host)) in layout.into_iter().enumerate() {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, (sw >> 8) as u8, sw as u8, host)),
                1984,
            );
            s.by_addr.insert(addr, i as u32);
            s.agents.push(Agent::new(addr, sw));
            let at = s.rng.below(s.cfg.startup_spread_ms());
            s.at(at, Ev::Start(i as u32));
        }
        s
    }

    fn run(&mut self) {
        let end = self.end;
        while let Some(Reverse((t, _, slot))) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            let ev = self.events[slot].take().expect("scheduled event present");
            self.free.push(slot);
            self.report.sim_events += 1;
            self.step(ev);
        }
    }

    /// One event: a `match` arm per event kind.
    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start(a) => self.start(a),
            Ev::StateTimer(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc && !ag.leaving {
                    self.agent_state(a);
                    let t = self.now + self.cfg.state_interval_ms;
                    self.at(t, Ev::StateTimer(a, inc));
                }
            }
            Ev::Wipe(a) => self.wipe(a),
            Ev::Lldp(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc {
                    self.discover_switch(a);
                }
            }
            Ev::Audit => {
                self.audit_sample();
                let t = self.now + self.cfg.state_interval_ms;
                self.at(t, Ev::Audit);
            }
            Ev::StartupResend(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc && !(ag.configured && ag.acked_startup) {
                    self.send_to_cma(a, Pkt::Startup);
                    self.at(self.now + STARTUP_RESEND_MS, Ev::StartupResend(a, inc));
                }
            }
            Ev::AtCma { from, inc, pkt } => self.at_cma(from, inc, pkt),
            Ev::AtAgent {
                to,
                inc,
                reqid,
                instr,
            } => self.at_agent(to, inc, reqid, instr),
            Ev::AckAtAgent { to, inc, seq } => {
                let ag = &mut self.agents[to as usize];
                if !ag.alive || ag.incarnation != inc || ag.paused {
                    return;
                }
                let ack = ReqId {
                    session: inc as u32,
                    request: seq,
                    queue: 0,
                };
                if ag.out.on_ack(ack) > 0 {
                    if ag.leaving && ag.out.is_empty() {
                        // HBSHUTDOWN delivered: the agent exits.
                        self.stop_agent(to);
                        return;
                    }
                    self.agent_pump(to);
                }
            }
            Ev::AgentRetx(a) => {
                let ag = &mut self.agents[a as usize];
                if ag.retx_at == self.now {
                    ag.retx_at = 0;
                }
                if ag.alive && !ag.paused {
                    self.agent_pump(a);
                }
            }
            Ev::EdgeCheck { a, peer, token } => {
                let ag = &mut self.agents[a as usize];
                if !ag.alive || ag.paused {
                    return;
                }
                let Some(w) = ag
                    .watch
                    .iter_mut()
                    .find(|w| w.peer == peer && w.token == token)
                else {
                    return;
                };
                if w.silent_since.is_some() && !w.reported {
                    w.reported = true;
                    let p = self.agents[peer as usize].addr;
                    self.agent_report(a, AgentMsg::HbDead(p));
                }
            }
            Ev::Martian { a, peer } => {
                if self.agents[a as usize].paused {
                    return;
                }
                if self.is_martian(a, peer) {
                    let p = self.agents[peer as usize].addr;
                    self.agent_report(a, AgentMsg::HbMartian(p));
                    self.at(self.now + 10_000, Ev::Martian { a, peer });
                }
            }
            Ev::Tick => {
                if self.tick_at == Some(self.now) {
                    self.tick_at = None;
                    self.decide(None, None, None);
                }
            }
            Ev::Crash(a) => {
                self.crash_monitors[a as usize] = self.watchers[a as usize].clone();
                self.stop_agent(a);
            }
            Ev::Shutdown(a) => {
                if self.agents[a as usize].alive {
                    self.agents[a as usize].leaving = true;
                    self.agent_report(a, AgentMsg::HbShutdown(format!("h{a}")));
                }
            }
            Ev::PartitionStart(sw, kind) => {
                self.partitioned[sw as usize] = kind;
                self.refresh_switch(sw);
            }
            Ev::PartitionEnd(sw) => {
                self.partitioned[sw as usize] = 0;
                self.refresh_switch(sw);
                let since = self.now;
                self.at(self.now + HEAL_CHECK_MS, Ev::HealCheck { sw, since });
            }
            Ev::HealCheck { sw, since } => self.heal_check(sw, since),
            Ev::Pause(a, len) => {
                if self.agents[a as usize].alive {
                    self.agents[a as usize].paused = true;
                    // Its heartbeats stop.
                    for w in self.watchers[a as usize].clone() {
                        self.refresh(w, a);
                    }
                    self.at(self.now + u64::from(len), Ev::Unpause(a));
                }
            }
            Ev::Unpause(a) => {
                self.agents[a as usize].paused = false;
                self.report.pauses += 1;
                // Its heartbeats resume, it sees its peers' again, and its
                // timers fire: what it queued goes out.
                for w in self.watchers[a as usize].clone() {
                    self.refresh(w, a);
                }
                // Peers it still heartbeats but that stopped expecting it
                // (its death closed the ring) see martians.
                let sends: Vec<u32> = self.agents[a as usize].send.iter().map(|x| x.0).collect();
                for b in sends {
                    self.refresh(b, a);
                }
                let peers: Vec<u32> = self.agents[a as usize].expect.iter().map(|x| x.0).collect();
                for b in peers {
                    self.refresh(a, b);
                }
                self.agent_pump(a);
                let since = self.now;
                self.at(self.now + HEAL_CHECK_MS, Ev::BackCheck { a, since });
            }
            Ev::BackCheck { a, since } => self.back_check(a, since),
            Ev::LinkStart(a, len) => {
                // Break the path from one of a's expected peers to a.
                let ag = &self.agents[a as usize];
                if !ag.alive || ag.expect.is_empty() {
                    return;
                }
                let i = self.rng.below(ag.expect.len() as u64) as usize;
                let b = ag.expect[i].0;
                if self.fate[b as usize].is_some() {
                    return;
                }
                self.fate[b as usize] = Some(Fate::Busy);
                self.broken.push((b, a));
                self.links.push((b, a, self.now, self.now + u64::from(len)));
                self.report.links += 1;
                self.refresh(a, b);
                self.at(self.now + u64::from(len), Ev::LinkEnd(b, a));
            }
            Ev::LinkEnd(b, a) => {
                self.broken.retain(|x| *x != (b, a));
                self.refresh(a, b);
            }
        }
    }

    fn finish(mut self) -> SimReport {
        // Expectations at the end, after everything healed and settled.
        for (a, f) in self.fate.clone().iter().enumerate() {
            if let Some(Fate::Crashed(t)) = f {
                self.report.undetected += 1;
                self.fail(format!(
                    "h{a} crashed at {t} ms and was never declared dead"
                ));
            }
        }
        let seen_after = self.cfg.dead_ms + 15_000;
        for (i, (sw, t0, t1)) in self.partitions.clone().into_iter().enumerate() {
            if t1 - t0 < seen_after {
                // Over before any monitor could report it.
                continue;
            }
            self.report.partitions += 1;
            if self.named_partitions[i] {
                self.report.partitions_named += 1;
            } else {
                self.fail(format!(
                    "switch sw-{sw} cut off {t0}..{t1} ms was not named a switch fault"
                ));
            }
        }
        if let Err(e) = self.decider.check() {
            self.fail(format!("invariant at the end: {e}"));
        }
        if self.cfg.state_interval_ms > 0 {
            // Audits repair sets, not counts (HBSTATE has none): compare
            // what each agent does.
            let ids: Vec<usize> = (0..self.decider.nodes().len()).collect();
            let mut problems = Vec::new();
            for id in ids {
                let n = &self.decider.nodes()[id];
                if n.is_vacant() {
                    continue;
                }
                let a = self.node_agent[id];
                let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
                if in_service != self.agents[a as usize].alive {
                    problems.push(format!("h{a}: decider says {:?}", n.health));
                } else if in_service && let Some(d) = self.drift_of(id) {
                    problems.push(format!("h{a} at the end: {d}"));
                }
            }
            for p in problems.into_iter().take(10) {
                self.fail(p);
            }
        } else {
            self.check_agents_match_rings();
        }
        self.report.drift_repaired = self.decider.counters().drift;
        self.report.effects_digest = self.digest;
        self.report.decider = Some(self.decider);
        self.report
    }
}

/// (switch, host number from 1) of each agent: `small` agents on switches
/// of 1, 2, ... 6 agents in turn, then switches of `size`.
fn switch_layout(n: usize, small: usize, size: usize) -> Vec<(u32, u8)> {
    let size = size.clamp(1, 250);
    let small = small.min(n);
    let mut caps = Vec::new();
    let mut left = small;
    while left > 0 {
        let c = (caps.len() % 6 + 1).min(left);
        caps.push(c);
        left -= c;
    }
    left = n - small;
    while left > 0 {
        let c = size.min(left);
        caps.push(c);
        left -= c;
    }
    caps.iter()
        .enumerate()
        .flat_map(|(sw, &c)| (1..=c).map(move |h| (sw as u32, h as u8)))
        .collect()
}

/// Where [`effects_digest`] starts (the FNV-1a offset basis).
const DIGEST_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// The digest a run reports as `effects_digest`, of these effects in order.
pub fn effects_digest(effects: &[Effect]) -> u64 {
    effects
        .iter()
        .fold(DIGEST_SEED, |h, e| fnv(h, format!("{e:?}").as_bytes()))
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
